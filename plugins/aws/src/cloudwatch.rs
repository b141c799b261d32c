//! CloudWatch: `aws.cloudwatch.get_metric` (GetMetricData, with an aggregate and thresholds),
//! `aws.cloudwatch.put_metric` (PutMetricData) and `aws.cloudwatch.describe_alarms`.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_sdk_cloudwatch::types::{
    Dimension, Metric, MetricAlarm, MetricDataQuery, MetricDatum, MetricStat, ScanBy, StandardUnit,
    StateValue,
};
use aws_smithy_types::date_time::Format;
use aws_smithy_types::DateTime;
use indexmap::IndexMap;
use opsbook_engine::action::{Action, ActionError, ActionSpec, LogStream, Registry, StepContext};
use opsbook_engine::model::DurationSpec;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::common::{aws_input, date, parse, text};
use crate::config::sdk_config;

pub(crate) fn register(r: &mut Registry) {
    r.register(GetMetric);
    r.register(PutMetric);
    r.register(DescribeAlarms);
}

/// How credentials and region are found, for the docs of every action of this module and of
/// `autoscaling` and `ecs`.
pub(crate) const CREDENTIALS_DOC: &str = "Credentials and region come from the standard chain \
(environment, profiles, SSO, instance metadata, web identity; `AWS_ENDPOINT_URL` is honoured), \
with `region`, `profile` and `assume_role` (`role_arn`, `session_name`, `external_id`) per step; \
one SDK configuration per (region, profile, role) is shared by the run. Errors carry AWS's code \
and message (`AccessDenied: …`) and say when a retry may help.";

/// The current time as the SDK takes it.
pub(crate) fn now() -> DateTime {
    DateTime::from(SystemTime::now())
}

/// A time input: RFC 3339 text (`2026-11-24T20:30:00Z`, offsets allowed) or Unix seconds.
fn time_input(v: &Value, field: &str) -> Result<DateTime, ActionError> {
    let bad = |why: String| ActionError::permanent(format!("`{field}`: {why}"));
    match v {
        Value::Number(n) => n
            .as_f64()
            .filter(|f| f.is_finite())
            .map(DateTime::from_secs_f64)
            .ok_or_else(|| bad(format!("`{n}` is not a time"))),
        Value::String(s) => {
            let s = s.trim();
            if let Ok(secs) = s.parse::<f64>() {
                if secs.is_finite() {
                    return Ok(DateTime::from_secs_f64(secs));
                }
            }
            DateTime::from_str(s, Format::DateTimeWithOffset).map_err(|e| {
                bad(format!(
                    "`{s}` is not an RFC 3339 time (2026-11-24T20:30:00Z) or Unix seconds: {e}"
                ))
            })
        }
        other => Err(bad(format!("`{other}` is not a time"))),
    }
}

/// `t` minus `d`.
fn minus(t: DateTime, d: Duration) -> DateTime {
    DateTime::from_secs_f64(t.as_secs_f64() - d.as_secs_f64())
}

/// CloudWatch dimensions from a mapping (`{AutoScalingGroupName: web}`).
fn dimensions(map: &IndexMap<String, Value>) -> Vec<Dimension> {
    map.iter()
        .map(|(k, v)| Dimension::builder().name(k).value(text(v)).build())
        .collect()
}

/// The dimensions as results and messages show them: a mapping of strings.
fn dimension_map(map: &IndexMap<String, Value>) -> Map<String, Value> {
    map.iter()
        .map(|(k, v)| (k.clone(), Value::String(text(v))))
        .collect()
}

/// `{A=x, B=y}` for messages.
fn dimension_text(map: &IndexMap<String, Value>) -> String {
    let inner: Vec<String> = map
        .iter()
        .map(|(k, v)| format!("{k}={}", text(v)))
        .collect();
    format!("{{{}}}", inner.join(", "))
}

/// A finite number as JSON, `null` otherwise.
fn number(f: f64) -> Value {
    serde_json::Number::from_f64(f)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

fn default_namespace() -> String {
    "AWS/EC2".into()
}

fn default_stat() -> String {
    "Average".into()
}

/// Bounds on the aggregate.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// The aggregate must be at most this.
    #[serde(default)]
    pub max: Option<f64>,
    /// The aggregate must be at least this.
    #[serde(default)]
    pub min: Option<f64>,
}

