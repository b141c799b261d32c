//! `ssh.run`: a command, an argv or a script on every selected host.

use std::sync::Arc;

use async_trait::async_trait;
use indexmap::IndexMap;
use openssh::Session;
use opsbook_engine::action::{Action, ActionError, ActionSpec, StepContext};
use opsbook_engine::template::filters::quote_posix;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::remote::{self, Spec, Stdin};
use crate::rollout::{HostLog, HostResult, PerHost, Target};

/// Bytes of stdout (and of stderr) kept per host when `max_output` is not given.
const DEFAULT_MAX_OUTPUT: usize = 256 * 1024;

/// A script: inline text, or a local file.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Script {
    /// The script's text.
    Inline(String),
    /// A local file, relative to the runbook.
    File {
        /// The file.
        file: String,
    },
}

crate::input_struct! {
    /// `ssh.run` inputs.
    #[schemars(extend("oneOf" = [{"required": ["command"]}, {"required": ["args"], "not": {"required": ["script"]}}, {"required": ["script"]}]))]
    pub struct RunInput {
        /// A command line for the remote shell (`/bin/sh -c`). Put template values in it with
        /// `| shquote`.
        #[serde(default)]
        pub command: Option<String>,
        /// A program and its arguments, each quoted for the remote shell (no expansion, no
        /// injection); with `script`, the script's arguments.
        #[serde(default)]
        pub args: Option<Vec<String>>,
        /// A script to upload and run: inline text, or `{file: path}` (relative to the runbook).
        /// A `#!` line picks its interpreter; without one it runs with `/bin/sh`.
        #[serde(default)]
        pub script: Option<Script>,
        /// Environment variables for the command (numbers and booleans are passed as text).
        #[serde(default)]
        pub env: IndexMap<String, crate::input::EnvValue>,
        /// Working directory on the host.
        #[serde(default)]
        pub cwd: Option<String>,
        /// Exit codes that count as success (default `[0]`).
        #[serde(default)]
        pub expect_exit: Option<Vec<i32>>,
        /// Bytes of stdout and of stderr kept per host in the result (default 262144); the log
        /// gets every line.
        #[serde(default)]
        #[schemars(range(min = 1))]
        pub max_output: Option<u64>,
    }
}

/// The `ssh.run` action.
pub struct SshRun;

#[async_trait]
impl Action for SshRun {
    fn spec(&self) -> ActionSpec {
        ActionSpec::new::<RunInput, crate::FleetOutput>(
            "ssh.run",
            "Run a command, a program with arguments, or a script on hosts over SSH.",
            &crate::doc(crate::RUN_DOC),
        )
        .with_check()
        .binding("host")
    }

    async fn run(&self, input: Value, cx: &StepContext) -> Result<Value, ActionError> {
        let parsed: RunInput = crate::parse(&input)?;
        let common = parsed.common();
        let script_bytes = match &parsed.script {
            Some(Script::File { file }) => {
                let path = cx.cwd.join(file);
                Some(Arc::new(std::fs::read(&path).map_err(|e| {
                    ActionError::permanent(format!(
                        "cannot read the script {}: {e}",
                        path.display()
                    ))
                })?))
            }
            Some(Script::Inline(text)) => Some(Arc::new(text.clone().into_bytes())),
            None => None,
        };
        let per_host = RunOnHost {
            raw: input,
            cx: cx.clone(),
            script: script_bytes,
        };
        crate::fleet(&common, cx, &per_host).await
    }
}

struct RunOnHost {
    raw: Value,
    cx: StepContext,
    script: Option<Arc<Vec<u8>>>,
}

impl RunOnHost {
    /// This host's inputs: the step's, with the fields that read `host` rendered for it.
    fn input_for(&self, target: &Target) -> Result<RunInput, String> {
        let v = match &self.cx.per_target {
            Some(p) if !p.is_empty() => p.render(&self.raw, "host", &target.template_value())?,
            _ => return crate::parse::<RunInput>(&self.raw).map_err(|e| e.message),
        };
        crate::parse::<RunInput>(&v).map_err(|e| e.message)
    }
}

