//! `status`, `wait` and `results`: reading a job back from Redis.
//!
//! `results` prints a sieve's survivors, or a correlation / analysis job's flagged seeds and the
//! merged summary of its chunks (formats in [`crate::results`]); `status` of one statistical job
//! adds that merged summary too.
//!
//! `wait` re-reads the job's progress (one pipelined Redis round trip) whenever the store
//! publishes a settle event for it (at most every 20 ms, and every 500 ms without events; it
//! polls if pub/sub is unavailable, and keeps waiting through a Redis restart) and draws an
//! indicatif bar on stderr; it exits 0 when every chunk is done, 3 when the job finished with
//! dead-lettered chunks (naming them and their reasons), 4 on `--timeout`.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use seedq_core::analysis::Summary;
use seedq_protocol::{Job, JobProgress, JobSpec};
use seedq_store::{JobEvents, Store};

use crate::context::Env;
use crate::progress::{rate_and_eta, ProgressView};
use crate::results;

pub const EXIT_DEAD_LETTERED: i32 = 3;
pub const EXIT_TIMEOUT: i32 = 4;

#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Job id (default: every job of the namespace).
    pub job: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct WaitArgs {
    pub job: String,
    /// Give up after this many seconds (exit code 4).
    #[arg(long)]
    pub timeout: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ResultsFormat {
    Json,
    Csv,
}

#[derive(Debug, Clone, Args)]
pub struct ResultsArgs {
    pub job: String,
    #[arg(long, value_enum, default_value_t = ResultsFormat::Json)]
    pub format: ResultsFormat,
    /// Write to this file instead of stdout.
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,
}

async fn connect(env: &Env) -> anyhow::Result<Store> {
    Store::connect(&env.redis_url, &env.namespace)
        .await
        .with_context(|| format!("connecting to Redis at {}", env.redis_url_redacted()))
}

fn no_such_job(env: &Env, id: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "no job '{id}' in namespace '{}' (it may have expired; `seedq-producer status` lists the jobs)",
        env.namespace
    )
}

/// Chunk index of a done-set member (`c17` -> 17).
fn chunk_index(member: &str) -> Option<u64> {
    member.strip_prefix('c')?.parse().ok()
}

pub fn view(progress: &JobProgress, job: Option<&Job>, now_ms: u64) -> ProgressView {
    let finished = progress.finished();
    let state = if progress.cancelled {
        "cancelled"
    } else if finished && progress.succeeded() {
        "finished"
    } else if finished {
        "finished_with_failures"
    } else {
        "running"
    };
    let running_secs = match (progress.started_at_ms, progress.finished_at_ms) {
        (Some(s), Some(f)) => f.saturating_sub(s) as f64 / 1000.0,
        (Some(s), None) => now_ms.saturating_sub(s) as f64 / 1000.0,
        _ => 0.0,
    };
    let (rate, eta) = rate_and_eta(progress.seeds_done, progress.seeds_total, running_secs);
    let mut dead: Vec<u64> = progress
        .dead_lettered
        .keys()
        .filter_map(|m| chunk_index(m))
        .collect();
    dead.sort_unstable();
    let end_ms = progress.finished_at_ms.unwrap_or(now_ms);
    ProgressView {
        job_id: progress.job_id.clone(),
        kind: if progress.kind.is_empty() {
            job.map(|j| j.kind().to_string()).unwrap_or_default()
        } else {
            progress.kind.clone()
        },
        family: job.and_then(|j| j.spec.family_name()),
        state: state.to_string(),
        finished,
        chunks_total: progress.chunks_total,
        chunks_done: progress.chunks_done,
        seeds_total: progress.seeds_total,
        seeds_done: progress.seeds_done,
        survivors: progress.survivors,
        dead_lettered: progress.dead_lettered.len() as u64,
        dead_lettered_chunks: dead,
        failures: progress.failures.clone(),
        chunks_by_node: progress.chunks_by_node.clone(),
        rate_seeds_per_sec: rate,
        eta_secs: if finished { Some(0.0) } else { eta },
        created_at_ms: progress.created_at_ms,
        elapsed_secs: Some(end_ms.saturating_sub(progress.created_at_ms) as f64 / 1000.0),
    }
}

