//! Enqueueing a seed job (`sieve`, `correlation`, `analysis`): creating the job in Redis and
//! publishing its chunks with confirms ([`crate::publish`], which `resume` republishes through).
//!
//! Order of operations, and why it cannot double count:
//!
//! 1. Everything is validated ([`crate::sieve_args`], [`crate::cmd::analysis`]) before any
//!    service is contacted.
//! 2. The job id is `--job-id`, or derived from the spec and seeds ([`derived_id`]), so
//!    re-running the same command names the same job.
//! 3. The job (spec, seeds and chunk plan) is created in Redis idempotently. If it already
//!    exists with the same identity, ITS stored chunk plan is used, so chunk `i` always means the
//!    same seeds; a different spec under the same id is refused.
//! 4. Chunks are published in index order with publisher confirms; a watermark of confirmed
//!    chunks (`published_upto` in the job's totals hash, [`crate::publish`]) is advanced as
//!    confirms arrive. A re-run after a crash mid-publish continues from the watermark and skips
//!    chunks already done. Anything published twice is harmless: the store applies a chunk's
//!    result once (done-set guard), so counters and survivors stay exact.
//!
//! Chunks are sized by work per seed ([`crate::planner`]): draw comparisons for a sieve,
//! `AnalysisSpec::units_per_seed` for correlation / analysis. Learned throughput is read under
//! the key the consumer records it under ([`seedq_protocol::throughput_family_key`]: the family
//! for sieves, `<kind>:<family>` for the statistical jobs, whose units differ).

use std::collections::HashSet;
use std::fmt::Write as _;

use anyhow::Context;
use seedq_core::estimate::SurvivorEstimate;
use seedq_protocol::{Job, JobKind, JobSeeds, JobSpec};
use seedq_store::{CreateOutcome, Store};
use serde::Serialize;

use crate::context::Env;
use crate::planner::{self, ChunkPlan, Sizing, SlotClass};
use crate::publish::ChunkPublisher;
use crate::sieve_args::SeedJobFlags;

/// What `sieve --json` (and `correlation` / `analysis --json`) prints.
#[derive(Debug, Serialize)]
struct EnqueueReport {
    job_id: String,
    /// `sieve`, `correlation` or `analysis`.
    kind: JobKind,
    /// `created` or `existing`.
    job: &'static str,
    chunks: u64,
    chunk_size: u64,
    seeds: String,
    /// Chunks published by this run.
    published: u64,
    /// Chunks skipped because they were already done.
    already_done: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    plan: Option<ChunkPlan>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    classes: Vec<SlotClass>,
    /// Sieves: survivors expected under the null model (`seedq_core::estimate`).
    #[serde(skip_serializing_if = "Option::is_none")]
    expected_survivors: Option<f64>,
    /// Sieves: whether `expected_survivors` is an upper bound (variable skip).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    expected_is_bound: bool,
    /// A count-only sieve (counts and histograms, no records).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    count_only: bool,
}

/// `<prefix>-<family>-<16 hex>`, the hash taken over the canonical JSON of `(spec, seeds)`.
pub fn derived_id<S: Serialize>(prefix: &str, family: &str, spec: &S, seeds: &JobSeeds) -> String {
    let canonical = serde_json::to_vec(&(spec, seeds)).expect("spec serializes");
    format!(
        "{prefix}-{family}-{:016x}",
        crate::naming::fnv1a64(&canonical)
    )
}

/// Everything [`enqueue_seed_job`] needs: a validated spec and seeds, and how to size and
/// follow the job.
#[derive(Debug, Clone)]
pub struct SeedJobRequest {
    pub job_id: String,
    pub spec: JobSpec,
    pub seeds: JobSeeds,
    /// Work units of one seed (the unit learned throughput is kept in for this kind).
    pub work_per_seed: f64,
    pub sizing: Sizing,
    pub wait: bool,
    pub timeout: Option<f64>,
    /// Sieves: keep counts only ([`seedq_protocol::Job::count_only`]).
    pub count_only: bool,
    /// Sieves: the survivor estimate, printed with the plan.
    pub estimate: Option<SurvivorEstimate>,
}

