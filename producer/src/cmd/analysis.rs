//! `seedq-producer correlation` and `seedq-producer analysis`: enqueue the statistical seed jobs.
//!
//! Both run, for every seed of a range or candidate list, the tests defined in
//! `seedq_core::analysis` (`docs/semantics.md` section 7) on that seed's output stream
//! (`--samples` outputs after `--offset`, reduced mod `--modulus`): `correlation` the lag
//! autocorrelation test up to `--max-lag`, `analysis` that plus chi-square uniformity over
//! `--bins` classes and the runs test. A seed is flagged when a test's p-value is below
//! `--alpha` (split over the tests for `analysis`).
//!
//! The two commands share one argument struct ([`AnalysisArgs`]). Everything is validated here
//! before any service is contacted (the spec with `AnalysisSpec::validate` for the kind, the seed
//! range or `--seeds-file` inside the family's seed space, the chunking flags; `--bins` is
//! refused for `correlation`, which has no chi-square test), then the job goes through the same
//! create / publish-with-confirms / wait path as a sieve ([`crate::enqueue::enqueue_seed_job`]),
//! sized by `AnalysisSpec::units_per_seed`. The default job id is
//! `correlation-<family>-<hash>` / `analysis-<family>-<hash>` of the spec and seeds, so
//! re-running the same command resumes the same job.

use clap::Args;
use seedq_core::analysis::{AnalysisError, AnalysisKind, AnalysisSpec};
use seedq_core::FamilyConfig;
use seedq_protocol::{JobSeeds, JobSpec};

use crate::context::Env;
use crate::enqueue::{self, SeedJobRequest};
use crate::sieve_args::{self, SeedJobFlags, SieveArgsError};

/// Flags of `correlation` and `analysis` (the same struct; `--bins` is for `analysis` only).
#[derive(Debug, Clone, Args)]
pub struct AnalysisArgs {
    /// PRNG family: xorshift32, xorshift64, xorshift128, pcg32, lcg32, java_lcg, minstd, mt19937,
    /// xoshiro256pp, philox4x32, sfc64.
    #[arg(long)]
    pub prng: String,
    /// Family parameter NAME=VALUE (decimal or 0x hex); repeatable.
    #[arg(long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,
    /// Outputs are reduced mod this before testing [default: 1000].
    #[arg(long)]
    pub modulus: Option<u64>,
    /// Generator outputs discarded before the first tested one [default: 0].
    #[arg(long)]
    pub offset: Option<u64>,
    /// Outputs tested per seed, 16 to 2^24 [default: 10000].
    #[arg(long)]
    pub samples: Option<usize>,
    /// Largest autocorrelation lag, 1 to samples/4 [default: 20].
    #[arg(long)]
    pub max_lag: Option<usize>,
    /// Chi-square classes of [0, modulus), `analysis` only [default: min(modulus, 100)].
    #[arg(long)]
    pub bins: Option<u64>,
    /// Per-seed false-flag rate of a good generator, in (0, 0.5] [default: 0.001].
    #[arg(long, allow_hyphen_values = true)]
    pub alpha: Option<f64>,
    #[command(flatten)]
    pub job: SeedJobFlags,
}

/// A correlation / analysis request after validation: ready to plan and publish.
#[derive(Debug, Clone)]
pub struct ValidatedAnalysis {
    pub kind: AnalysisKind,
    pub spec: AnalysisSpec,
    pub seeds: JobSeeds,
}

