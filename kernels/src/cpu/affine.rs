//! The LCG engine for seed ranges: every output is affine in the seed.
//!
//! For lcg32, minstd and java_lcg, output number `n` of the generator seeded with `seed` is
//! `f(A_n·seed + C_n mod M)` (`f` is the identity, or `>> 16` for java_lcg's 48-bit state). So
//! along a range of seeds the value for seed `s+16` is the value for `s` plus `16·A_n mod M`:
//! one add and one conditional subtract per (seed, skip, draw), no multiply at all. The engine
//! walks draw-major over a chunk of 16-seed blocks (the per-block match counters stay in L1),
//! with coefficients `(A_n, C_n)` precomputed once per job for every `(skip, draw)`.
//!
//! minstd maps seeds `≡ 0 (mod m)` to state 1 instead of 0, so those (at most three per 2^32
//! seeds for m = 2^31-1) are re-evaluated by the scalar evaluator afterwards.

// Lane loops index several same-length arrays by lane on purpose: that is the shape LLVM
// vectorises best.
#![allow(clippy::needless_range_loop)]

use super::lanes::SimdLevel;
use super::residue::Residue32;
use super::scalar::{Hit, PassCtx};
use crate::family::affine_pow;

const LANES: usize = 16;
/// Blocks of 16 seeds per chunk: 4096 seeds, 16 KiB of counters.
pub(crate) const CHUNK_BLOCKS: usize = 256;
/// Draw groups between two "is any seed of the chunk still able to survive" checks.
const UNROLL: usize = 4;

/// One LCG-type family seen as an affine map of the seed.
pub(crate) trait AffineFam: Copy + Send + Sync + 'static {
    type S: Copy + Default + Send + Sync + 'static;
    /// `(A, C)` with state after `n` steps `= A·seed + C (mod M)`.
    fn coef(&self, n: u64) -> (Self::S, Self::S);
    /// `(A, C)` then `j` more steps.
    fn then(&self, ac: (Self::S, Self::S), j: (Self::S, Self::S)) -> (Self::S, Self::S);
    fn eval(&self, ac: (Self::S, Self::S), seed: u64) -> Self::S;
    /// The comparison threshold that makes [`AffineFam::add`] a modular addition of `d`.
    fn add_thr(&self, d: Self::S) -> Self::S;
    fn add(&self, v: Self::S, d: Self::S, thr: Self::S) -> Self::S;
    /// `n·a mod M`, for small `n`.
    fn times(&self, a: Self::S, n: u32) -> Self::S;
    fn out(v: Self::S) -> u32;
    /// The largest output value.
    fn max_out(&self) -> u64;

    /// The innermost loop: `UNROLL` draws, all possible, over every block of the chunk.
    /// `AVX512` is true only when called from the AVX-512 compilation of the engine, where a
    /// family may use a hand-written kernel.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn group_blocks<const SHIFTED: bool, const AVX512: bool>(
        &self,
        test: &Residue32,
        cnt: &mut [[u32; LANES]],
        v: &mut [[Self::S; LANES]; UNROLL],
        d: &[Self::S; UNROLL],
        thr: &[Self::S; UNROLL],
        r: &[u32; UNROLL],
        rs: &[u32; UNROLL],
    ) {
        for c in cnt.iter_mut() {
            let mut m = [0u32; LANES];
            for (u, vu) in v.iter_mut().enumerate() {
                for l in 0..LANES {
                    m[l] += hit::<SHIFTED>(test, Self::out(vu[l]), r[u], rs[u]) as u32;
                    vu[l] = self.add(vu[l], d[u], thr[u]);
                }
            }
            for l in 0..LANES {
                c[l] += m[l];
            }
        }
    }
}

/// lcg32 (any modulus) and minstd: 32-bit state, `M <= 2^32`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lcg32Aff {
    pub a: u32,
    pub c: u32,
    /// 1..=2^32.
    pub m: u64,
}

