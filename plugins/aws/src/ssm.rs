//! SSM: `aws.ssm.send_command` (Run Command, waited for, with per-instance results),
//! `aws.ssm.get_parameter` and `aws.ssm.put_parameter` (Parameter Store).

use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_ssm::types::{CommandInvocationStatus, ParameterType, Target};
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use aws_smithy_types::retry::RetryConfig;
use indexmap::IndexMap;
use opsbook_engine::action::{
    Action, ActionError, ActionSpec, ErrorKind, LogStream, Registry, StepContext, TargetCase,
};
use opsbook_engine::model::DurationSpec;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::common::{aws_input, date, parse, text, texts};
use crate::config::sdk_config;
use crate::error::from_sdk;

pub(crate) fn register(r: &mut Registry) {
    r.register(SendCommand);
    r.register(GetParameter);
    r.register(PutParameter);
}

// ---------------------------------------------------------------------------------------------
// aws.ssm.send_command

/// One command line or several.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Lines {
    /// One line (or a whole script).
    One(String),
    /// Lines, run in order as one script.
    Many(Vec<String>),
}

impl Lines {
    fn list(&self) -> Vec<String> {
        match self {
            Lines::One(s) => vec![s.clone()],
            Lines::Many(v) => v.clone(),
        }
    }
}

aws_input! {
    /// Inputs of `aws.ssm.send_command`.
    pub struct SendInput {
        /// The SSM document to run (default `AWS-RunShellScript`; `AWS-RunPowerShellScript` for
        /// Windows, or any Command document).
        #[serde(default = "default_document")]
        pub document: String,
        /// The document version (`$LATEST`, `$DEFAULT` or a number; default: the default one).
        #[serde(default)]
        pub document_version: Option<String>,
        /// The script: one string or a list of lines, sent as the document's `commands`
        /// parameter (`AWS-RunShellScript`, `AWS-RunPowerShellScript`).
        #[serde(default)]
        pub commands: Option<Lines>,
        /// Document parameters (`{workingDirectory: /srv}`); a list gives several values.
        #[serde(default)]
        pub parameters: IndexMap<String, Value>,
        /// Instance (or managed node) ids, at most 50.
        #[serde(default)]
        pub instance_ids: Vec<String>,
        /// Tags the instances must have (`{Role: web}`, each an SSM target `tag:Role`); a list
        /// of values matches any.
        #[serde(default)]
        pub tags: IndexMap<String, Value>,
        /// A comment shown in the SSM console (at most 100 characters).
        #[serde(default)]
        pub comment: Option<String>,
        /// How long the command may run on an instance: the document's `executionTimeout`
        /// parameter (whole seconds; documents that declare it, such as `AWS-RunShellScript`).
        #[serde(default)]
        pub timeout: Option<DurationSpec>,
        /// How long SSM may wait for an instance to pick the command up before it gives up on
        /// that instance (`TimeoutSeconds`; at least 30 s; AWS's default is 1h).
        #[serde(default)]
        pub delivery_timeout: Option<DurationSpec>,
        /// How many instances run it at once: a number or a percentage (`10`, `25%`).
        #[serde(default)]
        pub max_concurrency: Option<Value>,
        /// How many failures stop SSM from sending it to more instances (`0`, `10%`).
        #[serde(default)]
        pub max_errors: Option<Value>,
        /// Wait until every instance has finished (default true).
        #[serde(default = "yes")]
        pub wait: bool,
        /// How often to ask SSM while waiting (default 2s).
        #[serde(default)]
        pub poll_interval: Option<DurationSpec>,
        /// How long to wait (default 10m): then the command is cancelled and the step fails.
        #[serde(default)]
        pub wait_timeout: Option<DurationSpec>,
        /// Succeed even when some instances failed (their statuses are in the result).
        #[serde(default)]
        pub allow_failures: bool,
    }
}

fn default_document() -> String {
    "AWS-RunShellScript".into()
}

fn yes() -> bool {
    true
}

impl SendInput {
    /// The document parameters to send: `parameters`, `commands`, `executionTimeout`.
    fn document_parameters(&self) -> IndexMap<String, Vec<String>> {
        let mut out: IndexMap<String, Vec<String>> = self
            .parameters
            .iter()
            .map(|(k, v)| (k.clone(), texts(v)))
            .collect();
        if let Some(lines) = &self.commands {
            out.insert("commands".into(), lines.list());
        }
        if let Some(t) = self.timeout {
            let secs = t.get().as_secs_f64().ceil().max(1.0) as u64;
            out.insert("executionTimeout".into(), vec![secs.to_string()]);
        }
        out
    }

    fn targets(&self) -> Vec<Target> {
        self.tags
            .iter()
            .map(|(k, v)| {
                Target::builder()
                    .key(format!("tag:{k}"))
                    .set_values(Some(texts(v)))
                    .build()
            })
            .collect()
    }

    /// Which instances, in words.
    fn selection(&self) -> String {
        if self.tags.is_empty() {
            self.instance_ids.join(", ")
        } else {
            self.tags
                .iter()
                .map(|(k, v)| format!("tag:{k}={}", texts(v).join("|")))
                .collect::<Vec<_>>()
                .join(", ")
        }
    }
}

