#![warn(missing_docs)]
//! seedq-protocol: the contract between the producer, the consumers, the operator tools and the
//! stores. Nothing else defines a wire format, a queue name or a Redis key.
//!
//! # Overview
//!
//! | module | what |
//! |---|---|
//! | [`job`] | [`Job`]: the job-level record stored in Redis once per job: id, [`JobSpec`] (sieve, correlation, analysis or a script batch), the total seeds ([`JobSeeds`]), the chunk plan, creation time. [`Job::chunk_seeds`] is THE chunk plan every party uses. |
//! | [`chunk`] | [`ChunkMessage`] (one unit of seed work on `<ns>.seeds`) and [`ChunkResult`] (what a consumer writes to Redis for it). |
//! | [`script`] | [`ScriptJob`] (one script task on `<ns>.scripts` or `<ns>.scripts.<node>`) and [`ScriptResult`]. |
//! | [`status`] | records read back from Redis: [`JobProgress`], [`NodeHeartbeat`], [`SeedRecord`], [`FailureEvent`]. |
//! | [`signing`] | [`JobKey`]: HMAC-SHA256 signatures of message bodies (`x-seedq-signature`). |
//! | [`reason`] | [`FailureReason`]: the closed set of failure reasons and their stable texts. |
//! | [`schedule`] | [`Priority`] and `[scheduler]` ([`SchedulerConfig`]): how seed chunks are published in windows, most urgent job first. |
//! | [`topology`] | queue / exchange names for a namespace ([`Topology`]), message header names ([`headers`]), queue arguments. |
//! | [`keys`] | the Redis key schema. |
//! | [`config`] | [`ClusterConfig`]: `config/cluster.toml` (nodes, GPUs, profiles, chunking, retry, TTLs). |
//!
//! # Wire rules
//!
//! * Every message is JSON with a `v` field ([`PROTOCOL_VERSION`]). A reader refuses a higher
//!   major version it does not know ([`check_version`]); fields are only ever added, with serde
//!   defaults, so an older message stays readable.
//! * A chunk message carries the job id, chunk index, its seeds and the attempt number; it does
//!   NOT normally carry the spec. The consumer loads the [`Job`] from Redis once per job and caches
//!   it (the job is immutable once created). Why: a 2^32-seed job over 512 draws has thousands of
//!   chunks; embedding the ~3 KB spec in each would multiply the quorum queue's memory and
//!   replication traffic and the per-chunk JSON parse, for no gain, because a result can only be
//!   applied to a job that exists in Redis anyway (progress needs the job's totals). The optional
//!   [`ChunkMessage::spec`] field lets a chunk carry its spec (self-contained, for tests and
//!   hand-made payloads): the consumer refuses the chunk (dead letter with the reason) when an
//!   embedded spec is invalid, but runs the STORED job's spec, which is authoritative, and the job
//!   must exist in Redis for the result to be applied.
//! * Headers (`x-seedq-job`, `x-seedq-kind`, `x-seedq-family`, `x-seedq-seeds`,
//!   `x-seedq-attempt`, `x-seedq-error`) describe each message for the management UI; they are
//!   informative only, the body is authoritative.
//! * Exactly-once results: the done set in Redis is the guard (see `seedq-store`); chunk members
//!   of the done set are [`chunk_member`] strings, script task members [`script_member`].
//!
//! # Namespaces
//!
//! Every queue, exchange and key starts with a namespace (default [`DEFAULT_NAMESPACE`]), so
//! tests and several clusters can share one broker and one Redis.

pub mod check;
pub mod chunk;
pub mod config;
pub mod job;
pub mod keys;
pub mod reason;
pub mod schedule;
pub mod script;
pub mod signing;
pub mod status;
pub mod survivors;
pub mod tls;
pub mod topology;

pub use check::{result_digest, CheckKind, CheckOrder, Eligibility, SlotRef};
pub use chunk::{ChunkMessage, ChunkResult, FlaggedSeed};
pub use config::{
    BrokerSettings, ChunkingConfig, ClusterConfig, ConfigError, GpuConfig, GpuProfile, JobsConfig,
    NodeBackend, NodeConfig, RetryConfig,
};
pub use job::{
    fresh_epoch, sieve_work_per_seed, throughput_family_key, Job, JobKind, JobSeeds, JobSpec,
    ScriptBatch,
};
pub use reason::{FailureReason, ReasonClass};
pub use schedule::{Priority, SchedulerConfig};
pub use script::{ScriptJob, ScriptOutput, ScriptResult};
pub use signing::{JobKey, SigningError};
pub use status::{
    FailureEvent, JobProgress, NodeHeartbeat, QuarantineReason, SeedRecord, SlotQuarantine,
    SlotState,
};
pub use tls::{CaCert, CaFileError};
pub use topology::{headers, Topology};

