//! The `shell` action against real processes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use opsbook_engine::action::{Action, ErrorKind, LogSink, LogStream, StepContext};
use opsbook_shell::Shell;
use serde_json::json;

#[derive(Default)]
struct Lines(Mutex<Vec<(LogStream, String)>>);

impl LogSink for Lines {
    fn line(&self, stream: LogStream, line: &str) {
        self.0.lock().unwrap().push((stream, line.to_string()));
    }
}

fn cx() -> (StepContext, Arc<Lines>) {
    let lines = Arc::new(Lines::default());
    let mut cx = StepContext::detached("t");
    cx.log = lines.clone();
    (cx, lines)
}

#[tokio::test]
async fn runs_a_command_and_captures_output() {
    let (cx, lines) = cx();
    let out = Shell
        .run(
            json!({"command": "echo out; echo err >&2; echo two", "env": {"X": "1"}}),
            &cx,
        )
        .await
        .unwrap();
    assert_eq!(out["stdout"], "out\ntwo\n");
    assert_eq!(out["stderr"], "err\n");
    assert_eq!(out["exit_code"], 0);
    let logged = lines.0.lock().unwrap().clone();
    assert!(logged.contains(&(LogStream::Stdout, "out".into())));
    assert!(logged.contains(&(LogStream::Stderr, "err".into())));
}

#[tokio::test]
async fn args_are_never_split_or_expanded() {
    let (cx, _) = cx();
    let out = Shell
        .run(
            json!({"args": ["printf", "%s|", "a b", "$(echo pwned)", "*"]}),
            &cx,
        )
        .await
        .unwrap();
    assert_eq!(out["stdout"], "a b|$(echo pwned)|*|");
}

#[tokio::test]
async fn exit_codes_stdin_env_and_json() {
    let (cx, _) = cx();
    let err = Shell
        .run(json!({"command": "echo boom >&2; exit 3"}), &cx)
        .await
        .unwrap_err();
    assert!(
        err.message.contains("exited with code 3: boom"),
        "{}",
        err.message
    );
    assert_eq!(err.details["exit_code"], 3);
    let ok = Shell
        .run(json!({"command": "exit 3", "expect_exit": [0, 3]}), &cx)
        .await
        .unwrap();
    assert_eq!(ok["exit_code"], 3);
    let out = Shell
        .run(json!({"command": "cat", "stdin": "fed"}), &cx)
        .await
        .unwrap();
    assert_eq!(out["stdout"], "fed");
    let out = Shell
        .run(
            json!({"command": "printf %s \"$GREETING\"", "env": {"GREETING": "hi"}}),
            &cx,
        )
        .await
        .unwrap();
    assert_eq!(out["stdout"], "hi");
    let out = Shell
        .run(
            json!({"command": "echo '{\"a\": [1, 2]}'", "parse": "json"}),
            &cx,
        )
        .await
        .unwrap();
    assert_eq!(out["json"], json!({"a": [1, 2]}));
    let err = Shell
        .run(json!({"command": "echo nope", "parse": "json"}), &cx)
        .await
        .unwrap_err();
    assert!(err.message.contains("not JSON"));
}

#[tokio::test]
async fn output_is_capped_but_logged_whole() {
    let (cx, lines) = cx();
    let out = Shell
        .run(json!({"command": "seq 1 1000", "max_output": 10}), &cx)
        .await
        .unwrap();
    assert!(out["stdout"]
        .as_str()
        .unwrap()
        .starts_with("1\n2\n3\n4\n5\n"));
    assert!(out["stdout"].as_str().unwrap().contains("truncated"));
    assert_eq!(lines.0.lock().unwrap().len(), 1000);
}

#[tokio::test]
async fn dry_run_runs_nothing() {
    let (mut cx, _) = cx();
    cx.dry_run = true;
    let dir = std::env::temp_dir().join(format!("opsbook-dry-{}", std::process::id()));
    let cmd = format!("touch {}", dir.display());
    let out = Shell.run(json!({"command": cmd}), &cx).await.unwrap();
    assert_eq!(out["would_run"], cmd);
    assert!(!dir.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_kills_the_whole_process_group() {
    let (cx, _) = cx();
    let marker = std::env::temp_dir().join(format!("opsbook-cancel-{}.pid", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    // The shell starts a grandchild (sleep) and records its pid.
    let cmd = format!("sleep 300 & echo $! > {}; wait", marker.display());
    let cancel = cx.cancel.clone();
    let task = tokio::spawn({
        let cx = cx.clone();
        async move { Shell.run(json!({"command": cmd}), &cx).await }
    });
    let mut pid = None;
    for _ in 0..200 {
        if let Ok(text) = std::fs::read_to_string(&marker) {
            if let Ok(p) = text.trim().parse::<i32>() {
                pid = Some(p);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let pid = pid.expect("the grandchild started");
    cancel.cancel();
    let err = task.await.unwrap().unwrap_err();
    assert_eq!(err.kind, ErrorKind::Cancelled);
    let mut gone = false;
    for _ in 0..200 {
        // kill(pid, 0) fails once the process is gone (and reaped by init).
        let alive = unsafe { libc::kill(pid, 0) } == 0
            && std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| !s.contains(") Z "))
                .unwrap_or(false);
        if !alive {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let _ = std::fs::remove_file(&marker);
    assert!(gone, "the grandchild {pid} survived cancellation");
}

#[tokio::test]
async fn a_huge_line_is_logged_in_parts_with_bounded_memory() {
    let (cx, lines) = cx();
    let out = Shell
        .run(
            json!({"command": "head -c 300000 /dev/zero | tr '\\0' x", "max_output": 16}),
            &cx,
        )
        .await
        .unwrap();
    assert!(out["stdout"]
        .as_str()
        .unwrap()
        .starts_with("xxxxxxxxxxxxxxxx\n[… output truncated"));
    let logged = lines.0.lock().unwrap();
    assert_eq!(logged.iter().map(|(_, l)| l.len()).sum::<usize>(), 300_000);
    assert!(
        logged.iter().all(|(_, l)| l.len() <= 64 * 1024),
        "parts are bounded"
    );
}
