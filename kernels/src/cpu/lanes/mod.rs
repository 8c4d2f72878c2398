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
//!
//! Modules: [`engine`] (the per-skip block loop and its three compilations), [`shared`] (the
//! shared-stream block loop: one stream per seed for every skip and offset), then the lane
//! generators by kind: [`stepping`] (xorshift32/64/128, xoshiro256++, sfc64), [`lcg`] (pcg32,
//! java_lcg, lcg32/minstd), [`philox`] and [`mt`] (mt19937's partial and full state).

// Lane loops index several same-length arrays by lane on purpose: that is the shape LLVM
// vectorises best.
#![allow(clippy::needless_range_loop)]

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
    offset: u64,
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
            offset: ctx.offset,
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

mod engine;
mod lcg;
mod mt;
mod philox;
mod shared;
mod stepping;

pub(crate) use engine::run;
pub(crate) use lcg::{JavaL, Lcg31L, PcgL};
pub(crate) use mt::{MtFullL, MtL};
pub(crate) use philox::PhiloxL;
pub(crate) use shared::{run_shared, SharedCtx};
pub(crate) use stepping::{SfcL, XoshiroL, Xs128L, Xs32L, Xs64L};
