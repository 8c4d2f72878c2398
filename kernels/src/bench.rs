//! Named benchmark workloads for `seedq-consumer bench`, shared with the tests and the GPU
//! parity script so that every backend is measured on exactly the same job.
//!
//! A workload fixes a family, window length, skip range, threshold, offset and modulus. Its draws
//! are generated from a *planted* seed inside the benchmarked range, at a planted skip inside the
//! skip range, so every run also checks that the backend finds that seed.
//!
//! Throughput is reported two ways: seeds per second, and nominal evaluations per second, where
//! one evaluation is one (seed, skip, draw) comparison: `seeds * (skip_max - skip_min + 1) * k`.
//! That is the work a plain implementation does; a backend that exits early or solves for
//! candidates does less, which is the point, and the figure says how much faster that makes it.

use std::time::Instant;

use serde::Serialize;

use crate::family::{Family, FamilyConfig};
use crate::spec::{Direction, SeedSet, SieveError, SieveSpec, SkipMode, Strategy, Threshold};
use crate::SieveBackend;

/// A job shape without draws: what a named workload is.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    /// The name `bench --workload` takes (or `custom`).
    pub name: String,
    /// Family and parameters.
    pub family: FamilyConfig,
    /// Draws in the window.
    pub k: usize,
    /// Smallest skip searched.
    pub skip_min: u32,
    /// Largest skip searched.
    pub skip_max: u32,
    /// Forward threshold.
    pub threshold: Threshold,
    /// Reverse threshold (`None`: the forward one).
    pub reverse_threshold: Option<Threshold>,
    /// Generator outputs before the window.
    pub offset: u64,
    /// Largest offset searched (`None`: `offset` alone).
    pub offset_max: Option<u64>,
    /// Draws' modulus.
    pub modulus: u64,
    /// Forward, reverse or bidirectional.
    pub direction: Direction,
    /// Constant or variable skip.
    pub skip_mode: SkipMode,
}

/// The names [`Workload::named`] knows (plus `custom`, built by the caller).
pub const NAMES: [&str; 5] = ["pipeline", "s128", "xs32-exact", "mt-exact", "java-exact"];

impl Workload {
    fn constant(name: &str, family: Family, k: usize, skip_max: u32, threshold: &str) -> Workload {
        Workload {
            name: name.to_string(),
            family: FamilyConfig::new(family),
            k,
            skip_min: 0,
            skip_max,
            threshold: Threshold::parse(threshold).expect("valid built-in threshold"),
            reverse_threshold: None,
            offset: 0,
            offset_max: None,
            modulus: 1000,
            direction: Direction::Forward,
            skip_mode: SkipMode::Constant,
        }
    }

    /// A built-in workload:
    ///
    /// * `pipeline`: mt19937, k = 512, skips 0..=20, threshold 0.01, offset 0, modulus 1000: the
    ///   lab pipeline's default search (its outputs reach number 10,751, far past the partial
    ///   state, so every seed runs the full 624-word state).
    /// * `s128`: lcg32 (default parameters), k = 512, skips 0..=20, threshold 0.01, offset 0:
    ///   the configuration the original cluster was measured on.
    /// * `xs32-exact`: xorshift32 (13, 17, 5), k = 16, skip 0, threshold 1.0.
    /// * `mt-exact`: mt19937, k = 8, skip 0, threshold 1.0.
    /// * `java-exact`: java_lcg, k = 16, skip 0, threshold 1.0.
    pub fn named(name: &str) -> Option<Workload> {
        Some(match name {
            "pipeline" => Workload::constant(name, Family::Mt19937, 512, 20, "0.01"),
            "s128" => Workload::constant(name, Family::Lcg32, 512, 20, "0.01"),
            "xs32-exact" => Workload::constant(name, Family::Xorshift32, 16, 0, "1"),
            "mt-exact" => Workload::constant(name, Family::Mt19937, 8, 0, "1"),
            "java-exact" => Workload::constant(name, Family::JavaLcg, 16, 0, "1"),
            _ => return None,
        })
    }

    /// The s128 shape (k = 512, skips 0..=20, threshold 0.01) on any family with its default
    /// parameters: what a consumer measures at start to seed the chunk planner's throughput
    /// estimate of a family it has never run.
    pub fn calibration(family: Family) -> Workload {
        Workload::constant(
            &format!("calibrate-{}", family.name()),
            family,
            512,
            20,
            "0.01",
        )
    }

    /// The variable-skip presets, for custom workloads.
    pub fn variable_skip() -> SkipMode {
        SkipMode::Variable {
            strategies: Strategy::presets(),
        }
    }

    /// The skip the draws are planted at: the middle of the skip range.
    pub fn planted_skip(&self) -> u32 {
        self.skip_min + (self.skip_max - self.skip_min) / 2
    }

