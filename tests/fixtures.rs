//! Every valid runbook validates; every broken one reports its problems at the right place.
//! The messages are snapshot-tested (insta): review changes with `INSTA_UPDATE=always cargo test`
//! and `git diff tests/snapshots`.

use std::path::{Path, PathBuf};

use opsbook_engine::graph::RunbookGraph;
use opsbook_engine::{Registry, Source, Validator};

fn registry() -> Registry {
    let mut r = Registry::new();
    opsbook_engine::builtins::register(&mut r);
    opsbook_shell::register(&mut r);
    opsbook_ssh::register(&mut r);
    opsbook_http::register(&mut r);
    opsbook_slack::register(&mut r);
    opsbook_prometheus::register(&mut r);
    opsbook_terraform::register(&mut r);
    opsbook_aws::register(&mut r);
    opsbook_k8s::register(&mut r);
    r
}

fn yaml_files(dir: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    let mut stack = vec![root.join(dir)];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                out.push(p.strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

fn load(rel: &Path) -> Source {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)).unwrap();
    Source::new(rel, text)
}

fn is_runbook(rel: &Path) -> bool {
    // Inventories and params files live beside runbooks; they are not runbooks.
    !rel.components()
        .any(|c| c.as_os_str() == "inventories" || c.as_os_str() == "params")
}

#[test]
fn valid_runbooks_validate_and_plan() {
    let registry = registry();
    let v = Validator::new(&registry);
    let mut checked = 0;
    for dir in ["tests/fixtures/valid", "runbooks"] {
        for rel in yaml_files(dir).into_iter().filter(|p| is_runbook(p)) {
            let c = v.check(load(&rel), None);
            let shown: Vec<String> = c.diagnostics.iter().map(|d| d.short()).collect();
            assert!(
                c.is_valid(),
                "{} should be valid:\n{}",
                rel.display(),
                shown.join("\n")
            );
            let runbook = c.runbook.expect("a valid runbook has a model");
            RunbookGraph::of(&runbook).expect("a valid runbook has a graph");
            checked += 1;
        }
    }
    assert!(checked >= 5, "only {checked} valid runbooks found");
}

#[test]
fn broken_runbooks_report_each_problem_where_it_is() {
    let registry = registry();
    let v = Validator::new(&registry);
    let files = yaml_files("tests/fixtures/invalid");
    assert!(files.len() >= 20, "only {} broken runbooks", files.len());
    for rel in files {
        let source = load(&rel);
        let c = v.check(source.clone(), None);
        assert!(!c.is_valid(), "{} should be invalid", rel.display());
        let mut text = String::new();
        for d in &c.diagnostics {
            text.push_str(&d.short());
            text.push('\n');
        }
        text.push_str("\n----- with snippets -----\n");
        for d in &c.diagnostics {
            text.push_str(&d.pretty(&source, false));
            text.push('\n');
        }
        let name = rel.file_stem().unwrap().to_string_lossy().to_string();
        insta::with_settings!({snapshot_path => "snapshots/invalid", prepend_module_to_snapshot => false, omit_expression => true}, {
            insta::assert_snapshot!(name, text);
        });
    }
}
