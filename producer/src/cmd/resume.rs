//! Operator commands: `nodes`, `cancel`, `resume` and `dlq list|replay|purge`.
//!
//! * `nodes`: the live nodes, from their heartbeats in Redis (a node whose heartbeat expired is
//!   gone): backend, GPUs, slots busy, chunks done and failed, script jobs running against the
//!   node's limit, heartbeat age, and the learned throughput of the node's GPU model per family.
//! * `cancel JOB`: sets the job's cancelled flag in Redis. Consumers check it before running a
//!   chunk or script task and settle the remaining ones as `cancelled` without running them;
//!   work already running finishes normally. The job then ends with those members settled.
//! * `resume JOB`: republishes whatever is neither done nor queued. On a cancelled job it first
//!   lifts the cancel, so the members skipped as `cancelled` run after all. What is known per member
//!   (chunk `c<i>` or script task `t:<id>`, in plan order): the done set and the dead-letter
//!   record (member -> reason) in the store, and the publish watermark `published_upto` in the
//!   job's totals (the number of leading members whose publish the broker confirmed; the
//!   publishers advance it only after the confirms, see `crate::publish`). So a member is
//!   - done: skipped;
//!   - dead-lettered: in no work queue any more, republished with the attempt count reset;
//!   - at or past the watermark and not settled: never published (producer crash mid-publish),
//!     republished;
//!   - below the watermark and not settled: queued, in flight or waiting in the retry queue (the
//!     broker keeps it until it settles, across consumer crashes), left alone. `--outstanding`
//!     republishes these too, for a queue deleted or purged by hand; that is always safe because
//!     results are applied once per member, and costs duplicate work for those still queued.
//! * `dlq list` shows the dead letters with their reason, job, member, attempt and source
//!   queue, without removing them. `dlq replay` puts them back on their original queue (after
//!   the cause was fixed) with the attempt count reset; `dlq purge --yes` drops them. Both take
//!   `--job JOB` to touch only one job's dead letters. Listing and filtering read the queue
//!   with `basic.get` and return what they do not remove (the DLQ has no delivery limit, so
//!   this never loses a message).

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use serde::Serialize;

use seedq_broker::lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicNackOptions, QueuePurgeOptions,
};
use seedq_broker::{headers_of, Broker, Headers};
use seedq_protocol::{headers as h, ChunkMessage, JobSpec, NodeHeartbeat, ScriptJob, Topology};
use seedq_store::Store;

use crate::context::Env;

#[derive(Debug, Clone, Args)]
pub struct NodesArgs {}

#[derive(Debug, Clone, Args)]
pub struct CancelArgs {
    /// The job (or script batch) id.
    pub job: String,
}

#[derive(Debug, Clone, Args)]
pub struct ResumeArgs {
    /// The job (or script batch) id.
    pub job: String,
    /// Also republish members that are neither done nor dead-lettered (after a producer crash
    /// mid-publish or a deleted queue); harmless duplicates for the ones still queued.
    #[arg(long)]
    pub outstanding: bool,
}

#[derive(Debug, Clone, Args)]
pub struct DlqArgs {
    #[command(subcommand)]
    pub action: DlqAction,
}

#[derive(Debug, Clone, Subcommand)]
pub enum DlqAction {
    /// Show the dead letters (they stay in the queue).
    List {
        /// Only this job's dead letters.
        #[arg(long)]
        job: Option<String>,
    },
    /// Put dead letters back on their original queue with the attempt count reset.
    Replay {
        #[arg(long)]
        job: Option<String>,
    },
    /// Delete dead letters.
    Purge {
        #[arg(long)]
        job: Option<String>,
        /// Required: purging cannot be undone.
        #[arg(long)]
        yes: bool,
    },
}

async fn store(env: &Env) -> anyhow::Result<Store> {
    Store::connect(&env.redis_url, &env.namespace)
        .await
        .with_context(|| format!("connecting to Redis at {}", env.redis_url_redacted()))
}

