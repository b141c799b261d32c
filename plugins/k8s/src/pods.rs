//! Finding pods and containers for `k8s.logs` and `k8s.exec`, as kubectl picks them.

use kube::api::ListParams;
use opsbook_engine::action::{ActionError, StepContext};
use serde_json::Value;

use crate::common::{condition, text};
use crate::target::{to_value, Target};

/// The pods a step names: `pod`, or those `labels` selects (at most `max`; running and ready
/// ones first).
pub async fn find(
    cx: &StepContext,
    t: &Target,
    pod: Option<&str>,
    labels: Option<String>,
    max: usize,
) -> Result<Vec<Value>, ActionError> {
    let api = t.api();
    if let Some(name) = pod {
        let what = format!("get {}", t.shown(name));
        let p = crate::retry::read(cx, &what, || api.get(name)).await?;
        return Ok(vec![to_value(p)]);
    }
    let Some(sel) = labels else {
        return Err(ActionError::permanent(
            "give `pod`, or `labels` to select pods",
        ));
    };
    let what = format!("list pods ({sel}) in namespace {}", t.ns);
    let lp = ListParams::default().labels(&sel);
    let list = crate::retry::read(cx, &what, || api.list(&lp)).await?;
    let mut pods: Vec<Value> = list.items.into_iter().map(to_value).collect();
    if pods.is_empty() {
        return Err(ActionError::permanent(format!(
            "no pod matches `{sel}` in namespace {}",
            t.ns
        )));
    }
    let rank = |p: &Value| {
        let running = text(p, "/status/phase") == Some("Running");
        let ready = condition(p, "Ready").and_then(|c| text(c, "/status")) == Some("True");
        match (running, ready) {
            (true, true) => 0,
            (true, false) => 1,
            _ => 2,
        }
    };
    pods.sort_by_key(rank);
    pods.truncate(max);
    Ok(pods)
}

/// Container names of a pod (`init` ones first when asked).
pub fn containers(pod: &Value, with_init: bool) -> Vec<String> {
    let mut keys = Vec::new();
    if with_init {
        keys.push("/spec/initContainers");
    }
    keys.push("/spec/containers");
    keys.into_iter()
        .filter_map(|k| pod.pointer(k).and_then(Value::as_array))
        .flatten()
        .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
        .collect()
}

/// The container to use: the one asked for, else the pod's
/// `kubectl.kubernetes.io/default-container`, else the first (as kubectl does).
pub fn container(pod: &Value, asked: Option<&str>) -> Result<String, ActionError> {
    let names = containers(pod, true);
    let pod_name = text(pod, "/metadata/name").unwrap_or("");
    if let Some(c) = asked {
        if !names.is_empty() && !names.iter().any(|n| n == c) {
            return Err(ActionError::permanent(format!(
                "pod {pod_name} has no container `{c}` (it has: {})",
                names.join(", ")
            )));
        }
        return Ok(c.to_string());
    }
    if let Some(d) = crate::common::annotation(pod, "kubectl.kubernetes.io/default-container") {
        return Ok(d.to_string());
    }
    containers(pod, false)
        .into_iter()
        .next()
        .ok_or_else(|| ActionError::permanent(format!("pod {pod_name} has no container")))
}
