//! One test per kernel and registry defect of the original system (`docs/defects.md`, K1-K9),
//! each showing that seedq does not have it. The tests run on the reference sieve, which every
//! backend must match bit for bit.

mod support;

use seedq_kernels::family::FamilyParams;
use seedq_kernels::reference::{evaluate_seed, run_strategy, try_sieve};
use seedq_kernels::{
    Direction, Family, FamilyConfig, SeedSet, SieveSpec, SkipMode, Strategy, Threshold,
};
use support::{family, plant, plant_pattern, spec, variable};

/// Some seed of the family's space, away from 0 (a fixed point of xorshift32).
fn a_seed(f: Family) -> u64 {
    if f.seed_space_end() > 1 << 32 {
        0x9E37_79B9_7F4A_7C15
    } else {
        0x2545_F491
    }
}

fn pass(s: &SieveSpec, seed: u64) -> Option<seedq_kernels::PassResult> {
    let v = evaluate_seed(s, seed)?;
    v.forward.or(v.reverse)
}

#[test]
fn k1_offset_is_applied_once_in_every_mode() {
    for f in Family::ALL {
        let fam = FamilyConfig::new(f);
        let seed = a_seed(f);
        // Constant skip: draw i is output offset + t + i*(t+1).
        let s = spec(fam, plant(&fam, seed, 40, 3, 10, 1000), 40, 0, 5, "1");
        assert_eq!(pass(&s, seed).unwrap().best_skip, Some(3), "{f}");
        // The original's double offset (offset as window start and as raw steps) is not matched.
        let twice = spec(fam, plant(&fam, seed, 80, 3, 10, 1000), 40, 3, 3, "0.5");
        assert!(pass(&twice, seed).is_none(), "{f}");
        // Variable skip applies the offset too (the original's forward hybrids ignored it).
        let pattern = [3u32, 4, 4, 5, 3, 3, 2, 6];
        let mut v = variable(spec(
            fam,
            plant_pattern(&fam, seed, 40, &pattern, 1 << 32),
            40,
            0,
            10,
            "1",
        ));
        v.modulus = 1 << 32;
        assert_eq!(
            pass(&v, seed).unwrap().skip_pattern.unwrap(),
            pattern,
            "{f}"
        );
        v.offset = 0;
        assert!(
            pass(&v, seed).is_none(),
            "{f}: offset ignored must not match"
        );
    }
}

#[test]
fn k2_one_variable_skip_algorithm_for_every_family() {
    let strategies = Strategy::presets();
    for f in Family::ALL {
        let fam = FamilyConfig::new(f);
        let seed = a_seed(f);
        // Same state after a miss for every family: a miss consumes expected+1 outputs, so after
        // two corrupted draws the generator is back in step.
        let mut draws = plant_pattern(&fam, seed, 5, &[2; 12], 1 << 32);
        draws[3] ^= 1;
        draws[4] ^= 1;
        let mut s = variable(spec(fam, draws.clone(), 5, 2, 30, "0.5"));
        s.modulus = 1 << 32;
        let (m, p) = run_strategy(&s, seed, &strategies[0], false);
        assert_eq!((m, p), (10, vec![2; 12]), "{f}");
        // The same ">=" end rule everywhere: a third consecutive miss ends strict_continuous
        // (M = 3), and the pattern after the end is defined (the last expected skip).
        draws[5] ^= 1;
        s.draws = draws;
        let (m, p) = run_strategy(&s, seed, &strategies[0], false);
        assert_eq!((m, p), (3, vec![2; 12]), "{f}");

        // Variable skip with tolerance 0 is the constant-skip generator and output (pcg32's
        // hybrid used the new state, lcg32's hybrid a different generator in the original).
        let noise: Vec<u64> = (0..64).map(|i| (i * 7919 + 13) % 10).collect();
        for t in [0u32, 4] {
            let mut c = spec(fam, noise.clone(), 9, t, t, "0.01");
            c.modulus = 10;
            let constant = evaluate_seed(&c, seed)
                .map(|v| v.forward.unwrap().matches)
                .unwrap_or(0);
            c.skip_mode = SkipMode::Variable {
                strategies: vec![Strategy {
                    name: "fixed".into(),
                    max_consecutive_misses: 1000,
                    skip_tolerance: 0,
                }],
            };
            let varying = evaluate_seed(&c, seed)
                .map(|v| v.forward.unwrap().matches)
                .unwrap_or(0);
            assert_eq!(varying, constant, "{f} skip {t}");
            assert!(
                constant > 0,
                "{f}: some chance matches expected at modulus 10"
            );
        }
    }
    // The MT hybrid compared unreduced draws; here draws are reduced mod modulus in every mode.
    let fam = family("mt19937");
    let raw: Vec<u64> = plant_pattern(&fam, 11, 0, &[1; 8], 1000)
        .iter()
        .map(|d| d + 7000)
        .collect();
    let r = pass(&variable(spec(fam, raw, 0, 0, 5, "1")), 11).unwrap();
    assert_eq!(r.matches, 8);
}

