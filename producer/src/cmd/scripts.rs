//! `seedq-producer scripts` (enqueue a jobs file as a script batch) and `collect` (write a
//! batch's outputs from Redis to files).
//!
//! `scripts --jobs-file FILE`: parses and validates the whole file first ([`crate::jobs_file`]:
//! nothing is published when anything is wrong), stores the batch as one job in Redis (the batch
//! id is the job id; `--job-id`, else derived from the file's content so re-running the same
//! file is the same job and nothing is counted twice), then publishes one message per task with
//! confirms: to `<ns>.scripts`, or to `<ns>.scripts.<node>` when the task is pinned to a node.
//! A `gpu_id` pin without `node` is routed by [`route_gpu_pins`] so that only a node with that
//! GPU can take it (or refused when that needs a choice of node). It prints the batch id. `--wait` follows the batch like `wait`; with `--output-dir` the
//! outputs are then collected.
//!
//! Outputs travel back through Redis (the node uploads the file content, then deletes its local
//! copy), so unlike the original no path rewriting is needed on the nodes: `expected_output` is
//! used as given. `--output-dir` and `--preserve-paths` decide where `collect` writes them on
//! this machine: `DIR/<expected_output>` with `--preserve-paths`, else `DIR/<job_id>.<ext>`.
//! `collect` also writes `DIR/collect_summary.json` (every task: success, node, GPU, attempt,
//! exit status, duration, output file and size, failure reason) and prints it with `--json`.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use serde::Serialize;

use seedq_broker::Broker;
use seedq_protocol::{
    Job, JobSpec, NodeConfig, ScriptBatch, ScriptJob, ScriptResult, Topology, PROTOCOL_VERSION,
};
use seedq_store::{CreateOutcome, Store};

use crate::context::Env;
use crate::jobs_file::{self, JobsFileError, Limits, Problem, ScriptJobEntry};

#[derive(Debug, Clone, Args)]
pub struct ScriptsArgs {
    /// The jobs file: a JSON array of jobs, or {"jobs": [...]}.
    #[arg(long)]
    pub jobs_file: PathBuf,
    /// Where `--wait` (and later `collect`) writes the outputs.
    #[arg(long)]
    pub output_dir: Option<PathBuf>,
    /// Collect outputs under their original relative paths instead of DIR/<job_id>.<ext>.
    #[arg(long)]
    pub preserve_paths: bool,
    /// Wait for the batch to finish (and collect when --output-dir is given).
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up after this many seconds (exit 4).
    #[arg(long)]
    pub timeout: Option<u64>,
    /// Batch id (1-128 of [A-Za-z0-9._-]); default: derived from the file's jobs, so re-running
    /// the same file is the same batch and nothing runs twice.
    #[arg(long)]
    pub job_id: Option<String>,
    /// Validate the jobs file and print what would be published, without publishing.
    #[arg(long)]
    pub dry_run: bool,
}

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

/// The cluster's limits for validating a jobs file.
fn limits(env: &Env) -> Limits {
    let consumer_timeout = Duration::from_millis(env.cluster.broker.consumer_timeout_ms);
    Limits {
        consumer_timeout: (consumer_timeout > Duration::ZERO).then_some(consumer_timeout),
        nodes: env
            .cluster
            .nodes
            .iter()
            .map(|n| {
                (
                    n.name.clone(),
                    n.gpu_list().iter().map(|g| g.index + 1).max().unwrap_or(0),
                )
            })
            .collect(),
    }
}

