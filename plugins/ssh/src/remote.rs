//! Running one command on one host: the remote command line (quoting, env, cwd, sudo), output
//! streamed line by line into the step log with the host's name in front, bounded capture, and
//! stopping the remote process group on timeout or cancellation.
//!
//! For `ssh.run` the command, its environment and its working directory travel on the command's
//! stdin (`/bin/sh -s`), so secrets in them never show in the host's process list nor in sudo's
//! log; the command itself gets `/dev/null` as stdin. `ssh.copy` and `ssh.fetch` send data on
//! stdin, so their (secret-free) commands travel as `sh -c` arguments.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indexmap::IndexMap;
use openssh::{Session, Stdio};
use opsbook_engine::action::LogStream;
use opsbook_engine::template::filters::quote_posix;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::time::Instant;

/// Longest line kept whole in the log; longer lines are cut.
const MAX_LINE: usize = 64 * 1024;
/// Stderr lines searched for the process group marker (the login shell may print first).
const MARK_SEARCH_LINES: usize = 64;
/// How long output may keep coming after the command's shell wrote its exit mark (a daemon it
/// started may hold its stdout open forever).
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(5);

/// A fresh random token (for markers, heredoc delimiters and temporary file names).
pub fn nonce() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    format!("{:016x}", h.finish())
}

/// What to run on a host and how.
#[derive(Debug, Clone, Default)]
pub struct Spec {
    /// A shell script (already quoted where it holds data).
    pub script: String,
    /// Environment for the command (names checked).
    pub env: IndexMap<String, String>,
    /// Working directory on the host.
    pub cwd: Option<String>,
    /// `sudo -n -u USER`.
    pub become_user: Option<String>,
    /// Send the script on stdin (`sh -s`), out of the process list; its stdin is then
    /// `/dev/null`. Otherwise the script is an argument and stdin carries data.
    pub script_on_stdin: bool,
    /// Shell run on the host after the command was stopped (removes its temporary files).
    pub cleanup: Option<String>,
}

/// Whether `name` can be an environment variable name in a POSIX shell.
pub fn valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

impl Spec {
    /// The script with its environment and working directory. It starts by arranging that
    /// the shell writes `<mark>-EXIT <status>` on stderr when it exits (see [`run_to`]).
    fn body(&self, mark: &str) -> String {
        let mut body = format!("trap 'printf \"%s %s\\n\" {mark}-EXIT \"$?\" >&2' EXIT\n");
        for (k, v) in &self.env {
            body.push_str(&format!("export {k}={}\n", quote_posix(v)));
        }
        if let Some(dir) = &self.cwd {
            body.push_str(&format!("cd -- {} || exit 1\n", quote_posix(dir)));
        }
        body.push_str(&self.script);
        body
    }

    /// The command line sshd hands to the login shell: it writes `mark` and its process group
    /// on stderr, then becomes (`exec`) `/bin/sh`, through sudo when asked.
    pub fn command_line(&self, mark: &str) -> String {
        let shell = if self.script_on_stdin {
            "/bin/sh -s".to_string()
        } else {
            format!("/bin/sh -c {}", quote_posix(&self.body(mark)))
        };
        let run = match &self.become_user {
            Some(user) => format!("exec sudo -n -H -u {} -- {shell}", quote_posix(user)),
            None => format!("exec {shell}"),
        };
        format!("printf '%s %s\\n' {mark} \"$$\" >&2; {run}")
    }

    /// What `sh -s` reads: the whole body as one group, which the shell parses entirely before
    /// running it (so the command cannot read the rest of its own text), with stdin closed.
    fn stdin_script(&self, mark: &str) -> Option<Vec<u8>> {
        self.script_on_stdin
            .then(|| format!("{{\n{}\n}} </dev/null\n", self.body(mark)).into_bytes())
    }
}

/// How a command ended.
#[derive(Debug, Default)]
pub struct Finished {
    /// Exit code (`None`: killed by a signal, stopped, or the connection went away).
    pub exit_code: Option<i32>,
    /// The command was killed by a signal on the host.
    pub signaled: bool,
    /// Captured stdout (up to the limit; what came before a stop too).
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
    /// The per-host timeout passed; `killed` says whether its process group was signalled.
    TimedOut {
        /// The timeout.
        after: Duration,
        /// Whether the remote process group was found and signalled.
        killed: bool,
    },
    /// The step was cancelled; `killed` as above.
    Cancelled {
        /// Whether the remote process group was found and signalled.
        killed: bool,
    },
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
    /// A tar stream, unpacked into this local folder, at most this many bytes of files.
    Unpack(std::path::PathBuf, u64),
}

