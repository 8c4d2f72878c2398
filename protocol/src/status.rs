//! Records read back from Redis by operator tools: job progress, node heartbeats, seed records,
//! failure events. Written by `seedq-store`; shapes fixed here so every reader agrees.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Progress of one job (`seedq-producer status/wait`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct JobProgress {
    /// The job's id.
    pub job_id: String,
    /// [`crate::JobKind::as_str`] of the job (empty if the totals hash lacks it).
    pub kind: String,
    /// Chunks (or script tasks) in the job's plan.
    pub chunks_total: u64,
    /// Chunks whose result has been applied (each counted once).
    pub chunks_done: u64,
    /// `u128` because a 64-bit family's full space has 2^64 seeds.
    pub seeds_total: u128,
    /// Seeds of the applied chunks.
    pub seeds_done: u64,
    /// Distinct survivor (or flagged) seeds so far.
    pub survivors: u64,
    /// Failure count by reason (each failed attempt counts once).
    pub failures: BTreeMap<String, u64>,
    /// Chunk members (`c<index>` / `t:<task>`) that ended in the dead-letter queue, with reason.
    pub dead_lettered: BTreeMap<String, String>,
    /// Chunks completed per node name.
    pub chunks_by_node: BTreeMap<String, u64>,
    /// Sum of the chunks' kernel durations, seconds (busy time, not wall time).
    pub busy_secs: f64,
    /// The job's creation time, ms since the epoch.
    pub created_at_ms: u64,
    /// First applied result, if any.
    pub started_at_ms: Option<u64>,
    /// Last applied result or failure.
    pub updated_at_ms: Option<u64>,
    /// Set when every chunk is done or dead-lettered.
    pub finished_at_ms: Option<u64>,
    /// The job has been cancelled (its remaining chunks are skipped).
    pub cancelled: bool,
    /// The scheduler priority (`None` for jobs not registered with the scheduler).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<crate::Priority>,
    /// Chunks (a script batch's tasks) published so far: the scheduler's cursor.
    #[serde(default)]
    pub published: u64,
    /// Verification by redundancy (`crate::check`): chunks whose second run matched.
    #[serde(default)]
    pub verified: u64,
    /// Verified chunks whose two runs differed (each decided by the CPU reference).
    #[serde(default)]
    pub mismatches: u64,
    /// Applied results replaced by a re-decided one (a mismatch's loser, or a redo that differed).
    #[serde(default)]
    pub corrected: u64,
    /// Chunks re-run because the slot that completed them was found wrong.
    #[serde(default)]
    pub redone: u64,
    /// Verifications no other slot could run (a cluster of one slot) or that failed for good.
    #[serde(default)]
    pub unverified: u64,
    /// Checks (verify or redo) not yet settled; the job is not finished while any is pending.
    #[serde(default)]
    pub checks_pending: u64,
}

impl JobProgress {
    /// Every chunk is accounted for (done or dead-lettered).
    pub fn finished(&self) -> bool {
        self.finished_at_ms.is_some()
    }

    /// Finished with every chunk done and none dead-lettered.
    pub fn succeeded(&self) -> bool {
        self.chunks_done == self.chunks_total && self.dead_lettered.is_empty()
    }

    /// Seeds per second over the job's active wall time so far.
    pub fn seeds_per_sec(&self) -> Option<f64> {
        let start = self.started_at_ms?;
        let end = self.finished_at_ms.or(self.updated_at_ms)?;
        let secs = end.saturating_sub(start) as f64 / 1000.0;
        (secs > 0.0).then(|| self.seeds_done as f64 / secs)
    }
}

/// What a slot is doing, in a heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlotState {
    /// `gpu0`, `cpu1`, `scripts`.
    pub slot: String,
    /// Description of the slot's backend (as in [`crate::ChunkResult::backend`]).
    pub backend: String,
    /// Chunk in flight as `<job>/c<index>` (or `<batch>/t:<task>`), if busy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub busy_with: Option<String>,
    /// Chunks this slot has completed since the node started.
    pub chunks_done: u64,
    /// Set while the slot is out of service (a failed known-answer self-test, or backend errors
    /// in a row): it takes no seed work until its retried self-test passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantined: Option<SlotQuarantine>,
}

