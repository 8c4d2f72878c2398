//! The `correlation` and `analysis` job types: statistical tests on each seed's output stream.
//!
//! The original's versions were unusable (reference section 4, defect C10): the correlation job
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
//! * **Chi-square uniformity** (`analysis` only) over `bins` classes of `[0, modulus)`: value `v`
//!   is in class `floor(v * bins / modulus)`; a class's expected count is `n * width / modulus`
//!   (exact even when `bins` does not divide `modulus`); `bins - 1` degrees of freedom.
//! * **Wald-Wolfowitz runs test** (`analysis` only) about the sample median: values above and
//!   below it form the two symbols (values equal to it are dropped), `R` runs, and
//!   `z = (R - mu) / sigma` with `mu = 2 n1 n2 / N + 1`,
//!   `sigma^2 = 2 n1 n2 (2 n1 n2 - N) / (N^2 (N - 1))`; two-sided `p = erfc(|z| / sqrt 2)`.
//!
//! p-values come from the regularised upper incomplete gamma function ([`gamma_q`]), implemented
//! here (series and continued fraction) and tested against values computed with mpmath.
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
//! [`run`] returns, like the sieve, the flagged seeds sorted by seed (one [`FlaggedRecord`] each)
//! and a [`Summary`] of integer counters only (seeds tested, flagged, flagged per test,
//! p-value deciles per test, degenerate streams). Counters add, so a job's summary is the exact
//! sum of its chunks' summaries whatever the chunking and order ([`Summary::merge`]), and a
//! redelivered chunk is applied once by the same done-set guard as sieve chunks.

use std::collections::BTreeMap;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::family::FamilyConfig;
use crate::spec::SeedSet;

/// Which job type: the autocorrelation test alone, or all three tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnalysisKind {
    Correlation,
    Analysis,
}

/// Test names as used in records and summaries.
pub const TEST_AUTOCORRELATION: &str = "autocorrelation";
pub const TEST_CHI_SQUARE: &str = "chi_square";
pub const TEST_RUNS: &str = "runs";

impl AnalysisKind {
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
    #[error("modulus must be at least 2, got {0}")]
    Modulus(u64),
    #[error("samples must be between 16 and {max}, got {0}", max = AnalysisSpec::MAX_SAMPLES)]
    Samples(usize),
    #[error("max_lag must be between 1 and samples/4 = {limit}, got {got}")]
    MaxLag { got: usize, limit: usize },
    #[error("bins must be between 2 and the modulus {modulus}, got {bins}")]
    Bins { bins: u64, modulus: u64 },
    #[error("chi-square needs at least 5 expected values per class: {samples} samples over {bins} classes of [0, {modulus}) give {expected:.2} in the smallest; use more samples or fewer bins")]
    SparseBins {
        samples: usize,
        bins: u64,
        modulus: u64,
        expected: f64,
    },
    #[error("alpha must be in (0, 0.5], got {0}")]
    Alpha(f64),
    #[error(transparent)]
    Family(#[from] crate::spec::SieveError),
}

impl AnalysisSpec {
    pub const MAX_SAMPLES: usize = 1 << 24;

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

    pub fn bins(&self) -> u64 {
        self.bins.unwrap_or(self.modulus.min(100))
    }

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
            let narrowest = (0..bins)
                .map(|b| bin_width(b, bins, self.modulus))
                .min()
                .unwrap_or(0);
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
fn bin_width(b: u64, bins: u64, modulus: u64) -> u64 {
    let lower = |b: u64| ((b as u128 * modulus as u128).div_ceil(bins as u128)) as u64;
    lower(b + 1) - lower(b)
}

/// The statistics of one seed (every seed gets one; only flagged ones are kept).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlaggedRecord {
    pub seed: u64,
    /// The tests whose p-value was beyond the threshold.
    pub tests: Vec<String>,
    /// `r_1 .. r_L`.
    pub autocorrelations: Vec<f64>,
    /// `z_1 .. z_L`.
    pub z_scores: Vec<f64>,
    /// Bonferroni over lags.
    pub autocorrelation_p: f64,
    pub ljung_box_q: f64,
    pub ljung_box_p: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chi_square: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chi_square_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runs_z: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runs_p: Option<f64>,
    /// The stream takes a single value; every test is degenerate.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub constant: bool,
}

/// Integer counters of a chunk (or a whole job, after [`Summary::merge`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Summary {
    pub seeds_tested: u64,
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

