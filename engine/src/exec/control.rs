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
        "runbook" => Err(ActionError::permanent(
            "nested runbooks (`uses: runbook`) are not supported by this build yet; run the other runbook as its own `opsbook run`",
        )),
        other => Err(ActionError::permanent(format!("`{other}` has no implementation in this build"))),
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
