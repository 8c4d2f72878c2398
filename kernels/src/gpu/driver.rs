//! The host side every kernel backend shares: splitting a seed set into launches, survivor
//! buffer overflow handling, the pass sequence (forward, reverse, bidirectional), and the
//! completion of survivors with the reference's per-seed evaluation.
//!
//! A backend (CUDA, HIP, the host shim) only implements [`Launcher::launch`]: run one kernel
//! launch over a seed range or a candidate list and return the survivor count and seeds. What
//! a launch uploads, allocates and passes to the kernel is described once, by [`LaunchLayout`],
//! so the backends differ only in how they move memory and start the kernel.

use rayon::prelude::*;

use crate::gpu::linear;
use crate::gpu::params::{
    kernel_takes_offset_ranges, PassPlan, SeedqParams, FLAG_VARIABLE, MT_WORDS,
};

/// Placeholder landings for launches that do not read them (just the sentinel), so the
/// address in the parameters is valid everywhere.
const NO_LANDINGS: &[u64] = &[0, u64::MAX];
use crate::reference;
use crate::spec::{Direction, SeedSet, SieveError, SieveOutcome, SieveSpec, Survivor};

/// The seeds of one launch.
#[derive(Debug, Clone, Copy)]
pub enum LaunchSeeds<'a> {
    /// `count` consecutive seeds from `start` (computed from the thread index on the device).
    Range { start: u64, count: u64 },
    /// Explicit candidates (uploaded).
    List(&'a [u64]),
}

