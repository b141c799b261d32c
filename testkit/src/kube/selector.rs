//! Label selectors (the full grammar of `k8s.io/apimachinery/pkg/labels`: `a=b`, `a==b`,
//! `a!=b`, `a in (x,y)`, `a notin (x)`, `a`, `!a`, `a>1`, `a<1`, comma = AND) and field
//! selectors (`f=v`, `f==v`, `f!=v` on the labels a resource supports).

use serde_json::Value;

use super::registry::Resource;

#[derive(Debug, Clone, PartialEq)]
enum Op {
    Eq(String),
    NotEq(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    NotExists,
    Gt(i64),
    Lt(i64),
}

#[derive(Debug, Clone, PartialEq)]
struct Requirement {
    key: String,
    op: Op,
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct LabelSelector(Vec<Requirement>);

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Comma,
    Open,
    Close,
    Eq,
    DoubleEq,
    NotEq,
    Not,
    Gt,
    Lt,
}

fn lex(s: &str) -> Vec<Tok> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {}
            ',' => out.push(Tok::Comma),
            '(' => out.push(Tok::Open),
            ')' => out.push(Tok::Close),
            '>' => out.push(Tok::Gt),
            '<' => out.push(Tok::Lt),
            '!' if chars.peek() == Some(&'=') => {
                chars.next();
                out.push(Tok::NotEq);
            }
            '!' => out.push(Tok::Not),
            '=' if chars.peek() == Some(&'=') => {
                chars.next();
                out.push(Tok::DoubleEq);
            }
            '=' => out.push(Tok::Eq),
            c => {
                let mut id = String::from(c);
                while let Some(&n) = chars.peek() {
                    if n.is_whitespace() || "!=(),<>".contains(n) {
                        break;
                    }
                    id.push(n);
                    chars.next();
                }
                out.push(Tok::Ident(id));
            }
        }
    }
    out
}

fn describe(t: Option<&Tok>) -> String {
    match t {
        None => "end of string".into(),
        Some(Tok::Ident(s)) => format!("'{s}'"),
        Some(Tok::Comma) => "','".into(),
        Some(Tok::Open) => "'('".into(),
        Some(Tok::Close) => "')'".into(),
        Some(Tok::Eq) => "'='".into(),
        Some(Tok::DoubleEq) => "'=='".into(),
        Some(Tok::NotEq) => "'!='".into(),
        Some(Tok::Not) => "'!'".into(),
        Some(Tok::Gt) => "'>'".into(),
        Some(Tok::Lt) => "'<'".into(),
    }
}

