//! Compact sieve survivors: the form they take between a slot, the store and `results`.
//!
//! A chunk's survivors (sorted by seed, one per seed) are encoded into *pieces* of at most
//! [`MAX_PIECE_BYTES`] (or one record, if a single record is larger), so that no Redis command
//! ever moves more than that and a reader streams a job piece by piece. A piece is:
//!
//! ```text
//! u8 version (1) · varint n · varint first_seed · then per record:
//!   varint (seed - previous seed - 1)          (records 2..n: seeds strictly increase)
//!   per pass the job runs (forward, then reverse):
//!     varint matches
//!     with an offset range: varint (best_offset - offset)
//!     constant skip: varint best_skip
//!     variable skip: varint strategy index (in the spec's order) · k varints skip pattern
//! ```
//!
//! Varints are LEB128. `total` (= k) and the strategy names come from the job's spec
//! ([`RecordShape`]), so a forward constant-skip survivor of a dense job takes 3-4 bytes
//! instead of ~126 as a JSON hash field.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use seedq_core::spec::{Direction, PassResult, SieveSpec, SkipMode, Survivor};

/// Largest piece a writer produces (unless one record alone is larger).
pub const MAX_PIECE_BYTES: usize = 64 * 1024;

const VERSION: u8 = 1;

/// A piece that does not decode, or a record that does not fit the job's shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The piece ends early or has an unknown version.
    #[error("corrupt survivor piece: {0}")]
    Corrupt(&'static str),
    /// A survivor lacks a pass the job runs, or carries the wrong kind of result.
    #[error("survivor {seed} does not fit the job's shape: {what}")]
    Shape {
        /// The survivor's seed.
        seed: u64,
        /// What is missing or wrong.
        what: &'static str,
    },
    /// Seeds do not strictly increase (records must be sorted and deduplicated by seed).
    #[error("survivor seeds must strictly increase: {0} after {1}")]
    Order(u64, u64),
}

/// What a decoder needs from the spec: which passes run, the window length and the
/// variable-skip strategy names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordShape {
    forward: bool,
    reverse: bool,
    k: u32,
    /// `Some(offset)` when the job searches an offset range: records carry their best offset,
    /// stored relative to this smallest one.
    offsets: Option<u64>,
    /// `Some` for variable skip: the strategy names in the spec's order.
    strategies: Option<Vec<String>>,
}

impl RecordShape {
    /// The shape of `spec`'s survivor records.
    pub fn of(spec: &SieveSpec) -> RecordShape {
        RecordShape {
            forward: spec.direction != Direction::Reverse,
            reverse: spec.direction != Direction::Forward,
            k: spec.k() as u32,
            offsets: spec.offset_max.map(|_| spec.offset),
            strategies: match &spec.skip_mode {
                SkipMode::Constant => None,
                SkipMode::Variable { strategies } => {
                    Some(strategies.iter().map(|s| s.name.clone()).collect())
                }
            },
        }
    }

