//! The eleven PRNG families, their per-job parameters, seed spaces and a scalar generator.
//!
//! Definitions follow the original's GPU kernels (reference section 3.7); where the original's
//! CPU and GPU code disagreed, the GPU definition is the one used here. Documented generator
//! *bugs* are fixed rather than reproduced (reference section 7, K2/K6/K7):
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

/// Per-family parameters. Families without parameters use [`FamilyParams::None`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FamilyParams {
    None,
    /// Shift amounts, each in 1..=31.
    Xorshift32 {
        a: u32,
        b: u32,
        c: u32,
    },
    /// Increment and multiplier of the 64-bit LCG state (the increment is used verbatim).
    Pcg32 {
        inc: u64,
        mult: u64,
    },
    /// `s = (a*s + c) mod m`; `m = 0` means 2^32.
    Lcg32 {
        a: u32,
        c: u32,
        m: u32,
    },
    /// `s = (a*s + c) mod 2^48`; `a` and `c` below 2^48.
    JavaLcg {
        a: u64,
        c: u64,
    },
    /// `s = a*s mod m`; `m >= 2`, `1 <= a < m`.
    Minstd {
        a: u32,
        m: u32,
    },
}

impl FamilyParams {
    /// The original's default parameters for a family.
    pub fn defaults(family: Family) -> FamilyParams {
        match family {
            Family::Xorshift32 => FamilyParams::Xorshift32 { a: 13, b: 17, c: 5 },
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
            _ => FamilyParams::None,
        }
    }

    /// `(name, value)` pairs in canonical order.
    pub fn to_pairs(&self) -> Vec<(&'static str, u64)> {
        match *self {
            FamilyParams::None => vec![],
            FamilyParams::Xorshift32 { a, b, c } => {
                vec![("a", a as u64), ("b", b as u64), ("c", c as u64)]
            }
            FamilyParams::Pcg32 { inc, mult } => vec![("inc", inc), ("mult", mult)],
            FamilyParams::Lcg32 { a, c, m } => {
                vec![("a", a as u64), ("c", c as u64), ("m", m as u64)]
            }
            FamilyParams::JavaLcg { a, c } => vec![("a", a), ("c", c)],
            FamilyParams::Minstd { a, m } => vec![("a", a as u64), ("m", m as u64)],
        }
    }

    fn family_matches(&self, family: Family) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(&FamilyParams::defaults(family))
    }
}

/// A family with its parameters (defaults as in the reference, settable per job).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FamilyConfig {
    pub family: Family,
    /// Must be the variant of `family` ([`FamilyConfig::validate`] checks).
    pub params: FamilyParams,
}

fn parse_u64(text: &str) -> Option<u64> {
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
            family,
            params: FamilyParams::defaults(family),
        }
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
        let params = match family {
            Family::Xorshift32 => FamilyParams::Xorshift32 {
                a: u32_of("a")?,
                b: u32_of("b")?,
                c: u32_of("c")?,
            },
            Family::Pcg32 => FamilyParams::Pcg32 {
                inc: get("inc"),
                mult: get("mult"),
            },
            Family::Lcg32 => FamilyParams::Lcg32 {
                a: u32_of("a")?,
                c: u32_of("c")?,
                m: u32_of("m")?,
            },
            Family::JavaLcg => FamilyParams::JavaLcg {
                a: get("a"),
                c: get("c"),
            },
            Family::Minstd => FamilyParams::Minstd {
                a: u32_of("a")?,
                m: u32_of("m")?,
            },
            _ => FamilyParams::None,
        };
        let config = FamilyConfig { family, params };
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), SieveError> {
        let bad = |message: String| SieveError::InvalidParam {
            family: self.family.name().to_string(),
            message,
        };
        if !self.params.family_matches(self.family) {
            return Err(bad(format!(
                "parameters {:?} belong to another family",
                self.params
            )));
        }
        match self.params {
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
            FamilyParams::Pcg32 { .. } | FamilyParams::None => {}
        }
        Ok(())
    }

    /// A generator seeded with `seed` (which must lie in the family's seed space).
    pub fn generator(&self, seed: u64) -> Generator {
        debug_assert!(
            (seed as u128) < self.family.seed_space_end(),
            "seed {seed} outside the {} seed space",
            self.family
        );
        let s32 = seed as u32;
        match (self.family, self.params) {
            (Family::Xorshift32, FamilyParams::Xorshift32 { a, b, c }) => {
                Generator::Xorshift32 { x: s32, a, b, c }
            }
            (Family::Xorshift64, _) => Generator::Xorshift64 { x: seed },
            (Family::Xorshift128, _) => Generator::Xorshift128 {
                x: s32,
                y: 362436069,
                z: 521288629,
                w: 88675123,
            },
            (Family::Pcg32, FamilyParams::Pcg32 { inc, mult }) => Generator::Pcg32 {
                state: s32 as u64,
                mult,
                inc,
            },
            (Family::Lcg32, FamilyParams::Lcg32 { a, c, m }) => {
                Generator::Lcg32 { s: s32, a, c, m }
            }
            (Family::JavaLcg, FamilyParams::JavaLcg { a, c }) => Generator::JavaLcg {
                s: seed & JAVA_MASK,
                a,
                c,
            },
            (Family::Minstd, FamilyParams::Minstd { a, m }) => {
                let s = s32 % m;
                Generator::Minstd {
                    s: if s == 0 { 1 } else { s },
                    a,
                    m,
                }
            }
            (Family::Mt19937, _) => Generator::Mt19937(Box::new(Mt19937::new(s32))),
            (Family::Xoshiro256pp, _) => Generator::Xoshiro256pp {
                s: [
                    seed,
                    0x9E37_79B9_7F4A_7C15,
                    0x6A09_E667_F3BC_C908,
                    0xBB67_AE85_84CA_A73B,
                ],
            },
            (Family::Philox4x32, _) => Generator::Philox4x32 {
                key: [seed as u32, (seed >> 32) as u32],
                counter: 0,
            },
            (Family::Sfc64, _) => Generator::Sfc64 {
                a: seed,
                b: 0x9E37_79B9_7F4A_7C15,
                c: 0x6A09_E667_F3BC_C908,
                cnt: 1,
            },
            (family, params) => {
                panic!("invalid FamilyConfig: {family} with {params:?} (call validate first)")
            }
        }
    }

    /// Output number `n` (0-based) of the generator seeded with `seed`.
    pub fn output_at(&self, seed: u64, n: u64) -> u64 {
        let mut g = self.generator(seed);
        g.advance(n);
        g.next_output()
    }
}

