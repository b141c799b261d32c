//! Checking a document against a JSON Schema, with messages people can act on: unknown keys with
//! "did you mean", missing keys, wrong types, allowed values.

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::ValidationError;
use serde_json::Value;

use crate::diag::{Code, Diagnostic};
use crate::schema::{navigate, resolve_ref};
use crate::source::Source;
use crate::suggest::did_you_mean;
use crate::yaml::{escape_pointer_token, Document};

/// Where the checked value sits in the document, and which code its problems get.
pub struct Target<'a> {
    /// The source file.
    pub source: &'a Source,
    /// The document's source map.
    pub doc: &'a Document,
    /// The pointer of the checked value inside the document ("" for the whole runbook).
    pub base: &'a str,
    /// The code for type and shape problems.
    pub code: Code,
    /// Prefix of messages ("`k8s.delete` input: ").
    pub prefix: &'a str,
}

impl Target<'_> {
    /// A diagnostic about the checked value, its message prefixed (`\`shell\` input: `).
    fn diag(&self, code: Code, span: Option<crate::source::Span>, message: String) -> Diagnostic {
        Diagnostic::new(code, self.source, span, format!("{}{message}", self.prefix))
    }
}

/// Validates `value` against `validator` (compiled from `schema`) and returns diagnostics. Errors
/// whose instance path is in `skip` are dropped (used for template strings, which only have a type
/// once rendered).
pub fn check(
    validator: &jsonschema::Validator,
    schema: &Value,
    value: &Value,
    t: &Target<'_>,
    skip: &dyn Fn(&str, &ValidationErrorKind, &str) -> bool,
) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for err in validator.iter_errors(value) {
        report(&err, schema, value, t, skip, &mut out);
    }
    out
}

fn is_type_error_at(e: &ValidationError<'_>, path: &str) -> bool {
    matches!(
        e.kind(),
        ValidationErrorKind::Type { .. }
            | ValidationErrorKind::Constant { .. }
            | ValidationErrorKind::Enum { .. }
    ) && e.instance_path().as_str() == path
}

