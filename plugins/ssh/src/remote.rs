//! Running one command on one host: the remote command line (quoting, env, cwd, sudo), output
//! streamed line by line into the step log with the host's name in front, bounded capture, and
//! stopping the remote process group on timeout or cancellation.

use std::sync::Arc;
use std::time::Duration;

use indexmap::IndexMap;
use openssh::{Session, Stdio};
use opsbook_engine::action::LogStream;
use opsbook_engine::template::filters::quote_posix;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};

/// The first line the wrapper writes on stderr: the remote process group, so that it can be
/// stopped. It never reaches the log.
const PGID_MARK: &str = "OPSBOOK-PGID ";
/// Longest line kept whole in the log; longer lines are cut.
const MAX_LINE: usize = 64 * 1024;

/// What to run on a host and how.
#[derive(Debug, Clone)]
pub struct Spec {
    /// A shell command line (already quoted where it holds data).
    pub script: String,
    /// Environment for the command (names checked).
    pub env: IndexMap<String, String>,
    /// Working directory on the host.
    pub cwd: Option<String>,
    /// `sudo -n -u USER`.
    pub become_user: Option<String>,
}

/// Whether `name` can be an environment variable name in a POSIX shell.
pub fn valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

impl Spec {
    /// The command line sshd hands to the login shell: it reports its process group, then
    /// becomes (`exec`) `/bin/sh -c` of the payload, through sudo when asked.
    pub fn command_line(&self) -> String {
        let mut payload = String::new();
        for (k, v) in &self.env {
            payload.push_str(&format!("export {k}={}\n", quote_posix(v)));
        }
        if let Some(dir) = &self.cwd {
            payload.push_str(&format!("cd -- {} || exit 1\n", quote_posix(dir)));
        }
        payload.push_str(&self.script);
        let run = match &self.become_user {
            Some(user) => format!(
                "exec sudo -n -H -u {} -- /bin/sh -c {}",
                quote_posix(user),
                quote_posix(&payload)
            ),
            None => format!("exec /bin/sh -c {}", quote_posix(&payload)),
        };
        format!("printf '{PGID_MARK}%s\\n' \"$$\" >&2; {run}")
    }
}

/// How a command ended.
#[derive(Debug, Default)]
pub struct Finished {
    /// Exit code (`None`: killed by a signal or the connection went away).
    pub exit_code: Option<i32>,
    /// Captured stdout (up to the limit).
    pub stdout: String,
    /// Captured stderr (up to the limit), without the wrapper's line.
    pub stderr: String,
    /// Whether output went over the limit and was cut.
    pub truncated: bool,
    /// Why it was stopped (timeout, cancellation), or a transport error.
    pub stopped: Option<Stop>,
    /// With [`Output::Unpack`]: files and bytes unpacked, or why unpacking failed.
    pub unpacked: Option<Result<(usize, u64), String>>,
}

/// Why a command did not run to its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// The per-host timeout passed.
    TimedOut(Duration),
    /// The step was cancelled.
    Cancelled,
    /// The connection failed while the command ran.
    Lost(String),
}

/// Where a host's lines go: the step log, with the host in front.
pub trait Lines: Send + Sync {
    /// One line of the host's output.
    fn line(&self, stream: LogStream, line: &str);
}

/// Where a command's stdout goes.
pub enum Output {
    /// Line by line into the log, up to this many bytes into the result.
    Lines(usize),
    /// A tar stream, unpacked into this local folder.
    Unpack(std::path::PathBuf),
}

/// Runs `spec` on `session`, feeding `stdin` (if any) and streaming its output.
pub async fn run(
    session: &Arc<Session>,
    spec: &Spec,
    stdin: Option<Stdin>,
    lines: &dyn Lines,
    max_output: usize,
    timeout: Option<Duration>,
    cancel: &tokio_util::sync::CancellationToken,
) -> Finished {
    run_to(
        session,
        spec,
        stdin,
        lines,
        Output::Lines(max_output),
        timeout,
        cancel,
    )
    .await
}

