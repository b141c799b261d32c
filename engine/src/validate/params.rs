//! Param values: typing `-p key=value` text, and checking values against declarations.

use indexmap::IndexMap;
use serde_json::Value;

use crate::model::{ItemsSpec, ParamType};

/// A param value given for a run: `-p name=text` (typed from YAML scalar syntax according to the
/// declaration) or a value from `--params-file`.
#[derive(Debug, Clone, PartialEq)]
pub enum GivenParam {
    /// Text from the command line.
    Text(String),
    /// A typed value (params file, API).
    Value(Value),
}

/// Params given for a run, by name, in the order given.
pub type GivenParams = IndexMap<String, GivenParam>;

/// Parses `name=value` from the command line.
pub fn parse_assignment(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("expected NAME=VALUE, got `{s}`")),
    }
}

/// Turns command-line text into a value of the declared type. A `string` param takes the text as
/// it is (`-p version=1.10` stays `"1.10"`); other types read the text as YAML (`-p n=3`,
/// `-p hosts=[a, b]`, `-p dry=true`).
pub fn type_text(kind: ParamType, text: &str) -> Result<Value, String> {
    if kind == ParamType::String {
        return Ok(Value::String(text.to_string()));
    }
    let v: Value = crate::yaml::parse_value(text)
        .map_err(|e| format!("`{text}` is not a valid {}: {e}", kind.name()))?;
    Ok(v)
}

fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(_) => "a boolean".into(),
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer".into(),
        Value::Number(_) => "a number".into(),
        Value::String(_) => "a string".into(),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a mapping".into(),
    }
}

fn fmt_num(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        x.to_string()
    }
}

/// Checks a value against a declaration: type, enum, minimum/maximum, items. The error says what
/// is wrong without naming the param (the caller does).
pub fn check_value(spec: &ItemsSpec, v: &Value) -> Result<(), String> {
    let type_ok = match spec.kind {
        ParamType::String => v.is_string(),
        ParamType::Integer => v.as_i64().is_some() || v.as_u64().is_some(),
        ParamType::Number => v.is_number(),
        ParamType::Boolean => v.is_boolean(),
        ParamType::Array => v.is_array(),
        ParamType::Object => v.is_object(),
    };
    if !type_ok {
        return Err(format!(
            "expected {} {}, got {} ({})",
            article(spec.kind),
            spec.kind.name(),
            describe(v),
            short(v)
        ));
    }
    if let Some(allowed) = &spec.allowed {
        if !allowed.iter().any(|a| a == v) {
            let list: Vec<String> = allowed.iter().map(short).collect();
            return Err(format!(
                "{} is not one of the allowed values: {}",
                short(v),
                list.join(", ")
            ));
        }
    }
    let (measure, what) = match v {
        Value::Number(n) => (n.as_f64(), "value"),
        Value::String(s) => (Some(s.chars().count() as f64), "length"),
        Value::Array(a) => (Some(a.len() as f64), "length"),
        _ => (None, ""),
    };
    if let Some(m) = measure {
        if let Some(min) = spec.minimum {
            if m < min {
                return Err(format!(
                    "{what} {} is below the minimum {}",
                    fmt_num(m),
                    fmt_num(min)
                ));
            }
        }
        if let Some(max) = spec.maximum {
            if m > max {
                return Err(format!(
                    "{what} {} is above the maximum {}",
                    fmt_num(m),
                    fmt_num(max)
                ));
            }
        }
    }
    if let (Some(items), Value::Array(list)) = (&spec.items, v) {
        for (i, item) in list.iter().enumerate() {
            check_value(items, item).map_err(|e| format!("item {i}: {e}"))?;
        }
    }
    Ok(())
}

fn article(t: ParamType) -> &'static str {
    match t {
        ParamType::Integer | ParamType::Array | ParamType::Object => "an",
        _ => "a",
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 40 {
        format!("{}…", s.chars().take(40).collect::<String>())
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(kind: ParamType) -> ItemsSpec {
        ItemsSpec {
            kind,
            ..Default::default()
        }
    }

    #[test]
    fn text_is_typed_by_the_declaration() {
        assert_eq!(type_text(ParamType::String, "1.10").unwrap(), json!("1.10"));
        assert_eq!(type_text(ParamType::Integer, "3").unwrap(), json!(3));
        assert_eq!(type_text(ParamType::Boolean, "true").unwrap(), json!(true));
        assert_eq!(
            type_text(ParamType::Array, "[a, b]").unwrap(),
            json!(["a", "b"])
        );
        assert_eq!(
            type_text(ParamType::Object, "{app: web}").unwrap(),
            json!({"app": "web"})
        );
    }

    #[test]
    fn values_are_checked() {
        assert!(check_value(&spec(ParamType::Integer), &json!(3)).is_ok());
        assert!(check_value(&spec(ParamType::Integer), &json!("3"))
            .unwrap_err()
            .contains("expected an integer"));
        let e = ItemsSpec {
            kind: ParamType::String,
            allowed: Some(vec![json!("staging"), json!("prod")]),
            ..Default::default()
        };
        assert!(check_value(&e, &json!("dev"))
            .unwrap_err()
            .contains("allowed values: \"staging\", \"prod\""));
        let r = ItemsSpec {
            kind: ParamType::Integer,
            minimum: Some(1.0),
            maximum: Some(5.0),
            ..Default::default()
        };
        assert!(check_value(&r, &json!(0))
            .unwrap_err()
            .contains("below the minimum 1"));
        assert!(check_value(&r, &json!(6))
            .unwrap_err()
            .contains("above the maximum 5"));
        let a = ItemsSpec {
            kind: ParamType::Array,
            items: Some(Box::new(spec(ParamType::String))),
            ..Default::default()
        };
        assert!(check_value(&a, &json!(["a", 1]))
            .unwrap_err()
            .contains("item 1"));
    }
}
