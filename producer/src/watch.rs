//! Waking up when a job may have changed, for everything that follows a job until it finishes
//! (`wait`, `sieve --wait`, `scripts --wait`).
//!
//! The store publishes every settled member on the job's events channel (`Store::job_events`),
//! so a follower re-reads the job's progress as soon as something happened instead of on a
//! timer. Pub/sub is fire-and-forget, so a follower also re-reads on a slow timer; without a
//! subscription (a proxy that refuses pub/sub, say, or one lost mid-wait) it polls instead.

use std::time::{Duration, Instant};

use seedq_store::{JobEvents, Store};

/// Re-reads at most this often: a progress line needs no more, and Redis is busy with the job.
const MIN_REREAD: Duration = Duration::from_millis(20);
/// Without events, or when none come (a cancel, a stalled cluster), re-read this often anyway.
const IDLE_REREAD: Duration = Duration::from_millis(500);
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// One job's wake-ups, never past the follower's deadline.
pub struct JobWatch {
    events: Option<JobEvents>,
    deadline: Option<Instant>,
    last_read: Instant,
}

impl JobWatch {
    /// Subscribes to the job's events. Call it BEFORE the first read of the job's progress, so
    /// that no settle between that read and the first wait is missed.
    pub async fn subscribe(store: &Store, job_id: &str, deadline: Option<Instant>) -> JobWatch {
        let events = match store.job_events(job_id).await {
            Ok(events) => Some(events),
            Err(e) => {
                tracing::debug!(error = %e, "no job event subscription; polling");
                None
            }
        };
        JobWatch {
            events,
            deadline,
            last_read: Instant::now(),
        }
    }

    /// Forgets the subscription (Redis went away; it died with the connection).
    pub fn lose_events(&mut self) {
        self.events = None;
    }

    /// Subscribes again once Redis is back; polls if that fails.
    pub async fn resubscribe(&mut self, store: &Store, job_id: &str) {
        self.events = store.job_events(job_id).await.ok();
    }

    /// Sleeps until the job may have changed: the next settle event, else a poll interval, never
    /// past the deadline and never sooner than [`MIN_REREAD`] after the last read.
    pub async fn changed(&mut self) {
        let deadline = self.deadline;
        let until_deadline = |d: Duration| {
            deadline.map_or(d, |dl| d.min(dl.saturating_duration_since(Instant::now())))
        };
        match &mut self.events {
            Some(ev) => {
                if let Err(e) = ev.next(until_deadline(IDLE_REREAD)).await {
                    tracing::debug!(error = %e, "job event subscription lost; polling");
                    self.events = None;
                }
            }
            None => tokio::time::sleep(until_deadline(POLL_INTERVAL)).await,
        }
        let since = self.last_read.elapsed();
        if since < MIN_REREAD {
            tokio::time::sleep(until_deadline(MIN_REREAD - since)).await;
        }
        self.last_read = Instant::now();
    }
}
