//! The run folder: `run.json` (rewritten atomically after every step), `logs/`, `summary.md` and
//! `junit.xml`. An observer of the run's events, like the terminal.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::exec::event::{Event, Observer};
use crate::exec::state::{ReportPhase, RunReport, Status, StepReport};

/// Writes `bytes` to `path` through a temporary file and a rename, so a reader (or a killed
/// process) never sees half a file; the data is synced to disk first.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_replacing(path, bytes, true)
}

fn write_replacing(path: &Path, bytes: &[u8], sync: bool) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        if sync {
            f.sync_all()?;
        }
    }
    std::fs::rename(&tmp, path)
}

/// How often, at most, `run.json` is rewritten while a run goes on. Each finished step is also
/// appended at once to `steps.jsonl`, so nothing is lost in between.
const REWRITE_EVERY: Duration = Duration::from_millis(250);

/// Writes a run's folder as the run goes.
pub struct ReportWriter {
    dir: PathBuf,
    logs: Mutex<HashMap<String, File>>,
    errors: Mutex<Vec<String>>,
    journal: Mutex<Option<File>>,
    last_write: Mutex<Option<Instant>>,
}

impl ReportWriter {
    /// A writer into `dir` (created with `logs/` inside).
    pub fn new(dir: PathBuf) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir.join("logs"))?;
        let journal = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("steps.jsonl"))?;
        Ok(ReportWriter {
            dir,
            logs: Mutex::new(HashMap::new()),
            errors: Mutex::new(Vec::new()),
            journal: Mutex::new(Some(journal)),
            last_write: Mutex::new(None),
        })
    }

    /// The run folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Problems writing the folder (reported once the run ends).
    pub fn errors(&self) -> Vec<String> {
        self.errors.lock().map(|e| e.clone()).unwrap_or_default()
    }

    fn note(&self, what: String) {
        if let Ok(mut e) = self.errors.lock() {
            if e.len() < 20 {
                e.push(what);
            }
        }
    }

    fn write_run_json(&self, report: &RunReport, sync: bool) {
        match serde_json::to_vec_pretty(report) {
            Ok(bytes) => {
                if let Err(e) = write_replacing(&self.dir.join("run.json"), &bytes, sync) {
                    self.note(format!("cannot write run.json: {e}"));
                }
            }
            Err(e) => self.note(format!("cannot serialise run.json: {e}")),
        }
        if let Ok(mut last) = self.last_write.lock() {
            *last = Some(Instant::now());
        }
    }

    /// Appends a finished step's entry to `steps.jsonl` (its index in `steps`, then the entry).
    fn journal_step(&self, index: usize, step: &StepReport) {
        let Ok(mut journal) = self.journal.lock() else {
            return;
        };
        let Some(f) = journal.as_mut() else { return };
        // One write per entry: an append of a whole line is what a reader after a kill sees.
        let mut line = serde_json::to_vec(&serde_json::json!({"index": index, "step": step}))
            .unwrap_or_default();
        line.push(b'\n');
        if let Err(e) = f.write_all(&line) {
            drop(journal);
            self.note(format!("cannot append to steps.jsonl: {e}"));
        }
    }

    fn due(&self) -> bool {
        self.last_write
            .lock()
            .map(|l| l.is_none_or(|t| t.elapsed() >= REWRITE_EVERY))
            .unwrap_or(true)
    }

    fn log_name(step: &StepReport, item: Option<usize>) -> String {
        let base = match step.phase {
            ReportPhase::Rollback => format!("{}.rollback", step.id),
            _ => step.id.clone(),
        };
        match item {
            Some(i) => format!("{base}.{i}.log"),
            None => format!("{base}.log"),
        }
    }

    /// The last 20 lines of a step's (or item's) log.
    fn log_tail(&self, step: &StepReport, item: Option<usize>) -> Option<String> {
        let text =
            std::fs::read_to_string(self.dir.join("logs").join(Self::log_name(step, item))).ok()?;
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(20)..].join("\n");
        (!tail.is_empty()).then_some(tail)
    }

    fn append_log(&self, name: String, line: &str) {
        let Ok(mut logs) = self.logs.lock() else {
            return;
        };
        if !logs.contains_key(&name) {
            match OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.join("logs").join(&name))
            {
                Ok(f) => {
                    logs.insert(name.clone(), f);
                }
                Err(e) => {
                    drop(logs);
                    self.note(format!("cannot open logs/{name}: {e}"));
                    return;
                }
            }
        }
        if let Some(f) = logs.get_mut(&name) {
            let mut bytes = Vec::with_capacity(line.len() + 1);
            bytes.extend_from_slice(line.as_bytes());
            bytes.push(b'\n');
            let _ = f.write_all(&bytes);
        }
    }
}