aws_input! {
    /// Inputs of `aws.cloudwatch.get_metric`.
    pub struct GetMetricInput {
        /// The namespace (default `AWS/EC2`).
        #[serde(default = "default_namespace")]
        pub namespace: String,
        /// The metric name (`CPUUtilization`).
        pub metric: String,
        /// Dimensions, all of which the metric has (`{AutoScalingGroupName: web}`).
        #[serde(default)]
        pub dimensions: IndexMap<String, Value>,
        /// The statistic: `Average` (default), `Sum`, `Minimum`, `Maximum`, `SampleCount`, or
        /// an extended one (`p99`, `tm90` …).
        #[serde(default = "default_stat")]
        pub stat: String,
        /// The length of each datapoint's period (default 1m; whole seconds, a multiple of 60
        /// for data older than 3 hours).
        #[serde(default)]
        pub period: Option<DurationSpec>,
        /// The window ending now (default 10m), or ending at `end`.
        #[serde(default)]
        pub window: Option<DurationSpec>,
        /// The start of the range instead of `window`: RFC 3339 or Unix seconds.
        #[serde(default)]
        pub start: Option<Value>,
        /// The end of the range (default now): RFC 3339 or Unix seconds.
        #[serde(default)]
        pub end: Option<Value>,
        /// Only data put with this unit (`Percent`); also reported as the result's `unit`.
        #[serde(default)]
        pub unit: Option<String>,
        /// Bounds on the aggregate that fail the step when crossed.
        #[serde(default)]
        pub expect: Option<Expect>,
        /// Whether no datapoint at all is fine (default false: the step fails, since a wrong
        /// dimension or metric name also gives no data). With it, `aggregate` and `latest` are
        /// null and `expect` passes.
        #[serde(default)]
        pub allow_empty: bool,
    }
}

/// The standard statistics, spelt as CloudWatch wants them whatever the case written.
fn canonical_stat(s: &str) -> String {
    for known in ["Average", "Sum", "Minimum", "Maximum", "SampleCount"] {
        if s.eq_ignore_ascii_case(known) {
            return known.to_string();
        }
    }
    s.to_string()
}

/// The statistic over the whole window, from the period values (see the doc of `get_metric`).
fn aggregate(stat: &str, values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let max = || values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Some(match stat {
        "Average" => values.iter().sum::<f64>() / values.len() as f64,
        "Sum" | "SampleCount" => values.iter().sum(),
        "Minimum" => values.iter().copied().fold(f64::INFINITY, f64::min),
        _ => max(),
    })
}

const GET_METRIC_DOC: &str = "Reads one metric with GetMetricData (every page, following \
`NextToken`): `namespace` (default `AWS/EC2`), `metric`, `dimensions` (a mapping, all of which \
the metric has: `{AutoScalingGroupName: web}` or `{InstanceId: i-…}`), `stat` (`Average` by \
default, `Sum`, `Minimum`, `Maximum`, `SampleCount`, or an extended statistic such as `p99`), \
`period` (default 1m, whole seconds) and the range: `window` (default 10m) ending now, or \
`start` and optional `end` (RFC 3339 or Unix seconds; `window` with `end` ends there). `unit` \
keeps only data put with that unit.\n\n\
Result: `datapoints` (each `timestamp` RFC 3339 and `value`, sorted by time), `count`, `latest` \
(the last datapoint's value, null without data), `aggregate` (the statistic over the whole \
window, computed from the period values: `Average` is their plain mean, each period counting \
once whatever its sample count; `Sum` and `SampleCount` their sum; `Minimum` their minimum; \
`Maximum` and any extended statistic such as `p99` their maximum, i.e. the worst period, not \
a percentile over the window), `namespace`, `metric`, `dimensions`, `stat`, `period` (seconds), \
`start`, `end`, and `unit` (the `unit` input, null without it: GetMetricData does not say). \
`expect: {max: N, min: N}` fails the step when the aggregate is out of bounds, naming the \
metric and the number. No datapoint at all fails the step, naming namespace, metric, dimensions \
and window (a misspelt dimension also gives no data), unless `allow_empty: true`: then \
`aggregate` and `latest` are null and `expect` passes. `--dry-run`: runs (it changes nothing).";

