//! The `terraform.*` actions.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use indexmap::IndexMap;
use opsbook_engine::action::{Action, ActionError, ActionSpec, LogStream, Registry, StepContext};
use opsbook_engine::model::DurationSpec;
use serde_json::{json, Value};

use crate::cli::{self, Run};
use crate::summary;

pub(crate) fn register(r: &mut Registry) {
    r.register(Init);
    r.register(Validate);
    r.register(Plan);
    r.register(Apply);
    r.register(Output);
    r.register(Drift);
    r.register(Destroy);
}

/// Inputs every action shares.
#[derive(Debug, Clone)]
pub struct Common {
    pub dir: Option<String>,
    pub workspace: Option<String>,
    pub env: IndexMap<String, String>,
    pub lock_timeout: Option<DurationSpec>,
    pub parallelism: Option<u32>,
    pub binary: Option<String>,
}

/// A terraform working directory for one step.
struct Tf<'a> {
    binary: PathBuf,
    dir: PathBuf,
    /// The runbook's folder, absolute: every path handed to terraform is absolute, since
    /// terraform runs in `dir`.
    base: PathBuf,
    common: Common,
    cx: &'a StepContext,
    /// How long terraform may take to stop after SIGINT.
    grace: std::time::Duration,
}

impl<'a> Tf<'a> {
    fn new(common: Common, cx: &'a StepContext) -> Result<Self, ActionError> {
        let base = std::path::absolute(&cx.cwd).unwrap_or_else(|_| cx.cwd.clone());
        let dir = match &common.dir {
            Some(d) => base.join(d),
            None => base.clone(),
        };
        if !dir.is_dir() {
            return Err(ActionError::permanent(format!(
                "`dir`: {} is not a folder",
                dir.display()
            )));
        }
        if let Some(ws) = &common.workspace {
            let ok = ws
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                && ws
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
            if !ok {
                return Err(ActionError::permanent(format!(
                    "`workspace`: `{ws}` is not a workspace name (letters, digits, `_`, `-`, `.`)"
                )));
            }
        }
        Ok(Tf {
            binary: cli::binary(common.binary.as_deref(), &base),
            dir,
            base,
            common,
            cx,
            grace: cli::READ_GRACE,
        })
    }

    /// For commands that change infrastructure: a longer grace after SIGINT.
    fn changing(mut self) -> Self {
        self.grace = cli::CHANGE_GRACE;
        self
    }

    /// Runs `terraform ARGS` in the step's workspace and returns its output, failing the step
    /// with terraform's own error when the exit code is not in `ok`.
    async fn run(
        &self,
        args: Vec<String>,
        log_stdout: bool,
        ok: &[i32],
    ) -> Result<cli::Done, ActionError> {
        self.run_in(args, log_stdout, ok, true).await
    }

    /// Runs terraform; with `in_workspace`, in the step's workspace through `TF_WORKSPACE`
    /// (never by selecting it on disk, so that steps on one folder cannot switch each other's
    /// workspace).
    async fn run_in(
        &self,
        args: Vec<String>,
        log_stdout: bool,
        ok: &[i32],
        in_workspace: bool,
    ) -> Result<cli::Done, ActionError> {
        let what = format!("terraform {}", args.first().cloned().unwrap_or_default());
        let mut env = self.common.env.clone();
        if let (true, Some(ws)) = (in_workspace, &self.common.workspace) {
            env.insert("TF_WORKSPACE".into(), ws.clone());
        }
        let done = cli::run(
            Run {
                binary: &self.binary,
                dir: &self.dir,
                args,
                env: &env,
                log_stdout,
                grace: self.grace,
            },
            self.cx,
        )
        .await?;
        match done.code {
            Some(c) if ok.contains(&c) => Ok(done),
            Some(c) => Err(ActionError::permanent(format!(
                "{what} failed (exit {c}) in {}:\n{}",
                self.dir.display(),
                done.error_text()
            ))
            .with_details(json!({"exit_code": c, "stderr": done.stderr}))),
            None => Err(ActionError::retryable(format!(
                "{what} was killed by a signal"
            ))),
        }
    }

