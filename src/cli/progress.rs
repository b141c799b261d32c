//! The terminal view of a run, on standard error: a live view on a terminal (a spinner line per
//! running step or item with its attempt and last log line), plain timestamped lines otherwise,
//! or one JSON object per event for log shippers.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use opsbook_engine::action::LogStream;
use opsbook_engine::exec::event::{Event, Observer};
use opsbook_engine::exec::state::{ReportPhase, RunReport, Status};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// A live view on a terminal, `12:00:01 step | line` lines otherwise.
    Plain,
    /// One JSON object per event, for log shippers.
    Json,
}

fn clock() -> String {
    jiff::Zoned::now().strftime("%H:%M:%S").to_string()
}

fn label(report: &RunReport, step: usize, item: Option<usize>) -> String {
    let Some(s) = report.steps.get(step) else {
        return "?".into();
    };
    let base = if s.phase == ReportPhase::Rollback {
        format!("{} (rollback)", s.id)
    } else {
        s.id.clone()
    };
    match item {
        Some(i) => format!("{base}[{i}]"),
        None => base,
    }
}

/// The line that says how a step ended.
fn finished_line(report: &RunReport, step: usize) -> String {
    let s = &report.steps[step];
    let mark = match s.status {
        Status::Succeeded => "ok",
        Status::Skipped => "skipped",
        Status::Failed => "FAILED",
        Status::TimedOut => "TIMED OUT",
        Status::Cancelled => "cancelled",
        other => other.as_str(),
    };
    let took = match (s.status, s.duration_ms) {
        (Status::Skipped, _) | (_, None) => String::new(),
        (_, Some(d)) => format!(" in {:.1}s", d as f64 / 1000.0),
    };
    let why = match (s.status, s.error.as_deref()) {
        (Status::Succeeded, _) | (_, None) => String::new(),
        (Status::Skipped, Some(e)) => format!(" ({e})"),
        (_, Some(e)) => format!(": {e}"),
    };
    format!(
        "{} {} {mark}{took}{why}",
        clock(),
        label(report, step, None)
    )
}

/// The table printed when the run ends.
fn final_table(report: &RunReport) -> String {
    let mut out = format!(
        "\n{:<24} {:<10} {:>8} {:>9}\n",
        "step", "status", "attempts", "time"
    );
    for s in &report.steps {
        let id = if s.phase == ReportPhase::Rollback {
            format!("{} (rollback)", s.id)
        } else {
            s.id.clone()
        };
        let time = s.duration_ms.map(|d| format!("{d} ms")).unwrap_or_default();
        out.push_str(&format!(
            "{:<24} {:<10} {:>8} {:>9}\n",
            id,
            s.status.as_str(),
            s.attempts,
            time
        ));
    }
    out.push_str(&format!(
        "\nrun {} {} in {:.1}s\n",
        report.id,
        report.status.as_str(),
        report.duration_ms.unwrap_or(0) as f64 / 1000.0
    ));
    if let Some(e) = &report.error {
        out.push_str(&format!("error: {e}\n"));
    }
    out
}

fn run_started_line(report: &RunReport) -> String {
    format!(
        "{} run {} of {}{}",
        clock(),
        report.id,
        report.runbook.name,
        if report.dry_run { " (dry run)" } else { "" }
    )
}

/// Plain lines (or JSON lines) on standard error.
pub struct Progress {
    /// Plain or JSON.
    pub format: LogFormat,
    /// 0: quiet (no step output), 1: normal, 2: verbose (attempt starts too).
    pub verbosity: u8,
}

impl Observer for Progress {
    fn event(&self, event: &Event, report: &RunReport) {
        let mut err = std::io::stderr().lock();
        if self.format == LogFormat::Json {
            let _ = writeln!(err, "{}", json_line(event, report));
            return;
        }
        let line = match event {
            Event::RunStarted => Some(run_started_line(report)),
            Event::StepStarted {
                step,
                item,
                attempt,
                attempts,
            } if self.verbosity >= 2 || *attempt > 1 => {
                let tries = if *attempts > 1 {
                    format!(" (attempt {attempt}/{attempts})")
                } else {
                    String::new()
                };
                Some(format!(
                    "{} {} started{tries}",
                    clock(),
                    label(report, *step, *item)
                ))
            }
            Event::Log {
                step,
                item,
                stream,
                line,
            } if self.verbosity >= 1 => {
                let bar = if *stream == LogStream::Stderr {
                    "!"
                } else {
                    "|"
                };
                Some(format!(
                    "{} {} {bar} {line}",
                    clock(),
                    label(report, *step, *item)
                ))
            }
            Event::StepFinished { step } => Some(finished_line(report, *step)),
            Event::RunFinished => Some(final_table(report)),
            _ => None,
        };
        if let Some(line) = line {
            let _ = writeln!(err, "{line}");
        }
    }
}

