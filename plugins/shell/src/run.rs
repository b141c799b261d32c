//! Running the process: its own process group, streamed output, a cap on what is kept, and
//! cancellation that kills the whole group.

use std::process::Stdio;

use opsbook_engine::action::{ActionError, LogStream, StepContext};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::process::Command;

use crate::{Parse, ShellInput, ShellOutput};

const DEFAULT_MAX_OUTPUT: u64 = 1 << 20;
/// Longest log line; longer output without a newline is logged in parts of this size.
const MAX_LINE: usize = 64 * 1024;

/// Quotes one argv item for display (dry run, messages).
fn display_argv(args: &[String]) -> String {
    args.iter()
        .map(|a| opsbook_engine::template::filters::quote_posix(a))
        .collect::<Vec<_>>()
        .join(" ")
}

pub(crate) async fn run(input: ShellInput, cx: &StepContext) -> Result<Value, ActionError> {
    let (mut cmd, shown) = match (&input.command, &input.args) {
        (Some(c), None) => {
            let mut cmd = Command::new("sh");
            cmd.arg("-c").arg(c);
            (cmd, c.clone())
        }
        (None, Some(args)) if !args.is_empty() => {
            let mut cmd = Command::new(&args[0]);
            cmd.args(&args[1..]);
            (cmd, display_argv(args))
        }
        _ => {
            return Err(ActionError::permanent(
                "give exactly one of `command` and `args`",
            ))
        }
    };
    if cx.dry_run {
        cx.log
            .line(LogStream::Stdout, &format!("would run: {shown}"));
        let out = ShellOutput {
            stdout: String::new(),
            stderr: String::new(),
            exit_code: 0,
            json: None,
            would_run: Some(shown),
        };
        return serde_json::to_value(out).map_err(|e| ActionError::permanent(e.to_string()));
    }
    let cwd = match &input.cwd {
        Some(dir) => cx.cwd.join(dir),
        None => cx.cwd.clone(),
    };
    cmd.current_dir(&cwd)
        .envs(&cx.env)
        .envs(&input.env)
        .stdin(if input.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| {
        ActionError::permanent(format!("cannot start `{shown}` in {}: {e}", cwd.display()))
    })?;
    let pid = child.id();
    // Until the command ends by itself, dropping this future (a timeout, Ctrl-C) kills the
    // whole process group, not just the shell.
    let mut guard = GroupGuard(pid);
    let cap = input.max_output.unwrap_or(DEFAULT_MAX_OUTPUT) as usize;

    if let (Some(text), Some(mut stdin)) = (input.stdin.clone(), child.stdin.take()) {
        tokio::spawn(async move {
            // A command that does not read its input closes the pipe; that is not an error.
            let _ = stdin.write_all(text.as_bytes()).await;
        });
    }
    let stdout = child
        .stdout
        .take()
        .map(|s| collect(s, LogStream::Stdout, cap, cx));
    let stderr = child
        .stderr
        .take()
        .map(|s| collect(s, LogStream::Stderr, cap, cx));
    let work = async {
        let (out, err) = tokio::join!(
            async {
                match stdout {
                    Some(f) => f.await,
                    None => String::new(),
                }
            },
            async {
                match stderr {
                    Some(f) => f.await,
                    None => String::new(),
                }
            }
        );
        let status = child.wait().await;
        (out, err, status)
    };
    let (stdout, stderr, status) = tokio::select! {
        r = work => r,
        _ = cx.cancel.cancelled() => {
            kill_group(pid);
            return Err(ActionError::cancelled());
        }
    };
    guard.disarm();
    let status =
        status.map_err(|e| ActionError::retryable(format!("waiting for `{shown}`: {e}")))?;
    let exit_code = status.code().unwrap_or(-1);
    let expected = input.expect_exit.clone().unwrap_or_else(|| vec![0]);
    if !expected.contains(&exit_code) {
        let how = match status.code() {
            Some(c) => format!("exited with code {c}"),
            None => "was killed by a signal".to_string(),
        };
        let last = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        let message = if last.is_empty() {
            format!("`{shown}` {how}")
        } else {
            format!("`{shown}` {how}: {last}")
        };
        return Err(ActionError::retryable(message).with_details(json!({
            "exit_code": exit_code, "stdout": stdout, "stderr": stderr,
        })));
    }
    let json = match input.parse {
        Some(Parse::Json) => Some(serde_json::from_str(&stdout).map_err(|e| {
            ActionError::permanent(format!("stdout of `{shown}` is not JSON ({e})"))
                .with_details(json!({"exit_code": exit_code, "stdout": stdout}))
        })?),
        _ => None,
    };
    let out = ShellOutput {
        stdout,
        stderr,
        exit_code,
        json,
        would_run: None,
    };
    serde_json::to_value(out).map_err(|e| ActionError::permanent(e.to_string()))
}

/// Reads a stream line by line: every line to the log, the first `cap` bytes kept.
async fn collect<R: AsyncRead + Unpin>(
    stream: R,
    which: LogStream,
    cap: usize,
    cx: &StepContext,
) -> String {
    let mut reader = BufReader::new(stream);
    let mut kept: Vec<u8> = Vec::new();
    let mut line: Vec<u8> = Vec::new();
    let mut truncated = false;
    let mut keep = |bytes: &[u8], kept: &mut Vec<u8>| {
        let room = cap.saturating_sub(kept.len());
        if room >= bytes.len() {
            kept.extend_from_slice(bytes);
        } else {
            kept.extend_from_slice(&bytes[..room]);
            truncated = true;
        }
    };
    loop {
        // Read what is there, cut it into lines; a line longer than MAX_LINE is logged in parts,
        // so memory stays bounded whatever the command prints.
        let chunk = match reader.fill_buf().await {
            Ok([]) | Err(_) => break,
            Ok(chunk) => chunk,
        };
        let (take, newline) = match chunk.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        let room = MAX_LINE.saturating_sub(line.len());
        let take = take.min(room.max(1));
        line.extend_from_slice(&chunk[..take]);
        reader.consume(take);
        if newline && line.ends_with(b"\n") || line.len() >= MAX_LINE {
            let text = String::from_utf8_lossy(&line);
            cx.log.line(which, text.trim_end_matches(['\n', '\r']));
            keep(&line, &mut kept);
            line.clear();
        }
    }
    if !line.is_empty() {
        let text = String::from_utf8_lossy(&line);
        cx.log.line(which, text.trim_end_matches(['\n', '\r']));
        keep(&line, &mut kept);
    }
    let mut s = String::from_utf8_lossy(&kept).into_owned();
    if truncated {
        s.push_str("\n[… output truncated; the step log has all of it]\n");
    }
    s
}

/// Kills the process group when dropped, unless disarmed.
struct GroupGuard(Option<u32>);

impl GroupGuard {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        kill_group(self.0.take());
    }
}

/// Kills the child's whole process group (the shell and everything it started).
fn kill_group(pid: Option<u32>) {
    if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
        // SAFETY: killpg only sends a signal; the group id is our child's pid, which it leads
        // (process_group(0)), so no unrelated process is hit.
        unsafe {
            libc::killpg(pid, libc::SIGKILL);
        }
    }
}
