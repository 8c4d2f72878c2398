//! The known-answer self-test of a seed slot: one small chunk per PRNG family, run through the
//! slot's own backend and compared in full (every survivor record and the seed count) with the
//! scalar reference, `seedq_kernels::reference::sieve`.
//!
//! Each family's chunk is [`SEEDS_PER_FAMILY`] consecutive seeds sieved against draws planted
//! from one of them (the reference generator's window at [`PLANTED_SKIP`]), so a backend that
//! computes the family wrong loses the planted seed; the draws are reduced mod [`MODULUS`] (odd,
//! so every output bit matters) and the threshold is loose (4 of 12), so about 30% of the other
//! seeds survive by chance, with their best skips and counts: about 800 survivor records in all.
//! That is what catches a device that silently drops results: one that loses 1 survivor in 100
//! misses all 800 with probability 0.99^800, about 3e-4. The offset puts mt19937 past its
//! partial-state shortcut, into the full 624-word state.
//!
//! The reference answers are computed once per process (a few ms) and shared by every slot. A run
//! makes exactly one backend call per family (11 for a run that passes; the fault-injecting
//! backend of the e2e tests counts on it), stops at the first family that
//! differs, and takes a few milliseconds on one CPU thread.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use seedq_kernels::family::{Family, FamilyConfig};
use seedq_kernels::{reference, SeedSet, SieveBackend, SieveOutcome, SieveSpec, Threshold};

/// Seeds of each family's known-answer chunk.
pub const SEEDS_PER_FAMILY: u64 = 256;
/// First seed of the chunks (inside every family's seed space, away from 0).
const FIRST_SEED: u64 = 0x5eed_0000;
/// Draws per window.
const K: usize = 12;
/// The draws' modulus: odd, so a reduced output depends on all of its bits.
const MODULUS: u64 = 7;
/// Skips searched: 0..=SKIP_MAX.
const SKIP_MAX: u32 = 3;
/// The skip the draws are planted at.
const PLANTED_SKIP: u32 = 2;
/// Generator outputs before the window: past mt19937's first 227 outputs (its partial state).
const OFFSET: u64 = 250;
/// 4 matches of 12.
const THRESHOLD: &str = "0.33";

/// One family's known-answer chunk and the reference's answer.
struct Case {
    family: Family,
    spec: SieveSpec,
    seeds: SeedSet,
    answer: SieveOutcome,
}

/// A self-test that passed.
#[derive(Debug, Clone, Copy)]
pub struct Passed {
    /// Survivor records compared.
    pub survivors: u64,
    /// Backend time of the run.
    pub duration: Duration,
}

/// Why a self-test failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Failed {
    /// The backend's answer differs from the reference's.
    #[error("{family}: {detail}")]
    Mismatch {
        family: &'static str,
        detail: String,
    },
    /// The backend failed the run.
    #[error("{family}: backend error: {detail}")]
    Backend {
        family: &'static str,
        detail: String,
    },
}

/// The known-answer chunks with their answers, computed on first use.
fn cases() -> &'static [Case] {
    static CASES: OnceLock<Vec<Case>> = OnceLock::new();
    CASES.get_or_init(|| Family::ALL.into_iter().map(case).collect())
}

fn case(family: Family) -> Case {
    let cfg = FamilyConfig::new(family);
    let planted = FIRST_SEED + SEEDS_PER_FAMILY / 3;
    let spec = SieveSpec {
        family: cfg,
        draws: reference::planted_window(&cfg, planted, OFFSET, PLANTED_SKIP, K, MODULUS),
        modulus: MODULUS,
        offset: OFFSET,
        offset_max: None,
        skip_min: 0,
        skip_max: SKIP_MAX,
        threshold: Threshold::parse(THRESHOLD).expect("a valid built-in threshold"),
        reverse_threshold: None,
        direction: Default::default(),
        skip_mode: Default::default(),
    };
    let seeds = SeedSet::Range {
        start: FIRST_SEED,
        end: FIRST_SEED + SEEDS_PER_FAMILY,
    };
    let answer = reference::sieve(&spec, &seeds);
    Case {
        family,
        spec,
        seeds,
        answer,
    }
}

/// Computes the reference answers now (they are otherwise computed by the first run).
pub fn prepare() {
    cases();
}

