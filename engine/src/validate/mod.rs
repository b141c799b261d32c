//! Validation: everything that can be known about a runbook before it runs, reported all at
//! once, each problem with its file:line:column.
//!
//! Order: YAML syntax (fatal for the file), then the JSON schema, then the semantic checks on the
//! same document (ids, needs, cycles, actions and their inputs, templates and the names they
//! read, params). The semantic checks read the document tolerantly, so a type error in one step
//! does not hide a cycle in another. Only a runbook with no problem is turned into the model.

mod inputs;
pub mod params;
mod schema_check;
mod structure;
mod templates;

use std::collections::HashSet;
use std::path::Path;

use indexmap::IndexMap;
use minijinja::Environment;
use serde_json::Value;

use crate::action::Registry;
use crate::diag::{Code, Diagnostic};
use crate::model::{ParamSpec, Runbook};
use crate::source::{Source, Span};
use crate::yaml::{self, Document};

pub use params::{parse_assignment, type_text, GivenParam, GivenParams};
pub use schema_check::display_path;

/// The outcome of checking one runbook.
#[derive(Debug)]
pub struct Checked {
    /// The file that was checked.
    pub source: Source,
    /// Every problem found, in file order.
    pub diagnostics: Vec<Diagnostic>,
    /// The runbook, when it has no problem.
    pub runbook: Option<Runbook>,
    /// When params were given: the values a run would use (given, else default), by name.
    pub params: Option<IndexMap<String, Value>>,
    /// The parsed document with its source map, for locating problems found later (rendering).
    /// `None` when the YAML itself is invalid.
    pub document: Option<Document>,
}

impl Checked {
    /// Whether the runbook is valid.
    pub fn is_valid(&self) -> bool {
        self.diagnostics.is_empty()
    }

    /// What a run needs, when the runbook is valid and params were given: the runbook, its
    /// document (for locating render errors) and the params to run with.
    pub fn runnable(&self) -> Option<(&Runbook, &Document, &IndexMap<String, Value>)> {
        match (&self.runbook, &self.document, &self.params) {
            (Some(r), Some(d), Some(p)) if self.is_valid() => Some((r, d, p)),
            _ => None,
        }
    }
}

/// Checks runbooks against the format and a registry of actions. Build it once and check many
/// files with it: the runbook schema and each action's input schema are compiled once.
pub struct Validator<'r> {
    registry: &'r Registry,
    env: Environment<'static>,
    globals: HashSet<String>,
    schema: Value,
    schema_validator: jsonschema::Validator,
}

impl<'r> Validator<'r> {
    /// A validator for runbooks that may use the actions of `registry`.
    pub fn new(registry: &'r Registry) -> Self {
        let schema = crate::schema::runbook_schema();
        // The schema is generated from our own types; failing to compile it is a bug in opsbook.
        let schema_validator = jsonschema::validator_for(&schema)
            .unwrap_or_else(|e| panic!("opsbook's own runbook schema does not compile: {e}"));
        let env = crate::template::environment();
        let globals = crate::template::global_names(&env);
        Validator {
            registry,
            env,
            globals,
            schema,
            schema_validator,
        }
    }

    /// Reads and checks a file. `params`, when given, are checked against the declarations
    /// (types, enums, ranges, required).
    pub fn check_file(&self, path: &Path, params: Option<&GivenParams>) -> Checked {
        match Source::read(path) {
            Ok(source) => self.check(source, params),
            Err(e) => {
                let source = Source::new(path, "");
                let d = Diagnostic::new(
                    Code::Io,
                    &source,
                    None,
                    format!("cannot read the file: {e}"),
                );
                Checked {
                    source,
                    diagnostics: vec![d],
                    runbook: None,
                    params: None,
                    document: None,
                }
            }
        }
    }

