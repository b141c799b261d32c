//! End-to-end tests of `opsbook run` with real processes: every field's semantics, failure
//! paths, cancellation and masking. No test asserts on wall-clock time; overlap is proven with
//! files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("opsbook-run-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
    fn path(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn opsbook(dir: &Dir, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_opsbook"))
        .args(args)
        .current_dir(&dir.0)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run opsbook")
}

/// Runs `rb.yaml` in `dir` with a report folder `out`; returns the exit code and run.json.
fn run(dir: &Dir, runbook: &str, extra: &[&str]) -> (i32, Value, Output) {
    dir.write("rb.yaml", runbook);
    let mut args = vec!["run", "rb.yaml", "--report-dir", "out"];
    args.extend_from_slice(extra);
    let o = opsbook(dir, &args);
    let report = std::fs::read_to_string(dir.path("out/run.json"))
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap_or(Value::Null);
    (o.status.code().unwrap_or(-1), report, o)
}

fn step<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id && s["phase"] != "rollback")
        .unwrap_or_else(|| panic!("no step {id}"))
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Starts `opsbook run rb.yaml --report-dir out` in `d` without waiting for it.
fn spawn_run(d: &Dir, stdout: Stdio, stderr: Stdio) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_opsbook"))
        .args(["run", "rb.yaml", "--report-dir", "out"])
        .current_dir(&d.0)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .unwrap()
}