    /// Makes sure the step's workspace exists (created when missing).
    async fn select_workspace(&self) -> Result<(), ActionError> {
        let Some(ws) = &self.common.workspace else {
            return Ok(());
        };
        let list = self
            .run_in(
                vec!["workspace".into(), "list".into(), "-no-color".into()],
                false,
                &[0],
                false,
            )
            .await?;
        let exists = list
            .stdout
            .lines()
            .map(|l| l.trim().trim_start_matches('*').trim())
            .any(|name| name == ws);
        if !exists {
            self.run_in(
                vec![
                    "workspace".into(),
                    "new".into(),
                    "-no-color".into(),
                    ws.clone(),
                ],
                true,
                &[0],
                false,
            )
            .await?;
        }
        Ok(())
    }

    /// The workspace commands act on: the step's, else terraform's current one.
    async fn current_workspace(&self) -> Result<String, ActionError> {
        if let Some(ws) = &self.common.workspace {
            return Ok(ws.clone());
        }
        let done = self
            .run(
                vec!["workspace".into(), "show".into(), "-no-color".into()],
                false,
                &[0],
            )
            .await?;
        Ok(done.stdout.trim().to_string())
    }

    /// `-lock-timeout`, `-parallelism` (for commands that take them).
    fn lock_args(&self, parallelism: bool) -> Vec<String> {
        let mut a = Vec::new();
        if let Some(t) = self.common.lock_timeout {
            a.push(format!("-lock-timeout={}s", t.get().as_secs().max(1)));
        }
        if parallelism {
            if let Some(p) = self.common.parallelism {
                a.push(format!("-parallelism={p}"));
            }
        }
        a
    }

    /// Where this step's plan files go: `<dir>/.opsbook/plans/<step>.tfplan` (and `.json`).
    fn plan_path(&self, given: Option<&str>) -> PathBuf {
        match given {
            Some(p) => self.base.join(p),
            None => {
                let name: String = self
                    .cx
                    .step
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                            c
                        } else {
                            '_'
                        }
                    })
                    .collect();
                let folder = self.dir.join(".opsbook");
                // Plans hold secrets: keep them out of version control.
                let _ = std::fs::create_dir_all(&folder);
                let ignore = folder.join(".gitignore");
                if !ignore.exists() {
                    let _ = std::fs::write(&ignore, "*\n");
                }
                folder.join("plans").join(format!("{name}.tfplan"))
            }
        }
    }

    /// Reads a saved plan back as JSON.
    async fn show(&self, plan: &Path) -> Result<Value, ActionError> {
        let done = self
            .run(
                vec![
                    "show".into(),
                    "-json".into(),
                    "-no-color".into(),
                    plan.display().to_string(),
                ],
                false,
                &[0],
            )
            .await?;
        serde_json::from_str(&done.stdout)
            .map_err(|e| ActionError::permanent(format!("terraform show -json gave no JSON ({e})")))
    }
}

/// `-var-file` arguments: the given files, then the step's `vars` written to a private
/// temporary `.tfvars.json` (values never show in the process list; a later file wins, as
/// `-var` would). Keep the returned folder alive while terraform runs.
fn var_args(
    vars: &IndexMap<String, Value>,
    var_files: &[String],
    base: &Path,
) -> Result<(Vec<String>, Option<tempfile::TempDir>), ActionError> {
    let mut a: Vec<String> = var_files
        .iter()
        .map(|f| format!("-var-file={}", base.join(f).display()))
        .collect();
    if vars.is_empty() {
        return Ok((a, None));
    }
    let dir = tempfile::Builder::new()
        .prefix("opsbook-tfvars-")
        .tempdir()
        .map_err(|e| ActionError::permanent(format!("cannot create a temporary folder: {e}")))?;
    let file = dir.path().join("vars.tfvars.json");
    let text = serde_json::to_string(vars).unwrap_or_else(|_| "{}".into());
    write_private(&file, text.as_bytes())?;
    a.push(format!("-var-file={}", file.display()));
    Ok((a, Some(dir)))
}

/// Writes a file only its owner can read.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), ActionError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(|e| ActionError::permanent(format!("cannot write {}: {e}", path.display())))
}

