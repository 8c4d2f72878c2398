//! The shared-stream lane engine: a block of `L` seeds generates its output stream once, and
//! each output is tested against the (offset, skip) pairs whose draws land on it.
//!
//! Draw `i` of the pair `(o, t)` is output `o + t + i*(t+1)`. The per-skip engine ([`super::engine`])
//! restarts the stream for every skip and steps `t + 1` outputs per draw: at the pipeline's shape
//! (k = 512, skips 0..=20) a stepping family then makes ~118k steps per seed, against the 10,752
//! outputs the seed's stream actually has. Here a seed costs one pass over its stream (jumping
//! over outputs no draw lands on, in O(1) for counter-based families) plus one test per
//! (pair, draw), and an offset range `[offset, offset_max]` costs nothing more than its tests:
//! the stream is not generated again per offset.
//!
//! The [`SharedCtx`] plan lists, relative to the smallest offset, the outputs some draw lands on
//! ("active" outputs) in order, each with its entries (pair, residue). Checkpoints along the
//! stream stop a block once no lane of any pair can still reach the needed count, and shorten
//! the stream to the last draw of the pairs still alive. A survivor's result is its best count
//! over pairs in (offset, skip) order, ties to the first: the smallest offset, then skip.

use std::collections::HashMap;

use super::*;

/// Most (pair, draw) entries a plan holds; beyond, the caller falls back to per-offset passes.
const MAX_ENTRIES: u64 = 1 << 23;
/// Longest stream (outputs past the smallest offset) a plan covers.
const MAX_SPAN: u64 = 1 << 26;
/// Marks an active output that directly follows the previous one.
const NO_JUMP: u32 = u32::MAX;

#[derive(Clone, Copy)]
struct Out {
    /// Index into [`SharedCtx::jumps`] of the jump over the inactive outputs before this one.
    jump: u32,
    /// End of this output's entries in [`SharedCtx::entries`] (they start at the previous end).
    end: u32,
}

#[derive(Clone, Copy)]
struct Entry<W> {
    pair: u32,
    r: W,
}

/// The per-pass plan of the shared-stream engine.
pub(crate) struct SharedCtx<W: Word, J> {
    test: W::Test,
    need: u32,
    /// (offset, skip) per pair, in tie order.
    pairs: Vec<(u64, u32)>,
    first: J,
    jumps: Vec<J>,
    outs: Vec<Out>,
    entries: Vec<Entry<W>>,
    /// After processing `outs[checks[c]]`, `rems[c * pairs + p]` draws of pair `p` that can still
    /// match remain.
    checks: Vec<u32>,
    rems: Vec<u32>,
    /// Per pair: one past the index of its last active output.
    last: Vec<u32>,
}

