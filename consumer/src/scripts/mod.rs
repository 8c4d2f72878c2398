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
//! 1. Parse ([`ScriptJob::from_json`]); a malformed message goes to the dead-letter queue at once.
//!    A job pinned to another node is forwarded to its queue.
//! 2. Skip it (ack, settled as `cancelled`) when the batch is cancelled; ack without running
//!    when the task is already done (redelivery after a crash between write and ack); refuse it
//!    when the batch does not exist in Redis.
//! 3. Wait for a permit, take a GPU ([`gpu::GpuPool`]: the pin, or the least-loaded GPU), run
//!    the script ([`runner::run`]: no shell, script root, process group, hard timeout, fresh
//!    output, JSON status).
//! 4. Success: write output content, exit status, duration and log tails to Redis
//!    (`apply_script_result`, exactly once), then remove the local output file, then ack (and
//!    check the ack).
//! 5. Failure: keep the attempt's record in Redis, then either republish through the delay
//!    queue with the attempt bumped (backoff with jitter, `[retry]` in cluster.toml) or, after
//!    the last attempt or for a failure that cannot succeed on retry (path outside the root,
//!    missing script, GPU pin the node lacks), publish to the dead-letter queue with the reason
//!    in `x-seedq-error`; then ack.
//!
//! A job's timeout is clamped to the broker's `consumer_timeout` minus a margin, so a stuck
//! script can never make RabbitMQ close the channel (and redeliver every job on it).
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
use futures_util::StreamExt;
use seedq_broker::lapin::options::{BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use seedq_broker::lapin::types::FieldTable;
use seedq_broker::lapin::message::Delivery;
use seedq_broker::{script_headers, Broker};
use seedq_protocol::{FailureEvent, RetryConfig, ScriptJob, ScriptOutput, ScriptResult, Topology};
use seedq_store::{ApplyOutcome, Store};
use tokio::sync::{watch, Semaphore};

use crate::context::NodeContext;
use crate::metrics::Metrics;

use self::gpu::GpuPool;
use self::runner::{FailureReason, RunReport, RunRequest, ScriptRoot};

/// How long running scripts may continue after the node starts draining.
pub const DRAIN_GRACE: Duration = Duration::from_secs(30);

/// Head-room kept below the broker's `consumer_timeout` for killing, uploading and acking.
const ACK_MARGIN: Duration = Duration::from_secs(60);

/// Everything a job handler needs, shared by all of the node's script tasks.
struct Shared {
    node: String,
    node_env: Vec<(String, String)>,
    root: ScriptRoot,
    interpreter: PathBuf,
    store: Store,
    /// For the current broker connection (replaced by the node's supervisor after a loss).
    ctx: Arc<NodeContext>,
    topology: Topology,
    retry: RetryConfig,
    max_timeout: Duration,
    metrics: Arc<Metrics>,
    gpus: Arc<GpuPool>,
    permits: Arc<Semaphore>,
    /// Batches known to exist in Redis (jobs are immutable once created).
    known_batches: std::sync::Mutex<HashMap<String, bool>>,
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
        node_env: node_config.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        interpreter: PathBuf::from(&node_config.python_env),
        gpus: GpuPool::new(node_config.gpu_list().iter().map(|g| g.index).collect()),
        root,
        store: ctx.store().clone(),
        ctx: Arc::clone(&ctx),
        topology: Topology::new(ctx.namespace()),
        retry: ctx.cluster().retry.clone(),
        max_timeout: consumer_timeout.saturating_sub(ACK_MARGIN).max(Duration::from_secs(1)),
        metrics: ctx.metrics(),
        permits: Arc::new(Semaphore::new(limit as usize)),
        known_batches: std::sync::Mutex::new(HashMap::new()),
        shutdown: ctx.shutdown_signal(),
    });
    tracing::info!(node = %node, limit, root = %shared.root.path().display(), "script consumer starting");
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let (generation, broker) = ctx.broker_generation();
        match consume(&shared, &broker, limit, &mut tasks).await {
            Ok(()) => break,
            Err(e) => {
                // Deliveries in flight return to the queue by themselves; running scripts carry
                // on and report through the new connection. Wait for the supervisor's reconnect.
                tracing::warn!(error = %format!("{e:#}"), "script consumer lost its broker channel; waiting for the reconnection");
                if ctx.broker_changed(generation).await.is_none() {
                    break;
                }
            }
        }
    }
    drain(&mut tasks).await;
    tracing::info!(node = %node, "script consumer stopped");
    Ok(())
}

