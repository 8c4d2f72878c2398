//! What a sieve computes: the validated job description and the result records.
//!
//! These types are the contract between the backends (reference, CPU, CUDA, ROCm) and the rest
//! of seedq. Semantics (`docs/semantics.md`):
//!
//! * Draw `i` of the window (after reduction mod `modulus`) is compared with generator output
//!   number `offset + t + i*(t+1)` (0-based) of the generator seeded with the candidate seed, for
//!   every constant skip `t` in `[skip_min, skip_max]`. The offset is applied once.
//! * A seed survives a pass when its best match count reaches `threshold.min_matches(k)`, an
//!   integer computed exactly from the decimal threshold (no float rounding at the edge).
//! * Best skip: the smallest `t` with the most matches.
//! * Reverse: the same generator against the reversed window. Bidirectional: the reverse pass runs
//!   on forward survivors only, and a survivor carries both results.
//! * Variable skip: see [`SkipMode::Variable`]; the algorithm is documented in `reference`.

use serde::{Deserialize, Serialize};

use crate::family::FamilyConfig;

/// Errors a sieve spec or a backend can report. Messages name the problem and the fix.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum SieveError {
    /// A family name that is none of the eleven [`crate::Family`] names (the name given).
    #[error("unknown PRNG family '{0}' (known: xorshift32, xorshift64, xorshift128, pcg32, lcg32, java_lcg, minstd, mt19937, xoshiro256pp, philox4x32, sfc64)")]
    UnknownFamily(String),
    /// A family parameter that is unknown, unparsable or out of its range.
    #[error("invalid parameter for {family}: {message}")]
    InvalidParam {
        /// The family's name, e.g. `lcg32`.
        family: String,
        /// Which parameter is wrong and the range it must lie in.
        message: String,
    },
    /// The spec has no draws.
    #[error("the draw window is empty: give at least one draw")]
    EmptyWindow,
    /// More draws than [`SieveSpec::MAX_WINDOW`] (the number given).
    #[error("window of {0} draws is too long (at most {max})", max = SieveSpec::MAX_WINDOW)]
    WindowTooLong(usize),
    /// A modulus below 2 (the value given): every residue would be 0.
    #[error("modulus must be at least 2, got {0}")]
    InvalidModulus(u64),
    /// Threshold text that is not a decimal in (0, 1] with at most 18 fraction digits (the text).
    #[error("threshold must be in (0, 1], got {0}")]
    InvalidThreshold(String),
    /// `skip_min > skip_max`.
    #[error("skip range is empty: skip_min {min} > skip_max {max}")]
    InvalidSkipRange {
        /// The spec's `skip_min`.
        min: u32,
        /// The spec's `skip_max`.
        max: u32,
    },
    /// Seeds beyond the family's seed space ([`crate::Family::seed_space_end`]).
    #[error("seed range [{start}, {end}) is outside the {family} seed space [0, {space_end})")]
    SeedOutOfRange {
        /// The family's name.
        family: String,
        /// Smallest seed asked for.
        start: u128,
        /// One past the largest seed asked for.
        end: u128,
        /// Exclusive end of the family's seed space (2^32 or 2^64).
        space_end: u128,
    },
    /// A seed range with `start >= end`.
    #[error("seed range is empty: start {start} >= end {end}")]
    EmptySeedRange {
        /// The range's inclusive start.
        start: u128,
        /// The range's exclusive end.
        end: u128,
    },
    /// A variable-skip spec with no strategies or a strategy with `max_consecutive_misses = 0`.
    #[error("invalid variable-skip strategy: {0}")]
    InvalidStrategy(String),
    /// The highest output number a pass reads ([`SieveSpec::max_output_index`]) exceeds `u64`.
    #[error("the window needs generator output number {needed}, beyond 2^64 - 1: lower offset, skip_max or the window length")]
    OutputIndexOverflow {
        /// That output number.
        needed: u128,
    },
    /// `offset_max` below `offset`, or more offsets than [`SieveSpec::MAX_OFFSETS`].
    #[error("offset range [{offset}, {offset_max}] is invalid: offset_max must be at least offset and the range at most {max} offsets wide", max = SieveSpec::MAX_OFFSETS)]
    InvalidOffsetRange {
        /// The smallest offset.
        offset: u64,
        /// The largest offset asked for.
        offset_max: u64,
    },
    /// A device or backend failure while sieving (driver, allocation, launch); the message says which.
    #[error("backend failure: {0}")]
    Backend(String),
}

