//! End-to-end tests of the notification and metrics plugins through the `opsbook` binary:
//! `slack.post` against a Slack-shaped receiver in this process (axum on 127.0.0.1, incoming
//! webhooks and `chat.postMessage` answering as Slack does), and `prometheus.push` /
//! `prometheus.query` against a real Pushgateway and a real Prometheus scraping it (the
//! testkit's Debian binaries). No test asserts on wall-clock time.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use opsbook_testkit::prometheus::{Prometheus, Pushgateway};
use serde_json::{json, Value};

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("opsbook-notify-{name}-{}", std::process::id()));
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

/// A step's error message ("" when it has none).
fn error_of(report: &Value, id: &str) -> String {
    step(report, id)["error"]
        .as_str()
        .unwrap_or_default()
        .to_string()
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
            out.push_str(&String::from_utf8_lossy(&std::fs::read(&p).unwrap()));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Slack

/// One request the Slack receiver got.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: HeaderMap,
    body: String,
}

impl Seen {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} {}: body is not JSON ({e}): {}",
                self.method, self.path, self.body
            )
        })
    }
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// The bot token the receiver accepts.
const BOT_TOKEN: &str = "xoxb-1111-2222-s3cr3tb0t";

/// A Slack-shaped receiver on 127.0.0.1 (its own runtime on a thread; gone with the test
/// process) that records every request.
struct Slack {
    base: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Slack {
    fn start() -> Slack {
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let app = Router::new()
            .fallback(any(slack_handle))
            .with_state(seen.clone());
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
        Slack {
            base: format!("http://{addr}"),
            seen,
        }
    }

    /// Every request so far.
    fn all(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The requests to `path`.
    fn to(&self, path: &str) -> Vec<Seen> {
        self.all().into_iter().filter(|s| s.path == path).collect()
    }
}

fn json_response(v: Value) -> Response {
    (
        StatusCode::OK,
        [("content-type", "application/json; charset=utf-8")],
        v.to_string(),
    )
        .into_response()
}

async fn slack_handle(
    State(seen): State<Arc<Mutex<Vec<Seen>>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let s = Seen {
        method: method.as_str().to_string(),
        path: uri.path().to_string(),
        headers: headers.clone(),
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    seen.lock().unwrap().push(s.clone());
    match s.path.as_str() {
        // Incoming webhooks answer `ok` as text/html, and refusals as a 400 with the error word.
        "/services/T0/B0/XYZ" if method == Method::POST => {
            (StatusCode::OK, [("content-type", "text/html")], "ok").into_response()
        }
        "/services/T0/B0/BAD" => (
            StatusCode::BAD_REQUEST,
            [("content-type", "text/html")],
            "invalid_payload",
        )
            .into_response(),
        // The Web API always answers 200; `ok` says whether it worked.
        "/api/chat.postMessage" => {
            if s.header("authorization") != format!("Bearer {BOT_TOKEN}") {
                return json_response(json!({"ok": false, "error": "invalid_auth"}));
            }
            let Ok(msg) = serde_json::from_str::<Value>(&s.body) else {
                return json_response(json!({"ok": false, "error": "invalid_json"}));
            };
            match msg["channel"].as_str() {
                Some("#ops") | Some("C123") => {}
                _ => return json_response(json!({"ok": false, "error": "channel_not_found"})),
            }
            let ts = if msg["thread_ts"].is_string() {
                "1700000000.000200"
            } else {
                "1700000000.000100"
            };
            json_response(
                json!({"ok": true, "ts": ts, "channel": "C123", "message": {"text": msg["text"]}}),
            )
        }
        _ => (StatusCode::NOT_FOUND, "no_service").into_response(),
    }
}

#[test]
fn slack_incoming_webhook_colour_secret_and_refusal() {
    let slack = Slack::start();
    let d = Dir::new("webhook");
    let hook = format!("{}/services/T0/B0/XYZ", slack.base);
    let bad_hook = format!("{}/services/T0/B0/BAD", slack.base);
    let dead_hook = format!("http://127.0.0.1:{}/services/T0/B0/DEAD", closed_port());
    let rb = r#"version: 1
name: webhook
secrets:
  hook: {env: TEST_SLACK_HOOK}
  bad_hook: {env: TEST_SLACK_BAD_HOOK}
  dead_hook: {env: TEST_SLACK_DEAD_HOOK}
steps:
  - id: alert
    uses: slack.post
    with:
      webhook_url: "{{ secrets.hook }}"
      text: "deploy of *web* failed in prod"
      color: danger
  - id: refused
    uses: slack.post
    continue_on_error: true
    with:
      webhook_url: "{{ secrets.bad_hook }}"
      text: "never shown"
  - id: unreachable
    uses: slack.post
    continue_on_error: true
    with:
      webhook_url: "{{ secrets.dead_hook }}"
      text: "nobody listens"
"#;
    let (code, report, o) = run(
        &d,
        rb,
        &[],
        &[
            ("TEST_SLACK_HOOK", hook.as_str()),
            ("TEST_SLACK_BAD_HOOK", bad_hook.as_str()),
            ("TEST_SLACK_DEAD_HOOK", dead_hook.as_str()),
        ],
    );
    assert_eq!(code, 0, "{}", text(&o));

    let alert = step(&report, "alert");
    assert_eq!(alert["status"], "succeeded", "{alert}");
    assert_eq!(alert["result"]["ok"], true, "{alert}");
    let got = slack.to("/services/T0/B0/XYZ");
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].method, "POST");
    assert!(
        got[0]
            .header("content-type")
            .starts_with("application/json"),
        "{got:?}"
    );
    let msg = got[0].json();
    assert_eq!(msg["attachments"][0]["color"], "danger", "{msg}");
    assert_eq!(
        msg["attachments"][0]["text"], "deploy of *web* failed in prod",
        "{msg}"
    );
    // Only in the attachment: a top-level text would show the message twice.
    assert!(msg.get("text").is_none(), "{msg}");

    // A 400 `invalid_payload` fails the step with Slack's word, and is not tried again.
    let refused = step(&report, "refused");
    assert_eq!(refused["status"], "failed", "{refused}");
    let e = error_of(&report, "refused");
    assert!(e.contains("invalid_payload"), "{e}");
    assert_eq!(
        slack.to("/services/T0/B0/BAD").len(),
        1,
        "a 400 was retried"
    );

    // A webhook nobody answers fails the step (its error holds the URL, masked).
    let unreachable = step(&report, "unreachable");
    assert_eq!(unreachable["status"], "failed", "{unreachable}");
    let e = error_of(&report, "unreachable");
    assert!(e.contains("cannot connect"), "{e}");

    // The webhook URLs came from secrets: they appear nowhere in the run folder or on the
    // terminal, not even their secret path.
    let all = run_folder(&d) + &text(&o);
    for secret in [
        hook.as_str(),
        bad_hook.as_str(),
        dead_hook.as_str(),
        "/services/T0/B0/XYZ",
        "/services/T0/B0/BAD",
        "/services/T0/B0/DEAD",
    ] {
        assert!(!all.contains(secret), "{secret} leaked:\n{all}");
    }
}

#[test]
fn slack_bot_token_threads_and_api_errors() {
    let slack = Slack::start();
    let d = Dir::new("bot");
    let rb = format!(
        r##"version: 1
name: bot
secrets:
  token: {{env: TEST_SLACK_TOKEN}}
steps:
  - id: first
    uses: slack.post
    with:
      token: "{{{{ secrets.token }}}}"
      channel: "#ops"
      api_url: {api}
      text: "rolling restart of web started"
  - id: reply
    uses: slack.post
    with:
      token: "{{{{ secrets.token }}}}"
      channel: "{{{{ steps.first.result.channel }}}}"
      thread_ts: "{{{{ steps.first.result.ts }}}}"
      api_url: {api}/
      text: "web1 done"
  - id: nowhere
    uses: slack.post
    continue_on_error: true
    with:
      token: "{{{{ secrets.token }}}}"
      channel: "#no-such-channel"
      api_url: {api}
      text: "lost"
"##,
        api = format!("{}/api", slack.base)
    );
    let (code, report, o) = run(&d, &rb, &[], &[("TEST_SLACK_TOKEN", BOT_TOKEN)]);
    assert_eq!(code, 0, "{}", text(&o));

    let posts = slack.to("/api/chat.postMessage");
    assert_eq!(posts.len(), 3, "{posts:?}");
    for p in &posts {
        assert_eq!(p.method, "POST");
        assert_eq!(p.header("authorization"), format!("Bearer {BOT_TOKEN}"));
        assert!(
            p.header("content-type").starts_with("application/json"),
            "{p:?}"
        );
    }

    let first = step(&report, "first");
    assert_eq!(first["status"], "succeeded", "{first}");
    assert_eq!(first["result"]["ok"], true, "{first}");
    assert_eq!(first["result"]["ts"], "1700000000.000100", "{first}");
    assert_eq!(first["result"]["channel"], "C123", "{first}");
    let m = posts[0].json();
    assert_eq!(m["channel"], "#ops", "{m}");
    assert_eq!(m["text"], "rolling restart of web started", "{m}");
    assert!(m.get("thread_ts").is_none(), "{m}");

    // The reply went into the first message's thread, as text (not a number).
    let reply = step(&report, "reply");
    assert_eq!(reply["status"], "succeeded", "{reply}");
    assert_eq!(reply["result"]["ts"], "1700000000.000200", "{reply}");
    let m = posts[1].json();
    assert_eq!(m["thread_ts"], "1700000000.000100", "{m}");
    assert_eq!(m["channel"], "C123", "{m}");
    assert_eq!(m["text"], "web1 done", "{m}");

    // `ok: false` with HTTP 200 fails the step with Slack's error, once.
    let nowhere = step(&report, "nowhere");
    assert_eq!(nowhere["status"], "failed", "{nowhere}");
    let e = error_of(&report, "nowhere");
    assert!(e.contains("channel_not_found"), "{e}");
    assert_eq!(posts[2].json()["channel"], "#no-such-channel");

    let all = run_folder(&d) + &text(&o);
    assert!(!all.contains(BOT_TOKEN), "the token leaked:\n{all}");
    assert!(!all.contains("s3cr3tb0t"), "the token leaked:\n{all}");
}

#[test]
fn slack_wrong_token_fails_with_slacks_error() {
    let slack = Slack::start();
    let d = Dir::new("badtoken");
    let rb = format!(
        r##"version: 1
name: badtoken
steps:
  - id: post
    uses: slack.post
    with:
      token: xoxb-wrong
      channel: "#ops"
      api_url: {}/api
      text: hello
"##,
        slack.base
    );
    let (code, report, o) = run(&d, &rb, &[], &[]);
    assert_eq!(code, 1, "{}", text(&o));
    let e = error_of(&report, "post");
    assert!(e.contains("invalid_auth"), "{e}");
    assert_eq!(slack.to("/api/chat.postMessage").len(), 1);
}

#[test]
fn slack_dry_run_posts_nothing() {
    let slack = Slack::start();
    let d = Dir::new("dry");
    let hook = format!("{}/services/T0/B0/XYZ", slack.base);
    let rb = format!(
        r##"version: 1
name: dry
secrets:
  hook: {{env: TEST_SLACK_HOOK}}
  token: {{env: TEST_SLACK_TOKEN}}
steps:
  - id: webhook
    uses: slack.post
    with:
      webhook_url: "{{{{ secrets.hook }}}}"
      text: "would alert"
      color: danger
  - id: bot
    uses: slack.post
    with:
      token: "{{{{ secrets.token }}}}"
      channel: "#ops"
      api_url: {}/api
      text: "would tell the bot"
"##,
        slack.base
    );
    let before = slack.all().len();
    let (code, report, o) = run(
        &d,
        &rb,
        &["--dry-run"],
        &[
            ("TEST_SLACK_HOOK", hook.as_str()),
            ("TEST_SLACK_TOKEN", BOT_TOKEN),
        ],
    );
    assert_eq!(code, 0, "{}", text(&o));
    assert_eq!(report["dry_run"], true);
    assert_eq!(
        slack.all().len(),
        before,
        "the dry run posted: {:?}",
        slack.all()
    );

    let webhook = step(&report, "webhook");
    assert_eq!(webhook["status"], "succeeded", "{webhook}");
    let w = &webhook["result"]["would_send"];
    assert_eq!(w["attachments"][0]["color"], "danger", "{webhook}");
    assert_eq!(w["attachments"][0]["text"], "would alert", "{webhook}");
    let bot = step(&report, "bot");
    assert_eq!(bot["status"], "succeeded", "{bot}");
    let w = &bot["result"]["would_send"];
    assert_eq!(w["channel"], "#ops", "{bot}");
    assert_eq!(w["text"], "would tell the bot", "{bot}");

    let all = run_folder(&d) + &text(&o);
    for secret in [hook.as_str(), "/services/T0/B0/XYZ", BOT_TOKEN] {
        assert!(!all.contains(secret), "{secret} leaked:\n{all}");
    }
}

/// A port on 127.0.0.1 nothing listens on.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

// ---------------------------------------------------------------------------------------------
// Prometheus

/// A plain HTTP/1.0 GET of `url` (`http://127.0.0.1:PORT/...`): the status code and body.
fn http_get(url: &str) -> (u16, String) {
    let rest = url.strip_prefix("http://").expect("http:// URL");
    let (host, path) = rest.split_once('/').expect("URL with a path");
    let mut stream = TcpStream::connect(host).unwrap_or_else(|e| panic!("connect {host}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("HTTP answer");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

/// The Pushgateway's `/metrics` page.
fn gateway_metrics(gateway: &Pushgateway) -> String {
    let (status, body) = http_get(&format!("{}/metrics", gateway.url()));
    assert_eq!(status, 200, "{body}");
    body
}

/// Whether the exposition text has a sample `name{labels…} value`, labels in any order.
fn has_sample(metrics: &str, name: &str, labels: &[(&str, &str)], value: &str) -> bool {
    metrics.lines().any(|line| {
        let Some(rest) = line.strip_prefix(name).and_then(|r| r.strip_prefix('{')) else {
            return false;
        };
        let Some((inside, v)) = rest.rsplit_once("} ") else {
            return false;
        };
        v.trim() == value
            && labels
                .iter()
                .all(|(k, val)| inside.split(',').any(|p| p == format!("{k}=\"{val}\"")))
    })
}

/// The lines of the exposition text about `job`.
fn lines_of_job(metrics: &str, job: &str) -> Vec<String> {
    let needle = format!("job=\"{job}\"");
    metrics
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains(&needle))
        .map(str::to_string)
        .collect()
}

#[test]
fn prometheus_push_replace_add_delete() {
    let gateway = Pushgateway::start().unwrap_or_else(|e| panic!("{e}"));
    let d = Dir::new("push");
    let url = gateway.url();

    // Replace: a gauge and a counter, with labels, in the group {job, instance: web1}.
    let rb = format!(
        r#"version: 1
name: push
steps:
  - id: push
    uses: prometheus.push
    with:
      url: {url}
      job: opsbook_notify
      grouping: {{instance: web1}}
      method: replace
      metrics:
        - name: opsbook_test_queue_depth
          help: Messages waiting.
          value: 42.5
          labels: {{queue: emails}}
        - name: opsbook_test_deploys_total
          type: counter
          value: 3
          labels: {{env: prod}}
"#
    );
    let (code, report, o) = run(&d, &rb, &[], &[]);
    assert_eq!(code, 0, "{}", text(&o));
    let push = step(&report, "push");
    assert_eq!(push["result"]["samples"], 2, "{push}");
    assert_eq!(push["result"]["method"], "replace", "{push}");
    assert_eq!(
        push["result"]["url"],
        format!("{url}/metrics/job/opsbook_notify/instance/web1"),
        "{push}"
    );
    let m = gateway_metrics(&gateway);
    let group = [("job", "opsbook_notify"), ("instance", "web1")];
    let gauge = [group[0], group[1], ("queue", "emails")];
    let counter = [group[0], group[1], ("env", "prod")];
    assert!(
        has_sample(&m, "opsbook_test_queue_depth", &gauge, "42.5"),
        "{m}"
    );
    assert!(
        has_sample(&m, "opsbook_test_deploys_total", &counter, "3"),
        "{m}"
    );
    assert!(m.contains("# TYPE opsbook_test_queue_depth gauge"), "{m}");
    assert!(
        m.contains("# TYPE opsbook_test_deploys_total counter"),
        "{m}"
    );
    assert!(
        m.contains("# HELP opsbook_test_queue_depth Messages waiting."),
        "{m}"
    );

    // Add: another metric; the group keeps the first ones.
    let rb = format!(
        r#"version: 1
name: push-add
steps:
  - id: add
    uses: prometheus.push
    with:
      url: {url}
      job: opsbook_notify
      grouping: {{instance: web1}}
      method: add
      metrics:
        - name: opsbook_test_last_success_timestamp_seconds
          value: 1700000000
"#
    );
    let (code, report, o) = run(&d, &rb, &[], &[]);
    assert_eq!(code, 0, "{}", text(&o));
    assert_eq!(step(&report, "add")["result"]["method"], "add");
    let m = gateway_metrics(&gateway);
    assert!(
        has_sample(
            &m,
            "opsbook_test_last_success_timestamp_seconds",
            &group,
            "1.7e+09"
        ) || has_sample(
            &m,
            "opsbook_test_last_success_timestamp_seconds",
            &group,
            "1700000000"
        ),
        "{m}"
    );
    assert!(
        has_sample(&m, "opsbook_test_queue_depth", &gauge, "42.5"),
        "add dropped the first push:\n{m}"
    );
    assert!(
        has_sample(&m, "opsbook_test_deploys_total", &counter, "3"),
        "add dropped the first push:\n{m}"
    );

    // Delete: the whole group goes.
    let rb = format!(
        r#"version: 1
name: push-delete
steps:
  - id: delete
    uses: prometheus.push
    with:
      url: {url}
      job: opsbook_notify
      grouping: {{instance: web1}}
      method: delete
"#
    );
    let (code, report, o) = run(&d, &rb, &[], &[]);
    assert_eq!(code, 0, "{}", text(&o));
    assert_eq!(step(&report, "delete")["result"]["method"], "delete");
    let m = gateway_metrics(&gateway);
    let left = lines_of_job(&m, "opsbook_notify");
    assert!(left.is_empty(), "the group is still there: {left:#?}");
    assert!(!m.contains("opsbook_test_queue_depth{"), "{m}");
}

#[test]
fn prometheus_query_instant_range_thresholds_and_errors() {
    let gateway = Pushgateway::start().unwrap_or_else(|e| panic!("{e}"));
    let prometheus = Prometheus::start(&[gateway.url()]).unwrap_or_else(|e| panic!("{e}"));
    let d = Dir::new("query");

    let rb = format!(
        r#"version: 1
name: seed
steps:
  - id: push
    uses: prometheus.push
    with:
      url: {}
      job: opsbook_query
      grouping: {{instance: web1}}
      metrics:
        - name: opsbook_test_error_ratio
          value: 0.25
          labels: {{service: checkout}}
"#,
        gateway.url()
    );
    let (code, _, o) = run(&d, &rb, &[], &[]);
    assert_eq!(code, 0, "{}", text(&o));
    prometheus
        .wait_for(
            r#"opsbook_test_error_ratio{job="opsbook_query"}"#,
            Duration::from_secs(30),
        )
        .unwrap_or_else(|e| panic!("{e}"));

    let rb = format!(
        r#"version: 1
name: query
steps:
  - id: instant
    uses: prometheus.query
    with:
      url: {p}
      query: opsbook_test_error_ratio{{job="opsbook_query"}}
      expect: {{max: 0.5, min: 0.1}}
  - id: too_high
    uses: prometheus.query
    continue_on_error: true
    with:
      url: {p}
      query: opsbook_test_error_ratio{{job="opsbook_query"}}
      expect: {{max: 0.01}}
  - id: range
    uses: prometheus.query
    with:
      url: {p}/
      query: opsbook_test_error_ratio{{job="opsbook_query"}}
      range: {{last: 1m, step: 5s}}
  - id: syntax
    uses: prometheus.query
    continue_on_error: true
    with:
      url: {p}
      query: sum(opsbook_test_error_ratio
  - id: no_data
    uses: prometheus.query
    continue_on_error: true
    with:
      url: {p}
      query: opsbook_test_never_pushed
      expect: {{max: 1}}
  - id: no_data_allowed
    uses: prometheus.query
    with:
      url: {p}
      query: opsbook_test_never_pushed
      expect: {{max: 1, allow_empty: true}}
"#,
        p = prometheus.url()
    );
    let (code, report, o) = run(&d, &rb, &[], &[]);
    assert_eq!(code, 0, "{}", text(&o));

    let instant = step(&report, "instant");
    assert_eq!(instant["status"], "succeeded", "{instant}");
    let r = &instant["result"];
    assert_eq!(r["result_type"], "vector", "{r}");
    assert_eq!(r["value"], 0.25, "{r}");
    assert_eq!(r["values"], json!([0.25]), "{r}");
    assert_eq!(r["empty"], false, "{r}");
    let series = r["series"].as_array().unwrap();
    assert_eq!(series.len(), 1, "{r}");
    let labels = &series[0]["metric"];
    assert_eq!(labels["__name__"], "opsbook_test_error_ratio", "{r}");
    assert_eq!(labels["job"], "opsbook_query", "{r}");
    assert_eq!(labels["instance"], "web1", "{r}");
    assert_eq!(labels["service"], "checkout", "{r}");
    assert_eq!(series[0]["value"], 0.25, "{r}");

    // A threshold below the value fails the step, naming the value.
    let too_high = step(&report, "too_high");
    assert_eq!(too_high["status"], "failed", "{too_high}");
    let e = error_of(&report, "too_high");
    assert!(e.contains("0.25") && e.contains("above max 0.01"), "{e}");
    assert!(e.contains("service=\"checkout\""), "{e}");

    let range = step(&report, "range");
    assert_eq!(range["status"], "succeeded", "{range}");
    let r = &range["result"];
    assert_eq!(r["result_type"], "matrix", "{r}");
    let points = r["series"][0]["values"].as_array().unwrap();
    assert!(!points.is_empty(), "{r}");
    assert!(
        points.iter().all(|p| p[1] == 0.25 && p[0].is_number()),
        "{r}"
    );
    assert_eq!(r["value"], 0.25, "{r}");

    // Prometheus's own words for a PromQL syntax error.
    let syntax = step(&report, "syntax");
    assert_eq!(syntax["status"], "failed", "{syntax}");
    let e = error_of(&report, "syntax");
    assert!(e.contains("bad_data") && e.contains("parse error"), "{e}");

    // No data fails a threshold, unless allowed.
    let e = error_of(&report, "no_data");
    assert_eq!(step(&report, "no_data")["status"], "failed");
    assert!(e.contains("no data"), "{e}");
    let allowed = step(&report, "no_data_allowed");
    assert_eq!(allowed["status"], "succeeded", "{allowed}");
    assert_eq!(allowed["result"]["empty"], true, "{allowed}");
    assert_eq!(allowed["result"]["value"], Value::Null, "{allowed}");
}
