//! Monomorphic scalar generators for the CPU backend.
//!
//! [`crate::family::Generator`] is the definition; it dispatches on the family at every output.
//! The sieve's hot loops want one concrete type per family instead, plus precomputed jumps for the
//! LCG-type families (an `n`-output jump is one multiply-add once its coefficients are known).
//! Every type here is checked against `Generator` by the unit tests below and, through the whole
//! sieve, by `tests/cpu_vs_reference.rs`.

use crate::family::{
    affine_pow, mt_temper, pcg32_xsh_rr, philox4x32_10, xorshift32_step, xorshift64_step,
    FamilyConfig, FamilyParams, Mt19937,
};

use crate::family::constants::{
    JAVA_MASK, SFC64_SEEDING, XORSHIFT128_SEEDING, XOSHIRO256PP_SEEDING,
};

/// A seeded generator state of one family, with its parameters inside.
pub(crate) trait Gen: Clone + Send + Sync {
    /// A precomputed jump over a fixed number of outputs.
    type J: Copy + Send + Sync;
    /// Whether [`Gen::jump`] is O(1) (LCG-type families, philox) rather than stepping.
    const JUMPABLE: bool;
    /// A fresh generator seeded with `seed`, with the parameters of `self`.
    fn reseed(&self, seed: u64) -> Self;
    /// The next output at the family's own width.
    fn next(&mut self) -> u64;
    /// The jump over `n` outputs.
    fn jump_for(&self, n: u64) -> Self::J;
    fn jump(&mut self, j: &Self::J);
}

/// Receives the concrete generator type of a family (see [`with_gen`]).
pub(crate) trait GenVisitor {
    type Out;
    fn visit<G: Gen + 'static>(self, proto: G) -> Self::Out;
}

/// Calls `v` with a prototype generator (seeded with 0) of `cfg`'s concrete type.
pub(crate) fn with_gen<V: GenVisitor>(cfg: &FamilyConfig, v: V) -> V::Out {
    match cfg.params() {
        FamilyParams::Xorshift32 { a, b, c } => v.visit(Xs32 { x: 0, a, b, c }),
        FamilyParams::Xorshift64 => v.visit(Xs64 { x: 0 }),
        FamilyParams::Xorshift128 => v.visit(Xs128::new(0)),
        FamilyParams::Pcg32 { inc, mult } => v.visit(Pcg {
            state: 0,
            mult,
            inc,
        }),
        FamilyParams::Lcg32 { a, c, m } => v.visit(Lcg { s: 0, a, c, m }),
        FamilyParams::JavaLcg { a, c } => v.visit(Java { s: 0, a, c }),
        FamilyParams::Minstd { a, m } => v.visit(Minstd { s: 1, a, m }),
        FamilyParams::Mt19937 => v.visit(Mt(Box::new(Mt19937::new(0)))),
        FamilyParams::Xoshiro256pp => v.visit(Xoshiro::new(0)),
        FamilyParams::Philox4x32 => v.visit(Philox {
            key: [0, 0],
            ctr: 0,
        }),
        FamilyParams::Sfc64 => v.visit(Sfc::new(0)),
    }
}

/// `x -> mul*x + add` modulo the generator's modulus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Affine {
    pub mul: u64,
    pub add: u64,
}

#[derive(Clone, Debug)]
pub(crate) struct Xs32 {
    pub x: u32,
    pub a: u32,
    pub b: u32,
    pub c: u32,
}

