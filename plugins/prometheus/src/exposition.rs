//! `prometheus.push`: metrics in the text exposition format to a Pushgateway group.

use std::time::Duration;

use async_trait::async_trait;
use indexmap::IndexMap;
use opsbook_engine::action::{Action, ActionError, ActionSpec, LogStream, StepContext};
use opsbook_engine::model::DurationSpec;
use opsbook_http::reqwest;
use opsbook_http::send::{self, Body, Call};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// A metric's type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MetricType {
    /// A value that goes up and down (the default).
    #[default]
    Gauge,
    /// A count that only goes up.
    Counter,
    /// No type.
    Untyped,
}

/// One sample to push.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Metric {
    /// The metric name (`deploy_duration_seconds`).
    pub name: String,
    /// The value (a number, or `NaN`, `+Inf`, `-Inf` as text).
    pub value: Value,
    /// `gauge` (default), `counter` or `untyped`.
    #[serde(default, rename = "type")]
    pub kind: MetricType,
    /// The `# HELP` text.
    #[serde(default)]
    pub help: Option<String>,
    /// Labels of this sample.
    #[serde(default)]
    pub labels: IndexMap<String, Value>,
}

/// How the group is updated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PushMethod {
    /// Replace every metric of the group (PUT; the default).
    #[default]
    Replace,
    /// Replace only the metrics of the same name (POST).
    Add,
    /// Delete the whole group (DELETE); `metrics` must be empty.
    Delete,
}

/// `prometheus.push` inputs.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PushInput {
    /// The Pushgateway (`http://pushgateway:9091`).
    pub url: String,
    /// The `job` of the group.
    pub job: String,
    /// More grouping labels (`{instance: web1}`).
    #[serde(default)]
    pub grouping: IndexMap<String, Value>,
    /// The samples.
    #[serde(default)]
    pub metrics: Vec<Metric>,
    /// `replace` (PUT, default), `add` (POST) or `delete` (DELETE the group).
    #[serde(default)]
    pub method: PushMethod,
    /// Time limit per attempt (default 15s).
    #[serde(default)]
    pub timeout: Option<DurationSpec>,
}

/// What `prometheus.push` returns.
#[derive(Debug, Serialize, JsonSchema)]
pub struct PushOutput {
    /// The group's URL.
    pub url: String,
    /// Samples sent.
    pub samples: usize,
    /// `replace`, `add` or `delete`.
    pub method: String,
    /// Under `--dry-run`: the body that would have been sent.
    pub would_send: Option<String>,
}

const DOC: &str = "\
Pushes samples to a Pushgateway group (`job` plus `grouping` labels) in the text exposition \
format: `method: replace` (PUT, the default) replaces the group's metrics, `add` (POST) only \
those of the same names, `delete` removes the group. Names and label names are checked \
(`[a-zA-Z_:][a-zA-Z0-9_:]*`, labels without `:`); label values are escaped; a grouping value \
with `/` travels base64-encoded as the Pushgateway expects. Samples of one name share one \
`# TYPE` and `# HELP`. Pushgateway errors fail the step with its message. `--dry-run` sends \
nothing and shows the body.";

/// The `prometheus.push` action.
pub struct PrometheusPush;

#[async_trait]
impl Action for PrometheusPush {
    fn spec(&self) -> ActionSpec {
        ActionSpec::new::<PushInput, PushOutput>(
            "prometheus.push",
            "Push gauges and counters with labels to a Prometheus Pushgateway.",
            DOC,
        )
    }

