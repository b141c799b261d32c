//! YAML text to a JSON value plus a source map, built from the parser's events.
//!
//! granit-parser (the YAML 1.2 parser under serde-saphyr) gives events with their spans; we build
//! the `serde_json::Value` and a tree of spans in one pass, without recursion, and enforce our own
//! budgets: nesting depth, node count and alias expansion, so "billion laughs" documents and
//! 1,000-level nesting fail fast with a clear message. Scalars follow the YAML 1.2 core schema:
//! `yes`, `on` and `y` are strings, `010` is the integer 10; duplicate keys are errors; merge keys
//! (`<<: *defaults`) work.

use std::collections::HashMap;

use granit_parser::{Event, Parser, ScalarStyle, ScanError};
use serde_json::{Map, Number, Value};

use crate::source::{Source, Span};

/// Deepest nesting of mappings and sequences.
pub const MAX_DEPTH: usize = 64;
/// Most nodes that aliases may expand to, over the whole document.
pub const MAX_ALIAS_NODES: usize = 100_000;
/// Most nodes in a document, aliases expanded.
pub const MAX_NODES: usize = 1_000_000;

/// A span stored compactly (documents over 4 GiB are not runbooks).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pos {
    offset: u32,
    len: u32,
    line: u32,
    column: u32,
}

impl Pos {
    fn none() -> Pos {
        Pos::default()
    }
    fn is_none(self) -> bool {
        self.line == 0
    }
    /// The full span.
    pub fn span(self) -> Span {
        Span {
            offset: self.offset as usize,
            len: self.len as usize,
            line: self.line as usize,
            column: self.column as usize,
        }
    }
}

impl From<Span> for Pos {
    fn from(s: Span) -> Pos {
        let c = |x: usize| u32::try_from(x).unwrap_or(u32::MAX);
        Pos {
            offset: c(s.offset),
            len: c(s.len),
            line: c(s.line),
            column: c(s.column),
        }
    }
}

/// Where one node sits in the source, and where its children sit.
#[derive(Debug, Clone, Default)]
pub struct SpanNode {
    /// The position of the value (its first token; the whole scalar for scalars).
    pub value: Pos,
    /// The position of the key, for mapping entries (none otherwise).
    pub key: Pos,
    /// Children in the order of the value's items or entries.
    pub children: Vec<SpanNode>,
}

/// The location of a node: its value and, for mapping entries, its key.
#[derive(Debug, Clone, Copy)]
pub struct Located {
    /// The span of the value.
    pub value: Span,
    /// The span of the key when the node is a mapping entry.
    pub key: Option<Span>,
}

/// Escapes one reference token of a JSON pointer.
pub fn escape_pointer_token(token: &str) -> std::borrow::Cow<'_, str> {
    if token.contains(['~', '/']) {
        token.replace('~', "~0").replace('/', "~1").into()
    } else {
        token.into()
    }
}

fn unescape_pointer_token(token: &str) -> std::borrow::Cow<'_, str> {
    if token.contains('~') {
        token.replace("~1", "/").replace("~0", "~").into()
    } else {
        token.into()
    }
}

/// A parsed document: its value and where each part of it came from.
#[derive(Debug, Clone)]
pub struct Document {
    /// The document as JSON.
    pub value: Value,
    /// The spans, in the shape of `value`.
    pub spans: SpanNode,
}

impl Document {
    /// The location of the node at a JSON `pointer`, or of its nearest ancestor that has one.
    pub fn locate(&self, pointer: &str) -> Option<Located> {
        let mut value = &self.value;
        let mut node = &self.spans;
        for raw in pointer.split('/').skip(1) {
            let token = unescape_pointer_token(raw);
            let index = match value {
                Value::Object(m) => m.keys().position(|k| *k == token),
                Value::Array(a) => token.parse::<usize>().ok().filter(|i| *i < a.len()),
                _ => None,
            };
            let Some(i) = index else { break };
            let (Some(child_value), Some(child_node)) = (
                match value {
                    Value::Object(m) => m.values().nth(i),
                    Value::Array(a) => a.get(i),
                    _ => None,
                },
                node.children.get(i),
            ) else {
                break;
            };
            value = child_value;
            node = child_node;
        }
        if node.value.is_none() {
            return None;
        }
        Some(Located {
            value: node.value.span(),
            key: (!node.key.is_none()).then(|| node.key.span()),
        })
    }

