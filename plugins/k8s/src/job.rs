//! `k8s.job`: run work as a Kubernetes Job (a full spec, or image + command + env), stream its
//! pods' logs into the step's log, wait for it, and delete it afterwards.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use indexmap::IndexMap;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, DynamicObject, ListParams, PostParams};
use kube::Api;
use opsbook_engine::action::{
    Action, ActionError, ActionSpec, ErrorKind, LogStream, Registry, StepContext,
};
use opsbook_engine::model::DurationSpec;
use serde_json::{json, Map, Value};

use crate::common::{
    condition, int, k8s_input, label_selector, ms, parse, present, scalar, text, FIELD_MANAGER,
};
use crate::exec::Command;
use crate::follow::Follower;
use crate::health;
use crate::target::{to_value, Target};
use crate::watch::{until, Outcome};

pub(crate) fn register(r: &mut Registry) {
    r.register(Job);
}

k8s_input! {
    /// Input of `k8s.job`.
    pub struct JobInput {
        /// The Job's name (default: generated, `opsbook-<step id>-xxxxx`).
        #[serde(default)]
        pub name: Option<String>,
        /// A full Job `spec` (template, parallelism …) instead of `image`/`command`.
        #[serde(default)]
        pub spec: Option<Value>,
        /// The container image (with `command`, `args`, `env`).
        #[serde(default)]
        pub image: Option<String>,
        /// The command: an argv list, or a text run with `sh -c` (default: the image's).
        #[serde(default)]
        pub command: Option<Command>,
        /// Arguments (after `command`, or to the image's entrypoint).
        #[serde(default)]
        pub args: Vec<String>,
        /// Environment variables of the container.
        #[serde(default)]
        pub env: IndexMap<String, Value>,
        /// The pod's service account.
        #[serde(default)]
        pub service_account: Option<String>,
        /// Labels of the Job and its pods.
        #[serde(default)]
        pub labels: IndexMap<String, String>,
        /// Retries of the pod inside the Job (default 0: the step's `retry:` is the place).
        #[serde(default)]
        #[schemars(range(min = 0))]
        pub backoff_limit: Option<i32>,
        /// The Job's own deadline (`activeDeadlineSeconds`).
        #[serde(default)]
        pub active_deadline: Option<DurationSpec>,
        /// Let Kubernetes delete the finished Job after this long (`ttlSecondsAfterFinished`).
        #[serde(default)]
        pub ttl: Option<DurationSpec>,
        /// How long to wait for the Job (default 30m).
        #[serde(default)]
        pub timeout: Option<DurationSpec>,
        /// Keep the Job (and its pods) afterwards (default: deleted, pods too).
        #[serde(default)]
        pub keep: bool,
        /// Copy the pods' log lines into the step's log as they come (default true).
        #[serde(default = "yes")]
        pub echo: bool,
    }
}

fn yes() -> bool {
    true
}

const DOC: &str = "Creates a Job, from a full `spec` or from `image` + `command` (argv, or text \
for `sh -c`) + `args` + `env` (+ `service_account`, `labels`, `backoff_limit` default 0, \
`active_deadline`, `ttl`), in the step's namespace; follows its pods' logs into the step's log \
while it runs; waits for it to complete or fail, up to `timeout` (default 30m); then deletes it \
with Background propagation (its pods too) unless `keep: true`. Cancelling the step deletes the \
Job. Result: `name`, `namespace`, `status` (succeeded), `succeeded`, `failed` (pod counts), \
`logs` (the pods' log text, the last MiB), `pods`, `duration_ms`, `deleted`. A failed Job fails \
the step with its condition's reason and message (BackoffLimitExceeded, DeadlineExceeded) and \
the same fields plus the pods' health in the details. `--dry-run`: the server checks the Job \
(`dryRun=All` create) and nothing runs.";

