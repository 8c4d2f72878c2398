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
//!    in `x-seedq-error`; then ack. Redis is always written before anything is published.
//! 6. Redis unreachable at any step (after the store's own retries): the job is parked in the
//!    delay queue without using an attempt ([`park_until_redis_returns`]), like seed chunks, so
//!    an outage of any length dead-letters and loses nothing.
//!
//! # Broker failures
//!
//! Each queue is consumed by its own loop ([`subscription`]). A channel-level failure (queue
//! deleted, `consumer_timeout`) re-opens that channel and re-subscribes with backoff while the
//! connection is fine; after a connection loss the loop waits for the supervisor's new
//! connection. Jobs already running carry on and settle through the current connection.
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
use seedq_broker::lapin::message::Delivery;
use seedq_broker::lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
};
use seedq_broker::lapin::types::FieldTable;
use seedq_broker::lapin::Channel;
use seedq_broker::{script_headers, Broker};
use seedq_protocol::{FailureEvent, RetryConfig, ScriptJob, ScriptOutput, ScriptResult, Topology};
use seedq_store::{ApplyOutcome, Store, StoreError};
use tokio::sync::{mpsc, watch, Semaphore};

use crate::context::NodeContext;
use crate::metrics::Metrics;
use crate::redelivery;

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
        node_env: node_config
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        interpreter: PathBuf::from(&node_config.python_env),
        gpus: GpuPool::new(node_config.gpu_list().iter().map(|g| g.index).collect()),
        root,
        store: ctx.store().clone(),
        ctx: Arc::clone(&ctx),
        topology: Topology::new(ctx.namespace()),
        retry: ctx.cluster().retry.clone(),
        max_timeout: consumer_timeout
            .saturating_sub(ACK_MARGIN)
            .max(Duration::from_secs(1)),
        metrics: ctx.metrics(),
        permits: Arc::new(Semaphore::new(limit as usize)),
        known_batches: std::sync::Mutex::new(HashMap::new()),
        shutdown: ctx.shutdown_signal(),
    });
    tracing::info!(node = %node, limit, root = %shared.root.path().display(), "script consumer starting");
    let (deliveries, received) = mpsc::unbounded_channel();
    let [shared_queue, pinned_queue] = [
        shared.topology.scripts_queue(),
        shared.topology.node_scripts_queue(&node),
    ]
    .map(|queue| subscription(&shared, queue, limit, deliveries.clone()));
    // The dispatcher ends once both subscriptions have ended (shutdown) and dropped their senders.
    drop(deliveries);
    tokio::join!(shared_queue, pinned_queue, dispatch(&shared, received));
    tracing::info!(node = %node, "script consumer stopped");
    Ok(())
}

/// A delivery on its way to a job task, with its channel: lapin closes a channel when its last
/// handle drops, which would return every delivery still running on it to the queue, so each
/// task keeps its channel open until its delivery is settled.
struct InFlight {
    queue: String,
    delivery: Delivery,
    channel: Channel,
}

