//! `k8s.rollout_status`: kubectl's rollout status logic, on every update of the workload.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use opsbook_engine::action::{Action, ActionError, ActionSpec, LogStream, StepContext};
use opsbook_engine::model::DurationSpec;
use serde_json::{json, Value};

use crate::common::{annotation, condition, int, k8s_input, ms, parse, text};
use crate::scale::deployment;
use crate::target::to_value;
use crate::watch::{until, Outcome};

k8s_input! {
    /// Input of `k8s.rollout_status`.
    pub struct StatusInput {
        /// `Deployment` (default), `StatefulSet` or `DaemonSet`.
        #[serde(default = "deployment")]
        pub kind: String,
        /// The workload's name.
        pub name: String,
        /// How long to wait (default 5m).
        #[serde(default)]
        pub timeout: Option<DurationSpec>,
        /// Deployments: fail unless the running revision is this one (kubectl's `--revision`).
        #[serde(default)]
        pub revision: Option<i64>,
    }
}

/// Where a rollout is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Still rolling out: kubectl's waiting message.
    Waiting(String),
    /// Rolled out.
    Done(String),
    /// The rollout failed (progress deadline exceeded).
    Failed(String),
    /// The status cannot be followed (not a rolling update, another revision).
    Error(String),
}

/// kubectl's `DeploymentStatusViewer`, `DaemonSetStatusViewer` and `StatefulSetStatusViewer`.
pub fn verdict(kind: &str, obj: &Value, revision: Option<i64>) -> Verdict {
    let name = text(obj, "/metadata/name").unwrap_or("");
    let generation = int(obj, "/metadata/generation");
    let observed = int(obj, "/status/observedGeneration");
    let st = |f: &str| int(obj, &format!("/status/{f}"));
    let spec_replicas = obj.pointer("/spec/replicas").and_then(Value::as_i64);
    match kind {
        "Deployment" => {
            if let Some(want) = revision.filter(|r| *r > 0) {
                let running = annotation(obj, "deployment.kubernetes.io/revision")
                    .and_then(|r| r.parse::<i64>().ok());
                match running {
                    None => {
                        return Verdict::Error(format!(
                            "cannot get the revision of deployment \"{name}\""
                        ))
                    }
                    Some(r) if r != want => {
                        return Verdict::Error(format!(
                            "desired revision ({want}) is different from the running revision ({r})"
                        ))
                    }
                    _ => {}
                }
            }
            if generation > observed {
                return Verdict::Waiting(
                    "Waiting for deployment spec update to be observed...".into(),
                );
            }
            if condition(obj, "Progressing").and_then(|c| text(c, "/reason"))
                == Some("ProgressDeadlineExceeded")
            {
                return Verdict::Failed(format!(
                    "deployment \"{name}\" exceeded its progress deadline"
                ));
            }
            let updated = st("updatedReplicas");
            if let Some(want) = spec_replicas {
                if updated < want {
                    return Verdict::Waiting(format!(
                        "Waiting for deployment \"{name}\" rollout to finish: {updated} out of {want} new replicas have been updated..."
                    ));
                }
            }
            if st("replicas") > updated {
                return Verdict::Waiting(format!(
                    "Waiting for deployment \"{name}\" rollout to finish: {} old replicas are pending termination...",
                    st("replicas") - updated
                ));
            }
            if st("availableReplicas") < updated {
                return Verdict::Waiting(format!(
                    "Waiting for deployment \"{name}\" rollout to finish: {} of {updated} updated replicas are available...",
                    st("availableReplicas")
                ));
            }
            Verdict::Done(format!("deployment \"{name}\" successfully rolled out"))
        }
        "DaemonSet" => {
            let strategy = text(obj, "/spec/updateStrategy/type").unwrap_or("RollingUpdate");
            if strategy != "RollingUpdate" {
                return Verdict::Error(
                    "rollout status is only available for RollingUpdate strategy type".into(),
                );
            }
            if generation > observed {
                return Verdict::Waiting(
                    "Waiting for daemon set spec update to be observed...".into(),
                );
            }
            let desired = st("desiredNumberScheduled");
            if st("updatedNumberScheduled") < desired {
                return Verdict::Waiting(format!(
                    "Waiting for daemon set \"{name}\" rollout to finish: {} out of {desired} new pods have been updated...",
                    st("updatedNumberScheduled")
                ));
            }
            if st("numberAvailable") < desired {
                return Verdict::Waiting(format!(
                    "Waiting for daemon set \"{name}\" rollout to finish: {} of {desired} updated pods are available...",
                    st("numberAvailable")
                ));
            }
            Verdict::Done(format!("daemon set \"{name}\" successfully rolled out"))
        }
        "StatefulSet" => {
            let strategy = text(obj, "/spec/updateStrategy/type").unwrap_or("RollingUpdate");
            if strategy != "RollingUpdate" {
                return Verdict::Error(
                    "rollout status is only available for RollingUpdate strategy type".into(),
                );
            }
            if observed == 0 || generation > observed {
                return Verdict::Waiting(
                    "Waiting for statefulset spec update to be observed...".into(),
                );
            }
            if let Some(want) = spec_replicas {
                if st("readyReplicas") < want {
                    return Verdict::Waiting(format!(
                        "Waiting for {} pods to be ready...",
                        want - st("readyReplicas")
                    ));
                }
            }
            let updated = st("updatedReplicas");
            if let Some(ru) = obj
                .pointer("/spec/updateStrategy/rollingUpdate")
                .filter(|v| !v.is_null())
            {
                if let (Some(want), Some(partition)) =
                    (spec_replicas, ru.get("partition").and_then(Value::as_i64))
                {
                    if updated < want - partition {
                        return Verdict::Waiting(format!(
                            "Waiting for partitioned roll out to finish: {updated} out of {} new pods have been updated...",
                            want - partition
                        ));
                    }
                }
                return Verdict::Done(format!(
                    "partitioned roll out complete: {updated} new pods have been updated..."
                ));
            }
            let update_rev = text(obj, "/status/updateRevision").unwrap_or("");
            if update_rev != text(obj, "/status/currentRevision").unwrap_or("") {
                return Verdict::Waiting(format!(
                    "waiting for statefulset rolling update to complete {updated} pods at revision {update_rev}..."
                ));
            }
            Verdict::Done(format!(
                "statefulset rolling update complete {} pods at revision {}...",
                st("currentReplicas"),
                text(obj, "/status/currentRevision").unwrap_or("")
            ))
        }
        other => Verdict::Error(format!("no rollout status for {other}")),
    }
}