    fn record_p(&mut self, test: &str, p: f64) {
        let decile = ((p * 10.0).floor() as i64).clamp(0, 9) as usize;
        self.p_deciles.entry(test.to_string()).or_default()[decile] += 1;
    }
}

/// What a chunk produces: flagged seeds sorted by seed, plus the chunk summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct AnalysisOutcome {
    pub flagged: Vec<FlaggedRecord>,
    pub summary: Summary,
}

/// Every statistic of one stream, before the flagging decision.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamStats {
    pub autocorrelations: Vec<f64>,
    pub z_scores: Vec<f64>,
    pub autocorrelation_p: f64,
    pub ljung_box_q: f64,
    pub ljung_box_p: f64,
    pub chi_square: Option<f64>,
    pub chi_square_p: Option<f64>,
    pub runs_z: Option<f64>,
    pub runs_p: Option<f64>,
    pub constant: bool,
}

/// Lag autocorrelations `r_1..r_L` of `x` (O(n*L)); `None` when `x` has no variance.
pub fn autocorrelations(x: &[u64], max_lag: usize) -> Option<Vec<f64>> {
    let n = x.len();
    let sum: u128 = x.iter().map(|&v| v as u128).sum();
    let mean = sum as f64 / n as f64;
    let d: Vec<f64> = x.iter().map(|&v| v as f64 - mean).collect();
    let c0: f64 = d.iter().map(|v| v * v).sum();
    if c0 <= 0.0 || x.iter().all(|&v| v == x[0]) {
        return None;
    }
    Some(
        (1..=max_lag)
            .map(|k| {
                let ck: f64 = d[..n - k].iter().zip(&d[k..]).map(|(a, b)| a * b).sum();
                ck / c0
            })
            .collect(),
    )
}

/// Chi-square statistic of `x` against uniform over `[0, modulus)` in `bins` classes.
pub fn chi_square(x: &[u64], modulus: u64, bins: u64) -> f64 {
    let mut observed = vec![0u64; bins as usize];
    for &v in x {
        observed[((v as u128 * bins as u128) / modulus as u128) as usize] += 1;
    }
    let n = x.len() as f64;
    observed
        .iter()
        .enumerate()
        .map(|(b, &o)| {
            let expected = n * bin_width(b as u64, bins, modulus) as f64 / modulus as f64;
            let diff = o as f64 - expected;
            diff * diff / expected
        })
        .sum()
}

/// Wald-Wolfowitz runs test about the sample median: `z`, or `None` when degenerate (fewer than
/// two values on one side of the median).
pub fn runs_z(x: &[u64]) -> Option<f64> {
    let mut sorted = x.to_vec();
    let n = sorted.len();
    let mid = n / 2;
    let (_, &mut upper, _) = sorted.select_nth_unstable(mid);
    // Median as a doubled integer so "equal to the median" is exact for even n too.
    let median2: u128 = if n % 2 == 1 {
        2 * upper as u128
    } else {
        let lower = *sorted[..mid].iter().max().expect("n >= 2");
        lower as u128 + upper as u128
    };
    let mut n_above = 0u64;
    let mut n_below = 0u64;
    let mut runs = 0u64;
    let mut previous: Option<bool> = None;
    for &v in x {
        let v2 = 2 * v as u128;
        if v2 == median2 {
            continue;
        }
        let above = v2 > median2;
        if above {
            n_above += 1;
        } else {
            n_below += 1;
        }
        if previous != Some(above) {
            runs += 1;
            previous = Some(above);
        }
    }
    if n_above < 2 || n_below < 2 {
        return None;
    }
    let (n1, n2) = (n_above as f64, n_below as f64);
    let total = n1 + n2;
    let mu = 2.0 * n1 * n2 / total + 1.0;
    let var = 2.0 * n1 * n2 * (2.0 * n1 * n2 - total) / (total * total * (total - 1.0));
    if var <= 0.0 {
        return None;
    }
    Some((runs as f64 - mu) / var.sqrt())
}

