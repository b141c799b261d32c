//! YAML text to a JSON value plus a source map, built from the parser's events.
//!
//! granit-parser (the YAML 1.2 parser under serde-saphyr) gives events with their spans; we build
//! the `serde_json::Value` and a compact source map in one pass, without recursion, and enforce
//! our own budgets: nesting depth, node count and alias expansion, so "billion laughs" documents
//! and 1,000-level nesting fail fast with a clear message. Scalars follow the YAML 1.2 core
//! schema: `yes`, `on` and `y` are strings, `010` is the integer 10; duplicate keys are errors;
//! merge keys (`<<: *defaults`) work.

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

/// Where one node sits: byte ranges of its value and (for mapping entries) its key, and its
/// children as a block of the document's node list. Line and column are computed only when a
/// diagnostic needs them.
#[derive(Debug, Clone, Copy, Default)]
struct Node {
    offset: u32,
    len: u32,
    key_offset: u32,
    /// `u32::MAX` when the node is not a mapping entry.
    key_len: u32,
    first: u32,
    count: u32,
}

const NO_KEY: u32 = u32::MAX;

fn clamp(x: usize) -> u32 {
    u32::try_from(x).unwrap_or(u32::MAX - 1)
}

impl Node {
    fn at(span: &granit_parser::Span) -> Node {
        let start = span.start.byte_offset().unwrap_or(0);
        let end = span.end.byte_offset().unwrap_or(start).max(start);
        Node {
            offset: clamp(start),
            len: clamp(end - start),
            key_offset: 0,
            key_len: NO_KEY,
            first: 0,
            count: 0,
        }
    }

    fn with_key(mut self, key: Node) -> Node {
        self.key_offset = key.offset;
        self.key_len = key.len;
        self
    }
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
    /// Every node's place; each container's children form one block.
    nodes: Vec<Node>,
    /// The root's index in `nodes`.
    root: usize,
    /// The source, to turn byte offsets into lines and columns.
    source: Source,
}

