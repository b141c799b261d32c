//! A fake Kubernetes API server on 127.0.0.1, speaking the real REST wire format, for tests
//! of Kubernetes clients (kube-rs, kubectl) without a cluster.
//!
//! [`FakeKube::start`] serves on a free port of 127.0.0.1 (plain HTTP), on a thread of its
//! own with its own tokio runtime, so sync tests, async tests and subprocesses can all use
//! it; dropping it stops the server and removes its temporary directory. Everything lives
//! in memory. [`FakeKube::kubeconfig`] is a kubeconfig for it with the contexts `fake`
//! (namespace `default`, the current one) and `fake-other` (namespace `other`), both with
//! the bearer-token user `opsbook-test` ([`USER`], token [`TOKEN`]). A request with another
//! token gets 401; one without a token is served as that user too, because client-go
//! (kubectl) never sends a bearer token over plain HTTP.
//!
//! `tests/k8s_kubectl.rs` holds the fake to the protocol: unmodified kubectl 1.33 runs
//! against it (`version`, `api-resources`, `apply --server-side`, `get` with selectors,
//! `scale`, `rollout restart|status|undo`, `patch`, `logs`, `exec`, `delete --wait`, `wait`,
//! and the NotFound and Forbidden errors).
//!
//! # Protocol
//!
//! - `/version` (v1.33.1, so that Google's kubectl dispatcher runs kubectl 1.33), `/healthz`.
//! - Discovery: `/api`, `/apis`, `/api/v1`, `/apis/{group}`, `/apis/{group}/{version}`, and
//!   aggregated discovery v2 when the `Accept` header asks for it; `/openapi/v3` and a stub
//!   per group/version that advertises `fieldValidation`, so that `kubectl apply` leaves
//!   validation to the server. Everything is generated from one static table: v1
//!   namespaces, nodes, pods (+status, log, exec), services, configmaps, secrets,
//!   serviceaccounts, events; apps/v1 deployments, replicasets, statefulsets (+status,
//!   scale), daemonsets (+status), controllerrevisions; batch/v1 jobs, cronjobs (+status).
//!   Answers are JSON whatever the `Accept` (protobuf and Table are never produced).
//! - GET; LIST in one namespace or all, with the full label selector grammar, the field
//!   selectors the real server supports for the kind (`metadata.name`,
//!   `metadata.namespace`, and e.g. `status.phase`/`spec.nodeName` for pods; others give
//!   400 `field label not supported`), `limit`/`continue`; items carry no
//!   `apiVersion`/`kind`, as from a real server.
//! - POST (201, 409 AlreadyExists, `generateName`, 422 for a missing or invalid name, a Job
//!   without `restartPolicy: Never|OnFailure`, a selector not matching the template).
//! - PATCH as `application/merge-patch+json`, `application/strategic-merge-patch+json`,
//!   `application/json-patch+json` and `application/apply-patch+yaml` (server-side apply:
//!   creates when missing, `fieldManager` required, 409 with `FieldManagerConflict` causes
//!   unless `force=true`, fields dropped from a manager's configuration removed);
//!   PUT; `dryRun=All` on every write. A write carrying a stale `metadata.resourceVersion`
//!   gets 409 Conflict. `metadata.generation` (workloads: Deployments, ReplicaSets,
//!   StatefulSets, DaemonSets, Jobs, CronJobs) goes up on changes outside metadata and status;
//!   the resourceVersion is one global counter; a write that changes nothing keeps it.
//!   `metadata.managedFields` is kept (FieldsV1).
//! - `/status` (GET, PATCH, PUT: only `.status` changes; main-resource writes keep it);
//!   `/scale` (autoscaling/v1 Scale with a string selector; a PATCH or PUT sets the
//!   parent's `spec.replicas`).
//! - DELETE with DeleteOptions in the body or the query: `dryRun`, `gracePeriodSeconds`,
//!   `propagationPolicy` (Background and Foreground delete dependents by ownerReference uid,
//!   Orphan removes the ownerReferences; Jobs orphan by default, as in batch/v1),
//!   `preconditions`; finalizers hold a deletion; a scheduled pod with a grace period gets
//!   `deletionTimestamp` and goes after min(grace, 1 s). Pods, services, serviceaccounts and
//!   namespaces answer with the object, other kinds with a `Status` Success.
//!   deletecollection.
//! - Watch (`watch=true|1`, `resourceVersion`, `timeoutSeconds`, selectors,
//!   `sendInitialEvents`): chunked NDJSON replayed from an event history, 410 Expired as an
//!   ERROR event when the resourceVersion is older than the history.
//! - Pod logs (`container`, `tailLines`, `sinceSeconds`, `sinceTime`, `timestamps`,
//!   `previous`, `limitBytes`, `follow` until the pod ends) from [`FakeKube::set_logs`].
//! - Exec over WebSocket (`v5.channel.k8s.io`, `v4.channel.k8s.io`) through
//!   [`FakeKube::on_exec`].
//! - Errors are `Status` objects as a real server writes them: 404 `deployments.apps "nope"
//!   not found`, 409 AlreadyExists/Conflict, 403 Forbidden (from [`FakeKube::deny`]), 422
//!   Invalid, 400, 405, 415, 401 (a wrong token); [`FakeKube::fail_next`] injects any
//!   other (503 and 429 with `Retry-After: 1`).
//!
//! # Known deviations from a real API server
//!
//! - JSON only: request bodies in protobuf or CBOR get 415, so kubectl's generator commands
//!   (`kubectl create namespace|job|deployment ...`, `kubectl run`), which send protobuf,
//!   fail; `create -f`, `apply`, `patch`, `scale`, `set`, `rollout`, `delete` send JSON.
//!   No `Table` answers either: `kubectl get` prints only the NAME and AGE columns.
//! - Plain HTTP, no TLS.
//! - No admission, no authorization beyond [`FakeKube::deny`] (which matches exact
//!   namespaces: a `deny` for `default` does not stop an all-namespaces list), one user.
//! - Defaulting only where clients depend on it (replicas, rollout strategies, Job
//!   selector/labels/backoffLimit, pod restartPolicy and grace period, Service cluster IP);
//!   validation only of names, selectors and a Job's restartPolicy. `fieldValidation` is
//!   accepted and ignored (no schemas: unknown fields are stored).
//! - Strategic merge patch is an approximation: merge patch plus merge-by-key for the known
//!   lists (containers, initContainers, ephemeralContainers, env, volumes,
//!   imagePullSecrets, resourceClaims by `name`; volumeMounts by `mountPath`; ports by
//!   `containerPort` or `port`; conditions by `type`; ownerReferences by `uid`; ...), with
//!   `$patch: replace|delete` and `$retainKeys`; `$setElementOrder` and
//!   `$deleteFromPrimitiveList` are ignored. It is accepted for every kind (all are
//!   built-in here), so the 415 a CRD gives cannot happen.
//! - Server-side apply tracks leaf fields only (maps recursed, the lists above keyed,
//!   other lists atomic); apply bodies must be JSON (kubectl and kube-rs send JSON), not
//!   YAML. `managedFields` is simplified (no `.` entries for maps).
//! - No namespace existence check on create; `default`, `kube-system`, `kube-public` and
//!   `kube-node-lease` exist, as does one node, `fake-node`. Deleting a namespace deletes
//!   its content at once.
//! - Lists ignore `resourceVersion`/`resourceVersionMatch` (always the latest);
//!   continue tokens never expire. Watches send no periodic bookmarks. A watch from a
//!   resourceVersion newer than the store's just waits.
//! - Graceful pod deletion is capped at 1 s; the "kubelet" does not change the pod's
//!   status while it terminates. The garbage collector runs synchronously.
//! - Exec: WebSocket only (no SPDY: kubectl 1.30+ tries WebSocket first), no resize, no
//!   attach or port-forward; a TTY only merges stderr into stdout.
//! - Controllers run only when switched on with [`FakeKube::simulate`]; they are
//!   simulations, not protocol (see [`Sim`] for what they do).
//!
//! ```no_run
//! use opsbook_testkit::kube::{FakeKube, Sim};
//! use serde_json::json;
//!
//! let kube = FakeKube::start();
//! kube.simulate(Sim::Deployments);
//! kube.put(json!({"apiVersion": "v1", "kind": "ConfigMap",
//!                 "metadata": {"name": "cfg", "namespace": "default"}, "data": {"a": "1"}}));
//! // KUBECONFIG=kube.kubeconfig() kubectl get cm cfg ...
//! let seen = kube.requests();
//! # let _ = seen;
//! ```

