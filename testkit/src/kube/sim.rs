//! Simulated controllers, switched on per test with `FakeKube::simulate`. **Not protocol**:
//! a small, deterministic stand-in for kube-controller-manager and the kubelet. What each
//! does is documented on the public `Sim` enum. The loop below reconciles everything on
//! each store change (level-based, writing only what changed) and runs the timers
//! (pods starting after [`STEP`]); Jobs' commands run on blocking threads.
//!
//! - `pods.rs`: pods of a template, their start and image-dependent status;
//! - `deployments.rs`: Deployments and ReplicaSets;
//! - `sets.rs`: StatefulSets, DaemonSets and ControllerRevisions;
//! - `jobs.rs`: Jobs.

mod deployments;
mod jobs;
mod pods;
mod sets;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use super::patch::without_nulls;
use super::registry::{self, fnv32, Resource};
use super::store::{self, now, DeleteOpts, Key, Store, WriteCtx};
use super::{ExecCall, ExecResult, Shared, Sim};
use deployments::{deployment, deployment_status, replicaset};
use jobs::{finish_job_pod, job, start_job_pod};
use pods::start_pod;
use sets::{daemonset, statefulset};

/// One step of the simulation.
pub(crate) const STEP: Duration = Duration::from_millis(50);

const CONTROLLER: &str = "kube-controller-manager";
const KUBELET: &str = "kubelet";
const HASH_LABEL: &str = "pod-template-hash";
const REVISION: &str = "deployment.kubernetes.io/revision";

fn res(api_version: &str, kind: &str) -> &'static Resource {
    registry::lookup(api_version, kind).expect("the table serves the simulated kinds")
}

/// Later work of the simulation.
enum Timer {
    /// A Pending pod gets its image-dependent status.
    StartPod(Key, Value),
    /// A Job's pod starts running its command.
    StartJobPod(Key, Value),
}

/// The controllers' loop: reconcile on every store change and when a timer is due.
pub(crate) async fn run(shared: Arc<Shared>) {
    let mut changed = shared.changed.clone();
    let mut timers: Vec<(Instant, Timer)> = Vec::new();
    loop {
        changed.borrow_and_update();
        let mut runs = Vec::new();
        {
            let mut st = shared.store.lock().expect("store lock");
            let sims = st.sims.clone();
            if !sims.is_empty() {
                let now = Instant::now();
                let (due, later): (Vec<_>, Vec<_>) =
                    timers.drain(..).partition(|(at, _)| *at <= now);
                timers = later;
                for (_, t) in due {
                    match t {
                        Timer::StartPod(key, uid) => start_pod(&mut st, &key, &uid),
                        Timer::StartJobPod(key, uid) => {
                            if let Some(call) = start_job_pod(&mut st, &key, &uid) {
                                runs.push((key, uid, call));
                            }
                        }
                    }
                }
                let mut new_timers = Vec::new();
                if sims.contains(&Sim::Deployments) {
                    for key in keys(&st, "apps/v1", "Deployment") {
                        deployment(&mut st, &key);
                    }
                    for key in keys(&st, "apps/v1", "ReplicaSet") {
                        replicaset(&mut st, &key, &mut new_timers);
                    }
                    for key in keys(&st, "apps/v1", "Deployment") {
                        deployment_status(&mut st, &key);
                    }
                }
                if sims.contains(&Sim::StatefulSets) {
                    for key in keys(&st, "apps/v1", "StatefulSet") {
                        statefulset(&mut st, &key, &mut new_timers);
                    }
                }
                if sims.contains(&Sim::DaemonSets) {
                    for key in keys(&st, "apps/v1", "DaemonSet") {
                        daemonset(&mut st, &key, &mut new_timers);
                    }
                }
                if sims.contains(&Sim::Jobs) {
                    for key in keys(&st, "batch/v1", "Job") {
                        job(&mut st, &key, &mut new_timers);
                    }
                }
                let at = Instant::now() + STEP;
                timers.extend(new_timers.into_iter().map(|t| (at, t)));
            }
        }
        for (key, uid, call) in runs {
            let shared = shared.clone();
            tokio::spawn(async move {
                let handler = shared.exec.lock().expect("exec lock").clone();
                let result = match handler {
                    Some(h) => tokio::task::spawn_blocking(move || h(&call))
                        .await
                        .unwrap_or_else(|_| ExecResult::exit(1, "", "the exec handler panicked\n")),
                    None => ExecResult::ok(""),
                };
                let mut st = shared.store.lock().expect("store lock");
                finish_job_pod(&mut st, &key, &uid, &result, handler_set(&shared));
            });
        }
        let next = timers.iter().map(|(at, _)| *at).min();
        let sleep = async {
            match next {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = changed.changed() => if r.is_err() { return },
            _ = sleep => {}
        }
    }
}

fn handler_set(shared: &Shared) -> bool {
    shared.exec.lock().expect("exec lock").is_some()
}

/// The keys of a kind's objects that are not being deleted.
fn keys(st: &Store, api_version: &str, kind: &str) -> Vec<Key> {
    st.list(res(api_version, kind), None)
        .filter(|(_, o)| o["metadata"]["deletionTimestamp"].is_null())
        .map(|(k, _)| k.clone())
        .collect()
}

fn ctx(manager: &str) -> WriteCtx {
    WriteCtx::new(manager)
}

/// Whether `obj` has a controller ownerReference to `uid`.
fn controlled_by(obj: &Value, uid: &Value) -> bool {
    obj["metadata"]["ownerReferences"]
        .as_array()
        .is_some_and(|refs| {
            refs.iter()
                .any(|r| r["uid"] == *uid && r["controller"] == true)
        })
}

fn owner_ref(owner: &Value) -> Value {
    json!([{
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": true,
        "blockOwnerDeletion": true,
    }])
}

/// The objects of a kind in a namespace controlled by `owner`, not being deleted.
fn owned(st: &Store, api_version: &str, kind: &str, owner: &Value) -> Vec<(Key, Value)> {
    let ns = owner["metadata"]["namespace"].as_str();
    let uid = &owner["metadata"]["uid"];
    st.list(res(api_version, kind), ns)
        .filter(|(_, o)| controlled_by(o, uid) && o["metadata"]["deletionTimestamp"].is_null())
        .map(|(k, o)| (k.clone(), o.clone()))
        .collect()
}

/// JSON with sorted keys, for hashing.
fn canonical(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .iter()
                .map(|k| format!("{}:{}", Value::String((*k).clone()), canonical(&m[*k])))
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(canonical).collect::<Vec<_>>().join(",")
        ),
        v => v.to_string(),
    }
}

