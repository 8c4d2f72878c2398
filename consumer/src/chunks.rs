//! The seed-slot consumer: one channel per slot with prefetch 1 on `<ns>.seeds`, and the life of
//! one delivery.
//!
//! Per delivery: parse (bad message: dead-letter with the reason, ack; never crash) -> load the
//! job (cached) -> check the chunk against the job's plan and seed space -> skip it if the job
//! is cancelled -> run it on the slot thread -> `apply_chunk_result` (exactly once, one EVALSHA,
//! throughput EMA folded in) -> ONLY THEN ack, and check that the ack went out.
//!
//! Transient failures of the chunk (a backend error) are republished to the delay queue with
//! `attempt + 1` and exponential backoff with jitter, then acked; after `max_attempts` the chunk
//! is dead-lettered (`x-seedq-error`) and recorded as such in Redis, so `wait` can report it.
//! Redis being unreachable is not the chunk's fault: such chunks wait in the delay queue with a
//! growing delay without using attempts, however long the outage lasts.
//!
//! If the ack cannot be delivered (the connection died while the chunk ran), the session ends;
//! the broker redelivers the chunk to some slot, and applying it again is a no-op. A redelivered
//! chunk whose result is already in Redis is acked without running.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _};
use futures_util::StreamExt;
use seedq_broker::lapin::message::Delivery;
use seedq_broker::lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, BasicRejectOptions,
};
use seedq_broker::lapin::types::FieldTable;
use seedq_broker::{headers_of, Broker};
use seedq_protocol::topology::headers as h;
use seedq_protocol::{ChunkMessage, ChunkResult, FailureEvent, Topology, PROTOCOL_VERSION};
use seedq_store::{ApplyOutcome, ThroughputSample};

use crate::context::NodeContext;
use crate::jobs::{prepare, JobCache, Prepared, Rejection};
use crate::redelivery;
use crate::slot::{SlotWorker, Work};

/// Chunks shorter than this give no throughput sample (fixed costs dominate them). Kept low:
/// a planner that underestimates a fast backend makes short chunks, and those must still teach
/// it, or it never learns (the kernel's per-call cost is tens of microseconds).
const MIN_SAMPLE_SECS: f64 = 0.02;

/// Settings of the seed consumer.
pub struct SeedOptions {
    pub max_attempts: u32,
    pub prefetch: Prefetch,
    /// After shutdown starts, how long an in-flight chunk may still run before it is requeued.
    pub drain_timeout: Duration,
}

/// Runs one slot until shutdown, across broker reconnections.
pub async fn run_slot(
    ctx: Arc<NodeContext>,
    worker: Arc<SlotWorker>,
    cache: Arc<JobCache>,
    opts: Arc<SeedOptions>,
) {
    let mut seen = 0u64;
    loop {
        if ctx.is_shutting_down() {
            break;
        }
        let (generation, broker) = ctx.broker_generation();
        let (generation, broker) = if generation > seen {
            (generation, broker)
        } else if broker.is_connected() {
            // Same connection, channel-level failure: back off a little and reopen.
            tokio::time::sleep(Duration::from_secs(1)).await;
            (generation, broker)
        } else {
            match ctx.broker_changed(seen).await {
                Some(next) => next,
                None => break,
            }
        };
        seen = generation;
        match consume(&ctx, &worker, &cache, &opts, &broker).await {
            Ok(()) => break,
            Err(e) => {
                if ctx.is_shutting_down() {
                    break;
                }
                tracing::warn!(slot = %worker.name, error = %format!("{e:#}"), "seed consumer session ended; resubscribing");
            }
        }
    }
    ctx.stats.set_busy(&worker.name, None);
    tracing::info!(slot = %worker.name, "slot stopped");
}

