//! The kubelet part: pods of a template created Pending on `fake-node`, then started with a
//! status chosen by each container's image.

use super::*;

/// A pod of a template, owned by `owner`, Pending on fake-node.
pub(super) fn create_pod(
    st: &mut Store,
    owner: &Value,
    name: &str,
    template: &Value,
    extra_labels: &Map<String, Value>,
    timers: &mut Vec<Timer>,
    job: bool,
) {
    let ns = owner["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default")
        .to_string();
    let mut labels = template["metadata"]["labels"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    labels.extend(extra_labels.clone());
    let mut metadata = json!({"name": name, "namespace": ns, "labels": labels, "ownerReferences": owner_ref(owner)});
    if let Some(a) = template["metadata"]["annotations"].as_object() {
        metadata["annotations"] = json!(a);
    }
    let mut spec = template["spec"].clone();
    spec["nodeName"] = json!("fake-node");
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec});
    let r = res("v1", "Pod");
    let Ok(created) = st.create(r, Some(&ns), pod, &ctx(CONTROLLER), None) else {
        return;
    };
    let key = store::key(r, Some(&ns), name);
    let waiting: Vec<Value> = containers(&created)
        .iter()
        .map(|c| json!({"name": c["name"], "image": c["image"], "imageID": "", "ready": false, "started": false, "restartCount": 0,
                        "state": {"waiting": {"reason": "ContainerCreating"}}, "lastState": {}}))
        .collect();
    let status = json!({
        "phase": "Pending",
        "conditions": [condition(&Value::Null, "PodScheduled", "True", "", "", false)],
        "hostIP": "10.0.0.10",
        "containerStatuses": waiting,
        "qosClass": "BestEffort",
    });
    let mut status = status;
    strip_empty_reason(&mut status["conditions"]);
    set_status(st, "v1", "Pod", &key, status, KUBELET);
    let uid = created["metadata"]["uid"].clone();
    timers.push(if job {
        Timer::StartJobPod(key, uid)
    } else {
        Timer::StartPod(key, uid)
    });
}

/// Pod conditions carry no empty reason or message.
pub(super) fn strip_empty_reason(conditions: &mut Value) {
    if let Some(cs) = conditions.as_array_mut() {
        for c in cs {
            if let Some(m) = c.as_object_mut() {
                m.retain(|k, v| !((k == "reason" || k == "message") && v == ""));
            }
        }
    }
}

pub(super) fn containers(pod: &Value) -> Vec<Value> {
    pod["spec"]["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

pub(super) fn container_id(pod_uid: &Value, name: &Value) -> String {
    format!(
        "containerd://{:08x}{:08x}",
        fnv32(pod_uid.to_string().as_bytes()),
        fnv32(name.to_string().as_bytes())
    )
}

/// The status of a started container, by its image.
pub(super) fn container_status(pod: &Value, c: &Value) -> (Value, bool) {
    let image = c["image"].as_str().unwrap_or_default();
    let tail = image.rsplit('/').next().unwrap_or_default();
    let t = now();
    let id = container_id(&pod["metadata"]["uid"], &c["name"]);
    let base = |ready: bool, restarts: i64, state: Value, last: Value| {
        json!({"name": c["name"], "image": image, "imageID": format!("docker.io/library/{tail}@sha256:{:064x}", fnv32(image.as_bytes())),
               "containerID": id, "ready": ready, "started": ready, "restartCount": restarts, "state": state, "lastState": last})
    };
    let crash = |reason: &str, code: i64| {
        let message = format!(
            "back-off 5m0s restarting failed container={} pod={}_{}({})",
            c["name"].as_str().unwrap_or_default(),
            pod["metadata"]["name"].as_str().unwrap_or_default(),
            pod["metadata"]["namespace"].as_str().unwrap_or_default(),
            pod["metadata"]["uid"].as_str().unwrap_or_default()
        );
        base(
            false,
            5,
            json!({"waiting": {"reason": "CrashLoopBackOff", "message": message}}),
            json!({"terminated": {"exitCode": code, "reason": reason, "startedAt": t, "finishedAt": t, "containerID": id}}),
        )
    };
    if tail.contains("crash") || tail.contains("bad") {
        (crash("Error", 1), true)
    } else if tail.contains("oom") {
        (crash("OOMKilled", 137), true)
    } else if tail.contains("nopull") || tail.contains("missing") {
        let mut s = base(
            false,
            0,
            json!({"waiting": {"reason": "ImagePullBackOff", "message": format!("Back-off pulling image \"{image}\"")}}),
            json!({}),
        );
        s.as_object_mut().map(|m| m.remove("containerID"));
        (s, false)
    } else {
        (
            base(true, 0, json!({"running": {"startedAt": t}}), json!({})),
            true,
        )
    }
}

/// The status of a running pod whose containers have the statuses given.
pub(super) fn running_status(pod: &Value, statuses: Vec<Value>, ran: bool) -> Value {
    let ready = statuses.iter().all(|s| s["ready"] == true);
    let unready: Vec<&str> = statuses
        .iter()
        .filter(|s| s["ready"] != true)
        .filter_map(|s| s["name"].as_str())
        .collect();
    let old = &pod["status"]["conditions"];
    let (r, reason, message) = if ready {
        ("True", "", String::new())
    } else {
        (
            "False",
            "ContainersNotReady",
            format!("containers with unready status: [{}]", unready.join(" ")),
        )
    };
    let mut conditions = json!([
        condition(old, "PodReadyToStartContainers", "True", "", "", false),
        condition(old, "Initialized", "True", "", "", false),
        condition(old, "Ready", r, reason, &message, false),
        condition(old, "ContainersReady", r, reason, &message, false),
        condition(old, "PodScheduled", "True", "", "", false),
    ]);
    strip_empty_reason(&mut conditions);
    let n = fnv32(pod["metadata"]["uid"].to_string().as_bytes()) % 250 + 2;
    let ip = format!("10.244.0.{n}");
    json!({
        "phase": if ran { "Running" } else { "Pending" },
        "conditions": conditions,
        "hostIP": "10.0.0.10",
        "hostIPs": [{"ip": "10.0.0.10"}],
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "startTime": pod["metadata"]["creationTimestamp"],
        "containerStatuses": statuses,
        "qosClass": "BestEffort",
    })
}

/// The kubelet starts a pod: statuses by image.
pub(super) fn start_pod(st: &mut Store, key: &Key, uid: &Value) {
    let Some(pod) = st.get(key).cloned() else {
        return;
    };
    if pod["metadata"]["uid"] != *uid || !pod["metadata"]["deletionTimestamp"].is_null() {
        return;
    }
    let mut ran = false;
    let statuses: Vec<Value> = containers(&pod)
        .iter()
        .map(|c| {
            let (s, r) = container_status(&pod, c);
            ran |= r;
            s
        })
        .collect();
    let status = running_status(&pod, statuses, ran);
    set_status(st, "v1", "Pod", key, status, KUBELET);
}

pub(super) fn pod_ready(p: &Value) -> bool {
    p["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

/// Whether a pod is failing to start: crash looping or not pulling its image.
pub(super) fn pod_failing(p: &Value) -> bool {
    p["status"]["containerStatuses"]
        .as_array()
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                matches!(
                    c["state"]["waiting"]["reason"].as_str(),
                    Some("CrashLoopBackOff" | "ImagePullBackOff" | "ErrImagePull")
                )
            })
        })
}