/// An exact decimal threshold in (0, 1]: `num / den`.
///
/// Parsed from the decimal text the user wrote (or from an `f64` via its shortest round-trip
/// decimal), so [`Threshold::min_matches`] is exact: for threshold `0.07` over 100 draws, `f64`
/// gives `0.07 * 100.0 = 7.000000000000001`, whose ceiling is 8, while the exact answer is 7.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Threshold {
    num: u64,
    den: u64,
}

impl Threshold {
    /// Parses decimal text such as `0.25`, `1`, `1.0`, `.7`.
    pub fn parse(text: &str) -> Result<Self, SieveError> {
        let bad = || SieveError::InvalidThreshold(text.to_string());
        let t = text.trim();
        let (int_part, frac_part) = match t.split_once('.') {
            Some((i, f)) => (i, f),
            None => (t, ""),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(bad());
        }
        if !int_part.chars().all(|c| c.is_ascii_digit())
            || !frac_part.chars().all(|c| c.is_ascii_digit())
        {
            return Err(bad());
        }
        let frac_part = frac_part.trim_end_matches('0');
        if frac_part.len() > 18 {
            return Err(bad());
        }
        let den = 10u64.pow(frac_part.len() as u32);
        let int_val: u64 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| bad())?
        };
        let frac_val: u64 = if frac_part.is_empty() {
            0
        } else {
            frac_part.parse().map_err(|_| bad())?
        };
        let num = int_val
            .checked_mul(den)
            .and_then(|v| v.checked_add(frac_val))
            .ok_or_else(bad)?;
        if num == 0 || num > den {
            return Err(bad());
        }
        Ok(Threshold { num, den })
    }

    /// From a float, through its shortest round-trip decimal text (`0.7` stays `7/10`).
    pub fn from_f64(value: f64) -> Result<Self, SieveError> {
        if !value.is_finite() {
            return Err(SieveError::InvalidThreshold(value.to_string()));
        }
        Self::parse(&format!("{value}"))
    }

    /// The smallest match count that reaches the threshold: `ceil(num * k / den)`, at least 1.
    pub fn min_matches(&self, k: usize) -> u32 {
        let k = k as u128;
        let need = (self.num as u128 * k).div_ceil(self.den as u128);
        need.max(1) as u32
    }

    /// The threshold as the nearest `f64` (for display and rates only; never for the cut-off).
    pub fn as_f64(&self) -> f64 {
        self.num as f64 / self.den as f64
    }
}

impl std::fmt::Display for Threshold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.num == self.den {
            return write!(f, "1");
        }
        let digits = (self.den as f64).log10().round() as usize;
        write!(f, "0.{:0width$}", self.num, width = digits)
    }
}

impl Serialize for Threshold {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Threshold {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Number(f64),
        }
        match Raw::deserialize(d)? {
            Raw::Text(t) => Threshold::parse(&t),
            Raw::Number(n) => Threshold::from_f64(n),
        }
        .map_err(serde::de::Error::custom)
    }
}

/// Which passes run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Only the forward pass: draw 0 first.
    #[default]
    Forward,
    /// Only the reverse pass: the same generator against the reversed window.
    Reverse,
    /// Forward pass, then the reverse pass on forward survivors only; a seed survives both.
    Bidirectional,
}

/// A variable-skip strategy: how many consecutive misses end it and how far the skip may wander.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Strategy {
    /// Reported as [`PassResult::strategy`] when this strategy wins.
    pub name: String,
    /// `M`: the strategy ends at its `M`-th consecutive miss (>= 1; `M = 3` tolerates two).
    pub max_consecutive_misses: u32,
    /// `T`: each draw searches skips within `expected ± T`, clamped to `[skip_min, skip_max]`.
    pub skip_tolerance: u32,
}

impl Strategy {
    /// The five presets of the original, in their order (which decides ties).
    pub fn presets() -> Vec<Strategy> {
        [
            ("strict_continuous", 3, 5),
            ("lenient_continuous", 10, 20),
            ("aggressive_reseed", 5, 5),
            ("balanced_hybrid", 7, 10),
            ("extreme_tolerance", 20, 50),
        ]
        .into_iter()
        .map(|(name, m, t)| Strategy {
            name: name.to_string(),
            max_consecutive_misses: m,
            skip_tolerance: t,
        })
        .collect()
    }
}