/// `aws.cloudwatch.get_metric`.
pub struct GetMetric;

#[async_trait]
impl Action for GetMetric {
    fn spec(&self) -> ActionSpec {
        ActionSpec::new::<GetMetricInput, Value>(
            "aws.cloudwatch.get_metric",
            "Read a CloudWatch metric over a window: datapoints, aggregate, thresholds.",
            &format!("{GET_METRIC_DOC}\n\n{CREDENTIALS_DOC}"),
        )
        .runs_in_dry_run()
    }

    async fn run(&self, input: Value, cx: &StepContext) -> Result<Value, ActionError> {
        let input: GetMetricInput = parse(input)?;
        let stat = canonical_stat(&input.stat);
        let period = input
            .period
            .map(|p| p.get())
            .unwrap_or(Duration::from_secs(60));
        if period.subsec_nanos() != 0 || period.as_secs() == 0 || period.as_secs() > i32::MAX as u64
        {
            return Err(ActionError::permanent(format!(
                "`period` must be a whole number of seconds (1s, 10s, 30s or a multiple of 60s), not {period:?}"
            )));
        }
        let end = match &input.end {
            Some(v) => time_input(v, "end")?,
            None => now(),
        };
        let start = match (&input.start, input.window) {
            (Some(_), Some(_)) => {
                return Err(ActionError::permanent("give `window` or `start`, not both"))
            }
            (Some(v), None) => time_input(v, "start")?,
            (None, w) => minus(end, w.map(|w| w.get()).unwrap_or(Duration::from_secs(600))),
        };
        if start.as_secs_f64() >= end.as_secs_f64() {
            return Err(ActionError::permanent(format!(
                "the range is empty: start {} is not before end {}",
                date(&start),
                date(&end)
            )));
        }
        let config = sdk_config(cx, &input.key()).await?;
        let client = aws_sdk_cloudwatch::Client::new(&config);
        let mut metric_stat = MetricStat::builder()
            .metric(
                Metric::builder()
                    .namespace(&input.namespace)
                    .metric_name(&input.metric)
                    .set_dimensions(Some(dimensions(&input.dimensions)))
                    .build(),
            )
            .period(period.as_secs() as i32)
            .stat(&stat);
        if let Some(u) = &input.unit {
            metric_stat = metric_stat.unit(StandardUnit::from(u.as_str()));
        }
        let query = MetricDataQuery::builder()
            .id("m")
            .metric_stat(metric_stat.build())
            .return_data(true)
            .build();
        let mut pages = client
            .get_metric_data()
            .metric_data_queries(query)
            .start_time(start)
            .end_time(end)
            .scan_by(ScanBy::TimestampAscending)
            .into_paginator()
            .send();
        let mut points: Vec<(DateTime, f64)> = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| crate::error::from_sdk("GetMetricData", e))?;
            for m in page.messages() {
                cx.log.line(
                    LogStream::Stderr,
                    &format!(
                        "CloudWatch: {}: {}",
                        m.code().unwrap_or(""),
                        m.value().unwrap_or("")
                    ),
                );
            }
            for r in page.metric_data_results() {
                for m in r.messages() {
                    cx.log.line(
                        LogStream::Stderr,
                        &format!(
                            "CloudWatch: {}: {}",
                            m.code().unwrap_or(""),
                            m.value().unwrap_or("")
                        ),
                    );
                }
                points.extend(
                    r.timestamps()
                        .iter()
                        .copied()
                        .zip(r.values().iter().copied()),
                );
            }
        }
        points.sort_by(|a, b| a.0.as_secs_f64().total_cmp(&b.0.as_secs_f64()));
        let values: Vec<f64> = points.iter().map(|(_, v)| *v).collect();
        let agg = aggregate(&stat, &values);
        let latest = values.last().copied();
        let datapoints: Vec<Value> = points
            .iter()
            .map(|(t, v)| json!({"timestamp": date(t), "value": number(*v)}))
            .collect();
        let window_text = format!("{} to {}", date(&start), date(&end));
        let out = json!({
            "namespace": input.namespace,
            "metric": input.metric,
            "dimensions": dimension_map(&input.dimensions),
            "stat": stat,
            "period": period.as_secs(),
            "start": date(&start),
            "end": date(&end),
            "unit": input.unit,
            "datapoints": datapoints,
            "count": values.len(),
            "aggregate": agg.map(number),
            "latest": latest.map(number),
        });
        let what = format!(
            "{} {} {}",
            input.namespace,
            input.metric,
            dimension_text(&input.dimensions)
        );
        let Some(agg) = agg else {
            if input.allow_empty {
                cx.log.line(
                    LogStream::Stdout,
                    &format!("{what}: no datapoints from {window_text} (allowed)"),
                );
                return Ok(out);
            }
            return Err(ActionError::permanent(format!(
                "no datapoints for {what} ({stat}, period {}s) from {window_text}: check the \
                 namespace, the metric name and the dimensions (all must match exactly), or set \
                 `allow_empty: true` if no data is fine",
                period.as_secs()
            ))
            .with_details(out));
        };
        cx.log.line(
            LogStream::Stdout,
            &format!(
                "{what}: {} datapoint(s), {stat} {agg}, latest {}",
                values.len(),
                latest.map(|l| l.to_string()).unwrap_or_default()
            ),
        );
        if let Some(expect) = &input.expect {
            if let Some(max) = expect.max {
                if agg > max {
                    return Err(ActionError::permanent(format!(
                        "{what}: {stat} {agg} from {window_text} is above the maximum {max}"
                    ))
                    .with_details(out));
                }
            }
            if let Some(min) = expect.min {
                if agg < min {
                    return Err(ActionError::permanent(format!(
                        "{what}: {stat} {agg} from {window_text} is below the minimum {min}"
                    ))
                    .with_details(out));
                }
            }
        }
        Ok(out)
    }
}

