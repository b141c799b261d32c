//! End-to-end tests of the `k8s.*` actions through the `opsbook` binary.
//!
//! No real Kubernetes API server can run here, so these run against
//! `opsbook_testkit::kube::FakeKube`: a fake API server on 127.0.0.1 that speaks the real
//! REST wire format (discovery, lists without kind, the four patch content types, server-side
//! apply with field-manager conflicts, `dryRun=All`, scale and status subresources, watch,
//! logs, WebSocket exec, Status errors) and is itself checked with the real kubectl in
//! `tests/k8s_kubectl.rs`. Its opt-in controller simulations (`Sim::Deployments`,
//! `Sim::Jobs`) stand in for kube-controller-manager and the kubelet. `KUBECONFIG` points at
//! the fake's kubeconfig (contexts `fake`, namespace `default`, and `fake-other`, namespace
//! `other`).

mod common;

use std::process::Output;
use std::time::Duration;

use common::*;
use opsbook_testkit::kube::{ExecResult, FakeKube, Sim};
use serde_json::{json, Value};

/// Runs a runbook with `KUBECONFIG` pointing at the fake (and a HOME without a kubeconfig).
fn run_k8s(d: &Dir, kube: &FakeKube, runbook: &str, extra: &[&str]) -> (i32, Value, Output) {
    let home = d.path("home");
    std::fs::create_dir_all(&home).unwrap();
    run_with(d, runbook, extra, |cmd| {
        cmd.env("KUBECONFIG", kube.kubeconfig()).env("HOME", &home);
    })
}

fn err(report: &Value, id: &str) -> String {
    step(report, id)["error"]
        .as_str()
        .unwrap_or_else(|| panic!("step {id} did not fail: {}", step(report, id)))
        .to_string()
}

fn pod(name: &str, ns: &str, labels: Value, status: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"containers": [{"name": "app", "image": "app:1"}], "nodeName": "fake-node"},
        "status": status})
}

fn running() -> Value {
    json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}],
        "containerStatuses": [{"name": "app", "ready": true, "restartCount": 0, "image": "app:1",
            "imageID": "", "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}]})
}

fn crashing(last: &str, code: i64) -> Value {
    json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}],
        "containerStatuses": [{"name": "app", "ready": false, "restartCount": 6, "image": "app:1",
            "imageID": "", "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 5m0s restarting failed container"}},
            "lastState": {"terminated": {"reason": last, "exitCode": code}}}]})
}

#[test]
fn get_and_list_with_selectors_namespaces_and_pod_health() {
    let kube = FakeKube::start();
    kube.put(pod("web-1", "default", json!({"app": "web"}), running()));
    kube.put(pod(
        "web-2",
        "default",
        json!({"app": "web"}),
        crashing("OOMKilled", 137),
    ));
    kube.put(pod(
        "db-1",
        "default",
        json!({"app": "db"}),
        crashing("Error", 1),
    ));
    kube.put(pod("web-x", "other", json!({"app": "web"}), running()));
    kube.put(json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "api-7d9f8", "namespace": "default", "uid": "rs-uid"},
        "spec": {"selector": {"matchLabels": {"app": "api"}}, "template": {"metadata": {"labels": {"app": "api"}},
            "spec": {"containers": [{"name": "app", "image": "api:1"}]}}}}));
    kube.put(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "api-7d9f8-abcde", "namespace": "default",
            "labels": {"app": "api", "pod-template-hash": "7d9f8"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "api-7d9f8", "uid": "rs-uid", "controller": true}]},
        "spec": {"containers": [{"name": "app", "image": "api:1"}]},
        "status": {"phase": "Pending", "containerStatuses": [{"name": "app", "ready": false, "restartCount": 0, "image": "api:1", "imageID": "",
            "state": {"waiting": {"reason": "ImagePullBackOff"}}}]}}));
    kube.put(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "settings", "namespace": "default"}, "data": {"level": "debug"}}));
    let d = Dir::new("k8s-read");
    let rb = r#"version: 1
name: read
steps:
  - id: web
    uses: k8s.list
    with:
      kind: pods
      labels: {app: web}
  - id: everything
    uses: k8s.list
    with:
      kind: Pod
      all_namespaces: true
  - id: set_based
    uses: k8s.list
    with:
      kind: po
      labels: "app in (web,db),app!=db"
      fields: "status.phase=Running"
  - id: other
    uses: k8s.list
    with:
      kind: Pod
      context: fake-other
  - id: cm
    uses: k8s.get
    with:
      kind: ConfigMap
      name: settings
  - id: pod
    uses: k8s.get
    with:
      kind: Pod
      name: web-2
  - id: absent
    uses: k8s.get
    with:
      kind: Deployment
      name: nope
      missing_ok: true
  - id: missing
    uses: k8s.get
    continue_on_error: true
    with:
      kind: Deployment
      name: nope
  - id: bad_field
    uses: k8s.list
    continue_on_error: true
    with:
      kind: Pod
      fields: "spec.bogus=1"
  - id: bad_kind
    uses: k8s.list
    continue_on_error: true
    with:
      kind: Widget
      api_version: apps/v1