    /// The span of the value at `pointer` (or of its nearest ancestor).
    pub fn value_span(&self, pointer: &str) -> Option<Span> {
        self.locate(pointer).map(|l| l.value)
    }

    /// The span of the key of the entry at `pointer`, falling back to its value.
    pub fn key_span(&self, pointer: &str) -> Option<Span> {
        self.locate(pointer).map(|l| l.key.unwrap_or(l.value))
    }
}

/// A YAML syntax or budget error, located.
#[derive(Debug, Clone)]
pub struct YamlError {
    /// What went wrong.
    pub message: String,
    /// Where, when known.
    pub span: Option<Span>,
}

fn span_of(source: &Source, s: &granit_parser::Span) -> Span {
    let start = s.start.byte_offset().unwrap_or(0);
    let end = s.end.byte_offset().unwrap_or(start).max(start);
    let _ = source;
    Span {
        offset: start,
        len: end - start,
        line: s.start.line(),
        column: s.start.col() + 1,
    }
}

fn scan_error(source: &Source, e: &ScanError) -> YamlError {
    let m = e.marker();
    let offset = m.byte_offset().unwrap_or(0).min(source.text.len());
    let (line, column) = source.line_col(offset);
    let info = e.info();
    let message = if info.contains("recursion limit") {
        format!("the document nests deeper than {MAX_DEPTH} levels")
    } else {
        info
    };
    YamlError {
        message,
        span: Some(Span {
            offset,
            len: 0,
            line,
            column,
        }),
    }
}

/// A container being built.
enum Frame {
    Seq {
        items: Vec<Value>,
        spans: Vec<SpanNode>,
        span: Span,
        anchor: usize,
        nodes: usize,
    },
    Map {
        map: Map<String, Value>,
        spans: Vec<SpanNode>,
        span: Span,
        anchor: usize,
        nodes: usize,
        /// The key waiting for its value.
        key: Option<(String, Span)>,
        /// `<<` merge sources, applied at the end (explicit keys win).
        merges: Vec<(Value, SpanNode, Span)>,
    },
}

/// An anchored node, kept for its aliases.
struct Anchored {
    value: Value,
    spans: SpanNode,
    nodes: usize,
}

