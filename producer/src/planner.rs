//! Planning a seed job's chunks: what the cluster can run (the slot classes that will pull the
//! chunks and each class's rate), and the chunk size that follows from it. The rules are the
//! original system's `gpu_optimizer` ones adapted to a pull queue (`docs/defects.md` C9, R10).
//!
//! Every GPU (or CPU slot) pulls the next chunk when it is free, so a chunk is not sized for the
//! GPU that will run it (nobody knows which will) but so that it takes about
//! `target_chunk_secs` on the **slowest** active class; a faster GPU simply takes more chunks.
//! The rules, in order:
//!
//! 1. Work per seed: a seed costs `k x skip span` draw comparisons for constant skip (`k x` the
//!    strategies' search widths for variable skip), the unit learned throughput is kept in
//!    ([`work_per_seed`]), so one measurement serves every window and skip range (defect R10).
//! 2. Rate of each active class, per slot ([`class_rate`]): the learned EMA (Redis) if present,
//!    else the cluster.toml profile (converted from seeds/s at its reference configuration),
//!    else the conservative default.
//! 3. `seeds = target_secs x slowest rate / work per seed`, clamped to cluster.toml's
//!    `[min_chunk_seeds, base_chunk_seeds x max_factor]`.
//! 4. Keep every slot busy: while the range allows, at least `chunks_per_slot x total slots`
//!    chunks (never below the minimum chunk).
//! 5. Never longer than `max_fraction_of_consumer_timeout` of the broker's consumer timeout on the
//!    slowest class (RabbitMQ would close the channel of a delivery unacked that long); this cap
//!    wins over the minimum. A chunk holds at least one seed, so a seed slower than that fraction
//!    gets chunks of one seed, and a job whose single seed would not finish within the consumer
//!    timeout minus [`ACK_MARGIN`] on the slowest class is refused: no chunk of it could ever be
//!    acked, and every delivery would end in a closed channel and a redelivery.
//!
//! A fixed `--chunk-size` skips 1-4 but is still refused when it would break rule 5.
//!
//! The knobs are the cluster model's own `[chunking]` section and `[broker] consumer_timeout_ms`
//! (rule 5 needs both), so [`plan_chunk_size`] takes the whole [`ClusterConfig`], as the rate
//! functions do. Everything here is pure; the enqueueing path ([`crate::enqueue`]) reads the
//! heartbeats and learned rates from Redis and hands them in.

use seedq_core::SieveSpec;
use seedq_protocol::{ClusterConfig, Job, JobKind, JobSeeds, NodeBackend, NodeHeartbeat};

/// Head-room a chunk keeps below the broker's consumer timeout after its last seed: recording
/// the result in Redis and acking (the same head-room script jobs keep).
pub const ACK_MARGIN: std::time::Duration = crate::jobs_file::Limits::ACK_MARGIN;

/// Where a class's rate came from (shown by `sieve --json` and in logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RateSource {
    Learned,
    Profile,
    Default,
}

/// One class of identical slots that will pull chunks (e.g. the 24 RX 6600 of the two rigs).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SlotClass {
    /// GPU model (or `cpu`), the key of profiles and learned throughput.
    pub model: String,
    pub slots: u64,
    /// Work units (draw comparisons) per second of ONE slot of this class.
    pub work_per_second: f64,
    pub source: RateSource,
}

/// How the user asked for chunks to be sized.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sizing {
    /// `--chunk-size N`.
    Fixed(u64),
    /// `--target-chunk-secs S` (or the configured target when `None`).
    Target(Option<f64>),
}