/// Constant skip over `[skip_min, skip_max]`, or the variable-skip ("hybrid") search.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case", tag = "mode")]
pub enum SkipMode {
    /// Every skip `t` in `[skip_min, skip_max]` is tried on its own, the same `t` before every draw.
    #[default]
    Constant,
    /// Variable skip with these strategies, tried in order (first wins ties). In JSON,
    /// `{"mode": "variable"}` without `strategies` means the five presets.
    Variable {
        /// The strategies, in tie-breaking order (at least one).
        #[serde(default = "Strategy::presets")]
        strategies: Vec<Strategy>,
    },
}

/// A validated sieve job, independent of seeds (one spec serves every chunk of a job).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SieveSpec {
    /// The generator family and its validated parameters.
    pub family: FamilyConfig,
    /// The window of draws in order: draw 0 first. Raw values; reduced mod `modulus` on use.
    pub draws: Vec<u64>,
    /// Draws and generator outputs are compared mod this (>= 2).
    pub modulus: u64,
    /// Generator outputs discarded before draw 0 (applied once). With [`Self::offset_max`] the
    /// smallest offset searched.
    pub offset: u64,
    /// Searches every offset in `[offset, offset_max]` in one pass over each seed's stream; a
    /// pass result then carries the best `(offset, skip)` (`None`: `offset` alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset_max: Option<u64>,
    /// Smallest skip `t`: outputs discarded before each compared one (draw `i` is output
    /// `offset + t + i*(t+1)`).
    pub skip_min: u32,
    /// Largest skip (>= `skip_min`); bounds the highest output read, see [`Self::max_output_index`].
    pub skip_max: u32,
    /// Fraction of the window the forward pass must match ([`Threshold::min_matches`]).
    pub threshold: Threshold,
    /// Threshold of the reverse pass; `None` means the same as `threshold`.
    #[serde(default)]
    pub reverse_threshold: Option<Threshold>,
    /// Which passes run (default forward only).
    #[serde(default)]
    pub direction: Direction,
    /// Constant skip (default) or the variable-skip strategies.
    #[serde(default)]
    pub skip_mode: SkipMode,
}

impl SieveSpec {
    /// Longest window a backend must support (GPU kernels keep no per-draw arrays).
    pub const MAX_WINDOW: usize = 1 << 16;
    /// Most offsets one job may search ([`Self::offset_max`]).
    pub const MAX_OFFSETS: u64 = 1 << 16;

    /// Checks everything that does not depend on the seeds.
    pub fn validate(&self) -> Result<(), SieveError> {
        if self.draws.is_empty() {
            return Err(SieveError::EmptyWindow);
        }
        if self.draws.len() > Self::MAX_WINDOW {
            return Err(SieveError::WindowTooLong(self.draws.len()));
        }
        if self.modulus < 2 {
            return Err(SieveError::InvalidModulus(self.modulus));
        }
        if self.skip_min > self.skip_max {
            return Err(SieveError::InvalidSkipRange {
                min: self.skip_min,
                max: self.skip_max,
            });
        }
        if let Some(offset_max) = self.offset_max {
            if offset_max < self.offset || offset_max - self.offset >= Self::MAX_OFFSETS {
                return Err(SieveError::InvalidOffsetRange {
                    offset: self.offset,
                    offset_max,
                });
            }
        }
        let needed = self.max_output_index();
        if needed > u64::MAX as u128 {
            return Err(SieveError::OutputIndexOverflow { needed });
        }
        if let SkipMode::Variable { strategies } = &self.skip_mode {
            if strategies.is_empty() {
                return Err(SieveError::InvalidStrategy(
                    "variable skip needs at least one strategy (e.g. the five presets)".into(),
                ));
            }
            if let Some(s) = strategies.iter().find(|s| s.max_consecutive_misses == 0) {
                return Err(SieveError::InvalidStrategy(format!(
                    "strategy '{}': max_consecutive_misses must be at least 1",
                    s.name
                )));
            }
        }
        self.family.validate()
    }

    /// The highest generator output number any pass may read:
    /// `last_offset + skip_max + (k-1)*(skip_max+1)` (constant and variable skip alike).
    pub fn max_output_index(&self) -> u128 {
        let k = self.draws.len().max(1) as u128;
        let t = self.skip_max as u128;
        self.last_offset() as u128 + t + (k - 1) * (t + 1)
    }

