//! The reference sieve against hand-built cases of the semantics in `docs/semantics.md` (offset once, skips
//! above 255, the integer threshold edge, ties, reverse, bidirectional, variable skip, candidate
//! lists, errors), plus a property test: a planted seed is always found with its true skip.

mod support;

use proptest::prelude::*;
use seedq_kernels::family::FamilyParams;
use seedq_kernels::reference::{self, evaluate_seed, run_strategy, try_sieve};
use seedq_kernels::{
    Direction, Family, FamilyConfig, SeedSet, SieveError, SkipMode, Strategy as SkipStrategy,
    Threshold,
};
use support::{family, plant, plant_pattern, spec, variable};

fn survivors(s: &seedq_kernels::SieveSpec, seeds: SeedSet) -> Vec<u64> {
    try_sieve(s, &seeds)
        .unwrap()
        .survivors
        .iter()
        .map(|v| v.seed)
        .collect()
}

#[test]
fn planted_seed_found_with_offset_applied_once() {
    let fam = family("xorshift32");
    let seed = 1234;
    let draws = plant(&fam, seed, 7, 2, 12, 1000);
    let s = spec(fam, draws, 7, 0, 4, "1.0");
    let out = try_sieve(
        &s,
        &SeedSet::Range {
            start: 1000,
            end: 1500,
        },
    )
    .unwrap();
    assert_eq!(out.seeds_tested, 500);
    assert_eq!(out.survivors.len(), 1);
    let f = out.survivors[0].forward.as_ref().unwrap();
    assert_eq!(
        (out.survivors[0].seed, f.matches, f.total, f.best_skip),
        (seed, 12, 12, Some(2))
    );

    // A window where the offset was applied twice (the original's K1) is not this seed's.
    let twice = plant(&s.family, seed, 14, 2, 12, 1000);
    let s2 = spec(s.family, twice, 7, 2, 2, "0.5");
    assert!(evaluate_seed(&s2, seed).is_none());
}

#[test]
fn skips_above_255_are_found_exactly() {
    let fam = family("mt19937");
    let draws = plant(&fam, 42, 3, 300, 10, 1000);
    let s = spec(fam, draws, 3, 250, 310, "1");
    let v = evaluate_seed(&s, 42).unwrap();
    assert_eq!(v.forward.unwrap().best_skip, Some(300));
    assert!(evaluate_seed(&spec(s.family, s.draws.clone(), 3, 250, 299, "0.5"), 42).is_none());
}

#[test]
fn threshold_edge_is_compared_on_integers() {
    let fam = family("lcg32");
    let mut draws = plant(&fam, 99, 0, 0, 10, 1000);
    for d in &mut draws[7..] {
        *d = (*d + 1) % 1000; // exactly 3 misses
    }
    let at = |t: &str| evaluate_seed(&spec(fam, draws.clone(), 0, 0, 0, t), 99);
    let v = at("0.7").expect("7/10 reaches 0.7");
    assert_eq!(v.forward.unwrap().matches, 7);
    assert!(at("0.71").is_none(), "7/10 does not reach 0.71 (needs 8)");
    assert!(at("0.69").is_some());
    assert_eq!(Threshold::parse("0.7").unwrap().min_matches(10), 7);
    assert_eq!(Threshold::from_f64(0.7).unwrap().min_matches(10), 7);
}

#[test]
fn best_skip_is_the_smallest_on_ties() {
    // Modulus 2 and one draw: many skips match; the best is the first that does.
    let fam = family("pcg32");
    let seed = 5;
    let draw = fam.output_at(seed, 9) % 2;
    let mut s = spec(fam, vec![draw], 0, 3, 12, "1");
    s.modulus = 2;
    let matching: Vec<u32> = (3..=12)
        .filter(|&t| fam.output_at(seed, t as u64) % 2 == draw)
        .collect();
    assert!(matching.len() >= 2, "need a tie to test: {matching:?}");
    let v = evaluate_seed(&s, seed).unwrap().forward.unwrap();
    assert_eq!(v.best_skip, Some(matching[0]));
}

