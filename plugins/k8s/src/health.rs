//! Pod health for `k8s.list`/`k8s.get` of pods and for failed rollouts and Jobs: phase,
//! readiness, restarts, each container's waiting/terminated/last-terminated reason, the owning
//! workload, and a verdict (`unhealthy` with `reasons`), so an auto-heal runbook is a filter.

use serde_json::{json, Value};

use crate::common::{condition, int, text};

/// Waiting reasons of a container that is still starting normally.
const STARTING: &[&str] = &["ContainerCreating", "PodInitializing"];

/// How long a running pod may stay not ready before it counts as unhealthy (`NotReady`).
const NOT_READY_GRACE_SECS: i64 = 300;

/// What else makes a pod unhealthy.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// More restarts than this is a reason (`TooManyRestarts`).
    pub max_restarts: Option<i64>,
}

fn push(reasons: &mut Vec<String>, r: &str) {
    if !r.is_empty() && !reasons.iter().any(|x| x == r) {
        reasons.push(r.to_string());
    }
}

/// One container's state, and its reasons added to `reasons`.
fn container(status: &Value, init: bool, phase: &str, reasons: &mut Vec<String>) -> Value {
    let name = text(status, "/name").unwrap_or("");
    let ready = status
        .get("ready")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let restarts = int(status, "/restartCount");
    let state = status.get("state").cloned().unwrap_or(Value::Null);
    let (kind, reason, message, exit_code) = if let Some(w) = state.get("waiting") {
        let r = text(w, "/reason").unwrap_or("Waiting");
        if !STARTING.contains(&r) {
            push(reasons, r);
        }
        ("waiting", Some(r), text(w, "/message"), None)
    } else if let Some(t) = state.get("terminated") {
        let code = t.get("exitCode").and_then(Value::as_i64);
        let r = text(t, "/reason").unwrap_or(if code == Some(0) {
            "Completed"
        } else {
            "Error"
        });
        let finished_well = r == "Completed" || code == Some(0);
        if !finished_well && phase != "Succeeded" {
            push(reasons, r);
        }
        ("terminated", Some(r), text(t, "/message"), code)
    } else if state.get("running").is_some() {
        ("running", None, None, None)
    } else {
        ("unknown", None, None, None)
    };
    let last = status.pointer("/lastState/terminated");
    let last_reason = last.and_then(|t| text(t, "/reason"));
    let last_exit_code = last.and_then(|t| t.get("exitCode")).and_then(Value::as_i64);
    // An OOMKilled behind a CrashLoopBackOff shows only here; a container that runs and is
    // ready again is not held to its past.
    if let Some(r) = last_reason {
        if !ready && r != "Completed" && !(init && kind == "terminated") {
            push(reasons, r);
        }
    }
    json!({
        "name": name,
        "init": init,
        "ready": ready,
        "restarts": restarts,
        "state": kind,
        "reason": reason,
        "message": message,
        "exit_code": exit_code,
        "last_reason": last_reason,
        "last_exit_code": last_exit_code,
    })
}

/// The controller owner reference (else the first one): `{kind, name}`.
fn owner(pod: &Value) -> Option<Value> {
    let refs = pod.pointer("/metadata/ownerReferences")?.as_array()?;
    let r = refs
        .iter()
        .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
        .or_else(|| refs.first())?;
    Some(json!({"kind": text(r, "/kind"), "name": text(r, "/name")}))
}

/// The workload behind the owner: a ReplicaSet `web-7d9f8` with `pod-template-hash: 7d9f8`
/// belongs to the Deployment `web`.
fn workload(pod: &Value, owner: &Option<Value>) -> Value {
    let Some(o) = owner else { return Value::Null };
    let kind = text(o, "/kind").unwrap_or("");
    let name = text(o, "/name").unwrap_or("");
    if kind == "ReplicaSet" {
        let hash = pod
            .pointer("/metadata/labels/pod-template-hash")
            .and_then(Value::as_str);
        if let Some(deploy) = hash.and_then(|h| name.strip_suffix(&format!("-{h}"))) {
            return json!({"kind": "Deployment", "name": deploy});
        }
    }
    o.clone()
}

