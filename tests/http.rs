//! End-to-end tests of `http.request` and `http.wait` through the `opsbook` binary against real
//! HTTP servers in this process (axum on 127.0.0.1, real sockets, status codes, headers,
//! delays). No test asserts on wall-clock time.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use serde_json::{json, Value};

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("opsbook-http-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
    fn path(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Requests the server saw, by path.
#[derive(Default)]
struct Seen {
    counts: Mutex<HashMap<String, usize>>,
    last: Mutex<HashMap<String, Value>>,
}

impl Seen {
    fn count(&self, path: &str) -> usize {
        self.counts.lock().unwrap().get(path).copied().unwrap_or(0)
    }
    fn last(&self, path: &str) -> Value {
        self.last
            .lock()
            .unwrap()
            .get(path)
            .cloned()
            .unwrap_or(Value::Null)
    }
}

/// A test server on 127.0.0.1 (its own runtime on a thread; gone with the test process).
struct Server {
    base: String,
    seen: Arc<Seen>,
}

fn server() -> Server {
    let seen = Arc::new(Seen::default());
    let app = Router::new().fallback(any(handle)).with_state(seen.clone());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    let addr = rx.recv().unwrap();
    Server {
        base: format!("http://{addr}"),
        seen,
    }
}

fn json_response(status: StatusCode, v: Value) -> Response {
    (
        status,
        [("content-type", "application/json")],
        v.to_string(),
    )
        .into_response()
}

async fn handle(
    State(seen): State<Arc<Seen>>,
    method: Method,
    uri: Uri,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let path = uri.path().to_string();
    let n = {
        let mut c = seen.counts.lock().unwrap();
        let e = c.entry(path.clone()).or_insert(0);
        *e += 1;
        *e
    };
    let hdrs: serde_json::Map<String, Value> = headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()),
            )
        })
        .collect();
    let echo = json!({
        "method": method.as_str(),
        "query": uri.query().unwrap_or(""),
        "headers": hdrs,
        "body": String::from_utf8_lossy(&body),
    });
    seen.last.lock().unwrap().insert(path.clone(), echo.clone());
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    match path.as_str() {
        "/json" => json_response(StatusCode::OK, json!({"state": "ok", "n": 1})),
        "/echo" => json_response(StatusCode::OK, echo),
        "/auth/bearer" if header("authorization") == "Bearer s3cr3t-token" => {
            json_response(StatusCode::OK, json!({"user": "bearer"}))
        }
        // "ops:pa ss" in base64.
        "/auth/basic" if header("authorization") == "Basic b3BzOnBhIHNz" => {
            json_response(StatusCode::OK, json!({"user": "ops"}))
        }
        "/auth/key"
            if header("x-api-key") == "k-123"
                || q.get("api_key").map(String::as_str) == Some("k-123") =>
        {
            json_response(StatusCode::OK, json!({"user": "key"}))
        }
        "/auth/bearer" | "/auth/basic" | "/auth/key" => json_response(
            StatusCode::UNAUTHORIZED,
            json!({"message": "Bad credentials"}),
        ),
        // Three pages of two items, linked GitHub-style.
        "/pages/link" => {
            let page: usize = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
            let items: Vec<usize> = vec![page * 10 + 1, page * 10 + 2];
            let mut resp = json_response(StatusCode::OK, json!(items));
            if page < 3 {
                let link = format!(
                    "</pages/link?page={}&per_page=2>; rel=\"next\", </pages/link?page=3&per_page=2>; rel=\"last\"",
                    page + 1
                );
                resp.headers_mut().insert("link", link.parse().unwrap());
            }
            resp
        }
        // A cursor API: items under `data`, the next cursor under `next`.
        "/pages/cursor" => {
            let cursor = q.get("cursor").cloned().unwrap_or_default();
            let (items, next) = match cursor.as_str() {
                "" => (json!(["a", "b"]), json!("c2")),
                "c2" => (json!(["c"]), json!("c3")),
                "c3" => (json!(["d"]), Value::Null),
                _ => (json!([]), Value::Null),
            };
            json_response(
                StatusCode::OK,
                json!({"data": items, "next": next, "kept": q.get("kept")}),
            )
        }
        // Two 503s with Retry-After: 1, then 200.
        "/flaky" if n <= 2 => (
            StatusCode::SERVICE_UNAVAILABLE,
            [("retry-after", "1")],
            "try later",
        )
            .into_response(),
        "/flaky" => json_response(StatusCode::OK, json!({"attempt": n})),
        // Always 429 asking for an hour.
        "/too-many" => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "3600")],
            "slow down",
        )
            .into_response(),
        "/post-503" if n <= 1 => (StatusCode::SERVICE_UNAVAILABLE, "busy").into_response(),
        "/post-500" => (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response(),
        "/post-503" => json_response(StatusCode::CREATED, json!({"created": true})),
        "/missing" => json_response(
            StatusCode::NOT_FOUND,
            json!({"message": "Not Found", "documentation_url": "https://docs.example/x"}),
        ),
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            json_response(StatusCode::OK, json!({}))
        }
        "/redirect" => (StatusCode::FOUND, [("location", "/json")]).into_response(),
        // Ready from the third poll on.
        "/ready" if n < 3 => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "starting"}),
        ),
        "/ready" => json_response(StatusCode::OK, json!({"status": "up"})),
        "/never" => json_response(StatusCode::SERVICE_UNAVAILABLE, json!({"status": "down"})),
        // 256 MiB, streamed in 64 KiB chunks.
        "/big" => {
            let chunk = vec![b'x'; 64 * 1024];
            let stream = futures_stream(chunk, 4096);
            Response::builder()
                .header("content-type", "application/octet-stream")
                .body(Body::from_stream(stream))
                .unwrap()
        }
        _ => (StatusCode::NOT_FOUND, "no such route").into_response(),
    }
}

