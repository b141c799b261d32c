//! YAML text to a JSON value plus a source map, through serde-saphyr.
//!
//! The whole document is read into a tree of nodes that each carry their location (serde-saphyr's
//! `Spanned`), then turned into a `serde_json::Value` and a [`SourceMap`] from JSON pointers to
//! spans. Every later check (schema, semantic, templates) works on the value and finds its
//! file:line:column through the map. serde-saphyr's budgets bound nesting depth, node count and
//! alias expansion, so "billion laughs" documents and 1,000-level nesting fail fast.

use std::collections::HashMap;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use serde_saphyr::{Location, Spanned};

use crate::source::{Source, Span};

/// Where a value sits in the source: the value itself and, for mapping entries, the key.
#[derive(Debug, Clone, Copy)]
pub struct Located {
    /// The span of the value (its first token).
    pub value: Span,
    /// The span of the key when the value is a mapping entry.
    pub key: Option<Span>,
}

/// JSON pointer (RFC 6901) to location, for every node of a document.
#[derive(Debug, Default, Clone)]
pub struct SourceMap {
    entries: HashMap<String, Located>,
}

impl SourceMap {
    /// The location of the node at `pointer`, or of its nearest ancestor that has one.
    pub fn locate(&self, pointer: &str) -> Option<Located> {
        let mut p = pointer;
        loop {
            if let Some(l) = self.entries.get(p) {
                return Some(*l);
            }
            match p.rfind('/') {
                Some(i) => p = &p[..i],
                None => return None,
            }
        }
    }

    /// The span of the value at `pointer` (or nearest ancestor).
    pub fn value_span(&self, pointer: &str) -> Option<Span> {
        self.locate(pointer).map(|l| l.value)
    }

    /// The span of the key of the entry at `pointer`, falling back to its value.
    pub fn key_span(&self, pointer: &str) -> Option<Span> {
        self.locate(pointer).map(|l| l.key.unwrap_or(l.value))
    }
}

/// Escapes one reference token of a JSON pointer.
pub fn escape_pointer_token(token: &str) -> std::borrow::Cow<'_, str> {
    if token.contains(['~', '/']) {
        token.replace('~', "~0").replace('/', "~1").into()
    } else {
        token.into()
    }
}

/// A parsed document: its value and where each part of it came from.
#[derive(Debug, Clone)]
pub struct Document {
    /// The document as JSON.
    pub value: Value,
    /// Pointer → span for every node.
    pub map: SourceMap,
}

/// A YAML syntax or budget error, located.
#[derive(Debug, Clone)]
pub struct YamlError {
    /// What went wrong, without a snippet (diagnostics draw their own).
    pub message: String,
    /// Where, when the parser knows.
    pub span: Option<Span>,
}

/// Stack for the parser thread: deep (but allowed) nesting recurses through serde, and debug
/// builds use large frames. Only the pages touched are committed.
const PARSER_STACK: usize = 64 * 1024 * 1024;

/// Parses a YAML document into a [`Document`]. Runs on its own thread with a large stack, so the
/// caller's stack size does not bound the nesting the budget allows.
pub fn parse(source: &Source) -> Result<Document, YamlError> {
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("opsbook-yaml".into())
            .stack_size(PARSER_STACK)
            .spawn_scoped(scope, || parse_here(source))
            .map_err(|e| YamlError {
                message: format!("cannot start the parser: {e}"),
                span: None,
            })?
            .join()
            .unwrap_or_else(|_| {
                Err(YamlError {
                    message: "the YAML parser failed".into(),
                    span: None,
                })
            })
    })
}

fn parse_here(source: &Source) -> Result<Document, YamlError> {
    let text: &str = &source.text;
    let options = serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_depth: 64,
            max_events: 4_000_000,
            max_nodes: 2_000_000,
            max_documents: 1,
            max_recorded_anchor_events: 100_000,
            max_recorded_anchor_bytes: 8 * 1024 * 1024,
        },
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: 100_000,
            max_replay_stack_depth: 16,
        },
        with_snippet: false,
    };
    let root: Option<Node> = serde_saphyr::from_str_with_options(text, options).map_err(|e| {
        let span = e.location().and_then(|l| span_of(source, &l));
        YamlError {
            message: clean_message(&e.without_snippet().to_string()),
            span,
        }
    })?;
    let mut map = SourceMap::default();
    let value = match root {
        Some(node) => to_json(source, node, String::new(), None, &mut map),
        None => Value::Null,
    };
    Ok(Document { value, map })
}

fn clean_message(msg: &str) -> String {
    let msg = msg.trim();
    // Budget breaches: say what the limit protects against, in words.
    if msg.contains("recursion limit") || msg.contains("Depth {") {
        return "the document nests deeper than 64 levels".to_string();
    }
    if msg.contains("RecordedAnchor")
        || msg.contains("replay")
        || msg.contains("Aliases {")
        || msg.contains("alias") && msg.contains("budget")
    {
        return "aliases expand to too much data (over 100,000 nodes): is this a \"billion laughs\" document?".to_string();
    }
    if msg.contains("budget breached") {
        let what = msg.split("budget breached:").nth(1).unwrap_or(msg);
        let what = what.split(" at line").next().unwrap_or(what).trim();
        return format!("the document exceeds a size limit ({what})");
    }
    // serde-saphyr appends " at line L column C" to some messages; the diagnostic shows the place.
    match msg.rfind(" at line ") {
        Some(i) if msg[i..].contains("column") => msg[..i].to_string(),
        _ => msg.to_string(),
    }
}

