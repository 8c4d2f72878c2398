//! Algebraic prefilter for exact searches of GF(2)-linear families (xorshift32, xorshift128).
//!
//! For these families every output is an affine function of the seed bits over GF(2):
//! `output_n(seed) = output_n(0) ^ L_n(seed)` with `L_n` linear. When a job demands every draw
//! (`need == k`, e.g. threshold 1.0) and the modulus is even (`2^v` divides it), a match
//! `o ≡ draw (mod modulus)` fixes the low `v` bits of the output, i.e. `v` linear equations on
//! the seed per draw. Solving them (Gaussian elimination on 32 unknowns) leaves an affine
//! subspace of candidate seeds, typically a handful for 16 draws, which the kernel verifies in
//! full. This is how `xs32-exact` covers 2^32 seeds in microseconds instead of brute force.
//!
//! The prefilter only narrows the seed set with a necessary condition, so the result is exactly
//! the brute-force result; it declines (returns `None`) whenever it would not pay off.

use crate::family::Family;
use crate::spec::{SeedSet, SieveSpec, SkipMode};

/// Generator steps the prefilter may spend building the equations.
const MAX_SETUP_STEPS: u128 = 50_000_000;
/// Largest solution space enumerated per skip (2^20 candidates).
const MAX_FREE_BITS: u32 = 20;

/// The candidate seeds of `seeds` for one pass, or `None` when the prefilter does not apply.
pub fn candidates(spec: &SieveSpec, reverse: bool, seeds: &SeedSet) -> Option<SeedSet> {
    let family = spec.family.family();
    if !matches!(family, Family::Xorshift32 | Family::Xorshift128)
        || spec.skip_mode != SkipMode::Constant
    {
        return None;
    }
    let k = spec.k();
    if spec.min_matches(reverse) as usize != k {
        return None;
    }
    let (start, end) = match seeds {
        SeedSet::Range { start, end } => (*start, *end),
        SeedSet::List(_) => return None,
    };
    let low_bits = spec.modulus.trailing_zeros().min(32);
    if low_bits == 0 {
        return None;
    }
    let skips = spec.skip_max as u128 - spec.skip_min as u128 + 1;
    if skips * 33 * (spec.max_output_index() + 1) > MAX_SETUP_STEPS {
        return None;
    }
    let window = spec.window(reverse);
    let bit_mask = if low_bits == 32 {
        u32::MAX
    } else {
        (1u32 << low_bits) - 1
    };
    let mut found = Vec::new();
    for t in spec.skip_min..=spec.skip_max {
        let indices: Vec<u64> = (0..k as u64)
            .map(|i| spec.offset + t as u64 + i * (t as u64 + 1))
            .collect();
        // outputs[b][i]: output for draw i of the generator seeded with basis seed b
        // (b = 0 the zero seed, b = 1 + j the seed with only bit j set).
        let basis_outputs: Vec<Vec<u32>> = (0..33u32)
            .map(|b| {
                let seed = if b == 0 { 0u64 } else { 1u64 << (b - 1) };
                outputs_at(spec, seed, &indices)
            })
            .collect();
        let mut system = System::default();
        for (i, draw) in window.iter().enumerate() {
            let constant = basis_outputs[0][i];
            let target = (*draw as u32) & bit_mask;
            for bit in 0..low_bits {
                let mut row = 0u32;
                for j in 0..32 {
                    if (basis_outputs[1 + j][i] ^ constant) >> bit & 1 == 1 {
                        row |= 1 << j;
                    }
                }
                let rhs = ((target ^ constant) >> bit) & 1 == 1;
                if !system.add(row, rhs) {
                    break;
                }
            }
            if system.inconsistent {
                break;
            }
        }
        if system.inconsistent {
            continue;
        }
        let free = 32 - system.rank();
        if free > MAX_FREE_BITS || (1u128 << free) * skips > (end - start) as u128 / 2 {
            return None;
        }
        system.for_each_solution(|seed| {
            if (start..end).contains(&(seed as u64)) {
                found.push(seed as u64);
            }
        });
    }
    found.sort_unstable();
    found.dedup();
    Some(SeedSet::List(found))
}

/// Outputs number `indices` (increasing) of the generator seeded with `seed`, truncated to 32
/// bits (both families output 32-bit values).
fn outputs_at(spec: &SieveSpec, seed: u64, indices: &[u64]) -> Vec<u32> {
    let mut g = spec.family.generator(seed);
    let mut at = 0u64;
    indices
        .iter()
        .map(|&n| {
            g.advance(n - at);
            at = n + 1;
            g.next_output() as u32
        })
        .collect()
}

/// A linear system over GF(2) in 32 unknowns, kept in echelon form by highest set bit.
#[derive(Default)]
struct System {
    pivots: [Option<(u32, bool)>; 32],
    inconsistent: bool,
}

impl System {
    /// Adds `row · x = rhs`; returns false once the system is inconsistent.
    fn add(&mut self, mut row: u32, mut rhs: bool) -> bool {
        while row != 0 {
            let top = 31 - row.leading_zeros() as usize;
            match self.pivots[top] {
                Some((prow, prhs)) => {
                    row ^= prow;
                    rhs ^= prhs;
                }
                None => {
                    self.pivots[top] = Some((row, rhs));
                    return true;
                }
            }
        }
        if rhs {
            self.inconsistent = true;
        }
        !self.inconsistent
    }

    fn rank(&self) -> u32 {
        self.pivots.iter().filter(|p| p.is_some()).count() as u32
    }

    /// Solves for the pivot bits given the free bits in `x` (pivot rows only reference lower
    /// bits besides their pivot, so ascending order resolves them).
    fn solve(&self, mut x: u32, homogeneous: bool) -> u32 {
        for bit in 0..32 {
            if let Some((row, rhs)) = self.pivots[bit] {
                let others = row & !(1u32 << bit);
                let value = ((others & x).count_ones() & 1 == 1) ^ (rhs && !homogeneous);
                x = (x & !(1 << bit)) | ((value as u32) << bit);
            }
        }
        x
    }

    fn for_each_solution(&self, mut visit: impl FnMut(u32)) {
        let free: Vec<usize> = (0..32).filter(|b| self.pivots[*b].is_none()).collect();
        let particular = self.solve(0, false);
        let basis: Vec<u32> = free.iter().map(|&f| self.solve(1 << f, true)).collect();
        let mut x = particular;
        visit(x);
        // Gray code: each step flips one basis vector.
        for i in 1u64..(1u64 << basis.len()) {
            x ^= basis[i.trailing_zeros() as usize];
            visit(x);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_solutions_satisfy_every_equation() {
        // 30 independent equations x_i ^ x_(i+1) = parity(i) plus one redundant one: 4 solutions.
        let mut rows: Vec<(u32, bool)> = (0..30)
            .map(|i| ((1u32 << i) | (1 << (i + 1)), i % 3 == 0))
            .collect();
        rows.push((rows[0].0 ^ rows[1].0, rows[0].1 ^ rows[1].1));
        let mut system = System::default();
        for &(row, rhs) in &rows {
            assert!(system.add(row, rhs));
        }
        assert_eq!(system.rank(), 30);
        assert!(!System::default().add(0, true), "0 = 1 is inconsistent");
        let mut count = 0;
        system.for_each_solution(|x| {
            count += 1;
            for &(row, rhs) in &rows {
                assert_eq!((row & x).count_ones() & 1 == 1, rhs, "x = {x:#x}");
            }
        });
        assert_eq!(count, 1u64 << (32 - system.rank()));
    }
}
