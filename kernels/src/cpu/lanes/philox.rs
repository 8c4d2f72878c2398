//! Philox4x32-10 in lanes: counter-based, so a jump is an addition.

use super::*;
use crate::family::constants::{PHILOX_MULTIPLIERS, PHILOX_WEYL};

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
        let [m0, m1] = PHILOX_MULTIPLIERS.map(u64::from);
        let n = self.ctr;
        self.ctr = n.wrapping_add(1);
        let mut out = [0u32; L];
        for l in 0..L {
            let (mut c0, mut c1, mut c2, mut c3) = (n as u32, (n >> 32) as u32, 0u32, 0u32);
            let (mut k0, mut k1) = (self.k0[l], self.k1[l]);
            for round in 0..10 {
                if round > 0 {
                    k0 = k0.wrapping_add(PHILOX_WEYL[0]);
                    k1 = k1.wrapping_add(PHILOX_WEYL[1]);
                }
                let p0 = m0 * c0 as u64;
                let p1 = m1 * c2 as u64;
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
