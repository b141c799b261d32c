//! Real OpenSSH servers on loopback, for integration tests and benchmarks of the SSH plugin.
//!
//! [`Fleet::start`] starts `n` `/usr/sbin/sshd` processes, one per address 127.0.0.2,
//! 127.0.0.3, ... all on one port, each with its own config file in a temporary directory.
//! Clients log in as the local user [`Fleet::user`] (`opsbook-test`, shell `/bin/sh`, empty
//! home, passwordless sudo) with the key [`Fleet::client_key`]; [`Fleet::ssh_config`] is a
//! ready client config for `ssh -F`. Dropping the [`Fleet`] stops every server by PID and
//! removes the directory.
//!
//! Needs root (to start sshd and create the users) and the `openssh-server`,
//! `openssh-client` and `sudo` packages.
//!
//! ```no_run
//! use opsbook_testkit::sshd::Fleet;
//!
//! let fleet = Fleet::start(3)?;
//! let host = &fleet.hosts()[0];
//! let out = std::process::Command::new("ssh")
//!     .arg("-F")
//!     .arg(fleet.ssh_config())
//!     .args(["-p", &host.port.to_string(), &host.address, "id -un"])
//!     .output()
//!     .map_err(|e| e.to_string())?;
//! assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), fleet.user());
//! # Ok::<(), String>(())
//! ```

use std::collections::HashMap;
use std::fs;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

/// Where the OpenSSH server binary must be (sshd re-executes itself, so it needs an absolute path).
pub const SSHD: &str = "/usr/sbin/sshd";
/// The login user of every fleet: created if missing, shell `/bin/sh`, passwordless sudo.
pub const USER: &str = "opsbook-test";
/// A second login user without any sudoers entry, for tests of a failing `become`.
pub const USER_WITHOUT_SUDO: &str = "opsbook-nosudo";
/// The most hosts one fleet can have (addresses 127.0.0.2 ..= 127.0.0.201).
pub const MAX_HOSTS: usize = 200;

/// How long [`Fleet::start`] waits for every server to accept TCP connections.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`Fleet`]'s `Drop` waits after SIGTERM before sending SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// How many ports [`Fleet::start`] tries when another process takes the chosen one.
const PORT_ATTEMPTS: usize = 5;
/// How long user creation keeps retrying while another process holds the passwd lock.
const USERADD_TIMEOUT: Duration = Duration::from_secs(15);

/// One server of a [`Fleet`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshHost {
    /// `h1`, `h2`, ... in address order.
    pub name: String,
    /// The loopback address the server listens on: `127.0.0.2`, `127.0.0.3`, ...
    pub address: String,
    /// The port, the same for every host of a fleet.
    pub port: u16,
    /// The server's public host key as `ssh-ed25519 AAAA...` (no comment).
    pub host_key_pub: String,
}

/// A set of running sshd servers on loopback; stopped and cleaned up on drop.
#[derive(Debug)]
pub struct Fleet {
    hosts: Vec<SshHost>,
    servers: Vec<Server>,
    wrong_keys: AtomicUsize,
    // Declared last: removed after `Drop::drop` has stopped the servers.
    dir: tempfile::TempDir,
}

#[derive(Debug)]
struct Server {
    child: Child,
    log: PathBuf,
}

/// Why one start attempt failed.
enum StartError {
    /// Some server could not bind the port: try again with another one.
    PortTaken,
    Fatal(String),
}