impl LaunchSeeds<'_> {
    pub fn len(&self) -> u64 {
        match self {
            LaunchSeeds::Range { count, .. } => *count,
            LaunchSeeds::List(list) => list.len() as u64,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What one launch found.
#[derive(Debug, Clone, Default)]
pub struct LaunchResult {
    /// Every survivor the kernel counted, including those that did not fit the buffer.
    pub count: u64,
    /// The first `min(count, capacity)` survivors, in no particular order.
    pub seeds: Vec<u64>,
}

/// One kernel launch on some device.
pub trait Launcher {
    /// Upper bound on seeds per launch (bounds list uploads and survivor memory).
    fn max_seeds_per_launch(&self) -> u64;
    /// Draw evaluations (seed x skip x draw) one launch may do, so a launch stays short (well
    /// under a second: display watchdogs, drain on SIGTERM) whatever the job's cost per seed.
    fn evaluations_per_launch(&self) -> u64 {
        u64::MAX
    }
    /// Survivor slots a launch starts with; an overflowing launch is re-run with exactly the
    /// number of slots it reported.
    fn initial_capacity(&self) -> u64;
    /// Runs `plan` over `seeds` with a survivor buffer of `capacity` slots.
    fn launch(
        &self,
        plan: &PassPlan,
        seeds: LaunchSeeds<'_>,
        capacity: u64,
    ) -> Result<LaunchResult, SieveError>;
}

/// Threads per block on a device: must equal `__launch_bounds__(256)` in gpu/seedq_compat.h,
/// which lets the compiler budget registers for exactly this block size.
pub const DEVICE_BLOCK: u32 = 256;
/// Resident blocks per SM (CUDA) or CU (ROCm) a device grid is sized for; the grid-stride loop
/// covers seeds beyond the grid, so more blocks would only add scheduling overhead.
const BLOCKS_PER_COMPUTE_UNIT: u32 = 8;
/// Threads of a full-state MT19937 launch: each holds [`MT_WORDS`] words of scratch (160 MiB in
/// all), which bounds the grid far below what the device could run.
pub const MT_FULL_THREADS: u32 = 1 << 16;

/// Blocks of [`DEVICE_BLOCK`] threads for a device launch over `seeds` seeds: one seed per
/// thread per round of the grid-stride loop (the mt19937 stream kernel's warps take 32 seeds at
/// a time, one after another), at most enough blocks to fill `compute_units`, and fewer for the
/// full-state kernel, whose per-thread scratch holds a state for the whole launch.
pub fn device_grid(plan: &PassPlan, seeds: u64, compute_units: u32) -> u32 {
    let needed = seeds.div_ceil(DEVICE_BLOCK as u64).min(u32::MAX as u64) as u32;
    let cap = if plan.state_in_scratch() {
        MT_FULL_THREADS / DEVICE_BLOCK
    } else {
        compute_units.saturating_mul(BLOCKS_PER_COMPUTE_UNIT)
    };
    needed.clamp(1, cap.max(1))
}

/// Placeholder strategies for constant-skip passes: the kernel never reads them, but a real
/// buffer keeps every address in the parameters valid on every runtime.
const NO_STRATEGIES: &[u32] = &[0, 0];

/// Addresses of one launch's buffers: device addresses, or host addresses for the shim.
#[derive(Debug, Clone, Copy, Default)]
pub struct BufferAddresses {
    pub window: u64,
    pub strategies: u64,
    /// The uploaded candidates of a list launch; 0 for a range launch (the kernel tells the
    /// two apart by it).
    pub seed_list: u64,
    /// The shared-stream landings (see [`LaunchLayout::landings`]).
    pub landings: u64,
    pub out_seeds: u64,
    pub out_count: u64,
    /// The MT19937 scratch (never read when [`LaunchLayout::scratch_words`] is 0).
    pub scratch: u64,
}

/// One launch as every backend prepares it: what to upload, what to allocate, the kernel
/// parameters once the buffers have addresses, and how much of the survivor buffer to read.
#[derive(Debug, Clone, Copy)]
pub struct LaunchLayout<'a> {
    plan: &'a PassPlan,
    seeds: LaunchSeeds<'a>,
    capacity: u64,
    threads: u64,
}

impl<'a> LaunchLayout<'a> {
    /// A launch of `plan` over `seeds` with `capacity` survivor slots on a grid of `threads`.
    pub fn new(
        plan: &'a PassPlan,
        seeds: LaunchSeeds<'a>,
        capacity: u64,
        threads: u64,
    ) -> LaunchLayout<'a> {
        LaunchLayout {
            plan,
            seeds,
            capacity,
            threads,
        }
    }

    /// The window to upload (`k` draws in pass order).
    pub fn window(&self) -> &'a [u64] {
        &self.plan.window
    }

    /// The strategies to upload (never empty).
    pub fn strategies(&self) -> &'a [u32] {
        if self.plan.strategies.is_empty() {
            NO_STRATEGIES
        } else {
            &self.plan.strategies
        }
    }

    /// The landings to upload (never empty: the sentinel alone when the kernel reads none).
    pub fn landings(&self) -> &'a [u64] {
        if self.plan.landings.is_empty() {
            NO_LANDINGS
        } else {
            &self.plan.landings
        }
    }

    /// The candidates to upload, for a list launch.
    pub fn seed_list(&self) -> Option<&'a [u64]> {
        match self.seeds {
            LaunchSeeds::List(list) => Some(list),
            LaunchSeeds::Range { .. } => None,
        }
    }

    /// Survivor slots to allocate: the capacity, at least one so the buffer exists.
    pub fn out_slots(&self) -> usize {
        self.capacity.max(1) as usize
    }

    /// `u32` words of MT19937 scratch to allocate ([`MT_WORDS`] per thread), 0 when the pass
    /// needs none.
    pub fn scratch_words(&self) -> usize {
        if self.plan.needs_scratch() {
            (MT_WORDS * self.threads) as usize
        } else {
            0
        }
    }

    /// The kernel's parameters: the plan's template with the seeds, the buffers and the
    /// capacity filled in.
    pub fn params(&self, at: &BufferAddresses) -> SeedqParams {
        let mut params = self.plan.params;
        params.window = at.window;
        params.strategies = at.strategies;
        params.landings = at.landings;
        params.out_seeds = at.out_seeds;
        params.out_count = at.out_count;
        params.out_cap = self.capacity;
        params.scratch = at.scratch;
        params.scratch_threads = self.threads;
        params.n_seeds = self.seeds.len();
        match self.seeds {
            LaunchSeeds::Range { start, .. } => params.seed_start = start,
            LaunchSeeds::List(_) => params.seed_list = at.seed_list,
        }
        params
    }

    /// Survivors the kernel stored, given the count it reported: the count may exceed the
    /// buffer (an overflow, which [`Launcher`]'s caller re-runs), the stored ones never do.
    pub fn survivors_stored(&self, count: u64) -> usize {
        count.min(self.capacity) as usize
    }
}