impl AffineFam for Lcg32Aff {
    type S = u32;
    fn coef(&self, n: u64) -> (u32, u32) {
        let (a, c) = affine_pow(self.a as u128, self.c as u128, n, self.m as u128);
        (a as u32, c as u32)
    }
    fn then(&self, (a, c): (u32, u32), (ja, jc): (u32, u32)) -> (u32, u32) {
        let m = self.m as u128;
        (
            (ja as u128 * a as u128 % m) as u32,
            ((ja as u128 * c as u128 + jc as u128) % m) as u32,
        )
    }
    #[inline(always)]
    fn eval(&self, (a, c): (u32, u32), seed: u64) -> u32 {
        ((a as u64 * (seed as u32) as u64 + c as u64) % self.m) as u32
    }
    #[inline(always)]
    fn add_thr(&self, d: u32) -> u32 {
        // v + d >= M  <=>  v >= M - d. With M = 2^32 the wrap is the reduction itself.
        u32::try_from(self.m - d as u64).unwrap_or(u32::MAX)
    }
    #[inline(always)]
    fn add(&self, v: u32, d: u32, thr: u32) -> u32 {
        let s = v.wrapping_add(d);
        if v >= thr {
            s.wrapping_sub(self.m as u32)
        } else {
            s
        }
    }
    fn times(&self, a: u32, n: u32) -> u32 {
        (a as u64 * n as u64 % self.m) as u32
    }
    #[inline(always)]
    fn out(v: u32) -> u32 {
        v
    }
    fn max_out(&self) -> u64 {
        self.m - 1
    }

    #[inline(always)]
    fn group_blocks<const SHIFTED: bool, const AVX512: bool>(
        &self,
        test: &Residue32,
        cnt: &mut [[u32; LANES]],
        v: &mut [[u32; LANES]; UNROLL],
        d: &[u32; UNROLL],
        thr: &[u32; UNROLL],
        r: &[u32; UNROLL],
        rs: &[u32; UNROLL],
    ) {
        #[cfg(target_arch = "x86_64")]
        if AVX512 {
            // SAFETY: AVX512 is only set by `chunk_avx512`, which runs after runtime detection.
            unsafe { lcg32_group_avx512::<SHIFTED>(self.m as u32, test, cnt, v, d, thr, r, rs) };
            return;
        }
        for c in cnt.iter_mut() {
            let mut m = [0u32; LANES];
            for (u, vu) in v.iter_mut().enumerate() {
                for l in 0..LANES {
                    m[l] += hit::<SHIFTED>(test, vu[l], r[u], rs[u]) as u32;
                    vu[l] = self.add(vu[l], d[u], thr[u]);
                }
            }
            for l in 0..LANES {
                c[l] += m[l];
            }
        }
    }
}

