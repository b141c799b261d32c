//! Auto Scaling: `aws.autoscaling.describe_groups` and `aws.autoscaling.set_desired_capacity`
//! (absolute or relative, clamped into the group's bounds).

use async_trait::async_trait;
use aws_sdk_autoscaling::types::{AutoScalingGroup, Filter};
use indexmap::IndexMap;
use opsbook_engine::action::{Action, ActionError, ActionSpec, LogStream, Registry, StepContext};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::cloudwatch::CREDENTIALS_DOC;
use crate::common::{aws_input, date, parse, texts};
use crate::config::sdk_config;

pub(crate) fn register(r: &mut Registry) {
    r.register(DescribeGroups);
    r.register(SetDesiredCapacity);
}

/// A group as results show it.
fn flatten(g: &AutoScalingGroup) -> Value {
    let tags: Map<String, Value> = g
        .tags()
        .iter()
        .filter_map(|t| Some((t.key()?.to_string(), Value::String(t.value()?.to_string()))))
        .collect();
    let instances: Vec<Value> = g
        .instances()
        .iter()
        .map(|i| {
            json!({
                "id": i.instance_id(),
                "lifecycle_state": i.lifecycle_state().map(|s| s.as_str()),
                "health_status": i.health_status(),
                "availability_zone": i.availability_zone(),
                "instance_type": i.instance_type(),
                "protected_from_scale_in": i.protected_from_scale_in(),
            })
        })
        .collect();
    let in_service = g
        .instances()
        .iter()
        .filter(|i| i.lifecycle_state().map(|s| s.as_str()) == Some("InService"))
        .count();
    json!({
        "name": g.auto_scaling_group_name(),
        "arn": g.auto_scaling_group_arn(),
        "min": g.min_size(),
        "max": g.max_size(),
        "desired": g.desired_capacity(),
        "in_service": in_service,
        "instances": instances,
        "tags": tags,
        "availability_zones": g.availability_zones(),
        "default_cooldown": g.default_cooldown(),
        "status": g.status(),
        "created_at": g.created_time().map(date),
    })
}

/// Every group of `names` (all groups when empty) that has all of `tags`, all pages.
async fn describe(
    client: &aws_sdk_autoscaling::Client,
    names: &[String],
    tags: &IndexMap<String, Value>,
) -> Result<Vec<AutoScalingGroup>, ActionError> {
    let mut req = client.describe_auto_scaling_groups();
    if !names.is_empty() {
        req = req.set_auto_scaling_group_names(Some(names.to_vec()));
    }
    for (k, v) in tags {
        req = req.filters(
            Filter::builder()
                .name(format!("tag:{k}"))
                .set_values(Some(texts(v)))
                .build(),
        );
    }
    let mut pages = req.into_paginator().send();
    let mut out = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| crate::error::from_sdk("DescribeAutoScalingGroups", e))?;
        out.extend(page.auto_scaling_groups().iter().cloned());
    }
    Ok(out)
}

/// The region a step's client uses, for messages.
fn region_of(config: &aws_config::SdkConfig) -> String {
    config
        .region()
        .map(|r| r.to_string())
        .unwrap_or_else(|| "?".into())
}

aws_input! {
    /// Inputs of `aws.autoscaling.describe_groups`.
    pub struct DescribeInput {
        /// Group names (default: every group of the region).
        #[serde(default)]
        pub names: Vec<String>,
        /// Tags every group must have (`{Env: prod}`); a list of values matches any.
        #[serde(default)]
        pub tags: IndexMap<String, Value>,
    }
}

/// `aws.autoscaling.describe_groups`.
pub struct DescribeGroups;

#[async_trait]
impl Action for DescribeGroups {
    fn spec(&self) -> ActionSpec {
        ActionSpec::new::<DescribeInput, Value>(
            "aws.autoscaling.describe_groups",
            "Describe Auto Scaling groups: sizes, instances, tags.",
            &format!(
                "Describes the groups of `names` (every group of the region without it) that \
                 have all of `tags` (each a `tag:KEY` filter; a list of values matches any), \
                 every page. Without `tags`, a name of `names` that matches no group fails \
                 the step, naming it. Result: `groups` (each `name`, `arn`, `min`, `max`, `desired`, \
                 `in_service` — how many instances are InService —, `instances` (each `id`, \
                 `lifecycle_state`, `health_status`, `availability_zone`, `instance_type`, \
                 `protected_from_scale_in`), `tags` as a mapping, `availability_zones`, \
                 `default_cooldown`, `status`, `created_at`), `names`, `count`, and `group` \
                 (the group itself when exactly one name was asked, null otherwise). \
                 `--dry-run`: runs (it changes nothing).\n\n{CREDENTIALS_DOC}"
            ),
        )
        .runs_in_dry_run()
    }

