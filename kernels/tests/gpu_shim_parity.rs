//! The GPU kernel source (kernels/gpu/sieve.cu), run on the CPU through the host shim, returns
//! exactly what the reference returns: every family, constant and variable skip, forward,
//! reverse and bidirectional, ranges and candidate lists, long windows, skips beyond 255, and
//! survivor-buffer overflow (tiny buffers force the exact-size re-run).

use proptest::prelude::*;
use seedq_kernels::gpu::parity::{self, forward_spec, planted_window};
use seedq_kernels::gpu::shim::ShimBackend;
use seedq_kernels::{
    reference, Direction, Family, FamilyConfig, SeedSet, SieveBackend, SieveSpec, SkipMode,
    Strategy as SkipStrategy, Threshold,
};

/// Draws reproduced by `seed` at constant skip `t`, with every `corrupt_every`-th one altered.
fn planted_draws(
    family: &FamilyConfig,
    seed: u64,
    offset: u64,
    t: u32,
    k: usize,
    modulus: u64,
    corrupt_every: usize,
) -> Vec<u64> {
    let mut draws = planted_window(family, seed, offset, t, k, modulus);
    if corrupt_every > 0 {
        for draw in draws
            .iter_mut()
            .skip(corrupt_every - 1)
            .step_by(corrupt_every)
        {
            *draw = (*draw + 1) % modulus;
        }
    }
    draws
}

fn assert_parity(backend: &ShimBackend, spec: &SieveSpec, seeds: &SeedSet) {
    let expected = reference::sieve(spec, seeds);
    let got = backend
        .sieve(spec, seeds)
        .unwrap_or_else(|e| panic!("shim failed: {e}\nspec: {spec:?}"));
    assert_eq!(
        got, expected,
        "shim vs reference\nspec: {spec:?}\nseeds: {seeds:?}"
    );
}

fn range(start: u64, end: u64) -> SeedSet {
    SeedSet::Range { start, end }
}

/// `len` seeds from `start`, moved down to fit `family`'s seed space.
fn seed_range(family: Family, start: u64, len: u64) -> SeedSet {
    let space = family.seed_space_end().min(u64::MAX as u128) as u64;
    let start = start.min(space - len);
    range(start, start + len)
}

// The launch description's layout (size and every field's offset) is checked by the unit test
// `gpu::shim::tests::kernel_params_offsets_match_rust_field_by_field`.

/// Every family, every mode and direction, on a planted seed plus noise seeds.
#[test]
fn every_family_and_mode_matches_reference() {
    let backend = ShimBackend {
        initial_capacity: 2,
        ..ShimBackend::default()
    };
    for family in Family::ALL {
        let cfg = FamilyConfig::new(family);
        let start = if family.seed_space_end() > 1 << 32 {
            0xFFFF_FFFF_0000_0000
        } else {
            0x7FFF_F000
        };
        let planted = start + 77;
        for (offset, k) in [(3u64, 12usize), (240, 20)] {
            let draws = planted_draws(&cfg, planted, offset, 2, k, 1000, 5);
            for mode in [
                SkipMode::Constant,
                SkipMode::Variable {
                    strategies: SkipStrategy::presets(),
                },
            ] {
                for direction in [
                    Direction::Forward,
                    Direction::Reverse,
                    Direction::Bidirectional,
                ] {
                    let mut spec = forward_spec(cfg, draws.clone(), 1000, offset, (0, 4), "0.5");
                    spec.skip_mode = mode.clone();
                    spec.direction = direction;
                    spec.reverse_threshold = Some(Threshold::parse("0.25").unwrap());
                    assert_parity(&backend, &spec, &range(start, start + 200));
                    let list = vec![planted, start + 3, planted, start + 150, start + 9];
                    assert_parity(&backend, &spec, &SeedSet::List(list));
                }
            }
        }
        // The planted seed itself is found forward at its true skip.
        let draws = planted_window(&cfg, planted, 5, 3, 16, 1000);
        let spec = forward_spec(cfg, draws, 1000, 5, (0, 6), "1");
        let out = backend.sieve(&spec, &range(start, start + 100)).unwrap();
        assert!(
            out.survivors
                .iter()
                .any(|s| s.seed == planted && s.forward.as_ref().unwrap().best_skip == Some(3)),
            "{family}"
        );
    }
}

