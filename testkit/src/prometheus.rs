//! Real Prometheus and Pushgateway servers on 127.0.0.1, for tests that push metrics and
//! query them back.
//!
//! [`Pushgateway::start`] and [`Prometheus::start`] run Debian's binaries ([`PUSHGATEWAY`],
//! [`PROMETHEUS`]) on a free port of 127.0.0.1, each with its own temporary directory (config,
//! storage, log), and return once the server answers `GET /-/ready` with 200. Prometheus
//! scrapes the given targets every second with `honor_labels: true`, so metrics pushed to a
//! Pushgateway keep their own `job` and `instance` labels. Dropping either stops the process
//! by PID (SIGTERM, SIGKILL after 3 s) and removes its directory.
//!
//! Prometheus only picks up its scrape targets about 5 s after it starts (its scrape manager
//! applies target updates at most every 5 s, not configurable in 2.42), so a first
//! [`Prometheus::wait_for`] needs a timeout well above that: 15-30 s.
//!
//! Needs the Debian packages `prometheus` and `prometheus-pushgateway`
//! (`apt-get install -y --no-install-recommends prometheus prometheus-pushgateway`); they do
//! not need root.
//!
//! ```no_run
//! use std::time::Duration;
//! use opsbook_testkit::prometheus::{Prometheus, Pushgateway};
//!
//! let gateway = Pushgateway::start()?;
//! // ... push `# TYPE demo gauge\ndemo 42\n` with PUT {gateway.url()}/metrics/job/demo ...
//! let prometheus = Prometheus::start(&[gateway.url()])?;
//! prometheus.wait_for("demo", Duration::from_secs(30))?;
//! let json = prometheus.query("demo")?;
//! assert!(json.contains("\"42\""));
//! # Ok::<(), String>(())
//! ```

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Where Debian's `prometheus` package puts the server.
pub const PROMETHEUS: &str = "/usr/bin/prometheus";
/// Where Debian's `prometheus-pushgateway` package puts the Pushgateway.
pub const PUSHGATEWAY: &str = "/usr/bin/prometheus-pushgateway";

/// How long a start waits for `/-/ready` to answer 200.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long `Drop` waits after SIGTERM before sending SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(3);
/// How many ports a start tries when another process takes the chosen one.
const PORT_ATTEMPTS: usize = 5;
/// Connect timeout of the HTTP helper.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Read and write timeout of the HTTP helper.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between two polls of `/-/ready` or of a query.
const POLL_INTERVAL: Duration = Duration::from_millis(25);
const QUERY_POLL_INTERVAL: Duration = Duration::from_millis(200);

/// A running Pushgateway on 127.0.0.1, metrics kept in memory; stopped on drop.
#[derive(Debug)]
pub struct Pushgateway {
    server: Server,
    // Declared last: removed after `server` (dropped first) has stopped the process.
    dir: tempfile::TempDir,
}

