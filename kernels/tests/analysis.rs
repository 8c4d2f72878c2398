//! The correlation and analysis job types against a straightforward reference computation:
//! streams generated independently with `FamilyConfig::output_at`, statistics by the textbook
//! formulas (two-pass, counting, sorting), p-values against values computed with mpmath.

use std::collections::HashMap;

use seedq_kernels::analysis::{
    self, chi_square_p, gamma_q, ln_gamma, normal_two_sided_p, stream_stats, AnalysisError,
    AnalysisKind, AnalysisSpec, FlaggedRecord, Summary,
};
use seedq_kernels::{Family, FamilyConfig, SeedSet};

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * (1.0 + a.abs().max(b.abs()))
}

#[test]
fn incomplete_gamma_matches_mpmath() {
    // mpmath 1.3.0, dps=30: gammainc(a, x, inf, regularized=True)
    let known = [
        (0.5, 0.5, 0.3173105078629141),
        (1.0, 2.5, 0.0820849986238988),
        (5.0, 3.0, 0.8152632445237721),
        (5.0, 10.0, 0.029252688076961072),
        (49.5, 60.0, 0.07424385580596679),
        (49.5, 40.0, 0.9191878735980901),
        (0.5, 12.0, 9.633570086430946e-07),
        (250.0, 300.0, 0.001377471877528202),
        (2.5, 1e-3, 0.9999999904914654),
        (100.0, 80.0, 0.9828916869648668),
    ];
    for (a, x, q) in known {
        let got = gamma_q(a, x);
        assert!(close(got, q, 1e-10), "Q({a}, {x}) = {got}, expected {q}");
    }
    // Closed forms: Q(1, x) = e^-x; ln Gamma(171.5) from mpmath.loggamma; chi-square(1) at 3.841458820694124 is 0.05.
    assert!(close(gamma_q(1.0, 7.0), (-7.0f64).exp(), 1e-12));
    assert!(close(chi_square_p(3.841458820694124, 1.0), 0.05, 1e-10));
    assert!(close(chi_square_p(124.34211340400407, 100.0), 0.05, 1e-9));
    assert!(close(normal_two_sided_p(1.959963984540054), 0.05, 1e-10));
    assert_eq!(normal_two_sided_p(0.0), 1.0);
    assert!(close(
        ln_gamma(0.5),
        std::f64::consts::PI.sqrt().ln(),
        1e-13
    ));
    assert!(close(ln_gamma(5.0), 24f64.ln(), 1e-13));
    assert!(close(ln_gamma(171.5), 709.1431630309282, 1e-12));
}

/// The statistics of one stream by the textbook definitions, independently of the crate.
struct Reference {
    r: Vec<f64>,
    chi: f64,
    runs_z: f64,
}

fn reference_stats(x: &[u64], modulus: u64, bins: u64, max_lag: usize) -> Reference {
    let n = x.len();
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
    let var: f64 = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum();
    let r = (1..=max_lag)
        .map(|k| {
            (0..n - k)
                .map(|i| (x[i] as f64 - mean) * (x[i + k] as f64 - mean))
                .sum::<f64>()
                / var
        })
        .collect();
    // Chi-square: class widths by enumerating the values.
    let mut width: HashMap<u64, u64> = HashMap::new();
    for v in 0..modulus {
        *width.entry(v * bins / modulus).or_default() += 1;
    }
    let mut observed: HashMap<u64, u64> = HashMap::new();
    for &v in x {
        *observed.entry(v * bins / modulus).or_default() += 1;
    }
    let chi = (0..bins)
        .map(|b| {
            let e = n as f64 * width[&b] as f64 / modulus as f64;
            let o = *observed.get(&b).unwrap_or(&0) as f64;
            (o - e).powi(2) / e
        })
        .sum();
    // Runs about the median of the sorted copy.
    let mut sorted = x.to_vec();
    sorted.sort();
    let median = if n % 2 == 1 {
        sorted[n / 2] as f64
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) as f64 / 2.0
    };
    let signs: Vec<bool> = x
        .iter()
        .filter(|&&v| v as f64 != median)
        .map(|&v| v as f64 > median)
        .collect();
    let n1 = signs.iter().filter(|&&s| s).count() as f64;
    let n2 = signs.len() as f64 - n1;
    let runs = 1 + signs.windows(2).filter(|w| w[0] != w[1]).count();
    let total = n1 + n2;
    let mu = 2.0 * n1 * n2 / total + 1.0;
    let sigma = (2.0 * n1 * n2 * (2.0 * n1 * n2 - total) / (total * total * (total - 1.0))).sqrt();
    Reference {
        r,
        chi,
        runs_z: (runs as f64 - mu) / sigma,
    }
}