/// [`Lcg32Aff::group_blocks`] by hand: LLVM's auto-vectoriser sometimes vectorises this loop
/// across draws (with gathers) instead of across seeds, so the hot loop of `s128` is written
/// with intrinsics. Per block and draw: add, compare, masked subtract (the modular step), and
/// add-or-subtract, multiply, rotate, one or two compares and a masked increment (the test).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn lcg32_group_avx512<const SHIFTED: bool>(
    m: u32,
    test: &Residue32,
    cnt: &mut [[u32; LANES]],
    v: &mut [[u32; LANES]; UNROLL],
    d: &[u32; UNROLL],
    thr: &[u32; UNROLL],
    r: &[u32; UNROLL],
    rs: &[u32; UNROLL],
) {
    use std::arch::x86_64::*;
    let m = _mm512_set1_epi32(m as i32);
    let inv = _mm512_set1_epi32(test.inv as i32);
    let rot = _mm512_set1_epi32(test.rot as i32);
    let lim = _mm512_set1_epi32(test.lim as i32);
    let minus_one = _mm512_set1_epi32(-1);
    let mut vv = [_mm512_setzero_si512(); UNROLL];
    let mut dd = [_mm512_setzero_si512(); UNROLL];
    let mut tt = [_mm512_setzero_si512(); UNROLL];
    let mut rr = [_mm512_setzero_si512(); UNROLL];
    for u in 0..UNROLL {
        vv[u] = _mm512_loadu_si512(v[u].as_ptr() as *const __m512i);
        dd[u] = _mm512_set1_epi32(d[u] as i32);
        tt[u] = _mm512_set1_epi32(thr[u] as i32);
        rr[u] = _mm512_set1_epi32(if SHIFTED { rs[u] } else { r[u] } as i32);
    }
    for c in cnt.iter_mut() {
        let mut acc = _mm512_loadu_si512(c.as_ptr() as *const __m512i);
        for u in 0..UNROLL {
            let o = vv[u];
            let y = if SHIFTED {
                _mm512_add_epi32(o, rr[u])
            } else {
                _mm512_sub_epi32(o, rr[u])
            };
            let y = _mm512_rorv_epi32(_mm512_mullo_epi32(y, inv), rot);
            let mut k = _mm512_cmple_epu32_mask(y, lim);
            if !SHIFTED {
                k &= _mm512_cmpge_epu32_mask(o, rr[u]);
            }
            acc = _mm512_mask_sub_epi32(acc, k, acc, minus_one);
            let wrap = _mm512_cmpge_epu32_mask(o, tt[u]);
            let next = _mm512_add_epi32(o, dd[u]);
            vv[u] = _mm512_mask_sub_epi32(next, wrap, next, m);
        }
        _mm512_storeu_si512(c.as_mut_ptr() as *mut __m512i, acc);
    }
    for u in 0..UNROLL {
        _mm512_storeu_si512(v[u].as_mut_ptr() as *mut __m512i, vv[u]);
    }
}

use crate::family::constants::JAVA_MASK;

/// java_lcg: 48-bit state, output `state >> 16`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct JavaAff {
    pub a: u64,
    pub c: u64,
}

impl AffineFam for JavaAff {
    type S = u64;
    fn coef(&self, n: u64) -> (u64, u64) {
        let (a, c) = affine_pow(self.a as u128, self.c as u128, n, 1 << 48);
        (a as u64, c as u64)
    }
    fn then(&self, (a, c): (u64, u64), (ja, jc): (u64, u64)) -> (u64, u64) {
        (
            ja.wrapping_mul(a) & JAVA_MASK,
            ja.wrapping_mul(c).wrapping_add(jc) & JAVA_MASK,
        )
    }
    #[inline(always)]
    fn eval(&self, (a, c): (u64, u64), seed: u64) -> u64 {
        a.wrapping_mul(seed).wrapping_add(c) & JAVA_MASK
    }
    #[inline(always)]
    fn add_thr(&self, _d: u64) -> u64 {
        0
    }
    #[inline(always)]
    fn add(&self, v: u64, d: u64, _thr: u64) -> u64 {
        v.wrapping_add(d) & JAVA_MASK
    }
    fn times(&self, a: u64, n: u32) -> u64 {
        a.wrapping_mul(n as u64) & JAVA_MASK
    }
    #[inline(always)]
    fn out(v: u64) -> u32 {
        (v >> 16) as u32
    }
    fn max_out(&self) -> u64 {
        u32::MAX as u64
    }
}

/// `(A, C)` of one output: the state is `A·seed + C (mod M)`.
type Coef<F> = (<F as AffineFam>::S, <F as AffineFam>::S);

/// Per-job tables: for every skip, the coefficients of each draw's output.
pub(crate) struct AffinePlan<F: AffineFam> {
    fam: F,
    test: Residue32,
    /// Per skip (`t - skip_min`), per draw: `(A, C)`, or `None` when the draw's residue cannot
    /// be produced by a 32-bit output.
    coefs: Vec<Vec<Option<Coef<F>>>>,
    window: Vec<u32>,
    /// Per draw, `M - r`: see [`AffinePlan::shifted`].
    shifted_window: Vec<u32>,
    /// Whether `out + M` always fits in 32 bits. Then `out ≡ r (mod M)` is "`out + (M - r)` is
    /// a multiple of `M`", which saves the `out >= r` compare in the innermost loop.
    shifted: bool,
    need: u32,
    k: u32,
    skip_min: u32,
}

