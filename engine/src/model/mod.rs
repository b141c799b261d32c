//! The runbook types: what `runbooks/*.yaml` may contain (see `docs/format.md`).
//!
//! Every type derives `Deserialize` with `deny_unknown_fields` and `JsonSchema`, so the checked-in
//! `schemas/runbook.schema.json` is generated from exactly these definitions. Doc comments here
//! become the descriptions editors show on hover and completion.

mod duration;
mod params;
mod step;
mod whole;

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use duration::{
    format_duration, parse_duration, DurationError, DurationSpec, DURATION_PATTERN,
};
pub use params::{ItemsSpec, ParamSpec, ParamType};
pub use step::{Backoff, Needs, Retry, RollbackStep, RunOn, Step, When};

/// The regular expression every step id matches.
pub const STEP_ID_PATTERN: &str = "^[a-z][a-z0-9_-]*$";

/// The regular expression every param, var, secret and output name matches.
pub const NAME_PATTERN: &str = "^[A-Za-z_][A-Za-z0-9_]*$";

/// A runbook: typed params, computed vars, secrets, and a DAG of steps with failure and cleanup
/// phases.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "opsbook runbook")]
pub struct Runbook {
    /// The format version. Always `1`.
    #[schemars(range(min = 1, max = 1))]
    #[serde(deserialize_with = "whole::u32")]
    pub version: u32,
    /// A short name, shown in progress, reports and run lists.
    #[schemars(length(min = 1))]
    pub name: String,
    /// What the runbook does and when to run it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Typed inputs: `-p key=value` on the command line, `--params-file`, or a form in the UI.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    #[schemars(extend("propertyNames" = {"pattern": NAME_PATTERN}))]
    pub params: IndexMap<String, ParamSpec>,
    /// Values computed once at start; templates that may use `params`, `env`, `secrets`, `run`
    /// and vars declared above them.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    #[schemars(extend("propertyNames" = {"pattern": NAME_PATTERN}))]
    pub vars: IndexMap<String, Value>,
    /// Environment for process-based actions (shell, ssh, terraform). Values are templates.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    #[schemars(schema_with = "step::env_schema")]
    pub env: IndexMap<String, Value>,
    /// Secrets resolved at start and masked as `***` in logs, reports and errors.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    #[schemars(extend("propertyNames" = {"pattern": NAME_PATTERN}))]
    pub secrets: IndexMap<String, SecretSource>,
    /// Hosts and groups for `ssh.*` actions: a path to an Ansible YAML or INI inventory
    /// (relative to the runbook), or an inline inventory in Ansible's YAML layout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inventory: Option<Inventory>,
    /// Settings that apply to every step unless the step sets its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defaults: Option<Defaults>,
    /// At most this many steps (or `for_each` items) in flight at once.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole::opt_u32"
    )]
    #[schemars(range(min = 1))]
    pub concurrency: Option<u32>,
    /// Time limit for the whole run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<DurationSpec>,
    /// The main steps. Without `needs`, each step waits for the one above it.
    #[schemars(length(min = 1))]
    pub steps: Vec<Step>,
    /// Steps run when the run has failed, after the main steps (and their rollbacks).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_failure: Vec<Step>,
    /// Steps that always run last, whatever happened.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub finally: Vec<Step>,
    /// The run's own outputs, templates over `steps`, `params` and `vars`.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    #[schemars(extend("propertyNames" = {"pattern": NAME_PATTERN}))]
    pub outputs: IndexMap<String, Value>,
}

/// Where a secret comes from. Exactly one key.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SecretSource {
    /// The value of an environment variable of the `opsbook` process.
    Env(#[schemars(length(min = 1))] String),
    /// The contents of a file (one trailing newline is dropped).
    File(#[schemars(length(min = 1))] String),
    /// The standard output of a command run through `sh -c` (one trailing newline is dropped).
    Command(#[schemars(length(min = 1))] String),
    /// A secret of AWS Secrets Manager, by name or ARN (its `SecretString`); `NAME#KEY` takes
    /// one key of a JSON secret. Resolved by the AWS plugin with the standard credential chain.
    AwsSecretsmanager(#[schemars(length(min = 1))] String),
    /// A parameter of AWS Systems Manager Parameter Store (`/path/name`), decrypted when it is a
    /// `SecureString`. Resolved by the AWS plugin with the standard credential chain.
    AwsSsm(#[schemars(length(min = 1))] String),
}

impl SecretSource {
    /// The source's key in the runbook (`env`, `aws_ssm` …).
    pub fn kind(&self) -> &'static str {
        match self {
            SecretSource::Env(_) => "env",
            SecretSource::File(_) => "file",
            SecretSource::Command(_) => "command",
            SecretSource::AwsSecretsmanager(_) => "aws_secretsmanager",
            SecretSource::AwsSsm(_) => "aws_ssm",
        }
    }
}

/// An inventory: a path to a file, or an inline Ansible-style YAML inventory.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Inventory {
    /// Path to an Ansible YAML or INI inventory, relative to the runbook file.
    Path(String),
    /// An inline inventory: groups with `hosts`, `vars` and `children`, as in Ansible's YAML
    /// inventories (`all: {hosts: {web1: {ansible_host: 10.0.0.5}}}`).
    Inline(IndexMap<String, Value>),
}

/// Settings applied to every step that does not set its own.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// Time limit for each step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<DurationSpec>,
    /// Retry policy for each step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
    /// Let steps fail without failing the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continue_on_error: Option<bool>,
    /// Items in flight for each `for_each` step.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole::opt_u32"
    )]
    #[schemars(range(min = 1))]
    pub concurrency: Option<u32>,
}

/// The three step lists of a runbook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// `steps:`
    Main,
    /// `on_failure:`
    OnFailure,
    /// `finally:`
    Finally,
}

impl Phase {
    /// All phases in the order they run.
    pub const ALL: [Phase; 3] = [Phase::Main, Phase::OnFailure, Phase::Finally];

    /// The runbook key that holds the phase's steps.
    pub fn key(self) -> &'static str {
        match self {
            Phase::Main => "steps",
            Phase::OnFailure => "on_failure",
            Phase::Finally => "finally",
        }
    }
}

impl Runbook {
    /// The steps of one phase.
    pub fn phase(&self, phase: Phase) -> &[Step] {
        match phase {
            Phase::Main => &self.steps,
            Phase::OnFailure => &self.on_failure,
            Phase::Finally => &self.finally,
        }
    }
}