#[test]
fn reverse_matches_the_reversed_window() {
    let fam = family("java_lcg");
    let seed = 0xDEAD_BEEF_u64;
    let mut draws = plant(&fam, seed, 5, 1, 16, 1000);
    draws.reverse();
    let mut s = spec(fam, draws, 5, 0, 3, "1");
    assert!(
        evaluate_seed(&s, seed).is_none(),
        "forward does not see a reversed window"
    );
    s.direction = Direction::Reverse;
    let v = evaluate_seed(&s, seed).unwrap();
    assert!(v.forward.is_none());
    let r = v.reverse.unwrap();
    assert_eq!((r.matches, r.best_skip), (16, Some(1)));
}

#[test]
fn reverse_pass_uses_its_own_threshold() {
    let fam = family("xorshift32");
    let seed = 77;
    let mut draws = plant(&fam, seed, 0, 0, 10, 1000);
    draws.reverse();
    for d in &mut draws[..4] {
        *d = (*d + 1) % 1000; // reverse pass sees 6/10
    }
    let mut s = spec(fam, draws, 0, 0, 0, "0.9");
    s.direction = Direction::Reverse;
    assert!(evaluate_seed(&s, seed).is_none());
    s.reverse_threshold = Some(Threshold::parse("0.6").unwrap());
    assert_eq!(evaluate_seed(&s, seed).unwrap().reverse.unwrap().matches, 6);
}

#[test]
fn bidirectional_is_the_intersection_and_carries_both_passes() {
    let fam = family("minstd");
    let seed = 31337;
    let o: Vec<u64> = (0..8).map(|n| fam.output_at(seed, n) % 1000).collect();
    // Forward sees o[0..4] (skip 0) at draws 0..4; reverse sees o[1], o[3], o[5], o[7] (skip 1)
    // at draws 7, 6, 5, 4.
    let draws = vec![o[0], o[1], o[2], o[3], o[7], o[5], o[3], o[1]];
    let mut s = spec(fam, draws, 0, 0, 2, "0.5");
    s.modulus = 10; // plenty of chance survivors on both sides
    let seeds = SeedSet::Range {
        start: 31000,
        end: 32000,
    };
    let fwd = survivors(&s, seeds.clone());
    s.direction = Direction::Reverse;
    let rev = survivors(&s, seeds.clone());
    s.direction = Direction::Bidirectional;
    let out = try_sieve(&s, &seeds).unwrap();
    let both: Vec<u64> = out.survivors.iter().map(|v| v.seed).collect();
    let expected: Vec<u64> = fwd.iter().copied().filter(|x| rev.contains(x)).collect();
    assert!(
        fwd.len() > expected.len() && rev.len() > expected.len(),
        "the intersection must be a real filter: {} {} {}",
        fwd.len(),
        rev.len(),
        expected.len()
    );
    assert_eq!(both, expected);
    assert!(both.contains(&seed));
    for v in &out.survivors {
        let (f, r) = (v.forward.as_ref().unwrap(), v.reverse.as_ref().unwrap());
        assert_eq!(v.mean_match_rate(), (f.match_rate() + r.match_rate()) / 2.0);
    }
}