impl Serialize for FamilyConfig {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let params: std::collections::BTreeMap<&str, u64> =
            self.params.to_pairs().into_iter().collect();
        let mut st = s.serialize_struct("FamilyConfig", 2)?;
        st.serialize_field("family", &self.family)?;
        st.serialize_field("params", &params)?;
        st.end()
    }
}

impl<'de> Deserialize<'de> for FamilyConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Value {
            Number(u64),
            Text(String),
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            family: String,
            #[serde(default)]
            params: std::collections::BTreeMap<String, Value>,
        }
        let raw = Raw::deserialize(d)?;
        let family = Family::parse(&raw.family).map_err(serde::de::Error::custom)?;
        let mut values = Vec::with_capacity(raw.params.len());
        for (k, v) in raw.params {
            let n = match v {
                Value::Number(n) => n,
                Value::Text(t) => parse_u64(&t).ok_or_else(|| {
                    serde::de::Error::custom(SieveError::InvalidParam {
                        family: family.name().to_string(),
                        message: format!(
                            "parameter '{k}' = '{t}' is not a decimal or 0x-hex unsigned integer"
                        ),
                    })
                })?,
            };
            values.push((k, n));
        }
        FamilyConfig::from_values(family, &values).map_err(serde::de::Error::custom)
    }
}

const JAVA_MASK: u64 = (1 << 48) - 1;

/// A seeded generator of one family: the scalar definition every backend must reproduce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Generator {
    Xorshift32 {
        x: u32,
        a: u32,
        b: u32,
        c: u32,
    },
    Xorshift64 {
        x: u64,
    },
    Xorshift128 {
        x: u32,
        y: u32,
        z: u32,
        w: u32,
    },
    Pcg32 {
        state: u64,
        mult: u64,
        inc: u64,
    },
    Lcg32 {
        s: u32,
        a: u32,
        c: u32,
        m: u32,
    },
    JavaLcg {
        s: u64,
        a: u64,
        c: u64,
    },
    Minstd {
        s: u32,
        a: u32,
        m: u32,
    },
    Mt19937(Box<Mt19937>),
    Xoshiro256pp {
        s: [u64; 4],
    },
    /// `counter` is the number of the next output.
    Philox4x32 {
        key: [u32; 2],
        counter: u64,
    },
    Sfc64 {
        a: u64,
        b: u64,
        c: u64,
        cnt: u64,
    },
}