    async fn run(&self, input: Value, cx: &StepContext) -> Result<Value, ActionError> {
        let input: PushInput = crate::parse(input)?;
        let url = group_url(&input.url, &input.job, &input.grouping)?;
        let (method, body) = match input.method {
            PushMethod::Delete if !input.metrics.is_empty() => {
                return Err(ActionError::permanent(
                    "`method: delete` removes the whole group: give no `metrics`",
                ))
            }
            PushMethod::Delete => (opsbook_http::input::Method::Delete, String::new()),
            PushMethod::Replace => (opsbook_http::input::Method::Put, render(&input.metrics)?),
            PushMethod::Add => (opsbook_http::input::Method::Post, render(&input.metrics)?),
        };
        let name = match input.method {
            PushMethod::Replace => "replace",
            PushMethod::Add => "add",
            PushMethod::Delete => "delete",
        };
        if cx.dry_run {
            cx.log.line(
                LogStream::Stdout,
                &format!("would {name} {url} with:\n{body}"),
            );
            return Ok(
                json!({"url": url.to_string(), "samples": input.metrics.len(), "method": name, "would_send": body}),
            );
        }
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::CONTENT_TYPE,
            reqwest::header::HeaderValue::from_static("text/plain; version=0.0.4"),
        );
        let call = Call {
            client: opsbook_http::client_for(cx, &Default::default(), true)?,
            method,
            url: url.clone(),
            headers,
            body: if body.is_empty() {
                Body::Empty
            } else {
                Body::Raw(body)
            },
            timeout: input
                .timeout
                .map(|t| t.get())
                .unwrap_or(Duration::from_secs(15)),
            retries: 2,
            max_retry_after: Duration::from_secs(30),
            max_response: 1 << 20,
            save_to: None,
            cx,
            label: None,
            idempotent: false,
        };
        let resp = send::send(&call).await?;
        if !(200..300).contains(&resp.status) {
            let message = format!(
                "the Pushgateway refused the push ({} {}): {}",
                resp.status,
                resp.reason,
                resp.excerpt()
            );
            let e = if resp.status >= 500 {
                ActionError::retryable(message)
            } else {
                ActionError::permanent(message)
            };
            return Err(e.with_details(resp.to_value()));
        }
        Ok(json!({"url": url.to_string(), "samples": input.metrics.len(), "method": name}))
    }
}

fn valid_name(name: &str, colons: bool) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic() || (colons && c == ':'))
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric() || (colons && c == ':'))
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// `/metrics/job/<job>/<label>/<value>…`, base64url for values that need it.
fn group_url(
    base: &str,
    job: &str,
    grouping: &IndexMap<String, Value>,
) -> Result<reqwest::Url, ActionError> {
    let mut url = reqwest::Url::parse(base)
        .map_err(|e| ActionError::permanent(format!("`url`: `{base}` is not a URL ({e})")))?;
    if job.is_empty() {
        return Err(ActionError::permanent("`job` cannot be empty"));
    }
    let mut parts: Vec<(String, String)> = vec![("job".into(), job.to_string())];
    for (k, v) in grouping {
        if !valid_name(k, false) || k.starts_with("__") {
            return Err(ActionError::permanent(format!(
                "`grouping`: `{k}` is not a label name"
            )));
        }
        parts.push((k.clone(), text(v)));
    }
    {
        let mut segs = url
            .path_segments_mut()
            .map_err(|_| ActionError::permanent("`url` cannot be a base for paths"))?;
        segs.pop_if_empty();
        segs.push("metrics");
        for (k, v) in &parts {
            if v.is_empty() || v.contains('/') {
                use base64::Engine;
                let enc = base64::engine::general_purpose::URL_SAFE.encode(v);
                segs.push(&format!("{k}@base64"));
                // An empty value is `=` in base64url, as the Pushgateway documents.
                segs.push(if enc.is_empty() { "=" } else { &enc });
            } else {
                segs.push(k);
                segs.push(v);
            }
        }
    }
    Ok(url)
}

