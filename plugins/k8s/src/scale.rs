//! `k8s.scale`: set the replicas of a Deployment, StatefulSet, ReplicaSet or any kind with a
//! `scale` subresource.

use async_trait::async_trait;
use kube::api::{Patch, PatchParams};
use opsbook_engine::action::{Action, ActionError, ActionSpec, LogStream, Registry, StepContext};
use serde_json::{json, Value};

use crate::common::{k8s_input, parse, FIELD_MANAGER};
use crate::error::{from_kube, is_modified_conflict, status};
use crate::target::Target;

pub(crate) fn register(r: &mut Registry) {
    r.register(Scale);
}

pub(crate) fn deployment() -> String {
    "Deployment".into()
}

k8s_input! {
    /// Input of `k8s.scale`.
    pub struct ScaleInput {
        /// The kind (default `Deployment`): any kind with a `scale` subresource.
        #[serde(default = "deployment")]
        pub kind: String,
        /// The API version; needed for kinds outside the built-in table.
        #[serde(default)]
        pub api_version: Option<String>,
        /// The object's name.
        pub name: String,
        /// The number of replicas wanted.
        pub replicas: u32,
        /// Scale only if it has this many replicas now (kubectl's `--current-replicas`).
        #[serde(default)]
        pub current_replicas: Option<u32>,
    }
}

const DOC: &str = "Sets `spec.replicas` through the `scale` subresource (what `kubectl scale` \
does): reads the current scale, then patches it conditionally on the object's \
resourceVersion; a concurrent change (409 Conflict) makes it read again and retry (up to 5 \
times). `current_replicas` refuses to scale when the count is not what the runbook expects. \
Result: `kind`, `name`, `namespace`, `previous`, `desired`, `changed`. `--dry-run`: the server \
checks the patch (`dryRun=All`) and nothing changes.";

/// `k8s.scale`.
pub struct Scale;

#[async_trait]
impl Action for Scale {
    fn spec(&self) -> ActionSpec {
        ActionSpec::new::<ScaleInput, Value>(
            "k8s.scale",
            "Scale a Deployment, StatefulSet or other scalable kind.",
            DOC,
        )
        .with_check()
    }

    async fn run(&self, input: Value, cx: &StepContext) -> Result<Value, ActionError> {
        let input: ScaleInput = parse(input)?;
        let t = Target::new(
            cx,
            input.conn(),
            &input.namespace,
            input.api_version.as_deref(),
            &input.kind,
        )
        .await?;
        if !t.kind.subresources.iter().any(|s| s == "scale") {
            return Err(ActionError::permanent(format!(
                "{} has no scale subresource: it cannot be scaled",
                t.kind.resource()
            )));
        }
        let api = t.api();
        let name = input.name.as_str();
        let label = t.shown(name);
        let Ok(desired) = i32::try_from(input.replicas) else {
            return Err(ActionError::permanent(format!(
                "`replicas`: {} is more than Kubernetes takes ({})",
                input.replicas,
                i32::MAX
            )));
        };
        let mut tries = 0;
        loop {
            tries += 1;
            let scale = crate::retry::read(cx, &format!("get the scale of {label}"), || {
                api.get_scale(name)
            })
            .await?;
            let previous = scale.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
            if let Some(expected) = input.current_replicas {
                if i64::from(previous) != i64::from(expected) {
                    return Err(ActionError::permanent(format!(
                        "{label} has {previous} replicas, not {expected} (current_replicas): not scaled"
                    ))
                    .with_details(json!({"previous": previous, "expected": expected})));
                }
            }
            let result = |changed: bool| {
                json!({"kind": t.kind.ar.kind, "name": name, "namespace": t.ns(),
                    "previous": previous, "desired": desired, "changed": changed})
            };
            if previous == desired {
                cx.log.line(
                    LogStream::Stdout,
                    &format!("{label} already has {desired} replicas"),
                );
                return Ok(result(false));
            }
            let pp = PatchParams {
                field_manager: Some(FIELD_MANAGER.into()),
                dry_run: cx.dry_run,
                ..Default::default()
            };
            let body = json!({
                "metadata": {"resourceVersion": scale.metadata.resource_version},
                "spec": {"replicas": desired},
            });
            let patch = Patch::Merge(&body);
            let what = format!("scale {label}");
            match crate::retry::write_raw(cx, &what, || api.patch_scale(name, &pp, &patch)).await {
                Ok(_) => {
                    cx.log.line(
                        LogStream::Stdout,
                        &if cx.dry_run {
                            format!("dry run (checked by the server): {label} would go from {previous} to {desired} replicas")
                        } else {
                            format!("scaled {label} from {previous} to {desired} replicas")
                        },
                    );
                    return Ok(result(true));
                }
                Err(e) if tries < 5 && status(&e).is_some_and(is_modified_conflict) => {
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