const DOC: &str = "Waits until a Deployment, StatefulSet or DaemonSet is rolled out, with \
kubectl's exact logic (observedGeneration first, then updated, old and available replicas), \
re-checked on every update of the object (list + watch). A Deployment whose `Progressing` \
condition says `ProgressDeadlineExceeded` fails at once: the error says `deployment \"web\" \
exceeded its progress deadline` with the condition's message, and its details carry \
`reason`, `unavailable_replicas`, `revision` and `new_pods` (the health of the new revision's \
pods: CrashLoopBackOff, ImagePullBackOff …), which is what an auto-rollback runbook tests. \
At `timeout` (default 5m) the step fails with kubectl's last waiting message and the same \
details. Result: `kind`, `name`, `namespace`, `done`, `message`, `revision`, `status` (the \
workload's status), `elapsed_ms`. `--dry-run`: reads the status once and reports it \
(`done` true or false) without waiting or failing.";

/// `k8s.rollout_status`.
pub struct RolloutStatus;

fn lines(v: &Verdict) -> &str {
    match v {
        Verdict::Waiting(m) | Verdict::Done(m) | Verdict::Failed(m) | Verdict::Error(m) => m,
    }
}

#[async_trait]
impl Action for RolloutStatus {
    fn spec(&self) -> ActionSpec {
        ActionSpec::new::<StatusInput, Value>(
            "k8s.rollout_status",
            "Wait until a Deployment, StatefulSet or DaemonSet is rolled out, or fail with why.",
            DOC,
        )
        .with_check()
    }

