//! End-to-end tests of the `opsbook` binary: exit codes, output formats, help.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn opsbook(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_opsbook"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("NO_COLOR", "1")
        .output()
        .expect("run opsbook")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("opsbook-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

const GOOD: &str = "version: 1\nname: good\nparams:\n  env: {type: string, enum: [staging, prod], required: true}\n  replicas: {type: integer, default: 2, minimum: 1, maximum: 10}\nsteps:\n  - id: hello\n    uses: shell\n    with: {command: \"echo {{ params.env | shquote }}\"}\n";
const BAD: &str = "version: 1\nname: bad\nsteps:\n  - id: a\n    uses: shel\n    timout: 5s\n";

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn validate_exit_codes() {
    let d = temp_dir("exit");
    let good = write(&d, "good.yaml", GOOD);
    let bad = write(&d, "bad.yaml", BAD);
    let o = opsbook(&["validate", good.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(stdout(&o).contains("1 runbook valid"));
    let o = opsbook(&["validate", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let out = stdout(&o);
    assert!(
        out.contains("unknown action `shel`") && out.contains("did you mean `shell`?"),
        "{out}"
    );
    assert!(
        out.contains("unknown key `timout`") && out.contains("did you mean `timeout`?"),
        "{out}"
    );
    assert!(
        out.contains("bad.yaml:5:11"),
        "the snippet names file:line:column\n{out}"
    );
    let o = opsbook(&["validate", d.join("missing.yaml").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no such file"));
}

#[test]
fn validate_folders_and_formats() {
    let d = temp_dir("folders");
    write(&d, "good.yaml", GOOD);
    write(&d, "bad.yml", BAD);
    std::fs::create_dir_all(d.join("inventories")).unwrap();
    write(
        &d,
        "inventories/hosts.yaml",
        "all:\n  hosts:\n    web1: {}\n",
    );
    let o = opsbook(&["validate", d.to_str().unwrap(), "--format", "short"]);
    assert_eq!(o.status.code(), Some(2));
    let out = stdout(&o);
    assert!(
        out.lines()
            .any(|l| l.ends_with("bad.yml:5:11: error[unknown-action]: unknown action `shel`")),
        "{out}"
    );
    assert!(
        !out.contains("hosts.yaml"),
        "inventories are not runbooks\n{out}"
    );
    let text = stdout(&opsbook(&["validate", d.to_str().unwrap()]));
    assert!(
        text.contains("skipped: ") && text.contains("hosts.yaml (not a runbook"),
        "skips are said\n{text}"
    );
    let o = opsbook(&["validate", d.to_str().unwrap(), "--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json output");
    assert_eq!(v["valid"], false);
    assert_eq!(v["checked"], 2);
    assert_eq!(v["invalid"], 1);
    assert!(v["skipped"][0].as_str().unwrap().ends_with("hosts.yaml"));
    let bad = v["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["valid"] == false)
        .unwrap();
    let first = &bad["diagnostics"][0];
    assert_eq!(first["code"], "unknown-action");
    assert_eq!(first["line"], 5);
    assert_eq!(first["column"], 11);
    assert_eq!(first["help"], "did you mean `shell`?");
}

#[test]
fn validate_checks_params_when_given() {
    let d = temp_dir("params");
    let good = write(&d, "good.yaml", GOOD);
    let g = good.to_str().unwrap();
    assert_eq!(
        opsbook(&["validate", g, "-p", "env=prod"]).status.code(),
        Some(0)
    );
    let o = opsbook(&["validate", g, "-p", "replicas=3"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stdout(&o).contains("missing required param `env`"),
        "{}",
        stdout(&o)
    );
    let o = opsbook(&[
        "validate",
        g,
        "-p",
        "env=dev",
        "-p",
        "replicas=many",
        "-p",
        "replica=3",
        "--format",
        "short",
    ]);
    let out = stdout(&o);
    assert!(
        out.contains(
            "param `env`: \"dev\" is not one of the allowed values: \"staging\", \"prod\""
        ),
        "{out}"
    );
    assert!(
        out.contains("param `replicas`: expected an integer, got a string"),
        "{out}"
    );
    assert!(
        out.contains("unknown param `replica`") && out.contains("did you mean `replicas`?"),
        "{out}"
    );
    let o = opsbook(&[
        "validate",
        g,
        "-p",
        "env=prod",
        "-p",
        "replicas=11",
        "--format",
        "short",
    ]);
    assert!(
        stdout(&o).contains("above the maximum 10"),
        "{}",
        stdout(&o)
    );
    let pf = write(&d, "params.yaml", "env: staging\nreplicas: 4\n");
    assert_eq!(
        opsbook(&["validate", g, "--params-file", pf.to_str().unwrap()])
            .status
            .code(),
        Some(0)
    );
    let o = opsbook(&["validate", g, "-p", "novalue"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("expected NAME=VALUE"));
}

#[test]
fn graph_formats() {
    let d = temp_dir("graph");
    let f = write(&d, "g.yaml", "version: 1\nname: g\nsteps:\n  - {id: a, uses: set, with: {x: 1}}\n  - {id: b, uses: set, with: {x: 1}}\n  - {id: c, uses: set, needs: [], with: {x: 1}}\n  - {id: d, uses: set, needs: [b, c], with: {x: 1}}\nfinally:\n  - {id: z, uses: set, with: {x: 1}}\n");
    let f = f.to_str().unwrap();
    let text = stdout(&opsbook(&["graph", f]));
    assert!(text.contains("level 0\n    a (set)\n    c (set)\n  level 1\n    b (set)  <- a\n  level 2\n    d (set)  <- b, c"), "{text}");
    let dot = stdout(&opsbook(&["graph", f, "--format", "dot"]));
    assert!(
        dot.starts_with("digraph \"g\" {")
            && dot.contains("\"b\" -> \"d\";")
            && dot.contains("\"c\" -> \"d\";"),
        "{dot}"
    );
    let mm = stdout(&opsbook(&["graph", f, "--format", "mermaid"]));
    assert!(
        mm.starts_with("flowchart TD")
            && mm.contains("s0[\"a<br/>")
            && mm.contains("s0 --> s1")
            && mm.contains("phase_steps -.-> phase_finally"),
        "{mm}"
    );
    let bad = write(&d, "cycle.yaml", "version: 1\nname: c\nsteps:\n  - {id: a, uses: set, needs: [b]}\n  - {id: b, uses: set, needs: [a]}\n");
    let o = opsbook(&["graph", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("the steps form a cycle: a -> b -> a"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn schema_actions_and_completions() {
    let schema = stdout(&opsbook(&["schema"]));
    let on_disk = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/runbook.schema.json"),
    )
    .unwrap();
    assert!(
        schema == on_disk,
        "`opsbook schema` differs from schemas/runbook.schema.json"
    );
    let list = stdout(&opsbook(&["actions"]));
    for name in [
        "shell", "set", "sleep", "fail", "assert", "approve", "template", "runbook",
    ] {
        assert!(
            list.lines().any(|l| l.starts_with(name)),
            "{name} missing from\n{list}"
        );
    }
    let shell = stdout(&opsbook(&["actions", "shell"]));
    assert!(
        shell.contains("Inputs (with:)")
            && shell.contains("command")
            && shell.contains("exactly one of: command, args"),
        "{shell}"
    );
    assert!(
        shell.contains("Result (result.*)") && shell.contains("exit_code"),
        "{shell}"
    );
    let json: serde_json::Value =
        serde_json::from_slice(&opsbook(&["actions", "sleep", "--format", "json"]).stdout).unwrap();
    assert_eq!(json["name"], "sleep");
    assert!(json["input_schema"]["properties"]["duration"].is_object());
    let o = opsbook(&["actions", "shel"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("did you mean `shell`?"));
    for shell in ["bash", "zsh", "fish"] {
        let o = opsbook(&["completions", shell]);
        assert_eq!(o.status.code(), Some(0));
        assert!(
            stdout(&o).contains("validate"),
            "{shell} completion lacks subcommands"
        );
    }
}

#[test]
fn help_everywhere_with_examples() {
    for args in [
        vec!["--help"],
        vec!["validate", "--help"],
        vec!["graph", "--help"],
        vec!["schema", "--help"],
        vec!["actions", "--help"],
        vec!["completions", "--help"],
    ] {
        let o = opsbook(&args);
        assert_eq!(o.status.code(), Some(0));
        assert!(
            stdout(&o).contains("Examples:"),
            "{args:?} has no examples:\n{}",
            stdout(&o)
        );
    }
    let o = opsbook(&["validate"]);
    assert_eq!(o.status.code(), Some(2), "usage errors exit 2");
}