async fn broker(env: &Env) -> anyhow::Result<Broker> {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "operator".into());
    Broker::connect(
        &env.amqp_url,
        &Topology::producer_connection_name(&host),
        &env.namespace,
    )
    .await
    .with_context(|| format!("connecting to RabbitMQ at {}", env.amqp_url_redacted()))
}

// ----- nodes -----------------------------------------------------------------------------------

#[derive(Debug, Serialize)]
struct NodeView {
    #[serde(flatten)]
    heartbeat: NodeHeartbeat,
    heartbeat_age_secs: f64,
    /// Learned throughput of the node's GPU model, family -> units per second.
    throughput: BTreeMap<String, f64>,
}

pub async fn run_nodes(env: &Env, _args: NodesArgs) -> anyhow::Result<i32> {
    let store = store(env).await?;
    let nodes = store.list_nodes().await?;
    let rates = store.all_throughput().await?;
    let now = seedq_protocol::now_ms();
    let views: Vec<NodeView> = nodes
        .into_iter()
        .map(|hb| {
            let throughput = rates
                .iter()
                .filter(|(model, _, _)| *model == hb.gpu_model)
                .map(|(_, family, rate)| (family.clone(), *rate))
                .collect();
            NodeView {
                heartbeat_age_secs: now.saturating_sub(hb.at_ms) as f64 / 1000.0,
                heartbeat: hb,
                throughput,
            }
        })
        .collect();
    if env.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "nodes": views }))?
        );
        return Ok(0);
    }
    if views.is_empty() {
        eprintln!(
            "no live nodes in namespace '{}' (start seedq-consumer on the rigs)",
            env.namespace
        );
        return Ok(0);
    }
    println!(
        "{:<16} {:<8} {:>4} {:>10} {:>12} {:>7} {:>8} {:>6}  LEARNED THROUGHPUT (units/s)",
        "NODE", "BACKEND", "GPUS", "SLOTS BUSY", "CHUNKS DONE", "FAILED", "SCRIPTS", "AGE"
    );
    for v in &views {
        let hb = &v.heartbeat;
        let rates = if v.throughput.is_empty() {
            "-".to_string()
        } else {
            v.throughput
                .iter()
                .map(|(family, rate)| format!("{family}={rate:.3e}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        println!(
            "{:<16} {:<8} {:>4} {:>10} {:>12} {:>7} {:>8} {:>5.0}s  {}",
            hb.node,
            hb.backend,
            hb.gpus.len(),
            format!("{}/{}", hb.busy_slots, hb.slots.len()),
            hb.chunks_done,
            hb.chunks_failed,
            format!("{}/{}", hb.scripts_running, hb.script_limit),
            v.heartbeat_age_secs,
            rates
        );
        for slot in &hb.slots {
            if let Some(busy) = &slot.busy_with {
                println!("    {:<10} {} busy with {busy}", slot.slot, slot.backend);
            }
        }
    }
    Ok(0)
}

// ----- cancel ----------------------------------------------------------------------------------

pub async fn run_cancel(env: &Env, args: CancelArgs) -> anyhow::Result<i32> {
    let store = store(env).await?;
    if store.load_job(&args.job).await?.is_none() {
        bail!(
            "no job '{}' in namespace '{}' (see `seedq-producer status`)",
            args.job,
            env.namespace
        );
    }
    store.cancel(&args.job).await?;
    let progress = store
        .progress(&args.job)
        .await?
        .context("job vanished while cancelling")?;
    if env.json {
        println!(
            "{}",
            serde_json::json!({ "job_id": args.job, "cancelled": true, "chunks_done": progress.chunks_done, "chunks_total": progress.chunks_total })
        );
    } else {
        println!("{}", args.job);
        eprintln!(
            "cancelled {}: {} of {} done; queued work will be skipped, running work finishes",
            args.job, progress.chunks_done, progress.chunks_total
        );
    }
    Ok(0)
}

// ----- resume ----------------------------------------------------------------------------------

/// What `resume` found for the members that are not done (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct ResumePlan {
    pub dead_lettered: Vec<String>,
    /// At or past the publish watermark: never confirmed by the broker.
    pub unpublished: Vec<String>,
    /// Below the watermark and not settled: queued or in flight.
    pub outstanding: Vec<String>,
}

