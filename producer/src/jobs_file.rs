//! The script jobs file: parsing the original's format and validating it before anything is
//! published.
//!
//! Format: the original system's jobs file, a JSON array of job objects or `{"jobs": [...]}`
//! (both are accepted). Each object has `job_id`, `script`, `args` (list of strings; numbers and
//! booleans are taken as their text), `expected_output`, `timeout` (seconds), and optionally
//! `node` and `gpu_id`, which pin the job (the original ignored them). Every other field
//! (`analysis_type`, `chunk_file`, `seed_count`, ...) is kept and travels with the job.
//!
//! **Output paths.** Every run gets a private output directory on its node. `{output_dir}` in
//! `args` is replaced by its absolute path (the script also finds it in `SEEDQ_OUTPUT_DIR`), and
//! an `expected_output` of the form `{output_dir}/<file>` names a file inside it:
//!
//! ```json
//! {"job_id": "trial_7", "script": "trial.py", "args": ["--out", "{output_dir}/result.json"],
//!  "expected_output": "{output_dir}/result.json", "timeout": 600}
//! ```
//!
//! Such outputs are per run, so any number of jobs (of this file or of other batches running on
//! the same node) may use the same name. A fixed `expected_output` (relative to the node's script
//! root, the original format) still works, but every run that names it writes one file: a node
//! runs those one at a time, and two jobs of one file may not name the same one.
//!
//! Validation collects every problem in the file at once, each naming the job and the fix:
//! missing or mistyped fields, duplicate job ids, two jobs writing the same fixed output, a
//! misplaced `{output_dir}` (only `{output_dir}/<file>`, without climbing out with `..`), ids
//! that are not usable as file names, pins to unknown nodes or GPUs, and timeouts the broker
//! would not allow: RabbitMQ closes the channel of a delivery left unacked longer than its
//! `consumer_timeout`, and a script job stays unacked while it runs.
//!
//! **Environment.** A script starts from a cleared environment (see the consumer's runner). A job
//! may set variables with `"env": {"OMP_NUM_THREADS": "4"}`; a node runs it only when its
//! `script_env_allow` in cluster.toml lists every name, and `SEEDQ_*`, `LD_*` and `PATH` are
//! refused here already.
//!
//! Script and fixed output paths are NOT judged here: they are relative to each node's script
//! root (an absolute path inside a node's root is legitimate), and only the node can resolve
//! them, symlinks included. A path that leaves the root fails on the node as
//! `path_escapes_root`, straight to the dead-letter queue, without blocking the node.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One script job as the file describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScriptJobEntry {
    pub job_id: String,
    pub script: String,
    pub args: Vec<String>,
    pub expected_output: String,
    pub timeout_secs: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_id: Option<u32>,
    /// Variables set for the script (`env`); each node decides which it allows.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Fields seedq does not interpret, kept verbatim.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
}

/// One thing wrong with the file, located by position and id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 0-based position in the jobs list; `None` for the file as a whole.
    pub index: Option<usize>,
    pub job_id: Option<String>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.index, &self.job_id) {
            (Some(i), Some(id)) => write!(f, "job #{i} ({id}): {}", self.message),
            (Some(i), None) => write!(f, "job #{i}: {}", self.message),
            _ => write!(f, "{}", self.message),
        }
    }
}

/// Every problem found in a jobs file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the jobs file has {} problem(s); nothing was published:\n  {}", .0.len(), .0.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n  "))]
pub struct JobsFileError(pub Vec<Problem>);

/// What the cluster allows, from cluster.toml and the broker settings.
#[derive(Debug, Clone, Default)]
pub struct Limits {
    /// The broker's `consumer_timeout`. `None` disables the check (broker without a limit).
    pub consumer_timeout: Option<Duration>,
    /// Node name -> number of GPUs, for checking pins. Empty disables the node check.
    pub nodes: BTreeMap<String, u32>,
}

impl Limits {
    /// Head-room between a job's own timeout and the broker's: the consumer still has to kill
    /// the process group, upload the output to Redis and ack after the script's deadline.
    pub const ACK_MARGIN: Duration = Duration::from_secs(60);

    /// The largest `timeout` a job may ask for.
    pub fn max_job_timeout(&self) -> Option<Duration> {
        self.consumer_timeout
            .map(|t| t.saturating_sub(Self::ACK_MARGIN))
    }
}

/// Parses and validates a jobs file's text. Returns the jobs in file order.
pub fn parse_and_validate(
    text: &str,
    limits: &Limits,
) -> Result<Vec<ScriptJobEntry>, JobsFileError> {
    let jobs = parse(text)?;
    validate(&jobs, limits)?;
    Ok(jobs)
}

