//! Manifests as runbooks give them: a mapping, a list, YAML text with several documents, or
//! files (a folder means its `.yaml`, `.yml` and `.json` files, in name order); `kind: List`
//! documents are opened up.

use std::path::Path;

use serde_json::Value;

/// The documents of a YAML text (`---` separated); empty documents are skipped.
pub fn documents(text: &str, origin: &str) -> Result<Vec<Value>, String> {
    let mut chunks: Vec<(usize, String)> = vec![(1, String::new())];
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_end();
        if trimmed == "---" || line.starts_with("--- ") || line.starts_with("---\t") {
            let rest = line[3..].trim();
            chunks.push((
                i + 1,
                if rest.is_empty() {
                    String::new()
                } else {
                    format!("{rest}\n")
                },
            ));
            continue;
        }
        if trimmed == "..." {
            chunks.push((i + 2, String::new()));
            continue;
        }
        if let Some((_, c)) = chunks.last_mut() {
            c.push_str(line);
            c.push('\n');
        }
    }
    let mut out = Vec::new();
    for (start, chunk) in chunks {
        let blank = chunk
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#') || l.starts_with('%'));
        if blank {
            continue;
        }
        let body: String = chunk
            .lines()
            .filter(|l| !l.starts_with('%'))
            .map(|l| format!("{l}\n"))
            .collect();
        let v = opsbook_engine::yaml::parse_value(&body)
            .map_err(|e| format!("{origin}: the document starting on line {start}: {e}"))?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}

/// The objects of `manifest` (a mapping, a list of them, or YAML text).
pub fn from_input(manifest: &Value) -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    match manifest {
        Value::String(text) => out.extend(documents(text, "`manifest`")?),
        Value::Array(items) => {
            for item in items {
                match item {
                    Value::String(text) => out.extend(documents(text, "`manifest`")?),
                    other => out.push(other.clone()),
                }
            }
        }
        Value::Null => {}
        other => out.push(other.clone()),
    }
    Ok(out)
}

/// The objects of a file, or of every manifest file of a folder.
pub fn from_path(path: &Path) -> Result<Vec<Value>, String> {
    if path.is_dir() {
        let mut files: Vec<_> = std::fs::read_dir(path)
            .map_err(|e| format!("cannot read the folder {}: {e}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.is_file()
                    && p.extension()
                        .is_some_and(|x| x == "yaml" || x == "yml" || x == "json")
            })
            .collect();
        files.sort();
        let mut out = Vec::new();
        for f in files {
            out.extend(from_path(&f)?);
        }
        return Ok(out);
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    documents(&text, &path.display().to_string())
}

/// `kind: List` documents opened up into their items.
pub fn flatten(docs: Vec<Value>) -> Vec<Value> {
    let mut out = Vec::new();
    for d in docs {
        let is_list = d
            .get("kind")
            .and_then(Value::as_str)
            .is_some_and(|k| k == "List" || (k.ends_with("List") && d.get("items").is_some()));
        match (is_list, d.get("items").and_then(Value::as_array)) {
            (true, Some(items)) => out.extend(flatten(items.clone())),
            _ => out.push(d),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn multi_document_yaml() {
        let text = "# leading comment\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n# only a comment\n--- \napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: b\ndata:\n  x: |\n    ---not a separator\n...\n";
        let docs = documents(text, "t").unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1]["metadata"]["name"], "b");
        assert_eq!(docs[1]["data"]["x"], "---not a separator\n");
        let e = documents("a: 1\n---\nb: [\n", "f.yaml").unwrap_err();
        assert!(e.contains("f.yaml: the document starting on line 2"), "{e}");
    }

    #[test]
    fn inputs_and_lists() {
        let docs = from_input(&json!([{"kind": "A"}, "kind: B\n---\nkind: C\n"])).unwrap();
        assert_eq!(docs.len(), 3);
        let flat = flatten(vec![
            json!({"apiVersion": "v1", "kind": "List", "items": [{"kind": "A"}, {"kind": "B"}]}),
        ]);
        assert_eq!(flat, vec![json!({"kind": "A"}), json!({"kind": "B"})]);
    }
}