    /// The job with draws generated from `planted` at [`Workload::planted_skip`] (in the forward
    /// order, so the forward pass finds it; a reverse-only workload plants the reversed stream).
    pub fn spec(&self, planted: u64) -> Result<SieveSpec, SieveError> {
        let mut spec = SieveSpec {
            family: self.family,
            draws: Vec::new(),
            modulus: self.modulus,
            offset: self.offset,
            offset_max: self.offset_max,
            skip_min: self.skip_min,
            skip_max: self.skip_max,
            threshold: self.threshold,
            reverse_threshold: self.reverse_threshold,
            direction: self.direction,
            skip_mode: self.skip_mode.clone(),
        };
        if (planted as u128) >= self.family.family().seed_space_end() {
            return Err(SieveError::SeedOutOfRange {
                family: self.family.family().name().to_string(),
                start: planted as u128,
                end: planted as u128 + 1,
                space_end: self.family.family().seed_space_end(),
            });
        }
        spec.family.validate()?;
        let t = self.planted_skip() as u64;
        let mut g = self.family.generator(planted);
        g.advance(self.offset + t);
        for i in 0..self.k {
            spec.draws.push(g.next_output());
            if i + 1 < self.k {
                g.advance(t);
            }
        }
        if self.direction == Direction::Reverse {
            spec.draws.reverse();
        }
        spec.validate()?;
        Ok(spec)
    }

    /// Nominal evaluations for `seeds` seeds (see the module doc).
    pub fn nominal_evaluations(&self, seeds: u64) -> f64 {
        let offsets = self
            .offset_max
            .map_or(1, |m| m.saturating_sub(self.offset) + 1);
        seeds as f64 * (self.skip_max - self.skip_min + 1) as f64 * self.k as f64 * offsets as f64
    }
}

/// The default planted seed of a range: two thirds in, so neither end is special.
pub fn default_planted(start: u64, seeds: u64) -> u64 {
    start + seeds / 3 * 2
}

/// One measured run.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Workload name.
    pub workload: String,
    /// The backend's own description (`SieveBackend::describe`).
    pub backend: String,
    /// CPU threads used (0 for a GPU).
    pub threads: usize,
    /// Family name.
    pub family: String,
    /// Draws in the window.
    pub k: usize,
    /// Smallest skip.
    pub skip_min: u32,
    /// Largest skip.
    pub skip_max: u32,
    /// Threshold as written.
    pub threshold: String,
    /// First seed of the measured range.
    pub seed_start: u64,
    /// Seeds measured.
    pub seeds: u64,
    /// Survivors found.
    pub survivors: usize,
    /// Wall time of the sieve call, seconds.
    pub secs: f64,
    /// `seeds / secs`.
    pub seeds_per_sec: f64,
    /// Nominal (seed x skip x draw) evaluations per second: `seeds * skips * k / secs`.
    pub evals_per_sec: f64,
    /// The seed whose window the draws were generated from.
    pub planted_seed: u64,
    /// The skip the draws were generated with.
    pub planted_skip: u32,
    /// Whether the planted seed is among the backend's survivors.
    pub found: bool,
    /// Whether the reference says it must be (always, except in a bidirectional workload whose
    /// reverse pass the forward-planted draws do not pass).
    pub expected: bool,
}

impl BenchReport {
    /// The run is correct as far as the planted seed can tell.
    pub fn planted_ok(&self) -> bool {
        self.found == self.expected
    }
}

/// Runs `workload` on `backend` over `seed_start..seed_start+seeds` with the draws planted from
/// `planted`, and measures the wall-clock time of the sieve call alone.
pub fn run(
    backend: &dyn SieveBackend,
    threads: usize,
    workload: &Workload,
    seed_start: u64,
    seeds: u64,
    planted: u64,
) -> Result<BenchReport, SieveError> {
    let spec = workload.spec(planted)?;
    let end = seed_start
        .checked_add(seeds)
        .ok_or(SieveError::SeedOutOfRange {
            family: workload.family.family().name().to_string(),
            start: seed_start as u128,
            end: seed_start as u128 + seeds as u128,
            space_end: workload.family.family().seed_space_end(),
        })?;
    let set = SeedSet::Range {
        start: seed_start,
        end,
    };
    spec.validate_seeds(&set)?;
    let began = Instant::now();
    let outcome = backend.sieve(&spec, &set)?;
    let secs = began.elapsed().as_secs_f64().max(1e-9);
    Ok(BenchReport {
        workload: workload.name.clone(),
        backend: backend.describe(),
        threads,
        family: workload.family.family().name().to_string(),
        k: workload.k,
        skip_min: workload.skip_min,
        skip_max: workload.skip_max,
        threshold: workload.threshold.to_string(),
        seed_start,
        seeds,
        survivors: outcome.survivors.len(),
        secs,
        seeds_per_sec: seeds as f64 / secs,
        evals_per_sec: workload.nominal_evaluations(seeds) / secs,
        planted_seed: planted,
        planted_skip: workload.planted_skip(),
        found: outcome.survivors.iter().any(|s| s.seed == planted),
        expected: crate::reference::evaluate_seed(&spec, planted).is_some(),
    })
}

