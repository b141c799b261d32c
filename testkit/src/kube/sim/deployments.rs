//! The Deployment and ReplicaSet controllers.

use super::pods::{create_pod, pod_failing, pod_ready};
use super::*;

/// Rolls a Deployment out: the ReplicaSet of its template, revisions, replicas.
pub(super) fn deployment(st: &mut Store, key: &Key) {
    let Some(d) = st.get(key).cloned() else {
        return;
    };
    if d["spec"]["paused"] == true {
        return;
    }
    let ns = key.2.clone();
    let rs_res = res("apps/v1", "ReplicaSet");
    let template = &d["spec"]["template"];
    let desired = int(&d["spec"]["replicas"], 1);
    let mut sets = owned(st, "apps/v1", "ReplicaSet", &d);
    let max_rev = sets
        .iter()
        .map(|(_, rs)| revision_of(rs))
        .max()
        .unwrap_or(0);
    let norm = template_norm(template);
    let current = sets
        .iter()
        .position(|(_, rs)| template_norm(&rs["spec"]["template"]) == norm);
    let new_key = match current {
        Some(i) => {
            let (k, rs) = sets[i].clone();
            let rev = revision_of(&rs);
            let mut n = rs.clone();
            let mut changed = false;
            if rev < max_rev || rev == 0 {
                let mut history: Vec<String> = rs["metadata"]["annotations"]
                    ["deployment.kubernetes.io/revision-history"]
                    .as_str()
                    .filter(|s| !s.is_empty())
                    .map(|s| s.split(',').map(str::to_string).collect())
                    .unwrap_or_default();
                if rev > 0 {
                    history.push(rev.to_string());
                }
                n["metadata"]["annotations"][REVISION] = json!((max_rev + 1).to_string());
                if !history.is_empty() {
                    n["metadata"]["annotations"]["deployment.kubernetes.io/revision-history"] =
                        json!(history.join(","));
                }
                changed = true;
            }
            if int(&n["spec"]["replicas"], 1) != desired {
                n["spec"]["replicas"] = json!(desired);
                n["metadata"]["annotations"]["deployment.kubernetes.io/desired-replicas"] =
                    json!(desired.to_string());
                changed = true;
            }
            if changed {
                let _ = st.update(rs_res, &k, n, &ctx(CONTROLLER), None);
            }
            k
        }
        None => {
            let hash = template_hash(template);
            let name = format!("{}-{hash}", key.3);
            let mut t = template.clone();
            t["metadata"]["labels"][HASH_LABEL] = json!(hash);
            let mut labels = template["metadata"]["labels"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            labels.insert(HASH_LABEL.into(), json!(hash));
            let mut selector = d["spec"]["selector"].clone();
            selector["matchLabels"][HASH_LABEL] = json!(hash);
            let surge = int_or_percent(
                &d["spec"]["strategy"]["rollingUpdate"]["maxSurge"],
                desired,
                "25%",
                true,
            );
            let rs = json!({
                "apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {"name": name, "namespace": ns, "labels": labels,
                    "annotations": {"deployment.kubernetes.io/desired-replicas": desired.to_string(),
                                    "deployment.kubernetes.io/max-replicas": (desired + surge).to_string(),
                                    REVISION: (max_rev + 1).to_string()},
                    "ownerReferences": owner_ref(&d)},
                "spec": {"replicas": desired, "selector": selector, "template": t},
            });
            if st
                .create(rs_res, Some(&ns), rs, &ctx(CONTROLLER), None)
                .is_err()
            {
                return;
            }
            store::key(rs_res, Some(&ns), &name)
        }
    };
    // The Deployment carries its newest revision.
    if let Some(new_rs) = st.get(&new_key).cloned() {
        let rev = new_rs["metadata"]["annotations"][REVISION].clone();
        if let Some(cur) = st.get(key).cloned() {
            if cur["metadata"]["annotations"][REVISION] != rev {
                let mut n = cur;
                n["metadata"]["annotations"][REVISION] = rev;
                let _ = st.update(res("apps/v1", "Deployment"), key, n, &ctx(CONTROLLER), None);
            }
        }
        // Old ReplicaSets go to 0 once the new one is fully ready.
        let pods: Vec<Value> = owned(st, "v1", "Pod", &new_rs)
            .into_iter()
            .map(|(_, p)| p)
            .collect();
        let healthy = pods.len() as i64 == desired && pods.iter().all(pod_ready);
        if healthy {
            sets.retain(|(k, _)| *k != new_key);
            for (k, rs) in sets {
                if int(&rs["spec"]["replicas"], 1) != 0 {
                    let mut n = rs;
                    n["spec"]["replicas"] = json!(0);
                    let _ = st.update(rs_res, &k, n, &ctx(CONTROLLER), None);
                }
            }
        }
    }
}

