//! Templates and expressions: syntax, and the names they read.

use std::collections::HashSet;

use serde_json::Value;

use super::structure::{StepInfo, Steps};
use super::{locate_in_scalar, Cx};
use crate::diag::{Code, Diagnostic};
use crate::suggest::did_you_mean;
use crate::template::{check_expression, check_template, SyntaxError};
use crate::yaml::escape_pointer_token;

/// The fields of `steps.<id>`.
const STEP_FIELDS: &[&str] = &[
    "status",
    "result",
    "outputs",
    "items",
    "error",
    "attempts",
    "duration_ms",
    "started_at",
    "finished_at",
];
/// The fields of `run`.
const RUN_FIELDS: &[&str] = &["id", "name", "started_at", "dry_run"];

/// Which steps a template may read.
#[derive(Clone, Copy)]
enum StepsVisible {
    /// None (vars, runbook env).
    None,
    /// Steps that finish before step `global` starts; `self_ok` adds the step itself (rollback).
    Before { global: usize, self_ok: bool },
    /// Every step (run outputs).
    All,
}

/// What is in scope for one template.
#[derive(Clone, Copy)]
struct Scope<'s> {
    /// `vars` declared before this index are visible (`usize::MAX`: all).
    vars_before: usize,
    steps: StepsVisible,
    item: bool,
    result: bool,
    /// Names the step's action binds per target (`host` in `ssh.*` inputs).
    binds: &'s [String],
}

/// How a string is read.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Mode {
    Template,
    Expression,
}

pub(crate) fn check(cx: &mut Cx<'_>, steps: &Steps<'_>) {
    let root = cx.root;
    let none = Scope {
        vars_before: usize::MAX,
        steps: StepsVisible::None,
        item: false,
        result: false,
        binds: &[],
    };

    if let Some(vars) = root.get("vars").and_then(Value::as_object) {
        for (i, (k, v)) in vars.iter().enumerate() {
            let scope = Scope {
                vars_before: i,
                ..none
            };
            walk(
                cx,
                steps,
                v,
                &format!("/vars/{}", escape_pointer_token(k)),
                scope,
            );
        }
    }
    if let Some(env) = root.get("env") {
        walk(cx, steps, env, "/env", none);
    }
    if let Some(inventory) = root.get("inventory") {
        walk(cx, steps, inventory, "/inventory", none);
    }
    if let Some(outputs) = root.get("outputs") {
        let scope = Scope {
            steps: StepsVisible::All,
            ..none
        };
        walk(cx, steps, outputs, "/outputs", scope);
    }
    if let Some(until) = root
        .pointer("/defaults/retry/until")
        .and_then(Value::as_str)
    {
        let scope = Scope {
            result: true,
            ..none
        };
        check_one(
            cx,
            steps,
            until,
            "/defaults/retry/until",
            scope,
            Mode::Expression,
        );
    }

    for (gi, s) in steps.list.iter().enumerate() {
        check_step(cx, steps, gi, s);
    }
}

