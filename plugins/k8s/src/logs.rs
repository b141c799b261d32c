//! `k8s.logs`: a pod's (or selected pods') container logs: container, tail, since, previous.

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Pod;
use kube::api::LogParams;
use kube::Api;
use opsbook_engine::action::{Action, ActionError, ActionSpec, LogStream, Registry, StepContext};
use opsbook_engine::model::DurationSpec;
use serde_json::{json, Value};

use crate::common::{k8s_input, parse, selector, text, Selector};
use crate::target::Target;

pub(crate) fn register(r: &mut Registry) {
    r.register(Logs);
}

k8s_input! {
    /// Input of `k8s.logs`.
    pub struct LogsInput {
        /// The pod's name (or give `labels`).
        #[serde(default)]
        pub pod: Option<String>,
        /// Label selector of the pods (text or a mapping); running ones first.
        #[serde(default)]
        pub labels: Option<Selector>,
        /// At most this many pods of `labels` (default 10).
        #[serde(default)]
        #[schemars(range(min = 1))]
        pub max_pods: Option<usize>,
        /// The container (default: the pod's `kubectl.kubernetes.io/default-container`, else
        /// the first).
        #[serde(default)]
        pub container: Option<String>,
        /// Every container of the pod (init containers too).
        #[serde(default)]
        pub all_containers: bool,
        /// Only the last lines.
        #[serde(default)]
        #[schemars(range(min = 0))]
        pub tail: Option<i64>,
        /// Only lines newer than this (`10m`).
        #[serde(default)]
        pub since: Option<DurationSpec>,
        /// The previous (crashed) instance of the container: why a CrashLoopBackOff pod dies.
        #[serde(default)]
        pub previous: bool,
        /// Prefix each line with its RFC 3339 time.
        #[serde(default)]
        pub timestamps: bool,
        /// At most this many bytes per container (default 1 MiB).
        #[serde(default)]
        #[schemars(range(min = 1))]
        pub limit_bytes: Option<i64>,
        /// Also copy the lines into the step's log (default true).
        #[serde(default = "yes")]
        pub echo: bool,
    }
}

fn yes() -> bool {
    true
}

const DOC: &str = "Reads container logs of `pod`, or of the pods `labels` selects (running \
ones first, at most `max_pods`): `container` (default as kubectl: the \
`kubectl.kubernetes.io/default-container` annotation, else the first), `all_containers`, \
`tail` lines, `since` (a duration), `previous` (the crashed instance: why a CrashLoopBackOff \
pod dies), `timestamps`, `limit_bytes` (default 1 MiB). The lines also go to the step's log \
(prefixed `[pod/container]` when there are several streams) unless `echo: false`. Result: \
`logs` (all the text), `streams` (each `pod`, `container`, `logs`, `lines`), `lines`. \
`--dry-run`: runs (it changes nothing).";

/// `k8s.logs`.
pub struct Logs;

#[async_trait]
impl Action for Logs {
    fn spec(&self) -> ActionSpec {
        ActionSpec::new::<LogsInput, Value>(
            "k8s.logs",
            "Read container logs of a pod or of pods selected by labels.",
            DOC,
        )
        .runs_in_dry_run()
    }

    async fn run(&self, input: Value, cx: &StepContext) -> Result<Value, ActionError> {
        let input: LogsInput = parse(input)?;
        let t = Target::new(cx, input.conn(), &input.namespace, Some("v1"), "Pod").await?;
        let pods = crate::pods::find(
            cx,
            &t,
            input.pod.as_deref(),
            selector(&input.labels),
            input.max_pods.unwrap_or(10),
        )
        .await?;
        let typed: Api<Pod> = Api::namespaced(t.conn.client.clone(), &t.ns);
        let mut streams = Vec::new();
        for pod in &pods {
            let containers = if input.all_containers {
                crate::pods::containers(pod, true)
            } else {
                vec![crate::pods::container(pod, input.container.as_deref())?]
            };
            for c in containers {
                streams.push((text(pod, "/metadata/name").unwrap_or("").to_string(), c));
            }
        }
        let several = streams.len() > 1;
        let mut out = Vec::new();
        let mut all = String::new();
        let mut total_lines = 0;
        for (pod, container) in streams {
            let lp = LogParams {
                container: Some(container.clone()),
                tail_lines: input.tail,
                since_seconds: input.since.map(|d| d.get().as_secs().max(1) as i64),
                previous: input.previous,
                timestamps: input.timestamps,
                limit_bytes: Some(input.limit_bytes.unwrap_or(1 << 20)),
                ..Default::default()
            };
            let what = format!("logs of {}", crate::common::shown("Pod", Some(&t.ns), &pod))
                + &format!(" container {container}");
            let text = crate::retry::read(cx, &what, || typed.logs(&pod, &lp)).await?;
            let lines = text.lines().count();
            total_lines += lines;
            if input.echo {
                for line in text.lines() {
                    if several {
                        cx.log
                            .line(LogStream::Stdout, &format!("[{pod}/{container}] {line}"));
                    } else {
                        cx.log.line(LogStream::Stdout, line);
                    }
                }
            }
            if several {
                for line in text.lines() {
                    all.push_str(&format!("[{pod}/{container}] {line}\n"));
                }
            } else {
                all.push_str(&text);
            }
            out.push(json!({"pod": pod, "container": container, "logs": text, "lines": lines}));
        }
        Ok(json!({"logs": all, "streams": out, "lines": total_lines}))
    }
}