    fn passes(&self) -> impl Iterator<Item = bool> {
        [(self.forward, false), (self.reverse, true)]
            .into_iter()
            .filter(|(on, _)| *on)
            .map(|(_, reverse)| reverse)
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(bytes: &[u8], pos: &mut usize) -> Result<u64, CodecError> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes
            .get(*pos)
            .ok_or(CodecError::Corrupt("truncated varint"))?;
        *pos += 1;
        v |= ((b & 0x7f) as u64) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(CodecError::Corrupt("varint longer than 64 bits"))
}

fn encode_record(shape: &RecordShape, s: &Survivor, out: &mut Vec<u8>) -> Result<(), CodecError> {
    for reverse in shape.passes() {
        let pass = if reverse { &s.reverse } else { &s.forward };
        let pass = pass.as_ref().ok_or(CodecError::Shape {
            seed: s.seed,
            what: "a pass the job runs is missing",
        })?;
        put_varint(out, pass.matches as u64);
        if let Some(first) = shape.offsets {
            let best = pass
                .best_offset
                .filter(|&o| o >= first)
                .ok_or(CodecError::Shape {
                    seed: s.seed,
                    what: "an offset-range job's result without a best_offset in its range",
                })?;
            put_varint(out, best - first);
        }
        match &shape.strategies {
            None => put_varint(
                out,
                pass.best_skip.ok_or(CodecError::Shape {
                    seed: s.seed,
                    what: "constant skip without best_skip",
                })? as u64,
            ),
            Some(names) => {
                let name = pass.strategy.as_deref().ok_or(CodecError::Shape {
                    seed: s.seed,
                    what: "variable skip without strategy",
                })?;
                let index = names
                    .iter()
                    .position(|n| n == name)
                    .ok_or(CodecError::Shape {
                        seed: s.seed,
                        what: "strategy not in the spec",
                    })?;
                put_varint(out, index as u64);
                let pattern = pass.skip_pattern.as_deref().unwrap_or(&[]);
                if pattern.len() != shape.k as usize {
                    return Err(CodecError::Shape {
                        seed: s.seed,
                        what: "skip pattern is not k entries long",
                    });
                }
                for t in pattern {
                    put_varint(out, *t as u64);
                }
            }
        }
    }
    Ok(())
}

/// Encodes survivors (sorted by seed, one per seed) into pieces of at most
/// [`MAX_PIECE_BYTES`] each (a piece holds at least one record). No survivors, no pieces.
pub fn encode(shape: &RecordShape, survivors: &[Survivor]) -> Result<Vec<Vec<u8>>, CodecError> {
    let mut pieces = Vec::new();
    let mut body = Vec::new();
    let mut record = Vec::new();
    let (mut first, mut prev, mut n) = (0u64, 0u64, 0u64);
    let flush = |pieces: &mut Vec<Vec<u8>>, body: &mut Vec<u8>, first: u64, n: u64| {
        if n == 0 {
            return;
        }
        let mut piece = Vec::with_capacity(body.len() + 20);
        piece.push(VERSION);
        put_varint(&mut piece, n);
        put_varint(&mut piece, first);
        piece.extend_from_slice(body);
        pieces.push(piece);
        body.clear();
    };
    for (i, s) in survivors.iter().enumerate() {
        if i > 0 && s.seed <= prev {
            return Err(CodecError::Order(s.seed, prev));
        }
        record.clear();
        if n > 0 {
            put_varint(&mut record, s.seed - prev - 1);
        }
        encode_record(shape, s, &mut record)?;
        if n > 0 && body.len() + record.len() + 21 > MAX_PIECE_BYTES {
            flush(&mut pieces, &mut body, first, n);
            n = 0;
            // A new piece starts with an absolute seed, not a delta.
            record.clear();
            encode_record(shape, s, &mut record)?;
        }
        if n == 0 {
            first = s.seed;
        }
        body.extend_from_slice(&record);
        prev = s.seed;
        n += 1;
    }
    flush(&mut pieces, &mut body, first, n);
    Ok(pieces)
}

/// Decodes one piece back into its records (sorted by seed).
pub fn decode(shape: &RecordShape, piece: &[u8]) -> Result<Vec<Survivor>, CodecError> {
    if piece.first() != Some(&VERSION) {
        return Err(CodecError::Corrupt("unknown piece version"));
    }
    let mut pos = 1;
    let n = get_varint(piece, &mut pos)?;
    let mut seed = get_varint(piece, &mut pos)?;
    // A record is at least two bytes: never trust `n` for the allocation.
    let mut out = Vec::with_capacity((n as usize).min(piece.len() / 2 + 1));
    for i in 0..n {
        if i > 0 {
            let delta = get_varint(piece, &mut pos)?;
            seed = seed
                .checked_add(delta)
                .and_then(|s| s.checked_add(1))
                .ok_or(CodecError::Corrupt("seed overflows u64"))?;
        }
        let mut record = Survivor {
            seed,
            forward: None,
            reverse: None,
        };
        for reverse in shape.passes() {
            let matches = get_varint(piece, &mut pos)? as u32;
            let mut pass = PassResult {
                matches,
                total: shape.k,
                best_skip: None,
                best_offset: None,
                strategy: None,
                skip_pattern: None,
            };
            if let Some(first) = shape.offsets {
                let rel = get_varint(piece, &mut pos)?;
                pass.best_offset = Some(
                    first
                        .checked_add(rel)
                        .ok_or(CodecError::Corrupt("best offset overflows u64"))?,
                );
            }
            match &shape.strategies {
                None => pass.best_skip = Some(get_varint(piece, &mut pos)? as u32),
                Some(names) => {
                    let index = get_varint(piece, &mut pos)? as usize;
                    pass.strategy = Some(
                        names
                            .get(index)
                            .ok_or(CodecError::Corrupt("strategy index out of range"))?
                            .clone(),
                    );
                    let mut pattern = Vec::with_capacity(shape.k as usize);
                    for _ in 0..shape.k {
                        pattern.push(get_varint(piece, &mut pos)? as u32);
                    }
                    pass.skip_pattern = Some(pattern);
                }
            }
            if reverse {
                record.reverse = Some(pass);
            } else {
                record.forward = Some(pass);
            }
        }
        out.push(record);
    }
    if pos != piece.len() {
        return Err(CodecError::Corrupt("trailing bytes"));
    }
    Ok(out)
}

/// The number of records in a piece (read from its header alone).
pub fn piece_len(piece: &[u8]) -> Result<u64, CodecError> {
    if piece.first() != Some(&VERSION) {
        return Err(CodecError::Corrupt("unknown piece version"));
    }
    let mut pos = 1;
    get_varint(piece, &mut pos)
}

/// One pass's counts in a count-only job: survivors of the pass and how many of them reached
/// each best match count.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassCounts {
    /// Seeds that passed this pass (for the reverse pass of a bidirectional job: among the
    /// forward survivors, so this is the intersection).
    pub survivors: u64,
    /// Best match count -> seeds with it.
    pub best_matches: BTreeMap<u32, u64>,
}

