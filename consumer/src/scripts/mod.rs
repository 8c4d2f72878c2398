//! The node's script consumer: pulls script jobs from RabbitMQ, runs each one with
//! [`runner`], stores the outcome in Redis, and only then acks.
//!
//! # Queues and concurrency
//!
//! The node consumes two queues, each on its own channel, both with consumer tag
//! `<node>/scripts`: the shared `<ns>.scripts` (any node may run these) and
//! `<ns>.scripts.<node>` (jobs pinned to this node). Per-node concurrency is prefetch: each
//! channel has `basic.qos` prefetch = the node's `max_script_jobs`, so the broker never hands the
//! node more than that from one queue, and a node that finishes a job immediately receives the
//! next one (a pull queue: no static round-robin, no batch barrier).
//!
//! **Trade-off.** Quorum queues do not support global (per-channel) QoS, so prefetch is per
//! consumer and the two consumers together may hold up to `2 x limit` deliveries. A local
//! semaphore of `limit` permits makes sure the node never *runs* more than `limit` jobs; a
//! delivery that waits for a permit stays unacked on this node. Jobs from the pinned queue could
//! not run anywhere else anyway; the cost is that while pinned jobs occupy every permit, up to
//! `limit` shared jobs wait here instead of going to a free node. Consuming with `basic.get`
//! polling would avoid that at the price of latency and broker load; pinned jobs are rare, so
//! prefetch wins.
//!
//! # One job
//!
//! 1. Check the signature when the node has a job key (missing or wrong: dead letter
//!    `bad_signature`, nothing run); parse ([`ScriptJob::from_json`]); a malformed message goes
//!    to the dead-letter queue at once. A job pinned to another node is forwarded to its queue.
//! 2. Skip it (ack, settled as `cancelled`) when the batch is cancelled; ack without running
//!    when the task is already done (redelivery after a crash between write and ack); refuse it
//!    when the batch does not exist in Redis.
//! 3. Wait for a permit, take a GPU ([`gpu::GpuPool`]: the pin, or the least-loaded GPU), run
//!    the script ([`runner::run`]: no shell, script root, a private output directory, process
//!    group, hard timeout, fresh output, JSON status). A task whose `expected_output` is a fixed
//!    path first waits until no other run on this node writes that path: two runs writing one
//!    file would each pass the freshness check on the other's write, and the first to finish
//!    would upload the other's output and delete it. Outputs under `{output_dir}` are private to
//!    the run and need no such wait.
//! 4. Success: write output content, exit status, duration and log tails to Redis
//!    (`apply_script_result`, exactly once), then remove the local output file and the run's
//!    private output directory, then ack (and check the ack).
//! 5. Failure: keep the attempt's record in Redis, then either republish through the delay
//!    queue with the attempt bumped (backoff with jitter, `[retry]` in cluster.toml) or, after
//!    the last attempt or for a failure that cannot succeed on retry (path outside the root,
//!    missing script, GPU pin the node lacks), publish to the dead-letter queue with the reason
//!    in `x-seedq-error`; then ack. Redis is always written before anything is published.
//! 6. Redis unreachable or not taking writes (down, OOM, BUSY...) at any step: the job is parked
//!    in the delay queue without using an attempt, like seed chunks, so an outage of any length
//!    dead-letters and loses nothing. A run that finished is never run again for it: its result
//!    rides in the parked message ([`ScriptJob::finished`]) and is stored when it comes back.
//!
//! Every message carries its batch's epoch: a message of an earlier batch under the same id is
//! dead-lettered as `stale_message` and touches nothing, and the node runs the task as the
//! STORED batch defines it, never the message's copy. A task redelivered while it still runs on
//! this node (the broker lost the node's channel) waits for that run and is then acked as done.
//!
//! # Broker failures
//!
//! Each queue is consumed by its own loop ([`crate::settle::keep_subscribed`]). A channel-level failure (queue
//! deleted, `consumer_timeout`) re-opens that channel and re-subscribes with backoff while the
//! connection is fine; after a connection loss the loop waits for the supervisor's new
//! connection. Jobs already running carry on and settle through the current connection.
//!
//! A job's timeout is clamped to the broker's `consumer_timeout` minus a margin, and the wait for
//! a local permit is bounded by what is left of it after the job's own timeout (past that the
//! job is handed back to its queue), so wait plus run never make RabbitMQ close the channel
//! (and redeliver every job on it).
//!
//! # Shutdown
//!
//! When the node drains, the consumers are cancelled (no new jobs). Running scripts get
//! [`DRAIN_GRACE`] to finish; after that they are killed (the whole process group) and their
//! deliveries are returned to the queue for another node, as are deliveries still waiting for
//! a permit.

