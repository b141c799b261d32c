//! A real moto server (a mock of the AWS APIs) on 127.0.0.1, for tests of AWS clients.
//!
//! [`Moto::start`] runs `python3 -m moto.server -H 127.0.0.1 -p PORT` on a free port, in its
//! own process group, with a temporary directory as its working directory (log `moto.log`,
//! and the empty AWS config and credentials files of [`Moto::env`]). It returns once the
//! server process holds the listening socket and answers `GET /moto-api/data.json` with 200
//! (about 0.5 s here; at most 30 s). Dropping it stops the whole process group (SIGTERM,
//! SIGKILL after 3 s) and removes the directory.
//!
//! `python3` is resolved to the interpreter behind it (`sys.executable`, so a pyenv shim is
//! followed once), and that interpreter runs the server. The server gets a clean
//! environment for moto: inherited `AWS_*`, `MOTO_*`, `WERKZEUG_*`, `TEST_SERVER_MODE` and
//! `TEST_PROXY_MODE` variables are removed and `MOTO_PORT` is set to the port, so moto's
//! defaults apply (account `123456789012`, no AMI validation, ...).
//!
//! Clients get their settings from [`Moto::env`] or [`Moto::apply_env`]. All state lives in
//! the server's memory; [`Moto::reset`] clears it between test cases.
//!
//! Needs moto with its server extras for the `python3` on `PATH`:
//! `pip install 'moto[server]'`.
//!
//! ```no_run
//! use std::process::Command;
//! use opsbook_testkit::moto::Moto;
//!
//! let moto = Moto::start()?;
//! let mut aws = Command::new("aws");
//! moto.apply_env(aws.args(["s3", "mb", "s3://demo"]));
//! // ... run it, check the result ...
//! moto.reset()?;
//! # Ok::<(), String>(())
//! ```

use std::fs;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// The interpreter looked up on `PATH`; the server runs under the executable behind it.
pub const PYTHON: &str = "python3";

/// What to install when moto or its server extras are missing.
const INSTALL_ADVICE: &str = "pip install 'moto[server]'";
/// How long a start waits for the server to answer.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `Drop` waits after SIGTERM before sending SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(3);
/// How many ports a start tries when another process takes the chosen one.
const PORT_ATTEMPTS: usize = 5;
/// Connect timeout of the HTTP helper.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Read and write timeout of the HTTP helper.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between two readiness polls.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// The endpoint polled for readiness: moto's own, cheap while the state is empty.
const READY_PATH: &str = "/moto-api/data.json";
/// Names of the empty AWS files in the temporary directory.
const CONFIG_FILE: &str = "aws-config";
const CREDENTIALS_FILE: &str = "aws-credentials";
const LOG_FILE: &str = "moto.log";

/// Prints `sys.executable`, then `moto` if moto can be imported (an empty line otherwise),
/// without importing it.
const PROBE: &str = "import sys, importlib.util\n\
                     print(sys.executable)\n\
                     print('moto' if importlib.util.find_spec('moto') else '')\n";

/// A running moto server on 127.0.0.1, state in memory; stopped on drop.
#[derive(Debug)]
pub struct Moto {
    process: Process,
    port: u16,
    // Declared last: removed after `process` (dropped first) has stopped the server.
    dir: tempfile::TempDir,
}