impl SeedJobRequest {
    /// The request for `spec` over `seeds` as the shared flags ask: `--job-id` or `derived_id`,
    /// `--chunk-size` or sizing for `--target-chunk-secs`, `--wait`, `--timeout`.
    pub fn new(
        flags: &SeedJobFlags,
        spec: JobSpec,
        seeds: JobSeeds,
        work_per_seed: f64,
        derived_id: String,
    ) -> SeedJobRequest {
        SeedJobRequest {
            job_id: flags.job_id.clone().unwrap_or(derived_id),
            spec,
            seeds,
            work_per_seed,
            sizing: match flags.chunk_size {
                Some(n) => Sizing::Fixed(n),
                None => Sizing::Target(flags.target_chunk_secs),
            },
            wait: flags.wait,
            timeout: flags.timeout,
            count_only: false,
            estimate: None,
        }
    }
}

/// Sizes a job that does not exist yet, for the slot classes that will pull its chunks (live
/// heartbeats, else cluster.toml) at their learned or configured rates.
async fn plan_new_job(
    env: &Env,
    store: &Store,
    request: &SeedJobRequest,
) -> anyhow::Result<(ChunkPlan, Vec<SlotClass>)> {
    let live = store
        .list_nodes()
        .await
        .context("reading node heartbeats")?;
    // The consumer records samples under this key (the family, or `<kind>:<family>`).
    let throughput_key = seedq_protocol::throughput_family_key(&request.spec);
    let kind = request.spec.kind();
    let mut classes = Vec::new();
    for (model, slots) in planner::active_slots(&env.cluster, &live) {
        let learned = match &throughput_key {
            Some(key) => store
                .throughput(&model, key)
                .await
                .context("reading learned throughput")?,
            None => None,
        };
        let (work_per_second, source) =
            planner::class_rate_for(kind, &env.cluster, &model, learned);
        classes.push(SlotClass {
            model,
            slots,
            work_per_second,
            source,
        });
    }
    let seeds = &request.seeds;
    let total = u64::try_from(seeds.len()).unwrap_or(u64::MAX);
    let plan = planner::plan_chunk_size(
        total,
        request.work_per_seed,
        &classes,
        &env.cluster,
        request.sizing,
    )?;
    Ok((planner::fit_to_seeds(plan, seeds)?, classes))
}