/// All statistics of one stream (already reduced mod `modulus`).
pub fn stream_stats(kind: AnalysisKind, spec: &AnalysisSpec, x: &[u64]) -> StreamStats {
    let n = x.len() as f64;
    let lags = spec.max_lag;
    let (autocorrelations, z_scores, autocorrelation_p, ljung_box_q, ljung_box_p, constant) =
        match autocorrelations(x, lags) {
            Some(r) => {
                let z: Vec<f64> = r
                    .iter()
                    .enumerate()
                    .map(|(i, r)| {
                        let k = (i + 1) as f64;
                        r / ((n - k) / (n * (n + 2.0))).sqrt()
                    })
                    .collect();
                let min_p = z
                    .iter()
                    .map(|z| normal_two_sided_p(*z))
                    .fold(1.0f64, f64::min);
                let q: f64 = z.iter().map(|z| z * z).sum();
                let q_p = chi_square_p(q, lags as f64);
                (r, z, (min_p * lags as f64).min(1.0), q, q_p, false)
            }
            None => (
                vec![1.0; lags],
                vec![f64::INFINITY; lags],
                0.0,
                f64::INFINITY,
                0.0,
                true,
            ),
        };
    let (chi, chi_p, runs, runs_p) = if kind == AnalysisKind::Analysis {
        let bins = spec.bins();
        let chi = chi_square(x, spec.modulus, bins);
        let chi_p = chi_square_p(chi, (bins - 1) as f64);
        let (z, p) = match runs_z(x) {
            Some(z) => (z, normal_two_sided_p(z)),
            None => (f64::INFINITY, 0.0),
        };
        (Some(chi), Some(chi_p), Some(z), Some(p))
    } else {
        (None, None, None, None)
    };
    StreamStats {
        autocorrelations,
        z_scores,
        autocorrelation_p,
        ljung_box_q,
        ljung_box_p,
        chi_square: chi,
        chi_square_p: chi_p,
        runs_z: runs,
        runs_p,
        constant,
    }
}

impl StreamStats {
    /// `(test, p-value)` for the tests of `kind`, in [`AnalysisKind::tests`] order.
    pub fn p_values(&self, kind: AnalysisKind) -> Vec<(&'static str, f64)> {
        kind.tests()
            .iter()
            .map(|&test| {
                let p = match test {
                    TEST_CHI_SQUARE => self.chi_square_p.unwrap_or(0.0),
                    TEST_RUNS => self.runs_p.unwrap_or(0.0),
                    _ => self.autocorrelation_p,
                };
                (test, p)
            })
            .collect()
    }

    /// The tests beyond the per-test threshold `alpha / number of tests`.
    pub fn failing_tests(&self, kind: AnalysisKind, alpha: f64) -> Vec<&'static str> {
        let per_test = alpha / kind.tests().len() as f64;
        self.p_values(kind)
            .into_iter()
            .filter(|(_, p)| *p < per_test)
            .map(|(t, _)| t)
            .collect()
    }

    fn into_record(self, seed: u64, tests: Vec<&'static str>) -> FlaggedRecord {
        FlaggedRecord {
            seed,
            tests: tests.into_iter().map(str::to_string).collect(),
            autocorrelations: self.autocorrelations,
            z_scores: self.z_scores.into_iter().map(finite_or_max).collect(),
            autocorrelation_p: self.autocorrelation_p,
            ljung_box_q: finite_or_max(self.ljung_box_q),
            ljung_box_p: self.ljung_box_p,
            chi_square: self.chi_square.map(finite_or_max),
            chi_square_p: self.chi_square_p,
            runs_z: self.runs_z.map(finite_or_max),
            runs_p: self.runs_p,
            constant: self.constant,
        }
    }
}

/// JSON has no infinity; degenerate statistics are written as `f64::MAX`.
fn finite_or_max(v: f64) -> f64 {
    if v.is_finite() {
        v
    } else {
        f64::MAX.copysign(v)
    }
}

/// One seed: its statistics, counted into `summary`; `Some(record)` when flagged.
fn analyze_seed(
    kind: AnalysisKind,
    spec: &AnalysisSpec,
    seed: u64,
    buffer: &mut Vec<u64>,
    summary: &mut Summary,
) -> Option<FlaggedRecord> {
    spec.stream(seed, buffer);
    let stats = stream_stats(kind, spec, buffer);
    summary.seeds_tested += 1;
    if stats.constant {
        summary.constant_streams += 1;
    }
    for (test, p) in stats.p_values(kind) {
        summary.record_p(test, p);
    }
    let failing = stats.failing_tests(kind, spec.alpha);
    if failing.is_empty() {
        return None;
    }
    summary.seeds_flagged += 1;
    for test in &failing {
        *summary.flagged_by_test.entry(test.to_string()).or_default() += 1;
    }
    Some(stats.into_record(seed, failing))
}