impl Pushgateway {
    /// Starts [`PUSHGATEWAY`] on a free port of 127.0.0.1 (another port is tried if it cannot
    /// bind the chosen one) and returns once `/-/ready` answers 200 (at most 20 s).
    pub fn start() -> Result<Pushgateway, String> {
        check_binary(PUSHGATEWAY, "prometheus-pushgateway")?;
        let dir = temp_dir("opsbook-pushgateway-")?;
        let log = dir.path().join("pushgateway.log");
        let server = Server::start("pushgateway", PUSHGATEWAY, &log, |port| {
            Ok(vec![
                format!("--web.listen-address=127.0.0.1:{port}"),
                "--log.level=info".to_string(),
            ])
        })?;
        Ok(Pushgateway { server, dir })
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash: push to
    /// `{url}/metrics/job/JOB` (PUT replaces the job's group, POST adds to it).
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// The PID of the Pushgateway process.
    pub fn pid(&self) -> u32 {
        self.server.pid()
    }

    /// The temporary directory holding the log `pushgateway.log`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// A running Prometheus on 127.0.0.1 with its storage in a temporary directory; stopped on
/// drop.
#[derive(Debug)]
pub struct Prometheus {
    server: Server,
    // Declared last: removed after `server` (dropped first) has stopped the process.
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts [`PROMETHEUS`] on a free port of 127.0.0.1, scraping `scrape_targets`
    /// (`host:port`, e.g. a Pushgateway; a leading `http://` and trailing `/` are dropped, so
    /// [`Pushgateway::url`] works too) every 1 s in one job `testkit` with
    /// `honor_labels: true`, storage in a temporary directory. Returns once `/-/ready`
    /// answers 200 (at most 20 s; usually well under a second).
    ///
    /// The first scrape happens about 5 s after the start: see the module docs.
    pub fn start(scrape_targets: &[String]) -> Result<Prometheus, String> {
        check_binary(PROMETHEUS, "prometheus")?;
        let targets = scrape_targets
            .iter()
            .map(|t| scrape_target(t))
            .collect::<Result<Vec<_>, _>>()?;
        let dir = temp_dir("opsbook-prometheus-")?;
        let config = dir.path().join("prometheus.yml");
        let target_list = targets
            .iter()
            .map(|t| format!("'{t}'"))
            .collect::<Vec<_>>()
            .join(", ");
        write_file(
            &config,
            &format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  \
                 evaluation_interval: 1s\nscrape_configs:\n  - job_name: testkit\n    \
                 honor_labels: true\n    static_configs:\n      - targets: [{target_list}]\n"
            ),
        )?;
        let storage = dir.path().join("data");
        let log = dir.path().join("prometheus.log");
        let server = Server::start("prometheus", PROMETHEUS, &log, |port| {
            // A fresh storage directory for every attempt.
            if storage.exists() {
                fs::remove_dir_all(&storage)
                    .map_err(|e| format!("cannot remove {}: {e}", storage.display()))?;
            }
            Ok(vec![
                format!("--config.file={}", config.display()),
                format!("--storage.tsdb.path={}", storage.display()),
                format!("--web.listen-address=127.0.0.1:{port}"),
                "--log.level=info".to_string(),
            ])
        })?;
        let prometheus = Prometheus { server, dir };
        prometheus.check_own_storage(&storage)?;
        Ok(prometheus)
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// The PID of the Prometheus process.
    pub fn pid(&self) -> u32 {
        self.server.pid()
    }

    /// The temporary directory holding `prometheus.yml`, the storage `data/` and the log
    /// `prometheus.log`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs the instant query `promql` (`GET /api/v1/query`) and returns the raw JSON
    /// answer, e.g. `{"status":"success","data":{"resultType":"vector","result":[...]}}`.
    /// A status other than 200 (400 for a bad query) is an error holding the body.
    pub fn query(&self, promql: &str) -> Result<String, String> {
        let (status, body) = self.server.get(&query_path(promql))?;
        if status == 200 {
            Ok(body)
        } else {
            Err(format!("query {promql:?}: HTTP {status}: {}", body.trim()))
        }
    }

    /// Polls `/api/v1/query` until `promql` returns at least one sample, up to `timeout`.
    /// A query that Prometheus rejects (HTTP 400, e.g. a syntax error) fails at once; on
    /// timeout the error holds the last answer and the state of every scrape target.
    pub fn wait_for(&self, promql: &str, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let path = query_path(promql);
        let mut last;
        loop {
            match self.server.get(&path) {
                Ok((200, body)) => match has_sample(&body) {
                    Ok(true) => return Ok(()),
                    Ok(false) => last = body,
                    Err(e) => return Err(format!("query {promql:?}: {e}")),
                },
                Ok((400, body)) => {
                    return Err(format!("query {promql:?} rejected: {}", body.trim()))
                }
                Ok((status, body)) => last = format!("HTTP {status}: {}", body.trim()),
                Err(e) => {
                    self.server.check_running()?;
                    last = e;
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "query {promql:?} returned no sample within {timeout:?}; last answer: {}; \
                     scrape targets: {}",
                    last.trim(),
                    self.targets_summary()
                ));
            }
            thread::sleep(QUERY_POLL_INTERVAL);
        }
    }

    /// The scrape URL, health and last error of every active target, for error messages.
    fn targets_summary(&self) -> String {
        let body = match self.server.get("/api/v1/targets?state=active") {
            Ok((200, body)) => body,
            Ok((status, body)) => return format!("(HTTP {status}: {})", body.trim()),
            Err(e) => return format!("({e})"),
        };
        let Ok(json) = serde_json::from_str::<serde_json::Value>(&body) else {
            return format!("(not JSON: {})", body.trim());
        };
        let targets = json["data"]["activeTargets"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        if targets.is_empty() {
            return "none active yet".to_string();
        }
        targets
            .iter()
            .map(|t| {
                let url = t["scrapeUrl"].as_str().unwrap_or("?");
                let health = t["health"].as_str().unwrap_or("?");
                match t["lastError"].as_str() {
                    Some(error) if !error.is_empty() => format!("{url} {health} ({error})"),
                    _ => format!("{url} {health}"),
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Makes sure the server that answered is this Prometheus and not another process that
    /// took the port: its `storage.tsdb.path` flag must be ours.
    fn check_own_storage(&self, storage: &Path) -> Result<(), String> {
        let (status, body) = self.server.get("/api/v1/status/flags")?;
        let json: serde_json::Value = serde_json::from_str(&body)
            .map_err(|e| format!("{}/api/v1/status/flags: HTTP {status}, {e}", self.url()))?;
        let path = json["data"]["storage.tsdb.path"].as_str().unwrap_or("");
        if path == storage.to_string_lossy() {
            Ok(())
        } else {
            Err(format!(
                "another server answers on {}: its storage.tsdb.path is {path:?}, not {}",
                self.url(),
                storage.display()
            ))
        }
    }
}

/// One server process and its port.
#[derive(Debug)]
struct Server {
    name: &'static str,
    child: Child,
    port: u16,
    log: PathBuf,
}

/// Why one start attempt failed.
enum StartError {
    /// The server could not bind the port: try again with another one.
    PortTaken,
    Fatal(String),
}

impl Server {
    /// Starts `program` with the arguments `args(port)` on a free port, stdout and stderr
    /// to `log`, and waits until `/-/ready` answers 200. Tries other ports if the chosen
    /// one is taken.
    fn start(
        name: &'static str,
        program: &str,
        log: &Path,
        args: impl Fn(u16) -> Result<Vec<String>, String>,
    ) -> Result<Server, String> {
        let mut port = 0;
        for _ in 0..PORT_ATTEMPTS {
            port = free_port()?;
            let out = fs::File::create(log)
                .map_err(|e| format!("cannot create {}: {e}", log.display()))?;
            let err = out
                .try_clone()
                .map_err(|e| format!("cannot open {}: {e}", log.display()))?;
            let child = Command::new(program)
                .args(args(port)?)
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .process_group(0)
                .spawn()
                .map_err(|e| format!("cannot start {program}: {e}"))?;
            let mut server = Server {
                name,
                child,
                port,
                log: log.to_path_buf(),
            };
            match server.wait_ready() {
                Ok(()) => return Ok(server),
                // Dropping `server` stops whatever is left of the process.
                Err(StartError::PortTaken) => continue,
                Err(StartError::Fatal(message)) => return Err(message),
            }
        }
        Err(format!(
            "{name} could not bind a free port on 127.0.0.1 in {PORT_ATTEMPTS} attempts \
             (last: {port}); tail of {}:\n{}",
            log.display(),
            log_tail(log)
        ))
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `GET path` on this server: the status code and the body.
    fn get(&self, path: &str) -> Result<(u16, String), String> {
        http_get(self.port, path)
    }

    /// Polls `/-/ready` until it answers 200, up to [`READY_TIMEOUT`].
    fn wait_ready(&mut self) -> Result<(), StartError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last;
        loop {
            self.check_started()?;
            match self.get("/-/ready") {
                Ok((200, _)) => break,
                Ok((status, body)) => last = format!("HTTP {status}: {}", body.trim()),
                Err(e) => last = e,
            }
            if Instant::now() >= deadline {
                return Err(StartError::Fatal(format!(
                    "{} on 127.0.0.1:{} was not ready within {} s (last answer of /-/ready: \
                     {last}); tail of {}:\n{}",
                    self.name,
                    self.port,
                    READY_TIMEOUT.as_secs(),
                    self.log.display(),
                    log_tail(&self.log)
                )));
            }
            thread::sleep(POLL_INTERVAL);
        }
        // The answer may have come from another process that holds the port.
        self.check_started()
    }

    /// Fails if the process has exited or reported that its port is taken (the Pushgateway
    /// logs the bind error but may keep running or exit with status 0).
    fn check_started(&mut self) -> Result<(), StartError> {
        let exited = match self.child.try_wait() {
            Ok(None) => None,
            Ok(Some(status)) => Some(status.to_string()),
            Err(e) => Some(format!("unknown status ({e})")),
        };
        let tail = log_tail(&self.log);
        if tail.contains("address already in use") {
            return Err(StartError::PortTaken);
        }
        match exited {
            None => Ok(()),
            Some(status) => Err(StartError::Fatal(format!(
                "{} on 127.0.0.1:{} exited ({status}) before it was ready; tail of {}:\n{tail}",
                self.name,
                self.port,
                self.log.display()
            ))),
        }
    }

    /// Fails if the process has exited.
    fn check_running(&self) -> Result<(), String> {
        // `try_wait` needs `&mut`; /proc tells without reaping.
        let state = fs::read_to_string(format!("/proc/{}/stat", self.pid()))
            .ok()
            .and_then(|s| s.rfind(')').and_then(|i| s[i + 1..].trim().chars().next()));
        match state {
            Some('Z') | None => Err(format!(
                "{} (PID {}) has exited; tail of {}:\n{}",
                self.name,
                self.pid(),
                self.log.display(),
                log_tail(&self.log)
            )),
            Some(_) => Ok(()),
        }
    }
}

impl Drop for Server {
    /// SIGTERM, then SIGKILL if the process is still running after [`STOP_GRACE`].
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill has no memory-safety preconditions; the child is not reaped yet,
            // so the PID is still ours.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
        // Errors here mean the process is already gone.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A blocking HTTP/1.0 `GET http://127.0.0.1:PORT{path}`: the status code and the body.
fn http_get(port: u16, path: &str) -> Result<(u16, String), String> {
    let url = format!("http://127.0.0.1:{port}{path}");
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
        .map_err(|e| format!("GET {url}: cannot connect: {e}"))?;
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(IO_TIMEOUT)))
        .map_err(|e| format!("GET {url}: {e}"))?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nAccept: */*\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("GET {url}: cannot send the request: {e}"))?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .map_err(|e| format!("GET {url}: cannot read the answer: {e}"))?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("GET {url}: incomplete answer: {text:?}"))?;
    // "HTTP/1.0 200 OK"
    let status = head
        .lines()
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| format!("GET {url}: no HTTP status line in {head:?}"))?;
    Ok((status, body.to_string()))
}

/// `/api/v1/query?query=...` with `promql` percent-encoded.
fn query_path(promql: &str) -> String {
    let mut path = String::from("/api/v1/query?query=");
    for byte in promql.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            path.push(byte as char);
        } else {
            path.push_str(&format!("%{byte:02X}"));
        }
    }
    path
}

/// Whether a successful `/api/v1/query` answer holds at least one sample: a non-empty
/// vector or matrix, or any scalar or string.
fn has_sample(body: &str) -> Result<bool, String> {
    let json: serde_json::Value =
        serde_json::from_str(body).map_err(|e| format!("answer is not JSON ({e}): {body}"))?;
    if json["status"] != "success" {
        return Err(format!("answer is not a success: {body}"));
    }
    Ok(match &json["data"]["result"] {
        serde_json::Value::Array(result) => match json["data"]["resultType"].as_str() {
            Some("vector" | "matrix") => !result.is_empty(),
            _ => true,
        },
        _ => false,
    })
}

/// `target` as `host:port` for the scrape config: without `http://` and a trailing `/`,
/// and without anything that would need quoting in YAML.
fn scrape_target(target: &str) -> Result<String, String> {
    let t = target.strip_prefix("http://").unwrap_or(target);
    let t = t.strip_suffix('/').unwrap_or(t);
    let valid = !t.is_empty()
        && t.contains(':')
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._:[]".contains(c));
    if valid {
        Ok(t.to_string())
    } else {
        Err(format!(
            "scrape target {target:?} is not host:port (e.g. 127.0.0.1:9091)"
        ))
    }
}

/// A port that was free on 127.0.0.1 a moment ago (bound to port 0, then released).
fn free_port() -> Result<u16, String> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("cannot bind 127.0.0.1:0: {e}"))
}

fn check_binary(path: &str, package: &str) -> Result<(), String> {
    if Path::new(path).is_file() {
        Ok(())
    } else {
        Err(format!(
            "{path} not found: apt-get install -y --no-install-recommends {package}"
        ))
    }
}

fn temp_dir(prefix: &str) -> Result<tempfile::TempDir, String> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(|e| format!("cannot create a temporary directory: {e}"))
}

fn write_file(path: &Path, text: &str) -> Result<(), String> {
    fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// The last 20 lines of a log file, or why it could not be read.
fn log_tail(path: &Path) -> String {
    match fs::read_to_string(path) {
        Ok(text) if text.trim().is_empty() => "(empty)".to_string(),
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(20)..].join("\n")
        }
        Err(e) => format!("(cannot read it: {e})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_paths_are_percent_encoded() {
        assert_eq!(
            query_path(r#"sum(demo{x="1"}) + 1"#),
            "/api/v1/query?query=sum%28demo%7Bx%3D%221%22%7D%29%20%2B%201"
        );
    }

    #[test]
    fn samples_are_recognised() {
        let empty = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        let one = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"42"]}]}}"#;
        let scalar = r#"{"status":"success","data":{"resultType":"scalar","result":[1,"2"]}}"#;
        assert_eq!(has_sample(empty), Ok(false));
        assert_eq!(has_sample(one), Ok(true));
        assert_eq!(has_sample(scalar), Ok(true));
        assert!(has_sample(r#"{"status":"error"}"#).is_err());
    }

    #[test]
    fn scrape_targets_are_host_port() {
        assert_eq!(
            scrape_target("http://127.0.0.1:9091/").as_deref(),
            Ok("127.0.0.1:9091")
        );
        assert_eq!(scrape_target("localhost:80").as_deref(), Ok("localhost:80"));
        assert!(scrape_target("127.0.0.1").is_err());
        assert!(scrape_target("127.0.0.1:1']").is_err());
        assert!(scrape_target("https://127.0.0.1:1").is_err());
    }
}
