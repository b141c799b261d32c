//! `opsbook run FILE` and `opsbook resume RUN`.

use std::collections::HashSet;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use opsbook_engine::exec::event::Observer;
use opsbook_engine::exec::state::{RunReport, Status};
use opsbook_engine::exec::{new_run_id, Executor, RunOptions};
use opsbook_engine::report::{load_run, summary_markdown, ReportWriter};
use opsbook_engine::validate::{parse_assignment, GivenParam, GivenParams};
use opsbook_engine::{Checked, RunResources, Validator};
use tokio_util::sync::CancellationToken;

use super::output::{render, ColorChoice, DiagFormat};
use super::progress::{LiveProgress, LogFormat, Progress};
use super::validate::given_params;
use super::{registry, EXIT_INVALID};

/// Exit code of a failed run.
const EXIT_FAILED: u8 = 1;
/// Exit code of a cancelled run.
const EXIT_CANCELLED: u8 = 130;
/// Where run folders go by default.
pub const RUNS_DIR: &str = ".opsbook/runs";

/// Options shared by `run` and `resume`.
#[derive(clap::Args)]
pub struct RunFlags {
    /// An Ansible inventory (YAML or INI) for `ssh.*` steps, instead of the runbook's own
    /// `inventory:`.
    #[arg(short = 'i', long, value_name = "FILE")]
    inventory: Option<PathBuf>,
    /// At most this many actions in flight (over the runbook's `concurrency`).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    concurrency: Option<u32>,
    /// Approve every `approve` step.
    #[arg(long)]
    yes: bool,
    /// Approve this `approve` step (repeatable).
    #[arg(long, value_name = "STEP")]
    approve: Vec<String>,
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
    /// The run folder (default `.opsbook/runs/<run-id>`).
    #[arg(long, value_name = "DIR")]
    report_dir: Option<PathBuf>,
    #[command(flatten)]
    flags: RunFlags,
}

/// Resume a run that failed, was cancelled or was killed: its succeeded and skipped steps keep
/// their results; the others run again, in the same run folder.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  opsbook resume 20261124T203000Z-8f3a\n  opsbook resume out/check --approve confirm"
)]
pub struct ResumeArgs {
    /// The run: its id (under `.opsbook/runs/`) or its folder.
    run: String,
    #[command(flatten)]
    flags: RunFlags,
}

/// The folder of a run given by id or path.
pub fn run_dir(run: &str) -> PathBuf {
    let as_path = PathBuf::from(run);
    if as_path.join("run.json").exists() {
        as_path
    } else {
        Path::new(RUNS_DIR).join(run)
    }
}

fn print_invalid(checked: &Checked) -> u8 {
    eprint!(
        "{}",
        render(
            &checked.diagnostics,
            &checked.source,
            DiagFormat::Text,
            ColorChoice::Auto.enabled()
        )
    );
    EXIT_INVALID
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
    let run_id = new_run_id();
    let dir = args
        .report_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(RUNS_DIR).join(&run_id));
    execute(
        &args.file,
        &given,
        run_id,
        dir,
        args.dry_run,
        None,
        &args.flags,
    )
}

/// Runs `opsbook resume`.
pub fn resume(args: ResumeArgs) -> u8 {
    let dir = run_dir(&args.run);
    let previous = match load_run(&dir) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_INVALID;
        }
    };
    if previous.status == Status::Succeeded {
        eprintln!("run {} already succeeded; nothing to resume", previous.id);
        return 0;
    }
    let given: GivenParams = previous
        .params
        .iter()
        .map(|(k, v)| (k.clone(), GivenParam::Value(v.clone())))
        .collect();
    let file = PathBuf::from(&previous.runbook.path);
    let (id, dry) = (previous.id.clone(), previous.dry_run);
    execute(&file, &given, id, dir, dry, Some(previous), &args.flags)
}

fn execute(
    file: &Path,
    given: &GivenParams,
    run_id: String,
    dir: PathBuf,
    dry_run: bool,
    resume: Option<RunReport>,
    flags: &RunFlags,
) -> u8 {
    let registry = registry::registry();
    let validator = Validator::new(&registry);
    let checked = validator.check_file(file, Some(given));
    let Some((runbook, doc, params)) = checked.runnable() else {
        return print_invalid(&checked);
    };
    let writer = match ReportWriter::new(dir.clone()) {
        Ok(w) => Arc::new(w),
        Err(e) => {
            eprintln!("error: cannot create the run folder {}: {e}", dir.display());
            return EXIT_INVALID;
        }
    };
    let base_dir = file
        .parent()
        .map(PathBuf::from)
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."));
    let cancel = CancellationToken::new();
    let opts = RunOptions {
        run_id,
        runbook_path: file.display().to_string(),
        base_dir,
        params: params.clone(),
        dry_run,
        concurrency: flags.concurrency.map(|c| c as usize),
        approve_all: flags.yes,
        approve: flags.approve.iter().cloned().collect::<HashSet<_>>(),
        interactive: std::io::stdin().is_terminal() && std::io::stderr().is_terminal(),
        cancel: cancel.clone(),
        resume,
        resources: Arc::new(RunResources::with_inventory(flags.inventory.clone())),
    };
    let resources = opts.resources.clone();
    let verbosity = if flags.quiet {
        0
    } else if flags.verbose {
        2
    } else {
        1
    };
    let live = flags.log_format == LogFormat::Plain
        && std::io::stderr().is_terminal()
        && std::env::var_os("CI").is_none();
    let view: Arc<dyn Observer> = if live {
        Arc::new(LiveProgress::new(verbosity))
    } else {
        Arc::new(Progress {
            format: flags.log_format,
            verbosity,
        })
    };
    let observers: Vec<Arc<dyn Observer>> = vec![writer.clone(), view];
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
        let report = exec.run().await;
        // Close what the steps kept open (SSH masters) before the process ends.
        resources.close().await;
        report
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
    if flags.json {
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
