//! Simplified server-side apply and field ownership (`metadata.managedFields`).
//!
//! Every write records which leaf fields each manager set: an apply (`Apply`) owns exactly
//! the leaves of its configuration; any other write (`Update`: create, merge/strategic/JSON
//! patch, PUT, scale) takes the leaves whose value it changed away from everyone else. An
//! apply conflicts (409, `FieldManagerConflict`) when another manager owns a leaf it sets to a
//! different value, unless `force=true`, which takes the field over. Leaves a manager applied
//! before and no longer applies are removed when nobody else owns them.
//!
//! Paths are leaves only: maps are recursed into, the lists of [`merge_key`] are keyed by
//! their merge key (`containers[name="web"]`), other lists are atomic. `apiVersion`, `kind`,
//! `status` and the server-owned metadata are not tracked.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};

use super::patch::{merge_key, without_nulls};

/// One step of a field path.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Elem {
    Field(String),
    /// A keyed list item: the JSON text of its key, `{"name":"web"}`.
    Key(String),
}

pub(crate) type Path = Vec<Elem>;

/// `.spec.template.spec.containers[name="web"].image`, as conflict messages print paths.
pub(crate) fn path_string(p: &Path) -> String {
    let mut s = String::new();
    for e in p {
        match e {
            Elem::Field(f) => {
                s.push('.');
                s.push_str(f);
            }
            Elem::Key(k) => {
                let m: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
                let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v}")).collect();
                s.push_str(&format!("[{}]", parts.join(",")));
            }
        }
    }
    s
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Operation {
    Apply,
    Update,
}

/// One `managedFields` entry.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub manager: String,
    pub operation: Operation,
    pub subresource: String,
    pub api_version: String,
    pub time: String,
    pub fields: BTreeSet<Path>,
}

impl Entry {
    fn is(&self, manager: &str, op: &Operation, subresource: &str) -> bool {
        self.manager == manager && self.operation == *op && self.subresource == subresource
    }

    /// How conflict messages name the manager (`printManager` in apimachinery).
    fn describe(&self) -> String {
        let mut s = format!("{:?}", self.manager);
        if !self.subresource.is_empty() {
            s = format!("{s} with subresource {:?}", self.subresource);
        }
        if self.operation == Operation::Update {
            s = format!("{s} using {} at {}", self.api_version, self.time);
        }
        s
    }
}

/// A conflict of an apply: the other manager's description and the path.
pub(crate) type Conflict = (String, Path);

/// The 409 message of an apply that met conflicts.
pub(crate) fn conflict_message(conflicts: &[Conflict]) -> String {
    if let [(manager, path)] = conflicts {
        return format!(
            "Apply failed with 1 conflict: conflict with {manager}: {}",
            path_string(path)
        );
    }
    let mut by: BTreeMap<&str, Vec<&Path>> = BTreeMap::new();
    for (m, p) in conflicts {
        by.entry(m).or_default().push(p);
    }
    let mut lines = Vec::new();
    for (m, paths) in by {
        lines.push(format!("conflicts with {m}:"));
        for p in paths {
            lines.push(format!("- {}", path_string(p)));
        }
    }
    format!(
        "Apply failed with {} conflicts: {}",
        conflicts.len(),
        lines.join("\n")
    )
}

/// Metadata fields the server owns; never tracked, never taken from a body.
const SERVER_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

/// The tracked leaves of an object and their values.
pub(crate) fn leaves(obj: &Value) -> BTreeMap<Path, Value> {
    let mut out = BTreeMap::new();
    if let Value::Object(m) = obj {
        for (k, v) in m {
            match k.as_str() {
                "apiVersion" | "kind" | "status" => {}
                "metadata" => {
                    if let Value::Object(md) = v {
                        for (mk, mv) in md {
                            if !SERVER_METADATA.contains(&mk.as_str()) {
                                walk(
                                    mv,
                                    vec![Elem::Field(k.clone()), Elem::Field(mk.clone())],
                                    mk,
                                    &mut out,
                                );
                            }
                        }
                    }
                }
                _ => walk(v, vec![Elem::Field(k.clone())], k, &mut out),
            }
        }
    }
    out
}

