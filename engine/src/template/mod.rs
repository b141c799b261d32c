//! The template environment and rendering that keeps native types.
//!
//! Every string under `with`, `env`, `vars`, `outputs` and `for_each` is a Jinja template
//! (minijinja). A string that is exactly one `{{ expression }}` keeps the expression's type; any
//! other template renders to a string; a string with no template syntax is kept as it is.
//! `when` and `retry.until` are bare expressions. Undefined names are errors (strict mode), and
//! templates have no file system or network access: the environment has no loader.

pub mod filters;
pub mod scan;

use std::collections::HashSet;

use minijinja::{Environment, Error, UndefinedBehavior};
use serde_json::Value;

/// Instruction budget for one render, so that a template cannot spin forever.
const FUEL: u64 = 5_000_000;

/// Builds the template environment: strict undefined, sandboxed, with opsbook's filters.
pub fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(FUEL));
    env.set_recursion_limit(100);
    // Templates render values into commands and request bodies, never HTML.
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    if let Ok(syntax) = minijinja::syntax::SyntaxConfig::builder()
        .keep_trailing_newline(true)
        .build()
    {
        env.set_syntax(syntax);
    }
    minijinja_contrib::add_to_environment(&mut env);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_filter("shquote", filters::shquote);
    env.add_filter("fromjson", filters::fromjson);
    env.add_filter("fromyaml", filters::fromyaml);
    env.add_filter("b64encode", filters::b64encode);
    env.add_filter("b64decode", filters::b64decode);
    env.add_filter("regex_search", filters::regex_search);
    env.add_filter("regex_replace", filters::regex_replace);
    env.add_filter("duration", filters::duration);
    env.add_filter("to_datetime", filters::to_datetime);
    env
}

/// One environment for the whole process, for templates rendered outside a runbook's renderer
/// (per-target fields of an action).
pub fn shared() -> &'static Environment<'static> {
    static ENV: std::sync::OnceLock<Environment<'static>> = std::sync::OnceLock::new();
    ENV.get_or_init(environment)
}

/// Turns data into a template value.
pub fn to_template_value<T: serde::Serialize>(v: &T) -> minijinja::Value {
    minijinja::Value::from(minijinja::value::Serde(v))
}

/// The names of the environment's global functions (`range`, `dict`, `now` …), which are in scope
/// in every template.
pub fn global_names(env: &Environment<'_>) -> HashSet<String> {
    env.globals().map(|(name, _)| name.to_string()).collect()
}

/// What kind of template a string is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind<'a> {
    /// No template syntax: the string is used as it is.
    Literal,
    /// Exactly one `{{ expression }}`: the expression (and its byte offset in the string), whose
    /// value keeps its type.
    Expression(&'a str, usize),
    /// Any other template: renders to a string.
    Text,
}

/// Classifies a string.
pub fn classify(s: &str) -> Kind<'_> {
    if !(s.contains("{{") || s.contains("{%") || s.contains("{#")) {
        return Kind::Literal;
    }
    let trimmed = s.trim();
    // A lone expression ends at its first `}}`: `{{ x }}}` is text.
    let lone = trimmed.find("}}").is_some_and(|i| i + 2 == trimmed.len());
    if let Some(inner) = trimmed
        .strip_prefix("{{")
        .and_then(|t| t.strip_suffix("}}"))
        .filter(|_| lone)
    {
        let inner = inner.strip_prefix('-').unwrap_or(inner);
        let inner = inner.strip_suffix('-').unwrap_or(inner);
        if !inner.contains("{{") && !inner.contains("}}") && !inner.contains("{%") {
            let offset = inner.as_ptr() as usize - s.as_ptr() as usize;
            return Kind::Expression(inner, offset);
        }
    }
    Kind::Text
}

/// A template problem found without rendering: where in the string, and what.
#[derive(Debug, Clone)]
pub struct SyntaxError {
    /// The message, without location.
    pub message: String,
    /// Byte range in the template string, when known.
    pub range: Option<std::ops::Range<usize>>,
    /// 1-based line inside the template string, when known.
    pub line: Option<usize>,
    /// How to fix it, when there is something to say.
    pub help: Option<String>,
}

fn syntax_error(e: &Error, base: usize) -> SyntaxError {
    SyntaxError {
        message: e
            .detail()
            .map(str::to_string)
            .unwrap_or_else(|| e.kind().to_string()),
        range: e.range().map(|r| r.start + base..r.end + base),
        line: e.line(),
        help: None,
    }
}

/// Most operators in one block of a template (see [`scan::max_operators`]).
pub const MAX_OPERATORS: usize = 2_000;

