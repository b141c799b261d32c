//! The terminal view of a run: plain timestamped lines (or JSON lines) on standard error.

use std::io::Write;

use opsbook_engine::action::LogStream;
use opsbook_engine::exec::event::{Event, Observer};
use opsbook_engine::exec::state::{ReportPhase, RunReport, Status};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `12:00:01 step | line` lines.
    Plain,
    /// One JSON object per event, for log shippers.
    Json,
}

/// Prints a run's events to standard error.
pub struct Progress {
    pub format: LogFormat,
    /// 0: quiet (no step output), 1: normal, 2: verbose (attempt starts too).
    pub verbosity: u8,
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

impl Observer for Progress {
    fn event(&self, event: &Event, report: &RunReport) {
        let mut err = std::io::stderr().lock();
        if self.format == LogFormat::Json {
            let v = match event {
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
            let _ = writeln!(
                err,
                "{}",
                serde_json::json!({"time": jiff::Timestamp::now().to_string()})
                    .as_object()
                    .map(|t| {
                        let mut m = t.clone();
                        if let Some(o) = v.as_object() {
                            m.extend(o.clone());
                        }
                        serde_json::Value::Object(m)
                    })
                    .unwrap_or(v)
            );
            return;
        }
        match event {
            Event::RunStarted => {
                let _ = writeln!(
                    err,
                    "{} run {} of {}{}",
                    clock(),
                    report.id,
                    report.runbook.name,
                    if report.dry_run { " (dry run)" } else { "" }
                );
            }
            Event::StepStarted {
                step,
                item,
                attempt,
                attempts,
            } => {
                if self.verbosity >= 2 || *attempt > 1 {
                    let tries = if *attempts > 1 {
                        format!(" (attempt {attempt}/{attempts})")
                    } else {
                        String::new()
                    };
                    let _ = writeln!(
                        err,
                        "{} {} started{tries}",
                        clock(),
                        label(report, *step, *item)
                    );
                }
            }
            Event::Log {
                step,
                item,
                stream,
                line,
            } => {
                if self.verbosity >= 1 {
                    let bar = if *stream == LogStream::Stderr {
                        "!"
                    } else {
                        "|"
                    };
                    let _ = writeln!(
                        err,
                        "{} {} {bar} {line}",
                        clock(),
                        label(report, *step, *item)
                    );
                }
            }
            Event::StepFinished { step } => {
                let s = &report.steps[*step];
                let took = s
                    .duration_ms
                    .map(|d| format!(" in {:.1}s", d as f64 / 1000.0))
                    .unwrap_or_default();
                let mark = match s.status {
                    Status::Succeeded => "ok",
                    Status::Skipped => "skipped",
                    Status::Failed => "FAILED",
                    Status::TimedOut => "TIMED OUT",
                    Status::Cancelled => "cancelled",
                    _ => s.status.as_str(),
                };
                let why = match (s.status, s.error.as_deref()) {
                    (Status::Succeeded, _) | (_, None) => String::new(),
                    (Status::Skipped, Some(e)) => format!(" ({e})"),
                    (_, Some(e)) => format!(": {e}"),
                };
                let took = if s.status == Status::Skipped {
                    String::new()
                } else {
                    took
                };
                let _ = writeln!(
                    err,
                    "{} {} {mark}{took}{why}",
                    clock(),
                    label(report, *step, None)
                );
            }
            Event::RunFinished => {
                let _ = writeln!(
                    err,
                    "\n{:<24} {:<10} {:>8} {:>9}",
                    "step", "status", "attempts", "time"
                );
                for s in &report.steps {
                    let id = if s.phase == ReportPhase::Rollback {
                        format!("{} (rollback)", s.id)
                    } else {
                        s.id.clone()
                    };
                    let _ = writeln!(
                        err,
                        "{:<24} {:<10} {:>8} {:>9}",
                        id,
                        s.status.as_str(),
                        s.attempts,
                        s.duration_ms.map(|d| format!("{d} ms")).unwrap_or_default()
                    );
                }
                let _ = writeln!(
                    err,
                    "\nrun {} {} in {:.1}s",
                    report.id,
                    report.status.as_str(),
                    report.duration_ms.unwrap_or(0) as f64 / 1000.0
                );
                if let Some(e) = &report.error {
                    let _ = writeln!(err, "error: {e}");
                }
            }
        }
    }
}