#[test]
fn k2_winner_is_the_strategy_with_most_matches_not_the_first_that_passes() {
    let fam = family("mt19937");
    let mut draws = plant_pattern(&fam, 2024, 1, &[3; 14], 1 << 32);
    for d in &mut draws[4..7] {
        *d ^= 1;
    }
    let mut s = variable(spec(fam, draws, 1, 3, 60, "0.25"));
    s.modulus = 1 << 32;
    // strict_continuous passes (4/14 >= 0.25) but lenient_continuous has 11.
    assert_eq!(run_strategy(&s, 2024, &Strategy::presets()[0], false).0, 4);
    let r = pass(&s, 2024).unwrap();
    assert_eq!(
        (r.matches, r.strategy.as_deref()),
        (11, Some("lenient_continuous"))
    );
}

#[test]
fn k3_long_windows_have_no_fixed_size_buffers() {
    let fam = family("xorshift32");
    let k = 3000; // beyond the original's 512 and 2048 local arrays
    let pattern: Vec<u32> = (0..k).map(|i| 2 + (i % 7) as u32).collect();
    let mut v = variable(spec(
        fam,
        plant_pattern(&fam, 99, 3, &pattern, 1 << 32),
        3,
        0,
        12,
        "1",
    ));
    v.modulus = 1 << 32;
    let r = pass(&v, 99).unwrap();
    assert_eq!(r.matches as usize, k);
    assert_eq!(r.skip_pattern.unwrap(), pattern);
    v.direction = Direction::Reverse;
    v.draws.reverse();
    let r = pass(&v, 99).unwrap();
    assert_eq!(r.skip_pattern.unwrap(), pattern);
    let c = spec(fam, plant(&fam, 99, 3, 2, k, 1000), 3, 0, 3, "1");
    assert_eq!(pass(&c, 99).unwrap().matches as usize, k);
}

#[test]
fn k4_reverse_passes_skip_between_draws_for_every_family() {
    for f in Family::ALL {
        let fam = FamilyConfig::new(f);
        let seed = a_seed(f);
        let mut draws = plant(&fam, seed, 2, 4, 12, 1000);
        draws.reverse();
        let mut s = spec(fam, draws, 2, 0, 6, "1");
        s.direction = Direction::Reverse;
        let r = pass(&s, seed).unwrap_or_else(|| panic!("{f}: reverse planted seed not found"));
        assert_eq!((r.matches, r.best_skip), (12, Some(4)), "{f}");
    }
}

#[test]
fn k5_64_bit_seeds_survive_reverse_and_bidirectional_uncorrupted() {
    for f in Family::ALL
        .into_iter()
        .filter(|f| f.seed_space_end() > 1 << 32)
    {
        let fam = FamilyConfig::new(f);
        let seed = 0xFEDC_BA98_7654_3210u64;
        let fwd = plant(&fam, seed, 0, 1, 8, 1000);
        let mut draws = fwd.clone();
        draws.extend(fwd.iter().rev()); // a palindrome: both passes see the planted outputs
        let mut s = spec(fam, draws, 0, 1, 1, "0.5");
        for direction in [Direction::Reverse, Direction::Bidirectional] {
            s.direction = direction;
            let out =
                try_sieve(&s, &SeedSet::List(vec![seed, seed & 0xFFFF_FFFF, seed - 1])).unwrap();
            let seeds: Vec<u64> = out.survivors.iter().map(|v| v.seed).collect();
            assert_eq!(seeds, vec![seed], "{f} {direction:?}");
        }
    }
}