fn check_complexity(s: &str, expression: bool) -> Result<(), SyntaxError> {
    let n = scan::max_operators(s, expression);
    if n > MAX_OPERATORS {
        return Err(SyntaxError {
            message: format!("an expression with {n} operators is too complex (at most {MAX_OPERATORS} in one block)"),
            range: None,
            line: None,
            help: Some("split it, or compute the value in a step".into()),
        });
    }
    Ok(())
}

/// Compiles a template string and returns the names it reads from its scope, nested
/// (`steps.find.outputs.x`), or the syntax error.
pub fn check_template(env: &Environment<'_>, s: &str) -> Result<HashSet<String>, SyntaxError> {
    check_complexity(s, false)?;
    match classify(s) {
        Kind::Literal => Ok(HashSet::new()),
        Kind::Expression(expr, offset) => check_expression_at(env, expr, offset),
        Kind::Text => {
            let t = env.template_from_str(s).map_err(|e| syntax_error(&e, 0))?;
            let mut names = t.undeclared_variables(true);
            finish_check(env, s, false, 0, &mut names)?;
            Ok(names)
        }
    }
}

/// Adds bracket reads to `names` and fails on an unknown filter or test.
fn finish_check(
    env: &Environment<'_>,
    code: &str,
    expression: bool,
    base: usize,
    names: &mut HashSet<String>,
) -> Result<(), SyntaxError> {
    for u in scan::filters_and_tests(code, expression) {
        if !exists(env, &u) {
            let (what, known) = if u.test {
                ("test", KNOWN_TESTS)
            } else {
                ("filter", KNOWN_FILTERS)
            };
            return Err(SyntaxError {
                message: format!("unknown {what} `{}`", u.name),
                range: Some(base + u.offset..base + u.offset + u.name.len()),
                line: None,
                help: crate::suggest::did_you_mean(&u.name, known.iter().copied())
                    .or_else(|| Some(format!("docs/format.md lists the {what}s"))),
            });
        }
    }
    for (name, _) in scan::bracket_reads(code, expression) {
        names.insert(name);
    }
    Ok(())
}

/// Whether the environment has this filter or test (asked once per name).
fn exists(env: &Environment<'_>, u: &scan::Use) -> bool {
    use std::sync::{Mutex, OnceLock};
    static SEEN: OnceLock<Mutex<std::collections::HashMap<(bool, String), bool>>> = OnceLock::new();
    let seen = SEEN.get_or_init(Default::default);
    let key = (u.test, u.name.clone());
    if let Some(&known) = seen.lock().ok().and_then(|m| m.get(&key).copied()).as_ref() {
        return known;
    }
    let probe = if u.test {
        format!("none is {}", u.name)
    } else {
        format!("none | {}", u.name)
    };
    let missing = if u.test {
        minijinja::ErrorKind::UnknownTest
    } else {
        minijinja::ErrorKind::UnknownFilter
    };
    let found = match env.compile_expression(&probe) {
        Ok(e) => !matches!(e.eval(()), Err(err) if err.kind() == missing),
        Err(_) => true,
    };
    if let Ok(mut m) = seen.lock() {
        m.insert(key, found);
    }
    found
}

/// Filter names, for suggestions: Jinja's own (minijinja), minijinja-contrib's, and opsbook's.
pub const KNOWN_FILTERS: &[&str] = &[
    "abs",
    "attr",
    "batch",
    "bool",
    "capitalize",
    "chain",
    "count",
    "d",
    "default",
    "dictsort",
    "e",
    "escape",
    "first",
    "float",
    "format",
    "groupby",
    "indent",
    "int",
    "items",
    "join",
    "last",
    "length",
    "lines",
    "list",
    "lower",
    "map",
    "max",
    "min",
    "pprint",
    "reject",
    "rejectattr",
    "replace",
    "reverse",
    "round",
    "safe",
    "select",
    "selectattr",
    "slice",
    "sort",
    "split",
    "string",
    "sum",
    "title",
    "tojson",
    "trim",
    "unique",
    "upper",
    "urlencode",
    "zip",
    "pluralize",
    "filesizeformat",
    "truncate",
    "striptags",
    "wordcount",
    "datetimeformat",
    "timeformat",
    "dateformat",
    "shquote",
    "fromjson",
    "fromyaml",
    "b64encode",
    "b64decode",
    "regex_search",
    "regex_replace",
    "duration",
    "to_datetime",
];

/// Test names, for suggestions.
pub const KNOWN_TESTS: &[&str] = &[
    "undefined",
    "defined",
    "none",
    "safe",
    "escaped",
    "boolean",
    "odd",
    "even",
    "divisibleby",
    "number",
    "integer",
    "int",
    "float",
    "string",
    "sequence",
    "iterable",
    "mapping",
    "startingwith",
    "endingwith",
    "lower",
    "upper",
    "sameas",
    "eq",
    "equalto",
    "ne",
    "lt",
    "lessthan",
    "le",
    "gt",
    "greaterthan",
    "ge",
    "in",
    "true",
    "false",
    "filter",
    "test",
];

