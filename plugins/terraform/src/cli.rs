//! Running the terraform binary: `-input=false`-style automation environment, the process in
//! its own group, output streamed into the step log line by line (and kept, bounded), and
//! cancellation by SIGINT first — terraform then stops cleanly and releases its state lock —
//! then SIGKILL after a grace period.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use indexmap::IndexMap;
use opsbook_engine::action::{ActionError, LogStream, StepContext};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;

/// How long terraform may take to stop after SIGINT before it is killed, for commands that
/// change infrastructure (apply, destroy): in-flight operations finish and the lock is
/// released. The actions' specs give the engine a longer grace for timeouts.
pub const CHANGE_GRACE: Duration = Duration::from_secs(60);
/// The same for commands that only read and plan.
pub const READ_GRACE: Duration = Duration::from_secs(10);
/// Bytes of each logged stream kept for results and error messages.
const MAX_KEPT: usize = 4 << 20;
/// Bytes of machine-readable output read (a plan's JSON).
const MAX_JSON: usize = 512 << 20;

/// One terraform invocation.
pub struct Run<'a> {
    /// The binary.
    pub binary: &'a Path,
    /// Its working directory (the configuration).
    pub dir: &'a Path,
    /// Arguments after the binary.
    pub args: Vec<String>,
    /// Environment on top of the step's.
    pub env: &'a IndexMap<String, String>,
    /// Stream stdout into the log (false for `-json` output that is parsed instead).
    pub log_stdout: bool,
    /// How long terraform may take to stop after SIGINT.
    pub grace: Duration,
}

/// How it ended.
pub struct Done {
    /// Exit code (`None`: killed).
    pub code: Option<i32>,
    /// Stdout (bounded).
    pub stdout: String,
    /// Stderr (bounded).
    pub stderr: String,
}

impl Done {
    /// Terraform's own words for a failure: its `Error:` block, else the last lines of stderr.
    pub fn error_text(&self) -> String {
        let text = if self.stderr.trim().is_empty() {
            &self.stdout
        } else {
            &self.stderr
        };
        if let Some(at) = text.find("Error: ") {
            let block: Vec<&str> = text[at..].lines().map(str::trim_end).take(12).collect();
            return block.join("\n").trim().to_string();
        }
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        lines[lines.len().saturating_sub(5)..].join("\n")
    }
}

/// Runs terraform to its end (or until the step is cancelled).
pub async fn run(r: Run<'_>, cx: &StepContext) -> Result<Done, ActionError> {
    let mut cmd = Command::new(r.binary);
    cmd.args(&r.args)
        .current_dir(r.dir)
        .envs(&cx.env)
        .envs(r.env)
        .env("TF_IN_AUTOMATION", "1")
        .env("TF_INPUT", "0")
        .env("CHECKPOINT_DISABLE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let shown = format!("terraform {}", r.args.first().cloned().unwrap_or_default());
    let mut child = cmd.spawn().map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::NotFound {
            " (install terraform, or give its path as `binary`)"
        } else {
            ""
        };
        ActionError::permanent(format!(
            "cannot run {} in {}: {e}{hint}",
            r.binary.display(),
            r.dir.display()
        ))
    })?;
    let pid = child.id();
    let mut guard = Guard(pid);
    let out = child.stdout.take();
    let err = child.stderr.take();
    let log_stdout = r.log_stdout;
    let grace = r.grace;
    let work = async {
        let (stdout, stderr) = tokio::join!(
            read(out, LogStream::Stdout, log_stdout, cx),
            read(err, LogStream::Stderr, true, cx)
        );
        let status = child.wait().await;
        (stdout, stderr, status)
    };
    tokio::pin!(work);
    let (stdout, stderr, status) = tokio::select! {
        r = &mut work => r,
        _ = cx.cancel.cancelled() => {
            // SIGINT first: terraform finishes what it is writing and releases the lock.
            signal(pid, libc::SIGINT);
            cx.log.line(LogStream::Stderr, &format!("{shown}: interrupted; waiting for terraform to stop"));
            match tokio::time::timeout(grace, &mut work).await {
                Ok(_) => {}
                Err(_) => {
                    signal(pid, libc::SIGKILL);
                    cx.log.line(LogStream::Stderr, &format!("{shown}: did not stop within {}s; killed (the state may still be locked)", grace.as_secs()));
                }
            }
            guard.0 = None;
            return Err(ActionError::cancelled_with(format!("cancelled; {shown} was interrupted")));
        }
    };
    guard.0 = None;
    let status = status.map_err(|e| ActionError::retryable(format!("waiting for {shown}: {e}")))?;
    Ok(Done {
        code: status.code(),
        stdout,
        stderr,
    })
}

/// Kills the process group if the future is dropped before terraform ended.
struct Guard(Option<u32>);

impl Drop for Guard {
    fn drop(&mut self) {
        signal(self.0.take(), libc::SIGKILL);
    }
}

fn signal(pid: Option<u32>, sig: i32) {
    if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
        // SAFETY: killpg only sends a signal, to the group our child leads (process_group(0)).
        unsafe {
            libc::killpg(pid, sig);
        }
    }
}

async fn read<R: AsyncRead + Unpin>(
    stream: Option<R>,
    which: LogStream,
    log: bool,
    cx: &StepContext,
) -> String {
    let Some(stream) = stream else {
        return String::new();
    };
    if !log {
        // Machine output (`show -json`, `output -json`): one document, possibly one long line.
        use tokio::io::AsyncReadExt;
        let mut buf = Vec::new();
        let _ = stream.take(MAX_JSON as u64).read_to_end(&mut buf).await;
        return String::from_utf8_lossy(&buf).into_owned();
    }
    // Line by line, bytes that are not UTF-8 replaced: a read error must not stop the draining
    // (terraform would block on a full pipe).
    let mut reader = BufReader::new(stream);
    let mut kept = String::new();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) => break,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf);
                let line = line.trim_end_matches(['\n', '\r']);
                cx.log.line(which, line);
                if kept.len() + line.len() < MAX_KEPT {
                    kept.push_str(line);
                    kept.push('\n');
                }
            }
            Err(_) => break,
        }
    }
    kept
}

/// The binary: `binary` if given, else `terraform` from PATH.
pub fn binary(given: Option<&str>, base: &Path) -> PathBuf {
    match given {
        Some(b) if b.contains('/') => base.join(b),
        Some(b) => PathBuf::from(b),
        None => PathBuf::from("terraform"),
    }
}
