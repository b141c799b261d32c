//! ECS: `aws.ecs.describe_services` (with a `steady` verdict per service) and
//! `aws.ecs.update_service` (desired count, task definition, new deployment; wait until steady).

use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_ecs::types::{DeploymentRolloutState, Service};
use opsbook_engine::action::{
    Action, ActionError, ActionSpec, ErrorKind, LogStream, Registry, StepContext,
};
use opsbook_engine::model::DurationSpec;
use serde_json::{json, Value};

use crate::cloudwatch::CREDENTIALS_DOC;
use crate::common::{aws_input, date, parse};
use crate::config::sdk_config;

pub(crate) fn register(r: &mut Registry) {
    r.register(DescribeServices);
    r.register(UpdateService);
}

/// DescribeServices takes at most this many services per call.
const CHUNK: usize = 10;

/// Whether a service is steady: ACTIVE, exactly one deployment, PRIMARY, whose running count
/// equals its desired count and whose rollout is COMPLETED (or has no rollout state), and the
/// service's own running count equals its desired count. A service without deployments
/// (CODE_DEPLOY or EXTERNAL controllers): running equals desired and nothing is pending.
pub fn steady(s: &Service) -> bool {
    if s.status() != Some("ACTIVE") {
        return false;
    }
    let service_settled = s.running_count() == s.desired_count();
    match s.deployments() {
        [] => service_settled && s.pending_count() == 0,
        [d] => {
            d.status() == Some("PRIMARY")
                && d.running_count() == d.desired_count()
                && matches!(
                    d.rollout_state(),
                    None | Some(DeploymentRolloutState::Completed)
                )
                && service_settled
        }
        _ => false,
    }
}

/// A service as results show it.
fn flatten(s: &Service) -> Value {
    let deployments: Vec<Value> = s
        .deployments()
        .iter()
        .map(|d| {
            json!({
                "id": d.id(),
                "status": d.status(),
                "rollout_state": d.rollout_state().map(|r| r.as_str()),
                "rollout_state_reason": d.rollout_state_reason(),
                "desired": d.desired_count(),
                "running": d.running_count(),
                "pending": d.pending_count(),
                "failed_tasks": d.failed_tasks(),
                "task_definition": d.task_definition(),
                "updated_at": d.updated_at().map(date),
            })
        })
        .collect();
    let events: Vec<Value> = s
        .events()
        .iter()
        .take(5)
        .map(|e| json!({"at": e.created_at().map(date), "message": e.message()}))
        .collect();
    json!({
        "name": s.service_name(),
        "arn": s.service_arn(),
        "cluster_arn": s.cluster_arn(),
        "status": s.status(),
        "desired": s.desired_count(),
        "running": s.running_count(),
        "pending": s.pending_count(),
        "task_definition": s.task_definition(),
        "deployments": deployments,
        "steady": steady(s),
        "events": events,
    })
}

/// One line on where a service stands, for logs and messages.
fn progress(s: &Service) -> String {
    let rollout: Vec<String> = s
        .deployments()
        .iter()
        .map(|d| {
            format!(
                "{} {}/{}{}",
                d.status().unwrap_or("?"),
                d.running_count(),
                d.desired_count(),
                d.rollout_state()
                    .map(|r| format!(" {}", r.as_str()))
                    .unwrap_or_default()
            )
        })
        .collect();
    format!(
        "{}: running {}/{}, pending {}, {} deployment(s){}",
        s.service_name().unwrap_or("?"),
        s.running_count(),
        s.desired_count(),
        s.pending_count(),
        s.deployments().len(),
        if rollout.is_empty() {
            String::new()
        } else {
            format!(" ({})", rollout.join("; "))
        }
    )
}

/// The cluster as messages name it.
fn cluster_name(cluster: &Option<String>) -> &str {
    cluster.as_deref().unwrap_or("default")
}

