//! `seedq-producer wait JOB` (and `--wait` of the seed job commands): follow a job until it
//! finishes.
//!
//! The job's progress (one pipelined Redis round trip) is re-read whenever the store publishes a
//! settle event for it ([`crate::watch`]: at most every 20 ms, and every 500 ms without events;
//! it polls if pub/sub is unavailable), and keeps waiting through a Redis restart. An indicatif
//! bar on stderr shows chunks, seeds, rate, ETA and survivors (flagged seeds for correlation /
//! analysis). Exit 0 when every chunk is done, [`EXIT_DEAD_LETTERED`] when the job finished with
//! dead-lettered chunks (naming them and their reasons), [`EXIT_TIMEOUT`] on `--timeout`.

use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use seedq_protocol::JobSpec;
use seedq_store::Store;

use crate::cmd::{no_such_job, EXIT_DEAD_LETTERED, EXIT_TIMEOUT};
use crate::context::Env;
use crate::progress::{chunk_index, view};
use crate::watch::JobWatch;

#[derive(Debug, Clone, Args)]
pub struct WaitArgs {
    pub job: String,
    /// Give up after this many seconds (exit code 4).
    #[arg(long)]
    pub timeout: Option<f64>,
}

pub async fn run(env: &Env, args: WaitArgs) -> anyhow::Result<i32> {
    let store = env.store().await?;
    if store.load_job(&args.job).await?.is_none() {
        return Err(no_such_job(env, &args.job));
    }
    wait_for_job(env, &store, &args.job, args.timeout, true).await
}

/// The bar that follows a job on stderr, drawn only when `visible`.
fn seeds_bar(total: u64, visible: bool) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(
        Some(total),
        if visible {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:35.green/blue} {percent:>3}% {human_pos}/{human_len} seeds {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar
}

/// Waits until the job finishes; returns the exit code (see the module doc).
pub async fn wait_for_job(
    env: &Env,
    store: &Store,
    job_id: &str,
    timeout: Option<f64>,
    show_bar: bool,
) -> anyhow::Result<i32> {
    let started = Instant::now();
    let deadline = timeout.map(|t| started + Duration::from_secs_f64(t.max(0.0)));
    let job = store.load_job(job_id).await?;
    // Correlation / analysis jobs keep flagged seeds where a sieve keeps survivors.
    let found = match job.as_ref().map(|j| &j.spec) {
        Some(JobSpec::Correlation(_) | JobSpec::Analysis(_)) => "flagged",
        _ => "survivors",
    };
    let mut watch = JobWatch::subscribe(store, job_id, deadline).await;
    let mut bar: Option<ProgressBar> = None;
    let mut redis_lost = false;
    let final_progress = loop {
        let progress = match store.progress(job_id).await {
            Ok(p) => p.ok_or_else(|| no_such_job(env, job_id))?,
            // A pipeline step outlives a Redis restart: the consumers park their chunks until
            // Redis is back, and so does the wait (up to its --timeout).
            Err(e) if e.is_unavailable() && deadline.is_none_or(|d| Instant::now() < d) => {
                let b = bar.get_or_insert_with(|| seeds_bar(0, show_bar));
                b.set_message(format!("Redis unavailable, still waiting: {e}"));
                if !show_bar && !redis_lost {
                    tracing::warn!(error = %e, "Redis unavailable; still waiting");
                }
                redis_lost = true;
                watch.lose_events();
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if std::mem::take(&mut redis_lost) {
            if !show_bar {
                tracing::warn!("Redis is back");
            }
            watch.resubscribe(store, job_id).await;
        }
        let total = u64::try_from(progress.seeds_total).unwrap_or(u64::MAX);
        let b = bar.get_or_insert_with(|| seeds_bar(total, show_bar));
        b.set_length(total);
        b.set_position(progress.seeds_done);
        let v = view(&progress, job.as_ref(), seedq_protocol::now_ms());
        let mut msg = format!("chunks {}/{}", progress.chunks_done, progress.chunks_total);
        if let Some(rate) = v.rate_seeds_per_sec {
            msg += &format!(" {}/s", crate::progress::human_count(rate));
        }
        if let Some(eta) = v.eta_secs.filter(|_| !v.finished) {
            msg += &format!(" ETA {}", crate::progress::human_secs(eta));
        }
        if progress.survivors > 0 {
            msg += &format!(" {found} {}", progress.survivors);
        }
        if !progress.dead_lettered.is_empty() {
            msg += &format!(" dead-lettered {}", progress.dead_lettered.len());
        }
        b.set_message(msg);
        if progress.finished() {
            break progress;
        }
        if let Some(d) = deadline {
            if Instant::now() >= d {
                b.abandon();
                eprintln!(
                    "timed out after {:.0} s: job {job_id} has {}/{} chunks done",
                    started.elapsed().as_secs_f64(),
                    progress.chunks_done,
                    progress.chunks_total
                );
                return Ok(EXIT_TIMEOUT);
            }
        }
        watch.changed().await;
    };
    if let Some(b) = bar {
        b.finish();
    }
    if final_progress.succeeded() {
        if show_bar {
            eprintln!(
                "job {job_id} finished: {} chunks, {} seeds, {} {found}",
                final_progress.chunks_done, final_progress.seeds_done, final_progress.survivors
            );
        }
        return Ok(0);
    }
    let mut dead: Vec<(u64, &String)> = final_progress
        .dead_lettered
        .iter()
        .filter_map(|(m, r)| Some((chunk_index(m)?, r)))
        .collect();
    dead.sort_unstable();
    let settled = final_progress.chunks_done + final_progress.dead_lettered.len() as u64;
    let never_published = final_progress.chunks_total.saturating_sub(settled);
    let mut msg = if final_progress.cancelled {
        format!(
            "job {job_id} was cancelled: {} of {} chunks done, {} skipped, {never_published} never published (their seeds were NOT searched):",
            final_progress.chunks_done,
            final_progress.chunks_total,
            final_progress.dead_lettered.len(),
        )
    } else {
        format!(
            "job {job_id} finished with {} of {} chunks dead-lettered (their seeds were NOT searched):",
            final_progress.dead_lettered.len(),
            final_progress.chunks_total
        )
    };
    for (index, reason) in dead.iter().take(50) {
        let seeds = job
            .as_ref()
            .and_then(|j| j.chunk_seeds(*index))
            .map(|s| seedq_protocol::chunk::seeds_label(&s))
            .unwrap_or_default();
        msg += &format!("\n  chunk {index} {seeds}: {reason}");
    }
    if dead.len() > 50 {
        msg += &format!(
            "\n  ... and {} more (seedq-producer dlq list)",
            dead.len() - 50
        );
    }
    if final_progress
        .dead_lettered
        .values()
        .all(|r| r == "cancelled")
    {
        msg += &format!(
            "\nthe job was cancelled; `seedq-producer resume {job_id}` runs the skipped chunks"
        );
    } else {
        msg += &format!("\nfix the cause, then `seedq-producer resume {job_id}` (or `seedq-producer dlq replay --job {job_id}`)");
    }
    eprintln!("{msg}");
    Ok(EXIT_DEAD_LETTERED)
}
