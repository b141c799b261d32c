//! `opsbook actions [NAME]`

use clap::ValueEnum;
use opsbook_engine::action::Entry;
use opsbook_engine::schema::resolve_ref;
use serde_json::Value;

use super::{registry, EXIT_INVALID, EXIT_OK};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// For people.
    Text,
    /// The specs as JSON (name, summary, doc, input_schema, output_schema, dry_run).
    Json,
}

/// List the actions steps can `use`, or show one with its inputs and outputs.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  opsbook actions\n  opsbook actions shell\n  opsbook actions shell --format json | jq .input_schema"
)]
pub struct Args {
    /// Show this action's documentation and schemas.
    name: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

/// Runs `opsbook actions`.
pub fn run(args: Args) -> u8 {
    let registry = registry::registry();
    match &args.name {
        None => {
            match args.format {
                Format::Json => {
                    let all: Vec<_> = registry.iter().map(|e| &e.spec).collect();
                    println!("{}", serde_json::to_string_pretty(&all).unwrap_or_default());
                }
                Format::Text => {
                    let width = registry.names().map(str::len).max().unwrap_or(0);
                    for e in registry.iter() {
                        println!("{:width$}  {}", e.spec.name, e.spec.summary);
                    }
                    println!("\n`opsbook actions NAME` shows an action's inputs and outputs.");
                }
            }
            EXIT_OK
        }
        Some(name) => match registry.get(name) {
            Some(entry) => {
                match args.format {
                    Format::Json => println!(
                        "{}",
                        serde_json::to_string_pretty(&entry.spec).unwrap_or_default()
                    ),
                    Format::Text => print!("{}", describe(entry)),
                }
                EXIT_OK
            }
            None => {
                let hint = opsbook_engine::suggest::did_you_mean(name, registry.names())
                    .unwrap_or_else(|| "`opsbook actions` lists them".into());
                eprintln!("error: unknown action `{name}`: {hint}");
                EXIT_INVALID
            }
        },
    }
}

fn describe(entry: &Entry) -> String {
    let s = &entry.spec;
    let mut out = format!("{}\n  {}\n\n", s.name, s.summary);
    for line in wrap(&s.doc, 96) {
        out.push_str(&format!("  {line}\n"));
    }
    out.push_str(&format!("\n  --dry-run: {}\n", s.dry_run.describe()));
    out.push_str("\nInputs (with:)\n");
    out.push_str(&fields(&s.input_schema));
    out.push_str("\nResult (result.*)\n");
    out.push_str(&fields(&s.output_schema));
    out.push_str(&format!(
        "\nInput schema (JSON Schema)\n{}\n",
        serde_json::to_string_pretty(&s.input_schema).unwrap_or_default()
    ));
    out
}

fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split_whitespace() {
        let last = lines.last_mut().expect("one line at least");
        if !last.is_empty() && last.len() + 1 + word.len() > width {
            lines.push(word.to_string());
        } else {
            if !last.is_empty() {
                last.push(' ');
            }
            last.push_str(word);
        }
    }
    lines
}

fn type_of(root: &Value, s: &Value) -> String {
    let s = resolve_ref(root, s);
    if let Some(c) = s.get("const") {
        return c.to_string();
    }
    if let Some(e) = s.get("enum").and_then(Value::as_array) {
        return e
            .iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join(" | ");
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(alts) = s.get(key).and_then(Value::as_array) {
            let types: Vec<String> = alts
                .iter()
                .map(|a| type_of(root, a))
                .filter(|t| !t.is_empty() && t != "null")
                .collect();
            if !types.is_empty() {
                return types.join(" | ");
            }
        }
    }
    let types: Vec<&str> = match s.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .filter(|t| *t != "null")
            .collect(),
        _ => vec![],
    };
    if types.is_empty() {
        return "any".to_string();
    }
    types
        .iter()
        .map(|t| match *t {
            "array" => match s.get("items").map(|i| type_of(root, i)) {
                Some(items) if items != "any" => format!("list of {items}"),
                _ => "list".to_string(),
            },
            "object" => "mapping".to_string(),
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

fn fields(schema: &Value) -> String {
    let root = schema;
    let s = resolve_ref(root, schema);
    let Some(props) = s.get("properties").and_then(Value::as_object) else {
        let t = type_of(root, s);
        let desc = s.get("description").and_then(Value::as_str).unwrap_or("");
        return format!("  ({}) {desc}\n", if t.is_empty() { "any" } else { &t });
    };
    let required: Vec<&str> = s
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let width = props.keys().map(String::len).max().unwrap_or(0);
    let mut out = String::new();
    for (name, p) in props {
        let desc = resolve_ref(root, p)
            .get("description")
            .or_else(|| p.get("description"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let req = if required.contains(&name.as_str()) {
            " (required)"
        } else {
            ""
        };
        out.push_str(&format!("  {name:width$}  {}{req}\n", type_of(root, p)));
        for line in wrap(desc, 88) {
            if !line.is_empty() {
                out.push_str(&format!("  {:width$}    {line}\n", ""));
            }
        }
    }
    if let Some(one_of) = s.get("oneOf").and_then(Value::as_array) {
        let alts: Vec<String> = one_of
            .iter()
            .filter_map(|a| {
                a.get("required")?.as_array().map(|r| {
                    r.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(" + ")
                })
            })
            .collect();
        if !alts.is_empty() {
            out.push_str(&format!("  exactly one of: {}\n", alts.join(", ")));
        }
    }
    out
}
