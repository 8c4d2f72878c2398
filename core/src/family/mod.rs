//! The eleven PRNG families, their per-job parameters, seed spaces and a scalar generator.
//!
//! Definitions follow the original system's GPU kernels; where its CPU and GPU code disagreed,
//! the GPU definition is the one used here. Its documented generator *bugs* are fixed rather
//! than reproduced (`docs/defects.md`, K2/K6/K7; `docs/semantics.md` has the full definitions):
//!
//! * parameters are per job and really reach the generator;
//! * `minstd` honours its modulus `m`;
//! * `lcg32` is always the plain `s = (a*s + c) mod m` (the original's hybrid kernel computed a
//!   different generator, `(s*a + c) & m`);
//! * `pcg32` always outputs XSH-RR of the *old* state (the hybrid kernel used the new one);
//! * `xorshift64` outputs the full 64-bit state (the CPU reference truncated it to 32 bits).
//!
//! Conventions shared by every backend:
//!
//! * **Output numbering.** Output `n` (0-based) is the value produced by the `(n+1)`-th call of
//!   [`Generator::next_output`] on a freshly seeded generator. The sieve compares draw `i` with
//!   output `offset + t + i*(t+1)`.
//! * **Output width.** [`Generator::next_output`] returns the value at its own width (a `u32`
//!   widened to `u64` for 32-bit outputs, the full `u64` otherwise); it is reduced mod the job's
//!   modulus by the caller.
//! * **Seeds** must lie in [`Family::seed_space_end`]; the sieve checks this
//!   ([`crate::SieveSpec::validate_seeds`]). 32-bit families use the low 32 bits.
//!
//! Per-family definitions (state after seeding `seed`; one step; the value output):
//!
//! | family | seeding | step | output |
//! |---|---|---|---|
//! | xorshift32 (a,b,c = 13,17,5) | `x = seed` (0 is a fixed point) | `x^=x<<a; x^=x>>b; x^=x<<c` | new `x` |
//! | xorshift64 | `x = seed` | `x^=x>>12; x^=x<<25; x^=x>>27; x*=0x2545F4914F6CDD1D` | new `x` (64-bit) |
//! | xorshift128 | `x=seed, y=362436069, z=521288629, w=88675123` | Marsaglia xor128 | new `w` |
//! | pcg32 (inc=1442695040888963407, mult=6364136223846793005) | `state = seed` | `s = s*mult + inc` | XSH-RR of the old state |
//! | lcg32 (a=1103515245, c=12345, m=0x7FFFFFFF; m=0 means 2^32) | `s = seed` | `s = (a*s + c) mod m`, 64-bit intermediate | new `s` |
//! | java_lcg (a=0x5DEECE66D, c=11) | `s = seed & (2^48-1)` (unscrambled) | `s = (a*s + c) mod 2^48` | `s >> 16` (32-bit) |
//! | minstd (a=48271, m=2^31-1) | `s = seed mod m`, 0 becomes 1 | `s = a*s mod m` | new `s` |
//! | mt19937 | `init_genrand(seed)` (= C++ `std::mt19937(seed)`) | standard twist | tempered word |
//! | xoshiro256pp | `s0=seed, s1=0x9E3779B97F4A7C15, s2=0x6A09E667F3BCC908, s3=0xBB67AE8584CAA73B` | xoshiro256 | `rotl(s0+s3,23)+s0` of the current state |
//! | philox4x32 | key `(seed lo32, seed hi32)` | counter `n` | word 0 of Philox4x32-10 of block `(n lo32, n hi32, 0, 0)` |
//! | sfc64 | `a=seed, b=0x9E3779B97F4A7C15, c=0x6A09E667F3BCC908, cnt=1` (no warm-up) | SFC64 | `tmp = a+b+cnt` |
//!
//! Philox's counter is 64 bits wide here (the original's was 32): for outputs below 2^32 the
//! block is exactly the original's `(n, 0, 0, 0)`.
//!
//! # Serde form
//!
//! A [`FamilyConfig`] serialises as `{"family": "lcg32", "params": {"a": 1103515245, "c": 12345,
//! "m": 2147483647}}`. On input, `params` may be omitted or partial (missing parameters take their
//! defaults), and each value may be a JSON number or a string in decimal or `0x` hex. Unknown
//! parameter names and invalid values are rejected with [`SieveError::InvalidParam`].