aws_input! {
    /// Inputs of `aws.cloudwatch.put_metric`.
    pub struct PutMetricInput {
        /// The namespace (`MyApp`; `AWS/` is reserved for AWS).
        pub namespace: String,
        /// The metric name.
        pub metric: String,
        /// One value; or give `values`.
        #[serde(default)]
        pub value: Option<f64>,
        /// Several values of the same time (at most 150); or give `value`.
        #[serde(default)]
        pub values: Vec<f64>,
        /// The unit (`Percent`, `Count`, `Seconds`, `Bytes` …; default none).
        #[serde(default)]
        pub unit: Option<String>,
        /// Dimensions (`{Service: checkout}`).
        #[serde(default)]
        pub dimensions: IndexMap<String, Value>,
        /// The time of the values: RFC 3339 or Unix seconds (default now).
        #[serde(default)]
        pub timestamp: Option<Value>,
    }
}

/// `aws.cloudwatch.put_metric`.
pub struct PutMetric;

#[async_trait]
impl Action for PutMetric {
    fn spec(&self) -> ActionSpec {
        ActionSpec::new::<PutMetricInput, Value>(
            "aws.cloudwatch.put_metric",
            "Publish a value (or several) of a custom CloudWatch metric.",
            &format!(
                "Puts `value` (one number) or `values` (a list, at most 150, all of the same \
                 time) of `metric` in `namespace` with PutMetricData, with optional `unit` \
                 (`Percent`, `Count` …), `dimensions` (a mapping) and `timestamp` (RFC 3339 or \
                 Unix seconds; default now). Result: what was put: `namespace`, `metric`, \
                 `dimensions`, `values`, `count`, `unit`, `timestamp` (RFC 3339). \
                 `--dry-run`: checks the inputs, puts nothing, and returns the same fields \
                 for what would be put, with `dry_run: true`.\n\n{CREDENTIALS_DOC}"
            ),
        )
    }