fn span_of(source: &Source, loc: &Location) -> Option<Span> {
    if loc.line() == 0 {
        return None;
    }
    let s = loc.span();
    match s.byte_offset() {
        Some(off) => {
            let offset = usize::try_from(off).ok()?;
            Some(Span {
                offset,
                len: s
                    .byte_len()
                    .and_then(|l| usize::try_from(l).ok())
                    .unwrap_or(0),
                line: loc.line() as usize,
                column: loc.column() as usize,
            })
        }
        None => {
            // Fall back to line/column: find the byte offset of that position.
            let line = loc.line() as usize;
            let col = loc.column() as usize;
            let line_start = source
                .text
                .split_inclusive('\n')
                .take(line.saturating_sub(1))
                .map(str::len)
                .sum::<usize>();
            let rest = source.text.get(line_start..).unwrap_or("");
            let within: usize = rest
                .chars()
                .take(col.saturating_sub(1))
                .map(char::len_utf8)
                .sum();
            Some(Span {
                offset: line_start + within,
                len: 0,
                line,
                column: col,
            })
        }
    }
}

fn to_json(
    source: &Source,
    node: Node,
    pointer: String,
    key: Option<Span>,
    map: &mut SourceMap,
) -> Value {
    let span = span_of(source, &node.loc).unwrap_or_default();
    let value = match node.kind {
        Kind::Null => Value::Null,
        Kind::Bool(b) => Value::Bool(b),
        Kind::Int(i) => Value::Number(i.into()),
        Kind::UInt(u) => Value::Number(u.into()),
        Kind::Float(f) => Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(f.to_string())),
        Kind::Str(s) => Value::String(s),
        Kind::Seq(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.into_iter().enumerate() {
                out.push(to_json(source, item, format!("{pointer}/{i}"), None, map));
            }
            Value::Array(out)
        }
        Kind::Map(entries) => {
            let mut out = Map::with_capacity(entries.len());
            for (k, v) in entries {
                let kspan = span_of(source, &k.referenced);
                let child = format!("{pointer}/{}", escape_pointer_token(&k.value));
                let value = to_json(source, v, child, kspan, map);
                out.insert(k.value.0, value);
            }
            Value::Object(out)
        }
    };
    map.entries.insert(pointer, Located { value: span, key });
    value
}

/// One YAML node with its location.
struct Node {
    loc: Location,
    kind: Kind,
}

enum Kind {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Spanned<KeyName>, Node)>),
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Spanned::<Kind>::deserialize(d)?;
        Ok(Node {
            loc: s.referenced,
            kind: s.value,
        })
    }
}

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(KindVisitor)
    }
}

struct KindVisitor;

impl<'de> Visitor<'de> for KindVisitor {
    type Value = Kind;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E>(self) -> Result<Kind, E> {
        Ok(Kind::Null)
    }
    fn visit_none<E>(self) -> Result<Kind, E> {
        Ok(Kind::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Kind, D::Error> {
        Kind::deserialize(d)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Kind, E> {
        Ok(Kind::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Kind, E> {
        Ok(Kind::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Kind, E> {
        Ok(Kind::UInt(v))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Kind, E> {
        i64::try_from(v)
            .map(Kind::Int)
            .map_err(|_| E::custom("integer out of range"))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Kind, E> {
        u64::try_from(v)
            .map(Kind::UInt)
            .map_err(|_| E::custom("integer out of range"))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Kind, E> {
        Ok(Kind::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Kind, E> {
        Ok(Kind::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Kind, E> {
        Ok(Kind::Str(v))
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Kind, E> {
        String::from_utf8(v.to_vec())
            .map(Kind::Str)
            .map_err(|_| E::custom("binary values are not supported"))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Kind, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(item) = seq.next_element::<Node>()? {
            items.push(item);
        }
        Ok(Kind::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Kind, A::Error> {
        let mut entries: Vec<(Spanned<KeyName>, Node)> = Vec::new();
        while let Some(key) = map.next_key::<Spanned<KeyName>>()? {
            let value = map.next_value::<Node>()?;
            entries.push((key, value));
        }
        Ok(Kind::Map(entries))
    }
}

/// A mapping key: any scalar, as text.
struct KeyName(String);

impl std::ops::Deref for KeyName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for KeyName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = KeyName;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a scalar mapping key")
            }
            fn visit_str<E>(self, v: &str) -> Result<KeyName, E> {
                Ok(KeyName(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<KeyName, E> {
                Ok(KeyName(v))
            }
            fn visit_bool<E>(self, v: bool) -> Result<KeyName, E> {
                Ok(KeyName(v.to_string()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<KeyName, E> {
                Ok(KeyName(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<KeyName, E> {
                Ok(KeyName(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<KeyName, E> {
                Ok(KeyName(v.to_string()))
            }
            fn visit_unit<E>(self) -> Result<KeyName, E> {
                Ok(KeyName("null".to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}