impl PassCounts {
    /// Counts one surviving seed's pass.
    pub fn add(&mut self, matches: u32) {
        self.survivors += 1;
        *self.best_matches.entry(matches).or_default() += 1;
    }

    /// Adds another chunk's counts of the same pass.
    pub fn merge(&mut self, other: &PassCounts) {
        self.survivors += other.survivors;
        for (m, n) in &other.best_matches {
            *self.best_matches.entry(*m).or_default() += n;
        }
    }
}

/// What a count-only sieve chunk (or job, after [`SieveCounts::merge`]) keeps instead of
/// per-seed records. Integer counters: a job's counts are the exact sum of its chunks'.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SieveCounts {
    /// Seeds that survived every pass the job runs.
    pub survivors: u64,
    /// The forward pass (forward and bidirectional jobs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward: Option<PassCounts>,
    /// The reverse pass (reverse and bidirectional jobs; bidirectional: on forward survivors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverse: Option<PassCounts>,
}

impl SieveCounts {
    /// Adds another chunk's counts (commutative and associative).
    pub fn merge(&mut self, other: &SieveCounts) {
        self.survivors += other.survivors;
        for (mine, theirs) in [
            (&mut self.forward, &other.forward),
            (&mut self.reverse, &other.reverse),
        ] {
            if let Some(theirs) = theirs {
                mine.get_or_insert_with(Default::default).merge(theirs);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use seedq_core::family::{Family, FamilyConfig};
    use seedq_core::spec::{Strategy, Threshold};

    fn spec(direction: Direction, variable: bool) -> SieveSpec {
        SieveSpec {
            family: FamilyConfig::new(Family::Lcg32),
            draws: vec![1, 2, 3, 4],
            modulus: 10,
            offset: 0,
            offset_max: None,
            skip_min: 0,
            skip_max: 5,
            threshold: Threshold::parse("0.5").unwrap(),
            reverse_threshold: None,
            direction,
            skip_mode: if variable {
                SkipMode::Variable {
                    strategies: Strategy::presets(),
                }
            } else {
                SkipMode::Constant
            },
        }
    }

    fn pass(matches: u32, variable: bool, salt: u32) -> PassResult {
        PassResult {
            matches,
            total: 4,
            best_skip: (!variable).then_some(salt % 6),
            best_offset: None,
            strategy: variable.then(|| Strategy::presets()[salt as usize % 5].name.clone()),
            skip_pattern: variable.then(|| vec![salt % 6, 1, 0, 5]),
        }
    }

    fn survivors(direction: Direction, variable: bool, n: u64, gap: u64) -> Vec<Survivor> {
        (0..n)
            .map(|i| {
                let seed = u64::MAX - (n - 1 - i) * gap;
                Survivor {
                    seed,
                    forward: (direction != Direction::Reverse)
                        .then(|| pass(2 + (i % 3) as u32, variable, i as u32)),
                    reverse: (direction != Direction::Forward)
                        .then(|| pass(4, variable, 7 * i as u32)),
                }
            })
            .collect()
    }

    #[test]
    fn every_shape_round_trips_across_pieces() {
        for direction in [
            Direction::Forward,
            Direction::Reverse,
            Direction::Bidirectional,
        ] {
            for variable in [false, true] {
                let s = spec(direction, variable);
                let shape = RecordShape::of(&s);
                let records = survivors(direction, variable, 40_000, 3);
                let pieces = encode(&shape, &records).unwrap();
                assert!(pieces.len() > 1, "{direction:?} {variable}: several pieces");
                assert!(pieces.iter().all(|p| p.len() <= MAX_PIECE_BYTES));
                let mut back = Vec::new();
                for p in &pieces {
                    let decoded = decode(&shape, p).unwrap();
                    assert_eq!(piece_len(p).unwrap(), decoded.len() as u64);
                    back.extend(decoded);
                }
                assert_eq!(back, records, "{direction:?} variable {variable}");
            }
        }
    }

    #[test]
    fn offset_range_records_carry_their_best_offset() {
        for variable in [false, true] {
            let mut s = spec(Direction::Bidirectional, variable);
            s.offset = 1000;
            s.offset_max = Some(1100);
            let shape = RecordShape::of(&s);
            let mut records = survivors(Direction::Bidirectional, variable, 5_000, 7);
            for (i, r) in records.iter_mut().enumerate() {
                r.forward.as_mut().unwrap().best_offset = Some(1000 + i as u64 % 101);
                r.reverse.as_mut().unwrap().best_offset = Some(1100 - i as u64 % 13);
            }
            let back: Vec<Survivor> = encode(&shape, &records)
                .unwrap()
                .iter()
                .flat_map(|p| decode(&shape, p).unwrap())
                .collect();
            assert_eq!(back, records);
            // A result without its offset, or below the range, does not fit the job.
            records[3].forward.as_mut().unwrap().best_offset = None;
            assert!(matches!(
                encode(&shape, &records),
                Err(CodecError::Shape { .. })
            ));
            records[3].forward.as_mut().unwrap().best_offset = Some(999);
            assert!(encode(&shape, &records).is_err());
        }
    }

    #[test]
    fn dense_forward_survivors_take_a_few_bytes() {
        let s = spec(Direction::Forward, false);
        let records = survivors(Direction::Forward, false, 100_000, 2);
        let bytes: usize = encode(&RecordShape::of(&s), &records)
            .unwrap()
            .iter()
            .map(Vec::len)
            .sum();
        // One byte each for the seed delta, the matches and the best skip, plus piece headers.
        assert!(bytes <= 3 * records.len() + 64, "{bytes} bytes");
    }

    #[test]
    fn counts_merge_exactly() {
        let mut a = SieveCounts::default();
        let mut f = PassCounts::default();
        f.add(3);
        f.add(3);
        f.add(5);
        a.forward = Some(f);
        a.survivors = 3;
        let mut b = a.clone();
        b.reverse = Some(PassCounts {
            survivors: 1,
            best_matches: [(4, 1)].into(),
        });
        b.survivors = 1;
        a.merge(&b);
        assert_eq!(a.survivors, 4);
        assert_eq!(a.forward.as_ref().unwrap().best_matches[&3], 4);
        assert_eq!(a.forward.as_ref().unwrap().survivors, 6);
        assert_eq!(a.reverse.as_ref().unwrap().survivors, 1);
    }

    #[test]
    fn bad_input_is_refused() {
        let s = spec(Direction::Bidirectional, false);
        let shape = RecordShape::of(&s);
        let mut records = survivors(Direction::Bidirectional, false, 3, 1);
        records.swap(0, 1);
        assert!(matches!(
            encode(&shape, &records),
            Err(CodecError::Order(..))
        ));
        let mut records = survivors(Direction::Bidirectional, false, 3, 1);
        records[2].reverse = None;
        assert!(matches!(
            encode(&shape, &records),
            Err(CodecError::Shape { .. })
        ));
        let pieces = encode(&shape, &survivors(Direction::Bidirectional, false, 3, 1)).unwrap();
        let piece = &pieces[0];
        assert!(decode(&shape, &piece[..piece.len() - 1]).is_err());
        assert!(decode(&shape, &[2, 0, 0]).is_err());
        assert!(encode(&shape, &[]).unwrap().is_empty());
    }
}