    /// Checks a runbook's text.
    pub fn check(&self, source: Source, params: Option<&GivenParams>) -> Checked {
        let doc = match yaml::parse(&source) {
            Ok(doc) => doc,
            Err(e) => {
                let d = Diagnostic::new(
                    Code::Yaml,
                    &source,
                    e.span,
                    format!("invalid YAML: {}", e.message),
                );
                return Checked {
                    source,
                    diagnostics: vec![d],
                    runbook: None,
                    params: None,
                    document: None,
                };
            }
        };
        let mut cx = Cx::new(self, &source, &doc);
        if !doc.value.is_object() {
            let got = if doc.value.is_null() {
                "an empty document"
            } else {
                "not a mapping"
            };
            cx.diags.push(
                Diagnostic::new(Code::Schema, &source, doc.value_span(""), format!("a runbook is a mapping with `version`, `name` and `steps`; this file is {got}"))
                    .help("start from the example in docs/format.md"),
            );
            let mut checked = cx.finish(source.clone(), None);
            checked.document = Some(doc);
            return checked;
        }
        let steps = structure::check(&mut cx);
        // Two independent halves, on two threads when a thread can be had: the schema, action
        // inputs and the model on one; templates and params on the other. Both only read the
        // document.
        let side_half = || {
            let mut side = Cx::new(self, &source, &doc);
            let t = schema_check::Target {
                source: &source,
                doc: &doc,
                base: "",
                code: Code::Schema,
                prefix: "",
            };
            let schema_diags = schema_check::check(
                &self.schema_validator,
                &self.schema,
                &doc.value,
                &t,
                &|_, _, _| false,
            );
            side.diags.extend(schema_diags);
            inputs::check(&mut side, &steps);
            // Built optimistically; kept only when no check found a problem.
            let model = if side.diags.is_empty() {
                Some(<Runbook as serde::Deserialize>::deserialize(&doc.value))
            } else {
                None
            };
            (side.diags, model)
        };
        let (side, resolved) = std::thread::scope(|scope| {
            let spawned = std::thread::Builder::new().spawn_scoped(scope, side_half);
            templates::check(&mut cx, &steps);
            cx.templates = Default::default();
            let resolved = self.check_params(&mut cx, params);
            let side = match spawned {
                Ok(handle) => handle.join().ok(),
                Err(_) => Some(side_half()),
            };
            (side, resolved)
        });
        let (side_diags, model) = side.unwrap_or_else(|| {
            let d = Diagnostic::new(
                Code::Schema,
                &source,
                None,
                "internal error: a validation thread failed",
            );
            (vec![d], None)
        });
        cx.diags.extend(side_diags);
        let mut checked = cx.finish_with(source.clone(), resolved, model);
        checked.document = Some(doc);
        checked
    }

