//! Survivor records as `seedq-producer results` prints them (JSON or CSV), sorted by seed.
//!
//! Every row has `seed`, `matches`, `total`, `match_rate` and `best_skip` (`null` / empty for
//! variable skip, which has a skip pattern instead). The primary pass is the forward one, or the
//! reverse one for reverse-only jobs. Bidirectional jobs add `forward_rate`, `reverse_rate`,
//! their `mean_rate`, and the reverse pass's `reverse_matches` and `reverse_best_skip`;
//! variable-skip jobs add `strategy` and `skip_pattern` (and `reverse_strategy` /
//! `reverse_skip_pattern` when bidirectional). Jobs that search an offset range add
//! `best_offset` (and `reverse_best_offset`): the offset of the best (offset, skip).
//!
//! Correlation / analysis jobs ([`AnalysisResults`]) print, as JSON, one object
//! `{"job_id", "kind", "summary", "flagged"}`: `summary` is the sum of every chunk's summary
//! (`seedq_core::analysis::Summary::merge`, integer counters, so exact) and `flagged` the
//! flagged seeds' records (`FlaggedRecord`) sorted by seed. As CSV, one row per flagged seed
//! ([`ANALYSIS_CSV_HEADER`]): the failing tests (space-separated), whether the stream was
//! constant, every p-value and statistic, the strongest lag (largest `|z|`, 1-based) with its
//! `r` and `z`, and every `r_k` (space-separated); statistics a kind does not compute are empty.

use std::collections::BTreeMap;

use seedq_core::analysis::{FlaggedRecord, Summary};
use seedq_core::{Direction, PassResult, Survivor};
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResultRow {
    pub seed: u64,
    pub matches: u32,
    pub total: u32,
    pub match_rate: f64,
    pub best_skip: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forward_rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reverse_rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean_rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reverse_matches: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reverse_best_skip: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strategy: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skip_pattern: Option<Vec<u32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reverse_strategy: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reverse_skip_pattern: Option<Vec<u32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub best_offset: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reverse_best_offset: Option<u64>,
}

/// Why a stored survivor cannot be shown (a record without the pass its job asked for).
#[derive(Debug, thiserror::Error)]
#[error("survivor {seed} has no {pass} pass result, which its {direction:?} job requires")]
pub struct MissingPass {
    pub seed: u64,
    pub pass: &'static str,
    pub direction: Direction,
}

pub fn row(survivor: &Survivor, direction: Direction) -> Result<ResultRow, MissingPass> {
    let need = |p: &Option<PassResult>, pass: &'static str| {
        p.clone().ok_or(MissingPass {
            seed: survivor.seed,
            pass,
            direction,
        })
    };
    let (primary, secondary) = match direction {
        Direction::Forward => (need(&survivor.forward, "forward")?, None),
        Direction::Reverse => (need(&survivor.reverse, "reverse")?, None),
        Direction::Bidirectional => (
            need(&survivor.forward, "forward")?,
            Some(need(&survivor.reverse, "reverse")?),
        ),
    };
    let mut r = ResultRow {
        seed: survivor.seed,
        matches: primary.matches,
        total: primary.total,
        match_rate: primary.match_rate(),
        best_skip: primary.best_skip,
        forward_rate: None,
        reverse_rate: None,
        mean_rate: None,
        reverse_matches: None,
        reverse_best_skip: None,
        strategy: primary.strategy.clone(),
        skip_pattern: primary.skip_pattern.clone(),
        reverse_strategy: None,
        reverse_skip_pattern: None,
        best_offset: primary.best_offset,
        reverse_best_offset: None,
    };
    if let Some(rev) = secondary {
        let (f, b) = (primary.match_rate(), rev.match_rate());
        r.forward_rate = Some(f);
        r.reverse_rate = Some(b);
        r.mean_rate = Some((f + b) / 2.0);
        r.reverse_matches = Some(rev.matches);
        r.reverse_best_skip = rev.best_skip;
        r.reverse_strategy = rev.strategy;
        r.reverse_skip_pattern = rev.skip_pattern;
        r.reverse_best_offset = rev.best_offset;
    }
    Ok(r)
}

/// Rows sorted by seed (one per seed), for a slice already in memory (tests; `results` streams
/// rows with [`row`]).
#[cfg(test)]
pub fn rows(survivors: &[Survivor], direction: Direction) -> Result<Vec<ResultRow>, MissingPass> {
    let mut out: Vec<ResultRow> = survivors
        .iter()
        .map(|s| row(s, direction))
        .collect::<Result<_, _>>()?;
    out.sort_by_key(|r| r.seed);
    out.dedup_by_key(|r| r.seed);
    Ok(out)
}

