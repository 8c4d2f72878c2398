//! The statistics of `correlation` and `analysis` jobs, run per seed over a chunk (rayon).
//!
//! The spec and result types, and the definitions of every test, live in
//! [`seedq_core::analysis`] (re-exported here); this module computes them.

use rayon::prelude::*;

pub use seedq_core::analysis::*;

use crate::spec::SeedSet;

/// Every statistic of one stream, before the flagging decision.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamStats {
    /// Sample autocorrelations `r_1 .. r_L`.
    pub autocorrelations: Vec<f64>,
    /// `z_k = r_k / sqrt((n-k)/(n(n+2)))` for each lag.
    pub z_scores: Vec<f64>,
    /// Bonferroni over the lags: `min(1, L * min_k p_k)`.
    pub autocorrelation_p: f64,
    /// Ljung-Box `Q = sum_k z_k^2`.
    pub ljung_box_q: f64,
    /// Chi-square(L) p-value of `Q`.
    pub ljung_box_p: f64,
    /// Chi-square uniformity statistic over the bins (`analysis` only).
    pub chi_square: Option<f64>,
    /// Its p-value with `bins - 1` degrees of freedom.
    pub chi_square_p: Option<f64>,
    /// Wald-Wolfowitz runs `z` about the median (`analysis` only).
    pub runs_z: Option<f64>,
    /// Its two-sided p-value.
    pub runs_p: Option<f64>,
    /// The stream takes a single value (every test degenerate).
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