/// [`run`], with stdout going where `output` says.
pub async fn run_to(
    session: &Arc<Session>,
    spec: &Spec,
    stdin: Option<Stdin>,
    lines: &dyn Lines,
    output: Output,
    timeout: Option<Duration>,
    cancel: &tokio_util::sync::CancellationToken,
) -> Finished {
    let max_output = match &output {
        Output::Lines(max) => *max,
        Output::Unpack(_) => 64 * 1024,
    };
    let mut cmd = session.clone().arc_raw_command(spec.command_line());
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = match cmd.spawn().await {
        Ok(c) => c,
        Err(e) => {
            return Finished {
                stopped: Some(Stop::Lost(format!("cannot start the command: {e}"))),
                ..Default::default()
            }
        }
    };
    let (Some(out), Some(err)) = (child.stdout().take(), child.stderr().take()) else {
        return Finished {
            stopped: Some(Stop::Lost("no output streams".into())),
            ..Default::default()
        };
    };
    let feed = child.stdin().take();
    let pgid = std::sync::Mutex::new(None::<u32>);
    let pgid_ref = &pgid;
    let work = async {
        let writer = async {
            if let (Some(mut w), Some(src)) = (feed, stdin) {
                let _ = src.copy_into(&mut w).await;
                let _ = w.shutdown().await;
            }
        };
        let stdout = async {
            match output {
                Output::Lines(max) => (
                    collect(out, LogStream::Stdout, lines, max, None).await,
                    None,
                ),
                Output::Unpack(dest) => ((String::new(), false), Some(unpack(out, dest).await)),
            }
        };
        let ((stdout, unpacked), stderr, ()) = tokio::join!(
            stdout,
            collect(err, LogStream::Stderr, lines, max_output, Some(pgid_ref)),
            writer
        );
        (stdout, stderr, unpacked)
    };
    let limit = async {
        match timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        (stdout, stderr, unpacked) = work => {
            let status = child.wait().await;
            let (exit_code, stopped) = match status {
                Ok(s) => (s.code(), None),
                Err(e) => (None, Some(Stop::Lost(e.to_string()))),
            };
            Finished {
                exit_code,
                truncated: stdout.1 || stderr.1,
                stdout: stdout.0,
                stderr: stderr.0,
                stopped,
                unpacked,
            }
        }
        _ = limit => {
            let id = read_pgid(&pgid);
            stop(session, id, spec.become_user.is_some()).await;
            Finished { stopped: timeout.map(Stop::TimedOut), ..Default::default() }
        }
        _ = cancel.cancelled() => {
            let id = read_pgid(&pgid);
            stop(session, id, spec.become_user.is_some()).await;
            Finished { stopped: Some(Stop::Cancelled), ..Default::default() }
        }
    }
}

fn read_pgid(slot: &std::sync::Mutex<Option<u32>>) -> Option<u32> {
    match slot.lock() {
        Ok(g) => *g,
        Err(p) => *p.into_inner(),
    }
}

/// Stops the remote process group: TERM, then KILL a second later (through sudo when the
/// command ran through sudo). Bounded: a host that does not answer is left alone after 5 s.
async fn stop(session: &Arc<Session>, pgid: Option<u32>, sudo: bool) {
    let Some(pgid) = pgid else { return };
    if pgid <= 1 {
        return;
    }
    // `kill -SIG -PGID` without `--`: dash's built-in kill does not take `--`.
    let kill = if sudo { "sudo -n kill" } else { "kill" };
    let line = format!(
        "{kill} -TERM -{pgid} 2>/dev/null; sleep 1; {kill} -KILL -{pgid} 2>/dev/null; true"
    );
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        session.raw_command(line).stdin(Stdio::null()).output(),
    )
    .await;
}

