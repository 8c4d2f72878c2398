//! `seedq-producer collect JOB`: write a script batch's outputs from Redis to files.
//!
//! Outputs travel back through Redis (the node uploads the file content, then deletes its local
//! copy), so unlike the original no path rewriting is needed on the nodes: `expected_output` is
//! used as given. `--output-dir` and `--preserve-paths` (defaults: what the batch was enqueued
//! with) decide where the outputs land on this machine: `DIR/<expected_output>` with
//! `--preserve-paths` (an output in the run's private directory, `{output_dir}/<file>`, lands in
//! `DIR/<job_id>/<file>`), else `DIR/<job_id>.<ext>`. `collect` also writes
//! `DIR/collect_summary.json` (every task: success, node, GPU, attempt, exit status, duration,
//! output file and size, failure reason) and prints it with `--json`. It exits
//! [`EXIT_DEAD_LETTERED`] while any task failed or has no result yet.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;
use serde::Serialize;

use seedq_protocol::{JobSpec, ScriptResult};

use crate::cmd::EXIT_DEAD_LETTERED;
use crate::context::Env;

#[derive(Debug, Clone, Args)]
pub struct CollectArgs {
    /// The batch (job) id printed by `scripts`.
    pub job: String,
    /// Directory to write the outputs to (default: the batch's --output-dir).
    #[arg(long)]
    pub output_dir: Option<PathBuf>,
    /// Write outputs under their original relative paths instead of DIR/<job_id>.<ext>.
    #[arg(long)]
    pub preserve_paths: bool,
}

pub async fn run(env: &Env, args: CollectArgs) -> anyhow::Result<i32> {
    let store = env.store().await?;
    let job = store.load_job(&args.job).await?.with_context(|| {
        format!(
            "no batch '{}' in namespace '{}' (expired? see `seedq-producer status`)",
            args.job, env.namespace
        )
    })?;
    let JobSpec::Scripts(batch) = &job.spec else {
        bail!(
            "job '{}' is a {} job, not a script batch; use `results`",
            args.job,
            job.kind()
        );
    };
    let dir = match args
        .output_dir
        .clone()
        .or_else(|| batch.output_dir.as_ref().map(PathBuf::from))
    {
        Some(dir) => dir,
        None => bail!("give --output-dir DIR (the batch was enqueued without one)"),
    };
    let preserve = args.preserve_paths || (args.output_dir.is_none() && batch.preserve_paths);
    let tasks: Vec<(String, String)> = batch
        .tasks
        .iter()
        .map(|t| {
            (
                t.task_id.clone(),
                t.expected_output.clone().unwrap_or_default(),
            )
        })
        .collect();
    let results = store.script_results(&args.job).await?;
    let summary = write_outputs(&args.job, &dir, preserve, &tasks, &results)?;
    if env.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        for task in &summary.tasks {
            if let Some(file) = &task.file {
                println!("{file}");
            }
        }
        eprintln!(
            "collected {} of {} output(s) into {} ({} failed, {} pending); summary in {}",
            summary.collected,
            summary.tasks_total,
            dir.display(),
            summary.failed,
            summary.pending.len(),
            dir.join("collect_summary.json").display()
        );
        for task in summary.tasks.iter().filter(|t| !t.success) {
            eprintln!(
                "  {}: {} on {}",
                task.task_id,
                task.failure.map_or("failed", |r| r.as_str()),
                task.node
            );
        }
    }
    Ok(if summary.failed > 0 || !summary.pending.is_empty() {
        EXIT_DEAD_LETTERED
    } else {
        0
    })
}

/// Where a task's output lands under `dir`.
pub fn output_destination(
    dir: &Path,
    task_id: &str,
    expected_output: &str,
    preserve_paths: bool,
) -> anyhow::Result<PathBuf> {
    if preserve_paths {
        // Private outputs of different tasks may share a name: each task gets its own directory.
        let per_task = expected_output
            .strip_prefix(crate::jobs_file::OUTPUT_DIR_PLACEHOLDER)
            .filter(|rest| rest.starts_with('/'))
            .map(|rest| format!("{task_id}{rest}"));
        let relative = Path::new(per_task.as_deref().unwrap_or(expected_output));
        let clean = relative
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
        if !clean || relative.as_os_str().is_empty() {
            bail!("task {task_id}: output path '{expected_output}' is not a plain relative path; collect it without --preserve-paths");
        }
        return Ok(dir.join(relative));
    }
    let file_name = Path::new(expected_output)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("");
    let name = match file_name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() && !ext.is_empty() => format!("{task_id}.{ext}"),
        _ => task_id.to_string(),
    };
    Ok(dir.join(name))
}

/// One task in the collect summary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CollectedTask {
    pub task_id: String,
    pub success: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    pub node: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu: Option<u32>,
    pub attempt: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    pub duration_secs: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<seedq_protocol::FailureReason>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub stderr_tail: String,
}

/// What `collect` reports (and writes as `collect_summary.json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CollectSummary {
    pub job_id: String,
    pub output_dir: String,
    pub preserve_paths: bool,
    pub tasks_total: usize,
    pub collected: usize,
    pub failed: usize,
    /// Tasks with no result yet (still queued or running).
    pub pending: Vec<String>,
    pub tasks: Vec<CollectedTask>,
}

/// Writes `bytes` to `path` atomically (temp file + rename), creating directories.
fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let parent = path.parent().context("output path has a directory")?;
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let tmp = parent.join(format!(
        ".{}.seedq-tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("out")
    ));
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

