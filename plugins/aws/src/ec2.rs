//! EC2: `aws.ec2.describe_instances`, `start_instances`, `stop_instances`, `reboot_instances`,
//! `terminate_instances`, `run_instances`, `create_tags`.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_ec2::client::Waiters;
use aws_sdk_ec2::types::{Filter, Instance};
use indexmap::IndexMap;
use opsbook_engine::action::{Action, ActionError, ActionSpec, LogStream, Registry, StepContext};
use opsbook_engine::model::DurationSpec;
use serde_json::{json, Map, Value};

use crate::common::{aws_input, parse, texts};
use crate::config::sdk_config;

pub(crate) fn register(r: &mut Registry) {
    r.register(DescribeInstances);
    for change in [
        Change::Start,
        Change::Stop,
        Change::Reboot,
        Change::Terminate,
    ] {
        r.register(ChangeState(change));
    }
    r.register(RunInstances);
    r.register(CreateTags);
}

aws_input! {
    /// Which instances: ids, tags (`tag:KEY` filters), and raw EC2 filters, all combined.
    pub struct Select {
        /// Instance ids.
        #[serde(default)]
        pub instance_ids: Vec<String>,
        /// Tags every instance must have (`{Schedule: office-hours}`); a list of values matches any.
        #[serde(default)]
        pub tags: IndexMap<String, Value>,
        /// EC2 filters (`{instance-state-name: running}`); a list of values matches any.
        #[serde(default)]
        pub filters: IndexMap<String, Value>,
    }
}

impl Select {
    fn filters(&self) -> Vec<Filter> {
        let mut out: Vec<Filter> = self
            .tags
            .iter()
            .map(|(k, v)| {
                Filter::builder()
                    .name(format!("tag:{k}"))
                    .set_values(Some(texts(v)))
                    .build()
            })
            .collect();
        out.extend(
            self.filters
                .iter()
                .map(|(k, v)| Filter::builder().name(k).set_values(Some(texts(v))).build()),
        );
        out
    }

    fn is_empty(&self) -> bool {
        self.instance_ids.is_empty() && self.tags.is_empty() && self.filters.is_empty()
    }
}

/// An instance as results show it.
fn flatten(i: &Instance) -> Value {
    let tags: Map<String, Value> = i
        .tags()
        .iter()
        .filter_map(|t| Some((t.key()?.to_string(), Value::String(t.value()?.to_string()))))
        .collect();
    json!({
        "id": i.instance_id(),
        "state": i.state().and_then(|s| s.name()).map(|n| n.as_str()),
        "type": i.instance_type().map(|t| t.as_str()),
        "tags": tags,
        "name": tags.get("Name"),
        "private_ip": i.private_ip_address(),
        "public_ip": i.public_ip_address(),
        "availability_zone": i.placement().and_then(|p| p.availability_zone()),
        "image_id": i.image_id(),
        "launch_time": i.launch_time().map(|t| t.to_string()),
    })
}

/// Every instance the selection matches, all pages.
async fn describe(
    client: &aws_sdk_ec2::Client,
    sel: &Select,
) -> Result<Vec<Instance>, ActionError> {
    let mut req = client.describe_instances();
    if !sel.instance_ids.is_empty() {
        req = req.set_instance_ids(Some(sel.instance_ids.clone()));
    }
    let filters = sel.filters();
    if !filters.is_empty() {
        req = req.set_filters(Some(filters));
    }
    let mut pages = req.into_paginator().send();
    let mut out = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| crate::error::from_sdk("DescribeInstances", e))?;
        for r in page.reservations() {
            out.extend(r.instances().iter().cloned());
        }
    }
    Ok(out)
}

const SELECT_DOC: &str = "Instances are selected by `instance_ids`, `tags` (each a `tag:KEY` \
filter; a list of values matches any) and `filters` (EC2's own, such as \
`instance-state-name`), combined. Credentials and region come from the standard chain \
(environment, profiles, SSO, instance metadata, web identity; `AWS_ENDPOINT_URL` is honoured), \
with `region`, `profile` and `assume_role` (`role_arn`, `session_name`, `external_id`) per step; \
one SDK configuration per (region, profile, role) is shared by the run. Errors carry AWS's code \
and message (`UnauthorizedOperation: …`) and say when a retry may help.";