fn valid_key(k: &str) -> bool {
    let name = match k.split_once('/') {
        Some((prefix, name)) => {
            if prefix.is_empty() || prefix.len() > 253 {
                return false;
            }
            name
        }
        None => k,
    };
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

fn valid_value(v: &str) -> bool {
    v.is_empty()
        || (v.len() <= 63
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && v.starts_with(|c: char| c.is_ascii_alphanumeric())
            && v.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

impl LabelSelector {
    /// Parses a `labelSelector` query value; the error is the text of a 400 answer.
    pub(crate) fn parse(s: &str) -> Result<LabelSelector, String> {
        let toks = lex(s);
        let mut reqs = Vec::new();
        let mut i = 0;
        let err = |msg: String| format!("unable to parse requirement: {msg}");
        while i < toks.len() {
            let negated = toks[i] == Tok::Not;
            if negated {
                i += 1;
            }
            let key = match toks.get(i) {
                Some(Tok::Ident(k)) => k.clone(),
                t => return Err(err(format!("found {}, expected: identifier", describe(t)))),
            };
            if !valid_key(&key) {
                return Err(err(format!("invalid label key \"{key}\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character")));
            }
            i += 1;
            let op = if negated {
                Op::NotExists
            } else {
                match toks.get(i) {
                    None | Some(Tok::Comma) => Op::Exists,
                    Some(Tok::Eq | Tok::DoubleEq | Tok::NotEq) => {
                        let neq = toks[i] == Tok::NotEq;
                        i += 1;
                        let value = match toks.get(i) {
                            Some(Tok::Ident(v)) => {
                                i += 1;
                                v.clone()
                            }
                            None | Some(Tok::Comma) => String::new(),
                            t => {
                                return Err(err(format!(
                                    "found {}, expected: identifier",
                                    describe(t)
                                )))
                            }
                        };
                        if !valid_value(&value) {
                            return Err(err(format!("invalid label value: \"{value}\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character")));
                        }
                        if neq {
                            Op::NotEq(value)
                        } else {
                            Op::Eq(value)
                        }
                    }
                    Some(Tok::Gt | Tok::Lt) => {
                        let gt = toks[i] == Tok::Gt;
                        i += 1;
                        let n = match toks.get(i) {
                            Some(Tok::Ident(v)) => v.parse::<i64>().map_err(|_| {
                                err(format!(
                                    "for 'Gt', 'Lt' operators, the value must be an integer: {v}"
                                ))
                            })?,
                            t => {
                                return Err(err(format!(
                                    "found {}, expected: identifier",
                                    describe(t)
                                )))
                            }
                        };
                        i += 1;
                        if gt {
                            Op::Gt(n)
                        } else {
                            Op::Lt(n)
                        }
                    }
                    Some(Tok::Ident(word)) if word == "in" || word == "notin" => {
                        let is_in = word == "in";
                        i += 1;
                        if toks.get(i) != Some(&Tok::Open) {
                            return Err(err(format!(
                                "found {}, expected: '('",
                                describe(toks.get(i))
                            )));
                        }
                        i += 1;
                        let mut values = Vec::new();
                        loop {
                            match toks.get(i) {
                                Some(Tok::Ident(v)) => {
                                    if !valid_value(v) {
                                        return Err(err(format!("invalid label value: \"{v}\"")));
                                    }
                                    values.push(v.clone());
                                    i += 1;
                                }
                                Some(Tok::Comma) if values.is_empty() => {
                                    values.push(String::new());
                                }
                                _ => {}
                            }
                            match toks.get(i) {
                                Some(Tok::Comma) => i += 1,
                                Some(Tok::Close) => {
                                    i += 1;
                                    break;
                                }
                                t => {
                                    return Err(err(format!(
                                        "found {}, expected: ',', ')' or identifier",
                                        describe(t)
                                    )))
                                }
                            }
                        }
                        if values.is_empty() {
                            return Err(err(format!(
                                "for '{}', '{}' operators, values set can't be empty",
                                "in", "notin"
                            )));
                        }
                        if is_in {
                            Op::In(values)
                        } else {
                            Op::NotIn(values)
                        }
                    }
                    t => {
                        return Err(err(format!(
                            "found {}, expected: in, notin, =, ==, !=, gt, lt",
                            describe(t)
                        )))
                    }
                }
            };
            reqs.push(Requirement { key, op });
            match toks.get(i) {
                None => break,
                Some(Tok::Comma) => {
                    i += 1;
                    if i == toks.len() {
                        return Err(err("found end of string, expected: identifier".into()));
                    }
                }
                t => {
                    return Err(err(format!(
                        "found {}, expected: ',' or 'end of string'",
                        describe(t)
                    )))
                }
            }
        }
        Ok(LabelSelector(reqs))
    }

    /// Whether an object's `metadata.labels` satisfy every requirement.
    pub(crate) fn matches(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels");
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|r| match &r.op {
            Op::Eq(v) => get(&r.key) == Some(v.as_str()),
            Op::NotEq(v) => get(&r.key) != Some(v.as_str()),
            Op::In(vs) => get(&r.key).is_some_and(|l| vs.iter().any(|v| v == l)),
            Op::NotIn(vs) => !get(&r.key).is_some_and(|l| vs.iter().any(|v| v == l)),
            Op::Exists => get(&r.key).is_some(),
            Op::NotExists => get(&r.key).is_none(),
            Op::Gt(n) => get(&r.key)
                .and_then(|l| l.parse::<i64>().ok())
                .is_some_and(|l| l > *n),
            Op::Lt(n) => get(&r.key)
                .and_then(|l| l.parse::<i64>().ok())
                .is_some_and(|l| l < *n),
        })
    }
}

/// A `LabelSelector` object (`matchLabels`, `matchExpressions`) as a selector string, as
/// the scale subresource reports it (`app=web,tier in (a,b)`).
pub(crate) fn selector_string(sel: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(m) = sel.get("matchLabels").and_then(Value::as_object) {
        let mut keys: Vec<&String> = m.keys().collect();
        keys.sort();
        for k in keys {
            parts.push(format!("{k}={}", m[k].as_str().unwrap_or_default()));
        }
    }
    if let Some(exprs) = sel.get("matchExpressions").and_then(Value::as_array) {
        for e in exprs {
            let key = e["key"].as_str().unwrap_or_default();
            let values: Vec<&str> = e["values"]
                .as_array()
                .map(|v| v.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            match e["operator"].as_str().unwrap_or_default() {
                "In" => parts.push(format!("{key} in ({})", values.join(","))),
                "NotIn" => parts.push(format!("{key} notin ({})", values.join(","))),
                "Exists" => parts.push(key.to_string()),
                "DoesNotExist" => parts.push(format!("!{key}")),
                _ => {}
            }
        }
    }
    parts.join(",")
}

/// A parsed field selector.
#[derive(Debug, Clone, Default)]
pub(crate) struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    /// Parses a `fieldSelector` for resource `r`; errors are 400 texts.
    pub(crate) fn parse(s: &str, r: &Resource) -> Result<FieldSelector, String> {
        let mut terms = Vec::new();
        for term in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (key, neg, value) = if let Some((k, v)) = term.split_once("!=") {
                (k, true, v)
            } else if let Some((k, v)) = term.split_once("==") {
                (k, false, v)
            } else if let Some((k, v)) = term.split_once('=') {
                (k, false, v)
            } else {
                return Err(format!(
                    "invalid selector: '{s}'; can't understand '{term}'"
                ));
            };
            let key = key.trim();
            if !r.supports_field(key) {
                return Err(format!("field label not supported: {key}"));
            }
            terms.push((key.to_string(), neg, value.trim().to_string()));
        }
        Ok(FieldSelector(terms))
    }

    pub(crate) fn matches(&self, obj: &Value) -> bool {
        self.0
            .iter()
            .all(|(key, neg, value)| (field_value(obj, key) == *value) != *neg)
    }
}

/// The value a field label has on an object, as the real field-selector attributes give it.
fn field_value(obj: &Value, label: &str) -> String {
    let (path, default) = match label {
        "status.successful" => ("status.succeeded", "0"),
        "spec.hostNetwork" | "spec.unschedulable" => (label, "false"),
        _ => (label, ""),
    };
    let mut cur = obj;
    for part in path.split('.') {
        match cur.get(part) {
            Some(v) => cur = v,
            None => return default.to_string(),
        }
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Null => default.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::registry;
    use super::*;
    use serde_json::json;

    fn pod(labels: Value) -> Value {
        json!({"metadata": {"name": "p", "namespace": "default", "labels": labels}, "status": {"phase": "Running"}, "spec": {"nodeName": "n1"}})
    }

    fn m(sel: &str, labels: Value) -> bool {
        LabelSelector::parse(sel).unwrap().matches(&pod(labels))
    }

    #[test]
    fn label_grammar() {
        let l = json!({"app": "web", "tier": "front", "n": "5"});
        assert!(m("", l.clone()));
        assert!(m("app=web", l.clone()));
        assert!(m("app==web", l.clone()));
        assert!(!m("app!=web", l.clone()));
        assert!(m("app!=db", l.clone()));
        assert!(m("missing!=x", l.clone()));
        assert!(m("tier in (front, back)", l.clone()));
        assert!(!m("tier in (back)", l.clone()));
        assert!(m("tier notin (back)", l.clone()));
        assert!(m("missing notin (back)", l.clone()));
        assert!(!m("missing in (back)", l.clone()));
        assert!(m("app", l.clone()));
        assert!(!m("!app", l.clone()));
        assert!(m("!missing", l.clone()));
        assert!(m("n>4,n<6", l.clone()));
        assert!(!m("n>5", l.clone()));
        assert!(m("app=web,tier in (front),!missing", l.clone()));
        assert!(!m("app=web,tier=back", l));
    }

    #[test]
    fn label_errors() {
        for bad in [
            "app=",
            "app in",
            "app in (a",
            "=x",
            "app=web,",
            "a b",
            "app in ()",
            "n>x",
        ] {
            let r = LabelSelector::parse(bad);
            if bad == "app=" {
                assert!(r.is_ok(), "{bad}: an empty value is valid");
                continue;
            }
            let e = r.expect_err(bad);
            assert!(e.starts_with("unable to parse requirement"), "{bad}: {e}");
        }
    }

    #[test]
    fn field_selectors() {
        let pods = registry::lookup("v1", "Pod").unwrap();
        let p = pod(json!({}));
        let ok = |s: &str| FieldSelector::parse(s, pods).unwrap().matches(&p);
        assert!(ok("metadata.name=p"));
        assert!(ok("metadata.namespace==default,status.phase=Running"));
        assert!(ok("status.phase!=Pending"));
        assert!(!ok("spec.nodeName=n2"));
        assert!(ok("spec.hostNetwork=false"));
        let e = FieldSelector::parse("spec.foo=bar", pods).unwrap_err();
        assert_eq!(e, "field label not supported: spec.foo");
        let deploys = registry::lookup("apps/v1", "Deployment").unwrap();
        assert!(FieldSelector::parse("status.phase=Running", deploys).is_err());
    }

    #[test]
    fn selector_strings() {
        let s = json!({"matchLabels": {"tier": "a", "app": "web"}, "matchExpressions": [{"key": "env", "operator": "In", "values": ["x", "y"]}]});
        assert_eq!(selector_string(&s), "app=web,tier=a,env in (x,y)");
    }
}