/// Parses one YAML document into a [`Document`]. An empty document is `null`.
pub fn parse(source: &Source) -> Result<Document, YamlError> {
    let text: &str = &source.text;
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: HashMap<usize, Anchored> = HashMap::new();
    let mut root: Option<(Value, SpanNode)> = None;
    let mut total_nodes = 0usize;
    let mut alias_nodes = 0usize;
    let mut documents = 0usize;
    let err = |message: String, span: Span| YamlError {
        message,
        span: Some(span),
    };

    for event in Parser::new_from_str(text) {
        let (event, raw_span) = event.map_err(|e| scan_error(source, &e))?;
        let span = span_of(source, &raw_span);
        // A finished node: (value, spans, node count, anchor id).
        let done: Option<(Value, SpanNode, usize, usize)> = match event {
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => None,
            Event::DocumentStart(..) => {
                documents += 1;
                if documents > 1 {
                    return Err(err(
                        "a runbook file holds one YAML document; remove the extra `---`".into(),
                        span,
                    ));
                }
                None
            }
            Event::Anchor(..) => None,
            Event::UnresolvedAlias(name) => {
                return Err(err(format!("unknown anchor `*{name}`"), span));
            }
            Event::Alias(id) => {
                let Some(a) = anchors.get(&id) else {
                    return Err(err("alias to an unknown anchor".into(), span));
                };
                alias_nodes += a.nodes;
                if alias_nodes > MAX_ALIAS_NODES {
                    return Err(err(
                        format!("aliases expand to too much data (over {MAX_ALIAS_NODES} nodes): is this a \"billion laughs\" document?"),
                        span,
                    ));
                }
                let mut spans = a.spans.clone();
                spans.value = span.into();
                Some((a.value.clone(), spans, a.nodes, 0))
            }
            Event::Scalar(text, style, anchor, tag) => {
                // A mapping key: kept as written.
                if let Some(Frame::Map {
                    key: key @ None, ..
                }) = stack.last_mut()
                {
                    *key = Some((text.into_owned(), span));
                    total_nodes += 1;
                    continue;
                }
                let value = match tag {
                    Some(tag) => tagged_scalar(&text, tag.handle(), tag.suffix())
                        .map_err(|m| err(m, span))?,
                    None if style == ScalarStyle::Plain => plain_scalar(&text),
                    None => Value::String(text.into_owned()),
                };
                let spans = SpanNode {
                    value: span.into(),
                    key: Pos::none(),
                    children: Vec::new(),
                };
                Some((value, spans, 1, anchor))
            }
            Event::SequenceStart(_, anchor, ref tag) | Event::MappingStart(_, anchor, ref tag) => {
                if let Some(tag) = tag {
                    let core = (tag.handle() == "!!" || tag.handle() == "tag:yaml.org,2002:")
                        && matches!(tag.suffix(), "seq" | "map");
                    if !core {
                        return Err(err(
                            format!("unsupported YAML tag `{}{}`", tag.handle(), tag.suffix()),
                            span,
                        ));
                    }
                }
                if let Some(Frame::Map { key: None, .. }) = stack.last() {
                    return Err(err(
                        "a mapping key must be a plain value, not a list or a mapping".into(),
                        span,
                    ));
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(err(
                        format!("the document nests deeper than {MAX_DEPTH} levels"),
                        span,
                    ));
                }
                let is_seq = matches!(event, Event::SequenceStart(..));
                stack.push(if is_seq {
                    Frame::Seq {
                        items: Vec::new(),
                        spans: Vec::new(),
                        span,
                        anchor,
                        nodes: 1,
                    }
                } else {
                    Frame::Map {
                        map: Map::new(),
                        spans: Vec::new(),
                        span,
                        anchor,
                        nodes: 1,
                        key: None,
                        merges: Vec::new(),
                    }
                });
                None
            }
            Event::SequenceEnd | Event::MappingEnd => match stack.pop() {
                Some(Frame::Seq {
                    items,
                    spans,
                    span,
                    anchor,
                    nodes,
                }) => Some((
                    Value::Array(items),
                    SpanNode {
                        value: span.into(),
                        key: Pos::none(),
                        children: spans,
                    },
                    nodes,
                    anchor,
                )),
                Some(Frame::Map {
                    mut map,
                    mut spans,
                    span,
                    anchor,
                    mut nodes,
                    merges,
                    ..
                }) => {
                    for (source_value, source_spans, at) in merges {
                        merge_into(
                            &mut map,
                            &mut spans,
                            source_value,
                            source_spans,
                            at,
                            &mut nodes,
                        )
                        .map_err(|m| err(m, at))?;
                    }
                    Some((
                        Value::Object(map),
                        SpanNode {
                            value: span.into(),
                            key: Pos::none(),
                            children: spans,
                        },
                        nodes,
                        anchor,
                    ))
                }
                None => None,
            },
            #[allow(unreachable_patterns)] // `Comment` exists when another crate enables comments.
            _ => None,
        };
        let Some((value, spans, nodes, anchor)) = done else {
            continue;
        };
        total_nodes += nodes;
        if total_nodes > MAX_NODES {
            return Err(err(
                format!("the document has more than {MAX_NODES} nodes"),
                span,
            ));
        }
        if anchor != 0 {
            anchors.insert(
                anchor,
                Anchored {
                    value: value.clone(),
                    spans: spans.clone(),
                    nodes,
                },
            );
        }
        match stack.last_mut() {
            None => root = Some((value, spans)),
            Some(Frame::Seq {
                items,
                spans: children,
                nodes: n,
                ..
            }) => {
                items.push(value);
                children.push(spans);
                *n += nodes;
            }
            Some(Frame::Map {
                map,
                spans: children,
                key,
                merges,
                nodes: n,
                ..
            }) => {
                let Some((k, kspan)) = key.take() else {
                    // Only an alias can end up here as a key: a mapping key must be plain text.
                    match value {
                        Value::String(s) => {
                            *key = Some((s, spans.value.span()));
                            continue;
                        }
                        _ => {
                            return Err(err(
                                "a mapping key must be a plain value".into(),
                                spans.value.span(),
                            ))
                        }
                    }
                };
                if k == "<<" {
                    merges.push((value, spans, kspan));
                    continue;
                }
                if map.contains_key(&k) {
                    let first = map
                        .keys()
                        .position(|x| *x == k)
                        .and_then(|i| children.get(i))
                        .map(|s| s.key.line)
                        .unwrap_or(0);
                    return Err(err(
                        format!("duplicate key `{k}` (first on line {first})"),
                        kspan,
                    ));
                }
                *n += nodes;
                map.insert(k, value);
                children.push(SpanNode {
                    key: kspan.into(),
                    ..spans
                });
            }
        }
    }
    let (value, spans) = root.unwrap_or((
        Value::Null,
        SpanNode {
            value: Span {
                offset: 0,
                len: 0,
                line: 1,
                column: 1,
            }
            .into(),
            key: Pos::none(),
            children: Vec::new(),
        },
    ));
    Ok(Document { value, spans })
}