/// Runs every delivery as a task; after the subscriptions end, waits for running jobs (each
/// handles the drain itself) to settle.
async fn dispatch(shared: &Arc<Shared>, mut received: mpsc::UnboundedReceiver<InFlight>) {
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            next = received.recv() => match next {
                Some(InFlight { queue, delivery, channel }) => {
                    let shared = Arc::clone(shared);
                    tasks.spawn(async move {
                        handle(shared, queue, delivery).await;
                        drop(channel);
                    });
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

/// First pause before re-subscribing after a channel-level failure; doubles per failure in a row.
const RESUBSCRIBE_MIN: Duration = Duration::from_millis(500);
/// Longest pause between re-subscription attempts (e.g. while a deleted queue is not back yet).
const RESUBSCRIBE_MAX: Duration = Duration::from_secs(15);

/// Keeps one queue subscribed until shutdown. Each queue has its own loop and channel, so a
/// channel-level failure of one (queue deleted, `consumer_timeout`, a refused declare) re-opens
/// that channel and re-subscribes it with backoff while the connection is fine, and never
/// disturbs jobs running from the other; after a connection loss it waits for the supervisor's
/// new connection. Deliveries of a failed channel return to the queue by themselves; running
/// scripts carry on and report through the current connection.
async fn subscription(
    shared: &Arc<Shared>,
    queue: String,
    limit: u32,
    deliveries: mpsc::UnboundedSender<InFlight>,
) {
    let ctx = &shared.ctx;
    let mut backoff = resubscribe_backoff();
    loop {
        if ctx.is_shutting_down() {
            break;
        }
        let (generation, broker) = ctx.broker_generation();
        let started = Instant::now();
        let error = match subscribe(shared, &broker, &queue, limit, &deliveries).await {
            Ok(()) => break,
            Err(e) => e,
        };
        if ctx.is_shutting_down() {
            break;
        }
        // A subscription that served for a while was healthy: start the backoff over.
        if started.elapsed() > 2 * RESUBSCRIBE_MAX {
            backoff = resubscribe_backoff();
        }
        if broker.is_connected() {
            let delay = backoff.next().unwrap_or(RESUBSCRIBE_MAX);
            tracing::warn!(queue = %queue, error = %format!("{error:#}"), delay_ms = delay.as_millis() as u64, "script consumer channel failed; re-subscribing");
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                // A new connection (or shutdown) ends the pause early.
                changed = ctx.broker_changed(generation) => if changed.is_none() { break },
            }
        } else {
            tracing::warn!(queue = %queue, error = %format!("{error:#}"), "script consumer lost its broker connection; waiting for the reconnection");
            if ctx.broker_changed(generation).await.is_none() {
                break;
            }
            backoff = resubscribe_backoff();
        }
    }
}

/// `RESUBSCRIBE_MIN` doubled per failure in a row, capped at `RESUBSCRIBE_MAX`, jittered so that
/// nodes that lost the same queue do not come back in lockstep; endless (the queue may take a
/// while to come back, and nothing is lost meanwhile).
fn resubscribe_backoff() -> backon::ExponentialBackoff {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::default()
        .with_min_delay(RESUBSCRIBE_MIN)
        .with_max_delay(RESUBSCRIBE_MAX)
        .with_jitter()
        .without_max_times()
        .build()
}

/// One subscription on one channel: returns `Ok` on shutdown, `Err` when the channel or the
/// connection is lost or the broker cancels the consumer.
async fn subscribe(
    shared: &Shared,
    broker: &Broker,
    queue: &str,
    limit: u32,
    deliveries: &mpsc::UnboundedSender<InFlight>,
) -> anyhow::Result<()> {
    if queue != shared.topology.scripts_queue() {
        // This node's own queue: (re)declared here, so a deleted one comes back.
        let settings = &shared.ctx.cluster().broker;
        broker
            .declare_node_scripts_queue(&shared.node, settings)
            .await
            .context("declaring this node's pinned script queue")?;
    }
    let tag = Topology::scripts_consumer_tag(&shared.node);
    let channel = broker
        .channel()
        .await
        .with_context(|| format!("opening a channel for {queue}"))?;
    channel
        .basic_qos(
            limit.min(u16::MAX as u32) as u16,
            BasicQosOptions::default(),
        )
        .await
        .with_context(|| format!("setting prefetch {limit} on {queue}"))?;
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("consuming {queue}"))?;
    tracing::info!(queue, tag = %tag, prefetch = limit, "script consumer subscribed");
    let forward = |delivery: Delivery| {
        // The dispatcher outlives every subscription, so this cannot fail; were it gone, the
        // dropped delivery would return to the queue when the channel closes.
        let _ = deliveries.send(InFlight {
            queue: queue.to_string(),
            delivery,
            channel: channel.clone(),
        });
    };
    let mut shutdown = shared.shutdown.clone();
    loop {
        tokio::select! {
            biased;
            _ = shutdown.wait_for(|stop| *stop) => break,
            next = consumer.next() => match next {
                Some(Ok(delivery)) => forward(delivery),
                Some(Err(e)) => return Err(anyhow::Error::new(e).context(format!("consuming {queue}"))),
                None => anyhow::bail!("the broker cancelled the script consumer on {queue} (queue deleted?)"),
            },
        }
    }
    // Draining: no new deliveries. What arrived before the cancel took effect still goes to a
    // task, which returns it to the queue; the channel stays open while tasks hold it.
    if let Err(e) = channel
        .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
        .await
    {
        tracing::warn!(queue, error = %e, "cancelling the script consumer");
    }
    while let Ok(Some(Ok(delivery))) =
        tokio::time::timeout(Duration::from_secs(1), consumer.next()).await
    {
        forward(delivery);
    }
    Ok(())
}

impl Shared {
    fn broker(&self) -> Arc<Broker> {
        self.ctx.broker()
    }
}

/// What happened to a delivery; decides ack / nack.
enum Settle {
    Ack,
    /// Return it to the queue (drain, or the broker failed while settling it).
    Requeue,
}

async fn handle(shared: Arc<Shared>, queue: String, delivery: Delivery) {
    let settle = match process(&shared, &queue, &delivery).await {
        Ok(settle) => settle,
        Err(e) if redis_unavailable(&e) => {
            match park_until_redis_returns(&shared, &queue, &delivery, &e).await {
                Ok(()) => Settle::Ack,
                Err(park) => {
                    tracing::error!(queue = %queue, error = %format!("{park:#}"), "could not park the script job; returning it to the queue");
                    Settle::Requeue
                }
            }
        }
        Err(e) => {
            tracing::error!(queue = %queue, error = %format!("{e:#}"), "script job could not be settled; returning it to the queue");
            Settle::Requeue
        }
    };
    let result = match settle {
        Settle::Ack => delivery.acker.ack(BasicAckOptions::default()).await,
        Settle::Requeue => {
            delivery
                .acker
                .nack(BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                })
                .await
        }
    };
    match result {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(queue = %queue, "delivery was already settled (channel recovered?)")
        }
        Err(e) => {
            tracing::error!(queue = %queue, error = %e, "ack/nack failed; the broker will redeliver (the result is applied once)")
        }
    }
}