pub mod gpu;
pub mod runner;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use seedq_broker::{Broker, Inbound, Subscription};
use seedq_protocol::{
    FailureEvent, FailureReason, Job, ScriptJob, ScriptOutput, ScriptResult, Topology,
};
use seedq_store::{ApplyOutcome, RecordOutcome, Store, StoreError};
use tokio::sync::{mpsc, watch, Semaphore};

use crate::context::NodeContext;
use crate::metrics::Metrics;
use crate::settle::{keep_subscribed, HandBack, Settle, Settler, Subject};

use self::gpu::GpuPool;
use self::runner::{RunReport, RunRequest, ScriptRoot};

/// How long running scripts may continue after the node starts draining.
pub const DRAIN_GRACE: Duration = Duration::from_secs(30);

/// Head-room kept below the broker's `consumer_timeout` for killing, uploading and acking.
const ACK_MARGIN: Duration = Duration::from_secs(60);

/// Shortest wait for a permit (or for a run of the same task on this node) before a job is
/// handed back, even when its timeout leaves less.
const MIN_PERMIT_WAIT: Duration = Duration::from_secs(1);

/// Held while a task (batch id, member) runs on this node, or while a run writes a fixed
/// output path.
type TaskLock = Arc<tokio::sync::Mutex<()>>;

/// A stored batch as this node uses it.
struct LoadedBatch {
    job: Job,
    /// With a job key: whether the record's seal holds ([`crate::jobs::check_seal`]). Checking
    /// re-serialises the whole batch, so it is done once per load, not once per task message
    /// (the seed path's [`crate::jobs::CachedJob::sealed`] does the same).
    sealed: Result<(), crate::jobs::Rejection>,
}

/// Everything a job handler needs, shared by all of the node's script tasks.
struct Shared {
    node: String,
    node_env: Vec<(String, String)>,
    root: ScriptRoot,
    interpreter: PathBuf,
    store: Store,
    /// For the current broker connection (replaced by the node's supervisor after a loss).
    ctx: Arc<NodeContext>,
    settler: Settler,
    topology: Topology,
    consumer_timeout: Duration,
    max_timeout: Duration,
    metrics: Arc<Metrics>,
    gpus: Arc<GpuPool>,
    permits: Arc<Semaphore>,
    /// Tasks (done-set member per batch) running or about to run on this node: a redelivery of
    /// one waits for it here instead of running it a second time.
    running: std::sync::Mutex<HashMap<(String, String), TaskLock>>,
    /// Fixed output paths (resolved) that a run on this node writes, from before its start until
    /// its output is stored and removed.
    outputs: std::sync::Mutex<HashMap<PathBuf, TaskLock>>,
    /// Stored batches by id (a batch is immutable once created; its epoch tells lives apart).
    batches: std::sync::Mutex<HashMap<String, Arc<LoadedBatch>>>,
    shutdown: watch::Receiver<bool>,
}

