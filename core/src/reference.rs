//! The scalar reference sieve: the definitions of `docs/semantics.md` written out one seed,
//! one skip and one draw at a time. Every other backend must return exactly what this returns.
//!
//! # Constant skip
//!
//! For each seed and each skip `t` in `[skip_min, skip_max]`, draw `i` (after reduction mod
//! `modulus`) is compared with generator output number `offset + t + i*(t+1)`; matches are
//! counted. The pass result is the smallest `t` with the most matches. The seed survives the pass
//! when that count is at least `threshold.min_matches(k)` (an exact integer).
//!
//! # Offset ranges
//!
//! With `offset_max`, every offset `o` in `[offset, offset_max]` is searched as if it were the
//! spec's offset, and the pass result is the best over all `(o, t)`: the most matches, ties to
//! the smallest offset, then (constant skip) the smallest skip or (variable skip) the first
//! strategy. The result names the winning offset in `best_offset`.
//!
//! # Reverse and bidirectional
//!
//! The reverse pass is the same computation against the reversed window, with
//! `reverse_threshold` (or `threshold` when unset). [`Direction::Reverse`] runs only the reverse
//! pass. [`Direction::Bidirectional`] runs the forward pass, then the reverse pass on forward
//! survivors only; a seed survives when it passes both, and its record carries both results.
//!
//! # Variable skip ("hybrid")
//!
//! One algorithm for every family. Each strategy `(max_consecutive_misses M, skip_tolerance T)`
//! is run independently over the window (draw 0 first; the reversed window for the reverse pass):
//!
//! ```text
//! pos      = offset            // number of the next generator output not yet consumed
//! expected = skip_min
//! misses   = 0                 // consecutive misses
//! ended    = false
//! for i in 0..k:
//!     if ended: pattern[i] = expected; continue            // a miss, nothing consumed
//!     lo = max(skip_min, expected - T); hi = min(skip_max, expected + T)
//!     t  = smallest t in lo..=hi with output(pos + t) ≡ draw[i] (mod modulus)
//!     if found: matches += 1; misses = 0; expected = t; pattern[i] = t; pos += t + 1
//!     else:     pattern[i] = expected; pos += expected + 1; misses += 1
//!               if misses >= M: ended = true
//! ```
//!
//! * The offset is applied once (as the starting output number), exactly as in constant skip:
//!   with `T = 0` a strategy is the constant-skip pass at `skip_min` until it ends.
//! * On a miss the draw consumes `expected + 1` outputs, as if the expected skip had been right.
//! * A strategy ends after its `M`-th consecutive miss (`misses >= M`, so `M = 3` tolerates two
//!   consecutive misses and stops at the third). Draws after the end are misses whose pattern
//!   entry is the last expected skip: the pattern always has exactly `k` defined entries.
//! * `expected` always lies in `[skip_min, skip_max]`, so the search window is never empty and
//!   every output number used is at most `offset + skip_max + (k-1)*(skip_max+1)`, the same bound
//!   as constant skip.
//! * The winning strategy has the most matches; ties go to the first strategy in the spec's order
//!   (the five presets of [`Strategy::presets`] by default). The seed survives on the winner's
//!   integer match count, as in constant skip. The pass result carries the winner's name and its
//!   skip pattern (`pattern[i]` is the skip used before draw `i`); `best_skip` is `None`.
//!
//! The per-strategy state is `(pos, expected, misses, ended, matches)` plus the generator state
//! at output `pos` (the search looks ahead from a copy of it, then the copy is advanced by the
//! `t + 1` or `expected + 1` outputs the draw consumed): a GPU kernel evaluates every strategy
//! with O(1) memory per thread and no per-draw arrays, keeping only the match counts. The skip
//! pattern of a survivor is recomputed on the host with [`evaluate_seed`]. A backend may stop a
//! strategy early once `matches + remaining draws` cannot beat the best so far or reach the
//! threshold, provided the reported winner and count are unchanged.

use std::collections::VecDeque;

use crate::family::{FamilyConfig, Generator};
use crate::spec::{
    Direction, PassResult, SeedSet, SieveError, SieveOutcome, SieveSpec, SkipMode, Strategy,
    Survivor,
};