    async fn run(&self, input: Value, cx: &StepContext) -> Result<Value, ActionError> {
        let input: StatusInput = parse(input)?;
        let started = Instant::now();
        let t = super::workload(
            cx,
            input.conn(),
            &input.namespace,
            &input.kind,
            "k8s.rollout_status",
        )
        .await?;
        let kind = t.kind.ar.kind.clone();
        let name = input.name.as_str();
        let label = t.shown(name);
        let api = t.api();
        let timeout = input
            .timeout
            .map(|d| d.get())
            .unwrap_or(Duration::from_secs(300));
        let result = |obj: &Value, done: bool, message: &str| {
            json!({
                "kind": kind, "name": name, "namespace": t.ns(), "done": done, "message": message,
                "revision": annotation(obj, "deployment.kubernetes.io/revision")
                    .and_then(|r| r.parse::<i64>().ok()),
                "status": obj.get("status").cloned().unwrap_or(Value::Null),
                "elapsed_ms": ms(started),
            })
        };
        if cx.dry_run {
            let obj =
                to_value(crate::retry::read(cx, &format!("get {label}"), || api.get(name)).await?);
            let v = verdict(&kind, &obj, input.revision);
            let done = matches!(v, Verdict::Done(_));
            cx.log.line(
                LogStream::Stdout,
                &format!("dry run: now: {}; not waiting", lines(&v)),
            );
            return Ok(result(&obj, done, lines(&v)));
        }
        let mut last_message = String::new();
        let what = format!("the rollout of {label}");
        let outcome = until(cx, api, name, timeout, &what, |obj| {
            let Some(obj) = obj else {
                return Err(ActionError::permanent(format!(
                    "{label} does not exist (or was deleted)"
                ))
                .with_details(json!({"code": 404, "reason": "NotFound"})));
            };
            let v = verdict(&kind, obj, input.revision);
            if lines(&v) != last_message {
                last_message = lines(&v).to_string();
                cx.log.line(LogStream::Stdout, &last_message);
            }
            Ok(match v {
                Verdict::Waiting(_) => None,
                Verdict::Error(m) => return Err(ActionError::permanent(format!("{label}: {m}"))),
                other => Some((other, obj.clone())),
            })
        })
        .await?;
        let (obj, failure) = match outcome {
            Outcome::Done((Verdict::Done(m), obj)) => return Ok(result(&obj, true, &m)),
            Outcome::Done((v, obj)) => {
                let cond = crate::common::condition(&obj, "Progressing").cloned();
                let why = cond
                    .as_ref()
                    .and_then(|c| text(c, "/message"))
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default();
                (obj, ActionError::permanent(format!("{}{why}", lines(&v))))
            }
            Outcome::TimedOut(last) => {
                let obj = last.unwrap_or(Value::Null);
                (
                    obj,
                    ActionError::retryable(format!(
                        "{label} was not rolled out within {}: {}",
                        opsbook_engine::model::format_duration(timeout),
                        if last_message.is_empty() {
                            "no status seen"
                        } else {
                            last_message.trim_end_matches("...")
                        }
                    )),
                )
            }
        };
        let pods = super::new_pods(cx, &t, &obj).await;
        let unhealthy: Vec<String> = pods
            .iter()
            .filter(|p| p["reasons"].as_array().is_some_and(|r| !r.is_empty()))
            .map(|p| {
                format!(
                    "{} {}",
                    p["name"].as_str().unwrap_or(""),
                    p["reasons"]
                        .as_array()
                        .map(|r| r
                            .iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join("/"))
                        .unwrap_or_default()
                )
            })
            .collect();
        let unavailable = int(&obj, "/status/unavailableReplicas");
        let mut message = failure.message.clone();
        if unavailable > 0 {
            message.push_str(&format!("; {unavailable} unavailable replica(s)"));
        }
        if !unhealthy.is_empty() {
            message.push_str(&format!("; new pods: {}", unhealthy.join(", ")));
        }
        let reason = crate::common::condition(&obj, "Progressing")
            .and_then(|c| text(c, "/reason"))
            .map(str::to_string);
        let details = json!({
            "reason": if matches!(failure.kind, opsbook_engine::action::ErrorKind::Retryable) { Some("Timeout".to_string()) } else { reason },
            "unavailable_replicas": unavailable,
            "revision": annotation(&obj, "deployment.kubernetes.io/revision").and_then(|r| r.parse::<i64>().ok()),
            "conditions": obj.pointer("/status/conditions"),
            "new_pods": pods,
            "last_message": last_message,
        });
        let mut e = failure;
        e.message = message;
        Err(e.with_details(details))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deploy(generation: i64, status: Value) -> Value {
        json!({"metadata": {"name": "web", "generation": generation,
            "annotations": {"deployment.kubernetes.io/revision": "2"}},
            "spec": {"replicas": 3}, "status": status})
    }

    #[test]
    fn deployment_like_kubectl() {
        let w = |d: &Value| verdict("Deployment", d, None);
        assert_eq!(
            w(&deploy(2, json!({"observedGeneration": 1}))),
            Verdict::Waiting("Waiting for deployment spec update to be observed...".into())
        );
        assert_eq!(
            w(&deploy(2, json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 1}))),
            Verdict::Waiting("Waiting for deployment \"web\" rollout to finish: 1 out of 3 new replicas have been updated...".into())
        );
        assert_eq!(
            w(&deploy(2, json!({"observedGeneration": 2, "replicas": 4, "updatedReplicas": 3}))),
            Verdict::Waiting("Waiting for deployment \"web\" rollout to finish: 1 old replicas are pending termination...".into())
        );
        assert_eq!(
            w(&deploy(2, json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 2}))),
            Verdict::Waiting("Waiting for deployment \"web\" rollout to finish: 2 of 3 updated replicas are available...".into())
        );
        assert_eq!(
            w(&deploy(
                2,
                json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3})
            )),
            Verdict::Done("deployment \"web\" successfully rolled out".into())
        );
        let stuck = deploy(
            2,
            json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 1,
            "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]}),
        );
        assert_eq!(
            w(&stuck),
            Verdict::Failed("deployment \"web\" exceeded its progress deadline".into())
        );
        // Not observed yet: the old condition does not count.
        let mut old = stuck.clone();
        old["metadata"]["generation"] = json!(3);
        assert!(matches!(w(&old), Verdict::Waiting(_)));
        assert_eq!(
            verdict(
                "Deployment",
                &deploy(1, json!({"observedGeneration": 1})),
                Some(5)
            ),
            Verdict::Error(
                "desired revision (5) is different from the running revision (2)".into()
            )
        );
    }

    #[test]
    fn statefulset_and_daemonset_like_kubectl() {
        let sts = |spec: Value, status: Value| json!({"metadata": {"name": "db", "generation": 1}, "spec": spec, "status": status});
        assert_eq!(
            verdict(
                "StatefulSet",
                &sts(json!({"replicas": 3}), json!({"observedGeneration": 0})),
                None
            ),
            Verdict::Waiting("Waiting for statefulset spec update to be observed...".into())
        );
        assert_eq!(
            verdict(
                "StatefulSet",
                &sts(
                    json!({"replicas": 3}),
                    json!({"observedGeneration": 1, "readyReplicas": 1})
                ),
                None
            ),
            Verdict::Waiting("Waiting for 2 pods to be ready...".into())
        );
        assert_eq!(
            verdict(
                "StatefulSet",
                &sts(
                    json!({"replicas": 3}),
                    json!({"observedGeneration": 1, "readyReplicas": 3,
                "updatedReplicas": 1, "updateRevision": "db-2", "currentRevision": "db-1"})
                ),
                None
            ),
            Verdict::Waiting(
                "waiting for statefulset rolling update to complete 1 pods at revision db-2..."
                    .into()
            )
        );
        assert_eq!(
            verdict(
                "StatefulSet",
                &sts(
                    json!({"replicas": 3}),
                    json!({"observedGeneration": 1, "readyReplicas": 3,
                "currentReplicas": 3, "updateRevision": "db-2", "currentRevision": "db-2"})
                ),
                None
            ),
            Verdict::Done("statefulset rolling update complete 3 pods at revision db-2...".into())
        );
        assert_eq!(
            verdict("StatefulSet", &sts(json!({"replicas": 3, "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 1}}}),
                json!({"observedGeneration": 1, "readyReplicas": 3, "updatedReplicas": 1})), None),
            Verdict::Waiting("Waiting for partitioned roll out to finish: 1 out of 2 new pods have been updated...".into())
        );
        assert!(matches!(
            verdict(
                "StatefulSet",
                &sts(json!({"updateStrategy": {"type": "OnDelete"}}), json!({})),
                None
            ),
            Verdict::Error(_)
        ));
        let ds = |status: Value| json!({"metadata": {"name": "agent", "generation": 1}, "spec": {}, "status": status});
        assert_eq!(
            verdict("DaemonSet", &ds(json!({"observedGeneration": 1, "desiredNumberScheduled": 3, "updatedNumberScheduled": 2})), None),
            Verdict::Waiting("Waiting for daemon set \"agent\" rollout to finish: 2 out of 3 new pods have been updated...".into())
        );
        assert_eq!(
            verdict(
                "DaemonSet",
                &ds(
                    json!({"observedGeneration": 1, "desiredNumberScheduled": 3, "updatedNumberScheduled": 3, "numberAvailable": 3})
                ),
                None
            ),
            Verdict::Done("daemon set \"agent\" successfully rolled out".into())
        );
    }
}
