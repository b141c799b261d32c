//! The executor: runs a validated runbook's DAG and reports every step to its observers.
//!
//! A step starts when its `needs` are done and `run_on` and `when` allow it; run-level
//! `concurrency` bounds actions in flight (steps and `for_each` items); `retry` retries failed
//! attempts with fixed or exponential backoff, or polls with `until`; `timeout` bounds a whole
//! step (every attempt and item); a failed run runs the rollbacks of its succeeded steps in
//! reverse order of completion, then `on_failure`, and `finally` always runs. Steps run as futures
//! of one task, so they borrow the runbook instead of copying it.

mod control;
pub mod event;
mod scope;
pub mod state;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};
use indexmap::IndexMap;
use minijinja::Environment;
use serde_json::{json, Map, Value};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::action::{
    ActionError, ErrorKind, LogSink, LogStream, PerTarget, Registry, StepContext, TargetCase,
};
use crate::graph::{NodeSpec, PhaseGraph};
use crate::model::{Backoff, Phase, Retry, RunOn, Runbook, Step, When};
use crate::render::Renderer;
use crate::resources::{InventorySource, RunResources};
use crate::secrets::Masker;
use crate::source::Source;
use crate::yaml::Document;

use event::{Event, Observer};
use scope::StepsView;
use state::{ItemReport, ReportPhase, RunReport, RunbookRef, Status, StepReport};

/// How long a cancelled or timed-out action may take to stop before it is dropped.
const CANCEL_GRACE: Duration = Duration::from_secs(5);

/// How to run.
#[derive(Clone)]
pub struct RunOptions {
    /// The run's id (`20261124T203000Z-8f3a`).
    pub run_id: String,
    /// The runbook's path as given.
    pub runbook_path: String,
    /// Where relative paths resolve (the runbook's folder).
    pub base_dir: PathBuf,
    /// Params after defaults and checks.
    pub params: IndexMap<String, Value>,
    /// `--dry-run`.
    pub dry_run: bool,
    /// `--concurrency`, over the runbook's own.
    pub concurrency: Option<usize>,
    /// `--yes`: approve every `approve` step.
    pub approve_all: bool,
    /// `--approve STEP`.
    pub approve: HashSet<String>,
    /// Whether a person can answer prompts on this terminal.
    pub interactive: bool,
    /// Cancelled on Ctrl-C or SIGTERM.
    pub cancel: CancellationToken,
    /// Resuming an earlier run: its report (after [`crate::report::load_run`]). Its main steps
    /// that succeeded or were skipped keep their results and do not run again.
    pub resume: Option<RunReport>,
    /// What the run's steps share (plugin state, `--inventory`). Whoever starts a run closes
    /// them when it ends ([`RunResources::close`]); a nested runbook shares its parent's.
    pub resources: Arc<RunResources>,
}

/// A new run id: UTC time and four hex digits.
pub fn new_run_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let now = jiff::Timestamp::now();
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(now.as_nanosecond() as u128);
    h.write_u32(std::process::id());
    format!(
        "{}-{:04x}",
        now.strftime("%Y%m%dT%H%M%SZ"),
        h.finish() & 0xffff
    )
}

fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// Runs one runbook.
pub struct Executor<'a> {
    runbook: &'a Runbook,
    renderer: Renderer<'a>,
    env: &'a Environment<'static>,
    registry: &'a Registry,
    opts: RunOptions,
    shared: Arc<Shared>,
    steps_view: Arc<StepsView>,
    permits: Arc<Semaphore>,
    /// Values every template sees: params, vars, env, secrets, run.
    base_scope: Mutex<std::collections::BTreeMap<String, minijinja::Value>>,
    /// Environment for process-based actions: the runbook's `env`, rendered.
    run_env: Mutex<IndexMap<String, String>>,
    /// Main-phase steps that succeeded, in completion order, for rollbacks.
    completed: Mutex<Vec<usize>>,
    /// Steps kept from the run being resumed (by report index).
    kept: Vec<bool>,
    /// Set when the run's own `timeout` passed.
    run_timed_out: std::sync::atomic::AtomicBool,
    started: Instant,
    /// The inventory steps see (`--inventory`, else the runbook's `inventory:`).
    inventory: Mutex<Option<Arc<InventorySource>>>,
}

/// What one attempt (or a whole step) came to.
struct Outcome {
    status: Status,
    attempts: u32,
    result: Value,
    outputs: IndexMap<String, Value>,
    error: Option<String>,
}

/// What the report keeps of an outcome: result, outputs and error, masked.
struct Masked {
    result: Value,
    outputs: IndexMap<String, Value>,
    error: Option<String>,
}

impl Outcome {
    fn masked(&self, masker: &Masker) -> Masked {
        Masked {
            result: masker.mask_value(&self.result),
            outputs: self
                .outputs
                .iter()
                .map(|(k, v)| (k.clone(), masker.mask_value(v)))
                .collect(),
            error: self.error.as_deref().map(|e| masker.mask(e)),
        }
    }

    fn skipped(reason: impl Into<String>) -> Self {
        Outcome {
            status: Status::Skipped,
            attempts: 0,
            result: Value::Null,
            outputs: IndexMap::new(),
            error: Some(reason.into()),
        }
    }

    fn failed(status: Status, attempts: u32, error: String) -> Self {
        Outcome {
            status,
            attempts,
            result: Value::Null,
            outputs: IndexMap::new(),
            error: Some(error),
        }
    }
}