/// Classifies the members (in plan order) that are not done.
pub fn plan_resume(
    all: &[String],
    done: &BTreeSet<String>,
    dead: &BTreeSet<String>,
    published_upto: u64,
) -> ResumePlan {
    let mut plan = ResumePlan::default();
    for (index, member) in all.iter().enumerate() {
        if done.contains(member) {
            continue;
        }
        if dead.contains(member) {
            plan.dead_lettered.push(member.clone());
        } else if index as u64 >= published_upto {
            plan.unpublished.push(member.clone());
        } else {
            plan.outstanding.push(member.clone());
        }
    }
    plan
}

pub async fn run_resume(env: &Env, args: ResumeArgs) -> anyhow::Result<i32> {
    let store = store(env).await?;
    let job = store
        .load_job(&args.job)
        .await?
        .with_context(|| format!("no job '{}' in namespace '{}'", args.job, env.namespace))?;
    // Resuming a cancelled job lifts the cancel first; the chunks it skipped are dead-lettered
    // with reason `cancelled` and are reopened and republished below like any dead letter.
    let was_cancelled = store.is_cancelled(&args.job).await?;
    if was_cancelled {
        store.uncancel(&args.job).await?;
    }
    let done: BTreeSet<String> = store.done_members(&args.job).await?.into_iter().collect();
    let progress = store.progress(&args.job).await?.context("job vanished")?;
    let dead: BTreeSet<String> = progress.dead_lettered.keys().cloned().collect();
    let all: Vec<String> = match &job.spec {
        JobSpec::Scripts(batch) => batch.tasks.iter().map(|t| t.member()).collect(),
        _ => (0..job.chunk_count)
            .map(seedq_protocol::chunk_member)
            .collect(),
    };
    let published_upto = crate::publish::published_upto(env, &args.job).await?;
    let plan = plan_resume(&all, &done, &dead, published_upto);
    let mut chosen: Vec<&String> = plan.dead_lettered.iter().chain(&plan.unpublished).collect();
    if args.outstanding {
        chosen.extend(&plan.outstanding);
    }
    let broker = broker(env).await?;
    broker.declare_topology(&env.cluster.broker).await?;
    if !plan.dead_lettered.is_empty() {
        // Before publishing: the job must read as running until the republished work settles.
        store.reopen(&args.job, &plan.dead_lettered).await?;
    }
    let mut published = 0usize;
    for member in &chosen {
        match &job.spec {
            JobSpec::Scripts(batch) => {
                let task_id = member.strip_prefix("t:").unwrap_or(member);
                let mut task = batch
                    .tasks
                    .iter()
                    .find(|t| t.task_id == task_id)
                    .context("task vanished from the batch")?
                    .clone();
                task.batch_id = job.job_id.clone();
                task.attempt = 1;
                if let Some(node) = &task.node {
                    broker
                        .declare_node_scripts_queue(node, &env.cluster.broker)
                        .await?;
                }
                broker.publish_script(&task).await?;
            }
            _ => {
                let index: u64 = member
                    .trim_start_matches('c')
                    .parse()
                    .with_context(|| format!("bad member '{member}'"))?;
                let seeds = job
                    .chunk_seeds(index)
                    .context("chunk outside the job's plan")?;
                let msg = ChunkMessage::new(job.job_id.clone(), job.kind(), index, seeds);
                broker.publish_chunk(&job, &msg).await?;
            }
        }
        published += 1;
    }
    if !plan.unpublished.is_empty() {
        crate::publish::set_published_upto(env, &args.job, all.len() as u64).await?;
    }
    broker.close().await;
    let summary = serde_json::json!({
        "job_id": args.job,
        "was_cancelled": was_cancelled,
        "republished": published,
        "dead_lettered": plan.dead_lettered.len(),
        "unpublished": plan.unpublished.len(),
        "outstanding": plan.outstanding.len(),
        "outstanding_republished": args.outstanding,
        "done": done.len(),
        "total": all.len(),
    });
    if env.json {
        println!("{summary}");
    } else {
        println!("{}", args.job);
        eprintln!(
            "resumed {}{}: republished {published} ({} dead-lettered, {} never published{}); {} done of {}{}",
            args.job,
            if was_cancelled { " (cancel lifted)" } else { "" },
            plan.dead_lettered.len(),
            plan.unpublished.len(),
            if args.outstanding { format!(", {} outstanding", plan.outstanding.len()) } else { String::new() },
            done.len(),
            all.len(),
            if !args.outstanding && !plan.outstanding.is_empty() {
                format!("; {} not done are queued or in flight (add --outstanding if they were lost)", plan.outstanding.len())
            } else {
                String::new()
            }
        );
    }
    Ok(0)
}

