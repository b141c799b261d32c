//! The action contract: what a plugin implements, and the registry the engine looks actions up in.
//!
//! An action is an async function from a JSON input (rendered, and checked against the action's
//! input schema) to a JSON output. The engine knows plugins only through this trait; the CLI
//! wires each plugin's `register` function into a [`Registry`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::resources::{InventorySource, RunResources};

/// What an action is: its name, its documentation and the shape of its input and output.
#[derive(Debug, Clone, Serialize)]
pub struct ActionSpec {
    /// `plugin.action` (`shell`, `k8s.delete`, `aws.ec2.stop_instances`).
    pub name: String,
    /// One line: what the action does.
    pub summary: String,
    /// Longer documentation (Markdown): behaviour, dry-run behaviour, examples.
    pub doc: String,
    /// JSON Schema of `with:`.
    pub input_schema: Value,
    /// JSON Schema of `result`.
    pub output_schema: Value,
    /// What the action does under `--dry-run`.
    pub dry_run: DryRun,
    /// Names the action binds once per target (`host` for `ssh.*`): templates in `with:` that
    /// read them are rendered by the action, once per target, through [`StepContext::per_target`].
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub binds: Vec<String>,
    /// How long the action may take to stop once cancelled by a timeout before the engine
    /// drops it (default 5 s): terraform finishing an operation and releasing its lock.
    #[serde(skip)]
    pub cancel_grace: Option<std::time::Duration>,
}

/// What an action does under `--dry-run`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DryRun {
    /// It has no side effects and runs as usual (`set`, `assert`).
    Runs,
    /// It asks the real system whether the change would work (EC2 DryRun, Kubernetes
    /// `dryRun=All`, `terraform plan`).
    Check,
    /// It only describes what it would do.
    Describe,
}

impl DryRun {
    /// One line for people.
    pub fn describe(self) -> &'static str {
        match self {
            DryRun::Runs => "runs as usual (it changes nothing)",
            DryRun::Check => "asks the real system whether the change would work",
            DryRun::Describe => "describes what it would do and changes nothing",
        }
    }
}

impl ActionSpec {
    /// A spec whose input and output schemas are generated from Rust types.
    pub fn new<I: JsonSchema, O: JsonSchema>(name: &str, summary: &str, doc: &str) -> Self {
        ActionSpec {
            name: name.to_string(),
            summary: summary.to_string(),
            doc: doc.to_string(),
            input_schema: schema_for::<I>(),
            output_schema: schema_for::<O>(),
            dry_run: DryRun::Describe,
            binds: Vec::new(),
            cancel_grace: None,
        }
    }

    /// Gives the action this long to stop after a timeout cancels it.
    pub fn with_cancel_grace(mut self, grace: std::time::Duration) -> Self {
        self.cancel_grace = Some(grace);
        self
    }

    /// Declares a name the action binds per target (see [`ActionSpec::binds`]).
    pub fn binding(mut self, name: &str) -> Self {
        self.binds.push(name.to_string());
        self
    }

    /// Marks the action as able to ask the real system in `--dry-run`.
    pub fn with_check(mut self) -> Self {
        self.dry_run = DryRun::Check;
        self
    }

    /// Marks the action as free of side effects: `--dry-run` runs it as usual.
    pub fn runs_in_dry_run(mut self) -> Self {
        self.dry_run = DryRun::Runs;
        self
    }
}

/// The JSON Schema of a type, as a plain value (draft 2020-12, definitions inlined under `$defs`).
pub fn schema_for<T: JsonSchema>() -> Value {
    let schema = schemars::SchemaGenerator::default().into_root_schema_for::<T>();
    schema.to_value()
}

/// Whether trying again might help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Transient: a 503, a reset connection, a lock held by someone else.
    Retryable,
    /// Will fail the same way again: a 400, a denied permission, a missing resource.
    Permanent,
    /// The step was cancelled (Ctrl-C, timeout).
    Cancelled,
}

/// An action's failure.
#[derive(Debug, Clone, thiserror::Error, Serialize)]
#[error("{message}")]
pub struct ActionError {
    /// Whether a retry can help.
    pub kind: ErrorKind,
    /// What went wrong, for people.
    pub message: String,
    /// Structured details for the report (status code, response body excerpt, exit code).
    #[serde(skip_serializing_if = "Value::is_null")]
    pub details: Value,
}