impl Document {
    /// The location of the node at a JSON `pointer`, or of its nearest ancestor that has one.
    pub fn locate(&self, pointer: &str) -> Option<Located> {
        let mut value = &self.value;
        let mut node = *self.nodes.get(self.root)?;
        for raw in pointer.split('/').skip(1) {
            let token = unescape_pointer_token(raw);
            let (index, child) = match value {
                Value::Object(m) => match m.iter().enumerate().find(|(_, (k, _))| **k == token) {
                    Some((i, (_, v))) => (i, v),
                    None => break,
                },
                Value::Array(a) => match token
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| a.get(i).map(|v| (i, v)))
                {
                    Some(found) => found,
                    None => break,
                },
                _ => break,
            };
            if index >= node.count as usize {
                break;
            }
            let Some(&child_node) = self.nodes.get(node.first as usize + index) else {
                break;
            };
            value = child;
            node = child_node;
        }
        let span = |offset: u32, len: u32| {
            let (line, column) = self.source.line_col(offset as usize);
            Span {
                offset: offset as usize,
                len: len as usize,
                line,
                column,
            }
        };
        Some(Located {
            value: span(node.offset, node.len),
            key: (node.key_len != NO_KEY).then(|| span(node.key_offset, node.key_len)),
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

fn point(source: &Source, offset: usize) -> Span {
    let offset = offset.min(source.text.len());
    let (line, column) = source.line_col(offset);
    Span {
        offset,
        len: 0,
        line,
        column,
    }
}

fn scan_error(source: &Source, e: &ScanError) -> YamlError {
    let info = e.info();
    let message = if info.contains("recursion limit") {
        format!("the document nests deeper than {MAX_DEPTH} levels")
    } else {
        info
    };
    YamlError {
        message,
        span: Some(point(source, e.marker().byte_offset().unwrap_or(0))),
    }
}

/// A container being built.
enum Frame {
    Seq {
        items: Vec<Value>,
        children: Vec<Node>,
        node: Node,
        anchor: usize,
        nodes: usize,
    },
    Map {
        map: Map<String, Value>,
        children: Vec<Node>,
        node: Node,
        anchor: usize,
        nodes: usize,
        /// The key waiting for its value.
        key: Option<(String, Node)>,
        /// `<<` merge sources, applied at the end (explicit keys win).
        merges: Vec<(Value, Node, Node)>,
    },
}

/// An anchored node, kept for its aliases (its children stay in the node list).
struct Anchored {
    value: Value,
    node: Node,
    nodes: usize,
}

/// Parses one YAML document into a [`Document`]. An empty document is `null`.
pub fn parse(source: &Source) -> Result<Document, YamlError> {
    let text: &str = &source.text;
    let mut arena: Vec<Node> = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: HashMap<usize, Anchored> = HashMap::new();
    let mut root: Option<(Value, Node)> = None;
    let mut total_nodes = 0usize;
    let mut alias_nodes = 0usize;
    let mut documents = 0usize;
    let err = |message: String, at: Node| YamlError {
        message,
        span: Some(Span {
            len: at.len as usize,
            ..point(source, at.offset as usize)
        }),
    };

    for event in Parser::new_from_str(text) {
        let (event, raw_span) = event.map_err(|e| scan_error(source, &e))?;
        let here = Node::at(&raw_span);
        // A finished node: (value, node, node count, anchor id).
        let done: Option<(Value, Node, usize, usize)> = match event {
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => None,
            Event::DocumentStart(..) => {
                documents += 1;
                if documents > 1 {
                    return Err(err(
                        "a runbook file holds one YAML document; remove the extra `---`".into(),
                        here,
                    ));
                }
                None
            }
            Event::Anchor(..) => None,
            Event::UnresolvedAlias(name) => {
                return Err(err(format!("unknown anchor `*{name}`"), here));
            }
            Event::Alias(id) => {
                let Some(a) = anchors.get(&id) else {
                    return Err(err("alias to an unknown anchor".into(), here));
                };
                alias_nodes += a.nodes;
                if alias_nodes > MAX_ALIAS_NODES {
                    return Err(err(
                        format!("aliases expand to too much data (over {MAX_ALIAS_NODES} nodes): is this a \"billion laughs\" document?"),
                        here,
                    ));
                }
                // The alias shares the anchored node's children in the node list.
                let node = Node {
                    first: a.node.first,
                    count: a.node.count,
                    ..here
                };
                Some((a.value.clone(), node, a.nodes, 0))
            }
            Event::Scalar(text, style, anchor, tag) => {
                // A mapping key: kept as written.
                if let Some(Frame::Map {
                    key: key @ None, ..
                }) = stack.last_mut()
                {
                    if let Some(tag) = &tag {
                        let core = tag.handle() == "!!" || tag.handle() == "tag:yaml.org,2002:";
                        if !(core && tag.suffix() == "str") {
                            return Err(err(
                                format!(
                                    "unsupported YAML tag `{}{}` on a key",
                                    tag.handle(),
                                    tag.suffix()
                                ),
                                here,
                            ));
                        }
                    }
                    *key = Some((text.into_owned(), here));
                    total_nodes += 1;
                    continue;
                }
                let value = match tag {
                    Some(tag) => tagged_scalar(&text, tag.handle(), tag.suffix())
                        .map_err(|m| err(m, here))?,
                    None if style == ScalarStyle::Plain => plain_scalar(&text),
                    None => Value::String(text.into_owned()),
                };
                Some((value, here, 1, anchor))
            }
            Event::SequenceStart(_, anchor, ref tag) | Event::MappingStart(_, anchor, ref tag) => {
                if let Some(tag) = tag {
                    let core = (tag.handle() == "!!" || tag.handle() == "tag:yaml.org,2002:")
                        && matches!(tag.suffix(), "seq" | "map");
                    if !core {
                        return Err(err(
                            format!("unsupported YAML tag `{}{}`", tag.handle(), tag.suffix()),
                            here,
                        ));
                    }
                }
                if let Some(Frame::Map { key: None, .. }) = stack.last() {
                    return Err(err(
                        "a mapping key must be a plain value, not a list or a mapping".into(),
                        here,
                    ));
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(err(
                        format!("the document nests deeper than {MAX_DEPTH} levels"),
                        here,
                    ));
                }
                let is_seq = matches!(event, Event::SequenceStart(..));
                stack.push(if is_seq {
                    Frame::Seq {
                        items: Vec::new(),
                        children: Vec::new(),
                        node: here,
                        anchor,
                        nodes: 1,
                    }
                } else {
                    Frame::Map {
                        map: Map::new(),
                        children: Vec::new(),
                        node: here,
                        anchor,
                        nodes: 1,
                        key: None,
                        merges: Vec::new(),
                    }
                });
                None
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (value, mut node, children, nodes, anchor) = match stack.pop() {
                    Some(Frame::Seq {
                        items,
                        children,
                        node,
                        anchor,
                        nodes,
                    }) => (Value::Array(items), node, children, nodes, anchor),
                    Some(Frame::Map {
                        mut map,
                        mut children,
                        node,
                        anchor,
                        mut nodes,
                        merges,
                        ..
                    }) => {
                        for (source_value, source_node, at) in merges {
                            merge_into(
                                &arena,
                                &mut map,
                                &mut children,
                                source_value,
                                source_node,
                                at,
                                &mut nodes,
                            )
                            .map_err(|m| err(m, at))?;
                        }
                        (Value::Object(map), node, children, nodes, anchor)
                    }
                    None => continue,
                };
                node.first = clamp(arena.len());
                node.count = clamp(children.len());
                arena.extend(children);
                Some((value, node, nodes, anchor))
            }
            #[allow(unreachable_patterns)] // `Comment` exists when another crate enables comments.
            _ => None,
        };
        let Some((value, node, nodes, anchor)) = done else {
            continue;
        };
        total_nodes += nodes;
        if total_nodes > MAX_NODES {
            return Err(err(
                format!("the document has more than {MAX_NODES} nodes"),
                here,
            ));
        }
        if anchor != 0 {
            anchors.insert(
                anchor,
                Anchored {
                    value: value.clone(),
                    node,
                    nodes,
                },
            );
        }
        match stack.last_mut() {
            None => root = Some((value, node)),
            Some(Frame::Seq {
                items,
                children,
                nodes: n,
                ..
            }) => {
                items.push(value);
                children.push(node);
                *n += nodes;
            }
            Some(Frame::Map {
                map,
                children,
                key,
                merges,
                nodes: n,
                ..
            }) => {
                let Some((k, knode)) = key.take() else {
                    // Only an alias can end up here as a key: a mapping key must be plain text.
                    match value {
                        Value::String(s) => {
                            *key = Some((s, node));
                            continue;
                        }
                        _ => return Err(err("a mapping key must be a plain value".into(), node)),
                    }
                };
                if k == "<<" {
                    // What a merge copies counts toward this mapping's size (and so toward every
                    // alias of it).
                    *n += nodes;
                    merges.push((value, node, knode));
                    continue;
                }
                if map.contains_key(&k) {
                    let first_line = map
                        .keys()
                        .position(|x| *x == k)
                        .and_then(|i| children.get(i))
                        .map(|c| source.line_col(c.key_offset as usize).0)
                        .unwrap_or(0);
                    return Err(err(
                        format!("duplicate key `{k}` (first on line {first_line})"),
                        knode,
                    ));
                }
                *n += nodes;
                map.insert(k, value);
                children.push(node.with_key(knode));
            }
        }
    }
    let (value, node) = root.unwrap_or((
        Value::Null,
        Node {
            key_len: NO_KEY,
            ..Node::default()
        },
    ));
    let root_index = arena.len();
    arena.push(node);
    arena.shrink_to_fit();
    Ok(Document {
        value,
        nodes: arena,
        root: root_index,
        source: source.clone(),
    })
}

/// `<<: *a` or `<<: [*a, *b]`: copy the keys the mapping does not set itself.
fn merge_into(
    arena: &[Node],
    map: &mut Map<String, Value>,
    children: &mut Vec<Node>,
    source: Value,
    source_node: Node,
    at: Node,
    nodes: &mut usize,
) -> Result<(), String> {
    let block = arena
        .get(source_node.first as usize..(source_node.first + source_node.count) as usize)
        .unwrap_or(&[]);
    match source {
        Value::Object(m) => {
            for ((k, v), child) in m.into_iter().zip(block.iter().copied()) {
                if !map.contains_key(&k) {
                    *nodes += 1;
                    map.insert(k, v);
                    children.push(child.with_key(at));
                }
            }
            Ok(())
        }
        Value::Array(items) => {
            for (item, child) in items.into_iter().zip(block.iter().copied()) {
                merge_into(arena, map, children, item, child, at, nodes)?;
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
