//! `ssh.run`: a command, an argv or a script on every selected host.

use std::sync::Arc;

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use indexmap::IndexMap;
use openssh::Session;
use opsbook_engine::action::{Action, ActionError, ActionSpec, StepContext};
use opsbook_engine::template::filters::quote_posix;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::input::Common;
use crate::remote::{self, Spec};
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
        let per_host = RunOnHost {
            cx: cx.clone(),
            files: Mutex::new(HashMap::new()),
        };
        crate::fleet(&input, cx, &per_host).await
    }
}

struct RunOnHost {
    cx: StepContext,
    /// Local script files, read once each.
    files: Mutex<HashMap<String, Arc<String>>>,
}

impl RunOnHost {
    fn script_file(&self, file: &str) -> Result<Arc<String>, String> {
        if let Some(text) = self.files.lock().ok().and_then(|m| m.get(file).cloned()) {
            return Ok(text);
        }
        let path = self.cx.cwd.join(file);
        let bytes = std::fs::read(&path)
            .map_err(|e| format!("cannot read the script {}: {e}", path.display()))?;
        let text = Arc::new(
            String::from_utf8(bytes)
                .map_err(|_| format!("the script {} is not UTF-8 text", path.display()))?,
        );
        if let Ok(mut m) = self.files.lock() {
            m.insert(file.to_string(), text.clone());
        }
        Ok(text)
    }

    /// The remote shell text of the inputs (without env, cwd and sudo, which [`Spec`] adds),
    /// and what to remove if it is stopped.
    fn script_text(&self, input: &RunInput, tag: &str) -> Result<(String, Option<String>), String> {
        match (&input.command, &input.args, &input.script) {
            (Some(c), None, None) => Ok((c.clone(), None)),
            (None, Some(args), None) if !args.is_empty() => Ok((
                args.iter()
                    .map(|a| quote_posix(a))
                    .collect::<Vec<_>>()
                    .join(" "),
                None,
            )),
            (None, args, Some(script)) => {
                let text = match script {
                    Script::Inline(t) => Arc::new(t.clone()),
                    Script::File { file } => self.script_file(file)?,
                };
                let args: String = args
                    .iter()
                    .flatten()
                    .map(|a| format!(" {}", quote_posix(a)))
                    .collect();
                // The script goes to a temporary file through a here-document whose delimiter
                // cannot occur in it, then runs; the file is removed when the shell exits.
                let mut delim = format!("OPSBOOK_SCRIPT_{tag}");
                while text.lines().any(|l| l == delim) {
                    delim.push('_');
                }
                let newline = if text.ends_with('\n') { "" } else { "\n" };
                let pattern = format!("\"${{TMPDIR:-/tmp}}\"/opsbook.{tag}.");
                Ok((
                    format!(
                        "t=$(mktemp {pattern}XXXXXX) || exit 1\n\
                         trap 'rm -f \"$t\"' EXIT\n\
                         cat > \"$t\" <<'{delim}'\n{text}{newline}{delim}\n\
                         chmod 700 \"$t\" || exit 1\n\
                         \"$t\"{args}"
                    ),
                    Some(format!("rm -f {pattern}*")),
                ))
            }
            _ => Err(
                "give exactly one of `command`, `args` or `script` (`args` may go with `script`)"
                    .into(),
            ),
        }
    }
}

impl PerHost for RunOnHost {
    fn common(&self, input: &Value) -> Result<Common, String> {
        crate::parse::<RunInput>(input)
            .map(|i| i.common())
            .map_err(|e| e.message)
    }

    fn run<'a>(
        &'a self,
        _target: &'a Target,
        input: Value,
        session: Arc<Session>,
        log: &'a HostLog,
        result: HostResult,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = HostResult> + Send + 'a>> {
        Box::pin(async move {
            let input: RunInput = match crate::parse(&input) {
                Ok(i) => i,
                Err(e) => return result.failed(e.message),
            };
            let tag = remote::nonce();
            let (script, cleanup) = match self.script_text(&input, &tag) {
                Ok(s) => s,
                Err(e) => return result.failed(e),
            };
            if let Some(bad) = input.env.keys().find(|k| !remote::valid_env_name(k)) {
                return result.failed(format!("`env` has an invalid variable name `{bad}`"));
            }
            let common = input.common();
            let shown = match &input.script {
                Some(Script::File { file }) => format!("script {file}"),
                Some(Script::Inline(_)) => "an inline script".to_string(),
                None => script.clone(),
            };
            let spec = Spec {
                script,
                env: input
                    .env
                    .iter()
                    .map(|(k, v)| (k.clone(), v.text()))
                    .collect(),
                cwd: input.cwd.clone(),
                become_user: common.become_user().map(str::to_string),
                script_on_stdin: true,
                cleanup,
            };
            if self.cx.dry_run {
                return dry_run(&session, &spec, &shown, log, result, &self.cx).await;
            }
            let max = input
                .max_output
                .map(|m| m as usize)
                .unwrap_or(DEFAULT_MAX_OUTPUT);
            let timeout = common.timeout.map(|t| t.get());
            let done = remote::run(&session, &spec, None, log, max, timeout, &self.cx.cancel).await;
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
    shown: &str,
    log: &HostLog,
    mut result: HostResult,
    cx: &StepContext,
) -> HostResult {
    result.extra.insert("would_run".into(), json!(shown));
    log.note(&format!("would run: {shown}"));
    if let Some(user) = &spec.become_user {
        if let Err(why) = crate::probe_sudo(session, user, log, cx).await {
            return result.failed(why);
        }
        result.extra.insert("sudo".into(), json!("ok"));
    }
    result
}