"#;
    let (code, report, o) = run_k8s(&d, &kube, rb, &[]);
    assert_eq!(code, 0, "{}", text(&o));
    let web = &step(&report, "web")["result"];
    assert_eq!(web["names"], json!(["web-1", "web-2"]), "{web}");
    // A real API server leaves kind/apiVersion out of list items; the plugin fills them in.
    assert_eq!(web["items"][0]["kind"], "Pod");
    assert_eq!(web["items"][0]["apiVersion"], "v1");
    assert_eq!(web["items"][0]["health"]["unhealthy"], false);
    let sick = &web["items"][1]["health"];
    assert_eq!(sick["unhealthy"], true, "{sick}");
    assert_eq!(sick["reasons"], json!(["CrashLoopBackOff", "OOMKilled"]));
    assert_eq!(sick["restarts"], 6);
    assert_eq!(sick["containers"][0]["last_exit_code"], 137);
    assert_eq!(web["unhealthy"].as_array().unwrap().len(), 1);
    assert_eq!(web["unhealthy"][0]["name"], "web-2");

    let all = &step(&report, "everything")["result"];
    assert_eq!(all["count"], 5, "{all}");
    let unhealthy: Vec<(&str, &str)> = all["unhealthy"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["name"].as_str().unwrap(),
                u["reasons"][0].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        unhealthy,
        [
            ("api-7d9f8-abcde", "ImagePullBackOff"),
            ("db-1", "CrashLoopBackOff"),
            ("web-2", "CrashLoopBackOff")
        ]
    );
    let api = all["unhealthy"][0].clone();
    assert_eq!(
        api["workload"],
        json!({"kind": "Deployment", "name": "api"}),
        "{api}"
    );
    assert_eq!(
        step(&report, "set_based")["result"]["names"],
        json!(["web-1", "web-2"])
    );
    assert_eq!(step(&report, "other")["result"]["names"], json!(["web-x"]));
    assert_eq!(
        step(&report, "cm")["result"]["object"]["data"]["level"],
        "debug"
    );
    assert_eq!(step(&report, "cm")["result"]["found"], true);
    assert_eq!(
        step(&report, "pod")["result"]["object"]["health"]["reasons"][1],
        "OOMKilled"
    );
    assert_eq!(
        step(&report, "absent")["result"],
        json!({"found": false, "object": null})
    );
    let missing = err(&report, "missing");
    assert!(
        missing.contains("NotFound (404)")
            && missing.contains("deployments.apps \"nope\" not found"),
        "{missing}"
    );
    let bad = err(&report, "bad_field");
    assert!(
        bad.contains("BadRequest (400)") && bad.contains("field label not supported"),
        "{bad}"
    );
    let bad = err(&report, "bad_kind");
    assert!(bad.contains("no kind `Widget` in apps/v1"), "{bad}");
    // One discovery request per group version and connection (two contexts here).
    let discovery = kube
        .requests()
        .iter()
        .filter(|r| r.path == "/api/v1")
        .count();
    assert_eq!(discovery, 2);
}

/// One raw request to the fake as another client would send it (to set up field managers).
fn http(
    kube: &FakeKube,
    method: &str,
    path: &str,
    content_type: &str,
    body: &str,
) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(kube.addr()).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        kube.addr(),
        opsbook_testkit::kube::TOKEN,
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let code = out[9..12].parse().unwrap();
    (code, out)
}

fn writes(kube: &FakeKube) -> Vec<opsbook_testkit::kube::Seen> {
    kube.requests()
        .into_iter()
        .filter(|r| matches!(r.method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE"))
        .collect()
}

const APPLY: &str = r#"version: 1
name: apply
params:
  replicas: {type: integer, default: 2}
steps:
  - id: apply
    uses: k8s.apply
    with:
      manifest: |
        apiVersion: apps/v1
        kind: Deployment
        metadata:
          name: web
        spec:
          replicas: {{ params.replicas }}
          selector: {matchLabels: {app: web}}
          template:
            metadata: {labels: {app: web}}
            spec:
              containers: [{name: web, image: "nginx:1.27"}]
        ---
        apiVersion: v1
        kind: Namespace
        metadata: {name: team}
      files: [manifests]
"#;

#[test]
fn apply_server_side_dry_run_unchanged_conflicts_and_forbidden() {
    let kube = FakeKube::start();
    let d = Dir::new("k8s-apply");
    d.write(
        "manifests/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: team\ndata:\n  level: info\n",
    );
    d.write("manifests/notes.txt", "not a manifest");

    // Dry run: the server checks every object and stores nothing.
    let (code, report, o) = run_k8s(&d, &kube, APPLY, &["--dry-run"]);
    assert_eq!(code, 0, "{}", text(&o));
    let r = &step(&report, "apply")["result"];
    assert_eq!(r["created"], 3, "{r}");
    let kinds: Vec<&str> = r["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["Namespace", "Deployment", "ConfigMap"],
        "Namespaces go first"
    );
    assert!(kube
        .get("apps/v1", "Deployment", Some("default"), "web")
        .is_none());
    assert!(kube
        .get("v1", "ConfigMap", Some("team"), "settings")
        .is_none());
    let w = writes(&kube);
    assert_eq!(w.len(), 3);
    for r in &w {
        assert_eq!(r.method, "PATCH");
        assert_eq!(r.content_type, "application/apply-patch+yaml");
        assert_eq!(r.param("dryRun").as_deref(), Some("All"), "{r:?}");
        assert_eq!(r.param("fieldManager").as_deref(), Some("opsbook"));
        assert_eq!(r.param("force"), None);
    }
    kube.clear_requests();

    let (code, report, o) = run_k8s(&d, &kube, APPLY, &[]);
    assert_eq!(code, 0, "{}", text(&o));
    let r = &step(&report, "apply")["result"];
    assert_eq!(
        (r["created"].as_u64(), r["configured"].as_u64()),
        (Some(3), Some(0)),
        "{r}"
    );
    assert_eq!(r["objects"][1]["namespace"], "default");
    assert_eq!(r["objects"][2]["namespace"], "team");
    assert_eq!(
        r["objects"][0]["namespace"],
        Value::Null,
        "a Namespace has none"
    );
    let web = kube
        .get("apps/v1", "Deployment", Some("default"), "web")
        .unwrap();
    assert_eq!(web["spec"]["replicas"], 2);
    assert!(writes(&kube).iter().all(|r| r.param("dryRun").is_none()));

    // Again: nothing changes; then one field changes.
    let (code, report, _) = run_k8s(&d, &kube, APPLY, &[]);
    assert_eq!(code, 0);
    assert_eq!(step(&report, "apply")["result"]["unchanged"], 3, "{report}");
    let (code, report, _) = run_k8s(&d, &kube, APPLY, &["-p", "replicas=3"]);
    assert_eq!(code, 0);
    let r = &step(&report, "apply")["result"];
    assert_eq!(
        (r["configured"].as_u64(), r["unchanged"].as_u64()),
        (Some(1), Some(2)),
        "{r}"
    );
    assert_eq!(r["objects"][1]["action"], "configured");

    // Another field manager takes spec.replicas: opsbook's apply now conflicts.
    let (status, body) = http(
        &kube,
        "PATCH",
        "/apis/apps/v1/namespaces/default/deployments/web?fieldManager=kubectl&force=true",
        "application/apply-patch+yaml",
        r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web"},"spec":{"replicas":5}}"#,
    );
    assert_eq!(status, 200, "{body}");
    let (code, report, _) = run_k8s(&d, &kube, APPLY, &["-p", "replicas=4"]);
    assert_ne!(code, 0);
    let e = err(&report, "apply");
    assert!(
        e.contains("Conflict (409)") && e.contains("force_conflicts: true"),
        "{e}"
    );
    assert!(e.contains(".spec.replicas"), "{e}");
    let details = &step(&report, "apply")["result"];
    assert_eq!(details["code"], 409);
    assert_eq!(details["applied"][0]["kind"], "Namespace", "{details}");
    assert_eq!(
        kube.get("apps/v1", "Deployment", Some("default"), "web")
            .unwrap()["spec"]["replicas"],
        5
    );
    let forced = APPLY.replace(
        "      files: [manifests]\n",
        "      files: [manifests]\n      force_conflicts: true\n",
    );
    let (code, report, o) = run_k8s(&d, &kube, &forced, &["-p", "replicas=4"]);
    assert_eq!(code, 0, "{}", text(&o));
    assert_eq!(step(&report, "apply")["result"]["configured"], 1);
    assert_eq!(
        kube.get("apps/v1", "Deployment", Some("default"), "web")
            .unwrap()["spec"]["replicas"],
        4
    );
    assert!(writes(&kube)
        .iter()
        .any(|r| r.param("force").as_deref() == Some("true")));

    // 403 with the API's Status message.
    kube.deny("patch", "deployments", Some("default"));
    let (code, report, _) = run_k8s(&d, &kube, APPLY, &[]);
    assert_ne!(code, 0);
    let e = err(&report, "apply");
    assert!(
        e.contains("Forbidden (403)")
            && e.contains("User \"opsbook-test\" cannot patch resource \"deployments\" in API group \"apps\" in the namespace \"default\""),
        "{e}"
    );
    assert_eq!(step(&report, "apply")["result"]["reason"], "Forbidden");
}

#[test]
fn patch_scale_restart_delete_with_dry_run_retries_and_errors() {
    let kube = FakeKube::start();
    kube.put(json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "nginx:1"}, {"name": "sidecar", "image": "envoy:1"}]}}}}));
    for i in 1..=3 {
        kube.put(pod(
            &format!("batch-{i}"),
            "default",
            json!({"role": "batch"}),
            running(),
        ));
    }
    kube.put(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "settings", "namespace": "default"}, "data": {"level": "debug"}}));
    let d = Dir::new("k8s-writes");
    let rb = r#"version: 1
