//! Per-job family parameters: [`FamilyParams`] names its family (one variant per family, so a
//! family and the parameters of another cannot be paired), and [`FamilyConfig`] is a validated
//! [`FamilyParams`], the only form the rest of seedq passes around.

use super::Family;
use crate::spec::SieveError;

/// A family with its parameters: one variant per family, so every match over it is exhaustive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FamilyParams {
    /// Shift amounts, each in 1..=31.
    Xorshift32 {
        /// First left shift.
        a: u32,
        /// Right shift.
        b: u32,
        /// Second left shift.
        c: u32,
    },
    /// xorshift64 (no parameters).
    Xorshift64,
    /// xorshift128 (no parameters).
    Xorshift128,
    /// Increment and multiplier of the 64-bit LCG state (the increment is used verbatim).
    Pcg32 {
        /// Increment.
        inc: u64,
        /// Multiplier.
        mult: u64,
    },
    /// `s = (a*s + c) mod m`; `m = 0` means 2^32.
    Lcg32 {
        /// Multiplier.
        a: u32,
        /// Increment.
        c: u32,
        /// Modulus (0 means 2^32).
        m: u32,
    },
    /// `s = (a*s + c) mod 2^48`; `a` and `c` below 2^48.
    JavaLcg {
        /// Multiplier.
        a: u64,
        /// Increment.
        c: u64,
    },
    /// `s = a*s mod m`; `m >= 2`, `1 <= a < m`.
    Minstd {
        /// Multiplier.
        a: u32,
        /// Modulus.
        m: u32,
    },
    /// mt19937 (no parameters).
    Mt19937,
    /// xoshiro256++ (no parameters).
    Xoshiro256pp,
    /// Philox4x32-10 (no parameters).
    Philox4x32,
    /// sfc64 (no parameters).
    Sfc64,
}

impl FamilyParams {
    /// The original's default parameters for a family.
    pub fn defaults(family: Family) -> FamilyParams {
        match family {
            Family::Xorshift32 => FamilyParams::Xorshift32 { a: 13, b: 17, c: 5 },
            Family::Xorshift64 => FamilyParams::Xorshift64,
            Family::Xorshift128 => FamilyParams::Xorshift128,
            Family::Pcg32 => FamilyParams::Pcg32 {
                inc: 1442695040888963407,
                mult: 6364136223846793005,
            },
            Family::Lcg32 => FamilyParams::Lcg32 {
                a: 1103515245,
                c: 12345,
                m: 0x7FFF_FFFF,
            },
            Family::JavaLcg => FamilyParams::JavaLcg {
                a: 0x5_DEEC_E66D,
                c: 11,
            },
            Family::Minstd => FamilyParams::Minstd {
                a: 48271,
                m: 2_147_483_647,
            },
            Family::Mt19937 => FamilyParams::Mt19937,
            Family::Xoshiro256pp => FamilyParams::Xoshiro256pp,
            Family::Philox4x32 => FamilyParams::Philox4x32,
            Family::Sfc64 => FamilyParams::Sfc64,
        }
    }

    /// The family these parameters belong to.
    pub fn family(&self) -> Family {
        match self {
            FamilyParams::Xorshift32 { .. } => Family::Xorshift32,
            FamilyParams::Xorshift64 => Family::Xorshift64,
            FamilyParams::Xorshift128 => Family::Xorshift128,
            FamilyParams::Pcg32 { .. } => Family::Pcg32,
            FamilyParams::Lcg32 { .. } => Family::Lcg32,
            FamilyParams::JavaLcg { .. } => Family::JavaLcg,
            FamilyParams::Minstd { .. } => Family::Minstd,
            FamilyParams::Mt19937 => Family::Mt19937,
            FamilyParams::Xoshiro256pp => Family::Xoshiro256pp,
            FamilyParams::Philox4x32 => Family::Philox4x32,
            FamilyParams::Sfc64 => Family::Sfc64,
        }
    }