fn parse<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, ActionError> {
    serde_json::from_value(v).map_err(|e| ActionError::permanent(format!("invalid input: {e}")))
}

const SHARED_DOC: &str = "Shared inputs: `dir` (the configuration, relative to the runbook), \
`workspace` (given to every command as `TF_WORKSPACE`, created if missing), `env`, `lock_timeout`, `parallelism`, `binary` \
(`terraform` from PATH by default; `tofu` works the same). Terraform runs with \
`TF_IN_AUTOMATION=1`, `-input=false` and `-no-color`; its output streams into the step log. \
Cancellation and timeouts send SIGINT, so terraform stops cleanly and releases its state \
lock, then kill it after 60 s (apply, destroy) or 10 s (the others). `vars` and backend \
settings reach terraform in private temporary files, not on its command line.";

fn doc(own: &str) -> String {
    format!("{own}\n\n{SHARED_DOC}")
}

// ---------------------------------------------------------------------------------------------

crate::tf_input! {
    /// `terraform.init` inputs.
    pub struct InitInput {
        /// Backend settings (`-backend-config=KEY=VALUE`).
        #[serde(default)]
        pub backend_config: IndexMap<String, Value>,
        /// Backend configuration files (`-backend-config=FILE`), relative to the runbook.
        #[serde(default)]
        pub backend_config_files: Vec<String>,
        /// Upgrade modules and providers within their constraints (`-upgrade`).
        #[serde(default)]
        pub upgrade: bool,
        /// Ignore the saved backend configuration (`-reconfigure`).
        #[serde(default)]
        pub reconfigure: bool,
    }
}

/// `terraform.init`.
pub struct Init;

#[async_trait]
impl Action for Init {
    fn spec(&self) -> ActionSpec {
        ActionSpec::new::<InitInput, Value>(
            "terraform.init",
            "Initialise a Terraform configuration: backend, providers, modules.",
            &doc(
                "Runs `terraform init` with `backend_config` and `backend_config_files`, \
                  `upgrade` and `reconfigure`, then selects `workspace`. `--dry-run`: runs \
                  (it changes nothing remote).",
            ),
        )
        .runs_in_dry_run()
        .with_cancel_grace(cli::READ_GRACE + std::time::Duration::from_secs(5))
    }

    async fn run(&self, input: Value, cx: &StepContext) -> Result<Value, ActionError> {
        let input: InitInput = parse(input)?;
        let tf = Tf::new(input.common(), cx)?;
        let mut args = vec!["init".into(), "-input=false".into(), "-no-color".into()];
        args.extend(tf.lock_args(false));
        if input.upgrade {
            args.push("-upgrade".into());
        }
        if input.reconfigure {
            args.push("-reconfigure".into());
        }
        // Backend settings (credentials, often) go in a private file, not in the process list.
        let mut _backend_dir = None;
        if !input.backend_config.is_empty() {
            let dir = tempfile::Builder::new()
                .prefix("opsbook-backend-")
                .tempdir()
                .map_err(|e| {
                    ActionError::permanent(format!("cannot create a temporary folder: {e}"))
                })?;
            let file = dir.path().join("backend.tfbackend");
            let text: String = input
                .backend_config
                .iter()
                .map(|(k, v)| format!("{k} = {v}\n"))
                .collect();
            write_private(&file, text.as_bytes())?;
            args.push(format!("-backend-config={}", file.display()));
            _backend_dir = Some(dir);
        }
        for f in &input.backend_config_files {
            args.push(format!("-backend-config={}", tf.base.join(f).display()));
        }
        tf.run_in(args, true, &[0], false).await?;
        tf.select_workspace().await?;
        Ok(json!({"dir": tf.dir.display().to_string(), "workspace": input.workspace}))
    }
}

// ---------------------------------------------------------------------------------------------

crate::tf_input! {
    /// `terraform.validate` inputs.
    pub struct ValidateInput {}
}

/// `terraform.validate`.
pub struct Validate;