/// Honours `gpu_id` pins without `node`. A job on the shared queue may reach any node, and a
/// node without that GPU can only dead-letter it (`gpu_unavailable`), so: when every node has
/// that GPU index the shared queue is fine; when exactly one node has it, the job is pinned to
/// that node (as if `node` were given); otherwise the file is refused, naming the nodes that have
/// the GPU. Every node of cluster.toml counts, since each runs a script consumer; a node not
/// listed there has no GPUs for scripts. Returns the `(job_id, node)` pins it added.
pub fn route_gpu_pins(
    entries: &mut [ScriptJobEntry],
    nodes: &[NodeConfig],
) -> Result<Vec<(String, String)>, JobsFileError> {
    let mut routed = Vec::new();
    let mut problems = Vec::new();
    for (index, entry) in entries.iter_mut().enumerate() {
        let Some(gpu) = entry.gpu_id.filter(|_| entry.node.is_none()) else {
            continue;
        };
        let having: Vec<&str> = nodes
            .iter()
            .filter(|n| n.gpu_list().iter().any(|g| g.index == gpu))
            .map(|n| n.name.as_str())
            .collect();
        let message = match having.as_slice() {
            _ if !having.is_empty() && having.len() == nodes.len() => continue,
            [only] => {
                entry.node = Some(only.to_string());
                routed.push((entry.job_id.clone(), only.to_string()));
                continue;
            }
            [] if nodes.is_empty() => {
                format!("gpu_id {gpu} cannot be honoured: cluster.toml lists no nodes, and a node not listed has no GPUs for scripts")
            }
            [] => format!("gpu_id {gpu} exists on no node of the cluster"),
            several => format!(
                "gpu_id {gpu} exists only on some nodes ({}), so a node without it could receive the job; add \"node\" to choose one",
                several.join(", ")
            ),
        };
        problems.push(Problem {
            index: Some(index),
            job_id: Some(entry.job_id.clone()),
            message,
        });
    }
    if problems.is_empty() {
        Ok(routed)
    } else {
        Err(JobsFileError(problems))
    }
}

/// FNV-1a, 64 bit: a stable digest for derived ids (not a security boundary).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// `scripts-<file stem>-<digest of the batch>`: the same file and options give the same id.
pub fn derived_batch_id(jobs_file: &Path, batch: &ScriptBatch) -> String {
    let stem: String = jobs_file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("jobs")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(60)
        .collect();
    let digest = fnv1a(
        serde_json::to_string(batch)
            .expect("batch serializes")
            .as_bytes(),
    );
    format!("scripts-{stem}-{digest:016x}")
}

fn to_task(entry: &ScriptJobEntry) -> ScriptJob {
    ScriptJob {
        v: PROTOCOL_VERSION,
        batch_id: String::new(),
        task_id: entry.job_id.clone(),
        script: entry.script.clone(),
        args: entry.args.clone(),
        expected_output: Some(entry.expected_output.clone()),
        timeout_secs: entry.timeout_secs,
        gpu_id: entry.gpu_id,
        node: entry.node.clone(),
        attempt: 1,
        extra: entry.extra.clone(),
    }
}

async fn connect_store(env: &Env) -> anyhow::Result<Store> {
    Ok(Store::connect(&env.redis_url, &env.namespace)
        .await
        .with_context(|| format!("connecting to Redis at {}", env.redis_url_redacted()))?
        .with_job_ttl(env.cluster.jobs.result_ttl_secs))
}