/// Serves the node's script queues until the node shuts down.
pub async fn serve(ctx: Arc<NodeContext>) -> anyhow::Result<()> {
    let node_config = ctx.node_config().clone();
    let node = ctx.node_name().to_string();
    let limit = node_config.max_script_jobs.max(1);
    let root = ScriptRoot::new(std::path::Path::new(&node_config.script_root)).with_context(|| {
        format!("script root '{}' of node {node} (script_root in cluster.toml) is not a readable directory", node_config.script_root)
    })?;
    let consumer_timeout = Duration::from_millis(ctx.cluster().broker.consumer_timeout_ms);
    let shared = Arc::new(Shared {
        node: node.clone(),
        node_env: node_config
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        interpreter: PathBuf::from(&node_config.python_env),
        gpus: GpuPool::new(node_config.gpu_list().iter().map(|g| g.index).collect()),
        root,
        store: ctx.store().clone(),
        settler: Settler::new(Arc::clone(&ctx), "scripts"),
        ctx: Arc::clone(&ctx),
        topology: Topology::new(ctx.namespace()),
        consumer_timeout,
        max_timeout: consumer_timeout
            .saturating_sub(ACK_MARGIN)
            .max(Duration::from_secs(1)),
        metrics: ctx.metrics(),
        permits: Arc::new(Semaphore::new(limit as usize)),
        running: std::sync::Mutex::new(HashMap::new()),
        outputs: std::sync::Mutex::new(HashMap::new()),
        batches: std::sync::Mutex::new(HashMap::new()),
        shutdown: ctx.shutdown_signal(),
    });
    tracing::info!(node = %node, limit, root = %shared.root.path().display(), "script consumer starting");
    let (deliveries, received) = mpsc::unbounded_channel();
    let [shared_queue, pinned_queue] = [
        shared.topology.scripts_queue(),
        shared.topology.node_scripts_queue(&node),
    ]
    .map(|queue| {
        let shared = Arc::clone(&shared);
        let deliveries = deliveries.clone();
        async move {
            let what = queue.clone();
            keep_subscribed(&shared.ctx, &what, |broker| {
                subscribe(&shared, broker, &queue, limit, &deliveries)
            })
            .await
        }
    });
    // The dispatcher ends once both subscriptions have ended (shutdown) and dropped their senders.
    drop(deliveries);
    tokio::join!(shared_queue, pinned_queue, dispatch(&shared, received));
    tracing::info!(node = %node, "script consumer stopped");
    Ok(())
}

/// Runs every delivery as a task; after the subscriptions end, waits for running jobs (each
/// handles the drain itself) to settle.
async fn dispatch(shared: &Arc<Shared>, mut received: mpsc::UnboundedReceiver<Inbound>) {
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            next = received.recv() => match next {
                Some(inbound) => {
                    let shared = Arc::clone(shared);
                    tasks.spawn(async move { handle(shared, inbound).await });
                }
                None => break,
            },
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                if let Err(e) = joined {
                    tracing::error!(error = %e, "script job task panicked");
                }
            }
        }
    }
    while let Some(joined) = tasks.join_next().await {
        if let Err(e) = joined {
            tracing::error!(error = %e, "script job task panicked");
        }
    }
}

/// One subscription on one channel: returns `Ok` on shutdown, `Err` when the channel or the
/// connection is lost or the broker cancels the consumer.
async fn subscribe(
    shared: &Shared,
    broker: Arc<Broker>,
    queue: &str,
    limit: u32,
    deliveries: &mpsc::UnboundedSender<Inbound>,
) -> anyhow::Result<()> {
    if queue != shared.topology.scripts_queue() {
        // This node's own queue: (re)declared here, so a deleted one comes back.
        let settings = &shared.ctx.cluster().broker;
        broker
            .ensure_node_scripts_queue(&shared.node, settings)
            .await
            .context("declaring this node's pinned script queue")?;
    }
    let tag = Topology::scripts_consumer_tag(&shared.node);
    let prefetch = limit.min(u16::MAX as u32) as u16;
    let mut subscription = Subscription::open(&broker, queue, &tag, prefetch).await?;
    tracing::info!(queue, tag = %tag, prefetch = limit, "script consumer subscribed");
    // The dispatcher outlives every subscription, so sending cannot fail; were it gone, the
    // dropped delivery would return to the queue when its channel closes.
    let forward = |inbound: Inbound| {
        let _ = deliveries.send(inbound);
    };
    let mut shutdown = shared.shutdown.clone();
    loop {
        tokio::select! {
            biased;
            _ = shutdown.wait_for(|stop| *stop) => break,
            next = subscription.next() => match next {
                Some(Ok(inbound)) => forward(inbound),
                Some(Err(e)) => return Err(anyhow::Error::new(e)),
                None => anyhow::bail!("the broker cancelled the script consumer on {queue} (queue deleted?)"),
            },
        }
    }
    // Draining: no new deliveries. What arrived before the cancel took effect still goes to a
    // task, which hands it back; each delivery keeps the channel open until it is settled.
    if let Err(e) = subscription.cancel().await {
        tracing::warn!(queue, error = %e, "cancelling the script consumer");
    }
    while let Ok(Some(Ok(inbound))) =
        tokio::time::timeout(Duration::from_secs(1), subscription.next()).await
    {
        forward(inbound);
    }
    Ok(())
}