#[test]
fn candidate_lists_are_sorted_and_deduplicated() {
    let fam = family("philox4x32");
    let seed = 0x1234_5678_9ABC_DEF0;
    let s = spec(fam, plant(&fam, seed, 2, 1, 8, 1000), 2, 0, 1, "1");
    let list = vec![u64::MAX, seed, 3, seed, 0];
    let out = try_sieve(&s, &SeedSet::List(list)).unwrap();
    assert_eq!(out.seeds_tested, 5);
    assert_eq!(
        out.survivors.iter().map(|v| v.seed).collect::<Vec<_>>(),
        vec![seed]
    );
    // Sorted by seed when several survive.
    let mut s2 = s.clone();
    s2.modulus = 2;
    s2.threshold = Threshold::parse("0.5").unwrap();
    let out = try_sieve(&s2, &SeedSet::List((0..200).rev().chain(0..200).collect())).unwrap();
    let seeds: Vec<u64> = out.survivors.iter().map(|v| v.seed).collect();
    assert!(seeds.len() > 10);
    assert!(seeds.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn seeds_outside_the_family_space_are_errors() {
    let s = spec(family("xorshift32"), vec![1, 2, 3], 0, 0, 0, "1");
    let err = try_sieve(
        &s,
        &SeedSet::Range {
            start: (1 << 32) - 5,
            end: (1 << 32) + 1,
        },
    )
    .unwrap_err();
    assert!(matches!(err, SieveError::SeedOutOfRange { .. }), "{err}");
    let err = try_sieve(&s, &SeedSet::List(vec![1, 1 << 32])).unwrap_err();
    assert!(matches!(err, SieveError::SeedOutOfRange { .. }), "{err}");
    assert!(try_sieve(
        &s,
        &SeedSet::Range {
            start: (1 << 32) - 5,
            end: 1 << 32
        }
    )
    .is_ok());
    let err = try_sieve(&s, &SeedSet::Range { start: 9, end: 9 }).unwrap_err();
    assert!(matches!(err, SieveError::EmptySeedRange { .. }), "{err}");
    // 64-bit families accept the whole u64 range.
    let s64 = spec(family("sfc64"), vec![1, 2, 3], 0, 0, 0, "1");
    assert!(try_sieve(
        &s64,
        &SeedSet::Range {
            start: u64::MAX - 3,
            end: u64::MAX
        }
    )
    .is_ok());
}

#[test]
fn invalid_specs_are_errors() {
    let s = spec(family("lcg32"), vec![], 0, 0, 0, "1");
    assert_eq!(
        try_sieve(&s, &SeedSet::Range { start: 0, end: 1 }).unwrap_err(),
        SieveError::EmptyWindow
    );
    let s = spec(family("lcg32"), vec![1], 0, 5, 4, "1");
    assert!(matches!(
        try_sieve(&s, &SeedSet::Range { start: 0, end: 1 }),
        Err(SieveError::InvalidSkipRange { .. })
    ));
    let mut s = spec(family("lcg32"), vec![1], 0, 0, 0, "1");
    s.modulus = 1;
    assert!(matches!(
        try_sieve(&s, &SeedSet::Range { start: 0, end: 1 }),
        Err(SieveError::InvalidModulus(1))
    ));
    let s = variable(spec(family("lcg32"), vec![1], 0, 0, 0, "1"));
    let mut empty = s.clone();
    empty.skip_mode = SkipMode::Variable { strategies: vec![] };
    assert!(matches!(
        try_sieve(&empty, &SeedSet::Range { start: 0, end: 1 }),
        Err(SieveError::InvalidStrategy(_))
    ));
    let s = spec(family("lcg32"), vec![1, 2, 3], u64::MAX - 1, 0, 0, "1");
    assert!(matches!(
        try_sieve(&s, &SeedSet::Range { start: 0, end: 1 }),
        Err(SieveError::OutputIndexOverflow { .. })
    ));
    assert!(
        Threshold::parse("0").is_err()
            && Threshold::parse("1.5").is_err()
            && Threshold::parse("abc").is_err()
    );
}

/// A 32-bit output family with modulus 2^32: no chance matches, so the planted pattern is exact.
fn exact_variable_spec(
    draws: Vec<u64>,
    offset: u64,
    skip_min: u32,
    skip_max: u32,
) -> seedq_kernels::SieveSpec {
    let mut s = variable(spec(
        family("mt19937"),
        draws,
        offset,
        skip_min,
        skip_max,
        "0.5",
    ));
    s.modulus = 1 << 32;
    s
}

#[test]
fn variable_skip_follows_a_planted_drifting_pattern() {
    let fam = family("mt19937");
    let pattern = [2u32, 4, 4, 7, 9, 9, 5, 3, 6, 8, 10, 12, 12, 11];
    let draws = plant_pattern(&fam, 555, 10, &pattern, 1 << 32);
    let s = exact_variable_spec(draws, 10, 0, 40);
    let r = evaluate_seed(&s, 555).unwrap().forward.unwrap();
    assert_eq!(r.matches, pattern.len() as u32);
    assert_eq!(
        r.strategy.as_deref(),
        Some("strict_continuous"),
        "all strategies tie; the first wins"
    );
    assert_eq!(r.skip_pattern.as_deref(), Some(&pattern[..]));
    assert_eq!(r.best_skip, None);
}

#[test]
fn variable_skip_jump_beyond_strict_tolerance_needs_a_wider_strategy() {
    let fam = family("mt19937");
    let pattern = [1u32, 1, 15, 15, 15, 15, 15, 15];
    let draws = plant_pattern(&fam, 9, 0, &pattern, 1 << 32);
    let s = exact_variable_spec(draws, 0, 0, 100);
    let r = evaluate_seed(&s, 9).unwrap().forward.unwrap();
    assert_eq!(r.matches, 8);
    assert_eq!(r.strategy.as_deref(), Some("lenient_continuous"));
    // strict (tolerance 5) misses the jump from 1 to 15 and never recovers the alignment.
    let (strict, strict_pattern) = run_strategy(&s, 9, &SkipStrategy::presets()[0], false);
    assert!(strict < 8);
    assert_eq!(&strict_pattern[..2], &[1, 1]);
}

#[test]
fn variable_skip_miss_consumes_expected_plus_one_and_ends_after_m_consecutive_misses() {
    let fam = family("mt19937");
    // The generator really used skip 3 throughout; draws 4, 5, 6 are corrupted.
    let pattern = [3u32; 14];
    let mut draws = plant_pattern(&fam, 2024, 1, &pattern, 1 << 32);
    for d in &mut draws[4..7] {
        *d ^= 1;
    }
    let s = exact_variable_spec(draws.clone(), 1, 3, 60);
    let strategies = SkipStrategy::presets();
    // strict_continuous: M = 3, so the third consecutive miss (draw 6) ends it.
    let (m, p) = run_strategy(&s, 2024, &strategies[0], false);
    assert_eq!(m, 4);
    assert_eq!(
        p,
        vec![3; 14],
        "misses and post-end draws record the expected skip"
    );
    // lenient_continuous: M = 10; each miss consumed expected+1 = 4 outputs, so draw 7 is back in
    // step and every later draw matches.
    let (m, p) = run_strategy(&s, 2024, &strategies[1], false);
    assert_eq!(m, 11);
    assert_eq!(p, vec![3; 14]);
    let r = evaluate_seed(&s, 2024).unwrap().forward.unwrap();
    assert_eq!(
        (r.matches, r.strategy.as_deref()),
        (11, Some("lenient_continuous"))
    );
    // Two corrupted draws do not end strict_continuous.
    let mut two = draws;
    two[6] ^= 1;
    let (m, _) = run_strategy(
        &exact_variable_spec(two, 1, 3, 60),
        2024,
        &strategies[0],
        false,
    );
    assert_eq!(m, 12);
}

#[test]
fn variable_skip_offset_applied_once_and_reverse() {
    let fam = family("mt19937");
    let pattern = [0u32, 1, 2, 3, 4, 5, 6, 7];
    let mut draws = plant_pattern(&fam, 8, 500, &pattern, 1 << 32);
    draws.reverse();
    let mut s = exact_variable_spec(draws, 500, 0, 20);
    s.direction = Direction::Reverse;
    let r = evaluate_seed(&s, 8).unwrap().reverse.unwrap();
    assert_eq!(r.matches, 8);
    assert_eq!(r.skip_pattern.unwrap(), pattern);
}

#[test]
fn reference_backend_agrees_with_sieve() {
    use seedq_kernels::SieveBackend;
    let fam = family("xorshift128");
    let s = spec(fam, plant(&fam, 4321, 0, 3, 6, 1000), 0, 0, 5, "1");
    let seeds = SeedSet::Range {
        start: 4000,
        end: 4500,
    };
    let a = reference::ReferenceBackend.sieve(&s, &seeds).unwrap();
    assert_eq!(a, reference::sieve(&s, &seeds));
    assert_eq!(a.survivors.len(), 1);
}

fn any_family() -> impl Strategy<Value = FamilyConfig> {
    let xs_triples = prop::sample::select(vec![
        (13u32, 17u32, 5u32),
        (5, 17, 13),
        (1, 3, 10),
        (10, 3, 1),
    ]);
    prop_oneof![
        xs_triples.prop_map(
            |(a, b, c)| FamilyConfig::with_params(FamilyParams::Xorshift32 { a, b, c }).unwrap()
        ),
        Just(FamilyConfig::new(Family::Xorshift64)),
        Just(FamilyConfig::new(Family::Xorshift128)),
        (any::<u64>(), any::<u64>()).prop_map(|(inc, mult)| FamilyConfig::with_params(
            FamilyParams::Pcg32 {
                inc: inc | 1,
                mult: (mult & !3) | 5
            }
        )
        .unwrap()),
        (
            any::<u32>(),
            any::<u32>(),
            prop::sample::select(vec![0u32, 0x7FFF_FFFF, 0xFFFF_FFFB, 1_000_003])
        )
            .prop_map(|(a, c, m)| {
                FamilyConfig::with_params(FamilyParams::Lcg32 {
                    a: (a & !3) | 5,
                    c: c | 1,
                    m,
                })
                .unwrap()
            }),
        (any::<u64>(), any::<u64>()).prop_map(|(a, c)| FamilyConfig::with_params(
            FamilyParams::JavaLcg {
                a: ((a & ((1 << 48) - 1)) & !3) | 5,
                c: (c & ((1 << 48) - 1)) | 1
            }
        )
        .unwrap()),
        prop::sample::select(vec![48271u32, 16807, 69621, 1_207_248_710]).prop_map(|a| {
            FamilyConfig::with_params(FamilyParams::Minstd {
                a,
                m: 2_147_483_647,
            })
            .unwrap()
        }),
        Just(FamilyConfig::new(Family::Mt19937)),
        Just(FamilyConfig::new(Family::Xoshiro256pp)),
        Just(FamilyConfig::new(Family::Philox4x32)),
        Just(FamilyConfig::new(Family::Sfc64)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn planted_seed_is_found_with_its_true_skip(
        fam in any_family(),
        raw_seed in any::<u64>(),
        k in 6usize..40,
        offset in 0u64..2000,
        skip_min in 0u32..300,
        span in 0u32..20,
        skip_pick in 0u32..20,
        reverse in any::<bool>(),
    ) {
        let seed = ((raw_seed as u128 % fam.family().seed_space_end()) as u64).max(1);
        let skip_max = skip_min + span;
        let skip = skip_min + skip_pick % (span + 1);
        let mut draws = plant(&fam, seed, offset, skip, k, 1000);
        let mut s = spec(fam, draws.clone(), offset, skip_min, skip_max, "1");
        if reverse {
            draws.reverse();
            s.draws = draws;
            s.direction = Direction::Reverse;
        }
        let lo = seed.saturating_sub(3);
        let out = try_sieve(&s, &SeedSet::Range { start: lo, end: lo + 8 }).unwrap();
        let found = out.survivors.iter().find(|v| v.seed == seed).expect("planted seed found");
        let pass = if reverse { found.reverse.as_ref() } else { found.forward.as_ref() }.unwrap();
        prop_assert_eq!(pass.matches as usize, k);
        prop_assert_eq!(pass.best_skip, Some(skip));
    }

    #[test]
    fn planted_variable_pattern_is_recovered_exactly(
        fam in any_family(),
        raw_seed in any::<u64>(),
        offset in 0u64..500,
        skip_min in 0u32..50,
        first in 0u32..=5,
        drifts in prop::collection::vec(-5i32..=5, 5..60),
        reverse in any::<bool>(),
    ) {
        let seed = ((raw_seed as u128 % fam.family().seed_space_end()) as u64).max(1);
        let skip_max = skip_min + 40;
        let mut t = (skip_min + first) as i64;
        let pattern: Vec<u32> = drifts
            .iter()
            .map(|&d| {
                let now = t as u32;
                t = (t + d as i64).clamp(skip_min as i64, skip_max as i64);
                now
            })
            .collect();
        let mut draws = plant_pattern(&fam, seed, offset, &pattern, 1 << 32);
        let mut s = variable(spec(fam, vec![], offset, skip_min, skip_max, "1"));
        s.modulus = 1 << 32;
        if reverse {
            draws.reverse();
            s.direction = Direction::Reverse;
        }
        s.draws = draws;
        let v = evaluate_seed(&s, seed).expect("planted pattern found");
        let pass = if reverse { v.reverse } else { v.forward }.unwrap();
        prop_assert_eq!(pass.matches as usize, pattern.len());
        prop_assert_eq!(pass.strategy.as_deref(), Some("strict_continuous"));
        prop_assert_eq!(pass.skip_pattern.unwrap(), pattern);
    }
}
