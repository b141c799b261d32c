//! `k8s.rollout_undo`: back to the previous (or a given) revision the way kubectl does it:
//! Deployments from their ReplicaSets' `deployment.kubernetes.io/revision` annotations,
//! StatefulSets and DaemonSets from their ControllerRevisions.

use async_trait::async_trait;
use kube::api::{ListParams, Patch, PatchParams};
use opsbook_engine::action::{Action, ActionError, ActionSpec, LogStream, StepContext};
use serde_json::{json, Map, Value};

use crate::common::{annotation, controlled_by, k8s_input, label_selector, parse, text};
use crate::error::{from_kube, is_modified_conflict, status as api_status};
use crate::scale::deployment;
use crate::target::{to_value, Target};

k8s_input! {
    /// Input of `k8s.rollout_undo`.
    pub struct UndoInput {
        /// `Deployment` (default), `StatefulSet` or `DaemonSet`.
        #[serde(default = "deployment")]
        pub kind: String,
        /// The workload's name.
        pub name: String,
        /// The revision to go back to (default: the previous one).
        #[serde(default)]
        #[schemars(range(min = 1))]
        pub to_revision: Option<i64>,
    }
}

/// Annotations of a Deployment a rollback keeps (kubectl's `annotationsToSkip`).
const KEEP: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    "deployment.kubernetes.io/revision",
    "deployment.kubernetes.io/revision-history",
    "deployment.kubernetes.io/desired-replicas",
    "deployment.kubernetes.io/max-replicas",
    "deprecated.deployment.rollback.to",
];

/// What a rollback does.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// The template already is that revision's.
    Skip {
        /// The revision it matches.
        revision: i64,
    },
    /// Patch the workload.
    Patch {
        /// The revision rolled back to.
        revision: i64,
        /// The pod template of that revision.
        template: Value,
        /// The JSON patch operations (without the resourceVersion precondition).
        ops: Vec<Value>,
    },
}

fn revision_of_rs(rs: &Value) -> Option<i64> {
    annotation(rs, "deployment.kubernetes.io/revision")?
        .parse()
        .ok()
}

/// Picks the revision: `to` exactly, or the second-highest (kubectl's `deploymentRevision` and
/// `findHistory`).
fn pick<'a>(
    revisions: &[(i64, &'a Value)],
    to: Option<i64>,
    none: impl FnOnce() -> String,
) -> Result<(i64, &'a Value), String> {
    if let Some(to) = to.filter(|t| *t > 0) {
        return revisions
            .iter()
            .find(|(r, _)| *r == to)
            .copied()
            .ok_or_else(|| format!("unable to find specified revision {to} in history"));
    }
    let mut sorted: Vec<(i64, &Value)> = revisions.to_vec();
    sorted.sort_by_key(|(r, _)| *r);
    if sorted.len() < 2 {
        return Err(none());
    }
    Ok(sorted[sorted.len() - 2])
}

fn without_hash(template: &Value) -> Value {
    let mut t = template.clone();
    if let Some(labels) = t
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove("pod-template-hash");
    }
    t
}

/// Empty mappings and `null` read as absent (the API drops them).
fn normal(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null() && !v.as_object().is_some_and(Map::is_empty))
                .map(|(k, v)| (k.clone(), normal(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(normal).collect()),
        other => other.clone(),
    }
}

