//! `k8s.delete`: by name or selector, with a grace period, Background propagation, and a wait
//! until the objects are gone.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use kube::api::{DeleteParams, ListParams, PropagationPolicy};
use opsbook_engine::action::{Action, ActionError, ActionSpec, LogStream, Registry, StepContext};
use opsbook_engine::model::DurationSpec;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::common::{k8s_input, ms, parse, selector, Selector};
use crate::error::{from_kube, status};
use crate::target::Target;

pub(crate) fn register(r: &mut Registry) {
    r.register(Delete);
}

/// What happens to the objects the deleted one owns.
#[derive(Debug, Clone, Copy, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Propagation {
    /// Deleted by the garbage collector after the owner is gone (kubectl's default).
    #[default]
    Background,
    /// Deleted before the owner is.
    Foreground,
    /// Left behind.
    Orphan,
}

k8s_input! {
    /// Input of `k8s.delete`.
    pub struct DeleteInput {
        /// The kind: `Pod`, or its plural or short name.
        pub kind: String,
        /// The API version (`apps/v1`); needed for kinds outside the built-in table.
        #[serde(default)]
        pub api_version: Option<String>,
        /// The object's name (or give `labels`/`fields`).
        #[serde(default)]
        pub name: Option<String>,
        /// Label selector of the objects to delete: text or a mapping.
        #[serde(default)]
        pub labels: Option<Selector>,
        /// Field selector of the objects to delete: text or a mapping.
        #[serde(default)]
        pub fields: Option<Selector>,
        /// Refuse (and delete nothing) when the selector matches more objects than this.
        #[serde(default)]
        #[schemars(range(min = 1))]
        pub max_objects: Option<usize>,
        /// Grace period (pods: time to stop; `0s` deletes at once).
        #[serde(default)]
        pub grace_period: Option<DurationSpec>,
        /// What happens to owned objects: `background` (default), `foreground`, `orphan`.
        #[serde(default)]
        pub propagation: Propagation,
        /// Wait until the objects are gone (default true, like kubectl).
        #[serde(default = "yes")]
        pub wait: bool,
        /// How long `wait` may take (default 2m).
        #[serde(default)]
        pub timeout: Option<DurationSpec>,
        /// Succeed when the object does not exist (default: fail with NotFound).
        #[serde(default)]
        pub missing_ok: bool,
    }
}

fn yes() -> bool {
    true
}

const DOC: &str = "Deletes the object `name`, or every object the `labels`/`fields` selector \
matches in the namespace (listed first, then deleted one by one, like `kubectl delete -l`; \
`max_objects` guards against a selector that matches too much). Owned objects go with \
`propagation: background` (the default; a Job's pods too), `foreground` or `orphan`. \
`grace_period` gives pods time to stop. With `wait` (default true) the step waits, up to \
`timeout` (default 2m), until every object is gone (finalizers done) and fails naming those \
still there. A missing `name` fails unless `missing_ok: true`. Result: `deleted` (each `kind`, \
`name`, `namespace`, `uid`), `count`, `gone` (whether the wait saw them go), `elapsed_ms`. \
`--dry-run`: the server checks each deletion (`dryRun=All`) and deletes nothing.";

/// `k8s.delete`.
pub struct Delete;

#[async_trait]
impl Action for Delete {
    fn spec(&self) -> ActionSpec {
        ActionSpec::new::<DeleteInput, Value>(
            "k8s.delete",
            "Delete Kubernetes objects by name or selector, and wait until they are gone.",
            DOC,
        )
        .with_check()
    }