/// The services of `names` (names or ARNs), in chunks of ten; ECS's `failures` (a service
/// that does not exist: `MISSING`) fail with their reasons.
async fn describe(
    client: &aws_sdk_ecs::Client,
    cluster: &Option<String>,
    names: &[String],
) -> Result<Vec<Service>, ActionError> {
    let mut services = Vec::new();
    let mut failures = Vec::new();
    for chunk in names.chunks(CHUNK) {
        let out = client
            .describe_services()
            .set_cluster(cluster.clone())
            .set_services(Some(chunk.to_vec()))
            .send()
            .await
            .map_err(|e| crate::error::from_sdk("DescribeServices", e))?;
        services.extend(out.services().iter().cloned());
        failures.extend(out.failures().iter().cloned());
    }
    if !failures.is_empty() {
        let texts: Vec<String> = failures
            .iter()
            .map(|f| {
                let arn = f.arn().unwrap_or("?");
                let name = arn.rsplit('/').next().unwrap_or(arn);
                let mut t = format!(
                    "service `{name}` in cluster `{}`: {}",
                    cluster_name(cluster),
                    f.reason().unwrap_or("failed")
                );
                if let Some(d) = f.detail() {
                    t.push_str(&format!(" ({d})"));
                }
                t
            })
            .collect();
        let details: Vec<Value> = failures
            .iter()
            .map(|f| json!({"arn": f.arn(), "reason": f.reason(), "detail": f.detail()}))
            .collect();
        return Err(
            ActionError::permanent(format!("DescribeServices: {}", texts.join("; ")))
                .with_details(json!({"failures": details})),
        );
    }
    Ok(services)
}

aws_input! {
    /// Inputs of `aws.ecs.describe_services`.
    pub struct DescribeInput {
        /// The cluster's name or ARN (default: the `default` cluster).
        #[serde(default)]
        pub cluster: Option<String>,
        /// Service names or ARNs.
        #[schemars(length(min = 1))]
        pub services: Vec<String>,
    }
}

/// `aws.ecs.describe_services`.
pub struct DescribeServices;

#[async_trait]
impl Action for DescribeServices {
    fn spec(&self) -> ActionSpec {
        ActionSpec::new::<DescribeInput, Value>(
            "aws.ecs.describe_services",
            "Describe ECS services: counts, deployments, and whether each is steady.",
            &format!(
                "Describes `services` (names or ARNs) of `cluster` (default: `default`) with \
                 DescribeServices, ten at a time as the API requires. A service ECS reports \
                 as a failure (`MISSING`: it does not exist in that cluster) fails the step \
                 with the reason. Result: `services` (each `name`, `arn`, `cluster_arn`, \
                 `status`, `desired`, `running`, `pending`, `task_definition`, `deployments` \
                 (each `id`, `status`, `rollout_state`, `rollout_state_reason`, `desired`, \
                 `running`, `pending`, `failed_tasks`, `task_definition`, `updated_at`), \
                 `events` (the five latest service events, `at` and `message`), and `steady`: \
                 true when the service is ACTIVE with exactly one deployment, PRIMARY, whose \
                 running count equals its desired count and whose `rollout_state` is \
                 COMPLETED or absent, and the service's own running count equals its desired \
                 count), `count`, `all_steady`, and `service` (the service itself when exactly \
                 one was asked). `--dry-run`: runs (it changes nothing).\n\n{CREDENTIALS_DOC}"
            ),
        )
        .runs_in_dry_run()
    }

    async fn run(&self, input: Value, cx: &StepContext) -> Result<Value, ActionError> {
        let input: DescribeInput = parse(input)?;
        if input.services.is_empty() {
            return Err(ActionError::permanent("`services` must not be empty"));
        }
        let config = sdk_config(cx, &input.key()).await?;
        let client = aws_sdk_ecs::Client::new(&config);
        let services = describe(&client, &input.cluster, &input.services).await?;
        for s in &services {
            cx.log.line(LogStream::Stdout, &progress(s));
        }
        let all_steady = services.iter().all(steady);
        let list: Vec<Value> = services.iter().map(flatten).collect();
        let service = if input.services.len() == 1 {
            list.first().cloned().unwrap_or(Value::Null)
        } else {
            Value::Null
        };
        Ok(json!({
            "services": list,
            "count": list.len(),
            "all_steady": all_steady,
            "service": service,
        }))
    }
}

