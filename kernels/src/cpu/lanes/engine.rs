//! The lane engine: per block of `L` seeds and per skip, step every lane and count matches,
//! stopping once no lane can beat its best; compiled for AVX-512, AVX2 and portable code.

use super::*;

#[inline(always)]
fn run_chunk<G: Lanes<L>, const L: usize>(
    g: &mut G,
    c: &LaneCtx<G::W, G::J>,
    chunk: Chunk<'_>,
    out: &mut Vec<Hit>,
) {
    let mut seeds = [0u64; L];
    let exact = c.need as usize == c.window.len() && c.possible[0];
    match chunk {
        Chunk::Range(start, end) => {
            let mut s = start;
            while s < end {
                let valid = ((end - s) as usize).min(L);
                if valid == L {
                    g.prepare_range(s);
                    emit_prepared(g, c, exact, s, out);
                    s += L as u64;
                    continue;
                } else {
                    for (l, seed) in seeds.iter_mut().enumerate() {
                        // Padding lanes repeat the last seed; their results are dropped.
                        *seed = s + (l.min(valid - 1)) as u64;
                    }
                }
                emit(g, c, exact, &seeds, valid, out);
                s += valid as u64;
            }
        }
        Chunk::List(list) => {
            for part in list.chunks(L) {
                for (l, seed) in seeds.iter_mut().enumerate() {
                    *seed = part[l.min(part.len() - 1)];
                }
                emit(g, c, exact, &seeds, part.len(), out);
            }
        }
    }
}

// A plain function, not a closure: closures are separate functions that do not inherit the
// caller's `#[target_feature]`, and would be compiled for the baseline target.
#[inline(always)]
fn emit<G: Lanes<L>, const L: usize>(
    g: &mut G,
    c: &LaneCtx<G::W, G::J>,
    exact: bool,
    seeds: &[u64; L],
    valid: usize,
    out: &mut Vec<Hit>,
) {
    g.prepare(seeds);
    // When every draw must match, a block whose lanes all miss draw 0 at every skip is done:
    // test just that before setting up counters.
    if exact && !first_draw_matches(g, c) {
        return;
    }
    block(g, c, seeds, valid, out);
}

/// [`emit`] for a full block of consecutive seeds already prepared.
#[inline(always)]
fn emit_prepared<G: Lanes<L>, const L: usize>(
    g: &mut G,
    c: &LaneCtx<G::W, G::J>,
    exact: bool,
    start: u64,
    out: &mut Vec<Hit>,
) {
    if exact && !first_draw_matches(g, c) {
        return;
    }
    let mut seeds = [0u64; L];
    for (l, s) in seeds.iter_mut().enumerate() {
        *s = start + l as u64;
    }
    block(g, c, &seeds, L, out);
}

/// Whether any lane matches draw 0 at any skip.
#[inline(always)]
fn first_draw_matches<G: Lanes<L>, const L: usize>(g: &mut G, c: &LaneCtx<G::W, G::J>) -> bool {
    let r = c.window[0];
    for start in &c.starts {
        g.restart();
        g.jump(start);
        let o = g.next();
        let mut cnt = [0u32; L];
        G::W::count(&o, r, &c.test, &mut cnt);
        let mut any = false;
        for l in 0..L {
            any |= cnt[l] != 0;
        }
        if any {
            return true;
        }
    }
    false
}

#[inline(always)]
fn block<G: Lanes<L>, const L: usize>(
    g: &mut G,
    c: &LaneCtx<G::W, G::J>,
    seeds: &[u64; L],
    valid: usize,
    out: &mut Vec<Hit>,
) {
    let k = c.window.len() as u32;
    let mut best = [c.need - 1; L];
    let mut best_skip = [u32::MAX; L];
    for ti in 0..c.starts.len() {
        let t = c.skip_min + ti as u32;
        let mut all_maxed = true;
        for l in 0..L {
            all_maxed &= best[l] >= k;
        }
        if all_maxed {
            break;
        }
        g.restart();
        g.jump(&c.starts[ti]);
        let mut cnt = [0u32; L];
        for i in 0..k as usize {
            let o = g.next();
            if c.possible[i] {
                G::W::count(&o, c.window[i], &c.test, &mut cnt);
            }
            let rem = k - 1 - i as u32;
            let mut alive = false;
            for l in 0..L {
                alive |= cnt[l] + rem > best[l];
            }
            if !alive {
                break;
            }
            if t > 0 {
                g.jump(&c.steps[ti]);
            }
        }
        for l in 0..L {
            if cnt[l] > best[l] {
                best[l] = cnt[l];
                best_skip[l] = t;
            }
        }
    }
    // Survivors are rare: test all lanes at once before looking at any one of them.
    let mut any = false;
    for l in 0..L {
        any |= best_skip[l] != u32::MAX;
    }
    if !any {
        return;
    }
    for l in 0..valid {
        if best_skip[l] != u32::MAX {
            out.push(Hit {
                seed: seeds[l],
                matches: best[l],
                best_skip: best_skip[l],
                best_offset: c.offset,
            });
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(
    enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512cd,avx2,avx,fma,bmi1,bmi2,popcnt,lzcnt"
)]
unsafe fn run_avx512<G: Lanes<L>, const L: usize>(
    g: &mut G,
    c: &LaneCtx<G::W, G::J>,
    chunk: Chunk<'_>,
    out: &mut Vec<Hit>,
) {
    run_chunk(g, c, chunk, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,avx,fma,bmi1,bmi2,popcnt,lzcnt")]
unsafe fn run_avx2<G: Lanes<L>, const L: usize>(
    g: &mut G,
    c: &LaneCtx<G::W, G::J>,
    chunk: Chunk<'_>,
    out: &mut Vec<Hit>,
) {
    run_chunk(g, c, chunk, out)
}

#[inline(never)]
fn run_portable<G: Lanes<L>, const L: usize>(
    g: &mut G,
    c: &LaneCtx<G::W, G::J>,
    chunk: Chunk<'_>,
    out: &mut Vec<Hit>,
) {
    run_chunk(g, c, chunk, out)
}

/// Runs the lane engine over a chunk at `level` (which must be supported, see
/// [`SimdLevel::supported`]; `Scalar` is not a lane level and runs the portable code).
pub(crate) fn run<G: Lanes<L>, const L: usize>(
    level: SimdLevel,
    g: &mut G,
    c: &LaneCtx<G::W, G::J>,
    chunk: Chunk<'_>,
    out: &mut Vec<Hit>,
) {
    match level {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `level` was lowered to what `is_x86_feature_detected!` reports.
        SimdLevel::Avx512 => unsafe { run_avx512(g, c, chunk, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        SimdLevel::Avx2 => unsafe { run_avx2(g, c, chunk, out) },
        _ => run_portable(g, c, chunk, out),
    }
}