name: writes
steps:
  - id: label
    uses: k8s.patch
    with:
      kind: deploy
      name: web
      type: merge
      patch: {metadata: {labels: {tier: frontend}}}
  - id: image
    uses: k8s.patch
    needs: [label]
    with:
      kind: Deployment
      name: web
      patch:
        spec:
          template:
            spec:
              containers: [{name: web, image: "nginx:2"}]
  - id: jsonpatch
    uses: k8s.patch
    needs: [image]
    with:
      kind: Deployment
      name: web
      type: json
      patch: [{op: add, path: /metadata/annotations, value: {owner: sre}}]
  - id: scale
    uses: k8s.scale
    needs: [jsonpatch]
    with:
      name: web
      replicas: 4
  - id: scale_guard
    uses: k8s.scale
    needs: [scale]
    continue_on_error: true
    with:
      name: web
      replicas: 1
      current_replicas: 2
  - id: restart
    uses: k8s.rollout_restart
    needs: [scale_guard]
    with:
      name: web
  - id: settings
    uses: k8s.get
    with:
      kind: ConfigMap
      name: settings
  - id: drop_batch
    uses: k8s.delete
    needs: [guard]
    with:
      kind: Pod
      labels: {role: batch}
      grace_period: 1s
      timeout: 20s
  - id: drop_cm
    uses: k8s.delete
    needs: [settings]
    with:
      kind: ConfigMap
      name: settings
  - id: drop_missing
    uses: k8s.delete
    continue_on_error: true
    with:
      kind: ConfigMap
      name: nope
  - id: drop_missing_ok
    uses: k8s.delete
    with:
      kind: ConfigMap
      name: nope
      missing_ok: true
  - id: guard
    uses: k8s.delete
    continue_on_error: true
    with:
      kind: Pod
      labels: role
      max_objects: 0