/// Runs a whole sieve job on `launcher`: the same contract as [`crate::reference::sieve`].
pub fn sieve(
    launcher: &dyn Launcher,
    spec: &SieveSpec,
    seeds: &SeedSet,
) -> Result<SieveOutcome, SieveError> {
    spec.validate()?;
    spec.validate_seeds(seeds)?;
    let survivors = match spec.direction {
        Direction::Forward => run_pass(launcher, spec, false, seeds)?,
        Direction::Reverse => run_pass(launcher, spec, true, seeds)?,
        Direction::Bidirectional => {
            let forward = run_pass(launcher, spec, false, seeds)?;
            if forward.is_empty() {
                forward
            } else {
                // The reverse pass runs on forward survivors only, as a candidate list.
                run_pass(launcher, spec, true, &SeedSet::List(forward))?
            }
        }
    };
    Ok(SieveOutcome {
        survivors: complete(spec, &survivors)?,
        seeds_tested: seeds.len(),
    })
}

/// One pass over `seeds`: the sorted, deduplicated seeds that reach the pass's threshold.
pub fn run_pass(
    launcher: &dyn Launcher,
    spec: &SieveSpec,
    reverse: bool,
    seeds: &SeedSet,
) -> Result<Vec<u64>, SieveError> {
    if spec.offset_max.is_some_and(|m| m > spec.offset) && !kernel_takes_offset_ranges(spec) {
        // A seed survives an offset range when it survives at one of its offsets; `complete`
        // then finds its best (offset, skip) on the host. One launch series per offset: exact,
        // and each offset's launches run the shared-stream kernels. (The mt19937 stream kernel
        // takes the range whole: each of its launches counts up to MT_GROUP_PAIRS (offset,
        // skip) pairs in one walk of each seed's stream.)
        let mut survivors = Vec::new();
        for offset in spec.offsets() {
            let one = SieveSpec {
                offset,
                offset_max: None,
                ..spec.clone()
            };
            survivors.extend(run_pass(launcher, &one, reverse, seeds)?);
        }
        survivors.sort_unstable();
        survivors.dedup();
        return Ok(survivors);
    }
    // Exact searches of GF(2)-linear families: solve for the few candidates instead of trying
    // every seed (the kernel then verifies them).
    let prefiltered = linear::candidates(spec, reverse, seeds);
    let seeds = prefiltered.as_ref().unwrap_or(seeds);
    let mut survivors = Vec::new();
    // A seed passes when it passes in any of the pass's skip groups.
    for plan in PassPlan::for_pass(spec, reverse) {
        run_plan(launcher, &plan, seeds, &mut survivors)?;
    }
    survivors.sort_unstable();
    survivors.dedup();
    Ok(survivors)
}

/// Every launch of one plan over `seeds`, survivors appended to `survivors`.
fn run_plan(
    launcher: &dyn Launcher,
    plan: &PassPlan,
    seeds: &SeedSet,
    survivors: &mut Vec<u64>,
) -> Result<(), SieveError> {
    let per_launch = seeds_per_launch(plan, launcher.evaluations_per_launch())
        .min(launcher.max_seeds_per_launch())
        .max(1);
    match seeds {
        SeedSet::Range { start, end } => {
            let mut at = *start;
            while at < *end {
                let count = (*end - at).min(per_launch);
                survivors.extend(launch_exact(
                    launcher,
                    plan,
                    LaunchSeeds::Range { start: at, count },
                )?);
                at += count;
            }
        }
        SeedSet::List(list) => {
            for chunk in list.chunks(per_launch.min(usize::MAX as u64) as usize) {
                survivors.extend(launch_exact(launcher, plan, LaunchSeeds::List(chunk))?);
            }
        }
    }
    Ok(())
}

