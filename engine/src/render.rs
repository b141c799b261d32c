//! Rendering a runbook's templates right before a step runs, with errors that name the step, the
//! field and the file:line:column of the template that failed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use minijinja::{Environment, Expression};
use serde_json::Value;

use crate::diag::{Code, Diagnostic};
use crate::source::Source;
use crate::template;
use crate::validate::{describe_field, locate_in_scalar};
use crate::yaml::{escape_pointer_token, Document};

/// Renders the templates of one runbook.
pub struct Renderer<'a> {
    env: &'a Environment<'static>,
    source: &'a Source,
    doc: &'a Document,
    /// Compiled expressions by text: a step that runs many times (items, retries, a long chain
    /// of alike steps) compiles each expression once.
    compiled: Mutex<HashMap<String, Arc<Expression<'a, 'static>>>>,
}

impl<'a> Renderer<'a> {
    /// A renderer for the runbook `doc` (from [`crate::Checked::document`]).
    pub fn new(env: &'a Environment<'static>, source: &'a Source, doc: &'a Document) -> Self {
        Renderer {
            env,
            source,
            doc,
            compiled: Mutex::new(HashMap::new()),
        }
    }

    /// Renders the value at `pointer` (`/steps/3/with`, `/vars/base` …): every string inside it
    /// is a template; a lone `{{ expression }}` keeps its type. A missing pointer renders to null.
    pub fn render(
        &self,
        pointer: &str,
        scope: &minijinja::Value,
    ) -> Result<Value, Box<Diagnostic>> {
        match self.doc.value.pointer(pointer) {
            Some(v) => self.walk(v, pointer.to_string(), scope),
            None => Ok(Value::Null),
        }
    }

    /// Renders the value at `pointer` like [`Renderer::render`], except strings that read one of
    /// `binds` (names an action binds per target, such as `host`): those stay as they are, and
    /// come back as (pointer relative to `pointer`, text, where it is written) for the action
    /// to render once per target ([`crate::action::PerTarget`]).
    #[allow(clippy::type_complexity)]
    pub fn render_deferring(
        &self,
        pointer: &str,
        scope: &minijinja::Value,
        binds: &[String],
    ) -> Result<(Value, Vec<(String, String, String)>), Box<Diagnostic>> {
        let Some(v) = self.doc.value.pointer(pointer) else {
            return Ok((Value::Null, Vec::new()));
        };
        let mut deferred = Vec::new();
        let out =
            self.walk_deferring(v, pointer, pointer.to_string(), scope, binds, &mut deferred)?;
        Ok((out, deferred))
    }