"#;
    // A schema error (max_objects must be at least 1) is caught before anything runs.
    let (code, _, o) = run_k8s(&d, &kube, rb, &[]);
    assert_ne!(code, 0);
    assert!(text(&o).contains("max_objects"), "{}", text(&o));
    let rb = rb.replace(
        "max_objects: 0",
        "max_objects: 0\n      name_is_unknown: true",
    );
    let (code, _, o) = run_k8s(&d, &kube, &rb, &[]);
    assert_ne!(code, 0, "unknown fields are refused: {}", text(&o));
    let rb = rb.replace(
        "max_objects: 0\n      name_is_unknown: true",
        "max_objects: 2",
    );
    kube.put(pod(
        "batch-x",
        "default",
        json!({"role": "batch-x"}),
        running(),
    ));

    // Dry run first: every write asks the server with dryRun=All and nothing changes.
    let before = kube
        .get("apps/v1", "Deployment", Some("default"), "web")
        .unwrap();
    let (code, report, o) = run_k8s(&d, &kube, &rb, &["--dry-run"]);
    assert_eq!(code, 0, "{}", text(&o));
    let after = kube
        .get("apps/v1", "Deployment", Some("default"), "web")
        .unwrap();
    assert_eq!(
        before["metadata"]["resourceVersion"],
        after["metadata"]["resourceVersion"]
    );
    assert_eq!(kube.list("v1", "Pod", Some("default")).len(), 4);
    assert!(kube
        .get("v1", "ConfigMap", Some("default"), "settings")
        .is_some());
    let w = writes(&kube);
    assert!(w.len() >= 8, "{w:?}");
    for r in &w {
        let dry = r.param("dryRun").or_else(|| {
            r.json()
                .and_then(|b| b["dryRun"][0].as_str().map(str::to_string))
        });
        assert_eq!(dry.as_deref(), Some("All"), "{r:?}");
    }
    // The dry-run patch shows what the object would become.
    assert_eq!(
        step(&report, "label")["result"]["object"]["metadata"]["labels"]["tier"],
        "frontend"
    );
    assert_eq!(step(&report, "label")["result"]["changed"], true);
    assert_eq!(step(&report, "scale")["result"]["previous"], 2);
    kube.clear_requests();

    // For real, with a 409 on the scale (re-read and retried) and a 503 on a read (retried).
    kube.fail_next(
        "PATCH",
        "/apis/apps/v1/namespaces/default/deployments/web/scale",
        409,
        "Conflict",
    );
    kube.fail_next(
        "GET",
        "/api/v1/namespaces/default/configmaps/settings",
        503,
        "ServiceUnavailable",
    );
    let (code, report, o) = run_k8s(&d, &kube, &rb, &[]);
    assert_eq!(code, 0, "{}", text(&o));
    let web = kube
        .get("apps/v1", "Deployment", Some("default"), "web")
        .unwrap();
    assert_eq!(web["metadata"]["labels"]["tier"], "frontend");
    let containers = &web["spec"]["template"]["spec"]["containers"];
    assert_eq!(containers[0]["image"], "nginx:2", "{containers}");
    assert_eq!(
        containers[1]["image"], "envoy:1",
        "strategic merge keeps the sidecar"
    );
    assert_eq!(web["metadata"]["annotations"]["owner"], "sre");
    assert_eq!(web["spec"]["replicas"], 4);
    assert_eq!(
        step(&report, "scale")["result"],
        json!({"kind": "Deployment", "name": "web",
        "namespace": "default", "previous": 2, "desired": 4, "changed": true})
    );
    assert!(
        text(&o).contains("changed meanwhile (409 Conflict)"),
        "{}",
        text(&o)
    );
    let guard = err(&report, "scale_guard");
    assert!(guard.contains("has 4 replicas, not 2"), "{guard}");
    let restarted = web["spec"]["template"]["metadata"]["annotations"]
        ["kubectl.kubernetes.io/restartedAt"]
        .as_str()
        .unwrap();
    assert_eq!(
        step(&report, "restart")["result"]["restarted_at"],
        restarted
    );
    let strategic: Vec<_> = kube
        .requests()
        .into_iter()
        .filter(|r| r.content_type == "application/strategic-merge-patch+json")
        .collect();
    assert_eq!(strategic.len(), 2, "the image patch and the restart");
    assert_eq!(
        step(&report, "settings")["result"]["object"]["data"]["level"],
        "debug"
    );
    assert!(
        text(&o).contains("ServiceUnavailable (503)"),
        "the retry is logged: {}",
        text(&o)
    );

    let dropped = &step(&report, "drop_batch")["result"];
    assert_eq!(dropped["count"], 3, "{dropped}");
    assert_eq!(dropped["gone"], true);
    assert_eq!(
        kube.list("v1", "Pod", Some("default")).len(),
        1,
        "batch-x stays"
    );
    let del = kube
        .requests()
        .into_iter()
        .find(|r| r.method == "DELETE" && r.path.ends_with("/pods/batch-1"))
        .unwrap();
    let opts = del.json().unwrap();
    assert_eq!(opts["propagationPolicy"], "Background", "{opts}");
    assert_eq!(opts["gracePeriodSeconds"], 1);
    assert!(kube
        .get("v1", "ConfigMap", Some("default"), "settings")
        .is_none());
    let missing = err(&report, "drop_missing");
    assert!(
        missing.contains("NotFound (404)") && missing.contains("configmaps \"nope\" not found"),
        "{missing}"
    );
    assert_eq!(step(&report, "drop_missing_ok")["result"]["count"], 0);
    assert!(kube
        .get("apps/v1", "Deployment", Some("default"), "web")
        .is_some());
    let guard = err(&report, "guard");
    assert!(
        guard.contains("the selector matches 4 pods (more than max_objects: 2); nothing deleted"),
        "{guard}"
    );
}

const DEPLOY: &str = r#"version: 1
name: deploy
params:
  image: {type: string, required: true}
steps:
  - id: apply
    uses: k8s.apply
    with:
      manifest:
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: web}
        spec:
          replicas: 2
          selector: {matchLabels: {app: web}}
          template:
            metadata: {labels: {app: web}}
            spec:
              containers: [{name: web, image: "{{ params.image }}"}]
  - id: status
    uses: k8s.rollout_status
    needs: [apply]
    with:
      name: web
      timeout: 20s
"#;

