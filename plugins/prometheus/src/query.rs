//! `prometheus.query`: instant and range PromQL queries, results as numbers, thresholds.

use std::time::Duration;

use async_trait::async_trait;
use indexmap::IndexMap;
use opsbook_engine::action::{Action, ActionError, ActionSpec, LogStream, StepContext};
use opsbook_engine::model::DurationSpec;
use opsbook_http::input::Auth;
use opsbook_http::reqwest;
use opsbook_http::send::{self, Body, Call};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// A time range.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Range {
    /// The window ending now (`10m`); or give `start` (and `end`).
    #[serde(default)]
    pub last: Option<DurationSpec>,
    /// Start: RFC 3339 or Unix seconds.
    #[serde(default)]
    pub start: Option<Value>,
    /// End: RFC 3339 or Unix seconds (default now).
    #[serde(default)]
    pub end: Option<Value>,
    /// Resolution (`30s`).
    pub step: DurationSpec,
}

/// Thresholds on the numbers.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Every value must be at most this.
    #[serde(default)]
    pub max: Option<f64>,
    /// Every value must be at least this.
    #[serde(default)]
    pub min: Option<f64>,
    /// Bare expressions over `result` that must hold (`result.value < 0.01`).
    #[serde(default)]
    pub that: Vec<String>,
    /// Whether no data passes `max`/`min` (default false: no data fails them, since a
    /// canary with no traffic proves nothing).
    #[serde(default)]
    pub allow_empty: bool,
}

/// `prometheus.query` inputs.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryInput {
    /// Prometheus (`http://prometheus:9090`).
    pub url: String,
    /// The PromQL expression.
    pub query: String,
    /// An instant query at this time (RFC 3339 or Unix seconds; default now).
    #[serde(default)]
    pub time: Option<Value>,
    /// A range query instead of an instant one.
    #[serde(default)]
    pub range: Option<Range>,
    /// Thresholds that fail the step when crossed.
    #[serde(default)]
    pub expect: Option<Expect>,
    /// Request headers (a tenant header for Cortex/Mimir, say).
    #[serde(default)]
    pub headers: IndexMap<String, String>,
    /// Credentials, as for `http.request`.
    #[serde(default)]
    pub auth: Option<Auth>,
    /// Time limit per attempt (default 30s).
    #[serde(default)]
    pub timeout: Option<DurationSpec>,
}

/// One series of the answer.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Series {
    /// Its labels.
    pub metric: Map<String, Value>,
    /// Instant queries: its value (null for NaN).
    pub value: Option<f64>,
    /// Range queries: `[unix seconds, value]` pairs.
    pub values: Option<Vec<(f64, Option<f64>)>>,
}

/// What `prometheus.query` returns.
#[derive(Debug, Serialize, JsonSchema)]
pub struct QueryOutput {
    /// `vector`, `matrix`, `scalar` or `string`.
    pub result_type: String,
    /// Every series.
    pub series: Vec<Series>,
    /// The first series' value (a range query: its last value); null without data.
    pub value: Option<f64>,
    /// Every number of the answer, flattened.
    pub values: Vec<f64>,
    /// Whether the answer has no data.
    pub empty: bool,
    /// Prometheus's warnings.
    pub warnings: Vec<String>,
}

const DOC: &str = "\
Runs a PromQL query against Prometheus's HTTP API: an instant query (`time`, default now) or a \
range query (`range: {last: 10m, step: 30s}` or `start`/`end`). The result gives every series \
(labels and value, or values over the range), `value` (the first series' value; for a range, \
its last), and `values` (every number, flattened). `expect` fails the step when a value is \
above `max` or below `min` (naming the series and the number), when an expression in `that` \
(over `result`) is false, or when there is no data (unless `allow_empty: true`) — a canary \
gate: `query: sum(rate(http_requests_total{code=~\"5..\"}[5m])) / \
sum(rate(http_requests_total[5m]))`, `expect: {max: 0.01}`. Prometheus's errors (a PromQL \
parse error) fail the step with its message. `--dry-run` runs it (a query changes nothing).";

/// The `prometheus.query` action.
pub struct PrometheusQuery;

#[async_trait]
impl Action for PrometheusQuery {
    fn spec(&self) -> ActionSpec {
        ActionSpec::new::<QueryInput, QueryOutput>(
            "prometheus.query",
            "Run an instant or range PromQL query, with thresholds on the numbers.",
            DOC,
        )
        .runs_in_dry_run()
    }

