//! The fast CPU backend: the reference's results, on every core, with SIMD and early exit.
//!
//! How a constant-skip pass is computed (all paths return exactly the reference's result, which
//! `tests/cpu_vs_reference.rs` checks for every family and option):
//!
//! * **Threads.** The seed set is cut into chunks that a private rayon pool of `threads` workers
//!   sieves in parallel; chunk results are concatenated in chunk order, so the output is sorted
//!   and identical whatever the thread count.
//! * **Shortcuts** ([`shortcut`]): exact algebra for "every draw must match" jobs on GF(2)-linear
//!   families (xorshift32, xorshift128) and java_lcg: the low bits of the outputs pin down the
//!   candidate seeds, which are then checked one by one.
//! * **LCG ranges** ([`affine`]): lcg32, minstd and java_lcg outputs are affine in the seed, so
//!   neighbouring seeds cost one add per draw.
//! * **Lanes** ([`lanes`]): every family (mt19937 with php_mt_seed's partial state while the
//!   window stays within output 226) runs 16–64 seeds per SIMD lane group, compiled for
//!   AVX-512, AVX2 and the portable baseline and chosen at run time.
//! * **Scalar** ([`scalar`]): the per-seed fallback with early exit, O(1) jumps for LCG-type
//!   families and philox, and one shared output stream per seed for the others.
//!
//! Variable skip is sequential per seed: chunks run the reference algorithm in parallel.

mod affine;
mod gen;
pub mod lanes;
mod residue;
mod scalar;
mod shortcut;

use std::sync::Arc;

use rayon::prelude::*;

use crate::family::FamilyParams;
use crate::spec::{
    Direction, PassResult, SeedSet, SieveError, SieveOutcome, SieveSpec, SkipMode, Survivor,
};
use crate::SieveBackend;

pub use lanes::SimdLevel;

use affine::{AffineFam, AffinePlan, AffineScratch, JavaAff, Lcg32Aff};
use gen::{with_gen, Gen, GenVisitor};
use lanes::{Chunk, LaneCtx, Lanes};
use residue::Residue64;
use scalar::{Hit, PassCtx, ScalarPass};

/// Sieves on all (or `threads`) CPU cores.
#[derive(Clone)]
pub struct CpuBackend {
    /// Worker threads of the backend's rayon pool.
    pub threads: usize,
    simd: SimdLevel,
    shortcuts: bool,
    pool: Arc<rayon::ThreadPool>,
}

impl std::fmt::Debug for CpuBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuBackend")
            .field("threads", &self.threads)
            .field("simd", &self.simd)
            .field("shortcuts", &self.shortcuts)
            .finish()
    }
}

impl CpuBackend {
    /// A backend with `threads` workers (0 means one per core), the best SIMD level this CPU
    /// supports and the algebraic shortcuts on.
    pub fn new(threads: usize) -> Self {
        let threads = if threads == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        } else {
            threads
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("seedq-cpu-{i}"))
            .build()
            .expect("building the CPU sieve thread pool");
        CpuBackend {
            threads,
            simd: SimdLevel::detect(),
            shortcuts: true,
            pool: Arc::new(pool),
        }
    }

    /// Caps the SIMD level (lowered to what the CPU supports); `Scalar` disables lanes entirely.
    /// Tests use it to check every code path against the reference.
    pub fn with_simd(mut self, level: SimdLevel) -> Self {
        self.simd = level.supported();
        self
    }

    /// Turns the algebraic shortcuts for "every draw must match" jobs on or off.
    pub fn with_shortcuts(mut self, on: bool) -> Self {
        self.shortcuts = on;
        self
    }

    /// The SIMD level the lanes run at.
    pub fn simd(&self) -> SimdLevel {
        self.simd
    }
}

impl SieveBackend for CpuBackend {
    fn describe(&self) -> String {
        format!("cpu({} threads, {:?})", self.threads, self.simd)
    }

    fn sieve(&self, spec: &SieveSpec, seeds: &SeedSet) -> Result<SieveOutcome, SieveError> {
        spec.validate()?;
        spec.validate_seeds(seeds)?;
        let seeds_tested = seeds.len();
        let seeds = match seeds {
            SeedSet::Range { start, end } => Seeds::Range(*start, *end),
            SeedSet::List(list) => {
                let mut sorted = list.clone();
                sorted.sort_unstable();
                sorted.dedup();
                Seeds::List(sorted)
            }
        };
        let survivors = self.pool.install(|| match &spec.skip_mode {
            SkipMode::Variable { .. } => variable_skip(spec, &seeds),
            SkipMode::Constant => self.constant_skip(spec, &seeds),
        });
        Ok(SieveOutcome {
            survivors,
            seeds_tested,
        })
    }
}