impl Fleet {
    /// Starts `n` sshd servers (1 ..= 200), one per address 127.0.0.2, 127.0.0.3, ..., all on
    /// one port that was free on all those addresses (another port is tried if a server cannot
    /// bind it). Returns once every server accepts TCP connections (at most 10 s).
    ///
    /// Creates the users [`USER`] and [`USER_WITHOUT_SUDO`] if missing and gives [`USER`]
    /// passwordless sudo (`/etc/sudoers.d/opsbook-test`). All hosts share one host key.
    pub fn start(n: usize) -> Result<Fleet, String> {
        if n == 0 || n > MAX_HOSTS {
            return Err(format!(
                "Fleet::start({n}): the number of hosts must be 1 to {MAX_HOSTS}"
            ));
        }
        // SAFETY: geteuid has no preconditions and cannot fail.
        let euid = unsafe { libc::geteuid() };
        if euid != 0 {
            return Err(format!(
                "the SSH test fleet needs root: it starts {SSHD} and creates the users {USER} \
                 and {USER_WITHOUT_SUDO} (running as uid {euid})"
            ));
        }
        if !Path::new(SSHD).is_file() {
            return Err(format!("sshd not found at {SSHD}: install openssh-server"));
        }

        let dir = tempfile::Builder::new()
            .prefix("opsbook-sshd-")
            // Not $TMPDIR: the test users must be able to reach the authorized keys and the
            // remote directory, so every ancestor must be world-traversable.
            .tempdir_in("/tmp")
            .map_err(|e| format!("cannot create a temporary directory in /tmp: {e}"))?;
        set_mode(dir.path(), 0o755)?;
        let mut fleet = Fleet {
            hosts: Vec::new(),
            servers: Vec::new(),
            wrong_keys: AtomicUsize::new(0),
            dir,
        };

        // sshd refuses to start without its privilege-separation directory.
        fs::create_dir_all("/run/sshd").map_err(|e| format!("cannot create /run/sshd: {e}"))?;

        let skel = fleet.dir().join("empty-skel");
        create_dir(&skel, 0o755)?;
        ensure_users(&skel)?;

        let host_key = fleet.dir().join("host_key");
        let host_keygen = spawn_keygen(&host_key, "opsbook-testkit-host")?;
        let client_keygen = spawn_keygen(&fleet.client_key(), "opsbook-testkit-client")?;
        finish_keygen(host_keygen, &host_key)?;
        finish_keygen(client_keygen, &fleet.client_key())?;
        let host_key_pub = read_public_key(&host_key)?;

        let authorized_keys = fleet.dir().join("authorized_keys");
        let client_pub = fleet.client_key().with_extension("pub");
        fs::copy(&client_pub, &authorized_keys).map_err(|e| {
            format!(
                "cannot copy {} to {}: {e}",
                client_pub.display(),
                authorized_keys.display()
            )
        })?;
        set_mode(&authorized_keys, 0o644)?;
        create_dir(&fleet.remote_dir(), 0o777)?;

        let addresses: Vec<Ipv4Addr> = (0..n)
            .map(|i| Ipv4Addr::new(127, 0, 0, (i + 2) as u8))
            .collect();
        let mut port = 0;
        for attempt in 1..=PORT_ATTEMPTS {
            port = pick_port(&addresses)?;
            match fleet.start_servers(&addresses, port, &host_key, &authorized_keys) {
                Ok(()) => break,
                Err(StartError::PortTaken) if attempt < PORT_ATTEMPTS => fleet.stop_servers(),
                Err(StartError::PortTaken) => {
                    return Err(format!(
                        "sshd could not bind a free port in {PORT_ATTEMPTS} attempts \
                         (last: {port}); see the logs in {}",
                        fleet.dir().display()
                    ))
                }
                Err(StartError::Fatal(message)) => return Err(message),
            }
        }

        fleet.hosts = addresses
            .iter()
            .enumerate()
            .map(|(i, address)| SshHost {
                name: format!("h{}", i + 1),
                address: address.to_string(),
                port,
                host_key_pub: host_key_pub.clone(),
            })
            .collect();
        write_file(&fleet.known_hosts(), &known_hosts_text(&fleet.hosts, None))?;
        let config = format!(
            "Host *\n    User {USER}\n    IdentityFile \"{}\"\n    IdentitiesOnly yes\n    \
             UserKnownHostsFile \"{}\"\n    GlobalKnownHostsFile /dev/null\n    \
             StrictHostKeyChecking yes\n    BatchMode yes\n    LogLevel ERROR\n",
            fleet.client_key().display(),
            fleet.known_hosts().display()
        );
        write_file(&fleet.ssh_config(), &config)?;
        Ok(fleet)
    }

    /// The servers, in address order (`h1` = 127.0.0.2, `h2` = 127.0.0.3, ...).
    pub fn hosts(&self) -> &[SshHost] {
        &self.hosts
    }

    /// The temporary directory holding keys, configs, logs and [`Fleet::remote_dir`].
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The private ed25519 key (no passphrase) every server accepts for every user.
    pub fn client_key(&self) -> PathBuf {
        self.dir().join("client_key")
    }

