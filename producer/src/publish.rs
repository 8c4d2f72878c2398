//! Publishing from the producer: one named connection, publisher confirms, and failover.
//!
//! Seed chunks and script tasks go out through the scheduler ([`ChunkPublisher::feed`],
//! `seedq_scheduler`): the producer registers the job or batch and publishes what the queues
//! have room for now; the consumers publish the rest as work settles. `published_upto` in the
//! job's totals is the scheduler's cursor (claims not confirmed are published again by the
//! scheduler, so a producer killed mid-publish loses nothing). `resume` and `dlq replay`
//! publish chosen members directly.
//!
//! Failover: when the connection dies under a publish (the broker restarting, the cluster node
//! it was on gone), the publisher connects again (the next addresses of `--amqp-url`, with
//! backoff), declares the queues again and publishes the unconfirmed window again. Chunks of that
//! window the old node had confirmed go out twice; results are applied once, so a duplicate
//! costs one redundant chunk run and nothing else. A nack on a connection that still works (a
//! queue whose leader has just died, a resource alarm) is waited out with backoff and published
//! again, on a fresh channel (see `seedq_broker`'s doc on nacks); an unroutable publish is the
//! message's or the queue's fault and fails the command as before.

use std::time::Duration;

use anyhow::Context;
use backon::{BackoffBuilder, ExponentialBackoff};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use seedq_protocol::{ChunkMessage, Job, ScriptJob};
use seedq_scheduler::{Fed, FeedError, Feeder};

use crate::context::Env;

/// How many publishes may await their confirm at once: enough to keep the pipe full, small
/// enough that a crash re-publishes little.
const CONFIRM_WINDOW: usize = 2048;

/// How long one publish may keep failing over or being refused before the command gives up: a
/// broker that cannot take a window for this long is not one to keep feeding.
const RECOVERY_BUDGET: Duration = Duration::from_secs(120);

pub struct ChunkPublisher {
    broker: seedq_broker::Broker,
    env: Env,
    /// Nodes whose pinned script queues this publisher declared (declared again after a failover).
    pinned: Vec<String>,
}

impl ChunkPublisher {
    pub async fn connect(env: &Env) -> anyhow::Result<ChunkPublisher> {
        let broker = env.broker().await?;
        broker
            .ensure_topology(&env.cluster.broker)
            .await
            .context("declaring the queues")?;
        Ok(ChunkPublisher {
            broker,
            env: env.clone(),
            pinned: Vec::new(),
        })
    }

    /// Declares `<ns>.scripts.<node>` for a pinned script task (once per node).
    pub async fn declare_node_scripts_queue(&mut self, node: &str) -> anyhow::Result<()> {
        if self.pinned.iter().any(|n| n == node) {
            return Ok(());
        }
        self.broker
            .ensure_node_scripts_queue(node, &self.env.cluster.broker)
            .await
            .with_context(|| format!("declaring the pinned script queue of node {node}"))?;
        self.pinned.push(node.to_string());
        Ok(())
    }

    /// After a publish failed with `error`: `Ok` when it is worth publishing again, `Err(error)`
    /// when the failure was the message's (unroutable...) or `recovery` is spent. A lost
    /// connection is replaced (the next addresses, queues declared again); a nack on a working
    /// connection is waited out, since a cluster that has just lost the node leading a queue
    /// refuses publishes to it until a survivor takes over.
    async fn recover(
        &mut self,
        error: seedq_broker::BrokerError,
        recovery: &mut ExponentialBackoff,
    ) -> anyhow::Result<()> {
        let connection_lost = !self.broker.is_usable();
        if !connection_lost && !matches!(error, seedq_broker::BrokerError::Nacked { .. }) {
            return Err(error.into());
        }
        let Some(delay) = recovery.next() else {
            return Err(anyhow::Error::new(error).context(format!(
                "still failing after {}s of retries",
                RECOVERY_BUDGET.as_secs()
            )));
        };
        if !connection_lost {
            tracing::warn!(%error, retry_in = ?delay, "RabbitMQ refused a publish (a queue between leaders?); publishing again");
            tokio::time::sleep(delay).await;
            return Ok(());
        }
        tracing::warn!(address = %self.broker.address(), %error, "RabbitMQ connection lost while publishing; failing over");
        let broker = self.env.broker().await?;
        broker
            .ensure_topology(&self.env.cluster.broker)
            .await
            .context("declaring the queues after failing over")?;
        for node in &self.pinned {
            broker
                .ensure_node_scripts_queue(node, &self.env.cluster.broker)
                .await
                .with_context(|| format!("declaring the pinned script queue of node {node}"))?;
        }
        tracing::warn!(address = %broker.address(), "publishing again on a new RabbitMQ connection");
        self.broker = broker;
        Ok(())
    }