/// Parses the file's text, reporting every malformed entry.
pub fn parse(text: &str) -> Result<Vec<ScriptJobEntry>, JobsFileError> {
    let whole = |message: String| {
        JobsFileError(vec![Problem {
            index: None,
            job_id: None,
            message,
        }])
    };
    let value: Value =
        serde_json::from_str(text).map_err(|e| whole(format!("not valid JSON: {e}")))?;
    let list = match value {
        Value::Array(list) => list,
        Value::Object(mut object) => match object.remove("jobs") {
            Some(Value::Array(list)) => list,
            _ => {
                return Err(whole(
                    "expected a JSON array of jobs or an object {\"jobs\": [...]}".into(),
                ))
            }
        },
        _ => {
            return Err(whole(
                "expected a JSON array of jobs or an object {\"jobs\": [...]}".into(),
            ))
        }
    };
    if list.is_empty() {
        return Err(whole("the file contains no jobs".into()));
    }
    let mut jobs = Vec::with_capacity(list.len());
    let mut problems = Vec::new();
    for (index, entry) in list.into_iter().enumerate() {
        match parse_entry(entry) {
            Ok(job) => jobs.push(job),
            Err((job_id, messages)) => {
                problems.extend(messages.into_iter().map(|message| Problem {
                    index: Some(index),
                    job_id: job_id.clone(),
                    message,
                }))
            }
        }
    }
    if problems.is_empty() {
        Ok(jobs)
    } else {
        Err(JobsFileError(problems))
    }
}

fn parse_entry(entry: Value) -> Result<ScriptJobEntry, (Option<String>, Vec<String>)> {
    let Value::Object(mut object) = entry else {
        return Err((None, vec!["expected a JSON object".into()]));
    };
    let mut errors = Vec::new();
    fn take_string(
        object: &mut Map<String, Value>,
        field: &str,
        errors: &mut Vec<String>,
    ) -> Option<String> {
        match object.remove(field) {
            Some(Value::String(s)) if !s.trim().is_empty() => Some(s),
            Some(Value::String(_)) => {
                errors.push(format!("'{field}' is empty"));
                None
            }
            Some(other) => {
                errors.push(format!("'{field}' must be a string, got {other}"));
                None
            }
            None => {
                errors.push(format!("missing required field '{field}'"));
                None
            }
        }
    }
    let job_id = match object.remove("job_id") {
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(other) => {
            object.insert("job_id".into(), other);
            take_string(&mut object, "job_id", &mut errors)
        }
        None => take_string(&mut object, "job_id", &mut errors),
    };
    let script = take_string(&mut object, "script", &mut errors);
    let expected_output = take_string(&mut object, "expected_output", &mut errors);
    let args = match object.remove("args") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .into_iter()
            .enumerate()
            .filter_map(|(i, item)| match item {
                Value::String(s) => Some(s),
                Value::Number(n) => Some(n.to_string()),
                Value::Bool(b) => Some(b.to_string()),
                other => {
                    errors.push(format!(
                        "args[{i}] must be a string (put JSON parameters in a string), got {other}"
                    ));
                    None
                }
            })
            .collect(),
        Some(other) => {
            errors.push(format!("'args' must be a list of strings, got {other}"));
            Vec::new()
        }
    };
    let timeout_secs = match object.remove("timeout") {
        Some(Value::Number(n)) => match n.as_f64() {
            Some(t) if t > 0.0 && t.is_finite() => Some(t.ceil() as u64),
            _ => {
                errors.push(format!(
                    "'timeout' must be a positive number of seconds, got {n}"
                ));
                None
            }
        },
        Some(other) => {
            errors.push(format!(
                "'timeout' must be a number of seconds, got {other}"
            ));
            None
        }
        None => {
            errors.push("missing required field 'timeout' (seconds)".into());
            None
        }
    };
    let node = match object.remove("node") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.is_empty() => Some(s),
        Some(other) => {
            errors.push(format!("'node' must be a node name, got {other}"));
            None
        }
    };
    let gpu_id = match object.remove("gpu_id") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) if n.as_u64().is_some_and(|g| g <= u32::MAX as u64) => {
            n.as_u64().map(|g| g as u32)
        }
        Some(other) => {
            errors.push(format!(
                "'gpu_id' must be a GPU index (0, 1, ...), got {other}"
            ));
            None
        }
    };
    let env = match object.remove("env") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(Value::Object(vars)) => vars
            .into_iter()
            .filter_map(|(name, value)| {
                if !seedq_protocol::script::valid_env_name(&name) {
                    errors.push(format!(
                        "env: '{name}' is not a variable name (letters, digits and _)"
                    ));
                    return None;
                }
                if seedq_protocol::script::reserved_env_name(&name) {
                    errors.push(format!(
                        "env: '{name}' is reserved (SEEDQ_*, LD_*, PATH): no job may set it"
                    ));
                    return None;
                }
                match value {
                    Value::String(s) => Some((name, s)),
                    Value::Number(n) => Some((name, n.to_string())),
                    Value::Bool(b) => Some((name, b.to_string())),
                    other => {
                        errors.push(format!("env: '{name}' must be a string, got {other}"));
                        None
                    }
                }
            })
            .collect(),
        Some(other) => {
            errors.push(format!(
                "'env' must be an object of variable names and values, got {other}"
            ));
            BTreeMap::new()
        }
    };
    if !errors.is_empty() {
        return Err((job_id, errors));
    }
    Ok(ScriptJobEntry {
        job_id: job_id.expect("checked"),
        script: script.expect("checked"),
        args,
        expected_output: expected_output.expect("checked"),
        timeout_secs: timeout_secs.expect("checked"),
        node,
        gpu_id,
        env,
        extra: object,
    })
}