    async fn run(&self, input: Value, cx: &StepContext) -> Result<Value, ActionError> {
        let input: QueryInput = crate::parse(input)?;
        let base = reqwest::Url::parse(&input.url).map_err(|e| {
            ActionError::permanent(format!("`url`: `{}` is not a URL ({e})", input.url))
        })?;
        let path = if input.range.is_some() {
            "api/v1/query_range"
        } else {
            "api/v1/query"
        };
        let mut url = base.clone();
        url.path_segments_mut()
            .map_err(|_| ActionError::permanent("`url` cannot be a base for paths"))?
            .pop_if_empty()
            .extend(path.split('/'));
        let mut form: Vec<(String, String)> = vec![("query".into(), input.query.clone())];
        let now = jiff::Timestamp::now();
        match &input.range {
            Some(r) => {
                let end = match &r.end {
                    Some(v) => time_param(v)?,
                    None => seconds(now),
                };
                let start = match (&r.start, r.last) {
                    (Some(v), None) => time_param(v)?,
                    (None, Some(last)) => {
                        let end_secs: f64 = end.parse().unwrap_or(0.0);
                        format!("{:.3}", end_secs - last.get().as_secs_f64())
                    }
                    _ => {
                        return Err(ActionError::permanent(
                            "`range` needs exactly one of `last` or `start`",
                        ))
                    }
                };
                form.push(("start".into(), start));
                form.push(("end".into(), end));
                form.push((
                    "step".into(),
                    format!("{}", r.step.get().as_secs_f64().max(0.001)),
                ));
            }
            None => {
                if let Some(t) = &input.time {
                    form.push(("time".into(), time_param(t)?));
                }
            }
        }
        let mut headers = opsbook_http_headers(&input.headers)?;
        opsbook_http_auth(input.auth.as_ref(), &mut headers, &mut url)?;
        let call = Call {
            client: opsbook_http::client_for(cx, &Default::default(), true)?,
            // POST with a form: long queries do not hit URL length limits.
            method: opsbook_http::input::Method::Post,
            url,
            headers,
            body: Body::Form(form),
            timeout: input
                .timeout
                .map(|t| t.get())
                .unwrap_or(Duration::from_secs(30)),
            retries: 2,
            max_retry_after: Duration::from_secs(30),
            max_response: 64 << 20,
            save_to: None,
            cx,
            label: Some(format!("query `{}`", input.query)),
            // A query reads only: retried like a GET although it is sent as a POST.
            idempotent: true,
        };
        let resp = send::send(&call).await?;
        let body = resp.json.clone().unwrap_or(Value::Null);
        if body.get("status").and_then(Value::as_str) != Some("success") {
            let why = body
                .get("error")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| format!("status {}: {}", resp.status, resp.excerpt()));
            let kind = body
                .get("errorType")
                .and_then(Value::as_str)
                .unwrap_or("error");
            let message = format!("Prometheus refused `{}`: {kind}: {why}", input.query);
            let e = if resp.status >= 500 || kind == "timeout" || kind == "unavailable" {
                ActionError::retryable(message)
            } else {
                ActionError::permanent(message)
            };
            return Err(e.with_details(resp.to_value()));
        }
        let out = interpret(&body["data"], &body)?;
        cx.log.line(
            LogStream::Stdout,
            &format!(
                "{} series; value {}",
                out["series"].as_array().map_or(0, Vec::len),
                out["value"]
            ),
        );
        if let Some(expect) = &input.expect {
            check(&out, expect, &input.query)?;
        }
        Ok(out)
    }
}

fn opsbook_http_headers(
    h: &IndexMap<String, String>,
) -> Result<reqwest::header::HeaderMap, ActionError> {
    let mut map = reqwest::header::HeaderMap::new();
    for (k, v) in h {
        let name = reqwest::header::HeaderName::from_bytes(k.as_bytes()).map_err(|_| {
            ActionError::permanent(format!("`headers`: `{k}` is not a header name"))
        })?;
        map.append(name, send::header_value(k, v)?);
    }
    Ok(map)
}

fn opsbook_http_auth(
    auth: Option<&Auth>,
    headers: &mut reqwest::header::HeaderMap,
    url: &mut reqwest::Url,
) -> Result<(), ActionError> {
    opsbook_http::apply_auth(auth, headers, url)
}

fn seconds(t: jiff::Timestamp) -> String {
    format!("{:.3}", t.as_millisecond() as f64 / 1000.0)
}