/// Writes every successful task's output under `dir` and returns the summary. `tasks` is the
/// batch's `(task_id, expected_output)` in jobs-file order; `results` what Redis holds.
pub fn write_outputs(
    job_id: &str,
    dir: &Path,
    preserve_paths: bool,
    tasks: &[(String, String)],
    results: &BTreeMap<String, ScriptResult>,
) -> anyhow::Result<CollectSummary> {
    let mut summary = CollectSummary {
        job_id: job_id.to_string(),
        output_dir: dir.display().to_string(),
        preserve_paths,
        tasks_total: tasks.len(),
        collected: 0,
        failed: 0,
        pending: Vec::new(),
        tasks: Vec::new(),
    };
    let mut destinations: BTreeMap<PathBuf, String> = BTreeMap::new();
    for (task_id, expected_output) in tasks {
        let Some(result) = results.get(task_id) else {
            summary.pending.push(task_id.clone());
            continue;
        };
        let mut entry = CollectedTask {
            task_id: task_id.clone(),
            success: result.success,
            file: None,
            bytes: None,
            node: result.node.clone(),
            gpu: result.gpu,
            attempt: result.attempt,
            exit_code: result.exit_code,
            duration_secs: result.duration_secs,
            failure: result.failure,
            stderr_tail: if result.success {
                String::new()
            } else {
                result.stderr_tail.clone()
            },
        };
        match (&result.output, result.success) {
            (Some(output), true) => {
                let path_given = if output.path.is_empty() {
                    expected_output.as_str()
                } else {
                    output.path.as_str()
                };
                let destination = output_destination(dir, task_id, path_given, preserve_paths)?;
                if let Some(other) = destinations.insert(destination.clone(), task_id.clone()) {
                    bail!(
                        "tasks {other} and {task_id} would both be written to {}",
                        destination.display()
                    );
                }
                let content = output.content().with_context(|| {
                    format!("task {task_id}: stored output is not valid base64")
                })?;
                write_atomic(&destination, &content)?;
                entry.file = Some(destination.display().to_string());
                entry.bytes = Some(content.len() as u64);
                summary.collected += 1;
            }
            _ => summary.failed += 1,
        }
        summary.tasks.push(entry);
    }
    let text = serde_json::to_vec_pretty(&summary).expect("summary serializes");
    write_atomic(&dir.join("collect_summary.json"), &text)?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use seedq_protocol::{ScriptJob, ScriptOutput};

    fn result(task: &str, success: bool, path: &str, content: &[u8]) -> ScriptResult {
        let job: ScriptJob = serde_json::from_value(serde_json::json!({
            "batch_id": "b", "task_id": task, "script": "s.py", "timeout_secs": 5
        }))
        .unwrap();
        let mut r = ScriptResult::new(&job, "zeus");
        r.success = success;
        r.output = success.then(|| ScriptOutput::new(path, content));
        r.failure = (!success).then_some(seedq_protocol::FailureReason::Timeout);
        r
    }

    #[test]
    fn destinations_with_and_without_preserved_paths() {
        let dir = Path::new("/out");
        assert_eq!(
            output_destination(dir, "t1", "res/trial_0001.json", false).unwrap(),
            Path::new("/out/t1.json")
        );
        assert_eq!(
            output_destination(dir, "t1", "res/noext", false).unwrap(),
            Path::new("/out/t1")
        );
        assert_eq!(
            output_destination(dir, "t1", "res/.hidden", false).unwrap(),
            Path::new("/out/t1")
        );
        assert_eq!(
            output_destination(dir, "t1", "res/trial.json", true).unwrap(),
            Path::new("/out/res/trial.json")
        );
        assert_eq!(
            output_destination(dir, "t1", "{output_dir}/res/trial.json", true).unwrap(),
            Path::new("/out/t1/res/trial.json")
        );
        assert_eq!(
            output_destination(dir, "t1", "{output_dir}/res/trial.json", false).unwrap(),
            Path::new("/out/t1.json")
        );
        assert!(output_destination(dir, "t1", "{output_dir}/../../x.json", true).is_err());
        assert!(output_destination(dir, "t1", "../x.json", true).is_err());
        assert!(output_destination(dir, "t1", "/etc/x.json", true).is_err());
    }

    #[test]
    fn writes_outputs_byte_for_byte_and_a_summary() {
        let dir = std::env::temp_dir().join(format!("seedq-collect-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let binary: Vec<u8> = (0..=255u8).rev().collect();
        let tasks = vec![
            ("a".to_string(), "r/a.bin".to_string()),
            ("b".to_string(), "r/b.json".to_string()),
            ("c".to_string(), "r/c.json".to_string()),
        ];
        let results = BTreeMap::from([
            ("a".to_string(), result("a", true, "r/a.bin", &binary)),
            ("b".to_string(), result("b", false, "r/b.json", b"")),
        ]);
        let summary = write_outputs("b1", &dir, false, &tasks, &results).unwrap();
        assert_eq!(std::fs::read(dir.join("a.bin")).unwrap(), binary);
        assert_eq!(
            (summary.collected, summary.failed, summary.pending.clone()),
            (1, 1, vec!["c".to_string()])
        );
        let stored: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("collect_summary.json")).unwrap())
                .unwrap();
        assert_eq!(stored["tasks"][1]["failure"], "timeout");
        let summary = write_outputs("b1", &dir, true, &tasks, &results).unwrap();
        assert_eq!(std::fs::read(dir.join("r/a.bin")).unwrap(), binary);
        assert_eq!(
            summary.tasks[0].file.as_deref(),
            Some(dir.join("r/a.bin").to_str().unwrap())
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
