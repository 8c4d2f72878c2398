//! The fast CPU backend returns exactly what the reference returns.
//!
//! Property tests draw random families, parameters, windows (planted from a real seed, then
//! partly corrupted so thresholds bite), offsets, skip ranges, thresholds, directions, skip modes,
//! offset ranges, seed ranges and candidate lists, thread counts and SIMD levels (AVX-512, AVX2, portable lanes,
//! scalar), with and without the algebraic shortcuts, and compare the whole `SieveOutcome`.

use proptest::prelude::*;
use seedq_kernels::cpu::{CpuBackend, SimdLevel};
use seedq_kernels::family::{Family, FamilyConfig, FamilyParams};
use seedq_kernels::{
    reference, Direction, SeedSet, SieveBackend, SieveSpec, SkipMode, Strategy as SkipStrategy,
    Threshold,
};

fn family_config() -> impl proptest::strategy::Strategy<Value = FamilyConfig> {
    (0..Family::ALL.len(), any::<[u64; 3]>(), 0u8..4).prop_map(|(i, r, pick)| {
        let family = Family::ALL[i];
        let params = match family {
            Family::Xorshift32 if pick > 0 => FamilyParams::Xorshift32 {
                a: 1 + (r[0] % 31) as u32,
                b: 1 + (r[1] % 31) as u32,
                c: 1 + (r[2] % 31) as u32,
            },
            Family::Pcg32 if pick > 0 => FamilyParams::Pcg32 {
                inc: r[0],
                mult: r[1] | 1,
            },
            Family::Lcg32 if pick > 0 => FamilyParams::Lcg32 {
                a: r[0] as u32,
                c: r[1] as u32,
                m: match pick {
                    1 => 0,
                    2 => 2 + (r[2] as u32 % 5000),
                    _ => (r[2] as u32).max(2),
                },
            },
            Family::JavaLcg if pick > 0 => FamilyParams::JavaLcg {
                a: r[0] >> 16,
                c: r[1] >> 16,
            },
            Family::Minstd if pick > 0 => {
                let m = if pick == 1 {
                    2 + (r[2] as u32 % 3000)
                } else {
                    (r[2] as u32).max(2)
                };
                FamilyParams::Minstd {
                    a: 1 + (r[0] as u32 % (m - 1)),
                    m,
                }
            }
            _ => FamilyParams::defaults(family),
        };
        FamilyConfig::with_params(params).unwrap()
    })
}

#[derive(Debug, Clone)]
struct Case {
    spec: SieveSpec,
    seeds: SeedSet,
    threads: usize,
    simd: SimdLevel,
    shortcuts: bool,
}

fn threshold(choice: u8, k: usize, extra: u64) -> Threshold {
    match choice {
        0 | 1 => Threshold::parse("1").unwrap(),
        2 => Threshold::parse("0.5").unwrap(),
        3 => Threshold::parse("0.01").unwrap(),
        _ => {
            // Exactly j/k for some j: the integer edge.
            let j = 1 + extra % k as u64;
            Threshold::from_f64(j as f64 / k as f64).unwrap_or(Threshold::parse("0.3").unwrap())
        }
    }
}

