//! The `correlation` and `analysis` job types: the spec, its validation and the result types
//! (the statistics run in `seedq_kernels::analysis`). What each test computes:
//!
//! The original system's versions were unusable (`docs/defects.md`, C10): the correlation job
//! built an O(N^2) matrix over all seeds, and the statistical job looked at the first four seeds
//! of a chunk and at interleaved streams that no seed generates. Here both are defined per seed,
//! on exactly the stream the sieve sees, and run on every seed of a chunk.
//!
//! # The stream
//!
//! For each seed `s`: the generator of the job's family (with its parameters) seeded with `s`,
//! `offset` outputs discarded, then `samples` outputs `x_0 .. x_{n-1}`, each reduced
//! `mod modulus` ([`crate::family::Generator::next_output`], the same outputs the sieve compares).
//!
//! # The tests (for every seed)
//!
//! * **Lag autocorrelation** at lags `k = 1..=L` (`max_lag`), the standard sample ACF:
//!   `r_k = sum_{i<n-k} (x_i - m)(x_{i+k} - m) / sum_i (x_i - m)^2` with `m` the sample mean,
//!   O(n*L) per seed. Under independence `r_k` is about normal with variance
//!   `(n-k) / (n(n+2))` (the variance Ljung-Box uses), so `z_k = r_k / sqrt((n-k)/(n(n+2)))`.
//!   The test's p-value is Bonferroni over the lags: `min(1, L * min_k p_k)` with
//!   `p_k = erfc(|z_k| / sqrt 2)`; a single strong lag (the classic LCG defect) is what it is
//!   built to catch. The Ljung-Box statistic `Q = sum_k z_k^2` and its chi-square(L) p-value are
//!   reported alongside.
//! * **Chi-square uniformity** (`analysis` only) over `bins` classes of `[0, modulus)` (at most
//!   [`AnalysisSpec::MAX_BINS`]): value `v`
//!   is in class `floor(v * bins / modulus)`; a class's expected count is `n * width / modulus`
//!   (exact even when `bins` does not divide `modulus`); `bins - 1` degrees of freedom.
//! * **Wald-Wolfowitz runs test** (`analysis` only) about the sample median: values above and
//!   below it form the two symbols (values equal to it are dropped), `R` runs, and
//!   `z = (R - mu) / sigma` with `mu = 2 n1 n2 / N + 1`,
//!   `sigma^2 = 2 n1 n2 (2 n1 n2 - N) / (N^2 (N - 1))`; two-sided `p = erfc(|z| / sqrt 2)`.
//!
//! p-values come from the regularised upper incomplete gamma function
//! (`seedq_kernels::analysis::gamma_q`: series and continued fraction), tested there against
//! values computed with mpmath.
//!
//! # Flagged seeds
//!
//! `alpha` is the per-seed false-flag rate for a good generator. `correlation` flags a seed when
//! its autocorrelation p-value is below `alpha`; `analysis` when any of its three tests has a
//! p-value below `alpha / 3` (Bonferroni over the tests), and lists which tests did. A stream
//! with a single value (e.g. xorshift32 seeded with 0) has no variance: every test is degenerate
//! and reported with p = 0, so such a seed is always flagged.
//!
//! # Results and aggregation
//!
//! `seedq_kernels::analysis::run` returns, like the sieve, the flagged seeds sorted by seed (one
//! [`FlaggedRecord`] each) and a [`Summary`] of integer counters only (seeds tested, flagged, flagged per test,
//! p-value deciles per test, degenerate streams). Counters add, so a job's summary is the exact
//! sum of its chunks' summaries whatever the chunking and order ([`Summary::merge`]), and a
//! redelivered chunk is applied once by the same done-set guard as sieve chunks.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::family::FamilyConfig;

/// Which job type: the autocorrelation test alone, or all three tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnalysisKind {
    /// `correlation` jobs: lag autocorrelation only; flags at p < `alpha`.
    Correlation,
    /// `analysis` jobs: chi-square, runs and autocorrelation; flags at p < `alpha / 3`.
    Analysis,
}

