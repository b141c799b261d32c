//! The filters opsbook adds to Jinja's own: quoting, JSON/YAML, base64, regexes, durations and
//! dates.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use base64::Engine as _;
use minijinja::value::{Kwargs, Value};
use minijinja::{Error, ErrorKind};

use crate::model::{format_duration, parse_duration};

fn invalid(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidOperation, msg.into())
}

fn text_of(v: &Value) -> String {
    match v.as_str() {
        Some(s) => s.to_string(),
        None => v.to_string(),
    }
}

/// Quotes a value for a POSIX shell: `it's` → `'it'"'"'s'`. Safe words stay as they are.
pub fn shquote(v: Value) -> String {
    let s = text_of(&v);
    quote_posix(&s)
}

/// Quotes a string for a POSIX shell.
pub fn quote_posix(s: &str) -> String {
    let safe = !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'_' | b'@' | b'%' | b'+' | b'=' | b':' | b',' | b'.' | b'/' | b'-'
                )
        });
    if safe {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r#"'"'"'"#))
    }
}

/// Parses a JSON string into a value.
pub fn fromjson(v: Value) -> Result<Value, Error> {
    let s = text_of(&v);
    let parsed: serde_json::Value =
        serde_json::from_str(&s).map_err(|e| invalid(format!("fromjson: invalid JSON: {e}")))?;
    Ok(crate::template::to_template_value(&parsed))
}

/// Parses a YAML string into a value (with the same budgets as runbooks).
pub fn fromyaml(v: Value) -> Result<Value, Error> {
    let s = text_of(&v);
    let parsed = crate::yaml::parse_value(&s)
        .map_err(|e| invalid(format!("fromyaml: invalid YAML: {e}")))?;
    Ok(crate::template::to_template_value(&parsed))
}

/// Base64-encodes the UTF-8 bytes of a string.
pub fn b64encode(v: Value) -> String {
    base64::engine::general_purpose::STANDARD.encode(text_of(&v))
}

/// Decodes base64 (standard or URL-safe, padded or not) into a UTF-8 string.
pub fn b64decode(v: Value) -> Result<String, Error> {
    let s = text_of(&v);
    let s = s.trim();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(s))
        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(s))
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s))
        .map_err(|e| invalid(format!("b64decode: invalid base64: {e}")))?;
    String::from_utf8(bytes).map_err(|_| invalid("b64decode: the decoded bytes are not UTF-8 text"))
}

fn regex(pattern: &str, ignorecase: bool) -> Result<Arc<regex::Regex>, Error> {
    type Cache = Mutex<HashMap<(String, bool), Arc<regex::Regex>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let key = (pattern.to_string(), ignorecase);
    if let Some(r) = cache.lock().ok().and_then(|c| c.get(&key).cloned()) {
        return Ok(r);
    }
    let re = regex::RegexBuilder::new(pattern)
        .case_insensitive(ignorecase)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| invalid(format!("invalid regular expression: {e}")))?;
    let re = Arc::new(re);
    if let Ok(mut c) = cache.lock() {
        if c.len() > 256 {
            c.clear();
        }
        c.insert(key, re.clone());
    }
    Ok(re)
}

/// `s | regex_search(pattern)`: the first match, or `none`. With a capture group named or
/// numbered by `group=`, that group. `ignorecase=true` ignores case.
pub fn regex_search(v: Value, pattern: &str, kwargs: Kwargs) -> Result<Value, Error> {
    let ignorecase: Option<bool> = kwargs.get("ignorecase")?;
    let group: Option<Value> = kwargs.get("group")?;
    kwargs.assert_all_used()?;
    let s = text_of(&v);
    let re = regex(pattern, ignorecase.unwrap_or(false))?;
    let Some(caps) = re.captures(&s) else {
        return Ok(Value::from(()));
    };
    let m = match group {
        None => caps.get(0),
        Some(g) => match (g.as_usize(), g.as_str()) {
            (Some(i), _) => caps.get(i),
            (None, Some(name)) => caps.name(name),
            _ => return Err(invalid("regex_search: group= takes a number or a name")),
        },
    };
    Ok(m.map(|m| Value::from(m.as_str()))
        .unwrap_or(Value::from(())))
}