/// Why `correlation` / `analysis` refuses. Every message names the flag to change.
#[derive(Debug, thiserror::Error)]
pub enum AnalysisArgsError {
    /// Parameters, seeds and chunking: the same checks and messages as `sieve`.
    #[error(transparent)]
    Args(#[from] SieveArgsError),
    #[error("--bins applies to `analysis` only (its chi-square test); `correlation` runs the autocorrelation test alone: drop --bins or use `seedq-producer analysis`")]
    BinsWithCorrelation,
    #[error("{flag}: {source}")]
    Spec {
        flag: &'static str,
        source: AnalysisError,
    },
}

impl From<AnalysisError> for AnalysisArgsError {
    fn from(source: AnalysisError) -> Self {
        let flag = match &source {
            AnalysisError::Modulus(_) => "--modulus",
            AnalysisError::Samples(_) => "--samples",
            AnalysisError::MaxLag { .. } => "--max-lag",
            AnalysisError::Bins { .. } | AnalysisError::TooManyBins { .. } => "--bins",
            AnalysisError::SparseBins { .. } => "--bins / --samples",
            AnalysisError::Alpha(_) => "--alpha",
            AnalysisError::Family(_) => "--prng / --param",
        };
        AnalysisArgsError::Spec { flag, source }
    }
}

impl AnalysisArgs {
    /// Builds and validates the spec and the seeds for `kind`. Reads the seeds file; contacts no
    /// service.
    pub fn validate(&self, kind: AnalysisKind) -> Result<ValidatedAnalysis, AnalysisArgsError> {
        let overrides = sieve_args::parse_params(&self.params)?;
        let family = FamilyConfig::parse(&self.prng, &overrides).map_err(SieveArgsError::from)?;
        if kind == AnalysisKind::Correlation && self.bins.is_some() {
            return Err(AnalysisArgsError::BinsWithCorrelation);
        }
        self.job.check_chunking()?;

        // Unset flags keep the kernel's defaults (one definition of them, in AnalysisSpec::new).
        let mut spec = AnalysisSpec::new(family);
        if let Some(m) = self.modulus {
            spec.modulus = m;
        }
        if let Some(o) = self.offset {
            spec.offset = o;
        }
        if let Some(n) = self.samples {
            spec.samples = n;
        }
        if let Some(l) = self.max_lag {
            spec.max_lag = l;
        }
        spec.bins = self.bins;
        if let Some(a) = self.alpha {
            spec.alpha = a;
        }
        spec.validate(kind)?;

        let seeds = self.job.seeds(spec.family.family())?;
        Ok(ValidatedAnalysis { kind, spec, seeds })
    }
}

/// The job kind's name: `correlation` or `analysis` (command, id prefix, `JobSpec` variant).
pub fn kind_name(kind: AnalysisKind) -> &'static str {
    match kind {
        AnalysisKind::Correlation => "correlation",
        AnalysisKind::Analysis => "analysis",
    }
}

/// The protocol's job spec: the kernel's spec as JSON under the kind's variant.
pub fn job_spec(kind: AnalysisKind, spec: &AnalysisSpec) -> JobSpec {
    let value = serde_json::to_value(spec).expect("analysis spec serializes");
    match kind {
        AnalysisKind::Correlation => JobSpec::Correlation(value),
        AnalysisKind::Analysis => JobSpec::Analysis(value),
    }
}

/// `correlation-<family>-<16 hex>` / `analysis-<family>-<16 hex>` from the spec and seeds.
pub fn derived_job_id(kind: AnalysisKind, spec: &AnalysisSpec, seeds: &JobSeeds) -> String {
    enqueue::derived_id(kind_name(kind), spec.family.family().name(), spec, seeds)
}