impl Gen for Xs32 {
    type J = u64;
    const JUMPABLE: bool = false;
    fn reseed(&self, seed: u64) -> Self {
        Xs32 {
            x: seed as u32,
            ..*self
        }
    }
    #[inline(always)]
    fn next(&mut self) -> u64 {
        self.x = xorshift32_step(self.x, self.a, self.b, self.c);
        self.x as u64
    }
    fn jump_for(&self, n: u64) -> u64 {
        n
    }
    #[inline(always)]
    fn jump(&mut self, n: &u64) {
        for _ in 0..*n {
            self.x = xorshift32_step(self.x, self.a, self.b, self.c);
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Xs64 {
    pub x: u64,
}

impl Gen for Xs64 {
    type J = u64;
    const JUMPABLE: bool = false;
    fn reseed(&self, seed: u64) -> Self {
        Xs64 { x: seed }
    }
    #[inline(always)]
    fn next(&mut self) -> u64 {
        self.x = xorshift64_step(self.x);
        self.x
    }
    fn jump_for(&self, n: u64) -> u64 {
        n
    }
    #[inline(always)]
    fn jump(&mut self, n: &u64) {
        for _ in 0..*n {
            self.x = xorshift64_step(self.x);
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Xs128 {
    x: u32,
    y: u32,
    z: u32,
    w: u32,
}

impl Xs128 {
    fn new(seed: u64) -> Self {
        Xs128 {
            x: seed as u32,
            y: XORSHIFT128_SEEDING[0],
            z: XORSHIFT128_SEEDING[1],
            w: XORSHIFT128_SEEDING[2],
        }
    }
}

impl Gen for Xs128 {
    type J = u64;
    const JUMPABLE: bool = false;
    fn reseed(&self, seed: u64) -> Self {
        Xs128::new(seed)
    }
    #[inline(always)]
    fn next(&mut self) -> u64 {
        let t = self.x ^ (self.x << 11);
        self.x = self.y;
        self.y = self.z;
        self.z = self.w;
        self.w = self.w ^ (self.w >> 19) ^ (t ^ (t >> 8));
        self.w as u64
    }
    fn jump_for(&self, n: u64) -> u64 {
        n
    }
    #[inline(always)]
    fn jump(&mut self, n: &u64) {
        for _ in 0..*n {
            self.next();
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Pcg {
    pub state: u64,
    pub mult: u64,
    pub inc: u64,
}

impl Gen for Pcg {
    type J = Affine;
    const JUMPABLE: bool = true;
    fn reseed(&self, seed: u64) -> Self {
        Pcg {
            state: seed as u32 as u64,
            ..*self
        }
    }
    #[inline(always)]
    fn next(&mut self) -> u64 {
        let old = self.state;
        self.state = old.wrapping_mul(self.mult).wrapping_add(self.inc);
        pcg32_xsh_rr(old) as u64
    }
    fn jump_for(&self, n: u64) -> Affine {
        let (a, c) = affine_pow(self.mult as u128, self.inc as u128, n, 1 << 64);
        Affine {
            mul: a as u64,
            add: c as u64,
        }
    }
    #[inline(always)]
    fn jump(&mut self, j: &Affine) {
        self.state = self.state.wrapping_mul(j.mul).wrapping_add(j.add);
    }
}

/// `m` as a 64-bit modulus (`m = 0` means 2^32).
#[inline(always)]
pub(crate) fn lcg32_modulus(m: u32) -> u64 {
    if m == 0 {
        1 << 32
    } else {
        m as u64
    }
}

/// `v mod m` (`m = 0` meaning 2^32), without a division for the usual 2^31 - 1.
#[inline(always)]
fn reduce32(v: u64, m: u32) -> u32 {
    match m {
        0 => v as u32,
        0x7FFF_FFFF => {
            const P: u64 = 0x7FFF_FFFF;
            let x = (v & P) + (v >> 31);
            let x = ((x & P) + (x >> 31)) as u32;
            x.min(x.wrapping_sub(P as u32))
        }
        _ => (v % m as u64) as u32,
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Lcg {
    pub s: u32,
    pub a: u32,
    pub c: u32,
    pub m: u32,
}

impl Gen for Lcg {
    type J = Affine;
    const JUMPABLE: bool = true;
    fn reseed(&self, seed: u64) -> Self {
        Lcg {
            s: seed as u32,
            ..*self
        }
    }
    #[inline(always)]
    fn next(&mut self) -> u64 {
        let v = self.a as u64 * self.s as u64 + self.c as u64;
        self.s = reduce32(v, self.m);
        self.s as u64
    }
    fn jump_for(&self, n: u64) -> Affine {
        let (a, c) = affine_pow(
            self.a as u128,
            self.c as u128,
            n,
            lcg32_modulus(self.m) as u128,
        );
        Affine {
            mul: a as u64,
            add: c as u64,
        }
    }
    #[inline(always)]
    fn jump(&mut self, j: &Affine) {
        // mul, add < 2^32 and s < 2^32, so the sum fits in 64 bits (see `affine_fits`).
        let v = j.mul * self.s as u64 + j.add;
        self.s = reduce32(v, self.m);
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Java {
    pub s: u64,
    pub a: u64,
    pub c: u64,
}

impl Gen for Java {
    type J = Affine;
    const JUMPABLE: bool = true;
    fn reseed(&self, seed: u64) -> Self {
        Java {
            s: seed & JAVA_MASK,
            ..*self
        }
    }
    #[inline(always)]
    fn next(&mut self) -> u64 {
        self.s = self.s.wrapping_mul(self.a).wrapping_add(self.c) & JAVA_MASK;
        (self.s >> 16) as u32 as u64
    }
    fn jump_for(&self, n: u64) -> Affine {
        let (a, c) = affine_pow(self.a as u128, self.c as u128, n, 1 << 48);
        Affine {
            mul: a as u64,
            add: c as u64,
        }
    }
    #[inline(always)]
    fn jump(&mut self, j: &Affine) {
        self.s = self.s.wrapping_mul(j.mul).wrapping_add(j.add) & JAVA_MASK;
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Minstd {
    pub s: u32,
    pub a: u32,
    pub m: u32,
}

impl Gen for Minstd {
    type J = Affine;
    const JUMPABLE: bool = true;
    fn reseed(&self, seed: u64) -> Self {
        let s = seed as u32 % self.m;
        Minstd {
            s: if s == 0 { 1 } else { s },
            ..*self
        }
    }
    #[inline(always)]
    fn next(&mut self) -> u64 {
        self.s = reduce32(self.a as u64 * self.s as u64, self.m);
        self.s as u64
    }
    fn jump_for(&self, n: u64) -> Affine {
        let (a, _) = affine_pow(self.a as u128, 0, n, self.m as u128);
        Affine {
            mul: a as u64,
            add: 0,
        }
    }
    #[inline(always)]
    fn jump(&mut self, j: &Affine) {
        self.s = reduce32(j.mul * self.s as u64, self.m);
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Mt(pub Box<Mt19937>);

impl Gen for Mt {
    type J = u64;
    const JUMPABLE: bool = false;
    fn reseed(&self, seed: u64) -> Self {
        Mt(Box::new(Mt19937::new(seed as u32)))
    }
    #[inline(always)]
    fn next(&mut self) -> u64 {
        self.0.next_u32() as u64
    }
    fn jump_for(&self, n: u64) -> u64 {
        n
    }
    #[inline(always)]
    fn jump(&mut self, n: &u64) {
        self.0.discard(*n);
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Xoshiro {
    s: [u64; 4],
}

impl Xoshiro {
    fn new(seed: u64) -> Self {
        Xoshiro {
            s: [
                seed,
                XOSHIRO256PP_SEEDING[0],
                XOSHIRO256PP_SEEDING[1],
                XOSHIRO256PP_SEEDING[2],
            ],
        }
    }
}

impl Gen for Xoshiro {
    type J = u64;
    const JUMPABLE: bool = false;
    fn reseed(&self, seed: u64) -> Self {
        Xoshiro::new(seed)
    }
    #[inline(always)]
    fn next(&mut self) -> u64 {
        let s = &mut self.s;
        let out = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        crate::family::xoshiro256_step(s);
        out
    }
    fn jump_for(&self, n: u64) -> u64 {
        n
    }
    #[inline(always)]
    fn jump(&mut self, n: &u64) {
        for _ in 0..*n {
            crate::family::xoshiro256_step(&mut self.s);
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Philox {
    pub key: [u32; 2],
    pub ctr: u64,
}

impl Gen for Philox {
    type J = u64;
    const JUMPABLE: bool = true;
    fn reseed(&self, seed: u64) -> Self {
        Philox {
            key: [seed as u32, (seed >> 32) as u32],
            ctr: 0,
        }
    }
    #[inline(always)]
    fn next(&mut self) -> u64 {
        let n = self.ctr;
        self.ctr = n.wrapping_add(1);
        philox4x32_10([n as u32, (n >> 32) as u32, 0, 0], self.key)[0] as u64
    }
    fn jump_for(&self, n: u64) -> u64 {
        n
    }
    #[inline(always)]
    fn jump(&mut self, n: &u64) {
        self.ctr = self.ctr.wrapping_add(*n);
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Sfc {
    a: u64,
    b: u64,
    c: u64,
    cnt: u64,
}

impl Sfc {
    fn new(seed: u64) -> Self {
        Sfc {
            a: seed,
            b: SFC64_SEEDING[0],
            c: SFC64_SEEDING[1],
            cnt: 1,
        }
    }
}

impl Gen for Sfc {
    type J = u64;
    const JUMPABLE: bool = false;
    fn reseed(&self, seed: u64) -> Self {
        Sfc::new(seed)
    }
    #[inline(always)]
    fn next(&mut self) -> u64 {
        let tmp = self.a.wrapping_add(self.b).wrapping_add(self.cnt);
        self.cnt = self.cnt.wrapping_add(1);
        self.a = self.b ^ (self.b >> 11);
        self.b = self.c.wrapping_add(self.c << 3);
        self.c = self.c.rotate_left(24).wrapping_add(tmp);
        tmp
    }
    fn jump_for(&self, n: u64) -> u64 {
        n
    }
    #[inline(always)]
    fn jump(&mut self, n: &u64) {
        for _ in 0..*n {
            self.next();
        }
    }
}

/// Tempering is re-exported for the partial-state MT19937 lanes.
#[inline(always)]
pub(crate) fn temper(y: u32) -> u32 {
    mt_temper(y)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::family::Family;

    struct Check {
        cfg: FamilyConfig,
    }

    impl GenVisitor for Check {
        type Out = ();
        fn visit<G: Gen + 'static>(self, proto: G) {
            for seed in [0u64, 1, 2, 12345, 0x7FFF_FFFF, 0xFFFF_FFFF] {
                let mut mine = proto.reseed(seed);
                let mut theirs = self.cfg.generator(seed);
                for n in 0..700 {
                    assert_eq!(
                        mine.next(),
                        theirs.next_output(),
                        "{:?} seed {seed} n {n}",
                        self.cfg
                    );
                }
                for n in [0u64, 1, 5, 100, 1000] {
                    let mut mine = proto.reseed(seed);
                    let j = mine.jump_for(n);
                    mine.jump(&j);
                    assert_eq!(
                        mine.next(),
                        self.cfg.output_at(seed, n),
                        "{:?} seed {seed} jump {n}",
                        self.cfg
                    );
                }
            }
        }
    }

    #[test]
    fn generators_agree_with_the_definition() {
        let mut configs: Vec<FamilyConfig> =
            Family::ALL.into_iter().map(FamilyConfig::new).collect();
        configs.push(FamilyConfig::parse("lcg32", &[("m", "0")]).unwrap());
        configs.push(
            FamilyConfig::parse(
                "lcg32",
                &[
                    ("m", "3000000000"),
                    ("a", "4294967295"),
                    ("c", "4294967295"),
                ],
            )
            .unwrap(),
        );
        configs.push(FamilyConfig::parse("minstd", &[("m", "1000"), ("a", "7")]).unwrap());
        configs.push(
            FamilyConfig::parse("xorshift32", &[("a", "1"), ("b", "31"), ("c", "7")]).unwrap(),
        );
        configs.push(FamilyConfig::parse("pcg32", &[("inc", "0"), ("mult", "3")]).unwrap());
        for cfg in configs {
            with_gen(&cfg, Check { cfg });
        }
    }
}
