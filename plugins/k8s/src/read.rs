//! `k8s.get` and `k8s.list`: any kind by `apiVersion`/`kind` (resolved through discovery), with
//! selectors and all namespaces; pods get a computed `health`.

use async_trait::async_trait;
use base64::Engine as _;
use kube::api::ListParams;
use opsbook_engine::action::{Action, ActionError, ActionSpec, LogStream, Registry, StepContext};
use serde_json::{json, Value};

use crate::common::{k8s_input, parse, selector, Selector};
use crate::health;
use crate::target::Target;

pub(crate) fn register(r: &mut Registry) {
    r.register(Get);
    r.register(List);
}

k8s_input! {
    /// Input of `k8s.get`.
    pub struct GetInput {
        /// The kind: `Deployment`, or its plural or short name (`deployments`, `deploy`).
        pub kind: String,
        /// The API version (`apps/v1`); needed for kinds outside the built-in table (custom
        /// resources), found through discovery otherwise.
        #[serde(default)]
        pub api_version: Option<String>,
        /// The object's name.
        pub name: String,
        /// Succeed with `found: false` when the object does not exist (default: fail).
        #[serde(default)]
        pub missing_ok: bool,
        /// Pods: more restarts than this makes a pod unhealthy (`TooManyRestarts`).
        #[serde(default)]
        pub max_restarts: Option<i64>,
    }
}

k8s_input! {
    /// Input of `k8s.list`.
    pub struct ListInput {
        /// The kind: `Pod`, or its plural or short name (`pods`, `po`).
        pub kind: String,
        /// The API version (`apps/v1`); needed for kinds outside the built-in table.
        #[serde(default)]
        pub api_version: Option<String>,
        /// Label selector: `app=web,tier!=db`, `env in (prod,stage)`, or a mapping `{app: web}`.
        #[serde(default)]
        pub labels: Option<Selector>,
        /// Field selector: `status.phase=Running`, `spec.nodeName=n1`, or a mapping.
        #[serde(default)]
        pub fields: Option<Selector>,
        /// List in every namespace (`namespace` is then ignored).
        #[serde(default)]
        pub all_namespaces: bool,
        /// At most this many objects (default: all, read 500 per page).
        #[serde(default)]
        #[schemars(range(min = 1))]
        pub limit: Option<usize>,
        /// Pods: more restarts than this makes a pod unhealthy (`TooManyRestarts`).
        #[serde(default)]
        pub max_restarts: Option<i64>,
    }
}

const COMMON_DOC: &str = "The cluster comes from the kubeconfig (`kubeconfig`, else `KUBECONFIG` \
of the step's environment, else `~/.kube/config`, else the in-cluster service account) with \
`context` and `namespace` per step; one client per kubeconfig and context is shared by the run. \
Errors carry the API's Status (`NotFound (404): deployments.apps \"web\" not found`) and its \
`code`, `reason` and `message` in the details.";

const HEALTH_DOC: &str = "Pods get a computed `health`: `phase`, `ready`, `restarts`, \
`containers` (each `name`, `init`, `ready`, `restarts`, `state`, `reason`, `exit_code`, \
`last_reason`, `last_exit_code`), `owner`, `workload` (the Deployment behind a ReplicaSet), \
`node`, `terminating`, `unhealthy` and `reasons` (CrashLoopBackOff, ImagePullBackOff, OOMKilled, \
Error, Evicted, Unschedulable, NotReady after 5 minutes, TooManyRestarts over `max_restarts`).";

/// Registers the values of a Secret as secrets of the run: the report shows them as `***`.
pub(crate) fn mask_secret(cx: &StepContext, obj: &Value) {
    if obj.get("kind").and_then(Value::as_str) != Some("Secret") {
        return;
    }
    for key in ["data", "stringData"] {
        for v in obj
            .get(key)
            .and_then(Value::as_object)
            .into_iter()
            .flat_map(|m| m.values())
            .filter_map(Value::as_str)
        {
            cx.log.secret(v);
            if key == "data" {
                if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(v) {
                    if let Ok(text) = String::from_utf8(bytes) {
                        cx.log.secret(&text);
                        if let Some(stripped) = text.strip_suffix('\n') {
                            cx.log.secret(stripped);
                        }
                    }
                }
            }
        }
    }
    if let Some(last) = obj
        .pointer("/metadata/annotations/kubectl.kubernetes.io~1last-applied-configuration")
        .and_then(Value::as_str)
    {
        cx.log.secret(last);
    }
}

fn finish(cx: &StepContext, obj: Value, kind: &str, opts: health::Options) -> Value {
    mask_secret(cx, &obj);
    if kind == "Pod" {
        health::with_health(obj, opts)
    } else {
        obj
    }
}

/// `k8s.get`.
pub struct Get;

#[async_trait]
impl Action for Get {
    fn spec(&self) -> ActionSpec {
        ActionSpec::new::<GetInput, Value>(
            "k8s.get",
            "Read one Kubernetes object of any kind.",
            &format!(
                "Result: `found` and `object` (the object as the API gives it, without \
                 `managedFields`). A missing object fails the step (`NotFound`) unless \
                 `missing_ok: true`. Secret values are masked in logs and the report. \
                 `--dry-run`: runs (it changes nothing).\n\n{HEALTH_DOC}\n\n{COMMON_DOC}"
            ),
        )
        .runs_in_dry_run()
    }