fn json_line(event: &Event, report: &RunReport) -> serde_json::Value {
    let mut v = match event {
        Event::RunStarted => {
            serde_json::json!({"event": "run_started", "run": report.id, "runbook": report.runbook.name})
        }
        Event::StepStarted {
            step,
            item,
            attempt,
            attempts,
        } => {
            serde_json::json!({"event": "step_started", "step": report.steps.get(*step).map(|s| &s.id), "item": item, "attempt": attempt, "attempts": attempts})
        }
        Event::Log {
            step,
            item,
            stream,
            line,
        } => {
            serde_json::json!({"event": "log", "step": report.steps.get(*step).map(|s| &s.id), "item": item, "stream": stream, "line": line})
        }
        Event::StepFinished { step } => {
            let s = &report.steps[*step];
            serde_json::json!({"event": "step_finished", "step": s.id, "phase": s.phase, "status": s.status, "attempts": s.attempts, "duration_ms": s.duration_ms, "error": s.error})
        }
        Event::RunFinished => {
            serde_json::json!({"event": "run_finished", "run": report.id, "status": report.status, "duration_ms": report.duration_ms, "error": report.error})
        }
    };
    if let Some(o) = v.as_object_mut() {
        o.insert(
            "time".into(),
            serde_json::Value::String(jiff::Timestamp::now().to_string()),
        );
    }
    v
}

/// The live view on a terminal: a spinner line per running step or item, with its attempt and
/// its last log line; finished steps print their result line above the spinners.
pub struct LiveProgress {
    bars: MultiProgress,
    running: Mutex<HashMap<(usize, Option<usize>), ProgressBar>>,
    /// 2 prints every log line above the spinners too.
    verbosity: u8,
}

impl LiveProgress {
    /// A live view drawing on standard error.
    pub fn new(verbosity: u8) -> Self {
        LiveProgress {
            bars: MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10)),
            running: Mutex::new(HashMap::new()),
            verbosity,
        }
    }

    fn bar(&self, report: &RunReport, step: usize, item: Option<usize>) -> Option<ProgressBar> {
        let mut running = self.running.lock().ok()?;
        Some(
            running
                .entry((step, item))
                .or_insert_with(|| {
                    let bar = self.bars.add(ProgressBar::new_spinner());
                    let style = ProgressStyle::with_template(
                        "{spinner} {elapsed:>4} {prefix:.bold} {wide_msg}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_spinner());
                    bar.set_style(style);
                    bar.set_prefix(label(report, step, item));
                    bar.enable_steady_tick(Duration::from_millis(100));
                    bar
                })
                .clone(),
        )
    }

    fn finish_step(&self, step: usize) {
        if let Ok(mut running) = self.running.lock() {
            running.retain(|(s, _), bar| {
                if *s == step {
                    bar.finish_and_clear();
                    self.bars.remove(bar);
                    false
                } else {
                    true
                }
            });
        }
    }
}

impl Observer for LiveProgress {
    fn event(&self, event: &Event, report: &RunReport) {
        match event {
            Event::RunStarted => {
                let _ = self.bars.println(run_started_line(report));
            }
            Event::StepStarted {
                step,
                item,
                attempt,
                attempts,
            } => {
                if let Some(bar) = self.bar(report, *step, *item) {
                    if *attempts > 1 {
                        bar.set_message(format!("attempt {attempt}/{attempts}"));
                    }
                }
            }
            Event::Log {
                step,
                item,
                stream,
                line,
            } => {
                if self.verbosity >= 2 {
                    let mark = if *stream == LogStream::Stderr {
                        "!"
                    } else {
                        "|"
                    };
                    let _ = self.bars.println(format!(
                        "{} {} {mark} {line}",
                        clock(),
                        label(report, *step, *item)
                    ));
                }
                if let Some(bar) = self.bar(report, *step, *item) {
                    let short: String = line.chars().take(120).collect();
                    bar.set_message(short);
                }
            }
            Event::StepFinished { step } => {
                self.finish_step(*step);
                let _ = self.bars.println(finished_line(report, *step));
            }
            Event::RunFinished => {
                if let Ok(mut running) = self.running.lock() {
                    for (_, bar) in running.drain() {
                        bar.finish_and_clear();
                    }
                }
                let _ = self.bars.clear();
                eprint!("{}", final_table(report));
            }
        }
    }
}