    async fn run(&self, input: Value, cx: &StepContext) -> Result<Value, ActionError> {
        let input: PutMetricInput = parse(input)?;
        let values: Vec<f64> = match (input.value, input.values.is_empty()) {
            (Some(v), true) => vec![v],
            (None, false) => input.values.clone(),
            (Some(_), false) => {
                return Err(ActionError::permanent("give `value` or `values`, not both"))
            }
            (None, true) => {
                return Err(ActionError::permanent(
                    "give a `value` (or a list of `values`) to put",
                ))
            }
        };
        if values.len() > 150 {
            return Err(ActionError::permanent(format!(
                "{} values: PutMetricData takes at most 150 at a time",
                values.len()
            )));
        }
        if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
            return Err(ActionError::permanent(format!(
                "`{bad}` cannot be put: CloudWatch takes finite numbers only"
            )));
        }
        let timestamp = match &input.timestamp {
            Some(v) => time_input(v, "timestamp")?,
            None => now(),
        };
        let mut datum = MetricDatum::builder()
            .metric_name(&input.metric)
            .set_dimensions(Some(dimensions(&input.dimensions)))
            .timestamp(timestamp);
        datum = if values.len() == 1 {
            datum.value(values[0])
        } else {
            datum.set_values(Some(values.clone()))
        };
        if let Some(u) = &input.unit {
            datum = datum.unit(StandardUnit::from(u.as_str()));
        }
        let what = format!(
            "{} value(s) of {} {} {}",
            values.len(),
            input.namespace,
            input.metric,
            dimension_text(&input.dimensions)
        );
        let mut out = json!({
            "namespace": input.namespace,
            "metric": input.metric,
            "dimensions": dimension_map(&input.dimensions),
            "values": values,
            "count": values.len(),
            "unit": input.unit,
            "timestamp": date(&timestamp),
        });
        if cx.dry_run {
            cx.log
                .line(LogStream::Stdout, &format!("dry run: would put {what}"));
            out["dry_run"] = json!(true);
            return Ok(out);
        }
        let config = sdk_config(cx, &input.key()).await?;
        let client = aws_sdk_cloudwatch::Client::new(&config);
        client
            .put_metric_data()
            .namespace(&input.namespace)
            .metric_data(datum.build())
            .send()
            .await
            .map_err(|e| crate::error::from_sdk("PutMetricData", e))?;
        cx.log.line(LogStream::Stdout, &format!("put {what}"));
        Ok(out)
    }
}

/// An alarm state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
pub enum AlarmState {
    /// `OK`.
    #[serde(rename = "OK")]
    Ok,
    /// `ALARM`.
    #[serde(rename = "ALARM")]
    Alarm,
    /// `INSUFFICIENT_DATA`.
    #[serde(rename = "INSUFFICIENT_DATA")]
    InsufficientData,
}

aws_input! {
    /// Inputs of `aws.cloudwatch.describe_alarms`.
    pub struct AlarmsInput {
        /// Alarm names (at most 100); or give `prefix`.
        #[serde(default)]
        pub names: Vec<String>,
        /// Alarms whose names start with this.
        #[serde(default)]
        pub prefix: Option<String>,
        /// Only alarms in this state.
        #[serde(default)]
        pub state: Option<AlarmState>,
    }
}

/// An alarm as results show it.
fn flatten_alarm(a: &MetricAlarm) -> Value {
    let dims: Map<String, Value> = a
        .dimensions()
        .iter()
        .filter_map(|d| Some((d.name()?.to_string(), Value::String(d.value()?.to_string()))))
        .collect();
    json!({
        "name": a.alarm_name(),
        "state": a.state_value().map(|s| s.as_str()),
        "reason": a.state_reason(),
        "metric": a.metric_name(),
        "namespace": a.namespace(),
        "dimensions": dims,
        "statistic": a.statistic().map(|s| s.as_str()).or(a.extended_statistic()),
        "period": a.period(),
        "evaluation_periods": a.evaluation_periods(),
        "threshold": a.threshold().map(number),
        "comparison": a.comparison_operator().map(|c| c.as_str()),
        "actions_enabled": a.actions_enabled(),
        "updated_at": a.state_updated_timestamp().map(date),
    })
}