async fn handle(shared: Arc<Shared>, inbound: Inbound) {
    let (subject, outcome) = process(&shared, &inbound).await;
    if let Err(e) = shared
        .settler
        .settle(&inbound, subject.as_ref(), outcome)
        .await
    {
        tracing::error!(queue = inbound.queue(), error = %format!("{e:#}"), "script job could not be settled; the broker will redeliver it (a done task is not run again)");
        // With its channel still open the broker would hold the delivery until the consumer
        // timeout closes the channel (and returns every job on it, running ones too): give it
        // back now. A no-op when the channel is gone, which returns it by itself.
        if let Err(e) = inbound.requeue().await {
            tracing::debug!(queue = inbound.queue(), error = %e, "requeue after a failed settlement");
        }
    }
}

/// Decides how the delivery ends; the subject is `Some` once the message is known to belong to
/// the live batch (only then may the batch's records hear of it).
async fn process(shared: &Shared, inbound: &Inbound) -> (Option<Subject>, Settle) {
    if let Err(r) = crate::jobs::check_signature(
        shared.ctx.endpoints().job_key(),
        inbound.body(),
        &inbound.headers(),
    ) {
        return (
            unsealed_subject(shared, inbound.body()).await,
            Settle::dead(r.reason, r.detail),
        );
    }
    let msg = match ScriptJob::from_json(inbound.body()) {
        Ok(job) => job,
        Err(e) => {
            return (
                None,
                Settle::dead(FailureReason::InvalidMessage, e.to_string()),
            )
        }
    };
    if let Some(pin) = msg.node.as_deref().filter(|pin| *pin != shared.node) {
        tracing::warn!(task = %msg.task_id, pin, "job pinned to another node arrived here; forwarding it");
        return (
            None,
            Settle::Forward {
                queue: shared.topology.node_scripts_queue(pin),
            },
        );
    }
    let batch = match load_batch(shared, &msg.batch_id, msg.epoch).await {
        Ok(Some(batch)) => batch,
        Ok(None) => {
            return (
                None,
                Settle::dead(
                    FailureReason::UnknownJob,
                    "no such batch in Redis (expired or deleted)",
                ),
            )
        }
        Err(e) => {
            // An unreadable batch (not an outage): the task is settled in the batch's record,
            // checked against its stored epoch, so the batch still finishes.
            let subject = (!e.is_unavailable()).then(|| subject_of(&msg));
            return (subject, Settle::store_failed(&e, None));
        }
    };
    // The stored definition is what runs; the message only says which task and attempt.
    let job = match batch.job.task_message(&msg.task_id) {
        Some(task) if batch.job.is_current_epoch(msg.epoch) => ScriptJob {
            attempt: msg.attempt,
            ..task
        },
        found => {
            let detail = match found {
                None => format!("batch '{}' has no task '{}'", msg.batch_id, msg.task_id),
                Some(_) => format!(
                    "task '{}' is of an earlier batch under the id '{}' (epoch {}, the batch's is {}): it touches nothing of the live batch",
                    msg.task_id, msg.batch_id, msg.epoch, batch.job.epoch
                ),
            };
            return (None, Settle::dead(FailureReason::StaleMessage, detail));
        }
    };
    let subject = subject_of(&job);
    // What runs must be what the key sealed. The batch's own record hears of a refusal, so the
    // batch settles and frees its scheduler places.
    if let Err(r) = &batch.sealed {
        return (Some(subject), Settle::dead(r.reason, r.detail.clone()));
    }
    // Checked before any wait: a job this node will never run goes at once.
    let refused: Vec<&str> = job
        .env
        .keys()
        .filter(|name| !shared.ctx.node_config().allows_script_env(name))
        .map(String::as_str)
        .collect();
    if !refused.is_empty() {
        let detail = format!(
            "the job sets {} in its env, which node {} does not allow (list the names in \
             script_env_allow of its [[nodes]] entry in cluster.toml; SEEDQ_*, LD_* and PATH are \
             never allowed)",
            refused.join(", "),
            shared.node
        );
        return (
            Some(subject),
            Settle::dead(FailureReason::EnvNotAllowed, detail),
        );
    }
    let outcome = process_task(shared, inbound, job, msg.finished).await;
    (Some(subject), outcome)
}

