//! A job's progress as `status` and `wait` show it: counts, rate, ETA, failures by reason, and
//! the text and JSON renderings. Pure: built from what the store returns, no I/O here.

use std::collections::BTreeMap;

use seedq_protocol::{Job, JobProgress};
use serde::Serialize;

/// Everything `status --json` prints for one job.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ProgressView {
    pub job_id: String,
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    /// `running`, `finished`, `finished_with_failures` or `cancelled`.
    pub state: String,
    /// True once every chunk is done or dead-lettered (nothing more will happen).
    pub finished: bool,
    /// Seed jobs: `high`, `normal` or `low` (the scheduler's order).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<seedq_protocol::Priority>,
    pub chunks_total: u64,
    /// Chunks published so far (the scheduler publishes a seed job in windows).
    pub chunks_published: u64,
    pub chunks_done: u64,
    pub seeds_total: u128,
    pub seeds_done: u64,
    pub survivors: u64,
    /// Chunks that went to the dead-letter queue, by chunk index.
    pub dead_lettered: u64,
    pub dead_lettered_chunks: Vec<u64>,
    /// Failure events (retries and dead letters) by reason.
    pub failures: BTreeMap<String, u64>,
    pub chunks_by_node: BTreeMap<String, u64>,
    /// Verification by redundancy (all zero when the job verifies nothing).
    pub verification: Verification,
    /// Seeds per second since the first result.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_seeds_per_sec: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eta_secs: Option<f64>,
    pub created_at_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub elapsed_secs: Option<f64>,
}

/// A job's verification by redundancy (`docs/verification.md`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Verification {
    /// Chunks whose second run matched.
    pub verified: u64,
    /// Verifications whose two runs differed (each decided by the CPU reference).
    pub mismatches: u64,
    /// Applied results replaced by a re-decided one.
    pub corrected: u64,
    /// Chunks run again because the slot that completed them was found wrong.
    pub redone: u64,
    /// Verifications no other slot could run.
    pub unverified: u64,
    /// Checks not yet settled (the job finishes once none is left).
    pub pending: u64,
}

impl Verification {
    fn of(p: &JobProgress) -> Verification {
        Verification {
            verified: p.verified,
            mismatches: p.mismatches,
            corrected: p.corrected,
            redone: p.redone,
            unverified: p.unverified,
            pending: p.checks_pending,
        }
    }

    fn is_empty(&self) -> bool {
        *self == Verification::default()
    }
}

/// Chunk index of a done-set member (`c17` -> 17).
pub fn chunk_index(member: &str) -> Option<u64> {
    member.strip_prefix('c')?.parse().ok()
}

/// The view of `progress` at `now_ms` (the job record, when still stored, names the family).
pub fn view(progress: &JobProgress, job: Option<&Job>, now_ms: u64) -> ProgressView {
    let finished = progress.finished();
    let state = if progress.cancelled {
        "cancelled"
    } else if finished && progress.succeeded() {
        "finished"
    } else if finished {
        "finished_with_failures"
    } else {
        "running"
    };
    let running_secs = match (progress.started_at_ms, progress.finished_at_ms) {
        (Some(s), Some(f)) => f.saturating_sub(s) as f64 / 1000.0,
        (Some(s), None) => now_ms.saturating_sub(s) as f64 / 1000.0,
        _ => 0.0,
    };
    let (rate, eta) = rate_and_eta(progress.seeds_done, progress.seeds_total, running_secs);
    let mut dead: Vec<u64> = progress
        .dead_lettered
        .keys()
        .filter_map(|m| chunk_index(m))
        .collect();
    dead.sort_unstable();
    let end_ms = progress.finished_at_ms.unwrap_or(now_ms);
    ProgressView {
        job_id: progress.job_id.clone(),
        kind: if progress.kind.is_empty() {
            job.map(|j| j.kind().to_string()).unwrap_or_default()
        } else {
            progress.kind.clone()
        },
        family: job.and_then(|j| j.spec.family_name()),
        state: state.to_string(),
        finished,
        priority: progress.priority,
        chunks_total: progress.chunks_total,
        chunks_published: progress.published.min(progress.chunks_total),
        chunks_done: progress.chunks_done,
        seeds_total: progress.seeds_total,
        seeds_done: progress.seeds_done,
        survivors: progress.survivors,
        dead_lettered: progress.dead_lettered.len() as u64,
        dead_lettered_chunks: dead,
        failures: progress.failures.clone(),
        chunks_by_node: progress.chunks_by_node.clone(),
        verification: Verification::of(progress),
        rate_seeds_per_sec: rate,
        eta_secs: if finished { Some(0.0) } else { eta },
        created_at_ms: progress.created_at_ms,
        elapsed_secs: Some(end_ms.saturating_sub(progress.created_at_ms) as f64 / 1000.0),
    }
}

