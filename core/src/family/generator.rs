//! The scalar generator of every family ([`Generator`]) and the step functions the fast
//! backends share with it.

use super::constants::{
    JAVA_MASK, PHILOX_MULTIPLIERS, PHILOX_WEYL, SFC64_SEEDING, XORSHIFT128_SEEDING,
    XORSHIFT64_MULTIPLIER, XOSHIRO256PP_SEEDING,
};
use super::mt::Mt19937;
use super::FamilyParams;

/// A seeded generator of one family: the scalar definition every backend must reproduce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Generator {
    /// xorshift32 with its job's shift triple.
    Xorshift32 {
        /// The state, which is also the last output (0 is a fixed point).
        x: u32,
        /// First left shift (1..=31).
        a: u32,
        /// Right shift (1..=31).
        b: u32,
        /// Second left shift (1..=31).
        c: u32,
    },
    /// xorshift64: shifts 12, 25, 27, then a multiply by [`XORSHIFT64_MULTIPLIER`], all part of
    /// the step.
    Xorshift64 {
        /// The state, which is also the last output (full 64 bits).
        x: u64,
    },
    /// Marsaglia's xor128: four 32-bit words, `w` is the output.
    Xorshift128 {
        /// Oldest word (the seed after seeding).
        x: u32,
        /// Second word.
        y: u32,
        /// Third word.
        z: u32,
        /// Newest word: the last output.
        w: u32,
    },
    /// A 64-bit LCG whose *old* state goes through XSH-RR on each output.
    Pcg32 {
        /// The LCG state (the seed's low 32 bits after seeding).
        state: u64,
        /// LCG multiplier.
        mult: u64,
        /// LCG increment, used verbatim (not forced odd).
        inc: u64,
    },
    /// `s = (a*s + c) mod m` with a 64-bit intermediate.
    Lcg32 {
        /// The state, which is also the last output.
        s: u32,
        /// Multiplier.
        a: u32,
        /// Increment.
        c: u32,
        /// Modulus; 0 means 2^32.
        m: u32,
    },
    /// `s = (a*s + c) mod 2^48`, output `s >> 16`.
    JavaLcg {
        /// The 48-bit state (always `<= JAVA_MASK`).
        s: u64,
        /// Multiplier (< 2^48).
        a: u64,
        /// Increment (< 2^48).
        c: u64,
    },
    /// Park-Miller `s = a*s mod m`.
    Minstd {
        /// The state, in `1..m`; also the last output.
        s: u32,
        /// Multiplier, in `1..m`.
        a: u32,
        /// Modulus (>= 2).
        m: u32,
    },
    /// MT19937 (boxed: its 624-word state would make every variant 2.5 KB).
    Mt19937(Box<Mt19937>),
    /// xoshiro256++.
    Xoshiro256pp {
        /// The four state words `s0..s3`.
        s: [u64; 4],
    },
    /// Philox4x32-10 in counter mode: output `n` is word 0 of the block of counter `n`.
    Philox4x32 {
        /// The key: the seed's low and high 32 bits.
        key: [u32; 2],
        /// The number of the next output.
        counter: u64,
    },
    /// Chris Doty-Humphrey's SFC64 (no warm-up rounds after seeding).
    Sfc64 {
        /// First state word (the seed after seeding).
        a: u64,
        /// Second state word.
        b: u64,
        /// Third state word.
        c: u64,
        /// The counter added into every output (starts at 1).
        cnt: u64,
    },
}