    /// Publishes the given chunk indexes of `job` again (`resume`: dead-lettered or lost
    /// chunks, all below the scheduler's cursor), waiting for every confirm. Returns the count.
    pub async fn publish_job_chunks(&mut self, job: &Job, indexes: &[u64]) -> anyhow::Result<u64> {
        let bar = publish_bar(indexes.len() as u64, !self.env.json);
        let mut published = 0u64;
        for window in indexes.chunks(CONFIRM_WINDOW) {
            let messages: Vec<ChunkMessage> = window
                .iter()
                .map(|i| job.chunk_message(*i).expect("index within the plan"))
                .collect();
            let mut recovery = recovery_backoff();
            while let Err(e) = self.broker.publish_chunks(job, &messages).await {
                self.recover(e, &mut recovery).await.with_context(|| {
                    format!(
                        "publishing chunks {}..={} of job {}",
                        window[0],
                        window[window.len() - 1],
                        job.job_id
                    )
                })?;
            }
            published += window.len() as u64;
            bar.inc(window.len() as u64);
        }
        bar.finish_and_clear();
        Ok(published)
    }

    /// Runs the scheduler once from here: publishes windows whose publisher died, then what the
    /// seed queue and the script queues have room for (the most urgent jobs' chunks and
    /// batches' tasks, not only this command's job),
    /// failing over like the other publishes. Claims of a failed attempt are published again by
    /// whoever feeds once they are stale, so a retry here never loses or doubles a chunk's count.
    pub async fn feed(&mut self, feeder: &Feeder) -> anyhow::Result<Fed> {
        let mut recovery = recovery_backoff();
        loop {
            let attempt = async {
                feeder.republish_stale(&self.broker).await?;
                let mut fed = feeder.fill(&self.broker).await?;
                fed.per_job
                    .extend(feeder.fill_scripts(&self.broker).await?.per_job);
                Ok::<Fed, FeedError>(fed)
            }
            .await;
            match attempt {
                Ok(fed) => return Ok(fed),
                Err(FeedError::Broker(e)) => self
                    .recover(e, &mut recovery)
                    .await
                    .context("publishing the first chunks or tasks")?,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Publishes one script task (confirmed), failing over like the chunks.
    pub async fn publish_script(&mut self, task: &ScriptJob) -> anyhow::Result<()> {
        let mut recovery = recovery_backoff();
        while let Err(e) = self.broker.publish_script(task).await {
            self.recover(e, &mut recovery)
                .await
                .with_context(|| format!("publishing task {}", task.task_id))?;
        }
        Ok(())
    }

    pub async fn close(self) {
        self.broker.close().await;
    }
}

/// Pauses between attempts at one publish, for up to [`RECOVERY_BUDGET`] in all.
fn recovery_backoff() -> ExponentialBackoff {
    seedq_broker::connect_backoff(Some(RECOVERY_BUDGET)).build()
}

/// The bar `sieve` (and the other seed jobs) draws on stderr while chunks are published.
fn publish_bar(total: u64, visible: bool) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(
        Some(total),
        if visible {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    bar.set_style(
        ProgressStyle::with_template("publishing {bar:30.cyan/blue} {pos}/{len} chunks {per_sec}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar
}