/// One subscription on one channel. `Ok` after a clean drain; `Err` when the channel or
/// connection failed.
async fn consume(
    ctx: &Arc<NodeContext>,
    worker: &SlotWorker,
    cache: &JobCache,
    opts: &SeedOptions,
    broker: &Arc<Broker>,
) -> anyhow::Result<()> {
    let topology = broker.topology().clone();
    let queue = topology.seeds_queue();
    let channel = broker.channel().await?;
    let tag = Topology::slot_consumer_tag(ctx.node_name(), &worker.name);
    let mut prefetch = opts.prefetch.initial();
    let mut consumer = subscribe(&channel, &queue, &tag, prefetch).await?;
    tracing::info!(slot = %worker.name, backend = %worker.backend, queue = %queue, tag = %tag, prefetch, "slot subscribed");
    let mut shutdown = ctx.shutdown_signal();
    let mut timings = Timings::new();
    // Per-chunk busy time (EMA, seconds): what a prefetched chunk would wait behind.
    let mut busy_ema: Option<f64> = None;
    let mut draining_old_consumer = false;
    loop {
        let waiting = Instant::now();
        let next = tokio::select! {
            biased;
            _ = shutdown.wait_for(|s| *s) => None,
            next = consumer.next() => Some(next),
        };
        let delivery = match next {
            None => {
                let _ = channel
                    .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
                    .await;
                // Closing the channel returns any delivery that arrived after the cancel.
                let _ = channel.close(200, "draining".into()).await;
                return Ok(());
            }
            Some(Some(Ok(d))) if draining_old_consumer && prefetch == 1 => {
                // Leaving burst mode because chunks got long: what the old subscription still
                // holds goes back to the queue for any free slot instead of waiting here.
                let _ = d.acker.reject(BasicRejectOptions { requeue: true }).await;
                continue;
            }
            Some(Some(Ok(d))) => d,
            Some(Some(Err(e))) => return Err(anyhow!(e).context("seed consumer stream failed")),
            Some(None) if draining_old_consumer => {
                // The old subscription delivered everything it had prefetched: resubscribe.
                draining_old_consumer = false;
                consumer = subscribe(&channel, &queue, &tag, prefetch).await?;
                tracing::debug!(slot = %worker.name, prefetch, "slot resubscribed with a new prefetch");
                continue;
            }
            Some(None) => {
                return Err(anyhow!(
                    "the broker cancelled the seed consumer (queue deleted?)"
                ))
            }
        };
        timings.wait += waiting.elapsed();
        let busy_started = Instant::now();
        let handler = Handler {
            ctx,
            worker,
            cache,
            opts,
            broker,
            queue: &queue,
            timings: std::sync::Mutex::new(Phases::default()),
        };
        let handled = handler.handle(delivery).await;
        timings.add(*handler.timings.lock().unwrap_or_else(|p| p.into_inner()));
        timings.maybe_log(&worker.name);
        handled?;
        let busy = busy_started.elapsed().as_secs_f64();
        let ema = busy_ema.map_or(busy, |e| 0.2 * busy + 0.8 * e);
        busy_ema = Some(ema);
        if let Some(want) = opts.prefetch.adapt(prefetch, ema, busy) {
            if !draining_old_consumer {
                // Prefetch applies to consumers started after basic.qos: cancel, let the old
                // consumer hand over what it already holds, then subscribe again (above).
                tracing::debug!(slot = %worker.name, from = prefetch, to = want, chunk_ms = ema * 1e3, "changing prefetch");
                channel
                    .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
                    .await
                    .context("basic.cancel")?;
                prefetch = want;
                draining_old_consumer = true;
            }
        }
    }
}

async fn subscribe(
    channel: &seedq_broker::lapin::Channel,
    queue: &str,
    tag: &str,
    prefetch: u16,
) -> anyhow::Result<seedq_broker::lapin::Consumer> {
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await
        .context("basic.qos")?;
    channel
        .basic_consume(
            queue.into(),
            tag.into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("consuming {queue}"))
}

/// A slot's prefetch policy.
///
/// Each slot consumes with prefetch 1 so that a slow GPU never hoards chunks a fast
/// one could run. With a quorum queue, though, the next delivery after an ack waits for a Raft
/// commit of the settlement (about 2 ms measured on the dev box), which dominates chunks that
/// run in microseconds. `Auto` keeps prefetch 1 for real chunks and only when a slot's chunks take
/// under [`BURST_ENTER_SECS`] does it take [`BURST_PREFETCH`] at a time: the work it can then hold
/// back from other slots is at most `BURST_PREFETCH x 2 ms`, i.e. nothing a user would notice.
/// It returns to prefetch 1 as soon as one chunk takes longer than [`BURST_LEAVE_SECS`], and
/// hands the chunks it still held back to the queue (requeue) rather than run them here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefetch {
    Auto,
    Fixed(u16),
}