/// Stands for the run's private output directory (the consumer substitutes it).
pub const OUTPUT_DIR_PLACEHOLDER: &str = "{output_dir}";

/// Why an `expected_output` that names [`OUTPUT_DIR_PLACEHOLDER`] cannot be resolved inside the
/// run's private directory (the node applies the same rule).
fn placeholder_problem(output: &str) -> Option<&'static str> {
    let rest = match output.strip_prefix(OUTPUT_DIR_PLACEHOLDER) {
        None => return Some("it may only start the path"),
        Some(rest) if rest.contains(OUTPUT_DIR_PLACEHOLDER) => {
            return Some("it may appear only once")
        }
        Some(rest) => rest,
    };
    let Some(rest) = rest.strip_prefix('/') else {
        return Some("it must be followed by '/' and a file name");
    };
    let mut depth = 0usize;
    for part in rest.split('/') {
        match part {
            "" | "." => {}
            ".." if depth == 0 => return Some("'..' climbs out of the private output directory"),
            ".." => depth -= 1,
            _ => depth += 1,
        }
    }
    (depth == 0).then_some("it must name a file inside the directory, not the directory itself")
}

/// A job id becomes a Redis key part and a file name (`<job_id>.<ext>`), so it is restricted.
fn job_id_problem(id: &str) -> Option<String> {
    let ok_chars = id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !ok_chars || id.starts_with('.') || id.len() > 128 {
        Some(format!("job_id '{id}' must be 1-128 characters of letters, digits, '_', '-', '.', not starting with '.'"))
    } else {
        None
    }
}