    /// A known_hosts file with every host as `[127.0.0.x]:PORT ssh-ed25519 ...`.
    pub fn known_hosts(&self) -> PathBuf {
        self.dir().join("known_hosts")
    }

    /// A client config for `ssh -F`: [`Fleet::user`], [`Fleet::client_key`] only,
    /// [`Fleet::known_hosts`] with strict checking, batch mode, log level ERROR.
    /// It sets no port: pass `-p` (or `Port`) yourself.
    pub fn ssh_config(&self) -> PathBuf {
        self.dir().join("ssh_config")
    }

    /// The login user ([`USER`]), which has passwordless sudo.
    pub fn user(&self) -> &str {
        USER
    }

    /// A login user without sudo rights ([`USER_WITHOUT_SUDO`]); same key, same shell.
    pub fn user_without_sudo(&self) -> &str {
        USER_WITHOUT_SUDO
    }

    /// Writes a new known_hosts file whose entry for `hosts()[0]` has a different, freshly
    /// generated key (the other hosts keep their real key), and returns its path.
    pub fn wrong_known_hosts(&self) -> Result<PathBuf, String> {
        let k = self.wrong_keys.fetch_add(1, Ordering::Relaxed);
        let key = self.dir().join(format!("wrong_host_key_{k}"));
        finish_keygen(spawn_keygen(&key, "opsbook-testkit-wrong")?, &key)?;
        let wrong = read_public_key(&key)?;
        let path = self.dir().join(format!("known_hosts_wrong_{k}"));
        write_file(&path, &known_hosts_text(&self.hosts, Some(&wrong)))?;
        Ok(path)
    }

    /// A directory inside [`Fleet::dir`] that every user can write (mode 0777), for tests
    /// to have hosts create or append to files.
    pub fn remote_dir(&self) -> PathBuf {
        self.dir().join("remote")
    }

    /// The PIDs of the sshd listener processes (one per host, in host order).
    pub fn server_pids(&self) -> Vec<u32> {
        self.servers.iter().map(|s| s.child.id()).collect()
    }

    /// A port on 127.0.0.1 that nothing listens on (bound, then released), for
    /// "unreachable host" tests. Falls back to port 1 if binding fails.
    pub fn closed_port() -> u16 {
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(1)
    }