/// Compiles a bare expression (`when`, `until`) and returns the names it reads.
pub fn check_expression(env: &Environment<'_>, expr: &str) -> Result<HashSet<String>, SyntaxError> {
    check_expression_at(env, expr, 0)
}

fn check_expression_at(
    env: &Environment<'_>,
    expr: &str,
    offset: usize,
) -> Result<HashSet<String>, SyntaxError> {
    check_complexity(expr, true)?;
    if expr.trim().is_empty() {
        return Err(SyntaxError {
            message: "empty expression".into(),
            range: Some(offset..offset + expr.len()),
            line: Some(1),
            help: None,
        });
    }
    let e = env
        .compile_expression(expr)
        .map_err(|e| syntax_error(&e, offset))?;
    let mut names = e.undeclared_variables(true);
    finish_check(env, expr, true, offset, &mut names)?;
    Ok(names)
}

/// Renders one string with native types for a lone expression.
pub fn render_str(
    env: &Environment<'_>,
    s: &str,
    scope: &minijinja::Value,
) -> Result<Value, Error> {
    match classify(s) {
        Kind::Literal => Ok(Value::String(s.to_string())),
        Kind::Expression(expr, _) => {
            let v = env.compile_expression(expr)?.eval(scope)?;
            to_json(&v)
        }
        Kind::Text => env.render_str(s, scope).map(Value::String),
    }
}

/// Evaluates a bare expression to its value.
pub fn eval(env: &Environment<'_>, expr: &str, scope: &minijinja::Value) -> Result<Value, Error> {
    let v = env.compile_expression(expr)?.eval(scope)?;
    to_json(&v)
}

/// Evaluates a bare expression for its truth (Jinja's truthiness: empty lists and `none` are false).
pub fn eval_bool(
    env: &Environment<'_>,
    expr: &str,
    scope: &minijinja::Value,
) -> Result<bool, Error> {
    Ok(env.compile_expression(expr)?.eval(scope)?.is_true())
}

/// Renders every string inside a value (mappings and lists are walked; keys are kept).
pub fn render_value(
    env: &Environment<'_>,
    v: &Value,
    scope: &minijinja::Value,
) -> Result<Value, Error> {
    Ok(match v {
        Value::String(s) => render_str(env, s, scope)?,
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|i| render_value(env, i, scope))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), render_value(env, v, scope)?)))
                .collect::<Result<_, Error>>()?,
        ),
        other => other.clone(),
    })
}

/// A template value as data (an undefined value is an error).
pub fn value_to_json(v: &minijinja::Value) -> Result<Value, Error> {
    to_json(v)
}