    /// `(name, value)` pairs in canonical order ([`Family::param_names`]).
    pub fn to_pairs(&self) -> Vec<(&'static str, u64)> {
        match *self {
            FamilyParams::Xorshift32 { a, b, c } => {
                vec![("a", a as u64), ("b", b as u64), ("c", c as u64)]
            }
            FamilyParams::Pcg32 { inc, mult } => vec![("inc", inc), ("mult", mult)],
            FamilyParams::Lcg32 { a, c, m } => {
                vec![("a", a as u64), ("c", c as u64), ("m", m as u64)]
            }
            FamilyParams::JavaLcg { a, c } => vec![("a", a), ("c", c)],
            FamilyParams::Minstd { a, m } => vec![("a", a as u64), ("m", m as u64)],
            FamilyParams::Xorshift64
            | FamilyParams::Xorshift128
            | FamilyParams::Mt19937
            | FamilyParams::Xoshiro256pp
            | FamilyParams::Philox4x32
            | FamilyParams::Sfc64 => vec![],
        }
    }

    /// Checks the ranges each family's parameters must lie in; messages say what to change.
    pub fn validate(&self) -> Result<(), SieveError> {
        let bad = |message: String| SieveError::InvalidParam {
            family: self.family().name().to_string(),
            message,
        };
        match *self {
            FamilyParams::Xorshift32 { a, b, c } => {
                for (name, v) in [("a", a), ("b", b), ("c", c)] {
                    if !(1..=31).contains(&v) {
                        return Err(bad(format!("shift '{name}' = {v} must be in 1..=31")));
                    }
                }
            }
            FamilyParams::Lcg32 { m, .. } => {
                if m == 1 {
                    return Err(bad(
                        "modulus 'm' = 1 makes every output 0; use m >= 2, or m = 0 for 2^32"
                            .into(),
                    ));
                }
            }
            FamilyParams::JavaLcg { a, c } => {
                for (name, v) in [("a", a), ("c", c)] {
                    if v >> 48 != 0 {
                        return Err(bad(format!(
                            "parameter '{name}' = {v:#x} must be below 2^48"
                        )));
                    }
                }
            }
            FamilyParams::Minstd { a, m } => {
                if m < 2 {
                    return Err(bad(format!("modulus 'm' = {m} must be at least 2")));
                }
                if a == 0 || a >= m {
                    return Err(bad(format!(
                        "multiplier 'a' = {a} must be in 1..m (m = {m})"
                    )));
                }
            }
            FamilyParams::Pcg32 { .. }
            | FamilyParams::Xorshift64
            | FamilyParams::Xorshift128
            | FamilyParams::Mt19937
            | FamilyParams::Xoshiro256pp
            | FamilyParams::Philox4x32
            | FamilyParams::Sfc64 => {}
        }
        Ok(())
    }
}

/// A family with validated parameters (defaults as in the reference, settable per job).
///
/// Built only through [`FamilyConfig::new`], [`FamilyConfig::with_params`],
/// [`FamilyConfig::parse`], [`FamilyConfig::from_values`] or deserialisation, each of which
/// validates: holding one means the generator can be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FamilyConfig {
    params: FamilyParams,
}

/// Parses a parameter value: decimal or `0x` hex, `_` separators allowed.
pub(crate) fn parse_u64(text: &str) -> Option<u64> {
    let t = text.trim().replace('_', "");
    if let Some(hex) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        u64::from_str_radix(hex, 16).ok()
    } else {
        t.parse().ok()
    }
}

impl FamilyConfig {
    /// The family with its default parameters.
    pub fn new(family: Family) -> Self {
        FamilyConfig {
            params: FamilyParams::defaults(family),
        }
    }

    /// The family with the given parameters, validated.
    pub fn with_params(params: FamilyParams) -> Result<Self, SieveError> {
        params.validate()?;
        Ok(FamilyConfig { params })
    }

