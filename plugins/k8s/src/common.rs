//! What every Kubernetes action shares: the `context`/`namespace`/`kubeconfig` inputs, the
//! object an action points at, selectors, input parsing and how objects look in results.

use indexmap::IndexMap;
use opsbook_engine::action::ActionError;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

/// The field manager of every write (server-side apply and patches).
pub const FIELD_MANAGER: &str = "opsbook";

/// Declares an action input struct with the fields every Kubernetes action takes (`context`,
/// `namespace`, `kubeconfig`) after its own, and a `conn()` naming the client it needs.
macro_rules! k8s_input {
    ($(#[$meta:meta])* pub struct $name:ident { $($body:tt)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, serde::Deserialize, schemars::JsonSchema)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            $($body)*
            /// The kubeconfig context (default: the kubeconfig's `current-context`).
            #[serde(default)]
            pub context: Option<String>,
            /// The namespace (default: the context's namespace, else `default`).
            #[serde(default)]
            pub namespace: Option<String>,
            /// Kubeconfig file(s), `:`-separated like `KUBECONFIG`, relative to the runbook
            /// (default: `KUBECONFIG` of the step's environment, then `~/.kube/config`, then the
            /// in-cluster service account).
            #[serde(default)]
            pub kubeconfig: Option<String>,
        }

        impl $name {
            /// Which cluster connection this input needs.
            #[allow(dead_code)]
            pub fn conn(&self) -> $crate::client::ConnInput<'_> {
                $crate::client::ConnInput {
                    context: self.context.as_deref(),
                    kubeconfig: self.kubeconfig.as_deref(),
                }
            }
        }
    };
}
pub(crate) use k8s_input;

/// The action's input, or a permanent error saying what is wrong with it.
pub fn parse<T: DeserializeOwned>(input: Value) -> Result<T, ActionError> {
    serde_json::from_value(input).map_err(|e| ActionError::permanent(format!("invalid input: {e}")))
}

/// A label or field selector: Kubernetes' text (`app=web,tier!=db`) or a mapping of equalities.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Selector {
    /// `app=web,tier in (a,b),!canary`.
    Text(String),
    /// `{app: web, tier: frontend}`: every pair must match.
    Map(IndexMap<String, Value>),
}

impl Selector {
    /// The selector as the API takes it.
    pub fn text(&self) -> String {
        match self {
            Selector::Text(s) => s.trim().to_string(),
            Selector::Map(m) => m
                .iter()
                .map(|(k, v)| format!("{k}={}", scalar(v)))
                .collect::<Vec<_>>()
                .join(","),
        }
    }
}

/// A scalar as text (strings as they are, numbers and booleans written out).
pub fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A selector text, `None` when empty.
pub fn selector(s: &Option<Selector>) -> Option<String> {
    s.as_ref().map(Selector::text).filter(|t| !t.is_empty())
}

/// `kind namespace/name` (or `kind name` for cluster-scoped objects), for messages.
pub fn shown(kind: &str, ns: Option<&str>, name: &str) -> String {
    match ns {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}

/// An object as results show it: `managedFields` dropped (noise), `apiVersion`/`kind` filled in
/// (list items from a real API server have neither).
pub fn present(mut obj: Value, api_version: &str, kind: &str) -> Value {
    if let Some(map) = obj.as_object_mut() {
        if !map.get("apiVersion").is_some_and(|v| v.is_string()) {
            map.insert("apiVersion".into(), Value::String(api_version.into()));
        }
        if !map.get("kind").is_some_and(|v| v.is_string()) {
            map.insert("kind".into(), Value::String(kind.into()));
        }
        // Keep apiVersion and kind first, as kubectl shows them.
        let mut out = serde_json::Map::new();
        for key in ["apiVersion", "kind"] {
            if let Some(v) = map.remove(key) {
                out.insert(key.into(), v);
            }
        }
        out.append(map);
        if let Some(meta) = out.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("managedFields");
        }
        return Value::Object(out);
    }
    obj
}

/// The object with what the server changes on every write removed (resourceVersion,
/// generation, managedFields, status), to tell whether a write changed anything.
pub fn comparable(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(map) = v.as_object_mut() {
        map.remove("status");
        if let Some(meta) = map.get_mut("metadata").and_then(Value::as_object_mut) {
            for k in ["resourceVersion", "managedFields", "generation"] {
                meta.remove(k);
            }
        }
    }
    v
}

/// An integer field (missing counts as 0, as kubectl counts).
pub fn int(obj: &Value, pointer: &str) -> i64 {
    obj.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

/// A string field.
pub fn text<'a>(obj: &'a Value, pointer: &str) -> Option<&'a str> {
    obj.pointer(pointer).and_then(Value::as_str)
}

/// A `metadata.annotations` entry.
pub fn annotation<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj.pointer("/metadata/annotations")
        .and_then(|a| a.get(key))
        .and_then(Value::as_str)
}

/// The `status.conditions` entry of a type.
pub fn condition<'a>(obj: &'a Value, kind: &str) -> Option<&'a Value> {
    obj.pointer("/status/conditions")
        .and_then(Value::as_array)?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
}

/// The label selector text of a workload's `spec.selector` (`matchLabels` and
/// `matchExpressions`), as kubectl sends it when it lists a Deployment's ReplicaSets.
pub fn label_selector(selector: &Value) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(m) = selector.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in m {
            parts.push(format!("{k}={}", scalar(v)));
        }
    }
    if let Some(exprs) = selector.get("matchExpressions").and_then(Value::as_array) {
        for e in exprs {
            let key = e.get("key").and_then(Value::as_str)?;
            let values: Vec<String> = e
                .get("values")
                .and_then(Value::as_array)
                .map(|v| v.iter().map(scalar).collect())
                .unwrap_or_default();
            match e.get("operator").and_then(Value::as_str)? {
                "In" => parts.push(format!("{key} in ({})", values.join(","))),
                "NotIn" => parts.push(format!("{key} notin ({})", values.join(","))),
                "Exists" => parts.push(key.to_string()),
                "DoesNotExist" => parts.push(format!("!{key}")),
                _ => return None,
            }
        }
    }
    if parts.is_empty() {
        None
    } else {
        Some(parts.join(","))
    }
}

/// Whether `obj` has a controller owner reference to the object of this uid.
pub fn controlled_by(obj: &Value, uid: &str) -> bool {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|refs| {
            refs.iter().any(|r| {
                r.get("controller").and_then(Value::as_bool) == Some(true)
                    && r.get("uid").and_then(Value::as_str) == Some(uid)
            })
        })
}

/// The timestamp kubectl writes (RFC 3339, second precision, UTC).
pub fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Milliseconds since `t`.
pub fn ms(t: std::time::Instant) -> u64 {
    t.elapsed().as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn selectors_as_text() {
        let m: Selector = serde_json::from_value(json!({"app": "web", "n": 3})).unwrap();
        assert_eq!(m.text(), "app=web,n=3");
        assert_eq!(
            label_selector(&json!({"matchLabels": {"app": "web"}, "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["a", "b"]},
                {"key": "canary", "operator": "DoesNotExist"}]}))
            .unwrap(),
            "app=web,tier in (a,b),!canary"
        );
    }

    #[test]
    fn present_fills_type_and_drops_managed_fields() {
        let o = present(
            json!({"metadata": {"name": "a", "managedFields": []}, "spec": {}}),
            "v1",
            "Pod",
        );
        assert_eq!(
            o,
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"}, "spec": {}})
        );
        assert_eq!(
            o.as_object().unwrap().keys().next().map(String::as_str),
            Some("apiVersion")
        );
    }
}
