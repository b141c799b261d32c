//! Connections: one OpenSSH ControlMaster per host (and per set of connection settings) per
//! run, shared by every step and every command of the run, closed when the run ends.
//!
//! The master is the system's own `ssh` (so `~/.ssh/config`, ssh-agent, ProxyJump and
//! known_hosts behave as the operator knows them); commands go over its control socket through
//! the `openssh` crate's native multiplexing client, without a new `ssh` process per command.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openssh::Session;
use opsbook_engine::resources::{InventorySource, RunState};

use crate::input::HostKeyChecking;
use crate::inventory::Inventory;

/// Everything that makes two connections the same connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConnKey {
    /// Address or name given to ssh.
    pub address: String,
    /// Port, if not ssh's default.
    pub port: Option<u16>,
    /// Login user, if not ssh's default.
    pub user: Option<String>,
    /// `-i`.
    pub identity_file: Option<PathBuf>,
    /// Host key policy.
    pub checking: HostKeyChecking,
    /// `UserKnownHostsFile`.
    pub known_hosts_file: Option<PathBuf>,
    /// `-F`.
    pub ssh_config: Option<PathBuf>,
    /// `-J`.
    pub jump_hosts: Vec<String>,
    /// Further ssh options (`KexAlgorithms`, `Ciphers` …), as `ssh_config` lines before the
    /// user's own configuration.
    pub options: Vec<(String, String)>,
}

impl ConnKey {
    /// `user@address:port`, for messages.
    pub fn display(&self) -> String {
        let mut s = String::new();
        if let Some(u) = &self.user {
            s.push_str(u);
            s.push('@');
        }
        s.push_str(&self.address);
        if let Some(p) = self.port {
            s.push_str(&format!(":{p}"));
        }
        s
    }
}

/// Why a host could not be reached.
#[derive(Debug, Clone)]
pub struct ConnectError {
    /// For people: what failed and what to do.
    pub message: String,
}

/// A master connection: the session over its control socket, and the folder holding the
/// socket and the master's log (removed when the connection is dropped).
pub struct Conn {
    session: Arc<Session>,
    control: PathBuf,
    closed: std::sync::atomic::AtomicBool,
    _dir: tempfile::TempDir,
}