/// `<<: *a` or `<<: [*a, *b]`: copy the keys the mapping does not set itself.
fn merge_into(
    map: &mut Map<String, Value>,
    spans: &mut Vec<SpanNode>,
    source: Value,
    source_spans: SpanNode,
    at: Span,
    nodes: &mut usize,
) -> Result<(), String> {
    match source {
        Value::Object(m) => {
            for ((k, v), s) in m.into_iter().zip(source_spans.children) {
                if !map.contains_key(&k) {
                    *nodes += 1;
                    map.insert(k, v);
                    spans.push(SpanNode {
                        key: at.into(),
                        ..s
                    });
                }
            }
            Ok(())
        }
        Value::Array(items) => {
            for (item, s) in items.into_iter().zip(source_spans.children) {
                merge_into(map, spans, item, s, at, nodes)?;
            }
            Ok(())
        }
        _ => Err("`<<` merges a mapping (or a list of mappings) into this one".into()),
    }
}

/// A plain scalar under the YAML 1.2 core schema.
fn plain_scalar(s: &str) -> Value {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    number(s).unwrap_or_else(|| Value::String(s.to_string()))
}

fn number(s: &str) -> Option<Value> {
    let first = s.as_bytes().first()?;
    if !(first.is_ascii_digit() || matches!(first, b'-' | b'+' | b'.')) {
        return None;
    }
    if let Some(hex) = s.strip_prefix("0x") {
        return u64::from_str_radix(hex, 16)
            .ok()
            .map(|n| Value::Number(n.into()));
    }
    if let Some(oct) = s.strip_prefix("0o") {
        return u64::from_str_radix(oct, 8)
            .ok()
            .map(|n| Value::Number(n.into()));
    }
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(i) = s.parse::<i64>() {
            return Some(Value::Number(i.into()));
        }
        if let Ok(u) = s.trim_start_matches('+').parse::<u64>() {
            return Some(Value::Number(u.into()));
        }
    }
    match digits {
        ".inf" | ".Inf" | ".INF" | ".nan" | ".NaN" | ".NAN" => {
            return Some(Value::String(s.to_string()))
        }
        _ => {}
    }
    // [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?
    let valid = {
        let b = digits.as_bytes();
        let mut i = 0;
        let int_digits = b.iter().take_while(|c| c.is_ascii_digit()).count();
        i += int_digits;
        let mut frac_digits = 0;
        if b.get(i) == Some(&b'.') {
            i += 1;
            frac_digits = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
            i += frac_digits;
        }
        let mantissa = int_digits > 0 || frac_digits > 0;
        if mantissa && matches!(b.get(i), Some(b'e' | b'E')) {
            i += 1;
            if matches!(b.get(i), Some(b'-' | b'+')) {
                i += 1;
            }
            let exp = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
            i += exp;
            mantissa && exp > 0 && i == b.len()
        } else {
            mantissa && i == b.len()
        }
    };
    if !valid {
        return None;
    }
    s.parse::<f64>()
        .ok()
        .and_then(Number::from_f64)
        .map(Value::Number)
}