/// `aws.ec2.describe_instances`.
pub struct DescribeInstances;

#[async_trait]
impl Action for DescribeInstances {
    fn spec(&self) -> ActionSpec {
        ActionSpec::new::<Select, Value>(
            "aws.ec2.describe_instances",
            "List EC2 instances by ids, tags or filters, flattened.",
            &format!(
                "Result: `instances` (each `id`, `state`, `type`, `tags` as a mapping, `name`, \
                 `private_ip`, `public_ip`, `availability_zone`, `image_id`, `launch_time`), \
                 `ids`, `count`. Every page is read. `--dry-run`: runs (it changes nothing).\n\n{SELECT_DOC}"
            ),
        )
        .runs_in_dry_run()
    }

    async fn run(&self, input: Value, cx: &StepContext) -> Result<Value, ActionError> {
        let sel: Select = parse(input)?;
        let config = sdk_config(cx, &sel.key()).await?;
        let client = aws_sdk_ec2::Client::new(&config);
        let instances: Vec<Value> = describe(&client, &sel).await?.iter().map(flatten).collect();
        cx.log.line(
            LogStream::Stdout,
            &format!("{} instance(s)", instances.len()),
        );
        let ids: Vec<Value> = instances.iter().map(|i| i["id"].clone()).collect();
        Ok(json!({"instances": instances, "ids": ids, "count": ids.len()}))
    }
}

aws_input! {
    /// Inputs of the state changes (`start_instances`, `stop_instances`, `reboot_instances`,
    /// `terminate_instances`).
    pub struct ChangeInput {
        /// Instance ids.
        #[serde(default)]
        pub instance_ids: Vec<String>,
        /// Tags every instance must have (`{Schedule: office-hours}`); a list of values matches any.
        #[serde(default)]
        pub tags: IndexMap<String, Value>,
        /// EC2 filters (`{instance-state-name: running}`); a list of values matches any.
        #[serde(default)]
        pub filters: IndexMap<String, Value>,
        /// Refuse (and change nothing) when the selection matches more instances than this: a
        /// guard against a tag filter that matches the whole fleet.
        #[serde(default)]
        #[schemars(range(min = 1))]
        pub max_instances: Option<usize>,
        /// Wait until every instance reaches the target state (not for `reboot_instances`).
        #[serde(default)]
        pub wait: bool,
        /// How long `wait` may take (default 10m).
        #[serde(default)]
        pub wait_timeout: Option<DurationSpec>,
        /// Stop without a clean shutdown (`stop_instances` only).
        #[serde(default)]
        pub force: bool,
    }
}

impl ChangeInput {
    fn select(&self) -> Select {
        Select {
            instance_ids: self.instance_ids.clone(),
            tags: self.tags.clone(),
            filters: self.filters.clone(),
            region: self.region.clone(),
            profile: self.profile.clone(),
            assume_role: self.assume_role.clone(),
        }
    }
}

/// A change of instance state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Start,
    Stop,
    Reboot,
    Terminate,
}

impl Change {
    fn action(self) -> &'static str {
        match self {
            Change::Start => "aws.ec2.start_instances",
            Change::Stop => "aws.ec2.stop_instances",
            Change::Reboot => "aws.ec2.reboot_instances",
            Change::Terminate => "aws.ec2.terminate_instances",
        }
    }

    fn api(self) -> &'static str {
        match self {
            Change::Start => "StartInstances",
            Change::Stop => "StopInstances",
            Change::Reboot => "RebootInstances",
            Change::Terminate => "TerminateInstances",
        }
    }

    /// The state `wait` waits for.
    fn target(self) -> Option<&'static str> {
        match self {
            Change::Start => Some("running"),
            Change::Stop => Some("stopped"),
            Change::Reboot => None,
            Change::Terminate => Some("terminated"),
        }
    }
}