/// One family of `bench --workload matrix`: the pipeline's shape on the fast backend and on the
/// reference, measured one after the other in the same process.
#[derive(Debug, Clone, Serialize)]
pub struct MatrixRow {
    /// Family name.
    pub family: String,
    /// The fast backend's description (SIMD level and threads, for the CPU).
    pub backend: String,
    /// Seeds the fast backend sieved, and its rate.
    pub seeds: u64,
    /// Fast backend seeds per second.
    pub seeds_per_sec: f64,
    /// Seeds the reference sieved.
    pub reference_seeds: u64,
    /// Reference seeds per second (single-threaded).
    pub reference_seeds_per_sec: f64,
    /// `seeds_per_sec / reference_seeds_per_sec`.
    pub ratio: f64,
    /// Both found the planted seed.
    pub planted_ok: bool,
}

/// Measures `backend` and the reference on [`Workload::calibration`]'s shape (the pipeline's:
/// k = 512, skips 0..=20, threshold 0.01) for each family. Each measurement is sized from a short
/// probe to last about `secs` seconds (the reference about half that).
pub fn matrix(
    backend: &dyn SieveBackend,
    threads: usize,
    families: &[Family],
    secs: f64,
) -> Result<Vec<MatrixRow>, SieveError> {
    let sized = |b: &dyn SieveBackend, threads: usize, w: &Workload, probe: u64, secs: f64| {
        let start = 1_000_000u64;
        let first = run(b, threads, w, start, probe, default_planted(start, probe))?;
        let n = ((probe as f64 * secs / first.secs) as u64).clamp(probe, 1 << 30);
        run(b, threads, w, start, n, default_planted(start, n))
    };
    let mut rows = Vec::new();
    for &family in families {
        let w = Workload::calibration(family);
        let fast = sized(backend, threads, &w, 2048, secs)?;
        let slow = sized(&crate::reference::ReferenceBackend, 1, &w, 128, secs / 2.0)?;
        rows.push(MatrixRow {
            family: family.name().to_string(),
            backend: fast.backend.clone(),
            seeds: fast.seeds,
            seeds_per_sec: fast.seeds_per_sec,
            reference_seeds: slow.seeds,
            reference_seeds_per_sec: slow.seeds_per_sec,
            ratio: fast.seeds_per_sec / slow.seeds_per_sec,
            planted_ok: fast.planted_ok() && slow.planted_ok(),
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::CpuBackend;
    use crate::reference::ReferenceBackend;

    #[test]
    fn every_named_workload_finds_its_planted_seed_on_both_backends() {
        for name in NAMES {
            let w = Workload::named(name).unwrap();
            let seeds = if matches!(name, "s128" | "pipeline") {
                300
            } else {
                20_000
            };
            let planted = default_planted(1_000_000, seeds);
            let cpu = run(&CpuBackend::new(2), 2, &w, 1_000_000, seeds, planted).unwrap();
            let reference = run(&ReferenceBackend, 1, &w, 1_000_000, seeds, planted).unwrap();
            assert!(cpu.found && reference.found && cpu.expected, "{name}");
            assert_eq!(cpu.survivors, reference.survivors, "{name}");
        }
        assert!(Workload::named("nope").is_none());
    }

    #[test]
    fn the_matrix_measures_each_family_against_the_reference() {
        let rows = matrix(
            &CpuBackend::new(1),
            1,
            &[Family::Xorshift32, Family::Mt19937],
            0.01,
        )
        .unwrap();
        assert_eq!(rows.len(), 2);
        for r in &rows {
            assert!(
                r.planted_ok && r.seeds >= 2048 && r.reference_seeds >= 128,
                "{r:?}"
            );
            assert!(r.ratio > 0.0 && r.ratio.is_finite(), "{r:?}");
        }
    }

    #[test]
    fn planted_seed_outside_the_seed_space_is_an_error() {
        let w = Workload::named("xs32-exact").unwrap();
        assert!(matches!(
            w.spec(1 << 32),
            Err(SieveError::SeedOutOfRange { .. })
        ));
        assert!(run(
            &CpuBackend::new(1),
            1,
            &w,
            u32::MAX as u64 - 5,
            10,
            u32::MAX as u64 - 1
        )
        .is_err());
    }
}