/// One invocation of the command: an instance's run.
#[derive(Debug, Clone, Default)]
struct Invocation {
    id: String,
    /// AWS's status: `Pending`, `InProgress`, `Delayed`, `Success`, `Failed`, `Cancelled`,
    /// `TimedOut`, `Cancelling`.
    status: String,
    /// AWS's finer status: `Undeliverable`, `Terminated`, `ExecutionTimedOut` …
    details: String,
    exit_code: Option<i32>,
    stdout: String,
    stderr: String,
    started_at: Option<String>,
    finished_at: Option<String>,
    elapsed: Option<String>,
    duration_ms: u64,
    /// The document's steps (plugins) as ListCommandInvocations gives them: name, exit code,
    /// output (AWS cuts it at 2,500 characters).
    plugins: Vec<(String, i32, String)>,
    /// Its output was read, logged and its case reported.
    done: bool,
}

impl Invocation {
    fn terminal(&self) -> bool {
        !self.status.is_empty()
            && !matches!(
                self.status.as_str(),
                "Pending" | "InProgress" | "Delayed" | "Cancelling"
            )
    }

    /// The outcome, in the words of per-target cases: `succeeded`, `failed`, `timed_out`,
    /// `cancelled`, `unreachable` (the agent never got it), or `pending`.
    fn outcome(&self) -> &'static str {
        match self.details.as_str() {
            "Undeliverable" | "DeliveryTimedOut" | "Delivery Timed Out" => return "unreachable",
            // MaxErrors was reached: SSM stopped before this instance.
            "Terminated" => return "cancelled",
            _ => {}
        }
        match self.status.as_str() {
            "Success" => "succeeded",
            "Failed" => "failed",
            "TimedOut" => "timed_out",
            "Cancelled" => "cancelled",
            _ => "pending",
        }
    }

    /// Status, details and exit code in words (`Failed (exit 1)`).
    fn describe(&self) -> String {
        let mut s = self.status.clone();
        if !self.details.is_empty() && self.details != self.status {
            s.push_str(&format!(" / {}", self.details));
        }
        if let Some(c) = self.exit_code {
            s.push_str(&format!(" (exit {c})"));
        }
        s
    }

    fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "status": self.status,
            "status_details": self.details,
            "outcome": self.outcome(),
            "exit_code": self.exit_code,
            "stdout": self.stdout,
            "stderr": self.stderr,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "elapsed": self.elapsed,
            "duration_ms": self.duration_ms,
        })
    }
}

/// `PT1H2M3.5S` (ISO 8601, as SSM writes elapsed times) in milliseconds.
fn iso_duration_ms(s: &str) -> Option<u64> {
    let rest = s.strip_prefix("PT")?;
    let mut total = 0.0;
    let mut num = String::new();
    for c in rest.chars() {
        match c {
            '0'..='9' | '.' => num.push(c),
            'H' | 'M' | 'S' => {
                let n: f64 = num.parse().ok()?;
                num.clear();
                total += n * match c {
                    'H' => 3600.0,
                    'M' => 60.0,
                    _ => 1.0,
                };
            }
            _ => return None,
        }
    }
    Some((total * 1000.0) as u64)
}

/// Whether an SDK call failed with an answer that is not an AWS error (no error code, or a
/// body that is not AWS's JSON): the endpoint does not implement the operation (moto answers
/// ListCommandInvocations with an HTML page and HTTP 500).
fn unimplemented<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    match e {
        SdkError::ServiceError(se) => se.err().code().is_none(),
        SdkError::ResponseError(_) => true,
        _ => false,
    }
}

/// SDK calls of the poll loop are not retried by the SDK: the next poll is the retry.
fn no_retry() -> aws_sdk_ssm::config::Builder {
    aws_sdk_ssm::config::Builder::default().retry_config(RetryConfig::disabled())
}

/// Waits for a command's invocations, reading their output as each one finishes.
struct Waiter<'a> {
    client: &'a aws_sdk_ssm::Client,
    cx: &'a StepContext,
    command_id: String,
    /// ListCommandInvocations works here; otherwise each instance is read with
    /// GetCommandInvocation.
    list: bool,
    invocations: IndexMap<String, Invocation>,
    /// The command's own status (ListCommands).
    status: String,
}