/// A time input as Prometheus takes it (Unix seconds).
fn time_param(v: &Value) -> Result<String, ActionError> {
    match v {
        Value::Number(n) => Ok(n.to_string()),
        Value::String(s) => {
            if s.trim().parse::<f64>().is_ok() {
                return Ok(s.trim().to_string());
            }
            s.trim()
                .parse::<jiff::Timestamp>()
                .map(seconds)
                .map_err(|e| ActionError::permanent(format!("`{s}` is not a time: {e}")))
        }
        other => Err(ActionError::permanent(format!("`{other}` is not a time"))),
    }
}

/// A sample value: Prometheus sends numbers as text; NaN and infinities have no JSON number.
fn number(v: &Value) -> Option<f64> {
    let f = v.as_str()?.parse::<f64>().ok()?;
    f.is_finite().then_some(f)
}

/// The `data` of an answer as the result gives it.
fn interpret(data: &Value, body: &Value) -> Result<Value, ActionError> {
    let kind = data
        .get("resultType")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let result = &data["result"];
    let mut series = Vec::new();
    let mut values: Vec<f64> = Vec::new();
    let mut first: Option<f64> = None;
    match kind.as_str() {
        "vector" => {
            for s in result.as_array().into_iter().flatten() {
                let v = s["value"].get(1).and_then(number);
                if let Some(v) = v {
                    values.push(v);
                }
                if series.is_empty() {
                    first = v;
                }
                let mut entry = json!({"metric": s["metric"], "value": v});
                // +Inf, -Inf and NaN have no JSON number: kept as text for the thresholds.
                if v.is_none() {
                    entry["non_finite"] = s["value"].get(1).cloned().unwrap_or(Value::Null);
                }
                series.push(entry);
            }
        }
        "matrix" => {
            for s in result.as_array().into_iter().flatten() {
                let points: Vec<(f64, Option<f64>)> = s["values"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| (p[0].as_f64().unwrap_or(0.0), p.get(1).and_then(number)))
                    .collect();
                values.extend(points.iter().filter_map(|(_, v)| *v));
                if series.is_empty() {
                    first = points.last().and_then(|(_, v)| *v);
                }
                let non_finite: Vec<Value> = s["values"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| p.get(1).and_then(number).is_none())
                    .filter_map(|p| p.get(1).cloned())
                    .collect();
                let mut entry = json!({"metric": s["metric"], "values": points});
                if !non_finite.is_empty() {
                    entry["non_finite"] = Value::Array(non_finite);
                }
                series.push(entry);
            }
        }
        "scalar" => {
            first = result.get(1).and_then(number);
            values.extend(first);
        }
        "string" => {}
        other => {
            return Err(ActionError::permanent(format!(
                "Prometheus answered an unknown result type `{other}`"
            )))
        }
    }
    let warnings: Vec<Value> = body
        .get("warnings")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    Ok(json!({
        "result_type": kind,
        "empty": series.is_empty() && values.is_empty(),
        "series": series,
        "value": first,
        "values": values,
        "warnings": warnings,
    }))
}