fn check_step(cx: &mut Cx<'_>, steps: &Steps<'_>, gi: usize, s: &StepInfo<'_>) {
    let has_items = s.get("for_each").is_some();
    let base = Scope {
        vars_before: usize::MAX,
        steps: StepsVisible::Before {
            global: gi,
            self_ok: false,
        },
        item: has_items,
        result: false,
        binds: &[],
    };
    let p = &s.ptr;
    if let Some(with) = s.get("with") {
        let uses = s.get("uses").and_then(Value::as_str);
        if uses == Some("assert") {
            check_assert(cx, steps, with, &format!("{p}/with"), base);
        } else {
            let registry = cx.v.registry;
            let binds = uses
                .and_then(|u| registry.get(u))
                .map(|e| e.spec.binds.as_slice())
                .unwrap_or_default();
            walk(
                cx,
                steps,
                with,
                &format!("{p}/with"),
                Scope { binds, ..base },
            );
        }
    }
    if let Some(env) = s.get("env") {
        walk(cx, steps, env, &format!("{p}/env"), base);
    }
    if let Some(fe) = s.get("for_each") {
        walk(
            cx,
            steps,
            fe,
            &format!("{p}/for_each"),
            Scope {
                item: false,
                ..base
            },
        );
    }
    if let Some(Value::String(w)) = s.get("when") {
        check_one(cx, steps, w, &format!("{p}/when"), base, Mode::Expression);
    }
    if let Some(Value::String(u)) = s.get("retry").and_then(|r| r.get("until")) {
        check_one(
            cx,
            steps,
            u,
            &format!("{p}/retry/until"),
            Scope {
                result: true,
                ..base
            },
            Mode::Expression,
        );
    }
    if let Some(outputs) = s.get("outputs") {
        walk(
            cx,
            steps,
            outputs,
            &format!("{p}/outputs"),
            Scope {
                result: true,
                ..base
            },
        );
    }
    if let Some(rb) = s.get("rollback") {
        let scope = Scope {
            steps: StepsVisible::Before {
                global: gi,
                self_ok: true,
            },
            ..base
        };
        if let Some(with) = rb.get("with") {
            let uses = rb.get("uses").and_then(Value::as_str);
            if uses == Some("assert") {
                check_assert(cx, steps, with, &format!("{p}/rollback/with"), scope);
            } else {
                let registry = cx.v.registry;
                let binds = uses
                    .and_then(|u| registry.get(u))
                    .map(|e| e.spec.binds.as_slice())
                    .unwrap_or_default();
                walk(
                    cx,
                    steps,
                    with,
                    &format!("{p}/rollback/with"),
                    Scope { binds, ..scope },
                );
            }
        }
        if let Some(env) = rb.get("env") {
            walk(cx, steps, env, &format!("{p}/rollback/env"), scope);
        }
        if let Some(Value::String(u)) = rb.get("retry").and_then(|r| r.get("until")) {
            check_one(
                cx,
                steps,
                u,
                &format!("{p}/rollback/retry/until"),
                Scope {
                    result: true,
                    ..scope
                },
                Mode::Expression,
            );
        }
    }
}

/// `assert`'s `that:` holds bare expressions; its other inputs are templates.
fn check_assert(cx: &mut Cx<'_>, steps: &Steps<'_>, with: &Value, ptr: &str, scope: Scope<'_>) {
    let Some(obj) = with.as_object() else {
        walk(cx, steps, with, ptr, scope);
        return;
    };
    for (k, v) in obj {
        let child = format!("{ptr}/{}", escape_pointer_token(k));
        match (k.as_str(), v) {
            ("that", Value::String(e)) => check_one(cx, steps, e, &child, scope, Mode::Expression),
            ("that", Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    if let Value::String(e) = item {
                        check_one(
                            cx,
                            steps,
                            e,
                            &format!("{child}/{i}"),
                            scope,
                            Mode::Expression,
                        );
                    }
                }
            }
            _ => walk(cx, steps, v, &child, scope),
        }
    }
}

fn walk(cx: &mut Cx<'_>, steps: &Steps<'_>, v: &Value, ptr: &str, scope: Scope<'_>) {
    match v {
        Value::String(s) => check_one(cx, steps, s, ptr, scope, Mode::Template),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                walk(cx, steps, item, &format!("{ptr}/{i}"), scope);
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                walk(
                    cx,
                    steps,
                    item,
                    &format!("{ptr}/{}", escape_pointer_token(k)),
                    scope,
                );
            }
        }
        _ => {}
    }
}

fn check_one(cx: &mut Cx<'_>, steps: &Steps<'_>, s: &str, ptr: &str, scope: Scope<'_>, mode: Mode) {
    // Generated runbooks repeat the same templates many times: compile each text once.
    let cache = &mut cx.templates[usize::from(mode == Mode::Expression)];
    let result = match cache.get(s) {
        Some(r) => r.clone(),
        None => {
            let r = match mode {
                Mode::Template => check_template(&cx.v.env, s),
                Mode::Expression => check_expression(&cx.v.env, s),
            };
            let r = std::rc::Rc::new(r.map(|names| {
                let mut names: Vec<String> = names.into_iter().collect();
                names.sort();
                names.into_boxed_slice()
            }));
            cache.insert(s.into(), r.clone());
            r
        }
    };
    match result.as_ref() {
        Err(e) => {
            let where_ = owner(cx, ptr);
            report_syntax(cx, s, ptr, e, mode, &where_)
        }
        Ok(names) if names.is_empty() => {}
        Ok(names) => check_names(cx, steps, s, ptr, scope, names),
    }
}

