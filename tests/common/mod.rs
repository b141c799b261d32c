//! Helpers shared by the end-to-end tests: a scratch folder, running the `opsbook` binary on a
//! runbook, and reading its run report. (Each test file is its own crate; not every one uses
//! every helper.)
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

/// A scratch folder under the system temp dir, removed on drop.
pub struct Dir(pub PathBuf);

impl Dir {
    /// A fresh, empty folder named after the test and this process.
    pub fn new(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("opsbook-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("create the test folder");
        Dir(d)
    }

    /// A path inside the folder.
    pub fn path(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }

    /// Writes a file (and its parent folders) inside the folder; its path.
    pub fn write(&self, p: &str, text: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path(p);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create parent folders");
        }
        std::fs::write(&path, text).expect("write a test file");
        path
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `opsbook` (the binary under test) in `dir`, stdin closed.
pub fn opsbook(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_opsbook"));
    cmd.current_dir(dir).stdin(Stdio::null());
    cmd
}

/// Writes `runbook` to `rb.yaml` in the folder, runs it with `--report-dir out` and `extra`
/// arguments after `setup` has adjusted the command (environment …); the exit code, the
/// report (`out/run.json`, `null` if none) and the output.
pub fn run_with(
    d: &Dir,
    runbook: &str,
    extra: &[&str],
    setup: impl FnOnce(&mut Command),
) -> (i32, Value, Output) {
    std::fs::write(d.path("rb.yaml"), runbook).expect("write the runbook");
    run_file(d, &d.path("rb.yaml"), extra, setup)
}

/// Runs the runbook file `file` (for shipped runbooks) like [`run_with`].
pub fn run_file(
    d: &Dir,
    file: &Path,
    extra: &[&str],
    setup: impl FnOnce(&mut Command),
) -> (i32, Value, Output) {
    let _ = std::fs::remove_dir_all(d.path("out"));
    let mut cmd = opsbook(&d.0);
    cmd.arg("run")
        .arg(file)
        .args(["--report-dir", "out"])
        .args(extra);
    setup(&mut cmd);
    let o = cmd.output().expect("run opsbook");
    (o.status.code().unwrap_or(-1), report(d), o)
}

/// The run report `out/run.json` of the last run in the folder, `null` if none.
pub fn report(d: &Dir) -> Value {
    std::fs::read_to_string(d.path("out/run.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null)
}

/// A step of a run report by id (panics, showing the report, when missing).
pub fn step<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["steps"]
        .as_array()
        .unwrap_or_else(|| panic!("no steps in {report}"))
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("no step {id} in {report}"))
}

/// Everything the process printed, stdout then stderr.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Every file of the run folder `out/`, concatenated (to grep for leaks).
pub fn run_folder(d: &Dir) -> String {
    let mut out = String::new();
    let mut stack = vec![d.path("out")];
    while let Some(p) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&p) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                out.push_str(&String::from_utf8_lossy(&bytes));
            }
        }
    }
    out
}

/// A shipped runbook of `runbooks/`.
pub fn shipped(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("runbooks")
        .join(name)
}

/// Runs a Python snippet with boto3 against a moto server (fixtures and checks of AWS tests);
/// its trimmed stdout. Panics with Python's stderr when the snippet fails.
pub fn boto3(moto: &opsbook_testkit::moto::Moto, code: &str) -> String {
    let mut cmd = Command::new("python3");
    cmd.args(["-c", code]);
    moto.apply_env(&mut cmd);
    let o = cmd.output().expect("run python3");
    assert!(
        o.status.success(),
        "boto3 snippet failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// Runs a runbook text against moto (its endpoint and fake credentials in the environment).
pub fn run_moto(
    d: &Dir,
    moto: &opsbook_testkit::moto::Moto,
    runbook: &str,
    extra: &[&str],
) -> (i32, Value, Output) {
    run_with(d, runbook, extra, |cmd| {
        moto.apply_env(cmd);
    })
}