/// `count` chunks of `chunk`.
fn futures_stream(
    chunk: Vec<u8>,
    count: usize,
) -> impl futures_core::Stream<Item = Result<axum::body::Bytes, std::io::Error>> {
    let chunk = axum::body::Bytes::from(chunk);
    ChunkStream { chunk, left: count }
}

struct ChunkStream {
    chunk: axum::body::Bytes,
    left: usize,
}

impl futures_core::Stream for ChunkStream {
    type Item = Result<axum::body::Bytes, std::io::Error>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        if self.left == 0 {
            return std::task::Poll::Ready(None);
        }
        self.left -= 1;
        std::task::Poll::Ready(Some(Ok(self.chunk.clone())))
    }
}

static RUNS: AtomicUsize = AtomicUsize::new(0);

/// Runs `runbook` in `d`; exit code, run.json and the output.
fn run(d: &Dir, runbook: &str, extra: &[&str], env: &[(&str, &str)]) -> (i32, Value, Output) {
    let name = format!("rb{}.yaml", RUNS.fetch_add(1, Ordering::Relaxed));
    std::fs::write(d.path(&name), runbook).unwrap();
    let _ = std::fs::remove_dir_all(d.path("out"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_opsbook"));
    cmd.args(["run", &name, "--report-dir", "out"])
        .args(extra)
        .current_dir(&d.0)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let o = cmd.output().expect("run opsbook");
    let report = std::fs::read_to_string(d.path("out/run.json"))
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap_or(Value::Null);
    (o.status.code().unwrap_or(-1), report, o)
}

fn step<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["steps"]
        .as_array()
        .unwrap_or_else(|| panic!("no steps in {report}"))
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("no step {id} in {report}"))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Every file of the run folder, concatenated (to grep for secrets).
fn run_folder(d: &Dir) -> String {
    let mut out = String::new();
    let mut stack = vec![d.path("out")];
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        } else {
            out.push_str(&std::fs::read_to_string(&p).unwrap_or_default());
        }
    }
    out
}

