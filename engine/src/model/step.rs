//! Steps: what runs, when, how often and what it yields.

use indexmap::IndexMap;
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{DurationSpec, NAME_PATTERN, STEP_ID_PATTERN};

/// One step of a runbook.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Unique in the runbook: lowercase letters, digits, `_` and `-`, starting with a letter.
    /// Templates refer to the step as `steps.<id>` (`steps['<id>']` when it has a `-`).
    #[schemars(pattern(STEP_ID_PATTERN))]
    pub id: String,
    /// A short title for progress lines, reports and the UI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// What the step does and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The action: `plugin.action` (`shell`, `ssh.run`, `http.request`, `k8s.delete` …).
    /// `opsbook actions` lists them.
    #[schemars(length(min = 1))]
    pub uses: String,
    /// The action's inputs, checked against its input schema. Strings are templates.
    #[serde(default, rename = "with", skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "with_schema")]
    pub inputs: Option<Value>,
    /// Steps this one waits for. Default: the step just above it. `needs: []` starts at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub needs: Option<Needs>,
    /// When to run, given how the needed steps ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_on: Option<RunOn>,
    /// A bare expression (no braces); false means the step is skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<When>,
    /// Run once per item of this list (a literal list or a template giving one), with `item`
    /// and `index` bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "for_each_schema")]
    pub for_each: Option<Value>,
    /// With `for_each`: at most this many items in flight.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::whole::opt_u32"
    )]
    #[schemars(range(min = 1))]
    pub concurrency: Option<u32>,
    /// Retry policy, or polling with `until`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
    /// Time limit: the action is cancelled and the step is `timed_out`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<DurationSpec>,
    /// The step may fail without failing the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continue_on_error: Option<bool>,
    /// Named values computed from `result` (the action's raw output). Strings are templates.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    #[schemars(extend("propertyNames" = {"pattern": NAME_PATTERN}))]
    pub outputs: IndexMap<String, Value>,
    /// Extra environment for process-based actions. Values are templates.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    #[schemars(schema_with = "env_schema")]
    pub env: IndexMap<String, Value>,
    /// Run if this step succeeded and the run later fails; rollbacks run in reverse order of
    /// completion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RollbackStep>,
}

/// A rollback body: an action call undoing what its step did.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackStep {
    /// A short title for progress and reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// What the rollback does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The action to call.
    #[schemars(length(min = 1))]
    pub uses: String,
    /// The action's inputs. Strings are templates; `steps.<this step>` is in scope.
    #[serde(default, rename = "with", skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "with_schema")]
    pub inputs: Option<Value>,
    /// Extra environment for process-based actions.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    #[schemars(schema_with = "env_schema")]
    pub env: IndexMap<String, Value>,
    /// Time limit for the rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<DurationSpec>,
    /// Retry policy for the rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
}

/// `needs`: one id or a list of ids.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(untagged)]
pub enum Needs {
    /// A single step id.
    One(#[schemars(pattern(STEP_ID_PATTERN))] String),
    /// A list of step ids; `[]` starts at once.
    Many(#[schemars(inner(pattern(STEP_ID_PATTERN)))] Vec<String>),
}

impl Needs {
    /// The ids, in order.
    pub fn ids(&self) -> Vec<&str> {
        match self {
            Needs::One(s) => vec![s.as_str()],
            Needs::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

/// When a step runs, given how the steps it needs ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunOn {
    /// Every needed step succeeded or was skipped (the default).
    #[default]
    Success,
    /// Some needed step failed or timed out.
    Failure,
    /// Whatever happened to the needed steps.
    Always,
}

/// `when`: a bare expression, or a literal boolean.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(untagged)]
pub enum When {
    /// A literal `true` or `false`.
    Literal(bool),
    /// A bare Jinja expression, without braces: `steps.find.outputs.count > 0`.
    Expr(#[schemars(length(min = 1))] String),
}

/// How the delay between attempts grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Backoff {
    /// The same delay each time.
    #[default]
    Fixed,
    /// The delay doubles after each attempt, up to `max_delay`.
    Exponential,
}

/// Retry policy.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    /// Total tries, the first included.
    #[serde(default = "default_attempts", deserialize_with = "super::whole::u32")]
    #[schemars(range(min = 1))]
    pub attempts: u32,
    /// Wait before the second try (default `1s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<DurationSpec>,
    /// `fixed` (default) or `exponential`.
    #[serde(default)]
    pub backoff: Backoff,
    /// Cap on the delay with exponential backoff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_delay: Option<DurationSpec>,
    /// Randomise each delay by up to ±50% so retrying clients do not march in step.
    #[serde(default)]
    pub jitter: bool,
    /// A bare expression over `result`: keep trying until it is true (polling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub until: Option<String>,
}

fn default_attempts() -> u32 {
    3
}

fn with_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "description": "The action's inputs, a mapping checked against the action's input schema (`opsbook actions NAME`). Strings are templates. A single template string that gives a mapping is accepted too.",
        "anyOf": [{"type": "object"}, {"type": "string"}]
    })
}

fn for_each_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "description": "Run once per item: a literal list, or a template that gives a list.",
        "anyOf": [{"type": "array"}, {"type": "string"}]
    })
}

pub(crate) fn env_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "description": "Environment variables. Values are templates; numbers and booleans are passed as text.",
        "type": "object",
        "propertyNames": {"pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
        "additionalProperties": {"type": ["string", "number", "boolean"]}
    })
}