aws_input! {
    /// Inputs of `aws.ecs.update_service`.
    pub struct UpdateInput {
        /// The cluster's name or ARN (default: the `default` cluster).
        #[serde(default)]
        pub cluster: Option<String>,
        /// The service's name or ARN.
        pub service: String,
        /// The new desired task count.
        #[serde(default)]
        #[schemars(range(min = 0))]
        pub desired_count: Option<i32>,
        /// Start a new deployment (new tasks replace the old ones), e.g. to pick up a new
        /// image behind the same tag.
        #[serde(default)]
        pub force_new_deployment: bool,
        /// A task definition (`family`, `family:revision` or ARN) to deploy.
        #[serde(default)]
        pub task_definition: Option<String>,
        /// Wait until the service is steady (see `aws.ecs.describe_services`).
        #[serde(default)]
        pub wait: bool,
        /// How often `wait` describes the service (default 15s).
        #[serde(default)]
        pub poll_interval: Option<DurationSpec>,
        /// How long `wait` may take (default 10m).
        #[serde(default)]
        pub wait_timeout: Option<DurationSpec>,
    }
}

/// The one service `name` of `cluster`.
async fn describe_one(
    client: &aws_sdk_ecs::Client,
    cluster: &Option<String>,
    name: &str,
) -> Result<Service, ActionError> {
    describe(client, cluster, &[name.to_string()])
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| {
            ActionError::permanent(format!(
                "DescribeServices: ECS returned no service `{name}` in cluster `{}`",
                cluster_name(cluster)
            ))
        })
}

/// Polls the service every `poll` until it is steady or `limit` has passed. Transient errors
/// of a poll are logged and the polling goes on.
async fn wait_steady(
    client: &aws_sdk_ecs::Client,
    cluster: &Option<String>,
    name: &str,
    poll: Duration,
    limit: Duration,
    cx: &StepContext,
) -> Result<Service, ActionError> {
    let deadline = Instant::now() + limit;
    let mut last: Option<Service> = None;
    loop {
        match describe_one(client, cluster, name).await {
            Ok(s) => {
                if steady(&s) {
                    cx.log
                        .line(LogStream::Stdout, &format!("steady: {}", progress(&s)));
                    return Ok(s);
                }
                cx.log.line(LogStream::Stdout, &progress(&s));
                last = Some(s);
            }
            Err(e) if e.kind == ErrorKind::Retryable => {
                cx.log.line(
                    LogStream::Stderr,
                    &format!("{} (polling goes on)", e.message),
                );
            }
            Err(e) => return Err(e),
        }
        let now = Instant::now();
        if now >= deadline {
            let state = last
                .as_ref()
                .map(progress)
                .unwrap_or_else(|| format!("{name}: never described"));
            return Err(ActionError::permanent(format!(
                "service `{name}` did not become steady within {}s (the update was made): {state}",
                limit.as_secs()
            ))
            .with_details(last.as_ref().map(flatten).unwrap_or(Value::Null)));
        }
        tokio::time::sleep(poll.min(deadline - now)).await;
    }
}

/// `aws.ecs.update_service`.
pub struct UpdateService;

#[async_trait]
impl Action for UpdateService {
    fn spec(&self) -> ActionSpec {
        ActionSpec::new::<UpdateInput, Value>(
            "aws.ecs.update_service",
            "Update an ECS service (desired count, task definition, new deployment) and wait until steady.",
            &format!(
                "Calls UpdateService on `service` of `cluster` (default: `default`) with any of \
                 `desired_count`, `task_definition` (`family`, `family:revision` or ARN) and \
                 `force_new_deployment` (at least one). With `wait`, describes the service \
                 every `poll_interval` (default 15s) until it is steady — one PRIMARY \
                 deployment, running = desired, rollout COMPLETED, as \
                 `aws.ecs.describe_services` defines it — or `wait_timeout` (default 10m) \
                 passes, which fails the step with the last counts (the update itself was \
                 made); transient errors while polling are logged and polling goes on; a \
                 cancelled run stops waiting at once. Result: the service as described after \
                 the update (or after the wait), as `aws.ecs.describe_services` gives each \
                 service, plus `previous` (`desired`, `task_definition` before) and `changes` \
                 (`desired_count` and `task_definition` as `from`/`to` when they differ, \
                 `force_new_deployment`). `--dry-run`: describes the service for real \
                 (failing when it is missing), resolves `task_definition` with \
                 DescribeTaskDefinition (failing when it does not exist), and reports the \
                 service as it is now with `dry_run: true`, `changes` and `would_change`, \
                 without calling UpdateService.\n\n{CREDENTIALS_DOC}"
            ),
        )
        .with_check()
    }