/// Reads a stream line by line into the log (and up to `max` bytes into the capture). On stderr,
/// the wrapper's first line gives the process group and is not logged.
async fn collect<R: AsyncRead + Unpin>(
    reader: R,
    stream: LogStream,
    lines: &dyn Lines,
    max: usize,
    pgid: Option<&std::sync::Mutex<Option<u32>>>,
) -> (String, bool) {
    let mut reader = BufReader::with_capacity(16 * 1024, reader);
    let mut captured = String::new();
    let mut truncated = false;
    let mut buf = Vec::new();
    let mut first = pgid.is_some();
    loop {
        buf.clear();
        // Bounded read of one line: a stream without newlines cannot grow memory without limit.
        let n = match read_line_bounded(&mut reader, &mut buf, MAX_LINE).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let text = String::from_utf8_lossy(&buf[..n]);
        let line = text.trim_end_matches(['\n', '\r']);
        if first {
            first = false;
            if let Some(id) = line.strip_prefix(PGID_MARK) {
                if let (Some(slot), Ok(id)) = (pgid, id.trim().parse::<u32>()) {
                    if let Ok(mut g) = slot.lock() {
                        *g = Some(id);
                    }
                }
                continue;
            }
        }
        lines.line(stream, line);
        if captured.len() + text.len() <= max {
            captured.push_str(&text);
        } else {
            truncated = true;
        }
    }
    (captured, truncated)
}

/// Reads up to and including a newline, or `max` bytes, whichever comes first.
async fn read_line_bounded<R: AsyncBufReadExt + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<usize> {
    loop {
        let available = r.fill_buf().await?;
        if available.is_empty() {
            return Ok(buf.len());
        }
        let room = max.saturating_sub(buf.len());
        let take = available.len().min(room);
        match available[..take].iter().position(|&b| b == b'\n') {
            Some(i) => {
                buf.extend_from_slice(&available[..=i]);
                r.consume(i + 1);
                return Ok(buf.len());
            }
            None => {
                buf.extend_from_slice(&available[..take]);
                r.consume(take);
                if buf.len() >= max {
                    return Ok(buf.len());
                }
            }
        }
    }
}

/// What to feed a command's stdin.
pub enum Stdin {
    /// Bytes in memory (a script).
    Bytes(Arc<Vec<u8>>),
    /// A local file, streamed (an archive to unpack).
    File(std::path::PathBuf),
}

impl Stdin {
    async fn copy_into<W: tokio::io::AsyncWrite + Unpin>(self, w: &mut W) -> std::io::Result<()> {
        match self {
            Stdin::Bytes(b) => w.write_all(&b).await,
            Stdin::File(path) => {
                let mut f = tokio::fs::File::open(path).await?;
                tokio::io::copy(&mut f, w).await.map(|_| ())
            }
        }
    }
}

/// Unpacks a tar stream into `dest` (entries cannot escape it: `..` and absolute paths are
/// refused, links are not followed out). Returns files and bytes written.
async fn unpack(
    reader: openssh::ChildStdout,
    dest: std::path::PathBuf,
) -> Result<(usize, u64), String> {
    let bridge = tokio_util::io::SyncIoBridge::new(reader);
    let work = tokio::task::spawn_blocking(move || -> Result<(usize, u64), String> {
        std::fs::create_dir_all(&dest)
            .map_err(|e| format!("cannot create {}: {e}", dest.display()))?;
        let mut archive = tar::Archive::new(bridge);
        archive.set_preserve_permissions(true);
        let mut files = 0;
        let mut bytes = 0;
        for entry in archive
            .entries()
            .map_err(|e| format!("reading the archive: {e}"))?
        {
            let mut entry = entry.map_err(|e| format!("reading the archive: {e}"))?;
            let is_file = entry.header().entry_type().is_file();
            let size = entry.header().size().unwrap_or(0);
            let unpacked = entry
                .unpack_in(&dest)
                .map_err(|e| format!("unpacking into {}: {e}", dest.display()))?;
            if unpacked && is_file {
                files += 1;
                bytes += size;
            }
        }
        Ok((files, bytes))
    });
    match work.await {
        Ok(r) => r,
        Err(e) => Err(format!("unpacking stopped: {e}")),
    }
}