impl<W: Word, J: Copy> SharedCtx<W, J> {
    /// The plan of `ctx`'s pass, or `None` when it is too large to hold (see [`MAX_ENTRIES`]).
    pub fn new<const L: usize, G: Lanes<L, W = W, J = J>>(
        proto: &G,
        ctx: &PassCtx,
    ) -> Option<Self> {
        let k = ctx.k() as u64;
        let nskips = (ctx.skip_max - ctx.skip_min) as u64 + 1;
        let noffsets = ctx.offset_max - ctx.offset + 1;
        let npairs = nskips.checked_mul(noffsets)?;
        if npairs.checked_mul(k)? > MAX_ENTRIES || npairs > u32::MAX as u64 {
            return None;
        }
        let span = (noffsets - 1) + (ctx.skip_max as u64 + 1) * k;
        if span > MAX_SPAN {
            return None;
        }
        let residues: Vec<Option<W>> = ctx.window.iter().map(|&r| W::residue(r)).collect();
        let mut pairs = Vec::with_capacity(npairs as usize);
        for o in 0..noffsets {
            for t in ctx.skips() {
                pairs.push((ctx.offset + o, t));
            }
        }
        let lands = |p: usize, i: u64| {
            let (o, t) = pairs[p];
            (o - ctx.offset) + t as u64 + i * (t as u64 + 1)
        };
        // Counting sort of the entries by output.
        let mut count = vec![0u32; span as usize + 1];
        let mut total = vec![0u32; pairs.len()];
        for p in 0..pairs.len() {
            for i in 0..k {
                if residues[i as usize].is_some() {
                    count[lands(p, i) as usize] += 1;
                    total[p] += 1;
                }
            }
        }
        let mut outs = Vec::new();
        let mut out_j = Vec::new();
        let mut jumps = Vec::new();
        let mut jump_index: HashMap<u64, u32> = HashMap::new();
        let mut out_of = vec![u32::MAX; span as usize + 1];
        let mut start_of = vec![0u32; span as usize + 1];
        let (mut next_j, mut end) = (0u64, 0u32);
        for (j, &n) in count.iter().enumerate() {
            if n == 0 {
                continue;
            }
            let gap = j as u64 - next_j;
            let jump = if gap == 0 {
                NO_JUMP
            } else {
                *jump_index.entry(gap).or_insert_with(|| {
                    jumps.push(proto.jump_for(gap));
                    jumps.len() as u32 - 1
                })
            };
            out_of[j] = outs.len() as u32;
            start_of[j] = end;
            end += n;
            outs.push(Out { jump, end });
            out_j.push(j as u64);
            next_j = j as u64 + 1;
        }
        let mut entries = vec![
            Entry {
                pair: 0,
                r: W::default()
            };
            end as usize
        ];
        let mut last = vec![0u32; pairs.len()];
        for p in 0..pairs.len() {
            for i in 0..k {
                if let Some(r) = residues[i as usize] {
                    let j = lands(p, i) as usize;
                    entries[start_of[j] as usize] = Entry { pair: p as u32, r };
                    start_of[j] += 1;
                    last[p] = last[p].max(out_of[j] + 1);
                }
            }
        }
        // Checkpoints: after each of the first rounds of draws (a threshold of 1 kills nearly
        // every block there), then at a spacing where checking costs about a quarter of the
        // tests made in between.
        let mut at: Vec<u32> = Vec::new();
        for round in 0..k.min(4) {
            let j = (noffsets - 1) + ctx.skip_max as u64 + round * (ctx.skip_max as u64 + 1);
            let upto = out_j.partition_point(|&x| x <= j);
            if upto > 0 {
                at.push(upto as u32 - 1);
            }
        }
        if !outs.is_empty() {
            let per_out = (end as u64).div_ceil(outs.len() as u64).max(1);
            let by_cost = (4 * npairs).div_ceil(per_out);
            let by_memory = (outs.len() as u64 * npairs) >> 22;
            let spacing = by_cost.max(by_memory).clamp(8, 1 << 12) as usize;
            at.extend((spacing - 1..outs.len()).step_by(spacing).map(|a| a as u32));
        }
        at.sort_unstable();
        at.dedup();
        let mut rems = Vec::with_capacity(at.len() * pairs.len());
        let mut seen = vec![0u32; pairs.len()];
        let (mut a, mut e) = (0usize, 0usize);
        for &c in &at {
            while a <= c as usize {
                for entry in &entries[e..outs[a].end as usize] {
                    seen[entry.pair as usize] += 1;
                }
                e = outs[a].end as usize;
                a += 1;
            }
            rems.extend(total.iter().zip(&seen).map(|(t, s)| t - s));
        }
        Some(SharedCtx {
            test: W::test(ctx.modulus),
            need: ctx.need,
            pairs,
            first: proto.jump_for(ctx.offset),
            jumps,
            outs,
            entries,
            checks: at,
            rems,
            last,
        })
    }

    /// Count rows a block needs: one per pair.
    pub fn rows<const L: usize>(&self) -> Vec<[u32; L]> {
        vec![[0; L]; self.pairs.len()]
    }
}

#[inline(always)]
fn shared_chunk<G: Lanes<L>, const L: usize>(
    g: &mut G,
    c: &SharedCtx<G::W, G::J>,
    cnt: &mut [[u32; L]],
    chunk: Chunk<'_>,
    out: &mut Vec<Hit>,
) {
    let mut seeds = [0u64; L];
    match chunk {
        Chunk::Range(start, end) => {
            let mut s = start;
            while s < end {
                let valid = ((end - s) as usize).min(L);
                for (l, seed) in seeds.iter_mut().enumerate() {
                    // Padding lanes repeat the last seed; their results are dropped.
                    *seed = s + (l.min(valid - 1)) as u64;
                }
                if valid == L {
                    g.prepare_range(s);
                } else {
                    g.prepare(&seeds);
                }
                shared_block(g, c, cnt, &seeds, valid, out);
                s += valid as u64;
            }
        }
        Chunk::List(list) => {
            for part in list.chunks(L) {
                for (l, seed) in seeds.iter_mut().enumerate() {
                    *seed = part[l.min(part.len() - 1)];
                }
                g.prepare(&seeds);
                shared_block(g, c, cnt, &seeds, part.len(), out);
            }
        }
    }
}