    async fn run(&self, input: Value, cx: &StepContext) -> Result<Value, ActionError> {
        let input: UpdateInput = parse(input)?;
        if input.desired_count.is_none()
            && input.task_definition.is_none()
            && !input.force_new_deployment
        {
            return Err(ActionError::permanent(
                "nothing to update: give `desired_count`, `task_definition` or `force_new_deployment: true`",
            ));
        }
        let poll = input
            .poll_interval
            .map(|p| p.get())
            .unwrap_or(Duration::from_secs(15));
        if poll.is_zero() {
            return Err(ActionError::permanent("`poll_interval` must be above zero"));
        }
        let limit = input
            .wait_timeout
            .map(|d| d.get())
            .unwrap_or(Duration::from_secs(600));
        let config = sdk_config(cx, &input.key()).await?;
        let client = aws_sdk_ecs::Client::new(&config);
        let before = describe_one(&client, &input.cluster, &input.service).await?;
        let previous = json!({
            "desired": before.desired_count(),
            "task_definition": before.task_definition(),
        });
        let mut changes = serde_json::Map::new();
        if let Some(d) = input.desired_count {
            if d != before.desired_count() {
                changes.insert(
                    "desired_count".into(),
                    json!({"from": before.desired_count(), "to": d}),
                );
            }
        }
        if input.force_new_deployment {
            changes.insert("force_new_deployment".into(), json!(true));
        }
        if cx.dry_run {
            if let Some(td) = &input.task_definition {
                let out = client
                    .describe_task_definition()
                    .task_definition(td)
                    .send()
                    .await
                    .map_err(|e| crate::error::from_sdk("DescribeTaskDefinition", e))?;
                let arn = out
                    .task_definition()
                    .and_then(|t| t.task_definition_arn())
                    .unwrap_or(td.as_str());
                if Some(arn) != before.task_definition() {
                    changes.insert(
                        "task_definition".into(),
                        json!({"from": before.task_definition(), "to": arn}),
                    );
                }
            }
            let would_change = !changes.is_empty();
            cx.log.line(
                LogStream::Stdout,
                &format!(
                    "dry run: {}; would change: {}",
                    progress(&before),
                    if would_change {
                        Value::Object(changes.clone()).to_string()
                    } else {
                        "nothing".into()
                    }
                ),
            );
            let mut out = flatten(&before);
            out["previous"] = previous;
            out["changes"] = Value::Object(changes);
            out["would_change"] = json!(would_change);
            out["dry_run"] = json!(true);
            return Ok(out);
        }
        let updated = client
            .update_service()
            .set_cluster(input.cluster.clone())
            .service(&input.service)
            .set_desired_count(input.desired_count)
            .set_task_definition(input.task_definition.clone())
            .force_new_deployment(input.force_new_deployment)
            .send()
            .await
            .map_err(|e| crate::error::from_sdk("UpdateService", e))?;
        let mut after = match updated.service() {
            Some(s) => s.clone(),
            None => describe_one(&client, &input.cluster, &input.service).await?,
        };
        if input.task_definition.is_some() && after.task_definition() != before.task_definition() {
            changes.insert(
                "task_definition".into(),
                json!({"from": before.task_definition(), "to": after.task_definition()}),
            );
        }
        cx.log.line(
            LogStream::Stdout,
            &format!("updated: {}", Value::Object(changes.clone())),
        );
        if input.wait {
            let waited = wait_steady(&client, &input.cluster, &input.service, poll, limit, cx);
            after = tokio::select! {
                r = waited => r?,
                _ = cx.cancel.cancelled() => {
                    return Err(ActionError::cancelled_with(format!(
                        "cancelled while waiting for service `{}` to become steady (the update was made)",
                        input.service
                    )))
                }
            };
        }
        let mut out = flatten(&after);
        out["previous"] = previous;
        out["changes"] = Value::Object(changes);
        Ok(out)
    }
}