/// Applies the thresholds; the error names the series and the number.
fn check(out: &Value, expect: &Expect, query: &str) -> Result<(), ActionError> {
    let fail = |message: String| Err(ActionError::permanent(message).with_details(out.clone()));
    let thresholds = expect.max.is_some() || expect.min.is_some();
    if thresholds && !expect.allow_empty && out["values"].as_array().is_none_or(Vec::is_empty) {
        return fail(format!(
            "`{query}` returned no data, so its thresholds cannot pass (set `expect.allow_empty: true` if no data is fine)"
        ));
    }
    for s in out["series"].as_array().into_iter().flatten() {
        let labels = labels(&s["metric"]);
        let mut nums: Vec<f64> = s["value"].as_f64().into_iter().collect();
        nums.extend(
            s["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p.get(1).and_then(Value::as_f64)),
        );
        // +Inf and -Inf count (a latency quantile above the last bucket is +Inf); NaN (0/0, no
        // traffic) fails thresholds unless no data is fine.
        let specials: Vec<String> = match &s["non_finite"] {
            Value::String(t) => vec![t.clone()],
            Value::Array(list) => list
                .iter()
                .filter_map(|t| t.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        };
        for t in &specials {
            match t.as_str() {
                "+Inf" | "Inf" => nums.push(f64::INFINITY),
                "-Inf" => nums.push(f64::NEG_INFINITY),
                _ if thresholds && !expect.allow_empty => {
                    return fail(format!(
                        "`{query}` is NaN for {labels} (nothing to compute it from), so its thresholds cannot pass"
                    ))
                }
                _ => {}
            }
        }
        for v in nums {
            if let Some(max) = expect.max {
                if v > max {
                    return fail(format!("`{query}` is {v} for {labels}, above max {max}"));
                }
            }
            if let Some(min) = expect.min {
                if v < min {
                    return fail(format!("`{query}` is {v} for {labels}, below min {min}"));
                }
            }
        }
    }
    if out["result_type"] == "scalar" {
        if let Some(v) = out["value"].as_f64() {
            if expect.max.is_some_and(|m| v > m) || expect.min.is_some_and(|m| v < m) {
                return fail(format!("`{query}` is {v}, outside the thresholds"));
            }
        }
    }
    for expr in &expect.that {
        match opsbook_http::holds(expr, out) {
            Ok(true) => {}
            Ok(false) => return fail(format!("`{expr}` is false (value {})", out["value"])),
            Err(e) => return fail(format!("expect.that: {e}")),
        }
    }
    Ok(())
}

/// `{job="api", code="500"}`.
fn labels(metric: &Value) -> String {
    let parts: Vec<String> = metric
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}=\"{}\"", v.as_str().unwrap_or_default()))
        .collect();
    format!("{{{}}}", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_and_matrices_become_numbers() {
        let body = json!({"status": "success", "data": {"resultType": "vector", "result": [
            {"metric": {"job": "api"}, "value": [1700000000.0, "0.5"]},
            {"metric": {"job": "web"}, "value": [1700000000.0, "NaN"]},
        ]}});
        let out = interpret(&body["data"], &body).unwrap();
        assert_eq!(out["value"], 0.5);
        assert_eq!(out["values"], json!([0.5]));
        assert_eq!(out["series"][1]["value"], Value::Null);
        let e = check(
            &out,
            &Expect {
                max: Some(0.1),
                ..Default::default()
            },
            "q",
        )
        .unwrap_err();
        assert!(
            e.message.contains("0.5 for {job=\"api\"}, above max 0.1"),
            "{}",
            e.message
        );
        // The NaN series (web) fails a threshold unless no data is fine.
        assert!(check(
            &out,
            &Expect {
                max: Some(1.0),
                allow_empty: true,
                ..Default::default()
            },
            "q"
        )
        .is_ok());

        let body = json!({"status": "success", "data": {"resultType": "matrix", "result": [
            {"metric": {}, "values": [[1.0, "1"], [2.0, "3"]]},
        ]}});
        let out = interpret(&body["data"], &body).unwrap();
        assert_eq!(out["value"], 3.0);
        assert_eq!(out["values"], json!([1.0, 3.0]));
        assert!(check(
            &out,
            &Expect {
                min: Some(2.0),
                ..Default::default()
            },
            "q"
        )
        .is_err());

        let empty = json!({"status": "success", "data": {"resultType": "vector", "result": []}});
        let out = interpret(&empty["data"], &empty).unwrap();
        assert_eq!(out["empty"], true);
        assert!(check(
            &out,
            &Expect {
                max: Some(1.0),
                ..Default::default()
            },
            "q"
        )
        .is_err());
        assert!(check(
            &out,
            &Expect {
                max: Some(1.0),
                allow_empty: true,
                ..Default::default()
            },
            "q"
        )
        .is_ok());

        // +Inf is above any max; NaN fails a threshold.
        let inf = json!({"status": "success", "data": {"resultType": "vector", "result": [
            {"metric": {"le": "x"}, "value": [1.0, "+Inf"]},
        ]}});
        let out = interpret(&inf["data"], &inf).unwrap();
        let e = check(
            &out,
            &Expect {
                max: Some(0.5),
                allow_empty: true,
                ..Default::default()
            },
            "q",
        )
        .unwrap_err();
        assert!(
            e.message.contains("is inf") && e.message.contains("above max"),
            "{}",
            e.message
        );
        let nan = json!({"status": "success", "data": {"resultType": "vector", "result": [
            {"metric": {}, "value": [1.0, "NaN"]}, {"metric": {"a": "b"}, "value": [1.0, "0.1"]},
        ]}});
        let out = interpret(&nan["data"], &nan).unwrap();
        let e = check(
            &out,
            &Expect {
                max: Some(0.5),
                ..Default::default()
            },
            "q",
        )
        .unwrap_err();
        assert!(e.message.contains("NaN"), "{}", e.message);
    }
}
