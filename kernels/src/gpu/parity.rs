//! A fixed, deterministic parity suite for GPU backends: every family, constant and variable
//! skip, forward/reverse/bidirectional, ranges and candidate lists, long windows, large skips,
//! full-state MT19937, and jobs with many survivors (buffer overflow). Each case is compared with
//! the reference. The GPU test binaries (kernels/tests/gpu_*_parity.rs) run it on a device;
//! scripts/gpu-check.sh runs those binaries on a GPU machine that has no Rust toolchain.

use rayon::prelude::*;

use crate::family::{Family, FamilyConfig};
use crate::reference;
use crate::spec::{Direction, SeedSet, SieveSpec, SkipMode, Strategy, Threshold};
use crate::SieveBackend;

/// One parity case.
#[derive(Debug, Clone)]
pub struct ParityCase {
    /// What the case covers (family, mode, direction).
    pub name: String,
    /// The sieve to run.
    pub spec: SieveSpec,
    /// The seeds to run it on.
    pub seeds: SeedSet,
}

/// SplitMix64, for reproducible noise draws.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub use crate::reference::planted_window;

/// Where a window comes from: `seed`'s outputs at constant skip `t` after `offset`, with every
/// `corrupt_every`-th draw replaced by noise (0: none).
struct Plant {
    seed: u64,
    offset: u64,
    t: u32,
    k: usize,
    corrupt_every: usize,
}

/// [`planted_window`] over modulus [`MODULUS`], with noise draws from `rng`.
fn planted(cfg: &FamilyConfig, plant: Plant, rng: &mut u64) -> Vec<u64> {
    let mut draws = planted_window(cfg, plant.seed, plant.offset, plant.t, plant.k, MODULUS);
    if plant.corrupt_every > 0 {
        for draw in draws
            .iter_mut()
            .skip(plant.corrupt_every - 1)
            .step_by(plant.corrupt_every)
        {
            *draw = splitmix(rng) % MODULUS;
        }
    }
    draws
}

/// The modulus of every planted case (the many-survivors cases use 2).
const MODULUS: u64 = 1000;

/// A forward, constant-skip spec with no reverse threshold, which cases vary from there.
/// `threshold` is a decimal literal.
pub fn forward_spec(
    family: FamilyConfig,
    draws: Vec<u64>,
    modulus: u64,
    offset: u64,
    skips: (u32, u32),
    threshold: &str,
) -> SieveSpec {
    SieveSpec {
        family,
        draws,
        modulus,
        offset,
        offset_max: None,
        skip_min: skips.0,
        skip_max: skips.1,
        threshold: Threshold::parse(threshold).expect("literal"),
        reverse_threshold: None,
        direction: Direction::Forward,
        skip_mode: SkipMode::Constant,
    }
}

/// The suite. `scale` multiplies the seed counts (1 for the shim, 64+ on a GPU).
pub fn cases(scale: u64) -> Vec<ParityCase> {
    let mut rng = 0x5EED_0001u64;
    let mut out = Vec::new();
    let n = 256 * scale.max(1);
    for family in Family::ALL {
        let cfg = FamilyConfig::new(family);
        let start = if family.seed_space_end() > 1 << 32 {
            0xFFFF_FFFF_0000_0000u64
        } else {
            0x1000_0000u64
        };
        let range = SeedSet::Range {
            start,
            end: start + n,
        };
        let seed = start + n / 3;
        for (offset, k, t) in [(0u64, 24usize, 0u32), (5, 40, 3), (250, 30, 2)] {
            let plant = Plant {
                seed,
                offset,
                t,
                k,
                corrupt_every: 4,
            };
            let draws = planted(&cfg, plant, &mut rng);
            let modes = [
                ("constant", SkipMode::Constant),
                (
                    "variable",
                    SkipMode::Variable {
                        strategies: Strategy::presets(),
                    },
                ),
            ];
            for (mode_name, mode) in modes {
                for (dir_name, direction) in [
                    ("fwd", Direction::Forward),
                    ("rev", Direction::Reverse),
                    ("bidi", Direction::Bidirectional),
                ] {
                    let spec = SieveSpec {
                        reverse_threshold: Some(Threshold::parse("0.1").expect("literal")),
                        direction,
                        skip_mode: mode.clone(),
                        ..forward_spec(cfg, draws.clone(), MODULUS, offset, (0, t + 2), "0.6")
                    };
                    out.push(ParityCase {
                        name: format!("{family}/{mode_name}/{dir_name}/offset{offset}/k{k}"),
                        spec,
                        seeds: range.clone(),
                    });
                }
            }
        }
        // Candidate list with duplicates, unsorted.
        let plant = Plant {
            seed,
            offset: 1,
            t: 1,
            k: 20,
            corrupt_every: 5,
        };
        let draws = planted(&cfg, plant, &mut rng);
        let spec = forward_spec(cfg, draws, MODULUS, 1, (0, 3), "0.5");
        let list: Vec<u64> = (0..n / 4)
            .map(|_| start + (splitmix(&mut rng) % n))
            .chain([seed, seed, start + n - 1])
            .collect();
        out.push(ParityCase {
            name: format!("{family}/list"),
            spec: spec.clone(),
            seeds: SeedSet::List(list),
        });
        // Many survivors: modulus 2, low threshold (overflows any initial buffer).
        let spec = SieveSpec {
            draws: vec![1, 0, 1, 1, 0, 0, 1, 0],
            modulus: 2,
            threshold: Threshold::parse("0.6").expect("literal"),
            offset: 0,
            offset_max: None,
            skip_max: 1,
            ..spec
        };
        out.push(ParityCase {
            name: format!("{family}/many-survivors"),
            spec,
            seeds: range,
        });
        // Long window, skips beyond 255.
        let plant = Plant {
            seed,
            offset: 2,
            t: 300,
            k: 4096,
            corrupt_every: 6,
        };
        let draws = planted(&cfg, plant, &mut rng);
        let spec = forward_spec(cfg, draws, MODULUS, 2, (299, 301), "0.8");
        out.push(ParityCase {
            name: format!("{family}/k4096/skip300"),
            spec,
            seeds: SeedSet::Range {
                start: seed - 2 * scale.max(1),
                end: seed + 2 * scale.max(1),
            },
        });
    }
    out
}

/// The outcome of running the suite on one backend.
#[derive(Debug, Default)]
pub struct ParityReport {
    /// Cases whose result equalled the reference.
    pub passed: usize,
    /// One line per case that did not, saying how.
    pub failures: Vec<String>,
}

/// Runs every case on `backend` and compares with the reference.
pub fn run(backend: &dyn SieveBackend, cases: &[ParityCase]) -> ParityReport {
    // The reference is single-threaded: compute the expectations on all cores first.
    let expected: Vec<_> = cases
        .par_iter()
        .map(|case| reference::sieve(&case.spec, &case.seeds))
        .collect();
    let mut report = ParityReport::default();
    for (case, expected) in cases.iter().zip(expected) {
        match backend.sieve(&case.spec, &case.seeds) {
            Ok(got) if got == expected => report.passed += 1,
            Ok(got) => report.failures.push(format!(
                "{}: {} survivors, reference {} (first differing seed {:?})",
                case.name,
                got.survivors.len(),
                expected.survivors.len(),
                got.survivors
                    .iter()
                    .zip(&expected.survivors)
                    .find(|(a, b)| a != b)
                    .map(|(a, _)| a.seed)
            )),
            Err(e) => report.failures.push(format!("{}: error: {e}", case.name)),
        }
    }
    report
}