/// Many survivors with a 1-slot buffer and small launches: the overflow is detected and re-run.
#[test]
fn survivor_buffer_overflow_is_rerun_not_truncated() {
    let backend = ShimBackend {
        initial_capacity: 1,
        max_seeds_per_launch: 300,
        ..ShimBackend::default()
    };
    for family in [Family::Lcg32, Family::Xoshiro256pp, Family::Mt19937] {
        let cfg = FamilyConfig::new(family);
        let spec = forward_spec(cfg, vec![0, 1, 0, 1, 1, 0], 2, 0, (0, 1), "0.5");
        let seeds = range(1000, 2000);
        let expected = reference::sieve(&spec, &seeds);
        assert!(
            expected.survivors.len() > 500,
            "the job must overflow the buffer"
        );
        assert_eq!(backend.sieve(&spec, &seeds).unwrap(), expected, "{family}");
    }
}

/// Windows of 4096 draws and skips beyond 255 (the original's limits).
#[test]
fn long_windows_and_large_skips() {
    let backend = ShimBackend::default();
    for family in [
        Family::Xorshift32,
        Family::Pcg32,
        Family::Mt19937,
        Family::Philox4x32,
        Family::JavaLcg,
    ] {
        let cfg = FamilyConfig::new(family);
        let planted = 40u64;
        let draws = planted_draws(&cfg, planted, 1, 300, 4096, 1000, 7);
        let spec = forward_spec(cfg, draws, 1000, 1, (299, 301), "0.8");
        let seeds = range(32, 48);
        let out = backend.sieve(&spec, &seeds).unwrap();
        assert_eq!(out, reference::sieve(&spec, &seeds), "{family}");
        assert_eq!(out.survivors.len(), 1, "{family}");
        assert_eq!(
            out.survivors[0].forward.as_ref().unwrap().best_skip,
            Some(300)
        );
    }
}

/// Exact xorshift32 search over the whole 2^32 space: the algebraic prefilter plus the kernel
/// find the planted seed (brute force would take hours on the shim).
#[test]
fn xorshift32_exact_search_over_the_full_seed_space() {
    let cfg = FamilyConfig::new(Family::Xorshift32);
    let planted = 0xC0FF_EE11u64;
    let draws = planted_window(&cfg, planted, 0, 0, 16, 1000);
    let spec = forward_spec(cfg, draws, 1000, 0, (0, 0), "1");
    let out = ShimBackend::default()
        .sieve(&spec, &range(0, 1 << 32))
        .unwrap();
    let seeds: Vec<u64> = out.survivors.iter().map(|s| s.seed).collect();
    assert_eq!(seeds, vec![planted]);
    assert_eq!(out.seeds_tested, 1 << 32);
}

fn arb_family() -> impl Strategy<Value = FamilyConfig> {
    prop_oneof![
        (1u32..32, 1u32..32, 1u32..32).prop_map(|(a, b, c)| FamilyConfig::parse(
            "xorshift32",
            &[
                ("a", a.to_string()),
                ("b", b.to_string()),
                ("c", c.to_string())
            ]
        )
        .unwrap()),
        Just(FamilyConfig::new(Family::Xorshift64)),
        Just(FamilyConfig::new(Family::Xorshift128)),
        (any::<u64>(), any::<u64>()).prop_map(|(inc, mult)| FamilyConfig::parse(
            "pcg32",
            &[("inc", inc.to_string()), ("mult", mult.to_string())]
        )
        .unwrap()),
        (
            any::<u32>(),
            any::<u32>(),
            prop_oneof![Just(0u32), Just(0x7FFF_FFFF), 2u32..]
        )
            .prop_map(|(a, c, m)| {
                FamilyConfig::parse(
                    "lcg32",
                    &[
                        ("a", a.to_string()),
                        ("c", c.to_string()),
                        ("m", m.to_string()),
                    ],
                )
                .unwrap()
            }),
        (0u64..1 << 48, 0u64..1 << 48).prop_map(|(a, c)| FamilyConfig::parse(
            "java_lcg",
            &[("a", a.to_string()), ("c", c.to_string())]
        )
        .unwrap()),
        (2u32.., any::<u32>()).prop_map(|(m, a)| {
            let a = 1 + a % (m - 1);
            FamilyConfig::parse("minstd", &[("a", a.to_string()), ("m", m.to_string())]).unwrap()
        }),
        Just(FamilyConfig::new(Family::Mt19937)),
        Just(FamilyConfig::new(Family::Xoshiro256pp)),
        Just(FamilyConfig::new(Family::Philox4x32)),
        Just(FamilyConfig::new(Family::Sfc64)),
    ]
}

