//! SSH fan-out benchmark: 3 commands on 50 loopback hosts (one real sshd per 127.0.0.x), with
//! `forks: 50`, through the real `opsbook` binary; and, when `ansible-playbook` is on PATH, the
//! same play under Ansible (forks=50, pipelining, ControlPersist) for a side-by-side ratio.
//!
//! Run: `cargo bench --bench ssh_fleet` (needs root: it starts sshd and uses the test users of
//! `opsbook_testkit::sshd`). `HOSTS=N` changes the number of hosts; `ROUNDS=N` the repetitions.
//! The login user's shell is /bin/sh with an empty home, so no shell start-up files are timed.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use opsbook_testkit::sshd::Fleet;

const COMMANDS: [&str; 3] = ["uptime", "hostname", "df -P /"];

fn main() {
    let hosts: usize = env_num("HOSTS", 50);
    let rounds: usize = env_num("ROUNDS", 3);
    let fleet = match Fleet::start(hosts) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("ssh_fleet: cannot start {hosts} sshd servers: {e}");
            std::process::exit(1);
        }
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    let mut inventory = String::from("[fleet]\n");
    for h in fleet.hosts() {
        inventory.push_str(&format!(
            "{} ansible_host={} ansible_port={}\n",
            h.name, h.address, h.port
        ));
    }
    std::fs::write(d.join("inventory.ini"), &inventory).expect("inventory");

    let host_commands = hosts * COMMANDS.len();
    // OpenSSH's default key exchange (sntrup761x25519 on OpenSSH 9.2) costs tens of ms of
    // client CPU per connection; the classical curve25519 exchange a few. Both are measured.
    let fast_kex = "curve25519-sha256";
    let mut opsbook_best = Vec::new();
    for (label, kex) in [
        ("default key exchange", None),
        ("KexAlgorithms curve25519-sha256", Some(fast_kex)),
    ] {
        let (walls, steps) = opsbook(&fleet, d, hosts, rounds, kex);
        let best = walls.iter().min().copied().unwrap_or_default();
        println!(
            "opsbook, {label}: {hosts} hosts x {} commands, forks {hosts}: wall {} (best {}), steps {steps} (the first connects), {:.2} ms per host-command",
            COMMANDS.len(),
            list(&walls),
            secs(best),
            best.as_secs_f64() * 1000.0 / host_commands as f64
        );
        opsbook_best.push(best);
    }
    for (i, (label, kex)) in [
        ("default key exchange", None),
        ("KexAlgorithms curve25519-sha256", Some(fast_kex)),
    ]
    .into_iter()
    .enumerate()
    {
        match ansible(&fleet, d, hosts, rounds, kex) {
            Some(a) => println!(
                "ansible-playbook, {label}: same play, forks {hosts}, pipelining, ControlPersist: best {} -> opsbook is {:.1}x faster",
                secs(a),
                a.as_secs_f64() / opsbook_best[i].as_secs_f64().max(1e-9)
            ),
            None => {
                println!("ansible-playbook: not on PATH or failed, no comparison (pip install ansible-core)");
                break;
            }
        }
    }
}