impl Moto {
    /// Starts `python3 -m moto.server -H 127.0.0.1 -p PORT` on a free port (another port is
    /// tried if it cannot bind the chosen one) and waits, up to 30 s, until it answers HTTP.
    /// Fails with the tail of the server's log otherwise, or with
    /// `pip install 'moto[server]'` advice when moto (or its server extras) is missing.
    pub fn start() -> Result<Moto, String> {
        let python = python_with_moto()?;
        let dir = tempfile::Builder::new()
            .prefix("opsbook-moto-")
            .tempdir()
            .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
        for name in [CONFIG_FILE, CREDENTIALS_FILE] {
            let path = dir.path().join(name);
            fs::write(&path, "").map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
        let log = dir.path().join(LOG_FILE);
        let mut port = 0;
        for _ in 0..PORT_ATTEMPTS {
            port = free_port()?;
            let mut process = Process::spawn(&python, port, dir.path(), &log)?;
            match process.wait_ready(port, &log) {
                Ok(()) => return Ok(Moto { process, port, dir }),
                // Dropping `process` stops whatever is left of the server.
                Err(StartError::PortTaken) => continue,
                Err(StartError::Fatal(message)) => return Err(message),
            }
        }
        Err(format!(
            "moto could not bind a free port on 127.0.0.1 in {PORT_ATTEMPTS} attempts \
             (last: {port}); tail of {}:\n{}",
            log.display(),
            log_tail(&log)
        ))
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash: the endpoint for every service.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The PID of the server process, which leads its own process group.
    pub fn pid(&self) -> u32 {
        self.process.child.id()
    }

    /// The temporary directory: the server's working directory, holding its log `moto.log`
    /// and the empty files `aws-config` and `aws-credentials`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Environment for AWS clients (AWS CLI, boto3, aws-sdk-rust): `AWS_ENDPOINT_URL` (this
    /// server), `AWS_ACCESS_KEY_ID=test`, `AWS_SECRET_ACCESS_KEY=test`,
    /// `AWS_REGION=us-east-1`, `AWS_DEFAULT_REGION=us-east-1`,
    /// `AWS_EC2_METADATA_DISABLED=true`, and `AWS_CONFIG_FILE` and
    /// `AWS_SHARED_CREDENTIALS_FILE` pointing at empty files in [`Moto::dir`], so that
    /// `~/.aws` is never read.
    ///
    /// Inherited variables still apply on top of these: `AWS_PROFILE` makes clients fail
    /// (the profile is not in the empty files), `AWS_ENDPOINT_URL_<SERVICE>` or
    /// `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS` send requests elsewhere. [`Moto::apply_env`]
    /// removes them. Both region variables are set because boto3 (botocore 1.43) ignores
    /// `AWS_REGION` and reads `AWS_DEFAULT_REGION`. S3 clients need path-style addressing
    /// (`force_path_style(true)` in aws-sdk-rust, `addressing_style: path` in boto3).
    pub fn env(&self) -> Vec<(String, String)> {
        let file = |name: &str| self.dir.path().join(name).to_string_lossy().into_owned();
        [
            ("AWS_ENDPOINT_URL", self.url()),
            ("AWS_ACCESS_KEY_ID", "test".to_string()),
            ("AWS_SECRET_ACCESS_KEY", "test".to_string()),
            ("AWS_REGION", "us-east-1".to_string()),
            ("AWS_DEFAULT_REGION", "us-east-1".to_string()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
            ("AWS_CONFIG_FILE", file(CONFIG_FILE)),
            ("AWS_SHARED_CREDENTIALS_FILE", file(CREDENTIALS_FILE)),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_string(), value))
        .collect()
    }

    /// Removes every `AWS_*` variable `command` would inherit from this process and sets
    /// [`Moto::env`] instead; returns `command` for chaining.
    pub fn apply_env<'a>(&self, command: &'a mut Command) -> &'a mut Command {
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("AWS_") {
                command.env_remove(name);
            }
        }
        command.envs(self.env())
    }

    /// Resets all moto state, in every account and region (`POST /moto-api/reset`).
    pub fn reset(&self) -> Result<(), String> {
        match http(self.port, "POST", "/moto-api/reset") {
            Ok((200, _)) => Ok(()),
            Ok((status, body)) => Err(format!(
                "POST {}/moto-api/reset: HTTP {status}: {}",
                self.url(),
                body.trim()
            )),
            Err(e) if self.process.state() != State::Running => Err(format!(
                "{e}; moto (PID {}) has exited; tail of {}:\n{}",
                self.pid(),
                self.log().display(),
                log_tail(&self.log())
            )),
            Err(e) => Err(e),
        }
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join(LOG_FILE)
    }
}

/// The executable behind [`PYTHON`], after checking that it has moto.
fn python_with_moto() -> Result<PathBuf, String> {
    let out = run(Command::new(PYTHON).args(["-c", PROBE])).map_err(|e| {
        format!("cannot run {PYTHON} ({e}): the moto server needs it; then {INSTALL_ADVICE}")
    })?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut lines = stdout.lines().map(str::trim);
    let executable = lines.next().unwrap_or("");
    let moto = lines.next().unwrap_or("");
    if !out.status.success() || executable.is_empty() {
        return Err(format!(
            "{PYTHON} could not tell its executable ({}): {}",
            out.status,
            output_tail(&out)
        ));
    }
    if moto.is_empty() {
        return Err(format!(
            "moto is not installed for {PYTHON} ({executable}): {INSTALL_ADVICE} \
             (or {executable} -m {INSTALL_ADVICE})"
        ));
    }
    Ok(PathBuf::from(executable))
}

/// Why one start attempt failed.
enum StartError {
    /// The server could not bind the port: try again with another one.
    PortTaken,
    Fatal(String),
}

/// Whether a child has exited, without reaping it.
#[derive(Debug, PartialEq, Eq)]
enum State {
    Running,
    /// Exited, not reaped yet: its PID (and process group ID) cannot be reused.
    Exited,
    /// Already reaped, or unknown.
    Reaped,
}

/// The server process, leader of its own process group; the group is stopped on drop.
#[derive(Debug)]
struct Process {
    child: Child,
}