    /// Writes the configs, spawns one sshd per address and waits until all accept connections.
    fn start_servers(
        &mut self,
        addresses: &[Ipv4Addr],
        port: u16,
        host_key: &Path,
        authorized_keys: &Path,
    ) -> Result<(), StartError> {
        for (i, address) in addresses.iter().enumerate() {
            let host_dir = self.dir().join(format!("h{}", i + 1));
            create_dir(&host_dir, 0o755).map_err(StartError::Fatal)?;
            let config_path = host_dir.join("sshd_config");
            let log = host_dir.join("sshd.log");
            let config = format!(
                "Port {port}\nListenAddress {address}\nAddressFamily inet\n\
                 HostKey {}\nAuthorizedKeysFile {}\nPubkeyAuthentication yes\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 PermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\n\
                 PidFile {}\nMaxStartups 200:30:400\nMaxSessions 64\nLogLevel ERROR\n\
                 PrintMotd no\nPrintLastLog no\nUseDNS no\nSubsystem sftp internal-sftp\n",
                host_key.display(),
                authorized_keys.display(),
                host_dir.join("sshd.pid").display(),
            );
            write_file(&config_path, &config).map_err(StartError::Fatal)?;
            // sshd writes to the -E log itself; early messages on stderr go there too.
            let stderr = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .map_err(|e| StartError::Fatal(format!("cannot open {}: {e}", log.display())))?;
            let child = Command::new(SSHD)
                .arg("-D")
                .arg("-f")
                .arg(&config_path)
                .arg("-E")
                .arg(&log)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr)
                .process_group(0)
                .spawn()
                .map_err(|e| StartError::Fatal(format!("cannot start {SSHD}: {e}")))?;
            self.servers.push(Server { child, log });
        }
        self.wait_ready(addresses, port)
    }

    /// Polls every server until it accepts a TCP connection, up to [`READY_TIMEOUT`] in all.
    fn wait_ready(&mut self, addresses: &[Ipv4Addr], port: u16) -> Result<(), StartError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut pending: Vec<usize> = (0..self.servers.len()).collect();
        loop {
            let mut still = Vec::new();
            for i in pending {
                self.check_alive(i, addresses[i], port)?;
                let addr = SocketAddr::from((addresses[i], port));
                if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
                    still.push(i);
                }
            }
            pending = still;
            if pending.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                let i = pending[0];
                return Err(StartError::Fatal(format!(
                    "{} of {} sshd servers did not accept connections within {} s, \
                     first h{} ({}:{port}); tail of {}:\n{}",
                    pending.len(),
                    self.servers.len(),
                    READY_TIMEOUT.as_secs(),
                    i + 1,
                    addresses[i],
                    self.servers[i].log.display(),
                    log_tail(&self.servers[i].log)
                )));
            }
            thread::sleep(Duration::from_millis(20));
        }
        // A connection may have reached another process that took the port: make sure
        // every server of ours is still running.
        for (i, address) in addresses.iter().enumerate() {
            self.check_alive(i, *address, port)?;
        }
        Ok(())
    }

    /// Fails if server `i` has exited; a bind failure is reported as [`StartError::PortTaken`].
    fn check_alive(&mut self, i: usize, address: Ipv4Addr, port: u16) -> Result<(), StartError> {
        let server = &mut self.servers[i];
        let status = match server.child.try_wait() {
            Ok(None) => return Ok(()),
            Ok(Some(status)) => status.to_string(),
            Err(e) => format!("unknown status ({e})"),
        };
        let tail = log_tail(&server.log);
        if tail.contains("Address already in use") || tail.contains("Cannot bind any address") {
            return Err(StartError::PortTaken);
        }
        Err(StartError::Fatal(format!(
            "sshd for h{} ({address}:{port}) exited ({status}) before accepting connections; \
             tail of {}:\n{tail}",
            i + 1,
            server.log.display()
        )))
    }

    /// Stops every server and the processes it forked (connections, sessions): SIGTERM, then
    /// SIGKILL for whatever is still alive after [`STOP_GRACE`].
    fn stop_servers(&mut self) {
        if self.servers.is_empty() {
            return;
        }
        let listeners: Vec<u32> = self.servers.iter().map(|s| s.child.id()).collect();
        let descendants = descendants_of(&listeners);
        for &pid in &listeners {
            signal(pid, libc::SIGTERM);
        }
        for &(pid, _) in &descendants {
            signal(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + STOP_GRACE;
        let mut running: Vec<Server> = std::mem::take(&mut self.servers);
        loop {
            running.retain_mut(|s| matches!(s.child.try_wait(), Ok(None)));
            if running.is_empty() || Instant::now() >= deadline {
                break;
            }
            thread::sleep(Duration::from_millis(10));
        }
        for server in &mut running {
            // Errors here mean the process is already gone.
            let _ = server.child.kill();
            let _ = server.child.wait();
        }
        for (pid, start_time) in descendants {
            // Only the same process (same start time), and not a zombie awaiting its parent.
            if let Some(stat) = proc_stat(pid) {
                if stat.start_time == start_time && stat.state != 'Z' {
                    signal(pid, libc::SIGKILL);
                }
            }
        }
    }
}

impl Drop for Fleet {
    /// Stops every sshd by PID (SIGTERM, SIGKILL after 2 s); the temporary directory is
    /// removed afterwards.
    fn drop(&mut self) {
        self.stop_servers();
    }
}

/// `known_hosts` lines for `hosts`; with `wrong`, the first host gets that key instead.
fn known_hosts_text(hosts: &[SshHost], wrong: Option<&str>) -> String {
    let mut text = String::new();
    for (i, host) in hosts.iter().enumerate() {
        let key = match wrong {
            Some(wrong) if i == 0 => wrong,
            _ => &host.host_key_pub,
        };
        if host.port == 22 {
            text.push_str(&format!("{} {key}\n", host.address));
        } else {
            text.push_str(&format!("[{}]:{} {key}\n", host.address, host.port));
        }
    }
    text
}

/// A port that is free on every address: the kernel picks one for the first address,
/// then it is checked on the others.
fn pick_port(addresses: &[Ipv4Addr]) -> Result<u16, String> {
    let mut last_error = String::new();
    for _ in 0..50 {
        let first = TcpListener::bind((addresses[0], 0))
            .and_then(|l| Ok((l.local_addr()?.port(), l)))
            .map_err(|e| format!("cannot bind {}:0: {e}", addresses[0]))?;
        let port = first.0;
        let mut held = vec![first.1];
        let mut free = true;
        for address in &addresses[1..] {
            match TcpListener::bind((*address, port)) {
                Ok(listener) => held.push(listener),
                Err(e) => {
                    last_error = format!("{address}:{port}: {e}");
                    free = false;
                    break;
                }
            }
        }
        if free {
            return Ok(port);
        }
    }
    Err(format!(
        "found no port free on all of 127.0.0.2 to {} (last: {last_error})",
        addresses[addresses.len() - 1]
    ))
}

/// Starts `ssh-keygen` for a new ed25519 key without passphrase at `path`.
fn spawn_keygen(path: &Path, comment: &str) -> Result<Child, String> {
    Command::new("ssh-keygen")
        .args(["-t", "ed25519", "-N", "", "-q", "-C", comment, "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => {
                "ssh-keygen not found in PATH: install openssh-client".to_string()
            }
            _ => format!("cannot run ssh-keygen: {e}"),
        })
}