/// What to feed a command's stdin after its script.
pub enum Stdin {
    /// A local file, streamed (an archive to unpack).
    File(std::path::PathBuf),
}

/// Output captured so far; shared so that a stopped command keeps what it printed.
#[derive(Default)]
struct Capture {
    text: Mutex<String>,
    truncated: AtomicBool,
}

impl Capture {
    fn push(&self, text: &str, max: usize) {
        if let Ok(mut t) = self.text.lock() {
            if t.len() + text.len() <= max {
                t.push_str(text);
            } else {
                self.truncated.store(true, Ordering::Relaxed);
            }
        }
    }
    fn take(&self) -> String {
        self.text
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default()
    }
}

/// Runs `spec` on `session`, streaming its output into the log and up to `max_output` bytes of
/// each stream into the result.
pub async fn run(
    session: &Arc<Session>,
    spec: &Spec,
    data: Option<Stdin>,
    lines: &dyn Lines,
    max_output: usize,
    timeout: Option<Duration>,
    cancel: &tokio_util::sync::CancellationToken,
) -> Finished {
    run_to(
        session,
        spec,
        data,
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
    data: Option<Stdin>,
    lines: &dyn Lines,
    output: Output,
    timeout: Option<Duration>,
    cancel: &tokio_util::sync::CancellationToken,
) -> Finished {
    let deadline = timeout.map(|t| Instant::now() + t);
    let mark = format!("OPSBOOK-PGID-{}", nonce());
    let script_in = spec.stdin_script(&mark);
    let mut cmd = session.clone().arc_raw_command(spec.command_line(&mark));
    cmd.stdin(if script_in.is_some() || data.is_some() {
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
    let pgid = Mutex::new(None::<u32>);
    let stdout_cap = Capture::default();
    let stderr_cap = Capture::default();
    // The shell's exit mark on stderr (see `Spec::body`): the command has ended.
    let exit_mark = format!("{mark}-EXIT");
    let exited = tokio::sync::Notify::new();
    let unpacked = Mutex::new(None);
    let err_max = match &output {
        Output::Lines(max) => *max,
        Output::Unpack(..) => 64 * 1024,
    };
    let reads = async {
        let writer = async {
            if let Some(mut w) = feed {
                if let Some(s) = script_in {
                    let _ = w.write_all(&s).await;
                }
                if let Some(Stdin::File(path)) = data {
                    if let Ok(mut f) = tokio::fs::File::open(path).await {
                        let _ = tokio::io::copy(&mut f, &mut w).await;
                    }
                }
                let _ = w.shutdown().await;
            }
        };
        let stdout = async {
            match output {
                Output::Lines(max) => {
                    collect(out, LogStream::Stdout, lines, &stdout_cap, max, None, None).await
                }
                Output::Unpack(dest, limit) => {
                    let r = unpack(out, dest, limit).await;
                    if let Ok(mut u) = unpacked.lock() {
                        *u = Some(r);
                    }
                }
            }
        };
        let marker = Some((mark.as_str(), &pgid));
        tokio::join!(
            stdout,
            collect(
                err,
                LogStream::Stderr,
                lines,
                &stderr_cap,
                err_max,
                marker,
                Some((exit_mark.as_str(), &exited))
            ),
            writer
        );
    };
    tokio::pin!(reads);
    let waiting = child.wait();
    tokio::pin!(waiting);

    // The exit status is taken only once the output has ended: taking it closes this
    // session's connection to the ControlMaster, and OpenSSH's master then drops the channel
    // output it has not yet written to our pipes (the exit message can overtake it).
    let mut reads_done = false;
    let mut ended = false;
    let status = loop {
        tokio::select! {
            _ = &mut reads, if !reads_done => reads_done = true,
            _ = exited.notified(), if !ended && !reads_done => ended = true,
            status = &mut waiting, if reads_done => break Ok(status),
            _ = until(deadline) => break Err(Stop::TimedOut { after: timeout.unwrap_or_default(), killed: false }),
            _ = cancel.cancelled() => break Err(Stop::Cancelled { killed: false }),
        }
        if ended && !reads_done {
            // The command ended; its output may still be on the way, or held open by a
            // process it left behind (a daemon): wait a little, then take the exit status.
            if tokio::time::timeout(DRAIN_AFTER_EXIT, &mut reads)
                .await
                .is_ok()
            {
                reads_done = true;
            }
            tokio::select! {
                status = &mut waiting => break Ok(status),
                _ = until(deadline) => break Err(Stop::TimedOut { after: timeout.unwrap_or_default(), killed: false }),
                _ = cancel.cancelled() => break Err(Stop::Cancelled { killed: false }),
            }
        }
    };
    let mut finished = Finished::default();
    match status {
        Ok(Ok(s)) => finished.exit_code = s.code(),
        Ok(Err(openssh::Error::Remote(e))) if e.kind() == std::io::ErrorKind::NotFound => {
            finished.exit_code = Some(127)
        }
        Ok(Err(openssh::Error::RemoteProcessTerminated)) => finished.signaled = true,
        Ok(Err(e)) => finished.stopped = Some(Stop::Lost(e.to_string())),
        Err(stop) => {
            // The marker may not have arrived yet (a stop right after the start): wait a little.
            let mut id = read_pgid(&pgid);
            let waited = Instant::now();
            while id.is_none() && waited.elapsed() < Duration::from_secs(2) {
                tokio::select! {
                    _ = &mut reads, if !reads_done => reads_done = true,
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                }
                id = read_pgid(&pgid);
            }
            let killed = stop_remote(session, id, spec).await;
            finished.stopped = Some(match stop {
                Stop::TimedOut { after, .. } => Stop::TimedOut { after, killed },
                Stop::Cancelled { .. } => Stop::Cancelled { killed },
                other => other,
            });
        }
    }
    finished.truncated = stdout_cap.truncated.load(Ordering::Relaxed)
        || stderr_cap.truncated.load(Ordering::Relaxed);
    finished.stdout = stdout_cap.take();
    finished.stderr = stderr_cap.take();
    finished.unpacked = unpacked.lock().ok().and_then(|mut u| u.take());
    finished
}

async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn read_pgid(slot: &Mutex<Option<u32>>) -> Option<u32> {
    match slot.lock() {
        Ok(g) => *g,
        Err(p) => *p.into_inner(),
    }
}

/// Stops the remote process group: TERM, then KILL a second later, then the spec's cleanup.
/// Through sudo when the command ran through sudo: as root, else as the become user. Bounded:
/// a host that does not answer is left alone after 5 s. Returns whether the group was known and
/// the kill command ran.
async fn stop_remote(session: &Arc<Session>, pgid: Option<u32>, spec: &Spec) -> bool {
    let Some(pgid) = pgid.filter(|p| *p > 1) else {
        return false;
    };
    // `kill -SIG -PGID` without `--`: dash's built-in kill does not take `--`.
    let kill = match &spec.become_user {
        Some(user) => format!(
            "k() {{ sudo -n kill \"$@\" 2>/dev/null || sudo -n -u {} kill \"$@\" 2>/dev/null; }}",
            quote_posix(user)
        ),
        None => "k() { kill \"$@\" 2>/dev/null; }".to_string(),
    };
    let cleanup = spec.cleanup.clone().unwrap_or_default();
    let line = format!("{kill}; k -TERM -{pgid}; sleep 1; k -KILL -{pgid}; {cleanup}\ntrue");
    tokio::time::timeout(
        Duration::from_secs(5),
        session.raw_command(line).stdin(Stdio::null()).output(),
    )
    .await
    .is_ok_and(|r| r.is_ok())
}

/// Reads a stream line by line into the log (and up to `max` bytes into `cap`). With `marker`,
/// the first lines are searched for the wrapper's mark and process group, which are not logged.
async fn collect<R: AsyncRead + Unpin>(
    reader: R,
    stream: LogStream,
    lines: &dyn Lines,
    cap: &Capture,
    max: usize,
    marker: Option<(&str, &Mutex<Option<u32>>)>,
    exit_mark: Option<(&str, &tokio::sync::Notify)>,
) {
    let mut reader = BufReader::with_capacity(16 * 1024, reader);
    let mut buf = Vec::new();
    let mut searched = 0;
    let mut found = marker.is_none();
    loop {
        buf.clear();
        // Bounded read of one line: a stream without newlines cannot grow memory without limit.
        let n = match read_line_bounded(&mut reader, &mut buf, MAX_LINE).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let text = String::from_utf8_lossy(&buf[..n]);
        let line = text.trim_end_matches(['\n', '\r']);
        if let Some((mark, exited)) = exit_mark {
            if line.starts_with(mark) {
                exited.notify_one();
                continue;
            }
        }
        if !found && searched < MARK_SEARCH_LINES {
            searched += 1;
            if let Some((mark, slot)) = marker {
                if let Some(id) = line.strip_prefix(mark) {
                    found = true;
                    if let (Ok(id), Ok(mut g)) = (id.trim().parse::<u32>(), slot.lock()) {
                        *g = Some(id);
                    }
                    continue;
                }
            }
        }
        lines.line(stream, line);
        cap.push(&text, max);
    }
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

/// Unpacks a tar stream from a host into `dest`, trusting nothing in it: only regular files
/// and folders are written (links, devices and fifos are skipped), `..` and absolute paths are
/// refused, modes lose setuid/setgid/sticky and group/other write bits, and more than `limit`
/// bytes of files stops it. Returns files and bytes written.
async fn unpack(
    reader: openssh::ChildStdout,
    dest: std::path::PathBuf,
    limit: u64,
) -> Result<(usize, u64), String> {
    let bridge = tokio_util::io::SyncIoBridge::new(reader);
    let work = tokio::task::spawn_blocking(move || -> Result<(usize, u64), String> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(&dest)
            .map_err(|e| format!("cannot create {}: {e}", dest.display()))?;
        let mut archive = tar::Archive::new(bridge);
        archive.set_preserve_permissions(false);
        archive.set_unpack_xattrs(false);
        archive.set_preserve_mtime(true);
        let mut files = 0;
        let mut bytes = 0u64;
        for entry in archive
            .entries()
            .map_err(|e| format!("reading the archive: {e}"))?
        {
            let mut entry = entry.map_err(|e| format!("reading the archive: {e}"))?;
            let kind = entry.header().entry_type();
            if !(kind.is_file() || kind.is_dir()) {
                continue;
            }
            let size = entry.header().size().unwrap_or(0);
            if kind.is_file() {
                bytes += size;
                if bytes > limit {
                    return Err(format!(
                        "the host sent more than max_bytes ({limit} bytes); stopped"
                    ));
                }
            }
            let mode = entry.header().mode().unwrap_or(0o644) & 0o755;
            let path = entry.path().map(|p| p.into_owned()).ok();
            let unpacked = entry
                .unpack_in(&dest)
                .map_err(|e| format!("unpacking into {}: {e}", dest.display()))?;
            if unpacked {
                if let Some(p) = path {
                    let full = dest.join(p);
                    let _ = std::fs::set_permissions(
                        &full,
                        std::fs::Permissions::from_mode(if kind.is_dir() {
                            mode | 0o700
                        } else {
                            mode
                        }),
                    );
                }
                if kind.is_file() {
                    files += 1;
                }
            }
        }
        Ok((files, bytes))
    });
    match work.await {
        Ok(r) => r,
        Err(e) => Err(format!("unpacking stopped: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_travel_on_stdin_not_in_the_command_line() {
        let spec = Spec {
            script: "deploy".into(),
            env: [("TOKEN".to_string(), "s3cr3t'x".to_string())].into(),
            cwd: Some("/srv/my app".into()),
            become_user: Some("deploy user".into()),
            script_on_stdin: true,
            cleanup: None,
        };
        let line = spec.command_line("MARK");
        assert!(!line.contains("s3cr3t"), "{line}");
        assert!(
            line.contains("exec sudo -n -H -u 'deploy user' -- /bin/sh -s"),
            "{line}"
        );
        let stdin = String::from_utf8(spec.stdin_script("M").unwrap()).unwrap();
        assert!(stdin.contains("export TOKEN='s3cr3t'\"'\"'x'"), "{stdin}");
        assert!(stdin.contains("cd -- '/srv/my app' || exit 1"), "{stdin}");
        assert!(
            stdin.starts_with("{\n") && stdin.ends_with("\n} </dev/null\n"),
            "{stdin}"
        );
    }

    #[test]
    fn data_commands_travel_as_one_quoted_argument() {
        let spec = Spec {
            script: "tar -x -f - -C '/x'".into(),
            ..Default::default()
        };
        let line = spec.command_line("MARK");
        let body = "trap 'printf \"%s %s\\n\" MARK-EXIT \"$?\" >&2' EXIT\ntar -x -f - -C '/x'";
        assert_eq!(
            line,
            format!(
                "printf '%s %s\\n' MARK \"$$\" >&2; exec /bin/sh -c {}",
                quote_posix(body)
            )
        );
        assert!(spec.stdin_script("M").is_none());
    }

    #[test]
    fn env_names_are_checked() {
        assert!(valid_env_name("PATH") && valid_env_name("_x1"));
        assert!(!valid_env_name("1X") && !valid_env_name("A-B") && !valid_env_name(""));
        assert!(!valid_env_name("A;rm"));
    }
}