/// The window `seed` produces at constant skip `t`: draw `i` is output `offset + t + i*(t+1)`,
/// reduced mod `modulus`. (The inverse of the constant-skip pass, for planting seeds in tests, benches and
/// `seedq-producer gen-draws`. Walks one generator along the window: `output_at` per draw would be
/// quadratic in the window length.)
pub fn planted_window(
    cfg: &FamilyConfig,
    seed: u64,
    offset: u64,
    t: u32,
    k: usize,
    modulus: u64,
) -> Vec<u64> {
    let mut g = cfg.generator(seed);
    g.advance(offset + t as u64);
    (0..k)
        .map(|i| {
            if i > 0 {
                g.advance(t as u64);
            }
            g.next_output() % modulus
        })
        .collect()
}

/// Validates `spec` and `seeds`, then runs the reference sieve.
pub fn try_sieve(spec: &SieveSpec, seeds: &SeedSet) -> Result<SieveOutcome, SieveError> {
    spec.validate()?;
    spec.validate_seeds(seeds)?;
    Ok(sieve(spec, seeds))
}

/// Runs the sieve exactly as the definitions say, one seed and one skip at a time.
///
/// `spec` and `seeds` must be valid ([`SieveSpec::validate`], [`SieveSpec::validate_seeds`]);
/// this panics otherwise, so callers with untrusted input use [`try_sieve`]. Survivors are sorted
/// by seed, one per seed (a candidate list may repeat seeds); `seeds_tested` is the size of the
/// seed set as given.
pub fn sieve(spec: &SieveSpec, seeds: &SeedSet) -> SieveOutcome {
    if let Err(e) = spec.validate().and_then(|_| spec.validate_seeds(seeds)) {
        panic!("reference::sieve called with an invalid job: {e}");
    }
    let prepared = Prepared::new(spec);
    let survivors = match seeds {
        SeedSet::Range { start, end } => (*start..*end)
            .filter_map(|seed| prepared.evaluate(seed))
            .collect(),
        SeedSet::List(list) => {
            let mut sorted = list.clone();
            sorted.sort_unstable();
            sorted.dedup();
            sorted
                .into_iter()
                .filter_map(|seed| prepared.evaluate(seed))
                .collect()
        }
    };
    SieveOutcome {
        survivors,
        seeds_tested: seeds.len(),
    }
}

/// The survivor record for one seed, or `None` when the seed does not survive `spec`.
/// Backends use it to re-derive the details (best skip, strategy, skip pattern) of survivors.
pub fn evaluate_seed(spec: &SieveSpec, seed: u64) -> Option<Survivor> {
    Prepared::new(spec).evaluate(seed)
}

/// One pass (forward or reverse) for one seed, whether or not it survives.
pub fn pass_result(spec: &SieveSpec, seed: u64, reverse: bool) -> PassResult {
    let prepared = Prepared::new(spec);
    prepared.pass(
        seed,
        if reverse {
            &prepared.reverse
        } else {
            &prepared.forward
        },
    )
}

/// The per-job data every seed reuses.
struct Prepared<'a> {
    spec: &'a SieveSpec,
    forward: Vec<u64>,
    reverse: Vec<u64>,
    need_forward: u32,
    need_reverse: u32,
}

impl<'a> Prepared<'a> {
    fn new(spec: &'a SieveSpec) -> Self {
        Prepared {
            spec,
            forward: spec.window(false),
            reverse: spec.window(true),
            need_forward: spec.min_matches(false),
            need_reverse: spec.min_matches(true),
        }
    }

    fn evaluate(&self, seed: u64) -> Option<Survivor> {
        let survives_forward =
            || Some(self.pass(seed, &self.forward)).filter(|p| p.matches >= self.need_forward);
        let survives_reverse =
            || Some(self.pass(seed, &self.reverse)).filter(|p| p.matches >= self.need_reverse);
        match self.spec.direction {
            Direction::Forward => survives_forward().map(|f| Survivor {
                seed,
                forward: Some(f),
                reverse: None,
            }),
            Direction::Reverse => survives_reverse().map(|r| Survivor {
                seed,
                forward: None,
                reverse: Some(r),
            }),
            Direction::Bidirectional => {
                let f = survives_forward()?;
                let r = survives_reverse()?;
                Some(Survivor {
                    seed,
                    forward: Some(f),
                    reverse: Some(r),
                })
            }
        }
    }

