//! The serde form of [`FamilyConfig`]: `{"family": "lcg32", "params": {"a": 1103515245, ...}}`;
//! on input `params` may be omitted or partial, each value a number or a decimal/`0x` string.

use serde::{Deserialize, Serialize};

use super::params::parse_u64;
use super::{Family, FamilyConfig};
use crate::spec::SieveError;

impl Serialize for FamilyConfig {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let params: std::collections::BTreeMap<&str, u64> =
            self.params().to_pairs().into_iter().collect();
        let mut st = s.serialize_struct("FamilyConfig", 2)?;
        st.serialize_field("family", &self.family())?;
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