    async fn run(&self, input: Value, cx: &StepContext) -> Result<Value, ActionError> {
        let input: DeleteInput = parse(input)?;
        let started = Instant::now();
        let labels = selector(&input.labels);
        let fields = selector(&input.fields);
        if input.name.is_none() && labels.is_none() && fields.is_none() {
            return Err(ActionError::permanent(
                "give `name`, or `labels`/`fields` to select the objects to delete",
            ));
        }
        let t = Target::new(
            cx,
            input.conn(),
            &input.namespace,
            input.api_version.as_deref(),
            &input.kind,
        )
        .await?;
        let api = t.api();
        let names: Vec<String> = match &input.name {
            Some(n) => vec![n.clone()],
            None => {
                let mut lp = ListParams::default();
                if let Some(l) = &labels {
                    lp = lp.labels(l);
                }
                if let Some(f) = &fields {
                    lp = lp.fields(f);
                }
                let what = format!("list {} to delete", t.kind.resource());
                let list = crate::retry::read(cx, &what, || api.list(&lp)).await?;
                let names: Vec<String> = list
                    .items
                    .iter()
                    .map(|o| o.metadata.name.clone().unwrap_or_default())
                    .collect();
                if let Some(max) = input.max_objects {
                    if names.len() > max {
                        return Err(ActionError::permanent(format!(
                            "the selector matches {} {} (more than max_objects: {max}); nothing deleted",
                            names.len(),
                            t.kind.resource()
                        ))
                        .with_details(json!({"matched": names})));
                    }
                }
                names
            }
        };
        let dp = DeleteParams {
            dry_run: cx.dry_run,
            grace_period_seconds: input
                .grace_period
                .map(|g| g.get().as_secs_f64().ceil() as u32),
            propagation_policy: Some(match input.propagation {
                Propagation::Background => PropagationPolicy::Background,
                Propagation::Foreground => PropagationPolicy::Foreground,
                Propagation::Orphan => PropagationPolicy::Orphan,
            }),
            ..Default::default()
        };
        let mut deleted: Vec<(String, Option<String>)> = Vec::new();
        for name in &names {
            let what = format!("delete {}", t.shown(name));
            match crate::retry::write_raw(cx, &what, || api.delete(name, &dp)).await {
                Ok(either) => {
                    let uid = match either {
                        either::Either::Left(o) => o.metadata.uid,
                        either::Either::Right(s) => {
                            s.details.map(|d| d.uid).filter(|u| !u.is_empty())
                        }
                    };
                    cx.log.line(
                        LogStream::Stdout,
                        &if cx.dry_run {
                            format!(
                                "dry run (checked by the server): {} would be deleted",
                                t.shown(name)
                            )
                        } else {
                            format!("deleted {}", t.shown(name))
                        },
                    );
                    deleted.push((name.clone(), uid));
                }
                Err(e)
                    if status(&e).is_some_and(|s| s.code == 404)
                        && (input.missing_ok || input.name.is_none()) =>
                {
                    cx.log.line(
                        LogStream::Stdout,
                        &format!("{} was already gone", t.shown(name)),
                    );
                }
                Err(e) => {
                    let err = from_kube(&what, e);
                    let mut d = err.details.clone();
                    d["deleted"] = json!(deleted.iter().map(|(n, _)| n).collect::<Vec<_>>());
                    return Err(err.with_details(d));
                }
            }
        }
        let mut gone = false;
        if input.wait && !cx.dry_run && !deleted.is_empty() {
            let timeout = input
                .timeout
                .map(|d| d.get())
                .unwrap_or(Duration::from_secs(120));
            let deadline = Instant::now() + timeout;
            let mut left = Vec::new();
            for (name, uid) in &deleted {
                let remaining = deadline.saturating_duration_since(Instant::now());
                let what = format!("the deletion of {}", t.shown(name));
                if let Some(last) =
                    crate::watch::gone(cx, api.clone(), name, uid.as_deref(), remaining, &what)
                        .await?
                {
                    left.push(
                        json!({"name": name, "finalizers": last.pointer("/metadata/finalizers")}),
                    );
                }
            }
            if !left.is_empty() {
                let shown: Vec<&str> = left
                    .iter()
                    .map(|l| l["name"].as_str().unwrap_or(""))
                    .collect();
                return Err(ActionError::retryable(format!(
                    "{} {} still there after {}s: {}",
                    left.len(),
                    t.kind.resource(),
                    timeout.as_secs(),
                    shown.join(", ")
                ))
                .with_details(json!({"still_there": left})));
            }
            gone = true;
            cx.log
                .line(LogStream::Stdout, &format!("{} gone", deleted.len()));
        }
        let list: Vec<Value> = deleted
            .iter()
            .map(|(n, uid)| json!({"kind": t.kind.ar.kind, "name": n, "namespace": t.ns(), "uid": uid}))
            .collect();
        Ok(json!({"deleted": list, "count": list.len(), "gone": gone, "elapsed_ms": ms(started)}))
    }
}