mod defaults;
mod exec;
mod logs;
mod objects;
mod patch;
mod registry;
mod selector;
mod server;
mod sim;
mod ssa;
mod status;
mod store;
mod watch;

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::{oneshot, watch as tokio_watch};

use store::{Deny, Failure, Propagation, Store, WriteCtx};

/// The user every request is authenticated as (it appears in 403 messages).
pub const USER: &str = "opsbook-test";
/// The bearer token of the kubeconfig's user; a request with another token gets 401.
pub const TOKEN: &str = "opsbook-test-token";
/// The kubeconfig's current context (namespace `default`).
pub const CONTEXT: &str = "fake";
/// The kubeconfig's second context (namespace `other`).
pub const OTHER_CONTEXT: &str = "fake-other";
/// The version the fake reports.
pub const GIT_VERSION: &str = "v1.33.1";

/// How long `Drop` lets running requests and exec handlers finish.
const STOP_GRACE: Duration = Duration::from_secs(1);

/// One request the fake received, for assertions (`dryRun=All`, `fieldManager=opsbook`,
/// patch content types, ...).
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The raw (encoded) query string, without `?`.
    pub query: String,
    pub content_type: String,
    pub accept: String,
    pub user_agent: String,
    /// Whether it asked for a WebSocket upgrade (exec).
    pub websocket: bool,
    pub body: String,
}