fn owner(cx: &Cx<'_>, ptr: &str) -> String {
    super::describe_field(cx.root, ptr)
}

fn report_syntax(cx: &mut Cx<'_>, s: &str, ptr: &str, e: &SyntaxError, mode: Mode, where_: &str) {
    let Some(value_span) = cx.doc.value_span(ptr) else {
        return;
    };
    let span = match &e.range {
        Some(r) => locate_in_scalar(cx.source, value_span, s, r.start.min(s.len()), r.len()),
        None => value_span,
    };
    let what = if mode == Mode::Expression {
        "expression"
    } else {
        "template"
    };
    let braces = mode == Mode::Expression && (s.contains("{{") || s.contains("{%"));
    let span = match s.find("{{").or_else(|| s.find("{%")) {
        Some(at) if braces => locate_in_scalar(cx.source, value_span, s, at, 2),
        _ => span,
    };
    let help = if braces {
        Some("`when`, `retry.until` and `assert` conditions are bare expressions: write them without `{{ }}`".to_string())
    } else {
        e.help.clone()
    };
    cx.push(
        Diagnostic::new(
            Code::TemplateSyntax,
            cx.source,
            Some(span),
            format!("invalid {what} in {where_}: {}", e.message),
        )
        .maybe_help(help)
        .label("here"),
    );
}

