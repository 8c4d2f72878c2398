//! A seed slot's health: its known-answer self-test (`crate::selftest`) at start and every
//! `--self-test-interval` while it has work, the count of backend errors in a row, and
//! **quarantine**.
//!
//! A slot whose self-test fails, or whose backend fails `--quarantine-after-errors` chunks in a
//! row, is quarantined: it hands back what it holds (the chunk in hand goes back as a fresh
//! message, through `Settle::HandBack`, without using one of its attempts: the slot is the
//! suspect, not the chunk), cancels its consumer, and shows `quarantined` (reason, since, next
//! test) in the heartbeat, `seedq-producer nodes` and `seedq_slot_quarantined{slot}`. It retries
//! its self-test with exponential backoff (`--self-test-retry`, doubling up to 16 times that) and
//! takes work again once one passes. The node's other slots never stop.
//!
//! A slot whose result a verification by redundancy found wrong (`crate::verify`,
//! `docs/verification.md`) is flagged in Redis; its next result is refused and it quarantines
//! itself the same way (`verify_mismatch`). The self-test that ends a quarantine clears the flag.
//!
//! What the self-test alone cannot promise: a slot that silently drops survivors only now and
//! then may pass it. Verification catches such a slot at its first verified mismatch, and every
//! chunk it completed since its last passed self-test runs again elsewhere.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use backon::BackoffBuilder;
use seedq_protocol::{QuarantineReason, SlotQuarantine};

use crate::context::NodeContext;
use crate::slot::{SlotWorker, Work};

/// The health policy of every seed slot of a node (from the consumer's flags).
#[derive(Debug, Clone)]
pub struct HealthOptions {
    /// How long a slot with work runs chunks between two self-tests (zero: before every chunk).
    pub self_test_interval: Duration,
    /// Backend errors in a row that quarantine a slot (0: never).
    pub quarantine_after_errors: u32,
    /// Delay before a quarantined slot's first self-test retry; doubles up to 16 times that.
    pub retry_first: Duration,
}

/// One slot's health state; shared by its consumer loop and chunk handler.
pub struct SlotHealth {
    opts: HealthOptions,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    last_test: Option<Instant>,
    errors_in_row: u32,
    /// A quarantine decided while handling a chunk, carried out by the consumer loop.
    pending: Option<SlotQuarantine>,
}

/// The slot as results and check orders name it.
pub fn slot_ref(ctx: &NodeContext, worker: &SlotWorker) -> seedq_protocol::SlotRef {
    seedq_protocol::SlotRef {
        node: ctx.node_name().to_string(),
        slot: worker.name.clone(),
        backend: worker.backend.clone(),
    }
}

/// A quarantine for `reason`, starting now.
pub fn quarantine(reason: QuarantineReason, detail: String) -> SlotQuarantine {
    SlotQuarantine {
        reason,
        detail,
        since_ms: seedq_protocol::now_ms(),
        next_test_at_ms: None,
        failed_tests: u32::from(reason == QuarantineReason::SelfTestFailed),
    }
}