#[async_trait]
impl Action for Validate {
    fn spec(&self) -> ActionSpec {
        ActionSpec::new::<ValidateInput, Value>(
            "terraform.validate",
            "Check a configuration's syntax and consistency.",
            &doc(
                "Runs `terraform validate -json`; fails with every error's summary, detail \
                  and file:line. Result: `valid`, `errors`, `warnings`, `diagnostics`. \
                  `--dry-run`: runs.",
            ),
        )
        .runs_in_dry_run()
        .with_cancel_grace(cli::READ_GRACE + std::time::Duration::from_secs(5))
    }

    async fn run(&self, input: Value, cx: &StepContext) -> Result<Value, ActionError> {
        let input: ValidateInput = parse(input)?;
        let tf = Tf::new(input.common(), cx)?;
        let done = tf
            .run(
                vec!["validate".into(), "-json".into(), "-no-color".into()],
                false,
                &[0, 1],
            )
            .await?;
        let v: Value = serde_json::from_str(&done.stdout).map_err(|_| {
            ActionError::permanent(format!("terraform validate failed:\n{}", done.error_text()))
        })?;
        let diagnostics: Vec<Value> = v["diagnostics"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|d| {
                let at = match (d["range"]["filename"].as_str(), d["range"]["start"]["line"].as_u64()) {
                    (Some(f), Some(l)) => format!("{f}:{l}: "),
                    _ => String::new(),
                };
                json!({
                    "severity": d["severity"],
                    "message": format!("{at}{}{}", d["summary"].as_str().unwrap_or(""),
                        d["detail"].as_str().filter(|s| !s.is_empty()).map(|s| format!(": {s}")).unwrap_or_default()),
                })
            })
            .collect();
        let out = json!({
            "valid": v["valid"],
            "errors": v["error_count"],
            "warnings": v["warning_count"],
            "diagnostics": diagnostics,
        });
        if v["valid"] != Value::Bool(true) {
            let messages: Vec<String> = diagnostics
                .iter()
                .filter(|d| d["severity"] == "error")
                .filter_map(|d| d["message"].as_str().map(str::to_string))
                .collect();
            return Err(ActionError::permanent(format!(
                "the configuration is not valid:\n{}",
                messages.join("\n")
            ))
            .with_details(out));
        }
        Ok(out)
    }
}

// ---------------------------------------------------------------------------------------------

crate::tf_input! {
    /// `terraform.plan` inputs.
    pub struct PlanInput {
        /// Variables (`-var`); non-string values are passed as JSON.
        #[serde(default)]
        pub vars: IndexMap<String, Value>,
        /// Variable files (`-var-file`), relative to the runbook.
        #[serde(default)]
        pub var_files: Vec<String>,
        /// Resource addresses to limit the plan to (`-target`).
        #[serde(default)]
        pub targets: Vec<String>,
        /// Plan to destroy everything (`-destroy`).
        #[serde(default)]
        pub destroy: bool,
        /// Only update the state from the real infrastructure (`-refresh-only`).
        #[serde(default)]
        pub refresh_only: bool,
        /// Where to save the plan (default `<dir>/.opsbook/plans/<step>.tfplan`).
        #[serde(default)]
        pub out: Option<String>,
    }
}

/// `terraform.plan`.
pub struct Plan;

#[async_trait]
impl Action for Plan {
    fn spec(&self) -> ActionSpec {
        ActionSpec::new::<PlanInput, Value>(
            "terraform.plan",
            "Plan changes, save the plan, and summarise it: counts, addresses, actions, drift.",
            &doc(
                "Runs `terraform plan -out=PLAN -detailed-exitcode` (with `vars`, `var_files`, \
                  `targets`, `destroy`, `refresh_only`), then reads the plan back with `show \
                  -json`. Result: `add`, `change`, `replace`, `destroy` (counts), `has_changes`, \
                  `resources` (each `address`, `action`, and the `attributes` that change with \
                  `before`/`after`, sensitive values masked), `drift` (resources changed outside \
                  Terraform, from `resource_drift`), `plan_file` (give it to \
                  `terraform.apply`), `plan_json` (the full JSON, saved next to it). \
                  `--dry-run`: runs (a plan changes nothing remote).",
            ),
        )
        .runs_in_dry_run()
        .with_cancel_grace(cli::READ_GRACE + std::time::Duration::from_secs(5))
    }