    fn walk_deferring(
        &self,
        v: &Value,
        base: &str,
        ptr: String,
        scope: &minijinja::Value,
        binds: &[String],
        deferred: &mut Vec<(String, String, String)>,
    ) -> Result<Value, Box<Diagnostic>> {
        Ok(match v {
            Value::String(s) if self.reads_any(s, binds) => {
                deferred.push((
                    ptr[base.len()..].to_string(),
                    s.clone(),
                    self.describe_at(&ptr),
                ));
                v.clone()
            }
            Value::String(s) => self
                .render_one(s, scope)
                .map_err(|e| self.error(&ptr, s, &e))?,
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| {
                        self.walk_deferring(
                            item,
                            base,
                            format!("{ptr}/{i}"),
                            scope,
                            binds,
                            deferred,
                        )
                    })
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(map) => {
                let mut out = serde_json::Map::new();
                for (k, item) in map {
                    let p = format!("{ptr}/{}", escape_pointer_token(k));
                    out.insert(
                        k.clone(),
                        self.walk_deferring(item, base, p, scope, binds, deferred)?,
                    );
                }
                Value::Object(out)
            }
            other => other.clone(),
        })
    }

    /// Whether the template `s` reads one of `names` (at the root: `host`, `host.vars.x`).
    fn reads_any(&self, s: &str, names: &[String]) -> bool {
        let read = match template::classify(s) {
            template::Kind::Literal => return false,
            template::Kind::Expression(expr, _) => template::check_expression(self.env, expr),
            template::Kind::Text => template::check_template(self.env, s),
        };
        read.is_ok_and(|read| {
            read.iter().any(|r| {
                let root = r.split(['.', '[']).next().unwrap_or(r);
                names.iter().any(|n| n == root)
            })
        })
    }

    /// "`with.command` of step `x` (file:line:column)", for messages about a field.
    pub fn describe_at(&self, ptr: &str) -> String {
        let field = describe_field(&self.doc.value, ptr);
        match self.doc.value_span(ptr) {
            Some(span) => format!(
                "{field} ({}:{}:{})",
                self.source.name(),
                span.line,
                span.column
            ),
            None => field,
        }
    }

    /// Evaluates the bare expression at `pointer` (`when`, `retry.until`) for its truth. A literal
    /// boolean is itself; a missing pointer is true.
    pub fn eval_bool(
        &self,
        pointer: &str,
        scope: &minijinja::Value,
    ) -> Result<bool, Box<Diagnostic>> {
        match self.doc.value.pointer(pointer) {
            None | Some(Value::Null) => Ok(true),
            Some(Value::Bool(b)) => Ok(*b),
            Some(Value::String(expr)) => self
                .eval_expr(expr, scope)
                .map(|v| v.is_true())
                .map_err(|e| self.error(pointer, expr, &e)),
            Some(other) => Ok(!matches!(other, Value::Array(a) if a.is_empty())),
        }
    }

    fn walk(
        &self,
        v: &Value,
        ptr: String,
        scope: &minijinja::Value,
    ) -> Result<Value, Box<Diagnostic>> {
        Ok(match v {
            Value::String(s) => self
                .render_one(s, scope)
                .map_err(|e| self.error(&ptr, s, &e))?,
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| self.walk(item, format!("{ptr}/{i}"), scope))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, item)| {
                        Ok((
                            k.clone(),
                            self.walk(item, format!("{ptr}/{}", escape_pointer_token(k)), scope)?,
                        ))
                    })
                    .collect::<Result<_, Box<Diagnostic>>>()?,
            ),
            other => other.clone(),
        })
    }

    fn expression(&self, expr: &str) -> Result<Arc<Expression<'a, 'static>>, minijinja::Error> {
        if let Some(e) = self.compiled.lock().ok().and_then(|m| m.get(expr).cloned()) {
            return Ok(e);
        }
        let e = Arc::new(self.env.compile_expression_owned(expr.to_string())?);
        if let Ok(mut m) = self.compiled.lock() {
            m.insert(expr.to_string(), e.clone());
        }
        Ok(e)
    }

    fn eval_expr(
        &self,
        expr: &str,
        scope: &minijinja::Value,
    ) -> Result<minijinja::Value, minijinja::Error> {
        self.expression(expr)?.eval(scope)
    }

    fn render_one(&self, s: &str, scope: &minijinja::Value) -> Result<Value, minijinja::Error> {
        match template::classify(s) {
            template::Kind::Expression(expr, _) => {
                let v = self.eval_expr(expr, scope)?;
                template::value_to_json(&v)
            }
            _ => template::render_str(self.env, s, scope),
        }
    }

    fn error(&self, ptr: &str, text: &str, e: &minijinja::Error) -> Box<Diagnostic> {
        let value_span = self.doc.value_span(ptr);
        // For a lone expression minijinja reports the range inside the expression.
        let base = match template::classify(text) {
            template::Kind::Expression(_, offset) => offset,
            _ => 0,
        };
        let span = match (value_span, e.range()) {
            (Some(vs), Some(r)) if base + r.end <= text.len() => Some(locate_in_scalar(
                self.source,
                vs,
                text,
                base + r.start,
                r.len(),
            )),
            (vs, _) => vs,
        };
        let detail = match (e.kind(), e.detail()) {
            (minijinja::ErrorKind::UndefinedError, _) => {
                "a value it reads is undefined".to_string()
            }
            (_, Some(d)) => d.to_string(),
            (kind, None) => kind.to_string(),
        };
        Box::new(
            Diagnostic::new(
                Code::TemplateRender,
                self.source,
                span,
                format!(
                    "cannot render {}: {detail}",
                    describe_field(&self.doc.value, ptr)
                ),
            )
            .label("here"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::{environment, to_template_value};
    use serde_json::json;

    fn doc(text: &str) -> (Source, Document) {
        let source = Source::new("rb.yaml", text);
        let doc = crate::yaml::parse(&source).unwrap();
        (source, doc)
    }

    #[test]
    fn renders_with_native_types() {
        let (source, doc) = doc("steps:\n  - id: a\n    with:\n      n: \"{{ params.n }}\"\n      s: \"n={{ params.n }}\"\n      l: [\"{{ params.n + 1 }}\"]\n");
        let env = environment();
        let r = Renderer::new(&env, &source, &doc);
        let scope = to_template_value(&json!({"params": {"n": 2}}));
        assert_eq!(
            r.render("/steps/0/with", &scope).unwrap(),
            json!({"n": 2, "s": "n=2", "l": [3]})
        );
    }

    #[test]
    fn errors_name_the_step_the_field_and_the_place() {
        let (source, doc) = doc("steps:\n  - id: fetch\n    with:\n      url: \"http://{{ params.host }}/x\"\n    when: params.nope > 1\n");
        let env = environment();
        let r = Renderer::new(&env, &source, &doc);
        let scope = to_template_value(&json!({"params": {}}));
        let d = r.render("/steps/0/with", &scope).unwrap_err();
        assert_eq!(d.code, Code::TemplateRender);
        assert!(
            d.message.contains("`with.url` of step `fetch`"),
            "{}",
            d.message
        );
        let span = d.span.unwrap();
        assert_eq!((span.line, span.column), (4, 23), "{}", d.short());
        let d = r.eval_bool("/steps/0/when", &scope).unwrap_err();
        assert!(
            d.message.contains("`when` of step `fetch`"),
            "{}",
            d.message
        );
        assert_eq!(d.span.unwrap().line, 5);
    }
}
