//! The StatefulSet and DaemonSet controllers, with their ControllerRevisions.

use super::pods::{create_pod, pod_ready};
use super::*;

/// The ControllerRevision of an object's current template (created, or re-used with the
/// next revision number); its name, hash and revision.
pub(super) fn controller_revision(st: &mut Store, owner: &Value) -> Option<(String, String, i64)> {
    let ns = owner["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default")
        .to_string();
    let cr_res = res("apps/v1", "ControllerRevision");
    let mut t = owner["spec"]["template"].clone();
    t["$patch"] = json!("replace");
    let data = json!({"spec": {"template": t}});
    let revisions = owned(st, "apps/v1", "ControllerRevision", owner);
    let max = revisions
        .iter()
        .map(|(_, c)| int(&c["revision"], 0))
        .max()
        .unwrap_or(0);
    let found = revisions
        .iter()
        .find(|(_, c)| compact(&c["data"]) == compact(&data))
        .cloned();
    let (name, rev) = match found {
        Some((k, c)) => {
            let rev = int(&c["revision"], 0);
            if rev < max {
                let mut n = c.clone();
                n["revision"] = json!(max + 1);
                let _ = st.update(cr_res, &k, n, &ctx(CONTROLLER), None);
                (k.3, max + 1)
            } else {
                (k.3, rev)
            }
        }
        None => {
            let hash = template_hash(&owner["spec"]["template"]);
            let name = format!(
                "{}-{hash}",
                owner["metadata"]["name"].as_str().unwrap_or_default()
            );
            let mut labels = owner["spec"]["template"]["metadata"]["labels"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            labels.insert("controller-revision-hash".into(), json!(hash));
            let cr = json!({"apiVersion": "apps/v1", "kind": "ControllerRevision",
                "metadata": {"name": name, "namespace": ns, "labels": labels, "ownerReferences": owner_ref(owner)},
                "data": data, "revision": max + 1});
            st.create(cr_res, Some(&ns), cr, &ctx(CONTROLLER), None)
                .ok()?;
            (name, max + 1)
        }
    };
    let hash = name.rsplit('-').next().unwrap_or_default().to_string();
    Some((name, hash, rev))
}

pub(super) fn statefulset(st: &mut Store, key: &Key, timers: &mut Vec<Timer>) {
    let Some(s) = st.get(key).cloned() else {
        return;
    };
    let Some((rev_name, _, _)) = controller_revision(st, &s) else {
        return;
    };
    let want = int(&s["spec"]["replicas"], 1).max(0);
    let pod_res = res("v1", "Pod");
    let pods = owned(st, "v1", "Pod", &s);
    for (k, p) in &pods {
        let ordinal: Option<i64> = k.3.rsplit('-').next().and_then(|n| n.parse().ok());
        let stale = p["metadata"]["labels"]["controller-revision-hash"] != rev_name.as_str();
        if stale || ordinal.is_none_or(|o| o >= want) {
            let _ = st.delete(
                pod_res,
                k,
                &DeleteOpts {
                    grace: Some(0),
                    ..DeleteOpts::default()
                },
            );
        }
    }
    for i in 0..want {
        let name = format!("{}-{i}", key.3);
        if st.get(&store::key(pod_res, Some(&key.2), &name)).is_none() {
            let mut extra = Map::new();
            extra.insert("controller-revision-hash".into(), json!(rev_name));
            extra.insert("statefulset.kubernetes.io/pod-name".into(), json!(name));
            extra.insert("apps.kubernetes.io/pod-index".into(), json!(i.to_string()));
            create_pod(st, &s, &name, &s["spec"]["template"], &extra, timers, false);
        }
    }
    let pods = owned(st, "v1", "Pod", &s);
    let ready = pods.iter().filter(|(_, p)| pod_ready(p)).count() as i64;
    let updated = pods
        .iter()
        .filter(|(_, p)| p["metadata"]["labels"]["controller-revision-hash"] == rev_name.as_str())
        .count() as i64;
    let current_rev = if updated == want && ready == want {
        rev_name.clone()
    } else {
        s["status"]["currentRevision"]
            .as_str()
            .unwrap_or(&rev_name)
            .to_string()
    };
    let current = if current_rev == rev_name {
        updated
    } else {
        pods.len() as i64 - updated
    };
    let status = json!({
        "observedGeneration": s["metadata"]["generation"],
        "replicas": pods.len(),
        "readyReplicas": ready,
        "currentReplicas": current,
        "updatedReplicas": updated,
        "currentRevision": current_rev,
        "updateRevision": rev_name,
        "collisionCount": 0,
        "availableReplicas": ready,
    });
    set_status(
        st,
        "apps/v1",
        "StatefulSet",
        key,
        prune_zeros(status, &["replicas"]),
        CONTROLLER,
    );
}

pub(super) fn daemonset(st: &mut Store, key: &Key, timers: &mut Vec<Timer>) {
    let Some(d) = st.get(key).cloned() else {
        return;
    };
    let Some((_, hash, _)) = controller_revision(st, &d) else {
        return;
    };
    let pod_res = res("v1", "Pod");
    let mut pods = owned(st, "v1", "Pod", &d);
    for (k, p) in &pods {
        if p["metadata"]["labels"]["controller-revision-hash"] != hash.as_str() {
            let _ = st.delete(
                pod_res,
                k,
                &DeleteOpts {
                    grace: Some(0),
                    ..DeleteOpts::default()
                },
            );
        }
    }
    pods.retain(|(k, _)| {
        st.get(k)
            .is_some_and(|p| p["metadata"]["deletionTimestamp"].is_null())
    });
    if pods.is_empty() {
        let name = format!("{}-{}", key.3, st.random_suffix(5));
        let mut extra = Map::new();
        extra.insert("controller-revision-hash".into(), json!(hash));
        extra.insert(
            "pod-template-generation".into(),
            json!(d["metadata"]["generation"].to_string()),
        );
        create_pod(st, &d, &name, &d["spec"]["template"], &extra, timers, false);
        pods = owned(st, "v1", "Pod", &d);
    }
    let scheduled = pods.len() as i64;
    let ready = pods.iter().filter(|(_, p)| pod_ready(p)).count() as i64;
    let updated = pods
        .iter()
        .filter(|(_, p)| p["metadata"]["labels"]["controller-revision-hash"] == hash.as_str())
        .count() as i64;
    let status = json!({
        "currentNumberScheduled": scheduled,
        "numberMisscheduled": 0,
        "desiredNumberScheduled": 1,
        "numberReady": ready,
        "observedGeneration": d["metadata"]["generation"],
        "updatedNumberScheduled": updated,
        "numberAvailable": ready,
        "numberUnavailable": 1 - ready,
    });
    set_status(
        st,
        "apps/v1",
        "DaemonSet",
        key,
        prune_zeros(
            status,
            &[
                "currentNumberScheduled",
                "numberMisscheduled",
                "desiredNumberScheduled",
                "numberReady",
            ],
        ),
        CONTROLLER,
    );
}
