//! Checks the SSH test fleet against the real OpenSSH client. Needs root.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use opsbook_testkit::sshd::{Fleet, SshHost};

/// Runs `ssh -F <fleet config> [extra] -p PORT ADDRESS COMMAND`.
fn ssh(fleet: &Fleet, host: &SshHost, extra: &[&str], command: &str) -> Output {
    Command::new("ssh")
        .arg("-F")
        .arg(fleet.ssh_config())
        .args(extra)
        .args(["-p", &host.port.to_string(), &host.address, command])
        .output()
        .expect("run ssh")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_string()
}

#[test]
fn three_hosts_accept_the_real_ssh_client() {
    let started = Instant::now();
    let fleet = Fleet::start(3).unwrap_or_else(|e| panic!("{e}"));
    println!("starting 3 sshd hosts took {:?}", started.elapsed());

    let hosts = fleet.hosts().to_vec();
    assert_eq!(hosts.len(), 3);
    let names: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["h1", "h2", "h3"]);
    let addresses: Vec<&str> = hosts.iter().map(|h| h.address.as_str()).collect();
    assert_eq!(addresses, ["127.0.0.2", "127.0.0.3", "127.0.0.4"]);
    assert!(hosts.iter().all(|h| h.port == hosts[0].port));
    let known_hosts = std::fs::read_to_string(fleet.known_hosts()).expect("read known_hosts");
    for host in &hosts {
        let line = format!("[{}]:{} {}", host.address, host.port, host.host_key_pub);
        assert!(
            known_hosts.contains(&line),
            "{line} missing in {known_hosts}"
        );
    }

    for host in &hosts {
        let file = fleet.remote_dir().join(format!("x-{}", host.name));
        let started = Instant::now();
        let out = ssh(
            &fleet,
            host,
            &[],
            &format!("id -un; echo hi > {}", file.display()),
        );
        println!(
            "{}: first ssh round trip {:?}",
            host.name,
            started.elapsed()
        );
        assert!(out.status.success(), "{}: {}", host.name, stderr(&out));
        assert_eq!(stdout(&out), "opsbook-test");
        assert_eq!(
            std::fs::read_to_string(&file).expect("file written over ssh"),
            "hi\n"
        );
    }

    let out = ssh(&fleet, &hosts[0], &[], "sudo -n id -u");
    assert!(out.status.success(), "sudo: {}", stderr(&out));
    assert_eq!(stdout(&out), "0");

    // The user without sudo logs in with the same key, but sudo refuses.
    let user = format!("User={}", fleet.user_without_sudo());
    let out = ssh(&fleet, &hosts[0], &["-o", &user], "id -un; sudo -n id -u");
    assert_eq!(stdout(&out), "opsbook-nosudo");
    assert!(
        !out.status.success(),
        "sudo succeeded without sudoers entry"
    );

    let wrong = fleet.wrong_known_hosts().expect("wrong known_hosts");
    let option = format!("UserKnownHostsFile={}", wrong.display());
    let out = ssh(&fleet, &hosts[0], &["-o", &option], "true");
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
            || err.contains("Host key verification failed"),
        "unexpected stderr: {err}"
    );
    // The other hosts keep their real key in that file.
    let out = ssh(&fleet, &hosts[1], &["-o", &option], "true");
    assert!(out.status.success(), "h2 with wrong file: {}", stderr(&out));

    let pids = fleet.server_pids();
    assert_eq!(pids.len(), 3);
    let dir = fleet.dir().to_path_buf();
    let started = Instant::now();
    drop(fleet);
    println!("stopping 3 sshd hosts took {:?}", started.elapsed());
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "sshd {pid} still running after drop"
        );
    }
    assert!(!dir.exists(), "{} left behind", dir.display());
    for host in &hosts {
        let addr: SocketAddr = format!("{}:{}", host.address, host.port).parse().unwrap();
        assert!(TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err());
    }
}

#[test]
fn fifty_hosts_accept_connections() {
    let started = Instant::now();
    let fleet = Fleet::start(50).unwrap_or_else(|e| panic!("{e}"));
    println!("starting 50 sshd hosts took {:?}", started.elapsed());
    assert_eq!(fleet.hosts().len(), 50);
    assert_eq!(fleet.hosts()[49].address, "127.0.0.51");
    for host in fleet.hosts() {
        let addr: SocketAddr = format!("{}:{}", host.address, host.port).parse().unwrap();
        TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .unwrap_or_else(|e| panic!("{} ({addr}): {e}", host.name));
    }
    let started = Instant::now();
    drop(fleet);
    println!("stopping 50 sshd hosts took {:?}", started.elapsed());
}

#[test]
fn closed_port_refuses_connections() {
    let port = Fleet::closed_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    assert!(TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err());
}

#[test]
fn host_count_is_checked() {
    assert!(Fleet::start(0).is_err());
    let err = Fleet::start(201).expect_err("201 hosts refused");
    assert!(err.contains("1 to 200"), "{err}");
}

#[test]
fn drop_ends_open_sessions() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let fleet = Fleet::start(1).unwrap_or_else(|e| panic!("{e}"));
    let host = &fleet.hosts()[0];
    let mut client = Command::new("ssh")
        .arg("-F")
        .arg(fleet.ssh_config())
        .args(["-p", &host.port.to_string(), &host.address])
        .arg("echo ready; sleep 60")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ssh");
    let mut line = String::new();
    let stdout = client.stdout.take().expect("piped stdout");
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read from ssh");
    if line.trim() != "ready" {
        let _ = client.kill();
        let out = client.wait_with_output().expect("wait for ssh");
        panic!(
            "ssh said {line:?}; its stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    drop(fleet);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if client.try_wait().expect("wait for ssh").is_some() {
            break;
        }
        if Instant::now() >= deadline {
            let _ = client.kill();
            panic!("the ssh session outlived the fleet");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
#[ignore = "starts 200 servers; run with --ignored"]
fn two_hundred_hosts_accept_connections() {
    let started = Instant::now();
    let fleet = Fleet::start(200).unwrap_or_else(|e| panic!("{e}"));
    println!("starting 200 sshd hosts took {:?}", started.elapsed());
    assert_eq!(fleet.hosts()[199].address, "127.0.0.201");
    for host in fleet.hosts() {
        let addr: SocketAddr = format!("{}:{}", host.address, host.port).parse().unwrap();
        TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .unwrap_or_else(|e| panic!("{} ({addr}): {e}", host.name));
    }
}
