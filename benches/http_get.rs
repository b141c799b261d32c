//! HTTP fan-out benchmark: 1,000 GET requests with `for_each` and concurrency 50 against a
//! local server (axum on 127.0.0.1, in this process), through the real `opsbook` binary with
//! its run folder. Prints requests per second and the run's peak memory.
//!
//! Run: `cargo bench --bench http_get` (`REQUESTS=N`, `CONCURRENCY=N`, `ROUNDS=N` change it).

use std::process::{Command, Stdio};
use std::time::Instant;

use axum::routing::get;
use axum::Router;

fn main() {
    let requests: usize = env_num("REQUESTS", 1000);
    let concurrency: usize = env_num("CONCURRENCY", 50);
    let rounds: usize = env_num("ROUNDS", 3);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let app = Router::new().route(
                "/item/{id}",
                get(
                    |axum::extract::Path(id): axum::extract::Path<u64>| async move {
                        axum::Json(serde_json::json!({"id": id, "status": "ok"}))
                    },
                ),
            );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            tx.send(listener.local_addr().expect("addr")).expect("send");
            axum::serve(listener, app).await.expect("serve");
        });
    });
    let addr = rx.recv().expect("server address");
    let dir = tempfile::tempdir().expect("temp dir");
    let rb = format!(
        "version: 1\nname: http-get-bench\nsteps:\n  - id: get\n    uses: http.request\n    for_each: \"{{{{ range({requests}) | list }}}}\"\n    concurrency: {concurrency}\n    with:\n      url: \"http://{addr}/item/{{{{ item }}}}\"\n      expect: {{that: [\"result.json.status == 'ok'\"]}}\n"
    );
    std::fs::write(dir.path().join("rb.yaml"), rb).expect("runbook");
    let mut best = f64::MAX;
    for round in 0..rounds {
        let out = dir.path().join(format!("out{round}"));
        let started = Instant::now();
        let status = Command::new(env!("CARGO_BIN_EXE_opsbook"))
            .args(["run", "rb.yaml", "-q", "--report-dir"])
            .arg(&out)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run opsbook");
        let secs = started.elapsed().as_secs_f64();
        if !status.success() {
            eprintln!("http_get: the run failed; see {}", out.display());
            std::process::exit(1);
        }
        best = best.min(secs);
        println!(
            "round {}: {requests} GETs, concurrency {concurrency}: {secs:.2} s, {:.0} requests/s",
            round + 1,
            requests as f64 / secs
        );
    }
    // The largest child waited for: the opsbook runs.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    println!(
        "http_get: best {best:.2} s = {:.0} requests/s (whole run: start, 1,000 items in the report, exit); peak memory {:.1} MiB",
        requests as f64 / best,
        usage.ru_maxrss as f64 / 1024.0
    );
}

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(default)
}