/// Name of the lag-autocorrelation test in [`FlaggedRecord::tests`] and [`Summary`] maps.
pub const TEST_AUTOCORRELATION: &str = "autocorrelation";
/// Name of the chi-square uniformity test in [`FlaggedRecord::tests`] and [`Summary`] maps.
pub const TEST_CHI_SQUARE: &str = "chi_square";
/// Name of the Wald-Wolfowitz runs test in [`FlaggedRecord::tests`] and [`Summary`] maps.
pub const TEST_RUNS: &str = "runs";

impl AnalysisKind {
    /// The names of the tests this kind runs, in the order p-values and a record's `tests` list them.
    pub fn tests(self) -> &'static [&'static str] {
        match self {
            AnalysisKind::Correlation => &[TEST_AUTOCORRELATION],
            AnalysisKind::Analysis => &[TEST_CHI_SQUARE, TEST_RUNS, TEST_AUTOCORRELATION],
        }
    }
}

/// The job-level spec of a `correlation` or `analysis` job (the JSON the protocol transports).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalysisSpec {
    /// The family and its parameters: `{"family": "mt19937", "params": {...}}`.
    pub family: FamilyConfig,
    /// Each output is reduced mod this before any test (>= 2; default 1000).
    #[serde(default = "default_modulus")]
    pub modulus: u64,
    /// Outputs discarded before `x_0`.
    #[serde(default)]
    pub offset: u64,
    /// `n`: outputs analysed per seed.
    #[serde(default = "default_samples")]
    pub samples: usize,
    /// `L`: the largest lag.
    #[serde(default = "default_max_lag")]
    pub max_lag: usize,
    /// Chi-square classes (`analysis`); default `min(modulus, 100)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bins: Option<u64>,
    /// Per-seed false-flag rate.
    #[serde(default = "default_alpha")]
    pub alpha: f64,
}

fn default_modulus() -> u64 {
    1000
}
fn default_samples() -> usize {
    10_000
}
fn default_max_lag() -> usize {
    20
}
fn default_alpha() -> f64 {
    1e-3
}

/// A spec that cannot be run; messages say what to change.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AnalysisError {
    /// A modulus below 2 (the value given).
    #[error("modulus must be at least 2, got {0}")]
    Modulus(u64),
    /// `samples` outside `16..=MAX_SAMPLES` (the value given).
    #[error("samples must be between 16 and {max}, got {0}", max = AnalysisSpec::MAX_SAMPLES)]
    Samples(usize),
    /// `max_lag` of 0 or above `samples / 4`.
    #[error("max_lag must be between 1 and samples/4 = {limit}, got {got}")]
    MaxLag {
        /// The `max_lag` given.
        got: usize,
        /// `samples / 4`, the largest lag allowed.
        limit: usize,
    },
    /// Chi-square classes outside `2..=modulus` (`analysis` only).
    #[error("bins must be between 2 and the modulus {modulus}, got {bins}")]
    Bins {
        /// The class count ([`AnalysisSpec::bins`]).
        bins: u64,
        /// The spec's modulus.
        modulus: u64,
    },
    /// More chi-square classes than [`AnalysisSpec::MAX_BINS`] (`analysis` only): each seed's
    /// test counts and sums over every class.
    #[error("bins {bins} is over the limit of {max} (2^20) chi-square classes; each seed's test walks every class: use --bins of at most {max} (the default is min(modulus, 100))", max = AnalysisSpec::MAX_BINS)]
    TooManyBins {
        /// The class count ([`AnalysisSpec::bins`]).
        bins: u64,
    },
    /// The narrowest chi-square class expects fewer than 5 values, so the chi-square
    /// approximation would not hold (`analysis` only).
    #[error("chi-square needs at least 5 expected values per class: {samples} samples over {bins} classes of [0, {modulus}) give {expected:.2} in the smallest; use more samples or fewer bins")]
    SparseBins {
        /// The spec's `samples`.
        samples: usize,
        /// The class count.
        bins: u64,
        /// The spec's modulus.
        modulus: u64,
        /// Expected count of the narrowest class: `samples * floor(modulus / bins) / modulus`.
        expected: f64,
    },
    /// `alpha` outside (0, 0.5] (the value given; NaN included).
    #[error("alpha must be in (0, 0.5], got {0}")]
    Alpha(f64),
    /// The family or its parameters are invalid.
    #[error(transparent)]
    Family(#[from] crate::spec::SieveError),
}