pub async fn run_scripts(env: &Env, args: ScriptsArgs) -> anyhow::Result<i32> {
    let text = std::fs::read_to_string(&args.jobs_file)
        .with_context(|| format!("reading the jobs file {}", args.jobs_file.display()))?;
    let mut entries = jobs_file::parse_and_validate(&text, &limits(env))?;
    for (job_id, node) in route_gpu_pins(&mut entries, &env.cluster.nodes)? {
        tracing::info!(
            "job {job_id}: only node '{node}' has its gpu_id; publishing it to that node's queue"
        );
    }
    let mut batch = ScriptBatch {
        tasks: entries.iter().map(to_task).collect(),
        output_dir: args.output_dir.as_ref().map(|d| d.display().to_string()),
        preserve_paths: args.preserve_paths,
    };
    let batch_id = match &args.job_id {
        Some(id) => id.clone(),
        None => derived_batch_id(&args.jobs_file, &batch),
    };
    for task in &mut batch.tasks {
        task.batch_id = batch_id.clone();
    }
    let mut job = Job::new_script_batch(batch_id.clone(), batch)?;
    job.label = Some(format!("scripts --jobs-file {}", args.jobs_file.display()));
    if args.dry_run {
        println!("{}", serde_json::to_string_pretty(&job)?);
        return Ok(0);
    }
    let store = connect_store(env).await?;
    let already = match store.create_job(&job).await? {
        CreateOutcome::Created => false,
        CreateOutcome::Existing(existing) => {
            job = existing;
            true
        }
    };
    let JobSpec::Scripts(batch) = &job.spec else {
        bail!("job '{batch_id}' exists and is not a script batch")
    };
    // A re-run continues after the publish watermark; settled tasks are never republished.
    let done = store.done_members(&batch_id).await?;
    let dead = store
        .progress(&batch_id)
        .await?
        .map(|p| p.dead_lettered)
        .unwrap_or_default();
    let watermark = crate::publish::published_upto(env, &batch_id).await?;
    let broker = Broker::connect(
        &env.amqp_url,
        &Topology::producer_connection_name(&hostname()),
        &env.namespace,
    )
    .await
    .with_context(|| format!("connecting to RabbitMQ at {}", env.amqp_url_redacted()))?;
    broker
        .declare_topology(&env.cluster.broker)
        .await
        .context("declaring the queues")?;
    let mut pinned_nodes: Vec<&str> = batch
        .tasks
        .iter()
        .filter_map(|t| t.node.as_deref())
        .collect();
    pinned_nodes.sort_unstable();
    pinned_nodes.dedup();
    for node in pinned_nodes {
        broker
            .declare_node_scripts_queue(node, &env.cluster.broker)
            .await?;
    }
    let mut published = 0u64;
    for (index, task) in batch.tasks.iter().enumerate() {
        let member = task.member();
        if (index as u64) < watermark || done.contains(&member) || dead.contains_key(&member) {
            continue;
        }
        broker
            .publish_script(task)
            .await
            .with_context(|| format!("publishing task {}", task.task_id))?;
        published += 1;
        if published.is_multiple_of(32) {
            crate::publish::set_published_upto(env, &batch_id, index as u64 + 1).await?;
        }
    }
    crate::publish::set_published_upto(env, &batch_id, batch.tasks.len() as u64).await?;
    broker.close().await;
    if env.json {
        println!(
            "{}",
            serde_json::json!({ "job_id": batch_id, "tasks": batch.tasks.len(), "published": published, "existing": already })
        );
    } else {
        println!("{batch_id}");
        eprintln!(
            "{} {} script task(s) as batch {batch_id} ({} published now)",
            if already { "resumed" } else { "enqueued" },
            batch.tasks.len(),
            published
        );
    }
    if !args.wait {
        return Ok(0);
    }
    let code = wait_for_batch(
        env,
        &store,
        &batch_id,
        args.timeout.map(Duration::from_secs),
    )
    .await?;
    if code == 4 {
        return Ok(code);
    }
    if let Some(dir) = &args.output_dir {
        let collect = CollectArgs {
            job: batch_id.clone(),
            output_dir: Some(dir.clone()),
            preserve_paths: args.preserve_paths,
        };
        let collected = run_collect(env, collect).await?;
        return Ok(code.max(collected));
    }
    Ok(code)
}