impl Generator {
    /// The generator of `params`' family seeded with `seed` (which must lie in the family's
    /// seed space; 32-bit families use its low 32 bits).
    pub fn new(params: FamilyParams, seed: u64) -> Generator {
        debug_assert!(
            (seed as u128) < params.family().seed_space_end(),
            "seed {seed} outside the {} seed space",
            params.family()
        );
        let s32 = seed as u32;
        match params {
            FamilyParams::Xorshift32 { a, b, c } => Generator::Xorshift32 { x: s32, a, b, c },
            FamilyParams::Xorshift64 => Generator::Xorshift64 { x: seed },
            FamilyParams::Xorshift128 => {
                let [y, z, w] = XORSHIFT128_SEEDING;
                Generator::Xorshift128 { x: s32, y, z, w }
            }
            FamilyParams::Pcg32 { inc, mult } => Generator::Pcg32 {
                state: s32 as u64,
                mult,
                inc,
            },
            FamilyParams::Lcg32 { a, c, m } => Generator::Lcg32 { s: s32, a, c, m },
            FamilyParams::JavaLcg { a, c } => Generator::JavaLcg {
                s: seed & JAVA_MASK,
                a,
                c,
            },
            FamilyParams::Minstd { a, m } => {
                let s = s32 % m;
                Generator::Minstd {
                    s: if s == 0 { 1 } else { s },
                    a,
                    m,
                }
            }
            FamilyParams::Mt19937 => Generator::Mt19937(Box::new(Mt19937::new(s32))),
            FamilyParams::Xoshiro256pp => {
                let [s1, s2, s3] = XOSHIRO256PP_SEEDING;
                Generator::Xoshiro256pp {
                    s: [seed, s1, s2, s3],
                }
            }
            FamilyParams::Philox4x32 => Generator::Philox4x32 {
                key: [seed as u32, (seed >> 32) as u32],
                counter: 0,
            },
            FamilyParams::Sfc64 => {
                let [b, c] = SFC64_SEEDING;
                Generator::Sfc64 {
                    a: seed,
                    b,
                    c,
                    cnt: 1,
                }
            }
        }
    }

    /// The next output, at the family's own width (see the module doc).
    #[inline]
    pub fn next_output(&mut self) -> u64 {
        match self {
            Generator::Xorshift32 { x, a, b, c } => {
                *x = xorshift32_step(*x, *a, *b, *c);
                *x as u64
            }
            Generator::Xorshift64 { x } => {
                *x = xorshift64_step(*x);
                *x
            }
            Generator::Xorshift128 { x, y, z, w } => {
                let t = *x ^ (*x << 11);
                *x = *y;
                *y = *z;
                *z = *w;
                *w = *w ^ (*w >> 19) ^ (t ^ (t >> 8));
                *w as u64
            }
            Generator::Pcg32 { state, mult, inc } => {
                let old = *state;
                *state = old.wrapping_mul(*mult).wrapping_add(*inc);
                pcg32_xsh_rr(old) as u64
            }
            Generator::Lcg32 { s, a, c, m } => {
                *s = lcg32_step(*s, *a, *c, *m);
                *s as u64
            }
            Generator::JavaLcg { s, a, c } => {
                *s = s.wrapping_mul(*a).wrapping_add(*c) & JAVA_MASK;
                (*s >> 16) as u32 as u64
            }
            Generator::Minstd { s, a, m } => {
                *s = ((*a as u64 * *s as u64) % *m as u64) as u32;
                *s as u64
            }
            Generator::Mt19937(mt) => mt.next_u32() as u64,
            Generator::Xoshiro256pp { s } => {
                let out = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
                xoshiro256_step(s);
                out
            }
            Generator::Philox4x32 { key, counter } => {
                let n = *counter;
                *counter = n.wrapping_add(1);
                philox4x32_10([n as u32, (n >> 32) as u32, 0, 0], *key)[0] as u64
            }
            Generator::Sfc64 { a, b, c, cnt } => {
                let tmp = a.wrapping_add(*b).wrapping_add(*cnt);
                *cnt = cnt.wrapping_add(1);
                *a = *b ^ (*b >> 11);
                *b = c.wrapping_add(*c << 3);
                *c = c.rotate_left(24).wrapping_add(tmp);
                tmp
            }
        }
    }