    async fn run(&self, input: Value, cx: &StepContext) -> Result<Value, ActionError> {
        let input: PlanInput = parse(input)?;
        let tf = Tf::new(input.common(), cx)?;
        tf.select_workspace().await?;
        let plan = tf.plan_path(input.out.as_deref());
        let (mut args, _vars) = plan_args(&tf, &plan, &input.vars, &input.var_files)?;
        for t in &input.targets {
            args.push(format!("-target={t}"));
        }
        if input.destroy {
            args.push("-destroy".into());
        }
        if input.refresh_only {
            args.push("-refresh-only".into());
        }
        planned(&tf, args, &plan).await
    }
}

fn plan_args(
    tf: &Tf<'_>,
    plan: &Path,
    vars: &IndexMap<String, Value>,
    files: &[String],
) -> Result<(Vec<String>, Option<tempfile::TempDir>), ActionError> {
    if let Some(parent) = plan.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    let mut args = vec![
        "plan".into(),
        "-input=false".into(),
        "-no-color".into(),
        "-detailed-exitcode".into(),
        format!("-out={}", plan.display()),
    ];
    args.extend(tf.lock_args(true));
    let (vars, guard) = var_args(vars, files, &tf.base)?;
    args.extend(vars);
    Ok((args, guard))
}

/// Runs a plan, reads it back, writes its JSON next to it, and summarises it.
async fn planned(tf: &Tf<'_>, args: Vec<String>, plan: &Path) -> Result<Value, ActionError> {
    let done = tf.run(args, true, &[0, 2]).await?;
    let json_doc = tf.show(plan).await?;
    let json_path = plan.with_extension("json");
    // The plan's JSON holds sensitive values in clear: only the owner may read it.
    write_private(&json_path, json_doc.to_string().as_bytes())?;
    let mut out = summary::summarize(&json_doc);
    // `-detailed-exitcode` 2: the plan changes something (outputs and imports included).
    out["has_changes"] = json!(done.code == Some(2));
    out["plan_file"] = json!(plan.display().to_string());
    out["plan_json"] = json!(json_path.display().to_string());
    out["exit_code"] = json!(done.code);
    tf.cx.log.line(
        LogStream::Stdout,
        &format!(
            "plan: {} to add, {} to change, {} to replace, {} to destroy; {} drifted",
            out["add"],
            out["change"],
            out["replace"],
            out["destroy"],
            out["drift"].as_array().map_or(0, Vec::len)
        ),
    );
    Ok(out)
}

// ---------------------------------------------------------------------------------------------

crate::tf_input! {
    /// `terraform.apply` inputs.
    pub struct ApplyInput {
        /// A saved plan (`{{ steps.plan.result.plan_file }}`): applies exactly what it says.
        #[serde(default)]
        pub plan: Option<String>,
        /// Apply without a saved plan (plans and applies at once). Only as an explicit opt-in.
        #[serde(default)]
        pub auto_approve: bool,
        /// Variables, with `auto_approve` (a saved plan carries its own).
        #[serde(default)]
        pub vars: IndexMap<String, Value>,
        /// Variable files, with `auto_approve`.
        #[serde(default)]
        pub var_files: Vec<String>,
    }
}

/// `terraform.apply`.
pub struct Apply;

#[async_trait]
impl Action for Apply {
    fn spec(&self) -> ActionSpec {
        ActionSpec::new::<ApplyInput, Value>(
            "terraform.apply",
            "Apply a saved plan (or, only with auto_approve: true, plan and apply at once).",
            &doc(
                "Runs `terraform apply PLAN` with the plan an earlier `terraform.plan` step \
                  saved, so what is applied is what was reviewed. Without `plan`, it needs \
                  `auto_approve: true` (and takes `vars`/`var_files`). Result: the outputs \
                  after the apply (`outputs`, sensitive ones masked). `--dry-run`: describes, \
                  does not apply.",
            ),
        )
        .with_cancel_grace(cli::CHANGE_GRACE + std::time::Duration::from_secs(5))
    }