impl Drop for Conn {
    fn drop(&mut self) {
        // A master not closed through its session (still in use at the end of the run, or the
        // pool dropped without `close`): ask it to exit over its control socket.
        if !self.closed.load(std::sync::atomic::Ordering::SeqCst) {
            let _ = std::process::Command::new("ssh")
                .arg("-S")
                .arg(&self.control)
                .args(["-O", "exit", "-q", "opsbook"])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

/// One host's master connection, made once; the lock makes concurrent callers wait for it.
type Slot = Arc<tokio::sync::Mutex<Option<Conn>>>;

/// The SSH state of a run: master connections and parsed inventories.
pub struct Pool {
    control_dir: Option<tempfile::TempDir>,
    sessions: Mutex<HashMap<ConnKey, Slot>>,
    inventories: Mutex<Vec<(InventorySource, Arc<Inventory>)>>,
    warned_off: std::sync::atomic::AtomicBool,
}

impl Default for Pool {
    fn default() -> Self {
        Pool {
            // Control sockets need a short path (108 bytes at most): a folder right in /tmp,
            // private to this user (tempfile makes it 0700).
            control_dir: tempfile::Builder::new()
                .prefix("opsbook-ssh-")
                .tempdir_in(std::env::temp_dir())
                .ok(),
            sessions: Mutex::new(HashMap::new()),
            inventories: Mutex::new(Vec::new()),
            warned_off: Default::default(),
        }
    }
}

impl RunState for Pool {
    fn close(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            let slots: Vec<_> = match self.sessions.lock() {
                Ok(mut s) => s.drain().map(|(_, slot)| slot).collect(),
                Err(_) => Vec::new(),
            };
            let mut conns = Vec::new();
            for slot in slots {
                if let Some(conn) = slot.lock().await.take() {
                    conns.push(conn);
                }
            }
            let closing = conns.iter_mut().map(|c| async move {
                // Over the control socket (no process), when nothing else holds the session;
                // else with `ssh -O exit`.
                let closed = match Arc::get_mut(&mut c.session) {
                    Some(_) => {
                        let session = std::mem::replace(
                            &mut c.session,
                            Arc::new(Session::resume_mux(
                                c.control.clone().into_boxed_path(),
                                None,
                            )),
                        );
                        match Arc::try_unwrap(session) {
                            Ok(s) => s.close().await.is_ok(),
                            Err(_) => false,
                        }
                    }
                    None => false,
                };
                if closed || c.session.close_shared().await.is_ok() {
                    c.closed.store(true, std::sync::atomic::Ordering::SeqCst);
                }
            });
            let _ = tokio::time::timeout(
                Duration::from_secs(5),
                futures_util::future::join_all(closing),
            )
            .await;
            // Dropping the connections removes their folders (and asks any master that did
            // not close to exit).
            drop(conns);
        })
    }
}

/// Closing a master through a shared session.
trait CloseShared {
    async fn close_shared(&self) -> Result<(), openssh::Error>;
}

impl CloseShared for Arc<Session> {
    async fn close_shared(&self) -> Result<(), openssh::Error> {
        // The multiplexing protocol's stop request, as `Session::close` sends it, without
        // taking the session out of the `Arc` that commands still running may hold.
        let out = tokio::process::Command::new("ssh")
            .arg("-S")
            .arg(self.control_socket())
            .args(["-O", "exit", "-q", "opsbook"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .await
            .map_err(openssh::Error::Master)?;
        if out.success() {
            Ok(())
        } else {
            Err(openssh::Error::Disconnected)
        }
    }
}

impl Pool {
    /// The inventory of `source`, read once per run.
    pub fn inventory(&self, source: &InventorySource) -> Result<Arc<Inventory>, String> {
        if let Ok(cache) = self.inventories.lock() {
            if let Some((_, inv)) = cache.iter().find(|(s, _)| s == source) {
                return Ok(inv.clone());
            }
        }
        let inv = match source {
            InventorySource::File(path) => Inventory::load(path),
            InventorySource::Inline(v) => Inventory::from_yaml(v)
                .map_err(|e| crate::InventoryError(format!("inventory: {e}"))),
        }
        .map_err(|e| e.0)?;
        let inv = Arc::new(inv);
        if let Ok(mut cache) = self.inventories.lock() {
            cache.push((source.clone(), inv.clone()));
        }
        Ok(inv)
    }

    /// Whether this is the first time `host_key_checking: off` is used in the run (to warn once).
    pub fn first_unchecked(&self) -> bool {
        !self
            .warned_off
            .swap(true, std::sync::atomic::Ordering::SeqCst)
    }

    /// The master connection for `key`: made on first use, reused afterwards (checked alive;
    /// made again if its master went away). Concurrent callers for one key wait for one connect.
    pub async fn session(
        &self,
        key: &ConnKey,
        connect_timeout: Duration,
    ) -> Result<Arc<Session>, ConnectError> {
        let slot = match self.sessions.lock() {
            Ok(mut s) => s.entry(key.clone()).or_default().clone(),
            Err(_) => {
                return Err(ConnectError {
                    message: "the connection pool is unusable after a crash".into(),
                })
            }
        };
        let mut guard = slot.lock().await;
        if let Some(conn) = guard.as_ref() {
            if conn.session.check().await.is_ok() {
                return Ok(conn.session.clone());
            }
        }
        let conn = self.connect(key, connect_timeout).await?;
        let session = conn.session.clone();
        *guard = Some(conn);
        Ok(session)
    }

    /// Starts a ControlMaster for `key`: the system's `ssh -M -f -N`, in its own process group
    /// (a terminal's Ctrl-C reaches opsbook, which closes the masters itself, and not the
    /// masters or their ProxyJump tunnels), with every setting in a generated ssh_config so
    /// that jump hosts get them too.
    async fn connect(&self, key: &ConnKey, timeout: Duration) -> Result<Conn, ConnectError> {
        let fail = |message: String| ConnectError { message };
        if key.address.starts_with('-') || key.jump_hosts.iter().any(|j| j.starts_with('-')) {
            return Err(fail(format!(
                "`{}` is not a host name or address",
                key.display()
            )));
        }
        let Some(control_dir) = self.control_dir.as_ref() else {
            return Err(fail(format!(
                "cannot create a private folder for ssh control sockets in {}",
                std::env::temp_dir().display()
            )));
        };
        let dir = tempfile::Builder::new()
            .prefix("m")
            .tempdir_in(control_dir.path())
            .map_err(|e| fail(format!("cannot create a control folder: {e}")))?;
        let control = dir.path().join("s");
        let log = dir.path().join("log");
        let config = self.config_file(key, timeout, dir.path())?;
        let mut cmd = tokio::process::Command::new("ssh");
        cmd.arg("-F")
            .arg(&config)
            .arg("-E")
            .arg(&log)
            .arg("-S")
            .arg(&control)
            .args(["-M", "-f", "-N", "-o", "ControlPersist=300"]);
        if let Some(p) = key.port {
            cmd.arg("-p").arg(p.to_string());
        }
        if let Some(u) = &key.user {
            cmd.arg("-l").arg(u);
        }
        if !key.jump_hosts.is_empty() {
            cmd.arg("-J").arg(key.jump_hosts.join(","));
        }
        cmd.arg("--")
            .arg(&key.address)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .kill_on_drop(true);
        // ssh's ConnectTimeout covers each TCP connect; this bounds the whole handshake (a
        // server that accepts and then says nothing, a slow jump host).
        let limit = timeout + timeout.min(Duration::from_secs(10)) + Duration::from_secs(2);
        let status = match tokio::time::timeout(limit, cmd.status()).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(fail(format!("cannot start ssh: {e}"))),
            Err(_) => {
                return Err(fail(format!(
                    "cannot connect to {}: no answer within {}",
                    key.display(),
                    humanize(limit)
                )))
            }
        };
        if !status.success() {
            let said = std::fs::read_to_string(&log).unwrap_or_default();
            return Err(fail(explain(key, &said)));
        }
        let session = Session::resume_mux(
            control.clone().into_boxed_path(),
            Some(log.into_boxed_path()),
        );
        Ok(Conn {
            session: Arc::new(session),
            control,
            closed: Default::default(),
            _dir: dir,
        })
    }

    /// The ssh_config of one connection: opsbook's settings and the step's `ssh_options` first
    /// (in ssh_config the first value of an option wins), then the user's configuration
    /// (`ssh_config`, or ~/.ssh/config and the system's).
    fn config_file(
        &self,
        key: &ConnKey,
        timeout: Duration,
        dir: &Path,
    ) -> Result<PathBuf, ConnectError> {
        let fail = |message: String| ConnectError { message };
        let quoted = |p: &Path| format!("\"{}\"", p.display());
        let mut text = String::from("# written by opsbook for one connection\n");
        for (k, v) in &key.options {
            if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(fail(format!(
                    "`ssh_options`: `{k}` is not an ssh option name"
                )));
            }
            if v.contains(['\n', '\r']) {
                return Err(fail(format!(
                    "`ssh_options`: the value of `{k}` has a line break"
                )));
            }
            text.push_str(&format!("{k} {v}\n"));
        }
        text.push_str("BatchMode yes\n");
        text.push_str(&format!("ConnectTimeout {}\n", timeout.as_secs().max(1)));
        text.push_str("ServerAliveInterval 15\n");
        text.push_str(match key.checking {
            HostKeyChecking::Strict => "StrictHostKeyChecking yes\n",
            HostKeyChecking::AcceptNew => "StrictHostKeyChecking accept-new\n",
            HostKeyChecking::Off => "StrictHostKeyChecking no\n",
        });
        match (&key.known_hosts_file, key.checking) {
            (_, HostKeyChecking::Off) => text.push_str("UserKnownHostsFile /dev/null\n"),
            (Some(f), _) => text.push_str(&format!("UserKnownHostsFile {}\n", quoted(f))),
            (None, _) => {}
        }
        if let Some(k) = &key.identity_file {
            text.push_str(&format!("IdentityFile {}\nIdentitiesOnly yes\n", quoted(k)));
        }
        match &key.ssh_config {
            Some(f) => text.push_str(&format!("Include {}\n", quoted(f))),
            None => {
                if let Some(home) = std::env::var_os("HOME") {
                    let user = Path::new(&home).join(".ssh/config");
                    text.push_str(&format!("Include {}\n", quoted(&user)));
                }
                text.push_str("Include /etc/ssh/ssh_config\n");
            }
        }
        let path = dir.join("config");
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()))
            .map_err(|e| {
                fail(format!(
                    "cannot write an ssh config in {}: {e}",
                    dir.display()
                ))
            })?;
        Ok(path)
    }
}

