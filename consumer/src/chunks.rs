//! The seed-slot consumer: one channel per slot with prefetch 1 on `<ns>.seeds`, and the life of
//! one delivery.
//!
//! Per delivery: check the signature (with a job key configured; missing or wrong: dead letter
//! `bad_signature`) -> parse (bad message: dead-letter with the reason, ack; never crash) -> load the
//! job (cached) -> check the chunk against the job's plan and seed space -> skip it if the job
//! is cancelled -> run it on the slot thread -> `apply_chunk_result` (exactly once, one EVALSHA,
//! throughput EMA folded in) -> ONLY THEN ack, and check that the ack went out.
//!
//! The handler only decides how the delivery ends ([`Settle`]); [`crate::settle`] carries it out
//! (Redis, then publish, then a checked ack) with the rules both consumers share: transient
//! failures (a backend error) retry through the delay queue with backoff, then dead-letter;
//! Redis not taking writes parks the chunk without using attempts; a chunk of another life of
//! its job id (another epoch) or outside the plan is dead-lettered as `stale_message` and touches
//! nothing of the live job; a corrupt stored job dead-letters as `corrupt_job`.
//!
//! If the ack cannot be delivered (the connection died while the chunk ran), the session ends;
//! the broker redelivers the chunk to some slot, and applying it again is a no-op. A redelivered
//! chunk whose result is already in Redis is acked without running.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _};
use seedq_broker::{Broker, Inbound, Subscription};
use seedq_protocol::check::{CheckKind, CHECK_HOPS_ANY, CHECK_HOPS_OTHER_SLOT};
use seedq_protocol::{
    CheckOrder, ChunkMessage, ChunkResult, Eligibility, FailureEvent, FailureReason,
    QuarantineReason, SlotRef, Topology, PROTOCOL_VERSION,
};
use seedq_store::{ApplyOutcome, CheckResolution, RecordOutcome, Resolve, ThroughputSample};

use crate::context::NodeContext;
use crate::health::{HealthOptions, SlotHealth};
use crate::jobs::{prepare, JobCache, Prepared};
use crate::settle::{keep_subscribed, HandBack, Settle, Settler, Subject};
use crate::slot::{Output, SlotWorker, Work};

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
    /// Self-tests and quarantine (`crate::health`).
    pub health: HealthOptions,
    /// Decides verifications whose two runs differ (`crate::verify`).
    pub referee: crate::verify::Referee,
    /// Whether another node could take a check (`crate::verify`).
    pub peers: crate::verify::Peers,
}

/// Runs one slot until shutdown, across broker reconnections.
pub async fn run_slot(
    ctx: Arc<NodeContext>,
    worker: Arc<SlotWorker>,
    cache: Arc<JobCache>,
    opts: Arc<SeedOptions>,
) {
    let settler = Settler::new(Arc::clone(&ctx), &worker.name).with_max_attempts(opts.max_attempts);
    let what = format!("slot {}", worker.name);
    let health = SlotHealth::new(opts.health.clone());
    // The known-answer check before the first chunk: a slot that fails it never subscribes.
    let mut quarantine = health.self_test(&ctx, &worker).await.err();
    loop {
        if let Some(q) = quarantine.take() {
            if !health.sit_out(&ctx, &worker, q).await {
                break;
            }
        }
        keep_subscribed(&ctx, &what, |broker| {
            consume(&ctx, &worker, &cache, &opts, &settler, &health, broker)
        })
        .await;
        // The session ended cleanly: a drain, or a quarantine that handed everything back.
        match health.take_pending() {
            Some(q) if !ctx.is_shutting_down() => quarantine = Some(q),
            _ => break,
        }
    }
    ctx.stats.set_busy(&worker.name, None);
    ctx.stats.set_prefetch(&worker.name, 0);
    tracing::info!(slot = %worker.name, "slot stopped");
}