fn report(
    err: &ValidationError<'_>,
    schema: &Value,
    value: &Value,
    t: &Target<'_>,
    skip: &dyn Fn(&str, &ValidationErrorKind, &str) -> bool,
    out: &mut Vec<Diagnostic>,
) {
    let path = err.instance_path().as_str().to_string();
    let kind = err.kind();
    let schema_path = err.schema_path().as_str().to_string();
    if skip(&path, kind, &schema_path) {
        return;
    }
    let pointer = format!("{}{}", t.base, path);
    let field = display_path(&path);
    match kind {
        ValidationErrorKind::AnyOf { context }
        | ValidationErrorKind::OneOfNotValid { context }
        | ValidationErrorKind::OneOfMultipleValid { context } => {
            let multiple = matches!(kind, ValidationErrorKind::OneOfMultipleValid { .. });
            let at = if field.is_empty() {
                String::new()
            } else {
                format!("`{field}`: ")
            };
            let branches = branch_schemas(schema, &schema_path);
            // Alternatives told apart by which keys are present: secret sources, `shell`'s
            // `command` or `args`.
            if let Some(Value::Object(obj)) = value.pointer(&path) {
                let required: Vec<Vec<String>> = branches.iter().map(|b| required_of(b)).collect();
                if !required.is_empty() && required.iter().all(|r| !r.is_empty()) {
                    let present: Vec<usize> = (0..required.len())
                        .filter(|&i| required[i].iter().all(|k| obj.contains_key(k)))
                        .collect();
                    let names = required
                        .iter()
                        .map(|r| {
                            r.iter()
                                .map(|k| format!("`{k}`"))
                                .collect::<Vec<_>>()
                                .join(" + ")
                        })
                        .collect::<Vec<_>>()
                        .join(", ");
                    match present.len() {
                        1 if !multiple => {
                            for e in context.get(present[0]).into_iter().flatten() {
                                report(e, schema, value, t, skip, out);
                            }
                        }
                        0 => {
                            let known: Vec<&str> =
                                required.iter().flatten().map(String::as_str).collect();
                            let strangers: Vec<String> = obj
                                .keys()
                                .filter(|k| !known.contains(&k.as_str()))
                                .map(|k| format!("`{k}`"))
                                .collect();
                            let help = strangers
                                .first()
                                .and_then(|st| {
                                    let word = st.trim_matches('`');
                                    did_you_mean(word, known.iter().copied())
                                        .map(|d| format!("{st}: {d}"))
                                })
                                .or_else(|| {
                                    (!strangers.is_empty()).then(|| {
                                        format!("{} is not one of them", strangers.join(", "))
                                    })
                                });
                            out.push(
                                t.diag(
                                    t.code,
                                    t.doc.key_span(&pointer),
                                    format!("{at}needs one of {names}"),
                                )
                                .maybe_help(help),
                            );
                        }
                        _ => {
                            out.push(t.diag(
                                t.code,
                                t.doc.key_span(&pointer),
                                format!("{at}give only one of {names}"),
                            ));
                        }
                    }
                    return;
                }
            }
            if multiple {
                out.push(t.diag(
                    t.code,
                    t.doc.value_span(&pointer),
                    format!("{at}matches more than one allowed form"),
                ));
                return;
            }
            // Report the problems of the alternative whose type fits: `retry: {attempts: 0}`
            // should say "attempts must be at least 1", not "a mapping is not allowed here".
            let fitting: Vec<&Vec<ValidationError<'static>>> = context
                .iter()
                .filter(|branch| !branch.iter().any(|e| is_type_error_at(e, &path)))
                .collect();
            if let Some(branch) = fitting.first().filter(|b| !b.is_empty()) {
                for e in branch.iter() {
                    report(e, schema, value, t, skip, out);
                }
                return;
            }
            let mut expected: Vec<String> = Vec::new();
            let mut constants: Vec<String> = Vec::new();
            let mut only_constants = true;
            for e in context
                .iter()
                .flatten()
                .filter(|e| e.instance_path().as_str() == path)
            {
                let name = match e.kind() {
                    ValidationErrorKind::Type {
                        kind: TypeKind::Single(ty),
                    } => {
                        only_constants = false;
                        kind_name(ty).to_string()
                    }
                    ValidationErrorKind::Type {
                        kind: TypeKind::Multiple(ts),
                    } => {
                        only_constants = false;
                        ts.iter()
                            .map(|ty| kind_name(&ty))
                            .filter(|n| *n != "null")
                            .collect::<Vec<_>>()
                            .join(" or ")
                    }
                    ValidationErrorKind::Constant { expected_value } => {
                        if let Some(c) = expected_value.as_str() {
                            constants.push(c.to_string());
                        }
                        expected_value.to_string()
                    }
                    _ => continue,
                };
                if !name.is_empty() && name != "null" && !expected.contains(&name) {
                    expected.push(name);
                }
            }
            let here = value.pointer(&path);
            let got = here.map(type_name).unwrap_or("something else");
            let help = navigate(schema, parent_of_keyword(&schema_path))
                .and_then(|s| s.get("description"))
                .and_then(Value::as_str)
                .map(first_sentence);
            if only_constants && !constants.is_empty() {
                let shown = here
                    .map(|v| {
                        v.as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| v.to_string())
                    })
                    .unwrap_or_default();
                let list = constants
                    .iter()
                    .map(|c| format!("`{c}`"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let hint = did_you_mean(&shown, constants.iter().map(String::as_str)).or(help);
                out.push(
                    t.diag(
                        t.code,
                        t.doc.value_span(&pointer),
                        format!("{at}`{shown}` is not one of {list}"),
                    )
                    .maybe_help(hint),
                );
                return;
            }
            let message = if expected.is_empty() {
                format!("{got} is not allowed here")
            } else {
                format!("expected {}, got {got}", expected.join(" or "))
            };
            out.push(
                t.diag(t.code, t.doc.value_span(&pointer), format!("{at}{message}"))
                    .maybe_help(help),
            );
        }
        ValidationErrorKind::PropertyNames { error } => {
            let key = error.instance().as_str().unwrap_or_default().to_string();
            let kp = format!("{pointer}/{}", escape_pointer_token(&key));
            let why = match error.kind() {
                ValidationErrorKind::Pattern { pattern } => pattern_meaning(pattern)
                    .unwrap_or_else(|| format!("does not match `{pattern}`")),
                _ => error.to_string(),
            };
            out.push(t.diag(
                t.code,
                t.doc.key_span(&kp),
                format!("`{field}`: `{key}` {why}"),
            ));
        }
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            let parent = schema_path.trim_end_matches("/additionalProperties");
            let allowed: Vec<String> = navigate(schema, parent)
                .and_then(|s| s.get("properties"))
                .and_then(Value::as_object)
                .map(|p| p.keys().cloned().collect())
                .unwrap_or_default();
            for key in unexpected {
                let kp = format!("{pointer}/{}", escape_pointer_token(key));
                let help = did_you_mean(key, allowed.iter().map(String::as_str)).or_else(|| {
                    (!allowed.is_empty()).then(|| format!("allowed keys: {}", allowed.join(", ")))
                });
                let at = if field.is_empty() {
                    String::new()
                } else {
                    format!(" in `{field}`")
                };
                out.push(
                    t.diag(
                        Code::UnknownKey,
                        t.doc.key_span(&kp),
                        format!("unknown key `{key}`{at}"),
                    )
                    .maybe_help(help)
                    .label("not a known key"),
                );
            }
        }
        ValidationErrorKind::Required { property } => {
            let name = property
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| property.to_string());
            let what = if field.is_empty() {
                String::new()
            } else {
                format!(" in `{field}`")
            };
            let help = navigate(schema, schema_path.trim_end_matches("/required"))
                .and_then(|s| {
                    s.get("properties")?
                        .get(&name)?
                        .get("description")?
                        .as_str()
                        .map(str::to_string)
                })
                .map(|d| format!("`{name}`: {}", first_sentence(&d)));
            out.push(
                t.diag(
                    t.code,
                    t.doc.key_span(&pointer),
                    format!("missing required key `{name}`{what}"),
                )
                .maybe_help(help),
            );
        }
        _ => {
            let here = value.pointer(&path);
            let mut message = friendly(kind, here).unwrap_or_else(|| err.to_string());
            if t.base.is_empty() && path == "/version" {
                message = format!(
                    "the format version must be 1, not {}",
                    here.map(|v| v.to_string()).unwrap_or_default()
                );
            }
            let at = if field.is_empty() || path == "/version" {
                String::new()
            } else {
                format!("`{field}`: ")
            };
            let mut help = navigate(schema, parent_of_keyword(&schema_path))
                .and_then(|s| s.get("description"))
                .and_then(Value::as_str)
                .map(first_sentence);
            if path == "/version" {
                help = None;
            }
            match kind {
                ValidationErrorKind::Pattern { pattern } if pattern_meaning(pattern).is_some() => {
                    help = None
                }
                ValidationErrorKind::Enum { options } => {
                    if let (Some(word), Some(opts)) =
                        (here.and_then(Value::as_str), options.as_array())
                    {
                        let names: Vec<&str> = opts.iter().filter_map(Value::as_str).collect();
                        if let Some(d) = did_you_mean(word, names) {
                            help = Some(d);
                        }
                    }
                }
                _ => {}
            }
            out.push(
                t.diag(t.code, t.doc.value_span(&pointer), format!("{at}{message}"))
                    .maybe_help(help),
            );
        }
    }
}

