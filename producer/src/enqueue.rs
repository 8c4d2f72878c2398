//! `seedq-producer sieve`: validate, plan, store the job, publish its chunks with confirms; and
//! [`enqueue_seed_job`], the same path for every seed job (`sieve`, `correlation`, `analysis`).
//!
//! Order of operations, and why it cannot double count:
//!
//! 1. Everything is validated ([`crate::sieve_args`], [`crate::analysis_cmd`]) before any
//!    service is contacted.
//! 2. The job id is `--job-id`, or derived from the spec and seeds (a hash), so re-running the
//!    same command names the same job.
//! 3. The job (spec, seeds and chunk plan) is created in Redis idempotently. If it already
//!    exists with the same identity, ITS stored chunk plan is used, so chunk `i` always means the
//!    same seeds; a different spec under the same id is refused.
//! 4. Chunks are published in index order with publisher confirms; a watermark of confirmed
//!    chunks (`published_upto` in the job's totals hash) is advanced as confirms arrive. A re-run
//!    after a crash mid-publish continues from the watermark and skips chunks already done.
//!    Anything published twice is harmless: the store applies a chunk's result once (done-set
//!    guard), so counters and survivors stay exact.
//!
//! Chunks are sized by work per seed ([`crate::planner`]): draw comparisons for a sieve,
//! `AnalysisSpec::units_per_seed` for correlation / analysis. Learned throughput is read under
//! the key the consumer records it under ([`seedq_protocol::throughput_family_key`]: the family
//! for sieves, `<kind>:<family>` for the statistical jobs, whose units differ).

use std::collections::HashSet;
use std::fmt::Write as _;

use anyhow::Context;
use seedq_core::SieveSpec;
use seedq_protocol::{ClusterConfig, Job, JobKind, JobSeeds, JobSpec, NodeBackend, NodeHeartbeat};
use seedq_store::{CreateOutcome, Store};
use serde::Serialize;

use crate::context::Env;
use crate::planner::{self, ChunkPlan, ChunkingPolicy, RateSource, Sizing, SlotClass};
use crate::publish::ChunkPublisher;
use crate::sieve_args::{SeedJobFlags, SeedsRequest, SieveArgs};

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
}

/// FNV-1a 64: a stable hash (std's `DefaultHasher` may change between Rust releases, and a job
/// id must not).
fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// `<prefix>-<family>-<16 hex>`, the hash taken over the canonical JSON of `(spec, seeds)`.
pub fn derived_id<S: Serialize>(prefix: &str, family: &str, spec: &S, seeds: &JobSeeds) -> String {
    let canonical = serde_json::to_vec(&(spec, seeds)).expect("spec serializes");
    format!("{prefix}-{family}-{:016x}", fnv1a64(&canonical))
}

/// `sieve-<family>-<16 hex>` from the canonical JSON of the spec and seeds.
pub fn derived_job_id(spec: &SieveSpec, seeds: &JobSeeds) -> String {
    derived_id("sieve", spec.family.family().name(), spec, seeds)
}

pub fn job_seeds(request: &SeedsRequest) -> JobSeeds {
    match request {
        SeedsRequest::Range { start, end } => JobSeeds::Range {
            start: *start,
            end: *end,
        },
        SeedsRequest::List(l) => JobSeeds::List(l.clone()),
    }
}

pub fn chunking_policy(cluster: &ClusterConfig) -> ChunkingPolicy {
    let c = &cluster.chunking;
    ChunkingPolicy {
        target_chunk_secs: c.target_chunk_secs,
        min_chunk_seeds: c.min_chunk_seeds,
        base_chunk_seeds: c.base_chunk_seeds,
        max_factor: c.max_factor,
        chunks_per_slot: c.chunks_per_slot,
        max_fraction_of_consumer_timeout: c.max_fraction_of_consumer_timeout,
        consumer_timeout_secs: cluster.broker.consumer_timeout_ms as f64 / 1000.0,
        default_work_per_second: c.default_evals_per_second,
    }
}

/// The slot classes that will pull this job's chunks: live nodes (heartbeats) when there are
/// any, else every configured node. `(model, slots)` pairs, merged by model.
pub fn active_slots(cluster: &ClusterConfig, live: &[NodeHeartbeat]) -> Vec<(String, u64)> {
    let mut classes: Vec<(String, u64)> = Vec::new();
    let mut add = |model: String, n: u64| {
        if n == 0 {
            return;
        }
        match classes.iter_mut().find(|(m, _)| *m == model) {
            Some(c) => c.1 += n,
            None => classes.push((model, n)),
        }
    };
    if !live.is_empty() {
        for hb in live {
            let seed_slots = hb.slots.iter().filter(|s| s.slot != "scripts").count() as u64;
            let model = if hb.gpu_model.is_empty() {
                "cpu".to_string()
            } else {
                hb.gpu_model.clone()
            };
            add(model, seed_slots);
        }
    } else {
        for node in &cluster.nodes {
            match node.backend {
                NodeBackend::Cpu => add("cpu".into(), node.cpu_slots as u64),
                _ => {
                    let gpus = node.gpu_list();
                    if gpus.is_empty() {
                        add("cpu".into(), node.cpu_slots as u64);
                    }
                    for g in gpus {
                        add(g.model, 1);
                    }
                }
            }
        }
    }
    classes
}