const BURST_PREFETCH: u16 = 16;
const BURST_ENTER_SECS: f64 = 0.002;
const BURST_LEAVE_SECS: f64 = 0.02;

impl Prefetch {
    fn initial(self) -> u16 {
        match self {
            Prefetch::Auto => 1,
            Prefetch::Fixed(n) => n.max(1),
        }
    }

    /// The prefetch to switch to, if it should change: enter burst on the average chunk time,
    /// leave it on a single long chunk (so long chunks are never held back behind each other).
    fn adapt(self, current: u16, average_secs: f64, last_secs: f64) -> Option<u16> {
        match self {
            Prefetch::Fixed(_) => None,
            Prefetch::Auto if current == 1 && average_secs < BURST_ENTER_SECS => {
                Some(BURST_PREFETCH)
            }
            Prefetch::Auto if current > 1 && last_secs > BURST_LEAVE_SECS => Some(1),
            Prefetch::Auto => None,
        }
    }
}

/// Where one delivery's time went (see [`Timings`]).
#[derive(Debug, Default, Clone, Copy)]
struct Phases {
    /// Parse, job cache, checks.
    prepare: Duration,
    /// Hand-off to the slot thread, kernel, hand-back.
    run: Duration,
    /// Kernel alone (measured on the slot thread).
    kernel: Duration,
    /// `apply_chunk_result` (one EVALSHA).
    apply: Duration,
    /// basic.ack.
    ack: Duration,
}

/// Per-slot time accounting, logged every [`TIMINGS_EVERY`] when the slot did work: how much of
/// a chunk's turnaround is waiting for the broker's next delivery, preparing, the thread
/// hand-off, the kernel, the Redis write and the ack. This is the "where does the time go" of
/// small chunks.
struct Timings {
    since: Instant,
    chunks: u64,
    wait: Duration,
    sum: Phases,
}

const TIMINGS_EVERY: Duration = Duration::from_secs(10);

impl Timings {
    fn new() -> Self {
        Timings {
            since: Instant::now(),
            chunks: 0,
            wait: Duration::ZERO,
            sum: Phases::default(),
        }
    }

    fn add(&mut self, p: Phases) {
        self.chunks += 1;
        self.sum.prepare += p.prepare;
        self.sum.run += p.run;
        self.sum.kernel += p.kernel;
        self.sum.apply += p.apply;
        self.sum.ack += p.ack;
    }

    fn maybe_log(&mut self, slot: &str) {
        let elapsed = self.since.elapsed();
        if elapsed < TIMINGS_EVERY {
            return;
        }
        if self.chunks > 0 {
            let per = |d: Duration| d.as_secs_f64() * 1e6 / self.chunks as f64;
            tracing::info!(
                slot,
                chunks = self.chunks,
                chunks_per_sec = format!("{:.0}", self.chunks as f64 / elapsed.as_secs_f64()),
                wait_us = format!("{:.0}", per(self.wait)),
                prepare_us = format!("{:.0}", per(self.sum.prepare)),
                handoff_us = format!("{:.0}", per(self.sum.run.saturating_sub(self.sum.kernel))),
                kernel_us = format!("{:.0}", per(self.sum.kernel)),
                apply_us = format!("{:.0}", per(self.sum.apply)),
                ack_us = format!("{:.0}", per(self.sum.ack)),
                "slot timings per chunk"
            );
        }
        *self = Timings::new();
    }
}

struct Handler<'a> {
    ctx: &'a Arc<NodeContext>,
    worker: &'a SlotWorker,
    cache: &'a JobCache,
    opts: &'a SeedOptions,
    broker: &'a Arc<Broker>,
    queue: &'a str,
    timings: std::sync::Mutex<Phases>,
}

/// How a failed chunk should be settled.
enum Failure {
    /// Will never succeed: dead-letter now.
    Permanent(Rejection),
    /// May succeed later: retry with backoff (dead-letter after the attempt limit).
    Transient {
        reason: &'static str,
        detail: String,
    },
}

