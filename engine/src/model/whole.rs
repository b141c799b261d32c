//! Whole numbers that YAML may spell as floats (`2.0`): JSON Schema counts `2.0` as an integer,
//! so the model accepts it too, rather than fail after the schema passed.

use serde::{Deserialize, Deserializer};

#[derive(Deserialize)]
#[serde(untagged)]
enum Raw {
    Int(u64),
    Float(f64),
}

fn whole<'de, D: Deserializer<'de>>(raw: Raw) -> Result<u32, D::Error> {
    let n = match raw {
        Raw::Int(n) => n,
        Raw::Float(f) if f.fract() == 0.0 && f >= 0.0 && f <= u32::MAX as f64 => f as u64,
        Raw::Float(f) => {
            return Err(serde::de::Error::custom(format!(
                "expected a whole number, got {f}"
            )))
        }
    };
    u32::try_from(n).map_err(|_| serde::de::Error::custom(format!("{n} is too large")))
}

/// A `u32` written `3` or `3.0`.
pub fn u32<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    whole::<D>(Raw::deserialize(d)?)
}

/// An optional `u32` written `3` or `3.0`.
pub fn opt_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    match Option::<Raw>::deserialize(d)? {
        Some(raw) => whole::<D>(raw).map(Some),
        None => Ok(None),
    }
}
