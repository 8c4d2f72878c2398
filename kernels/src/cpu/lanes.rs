//! The SIMD engine: `L` seeds advance in lock-step, one lane each.
//!
//! Every lane generator is written as plain loops over `[u32; L]` / `[u64; L]` arrays with
//! `#[inline(always)]` everywhere; the engine is then compiled three times, inside functions
//! carrying `#[target_feature(enable = "avx512…")]`, `"avx2"` and nothing (portable, SSE2 on
//! x86-64), and the best one the CPU supports is picked at run time with
//! `is_x86_feature_detected!`. LLVM turns the lane loops into 512- or 256-bit vector code.
//!
//! Per block of `L` seeds and per skip, the engine stops as soon as no lane can still beat its
//! best count (which starts at `need - 1`): with threshold 1.0 a block usually ends after one
//! output. Survivors carry their exact best count and smallest best skip.

// Lane loops index several same-length arrays by lane on purpose: that is the shape LLVM
// vectorises best.
#![allow(clippy::needless_range_loop)]

use super::gen::Affine;
use super::residue::{Residue32, Residue64};
use super::scalar::{Hit, PassCtx};

/// How lanes are compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimdLevel {
    /// AVX-512 F/BW/DQ/VL (runtime detected).
    Avx512,
    /// AVX2 (runtime detected).
    Avx2,
    /// The lane code compiled for the baseline target only.
    Portable,
    /// No lanes at all: the per-seed scalar evaluator.
    Scalar,
}

impl SimdLevel {
    /// The best level this CPU supports.
    pub fn detect() -> SimdLevel {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512dq")
                && is_x86_feature_detected!("avx512vl")
            {
                return SimdLevel::Avx512;
            }
            if is_x86_feature_detected!("avx2") {
                return SimdLevel::Avx2;
            }
        }
        SimdLevel::Portable
    }

    /// `self`, lowered to what the CPU supports.
    pub fn supported(self) -> SimdLevel {
        let best = SimdLevel::detect();
        let rank = |l: SimdLevel| match l {
            SimdLevel::Avx512 => 3,
            SimdLevel::Avx2 => 2,
            SimdLevel::Portable => 1,
            SimdLevel::Scalar => 0,
        };
        if rank(self) > rank(best) {
            best
        } else {
            self
        }
    }
}

/// A lane word: the type of the value the family outputs, with its vectorisable match test.
pub(crate) trait Word: Copy + Default + Send + Sync + 'static {
    type Test: Copy + Send + Sync;
    fn test(modulus: u64) -> Self::Test;
    /// The residue as a lane word, or `None` when no output of this width can have it.
    fn residue(r: u64) -> Option<Self>;
    fn count<const L: usize>(o: &[Self; L], r: Self, t: &Self::Test, cnt: &mut [u32; L]);
}

impl Word for u32 {
    type Test = Residue32;
    fn test(modulus: u64) -> Residue32 {
        Residue32::new(modulus)
    }
    fn residue(r: u64) -> Option<u32> {
        u32::try_from(r).ok()
    }
    #[inline(always)]
    fn count<const L: usize>(o: &[u32; L], r: u32, t: &Residue32, cnt: &mut [u32; L]) {
        for l in 0..L {
            cnt[l] += t.matches(o[l], r) as u32;
        }
    }
}

impl Word for u64 {
    type Test = Residue64;
    fn test(modulus: u64) -> Residue64 {
        Residue64::new(modulus)
    }
    fn residue(r: u64) -> Option<u64> {
        Some(r)
    }
    #[inline(always)]
    fn count<const L: usize>(o: &[u64; L], r: u64, t: &Residue64, cnt: &mut [u32; L]) {
        for l in 0..L {
            cnt[l] += t.matches(o[l], r) as u32;
        }
    }
}