/// Per-slot rate of a model: learned EMA, else the cluster.toml profile, else the default.
pub fn class_rate(cluster: &ClusterConfig, model: &str, learned: Option<f64>) -> (f64, RateSource) {
    if let Some(rate) = learned.filter(|r| r.is_finite() && *r > 0.0) {
        return (rate, RateSource::Learned);
    }
    if let Some((_, p)) = cluster.profile_for(model) {
        if p.seeds_per_second > 0.0 {
            return (
                planner::profile_work_per_second(
                    p.seeds_per_second,
                    p.reference_window,
                    p.reference_skip_span,
                ),
                RateSource::Profile,
            );
        }
    }
    (
        cluster.chunking.default_evals_per_second,
        RateSource::Default,
    )
}

/// [`class_rate`] for a job kind. cluster.toml profiles are sieve measurements (seeds/s of the
/// sieve kernel at a reference window), and correlation / analysis run on the slot's CPU threads
/// even on GPU nodes, so for those kinds only a learned rate counts, else the default.
pub fn class_rate_for(
    kind: JobKind,
    cluster: &ClusterConfig,
    model: &str,
    learned: Option<f64>,
) -> (f64, RateSource) {
    match kind {
        JobKind::Sieve => class_rate(cluster, model, learned),
        _ => match learned.filter(|r| r.is_finite() && *r > 0.0) {
            Some(rate) => (rate, RateSource::Learned),
            None => (
                cluster.chunking.default_evals_per_second,
                RateSource::Default,
            ),
        },
    }
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
        }
    }
}

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
    for (model, slots) in active_slots(&env.cluster, &live) {
        let learned = match &throughput_key {
            Some(key) => store
                .throughput(&model, key)
                .await
                .context("reading learned throughput")?,
            None => None,
        };
        let (work_per_second, source) = class_rate_for(kind, &env.cluster, &model, learned);
        classes.push(SlotClass {
            model,
            slots,
            work_per_second,
            source,
        });
    }
    let seeds = &request.seeds;
    let total = u64::try_from(seeds.len()).unwrap_or(u64::MAX);
    let mut plan = planner::plan_chunk_size(
        total,
        request.work_per_seed,
        &classes,
        &chunking_policy(&env.cluster),
        request.sizing,
    )?;
    // A 2^64-seed range ends in a chunk that travels as an explicit list; keep it small.
    if let JobSeeds::Range { start, end } = seeds {
        if *end > u64::MAX as u128 {
            let chunk = plan.chunk_seeds as u128;
            let last_lo = *start as u128 + (seeds.len().div_ceil(chunk) - 1) * chunk;
            if *end - last_lo > Job::MAX_LISTED_TAIL as u128 {
                anyhow::bail!(
                    "a range reaching 2^64 needs its last chunk to be small: end the range at 2^64-1 ({}) or use --chunk-size of at most {}",
                    u64::MAX,
                    Job::MAX_LISTED_TAIL
                );
            }
        }
    }
    plan.chunks = u64::try_from(seeds.len().div_ceil(plan.chunk_seeds as u128)).unwrap_or(u64::MAX);
    Ok((plan, classes))
}

pub async fn run_sieve(env: &Env, args: SieveArgs) -> anyhow::Result<i32> {
    let validated = args.validate()?;
    let seeds = job_seeds(&validated.seeds);
    let derived = derived_job_id(&validated.spec, &seeds);
    let work_per_seed = planner::work_per_seed(&validated.spec);
    let request = SeedJobRequest::new(
        &args.job,
        JobSpec::Sieve(validated.spec),
        seeds,
        work_per_seed,
        derived,
    );
    enqueue_seed_job(env, request).await
}

