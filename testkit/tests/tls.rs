//! Checks the TLS test certificates with the OpenSSL command line: chains, purposes,
//! names, key pairs and a real mutual-TLS handshake. Needs `openssl` in PATH.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use opsbook_testkit::tls::{Certs, CLIENT_NAME};

fn openssl(args: &[&str]) -> Output {
    Command::new("openssl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl (install the openssl package): {e}"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// `openssl verify -CAfile CA [extra] CERT` must print `CERT: OK`.
fn assert_verifies(ca: &Path, cert: &Path, extra: &[&str]) {
    let mut args = vec!["verify", "-CAfile", path(ca)];
    args.extend_from_slice(extra);
    args.push(path(cert));
    let out = openssl(&args);
    let said = text(&out);
    assert!(
        out.status.success() && said.trim() == format!("{}: OK", cert.display()),
        "openssl {args:?}: {said}"
    );
}

fn assert_rejected(ca: &Path, cert: &Path, extra: &[&str]) {
    let mut args = vec!["verify", "-CAfile", path(ca)];
    args.extend_from_slice(extra);
    args.push(path(cert));
    let out = openssl(&args);
    assert!(
        !out.status.success(),
        "openssl {args:?} accepted it: {}",
        text(&out)
    );
}

/// The public key of a certificate or a private key, in PEM.
fn public_key(file: &Path, is_cert: bool) -> String {
    let out = if is_cert {
        openssl(&["x509", "-in", path(file), "-noout", "-pubkey"])
    } else {
        openssl(&["pkey", "-in", path(file), "-pubout"])
    };
    assert!(out.status.success(), "{}: {}", file.display(), text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn certificates_verify_with_openssl() {
    let started = Instant::now();
    let certs = Certs::generate().unwrap_or_else(|e| panic!("{e}"));
    println!("generating the certificates took {:?}", started.elapsed());

    for cert in [certs.ca_cert(), certs.server_cert(), certs.client_cert()] {
        let pem = fs::read_to_string(&cert).unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\n"), "{pem}");
        assert_eq!(pem.matches("BEGIN CERTIFICATE").count(), 1);
    }
    for key in [certs.server_key(), certs.client_key()] {
        let pem = fs::read_to_string(&key).unwrap();
        assert!(
            pem.starts_with("-----BEGIN PRIVATE KEY-----\n"),
            "not PKCS#8: {pem}"
        );
        let out = openssl(&["pkey", "-in", path(&key), "-noout", "-text"]);
        assert!(out.status.success(), "{}", text(&out));
        assert!(text(&out).contains("prime256v1"), "{}", text(&out));
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", key.display());
    }

    let out = openssl(&["x509", "-in", path(&certs.ca_cert()), "-noout", "-subject"]);
    assert!(text(&out).contains("opsbook-testkit CA"), "{}", text(&out));
    let out = openssl(&[
        "x509",
        "-in",
        path(&certs.server_cert()),
        "-noout",
        "-ext",
        "subjectAltName,extendedKeyUsage",
    ]);
    let said = text(&out);
    assert!(said.contains("DNS:localhost"), "{said}");
    assert!(said.contains("IP Address:127.0.0.1"), "{said}");
    assert!(said.contains("TLS Web Server Authentication"), "{said}");
    let out = openssl(&[
        "x509",
        "-in",
        path(&certs.client_cert()),
        "-noout",
        "-subject",
    ]);
    assert!(text(&out).contains(CLIENT_NAME), "{}", text(&out));

    let ca = certs.ca_cert();
    assert_verifies(&ca, &ca, &[]);
    assert_verifies(&ca, &certs.server_cert(), &[]);
    assert_verifies(&ca, &certs.client_cert(), &[]);
    assert_verifies(&ca, &certs.server_cert(), &["-purpose", "sslserver"]);
    assert_verifies(&ca, &certs.client_cert(), &["-purpose", "sslclient"]);
    assert_verifies(
        &ca,
        &certs.server_cert(),
        &["-verify_hostname", "localhost"],
    );
    assert_verifies(&ca, &certs.server_cert(), &["-verify_ip", "127.0.0.1"]);
    assert_rejected(
        &ca,
        &certs.server_cert(),
        &["-verify_hostname", "example.com"],
    );
    assert_rejected(&ca, &certs.client_cert(), &["-purpose", "sslserver"]);
    assert_rejected(&ca, &certs.server_cert(), &["-purpose", "sslclient"]);

    // Each key belongs to its certificate.
    assert_eq!(
        public_key(&certs.server_cert(), true),
        public_key(&certs.server_key(), false)
    );
    assert_eq!(
        public_key(&certs.client_cert(), true),
        public_key(&certs.client_key(), false)
    );
    assert_ne!(
        public_key(&certs.server_key(), false),
        public_key(&certs.client_key(), false)
    );

    // Another generation is another CA: its certificates do not verify against this one.
    let other = Certs::generate().unwrap_or_else(|e| panic!("{e}"));
    assert_rejected(&ca, &other.server_cert(), &[]);
    assert_rejected(&other.ca_cert(), &certs.client_cert(), &[]);

    let dir = certs.dir().to_path_buf();
    drop(certs);
    assert!(!dir.exists(), "{} still exists", dir.display());
}

#[test]
fn mutual_tls_handshake_with_openssl() {
    let certs = Certs::generate().unwrap_or_else(|e| panic!("{e}"));
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let accept = format!("127.0.0.1:{port}");
    // -Verify 1: the server demands a client certificate; -www answers one HTTP request
    // with a status page; -naccept 1: then it exits.
    let mut server = Command::new("openssl")
        .args([
            "s_server", "-accept", &accept, "-naccept", "1", "-www", "-Verify", "1",
        ])
        .args(["-verify_return_error", "-cert", path(&certs.server_cert())])
        .args(["-key", path(&certs.server_key())])
        .args(["-CAfile", path(&certs.ca_cert())])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start openssl s_server");
    // Not a TCP probe: that would use up the one accepted connection. s_server prints
    // ACCEPT once it listens.
    let stdout = server.stdout.take().unwrap();
    let (lines_tx, lines) = mpsc::channel();
    let reader = thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut server_out = String::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.trim() == "ACCEPT" => break,
            Ok(line) => server_out.push_str(&(line + "\n")),
            Err(e) => {
                let rest = wait_bounded(&mut server, Duration::ZERO);
                panic!("s_server did not listen ({e}): {server_out}{rest}");
            }
        }
    }

    let mut client = Command::new("openssl")
        .args(["s_client", "-connect", &accept, "-servername", "localhost"])
        .args([
            "-verify_hostname",
            "localhost",
            "-verify_return_error",
            "-brief",
        ])
        // Read the answer after the request: without it s_client quits at stdin's end.
        .arg("-ign_eof")
        .args(["-CAfile", path(&certs.ca_cert())])
        .args(["-cert", path(&certs.client_cert())])
        .args(["-key", path(&certs.client_key())])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start openssl s_client");
    client
        .stdin
        .take()
        .unwrap()
        .write_all(b"GET / HTTP/1.0\r\n\r\n")
        .unwrap();
    let client_out = wait_bounded(&mut client, Duration::from_secs(10));
    server_out.push_str(&wait_bounded(&mut server, Duration::from_secs(10)));
    let _ = reader.join();
    server_out.extend(lines.try_iter().map(|line| line + "\n"));
    assert!(
        client_out.contains("Verification: OK"),
        "client: {client_out}\nserver: {server_out}"
    );
    assert!(
        client_out.contains("Verified peername: localhost"),
        "{client_out}"
    );
    // The -www status page names the client certificate the server accepted.
    assert!(
        client_out.contains("HTTP/1.0 200 ok")
            && client_out.contains("Client certificate")
            && client_out.contains(&format!("Subject: CN={CLIENT_NAME}")),
        "client: {client_out}\nserver: {server_out}"
    );
}

/// Waits for `child` up to `limit` (then kills it) and returns its stdout and stderr.
fn wait_bounded(child: &mut std::process::Child, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    let mut out = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        let _ = stdout.read_to_string(&mut out);
    }
    if let Some(mut stderr) = child.stderr.take() {
        let _ = stderr.read_to_string(&mut out);
    }
    out
}