fn spec(family: FamilyConfig) -> AnalysisSpec {
    let mut spec = AnalysisSpec::new(family);
    spec.samples = 1000;
    spec.max_lag = 8;
    spec.offset = 3;
    spec.bins = Some(20);
    spec.alpha = 0.05;
    spec
}

fn reference_stream(spec: &AnalysisSpec, seed: u64) -> Vec<u64> {
    (0..spec.samples as u64)
        .map(|i| spec.family.output_at(seed, spec.offset + i) % spec.modulus)
        .collect()
}

/// The reference decision for one seed, from the reference statistics.
fn reference_flag(
    kind: AnalysisKind,
    spec: &AnalysisSpec,
    seed: u64,
) -> Option<(Vec<String>, Reference)> {
    let x = reference_stream(spec, seed);
    let reference = reference_stats(&x, spec.modulus, spec.bins(), spec.max_lag);
    let n = x.len() as f64;
    let z: Vec<f64> = reference
        .r
        .iter()
        .enumerate()
        .map(|(i, r)| r / ((n - (i + 1) as f64) / (n * (n + 2.0))).sqrt())
        .collect();
    let lags = spec.max_lag as f64;
    let p_auto = (z.iter().map(|z| normal_two_sided_p(*z)).fold(1.0, f64::min) * lags).min(1.0);
    let mut failing = Vec::new();
    let tests = kind.tests().len() as f64;
    if kind == AnalysisKind::Analysis {
        if chi_square_p(reference.chi, (spec.bins() - 1) as f64) < spec.alpha / tests {
            failing.push("chi_square".to_string());
        }
        if normal_two_sided_p(reference.runs_z) < spec.alpha / tests {
            failing.push("runs".to_string());
        }
    }
    if p_auto < spec.alpha / tests {
        failing.push("autocorrelation".to_string());
    }
    (!failing.is_empty()).then_some((failing, reference))
}

fn check_against_reference(
    kind: AnalysisKind,
    spec: &AnalysisSpec,
    seeds: std::ops::Range<u64>,
) -> Vec<FlaggedRecord> {
    spec.validate(kind).unwrap();
    let outcome = analysis::run(
        kind,
        spec,
        &SeedSet::Range {
            start: seeds.start,
            end: seeds.end,
        },
    );
    assert_eq!(outcome.summary.seeds_tested, seeds.end - seeds.start);
    let mut expected_flagged = Vec::new();
    for seed in seeds.clone() {
        // Every seed's statistics agree with the reference, flagged or not.
        let x = reference_stream(spec, seed);
        let mut stream = Vec::new();
        spec.stream(seed, &mut stream);
        assert_eq!(stream, x, "stream of seed {seed}");
        let got = stream_stats(kind, spec, &x);
        let reference = reference_stats(&x, spec.modulus, spec.bins(), spec.max_lag);
        for (a, b) in got.autocorrelations.iter().zip(&reference.r) {
            assert!(close(*a, *b, 1e-9), "seed {seed}: r {a} vs {b}");
        }
        if kind == AnalysisKind::Analysis {
            assert!(
                close(got.chi_square.unwrap(), reference.chi, 1e-9),
                "seed {seed}: chi-square"
            );
            assert!(
                close(got.runs_z.unwrap(), reference.runs_z, 1e-9),
                "seed {seed}: runs z"
            );
        } else {
            assert!(got.chi_square.is_none() && got.runs_z.is_none());
        }
        if let Some((tests, _)) = reference_flag(kind, spec, seed) {
            expected_flagged.push((seed, tests));
        }
    }
    let got: Vec<(u64, Vec<String>)> = outcome
        .flagged
        .iter()
        .map(|r| (r.seed, r.tests.clone()))
        .collect();
    assert_eq!(got, expected_flagged);
    assert_eq!(outcome.summary.seeds_flagged, expected_flagged.len() as u64);
    for test in kind.tests() {
        let deciles = outcome.summary.p_deciles[*test];
        assert_eq!(
            deciles.iter().sum::<u64>(),
            seeds.end - seeds.start,
            "{test} deciles"
        );
    }
    outcome.flagged
}

