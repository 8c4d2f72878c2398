//! Fast "is `x ≡ r (mod M)`" tests for a modulus fixed per job.
//!
//! A hardware division per comparison would dominate the sieve's inner loops. Instead we use the
//! Granlund–Montgomery divisibility test (Hacker's Delight 10-17): with `M = d·2^j`, `d` odd and
//! `dinv = d⁻¹ mod 2^w`, a `w`-bit `y` is a multiple of `M` iff
//! `rotr(y·dinv mod 2^w, j) <= (2^w - 1) / M`. For `x < 2^w` and `r < M`, `x ≡ r (mod M)` iff
//! `x >= r` and `x - r` is a multiple of `M`: one subtraction, one multiply, one rotate and two
//! compares, all of which vectorise.

/// The divisibility test at 32-bit width, for outputs that fit in `u32`.
#[derive(Debug, Clone, Copy)]
pub struct Residue32 {
    pub inv: u32,
    pub rot: u32,
    pub lim: u32,
}

/// The divisibility test at 64-bit width.
#[derive(Debug, Clone, Copy)]
pub struct Residue64 {
    pub inv: u64,
    pub rot: u32,
    pub lim: u64,
}

fn inverse_u64(d: u64) -> u64 {
    debug_assert!(d & 1 == 1);
    // Newton's iteration doubles the correct low bits each round: 3 -> 6 -> ... -> 96.
    let mut x = d;
    for _ in 0..5 {
        x = x.wrapping_mul(2u64.wrapping_sub(d.wrapping_mul(x)));
    }
    x
}

impl Residue64 {
    pub fn new(modulus: u64) -> Self {
        assert!(modulus >= 2, "modulus must be at least 2");
        let rot = modulus.trailing_zeros();
        let d = modulus >> rot;
        Residue64 {
            inv: inverse_u64(d),
            rot,
            lim: u64::MAX / modulus,
        }
    }

    /// `x ≡ r (mod M)`, where `r < M`.
    #[inline(always)]
    pub fn matches(&self, x: u64, r: u64) -> bool {
        (x >= r)
            & (x.wrapping_sub(r)
                .wrapping_mul(self.inv)
                .rotate_right(self.rot)
                <= self.lim)
    }
}

impl Residue32 {
    /// The test for 32-bit outputs. A modulus of 2^32 or more leaves such outputs unchanged, so
    /// the test becomes equality (`inv = 1, rot = 0, lim = 0`); a residue `r >= 2^32` can then
    /// never match, which callers handle by marking that draw impossible.
    pub fn new(modulus: u64) -> Self {
        assert!(modulus >= 2, "modulus must be at least 2");
        if modulus > u32::MAX as u64 {
            return Residue32 {
                inv: 1,
                rot: 0,
                lim: 0,
            };
        }
        let rot = modulus.trailing_zeros();
        let d = modulus >> rot;
        Residue32 {
            inv: inverse_u64(d) as u32,
            rot,
            lim: (u32::MAX as u64 / modulus) as u32,
        }
    }

    /// `x ≡ r (mod M)`, where `r < M` and `r < 2^32`.
    #[inline(always)]
    pub fn matches(&self, x: u32, r: u32) -> bool {
        (x >= r)
            & (x.wrapping_sub(r)
                .wrapping_mul(self.inv)
                .rotate_right(self.rot)
                <= self.lim)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moduli() -> Vec<u64> {
        let mut m = vec![
            2,
            3,
            7,
            8,
            10,
            125,
            1000,
            1024,
            999_983,
            1 << 31,
            (1 << 31) - 1,
            3 << 30,
        ];
        m.extend([
            u32::MAX as u64,
            1 << 32,
            (1 << 32) + 1,
            1 << 40,
            1000 << 20,
            u64::MAX,
            1 << 63,
        ]);
        m
    }

    #[test]
    fn divisibility_test_agrees_with_remainder() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for m in moduli() {
            let t64 = Residue64::new(m);
            let t32 = Residue32::new(m);
            for i in 0..20_000u64 {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let v = match i % 4 {
                    0 => x,
                    1 => x >> (i % 64),
                    2 => m.wrapping_mul(x % 1000).wrapping_add(x % 3),
                    _ => i,
                };
                let r = (x >> 7) % m;
                let r = if i % 3 == 0 { v % m } else { r };
                assert_eq!(t64.matches(v, r), v % m == r, "64: v {v} r {r} m {m}");
                let v32 = v as u32;
                if r <= u32::MAX as u64 {
                    assert_eq!(
                        t32.matches(v32, r as u32),
                        v32 as u64 % m == r,
                        "32: v {v32} r {r} m {m}"
                    );
                }
            }
        }
    }
}