    /// The largest offset searched: `offset_max`, or `offset` without a range.
    pub fn last_offset(&self) -> u64 {
        self.offset_max.unwrap_or(self.offset).max(self.offset)
    }

    /// The offsets searched, smallest first.
    pub fn offsets(&self) -> std::ops::RangeInclusive<u64> {
        self.offset..=self.last_offset()
    }

    /// The integer match count a pass must reach: forward uses `threshold`, reverse uses
    /// `reverse_threshold` (or `threshold` when unset).
    pub fn min_matches(&self, reverse: bool) -> u32 {
        let threshold = if reverse {
            self.reverse_threshold.unwrap_or(self.threshold)
        } else {
            self.threshold
        };
        threshold.min_matches(self.k())
    }

    /// Checks that the seeds lie in the family's seed space.
    pub fn validate_seeds(&self, seeds: &SeedSet) -> Result<(), SieveError> {
        let space_end = self.family.family().seed_space_end();
        let (start, end) = match seeds {
            SeedSet::Range { start, end } => {
                if start >= end {
                    return Err(SieveError::EmptySeedRange {
                        start: *start as u128,
                        end: *end as u128,
                    });
                }
                (*start as u128, *end as u128)
            }
            SeedSet::List(list) => match list.iter().max() {
                Some(max) => (*list.iter().min().unwrap() as u128, *max as u128 + 1),
                None => return Ok(()),
            },
        };
        if end > space_end {
            return Err(SieveError::SeedOutOfRange {
                family: self.family.family().name().to_string(),
                start,
                end,
                space_end,
            });
        }
        Ok(())
    }

    /// The window, reduced mod `modulus`, in the order the given pass compares it.
    pub fn window(&self, reverse: bool) -> Vec<u64> {
        let mut w: Vec<u64> = self.draws.iter().map(|d| d % self.modulus).collect();
        if reverse {
            w.reverse();
        }
        w
    }

    /// `k`: the window length (number of draws).
    pub fn k(&self) -> usize {
        self.draws.len()
    }
}

/// The seeds of one chunk: a half-open range or an explicit candidate list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeedSet {
    /// The seeds `start..end` (half-open; empty when `start >= end`).
    Range {
        /// First seed.
        start: u64,
        /// One past the last seed.
        end: u64,
    },
    /// Explicit candidate seeds, any order, repeats allowed (the sieve reports each seed once).
    List(Vec<u64>),
}

impl SeedSet {
    /// Number of seeds as given (a list's repeats count).
    pub fn len(&self) -> u64 {
        match self {
            SeedSet::Range { start, end } => end.saturating_sub(*start),
            SeedSet::List(l) => l.len() as u64,
        }
    }

    /// Whether the set holds no seeds.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The outcome of one pass (forward or reverse) for one seed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassResult {
    /// Draws matched: at the best skip (constant) or by the winning strategy (variable).
    pub matches: u32,
    /// Draws compared: the window length `k`.
    pub total: u32,
    /// Constant skip: the smallest skip with the most matches (at [`Self::best_offset`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_skip: Option<u32>,
    /// With an offset range: the smallest offset reaching the most matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_offset: Option<u64>,
    /// Variable skip: the winning strategy (first in order on ties).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<String>,
    /// Variable skip: the skip used before each draw, `total` entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_pattern: Option<Vec<u32>>,
}

impl PassResult {
    /// `matches / total`, in [0, 1].
    pub fn match_rate(&self) -> f64 {
        self.matches as f64 / self.total as f64
    }
}

/// A seed that survived every pass the spec asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Survivor {
    /// The surviving seed.
    pub seed: u64,
    /// The forward pass's result; `None` for [`Direction::Reverse`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward: Option<PassResult>,
    /// The reverse pass's result; `None` for [`Direction::Forward`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverse: Option<PassResult>,
}

impl Survivor {
    /// The mean of the match rates of the passes this survivor carries (one or both).
    pub fn mean_match_rate(&self) -> f64 {
        let rates: Vec<f64> = [&self.forward, &self.reverse]
            .into_iter()
            .flatten()
            .map(|p| p.match_rate())
            .collect();
        rates.iter().sum::<f64>() / rates.len().max(1) as f64
    }
}

/// The result of sieving one seed set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SieveOutcome {
    /// Sorted by seed, one record per seed.
    pub survivors: Vec<Survivor>,
    /// Seeds examined (the size of the seed set).
    pub seeds_tested: u64,
}