fn case() -> impl proptest::strategy::Strategy<Value = Case> {
    (
        family_config(),
        (1usize..40, 0u8..8, any::<u64>(), 0u64..30, 0u32..4, 0u32..5),
        (
            any::<u64>(),
            0u8..6,
            prop::collection::vec(any::<(u16, u32)>(), 0..8),
        ),
        (0u8..5, 0u8..5, 0u8..3, 0u8..8),
        (1usize..5, 0u8..4, any::<bool>(), 0u8..3, any::<u64>()),
    )
        .prop_map(
            |(
                family,
                (k0, big, mix, offset, skip_min, skip_span),
                (planted, mod_pick, corrupt),
                (th_f, th_r, dir, var),
                (threads, simd, shortcuts, seed_kind, salt),
            )| {
                let k = match big {
                    0 => 1 + (mix % 300) as usize,
                    1 => 120 + (mix % 120) as usize, // mt19937 beyond output 226
                    _ => k0,
                };
                let skip_max = skip_min + skip_span;
                let space = family.family().seed_space_end();
                let planted = if space > u64::MAX as u128 {
                    planted
                } else {
                    planted % space as u64
                };
                let t0 = skip_min + (mix >> 20) as u32 % (skip_span + 1);
                let modulus = match mod_pick {
                    0 | 1 => 1000,
                    2 => 2 + mix % 20,
                    3 => 8 << (mix % 4),
                    4 => (1u64 << 32) + (mix % 3),
                    _ => 2 + (mix >> 8) % 100_000,
                };
                let mut g = family.generator(planted);
                g.advance(offset + t0 as u64);
                let mut draws = Vec::with_capacity(k);
                for i in 0..k {
                    draws.push(g.next_output());
                    if i + 1 < k {
                        g.advance(t0 as u64);
                    }
                }
                for (at, v) in corrupt {
                    let i = at as usize % k;
                    draws[i] = draws[i].wrapping_add(1 + v as u64 % 7);
                }
                let skip_mode = if var == 0 {
                    SkipMode::Variable {
                        strategies: SkipStrategy::presets(),
                    }
                } else {
                    SkipMode::Constant
                };
                let spec = SieveSpec {
                    family,
                    draws,
                    modulus,
                    offset,
                    // A quarter of the cases search an offset range around the planted one.
                    offset_max: (salt >> 40)
                        .is_multiple_of(4)
                        .then(|| offset + (salt >> 42) % 6),
                    skip_min,
                    skip_max,
                    threshold: threshold(th_f, k, salt),
                    reverse_threshold: if th_r == 4 {
                        None
                    } else {
                        Some(threshold(th_r, k, salt >> 7))
                    },
                    direction: [
                        Direction::Forward,
                        Direction::Reverse,
                        Direction::Bidirectional,
                    ][dir as usize],
                    skip_mode,
                };
                let width = 1 + salt % 700;
                let seeds = match seed_kind {
                    0 | 1 => {
                        let start = planted.saturating_sub(salt % width);
                        let end = (start as u128 + width as u128).min(space) as u64;
                        let start = start.min(end - 1);
                        SeedSet::Range { start, end }
                    }
                    _ => {
                        let mut list: Vec<u64> = (0..width.min(200))
                            .map(|i| {
                                let s = planted
                                    .wrapping_add(i.wrapping_mul(salt | 1) % 5000)
                                    .wrapping_sub(2500);
                                if space > u64::MAX as u128 {
                                    s
                                } else {
                                    s % space as u64
                                }
                            })
                            .collect();
                        list.push(planted);
                        list.push(planted);
                        SeedSet::List(list)
                    }
                };
                let simd = [
                    SimdLevel::Avx512,
                    SimdLevel::Avx2,
                    SimdLevel::Portable,
                    SimdLevel::Scalar,
                ][simd as usize];
                Case {
                    spec,
                    seeds,
                    threads,
                    simd,
                    shortcuts,
                }
            },
        )
}

