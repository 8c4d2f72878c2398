//! Script-job messages: [`ScriptJob`] on `<ns>.scripts` / `<ns>.scripts.<node>` and the
//! [`ScriptResult`] a node writes to Redis (output file content included).

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::{ProtocolError, PROTOCOL_VERSION};

/// One script task. In the job record ([`crate::ScriptBatch`]) and, with `attempt`, as the body of
/// a message on the scripts queue. Fields of the original jobs file that seedq does not know are
/// kept in `extra` and passed through untouched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScriptJob {
    /// Protocol version that wrote it (a jobs-file entry without `v` gets this build's).
    #[serde(default = "version")]
    pub v: u32,
    /// The batch (job) id; the Redis job this task belongs to.
    #[serde(default)]
    pub batch_id: String,
    /// The jobs file's `job_id`; unique within the batch. Done-set member `t:<task_id>`.
    pub task_id: String,
    /// Script path relative to the node's script root (paths escaping the root are refused).
    pub script: String,
    /// Command-line arguments passed to the script, in order.
    #[serde(default)]
    pub args: Vec<String>,
    /// Output file the script must write during this run (relative to the script root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_output: Option<String>,
    /// Wall-clock limit of one attempt, seconds (the consumer clamps it below the broker's
    /// consumer timeout and kills the script's whole process group when it passes).
    pub timeout_secs: u64,
    /// Variables the job sets for its script (the jobs file's `env`); a node runs it only if its
    /// `script_env_allow` lists every name (see [`crate::NodeConfig::allows_script_env`]).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub env: std::collections::BTreeMap<String, String>,
    /// Pin to a GPU index on the node (the jobs file's `gpu_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_id: Option<u32>,
    /// Pin to a node: published to `<ns>.scripts.<node>` instead of the shared queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// 1 for the first publish; the retry path republishes with `attempt + 1`.
    #[serde(default = "one")]
    pub attempt: u32,
    /// The batch's epoch ([`crate::Job::epoch`]); 0 in a jobs-file entry and in the stored
    /// batch, set on the published message.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub epoch: u64,
    /// A finished run whose result Redis could not take yet (it was busy or out of memory): the
    /// message is parked with the result inside and stores it on return, so the script never
    /// runs again for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<Box<ScriptResult>>,
    /// Unknown jobs-file fields, kept.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// Names no job may set, whatever a node allows: seedq's own (`SEEDQ_*`, credentials among
/// them, and the run's `SEEDQ_OUTPUT_DIR`) and the dynamic loader's, which would run code of the
/// job's choosing inside the interpreter before the script.
pub fn reserved_env_name(name: &str) -> bool {
    name.starts_with("SEEDQ_") || name.starts_with("LD_") || name == "PATH"
}

/// Whether `name` is usable as an environment variable name (`[A-Za-z_][A-Za-z0-9_]*`).
pub fn valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn version() -> u32 {
    PROTOCOL_VERSION
}

fn one() -> u32 {
    1
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl ScriptJob {
    /// The message body as published.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("script job serializes")
    }

    /// Parses a message body; checks the version, the batch id and the task id.
    pub fn from_json(body: &[u8]) -> Result<ScriptJob, ProtocolError> {
        let job: ScriptJob = serde_json::from_slice(body)?;
        crate::check_version(job.v)?;
        crate::validate_identifier("batch id", &job.batch_id)?;
        crate::validate_identifier("task id", &job.task_id)?;
        Ok(job)
    }

    /// The done-set member for this task.
    pub fn member(&self) -> String {
        crate::script_member(&self.task_id)
    }
}

/// The expected output file's content, as collected from the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScriptOutput {
    /// The path as given in `expected_output` (for `collect --preserve-paths`).
    pub path: String,
    /// File content, standard base64 (outputs may be binary).
    pub content_b64: String,
}

impl ScriptOutput {
    /// Wraps a file's bytes, base64-encoding them.
    pub fn new(path: impl Into<String>, content: &[u8]) -> Self {
        ScriptOutput {
            path: path.into(),
            content_b64: base64::engine::general_purpose::STANDARD.encode(content),
        }
    }

    /// The file's bytes, decoded from `content_b64`.
    pub fn content(&self) -> Result<Vec<u8>, base64::DecodeError> {
        base64::engine::general_purpose::STANDARD.decode(&self.content_b64)
    }
}

/// The outcome of one script task (written once per task by the store).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScriptResult {
    /// Protocol version that wrote it.
    pub v: u32,
    /// The batch (job) the task belongs to.
    pub batch_id: String,
    /// The task's id within the batch.
    pub task_id: String,
    /// The attempt this result is from (1-based).
    pub attempt: u32,
    /// The batch's epoch from the task message: the store applies it only to that life of the
    /// batch.
    #[serde(default)]
    pub epoch: u64,
    /// Exit status 0 and a fresh expected output (and not a JSON `status: error`).
    pub success: bool,
    /// Exit code, `None` when killed by a signal or never started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The signal that killed the script (Unix), if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// The expected output file as collected, when the script wrote it this run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<ScriptOutput>,
    /// The last bytes of the script's standard output.
    #[serde(default)]
    pub stdout_tail: String,
    /// The last bytes of the script's standard error.
    #[serde(default)]
    pub stderr_tail: String,
    /// Wall time of the attempt, seconds (added to the job's busy time on success).
    pub duration_secs: f64,
    /// The node that ran it.
    pub node: String,
    /// The GPU index the task was pinned to (the job's `gpu_id`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<u32>,
    /// Why it failed (`timeout`, `missing_output`, `stale_output`, `status_error`,
    /// `exit_status`, `path_escapes_root`, ...), `None` on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<crate::FailureReason>,
    /// When the attempt ended, ms since the epoch.
    pub finished_at_ms: u64,
}

impl ScriptResult {
    /// A result for `job` on `node` that starts as a failure (`success: false`, no exit code,
    /// empty tails, finished now); the runner fills in the outcome.
    pub fn new(job: &ScriptJob, node: impl Into<String>) -> Self {
        ScriptResult {
            v: PROTOCOL_VERSION,
            batch_id: job.batch_id.clone(),
            task_id: job.task_id.clone(),
            attempt: job.attempt,
            epoch: job.epoch,
            success: false,
            exit_code: None,
            signal: None,
            output: None,
            stdout_tail: String::new(),
            stderr_tail: String::new(),
            duration_secs: 0.0,
            node: node.into(),
            gpu: job.gpu_id,
            failure: None,
            finished_at_ms: crate::now_ms(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_file_entry_keeps_extra_fields() {
        let text =
            br#"{"batch_id":"b1","task_id":"trial_001","script":"scorer.py","args":["--trial","1"],
            "expected_output":"out/t1.json","timeout_secs":600,"gpu_id":1,"study":"s7","n":3}"#;
        let job = ScriptJob::from_json(text).unwrap();
        assert_eq!(job.extra.get("study").and_then(|v| v.as_str()), Some("s7"));
        assert_eq!(job.attempt, 1);
        let again = ScriptJob::from_json(&job.to_json()).unwrap();
        assert_eq!(again, job);
    }

    #[test]
    fn output_content_round_trips_binary() {
        let out = ScriptOutput::new("a/b.bin", &[0, 255, 10, 13]);
        assert_eq!(out.content().unwrap(), vec![0, 255, 10, 13]);
    }
}
