//! How every delivery ends: one place for seed chunks and script jobs alike.
//!
//! A handler decides a [`Settle`] and never touches the broker; the [`Settler`] carries it out
//! in the one order that loses nothing: **Redis first** (the job's record of a failure or dead
//! letter), **then publish** (retry, park, dead letter, hand-back; every publish confirmed),
//! **then ack**, checked. A crash between any two steps leaves the message unacked, so the broker
//! hands it out again, and every step is idempotent against that (the done set, the failure
//! record's epoch check, a done task is acked without running).
//!
//! The rules that used to live in each consumer:
//!
//! - **Parking.** Redis unreachable or not taking writes (down, OOM, BUSY, LOADING...): the
//!   message goes through the delay queue with a growing delay and no attempt used, however long
//!   it lasts. A script's finished result rides inside the parked message, so it is stored on
//!   return and the script never runs again.
//! - **Retries.** A retryable failure records the attempt, then republishes the next attempt
//!   through the delay queue with backoff and jitter; past `max_attempts` it dead-letters.
//! - **Dead letters.** Recorded for the job when the job knows the member (not for stale
//!   messages), then published to `<ns>.dlq` with the reason in `x-seedq-error`.
//! - **Hand-backs that are not faults** (leaving burst prefetch, drain, a permit wait past its
//!   budget) republish the message afresh and ack: a requeue would count towards the quorum
//!   queue's delivery limit and could dead-letter a healthy message. The copy goes through the
//!   delay queue for [`HAND_BACK_DELAY`]: published straight to the work queue it could be
//!   delivered to the very consumer that is handing it back (it still has credit until its
//!   cancel is done), whose close would then return it with a delivery counted.
//! - **The delivery limit.** On its last delivery before the broker's limit, a message the
//!   consumer cannot finish is dead-lettered by the consumer itself, with a record for the job
//!   (the broker's own dead-lettering would tell Redis nothing).
//!
//! And [`keep_subscribed`] keeps a queue consumed across channel and connection losses, with one
//! backoff policy.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use seedq_broker::{Broker, Headers, Inbound};
use seedq_protocol::topology::headers as h;
use seedq_protocol::{FailureEvent, FailureReason, RetryConfig};
use seedq_store::RecordOutcome;

use crate::context::NodeContext;

/// Whose delivery this is, for the job's records. `None` for a message that names no job the
/// consumer could trust (unparseable, stale).
#[derive(Debug, Clone)]
pub struct Subject {
    pub job_id: String,
    pub epoch: u64,
    /// Done-set member: `c<index>` or `t:<task>`.
    pub member: String,
    pub attempt: u32,
}

/// Why a message is handed back to its queue although nothing is wrong with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandBack {
    /// The slot left burst prefetch: chunks it held go to any free slot.
    LeavingBurst,
    /// The node is draining.
    Drain,
    /// The node had no free permit within the job's time budget.
    NoPermit,
    /// The slot was quarantined (`crate::health`): the chunk goes to a healthy slot.
    Quarantine,
}

impl HandBack {
    fn as_str(self) -> &'static str {
        match self {
            HandBack::LeavingBurst => "leaving_burst",
            HandBack::Drain => "drain",
            HandBack::NoPermit => "no_permit",
            HandBack::Quarantine => "quarantine",
        }
    }
}