impl Handler<'_> {
    /// Handles one delivery. `Err` only when the broker channel is unusable.
    async fn handle(&self, delivery: Delivery) -> anyhow::Result<()> {
        let msg = match crate::jobs::parse_chunk(&delivery.data) {
            Ok(m) => m,
            Err(rejection) => return self.dead_letter(&delivery, None, rejection).await,
        };
        if let Some(deliveries) = redelivery::last_delivery(
            &delivery.properties,
            self.ctx.cluster().broker.delivery_limit,
        ) {
            let detail = format!(
                "delivered {deliveries} times without completing: every slot that took it stopped or crashed while it ran \
                 (out of memory? a GPU hang? repeated drains?); fix the cause, then `seedq-producer dlq replay`"
            );
            return self
                .dead_letter(
                    &delivery,
                    Some(&msg),
                    Rejection::new("delivery_limit", detail),
                )
                .await;
        }
        let label = format!("{}/c{}", msg.job_id, msg.chunk);
        self.ctx
            .stats
            .set_busy(&self.worker.name, Some(label.clone()));
        self.ctx.metrics().chunk_started(&self.worker.name);
        let result = self.process(&delivery, &msg).await;
        self.ctx.stats.set_busy(&self.worker.name, None);
        self.ctx.metrics().slot_idle(&self.worker.name);
        match result {
            Ok(()) => Ok(()),
            Err(Failure::Permanent(r)) => self.dead_letter(&delivery, Some(&msg), r).await,
            Err(Failure::Transient { reason, detail }) => {
                self.retry(&delivery, &msg, reason, &detail).await
            }
        }
    }

    fn phase(&self, f: impl FnOnce(&mut Phases)) {
        f(&mut self.timings.lock().unwrap_or_else(|p| p.into_inner()));
    }

    async fn process(&self, delivery: &Delivery, msg: &ChunkMessage) -> Result<(), Failure> {
        let prepare_started = Instant::now();
        let store = self.ctx.store();
        // An embedded spec is checked first: a bad one is refused whatever the job.
        if let Some(spec) = &msg.spec {
            prepare(spec)
                .and_then(|p| p.check_seeds(&msg.seeds))
                .map_err(Failure::Permanent)?;
        }
        let cached = self
            .cache
            .get(&msg.job_id)
            .await
            .map_err(|e| Failure::Transient {
                reason: "redis_unavailable",
                detail: e.to_string(),
            })?;
        let Some(cached) = cached else {
            return Err(Failure::Permanent(Rejection::new(
                "unknown_job",
                format!("job '{}' is not in Redis (never created, expired or purged); re-enqueue it with the producer", msg.job_id),
            )));
        };
        // The stored job is authoritative (an embedded spec only had to be valid).
        let prepared: Prepared = match &cached.prepared {
            Ok(p) => p.clone(),
            Err(r) => return Err(Failure::Permanent(r.clone())),
        };
        if msg.kind != cached.job.kind() {
            return Err(Failure::Permanent(Rejection::new(
                "chunk_mismatch",
                format!(
                    "chunk says kind {} but job '{}' is {}",
                    msg.kind,
                    msg.job_id,
                    cached.job.kind()
                ),
            )));
        }
        match cached.job.chunk_seeds(msg.chunk) {
            Some(planned) if planned == msg.seeds => {}
            Some(_) => {
                return Err(Failure::Permanent(Rejection::new(
                    "chunk_mismatch",
                    format!(
                        "chunk {} of job '{}' carries {} but the job's plan says otherwise",
                        msg.chunk,
                        msg.job_id,
                        msg.seeds_label()
                    ),
                )))
            }
            None => {
                return Err(Failure::Permanent(Rejection::new(
                    "chunk_mismatch",
                    format!(
                        "job '{}' has {} chunks; there is no chunk {}",
                        msg.job_id, cached.job.chunk_count, msg.chunk
                    ),
                )))
            }
        }
        prepared
            .check_seeds(&msg.seeds)
            .map_err(Failure::Permanent)?;

        let member = msg.member();
        if delivery.redelivered && store.is_done(&msg.job_id, &member).await.unwrap_or(false) {
            tracing::debug!(job = %msg.job_id, chunk = msg.chunk, "redelivered chunk already applied; acking");
            return self.ack(delivery).await.map_err(|e| Failure::Transient {
                reason: "ack_failed",
                detail: e.to_string(),
            });
        }
        // The cached flag may be stale after a `resume` lifted the cancel: confirm before skipping.
        if self.cache.is_cancelled(&msg.job_id).await.unwrap_or(false)
            && store.is_cancelled(&msg.job_id).await.unwrap_or(true)
        {
            let event = self.event(msg, "cancelled", "job cancelled; chunk skipped", true);
            if let Err(e) = store.record_failure(&msg.job_id, &event).await {
                return Err(Failure::Transient {
                    reason: "redis_unavailable",
                    detail: e.to_string(),
                });
            }
            tracing::info!(job = %msg.job_id, chunk = msg.chunk, slot = %self.worker.name, reason = "cancelled", "job cancelled: chunk skipped");
            return self.ack(delivery).await.map_err(|e| Failure::Transient {
                reason: "ack_failed",
                detail: e.to_string(),
            });
        }

        let work = match &prepared {
            Prepared::Sieve(spec) => Work::Sieve {
                spec: spec.clone(),
                seeds: msg.seeds.clone(),
                count_only: cached.job.count_only,
            },
            Prepared::Analysis(kind, spec) => Work::Analysis {
                kind: *kind,
                spec: spec.clone(),
                seeds: msg.seeds.clone(),
            },
        };
        self.phase(|p| p.prepare = prepare_started.elapsed());
        let run_started = Instant::now();
        let output = {
            let run = self.worker.run(work);
            tokio::pin!(run);
            let drain_expired = drain_expired(self.ctx.shutdown_signal(), self.opts.drain_timeout);
            tokio::pin!(drain_expired);
            tokio::select! {
                r = &mut run => r,
                _ = &mut drain_expired => {
                    tracing::warn!(job = %msg.job_id, chunk = msg.chunk, slot = %self.worker.name, "drain timeout: returning the in-flight chunk to the queue");
                    let _ = delivery.acker.reject(BasicRejectOptions { requeue: true }).await;
                    return Ok(());
                }
            }
        };
        let output = match output {
            Ok(o) => o,
            Err(seedq_kernels::SieveError::Backend(detail)) => {
                return Err(Failure::Transient {
                    reason: "backend_error",
                    detail,
                })
            }
            Err(e) => {
                return Err(Failure::Permanent(Rejection::new(
                    "invalid_spec",
                    e.to_string(),
                )))
            }
        };
        self.phase(|p| {
            p.run = run_started.elapsed();
            p.kernel = output.duration;
        });
        let secs = output.duration.as_secs_f64();
        let units_per_sec = (secs >= MIN_SAMPLE_SECS)
            .then(|| output.seeds_tested as f64 * prepared.work_per_seed() / secs);
        let result = ChunkResult {
            v: PROTOCOL_VERSION,
            job_id: msg.job_id.clone(),
            chunk: msg.chunk,
            attempt: msg.attempt,
            seeds_tested: output.seeds_tested,
            survivor_pieces: output.survivor_pieces,
            survivor_count: output.survivor_count,
            counts: output.counts,
            flagged: output.flagged,
            summary: output.summary,
            duration_secs: secs,
            units_per_sec,
            node: self.ctx.node_name().to_string(),
            slot: self.worker.name.clone(),
            backend: self.worker.backend.clone(),
            gpu_model: self.worker.gpu_model.clone(),
            finished_at_ms: seedq_protocol::now_ms(),
        };
        let sample = match (units_per_sec, &cached.family_key) {
            (Some(units), Some(family)) => Some(ThroughputSample {
                gpu_model: self.worker.gpu_model.clone(),
                family: family.clone(),
                units_per_sec: units,
                alpha: self.ctx.cluster().chunking.ema_alpha,
            }),
            _ => None,
        };
        let apply_started = Instant::now();
        let applied = store
            .apply_chunk_result(&result, sample.as_ref())
            .await
            .map_err(|e| Failure::Transient {
                reason: "redis_unavailable",
                detail: e.to_string(),
            })?;
        self.phase(|p| p.apply = apply_started.elapsed());
        match applied {
            ApplyOutcome::Applied => {}
            ApplyOutcome::AlreadyDone => {
                tracing::debug!(job = %msg.job_id, chunk = msg.chunk, "chunk was already applied (duplicate delivery)");
            }
            ApplyOutcome::UnknownJob => {
                return Err(Failure::Permanent(Rejection::new(
                    "unknown_job",
                    format!(
                        "job '{}' disappeared from Redis while chunk {} ran (expired or purged)",
                        msg.job_id, msg.chunk
                    ),
                )))
            }
        }
        tracing::info!(
            job = %msg.job_id,
            chunk = msg.chunk,
            node = %self.ctx.node_name(),
            slot = %self.worker.name,
            attempt = msg.attempt,
            seeds = result.seeds_tested,
            secs,
            duplicate = matches!(applied, ApplyOutcome::AlreadyDone),
            "chunk done"
        );
        self.ctx
            .metrics()
            .chunk_finished(&self.worker.name, result.seeds_tested, secs);
        self.ctx.stats.chunk_done(&self.worker.name);
        let ack_started = Instant::now();
        let acked = self.ack(delivery).await.map_err(|e| Failure::Transient {
            reason: "ack_failed",
            detail: e.to_string(),
        });
        self.phase(|p| p.ack = ack_started.elapsed());
        acked
    }

    fn event(
        &self,
        msg: &ChunkMessage,
        reason: &str,
        detail: &str,
        dead_lettered: bool,
    ) -> FailureEvent {
        FailureEvent {
            member: msg.member(),
            reason: reason.to_string(),
            detail: detail.to_string(),
            dead_lettered,
            node: self.ctx.node_name().to_string(),
            attempt: msg.attempt,
            at_ms: seedq_protocol::now_ms(),
        }
    }

    /// Acks and checks the result: a poisoned channel (connection lost) is an error.
    async fn ack(&self, delivery: &Delivery) -> anyhow::Result<()> {
        match delivery.acker.ack(BasicAckOptions::default()).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(anyhow!("ack not delivered: the channel is closed; the broker will redeliver the chunk (applied once)")),
            Err(e) => Err(anyhow!(e).context("ack failed; the broker will redeliver the chunk (applied once)")),
        }
    }

    /// Dead-letters the delivery with its original body and headers plus the reason, records it
    /// for the job when the job is known, then acks.
    async fn dead_letter(
        &self,
        delivery: &Delivery,
        msg: Option<&ChunkMessage>,
        rejection: Rejection,
    ) -> anyhow::Result<()> {
        tracing::warn!(
            reason = rejection.reason,
            detail = %rejection.detail,
            job = msg.map(|m| m.job_id.as_str()).unwrap_or("?"),
            chunk = msg.map(|m| m.chunk as i64).unwrap_or(-1),
            attempt = msg.map(|m| m.attempt),
            node = %self.ctx.node_name(),
            slot = %self.worker.name,
            "dead-lettering chunk"
        );
        // Redis first: a dead letter the job does not know about would leave it unfinished
        // forever. If Redis is down the chunk waits for it like any other (recording is
        // idempotent, so a redelivery after a crash between the two steps is harmless).
        if let Some(msg) = msg {
            let event = self.event(msg, rejection.reason, &rejection.detail, true);
            if let Err(e) = self.ctx.store().record_failure(&msg.job_id, &event).await {
                if e.is_unavailable() {
                    return self
                        .park_until_redis_returns(delivery, msg, &e.to_string())
                        .await;
                }
                tracing::warn!(error = %e, job = %msg.job_id, "could not record the dead letter in Redis");
            }
        }
        self.ctx.metrics().chunk_failed(rejection.reason);
        self.ctx.stats.chunk_failed();
        let mut headers = headers_of(&delivery.properties);
        headers.insert(h::NODE.into(), self.ctx.node_name().to_string());
        self.broker
            .publish_dead_letter(
                self.queue,
                &delivery.data,
                &headers,
                rejection.reason,
                &rejection.detail,
            )
            .await
            .context("publishing to the dead-letter queue")?;
        self.ack(delivery).await
    }

    /// Republishes through the delay queue with the attempt bumped, or dead-letters after the
    /// attempt limit; then acks.
    async fn retry(
        &self,
        delivery: &Delivery,
        msg: &ChunkMessage,
        reason: &'static str,
        detail: &str,
    ) -> anyhow::Result<()> {
        if reason == "ack_failed" {
            // Nothing to republish: the broker redelivers it.
            return Err(anyhow!("{detail}"));
        }
        if reason == "redis_unavailable" {
            return self.park_until_redis_returns(delivery, msg, detail).await;
        }
        if msg.attempt >= self.opts.max_attempts {
            return self
                .dead_letter(
                    delivery,
                    Some(msg),
                    Rejection::new(
                        reason,
                        format!("gave up after {} attempts: {detail}", msg.attempt),
                    ),
                )
                .await;
        }
        let retry = self.ctx.cluster().retry.clone();
        let next = msg.attempt + 1;
        let delay = retry.backoff_ms(next, redelivery::jitter01());
        tracing::warn!(job = %msg.job_id, chunk = msg.chunk, node = %self.ctx.node_name(), slot = %self.worker.name, reason, detail, attempt = msg.attempt, next_attempt = next, delay_ms = delay, "chunk failed; retrying later");
        self.ctx.metrics().chunk_failed(reason);
        self.ctx.stats.chunk_failed();
        let mut again = msg.clone();
        again.attempt = next;
        let mut headers = headers_of(&delivery.properties);
        headers.insert(h::ATTEMPT.into(), next.to_string());
        headers.insert(h::ERROR.into(), reason.to_string());
        self.broker
            .publish_retry(self.queue, &again.to_json(), &headers, delay)
            .await
            .context("publishing to the retry queue")?;
        let event = self.event(msg, reason, detail, false);
        if let Err(e) = self.ctx.store().record_failure(&msg.job_id, &event).await {
            tracing::debug!(error = %e, "could not record the failed attempt in Redis");
        }
        self.ack(delivery).await
    }
}