/// One subscription on one broker connection: returns `Ok` on shutdown, `Err` when the
/// channel or connection is lost.
async fn consume(shared: &Arc<Shared>, broker: &Broker, limit: u32, tasks: &mut tokio::task::JoinSet<()>) -> anyhow::Result<()> {
    let settings = shared.ctx.cluster().broker.clone();
    broker
        .declare_node_scripts_queue(&shared.node, &settings)
        .await
        .context("declaring this node's pinned script queue")?;
    let tag = Topology::scripts_consumer_tag(&shared.node);
    let mut consumers = Vec::new();
    for queue in [shared.topology.scripts_queue(), shared.topology.node_scripts_queue(&shared.node)] {
        let channel = broker.channel().await?;
        channel
            .basic_qos(limit.min(u16::MAX as u32) as u16, BasicQosOptions::default())
            .await
            .with_context(|| format!("setting prefetch {limit} on {queue}"))?;
        let consumer = channel
            .basic_consume(queue.as_str().into(), tag.as_str().into(), BasicConsumeOptions::default(), FieldTable::default())
            .await
            .with_context(|| format!("consuming {queue}"))?;
        consumers.push((channel, queue, consumer));
    }
    let mut streams = futures_util::stream::select_all(
        consumers.iter().map(|(_, queue, consumer)| consumer.clone().map(move |d| (queue.clone(), d))).collect::<Vec<_>>(),
    );
    let mut shutdown = shared.shutdown.clone();
    let outcome = loop {
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => break Ok(()),
            next = streams.next() => match next {
                Some((queue, Ok(delivery))) => {
                    let shared = Arc::clone(shared);
                    tasks.spawn(async move { handle(shared, queue, delivery).await });
                }
                Some((queue, Err(e))) => break Err(anyhow::Error::new(e).context(format!("consuming {queue}"))),
                None => break Err(anyhow::anyhow!("the broker cancelled the script consumers")),
            },
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                if let Err(e) = joined {
                    tracing::error!(error = %e, "script job task panicked");
                }
            }
        }
    };
    if outcome.is_ok() {
        for (channel, queue, _) in &consumers {
            if let Err(e) = channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()).await {
                tracing::warn!(queue = %queue, error = %e, "cancelling the script consumer");
            }
        }
    }
    outcome
}

impl Shared {
    fn broker(&self) -> Arc<Broker> {
        self.ctx.broker()
    }
}

/// Waits for running jobs (each handles the drain itself) to settle.
async fn drain(tasks: &mut tokio::task::JoinSet<()>) {
    while let Some(joined) = tasks.join_next().await {
        if let Err(e) = joined {
            tracing::error!(error = %e, "script job task panicked");
        }
    }
}

/// What happened to a delivery; decides ack / nack.
enum Settle {
    Ack,
    /// Return it to the queue (drain, or Redis unreachable after retries).
    Requeue,
}

async fn handle(shared: Arc<Shared>, queue: String, delivery: Delivery) {
    let settle = match process(&shared, &queue, &delivery).await {
        Ok(settle) => settle,
        Err(e) => {
            tracing::error!(queue = %queue, error = %format!("{e:#}"), "script job could not be settled; returning it to the queue");
            Settle::Requeue
        }
    };
    let result = match settle {
        Settle::Ack => delivery.acker.ack(BasicAckOptions::default()).await,
        Settle::Requeue => delivery.acker.nack(BasicNackOptions { requeue: true, ..Default::default() }).await,
    };
    match result {
        Ok(true) => {}
        Ok(false) => tracing::warn!(queue = %queue, "delivery was already settled (channel recovered?)"),
        Err(e) => tracing::error!(queue = %queue, error = %e, "ack/nack failed; the broker will redeliver (the result is applied once)"),
    }
}