//!
//! # Modules
//!
//! [`params`] (the parameters, which name their family), [`generator`] (the scalar generator
//! and step functions), [`mt`] (MT19937), [`constants`] (every fixed constant, also written
//! into the GPU kernels' generated header), and the serde form.

pub mod constants;
pub mod generator;
pub mod mt;
pub mod params;
mod serde_form;

pub use generator::{
    affine_pow, lcg32_step, pcg32_xsh_rr, philox4x32_10, xorshift32_step, xorshift64_step,
    xoshiro256_step, Generator,
};
pub use mt::{mt_temper, Mt19937};
pub use params::{FamilyConfig, FamilyParams};

use crate::spec::SieveError;

/// The eleven PRNG families (see the table above).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, PartialOrd, Ord,
)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// 32-bit xorshift with a per-job shift triple (default 13, 17, 5); 32-bit seeds.
    Xorshift32,
    /// 64-bit xorshift with an output multiply, full 64-bit outputs; 64-bit seeds.
    Xorshift64,
    /// Marsaglia's xor128 (the seed is `x`, three fixed words); 32-bit seeds.
    Xorshift128,
    /// PCG32 XSH-RR over a 64-bit LCG with per-job increment and multiplier; 32-bit seeds.
    Pcg32,
    /// `s = (a*s + c) mod m` with per-job `a, c, m`; 32-bit seeds.
    Lcg32,
    /// `java.util.Random`'s 48-bit LCG without the seed scramble, output `s >> 16`; 64-bit seeds
    /// (masked to 48 bits).
    JavaLcg,
    /// Park-Miller `s = a*s mod m` (default 48271, 2^31-1); 32-bit seeds.
    Minstd,
    /// The 32-bit Mersenne Twister, C++ `std::mt19937(seed)`; 32-bit seeds.
    Mt19937,
    /// xoshiro256++ (the seed is `s0`, three fixed words), 64-bit outputs; 64-bit seeds.
    Xoshiro256pp,
    /// Philox4x32-10 in counter mode, keyed by the seed; 64-bit seeds.
    Philox4x32,
    /// SFC64 (the seed is `a`, no warm-up), 64-bit outputs; 64-bit seeds.
    Sfc64,
}

impl Family {
    /// Every family, in declaration order (the order names are listed and tests iterate).
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

    /// The snake_case name used in specs, flags, headers and throughput keys (`java_lcg`).
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

    /// The family of an exact [`Family::name`]; [`SieveError::UnknownFamily`] otherwise.
    pub fn parse(name: &str) -> Result<Family, SieveError> {
        Family::ALL
            .into_iter()
            .find(|f| f.name() == name)
            .ok_or_else(|| SieveError::UnknownFamily(name.to_string()))
    }

    /// Exclusive end of the seed space: 2^32 for 32-bit seeds, 2^64 for 64-bit ones.
    pub fn seed_space_end(self) -> u128 {
        match self {
            Family::Xorshift64
            | Family::JavaLcg
            | Family::Xoshiro256pp
            | Family::Philox4x32
            | Family::Sfc64 => 1 << 64,
            _ => 1 << 32,
        }
    }

    /// Width in bits of the value the family outputs (32 or 64).
    pub fn output_bits(self) -> u32 {
        match self {
            Family::Xorshift64 | Family::Xoshiro256pp | Family::Sfc64 => 64,
            _ => 32,
        }
    }

    /// Whether [`Generator::advance`] is a jump (O(log n) or O(1)) rather than plain stepping.
    pub fn has_jump_ahead(self) -> bool {
        matches!(
            self,
            Family::Lcg32 | Family::JavaLcg | Family::Minstd | Family::Pcg32 | Family::Philox4x32
        )
    }

