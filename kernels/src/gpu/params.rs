//! The launch description shared with the kernels (`SeedqParams` in gpu/sieve.cu) and the
//! per-pass plan every GPU backend (and the host shim) launches from.

use crate::family::{Family, FamilyParams};
use crate::spec::{SieveSpec, SkipMode};

/// Mirror of `struct SeedqParams` in gpu/sieve.cu: same fields, same order, same layout.
/// Device addresses are `u64` on both sides.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeedqParams {
    pub seed_start: u64,
    pub n_seeds: u64,
    pub seed_list: u64,
    pub window: u64,
    pub out_seeds: u64,
    pub out_count: u64,
    pub scratch: u64,
    pub strategies: u64,
    pub modulus: u64,
    pub mod_magic: u64,
    pub offset: u64,
    pub out_cap: u64,
    pub scratch_threads: u64,
    pub fam: [u64; 6],
    pub k: u32,
    pub skip_min: u32,
    pub skip_max: u32,
    pub need: u32,
    pub n_strategies: u32,
    pub flags: u32,
}

/// `SEEDQ_FLAG_VARIABLE`: variable-skip strategies instead of constant skips.
pub const FLAG_VARIABLE: u32 = 1;
/// `SEEDQ_FLAG_MT_FULL`: mt19937 with outputs beyond 226 (full state in scratch).
pub const FLAG_MT_FULL: u32 = 2;

/// MT19937 outputs below this number are computed from a few seeding words, statelessly.
pub const MT_STATELESS_OUTPUTS: u128 = 227;
/// Words of MT19937 state per thread in the scratch buffer.
pub const MT_WORDS: u64 = 624;

/// Everything one pass (forward or reverse) launches with, except seeds and buffers.
#[derive(Debug, Clone)]
pub struct PassPlan {
    pub family: Family,
    /// Kernel entry point in gpu/sieve.cu.
    pub kernel: &'static str,
    /// The window in pass order, reduced mod the modulus.
    pub window: Vec<u64>,
    /// `(max_consecutive_misses, skip_tolerance)` per strategy, flattened; empty for constant.
    pub strategies: Vec<u32>,
    /// Template: every scalar field set, addresses and seed fields zero.
    pub params: SeedqParams,
}

impl PassPlan {
    pub fn new(spec: &SieveSpec, reverse: bool) -> PassPlan {
        let family = spec.family.family();
        let mt_full = family == Family::Mt19937 && spec.max_output_index() >= MT_STATELESS_OUTPUTS;
        let (strategies, variable) = match &spec.skip_mode {
            SkipMode::Constant => (Vec::new(), false),
            SkipMode::Variable { strategies } => (
                strategies
                    .iter()
                    .flat_map(|s| [s.max_consecutive_misses, s.skip_tolerance])
                    .collect(),
                true,
            ),
        };
        let params = SeedqParams {
            modulus: spec.modulus,
            mod_magic: if spec.modulus <= u32::MAX as u64 {
                u64::MAX / spec.modulus + 1
            } else {
                0
            },
            offset: spec.offset,
            fam: family_words(spec.family.params()),
            k: spec.k() as u32,
            skip_min: spec.skip_min,
            skip_max: spec.skip_max,
            need: spec.min_matches(reverse),
            n_strategies: (strategies.len() / 2) as u32,
            flags: if variable { FLAG_VARIABLE } else { 0 }
                | if mt_full { FLAG_MT_FULL } else { 0 },
            ..SeedqParams::default()
        };
        PassPlan {
            family,
            kernel: kernel_name(family, mt_full),
            window: spec.window(reverse),
            strategies,
            params,
        }
    }

    /// Whether launches need the per-thread MT19937 scratch (`MT_WORDS` u32 per thread).
    pub fn needs_scratch(&self) -> bool {
        self.params.flags & FLAG_MT_FULL != 0
    }
}

/// Entry point names in gpu/sieve.cu.
pub fn kernel_name(family: Family, mt_full: bool) -> &'static str {
    match family {
        Family::Xorshift32 => "seedq_sieve_xorshift32",
        Family::Xorshift64 => "seedq_sieve_xorshift64",
        Family::Xorshift128 => "seedq_sieve_xorshift128",
        Family::Pcg32 => "seedq_sieve_pcg32",
        Family::Lcg32 => "seedq_sieve_lcg32",
        Family::JavaLcg => "seedq_sieve_java_lcg",
        Family::Minstd => "seedq_sieve_minstd",
        Family::Mt19937 if mt_full => "seedq_sieve_mt19937_full",
        Family::Mt19937 => "seedq_sieve_mt19937",
        Family::Xoshiro256pp => "seedq_sieve_xoshiro256pp",
        Family::Philox4x32 => "seedq_sieve_philox4x32",
        Family::Sfc64 => "seedq_sieve_sfc64",
    }
}

/// Every kernel entry point (for compile checks and resource reports).
pub fn all_kernel_names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = Family::ALL.iter().map(|f| kernel_name(*f, false)).collect();
    names.push(kernel_name(Family::Mt19937, true));
    names
}

/// The family number `SEEDQ_FAMILY_ONLY` selects in gpu/sieve.cu (`Family::ALL` order).
pub fn family_index(family: Family) -> usize {
    Family::ALL
        .iter()
        .position(|f| *f == family)
        .expect("every family is in Family::ALL")
}

/// The family parameters as the kernels read them (`fam[]` in each generator's `init`),
/// with the Barrett reciprocals `floor((2^64-1)/m)` the modular families need.
pub fn family_words(params: FamilyParams) -> [u64; 6] {
    let mut w = [0u64; 6];
    match params {
        FamilyParams::Xorshift64
        | FamilyParams::Xorshift128
        | FamilyParams::Mt19937
        | FamilyParams::Xoshiro256pp
        | FamilyParams::Philox4x32
        | FamilyParams::Sfc64 => {}
        FamilyParams::Xorshift32 { a, b, c } => {
            w[..3].copy_from_slice(&[a as u64, b as u64, c as u64])
        }
        FamilyParams::Pcg32 { inc, mult } => w[..2].copy_from_slice(&[inc, mult]),
        FamilyParams::Lcg32 { a, c, m } => {
            let minv = if m == 0 { 0 } else { u64::MAX / m as u64 };
            w[..4].copy_from_slice(&[a as u64, c as u64, m as u64, minv]);
        }
        FamilyParams::JavaLcg { a, c } => w[..2].copy_from_slice(&[a, c]),
        FamilyParams::Minstd { a, m } => {
            w[..3].copy_from_slice(&[a as u64, m as u64, u64::MAX / m as u64])
        }
    }
    w
}
