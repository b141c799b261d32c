//! `k8s.wait`: until an object has a condition, an expression over it holds, it exists, or it
//! is deleted; watch-based, with a timeout, cancel-aware.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use opsbook_engine::action::{Action, ActionError, ActionSpec, LogStream, Registry, StepContext};
use opsbook_engine::model::DurationSpec;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::common::{condition, k8s_input, ms, parse, present, text};
use crate::health;
use crate::target::{to_value, Target};
use crate::watch::{until, Outcome};

pub(crate) fn register(r: &mut Registry) {
    r.register(Wait);
}

/// A `status.conditions` entry to wait for.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConditionSpec {
    /// The condition type (`Available`, `Ready`, `Complete`).
    #[serde(rename = "type")]
    pub kind: String,
    /// Its status (default `"True"`).
    #[serde(default = "true_text")]
    pub status: String,
    /// Its reason too, when given.
    #[serde(default)]
    pub reason: Option<String>,
}

fn true_text() -> String {
    "True".into()
}

k8s_input! {
    /// Input of `k8s.wait`.
    pub struct WaitInput {
        /// The kind: `Deployment`, or its plural or short name.
        pub kind: String,
        /// The API version; needed for kinds outside the built-in table.
        #[serde(default)]
        pub api_version: Option<String>,
        /// The object's name.
        pub name: String,
        /// Wait for this condition: `{type: Available, status: "True"}`.
        #[serde(default)]
        pub condition: Option<ConditionSpec>,
        /// Wait until this expression over `object` holds:
        /// `object.status.readyReplicas == object.spec.replicas` (a bare expression, no `{{ }}`).
        #[serde(default)]
        pub that: Option<String>,
        /// Wait until the object is gone.
        #[serde(default)]
        pub deleted: bool,
        /// How long to wait (default 5m).
        #[serde(default)]
        pub timeout: Option<DurationSpec>,
    }
}

const DOC: &str = "Waits until the object has the `condition` (`{type: Available, status: \
\"True\"}`, optionally `reason`), until the expression `that` over `object` holds (a bare \
expression as in `assert`: `object.status.readyReplicas == object.spec.replicas`; pods have \
their `health`: `not object.health.unhealthy`), until it is `deleted: true`, or, with none of \
them, until it exists. `condition` and `that` together must both hold. It follows the object \
with list + watch (no polling), and fails at `timeout` (default 5m) with what was last seen \
(its conditions) in the error. An expression that cannot be evaluated yet (a field not there \
yet) counts as not holding. Result: `met`, `object` (the last state; `null` when deleted), \
`elapsed_ms`. `--dry-run`: reads the object once and reports whether it holds now, without \
waiting or failing.";

/// `k8s.wait`.
pub struct Wait;

/// Whether the object holds; `Err` is why an expression could not be evaluated.
fn holds(input: &WaitInput, obj: Option<&Value>) -> Result<bool, String> {
    let Some(obj) = obj else {
        return Ok(input.deleted);
    };
    if input.deleted {
        return Ok(false);
    }
    if let Some(c) = &input.condition {
        let ok = condition(obj, &c.kind).is_some_and(|cond| {
            text(cond, "/status") == Some(c.status.as_str())
                && c.reason
                    .as_deref()
                    .is_none_or(|r| text(cond, "/reason") == Some(r))
        });
        if !ok {
            return Ok(false);
        }
    }
    if let Some(expr) = &input.that {
        let scope = opsbook_engine::template::to_template_value(&json!({ "object": obj }));
        return opsbook_engine::template::eval_bool(
            opsbook_engine::template::shared(),
            expr,
            &scope,
        )
        .map_err(|e| format!("`{expr}`: {e}"));
    }
    Ok(true)
}

fn goal(input: &WaitInput) -> String {
    let mut parts = Vec::new();
    if input.deleted {
        parts.push("deleted".to_string());
    }
    if let Some(c) = &input.condition {
        parts.push(format!("condition {}={}", c.kind, c.status));
    }
    if let Some(t) = &input.that {
        parts.push(format!("`{t}`"));
    }
    if parts.is_empty() {
        "exists".into()
    } else {
        parts.join(" and ")
    }
}

