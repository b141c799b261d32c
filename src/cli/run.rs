//! `opsbook run FILE`

use std::collections::HashSet;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use opsbook_engine::exec::event::Observer;
use opsbook_engine::exec::state::Status;
use opsbook_engine::exec::{new_run_id, Executor, RunOptions};
use opsbook_engine::report::{summary_markdown, ReportWriter};
use opsbook_engine::validate::parse_assignment;
use opsbook_engine::Validator;
use tokio_util::sync::CancellationToken;

use super::output::{render, ColorChoice, DiagFormat};
use super::progress::{LogFormat, Progress};
use super::validate::given_params;
use super::{registry, EXIT_INVALID};

/// Exit code of a failed run.
const EXIT_FAILED: u8 = 1;
/// Exit code of a cancelled run.
const EXIT_CANCELLED: u8 = 130;

/// Run a runbook: check it, then run its steps, writing a report folder.
#[derive(clap::Args)]
#[command(
    after_help = "Exit status: 0 succeeded, 1 failed, 2 invalid runbook or usage, 130 cancelled.\n\n\
Examples:\n  opsbook run runbooks/disk-usage.yaml\n  opsbook run deploy.yaml -p environment=prod --approve confirm\n  \
opsbook run deploy.yaml --dry-run\n  opsbook run check.yaml --json > run.json\n  opsbook run check.yaml --report-dir out/check --log-format json"
)]
pub struct Args {
    /// The runbook.
    file: PathBuf,
    /// A param: `-p name=value` (typed by the param's declared type).
    #[arg(short = 'p', long = "param", value_name = "NAME=VALUE", value_parser = parse_assignment)]
    params: Vec<(String, String)>,
    /// A YAML or JSON file of params; -p wins over it.
    #[arg(long, value_name = "FILE")]
    params_file: Option<PathBuf>,
    /// Change nothing: every action runs in its check mode or describes what it would do.
    #[arg(long)]
    dry_run: bool,
    /// At most this many actions in flight (over the runbook's `concurrency`).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    concurrency: Option<u32>,
    /// Approve every `approve` step.
    #[arg(long)]
    yes: bool,
    /// Approve this `approve` step (repeatable).
    #[arg(long, value_name = "STEP")]
    approve: Vec<String>,
    /// The run folder (default `.opsbook/runs/<run-id>`).
    #[arg(long, value_name = "DIR")]
    report_dir: Option<PathBuf>,
    /// Print run.json on standard output at the end.
    #[arg(long)]
    json: bool,
    /// How progress is shown on standard error.
    #[arg(long, value_enum, default_value_t = LogFormat::Plain)]
    log_format: LogFormat,
    /// Show no step output, only step results.
    #[arg(short, long, conflicts_with = "verbose")]
    quiet: bool,
    /// Show every attempt as it starts.
    #[arg(short, long)]
    verbose: bool,
}

/// Runs `opsbook run`.
pub fn run(args: Args) -> u8 {
    let given = match given_params(args.params_file.as_deref(), &args.params) {
        Ok(g) => g.unwrap_or_default(),
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_INVALID;
        }
    };
    let registry = registry::registry();
    let validator = Validator::new(&registry);
    let checked = validator.check_file(&args.file, Some(&given));
    let (Some(runbook), Some(doc), Some(params), true) = (
        &checked.runbook,
        &checked.document,
        &checked.params,
        checked.is_valid(),
    ) else {
        eprint!(
            "{}",
            render(
                &checked.diagnostics,
                &checked.source,
                DiagFormat::Text,
                ColorChoice::Auto.enabled()
            )
        );
        return EXIT_INVALID;
    };
    let run_id = new_run_id();
    let dir = args
        .report_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(".opsbook/runs").join(&run_id));
    let writer = match ReportWriter::new(dir.clone()) {
        Ok(w) => Arc::new(w),
        Err(e) => {
            eprintln!("error: cannot create the run folder {}: {e}", dir.display());
            return EXIT_INVALID;
        }
    };
    let base_dir = args
        .file
        .parent()
        .map(PathBuf::from)
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."));
    let cancel = CancellationToken::new();
    let opts = RunOptions {
        run_id,
        runbook_path: args.file.display().to_string(),
        base_dir,
        params: params.clone(),
        dry_run: args.dry_run,
        concurrency: args.concurrency.map(|c| c as usize),
        approve_all: args.yes,
        approve: args.approve.iter().cloned().collect::<HashSet<_>>(),
        interactive: std::io::stdin().is_terminal() && std::io::stderr().is_terminal(),
        cancel: cancel.clone(),
    };
    let progress = Progress {
        format: args.log_format,
        verbosity: if args.quiet {
            0
        } else if args.verbose {
            2
        } else {
            1
        },
    };
    let observers: Vec<Arc<dyn Observer>> = vec![writer.clone(), Arc::new(progress)];
    let env = opsbook_engine::template::environment();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return EXIT_FAILED;
        }
    };
    let report = runtime.block_on(async {
        tokio::spawn(watch_signals(cancel.clone()));
        let exec = Executor::new(
            runbook,
            doc,
            &checked.source,
            &env,
            &registry,
            opts,
            observers,
        );
        exec.run().await
    });
    for e in writer.errors() {
        eprintln!("warning: {e}");
    }
    eprintln!("report: {}", writer.dir().display());
    if let Some(path) = std::env::var_os("GITHUB_STEP_SUMMARY") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{}", summary_markdown(&report));
        }
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    }
    match report.status {
        Status::Succeeded => 0,
        Status::Cancelled => EXIT_CANCELLED,
        _ => EXIT_FAILED,
    }
}

/// First Ctrl-C or SIGTERM: cancel the run (running steps stop, `finally` still runs). Second:
/// leave at once.
async fn watch_signals(cancel: CancellationToken) {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    for round in 0..2 {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
        }
        if round == 0 {
            eprintln!("\ncancelling: running steps are stopped, `finally` runs; press Ctrl-C again to quit at once");
            cancel.cancel();
        } else {
            std::process::exit(i32::from(EXIT_CANCELLED));
        }
    }
}
