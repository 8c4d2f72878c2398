//! Seed-work messages: [`ChunkMessage`] on `<ns>.seeds` and the [`ChunkResult`] a consumer writes.

use serde::{Deserialize, Serialize};

use seedq_core::analysis::{FlaggedRecord, Summary};
use seedq_core::SeedSet;

use crate::survivors::SieveCounts;

use crate::job::{JobKind, JobSpec};
use crate::{ProtocolError, PROTOCOL_VERSION};

/// One unit of seed work. The body of every message on `<ns>.seeds`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkMessage {
    /// Protocol version that wrote it ([`PROTOCOL_VERSION`]).
    pub v: u32,
    /// The job this chunk belongs to; its [`crate::Job`] is loaded from Redis by this id.
    pub job_id: String,
    /// Redundant with the job's spec; lets a consumer route or refuse without loading the job.
    pub kind: JobKind,
    /// Chunk index in the job's plan: `0..chunk_count`. The done-set member is `c<chunk>`.
    pub chunk: u64,
    /// The seeds to test: must equal `job.chunk_seeds(chunk)` (a consumer may check).
    pub seeds: SeedSet,
    /// 1 for the first publish; the retry path republishes with `attempt + 1`.
    #[serde(default = "one")]
    pub attempt: u32,
    /// Optional embedded spec (self-contained chunk). Normally absent: the consumer loads the
    /// job from Redis once and caches it. See the crate docs for why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<JobSpec>,
    /// The job's epoch ([`crate::Job::epoch`]): a chunk of another life of the job id is stale.
    #[serde(default)]
    pub epoch: u64,
    /// Set on a chunk run a second time (verification by redundancy, `crate::check`): what to
    /// do with its result and which slot's result it checks. Absent on first runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<crate::check::CheckOrder>,
}

fn one() -> u32 {
    1
}

impl ChunkMessage {
    /// A first-attempt chunk message at this build's version, without an embedded spec.
    pub fn new(job_id: impl Into<String>, kind: JobKind, chunk: u64, seeds: SeedSet) -> Self {
        ChunkMessage {
            v: PROTOCOL_VERSION,
            job_id: job_id.into(),
            kind,
            chunk,
            seeds,
            attempt: 1,
            spec: None,
            epoch: 0,
            check: None,
        }
    }

    /// The message body as published.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("chunk message serializes")
    }

    /// Parses a message body; checks the version and the job id.
    pub fn from_json(body: &[u8]) -> Result<ChunkMessage, ProtocolError> {
        let msg: ChunkMessage = serde_json::from_slice(body)?;
        crate::check_version(msg.v)?;
        crate::validate_identifier("job id", &msg.job_id)?;
        Ok(msg)
    }

    /// The done-set member for this chunk.
    pub fn member(&self) -> String {
        crate::chunk_member(self.chunk)
    }

    /// `x-seedq-seeds` header text: `[start,end)` for a range, `list(n)[first..last]` for a list.
    pub fn seeds_label(&self) -> String {
        seeds_label(&self.seeds)
    }
}

/// Human text for a seed set, as shown in headers and logs.
pub fn seeds_label(seeds: &SeedSet) -> String {
    match seeds {
        SeedSet::Range { start, end } => format!("[{start},{end})"),
        SeedSet::List(l) => match (l.first(), l.last()) {
            (Some(a), Some(b)) => format!("list({})[{a}..{b}]", l.len()),
            _ => "list(0)".to_string(),
        },
    }
}

/// A seed flagged by a correlation or analysis job: the seed plus its record. Stored
/// deduplicated by seed like sieve survivors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlaggedSeed {
    /// The seed (also in `record`; kept at the top for readers of the wire form).
    pub seed: u64,
    /// Every statistic of the seed's stream.
    pub record: FlaggedRecord,
}

