//! The shipped Kubernetes runbooks (k8s-auto-heal, k8s-auto-rollback, k8s-cluster-report) end
//! to end through the `opsbook` binary. No real API server can run here: they run against
//! `opsbook_testkit::kube::FakeKube`, a fake that speaks the real REST wire format (checked with
//! kubectl in tests/k8s_kubectl.rs), with its simulated Deployment controller on (pods crash
//! loop, fail to pull or get OOM-killed by the image's name). Slack is a small HTTP receiver.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use opsbook_testkit::kube::{FakeKube, Sim};
use serde_json::{json, Value};

/// An incoming-webhook receiver: answers `ok` and keeps every JSON body.
struct Slack {
    url: String,
    bodies: Arc<Mutex<Vec<Value>>>,
}

impl Slack {
    fn start() -> Slack {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the Slack receiver");
        let url = format!("http://{}/hook", listener.local_addr().expect("address"));
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let keep = bodies.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream);
                let mut length = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    let lower = line.to_ascii_lowercase();
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; length];
                let _ = reader.read_exact(&mut body);
                if let Ok(v) = serde_json::from_slice(&body) {
                    keep.lock().unwrap().push(v);
                }
                let mut stream = reader.into_inner();
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                );
            }
        });
        Slack { url, bodies }
    }

    fn texts(&self) -> Vec<String> {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .map(|b| b.to_string())
            .collect()
    }
}

fn run_shipped(
    d: &Dir,
    kube: &FakeKube,
    name: &str,
    args: &[&str],
    slack: Option<&Slack>,
) -> (i32, Value, Output) {
    let home = d.path("home");
    std::fs::create_dir_all(&home).unwrap();
    run_file(d, &shipped(name), args, |cmd| {
        cmd.env("KUBECONFIG", kube.kubeconfig())
            .env("HOME", &home)
            .env_remove("SLACK_WEBHOOK_URL");
        if let Some(s) = slack {
            cmd.env("SLACK_WEBHOOK_URL", &s.url);
        }
    })
}

fn deployment(ns: &str, name: &str, image: &str, replicas: i64) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": name, "image": image}]}}}})
}

/// Waits until the simulated controller has given the Deployment's pods their status.
fn settled(kube: &FakeKube, ns: &str, name: &str) -> Value {
    kube.wait_for(
        "apps/v1",
        "Deployment",
        Some(ns),
        name,
        Duration::from_secs(10),
        |d| {
            d["status"]["observedGeneration"] == d["metadata"]["generation"]
                && d["status"]["conditions"].as_array().is_some_and(|c| {
                    c.iter().any(|c| {
                        c["type"] == "Available" && c["status"] == "True"
                            || c["reason"] == "ProgressDeadlineExceeded"
                    })
                })
        },
    )
    .unwrap_or_else(|| panic!("deployment {ns}/{name} did not settle"))
}

fn restarted_at(kube: &FakeKube, ns: &str, name: &str) -> Option<String> {
    kube.get("apps/v1", "Deployment", Some(ns), name)
        .and_then(|d| {
            d["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"]
                .as_str()
                .map(str::to_string)
        })
}