/// One subscription on one channel. `Ok` after a clean drain or when the slot is quarantined
/// (having handed back what it held; `health` then has the quarantine); `Err` when the channel
/// or connection failed.
async fn consume(
    ctx: &Arc<NodeContext>,
    worker: &SlotWorker,
    cache: &JobCache,
    opts: &SeedOptions,
    settler: &Settler,
    health: &SlotHealth,
    broker: Arc<Broker>,
) -> anyhow::Result<()> {
    // A quarantine whose hand-back failed with the channel: the slot must not subscribe again.
    if health.has_pending() {
        return Ok(());
    }
    let queue = broker.topology().seeds_queue();
    let tag = Topology::slot_consumer_tag(ctx.node_name(), &worker.name);
    let mut prefetch = opts.prefetch.initial();
    let mut subscription = Subscription::open(&broker, &queue, &tag, prefetch).await?;
    ctx.stats.set_prefetch(&worker.name, prefetch);
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
            next = subscription.next() => Some(next),
        };
        let inbound = match next {
            None => return leave(subscription, settler, HandBack::Drain).await,
            Some(Some(Ok(d))) if draining_old_consumer && prefetch == 1 => {
                // Leaving burst mode because chunks got long: what the old subscription still
                // holds goes back to the queue for any free slot instead of waiting here.
                settler
                    .settle(&d, None, Settle::HandBack(HandBack::LeavingBurst))
                    .await?;
                continue;
            }
            Some(Some(Ok(d))) => d,
            Some(Some(Err(e))) => return Err(anyhow!(e).context("seed consumer stream failed")),
            Some(None) if draining_old_consumer => {
                // The old subscription delivered everything it had prefetched: resubscribe.
                draining_old_consumer = false;
                subscription.resume(prefetch).await?;
                ctx.stats.set_prefetch(&worker.name, prefetch);
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
        // The periodic known-answer check runs while the slot has work, before the chunk it
        // holds: a failure hands that chunk back untouched.
        if health.self_test_due() {
            if let Err(q) = health.self_test(ctx, worker).await {
                health.set_pending(q);
                settler
                    .settle(&inbound, None, Settle::HandBack(HandBack::Quarantine))
                    .await?;
                return leave(subscription, settler, HandBack::Quarantine).await;
            }
        }
        let busy_started = Instant::now();
        let handler = Handler {
            ctx,
            worker,
            cache,
            opts,
            settler,
            health,
            timings: std::sync::Mutex::new(Phases::default()),
        };
        let handled = handler.handle(inbound).await;
        timings.add(*handler.timings.lock().unwrap_or_else(|p| p.into_inner()));
        timings.maybe_log(&worker.name);
        handled?;
        if health.has_pending() {
            return leave(subscription, settler, HandBack::Quarantine).await;
        }
        let busy = busy_started.elapsed().as_secs_f64();
        let ema = busy_ema.map_or(busy, |e| 0.2 * busy + 0.8 * e);
        busy_ema = Some(ema);
        if let Some(want) = opts.prefetch.adapt(prefetch, ema, busy) {
            if !draining_old_consumer {
                // Prefetch applies to consumers started after basic.qos: cancel, let the old
                // consumer hand over what it already holds, then subscribe again (above).
                tracing::debug!(slot = %worker.name, from = prefetch, to = want, chunk_ms = ema * 1e3, "changing prefetch");
                subscription.cancel().await.context("basic.cancel")?;
                prefetch = want;
                draining_old_consumer = true;
            }
        }
    }
}

/// Ends a subscription without losing a delivery: cancels the consumer, hands back as fresh
/// messages whatever arrives before the cancel took effect (a chunk handed back on the drain
/// timeout may come straight back here; a burst prefetch holds several), then closes the channel
/// (closing with deliveries in hand would return them with a delivery counted against the limit).
async fn leave(
    mut subscription: Subscription,
    settler: &Settler,
    why: HandBack,
) -> anyhow::Result<()> {
    let _ = subscription.cancel().await;
    while let Ok(Some(Ok(d))) =
        tokio::time::timeout(Duration::from_millis(500), subscription.next()).await
    {
        settler.settle(&d, None, Settle::HandBack(why)).await?;
    }
    subscription
        .close(match why {
            HandBack::Quarantine => "slot quarantined",
            _ => "draining",
        })
        .await;
    Ok(())
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
    settler: &'a Settler,
    health: &'a SlotHealth,
    timings: std::sync::Mutex<Phases>,
}