fn state_change(c: &aws_sdk_ec2::types::InstanceStateChange) -> Value {
    json!({
        "id": c.instance_id(),
        "previous_state": c.previous_state().and_then(|s| s.name()).map(|n| n.as_str()),
        "state": c.current_state().and_then(|s| s.name()).map(|n| n.as_str()),
    })
}

/// Calls EC2 for the change; the instances' state changes. With `dry_run`, EC2 only checks
/// the call: `Ok(None)` when it would have been allowed.
async fn call(
    client: &aws_sdk_ec2::Client,
    change: Change,
    ids: &[String],
    force: bool,
    dry_run: bool,
) -> Result<Option<Vec<Value>>, ActionError> {
    let ids = Some(ids.to_vec());
    let what = change.api();
    let out = match change {
        Change::Start => client
            .start_instances()
            .set_instance_ids(ids)
            .dry_run(dry_run)
            .send()
            .await
            .map(|o| o.starting_instances().iter().map(state_change).collect())
            .map_err(|e| crate::error::from_sdk(what, e)),
        Change::Stop => client
            .stop_instances()
            .set_instance_ids(ids)
            .force(force)
            .dry_run(dry_run)
            .send()
            .await
            .map(|o| o.stopping_instances().iter().map(state_change).collect())
            .map_err(|e| crate::error::from_sdk(what, e)),
        Change::Terminate => client
            .terminate_instances()
            .set_instance_ids(ids)
            .dry_run(dry_run)
            .send()
            .await
            .map(|o| o.terminating_instances().iter().map(state_change).collect())
            .map_err(|e| crate::error::from_sdk(what, e)),
        Change::Reboot => {
            let ids_for_result = ids.clone().unwrap_or_default();
            client
                .reboot_instances()
                .set_instance_ids(ids)
                .dry_run(dry_run)
                .send()
                .await
                .map(|_| {
                    ids_for_result
                        .iter()
                        .map(|id| json!({"id": id, "previous_state": null, "state": null}))
                        .collect()
                })
                .map_err(|e| crate::error::from_sdk(what, e))
        }
    };
    match out {
        Ok(v) if !dry_run => Ok(Some(v)),
        Ok(_) => Ok(None),
        Err(e) if dry_run && crate::error::code(&e) == Some("DryRunOperation") => Ok(None),
        Err(e) => Err(e),
    }
}

/// Waits (EC2's waiters) until every instance of `ids` is in `change`'s target state.
async fn wait_for(
    client: &aws_sdk_ec2::Client,
    change: Change,
    ids: &[String],
    limit: Duration,
    cx: &StepContext,
) -> Result<(), ActionError> {
    let ids_opt = Some(ids.to_vec());
    let waited = async {
        match change {
            Change::Start => client
                .wait_until_instance_running()
                .set_instance_ids(ids_opt)
                .wait(limit)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Change::Stop => client
                .wait_until_instance_stopped()
                .set_instance_ids(ids_opt)
                .wait(limit)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Change::Terminate => client
                .wait_until_instance_terminated()
                .set_instance_ids(ids_opt)
                .wait(limit)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Change::Reboot => Ok(()),
        }
    };
    let result = tokio::select! {
        r = waited => r,
        _ = cx.cancel.cancelled() => return Err(ActionError::cancelled()),
    };
    result.map_err(|e| {
        ActionError::retryable(format!(
            "waiting for {} to be {}: {e}",
            ids.join(", "),
            change.target().unwrap_or("ready")
        ))
    })
}

/// `aws.ec2.start_instances`, `stop_instances`, `reboot_instances`, `terminate_instances`.
pub struct ChangeState(pub Change);

