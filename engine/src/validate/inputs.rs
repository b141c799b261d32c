//! `with:` against each action's input schema, where the values are literal.

use jsonschema::error::ValidationErrorKind;
use serde_json::Value;

use super::schema_check::{self, Target};
use super::structure::Steps;
use super::Cx;
use crate::diag::{Code, Diagnostic};
use crate::schema::navigate;
use crate::template::{classify, Kind};
use crate::yaml::escape_pointer_token;

pub(crate) fn check(cx: &mut Cx<'_>, steps: &Steps<'_>) {
    for s in &steps.list {
        check_call(cx, &s.ptr, s.get("uses"), s.get("with"));
        if let Some(rb) = s.get("rollback") {
            check_call(
                cx,
                &format!("{}/rollback", s.ptr),
                rb.get("uses"),
                rb.get("with"),
            );
        }
    }
}

fn check_call(cx: &mut Cx<'_>, ptr: &str, uses: Option<&Value>, with: Option<&Value>) {
    let Some(name) = uses.and_then(Value::as_str) else {
        return;
    };
    let Some(entry) = cx.v.registry.get(name) else {
        return;
    };
    let Ok(validator) = entry.input_validator() else {
        return;
    };
    let input = match with {
        None => Value::Object(Default::default()),
        // A whole `with:` given by one template: its shape is known only once rendered.
        Some(Value::String(s)) if classify(s) != Kind::Literal => return,
        Some(v @ Value::Object(_)) => v.clone(),
        // Lists, numbers and null are already reported by the runbook schema.
        Some(v) if !v.is_string() => return,
        Some(_) => {
            let span = cx.doc.value_span(&format!("{ptr}/with"));
            cx.push(
                Diagnostic::new(
                    Code::ActionInput,
                    cx.source,
                    span,
                    format!("`with` of `{name}` must be a mapping of inputs"),
                )
                .help(format!("`opsbook actions {name}` lists the inputs")),
            );
            return;
        }
    };
    let mut templated = Vec::new();
    collect_templated(&input, String::new(), &mut templated);
    let base = format!("{ptr}/with");
    let prefix = format!("`{name}` input: ");
    let t = Target {
        source: cx.source,
        doc: cx.doc,
        base: &base,
        code: Code::ActionInput,
        prefix: &prefix,
    };
    let schema = &entry.spec.input_schema;
    let skip = |path: &str, kind: &ValidationErrorKind, schema_path: &str| {
        // Alternatives that differ only in which keys are present (`command` or `args`) do not
        // depend on what a template renders to.
        if presence_only(schema, schema_path) {
            return false;
        }
        templated.iter().any(|tp| {
            let at_or_below = path == tp || path.starts_with(&format!("{tp}/"));
            let combinator_above = tp.starts_with(&format!("{path}/"))
                && matches!(
                    kind,
                    ValidationErrorKind::AnyOf { .. }
                        | ValidationErrorKind::OneOfNotValid { .. }
                        | ValidationErrorKind::OneOfMultipleValid { .. }
                        | ValidationErrorKind::Not { .. }
                        | ValidationErrorKind::Contains
                        | ValidationErrorKind::UniqueItems
                );
            at_or_below || combinator_above
        })
    };
    let diags = schema_check::check(validator, &entry.spec.input_schema, &input, &t, &skip);
    cx.diags.extend(diags);
}

/// Whether the combinator at `schema_path` only asks for keys to be present.
fn presence_only(schema: &Value, schema_path: &str) -> bool {
    match navigate(schema, schema_path) {
        Some(Value::Array(branches)) => branches.iter().all(|b| {
            b.as_object()
                .is_some_and(|o| o.keys().all(|k| k == "required"))
        }),
        _ => false,
    }
}

/// Pointers (relative to `with`) of the strings that are templates.
fn collect_templated(v: &Value, ptr: String, out: &mut Vec<String>) {
    match v {
        Value::String(s) if classify(s) != Kind::Literal => out.push(ptr),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                collect_templated(item, format!("{ptr}/{i}"), out);
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                collect_templated(item, format!("{ptr}/{}", escape_pointer_token(k)), out);
            }
        }
        _ => {}
    }
}