#[test]
fn rollout_status_undo_restart_and_waits_with_the_deployment_controller() {
    let kube = FakeKube::start();
    kube.simulate(Sim::Deployments);
    let d = Dir::new("k8s-rollout");
    for (revision, image) in [(1, "nginx:1"), (2, "nginx:2")] {
        let (code, report, o) = run_k8s(&d, &kube, DEPLOY, &["-p", &format!("image={image}")]);
        assert_eq!(code, 0, "{}", text(&o));
        let s = &step(&report, "status")["result"];
        assert_eq!(s["done"], true, "{s}");
        assert_eq!(s["message"], "deployment \"web\" successfully rolled out");
        assert_eq!(s["revision"], revision, "{s}");
        assert!(text(&o).contains("successfully rolled out"));
    }

    // A crash-looping image: the rollout fails with the progress deadline and the new pods' health.
    let (code, report, o) = run_k8s(&d, &kube, DEPLOY, &["-p", "image=app:bad"]);
    assert_ne!(code, 0, "{}", text(&o));
    let e = err(&report, "status");
    assert!(
        e.contains("deployment \"web\" exceeded its progress deadline"),
        "{e}"
    );
    assert!(e.contains("CrashLoopBackOff"), "{e}");
    let details = &step(&report, "status")["result"];
    assert_eq!(details["reason"], "ProgressDeadlineExceeded", "{details}");
    assert!(
        details["unavailable_replicas"].as_i64().unwrap() > 0,
        "{details}"
    );
    let new_pods = details["new_pods"].as_array().unwrap();
    assert!(!new_pods.is_empty(), "{details}");
    assert!(
        new_pods
            .iter()
            .all(|p| p["reasons"][0] == "CrashLoopBackOff"),
        "{details}"
    );
    assert_eq!(details["revision"], 3);

    // Roll back (dry run first: nothing changes), then for real; the rollout then succeeds.
    let undo = r#"version: 1
name: undo
steps:
  - id: undo
    uses: k8s.rollout_undo
    with:
      name: web
  - id: status
    uses: k8s.rollout_status
    needs: [undo]
    with:
      name: web
      timeout: 20s
  - id: available
    uses: k8s.wait
    needs: [status]
    with:
      kind: Deployment
      name: web
      condition: {type: Available}
      that: object.status.readyReplicas == object.spec.replicas
      timeout: 10s
"#;
    kube.clear_requests();
    let (code, report, o) = run_k8s(&d, &kube, undo, &["--dry-run"]);
    assert_eq!(code, 0, "{}", text(&o));
    assert_eq!(step(&report, "undo")["result"]["to_revision"], 2);
    let patch = writes(&kube)
        .into_iter()
        .find(|r| r.method == "PATCH")
        .unwrap();
    assert_eq!(patch.content_type, "application/json-patch+json");
    assert_eq!(patch.param("dryRun").as_deref(), Some("All"));
    let image = |kube: &FakeKube| {
        kube.get("apps/v1", "Deployment", Some("default"), "web")
            .unwrap()["spec"]["template"]["spec"]["containers"][0]["image"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(image(&kube), "app:bad");
    let (code, report, o) = run_k8s(&d, &kube, undo, &[]);
    assert_eq!(code, 0, "{}", text(&o));
    let u = &step(&report, "undo")["result"];
    assert_eq!(u["action"], "rolled_back", "{u}");
    assert_eq!(
        (u["from_revision"].as_i64(), u["to_revision"].as_i64()),
        (Some(3), Some(2))
    );
    assert_eq!(u["images"], json!(["nginx:2"]));
    assert_eq!(image(&kube), "nginx:2");
    assert_eq!(step(&report, "status")["result"]["done"], true);
    assert_eq!(step(&report, "available")["result"]["met"], true);

    // The template already is revision 4's (the ReplicaSet of nginx:2 took the next revision);
    // an unknown revision is an error; a paused Deployment is refused.
    let more = r#"version: 1
name: more
steps:
  - id: same
    uses: k8s.rollout_undo
    with: {name: web, to_revision: 4}
  - id: unknown
    uses: k8s.rollout_undo
    needs: [same]
    continue_on_error: true
    with: {name: web, to_revision: 99}
  - id: restart
    uses: k8s.rollout_restart
    needs: [unknown]
    with: {name: web}
  - id: restarted
    uses: k8s.rollout_status
    needs: [restart]
    with: {name: web, timeout: 20s}
  - id: pause
    uses: k8s.patch
    needs: [restarted]
    with: {kind: Deployment, name: web, type: merge, patch: {spec: {paused: true}}}
  - id: paused_restart
    uses: k8s.rollout_restart
    needs: [pause]
    continue_on_error: true
    with: {name: web}
  - id: not_a_workload
    uses: k8s.rollout_restart
    continue_on_error: true
    with: {kind: ConfigMap, name: web}
  - id: too_soon
    uses: k8s.wait
    continue_on_error: true
    with:
      kind: Deployment
      name: web
      condition: {type: Frozen}
      timeout: 1s
  - id: gone
    uses: k8s.wait
    with: {kind: Pod, name: never-there, deleted: true, timeout: 5s}
  - id: missing_status
    uses: k8s.rollout_status
    continue_on_error: true
    with: {name: nope, timeout: 5s}
"#;
    let (code, report, o) = run_k8s(&d, &kube, more, &[]);
    assert_eq!(code, 0, "{}", text(&o));
    assert_eq!(step(&report, "same")["result"]["action"], "skipped");
    let e = err(&report, "unknown");
    assert!(
        e.contains("unable to find specified revision 99 in history"),
        "{e}"
    );
    assert_eq!(step(&report, "restarted")["result"]["done"], true);
    let web = kube
        .get("apps/v1", "Deployment", Some("default"), "web")
        .unwrap();
    assert!(web["spec"]["template"]["metadata"]["annotations"]
        ["kubectl.kubernetes.io/restartedAt"]
        .is_string());
    let e = err(&report, "paused_restart");
    assert!(e.contains("can't restart paused deployment"), "{e}");
    let e = err(&report, "not_a_workload");
    assert!(e.contains("not ConfigMap"), "{e}");
    let e = err(&report, "too_soon");
    assert!(
        e.contains("was not condition Frozen=True within 1s") && e.contains("Available=True"),
        "{e}"
    );
    assert_eq!(step(&report, "gone")["result"]["met"], true);
    let e = err(&report, "missing_status");
    assert!(e.contains("does not exist"), "{e}");
}

#[test]
fn logs_and_exec_with_exit_codes_stdin_and_forbidden() {
    let kube = FakeKube::start();
    let two = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "api-1", "namespace": "default", "labels": {"app": "api"}},
        "spec": {"containers": [{"name": "api", "image": "api:1"}, {"name": "proxy", "image": "envoy:1"}], "nodeName": "fake-node"},
        "status": running()});
    kube.put(two);
    kube.put(pod(
        "web-1",
        "default",
        json!({"app": "web"}),
        crashing("OOMKilled", 137),
    ));
    kube.set_logs(
        "default",
        "api-1",
        Some("api"),
        "boot\nready\nserving\n",
        None,
    );
    kube.set_logs("default", "api-1", Some("proxy"), "proxy up\n", None);
    kube.set_logs(
        "default",
        "web-1",
        Some("app"),
        "starting again\n",
        Some("loading 2GB\nKilled\n"),
    );
    kube.on_exec(ExecResult::local);
    let d = Dir::new("k8s-logs-exec");
    let rb = r#"version: 1