/// The chunk as the job's records know it.
fn subject_of(msg: &ChunkMessage) -> Subject {
    Subject {
        job_id: msg.job_id.clone(),
        epoch: msg.epoch,
        member: msg.member(),
        attempt: msg.attempt,
    }
}

impl Handler<'_> {
    /// Handles one delivery. `Err` only when the broker channel is unusable.
    async fn handle(&self, inbound: Inbound) -> anyhow::Result<()> {
        let signed = crate::jobs::check_signature(
            self.ctx.endpoints().job_key(),
            inbound.body(),
            &inbound.headers(),
        );
        let msg = match signed.and_then(|()| crate::jobs::parse_chunk(inbound.body())) {
            Ok(m) => m,
            Err(r) => {
                let subject = match r.reason {
                    FailureReason::BadSignature => self.unsealed_subject(inbound.body()).await,
                    _ => None,
                };
                return self
                    .settler
                    .settle(&inbound, subject.as_ref(), Settle::dead(r.reason, r.detail))
                    .await;
            }
        };
        let subject = subject_of(&msg);
        let label = format!("{}/c{}", msg.job_id, msg.chunk);
        self.ctx
            .stats
            .set_busy(&self.worker.name, Some(label.clone()));
        self.ctx.metrics().chunk_started(&self.worker.name);
        let (trusted, outcome) = self.process(&inbound, &msg).await;
        // The error that makes the slot's backend fail `--quarantine-after-errors` chunks in a
        // row quarantines the slot: the chunk goes back without using an attempt (the slot is
        // the suspect now, not the chunk).
        let outcome = match outcome {
            Settle::Retry {
                reason: FailureReason::BackendError,
                ref detail,
                ..
            } if self.health.backend_failed(detail) => {
                tracing::warn!(job = %msg.job_id, chunk = msg.chunk, slot = %self.worker.name, detail, "backend error; quarantining the slot and handing the chunk back");
                Settle::HandBack(HandBack::Quarantine)
            }
            other => other,
        };
        self.ctx.stats.set_busy(&self.worker.name, None);
        self.ctx.metrics().slot_idle(&self.worker.name);
        let ack_started = Instant::now();
        let settled = self
            .settler
            .settle(&inbound, trusted.then_some(&subject), outcome)
            .await;
        self.phase(|p| p.ack = ack_started.elapsed());
        settled
    }

    /// The subject of an unsigned or wrongly signed chunk whose job's record the key did not
    /// seal either (a job enqueued without the key): its own record hears of the refusal, so
    /// the job settles and frees its scheduler places. A message naming a sealed job touches
    /// nothing: it would be a forgery aimed at a real job.
    async fn unsealed_subject(&self, body: &[u8]) -> Option<Subject> {
        let msg = crate::jobs::parse_chunk(body).ok()?;
        let cached = self.cache.get(&msg.job_id, msg.epoch).await.ok()??;
        (cached.sealed.is_err()
            && cached.job.is_current_epoch(msg.epoch)
            && msg.chunk < cached.job.chunk_count)
            .then(|| subject_of(&msg))
    }

    fn phase(&self, f: impl FnOnce(&mut Phases)) {
        f(&mut self.timings.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// Decides the delivery's settlement, and whether the job's records may be told about it
    /// (not for a message of another life of the job, or outside its plan).
    async fn process(&self, inbound: &Inbound, msg: &ChunkMessage) -> (bool, Settle) {
        let prepare_started = Instant::now();
        let store = self.ctx.store();
        // An embedded spec is checked first: a bad one is refused whatever the job. Its checks
        // can cost time in the spec's sizes, so they run off the runtime's threads.
        if let Some(spec) = msg.spec.clone() {
            let seeds = msg.seeds.clone();
            let checked =
                tokio::task::spawn_blocking(move || prepare(&spec)?.check_seeds(&seeds)).await;
            match checked {
                Ok(Ok(())) => {}
                Ok(Err(r)) => return (true, Settle::dead(r.reason, r.detail)),
                Err(e) => {
                    return (
                        true,
                        Settle::dead(FailureReason::InvalidSpec, e.to_string()),
                    )
                }
            }
        }
        let cached = match self.cache.get(&msg.job_id, msg.epoch).await {
            Ok(Some(cached)) => cached,
            Ok(None) => {
                return (
                    false,
                    Settle::dead(
                        FailureReason::UnknownJob,
                        format!("job '{}' is not in Redis (never created, expired or purged); re-enqueue it with the producer", msg.job_id),
                    ),
                )
            }
            Err(e) => return (true, Settle::store_failed(&e, None)),
        };
        if !cached.job.is_current_epoch(msg.epoch) {
            return (
                false,
                Settle::dead(
                    FailureReason::StaleMessage,
                    format!(
                        "chunk {} is of an earlier job under the id '{}' (epoch {}, the job's is {}): it touches nothing of the live job",
                        msg.chunk, msg.job_id, msg.epoch, cached.job.epoch
                    ),
                ),
            );
        }
        // A record the key did not seal runs nothing: it cannot be trusted to say what the job
        // is. Its own record hears of it, so the job settles and frees its scheduler places.
        if let Err(r) = &cached.sealed {
            return (
                msg.chunk < cached.job.chunk_count,
                Settle::dead(r.reason, r.detail.clone()),
            );
        }
        let member = msg.member();
        if let Some(deliveries) = self.settler.past_delivery_limit(inbound) {
            if msg.check.is_some() {
                tracing::warn!(job = %msg.job_id, chunk = msg.chunk, deliveries, "a check past the delivery limit: giving it up as unverified");
                return (false, self.give_up_check(msg).await);
            }
            // A chunk done meanwhile is simply acked on its last delivery.
            return match store.is_done(&msg.job_id, &member).await {
                Ok(true) => (true, Settle::Ack),
                Ok(false) => (
                    true,
                    Settle::dead(
                        FailureReason::DeliveryLimit,
                        Settler::delivery_limit_detail(deliveries),
                    ),
                ),
                Err(e) => (true, Settle::store_failed(&e, None)),
            };
        }
        // The stored job is authoritative (an embedded spec only had to be valid).
        let prepared: Prepared = match &cached.prepared {
            Ok(p) => p.clone(),
            Err(r) => return (true, Settle::dead(r.reason, r.detail.clone())),
        };
        if msg.kind != cached.job.kind() {
            return (
                true,
                Settle::dead(
                    FailureReason::ChunkMismatch,
                    format!(
                        "chunk says kind {} but job '{}' is {}",
                        msg.kind,
                        msg.job_id,
                        cached.job.kind()
                    ),
                ),
            );
        }
        match cached.job.chunk_seeds(msg.chunk) {
            Some(planned) if planned == msg.seeds => {}
            Some(_) => {
                return (
                    true,
                    Settle::dead(
                        FailureReason::ChunkMismatch,
                        format!(
                            "chunk {} of job '{}' carries {} but the job's plan says otherwise",
                            msg.chunk,
                            msg.job_id,
                            msg.seeds_label()
                        ),
                    ),
                )
            }
            None => {
                // Outside the plan: recording it would count a dead chunk the job does not have.
                return (
                    false,
                    Settle::dead(
                        FailureReason::StaleMessage,
                        format!(
                            "job '{}' has {} chunks; there is no chunk {}",
                            msg.job_id, cached.job.chunk_count, msg.chunk
                        ),
                    ),
                );
            }
        }
        if let Err(r) = prepared.check_seeds(&msg.seeds) {
            return (true, Settle::dead(r.reason, r.detail));
        }
        let count_only = cached.job.count_only;
        if let Some(order) = &msg.check {
            // A check's chunk is done already: nothing about it is recorded against the job.
            self.phase(|p| p.prepare = prepare_started.elapsed());
            return (
                false,
                self.process_check(msg, order, &prepared, count_only).await,
            );
        }

        if inbound.redelivered() && store.is_done(&msg.job_id, &member).await.unwrap_or(false) {
            tracing::debug!(job = %msg.job_id, chunk = msg.chunk, "redelivered chunk already applied; acking");
            return (true, Settle::Ack);
        }
        // The cached flag may be stale after a `resume` lifted the cancel: the store records the
        // skip only while the cancel still holds (checked atomically), else the chunk runs.
        if self.cache.is_cancelled(&msg.job_id).await.unwrap_or(false) {
            let event = FailureEvent {
                member: member.clone(),
                reason: FailureReason::Cancelled,
                detail: "job cancelled; chunk skipped".into(),
                dead_lettered: true,
                node: self.ctx.node_name().to_string(),
                attempt: msg.attempt,
                at_ms: seedq_protocol::now_ms(),
            };
            match store.record_failure(&msg.job_id, msg.epoch, &event).await {
                Ok(RecordOutcome::NotCancelled) => {
                    self.cache.forget_cancelled(&msg.job_id);
                }
                Ok(_) => {
                    tracing::info!(job = %msg.job_id, chunk = msg.chunk, slot = %self.worker.name, reason = "cancelled", "job cancelled: chunk skipped");
                    return (true, Settle::Ack);
                }
                Err(e) => return (true, Settle::store_failed(&e, None)),
            }
        }

        self.phase(|p| p.prepare = prepare_started.elapsed());
        let result = match self.run(msg, &prepared, count_only).await {
            Ok(r) => r,
            Err(settle) => return (true, settle),
        };
        let (secs, units_per_sec) = (result.duration_secs, result.units_per_sec);
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
        let applied = match store.apply_chunk_result(&result, sample.as_ref()).await {
            Ok(a) => a,
            // A kernel result is cheap to recompute next time: park the message, not the result.
            Err(e) => return (true, Settle::store_failed(&e, None)),
        };
        self.phase(|p| p.apply = apply_started.elapsed());
        match applied {
            ApplyOutcome::Applied => {}
            ApplyOutcome::AppliedToVerify => {
                tracing::debug!(job = %msg.job_id, chunk = msg.chunk, "chunk drawn for verification");
                self.publish_checks(&[(msg.job_id.clone(), msg.chunk)]).await;
            }
            ApplyOutcome::SlotFlagged => return (true, self.flagged().await),
            ApplyOutcome::AlreadyDone => {
                tracing::debug!(job = %msg.job_id, chunk = msg.chunk, "chunk was already applied (duplicate delivery)");
            }
            // Only a script result counts against a batch's output cap; a chunk whose job id
            // names a batch is not the batch's either.
            ApplyOutcome::BatchOutputLimit => {
                return (
                    false,
                    Settle::dead(
                        FailureReason::StaleMessage,
                        format!("job '{}' is a script batch, not this chunk's job", msg.job_id),
                    ),
                )
            }
            ApplyOutcome::UnknownJob => {
                return (
                    false,
                    Settle::dead(
                        FailureReason::UnknownJob,
                        format!(
                            "job '{}' disappeared from Redis while chunk {} ran (expired or purged)",
                            msg.job_id, msg.chunk
                        ),
                    ),
                )
            }
            ApplyOutcome::Stale => {
                return (
                    false,
                    Settle::dead(
                        FailureReason::StaleMessage,
                        format!(
                            "job '{}' was re-created while chunk {} ran: the result belongs to its earlier life",
                            msg.job_id, msg.chunk
                        ),
                    ),
                )
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
        (true, Settle::Ack)
    }

    /// Runs the chunk on the slot and makes its result; `Err` is how the delivery ends instead
    /// (the drain timeout, a backend error to retry, a spec the backend refuses).
    async fn run(
        &self,
        msg: &ChunkMessage,
        prepared: &Prepared,
        count_only: bool,
    ) -> Result<ChunkResult, Settle> {
        let run_started = Instant::now();
        let output = {
            let run = self.worker.run(work_of(prepared, msg, count_only));
            tokio::pin!(run);
            let drain_expired = drain_expired(self.ctx.shutdown_signal(), self.opts.drain_timeout);
            tokio::pin!(drain_expired);
            tokio::select! {
                r = &mut run => r,
                _ = &mut drain_expired => {
                    tracing::warn!(job = %msg.job_id, chunk = msg.chunk, slot = %self.worker.name, "drain timeout: returning the in-flight chunk to the queue");
                    return Err(Settle::HandBack(HandBack::Drain));
                }
            }
        };
        let output = match output {
            Ok(o) => {
                self.health.kernel_ok();
                o
            }
            Err(seedq_kernels::SieveError::Backend(detail)) => {
                let mut next = msg.clone();
                next.attempt += 1;
                return Err(Settle::Retry {
                    reason: FailureReason::BackendError,
                    detail,
                    next: next.to_json(),
                    parked: None,
                });
            }
            Err(e) => return Err(Settle::dead(FailureReason::InvalidSpec, e.to_string())),
        };
        self.phase(|p| {
            p.run = run_started.elapsed();
            p.kernel = output.duration;
        });
        let secs = output.duration.as_secs_f64();
        let units_per_sec = (secs >= MIN_SAMPLE_SECS)
            .then(|| output.seeds_tested as f64 * prepared.work_per_seed() / secs);
        Ok(result_of(
            msg,
            output,
            self.ctx.node_name(),
            self.worker,
            units_per_sec,
        ))
    }

    /// This slot, as results and check orders name it.
    fn slot_ref(&self) -> SlotRef {
        crate::health::slot_ref(self.ctx, self.worker)
    }

    /// A check message (`seedq_protocol::check`): run here if this slot may, and settle it with
    /// the store. Never recorded against the job (its chunk is done): the check is settled,
    /// given up, passed on to another slot, or handed back.
    async fn process_check(
        &self,
        msg: &ChunkMessage,
        order: &CheckOrder,
        prepared: &Prepared,
        count_only: bool,
    ) -> Settle {
        let store = self.ctx.store();
        // The stored order is the truth: a check settled meanwhile is not run again.
        match store.check_order(&msg.job_id, msg.chunk).await {
            Ok(Some(_)) => {}
            Ok(None) => return Settle::Ack,
            Err(e) => return Settle::store_failed(&e, None),
        }
        // A cancelled job's check is given up (counted unverified): its message is gone then,
        // so a `resume` must not find it pending and wait for it.
        if self.cache.is_cancelled(&msg.job_id).await.unwrap_or(false) {
            return self.give_up_check(msg).await;
        }
        let pass_on = || {
            let mut next = msg.clone();
            if let Some(o) = next.check.as_mut() {
                o.hops += 1;
            }
            Settle::PassOn {
                body: next.to_json(),
                delay: pass_on_delay(order.hops),
            }
        };
        let mut view = order.clone();
        if view.hops < CHECK_HOPS_ANY && !self.opts.peers.other_node_alive(self.ctx).await {
            // Alone: another slot of this node is the best there is; with no other slot in
            // service a verification cannot be run at all.
            view.hops = if self.ctx.stats.seed_slots_in_service() > 1 {
                view.hops.max(CHECK_HOPS_OTHER_SLOT)
            } else {
                CHECK_HOPS_ANY
            };
        }
        match view.eligibility(&self.slot_ref()) {
            Eligibility::Run => {}
            Eligibility::PassOn => return pass_on(),
            Eligibility::GiveUp => return self.give_up_check(msg).await,
        }
        let result = match self.run(msg, prepared, count_only).await {
            Ok(r) => r,
            // This slot's backend failed: another slot may run the check.
            Err(Settle::Retry {
                reason: FailureReason::BackendError,
                detail,
                ..
            }) => {
                if self.health.backend_failed(&detail) {
                    return Settle::HandBack(HandBack::Quarantine);
                }
                return pass_on();
            }
            Err(other) => return other,
        };
        let reason = format!(
            "chunk {} of job '{}' differed from the CPU reference ({} run of {}'s result on {}/{})",
            msg.chunk,
            msg.job_id,
            order.kind,
            order.avoid.key(),
            self.ctx.node_name(),
            self.worker.name
        );
        // A verification is compared by digest: its survivors are written only for a redo.
        let first = match order.kind {
            CheckKind::Verify => Resolve::Verify(&result),
            CheckKind::Redo => Resolve::Run(&result),
        };
        let first = match store.resolve_check(first, &order.avoid, &reason).await {
            Ok(CheckResolution::NeedsResult) => {
                store
                    .resolve_check(Resolve::Run(&result), &order.avoid, &reason)
                    .await
            }
            other => other,
        };
        let resolved = match first {
            Ok(CheckResolution::Mismatch) => {
                tracing::warn!(job = %msg.job_id, chunk = msg.chunk, checked = %order.avoid.key(), slot = %self.worker.name, "verification mismatch: deciding the chunk with the CPU reference");
                match self.referee(msg, prepared, count_only).await {
                    Ok(reference) => {
                        store
                            .resolve_check(
                                Resolve::Referee {
                                    reference: &reference,
                                    verifier: &result,
                                },
                                &order.avoid,
                                &reason,
                            )
                            .await
                    }
                    Err(detail) => {
                        tracing::error!(job = %msg.job_id, chunk = msg.chunk, detail, "the CPU referee failed; passing the check on");
                        return pass_on();
                    }
                }
            }
            other => other,
        };
        match resolved {
            Ok(CheckResolution::Settled {
                first_wrong,
                verifier_wrong,
                redo,
            }) => {
                if first_wrong || verifier_wrong {
                    tracing::error!(job = %msg.job_id, chunk = msg.chunk, checked = %order.avoid.key(), first_wrong, verifier_wrong, redo = redo.len(), "verification decided by the CPU reference: the wrong result is replaced and the wrong slot quarantined");
                } else {
                    tracing::debug!(job = %msg.job_id, chunk = msg.chunk, kind = %order.kind, "check settled");
                }
                self.publish_checks(&redo).await;
                if verifier_wrong {
                    self.health.set_pending(crate::health::quarantine(
                        QuarantineReason::VerifyMismatch,
                        reason,
                    ));
                }
                Settle::Ack
            }
            Ok(CheckResolution::SlotFlagged) => self.flagged().await,
            Ok(CheckResolution::Mismatch | CheckResolution::NeedsResult) => {
                // Neither answers a full run or a referee call; settle nothing and try again.
                pass_on()
            }
            Ok(
                CheckResolution::NotPending | CheckResolution::Stale | CheckResolution::UnknownJob,
            ) => Settle::Ack,
            Err(e) => Settle::store_failed(&e, None),
        }
    }

    /// Runs the chunk on the node's CPU referee (`crate::verify`).
    async fn referee(
        &self,
        msg: &ChunkMessage,
        prepared: &Prepared,
        count_only: bool,
    ) -> Result<ChunkResult, String> {
        let (worker, output) = self
            .opts
            .referee
            .run(work_of(prepared, msg, count_only))
            .await
            .map_err(|e| e.to_string())?;
        Ok(result_of(msg, output, self.ctx.node_name(), &worker, None))
    }

    /// Settles a check nobody can run as unverified.
    async fn give_up_check(&self, msg: &ChunkMessage) -> Settle {
        let how = Resolve::GiveUp {
            job_id: &msg.job_id,
            chunk: msg.chunk,
            epoch: msg.epoch,
        };
        let avoid = msg
            .check
            .as_ref()
            .map_or_else(|| self.slot_ref(), |o| o.avoid.clone());
        match self.ctx.store().resolve_check(how, &avoid, "").await {
            Ok(_) => Settle::Ack,
            Err(e) => Settle::store_failed(&e, None),
        }
    }

    /// Publishes check messages the store created (a draw or a referee's redo list). A publish
    /// that fails leaves their claims, which a heartbeat publishes once stale.
    async fn publish_checks(&self, checks: &[(String, u64)]) {
        if checks.is_empty() {
            return;
        }
        let broker = self.ctx.broker();
        if let Err(e) = self.ctx.feeder().publish_checks(&broker, checks).await {
            tracing::warn!(error = %e, checks = checks.len(), "publishing checks failed; the heartbeat publishes them once their claims are stale");
        }
    }

    /// The store refused this slot's result: a verification found the slot wrong. It
    /// quarantines itself and the chunk goes back to the queue.
    async fn flagged(&self) -> Settle {
        let key = self.slot_ref().key();
        let detail = match self.ctx.store().bad_slots().await {
            Ok(mut bad) => bad.remove(&key),
            Err(_) => None,
        }
        .unwrap_or_else(|| "a verification found a result of this slot wrong".into());
        tracing::error!(slot = %self.worker.name, detail, "a verification found this slot wrong: quarantining it");
        self.health.set_pending(crate::health::quarantine(
            QuarantineReason::VerifyMismatch,
            detail,
        ));
        Settle::HandBack(HandBack::Quarantine)
    }
}

/// How long a check waits before it is offered again after its `hops`-th hand-back: 100 ms
/// more each hop, up to 1 s. Which free slot the broker offers it to is luck: in a cluster of
/// two nodes it comes back to the avoided one half the time, so it takes many short hops (12,
/// `seedq_protocol::check::CHECK_HOPS_ANY`, 7.5 s in all) before a verification is given up,
/// and a job's end waits a few tenths of a second for its last checks, not seconds.
fn pass_on_delay(hops: u32) -> Duration {
    Duration::from_millis(100 * u64::from(hops.min(9) + 1))
}

/// The slot work a chunk message asks for.
fn work_of(prepared: &Prepared, msg: &ChunkMessage, count_only: bool) -> Work {
    match prepared {
        Prepared::Sieve(spec) => Work::Sieve {
            spec: spec.clone(),
            seeds: msg.seeds.clone(),
            count_only,
        },
        Prepared::Analysis(kind, spec) => Work::Analysis {
            kind: *kind,
            spec: spec.clone(),
            seeds: msg.seeds.clone(),
        },
    }
}

/// A chunk's result from a slot's output.
fn result_of(
    msg: &ChunkMessage,
    output: Output,
    node: &str,
    worker: &SlotWorker,
    units_per_sec: Option<f64>,
) -> ChunkResult {
    ChunkResult {
        v: PROTOCOL_VERSION,
        job_id: msg.job_id.clone(),
        chunk: msg.chunk,
        attempt: msg.attempt,
        epoch: msg.epoch,
        seeds_tested: output.seeds_tested,
        survivor_pieces: output.survivor_pieces,
        survivor_count: output.survivor_count,
        counts: output.counts,
        flagged: output.flagged,
        summary: output.summary,
        duration_secs: output.duration.as_secs_f64(),
        units_per_sec,
        node: node.to_string(),
        slot: worker.name.clone(),
        backend: worker.backend.clone(),
        gpu_model: worker.gpu_model.clone(),
        finished_at_ms: seedq_protocol::now_ms(),
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
    fn a_check_passed_on_waits_longer_each_hop() {
        assert_eq!(pass_on_delay(0), Duration::from_millis(100));
        assert_eq!(pass_on_delay(3), Duration::from_millis(400));
        assert_eq!(pass_on_delay(40), Duration::from_secs(1), "capped");
        let total: Duration = (0..seedq_protocol::check::CHECK_HOPS_ANY)
            .map(pass_on_delay)
            .sum();
        assert_eq!(total, Duration::from_millis(7_500));
    }

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