/// `L` generators of one family in lock-step.
pub(crate) trait Lanes<const L: usize>: Clone + Send + Sync {
    type W: Word;
    type J: Copy + Send + Sync;
    /// Per block: remember the seeds (and do any per-seed work shared by every skip).
    fn prepare(&mut self, seeds: &[u64; L]);
    /// [`Lanes::prepare`] for the seeds `start..start+L` (families override it to build the
    /// lanes with vector adds instead of a round trip through a `u64` array).
    #[inline(always)]
    fn prepare_range(&mut self, start: u64) {
        let mut seeds = [0u64; L];
        for (l, s) in seeds.iter_mut().enumerate() {
            *s = start + l as u64;
        }
        self.prepare(&seeds);
    }
    /// Back to the freshly seeded state of the prepared seeds.
    fn restart(&mut self);
    fn next(&mut self) -> [Self::W; L];
    fn jump_for(&self, n: u64) -> Self::J;
    fn jump(&mut self, j: &Self::J);
}

/// The per-pass data a lane engine reads.
pub(crate) struct LaneCtx<W: Word, J> {
    window: Vec<W>,
    possible: Vec<bool>,
    test: W::Test,
    need: u32,
    skip_min: u32,
    starts: Vec<J>,
    steps: Vec<J>,
}

impl<W: Word, J: Copy> LaneCtx<W, J> {
    pub fn new<const L: usize, G: Lanes<L, W = W, J = J>>(proto: &G, ctx: &PassCtx) -> Self {
        let mut window = Vec::with_capacity(ctx.window.len());
        let mut possible = Vec::with_capacity(ctx.window.len());
        for &r in &ctx.window {
            match W::residue(r) {
                Some(w) => {
                    window.push(w);
                    possible.push(true);
                }
                None => {
                    window.push(W::default());
                    possible.push(false);
                }
            }
        }
        LaneCtx {
            window,
            possible,
            test: W::test(ctx.modulus),
            need: ctx.need,
            skip_min: ctx.skip_min,
            starts: ctx
                .skips()
                .map(|t| proto.jump_for(ctx.offset + t as u64))
                .collect(),
            steps: ctx.skips().map(|t| proto.jump_for(t as u64)).collect(),
        }
    }
}

/// Seeds of one chunk.
#[derive(Clone, Copy)]
pub(crate) enum Chunk<'a> {
    Range(u64, u64),
    List(&'a [u64]),
}

#[inline(always)]
fn run_chunk<G: Lanes<L>, const L: usize>(
    g: &mut G,
    c: &LaneCtx<G::W, G::J>,
    chunk: Chunk<'_>,
    out: &mut Vec<Hit>,
) {
    let mut seeds = [0u64; L];
    let exact = c.need as usize == c.window.len() && c.possible[0];
    match chunk {
        Chunk::Range(start, end) => {
            let mut s = start;
            while s < end {
                let valid = ((end - s) as usize).min(L);
                if valid == L {
                    g.prepare_range(s);
                    emit_prepared(g, c, exact, s, out);
                    s += L as u64;
                    continue;
                } else {
                    for (l, seed) in seeds.iter_mut().enumerate() {
                        // Padding lanes repeat the last seed; their results are dropped.
                        *seed = s + (l.min(valid - 1)) as u64;
                    }
                }
                emit(g, c, exact, &seeds, valid, out);
                s += valid as u64;
            }
        }
        Chunk::List(list) => {
            for part in list.chunks(L) {
                for (l, seed) in seeds.iter_mut().enumerate() {
                    *seed = part[l.min(part.len() - 1)];
                }
                emit(g, c, exact, &seeds, part.len(), out);
            }
        }
    }
}

// A plain function, not a closure: closures are separate functions that do not inherit the
// caller's `#[target_feature]`, and would be compiled for the baseline target.
#[inline(always)]
fn emit<G: Lanes<L>, const L: usize>(
    g: &mut G,
    c: &LaneCtx<G::W, G::J>,
    exact: bool,
    seeds: &[u64; L],
    valid: usize,
    out: &mut Vec<Hit>,
) {
    g.prepare(seeds);
    // When every draw must match, a block whose lanes all miss draw 0 at every skip is done:
    // test just that before setting up counters.
    if exact && !first_draw_matches(g, c) {
        return;
    }
    block(g, c, seeds, valid, out);
}

