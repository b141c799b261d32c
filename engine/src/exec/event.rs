//! What a run tells its observers. The executor emits events and nothing else writes output: the
//! terminal, the report folder and (later) the run store and server all observe the same stream.

use crate::action::LogStream;

use super::state::RunReport;

/// Something that happened in a run. Every text in an event is already masked.
#[derive(Debug, Clone)]
pub enum Event {
    /// The run began; the report lists every step as pending.
    RunStarted,
    /// A step (or one of its items, or a rollback) started an attempt.
    StepStarted {
        /// Index in `RunReport::steps`.
        step: usize,
        /// The `for_each` index.
        item: Option<usize>,
        /// This attempt (1-based).
        attempt: u32,
        /// Attempts allowed.
        attempts: u32,
    },
    /// A line of a step's output.
    Log {
        /// Index in `RunReport::steps`.
        step: usize,
        /// The `for_each` index.
        item: Option<usize>,
        /// stdout or stderr.
        stream: LogStream,
        /// The line, masked.
        line: String,
    },
    /// A step ended (its entry in the report is final).
    StepFinished {
        /// Index in `RunReport::steps`.
        step: usize,
    },
    /// The run ended (the report is final).
    RunFinished,
}

/// Receives a run's events with the report as it stands after each.
pub trait Observer: Send + Sync {
    /// Called in order, one event at a time.
    fn event(&self, event: &Event, report: &RunReport);
}