fn walk(v: &Value, path: Path, field: &str, out: &mut BTreeMap<Path, Value>) {
    match v {
        Value::Null => {}
        Value::Object(m) if !m.is_empty() => {
            for (k, c) in m {
                let mut p = path.clone();
                p.push(Elem::Field(k.clone()));
                walk(c, p, k, out);
            }
        }
        Value::Array(a) if !a.is_empty() => {
            let sample: Vec<&Value> = a.iter().collect();
            match merge_key(field, &sample) {
                Some(key) if a.iter().all(|i| i.get(key).is_some()) => {
                    for item in a {
                        let mut p = path.clone();
                        p.push(Elem::Key(json!({ key: item[key] }).to_string()));
                        walk(item, p, "", out);
                    }
                }
                _ => {
                    out.insert(path, v.clone());
                }
            }
        }
        v => {
            out.insert(path, v.clone());
        }
    }
}

/// The value at `path`, if any.
pub(crate) fn get_path<'a>(obj: &'a Value, path: &[Elem]) -> Option<&'a Value> {
    let Some((first, rest)) = path.split_first() else {
        return Some(obj);
    };
    let next = match first {
        Elem::Field(f) => obj.get(f)?,
        Elem::Key(k) => {
            let key: Map<String, Value> = serde_json::from_str(k).ok()?;
            obj.as_array()?
                .iter()
                .find(|i| key.iter().all(|(k, v)| i.get(k) == Some(v)))?
        }
    };
    get_path(next, rest)
}

/// Removes the value at `path`; maps and list items emptied by that go too (not the
/// top-level fields). Returns whether `obj` is now empty.
fn remove_path(obj: &mut Value, path: &[Elem], depth: usize) -> bool {
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    match (first, obj) {
        (Elem::Field(f), Value::Object(m)) => {
            if rest.is_empty() {
                m.remove(f);
            } else if let Some(c) = m.get_mut(f) {
                if remove_path(c, rest, depth + 1) && depth > 0 {
                    m.remove(f);
                }
            }
            m.is_empty()
        }
        (Elem::Key(k), Value::Array(a)) => {
            let key: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
            if let Some(i) = a
                .iter()
                .position(|i| key.iter().all(|(k, v)| i.get(k) == Some(v)))
            {
                if rest.is_empty() || remove_path(&mut a[i], rest, depth + 1) {
                    a.remove(i);
                }
            }
            a.is_empty()
        }
        _ => false,
    }
}