    fn pass(&self, seed: u64, window: &[u64]) -> PassResult {
        let mut stream = OutputStream::new(self.spec, seed);
        match &self.spec.skip_mode {
            SkipMode::Constant => constant_pass(self.spec, &mut stream, window),
            SkipMode::Variable { strategies } => {
                variable_pass(self.spec, strategies, &mut stream, window)
            }
        }
    }
}

fn constant_pass(spec: &SieveSpec, stream: &mut OutputStream, window: &[u64]) -> PassResult {
    let mut best: Option<(u32, u64, u32)> = None; // (matches, offset, skip)
    for o in spec.offsets() {
        let base = o - spec.offset;
        for t in spec.skip_min..=spec.skip_max {
            let step = t as u64 + 1;
            let matches = window
                .iter()
                .enumerate()
                .filter(|&(i, &draw)| stream.residue(base + t as u64 + i as u64 * step) == draw)
                .count() as u32;
            // Strictly greater: the smallest offset, then the smallest skip, wins ties.
            if best.is_none_or(|(m, _, _)| matches > m) {
                best = Some((matches, o, t));
            }
        }
    }
    let (matches, offset, skip) = best.expect("offset and skip ranges are non-empty");
    PassResult {
        matches,
        total: window.len() as u32,
        best_skip: Some(skip),
        best_offset: spec.offset_max.map(|_| offset),
        strategy: None,
        skip_pattern: None,
    }
}

/// One strategy of the variable-skip algorithm (see the module doc): `(matches, pattern)`.
pub fn run_strategy(
    spec: &SieveSpec,
    seed: u64,
    strategy: &Strategy,
    reverse: bool,
) -> (u32, Vec<u32>) {
    let mut stream = OutputStream::new(spec, seed);
    run_strategy_on(
        spec,
        strategy,
        &mut stream,
        &spec.window(reverse),
        spec.offset,
    )
}

/// One strategy from offset `at` (one of [`SieveSpec::offsets`]).
fn run_strategy_on(
    spec: &SieveSpec,
    strategy: &Strategy,
    stream: &mut OutputStream,
    window: &[u64],
    at: u64,
) -> (u32, Vec<u32>) {
    let mut pos: u64 = at - spec.offset; // relative to the spec's (smallest) offset
    let mut expected = spec.skip_min;
    let mut misses = 0u32;
    let mut ended = false;
    let mut matches = 0u32;
    let mut pattern = Vec::with_capacity(window.len());
    for &draw in window {
        if ended {
            pattern.push(expected);
            continue;
        }
        let lo = expected
            .saturating_sub(strategy.skip_tolerance)
            .max(spec.skip_min);
        let hi = expected
            .saturating_add(strategy.skip_tolerance)
            .min(spec.skip_max);
        match (lo..=hi).find(|&t| stream.residue(pos + t as u64) == draw) {
            Some(t) => {
                matches += 1;
                misses = 0;
                expected = t;
                pattern.push(t);
                pos += t as u64 + 1;
            }
            None => {
                pattern.push(expected);
                pos += expected as u64 + 1;
                misses += 1;
                if misses >= strategy.max_consecutive_misses {
                    ended = true;
                }
            }
        }
    }
    (matches, pattern)
}

fn variable_pass(
    spec: &SieveSpec,
    strategies: &[Strategy],
    stream: &mut OutputStream,
    window: &[u64],
) -> PassResult {
    let mut best: Option<(u32, u64, &Strategy, Vec<u32>)> = None;
    for o in spec.offsets() {
        for strategy in strategies {
            let (matches, pattern) = run_strategy_on(spec, strategy, stream, window, o);
            // Strictly greater: the smallest offset, then the first strategy in order, wins ties.
            if best.as_ref().is_none_or(|(m, _, _, _)| matches > *m) {
                best = Some((matches, o, strategy, pattern));
            }
        }
    }
    let (matches, offset, strategy, pattern) = best.expect("validated: at least one strategy");
    PassResult {
        matches,
        total: window.len() as u32,
        best_skip: None,
        best_offset: spec.offset_max.map(|_| offset),
        strategy: Some(strategy.name.clone()),
        skip_pattern: Some(pattern),
    }
}

