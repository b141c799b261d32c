//! Hostile input is rejected with a clear error, never a panic or a hang.

use opsbook_engine::{Code, Registry, Source, Validator};

fn check(text: &str) -> Vec<opsbook_engine::Diagnostic> {
    let mut r = Registry::new();
    opsbook_engine::builtins::register(&mut r);
    let v = Validator::new(&r);
    v.check(Source::new("t.yaml", text), None).diagnostics
}

#[test]
fn thousand_levels_of_flow_nesting_are_rejected() {
    let text = format!(
        "version: 1\nname: deep\nsteps:\n  - id: a\n    uses: set\n    with:\n      x: {}{}\n",
        "[".repeat(1000),
        "]".repeat(1000)
    );
    let d = check(&text);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].code, Code::Yaml);
    assert!(
        d[0].message.contains("deeper than 64 levels"),
        "{}",
        d[0].message
    );
}

#[test]
fn thousand_levels_of_block_nesting_are_rejected() {
    let mut text =
        String::from("version: 1\nname: deep\nsteps:\n  - id: a\n    uses: set\n    with:\n");
    for i in 0..1000 {
        text.push_str(&format!("{}k{i}:\n", " ".repeat(6 + i)));
    }
    let d = check(&text);
    assert_eq!(d[0].code, Code::Yaml);
    assert!(
        d[0].message.contains("deeper than 64 levels"),
        "{}",
        d[0].message
    );
    assert!(
        d[0].span.is_some_and(|s| s.line > 60 && s.line < 80),
        "{:?}",
        d[0].span
    );
}

#[test]
fn alias_bombs_are_rejected() {
    let mut text = String::from(
        "version: 1\nname: bomb\na0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n",
    );
    for i in 1..10 {
        let refs = vec![format!("*a{}", i - 1); 10].join(", ");
        text.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
    }
    text.push_str("steps: [{id: a, uses: set, with: {x: *a9}}]\n");
    let d = check(&text);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].code, Code::Yaml);
    assert!(d[0].message.contains("billion laughs"), "{}", d[0].message);
}

#[test]
fn modest_aliases_still_work() {
    let text = "version: 1\nname: anchors\ndefaults:\n  retry: &r {attempts: 3, delay: 1s}\nsteps:\n  - id: a\n    uses: set\n    with: {x: 1}\n    retry: *r\n";
    assert!(check(text).is_empty());
}

#[test]
fn odd_documents_get_errors_not_panics() {
    for text in [
        "", "~", "[]", "42", "\"just a string\"", "---\n---\n", "{", "version: 1\nname: x\nsteps: {}", "\t\tbad",
        "version: 1\nname: x\nsteps:\n  - 5\n  - [a]\n  - {id: 5, uses: [], needs: {a: 1}}\n",
        "version: 1\nname: x\nsteps:\n  - id: a\n    uses: set\n    when: '{{'\n    for_each: '{% for %}'\n",
        "? [complex, key]\n: value\n", "a: !!binary aGVsbG8=\n", "version: 1\nversion: 2\n",
        "version: 1\nname: x\nsteps:\n  - id: a\n    uses: set\n    with: {x: \"{{ steps[ }}\"}\n",
    ] {
        let d = check(text);
        assert!(!d.is_empty(), "accepted: {text:?}");
    }
}

/// Inputs the fuzzer once crashed on (`fuzz/`): each must now give diagnostics, not a panic.
#[test]
fn fuzz_regressions_do_not_panic() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        let mut r = Registry::new();
        opsbook_engine::builtins::register(&mut r);
        let checked = Validator::new(&r).check(Source::new("f.yaml", text.as_ref()), None);
        for d in &checked.diagnostics {
            let _ = d.pretty(&checked.source, false);
        }
        n += 1;
    }
    assert!(n > 0);
}

#[test]
fn merge_keys_count_toward_the_alias_budget() {
    let mut text =
        String::from("version: 1\nname: m\nl0: &l0 {k: [a, b, c, d, e, f, g, h, i, j]}\n");
    for n in 1..8 {
        text.push_str(&format!("m{n}: &m{n} {{<<: *l{}}}\n", n - 1));
        text.push_str(&format!(
            "l{n}: &l{n} {{k: [{}]}}\n",
            vec![format!("*m{n}"); 10].join(", ")
        ));
    }
    text.push_str("steps: [{id: a, uses: set, with: {x: *l7}}]\n");
    let d = check(&text);
    assert_eq!(d[0].code, Code::Yaml);
    assert!(d[0].message.contains("billion laughs"), "{}", d[0].message);
}

#[test]
fn huge_expressions_are_refused_before_they_reach_the_parser() {
    let nots = "not ".repeat(30_000);
    let chain = vec!["1"; 30_000].join(" ~ ");
    let text = format!("version: 1\nname: x\nsteps:\n  - id: a\n    uses: set\n    when: \"{nots}1\"\n    with: {{x: \"{{{{ {chain} }}}}\"}}\n");
    let d = check(&text);
    assert_eq!(d.len(), 2, "{d:?}");
    assert!(d
        .iter()
        .all(|d| d.code == Code::TemplateSyntax && d.message.contains("too complex")));
}

#[test]
fn unclosed_blocks_with_multibyte_text_do_not_panic() {
    let d = check("version: 1\nname: x\nsteps:\n  - id: a\n    uses: set\n    with: {x: \"{{ {'a': {'b': 1}} ~ \\\"{{\\\" }}é\"}\n");
    assert!(d.iter().all(|d| d.code != Code::Io));
}

#[test]
fn method_calls_still_check_what_they_are_called_on() {
    let d = check("version: 1\nname: x\nparams:\n  p: {type: string, default: a}\nsteps:\n  - id: a\n    uses: set\n    with: {x: \"{{ params.nope.upper() }} {{ params.get('p') }} {{ params.p.upper() }}\"}\n");
    assert_eq!(d.len(), 1, "{d:?}");
    assert!(d[0].message.contains("no param `nope`"));
}