pub async fn run_status(env: &Env, args: StatusArgs) -> anyhow::Result<i32> {
    let store = connect(env).await?;
    let now = seedq_protocol::now_ms();
    match args.job {
        Some(id) => {
            let progress = store
                .progress(&id)
                .await?
                .ok_or_else(|| no_such_job(env, &id))?;
            let job = store.load_job(&id).await?;
            let v = view(&progress, job.as_ref(), now);
            // Statistical jobs: the merged summary so far (one HGETALL of small counters).
            let summary = match job.as_ref().map(|j| &j.spec) {
                Some(JobSpec::Correlation(_) | JobSpec::Analysis(_)) => {
                    Some(merged_summary(&store, &id).await?)
                }
                _ => None,
            };
            if env.json {
                let mut value = serde_json::to_value(&v)?;
                if let (Some(s), Some(obj)) = (&summary, value.as_object_mut()) {
                    obj.insert("summary".into(), serde_json::to_value(s)?);
                }
                println!("{}", serde_json::to_string(&value)?);
            } else {
                print!("{}", v.to_text());
                if let Some(s) = &summary {
                    println!("{}", summary_line(s));
                }
            }
        }
        None => {
            let mut views = Vec::new();
            for id in store.list_jobs().await? {
                if let Some(p) = store.progress(&id).await? {
                    let job = store.load_job(&id).await?;
                    views.push(view(&p, job.as_ref(), now));
                }
            }
            if env.json {
                println!("{}", serde_json::to_string(&views)?);
            } else if views.is_empty() {
                eprintln!("no jobs in namespace '{}'", env.namespace);
            } else {
                for v in &views {
                    println!("{}", v.to_line());
                }
            }
        }
    }
    Ok(0)
}