pub const CSV_HEADER: &str = "seed,matches,total,match_rate,best_skip,forward_rate,reverse_rate,mean_rate,reverse_matches,reverse_best_skip,strategy,skip_pattern,reverse_strategy,reverse_skip_pattern,best_offset,reverse_best_offset";

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map(|x| x.to_string()).unwrap_or_default()
}

fn pattern(p: &Option<Vec<u32>>) -> String {
    // Space-separated inside one field: no quoting needed, and spreadsheets keep it as text.
    p.as_ref()
        .map(|v| {
            v.iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

pub fn csv_line(r: &ResultRow) -> String {
    format!(
        "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
        r.seed,
        r.matches,
        r.total,
        r.match_rate,
        opt(&r.best_skip),
        opt(&r.forward_rate),
        opt(&r.reverse_rate),
        opt(&r.mean_rate),
        opt(&r.reverse_matches),
        opt(&r.reverse_best_skip),
        opt(&r.strategy),
        pattern(&r.skip_pattern),
        opt(&r.reverse_strategy),
        pattern(&r.reverse_skip_pattern),
        opt(&r.best_offset),
        opt(&r.reverse_best_offset),
    )
}

#[cfg(test)]
pub fn to_csv(rows: &[ResultRow]) -> String {
    csv_document(CSV_HEADER, rows, csv_line)
}

/// `header`, then `line` of every row, each ending in a newline.
fn csv_document<T>(header: &str, rows: &[T], line: impl Fn(&T) -> String) -> String {
    let mut out = String::with_capacity(64 * (rows.len() + 1));
    out.push_str(header);
    out.push('\n');
    for r in rows {
        out.push_str(&line(r));
        out.push('\n');
    }
    out
}

/// What `results` prints (JSON) for a correlation or analysis job.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AnalysisResults {
    pub job_id: String,
    /// `correlation` or `analysis`.
    pub kind: String,
    /// Every applied chunk's summary, merged.
    pub summary: Summary,
    /// Flagged seeds, sorted by seed, one record each.
    pub flagged: Vec<FlaggedRecord>,
}

/// Why stored analysis results cannot be shown.
#[derive(Debug, thiserror::Error)]
pub enum AnalysisResultsError {
    #[error("the stored summary of chunk member '{member}' is not an analysis summary: {message}")]
    Summary { member: String, message: String },
    #[error("the stored record of flagged seed {seed} is not an analysis record: {message}")]
    Record { seed: u64, message: String },
}

/// Sums the per-chunk summaries (`chunk member -> summary JSON`, as the store keeps them).
pub fn merge_summaries(
    chunks: &BTreeMap<String, serde_json::Value>,
) -> Result<Summary, AnalysisResultsError> {
    let mut total = Summary::default();
    for (member, value) in chunks {
        let summary: Summary =
            serde_json::from_value(value.clone()).map_err(|e| AnalysisResultsError::Summary {
                member: member.clone(),
                message: e.to_string(),
            })?;
        total.merge(&summary);
    }
    Ok(total)
}

/// Decodes stored `(seed, record JSON)` pairs into records sorted by seed (one per seed).
pub fn flagged_records(stored: &[(u64, &str)]) -> Result<Vec<FlaggedRecord>, AnalysisResultsError> {
    let mut out: Vec<FlaggedRecord> = stored
        .iter()
        .map(|(seed, json)| {
            serde_json::from_str::<FlaggedRecord>(json).map_err(|e| AnalysisResultsError::Record {
                seed: *seed,
                message: e.to_string(),
            })
        })
        .collect::<Result<_, _>>()?;
    out.sort_by_key(|r| r.seed);
    out.dedup_by_key(|r| r.seed);
    Ok(out)
}

pub const ANALYSIS_CSV_HEADER: &str = "seed,tests,constant,autocorrelation_p,worst_lag,worst_r,worst_z,ljung_box_q,ljung_box_p,chi_square,chi_square_p,runs_z,runs_p,autocorrelations";

/// The lag (1-based) with the largest `|z|`, with its `r` and `z` (first one on ties).
pub fn worst_lag(r: &FlaggedRecord) -> Option<(usize, f64, f64)> {
    let mut best: Option<(usize, f64, f64)> = None;
    for (i, (&z, &rk)) in r.z_scores.iter().zip(&r.autocorrelations).enumerate() {
        if best.is_none_or(|(_, _, bz)| z.abs() > bz.abs()) {
            best = Some((i + 1, rk, z));
        }
    }
    best
}

/// A statistic for CSV: the shortest round-trip decimal, in scientific notation outside
/// `[1e-4, 1e16)` (`Display` would write a p-value of 1e-40, or the `f64::MAX` that stands for a
/// degenerate statistic, with hundreds of digits).
pub fn csv_float(v: f64) -> String {
    let a = v.abs();
    if v == 0.0 || !v.is_finite() || (1e-4..1e16).contains(&a) {
        v.to_string()
    } else {
        format!("{v:e}")
    }
}

fn opt_float(v: Option<f64>) -> String {
    v.map(csv_float).unwrap_or_default()
}

pub fn analysis_csv_line(r: &FlaggedRecord) -> String {
    let (lag, worst_r, worst_z) = match worst_lag(r) {
        Some((lag, rk, z)) => (lag.to_string(), csv_float(rk), csv_float(z)),
        None => Default::default(),
    };
    let lags = r
        .autocorrelations
        .iter()
        .map(|v| csv_float(*v))
        .collect::<Vec<_>>()
        .join(" ");
    format!(
        "{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
        r.seed,
        r.tests.join(" "),
        r.constant,
        csv_float(r.autocorrelation_p),
        lag,
        worst_r,
        worst_z,
        csv_float(r.ljung_box_q),
        csv_float(r.ljung_box_p),
        opt_float(r.chi_square),
        opt_float(r.chi_square_p),
        opt_float(r.runs_z),
        opt_float(r.runs_p),
        lags,
    )
}

pub fn analysis_csv(records: &[FlaggedRecord]) -> String {
    csv_document(ANALYSIS_CSV_HEADER, records, analysis_csv_line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pass(matches: u32, total: u32, best_skip: Option<u32>) -> PassResult {
        PassResult {
            matches,
            total,
            best_skip,
            best_offset: None,
            strategy: None,
            skip_pattern: None,
        }
    }

    #[test]
    fn forward_rows_sorted_and_deduplicated() {
        let s = |seed| Survivor {
            seed,
            forward: Some(pass(3, 4, Some(1))),
            reverse: None,
        };
        let out = rows(&[s(9), s(2), s(9)], Direction::Forward).unwrap();
        assert_eq!(out.iter().map(|r| r.seed).collect::<Vec<_>>(), vec![2, 9]);
        assert_eq!(out[0].match_rate, 0.75);
        assert_eq!(csv_line(&out[0]), "2,3,4,0.75,1,,,,,,,,,,,");
        let json = serde_json::to_value(&out[0]).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"seed": 2, "matches": 3, "total": 4, "match_rate": 0.75, "best_skip": 1})
        );
    }

    #[test]
    fn offset_range_rows_name_the_best_offsets() {
        let mut f = pass(4, 4, Some(2));
        f.best_offset = Some(37);
        let mut b = pass(3, 4, Some(0));
        b.best_offset = Some(40);
        let r = row(
            &Survivor {
                seed: 8,
                forward: Some(f),
                reverse: Some(b),
            },
            Direction::Bidirectional,
        )
        .unwrap();
        assert_eq!((r.best_offset, r.reverse_best_offset), (Some(37), Some(40)));
        assert!(csv_line(&r).ends_with(",37,40"), "{}", csv_line(&r));
        assert_eq!(serde_json::to_value(&r).unwrap()["best_offset"], 37);
    }

    #[test]
    fn bidirectional_rows_carry_both_rates_and_their_mean() {
        let s = Survivor {
            seed: 5,
            forward: Some(pass(4, 4, Some(0))),
            reverse: Some(pass(2, 4, Some(3))),
        };
        let r = row(&s, Direction::Bidirectional).unwrap();
        assert_eq!(
            (r.forward_rate, r.reverse_rate, r.mean_rate),
            (Some(1.0), Some(0.5), Some(0.75))
        );
        assert_eq!((r.reverse_matches, r.reverse_best_skip), (Some(2), Some(3)));
        assert!(row(
            &Survivor {
                seed: 5,
                forward: Some(pass(4, 4, Some(0))),
                reverse: None
            },
            Direction::Bidirectional
        )
        .is_err());
    }

    #[test]
    fn reverse_and_variable_skip_rows() {
        let mut p = pass(3, 3, None);
        p.strategy = Some("strict_continuous".into());
        p.skip_pattern = Some(vec![1, 2, 2]);
        let s = Survivor {
            seed: 1,
            forward: None,
            reverse: Some(p),
        };
        let r = row(&s, Direction::Reverse).unwrap();
        assert_eq!(r.strategy.as_deref(), Some("strict_continuous"));
        assert_eq!(csv_line(&r), "1,3,3,1,,,,,,,strict_continuous,1 2 2,,,,");
        assert!(to_csv(&[r]).starts_with("seed,matches,total,match_rate,best_skip,"));
    }

    fn record(seed: u64, tests: &[&str], r: Vec<f64>, z: Vec<f64>) -> FlaggedRecord {
        FlaggedRecord {
            seed,
            tests: tests.iter().map(|t| t.to_string()).collect(),
            autocorrelations: r,
            z_scores: z,
            autocorrelation_p: 0.0005,
            ljung_box_q: 40.5,
            ljung_box_p: 0.001,
            chi_square: None,
            chi_square_p: None,
            runs_z: None,
            runs_p: None,
            constant: false,
        }
    }

    #[test]
    fn summaries_merge_and_bad_ones_are_named() {
        let mut a = Summary {
            seeds_tested: 10,
            seeds_flagged: 1,
            constant_streams: 1,
            ..Default::default()
        };
        a.flagged_by_test.insert("autocorrelation".into(), 1);
        a.p_deciles
            .insert("autocorrelation".into(), [1, 0, 0, 0, 0, 0, 0, 0, 0, 9]);
        let mut b = Summary {
            seeds_tested: 5,
            ..Default::default()
        };
        b.p_deciles
            .insert("autocorrelation".into(), [0, 5, 0, 0, 0, 0, 0, 0, 0, 0]);
        let chunks: BTreeMap<String, serde_json::Value> = [
            ("c0".to_string(), serde_json::to_value(&a).unwrap()),
            ("c1".to_string(), serde_json::to_value(&b).unwrap()),
        ]
        .into();
        let merged = merge_summaries(&chunks).unwrap();
        assert_eq!(
            (
                merged.seeds_tested,
                merged.seeds_flagged,
                merged.constant_streams
            ),
            (15, 1, 1)
        );
        assert_eq!(
            merged.p_deciles["autocorrelation"],
            [1, 5, 0, 0, 0, 0, 0, 0, 0, 9]
        );
        assert_eq!(
            merge_summaries(&BTreeMap::new()).unwrap(),
            Summary::default()
        );
        let bad: BTreeMap<String, serde_json::Value> =
            [("c7".to_string(), serde_json::json!({"seeds_tested": "x"}))].into();
        assert!(merge_summaries(&bad)
            .unwrap_err()
            .to_string()
            .contains("'c7'"));
    }

    #[test]
    fn flagged_records_sorted_and_csv_rows() {
        let a = record(9, &["autocorrelation"], vec![0.1, -0.5], vec![1.0, -6.0]);
        let b = record(2, &["chi_square", "autocorrelation"], vec![0.3], vec![4.0]);
        let (ja, jb) = (
            serde_json::to_string(&a).unwrap(),
            serde_json::to_string(&b).unwrap(),
        );
        let records = flagged_records(&[(9, &ja), (2, &jb), (9, &ja)]).unwrap();
        assert_eq!(
            records.iter().map(|r| r.seed).collect::<Vec<_>>(),
            vec![2, 9]
        );
        assert_eq!(worst_lag(&records[1]), Some((2, -0.5, -6.0)));
        assert_eq!(
            analysis_csv_line(&records[1]),
            "9,autocorrelation,false,0.0005,2,-0.5,-6,40.5,0.001,,,,,0.1 -0.5"
        );
        let csv = analysis_csv(&records);
        assert_eq!(csv.lines().count(), 3);
        assert!(csv.starts_with(ANALYSIS_CSV_HEADER));
        assert_eq!(
            csv.lines().nth(1).unwrap().split(',').count(),
            ANALYSIS_CSV_HEADER.split(',').count()
        );
        assert!(flagged_records(&[(4, "{}")])
            .unwrap_err()
            .to_string()
            .contains("seed 4"));
    }

    #[test]
    fn csv_floats_stay_short_and_exact() {
        assert_eq!(csv_float(0.0), "0");
        assert_eq!(csv_float(0.25), "0.25");
        assert_eq!(csv_float(-3.5), "-3.5");
        assert_eq!(csv_float(1.5e-40), "1.5e-40");
        assert_eq!(csv_float(f64::MAX), "1.7976931348623157e308");
        assert_eq!(csv_float(-f64::MAX), "-1.7976931348623157e308");
        for v in [1.5e-40, f64::MAX, 0.000123456789, 123456.789e20] {
            assert_eq!(
                csv_float(v).parse::<f64>().unwrap(),
                v,
                "{v} must round-trip"
            );
        }
        let mut constant = record(
            0,
            &["autocorrelation"],
            vec![1.0, 1.0],
            vec![f64::MAX, f64::MAX],
        );
        constant.constant = true;
        constant.autocorrelation_p = 0.0;
        assert_eq!(
            analysis_csv_line(&constant),
            "0,autocorrelation,true,0,1,1,1.7976931348623157e308,40.5,0.001,,,,,1 1"
        );
    }
}