#[test]
fn k6_parameters_reach_every_pass_and_results_are_exact() {
    // Custom parameters reach the generator, in forward and reverse passes alike.
    let customs = [
        FamilyConfig::parse("xorshift32", &[("a", "5"), ("b", "17"), ("c", "13")]).unwrap(),
        FamilyConfig::parse(
            "lcg32",
            &[("a", "1664525"), ("c", "1013904223"), ("m", "0")],
        )
        .unwrap(),
        FamilyConfig::parse("java_lcg", &[("a", "0x5DEECE66F"), ("c", "13")]).unwrap(),
        FamilyConfig::parse("pcg32", &[("inc", "0xDA3E39CB94B95BDB")]).unwrap(),
        // minstd honours m (the original's kernel ignored it).
        FamilyConfig::parse("minstd", &[("a", "16807"), ("m", "2147483629")]).unwrap(),
    ];
    for custom in customs {
        let default = FamilyConfig::new(custom.family());
        assert_ne!(custom, default);
        let mut draws = plant(&custom, 4242, 3, 2, 12, 1000);
        draws.reverse();
        let mut s = spec(custom, draws, 3, 0, 4, "1");
        s.direction = Direction::Reverse;
        assert_eq!(pass(&s, 4242).unwrap().best_skip, Some(2), "{custom:?}");
        s.family = default;
        assert!(
            pass(&s, 4242).is_none(),
            "{custom:?}: defaults must not reproduce a custom window"
        );
    }
    let m = |m: &str| {
        FamilyConfig::parse("minstd", &[("m", m)])
            .unwrap()
            .output_at(5, 3)
    };
    assert_ne!(m("2147483647"), m("2147483629"));

    // best_skip is not uint8.
    let fam = family("lcg32");
    let s = spec(fam, plant(&fam, 1, 0, 1000, 6, 1000), 0, 990, 1010, "1");
    assert_eq!(pass(&s, 1).unwrap().best_skip, Some(1000));

    // Integer match counts at the threshold edge (float32 kernel vs float64 host in the original).
    for (k, kept, threshold) in [
        (10usize, 7usize, "0.7"),
        (10, 3, "0.3"),
        (100, 29, "0.29"),
        (3, 2, "0.6666"),
    ] {
        let mut draws = plant(&fam, 77, 0, 0, k, 1000);
        for d in &mut draws[kept..] {
            *d = (*d + 1) % 1000;
        }
        let r = pass(&spec(fam, draws, 0, 0, 0, threshold), 77)
            .unwrap_or_else(|| panic!("{kept}/{k} at {threshold}"));
        assert_eq!(r.matches as usize, kept);
    }

    // Deterministic survivor order whatever the input order.
    let mut s = spec(fam, vec![1, 2, 3, 4], 0, 0, 3, "0.25");
    s.modulus = 4;
    let forward: Vec<u64> = (0..300).collect();
    let shuffled: Vec<u64> = (0..300).map(|i| (i * 7) % 300).collect();
    let a = try_sieve(&s, &SeedSet::List(forward)).unwrap();
    let b = try_sieve(&s, &SeedSet::List(shuffled)).unwrap();
    let c = try_sieve(&s, &SeedSet::Range { start: 0, end: 300 }).unwrap();
    assert!(a.survivors.len() > 20);
    assert_eq!(a, b);
    assert_eq!(a.survivors, c.survivors);

    // Parameters are typed and validated per family, with the same defaults as the original.
    assert_eq!(
        FamilyConfig::new(Family::Lcg32).params(),
        FamilyParams::Lcg32 {
            a: 1103515245,
            c: 12345,
            m: 0x7FFF_FFFF
        }
    );
    assert!(FamilyConfig::parse("minstd", &[("m", "1")]).is_err());
}