/// The outcome of sizing, kept with the job so a re-run reuses it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ChunkPlan {
    pub chunk_seeds: u64,
    pub chunks: u64,
    /// The slowest class the size was aimed at (None when there is no class at all).
    pub slowest_model: Option<String>,
    /// Expected seconds per chunk on the slowest class.
    pub expected_chunk_secs: f64,
    pub total_slots: u64,
    /// Which rule decided the size, for the operator.
    pub rule: &'static str,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PlanError {
    #[error("--chunk-size must be at least 1")]
    ZeroChunkSize,
    #[error("--target-chunk-secs must be a positive number of seconds, got {0}")]
    BadTarget(f64),
    #[error("--chunk-size {chunk} would take about {secs:.0} s per chunk on {model}, over the {limit:.0} s allowed ({fraction} of the broker's consumer_timeout of {timeout:.0} s): use at most {max_seeds} seeds per chunk")]
    ChunkTooSlow {
        chunk: u64,
        secs: f64,
        model: String,
        limit: f64,
        fraction: f64,
        timeout: f64,
        max_seeds: u64,
    },
    #[error("one seed takes about {seed_secs:.0} s on {model}, the slowest class, but a chunk must finish within {limit:.0} s (the broker's consumer_timeout of {timeout:.0} s minus {margin:.0} s to record and ack it), so no chunk could ever complete: make a seed cheaper (a smaller --window or skip range for a sieve; fewer --samples or a smaller --max-lag for correlation / analysis), or raise consumer_timeout in rabbitmq.conf and [broker] consumer_timeout_ms in cluster.toml to match")]
    SeedTooSlow {
        seed_secs: f64,
        model: String,
        limit: f64,
        timeout: f64,
        margin: f64,
    },
    #[error("there are no seeds to sieve")]
    NoSeeds,
    #[error("a range reaching 2^64 needs its last chunk to be small: end the range at 2^64-1 ({}) or use --chunk-size of at most {max_chunk}", u64::MAX)]
    ListedTailTooLong { max_chunk: u64 },
}

/// Draw comparisons one seed costs for this spec: the unit of learned throughput.
///
/// Constant skip: `k x (skip_max - skip_min + 1)`. Variable skip: `k x` the sum over strategies
/// of the skip values each may try at a draw (`2 x tolerance + 1`, bounded by the skip range).
/// Reverse-only jobs cost the same as forward ones; bidirectional jobs run the reverse pass on
/// forward survivors only, which is negligible next to the forward pass.
pub fn work_per_seed(spec: &SieveSpec) -> f64 {
    // One definition for the planner and the consumer's throughput samples.
    seedq_protocol::sieve_work_per_seed(spec)
}

/// Chooses the chunk size for `total_seeds` seeds of `work_per_seed` units each.
pub fn plan_chunk_size(
    total_seeds: u64,
    work_per_seed: f64,
    classes: &[SlotClass],
    cluster: &ClusterConfig,
    sizing: Sizing,
) -> Result<ChunkPlan, PlanError> {
    if total_seeds == 0 {
        return Err(PlanError::NoSeeds);
    }
    let chunking = &cluster.chunking;
    let consumer_timeout_secs = cluster.broker.consumer_timeout_ms as f64 / 1000.0;
    let work_per_seed = work_per_seed.max(1.0);
    let slowest = classes
        .iter()
        .filter(|c| c.slots > 0 && c.work_per_second > 0.0)
        .min_by(|a, b| a.work_per_second.total_cmp(&b.work_per_second));
    let slowest_rate = slowest
        .map(|c| c.work_per_second)
        .unwrap_or(chunking.default_evals_per_second)
        .max(1e-9);
    let seeds_per_sec = slowest_rate / work_per_seed;
    let total_slots: u64 = classes.iter().map(|c| c.slots).sum::<u64>().max(1);
    let limit_secs = chunking.max_fraction_of_consumer_timeout * consumer_timeout_secs;
    let seeds_within_limit = (limit_secs * seeds_per_sec).floor() as u64;
    let timeout_cap = seeds_within_limit.max(1);
    let slowest_model = slowest.map(|c| c.model.clone());

    if sizing == Sizing::Fixed(0) {
        return Err(PlanError::ZeroChunkSize);
    }
    // A timeout of 0 is a broker without one (as for script jobs). The hard limit never drops
    // below the fraction rule 5 allows, so a short timeout is not left with nothing.
    let margin_secs = ACK_MARGIN.as_secs_f64();
    let hard_limit_secs = (consumer_timeout_secs - margin_secs).max(limit_secs);
    let seed_secs = 1.0 / seeds_per_sec;
    if consumer_timeout_secs > 0.0 && seed_secs > hard_limit_secs {
        return Err(PlanError::SeedTooSlow {
            seed_secs,
            model: slowest_model.unwrap_or_else(|| "the default rate".into()),
            limit: hard_limit_secs,
            timeout: consumer_timeout_secs,
            margin: margin_secs,
        });
    }

    let (chunk, rule) = match sizing {
        Sizing::Fixed(n) => {
            if n > timeout_cap {
                return Err(PlanError::ChunkTooSlow {
                    chunk: n,
                    secs: n as f64 / seeds_per_sec,
                    model: slowest_model.unwrap_or_else(|| "the default rate".into()),
                    limit: limit_secs,
                    fraction: chunking.max_fraction_of_consumer_timeout,
                    timeout: consumer_timeout_secs,
                    max_seeds: timeout_cap,
                });
            }
            (n, "fixed --chunk-size")
        }
        Sizing::Target(target) => {
            let target = target.unwrap_or(chunking.target_chunk_secs);
            if !(target.is_finite() && target > 0.0) {
                return Err(PlanError::BadTarget(target));
            }
            let ideal = (target * seeds_per_sec).floor() as u64;
            let min = chunking.min_chunk_seeds.max(1);
            // A `base x factor` below the minimum chunk must still plan (and `clamp` panics on an
            // inverted range): the minimum wins.
            let max = chunking.max_chunk_seeds().max(min);
            let mut chunk = ideal.clamp(min, max);
            let mut rule = if ideal < min {
                "minimum chunk"
            } else if ideal > max {
                "maximum chunk (base x factor)"
            } else {
                "target duration on the slowest class"
            };
            let wanted_chunks = chunking.chunks_per_slot.max(1).saturating_mul(total_slots);
            let busy = total_seeds.div_ceil(wanted_chunks).max(min);
            if busy < chunk {
                chunk = busy;
                rule = "keep every slot busy";
            }
            if chunk > timeout_cap {
                chunk = timeout_cap;
                rule = if seeds_within_limit == 0 {
                    "one seed per chunk (a seed alone is over the consumer timeout fraction)"
                } else {
                    "consumer timeout cap"
                };
            }
            (chunk, rule)
        }
    };
    let chunk = chunk.min(total_seeds);
    Ok(ChunkPlan {
        chunk_seeds: chunk,
        chunks: total_seeds.div_ceil(chunk),
        slowest_model,
        expected_chunk_secs: chunk as f64 / seeds_per_sec,
        total_slots,
        rule,
    })
}

