//! Reading a plan's JSON (`terraform show -json PLAN`) into what people need: counts, each
//! resource's actions, drifted resources with the attributes that changed (sensitive values
//! masked), and a Markdown drift report.

use serde_json::{json, Map, Value};

/// Shown instead of a sensitive value.
const SENSITIVE: &str = "(sensitive)";
/// Shown for a value terraform will only know after applying.
const UNKNOWN: &str = "(known after apply)";

/// A plan's summary, as `terraform.plan` and `terraform.drift` return it.
pub fn summarize(plan: &Value) -> Value {
    let mut counts = [0usize; 4]; // add, change, replace, destroy
    let mut resources = Vec::new();
    for rc in plan["resource_changes"].as_array().into_iter().flatten() {
        let action = action_of(&rc["change"]["actions"]);
        match action {
            "create" => counts[0] += 1,
            "update" => counts[1] += 1,
            "replace" => counts[2] += 1,
            "delete" => counts[3] += 1,
            _ => continue,
        }
        resources.push(json!({
            "address": rc["address"],
            "action": action,
            "attributes": attributes(&rc["change"]),
        }));
    }
    let drift: Vec<Value> = plan["resource_drift"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|rd| {
            json!({
                "address": rd["address"],
                "action": action_of(&rd["change"]["actions"]),
                "attributes": attributes(&rd["change"]),
            })
        })
        .collect();
    let has_changes = counts.iter().any(|c| *c > 0);
    json!({
        "add": counts[0],
        "change": counts[1],
        "replace": counts[2],
        "destroy": counts[3],
        "has_changes": has_changes,
        "resources": resources,
        "drift": drift,
    })
}

/// `create`, `update`, `replace`, `delete`, `read` or `no-op`.
fn action_of(actions: &Value) -> &'static str {
    let list: Vec<&str> = actions
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    match list.as_slice() {
        ["create"] => "create",
        ["update"] => "update",
        ["delete"] => "delete",
        ["delete", "create"] | ["create", "delete"] => "replace",
        ["read"] => "read",
        _ => "no-op",
    }
}

/// Whether a part of a `*_sensitive` mark is sensitive (`true`, or holds a `true`).
fn marked(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::Array(a) => a.iter().any(marked),
        Value::Object(o) => o.values().any(marked),
        _ => false,
    }
}

/// The top-level attributes whose value differs between `before` and `after`, with both values
/// (sensitive ones masked, unknown ones said so).
fn attributes(change: &Value) -> Vec<Value> {
    let empty = Map::new();
    let before = change["before"].as_object().unwrap_or(&empty);
    let after = change["after"].as_object().unwrap_or(&empty);
    let unknown = change["after_unknown"].as_object().unwrap_or(&empty);
    let sens = |mark: &Value, k: &str| -> bool {
        mark == &Value::Bool(true) || mark.get(k).is_some_and(marked)
    };
    let mut names: Vec<&String> = before.keys().chain(after.keys()).collect();
    names.extend(unknown.keys());
    names.sort();
    names.dedup();
    let mut out = Vec::new();
    for k in names {
        let b = before.get(k).unwrap_or(&Value::Null);
        let a = after.get(k).unwrap_or(&Value::Null);
        let is_unknown = unknown.get(k).is_some_and(marked);
        if b == a && !is_unknown {
            continue;
        }
        let show = |v: &Value, sensitive: bool| -> Value {
            if sensitive {
                Value::String(SENSITIVE.into())
            } else {
                v.clone()
            }
        };
        // Sensitive on either side masks both, as terraform's own display does.
        let sensitive = sens(&change["before_sensitive"], k) || sens(&change["after_sensitive"], k);
        let after_shown = if is_unknown {
            Value::String(UNKNOWN.into())
        } else {
            show(a, sensitive)
        };
        out.push(json!({
            "name": k,
            "before": show(b, sensitive),
            "after": after_shown,
        }));
    }
    out
}