/// A connection error in words an operator can act on, from what ssh wrote in its log.
fn explain(key: &ConnKey, said: &str) -> String {
    let mut detail = said.trim().to_string();
    if detail.is_empty() {
        detail = "ssh failed without saying why".into();
    }
    let dest = key.display();
    // ssh names the file and line of a key that no longer matches ("Offending ED25519 key in
    // /path/known_hosts:3"); else the file given, else the default.
    let offending = detail.lines().find_map(|l| {
        let rest = l.split_once("Offending ")?.1;
        let file = rest.split_once(" key in ")?.1.trim();
        Some(file.rsplit_once(':').map_or(file, |(f, _)| f).to_string())
    });
    let known = offending
        .or_else(|| {
            key.known_hosts_file
                .as_ref()
                .map(|p| p.display().to_string())
        })
        .unwrap_or_else(|| "~/.ssh/known_hosts".into());
    let entry = match key.port {
        Some(p) if p != 22 => format!("[{}]:{p}", key.address),
        _ => key.address.clone(),
    };
    let lower = detail.to_ascii_lowercase();
    if lower.contains("remote host identification has changed")
        || lower.contains("host key for") && lower.contains("has changed")
    {
        format!(
            "host key verification failed for {dest}: its key does not match the one in {known}. \
             This can be an attack, or the host was reinstalled; if you know it was, remove the \
             old key with `ssh-keygen -R '{entry}' -f {known}`"
        )
    } else if lower.contains("host key verification failed") {
        format!(
            "host key verification failed for {dest}: its key is not in {known} \
             (host_key_checking is strict). Add it (`ssh-keyscan`) after checking its fingerprint, \
             or set `host_key_checking: accept-new`"
        )
    } else if lower.contains("permission denied") {
        format!("authentication failed for {dest}: {}", last_line(&detail))
    } else {
        format!("cannot connect to {dest}: {}", last_line(&detail))
    }
}

fn last_line(s: &str) -> &str {
    s.lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or("")
}

/// `1.5s`, `2m`.
pub fn humanize(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(60_000) && ms >= 60_000 {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}