/// Keeps a ReplicaSet's pods at `spec.replicas`; its status.
pub(super) fn replicaset(st: &mut Store, key: &Key, timers: &mut Vec<Timer>) {
    let Some(rs) = st.get(key).cloned() else {
        return;
    };
    let want = int(&rs["spec"]["replicas"], 1);
    let mut pods = owned(st, "v1", "Pod", &rs);
    let hash = rs["metadata"]["labels"][HASH_LABEL].clone();
    while (pods.len() as i64) < want {
        let name = format!("{}-{}", key.3, st.random_suffix(5));
        let mut extra = Map::new();
        if !hash.is_null() {
            extra.insert(HASH_LABEL.into(), hash.clone());
        }
        create_pod(
            st,
            &rs,
            &name,
            &rs["spec"]["template"],
            &extra,
            timers,
            false,
        );
        pods = owned(st, "v1", "Pod", &rs);
        if pods.is_empty() {
            break;
        }
    }
    if (pods.len() as i64) > want {
        pods.sort_by(|a, b| {
            b.1["metadata"]["creationTimestamp"]
                .as_str()
                .cmp(&a.1["metadata"]["creationTimestamp"].as_str())
                .then(b.0.cmp(&a.0))
        });
        let extra = pods.len() - want.max(0) as usize;
        for (k, _) in pods.drain(..extra) {
            let _ = st.delete(res("v1", "Pod"), &k, &DeleteOpts::default());
        }
    }
    let ready = pods.iter().filter(|(_, p)| pod_ready(p)).count();
    let status = json!({
        "replicas": pods.len(),
        "fullyLabeledReplicas": pods.len(),
        "readyReplicas": ready,
        "availableReplicas": ready,
        "observedGeneration": rs["metadata"]["generation"],
    });
    set_status(
        st,
        "apps/v1",
        "ReplicaSet",
        key,
        prune_zeros(status, &["replicas"]),
        CONTROLLER,
    );
}

/// A Deployment's status from its ReplicaSets and their pods.
pub(super) fn deployment_status(st: &mut Store, key: &Key) {
    let Some(d) = st.get(key).cloned() else {
        return;
    };
    let desired = int(&d["spec"]["replicas"], 1);
    let sets = owned(st, "apps/v1", "ReplicaSet", &d);
    let norm = template_norm(&d["spec"]["template"]);
    let new_rs = sets
        .iter()
        .find(|(_, rs)| template_norm(&rs["spec"]["template"]) == norm)
        .map(|(_, rs)| rs.clone());
    let sum = |f: &str| -> i64 { sets.iter().map(|(_, rs)| int(&rs["status"][f], 0)).sum() };
    let replicas = sum("replicas");
    let ready = sum("readyReplicas");
    let available = sum("availableReplicas");
    let updated = new_rs
        .as_ref()
        .map_or(0, |rs| int(&rs["status"]["replicas"], 0));
    let spec_total: i64 = sets
        .iter()
        .map(|(_, rs)| int(&rs["spec"]["replicas"], 0))
        .sum();
    let unavailable = (spec_total.max(desired) - available).max(0);
    let max_unavailable = int_or_percent(
        &d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"],
        desired,
        "25%",
        false,
    );
    let old = &d["status"]["conditions"];
    let available_cond = if available >= desired - max_unavailable {
        condition(
            old,
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.",
            true,
        )
    } else {
        condition(
            old,
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
            true,
        )
    };
    let rs_name = new_rs
        .as_ref()
        .and_then(|rs| rs["metadata"]["name"].as_str())
        .unwrap_or_default()
        .to_string();
    let failing = new_rs.as_ref().is_some_and(|rs| {
        owned(st, "v1", "Pod", rs)
            .iter()
            .any(|(_, p)| pod_failing(p))
    });
    let old_left: i64 = sets
        .iter()
        .filter(|(_, rs)| Some(rs) != new_rs.as_ref())
        .map(|(_, rs)| int(&rs["status"]["replicas"], 0))
        .sum();
    let progressing = if d["spec"]["paused"] == true {
        condition(
            old,
            "Progressing",
            "Unknown",
            "DeploymentPaused",
            "Deployment is paused",
            true,
        )
    } else if failing {
        condition(
            old,
            "Progressing",
            "False",
            "ProgressDeadlineExceeded",
            &format!("ReplicaSet \"{rs_name}\" has timed out progressing."),
            true,
        )
    } else if updated == desired && available >= desired && old_left == 0 && new_rs.is_some() {
        condition(
            old,
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            &format!("ReplicaSet \"{rs_name}\" has successfully progressed."),
            true,
        )
    } else {
        condition(
            old,
            "Progressing",
            "True",
            "ReplicaSetUpdated",
            &format!("ReplicaSet \"{rs_name}\" is progressing."),
            true,
        )
    };
    let status = json!({
        "observedGeneration": d["metadata"]["generation"],
        "replicas": replicas,
        "updatedReplicas": updated,
        "readyReplicas": ready,
        "availableReplicas": available,
        "unavailableReplicas": unavailable,
        "conditions": [available_cond, progressing],
    });
    set_status(
        st,
        "apps/v1",
        "Deployment",
        key,
        prune_zeros(status, &[]),
        CONTROLLER,
    );
}