/// Outputs of one seeded generator reduced mod the job's modulus, by number relative to the
/// offset.
///
/// Invariant: `buffer[j]` is output `offset + base + j`, and `filler` is positioned at output
/// `offset + base + buffer.len()`. When the job's whole span fits in [`Self::BUFFER_LIMIT`]
/// outputs they are generated once and shared by every skip and strategy of the seed. Otherwise
/// gaps are jumped over ([`Generator::advance`]), the buffer keeps at most `BUFFER_LIMIT` recent
/// outputs, and a request below the buffer re-seeds.
struct OutputStream<'a> {
    family: &'a FamilyConfig,
    seed: u64,
    offset: u64,
    modulus: u64,
    keep_all: bool,
    limit: usize,
    base: u64,
    buffer: VecDeque<u64>,
    filler: Generator,
}

impl<'a> OutputStream<'a> {
    const BUFFER_LIMIT: usize = 1 << 20;

    fn new(spec: &'a SieveSpec, seed: u64) -> Self {
        let span = spec.max_output_index() - spec.offset as u128 + 1;
        Self::with_limit(
            &spec.family,
            seed,
            spec.offset,
            spec.modulus,
            span,
            Self::BUFFER_LIMIT,
        )
    }

    fn with_limit(
        family: &'a FamilyConfig,
        seed: u64,
        offset: u64,
        modulus: u64,
        span: u128,
        limit: usize,
    ) -> Self {
        let mut filler = family.generator(seed);
        filler.advance(offset);
        OutputStream {
            family,
            seed,
            offset,
            modulus,
            keep_all: span <= limit as u128,
            limit,
            base: 0,
            buffer: VecDeque::new(),
            filler,
        }
    }

    /// Output number `offset + rel` of the generator seeded with the seed, mod the modulus.
    fn residue(&mut self, rel: u64) -> u64 {
        if rel < self.base {
            self.filler = self.family.generator(self.seed);
            self.filler.advance(self.offset + rel);
            self.base = rel;
            self.buffer.clear();
        }
        let end = self.base + self.buffer.len() as u64;
        if rel > end && !self.keep_all {
            self.filler.advance(rel - end);
            self.base = rel;
            self.buffer.clear();
        }
        while self.base + (self.buffer.len() as u64) <= rel {
            self.buffer
                .push_back(self.filler.next_output() % self.modulus);
        }
        if self.buffer.len() > self.limit {
            let drop = (self.buffer.len() - self.limit / 2).min((rel - self.base) as usize);
            self.buffer.drain(..drop);
            self.base += drop as u64;
        }
        self.buffer[(rel - self.base) as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::family::Family;

    #[test]
    fn output_stream_returns_output_at_in_both_buffer_modes() {
        for family in [
            Family::Xorshift32,
            Family::Lcg32,
            Family::Mt19937,
            Family::Philox4x32,
        ] {
            let cfg = FamilyConfig::new(family);
            // Access patterns of the constant pass (restart per skip) and of the variable pass.
            let accesses = [
                0u64, 3, 1, 2, 40, 41, 45, 44, 200, 5, 6, 7, 8, 9, 10, 11, 12, 13, 2, 1000, 999,
            ];
            for (span, limit) in [(2000u128, 4096usize), (2000, 4), (1 << 40, 1 << 20)] {
                let mut stream = OutputStream::with_limit(&cfg, 77, 5, 1000, span, limit);
                for &rel in &accesses {
                    assert_eq!(
                        stream.residue(rel),
                        cfg.output_at(77, 5 + rel) % 1000,
                        "{family} rel {rel} limit {limit}"
                    );
                    assert!(stream.buffer.len() <= limit.max(2), "buffer bounded");
                }
            }
        }
    }
}
