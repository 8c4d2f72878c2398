//! Why a chunk or script task failed: one closed set of reasons, shared by the consumer (which
//! decides them), the `x-seedq-error` header of dead letters, the Redis failure records, the
//! consumer's metrics and the producer's `status` and `dlq` views.
//!
//! The text of each reason is part of the contract: operators grep for it, dashboards count by
//! it, and records written by an older or newer build must still read. So the texts never change,
//! a reason is only ever added, and an unknown text reads as [`FailureReason::Other`] instead of
//! failing the whole record.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How a reason is settled, in broad strokes (the consumer's settlement rules use it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReasonClass {
    /// The message can never run as sent: dead-letter at once.
    Refused,
    /// The work failed and may succeed on another attempt.
    Retryable,
    /// A store, broker or node state outside the message's control: it waits, using no attempt.
    Environment,
    /// The message is settled without running (cancelled, or a limit was reached).
    Settled,
}

macro_rules! reasons {
    ($( $(#[$doc:meta])* $variant:ident = $text:literal => $class:ident, )*) => {
        /// One failure reason. See the module doc for why the set is closed and the texts stable.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum FailureReason {
            $( $(#[$doc])* $variant, )*
        }

        impl FailureReason {
            /// Every reason, in declaration order.
            pub const ALL: &'static [FailureReason] = &[$(FailureReason::$variant,)*];

            /// The stable text (`x-seedq-error`, Redis records, metrics labels).
            pub fn as_str(self) -> &'static str {
                match self { $(FailureReason::$variant => $text,)* }
            }

            /// How this reason is settled.
            pub fn class(self) -> ReasonClass {
                match self { $(FailureReason::$variant => ReasonClass::$class,)* }
            }

            /// The reason with this exact text, if any.
            pub fn parse(text: &str) -> Option<FailureReason> {
                match text { $($text => Some(FailureReason::$variant),)* _ => None }
            }
        }
    };
}

reasons! {
    /// The body is not JSON.
    MalformedJson = "malformed_json" => Refused,
    /// JSON, but not a seedq message of the queue's kind.
    MalformedMessage = "malformed_message" => Refused,
    /// A protocol version this build does not know.
    UnsupportedVersion = "unsupported_version" => Refused,
    /// A script message that breaks the contract (e.g. no expected output).
    InvalidMessage = "invalid_message" => Refused,
    /// A message on a queue that does not carry its kind.
    WrongQueue = "wrong_queue" => Refused,
    /// A job or batch id that is not a valid identifier.
    InvalidJobId = "invalid_job_id" => Refused,
    /// The job's spec cannot run.
    InvalidSpec = "invalid_spec" => Refused,
    /// A sieve with an empty draw window.
    EmptyWindow = "empty_window" => Refused,
    /// A sieve threshold outside (0, 1].
    InvalidThreshold = "invalid_threshold" => Refused,
    /// A PRNG family this build does not know.
    UnknownFamily = "unknown_family" => Refused,
    /// Seeds outside the family's seed space.
    SeedsOutOfRange = "seeds_out_of_range" => Refused,
    /// A chunk with no seeds.
    EmptySeedRange = "empty_seed_range" => Refused,
    /// A chunk that does not match its job's plan (kind, index or seeds).
    ChunkMismatch = "chunk_mismatch" => Refused,
    /// The job or batch is not in Redis (never created, expired, purged).
    UnknownJob = "unknown_job" => Refused,
    /// A message from an earlier life of a reused job id (another epoch), or of a task the job
    /// does not have: it touches nothing of the live job.
    StaleMessage = "stale_message" => Refused,
    /// The stored job does not parse (corrupt, or written by a newer build).
    CorruptJob = "corrupt_job" => Refused,
    /// Redis refused a command for a reason that will not pass by waiting.
    StoreError = "store_error" => Refused,
    /// The broker's delivery limit was reached: every node that took it stopped while it ran.
    DeliveryLimit = "delivery_limit" => Settled,
    /// The job was cancelled: the chunk or task was skipped.
    Cancelled = "cancelled" => Settled,
    /// The backend failed while running the chunk.
    BackendError = "backend_error" => Retryable,
    /// Redis unreachable or not accepting writes (down, OOM, BUSY, LOADING, READONLY...).
    RedisUnavailable = "redis_unavailable" => Environment,
    /// The task's GPU pin names a GPU this node does not have.
    GpuUnavailable = "gpu_unavailable" => Refused,
    /// A script or output path outside the node's script root.
    PathEscapesRoot = "path_escapes_root" => Refused,
    /// The script does not exist under the script root.
    ScriptNotFound = "script_not_found" => Refused,
    /// The interpreter could not be started.
    SpawnFailed = "spawn_failed" => Retryable,
    /// The script ran past its timeout and was killed.
    Timeout = "timeout" => Retryable,
    /// The script exited non-zero.
    ExitStatus = "exit_status" => Retryable,
    /// The script was killed by a signal.
    Signalled = "signalled" => Retryable,
    /// The script wrote no expected output.
    MissingOutput = "missing_output" => Retryable,
    /// The expected output predates the run.
    StaleOutput = "stale_output" => Retryable,
    /// The expected output is empty.
    EmptyOutput = "empty_output" => Retryable,
    /// The expected output is over the size limit.
    OutputTooLarge = "output_too_large" => Retryable,
    /// The task's result would take its batch past `[jobs] max_batch_output_bytes` in Redis.
    BatchOutputLimit = "batch_output_limit" => Refused,
    /// The expected output is not JSON.
    InvalidJsonOutput = "invalid_json_output" => Retryable,
    /// The output's JSON says the script failed.
    StatusError = "status_error" => Retryable,
    /// A local I/O error around the run.
    IoError = "io_error" => Retryable,
    /// A script job sets an environment variable its node does not allow (`script_env_allow`).
    EnvNotAllowed = "env_not_allowed" => Refused,
    /// A node that requires signed jobs got a message whose signature is missing or wrong:
    /// nothing of it ran.
    BadSignature = "bad_signature" => Refused,
    /// A text this build does not know (written by another build).
    Other = "other" => Retryable,
}

impl FailureReason {
    /// The reason with this text, or [`FailureReason::Other`]: records written by another build
    /// stay readable.
    pub fn parse_lenient(text: &str) -> FailureReason {
        FailureReason::parse(text).unwrap_or(FailureReason::Other)
    }
}

impl std::fmt::Display for FailureReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for FailureReason {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FailureReason::parse(s).ok_or_else(|| format!("unknown failure reason '{s}'"))
    }
}

impl Serialize for FailureReason {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for FailureReason {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<str>::deserialize(d)?;
        Ok(FailureReason::parse_lenient(&text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_are_unique_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for r in FailureReason::ALL {
            assert!(seen.insert(r.as_str()), "duplicate text {}", r.as_str());
            assert_eq!(FailureReason::parse(r.as_str()), Some(*r));
            let json = serde_json::to_string(r).unwrap();
            assert_eq!(serde_json::from_str::<FailureReason>(&json).unwrap(), *r);
        }
    }

    #[test]
    fn an_unknown_text_reads_as_other() {
        let r: FailureReason = serde_json::from_str("\"from_a_newer_build\"").unwrap();
        assert_eq!(r, FailureReason::Other);
        assert!("nope".parse::<FailureReason>().is_err());
    }

    #[test]
    fn the_contract_texts_do_not_change() {
        assert_eq!(
            FailureReason::RedisUnavailable.as_str(),
            "redis_unavailable"
        );
        assert_eq!(FailureReason::DeliveryLimit.as_str(), "delivery_limit");
        assert_eq!(FailureReason::StaleMessage.as_str(), "stale_message");
        assert_eq!(FailureReason::ExitStatus.as_str(), "exit_status");
        assert_eq!(FailureReason::Cancelled.class(), ReasonClass::Settled);
        assert_eq!(FailureReason::BadSignature.as_str(), "bad_signature");
        assert_eq!(FailureReason::BadSignature.class(), ReasonClass::Refused);
    }
}