fn check(case: &Case) {
    case.spec.validate().unwrap();
    let want = reference::sieve(&case.spec, &case.seeds);
    let backend = CpuBackend::new(case.threads)
        .with_simd(case.simd)
        .with_shortcuts(case.shortcuts);
    let got = backend.sieve(&case.spec, &case.seeds).unwrap();
    assert_eq!(got, want, "{case:?}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, .. ProptestConfig::default() })]

    #[test]
    fn cpu_backend_equals_reference(case in case()) {
        check(&case);
    }
}

fn spec(
    family: FamilyConfig,
    planted: u64,
    k: usize,
    skip: u32,
    offset: u64,
    modulus: u64,
    threshold: &str,
) -> SieveSpec {
    let draws =
        seedq_kernels::reference::planted_window(&family, planted, offset, skip, k, modulus);
    SieveSpec {
        family,
        draws,
        modulus,
        offset,
        offset_max: None,
        skip_min: 0,
        skip_max: skip.max(1),
        threshold: Threshold::parse(threshold).unwrap(),
        reverse_threshold: None,
        direction: Direction::Forward,
        skip_mode: SkipMode::Constant,
    }
}

/// Every level and shortcut setting, on larger ranges than the property test affords.
fn check_all_paths(spec: &SieveSpec, seeds: &SeedSet, planted: Option<u64>) {
    let want = reference::sieve(spec, seeds);
    if let Some(p) = planted {
        assert!(
            want.survivors.iter().any(|s| s.seed == p),
            "planted seed {p} not found by the reference"
        );
    }
    for simd in [
        SimdLevel::Avx512,
        SimdLevel::Avx2,
        SimdLevel::Portable,
        SimdLevel::Scalar,
    ] {
        for shortcuts in [true, false] {
            for threads in [1, 3] {
                let got = CpuBackend::new(threads)
                    .with_simd(simd)
                    .with_shortcuts(shortcuts)
                    .sieve(spec, seeds)
                    .unwrap();
                assert_eq!(
                    got, want,
                    "{simd:?} shortcuts {shortcuts} threads {threads}"
                );
            }
        }
    }
}

#[test]
fn exact_workloads_on_wide_ranges() {
    for (family, k, modulus) in [
        (FamilyConfig::new(Family::Xorshift32), 16, 1000),
        (FamilyConfig::new(Family::Xorshift32), 6, 1000),
        (FamilyConfig::new(Family::Xorshift32), 3, 1000),
        (FamilyConfig::new(Family::Xorshift128), 8, 1000),
        (FamilyConfig::new(Family::Xorshift128), 4, 64),
        (FamilyConfig::new(Family::JavaLcg), 16, 1000),
        (FamilyConfig::new(Family::JavaLcg), 3, 1000),
        (FamilyConfig::new(Family::JavaLcg), 4, 96),
        (FamilyConfig::new(Family::Mt19937), 8, 1000),
        (FamilyConfig::new(Family::Lcg32), 8, 1000),
        (FamilyConfig::new(Family::Minstd), 8, 1000),
        (FamilyConfig::new(Family::Xorshift32), 2, 7),
    ] {
        let planted = 3_000_123_457u64;
        for (skip, offset) in [(0u32, 0u64), (2, 5)] {
            let s = spec(family, planted, k, skip, offset, modulus, "1");
            let seeds = SeedSet::Range {
                start: planted - 150_000,
                end: planted + 50_000,
            };
            check_all_paths(&s, &seeds, Some(planted));
        }
    }
}

#[test]
fn minstd_seeds_that_reduce_to_zero() {
    let family = FamilyConfig::new(Family::Minstd);
    let m = 2_147_483_647u64;
    for (planted, threshold) in [
        (0u64, "0.9"),
        (m, "0.9"),
        (2 * m, "0.9"),
        (0, "1"),
        (m, "1"),
        (2 * m, "1"),
    ] {
        let s = spec(family, planted, 12, 0, 0, 1000, threshold);
        for seeds in [
            SeedSet::Range {
                start: planted.saturating_sub(3000),
                end: (planted + 3000).min(1 << 32),
            },
            SeedSet::List(vec![0, 1, m, m + 1, 2 * m, 2 * m + 1]),
        ] {
            check_all_paths(&s, &seeds, Some(planted));
        }
    }
}

#[test]
fn s128_like_lcg_workload() {
    let family = FamilyConfig::new(Family::Lcg32);
    let mut s = spec(family, 4_000_000_000, 512, 7, 3, 1000, "0.01");
    s.skip_max = 20;
    check_all_paths(
        &s,
        &SeedSet::Range {
            start: 3_999_998_000,
            end: 4_000_000_100,
        },
        Some(4_000_000_000),
    );
    let mut s = spec(
        FamilyConfig::parse("lcg32", &[("m", "0")]).unwrap(),
        77,
        64,
        3,
        0,
        1000,
        "0.2",
    );
    s.skip_max = 5;
    check_all_paths(
        &s,
        &SeedSet::Range {
            start: 0,
            end: 5000,
        },
        Some(77),
    );
}

#[test]
fn mt19937_beyond_the_partial_state() {
    let family = FamilyConfig::new(Family::Mt19937);
    for (k, skip, offset) in [(8usize, 0u32, 219u64), (8, 0, 220), (40, 5, 0), (2, 0, 700)] {
        let s = spec(family, 5489, k, skip, offset, 1000, "1");
        check_all_paths(
            &s,
            &SeedSet::Range {
                start: 5000,
                end: 6000,
            },
            Some(5489),
        );
    }
}

#[test]
fn draws_no_32_bit_output_can_produce() {
    // With a modulus above 2^32, a residue of 2^32 or more can never match a 32-bit output.
    for family in [
        FamilyConfig::new(Family::Lcg32),
        FamilyConfig::new(Family::JavaLcg),
        FamilyConfig::new(Family::Xorshift32),
    ] {
        let mut s = spec(family, 4242, 24, 1, 0, 1 << 41, "0.5");
        s.draws[3] = 1 << 40;
        s.draws[17] = (1 << 33) + 5;
        check_all_paths(
            &s,
            &SeedSet::Range {
                start: 0,
                end: 9000,
            },
            Some(4242),
        );
        s.threshold = Threshold::parse("1").unwrap();
        check_all_paths(
            &s,
            &SeedSet::Range {
                start: 0,
                end: 9000,
            },
            None,
        );
    }
}

#[test]
fn results_do_not_depend_on_thread_count_or_chunking() {
    let family = FamilyConfig::new(Family::Lcg32);
    let mut s = spec(family, 123_456, 64, 2, 1, 1000, "0.03");
    s.skip_max = 4;
    let seeds = SeedSet::Range {
        start: 100_000,
        end: 140_001,
    };
    let one = CpuBackend::new(1).sieve(&s, &seeds).unwrap();
    assert!(
        one.survivors.len() > 10,
        "the threshold lets some random seeds through"
    );
    for threads in [2, 3, 4, 7] {
        assert_eq!(CpuBackend::new(threads).sieve(&s, &seeds).unwrap(), one);
    }
    assert_eq!(reference::sieve(&s, &seeds), one);
}

/// Full-state mt19937 (windows past output 226) on the shared-stream lanes: windows and offsets
/// that cross the 624-output twist boundaries, the pipeline's skip span, thresholds at the edge,
/// and planted seeds on either side of a lane-group boundary (8 and 16 lanes).
#[test]
fn mt19937_full_state_lanes_across_twists_and_lane_boundaries() {
    let family = FamilyConfig::new(Family::Mt19937);
    let base = 1_000_000u64;
    for (k, skip, skip_max, offset, threshold) in [
        (512usize, 7u32, 20u32, 0u64, "0.01"),
        (300, 1, 3, 600, "0.5"),
        (100, 0, 0, 1240, "1"),
        (64, 9, 12, 620, "0.02"),
        (700, 0, 1, 3, "0.1"),
    ] {
        for planted in [base + 7, base + 8, base + 15, base + 16, base + 31] {
            let draws = reference::planted_window(&family, planted, offset, skip, k, 1000);
            let s = SieveSpec {
                family,
                draws,
                modulus: 1000,
                offset,
                offset_max: None,
                skip_min: 0,
                skip_max,
                threshold: Threshold::parse(threshold).unwrap(),
                reverse_threshold: None,
                direction: Direction::Forward,
                skip_mode: SkipMode::Constant,
            };
            let seeds = SeedSet::Range {
                start: base + 3,
                end: base + 45,
            };
            check_all_paths(&s, &seeds, Some(planted));
        }
    }
}

/// An offset range finds the planted offset and skip, for every family, in one pass.
#[test]
fn offset_ranges_report_the_best_offset_and_skip() {
    for family in Family::ALL {
        let family = FamilyConfig::new(family);
        let planted = 40_123u64;
        for (offset, offset_max, at, skip, skip_max, k, threshold) in [
            (0u64, 100u64, 37u64, 3u32, 5u32, 24usize, "0.9"),
            (10, 12, 12, 0, 2, 40, "0.2"),
            (5, 5, 5, 1, 1, 16, "1"),
            (0, 30, 0, 0, 0, 8, "1"),
        ] {
            let draws = reference::planted_window(&family, planted, at, skip, k, 1000);
            let s = SieveSpec {
                family,
                draws,
                modulus: 1000,
                offset,
                offset_max: Some(offset_max),
                skip_min: 0,
                skip_max,
                threshold: Threshold::parse(threshold).unwrap(),
                reverse_threshold: None,
                direction: Direction::Forward,
                skip_mode: SkipMode::Constant,
            };
            let seeds = SeedSet::Range {
                start: planted - 700,
                end: planted + 300,
            };
            let want = reference::sieve(&s, &seeds);
            let hit = want
                .survivors
                .iter()
                .find(|x| x.seed == planted)
                .expect("the planted seed survives");
            let f = hit.forward.as_ref().unwrap();
            assert_eq!(f.matches, k as u32, "{family:?}");
            // Another (offset, skip) may tie only at an earlier offset or a smaller skip.
            assert!(f.best_offset.unwrap() <= at, "{family:?} {f:?}");
            check_all_paths(&s, &seeds, Some(planted));
        }
    }
}
