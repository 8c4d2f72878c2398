//! `seedq-producer scripts --jobs-file FILE`: enqueue a jobs file as a script batch.
//!
//! The whole file is parsed and validated first ([`crate::jobs_file`]: nothing is published when
//! anything is wrong), then the batch is stored as one job in Redis (the batch id is the job id;
//! `--job-id`, else derived from the file's content so re-running the same file is the same job
//! and nothing is counted twice), then registered with the scheduler's scripts lane at
//! `--priority`: the tasks go out in the batch's order as script permits free up, most urgent
//! batch first (`docs/scheduling.md`), each confirmed, to `<ns>.scripts`, or to
//! `<ns>.scripts.<node>` when the task is pinned to a node. A `gpu_id` pin
//! without `node` is routed by [`route_gpu_pins`] so that only a node with that GPU can take it
//! (or refused when that needs a choice of node). It prints the batch id. `--wait` follows the
//! batch like `wait` does ([`crate::watch`]); with `--output-dir` the outputs are then collected
//! ([`crate::cmd::collect`]).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;

use seedq_protocol::{
    Job, JobSpec, NodeConfig, Priority, ScriptBatch, ScriptJob, PROTOCOL_VERSION,
};
use seedq_scheduler::Feeder;
use seedq_store::{CreateOutcome, Scheduled, Store};

use crate::cmd::collect::{self, CollectArgs};
use crate::cmd::{EXIT_DEAD_LETTERED, EXIT_TIMEOUT};
use crate::context::Env;
use crate::jobs_file::{self, JobsFileError, Limits, Problem, ScriptJobEntry};
use crate::watch::JobWatch;

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
    /// high, normal or low (default: `scheduler.default_priority` in the config, normal). A
    /// free script permit always takes the most urgent batch's next task; batches of one
    /// priority take turns. Re-running the command with another priority changes the batch's.
    #[arg(long)]
    pub priority: Option<Priority>,
    /// Validate the jobs file and print what would be published, without publishing.
    #[arg(long)]
    pub dry_run: bool,
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
    let digest = crate::naming::fnv1a64(
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
        env: entry.env.clone(),
        node: entry.node.clone(),
        attempt: 1,
        epoch: 0,
        finished: None,
        extra: entry.extra.clone(),
    }
}

pub async fn run(env: &Env, args: ScriptsArgs) -> anyhow::Result<i32> {
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
    env.seal(&mut job);
    if args.dry_run {
        println!("{}", serde_json::to_string_pretty(&job)?);
        return Ok(0);
    }
    let store = env
        .store()
        .await?
        .with_job_ttl(env.cluster.jobs.result_ttl_secs);
    env.check_unsigned_allowed(&store).await?;
    let already = match store.create_job(&job).await? {
        CreateOutcome::Created => false,
        CreateOutcome::Existing(existing) => {
            job = existing;
            true
        }
    };
    env.check_sealed(&job)?;
    let JobSpec::Scripts(batch) = &job.spec else {
        bail!("job '{batch_id}' exists and is not a script batch")
    };
    // Pinned tasks' queues exist before any feeder (here or on a consumer) publishes to them.
    let mut broker = crate::publish::ChunkPublisher::connect(env).await?;
    let mut pinned_nodes: Vec<&str> = batch
        .tasks
        .iter()
        .filter_map(|t| t.node.as_deref())
        .collect();
    pinned_nodes.sort_unstable();
    pinned_nodes.dedup();
    for node in pinned_nodes {
        broker.declare_node_scripts_queue(node).await?;
    }
    // The scheduler publishes the tasks, most urgent batch first, as script permits free up
    // (a re-run only registers again, with this priority: nothing runs twice).
    let priority = args
        .priority
        .unwrap_or(env.cluster.scheduler.default_priority);
    if store.schedule_batch(&batch_id, priority).await? == Scheduled::UnknownJob {
        bail!("batch {batch_id} vanished from Redis before it could be scheduled (expired or deleted?); run the command again");
    }
    let feeder = Feeder::new(store.clone(), env.cluster.scheduler.clone()).leaving_unvouched();
    let published = broker
        .feed(&feeder)
        .await
        .with_context(|| format!("batch {batch_id} is created and scheduled; running consumers publish its tasks once the broker takes them"))?
        .for_job(&batch_id);
    broker.close().await;
    if env.json {
        println!(
            "{}",
            serde_json::json!({ "job_id": batch_id, "tasks": batch.tasks.len(), "published": published, "existing": already })
        );
    } else {
        println!("{batch_id}");
        eprintln!(
            "{} {} script task(s) as batch {batch_id} at priority {priority} ({published} published now, the rest as script permits free up)",
            if already { "resumed" } else { "enqueued" },
            batch.tasks.len(),
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
    if code == EXIT_TIMEOUT {
        return Ok(code);
    }
    if let Some(dir) = &args.output_dir {
        let collect = CollectArgs {
            job: batch_id.clone(),
            output_dir: Some(dir.clone()),
            preserve_paths: args.preserve_paths,
        };
        let collected = collect::run(env, collect).await?;
        return Ok(code.max(collected));
    }
    Ok(code)
}

/// Follows the batch until every task is settled, re-reading its progress when a task settles
/// (or on the watch's slow timer); 0 all succeeded, [`EXIT_DEAD_LETTERED`] some failed for good,
/// [`EXIT_TIMEOUT`] timeout. A progress line goes to stderr whenever it changes.
async fn wait_for_batch(
    env: &Env,
    store: &Store,
    batch_id: &str,
    timeout: Option<Duration>,
) -> anyhow::Result<i32> {
    let started = Instant::now();
    let mut watch = JobWatch::subscribe(store, batch_id, timeout.map(|t| started + t)).await;
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
            return Ok(EXIT_DEAD_LETTERED);
        }
        if timeout.is_some_and(|t| started.elapsed() > t) {
            eprintln!("gave up waiting for {batch_id} (--timeout); it keeps running");
            return Ok(EXIT_TIMEOUT);
        }
        watch.changed().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use seedq_protocol::config::GpusField;
    use seedq_protocol::GpuConfig;

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
            env: Default::default(),
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
}