    /// Discards `n` outputs. A jump for the LCG-type families (O(log n)) and philox (O(1));
    /// plain stepping otherwise.
    pub fn advance(&mut self, n: u64) {
        if n == 0 {
            return;
        }
        match self {
            Generator::Pcg32 { state, mult, inc } => {
                let (a, c) = affine_pow(*mult as u128, *inc as u128, n, 1 << 64);
                *state = ((a * *state as u128 + c) & u64::MAX as u128) as u64;
            }
            Generator::Lcg32 { s, a, c, m } => {
                let modulus = if *m == 0 { 1u128 << 32 } else { *m as u128 };
                let (ja, jc) = affine_pow(*a as u128, *c as u128, n, modulus);
                *s = ((ja * *s as u128 + jc) % modulus) as u32;
            }
            Generator::JavaLcg { s, a, c } => {
                let (ja, jc) = affine_pow(*a as u128, *c as u128, n, 1 << 48);
                *s = ((ja * *s as u128 + jc) & JAVA_MASK as u128) as u64;
            }
            Generator::Minstd { s, a, m } => {
                let (ja, _) = affine_pow(*a as u128, 0, n, *m as u128);
                *s = ((ja * *s as u128) % *m as u128) as u32;
            }
            Generator::Philox4x32 { counter, .. } => *counter = counter.wrapping_add(n),
            Generator::Mt19937(mt) => mt.discard(n),
            _ => {
                for _ in 0..n {
                    self.next_output();
                }
            }
        }
    }
}

/// `(A, C)` with `f^n(s) = A*s + C (mod modulus)` for `f(s) = a*s + c`; `modulus <= 2^64`.
pub fn affine_pow(a: u128, c: u128, mut n: u64, modulus: u128) -> (u128, u128) {
    let (mut acc_a, mut acc_c) = (1 % modulus, 0u128);
    let (mut sq_a, mut sq_c) = (a % modulus, c % modulus);
    while n > 0 {
        if n & 1 == 1 {
            // acc := sq after acc: s -> sq_a*(acc_a*s + acc_c) + sq_c
            acc_a = acc_a * sq_a % modulus;
            acc_c = (acc_c * sq_a + sq_c) % modulus;
        }
        // sq := sq after sq
        sq_c = (sq_c * sq_a + sq_c) % modulus;
        sq_a = sq_a * sq_a % modulus;
        n >>= 1;
    }
    (acc_a, acc_c)
}

/// One xorshift32 step with shifts `a, b, c`: `x ^= x << a; x ^= x >> b; x ^= x << c`.
#[inline]
pub fn xorshift32_step(mut x: u32, a: u32, b: u32, c: u32) -> u32 {
    x ^= x << a;
    x ^= x >> b;
    x ^= x << c;
    x
}

/// One xorshift64 step: shifts 12, 25, 27, then times [`XORSHIFT64_MULTIPLIER`]; the result is
/// both the new state and the output.
#[inline]
pub fn xorshift64_step(mut x: u64) -> u64 {
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    x.wrapping_mul(XORSHIFT64_MULTIPLIER)
}

/// `(a*s + c) mod m` with a 64-bit intermediate; `m = 0` means 2^32.
#[inline]
pub fn lcg32_step(s: u32, a: u32, c: u32, m: u32) -> u32 {
    let v = a as u64 * s as u64 + c as u64;
    if m == 0 {
        v as u32
    } else {
        (v % m as u64) as u32
    }
}

/// PCG's XSH-RR output function applied to a 64-bit state.
#[inline]
pub fn pcg32_xsh_rr(old: u64) -> u32 {
    let xorshifted = (((old >> 18) ^ old) >> 27) as u32;
    let rot = (old >> 59) as u32;
    xorshifted.rotate_right(rot)
}

/// The xoshiro256 state update (shared by xoshiro256++ and friends).
#[inline]
pub fn xoshiro256_step(s: &mut [u64; 4]) {
    let t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = s[3].rotate_left(45);
}

/// The Philox4x32-10 block function (Random123).
pub fn philox4x32_10(mut ctr: [u32; 4], mut key: [u32; 2]) -> [u32; 4] {
    let [m0, m1] = PHILOX_MULTIPLIERS.map(u64::from);
    for round in 0..10 {
        if round > 0 {
            key[0] = key[0].wrapping_add(PHILOX_WEYL[0]);
            key[1] = key[1].wrapping_add(PHILOX_WEYL[1]);
        }
        let p0 = m0 * ctr[0] as u64;
        let p1 = m1 * ctr[2] as u64;
        let (hi0, lo0) = ((p0 >> 32) as u32, p0 as u32);
        let (hi1, lo1) = ((p1 >> 32) as u32, p1 as u32);
        ctr = [hi1 ^ ctr[1] ^ key[0], lo1, hi0 ^ ctr[3] ^ key[1], lo0];
    }
    ctr
}