#[test]
fn auth_bodies_query_and_expectations() {
    let s = server();
    let d = Dir::new("auth");
    let rb = format!(
        r#"version: 1
name: auth
secrets:
  token: {{env: TEST_TOKEN}}
  password: {{env: TEST_PASSWORD}}
  key: {{env: TEST_KEY}}
steps:
  - id: bearer
    uses: http.request
    with:
      url: {b}/auth/bearer
      auth: {{bearer: "{{{{ secrets.token }}}}"}}
      expect: {{that: ["result.json.user == 'bearer'"]}}
  - id: basic
    uses: http.request
    with:
      url: {b}/auth/basic
      auth: {{basic: {{username: ops, password: "{{{{ secrets.password }}}}"}}}}
  - id: key_header
    uses: http.request
    with:
      url: {b}/auth/key
      auth: {{api_key: {{value: "{{{{ secrets.key }}}}", header: X-Api-Key}}}}
  - id: key_query
    uses: http.request
    with:
      url: {b}/auth/key
      auth: {{api_key: {{value: "{{{{ secrets.key }}}}", query: api_key}}}}
  - id: post_json
    uses: http.request
    with:
      url: {b}/echo
      method: POST
      query: {{tag: [a, b], n: 3, skip: null}}
      headers: {{X-Trace: abc}}
      json: {{deploy: web, replicas: 3}}
    outputs:
      sent: "{{{{ result.json.body | fromjson }}}}"
      query: "{{{{ result.json.query }}}}"
  - id: form
    uses: http.request
    with:
      url: {b}/echo
      method: PUT
      form: {{a: "1 2", b: x&y}}
  - id: wrong
    uses: http.request
    continue_on_error: true
    with:
      url: {b}/auth/bearer
      auth: {{bearer: nope}}
  - id: missing
    uses: http.request
    continue_on_error: true
    with:
      url: {b}/missing
  - id: accepted_404
    uses: http.request
    with:
      url: {b}/missing
      expect: {{status: [404, "500-599"]}}
  - id: false_that
    uses: http.request
    continue_on_error: true
    with:
      url: {b}/json
      expect: {{that: ["result.json.state == 'degraded'"]}}
"#,
        b = s.base
    );
    let (code, report, o) = run(
        &d,
        &rb,
        &[],
        &[
            ("TEST_TOKEN", "s3cr3t-token"),
            ("TEST_PASSWORD", "pa ss"),
            ("TEST_KEY", "k-123"),
        ],
    );
    assert_eq!(code, 0, "{}", text(&o));
    for id in ["bearer", "basic", "key_header", "key_query", "accepted_404"] {
        assert_eq!(
            step(&report, id)["status"],
            "succeeded",
            "{id}: {}",
            step(&report, id)
        );
    }
    let post = step(&report, "post_json");
    assert_eq!(
        post["outputs"]["sent"],
        json!({"deploy": "web", "replicas": 3})
    );
    assert_eq!(post["outputs"]["query"], "tag=a&tag=b&n=3");
    let echo = s.seen.last("/echo");
    assert_eq!(echo["method"], "PUT");
    assert_eq!(echo["body"], "a=1+2&b=x%26y");
    assert_eq!(
        echo["headers"]["content-type"],
        "application/x-www-form-urlencoded"
    );
    let wrong = step(&report, "wrong");
    assert_eq!(wrong["status"], "failed");
    let e = wrong["error"].as_str().unwrap();
    assert!(e.contains("401") && e.contains("Bad credentials"), "{e}");
    // A 4xx is not retried.
    assert_eq!(s.seen.count("/missing"), 2, "404s were retried");
    let missing = step(&report, "missing");
    assert_eq!(missing["result"]["status"], 404, "{missing}");
    assert!(missing["error"].as_str().unwrap().contains("expected 2xx"));
    let f = step(&report, "false_that");
    assert!(
        f["error"]
            .as_str()
            .unwrap()
            .contains("`result.json.state == 'degraded'` is false"),
        "{f}"
    );
    // Secrets never reach the run folder or the terminal, wherever they were put.
    let all = run_folder(&d) + &text(&o);
    for secret in ["s3cr3t-token", "pa ss", "k-123", "b3BzOnBhIHNz"] {
        assert!(!all.contains(secret), "{secret} leaked");
    }
}