impl AnalysisSpec {
    /// Largest `samples` accepted: 2^24 outputs, i.e. a 128 MiB `u64` stream buffer per seed.
    pub const MAX_SAMPLES: usize = 1 << 24;

    /// Largest chi-square class count: the test keeps a counter per class and sums over all of
    /// them for every seed. (At least 5 expected values per class already bounds it below
    /// `MAX_SAMPLES / 5`; this cap says so up front, whatever the modulus.)
    pub const MAX_BINS: u64 = 1 << 20;

    /// A spec for `family` with every other field at its serde default (modulus 1000, 10 000
    /// samples, lags up to 20, `alpha` 0.001, bins `min(modulus, 100)`).
    pub fn new(family: FamilyConfig) -> Self {
        AnalysisSpec {
            family,
            modulus: default_modulus(),
            offset: 0,
            samples: default_samples(),
            max_lag: default_max_lag(),
            bins: None,
            alpha: default_alpha(),
        }
    }

    /// The chi-square class count: `bins` if set, else `min(modulus, 100)`.
    pub fn bins(&self) -> u64 {
        self.bins.unwrap_or(self.modulus.min(100))
    }

    /// Checks the spec for `kind` (bins and their expected counts only matter for `analysis`).
    pub fn validate(&self, kind: AnalysisKind) -> Result<(), AnalysisError> {
        self.family.validate()?;
        if self.modulus < 2 {
            return Err(AnalysisError::Modulus(self.modulus));
        }
        if !(16..=Self::MAX_SAMPLES).contains(&self.samples) {
            return Err(AnalysisError::Samples(self.samples));
        }
        let limit = self.samples / 4;
        if self.max_lag == 0 || self.max_lag > limit {
            return Err(AnalysisError::MaxLag {
                got: self.max_lag,
                limit,
            });
        }
        if !(self.alpha > 0.0 && self.alpha <= 0.5) {
            return Err(AnalysisError::Alpha(self.alpha));
        }
        if kind == AnalysisKind::Analysis {
            let bins = self.bins();
            if bins < 2 || bins > self.modulus {
                return Err(AnalysisError::Bins {
                    bins,
                    modulus: self.modulus,
                });
            }
            if bins > Self::MAX_BINS {
                return Err(AnalysisError::TooManyBins { bins });
            }
            // Classes hold floor(m/bins) or ceil(m/bins) values (they sum to m), so the
            // narrowest is floor(m/bins): O(1), whatever the sizes.
            let narrowest = self.modulus / bins;
            let expected = self.samples as f64 * narrowest as f64 / self.modulus as f64;
            if expected < 5.0 {
                return Err(AnalysisError::SparseBins {
                    samples: self.samples,
                    bins,
                    modulus: self.modulus,
                    expected,
                });
            }
        }
        Ok(())
    }

    /// Work units per seed for throughput accounting: samples times (lags + 1).
    pub fn units_per_seed(&self) -> u64 {
        self.samples as u64 * (self.max_lag as u64 + 1)
    }

    /// Fills `out` with the seed's stream `x_0..x_{n-1}` (reduced mod `modulus`).
    pub fn stream(&self, seed: u64, out: &mut Vec<u64>) {
        out.clear();
        let mut generator = self.family.generator(seed);
        generator.advance(self.offset);
        out.extend((0..self.samples).map(|_| generator.next_output() % self.modulus));
    }
}

/// Number of values `v` in `[0, modulus)` with `floor(v * bins / modulus) == b`.
pub fn bin_width(b: u64, bins: u64, modulus: u64) -> u64 {
    let lower = |b: u64| ((b as u128 * modulus as u128).div_ceil(bins as u128)) as u64;
    lower(b + 1) - lower(b)
}