/// [`emit`] for a full block of consecutive seeds already prepared.
#[inline(always)]
fn emit_prepared<G: Lanes<L>, const L: usize>(
    g: &mut G,
    c: &LaneCtx<G::W, G::J>,
    exact: bool,
    start: u64,
    out: &mut Vec<Hit>,
) {
    if exact && !first_draw_matches(g, c) {
        return;
    }
    let mut seeds = [0u64; L];
    for (l, s) in seeds.iter_mut().enumerate() {
        *s = start + l as u64;
    }
    block(g, c, &seeds, L, out);
}

/// Whether any lane matches draw 0 at any skip.
#[inline(always)]
fn first_draw_matches<G: Lanes<L>, const L: usize>(g: &mut G, c: &LaneCtx<G::W, G::J>) -> bool {
    let r = c.window[0];
    for start in &c.starts {
        g.restart();
        g.jump(start);
        let o = g.next();
        let mut cnt = [0u32; L];
        G::W::count(&o, r, &c.test, &mut cnt);
        let mut any = false;
        for l in 0..L {
            any |= cnt[l] != 0;
        }
        if any {
            return true;
        }
    }
    false
}

#[inline(always)]
fn block<G: Lanes<L>, const L: usize>(
    g: &mut G,
    c: &LaneCtx<G::W, G::J>,
    seeds: &[u64; L],
    valid: usize,
    out: &mut Vec<Hit>,
) {
    let k = c.window.len() as u32;
    let mut best = [c.need - 1; L];
    let mut best_skip = [u32::MAX; L];
    for ti in 0..c.starts.len() {
        let t = c.skip_min + ti as u32;
        let mut all_maxed = true;
        for l in 0..L {
            all_maxed &= best[l] >= k;
        }
        if all_maxed {
            break;
        }
        g.restart();
        g.jump(&c.starts[ti]);
        let mut cnt = [0u32; L];
        for i in 0..k as usize {
            let o = g.next();
            if c.possible[i] {
                G::W::count(&o, c.window[i], &c.test, &mut cnt);
            }
            let rem = k - 1 - i as u32;
            let mut alive = false;
            for l in 0..L {
                alive |= cnt[l] + rem > best[l];
            }
            if !alive {
                break;
            }
            if t > 0 {
                g.jump(&c.steps[ti]);
            }
        }
        for l in 0..L {
            if cnt[l] > best[l] {
                best[l] = cnt[l];
                best_skip[l] = t;
            }
        }
    }
    // Survivors are rare: test all lanes at once before looking at any one of them.
    let mut any = false;
    for l in 0..L {
        any |= best_skip[l] != u32::MAX;
    }
    if !any {
        return;
    }
    for l in 0..valid {
        if best_skip[l] != u32::MAX {
            out.push(Hit {
                seed: seeds[l],
                matches: best[l],
                best_skip: best_skip[l],
            });
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(
    enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512cd,avx2,avx,fma,bmi1,bmi2,popcnt,lzcnt"
)]
unsafe fn run_avx512<G: Lanes<L>, const L: usize>(
    g: &mut G,
    c: &LaneCtx<G::W, G::J>,
    chunk: Chunk<'_>,
    out: &mut Vec<Hit>,
) {
    run_chunk(g, c, chunk, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,avx,fma,bmi1,bmi2,popcnt,lzcnt")]
unsafe fn run_avx2<G: Lanes<L>, const L: usize>(
    g: &mut G,
    c: &LaneCtx<G::W, G::J>,
    chunk: Chunk<'_>,
    out: &mut Vec<Hit>,
) {
    run_chunk(g, c, chunk, out)
}

#[inline(never)]
fn run_portable<G: Lanes<L>, const L: usize>(
    g: &mut G,
    c: &LaneCtx<G::W, G::J>,
    chunk: Chunk<'_>,
    out: &mut Vec<Hit>,
) {
    run_chunk(g, c, chunk, out)
}

/// Runs the lane engine over a chunk at `level` (which must be supported, see
/// [`SimdLevel::supported`]; `Scalar` is not a lane level and runs the portable code).
pub(crate) fn run<G: Lanes<L>, const L: usize>(
    level: SimdLevel,
    g: &mut G,
    c: &LaneCtx<G::W, G::J>,
    chunk: Chunk<'_>,
    out: &mut Vec<Hit>,
) {
    match level {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `level` was lowered to what `is_x86_feature_detected!` reports.
        SimdLevel::Avx512 => unsafe { run_avx512(g, c, chunk, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        SimdLevel::Avx2 => unsafe { run_avx2(g, c, chunk, out) },
        _ => run_portable(g, c, chunk, out),
    }
}

// ---------------------------------------------------------------------------------------------
// Lane generators.

macro_rules! lanes_stepping_jump {
    () => {
        type J = u64;
        fn jump_for(&self, n: u64) -> u64 {
            n
        }
        #[inline(always)]
        fn jump(&mut self, n: &u64) {
            for _ in 0..*n {
                self.step();
            }
        }
    };
}

#[derive(Clone)]
pub(crate) struct Xs32L<const L: usize> {
    seeds: [u32; L],
    x: [u32; L],
    a: u32,
    b: u32,
    c: u32,
}

impl<const L: usize> Xs32L<L> {
    pub fn new(a: u32, b: u32, c: u32) -> Self {
        Xs32L {
            seeds: [0; L],
            x: [0; L],
            a,
            b,
            c,
        }
    }
    #[inline(always)]
    fn step(&mut self) {
        for l in 0..L {
            let mut x = self.x[l];
            x ^= x << self.a;
            x ^= x >> self.b;
            x ^= x << self.c;
            self.x[l] = x;
        }
    }
}

impl<const L: usize> Lanes<L> for Xs32L<L> {
    type W = u32;
    lanes_stepping_jump!();
    #[inline(always)]
    fn prepare_range(&mut self, start: u64) {
        for l in 0..L {
            self.seeds[l] = (start as u32).wrapping_add(l as u32);
        }
    }
    #[inline(always)]
    fn prepare(&mut self, seeds: &[u64; L]) {
        for l in 0..L {
            self.seeds[l] = seeds[l] as u32;
        }
    }
    #[inline(always)]
    fn restart(&mut self) {
        self.x = self.seeds;
    }
    #[inline(always)]
    fn next(&mut self) -> [u32; L] {
        self.step();
        self.x
    }
}

#[derive(Clone)]
pub(crate) struct Xs64L<const L: usize> {
    seeds: [u64; L],
    x: [u64; L],
}

impl<const L: usize> Xs64L<L> {
    pub fn new() -> Self {
        Xs64L {
            seeds: [0; L],
            x: [0; L],
        }
    }
    #[inline(always)]
    fn step(&mut self) {
        for l in 0..L {
            let mut x = self.x[l];
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.x[l] = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
        }
    }
}

impl<const L: usize> Lanes<L> for Xs64L<L> {
    type W = u64;
    lanes_stepping_jump!();
    #[inline(always)]
    fn prepare(&mut self, seeds: &[u64; L]) {
        self.seeds = *seeds;
    }
    #[inline(always)]
    fn restart(&mut self) {
        self.x = self.seeds;
    }
    #[inline(always)]
    fn next(&mut self) -> [u64; L] {
        self.step();
        self.x
    }
}

#[derive(Clone)]
pub(crate) struct Xs128L<const L: usize> {
    seeds: [u32; L],
    x: [u32; L],
    y: [u32; L],
    z: [u32; L],
    w: [u32; L],
}

impl<const L: usize> Xs128L<L> {
    pub fn new() -> Self {
        Xs128L {
            seeds: [0; L],
            x: [0; L],
            y: [0; L],
            z: [0; L],
            w: [0; L],
        }
    }
    #[inline(always)]
    fn step(&mut self) {
        for l in 0..L {
            let t = self.x[l] ^ (self.x[l] << 11);
            self.x[l] = self.y[l];
            self.y[l] = self.z[l];
            self.z[l] = self.w[l];
            self.w[l] = self.w[l] ^ (self.w[l] >> 19) ^ (t ^ (t >> 8));
        }
    }
}

impl<const L: usize> Lanes<L> for Xs128L<L> {
    type W = u32;
    lanes_stepping_jump!();
    #[inline(always)]
    fn prepare_range(&mut self, start: u64) {
        for l in 0..L {
            self.seeds[l] = (start as u32).wrapping_add(l as u32);
        }
    }
    #[inline(always)]
    fn prepare(&mut self, seeds: &[u64; L]) {
        for l in 0..L {
            self.seeds[l] = seeds[l] as u32;
        }
    }
    #[inline(always)]
    fn restart(&mut self) {
        self.x = self.seeds;
        self.y = [362436069; L];
        self.z = [521288629; L];
        self.w = [88675123; L];
    }
    #[inline(always)]
    fn next(&mut self) -> [u32; L] {
        self.step();
        self.w
    }
}

#[derive(Clone)]
pub(crate) struct XoshiroL<const L: usize> {
    seeds: [u64; L],
    s: [[u64; L]; 4],
}

impl<const L: usize> XoshiroL<L> {
    pub fn new() -> Self {
        XoshiroL {
            seeds: [0; L],
            s: [[0; L]; 4],
        }
    }
    #[inline(always)]
    fn step(&mut self) {
        let [s0, s1, s2, s3] = &mut self.s;
        for l in 0..L {
            let t = s1[l] << 17;
            s2[l] ^= s0[l];
            s3[l] ^= s1[l];
            s1[l] ^= s2[l];
            s0[l] ^= s3[l];
            s2[l] ^= t;
            s3[l] = s3[l].rotate_left(45);
        }
    }
}

impl<const L: usize> Lanes<L> for XoshiroL<L> {
    type W = u64;
    lanes_stepping_jump!();
    #[inline(always)]
    fn prepare(&mut self, seeds: &[u64; L]) {
        self.seeds = *seeds;
    }
    #[inline(always)]
    fn restart(&mut self) {
        self.s = [
            self.seeds,
            [0x9E37_79B9_7F4A_7C15; L],
            [0x6A09_E667_F3BC_C908; L],
            [0xBB67_AE85_84CA_A73B; L],
        ];
    }
    #[inline(always)]
    fn next(&mut self) -> [u64; L] {
        let mut out = [0u64; L];
        for l in 0..L {
            out[l] = self.s[0][l]
                .wrapping_add(self.s[3][l])
                .rotate_left(23)
                .wrapping_add(self.s[0][l]);
        }
        self.step();
        out
    }
}

#[derive(Clone)]
pub(crate) struct SfcL<const L: usize> {
    seeds: [u64; L],
    a: [u64; L],
    b: [u64; L],
    c: [u64; L],
    cnt: u64,
}

impl<const L: usize> SfcL<L> {
    pub fn new() -> Self {
        SfcL {
            seeds: [0; L],
            a: [0; L],
            b: [0; L],
            c: [0; L],
            cnt: 1,
        }
    }
    #[inline(always)]
    fn step(&mut self) -> [u64; L] {
        let mut out = [0u64; L];
        for l in 0..L {
            let tmp = self.a[l].wrapping_add(self.b[l]).wrapping_add(self.cnt);
            self.a[l] = self.b[l] ^ (self.b[l] >> 11);
            self.b[l] = self.c[l].wrapping_add(self.c[l] << 3);
            self.c[l] = self.c[l].rotate_left(24).wrapping_add(tmp);
            out[l] = tmp;
        }
        self.cnt = self.cnt.wrapping_add(1);
        out
    }
}

impl<const L: usize> Lanes<L> for SfcL<L> {
    type W = u64;
    lanes_stepping_jump!();
    #[inline(always)]
    fn prepare(&mut self, seeds: &[u64; L]) {
        self.seeds = *seeds;
    }
    #[inline(always)]
    fn restart(&mut self) {
        self.a = self.seeds;
        self.b = [0x9E37_79B9_7F4A_7C15; L];
        self.c = [0x6A09_E667_F3BC_C908; L];
        self.cnt = 1;
    }
    #[inline(always)]
    fn next(&mut self) -> [u64; L] {
        self.step()
    }
}

#[derive(Clone)]
pub(crate) struct PcgL<const L: usize> {
    seeds: [u64; L],
    s: [u64; L],
    mult: u64,
    inc: u64,
}

impl<const L: usize> PcgL<L> {
    pub fn new(inc: u64, mult: u64) -> Self {
        PcgL {
            seeds: [0; L],
            s: [0; L],
            mult,
            inc,
        }
    }
}

impl<const L: usize> Lanes<L> for PcgL<L> {
    type W = u32;
    type J = Affine;
    #[inline(always)]
    fn prepare(&mut self, seeds: &[u64; L]) {
        for l in 0..L {
            self.seeds[l] = seeds[l] as u32 as u64;
        }
    }
    #[inline(always)]
    fn restart(&mut self) {
        self.s = self.seeds;
    }
    #[inline(always)]
    fn next(&mut self) -> [u32; L] {
        let mut out = [0u32; L];
        for l in 0..L {
            let old = self.s[l];
            self.s[l] = old.wrapping_mul(self.mult).wrapping_add(self.inc);
            let xs = (((old >> 18) ^ old) >> 27) as u32;
            out[l] = xs.rotate_right((old >> 59) as u32);
        }
        out
    }
    fn jump_for(&self, n: u64) -> Affine {
        let (a, c) = crate::family::affine_pow(self.mult as u128, self.inc as u128, n, 1 << 64);
        Affine {
            mul: a as u64,
            add: c as u64,
        }
    }
    #[inline(always)]
    fn jump(&mut self, j: &Affine) {
        for l in 0..L {
            self.s[l] = self.s[l].wrapping_mul(j.mul).wrapping_add(j.add);
        }
    }
}

const JAVA_MASK: u64 = (1 << 48) - 1;

#[derive(Clone)]
pub(crate) struct JavaL<const L: usize> {
    seeds: [u64; L],
    s: [u64; L],
    a: u64,
    c: u64,
}

impl<const L: usize> JavaL<L> {
    pub fn new(a: u64, c: u64) -> Self {
        JavaL {
            seeds: [0; L],
            s: [0; L],
            a,
            c,
        }
    }
}

impl<const L: usize> Lanes<L> for JavaL<L> {
    type W = u32;
    type J = Affine;
    #[inline(always)]
    fn prepare_range(&mut self, start: u64) {
        for l in 0..L {
            self.seeds[l] = start.wrapping_add(l as u64) & JAVA_MASK;
        }
    }
    #[inline(always)]
    fn prepare(&mut self, seeds: &[u64; L]) {
        for l in 0..L {
            self.seeds[l] = seeds[l] & JAVA_MASK;
        }
    }
    #[inline(always)]
    fn restart(&mut self) {
        self.s = self.seeds;
    }
    #[inline(always)]
    fn next(&mut self) -> [u32; L] {
        let mut out = [0u32; L];
        for l in 0..L {
            self.s[l] = self.s[l].wrapping_mul(self.a).wrapping_add(self.c) & JAVA_MASK;
            out[l] = (self.s[l] >> 16) as u32;
        }
        out
    }
    fn jump_for(&self, n: u64) -> Affine {
        let (a, c) = crate::family::affine_pow(self.a as u128, self.c as u128, n, 1 << 48);
        Affine {
            mul: a as u64,
            add: c as u64,
        }
    }
    #[inline(always)]
    fn jump(&mut self, j: &Affine) {
        for l in 0..L {
            self.s[l] = self.s[l].wrapping_mul(j.mul).wrapping_add(j.add) & JAVA_MASK;
        }
    }
}

/// `x mod (2^31 - 1)` for any `x`, branch-free: two folds leave a value below `2·(2^31-1)`.
#[inline(always)]
fn mod_mersenne31(x: u64) -> u32 {
    const P: u64 = 0x7FFF_FFFF;
    let x = (x & P) + (x >> 31); // < 2^31 + 2^33
    let x = (x & P) + (x >> 31); // < 2^31 + 8
    let x = x as u32;
    x.min(x.wrapping_sub(P as u32)) // x - P when x >= P
}

/// lcg32 and minstd with modulus 2^31 - 1 or 2^32 (the moduli with a vectorisable reduction).
/// `mul_only` is minstd: seeding reduces mod m and maps 0 to 1, and there is no increment.
#[derive(Clone)]
pub(crate) struct Lcg31L<const L: usize> {
    seeds: [u32; L],
    s: [u32; L],
    a: u32,
    c: u32,
    mersenne: bool,
    minstd: bool,
}

impl<const L: usize> Lcg31L<L> {
    /// `None` unless `m` is 2^31 - 1, or 2^32 for lcg32 (`m = 0`).
    pub fn new(a: u32, c: u32, m: u32, minstd: bool) -> Option<Self> {
        let mersenne = match m {
            0x7FFF_FFFF => true,
            0 if !minstd => false,
            _ => return None,
        };
        Some(Lcg31L {
            seeds: [0; L],
            s: [0; L],
            a,
            c,
            mersenne,
            minstd,
        })
    }

    #[inline(always)]
    fn affine(&mut self, mul: u64, add: u64) {
        for l in 0..L {
            let v = mul * self.s[l] as u64 + add;
            self.s[l] = if self.mersenne {
                mod_mersenne31(v)
            } else {
                v as u32
            };
        }
    }
}

impl<const L: usize> Lanes<L> for Lcg31L<L> {
    type W = u32;
    type J = Affine;
    #[inline(always)]
    fn prepare(&mut self, seeds: &[u64; L]) {
        for l in 0..L {
            let s = seeds[l] as u32;
            self.seeds[l] = if self.minstd {
                let r = s % 0x7FFF_FFFF;
                if r == 0 {
                    1
                } else {
                    r
                }
            } else {
                s
            };
        }
    }
    #[inline(always)]
    fn restart(&mut self) {
        self.s = self.seeds;
    }
    #[inline(always)]
    fn next(&mut self) -> [u32; L] {
        self.affine(self.a as u64, self.c as u64);
        self.s
    }
    fn jump_for(&self, n: u64) -> Affine {
        let m: u128 = if self.mersenne { 0x7FFF_FFFF } else { 1 << 32 };
        let (a, c) = crate::family::affine_pow(self.a as u128, self.c as u128, n, m);
        Affine {
            mul: a as u64,
            add: c as u64,
        }
    }
    #[inline(always)]
    fn jump(&mut self, j: &Affine) {
        self.affine(j.mul, j.add);
    }
}

#[derive(Clone)]
pub(crate) struct PhiloxL<const L: usize> {
    k0: [u32; L],
    k1: [u32; L],
    ctr: u64,
}

impl<const L: usize> PhiloxL<L> {
    pub fn new() -> Self {
        PhiloxL {
            k0: [0; L],
            k1: [0; L],
            ctr: 0,
        }
    }
}

impl<const L: usize> Lanes<L> for PhiloxL<L> {
    type W = u32;
    type J = u64;
    #[inline(always)]
    fn prepare(&mut self, seeds: &[u64; L]) {
        for l in 0..L {
            self.k0[l] = seeds[l] as u32;
            self.k1[l] = (seeds[l] >> 32) as u32;
        }
    }
    #[inline(always)]
    fn restart(&mut self) {
        self.ctr = 0;
    }
    #[inline(always)]
    fn next(&mut self) -> [u32; L] {
        const M0: u64 = 0xD251_1F53;
        const M1: u64 = 0xCD9E_8D57;
        let n = self.ctr;
        self.ctr = n.wrapping_add(1);
        let mut out = [0u32; L];
        for l in 0..L {
            let (mut c0, mut c1, mut c2, mut c3) = (n as u32, (n >> 32) as u32, 0u32, 0u32);
            let (mut k0, mut k1) = (self.k0[l], self.k1[l]);
            for round in 0..10 {
                if round > 0 {
                    k0 = k0.wrapping_add(0x9E37_79B9);
                    k1 = k1.wrapping_add(0xBB67_AE85);
                }
                let p0 = M0 * c0 as u64;
                let p1 = M1 * c2 as u64;
                let n0 = ((p1 >> 32) as u32) ^ c1 ^ k0;
                let n2 = ((p0 >> 32) as u32) ^ c3 ^ k1;
                c1 = p1 as u32;
                c3 = p0 as u32;
                c0 = n0;
                c2 = n2;
            }
            out[l] = c0;
        }
        out
    }
    fn jump_for(&self, n: u64) -> u64 {
        n
    }
    #[inline(always)]
    fn jump(&mut self, n: &u64) {
        self.ctr = self.ctr.wrapping_add(*n);
    }
}

/// MT19937 computing only the state words the window needs (php_mt_seed's technique): for
/// output `j <= 226` the first twist gives `mt'[j]` from `mt[j]`, `mt[j+1]` and `mt[j+397]` of
/// `init_genrand`, so a seed costs `397 + j_max` steps of the seeding recurrence instead of the
/// whole 624-word state and twist. Only built when every output the pass reads is at most 226.
#[derive(Clone)]
pub(crate) struct MtL<const L: usize> {
    /// `init_genrand` words `0..=top+1`.
    low: Vec<[u32; L]>,
    /// `init_genrand` words `397..=397+top`.
    high: Vec<[u32; L]>,
    pos: usize,
}

impl<const L: usize> MtL<L> {
    /// Highest output number the partial state can produce.
    pub const MAX_OUTPUT: u64 = 226;

    /// Lanes able to produce outputs `0..=top`.
    pub fn new(top: u64) -> Self {
        assert!(top <= Self::MAX_OUTPUT);
        let top = top as usize;
        MtL {
            low: vec![[0; L]; top + 2],
            high: vec![[0; L]; top + 1],
            pos: 0,
        }
    }
}

impl<const L: usize> Lanes<L> for MtL<L> {
    type W = u32;
    type J = u64;
    #[inline(always)]
    fn prepare(&mut self, seeds: &[u64; L]) {
        let mut x = [0u32; L];
        for l in 0..L {
            x[l] = seeds[l] as u32;
        }
        self.chain(x);
    }
    #[inline(always)]
    fn prepare_range(&mut self, start: u64) {
        let mut x = [0u32; L];
        for l in 0..L {
            x[l] = (start as u32).wrapping_add(l as u32);
        }
        self.chain(x);
    }
    #[inline(always)]
    fn restart(&mut self) {
        self.pos = 0;
    }
    #[inline(always)]
    fn next(&mut self) -> [u32; L] {
        let j = self.pos;
        self.pos += 1;
        let (a, b, h) = (&self.low[j], &self.low[j + 1], &self.high[j]);
        let mut out = [0u32; L];
        for l in 0..L {
            let y = (a[l] & 0x8000_0000) | (b[l] & 0x7FFF_FFFF);
            let v = h[l] ^ (y >> 1) ^ ((y & 1).wrapping_neg() & 0x9908_B0DF);
            out[l] = super::gen::temper(v);
        }
        out
    }
    fn jump_for(&self, n: u64) -> u64 {
        n
    }
    #[inline(always)]
    fn jump(&mut self, n: &u64) {
        self.pos += *n as usize;
    }
}

impl<const L: usize> MtL<L> {
    /// Runs `init_genrand` from the seeds in `x`, keeping the words the outputs need.
    #[inline(always)]
    fn chain(&mut self, mut x: [u32; L]) {
        #[inline(always)]
        fn step<const L: usize>(x: &mut [u32; L], i: usize) {
            for l in 0..L {
                x[l] = 1812433253u32
                    .wrapping_mul(x[l] ^ (x[l] >> 30))
                    .wrapping_add(i as u32);
            }
        }
        // Three loops rather than one with a branch: the middle one, which keeps nothing, is
        // the bulk of the work (the low words end at 228 at most, the high ones start at 397).
        let nlow = self.low.len();
        self.low[0] = x;
        for i in 1..nlow {
            step(&mut x, i);
            self.low[i] = x;
        }
        for i in nlow..397 {
            step(&mut x, i);
        }
        for (j, slot) in self.high.iter_mut().enumerate() {
            step(&mut x, 397 + j);
            *slot = x;
        }
    }
}