pub async fn run(env: &Env, kind: AnalysisKind, args: AnalysisArgs) -> anyhow::Result<i32> {
    let validated = args.validate(kind)?;
    let derived = derived_job_id(validated.kind, &validated.spec, &validated.seeds);
    // The consumer's throughput samples use the same units (consumer `Prepared::work_per_seed`).
    let work_per_seed = validated.spec.units_per_seed() as f64;
    let request = SeedJobRequest::new(
        &args.job,
        job_spec(validated.kind, &validated.spec),
        validated.seeds,
        work_per_seed,
        derived,
    );
    enqueue::enqueue_seed_job(env, request).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use seedq_core::Family;
    use std::path::PathBuf;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: AnalysisArgs,
    }

    fn args(argv: &[&str]) -> AnalysisArgs {
        let mut all = vec!["x"];
        all.extend_from_slice(argv);
        Wrapper::try_parse_from(all).expect("clap parses").args
    }

    fn parse(kind: AnalysisKind, argv: &[&str]) -> Result<ValidatedAnalysis, AnalysisArgsError> {
        args(argv).validate(kind)
    }

    /// A seeds file removed on drop.
    struct SeedsFile(PathBuf);
    impl SeedsFile {
        fn new(content: &str) -> SeedsFile {
            static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let path = std::env::temp_dir().join(format!(
                "seedq-analysis-args-{}-{n}.txt",
                std::process::id()
            ));
            std::fs::write(&path, content).unwrap();
            SeedsFile(path)
        }
        fn arg(&self) -> &str {
            self.0.to_str().unwrap()
        }
    }
    impl Drop for SeedsFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn defaults_are_the_kernels_and_the_family_seed_space() {
        let v = parse(AnalysisKind::Analysis, &["--prng", "mt19937"]).unwrap();
        assert_eq!(
            v.spec,
            AnalysisSpec::new(FamilyConfig::new(Family::Mt19937))
        );
        assert_eq!(v.spec.modulus, 1000);
        assert_eq!(
            v.seeds,
            JobSeeds::Range {
                start: 0,
                end: 1 << 32
            }
        );
        let v = parse(AnalysisKind::Correlation, &["--prng", "sfc64"]).unwrap();
        assert_eq!(
            v.seeds,
            JobSeeds::Range {
                start: 0,
                end: 1 << 64
            }
        );
        assert_eq!(v.kind, AnalysisKind::Correlation);
    }

    #[test]
    fn every_flag_reaches_the_spec() {
        let v = parse(
            AnalysisKind::Analysis,
            &[
                "--prng",
                "lcg32",
                "--param",
                "m=0",
                "--param",
                "a = 0x41c64e6d",
                "--modulus",
                "16",
                "--offset",
                "7",
                "--samples",
                "512",
                "--max-lag",
                "8",
                "--bins",
                "16",
                "--alpha",
                "0.01",
                "--seed-start",
                "2^10",
                "--seed-end",
                "0x800",
                "--chunk-size",
                "100",
            ],
        )
        .unwrap();
        assert_eq!(
            v.spec.family,
            FamilyConfig::parse("lcg32", &[("m", "0"), ("a", "1103515245")]).unwrap()
        );
        assert_eq!(
            (
                v.spec.modulus,
                v.spec.offset,
                v.spec.samples,
                v.spec.max_lag
            ),
            (16, 7, 512, 8)
        );
        assert_eq!((v.spec.bins, v.spec.alpha), (Some(16), 0.01));
        assert_eq!(
            v.seeds,
            JobSeeds::Range {
                start: 1024,
                end: 2048
            }
        );
        assert_eq!(v.spec.units_per_seed(), 512 * 9);
    }

    #[test]
    fn seeds_files_are_read_sorted_and_checked_against_the_seed_space() {
        let f = SeedsFile::new("[9, 0, 3, 9]");
        let v = parse(
            AnalysisKind::Correlation,
            &["--prng", "xorshift32", "--seeds-file", f.arg()],
        )
        .unwrap();
        assert_eq!(v.seeds, JobSeeds::List(vec![0, 3, 9]));
        let outside = SeedsFile::new("1 4294967296");
        let err = parse(
            AnalysisKind::Correlation,
            &["--prng", "xorshift32", "--seeds-file", outside.arg()],
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("outside the xorshift32 seed space"),
            "{err}"
        );
        let empty = SeedsFile::new("[]");
        let err = parse(
            AnalysisKind::Analysis,
            &["--prng", "mt19937", "--seeds-file", empty.arg()],
        )
        .unwrap_err();
        assert!(err.to_string().contains("holds no seeds"), "{err}");
        let err = parse(
            AnalysisKind::Analysis,
            &[
                "--prng",
                "mt19937",
                "--seeds-file",
                "/nonexistent/seeds.txt",
            ],
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("cannot read --seeds-file"),
            "{err}"
        );
        // A range and a list at once is a command-line error (clap).
        let mixed = Wrapper::try_parse_from([
            "x",
            "--prng",
            "mt19937",
            "--seeds-file",
            f.arg(),
            "--seed-start",
            "1",
        ]);
        assert!(mixed.is_err());
    }

    #[test]
    fn every_bad_input_is_refused_with_a_named_problem() {
        use AnalysisKind::{Analysis, Correlation};
        let cases: &[(AnalysisKind, &[&str], &str)] = &[
            (Analysis, &["--prng", "nope"], "unknown PRNG family 'nope'"),
            (
                Analysis,
                &["--prng", "lcg32", "--param", "zz=1"],
                "unknown parameter",
            ),
            (Analysis, &["--prng", "lcg32", "--param", "a"], "NAME=VALUE"),
            (
                Correlation,
                &["--prng", "mt19937", "--bins", "10"],
                "--bins applies to `analysis` only",
            ),
            (
                Correlation,
                &["--prng", "mt19937", "--samples", "64", "--max-lag", "17"],
                "--max-lag: max_lag must be between 1 and samples/4 = 16, got 17",
            ),
            (
                Correlation,
                &["--prng", "mt19937", "--max-lag", "0"],
                "--max-lag",
            ),
            (
                Analysis,
                &["--prng", "mt19937", "--samples", "8", "--max-lag", "1"],
                "--samples",
            ),
            (
                Analysis,
                &["--prng", "mt19937", "--samples", "16777217"],
                "--samples",
            ),
            (
                Analysis,
                &["--prng", "mt19937", "--modulus", "1"],
                "--modulus",
            ),
            (
                Analysis,
                &["--prng", "mt19937", "--modulus", "10", "--bins", "11"],
                "--bins: bins must be between 2 and the modulus 10",
            ),
            (Analysis, &["--prng", "mt19937", "--bins", "1"], "--bins"),
            (
                Analysis,
                &["--prng", "mt19937", "--samples", "1000", "--bins", "500"],
                "at least 5 expected values",
            ),
            (Analysis, &["--prng", "mt19937", "--alpha", "0"], "--alpha"),
            (
                Analysis,
                &["--prng", "mt19937", "--alpha", "0.7"],
                "--alpha",
            ),
            (
                Correlation,
                &["--prng", "mt19937", "--alpha", "-0.1"],
                "--alpha",
            ),
            (
                Correlation,
                &["--prng", "mt19937", "--alpha", "NaN"],
                "--alpha",
            ),
            (
                Analysis,
                &["--prng", "mt19937", "--seed-end", "2^33"],
                "outside the mt19937 seed space",
            ),
            (
                Analysis,
                &["--prng", "mt19937", "--seed-start", "2^32"],
                "outside the mt19937 seed space",
            ),
            (
                Analysis,
                &["--prng", "mt19937", "--seed-start", "5", "--seed-end", "5"],
                "is empty",
            ),
            (
                Analysis,
                &["--prng", "mt19937", "--seed-end", "lots"],
                "--seed-end 'lots' is not a number",
            ),
            (
                Analysis,
                &["--prng", "mt19937", "--chunk-size", "0"],
                "--chunk-size",
            ),
            (
                Correlation,
                &["--prng", "mt19937", "--target-chunk-secs", "0"],
                "--target-chunk-secs",
            ),
        ];
        for (kind, argv, expected) in cases {
            let err = parse(*kind, argv).expect_err(&format!("{kind:?} {argv:?} must be refused"));
            assert!(
                err.to_string().contains(expected),
                "{kind:?} {argv:?}: '{err}' should mention '{expected}'"
            );
        }
    }

    #[test]
    fn the_same_flags_pass_for_analysis_that_correlation_refuses() {
        // --bins is the only kind-specific flag; everything else is shared.
        assert!(parse(
            AnalysisKind::Analysis,
            &["--prng", "mt19937", "--bins", "10"]
        )
        .is_ok());
        // Sparse bins only matter where there is a chi-square test.
        assert!(parse(
            AnalysisKind::Correlation,
            &[
                "--prng",
                "mt19937",
                "--modulus",
                "100000",
                "--samples",
                "100"
            ]
        )
        .is_ok());
        assert!(parse(
            AnalysisKind::Analysis,
            &[
                "--prng",
                "mt19937",
                "--modulus",
                "100000",
                "--samples",
                "100"
            ]
        )
        .is_err());
    }

    #[test]
    fn derived_ids_are_stable_prefixed_and_spec_sensitive() {
        let spec = AnalysisSpec::new(FamilyConfig::new(Family::Xorshift32));
        let seeds = JobSeeds::Range { start: 0, end: 100 };
        let c = derived_job_id(AnalysisKind::Correlation, &spec, &seeds);
        assert_eq!(c, derived_job_id(AnalysisKind::Correlation, &spec, &seeds));
        assert!(c.starts_with("correlation-xorshift32-"), "{c}");
        let a = derived_job_id(AnalysisKind::Analysis, &spec, &seeds);
        assert!(a.starts_with("analysis-xorshift32-"), "{a}");
        assert_eq!(
            c.rsplit('-').next(),
            a.rsplit('-').next(),
            "same spec and seeds, same hash; the prefix tells the kinds apart"
        );
        let mut other = spec.clone();
        other.max_lag = 21;
        assert_ne!(c, derived_job_id(AnalysisKind::Correlation, &other, &seeds));
        assert_ne!(
            c,
            derived_job_id(
                AnalysisKind::Correlation,
                &spec,
                &JobSeeds::List(vec![1, 2])
            )
        );
        seedq_protocol::validate_identifier("job id", &c).unwrap();
    }

    #[test]
    fn the_job_spec_round_trips_to_what_the_consumer_parses() {
        let v = parse(
            AnalysisKind::Correlation,
            &["--prng", "pcg32", "--samples", "100", "--max-lag", "5"],
        )
        .unwrap();
        let spec = job_spec(v.kind, &v.spec);
        assert_eq!(spec.kind(), seedq_protocol::JobKind::Correlation);
        let JobSpec::Correlation(value) = &spec else {
            panic!("{spec:?}")
        };
        assert_eq!(
            serde_json::from_value::<AnalysisSpec>(value.clone()).unwrap(),
            v.spec
        );
        assert_eq!(
            seedq_protocol::throughput_family_key(&spec).as_deref(),
            Some("correlation:pcg32")
        );
        assert_eq!(
            job_spec(AnalysisKind::Analysis, &v.spec).kind(),
            seedq_protocol::JobKind::Analysis
        );
    }
}