impl<'a> Executor<'a> {
    /// An executor for a runbook that passed validation (`doc` is its [`crate::Checked::document`]).
    pub fn new(
        runbook: &'a Runbook,
        doc: &'a Document,
        source: &'a Source,
        env: &'a Environment<'static>,
        registry: &'a Registry,
        opts: RunOptions,
        observers: Vec<Arc<dyn Observer>>,
    ) -> Self {
        let limit = opts
            .concurrency
            .or(runbook.concurrency.map(|c| c as usize))
            .unwrap_or(Semaphore::MAX_PERMITS.min(1 << 20))
            .max(1);
        let mut steps = Vec::new();
        for phase in Phase::ALL {
            let rp = match phase {
                Phase::Main => ReportPhase::Main,
                Phase::OnFailure => ReportPhase::OnFailure,
                Phase::Finally => ReportPhase::Finally,
            };
            for s in runbook.phase(phase) {
                steps.push(StepReport::pending(&s.id, rp, &s.uses, s.name.clone()));
            }
        }
        // Resuming: keep the main steps that succeeded or were skipped, as they were.
        let mut kept = vec![false; steps.len()];
        let mut kept_order: Vec<(String, usize)> = Vec::new();
        let mut started_at = now();
        if let Some(prev) = &opts.resume {
            started_at = prev.started_at.clone();
            let previous: Vec<&StepReport> = prev
                .steps
                .iter()
                .filter(|s| s.phase != ReportPhase::Rollback)
                .collect();
            for (i, entry) in steps.iter_mut().enumerate() {
                let Some(old) = previous.get(i) else { continue };
                let same = old.id == entry.id
                    && old.phase == entry.phase
                    && old.phase == ReportPhase::Main;
                if same && matches!(old.status, Status::Succeeded | Status::Skipped) {
                    *entry = (*old).clone();
                    kept[i] = true;
                    if old.status == Status::Succeeded {
                        kept_order.push((old.finished_at.clone().unwrap_or_default(), i));
                    }
                }
            }
        }
        kept_order.sort();
        let completed: Vec<usize> = kept_order
            .into_iter()
            .map(|(_, i)| i)
            .filter(|&i| runbook.steps.get(i).is_some_and(|s| s.rollback.is_some()))
            .collect();
        let report = RunReport {
            id: opts.run_id.clone(),
            runbook: RunbookRef {
                name: runbook.name.clone(),
                path: opts.runbook_path.clone(),
            },
            status: Status::Running,
            dry_run: opts.dry_run,
            started_at,
            finished_at: None,
            duration_ms: None,
            params: opts.params.clone(),
            outputs: IndexMap::new(),
            error: None,
            steps,
        };
        Executor {
            runbook,
            renderer: Renderer::new(env, source, doc),
            env,
            registry,
            opts,
            shared: Arc::new(Shared {
                report: Mutex::new(report),
                masker: Mutex::new(Masker::default()),
                observers,
            }),
            steps_view: Arc::new(StepsView::default()),
            permits: Arc::new(Semaphore::new(limit)),
            base_scope: Mutex::new(Default::default()),
            run_env: Mutex::new(IndexMap::new()),
            completed: Mutex::new(completed),
            kept,
            run_timed_out: Default::default(),
            started: Instant::now(),
            inventory: Mutex::new(None),
        }
    }

    fn emit(&self, event: Event) {
        self.shared.emit(event);
    }

    fn mask(&self) -> Masker {
        self.shared.mask()
    }