// ----- dlq -------------------------------------------------------------------------------------

/// One dead letter as `dlq list` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadLetter {
    pub job: Option<String>,
    pub kind: Option<String>,
    /// `c<index>` or `t:<task>` when the body parses.
    pub member: Option<String>,
    pub attempt: Option<String>,
    pub reason: String,
    pub detail: Option<String>,
    pub source_queue: Option<String>,
    pub node: Option<String>,
    pub bytes: usize,
}

/// A dead letter's body, understood.
enum Body {
    Chunk(ChunkMessage),
    Script(ScriptJob),
    Unknown,
}

fn parse_body(data: &[u8]) -> Body {
    if let Ok(chunk) = ChunkMessage::from_json(data) {
        return Body::Chunk(chunk);
    }
    match ScriptJob::from_json(data) {
        Ok(script) => Body::Script(script),
        Err(_) => Body::Unknown,
    }
}

/// Describes a dead letter from its headers and body.
pub fn describe(headers: &Headers, data: &[u8]) -> DeadLetter {
    let body = parse_body(data);
    let (job, member) = match &body {
        Body::Chunk(c) => (Some(c.job_id.clone()), Some(c.member())),
        Body::Script(s) => (Some(s.batch_id.clone()), Some(s.member())),
        Body::Unknown => (headers.get(h::JOB).cloned(), None),
    };
    // Broker-side dead letters (delivery limit) carry x-death / x-first-death-reason instead.
    let reason = headers
        .get(h::ERROR)
        .cloned()
        .or_else(|| {
            headers
                .get("x-first-death-reason")
                .map(|r| format!("broker:{r}"))
        })
        .unwrap_or_else(|| "unknown".into());
    DeadLetter {
        job,
        kind: headers.get(h::KIND).cloned(),
        member,
        attempt: headers.get(h::ATTEMPT).cloned(),
        reason,
        detail: headers.get(h::ERROR_DETAIL).cloned(),
        source_queue: headers
            .get(h::SOURCE_QUEUE)
            .cloned()
            .or_else(|| headers.get("x-first-death-queue").cloned()),
        node: headers.get(h::NODE).cloned(),
        bytes: data.len(),
    }
}

