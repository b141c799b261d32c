//! The executor's own overhead: chains and a wide DAG of no-op steps, with the report folder
//! written as `opsbook run` writes it. Run: `cargo bench --bench run`.

use std::sync::Arc;
use std::time::Instant;

use opsbook_engine::exec::event::Observer;
use opsbook_engine::exec::{new_run_id, Executor, RunOptions};
use opsbook_engine::report::ReportWriter;
use opsbook_engine::{Registry, Source, Validator};
use tokio_util::sync::CancellationToken;

/// The allocator the `opsbook` binary uses, so the figures are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn chain(n: usize, body: &str) -> String {
    let mut s = String::from("version: 1\nname: bench\nsteps:\n");
    for i in 0..n {
        s.push_str(&format!("  - id: s{i}\n{body}"));
    }
    s
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kib| kib / 1024.0)
        .unwrap_or(0.0)
}

fn run(label: &str, text: String, steps: usize, registry: &Registry) {
    let validator = Validator::new(registry);
    let checked = validator.check(Source::new("bench.yaml", text), None);
    let (Some(runbook), Some(doc)) = (&checked.runbook, &checked.document) else {
        panic!(
            "invalid bench runbook: {:?}",
            checked.diagnostics.first().map(|d| d.short())
        );
    };
    let dir = std::env::temp_dir().join(format!("opsbook-bench-run-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let writer: Arc<dyn Observer> = Arc::new(ReportWriter::new(dir.clone()).expect("run folder"));
    let env = opsbook_engine::template::environment();
    let opts = RunOptions {
        run_id: new_run_id(),
        runbook_path: "bench.yaml".into(),
        base_dir: std::env::temp_dir(),
        params: Default::default(),
        dry_run: false,
        concurrency: None,
        approve_all: false,
        approve: Default::default(),
        interactive: false,
        cancel: CancellationToken::new(),
        resume: None,
        resources: Default::default(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let t = Instant::now();
    let report = rt.block_on(async {
        let exec = Executor::new(
            runbook,
            doc,
            &checked.source,
            &env,
            registry,
            opts,
            vec![writer],
        );
        exec.run().await
    });
    let took = t.elapsed();
    assert_eq!(report.status.as_str(), "succeeded", "{:?}", report.error);
    println!(
        "{label:<34} {:>9.1} ms total  {:>8.1} µs/step  peak {:>6.1} MiB",
        took.as_secs_f64() * 1e3,
        took.as_secs_f64() * 1e6 / steps as f64,
        peak_rss_mib()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn main() {
    let mut registry = Registry::new();
    opsbook_engine::builtins::register(&mut registry);
    opsbook_shell::register(&mut registry);
    run(
        "1,000-step chain of `set`",
        chain(1000, "    uses: set\n    with: {x: \"{{ run.id }}\"}\n"),
        1000,
        &registry,
    );
    run(
        "1,000-step chain of `shell: true`",
        chain(1000, "    uses: shell\n    with: {command: \"true\"}\n"),
        1000,
        &registry,
    );
    run(
        "10,000-step wide DAG of `set`",
        chain(10_000, "    uses: set\n    needs: []\n    with: {x: 1}\n"),
        10_000,
        &registry,
    );
}
