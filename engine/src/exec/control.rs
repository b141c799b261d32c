//! The control actions: `assert`, `approve`, `template` and `runbook` need the run's scope, the
//! terminal or the engine itself, so the executor carries them out.

use std::io::IsTerminal;

use serde_json::{json, Value};

use super::Executor;
use crate::action::{ActionError, LogStream, StepContext};

pub(super) async fn run(
    exec: &Executor<'_>,
    uses: &str,
    inputs: Value,
    scope: &minijinja::Value,
    cx: &StepContext,
) -> Result<Value, ActionError> {
    match uses {
        "assert" => assert(exec, &inputs, scope),
        "approve" => approve(exec, &inputs, cx).await,
        "template" => template(exec, &inputs, scope, cx),
        "runbook" => Box::pin(nested(exec, &inputs, cx)).await,
        other => Err(ActionError::permanent(format!(
            "`{other}` has no implementation in this build"
        ))),
    }
}

fn assert(
    exec: &Executor<'_>,
    inputs: &Value,
    scope: &minijinja::Value,
) -> Result<Value, ActionError> {
    let exprs: Vec<&str> = match inputs.get("that") {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => {
            return Err(ActionError::permanent(
                "`that` must be an expression or a list of them",
            ))
        }
    };
    for e in &exprs {
        let ok = crate::template::eval_bool(exec.env, e, scope)
            .map_err(|err| ActionError::permanent(format!("cannot evaluate `{e}`: {err}")))?;
        if !ok {
            let message = match inputs.get("message").and_then(Value::as_str) {
                Some(m) => m.to_string(),
                None => format!("assertion failed: {e}"),
            };
            return Err(ActionError::permanent(message));
        }
    }
    Ok(json!({"checked": exprs.len()}))
}

async fn approve(
    exec: &Executor<'_>,
    inputs: &Value,
    cx: &StepContext,
) -> Result<Value, ActionError> {
    let id = cx.step.split('[').next().unwrap_or(&cx.step).to_string();
    let message = inputs
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("Approve?")
        .to_string();
    if exec.opts.approve_all {
        return Ok(json!({"approved_by": "--yes"}));
    }
    if exec.opts.approve.contains(&id) {
        return Ok(json!({"approved_by": format!("--approve {id}")}));
    }
    if cx.dry_run {
        cx.log
            .line(LogStream::Stdout, &format!("would ask: {message}"));
        return Ok(json!({"approved_by": "dry run"}));
    }
    if !(exec.opts.interactive && std::io::stdin().is_terminal()) {
        return Err(ActionError::permanent(format!(
            "step `{id}` needs approval ({message}) and there is no terminal to ask on: run with `--approve {id}` or `--yes`"
        )));
    }
    let prompt = format!("\n{message}\nType `yes` to approve step `{id}`: ");
    let answer = tokio::select! {
        a = tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let mut err = std::io::stderr();
            let _ = write!(err, "{prompt}");
            let _ = err.flush();
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).map(|_| line)
        }) => a,
        _ = cx.cancel.cancelled() => return Err(ActionError::cancelled()),
    };
    match answer {
        Ok(Ok(line)) if line.trim().eq_ignore_ascii_case("yes") => {
            let who = std::env::var("USER").unwrap_or_else(|_| "the terminal".into());
            Ok(json!({"approved_by": who}))
        }
        _ => Err(ActionError::permanent(format!(
            "step `{id}` was not approved"
        ))),
    }
}

fn template(
    exec: &Executor<'_>,
    inputs: &Value,
    scope: &minijinja::Value,
    cx: &StepContext,
) -> Result<Value, ActionError> {
    // An inline `template` was rendered with the rest of `with`; a `src` file is rendered here.
    let content = match (
        inputs.get("template").and_then(Value::as_str),
        inputs.get("src").and_then(Value::as_str),
    ) {
        (Some(t), _) => t.to_string(),
        (None, Some(src)) => {
            let path = exec.opts.base_dir.join(src);
            let text = std::fs::read_to_string(&path).map_err(|e| {
                ActionError::permanent(format!("cannot read {}: {e}", path.display()))
            })?;
            exec.env.render_str(&text, scope).map_err(|e| {
                ActionError::permanent(format!("cannot render {}: {e}", path.display()))
            })?
        }
        _ => return Err(ActionError::permanent("give `template` or `src`")),
    };
    let dest = inputs.get("dest").and_then(Value::as_str);
    if let Some(dest) = dest {
        let path = exec.opts.base_dir.join(dest);
        if cx.dry_run {
            cx.log.line(
                LogStream::Stdout,
                &format!("would write {} ({} bytes)", path.display(), content.len()),
            );
        } else {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| {
                    ActionError::permanent(format!("cannot create {}: {e}", dir.display()))
                })?;
            }
            crate::report::write_atomic(&path, content.as_bytes()).map_err(|e| {
                ActionError::permanent(format!("cannot write {}: {e}", path.display()))
            })?;
        }
    }
    Ok(json!({"content": content, "dest": dest}))
}