/// Converts a profile measured in seeds/s at a reference configuration to work units/s.
pub fn profile_work_per_second(
    seeds_per_second: f64,
    reference_window: u64,
    reference_skip_span: u64,
) -> f64 {
    seeds_per_second * (reference_window.max(1) * reference_skip_span.max(1)) as f64
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
            // A quarantined slot takes no work: chunks sized for it would wait for the others.
            let seed_slots = hb
                .slots
                .iter()
                .filter(|s| s.slot != "scripts" && s.quarantined.is_none())
                .count() as u64;
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
                profile_work_per_second(
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

/// Fits a plan made for `seeds.len()` seeds (counted in `u64`) to the seeds themselves: the
/// chunk count is recounted in `u128`, and a range reaching 2^64 is refused unless its last
/// chunk is small, because that chunk cannot be a `u64` range and travels as an explicit list.
pub fn fit_to_seeds(mut plan: ChunkPlan, seeds: &JobSeeds) -> Result<ChunkPlan, PlanError> {
    if let JobSeeds::Range { start, end } = seeds {
        if *end > u64::MAX as u128 {
            let chunk = plan.chunk_seeds as u128;
            let last_lo = *start as u128 + (seeds.len().div_ceil(chunk) - 1) * chunk;
            if *end - last_lo > Job::MAX_LISTED_TAIL as u128 {
                return Err(PlanError::ListedTailTooLong {
                    max_chunk: Job::MAX_LISTED_TAIL,
                });
            }
        }
    }
    plan.chunks = u64::try_from(seeds.len().div_ceil(plan.chunk_seeds as u128)).unwrap_or(u64::MAX);
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use seedq_core::{Direction, Family, FamilyConfig, SkipMode, Strategy, Threshold};
    use seedq_protocol::{ChunkingConfig, SlotState};

    fn class(model: &str, slots: u64, rate: f64) -> SlotClass {
        SlotClass {
            model: model.into(),
            slots,
            work_per_second: rate,
            source: RateSource::Profile,
        }
    }

    /// The shipped defaults (consumer timeout 1800 s, chunks in [500, 100 000 x 50]) with a
    /// 10 s target and a default rate of 1e6 units/s.
    fn policy() -> ClusterConfig {
        ClusterConfig {
            chunking: ChunkingConfig {
                target_chunk_secs: 10.0,
                default_evals_per_second: 1e6,
                ..ChunkingConfig::default()
            },
            ..ClusterConfig::default()
        }
    }

    fn spec(k: usize, skip_min: u32, skip_max: u32, skip_mode: SkipMode) -> SieveSpec {
        SieveSpec {
            family: FamilyConfig::new(Family::Mt19937),
            draws: vec![1; k],
            modulus: 1000,
            offset: 0,
            offset_max: None,
            skip_min,
            skip_max,
            threshold: Threshold::parse("0.5").unwrap(),
            reverse_threshold: None,
            direction: Direction::Forward,
            skip_mode,
        }
    }

    #[test]
    fn work_per_seed_counts_window_and_skip_span() {
        assert_eq!(
            work_per_seed(&spec(512, 0, 20, SkipMode::Constant)),
            512.0 * 21.0
        );
        assert_eq!(work_per_seed(&spec(10, 5, 5, SkipMode::Constant)), 10.0);
        let variable = SkipMode::Variable {
            strategies: Strategy::presets(),
        };
        // Tolerances 5, 20, 5, 10, 50 give widths 11, 41, 11, 21, 101 (span 256 bounds none).
        assert_eq!(
            work_per_seed(&spec(8, 0, 255, variable.clone())),
            8.0 * (11.0 + 41.0 + 11.0 + 21.0 + 101.0)
        );
        // A narrow skip range bounds every width.
        assert_eq!(work_per_seed(&spec(8, 0, 3, variable)), 8.0 * 4.0 * 5.0);
    }

    #[test]
    fn sized_for_the_slowest_class() {
        // RTX at 3x the rate of the RX: the size follows the RX.
        let classes = [class("RTX 3080 Ti", 2, 3e9), class("RX 6600", 24, 1e9)];
        let plan =
            plan_chunk_size(1 << 40, 1e4, &classes, &policy(), Sizing::Target(None)).unwrap();
        // 10 s x 1e9 / 1e4 = 1e6 seeds, inside [500, 5e6].
        assert_eq!(plan.chunk_seeds, 1_000_000);
        assert_eq!(plan.slowest_model.as_deref(), Some("RX 6600"));
        assert_eq!(plan.rule, "target duration on the slowest class");
        assert!((plan.expected_chunk_secs - 10.0).abs() < 1e-9);
        assert_eq!(plan.total_slots, 26);
    }

    #[test]
    fn clamped_to_the_configured_min_and_max() {
        let fast = [class("RTX 3080 Ti", 1, 1e12)];
        let plan = plan_chunk_size(1 << 50, 1.0, &fast, &policy(), Sizing::Target(None)).unwrap();
        assert_eq!(plan.chunk_seeds, 100_000 * 50);
        assert_eq!(plan.rule, "maximum chunk (base x factor)");
        let slow = [class("RX 6600", 1, 10.0)];
        let plan = plan_chunk_size(1 << 40, 1.0, &slow, &policy(), Sizing::Target(None)).unwrap();
        assert_eq!(plan.chunk_seeds, 500);
        assert_eq!(plan.rule, "minimum chunk");
    }

    #[test]
    fn small_ranges_still_feed_every_slot() {
        let classes = [class("RX 6600", 24, 1e9), class("RTX 3080 Ti", 2, 3e9)];
        // 1e6 seeds would be one chunk by duration; 26 slots x 4 => 104 chunks.
        let plan =
            plan_chunk_size(1_000_000, 1e4, &classes, &policy(), Sizing::Target(None)).unwrap();
        assert_eq!(plan.rule, "keep every slot busy");
        assert_eq!(plan.chunk_seeds, 1_000_000u64.div_ceil(104));
        assert!(plan.chunks >= 104);
        // ...but never below the minimum chunk.
        let plan = plan_chunk_size(10_000, 1e4, &classes, &policy(), Sizing::Target(None)).unwrap();
        assert_eq!(plan.chunk_seeds, 500);
        assert_eq!(plan.chunks, 20);
        // A range smaller than one chunk is one chunk of exactly that size.
        let plan = plan_chunk_size(7, 1e4, &classes, &policy(), Sizing::Target(None)).unwrap();
        assert_eq!((plan.chunk_seeds, plan.chunks), (7, 1));
    }

    #[test]
    fn never_near_the_consumer_timeout() {
        // A huge window makes even the minimum chunk slow: the timeout cap wins.
        let classes = [class("RX 6600", 1, 1e6)];
        let mut pol = policy();
        pol.chunking.target_chunk_secs = 1e6;
        let plan = plan_chunk_size(1 << 40, 1e6, &classes, &pol, Sizing::Target(None)).unwrap();
        // 1 seed/s; limit 0.1 x 1800 s = 180 seeds.
        assert_eq!(plan.chunk_seeds, 180);
        assert_eq!(plan.rule, "consumer timeout cap");
        let err = plan_chunk_size(1 << 40, 1e6, &classes, &pol, Sizing::Fixed(1000)).unwrap_err();
        assert!(
            matches!(err, PlanError::ChunkTooSlow { max_seeds: 180, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("consumer_timeout"));
    }

    #[test]
    fn a_seed_that_cannot_finish_before_the_consumer_timeout_is_refused() {
        // A 4096-draw window over a skip span of 25 344 000 at 5e7 units/s: about 2076 s a
        // seed, over the 1800 s consumer timeout (minus the margin) on its own.
        let classes = [class("RX 6600", 24, 5e7)];
        let work = 4096.0 * 25_344_000.0;
        for sizing in [Sizing::Target(None), Sizing::Fixed(1)] {
            let err = plan_chunk_size(1 << 20, work, &classes, &policy(), sizing).unwrap_err();
            let PlanError::SeedTooSlow {
                seed_secs, limit, ..
            } = &err
            else {
                panic!("{sizing:?}: {err}");
            };
            assert!((seed_secs - 2076.0).abs() < 1.0, "{err}");
            assert_eq!(*limit, 1800.0 - ACK_MARGIN.as_secs_f64());
            let text = err.to_string();
            for needle in [
                "2076 s",
                "RX 6600",
                "consumer_timeout of 1800 s",
                "--window",
                "rabbitmq.conf",
                "consumer_timeout_ms",
            ] {
                assert!(text.contains(needle), "{needle}: {text}");
            }
        }
        // A seed over the fraction but well inside the timeout still runs, one per chunk, and
        // the plan says so.
        let plan = plan_chunk_size(
            1 << 20,
            500.0 * 5e7,
            &classes,
            &policy(),
            Sizing::Target(None),
        )
        .unwrap();
        assert_eq!(plan.chunk_seeds, 1);
        assert!(plan.rule.starts_with("one seed per chunk"), "{}", plan.rule);
        // A broker without a consumer timeout (0) refuses nothing.
        let mut unlimited = policy();
        unlimited.broker.consumer_timeout_ms = 0;
        assert!(plan_chunk_size(1 << 20, work, &classes, &unlimited, Sizing::Target(None)).is_ok());
    }

    #[test]
    fn fixed_sizes_and_bad_input() {
        let classes = [class("cpu", 1, 1e9)];
        let plan = plan_chunk_size(10, 1.0, &classes, &policy(), Sizing::Fixed(3)).unwrap();
        assert_eq!((plan.chunk_seeds, plan.chunks), (3, 4));
        assert_eq!(
            plan_chunk_size(10, 1.0, &classes, &policy(), Sizing::Fixed(0)),
            Err(PlanError::ZeroChunkSize)
        );
        assert_eq!(
            plan_chunk_size(0, 1.0, &classes, &policy(), Sizing::Fixed(5)),
            Err(PlanError::NoSeeds)
        );
        assert!(matches!(
            plan_chunk_size(10, 1.0, &classes, &policy(), Sizing::Target(Some(0.0))),
            Err(PlanError::BadTarget(_))
        ));
        assert!(matches!(
            plan_chunk_size(10, 1.0, &classes, &policy(), Sizing::Target(Some(f64::NAN))),
            Err(PlanError::BadTarget(_))
        ));
    }

    #[test]
    fn no_known_class_uses_the_default_rate() {
        let plan = plan_chunk_size(1 << 40, 100.0, &[], &policy(), Sizing::Target(None)).unwrap();
        // 10 s x 1e6 / 100 = 1e5 seeds.
        assert_eq!(plan.chunk_seeds, 100_000);
        assert_eq!(plan.slowest_model, None);
    }

    #[test]
    fn profiles_convert_to_work_units() {
        assert_eq!(profile_work_per_second(2.0, 512, 21), 2.0 * 10752.0);
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
                    quarantined: None,
                })
                .collect(),
            busy_slots: 0,
            chunks_done: 0,
            chunks_failed: 0,
            scripts_running: 0,
            script_limit: 1,
            signed_jobs: false,
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