/// Cross-job and cluster checks on parsed jobs.
pub fn validate(jobs: &[ScriptJobEntry], limits: &Limits) -> Result<(), JobsFileError> {
    let mut problems = Vec::new();
    let mut push = |index: usize, job: &ScriptJobEntry, message: String| {
        problems.push(Problem {
            index: Some(index),
            job_id: Some(job.job_id.clone()),
            message,
        })
    };
    let mut ids: HashMap<&str, usize> = HashMap::new();
    let mut outputs: HashMap<String, usize> = HashMap::new();
    let max_timeout = limits.max_job_timeout();
    for (index, job) in jobs.iter().enumerate() {
        if let Some(message) = job_id_problem(&job.job_id) {
            push(index, job, message);
        }
        if let Some(first) = ids.insert(&job.job_id, index) {
            push(
                index,
                job,
                format!("duplicate job_id (also job #{first}); job ids must be unique"),
            );
        }
        if job.expected_output.contains(OUTPUT_DIR_PLACEHOLDER) {
            if let Some(problem) = placeholder_problem(&job.expected_output) {
                push(
                    index,
                    job,
                    format!(
                        "expected_output {} misuses {OUTPUT_DIR_PLACEHOLDER}: {problem}; write {OUTPUT_DIR_PLACEHOLDER}/<file>",
                        job.expected_output
                    ),
                );
            }
        } else if let Some(first) = outputs.insert(normalise(&job.expected_output), index) {
            push(
                index,
                job,
                format!(
                    "expected_output {} is also written by job #{first}; outputs must be distinct",
                    job.expected_output
                ),
            );
        }
        if let Some(max) = max_timeout {
            if Duration::from_secs(job.timeout_secs) > max {
                push(
                    index,
                    job,
                    format!(
                        "timeout {} s is above what the broker allows: consumer_timeout is {} s and a job needs {} s of it to report and ack, so at most {} s; shorten the job or raise consumer_timeout in rabbitmq.conf",
                        job.timeout_secs,
                        limits.consumer_timeout.unwrap_or_default().as_secs(),
                        Limits::ACK_MARGIN.as_secs(),
                        max.as_secs()
                    ),
                );
            }
        }
        if !limits.nodes.is_empty() {
            match (&job.node, job.gpu_id) {
                (Some(node), gpu) => match limits.nodes.get(node) {
                    None => push(
                        index,
                        job,
                        format!(
                            "pinned to unknown node '{node}' (known: {})",
                            limits.nodes.keys().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    ),
                    Some(&gpus) => {
                        if let Some(gpu) = gpu.filter(|g| *g >= gpus) {
                            push(index, job, format!("gpu_id {gpu} does not exist on node '{node}', which has {gpus} GPU(s)"));
                        }
                    }
                },
                (None, Some(gpu)) => {
                    if !limits.nodes.values().any(|&gpus| gpu < gpus) {
                        push(
                            index,
                            job,
                            format!("gpu_id {gpu} exists on no node of the cluster"),
                        );
                    }
                }
                (None, None) => {}
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(JobsFileError(problems))
    }
}

fn normalise(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            consumer_timeout: Some(Duration::from_secs(1800)),
            nodes: BTreeMap::from([("zeus".to_string(), 2), ("rig-6600".to_string(), 12)]),
        }
    }

    const SCORER: &str = r#"{"job_id": "scorer_trial_0", "script": "scorer_trial_worker.py",
        "args": ["survivors.json", "train.json", "holdout.json", 0, "{\"lr\": 0.1}"],
        "expected_output": "scorer_trial_results/trial_0000.json", "timeout": 1200,
        "analysis_type": "script", "seed_count": 5000}"#;

    #[test]
    fn accepts_array_and_jobs_object_and_keeps_extra_fields() {
        let from_array = parse(&format!("[{SCORER}]")).unwrap();
        let from_object = parse(&format!("{{\"jobs\": [{SCORER}]}}")).unwrap();
        assert_eq!(from_array, from_object);
        let job = &from_array[0];
        assert_eq!(job.job_id, "scorer_trial_0");
        assert_eq!(job.args[3], "0");
        assert_eq!(job.args[4], "{\"lr\": 0.1}");
        assert_eq!(job.timeout_secs, 1200);
        assert_eq!(job.extra.get("analysis_type"), Some(&Value::from("script")));
        assert_eq!(job.extra.get("seed_count"), Some(&Value::from(5000)));
        validate(&from_array, &limits()).unwrap();
    }

    #[test]
    fn reports_every_missing_or_mistyped_field() {
        let text = r#"[{"job_id": "a", "args": "x", "timeout": "soon"}, 7]"#;
        let problems = parse(text).unwrap_err().0;
        let messages: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        assert!(
            messages.contains(&"job #0 (a): missing required field 'script'".to_string()),
            "{messages:?}"
        );
        assert!(messages
            .iter()
            .any(|m| m.contains("missing required field 'expected_output'")));
        assert!(messages.iter().any(|m| m.contains("'args' must be a list")));
        assert!(messages
            .iter()
            .any(|m| m.contains("'timeout' must be a number")));
        assert!(messages.contains(&"job #1: expected a JSON object".to_string()));
        assert!(parse("{}").is_err());
        assert!(parse("[]").is_err());
        assert!(parse("not json")
            .unwrap_err()
            .to_string()
            .contains("not valid JSON"));
    }

    #[test]
    fn env_takes_plain_names_and_refuses_seedq_and_loader_variables() {
        let ok = parse(
            r#"[{"job_id": "a", "script": "s.py", "expected_output": "o", "timeout": 1,
                 "env": {"OMP_NUM_THREADS": 4, "MODE": "fast"}}]"#,
        )
        .unwrap();
        assert_eq!(ok[0].env["OMP_NUM_THREADS"], "4");
        assert_eq!(ok[0].env["MODE"], "fast");
        let text = r#"[{"job_id": "b", "script": "s.py", "expected_output": "o", "timeout": 1,
                 "env": {"SEEDQ_AMQP_URL": "x", "LD_PRELOAD": "/tmp/x.so", "A=B": "1", "PATH": "/tmp", "N": []}}]"#;
        let messages: Vec<String> = parse(text)
            .unwrap_err()
            .0
            .iter()
            .map(|p| p.to_string())
            .collect();
        for needle in [
            "'SEEDQ_AMQP_URL' is reserved",
            "'LD_PRELOAD' is reserved",
            "'PATH' is reserved",
            "'A=B' is not a variable name",
            "'N' must be a string",
        ] {
            assert!(
                messages.iter().any(|m| m.contains(needle)),
                "{needle}: {messages:?}"
            );
        }
    }

    #[test]
    fn finds_duplicates_long_timeouts_and_bad_pins() {
        let text = r#"[
            {"job_id": "a", "script": "s.py", "expected_output": "o/a.json", "timeout": 60},
            {"job_id": "a", "script": "s.py", "expected_output": "o/b.json", "timeout": 60},
            {"job_id": "c", "script": "s.py", "expected_output": "./o/a.json", "timeout": 60},
            {"job_id": "d", "script": "s.py", "expected_output": "o/d.json", "timeout": 1741},
            {"job_id": "e/f", "script": "s.py", "expected_output": "o/e.json", "timeout": 1740, "node": "nowhere"},
            {"job_id": "g", "script": "s.py", "expected_output": "o/g.json", "timeout": 5, "node": "zeus", "gpu_id": 2},
            {"job_id": "h", "script": "s.py", "expected_output": "o/h.json", "timeout": 5, "gpu_id": 11}
        ]"#;
        let jobs = parse(text).unwrap();
        let error = validate(&jobs, &limits()).unwrap_err();
        let text = error.to_string();
        let has = |needle: &str| assert!(text.contains(needle), "missing '{needle}' in:\n{text}");
        has("job #1 (a): duplicate job_id (also job #0)");
        has("job #2 (c): expected_output ./o/a.json is also written by job #0");
        has("job #3 (d): timeout 1741 s is above what the broker allows");
        has("job #4 (e/f): job_id 'e/f' must be");
        has("job #4 (e/f): pinned to unknown node 'nowhere'");
        has("job #5 (g): gpu_id 2 does not exist on node 'zeus'");
        assert!(
            !text.contains("job #6"),
            "gpu 11 exists on rig-6600:\n{text}"
        );
        assert_eq!(error.0.len(), 6, "{text}");
        // Without a broker limit or node list those checks are off.
        assert!(validate(&jobs[3..4], &Limits::default()).is_ok());
    }

    #[test]
    fn private_outputs_may_share_a_name_and_misplaced_placeholders_are_refused() {
        let text = r#"[
            {"job_id": "a", "script": "s.py", "args": ["{output_dir}/r.json"], "expected_output": "{output_dir}/r.json", "timeout": 60},
            {"job_id": "b", "script": "s.py", "expected_output": "{output_dir}/./r.json", "timeout": 60},
            {"job_id": "c", "script": "s.py", "expected_output": "{output_dir}/sub/../r.json", "timeout": 60},
            {"job_id": "d", "script": "s.py", "expected_output": "out/{output_dir}/r.json", "timeout": 60},
            {"job_id": "e", "script": "s.py", "expected_output": "{output_dir}/../r.json", "timeout": 60},
            {"job_id": "f", "script": "s.py", "expected_output": "{output_dir}", "timeout": 60},
            {"job_id": "g", "script": "s.py", "expected_output": "{output_dir}r.json", "timeout": 60},
            {"job_id": "h", "script": "s.py", "expected_output": "{output_dir}/x/{output_dir}", "timeout": 60}
        ]"#;
        let jobs = parse(text).unwrap();
        let error = validate(&jobs, &limits()).unwrap_err();
        let text = error.to_string();
        let has = |needle: &str| assert!(text.contains(needle), "missing '{needle}' in:\n{text}");
        has("job #3 (d): expected_output out/{output_dir}/r.json misuses {output_dir}: it may only start the path");
        has("job #4 (e): expected_output {output_dir}/../r.json misuses {output_dir}: '..' climbs out");
        has("job #5 (f): expected_output {output_dir} misuses {output_dir}: it must be followed by '/'");
        has("job #6 (g): expected_output {output_dir}r.json misuses");
        has("job #7 (h): expected_output {output_dir}/x/{output_dir} misuses {output_dir}: it may appear only once");
        assert_eq!(error.0.len(), 5, "a, b and c are fine:\n{text}");
        assert!(validate(&jobs[..3], &limits()).is_ok());
    }
}