    /// Names of the parameters this family accepts, in canonical order.
    pub fn param_names(self) -> &'static [&'static str] {
        match self {
            Family::Xorshift32 => &["a", "b", "c"],
            Family::Pcg32 => &["inc", "mult"],
            Family::Lcg32 => &["a", "c", "m"],
            Family::JavaLcg => &["a", "c"],
            Family::Minstd => &["a", "m"],
            _ => &[],
        }
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jump_ahead_equals_stepping() {
        let configs = [
            FamilyConfig::new(Family::Pcg32),
            FamilyConfig::new(Family::Lcg32),
            FamilyConfig::parse("lcg32", &[("m", "0")]).unwrap(),
            FamilyConfig::parse("lcg32", &[("m", "1000003"), ("a", "0x10001")]).unwrap(),
            FamilyConfig::new(Family::JavaLcg),
            FamilyConfig::new(Family::Minstd),
            FamilyConfig::parse("minstd", &[("a", "16807")]).unwrap(),
            FamilyConfig::new(Family::Philox4x32),
            FamilyConfig::new(Family::Mt19937),
        ];
        for cfg in configs {
            for seed in [0u64, 1, 12345, 0xFFFF_FFFF] {
                let mut stepped = cfg.generator(seed);
                let mut outs = Vec::new();
                for _ in 0..1500 {
                    outs.push(stepped.next_output());
                }
                for n in [0u64, 1, 2, 7, 100, 623, 624, 625, 1000, 1499] {
                    assert_eq!(
                        cfg.output_at(seed, n),
                        outs[n as usize],
                        "{cfg:?} seed {seed} n {n}"
                    );
                }
            }
        }
    }

    #[test]
    fn parse_rejects_unknown_and_invalid() {
        assert!(
            matches!(FamilyConfig::parse("lcg32", &[("q", "1")]), Err(SieveError::InvalidParam { message, .. }) if message.contains("'q'"))
        );
        assert!(
            matches!(FamilyConfig::parse("minstd", &[("m", "1")]), Err(SieveError::InvalidParam { message, .. }) if message.contains("'m'"))
        );
        assert!(
            matches!(FamilyConfig::parse("xorshift32", &[("b", "32")]), Err(SieveError::InvalidParam { message, .. }) if message.contains("'b'"))
        );
        assert!(
            matches!(FamilyConfig::parse("lcg32", &[("a", "0x1_0000_0000")]), Err(SieveError::InvalidParam { message, .. }) if message.contains("'a'"))
        );
        assert!(
            matches!(FamilyConfig::parse("lcg32", &[("a", "x")]), Err(SieveError::InvalidParam { message, .. }) if message.contains("'a'"))
        );
        assert!(matches!(
            FamilyConfig::parse("mt19937", &[("a", "1")]),
            Err(SieveError::InvalidParam { .. })
        ));
        assert!(matches!(
            FamilyConfig::parse("nope", &[] as &[(&str, &str)]),
            Err(SieveError::UnknownFamily(_))
        ));
        let cfg = FamilyConfig::parse("lcg32", &[("a", "0x41C64E6D"), ("m", "0")]).unwrap();
        assert_eq!(
            cfg.params(),
            FamilyParams::Lcg32 {
                a: 0x41C6_4E6D,
                c: 12345,
                m: 0
            }
        );
    }

    #[test]
    fn parse_accepts_owned_pairs() {
        let owned = vec![("c".to_string(), "7".to_string())];
        let cfg = FamilyConfig::parse("java_lcg", &owned).unwrap();
        assert_eq!(
            cfg.params(),
            FamilyParams::JavaLcg {
                a: 0x5_DEEC_E66D,
                c: 7
            }
        );
    }

    #[test]
    fn serde_form_round_trips_and_validates() {
        let cfg = FamilyConfig::parse("lcg32", &[("a", "0x41C64E6D"), ("m", "0")]).unwrap();
        let json = serde_json::to_string(&cfg).unwrap();
        assert_eq!(
            json,
            r#"{"family":"lcg32","params":{"a":1103515245,"c":12345,"m":0}}"#
        );
        assert_eq!(serde_json::from_str::<FamilyConfig>(&json).unwrap(), cfg);
        let partial: FamilyConfig =
            serde_json::from_str(r#"{"family":"lcg32","params":{"a":"0x41C64E6D","m":0}}"#)
                .unwrap();
        assert_eq!(partial, cfg);
        let bare: FamilyConfig = serde_json::from_str(r#"{"family":"mt19937"}"#).unwrap();
        assert_eq!(bare, FamilyConfig::new(Family::Mt19937));
        for bad in [
            r#"{"family":"lcg32","params":{"q":1}}"#,
            r#"{"family":"minstd","params":{"m":1}}"#,
            r#"{"family":"pcg32","params":{"inc":"zz"}}"#,
            r#"{"family":"nope"}"#,
            r#"{"family":"lcg32","parms":{"a":1}}"#,
        ] {
            assert!(serde_json::from_str::<FamilyConfig>(bad).is_err(), "{bad}");
        }
    }
}