/// The samples in the text exposition format (one `# TYPE`/`# HELP` per name).
pub fn render(metrics: &[Metric]) -> Result<String, ActionError> {
    let mut by_name: IndexMap<&str, Vec<&Metric>> = IndexMap::new();
    for m in metrics {
        if !valid_name(&m.name, true) {
            return Err(ActionError::permanent(format!(
                "`{}` is not a metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)",
                m.name
            )));
        }
        by_name.entry(m.name.as_str()).or_default().push(m);
    }
    let mut out = String::new();
    for (name, samples) in by_name {
        let first = samples[0];
        if samples.iter().any(|s| s.kind != first.kind) {
            return Err(ActionError::permanent(format!(
                "`{name}` is given with two different types"
            )));
        }
        if let Some(help) = samples.iter().find_map(|s| s.help.as_deref()) {
            out.push_str(&format!(
                "# HELP {name} {}\n",
                help.replace('\\', "\\\\").replace('\n', "\\n")
            ));
        }
        let kind = match first.kind {
            MetricType::Gauge => "gauge",
            MetricType::Counter => "counter",
            MetricType::Untyped => "untyped",
        };
        out.push_str(&format!("# TYPE {name} {kind}\n"));
        for s in samples {
            let value = sample_value(&s.value).ok_or_else(|| {
                ActionError::permanent(format!(
                    "the value of `{name}` is {}, not a number",
                    s.value
                ))
            })?;
            if first.kind == MetricType::Counter && value.starts_with('-') {
                return Err(ActionError::permanent(format!(
                    "`{name}` is a counter and cannot be negative ({value})"
                )));
            }
            out.push_str(name);
            if !s.labels.is_empty() {
                let mut labels = Vec::new();
                for (k, v) in &s.labels {
                    if !valid_name(k, false) || k.starts_with("__") {
                        return Err(ActionError::permanent(format!(
                            "`{name}`: `{k}` is not a label name"
                        )));
                    }
                    let v = text(v)
                        .replace('\\', "\\\\")
                        .replace('"', "\\\"")
                        .replace('\n', "\\n");
                    labels.push(format!("{k}=\"{v}\""));
                }
                out.push_str(&format!("{{{}}}", labels.join(",")));
            }
            out.push_str(&format!(" {value}\n"));
        }
    }
    Ok(out)
}

/// A sample value as the format writes it.
fn sample_value(v: &Value) -> Option<String> {
    match v {
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(if *b { "1" } else { "0" }.into()),
        Value::String(s) => match s.trim() {
            "NaN" | "nan" => Some("NaN".into()),
            "+Inf" | "Inf" | "inf" => Some("+Inf".into()),
            "-Inf" | "-inf" => Some("-Inf".into()),
            t => t.parse::<f64>().ok().map(|f| f.to_string()),
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(v: Value) -> Vec<Metric> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn exposition_groups_samples_and_escapes_labels() {
        let text = render(&metrics(json!([
            {"name": "deploys_total", "type": "counter", "value": 3, "help": "Deploys.", "labels": {"env": "prod"}},
            {"name": "deploys_total", "type": "counter", "value": 1, "labels": {"env": "a\"b\\c\nd"}},
            {"name": "up", "value": true},
            {"name": "ratio", "value": "0.25"},
        ])))
        .unwrap();
        assert_eq!(
            text,
            "# HELP deploys_total Deploys.\n# TYPE deploys_total counter\ndeploys_total{env=\"prod\"} 3\ndeploys_total{env=\"a\\\"b\\\\c\\nd\"} 1\n# TYPE up gauge\nup 1\n# TYPE ratio gauge\nratio 0.25\n"
        );
        assert!(render(&metrics(json!([{"name": "bad-name", "value": 1}]))).is_err());
        assert!(render(&metrics(
            json!([{"name": "x", "value": 1, "labels": {"__y": 1}}])
        ))
        .is_err());
        assert!(render(&metrics(
            json!([{"name": "c", "type": "counter", "value": -1}])
        ))
        .is_err());
        assert!(render(&metrics(json!([{"name": "x", "value": "lots"}]))).is_err());
    }

    #[test]
    fn grouping_values_with_slashes_go_base64() {
        let mut g = IndexMap::new();
        g.insert("instance".to_string(), json!("web1"));
        g.insert("path".to_string(), json!("/var/tmp"));
        let url = group_url("http://pg:9091/", "nightly backup", &g).unwrap();
        assert_eq!(
            url.as_str(),
            "http://pg:9091/metrics/job/nightly%20backup/instance/web1/path@base64/L3Zhci90bXA="
        );
    }
}