/// Polls the batch's progress until every task is settled; 0 all succeeded, 3 some failed for
/// good, 4 timeout. Progress lines go to stderr.
async fn wait_for_batch(
    env: &Env,
    store: &Store,
    batch_id: &str,
    timeout: Option<Duration>,
) -> anyhow::Result<i32> {
    let started = Instant::now();
    let mut last_line = String::new();
    loop {
        let progress = store
            .progress(batch_id)
            .await?
            .with_context(|| format!("batch {batch_id} vanished from Redis"))?;
        let line = format!(
            "{batch_id}: {}/{} done, {} failed for good",
            progress.chunks_done,
            progress.chunks_total,
            progress.dead_lettered.len()
        );
        if line != last_line && !env.json {
            eprintln!("{line}");
            last_line = line;
        }
        if progress.finished() {
            if progress.succeeded() {
                return Ok(0);
            }
            for (member, reason) in &progress.dead_lettered {
                eprintln!("  {member}: {reason}");
            }
            return Ok(3);
        }
        if timeout.is_some_and(|t| started.elapsed() > t) {
            eprintln!("gave up waiting for {batch_id} (--timeout); it keeps running");
            return Ok(4);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub async fn run_collect(env: &Env, args: CollectArgs) -> anyhow::Result<i32> {
    let store = connect_store(env).await?;
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
                task.failure.as_deref().unwrap_or("failed"),
                task.node
            );
        }
    }
    Ok(if summary.failed > 0 || !summary.pending.is_empty() {
        3
    } else {
        0
    })
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// Where a task's output lands under `dir`.
pub fn output_destination(
    dir: &Path,
    task_id: &str,
    expected_output: &str,
    preserve_paths: bool,
) -> anyhow::Result<PathBuf> {
    if preserve_paths {
        let relative = Path::new(expected_output);
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
    pub failure: Option<String>,
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
            failure: result.failure.clone(),
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
    use seedq_protocol::config::GpusField;
    use seedq_protocol::{GpuConfig, ScriptJob, ScriptOutput};

    fn result(task: &str, success: bool, path: &str, content: &[u8]) -> ScriptResult {
        let job: ScriptJob = serde_json::from_value(serde_json::json!({
            "batch_id": "b", "task_id": task, "script": "s.py", "timeout_secs": 5
        }))
        .unwrap();
        let mut r = ScriptResult::new(&job, "zeus");
        r.success = success;
        r.output = success.then(|| ScriptOutput::new(path, content));
        r.failure = (!success).then(|| "timeout".to_string());
        r
    }

    fn node(name: &str, gpus: GpusField) -> NodeConfig {
        NodeConfig {
            name: name.into(),
            gpus,
            ..NodeConfig::default()
        }
    }

    fn entry(id: &str, gpu_id: Option<u32>, node: Option<&str>) -> ScriptJobEntry {
        ScriptJobEntry {
            job_id: id.into(),
            script: "s.py".into(),
            args: vec![],
            expected_output: format!("o/{id}.json"),
            timeout_secs: 60,
            node: node.map(str::to_string),
            gpu_id,
            extra: Default::default(),
        }
    }

    #[test]
    fn gpu_pins_without_a_node_go_to_the_only_node_with_that_gpu() {
        let sparse = GpusField::Detailed(vec![GpuConfig {
            index: 7,
            model: "RX 6600".into(),
        }]);
        let nodes = [
            node("zeus", GpusField::Count(2)),
            node("rig-a", GpusField::Count(6)),
            node("rig-b", sparse),
        ];
        let mut entries = vec![
            entry("plain", None, None),
            entry("shared", Some(0), Some("zeus")),
            entry("only_rig_a", Some(4), None),
            entry("only_rig_b", Some(7), None),
            entry("explicit", Some(1), Some("rig-a")),
        ];
        let routed = route_gpu_pins(&mut entries, &nodes).unwrap();
        assert_eq!(
            routed,
            vec![
                ("only_rig_a".to_string(), "rig-a".to_string()),
                ("only_rig_b".to_string(), "rig-b".to_string())
            ]
        );
        let pins: Vec<Option<&str>> = entries.iter().map(|e| e.node.as_deref()).collect();
        assert_eq!(
            pins,
            vec![
                None,
                Some("zeus"),
                Some("rig-a"),
                Some("rig-b"),
                Some("rig-a")
            ]
        );
        // The routed job is published like a pinned one.
        assert_eq!(to_task(&entries[2]).node.as_deref(), Some("rig-a"));
    }

    #[test]
    fn gpu_pins_every_node_has_stay_on_the_shared_queue() {
        let nodes = [
            node("zeus", GpusField::Count(2)),
            node("rig-a", GpusField::Count(12)),
        ];
        let mut entries = vec![entry("g0", Some(0), None), entry("g1", Some(1), None)];
        assert!(route_gpu_pins(&mut entries, &nodes).unwrap().is_empty());
        assert!(entries.iter().all(|e| e.node.is_none()));
        // A single node has every GPU it has: nothing to route.
        let mut single = vec![entry("g1", Some(1), None)];
        assert!(route_gpu_pins(&mut single, &nodes[..1]).unwrap().is_empty());
        assert_eq!(single[0].node, None);
    }

    #[test]
    fn gpu_pins_several_but_not_all_nodes_have_are_refused_naming_them() {
        let nodes = [
            node("zeus", GpusField::Count(2)),
            node("rig-a", GpusField::Count(12)),
            node("rig-b", GpusField::Count(12)),
        ];
        let mut entries = vec![
            entry("ok", Some(0), None),
            entry("ambiguous", Some(5), None),
            entry("nowhere", Some(12), None),
        ];
        let error = route_gpu_pins(&mut entries, &nodes).unwrap_err();
        let text = error.to_string();
        assert_eq!(error.0.len(), 2, "{text}");
        assert!(text.contains("nothing was published"), "{text}");
        assert!(
            text.contains("job #1 (ambiguous): gpu_id 5 exists only on some nodes (rig-a, rig-b)"),
            "{text}"
        );
        assert!(text.contains("add \"node\""), "{text}");
        assert!(
            text.contains("job #2 (nowhere): gpu_id 12 exists on no node"),
            "{text}"
        );
        // Without any node in cluster.toml no GPU pin can be honoured.
        let mut entries = vec![entry("g0", Some(0), None)];
        assert!(route_gpu_pins(&mut entries, &[])
            .unwrap_err()
            .to_string()
            .contains("lists no nodes"));
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