impl<F: AffineFam> AffinePlan<F> {
    /// Entries beyond which the tables are not worth it (the caller uses another engine).
    pub const MAX_ENTRIES: u64 = 1 << 22;

    pub fn new(fam: F, ctx: &PassCtx) -> Self {
        let mut coefs = Vec::new();
        for t in ctx.skips() {
            let jump = fam.coef(t as u64 + 1);
            let mut ac = fam.coef(ctx.offset + t as u64 + 1);
            let mut row = Vec::with_capacity(ctx.window.len());
            for &r in &ctx.window {
                row.push(u32::try_from(r).ok().map(|_| ac));
                ac = fam.then(ac, jump);
            }
            coefs.push(row);
        }
        AffinePlan {
            fam,
            test: Residue32::new(ctx.modulus),
            coefs,
            window: ctx.window.iter().map(|&r| r as u32).collect(),
            shifted_window: ctx
                .window
                .iter()
                .map(|&r| ctx.modulus.wrapping_sub(r) as u32)
                .collect(),
            shifted: fam.max_out() + ctx.modulus <= u32::MAX as u64,
            need: ctx.need,
            k: ctx.k(),
            skip_min: ctx.skip_min,
        }
    }
}

/// Scratch for one chunk, reused between chunks of a thread.
pub(crate) struct AffineScratch {
    cnt: Vec<[u32; LANES]>,
    best: Vec<[u32; LANES]>,
    best_skip: Vec<[u32; LANES]>,
}

impl AffineScratch {
    pub fn new() -> Self {
        AffineScratch {
            cnt: Vec::new(),
            best: Vec::new(),
            best_skip: Vec::new(),
        }
    }
}

#[inline(always)]
fn lanes_start<F: AffineFam>(fam: &F, ac: (F::S, F::S), start: u64) -> ([F::S; LANES], F::S, F::S) {
    let mut v = [F::S::default(); LANES];
    let mut x = fam.eval(ac, start);
    let a = ac.0;
    let a_thr = fam.add_thr(a);
    for lane in v.iter_mut() {
        *lane = x;
        x = fam.add(x, a, a_thr);
    }
    let d = fam.times(a, LANES as u32);
    (v, d, fam.add_thr(d))
}

#[inline(always)]
fn chunk_body<F: AffineFam, const SHIFTED: bool, const AVX512: bool>(
    plan: &AffinePlan<F>,
    start: u64,
    len: usize,
    s: &mut AffineScratch,
    out: &mut Vec<Hit>,
) {
    let fam = &plan.fam;
    let nb = len.div_ceil(LANES);
    let k = plan.k;
    s.cnt.clear();
    s.cnt.resize(nb, [0; LANES]);
    s.best.clear();
    s.best.resize(nb, [plan.need - 1; LANES]);
    s.best_skip.clear();
    s.best_skip.resize(nb, [u32::MAX; LANES]);
    for (ti, row) in plan.coefs.iter().enumerate() {
        let t = plan.skip_min + ti as u32;
        if s.best.iter().all(|b| b.iter().all(|&x| x >= k)) {
            break;
        }
        for c in s.cnt.iter_mut() {
            *c = [0; LANES];
        }
        let mut i = 0usize;
        while i < k as usize {
            // When every draw must match, nearly every seed is out after draw 0 or 1: check
            // after each draw instead of after a group.
            let group = if plan.need == k {
                1
            } else {
                (k as usize - i).min(UNROLL)
            };
            if group == UNROLL {
                let mut v = [[F::S::default(); LANES]; UNROLL];
                let mut d = [F::S::default(); UNROLL];
                let mut thr = [F::S::default(); UNROLL];
                let mut r = [0u32; UNROLL];
                let mut rs = [0u32; UNROLL];
                let mut live = [false; UNROLL];
                for u in 0..UNROLL {
                    if let Some(ac) = row[i + u] {
                        (v[u], d[u], thr[u]) = lanes_start(fam, ac, start);
                        r[u] = plan.window[i + u];
                        rs[u] = plan.shifted_window[i + u];
                        live[u] = true;
                    }
                }
                if live.iter().all(|&x| x) {
                    fam.group_blocks::<SHIFTED, AVX512>(
                        &plan.test, &mut s.cnt, &mut v, &d, &thr, &r, &rs,
                    );
                } else {
                    for u in 0..UNROLL {
                        if live[u] {
                            one_draw::<F, SHIFTED>(plan, &mut s.cnt, v[u], d[u], thr[u], i + u);
                        }
                    }
                }
            } else {
                for u in 0..group {
                    if let Some(ac) = row[i + u] {
                        let (v, d, thr) = lanes_start(fam, ac, start);
                        one_draw::<F, SHIFTED>(plan, &mut s.cnt, v, d, thr, i + u);
                    }
                }
            }
            i += group;
            let rem = k - i as u32;
            let alive = s
                .cnt
                .iter()
                .zip(s.best.iter())
                .any(|(c, b)| (0..LANES).fold(false, |a, l| a | (c[l] + rem > b[l])));
            if !alive {
                break;
            }
        }
        for (c, (b, bs)) in s
            .cnt
            .iter()
            .zip(s.best.iter_mut().zip(s.best_skip.iter_mut()))
        {
            for l in 0..LANES {
                if c[l] > b[l] {
                    b[l] = c[l];
                    bs[l] = t;
                }
            }
        }
    }
    for (blk, (b, bs)) in s.best.iter().zip(s.best_skip.iter()).enumerate() {
        for l in 0..LANES {
            let idx = blk * LANES + l;
            if idx < len && bs[l] != u32::MAX {
                out.push(Hit {
                    seed: start + idx as u64,
                    matches: b[l],
                    best_skip: bs[l],
                    // The affine engine runs one offset: the pass sets it.
                    best_offset: 0,
                });
            }
        }
    }
}

