//! Lane generators of the affine families, whose jumps are one multiply-add: pcg32, java_lcg,
//! and lcg32/minstd with the moduli that reduce without division.

use super::*;
use crate::cpu::gen::Affine;
use crate::family::constants::JAVA_MASK;

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