impl Seen {
    /// The first decoded value of a query parameter.
    pub fn param(&self, name: &str) -> Option<String> {
        server::Query::parse(&self.query)
            .get(name)
            .map(str::to_string)
    }

    /// Every decoded value of a query parameter (`command` of an exec repeats).
    pub fn params(&self, name: &str) -> Vec<String> {
        server::Query::parse(&self.query).all(name)
    }

    /// The body as JSON, if it is JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_str(&self.body).ok()
    }

    /// Whether it was a watch (`watch=true` or `watch=1`).
    pub fn is_watch(&self) -> bool {
        matches!(self.param("watch").as_deref(), Some("true" | "1"))
    }
}

/// A command to run, from an exec request or from a simulated Job's pod.
#[derive(Clone, Debug)]
pub struct ExecCall {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    /// The argv (for a Job's pod: the container's `command` then `args`).
    pub command: Vec<String>,
    /// What the client sent on stdin, when it asked for stdin.
    pub stdin: Option<Vec<u8>>,
    pub tty: bool,
    /// The Job, when the call runs a simulated Job's pod.
    pub job: Option<String>,
}

/// What a command printed and how it exited.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecResult {
    pub stdout: String,
    pub stderr: String,
    pub exit_code: i32,
}

impl ExecResult {
    /// Exit 0 with this stdout.
    pub fn ok(stdout: &str) -> ExecResult {
        ExecResult {
            stdout: stdout.to_string(),
            stderr: String::new(),
            exit_code: 0,
        }
    }

    /// Any exit code and output.
    pub fn exit(exit_code: i32, stdout: &str, stderr: &str) -> ExecResult {
        ExecResult {
            stdout: stdout.to_string(),
            stderr: stderr.to_string(),
            exit_code,
        }
    }

    /// Runs the argv on this machine (tests only: `kube.on_exec(ExecResult::local)`), with
    /// the call's stdin; exit code 127 with the error when it cannot start.
    pub fn local(call: &ExecCall) -> ExecResult {
        let Some((program, args)) = call.command.split_first() else {
            return ExecResult::exit(127, "", "no command\n");
        };
        let child = Command::new(program)
            .args(args)
            .stdin(if call.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => return ExecResult::exit(127, "", &format!("{program}: {e}\n")),
        };
        if let (Some(data), Some(mut stdin)) = (&call.stdin, child.stdin.take()) {
            use std::io::Write;
            let _ = stdin.write_all(data);
        }
        match child.wait_with_output() {
            Ok(out) => ExecResult {
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
                exit_code: out.status.code().unwrap_or(128),
            },
            Err(e) => ExecResult::exit(128, "", &format!("{program}: {e}\n")),
        }
    }

    /// The answer when no handler is installed: exit 126 and a hint on stderr.
    fn no_handler() -> ExecResult {
        ExecResult::exit(
            126,
            "",
            "fake API server: no exec handler; install one with FakeKube::on_exec\n",
        )
    }
}