async fn process_task(
    shared: &Shared,
    inbound: &Inbound,
    job: ScriptJob,
    finished: Option<Box<ScriptResult>>,
) -> Settle {
    // A run that finished while Redis could not take its result: store it, never run again.
    if let Some(result) = finished {
        return settle_result(shared, &job, *result, None).await;
    }
    if job.expected_output.as_deref().is_none_or(str::is_empty) {
        return Settle::dead(
            FailureReason::InvalidMessage,
            "the job names no expected_output, so its success cannot be judged",
        );
    }
    let member = job.member();
    let is_done = || async {
        shared
            .store
            .done_members(&job.batch_id)
            .await
            .map(|done| done.contains(&member))
    };
    if let Some(deliveries) = shared.settler.past_delivery_limit(inbound) {
        return match is_done().await {
            Ok(true) => Settle::Ack,
            Ok(false) => Settle::dead(
                FailureReason::DeliveryLimit,
                Settler::delivery_limit_detail(deliveries),
            ),
            Err(e) => Settle::store_failed(&e, None),
        };
    }
    match skip_if_cancelled(shared, &job).await {
        Ok(true) => return Settle::Ack,
        Ok(false) => {}
        Err(e) => return Settle::store_failed(&e, None),
    }

    let timeout = clamped_timeout(shared, &job);
    // What the broker's consumer timeout leaves for waiting here once the run's time is set
    // aside; past it the job goes back to its queue for any node.
    let wait_budget = permit_wait_budget(shared.consumer_timeout, timeout);
    let waited = Instant::now();
    // One run per task on this node: a redelivery of a task running here waits for that run.
    let running = running_lock(shared, &job);
    let _running = {
        let mut shutdown = shared.shutdown.clone();
        tokio::select! {
            guard = Arc::clone(&running).lock_owned() => guard,
            _ = tokio::time::sleep(wait_budget) => return Settle::HandBack(HandBack::NoPermit),
            _ = shutdown.wait_for(|stop| *stop) => return Settle::HandBack(HandBack::Drain),
        }
    };
    match is_done().await {
        Ok(true) => {
            tracing::info!(task = %job.task_id, "task already done (redelivery); acking without running it");
            return Settle::Ack;
        }
        Ok(false) => {}
        Err(e) => return Settle::store_failed(&e, None),
    }
    // Taken before the permit, so a run waiting for another's output holds no permit.
    let _output = match shared
        .root
        .shared_output(job.expected_output.as_deref().unwrap_or_default())
    {
        Some(path) => {
            let lock = lock_in(&shared.outputs, path.clone());
            let mut shutdown = shared.shutdown.clone();
            let left = wait_budget.saturating_sub(waited.elapsed());
            let guard = match Arc::clone(&lock).try_lock_owned() {
                Ok(guard) => guard,
                Err(_) => {
                    tracing::info!(task = %job.task_id, batch = %job.batch_id, output = %path.display(), "another run on this node writes the same expected_output; waiting for it to be collected");
                    tokio::select! {
                        guard = lock.lock_owned() => guard,
                        _ = tokio::time::sleep(left) => return Settle::HandBack(HandBack::NoPermit),
                        _ = shutdown.wait_for(|stop| *stop) => return Settle::HandBack(HandBack::Drain),
                    }
                }
            };
            Some(guard)
        }
        None => None,
    };
    let permit = {
        let mut shutdown = shared.shutdown.clone();
        let left = wait_budget.saturating_sub(waited.elapsed());
        tokio::select! {
            permit = Arc::clone(&shared.permits).acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => return Settle::HandBack(HandBack::Drain),
            },
            _ = tokio::time::sleep(left) => {
                tracing::info!(task = %job.task_id, waited_secs = waited.elapsed().as_secs(), "no free script permit within the broker's consumer timeout; handing the job back");
                return Settle::HandBack(HandBack::NoPermit);
            }
            _ = shutdown.wait_for(|stop| *stop) => return Settle::HandBack(HandBack::Drain),
        }
    };
    // The wait can be long: a cancel that came meanwhile still stops this task.
    match skip_if_cancelled(shared, &job).await {
        Ok(true) => return Settle::Ack,
        Ok(false) => {}
        Err(e) => return Settle::store_failed(&e, None),
    }
    let lease = match shared.gpus.acquire(job.gpu_id) {
        Ok(lease) => lease,
        Err(e) => return Settle::dead(FailureReason::GpuUnavailable, e.to_string()),
    };
    let mut env = lease.environment(&shared.node_env);
    env.extend([
        ("SEEDQ_NODE".to_string(), shared.node.clone()),
        ("SEEDQ_BATCH_ID".to_string(), job.batch_id.clone()),
        ("SEEDQ_TASK_ID".to_string(), job.task_id.clone()),
        ("SEEDQ_ATTEMPT".to_string(), job.attempt.to_string()),
    ]);
    let request = RunRequest {
        interpreter: shared.interpreter.clone(),
        script: job.script.clone(),
        args: job.args.clone(),
        expected_output: job.expected_output.clone().unwrap_or_default(),
        output_dir: runner::private_output_dir(&job.batch_id, &job.task_id, job.attempt),
        timeout,
        job_env: job
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        env,
        tail_bytes: RunRequest::DEFAULT_TAIL_BYTES,
        max_output_bytes: RunRequest::DEFAULT_MAX_OUTPUT_BYTES,
        max_file_bytes: Some(shared.ctx.node_config().script_max_file_bytes).filter(|&b| b > 0),
        kill_grace: Duration::from_secs(5),
    };
    tracing::info!(task = %job.task_id, batch = %job.batch_id, attempt = job.attempt, gpu = ?lease.gpu(), "running script job");
    shared.metrics.script_started();
    let started = Instant::now();
    let report = {
        let mut shutdown = shared.shutdown.clone();
        let run = runner::run(&shared.root, &request);
        tokio::pin!(run);
        tokio::select! {
            report = &mut run => report,
            _ = async { let _ = shutdown.wait_for(|stop| *stop).await; tokio::time::sleep(DRAIN_GRACE).await } => {
                // Dropping the run kills its process group; another node runs the job again.
                shared.metrics.script_finished(false, started.elapsed().as_secs_f64());
                tracing::warn!(task = %job.task_id, "node draining: script killed and returned to the queue");
                return Settle::HandBack(HandBack::Drain);
            }
        }
    };
    shared
        .metrics
        .script_finished(report.outcome.is_ok(), report.duration.as_secs_f64());
    let gpu = lease.gpu();
    drop(lease);
    drop(permit);
    let result = script_result(shared, &job, gpu, &report);
    let detail = report
        .outcome
        .as_ref()
        .err()
        .map(|reason| failure_detail(&reason.to_string(), &report.stderr_tail));
    // The result is now what counts: the node's copy of the output can go once Redis has it
    // or the message carries it (a parked result). The fixed-output lock is released only
    // after that, when the path is free for the next run.
    let settled = settle_result(shared, &job, result, detail).await;
    if let Err(e) = report.remove_output(&shared.root) {
        tracing::warn!(task = %job.task_id, error = %e, "could not remove the output file or the run's output directory");
    }
    settled
}