name: logs
steps:
  - id: tail
    uses: k8s.logs
    with: {pod: api-1, tail: 2}
  - id: proxy
    uses: k8s.logs
    with: {pod: api-1, container: proxy}
  - id: all
    uses: k8s.logs
    with: {labels: {app: api}, all_containers: true, echo: false}
  - id: crashed
    uses: k8s.logs
    with: {pod: web-1, previous: true}
  - id: no_such_container
    uses: k8s.logs
    continue_on_error: true
    with: {pod: api-1, container: nope}
  - id: hello
    uses: k8s.exec
    with:
      pod: api-1
      command: [sh, -c, "echo hello; echo warn >&2"]
  - id: shell
    uses: k8s.exec
    with:
      labels: {app: api}
      container: proxy
      command: "cat; exit 3"
      stdin: "from stdin\n"
      expect_exit: [0, 3]
  - id: fails
    uses: k8s.exec
    continue_on_error: true
    with: {pod: api-1, command: "echo partial; exit 4"}
"#;
    let (code, report, o) = run_k8s(&d, &kube, rb, &[]);
    assert_eq!(code, 0, "{}", text(&o));
    assert_eq!(step(&report, "tail")["result"]["logs"], "ready\nserving\n");
    assert_eq!(
        step(&report, "tail")["result"]["streams"][0]["container"],
        "api",
        "the first container by default"
    );
    assert_eq!(step(&report, "proxy")["result"]["logs"], "proxy up\n");
    let all = &step(&report, "all")["result"];
    assert_eq!(all["streams"].as_array().unwrap().len(), 2, "{all}");
    assert!(
        all["logs"]
            .as_str()
            .unwrap()
            .contains("[api-1/proxy] proxy up"),
        "{all}"
    );
    assert_eq!(
        step(&report, "crashed")["result"]["logs"],
        "loading 2GB\nKilled\n"
    );
    let e = err(&report, "no_such_container");
    assert!(
        e.contains("no container `nope` (it has: api, proxy)"),
        "{e}"
    );
    let hello = &step(&report, "hello")["result"];
    assert_eq!(
        (
            hello["stdout"].as_str(),
            hello["stderr"].as_str(),
            hello["exit_code"].as_i64()
        ),
        (Some("hello\n"), Some("warn\n"), Some(0)),
        "{hello}"
    );
    assert_eq!(hello["container"], "api");
    let shell = &step(&report, "shell")["result"];
    assert_eq!(shell["exit_code"], 3, "{shell}");
    assert_eq!(shell["stdout"], "from stdin\n");
    let e = err(&report, "fails");
    assert!(
        e.contains("exited with 4") && e.contains("expected 0"),
        "{e}"
    );
    assert_eq!(step(&report, "fails")["result"]["stdout"], "partial\n");
    assert!(text(&o).contains("hello"), "exec output is in the step log");
    let exec = kube.requests().into_iter().find(|r| r.websocket).unwrap();
    assert_eq!(
        exec.params("command"),
        ["sh", "-c", "echo hello; echo warn >&2"]
    );

    // Dry run: the pod is found, nothing runs.
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = calls.clone();
    kube.on_exec(move |c| {
        seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        ExecResult::local(c)
    });
    let (code, report, o) = run_k8s(&d, &kube, rb, &["--dry-run"]);
    assert_eq!(code, 0, "{}", text(&o));
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert_eq!(step(&report, "hello")["result"]["dry_run"], true);

    kube.deny("create", "pods/exec", None);
    let (code, report, _) = run_k8s(&d, &kube, rb, &[]);
    assert_ne!(code, 0);
    let e = err(&report, "hello");
    assert!(e.contains("Forbidden") && e.contains("pods/exec"), "{e}");
}