/// Where a replayed dead letter goes, and its body and headers with the attempt reset.
fn replay_target(
    topology: &Topology,
    letter: &DeadLetter,
    headers: &Headers,
    data: &[u8],
) -> Option<(String, Vec<u8>, Headers)> {
    let mut headers: Headers = headers
        .iter()
        .filter(|(k, _)| {
            !k.starts_with("x-death")
                && !k.starts_with("x-first-death")
                && !k.starts_with("x-last-death")
        })
        .filter(|(k, _)| ![h::ERROR, h::ERROR_DETAIL, h::SOURCE_QUEUE].contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    headers.insert(h::ATTEMPT.to_string(), "1".to_string());
    match parse_body(data) {
        Body::Chunk(mut chunk) => {
            chunk.attempt = 1;
            let queue = letter
                .source_queue
                .clone()
                .unwrap_or_else(|| topology.seeds_queue());
            Some((queue, chunk.to_json(), headers))
        }
        Body::Script(mut script) => {
            script.attempt = 1;
            let queue = letter
                .source_queue
                .clone()
                .unwrap_or_else(|| topology.script_queue_for(script.node.as_deref()));
            Some((queue, script.to_json(), headers))
        }
        // A body no consumer understands would only come straight back.
        Body::Unknown => None,
    }
}

#[derive(Debug, Default, Serialize)]
struct DlqReport {
    action: String,
    matched: usize,
    replayed: usize,
    purged: usize,
    skipped_unreadable: usize,
    letters: Vec<DeadLetter>,
}

pub async fn run_dlq(env: &Env, args: DlqArgs) -> anyhow::Result<i32> {
    let broker = broker(env).await?;
    let topology = broker.topology().clone();
    let dlq = topology.dlq();
    let (action, filter) = match &args.action {
        DlqAction::List { job } => ("list", job.clone()),
        DlqAction::Replay { job } => ("replay", job.clone()),
        DlqAction::Purge { job, yes } => {
            if !yes {
                bail!("dlq purge deletes dead letters for good; add --yes to confirm");
            }
            ("purge", job.clone())
        }
    };
    let channel = broker.channel().await?;
    // Replays re-open their jobs in Redis (see `Store::reopen`).
    let store = if action == "replay" {
        Some(store(env).await?)
    } else {
        None
    };
    let mut report = DlqReport {
        action: action.to_string(),
        ..Default::default()
    };
    if action == "purge" && filter.is_none() {
        let purged = channel
            .queue_purge(dlq.as_str().into(), QueuePurgeOptions::default())
            .await
            .context("purging the DLQ")?;
        report.purged = purged as usize;
    } else {
        // Take every message once (they stay unacked, so basic.get never returns one twice),
        // act on the matching ones, and give the rest back.
        while let Some(message) = channel
            .basic_get(dlq.as_str().into(), BasicGetOptions::default())
            .await
            .with_context(|| format!("reading {dlq} (does the namespace exist?)"))?
        {
            let delivery = message.delivery;
            let headers = headers_of(&delivery.properties);
            let letter = describe(&headers, &delivery.data);
            let matches = filter
                .as_ref()
                .is_none_or(|job| letter.job.as_deref() == Some(job.as_str()));
            if !matches {
                continue;
            }
            report.matched += 1;
            match action {
                "replay" => match replay_target(&topology, &letter, &headers, &delivery.data) {
                    Some((queue, body, headers)) => {
                        if queue.starts_with(&format!("{}.scripts.", env.namespace)) {
                            let node = &queue[env.namespace.len() + ".scripts.".len()..];
                            broker
                                .declare_node_scripts_queue(node, &env.cluster.broker)
                                .await?;
                        }
                        if let (Some(store), Some(job), Some(member)) =
                            (&store, &letter.job, &letter.member)
                        {
                            store.reopen(job, std::slice::from_ref(member)).await?;
                        }
                        broker
                            .publish_raw(&queue, &body, &headers)
                            .await
                            .with_context(|| format!("republishing to {queue}"))?;
                        delivery
                            .acker
                            .ack(BasicAckOptions::default())
                            .await
                            .context("acking the replayed dead letter")?;
                        report.replayed += 1;
                    }
                    None => report.skipped_unreadable += 1,
                },
                "purge" => {
                    delivery
                        .acker
                        .ack(BasicAckOptions::default())
                        .await
                        .context("acking the purged dead letter")?;
                    report.purged += 1;
                }
                _ => {}
            }
            report.letters.push(letter);
        }
        // Everything not acked goes back (closing the channel does it too if this fails).
        if let Err(e) = channel
            .basic_nack(
                0,
                BasicNackOptions {
                    multiple: true,
                    requeue: true,
                },
            )
            .await
        {
            tracing::debug!(error = %e, "nack of the unmatched dead letters; the channel close returns them");
        }
    }
    let _ = channel.close(200, "done".into()).await;
    broker.close().await;
    if env.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(0);
    }
    for l in &report.letters {
        println!(
            "{:<24} {:<10} {:<16} attempt {:<3} {:<22} {} {}",
            l.job.as_deref().unwrap_or("?"),
            l.kind.as_deref().unwrap_or("?"),
            l.member.as_deref().unwrap_or("(unreadable body)"),
            l.attempt.as_deref().unwrap_or("?"),
            l.reason,
            l.source_queue
                .as_deref()
                .map(|q| format!("from {q}"))
                .unwrap_or_default(),
            l.detail.as_deref().unwrap_or("")
        );
    }
    match action {
        "list" => eprintln!(
            "{} dead letter(s){}",
            report.matched,
            filter.map(|j| format!(" of job {j}")).unwrap_or_default()
        ),
        "replay" => eprintln!(
            "replayed {} dead letter(s) to their queues with attempts reset{}",
            report.replayed,
            if report.skipped_unreadable > 0 {
                format!(
                    "; {} unreadable ones left in the DLQ",
                    report.skipped_unreadable
                )
            } else {
                String::new()
            }
        ),
        _ => eprintln!("purged {} dead letter(s)", report.purged),
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use seedq_core::SeedSet;
    use seedq_protocol::JobKind;

    #[test]
    fn resume_plan_splits_dead_and_outstanding() {
        let all: Vec<String> = (0..6).map(seedq_protocol::chunk_member).collect();
        let done = BTreeSet::from(["c0".to_string(), "c3".to_string()]);
        let dead = BTreeSet::from(["c1".to_string(), "c3".to_string(), "c5".to_string()]);
        let plan = plan_resume(&all, &done, &dead, 4);
        assert_eq!(plan.dead_lettered, vec!["c1", "c5"]);
        assert_eq!(plan.outstanding, vec!["c2"]);
        assert_eq!(plan.unpublished, vec!["c4"]);
    }

    #[test]
    fn dead_letters_are_described_and_replayed_with_attempts_reset() {
        let topology = Topology::new("t1");
        let mut chunk = ChunkMessage::new(
            "job-1",
            JobKind::Sieve,
            7,
            SeedSet::Range { start: 70, end: 80 },
        );
        chunk.attempt = 5;
        let headers = Headers::from([
            (h::ERROR.to_string(), "invalid_spec".to_string()),
            (h::ERROR_DETAIL.to_string(), "bad".to_string()),
            (h::SOURCE_QUEUE.to_string(), "t1.seeds".to_string()),
            (h::ATTEMPT.to_string(), "5".to_string()),
            (h::KIND.to_string(), "sieve".to_string()),
        ]);
        let letter = describe(&headers, &chunk.to_json());
        assert_eq!(letter.member.as_deref(), Some("c7"));
        assert_eq!(letter.reason, "invalid_spec");
        let (queue, body, new_headers) =
            replay_target(&topology, &letter, &headers, &chunk.to_json()).unwrap();
        assert_eq!(queue, "t1.seeds");
        assert_eq!(ChunkMessage::from_json(&body).unwrap().attempt, 1);
        assert_eq!(new_headers.get(h::ATTEMPT).map(String::as_str), Some("1"));
        assert!(!new_headers.contains_key(h::ERROR));
        // Broker-side dead letters and unreadable bodies.
        let broker_side = Headers::from([(
            "x-first-death-reason".to_string(),
            "delivery_limit".to_string(),
        )]);
        let letter = describe(&broker_side, b"{not json");
        assert_eq!(letter.reason, "broker:delivery_limit");
        assert!(replay_target(&topology, &letter, &broker_side, b"{not json").is_none());
        // A pinned script job goes back to its node's queue.
        let script: ScriptJob = serde_json::from_value(serde_json::json!({
            "batch_id": "b", "task_id": "t", "script": "s.py", "timeout_secs": 5, "node": "zeus", "attempt": 3
        }))
        .unwrap();
        let letter = describe(&Headers::new(), &script.to_json());
        let (queue, body, _) =
            replay_target(&topology, &letter, &Headers::new(), &script.to_json()).unwrap();
        assert_eq!(queue, "t1.scripts.zeus");
        assert_eq!(ScriptJob::from_json(&body).unwrap().attempt, 1);
    }
}