/// Seeds per second and the ETA from the counts and the time the work has been running.
pub fn rate_and_eta(
    seeds_done: u64,
    seeds_total: u128,
    running_secs: f64,
) -> (Option<f64>, Option<f64>) {
    if seeds_done == 0 || running_secs <= 0.0 {
        return (None, None);
    }
    let rate = seeds_done as f64 / running_secs;
    let left = seeds_total.saturating_sub(seeds_done as u128) as f64;
    (Some(rate), Some(left / rate))
}

/// `1h02m`, `3m05s`, `42s`.
pub fn human_secs(secs: f64) -> String {
    if !secs.is_finite() {
        return "?".into();
    }
    let s = secs.round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// `12.3M`, `4.5k`, `999`.
pub fn human_count(n: f64) -> String {
    let a = n.abs();
    if a >= 1e12 {
        format!("{:.1}T", n / 1e12)
    } else if a >= 1e9 {
        format!("{:.1}G", n / 1e9)
    } else if a >= 1e6 {
        format!("{:.1}M", n / 1e6)
    } else if a >= 1e4 {
        format!("{:.1}k", n / 1e3)
    } else {
        format!("{n:.0}")
    }
}

impl ProgressView {
    /// The multi-line text `status JOB` prints.
    pub fn to_text(&self) -> String {
        let pct = if self.seeds_total > 0 {
            100.0 * self.seeds_done as f64 / self.seeds_total as f64
        } else {
            0.0
        };
        let mut out = format!(
            "job {} ({}{}): {}\n  chunks  {}/{} done\n  seeds   {}/{} ({pct:.1}%)\n  survivors {}\n",
            self.job_id,
            self.kind,
            self.family.as_deref().map(|f| format!(", {f}")).unwrap_or_default(),
            self.state,
            self.chunks_done,
            self.chunks_total,
            self.seeds_done,
            self.seeds_total,
            self.survivors,
        );
        if let Some(priority) = self.priority {
            let unit = if self.kind == "scripts" {
                "tasks"
            } else {
                "chunks"
            };
            out += &format!(
                "  priority {priority} ({}/{} {unit} published)\n",
                self.chunks_published, self.chunks_total
            );
        }
        if !self.verification.is_empty() {
            let v = self.verification;
            out += &format!(
                "  verified {} chunks, {} mismatches ({} corrected, {} redone), {} unverified, {} checks pending\n",
                v.verified, v.mismatches, v.corrected, v.redone, v.unverified, v.pending
            );
        }
        if let Some(rate) = self.rate_seeds_per_sec {
            out += &format!("  rate    {} seeds/s", human_count(rate));
            match self.eta_secs {
                Some(eta) if !self.finished => out += &format!(", ETA {}\n", human_secs(eta)),
                _ => out += "\n",
            }
        }
        if self.dead_lettered > 0 {
            let shown: Vec<String> = self
                .dead_lettered_chunks
                .iter()
                .take(20)
                .map(|c| c.to_string())
                .collect();
            out += &format!(
                "  dead-lettered chunks: {} [{}{}]\n",
                self.dead_lettered,
                shown.join(", "),
                if self.dead_lettered_chunks.len() > 20 {
                    ", ..."
                } else {
                    ""
                }
            );
        }
        if !self.failures.is_empty() {
            out += "  failures by reason:\n";
            for (reason, n) in &self.failures {
                out += &format!("    {n:>6}  {reason}\n");
            }
        }
        if !self.chunks_by_node.is_empty() {
            let nodes: Vec<String> = self
                .chunks_by_node
                .iter()
                .map(|(n, c)| format!("{n}={c}"))
                .collect();
            out += &format!("  chunks by node: {}\n", nodes.join(" "));
        }
        out
    }

    /// One line for `status` without a job.
    pub fn to_line(&self) -> String {
        let pct = if self.seeds_total > 0 {
            100.0 * self.seeds_done as f64 / self.seeds_total as f64
        } else {
            0.0
        };
        let mut line = format!(
            "{:<32} {:<12} {:<22} {:>6.1}%  chunks {}/{}  survivors {}",
            self.job_id,
            self.family.as_deref().unwrap_or(&self.kind),
            self.state,
            pct,
            self.chunks_done,
            self.chunks_total,
            self.survivors,
        );
        if let Some(rate) = self.rate_seeds_per_sec.filter(|_| !self.finished) {
            line += &format!("  {}/s", human_count(rate));
        }
        if let Some(eta) = self.eta_secs.filter(|_| !self.finished) {
            line += &format!("  ETA {}", human_secs(eta));
        }
        if self.dead_lettered > 0 {
            line += &format!("  dead-lettered {}", self.dead_lettered);
        }
        if !self.failures.is_empty() {
            let reasons: Vec<String> = self
                .failures
                .iter()
                .map(|(reason, n)| format!("{reason} {n}"))
                .collect();
            line += &format!("  failures: {}", reasons.join(", "));
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_one_line_view_has_rate_eta_and_failures_by_reason_while_running() {
        let mut v = ProgressView {
            job_id: "j".into(),
            kind: "sieve".into(),
            state: "running".into(),
            chunks_total: 10,
            chunks_done: 4,
            seeds_total: 1000,
            seeds_done: 400,
            rate_seeds_per_sec: Some(2_000_000.0),
            eta_secs: Some(90.0),
            failures: [
                ("backend_error".to_string(), 2),
                ("redis_unavailable".to_string(), 1),
            ]
            .into(),
            ..Default::default()
        };
        let line = v.to_line();
        assert!(
            line.contains("40.0%") && line.contains("chunks 4/10"),
            "{line}"
        );
        assert!(
            line.contains(&format!("{}/s", human_count(2_000_000.0))),
            "{line}"
        );
        assert!(
            line.contains(&format!("ETA {}", human_secs(90.0))),
            "{line}"
        );
        assert!(
            line.contains("failures: backend_error 2, redis_unavailable 1"),
            "{line}"
        );
        v.finished = true;
        assert!(!v.to_line().contains("ETA"), "no ETA once finished");
    }

    #[test]
    fn rate_and_eta_from_counts() {
        assert_eq!(rate_and_eta(0, 100, 5.0), (None, None));
        let (rate, eta) = rate_and_eta(50, 150, 10.0);
        assert_eq!(rate, Some(5.0));
        assert_eq!(eta, Some(20.0));
    }

    #[test]
    fn human_formats() {
        assert_eq!(human_secs(42.4), "42s");
        assert_eq!(human_secs(185.0), "3m05s");
        assert_eq!(human_secs(3725.0), "1h02m");
        assert_eq!(human_count(12_345_678.0), "12.3M");
        assert_eq!(human_count(999.0), "999");
    }

    #[test]
    fn text_names_dead_lettered_chunks() {
        let v = ProgressView {
            job_id: "j".into(),
            kind: "sieve".into(),
            family: Some("mt19937".into()),
            state: "finished_with_failures".into(),
            finished: true,
            priority: Some(seedq_protocol::Priority::Low),
            chunks_total: 4,
            chunks_published: 4,
            chunks_done: 3,
            seeds_total: 400,
            seeds_done: 300,
            survivors: 2,
            dead_lettered: 1,
            dead_lettered_chunks: vec![2],
            failures: [("invalid spec".to_string(), 1)].into_iter().collect(),
            chunks_by_node: Default::default(),
            verification: Verification {
                verified: 5,
                mismatches: 1,
                corrected: 1,
                redone: 3,
                unverified: 0,
                pending: 2,
            },
            rate_seeds_per_sec: Some(100.0),
            eta_secs: Some(1.0),
            created_at_ms: 0,
            elapsed_secs: Some(3.0),
        };
        let text = v.to_text();
        assert!(text.contains("dead-lettered chunks: 1 [2]"), "{text}");
        assert!(text.contains("invalid spec"), "{text}");
        assert!(!text.contains("ETA"), "no ETA once finished: {text}");
        assert!(
            text.contains("priority low (4/4 chunks published)"),
            "{text}"
        );
        assert!(
            text.contains(
                "verified 5 chunks, 1 mismatches (1 corrected, 3 redone), 0 unverified, 2 checks pending"
            ),
            "{text}"
        );
    }

    #[test]
    fn views_of_running_and_failed_jobs() {
        let mut p = JobProgress {
            job_id: "j".into(),
            kind: "sieve".into(),
            chunks_total: 4,
            chunks_done: 2,
            seeds_total: 400,
            seeds_done: 200,
            started_at_ms: Some(1_000),
            created_at_ms: 500,
            ..Default::default()
        };
        let v = view(&p, None, 11_000);
        assert_eq!(v.state, "running");
        assert_eq!(v.rate_seeds_per_sec, Some(20.0));
        assert_eq!(v.eta_secs, Some(10.0));
        p.chunks_done = 3;
        p.dead_lettered.insert("c3".into(), "invalid_spec".into());
        p.finished_at_ms = Some(12_000);
        let v = view(&p, None, 20_000);
        assert_eq!(v.state, "finished_with_failures");
        assert_eq!(v.dead_lettered_chunks, vec![3]);
        assert!(v.finished);
    }
}
