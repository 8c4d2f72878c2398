//! Publishing a job's chunks: one named connection, publisher confirms, the publish watermark.
//!
//! The watermark (`published_upto` in the job's totals hash, `keys::totals`) is the number of
//! leading chunks the broker has confirmed. It is advanced only after the confirms arrive, so a
//! producer killed mid-publish loses nothing: a re-run continues from the watermark (and may
//! republish a few chunks confirmed after the last update; the store applies each chunk once).

use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use redis::AsyncCommands;
use seedq_protocol::{keys, ChunkMessage, Job};

use crate::context::Env;

/// Field of the job's totals hash holding the publish watermark.
pub const PUBLISHED_UPTO_FIELD: &str = "published_upto";

async fn redis_conn(env: &Env) -> anyhow::Result<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(env.redis_url.as_str())?;
    client
        .get_multiplexed_async_connection()
        .await
        .with_context(|| format!("connecting to Redis at {}", env.redis_url_redacted()))
}

/// Leading chunks already confirmed by the broker (0 for a new job).
pub async fn published_upto(env: &Env, job_id: &str) -> anyhow::Result<u64> {
    let mut c = redis_conn(env).await?;
    let v: Option<u64> = c
        .hget(keys::totals(&env.namespace, job_id), PUBLISHED_UPTO_FIELD)
        .await?;
    Ok(v.unwrap_or(0))
}

/// Advances the watermark (never moves it back: two producers may race on one job).
pub async fn set_published_upto(env: &Env, job_id: &str, upto: u64) -> anyhow::Result<()> {
    let mut c = redis_conn(env).await?;
    let key = keys::totals(&env.namespace, job_id);
    let _: i64 = redis::Script::new(
        "local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0') \
         if redis.call('EXISTS', KEYS[1]) == 1 and tonumber(ARGV[2]) > cur then \
           redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) return 1 end return 0",
    )
    .key(key)
    .arg(PUBLISHED_UPTO_FIELD)
    .arg(upto)
    .invoke_async(&mut c)
    .await?;
    Ok(())
}

/// How many publishes may await their confirm at once: enough to keep the pipe full, small
/// enough that a crash re-publishes little.
const CONFIRM_WINDOW: usize = 2048;

pub struct ChunkPublisher {
    broker: seedq_broker::Broker,
    env: Env,
}

impl ChunkPublisher {
    pub async fn connect(env: &Env) -> anyhow::Result<ChunkPublisher> {
        let broker = env.broker().await?;
        broker
            .declare_topology(&env.cluster.broker)
            .await
            .context("declaring the queues")?;
        Ok(ChunkPublisher {
            broker,
            env: env.clone(),
        })
    }

    /// Publishes the given chunk indexes (ascending) of `job`, waiting for every confirm, and
    /// advances the watermark as contiguous prefixes are confirmed. Returns the count published.
    pub async fn publish_job_chunks(&mut self, job: &Job, indexes: &[u64]) -> anyhow::Result<u64> {
        let bar = publish_bar(indexes.len() as u64, !self.env.json);
        let mut published = 0u64;
        for window in indexes.chunks(CONFIRM_WINDOW) {
            let messages: Vec<ChunkMessage> = window
                .iter()
                .map(|i| job.chunk_message(*i).expect("index within the plan"))
                .collect();
            self.broker
                .publish_chunks(job, &messages)
                .await
                .with_context(|| {
                    format!(
                        "publishing chunks {}..={} of job {}",
                        window[0],
                        window[window.len() - 1],
                        job.job_id
                    )
                })?;
            published += window.len() as u64;
            bar.inc(window.len() as u64);
            // Every chunk up to the end of this window is confirmed (or was done before).
            let upto = window[window.len() - 1] + 1;
            set_published_upto(&self.env, &job.job_id, upto).await?;
        }
        bar.finish_and_clear();
        set_published_upto(&self.env, &job.job_id, job.chunk_count).await?;
        Ok(published)
    }

    pub async fn close(self) {
        self.broker.close().await;
    }
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
