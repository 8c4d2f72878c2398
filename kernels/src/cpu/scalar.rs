//! The portable per-seed constant-skip evaluator: exact for every family, one seed at a time.
//!
//! Compared with the reference it (a) stops a skip as soon as `matches + remaining draws` can no
//! longer beat the best count so far (which starts at `need - 1`, so a hopeless seed stops at
//! once), (b) jumps over offsets and skips in O(1) for LCG-type families and philox, and (c) for
//! the other families generates the seed's output stream once and shares it between skips.
//! Its results are the exact `(matches, best_skip)` of a survivor, so the fast paths use it both
//! as the fallback and to re-derive details for the few seeds they flag.

use super::gen::Gen;
use super::residue::Residue64;

/// What one constant-skip pass compares, prepared once per job.
#[derive(Debug, Clone)]
pub(crate) struct PassCtx {
    /// The window in the order this pass compares it, reduced mod the modulus.
    pub window: Vec<u64>,
    pub modulus: u64,
    pub test: Residue64,
    /// Matches needed to survive (at least 1).
    pub need: u32,
    pub skip_min: u32,
    pub skip_max: u32,
    /// The smallest offset; `offset_max` the largest (equal without an offset range). Only the
    /// lane engines' shared stream searches a range; other paths get one offset at a time.
    pub offset: u64,
    pub offset_max: u64,
}

impl PassCtx {
    pub fn k(&self) -> u32 {
        self.window.len() as u32
    }

    pub fn skips(&self) -> impl Iterator<Item = u32> {
        self.skip_min..=self.skip_max
    }

    /// Highest output number, relative to the offset, that a pass may read.
    pub fn span(&self) -> u128 {
        (self.skip_max as u128 + 1) * self.k() as u128
    }
}

/// A survivor of one pass: its best match count and the smallest (offset, skip) reaching it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hit {
    pub seed: u64,
    pub matches: u32,
    pub best_skip: u32,
    pub best_offset: u64,
}

/// Longest output stream kept per seed for sharing between skips.
const STREAM_LIMIT: u128 = 1 << 22;
/// Most skips whose jumps are precomputed; beyond, they are computed per seed.
const JUMP_TABLE_LIMIT: u32 = 1 << 16;

pub(crate) struct ScalarPass<'a, G: Gen> {
    proto: G,
    ctx: &'a PassCtx,
    /// Per skip `t - skip_min`: the jump to output `offset + t`, and the jump over `t` outputs.
    starts: Vec<G::J>,
    steps: Vec<G::J>,
    offset_jump: G::J,
    use_stream: bool,
}

impl<'a, G: Gen> ScalarPass<'a, G> {
    pub fn new(proto: G, ctx: &'a PassCtx) -> Self {
        let nskips = ctx.skip_max - ctx.skip_min + 1;
        let (mut starts, mut steps) = (Vec::new(), Vec::new());
        if G::JUMPABLE && nskips <= JUMP_TABLE_LIMIT {
            for t in ctx.skips() {
                starts.push(proto.jump_for(ctx.offset + t as u64));
                steps.push(proto.jump_for(t as u64));
            }
        }
        let use_stream = !G::JUMPABLE && nskips > 1 && ctx.span() <= STREAM_LIMIT;
        ScalarPass {
            offset_jump: proto.jump_for(ctx.offset),
            proto,
            ctx,
            starts,
            steps,
            use_stream,
        }
    }

    /// The exact pass result of `seed` if it reaches `need` matches.
    pub fn eval(&self, seed: u64, stream: &mut Vec<u64>) -> Option<Hit> {
        let ctx = self.ctx;
        let k = ctx.k();
        let w = &ctx.window[..];
        let mut best = ctx.need - 1;
        let mut best_skip = None;
        if self.use_stream {
            stream.clear();
            let mut g = self.proto.reseed(seed);
            g.jump(&self.offset_jump);
            for t in ctx.skips() {
                if best >= k {
                    break;
                }
                let step = t as usize + 1;
                let mut c = 0u32;
                for (i, &r) in w.iter().enumerate() {
                    let idx = t as usize + i * step;
                    while stream.len() <= idx {
                        stream.push(g.next());
                    }
                    c += ctx.test.matches(stream[idx], r) as u32;
                    if c + (k - 1 - i as u32) <= best {
                        break;
                    }
                }
                if c > best {
                    best = c;
                    best_skip = Some(t);
                }
            }
        } else {
            let base = if G::JUMPABLE {
                None
            } else {
                let mut g = self.proto.reseed(seed);
                g.jump(&self.offset_jump);
                Some(g)
            };
            for t in ctx.skips() {
                if best >= k {
                    break;
                }
                let idx = (t - ctx.skip_min) as usize;
                let (mut g, step) = match &base {
                    Some(g0) => {
                        let mut g = g0.clone();
                        g.jump(&self.proto.jump_for(t as u64));
                        (g, self.proto.jump_for(t as u64))
                    }
                    None if idx < self.starts.len() => {
                        let mut g = self.proto.reseed(seed);
                        g.jump(&self.starts[idx]);
                        (g, self.steps[idx])
                    }
                    None => {
                        let mut g = self.proto.reseed(seed);
                        g.jump(&self.proto.jump_for(ctx.offset + t as u64));
                        (g, self.proto.jump_for(t as u64))
                    }
                };
                let mut c = 0u32;
                for (i, &r) in w.iter().enumerate() {
                    c += ctx.test.matches(g.next(), r) as u32;
                    if c + (k - 1 - i as u32) <= best {
                        break;
                    }
                    if t > 0 {
                        g.jump(&step);
                    }
                }
                if c > best {
                    best = c;
                    best_skip = Some(t);
                }
            }
        }
        best_skip.map(|best_skip| Hit {
            seed,
            matches: best,
            best_skip,
            best_offset: ctx.offset,
        })
    }

    /// Every survivor among `seeds`, in the order given.
    pub fn eval_all(&self, seeds: impl Iterator<Item = u64>, out: &mut Vec<Hit>) {
        let mut stream = Vec::new();
        out.extend(seeds.filter_map(|s| self.eval(s, &mut stream)));
    }
}