    /// Runs the runbook to the end and returns the final report.
    pub async fn run(&self) -> RunReport {
        // Every step is visible (as pending) from the start.
        let kept_entries: Vec<(String, serde_json::Value)> = self
            .shared
            .report
            .lock()
            .map(|r| {
                r.steps
                    .iter()
                    .zip(&self.kept)
                    .filter(|(_, k)| **k)
                    .map(|(s, _)| {
                        (
                            s.id.clone(),
                            step_entry(s, &s.result, &s.outputs, s.error.as_deref()),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        for phase in Phase::ALL {
            for s in self.runbook.phase(phase) {
                self.steps_view.set(&s.id, &json!({"status": "pending", "result": null, "outputs": {}, "items": [], "error": null, "attempts": 0, "duration_ms": null}));
            }
        }
        for (id, entry) in &kept_entries {
            self.steps_view.set(id, entry);
        }
        self.emit(Event::RunStarted);
        let mut failure: Option<String> = self.prepare().await.err();
        // The run's `timeout` bounds the main steps: when it passes they are stopped (as
        // timed out) and the run fails; rollbacks, `on_failure` and `finally` still run.
        let main_token = self.opts.cancel.child_token();
        if failure.is_none() {
            match self.runbook.timeout.map(|d| d.get()) {
                Some(limit) => {
                    tokio::select! {
                        _ = self.run_phase(Phase::Main, &main_token) => {}
                        _ = async {
                            tokio::time::sleep(limit).await;
                            self.run_timed_out.store(true, std::sync::atomic::Ordering::SeqCst);
                            main_token.cancel();
                            std::future::pending::<()>().await
                        } => {}
                    }
                }
                None => self.run_phase(Phase::Main, &main_token).await,
            }
        }
        let cancelled = self.opts.cancel.is_cancelled();
        if failure.is_none() && self.run_timed_out.load(std::sync::atomic::Ordering::SeqCst) {
            let limit = self
                .runbook
                .timeout
                .map(|d| d.to_string())
                .unwrap_or_default();
            failure = Some(format!("the run timed out after {limit}"));
        }
        if failure.is_none() {
            failure = self.first_failure();
        }
        if failure.is_some() && !cancelled {
            self.rollback().await;
            self.run_phase(Phase::OnFailure, &self.opts.cancel).await;
        }
        // `finally` runs even after Ctrl-C, with a token of its own.
        let finally_token = CancellationToken::new();
        self.run_phase(Phase::Finally, &finally_token).await;
        if failure.is_none() {
            failure = self.first_failure();
        }
        let outputs = if failure.is_none() && !cancelled {
            self.run_outputs()
        } else {
            Ok(IndexMap::new())
        };
        let (outputs, failure) = match outputs {
            Ok(o) => (o, failure),
            Err(e) => (IndexMap::new(), Some(e)),
        };
        let masker = self.mask();
        if let Ok(mut r) = self.shared.report.lock() {
            r.status = if cancelled {
                Status::Cancelled
            } else if failure.is_some() {
                Status::Failed
            } else {
                Status::Succeeded
            };
            r.error = failure.map(|e| masker.mask(&e));
            r.outputs = outputs
                .into_iter()
                .map(|(k, v)| (k, masker.mask_value(&v)))
                .collect();
            r.finished_at = Some(now());
            r.duration_ms = Some(self.started.elapsed().as_millis() as u64);
        }
        self.emit(Event::RunFinished);
        self.shared
            .report
            .lock()
            .map(|r| r.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    /// The first step failure that fails the run, as a message.
    fn first_failure(&self) -> Option<String> {
        let report = self.shared.report.lock().ok()?;
        let all: Vec<&Step> = Phase::ALL
            .iter()
            .flat_map(|p| self.runbook.phase(*p))
            .collect();
        report
            .steps
            .iter()
            .filter(|s| s.phase != ReportPhase::Rollback)
            .zip(all)
            .find_map(|(r, s)| {
                let allowed = s
                    .continue_on_error
                    .or(self.defaults_continue())
                    .unwrap_or(false);
                (r.status.is_failure() && !allowed).then(|| {
                    format!(
                        "step `{}` {}: {}",
                        r.id,
                        r.status.as_str().replace('_', " "),
                        r.error.clone().unwrap_or_default()
                    )
                })
            })
    }

    fn defaults_continue(&self) -> Option<bool> {
        self.runbook
            .defaults
            .as_ref()
            .and_then(|d| d.continue_on_error)
    }

    /// Resolves secrets, then renders `vars` in order and the runbook's `env`.
    async fn prepare(&self) -> Result<(), String> {
        let secrets = crate::secrets::resolve(
            &self.runbook.secrets,
            &self.opts.base_dir,
            self.registry,
            &self.opts.resources,
        )
        .await?;
        if let Ok(mut m) = self.shared.masker.lock() {
            *m = Masker::new(secrets.values().cloned());
        }
        let process_env: Map<String, Value> = std::env::vars()
            .map(|(k, v)| (k, Value::String(v)))
            .collect();
        let mut scope = Map::new();
        scope.insert("params".into(), json!(self.opts.params));
        scope.insert("env".into(), Value::Object(process_env));
        scope.insert("secrets".into(), json!(secrets));
        scope.insert("run".into(), json!({"id": self.opts.run_id, "name": self.runbook.name, "started_at": self.shared.report.lock().map(|r| r.started_at.clone()).unwrap_or_default(), "dry_run": self.opts.dry_run}));
        let mut vars = Map::new();
        for name in self.runbook.vars.keys() {
            scope.insert("vars".into(), Value::Object(vars.clone()));
            let ptr = format!("/vars/{}", crate::yaml::escape_pointer_token(name));
            let v = self
                .renderer
                .render(&ptr, &self.template_scope(&scope))
                .map_err(|d| self.mask().mask(&d.short()))?;
            vars.insert(name.clone(), v);
        }
        scope.insert("vars".into(), Value::Object(vars));
        let env = self
            .renderer
            .render("/env", &self.template_scope(&scope))
            .map_err(|d| self.mask().mask(&d.short()))?;
        if let Ok(mut e) = self.run_env.lock() {
            *e = env_strings(&env);
        }
        let inventory = match (
            &self.opts.resources.inventory_override,
            &self.runbook.inventory,
        ) {
            (Some(path), _) => Some(InventorySource::File(path.clone())),
            (None, Some(crate::model::Inventory::Path(_))) => {
                let path = self
                    .renderer
                    .render("/inventory", &self.template_scope(&scope))
                    .map_err(|d| self.mask().mask(&d.short()))?;
                let path = path.as_str().unwrap_or_default();
                Some(InventorySource::File(self.opts.base_dir.join(path)))
            }
            (None, Some(crate::model::Inventory::Inline(_))) => {
                let inline = self
                    .renderer
                    .render("/inventory", &self.template_scope(&scope))
                    .map_err(|d| self.mask().mask(&d.short()))?;
                Some(InventorySource::Inline(inline))
            }
            (None, None) => None,
        };
        if let Ok(mut i) = self.inventory.lock() {
            *i = inventory.map(Arc::new);
        }
        if let Ok(mut b) = self.base_scope.lock() {
            *b = scope
                .iter()
                .map(|(k, v)| (k.clone(), crate::template::to_template_value(v)))
                .collect();
        }
        Ok(())
    }

    fn template_scope(&self, base: &Map<String, Value>) -> minijinja::Value {
        let mut ctx: std::collections::BTreeMap<String, minijinja::Value> = base
            .iter()
            .map(|(k, v)| (k.clone(), crate::template::to_template_value(v)))
            .collect();
        ctx.insert(
            "steps".into(),
            minijinja::Value::from_dyn_object(self.steps_view.clone()),
        );
        minijinja::Value::from(ctx)
    }

    /// The scope of a step: the run's, plus `item`/`index` and `result` when given. The run's
    /// values were converted once, in `prepare`; cloning them is cheap.
    fn scope(&self, item: Option<(&Value, usize)>, result: Option<&Value>) -> minijinja::Value {
        let mut ctx = self
            .base_scope
            .lock()
            .map(|b| b.clone())
            .unwrap_or_default();
        ctx.insert(
            "steps".into(),
            minijinja::Value::from_dyn_object(self.steps_view.clone()),
        );
        if let Some((item, index)) = item {
            ctx.insert("item".into(), crate::template::to_template_value(item));
            ctx.insert("index".into(), minijinja::Value::from(index));
        }
        if let Some(r) = result {
            ctx.insert("result".into(), crate::template::to_template_value(r));
        }
        minijinja::Value::from(ctx)
    }

    fn run_outputs(&self) -> Result<IndexMap<String, Value>, String> {
        let v = self
            .renderer
            .render("/outputs", &self.scope(None, None))
            .map_err(|d| self.mask().mask(&d.short()))?;
        Ok(v.as_object()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default())
    }

    fn report_index(&self, phase: Phase, local: usize) -> usize {
        let before: usize = Phase::ALL
            .iter()
            .take_while(|p| **p != phase)
            .map(|p| self.runbook.phase(*p).len())
            .sum();
        before + local
    }

    /// Runs one phase's DAG to the end.
    async fn run_phase(&self, phase: Phase, cancel: &CancellationToken) {
        let steps = self.runbook.phase(phase);
        if steps.is_empty() {
            return;
        }
        let nodes: Vec<NodeSpec> = steps
            .iter()
            .map(|s| NodeSpec {
                id: &s.id,
                needs: s.needs.as_ref().map(|n| n.ids()),
            })
            .collect();
        let (graph, _) = PhaseGraph::build_lenient(&nodes);
        // Steps become ready when their last need ends: count what each still waits for.
        let mut waiting: Vec<usize> = graph.needs.iter().map(Vec::len).collect();
        let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); steps.len()];
        for (i, needs) in graph.needs.iter().enumerate() {
            for &d in needs {
                dependents[d].push(i);
            }
        }
        let mut ready: Vec<usize> = (0..steps.len())
            .filter(|&i| waiting[i] == 0)
            .rev()
            .collect();
        let mut done: Vec<Option<Status>> = vec![None; steps.len()];
        let mut running = FuturesUnordered::new();
        loop {
            if !cancel.is_cancelled() {
                while let Some(i) = ready.pop() {
                    let needs: Vec<(Status, bool)> = graph.needs[i]
                        .iter()
                        .map(|&d| {
                            (
                                done[d].unwrap_or(Status::Pending),
                                steps[d]
                                    .continue_on_error
                                    .or(self.defaults_continue())
                                    .unwrap_or(false),
                            )
                        })
                        .collect();
                    running.push(async move {
                        (i, self.run_step(phase, i, &steps[i], &needs, cancel).await)
                    });
                }
            }
            match running.next().await {
                Some((i, status)) => {
                    done[i] = Some(status);
                    for &j in &dependents[i] {
                        waiting[j] -= 1;
                        if waiting[j] == 0 {
                            ready.push(j);
                        }
                    }
                }
                None => break,
            }
        }
    }

    /// Decides, runs and records one step; returns its status.
    async fn run_step(
        &self,
        phase: Phase,
        local: usize,
        step: &Step,
        needs: &[(Status, bool)],
        cancel: &CancellationToken,
    ) -> Status {
        let ri = self.report_index(phase, local);
        if self.kept.get(ri).copied().unwrap_or(false) {
            return self
                .shared
                .report
                .lock()
                .map(|r| r.steps[ri].status)
                .unwrap_or(Status::Succeeded);
        }
        let base_ptr = format!("/{}/{local}", phase.key());
        // `run_on`: a need that failed with `continue_on_error` does not count as failed.
        let any_failed = needs.iter().any(|(s, allowed)| s.is_failure() && !allowed);
        let any_cancelled = needs.iter().any(|(s, _)| *s == Status::Cancelled);
        let run_on = step.run_on.unwrap_or_default();
        let skip_reason = match run_on {
            RunOn::Success if any_failed || any_cancelled => {
                Some("a step it needs did not succeed".to_string())
            }
            RunOn::Failure if !any_failed => {
                Some("`run_on: failure` and no step it needs failed".to_string())
            }
            _ => None,
        };
        if let Some(reason) = skip_reason {
            return self.finish(ri, &step.id, Outcome::skipped(reason), None);
        }
        let started = Instant::now();
        if let Ok(mut r) = self.shared.report.lock() {
            r.steps[ri].status = Status::Running;
            r.steps[ri].started_at = Some(now());
            r.steps[ri].log = Some(format!("logs/{}.log", step.id));
        }
        let per_item_when =
            matches!(&step.when, Some(When::Expr(e)) if e.contains("item") || e.contains("index"));
        if !per_item_when {
            match self
                .renderer
                .eval_bool(&format!("{base_ptr}/when"), &self.scope(None, None))
            {
                Ok(true) => {}
                Ok(false) => {
                    return self.finish(
                        ri,
                        &step.id,
                        Outcome::skipped("`when` is false"),
                        Some(started),
                    );
                }
                Err(d) => {
                    let outcome = self.render_failure(d.short());
                    return self.finish(ri, &step.id, outcome, Some(started));
                }
            }
        }
        let step_cancel = cancel.child_token();
        let timeout = step
            .timeout
            .or(self.runbook.defaults.as_ref().and_then(|d| d.timeout))
            .map(|d| d.get());
        let work = self.step_body(ri, &base_ptr, step, per_item_when, &step_cancel);
        let outcome = match timeout {
            Some(limit) => {
                let grace = self.grace(&step.uses);
                self.bounded(work, limit, grace, &step_cancel, ri).await
            }
            None => work.await,
        };
        let outcome = if cancel.is_cancelled()
            && (outcome.status.is_failure() || outcome.status == Status::Cancelled)
        {
            if self.run_timed_out.load(std::sync::atomic::Ordering::SeqCst) {
                let limit = self
                    .runbook
                    .timeout
                    .map(|d| d.to_string())
                    .unwrap_or_default();
                Outcome {
                    status: Status::TimedOut,
                    error: Some(format!("the run timed out after {limit}")),
                    ..outcome
                }
            } else {
                // Keep what the action said about being cancelled (which hosts were cut short).
                let error = match outcome.error {
                    Some(e)
                        if outcome.status == Status::Cancelled && e.starts_with("cancelled") =>
                    {
                        e
                    }
                    _ => "cancelled".into(),
                };
                Outcome {
                    status: Status::Cancelled,
                    error: Some(error),
                    ..outcome
                }
            }
        } else {
            outcome
        };
        if phase == Phase::Main && outcome.status == Status::Succeeded && step.rollback.is_some() {
            if let Ok(mut c) = self.completed.lock() {
                c.push(local);
            }
        }
        self.finish(ri, &step.id, outcome, Some(started))
    }

    /// A template that cannot be rendered fails its step; in a dry run, where earlier steps
    /// only described what they would do, it skips the step instead ("renders every step it can").
    fn render_failure(&self, message: String) -> Outcome {
        if self.opts.dry_run {
            Outcome::skipped(format!("dry run: {message}"))
        } else {
            Outcome::failed(Status::Failed, 0, message)
        }
    }

    /// Whether a dry run only describes this action (so its result is not real).
    fn dry_lenient(&self, uses: &str) -> bool {
        self.opts.dry_run
            && self
                .registry
                .get(uses)
                .is_none_or(|e| e.spec.dry_run != crate::action::DryRun::Runs)
    }

    /// Each output on its own, null where it cannot be rendered (dry runs).
    fn outputs_one_by_one(
        &self,
        base_ptr: &str,
        step: &Step,
        item: Option<(&Value, usize)>,
        result: &Value,
    ) -> IndexMap<String, Value> {
        let scope = self.scope(item, Some(result));
        step.outputs
            .keys()
            .map(|k| {
                let ptr = format!(
                    "{base_ptr}/outputs/{}",
                    crate::yaml::escape_pointer_token(k)
                );
                (
                    k.clone(),
                    self.renderer.render(&ptr, &scope).unwrap_or(Value::Null),
                )
            })
            .collect()
    }

    /// Runs `work` for at most `limit`; then cancels it, lets it stop by itself for a short
    /// grace period (actions kill their processes when cancelled), and reports `timed_out`.
    /// How long a timed-out action of `uses` may take to stop (its spec's, at least the
    /// default).
    fn grace(&self, uses: &str) -> Duration {
        self.registry
            .get(uses)
            .and_then(|e| e.spec.cancel_grace)
            .unwrap_or(CANCEL_GRACE)
            .max(CANCEL_GRACE)
    }

    async fn bounded(
        &self,
        work: impl std::future::Future<Output = Outcome>,
        limit: Duration,
        grace: Duration,
        cancel: &CancellationToken,
        ri: usize,
    ) -> Outcome {
        tokio::pin!(work);
        tokio::select! {
            o = &mut work => return o,
            _ = tokio::time::sleep(limit) => {}
        }
        cancel.cancel();
        let _ = tokio::time::timeout(grace, &mut work).await;
        let attempts = self
            .shared
            .report
            .lock()
            .map(|r| r.steps[ri].attempts)
            .unwrap_or(0);
        Outcome::failed(
            Status::TimedOut,
            attempts,
            format!("timed out after {}", crate::model::format_duration(limit)),
        )
    }

    /// Records a step's end, updates `steps.<id>`, and tells the observers.
    fn finish(&self, ri: usize, id: &str, o: Outcome, started: Option<Instant>) -> Status {
        let masker = self.mask();
        let entry;
        {
            let Ok(mut r) = self.shared.report.lock() else {
                return o.status;
            };
            let s = &mut r.steps[ri];
            s.status = o.status;
            s.attempts = s.attempts.max(o.attempts);
            let masked = o.masked(&masker);
            s.result = masked.result;
            s.outputs = masked.outputs;
            s.error = masked.error;
            s.finished_at = Some(now());
            s.duration_ms = started.map(|t| t.elapsed().as_millis() as u64);
            if s.started_at.is_none() {
                s.log = None;
            }
            // Templates see the real values; reports see masked ones.
            entry = step_entry(s, &o.result, &o.outputs, o.error.as_deref());
        }
        self.steps_view.set(id, &entry);
        self.emit(Event::StepFinished { step: ri });
        o.status
    }

    /// A step's work: `for_each` items or one call, with retries.
    async fn step_body(
        &self,
        ri: usize,
        base_ptr: &str,
        step: &Step,
        per_item_when: bool,
        cancel: &CancellationToken,
    ) -> Outcome {
        if step.for_each.is_none() {
            return self.attempts(ri, None, base_ptr, step, None, cancel).await;
        }
        let list = match self
            .renderer
            .render(&format!("{base_ptr}/for_each"), &self.scope(None, None))
        {
            Ok(Value::Array(items)) => items,
            Ok(other) => {
                return Outcome::failed(
                    Status::Failed,
                    0,
                    format!("`for_each` must give a list, got {}", type_name(&other)),
                )
            }
            Err(d) => return self.render_failure(d.short()),
        };
        if let Ok(mut r) = self.shared.report.lock() {
            r.steps[ri].items = list
                .iter()
                .enumerate()
                .map(|(index, item)| ItemReport {
                    index,
                    item: item.clone(),
                    status: Status::Pending,
                    attempts: 0,
                    result: Value::Null,
                    outputs: IndexMap::new(),
                    error: None,
                })
                .collect();
        }
        let limit = step
            .concurrency
            .or(self.runbook.defaults.as_ref().and_then(|d| d.concurrency))
            .map(|c| c as usize)
            .unwrap_or(list.len().max(1));
        let item_permits = Semaphore::new(limit.max(1));
        let masker = self.mask();
        let runs = list.iter().enumerate().map(|(index, item)| {
            let item_permits = &item_permits;
            let masker = &masker;
            async move {
                let _permit = item_permits.acquire().await;
                let outcome = if per_item_when {
                    match self.renderer.eval_bool(
                        &format!("{base_ptr}/when"),
                        &self.scope(Some((item, index)), None),
                    ) {
                        Ok(true) => {
                            self.attempts(
                                ri,
                                Some(index),
                                base_ptr,
                                step,
                                Some((item, index)),
                                cancel,
                            )
                            .await
                        }
                        Ok(false) => Outcome::skipped("`when` is false"),
                        Err(d) => self.render_failure(d.short()),
                    }
                } else {
                    self.attempts(ri, Some(index), base_ptr, step, Some((item, index)), cancel)
                        .await
                };
                if let Ok(mut r) = self.shared.report.lock() {
                    if let Some(it) = r.steps[ri].items.get_mut(index) {
                        it.status = outcome.status;
                        it.attempts = outcome.attempts;
                        let masked = outcome.masked(masker);
                        it.result = masked.result;
                        it.outputs = masked.outputs;
                        it.error = masked.error;
                    }
                }
                outcome
            }
        });
        let outcomes: Vec<Outcome> = futures_util::future::join_all(runs).await;
        let status = if outcomes.iter().any(|o| o.status == Status::Cancelled) {
            Status::Cancelled
        } else if outcomes.iter().any(|o| o.status.is_failure()) {
            Status::Failed
        } else if !outcomes.is_empty() && outcomes.iter().all(|o| o.status == Status::Skipped) {
            Status::Skipped
        } else {
            Status::Succeeded
        };
        let failed: Vec<String> = outcomes
            .iter()
            .enumerate()
            .filter(|(_, o)| o.status.is_failure())
            .map(|(i, o)| format!("item {i}: {}", o.error.clone().unwrap_or_default()))
            .collect();
        let mut outputs: IndexMap<String, Value> = IndexMap::new();
        for name in step.outputs.keys() {
            outputs.insert(
                name.clone(),
                Value::Array(
                    outcomes
                        .iter()
                        .map(|o| o.outputs.get(name).cloned().unwrap_or(Value::Null))
                        .collect(),
                ),
            );
        }
        Outcome {
            status,
            attempts: outcomes.iter().map(|o| o.attempts).max().unwrap_or(0),
            result: Value::Array(outcomes.iter().map(|o| o.result.clone()).collect()),
            outputs,
            error: (!failed.is_empty()).then(|| {
                format!(
                    "{} of {} items failed; {}",
                    failed.len(),
                    outcomes.len(),
                    failed.join("; ")
                )
            }),
        }
    }

    /// One call with its retries (and `until` polling) and its outputs.
    async fn attempts(
        &self,
        ri: usize,
        item_index: Option<usize>,
        base_ptr: &str,
        step: &Step,
        item: Option<(&Value, usize)>,
        cancel: &CancellationToken,
    ) -> Outcome {
        let retry =
            step.retry
                .clone()
                .or(self.runbook.defaults.as_ref().and_then(|d| d.retry.clone()));
        let attempts = retry.as_ref().map_or(1, |r| r.attempts.max(1));
        let mut last = Outcome::failed(Status::Failed, 0, "never ran".into());
        for attempt in 1..=attempts {
            if cancel.is_cancelled() {
                return Outcome::failed(Status::Cancelled, attempt - 1, "cancelled".into());
            }
            if let Ok(mut r) = self.shared.report.lock() {
                r.steps[ri].attempts = r.steps[ri].attempts.max(attempt);
            }
            self.emit(Event::StepStarted {
                step: ri,
                item: item_index,
                attempt,
                attempts,
            });
            let scope = self.scope(item, None);
            let call = self
                .call(ri, item_index, base_ptr, step, &scope, cancel)
                .await;
            last = match call {
                Ok(result) => {
                    let until = retry.as_ref().and_then(|r| r.until.as_ref());
                    let lenient = self.dry_lenient(&step.uses);
                    let until_ok = match until {
                        None => Ok(true),
                        // A described action has no real result to poll on.
                        Some(_) if lenient => Ok(true),
                        Some(_) => self
                            .renderer
                            .eval_bool(
                                &format!("{base_ptr}/retry/until"),
                                &self.scope(item, Some(&result)),
                            )
                            .map_err(|d| d.short()),
                    };
                    match until_ok {
                        Ok(true) => {
                            let outputs = match self.renderer.render(
                                &format!("{base_ptr}/outputs"),
                                &self.scope(item, Some(&result)),
                            ) {
                                Ok(Value::Object(m)) => m.into_iter().collect(),
                                Ok(_) => IndexMap::new(),
                                // In a dry run, outputs of a described action are unknown: null.
                                Err(_) if lenient => {
                                    self.outputs_one_by_one(base_ptr, step, item, &result)
                                }
                                Err(d) => {
                                    return Outcome {
                                        status: Status::Failed,
                                        attempts: attempt,
                                        result,
                                        outputs: IndexMap::new(),
                                        error: Some(d.short()),
                                    }
                                }
                            };
                            return Outcome {
                                status: Status::Succeeded,
                                attempts: attempt,
                                result,
                                outputs,
                                error: None,
                            };
                        }
                        Ok(false) => Outcome {
                            status: Status::Failed,
                            attempts: attempt,
                            result,
                            outputs: IndexMap::new(),
                            error: Some(format!(
                                "`retry.until` was still false after {attempt} attempt{}",
                                if attempt == 1 { "" } else { "s" }
                            )),
                        },
                        Err(e) => {
                            return Outcome {
                                status: Status::Failed,
                                attempts: attempt,
                                result,
                                outputs: IndexMap::new(),
                                error: Some(e),
                            }
                        }
                    }
                }
                // In a dry run, inputs that read unknown outputs cannot be rendered: say so, skip.
                Err(e) if self.opts.dry_run && e.details.get("render").is_some() => {
                    return Outcome {
                        attempts: attempt,
                        ..Outcome::skipped(format!("dry run: {}", e.message))
                    };
                }
                Err(e) => {
                    let stop = matches!(e.kind, ErrorKind::Permanent | ErrorKind::Cancelled);
                    let status = if e.kind == ErrorKind::Cancelled {
                        Status::Cancelled
                    } else {
                        Status::Failed
                    };
                    let o = Outcome {
                        status,
                        attempts: attempt,
                        result: e.details.clone(),
                        outputs: IndexMap::new(),
                        error: Some(e.message),
                    };
                    if stop {
                        return o;
                    }
                    o
                }
            };
            if attempt < attempts {
                if let Some(r) = &retry {
                    let wait = backoff(r, attempt);
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = cancel.cancelled() => return Outcome::failed(Status::Cancelled, attempt, "cancelled".into()),
                    }
                }
            }
        }
        last
    }

    /// Renders the inputs and calls the action once.
    async fn call(
        &self,
        ri: usize,
        item: Option<usize>,
        base_ptr: &str,
        step: &Step,
        scope: &minijinja::Value,
        cancel: &CancellationToken,
    ) -> Result<Value, ActionError> {
        let with_ptr = format!("{base_ptr}/with");
        let binds = self
            .registry
            .get(&step.uses)
            .map(|e| e.spec.binds.as_slice())
            .unwrap_or_default();
        let (inputs, per_target) = if binds.is_empty() {
            let inputs = self.renderer.render(&with_ptr, scope).map_err(|d| {
                ActionError::permanent(d.short()).with_details(json!({"render": true}))
            })?;
            (inputs, None)
        } else {
            let (inputs, deferred) = self
                .renderer
                .render_deferring(&with_ptr, scope, binds)
                .map_err(|d| {
                    ActionError::permanent(d.short()).with_details(json!({"render": true}))
                })?;
            (
                inputs,
                Some(Arc::new(PerTarget::new(deferred, scope.clone()))),
            )
        };
        let inputs = if inputs.is_null() {
            Value::Object(Map::new())
        } else {
            inputs
        };
        let masker = self.mask();
        if let Ok(mut r) = self.shared.report.lock() {
            if item.is_none() {
                r.steps[ri].inputs = masker.mask_value(&inputs);
            }
        }
        let mut env = self.run_env.lock().map(|e| e.clone()).unwrap_or_default();
        let step_env = self
            .renderer
            .render(&format!("{base_ptr}/env"), scope)
            .map_err(|d| ActionError::permanent(d.short()))?;
        env.extend(env_strings(&step_env));
        self.invoke(
            ri, item, &step.id, &step.uses, inputs, env, scope, cancel, per_target,
        )
        .await
    }

    /// Checks the rendered inputs against the action's schema and runs it.
    #[allow(clippy::too_many_arguments)]
    async fn invoke(
        &self,
        ri: usize,
        item: Option<usize>,
        id: &str,
        uses: &str,
        inputs: Value,
        env: IndexMap<String, String>,
        scope: &minijinja::Value,
        cancel: &CancellationToken,
        per_target: Option<Arc<PerTarget>>,
    ) -> Result<Value, ActionError> {
        let entry = self
            .registry
            .get(uses)
            .ok_or_else(|| ActionError::permanent(format!("unknown action `{uses}`")))?;
        if let Ok(validator) = entry.input_validator() {
            // Fields the action renders per target are still templates here.
            let deferred: HashSet<&str> = per_target
                .as_deref()
                .map(|p| p.pointers().collect())
                .unwrap_or_default();
            let problems: Vec<String> = validator
                .iter_errors(&inputs)
                .filter(|e| !deferred.contains(e.instance_path().as_str()))
                .map(|e| {
                    format!(
                        "{}: {e}",
                        if e.instance_path().as_str().is_empty() {
                            "with".to_string()
                        } else {
                            crate::validate::display_path(e.instance_path().as_str())
                        }
                    )
                })
                .collect();
            if !problems.is_empty() {
                return Err(ActionError::permanent(format!(
                    "the rendered inputs of `{uses}` are invalid: {}",
                    self.mask().mask(&problems.join("; "))
                )));
            }
        }
        let _permit = self.permits.acquire().await;
        let sink: Arc<dyn LogSink> = Arc::new(EventSink {
            shared: self.shared.clone(),
            ri,
            item,
        });
        let cx = StepContext {
            step: match item {
                Some(i) => format!("{id}[{i}]"),
                None => id.to_string(),
            },
            cancel: cancel.clone(),
            dry_run: self.opts.dry_run,
            env,
            cwd: self.opts.base_dir.clone(),
            log: sink,
            resources: self.opts.resources.clone(),
            inventory: self.inventory.lock().ok().and_then(|i| i.clone()),
            per_target,
        };
        let result = match &entry.action {
            Some(action) => action.run(inputs, &cx).await,
            None => control::run(self, uses, inputs, scope, &cx).await,
        };
        result
    }

    /// Runs the rollbacks of succeeded main steps, last completed first.
    async fn rollback(&self) {
        let order: Vec<usize> = self
            .completed
            .lock()
            .map(|c| c.iter().rev().copied().collect())
            .unwrap_or_default();
        for local in order {
            let step = &self.runbook.steps[local];
            let Some(body) = &step.rollback else { continue };
            let ri = match self.shared.report.lock() {
                Ok(mut r) => {
                    let mut entry = StepReport::pending(
                        &step.id,
                        ReportPhase::Rollback,
                        &body.uses,
                        body.name.clone(),
                    );
                    entry.status = Status::Running;
                    entry.started_at = Some(now());
                    entry.log = Some(format!("logs/{}.rollback.log", step.id));
                    r.steps.push(entry);
                    r.steps.len() - 1
                }
                Err(_) => continue,
            };
            let started = Instant::now();
            let base_ptr = format!("/steps/{local}/rollback");
            let as_step = Step {
                id: step.id.clone(),
                name: body.name.clone(),
                description: None,
                uses: body.uses.clone(),
                inputs: body.inputs.clone(),
                needs: None,
                run_on: None,
                when: None,
                for_each: None,
                concurrency: None,
                retry: body.retry.clone(),
                timeout: body.timeout,
                continue_on_error: None,
                outputs: IndexMap::new(),
                env: body.env.clone(),
                rollback: None,
            };
            let token = CancellationToken::new();
            let work = self.attempts(ri, None, &base_ptr, &as_step, None, &token);
            let outcome = match body.timeout.map(|d| d.get()) {
                Some(limit) => {
                    let grace = self.grace(&body.uses);
                    self.bounded(work, limit, grace, &token, ri).await
                }
                None => work.await,
            };
            let masker = self.mask();
            if let Ok(mut r) = self.shared.report.lock() {
                let s = &mut r.steps[ri];
                s.status = outcome.status;
                s.attempts = outcome.attempts;
                let masked = outcome.masked(&masker);
                s.result = masked.result;
                s.error = masked.error;
                s.finished_at = Some(now());
                s.duration_ms = Some(started.elapsed().as_millis() as u64);
            }
            self.emit(Event::StepFinished { step: ri });
        }
    }
}

/// What the executor shares with log sinks: the report, the masker and the observers.
struct Shared {
    report: Mutex<RunReport>,
    masker: Mutex<Masker>,
    observers: Vec<Arc<dyn Observer>>,
}

impl Shared {
    fn emit(&self, event: Event) {
        if let Ok(report) = self.report.lock() {
            for o in &self.observers {
                o.event(&event, &report);
            }
        }
    }

    fn mask(&self) -> Masker {
        self.masker.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

/// Log lines of one step (or item), masked and sent to the observers.
struct EventSink {
    shared: Arc<Shared>,
    ri: usize,
    item: Option<usize>,
}

impl LogSink for EventSink {
    fn secret(&self, value: &str) {
        let masker = match self.shared.masker.lock() {
            Ok(mut m) => {
                *m = m.with(value);
                m.clone()
            }
            Err(_) => return,
        };
        // The step's inputs were recorded (masked) when it started: mask them again.
        if let Ok(mut r) = self.shared.report.lock() {
            if let Some(step) = r.steps.get_mut(self.ri) {
                step.inputs = masker.mask_value(&step.inputs);
            }
        }
    }

    fn line(&self, stream: LogStream, line: &str) {
        let line = self.shared.mask().mask(line);
        self.shared.emit(Event::Log {
            step: self.ri,
            item: self.item,
            stream,
            line,
        });
    }

    fn case(&self, mut case: TargetCase) {
        let masker = self.shared.mask();
        case.name = masker.mask(&case.name);
        case.message = case.message.map(|m| masker.mask(&m));
        case.output = case.output.map(|o| masker.mask(&o));
        case.item = self.item;
        if let Ok(mut r) = self.shared.report.lock() {
            if let Some(step) = r.steps.get_mut(self.ri) {
                match step
                    .cases
                    .iter_mut()
                    .find(|c| c.name == case.name && c.item == case.item)
                {
                    Some(slot) => *slot = case,
                    None => step.cases.push(case),
                }
            }
        }
    }
}

/// `steps.<id>` as templates see it.
fn step_entry(
    s: &StepReport,
    result: &Value,
    outputs: &IndexMap<String, Value>,
    error: Option<&str>,
) -> Value {
    json!({
        "status": s.status.as_str(), "result": result, "outputs": outputs, "error": error,
        "attempts": s.attempts, "duration_ms": s.duration_ms, "started_at": s.started_at, "finished_at": s.finished_at,
        "items": s.items.iter().map(|i| json!({"index": i.index, "item": i.item, "status": i.status.as_str(), "attempts": i.attempts, "result": i.result, "outputs": i.outputs, "error": i.error})).collect::<Vec<_>>(),
    })
}

fn env_strings(v: &Value) -> IndexMap<String, String> {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    let s = match v {
                        Value::String(s) => s.clone(),
                        Value::Null => String::new(),
                        other => other.to_string(),
                    };
                    (k.clone(), s)
                })
                .collect()
        })
        .unwrap_or_default()
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// The wait before attempt `attempt + 1`.
fn backoff(r: &Retry, attempt: u32) -> Duration {
    let base = r.delay.map(|d| d.get()).unwrap_or(Duration::from_secs(1));
    let mut wait = match r.backoff {
        Backoff::Fixed => base,
        Backoff::Exponential => base.saturating_mul(
            1u32.checked_shl(attempt.saturating_sub(1))
                .unwrap_or(u32::MAX),
        ),
    };
    if let Some(max) = r.max_delay {
        wait = wait.min(max.get());
    }
    if r.jitter {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(attempt);
        let f = 0.5 + (h.finish() % 1000) as f64 / 1000.0; // 0.5 .. 1.5
        wait = wait.mul_f64(f);
    }
    wait
}