impl<'a> Waiter<'a> {
    /// Reads the command's status and its invocations once. Errors a later poll may not meet
    /// come back as retryable.
    async fn poll(&mut self) -> Result<(), ActionError> {
        let out = self
            .client
            .list_commands()
            .command_id(&self.command_id)
            .customize()
            .config_override(no_retry())
            .send()
            .await
            .map_err(|e| from_sdk("ListCommands", e))?;
        let Some(command) = out.commands().first() else {
            return Err(ActionError::retryable(format!(
                "ListCommands: command {} not found (yet)",
                self.command_id
            )));
        };
        self.status = command
            .status()
            .map(|s| s.as_str().to_string())
            .unwrap_or_default();
        let ids: Vec<String> = command.instance_ids().to_vec();
        let targets = command.target_count();
        if self.list {
            match self.list_invocations().await {
                Ok(()) => return Ok(()),
                Err(Some(e)) => return Err(e),
                Err(None) => {
                    self.list = false;
                    self.cx.log.line(
                        LogStream::Stdout,
                        "ListCommandInvocations is not available at this endpoint: reading each instance with GetCommandInvocation",
                    );
                }
            }
        }
        if ids.is_empty() && targets > 0 {
            // Targets resolved by SSM are only known through ListCommandInvocations.
            return Err(ActionError::retryable(format!(
                "cannot read the invocations of command {}: ListCommandInvocations is not \
                 available and the command names no instance ids",
                self.command_id
            )));
        }
        for id in ids {
            let inv = self
                .invocations
                .entry(id.clone())
                .or_insert_with(|| Invocation {
                    id: id.clone(),
                    ..Default::default()
                });
            if inv.terminal() {
                continue;
            }
            let mut got = inv.clone();
            match get_invocation(self.client, &self.command_id, &id, None, &mut got).await {
                Ok(()) => *inv = got,
                // SSM has not created it yet.
                Err(e) if crate::error::code(&e) == Some("InvocationDoesNotExist") => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Every invocation with its plugins (`Err(None)`: the endpoint lacks the operation).
    async fn list_invocations(&mut self) -> Result<(), Option<ActionError>> {
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .list_command_invocations()
                .command_id(&self.command_id)
                .details(true)
                .set_next_token(token.clone())
                .customize()
                .config_override(no_retry())
                .send()
                .await;
            let page = match page {
                Ok(p) => p,
                Err(e) if unimplemented(&e) => return Err(None),
                Err(e) => return Err(Some(from_sdk("ListCommandInvocations", e))),
            };
            for ci in page.command_invocations() {
                let Some(id) = ci.instance_id() else { continue };
                let inv = self
                    .invocations
                    .entry(id.to_string())
                    .or_insert_with(|| Invocation {
                        id: id.to_string(),
                        ..Default::default()
                    });
                if inv.done {
                    continue;
                }
                inv.status = ci
                    .status()
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_default();
                inv.details = ci.status_details().unwrap_or_default().to_string();
                let plugins = ci.command_plugins();
                inv.plugins = plugins
                    .iter()
                    .map(|p| {
                        (
                            p.name().unwrap_or_default().to_string(),
                            p.response_code(),
                            p.output().unwrap_or_default().to_string(),
                        )
                    })
                    .collect();
                if let Some(start) = plugins
                    .iter()
                    .filter_map(|p| p.response_start_date_time())
                    .min_by_key(|d| d.as_nanos())
                {
                    inv.started_at = Some(date(start));
                    if let Some(end) = plugins
                        .iter()
                        .filter_map(|p| p.response_finish_date_time())
                        .max_by_key(|d| d.as_nanos())
                    {
                        inv.finished_at = Some(date(end));
                        inv.duration_ms =
                            ((end.as_nanos() - start.as_nanos()).max(0) / 1_000_000) as u64;
                    }
                }
            }
            token = page.next_token().map(str::to_string);
            if token.is_none() {
                return Ok(());
            }
        }
    }

    /// Reads the full output of every invocation that has just finished, logs it with the
    /// instance's id in front of each line, and reports its case.
    async fn finish_terminal(&mut self) {
        let ids: Vec<String> = self
            .invocations
            .values()
            .filter(|i| i.terminal() && !i.done)
            .map(|i| i.id.clone())
            .collect();
        for id in ids {
            let mut inv = self.invocations[&id].clone();
            if self.list {
                read_output(self.client, &self.command_id, &mut inv).await;
            }
            inv.done = true;
            log_invocation(self.cx, &inv);
            self.invocations.insert(id, inv);
        }
    }

    fn all_done(&self) -> bool {
        let command_done = !matches!(
            self.status.as_str(),
            "" | "Pending" | "InProgress" | "Cancelling"
        );
        command_done && self.invocations.values().all(|i| i.terminal())
    }

    fn pending(&self) -> Vec<&Invocation> {
        self.invocations
            .values()
            .filter(|i| !i.terminal())
            .collect()
    }

    /// Asks SSM to cancel the command (best effort: a few seconds at most).
    async fn cancel(&self) -> String {
        let call = self
            .client
            .cancel_command()
            .command_id(&self.command_id)
            .send();
        let msg = match tokio::time::timeout(Duration::from_secs(4), call).await {
            Ok(Ok(_)) => format!("cancelled command {}", self.command_id),
            Ok(Err(e)) => format!(
                "could not cancel command {}: {}",
                self.command_id,
                from_sdk("CancelCommand", e).message
            ),
            Err(_) => format!(
                "could not cancel command {}: CancelCommand timed out",
                self.command_id
            ),
        };
        self.cx.log.line(LogStream::Stderr, &msg);
        msg
    }
}

/// GetCommandInvocation for one instance (and one plugin), into `inv`.
async fn get_invocation(
    client: &aws_sdk_ssm::Client,
    command_id: &str,
    instance_id: &str,
    plugin: Option<&str>,
    inv: &mut Invocation,
) -> Result<(), ActionError> {
    let o = client
        .get_command_invocation()
        .command_id(command_id)
        .instance_id(instance_id)
        .set_plugin_name(plugin.map(str::to_string))
        .send()
        .await
        .map_err(|e| from_sdk("GetCommandInvocation", e))?;
    inv.status = o
        .status()
        .map(CommandInvocationStatus::as_str)
        .unwrap_or_default()
        .to_string();
    inv.details = o.status_details().unwrap_or_default().to_string();
    inv.exit_code = Some(o.response_code());
    inv.stdout = o.standard_output_content().unwrap_or_default().to_string();
    inv.stderr = o.standard_error_content().unwrap_or_default().to_string();
    inv.started_at = o
        .execution_start_date_time()
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    inv.finished_at = o
        .execution_end_date_time()
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    inv.elapsed = o
        .execution_elapsed_time()
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    if let Some(ms) = inv.elapsed.as_deref().and_then(iso_duration_ms) {
        inv.duration_ms = ms;
    }
    Ok(())
}

/// The full stdout and stderr of a finished invocation (GetCommandInvocation, per plugin when
/// the document has several steps), keeping the status ListCommandInvocations gave. Falls back
/// to the plugins' cut output when that fails.
async fn read_output(client: &aws_sdk_ssm::Client, command_id: &str, inv: &mut Invocation) {
    let status = (inv.status.clone(), inv.details.clone());
    let plugins = inv.plugins.clone();
    let read = if plugins.len() <= 1 {
        get_invocation(client, command_id, &inv.id.clone(), None, inv).await
    } else {
        let mut stdout = String::new();
        let mut stderr = String::new();
        let mut exit = 0;
        let mut res = Ok(());
        for (name, code, _) in &plugins {
            let mut one = inv.clone();
            if let Err(e) = get_invocation(client, command_id, &inv.id, Some(name), &mut one).await
            {
                res = Err(e);
                break;
            }
            stdout.push_str(&format!("--- {name}\n{}", one.stdout));
            if !one.stderr.is_empty() {
                stderr.push_str(&format!("--- {name}\n{}", one.stderr));
            }
            if exit == 0 {
                exit = *code;
            }
        }
        if res.is_ok() {
            inv.stdout = stdout;
            inv.stderr = stderr;
            inv.exit_code = Some(exit);
        }
        res
    };
    if read.is_err() {
        inv.stdout = plugins
            .iter()
            .map(|(n, _, o)| {
                if plugins.len() > 1 {
                    format!("--- {n}\n{o}")
                } else {
                    o.clone()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        inv.exit_code = plugins
            .iter()
            .map(|(_, c, _)| *c)
            .find(|c| *c != 0)
            .or(plugins.first().map(|p| p.1));
    }
    inv.status = status.0;
    inv.details = status.1;
}

/// An instance's output in the step log (`[i-…] line`), its closing line, and its JUnit case.
fn log_invocation(cx: &StepContext, inv: &Invocation) {
    for (stream, text) in [
        (LogStream::Stdout, &inv.stdout),
        (LogStream::Stderr, &inv.stderr),
    ] {
        for line in text.lines() {
            cx.log.line(stream, &format!("[{}] {line}", inv.id));
        }
    }
    cx.log.line(
        LogStream::Stdout,
        &format!("[{}] -- {}", inv.id, inv.describe()),
    );
    let ok = inv.outcome() == "succeeded";
    let output = (!ok && (!inv.stdout.is_empty() || !inv.stderr.is_empty()))
        .then(|| tail(&format!("{}{}", inv.stdout, inv.stderr), 20));
    cx.log.case(TargetCase {
        name: inv.id.clone(),
        status: inv.outcome().to_string(),
        duration_ms: inv.duration_ms,
        message: (!ok).then(|| inv.describe()),
        output,
        item: None,
    });
}

fn tail(s: &str, lines: usize) -> String {
    let all: Vec<&str> = s.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The step's result: the command and every invocation.
fn command_result(command_id: &str, document: &str, status: &str, invs: &[&Invocation]) -> Value {
    let mut totals = Map::new();
    totals.insert("instances".into(), json!(invs.len()));
    for k in [
        "succeeded",
        "failed",
        "timed_out",
        "cancelled",
        "unreachable",
        "pending",
    ] {
        let n = invs.iter().filter(|i| i.outcome() == k).count();
        totals.insert(k.into(), json!(n));
    }
    let ids: Vec<&str> = invs.iter().map(|i| i.id.as_str()).collect();
    let failed: Vec<&str> = invs
        .iter()
        .filter(|i| i.outcome() != "succeeded")
        .map(|i| i.id.as_str())
        .collect();
    let statuses: Map<String, Value> = invs
        .iter()
        .map(|i| (i.id.clone(), json!(i.status)))
        .collect();
    json!({
        "command_id": command_id,
        "document": document,
        "status": status,
        "instances": invs.iter().map(|i| i.to_json()).collect::<Vec<_>>(),
        "statuses": statuses,
        "ids": ids,
        "failed_ids": failed,
        "totals": totals,
        "count": invs.len(),
    })
}

/// `aws.ssm.send_command`.
pub struct SendCommand;

#[async_trait]
impl Action for SendCommand {
    fn spec(&self) -> ActionSpec {
        ActionSpec::new::<SendInput, Value>(
            "aws.ssm.send_command",
            "Run a command on EC2 instances (by ids or tags) with SSM Run Command, and wait for every instance's result.",
            "Sends `document` (default `AWS-RunShellScript`) with `commands` (one string or a \
             list of lines, the document's `commands` parameter) and `parameters` to \
             `instance_ids` or to the instances with `tags` (`{Role: web}` is the SSM target \
             `tag:Role`; SSM resolves it, so managed non-EC2 nodes match too). Optional: \
             `comment`, `timeout` (the document's `executionTimeout`, whole seconds), \
             `delivery_timeout` (`TimeoutSeconds`), `max_concurrency` and `max_errors` (`10`, \
             `25%`), `document_version`.\n\n\
             With `wait` (default true) it polls every `poll_interval` (default 2s) \
             (ListCommands and ListCommandInvocations, or GetCommandInvocation per instance \
             where the endpoint lacks the latter) until every invocation has finished \
             (`Success`, `Failed`, `Cancelled`, `TimedOut`; details such as `Undeliverable`, \
             `Terminated`, `ExecutionTimedOut`). Each finished instance's output (read in full \
             with GetCommandInvocation: AWS keeps 24,000 characters of each stream) goes to the \
             step log line by line as `[i-…] line`, then `[i-…] -- Success (exit 0)`, and \
             becomes a JUnit case. After `wait_timeout` (default 10m) the command is cancelled \
             (CancelCommand) and the step fails; so it is when the step is cancelled or times \
             out.\n\n\
             Result: `command_id`, `document`, `status` (the command's), `instances` (each `id`, \
             `status`, `status_details`, `outcome` (`succeeded`, `failed`, `timed_out`, \
             `cancelled`, `unreachable`, `pending`), `exit_code`, `stdout`, `stderr`, \
             `started_at`, `finished_at`, `elapsed`, `duration_ms`), `statuses` (id → status), \
             `ids` (the instances SSM resolved), `failed_ids`, `totals` (`instances`, `succeeded`, `failed`, \
             `timed_out`, `cancelled`, `unreachable`, `pending`), `count`. The step fails when \
             an instance did not succeed (the message names them and their status; the result \
             is kept in the report) unless `allow_failures: true`. Without `wait`: the command \
             id and `status` right after sending, the requested instances `pending`.\n\n\
             `--dry-run`: sends nothing; checks the document (DescribeDocument: it exists, \
             takes the parameters given and gets every required one) and the targets (EC2 \
             DescribeInstances of the ids, or of the tags: which instances match, warning about \
             ones not running), and reports them.",
        )
        .with_check()
    }

    async fn run(&self, input: Value, cx: &StepContext) -> Result<Value, ActionError> {
        let input: SendInput = parse(input)?;
        if input.instance_ids.is_empty() == input.tags.is_empty() {
            return Err(ActionError::permanent(
                "say which instances with either `instance_ids` or `tags` (one of them)",
            ));
        }
        let params = input.document_parameters();
        let config = sdk_config(cx, &input.key()).await?;
        let client = aws_sdk_ssm::Client::new(&config);
        if cx.dry_run {
            let ec2 = aws_sdk_ec2::Client::new(&config);
            return check(&client, &ec2, &input, &params, cx).await;
        }
        let mut req = client
            .send_command()
            .document_name(&input.document)
            .set_document_version(input.document_version.clone())
            .set_comment(input.comment.clone())
            .set_max_concurrency(input.max_concurrency.as_ref().map(text))
            .set_max_errors(input.max_errors.as_ref().map(text))
            .set_timeout_seconds(
                input
                    .delivery_timeout
                    .map(|d| d.get().as_secs().clamp(30, 2_592_000) as i32),
            );
        if !params.is_empty() {
            req = req.set_parameters(Some(params.clone().into_iter().collect()));
        }
        if input.tags.is_empty() {
            req = req.set_instance_ids(Some(input.instance_ids.clone()));
        } else {
            req = req.set_targets(Some(input.targets()));
        }
        let sent = req.send().await.map_err(|e| from_sdk("SendCommand", e))?;
        let command = sent
            .command()
            .ok_or_else(|| ActionError::permanent("SendCommand: the answer has no command"))?;
        let command_id = command.command_id().unwrap_or_default().to_string();
        let status = command
            .status()
            .map(|s| s.as_str().to_string())
            .unwrap_or_default();
        cx.log.line(
            LogStream::Stdout,
            &format!(
                "sent command {command_id} ({}) to {}",
                input.document,
                input.selection()
            ),
        );
        let mut waiter = Waiter {
            client: &client,
            cx,
            command_id: command_id.clone(),
            list: true,
            invocations: command
                .instance_ids()
                .iter()
                .map(|id| {
                    (
                        id.clone(),
                        Invocation {
                            id: id.clone(),
                            status: "Pending".into(),
                            ..Default::default()
                        },
                    )
                })
                .collect(),
            status,
        };
        if !input.wait {
            let invs: Vec<&Invocation> = waiter.invocations.values().collect();
            return Ok(command_result(
                &command_id,
                &input.document,
                &waiter.status,
                &invs,
            ));
        }
        let interval = input
            .poll_interval
            .map(|d| d.get())
            .unwrap_or(Duration::from_secs(2))
            .max(Duration::from_millis(10));
        let limit = input
            .wait_timeout
            .map(|d| d.get())
            .unwrap_or(Duration::from_secs(600));
        let deadline = Instant::now() + limit;
        let mut last_error: Option<String> = None;
        loop {
            match waiter.poll().await {
                Ok(()) => last_error = None,
                Err(e) if e.kind == ErrorKind::Retryable => {
                    if last_error.as_deref() != Some(e.message.as_str()) {
                        cx.log
                            .line(LogStream::Stderr, &format!("{} (asking again)", e.message));
                    }
                    last_error = Some(e.message);
                }
                Err(e) => {
                    return Err(ActionError::permanent(format!(
                        "waiting for command {command_id}: {}",
                        e.message
                    ))
                    .with_details(e.details))
                }
            }
            waiter.finish_terminal().await;
            if waiter.all_done() && last_error.is_none() {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                let cancelled = waiter.cancel().await;
                let left: Vec<String> = waiter
                    .pending()
                    .iter()
                    .map(|i| format!("{} {}", i.id, i.status))
                    .collect();
                for inv in waiter.invocations.values().filter(|i| !i.terminal()) {
                    cx.log.case(TargetCase {
                        name: inv.id.clone(),
                        status: "timed_out".into(),
                        duration_ms: limit.as_millis() as u64,
                        message: Some(format!(
                            "still {} after {}",
                            inv.status,
                            DurationSpec(limit)
                        )),
                        output: None,
                        item: None,
                    });
                }
                let invs: Vec<&Invocation> = waiter.invocations.values().collect();
                let result = command_result(&command_id, &input.document, &waiter.status, &invs);
                let still = if left.is_empty() {
                    format!("the command is still {}", waiter.status)
                } else {
                    format!("still running: {}", left.join(", "))
                };
                return Err(ActionError::retryable(format!(
                    "command {command_id} did not finish within {} ({still}); {cancelled}",
                    DurationSpec(limit)
                ))
                .with_details(result));
            }
            let pause = interval.min(deadline - now);
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = cx.cancel.cancelled() => {
                    let cancelled = waiter.cancel().await;
                    for inv in waiter.invocations.values().filter(|i| !i.terminal()) {
                        cx.log.case(TargetCase {
                            name: inv.id.clone(),
                            status: "cancelled".into(),
                            duration_ms: 0,
                            message: Some(format!("cut short while {}", inv.status)),
                            output: None,
                            item: None,
                        });
                    }
                    let invs: Vec<&Invocation> = waiter.invocations.values().collect();
                    let result = command_result(&command_id, &input.document, &waiter.status, &invs);
                    return Err(ActionError::cancelled_with(format!("cancelled; {cancelled}"))
                        .with_details(result));
                }
            }
        }
        let invs: Vec<&Invocation> = waiter.invocations.values().collect();
        let result = command_result(&command_id, &input.document, &waiter.status, &invs);
        let bad: Vec<&&Invocation> = invs.iter().filter(|i| i.outcome() != "succeeded").collect();
        cx.log.line(
            LogStream::Stdout,
            &format!(
                "command {command_id}: {} of {} instance(s) succeeded",
                invs.len() - bad.len(),
                invs.len()
            ),
        );
        if invs.is_empty() {
            cx.log
                .line(LogStream::Stdout, "no instance matched the targets");
        }
        if !bad.is_empty() && !input.allow_failures {
            let list: Vec<String> = bad
                .iter()
                .take(10)
                .map(|i| format!("{}: {}", i.id, i.describe()))
                .collect();
            let more = if bad.len() > 10 { "; …" } else { "" };
            return Err(ActionError::retryable(format!(
                "{} of {} instance(s) did not succeed ({}{more}); command {command_id}",
                bad.len(),
                invs.len(),
                list.join("; ")
            ))
            .with_details(result));
        }
        Ok(result)
    }
}

/// `--dry-run` of `send_command`: checks the document and the targets, sends nothing.
async fn check(
    client: &aws_sdk_ssm::Client,
    ec2: &aws_sdk_ec2::Client,
    input: &SendInput,
    params: &IndexMap<String, Vec<String>>,
    cx: &StepContext,
) -> Result<Value, ActionError> {
    let doc = client
        .describe_document()
        .name(&input.document)
        .set_document_version(input.document_version.clone())
        .send()
        .await
        .map_err(|e| from_sdk("DescribeDocument", e))?;
    let doc = doc.document().ok_or_else(|| {
        ActionError::permanent(format!("DescribeDocument: no document {}", input.document))
    })?;
    let declared: Vec<&str> = doc.parameters().iter().filter_map(|p| p.name()).collect();
    let unknown: Vec<&str> = params
        .keys()
        .map(String::as_str)
        .filter(|k| !declared.contains(k))
        .collect();
    if !unknown.is_empty() {
        return Err(ActionError::permanent(format!(
            "document {} takes no parameter {} (it takes: {})",
            input.document,
            unknown
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", "),
            if declared.is_empty() {
                "none".to_string()
            } else {
                declared.join(", ")
            }
        )));
    }
    let missing: Vec<&str> = doc
        .parameters()
        .iter()
        .filter(|p| p.default_value().is_none())
        .filter_map(|p| p.name())
        .filter(|n| !params.contains_key(*n))
        .collect();
    if !missing.is_empty() {
        return Err(ActionError::permanent(format!(
            "document {} needs the parameter(s) {} (`commands` for a script)",
            input.document,
            missing.join(", ")
        )));
    }
    let mut req = ec2.describe_instances();
    // Managed nodes outside EC2 (`mi-…`) are not EC2's to describe.
    let ec2_ids: Vec<String> = input
        .instance_ids
        .iter()
        .filter(|i| !i.starts_with("mi-"))
        .cloned()
        .collect();
    if input.tags.is_empty() {
        req = req.set_instance_ids(Some(ec2_ids.clone()));
    } else {
        for (k, v) in &input.tags {
            req = req.filters(
                aws_sdk_ec2::types::Filter::builder()
                    .name(format!("tag:{k}"))
                    .set_values(Some(texts(v)))
                    .build(),
            );
        }
    }
    let mut instances: Vec<(String, String)> = Vec::new();
    if !(input.tags.is_empty() && ec2_ids.is_empty()) {
        let mut pages = req.into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| from_sdk("DescribeInstances", e))?;
            for r in page.reservations() {
                for i in r.instances() {
                    let state = i
                        .state()
                        .and_then(|s| s.name())
                        .map(|n| n.as_str().to_string())
                        .unwrap_or_default();
                    if let Some(id) = i.instance_id() {
                        instances.push((id.to_string(), state));
                    }
                }
            }
        }
    }
    // Terminated instances linger in EC2's answers; SSM will not target them.
    instances.retain(|(_, s)| s != "terminated");
    let not_running: Vec<&str> = instances
        .iter()
        .filter(|(_, s)| s != "running")
        .map(|(id, _)| id.as_str())
        .collect();
    for (id, state) in instances.iter().filter(|(_, s)| s != "running") {
        cx.log.line(
            LogStream::Stderr,
            &format!("warning: {id} is {state}: SSM cannot run the command there"),
        );
    }
    let mut ids: Vec<String> = instances.iter().map(|(id, _)| id.clone()).collect();
    ids.extend(
        input
            .instance_ids
            .iter()
            .filter(|i| i.starts_with("mi-"))
            .cloned(),
    );
    cx.log.line(
        LogStream::Stdout,
        &format!(
            "dry run: would send {} to {} instance(s) ({}): {}",
            input.document,
            ids.len(),
            input.selection(),
            ids.join(", ")
        ),
    );
    let param_names: Vec<&String> = params.keys().collect();
    Ok(json!({
        "dry_run": true,
        "document": input.document,
        "document_version": doc.document_version(),
        "parameters": param_names,
        "ids": ids,
        "not_running": not_running,
        "count": ids.len(),
    }))
}

// ---------------------------------------------------------------------------------------------
// aws.ssm.get_parameter

aws_input! {
    /// Inputs of `aws.ssm.get_parameter`: one of `name`, `names` and `path`.
    pub struct GetInput {
        /// One parameter: the result has its `value`.
        #[serde(default)]
        pub name: Option<String>,
        /// Several parameters; every one must exist.
        #[serde(default)]
        pub names: Vec<String>,
        /// Every parameter under a path (`/app/prod/`).
        #[serde(default)]
        pub path: Option<String>,
        /// With `path`: the whole tree below it too, not just its direct children.
        #[serde(default)]
        pub recursive: bool,
        /// Decrypt SecureString values (default true).
        #[serde(default = "yes")]
        pub decrypt: bool,
    }
}

/// A parameter as results show it. A SecureString's value becomes a secret of the run
/// (`log.secret`): later steps can use it, and it is masked in logs, reports and errors
/// (undecrypted, it is ciphertext: masked all the same).
fn flatten_parameter(
    p: &aws_sdk_ssm::types::Parameter,
    log: &dyn opsbook_engine::action::LogSink,
) -> Value {
    let kind = p.r#type().map(|t| t.as_str()).unwrap_or_default();
    let value = p.value().unwrap_or_default();
    if kind == ParameterType::SecureString.as_str() {
        log.secret(value);
    }
    json!({
        "name": p.name(),
        "value": value,
        "type": kind,
        "version": p.version(),
        "last_modified": p.last_modified_date().map(date),
        "arn": p.arn(),
    })
}

/// `aws.ssm.get_parameter`.
pub struct GetParameter;

#[async_trait]
impl Action for GetParameter {
    fn spec(&self) -> ActionSpec {
        ActionSpec::new::<GetInput, Value>(
            "aws.ssm.get_parameter",
            "Read Parameter Store parameters: one, several, or a path.",
            "Reads `name` (GetParameter), `names` (GetParameters, 10 at a time; a name that \
             does not exist fails the step, naming it) or everything under `path` \
             (GetParametersByPath, every page; `recursive` for the whole tree). `decrypt` \
             (default true) decrypts SecureString values. Result: `parameters` (each `name`, \
             `value`, `type`, `version`, `last_modified`, `arn`), `values` (name → value), \
             `count`, and `value` with `name`.\n\n\
             A decrypted SecureString value becomes a secret of the run: later steps can use \
             it (`{{ steps.x.result.value }}`), and it is masked as `***` in logs, the report \
             and errors, like the runbook's `secrets:` (those are read before any step runs: \
             `secrets: {db: {aws_ssm: /prod/db/password}}`). The log names the parameters, \
             never their values. \
             `--dry-run`: runs (it changes nothing).",
        )
        .runs_in_dry_run()
    }

    async fn run(&self, input: Value, cx: &StepContext) -> Result<Value, ActionError> {
        let input: GetInput = parse(input)?;
        let given = [
            input.name.is_some(),
            !input.names.is_empty(),
            input.path.is_some(),
        ];
        if given.iter().filter(|g| **g).count() != 1 {
            return Err(ActionError::permanent(
                "say what to read with exactly one of `name`, `names` and `path`",
            ));
        }
        let config = sdk_config(cx, &input.key()).await?;
        let client = aws_sdk_ssm::Client::new(&config);
        let mut params: Vec<aws_sdk_ssm::types::Parameter> = Vec::new();
        if let Some(name) = &input.name {
            let out = client
                .get_parameter()
                .name(name)
                .with_decryption(input.decrypt)
                .send()
                .await
                .map_err(|e| from_sdk("GetParameter", e))?;
            params.extend(out.parameter().cloned());
        } else if let Some(path) = &input.path {
            let mut pages = client
                .get_parameters_by_path()
                .path(path)
                .recursive(input.recursive)
                .with_decryption(input.decrypt)
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| from_sdk("GetParametersByPath", e))?;
                params.extend(page.parameters().iter().cloned());
            }
        } else {
            let mut invalid = Vec::new();
            for chunk in input.names.chunks(10) {
                let out = client
                    .get_parameters()
                    .set_names(Some(chunk.to_vec()))
                    .with_decryption(input.decrypt)
                    .send()
                    .await
                    .map_err(|e| from_sdk("GetParameters", e))?;
                invalid.extend(out.invalid_parameters().iter().cloned());
                params.extend(out.parameters().iter().cloned());
            }
            if !invalid.is_empty() {
                return Err(ActionError::permanent(format!(
                    "GetParameters: ParameterNotFound: {}",
                    invalid.join(", ")
                ))
                .with_details(json!({"code": "ParameterNotFound", "invalid": invalid})));
            }
            // In the order asked.
            params.sort_by_key(|p| {
                input
                    .names
                    .iter()
                    .position(|n| Some(n.as_str()) == p.name())
                    .unwrap_or(usize::MAX)
            });
        }
        let list: Vec<Value> = params
            .iter()
            .map(|p| flatten_parameter(p, cx.log.as_ref()))
            .collect();
        let hidden = list
            .iter()
            .filter(|p| p["type"] == ParameterType::SecureString.as_str())
            .count();
        let names: Vec<&str> = params.iter().filter_map(|p| p.name()).collect();
        cx.log.line(
            LogStream::Stdout,
            &format!(
                "{} parameter(s){}: {}",
                list.len(),
                if hidden > 0 {
                    format!(" ({hidden} SecureString, masked)")
                } else {
                    String::new()
                },
                names.join(", ")
            ),
        );
        let values: Map<String, Value> = list
            .iter()
            .map(|p| (text(&p["name"]), p["value"].clone()))
            .collect();
        let mut out = json!({"parameters": list, "values": values, "count": list.len()});
        if input.name.is_some() {
            out["value"] = list
                .first()
                .map(|p| p["value"].clone())
                .unwrap_or(Value::Null);
            out["type"] = list
                .first()
                .map(|p| p["type"].clone())
                .unwrap_or(Value::Null);
            out["version"] = list
                .first()
                .map(|p| p["version"].clone())
                .unwrap_or(Value::Null);
        }
        Ok(out)
    }
}