    async fn run(&self, input: Value, cx: &StepContext) -> Result<Value, ActionError> {
        let input: ApplyInput = parse(input)?;
        let tf = Tf::new(input.common(), cx)?.changing();
        let plan = match (&input.plan, input.auto_approve) {
            (Some(p), false) => Some(tf.base.join(p)),
            (None, true) => None,
            (Some(_), true) => {
                return Err(ActionError::permanent(
                    "give `plan` or `auto_approve: true`, not both",
                ))
            }
            (None, false) => {
                return Err(ActionError::permanent(
                    "terraform.apply needs the saved `plan` of a terraform.plan step, or an explicit `auto_approve: true`",
                ))
            }
        };
        if let Some(p) = &plan {
            if !p.is_file() {
                return Err(ActionError::permanent(format!(
                    "the plan {} does not exist (did its terraform.plan step run?)",
                    p.display()
                )));
            }
        }
        if cx.dry_run {
            let what = match &plan {
                Some(p) => format!("would apply the plan {}", p.display()),
                None => "would plan and apply with -auto-approve".to_string(),
            };
            cx.log.line(LogStream::Stdout, &what);
            return Ok(json!({"applied": false, "would": what}));
        }
        tf.select_workspace().await?;
        let mut args = vec!["apply".into(), "-input=false".into(), "-no-color".into()];
        args.extend(tf.lock_args(true));
        let mut _vars = None;
        match &plan {
            Some(p) => args.push(p.display().to_string()),
            None => {
                args.push("-auto-approve".into());
                let (vars, guard) = var_args(&input.vars, &input.var_files, &tf.base)?;
                args.extend(vars);
                _vars = guard;
            }
        }
        tf.run(args, true, &[0]).await?;
        let outputs = outputs(&tf, None, false).await?;
        Ok(json!({"applied": true, "outputs": outputs}))
    }
}

// ---------------------------------------------------------------------------------------------

crate::tf_input! {
    /// `terraform.output` inputs.
    pub struct OutputInput {
        /// One output only (default: all).
        #[serde(default)]
        pub name: Option<String>,
        /// Give sensitive outputs' values too (they are masked as `(sensitive)` otherwise).
        /// They are then in the report: use it only for values that are not secret to you.
        #[serde(default)]
        pub reveal_sensitive: bool,
    }
}

/// `terraform.output`.
pub struct Output;

#[async_trait]
impl Action for Output {
    fn spec(&self) -> ActionSpec {
        ActionSpec::new::<OutputInput, Value>(
            "terraform.output",
            "Read the outputs of the state as JSON values.",
            &doc(
                "Runs `terraform output -json`. Result: `outputs`, a mapping of name to value \
                  (sensitive ones as `(sensitive)` unless `reveal_sensitive: true`), and \
                  `sensitive`, their names; with `name`, `value` too. `--dry-run`: runs.",
            ),
        )
        .runs_in_dry_run()
        .with_cancel_grace(cli::READ_GRACE + std::time::Duration::from_secs(5))
    }

    async fn run(&self, input: Value, cx: &StepContext) -> Result<Value, ActionError> {
        let input: OutputInput = parse(input)?;
        let tf = Tf::new(input.common(), cx)?;
        tf.select_workspace().await?;
        let all = outputs(&tf, Some(&mut Vec::new()), input.reveal_sensitive).await?;
        let sensitive: Vec<Value> = all
            .get("__sensitive")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut values = all;
        if let Some(m) = values.as_object_mut() {
            m.remove("__sensitive");
        }
        match &input.name {
            Some(n) => match values.get(n) {
                Some(v) => Ok(json!({"value": v, "outputs": values, "sensitive": sensitive})),
                None => Err(ActionError::permanent(format!(
                    "no output `{n}`; outputs: {}",
                    values
                        .as_object()
                        .map(|m| m.keys().cloned().collect::<Vec<_>>().join(", "))
                        .unwrap_or_default()
                ))),
            },
            None => Ok(json!({"outputs": values, "sensitive": sensitive})),
        }
    }
}