async fn process(shared: &Shared, queue: &str, delivery: &Delivery) -> anyhow::Result<Settle> {
    let headers = seedq_broker::headers_of(&delivery.properties);
    let job = match ScriptJob::from_json(&delivery.data) {
        Ok(job) => job,
        Err(e) => {
            tracing::warn!(queue, reason = "invalid_message", error = %e, "malformed script job; dead-lettering it");
            shared
                .broker()
                .publish_dead_letter(
                    queue,
                    &delivery.data,
                    &headers,
                    "invalid_message",
                    &e.to_string(),
                )
                .await?;
            return Ok(Settle::Ack);
        }
    };
    if job.expected_output.as_deref().is_none_or(str::is_empty) {
        let detail = "the job names no expected_output, so its success cannot be judged";
        tracing::warn!(task = %job.task_id, batch = %job.batch_id, reason = "invalid_message", detail, "script job dead-lettered");
        dead_letter(
            shared,
            queue,
            delivery,
            &headers,
            &job,
            "invalid_message",
            detail,
        )
        .await?;
        return Ok(Settle::Ack);
    }
    if let Some(pin) = job.node.as_deref().filter(|pin| *pin != shared.node) {
        tracing::warn!(task = %job.task_id, pin, "job pinned to another node arrived here; forwarding it");
        shared.broker().publish_script(&job).await?;
        return Ok(Settle::Ack);
    }
    let member = job.member();
    if let Some(deliveries) = redelivery::last_delivery(
        &delivery.properties,
        shared.ctx.cluster().broker.delivery_limit,
    ) {
        let detail = format!(
            "delivered {deliveries} times without completing: the node running it stopped or crashed each time (out of memory?); \
             fix the cause, then `seedq-producer dlq replay`"
        );
        tracing::warn!(task = %job.task_id, batch = %job.batch_id, reason = "delivery_limit", detail = %detail, "script job dead-lettered");
        dead_letter(
            shared,
            queue,
            delivery,
            &headers,
            &job,
            "delivery_limit",
            &detail,
        )
        .await?;
        return Ok(Settle::Ack);
    }
    if shared.store.is_cancelled(&job.batch_id).await? {
        record_failure(
            shared,
            &job,
            "cancelled",
            "the batch was cancelled before this task ran",
            true,
        )
        .await?;
        return Ok(Settle::Ack);
    }
    if !batch_exists(shared, &job.batch_id).await? {
        tracing::warn!(task = %job.task_id, batch = %job.batch_id, reason = "unknown_job", "script job of an unknown batch dead-lettered");
        shared
            .broker()
            .publish_dead_letter(
                queue,
                &delivery.data,
                &headers,
                "unknown_job",
                "no such batch in Redis (expired or deleted)",
            )
            .await?;
        return Ok(Settle::Ack);
    }
    if shared
        .store
        .done_members(&job.batch_id)
        .await?
        .contains(&member)
    {
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
        record_failure(
            shared,
            &job,
            "cancelled",
            "the batch was cancelled before this task ran",
            true,
        )
        .await?;
        return Ok(Settle::Ack);
    }
    let lease = match shared.gpus.acquire(job.gpu_id) {
        Ok(lease) => lease,
        Err(e) => {
            dead_letter(
                shared,
                queue,
                delivery,
                &headers,
                &job,
                "gpu_unavailable",
                &e.to_string(),
            )
            .await?;
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
    shared
        .metrics
        .script_finished(report.outcome.is_ok(), report.duration.as_secs_f64());
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
            match shared
                .store
                .apply_script_result(&result)
                .await
                .context("storing the script's result")?
            {
                ApplyOutcome::Applied | ApplyOutcome::AlreadyDone => {}
                ApplyOutcome::UnknownJob => {
                    tracing::warn!(batch = %job.batch_id, "batch vanished from Redis while the task ran")
                }
            }
            // Only now that Redis holds the content may the node's copy go (had the write
            // failed, the job would be parked with its output file still in place).
            if let Err(e) = report.remove_output(&shared.root) {
                tracing::warn!(task = %job.task_id, error = %e, "could not remove the uploaded output file");
            }
            tracing::info!(task = %job.task_id, batch = %job.batch_id, node = %shared.node, gpu = ?gpu, attempt = job.attempt, secs = result.duration_secs, "script job done");
            Ok(Settle::Ack)
        }
        Err(reason) => {
            result.failure = Some(reason.code().to_string());
            if let Some(content) = &report.error_output {
                result.output = Some(ScriptOutput::new(output_name, content));
            }
            shared
                .store
                .save_script_attempt(&result)
                .await
                .context("storing the failed attempt")?;
            if report.error_output.is_some() {
                let _ = report.remove_output(&shared.root);
            }
            let detail = failure_detail(reason, &report);
            let last_attempt = job.attempt >= shared.retry.max_attempts;
            if reason.is_retryable() && !last_attempt {
                let mut next = job.clone();
                next.attempt = job.attempt + 1;
                let delay = shared
                    .retry
                    .backoff_ms(next.attempt, redelivery::jitter01());
                tracing::warn!(task = %job.task_id, batch = %job.batch_id, node = %shared.node, reason = reason.code(), detail = %detail, attempt = job.attempt, delay_ms = delay, "script job failed; retrying");
                // Redis first: if it is down, the job is parked before anything was published, so
                // parking never leaves a second copy in the queues.
                record_failure(shared, job, reason.code(), &detail, false).await?;
                shared
                    .broker()
                    .publish_retry(queue, &next.to_json(), &script_headers(&next), delay)
                    .await?;
            } else {
                tracing::warn!(task = %job.task_id, batch = %job.batch_id, node = %shared.node, reason = reason.code(), detail = %detail, attempt = job.attempt, "script job failed for good; dead-lettering it");
                dead_letter(
                    shared,
                    queue,
                    delivery,
                    headers,
                    job,
                    reason.code(),
                    &detail,
                )
                .await?;
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
    // Redis first (the batch settles on it): if Redis is down, the job is parked with nothing
    // published yet, and settles when Redis is back.
    record_failure(shared, job, reason, detail, true).await?;
    let mut headers = headers.clone();
    headers.insert(
        seedq_protocol::headers::NODE.to_string(),
        shared.node.clone(),
    );
    shared
        .broker()
        .publish_dead_letter(queue, &delivery.data, &headers, reason, detail)
        .await?;
    Ok(())
}

async fn record_failure(
    shared: &Shared,
    job: &ScriptJob,
    reason: &str,
    detail: &str,
    dead: bool,
) -> anyhow::Result<()> {
    let event = FailureEvent {
        member: job.member(),
        reason: reason.to_string(),
        detail: detail.to_string(),
        dead_lettered: dead,
        node: shared.node.clone(),
        attempt: job.attempt,
        at_ms: seedq_protocol::now_ms(),
    };
    shared
        .store
        .record_failure(&job.batch_id, &event)
        .await
        .with_context(|| format!("recording {reason} for task {}", job.task_id))?;
    Ok(())
}

/// Whether `e` comes from Redis being unreachable (after the store's own retries), rather than
/// from the job or the broker.
fn redis_unavailable(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<StoreError>()
            .is_some_and(StoreError::is_unavailable)
    })
}

/// Redis is unreachable: the job is not at fault, so it goes back through the delay queue
/// WITHOUT using an attempt, with a growing delay counted in `x-seedq-redis-waits`, and the
/// delivery is acked. A requeue instead would come straight back, and on RabbitMQ 3.10 every
/// requeue counts toward the quorum queue's delivery limit, after which the broker dead-letters
/// the job with nothing in Redis and the batch never settles. However long Redis is down, no job
/// is lost or dead-lettered for it. Every Redis write of a job precedes its publishes, so a
/// parked job has no second copy in the queues; a successful run whose result could not be
/// stored keeps its output file on the node (it is removed only after the write) and the job
/// runs again when it comes back.
async fn park_until_redis_returns(
    shared: &Shared,
    queue: &str,
    delivery: &Delivery,
    cause: &anyhow::Error,
) -> anyhow::Result<()> {
    let parked = redelivery::parking(&delivery.properties, &shared.retry);
    tracing::warn!(
        queue,
        task = parked.headers.get(seedq_protocol::headers::TASK).map(String::as_str).unwrap_or("?"),
        waits = parked.waits,
        delay_ms = parked.delay_ms,
        error = %format!("{cause:#}"),
        "Redis unavailable; script job parked in the delay queue"
    );
    shared
        .broker()
        .publish_retry(queue, &delivery.data, &parked.headers, parked.delay_ms)
        .await
        .context("parking the script job in the delay queue")?;
    Ok(())
}

async fn batch_exists(shared: &Shared, batch: &str) -> anyhow::Result<bool> {
    if let Some(known) = shared
        .known_batches
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(batch)
    {
        return Ok(*known);
    }
    let exists = shared.store.load_job(batch).await?.is_some();
    if exists {
        shared
            .known_batches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(batch.to_string(), true);
    }
    Ok(exists)
}