/// An opt-in simulated controller, switched on with [`FakeKube::simulate`]. **Not
/// protocol**: a small, deterministic stand-in for kube-controller-manager and the kubelet,
/// so that rollouts, rollbacks and Jobs can be tested end to end. Each step takes about
/// 50 ms.
///
/// - Pods of every simulated workload are created Pending (`ContainerCreating`) on
///   `fake-node`, then after one step get a status chosen by each container's image (the
///   part after the last `/`): containing `crash` or `bad`: `waiting.reason:
///   CrashLoopBackOff`, `restartCount: 5`, `lastState.terminated.reason: Error` (exit 1),
///   not ready, phase Running; containing `oom`: the same with `OOMKilled` (exit 137);
///   containing `nopull` or `missing`: `ImagePullBackOff`, phase Pending; anything else:
///   running and ready.
/// - Deployments: a ReplicaSet `NAME-<pod-template-hash>` per template (the hash label on
///   it, its selector and template; a controller ownerReference;
///   `deployment.kubernetes.io/revision` = max + 1, also set on the Deployment). A template
///   equal to an older ReplicaSet's (a rollback) re-uses it with the next revision, as the
///   real controller does. The new ReplicaSet gets `spec.replicas`; old ones go to 0 once
///   the new pods are all ready (until then old ones keep theirs). Status:
///   `observedGeneration`, `replicas`, `updatedReplicas`, `readyReplicas`,
///   `availableReplicas`, `unavailableReplicas`, conditions `Available` and `Progressing`
///   (`False`/`ProgressDeadlineExceeded` at once when a new pod crash loops or cannot pull
///   its image). A paused Deployment rolls nothing out. ReplicaSets keep `spec.replicas`
///   pods (the scale subresource works), deleting the newest first, gracefully.
/// - StatefulSets: pods `NAME-0..N-1` labelled `controller-revision-hash`, a
///   ControllerRevision per template (`revision`, `data` =
///   `{"spec":{"template":{...,"$patch":"replace"}}}`); a template change replaces every
///   pod; status with `currentRevision`/`updateRevision`.
/// - DaemonSets: one pod on `fake-node`, ControllerRevisions as above, the
///   `*NumberScheduled` status counters.
/// - Jobs: one pod at a time (`NAME-xxxxx` with the Job's labels); once it runs, its
///   container's `command` + `args` go to the [`FakeKube::on_exec`] handler (with
///   [`ExecCall::job`] set) on a blocking thread; stdout + stderr become the pod's log, the
///   exit code its `terminated` state. Without a handler the pod succeeds and keeps the log
///   it has. Failed pods are retried up to `backoffLimit`; status `active`, `ready`,
///   `succeeded`, `failed`, `startTime`, `completionTime`, conditions `SuccessCriteriaMet` +
///   `Complete`, or `FailureTarget` + `Failed` (`BackoffLimitExceeded`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sim {
    /// Deployments → ReplicaSets → pods, rollout status, revisions, rollback re-using a
    /// ReplicaSet; pod health chosen by the image.
    Deployments,
    /// Jobs → one pod at a time, run through the exec handler, status and conditions.
    Jobs,
    /// StatefulSets → pods `NAME-0..`, ControllerRevisions, status.
    StatefulSets,
    /// DaemonSets → one pod on `fake-node`, ControllerRevisions, status.
    DaemonSets,
    /// All of the above.
    All,
}

type ExecHook = Arc<dyn Fn(&ExecCall) -> ExecResult + Send + Sync>;

/// What the server tasks and the test thread share.
pub(crate) struct Shared {
    pub store: Mutex<Store>,
    /// Changes to the store (its resourceVersion).
    pub changed: tokio_watch::Receiver<u64>,
    pub exec: Mutex<Option<ExecHook>>,
    pub addr: SocketAddr,
}

/// A running fake API server on 127.0.0.1; stopped on drop.
pub struct FakeKube {
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    kubeconfig: PathBuf,
    // Declared last: removed after the server has stopped.
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for FakeKube {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeKube")
            .field("url", &self.url())
            .field("kubeconfig", &self.kubeconfig)
            .finish()
    }
}