/// A validated seed set: a range, or a sorted list without duplicates.
enum Seeds {
    Range(u64, u64),
    List(Vec<u64>),
}

impl Seeds {
    fn len(&self) -> u64 {
        match self {
            Seeds::Range(s, e) => e - s,
            Seeds::List(l) => l.len() as u64,
        }
    }

    /// Chunk number `index` when cut into chunks of `size` seeds.
    fn chunk(&self, index: u64, size: u64) -> Chunk<'_> {
        match self {
            Seeds::Range(s, e) => {
                let a = s + index * size;
                Chunk::Range(a, a + (e - a).min(size))
            }
            Seeds::List(l) => {
                let a = (index * size) as usize;
                Chunk::List(&l[a..(a + size as usize).min(l.len())])
            }
        }
    }
}

fn chunk_seeds(chunk: Chunk<'_>) -> Box<dyn Iterator<Item = u64> + '_> {
    match chunk {
        Chunk::Range(a, b) => Box::new(a..b),
        Chunk::List(l) => Box::new(l.iter().copied()),
    }
}

/// Variable skip: the reference algorithm, chunks in parallel.
fn variable_skip(spec: &SieveSpec, seeds: &Seeds) -> Vec<Survivor> {
    const SIZE: u64 = 256;
    ordered_chunks(
        seeds.len().div_ceil(SIZE),
        || (),
        |_, ci| {
            let set = match seeds.chunk(ci, SIZE) {
                Chunk::Range(a, b) => SeedSet::Range { start: a, end: b },
                Chunk::List(l) => SeedSet::List(l.to_vec()),
            };
            crate::reference::sieve(spec, &set).survivors
        },
    )
}

/// Runs `work` on chunks `0..nchunks` in parallel and concatenates the results in chunk order.
/// Chunks go in waves so that a huge seed range never holds more than a wave of per-chunk
/// result vectors at once.
fn ordered_chunks<S: Send, T: Send>(
    nchunks: u64,
    init: impl Fn() -> S + Sync + Send,
    work: impl Fn(&mut S, u64) -> Vec<T> + Sync + Send,
) -> Vec<T> {
    const WAVE: u64 = 1 << 14;
    let mut out = Vec::new();
    let mut first = 0;
    while first < nchunks {
        let last = (first + WAVE).min(nchunks);
        let parts: Vec<Vec<T>> = (first..last)
            .into_par_iter()
            .map_init(&init, &work)
            .collect();
        for part in parts {
            out.extend(part);
        }
        first = last;
    }
    out
}

fn pass_result(hit: &Hit, k: u32, ranged: bool) -> PassResult {
    PassResult {
        matches: hit.matches,
        total: k,
        best_skip: Some(hit.best_skip),
        best_offset: ranged.then_some(hit.best_offset),
        strategy: None,
        skip_pattern: None,
    }
}

impl CpuBackend {
    fn constant_skip(&self, spec: &SieveSpec, seeds: &Seeds) -> Vec<Survivor> {
        let k = spec.k() as u32;
        let ranged = spec.offset_max.is_some();
        let pass_result = |h: &Hit| pass_result(h, k, ranged);
        match spec.direction {
            Direction::Forward => self
                .pass(spec, false, seeds)
                .iter()
                .map(|h| Survivor {
                    seed: h.seed,
                    forward: Some(pass_result(h)),
                    reverse: None,
                })
                .collect(),
            Direction::Reverse => self
                .pass(spec, true, seeds)
                .iter()
                .map(|h| Survivor {
                    seed: h.seed,
                    forward: None,
                    reverse: Some(pass_result(h)),
                })
                .collect(),
            Direction::Bidirectional => {
                let forward = self.pass(spec, false, seeds);
                if forward.is_empty() {
                    return Vec::new();
                }
                let again = Seeds::List(forward.iter().map(|h| h.seed).collect());
                let reverse = self.pass(spec, true, &again);
                let mut out = Vec::with_capacity(reverse.len());
                let mut f = forward.iter().peekable();
                for r in &reverse {
                    while f.peek().is_some_and(|h| h.seed < r.seed) {
                        f.next();
                    }
                    let fh = f.next().expect("reverse survivors are forward survivors");
                    out.push(Survivor {
                        seed: r.seed,
                        forward: Some(pass_result(fh)),
                        reverse: Some(pass_result(r)),
                    });
                }
                out
            }
        }
    }

    /// One constant-skip pass: the exact survivors, sorted by seed.
    fn pass(&self, spec: &SieveSpec, reverse: bool, seeds: &Seeds) -> Vec<Hit> {
        let ctx = PassCtx {
            window: spec.window(reverse),
            modulus: spec.modulus,
            test: Residue64::new(spec.modulus),
            need: spec.min_matches(reverse),
            skip_min: spec.skip_min,
            skip_max: spec.skip_max,
            offset: spec.offset,
            offset_max: spec.last_offset(),
        };
        if ctx.offset_max > ctx.offset {
            if self.simd != SimdLevel::Scalar {
                if let Some(hits) = self.shared_pass(spec, &ctx, seeds) {
                    return hits;
                }
            }
            return self.pass_per_offset(spec, reverse, seeds);
        }
        let mut hits = self.single_offset_pass(spec, &ctx, reverse, seeds);
        for h in &mut hits {
            h.best_offset = spec.offset;
        }
        hits
    }

    /// An offset range one offset at a time (when the shared-stream engine cannot take it: the
    /// scalar level, or a plan too large to hold), keeping per seed the best, earliest offset.
    fn pass_per_offset(&self, spec: &SieveSpec, reverse: bool, seeds: &Seeds) -> Vec<Hit> {
        let mut best: std::collections::BTreeMap<u64, Hit> = Default::default();
        for offset in spec.offsets() {
            let one = SieveSpec {
                offset,
                offset_max: None,
                ..spec.clone()
            };
            for h in self.pass(&one, reverse, seeds) {
                let e = best.entry(h.seed).or_insert(h);
                if h.matches > e.matches {
                    *e = h;
                }
            }
        }
        best.into_values().collect()
    }

    /// A pass at the one offset `ctx.offset`.
    fn single_offset_pass(
        &self,
        spec: &SieveSpec,
        ctx: &PassCtx,
        reverse: bool,
        seeds: &Seeds,
    ) -> Vec<Hit> {
        if self.shortcuts {
            if let Seeds::Range(start, end) = *seeds {
                if let Some(candidates) = shortcut::candidates(spec, ctx, reverse, start, end) {
                    let list = Seeds::List(candidates);
                    return with_gen(&spec.family, ScalarVisitor { ctx, seeds: &list });
                }
            }
        }
        if self.simd != SimdLevel::Scalar {
            if let Some(hits) = self.fast_pass(spec, ctx, seeds) {
                return hits;
            }
        }
        with_gen(&spec.family, ScalarVisitor { ctx, seeds })
    }

    /// The SIMD engines at one offset, or `None` when none applies to this family and job.
    fn fast_pass(&self, spec: &SieveSpec, ctx: &PassCtx, seeds: &Seeds) -> Option<Vec<Hit>> {
        let nskips = (ctx.skip_max - ctx.skip_min) as u64 + 1;
        let level = self.simd;
        if let Seeds::Range(start, end) = *seeds {
            if nskips * ctx.k() as u64 <= AffinePlan::<JavaAff>::MAX_ENTRIES {
                match spec.family.params() {
                    FamilyParams::Lcg32 { a, c, m } => {
                        let fam = Lcg32Aff {
                            a,
                            c,
                            m: gen::lcg32_modulus(m),
                        };
                        let proto = gen::Lcg { s: 0, a, c, m };
                        return Some(affine_pass(level, fam, proto, ctx, start, end, None));
                    }
                    FamilyParams::Minstd { a, m } if m >= 1 << 16 => {
                        let fam = Lcg32Aff {
                            a,
                            c: 0,
                            m: m as u64,
                        };
                        let fix = gen::Minstd { s: 1, a, m };
                        return Some(affine_pass(
                            level,
                            fam,
                            fix,
                            ctx,
                            start,
                            end,
                            Some(m as u64),
                        ));
                    }
                    FamilyParams::JavaLcg { a, c } => {
                        let proto = gen::Java { s: 0, a, c };
                        return Some(affine_pass(
                            level,
                            JavaAff { a, c },
                            proto,
                            ctx,
                            start,
                            end,
                            None,
                        ));
                    }
                    _ => {}
                }
            }
        }
        if nskips > 1 << 16 {
            return None;
        }
        // Stepping families and philox share one stream between skips; the LCG-type families
        // jump per draw, which costs the same per skip and exits earlier.
        let top = spec.max_output_index();
        let stepping = !matches!(
            spec.family.params(),
            FamilyParams::Pcg32 { .. }
                | FamilyParams::JavaLcg { .. }
                | FamilyParams::Lcg32 { .. }
                | FamilyParams::Minstd { .. }
        );
        if stepping && (nskips > 1 || top > lanes::MtL::<64>::MAX_OUTPUT as u128) {
            if let Some(hits) = self.shared_pass(spec, ctx, seeds) {
                return Some(hits);
            }
        }
        match spec.family.params() {
            FamilyParams::Xorshift32 { a, b, c } => Some(lane_pass::<_, 32>(
                level,
                lanes::Xs32L::new(a, b, c),
                ctx,
                seeds,
            )),
            FamilyParams::Xorshift64 => {
                Some(lane_pass::<_, 16>(level, lanes::Xs64L::new(), ctx, seeds))
            }
            FamilyParams::Xorshift128 => {
                Some(lane_pass::<_, 32>(level, lanes::Xs128L::new(), ctx, seeds))
            }
            FamilyParams::Xoshiro256pp => Some(lane_pass::<_, 16>(
                level,
                lanes::XoshiroL::new(),
                ctx,
                seeds,
            )),
            FamilyParams::Sfc64 => Some(lane_pass::<_, 16>(level, lanes::SfcL::new(), ctx, seeds)),
            FamilyParams::Pcg32 { inc, mult } => Some(lane_pass::<_, 16>(
                level,
                lanes::PcgL::new(inc, mult),
                ctx,
                seeds,
            )),
            FamilyParams::JavaLcg { a, c } => Some(lane_pass::<_, 16>(
                level,
                lanes::JavaL::new(a, c),
                ctx,
                seeds,
            )),
            FamilyParams::Philox4x32 => {
                Some(lane_pass::<_, 16>(level, lanes::PhiloxL::new(), ctx, seeds))
            }
            FamilyParams::Lcg32 { a, c, m } => {
                lanes::Lcg31L::new(a, c, m, false).map(|g| lane_pass::<_, 16>(level, g, ctx, seeds))
            }
            FamilyParams::Minstd { a, m } => {
                lanes::Lcg31L::new(a, 0, m, true).map(|g| lane_pass::<_, 16>(level, g, ctx, seeds))
            }
            FamilyParams::Mt19937 if top <= lanes::MtL::<64>::MAX_OUTPUT as u128 => Some(
                lane_pass::<_, 64>(level, lanes::MtL::new(top as u64), ctx, seeds),
            ),
            FamilyParams::Mt19937 => None,
        }
    }

    /// The shared-stream engine (one stream per seed for every skip and offset of the pass), or
    /// `None` when no lane generator serves the family or its plan is too large.
    fn shared_pass(&self, spec: &SieveSpec, ctx: &PassCtx, seeds: &Seeds) -> Option<Vec<Hit>> {
        let level = self.simd;
        let top = spec.max_output_index();
        match spec.family.params() {
            FamilyParams::Xorshift32 { a, b, c } => {
                shared_lanes::<_, 32>(level, lanes::Xs32L::new(a, b, c), ctx, seeds)
            }
            FamilyParams::Xorshift64 => {
                shared_lanes::<_, 16>(level, lanes::Xs64L::new(), ctx, seeds)
            }
            FamilyParams::Xorshift128 => {
                shared_lanes::<_, 32>(level, lanes::Xs128L::new(), ctx, seeds)
            }
            FamilyParams::Xoshiro256pp => {
                shared_lanes::<_, 16>(level, lanes::XoshiroL::new(), ctx, seeds)
            }
            FamilyParams::Sfc64 => shared_lanes::<_, 16>(level, lanes::SfcL::new(), ctx, seeds),
            FamilyParams::Philox4x32 => {
                shared_lanes::<_, 16>(level, lanes::PhiloxL::new(), ctx, seeds)
            }
            FamilyParams::Pcg32 { inc, mult } => {
                shared_lanes::<_, 16>(level, lanes::PcgL::new(inc, mult), ctx, seeds)
            }
            FamilyParams::JavaLcg { a, c } => {
                shared_lanes::<_, 16>(level, lanes::JavaL::new(a, c), ctx, seeds)
            }
            FamilyParams::Lcg32 { a, c, m } => lanes::Lcg31L::new(a, c, m, false)
                .and_then(|g| shared_lanes::<_, 16>(level, g, ctx, seeds)),
            FamilyParams::Minstd { a, m } => lanes::Lcg31L::new(a, 0, m, true)
                .and_then(|g| shared_lanes::<_, 16>(level, g, ctx, seeds)),
            FamilyParams::Mt19937 if top <= lanes::MtL::<64>::MAX_OUTPUT as u128 => {
                shared_lanes::<_, 64>(level, lanes::MtL::new(top as u64), ctx, seeds)
            }
            // The full state is 624 words per lane: 8 lanes (20 KB) stay in L1 beside the plan.
            FamilyParams::Mt19937 => shared_lanes::<_, 8>(level, lanes::MtFullL::new(), ctx, seeds),
        }
    }
}

/// Seeds per parallel chunk of a lane engine: about 16 chunks per thread, whole lane groups.
fn lane_chunk_size<const L: usize>(seeds: &Seeds) -> u64 {
    (seeds.len() / (rayon::current_num_threads() as u64 * 16))
        .clamp(L as u64, 1 << 16)
        .next_multiple_of(L as u64)
}

/// The shared-stream engine over a seed set, in parallel, or `None` when the plan is too large.
fn shared_lanes<G: Lanes<L>, const L: usize>(
    level: SimdLevel,
    proto: G,
    ctx: &PassCtx,
    seeds: &Seeds,
) -> Option<Vec<Hit>> {
    let plan = lanes::SharedCtx::new(&proto, ctx)?;
    let size = lane_chunk_size::<L>(seeds);
    Some(ordered_chunks(
        seeds.len().div_ceil(size),
        || (proto.clone(), plan.rows::<L>()),
        |(g, cnt), ci| {
            let mut out = Vec::new();
            lanes::run_shared(level, g, &plan, cnt, seeds.chunk(ci, size), &mut out);
            out
        },
    ))
}

fn lane_pass<G: Lanes<L>, const L: usize>(
    level: SimdLevel,
    proto: G,
    ctx: &PassCtx,
    seeds: &Seeds,
) -> Vec<Hit> {
    let lctx = LaneCtx::new(&proto, ctx);
    let size = lane_chunk_size::<L>(seeds);
    ordered_chunks(
        seeds.len().div_ceil(size),
        || proto.clone(),
        |g, ci| {
            let mut out = Vec::new();
            lanes::run(level, g, &lctx, seeds.chunk(ci, size), &mut out);
            out
        },
    )
}

/// The affine engine over `start..end`. `proto` is the family's scalar generator, used to
/// evaluate exactly the candidates of "every draw must match" jobs and, for minstd (`minstd_m`),
/// the seeds that seeding maps to state 1.
fn affine_pass<F: AffineFam, G: Gen>(
    level: SimdLevel,
    fam: F,
    proto: G,
    ctx: &PassCtx,
    start: u64,
    end: u64,
    minstd_m: Option<u64>,
) -> Vec<Hit> {
    let plan = AffinePlan::new(fam, ctx);
    let chunk = (affine::CHUNK_BLOCKS * 16) as u64;
    let nchunks = (end - start).div_ceil(chunk);
    let scalar = ScalarPass::new(proto, ctx);
    let exact = ctx.need == ctx.k();
    let fixer = minstd_m.map(|m| (m, &scalar));
    ordered_chunks(nchunks, AffineScratch::new, |scratch, ci| {
        let a = start + ci * chunk;
        let len = (end - a).min(chunk);
        let mut out = Vec::new();
        if exact {
            // Every draw must match: draw 0 alone leaves about one seed in a thousand,
            // and those few are evaluated exactly, one by one.
            let mut candidates = Vec::new();
            affine::run_first_draw(level, &plan, a, len as usize, &mut candidates);
            let mut stream = Vec::new();
            out.extend(
                candidates
                    .into_iter()
                    .filter_map(|s| scalar.eval(s, &mut stream)),
            );
        } else {
            affine::run_chunk(level, &plan, a, len as usize, scratch, &mut out);
        }
        if let Some((m, pass)) = &fixer {
            // Seeds ≡ 0 (mod m) start from state 1, not 0: redo them exactly.
            let mut s = a.div_ceil(*m) * m;
            while s < a + len {
                out.retain(|h| h.seed != s);
                if let Some(h) = pass.eval(s, &mut Vec::new()) {
                    let at = out.partition_point(|x| x.seed < s);
                    out.insert(at, h);
                }
                s += m;
            }
        }
        out
    })
}

/// The per-seed scalar evaluator over a seed set, in parallel.
struct ScalarVisitor<'a> {
    ctx: &'a PassCtx,
    seeds: &'a Seeds,
}

impl GenVisitor for ScalarVisitor<'_> {
    type Out = Vec<Hit>;
    fn visit<G: Gen + 'static>(self, proto: G) -> Vec<Hit> {
        let pass = ScalarPass::new(proto, self.ctx);
        let size =
            (self.seeds.len() / (rayon::current_num_threads() as u64 * 16)).clamp(1, 1 << 14);
        ordered_chunks(
            self.seeds.len().div_ceil(size),
            || (),
            |_, ci| {
                let mut out = Vec::new();
                pass.eval_all(chunk_seeds(self.seeds.chunk(ci, size)), &mut out);
                out
            },
        )
    }
}