/// Deepest nesting of `runbook` steps (a runbook that calls itself stops here).
const MAX_NESTING: usize = 8;

/// Forwards a nested run's output into the calling step's log.
struct Forward {
    log: std::sync::Arc<dyn crate::action::LogSink>,
}

impl super::event::Observer for Forward {
    fn event(&self, event: &super::event::Event, report: &super::state::RunReport) {
        use super::event::Event;
        match event {
            Event::Log {
                step, line, stream, ..
            } => {
                let id = report
                    .steps
                    .get(*step)
                    .map(|s| s.id.as_str())
                    .unwrap_or("?");
                self.log.line(*stream, &format!("{id} | {line}"));
            }
            Event::StepFinished { step } => {
                if let Some(s) = report.steps.get(*step) {
                    let why = s
                        .error
                        .as_deref()
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default();
                    self.log.line(
                        LogStream::Stdout,
                        &format!("{} {}{why}", s.id, s.status.as_str()),
                    );
                }
            }
            _ => {}
        }
    }
}

/// `runbook`: validates and runs another runbook as this step. Its steps are in this step's
/// `result.steps`; its outputs are `result.outputs`.
async fn nested(
    exec: &Executor<'_>,
    inputs: &Value,
    cx: &StepContext,
) -> Result<Value, ActionError> {
    use crate::validate::{GivenParam, GivenParams, Validator};
    let depth = exec.opts.run_id.matches('/').count();
    if depth >= MAX_NESTING {
        return Err(ActionError::permanent(format!(
            "runbooks nest deeper than {MAX_NESTING} levels (does one call itself?)"
        )));
    }
    let rel = inputs
        .get("path")
        .and_then(Value::as_str)
        .ok_or_else(|| ActionError::permanent("`path` is required"))?;
    let path = exec.opts.base_dir.join(rel);
    let given: GivenParams = inputs
        .get("params")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), GivenParam::Value(v.clone())))
                .collect()
        })
        .unwrap_or_default();
    let validator = Validator::new(exec.registry);
    let checked = validator.check_file(&path, Some(&given));
    let Some((runbook, doc, params)) = checked.runnable() else {
        let problems: Vec<String> = checked
            .diagnostics
            .iter()
            .take(5)
            .map(|d| d.short())
            .collect();
        return Err(ActionError::permanent(format!(
            "the nested runbook {} is invalid:\n{}",
            path.display(),
            problems.join("\n")
        )));
    };
    let opts = super::RunOptions {
        run_id: format!("{}/{}", exec.opts.run_id, cx.step),
        runbook_path: path.display().to_string(),
        base_dir: path
            .parent()
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| exec.opts.base_dir.clone()),
        params: params.clone(),
        dry_run: cx.dry_run,
        concurrency: exec.opts.concurrency,
        approve_all: exec.opts.approve_all,
        approve: exec.opts.approve.clone(),
        interactive: exec.opts.interactive,
        cancel: cx.cancel.clone(),
        resume: None,
        resources: exec.opts.resources.clone(),
    };
    let observers: Vec<std::sync::Arc<dyn super::event::Observer>> =
        vec![std::sync::Arc::new(Forward {
            log: cx.log.clone(),
        })];
    let child = Executor::new(
        runbook,
        doc,
        &checked.source,
        exec.env,
        exec.registry,
        opts,
        observers,
    );
    let report = child.run().await;
    let result = json!({"status": report.status.as_str(), "run_id": report.id, "outputs": report.outputs, "steps": report.steps, "error": report.error});
    match report.status {
        super::state::Status::Succeeded => Ok(result),
        super::state::Status::Cancelled => Err(ActionError::cancelled().with_details(result)),
        _ => Err(ActionError::permanent(format!(
            "the nested runbook {} failed: {}",
            path.display(),
            report.error.clone().unwrap_or_default()
        ))
        .with_details(result)),
    }
}