/// `o ≡ r (mod M)`; with `SHIFTED` (see [`AffinePlan::shifted`]) from `rs = M - r`.
#[inline(always)]
fn hit<const SHIFTED: bool>(test: &Residue32, o: u32, r: u32, rs: u32) -> bool {
    if SHIFTED {
        o.wrapping_add(rs)
            .wrapping_mul(test.inv)
            .rotate_right(test.rot)
            <= test.lim
    } else {
        test.matches(o, r)
    }
}

#[inline(always)]
fn one_draw<F: AffineFam, const SHIFTED: bool>(
    plan: &AffinePlan<F>,
    cnt: &mut [[u32; LANES]],
    mut v: [F::S; LANES],
    d: F::S,
    thr: F::S,
    draw: usize,
) {
    let (r, rs) = (plan.window[draw], plan.shifted_window[draw]);
    for c in cnt.iter_mut() {
        for l in 0..LANES {
            c[l] += hit::<SHIFTED>(&plan.test, F::out(v[l]), r, rs) as u32;
            v[l] = plan.fam.add(v[l], d, thr);
        }
    }
}

/// The seeds of `start..start+len` whose output matches draw 0 at some skip, sorted: a superset
/// of the survivors when every draw must match.
#[inline(always)]
fn first_draw_body<F: AffineFam>(plan: &AffinePlan<F>, start: u64, len: usize, out: &mut Vec<u64>) {
    let fam = &plan.fam;
    let nb = len.div_ceil(LANES);
    let before = out.len();
    for row in &plan.coefs {
        let Some(ac) = row[0] else { continue };
        let r = plan.window[0];
        let (mut v, d, thr) = lanes_start(fam, ac, start);
        for b in 0..nb {
            // u32 flags and a separate OR-reduction: the shape LLVM turns into vector compares.
            let mut hits = [0u32; LANES];
            for l in 0..LANES {
                hits[l] = plan.test.matches(F::out(v[l]), r) as u32;
                v[l] = fam.add(v[l], d, thr);
            }
            let mut any = 0u32;
            for l in 0..LANES {
                any |= hits[l];
            }
            if any != 0 {
                for (l, &h) in hits.iter().enumerate() {
                    let idx = b * LANES + l;
                    if h != 0 && idx < len {
                        out.push(start + idx as u64);
                    }
                }
            }
        }
    }
    if plan.coefs.len() > 1 {
        out[before..].sort_unstable();
        let mut kept = before;
        for i in before..out.len() {
            if kept == before || out[kept - 1] != out[i] {
                out[kept] = out[i];
                kept += 1;
            }
        }
        out.truncate(kept);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(
    enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512cd,avx2,avx,fma,bmi1,bmi2,popcnt,lzcnt"
)]
unsafe fn first_draw_avx512<F: AffineFam>(
    plan: &AffinePlan<F>,
    start: u64,
    len: usize,
    out: &mut Vec<u64>,
) {
    first_draw_body(plan, start, len, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,avx,fma,bmi1,bmi2,popcnt,lzcnt")]
unsafe fn first_draw_avx2<F: AffineFam>(
    plan: &AffinePlan<F>,
    start: u64,
    len: usize,
    out: &mut Vec<u64>,
) {
    first_draw_body(plan, start, len, out)
}

#[inline(never)]
fn first_draw_portable<F: AffineFam>(
    plan: &AffinePlan<F>,
    start: u64,
    len: usize,
    out: &mut Vec<u64>,
) {
    first_draw_body(plan, start, len, out)
}

/// Appends the seeds of `start..start+len` that match draw 0 at some skip, sorted.
pub(crate) fn run_first_draw<F: AffineFam>(
    level: SimdLevel,
    plan: &AffinePlan<F>,
    start: u64,
    len: usize,
    out: &mut Vec<u64>,
) {
    match level {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `level` was lowered to what `is_x86_feature_detected!` reports.
        SimdLevel::Avx512 => unsafe { first_draw_avx512(plan, start, len, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        SimdLevel::Avx2 => unsafe { first_draw_avx2(plan, start, len, out) },
        _ => first_draw_portable(plan, start, len, out),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(
    enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512cd,avx2,avx,fma,bmi1,bmi2,popcnt,lzcnt"
)]
unsafe fn chunk_avx512<F: AffineFam>(
    plan: &AffinePlan<F>,
    start: u64,
    len: usize,
    s: &mut AffineScratch,
    out: &mut Vec<Hit>,
) {
    const AVX512: bool = true;
    if plan.shifted {
        chunk_body::<F, true, AVX512>(plan, start, len, s, out)
    } else {
        chunk_body::<F, false, AVX512>(plan, start, len, s, out)
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,avx,fma,bmi1,bmi2,popcnt,lzcnt")]
unsafe fn chunk_avx2<F: AffineFam>(
    plan: &AffinePlan<F>,
    start: u64,
    len: usize,
    s: &mut AffineScratch,
    out: &mut Vec<Hit>,
) {
    // The shifted test only pays with the hand-written kernel: LLVM vectorises its portable
    // form across draws rather than seeds.
    chunk_body::<F, false, false>(plan, start, len, s, out)
}

#[inline(never)]
fn chunk_portable<F: AffineFam>(
    plan: &AffinePlan<F>,
    start: u64,
    len: usize,
    s: &mut AffineScratch,
    out: &mut Vec<Hit>,
) {
    // The shifted test only pays with the hand-written kernel: LLVM vectorises its portable
    // form across draws rather than seeds.
    chunk_body::<F, false, false>(plan, start, len, s, out)
}

/// Survivors among seeds `start..start+len` (`len <= CHUNK_BLOCKS * 16` is not required, but
/// keeps the counters in L1), in seed order.
pub(crate) fn run_chunk<F: AffineFam>(
    level: SimdLevel,
    plan: &AffinePlan<F>,
    start: u64,
    len: usize,
    s: &mut AffineScratch,
    out: &mut Vec<Hit>,
) {
    match level {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `level` was lowered to what `is_x86_feature_detected!` reports.
        SimdLevel::Avx512 => unsafe { chunk_avx512(plan, start, len, s, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        SimdLevel::Avx2 => unsafe { chunk_avx2(plan, start, len, s, out) },
        _ => chunk_portable(plan, start, len, s, out),
    }
}