#[test]
fn pagination_by_link_header_and_by_cursor() {
    let s = server();
    let d = Dir::new("pages");
    let rb = format!(
        r#"version: 1
name: pages
steps:
  - id: link
    uses: http.request
    with:
      url: {b}/pages/link
      query: {{per_page: 2}}
      paginate: {{next: link}}
  - id: cursor
    uses: http.request
    with:
      url: {b}/pages/cursor
      query: {{kept: yes}}
      paginate:
        next: "{{'cursor': result.json.next}} if result.json.next else none"
        items: result.json.data
  - id: capped
    uses: http.request
    with:
      url: {b}/pages/link
      paginate: {{max_pages: 2}}
"#,
        b = s.base
    );
    let (code, report, o) = run(&d, &rb, &[], &[]);
    assert_eq!(code, 0, "{}", text(&o));
    let link = step(&report, "link");
    assert_eq!(
        link["result"]["items"],
        json!([11, 12, 21, 22, 31, 32]),
        "{link}"
    );
    assert_eq!(link["result"]["pages"], 3);
    assert_eq!(link["result"]["truncated"], false);
    let cursor = step(&report, "cursor");
    assert_eq!(
        cursor["result"]["items"],
        json!(["a", "b", "c", "d"]),
        "{cursor}"
    );
    // The first page's own parameters stay on later pages.
    assert_eq!(cursor["result"]["json"]["kept"], "yes");
    let capped = step(&report, "capped");
    assert_eq!(capped["result"]["items"], json!([11, 12, 21, 22]));
    assert_eq!(capped["result"]["truncated"], true);
}

#[test]
fn retries_honour_retry_after_and_spare_posts() {
    let s = server();
    let d = Dir::new("retries");
    let rb = format!(
        r#"version: 1
name: retries
steps:
  - id: flaky
    uses: http.request
    with:
      url: {b}/flaky
  - id: too_many
    uses: http.request
    continue_on_error: true
    with:
      url: {b}/too-many
  - id: post_503
    uses: http.request
    with:
      url: {b}/post-503
      method: POST
      json: {{x: 1}}
      expect: {{status: [201]}}
  - id: post_500
    uses: http.request
    continue_on_error: true
    with:
      url: {b}/post-500
      method: POST
  - id: refused
    uses: http.request
    continue_on_error: true
    with:
      url: http://127.0.0.1:{closed}/x
      retries: 1
  - id: slow
    uses: http.request
    continue_on_error: true
    with:
      url: {b}/slow
      timeout: 1s
      retries: 0
"#,
        b = s.base,
        closed = closed_port()
    );
    let (code, report, o) = run(&d, &rb, &[], &[]);
    assert_eq!(code, 0, "{}", text(&o));
    let flaky = step(&report, "flaky");
    assert_eq!(flaky["result"]["attempts"], 3, "{flaky}");
    assert_eq!(s.seen.count("/flaky"), 3);
    let log = std::fs::read_to_string(d.path("out/logs/flaky.log")).unwrap();
    assert!(
        log.contains("answered 503") && log.contains("(Retry-After)"),
        "{log}"
    );
    let tm = step(&report, "too_many");
    assert_eq!(tm["status"], "failed");
    assert!(
        tm["error"].as_str().unwrap().contains("max_retry_after"),
        "{tm}"
    );
    assert_eq!(
        s.seen.count("/too-many"),
        1,
        "an hour's Retry-After was not waited for"
    );
    // A POST is tried again on 503 (not processed) but not on 500.
    assert_eq!(step(&report, "post_503")["status"], "succeeded");
    assert_eq!(s.seen.count("/post-503"), 2);
    assert_eq!(
        s.seen.count("/post-500"),
        1,
        "a POST was retried after a 500"
    );
    let refused = step(&report, "refused");
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("cannot connect"),
        "{refused}"
    );
    let slow = step(&report, "slow");
    assert!(
        slow["error"]
            .as_str()
            .unwrap()
            .contains("no complete answer within 1s"),
        "{slow}"
    );
}