/// Runs the three commands as three `ssh.run` steps (one master per host, reused) `rounds`
/// times: wall times, and the steps' durations of the best round.
fn opsbook(
    fleet: &Fleet,
    d: &Path,
    hosts: usize,
    rounds: usize,
    kex: Option<&str>,
) -> (Vec<Duration>, String) {
    let mut conn = format!(
        "      hosts: fleet\n      forks: {hosts}\n      user: {}\n      identity_file: {}\n      known_hosts_file: {}\n      ssh_config: {}\n",
        fleet.user(),
        fleet.client_key().display(),
        fleet.known_hosts().display(),
        fleet.ssh_config().display()
    );
    if let Some(k) = kex {
        conn.push_str(&format!("      ssh_options: {{KexAlgorithms: {k}}}\n"));
    }
    let mut rb =
        String::from("version: 1\nname: ssh-fleet-bench\ninventory: inventory.ini\nsteps:\n");
    for (i, c) in COMMANDS.iter().enumerate() {
        rb.push_str(&format!("  - id: c{i}\n    uses: ssh.run\n"));
        if i > 0 {
            rb.push_str(&format!("    needs: c{}\n", i - 1));
        }
        rb.push_str(&format!("    with:\n{conn}      command: {c}\n"));
    }
    std::fs::write(d.join("rb.yaml"), rb).expect("runbook");
    let bin = env!("CARGO_BIN_EXE_opsbook");
    let mut walls = Vec::new();
    let mut steps_ms = Vec::new();
    for round in 0..rounds {
        let out = d.join(format!("out{round}"));
        let _ = std::fs::remove_dir_all(&out);
        let started = Instant::now();
        let status = Command::new(bin)
            .args(["run", "rb.yaml", "-q", "--report-dir"])
            .arg(&out)
            .current_dir(d)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run opsbook");
        let wall = started.elapsed();
        if !status.success() {
            eprintln!(
                "ssh_fleet: opsbook failed ({status}); see {}",
                out.display()
            );
            std::process::exit(1);
        }
        walls.push(wall);
        steps_ms.push(step_ms(&out.join("run.json")));
    }
    let best_steps = steps_ms
        .iter()
        .min_by_key(|s| s.iter().sum::<u64>())
        .map(|s| {
            s.iter()
                .map(|ms| format!("{ms} ms"))
                .collect::<Vec<_>>()
                .join(" + ")
        })
        .unwrap_or_default();
    (walls, best_steps)
}

/// The same three commands as an Ansible play; the best wall time of `rounds` runs.
fn ansible(
    fleet: &Fleet,
    d: &Path,
    hosts: usize,
    rounds: usize,
    kex: Option<&str>,
) -> Option<Duration> {
    Command::new("ansible-playbook")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .ok()
        .filter(|s| s.success())?;
    let mut best: Option<Duration> = None;
    for round in 0..rounds {
        // A fresh control folder per round: no round reuses another's connections.
        let cp = d.join(format!("cp-{}-{round}", kex.unwrap_or("default")));
        std::fs::create_dir_all(&cp).ok()?;
        let cfg = format!(
        "[defaults]\nforks = {hosts}\nhost_key_checking = True\ngathering = explicit\nstdout_callback = default\nretry_files_enabled = False\n\
         remote_user = {user}\nprivate_key_file = {key}\n\n[ssh_connection]\npipelining = True\ncontrol_path_dir = {cp}\n\
         ssh_args = -F {cfgfile} -o ControlMaster=auto -o ControlPersist=60s -o UserKnownHostsFile={kh}{kex}\n",
        user = fleet.user(),
        key = fleet.client_key().display(),
        cp = cp.display(),
        cfgfile = fleet.ssh_config().display(),
        kh = fleet.known_hosts().display(),
        kex = kex.map(|k| format!(" -o KexAlgorithms={k}")).unwrap_or_default(),
    );
        std::fs::write(d.join("ansible.cfg"), cfg).ok()?;
        let mut play = String::from("- hosts: fleet\n  gather_facts: false\n  tasks:\n");
        for c in COMMANDS {
            play.push_str(&format!("    - command: {c}\n"));
        }
        std::fs::write(d.join("play.yaml"), play).ok()?;
        let started = Instant::now();
        let status = Command::new("ansible-playbook")
            .args(["-i", "inventory.ini", "play.yaml"])
            .current_dir(d)
            .env("ANSIBLE_CONFIG", d.join("ansible.cfg"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .ok()?;
        let wall = started.elapsed();
        if !status.success() {
            eprintln!("ansible-playbook failed ({status}); no comparison");
            return None;
        }
        best = Some(best.map_or(wall, |b| b.min(wall)));
    }
    best
}

/// The steps' durations (ms), in order.
fn step_ms(run_json: &Path) -> Vec<u64> {
    std::fs::read_to_string(run_json)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| {
            v["steps"].as_array().map(|steps| {
                steps
                    .iter()
                    .filter_map(|s| s["duration_ms"].as_u64())
                    .collect()
            })
        })
        .unwrap_or_default()
}

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(default)
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn list(ds: &[Duration]) -> String {
    ds.iter().map(|d| secs(*d)).collect::<Vec<_>>().join(", ")
}