/// What a consumer writes for one chunk (applied once per chunk by the store).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkResult {
    /// Protocol version that wrote it.
    pub v: u32,
    /// The chunk's job.
    pub job_id: String,
    /// The chunk's index in the job's plan (done-set member `c<chunk>`).
    pub chunk: u64,
    /// Attempt that produced it (informative).
    pub attempt: u32,
    /// The job's epoch from the chunk message: the store applies it only to that life of the job.
    #[serde(default)]
    pub epoch: u64,
    /// Seeds examined (the size of the chunk's seed set); added to the job's `seeds_done`.
    pub seeds_tested: u64,
    /// Sieve jobs: the survivors as compact pieces ([`crate::survivors`]), in seed order.
    /// Not serialised: pieces go to Redis as they are, never through JSON.
    #[serde(skip)]
    pub survivor_pieces: Vec<Vec<u8>>,
    /// Sieve jobs: how many survivors the pieces (or, for count-only jobs, the counts) hold.
    #[serde(default)]
    pub survivor_count: u64,
    /// Count-only sieve jobs: the chunk's survivor counts and match histograms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counts: Option<SieveCounts>,
    /// Correlation / analysis jobs: the seeds beyond the significance threshold.
    #[serde(default)]
    pub flagged: Vec<FlaggedSeed>,
    /// Correlation / analysis jobs: the chunk summary (stored per chunk, aggregated on read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<Summary>,
    /// Wall time of the kernel call for this chunk, seconds.
    pub duration_secs: f64,
    /// Work units per second (seeds x skips x draws x passes / duration) for the learned
    /// throughput EMA; `None` when the chunk was too short to be a meaningful sample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub units_per_sec: Option<f64>,
    /// The node that ran the chunk (counted in the job's per-node chunk totals).
    pub node: String,
    /// Slot name, e.g. `gpu0` or `cpu1`.
    pub slot: String,
    /// `SieveBackend::describe()` of the slot.
    pub backend: String,
    /// GPU model of the slot (throughput key), e.g. `RTX 3080 Ti` or `cpu`.
    #[serde(default)]
    pub gpu_model: String,
    /// When the chunk finished, ms since the epoch; becomes the job's `updated_at_ms`.
    pub finished_at_ms: u64,
}

impl ChunkResult {
    /// `(seed, record JSON)` pairs for the flagged-seeds hash (correlation / analysis jobs;
    /// sieve survivors travel as [`ChunkResult::survivor_pieces`]).
    pub fn seed_records(&self) -> Vec<(u64, String)> {
        let mut out: Vec<(u64, String)> = Vec::with_capacity(self.flagged.len());
        out.extend(self.flagged.iter().map(|f| {
            (
                f.seed,
                serde_json::to_string(&f.record).expect("flagged record serializes"),
            )
        }));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_message_round_trip_and_defaults() {
        let m = ChunkMessage::new(
            "job-1",
            JobKind::Sieve,
            7,
            SeedSet::Range { start: 70, end: 80 },
        );
        let back = ChunkMessage::from_json(&m.to_json()).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.member(), "c7");
        assert_eq!(back.seeds_label(), "[70,80)");
        // attempt defaults to 1 and spec to None.
        let minimal = br#"{"v":1,"job_id":"j","kind":"sieve","chunk":0,"seeds":{"list":[3,4]}}"#;
        let m = ChunkMessage::from_json(minimal).unwrap();
        assert_eq!(m.attempt, 1);
        assert_eq!(m.seeds, SeedSet::List(vec![3, 4]));
    }

    #[test]
    fn malformed_and_future_messages_are_refused() {
        assert!(ChunkMessage::from_json(b"{not json").is_err());
        assert!(ChunkMessage::from_json(
            br#"{"v":99,"job_id":"j","kind":"sieve","chunk":0,"seeds":{"list":[]}}"#
        )
        .is_err());
        assert!(ChunkMessage::from_json(
            br#"{"v":1,"job_id":"a:b","kind":"sieve","chunk":0,"seeds":{"list":[]}}"#
        )
        .is_err());
    }
}