#[test]
fn downloads_stream_to_disk_with_bounded_memory() {
    let s = server();
    let d = Dir::new("big");
    let rb = format!(
        r#"version: 1
name: big
steps:
  - id: save
    uses: http.request
    with:
      url: {b}/big
      save_to: downloads/big.bin
  - id: in_memory
    uses: http.request
    continue_on_error: true
    with:
      url: {b}/big
"#,
        b = s.base
    );
    let (code, report, o) = run(&d, &rb, &[], &[]);
    assert_eq!(code, 0, "{}", text(&o));
    let size = std::fs::metadata(d.path("downloads/big.bin"))
        .unwrap()
        .len();
    assert_eq!(size, 256 << 20);
    assert_eq!(
        step(&report, "save")["result"]["saved"]["bytes"],
        256u64 << 20
    );
    let mem = step(&report, "in_memory");
    assert!(
        mem["error"].as_str().unwrap().contains("max_response"),
        "{mem}"
    );
    // The largest child this test process waited for: the 256 MiB went to disk, not memory.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    let max_kib = usage.ru_maxrss;
    assert!(
        max_kib < 100 * 1024,
        "peak memory of a child: {max_kib} KiB"
    );
}

#[test]
fn redirects_dry_run_and_wait() {
    let s = server();
    let d = Dir::new("wait");
    let rb = format!(
        r#"version: 1
name: wait
steps:
  - id: follow
    uses: http.request
    with:
      url: {b}/redirect
  - id: no_follow
    uses: http.request
    with:
      url: {b}/redirect
      follow_redirects: false
      expect: {{status: [302]}}
  - id: ready
    uses: http.wait
    with:
      url: {b}/ready
      interval: 100ms
      deadline: 30s
      expect: {{that: ["result.json.status == 'up'"]}}
  - id: never
    uses: http.wait
    continue_on_error: true
    with:
      url: {b}/never
      interval: 100ms
      deadline: 1s
"#,
        b = s.base
    );
    let (code, report, o) = run(&d, &rb, &[], &[]);
    assert_eq!(code, 0, "{}", text(&o));
    let follow = step(&report, "follow");
    assert!(follow["result"]["url"].as_str().unwrap().ends_with("/json"));
    assert_eq!(step(&report, "no_follow")["result"]["status"], 302);
    let ready = step(&report, "ready");
    let attempts = ready["result"]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3, "{ready}");
    assert_eq!(attempts[0]["status"], 503);
    assert!(attempts[0]["error"].is_string());
    assert!(attempts[2]["error"].is_null());
    assert!(attempts
        .iter()
        .all(|a| a["latency_ms"].is_u64() && a["at"].is_string()));
    let never = step(&report, "never");
    assert_eq!(never["status"], "failed");
    assert!(
        never["error"]
            .as_str()
            .unwrap()
            .contains("not ready within"),
        "{never}"
    );
    assert!(never["result"]["attempts"].as_array().unwrap().len() >= 2);

    // Dry run: GETs run, a POST is only described.
    let before = s.seen.count("/echo");
    let rb = format!(
        r#"version: 1
name: dry
steps:
  - id: read
    uses: http.request
    with:
      url: {b}/json
  - id: write
    uses: http.request
    with:
      url: {b}/echo
      method: POST
      json: {{x: 1}}
"#,
        b = s.base
    );
    let (code, report, o) = run(&d, &rb, &["--dry-run"], &[]);
    assert_eq!(code, 0, "{}", text(&o));
    assert_eq!(step(&report, "read")["result"]["json"]["state"], "ok");
    assert_eq!(
        step(&report, "write")["result"]["would_send"],
        format!("POST {}/echo", s.base)
    );
    assert_eq!(s.seen.count("/echo"), before, "the dry run sent a POST");
}

/// A port on 127.0.0.1 nothing listens on.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// TLS against a real HTTPS server in this process (rustls on ring, hyper), with the testkit's
/// CA, server and client certificates.
mod tls {
    use std::convert::Infallible;
    use std::path::Path;
    use std::sync::{Arc, Mutex};

