//! Records read back from Redis by operator tools: job progress, node heartbeats, seed records,
//! failure events. Written by `seedq-store`; shapes fixed here so every reader agrees.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Progress of one job (`seedq-producer status/wait`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct JobProgress {
    pub job_id: String,
    pub kind: String,
    pub chunks_total: u64,
    pub chunks_done: u64,
    /// `u128` because a 64-bit family's full space has 2^64 seeds.
    pub seeds_total: u128,
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
    pub created_at_ms: u64,
    /// First applied result, if any.
    pub started_at_ms: Option<u64>,
    /// Last applied result or failure.
    pub updated_at_ms: Option<u64>,
    /// Set when every chunk is done or dead-lettered.
    pub finished_at_ms: Option<u64>,
    pub cancelled: bool,
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
    pub backend: String,
    /// Chunk in flight as `<job>/c<index>` (or `<batch>/t:<task>`), if busy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub busy_with: Option<String>,
    pub chunks_done: u64,
}

/// A node's heartbeat (`keys::heartbeat`, with a TTL).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeHeartbeat {
    pub node: String,
    /// `cpu`, `cuda`, `hip`.
    pub backend: String,
    /// GPU names / models the node serves (empty on CPU nodes).
    #[serde(default)]
    pub gpus: Vec<String>,
    /// Model used for throughput keys (`cpu` on CPU nodes).
    #[serde(default)]
    pub gpu_model: String,
    pub slots: Vec<SlotState>,
    pub busy_slots: u32,
    pub chunks_done: u64,
    pub chunks_failed: u64,
    /// Script jobs running now and the node's limit.
    #[serde(default)]
    pub scripts_running: u32,
    #[serde(default)]
    pub script_limit: u32,
    pub version: String,
    pub pid: u32,
    pub started_at_ms: u64,
    pub at_ms: u64,
}

/// One survivor (or flagged seed) as stored: the seed and its JSON record
/// (a `seedq_core::Survivor` for sieve jobs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedRecord {
    pub seed: u64,
    pub json: String,
}

/// One failed attempt, as kept in the job's failure log (newest first, capped).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailureEvent {
    /// `c<index>` or `t:<task>`.
    pub member: String,
    pub reason: String,
    #[serde(default)]
    pub detail: String,
    pub dead_lettered: bool,
    #[serde(default)]
    pub node: String,
    #[serde(default)]
    pub attempt: u32,
    pub at_ms: u64,
}