fn check_names(
    cx: &mut Cx<'_>,
    steps: &Steps<'_>,
    s: &str,
    ptr: &str,
    scope: Scope<'_>,
    names: &[String],
) {
    let mut reported: HashSet<String> = HashSet::new();
    for name in names {
        // `params.get('x')`, `steps.a.outputs.items()`: the last part is a method, not a name;
        // what comes before it is still checked.
        let called = s
            .match_indices(name.as_str())
            .any(|(at, _)| s[at + name.len()..].starts_with('('));
        let mut parts: Vec<&str> = name.split('.').collect();
        if called {
            parts.pop();
            if parts.len() < 2 {
                continue;
            }
        }
        let root = parts[0];
        let problem: Option<(Code, String, Option<String>, String)> = match root {
            "params" => parts
                .get(1)
                .and_then(|p| declared_problem(cx, "params", p, usize::MAX)),
            "vars" => parts
                .get(1)
                .and_then(|p| declared_problem(cx, "vars", p, scope.vars_before)),
            "secrets" => parts
                .get(1)
                .and_then(|p| declared_problem(cx, "secrets", p, usize::MAX)),
            "env" => None,
            "run" => parts.get(1).and_then(|f| {
                (!RUN_FIELDS.contains(f)).then(|| {
                    (
                        Code::UnknownName,
                        format!("`run` has no field `{f}`"),
                        Some(
                            did_you_mean(f, RUN_FIELDS.iter().copied())
                                .unwrap_or_else(|| format!("fields: {}", RUN_FIELDS.join(", "))),
                        ),
                        format!("run.{f}"),
                    )
                })
            }),
            "steps" => match scope.steps {
                StepsVisible::None => {
                    let (place, why) = if ptr.starts_with("/vars") {
                        ("`vars`", "vars are computed before any step runs")
                    } else if ptr.starts_with("/defaults") {
                        ("`defaults`", "defaults apply to every step, before any has run")
                    } else {
                        ("the runbook's `env`", "it is computed before any step runs; a step's own `env` can read `steps`")
                    };
                    Some((Code::StepReference, format!("`steps` cannot be read in {place}: {why}"), None, "steps".into()))
                }
                _ => parts.get(1).and_then(|id| {
                    step_problem(
                        steps,
                        scope.steps,
                        id,
                        parts.get(2).copied(),
                        parts.get(3).copied(),
                    )
                }),
            },
            "item" | "index" => (!scope.item).then(|| {
                let message = if ptr.contains("/for_each") {
                    format!("`{root}` is not defined in `for_each` itself: it is bound to each item of the list `for_each` gives")
                } else {
                    format!("`{root}` is only defined in a step with `for_each`")
                };
                (Code::UnknownName, message, None, root.to_string())
            }),
            "result" => (!scope.result).then(|| {
                let message = if ptr.starts_with("/outputs") {
                    "`result` is not defined in the run's `outputs`".to_string()
                } else {
                    "`result` is only defined in a step's `outputs` and `retry.until`".to_string()
                };
                (Code::UnknownName, message, Some("to read a step's result, use `steps.<id>.result`".into()), "result".to_string())
            }),
            other if cx.v.globals.contains(other) => None,
            other if scope.binds.iter().any(|b| b == other) => None,
            other => {
                let mut in_scope = vec!["params", "vars", "env", "secrets", "run"];
                if !matches!(scope.steps, StepsVisible::None) {
                    in_scope.push("steps");
                }
                if scope.item {
                    in_scope.extend(["item", "index"]);
                }
                if scope.result {
                    in_scope.push("result");
                }
                in_scope.extend(scope.binds.iter().map(String::as_str));
                let declared_as = ["params", "vars", "secrets"].into_iter().find(|section| {
                    cx.root.get(*section).and_then(Value::as_object).is_some_and(|m| m.contains_key(other))
                });
                let binders: Vec<&str> = cx
                    .v
                    .registry
                    .iter()
                    .filter(|e| e.spec.binds.iter().any(|b| b == other))
                    .map(|e| e.spec.name.as_str())
                    .collect();
                let help = match declared_as {
                    Some(section) => format!("did you mean `{section}.{other}`?"),
                    None if !binders.is_empty() => format!(
                        "`{other}` is only defined in the `with:` of steps that use {}",
                        binders
                            .iter()
                            .map(|b| format!("`{b}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    None => did_you_mean(other, in_scope.iter().copied())
                        .unwrap_or_else(|| format!("names in scope here: {}", in_scope.join(", "))),
                };
                Some((
                    Code::UnknownName,
                    format!("`{other}` is not defined"),
                    Some(help),
                    other.to_string(),
                ))
            }
        };
        if let Some((code, message, help, needle)) = problem {
            if !reported.insert(message.clone()) {
                continue;
            }
            let value_span = cx.doc.value_span(ptr);
            let span = value_span.map(|vs| match find_name(s, &needle) {
                Some(off) => locate_in_scalar(cx.source, vs, s, off, needle.len()),
                None => vs,
            });
            let where_ = owner(cx, ptr);
            cx.push(
                Diagnostic::new(code, cx.source, span, format!("{message} (in {where_})"))
                    .maybe_help(help)
                    .label("read here"),
            );
        }
    }
}

/// Where `needle` (a dotted name) is read in `s`: the whole name, not a longer one that starts
/// with it, or its bracket form (`steps['my-id']`).
fn find_name(s: &str, needle: &str) -> Option<usize> {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut from = 0;
    while let Some(p) = s[from..].find(needle) {
        let at = from + p;
        let before_ok = at == 0 || !s[..at].ends_with(|c: char| ident(c) || c == '.');
        let after_ok = !s[at + needle.len()..].starts_with(ident);
        if before_ok && after_ok {
            return Some(at);
        }
        from = at + needle.len();
    }
    let mut parts = needle.splitn(3, '.');
    let (root, key) = (parts.next()?, parts.next()?);
    for q in ['\'', '"'] {
        for form in [
            format!("{root}[{q}{key}{q}]"),
            format!("{root}[ {q}{key}{q} ]"),
        ] {
            if let Some(p) = s.find(&form) {
                return Some(p);
            }
        }
    }
    None
}

/// `params.x`, `vars.x`, `secrets.x`: is `x` declared (before index `before`, for vars)?
fn declared_problem(
    cx: &Cx<'_>,
    section: &str,
    name: &str,
    before: usize,
) -> Option<(Code, String, Option<String>, String)> {
    let declared: Vec<&str> = cx
        .root
        .get(section)
        .and_then(Value::as_object)
        .map(|m| m.keys().map(String::as_str).collect())
        .unwrap_or_default();
    let needle = format!("{section}.{name}");
    match declared.iter().position(|d| *d == name) {
        Some(i) if i < before => None,
        Some(i) if i == before => Some((
            Code::UnknownName,
            format!("`vars.{name}` reads itself"),
            Some("a var can read only the vars declared above it".into()),
            needle,
        )),
        Some(_) => Some((
            Code::UnknownName,
            format!("`vars.{name}` is declared after the var that reads it"),
            Some("vars are computed in order: move it above".into()),
            needle,
        )),
        None => {
            let help = did_you_mean(name, declared.iter().copied()).or_else(|| {
                Some(if declared.is_empty() {
                    format!("this runbook declares no {section}")
                } else {
                    format!("declared {section}: {}", declared.join(", "))
                })
            });
            Some((
                Code::UnknownName,
                format!("no {} `{name}` is declared", singular(section)),
                help,
                needle,
            ))
        }
    }
}

fn singular(section: &str) -> &str {
    match section {
        "params" => "param",
        "vars" => "var",
        "secrets" => "secret",
        other => other,
    }
}

fn step_problem(
    steps: &Steps<'_>,
    visible: StepsVisible,
    id: &str,
    field: Option<&str>,
    sub: Option<&str>,
) -> Option<(Code, String, Option<String>, String)> {
    let needle = format!("steps.{id}");
    let Some(&target) = steps.by_id.get(id) else {
        let dashed = steps
            .by_id
            .keys()
            .find(|k| k.starts_with(&format!("{id}-")));
        let help = match dashed {
            Some(full) => Some(format!(
                "ids with `-` are read with brackets: `steps['{full}']`"
            )),
            None => did_you_mean(id, steps.by_id.keys().copied()),
        };
        return Some((Code::StepReference, format!("no step `{id}`"), help, needle));
    };
    if let StepsVisible::Before { global, self_ok } = visible {
        let me = &steps.list[global];
        let t = &steps.list[target];
        let ok = if target == global {
            self_ok
        } else if t.phase == me.phase {
            steps.is_upstream(me.phase, t.index, me.index)
        } else {
            // Earlier lists have finished when a later one runs.
            t.phase < me.phase
        };
        if !ok {
            let (message, help) = if target == global {
                (format!("step `{id}` reads its own `steps.{id}`"), "use `result` in `outputs` and `retry.until`; other fields cannot read the step itself".to_string())
            } else if t.phase > me.phase {
                (
                    format!(
                        "`{}` runs after `{}` (it is in `{}`)",
                        id,
                        me.label(),
                        t.phase.key()
                    ),
                    "a step can read only steps that finish before it".to_string(),
                )
            } else {
                (
                    format!(
                        "step `{}` reads `steps.{id}`, but `{id}` does not run before it",
                        me.label()
                    ),
                    format!("add `{id}` to the `needs` of `{}`", me.label()),
                )
            };
            return Some((Code::StepReference, message, Some(help), needle));
        }
    }
    let field = field?;
    if !STEP_FIELDS.contains(&field) {
        let help = did_you_mean(field, STEP_FIELDS.iter().copied())
            .unwrap_or_else(|| format!("fields: {}", STEP_FIELDS.join(", ")));
        return Some((
            Code::UnknownName,
            format!("`steps.{id}` has no field `{field}`"),
            Some(help),
            format!("{needle}.{field}"),
        ));
    }
    if field == "outputs" {
        let sub = sub?;
        let outputs = steps.list[target].output_names();
        if !outputs.contains(&sub) {
            let help = did_you_mean(sub, outputs.iter().copied()).or_else(|| {
                Some(if outputs.is_empty() {
                    format!("`{id}` declares no outputs; its raw output is `steps.{id}.result`")
                } else {
                    format!("outputs of `{id}`: {}", outputs.join(", "))
                })
            });
            return Some((
                Code::UnknownName,
                format!("step `{id}` has no output `{sub}`"),
                help,
                format!("{needle}.outputs.{sub}"),
            ));
        }
    }
    None
}
