//! `seedq-producer resume JOB`: republishes whatever of a job (or script batch) is neither done
//! nor queued.
//!
//! On a cancelled job it first lifts the cancel, so the members skipped as `cancelled` run after
//! all. What is known per member (chunk `c<i>` or script task `t:<id>`, in plan order): the done
//! set and the dead-letter record (member -> reason) in the store, and the watermark
//! `published_upto` in the job's totals (the scheduler's cursor: leading members claimed for
//! publishing, each published and confirmed, or to be published again by the scheduler if its
//! publisher died, see [`crate::publish`]). So a member is
//! - done: skipped;
//! - dead-lettered: in no work queue any more, republished with the attempt count reset;
//! - at or past the watermark and not settled: never published, so the scheduler's to publish
//!   (the watermark is its cursor): the job is registered with the scheduler again and the room
//!   there is is filled;
//! - below the watermark and not settled: queued, in flight or waiting in the retry queue (the
//!   broker keeps it until it settles, across consumer crashes), left alone. `--outstanding`
//!   republishes these too, for a queue deleted or purged by hand; that is always safe because
//!   results are applied once per member, and costs duplicate work for those still queued.
//!
//! Chunks and script tasks go out through the same confirmed publisher ([`ChunkPublisher`]),
//! script tasks one by one to their (possibly node-pinned) queue.

use std::collections::BTreeSet;

use anyhow::Context;
use clap::Args;
use serde::Serialize;

use seedq_protocol::{Job, JobSpec};

use crate::context::Env;
use crate::publish::ChunkPublisher;

#[derive(Debug, Clone, Args)]
pub struct ResumeArgs {
    /// The job (or script batch) id.
    pub job: String,
    /// Also republish members that are neither done nor dead-lettered (after a producer crash
    /// mid-publish or a deleted queue); harmless duplicates for the ones still queued.
    #[arg(long)]
    pub outstanding: bool,
}

/// What `resume` found for the members that are not done (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct ResumePlan {
    pub dead_lettered: Vec<String>,
    /// At or past the watermark: never claimed for publishing.
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

pub async fn run(env: &Env, args: ResumeArgs) -> anyhow::Result<i32> {
    let store = env.store().await?;
    env.check_unsigned_allowed(&store).await?;
    let job = store
        .load_job(&args.job)
        .await?
        .with_context(|| format!("no job '{}' in namespace '{}'", args.job, env.namespace))?;
    env.check_sealed(&job)?;
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
    let published_upto = store.job_schedule(&args.job).await?.published;
    let plan = plan_resume(&all, &done, &dead, published_upto);
    let mut chosen: Vec<&String> = plan.dead_lettered.iter().collect();
    if args.outstanding {
        chosen.extend(&plan.outstanding);
    }
    // Reopened before the publish (the job must read as running until the republished work
    // settles, and a quick second failure must not be erased by a later reopen); if the publish
    // fails, they are marked dead again, so nothing is left neither dead nor queued.
    // A cancelled job may be finished with nothing dead-lettered (only unpublished chunks
    // left): reopening with no members still clears `finished_at` for the scheduler's chunks.
    if !plan.dead_lettered.is_empty() || was_cancelled {
        store.reopen(&job.job_id, &plan.dead_lettered).await?;
    }
    let republished = match &job.spec {
        JobSpec::Scripts(_) => republish_tasks(env, &store, &job, &chosen).await,
        _ => republish_chunks(env, &store, &job, &chosen).await,
    };
    let published = match republished {
        Ok(n) => n,
        Err(e) => {
            let restore: Vec<(String, String)> = plan
                .dead_lettered
                .iter()
                .map(|m| (m.clone(), progress.dead_lettered[m].clone()))
                .collect();
            if !restore.is_empty() {
                if let Err(undo) = store.mark_dead(&job.job_id, &restore).await {
                    tracing::error!(job = %job.job_id, error = %undo, "could not mark the reopened members dead again; `resume --outstanding` republishes them");
                }
            }
            return Err(
                e.context("republishing; the dead-lettered members stay dead, run `resume` again")
            );
        }
    };
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

/// Republishes the chosen script tasks of a batch, each to its queue with the attempt reset,
/// then registers the batch with the scheduler again (its priority kept) and publishes what the
/// script queues have room for.
async fn republish_tasks(
    env: &Env,
    store: &seedq_store::Store,
    job: &Job,
    chosen: &[&String],
) -> anyhow::Result<usize> {
    let JobSpec::Scripts(batch) = &job.spec else {
        anyhow::bail!("job {} is not a script batch", job.job_id)
    };
    let mut publisher = ChunkPublisher::connect(env).await?;
    for task in &batch.tasks {
        if let Some(node) = &task.node {
            publisher.declare_node_scripts_queue(node).await?;
        }
    }
    for member in chosen {
        let task_id = member.strip_prefix("t:").unwrap_or(member);
        // The stored definition with the batch's epoch and the attempt reset.
        let task = job
            .task_message(task_id)
            .context("task vanished from the batch")?;
        publisher.publish_script(&task).await?;
    }
    reschedule(env, store, job).await?;
    let fed = feed(env, store, &mut publisher).await?;
    publisher.close().await;
    Ok(chosen.len() + fed.for_job(&job.job_id) as usize)
}

/// Republishes the chosen chunks of a seed job through the same confirmed publisher as
/// `sieve` ([`ChunkPublisher`]), registers the job with the scheduler again (its priority kept)
/// and publishes what the seed queue has room for.
async fn republish_chunks(
    env: &Env,
    store: &seedq_store::Store,
    job: &Job,
    chosen: &[&String],
) -> anyhow::Result<usize> {
    let indexes = chosen
        .iter()
        .map(|member| {
            let index: u64 = member
                .trim_start_matches('c')
                .parse()
                .with_context(|| format!("bad member '{member}'"))?;
            anyhow::ensure!(index < job.chunk_count, "chunk outside the job's plan");
            Ok(index)
        })
        .collect::<anyhow::Result<Vec<u64>>>()?;
    let mut publisher = ChunkPublisher::connect(env).await?;
    if !indexes.is_empty() {
        publisher.publish_job_chunks(job, &indexes).await?;
    }
    reschedule(env, store, job).await?;
    let fed = feed(env, store, &mut publisher).await?;
    publisher.close().await;
    Ok(indexes.len() + fed.for_job(&job.job_id) as usize)
}

/// Registers the job (or batch) with the scheduler again, its priority and verification
/// fraction kept, so the rest of its work is published as room frees up.
async fn reschedule(env: &Env, store: &seedq_store::Store, job: &Job) -> anyhow::Result<()> {
    let current = store.job_schedule(&job.job_id).await?;
    let scheduler = &env.cluster.scheduler;
    let priority = current.priority.unwrap_or(scheduler.default_priority);
    if matches!(job.spec, JobSpec::Scripts(_)) {
        store.schedule_batch(&job.job_id, priority).await?;
    } else {
        let fraction = current.verify_fraction.unwrap_or(scheduler.verify_fraction);
        store.schedule_job(&job.job_id, priority, fraction).await?;
    }
    Ok(())
}

/// One run of the scheduler from here (the job just registered again included).
async fn feed(
    env: &Env,
    store: &seedq_store::Store,
    publisher: &mut ChunkPublisher,
) -> anyhow::Result<seedq_scheduler::Fed> {
    publisher
        .feed(
            &seedq_scheduler::Feeder::new(store.clone(), env.cluster.scheduler.clone())
                .leaving_unvouched(),
        )
        .await
}