fn seconds_since(ts: &str, now: jiff::Timestamp) -> Option<i64> {
    let t: jiff::Timestamp = ts.parse().ok()?;
    Some(now.as_second() - t.as_second())
}

/// A pod's health.
pub fn pod(pod: &Value, opts: Options, now: jiff::Timestamp) -> Value {
    let phase = text(pod, "/status/phase").unwrap_or("Unknown");
    let ready_cond = condition(pod, "Ready");
    let ready = ready_cond.and_then(|c| text(c, "/status")) == Some("True");
    let mut reasons: Vec<String> = Vec::new();
    match phase {
        "Failed" => push(
            &mut reasons,
            text(pod, "/status/reason").unwrap_or("Failed"),
        ),
        "Unknown" => push(
            &mut reasons,
            text(pod, "/status/reason").unwrap_or("Unknown"),
        ),
        _ => {}
    }
    let mut containers = Vec::new();
    let mut restarts = 0;
    for (key, init) in [
        ("initContainerStatuses", true),
        ("containerStatuses", false),
    ] {
        for s in pod
            .pointer(&format!("/status/{key}"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            restarts = int(s, "/restartCount").saturating_add(restarts);
            containers.push(container(s, init, phase, &mut reasons));
        }
    }
    if phase == "Pending" {
        if let Some(c) = condition(pod, "PodScheduled") {
            if text(c, "/status") == Some("False") {
                push(&mut reasons, text(c, "/reason").unwrap_or("Unschedulable"));
            }
        }
    }
    if phase == "Running" && !ready && reasons.is_empty() {
        let since = ready_cond
            .and_then(|c| text(c, "/lastTransitionTime"))
            .or_else(|| text(pod, "/status/startTime"))
            .and_then(|t| seconds_since(t, now));
        if since.is_some_and(|s| s >= NOT_READY_GRACE_SECS) {
            push(&mut reasons, "NotReady");
        }
    }
    if let Some(max) = opts.max_restarts {
        if restarts > max {
            push(&mut reasons, "TooManyRestarts");
        }
    }
    let owner = owner(pod);
    let workload = workload(pod, &owner);
    json!({
        "phase": phase,
        "ready": ready,
        "restarts": restarts,
        "containers": containers,
        "owner": owner,
        "workload": workload,
        "node": text(pod, "/spec/nodeName"),
        "terminating": pod.pointer("/metadata/deletionTimestamp").is_some_and(|v| !v.is_null()),
        "unhealthy": !reasons.is_empty(),
        "reasons": reasons,
    })
}

/// A pod with its `health` added.
pub fn with_health(mut obj: Value, opts: Options) -> Value {
    let h = pod(&obj, opts, jiff::Timestamp::now());
    if let Some(map) = obj.as_object_mut() {
        map.insert("health".into(), h);
    }
    obj
}

/// The short form of an unhealthy pod, for lists and failure details.
pub fn brief(obj: &Value) -> Value {
    let h = &obj["health"];
    json!({
        "name": text(obj, "/metadata/name"),
        "namespace": text(obj, "/metadata/namespace"),
        "phase": h["phase"],
        "ready": h["ready"],
        "restarts": h["restarts"],
        "reasons": h["reasons"],
        "workload": h["workload"],
        "node": h["node"],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> jiff::Timestamp {
        "2026-01-01T12:00:00Z".parse().unwrap()
    }

    fn owned_pod(status: Value) -> Value {
        json!({
            "metadata": {"name": "web-7d9f8-abcde", "namespace": "default",
                "labels": {"app": "web", "pod-template-hash": "7d9f8"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d9f8", "uid": "u1", "controller": true}]},
            "spec": {"nodeName": "n1"},
            "status": status,
        })
    }

    #[test]
    fn crash_loop_with_oom_behind_it() {
        let p = owned_pod(json!({
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "False"}],
            "containerStatuses": [{
                "name": "web", "ready": false, "restartCount": 7,
                "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 5m0s"}},
                "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137}}
            }]
        }));
        let h = pod(&p, Options::default(), now());
        assert_eq!(h["unhealthy"], true);
        assert_eq!(h["reasons"], json!(["CrashLoopBackOff", "OOMKilled"]));
        assert_eq!(h["restarts"], 7);
        assert_eq!(h["ready"], false);
        assert_eq!(h["workload"], json!({"kind": "Deployment", "name": "web"}));
        assert_eq!(
            h["owner"],
            json!({"kind": "ReplicaSet", "name": "web-7d9f8"})
        );
        assert_eq!(h["containers"][0]["last_exit_code"], 137);
        assert_eq!(h["containers"][0]["state"], "waiting");
    }

    #[test]
    fn healthy_running_and_image_pull_and_error() {
        let ok = owned_pod(json!({
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [{"name": "web", "ready": true, "restartCount": 1,
                "state": {"running": {"startedAt": "2026-01-01T11:00:00Z"}},
                "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137}}}]
        }));
        let h = pod(&ok, Options::default(), now());
        assert_eq!(h["unhealthy"], false, "{h}");
        assert_eq!(h["reasons"], json!([]));
        // A restart budget makes the past count.
        let h = pod(
            &ok,
            Options {
                max_restarts: Some(0),
            },
            now(),
        );
        assert_eq!(h["reasons"], json!(["TooManyRestarts"]));

        let pull = owned_pod(
            json!({"phase": "Pending", "containerStatuses": [{"name": "web",
            "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "ImagePullBackOff"}}}]}),
        );
        assert_eq!(
            pod(&pull, Options::default(), now())["reasons"],
            json!(["ImagePullBackOff"])
        );

        let creating = owned_pod(
            json!({"phase": "Pending", "containerStatuses": [{"name": "web",
            "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}}]}),
        );
        assert_eq!(
            pod(&creating, Options::default(), now())["unhealthy"],
            false
        );

        let failed = json!({"metadata": {"name": "once"}, "status": {"phase": "Failed",
            "containerStatuses": [{"name": "c", "ready": false, "restartCount": 0,
                "state": {"terminated": {"reason": "Error", "exitCode": 2}}}]}});
        let h = pod(&failed, Options::default(), now());
        assert_eq!(h["reasons"], json!(["Failed", "Error"]));
        assert_eq!(h["workload"], Value::Null);

        let evicted = json!({"status": {"phase": "Failed", "reason": "Evicted"}});
        assert_eq!(
            pod(&evicted, Options::default(), now())["reasons"],
            json!(["Evicted"])
        );

        let done = json!({"status": {"phase": "Succeeded", "containerStatuses": [{"name": "c",
            "ready": false, "restartCount": 0, "state": {"terminated": {"reason": "Completed", "exitCode": 0}}}]}});
        assert_eq!(pod(&done, Options::default(), now())["unhealthy"], false);
    }

    #[test]
    fn not_ready_counts_after_a_grace_and_unschedulable() {
        let p = |since: &str| {
            owned_pod(json!({"phase": "Running",
                "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": since}],
                "containerStatuses": [{"name": "web", "ready": false, "restartCount": 0,
                    "state": {"running": {}}}]}))
        };
        assert_eq!(
            pod(&p("2026-01-01T11:59:00Z"), Options::default(), now())["unhealthy"],
            false
        );
        assert_eq!(
            pod(&p("2026-01-01T11:00:00Z"), Options::default(), now())["reasons"],
            json!(["NotReady"])
        );
        let pending = json!({"status": {"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}]}});
        assert_eq!(
            pod(&pending, Options::default(), now())["reasons"],
            json!(["Unschedulable"])
        );
    }
}