/// Merges an applied configuration into the live object: maps recursively, keyed lists item
/// by item, atomic lists and scalars replaced; `null`s in the configuration are ignored.
fn apply_merge(live: &Value, cfg: &Value, field: &str) -> Value {
    match (live, cfg) {
        (Value::Object(l), Value::Object(c)) => {
            let mut out = l.clone();
            for (k, v) in c {
                if v.is_null() {
                    continue;
                }
                let merged = match out.get(k) {
                    Some(lv) => apply_merge(lv, v, k),
                    None => without_nulls(v),
                };
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (Value::Array(l), Value::Array(c)) => {
            let sample: Vec<&Value> = l.iter().chain(c.iter()).collect();
            match merge_key(field, &sample) {
                Some(key) if sample.iter().all(|i| i.get(key).is_some()) => {
                    let mut out = l.clone();
                    for item in c {
                        match out.iter().position(|o| o.get(key) == item.get(key)) {
                            Some(i) => out[i] = apply_merge(&out[i], item, ""),
                            None => out.push(without_nulls(item)),
                        }
                    }
                    Value::Array(out)
                }
                _ => without_nulls(cfg),
            }
        }
        _ => without_nulls(cfg),
    }
}

/// Server-side apply of `cfg` by `manager` onto `live` (`None`: the object is created).
/// Updates `managed`; the new object, or the conflicts.
pub(crate) fn apply(
    live: Option<&Value>,
    cfg: &Value,
    managed: &mut Vec<Entry>,
    manager: &str,
    force: bool,
    api_version: &str,
    now: &str,
) -> Result<Value, Vec<Conflict>> {
    let base = live.cloned().unwrap_or_else(|| json!({}));
    let applied = leaves(cfg);
    let mut conflicts = Vec::new();
    for (path, value) in &applied {
        for e in managed.iter() {
            if e.is(manager, &Operation::Apply, "") || !e.fields.contains(path) {
                continue;
            }
            let current = get_path(&base, path).map(without_nulls);
            if current.as_ref() != Some(value) {
                conflicts.push((e.describe(), path.clone()));
            }
        }
    }
    if !conflicts.is_empty() {
        if !force {
            return Err(conflicts);
        }
        for e in managed.iter_mut() {
            if !e.is(manager, &Operation::Apply, "") {
                e.fields.retain(|p| !applied.contains_key(p));
            }
        }
    }
    let before: BTreeSet<Path> = managed
        .iter()
        .find(|e| e.is(manager, &Operation::Apply, ""))
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    let mut obj = base;
    for path in before.iter().filter(|p| !applied.contains_key(*p)) {
        let owned_elsewhere = managed
            .iter()
            .any(|e| !e.is(manager, &Operation::Apply, "") && e.fields.contains(path));
        if !owned_elsewhere {
            remove_path(&mut obj, path, 0);
        }
    }
    let obj = apply_merge(&obj, cfg, "");
    let fields: BTreeSet<Path> = applied.into_keys().collect();
    match managed
        .iter_mut()
        .find(|e| e.is(manager, &Operation::Apply, ""))
    {
        Some(e) => {
            e.fields = fields;
            e.time = now.to_string();
            e.api_version = api_version.to_string();
        }
        None => managed.push(Entry {
            manager: manager.to_string(),
            operation: Operation::Apply,
            subresource: String::new(),
            api_version: api_version.to_string(),
            time: now.to_string(),
            fields,
        }),
    }
    managed.retain(|e| !e.fields.is_empty());
    Ok(obj)
}

/// Records a non-apply write (`Update`) from `old` to `new` by `manager`: it takes the
/// leaves it changed or added; removed leaves leave every entry.
pub(crate) fn record_update(
    old: Option<&Value>,
    new: &Value,
    managed: &mut Vec<Entry>,
    manager: &str,
    subresource: &str,
    api_version: &str,
    now: &str,
) {
    let new_l = leaves(new);
    let old_l = old.map(leaves).unwrap_or_default();
    let changed: BTreeSet<Path> = new_l
        .iter()
        .filter(|(p, v)| old_l.get(*p) != Some(*v))
        .map(|(p, _)| p.clone())
        .collect();
    let removed: BTreeSet<&Path> = old_l.keys().filter(|p| !new_l.contains_key(*p)).collect();
    if changed.is_empty() && removed.is_empty() {
        return;
    }
    for e in managed.iter_mut() {
        e.fields
            .retain(|p| !changed.contains(p) && !removed.contains(p));
    }
    if !changed.is_empty() {
        match managed
            .iter_mut()
            .find(|e| e.is(manager, &Operation::Update, subresource))
        {
            Some(e) => {
                e.fields.extend(changed);
                e.time = now.to_string();
            }
            None => managed.push(Entry {
                manager: manager.to_string(),
                operation: Operation::Update,
                subresource: subresource.to_string(),
                api_version: api_version.to_string(),
                time: now.to_string(),
                fields: changed,
            }),
        }
    }
    managed.retain(|e| !e.fields.is_empty());
}

/// `metadata.managedFields` for the entries (FieldsV1 trees: `f:` fields, `k:` list keys).
pub(crate) fn render(managed: &[Entry]) -> Value {
    let entries: Vec<Value> = managed
        .iter()
        .map(|e| {
            let mut tree = Map::new();
            for path in &e.fields {
                let mut cur = &mut tree;
                for elem in path {
                    let key = match elem {
                        Elem::Field(f) => format!("f:{f}"),
                        Elem::Key(k) => format!("k:{k}"),
                    };
                    let is_item = matches!(elem, Elem::Key(_));
                    let next = cur.entry(key).or_insert_with(|| Value::Object(Map::new()));
                    let Value::Object(m) = next else {
                        unreachable!("the tree holds only maps")
                    };
                    if is_item {
                        m.entry(".").or_insert_with(|| json!({}));
                    }
                    cur = m;
                }
            }
            let mut out = Map::new();
            out.insert("manager".into(), json!(e.manager));
            out.insert(
                "operation".into(),
                json!(match e.operation {
                    Operation::Apply => "Apply",
                    Operation::Update => "Update",
                }),
            );
            out.insert("apiVersion".into(), json!(e.api_version));
            out.insert("time".into(), json!(e.time));
            out.insert("fieldsType".into(), json!("FieldsV1"));
            out.insert("fieldsV1".into(), Value::Object(tree));
            if !e.subresource.is_empty() {
                out.insert("subresource".into(), json!(e.subresource));
            }
            Value::Object(out)
        })
        .collect();
    Value::Array(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deploy(replicas: i64, image: &str) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "labels": {"app": "web"}},
               "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"name": "web", "image": image}]}}}})
    }

    const T: &str = "2025-01-01T00:00:00Z";

    #[test]
    fn leaves_key_lists_by_merge_key() {
        let l = leaves(&deploy(2, "nginx"));
        let paths: Vec<String> = l.keys().map(path_string).collect();
        assert!(
            paths.contains(&".spec.template.spec.containers[name=\"web\"].image".to_string()),
            "{paths:?}"
        );
        assert!(paths.contains(&".metadata.labels.app".to_string()));
        assert!(!paths
            .iter()
            .any(|p| p.starts_with(".metadata.name") || p.starts_with(".kind")));
    }

    #[test]
    fn apply_conflicts_with_another_manager_unless_forced() {
        let mut managed = Vec::new();
        let live = apply(
            None,
            &deploy(2, "nginx"),
            &mut managed,
            "opsbook",
            false,
            "apps/v1",
            T,
        )
        .unwrap();
        // kubectl scale takes .spec.replicas.
        let mut scaled = live.clone();
        scaled["spec"]["replicas"] = json!(5);
        record_update(
            Some(&live),
            &scaled,
            &mut managed,
            "kubectl",
            "scale",
            "apps/v1",
            T,
        );
        // Same value: no conflict; another value: conflict.
        assert!(apply(
            Some(&scaled),
            &deploy(5, "nginx"),
            &mut managed.clone(),
            "opsbook",
            false,
            "apps/v1",
            T
        )
        .is_ok());
        let conflicts = apply(
            Some(&scaled),
            &deploy(2, "nginx"),
            &mut managed.clone(),
            "opsbook",
            false,
            "apps/v1",
            T,
        )
        .unwrap_err();
        assert_eq!(
            conflict_message(&conflicts),
            format!("Apply failed with 1 conflict: conflict with \"kubectl\" with subresource \"scale\" using apps/v1 at {T}: .spec.replicas")
        );
        let forced = apply(
            Some(&scaled),
            &deploy(2, "nginx"),
            &mut managed,
            "opsbook",
            true,
            "apps/v1",
            T,
        )
        .unwrap();
        assert_eq!(forced["spec"]["replicas"], 2);
        assert!(
            managed.iter().all(|e| e.manager == "opsbook"),
            "kubectl lost its only field"
        );
    }

    #[test]
    fn apply_removes_fields_no_longer_applied() {
        let mut managed = Vec::new();
        let mut cfg = deploy(2, "nginx");
        cfg["metadata"]["labels"]["extra"] = json!("x");
        cfg["spec"]["template"]["spec"]["containers"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "side", "image": "busybox"}));
        let live = apply(None, &cfg, &mut managed, "opsbook", false, "apps/v1", T).unwrap();
        let live2 = apply(
            Some(&live),
            &deploy(2, "nginx:2"),
            &mut managed,
            "opsbook",
            false,
            "apps/v1",
            T,
        )
        .unwrap();
        assert!(live2["metadata"]["labels"].get("extra").is_none());
        assert_eq!(
            live2["spec"]["template"]["spec"]["containers"],
            json!([{"name": "web", "image": "nginx:2"}])
        );
        let rendered = render(&managed);
        assert_eq!(rendered[0]["manager"], "opsbook");
        assert_eq!(rendered[0]["operation"], "Apply");
        assert!(
            rendered[0]["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"]
                ["k:{\"name\":\"web\"}"]["f:image"]
                .is_object()
        );
    }
}