pub fn publish_bar(total: u64, visible: bool) -> ProgressBar {
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
    // Subscribe before the first read so that no settle between the read and the wait is missed.
    // Without a subscription (a proxy that refuses pub/sub, say) the loop polls instead.
    let mut events = match store.job_events(job_id).await {
        Ok(events) => Some(events),
        Err(e) => {
            tracing::debug!(error = %e, "no job event subscription; polling");
            None
        }
    };
    let mut last_read = Instant::now();
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
                events = None;
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if std::mem::take(&mut redis_lost) {
            if !show_bar {
                tracing::warn!("Redis is back");
            }
            events = store.job_events(job_id).await.ok();
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
        wait_for_change(&mut events, deadline, &mut last_read).await;
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
    let mut msg = format!(
        "job {job_id} finished with {} of {} chunks dead-lettered (their seeds were NOT searched):",
        final_progress.dead_lettered.len(),
        final_progress.chunks_total
    );
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

/// Re-reads at most this often: a bar needs no more, and Redis is busy with the job itself.
const MIN_REREAD: Duration = Duration::from_millis(20);
/// Without events, or when none come (a cancel, a stalled cluster), re-read this often anyway.
const IDLE_REREAD: Duration = Duration::from_millis(500);
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Sleeps until the job may have changed: the next settle event, else a poll interval, never
/// past the deadline and never sooner than [`MIN_REREAD`] after the last read.
async fn wait_for_change(
    events: &mut Option<JobEvents>,
    deadline: Option<Instant>,
    last_read: &mut Instant,
) {
    let until_deadline =
        |d: Duration| deadline.map_or(d, |dl| d.min(dl.saturating_duration_since(Instant::now())));
    match events {
        Some(ev) => {
            if let Err(e) = ev.next(until_deadline(IDLE_REREAD)).await {
                tracing::debug!(error = %e, "job event subscription lost; polling");
                *events = None;
            }
        }
        None => tokio::time::sleep(until_deadline(POLL_INTERVAL)).await,
    }
    let since = last_read.elapsed();
    if since < MIN_REREAD {
        tokio::time::sleep(until_deadline(MIN_REREAD - since)).await;
    }
    *last_read = Instant::now();
}

pub async fn run_wait(env: &Env, args: WaitArgs) -> anyhow::Result<i32> {
    let store = connect(env).await?;
    if store.load_job(&args.job).await?.is_none() {
        return Err(no_such_job(env, &args.job));
    }
    wait_for_job(env, &store, &args.job, args.timeout, true).await
}

/// A correlation / analysis job's flagged seeds and merged chunk summaries.
async fn analysis_results(store: &Store, job: &Job) -> anyhow::Result<results::AnalysisResults> {
    let stored = store.survivors(&job.job_id).await?;
    let pairs: Vec<(u64, &str)> = stored.iter().map(|r| (r.seed, r.json.as_str())).collect();
    let flagged = results::flagged_records(&pairs)
        .with_context(|| format!("reading the flagged seeds of job {}", job.job_id))?;
    let summary = merged_summary(store, &job.job_id).await?;
    Ok(results::AnalysisResults {
        job_id: job.job_id.clone(),
        kind: job.kind().to_string(),
        summary,
        flagged,
    })
}

async fn merged_summary(store: &Store, job_id: &str) -> anyhow::Result<Summary> {
    let chunks = store.chunk_summaries(job_id).await?;
    results::merge_summaries(&chunks)
        .with_context(|| format!("reading the chunk summaries of job {job_id}"))
}

/// One line: seeds tested and flagged, flags per test, constant streams.
fn summary_line(s: &Summary) -> String {
    let by_test = s
        .flagged_by_test
        .iter()
        .map(|(t, n)| format!("{t} {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut line = format!(
        "summary: {} seeds tested, {} flagged",
        s.seeds_tested, s.seeds_flagged
    );
    if !by_test.is_empty() {
        line += &format!(" ({by_test})");
    }
    if s.constant_streams > 0 {
        line += &format!(", constant streams {}", s.constant_streams);
    }
    line
}

pub async fn run_results(env: &Env, args: ResultsArgs) -> anyhow::Result<i32> {
    let store = connect(env).await?;
    let job = store
        .load_job(&args.job)
        .await?
        .ok_or_else(|| no_such_job(env, &args.job))?;
    let text = match &job.spec {
        JobSpec::Sieve(spec) => {
            let survivors = store.sieve_survivors(&args.job).await?;
            let rows = results::rows(&survivors, spec.direction)?;
            match args.format {
                ResultsFormat::Json => serde_json::to_string_pretty(&rows)? + "\n",
                ResultsFormat::Csv => results::to_csv(&rows),
            }
        }
        JobSpec::Correlation(_) | JobSpec::Analysis(_) => {
            let results = analysis_results(&store, &job).await?;
            match args.format {
                ResultsFormat::Json => serde_json::to_string_pretty(&results)? + "\n",
                ResultsFormat::Csv => {
                    // CSV holds the flagged seeds only; the summary's headline goes to stderr.
                    eprintln!("{}", summary_line(&results.summary));
                    results::analysis_csv(&results.flagged)
                }
            }
        }
        JobSpec::Scripts(_) => anyhow::bail!(
            "job {} is a script batch: use `seedq-producer collect {}`",
            args.job,
            args.job
        ),
    };
    let progress = store.progress(&args.job).await?;
    if let Some(p) = progress.as_ref().filter(|p| !p.finished()) {
        eprintln!(
            "note: job {} is still running ({}/{} chunks done): results so far",
            args.job, p.chunks_done, p.chunks_total
        );
    }
    match &args.output {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?
        }
        None => std::io::stdout().lock().write_all(text.as_bytes())?,
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_of_running_and_failed_jobs() {
        let mut p = JobProgress {
            job_id: "j".into(),
            kind: "sieve".into(),
            chunks_total: 4,
            chunks_done: 2,
            seeds_total: 400,
            seeds_done: 200,
            started_at_ms: Some(1_000),
            created_at_ms: 500,
            ..Default::default()
        };
        let v = view(&p, None, 11_000);
        assert_eq!(v.state, "running");
        assert_eq!(v.rate_seeds_per_sec, Some(20.0));
        assert_eq!(v.eta_secs, Some(10.0));
        p.chunks_done = 3;
        p.dead_lettered.insert("c3".into(), "invalid_spec".into());
        p.finished_at_ms = Some(12_000);
        let v = view(&p, None, 20_000);
        assert_eq!(v.state, "finished_with_failures");
        assert_eq!(v.dead_lettered_chunks, vec![3]);
        assert!(v.finished);
    }
}