async fn process(shared: &Shared, queue: &str, delivery: &Delivery) -> anyhow::Result<Settle> {
    let headers = seedq_broker::headers_of(&delivery.properties);
    let job = match ScriptJob::from_json(&delivery.data) {
        Ok(job) => job,
        Err(e) => {
            tracing::warn!(queue, error = %e, "malformed script job; dead-lettering it");
            shared.broker().publish_dead_letter(queue, &delivery.data, &headers, "invalid_message", &e.to_string()).await?;
            return Ok(Settle::Ack);
        }
    };
    if job.expected_output.as_deref().is_none_or(str::is_empty) {
        let detail = "the job names no expected_output, so its success cannot be judged";
        shared.broker().publish_dead_letter(queue, &delivery.data, &headers, "invalid_message", detail).await?;
        record_failure(shared, &job, "invalid_message", detail, true).await?;
        return Ok(Settle::Ack);
    }
    if let Some(pin) = job.node.as_deref().filter(|pin| *pin != shared.node) {
        tracing::warn!(task = %job.task_id, pin, "job pinned to another node arrived here; forwarding it");
        shared.broker().publish_script(&job).await?;
        return Ok(Settle::Ack);
    }
    let member = job.member();
    if shared.store.is_cancelled(&job.batch_id).await? {
        record_failure(shared, &job, "cancelled", "the batch was cancelled before this task ran", true).await?;
        return Ok(Settle::Ack);
    }
    if !batch_exists(shared, &job.batch_id).await? {
        shared
            .broker()
            .publish_dead_letter(queue, &delivery.data, &headers, "unknown_job", "no such batch in Redis (expired or deleted)")
            .await?;
        return Ok(Settle::Ack);
    }
    if shared.store.done_members(&job.batch_id).await?.contains(&member) {
        tracing::info!(task = %job.task_id, "task already done (redelivery); acking without running it");
        return Ok(Settle::Ack);
    }

    let permit = {
        let mut shutdown = shared.shutdown.clone();
        tokio::select! {
            permit = Arc::clone(&shared.permits).acquire_owned() => permit.context("script permits closed")?,
            _ = shutdown.wait_for(|stop| *stop) => return Ok(Settle::Requeue),
        }
    };
    // The wait for a permit can be long: a cancel that came meanwhile still stops this task.
    if shared.store.is_cancelled(&job.batch_id).await? {
        record_failure(shared, &job, "cancelled", "the batch was cancelled before this task ran", true).await?;
        return Ok(Settle::Ack);
    }
    let lease = match shared.gpus.acquire(job.gpu_id) {
        Ok(lease) => lease,
        Err(e) => {
            dead_letter(shared, queue, delivery, &headers, &job, "gpu_unavailable", &e.to_string()).await?;
            return Ok(Settle::Ack);
        }
    };
    let mut env = lease.environment(&shared.node_env);
    env.extend([
        ("SEEDQ_NODE".to_string(), shared.node.clone()),
        ("SEEDQ_BATCH_ID".to_string(), job.batch_id.clone()),
        ("SEEDQ_TASK_ID".to_string(), job.task_id.clone()),
        ("SEEDQ_ATTEMPT".to_string(), job.attempt.to_string()),
    ]);
    let mut timeout = Duration::from_secs(job.timeout_secs.max(1));
    if timeout > shared.max_timeout {
        tracing::warn!(task = %job.task_id, asked = job.timeout_secs, allowed = shared.max_timeout.as_secs(), "timeout clamped below the broker's consumer_timeout");
        timeout = shared.max_timeout;
    }
    let request = RunRequest {
        interpreter: shared.interpreter.clone(),
        script: job.script.clone(),
        args: job.args.clone(),
        expected_output: job.expected_output.clone().unwrap_or_default(),
        timeout,
        env,
        tail_bytes: RunRequest::DEFAULT_TAIL_BYTES,
        max_output_bytes: RunRequest::DEFAULT_MAX_OUTPUT_BYTES,
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
                return Ok(Settle::Requeue);
            }
        }
    };
    shared.metrics.script_finished(report.outcome.is_ok(), report.duration.as_secs_f64());
    let gpu = lease.gpu();
    drop(lease);
    drop(permit);
    settle_report(shared, queue, delivery, &headers, &job, gpu, report).await
}