#[inline(always)]
fn shared_block<G: Lanes<L>, const L: usize>(
    g: &mut G,
    c: &SharedCtx<G::W, G::J>,
    cnt: &mut [[u32; L]],
    seeds: &[u64; L],
    valid: usize,
    out: &mut Vec<Hit>,
) {
    let np = c.pairs.len();
    g.restart();
    g.jump(&c.first);
    for row in cnt.iter_mut() {
        *row = [0; L];
    }
    let mut end = c.outs.len();
    let mut ci = 0;
    let mut next_check = c.checks.first().map_or(usize::MAX, |&a| a as usize);
    let mut e0 = 0usize;
    let mut a = 0;
    while a < end {
        let o = c.outs[a];
        if o.jump != NO_JUMP {
            g.jump(&c.jumps[o.jump as usize]);
        }
        let v = g.next();
        for e in &c.entries[e0..o.end as usize] {
            G::W::count(&v, e.r, &c.test, &mut cnt[e.pair as usize]);
        }
        e0 = o.end as usize;
        if a == next_check {
            let rem = &c.rems[ci * np..(ci + 1) * np];
            let mut live_end = 0u32;
            for p in 0..np {
                let row = &cnt[p];
                let mut alive = false;
                for l in 0..L {
                    alive |= row[l] + rem[p] >= c.need;
                }
                if alive {
                    live_end = live_end.max(c.last[p]);
                }
            }
            if live_end == 0 {
                return;
            }
            end = live_end as usize;
            ci += 1;
            next_check = c.checks.get(ci).map_or(usize::MAX, |&a| a as usize);
        }
        a += 1;
    }
    // Pairs that died early hold partial counts below `need`: they can never win here.
    let mut best = [c.need - 1; L];
    let mut best_pair = [u32::MAX; L];
    for (p, row) in cnt.iter().enumerate() {
        for l in 0..L {
            let better = row[l] > best[l];
            best[l] = if better { row[l] } else { best[l] };
            best_pair[l] = if better { p as u32 } else { best_pair[l] };
        }
    }
    let mut any = false;
    for l in 0..L {
        any |= best_pair[l] != u32::MAX;
    }
    if !any {
        return;
    }
    for l in 0..valid {
        if best_pair[l] != u32::MAX {
            let (offset, skip) = c.pairs[best_pair[l] as usize];
            out.push(Hit {
                seed: seeds[l],
                matches: best[l],
                best_skip: skip,
                best_offset: offset,
            });
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(
    enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512cd,avx2,avx,fma,bmi1,bmi2,popcnt,lzcnt"
)]
unsafe fn shared_avx512<G: Lanes<L>, const L: usize>(
    g: &mut G,
    c: &SharedCtx<G::W, G::J>,
    cnt: &mut [[u32; L]],
    chunk: Chunk<'_>,
    out: &mut Vec<Hit>,
) {
    shared_chunk(g, c, cnt, chunk, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,avx,fma,bmi1,bmi2,popcnt,lzcnt")]
unsafe fn shared_avx2<G: Lanes<L>, const L: usize>(
    g: &mut G,
    c: &SharedCtx<G::W, G::J>,
    cnt: &mut [[u32; L]],
    chunk: Chunk<'_>,
    out: &mut Vec<Hit>,
) {
    shared_chunk(g, c, cnt, chunk, out)
}

#[inline(never)]
fn shared_portable<G: Lanes<L>, const L: usize>(
    g: &mut G,
    c: &SharedCtx<G::W, G::J>,
    cnt: &mut [[u32; L]],
    chunk: Chunk<'_>,
    out: &mut Vec<Hit>,
) {
    shared_chunk(g, c, cnt, chunk, out)
}

/// Runs the shared-stream engine over a chunk at `level` (supported, as for [`super::run`]).
/// `cnt` holds [`SharedCtx::rows`] rows.
pub(crate) fn run_shared<G: Lanes<L>, const L: usize>(
    level: SimdLevel,
    g: &mut G,
    c: &SharedCtx<G::W, G::J>,
    cnt: &mut [[u32; L]],
    chunk: Chunk<'_>,
    out: &mut Vec<Hit>,
) {
    match level {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `level` was lowered to what `is_x86_feature_detected!` reports.
        SimdLevel::Avx512 => unsafe { shared_avx512(g, c, cnt, chunk, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        SimdLevel::Avx2 => unsafe { shared_avx2(g, c, cnt, chunk, out) },
        _ => shared_portable(g, c, cnt, chunk, out),
    }
}