/// What happens to a delivery.
#[derive(Debug)]
pub enum Settle {
    /// Done (or nothing to do): ack.
    Ack,
    /// A failed attempt that may succeed later: record it, publish `next` (the next attempt's
    /// body) through the delay queue, ack; past the attempt limit, dead-letter instead.
    Retry {
        reason: FailureReason,
        detail: String,
        next: Vec<u8>,
        /// What to park instead of the delivery's body if Redis cannot take the record now.
        parked: Option<Vec<u8>>,
    },
    /// Can never succeed: record it as dead for the job, publish to the DLQ, ack.
    DeadLetter {
        reason: FailureReason,
        detail: String,
        /// What to park instead of the delivery's body if Redis cannot take the record now.
        parked: Option<Vec<u8>>,
    },
    /// Redis is not taking writes: through the delay queue without using an attempt. `body`
    /// replaces the message's body (a script's finished result rides in it).
    Park {
        detail: String,
        body: Option<Vec<u8>>,
    },
    /// Back to its work queue as a fresh message (not a fault: no delivery counted).
    HandBack(HandBack),
    /// A check this slot may not run (`seedq_protocol::check`): back to its work queue as
    /// `body` (the order with one more hop) after `delay`, for a better-placed slot.
    PassOn { body: Vec<u8>, delay: Duration },
    /// Belongs on another queue (a script job pinned to another node): publish it there, ack.
    Forward { queue: String },
}

impl Settle {
    /// A store error as a settlement: wait while Redis may come back (`parked` replaces the body
    /// when there is a finished run to keep), else dead-letter with the error's own reason.
    pub fn store_failed(e: &seedq_store::StoreError, parked: Option<Vec<u8>>) -> Settle {
        if e.is_unavailable() {
            Settle::Park {
                detail: e.to_string(),
                body: parked,
            }
        } else {
            Settle::dead(e.reason(), e.to_string())
        }
    }

    pub fn dead(reason: FailureReason, detail: impl Into<String>) -> Settle {
        Settle::DeadLetter {
            reason,
            detail: detail.into(),
            parked: None,
        }
    }
}

/// Carries out [`Settle`]s for one node.
pub struct Settler {
    ctx: Arc<NodeContext>,
    max_attempts: u32,
    /// Who settles, for the logs: the slot (`gpu0`, `cpu1`) or `scripts`.
    slot: String,
}

impl Settler {
    pub fn new(ctx: Arc<NodeContext>, slot: &str) -> Settler {
        let max_attempts = ctx.cluster().retry.max_attempts;
        Settler {
            ctx,
            max_attempts,
            slot: slot.to_string(),
        }
    }

    pub fn with_max_attempts(mut self, n: u32) -> Settler {
        self.max_attempts = n.max(1);
        self
    }

    fn retry_config(&self) -> &RetryConfig {
        &self.ctx.cluster().retry
    }

    /// `Some(n)`, the number of this delivery, when it is the message's last one before the
    /// quorum queue's `delivery_limit` (one spare): a message that keeps coming back unsettled
    /// (its consumers crash on it) would next be dead-lettered by the broker with nothing told to
    /// Redis, so the consumer dead-letters it itself, with the reason and a record for the job.
    pub fn past_delivery_limit(&self, inbound: &Inbound) -> Option<u64> {
        last_delivery(
            inbound.delivery_count(),
            self.ctx.cluster().broker.delivery_limit,
        )
    }

    /// The dead-letter detail for [`Settler::past_delivery_limit`].
    pub fn delivery_limit_detail(deliveries: u64) -> String {
        format!(
            "delivered {deliveries} times without completing: every consumer that took it stopped or crashed while it ran \
             (out of memory? a GPU hang?); fix the cause, then `seedq-producer dlq replay`"
        )
    }