/// The step id as a name part: lower case, `[a-z0-9-]`, at most 40 characters.
fn name_part(step: &str) -> String {
    let mut s: String = step
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    s.truncate(40);
    let s = s.trim_matches('-').to_string();
    if s.is_empty() {
        "job".into()
    } else {
        s
    }
}

/// The Job manifest of an input.
pub fn manifest(input: &JobInput, ns: &str, step: &str) -> Result<Value, String> {
    let mut labels: Map<String, Value> = input
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    labels.insert("app.kubernetes.io/managed-by".into(), json!("opsbook"));
    let mut spec = match (&input.spec, &input.image) {
        (Some(_), Some(_)) => return Err("give either `spec` or `image`, not both".into()),
        (None, None) => return Err("give `image` (with `command`), or a full Job `spec`".into()),
        (Some(spec), None) => {
            if !spec.is_object() {
                return Err("`spec` must be a mapping (a Job's spec)".into());
            }
            spec.clone()
        }
        (None, Some(image)) => {
            let mut c = json!({"name": "job", "image": image});
            if let Some(cmd) = &input.command {
                c["command"] = json!(cmd.argv());
            }
            if !input.args.is_empty() {
                c["args"] = json!(input.args);
            }
            if !input.env.is_empty() {
                c["env"] = input
                    .env
                    .iter()
                    .map(|(k, v)| json!({"name": k, "value": scalar(v)}))
                    .collect();
            }
            let mut pod = json!({"restartPolicy": "Never", "containers": [c]});
            if let Some(sa) = &input.service_account {
                pod["serviceAccountName"] = json!(sa);
            }
            json!({"backoffLimit": 0, "template": {"metadata": {"labels": labels.clone()}, "spec": pod}})
        }
    };
    if input.spec.is_some()
        && (input.command.is_some()
            || !input.args.is_empty()
            || !input.env.is_empty()
            || input.service_account.is_some())
    {
        return Err("`command`, `args`, `env` and `service_account` go with `image`; put them in `spec` instead".into());
    }
    if let Some(b) = input.backoff_limit {
        spec["backoffLimit"] = json!(b);
    } else if spec.get("backoffLimit").is_none() {
        // The step's `retry:` is where retries belong (the API's default would be 6).
        spec["backoffLimit"] = json!(0);
    }
    if let Some(d) = input.active_deadline {
        spec["activeDeadlineSeconds"] = json!(d.get().as_secs().max(1));
    }
    if let Some(t) = input.ttl {
        spec["ttlSecondsAfterFinished"] = json!(t.get().as_secs());
    }
    let mut metadata = json!({"namespace": ns, "labels": labels});
    match &input.name {
        Some(n) => metadata["name"] = json!(n),
        None => metadata["generateName"] = json!(format!("opsbook-{}-", name_part(step))),
    }
    Ok(json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": spec}))
}

/// Whether a Job finished: `Some((succeeded, reason, message))`.
pub fn finished(job: &Value) -> Option<(bool, String, String)> {
    for (kind, ok) in [("Complete", true), ("Failed", false)] {
        if let Some(c) = condition(job, kind).filter(|c| text(c, "/status") == Some("True")) {
            return Some((
                ok,
                text(c, "/reason").unwrap_or(kind).to_string(),
                text(c, "/message").unwrap_or("").to_string(),
            ));
        }
    }
    None
}

/// `k8s.job`.
pub struct Job;

#[async_trait]
impl Action for Job {
    fn spec(&self) -> ActionSpec {
        ActionSpec::new::<JobInput, Value>(
            "k8s.job",
            "Run a Kubernetes Job (spec, or image + command + env), stream its logs, wait, clean up.",
            DOC,
        )
        .with_check()
        .with_cancel_grace(Duration::from_secs(15))
    }

    async fn run(&self, input: Value, cx: &StepContext) -> Result<Value, ActionError> {
        let input: JobInput = parse(input)?;
        let t = Target::new(cx, input.conn(), &input.namespace, Some("batch/v1"), "Job").await?;
        let step = cx.step.split('[').next().unwrap_or("job");
        let manifest = manifest(&input, &t.ns, step).map_err(ActionError::permanent)?;
        let obj: DynamicObject = serde_json::from_value(manifest)
            .map_err(|e| ActionError::permanent(format!("the Job is not a valid object: {e}")))?;
        let api = t.api();
        let pp = PostParams {
            dry_run: cx.dry_run,
            field_manager: Some(FIELD_MANAGER.into()),
        };
        let what = format!("create a Job in namespace {}", t.ns);
        let created = to_value(crate::retry::write(cx, &what, || api.create(&pp, &obj)).await?);
        let name = text(&created, "/metadata/name").unwrap_or("").to_string();
        let label = t.shown(&name);
        if cx.dry_run {
            cx.log.line(
                LogStream::Stdout,
                &format!("dry run (checked by the server): would create {label}"),
            );
            return Ok(
                json!({"name": name, "namespace": t.ns, "status": "dry_run", "succeeded": 0,
                "failed": 0, "logs": "", "pods": [], "duration_ms": 0, "deleted": false}),
            );
        }
        let started = Instant::now();
        cx.log.line(LogStream::Stdout, &format!("created {label}"));
        let selector = created
            .pointer("/spec/selector")
            .and_then(label_selector)
            .unwrap_or_else(|| format!("job-name={name}"));
        let pods: Api<Pod> = Api::namespaced(t.conn.client.clone(), &t.ns);
        let follower = Follower::start(pods.clone(), selector.clone(), cx.log.clone(), input.echo);
        let timeout = input
            .timeout
            .map(|d| d.get())
            .unwrap_or(Duration::from_secs(1800));
        let waited = until(
            cx,
            api.clone(),
            &name,
            timeout,
            &format!("{label} to finish"),
            |o| {
                let Some(o) = o else {
                    return Err(ActionError::permanent(format!(
                        "{label} was deleted while it ran"
                    )));
                };
                Ok(finished(o).map(|f| (f, o.clone())))
            },
        )
        .await;
        let waited = match waited {
            Err(e) => {
                follower.abort();
                if !input.keep {
                    delete(cx, &api, &name, &label).await;
                }
                return Err(e);
            }
            Ok(w) => w,
        };
        let gathered = follower.finish(Duration::from_secs(5)).await;
        let duration_ms = ms(started);
        let (outcome, last) = match waited {
            Outcome::Done((f, job)) => (Some(f), job),
            Outcome::TimedOut(last) => (None, last.unwrap_or(Value::Null)),
        };
        let failed_health = if outcome.as_ref().is_none_or(|(ok, _, _)| !ok) {
            pods_health(&pods, &selector).await
        } else {
            Vec::new()
        };
        let deleted = !input.keep && delete(cx, &api, &name, &label).await;
        let mut result = json!({
            "name": name,
            "namespace": t.ns,
            "status": match &outcome { Some((true, _, _)) => "succeeded", Some(_) => "failed", None => "timed_out" },
            "succeeded": int(&last, "/status/succeeded"),
            "failed": int(&last, "/status/failed"),
            "logs": gathered.text,
            "pods": gathered.pods,
            "duration_ms": duration_ms,
            "deleted": deleted,
        });
        match outcome {
            Some((true, _, _)) => {
                cx.log.line(
                    LogStream::Stdout,
                    &format!("{label} succeeded in {}s", duration_ms / 1000),
                );
                Ok(result)
            }
            Some((false, reason, message)) => {
                result["reason"] = json!(reason);
                result["message"] = json!(message);
                result["pods_health"] = json!(failed_health);
                let why = if message.is_empty() {
                    reason
                } else {
                    format!("{reason}: {message}")
                };
                Err(ActionError::permanent(format!("{label} failed: {why}")).with_details(result))
            }
            None => {
                result["pods_health"] = json!(failed_health);
                Err(ActionError {
                    kind: ErrorKind::Retryable,
                    message: format!(
                        "{label} did not finish within {}{}",
                        opsbook_engine::model::format_duration(timeout),
                        if deleted { " (deleted)" } else { "" }
                    ),
                    details: result,
                })
            }
        }
    }
}

async fn pods_health(pods: &Api<Pod>, selector: &str) -> Vec<Value> {
    match pods.list(&ListParams::default().labels(selector)).await {
        Ok(list) => list
            .items
            .into_iter()
            .map(|p| {
                let p = present(serde_json::to_value(p).unwrap_or(Value::Null), "v1", "Pod");
                health::brief(&health::with_health(p, health::Options::default()))
            })
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Deletes the Job and (Background propagation) its pods; whether it worked. Runs even when
/// the step is cancelled, bounded by its own timeout.
async fn delete(cx: &StepContext, api: &Api<DynamicObject>, name: &str, label: &str) -> bool {
    let dp = DeleteParams::background();
    // Up to 3 tries within 10 s: one 503 must not leave the Job behind.
    let call = async {
        let mut tries = 0;
        loop {
            tries += 1;
            match api.delete(name, &dp).await {
                Err(e)
                    if tries < 3
                        && crate::error::status(&e)
                            .is_some_and(|s| matches!(s.code, 429 | 500 | 502 | 503 | 504)) =>
                {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                other => return other,
            }
        }
    };
    match tokio::time::timeout(Duration::from_secs(10), call).await {
        Ok(Ok(_)) => {
            cx.log.line(
                LogStream::Stdout,
                &format!("deleted {label} (and its pods)"),
            );
            true
        }
        Ok(Err(e)) if crate::error::status(&e).is_some_and(|s| s.code == 404) => true,
        Ok(Err(e)) => {
            cx.log.line(
                LogStream::Stderr,
                &format!(
                    "cannot delete {label}: {}",
                    crate::error::from_kube("delete", e).message
                ),
            );
            false
        }
        Err(_) => {
            cx.log.line(
                LogStream::Stderr,
                &format!("cannot delete {label}: no answer within 10s"),
            );
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(v: Value) -> JobInput {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn manifest_from_image_and_command() {
        let m = manifest(
            &input(json!({"image": "busybox", "command": "echo hi", "env": {"A": 1}, "ttl": "1h", "active_deadline": "10m"})),
            "ops",
            "Backup DB",
        )
        .unwrap();
        assert_eq!(m["metadata"]["generateName"], "opsbook-backup-db-");
        assert_eq!(m["metadata"]["namespace"], "ops");
        let c = &m["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["command"], json!(["sh", "-c", "echo hi"]));
        assert_eq!(c["env"], json!([{"name": "A", "value": "1"}]));
        assert_eq!(m["spec"]["template"]["spec"]["restartPolicy"], "Never");
        assert_eq!(m["spec"]["backoffLimit"], 0);
        assert_eq!(m["spec"]["ttlSecondsAfterFinished"], 3600);
        assert_eq!(m["spec"]["activeDeadlineSeconds"], 600);
        assert!(manifest(&input(json!({})), "ns", "s").is_err());
        assert!(manifest(&input(json!({"spec": {}, "image": "x"})), "ns", "s").is_err());
        let named = manifest(
            &input(json!({"name": "once", "spec": {"template": {}}})),
            "ns",
            "s",
        )
        .unwrap();
        assert_eq!(named["metadata"]["name"], "once");
    }

    #[test]
    fn finished_conditions() {
        assert_eq!(finished(&json!({"status": {}})), None);
        assert_eq!(
            finished(&json!({"status": {"conditions": [{"type": "Complete", "status": "True"}]}})),
            Some((true, "Complete".into(), String::new()))
        );
        assert_eq!(
            finished(&json!({"status": {"conditions": [
                {"type": "FailureTarget", "status": "True"},
                {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}]}})),
            Some((
                false,
                "BackoffLimitExceeded".into(),
                "Job has reached the specified backoff limit".into()
            ))
        );
    }
}
