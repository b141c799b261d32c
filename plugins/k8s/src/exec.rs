//! `k8s.exec`: a command in a pod's container over the API's WebSocket exec (v5/v4 channel
//! protocol): stdout, stderr and the exit code.

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use kube::api::AttachParams;
use kube::Api;
use opsbook_engine::action::{
    Action, ActionError, ActionSpec, LogSink, LogStream, Registry, StepContext,
};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::common::{k8s_input, parse, selector, text, Selector};
use crate::target::Target;

pub(crate) fn register(r: &mut Registry) {
    r.register(Exec);
}

/// A command: an argv list, or a text run with `sh -c`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Command {
    /// `[pg_dump, -U, app]`: run as is.
    Argv(Vec<String>),
    /// `pg_dump -U app | gzip`: run by `sh -c` (the image needs a shell).
    Shell(String),
}

impl Command {
    /// The argv.
    pub fn argv(&self) -> Vec<String> {
        match self {
            Command::Argv(a) => a.clone(),
            Command::Shell(s) => vec!["sh".into(), "-c".into(), s.clone()],
        }
    }
}

k8s_input! {
    /// Input of `k8s.exec`.
    pub struct ExecInput {
        /// The pod's name (or give `labels`).
        #[serde(default)]
        pub pod: Option<String>,
        /// Label selector: the command runs in one matching pod (a running, ready one first).
        #[serde(default)]
        pub labels: Option<Selector>,
        /// The container (default: the pod's `kubectl.kubernetes.io/default-container`, else
        /// the first).
        #[serde(default)]
        pub container: Option<String>,
        /// The command: an argv list (`[nginx, -s, reload]`) or a text for `sh -c`.
        pub command: Command,
        /// Text given to the command's standard input.
        #[serde(default)]
        pub stdin: Option<String>,
        /// Exit codes that count as success (default `[0]`).
        #[serde(default = "zero")]
        pub expect_exit: Vec<i32>,
    }
}

fn zero() -> Vec<i32> {
    vec![0]
}

const DOC: &str = "Runs `command` in a container of `pod` (or of one pod `labels` selects, a \
running and ready one first) through the API server's exec WebSocket, like `kubectl exec`: \
no TTY, `stdin` text when given. Output lines go to the step's log as they come. An exit code \
not in `expect_exit` (default `[0]`) fails the step with the code and the output's end in the \
details. Result: `pod`, `container`, `stdout`, `stderr`, `exit_code`. `--dry-run`: finds the \
pod and container, and says what it would run without running it.";

/// Output kept per stream (the end is kept when a command says more).
const KEEP: usize = 4 << 20;

async fn pump<R: AsyncRead + Unpin>(mut r: R, stream: LogStream, log: &dyn LogSink) -> String {
    let mut all: Vec<u8> = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                all.extend_from_slice(&buf[..n]);
                if all.len() > KEEP {
                    all.drain(..all.len() - KEEP);
                }
                pending.extend_from_slice(&buf[..n]);
                while let Some(pos) = pending.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=pos).collect();
                    let text = String::from_utf8_lossy(&line[..line.len() - 1]);
                    log.line(stream, text.trim_end_matches('\r'));
                }
            }
        }
    }
    if !pending.is_empty() {
        log.line(stream, &String::from_utf8_lossy(&pending));
    }
    String::from_utf8_lossy(&all).into_owned()
}

/// The exit code a Status of the exec's status channel carries, or why there is none.
pub fn exit_code(s: &Status) -> Result<i32, String> {
    if s.status.as_deref() == Some("Success") {
        return Ok(0);
    }
    let reason = s.reason.as_deref().unwrap_or("");
    if reason == "NonZeroExitCode" {
        if let Some(code) = s.details.as_ref().and_then(|d| {
            d.causes
                .iter()
                .flatten()
                .find(|c| c.reason.as_deref() == Some("ExitCode"))
                .and_then(|c| c.message.as_deref()?.trim().parse().ok())
        }) {
            return Ok(code);
        }
    }
    match s.message.as_deref().filter(|m| !m.is_empty()) {
        Some(m) => Err(m.to_string()),
        None => Err(format!("the command failed ({reason})")),
    }
}

fn tail(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &s[start..])
}

/// `k8s.exec`.
pub struct Exec;

#[async_trait]
impl Action for Exec {
    fn spec(&self) -> ActionSpec {
        ActionSpec::new::<ExecInput, Value>(
            "k8s.exec",
            "Run a command in a pod's container (kubectl exec): stdout, stderr, exit code.",
            DOC,
        )
    }

