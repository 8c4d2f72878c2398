//! Lane generators of the stepping families (no cheap jump): xorshift32, xorshift64,
//! xorshift128, xoshiro256++ and sfc64.

use super::*;
use crate::family::constants::{
    SFC64_SEEDING, XORSHIFT128_SEEDING, XORSHIFT64_MULTIPLIER, XOSHIRO256PP_SEEDING,
};

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
            self.x[l] = x.wrapping_mul(XORSHIFT64_MULTIPLIER);
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
        let [y, z, w] = XORSHIFT128_SEEDING;
        self.y = [y; L];
        self.z = [z; L];
        self.w = [w; L];
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
            [XOSHIRO256PP_SEEDING[0]; L],
            [XOSHIRO256PP_SEEDING[1]; L],
            [XOSHIRO256PP_SEEDING[2]; L],
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
        self.b = [SFC64_SEEDING[0]; L];
        self.c = [SFC64_SEEDING[1]; L];
        self.cnt = 1;
    }
    #[inline(always)]
    fn next(&mut self) -> [u64; L] {
        self.step()
    }
}