    fn check_params(
        &self,
        cx: &mut Cx<'_>,
        given: Option<&GivenParams>,
    ) -> Option<IndexMap<String, Value>> {
        // Every declared name counts, even one whose declaration is broken (the schema reports
        // it); only well-formed declarations are checked further.
        let all_names: Vec<String> = cx
            .root
            .get("params")
            .and_then(Value::as_object)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        let declared: IndexMap<String, ParamSpec> = cx
            .root
            .get("params")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| {
                        Some((
                            k.clone(),
                            serde_json::from_value::<ParamSpec>(v.clone()).ok()?,
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default();
        for (name, spec) in &declared {
            let ptr = format!("/params/{}", yaml::escape_pointer_token(name));
            contradictions(cx, name, &ptr, &spec.as_items());
            if spec.required && spec.default.is_some() {
                cx.push(
                    Diagnostic::new(Code::Param, cx.source, cx.doc.key_span(&format!("{ptr}/required")), format!("param `{name}` is `required` but has a `default`, so it is never missing"))
                        .help("drop `required: true`, or drop the default to make callers choose"),
                );
            }
            if let Some(default) = &spec.default {
                if let Err(e) = params::check_value(&spec.as_items(), default) {
                    let ptr = format!("/params/{}/default", yaml::escape_pointer_token(name));
                    cx.push(Diagnostic::new(
                        Code::Param,
                        cx.source,
                        cx.doc.value_span(&ptr),
                        format!("the default of param `{name}` is invalid: {e}"),
                    ));
                }
            }
        }
        let given = given?;
        let mut resolved = IndexMap::new();
        for name in given.keys() {
            if !all_names.iter().any(|n| n == name) {
                let help = crate::suggest::did_you_mean(name, all_names.iter().map(String::as_str))
                    .unwrap_or_else(|| {
                        if all_names.is_empty() {
                            "this runbook declares no params".to_string()
                        } else {
                            format!("declared params: {}", all_names.join(", "))
                        }
                    });
                cx.push(
                    Diagnostic::new(
                        Code::Param,
                        cx.source,
                        None,
                        format!("unknown param `{name}`"),
                    )
                    .help(help),
                );
            }
        }
        for (name, spec) in &declared {
            let ptr = format!("/params/{}", yaml::escape_pointer_token(name));
            let at = cx.doc.key_span(&ptr);
            let value: Result<Option<Value>, String> = match given.get(name) {
                Some(GivenParam::Text(t)) => params::type_text(spec.kind, t).map(Some),
                Some(GivenParam::Value(v)) => Ok(Some(v.clone())),
                None => Ok(spec.default.clone()),
            };
            let checked = value.and_then(|v| match v {
                Some(v) => params::check_value(&spec.as_items(), &v).map(|()| Some(v)),
                None => Ok(None),
            });
            match checked {
                Err(e) => {
                    cx.push(
                        Diagnostic::new(Code::Param, cx.source, at, format!("param `{name}`: {e}"))
                            .label("declared here"),
                    );
                }
                Ok(Some(v)) => {
                    resolved.insert(name.clone(), v);
                }
                Ok(None) if spec.required => {
                    cx.push(
                        Diagnostic::new(
                            Code::Param,
                            cx.source,
                            at,
                            format!("missing required param `{name}`"),
                        )
                        .help(format!("give it with -p {name}=VALUE"))
                        .label("declared here"),
                    );
                }
                Ok(None) => {
                    resolved.insert(name.clone(), Value::Null);
                }
            }
        }
        Some(resolved)
    }
}

/// Declarations no value can satisfy: allowed values of the wrong type or out of range,
/// `minimum` above `maximum`, `items` on a non-array; at every level of `items`.
fn contradictions(cx: &mut Cx<'_>, name: &str, ptr: &str, spec: &crate::model::ItemsSpec) {
    let what = if ptr.contains("/items") {
        format!("the items of param `{name}`")
    } else {
        format!("param `{name}`")
    };
    let mut bare = spec.clone();
    bare.allowed = None;
    for (i, v) in spec.allowed.iter().flatten().enumerate() {
        if let Err(e) = params::check_value(&bare, v) {
            let span = cx.doc.value_span(&format!("{ptr}/enum/{i}"));
            cx.push(Diagnostic::new(
                Code::Param,
                cx.source,
                span,
                format!("{what}: this allowed value can never be given: {e}"),
            ));
        }
    }
    if let (Some(min), Some(max)) = (spec.minimum, spec.maximum) {
        if min > max {
            let span = cx.doc.value_span(&format!("{ptr}/minimum"));
            cx.push(Diagnostic::new(
                Code::Param,
                cx.source,
                span,
                format!("{what}: `minimum` ({min}) is above `maximum` ({max}), so no value fits"),
            ));
        }
    }
    if let Some(items) = &spec.items {
        if spec.kind != crate::model::ParamType::Array {
            let span = cx.doc.key_span(&format!("{ptr}/items"));
            cx.push(Diagnostic::new(
                Code::Param,
                cx.source,
                span,
                format!(
                    "{what}: `items` applies only to `type: array`, and this is a {}",
                    spec.kind.name()
                ),
            ));
        }
        contradictions(cx, name, &format!("{ptr}/items"), items);
    }
}

/// The state of one check: where we are and what was found.
pub(crate) struct Cx<'a> {
    pub v: &'a Validator<'a>,
    pub source: &'a Source,
    pub doc: &'a Document,
    pub root: &'a Value,
    pub diags: Vec<Diagnostic>,
    /// Compiled templates by text (`[0]` templates, `[1]` bare expressions): the names they
    /// read, or their error.
    pub templates: [std::collections::HashMap<Box<str>, TemplateCheck>; 2],
}

/// What compiling one template found.
pub(crate) type TemplateCheck = std::rc::Rc<Result<Box<[String]>, crate::template::SyntaxError>>;

impl<'a> Cx<'a> {
    fn new(v: &'a Validator<'a>, source: &'a Source, doc: &'a Document) -> Self {
        Cx {
            v,
            source,
            doc,
            root: &doc.value,
            diags: Vec::new(),
            templates: Default::default(),
        }
    }

    pub fn push(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    fn finish(self, source: Source, params: Option<IndexMap<String, Value>>) -> Checked {
        self.finish_with(source, params, None)
    }

    /// Sorts the diagnostics and, when there are none, keeps (or builds) the model.
    fn finish_with(
        mut self,
        source: Source,
        params: Option<IndexMap<String, Value>>,
        model: Option<Result<Runbook, serde_json::Error>>,
    ) -> Checked {
        let mut runbook = None;
        if self.diags.is_empty() {
            let model =
                model.unwrap_or_else(|| <Runbook as serde::Deserialize>::deserialize(self.root));
            match model {
                Ok(r) => runbook = Some(r),
                Err(_) => {
                    // Rare (the schema passed): find where, and say it in the runbook's words.
                    let (pointer, message) = model_error(self.root);
                    let field = display_path(&pointer);
                    let at = if field.is_empty() {
                        String::new()
                    } else {
                        format!("`{field}`: ")
                    };
                    self.diags.push(Diagnostic::new(
                        Code::Schema,
                        &source,
                        self.doc.value_span(&pointer),
                        format!("{at}{message}"),
                    ));
                }
            }
        }
        let mut diagnostics = self.diags;
        diagnostics.sort_by_key(|d| d.span.map_or(0, |s| s.offset));
        diagnostics.dedup_by(|a, b| a.span == b.span && a.message == b.message);
        Checked {
            source,
            diagnostics,
            runbook,
            params,
            document: None,
        }
    }
}

/// A field of a runbook as people name it: "`with.url` of step `fetch`", or "`vars.base`".
pub fn describe_field(root: &Value, ptr: &str) -> String {
    let in_step = ptr.starts_with("/steps/")
        || ptr.starts_with("/on_failure/")
        || ptr.starts_with("/finally/");
    if in_step {
        let mut parts = ptr.splitn(4, '/').skip(1);
        let (list, index, rest) = (
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
        );
        let id = root
            .pointer(&format!("/{list}/{index}/id"))
            .and_then(Value::as_str);
        let field = display_path(&format!("/{rest}"));
        return match id {
            Some(id) => format!("`{field}` of step `{id}`"),
            None => format!("`{field}` of `{list}[{index}]`"),
        };
    }
    format!("`{}`", display_path(ptr))
}

/// Where and why the model cannot be built from a document that passed the schema (a whole
/// number written `2.0` for a count, say).
fn model_error(root: &Value) -> (String, String) {
    use serde_path_to_error::Segment;
    match serde_path_to_error::deserialize::<_, Runbook>(root) {
        Ok(_) => (String::new(), "invalid runbook".into()),
        Err(e) => {
            let mut pointer = String::new();
            for seg in e.path().iter() {
                match seg {
                    Segment::Seq { index } => pointer.push_str(&format!("/{index}")),
                    Segment::Map { key } => {
                        pointer.push_str(&format!("/{}", yaml::escape_pointer_token(key)))
                    }
                    _ => {}
                }
            }
            let message = e
                .inner()
                .to_string()
                .replace("expected u32", "expected a whole number")
                .replace("expected u64", "expected a whole number")
                .replace("floating point", "the number");
            (pointer, message)
        }
    }
}

/// The location, in the file, of a part of a string value (`offset`, `len`: bytes in `s`): exact for plain and simply quoted
/// one-line scalars, by line for block scalars, else the start of the value.
pub fn locate_in_scalar(source: &Source, value: Span, s: &str, offset: usize, len: usize) -> Span {
    let at = |abs: usize| {
        let (line, column) = source.line_col(abs);
        Span {
            offset: abs,
            len,
            line,
            column,
        }
    };
    let raw = source.text.get(value.offset..).unwrap_or("");
    if offset > s.len() || !s.is_char_boundary(offset) {
        return value;
    }
    if raw.starts_with(s) {
        return at(value.offset + offset);
    }
    if (raw.starts_with('"') || raw.starts_with('\'')) && raw[1..].starts_with(s) {
        return at(value.offset + 1 + offset);
    }
    // Block scalars and escaped strings: find the line of the template that holds the offset.
    let line_start = s[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line_end = s[offset..].find('\n').map_or(s.len(), |i| offset + i);
    let line = &s[line_start..line_end];
    if line.trim().len() >= 3 {
        let mut end = raw.len().min(s.len() * 2 + 512);
        while !raw.is_char_boundary(end) {
            end -= 1;
        }
        let window = &raw[..end];
        if let Some(p) = window.find(line) {
            return at(value.offset + p + (offset - line_start));
        }
    }
    value
}