// ---------------------------------------------------------------------------------------------
// aws.ssm.put_parameter

/// A parameter's type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
pub enum ParamType {
    /// Plain text.
    #[default]
    String,
    /// Comma-separated values (a list in `value` is joined with commas).
    StringList,
    /// Encrypted with KMS (`key_id`, default the account's `alias/aws/ssm`).
    SecureString,
}

impl ParamType {
    fn aws(self) -> ParameterType {
        match self {
            ParamType::String => ParameterType::String,
            ParamType::StringList => ParameterType::StringList,
            ParamType::SecureString => ParameterType::SecureString,
        }
    }
}

aws_input! {
    /// Inputs of `aws.ssm.put_parameter`.
    pub struct PutInput {
        /// The parameter's name (`/app/prod/feature`).
        pub name: String,
        /// The value; a list for a `StringList` (joined with commas).
        pub value: Value,
        /// `String` (default), `StringList` or `SecureString`.
        #[serde(default, rename = "type")]
        pub kind: ParamType,
        /// Replace an existing parameter (default false: an existing one fails the step).
        #[serde(default)]
        pub overwrite: bool,
        /// A description.
        #[serde(default)]
        pub description: Option<String>,
        /// The KMS key of a SecureString (default the account's `alias/aws/ssm`).
        #[serde(default)]
        pub key_id: Option<String>,
        /// Tags (`{Team: sre}`).
        #[serde(default)]
        pub tags: IndexMap<String, Value>,
    }
}