impl SlotHealth {
    pub fn new(opts: HealthOptions) -> SlotHealth {
        SlotHealth {
            opts,
            state: Mutex::new(State::default()),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Whether the slot should run its self-test before the chunk it just received.
    pub fn self_test_due(&self) -> bool {
        self.with(|s| {
            s.last_test
                .is_none_or(|t| t.elapsed() >= self.opts.self_test_interval)
        })
    }

    /// Runs the known-answer self-test on the slot's backend; `Err` is the quarantine it earns.
    pub async fn self_test(
        &self,
        ctx: &NodeContext,
        worker: &SlotWorker,
    ) -> Result<(), SlotQuarantine> {
        let outcome = match worker.run(Work::SelfTest).await {
            Ok(out) => out.self_test.unwrap_or_else(|| {
                Err(crate::selftest::Failed::Backend {
                    family: "-",
                    detail: "the slot returned no self-test report".into(),
                })
            }),
            // A panic or a dead slot thread: the run itself failed.
            Err(e) => Err(crate::selftest::Failed::Backend {
                family: "-",
                detail: e.to_string(),
            }),
        };
        self.with(|s| s.last_test = Some(Instant::now()));
        match outcome {
            Ok(passed) => {
                ctx.metrics()
                    .self_test(&worker.name, true, passed.duration.as_secs_f64());
                // What the slot completed so far is vouched for: a mismatch found later redoes
                // only what it completed after this test (`docs/verification.md`).
                if let Err(e) = ctx
                    .store()
                    .slot_checked(&slot_ref(ctx, worker), false)
                    .await
                {
                    tracing::debug!(slot = %worker.name, error = %e, "cannot clear the slot's verification log");
                }
                tracing::debug!(slot = %worker.name, survivors = passed.survivors, ms = passed.duration.as_secs_f64() * 1e3, "self-test passed");
                Ok(())
            }
            Err(failed) => {
                ctx.metrics().self_test(&worker.name, false, 0.0);
                Err(quarantine(
                    QuarantineReason::SelfTestFailed,
                    failed.to_string(),
                ))
            }
        }
    }

    /// A chunk ran on the backend without error.
    pub fn kernel_ok(&self) {
        self.with(|s| s.errors_in_row = 0);
    }

    /// The backend failed a chunk. `true` when that makes `quarantine_after_errors` in a row:
    /// the slot is then quarantined (see [`SlotHealth::take_pending`]) and the chunk goes back
    /// to the queue instead of being retried as its fault.
    pub fn backend_failed(&self, detail: &str) -> bool {
        let limit = self.opts.quarantine_after_errors;
        self.with(|s| {
            s.errors_in_row += 1;
            if limit == 0 || s.errors_in_row < limit {
                return false;
            }
            s.pending = Some(quarantine(
                QuarantineReason::BackendErrors,
                format!(
                    "{} backend errors in a row, the last: {detail}",
                    s.errors_in_row
                ),
            ));
            s.errors_in_row = 0;
            true
        })
    }

    /// Makes `q` the quarantine the consumer loop carries out when it leaves.
    pub fn set_pending(&self, q: SlotQuarantine) {
        self.with(|s| s.pending = Some(q));
    }

    /// Whether a quarantine waits to be carried out.
    pub fn has_pending(&self) -> bool {
        self.with(|s| s.pending.is_some())
    }

    pub fn take_pending(&self) -> Option<SlotQuarantine> {
        self.with(|s| s.pending.take())
    }

    /// Keeps the slot out of service: shows the quarantine, retries the self-test with backoff
    /// until one passes (`true`: back in service) or the node shuts down (`false`). The caller has
    /// already handed back what the slot held and cancelled its consumer.
    pub async fn sit_out(&self, ctx: &NodeContext, worker: &SlotWorker, q: SlotQuarantine) -> bool {
        let mut q = q;
        tracing::error!(
            slot = %worker.name,
            reason = %q.reason,
            detail = %q.detail,
            "slot quarantined: it takes no seed work until its self-test passes"
        );
        ctx.metrics().slot_quarantined(&worker.name, q.reason);
        // Out of the scheduler's capacity too, so the queue does not keep room for this slot.
        ctx.stats.set_prefetch(&worker.name, 0);
        let mut backoff = backon::ExponentialBuilder::default()
            .with_min_delay(self.opts.retry_first)
            .with_max_delay(self.opts.retry_first * 16)
            .without_max_times()
            .build();
        let mut stop = ctx.shutdown_signal();
        loop {
            let delay = backoff.next().unwrap_or(self.opts.retry_first * 16);
            q.next_test_at_ms = Some(seedq_protocol::now_ms() + delay.as_millis() as u64);
            ctx.stats.set_quarantined(&worker.name, Some(q.clone()));
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop.wait_for(|s| *s) => return false,
            }
            match self.self_test(ctx, worker).await {
                Ok(()) => {
                    // A verification's flag on the slot ends with its quarantine, or its next
                    // result would be refused again (`seedq_store::ApplyOutcome::SlotFlagged`).
                    if let Err(e) = ctx.store().slot_checked(&slot_ref(ctx, worker), true).await {
                        tracing::warn!(slot = %worker.name, error = %e, "cannot clear the slot's verification flag; it quarantines itself again at its next result");
                    }
                    tracing::info!(slot = %worker.name, quarantined_secs = seedq_protocol::now_ms().saturating_sub(q.since_ms) / 1000, "self-test passed: slot back in service");
                    ctx.stats.set_quarantined(&worker.name, None);
                    ctx.metrics().slot_released(&worker.name);
                    self.with(|s| s.errors_in_row = 0);
                    return true;
                }
                Err(failed) => {
                    q.failed_tests += 1;
                    q.detail = failed.detail;
                    tracing::warn!(slot = %worker.name, detail = %q.detail, failed_tests = q.failed_tests, "self-test failed again: slot stays quarantined");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(after: u32) -> SlotHealth {
        SlotHealth::new(HealthOptions {
            self_test_interval: Duration::from_secs(300),
            quarantine_after_errors: after,
            retry_first: Duration::from_secs(60),
        })
    }

    #[test]
    fn errors_in_a_row_quarantine_and_a_success_resets_them() {
        let h = health(3);
        assert!(!h.backend_failed("a"));
        assert!(!h.backend_failed("b"));
        h.kernel_ok();
        assert!(!h.backend_failed("c"));
        assert!(!h.backend_failed("d"));
        assert!(!h.has_pending());
        assert!(h.backend_failed("e"));
        let q = h.take_pending().expect("quarantined");
        assert_eq!(q.reason, QuarantineReason::BackendErrors);
        assert!(
            q.detail.contains("3 backend errors in a row"),
            "{}",
            q.detail
        );
        assert!(q.detail.ends_with(": e"), "{}", q.detail);
        assert!(h.take_pending().is_none());

        let never = health(0);
        for _ in 0..100 {
            assert!(!never.backend_failed("x"));
        }
    }

    #[test]
    fn a_self_test_is_due_first_then_after_the_interval() {
        let h = health(3);
        assert!(h.self_test_due());
        h.with(|s| s.last_test = Some(Instant::now()));
        assert!(!h.self_test_due());
        let every_chunk = SlotHealth::new(HealthOptions {
            self_test_interval: Duration::ZERO,
            ..h.opts.clone()
        });
        every_chunk.with(|s| s.last_test = Some(Instant::now()));
        assert!(every_chunk.self_test_due());
    }
}