    async fn run(&self, input: Value, cx: &StepContext) -> Result<Value, ActionError> {
        let input: DescribeInput = parse(input)?;
        let config = sdk_config(cx, &input.key()).await?;
        let client = aws_sdk_autoscaling::Client::new(&config);
        let groups = describe(&client, &input.names, &input.tags).await?;
        let missing: Vec<&String> = input
            .names
            .iter()
            .filter(|n| {
                !groups
                    .iter()
                    .any(|g| g.auto_scaling_group_name() == Some(n.as_str()))
            })
            .collect();
        if !missing.is_empty() && input.tags.is_empty() {
            let list: Vec<String> = missing.iter().map(|n| format!("`{n}`")).collect();
            return Err(ActionError::permanent(format!(
                "no Auto Scaling group named {} in {}",
                list.join(", "),
                region_of(&config)
            ))
            .with_details(json!({"missing": missing})));
        }
        let groups: Vec<Value> = groups.iter().map(flatten).collect();
        cx.log
            .line(LogStream::Stdout, &format!("{} group(s)", groups.len()));
        let names: Vec<Value> = groups.iter().map(|g| g["name"].clone()).collect();
        let group = if input.names.len() == 1 {
            groups.first().cloned().unwrap_or(Value::Null)
        } else {
            Value::Null
        };
        Ok(json!({"groups": groups, "names": names, "count": names.len(), "group": group}))
    }
}

/// A capacity or a change of it: a number, or text as a template renders it (`"+2"`, `"-1"`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Count {
    /// A number.
    Number(i64),
    /// A whole number as text, with an optional sign (`"+2"`, `"-1"`).
    Text(#[schemars(pattern(r"^\s*[+-]?[0-9]+\s*$"))] String),
}

impl Count {
    fn get(&self, field: &str) -> Result<i64, ActionError> {
        match self {
            Count::Number(n) => Ok(*n),
            Count::Text(t) => {
                let t = t.trim();
                t.strip_prefix('+')
                    .unwrap_or(t)
                    .parse::<i64>()
                    .map_err(|_| {
                        ActionError::permanent(format!("`{field}`: `{t}` is not a whole number"))
                    })
            }
        }
    }
}

aws_input! {
    /// Inputs of `aws.autoscaling.set_desired_capacity`.
    pub struct SetInput {
        /// The group's name.
        pub group: String,
        /// The new desired capacity; or give `change`.
        #[serde(default)]
        pub desired: Option<Count>,
        /// A change of the current desired capacity (`+2`, `-1`); or give `desired`.
        #[serde(default)]
        pub change: Option<Count>,
        /// Refuse while the group's cooldown runs (AWS's `HonorCooldown`; default false).
        #[serde(default)]
        pub honor_cooldown: bool,
    }
}

/// The target capacity: `requested` clamped into `[min, max]`; whether it was clamped.
fn clamp(requested: i64, min: i64, max: i64) -> (i64, bool) {
    let target = requested.max(min).min(max.max(min));
    (target, target != requested)
}

/// `aws.autoscaling.set_desired_capacity`.
pub struct SetDesiredCapacity;

