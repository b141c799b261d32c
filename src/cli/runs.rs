//! `opsbook runs` and `opsbook runs show RUN`.

use std::path::Path;

use opsbook_engine::report::{load_run, summary_markdown};

use super::run::{run_dir, RUNS_DIR};
use super::{EXIT_INVALID, EXIT_OK};

/// List recent runs (newest first), or show one.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  opsbook runs\n  opsbook runs show 20261124T203000Z-8f3a\n  opsbook runs show out/check --json"
)]
pub struct Args {
    #[command(subcommand)]
    command: Option<Sub>,
    /// How many runs to list.
    #[arg(long, default_value_t = 20)]
    limit: usize,
}

#[derive(clap::Subcommand)]
enum Sub {
    /// Show one run: its steps, statuses and errors.
    Show {
        /// The run: its id (under `.opsbook/runs/`) or its folder.
        run: String,
        /// Print run.json instead.
        #[arg(long)]
        json: bool,
    },
}

/// Runs `opsbook runs`.
pub fn run(args: Args) -> u8 {
    match args.command {
        Some(Sub::Show { run, json }) => match load_run(&run_dir(&run)) {
            Ok(r) => {
                if json {
                    println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
                } else {
                    print!("{}", summary_markdown(&r));
                }
                EXIT_OK
            }
            Err(e) => {
                eprintln!("error: {e}");
                EXIT_INVALID
            }
        },
        None => {
            let Ok(entries) = std::fs::read_dir(Path::new(RUNS_DIR)) else {
                println!("no runs in {RUNS_DIR}");
                return EXIT_OK;
            };
            let mut runs: Vec<_> = entries
                .filter_map(|e| load_run(&e.ok()?.path()).ok())
                .collect();
            // Run ids start with their UTC start time, so they sort by age.
            runs.sort_by(|a, b| b.id.cmp(&a.id));
            println!(
                "{:<24} {:<24} {:<10} {:>10}",
                "run", "runbook", "status", "time"
            );
            for r in runs.iter().take(args.limit) {
                println!(
                    "{:<24} {:<24} {:<10} {:>10}",
                    r.id,
                    r.runbook.name,
                    r.status.as_str(),
                    r.duration_ms
                        .map(|d| format!("{:.1}s", d as f64 / 1000.0))
                        .unwrap_or_default()
                );
            }
            EXIT_OK
        }
    }
}
