//! Rollouts of Deployments, StatefulSets and DaemonSets the way kubectl does them:
//! `k8s.rollout_restart` (here), `k8s.rollout_status` (`status`), `k8s.rollout_undo` (`undo`).

mod status;
mod undo;

use async_trait::async_trait;
use kube::api::{ListParams, Patch, PatchParams};
use opsbook_engine::action::{Action, ActionError, ActionSpec, LogStream, Registry, StepContext};
use serde_json::{json, Value};

use crate::common::{k8s_input, label_selector, now_rfc3339, parse, FIELD_MANAGER};
use crate::error::{from_kube, is_modified_conflict, status as api_status};
use crate::health;
use crate::scale::deployment;
use crate::target::{to_value, Target};

pub(crate) fn register(r: &mut Registry) {
    r.register(Restart);
    r.register(status::RolloutStatus);
    r.register(undo::RolloutUndo);
}

/// The annotation `kubectl rollout restart` sets on the pod template.
pub const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";

k8s_input! {
    /// Names a workload: `kind` (default Deployment) and `name`.
    pub struct WorkloadInput {
        /// `Deployment` (default), `StatefulSet` or `DaemonSet` (or their short names).
        #[serde(default = "deployment")]
        pub kind: String,
        /// The workload's name.
        pub name: String,
    }
}

/// The workload's kind, refusing others.
pub(crate) async fn workload(
    cx: &StepContext,
    conn: crate::client::ConnInput<'_>,
    namespace: &Option<String>,
    kind: &str,
    verb: &str,
) -> Result<Target, ActionError> {
    let t = Target::new(cx, conn, namespace, None, kind).await?;
    match t.kind.ar.kind.as_str() {
        "Deployment" | "StatefulSet" | "DaemonSet" if t.kind.ar.group == "apps" => Ok(t),
        other => Err(ActionError::permanent(format!(
            "{verb} works on Deployments, StatefulSets and DaemonSets, not {other}"
        ))),
    }
}

/// The pods of a workload's current revision (all its pods when that cannot be told), with
/// their health: what a failed rollout shows.
pub(crate) async fn new_pods(cx: &StepContext, t: &Target, obj: &Value) -> Vec<Value> {
    let Some(mut sel) = obj.pointer("/spec/selector").and_then(label_selector) else {
        return Vec::new();
    };
    let uid = obj
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("");
    match t.kind.ar.kind.as_str() {
        "Deployment" => {
            let rev = crate::common::annotation(obj, "deployment.kubernetes.io/revision");
            if let Ok(rs_kind) =
                crate::discovery::resolve(&t.conn, cx, Some("apps/v1"), "ReplicaSet").await
            {
                let api = rs_kind.api(&t.conn.client, &t.ns);
                if let Ok(list) = api.list(&ListParams::default().labels(&sel)).await {
                    let new_rs = list.items.into_iter().map(to_value).find(|rs| {
                        crate::common::controlled_by(rs, uid)
                            && crate::common::annotation(rs, "deployment.kubernetes.io/revision")
                                == rev
                    });
                    if let Some(hash) = new_rs
                        .as_ref()
                        .and_then(|rs| {
                            rs.pointer("/spec/template/metadata/labels/pod-template-hash")
                        })
                        .and_then(Value::as_str)
                    {
                        sel.push_str(&format!(",pod-template-hash={hash}"));
                    }
                }
            }
        }
        "StatefulSet" => {
            if let Some(rev) = obj
                .pointer("/status/updateRevision")
                .and_then(Value::as_str)
            {
                sel.push_str(&format!(",controller-revision-hash={rev}"));
            }
        }
        _ => {}
    }
    let Ok(pod_kind) = crate::discovery::resolve(&t.conn, cx, Some("v1"), "Pod").await else {
        return Vec::new();
    };
    let api = pod_kind.api(&t.conn.client, &t.ns);
    match api.list(&ListParams::default().labels(&sel)).await {
        Ok(list) => list
            .items
            .into_iter()
            .take(20)
            .map(|p| {
                let p = crate::common::present(to_value(p), "v1", "Pod");
                health::brief(&health::with_health(p, health::Options::default()))
            })
            .collect(),
        Err(_) => Vec::new(),
    }
}

const RESTART_DOC: &str = "Restarts every pod of a Deployment, StatefulSet or DaemonSet with a \
rolling update, as `kubectl rollout restart` does: sets the pod template annotation \
`kubectl.kubernetes.io/restartedAt` to now (RFC 3339, seconds) with a strategic merge patch, \
conditional on the object's resourceVersion (a concurrent change makes it read again and \
retry). A paused Deployment is refused (resume it first). Follow with `k8s.rollout_status` to \
wait for the new pods. Result: `kind`, `name`, `namespace`, `restarted_at`, `generation`. \
`--dry-run`: the server checks the patch (`dryRun=All`) and nothing restarts.";

/// `k8s.rollout_restart`.
pub struct Restart;

#[async_trait]
impl Action for Restart {
    fn spec(&self) -> ActionSpec {
        ActionSpec::new::<WorkloadInput, Value>(
            "k8s.rollout_restart",
            "Restart the pods of a Deployment, StatefulSet or DaemonSet (kubectl rollout restart).",
            RESTART_DOC,
        )
        .with_check()
    }

    async fn run(&self, input: Value, cx: &StepContext) -> Result<Value, ActionError> {
        let input: WorkloadInput = parse(input)?;
        let t = workload(
            cx,
            input.conn(),
            &input.namespace,
            &input.kind,
            "k8s.rollout_restart",
        )
        .await?;
        let api = t.api();
        let name = input.name.as_str();
        let label = t.shown(name);
        let mut tries = 0;
        loop {
            tries += 1;
            let obj =
                to_value(crate::retry::read(cx, &format!("get {label}"), || api.get(name)).await?);
            if t.kind.ar.kind == "Deployment" && obj.pointer("/spec/paused") == Some(&json!(true)) {
                return Err(ActionError::permanent(format!(
                    "can't restart paused deployment {label} (resume it first)"
                )));
            }
            let at = now_rfc3339();
            let body = json!({
                "metadata": {"resourceVersion": obj.pointer("/metadata/resourceVersion")},
                "spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: at}}}},
            });
            let pp = PatchParams {
                field_manager: Some(FIELD_MANAGER.into()),
                dry_run: cx.dry_run,
                ..Default::default()
            };
            let patch = Patch::Strategic(&body);
            let what = format!("restart {label}");
            match crate::retry::write_raw(cx, &what, || api.patch(name, &pp, &patch)).await {
                Ok(after) => {
                    let after = to_value(after);
                    cx.log.line(
                        LogStream::Stdout,
                        &if cx.dry_run {
                            format!("dry run (checked by the server): {label} would restart")
                        } else {
                            format!("{label} restarted")
                        },
                    );
                    return Ok(json!({
                        "kind": t.kind.ar.kind, "name": name, "namespace": t.ns(),
                        "restarted_at": at, "generation": after.pointer("/metadata/generation"),
                    }));
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
