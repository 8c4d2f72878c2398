//! Chunk sizing and chunk lists: the chapter's `gpu_optimizer` rules adapted to a pull queue.
//!
//! Every GPU (or CPU slot) pulls the next chunk when it is free, so a chunk is not sized for the
//! GPU that will run it (nobody knows which will) but so that it takes about
//! `target_chunk_secs` on the **slowest** active class; a faster GPU simply takes more chunks.
//! The rules, in order:
//!
//! 1. Work per seed: a seed costs `k x skip span` draw comparisons for constant skip (`k x` the
//!    strategies' search widths for variable skip), the unit learned throughput is kept in
//!    ([`work_per_seed`]), so one measurement serves every window and skip range (defect R10).
//! 2. Rate of each active class, per slot: the learned EMA (Redis) if present, else the
//!    cluster.toml profile (converted from seeds/s at its reference configuration), else the
//!    conservative default.
//! 3. `seeds = target_secs x slowest rate / work per seed`, clamped to the chapter's
//!    `[min_chunk_seeds, base_chunk_seeds x max_factor]`.
//! 4. Keep every slot busy: while the range allows, at least `chunks_per_slot x total slots`
//!    chunks (never below the minimum chunk).
//! 5. Never longer than `max_fraction_of_consumer_timeout` of the broker's consumer timeout on the
//!    slowest class (RabbitMQ would close the channel of a delivery unacked that long); this cap
//!    wins over the minimum.
//!
//! A fixed `--chunk-size` skips 1-4 but is still refused when it would break rule 5.

use seedq_core::SieveSpec;

/// The sizing knobs (cluster.toml `[chunking]` plus the broker's consumer timeout).
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkingPolicy {
    pub target_chunk_secs: f64,
    pub min_chunk_seeds: u64,
    pub base_chunk_seeds: u64,
    pub max_factor: u64,
    pub chunks_per_slot: u64,
    pub max_fraction_of_consumer_timeout: f64,
    pub consumer_timeout_secs: f64,
    /// Work units per second per slot when nothing better is known.
    pub default_work_per_second: f64,
}

impl Default for ChunkingPolicy {
    fn default() -> Self {
        ChunkingPolicy {
            target_chunk_secs: 30.0,
            min_chunk_seeds: 500,
            base_chunk_seeds: 100_000,
            max_factor: 50,
            chunks_per_slot: 4,
            max_fraction_of_consumer_timeout: 0.1,
            consumer_timeout_secs: 1800.0,
            default_work_per_second: 5.0e7,
        }
    }
}

impl ChunkingPolicy {
    pub fn max_chunk_seeds(&self) -> u64 {
        self.base_chunk_seeds
            .saturating_mul(self.max_factor)
            .max(self.min_chunk_seeds)
    }
}

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
    #[error("there are no seeds to sieve")]
    NoSeeds,
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
    policy: &ChunkingPolicy,
    sizing: Sizing,
) -> Result<ChunkPlan, PlanError> {
    if total_seeds == 0 {
        return Err(PlanError::NoSeeds);
    }
    let work_per_seed = work_per_seed.max(1.0);
    let slowest = classes
        .iter()
        .filter(|c| c.slots > 0 && c.work_per_second > 0.0)
        .min_by(|a, b| a.work_per_second.total_cmp(&b.work_per_second));
    let slowest_rate = slowest
        .map(|c| c.work_per_second)
        .unwrap_or(policy.default_work_per_second)
        .max(1e-9);
    let seeds_per_sec = slowest_rate / work_per_seed;
    let total_slots: u64 = classes.iter().map(|c| c.slots).sum::<u64>().max(1);
    let limit_secs = policy.max_fraction_of_consumer_timeout * policy.consumer_timeout_secs;
    let timeout_cap = ((limit_secs * seeds_per_sec).floor() as u64).max(1);
    let slowest_model = slowest.map(|c| c.model.clone());

    let (chunk, rule) = match sizing {
        Sizing::Fixed(0) => return Err(PlanError::ZeroChunkSize),
        Sizing::Fixed(n) => {
            if n > timeout_cap {
                return Err(PlanError::ChunkTooSlow {
                    chunk: n,
                    secs: n as f64 / seeds_per_sec,
                    model: slowest_model.unwrap_or_else(|| "the default rate".into()),
                    limit: limit_secs,
                    fraction: policy.max_fraction_of_consumer_timeout,
                    timeout: policy.consumer_timeout_secs,
                    max_seeds: timeout_cap,
                });
            }
            (n, "fixed --chunk-size")
        }
        Sizing::Target(target) => {
            let target = target.unwrap_or(policy.target_chunk_secs);
            if !(target.is_finite() && target > 0.0) {
                return Err(PlanError::BadTarget(target));
            }
            let ideal = (target * seeds_per_sec).floor() as u64;
            let (min, max) = (policy.min_chunk_seeds.max(1), policy.max_chunk_seeds());
            let mut chunk = ideal.clamp(min, max);
            let mut rule = if ideal < min {
                "minimum chunk"
            } else if ideal > max {
                "maximum chunk (base x factor)"
            } else {
                "target duration on the slowest class"
            };
            let wanted_chunks = policy.chunks_per_slot.max(1).saturating_mul(total_slots);
            let busy = total_seeds.div_ceil(wanted_chunks).max(min);
            if busy < chunk {
                chunk = busy;
                rule = "keep every slot busy";
            }
            if chunk > timeout_cap {
                chunk = timeout_cap;
                rule = "consumer timeout cap";
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

#[cfg(test)]
mod tests {
    use super::*;
    use seedq_core::{Direction, Family, FamilyConfig, SkipMode, Strategy, Threshold};

    fn class(model: &str, slots: u64, rate: f64) -> SlotClass {
        SlotClass {
            model: model.into(),
            slots,
            work_per_second: rate,
            source: RateSource::Profile,
        }
    }

    fn policy() -> ChunkingPolicy {
        ChunkingPolicy {
            target_chunk_secs: 10.0,
            default_work_per_second: 1e6,
            ..ChunkingPolicy::default()
        }
    }

    fn spec(k: usize, skip_min: u32, skip_max: u32, skip_mode: SkipMode) -> SieveSpec {
        SieveSpec {
            family: FamilyConfig::new(Family::Mt19937),
            draws: vec![1; k],
            modulus: 1000,
            offset: 0,
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
    fn clamped_to_the_chapters_min_and_max() {
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
        let pol = ChunkingPolicy {
            target_chunk_secs: 1e6,
            ..policy()
        };
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
}