#[async_trait]
impl Action for Wait {
    fn spec(&self) -> ActionSpec {
        ActionSpec::new::<WaitInput, Value>(
            "k8s.wait",
            "Wait until a Kubernetes object has a condition, an expression over it holds, or it is deleted.",
            DOC,
        )
        .with_check()
    }

    async fn run(&self, input: Value, cx: &StepContext) -> Result<Value, ActionError> {
        let input: WaitInput = parse(input)?;
        if let Some(expr) = &input.that {
            opsbook_engine::template::check_expression(opsbook_engine::template::shared(), expr)
                .map_err(|e| ActionError::permanent(format!("`that`: {}", e.message)))?;
        }
        let started = Instant::now();
        let t = Target::new(
            cx,
            input.conn(),
            &input.namespace,
            input.api_version.as_deref(),
            &input.kind,
        )
        .await?;
        let label = t.shown(&input.name);
        let goal = goal(&input);
        let api = t.api();
        let is_pod = t.kind.ar.kind == "Pod";
        let shape = |o: &Value| {
            let o = present(o.clone(), &t.kind.ar.api_version, &t.kind.ar.kind);
            // A Secret's values never reach the report (`object` in the result or details).
            crate::read::mask_secret(cx, &o);
            if is_pod {
                health::with_health(o, health::Options::default())
            } else {
                o
            }
        };
        if cx.dry_run {
            let obj = crate::retry::read(cx, &format!("get {label}"), || api.get_opt(&input.name))
                .await?
                .map(|o| shape(&to_value(o)));
            let met = holds(&input, obj.as_ref()).unwrap_or(false);
            cx.log.line(
                LogStream::Stdout,
                &format!(
                    "dry run: {label} {} {goal} now; not waiting",
                    if met { "is" } else { "is not" }
                ),
            );
            return Ok(json!({"met": met, "object": obj, "elapsed_ms": ms(started)}));
        }
        let timeout = input
            .timeout
            .map(|d| d.get())
            .unwrap_or(Duration::from_secs(300));
        let mut last_error: Option<String> = None;
        let what = format!("{label} to be {goal}");
        let outcome = until(cx, api, &input.name, timeout, &what, |o| {
            let o = o.map(shape);
            match holds(&input, o.as_ref()) {
                Ok(true) => Ok(Some(o)),
                Ok(false) => Ok(None),
                Err(e) => {
                    last_error = Some(e);
                    Ok(None)
                }
            }
        })
        .await?;
        match outcome {
            Outcome::Done(obj) => {
                cx.log
                    .line(LogStream::Stdout, &format!("{label} is {goal}"));
                Ok(json!({"met": true, "object": obj, "elapsed_ms": ms(started)}))
            }
            Outcome::TimedOut(last) => {
                let seen = match &last {
                    None => "it does not exist".to_string(),
                    Some(o) => {
                        let conds: Vec<String> = o
                            .pointer("/status/conditions")
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                            .map(|c| {
                                format!(
                                    "{}={}{}",
                                    text(c, "/type").unwrap_or("?"),
                                    text(c, "/status").unwrap_or("?"),
                                    text(c, "/reason")
                                        .map(|r| format!(" ({r})"))
                                        .unwrap_or_default()
                                )
                            })
                            .collect();
                        if conds.is_empty() {
                            "it has no conditions".into()
                        } else {
                            format!("its conditions: {}", conds.join(", "))
                        }
                    }
                };
                let extra = last_error
                    .map(|e| format!("; the expression failed: {e}"))
                    .unwrap_or_default();
                Err(ActionError::retryable(format!(
                    "{label} was not {goal} within {}: {seen}{extra}",
                    opsbook_engine::model::format_duration(timeout)
                ))
                .with_details(
                    json!({"object": last.map(|o| shape(&o)), "elapsed_ms": ms(started)}),
                ))
            }
        }
    }
}