impl ActionError {
    /// A failure that a retry might fix.
    pub fn retryable(message: impl Into<String>) -> Self {
        Self::of(ErrorKind::Retryable, message)
    }
    /// A failure a retry will not fix.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self::of(ErrorKind::Permanent, message)
    }
    /// The step was cancelled.
    pub fn cancelled() -> Self {
        Self::of(ErrorKind::Cancelled, "cancelled")
    }
    /// The step was cancelled, with what was cut short.
    pub fn cancelled_with(message: impl Into<String>) -> Self {
        Self::of(ErrorKind::Cancelled, message)
    }
    fn of(kind: ErrorKind, message: impl Into<String>) -> Self {
        ActionError {
            kind,
            message: message.into(),
            details: Value::Null,
        }
    }
    /// Attaches structured details.
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }
}

/// Receives an action's log lines. The executor's sink masks secrets before anything is kept.
pub trait LogSink: Send + Sync {
    /// One line of output (without its newline).
    fn line(&self, stream: LogStream, line: &str);

    /// The outcome of one target of the step (a host of an SSH step): the report keeps it and
    /// JUnit makes a test case of it. A later case of the same name replaces an earlier one (a
    /// retried attempt). The default drops it.
    fn case(&self, case: TargetCase) {
        let _ = case;
    }

    /// A secret the action came to know (a decrypted parameter, a token it fetched): from now
    /// on it is masked as `***` in logs, the report and errors, like the runbook's `secrets`.
    /// The default ignores it.
    fn secret(&self, value: &str) {
        let _ = value;
    }
}

/// The outcome of one target of a step, for the report and JUnit.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct TargetCase {
    /// The target (`web1`).
    pub name: String,
    /// `succeeded`, `failed`, `unreachable`, `cancelled` or `skipped`.
    pub status: String,
    /// Wall time on this target.
    #[serde(default)]
    pub duration_ms: u64,
    /// Why it did not succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The end of its output, for a failure's details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// The `for_each` item it belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<usize>,
}

impl TargetCase {
    /// Whether the case counts as a failure in JUnit.
    pub fn is_failure(&self) -> bool {
        matches!(
            self.status.as_str(),
            "failed" | "unreachable" | "cancelled" | "timed_out"
        )
    }
}

/// Templates of `with:` that read a name the action binds per target: the engine leaves them
/// unrendered and the action renders them once per target with [`PerTarget::render`].
pub struct PerTarget {
    /// (JSON pointer inside `with`, template text, where it is written for messages).
    fields: Vec<(String, String, String)>,
    scope: minijinja::Value,
}

impl PerTarget {
    /// Deferred fields of one step call.
    pub fn new(fields: Vec<(String, String, String)>, scope: minijinja::Value) -> Self {
        PerTarget { fields, scope }
    }

    /// JSON pointers (inside `with`) of the fields left unrendered.
    pub fn pointers(&self) -> impl Iterator<Item = &str> {
        self.fields.iter().map(|(p, _, _)| p.as_str())
    }

    /// Whether nothing was deferred.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// `input` with the deferred fields rendered, `name` bound to `value` (`host` to
    /// `{"name": "web1", "vars": {...}}`).
    pub fn render(&self, input: &Value, name: &str, value: &Value) -> Result<Value, String> {
        let mut out = input.clone();
        if self.fields.is_empty() {
            return Ok(out);
        }
        let mut map: std::collections::BTreeMap<String, minijinja::Value> = self
            .scope
            .try_iter()
            .into_iter()
            .flatten()
            .filter_map(|k| {
                let v = self.scope.get_item(&k).ok()?;
                Some((k.as_str()?.to_string(), v))
            })
            .collect();
        map.insert(name.to_string(), crate::template::to_template_value(value));
        let scope = minijinja::Value::from(map);
        for (ptr, text, location) in &self.fields {
            let rendered = crate::template::render_str(crate::template::shared(), text, &scope)
                .map_err(|e| {
                    let detail = match (e.kind(), e.detail()) {
                        (minijinja::ErrorKind::UndefinedError, _) => {
                            "a value it reads is undefined".to_string()
                        }
                        (_, Some(d)) => d.to_string(),
                        (kind, None) => kind.to_string(),
                    };
                    format!("cannot render {location}: {detail}")
                })?;
            if let Some(slot) = out.pointer_mut(ptr) {
                *slot = rendered;
            }
        }
        Ok(out)
    }
}

/// Which stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogStream {
    /// Standard output, or the action's own progress notes.
    Stdout,
    /// Standard error.
    Stderr,
}

/// A sink that drops everything (tests, `validate`).
#[derive(Debug, Default)]
pub struct NullSink;

impl LogSink for NullSink {
    fn line(&self, _: LogStream, _: &str) {}
}