/// kubectl's `DeploymentRollbacker`: the ReplicaSets the Deployment controls, by revision.
pub fn deployment_plan(
    deploy: &Value,
    replica_sets: &[Value],
    to: Option<i64>,
) -> Result<Plan, String> {
    let name = text(deploy, "/metadata/name").unwrap_or("");
    let uid = text(deploy, "/metadata/uid").unwrap_or("");
    let revisions: Vec<(i64, &Value)> = replica_sets
        .iter()
        .filter(|rs| controlled_by(rs, uid))
        .filter_map(|rs| Some((revision_of_rs(rs)?, rs)))
        .collect();
    let (revision, rs) = pick(&revisions, to, || {
        format!("no rollout history found for deployment \"{name}\"")
    })?;
    if deploy.pointer("/spec/paused") == Some(&json!(true)) {
        return Err(format!(
            "you cannot rollback a paused deployment; resume it first and try again (deployment \"{name}\")"
        ));
    }
    let rs_template = without_hash(rs.pointer("/spec/template").unwrap_or(&Value::Null));
    let current = without_hash(deploy.pointer("/spec/template").unwrap_or(&Value::Null));
    if normal(&rs_template) == normal(&current) {
        return Ok(Plan::Skip { revision });
    }
    let mut annotations = Map::new();
    if let Some(a) = deploy
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
    {
        for k in KEEP {
            if let Some(v) = a.get(*k) {
                annotations.insert((*k).to_string(), v.clone());
            }
        }
    }
    if let Some(a) = rs
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
    {
        for (k, v) in a {
            if !KEEP.contains(&k.as_str()) {
                annotations.insert(k.clone(), v.clone());
            }
        }
    }
    Ok(Plan::Patch {
        revision,
        template: rs_template.clone(),
        ops: vec![
            json!({"op": "replace", "path": "/spec/template", "value": rs_template}),
            json!({"op": "add", "path": "/metadata/annotations", "value": annotations}),
        ],
    })
}

/// kubectl's `StatefulSetRollbacker`/`DaemonSetRollbacker`: the ControllerRevisions the object
/// controls, by `revision`; their `data` is `{spec: {template: {…, $patch: replace}}}`.
pub fn history_plan(obj: &Value, history: &[Value], to: Option<i64>) -> Result<Plan, String> {
    let uid = text(obj, "/metadata/uid").unwrap_or("");
    let revisions: Vec<(i64, &Value)> = history
        .iter()
        .filter(|cr| controlled_by(cr, uid))
        .filter_map(|cr| Some((cr.get("revision")?.as_i64()?, cr)))
        .collect();
    let (revision, cr) = pick(&revisions, to, || {
        "no last revision to roll back to".to_string()
    })?;
    let mut template = cr
        .pointer("/data/spec/template")
        .cloned()
        .ok_or_else(|| format!("revision {revision} has no pod template in its data"))?;
    if let Some(m) = template.as_object_mut() {
        m.remove("$patch");
    }
    let current = obj
        .pointer("/spec/template")
        .cloned()
        .unwrap_or(Value::Null);
    if normal(&template) == normal(&current) {
        return Ok(Plan::Skip { revision });
    }
    Ok(Plan::Patch {
        revision,
        template: template.clone(),
        ops: vec![json!({"op": "replace", "path": "/spec/template", "value": template})],
    })
}

fn images(template: &Value) -> Vec<Value> {
    template
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("image").cloned())
        .collect()
}

const DOC: &str = "Rolls a Deployment, StatefulSet or DaemonSet back to the previous revision \
(or `to_revision`), as `kubectl rollout undo` does: a Deployment's revisions are its \
ReplicaSets' `deployment.kubernetes.io/revision` annotations (the ReplicaSet's pod template, \
without `pod-template-hash`, goes back into the Deployment with a JSON patch, annotations as \
kubectl carries them); a StatefulSet's or DaemonSet's are its ControllerRevisions. When the \
template already is that revision's, nothing changes (`action: skipped`). A paused Deployment \
is refused. The patch is conditional on the object's resourceVersion; a concurrent change \
makes it read and decide again. Result: `kind`, `name`, `namespace`, `action` (rolled_back or \
skipped), `from_revision`, `to_revision`, `images` (of the template rolled back to). \
`--dry-run`: the server checks the patch (`dryRun=All`) and nothing changes.";

/// `k8s.rollout_undo`.
pub struct RolloutUndo;

#[async_trait]
impl Action for RolloutUndo {
    fn spec(&self) -> ActionSpec {
        ActionSpec::new::<UndoInput, Value>(
            "k8s.rollout_undo",
            "Roll a Deployment, StatefulSet or DaemonSet back to the previous or a given revision.",
            DOC,
        )
        .with_check()
    }