/// Waits for a `ssh-keygen` started by [`spawn_keygen`].
fn finish_keygen(child: Child, path: &Path) -> Result<(), String> {
    let out = child
        .wait_with_output()
        .map_err(|e| format!("ssh-keygen for {}: {e}", path.display()))?;
    check_output("ssh-keygen", &out)
}

/// The `TYPE BASE64` part of the public key next to private key `path`.
fn read_public_key(path: &Path) -> Result<String, String> {
    let pub_path = path.with_extension("pub");
    let text = fs::read_to_string(&pub_path)
        .map_err(|e| format!("cannot read {}: {e}", pub_path.display()))?;
    let mut fields = text.split_whitespace();
    match (fields.next(), fields.next()) {
        (Some(kind), Some(key)) => Ok(format!("{kind} {key}")),
        _ => Err(format!("{} is not a public key", pub_path.display())),
    }
}

/// Creates the users once per process (other processes may race: useradd is retried).
fn ensure_users(skel: &Path) -> Result<(), String> {
    static READY: Mutex<bool> = Mutex::new(false);
    let mut ready = READY
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if *ready {
        return Ok(());
    }
    ensure_user(USER, skel)?;
    ensure_user(USER_WITHOUT_SUDO, skel)?;
    ensure_sudoers(USER)?;
    *ready = true;
    Ok(())
}

/// Creates system user `name` (shell /bin/sh, empty home /var/lib/NAME) if missing, and
/// makes sure sshd lets it log in with a key.
fn ensure_user(name: &str, skel: &Path) -> Result<(), String> {
    let home = format!("/var/lib/{name}");
    let deadline = Instant::now() + USERADD_TIMEOUT;
    while !user_exists(name)? {
        let out = Command::new("useradd")
            .args([
                "--system",
                "--shell",
                "/bin/sh",
                "--home-dir",
                &home,
                "--create-home",
            ])
            .arg("--skel")
            .arg(skel)
            .arg(name)
            .output()
            .map_err(|e| format!("cannot run useradd: {e} (install the passwd package)"))?;
        if out.status.success() || user_exists(name)? {
            break;
        }
        // Most likely another process holds the passwd lock: try again.
        if Instant::now() >= deadline {
            return Err(format!(
                "cannot create the user {name}: {}",
                output_message("useradd", &out)
            ));
        }
        thread::sleep(Duration::from_millis(200));
    }
    unlock_password(name, deadline)
}

