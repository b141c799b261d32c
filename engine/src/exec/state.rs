//! The state of a run, as `run.json` holds it: the run, each step, each item.

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::action::TargetCase;

/// A step's (or a run's) status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Not started yet (or never started).
    Pending,
    /// In progress.
    Running,
    /// Done, and it worked.
    Succeeded,
    /// Done, and it did not work.
    Failed,
    /// Not run: `when` was false, or its needs did not allow it (`run_on`).
    Skipped,
    /// Stopped by its `timeout`.
    TimedOut,
    /// Stopped by Ctrl-C or SIGTERM.
    Cancelled,
}

impl Status {
    /// Whether the step has ended.
    pub fn is_done(self) -> bool {
        !matches!(self, Status::Pending | Status::Running)
    }

    /// Whether the status counts as a failure.
    pub fn is_failure(self) -> bool {
        matches!(self, Status::Failed | Status::TimedOut)
    }

    /// The name in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Running => "running",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::Skipped => "skipped",
            Status::TimedOut => "timed_out",
            Status::Cancelled => "cancelled",
        }
    }
}

/// Which part of the run a step entry belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportPhase {
    /// `steps:`
    Main,
    /// A step's `rollback:` body.
    Rollback,
    /// `on_failure:`
    OnFailure,
    /// `finally:`
    Finally,
}

/// The runbook a run ran.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunbookRef {
    /// Its `name`.
    pub name: String,
    /// Its file, as given on the command line.
    pub path: String,
}

/// One `for_each` item.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ItemReport {
    /// Position in the list.
    pub index: usize,
    /// The item.
    pub item: Value,
    /// How it ended.
    pub status: Status,
    /// Tries made.
    pub attempts: u32,
    /// The action's output.
    pub result: Value,
    /// The step's `outputs`, computed for this item.
    pub outputs: IndexMap<String, Value>,
    /// Why it failed.
    pub error: Option<String>,
}

/// One step (or rollback) of the run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepReport {
    /// The step id.
    pub id: String,
    /// Main, rollback, on_failure or finally.
    pub phase: ReportPhase,
    /// The action.
    pub uses: String,
    /// The step's `name`, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// How it ended (or `pending`).
    pub status: Status,
    /// Tries made (for `for_each` steps: the most any item needed).
    pub attempts: u32,
    /// RFC 3339 start time.
    pub started_at: Option<String>,
    /// RFC 3339 end time.
    pub finished_at: Option<String>,
    /// Wall time.
    pub duration_ms: Option<u64>,
    /// The rendered `with:` (masked).
    pub inputs: Value,
    /// The action's output (masked); for `for_each` steps, the list of item results.
    pub result: Value,
    /// The step's `outputs` (masked).
    pub outputs: IndexMap<String, Value>,
    /// Why it failed or was skipped (masked).
    pub error: Option<String>,
    /// The step's log file, relative to the run folder.
    pub log: Option<String>,
    /// The items of a `for_each` step.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<ItemReport>,
    /// One entry per target of an action that reports targets (the hosts of an SSH step).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cases: Vec<TargetCase>,
}

impl StepReport {
    /// A step that has not run yet.
    pub fn pending(id: &str, phase: ReportPhase, uses: &str, name: Option<String>) -> Self {
        StepReport {
            id: id.to_string(),
            phase,
            uses: uses.to_string(),
            name,
            status: Status::Pending,
            attempts: 0,
            started_at: None,
            finished_at: None,
            duration_ms: None,
            inputs: Value::Null,
            result: Value::Null,
            outputs: IndexMap::new(),
            error: None,
            log: None,
            items: Vec::new(),
            cases: Vec::new(),
        }
    }
}

/// A whole run: what `run.json` holds and `resume` reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    /// `20261124T203000Z-8f3a`.
    pub id: String,
    /// The runbook.
    pub runbook: RunbookRef,
    /// How the run ended (or `running`).
    pub status: Status,
    /// Whether it was a dry run.
    pub dry_run: bool,
    /// RFC 3339 start time.
    pub started_at: String,
    /// RFC 3339 end time.
    pub finished_at: Option<String>,
    /// Wall time.
    pub duration_ms: Option<u64>,
    /// The params the run used.
    pub params: IndexMap<String, Value>,
    /// The run's `outputs`.
    pub outputs: IndexMap<String, Value>,
    /// Why the run failed.
    pub error: Option<String>,
    /// Every step, in runbook order (rollbacks after the main steps, as they ran).
    pub steps: Vec<StepReport>,
}