fn clamped_timeout(shared: &Shared, job: &ScriptJob) -> Duration {
    let timeout = Duration::from_secs(job.timeout_secs.max(1));
    if timeout > shared.max_timeout {
        tracing::warn!(task = %job.task_id, asked = job.timeout_secs, allowed = shared.max_timeout.as_secs(), "timeout clamped below the broker's consumer_timeout");
        return shared.max_timeout;
    }
    timeout
}

/// How long a delivery may wait on this node (for a run of the same task, then for a permit)
/// before it is handed back: the broker's consumer timeout counts from the delivery, so the wait
/// and the run together must end [`ACK_MARGIN`] before it (at least [`MIN_PERMIT_WAIT`], which
/// the margin covers).
fn permit_wait_budget(consumer_timeout: Duration, run_timeout: Duration) -> Duration {
    consumer_timeout
        .saturating_sub(ACK_MARGIN)
        .saturating_sub(run_timeout)
        .max(MIN_PERMIT_WAIT)
}

/// The per-task lock of [`Shared::running`].
fn running_lock(shared: &Shared, job: &ScriptJob) -> TaskLock {
    lock_in(&shared.running, (job.batch_id.clone(), job.task_id.clone()))
}

/// The lock for `key` in `locks` (entries nobody holds are dropped on the way).
fn lock_in<K: std::hash::Hash + Eq>(
    locks: &std::sync::Mutex<HashMap<K, TaskLock>>,
    key: K,
) -> TaskLock {
    let mut locks = locks.lock().unwrap_or_else(|p| p.into_inner());
    locks.retain(|_, lock| Arc::strong_count(lock) > 1);
    Arc::clone(locks.entry(key).or_default())
}