/// useradd leaves the password locked (`!` in /etc/shadow), and sshd without PAM refuses
/// every login to a locked account, even with a key: set it to `*` (no password, not locked).
fn unlock_password(name: &str, deadline: Instant) -> Result<(), String> {
    loop {
        let Ok(shadow) = fs::read_to_string("/etc/shadow") else {
            return Ok(());
        };
        let locked = shadow.lines().any(|line| {
            let mut fields = line.split(':');
            fields.next() == Some(name) && fields.next().is_some_and(|p| p.starts_with('!'))
        });
        if !locked {
            return Ok(());
        }
        let out = Command::new("usermod")
            .args(["-p", "*", name])
            .output()
            .map_err(|e| format!("cannot run usermod: {e}"))?;
        if out.status.success() {
            return Ok(());
        }
        // Most likely another process holds the passwd lock: try again.
        if Instant::now() >= deadline {
            return Err(format!(
                "cannot unlock the user {name} for ssh: {}",
                output_message("usermod", &out)
            ));
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// Whether `id NAME` knows the user.
fn user_exists(name: &str) -> Result<bool, String> {
    Command::new("id")
        .arg(name)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .map_err(|e| format!("cannot run id: {e}"))
}

/// Gives `user` passwordless sudo through `/etc/sudoers.d/USER` (mode 0440), written only
/// if missing or different, checked with `visudo -cf` and renamed into place atomically.
/// Does nothing if sudo is not installed (no /etc/sudoers.d).
fn ensure_sudoers(user: &str) -> Result<(), String> {
    let dir = Path::new("/etc/sudoers.d");
    if !dir.is_dir() {
        return Ok(());
    }
    let path = dir.join(user);
    let wanted = format!("{user} ALL=(ALL) NOPASSWD: ALL\n");
    let current = fs::read_to_string(&path).ok();
    let mode = fs::metadata(&path).map(|m| m.permissions().mode() & 0o777);
    if current.as_deref() == Some(wanted.as_str()) && matches!(mode, Ok(0o440)) {
        return Ok(());
    }
    // sudo ignores files in sudoers.d whose name contains a dot, so the temporary is inert.
    let tmp = dir.join(format!(".{user}.tmp{}", std::process::id()));
    write_file(&tmp, &wanted)?;
    set_mode(&tmp, 0o440)?;
    if Path::new("/usr/sbin/visudo").is_file() {
        let checked = Command::new("/usr/sbin/visudo")
            .arg("-cf")
            .arg(&tmp)
            .output()
            .map_err(|e| format!("cannot run visudo: {e}"))
            .and_then(|out| check_output("visudo -cf", &out));
        if let Err(e) = checked {
            let _ = fs::remove_file(&tmp);
            return Err(format!("{} rejected: {e}", path.display()));
        }
    }
    fs::rename(&tmp, &path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        format!("cannot write {}: {e}", path.display())
    })
}

/// Ok if the command succeeded, else its exit status and stderr.
fn check_output(what: &str, out: &Output) -> Result<(), String> {
    if out.status.success() {
        Ok(())
    } else {
        Err(output_message(what, out))
    }
}

fn output_message(what: &str, out: &Output) -> String {
    format!(
        "{what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    )
}

fn write_file(path: &Path, text: &str) -> Result<(), String> {
    fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn create_dir(path: &Path, mode: u32) -> Result<(), String> {
    fs::create_dir(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    set_mode(path, mode)
}

fn set_mode(path: &Path, mode: u32) -> Result<(), String> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| format!("cannot chmod {mode:o} {}: {e}", path.display()))
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

fn signal(pid: u32, signal: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill has no memory-safety preconditions; failure (ESRCH) is fine here.
        unsafe {
            libc::kill(pid, signal);
        }
    }
}

/// The fields of `/proc/PID/stat` used here.
struct ProcStat {
    ppid: u32,
    state: char,
    start_time: u64,
}

fn proc_stat(pid: u32) -> Option<ProcStat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "PID (COMM) STATE PPID ..." where COMM may hold spaces and parentheses.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        // Field 22 of stat; `fields` starts at field 3.
        start_time: fields.get(19)?.parse().ok()?,
    })
}

/// Every process below `roots` (transitively), with its start time, read from /proc.
fn descendants_of(roots: &[u32]) -> Vec<(u32, u64)> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut children: HashMap<u32, Vec<(u32, u64)>> = HashMap::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(stat) = proc_stat(pid) {
            children
                .entry(stat.ppid)
                .or_default()
                .push((pid, stat.start_time));
        }
    }
    let mut found = Vec::new();
    let mut queue: Vec<u32> = roots.to_vec();
    while let Some(pid) = queue.pop() {
        for &(child, start_time) in children.get(&pid).map(Vec::as_slice).unwrap_or(&[]) {
            found.push((child, start_time));
            queue.push(child);
        }
    }
    found
}
