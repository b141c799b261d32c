//! End-to-end tests of the `ssh.*` actions against real OpenSSH servers on loopback
//! (`opsbook_testkit::sshd`: one sshd per 127.0.0.x, a test user with passwordless sudo, a
//! second user without it). Orders are proven from the remote side with sequence numbers, never
//! with wall-clock time.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use opsbook_testkit::sshd::{Fleet, SshHost};
use serde_json::Value;

/// The longest any `opsbook run` of these tests may take before it counts as hung.
const RUN_LIMIT: Duration = Duration::from_secs(120);

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("opsbook-ssh-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
    fn path(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn fleet(n: usize) -> Fleet {
    Fleet::start(n).unwrap_or_else(|e| panic!("cannot start the sshd fleet: {e}"))
}

/// A YAML inventory of the fleet: hosts h1..hN in group `web` (odd) and `db` (even).
fn yaml_inventory(f: &Fleet) -> String {
    let mut s =
        String::from("all:\n  vars:\n    greeting: hello\n  children:\n    web:\n      hosts:\n");
    let line = |h: &opsbook_testkit::sshd::SshHost| {
        format!(
            "        {}: {{ansible_host: {}, ansible_port: {}, color: {}}}\n",
            h.name,
            h.address,
            h.port,
            h.name.to_uppercase()
        )
    };
    for (i, h) in f.hosts().iter().enumerate() {
        if i % 2 == 0 {
            s.push_str(&line(h));
        }
    }
    s.push_str("    db:\n      hosts:\n");
    for (i, h) in f.hosts().iter().enumerate() {
        if i % 2 == 1 {
            s.push_str(&line(h));
        }
    }
    s
}

/// A YAML inventory with every host of the fleet right under `all`, each with the extra vars
/// `vars(host)` gives (`key: value, ...`, may be empty).
fn flat_inventory(f: &Fleet, vars: impl Fn(&SshHost) -> String) -> String {
    let mut s = String::from("all:\n  hosts:\n");
    for h in f.hosts() {
        let extra = vars(h);
        let sep = if extra.is_empty() { "" } else { ", " };
        s.push_str(&format!(
            "    {}: {{ansible_host: {}, ansible_port: {}{sep}{extra}}}\n",
            h.name, h.address, h.port
        ));
    }
    s
}

/// `with:` lines every step needs to reach the fleet.
fn conn(f: &Fleet) -> String {
    conn_as(f, f.user(), &f.known_hosts())
}

/// [`conn`] with another login user and known_hosts file.
fn conn_as(f: &Fleet, user: &str, known_hosts: &Path) -> String {
    format!(
        "      user: {}\n      identity_file: {}\n      known_hosts_file: {}\n      ssh_config: {}\n",
        user,
        f.client_key().display(),
        known_hosts.display(),
        f.ssh_config().display()
    )
}

/// A runbook from a template: `@CONN@` lines become [`conn`], `@R@` the fleet's remote dir,
/// then each `(from, to)` pair is replaced.
fn runbook(f: &Fleet, text: &str, pairs: &[(&str, &str)]) -> String {
    let mut s = text
        .replace("@CONN@\n", &conn(f))
        .replace("@R@", &f.remote_dir().display().to_string());
    for (from, to) in pairs {
        s = s.replace(from, to);
    }
    s
}

/// Waits for `child` (at most [`RUN_LIMIT`]; a hung run is killed and fails the test).
fn wait_output(child: Child) -> Output {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(RUN_LIMIT) {
        Ok(o) => o.expect("wait for opsbook"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("opsbook run did not finish within {RUN_LIMIT:?}: it hangs");
        }
    }
}

fn run(d: &Dir, runbook: &str, extra: &[&str]) -> (i32, Value, Output) {
    d.write("rb.yaml", runbook);
    let _ = std::fs::remove_dir_all(d.path("out"));
    let mut args = vec!["run", "rb.yaml", "--report-dir", "out"];
    args.extend_from_slice(extra);
    let child = Command::new(env!("CARGO_BIN_EXE_opsbook"))
        .args(&args)
        .current_dir(&d.0)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run opsbook");
    let o = wait_output(child);
    (o.status.code().unwrap_or(-1), report(d), o)
}

fn report(d: &Dir) -> Value {
    std::fs::read_to_string(d.path("out/run.json"))
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap_or(Value::Null)
}

fn step<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["steps"]
        .as_array()
        .unwrap_or_else(|| panic!("no steps in {report}"))
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("no step {id} in {report}"))
}

fn host<'a>(step: &'a Value, name: &str) -> &'a Value {
    step["result"]["hosts"]
        .as_array()
        .unwrap_or_else(|| panic!("no hosts in {step}"))
        .iter()
        .find(|h| h["host"] == name)
        .unwrap_or_else(|| panic!("no host {name} in {step}"))
}

/// The names of a step's hosts, in result order.
fn host_names(step: &Value) -> Vec<String> {
    step["result"]["hosts"]
        .as_array()
        .unwrap_or_else(|| panic!("no hosts in {step}"))
        .iter()
        .map(|h| h["host"].as_str().unwrap().to_string())
        .collect()
}

/// A host's `error` (empty when it has none).
fn error_of(h: &Value) -> String {
    h["error"].as_str().unwrap_or_default().to_string()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// The `<testcase>` element of junit.xml named `name` (up to its `</testcase>`).
fn junit_case<'a>(junit: &'a str, name: &str) -> &'a str {
    let at = junit
        .find(&format!("name=\"{name}\""))
        .unwrap_or_else(|| panic!("no test case {name} in {junit}"));
    let rest = &junit[at..];
    &rest[..rest.find("</testcase>").unwrap_or(rest.len())]
}

/// A number no other test (or test run) uses, for `sleep` arguments that `pgrep -f` can find.
fn marker() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{}{}{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        nanos % 100_000
    )
}