/// Creates (or finds) a seed job and publishes its chunks that are neither confirmed nor done;
/// prints the job id (or the report with `--json`) and, with `wait`, follows the job. Returns
/// the exit code. The spec must already be validated: this is where services are contacted.
pub async fn enqueue_seed_job(env: &Env, request: SeedJobRequest) -> anyhow::Result<i32> {
    let job_id = request.job_id.clone();
    seedq_protocol::validate_identifier("job id", &job_id)?;

    let store = Store::connect(&env.redis_url, &env.namespace)
        .await
        .with_context(|| format!("connecting to Redis at {}", env.redis_url_redacted()))?
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
    };
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
        return crate::status_cmd::wait_for_job(
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

fn command_label() -> String {
    let mut s = String::from("seedq-producer");
    for a in std::env::args().skip(1) {
        let _ = write!(s, " {a}");
    }
    // Labels are shown by `status`; never keep a URL with credentials in them.
    crate::context::redact_args(&s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use seedq_core::{Family, FamilyConfig, Threshold};
    use seedq_protocol::SlotState;

    fn spec(draws: Vec<u64>) -> SieveSpec {
        SieveSpec {
            family: FamilyConfig::new(Family::Mt19937),
            draws,
            modulus: 1000,
            offset: 0,
            skip_min: 0,
            skip_max: 3,
            threshold: Threshold::parse("0.5").unwrap(),
            reverse_threshold: None,
            direction: Default::default(),
            skip_mode: Default::default(),
        }
    }

    #[test]
    fn derived_ids_are_stable_and_spec_sensitive() {
        let seeds = JobSeeds::Range { start: 0, end: 100 };
        let a = derived_job_id(&spec(vec![1, 2]), &seeds);
        assert_eq!(a, derived_job_id(&spec(vec![1, 2]), &seeds));
        assert!(a.starts_with("sieve-mt19937-"));
        assert_ne!(a, derived_job_id(&spec(vec![1, 3]), &seeds));
        assert_ne!(
            a,
            derived_job_id(&spec(vec![1, 2]), &JobSeeds::Range { start: 1, end: 100 })
        );
        seedq_protocol::validate_identifier("job id", &a).unwrap();
        // FNV-1a test vectors: ids must not change between builds.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    fn hb(node: &str, model: &str, slots: &[&str]) -> NodeHeartbeat {
        NodeHeartbeat {
            node: node.into(),
            backend: "cpu".into(),
            gpus: vec![],
            gpu_model: model.into(),
            slots: slots
                .iter()
                .map(|s| SlotState {
                    slot: s.to_string(),
                    backend: "cpu".into(),
                    busy_with: None,
                    chunks_done: 0,
                })
                .collect(),
            busy_slots: 0,
            chunks_done: 0,
            chunks_failed: 0,
            scripts_running: 0,
            script_limit: 1,
            version: "x".into(),
            pid: 1,
            started_at_ms: 0,
            at_ms: 0,
        }
    }

    #[test]
    fn active_slots_prefer_live_nodes_else_the_config() {
        let cluster = ClusterConfig::load(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../config/cluster.toml"
        )))
        .unwrap();
        let configured = active_slots(&cluster, &[]);
        assert_eq!(
            configured,
            vec![("RTX 3080 Ti".to_string(), 2), ("RX 6600".to_string(), 24)]
        );
        let live = active_slots(
            &cluster,
            &[
                hb("a", "cpu", &["cpu0", "cpu1", "scripts"]),
                hb("b", "cpu", &["cpu0"]),
            ],
        );
        assert_eq!(live, vec![("cpu".to_string(), 3)]);
    }

    #[test]
    fn rates_come_from_learning_then_profiles_then_the_default() {
        let cluster = ClusterConfig::load(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../config/cluster.toml"
        )))
        .unwrap();
        assert_eq!(
            class_rate(&cluster, "RX 6600", Some(123.0)),
            (123.0, RateSource::Learned)
        );
        let (rate, source) = class_rate(&cluster, "AMD Radeon RX 6600", None);
        assert_eq!(source, RateSource::Profile);
        assert_eq!(rate, 787_950.0 * 512.0 * 21.0);
        assert_eq!(
            class_rate(&cluster, "Quadro X", None).1,
            RateSource::Default
        );
    }

    #[test]
    fn statistical_jobs_ignore_sieve_profiles() {
        let cluster = ClusterConfig::load(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../config/cluster.toml"
        )))
        .unwrap();
        assert_eq!(
            class_rate_for(JobKind::Sieve, &cluster, "AMD Radeon RX 6600", None).1,
            RateSource::Profile
        );
        for kind in [JobKind::Correlation, JobKind::Analysis] {
            let (rate, source) = class_rate_for(kind, &cluster, "AMD Radeon RX 6600", None);
            assert_eq!(
                (rate, source),
                (
                    cluster.chunking.default_evals_per_second,
                    RateSource::Default
                )
            );
            assert_eq!(
                class_rate_for(kind, &cluster, "RX 6600", Some(7.0e6)),
                (7.0e6, RateSource::Learned)
            );
            assert_eq!(
                class_rate_for(kind, &cluster, "RX 6600", Some(f64::NAN)).1,
                RateSource::Default
            );
        }
    }
}