#[async_trait]
impl Action for ChangeState {
    fn spec(&self) -> ActionSpec {
        let change = self.0;
        let summary = match change {
            Change::Start => "Start EC2 instances (by ids or tags), and wait until running.",
            Change::Stop => "Stop EC2 instances (by ids or tags), and wait until stopped.",
            Change::Reboot => "Reboot EC2 instances (by ids or tags).",
            Change::Terminate => {
                "Terminate EC2 instances (by ids or tags), and wait until terminated."
            }
        };
        let wait = match change.target() {
            Some(state) => format!(
                "With `wait`, waits (EC2's waiter) until every one is {state} or `wait_timeout` \
                 (default 10m) passes. "
            ),
            None => "`wait` is refused: a reboot has no state to wait for. ".to_string(),
        };
        ActionSpec::new::<ChangeInput, Value>(
            change.action(),
            summary,
            &format!(
                "Selects the instances, then calls EC2 ({}) for all of them at once. {wait}\
                 A selection that matches nothing succeeds with no instances; one that matches \
                 more than `max_instances` fails before anything changes. Result: `instances` \
                 (each `id`, `previous_state`, `state`), `ids`, `count`. `--dry-run`: calls EC2 \
                 with `DryRun=true` and reports whether the call would have been allowed \
                 (`allowed`); a denied call fails the step with AWS's reason.\n\n{SELECT_DOC}",
                change.api()
            ),
        )
        .with_check()
    }

    async fn run(&self, input: Value, cx: &StepContext) -> Result<Value, ActionError> {
        let change = self.0;
        let input: ChangeInput = parse(input)?;
        if input.wait && change.target().is_none() {
            return Err(ActionError::permanent(
                "`wait` does not apply to a reboot (the instance stays running)",
            ));
        }
        if input.force && change != Change::Stop {
            return Err(ActionError::permanent(
                "`force` applies to `aws.ec2.stop_instances` only",
            ));
        }
        let select = input.select();
        if select.is_empty() {
            return Err(ActionError::permanent(
                "say which instances: `instance_ids`, `tags` or `filters`",
            ));
        }
        let what = change.api();
        let config = sdk_config(cx, &select.key()).await?;
        let client = aws_sdk_ec2::Client::new(&config);
        let ids: Vec<String> = if select.tags.is_empty() && select.filters.is_empty() {
            select.instance_ids.clone()
        } else {
            describe(&client, &select)
                .await?
                .iter()
                // Terminated instances linger in answers for a while; they cannot change.
                .filter(|i| {
                    i.state().and_then(|s| s.name()).map(|n| n.as_str()) != Some("terminated")
                })
                .filter_map(|i| i.instance_id().map(str::to_string))
                .collect()
        };
        if ids.is_empty() {
            cx.log
                .line(LogStream::Stdout, "no instance matches: nothing to do");
            return Ok(json!({"instances": [], "ids": [], "count": 0}));
        }
        if let Some(max) = input.max_instances {
            if ids.len() > max {
                return Err(ActionError::permanent(format!(
                    "{} instances match, more than max_instances ({max}); nothing was changed: {}",
                    ids.len(),
                    ids.join(", ")
                )));
            }
        }
        if cx.dry_run {
            return match call(&client, change, &ids, input.force, true).await {
                Ok(_) => {
                    cx.log.line(
                        LogStream::Stdout,
                        &format!("dry run: {what} would be allowed for {}", ids.join(", ")),
                    );
                    Ok(json!({"dry_run": true, "allowed": true, "ids": ids, "count": ids.len()}))
                }
                Err(mut e) => {
                    if let Some(d) = e.details.as_object_mut() {
                        d.insert("dry_run".into(), json!(true));
                        d.insert("allowed".into(), json!(false));
                        d.insert("ids".into(), json!(ids));
                    }
                    Err(e)
                }
            };
        }
        let mut changes = call(&client, change, &ids, input.force, false)
            .await?
            .unwrap_or_default();
        cx.log
            .line(LogStream::Stdout, &format!("{what}: {}", ids.join(", ")));
        if input.wait {
            let limit = input
                .wait_timeout
                .map(|d| d.get())
                .unwrap_or(Duration::from_secs(600));
            wait_for(&client, change, &ids, limit, cx).await?;
            // The states after the wait.
            let now = describe(
                &client,
                &Select {
                    instance_ids: ids.clone(),
                    tags: IndexMap::new(),
                    filters: IndexMap::new(),
                    ..select.clone()
                },
            )
            .await?;
            for c in changes.iter_mut() {
                if let Some(i) = now.iter().find(|i| i.instance_id() == c["id"].as_str()) {
                    c["state"] = json!(i.state().and_then(|s| s.name()).map(|n| n.as_str()));
                }
            }
        }
        Ok(json!({"instances": changes, "ids": ids, "count": ids.len()}))
    }
}