#[test]
fn k7_gpu_definitions_and_the_gapped_skip_model() {
    // xorshift64 outputs and compares all 64 bits (the CPU reference truncated to 32).
    let fam = family("xorshift64");
    let outs: Vec<u64> = (0..16).map(|n| fam.output_at(12345, n)).collect();
    assert!(outs.iter().any(|&o| o > u32::MAX as u64));
    let s = spec(fam, outs.iter().map(|o| o % 1000).collect(), 0, 0, 0, "1");
    assert_eq!(pass(&s, 12345).unwrap().matches, 16);
    let truncated: Vec<u64> = outs.iter().map(|o| (o & 0xFFFF_FFFF) % 1000).collect();
    assert_ne!(
        truncated, s.draws,
        "the two definitions must differ for this test to mean anything"
    );
    assert!(pass(&spec(fam, truncated, 0, 0, 0, "0.5"), 12345).is_none());

    // The skip model has a gap of t outputs between draws (the CPU references had none).
    let fam = family("xoshiro256pp");
    let gapped: Vec<u64> = (0..8).map(|i| fam.output_at(3, 2 + i * 3) % 1000).collect();
    assert_eq!(gapped, plant(&fam, 3, 0, 2, 8, 1000));
    let contiguous: Vec<u64> = (0..8).map(|i| fam.output_at(3, 2 + i) % 1000).collect();
    assert!(pass(&spec(fam, contiguous, 0, 2, 2, "0.5"), 3).is_none());

    // java_lcg is unscrambled: new Random(42) is seed 42 ^ 0x5DEECE66D (a documented definition).
    let java = family("java_lcg");
    assert_eq!(
        java.output_at(42 ^ 0x5_DEEC_E66D, 0) as u32 as i32,
        -1170105035
    );
    // mt19937 is init_genrand, i.e. C++ std::mt19937(seed), not Python's random.seed.
    assert_eq!(family("mt19937").output_at(5489, 0), 3499211612);
}

#[test]
fn k8_match_is_one_congruence_for_any_modulus() {
    // The original's "lanes" (mod 8, mod 125) were implied by mod 1000; seedq compares once, mod
    // the job's modulus, and draws are reduced too.
    let fam = family("sfc64");
    for modulus in [2u64, 37, 1000, 1 << 20, u64::MAX] {
        let draws = plant(&fam, 5, 1, 1, 16, modulus);
        // Raw draws above the modulus are reduced before comparing.
        let raw = draws
            .iter()
            .map(|&d| {
                modulus
                    .checked_mul(3)
                    .and_then(|x| d.checked_add(x))
                    .unwrap_or(d)
            })
            .collect();
        let mut s = spec(fam, raw, 1, 0, 2, "1");
        s.modulus = modulus;
        let r = pass(&s, 5).unwrap_or_else(|| panic!("modulus {modulus}"));
        assert_eq!(r.matches, 16);
    }
}

#[test]
fn k9_strategy_names_and_fields_are_those_of_the_config() {
    // Each strategy is reported under its own name: make the i-th preset the only one that can win.
    let fam = family("mt19937");
    let pattern = [1u32, 1, 12, 12, 12, 12, 12, 12];
    let draws = plant_pattern(&fam, 6, 0, &pattern, 1 << 32);
    let presets = Strategy::presets();
    for (i, preset) in presets.iter().enumerate() {
        let mut list: Vec<Strategy> = presets
            .iter()
            .map(|p| Strategy {
                name: p.name.clone(),
                max_consecutive_misses: 1,
                skip_tolerance: 0,
            })
            .collect();
        list[i] = preset.clone();
        let mut s = spec(fam, draws.clone(), 0, 0, 60, "0.5");
        s.modulus = 1 << 32;
        s.skip_mode = SkipMode::Variable { strategies: list };
        let r = pass(&s, 6);
        if preset.skip_tolerance >= 11 {
            assert_eq!(r.unwrap().strategy.as_deref(), Some(preset.name.as_str()));
        } else {
            assert!(r.is_none(), "{} cannot follow the jump", preset.name);
        }
    }
    // The fields are read under their own names; the original's fallback keys are refused, not
    // silently defaulted.
    let ok: Strategy =
        serde_json::from_str(r#"{"name":"x","max_consecutive_misses":4,"skip_tolerance":9}"#)
            .unwrap();
    assert_eq!((ok.max_consecutive_misses, ok.skip_tolerance), (4, 9));
    assert!(
        serde_json::from_str::<Strategy>(r#"{"name":"x","max_misses":4,"tolerance":9}"#).is_err()
    );
    // A spec round-trips through JSON with its strategies and exact threshold.
    let mut s = variable(spec(fam, vec![1, 2, 3], 5, 0, 9, "0.7"));
    s.reverse_threshold = Some(Threshold::parse("0.35").unwrap());
    let back: SieveSpec = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
    assert_eq!(back, s);
}