    async fn run(&self, input: Value, cx: &StepContext) -> Result<Value, ActionError> {
        let input: UndoInput = parse(input)?;
        let t = super::workload(
            cx,
            input.conn(),
            &input.namespace,
            &input.kind,
            "k8s.rollout_undo",
        )
        .await?;
        let kind = t.kind.ar.kind.clone();
        let name = input.name.as_str();
        let label = t.shown(name);
        let api = t.api();
        let mut tries = 0;
        loop {
            tries += 1;
            let obj =
                to_value(crate::retry::read(cx, &format!("get {label}"), || api.get(name)).await?);
            let history = history(cx, &t, &obj).await?;
            let plan = if kind == "Deployment" {
                deployment_plan(&obj, &history, input.to_revision)
            } else {
                history_plan(&obj, &history, input.to_revision)
            }
            .map_err(|m| ActionError::permanent(format!("{label}: {m}")))?;
            let from = if kind == "Deployment" {
                revision_of_rs(&obj)
            } else {
                None
            };
            let (revision, template, mut ops) = match plan {
                Plan::Skip { revision } => {
                    cx.log.line(
                        LogStream::Stdout,
                        &format!("skipped rollback of {label} (current template already matches revision {revision})"),
                    );
                    return Ok(
                        json!({"kind": kind, "name": name, "namespace": t.ns(), "action": "skipped",
                        "from_revision": from, "to_revision": revision, "images": images(obj.pointer("/spec/template").unwrap_or(&Value::Null))}),
                    );
                }
                Plan::Patch {
                    revision,
                    template,
                    ops,
                } => (revision, template, ops),
            };
            ops.insert(
                0,
                json!({"op": "replace", "path": "/metadata/resourceVersion", "value": obj.pointer("/metadata/resourceVersion")}),
            );
            let ops: json_patch::Patch =
                serde_json::from_value(Value::Array(ops)).map_err(|e| {
                    ActionError::permanent(format!("internal: bad rollback patch: {e}"))
                })?;
            let pp = PatchParams {
                dry_run: cx.dry_run,
                ..Default::default()
            };
            let patch: Patch<()> = Patch::Json(ops);
            let what = format!("roll back {label}");
            match crate::retry::write_raw(cx, &what, || api.patch(name, &pp, &patch)).await {
                Ok(_) => {
                    cx.log.line(
                        LogStream::Stdout,
                        &if cx.dry_run {
                            format!("dry run (checked by the server): {label} would roll back to revision {revision}")
                        } else {
                            format!("{label} rolled back to revision {revision}")
                        },
                    );
                    return Ok(
                        json!({"kind": kind, "name": name, "namespace": t.ns(), "action": "rolled_back",
                        "from_revision": from, "to_revision": revision, "images": images(&template)}),
                    );
                }
                Err(e) if tries < 5 && api_status(&e).is_some_and(is_modified_conflict) => {
                    cx.log.line(
                        LogStream::Stderr,
                        &format!("{label} changed meanwhile (409 Conflict): reading it again"),
                    );
                }
                Err(e) => return Err(from_kube(&what, e)),
            }
        }
    }
}