#[test]
fn jobs_succeed_fail_stream_logs_and_are_deleted() {
    let kube = FakeKube::start();
    kube.simulate(Sim::Jobs);
    kube.on_exec(ExecResult::local);
    let d = Dir::new("k8s-job");
    let rb = r#"version: 1
name: jobs
steps:
  - id: ok
    uses: k8s.job
    with:
      image: busybox:1.36
      command: "echo migrating; echo to v42; echo done"
      env: {TARGET: v42}
      timeout: 30s
  - id: kept
    uses: k8s.job
    with:
      name: keep-me
      namespace: other
      spec:
        template:
          spec:
            restartPolicy: Never
            containers: [{name: main, image: busybox, command: [echo, kept]}]
      keep: true
  - id: broken
    uses: k8s.job
    continue_on_error: true
    with:
      image: busybox
      command: [sh, -c, "echo about to fail; exit 4"]
      backoff_limit: 1
"#;
    let (code, report, o) = run_k8s(&d, &kube, rb, &[]);
    assert_eq!(code, 0, "{}", text(&o));
    let ok = &step(&report, "ok")["result"];
    assert_eq!(ok["status"], "succeeded", "{ok}");
    assert_eq!(ok["succeeded"], 1);
    assert_eq!(ok["logs"], "migrating\nto v42\ndone", "{ok}");
    assert_eq!(ok["deleted"], true);
    let name = ok["name"].as_str().unwrap();
    assert!(name.starts_with("opsbook-ok-"), "{name}");
    assert!(
        text(&o).contains("to v42"),
        "the pod's log is streamed into the step log"
    );
    assert!(kube.get("batch/v1", "Job", Some("default"), name).is_none());
    assert!(
        kube.list("v1", "Pod", Some("default")).is_empty(),
        "Background propagation takes the pods"
    );
    let del = kube
        .requests()
        .into_iter()
        .find(|r| r.method == "DELETE" && r.path.ends_with(name))
        .unwrap();
    assert_eq!(del.json().unwrap()["propagationPolicy"], "Background");
    // (The fake runs the command on this machine without the container's environment: the
    // Job it received carries it.)
    let post = kube
        .requests()
        .into_iter()
        .find(|r| r.method == "POST")
        .unwrap();
    let job = post.json().unwrap();
    let c = &job["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        c["env"],
        json!([{"name": "TARGET", "value": "v42"}]),
        "{job}"
    );
    assert_eq!(
        c["command"],
        json!(["sh", "-c", "echo migrating; echo to v42; echo done"])
    );
    assert_eq!(job["spec"]["backoffLimit"], 0);
    assert_eq!(
        job["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "opsbook"
    );

    let kept = &step(&report, "kept")["result"];
    assert_eq!(
        (kept["status"].as_str(), kept["deleted"].as_bool()),
        (Some("succeeded"), Some(false)),
        "{kept}"
    );
    assert_eq!(kept["logs"], "kept");
    assert!(kube
        .get("batch/v1", "Job", Some("other"), "keep-me")
        .is_some());

    let e = err(&report, "broken");
    assert!(e.contains("failed: BackoffLimitExceeded"), "{e}");
    let broken = &step(&report, "broken")["result"];
    assert_eq!(broken["failed"], 2, "backoff_limit 1: two pods: {broken}");
    assert_eq!(broken["pods"].as_array().unwrap().len(), 2, "{broken}");
    assert!(
        broken["logs"].as_str().unwrap().contains("about to fail"),
        "{broken}"
    );
    assert!(
        broken["logs"].as_str().unwrap().contains("(attempt 2)"),
        "{broken}"
    );
    assert_eq!(
        broken["pods_health"][0]["reasons"],
        json!(["Failed", "Error"]),
        "{broken}"
    );
    assert_eq!(broken["deleted"], true);

    // Dry run: the server checks each Job (keep-me exists: AlreadyExists); nothing is created.
    kube.clear_requests();
    let (code, report, _) = run_k8s(&d, &kube, rb, &["--dry-run"]);
    assert_ne!(code, 0);
    let e = err(&report, "kept");
    assert!(
        e.contains("AlreadyExists (409)") && e.contains("jobs.batch \"keep-me\" already exists"),
        "{e}"
    );
    kube.remove("batch/v1", "Job", Some("other"), "keep-me");
    kube.clear_requests();
    let (code, report, o) = run_k8s(&d, &kube, rb, &["--dry-run"]);
    assert_eq!(code, 0, "{}", text(&o));
    assert_eq!(step(&report, "ok")["result"]["status"], "dry_run");
    let posts: Vec<_> = writes(&kube)
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect();
    assert_eq!(posts.len(), 3);
    assert!(posts
        .iter()
        .all(|r| r.param("dryRun").as_deref() == Some("All")));
    assert!(kube.list("batch/v1", "Job", None).is_empty());
}

#[test]
fn cancelling_a_job_deletes_it() {
    let kube = FakeKube::start();
    kube.simulate(Sim::Jobs);
    kube.on_exec(|c| {
        std::thread::sleep(Duration::from_secs(30));
        ExecResult::local(c)
    });
    let d = Dir::new("k8s-job-cancel");
    let rb = r#"version: 1
name: slow
steps:
  - id: slow
    uses: k8s.job
    timeout: 2s
    with:
      name: slow
      image: busybox
      command: "sleep 30"
"#;
    let (code, report, o) = run_k8s(&d, &kube, rb, &[]);
    assert_ne!(code, 0, "{}", text(&o));
    assert!(
        text(&o).contains("deleted Job default/slow"),
        "{}",
        text(&o)
    );
    assert!(
        kube.get("batch/v1", "Job", Some("default"), "slow")
            .is_none(),
        "{report}"
    );
}

#[test]
fn kubeconfig_from_the_runbook_env_or_input_and_secrets_masked() {
    let kube = FakeKube::start();
    kube.put(
        json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": "db", "namespace": "other"},
        "data": {"password": "aHVudGVyMi1zM2NyZXQ="}}),
    );
    let d = Dir::new("k8s-kubeconfig");
    std::fs::create_dir_all(d.path("kc")).unwrap();
    std::fs::copy(kube.kubeconfig(), d.path("kc/config")).unwrap();
    let rb = r#"version: 1
name: env
env:
  KUBECONFIG: kc/config
steps:
  - id: from_env
    uses: k8s.get
    with: {kind: Secret, name: db, context: fake-other}
  - id: from_input
    uses: k8s.list
    env: {KUBECONFIG: /nonexistent}
    with: {kind: secrets, namespace: other, kubeconfig: kc/config}
  - id: bad_context
    uses: k8s.list
    continue_on_error: true
    with: {kind: Pod, context: nowhere}
  - id: bad_file
    uses: k8s.list
    continue_on_error: true
    with: {kind: Pod, kubeconfig: missing/config}
"#;
    let home = d.path("home");
    std::fs::create_dir_all(&home).unwrap();
    let (code, report, o) = run_with(&d, rb, &[], |cmd| {
        cmd.env_remove("KUBECONFIG").env("HOME", &home);
    });
    assert_eq!(code, 0, "{}", text(&o));
    assert_eq!(step(&report, "from_env")["result"]["found"], true);
    assert_eq!(
        step(&report, "from_input")["result"]["names"],
        json!(["db"])
    );
    let e = err(&report, "bad_context");
    assert!(
        e.contains("no context `nowhere` in the kubeconfig (it has: fake, fake-other)"),
        "{e}"
    );
    let e = err(&report, "bad_file");
    assert!(
        e.contains("cannot read the kubeconfig") && e.contains("missing/config"),
        "{e}"
    );
    // The Secret's values (base64 and decoded) never reach the log or the report.
    let all = format!("{}{}", run_folder(&d), text(&o));
    assert!(
        !all.contains("hunter2-s3cret") && !all.contains("aHVudGVyMi1zM2NyZXQ="),
        "{all}"
    );
    assert!(all.contains("***"));
}

#[test]
fn statefulset_rollout_and_undo_through_controller_revisions() {
    let kube = FakeKube::start();
    kube.simulate(Sim::StatefulSets);
    let d = Dir::new("k8s-sts");
    let rb = r#"version: 1
name: sts
params:
  image: {type: string, required: true}
steps:
  - id: apply
    uses: k8s.apply
    with:
      manifest:
        apiVersion: apps/v1
        kind: StatefulSet
        metadata: {name: db}
        spec:
          replicas: 2
          serviceName: db
          selector: {matchLabels: {app: db}}
          template:
            metadata: {labels: {app: db}}
            spec:
              containers: [{name: db, image: "{{ params.image }}"}]
  - id: status
    uses: k8s.rollout_status
    needs: [apply]
    with: {kind: StatefulSet, name: db, timeout: 20s}
"#;
    for image in ["postgres:16", "postgres:17"] {
        let (code, report, o) = run_k8s(&d, &kube, rb, &["-p", &format!("image={image}")]);
        assert_eq!(code, 0, "{}", text(&o));
        assert_eq!(step(&report, "status")["result"]["done"], true);
    }
    let undo = r#"version: 1
name: undo
steps:
  - id: undo
    uses: k8s.rollout_undo
    with: {kind: sts, name: db}
  - id: status
    uses: k8s.rollout_status
    needs: [undo]
    with: {kind: StatefulSet, name: db, timeout: 20s}
  # The controller gave the re-used revision the next number, as the real one does.
  - id: again
    uses: k8s.rollout_undo
    needs: [status]
    with: {kind: sts, name: db, to_revision: 3}
"#;
    let (code, report, o) = run_k8s(&d, &kube, undo, &[]);
    assert_eq!(code, 0, "{}", text(&o));
    let u = &step(&report, "undo")["result"];
    assert_eq!(
        (u["action"].as_str(), u["to_revision"].as_i64()),
        (Some("rolled_back"), Some(1)),
        "{u}"
    );
    assert_eq!(u["images"], json!(["postgres:16"]));
    assert_eq!(step(&report, "again")["result"]["action"], "skipped");
    let sts = kube
        .get("apps/v1", "StatefulSet", Some("default"), "db")
        .unwrap();
    assert_eq!(
        sts["spec"]["template"]["spec"]["containers"][0]["image"],
        "postgres:16"
    );
}