/// Seeds a launch may take for `plan` within `budget` draw evaluations, from a worst-case cost
/// per seed (constant skip: skips x k; shared stream: the stream's k x (skip_max+1) outputs;
/// for mt19937 its outputs from the group's first offset to its last draw, counted twice (the
/// twist, temper and reduction cost about two draw tests), plus its landings and the 624-word
/// seeding; variable skip: about 8 outputs per draw per strategy; full-state mt19937 pays 624
/// words of seeding per skip on top).
pub fn seeds_per_launch(plan: &PassPlan, budget: u64) -> u64 {
    let p = &plan.params;
    let k = (p.k as u64).max(1);
    if plan.shared_stream() {
        let outputs = k.saturating_mul(p.skip_max as u64 + 1);
        let per_seed = if plan.mt_stream() {
            let span = p.offset_last - p.offset;
            outputs
                .saturating_add(span)
                .saturating_mul(2)
                .saturating_add(plan.landings.len() as u64)
                .saturating_add(MT_WORDS)
        } else {
            outputs.saturating_add(k.saturating_mul((p.skip_max - p.skip_min) as u64 + 1))
        };
        return (budget / per_seed.max(1)).max(1 << 12);
    }
    let mut per_seed = if p.flags & FLAG_VARIABLE != 0 {
        k.saturating_mul(8)
            .saturating_mul(p.n_strategies.max(1) as u64)
    } else {
        k.saturating_mul(p.skip_max as u64 - p.skip_min as u64 + 1)
    };
    if plan.needs_scratch() {
        per_seed = per_seed.saturating_add(1248 * (p.skip_max as u64 - p.skip_min as u64 + 1));
    }
    (budget / per_seed.max(1)).max(1 << 12)
}

/// One launch, re-run with a buffer of the exact size when the survivors did not fit.
fn launch_exact(
    launcher: &dyn Launcher,
    plan: &PassPlan,
    seeds: LaunchSeeds<'_>,
) -> Result<Vec<u64>, SieveError> {
    if seeds.is_empty() {
        return Ok(Vec::new());
    }
    let capacity = launcher.initial_capacity().min(seeds.len());
    let first = launcher.launch(plan, seeds, capacity)?;
    if first.count <= capacity {
        return Ok(first.seeds);
    }
    tracing::debug!(
        survivors = first.count,
        capacity,
        "survivor buffer overflowed; re-running the launch with an exact-size buffer"
    );
    let again = launcher.launch(plan, seeds, first.count)?;
    if again.count != first.count || again.seeds.len() as u64 != again.count {
        return Err(SieveError::Backend(format!(
            "kernel counted {} survivors, then {} ({} returned) on the same seeds: the device is not deterministic",
            first.count,
            again.count,
            again.seeds.len()
        )));
    }
    Ok(again.seeds)
}

/// The full survivor records (best skip, strategy, skip pattern, both passes) from the
/// reference's per-seed evaluation. Every kernel survivor must be confirmed: a seed the
/// reference rejects means the kernel and the reference disagree, which is an error.
pub fn complete(spec: &SieveSpec, seeds: &[u64]) -> Result<Vec<Survivor>, SieveError> {
    let one = |&seed: &u64| {
        reference::evaluate_seed(spec, seed).ok_or_else(|| {
            SieveError::Backend(format!(
                "kernel reported seed {seed} as a survivor but the reference rejects it ({} {:?}): kernel bug",
                spec.family.family(), spec.direction
            ))
        })
    };
    // Few survivors (the usual case) are not worth waking a thread pool for.
    if seeds.len() < 256 {
        seeds.iter().map(one).collect()
    } else {
        seeds.par_iter().map(one).collect()
    }
}