fn arb_strategies() -> impl Strategy<Value = Vec<SkipStrategy>> {
    prop_oneof![
        Just(SkipStrategy::presets()),
        prop::collection::vec((1u32..6, 0u32..8), 1..4).prop_map(|v| v
            .into_iter()
            .enumerate()
            .map(|(i, (m, t))| SkipStrategy {
                name: format!("s{i}"),
                max_consecutive_misses: m,
                skip_tolerance: t
            })
            .collect()),
    ]
}

#[derive(Debug, Clone)]
struct Case {
    spec: SieveSpec,
    seeds: SeedSet,
    capacity: u64,
}

fn arb_case() -> impl Strategy<Value = Case> {
    (
        arb_family(),
        prop_oneof![
            Just(1000u64),
            Just(10),
            Just(2),
            Just(7),
            Just(1 << 33),
            2u64..5000
        ],
        (0u64..300, 0u32..6, 0u32..4, 1usize..40),
        (
            any::<u64>(),
            1u64..400,
            0u64..400,
            prop::collection::vec(0u64..400, 0..20),
        ),
        (
            prop_oneof![
                Just("1"),
                Just("0.5"),
                Just("0.25"),
                Just("0.75"),
                Just("0.1")
            ],
            prop_oneof![Just(None), Just(Some("0.3"))],
        ),
        (
            0usize..3,
            prop::option::of(arb_strategies()),
            any::<bool>(),
            0usize..6,
            1u64..64,
        ),
    )
        .prop_map(
            |(
                family,
                modulus,
                (offset, skip_min, skip_span, k),
                (start, len, plant_at, list),
                (th, rth),
                (dir, strategies, use_list, corrupt, capacity),
            )| {
                let seeds = seed_range(family.family(), start, len);
                let SeedSet::Range { start, end } = seeds else {
                    unreachable!()
                };
                let planted = start + plant_at % (end - start);
                let skip_max = skip_min + skip_span;
                let draws = planted_draws(
                    &family,
                    planted,
                    offset,
                    skip_min + skip_span / 2,
                    k,
                    modulus,
                    corrupt,
                );
                let mut spec =
                    forward_spec(family, draws, modulus, offset, (skip_min, skip_max), th);
                spec.reverse_threshold = rth.map(|t| Threshold::parse(t).unwrap());
                spec.direction = [
                    Direction::Forward,
                    Direction::Reverse,
                    Direction::Bidirectional,
                ][dir];
                if let Some(strategies) = strategies {
                    spec.skip_mode = SkipMode::Variable { strategies };
                }
                let seeds = if use_list {
                    let space = family.family().seed_space_end().min(u64::MAX as u128) as u64;
                    SeedSet::List(
                        list.into_iter()
                            .map(|d| (start + d).min(space - 1))
                            .chain([planted])
                            .collect(),
                    )
                } else {
                    seeds
                };
                Case {
                    spec,
                    seeds,
                    capacity,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn shim_matches_reference_on_random_specs(case in arb_case()) {
        let backend = ShimBackend { initial_capacity: case.capacity, max_seeds_per_launch: 150, ..ShimBackend::default() };
        let expected = reference::sieve(&case.spec, &case.seeds);
        let got = backend.sieve(&case.spec, &case.seeds).unwrap();
        prop_assert_eq!(got, expected);
    }

    /// Exact searches of the GF(2)-linear families go through the algebraic prefilter.
    #[test]
    fn linear_prefilter_matches_reference(
        family in prop_oneof![Just(Family::Xorshift32), Just(Family::Xorshift128)],
        modulus in prop_oneof![Just(1000u64), Just(16), Just(6), Just(1 << 32)],
        offset in 0u64..50, t in 0u32..3, k in 4usize..20, start in 0u64..(1 << 32) - 5000, plant in 0u64..5000,
    ) {
        let cfg = FamilyConfig::new(family);
        let spec = forward_spec(cfg, planted_window(&cfg, start + plant, offset, t, k, modulus), modulus, offset, (0, 2), "1");
        let seeds = range(start, start + 5000);
        let got = ShimBackend::default().sieve(&spec, &seeds).unwrap();
        prop_assert!(got.survivors.iter().any(|s| s.seed == start + plant));
        prop_assert_eq!(got, reference::sieve(&spec, &seeds));
    }
}

/// The fixed GPU parity suite (what scripts/gpu-check.sh runs on a device), on the shim.
#[test]
fn fixed_parity_suite_passes_on_the_shim() {
    let cases = parity::cases(1);
    let backend = ShimBackend {
        initial_capacity: 64,
        ..ShimBackend::default()
    };
    let report = parity::run(&backend, &cases);
    assert!(
        report.failures.is_empty(),
        "{} passed, failures:\n{}",
        report.passed,
        report.failures.join("\n")
    );
    assert_eq!(report.passed, cases.len());
}

/// The shared-stream kernels (stepping families, and mt19937 beyond output 226 with its state
/// in shared memory): windows crossing 624-output twist boundaries, skip ranges wider than one
/// group of 32 skips (several launches per pass), offsets inside and past the first twist
/// block, and thresholds at the edge (need = matches of the planted seed, and one more).
#[test]
fn shared_stream_edges_match_reference() {
    let backend = ShimBackend {
        initial_capacity: 2,
        ..ShimBackend::default()
    };
    for family in [
        Family::Mt19937,
        Family::Xorshift32,
        Family::Xorshift64,
        Family::Xorshift128,
        Family::Xoshiro256pp,
        Family::Sfc64,
    ] {
        let cfg = FamilyConfig::new(family);
        let start = if family.seed_space_end() > 1 << 32 {
            0xFFFF_FFFF_0000_0000
        } else {
            0x1234_0000
        };
        let planted = start + 21;
        // (offset, planted skip, skip range, k): a window across twist blocks; 70 skips (three
        // groups, the planted skip in the last); an offset past the first block; skip 0 only.
        for (offset, t, (lo, hi), k) in [
            (600u64, 5u32, (0u32, 9u32), 300usize),
            (3, 66, (0, 69), 24),
            (1300, 2, (1, 3), 200),
            (0, 0, (0, 0), 700),
        ] {
            // Every 4th draw corrupted: the planted seed matches 3/4 of the window.
            let draws = planted_draws(&cfg, planted, offset, t, k, 1 << 20, 4);
            let matches = k - k / 4;
            for threshold in [
                format!("{}", matches as f64 / k as f64),
                format!("{}", (matches + 1) as f64 / k as f64),
                "0.01".to_string(),
            ] {
                let spec = forward_spec(cfg, draws.clone(), 1 << 20, offset, (lo, hi), &threshold);
                assert_parity(&backend, &spec, &range(start, start + 64));
                let mut reverse = spec.clone();
                reverse.direction = Direction::Reverse;
                assert_parity(&backend, &reverse, &SeedSet::List(vec![planted, start + 1]));
            }
        }
    }
}

/// Every reduction path of the kernels: 32-bit Barrett (3m < 2^32), the 64-bit fastmod for
/// 32-bit outputs above that, no reduction (m >= 2^32), 64-bit Barrett (3m < 2^64) and the
/// `%` fallback above it, on stream, jump and mt19937 kernels.
#[test]
fn every_reduction_path_matches_reference() {
    let backend = ShimBackend::default();
    for family in [
        Family::Xorshift32,
        Family::Mt19937,
        Family::Pcg32,
        Family::Xorshift64,
        Family::Sfc64,
        Family::JavaLcg,
    ] {
        let cfg = FamilyConfig::new(family);
        let start = 0x2000_0000u64;
        let planted = start + 9;
        for modulus in [
            1000u64,
            0x5555_5554,
            0xC000_0001,
            (1 << 32) - 5,
            1 << 32,
            1 << 40,
            0x5555_5555_5555_5555,
            u64::MAX - 10,
        ] {
            let draws = planted_draws(&cfg, planted, 230, 1, 40, modulus, 3);
            let spec = forward_spec(cfg, draws, modulus, 230, (0, 3), "0.5");
            assert_parity(&backend, &spec, &range(start, start + 32));
        }
    }
}

/// Offset ranges (`offset_max`): every offset searched, best (offset, skip) per survivor, on
/// the shared-stream, mt19937 and jump kernels (the driver runs the range offset by offset).
#[test]
fn offset_ranges_match_reference() {
    let backend = ShimBackend {
        initial_capacity: 2,
        ..ShimBackend::default()
    };
    for family in [
        Family::Mt19937,
        Family::Xorshift32,
        Family::Xoshiro256pp,
        Family::Pcg32,
        Family::Lcg32,
    ] {
        let cfg = FamilyConfig::new(family);
        let start = 0x3000_0000u64;
        let planted = start + 17;
        // The planted seed's true offset lies inside the range, near a twist boundary.
        for (offset, true_offset, offset_max, t) in [
            (600u64, 619u64, 630u64, 1u32),
            (0, 2, 6, 0),
            (40, 40, 41, 3),
        ] {
            let draws = planted_draws(&cfg, planted, true_offset, t, 60, 1000, 6);
            let mut spec = forward_spec(cfg, draws, 1000, offset, (0, 3), "0.8");
            spec.offset_max = Some(offset_max);
            assert_parity(&backend, &spec, &range(start, start + 40));
            spec.direction = Direction::Bidirectional;
            spec.reverse_threshold = Some(Threshold::parse("0.3").unwrap());
            assert_parity(&backend, &spec, &SeedSet::List(vec![planted, start + 2]));
        }
    }
}

/// The mt19937 stream kernel seeds 32 seeds per warp at once and then takes them one by one:
/// planted seeds in the first, a middle and the last (partial) batch of a range spanning several
/// rounds of the emulated grid, and in a candidate list, at the pipeline's many-skip shape with
/// an offset past the first twist block; each is found, and nothing else differs.
#[test]
fn mt19937_stream_batches_cover_every_seed_once() {
    let backend = ShimBackend::default();
    let cfg = FamilyConfig::new(Family::Mt19937);
    let start = 0x5EED_0000u64;
    // 4 warps of 32: 300 seeds are 10 batches, the last of 12 seeds.
    for (planted, t) in [(start, 0u32), (start + 161, 20), (start + 299, 7)] {
        let draws = planted_draws(&cfg, planted, 1000, t, 48, 1000, 6);
        let spec = forward_spec(cfg, draws, 1000, 1000, (0, 20), "0.8");
        let out = backend.sieve(&spec, &range(start, start + 300)).unwrap();
        assert!(
            out.survivors.iter().any(|s| s.seed == planted),
            "planted seed {planted} (skip {t}) not found"
        );
        assert_parity(&backend, &spec, &range(start, start + 300));
        let list = vec![start + 5, planted, start + 299, planted, start];
        assert_parity(&backend, &spec, &SeedSet::List(list));
    }
}

/// An mt19937 offset range wider than one launch's 128 (offset, skip) pairs runs as several
/// pair groups, each one walk of the stream: planted seeds at offsets in the first and in the
/// last group are found with their offset, and nothing else differs from the reference.
#[test]
fn mt19937_offset_ranges_across_pair_groups_match_reference() {
    let backend = ShimBackend::default();
    let cfg = FamilyConfig::new(Family::Mt19937);
    let start = 0x0FF5_E700u64;
    let planted = start + 9;
    // 61 offsets x 4 skips = 244 pairs: two groups.
    for true_offset in [501u64, 555] {
        let draws = planted_draws(&cfg, planted, true_offset, 2, 60, 1000, 6);
        let mut spec = forward_spec(cfg, draws, 1000, 500, (0, 3), "0.8");
        spec.offset_max = Some(560);
        let out = backend.sieve(&spec, &range(start, start + 64)).unwrap();
        let found = out.survivors.iter().find(|s| s.seed == planted);
        assert_eq!(
            found
                .and_then(|s| s.forward.as_ref())
                .and_then(|p| p.best_offset),
            Some(true_offset),
            "planted at offset {true_offset}"
        );
        assert_parity(&backend, &spec, &range(start, start + 64));
        spec.direction = Direction::Bidirectional;
        spec.reverse_threshold = Some(Threshold::parse("0.3").unwrap());
        assert_parity(&backend, &spec, &SeedSet::List(vec![planted, start + 2]));
    }
}