/// `aws.ssm.put_parameter`.
pub struct PutParameter;

#[async_trait]
impl Action for PutParameter {
    fn spec(&self) -> ActionSpec {
        ActionSpec::new::<PutInput, Value>(
            "aws.ssm.put_parameter",
            "Create or overwrite a Parameter Store parameter (String, StringList, SecureString).",
            "Writes `value` to `name` as `type` (`String`, default; `StringList`, a list is \
             joined with commas; `SecureString`, encrypted with `key_id` or the account's \
             default key), with `description` and `tags`. An existing parameter fails the step \
             (`ParameterAlreadyExists`) unless `overwrite: true` (tags are then added with \
             AddTagsToResource: AWS refuses both in one call). The value is never logged; give \
             a SecureString value from `secrets:` so that the report's rendered inputs mask it. \
             Result: `name`, `version`, `type`, `tier`. `--dry-run`: describes the call and \
             changes nothing.",
        )
    }

    async fn run(&self, input: Value, cx: &StepContext) -> Result<Value, ActionError> {
        let input: PutInput = parse(input)?;
        let value = match &input.value {
            Value::Array(items) => items.iter().map(text).collect::<Vec<_>>().join(","),
            Value::Null => return Err(ActionError::permanent("`value` must not be null")),
            other => text(other),
        };
        if input.kind.aws() == ParameterType::SecureString {
            // Masked from now on, in this step's recorded inputs too.
            cx.log.secret(&value);
        }
        if cx.dry_run {
            cx.log.line(
                LogStream::Stdout,
                &format!(
                    "dry run: would put {} ({})",
                    input.name,
                    input.kind.aws().as_str()
                ),
            );
            return Ok(json!({
                "dry_run": true,
                "name": input.name,
                "type": input.kind.aws().as_str(),
                "overwrite": input.overwrite,
            }));
        }
        let config = sdk_config(cx, &input.key()).await?;
        let client = aws_sdk_ssm::Client::new(&config);
        let tags: Vec<aws_sdk_ssm::types::Tag> = input
            .tags
            .iter()
            .filter_map(|(k, v)| {
                aws_sdk_ssm::types::Tag::builder()
                    .key(k)
                    .value(text(v))
                    .build()
                    .ok()
            })
            .collect();
        let mut req = client
            .put_parameter()
            .name(&input.name)
            .value(value)
            .r#type(input.kind.aws())
            .overwrite(input.overwrite)
            .set_description(input.description.clone())
            .set_key_id(input.key_id.clone());
        let tag_later = input.overwrite && !tags.is_empty();
        if !tags.is_empty() && !tag_later {
            req = req.set_tags(Some(tags.clone()));
        }
        let out = req.send().await.map_err(|e| from_sdk("PutParameter", e))?;
        if tag_later {
            client
                .add_tags_to_resource()
                .resource_type(aws_sdk_ssm::types::ResourceTypeForTagging::Parameter)
                .resource_id(&input.name)
                .set_tags(Some(tags))
                .send()
                .await
                .map_err(|e| from_sdk("AddTagsToResource", e))?;
        }
        let kind = input.kind.aws();
        cx.log.line(
            LogStream::Stdout,
            &format!(
                "put {} ({}), version {}",
                input.name,
                kind.as_str(),
                out.version()
            ),
        );
        Ok(json!({
            "name": input.name,
            "version": out.version(),
            "type": kind.as_str(),
            "tier": out.tier().map(|t| t.as_str()),
        }))
    }
}
