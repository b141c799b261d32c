//! The PATCH body formats: JSON merge patch (RFC 7386), strategic merge patch (approximated:
//! merge patch plus merge-by-key for the known lists and the `$patch` directives) and JSON
//! patch (RFC 6902, by the `json-patch` crate). Server-side apply is in `ssa.rs`.

use serde_json::{Map, Value};

/// The merge key of a list field, for strategic merge patch and server-side apply: the
/// `patchMergeKey` / `listMapKeys` of the built-in types. Other lists are atomic.
pub(crate) fn merge_key(field: &str, sample: &[&Value]) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims" => "name",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "conditions" => "type",
        "hostAliases" => "ip",
        "ownerReferences" => "uid",
        "topologySpreadConstraints" => "topologyKey",
        // Container ports merge on containerPort, Service ports on port.
        "ports" if sample.iter().any(|v| v.get("containerPort").is_some()) => "containerPort",
        "ports" => "port",
        _ => return None,
    })
}

/// RFC 7386 JSON merge patch.
pub(crate) fn merge_patch(target: &Value, patch: &Value) -> Value {
    let Value::Object(p) = patch else {
        return patch.clone();
    };
    let mut out = match target {
        Value::Object(t) => t.clone(),
        _ => Map::new(),
    };
    for (k, v) in p {
        if v.is_null() {
            out.remove(k);
        } else {
            let merged = merge_patch(out.get(k).unwrap_or(&Value::Null), v);
            out.insert(k.clone(), merged);
        }
    }
    Value::Object(out)
}

/// Strategic merge patch, approximated: maps merge as in a merge patch; the lists of
/// [`merge_key`] merge item by item on their key; other lists are replaced. Honours
/// `$patch: replace` and `$patch: delete` (on maps and on list items, and a
/// `{"$patch": "replace"}` list item) and `$retainKeys`; ignores `$setElementOrder/*` and
/// `$deleteFromPrimitiveList/*`.
pub(crate) fn strategic_merge(target: &Value, patch: &Value) -> Result<Value, String> {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            Ok(smp_map(t, p)?.map_or(Value::Null, Value::Object))
        }
        (_, Value::Object(p)) => Ok(smp_map(&Map::new(), p)?.map_or(Value::Null, Value::Object)),
        _ => Err("strategic merge patch: the patch must be a JSON object".into()),
    }
}

