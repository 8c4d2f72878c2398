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
    #[error("unknown PRNG family '{0}' (known: xorshift32, xorshift64, xorshift128, pcg32, lcg32, java_lcg, minstd, mt19937, xoshiro256pp, philox4x32, sfc64)")]
    UnknownFamily(String),
    #[error("invalid parameter for {family}: {message}")]
    InvalidParam { family: String, message: String },
    #[error("the draw window is empty: give at least one draw")]
    EmptyWindow,
    #[error("window of {0} draws is too long (at most {max})", max = SieveSpec::MAX_WINDOW)]
    WindowTooLong(usize),
    #[error("modulus must be at least 2, got {0}")]
    InvalidModulus(u64),
    #[error("threshold must be in (0, 1], got {0}")]
    InvalidThreshold(String),
    #[error("skip range is empty: skip_min {min} > skip_max {max}")]
    InvalidSkipRange { min: u32, max: u32 },
    #[error("seed range [{start}, {end}) is outside the {family} seed space [0, {space_end})")]
    SeedOutOfRange {
        family: String,
        start: u128,
        end: u128,
        space_end: u128,
    },
    #[error("seed range is empty: start {start} >= end {end}")]
    EmptySeedRange { start: u128, end: u128 },
    #[error("invalid variable-skip strategy: {0}")]
    InvalidStrategy(String),
    #[error("the window needs generator output number {needed}, beyond 2^64 - 1: lower offset, skip_max or the window length")]
    OutputIndexOverflow { needed: u128 },
    #[error("backend failure: {0}")]
    Backend(String),
}

/// An exact decimal threshold in (0, 1]: `num / den`.
///
/// Parsed from the decimal text the user wrote (or from an `f64` via its shortest round-trip
/// decimal), so `ceil(0.7 * 10)` is 7, not 8 as `f64` arithmetic would give.
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
    #[default]
    Forward,
    Reverse,
    /// Forward pass, then the reverse pass on forward survivors only; a seed survives both.
    Bidirectional,
}

/// A variable-skip strategy: how many consecutive misses end it and how far the skip may wander.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Strategy {
    pub name: String,
    pub max_consecutive_misses: u32,
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
    #[default]
    Constant,
    /// Variable skip with these strategies, tried in order (first wins ties). In JSON,
    /// `{"mode": "variable"}` without `strategies` means the five presets.
    Variable {
        #[serde(default = "Strategy::presets")]
        strategies: Vec<Strategy>,
    },
}

/// A validated sieve job, independent of seeds (one spec serves every chunk of a job).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SieveSpec {
    pub family: FamilyConfig,
    /// The window of draws in order: draw 0 first. Raw values; reduced mod `modulus` on use.
    pub draws: Vec<u64>,
    pub modulus: u64,
    /// Generator outputs discarded before draw 0 (applied once).
    pub offset: u64,
    pub skip_min: u32,
    pub skip_max: u32,
    pub threshold: Threshold,
    /// Threshold of the reverse pass; `None` means the same as `threshold`.
    #[serde(default)]
    pub reverse_threshold: Option<Threshold>,
    #[serde(default)]
    pub direction: Direction,
    #[serde(default)]
    pub skip_mode: SkipMode,
}

impl SieveSpec {
    /// Longest window a backend must support (GPU kernels keep no per-draw arrays).
    pub const MAX_WINDOW: usize = 1 << 16;

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
    /// `offset + skip_max + (k-1)*(skip_max+1)` (constant and variable skip alike).
    pub fn max_output_index(&self) -> u128 {
        let k = self.draws.len().max(1) as u128;
        let t = self.skip_max as u128;
        self.offset as u128 + t + (k - 1) * (t + 1)
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

    pub fn k(&self) -> usize {
        self.draws.len()
    }
}

/// The seeds of one chunk: a half-open range or an explicit candidate list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeedSet {
    Range { start: u64, end: u64 },
    List(Vec<u64>),
}

impl SeedSet {
    pub fn len(&self) -> u64 {
        match self {
            SeedSet::Range { start, end } => end.saturating_sub(*start),
            SeedSet::List(l) => l.len() as u64,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The outcome of one pass (forward or reverse) for one seed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassResult {
    pub matches: u32,
    pub total: u32,
    /// Constant skip: the smallest skip with the most matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_skip: Option<u32>,
    /// Variable skip: the winning strategy (first in order on ties).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<String>,
    /// Variable skip: the skip used before each draw, `total` entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_pattern: Option<Vec<u32>>,
}

impl PassResult {
    pub fn match_rate(&self) -> f64 {
        self.matches as f64 / self.total as f64
    }
}

/// A seed that survived every pass the spec asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Survivor {
    pub seed: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward: Option<PassResult>,
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