/// `terraform output -json` as name → value (sensitive ones masked unless `reveal`); with
/// `names`, the sensitive names go under `__sensitive`.
async fn outputs(
    tf: &Tf<'_>,
    names: Option<&mut Vec<String>>,
    reveal: bool,
) -> Result<Value, ActionError> {
    let done = tf
        .run(
            vec!["output".into(), "-json".into(), "-no-color".into()],
            false,
            &[0],
        )
        .await?;
    let v: Value = serde_json::from_str(done.stdout.trim()).map_err(|e| {
        ActionError::permanent(format!("terraform output -json gave no JSON ({e})"))
    })?;
    let mut out = serde_json::Map::new();
    let mut sensitive = Vec::new();
    for (k, o) in v.as_object().into_iter().flatten() {
        let is_sensitive = o["sensitive"] == Value::Bool(true);
        if is_sensitive {
            sensitive.push(Value::String(k.clone()));
        }
        out.insert(
            k.clone(),
            if is_sensitive && !reveal {
                Value::String("(sensitive)".into())
            } else {
                o["value"].clone()
            },
        );
    }
    if names.is_some() {
        out.insert("__sensitive".into(), Value::Array(sensitive));
    }
    Ok(Value::Object(out))
}

// ---------------------------------------------------------------------------------------------

crate::tf_input! {
    /// `terraform.drift` inputs.
    pub struct DriftInput {
        /// `refresh_only` (default): what changed outside Terraform; `plan`: also where the
        /// configuration and its inputs no longer match the state.
        #[serde(default)]
        pub mode: Option<String>,
        /// Variables (`-var`).
        #[serde(default)]
        pub vars: IndexMap<String, Value>,
        /// Variable files.
        #[serde(default)]
        pub var_files: Vec<String>,
        /// Where to write the Markdown report (default `<dir>/.opsbook/plans/<step>-drift.md`).
        #[serde(default)]
        pub report: Option<String>,
        /// Fail the step when there is drift (default false: drift is data).
        #[serde(default)]
        pub fail_on_drift: bool,
    }
}

/// `terraform.drift`.
pub struct Drift;

#[async_trait]
impl Action for Drift {
    fn spec(&self) -> ActionSpec {
        ActionSpec::new::<DriftInput, Value>(
            "terraform.drift",
            "Detect drift: a refresh-only (or normal) plan turned into a drift report.",
            &doc(
                "Runs `terraform plan -refresh-only -detailed-exitcode` (`mode: plan`: a normal \
                  plan, so changed inputs count too), reads it back, and writes a Markdown \
                  report of each drifted resource with the attributes that changed (before and \
                  after; sensitive values masked). Result: `has_drift`, `drifted` (addresses), \
                  `resources` (each with `attributes`), `report` (the file), `markdown`, and the \
                  plan summary. `fail_on_drift: true` fails the step when there is drift. \
                  `--dry-run`: runs (a plan changes nothing remote).",
            ),
        )
        .runs_in_dry_run()
        .with_cancel_grace(cli::READ_GRACE + std::time::Duration::from_secs(5))
    }