    /// The family.
    pub fn family(&self) -> Family {
        self.params.family()
    }

    /// The parameters (which name the family).
    pub fn params(&self) -> FamilyParams {
        self.params
    }

    /// Builds a config from a family name and `NAME=VALUE` overrides (decimal or 0x hex).
    /// Parameters not given keep their defaults.
    pub fn parse<K: AsRef<str>, V: AsRef<str>>(
        name: &str,
        overrides: &[(K, V)],
    ) -> Result<Self, SieveError> {
        let family = Family::parse(name)?;
        let mut values: Vec<(String, u64)> = Vec::with_capacity(overrides.len());
        for (k, v) in overrides {
            let (k, v) = (k.as_ref(), v.as_ref());
            let value = parse_u64(v).ok_or_else(|| SieveError::InvalidParam {
                family: family.name().to_string(),
                message: format!(
                    "parameter '{k}' = '{v}' is not a decimal or 0x-hex unsigned integer"
                ),
            })?;
            values.push((k.to_string(), value));
        }
        Self::from_values(family, &values)
    }

    /// Builds a config from numeric overrides; unknown names and out-of-range values are errors.
    pub fn from_values(family: Family, values: &[(String, u64)]) -> Result<Self, SieveError> {
        let bad = |message: String| SieveError::InvalidParam {
            family: family.name().to_string(),
            message,
        };
        let mut pairs: Vec<(&'static str, u64)> = FamilyParams::defaults(family).to_pairs();
        for (k, v) in values {
            match pairs.iter_mut().find(|(name, _)| name == k) {
                Some(slot) => slot.1 = *v,
                None => {
                    let known = family.param_names();
                    return Err(bad(if known.is_empty() {
                        format!("unknown parameter '{k}': {family} takes no parameters")
                    } else {
                        format!("unknown parameter '{k}' (known: {})", known.join(", "))
                    }));
                }
            }
        }
        let get = |name: &str| {
            pairs
                .iter()
                .find(|(n, _)| *n == name)
                .map(|p| p.1)
                .unwrap_or(0)
        };
        let u32_of = |name: &str| -> Result<u32, SieveError> {
            u32::try_from(get(name)).map_err(|_| {
                bad(format!(
                    "parameter '{name}' = {} does not fit in 32 bits",
                    get(name)
                ))
            })
        };
        let params = match FamilyParams::defaults(family) {
            FamilyParams::Xorshift32 { .. } => FamilyParams::Xorshift32 {
                a: u32_of("a")?,
                b: u32_of("b")?,
                c: u32_of("c")?,
            },
            FamilyParams::Pcg32 { .. } => FamilyParams::Pcg32 {
                inc: get("inc"),
                mult: get("mult"),
            },
            FamilyParams::Lcg32 { .. } => FamilyParams::Lcg32 {
                a: u32_of("a")?,
                c: u32_of("c")?,
                m: u32_of("m")?,
            },
            FamilyParams::JavaLcg { .. } => FamilyParams::JavaLcg {
                a: get("a"),
                c: get("c"),
            },
            FamilyParams::Minstd { .. } => FamilyParams::Minstd {
                a: u32_of("a")?,
                m: u32_of("m")?,
            },
            parameterless => parameterless,
        };
        Self::with_params(params)
    }

    /// Re-checks the parameters (a config is validated when built; kept for callers that
    /// validate a whole spec).
    pub fn validate(&self) -> Result<(), SieveError> {
        self.params.validate()
    }

    /// A generator seeded with `seed` (which must lie in the family's seed space).
    pub fn generator(&self, seed: u64) -> super::Generator {
        super::Generator::new(self.params, seed)
    }

    /// Output number `n` (0-based) of the generator seeded with `seed`.
    pub fn output_at(&self, seed: u64, n: u64) -> u64 {
        let mut g = self.generator(seed);
        g.advance(n);
        g.next_output()
    }
}