/// `pgrep -af PATTERN`: the processes whose command line matches, as `PID COMMAND LINE`.
fn pgrep(pattern: &str) -> Vec<String> {
    let o = Command::new("pgrep")
        .args(["-af", pattern])
        .output()
        .expect("run pgrep");
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// `ps` lines (pid, process group, session, command) of `pgrep` results, for messages.
fn ps(found: &[String]) -> String {
    let pids: Vec<&str> = found
        .iter()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    if pids.is_empty() {
        return String::new();
    }
    let o = Command::new("ps")
        .args(["-o", "pid,pgid,sid,user,args", "-p", &pids.join(",")])
        .output()
        .expect("run ps");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Polls `cond` every 20 ms for up to `limit`; whether it became true.
fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The uid of a local user (every host of the fleet is this machine).
fn uid_of(user: &str) -> u32 {
    let o = Command::new("id").args(["-u", user]).output().unwrap();
    String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
}

#[test]
fn runs_a_command_on_three_hosts_from_a_yaml_inventory() {
    let f = fleet(3);
    let d = Dir::new("three");
    d.write("inventory.yaml", &yaml_inventory(&f));
    let remote = f.remote_dir();
    let rb = format!(
        "version: 1\nname: three\ninventory: inventory.yaml\nsteps:\n  - id: hello\n    uses: ssh.run\n    with:\n      hosts: all\n{}      command: \"echo {{{{ host.vars.greeting }}}} {{{{ host.vars.color }}}} $(id -un) | tee {}/hello-{{{{ host.name }}}}\"\n",
        conn(&f),
        remote.display()
    );
    let (code, report, o) = run(&d, &rb, &[]);
    assert_eq!(code, 0, "{}", text(&o));
    let s = step(&report, "hello");
    assert_eq!(s["result"]["totals"]["succeeded"], 3, "{s}");
    for h in f.hosts() {
        let r = host(s, &h.name);
        assert_eq!(r["status"], "succeeded");
        assert_eq!(r["exit_code"], 0);
        let want = format!("hello {} {}\n", h.name.to_uppercase(), f.user());
        assert_eq!(r["stdout"], want.as_str());
        assert_eq!(read(&remote.join(format!("hello-{}", h.name))), want);
    }
    let log = read(&d.path("out/logs/hello.log"));
    assert!(log.contains("h2 | hello H2"), "{log}");
    let junit = read(&d.path("out/junit.xml"));
    assert!(junit.contains("name=\"hello[h1]\""), "{junit}");
    assert!(junit.contains("name=\"hello[h3]\""), "{junit}");
}

/// INI inventory: `[group]` host lines with `ansible_host`/`ansible_port`, `[web:vars]` and
/// `[all:vars]`; patterns `all:!db` and `web:&something`; `--inventory` replaces the runbook's.
#[test]
fn ini_inventory_patterns_and_the_inventory_flag() {
    let f = fleet(3);
    let d = Dir::new("ini");
    let r = f.remote_dir();
    let hs = f.hosts();
    let line = |h: &SshHost, extra: &str| {
        format!(
            "{} ansible_host={} ansible_port={}{extra}\n",
            h.name, h.address, h.port
        )
    };
    d.write(
        "inventory.ini",
        &format!(
            "# the fleet\n[web]\n{}{}\n[db]\n{}\n[something]\nh2\nh3\n\n[web:vars]\ntier=frontend\n\n\
             [all:vars]\ntier=default\nenv=\"stag ing\"\n",
            line(&hs[0], ""),
            line(&hs[1], " color=green"),
            line(&hs[2], ""),
        ),
    );
    let rb = runbook(
        &f,
        r#"version: 1
name: ini
inventory: inventory.ini
steps:
  - id: not_db
    uses: ssh.run
    with:
      hosts: "all:!db"
@CONN@
      command: "echo {{ host.name }} {{ host.vars.tier }} {{ host.vars.env | shquote }} | tee @R@/not_db-{{ host.name }}"
  - id: web_and_something
    uses: ssh.run
    with:
      hosts: "web:&something"
@CONN@
      command: "echo {{ host.vars.color }} | tee @R@/both-{{ host.name }}"
  - id: db
    uses: ssh.run
    with:
      hosts: db
@CONN@
      command: "echo {{ host.vars.tier }} {{ host.vars.env | shquote }}"
"#,
        &[],
    );
    let (code, report, o) = run(&d, &rb, &[]);
    assert_eq!(code, 0, "{}", text(&o));

    let s = step(&report, "not_db");
    assert_eq!(host_names(s), ["h1", "h2"], "{s}");
    for name in ["h1", "h2"] {
        let want = format!("{name} frontend stag ing\n");
        assert_eq!(host(s, name)["stdout"], want.as_str(), "{s}");
        assert_eq!(read(&r.join(format!("not_db-{name}"))), want);
    }
    assert!(
        !r.join("not_db-h3").exists(),
        "h3 is in db and must not run"
    );

    let s = step(&report, "web_and_something");
    assert_eq!(host_names(s), ["h2"], "{s}");
    assert_eq!(host(s, "h2")["stdout"], "green\n");
    assert!(!r.join("both-h1").exists() && !r.join("both-h3").exists());

    // [all:vars] reach a host that has no group vars of its own.
    let s = step(&report, "db");
    assert_eq!(host_names(s), ["h3"], "{s}");
    assert_eq!(host(s, "h3")["stdout"], "default stag ing\n");

    // --inventory replaces the runbook's `inventory:`: `web` is now h3 alone, with its vars.
    d.write(
        "other.ini",
        &format!(
            "[web]\n{}\n[db]\n{}{}",
            line(&hs[2], " tier=from-cli"),
            line(&hs[0], ""),
            line(&hs[1], "")
        ),
    );
    let rb = runbook(
        &f,
        r#"version: 1
name: ini-flag
inventory: inventory.ini
steps:
  - id: web
    uses: ssh.run
    with:
      hosts: web
@CONN@
      command: "echo {{ host.vars.tier }} | tee @R@/cli-{{ host.name }}"
"#,
        &[],
    );
    let (code, report, o) = run(&d, &rb, &["--inventory", "other.ini"]);
    assert_eq!(code, 0, "{}", text(&o));
    let s = step(&report, "web");
    assert_eq!(host_names(s), ["h3"], "{s}");
    assert_eq!(host(s, "h3")["stdout"], "from-cli\n");
    assert_eq!(read(&r.join("cli-h3")), "from-cli\n");
    assert!(!r.join("cli-h1").exists() && !r.join("cli-h2").exists());
}

/// A closed port and a host whose key does not match are `unreachable` with clear errors; an
/// unknown host fails strict checking, is added with `accept-new`, and `off` warns.
#[test]
fn unreachable_hosts_and_host_key_checking() {
    let f = fleet(1);
    let d = Dir::new("hostkeys");
    let h1 = &f.hosts()[0];
    let closed = Fleet::closed_port();
    let wrong = f.wrong_known_hosts().unwrap();
    let empty = d.write("empty_known_hosts", "");
    let empty2 = d.write("other_known_hosts", "");
    let rb = runbook(
        &f,
        r#"version: 1
name: hostkeys
inventory:
  all:
    hosts:
      h1: {ansible_host: @ADDR@, ansible_port: @PORT@}
      dead: {ansible_host: 127.0.0.1, ansible_port: @CLOSED@}
steps:
  - id: mismatch
    uses: ssh.run
    continue_on_error: true
    with:
      hosts: all
      connect_timeout: 3s
@WRONG@
      command: "echo reached"
  - id: strict
    uses: ssh.run
    continue_on_error: true
    with:
      hosts: h1
      connect_timeout: 3s
@EMPTY@
      command: "echo reached"
  - id: accept
    uses: ssh.run
    with:
      hosts: h1
      connect_timeout: 3s
      host_key_checking: accept-new
@EMPTY@
      command: "echo accepted"
  - id: off
    uses: ssh.run
    with:
      hosts: h1
      connect_timeout: 3s
      host_key_checking: "off"
@EMPTY2@
      command: "echo unchecked"
"#,
        &[
            ("@ADDR@", &h1.address),
            ("@PORT@", &h1.port.to_string()),
            ("@CLOSED@", &closed.to_string()),
            ("@WRONG@\n", &conn_as(&f, f.user(), &wrong)),
            ("@EMPTY@\n", &conn_as(&f, f.user(), &empty)),
            ("@EMPTY2@\n", &conn_as(&f, f.user(), &empty2)),
        ],
    );
    let (code, report, o) = run(&d, &rb, &[]);
    assert_eq!(code, 0, "{}", text(&o));

    let s = step(&report, "mismatch");
    assert_eq!(s["status"], "failed", "{s}");
    assert_eq!(
        s["result"]["unreachable_hosts"],
        serde_json::json!(["h1", "dead"])
    );
    let h = host(s, "h1");
    assert_eq!(h["status"], "unreachable", "{h}");
    let e = error_of(h);
    assert!(
        e.to_lowercase().contains("host key verification"),
        "h1's error: {e}"
    );
    assert!(e.contains("ssh-keygen -R"), "h1's error: {e}");
    let h = host(s, "dead");
    assert_eq!(h["status"], "unreachable", "{h}");
    let e = error_of(h);
    assert!(
        e.contains("127.0.0.1") && e.to_lowercase().contains("refused"),
        "dead's error: {e}"
    );
    assert_eq!(h["exit_code"], Value::Null);

    // Not in known_hosts at all: strict refuses, accept-new adds it.
    let s = step(&report, "strict");
    let h = host(s, "h1");
    assert_eq!(h["status"], "unreachable", "{h}");
    let e = error_of(h);
    assert!(
        e.to_lowercase().contains("host key verification")
            && e.contains("strict")
            && e.contains("accept-new"),
        "strict's error: {e}"
    );
    let s = step(&report, "accept");
    assert_eq!(s["status"], "succeeded", "{s}");
    assert_eq!(host(s, "h1")["stdout"], "accepted\n");
    let known = read(&empty);
    let key = h1.host_key_pub.split_whitespace().nth(1).unwrap();
    assert!(
        known.contains(key),
        "accept-new did not add the key: {known}"
    );

    // off: works with an empty known_hosts file, warns on the terminal and in the log, and adds
    // nothing to the file.
    let s = step(&report, "off");
    assert_eq!(s["status"], "succeeded", "{s}");
    assert_eq!(host(s, "h1")["stdout"], "unchecked\n");
    let out = text(&o);
    assert!(
        out.contains("host_key_checking is off"),
        "no warning on the terminal: {out}"
    );
    let log = read(&d.path("out/logs/off.log"));
    assert!(log.contains("host_key_checking is off"), "{log}");
    assert_eq!(read(&empty2), "");
}

/// `ssh.copy` of a nested folder with a mode and of templated `content`, then `ssh.fetch` of the
/// folder back.
#[test]
fn copy_a_folder_and_content_then_fetch_them_back() {
    let f = fleet(2);
    let d = Dir::new("copy");
    let r = f.remote_dir();
    d.write(
        "inventory.yaml",
        &flat_inventory(&f, |h| format!("x: value-of-{}", h.name)),
    );
    d.write("app/a.txt", "alpha\n");
    d.write("app/sub/b.txt", "beta\n");
    d.write("app/sub/deeper/c.txt", "gamma\n");
    let rb = runbook(
        &f,
        r#"version: 1
name: copy
inventory: inventory.yaml
steps:
  - id: copy_dir
    uses: ssh.copy
    with:
      hosts: all
@CONN@
      src: app
      dest: "@R@/{{ host.name }}/app"
      mode: "0600"
  - id: copy_content
    uses: ssh.copy
    with:
      hosts: all
@CONN@
      content: "x is {{ host.vars.x }}\n"
      dest: "@R@/{{ host.name }}/app/conf/x.txt"
  - id: fetch
    uses: ssh.fetch
    with:
      hosts: all
@CONN@
      src: "@R@/{{ host.name }}/app"
      dest: fetched
"#,
        &[],
    );
    let (code, report, o) = run(&d, &rb, &[]);
    assert_eq!(code, 0, "{}", text(&o));
    let uid = uid_of(f.user());

    let s = step(&report, "copy_dir");
    for h in f.hosts() {
        let e = host(s, &h.name);
        assert_eq!(e["status"], "succeeded", "{e}");
        assert_eq!(e["files"], 3, "{e}");
        assert_eq!(e["bytes"], 17, "{e}");
        let app = r.join(&h.name).join("app");
        for (file, want) in [
            ("a.txt", "alpha\n"),
            ("sub/b.txt", "beta\n"),
            ("sub/deeper/c.txt", "gamma\n"),
        ] {
            let p = app.join(file);
            assert_eq!(read(&p), want, "{}", p.display());
            let m = std::fs::metadata(&p).unwrap();
            assert_eq!(
                m.permissions().mode() & 0o7777,
                0o600,
                "mode of {}",
                p.display()
            );
            assert_eq!(m.uid(), uid, "owner of {}", p.display());
        }
        for dir in ["", "sub", "sub/deeper"] {
            let m = std::fs::metadata(app.join(dir)).unwrap();
            assert!(m.is_dir());
            assert_eq!(m.uid(), uid, "owner of {}", app.join(dir).display());
        }
        let x = app.join("conf/x.txt");
        assert_eq!(read(&x), format!("x is value-of-{}\n", h.name));
        assert_eq!(std::fs::metadata(&x).unwrap().uid(), uid);
    }
    let s = step(&report, "copy_content");
    assert_eq!(host(s, "h2")["files"], 1, "{s}");

    let s = step(&report, "fetch");
    for h in f.hosts() {
        let e = host(s, &h.name);
        assert_eq!(e["status"], "succeeded", "{e}");
        assert_eq!(e["files"], 4, "{e}");
        let local = d.path(&format!("fetched/{}", h.name));
        // `dest` is the local folder (relative to where opsbook runs, or absolute).
        let dest = d.0.join(e["dest"].as_str().unwrap_or_default());
        assert_eq!(dest.canonicalize().ok(), local.canonicalize().ok(), "{e}");
        for (file, want) in [
            ("app/a.txt", "alpha\n".to_string()),
            ("app/sub/b.txt", "beta\n".to_string()),
            ("app/sub/deeper/c.txt", "gamma\n".to_string()),
            ("app/conf/x.txt", format!("x is value-of-{}\n", h.name)),
        ] {
            assert_eq!(
                read(&local.join(file)),
                want,
                "fetched {file} of {}",
                h.name
            );
        }
    }
}

/// `ssh.fetch` of a path missing on one host fails that host only, with a message that says what
/// is missing; so does a path whose folder is missing.
#[test]
fn fetch_of_a_missing_path_fails_that_host_clearly() {
    let f = fleet(2);
    let d = Dir::new("fetchmissing");
    let r = f.remote_dir();
    d.write("inventory.yaml", &flat_inventory(&f, |_| String::new()));
    // Only h1 has its file (root's, world-readable).
    std::fs::create_dir_all(r.join("extra")).unwrap();
    std::fs::write(r.join("extra/h1.txt"), "only on h1\n").unwrap();
    std::fs::set_permissions(r.join("extra"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(
        r.join("extra/h1.txt"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let rb = runbook(
        &f,
        r#"version: 1
name: fetch-missing
inventory: inventory.yaml
steps:
  - id: missing_file
    uses: ssh.fetch
    continue_on_error: true
    with:
      hosts: all
@CONN@
      src: "@R@/extra/{{ host.name }}.txt"
      dest: extra
  - id: missing_folder
    uses: ssh.fetch
    continue_on_error: true
    with:
      hosts: h1
@CONN@
      src: "@R@/no-such-dir/file.txt"
      dest: nowhere
"#,
        &[],
    );
    let (code, report, o) = run(&d, &rb, &[]);
    assert_eq!(code, 0, "{}", text(&o));

    let s = step(&report, "missing_file");
    assert_eq!(s["status"], "failed", "{s}");
    assert_eq!(host(s, "h1")["status"], "succeeded", "{s}");
    assert_eq!(read(&d.path("extra/h1/h1.txt")), "only on h1\n");
    let h = host(s, "h2");
    assert_eq!(h["status"], "failed", "{h}");
    let e = error_of(h);
    assert!(
        e.contains("h2.txt") && e.contains("No such file"),
        "h2's error: {e}"
    );
    assert_eq!(s["result"]["failed_hosts"], serde_json::json!(["h2"]));

    let s = step(&report, "missing_folder");
    let h = host(s, "h1");
    assert_eq!(h["status"], "failed", "{h}");
    let e = error_of(h);
    assert!(
        e.contains("no folder") && e.contains("no-such-dir"),
        "the error does not say what is missing: {e:?} (stderr: {:?})",
        h["stderr"]
    );
}

/// Parses the `events` file of the rollout tests: `SEQ HOST KIND` lines, written under `flock`.
fn events(path: &Path) -> Vec<(u32, String, String)> {
    read(path)
        .lines()
        .map(|l| {
            let mut w = l.split_whitespace();
            let n = w.next().unwrap().parse().unwrap();
            (
                n,
                w.next().unwrap().to_string(),
                w.next().unwrap().to_string(),
            )
        })
        .collect()
}

/// The sequence number of `host`'s `kind` event.
fn seq(events: &[(u32, String, String)], host: &str, kind: &str) -> u32 {
    events
        .iter()
        .find(|(_, h, k)| h == host && k == kind)
        .unwrap_or_else(|| panic!("no `{kind}` of {host} in {events:?}"))
        .0
}

/// A shell function `ev HOST KIND` that appends `SEQ HOST KIND` to `@R@/events`, taking the next
/// number from `@R@/counter` under `flock`.
const EV: &str = r#"ev() { flock @R@/lock sh -c 'n=$(( $(cat @R@/counter 2>/dev/null || echo 0) + 1 )); echo $n > @R@/counter; echo "$n $1 $2" >> @R@/events' ev "$1" "$2"; }"#;

/// `canary: 1` then `serial: 2` batches on 5 hosts: each batch ends before the next starts, and
/// the hosts of a batch overlap.
#[test]
fn serial_batches_after_a_canary_run_in_order() {
    let f = fleet(5);
    let d = Dir::new("serial");
    let r = f.remote_dir();
    d.write("inventory.yaml", &flat_inventory(&f, |_| String::new()));
    let rb = runbook(
        &f,
        r#"version: 1
name: serial
inventory: inventory.yaml
steps:
  - id: warm
    uses: ssh.run
    with:
      hosts: all
@CONN@
      command: "true"
  - id: roll
    uses: ssh.run
    with:
      hosts: all
@CONN@
      canary: 1
      serial: 2
      forks: 5
      command: |
        @EV@
        ev {{ host.name }} start
        sleep 0.5
        ev {{ host.name }} end
"#,
        &[("@EV@", EV)],
    );
    // `EV` itself holds `@R@`.
    let rb = rb.replace("@R@", &r.display().to_string());
    let (code, report, o) = run(&d, &rb, &[]);
    assert_eq!(code, 0, "{}", text(&o));
    let ev = events(&r.join("events"));
    assert_eq!(ev.len(), 10, "{ev:?}");
    let start = |h: &str| seq(&ev, h, "start");
    let end = |h: &str| seq(&ev, h, "end");
    // The canary ended before any other host started.
    for h in ["h2", "h3", "h4", "h5"] {
        assert!(
            end("h1") < start(h),
            "canary h1 still ran when {h} started: {ev:?}"
        );
    }
    // Batch (h2, h3) ended before batch (h4, h5) started.
    for a in ["h2", "h3"] {
        for b in ["h4", "h5"] {
            assert!(end(a) < start(b), "{a} still ran when {b} started: {ev:?}");
        }
    }
    // The hosts of a batch ran at the same time.
    for (a, b) in [("h2", "h3"), ("h4", "h5")] {
        assert!(
            start(a).max(start(b)) < end(a).min(end(b)),
            "{a} and {b} did not overlap: {ev:?}"
        );
    }
    let s = step(&report, "roll");
    assert_eq!(s["result"]["batches"], 3, "{s}");
    assert_eq!(s["result"]["stopped"], Value::Null, "{s}");
    assert_eq!(s["result"]["totals"]["succeeded"], 5, "{s}");
    for (h, b) in [("h1", 1), ("h2", 2), ("h3", 2), ("h4", 3), ("h5", 3)] {
        assert_eq!(host(s, h)["batch"], b, "{s}");
    }
    let log = read(&d.path("out/logs/roll.log"));
    assert!(log.contains("batch 1/3 (canary): h1"), "{log}");
    assert!(log.contains("batch 3/3: h4, h5"), "{log}");
}

/// `max_fail_percentage`: 0 stops the rollout at the first failed batch (later hosts skipped, not
/// run); 50 lets it go on; a failing canary stops it whatever the percentage.
#[test]
fn max_fail_percentage_and_a_failing_canary_stop_the_rollout() {
    let f = fleet(4);
    let d = Dir::new("maxfail");
    let r = f.remote_dir();
    d.write("inventory.yaml", &flat_inventory(&f, |_| String::new()));
    let rb = |settings: &str, bad: &str, prefix: &str| {
        runbook(
            &f,
            r#"version: 1
name: maxfail
inventory: inventory.yaml
steps:
  - id: roll
    uses: ssh.run
    with:
      hosts: all
@CONN@
@SETTINGS@
      command: "touch @R@/@PREFIX@-{{ host.name }}; test {{ host.name }} != @BAD@"
"#,
            &[
                ("@SETTINGS@", settings),
                ("@BAD@", bad),
                ("@PREFIX@", prefix),
            ],
        )
    };

    // serial: 1, default max_fail_percentage 0.
    let (code, report, o) = run(&d, &rb("      serial: 1", "h2", "a"), &[]);
    assert_eq!(code, 1, "{}", text(&o));
    let s = step(&report, "roll");
    assert_eq!(s["status"], "failed", "{s}");
    assert_eq!(host(s, "h1")["status"], "succeeded", "{s}");
    assert_eq!(host(s, "h2")["status"], "failed", "{s}");
    assert_eq!(host(s, "h2")["exit_code"], 1, "{s}");
    for h in ["h3", "h4"] {
        assert_eq!(host(s, h)["status"], "skipped", "{s}");
        assert!(!r.join(format!("a-{h}")).exists(), "{h} ran");
    }
    assert!(r.join("a-h1").exists() && r.join("a-h2").exists());
    let stopped = s["result"]["stopped"].as_str().unwrap_or_default();
    assert!(!stopped.is_empty(), "{s}");
    assert_eq!(s["result"]["totals"]["skipped"], 2, "{s}");
    let err = s["error"].as_str().unwrap_or_default();
    assert!(err.contains("h2") && err.contains("not started"), "{err}");
    let junit = read(&d.path("out/junit.xml"));
    for h in ["h3", "h4"] {
        let case = junit_case(&junit, &format!("roll[{h}]"));
        assert!(case.contains("<skipped/>"), "{case}");
    }
    assert!(
        junit_case(&junit, "roll[h2]").contains("<failure"),
        "{junit}"
    );
    assert!(
        !junit_case(&junit, "roll[h1]").contains("<failure"),
        "{junit}"
    );
    assert!(
        !junit_case(&junit, "roll[h1]").contains("<skipped"),
        "{junit}"
    );

    // serial: 2 and max_fail_percentage: 50: one of two failing is not more than 50 %.
    let (code, report, o) = run(
        &d,
        &rb("      serial: 2\n      max_fail_percentage: 50", "h2", "b"),
        &[],
    );
    assert_eq!(code, 0, "{}", text(&o));
    let s = step(&report, "roll");
    assert_eq!(s["status"], "succeeded", "{s}");
    assert_eq!(s["result"]["stopped"], Value::Null, "{s}");
    assert_eq!(s["result"]["batches"], 2, "{s}");
    assert_eq!(
        s["result"]["failed_hosts"],
        serde_json::json!(["h2"]),
        "{s}"
    );
    assert_eq!(
        s["result"]["succeeded_hosts"],
        serde_json::json!(["h1", "h3", "h4"]),
        "{s}"
    );
    for h in ["h1", "h2", "h3", "h4"] {
        assert!(r.join(format!("b-{h}")).exists(), "{h} did not run");
    }

    // A failing canary stops the rollout even when any percentage may fail.
    let (code, report, o) = run(
        &d,
        &rb("      canary: 1\n      max_fail_percentage: 100", "h1", "c"),
        &[],
    );
    assert_eq!(code, 1, "{}", text(&o));
    let s = step(&report, "roll");
    assert_eq!(s["status"], "failed", "{s}");
    assert_eq!(host(s, "h1")["status"], "failed", "{s}");
    for h in ["h2", "h3", "h4"] {
        assert_eq!(host(s, h)["status"], "skipped", "{s}");
        assert!(
            !r.join(format!("c-{h}")).exists(),
            "{h} ran after the canary failed"
        );
    }
    let stopped = s["result"]["stopped"].as_str().unwrap_or_default();
    assert!(stopped.contains("canary"), "{s}");
}

/// `become`: root by default, `become_user`, and a clear error when sudo wants a password.
#[test]
fn become_runs_through_sudo_and_explains_a_password_prompt() {
    let f = fleet(1);
    let d = Dir::new("become");
    d.write("inventory.yaml", &flat_inventory(&f, |_| String::new()));
    let rb = runbook(
        &f,
        r#"version: 1
name: become
inventory: inventory.yaml
steps:
  - id: root
    uses: ssh.run
    with:
      hosts: all
@CONN@
      become: true
      command: "id -u; id -un"
  - id: as_user
    uses: ssh.run
    with:
      hosts: all
@CONN@
      become: true
      become_user: @USER@
      command: "id -un; echo \"$SUDO_USER\""
  - id: as_other
    uses: ssh.run
    with:
      hosts: all
@CONN@
      become: true
      become_user: @NOSUDO@
      command: "id -un"
  - id: no_sudo
    uses: ssh.run
    with:
      hosts: all
@NOSUDO_CONN@
      become: true
      command: "id -u"
"#,
        &[
            ("@USER@", f.user()),
            ("@NOSUDO@", f.user_without_sudo()),
            (
                "@NOSUDO_CONN@\n",
                &conn_as(&f, f.user_without_sudo(), &f.known_hosts()),
            ),
        ],
    );
    let (code, report, o) = run(&d, &rb, &[]);
    assert_eq!(code, 1, "{}", text(&o));
    assert_eq!(host(step(&report, "root"), "h1")["stdout"], "0\nroot\n");
    let s = step(&report, "as_user");
    assert_eq!(
        host(s, "h1")["stdout"],
        format!("{0}\n{0}\n", f.user()).as_str(),
        "{s}"
    );
    let s = step(&report, "as_other");
    assert_eq!(
        host(s, "h1")["stdout"],
        format!("{}\n", f.user_without_sudo()).as_str(),
        "{s}"
    );
    let s = step(&report, "no_sudo");
    assert_eq!(s["status"], "failed", "{s}");
    let h = host(s, "h1");
    assert_eq!(h["status"], "failed", "{h}");
    for e in [
        error_of(h),
        s["error"].as_str().unwrap_or_default().to_string(),
    ] {
        assert!(e.contains("sudo"), "{e}");
        assert!(e.contains("password") && e.contains("NOPASSWD"), "{e}");
    }
}

/// `script` (inline and from a file) with `args`, `args` as an argv without injection, `env`,
/// `cwd`, `expect_exit`, and a per-host `timeout` that stops the remote command.
#[test]
fn scripts_args_env_cwd_expect_exit_and_timeout() {
    let f = fleet(1);
    let d = Dir::new("script");
    let r = f.remote_dir();
    let mark = marker();
    d.write("inventory.yaml", &flat_inventory(&f, |_| String::new()));
    d.write(
        "local.sh",
        "#!/bin/bash\necho \"bash=${BASH_VERSION:+yes} arg=$1\"\n",
    );
    let rb = runbook(
        &f,
        r#"version: 1
name: script
inventory: inventory.yaml
steps:
  - id: inline
    uses: ssh.run
    with:
      hosts: all
@CONN@
      script: |
        #!/bin/sh
        printf '[%s]\n' "$@"
        echo "script=$0"
      args: ["a b", "$HOME"]
  - id: file
    uses: ssh.run
    with:
      hosts: all
@CONN@
      script: {file: local.sh}
      args: [one]
  - id: argv
    uses: ssh.run
    with:
      hosts: all
@CONN@
      args: [printf, "%s\n", "x; rm -rf /", "$(touch @R@/injected)", "`touch @R@/injected2`", "a'b", "*"]
  - id: env_cwd
    uses: ssh.run
    with:
      hosts: all
@CONN@
      env: {GREETING: "hello world", TRICKY: "it's $HOME; `id`"}
      cwd: "@R@"
      command: 'printf "%s|%s|%s\n" "$GREETING" "$TRICKY" "$(pwd)"'
  - id: exit3
    uses: ssh.run
    with:
      hosts: all
@CONN@
      expect_exit: [3]
      command: "echo three; exit 3"
  - id: slow
    uses: ssh.run
    with:
      hosts: all
@CONN@
      timeout: 1s
      command: "sleep 30.@MARK@; echo never"
"#,
        &[("@MARK@", &mark)],
    );
    let (code, report, o) = run(&d, &rb, &[]);
    assert_eq!(code, 1, "{}", text(&o));
    let rs = r.display().to_string();

    let out = host(step(&report, "inline"), "h1")["stdout"]
        .as_str()
        .unwrap()
        .to_string();
    let (args, script) = out.split_once("script=").unwrap_or((&out, ""));
    assert_eq!(args, "[a b]\n[$HOME]\n", "{out}");
    let script = script.trim();
    assert!(script.starts_with("/tmp/opsbook."), "{out}");
    assert!(
        !Path::new(script).exists(),
        "the uploaded script {script} was not removed"
    );

    assert_eq!(
        host(step(&report, "file"), "h1")["stdout"],
        "bash=yes arg=one\n"
    );

    let s = step(&report, "argv");
    assert_eq!(
        host(s, "h1")["stdout"],
        format!("x; rm -rf /\n$(touch {rs}/injected)\n`touch {rs}/injected2`\na'b\n*\n").as_str(),
        "{s}"
    );
    assert!(!r.join("injected").exists() && !r.join("injected2").exists());

    assert_eq!(
        host(step(&report, "env_cwd"), "h1")["stdout"],
        format!("hello world|it's $HOME; `id`|{rs}\n").as_str()
    );

    let s = step(&report, "exit3");
    assert_eq!(s["status"], "succeeded", "{s}");
    assert_eq!(host(s, "h1")["status"], "succeeded", "{s}");
    assert_eq!(host(s, "h1")["exit_code"], 3, "{s}");
    assert_eq!(host(s, "h1")["stdout"], "three\n", "{s}");

    let s = step(&report, "slow");
    assert_eq!(s["status"], "failed", "{s}");
    let h = host(s, "h1");
    assert_eq!(h["status"], "failed", "{h}");
    assert!(error_of(h).contains("timed out"), "{h}");
    assert_eq!(h["stdout"], "", "{h}");
    let pattern = format!("30\\.{mark}");
    let gone = wait_until(Duration::from_secs(5), || pgrep(&pattern).is_empty());
    assert!(
        gone,
        "the timed-out remote command is still running:\n{}",
        ps(&pgrep(&pattern))
    );
}

/// `--dry-run` connects (reachability) but runs nothing; with `become` it asks sudo.
#[test]
fn dry_run_checks_reachability_and_sudo_but_runs_nothing() {
    let f = fleet(2);
    let d = Dir::new("dry");
    let r = f.remote_dir();
    let mut inv = flat_inventory(&f, |_| String::new());
    inv.push_str(&format!(
        "    dead: {{ansible_host: 127.0.0.1, ansible_port: {}}}\n",
        Fleet::closed_port()
    ));
    d.write("inventory.yaml", &inv);
    let rb = runbook(
        &f,
        r#"version: 1
name: dry
inventory: inventory.yaml
steps:
  - id: touch
    uses: ssh.run
    with:
      hosts: all
      connect_timeout: 3s
@CONN@
      command: "touch @R@/dry-{{ host.name }}"
"#,
        &[],
    );
    let (code, report, o) = run(&d, &rb, &["--dry-run"]);
    assert_eq!(code, 1, "the unreachable host fails the step: {}", text(&o));
    assert_eq!(report["dry_run"], true);
    let s = step(&report, "touch");
    for h in ["h1", "h2"] {
        let e = host(s, h);
        assert_eq!(e["status"], "succeeded", "{e}");
        let want = format!("touch {}/dry-{h}", r.display());
        assert_eq!(e["would_run"], want.as_str(), "{e}");
        assert!(
            !r.join(format!("dry-{h}")).exists(),
            "the dry run ran on {h}"
        );
    }
    assert_eq!(host(s, "dead")["status"], "unreachable", "{s}");
    assert_eq!(
        s["result"]["unreachable_hosts"],
        serde_json::json!(["dead"])
    );

    let rb = runbook(
        &f,
        r#"version: 1
name: dry-sudo
inventory: inventory.yaml
steps:
  - id: can
    uses: ssh.run
    with:
      hosts: h1
@CONN@
      become: true
      command: "touch @R@/dry-root"
  - id: cannot
    uses: ssh.run
    with:
      hosts: h1
@NOSUDO_CONN@
      become: true
      command: "touch @R@/dry-nosudo"
"#,
        &[(
            "@NOSUDO_CONN@\n",
            &conn_as(&f, f.user_without_sudo(), &f.known_hosts()),
        )],
    );
    let (code, report, o) = run(&d, &rb, &["--dry-run"]);
    assert_eq!(code, 1, "{}", text(&o));
    let s = step(&report, "can");
    assert_eq!(host(s, "h1")["status"], "succeeded", "{s}");
    assert_eq!(host(s, "h1")["sudo"], "ok", "{s}");
    let s = step(&report, "cannot");
    assert_eq!(s["status"], "failed", "{s}");
    let h = host(s, "h1");
    assert_eq!(h["status"], "failed", "{h}");
    let e = error_of(h);
    assert!(
        e.contains("sudo") && e.contains("password") && e.contains("NOPASSWD"),
        "{e}"
    );
    assert!(!r.join("dry-root").exists() && !r.join("dry-nosudo").exists());
}

/// The `ssh` master processes of runs against `port` (the control folders are `opsbook-ssh-*`).
fn masters(port: u16) -> Vec<String> {
    pgrep("opsbook-ssh-")
        .into_iter()
        .filter(|l| l.contains(" -M ") && l.contains(&format!(" -p {port} ")))
        .collect()
}

/// Ctrl-C while hosts run: exit 130, hosts `cancelled` ("cut short"), the remote commands and
/// the run's ssh masters are gone.
#[test]
fn ctrl_c_cancels_the_remote_commands_and_closes_the_masters() {
    let f = fleet(2);
    let d = Dir::new("cancel");
    let mark = marker();
    let port = f.hosts()[0].port;
    d.write("inventory.yaml", &flat_inventory(&f, |_| String::new()));
    d.write(
        "rb.yaml",
        &runbook(
            &f,
            r#"version: 1
name: cancel
inventory: inventory.yaml
steps:
  - id: long
    uses: ssh.run
    with:
      hosts: all
@CONN@
      command: "sleep 60.@MARK@; echo never"
"#,
            &[("@MARK@", &mark)],
        ),
    );
    let child = Command::new(env!("CARGO_BIN_EXE_opsbook"))
        .args(["run", "rb.yaml", "--report-dir", "out"])
        .current_dir(&d.0)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let sleeps = format!("^sleep 60\\.{mark}");
    let started = wait_until(Duration::from_secs(30), || pgrep(&sleeps).len() == 2);
    let running = masters(port);
    let control_dirs: Vec<String> = running
        .iter()
        .filter_map(|l| {
            let at = l.find("/opsbook-ssh-")?;
            let start = l[..at].rfind(' ')? + 1;
            // `/tmp/opsbook-ssh-XXXX/`: the run's folder of control sockets.
            let end = at + 1 + l[at + 1..].find('/')?;
            Some(l[start..end].to_string())
        })
        .collect();
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let o = wait_output(child);
    assert!(started, "the remote sleeps never ran: {}", text(&o));
    assert_eq!(running.len(), 2, "one master per host: {running:?}");
    assert!(!control_dirs.is_empty(), "{running:?}");
    assert_eq!(o.status.code(), Some(130), "{}", text(&o));

    // Everything below is checked, then every problem found is reported at once.
    let mut problems: Vec<String> = Vec::new();
    let report = report(&d);
    let s = step(&report, "long");
    if s["status"] != "cancelled" {
        problems.push(format!("the step is not `cancelled`: {s}"));
    }
    for h in ["h1", "h2"] {
        let e = host(s, h);
        if e["status"] != "cancelled" || !error_of(e).contains("cut short") {
            problems.push(format!("{h} is not `cancelled` and \"cut short\": {e}"));
        }
    }
    let err = s["error"].as_str().unwrap_or_default();
    if !(err.contains("cut short") && err.contains("h1") && err.contains("h2")) {
        problems.push(format!(
            "the step's error does not say which hosts were cut short: {err:?}"
        ));
    }
    // The remote commands and the run's ssh masters are gone.
    let pattern = format!("60\\.{mark}");
    if !wait_until(Duration::from_secs(5), || pgrep(&pattern).is_empty()) {
        problems.push(format!(
            "the remote commands survived Ctrl-C: {}",
            ps(&pgrep(&pattern))
        ));
    }
    for dir in &control_dirs {
        if !wait_until(Duration::from_secs(3), || pgrep(dir).is_empty()) {
            problems.push(format!("ssh masters outlived the run: {:?}", pgrep(dir)));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Two steps on the same hosts share one connection per host: both see the same client port.
#[test]
fn one_connection_per_host_per_run() {
    let f = fleet(2);
    let d = Dir::new("reuse");
    d.write("inventory.yaml", &flat_inventory(&f, |_| String::new()));
    let rb = runbook(
        &f,
        r#"version: 1
name: reuse
inventory: inventory.yaml
steps:
  - id: first
    uses: ssh.run
    with:
      hosts: all
@CONN@
      command: "echo $SSH_CLIENT"
  - id: second
    uses: ssh.run
    with:
      hosts: all
@CONN@
      command: "echo $SSH_CLIENT"
"#,
        &[],
    );
    let (code, report, o) = run(&d, &rb, &[]);
    assert_eq!(code, 0, "{}", text(&o));
    for h in f.hosts() {
        let a = host(step(&report, "first"), &h.name)["stdout"]
            .as_str()
            .unwrap()
            .to_string();
        let b = host(step(&report, "second"), &h.name)["stdout"]
            .as_str()
            .unwrap()
            .to_string();
        let fields: Vec<&str> = a.split_whitespace().collect();
        assert_eq!(
            fields.len(),
            3,
            "SSH_CLIENT is `ip port server-port`: {a:?}"
        );
        assert_eq!(fields[2], h.port.to_string(), "{a:?}");
        assert_eq!(a, b, "{} was connected to twice", h.name);
    }
}

/// The shipped `runbooks/rolling-restart.yaml` against five hosts whose "service" is a state file
/// per host: only the unhealthy hosts are restarted, one batch at a time; a host that does not
/// come back stops the rollout. The inventory (INI) carries the whole connection the way Ansible
/// inventories do: `ansible_user`, `ansible_ssh_private_key_file`, `ansible_ssh_common_args`.
#[test]
fn rolling_restart_runbook_restarts_only_unhealthy_hosts_in_batches() {
    let f = fleet(5);
    let d = Dir::new("rolling");
    let r = f.remote_dir();
    let mut inv = String::from("[web]\n");
    for h in f.hosts() {
        inv.push_str(&format!(
            "{} ansible_host={} ansible_port={}\n",
            h.name, h.address, h.port
        ));
    }
    inv.push_str(&format!(
        "[all:vars]\nansible_user={}\nansible_ssh_private_key_file={}\nansible_ssh_common_args='-F {}'\n",
        f.user(),
        f.client_key().display(),
        f.ssh_config().display()
    ));
    d.write("inv.ini", &inv);
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("runbooks/rolling-restart.yaml"),
    )
    .unwrap();
    let state = r.join("state");
    std::fs::create_dir_all(&state).unwrap();
    // The "service" is up on a host when `state/up-<host>` exists; a restart logs the host in
    // `restarts` (with a sequence number) and brings it up, except on hosts listed in `broken`.
    let check = format!("test -e {}/up-$HOST", state.display());
    let restart = format!(
        "echo \"$HOST\" >> {s}/restarts; grep -qx \"$HOST\" {s}/broken 2>/dev/null || touch {s}/up-$HOST",
        s = state.display()
    );
    let params = |batch: &str| -> Vec<String> {
        [
            "-i".to_string(),
            "inv.ini".into(),
            "-p".into(),
            "hosts=web".into(),
            "-p".into(),
            "become=false".into(),
            "-p".into(),
            "wait_seconds=2".into(),
            "-p".into(),
            format!("batch={batch}"),
            "-p".into(),
            format!("check={check}"),
            "-p".into(),
            format!("restart={restart}"),
        ]
        .to_vec()
    };
    let set_up = |up: &[&str], broken: &[&str]| {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::remove_dir_all(&state);
        std::fs::create_dir_all(&state).unwrap();
        // The test user writes here.
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
        for h in up {
            std::fs::write(state.join(format!("up-{h}")), "").unwrap();
        }
        std::fs::write(state.join("broken"), broken.join("\n") + "\n").unwrap();
    };

    // h2 and h4 are down: they alone are restarted, one at a time, and everything ends healthy.
    set_up(&["h1", "h3", "h5"], &[]);
    let args = params("1");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, report, o) = run(&d, &shipped, &args);
    assert_eq!(code, 0, "{}", text(&o));
    let s = step(&report, "check");
    assert_eq!(
        s["outputs"]["unhealthy"],
        serde_json::json!(["h2", "h4"]),
        "{s}"
    );
    let s = step(&report, "restart");
    assert_eq!(s["result"]["batches"], 2, "{s}");
    assert_eq!(host(s, "h2")["batch"], 1);
    assert_eq!(host(s, "h4")["batch"], 2);
    assert_eq!(read(&state.join("restarts")), "h2\nh4\n");
    assert_eq!(step(&report, "verify")["status"], "succeeded");
    assert_eq!(
        report["outputs"]["restarted"],
        serde_json::json!(["h2", "h4"])
    );

    // h1, h3 and h5 are down and h3 does not come back: h1 is restarted, h3 fails, the rollout
    // stops before h5, and the final check fails the run.
    set_up(&["h2", "h4"], &["h3"]);
    let (code, report, o) = run(&d, &shipped, &args);
    assert_eq!(code, 1, "{}", text(&o));
    let s = step(&report, "restart");
    assert_eq!(s["status"], "failed", "{s}");
    assert_eq!(host(s, "h1")["status"], "succeeded");
    let h3 = host(s, "h3");
    assert_eq!(h3["status"], "failed");
    assert!(error_of(h3).contains("still failing its check"), "{h3}");
    assert_eq!(host(s, "h5")["status"], "skipped");
    assert!(s["result"]["stopped"].is_string(), "{s}");
    assert_eq!(read(&state.join("restarts")), "h1\nh3\n");
    let v = step(&report, "verify");
    assert_eq!(v["status"], "failed");
    assert_eq!(v["result"]["failed_hosts"], serde_json::json!(["h3", "h5"]));
}

/// ProxyJump: h2 is reached through h1. The proof that the jump is really in the path: with a
/// jump host that does not answer, h2 (reachable directly) becomes unreachable.
#[test]
fn jump_hosts_are_in_the_path() {
    let f = fleet(2);
    let d = Dir::new("jump");
    let h1 = &f.hosts()[0];
    let h2 = &f.hosts()[1];
    let via = |jump: &str| {
        runbook(
            &f,
            &format!(
                "version: 1\nname: jump\nsteps:\n  - id: hop\n    uses: ssh.run\n    with:\n      hosts: {}\n      port: {}\n      connect_timeout: 3s\n@CONN@\n      jump_hosts: [\"{jump}\"]\n      command: echo reached\n",
                h2.address, h2.port
            ),
            &[],
        )
    };
    let good = format!("{}@{}:{}", f.user(), h1.address, h1.port);
    let (code, report, o) = run(&d, &via(&good), &[]);
    assert_eq!(code, 0, "{}", text(&o));
    assert_eq!(
        host(step(&report, "hop"), &h2.address)["stdout"],
        "reached\n"
    );
    let dead = format!("{}@127.0.0.1:{}", f.user(), Fleet::closed_port());
    let (code, report, o) = run(&d, &via(&dead), &[]);
    assert_eq!(code, 1, "{}", text(&o));
    let h = host(step(&report, "hop"), &h2.address);
    assert_eq!(h["status"], "unreachable", "{h}");
}

/// Per-host templates in every field but the step-wide ones: the login user, a typed port and
/// an inline script come from host vars; `forks` reading `host` is refused clearly.
#[test]
fn host_templates_reach_connection_fields_and_scripts() {
    let f = fleet(2);
    let d = Dir::new("hostvars");
    d.write(
        "inventory.yaml",
        &flat_inventory(&f, |h| format!("login: {}, sshport: {}", f.user(), h.port))
            .replace("ansible_port", "unused_port"),
    );
    let rb = runbook(
        &f,
        r#"version: 1
name: hostvars
inventory: inventory.yaml
steps:
  - id: templated
    uses: ssh.run
    with:
      hosts: all
      user: "{{ host.vars.login }}"
      port: "{{ host.vars.sshport }}"
      identity_file: @KEY@
      known_hosts_file: @KH@
      ssh_config: @CFG@
      script: |
        #!/bin/sh
        echo "{{ host.name }} as $(id -un)"
  - id: bad
    uses: ssh.run
    needs: templated
    with:
      hosts: all
      forks: "{{ host.vars.sshport }}"
@CONN@
      command: "true"
"#,
        &[
            ("@KEY@", &f.client_key().display().to_string()),
            ("@KH@", &f.known_hosts().display().to_string()),
            ("@CFG@", &f.ssh_config().display().to_string()),
        ],
    );
    let (code, report, o) = run(&d, &rb, &[]);
    assert_eq!(code, 1, "{}", text(&o));
    let s = step(&report, "templated");
    assert_eq!(s["status"], "succeeded", "{s}");
    for h in ["h1", "h2"] {
        let want = format!("{h} as {}\n", f.user());
        assert_eq!(host(s, h)["stdout"], want.as_str(), "{s}");
    }
    let s = step(&report, "bad");
    let e = s["error"].as_str().unwrap_or_default();
    assert!(e.contains("`forks` cannot read `host`"), "{s}");
}

/// What commands leave behind and how they end: a background process holding stdout does not
/// hang the step; a missing command is exit 127; a command killed by a signal says so; secrets
/// in `env` are not in the host's process list.
#[test]
fn background_children_exit_codes_signals_and_secrets_in_the_process_list() {
    let f = fleet(1);
    let d = Dir::new("exits");
    let mark = marker();
    let rb = runbook(
        &f,
        r#"version: 1
name: exits
steps:
  - id: daemon
    uses: ssh.run
    with:
      hosts: @H1@
      port: @PORT@
@CONN@
      command: "sleep 300.@MARK@ & echo started"
  - id: missing
    uses: ssh.run
    with:
      hosts: @H1@
      port: @PORT@
@CONN@
      command: no-such-command-@MARK@
      expect_exit: [127]
  - id: killed
    uses: ssh.run
    continue_on_error: true
    with:
      hosts: @H1@
      port: @PORT@
@CONN@
      command: "kill -KILL $$"
  - id: argv
    uses: ssh.run
    with:
      hosts: @H1@
      port: @PORT@
@CONN@
      env: {TOKEN: "tok-@MARK@-value"}
      command: "tr '\\0' ' ' < /proc/$$/cmdline; echo; test \"$TOKEN\" = tok-@MARK@-value && echo has-token"
"#,
        &[
            ("@H1@", &f.hosts()[0].address),
            ("@PORT@", &f.hosts()[0].port.to_string()),
            ("@MARK@", &mark),
        ],
    );
    let (code, report, o) = run(&d, &rb, &[]);
    // The leftover daemon: gone with the test.
    let _ = Command::new("pkill")
        .args(["-f", &format!("sleep 300.{mark}")])
        .status();
    assert_eq!(code, 0, "{}", text(&o));
    let h = host(step(&report, "daemon"), &f.hosts()[0].address);
    assert_eq!(h["status"], "succeeded", "{h}");
    assert_eq!(h["stdout"], "started\n");
    let h = host(step(&report, "missing"), &f.hosts()[0].address);
    assert_eq!(h["exit_code"], 127, "{h}");
    assert_eq!(h["status"], "succeeded", "{h}");
    let h = host(step(&report, "killed"), &f.hosts()[0].address);
    assert_eq!(h["status"], "failed", "{h}");
    assert!(error_of(h).contains("killed by a signal"), "{h}");
    let h = host(step(&report, "argv"), &f.hosts()[0].address);
    let out = h["stdout"].as_str().unwrap_or_default();
    assert!(out.contains("has-token"), "{h}");
    assert!(
        !out.lines().next().unwrap_or_default().contains("tok-"),
        "{h}"
    );
    assert!(out.starts_with("/bin/sh -s"), "{h}");
}

/// A remote path is data: `$(…)`, backticks and quotes in `ssh.fetch`'s `src` run nothing on
/// the host, also on the error path (a missing folder).
#[test]
fn fetch_paths_cannot_inject_commands() {
    let f = fleet(1);
    let d = Dir::new("fetch-inject");
    let r = f.remote_dir();
    let rb = runbook(
        &f,
        r#"version: 1
name: inject
steps:
  - id: f1
    uses: ssh.fetch
    continue_on_error: true
    with:
      hosts: @H1@
      port: @PORT@
@CONN@
      src: "@R@/$(touch @R@/pwned1)/x"
      dest: got
  - id: f2
    uses: ssh.fetch
    continue_on_error: true
    with:
      hosts: @H1@
      port: @PORT@
@CONN@
      src: "@R@/a\"`touch @R@/pwned2`'\"/x"
      dest: got
"#,
        &[
            ("@H1@", &f.hosts()[0].address),
            ("@PORT@", &f.hosts()[0].port.to_string()),
        ],
    );
    let (code, report, o) = run(&d, &rb, &[]);
    assert_eq!(code, 0, "{}", text(&o));
    for id in ["f1", "f2"] {
        let h = host(step(&report, id), &f.hosts()[0].address);
        assert_eq!(h["status"], "failed", "{h}");
        assert!(error_of(h).contains("no folder"), "{h}");
    }
    assert!(
        !r.join("pwned1").exists(),
        "command substitution ran on the host"
    );
    assert!(!r.join("pwned2").exists(), "backticks ran on the host");
}

/// A host's archive is not trusted: links are not created locally and modes lose
/// setuid/setgid and group/other write; an existing remote folder keeps its mode on copy.
#[test]
fn fetch_trusts_no_links_or_modes_and_copy_keeps_existing_folders() {
    let f = fleet(1);
    let d = Dir::new("fetch-trust");
    let r = f.remote_dir();
    let src = r.join("evil");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("suid"), "x").unwrap();
    std::fs::set_permissions(src.join("suid"), std::fs::Permissions::from_mode(0o4777)).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", src.join("link")).unwrap();
    // An existing folder on the host, 0750; the local copy of it is 0777.
    let keep = r.join("target/keep");
    std::fs::create_dir_all(&keep).unwrap();
    std::fs::set_permissions(r.join("target"), std::fs::Permissions::from_mode(0o777)).unwrap();
    Command::new("chown")
        .args([f.user(), &keep.display().to_string()])
        .status()
        .unwrap();
    std::fs::set_permissions(&keep, std::fs::Permissions::from_mode(0o750)).unwrap();
    d.write("local/keep/file.txt", "hello\n");
    std::fs::set_permissions(d.path("local/keep"), std::fs::Permissions::from_mode(0o777)).unwrap();
    let rb = runbook(
        &f,
        r#"version: 1
name: trust
steps:
  - id: get
    uses: ssh.fetch
    with:
      hosts: @H1@
      port: @PORT@
@CONN@
      src: "@R@/evil"
      dest: got
  - id: put
    uses: ssh.copy
    with:
      hosts: @H1@
      port: @PORT@
@CONN@
      src: local
      dest: "@R@/target"
"#,
        &[
            ("@H1@", &f.hosts()[0].address),
            ("@PORT@", &f.hosts()[0].port.to_string()),
        ],
    );
    let (code, _report, o) = run(&d, &rb, &[]);
    assert_eq!(code, 0, "{}", text(&o));
    let got = d.path(&format!("got/{}/evil", f.hosts()[0].address));
    let mode = std::fs::metadata(got.join("suid")).unwrap().mode() & 0o7777;
    assert_eq!(mode, 0o755, "setuid or group/other write kept: {mode:o}");
    assert!(
        std::fs::symlink_metadata(got.join("link")).is_err(),
        "a link from the host was created locally"
    );
    assert_eq!(read(&keep.join("file.txt")), "hello\n");
    let mode = std::fs::metadata(&keep).unwrap().mode() & 0o7777;
    assert_eq!(mode, 0o750, "the existing folder's mode changed: {mode:o}");
}

/// JUnit shows a step's own failure even when every host succeeded (an output that cannot be
/// computed after the hosts ran).
#[test]
fn junit_reports_a_step_failure_after_its_hosts_succeeded() {
    let f = fleet(1);
    let d = Dir::new("junit-step");
    let rb = runbook(
        &f,
        r#"version: 1
name: junit
steps:
  - id: ok_hosts
    uses: ssh.run
    with:
      hosts: @H1@
      port: @PORT@
@CONN@
      command: "true"
    outputs:
      broken: "{{ result.hosts[0].nope.deeper }}"
"#,
        &[
            ("@H1@", &f.hosts()[0].address),
            ("@PORT@", &f.hosts()[0].port.to_string()),
        ],
    );
    let (code, _report, o) = run(&d, &rb, &[]);
    assert_eq!(code, 1, "{}", text(&o));
    let junit = read(&d.path("out/junit.xml"));
    let case = junit_case(&junit, &format!("ok_hosts[{}]", f.hosts()[0].address));
    assert!(!case.contains("<failure"), "{case}");
    let case = junit_case(&junit, "ok_hosts");
    assert!(case.contains("<failure"), "{junit}");
}

/// ssh-agent: with no identity file anywhere, the key held by the agent of `SSH_AUTH_SOCK` logs
/// in; without the agent the host is unreachable with an authentication message.
#[test]
fn ssh_agent_keys_log_in() {
    let f = fleet(1);
    let d = Dir::new("agent");
    let sock = d.path("agent.sock");
    let agent = Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&sock)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start ssh-agent");
    struct Kill(Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _agent = Kill(agent);
    assert!(wait_until(Duration::from_secs(10), || sock.exists()));
    let added = Command::new("ssh-add")
        .arg(f.client_key())
        .env("SSH_AUTH_SOCK", &sock)
        .output()
        .unwrap();
    assert!(added.status.success(), "{}", text(&added));
    // A client config without any IdentityFile.
    d.write(
        "ssh_config",
        &format!(
            "Host *\n  User {}\n  UserKnownHostsFile {}\n  GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n",
            f.user(),
            f.known_hosts().display()
        ),
    );
    let h = &f.hosts()[0];
    let rb = format!(
        "version: 1\nname: agent\nsteps:\n  - id: who\n    uses: ssh.run\n    with:\n      hosts: {}\n      port: {}\n      connect_timeout: 3s\n      ssh_config: ssh_config\n      command: id -un\n",
        h.address, h.port
    );
    d.write("rb.yaml", &rb);
    let go = |agent: Option<&Path>| {
        let _ = std::fs::remove_dir_all(d.path("out"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_opsbook"));
        cmd.args(["run", "rb.yaml", "--report-dir", "out"])
            .current_dir(&d.0)
            .env_remove("SSH_AUTH_SOCK")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(a) = agent {
            cmd.env("SSH_AUTH_SOCK", a);
        }
        let o = wait_output(cmd.spawn().unwrap());
        (o.status.code().unwrap_or(-1), report(&d), o)
    };
    let (code, rep, o) = go(Some(&sock));
    assert_eq!(code, 0, "{}", text(&o));
    let who = format!("{}\n", f.user());
    assert_eq!(host(step(&rep, "who"), &h.address)["stdout"], who.as_str());
    let (code, rep, o) = go(None);
    assert_eq!(code, 1, "{}", text(&o));
    let r = host(step(&rep, "who"), &h.address);
    assert_eq!(r["status"], "unreachable", "{r}");
    assert!(error_of(r).contains("authentication failed"), "{r}");
}