    /// Settles `inbound`. `Err` only when the broker could not take the settlement (the channel
    /// or connection is gone): the message is then still unacked and the broker redelivers it.
    pub async fn settle(
        &self,
        inbound: &Inbound,
        subject: Option<&Subject>,
        outcome: Settle,
    ) -> anyhow::Result<()> {
        let broker = self.ctx.broker();
        let done = matches!(outcome, Settle::Ack);
        match outcome {
            Settle::Ack => {}
            Settle::HandBack(why) => {
                tracing::debug!(
                    queue = inbound.queue(),
                    why = why.as_str(),
                    "handing the message back to its queue"
                );
                broker
                    .publish_retry(
                        inbound.queue(),
                        inbound.body(),
                        &inbound.headers(),
                        HAND_BACK_DELAY.as_millis() as u64,
                    )
                    .await
                    .context("handing the message back to its queue")?;
            }
            Settle::PassOn { body, delay } => {
                tracing::debug!(
                    queue = inbound.queue(),
                    delay_ms = delay.as_millis() as u64,
                    "passing a check on to another slot"
                );
                broker
                    .publish_retry(
                        inbound.queue(),
                        &body,
                        &inbound.headers(),
                        delay.as_millis() as u64,
                    )
                    .await
                    .context("passing the check on")?;
            }
            Settle::Forward { queue } => {
                broker
                    .publish_raw(&queue, inbound.body(), &inbound.headers())
                    .await
                    .with_context(|| format!("forwarding the message to {queue}"))?;
            }
            // Parking acks by itself (it is also where Redis-first failures end up).
            Settle::Park { detail, body } => {
                return self.park(&broker, inbound, subject, &detail, body).await;
            }
            Settle::Retry {
                reason,
                detail,
                next,
                parked,
            } => {
                let attempt = subject.map_or(1, |s| s.attempt);
                if attempt >= self.max_attempts {
                    let detail = format!("gave up after {attempt} attempts: {detail}");
                    let dead = Settle::DeadLetter {
                        reason,
                        detail,
                        parked,
                    };
                    return Box::pin(self.settle(inbound, subject, dead)).await;
                }
                // Redis first: if it is down the message is parked before anything was published,
                // so parking never leaves a second copy in the queues.
                if let Some(subject) = subject {
                    if let Err(park) = self.record(subject, reason, &detail, false).await {
                        return self
                            .park(&broker, inbound, Some(subject), &park, parked)
                            .await;
                    }
                }
                let next_attempt = attempt + 1;
                let delay = self.retry_config().backoff_ms(next_attempt, jitter01());
                self.ctx.metrics().chunk_failed(reason);
                tracing::warn!(queue = inbound.queue(), job = job_of(subject), member = member_of(subject), slot = %self.slot, %reason, detail, attempt, delay_ms = delay, "failed; retrying later");
                let mut headers = inbound.headers();
                headers.insert(h::ATTEMPT.into(), next_attempt.to_string());
                headers.insert(h::ERROR.into(), reason.as_str().into());
                headers.remove(h::REDIS_WAITS);
                broker
                    .publish_retry(inbound.queue(), &next, &headers, delay)
                    .await
                    .context("publishing to the delay queue")?;
            }
            Settle::DeadLetter {
                reason,
                detail,
                parked,
            } => {
                tracing::warn!(queue = inbound.queue(), job = job_of(subject), member = member_of(subject), slot = %self.slot, %reason, detail, attempt = subject.map(|s| s.attempt), node = %self.ctx.node_name(), "dead-lettering");
                if let Some(subject) = subject {
                    if let Err(park) = self.record(subject, reason, &detail, true).await {
                        return self
                            .park(&broker, inbound, Some(subject), &park, parked)
                            .await;
                    }
                }
                self.ctx.metrics().chunk_failed(reason);
                self.ctx.stats.chunk_failed();
                let mut headers = inbound.headers();
                headers.insert(h::NODE.into(), self.ctx.node_name().to_string());
                broker
                    .publish_dead_letter(inbound.queue(), inbound.body(), &headers, reason, &detail)
                    .await
                    .context("publishing to the dead-letter queue")?;
                self.feed(&broker, inbound).await;
            }
        }
        if done {
            self.feed(&broker, inbound).await;
        }
        inbound.ack().await.map_err(anyhow::Error::new)
    }

    /// After a seed chunk or script task settled for good (done, skipped, dead-lettered): asks
    /// the node's feeder task (`crate::node`) to publish the next window of that lane's work.
    /// The fill runs beside the slots, not in their path: settles that land while one fill runs
    /// are served by the next in one claim and one confirmed batch. Nothing depends on it
    /// finishing before the ack (a claim is recorded before its publish, and the queues keep a
    /// few messages waiting).
    async fn feed(&self, broker: &Broker, inbound: &Inbound) {
        let topology = broker.topology();
        if inbound.queue() == topology.seeds_queue() {
            self.ctx.request_feed();
        } else if inbound.queue() == topology.scripts_queue()
            || topology.node_of_scripts_queue(inbound.queue()).is_some()
        {
            self.ctx.request_script_feed();
        }
    }