/// `aws.cloudwatch.describe_alarms`.
pub struct DescribeAlarms;

#[async_trait]
impl Action for DescribeAlarms {
    fn spec(&self) -> ActionSpec {
        ActionSpec::new::<AlarmsInput, Value>(
            "aws.cloudwatch.describe_alarms",
            "List CloudWatch metric alarms by names, prefix or state.",
            &format!(
                "Lists metric alarms with DescribeAlarms (every page): all of them, those of \
                 `names`, or those whose names start with `prefix` (not both), optionally only \
                 those in `state` (`OK`, `ALARM`, `INSUFFICIENT_DATA`). Composite alarms are \
                 not listed. Result: `alarms` (each `name`, `state`, `reason`, `metric`, \
                 `namespace`, `dimensions`, `statistic`, `period`, `evaluation_periods`, \
                 `threshold`, `comparison`, `actions_enabled`, `updated_at` — when the state \
                 last changed, RFC 3339), `count`, `in_alarm` (the names of those in ALARM). \
                 A name that matches no alarm is simply absent. `--dry-run`: runs (it changes \
                 nothing).\n\n{CREDENTIALS_DOC}"
            ),
        )
        .runs_in_dry_run()
    }

    async fn run(&self, input: Value, cx: &StepContext) -> Result<Value, ActionError> {
        let input: AlarmsInput = parse(input)?;
        if !input.names.is_empty() && input.prefix.is_some() {
            return Err(ActionError::permanent(
                "give `names` or `prefix`, not both (DescribeAlarms takes one)",
            ));
        }
        let config = sdk_config(cx, &input.key()).await?;
        let client = aws_sdk_cloudwatch::Client::new(&config);
        let mut req = client
            .describe_alarms()
            .set_alarm_name_prefix(input.prefix.clone());
        if !input.names.is_empty() {
            req = req.set_alarm_names(Some(input.names.clone()));
        }
        if let Some(state) = input.state {
            req = req.state_value(match state {
                AlarmState::Ok => StateValue::Ok,
                AlarmState::Alarm => StateValue::Alarm,
                AlarmState::InsufficientData => StateValue::InsufficientData,
            });
        }
        let mut pages = req.into_paginator().send();
        let mut alarms = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| crate::error::from_sdk("DescribeAlarms", e))?;
            alarms.extend(page.metric_alarms().iter().map(flatten_alarm));
        }
        let in_alarm: Vec<Value> = alarms
            .iter()
            .filter(|a| a["state"] == "ALARM")
            .map(|a| a["name"].clone())
            .collect();
        cx.log.line(
            LogStream::Stdout,
            &format!("{} alarm(s), {} in ALARM", alarms.len(), in_alarm.len()),
        );
        Ok(json!({"alarms": alarms, "count": alarms.len(), "in_alarm": in_alarm}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregates() {
        let v = [10.0, 20.0, 60.0];
        assert_eq!(aggregate("Average", &v), Some(30.0));
        assert_eq!(aggregate("Sum", &v), Some(90.0));
        assert_eq!(aggregate("SampleCount", &v), Some(90.0));
        assert_eq!(aggregate("Minimum", &v), Some(10.0));
        assert_eq!(aggregate("Maximum", &v), Some(60.0));
        assert_eq!(aggregate("p99", &v), Some(60.0));
        assert_eq!(aggregate("Average", &[]), None);
        assert_eq!(canonical_stat("average"), "Average");
        assert_eq!(canonical_stat("p99"), "p99");
    }

    #[test]
    fn times() {
        let t = time_input(&json!("2026-11-24T20:30:00Z"), "start").unwrap();
        assert_eq!(t.secs(), 1795552200);
        let o = time_input(&json!("2026-11-24T21:30:00+01:00"), "start").unwrap();
        assert_eq!(o.secs(), t.secs());
        assert_eq!(
            time_input(&json!(1795552200), "start").unwrap().secs(),
            t.secs()
        );
        assert!(time_input(&json!("yesterday"), "start").is_err());
        assert!(time_input(&json!(true), "start").is_err());
    }
}