/// Writes the outcome to Redis and decides what happens to the delivery.
async fn settle_report(
    shared: &Shared,
    queue: &str,
    delivery: &Delivery,
    headers: &seedq_broker::Headers,
    job: &ScriptJob,
    gpu: Option<u32>,
    report: RunReport,
) -> anyhow::Result<Settle> {
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
            match shared.store.apply_script_result(&result).await? {
                ApplyOutcome::Applied | ApplyOutcome::AlreadyDone => {}
                ApplyOutcome::UnknownJob => tracing::warn!(batch = %job.batch_id, "batch vanished from Redis while the task ran"),
            }
            // Only now that Redis holds the content may the node's copy go.
            if let Err(e) = report.remove_output(&shared.root) {
                tracing::warn!(task = %job.task_id, error = %e, "could not remove the uploaded output file");
            }
            tracing::info!(task = %job.task_id, secs = result.duration_secs, "script job done");
            Ok(Settle::Ack)
        }
        Err(reason) => {
            result.failure = Some(reason.code().to_string());
            if let Some(content) = &report.error_output {
                result.output = Some(ScriptOutput::new(output_name, content));
            }
            shared.store.save_script_attempt(&result).await?;
            if report.error_output.is_some() {
                let _ = report.remove_output(&shared.root);
            }
            let detail = failure_detail(reason, &report);
            let last_attempt = job.attempt >= shared.retry.max_attempts;
            if reason.is_retryable() && !last_attempt {
                let mut next = job.clone();
                next.attempt = job.attempt + 1;
                let delay = shared.retry.backoff_ms(next.attempt, jitter01());
                tracing::warn!(task = %job.task_id, reason = reason.code(), attempt = job.attempt, delay_ms = delay, "script job failed; retrying");
                shared.broker().publish_retry(queue, &next.to_json(), &script_headers(&next), delay).await?;
                record_failure(shared, job, reason.code(), &detail, false).await?;
            } else {
                tracing::warn!(task = %job.task_id, reason = reason.code(), attempt = job.attempt, "script job failed for good; dead-lettering it");
                dead_letter(shared, queue, delivery, headers, job, reason.code(), &detail).await?;
            }
            Ok(Settle::Ack)
        }
    }
}

fn failure_detail(reason: &FailureReason, report: &RunReport) -> String {
    let stderr = report.stderr_tail.trim_end();
    let last_line = stderr.rsplit('\n').next().unwrap_or("");
    if last_line.is_empty() {
        reason.to_string()
    } else {
        format!("{reason}; stderr: {last_line}")
    }
}

async fn dead_letter(
    shared: &Shared,
    queue: &str,
    delivery: &Delivery,
    headers: &seedq_broker::Headers,
    job: &ScriptJob,
    reason: &str,
    detail: &str,
) -> anyhow::Result<()> {
    let mut headers = headers.clone();
    headers.insert(seedq_protocol::headers::NODE.to_string(), shared.node.clone());
    shared.broker().publish_dead_letter(queue, &delivery.data, &headers, reason, detail).await?;
    record_failure(shared, job, reason, detail, true).await
}

async fn record_failure(shared: &Shared, job: &ScriptJob, reason: &str, detail: &str, dead: bool) -> anyhow::Result<()> {
    let event = FailureEvent {
        member: job.member(),
        reason: reason.to_string(),
        detail: detail.to_string(),
        dead_lettered: dead,
        node: shared.node.clone(),
        attempt: job.attempt,
        at_ms: seedq_protocol::now_ms(),
    };
    shared.store.record_failure(&job.batch_id, &event).await?;
    Ok(())
}

async fn batch_exists(shared: &Shared, batch: &str) -> anyhow::Result<bool> {
    if let Some(known) = shared.known_batches.lock().unwrap_or_else(|p| p.into_inner()).get(batch) {
        return Ok(*known);
    }
    let exists = shared.store.load_job(batch).await?.is_some();
    if exists {
        shared.known_batches.lock().unwrap_or_else(|p| p.into_inner()).insert(batch.to_string(), true);
    }
    Ok(exists)
}

/// A jitter value in [0, 1) without a random-number crate: the clock's nanoseconds.
fn jitter01() -> f64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    (nanos % 1_000_000) as f64 / 1_000_000.0
}