#[test]
fn auto_heal_restarts_crash_looping_workloads_within_the_budget_and_tells_slack() {
    let kube = FakeKube::start();
    kube.simulate(Sim::Deployments);
    for (ns, name, image) in [
        ("shop", "web", "web:crash"),
        ("shop", "api", "api:1.0"),
        ("shop", "db", "db:bad"),
        ("jobs", "worker", "worker:crash"),
        ("jobs", "puller", "puller:nopull"),
    ] {
        kube.put(deployment(ns, name, image, 1));
    }
    for (ns, name) in [
        ("shop", "web"),
        ("shop", "api"),
        ("shop", "db"),
        ("jobs", "worker"),
    ] {
        settled(&kube, ns, name);
    }
    // A crash-looping pod with no workload: left alone (deleting it would lose it).
    kube.put(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "lonely", "namespace": "shop"},
        "spec": {"containers": [{"name": "app", "image": "app:1"}]},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}],
            "containerStatuses": [{"name": "app", "ready": false, "restartCount": 9, "image": "app:1",
                "imageID": "", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}}));
    let d = Dir::new("k8s-heal");
    let slack = Slack::start();

    // Dry run: the server checks each patch (dryRun=All); nothing changes; Slack only described.
    kube.clear_requests();
    let (code, report, o) = run_shipped(
        &d,
        &kube,
        "k8s-auto-heal.yaml",
        &["-p", "budget=2", "--dry-run"],
        Some(&slack),
    );
    assert_eq!(code, 0, "{}", text(&o));
    assert_eq!(
        report["outputs"]["restarted"],
        json!(["jobs/Deployment/worker", "shop/Deployment/db"]),
        "{report}"
    );
    let patches: Vec<_> = kube
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .collect();
    assert_eq!(patches.len(), 2, "{patches:?}");
    assert!(
        patches
            .iter()
            .all(|r| r.param("dryRun").as_deref() == Some("All")),
        "{patches:?}"
    );
    assert_eq!(restarted_at(&kube, "shop", "db"), None);

    // For real, with a budget of 2 of the 3 crash-looping workloads.
    let (code, report, o) = run_shipped(
        &d,
        &kube,
        "k8s-auto-heal.yaml",
        &["-p", "budget=2"],
        Some(&slack),
    );
    assert_eq!(code, 0, "{}", text(&o));
    let out = &report["outputs"];
    assert_eq!(
        out["restarted"],
        json!(["jobs/Deployment/worker", "shop/Deployment/db"]),
        "{out}"
    );
    assert_eq!(out["over_budget"], json!(["shop/Deployment/web"]), "{out}");
    // Five unhealthy pods: three crash loops, one image pull back-off, the lonely pod.
    assert_eq!(out["unhealthy_pods"], 5, "{out}");
    assert!(restarted_at(&kube, "jobs", "worker").is_some());
    assert!(restarted_at(&kube, "shop", "db").is_some());
    assert_eq!(restarted_at(&kube, "shop", "web"), None, "over the budget");
    assert_eq!(restarted_at(&kube, "shop", "api"), None, "healthy");
    assert_eq!(
        restarted_at(&kube, "jobs", "puller"),
        None,
        "not a crash loop"
    );
    assert!(kube.get("v1", "Pod", Some("shop"), "lonely").is_some());

    let texts = slack.texts();
    assert_eq!(texts.len(), 1, "{texts:?}");
    let real = &texts[0];
    assert!(
        real.contains("restarted") && real.contains("jobs/Deployment/worker, shop/Deployment/db"),
        "{real}"
    );
    assert!(
        real.contains("over the budget of 2, left alone:") && real.contains("shop/Deployment/web"),
        "{real}"
    );

    // Only one namespace, default budget: web is restarted now.
    let (code, report, o) = run_shipped(
        &d,
        &kube,
        "k8s-auto-heal.yaml",
        &["-p", "namespace=shop"],
        None,
    );
    assert_eq!(code, 0, "{}", text(&o));
    assert!(
        report["outputs"]["restarted"]
            .as_array()
            .unwrap()
            .contains(&json!("shop/Deployment/web")),
        "{report}"
    );
    assert!(restarted_at(&kube, "shop", "web").is_some());
}

#[test]
fn auto_rollback_undoes_a_failed_rollout_and_keeps_a_good_one() {
    let kube = FakeKube::start();
    kube.simulate(Sim::Deployments);
    kube.put(deployment("default", "web", "web:1.0", 2));
    settled(&kube, "default", "web");
    let d = Dir::new("k8s-rollback");
    let slack = Slack::start();
    let image = |k: &FakeKube| {
        k.get("apps/v1", "Deployment", Some("default"), "web")
            .unwrap()["spec"]["template"]["spec"]["containers"][0]["image"]
            .as_str()
            .unwrap()
            .to_string()
    };

    // A crash-looping image: the rollout fails, the Deployment goes back to web:1.0.
    let args = [
        "-p",
        "deployment=web",
        "-p",
        "container=web",
        "-p",
        "image=web:crash",
        "-p",
        "timeout=20s",
    ];
    let (code, report, o) = run_shipped(&d, &kube, "k8s-auto-rollback.yaml", &args, Some(&slack));
    assert_eq!(code, 1, "{}", text(&o));
    let rollout = step(&report, "rollout");
    assert_eq!(rollout["status"], "failed");
    assert!(
        rollout["error"]
            .as_str()
            .unwrap()
            .contains("exceeded its progress deadline"),
        "{rollout}"
    );
    let undo = &step(&report, "undo")["result"];
    assert_eq!(undo["action"], "rolled_back", "{undo}");
    assert_eq!(undo["to_revision"], 1, "{undo}");
    assert_eq!(step(&report, "recovered")["status"], "succeeded");
    assert_eq!(image(&kube), "web:1.0");
    let texts = slack.texts();
    assert_eq!(texts.len(), 1, "{texts:?}");
    assert!(
        texts[0].contains("rollout of web:crash failed") && texts[0].contains("healthy again"),
        "{}",
        texts[0]
    );

    // A good image rolls out; nothing is undone and Slack hears nothing.
    let args = [
        "-p",
        "deployment=web",
        "-p",
        "container=web",
        "-p",
        "image=web:2.0",
        "-p",
        "timeout=20s",
    ];
    let (code, report, o) = run_shipped(&d, &kube, "k8s-auto-rollback.yaml", &args, Some(&slack));
    assert_eq!(code, 0, "{}", text(&o));
    assert_eq!(report["outputs"]["rolled_out"], true);
    assert_eq!(report["outputs"]["previous_images"], json!(["web:1.0"]));
    assert_eq!(image(&kube), "web:2.0");
    assert_eq!(slack.texts().len(), 1);
}