/// A value for a Markdown table cell.
fn cell(v: &Value) -> String {
    let text = match v {
        Value::String(s) => s.clone(),
        Value::Null => "—".into(),
        other => other.to_string(),
    };
    let one_line = text.replace('\n', "⏎").replace('|', "\\|");
    match one_line.char_indices().nth(120) {
        Some((at, _)) => format!("`{}…`", &one_line[..at]),
        None => format!("`{one_line}`"),
    }
}

/// The Markdown drift report.
pub fn drift_report(summary: &Value, title: &str, mode: &str) -> String {
    let mut md = format!("# Drift report: {title}\n\n");
    let drift = summary["drift"].as_array().cloned().unwrap_or_default();
    let changes = summary["resources"].as_array().cloned().unwrap_or_default();
    let rows: Vec<&Value> = if mode == "refresh_only" {
        drift.iter().collect()
    } else {
        drift.iter().chain(changes.iter()).collect()
    };
    if rows.is_empty() {
        md.push_str("No drift: the infrastructure matches the state");
        if mode != "refresh_only" {
            md.push_str(" and the configuration");
        }
        md.push_str(".\n");
        return md;
    }
    md.push_str(&format!(
        "{} resource{} drifted.\n\n| resource | action | attribute | before | after |\n| --- | --- | --- | --- | --- |\n",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" }
    ));
    for r in rows {
        let attrs = r["attributes"].as_array().cloned().unwrap_or_default();
        if attrs.is_empty() {
            md.push_str(&format!(
                "| `{}` | {} | | | |\n",
                r["address"].as_str().unwrap_or(""),
                r["action"].as_str().unwrap_or("")
            ));
        }
        for a in attrs {
            md.push_str(&format!(
                "| `{}` | {} | `{}` | {} | {} |\n",
                r["address"].as_str().unwrap_or(""),
                r["action"].as_str().unwrap_or(""),
                a["name"].as_str().unwrap_or(""),
                cell(&a["before"]),
                cell(&a["after"])
            ));
        }
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_actions_and_masks_sensitive_attributes() {
        let plan = json!({
            "resource_changes": [
                {"address": "a.new", "change": {"actions": ["create"], "before": null, "after": {"x": 1}, "after_unknown": {"id": true}}},
                {"address": "a.upd", "change": {"actions": ["update"], "before": {"x": 1, "pw": "old", "same": 2}, "after": {"x": 2, "pw": "new", "same": 2},
                    "before_sensitive": {"pw": true}, "after_sensitive": {"pw": true}}},
                {"address": "a.rep", "change": {"actions": ["delete", "create"], "before": {}, "after": {}}},
                {"address": "a.del", "change": {"actions": ["delete"], "before": {}, "after": null}},
                {"address": "a.same", "change": {"actions": ["no-op"], "before": {}, "after": {}}},
            ],
            "resource_drift": [
                {"address": "a.upd", "change": {"actions": ["update"], "before": {"x": 0}, "after": {"x": 1}}}
            ]
        });
        let s = summarize(&plan);
        assert_eq!(
            (
                s["add"].as_u64(),
                s["change"].as_u64(),
                s["replace"].as_u64(),
                s["destroy"].as_u64()
            ),
            (Some(1), Some(1), Some(1), Some(1))
        );
        assert_eq!(s["has_changes"], true);
        assert_eq!(s["resources"].as_array().unwrap().len(), 4);
        let upd = &s["resources"][1]["attributes"];
        assert_eq!(
            upd,
            &json!([
                {"name": "pw", "before": "(sensitive)", "after": "(sensitive)"},
                {"name": "x", "before": 1, "after": 2},
            ])
        );
        assert_eq!(
            s["resources"][0]["attributes"][0],
            json!({"name": "id", "before": null, "after": "(known after apply)"})
        );
        assert_eq!(
            s["drift"][0]["attributes"][0],
            json!({"name": "x", "before": 0, "after": 1})
        );
        let md = drift_report(&s, "prod", "refresh_only");
        assert!(
            md.contains("| `a.upd` | update | `x` | `0` | `1` |"),
            "{md}"
        );
        assert!(!md.contains("old") && !md.contains("\"new\""));
        let none = drift_report(&summarize(&json!({})), "prod", "refresh_only");
        assert!(none.contains("No drift"));
    }
}