/// `s | regex_replace(pattern, replacement)`: replaces every match; `\1` or `$1` name groups.
pub fn regex_replace(
    v: Value,
    pattern: &str,
    replacement: &str,
    kwargs: Kwargs,
) -> Result<String, Error> {
    let ignorecase: Option<bool> = kwargs.get("ignorecase")?;
    kwargs.assert_all_used()?;
    let s = text_of(&v);
    let re = regex(pattern, ignorecase.unwrap_or(false))?;
    static BACKREF: OnceLock<regex::Regex> = OnceLock::new();
    let backref = BACKREF.get_or_init(|| regex::Regex::new(r"\\(\d+)").expect("static regex"));
    let replacement = backref.replace_all(replacement, "$${$1}");
    Ok(re.replace_all(&s, replacement.as_ref()).into_owned())
}

/// `"1h30m" | duration` gives 5400 (seconds); `90 | duration` gives `"1m30s"`.
pub fn duration(v: Value) -> Result<Value, Error> {
    if let Some(s) = v.as_str() {
        let d = parse_duration(s).map_err(|e| invalid(e.to_string()))?;
        let secs = d.as_secs_f64();
        return Ok(if secs.fract() == 0.0 && secs < 9e15 {
            Value::from(secs as i64)
        } else {
            Value::from(secs)
        });
    }
    let secs = f64::try_from(v.clone())
        .map_err(|_| invalid("duration: expected a string like `5m` or a number of seconds"))?;
    let d = std::time::Duration::try_from_secs_f64(secs)
        .map_err(|_| invalid("duration: the number of seconds must be 0 or more"))?;
    Ok(Value::from(format_duration(d)))
}

/// `"2026-11-24T20:30:00Z" | to_datetime` (RFC 3339), or with a `strftime` format:
/// `"24/11/2026 20:30" | to_datetime("%d/%m/%Y %H:%M")` (taken as UTC). Gives a mapping with
/// `timestamp` (seconds since the epoch, for arithmetic), `iso`, `year`, `month`, `day`, `hour`,
/// `minute`, `second` and `weekday`.
pub fn to_datetime(v: Value, format: Option<&str>) -> Result<Value, Error> {
    let s = text_of(&v);
    let s = s.trim();
    let ts: jiff::Timestamp = match format {
        None => match s.parse::<jiff::Timestamp>() {
            Ok(ts) => ts,
            Err(_) => {
                let dt: jiff::civil::DateTime = s.parse().map_err(|e| {
                    invalid(format!(
                        "to_datetime: cannot read `{s}` as a date and time: {e}"
                    ))
                })?;
                dt.to_zoned(jiff::tz::TimeZone::UTC)
                    .map_err(|e| invalid(format!("to_datetime: {e}")))?
                    .timestamp()
            }
        },
        Some(f) => {
            let broken = jiff::fmt::strtime::parse(f, s)
                .map_err(|e| invalid(format!("to_datetime: `{s}` does not match `{f}`: {e}")))?;
            match broken.to_timestamp() {
                Ok(ts) => ts,
                Err(_) => broken
                    .to_datetime()
                    .and_then(|dt| dt.to_zoned(jiff::tz::TimeZone::UTC))
                    .map_err(|e| invalid(format!("to_datetime: {e}")))?
                    .timestamp(),
            }
        }
    };
    let z = ts.to_zoned(jiff::tz::TimeZone::UTC);
    let secs = ts.as_second() as f64 + f64::from(ts.subsec_nanosecond()) / 1e9;
    Ok(crate::template::to_template_value(&serde_json::json!({
        "timestamp": secs,
        "iso": ts.to_string(),
        "year": z.year(),
        "month": z.month(),
        "day": z.day(),
        "hour": z.hour(),
        "minute": z.minute(),
        "second": z.second(),
        "weekday": z.weekday().to_monday_one_offset(),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shquote_quotes_what_the_shell_would_split_or_expand() {
        assert_eq!(quote_posix("plain-word_1.txt"), "plain-word_1.txt");
        assert_eq!(quote_posix(""), "''");
        assert_eq!(quote_posix("a b"), "'a b'");
        assert_eq!(quote_posix("it's"), r#"'it'"'"'s'"#);
        assert_eq!(quote_posix("$(rm -rf /)"), "'$(rm -rf /)'");
        assert_eq!(quote_posix("a;b|c&d`e`\n"), "'a;b|c&d`e`\n'");
    }

    #[test]
    fn shquote_output_round_trips_through_sh() {
        for s in [
            "it's",
            "$HOME",
            "a\"b",
            "back\\slash",
            "; echo pwned",
            "*",
            "~",
            "new\nline",
        ] {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("printf %s {}", quote_posix(s)))
                .output()
                .unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout), s);
        }
    }
}