/// Runs every family's known-answer chunk through `backend` and compares each answer in full
/// with the reference's.
pub fn run(backend: &dyn SieveBackend) -> Result<Passed, Failed> {
    let cases = cases();
    let started = Instant::now();
    let mut survivors = 0;
    for case in cases {
        let family = case.family.name();
        let got = backend
            .sieve(&case.spec, &case.seeds)
            .map_err(|e| Failed::Backend {
                family,
                detail: e.to_string(),
            })?;
        if let Some(detail) = difference(&case.answer, &got) {
            return Err(Failed::Mismatch { family, detail });
        }
        survivors += got.survivors.len() as u64;
    }
    Ok(Passed {
        survivors,
        duration: started.elapsed(),
    })
}

/// The first difference between the reference's answer and a backend's, in words.
fn difference(want: &SieveOutcome, got: &SieveOutcome) -> Option<String> {
    if want.seeds_tested != got.seeds_tested {
        return Some(format!(
            "{} seeds tested, expected {}",
            got.seeds_tested, want.seeds_tested
        ));
    }
    if want.survivors.len() != got.survivors.len() {
        return Some(format!(
            "{} survivors, expected {}",
            got.survivors.len(),
            want.survivors.len()
        ));
    }
    want.survivors
        .iter()
        .zip(&got.survivors)
        .find(|(w, g)| w != g)
        .map(|(w, g)| format!("survivor record differs: got {g:?}, expected {w:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drops one survivor of one family: what a faulty device does.
    struct Dropping(seedq_kernels::cpu::CpuBackend, Family);

    impl SieveBackend for Dropping {
        fn describe(&self) -> String {
            "dropping".into()
        }
        fn sieve(
            &self,
            spec: &SieveSpec,
            seeds: &SeedSet,
        ) -> Result<SieveOutcome, seedq_kernels::SieveError> {
            let mut out = self.0.sieve(spec, seeds)?;
            if spec.family.family() == self.1 {
                out.survivors.remove(out.survivors.len() / 2);
            }
            Ok(out)
        }
    }

    #[test]
    fn every_family_has_the_planted_seed_and_many_chance_survivors() {
        let planted = FIRST_SEED + SEEDS_PER_FAMILY / 3;
        let mut total = 0;
        for case in cases() {
            let seeds: Vec<u64> = case.answer.survivors.iter().map(|s| s.seed).collect();
            assert!(seeds.contains(&planted), "{:?}", case.family);
            let planted_record = case
                .answer
                .survivors
                .iter()
                .find(|s| s.seed == planted)
                .unwrap();
            assert_eq!(
                planted_record.forward.as_ref().map(|p| p.matches),
                Some(K as u32),
                "{:?}",
                case.family
            );
            assert!(
                seeds.len() > 30,
                "{:?}: {} survivors",
                case.family,
                seeds.len()
            );
            total += seeds.len();
        }
        assert!(total > 500, "{total} survivors in all");
    }

    /// Counts backend calls.
    struct Counting(std::cell::Cell<usize>);

    impl SieveBackend for Counting {
        fn describe(&self) -> String {
            "counting".into()
        }
        fn sieve(
            &self,
            spec: &SieveSpec,
            seeds: &SeedSet,
        ) -> Result<SieveOutcome, seedq_kernels::SieveError> {
            self.0.set(self.0.get() + 1);
            reference::try_sieve(spec, seeds)
        }
    }

    #[test]
    fn a_run_is_one_launch_per_family() {
        let counting = Counting(std::cell::Cell::new(0));
        run(&counting).unwrap();
        assert_eq!(counting.0.get(), Family::ALL.len());
        assert_eq!(
            Family::ALL.len(),
            11,
            "e2e quarantine.rs counts 11 launches a self-test"
        );
    }

    #[test]
    fn the_cpu_backend_passes_and_a_dropped_survivor_fails() {
        let cpu = seedq_kernels::cpu::CpuBackend::new(1);
        let passed = run(&cpu).expect("the CPU backend matches the reference");
        assert!(passed.survivors > 500);
        assert!(run(&seedq_kernels::ReferenceBackend).is_ok());
        let bad = Dropping(seedq_kernels::cpu::CpuBackend::new(1), Family::Mt19937);
        match run(&bad) {
            Err(Failed::Mismatch { family, .. }) => assert_eq!(family, "mt19937"),
            other => panic!("expected a mismatch, got {other:?}"),
        }
    }
}