    async fn run(&self, input: Value, cx: &StepContext) -> Result<Value, ActionError> {
        let input: ExecInput = parse(input)?;
        let argv = input.command.argv();
        if argv.is_empty() || argv[0].is_empty() {
            return Err(ActionError::permanent("`command` is empty"));
        }
        let t = Target::new(cx, input.conn(), &input.namespace, Some("v1"), "Pod").await?;
        let pods =
            crate::pods::find(cx, &t, input.pod.as_deref(), selector(&input.labels), 1).await?;
        let pod = &pods[0];
        let pod_name = text(pod, "/metadata/name").unwrap_or("").to_string();
        let container = crate::pods::container(pod, input.container.as_deref())?;
        let label = format!("{} container {container}", t.shown(&pod_name));
        let shown_cmd = argv.join(" ");
        if cx.dry_run {
            cx.log.line(
                LogStream::Stdout,
                &format!("dry run: would run `{shown_cmd}` in {label}"),
            );
            return Ok(
                json!({"pod": pod_name, "container": container, "stdout": "", "stderr": "",
                "exit_code": null, "dry_run": true}),
            );
        }
        let typed: Api<Pod> = Api::namespaced(t.conn.client.clone(), &t.ns);
        let ap = AttachParams::default()
            .container(container.clone())
            .stdin(input.stdin.is_some())
            .stdout(true)
            .stderr(true);
        let what = format!("exec in {label}");
        let mut proc =
            crate::retry::write(cx, &what, || typed.exec(&pod_name, argv.clone(), &ap)).await?;
        if let (Some(text), Some(mut w)) = (&input.stdin, proc.stdin()) {
            let text = text.clone();
            tokio::spawn(async move {
                let _ = w.write_all(text.as_bytes()).await;
                let _ = w.shutdown().await;
            });
        }
        let status = proc.take_status();
        let out = proc.stdout();
        let err = proc.stderr();
        let log = cx.log.clone();
        let work = async move {
            let o = async {
                match out {
                    Some(r) => pump(r, LogStream::Stdout, log.as_ref()).await,
                    None => String::new(),
                }
            };
            let e = async {
                match err {
                    Some(r) => pump(r, LogStream::Stderr, log.as_ref()).await,
                    None => String::new(),
                }
            };
            let s = async {
                match status {
                    Some(f) => f.await,
                    None => None,
                }
            };
            tokio::join!(o, e, s)
        };
        let (stdout, stderr, status) = tokio::select! {
            r = work => r,
            _ = cx.cancel.cancelled() => {
                proc.abort();
                return Err(ActionError::cancelled_with(format!("cancelled while running `{shown_cmd}` in {label}")));
            }
        };
        let _ = proc.join().await;
        let code = match status.as_ref().map(exit_code) {
            Some(Ok(c)) => c,
            Some(Err(m)) => {
                return Err(ActionError::permanent(format!("{what}: {m}")).with_details(json!({
                    "status": status, "stdout": tail(&stdout, 4000), "stderr": tail(&stderr, 4000)})))
            }
            None => {
                return Err(ActionError::retryable(format!(
                    "{what}: the connection ended without an exit status"
                ))
                .with_details(json!({"stdout": tail(&stdout, 4000), "stderr": tail(&stderr, 4000)})))
            }
        };
        cx.log.line(
            LogStream::Stdout,
            &format!("`{shown_cmd}` exited with {code} in {label}"),
        );
        if !input.expect_exit.contains(&code) {
            return Err(ActionError::permanent(format!(
                "`{shown_cmd}` exited with {code} in {label} (expected {})",
                input.expect_exit.iter().map(i32::to_string).collect::<Vec<_>>().join(", ")
            ))
            .with_details(json!({"exit_code": code, "stdout": tail(&stdout, 4000), "stderr": tail(&stderr, 4000)})));
        }
        Ok(
            json!({"pod": pod_name, "container": container, "stdout": stdout, "stderr": stderr, "exit_code": code}),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_from_the_status_channel() {
        let s: Status =
            serde_json::from_value(json!({"metadata": {}, "status": "Success"})).unwrap();
        assert_eq!(exit_code(&s), Ok(0));
        let s: Status = serde_json::from_value(json!({"metadata": {}, "status": "Failure",
            "message": "command terminated with non-zero exit code: exit status 3", "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": "3"}]}})).unwrap();
        assert_eq!(exit_code(&s), Ok(3));
        let s: Status =
            serde_json::from_value(json!({"status": "Failure", "reason": "InternalError",
            "message": "exec: \"nope\": executable file not found in $PATH"}))
            .unwrap();
        assert!(exit_code(&s)
            .unwrap_err()
            .contains("executable file not found"));
    }
}