    async fn run(&self, input: Value, cx: &StepContext) -> Result<Value, ActionError> {
        let input: DriftInput = parse(input)?;
        let mode = input.mode.clone().unwrap_or_else(|| "refresh_only".into());
        if mode != "refresh_only" && mode != "plan" {
            return Err(ActionError::permanent(format!(
                "`mode` is `refresh_only` or `plan`, not `{mode}`"
            )));
        }
        let tf = Tf::new(input.common(), cx)?;
        tf.select_workspace().await?;
        let plan = tf.plan_path(None);
        let plan = plan.with_file_name(format!(
            "{}-drift.tfplan",
            plan.file_stem()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_default()
        ));
        let (mut args, _vars) = plan_args(&tf, &plan, &input.vars, &input.var_files)?;
        if mode == "refresh_only" {
            args.push("-refresh-only".into());
        }
        let mut out = planned(&tf, args, &plan).await?;
        let rows: Vec<Value> = if mode == "refresh_only" {
            out["drift"].as_array().cloned().unwrap_or_default()
        } else {
            out["drift"]
                .as_array()
                .into_iter()
                .flatten()
                .chain(out["resources"].as_array().into_iter().flatten())
                .cloned()
                .collect()
        };
        // A resource changed out of band is in `resource_drift` and again in the plan that
        // reverts it: once each.
        let mut seen = std::collections::HashSet::new();
        let rows: Vec<Value> = rows
            .into_iter()
            .filter(|r| seen.insert(r["address"].to_string()))
            .collect();
        let drifted: Vec<Value> = rows.iter().map(|r| r["address"].clone()).collect();
        let title = format!(
            "{}{}",
            tf.dir
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default(),
            input
                .common()
                .workspace
                .map(|w| format!(" ({w})"))
                .unwrap_or_default()
        );
        let md = summary::drift_report(&out, &title, &mode);
        let report = match &input.report {
            Some(r) => tf.base.join(r),
            None => plan.with_extension("md"),
        };
        if let Some(parent) = report.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        std::fs::write(&report, &md).map_err(|e| {
            ActionError::permanent(format!("cannot write {}: {e}", report.display()))
        })?;
        out["has_drift"] = json!(!rows.is_empty());
        out["drifted"] = Value::Array(drifted.clone());
        out["drifted_resources"] = Value::Array(rows);
        out["report"] = json!(report.display().to_string());
        out["markdown"] = json!(md);
        cx.log.line(
            LogStream::Stdout,
            &if drifted.is_empty() {
                "no drift".to_string()
            } else {
                format!(
                    "drift in {} resource(s); report: {}",
                    drifted.len(),
                    report.display()
                )
            },
        );
        if input.fail_on_drift && !drifted.is_empty() {
            let names: Vec<String> = drifted
                .iter()
                .filter_map(|d| d.as_str().map(str::to_string))
                .collect();
            return Err(ActionError::permanent(format!(
                "drift in {}: {}",
                if names.len() == 1 {
                    "1 resource"
                } else {
                    "several resources"
                },
                names.join(", ")
            ))
            .with_details(out));
        }
        Ok(out)
    }
}

// ---------------------------------------------------------------------------------------------

crate::tf_input! {
    /// `terraform.destroy` inputs.
    pub struct DestroyInput {
        /// The workspace's name (`default` without `workspace`), typed out: destroying needs
        /// this explicit confirmation.
        pub confirm: String,
        /// Variables (`-var`).
        #[serde(default)]
        pub vars: IndexMap<String, Value>,
        /// Variable files.
        #[serde(default)]
        pub var_files: Vec<String>,
    }
}

/// `terraform.destroy`.
pub struct Destroy;

#[async_trait]
impl Action for Destroy {
    fn spec(&self) -> ActionSpec {
        ActionSpec::new::<DestroyInput, Value>(
            "terraform.destroy",
            "Destroy everything a configuration manages, with an explicit confirmation.",
            &doc(
                "Runs `terraform destroy -auto-approve` only when `confirm` is the workspace's \
                  name (`default` when no `workspace` is given), so a copied step cannot \
                  destroy another environment. `--dry-run`: describes, destroys nothing.",
            ),
        )
        .with_cancel_grace(cli::CHANGE_GRACE + std::time::Duration::from_secs(5))
    }

    async fn run(&self, input: Value, cx: &StepContext) -> Result<Value, ActionError> {
        let input: DestroyInput = parse(input)?;
        let tf = Tf::new(input.common(), cx)?.changing();
        // The workspace terraform will really act on (the step's, or the current one).
        let ws = tf.current_workspace().await?;
        if input.confirm != ws {
            return Err(ActionError::permanent(format!(
                "terraform.destroy needs `confirm: {ws}` (the name of the workspace it would destroy); got `{}`",
                input.confirm
            )));
        }
        if cx.dry_run {
            cx.log.line(
                LogStream::Stdout,
                &format!("would destroy workspace {ws} in {}", tf.dir.display()),
            );
            return Ok(json!({"destroyed": false, "workspace": ws}));
        }
        tf.select_workspace().await?;
        let mut args = vec![
            "destroy".into(),
            "-input=false".into(),
            "-no-color".into(),
            "-auto-approve".into(),
        ];
        args.extend(tf.lock_args(true));
        let (vars, _vars) = var_args(&input.vars, &input.var_files, &tf.base)?;
        args.extend(vars);
        tf.run(args, true, &[0]).await?;
        Ok(json!({"destroyed": true, "workspace": ws}))
    }
}