#[test]
fn cluster_report_groups_unhealthy_pods_by_namespace_and_reason() {
    let kube = FakeKube::start();
    kube.simulate(Sim::Deployments);
    for (ns, name, image) in [
        ("shop", "web", "web:crash"),
        ("shop", "api", "api:1.0"),
        ("shop", "cache", "cache:oom"),
        ("jobs", "puller", "puller:nopull"),
        ("jobs", "worker", "worker:2"),
    ] {
        kube.put(deployment(ns, name, image, 1));
    }
    for (ns, name) in [
        ("shop", "web"),
        ("shop", "api"),
        ("shop", "cache"),
        ("jobs", "worker"),
    ] {
        settled(&kube, ns, name);
    }
    kube.wait_for(
        "apps/v1",
        "Deployment",
        Some("jobs"),
        "puller",
        Duration::from_secs(10),
        |d| d["status"]["observedGeneration"] == d["metadata"]["generation"],
    )
    .expect("puller observed");
    // Give the image-pull pod its status.
    std::thread::sleep(Duration::from_millis(300));
    let d = Dir::new("k8s-report");
    // Relative paths are relative to the runbook's folder: write into the test's folder.
    let dest = format!("report={}", d.path("report.md").display());
    let (code, report, o) = run_shipped(&d, &kube, "k8s-cluster-report.yaml", &["-p", &dest], None);
    assert_eq!(code, 0, "{}", text(&o));
    let out = &report["outputs"];
    assert_eq!(out["unhealthy"], 3, "{out}");
    assert_eq!(out["namespaces"], json!(["jobs", "shop"]), "{out}");
    assert_eq!(
        out["reasons"],
        json!(["CrashLoopBackOff", "Error", "ImagePullBackOff", "OOMKilled"]),
        "{out}"
    );
    let mut short = out["short_deployments"]
        .as_array()
        .unwrap_or_else(|| panic!("{report}"))
        .clone();
    short.sort_by_key(|v| v.to_string());
    assert_eq!(
        short,
        vec![json!("cache"), json!("puller"), json!("web")],
        "{out}"
    );
    let md = std::fs::read_to_string(d.path("report.md")).expect("the report");
    for want in [
        "pods, 3 unhealthy",
        "### jobs",
        "### shop",
        "| CrashLoopBackOff | 2:",
        "| ImagePullBackOff | 1: jobs/puller-",
        "| OOMKilled | 1: shop/cache-",
        "Deployment/web",
        "| shop/web | 0 / 1 |",
    ] {
        assert!(md.contains(want), "missing {want:?} in:\n{md}");
    }
    assert!(!md.contains("api-"), "a healthy pod is listed:\n{md}");

    // As a gate: unhealthy pods fail the run.
    let (code, report, o) = run_shipped(
        &d,
        &kube,
        "k8s-cluster-report.yaml",
        &["-p", &dest, "-p", "fail_when_unhealthy=true"],
        None,
    );
    assert_eq!(code, 1, "{}", text(&o));
    assert!(step(&report, "gate")["error"]
        .as_str()
        .unwrap()
        .contains("3 unhealthy pod(s)"));
}
