//! The eleven PRNG families (reference section 3.7, GPU definitions), their parameters and seed
//! spaces. STUB: the kernels-reference helper replaces this file; the public names below are the
//! contract other crates code against.

use serde::{Deserialize, Serialize};

use crate::spec::SieveError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    Xorshift32,
    Xorshift64,
    Xorshift128,
    Pcg32,
    Lcg32,
    JavaLcg,
    Minstd,
    Mt19937,
    Xoshiro256pp,
    Philox4x32,
    Sfc64,
}

impl Family {
    pub const ALL: [Family; 11] = [
        Family::Xorshift32,
        Family::Xorshift64,
        Family::Xorshift128,
        Family::Pcg32,
        Family::Lcg32,
        Family::JavaLcg,
        Family::Minstd,
        Family::Mt19937,
        Family::Xoshiro256pp,
        Family::Philox4x32,
        Family::Sfc64,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Family::Xorshift32 => "xorshift32",
            Family::Xorshift64 => "xorshift64",
            Family::Xorshift128 => "xorshift128",
            Family::Pcg32 => "pcg32",
            Family::Lcg32 => "lcg32",
            Family::JavaLcg => "java_lcg",
            Family::Minstd => "minstd",
            Family::Mt19937 => "mt19937",
            Family::Xoshiro256pp => "xoshiro256pp",
            Family::Philox4x32 => "philox4x32",
            Family::Sfc64 => "sfc64",
        }
    }

    pub fn parse(name: &str) -> Result<Family, SieveError> {
        Family::ALL
            .into_iter()
            .find(|f| f.name() == name)
            .ok_or_else(|| SieveError::UnknownFamily(name.to_string()))
    }

    /// Exclusive end of the seed space: 2^32 for 32-bit seeds, 2^64 for 64-bit ones.
    pub fn seed_space_end(self) -> u128 {
        match self {
            Family::Xorshift64 | Family::JavaLcg | Family::Xoshiro256pp | Family::Philox4x32 | Family::Sfc64 => 1 << 64,
            _ => 1 << 32,
        }
    }
}

/// A family with its parameters (defaults as in the reference, settable per job).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FamilyConfig {
    pub family: Family,
}

impl FamilyConfig {
    pub fn new(family: Family) -> Self {
        FamilyConfig { family }
    }

    /// Builds a config from a family name and `NAME=VALUE` overrides (decimal or 0x hex).
    pub fn parse(name: &str, overrides: &[(String, String)]) -> Result<Self, SieveError> {
        let _ = overrides;
        Ok(FamilyConfig::new(Family::parse(name)?))
    }

    pub fn validate(&self) -> Result<(), SieveError> {
        Ok(())
    }
}