/// What an action may use while it runs, and nothing else.
#[derive(Clone)]
pub struct StepContext {
    /// The step id (and `[index]` for a `for_each` item), for messages.
    pub step: String,
    /// Cancelled on Ctrl-C, SIGTERM or timeout: stop promptly and kill child process groups.
    pub cancel: CancellationToken,
    /// `--dry-run`: make no change; ask the real system (check mode) or describe the call.
    pub dry_run: bool,
    /// Environment for process-based actions, on top of the `opsbook` process's own: the
    /// runbook's `env`, then the step's `env` (rendered).
    pub env: IndexMap<String, String>,
    /// The working directory: the runbook's folder.
    pub cwd: PathBuf,
    /// Where log lines go.
    pub log: Arc<dyn LogSink>,
    /// What the run shares between steps: plugin state (connections, clients) and the
    /// `--inventory` override.
    pub resources: Arc<RunResources>,
    /// The inventory of the step's runbook (`inventory:`, or `--inventory`).
    pub inventory: Option<Arc<InventorySource>>,
    /// Templates of `with:` left for the action to render once per target.
    pub per_target: Option<Arc<PerTarget>>,
}

impl StepContext {
    /// A context for running an action outside a run (tests, tools).
    pub fn detached(step: &str) -> Self {
        StepContext {
            step: step.to_string(),
            cancel: CancellationToken::new(),
            dry_run: false,
            env: IndexMap::new(),
            cwd: PathBuf::from("."),
            log: Arc::new(NullSink),
            resources: Arc::new(RunResources::default()),
            inventory: None,
            per_target: None,
        }
    }
}

/// An action a runbook step can call.
#[async_trait]
pub trait Action: Send + Sync {
    /// Name, documentation and schemas.
    fn spec(&self) -> ActionSpec;
    /// Runs the action on its rendered, schema-checked input.
    async fn run(&self, input: Value, cx: &StepContext) -> Result<Value, ActionError>;
}

/// One registered action: its spec (taken once) and, where the engine itself does not carry it
/// out, its implementation.
pub struct Entry {
    /// The action's spec.
    pub spec: ActionSpec,
    /// The implementation; `None` for control actions that the executor carries out itself
    /// (`assert`, `approve`, `template`, `runbook`) because they need the run's scope.
    pub action: Option<Arc<dyn Action>>,
    validator: OnceLock<Result<jsonschema::Validator, String>>,
}

impl Entry {
    /// The compiled validator of the input schema, built on first use.
    pub fn input_validator(&self) -> Result<&jsonschema::Validator, &str> {
        self.validator
            .get_or_init(|| {
                jsonschema::validator_for(&self.spec.input_schema).map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(String::as_str)
    }
}

/// The actions a run can use, by name.
#[derive(Default)]
pub struct Registry {
    entries: BTreeMap<String, Entry>,
    secret_stores: BTreeMap<&'static str, Arc<dyn crate::secrets::SecretStore>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an action. A second action of the same name replaces the first.
    pub fn register(&mut self, action: impl Action + 'static) {
        let spec = action.spec();
        self.insert(spec, Some(Arc::new(action)));
    }

    /// Adds a secret store for the `secrets:` source key it names.
    pub fn register_secret_store(&mut self, store: impl crate::secrets::SecretStore + 'static) {
        self.secret_stores.insert(store.kind(), Arc::new(store));
    }

    /// The secret store for a `secrets:` source key.
    pub fn secret_store(&self, kind: &str) -> Option<&dyn crate::secrets::SecretStore> {
        self.secret_stores.get(kind).map(|s| s.as_ref())
    }

    /// Adds a control action that the executor itself carries out.
    pub fn register_control(&mut self, spec: ActionSpec) {
        self.insert(spec, None);
    }

    fn insert(&mut self, spec: ActionSpec, action: Option<Arc<dyn Action>>) {
        self.entries.insert(
            spec.name.clone(),
            Entry {
                spec,
                action,
                validator: OnceLock::new(),
            },
        );
    }

    /// The entry for `name`.
    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.entries.get(name)
    }

    /// All entries, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    /// All names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn per_target_fields_render_with_the_bound_name_and_the_step_scope() {
        let scope = minijinja::context! {
            params => crate::template::to_template_value(&json!({"svc": "nginx"})),
        };
        let p = PerTarget::new(
            vec![(
                "/command".into(),
                "restart {{ params.svc }} on {{ host.vars.zone }}".into(),
                "`with.command`".into(),
            )],
            scope,
        );
        let input = json!({"hosts": "all", "command": "raw"});
        let out = p
            .render(
                &input,
                "host",
                &json!({"name": "h1", "vars": {"zone": "eu"}}),
            )
            .unwrap();
        assert_eq!(out["command"], "restart nginx on eu");
        assert_eq!(out["hosts"], "all");
        let err = p
            .render(&input, "host", &json!({"name": "h1", "vars": {}}))
            .unwrap_err();
        assert!(err.contains("`with.command`"), "{err}");
    }
}