    /// Writes the failure record. `Err(detail)` when Redis is not taking writes now (park);
    /// other store errors are logged and the settlement goes on (the dead letter still carries
    /// the reason, and an unrecordable failure must not loop forever).
    async fn record(
        &self,
        subject: &Subject,
        reason: FailureReason,
        detail: &str,
        dead: bool,
    ) -> Result<(), String> {
        let event = FailureEvent {
            member: subject.member.clone(),
            reason,
            detail: detail.to_string(),
            dead_lettered: dead,
            node: self.ctx.node_name().to_string(),
            attempt: subject.attempt,
            at_ms: seedq_protocol::now_ms(),
        };
        match self
            .ctx
            .store()
            .record_failure(&subject.job_id, subject.epoch, &event)
            .await
        {
            Ok(RecordOutcome::Recorded) => Ok(()),
            Ok(other) => {
                tracing::debug!(job = %subject.job_id, member = %subject.member, outcome = ?other, "failure not recorded for the job");
                Ok(())
            }
            Err(e) if e.is_unavailable() => Err(e.to_string()),
            Err(e) => {
                tracing::warn!(job = %subject.job_id, error = %e, "could not record the failure in Redis");
                Ok(())
            }
        }
    }

    /// Through the delay queue without using an attempt, with a growing delay counted in
    /// `x-seedq-redis-waits`, then ack.
    async fn park(
        &self,
        broker: &Broker,
        inbound: &Inbound,
        subject: Option<&Subject>,
        detail: &str,
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<()> {
        let parked = parking(inbound.headers(), self.retry_config());
        tracing::warn!(
            queue = inbound.queue(),
            job = job_of(subject),
            member = member_of(subject),
            slot = %self.slot,
            detail,
            waits = parked.waits,
            delay_ms = parked.delay_ms,
            "Redis unavailable; message parked in the delay queue"
        );
        self.ctx
            .metrics()
            .chunk_failed(FailureReason::RedisUnavailable);
        broker
            .publish_retry(
                inbound.queue(),
                body.as_deref().unwrap_or(inbound.body()),
                &parked.headers,
                parked.delay_ms,
            )
            .await
            .context("parking the message in the delay queue")?;
        inbound.ack().await.map_err(anyhow::Error::new)
    }
}

/// The job a log line names: `?` for a message that names none the consumer could trust.
fn job_of(subject: Option<&Subject>) -> &str {
    subject.map_or("?", |s| s.job_id.as_str())
}

fn member_of(subject: Option<&Subject>) -> &str {
    subject.map_or("?", |s| s.member.as_str())
}

/// A jitter fraction in [0, 1) without a random-number dependency.
pub fn jitter01() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(Instant::now().elapsed().as_nanos() ^ seedq_protocol::now_ms() as u128);
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// See [`Settler::past_delivery_limit`]: `delivered_before` is the broker's count.
fn last_delivery(delivered_before: u64, delivery_limit: u32) -> Option<u64> {
    let deliveries = delivered_before + 1;
    let limit = u64::from(delivery_limit);
    (limit > 1 && deliveries >= limit).then_some(deliveries)
}

/// How to park a message while Redis is not taking writes.
struct Parking {
    /// The delivery's headers with `x-seedq-redis-waits` bumped and the error set.
    headers: Headers,
    delay_ms: u64,
    /// Times it has now been parked (the attempt count is untouched: Redis is not its fault).
    waits: u32,
}

/// The delay grows with the waits, as retries do, so a long outage costs few redeliveries.
fn parking(mut headers: Headers, retry: &RetryConfig) -> Parking {
    let before: u32 = headers
        .get(h::REDIS_WAITS)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let delay_ms = retry.backoff_ms(before.saturating_add(2), jitter01());
    let waits = before + 1;
    headers.insert(h::REDIS_WAITS.into(), waits.to_string());
    headers.insert(
        h::ERROR.into(),
        FailureReason::RedisUnavailable.as_str().into(),
    );
    Parking {
        headers,
        delay_ms,
        waits,
    }
}

/// How long a handed-back message waits in the delay queue before it is back in its work queue:
/// longer than a draining or re-subscribing consumer takes to cancel, short for everyone else.
const HAND_BACK_DELAY: Duration = Duration::from_secs(1);

/// First pause before re-subscribing after a channel-level failure; doubles per failure in a row.
const RESUBSCRIBE_MIN: Duration = Duration::from_millis(500);
/// Longest pause between re-subscription attempts (e.g. while a deleted queue is not back yet).
const RESUBSCRIBE_MAX: Duration = Duration::from_secs(15);

/// Runs `session` (one subscription on one channel) until it returns `Ok` (a clean drain) or the
/// node shuts down. A channel-level failure (queue deleted, `consumer_timeout`, a refused
/// declare) runs it again after a backoff while the connection is fine; after a connection loss
/// it waits for the supervisor's new connection. Deliveries of a failed channel return to the
/// queue by themselves.
pub async fn keep_subscribed<F, Fut>(ctx: &Arc<NodeContext>, what: &str, mut session: F)
where
    F: FnMut(Arc<Broker>) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let mut backoff = resubscribe_backoff();
    loop {
        if ctx.is_shutting_down() {
            break;
        }
        let (generation, broker) = ctx.broker_generation();
        let started = Instant::now();
        let error = match session(Arc::clone(&broker)).await {
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
            tracing::warn!(what, error = %format!("{error:#}"), delay_ms = delay.as_millis() as u64, "consumer channel failed; re-subscribing");
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                // A new connection (or shutdown) ends the pause early.
                changed = ctx.broker_changed(generation) => if changed.is_none() { break },
            }
        } else {
            tracing::warn!(what, error = %format!("{error:#}"), "consumer lost its broker connection; waiting for the reconnection");
            if ctx.broker_changed(generation).await.is_none() {
                break;
            }
            backoff = resubscribe_backoff();
        }
    }
}