/// Records the task as skipped when its batch is cancelled; `Ok(true)` then. The store records
/// the skip only while the cancel holds, so a `resume` in between makes the task run.
async fn skip_if_cancelled(shared: &Shared, job: &ScriptJob) -> Result<bool, StoreError> {
    if !shared.store.is_cancelled(&job.batch_id).await? {
        return Ok(false);
    }
    let event = FailureEvent {
        member: job.member(),
        reason: FailureReason::Cancelled,
        detail: "the batch was cancelled before this task ran".into(),
        dead_lettered: true,
        node: shared.node.clone(),
        attempt: job.attempt,
        at_ms: seedq_protocol::now_ms(),
    };
    let outcome = shared
        .store
        .record_failure(&job.batch_id, job.epoch, &event)
        .await?;
    Ok(outcome != RecordOutcome::NotCancelled)
}

fn script_result(
    shared: &Shared,
    job: &ScriptJob,
    gpu: Option<u32>,
    report: &RunReport,
) -> ScriptResult {
    let mut result = ScriptResult::new(job, shared.node.clone());
    result.gpu = gpu;
    result.exit_code = report.exit.code;
    result.signal = report.exit.signal;
    result.duration_secs = report.duration.as_secs_f64();
    result.stdout_tail = report.stdout_tail.clone();
    result.stderr_tail = report.stderr_tail.clone();
    let output_name = job.expected_output.clone().unwrap_or_default();
    match &report.outcome {
        Ok(content) => {
            result.success = true;
            result.output = Some(ScriptOutput::new(output_name, content));
        }
        Err(reason) => {
            result.failure = Some(reason.reason());
            if let Some(content) = &report.error_output {
                result.output = Some(ScriptOutput::new(output_name, content));
            }
        }
    }
    result
}

/// Stores a finished run's result and decides the delivery: success is applied once; a failure
/// keeps its attempt's record and retries or dead-letters. If Redis cannot take it now, the
/// message is parked WITH the result inside, so the run is settled from it on return and the
/// script never runs again for it. `detail` is the runner's explanation (absent on return from
/// parking, where the result's reason and stderr tell it).
async fn settle_result(
    shared: &Shared,
    job: &ScriptJob,
    result: ScriptResult,
    detail: Option<String>,
) -> Settle {
    let parked = || {
        let mut message = job.clone();
        message.finished = Some(Box::new(result.clone()));
        Some(message.to_json())
    };
    let Some(reason) = result.failure.filter(|_| !result.success) else {
        return match shared.store.apply_script_result(&result).await {
            Ok(ApplyOutcome::Applied | ApplyOutcome::AppliedToVerify | ApplyOutcome::AlreadyDone) => {
                tracing::info!(task = %job.task_id, batch = %job.batch_id, node = %shared.node, gpu = ?result.gpu, attempt = job.attempt, secs = result.duration_secs, "script job done");
                Settle::Ack
            }
            // A script's result names no seed slot, so the store never refuses it as a flagged
            // slot's; should it ever, the finished result waits and is applied again.
            Ok(ApplyOutcome::SlotFlagged) => Settle::Park {
                detail: "the store refused the result as a flagged slot's".into(),
                body: parked(),
            },
            Ok(ApplyOutcome::BatchOutputLimit) => Settle::dead(
                FailureReason::BatchOutputLimit,
                format!(
                    "the task's result ({} bytes) would take batch '{}' past [jobs] max_batch_output_bytes ({} bytes) in Redis: collect the batch's outputs and split it, or raise the limit",
                    serde_json::to_string(&result).map_or(0, |j| j.len()),
                    job.batch_id,
                    shared.ctx.cluster().jobs.max_batch_output_bytes
                ),
            ),
            Ok(ApplyOutcome::UnknownJob) => Settle::dead(
                FailureReason::UnknownJob,
                "the batch vanished from Redis while the task ran (expired or deleted)",
            ),
            Ok(ApplyOutcome::Stale) => Settle::dead(
                FailureReason::StaleMessage,
                "the batch was re-created while the task ran: the result belongs to its earlier life",
            ),
            Err(e) => Settle::store_failed(&e, parked()),
        };
    };
    match shared.store.save_script_attempt(&result).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(task = %job.task_id, batch = %job.batch_id, "the failed attempt's output is not kept: the batch's results in Redis are at [jobs] max_batch_output_bytes")
        }
        Err(e) if e.is_unavailable() => return Settle::store_failed(&e, parked()),
        Err(e) => {
            tracing::warn!(task = %job.task_id, error = %e, "could not keep the failed attempt's record")
        }
    }
    let detail = detail.unwrap_or_else(|| failure_detail(reason.as_str(), &result.stderr_tail));
    // A refused path or a missing script is a property of the job and the node's files: no
    // attempt can change it.
    if reason.class() == seedq_protocol::ReasonClass::Retryable {
        let mut next = job.clone();
        next.attempt = job.attempt + 1;
        Settle::Retry {
            reason,
            detail,
            next: next.to_json(),
            parked: parked(),
        }
    } else {
        Settle::DeadLetter {
            reason,
            detail,
            parked: parked(),
        }
    }
}

