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

use openssh::{KnownHosts, Session, SessionBuilder};
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

/// One host's master connection, made once; the lock makes concurrent callers wait for it.
type Slot = Arc<tokio::sync::Mutex<Option<Arc<Session>>>>;

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
            // Control sockets need a short path (108 bytes at most): a folder right in /tmp.
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
            let mut closing = Vec::new();
            for slot in slots {
                if let Some(session) = slot.lock().await.take() {
                    // The last holder closes the master; a holder still running (a command cut
                    // short) drops it, and dropping also asks the master to exit.
                    if let Ok(session) = Arc::try_unwrap(session) {
                        closing.push(session.close());
                    }
                }
            }
            let _ = tokio::time::timeout(
                Duration::from_secs(5),
                futures_util::future::join_all(closing),
            )
            .await;
        })
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
        if let Some(session) = guard.as_ref() {
            if session.check().await.is_ok() {
                return Ok(session.clone());
            }
        }
        let session = Arc::new(self.connect(key, connect_timeout).await?);
        *guard = Some(session.clone());
        Ok(session)
    }

    async fn connect(&self, key: &ConnKey, timeout: Duration) -> Result<Session, ConnectError> {
        let mut b = SessionBuilder::default();
        b.known_hosts_check(match key.checking {
            HostKeyChecking::Strict => KnownHosts::Strict,
            HostKeyChecking::AcceptNew => KnownHosts::Add,
            HostKeyChecking::Off => KnownHosts::Accept,
        });
        b.connect_timeout(timeout.max(Duration::from_secs(1)));
        b.server_alive_interval(Duration::from_secs(15));
        // The master lives as long as the run (closed at its end); should opsbook itself be
        // killed, it exits once idle for a while instead of lingering.
        if let Some(idle) = std::num::NonZeroUsize::new(300) {
            b.control_persist(openssh::ControlPersist::IdleFor(idle));
        }
        if let Some(dir) = &self.control_dir {
            b.control_directory(dir.path());
        }
        if let Some(u) = &key.user {
            b.user(u.clone());
        }
        if let Some(p) = key.port {
            b.port(p);
        }
        if let Some(k) = &key.identity_file {
            b.keyfile(k);
        }
        if let Some(f) = &key.known_hosts_file {
            b.user_known_hosts_file(f);
        }
        if key.checking == HostKeyChecking::Off {
            b.user_known_hosts_file("/dev/null");
        }
        match (key.options.is_empty(), &key.ssh_config) {
            (true, Some(f)) => {
                b.config_file(f);
            }
            (true, None) => {}
            (false, user_config) => {
                b.config_file(self.options_config(&key.options, user_config.as_deref())?);
            }
        }
        if !key.jump_hosts.is_empty() {
            b.jump_hosts(key.jump_hosts.iter());
        }
        // ssh's own ConnectTimeout covers the TCP connect; this bounds the whole handshake
        // (a server that accepts and then says nothing, a slow jump host).
        let limit = timeout + timeout.min(Duration::from_secs(10)) + Duration::from_secs(2);
        match tokio::time::timeout(limit, b.connect_mux(&key.address)).await {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => Err(ConnectError {
                message: explain(key, &e),
            }),
            Err(_) => Err(ConnectError {
                message: format!(
                    "cannot connect to {}: no answer within {}",
                    key.display(),
                    humanize(limit)
                ),
            }),
        }
    }
}

impl Pool {
    /// An ssh_config file with `options` first (in ssh_config the first value of an option
    /// wins), then the user's configuration (`ssh_config`, or ~/.ssh/config and the system's).
    fn options_config(
        &self,
        options: &[(String, String)],
        user_config: Option<&Path>,
    ) -> Result<PathBuf, ConnectError> {
        let fail = |message: String| ConnectError { message };
        let mut text = String::from("# written by opsbook for `ssh_options`\n");
        for (k, v) in options {
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
        match user_config {
            Some(f) => text.push_str(&format!("Include \"{}\"\n", f.display())),
            None => {
                if let Some(home) = std::env::var_os("HOME") {
                    let user = Path::new(&home).join(".ssh/config");
                    text.push_str(&format!("Include \"{}\"\n", user.display()));
                }
                text.push_str("Include /etc/ssh/ssh_config\n");
            }
        }
        let dir = self
            .control_dir
            .as_ref()
            .map(|d| d.path().to_path_buf())
            .unwrap_or_else(std::env::temp_dir);
        let mut h = std::collections::hash_map::DefaultHasher::new();
        std::hash::Hash::hash(&text, &mut h);
        let path = dir.join(format!("config-{:016x}", std::hash::Hasher::finish(&h)));
        if !path.exists() {
            std::fs::write(&path, &text).map_err(|e| {
                fail(format!(
                    "cannot write an ssh config in {}: {e}",
                    dir.display()
                ))
            })?;
        }
        Ok(path)
    }
}

/// A connection error in words an operator can act on.
fn explain(key: &ConnKey, e: &openssh::Error) -> String {
    use std::error::Error as _;
    let mut detail = e.source().map(|s| s.to_string()).unwrap_or_default();
    if detail.is_empty() {
        detail = e.to_string();
    }
    let dest = key.display();
    let known = key
        .known_hosts_file
        .as_ref()
        .map(|p| p.display().to_string())
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
    if ms % 60_000 == 0 && ms >= 60_000 {
        format!("{}m", ms / 60_000)
    } else if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}
