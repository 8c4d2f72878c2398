//! Algebraic shortcuts for jobs where every draw must match (`need == k`, e.g. threshold 1.0).
//!
//! Each returns a sorted *superset* of the survivors within the seed set, computed from a
//! necessary condition; the caller then evaluates those candidates exactly. So a shortcut can
//! only make the search faster, never change its result, and it declines (`None`) whenever its
//! conditions do not hold or it would not pay off.
//!
//! * **xorshift32, xorshift128** are GF(2)-linear in the seed bits: with an even modulus
//!   (`2^v | M`) each draw fixes `v` low output bits, i.e. `v` linear equations on the seed. The
//!   solver is the GPU engineer's prefilter, [`crate::gpu::linear::candidates`], shared as is.
//! * **java_lcg**: the state is `A_n·seed + C_n mod 2^48`, and the output's low `v` bits are
//!   state bits `16..16+v`, which depend only on `seed mod 2^(16+v)`. The low seed bits are
//!   lifted one bit at a time (Hensel-style): all `2^17` residues are tested on output bit 0 of
//!   every draw, the few survivors are extended by bit 17 and tested on output bit 1, and so on.
//!   Candidate seeds are then the range's members of the surviving residue classes.

use super::scalar::PassCtx;
use crate::family::{affine_pow, FamilyParams};
use crate::spec::{SeedSet, SieveSpec, SkipMode};

/// Most candidates a shortcut lists (beyond, the brute-force engines run in bounded memory).
const MAX_CANDIDATES: u128 = 1 << 24;
/// Most skips a shortcut handles (each is solved separately).
const MAX_SKIPS: u32 = 64;

/// A sorted superset of the pass's survivors within `seeds`, when a shortcut applies.
/// Shortcuts only serve seed ranges (`start..end`); `reverse` says which pass `ctx` is.
pub(crate) fn candidates(
    spec: &SieveSpec,
    ctx: &PassCtx,
    reverse: bool,
    start: u64,
    end: u64,
) -> Option<Vec<u64>> {
    if ctx.need != ctx.k()
        || spec.skip_mode != SkipMode::Constant
        || ctx.skip_max - ctx.skip_min >= MAX_SKIPS
    {
        return None;
    }
    match spec.family.params() {
        FamilyParams::Xorshift32 { .. } | FamilyParams::Xorshift128 => {
            match crate::gpu::linear::candidates(spec, reverse, &SeedSet::Range { start, end })? {
                SeedSet::List(list) => Some(list),
                SeedSet::Range { .. } => None,
            }
        }
        FamilyParams::JavaLcg { a, c } => java_candidates(a, c, ctx, start, end),
        _ => None,
    }
}

use crate::family::constants::JAVA_MASK;

fn java_candidates(a: u64, c: u64, ctx: &PassCtx, start: u64, end: u64) -> Option<Vec<u64>> {
    // Output bits available as constraints: the modulus's factor 2^v, at most the 32 output bits.
    let v = ctx.modulus.trailing_zeros().min(32);
    if v == 0 {
        return None;
    }
    let len = end - start;
    let mut classes: Vec<(u64, u32)> = Vec::new(); // (residue, bits)
    for t in ctx.skips() {
        let jump = affine_pow(a as u128, c as u128, t as u64 + 1, 1 << 48);
        let mut ac = affine_pow(a as u128, c as u128, ctx.offset + t as u64 + 1, 1 << 48);
        let mut coefs = Vec::with_capacity(ctx.window.len());
        for &r in &ctx.window {
            coefs.push((ac.0 as u64, ac.1 as u64, r));
            ac = (
                (jump.0 * ac.0) & JAVA_MASK as u128,
                (jump.0 * ac.1 + jump.1) & JAVA_MASK as u128,
            );
        }
        let holds = |seed: u64, bit: u32| {
            coefs.iter().all(|&(ma, mc, r)| {
                let state = ma.wrapping_mul(seed).wrapping_add(mc) & JAVA_MASK;
                (state >> (16 + bit)) & 1 == (r >> bit) & 1
            })
        };
        let mut alive: Vec<u64> = (0..1u64 << 17).filter(|&s| holds(s, 0)).collect();
        let mut bits = 17;
        for bit in 1..v {
            if alive.is_empty() {
                break;
            }
            let step = 1u64 << bits;
            alive = alive
                .iter()
                .flat_map(|&s| [s, s + step])
                .filter(|&s| holds(s, bit))
                .collect();
            bits += 1;
        }
        classes.extend(alive.into_iter().map(|s| (s, bits)));
        // Each class yields about len / 2^bits seeds; give up when that is no real narrowing.
        let estimate: u128 = classes.iter().map(|&(_, b)| (len as u128 >> b) + 1).sum();
        if estimate > len as u128 / 8 || estimate > MAX_CANDIDATES {
            return None;
        }
    }
    let mut out = Vec::new();
    for (residue, bits) in classes {
        let modulus = 1u128 << bits;
        // The first seed >= start with seed ≡ residue (mod 2^bits).
        let first =
            start as u128 + ((residue as u128 + modulus - (start as u128 % modulus)) % modulus);
        let mut s = first;
        while s < end as u128 {
            out.push(s as u64);
            s += modulus;
        }
    }
    out.sort_unstable();
    out.dedup();
    Some(out)
}