/// A scalar with an explicit tag: `!!str 010`, `!!int "3"`.
fn tagged_scalar(s: &str, handle: &str, suffix: &str) -> Result<Value, String> {
    let core = handle == "!!" || handle == "tag:yaml.org,2002:";
    if !core {
        return Err(format!("unsupported YAML tag `{handle}{suffix}`"));
    }
    match suffix {
        "str" => Ok(Value::String(s.to_string())),
        "null" => Ok(Value::Null),
        "bool" => match plain_scalar(s) {
            v @ Value::Bool(_) => Ok(v),
            _ => Err(format!("`{s}` is not a boolean")),
        },
        "int" => match number(s) {
            Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(Value::Number(n)),
            _ => Err(format!("`{s}` is not an integer")),
        },
        "float" => match number(s)
            .as_ref()
            .and_then(Value::as_f64)
            .and_then(Number::from_f64)
        {
            Some(n) => Ok(Value::Number(n)),
            None => Err(format!("`{s}` is not a number")),
        },
        other => Err(format!("unsupported YAML tag `!!{other}` on a scalar")),
    }
}

/// Parses YAML text that is data, not a runbook (params files, `fromyaml`), with the same
/// budgets. Errors say `line L column C: message`.
pub fn parse_value(text: &str) -> Result<Value, String> {
    let source = Source::new("-", text);
    parse(&source).map(|d| d.value).map_err(|e| match e.span {
        Some(s) => format!("line {} column {}: {}", s.line, s.column, e.message),
        None => e.message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn v(text: &str) -> Value {
        parse_value(text).unwrap()
    }

    #[test]
    fn yaml_1_2_core_schema() {
        assert_eq!(
            v("a: yes\nb: on\nc: y\nd: 010\ne: 0x10\nf: 1.5\ng: ~\nh: true\ni: '1'\nj: 1e3\nk: 1_000\nl: -7\nm: .5\nn: 1.\no: !!str 12"),
            json!({"a": "yes", "b": "on", "c": "y", "d": 10, "e": 16, "f": 1.5, "g": null, "h": true, "i": "1", "j": 1000.0, "k": "1_000", "l": -7, "m": 0.5, "n": 1.0, "o": "12"})
        );
        assert_eq!(v("on: 1\ny: 2\nn: 3"), json!({"on": 1, "y": 2, "n": 3}));
    }

    #[test]
    fn spans_point_at_values_and_keys() {
        let src = Source::new("t", "a:\n  b: [1, \"two\"]\n  c: x\n");
        let d = parse(&src).unwrap();
        let l = d.locate("/a/b/1").unwrap();
        assert_eq!((l.value.line, l.value.column), (2, 10));
        let l = d.locate("/a/c").unwrap();
        assert_eq!((l.value.line, l.value.column), (3, 6));
        assert_eq!(l.key.map(|k| (k.line, k.column)), Some((3, 3)));
        // Unknown children fall back to the nearest ancestor.
        assert_eq!(d.value_span("/a/zzz").unwrap().line, 2);
    }

    #[test]
    fn duplicate_keys_and_merges() {
        let e = parse_value("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert!(e.contains("duplicate key `a` (first on line 1)"), "{e}");
        assert_eq!(
            v("base: &b {x: 1, y: 2}\nm:\n  <<: *b\n  y: 3\n")["m"],
            json!({"y": 3, "x": 1})
        );
    }

    #[test]
    fn one_document_only() {
        assert!(parse_value("a: 1\n---\nb: 2\n")
            .unwrap_err()
            .contains("one YAML document"));
    }
}
