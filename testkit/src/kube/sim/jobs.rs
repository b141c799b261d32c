//! The Job controller; a Job's pod runs its command through the exec handler.

use super::pods::{container_id, containers, create_pod, pod_ready, running_status};
use super::*;

pub(super) fn has_condition(o: &Value, kind: &str) -> bool {
    o["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == kind && c["status"] == "True")
    })
}

pub(super) fn job(st: &mut Store, key: &Key, timers: &mut Vec<Timer>) {
    let Some(j) = st.get(key).cloned() else {
        return;
    };
    if has_condition(&j, "Complete") || has_condition(&j, "Failed") {
        return;
    }
    let pods = owned(st, "v1", "Pod", &j);
    let phase = |p: &Value| {
        p["status"]["phase"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let succeeded = pods.iter().filter(|(_, p)| phase(p) == "Succeeded").count() as i64;
    let failed = pods.iter().filter(|(_, p)| phase(p) == "Failed").count() as i64;
    let active = pods.len() as i64 - succeeded - failed;
    let completions = int(&j["spec"]["completions"], 1);
    let backoff = int(&j["spec"]["backoffLimit"], 6);
    let suspended = j["spec"]["suspend"] == true;
    let done = succeeded >= completions;
    let gave_up = failed > backoff;
    if active == 0 && !done && !gave_up && !suspended {
        let name = format!("{}-{}", key.3, st.random_suffix(5));
        create_pod(
            st,
            &j,
            &name,
            &j["spec"]["template"],
            &Map::new(),
            timers,
            true,
        );
    }
    let pods = owned(st, "v1", "Pod", &j);
    let active = pods
        .iter()
        .filter(|(_, p)| !matches!(phase(p).as_str(), "Succeeded" | "Failed"))
        .count() as i64;
    let ready = pods.iter().filter(|(_, p)| pod_ready(p)).count() as i64;
    let t = now();
    let old = &j["status"]["conditions"];
    let start = j["status"]["startTime"]
        .as_str()
        .map_or(json!(t), |s| json!(s));
    let mut status = json!({
        "startTime": start,
        "active": active,
        "ready": ready,
        "succeeded": succeeded,
        "failed": failed,
        "terminating": 0,
        "uncountedTerminatedPods": {},
    });
    if done {
        status["conditions"] = json!([
            job_condition(
                old,
                "SuccessCriteriaMet",
                "CompletionsReached",
                "Reached expected number of succeeded pods"
            ),
            job_condition(
                old,
                "Complete",
                "CompletionsReached",
                "Reached expected number of succeeded pods"
            ),
        ]);
        status["completionTime"] = json!(t);
        status["active"] = json!(0);
    } else if gave_up {
        status["conditions"] = json!([
            job_condition(
                old,
                "FailureTarget",
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit"
            ),
            job_condition(
                old,
                "Failed",
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit"
            ),
        ]);
        status["active"] = json!(0);
    }
    if let Some(m) = status.as_object_mut() {
        m.retain(|k, v| {
            !(v == &json!(0) && matches!(k.as_str(), "active" | "succeeded" | "failed"))
        });
    }
    set_status(st, "batch/v1", "Job", key, status, CONTROLLER);
}

pub(super) fn job_condition(old: &Value, kind: &str, reason: &str, message: &str) -> Value {
    let mut c = condition(old, kind, "True", reason, message, false);
    c["lastProbeTime"] = c["lastTransitionTime"].clone();
    c
}

/// A Job's pod starts: Running, and the call to run.
pub(super) fn start_job_pod(st: &mut Store, key: &Key, uid: &Value) -> Option<ExecCall> {
    let pod = st.get(key).cloned()?;
    if pod["metadata"]["uid"] != *uid || !pod["metadata"]["deletionTimestamp"].is_null() {
        return None;
    }
    let c = containers(&pod).first().cloned()?;
    let t = now();
    let id = container_id(uid, &c["name"]);
    let image = c["image"].as_str().unwrap_or_default();
    let s = json!({"name": c["name"], "image": image, "imageID": "", "containerID": id, "ready": true, "started": true,
                   "restartCount": 0, "state": {"running": {"startedAt": t}}, "lastState": {}});
    let status = running_status(&pod, vec![s], true);
    set_status(st, "v1", "Pod", key, status, KUBELET);
    let mut command: Vec<String> = Vec::new();
    for f in ["command", "args"] {
        if let Some(a) = c[f].as_array() {
            command.extend(a.iter().filter_map(|v| v.as_str().map(str::to_string)));
        }
    }
    let job = pod["metadata"]["ownerReferences"][0]["name"]
        .as_str()
        .map(str::to_string);
    Some(ExecCall {
        namespace: key.2.clone(),
        pod: key.3.clone(),
        container: c["name"].as_str().unwrap_or_default().to_string(),
        command,
        stdin: None,
        tty: false,
        job,
    })
}

/// A Job's pod finished: its log and terminated state.
pub(super) fn finish_job_pod(
    st: &mut Store,
    key: &Key,
    uid: &Value,
    result: &ExecResult,
    set_log: bool,
) {
    let Some(pod) = st.get(key).cloned() else {
        return;
    };
    if pod["metadata"]["uid"] != *uid {
        return;
    }
    let Some(c) = containers(&pod).first().cloned() else {
        return;
    };
    let name = c["name"].as_str().unwrap_or_default().to_string();
    if set_log {
        let log = st
            .logs
            .entry((key.2.clone(), key.3.clone(), name.clone()))
            .or_default();
        log.chunks = vec![(
            jiff::Timestamp::now(),
            format!("{}{}", result.stdout, result.stderr),
        )];
    }
    let t = now();
    let ok = result.exit_code == 0;
    let id = container_id(uid, &c["name"]);
    let started = pod["status"]["containerStatuses"][0]["state"]["running"]["startedAt"].clone();
    let s = json!({"name": name, "image": c["image"], "imageID": "", "containerID": id, "ready": false, "started": false,
                   "restartCount": 0, "state": {"terminated": {"exitCode": result.exit_code, "reason": if ok { "Completed" } else { "Error" },
                   "startedAt": started, "finishedAt": t, "containerID": id}}, "lastState": {}});
    let mut status = running_status(&pod, vec![s], true);
    status["phase"] = json!(if ok { "Succeeded" } else { "Failed" });
    if let Some(cs) = status["conditions"].as_array_mut() {
        for c in cs.iter_mut() {
            if c["type"] == "Ready" || c["type"] == "ContainersReady" {
                c["status"] = json!("False");
                c["reason"] = json!("PodCompleted");
                if let Some(m) = c.as_object_mut() {
                    m.remove("message");
                }
            }
        }
    }
    set_status(st, "v1", "Pod", key, status, KUBELET);
    st.notify();
}
