//! The HTTP client pool is the run's: requests of different steps and of `for_each` items reuse
//! one keep-alive connection (proven from the server side by the client's source port).

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use axum::extract::{ConnectInfo, State};
use axum::routing::get;
use axum::Router;
use serde_json::Value;

#[test]
fn steps_and_items_share_one_connection() {
    let peers: Arc<Mutex<Vec<SocketAddr>>> = Arc::default();
    let seen = peers.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let app = Router::new()
                .route(
                    "/ping",
                    get(
                        |State(p): State<Arc<Mutex<Vec<SocketAddr>>>>,
                         ConnectInfo(addr): ConnectInfo<SocketAddr>| async move {
                            p.lock().unwrap().push(addr);
                            axum::Json(serde_json::json!({"ok": true}))
                        },
                    ),
                )
                .with_state(seen);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
            .unwrap();
        });
    });
    let addr = rx.recv().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rb = format!(
        "version: 1\nname: pool\nsteps:\n  - id: one\n    uses: http.request\n    with: {{url: \"http://{addr}/ping\"}}\n  - id: many\n    uses: http.request\n    for_each: [1, 2, 3, 4, 5]\n    concurrency: 1\n    with: {{url: \"http://{addr}/ping\"}}\n  - id: last\n    uses: http.request\n    with: {{url: \"http://{addr}/ping\"}}\n"
    );
    std::fs::write(dir.path().join("rb.yaml"), rb).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_opsbook"))
        .args(["run", "rb.yaml", "--report-dir", "out"])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("out/run.json")).unwrap())
            .unwrap();
    assert_eq!(report["status"], "succeeded");
    let peers = peers.lock().unwrap();
    assert_eq!(peers.len(), 7);
    assert!(
        peers.iter().all(|p| *p == peers[0]),
        "requests came over several connections: {peers:?}"
    );
}
