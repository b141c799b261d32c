//! The shipped HTTP, Slack and Prometheus runbooks, run end to end by the `opsbook` binary
//! against real servers: an in-process health endpoint and Slack-shaped webhook receiver
//! (axum on 127.0.0.1), a GitHub-shaped API, and the real Prometheus and Pushgateway
//! (`opsbook_testkit::prometheus`). No test asserts on wall-clock time.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use opsbook_testkit::prometheus::{Prometheus, Pushgateway};
use serde_json::{json, Value};

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("opsbook-rbh-{name}-{}", std::process::id()));
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

fn shipped(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("runbooks")
        .join(name)
}

/// Runs a shipped runbook with params; exit code, run.json, output.
fn run(d: &Dir, runbook: &str, params: &[String], env: &[(&str, &str)]) -> (i32, Value, Output) {
    let _ = std::fs::remove_dir_all(d.path("out"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_opsbook"));
    cmd.arg("run")
        .arg(shipped(runbook))
        .args(["--report-dir"])
        .arg(d.path("out"))
        .current_dir(&d.0)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    for p in params {
        cmd.args(["-p", p]);
    }
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

/// The health endpoint (`/healthz`: 503 until `up`), the Slack webhook receiver
/// (`/services/…`, recording each payload) and a GitHub-shaped API (`/repos/…`).
#[derive(Default)]
struct World {
    up: AtomicBool,
    slack: Mutex<Vec<Value>>,
    github_auth: Mutex<Vec<String>>,
}

fn serve(world: Arc<World>) -> String {
    let app = Router::new().fallback(any(handle)).with_state(world);
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
    format!("http://{}", rx.recv().unwrap())
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
    State(w): State<Arc<World>>,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let path = uri.path();
    let query = uri.query().unwrap_or("");
    if path == "/healthz" {
        return if w.up.load(Ordering::SeqCst) {
            json_response(StatusCode::OK, json!({"status": "up"}))
        } else {
            json_response(StatusCode::SERVICE_UNAVAILABLE, json!({"status": "down"}))
        };
    }
    if path.starts_with("/services/") {
        let payload: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        // Slack's webhook checks: text or blocks or attachments.
        if payload.get("text").is_none() && payload.get("attachments").is_none() {
            return (StatusCode::BAD_REQUEST, "invalid_payload").into_response();
        }
        w.slack.lock().unwrap().push(payload);
        return (StatusCode::OK, "ok").into_response();
    }
    if let Some(rest) = path.strip_prefix("/repos/acme/widget") {
        w.github_auth.lock().unwrap().push(
            headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string(),
        );
        if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer ghp_test") {
            return json_response(
                StatusCode::UNAUTHORIZED,
                json!({"message": "Bad credentials"}),
            );
        }
        return match rest {
            "" => json_response(
                StatusCode::OK,
                json!({"full_name": "acme/widget", "stargazers_count": 42, "forks_count": 7, "default_branch": "main"}),
            ),
            "/issues" => {
                // Three pages: issues and pull requests mixed, linked GitHub-style.
                let page: usize = query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("page="))
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(1);
                let items = match page {
                    1 => json!([{"number": 1}, {"number": 2, "pull_request": {}}]),
                    2 => json!([{"number": 3}, {"number": 4}]),
                    _ => json!([{"number": 5, "pull_request": {}}]),
                };
                let mut resp = json_response(StatusCode::OK, items);
                if page < 3 {
                    let link = format!(
                        "<{}?state=open&per_page=100&page={}>; rel=\"next\"",
                        path,
                        page + 1
                    );
                    resp.headers_mut().insert("link", link.parse().unwrap());
                }
                resp
            }
            "/releases/latest" => {
                json_response(StatusCode::NOT_FOUND, json!({"message": "Not Found"}))
            }
            _ => json_response(StatusCode::NOT_FOUND, json!({"message": "Not Found"})),
        };
    }
    (StatusCode::NOT_FOUND, "no such route").into_response()
}

#[test]
fn health_restart_notify_restarts_a_down_service_and_tells_slack() {
    let world = Arc::new(World::default());
    let base = serve(world.clone());
    let d = Dir::new("health");
    let webhook = format!("{base}/services/T0/B0/secretpart");
    let url = format!("url={base}/healthz");

    // Healthy: no restart, a green message.
    world.up.store(true, Ordering::SeqCst);
    let (code, report, o) = run(
        &d,
        "health-restart-notify.yaml",
        &[url.clone(), "service=checkout".into()],
        &[("SLACK_WEBHOOK_URL", &webhook)],
    );
    assert_eq!(code, 0, "{}", text(&o));
    assert_eq!(step(&report, "restart")["status"], "skipped");
    {
        let sent = world.slack.lock().unwrap();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0]["attachments"][0]["color"], "good");
        assert!(
            sent[0]["attachments"][0]["text"]
                .as_str()
                .unwrap()
                .contains("checkout is healthy"),
            "{}",
            sent[0]
        );
    }

    // Down: the restart command brings it up (here: a marker file the test turns into "up").
    world.up.store(false, Ordering::SeqCst);
    let marker = d.path("restarted");
    let restart = format!("restart_command=touch {}", marker.display());
    let w2 = world.clone();
    let m2 = marker.clone();
    let flip = std::thread::spawn(move || {
        for _ in 0..600 {
            if m2.exists() {
                w2.up.store(true, Ordering::SeqCst);
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let (code, report, o) = run(
        &d,
        "health-restart-notify.yaml",
        &[url.clone(), "service=checkout".into(), restart],
        &[("SLACK_WEBHOOK_URL", &webhook)],
    );
    flip.join().unwrap();
    assert_eq!(code, 0, "{}", text(&o));
    assert_eq!(step(&report, "probe")["status"], "failed");
    assert_eq!(step(&report, "restart")["status"], "succeeded");
    assert_eq!(step(&report, "recover")["status"], "succeeded");
    assert_eq!(report["outputs"]["recovered"], true);
    {
        let sent = world.slack.lock().unwrap();
        assert_eq!(sent.len(), 2);
        assert_eq!(sent[1]["attachments"][0]["color"], "good");
        let t = sent[1]["attachments"][0]["text"].as_str().unwrap();
        assert!(t.contains("restarted, healthy again"), "{t}");
    }

    // Down for good: the restart does not help, the run fails, Slack hears it in red.
    world.up.store(false, Ordering::SeqCst);
    let (code, report, o) = run(
        &d,
        "health-restart-notify.yaml",
        &[url, "recover_within=2s".into()],
        &[("SLACK_WEBHOOK_URL", &webhook)],
    );
    assert_eq!(code, 1, "{}", text(&o));
    assert_eq!(step(&report, "recover")["status"], "failed");
    let sent = world.slack.lock().unwrap();
    assert_eq!(sent.len(), 3);
    assert_eq!(sent[2]["attachments"][0]["color"], "danger");
    assert!(sent[2]["attachments"][0]["text"]
        .as_str()
        .unwrap()
        .contains("still unhealthy"));
    // The webhook URL (a secret) is nowhere in the run folder or the output.
    let all = std::fs::read_dir(d.path("out/logs"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap_or_default())
        .collect::<String>()
        + &std::fs::read_to_string(d.path("out/run.json")).unwrap()
        + &text(&o);
    assert!(!all.contains("secretpart"), "the webhook URL leaked");
}

#[test]
fn github_repo_runbook_follows_pages_with_a_token() {
    let world = Arc::new(World::default());
    let base = serve(world.clone());
    let d = Dir::new("github");
    let (code, report, o) = run(
        &d,
        "github-repo.yaml",
        &["repo=acme/widget".into(), format!("api={base}")],
        &[("GITHUB_TOKEN", "ghp_test")],
    );
    assert_eq!(code, 0, "{}", text(&o));
    assert_eq!(report["outputs"]["repo"], "acme/widget");
    assert_eq!(report["outputs"]["stars"], 42);
    assert_eq!(report["outputs"]["open_issues"], 3);
    assert_eq!(report["outputs"]["open_pull_requests"], 2);
    assert_eq!(report["outputs"]["latest_release"], Value::Null);
    assert_eq!(step(&report, "issues")["result"]["pages"], 3);
    assert!(world
        .github_auth
        .lock()
        .unwrap()
        .iter()
        .all(|a| a == "Bearer ghp_test"));
}

/// Pushes `http_requests_total` for two jobs twice, a few scrapes apart, so that `increase()`
/// over a minute sees real growth: `good` 1,000 requests with 5 errors; `bad` 100 with 40.
fn prometheus_with_traffic() -> (Pushgateway, Prometheus) {
    let gw = Pushgateway::start().unwrap_or_else(|e| panic!("{e}"));
    let prom = Prometheus::start(&[gw.url()]).unwrap_or_else(|e| panic!("{e}"));
    let push = |job: &str, ok: u64, errors: u64| {
        let body = format!(
            "# TYPE http_requests_total counter\nhttp_requests_total{{code=\"200\"}} {ok}\nhttp_requests_total{{code=\"500\"}} {errors}\n"
        );
        let status = Command::new("curl")
            .args(["-sf", "-X", "PUT", "--data-binary", &body])
            .arg(format!("{}/metrics/job/{job}", gw.url()))
            .status()
            .expect("curl");
        assert!(status.success(), "push to the Pushgateway failed");
    };
    push("good", 0, 0);
    push("bad", 0, 0);
    prom.wait_for("http_requests_total{job=\"bad\"}", Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}"));
    push("good", 995, 5);
    push("bad", 60, 40);
    prom.wait_for(
        "increase(http_requests_total{job=\"bad\",code=\"500\"}[1m]) > 0",
        Duration::from_secs(30),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    prom.wait_for(
        "increase(http_requests_total{job=\"good\",code=\"500\"}[1m]) > 0",
        Duration::from_secs(30),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    (gw, prom)
}

#[test]
fn canary_and_slo_runbooks_against_a_real_prometheus() {
    let (_gw, prom) = prometheus_with_traffic();
    let d = Dir::new("prom");
    let p = format!("prometheus={}", prom.url());

    // The good canary: 0.5 % errors, under the 5 % limit.
    let (code, report, o) = run(
        &d,
        "canary-check.yaml",
        &[
            p.clone(),
            "job=good".into(),
            "window=1m".into(),
            "max_error_ratio=0.05".into(),
        ],
        &[],
    );
    assert_eq!(code, 0, "{}", text(&o));
    let ratio = report["outputs"]["error_ratio"].as_f64().unwrap();
    assert!(ratio > 0.0 && ratio < 0.05, "ratio {ratio}");
    assert!(report["outputs"]["requests"].as_f64().unwrap() > 0.0);

    // The bad canary: 40 % errors; the step fails with the number.
    let (code, report, o) = run(
        &d,
        "canary-check.yaml",
        &[
            p.clone(),
            "job=bad".into(),
            "window=1m".into(),
            "max_error_ratio=0.05".into(),
        ],
        &[],
    );
    assert_eq!(code, 1, "{}", text(&o));
    let e = step(&report, "error_ratio")["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(e.contains("above max 0.05"), "{e}");

    // No traffic at all: the gate does not pass on no data.
    let (code, report, _) = run(
        &d,
        "canary-check.yaml",
        &[p.clone(), "job=absent".into(), "window=1m".into()],
        &[],
    );
    assert_eq!(code, 1);
    assert!(step(&report, "traffic")["error"]
        .as_str()
        .unwrap()
        .contains("no data"));

    // The SLO report of the good job (0.5 % errors) against 99 %: half the budget is left.
    let report_file = d.path("slo.md");
    let (code, report, o) = run(
        &d,
        "slo-report.yaml",
        &[
            p,
            "job=good".into(),
            "window=1m".into(),
            "objective=0.99".into(),
            format!("report={}", report_file.display()),
        ],
        &[],
    );
    assert_eq!(code, 0, "{}", text(&o));
    let availability = report["outputs"]["availability"].as_f64().unwrap();
    assert!((0.99..1.0).contains(&availability), "{availability}");
    let left = report["outputs"]["budget_left"].as_f64().unwrap();
    assert!(left > 0.0 && left < 1.0, "budget left {left}");
    let md = std::fs::read_to_string(&report_file).unwrap_or_default();
    assert!(md.contains("# SLO report: good"), "{md}");
    assert!(md.contains("| Error budget left |"), "{md}");
    assert!(
        md.contains("within its objective") || md.contains("quarter"),
        "{md}"
    );
}