/// Runs a validated spec over a seed set on the current rayon pool (call inside
/// `pool.install` to choose the threads). Flagged seeds come back sorted by seed, deduplicated.
pub fn run(kind: AnalysisKind, spec: &AnalysisSpec, seeds: &SeedSet) -> AnalysisOutcome {
    let per_seed =
        |(mut summary, mut flagged, mut buffer): (Summary, Vec<FlaggedRecord>, Vec<u64>),
         seed: u64| {
            if let Some(record) = analyze_seed(kind, spec, seed, &mut buffer, &mut summary) {
                flagged.push(record);
            }
            (summary, flagged, buffer)
        };
    let identity = || {
        (
            Summary::default(),
            Vec::new(),
            Vec::with_capacity(spec.samples),
        )
    };
    let combine = |mut a: (Summary, Vec<FlaggedRecord>, Vec<u64>),
                   b: (Summary, Vec<FlaggedRecord>, Vec<u64>)| {
        a.0.merge(&b.0);
        a.1.extend(b.1);
        a
    };
    let (summary, mut flagged, _) = match seeds {
        SeedSet::Range { start, end } => (*start..*end)
            .into_par_iter()
            .fold(identity, per_seed)
            .reduce(identity, combine),
        SeedSet::List(list) => {
            let mut unique = list.clone();
            unique.sort_unstable();
            unique.dedup();
            unique
                .into_par_iter()
                .fold(identity, per_seed)
                .reduce(identity, combine)
        }
    };
    flagged.sort_by_key(|r| r.seed);
    AnalysisOutcome { flagged, summary }
}

/// Two-sided normal tail probability `P(|Z| >= |z|) = erfc(|z| / sqrt 2) = Q(1/2, z^2 / 2)`.
pub fn normal_two_sided_p(z: f64) -> f64 {
    if !z.is_finite() {
        return 0.0;
    }
    gamma_q(0.5, z * z / 2.0)
}

/// Upper tail of the chi-square distribution with `dof` degrees of freedom at `x`.
pub fn chi_square_p(x: f64, dof: f64) -> f64 {
    if !x.is_finite() {
        return 0.0;
    }
    gamma_q(dof / 2.0, x / 2.0)
}

/// `ln Gamma(x)` for `x > 0` (Lanczos, g = 7, 9 terms; relative error about 1e-15).
pub fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const COEFFICIENTS: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Gamma(x) Gamma(1 - x) = pi / sin(pi x).
        return (std::f64::consts::PI / (std::f64::consts::PI * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut sum = COEFFICIENTS[0];
    for (i, c) in COEFFICIENTS.iter().enumerate().skip(1) {
        sum += c / (x + i as f64);
    }
    let t = x + G + 0.5;
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + sum.ln()
}

/// The regularised upper incomplete gamma function `Q(a, x) = Gamma(a, x) / Gamma(a)` for
/// `a > 0`, `x >= 0`: the series for `P` when `x < a + 1`, else Lentz's continued fraction.
pub fn gamma_q(a: f64, x: f64) -> f64 {
    assert!(a > 0.0, "gamma_q needs a > 0, got {a}");
    if x <= 0.0 {
        return 1.0;
    }
    if x.is_infinite() {
        return 0.0;
    }
    let log_prefactor = a * x.ln() - x - ln_gamma(a);
    if x < a + 1.0 {
        let mut term = 1.0 / a;
        let mut sum = term;
        let mut denominator = a;
        for _ in 0..100_000 {
            denominator += 1.0;
            term *= x / denominator;
            sum += term;
            if term.abs() < sum.abs() * 1e-16 {
                break;
            }
        }
        (1.0 - sum * log_prefactor.exp()).clamp(0.0, 1.0)
    } else {
        const TINY: f64 = 1e-300;
        let mut b = x + 1.0 - a;
        let mut c = 1.0 / TINY;
        let mut d = 1.0 / b;
        let mut h = d;
        for i in 1..100_000 {
            let an = -(i as f64) * (i as f64 - a);
            b += 2.0;
            d = an * d + b;
            if d.abs() < TINY {
                d = TINY;
            }
            c = b + an / c;
            if c.abs() < TINY {
                c = TINY;
            }
            d = 1.0 / d;
            let delta = d * c;
            h *= delta;
            if (delta - 1.0).abs() < 1e-16 {
                break;
            }
        }
        (log_prefactor.exp() * h).clamp(0.0, 1.0)
    }
}