#[test]
fn auto_heal_is_a_filter_over_pod_health() {
    let kube = FakeKube::start();
    kube.simulate(Sim::Deployments);
    kube.put(pod(
        "stray",
        "default",
        json!({"tier": "web"}),
        crashing("Error", 1),
    ));
    let d = Dir::new("k8s-heal");
    let setup = r#"version: 1
name: setup
steps:
  - id: apply
    uses: k8s.apply
    with:
      manifest: |
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: web}
        spec:
          replicas: 2
          selector: {matchLabels: {app: web}}
          template:
            metadata: {labels: {app: web, tier: web}}
            spec: {containers: [{name: web, image: "web:oom"}]}
        ---
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: api}
        spec:
          replicas: 1
          selector: {matchLabels: {app: api}}
          template:
            metadata: {labels: {app: api, tier: web}}
            spec: {containers: [{name: api, image: "api:1"}]}
  - id: sick
    uses: k8s.wait
    needs: [apply]
    with:
      kind: Deployment
      name: web
      condition: {type: Progressing, status: "False", reason: ProgressDeadlineExceeded}
      timeout: 10s
  - id: fine
    uses: k8s.rollout_status
    needs: [apply]
    with: {name: api, timeout: 10s}
"#;
    let (code, _, o) = run_k8s(&d, &kube, setup, &[]);
    assert_eq!(code, 0, "{}", text(&o));
    let heal = r#"version: 1
name: heal
steps:
  - id: pods
    uses: k8s.list
    with: {kind: Pod, all_namespaces: true, labels: {tier: web}}
  - id: heal
    uses: k8s.rollout_restart
    for_each: "{{ steps.pods.result.unhealthy | selectattr('workload') | map(attribute='workload') | unique | list }}"
    when: "item.kind == 'Deployment'"
    with: {name: "{{ item.name }}"}
"#;
    let (code, report, o) = run_k8s(&d, &kube, heal, &[]);
    assert_eq!(code, 0, "{}", text(&o));
    let unhealthy = step(&report, "pods")["result"]["unhealthy"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(
        unhealthy.len(),
        3,
        "two web pods and the stray one: {unhealthy:?}"
    );
    assert!(unhealthy
        .iter()
        .any(|u| u["reasons"] == json!(["CrashLoopBackOff", "OOMKilled"])));
    let annotation = |name: &str| {
        kube.get("apps/v1", "Deployment", Some("default"), name)
            .unwrap()["spec"]["template"]["metadata"]["annotations"]
            ["kubectl.kubernetes.io/restartedAt"]
            .clone()
    };
    assert!(annotation("web").is_string(), "web was restarted");
    assert!(annotation("api").is_null(), "api is healthy");
}

#[test]
fn secrets_masked_in_wait_and_patch_results_and_huge_replicas_refused() {
    let kube = FakeKube::start();
    kube.put(
        json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": "tls", "namespace": "default"},
        "data": {"key": "c3VwZXItczNjcmV0LWtleQ=="}}),
    );
    let d = Dir::new("k8s-secret-mask");
    let rb = r#"version: 1
name: mask
steps:
  - id: wait
    uses: k8s.wait
    with: {kind: Secret, name: tls, timeout: 10s}
  - id: patch
    uses: k8s.patch
    needs: [wait]
    with: {kind: Secret, name: tls, type: merge, patch: {metadata: {labels: {rotated: "yes"}}}}
  - id: huge
    uses: k8s.scale
    needs: [patch]
    continue_on_error: true
    with: {name: web, replicas: 3000000000}
"#;
    let (code, report, o) = run_k8s(&d, &kube, rb, &[]);
    assert_eq!(code, 0, "{}", text(&o));
    assert_eq!(step(&report, "wait")["result"]["met"], true);
    assert_eq!(step(&report, "patch")["result"]["changed"], true);
    let all = format!("{}{}", run_folder(&d), text(&o));
    assert!(
        !all.contains("super-s3cret-key") && !all.contains("c3VwZXItczNjcmV0LWtleQ=="),
        "{all}"
    );
    // A u32 that does not fit Kubernetes' int32 is refused, not wrapped to a negative count.
    let e = err(&report, "huge");
    assert!(e.contains("is more than Kubernetes takes"), "{e}");
    assert!(writes(&kube)
        .iter()
        .all(|w| !w.path.contains("deployments")));
}

#[test]
fn a_broken_api_group_is_skipped_and_named_when_a_kind_is_searched() {
    let kube = FakeKube::start();
    let d = Dir::new("k8s-broken-group");
    // Every try at batch/v1's discovery answers 503, as a broken aggregated API would.
    for _ in 0..4 {
        kube.fail_next("GET", "/apis/batch/v1", 503, "ServiceUnavailable");
    }
    let rb = r#"version: 1
name: groups
steps:
  - id: unknown
    uses: k8s.list
    continue_on_error: true
    with: {kind: Widget}
"#;
    let (code, report, o) = run_k8s(&d, &kube, rb, &[]);
    assert_eq!(code, 0, "{}", text(&o));
    let e = err(&report, "unknown");
    assert!(e.contains("serves no kind `Widget`"), "{e}");
    assert!(e.contains("could not be read: batch/v1"), "{e}");
}