#[async_trait]
impl Action for SetDesiredCapacity {
    fn spec(&self) -> ActionSpec {
        ActionSpec::new::<SetInput, Value>(
            "aws.autoscaling.set_desired_capacity",
            "Set an Auto Scaling group's desired capacity (absolute or +N/-N), within its bounds.",
            &format!(
                "Describes `group`, computes the requested capacity — `desired` (absolute) or \
                 `change` (`+2`, `-1`: relative to the current desired capacity), exactly one \
                 of them — and clamps it into the group's `[min, max]` rather than letting AWS \
                 refuse it. When the target equals the current desired capacity nothing is \
                 called. Otherwise calls SetDesiredCapacity (with `honor_cooldown`, default \
                 false: AWS refuses the change while a cooldown runs, \
                 `ScalingActivityInProgress`). A group that does not exist fails the step, \
                 naming it. It does not wait for instances to launch or terminate. Result: \
                 `group`, `previous`, `requested`, `desired` (the target), `min`, `max`, \
                 `clamped` (true when the request was outside the bounds), `changed`. \
                 `--dry-run`: describes the group for real and reports the same fields for \
                 what would be set (with `dry_run: true`, `changed: false`, `would_change`), \
                 without calling SetDesiredCapacity.\n\n{CREDENTIALS_DOC}"
            ),
        )
        .with_check()
    }

    async fn run(&self, input: Value, cx: &StepContext) -> Result<Value, ActionError> {
        let input: SetInput = parse(input)?;
        let config = sdk_config(cx, &input.key()).await?;
        let client = aws_sdk_autoscaling::Client::new(&config);
        let groups = describe(
            &client,
            std::slice::from_ref(&input.group),
            &IndexMap::new(),
        )
        .await?;
        let Some(g) = groups
            .iter()
            .find(|g| g.auto_scaling_group_name() == Some(input.group.as_str()))
        else {
            return Err(ActionError::permanent(format!(
                "no Auto Scaling group named `{}` in {}",
                input.group,
                region_of(&config)
            )));
        };
        let min = i64::from(g.min_size().unwrap_or(0));
        let max = i64::from(g.max_size().unwrap_or(0));
        let previous = i64::from(g.desired_capacity().unwrap_or(0));
        let requested = match (&input.desired, &input.change) {
            (Some(d), None) => d.get("desired")?,
            (None, Some(c)) => previous.saturating_add(c.get("change")?),
            _ => {
                return Err(ActionError::permanent(
                    "give exactly one of `desired` (absolute) and `change` (+N/-N)",
                ))
            }
        };
        let (target, clamped) = clamp(requested, min, max);
        let would_change = target != previous;
        let mut out = json!({
            "group": input.group,
            "previous": previous,
            "requested": requested,
            "desired": target,
            "min": min,
            "max": max,
            "clamped": clamped,
            "changed": false,
        });
        let bounds = if clamped {
            format!(" (requested {requested}, clamped into [{min}, {max}])")
        } else {
            String::new()
        };
        if cx.dry_run {
            out["dry_run"] = json!(true);
            out["would_change"] = json!(would_change);
            let what = if would_change {
                format!("would set desired capacity {previous} → {target}{bounds}")
            } else {
                format!("desired capacity stays {previous}{bounds}: nothing to do")
            };
            cx.log.line(
                LogStream::Stdout,
                &format!("dry run: {}: {what}", input.group),
            );
            return Ok(out);
        }
        if !would_change {
            cx.log.line(
                LogStream::Stdout,
                &format!(
                    "{}: desired capacity stays {previous}{bounds}: nothing to do",
                    input.group
                ),
            );
            return Ok(out);
        }
        let target_i32 = i32::try_from(target).map_err(|_| {
            ActionError::permanent(format!("desired capacity {target} is out of range"))
        })?;
        client
            .set_desired_capacity()
            .auto_scaling_group_name(&input.group)
            .desired_capacity(target_i32)
            .honor_cooldown(input.honor_cooldown)
            .send()
            .await
            .map_err(|e| crate::error::from_sdk("SetDesiredCapacity", e))?;
        out["changed"] = json!(true);
        cx.log.line(
            LogStream::Stdout,
            &format!(
                "{}: desired capacity {previous} → {target}{bounds}",
                input.group
            ),
        );
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clamping() {
        assert_eq!(clamp(5, 1, 3), (3, true));
        assert_eq!(clamp(0, 1, 3), (1, true));
        assert_eq!(clamp(2, 1, 3), (2, false));
        assert_eq!(Count::Text("+2".into()).get("change").ok(), Some(2));
        assert_eq!(Count::Text(" -1 ".into()).get("change").ok(), Some(-1));
        assert!(Count::Text("x".into()).get("change").is_err());
    }
}