/// The alternatives of an `anyOf`/`oneOf` keyword, `$ref`s resolved.
fn branch_schemas<'a>(schema: &'a Value, keyword_path: &str) -> Vec<&'a Value> {
    let Some(Value::Array(branches)) = navigate(schema, keyword_path) else {
        return Vec::new();
    };
    branches.iter().map(|b| resolve_ref(schema, b)).collect()
}

/// The keys a schema requires.
fn required_of(schema: &Value) -> Vec<String> {
    schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| {
            r.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// What the format's own patterns mean, in words.
fn pattern_meaning(pattern: &str) -> Option<String> {
    use crate::model::{DURATION_PATTERN, NAME_PATTERN, STEP_ID_PATTERN};
    Some(if pattern == DURATION_PATTERN {
        "is not a duration: write e.g. 500ms, 30s, 5m, 1h30m".to_string()
    } else if pattern == STEP_ID_PATTERN {
        "is not a valid step id: use lowercase letters, digits, `_` and `-`, starting with a letter"
            .to_string()
    } else if pattern == NAME_PATTERN {
        "is not a valid name: use letters, digits and `_`, not starting with a digit (templates read names as `params.name`)".to_string()
    } else if pattern == "^[A-Za-z_][A-Za-z0-9_]*$" {
        "is not a valid environment variable name: use letters, digits and `_`, not starting with a digit".to_string()
    } else {
        return None;
    })
}

fn parent_of_keyword(schema_path: &str) -> &str {
    schema_path
        .rfind('/')
        .map(|i| &schema_path[..i])
        .unwrap_or("")
}

fn first_sentence(s: &str) -> String {
    let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    let s = s.as_str();
    match s.find(". ") {
        Some(i) => s[..=i].to_string(),
        None => s.to_string(),
    }
}

/// A JSON pointer as people write paths: `steps[2].retry.attempts`.
pub fn display_path(pointer: &str) -> String {
    let mut out = String::new();
    for raw in pointer.split('/').skip(1) {
        let token = raw.replace("~1", "/").replace("~0", "~");
        if token.parse::<usize>().is_ok() {
            out.push_str(&format!("[{token}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&token);
        }
    }
    out
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

fn kind_name(t: &jsonschema::JsonType) -> &'static str {
    use jsonschema::JsonType as J;
    match t {
        J::Array => "a list",
        J::Boolean => "a boolean",
        J::Integer => "an integer",
        J::Null => "null",
        J::Number => "a number",
        J::Object => "a mapping",
        J::String => "a string",
    }
}

fn friendly(kind: &ValidationErrorKind, value: Option<&Value>) -> Option<String> {
    let got = value.map(type_name).unwrap_or("something else");
    Some(match kind {
        ValidationErrorKind::Type { kind } => {
            let expected = match kind {
                TypeKind::Single(t) => kind_name(t).to_string(),
                TypeKind::Multiple(ts) => ts
                    .iter()
                    .map(|t| kind_name(&t))
                    .filter(|n| *n != "null")
                    .collect::<Vec<_>>()
                    .join(" or "),
            };
            format!("expected {expected}, got {got}")
        }
        ValidationErrorKind::Enum { options } => {
            let opts = options.as_array().map(|a| {
                a.iter()
                    .map(|o| o.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            })?;
            let v = value.map(|v| v.to_string()).unwrap_or_default();
            format!("{v} is not one of {opts}")
        }
        ValidationErrorKind::Constant { expected_value } => {
            format!("must be {expected_value}")
        }
        ValidationErrorKind::Pattern { pattern } => {
            let v = value.map(|v| v.to_string()).unwrap_or_default();
            match pattern_meaning(pattern) {
                Some(m) => format!("{v} {m}"),
                None => format!("{v} does not match `{pattern}`"),
            }
        }
        ValidationErrorKind::Minimum { limit } => format!("must be at least {limit}"),
        ValidationErrorKind::Maximum { limit } => format!("must be at most {limit}"),
        ValidationErrorKind::MinLength { limit } => {
            if *limit == 1 {
                "must not be empty".to_string()
            } else {
                format!("must be at least {limit} characters long")
            }
        }
        ValidationErrorKind::MinItems { limit } => {
            if *limit == 1 {
                "must not be empty".to_string()
            } else {
                format!("must have at least {limit} items")
            }
        }
        ValidationErrorKind::AnyOf { .. } | ValidationErrorKind::OneOfNotValid { .. } => {
            format!("{got} is not allowed here")
        }
        ValidationErrorKind::OneOfMultipleValid { .. } => {
            "matches more than one allowed form".to_string()
        }
        _ => return None,
    })
}