impl Generator {
    /// The next output, at the family's own width (see the module doc).
    #[inline]
    pub fn next_output(&mut self) -> u64 {
        match self {
            Generator::Xorshift32 { x, a, b, c } => {
                *x = xorshift32_step(*x, *a, *b, *c);
                *x as u64
            }
            Generator::Xorshift64 { x } => {
                *x = xorshift64_step(*x);
                *x
            }
            Generator::Xorshift128 { x, y, z, w } => {
                let t = *x ^ (*x << 11);
                *x = *y;
                *y = *z;
                *z = *w;
                *w = *w ^ (*w >> 19) ^ (t ^ (t >> 8));
                *w as u64
            }
            Generator::Pcg32 { state, mult, inc } => {
                let old = *state;
                *state = old.wrapping_mul(*mult).wrapping_add(*inc);
                pcg32_xsh_rr(old) as u64
            }
            Generator::Lcg32 { s, a, c, m } => {
                *s = lcg32_step(*s, *a, *c, *m);
                *s as u64
            }
            Generator::JavaLcg { s, a, c } => {
                *s = s.wrapping_mul(*a).wrapping_add(*c) & JAVA_MASK;
                (*s >> 16) as u32 as u64
            }
            Generator::Minstd { s, a, m } => {
                *s = ((*a as u64 * *s as u64) % *m as u64) as u32;
                *s as u64
            }
            Generator::Mt19937(mt) => mt.next_u32() as u64,
            Generator::Xoshiro256pp { s } => {
                let out = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
                xoshiro256_step(s);
                out
            }
            Generator::Philox4x32 { key, counter } => {
                let n = *counter;
                *counter = n.wrapping_add(1);
                philox4x32_10([n as u32, (n >> 32) as u32, 0, 0], *key)[0] as u64
            }
            Generator::Sfc64 { a, b, c, cnt } => {
                let tmp = a.wrapping_add(*b).wrapping_add(*cnt);
                *cnt = cnt.wrapping_add(1);
                *a = *b ^ (*b >> 11);
                *b = c.wrapping_add(*c << 3);
                *c = c.rotate_left(24).wrapping_add(tmp);
                tmp
            }
        }
    }

    /// Discards `n` outputs. A jump for the LCG-type families (O(log n)) and philox (O(1));
    /// plain stepping otherwise.
    pub fn advance(&mut self, n: u64) {
        if n == 0 {
            return;
        }
        match self {
            Generator::Pcg32 { state, mult, inc } => {
                let (a, c) = affine_pow(*mult as u128, *inc as u128, n, 1 << 64);
                *state = ((a * *state as u128 + c) & u64::MAX as u128) as u64;
            }
            Generator::Lcg32 { s, a, c, m } => {
                let modulus = if *m == 0 { 1u128 << 32 } else { *m as u128 };
                let (ja, jc) = affine_pow(*a as u128, *c as u128, n, modulus);
                *s = ((ja * *s as u128 + jc) % modulus) as u32;
            }
            Generator::JavaLcg { s, a, c } => {
                let (ja, jc) = affine_pow(*a as u128, *c as u128, n, 1 << 48);
                *s = ((ja * *s as u128 + jc) & JAVA_MASK as u128) as u64;
            }
            Generator::Minstd { s, a, m } => {
                let (ja, _) = affine_pow(*a as u128, 0, n, *m as u128);
                *s = ((ja * *s as u128) % *m as u128) as u32;
            }
            Generator::Philox4x32 { counter, .. } => *counter = counter.wrapping_add(n),
            Generator::Mt19937(mt) => mt.discard(n),
            _ => {
                for _ in 0..n {
                    self.next_output();
                }
            }
        }
    }
}

/// `(A, C)` with `f^n(s) = A*s + C (mod modulus)` for `f(s) = a*s + c`; `modulus <= 2^64`.
pub fn affine_pow(a: u128, c: u128, mut n: u64, modulus: u128) -> (u128, u128) {
    let (mut acc_a, mut acc_c) = (1 % modulus, 0u128);
    let (mut sq_a, mut sq_c) = (a % modulus, c % modulus);
    while n > 0 {
        if n & 1 == 1 {
            // acc := sq after acc: s -> sq_a*(acc_a*s + acc_c) + sq_c
            acc_a = acc_a * sq_a % modulus;
            acc_c = (acc_c * sq_a + sq_c) % modulus;
        }
        // sq := sq after sq
        sq_c = (sq_c * sq_a + sq_c) % modulus;
        sq_a = sq_a * sq_a % modulus;
        n >>= 1;
    }
    (acc_a, acc_c)
}

#[inline]
pub fn xorshift32_step(mut x: u32, a: u32, b: u32, c: u32) -> u32 {
    x ^= x << a;
    x ^= x >> b;
    x ^= x << c;
    x
}