impl Handler<'_> {
    /// Redis is unreachable (after the store's own retries): the chunk is not at fault, so it
    /// goes back through the delay queue WITHOUT using up an attempt, with a growing delay kept
    /// in the `x-seedq-redis-waits` header. However long Redis is down, no chunk is dead-lettered
    /// for it and none is lost.
    async fn park_until_redis_returns(
        &self,
        delivery: &Delivery,
        msg: &ChunkMessage,
        detail: &str,
    ) -> anyhow::Result<()> {
        let parked = redelivery::parking(&delivery.properties, &self.ctx.cluster().retry);
        tracing::warn!(job = %msg.job_id, chunk = msg.chunk, slot = %self.worker.name, reason = "redis_unavailable", detail, waits = parked.waits, delay_ms = parked.delay_ms, "Redis unavailable; chunk parked in the delay queue");
        self.ctx.metrics().chunk_failed("redis_unavailable");
        self.broker
            .publish_retry(self.queue, &delivery.data, &parked.headers, parked.delay_ms)
            .await
            .context("publishing to the retry queue")?;
        self.ack(delivery).await
    }
}

/// Completes `timeout` after shutdown starts.
async fn drain_expired(mut shutdown: tokio::sync::watch::Receiver<bool>, timeout: Duration) {
    if shutdown.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
    tokio::time::sleep(timeout).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefetch_bursts_only_for_tiny_chunks() {
        let auto = Prefetch::Auto;
        assert_eq!(auto.adapt(1, 0.0005, 0.0005), Some(BURST_PREFETCH));
        assert_eq!(
            auto.adapt(1, 0.005, 0.005),
            None,
            "between the thresholds nothing changes"
        );
        assert_eq!(
            auto.adapt(BURST_PREFETCH, 0.001, 0.5),
            Some(1),
            "one long chunk ends the burst"
        );
        assert_eq!(auto.adapt(BURST_PREFETCH, 0.001, 0.001), None);
        assert_eq!(Prefetch::Fixed(4).adapt(4, 0.0, 0.0), None);
        assert_eq!(Prefetch::Fixed(0).initial(), 1);
    }
}