#[test]
fn analysis_matches_reference_for_every_seed_of_several_families() {
    for family in [
        Family::Mt19937,
        Family::JavaLcg,
        Family::Xorshift128,
        Family::Minstd,
    ] {
        check_against_reference(
            AnalysisKind::Analysis,
            &spec(FamilyConfig::new(family)),
            0..60,
        );
    }
}

#[test]
fn correlation_matches_reference() {
    for family in [Family::Pcg32, Family::Sfc64, Family::Lcg32] {
        let mut s = spec(FamilyConfig::new(family));
        s.max_lag = 30;
        check_against_reference(AnalysisKind::Correlation, &s, 100..160);
    }
}

#[test]
fn a_bad_generator_is_flagged_on_every_seed_and_a_good_one_rarely() {
    // lcg32 modulo 2^32 with odd a and c: the low bit alternates, so mod 2 the stream is
    // 0,1,0,1,... (or 1,0,...): lag-1 correlation about -1 and twice the expected runs.
    let lcg = FamilyConfig::parse("lcg32", &[("m", "0")]).unwrap();
    let mut bad = spec(lcg);
    bad.modulus = 2;
    bad.bins = Some(2);
    bad.alpha = 1e-3;
    let flagged = check_against_reference(AnalysisKind::Analysis, &bad, 0..40);
    assert_eq!(flagged.len(), 40, "every seed, not the first four");
    for record in &flagged {
        assert!(
            record.tests.contains(&"runs".to_string())
                && record.tests.contains(&"autocorrelation".to_string())
        );
        assert!(record.autocorrelations[0] < -0.99, "{record:?}");
        assert!(record.runs_z.unwrap() > 20.0);
    }
    let mut good = spec(FamilyConfig::new(Family::Mt19937));
    good.alpha = 1e-3;
    let outcome = analysis::run(
        AnalysisKind::Analysis,
        &good,
        &SeedSet::Range { start: 0, end: 300 },
    );
    assert!(
        outcome.summary.seeds_flagged <= 3,
        "mt19937 flagged {} of 300 at alpha 1e-3",
        outcome.summary.seeds_flagged
    );
}

#[test]
fn a_constant_stream_is_flagged_as_degenerate() {
    // xorshift32 seeded with 0 stays 0 forever.
    let s = spec(FamilyConfig::new(Family::Xorshift32));
    let outcome = analysis::run(AnalysisKind::Analysis, &s, &SeedSet::List(vec![0, 1]));
    assert_eq!(outcome.summary.constant_streams, 1);
    let record = &outcome.flagged[0];
    assert_eq!(record.seed, 0);
    assert!(record.constant);
    assert_eq!(record.tests, vec!["chi_square", "runs", "autocorrelation"]);
    // Degenerate statistics still serialise (no infinities in JSON).
    let text = serde_json::to_string(record).unwrap();
    let back: FlaggedRecord = serde_json::from_str(&text).unwrap();
    assert_eq!(&back, record);
}