    use hyper_util::rt::TokioIo;
    use opsbook_testkit::tls::Certs;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use rustls::server::WebPkiClientVerifier;
    use serde_json::json;

    use super::{run, step, text, Dir};

    /// What the server saw of each TLS connection.
    #[derive(Default)]
    struct Handshakes {
        /// Handshakes that completed: the client certificate presented, if any (DER).
        ok: Vec<Option<Vec<u8>>>,
        /// Handshakes that failed, with rustls's reason.
        failed: Vec<String>,
    }

    struct HttpsServer {
        base: String,
        port: u16,
        seen: Arc<Mutex<Handshakes>>,
    }

    fn pem_certs(path: &Path) -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_file_iter(path)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// An HTTPS server on 127.0.0.1 with the testkit's server certificate; with
    /// `client_auth`, it requires a client certificate signed by the testkit's CA (mutual
    /// TLS). Every request gets `{"path": …, "client_cert": bool}`.
    fn https_server(certs: &Certs, client_auth: bool) -> HttpsServer {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = if client_auth {
            let mut roots = rustls::RootCertStore::empty();
            for c in pem_certs(&certs.ca_cert()) {
                roots.add(c).unwrap();
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let key = PrivateKeyDer::from_pem_file(certs.server_key()).unwrap();
        let config = builder
            .with_single_cert(pem_certs(&certs.server_cert()), key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let seen: Arc<Mutex<Handshakes>> = Arc::default();
        let log = seen.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        continue;
                    };
                    let acceptor = acceptor.clone();
                    let log = log.clone();
                    tokio::spawn(async move {
                        let tls = match acceptor.accept(tcp).await {
                            Ok(tls) => tls,
                            Err(e) => {
                                log.lock().unwrap().failed.push(e.to_string());
                                return;
                            }
                        };
                        let client = tls
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|c| c.first())
                            .map(|c| c.as_ref().to_vec());
                        let presented = client.is_some();
                        log.lock().unwrap().ok.push(client);
                        let service = hyper::service::service_fn(
                            move |req: hyper::Request<hyper::body::Incoming>| async move {
                                let body = json!({
                                    "path": req.uri().path(),
                                    "client_cert": presented,
                                });
                                Ok::<_, Infallible>(
                                    hyper::Response::builder()
                                        .header("content-type", "application/json")
                                        .body(axum::body::Body::from(body.to_string()))
                                        .unwrap(),
                                )
                            },
                        );
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(tls), service)
                            .await;
                    });
                }
            });
        });
        let addr: std::net::SocketAddr = rx.recv().unwrap();
        HttpsServer {
            base: format!("https://{addr}"),
            port: addr.port(),
            seen,
        }
    }

    #[test]
    fn ca_cert_and_mutual_tls() {
        let certs = Certs::generate().unwrap();
        let plain = https_server(&certs, false);
        let mutual = https_server(&certs, true);
        let d = Dir::new("tls");
        // The CA also relative to the runbook, and a client certificate with its key in the
        // same file.
        std::fs::create_dir_all(d.path("pki")).unwrap();
        std::fs::copy(certs.ca_cert(), d.path("pki/ca.pem")).unwrap();
        let combined = std::fs::read_to_string(certs.client_cert()).unwrap()
            + &std::fs::read_to_string(certs.client_key()).unwrap();
        std::fs::write(d.path("pki/client-with-key.pem"), combined).unwrap();
        let rb = format!(
            r#"version: 1
name: tls
steps:
  - id: no_ca
    uses: http.request
    continue_on_error: true
    with:
      url: {plain}/hello
      retries: 0
  - id: with_ca
    uses: http.request
    with:
      url: {plain}/hello
      ca_cert: {ca}
  - id: relative_ca
    uses: http.request
    with:
      url: https://localhost:{port}/by-name
      ca_cert: pki/ca.pem
  - id: no_client_cert
    uses: http.request
    continue_on_error: true
    with:
      url: {mutual}/hello
      ca_cert: {ca}
      retries: 0
  - id: with_client_cert
    uses: http.request
    with:
      url: {mutual}/hello
      ca_cert: {ca}
      client_cert: {cert}
      client_key: {key}
  - id: key_in_cert_file
    uses: http.request
    with:
      url: {mutual}/combined
      ca_cert: {ca}
      client_cert: pki/client-with-key.pem
"#,
            plain = plain.base,
            port = plain.port,
            mutual = mutual.base,
            ca = certs.ca_cert().display(),
            cert = certs.client_cert().display(),
            key = certs.client_key().display(),
        );
        let (code, report, o) = run(&d, &rb, &[], &[]);
        assert_eq!(code, 0, "{}", text(&o));

        // An unknown CA fails, and says it is about the certificate.
        let no_ca = step(&report, "no_ca");
        assert_eq!(no_ca["status"], "failed", "{no_ca}");
        let e = no_ca["error"].as_str().unwrap_or_default();
        assert!(e.to_lowercase().contains("certificate"), "{e}");
        for id in ["with_ca", "relative_ca"] {
            let s = step(&report, id);
            assert_eq!(s["status"], "succeeded", "{id}: {s}");
            assert_eq!(s["result"]["status"], 200, "{id}: {s}");
        }
        assert_eq!(step(&report, "with_ca")["result"]["json"]["path"], "/hello");
        assert_eq!(
            step(&report, "relative_ca")["result"]["json"]["path"],
            "/by-name"
        );
        {
            let seen = plain.seen.lock().unwrap();
            assert!(
                !seen.failed.is_empty(),
                "the server saw no refused handshake for no_ca"
            );
            assert!(seen.ok.iter().all(Option::is_none));
        }

        // Mutual TLS: no client certificate, no answer; with one, the server saw it.
        let none = step(&report, "no_client_cert");
        assert_eq!(none["status"], "failed", "{none}");
        assert!(none["result"]["status"].is_null(), "{none}");
        let e = none["error"].as_str().unwrap_or_default();
        assert!(e.to_lowercase().contains("certificate"), "{e}");
        for id in ["with_client_cert", "key_in_cert_file"] {
            let s = step(&report, id);
            assert_eq!(s["status"], "succeeded", "{id}: {s}");
            assert_eq!(s["result"]["json"]["client_cert"], true, "{id}: {s}");
        }
        let client_der = pem_certs(&certs.client_cert())[0].as_ref().to_vec();
        let seen = mutual.seen.lock().unwrap();
        assert!(
            seen.failed
                .iter()
                .any(|f| f.to_lowercase().contains("certificate")),
            "the server did not refuse a client without a certificate: {:?}",
            seen.failed
        );
        assert!(!seen.ok.is_empty());
        assert!(
            seen.ok
                .iter()
                .all(|c| c.as_deref() == Some(&client_der[..])),
            "a handshake completed without the client certificate"
        );
        // No step asked for `insecure`, so no warning.
        assert!(
            !String::from_utf8_lossy(&o.stderr).contains("insecure"),
            "{}",
            text(&o)
        );
    }

    #[test]
    fn insecure_skips_verification_with_a_warning() {
        let certs = Certs::generate().unwrap();
        let server = https_server(&certs, false);
        let d = Dir::new("insecure");
        let rb = format!(
            r#"version: 1
name: insecure
steps:
  - id: insecure
    uses: http.request
    with:
      url: {b}/hello
      insecure: true
"#,
            b = server.base
        );
        let (code, report, o) = run(&d, &rb, &[], &[]);
        assert_eq!(code, 0, "{}", text(&o));
        let s = step(&report, "insecure");
        assert_eq!(s["status"], "succeeded", "{s}");
        assert_eq!(s["result"]["json"]["path"], "/hello", "{s}");
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(
            stderr
                .lines()
                .any(|l| l.contains("warning") && l.contains("insecure")),
            "no warning on the terminal:\n{}",
            text(&o)
        );
    }
}