/// A value without nulls, empty maps and empty lists: what Go's typed round trip (and
/// `omitempty`) makes equal, such as the `"resources": {}` and `"creationTimestamp": null`
/// that kubectl's typed templates carry.
fn compact(v: &Value) -> Value {
    let empty = |v: &Value| {
        v.is_null()
            || v.as_object().is_some_and(Map::is_empty)
            || v.as_array().is_some_and(Vec::is_empty)
    };
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), compact(v)))
                .filter(|(_, v)| !empty(v))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(compact).collect()),
        v => v.clone(),
    }
}

/// A template as the controllers compare it: [`compact`], without the `pod-template-hash`
/// label.
fn template_norm(t: &Value) -> Value {
    let mut t = compact(t);
    if let Some(labels) = t["metadata"]["labels"].as_object_mut() {
        labels.remove(HASH_LABEL);
        if labels.is_empty() {
            t["metadata"].as_object_mut().map(|m| m.remove("labels"));
        }
    }
    if t["metadata"].as_object().is_some_and(Map::is_empty) {
        t.as_object_mut().map(|m| m.remove("metadata"));
    }
    t
}

/// The pod-template-hash of a template: FNV-32a, its decimal digits safe-encoded as the
/// real controller does.
fn template_hash(t: &Value) -> String {
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let h = fnv32(canonical(&template_norm(t)).as_bytes());
    h.to_string()
        .bytes()
        .map(|b| ALPHANUMS[b as usize % ALPHANUMS.len()] as char)
        .collect()
}

fn revision_of(o: &Value) -> i64 {
    o["metadata"]["annotations"][REVISION]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Replaces `.status` if it changed.
fn set_status(
    st: &mut Store,
    api_version: &str,
    kind: &str,
    key: &Key,
    status: Value,
    manager: &str,
) {
    let Some(cur) = st.get(key) else { return };
    if without_nulls(&cur["status"]) == without_nulls(&status) {
        return;
    }
    let c = WriteCtx {
        manager: manager.to_string(),
        subresource: "status".into(),
        dry_run: false,
    };
    let _ = st.update(
        res(api_version, kind),
        key,
        json!({ "status": status }),
        &c,
        None,
    );
}

/// A condition, keeping the times of an equal existing one.
fn condition(
    existing: &Value,
    kind: &str,
    status: &str,
    reason: &str,
    message: &str,
    update_time: bool,
) -> Value {
    let old = existing
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == kind))
        .filter(|c| c["status"] == status && c["reason"] == reason && c["message"] == message);
    let t = now();
    let mut c = json!({"type": kind, "status": status});
    if update_time {
        c["lastUpdateTime"] = old.map_or(json!(t), |o| o["lastUpdateTime"].clone());
    }
    c["lastTransitionTime"] = old.map_or(json!(t), |o| o["lastTransitionTime"].clone());
    c["reason"] = json!(reason);
    c["message"] = json!(message);
    c
}

fn int(v: &Value, default: i64) -> i64 {
    v.as_i64().unwrap_or(default)
}

/// An int-or-percent of `total` (percentages rounded down, or up with `up`).
fn int_or_percent(v: &Value, total: i64, default: &str, up: bool) -> i64 {
    let s = match v {
        Value::Number(n) => return n.as_i64().unwrap_or(0),
        Value::String(s) => s.as_str(),
        _ => default,
    };
    match s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) {
        Some(p) if up => (p * total + 99) / 100,
        Some(p) => p * total / 100,
        None => s.parse().unwrap_or(0),
    }
}

/// Status counters that are 0 are omitted, as Go's `omitempty` does, except the required
/// ones in `keep`.
fn prune_zeros(mut v: Value, keep: &[&str]) -> Value {
    if let Some(m) = v.as_object_mut() {
        m.retain(|k, v| v != &json!(0) || keep.contains(&k.as_str()));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_hash_ignores_the_hash_label_and_nulls() {
        let a = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "nginx"}]}});
        let b = json!({"metadata": {"creationTimestamp": null, "labels": {"app": "web", "pod-template-hash": "x"}},
                       "spec": {"containers": [{"image": "nginx", "name": "web"}]}});
        assert_eq!(template_hash(&a), template_hash(&b));
        assert!(template_hash(&a)
            .chars()
            .all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
        let c = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "nginx:2"}]}});
        assert_ne!(template_hash(&a), template_hash(&c));
    }

    #[test]
    fn percentages() {
        assert_eq!(int_or_percent(&json!("25%"), 3, "25%", false), 0);
        assert_eq!(int_or_percent(&json!("25%"), 3, "25%", true), 1);
        assert_eq!(int_or_percent(&Value::Null, 8, "25%", false), 2);
        assert_eq!(int_or_percent(&json!(2), 8, "25%", false), 2);
    }
}