#[test]
fn hand_computed_alternating_stream() {
    // 0,1,0,1,... of even length n: r_1 = -(n-1)/n, r_2 = (n-2)/n; n runs of 1 each.
    let x: Vec<u64> = (0..100).map(|i| i % 2).collect();
    let mut s = spec(FamilyConfig::new(Family::Mt19937));
    s.modulus = 2;
    s.bins = Some(2);
    s.max_lag = 2;
    let stats = stream_stats(AnalysisKind::Analysis, &s, &x);
    assert!(close(stats.autocorrelations[0], -0.99, 1e-12));
    assert!(close(stats.autocorrelations[1], 0.98, 1e-12));
    assert_eq!(stats.chi_square, Some(0.0));
    assert_eq!(stats.chi_square_p, Some(1.0));
    // n1 = n2 = 50, mu = 51, sigma^2 = 2*2500*(5000-100)/(10000*99) = 24.747...
    let sigma = (2.0 * 2500.0 * 4900.0 / (10000.0 * 99.0f64)).sqrt();
    assert!(close(stats.runs_z.unwrap(), (100.0 - 51.0) / sigma, 1e-12));
}

#[test]
fn chunk_summaries_merge_exactly_and_lists_are_sorted_and_deduplicated() {
    let mut s = spec(FamilyConfig::new(Family::Xoshiro256pp));
    s.alpha = 0.2; // flag plenty, to exercise the merge.
    let kind = AnalysisKind::Analysis;
    let whole = analysis::run(kind, &s, &SeedSet::Range { start: 0, end: 150 });
    let a = analysis::run(kind, &s, &SeedSet::Range { start: 0, end: 47 });
    let b = analysis::run(
        kind,
        &s,
        &SeedSet::Range {
            start: 47,
            end: 150,
        },
    );
    let mut merged = Summary::default();
    merged.merge(&b.summary);
    merged.merge(&a.summary);
    assert_eq!(merged, whole.summary);
    assert!(whole.summary.seeds_flagged > 0);
    let concatenated: Vec<_> = a.flagged.iter().chain(&b.flagged).cloned().collect();
    assert_eq!(concatenated, whole.flagged);
    let listed = analysis::run(
        kind,
        &s,
        &SeedSet::List((0..150).rev().chain(0..10).collect()),
    );
    assert_eq!(listed, whole);
    // Summary JSON round trip (the consumer stores it per chunk).
    let text = serde_json::to_string(&whole.summary).unwrap();
    assert_eq!(
        serde_json::from_str::<Summary>(&text).unwrap(),
        whole.summary
    );
}

#[test]
fn invalid_specs_are_refused_with_a_reason() {
    let base = spec(FamilyConfig::new(Family::Mt19937));
    let mut s = base.clone();
    s.samples = 8;
    assert_eq!(
        s.validate(AnalysisKind::Correlation),
        Err(AnalysisError::Samples(8))
    );
    let mut s = base.clone();
    s.max_lag = 251;
    assert!(matches!(
        s.validate(AnalysisKind::Correlation),
        Err(AnalysisError::MaxLag {
            got: 251,
            limit: 250
        })
    ));
    let mut s = base.clone();
    s.bins = Some(1000);
    assert!(matches!(
        s.validate(AnalysisKind::Analysis),
        Err(AnalysisError::SparseBins { .. })
    ));
    assert!(
        s.validate(AnalysisKind::Correlation).is_ok(),
        "bins only matter to analysis"
    );
    let mut s = base.clone();
    s.alpha = 0.0;
    assert_eq!(
        s.validate(AnalysisKind::Analysis),
        Err(AnalysisError::Alpha(0.0))
    );
    // The spec JSON with defaults, as a producer would send it.
    let parsed: AnalysisSpec =
        serde_json::from_str(r#"{"family": {"family": "mt19937"}}"#).unwrap();
    assert_eq!(
        (
            parsed.modulus,
            parsed.samples,
            parsed.max_lag,
            parsed.bins()
        ),
        (1000, 10_000, 20, 100)
    );
    assert!(parsed.validate(AnalysisKind::Analysis).is_ok());
}