fn failure_detail(reason: &str, stderr_tail: &str) -> String {
    let stderr = stderr_tail.trim_end();
    let last_line = stderr.rsplit('\n').next().unwrap_or("");
    if last_line.is_empty() {
        reason.to_string()
    } else {
        format!("{reason}; stderr: {last_line}")
    }
}

/// The task as the batch's records know it.
fn subject_of(msg: &ScriptJob) -> Subject {
    Subject {
        job_id: msg.batch_id.clone(),
        epoch: msg.epoch,
        member: msg.member(),
        attempt: msg.attempt,
    }
}

/// The subject of an unsigned or wrongly signed task whose batch's record the key did not seal
/// either (a batch enqueued without the key): its own record hears of the refusal, so the
/// batch settles and frees its scheduler places. A message naming a sealed batch touches
/// nothing: it would be a forgery aimed at a real batch.
async fn unsealed_subject(shared: &Shared, body: &[u8]) -> Option<Subject> {
    let msg = ScriptJob::from_json(body).ok()?;
    let batch = load_batch(shared, &msg.batch_id, msg.epoch).await.ok()??;
    (batch.sealed.is_err()
        && batch.job.is_current_epoch(msg.epoch)
        && batch.job.task_message(&msg.task_id).is_some())
    .then(|| subject_of(&msg))
}

/// The stored batch, cached per id and epoch (a batch never changes; a re-created one under the
/// same id has another epoch, so a cached one whose epoch a message does not match is re-read).
/// A cached life that matches the message is used only while Redis still holds that life: a
/// message of a batch that expired and was created again under its id must meet the new life
/// (and be refused as stale), not run the old definition from this node's memory. The seal is
/// checked here, once per load, and travels with the batch.
async fn load_batch(
    shared: &Shared,
    batch: &str,
    epoch: u64,
) -> Result<Option<Arc<LoadedBatch>>, StoreError> {
    let cached = shared
        .batches
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(batch)
        .filter(|loaded| loaded.job.epoch == epoch)
        .cloned();
    if let Some(known) = cached {
        if shared.store.job_epoch(batch).await? == Some(known.job.epoch) {
            return Ok(Some(known));
        }
    }
    let Some(job) = shared.store.load_job(batch).await? else {
        return Ok(None);
    };
    let loaded = Arc::new(LoadedBatch {
        sealed: crate::jobs::check_seal(shared.ctx.endpoints().job_key(), &job),
        job,
    });
    let mut batches = shared.batches.lock().unwrap_or_else(|p| p.into_inner());
    if batches.len() >= 1024 {
        batches.clear();
    }
    batches.insert(batch.to_string(), Arc::clone(&loaded));
    Ok(Some(loaded))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_permit_wait_and_the_run_end_before_the_consumer_timeout() {
        let consumer_timeout = Duration::from_secs(1800);
        for run in [1, 60, 600, 1700, 1739, 1740] {
            let run = Duration::from_secs(run);
            let wait = permit_wait_budget(consumer_timeout, run);
            assert!(wait >= MIN_PERMIT_WAIT);
            assert!(
                wait + run <= consumer_timeout - ACK_MARGIN + MIN_PERMIT_WAIT,
                "waiting {wait:?} then running {run:?} outlasts the consumer timeout"
            );
        }
        // A short job may wait long, but never into the margin kept for storing and acking.
        assert_eq!(
            permit_wait_budget(consumer_timeout, Duration::from_secs(60)),
            Duration::from_secs(1800 - 60 - 60)
        );
    }
}