    async fn run(&self, input: Value, cx: &StepContext) -> Result<Value, ActionError> {
        let input: GetInput = parse(input)?;
        let t = Target::new(
            cx,
            input.conn(),
            &input.namespace,
            input.api_version.as_deref(),
            &input.kind,
        )
        .await?;
        let api = t.api();
        let what = format!("get {}", t.shown(&input.name));
        let obj = crate::retry::read(cx, &what, || api.get_opt(&input.name)).await?;
        let opts = health::Options {
            max_restarts: input.max_restarts,
        };
        match obj {
            Some(obj) => {
                let obj = finish(cx, t.present(obj), &t.kind.ar.kind, opts);
                cx.log.line(
                    LogStream::Stdout,
                    &format!("found {}", t.shown(&input.name)),
                );
                Ok(json!({"found": true, "object": obj}))
            }
            None if input.missing_ok => {
                cx.log
                    .line(LogStream::Stdout, &format!("no {}", t.shown(&input.name)));
                Ok(json!({"found": false, "object": null}))
            }
            None => Err(ActionError::permanent(format!(
                "{what}: NotFound (404): {} \"{}\" not found",
                t.kind.resource(),
                input.name
            ))
            .with_details(json!({"code": 404, "reason": "NotFound"}))),
        }
    }
}

/// `k8s.list`.
pub struct List;

#[async_trait]
impl Action for List {
    fn spec(&self) -> ActionSpec {
        ActionSpec::new::<ListInput, Value>(
            "k8s.list",
            "List Kubernetes objects of any kind by label and field selectors; pods with their health.",
            &format!(
                "Result: `items` (each with `apiVersion` and `kind` filled in, which a real API \
                 server leaves out of list items), `count`, `names`, and for pods `unhealthy`: \
                 the unhealthy pods in short (`name`, `namespace`, `phase`, `ready`, \
                 `restarts`, `reasons`, `workload`, `node`), so an auto-heal runbook is \
                 `for_each: \"{{{{ steps.pods.result.unhealthy }}}}\"`. Every page is read \
                 (500 per request) up to `limit`. `all_namespaces: true` lists across \
                 namespaces. `--dry-run`: runs (it changes nothing).\n\n{HEALTH_DOC}\n\n{COMMON_DOC}"
            ),
        )
        .runs_in_dry_run()
    }

    async fn run(&self, input: Value, cx: &StepContext) -> Result<Value, ActionError> {
        let input: ListInput = parse(input)?;
        let t = Target::new(
            cx,
            input.conn(),
            &input.namespace,
            input.api_version.as_deref(),
            &input.kind,
        )
        .await?;
        let api = if input.all_namespaces {
            t.kind.api_all(&t.conn.client)
        } else {
            t.api()
        };
        let where_ = if input.all_namespaces || !t.kind.namespaced {
            "all namespaces".to_string()
        } else {
            format!("namespace {}", t.ns)
        };
        let what = format!("list {} in {where_}", t.kind.resource());
        let mut lp = ListParams::default();
        if let Some(l) = selector(&input.labels) {
            lp = lp.labels(&l);
        }
        if let Some(f) = selector(&input.fields) {
            lp = lp.fields(&f);
        }
        let opts = health::Options {
            max_restarts: input.max_restarts,
        };
        let mut items = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut page = lp.clone().limit(500);
            if let Some(t) = &token {
                page = page.continue_token(t);
            }
            let list = crate::retry::read(cx, &what, || api.list(&page)).await?;
            token = list.metadata.continue_.clone().filter(|t| !t.is_empty());
            for obj in list.items {
                items.push(finish(cx, t.present(obj), &t.kind.ar.kind, opts));
            }
            if token.is_none() || input.limit.is_some_and(|l| items.len() >= l) {
                break;
            }
        }
        if let Some(l) = input.limit {
            items.truncate(l);
        }
        let names: Vec<Value> = items
            .iter()
            .map(|o| o.pointer("/metadata/name").cloned().unwrap_or(Value::Null))
            .collect();
        let mut out = json!({"items": items, "count": names.len(), "names": names});
        let mut note = format!("{} {} in {where_}", names.len(), t.kind.resource());
        if t.kind.ar.kind == "Pod" {
            let unhealthy: Vec<Value> = out["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|o| o["health"]["unhealthy"] == true)
                .map(health::brief)
                .collect();
            note.push_str(&format!(", {} unhealthy", unhealthy.len()));
            for u in &unhealthy {
                cx.log.line(
                    LogStream::Stdout,
                    &format!(
                        "unhealthy: {}/{} {}",
                        u["namespace"].as_str().unwrap_or(""),
                        u["name"].as_str().unwrap_or(""),
                        u["reasons"]
                            .as_array()
                            .map(|r| r
                                .iter()
                                .filter_map(Value::as_str)
                                .collect::<Vec<_>>()
                                .join(", "))
                            .unwrap_or_default()
                    ),
                );
            }
            out["unhealthy"] = Value::Array(unhealthy);
        }
        cx.log.line(LogStream::Stdout, &note);
        Ok(out)
    }
}
