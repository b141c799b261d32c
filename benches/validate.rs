//! Load + validate a generated 10,000-step runbook and print the figures.
//!
//! Run: `cargo bench --bench validate` (or `-- 20000` for another size). Prints the time of each
//! stage and of the whole, and the peak memory (VmHWM) of the process.

use std::time::{Duration, Instant};

/// The allocator the `opsbook` binary uses, so the figures are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use opsbook_engine::graph::RunbookGraph;
use opsbook_engine::{Registry, Source, Validator};

/// A realistic runbook: templated shell commands that read the step above, outputs, retries,
/// timeouts, a `for_each` every 10 steps and explicit `needs` every 7.
fn generate(steps: usize) -> String {
    let mut s = String::from(
        "# yaml-language-server: $schema=../schemas/runbook.schema.json\nversion: 1\nname: generated\n\
         params:\n  namespace: {type: string, default: web}\n  replicas: {type: integer, default: 3, minimum: 1}\n\
         vars:\n  label: \"app={{ params.namespace }}\"\nsecrets:\n  token: {env: API_TOKEN}\n\
         defaults:\n  timeout: 2m\n  retry: {attempts: 2, delay: 1s, backoff: exponential}\nconcurrency: 8\nsteps:\n",
    );
    for i in 0..steps {
        s.push_str(&format!(
            "  - id: step-{i}\n    name: Step number {i}\n    uses: shell\n"
        ));
        if i > 0 && i % 7 == 0 {
            s.push_str(&format!("    needs: [step-{}, step-{}]\n", i - 1, i - 7));
        }
        if i % 10 == 5 {
            s.push_str("    for_each: \"{{ params.namespace | list }}\"\n    concurrency: 4\n");
            s.push_str("    with:\n      command: \"echo {{ item | shquote }} {{ index }}\"\n");
        } else if i > 0 {
            s.push_str(&format!(
                "    with:\n      command: \"echo {{{{ steps['step-{}'].outputs.line | shquote }}}} {{{{ vars.label }}}}\"\n      env: {{N: \"{i}\"}}\n",
                i - 1
            ));
        } else {
            s.push_str("    with: {command: \"echo start\"}\n");
        }
        s.push_str("    timeout: 30s\n    retry: {attempts: 3, delay: 500ms, until: \"result.exit_code == 0\"}\n");
        s.push_str("    outputs:\n      line: \"{{ result.stdout | trim }}\"\n");
    }
    s.push_str("finally:\n  - id: done\n    uses: shell\n    with: {command: \"echo done\"}\n");
    s
}

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn main() {
    let steps: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10_000);
    let text = generate(steps);
    let kib = text.len() / 1024;
    if let Ok(path) = std::env::var("OPSBOOK_BENCH_WRITE") {
        // For measuring the CLI itself: `/usr/bin/time -v opsbook validate FILE`.
        std::fs::write(&path, &text).expect("write the generated runbook");
        println!("wrote the runbook to {path}");
    }
    // One copy of the text, shared by every round (as the CLI holds one).
    let shared = Source::new("generated.yaml", text);
    let mut registry = Registry::new();
    opsbook_engine::builtins::register(&mut registry);
    opsbook_shell::register(&mut registry);
    let validator = Validator::new(&registry);
    let rounds = 5;
    let mut totals = Vec::new();
    let mut parse_times = Vec::new();
    let mut first_round_peak = None;
    for round in 0..rounds {
        let source = shared.clone();
        let t = Instant::now();
        let doc = opsbook_engine::yaml::parse(&source).expect("generated YAML parses");
        parse_times.push(t.elapsed());
        drop(doc);
        let t = Instant::now();
        let checked = validator.check(source, None);
        let runbook = checked.runbook.expect("the generated runbook is valid");
        let graph = RunbookGraph::of(&runbook).expect("and has a graph");
        totals.push(t.elapsed());
        assert_eq!(graph.phases[0].1.ids.len(), steps);
        if round == 0 {
            first_round_peak = peak_rss_kib();
        }
    }
    totals.sort();
    parse_times.sort();
    let median = |v: &[Duration]| v[v.len() / 2];
    println!(
        "load + validate + plan of a {steps}-step runbook ({kib} KiB of YAML), {rounds} rounds"
    );
    println!(
        "  YAML parse alone:  median {:>8.1} ms",
        median(&parse_times).as_secs_f64() * 1e3
    );
    println!(
        "  whole:             median {:>8.1} ms, best {:.1} ms, worst {:.1} ms",
        median(&totals).as_secs_f64() * 1e3,
        totals[0].as_secs_f64() * 1e3,
        totals[rounds - 1].as_secs_f64() * 1e3
    );
    println!(
        "  per step:          {:>8.2} µs",
        median(&totals).as_secs_f64() * 1e6 / steps as f64
    );
    match first_round_peak {
        Some(kib) => println!("  peak memory after one load (VmHWM of the process, the YAML text included): {:.1} MiB", kib as f64 / 1024.0),
        None => println!("  peak memory: unavailable (no /proc/self/status)"),
    }
}
