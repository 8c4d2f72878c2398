//! Survivor records as `seedq-producer results` prints them (JSON or CSV), sorted by seed.
//!
//! Every row has `seed`, `matches`, `total`, `match_rate` and `best_skip` (`null` / empty for
//! variable skip, which has a skip pattern instead). The primary pass is the forward one, or the
//! reverse one for reverse-only jobs. Bidirectional jobs add `forward_rate`, `reverse_rate`,
//! their `mean_rate`, and the reverse pass's `reverse_matches` and `reverse_best_skip`;
//! variable-skip jobs add `strategy` and `skip_pattern` (and `reverse_strategy` /
//! `reverse_skip_pattern` when bidirectional).

use serde::Serialize;
use seedq_kernels::{Direction, PassResult, Survivor};

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
        p.clone().ok_or(MissingPass { seed: survivor.seed, pass, direction })
    };
    let (primary, secondary) = match direction {
        Direction::Forward => (need(&survivor.forward, "forward")?, None),
        Direction::Reverse => (need(&survivor.reverse, "reverse")?, None),
        Direction::Bidirectional => (need(&survivor.forward, "forward")?, Some(need(&survivor.reverse, "reverse")?)),
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
    }
    Ok(r)
}

/// Rows sorted by seed (one per seed).
pub fn rows(survivors: &[Survivor], direction: Direction) -> Result<Vec<ResultRow>, MissingPass> {
    let mut out: Vec<ResultRow> = survivors.iter().map(|s| row(s, direction)).collect::<Result<_, _>>()?;
    out.sort_by_key(|r| r.seed);
    out.dedup_by_key(|r| r.seed);
    Ok(out)
}

pub const CSV_HEADER: &str = "seed,matches,total,match_rate,best_skip,forward_rate,reverse_rate,mean_rate,reverse_matches,reverse_best_skip,strategy,skip_pattern,reverse_strategy,reverse_skip_pattern";

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map(|x| x.to_string()).unwrap_or_default()
}

fn pattern(p: &Option<Vec<u32>>) -> String {
    // Space-separated inside one field: no quoting needed, and spreadsheets keep it as text.
    p.as_ref().map(|v| v.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(" ")).unwrap_or_default()
}

pub fn csv_line(r: &ResultRow) -> String {
    format!(
        "{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
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
    )
}

pub fn to_csv(rows: &[ResultRow]) -> String {
    let mut out = String::with_capacity(64 * (rows.len() + 1));
    out.push_str(CSV_HEADER);
    out.push('\n');
    for r in rows {
        out.push_str(&csv_line(r));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pass(matches: u32, total: u32, best_skip: Option<u32>) -> PassResult {
        PassResult { matches, total, best_skip, strategy: None, skip_pattern: None }
    }

    #[test]
    fn forward_rows_sorted_and_deduplicated() {
        let s = |seed| Survivor { seed, forward: Some(pass(3, 4, Some(1))), reverse: None };
        let out = rows(&[s(9), s(2), s(9)], Direction::Forward).unwrap();
        assert_eq!(out.iter().map(|r| r.seed).collect::<Vec<_>>(), vec![2, 9]);
        assert_eq!(out[0].match_rate, 0.75);
        assert_eq!(csv_line(&out[0]), "2,3,4,0.75,1,,,,,,,,,");
        let json = serde_json::to_value(&out[0]).unwrap();
        assert_eq!(json, serde_json::json!({"seed": 2, "matches": 3, "total": 4, "match_rate": 0.75, "best_skip": 1}));
    }

    #[test]
    fn bidirectional_rows_carry_both_rates_and_their_mean() {
        let s = Survivor { seed: 5, forward: Some(pass(4, 4, Some(0))), reverse: Some(pass(2, 4, Some(3))) };
        let r = row(&s, Direction::Bidirectional).unwrap();
        assert_eq!((r.forward_rate, r.reverse_rate, r.mean_rate), (Some(1.0), Some(0.5), Some(0.75)));
        assert_eq!((r.reverse_matches, r.reverse_best_skip), (Some(2), Some(3)));
        assert!(row(&Survivor { seed: 5, forward: Some(pass(4, 4, Some(0))), reverse: None }, Direction::Bidirectional).is_err());
    }

    #[test]
    fn reverse_and_variable_skip_rows() {
        let mut p = pass(3, 3, None);
        p.strategy = Some("strict_continuous".into());
        p.skip_pattern = Some(vec![1, 2, 2]);
        let s = Survivor { seed: 1, forward: None, reverse: Some(p) };
        let r = row(&s, Direction::Reverse).unwrap();
        assert_eq!(r.strategy.as_deref(), Some("strict_continuous"));
        assert_eq!(csv_line(&r), "1,3,3,1,,,,,,,strict_continuous,1 2 2,,");
        assert!(to_csv(&[r]).starts_with("seed,matches,total,match_rate,best_skip,"));
    }
}