#[inline]
pub fn xorshift64_step(mut x: u64) -> u64 {
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    x.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

/// `(a*s + c) mod m` with a 64-bit intermediate; `m = 0` means 2^32.
#[inline]
pub fn lcg32_step(s: u32, a: u32, c: u32, m: u32) -> u32 {
    let v = a as u64 * s as u64 + c as u64;
    if m == 0 {
        v as u32
    } else {
        (v % m as u64) as u32
    }
}

/// PCG's XSH-RR output function applied to a 64-bit state.
#[inline]
pub fn pcg32_xsh_rr(old: u64) -> u32 {
    let xorshifted = (((old >> 18) ^ old) >> 27) as u32;
    let rot = (old >> 59) as u32;
    xorshifted.rotate_right(rot)
}

/// The xoshiro256 state update (shared by xoshiro256++ and friends).
#[inline]
pub fn xoshiro256_step(s: &mut [u64; 4]) {
    let t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = s[3].rotate_left(45);
}

/// The Philox4x32-10 block function (Random123).
pub fn philox4x32_10(mut ctr: [u32; 4], mut key: [u32; 2]) -> [u32; 4] {
    const M0: u64 = 0xD251_1F53;
    const M1: u64 = 0xCD9E_8D57;
    for round in 0..10 {
        if round > 0 {
            key[0] = key[0].wrapping_add(0x9E37_79B9);
            key[1] = key[1].wrapping_add(0xBB67_AE85);
        }
        let p0 = M0 * ctr[0] as u64;
        let p1 = M1 * ctr[2] as u64;
        let (hi0, lo0) = ((p0 >> 32) as u32, p0 as u32);
        let (hi1, lo1) = ((p1 >> 32) as u32, p1 as u32);
        ctr = [hi1 ^ ctr[1] ^ key[0], lo1, hi0 ^ ctr[3] ^ key[1], lo0];
    }
    ctr
}

/// MT19937 tempering of one state word.
#[inline]
pub fn mt_temper(mut y: u32) -> u32 {
    y ^= y >> 11;
    y ^= (y << 7) & 0x9D2C_5680;
    y ^= (y << 15) & 0xEFC6_0000;
    y ^= y >> 18;
    y
}

/// The 32-bit Mersenne Twister with `init_genrand` seeding (C++ `std::mt19937(seed)`).
#[derive(Clone, PartialEq, Eq)]
pub struct Mt19937 {
    mt: [u32; 624],
    index: usize,
}

impl std::fmt::Debug for Mt19937 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Mt19937 {{ index: {}, mt[0..4]: {:?} }}",
            self.index,
            &self.mt[..4]
        )
    }
}

impl Mt19937 {
    pub const N: usize = 624;
    const M: usize = 397;

    pub fn new(seed: u32) -> Self {
        let mut mt = [0u32; 624];
        mt[0] = seed;
        for i in 1..Self::N {
            mt[i] = 1812433253u32
                .wrapping_mul(mt[i - 1] ^ (mt[i - 1] >> 30))
                .wrapping_add(i as u32);
        }
        Mt19937 { mt, index: Self::N }
    }

    /// The untempered state words right after seeding (for backends that compute few words).
    pub fn initial_state(seed: u32) -> [u32; 624] {
        Self::new(seed).mt
    }

    fn twist(&mut self) {
        for i in 0..Self::N {
            let y = (self.mt[i] & 0x8000_0000) | (self.mt[(i + 1) % Self::N] & 0x7FFF_FFFF);
            let mut v = self.mt[(i + Self::M) % Self::N] ^ (y >> 1);
            if y & 1 != 0 {
                v ^= 0x9908_B0DF;
            }
            self.mt[i] = v;
        }
        self.index = 0;
    }

    #[inline]
    pub fn next_u32(&mut self) -> u32 {
        if self.index >= Self::N {
            self.twist();
        }
        let y = self.mt[self.index];
        self.index += 1;
        mt_temper(y)
    }

    /// Discards `n` outputs (whole blocks are twisted without tempering).
    pub fn discard(&mut self, mut n: u64) {
        while n > 0 {
            if self.index >= Self::N {
                self.twist();
            }
            let take = ((Self::N - self.index) as u64).min(n);
            self.index += take as usize;
            n -= take;
        }
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
            cfg.params,
            FamilyParams::Lcg32 {
                a: 0x41C6_4E6D,
                c: 12345,
                m: 0
            }
        );
    }

    #[test]
    fn parse_accepts_owned_pairs() {
        let mut owned = Vec::new();
        owned.push(("c".to_string(), "7".to_string()));
        let cfg = FamilyConfig::parse("java_lcg", &owned).unwrap();
        assert_eq!(
            cfg.params,
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