/// `RESUBSCRIBE_MIN` doubled per failure in a row, capped at `RESUBSCRIBE_MAX`, jittered so that
/// consumers that lost the same queue do not come back in lockstep; endless (the queue may take a
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_delivery_before_the_limit_is_the_last() {
        assert_eq!(last_delivery(0, 20), None);
        assert_eq!(last_delivery(17, 20), None);
        assert_eq!(last_delivery(19, 20), Some(20));
        assert_eq!(last_delivery(1, 2), Some(2));
        assert_eq!(
            last_delivery(5, 1),
            None,
            "a limit of 1 leaves no spare delivery"
        );
    }

    #[test]
    fn parking_counts_waits_and_grows_the_delay() {
        let retry = RetryConfig {
            max_attempts: 5,
            initial_backoff_ms: 500,
            max_backoff_ms: 10_000,
        };
        let first = parking(Headers::new(), &retry);
        assert_eq!(first.waits, 1);
        assert_eq!(
            first.headers.get(h::REDIS_WAITS).map(String::as_str),
            Some("1")
        );
        assert_eq!(
            first.headers.get(h::ERROR).map(String::as_str),
            Some("redis_unavailable")
        );
        let mut parked_before = Headers::new();
        parked_before.insert(h::REDIS_WAITS.into(), "6".into());
        let later = parking(parked_before, &retry);
        assert_eq!(later.waits, 7);
        assert!(
            later.delay_ms >= first.delay_ms,
            "{} < {}",
            later.delay_ms,
            first.delay_ms
        );
    }
}