/// Creates (or finds) a seed job and publishes its chunks that are neither confirmed nor done;
/// prints the job id (or the report with `--json`) and, with `wait`, follows the job. Returns
/// the exit code. The spec must already be validated: this is where services are contacted.
pub async fn enqueue_seed_job(env: &Env, request: SeedJobRequest) -> anyhow::Result<i32> {
    let job_id = request.job_id.clone();
    seedq_protocol::validate_identifier("job id", &job_id)?;

    let store = env
        .store()
        .await?
        .with_job_ttl(env.cluster.jobs.result_ttl_secs);

    let (job, created, plan, classes) = match store.load_job(&job_id).await? {
        Some(existing) => (existing, false, None, Vec::new()),
        None => {
            let (plan, classes) = plan_new_job(env, &store, &request).await?;
            let mut job = Job::new_seed_job(
                job_id.clone(),
                request.spec.clone(),
                request.seeds.clone(),
                plan.chunk_seeds,
            )?;
            job.label = Some(command_label());
            job.count_only = request.count_only;
            tracing::info!(
                "job {job_id}: {} chunks of {} seeds ({}; slowest class {}, ~{:.1} s per chunk; cluster model {})",
                plan.chunks,
                plan.chunk_seeds,
                plan.rule,
                plan.slowest_model.as_deref().unwrap_or("default rate"),
                plan.expected_chunk_secs,
                env.config_path.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "built-in defaults".into())
            );
            (job, true, Some(plan), classes)
        }
    };
    // Same id: same identity required (create_job also checks it atomically).
    let candidate = Job {
        spec: request.spec.clone(),
        seeds: Some(request.seeds.clone()),
        count_only: request.count_only,
        ..job.clone()
    };
    if candidate.identity_json() != job.identity_json() {
        return Err(seedq_store::StoreError::JobConflict { job_id }.into());
    }
    let (job, created) = match store.create_job(&job).await? {
        CreateOutcome::Created => (job, created),
        CreateOutcome::Existing(stored) => (stored, false),
    };
    if store.is_cancelled(&job.job_id).await? {
        anyhow::bail!(
            "job {} was cancelled; use `seedq-producer resume {}` to run its remaining chunks",
            job.job_id,
            job.job_id
        );
    }

    let done = store.done_members(&job.job_id).await?;
    let published_from = crate::publish::published_upto(env, &job.job_id).await?;
    let (published, already_done) = publish_chunks(env, &job, &done, published_from).await?;

    let report = EnqueueReport {
        job_id: job.job_id.clone(),
        kind: job.kind(),
        job: if created { "created" } else { "existing" },
        chunks: job.chunk_count,
        chunk_size: job.chunk_size,
        seeds: match job.seeds.as_ref() {
            Some(JobSeeds::Range { start, end }) => format!("[{start},{end})"),
            Some(JobSeeds::List(l)) => format!("list of {}", l.len()),
            None => String::new(),
        },
        published,
        already_done,
        plan,
        classes,
        expected_survivors: request.estimate.map(|e| e.survivors(request.seeds.len())),
        expected_is_bound: request.estimate.is_some_and(|e| e.upper_bound),
        count_only: job.count_only,
    };
    if let (Some(e), false) = (request.estimate, env.json) {
        eprintln!(
            "expected survivors: {}{:.0} ({:.3e} of {} seeds){}",
            if e.upper_bound { "at most " } else { "~" },
            e.survivors(request.seeds.len()),
            e.rate,
            request.seeds.len(),
            if job.count_only {
                "; count-only: counts and histograms kept"
            } else {
                ""
            }
        );
    }
    if !created {
        eprintln!(
            "job {} already exists: published {published} chunk(s) not yet enqueued, {already_done} already done",
            job.job_id
        );
    }
    if env.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", job.job_id);
    }
    if request.wait {
        return crate::cmd::wait::wait_for_job(
            env,
            &store,
            &job.job_id,
            request.timeout,
            !env.json,
        )
        .await;
    }
    Ok(0)
}

/// Publishes chunks `[from, chunk_count)` that are not done; returns (published, skipped done).
async fn publish_chunks(
    env: &Env,
    job: &Job,
    done: &HashSet<String>,
    from: u64,
) -> anyhow::Result<(u64, u64)> {
    let todo: Vec<u64> = (from..job.chunk_count)
        .filter(|i| !done.contains(&seedq_protocol::chunk_member(*i)))
        .collect();
    let already_done = (from..job.chunk_count).count() as u64 - todo.len() as u64;
    if todo.is_empty() {
        crate::publish::set_published_upto(env, &job.job_id, job.chunk_count).await?;
        return Ok((0, already_done));
    }
    let mut publisher = ChunkPublisher::connect(env).await?;
    let published = publisher.publish_job_chunks(job, &todo).await?;
    publisher.close().await;
    Ok((published, already_done))
}

/// This command line, kept as the job's label.
fn command_label() -> String {
    let mut s = String::from("seedq-producer");
    for a in std::env::args().skip(1) {
        let _ = write!(s, " {a}");
    }
    // Labels are shown by `status`; never keep a URL with credentials in them.
    crate::context::redact_args(&s)
}
