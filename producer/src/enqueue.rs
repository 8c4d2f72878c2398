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
//! 4. The job is registered with the scheduler at its priority (`--priority`, else
//!    `scheduler.default_priority`), and this command publishes what the seed queue has room for
//!    now ([`crate::publish::ChunkPublisher::feed`]); the consumers publish the rest as work
//!    settles, most urgent job first and round robin within a priority (`seedq_scheduler`). A
//!    re-run registers the job again (changing its priority if asked) and publishes nothing a
//!    first run already claimed. Anything published twice is harmless: the store applies a
//!    chunk's result once (done-set guard), so counters and survivors stay exact.
//!
//! Chunks are sized by work per seed ([`crate::planner`]): draw comparisons for a sieve,
//! `AnalysisSpec::units_per_seed` for correlation / analysis. Learned throughput is read under
//! the key the consumer records it under ([`seedq_protocol::throughput_family_key`]: the family
//! for sieves, `<kind>:<family>` for the statistical jobs, whose units differ).

use std::fmt::Write as _;

use anyhow::Context;
use seedq_core::estimate::SurvivorEstimate;
use seedq_protocol::{Job, JobKind, JobSeeds, JobSpec, Priority};
use seedq_scheduler::Feeder;
use seedq_store::{CreateOutcome, Scheduled, Store};
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
    /// The job's priority with the scheduler.
    priority: Priority,
    /// Chunks of this job published by this run (the first window; the consumers publish the
    /// rest as work settles).
    published: u64,
    /// Chunks already done when this run started.
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
    /// `--priority`; `None` takes `scheduler.default_priority` for a new job and keeps an
    /// existing job's.
    pub priority: Option<Priority>,
    /// `--verify-fraction`; `None` takes `scheduler.verify_fraction` for a new job and keeps an
    /// existing job's.
    pub verify_fraction: Option<f64>,
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
            priority: flags.priority,
            verify_fraction: flags.verify_fraction,
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
    env.check_unsigned_allowed(&store).await?;

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
            env.seal(&mut job);
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
    env.check_sealed(&job)?;
    if store.is_cancelled(&job.job_id).await? {
        anyhow::bail!(
            "job {} was cancelled; use `seedq-producer resume {}` to run its remaining chunks",
            job.job_id,
            job.job_id
        );
    }

    let already_done = store.done_members(&job.job_id).await?.len() as u64;
    let current = store.job_schedule(&job.job_id).await?;
    let priority = request
        .priority
        .or(current.priority)
        .unwrap_or(env.cluster.scheduler.default_priority);
    let verify_fraction = request
        .verify_fraction
        .or(current.verify_fraction)
        .unwrap_or(env.cluster.scheduler.verify_fraction);
    let published = schedule_and_feed(env, &store, &job, priority, verify_fraction).await?;

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
        priority,
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
            "job {} already exists (priority {priority}): published {published} chunk(s) now, {already_done} already done",
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

/// Registers the job with the scheduler at `priority` and publishes what the seed queue has
/// room for now; returns how many of this job's chunks went out.
async fn schedule_and_feed(
    env: &Env,
    store: &Store,
    job: &Job,
    priority: Priority,
    verify_fraction: f64,
) -> anyhow::Result<u64> {
    match store
        .schedule_job(&job.job_id, priority, verify_fraction)
        .await?
    {
        Scheduled::UnknownJob => anyhow::bail!(
            "job {} vanished from Redis before it could be scheduled (expired or deleted?); run the command again",
            job.job_id
        ),
        Scheduled::AllPublished | Scheduled::Queued => {}
    }
    let feeder = Feeder::new(store.clone(), env.cluster.scheduler.clone()).leaving_unvouched();
    let mut publisher = ChunkPublisher::connect(env).await?;
    let fed = publisher.feed(&feeder).await.with_context(|| {
        format!(
            "job {} is created and scheduled; running consumers publish its chunks once the broker takes them",
            job.job_id
        )
    })?;
    publisher.close().await;
    Ok(fed.for_job(&job.job_id))
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
