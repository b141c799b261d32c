//! The JSON Schema of the runbook format, generated from [`crate::model`].

use serde_json::Value;

use crate::model::Runbook;

/// The runbook schema (draft 2020-12), as checked in at `schemas/runbook.schema.json`.
pub fn runbook_schema() -> Value {
    crate::action::schema_for::<Runbook>()
}

/// The schema as pretty JSON with a trailing newline, byte for byte what the checked-in file holds.
pub fn runbook_schema_text() -> String {
    let mut s = serde_json::to_string_pretty(&runbook_schema()).unwrap_or_default();
    s.push('\n');
    s
}

/// Follows a JSON pointer into a schema, resolving `$ref` segments (as in jsonschema's keyword
/// locations such as `/properties/steps/items/$ref/additionalProperties`).
pub fn navigate<'a>(root: &'a Value, pointer: &str) -> Option<&'a Value> {
    let mut cur = root;
    for raw in pointer.split('/').skip(1) {
        let token = raw.replace("~1", "/").replace("~0", "~");
        if token == "$ref" {
            let target = cur.get("$ref")?.as_str()?;
            cur = root.pointer(target.strip_prefix('#')?)?;
            continue;
        }
        cur = match cur {
            Value::Object(m) => m.get(&token)?,
            Value::Array(a) => a.get(token.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    // A location ending at an object schema that is itself a `$ref`: resolve it.
    Some(resolve_ref(root, cur))
}

/// The schema a local `$ref` (`#/$defs/Step`) points to, or the schema itself.
pub fn resolve_ref<'a>(root: &'a Value, schema: &'a Value) -> &'a Value {
    schema
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix('#'))
        .and_then(|p| root.pointer(p))
        .unwrap_or(schema)
}
