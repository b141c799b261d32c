//! The `shell` action: run a command through `sh -c`, or a program with an argv and no shell.
//!
//! This crate holds the action's contract (inputs, outputs, documentation) and its
//! registration. Inputs are validated against the schema generated from [`ShellInput`] before
//! anything runs.

use async_trait::async_trait;
use indexmap::IndexMap;
use opsbook_engine::action::{Action, ActionError, ActionSpec, Registry, StepContext};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

mod run;

/// Adds `shell` to a registry.
pub fn register(registry: &mut Registry) {
    registry.register(Shell);
}

/// How to read the command's standard output into `result.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Parse {
    /// Keep stdout as text only (the default).
    Text,
    /// Parse stdout as JSON into `result.json`; the step fails if it is not JSON.
    Json,
}

/// Inputs of `shell`. Exactly one of `command` and `args`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("oneOf" = [{"required": ["command"]}, {"required": ["args"]}]))]
pub struct ShellInput {
    /// A shell command line, run with `sh -c`. Quote template values with `| shquote`.
    pub command: Option<String>,
    /// A program and its arguments, run directly with no shell: nothing is split or expanded.
    #[schemars(length(min = 1))]
    pub args: Option<Vec<String>>,
    /// Working directory (relative to the runbook's folder).
    pub cwd: Option<String>,
    /// Extra environment variables, on top of the runbook's and the step's `env`.
    #[serde(default)]
    pub env: IndexMap<String, String>,
    /// Text written to the command's standard input.
    pub stdin: Option<String>,
    /// `json` parses stdout into `result.json`.
    pub parse: Option<Parse>,
    /// Exit codes that count as success (default `[0]`).
    #[schemars(length(min = 1))]
    pub expect_exit: Option<Vec<i32>>,
    /// Keep at most this many bytes of each of stdout and stderr in the result (default 1 MiB);
    /// the log keeps every line.
    #[schemars(range(min = 1))]
    pub max_output: Option<u64>,
}

/// Result of `shell`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ShellOutput {
    /// Standard output (capped at `max_output`).
    pub stdout: String,
    /// Standard error (capped at `max_output`).
    pub stderr: String,
    /// The exit code; -1 when the process was killed by a signal.
    pub exit_code: i32,
    /// Stdout parsed as JSON, with `parse: json`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub json: Option<Value>,
    /// In `--dry-run`: the command that would run (nothing ran).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub would_run: Option<String>,
}

/// The `shell` action.
pub struct Shell;

#[async_trait]
impl Action for Shell {
    fn spec(&self) -> ActionSpec {
        ActionSpec::new::<ShellInput, ShellOutput>(
            "shell",
            "Run a command through `sh -c`, or a program with `args` and no shell.",
            "`command` runs through `sh -c`: put template values in it with `| shquote`. `args` \
             runs a program directly: each item is one argument, nothing is split or expanded, so \
             data can never become code. Stdout and stderr stream line by line to the step log \
             and are kept in the result up to `max_output` bytes. A step fails when the exit code \
             is not in `expect_exit` (default `[0]`). `parse: json` parses stdout into \
             `result.json`. In `--dry-run` the command is printed, not run.",
        )
    }

    async fn run(&self, input: Value, cx: &StepContext) -> Result<Value, ActionError> {
        let input: ShellInput = serde_json::from_value(input)
            .map_err(|e| ActionError::permanent(format!("invalid input: {e}")))?;
        run::run(input, cx).await
    }
}
