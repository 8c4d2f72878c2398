//! Scheduling vocabulary: job [`Priority`] and the cluster's `[scheduler]` settings.
//!
//! Seed chunks are not all published when a job is enqueued: a job is registered with the
//! scheduler (Redis, `keys::sched_*`) and its chunks are published in small windows, the next one
//! whenever work settles, so that the shared `<ns>.seeds` queue only ever holds about what the
//! slots can take next. Which job's chunk goes next is decided at that moment: the highest
//! priority first, round robin among the jobs of one priority. `docs/scheduling.md` has the
//! design and its guarantees.

use serde::{Deserialize, Serialize};

/// How urgent a job is. A slot always gets the highest-priority work that is waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Ahead of everything else (a quick trial while a long sieve runs).
    High,
    /// The default.
    Normal,
    /// Only when nothing else waits (a background sweep).
    Low,
}

impl Priority {
    /// Every priority, most urgent first.
    pub const ALL: [Priority; 3] = [Priority::High, Priority::Normal, Priority::Low];

    /// 0 for the most urgent: the scheduler's ordering key.
    pub fn rank(self) -> u8 {
        match self {
            Priority::High => 0,
            Priority::Normal => 1,
            Priority::Low => 2,
        }
    }

    /// The priority of a rank ([`Priority::rank`]); `None` outside 0..=2.
    pub fn from_rank(rank: u8) -> Option<Priority> {
        Priority::ALL.get(usize::from(rank)).copied()
    }

    /// The stable text (`high`, `normal`, `low`).
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }
}

impl std::fmt::Display for Priority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown priority name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown priority '{0}': use high, normal or low")]
pub struct UnknownPriority(pub String);

impl std::str::FromStr for Priority {
    type Err = UnknownPriority;

    fn from_str(s: &str) -> Result<Priority, UnknownPriority> {
        Priority::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownPriority(s.to_string()))
    }
}

/// `[scheduler]` in cluster.toml.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SchedulerConfig {
    /// The priority of a job enqueued without `--priority`.
    pub default_priority: Priority,
    /// Chunks kept waiting in the queue beyond the ones the slots hold, per live slot. Larger
    /// keeps slots fed across publish round trips; smaller lets a new high-priority job start
    /// sooner (it waits behind at most these).
    pub queued_per_slot: f64,
    /// Chunks kept waiting at least, whatever the slot count (also what a job publishes at once
    /// when no consumer is alive yet).
    pub min_queued: u64,
    /// A claimed window not confirmed by the broker after this long is published again by
    /// whoever runs the scheduler next (its publisher died between the claim and the confirm).
    pub claim_stale_secs: u64,
    /// The fraction of a seed job's chunks run a second time on another node or backend and
    /// compared (`--verify-fraction`; 0 turns verification off). Drawn at random as each result
    /// is applied, so no slot knows in advance which of its chunks are checked.
    pub verify_fraction: f64,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            default_priority: Priority::Normal,
            queued_per_slot: 0.5,
            min_queued: 2,
            claim_stale_secs: 30,
            verify_fraction: 0.01,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_parse_and_rank() {
        assert_eq!("HIGH".parse::<Priority>().unwrap(), Priority::High);
        assert_eq!(" low".parse::<Priority>().unwrap(), Priority::Low);
        let err = "urgent".parse::<Priority>().unwrap_err().to_string();
        assert!(err.contains("high, normal or low"), "{err}");
        for p in Priority::ALL {
            assert_eq!(Priority::from_rank(p.rank()), Some(p));
        }
        assert_eq!(Priority::from_rank(3), None);
        assert!(Priority::High < Priority::Low, "Ord follows urgency");
    }

    #[test]
    fn scheduler_section_reads_from_toml() {
        let cfg: SchedulerConfig =
            toml::from_str("default_priority = \"low\"\nmin_queued = 2").unwrap();
        assert_eq!(cfg.default_priority, Priority::Low);
        assert_eq!(cfg.min_queued, 2);
        assert_eq!(cfg.claim_stale_secs, 30);
    }
}