impl Process {
    /// Starts `python -m moto.server` on `port` in its own process group, in `dir`, with
    /// stdout and stderr to `log`.
    fn spawn(python: &Path, port: u16, dir: &Path, log: &Path) -> Result<Process, String> {
        let out =
            fs::File::create(log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let err = out
            .try_clone()
            .map_err(|e| format!("cannot open {}: {e}", log.display()))?;
        let mut command = Command::new(python);
        command
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p"])
            .arg(port.to_string())
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        for (name, _) in std::env::vars_os() {
            if is_server_setting(&name.to_string_lossy()) {
                command.env_remove(name);
            }
        }
        // moto builds some URLs (e.g. SQS queue URLs) from MOTO_PORT.
        command
            .env("MOTO_PORT", port.to_string())
            .env("PYTHONUNBUFFERED", "1");
        let child = command
            .spawn()
            .map_err(|e| format!("cannot start {} -m moto.server: {e}", python.display()))?;
        Ok(Process { child })
    }

    /// Polls until this process listens on `127.0.0.1:port` and answers `GET`
    /// [`READY_PATH`] with 200, up to [`READY_TIMEOUT`].
    fn wait_ready(&mut self, port: u16, log: &Path) -> Result<(), StartError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last = "not listening yet".to_string();
        loop {
            if self.state() != State::Running {
                return Err(self.exit_error(port, log));
            }
            // The socket check first: another process may hold the port and answer.
            match listens(self.child.id(), port) {
                Ok(true) => match http(port, "GET", READY_PATH) {
                    Ok((200, _)) => return Ok(()),
                    Ok((status, body)) => last = format!("HTTP {status}: {}", body.trim()),
                    Err(e) => last = e,
                },
                Ok(false) => {}
                Err(e) => return Err(StartError::Fatal(e)),
            }
            if Instant::now() >= deadline {
                return Err(StartError::Fatal(format!(
                    "moto on 127.0.0.1:{port} was not ready within {} s (last answer of \
                     {READY_PATH}: {last}); tail of {}:\n{}",
                    READY_TIMEOUT.as_secs(),
                    log.display(),
                    log_tail(log)
                )));
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// Reaps the exited server and tells why it stopped.
    fn exit_error(&mut self, port: u16, log: &Path) -> StartError {
        self.kill_group(libc::SIGKILL);
        let status = match self.child.wait() {
            Ok(status) => status.to_string(),
            Err(e) => format!("unknown status ({e})"),
        };
        let tail = log_tail(log);
        if tail.to_lowercase().contains("address already in use") {
            return StartError::PortTaken;
        }
        let advice = if tail.contains("No module named") {
            format!("\nmoto or one of its server dependencies is missing: {INSTALL_ADVICE}")
        } else {
            String::new()
        };
        StartError::Fatal(format!(
            "moto on 127.0.0.1:{port} exited ({status}) before it was ready; tail of {}:\n\
             {tail}{advice}",
            log.display()
        ))
    }

    /// Whether the process has exited, without reaping it (`waitid` with `WNOWAIT`).
    fn state(&self) -> State {
        let pid: libc::id_t = self.child.id();
        // SAFETY: siginfo_t is plain data, valid when zeroed.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a valid, writable siginfo_t for the duration of the call.
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                pid,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        if rc != 0 {
            // ECHILD: reaped already.
            return State::Reaped;
        }
        // SAFETY: waitid filled `info` (si_pid stays 0 when no child has changed state).
        if unsafe { info.si_pid() } == 0 {
            State::Running
        } else {
            State::Exited
        }
    }

    /// Sends `signal` to the process group. Only call it while the leader is not reaped:
    /// until then its PID, the group's ID, cannot be reused.
    fn kill_group(&self, signal: libc::c_int) {
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe {
                libc::kill(-pid, signal);
            }
        }
    }
}

impl Drop for Process {
    /// SIGTERM to the process group, then SIGKILL to whatever of it is left once the server
    /// has exited or after [`STOP_GRACE`]; then reaps the server.
    fn drop(&mut self) {
        match self.state() {
            State::Reaped => return,
            State::Exited => {}
            State::Running => {
                self.kill_group(libc::SIGTERM);
                let deadline = Instant::now() + STOP_GRACE;
                while self.state() == State::Running && Instant::now() < deadline {
                    thread::sleep(Duration::from_millis(10));
                }
            }
        }
        self.kill_group(libc::SIGKILL);
        let _ = self.child.wait();
    }
}

/// Variables that would change how moto or Werkzeug run, removed from the server's
/// environment.
fn is_server_setting(name: &str) -> bool {
    ["AWS_", "MOTO_", "WERKZEUG_"]
        .iter()
        .any(|prefix| name.starts_with(prefix))
        || name == "TEST_SERVER_MODE"
        || name == "TEST_PROXY_MODE"
}

/// Whether process `pid` holds a socket listening on 127.0.0.1:`port`: the inode of a
/// LISTEN entry of `/proc/net/tcp` is among the process's open sockets.
fn listens(pid: u32, port: u16) -> Result<bool, String> {
    let table = fs::read_to_string("/proc/net/tcp")
        .map_err(|e| format!("cannot read /proc/net/tcp: {e}"))?;
    let inodes: Vec<String> = table
        .lines()
        .filter_map(|line| listening_inode(line, port))
        .collect();
    if inodes.is_empty() {
        return Ok(false);
    }
    let fd_dir = format!("/proc/{pid}/fd");
    let entries = match fs::read_dir(&fd_dir) {
        Ok(entries) => entries,
        // The process has just exited; the caller finds out.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(format!("cannot list {fd_dir}: {e}")),
    };
    Ok(entries.filter_map(Result::ok).any(|entry| {
        fs::read_link(entry.path()).is_ok_and(|target| {
            let target = target.to_string_lossy();
            inodes
                .iter()
                .any(|inode| target == format!("socket:[{inode}]"))
        })
    }))
}

/// The socket inode of a `/proc/net/tcp` line if it is a LISTEN socket on 127.0.0.1:`port`.
///
/// `  0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 12345 ...`
fn listening_inode(line: &str, port: u16) -> Option<String> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let local = format!("0100007F:{port:04X}");
    // 0A is TCP_LISTEN.
    if fields.len() > 9 && fields[1] == local && fields[3] == "0A" {
        Some(fields[9].to_string())
    } else {
        None
    }
}

/// A blocking HTTP/1.0 request without a body to `http://127.0.0.1:PORT{path}`: the status
/// code and the body.
fn http(port: u16, method: &str, path: &str) -> Result<(u16, String), String> {
    let what = format!("{method} http://127.0.0.1:{port}{path}");
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
        .map_err(|e| format!("{what}: cannot connect: {e}"))?;
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(IO_TIMEOUT)))
        .map_err(|e| format!("{what}: {e}"))?;
    let request = format!(
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nAccept: */*\r\n\
         Content-Length: 0\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("{what}: cannot send the request: {e}"))?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .map_err(|e| format!("{what}: cannot read the answer: {e}"))?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{what}: incomplete answer: {text:?}"))?;
    // "HTTP/1.1 200 OK"
    let status = head
        .lines()
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| format!("{what}: no HTTP status line in {head:?}"))?;
    Ok((status, body.to_string()))
}

/// A port that was free on 127.0.0.1 a moment ago (bound to port 0, then released).
fn free_port() -> Result<u16, String> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("cannot bind 127.0.0.1:0: {e}"))
}

/// Runs `command` with stdin from /dev/null and returns its output.
fn run(command: &mut Command) -> io::Result<Output> {
    command.stdin(Stdio::null()).output()
}

/// The last 20 lines of a command's stderr and stdout, for error messages.
fn output_tail(out: &Output) -> String {
    last_lines(&format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    ))
}

/// The last 20 lines of a log file, or why it could not be read.
fn log_tail(path: &Path) -> String {
    match fs::read_to_string(path) {
        Ok(text) => last_lines(&text),
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

fn last_lines(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    match lines.len() {
        0 => "(empty)".to_string(),
        n => lines[n.saturating_sub(20)..].join("\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_inode_matches_listen_sockets_on_the_port_only() {
        let listen = "   3: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 \
                      00000000     0        0 4242 1 0000000000000000 100 0 0 10 0";
        let established = "   4: 0100007F:1F90 0100007F:D2F0 01 00000000:00000000 \
                           00:00000000 00000000     0        0 4343 1 0000000000000000";
        assert_eq!(listening_inode(listen, 8080), Some("4242".to_string()));
        assert_eq!(listening_inode(listen, 8081), None);
        assert_eq!(listening_inode(established, 8080), None);
        assert_eq!(
            listening_inode("  sl  local_address rem_address   st", 8080),
            None
        );
    }

    #[test]
    fn server_settings_are_recognised() {
        for name in [
            "AWS_PROFILE",
            "MOTO_PORT",
            "WERKZEUG_RUN_MAIN",
            "TEST_SERVER_MODE",
        ] {
            assert!(is_server_setting(name), "{name}");
        }
        for name in ["PATH", "HOME", "PYENV_VERSION", "XAWS_X"] {
            assert!(!is_server_setting(name), "{name}");
        }
    }

    #[test]
    fn last_lines_keeps_twenty() {
        let text: String = (1..=25).map(|i| format!("line {i}\n")).collect();
        let tail = last_lines(&text);
        assert!(tail.starts_with("line 6\n"), "{tail}");
        assert!(tail.ends_with("line 25"), "{tail}");
        assert_eq!(last_lines(""), "(empty)");
    }
}