/// Version written in the `v` field of every message this build produces, but for the jobs of
/// [`OFFSET_RANGE_VERSION`].
pub const PROTOCOL_VERSION: u32 = 1;

/// The `v` of a sieve job that searches an offset range: a build that only knows version 1
/// would ignore `offset_max` and search one offset, so it must refuse the job instead.
pub const OFFSET_RANGE_VERSION: u32 = 2;

/// Highest `v` this build reads.
pub const MAX_READ_VERSION: u32 = OFFSET_RANGE_VERSION;

/// Namespace used when none is given (`--namespace` / `SEEDQ_NAMESPACE`).
pub const DEFAULT_NAMESPACE: &str = "seedq";

/// Default broker URL (`--amqp-url` / `SEEDQ_AMQP_URL`).
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Default Redis URL (`--redis-url` / `SEEDQ_REDIS_URL`).
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379/";

/// Errors raised when a message or identifier breaks the contract.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The body is not JSON of the expected shape (syntax, missing field, wrong type).
    #[error("malformed message: {0}")]
    Malformed(#[from] serde_json::Error),
    /// The `v` field is above [`MAX_READ_VERSION`]: written by a newer build.
    #[error("message version {found} is newer than this build understands (max {MAX_READ_VERSION}); upgrade this binary")]
    UnsupportedVersion {
        /// The `v` the message carries.
        found: u32,
    },
    /// An id or name that [`validate_identifier`] refuses.
    #[error("invalid {what} '{value}': use 1-128 characters from [A-Za-z0-9._-]")]
    InvalidIdentifier {
        /// What the identifier names (`job id`, `task id`, `node name`, `namespace`, ...).
        what: &'static str,
        /// The refused value.
        value: String,
    },
    /// A job record whose structure is inconsistent (no seeds or tasks, chunk plan mismatch,
    /// duplicate task ids, an oversized final chunk); the message says which.
    #[error("invalid job: {0}")]
    InvalidJob(String),
    /// The job's sieve spec or seed range fails [`seedq_core::SieveSpec`] validation.
    #[error("invalid spec: {0}")]
    InvalidSpec(#[from] seedq_core::SieveError),
}

/// Refuses messages from a newer protocol major version.
pub fn check_version(v: u32) -> Result<(), ProtocolError> {
    if v > MAX_READ_VERSION {
        return Err(ProtocolError::UnsupportedVersion { found: v });
    }
    Ok(())
}

/// Checks a job id, task id, node name or namespace: 1-128 chars of `[A-Za-z0-9._-]`.
///
/// Such names appear in queue names and Redis keys, so they must not contain separators
/// (`:` in keys) or characters the management UI would need to escape.
pub fn validate_identifier(what: &'static str, value: &str) -> Result<(), ProtocolError> {
    let ok = !value.is_empty()
        && value.len() <= 128
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ProtocolError::InvalidIdentifier {
            what,
            value: value.to_string(),
        })
    }
}

/// The done-set member for seed chunk `index` (`c<index>`).
pub fn chunk_member(index: u64) -> String {
    format!("c{index}")
}

/// The done-set member for script task `task_id` (`t:<task_id>`).
pub fn script_member(task_id: &str) -> String {
    format!("t:{task_id}")
}

/// This machine's name: a consumer's default node name and the host in a producer's connection
/// name. `$HOSTNAME` is a shell variable that is often not exported, so the kernel's name comes
/// first.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

/// Milliseconds since the Unix epoch (what every `*_ms` timestamp field holds).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers() {
        assert!(validate_identifier("job id", "job-1_a.b").is_ok());
        assert!(validate_identifier("job id", "").is_err());
        assert!(validate_identifier("job id", "a:b").is_err());
        assert!(validate_identifier("job id", "a b").is_err());
        assert!(validate_identifier("job id", &"x".repeat(129)).is_err());
    }

    #[test]
    fn versions() {
        assert!(check_version(1).is_ok());
        assert!(check_version(OFFSET_RANGE_VERSION).is_ok());
        assert!(check_version(MAX_READ_VERSION + 1).is_err());
    }
}