impl Observer for ReportWriter {
    fn event(&self, event: &Event, report: &RunReport) {
        match event {
            Event::RunStarted => self.write_run_json(report, false),
            Event::StepFinished { step } => {
                if let Some(s) = report.steps.get(*step) {
                    self.journal_step(*step, s);
                }
                if self.due() {
                    self.write_run_json(report, false);
                }
            }
            Event::Log {
                step, item, line, ..
            } => {
                if let Some(s) = report.steps.get(*step) {
                    self.append_log(Self::log_name(s, *item), line);
                }
            }
            Event::StepStarted { .. } => {}
            Event::RunFinished => {
                self.write_run_json(report, true);
                if let Err(e) = write_atomic(
                    &self.dir.join("summary.md"),
                    summary_markdown(report).as_bytes(),
                ) {
                    self.note(format!("cannot write summary.md: {e}"));
                }
                if let Err(e) = write_atomic(
                    &self.dir.join("junit.xml"),
                    junit_xml(report, &|step, item| self.log_tail(step, item)).as_bytes(),
                ) {
                    self.note(format!("cannot write junit.xml: {e}"));
                }
            }
        }
    }
}

fn status_mark(s: Status) -> &'static str {
    match s {
        Status::Succeeded => "✅",
        Status::Failed | Status::TimedOut => "❌",
        Status::Skipped => "⏭️",
        Status::Cancelled => "🛑",
        Status::Pending | Status::Running => "…",
    }
}

fn phase_name(p: ReportPhase) -> &'static str {
    match p {
        ReportPhase::Main => "main",
        ReportPhase::Rollback => "rollback",
        ReportPhase::OnFailure => "on_failure",
        ReportPhase::Finally => "finally",
    }
}

/// The run as a Markdown table (also for `$GITHUB_STEP_SUMMARY`).
pub fn summary_markdown(r: &RunReport) -> String {
    let mut out = format!(
        "## {} {} — {}\n\nRun `{}`{}, {} ms.\n\n| step | phase | status | attempts | time | error |\n| --- | --- | --- | --- | --- | --- |\n",
        status_mark(r.status),
        r.runbook.name,
        r.status.as_str(),
        r.id,
        if r.dry_run { " (dry run)" } else { "" },
        r.duration_ms.unwrap_or(0)
    );
    for s in &r.steps {
        let error = s
            .error
            .as_deref()
            .unwrap_or("")
            .replace('|', "\\|")
            .replace('\n', " ");
        out.push_str(&format!(
            "| `{}` | {} | {} {} | {} | {} | {} |\n",
            s.id,
            phase_name(s.phase),
            status_mark(s.status),
            s.status.as_str(),
            s.attempts,
            s.duration_ms.map(|d| format!("{d} ms")).unwrap_or_default(),
            error
        ));
    }
    if let Some(e) = &r.error {
        out.push_str(&format!("\n**Error:** {}\n", e.replace('\n', " ")));
    }
    out
}

fn xml_escape(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control() || *c == '\n' || *c == '\t')
        .collect::<String>()
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// One JUnit test case: a step, or an item of a `for_each` step.
struct Case {
    name: String,
    status: Status,
    error: Option<String>,
    ms: u64,
    item: Option<usize>,
    /// A target's own output (its log lines are part of the step's log).
    output: Option<String>,
}

/// The last lines of a step's (or item's) log, for JUnit failures.
pub type LogTail<'a> = &'a dyn Fn(&StepReport, Option<usize>) -> Option<String>;

