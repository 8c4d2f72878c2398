//! MT19937 in lanes from a partial state (outputs up to 226 only).

use super::*;
use crate::family::constants::{MT_INIT_MULTIPLIER, MT_MATRIX_A};

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

/// One step of `init_genrand` in every lane: `x` becomes state word `i`.
#[inline(always)]
fn step<const L: usize>(x: &mut [u32; L], i: usize) {
    for l in 0..L {
        x[l] = MT_INIT_MULTIPLIER
            .wrapping_mul(x[l] ^ (x[l] >> 30))
            .wrapping_add(i as u32);
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
            let v = h[l] ^ (y >> 1) ^ ((y & 1).wrapping_neg() & MT_MATRIX_A);
            out[l] = crate::cpu::gen::temper(v);
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

/// Words of the MT19937 state.
const MT_N: usize = 624;
/// The twist's middle offset.
const MT_M: usize = 397;

/// MT19937 with its whole 624-word state per lane, for windows past output 226.
///
/// The state of a lane group (624 × `L` words: 20 KB at 8 lanes) stays in L1. A generation is
/// twisted in bulk, in the in-place twist's three dependency-free phases (words 0..227 read old
/// words 397.., words 227..623 read new words 0..396, word 623 reads new word 0), each a plain
/// loop of lane-wide operations; an output is then one load and the tempering. Output `n` is the
/// tempered word `n mod 624` of generation `n / 624 + 1`, exactly the reference's.
#[derive(Clone)]
pub(crate) struct MtFullL<const L: usize> {
    mt: Vec<[u32; L]>,
    seeds: [u32; L],
    /// Next word of the current generation to output; `MT_N`: twist first.
    pos: usize,
}

impl<const L: usize> MtFullL<L> {
    pub fn new() -> Self {
        MtFullL {
            mt: vec![[0; L]; MT_N],
            seeds: [0; L],
            pos: MT_N,
        }
    }

    /// `init_genrand` of every lane.
    #[inline(always)]
    fn seed_state(&mut self) {
        let mut x = self.seeds;
        self.mt[0] = x;
        for i in 1..MT_N {
            step(&mut x, i);
            self.mt[i] = x;
        }
        self.pos = MT_N;
    }

    /// The next generation, in place.
    #[inline(always)]
    fn twist(&mut self) {
        /// New word from old words `i` (`a`), `i + 1` (`b`) and the word 397 ahead (`h`). The
        /// low bit of `y` is `b`'s, and the sign-extending shift is how the mask vectorises.
        #[inline(always)]
        fn word<const L: usize>(a: &[u32; L], b: &[u32; L], h: &[u32; L]) -> [u32; L] {
            let mut v = [0u32; L];
            for l in 0..L {
                let y = (a[l] & 0x8000_0000) | (b[l] & 0x7FFF_FFFF);
                let mag = (((b[l] << 31) as i32) >> 31) as u32 & MT_MATRIX_A;
                v[l] = h[l] ^ (y >> 1) ^ mag;
            }
            v
        }
        let mt = &mut self.mt[..MT_N];
        // `a` carries old word `i` from the previous step, before it is overwritten.
        let mut a = mt[0];
        for i in 0..MT_N - MT_M {
            // See the second phase.
            let i = std::hint::black_box(i);
            let (b, h) = (mt[i + 1], mt[i + MT_M]);
            mt[i] = word(&a, &b, &h);
            a = b;
        }
        for i in MT_N - MT_M..MT_N - 1 {
            // `i` is opaque to the loop vectoriser: vectorising across `i` (the dependences are
            // 227 and 397 words apart) it transposes the lanes with shuffles, at three times the
            // instructions of the lane-wide code.
            let i = std::hint::black_box(i);
            let (b, h) = (mt[i + 1], mt[i - (MT_N - MT_M)]);
            mt[i] = word(&a, &b, &h);
            a = b;
        }
        let (b, h) = (mt[0], mt[MT_M - 1]);
        mt[MT_N - 1] = word(&a, &b, &h);
        self.pos = 0;
    }
}

impl<const L: usize> Lanes<L> for MtFullL<L> {
    type W = u32;
    type J = u64;
    #[inline(always)]
    fn prepare(&mut self, seeds: &[u64; L]) {
        for l in 0..L {
            self.seeds[l] = seeds[l] as u32;
        }
    }
    #[inline(always)]
    fn prepare_range(&mut self, start: u64) {
        for l in 0..L {
            self.seeds[l] = (start as u32).wrapping_add(l as u32);
        }
    }
    /// Seeds the state: the shared-stream engine restarts once per block.
    #[inline(always)]
    fn restart(&mut self) {
        self.seed_state();
    }
    #[inline(always)]
    fn next(&mut self) -> [u32; L] {
        if self.pos == MT_N {
            self.twist();
        }
        let v = self.mt[self.pos];
        self.pos += 1;
        let mut out = [0u32; L];
        for l in 0..L {
            out[l] = crate::cpu::gen::temper(v[l]);
        }
        out
    }
    fn jump_for(&self, n: u64) -> u64 {
        n
    }
    #[inline(always)]
    fn jump(&mut self, n: &u64) {
        let mut n = *n;
        while n > 0 {
            if self.pos == MT_N {
                self.twist();
            }
            let step = n.min((MT_N - self.pos) as u64);
            self.pos += step as usize;
            n -= step;
        }
    }
}