aws_input! {
    /// Inputs of `aws.ec2.run_instances`.
    pub struct RunInput {
        /// The AMI id.
        pub image_id: String,
        /// The instance type (`t3.micro`).
        pub instance_type: String,
        /// How many instances (default 1): all of them or none.
        #[serde(default = "one")]
        #[schemars(range(min = 1))]
        pub count: i32,
        /// Tags for the instances (and their volumes).
        #[serde(default)]
        pub tags: IndexMap<String, Value>,
        /// The subnet to launch into.
        #[serde(default)]
        pub subnet_id: Option<String>,
        /// Security group ids.
        #[serde(default)]
        pub security_group_ids: Vec<String>,
        /// An EC2 key pair name.
        #[serde(default)]
        pub key_name: Option<String>,
        /// An instance profile name.
        #[serde(default)]
        pub iam_instance_profile: Option<String>,
        /// User data as text (opsbook base64-encodes it).
        #[serde(default)]
        pub user_data: Option<String>,
        /// Wait until every instance is running.
        #[serde(default)]
        pub wait: bool,
        /// How long `wait` may take (default 10m).
        #[serde(default)]
        pub wait_timeout: Option<DurationSpec>,
    }
}

fn one() -> i32 {
    1
}

fn tag_list(tags: &IndexMap<String, Value>) -> Vec<aws_sdk_ec2::types::Tag> {
    tags.iter()
        .map(|(k, v)| {
            aws_sdk_ec2::types::Tag::builder()
                .key(k)
                .value(crate::common::text(v))
                .build()
        })
        .collect()
}

/// `aws.ec2.run_instances`.
pub struct RunInstances;

#[async_trait]
impl Action for RunInstances {
    fn spec(&self) -> ActionSpec {
        ActionSpec::new::<RunInput, Value>(
            "aws.ec2.run_instances",
            "Launch EC2 instances from an AMI, tagged, and wait until running.",
            "Launches `count` instances (all or none) of `instance_type` from `image_id`, with \
             `tags` on the instances and their volumes, optional `subnet_id`, \
             `security_group_ids`, `key_name`, `iam_instance_profile` and `user_data` (text). \
             With `wait`, waits until every one is running. Result: `instances` (as \
             `describe_instances` gives them), `ids`, `count`. `--dry-run`: calls EC2 with \
             `DryRun=true` and reports whether the launch would have been allowed.",
        )
        .with_check()
    }