/// A JUnit report: a test case per step (or item), failures with their message and the end of
/// their log.
pub fn junit_xml(r: &RunReport, log_tail: LogTail<'_>) -> String {
    let mut cases = String::new();
    let mut tests = 0;
    let mut failures = 0;
    let mut skipped = 0;
    for s in &r.steps {
        let units: Vec<Case> = if !s.cases.is_empty() {
            // One case per target (host), plus the step itself when it failed and no target
            // did (its outputs or `until` failed after every host succeeded).
            let step_only = (s.status.is_failure() && !s.cases.iter().any(|c| c.is_failure()))
                .then(|| Case {
                    name: s.id.clone(),
                    status: s.status,
                    error: s.error.clone(),
                    ms: s.duration_ms.unwrap_or(0),
                    item: None,
                    output: None,
                });
            s.cases
                .iter()
                .map(|c| Case {
                    name: match c.item {
                        Some(i) => format!("{}[{i}][{}]", s.id, c.name),
                        None => format!("{}[{}]", s.id, c.name),
                    },
                    status: match c.status.as_str() {
                        "succeeded" => Status::Succeeded,
                        "skipped" => Status::Skipped,
                        "cancelled" => Status::Cancelled,
                        _ => Status::Failed,
                    },
                    error: c
                        .message
                        .clone()
                        .map(|m| format!("{}: {m}", c.status))
                        .or_else(|| c.is_failure().then(|| c.status.clone())),
                    ms: c.duration_ms,
                    item: c.item,
                    output: c.output.clone(),
                })
                .chain(step_only)
                .collect()
        } else if s.items.is_empty() {
            vec![Case {
                name: s.id.clone(),
                status: s.status,
                error: s.error.clone(),
                ms: s.duration_ms.unwrap_or(0),
                item: None,
                output: None,
            }]
        } else {
            s.items
                .iter()
                .map(|i| Case {
                    name: format!("{}[{}]", s.id, i.index),
                    status: i.status,
                    error: i.error.clone(),
                    ms: 0,
                    item: Some(i.index),
                    output: None,
                })
                .collect()
        };
        for Case {
            name,
            status,
            error,
            ms,
            item,
            output,
        } in units
        {
            tests += 1;
            cases.push_str(&format!(
                "    <testcase classname=\"{}.{}\" name=\"{}\" time=\"{:.3}\">",
                xml_escape(&r.runbook.name),
                phase_name(s.phase),
                xml_escape(&name),
                ms as f64 / 1000.0
            ));
            match status {
                Status::Failed | Status::TimedOut | Status::Cancelled => {
                    failures += 1;
                    let msg = error.unwrap_or_else(|| status.as_str().to_string());
                    let tail = output.or_else(|| log_tail(s, item));
                    let body = match tail {
                        Some(tail) => format!("{msg}\n\nlast lines of the log:\n{tail}"),
                        None => msg.clone(),
                    };
                    cases.push_str(&format!(
                        "<failure message=\"{}\" type=\"{}\">{}</failure>",
                        xml_escape(&msg),
                        status.as_str(),
                        xml_escape(&body)
                    ));
                }
                Status::Skipped | Status::Pending => {
                    skipped += 1;
                    cases.push_str("<skipped/>");
                }
                _ => {}
            }
            cases.push_str("</testcase>\n");
        }
    }
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites>\n  <testsuite name=\"{}\" tests=\"{tests}\" failures=\"{failures}\" skipped=\"{skipped}\" time=\"{:.3}\">\n{cases}  </testsuite>\n</testsuites>\n",
        xml_escape(&r.runbook.name),
        r.duration_ms.unwrap_or(0) as f64 / 1000.0
    )
}

/// Reads a run folder: `run.json`, with the steps that `steps.jsonl` recorded since its last
/// rewrite (a killed run's `run.json` can be up to a quarter of a second behind).
pub fn load_run(dir: &Path) -> Result<RunReport, String> {
    let path = dir.join("run.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut report: RunReport = serde_json::from_str(&text)
        .map_err(|e| format!("{} is not a run report: {e}", path.display()))?;
    if let Ok(journal) = std::fs::read_to_string(dir.join("steps.jsonl")) {
        for line in journal.lines() {
            // A line cut short by a kill is ignored.
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let (Some(index), Some(step)) =
                (v.get("index").and_then(|i| i.as_u64()), v.get("step"))
            else {
                continue;
            };
            let Ok(step) = serde_json::from_value::<StepReport>(step.clone()) else {
                continue;
            };
            let index = index as usize;
            if index < report.steps.len() {
                report.steps[index] = step;
            } else if index == report.steps.len() {
                report.steps.push(step);
            }
        }
    }
    Ok(report)
}