/// Merges map `p` into map `t`; `None` when `p` says `$patch: delete`.
fn smp_map(
    t: &Map<String, Value>,
    p: &Map<String, Value>,
) -> Result<Option<Map<String, Value>>, String> {
    match p.get("$patch").and_then(Value::as_str) {
        Some("replace") => return Ok(Some(strip_directives_map(p))),
        Some("delete") => return Ok(None),
        Some("merge") | None => {}
        Some(other) => return Err(format!("Unknown patch type: {other} in map: {p:?}")),
    }
    let mut out = t.clone();
    for (k, v) in p {
        if k.starts_with('$') {
            continue;
        }
        match v {
            Value::Null => {
                out.remove(k);
            }
            Value::Object(pm) => {
                let empty = Map::new();
                let tm = match out.get(k) {
                    Some(Value::Object(tm)) => tm,
                    _ => &empty,
                };
                match smp_map(tm, pm)? {
                    Some(m) => {
                        out.insert(k.clone(), Value::Object(m));
                    }
                    None => {
                        out.remove(k);
                    }
                }
            }
            Value::Array(pl) => {
                let merged = match out.get(k) {
                    Some(Value::Array(tl)) => smp_list(k, tl, pl)?,
                    _ => smp_list(k, &[], pl)?,
                };
                out.insert(k.clone(), Value::Array(merged));
            }
            v => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    if let Some(Value::Array(keep)) = p.get("$retainKeys") {
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        out.retain(|k, _| keep.contains(&k.as_str()));
    }
    Ok(Some(out))
}

fn smp_list(field: &str, t: &[Value], p: &[Value]) -> Result<Vec<Value>, String> {
    let is_replace = |v: &Value| {
        v.get("$patch").and_then(Value::as_str) == Some("replace")
            && v.as_object().is_some_and(|m| m.len() == 1)
    };
    if p.iter().any(is_replace) {
        return Ok(p
            .iter()
            .filter(|v| !is_replace(v))
            .map(strip_directives)
            .collect());
    }
    let sample: Vec<&Value> = t.iter().chain(p.iter()).collect();
    let Some(key) = merge_key(field, &sample) else {
        return Ok(p.iter().map(strip_directives).collect());
    };
    if !p.iter().all(Value::is_object) {
        return Ok(p.to_vec());
    }
    let mut out: Vec<Value> = t.to_vec();
    for item in p {
        let k = item.get(key);
        let pos = out.iter().position(|o| k.is_some() && o.get(key) == k);
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (pos, delete) {
            (Some(i), true) => {
                out.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => {
                let merged = strategic_merge(&out[i], item)?;
                if merged.is_null() {
                    out.remove(i);
                } else {
                    out[i] = merged;
                }
            }
            (None, false) => out.push(strip_directives(item)),
        }
    }
    Ok(out)
}

fn strip_directives_map(m: &Map<String, Value>) -> Map<String, Value> {
    m.iter()
        .filter(|(k, _)| !k.starts_with('$'))
        .map(|(k, v)| (k.clone(), strip_directives(v)))
        .collect()
}

fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(strip_directives_map(m)),
        Value::Array(a) => Value::Array(a.iter().map(strip_directives).collect()),
        v => v.clone(),
    }
}

/// Why a JSON patch failed: the document is not a patch (400), or an operation failed (422).
#[derive(Debug)]
pub(crate) enum JsonPatchError {
    Decode(String),
    Apply(String),
}

/// RFC 6902 JSON patch (`ops` is the array of operations).
pub(crate) fn json_patch(target: &Value, ops: &Value) -> Result<Value, JsonPatchError> {
    let patch: json_patch::Patch = serde_json::from_value(ops.clone())
        .map_err(|e| JsonPatchError::Decode(format!("invalid JSON patch: {e}")))?;
    let mut doc = target.clone();
    json_patch::patch(&mut doc, &patch).map_err(|e| JsonPatchError::Apply(e.to_string()))?;
    Ok(doc)
}

/// Removes `null` map entries, recursively: Go structs do not tell `null` from absent, so
/// comparisons of templates must not either.
pub(crate) fn without_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_nulls).collect()),
        v => v.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deploy() -> Value {
        json!({"spec": {"replicas": 1, "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
            {"name": "web", "image": "nginx:1", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
            {"name": "side", "image": "busybox", "args": ["a", "b"]}
        ]}}}})
    }

    #[test]
    fn merge_patch_replaces_lists_and_deletes_nulls() {
        let out = merge_patch(
            &deploy(),
            &json!({"spec": {"replicas": null, "template": {"spec": {"containers": [{"name": "x"}]}}}}),
        );
        assert!(out["spec"].get("replicas").is_none());
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"],
            json!([{"name": "x"}])
        );
        assert_eq!(out["spec"]["template"]["metadata"]["labels"]["app"], "web");
    }

    #[test]
    fn strategic_merges_containers_and_env_by_name() {
        let out = strategic_merge(
            &deploy(),
            &json!({"spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "web"}, {"name": "side"}],
                "containers": [{"name": "web", "image": "nginx:2", "env": [{"name": "B", "$patch": "delete"}, {"name": "C", "value": "3"}]},
                               {"name": "side", "args": ["c"]}]}}}}),
        )
        .unwrap();
        let cs = &out["spec"]["template"]["spec"]["containers"];
        assert_eq!(cs[0]["image"], "nginx:2");
        assert_eq!(
            cs[0]["env"],
            json!([{"name": "A", "value": "1"}, {"name": "C", "value": "3"}])
        );
        assert_eq!(cs[1]["image"], "busybox");
        assert_eq!(
            cs[1]["args"],
            json!(["c"]),
            "a list without merge key is replaced"
        );
    }

    #[test]
    fn strategic_directives() {
        let out = strategic_merge(
            &deploy(),
            &json!({"spec": {"template": {"metadata": {"$patch": "replace", "labels": {"b": "2"}}}}}),
        )
        .unwrap();
        assert_eq!(
            out["spec"]["template"]["metadata"],
            json!({"labels": {"b": "2"}})
        );
        let out = strategic_merge(
            &deploy(),
            &json!({"spec": {"template": {"spec": {"containers": [{"$patch": "replace"}, {"name": "only", "image": "x"}]}}}}),
        )
        .unwrap();
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"],
            json!([{"name": "only", "image": "x"}])
        );
        let out = strategic_merge(
            &deploy(),
            &json!({"spec": {"template": {"$patch": "delete"}}}),
        )
        .unwrap();
        assert!(out["spec"].get("template").is_none());
    }

    #[test]
    fn json_patch_ops_and_errors() {
        let out = json_patch(
            &deploy(),
            &json!([{"op": "replace", "path": "/spec/replicas", "value": 3}, {"op": "add", "path": "/metadata", "value": {"a": 1}}]),
        )
        .unwrap();
        assert_eq!(out["spec"]["replicas"], 3);
        assert_eq!(out["metadata"]["a"], 1);
        assert!(json_patch(&deploy(), &json!([{"op": "remove", "path": "/nope"}])).is_err());
        assert!(json_patch(
            &deploy(),
            &json!([{"op": "test", "path": "/spec/replicas", "value": 9}])
        )
        .is_err());
        assert!(json_patch(&deploy(), &json!({"op": "x"})).is_err());
    }
}