fn to_json(v: &minijinja::Value) -> Result<Value, Error> {
    if v.is_undefined() {
        return Err(Error::new(
            minijinja::ErrorKind::UndefinedError,
            "the expression is undefined",
        ));
    }
    serde_json::to_value(v).map_err(|e| {
        Error::new(
            minijinja::ErrorKind::BadSerialization,
            format!("the value cannot be turned into data: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scope() -> minijinja::Value {
        to_template_value(&json!({
            "params": {"namespace": "web", "n": 3, "hosts": ["a", "b"]},
            "steps": {"find": {"outputs": {"pods": [{"name": "p1"}, {"name": "p2"}]}}},
        }))
    }

    #[test]
    fn classifies_strings() {
        assert_eq!(classify("plain"), Kind::Literal);
        assert_eq!(classify("{{ a.b }}"), Kind::Expression(" a.b ", 2));
        assert_eq!(classify("  {{ x }} "), Kind::Expression(" x ", 4));
        assert_eq!(classify("a-{{ x }}"), Kind::Text);
        assert_eq!(classify("{{ a }}{{ b }}"), Kind::Text);
        assert_eq!(classify("{% if x %}y{% endif %}"), Kind::Text);
        assert_eq!(classify("{{ x }}}"), Kind::Text);
    }

    #[test]
    fn a_lone_expression_keeps_its_type() {
        let env = environment();
        let s = scope();
        assert_eq!(render_str(&env, "{{ params.n }}", &s).unwrap(), json!(3));
        assert_eq!(
            render_str(&env, "{{ params.hosts }}", &s).unwrap(),
            json!(["a", "b"])
        );
        assert_eq!(
            render_str(
                &env,
                "{{ steps.find.outputs.pods | map(attribute='name') | list }}",
                &s
            )
            .unwrap(),
            json!(["p1", "p2"])
        );
        assert_eq!(
            render_str(&env, "n={{ params.n }}", &s).unwrap(),
            json!("n=3")
        );
        assert_eq!(
            render_str(&env, "no template", &s).unwrap(),
            json!("no template")
        );
    }

    #[test]
    fn undefined_names_are_errors() {
        let env = environment();
        let s = scope();
        assert!(render_str(&env, "{{ params.nope }}", &s).is_err());
        assert!(render_str(&env, "x {{ nope }}", &s).is_err());
        assert!(eval_bool(&env, "missing > 1", &s).is_err());
    }

    #[test]
    fn filters_work_in_templates() {
        let env = environment();
        let s = scope();
        let r = |t: &str| render_str(&env, t, &s).unwrap();
        assert_eq!(r("{{ \"it's\" | shquote }}"), json!(r#"'it'"'"'s'"#));
        assert_eq!(r("{{ '{\"a\": [1]}' | fromjson }}"), json!({"a": [1]}));
        assert_eq!(r("{{ 'a: 1' | fromyaml }}"), json!({"a": 1}));
        assert_eq!(r("{{ 'hi' | b64encode }}"), json!("aGk="));
        assert_eq!(r("{{ 'aGk=' | b64decode }}"), json!("hi"));
        assert_eq!(
            r("{{ 'v1.2.3' | regex_search('[0-9.]+') }}"),
            json!("1.2.3")
        );
        assert_eq!(
            r("{{ 'v1.2.3' | regex_search('v([0-9])', group=1) }}"),
            json!("1")
        );
        assert_eq!(r("{{ 'none here' | regex_search('[0-9]+') }}"), json!(null));
        assert_eq!(
            r("{{ 'a-b-c' | regex_replace('-(.)', '_\\\\1') }}"),
            json!("a_b_c")
        );
        assert_eq!(r("{{ '1h30m' | duration }}"), json!(5400));
        assert_eq!(r("{{ 90 | duration }}"), json!("1m30s"));
        assert_eq!(
            r("{{ ('2026-11-24T20:30:00Z' | to_datetime).hour }}"),
            json!(20)
        );
        assert_eq!(
            r("{{ ('2026-11-24T20:30:10Z' | to_datetime).timestamp - ('2026-11-24T20:30:00Z' | to_datetime).timestamp }}"),
            json!(10.0)
        );
        assert_eq!(
            r("{{ ('24/11/2026 08:00' | to_datetime('%d/%m/%Y %H:%M')).day }}"),
            json!(24)
        );
        assert_eq!(r("{{ {'a': 1} | tojson }}"), json!("{\"a\": 1}"));
        assert_eq!(r("{{ 'Hello' | lower | upper }}"), json!("HELLO"));
        assert_eq!(r("{{ 'abc'.startswith('a') }}"), json!(true));
    }

    #[test]
    fn templates_cannot_read_files() {
        let env = environment();
        let err = render_str(&env, "{% include '/etc/passwd' %}", &scope()).unwrap_err();
        assert!(err.to_string().contains("passwd"), "{err}");
    }

    #[test]
    fn runaway_templates_run_out_of_fuel() {
        let env = environment();
        let err = render_str(
            &env,
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
            &scope(),
        )
        .unwrap_err();
        assert_eq!(err.kind(), minijinja::ErrorKind::OutOfFuel);
    }

    #[test]
    fn check_reports_names_and_syntax_errors() {
        let env = environment();
        let names = check_template(
            &env,
            "{{ steps.find.outputs.pods | length }} {{ params.namespace }}",
        )
        .unwrap();
        assert!(names.contains("steps.find.outputs.pods"), "{names:?}");
        assert!(names.contains("params.namespace"), "{names:?}");
        let e = check_template(&env, "x {{ a + }}").unwrap_err();
        assert!(e.range.is_some());
        let e = check_template(&env, "{{ a + }}").unwrap_err();
        assert!(e.range.unwrap().start >= 2);
        let e = check_template(&env, "x {{ a | trimm }}").unwrap_err();
        assert_eq!(e.message, "unknown filter `trimm`");
        assert_eq!(e.range, Some(9..14));
        assert_eq!(e.help.as_deref(), Some("did you mean `trim`?"));
        let e = check_expression(&env, "a is defind").unwrap_err();
        assert_eq!(e.message, "unknown test `defind`");
        assert!(check_expression(&env, "a is not defined and b | shquote").is_ok());
        let names = check_template(&env, "{{ steps['my-id'].outputs.x }}").unwrap();
        assert!(names.contains("steps.my-id.outputs.x"), "{names:?}");
    }
}