/// Why a seed slot was taken out of service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuarantineReason {
    /// Its backend's answer to the known-answer chunk differed from the reference (or the run
    /// failed).
    SelfTestFailed,
    /// Its backend failed this many chunks in a row (`--quarantine-after-errors`).
    BackendErrors,
    /// A chunk it completed was run again elsewhere and the CPU reference found its result wrong.
    VerifyMismatch,
}

impl QuarantineReason {
    /// The name in heartbeats, metrics labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            QuarantineReason::SelfTestFailed => "self_test_failed",
            QuarantineReason::BackendErrors => "backend_errors",
            QuarantineReason::VerifyMismatch => "verify_mismatch",
        }
    }
}

impl std::fmt::Display for QuarantineReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A quarantined slot's record, in its [`SlotState`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotQuarantine {
    /// Why it was quarantined.
    pub reason: QuarantineReason,
    /// What failed (the family and the difference, or the backend's error).
    pub detail: String,
    /// When the slot was quarantined, ms since the epoch.
    pub since_ms: u64,
    /// When its self-test runs again, ms since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_test_at_ms: Option<u64>,
    /// Self-tests failed since it was quarantined (the first one included, if that is the cause).
    #[serde(default)]
    pub failed_tests: u32,
}

/// A node's heartbeat (`keys::heartbeat`, with a TTL).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeHeartbeat {
    /// The node's name (its `[[nodes]]` entry in the cluster config).
    pub node: String,
    /// `cpu`, `cuda`, `hip`.
    pub backend: String,
    /// GPU names / models the node serves (empty on CPU nodes).
    #[serde(default)]
    pub gpus: Vec<String>,
    /// Model used for throughput keys (`cpu` on CPU nodes).
    #[serde(default)]
    pub gpu_model: String,
    /// Every seed slot (and the scripts slot) with what it is doing.
    pub slots: Vec<SlotState>,
    /// Slots with a chunk in flight.
    pub busy_slots: u32,
    /// Chunks the node has completed since it started.
    pub chunks_done: u64,
    /// Chunk attempts that failed on this node since it started.
    pub chunks_failed: u64,
    /// Script jobs running now.
    #[serde(default)]
    pub scripts_running: u32,
    /// Script jobs the node runs at once (`max_script_jobs`).
    #[serde(default)]
    pub script_limit: u32,
    /// The node holds a job key and runs only signed jobs (`seedq_protocol::signing`): a
    /// producer without the key refuses to enqueue while such a node is alive.
    #[serde(default)]
    pub signed_jobs: bool,
    /// The consumer binary's version (`CARGO_PKG_VERSION`).
    pub version: String,
    /// The consumer's process id.
    pub pid: u32,
    /// When the consumer process started, ms since the epoch.
    pub started_at_ms: u64,
    /// When this heartbeat was written, ms since the epoch.
    pub at_ms: u64,
}

/// One survivor (or flagged seed) as stored: the seed and its JSON record
/// (a `seedq_core::Survivor` for sieve jobs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedRecord {
    /// The seed (the record's field in the survivors hash).
    pub seed: u64,
    /// The record as stored: a `Survivor` or a `FlaggedRecord` as JSON.
    pub json: String,
}

/// One failed attempt, as kept in the job's failure log (newest first, capped).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailureEvent {
    /// `c<index>` or `t:<task>`.
    pub member: String,
    /// Why, counted per job (e.g. `invalid_spec`, `timeout`, `cancelled`).
    pub reason: crate::FailureReason,
    /// Longer human explanation.
    #[serde(default)]
    pub detail: String,
    /// The attempt was the last: the member went to the dead-letter queue and counts as settled.
    pub dead_lettered: bool,
    /// The node that saw the failure (empty when not known).
    #[serde(default)]
    pub node: String,
    /// The attempt that failed (0 when not known).
    #[serde(default)]
    pub attempt: u32,
    /// When it happened, ms since the epoch.
    pub at_ms: u64,
}