/// Waits (up to 10 s) for the pid a step wrote to `pid`.
fn wait_for_pid(d: &Dir) -> Option<i32> {
    for _ in 0..500 {
        if let Some(p) = std::fs::read_to_string(d.path("pid"))
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok())
        {
            return Some(p);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Waits (up to 2 s) for a process to be gone.
fn wait_gone(pid: i32) -> bool {
    for _ in 0..100 {
        if gone(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.contains(") Z "),
    }
}

#[test]
fn retries_succeed_on_the_third_attempt_and_until_polls() {
    let d = Dir::new("retry");
    let (code, r, o) = run(
        &d,
        r#"
version: 1
name: retry
steps:
  - id: flaky
    uses: shell
    with:
      command: "n=$(cat count 2>/dev/null || echo 0); n=$((n+1)); echo $n > count; [ $n -ge 3 ]"
    retry: {attempts: 5, delay: 10ms, backoff: exponential, max_delay: 50ms, jitter: true}
  - id: poll
    uses: shell
    with:
      command: "n=$(cat polls 2>/dev/null || echo 0); n=$((n+1)); echo $n > polls; echo $n"
    retry: {attempts: 10, delay: 10ms, until: "result.stdout | trim | int >= 4"}
    outputs:
      seen: "{{ result.stdout | trim | int }}"
  - id: never
    uses: shell
    continue_on_error: true
    with: {command: "echo no"}
    retry: {attempts: 2, delay: 10ms, until: "result.stdout == 'yes'"}
"#,
        &[],
    );
    assert_eq!(code, 0, "{}", stderr(&o));
    assert_eq!(step(&r, "flaky")["attempts"], 3);
    assert_eq!(step(&r, "flaky")["status"], "succeeded");
    assert_eq!(step(&r, "poll")["attempts"], 4);
    assert_eq!(step(&r, "poll")["outputs"]["seen"], 4);
    assert_eq!(step(&r, "never")["status"], "failed");
    assert!(step(&r, "never")["error"]
        .as_str()
        .unwrap()
        .contains("`retry.until` was still false after 2 attempts"));
}

#[test]
fn timeouts_stop_the_step_and_kill_its_processes() {
    let d = Dir::new("timeout");
    let (code, r, o) = run(
        &d,
        r#"
version: 1
name: timeout
steps:
  - id: slow
    uses: shell
    timeout: 300ms
    with: {command: "sleep 30 & echo $! > pid; wait"}
  - id: after
    uses: shell
    with: {command: "echo never"}
"#,
        &[],
    );
    assert_eq!(code, 1, "{}", stderr(&o));
    assert_eq!(step(&r, "slow")["status"], "timed_out");
    assert_eq!(step(&r, "after")["status"], "skipped");
    assert_eq!(r["status"], "failed");
    let pid: i32 = std::fs::read_to_string(d.path("pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let dead = wait_gone(pid);
    assert!(dead, "sleep {pid} outlived its timed-out step");
}

#[test]
fn run_on_continue_on_error_and_exit_codes() {
    let d = Dir::new("runon");
    let (code, r, o) = run(
        &d,
        r#"
version: 1
name: run-on
steps:
  - id: soft
    uses: fail
    continue_on_error: true
    with: {message: "tolerated"}
  - id: after-soft
    uses: set
    with: {x: 1}
  - id: hard
    uses: shell
    with: {command: "echo broken >&2; exit 3"}
  - id: default
    uses: set
    with: {x: 1}
  - id: on-failure
    uses: set
    needs: [hard]
    run_on: failure
    with: {x: 1}
  - id: always
    uses: set
    needs: [hard]
    run_on: always
    with: {x: 1}
  - id: guarded
    uses: set
    needs: []
    when: false
    with: {x: 1}
"#,
        &[],
    );
    assert_eq!(code, 1, "{}", stderr(&o));
    assert_eq!(step(&r, "soft")["status"], "failed");
    assert_eq!(step(&r, "after-soft")["status"], "succeeded");
    assert_eq!(step(&r, "hard")["status"], "failed");
    assert!(step(&r, "hard")["error"]
        .as_str()
        .unwrap()
        .contains("exited with code 3: broken"));
    assert_eq!(step(&r, "default")["status"], "skipped");
    assert_eq!(step(&r, "on-failure")["status"], "succeeded");
    assert_eq!(step(&r, "always")["status"], "succeeded");
    assert_eq!(step(&r, "guarded")["status"], "skipped");
    assert!(r["error"].as_str().unwrap().contains("step `hard` failed"));
    let junit = std::fs::read_to_string(d.path("out/junit.xml")).unwrap();
    assert!(
        junit.contains("<testcase classname=\"run-on.main\" name=\"hard\""),
        "{junit}"
    );
    assert!(
        junit.contains("last lines of the log:\nbroken"),
        "failures carry the log's end:\n{junit}"
    );
    assert!(junit.contains("tests=\"7\"") && junit.contains("<skipped/>"));
    let summary = std::fs::read_to_string(d.path("out/summary.md")).unwrap();
    assert!(
        summary.contains("| `hard` | main | ❌ failed | 1 |"),
        "{summary}"
    );
}

#[test]
fn rollbacks_run_in_reverse_order_then_on_failure_and_finally() {
    let d = Dir::new("rollback");
    let (code, r, o) = run(
        &d,
        r#"
version: 1
name: rollback
steps:
  - id: one
    uses: shell
    with: {command: "echo one >> done"}
    rollback: {uses: shell, with: {command: "echo undo-one >> undone"}}
  - id: two
    uses: shell
    with: {command: "echo two >> done"}
    rollback: {uses: shell, with: {command: "echo undo-two-{{ steps.two.status }} >> undone"}}
  - id: three
    uses: shell
    with: {command: "echo three >> done"}
    rollback: {uses: shell, with: {command: "echo undo-three >> undone"}}
  - id: boom
    uses: fail
    with: {message: "deploy broke"}
on_failure:
  - id: page
    uses: shell
    with: {command: "echo paged >> undone"}
finally:
  - id: cleanup
    uses: shell
    with: {command: "echo cleanup >> undone"}
"#,
        &[],
    );
    assert_eq!(code, 1, "{}", stderr(&o));
    let undone = std::fs::read_to_string(d.path("undone")).unwrap();
    assert_eq!(
        undone,
        "undo-three\nundo-two-succeeded\nundo-one\npaged\ncleanup\n"
    );
    let phases: Vec<(String, String)> = r["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap().to_string(),
                s["phase"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(phases.contains(&("three".into(), "rollback".into())));
    assert_eq!(step(&r, "page")["status"], "succeeded");
}

#[test]
fn for_each_runs_items_concurrently_but_not_more_than_allowed() {
    let d = Dir::new("foreach");
    // Each item marks itself running, records how many run at once, and waits (up to 10 s)
    // until a second item has started: with concurrency 2 that always happens; run one at a
    // time, it never would.
    let (code, r, o) = run(
        &d,
        r#"
version: 1
name: fan-out
steps:
  - id: fan
    uses: shell
    for_each: [a, b, c, d]
    concurrency: 2
    with:
      command: |
        mkdir -p running started
        touch running/{{ item }} started/{{ item }}
        ls running | wc -l >> peaks
        i=0; while [ $(ls started | wc -l) -lt 2 ] && [ $i -lt 500 ]; do sleep 0.02; i=$((i+1)); done
        [ $(ls started | wc -l) -ge 2 ] || { echo "no second item started" >&2; exit 1; }
        rm running/{{ item }}
        echo {{ item }}-{{ index }}
    outputs:
      out: "{{ result.stdout | trim }}"
  - id: count
    uses: assert
    with:
      that: ["steps.fan.items | length == 4", "steps.fan.outputs.out == ['a-0', 'b-1', 'c-2', 'd-3']"]
"#,
        &[],
    );
    assert_eq!(code, 0, "{}", stderr(&o));
    let peaks: Vec<usize> = std::fs::read_to_string(d.path("peaks"))
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert!(
        peaks.iter().all(|&p| p <= 2),
        "more than 2 items at once: {peaks:?}"
    );
    assert_eq!(step(&r, "fan")["items"].as_array().unwrap().len(), 4);
    assert_eq!(step(&r, "fan")["items"][3]["outputs"]["out"], "d-3");
}

#[test]
fn secrets_never_reach_the_terminal_or_the_run_folder() {
    let d = Dir::new("mask");
    d.write("secret.txt", "file-secret-value\n");
    std::env::set_var("OPSBOOK_TEST_SECRET", "env-secret-value");
    let (code, _, o) = run(
        &d,
        r#"
version: 1
name: mask
secrets:
  a: {env: OPSBOOK_TEST_SECRET}
  b: {file: secret.txt}
  c: {command: "echo cmd-secret-value"}
steps:
  - id: leak
    uses: shell
    with:
      command: "echo a={{ secrets.a }} b={{ secrets.b }}; echo c={{ secrets.c }} >&2"
    outputs:
      copy: "prefix-{{ secrets.a }}-suffix"
  - id: fail-with-it
    uses: fail
    with: {message: "bad {{ secrets.b }} and {{ secrets.c }}"}
outputs:
  a: "{{ steps.leak.outputs.copy }}"
"#,
        &["--json"],
    );
    assert_eq!(code, 1);
    let mut seen = String::from_utf8_lossy(&o.stdout).into_owned() + &stderr(&o);
    let mut stack = vec![d.path("out")];
    while let Some(p) = stack.pop() {
        for e in std::fs::read_dir(&p).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                seen.push_str(&std::fs::read_to_string(&p).unwrap());
            }
        }
    }
    assert!(
        seen.contains("a=*** b=***"),
        "the masked line is there:\n{seen}"
    );
    for secret in ["env-secret-value", "file-secret-value", "cmd-secret-value"] {
        assert!(!seen.contains(secret), "{secret} leaked");
    }
}

#[test]
fn dry_run_changes_nothing() {
    let d = Dir::new("dry");
    let (code, r, o) = run(
        &d,
        r#"
version: 1
name: dry
steps:
  - id: touch
    uses: shell
    with: {command: "touch created"}
  - id: write
    uses: template
    with: {template: "hello", dest: written.txt}
"#,
        &["--dry-run"],
    );
    assert_eq!(code, 0, "{}", stderr(&o));
    assert_eq!(r["dry_run"], true);
    assert!(!d.path("created").exists() && !d.path("written.txt").exists());
    assert_eq!(step(&r, "touch")["result"]["would_run"], "touch created");
    assert!(stderr(&o).contains("would run: touch created"));
}

#[test]
fn approvals_params_and_invalid_runbooks() {
    let d = Dir::new("approve");
    let rb = r#"
version: 1
name: approve
params:
  env: {type: string, enum: [staging, prod], required: true}
steps:
  - id: confirm
    uses: approve
    with: {message: "Deploy to {{ params.env }}?"}
  - id: deploy
    uses: template
    with: {template: "deployed {{ params.env }}", dest: deployed.txt}
"#;
    let (code, _, o) = run(&d, rb, &[]);
    assert_eq!(code, 2, "a missing required param is a usage error");
    assert!(stderr(&o).contains("missing required param `env`"));
    let (code, r, _) = run(&d, rb, &["-p", "env=prod"]);
    assert_eq!(code, 1);
    assert!(step(&r, "confirm")["error"]
        .as_str()
        .unwrap()
        .contains("--approve confirm"));
    let (code, r, _) = run(&d, rb, &["-p", "env=prod", "--approve", "confirm"]);
    assert_eq!(code, 0);
    assert_eq!(
        step(&r, "confirm")["result"]["approved_by"],
        "--approve confirm"
    );
    assert_eq!(
        std::fs::read_to_string(d.path("deployed.txt")).unwrap(),
        "deployed prod"
    );
    let (code, _, o) = run(
        &d,
        "version: 1\nname: bad\nsteps:\n  - id: a\n    uses: shel\n",
        &[],
    );
    assert_eq!(code, 2);
    assert!(stderr(&o).contains("unknown action `shel`"));
}

#[test]
fn ctrl_c_cancels_kills_children_runs_finally_and_exits_130() {
    let d = Dir::new("cancel");
    d.write(
        "rb.yaml",
        r#"
version: 1
name: cancel
steps:
  - id: long
    uses: shell
    with: {command: "sleep 60 & echo $! > pid; wait"}
finally:
  - id: cleanup
    uses: shell
    with: {command: "touch cleaned"}
"#,
    );
    let child = spawn_run(&d, Stdio::piped(), Stdio::piped());
    let pid = wait_for_pid(&d).expect("the step started its sleep");
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dead = wait_gone(pid);
    assert!(dead, "the step's child {pid} survived Ctrl-C");
    assert!(d.path("cleaned").exists(), "`finally` ran");
    let r: Value =
        serde_json::from_str(&std::fs::read_to_string(d.path("out/run.json")).unwrap()).unwrap();
    assert_eq!(r["status"], "cancelled");
    assert_eq!(step(&r, "long")["status"], "cancelled");
    assert_eq!(step(&r, "cleanup")["status"], "succeeded");
}

/// The shipped `runbooks/http-health.yaml` against a real HTTP server on loopback (Python's
/// `http.server`): healthy at once, so no restart.
#[test]
fn http_health_runbook_against_a_real_server() {
    let d = Dir::new("http");
    std::fs::create_dir_all(d.path("www")).unwrap();
    d.write("www/healthz", "ok");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let mut server = Command::new("python3")
        .args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--directory",
        ])
        .arg(d.path("www"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 -m http.server");
    let mut up = false;
    for _ in 0..250 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            up = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let runbook = Path::new(env!("CARGO_MANIFEST_DIR")).join("runbooks/http-health.yaml");
    let url = format!("url=http://127.0.0.1:{port}/healthz");
    let o = opsbook(
        &d,
        &[
            "run",
            runbook.to_str().unwrap(),
            "-p",
            &url,
            "--report-dir",
            "out",
        ],
    );
    let _ = server.kill();
    let _ = server.wait();
    assert!(up, "the test server did not start");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let r: Value =
        serde_json::from_str(&std::fs::read_to_string(d.path("out/run.json")).unwrap()).unwrap();
    assert_eq!(step(&r, "probe")["outputs"]["code"], "200");
    assert_eq!(step(&r, "restart")["status"], "skipped");
    assert_eq!(r["outputs"]["first_code"], "200");
}

/// `kill -9` in the middle of a run, then `opsbook resume`: the step that had succeeded does not
/// run again (its side effect is counted), the rest runs.
#[test]
fn resume_after_kill_9_does_not_repeat_succeeded_steps() {
    let d = Dir::new("resume");
    d.write(
        "rb.yaml",
        r#"
version: 1
name: resume
steps:
  - id: first
    uses: shell
    with: {command: "echo ran >> first-count"}
    outputs:
      said: "{{ 'first done' }}"
  - id: second
    uses: shell
    with: {command: "if [ -f go ]; then echo ok; else sleep 60 & echo $! > pid; wait; fi"}
  - id: third
    uses: shell
    with: {command: "echo {{ steps.first.outputs.said | shquote }} > third-saw"}
"#,
    );
    let mut child = spawn_run(&d, Stdio::null(), Stdio::null());
    let sleeper = wait_for_pid(&d).expect("the second step started");
    Command::new("kill")
        .args(["-9", &child.id().to_string()])
        .status()
        .unwrap();
    let _ = child.wait();
    // The orphaned sleep of the killed run.
    let _ = Command::new("kill")
        .args(["-9", &sleeper.to_string()])
        .status();
    d.write("go", "");
    let o = opsbook(&d, &["resume", "out"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(d.path("first-count")).unwrap(),
        "ran\n",
        "`first` ran once"
    );
    assert_eq!(
        std::fs::read_to_string(d.path("third-saw")).unwrap().trim(),
        "first done"
    );
    let r: Value =
        serde_json::from_str(&std::fs::read_to_string(d.path("out/run.json")).unwrap()).unwrap();
    assert_eq!(r["status"], "succeeded");
    assert_eq!(step(&r, "second")["status"], "succeeded");
    let o = opsbook(&d, &["runs", "show", "out"]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("| `second` | main | ✅ succeeded |"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let o = opsbook(&d, &["resume", "out"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("already succeeded"));
}

fn shipped(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("runbooks")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn system_report_runbook_writes_its_report() {
    let d = Dir::new("sysreport");
    let out = d.path("report.md").display().to_string();
    let o = opsbook(
        &d,
        &[
            "run",
            &shipped("system-report.yaml"),
            "-p",
            &format!("out={out}"),
            "--report-dir",
            "out",
            "--json",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let report = std::fs::read_to_string(&out).unwrap();
    assert!(
        report.starts_with("# System report")
            && report.contains("| disk / |")
            && report.contains("| up for |"),
        "{report}"
    );
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(r["outputs"]["highest_disk_pct"]
        .as_i64()
        .is_some_and(|p| (0..=100).contains(&p)));
}

#[test]
fn log_rotation_runbook_compresses_old_logs_and_keeps_new_ones() {
    let d = Dir::new("logrot");
    let logs = d.path("logs");
    std::fs::create_dir_all(&logs).unwrap();
    std::fs::write(logs.join("old.log"), "old\n").unwrap();
    std::fs::write(logs.join("new.log"), "new\n").unwrap();
    let status = Command::new("touch")
        .args(["-d", "3 days ago"])
        .arg(logs.join("old.log"))
        .status()
        .unwrap();
    assert!(status.success());
    let dir = format!("dir={}", logs.display());
    let o = opsbook(
        &d,
        &[
            "run",
            &shipped("log-rotation.yaml"),
            "-p",
            &dir,
            "--dry-run",
            "--report-dir",
            "dry",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        logs.join("old.log").exists(),
        "a dry run compresses nothing"
    );
    let o = opsbook(
        &d,
        &[
            "run",
            &shipped("log-rotation.yaml"),
            "-p",
            &dir,
            "--report-dir",
            "out",
            "--json",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(logs.join("old.log.gz").exists() && !logs.join("old.log").exists());
    assert!(logs.join("new.log").exists());
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["outputs"]["compressed"], 1);
}

#[test]
fn nested_runbooks_run_as_a_step_with_their_steps_in_the_result() {
    let d = Dir::new("nested");
    d.write(
        "child.yaml",
        r#"
version: 1
name: child
params:
  who: {type: string, required: true}
steps:
  - id: hello
    uses: shell
    with: {command: "echo hello {{ params.who }}"}
    outputs:
      line: "{{ result.stdout | trim }}"
outputs:
  greeting: "{{ steps.hello.outputs.line }}"
"#,
    );
    d.write("loop.yaml", "version: 1\nname: loop\nsteps:\n  - id: again\n    uses: runbook\n    with: {path: loop.yaml}\n");
    let (code, r, o) = run(
        &d,
        r#"
version: 1
name: parent
steps:
  - id: call
    uses: runbook
    with: {path: child.yaml, params: {who: nested}}
  - id: check
    uses: assert
    with:
      that: ["steps.call.result.outputs.greeting == 'hello nested'", "steps.call.result.steps[0].id == 'hello'"]
  - id: forever
    uses: runbook
    continue_on_error: true
    with: {path: loop.yaml}
"#,
        &[],
    );
    assert_eq!(code, 0, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("call | hello | hello nested"),
        "nested output reaches the log:\n{}",
        stderr(&o)
    );
    assert_eq!(
        step(&r, "call")["result"]["steps"][0]["status"],
        "succeeded"
    );
    assert!(
        step(&r, "forever")["error"]
            .as_str()
            .unwrap()
            .contains("nest deeper than 8 levels"),
        "{}",
        step(&r, "forever")["error"]
    );
}

#[test]
fn vars_env_defaults_and_the_run_timeout() {
    let d = Dir::new("vars");
    let (code, r, o) = run(
        &d,
        r#"
version: 1
name: vars-env
params:
  name: {type: string, default: web}
vars:
  base: "/srv/{{ params.name }}"
  full: "{{ vars.base }}/current"
env:
  APP_HOME: "{{ vars.full }}"
  PORT: 8080
defaults:
  retry: {attempts: 2, delay: 10ms}
  continue_on_error: true
concurrency: 1
timeout: 1s
steps:
  - id: show
    uses: shell
    env: {EXTRA: "x-{{ params.name }}"}
    with: {command: "echo $APP_HOME $PORT $EXTRA"}
    outputs:
      line: "{{ result.stdout | trim }}"
  - id: flaky
    uses: shell
    with: {command: "n=$(cat n 2>/dev/null || echo 0); echo $((n+1)) > n; exit 1"}
  - id: slow
    uses: shell
    continue_on_error: false
    retry: {attempts: 1}
    with: {command: "sleep 30"}
finally:
  - id: after
    uses: shell
    with: {command: "echo {{ steps.show.outputs.line | shquote }} > seen"}
"#,
        &[],
    );
    assert_eq!(code, 1, "{}", stderr(&o));
    assert_eq!(
        step(&r, "show")["outputs"]["line"],
        "/srv/web/current 8080 x-web"
    );
    assert_eq!(step(&r, "flaky")["attempts"], 2, "defaults.retry applies");
    assert_eq!(step(&r, "flaky")["status"], "failed");
    assert_eq!(step(&r, "slow")["status"], "timed_out");
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .contains("the run timed out after 1s"),
        "{}",
        r["error"]
    );
    assert_eq!(
        std::fs::read_to_string(d.path("seen")).unwrap().trim(),
        "/srv/web/current 8080 x-web"
    );
}