    async fn run(&self, input: Value, cx: &StepContext) -> Result<Value, ActionError> {
        let input: RunInput = parse(input)?;
        let config = sdk_config(cx, &input.key()).await?;
        let client = aws_sdk_ec2::Client::new(&config);
        let mut req = client
            .run_instances()
            .image_id(&input.image_id)
            .instance_type(aws_sdk_ec2::types::InstanceType::from(
                input.instance_type.as_str(),
            ))
            .min_count(input.count)
            .max_count(input.count)
            .set_subnet_id(input.subnet_id.clone())
            .set_key_name(input.key_name.clone())
            .dry_run(cx.dry_run);
        if !input.security_group_ids.is_empty() {
            req = req.set_security_group_ids(Some(input.security_group_ids.clone()));
        }
        if let Some(profile) = &input.iam_instance_profile {
            req = req.iam_instance_profile(
                aws_sdk_ec2::types::IamInstanceProfileSpecification::builder()
                    .name(profile)
                    .build(),
            );
        }
        if let Some(data) = &input.user_data {
            req = req.user_data(aws_smithy_types::base64::encode(data));
        }
        if !input.tags.is_empty() {
            for kind in [
                aws_sdk_ec2::types::ResourceType::Instance,
                aws_sdk_ec2::types::ResourceType::Volume,
            ] {
                req = req.tag_specifications(
                    aws_sdk_ec2::types::TagSpecification::builder()
                        .resource_type(kind)
                        .set_tags(Some(tag_list(&input.tags)))
                        .build(),
                );
            }
        }
        let out = match req.send().await {
            Ok(out) => out,
            Err(e) => {
                let e = crate::error::from_sdk("RunInstances", e);
                if cx.dry_run && crate::error::code(&e) == Some("DryRunOperation") {
                    cx.log
                        .line(LogStream::Stdout, "dry run: RunInstances would be allowed");
                    return Ok(json!({"dry_run": true, "allowed": true}));
                }
                return Err(e);
            }
        };
        let ids: Vec<String> = out
            .instances()
            .iter()
            .filter_map(|i| i.instance_id().map(str::to_string))
            .collect();
        cx.log
            .line(LogStream::Stdout, &format!("launched {}", ids.join(", ")));
        let mut instances: Vec<Value> = out.instances().iter().map(flatten).collect();
        if input.wait && !ids.is_empty() {
            let limit = input
                .wait_timeout
                .map(|d| d.get())
                .unwrap_or(Duration::from_secs(600));
            wait_for(&client, Change::Start, &ids, limit, cx).await?;
            let select = Select {
                instance_ids: ids.clone(),
                tags: IndexMap::new(),
                filters: IndexMap::new(),
                region: input.region.clone(),
                profile: input.profile.clone(),
                assume_role: input.assume_role.clone(),
            };
            instances = describe(&client, &select)
                .await?
                .iter()
                .map(flatten)
                .collect();
        }
        Ok(json!({"instances": instances, "ids": ids, "count": ids.len()}))
    }
}

aws_input! {
    /// Inputs of `aws.ec2.create_tags`.
    pub struct TagInput {
        /// Resource ids to tag (instances, volumes, AMIs …).
        pub resource_ids: Vec<String>,
        /// The tags to set (`{Owner: sre}`); existing keys are overwritten.
        pub tags: IndexMap<String, Value>,
    }
}

/// `aws.ec2.create_tags`.
pub struct CreateTags;

#[async_trait]
impl Action for CreateTags {
    fn spec(&self) -> ActionSpec {
        ActionSpec::new::<TagInput, Value>(
            "aws.ec2.create_tags",
            "Add or overwrite tags on EC2 resources.",
            "Sets `tags` on every resource of `resource_ids` (instances, volumes, images …); \
             existing keys are overwritten. Result: `resource_ids`, `tags`. `--dry-run`: calls \
             EC2 with `DryRun=true` and reports whether it would have been allowed.",
        )
        .with_check()
    }

    async fn run(&self, input: Value, cx: &StepContext) -> Result<Value, ActionError> {
        let input: TagInput = parse(input)?;
        if input.resource_ids.is_empty() || input.tags.is_empty() {
            return Err(ActionError::permanent(
                "`resource_ids` and `tags` must not be empty",
            ));
        }
        let config = sdk_config(cx, &input.key()).await?;
        let client = aws_sdk_ec2::Client::new(&config);
        let res = client
            .create_tags()
            .set_resources(Some(input.resource_ids.clone()))
            .set_tags(Some(tag_list(&input.tags)))
            .dry_run(cx.dry_run)
            .send()
            .await
            .map_err(|e| crate::error::from_sdk("CreateTags", e));
        match res {
            Err(e) if !(cx.dry_run && crate::error::code(&e) == Some("DryRunOperation")) => {
                return Err(e)
            }
            _ => {}
        }
        let tags: Map<String, Value> = input
            .tags
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(crate::common::text(v))))
            .collect();
        if cx.dry_run {
            return Ok(
                json!({"dry_run": true, "allowed": true, "resource_ids": input.resource_ids, "tags": tags}),
            );
        }
        cx.log.line(
            LogStream::Stdout,
            &format!("tagged {}", input.resource_ids.join(", ")),
        );
        Ok(json!({"resource_ids": input.resource_ids, "tags": tags}))
    }
}