/// The statistics of one seed (every seed gets one; only flagged ones are kept).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlaggedRecord {
    /// The seed whose stream was tested.
    pub seed: u64,
    /// The tests whose p-value was beyond the threshold.
    pub tests: Vec<String>,
    /// `r_1 .. r_L`.
    pub autocorrelations: Vec<f64>,
    /// `z_1 .. z_L`.
    pub z_scores: Vec<f64>,
    /// Bonferroni over lags.
    pub autocorrelation_p: f64,
    /// Ljung-Box `Q = sum_k z_k^2` (reported alongside; not used for flagging).
    pub ljung_box_q: f64,
    /// Chi-square(L) upper-tail p-value of `ljung_box_q`.
    pub ljung_box_p: f64,
    /// Chi-square statistic over [`AnalysisSpec::bins`] classes (`analysis` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chi_square: Option<f64>,
    /// p-value of `chi_square` with `bins - 1` degrees of freedom (`analysis` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chi_square_p: Option<f64>,
    /// Runs-test `z = (R - mu) / sigma` about the median (`analysis` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runs_z: Option<f64>,
    /// Two-sided p-value of `runs_z` (`analysis` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runs_p: Option<f64>,
    /// The stream takes a single value; every test is degenerate.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub constant: bool,
}

/// Integer counters of a chunk (or a whole job, after [`Summary::merge`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Summary {
    /// Seeds whose streams were tested.
    pub seeds_tested: u64,
    /// Seeds flagged by at least one test (each seed counts once).
    pub seeds_flagged: u64,
    /// Seeds flagged by each test.
    pub flagged_by_test: BTreeMap<String, u64>,
    /// Per test, how many seeds had a p-value in `[0, 0.1), [0.1, 0.2), ... [0.9, 1]`: about
    /// uniform for a good generator.
    pub p_deciles: BTreeMap<String, [u64; 10]>,
    /// Streams with a single value.
    pub constant_streams: u64,
}

impl Summary {
    /// Adds another chunk's counters (commutative and associative: exact in any order).
    pub fn merge(&mut self, other: &Summary) {
        self.seeds_tested += other.seeds_tested;
        self.seeds_flagged += other.seeds_flagged;
        self.constant_streams += other.constant_streams;
        for (test, n) in &other.flagged_by_test {
            *self.flagged_by_test.entry(test.clone()).or_default() += n;
        }
        for (test, deciles) in &other.p_deciles {
            let mine = self.p_deciles.entry(test.clone()).or_default();
            for (a, b) in mine.iter_mut().zip(deciles) {
                *a += b;
            }
        }
    }

    /// Counts one p-value of `test` in its decile.
    pub fn record_p(&mut self, test: &str, p: f64) {
        let decile = ((p * 10.0).floor() as i64).clamp(0, 9) as usize;
        self.p_deciles.entry(test.to_string()).or_default()[decile] += 1;
    }
}

/// What a chunk produces: flagged seeds sorted by seed, plus the chunk summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct AnalysisOutcome {
    /// The flagged seeds' records, sorted by seed.
    pub flagged: Vec<FlaggedRecord>,
    /// Counters over every seed of the chunk, flagged or not.
    pub summary: Summary,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::family::Family;

    #[test]
    fn huge_bin_counts_are_refused_by_their_size_alone() {
        let mut spec = AnalysisSpec::new(FamilyConfig::new(Family::Mt19937));
        spec.modulus = 1 << 63;
        spec.bins = Some(1 << 62);
        let err = spec.validate(AnalysisKind::Analysis).unwrap_err();
        assert_eq!(err, AnalysisError::TooManyBins { bins: 1 << 62 });
        let text = err.to_string();
        assert!(
            text.contains("1048576") && text.contains("--bins"),
            "{text}"
        );
        // Enough samples for the classes do not lift the cap.
        spec.samples = AnalysisSpec::MAX_SAMPLES;
        spec.bins = Some(AnalysisSpec::MAX_BINS + 1);
        assert!(matches!(
            spec.validate(AnalysisKind::Analysis),
            Err(AnalysisError::TooManyBins { .. })
        ));
        // At the cap, with 16 expected values per class.
        spec.modulus = AnalysisSpec::MAX_BINS;
        spec.bins = Some(AnalysisSpec::MAX_BINS);
        assert_eq!(spec.validate(AnalysisKind::Analysis), Ok(()));
        // The correlation test has no classes.
        spec.bins = Some(1 << 62);
        spec.modulus = 1 << 63;
        assert_eq!(spec.validate(AnalysisKind::Correlation), Ok(()));
    }
}