impl FakeKube {
    /// Starts the server on a free port of 127.0.0.1 and writes its kubeconfig. Panics
    /// (this is a test helper) when it cannot bind or create its temporary directory.
    pub fn start() -> FakeKube {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap_or_else(|e| panic!("fake API server: cannot bind 127.0.0.1:0: {e}"));
        let addr = listener
            .local_addr()
            .expect("a bound socket has an address");
        listener
            .set_nonblocking(true)
            .expect("fake API server: set_nonblocking");
        let dir = tempfile::Builder::new()
            .prefix("opsbook-kube-")
            .tempdir()
            .unwrap_or_else(|e| {
                panic!("fake API server: cannot create a temporary directory: {e}")
            });
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, kubeconfig_text(addr)).unwrap_or_else(|e| {
            panic!(
                "fake API server: cannot write {}: {e}",
                kubeconfig.display()
            )
        });
        let (tx, rx) = tokio_watch::channel(0u64);
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::new(tx)),
            changed: rx,
            exec: Mutex::new(None),
            addr,
        });
        let (stop_tx, stop_rx) = oneshot::channel();
        let for_thread = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("fake-kube-{}", addr.port()))
            .spawn(move || run(for_thread, listener, stop_rx))
            .expect("fake API server: spawn its thread");
        FakeKube {
            shared,
            shutdown: Some(stop_tx),
            thread: Some(thread),
            kubeconfig,
            _dir: dir,
        }
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// The kubeconfig file: cluster `fake` at [`FakeKube::url`], user `opsbook-test` with the
    /// bearer token [`TOKEN`], contexts `fake` (namespace `default`, current) and
    /// `fake-other` (namespace `other`).
    pub fn kubeconfig(&self) -> PathBuf {
        self.kubeconfig.clone()
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.shared
            .store
            .lock()
            .expect("fake API server: store lock poisoned")
    }

    /// Seeds or replaces an object, as it is (its status too): `apiVersion`, `kind`,
    /// `metadata.name` and, for namespaced kinds, `metadata.namespace` (default `default`).
    /// Fills uid, resourceVersion, generation and creationTimestamp, emits ADDED (or
    /// MODIFIED); returns the stored object. Panics on a kind the fake does not serve.
    pub fn put(&self, obj: Value) -> Value {
        self.store().put(obj)
    }

    /// An object as stored (with apiVersion and kind). `kind` may also be the plural.
    pub fn get(
        &self,
        api_version: &str,
        kind: &str,
        ns: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let r = resource(api_version, kind);
        self.store().get(&store::key(r, ns, name)).cloned()
    }

    /// The objects of a kind, in one namespace or all, ordered by namespace and name.
    pub fn list(&self, api_version: &str, kind: &str, ns: Option<&str>) -> Vec<Value> {
        let r = resource(api_version, kind);
        self.store().list(r, ns).map(|(_, o)| o.clone()).collect()
    }

    /// Polls (every 10 ms) until the object exists and `pred` holds, up to `timeout`; the
    /// object, or `None` on timeout.
    pub fn wait_for(
        &self,
        api_version: &str,
        kind: &str,
        ns: Option<&str>,
        name: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(o) = self.get(api_version, kind, ns, name).filter(|o| pred(o)) {
                return Some(o);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Deletes an object at once, as a kubelet or controller would (DELETED; dependents
    /// are deleted in the background); the object, if it existed.
    pub fn remove(
        &self,
        api_version: &str,
        kind: &str,
        ns: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let r = resource(api_version, kind);
        self.store()
            .remove(&store::key(r, ns, name), Propagation::Background)
    }

    /// Acts as a controller: replaces the object's `.status` (MODIFIED). Panics when the
    /// object does not exist.
    pub fn set_status(
        &self,
        api_version: &str,
        kind: &str,
        ns: Option<&str>,
        name: &str,
        status: Value,
    ) {
        let r = resource(api_version, kind);
        let key = store::key(r, ns, name);
        let ctx = WriteCtx {
            manager: "fake-controller".into(),
            subresource: "status".into(),
            dry_run: false,
        };
        self.store()
            .update(r, &key, json!({ "status": status }), &ctx, None)
            .unwrap_or_else(|e| {
                panic!(
                    "FakeKube::set_status {api_version} {kind} {ns:?}/{name}: {}",
                    e.body
                )
            });
    }

    /// Sets the log of a pod's container (`None`: whatever container is asked for), and
    /// optionally that of its previous run (`previous=true`). Followers see the new text if
    /// it extends the old one.
    pub fn set_logs(
        &self,
        ns: &str,
        pod: &str,
        container: Option<&str>,
        text: &str,
        previous: Option<&str>,
    ) {
        let mut st = self.store();
        let key = (
            ns.to_string(),
            pod.to_string(),
            container.unwrap_or_default().to_string(),
        );
        let log = st.logs.entry(key).or_default();
        log.chunks = vec![(jiff::Timestamp::now(), text.to_string())];
        log.previous = previous.map(str::to_string);
        st.notify();
    }

    /// Appends to the log of a pod's container (followed logs stream it).
    pub fn append_logs(&self, ns: &str, pod: &str, container: Option<&str>, text: &str) {
        let mut st = self.store();
        let key = (
            ns.to_string(),
            pod.to_string(),
            container.unwrap_or_default().to_string(),
        );
        st.logs
            .entry(key)
            .or_default()
            .chunks
            .push((jiff::Timestamp::now(), text.to_string()));
        st.notify();
    }

    /// Installs the handler of exec requests and of simulated Jobs' pods; it runs on a
    /// blocking thread. Without one, exec answers exit code 126 and simulated Jobs
    /// succeed with empty logs. [`ExecResult::local`] runs the command on this machine.
    pub fn on_exec(&self, f: impl Fn(&ExecCall) -> ExecResult + Send + Sync + 'static) {
        *self.shared.exec.lock().expect("exec lock") = Some(Arc::new(f));
    }

    /// Forbids a verb (`get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
    /// `deletecollection`, or `*`) on a resource (`pods`, `deployments`, `deployments.apps`,
    /// a subresource such as `pods/exec` or `deployments/scale`, or `*`), in one namespace
    /// or (`None`) everywhere: 403 with the RBAC message, e.g. `pods is forbidden: User
    /// "opsbook-test" cannot list resource "pods" in API group "" in the namespace
    /// "default"`. For `pods/exec`, `create` and `get` both match.
    pub fn deny(&self, verb: &str, resource: &str, ns: Option<&str>) {
        self.store().denies.push(Deny {
            verb: verb.to_string(),
            resource: resource.to_string(),
            ns: ns.map(str::to_string),
        });
    }

    /// Removes every `deny` rule.
    pub fn allow_all(&self) {
        self.store().denies.clear();
    }

    /// Makes the next request with this method (`*`: any) whose path starts with
    /// `path_prefix` fail with `code` and `reason` (a Status with the real message for
    /// 404/409 Conflict/409 AlreadyExists/429/500/503/504; 429 and 503 carry
    /// `Retry-After: 1`). Rules queue up and each fires once.
    pub fn fail_next(&self, method: &str, path_prefix: &str, code: u16, reason: &str) {
        self.store().failures.push(Failure {
            method: method.to_string(),
            prefix: path_prefix.to_string(),
            code,
            reason: reason.to_string(),
        });
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<Seen> {
        self.store().requests.clone()
    }

    /// Forgets the requests seen so far.
    pub fn clear_requests(&self) {
        self.store().requests.clear();
    }

    /// Switches a simulated controller on (they are off by default).
    pub fn simulate(&self, sim: Sim) {
        let mut st = self.store();
        let all = [
            Sim::Deployments,
            Sim::Jobs,
            Sim::StatefulSets,
            Sim::DaemonSets,
        ];
        let wanted: Vec<Sim> = if sim == Sim::All {
            all.to_vec()
        } else {
            vec![sim]
        };
        for s in wanted {
            if !st.sims.contains(&s) {
                st.sims.push(s);
            }
        }
        st.notify();
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The resource of an apiVersion and kind; panics for one the fake does not serve.
fn resource(api_version: &str, kind: &str) -> &'static registry::Resource {
    registry::lookup(api_version, kind)
        .unwrap_or_else(|| panic!("fake API server: {api_version} {kind} is not served"))
}

fn kubeconfig_text(addr: SocketAddr) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster:
    server: http://{addr}
users:
- name: {USER}
  user:
    token: {TOKEN}
contexts:
- name: {CONTEXT}
  context:
    cluster: fake
    user: {USER}
    namespace: default
- name: {OTHER_CONTEXT}
  context:
    cluster: fake
    user: {USER}
    namespace: other
current-context: {CONTEXT}
preferences: {{}}
"
    )
}

/// The server thread: its runtime, the accept loop, the timer task (graceful deletions,
/// drains) and the simulated controllers, until `stop`.
fn run(shared: Arc<Shared>, listener: TcpListener, stop: oneshot::Receiver<()>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("fake API server: build its tokio runtime");
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)
            .expect("fake API server: register the listener");
        tokio::spawn(timers(shared.clone()));
        tokio::spawn(sim::run(shared.clone()));
        let mut stop = stop;
        loop {
            tokio::select! {
                _ = &mut stop => break,
                accepted = listener.accept() => {
                    let Ok((stream, peer)) = accepted else { continue };
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(move |req| {
                            server::handle(shared.clone(), peer, req)
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                            .with_upgrades()
                            .await;
                    });
                }
            }
        }
    });
    rt.shutdown_timeout(STOP_GRACE);
}