/// The remote shell text of the inputs (without env, cwd and sudo, which [`Spec`] adds).
fn script_text(input: &RunInput) -> Result<String, String> {
    match (&input.command, &input.args, &input.script) {
        (Some(c), None, None) => Ok(c.clone()),
        (None, Some(args), None) if !args.is_empty() => Ok(args
            .iter()
            .map(|a| quote_posix(a))
            .collect::<Vec<_>>()
            .join(" ")),
        (None, args, Some(_)) => {
            let args: String = args
                .iter()
                .flatten()
                .map(|a| format!(" {}", quote_posix(a)))
                .collect();
            Ok(format!(
                "t=$(mktemp \"${{TMPDIR:-/tmp}}/opsbook.XXXXXX\") || exit 1\n\
                 trap 'rm -f \"$t\"' EXIT\n\
                 cat > \"$t\" && chmod 700 \"$t\" || exit 1\n\
                 \"$t\"{args}"
            ))
        }
        _ => Err(
            "give exactly one of `command`, `args` or `script` (`args` may go with `script`)"
                .into(),
        ),
    }
}

impl PerHost for RunOnHost {
    fn run<'a>(
        &'a self,
        target: &'a Target,
        session: Arc<Session>,
        log: &'a HostLog,
        result: HostResult,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = HostResult> + Send + 'a>> {
        Box::pin(async move {
            let input = match self.input_for(target) {
                Ok(i) => i,
                Err(e) => return result.failed(e),
            };
            let script = match script_text(&input) {
                Ok(s) => s,
                Err(e) => return result.failed(e),
            };
            if let Some(bad) = input.env.keys().find(|k| !remote::valid_env_name(k)) {
                return result.failed(format!("`env` has an invalid variable name `{bad}`"));
            }
            let common = input.common();
            let spec = Spec {
                script: script.clone(),
                env: input
                    .env
                    .iter()
                    .map(|(k, v)| (k.clone(), v.text()))
                    .collect(),
                cwd: input.cwd.clone(),
                become_user: common.become_user().map(str::to_string),
            };
            if self.cx.dry_run {
                return dry_run(&session, &spec, &script, log, result).await;
            }
            let stdin = self.script.clone().map(Stdin::Bytes);
            let max = input
                .max_output
                .map(|m| m as usize)
                .unwrap_or(DEFAULT_MAX_OUTPUT);
            let timeout = common.timeout.map(|t| t.get());
            let done =
                remote::run(&session, &spec, stdin, log, max, timeout, &self.cx.cancel).await;
            crate::finish(
                result,
                done,
                input.expect_exit.as_deref(),
                spec.become_user.as_deref(),
            )
        })
    }
}

/// `--dry-run`: the connection is made (that is the reachability check); with `become`, sudo is
/// asked whether it would run a command without a password. Nothing else runs.
async fn dry_run(
    session: &Arc<Session>,
    spec: &Spec,
    script: &str,
    log: &HostLog,
    mut result: HostResult,
) -> HostResult {
    result.extra.insert("would_run".into(), json!(script));
    log.note(&format!("would run: {script}"));
    if let Some(user) = &spec.become_user {
        let probe = Spec {
            script: "true".into(),
            env: IndexMap::new(),
            cwd: None,
            become_user: Some(user.clone()),
        };
        let done = remote::run(
            session,
            &probe,
            None,
            log,
            4096,
            Some(std::time::Duration::from_secs(30)),
            &tokio_util::sync::CancellationToken::new(),
        )
        .await;
        if done.exit_code != Some(0) {
            let why = crate::sudo_problem(&done.stderr, user).unwrap_or_else(|| {
                format!("`sudo -n -u {user} true` failed: {}", done.stderr.trim())
            });
            return result.failed(why);
        }
        result.extra.insert("sudo".into(), json!("ok"));
    }
    result
}
