//! End-to-end tests of the `ssh.*` actions against real OpenSSH servers on loopback
//! (`opsbook_testkit::sshd`: one sshd per 127.0.0.x, a test user with passwordless sudo, a
//! second user without it). Orders are proven from the remote side with sequence numbers, never
//! with wall-clock time.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use opsbook_testkit::sshd::Fleet;
use serde_json::Value;

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

/// `with:` lines every step needs to reach the fleet.
fn conn(f: &Fleet) -> String {
    format!(
        "      user: {}\n      identity_file: {}\n      known_hosts_file: {}\n      ssh_config: {}\n",
        f.user(),
        f.client_key().display(),
        f.known_hosts().display(),
        f.ssh_config().display()
    )
}

fn run(d: &Dir, runbook: &str, extra: &[&str]) -> (i32, Value, Output) {
    d.write("rb.yaml", runbook);
    let mut args = vec!["run", "rb.yaml", "--report-dir", "out"];
    args.extend_from_slice(extra);
    let o = Command::new(env!("CARGO_BIN_EXE_opsbook"))
        .args(&args)
        .current_dir(&d.0)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run opsbook");
    let report = std::fs::read_to_string(d.path("out/run.json"))
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap_or(Value::Null);
    (o.status.code().unwrap_or(-1), report, o)
}

fn step<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["steps"]
        .as_array()
        .unwrap()
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

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[allow(dead_code)]
fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
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