/// Runs the store's deferred work (graceful pod deletions, foreground and namespace
/// drains) when it is due or when the store changes.
async fn timers(shared: Arc<Shared>) {
    let mut changed = shared.changed.clone();
    loop {
        changed.borrow_and_update();
        let next = shared.store.lock().expect("store lock").run_due();
        let sleep = async {
            match next {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = changed.changed() => if r.is_err() { return },
            _ = sleep => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// One HTTP/1.1 request with `Connection: close`: the status and the raw body.
    fn http(
        kube: &FakeKube,
        method: &str,
        path: &str,
        content_type: &str,
        body: &str,
        token: &str,
    ) -> (u16, String) {
        let mut s = std::net::TcpStream::connect(kube.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let auth = if token.is_empty() {
            String::new()
        } else {
            format!("Authorization: Bearer {token}\r\n")
        };
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let code = out[9..12].parse().unwrap();
        let body = out
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (code, body)
    }

    fn call(
        kube: &FakeKube,
        method: &str,
        path: &str,
        content_type: &str,
        body: &str,
    ) -> (u16, Value) {
        let (code, body) = http(kube, method, path, content_type, body, TOKEN);
        (
            code,
            serde_json::from_str(&body).unwrap_or(Value::String(body)),
        )
    }

    fn cm(name: &str, owner: Option<&Value>) -> Value {
        let mut o = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "default"}});
        if let Some(owner) = owner {
            o["metadata"]["ownerReferences"] = json!([{"apiVersion": owner["apiVersion"], "kind": owner["kind"],
                "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"], "controller": true}]);
        }
        o
    }

    #[test]
    fn lists_page_and_strip_kinds() {
        let kube = FakeKube::start();
        for n in ["a", "b", "c"] {
            kube.put(cm(n, None));
        }
        let (code, page) = call(
            &kube,
            "GET",
            "/api/v1/namespaces/default/configmaps?limit=2",
            "",
            "",
        );
        assert_eq!(code, 200);
        assert_eq!(page["kind"], "ConfigMapList");
        assert_eq!(page["items"].as_array().unwrap().len(), 2);
        assert!(
            page["items"][0].get("kind").is_none() && page["items"][0].get("apiVersion").is_none()
        );
        assert_eq!(page["metadata"]["remainingItemCount"], 1);
        let token = page["metadata"]["continue"].as_str().unwrap();
        let (_, rest) = call(
            &kube,
            "GET",
            &format!("/api/v1/namespaces/default/configmaps?limit=2&continue={token}"),
            "",
            "",
        );
        assert_eq!(rest["items"][0]["metadata"]["name"], "c");
        assert!(rest["metadata"].get("continue").is_none());
    }

    #[test]
    fn writes_and_their_errors() {
        let kube = FakeKube::start();
        let cms = "/api/v1/namespaces/default/configmaps";
        let (code, o) = call(
            &kube,
            "POST",
            cms,
            "application/json",
            r#"{"metadata":{"generateName":"gen-"}}"#,
        );
        assert_eq!(code, 201, "{o}");
        let name = o["metadata"]["name"].as_str().unwrap();
        assert!(name.starts_with("gen-") && name.len() == 9, "{name}");
        assert!(
            o["metadata"].get("generation").is_none(),
            "ConfigMaps have no generation"
        );
        let (code, e) = call(&kube, "POST", cms, "application/json", r#"{"metadata":{}}"#);
        assert_eq!(code, 422);
        assert_eq!(e["message"], "ConfigMap \"\" is invalid: metadata.name: Required value: name or generateName is required");
        let (code, e) = call(
            &kube,
            "POST",
            cms,
            "application/json",
            &format!(r#"{{"metadata":{{"name":"{name}"}}}}"#),
        );
        assert_eq!((code, e["reason"].as_str()), (409, Some("AlreadyExists")));
        let (code, e) = call(
            &kube,
            "PATCH",
            &format!("{cms}/x"),
            "application/apply-patch+yaml",
            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"}}"#,
        );
        assert_eq!(code, 400, "{e}");
        let (code, e) = call(&kube, "PATCH", &format!("{cms}/{name}"), "text/plain", "{}");
        assert_eq!(
            (code, e["reason"].as_str()),
            (415, Some("UnsupportedMediaType"))
        );
        let (code, e) = call(&kube, "GET", "/api/v1/namespaces/default/widgets", "", "");
        assert_eq!(
            (code, e["message"].as_str()),
            (
                404,
                Some("the server could not find the requested resource")
            )
        );
        let (code, _) = http(&kube, "GET", cms, "", "", "wrong");
        assert_eq!(code, 401);
        let (code, e) = call(
            &kube,
            "PUT",
            "/api/v1/namespaces/default/pods",
            "application/json",
            "{}",
        );
        assert_eq!(
            (code, e["reason"].as_str()),
            (405, Some("MethodNotAllowed"))
        );
        // A ConfigMap's delete answers with a Status; a dry run keeps it.
        let (code, s) = call(&kube, "DELETE", &format!("{cms}/{name}?dryRun=All"), "", "");
        assert_eq!((code, s["status"].as_str()), (200, Some("Success")));
        assert!(kube.get("v1", "ConfigMap", Some("default"), name).is_some());
        let (_, s) = call(&kube, "DELETE", &format!("{cms}/{name}"), "", "");
        assert_eq!(s["kind"], "Status");
        assert_eq!(s["details"]["kind"], "configmaps");
        assert!(s["details"].get("group").is_none());
        assert!(kube.get("v1", "ConfigMap", Some("default"), name).is_none());
        // Injected failures fire once.
        kube.fail_next("*", cms, 503, "ServiceUnavailable");
        assert_eq!(call(&kube, "GET", cms, "", "").0, 503);
        assert_eq!(call(&kube, "GET", cms, "", "").0, 200);
    }

    #[test]
    fn deletion_propagates_by_owner_reference() {
        let kube = FakeKube::start();
        let rs = kube.put(json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "rs", "namespace": "default"},
            "spec": {"replicas": 0, "selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}}}}}));
        kube.put(cm("dep", Some(&rs)));
        let path = "/apis/apps/v1/namespaces/default/replicasets/rs";
        call(
            &kube,
            "DELETE",
            path,
            "application/json",
            r#"{"propagationPolicy":"Orphan"}"#,
        );
        let dep = kube
            .get("v1", "ConfigMap", Some("default"), "dep")
            .expect("orphaned, not deleted");
        assert!(dep["metadata"].get("ownerReferences").is_none());

        let rs = kube.put(json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "rs", "namespace": "default"},
            "spec": {"replicas": 0, "selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}}}}}));
        kube.put(cm("dep", Some(&rs)));
        let (code, o) = call(
            &kube,
            "DELETE",
            path,
            "application/json",
            r#"{"propagationPolicy":"Foreground"}"#,
        );
        assert_eq!(code, 200);
        assert!(
            o["metadata"]["finalizers"]
                .to_string()
                .contains("foregroundDeletion"),
            "{o}"
        );
        assert!(kube
            .get("v1", "ConfigMap", Some("default"), "dep")
            .is_none());
        assert!(
            kube.get("apps/v1", "ReplicaSet", Some("default"), "rs")
                .is_none(),
            "gone once its dependents are"
        );

        // batch/v1 Jobs orphan their dependents unless told otherwise.
        let job = kube.put(json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j", "namespace": "default"},
            "spec": {"template": {"spec": {"restartPolicy": "Never"}}}}));
        kube.put(cm("job-dep", Some(&job)));
        call(
            &kube,
            "DELETE",
            "/apis/batch/v1/namespaces/default/jobs/j",
            "",
            "",
        );
        assert!(kube
            .get("v1", "ConfigMap", Some("default"), "job-dep")
            .is_some());
    }

    #[test]
    fn a_watch_from_a_compacted_resource_version_expires() {
        let kube = FakeKube::start();
        for i in 0..10_050 {
            kube.put(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "default"}, "data": {"i": i.to_string()}}));
        }
        let (code, body) = http(
            &kube,
            "GET",
            "/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=105",
            "",
            "",
            "",
        );
        assert_eq!(code, 200);
        assert!(
            body.contains(r#""type":"ERROR""#)
                && body.contains(r#""reason":"Expired""#)
                && body.contains("too old resource version: 105"),
            "{body}"
        );
        // From a recent one: the history replays, up to the timeout.
        let rv = kube.get("v1", "ConfigMap", Some("default"), "c").unwrap()["metadata"]
            ["resourceVersion"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap();
        let (_, body) = http(
            &kube,
            "GET",
            &format!(
                "/api/v1/namespaces/default/configmaps?watch=1&timeoutSeconds=1&resourceVersion={}",
                rv - 2
            ),
            "",
            "",
            "",
        );
        assert_eq!(body.matches(r#""type":"MODIFIED""#).count(), 2, "{body}");
    }

    /// A server to poke at by hand: `FAKE_KUBE_SECS=600 cargo test -p opsbook-testkit --lib
    /// manual_server -- --ignored --nocapture`; its kubeconfig goes to /tmp/fake-kube.kubeconfig.
    #[test]
    #[ignore]
    fn manual_server() {
        let kube = FakeKube::start();
        kube.simulate(Sim::All);
        kube.on_exec(ExecResult::local);
        std::fs::copy(kube.kubeconfig(), "/tmp/fake-kube.kubeconfig").unwrap();
        println!("serving {}", kube.url());
        let secs = std::env::var("FAKE_KUBE_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(600);
        std::thread::sleep(Duration::from_secs(secs));
    }
}