/// The ReplicaSets (Deployment) or ControllerRevisions (StatefulSet, DaemonSet) matching the
/// workload's selector, as kubectl lists them.
async fn history(cx: &StepContext, t: &Target, obj: &Value) -> Result<Vec<Value>, ActionError> {
    let kind = if t.kind.ar.kind == "Deployment" {
        "ReplicaSet"
    } else {
        "ControllerRevision"
    };
    let k = crate::discovery::resolve(&t.conn, cx, Some("apps/v1"), kind).await?;
    let api = k.api(&t.conn.client, &t.ns);
    let mut lp = ListParams::default();
    if let Some(sel) = obj.pointer("/spec/selector").and_then(label_selector) {
        lp = lp.labels(&sel);
    }
    let what = format!(
        "list the {} of {}",
        k.resource(),
        t.shown(text(obj, "/metadata/name").unwrap_or(""))
    );
    let list = crate::retry::read(cx, &what, || api.list(&lp)).await?;
    Ok(list.items.into_iter().map(to_value).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rs(name: &str, rev: &str, image: &str, owner: &str) -> Value {
        json!({"metadata": {"name": name, "annotations": {"deployment.kubernetes.io/revision": rev, "note": format!("from {name}")},
            "ownerReferences": [{"kind": "Deployment", "name": "web", "uid": owner, "controller": true}]},
            "spec": {"template": {"metadata": {"labels": {"app": "web", "pod-template-hash": name}},
                "spec": {"containers": [{"name": "web", "image": image}]}}}})
    }

    fn deploy(image: &str) -> Value {
        json!({"metadata": {"name": "web", "uid": "d1", "annotations": {
                "deployment.kubernetes.io/revision": "3", "team": "dropped like kubectl does"}},
            "spec": {"template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": image}]}}}})
    }

    #[test]
    fn deployment_goes_to_the_second_newest_revision() {
        let rss = vec![
            rs("a", "1", "web:1", "d1"),
            rs("c", "3", "web:3", "d1"),
            rs("b", "2", "web:2", "d1"),
            rs("x", "9", "web:9", "someone-else"),
        ];
        match deployment_plan(&deploy("web:3"), &rss, None).unwrap() {
            Plan::Patch {
                revision,
                template,
                ops,
            } => {
                assert_eq!(revision, 2);
                assert_eq!(template["spec"]["containers"][0]["image"], "web:2");
                assert_eq!(template["metadata"]["labels"], json!({"app": "web"}));
                assert_eq!(ops[0]["op"], "replace");
                assert_eq!(ops[0]["path"], "/spec/template");
                assert_eq!(
                    ops[1]["value"],
                    json!({"deployment.kubernetes.io/revision": "3", "note": "from b"})
                );
            }
            other => panic!("{other:?}"),
        }
        match deployment_plan(&deploy("web:3"), &rss, Some(1)).unwrap() {
            Plan::Patch { revision, .. } => assert_eq!(revision, 1),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            deployment_plan(&deploy("web:3"), &rss, Some(7)).unwrap_err(),
            "unable to find specified revision 7 in history"
        );
        assert_eq!(
            deployment_plan(&deploy("web:2"), &rss, None).unwrap(),
            Plan::Skip { revision: 2 }
        );
        assert_eq!(
            deployment_plan(&deploy("web:1"), &rss[..1], None).unwrap_err(),
            "no rollout history found for deployment \"web\""
        );
        let mut paused = deploy("web:3");
        paused["spec"]["paused"] = json!(true);
        assert!(deployment_plan(&paused, &rss, None)
            .unwrap_err()
            .contains("paused"));
    }

    #[test]
    fn statefulset_from_controller_revisions() {
        let cr = |rev: i64, image: &str| {
            json!({"metadata": {"name": format!("db-{rev}"), "ownerReferences": [{"uid": "s1", "controller": true}]},
                "revision": rev,
                "data": {"spec": {"template": {"$patch": "replace", "metadata": {"labels": {"app": "db"}},
                    "spec": {"containers": [{"name": "db", "image": image}]}}}}})
        };
        let sts = json!({"metadata": {"name": "db", "uid": "s1"}, "spec": {"template": {"metadata": {"labels": {"app": "db"}},
            "spec": {"containers": [{"name": "db", "image": "db:2"}]}}}});
        let history = vec![cr(2, "db:2"), cr(1, "db:1")];
        match history_plan(&sts, &history, None).unwrap() {
            Plan::Patch {
                revision, template, ..
            } => {
                assert_eq!(revision, 1);
                assert!(template.get("$patch").is_none());
                assert_eq!(template["spec"]["containers"][0]["image"], "db:1");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            history_plan(&sts, &history, Some(2)).unwrap(),
            Plan::Skip { revision: 2 }
        );
        assert_eq!(
            history_plan(&sts, &history[..1], None).unwrap_err(),
            "no last revision to roll back to"
        );
    }
}
