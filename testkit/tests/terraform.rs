//! Checks the offline Terraform setup end to end: with nothing but [`Offline::env`] in its
//! environment, terraform installs the real `hashicorp/null` provider from the mirror, plans
//! and applies `terraform_data` and `null_resource`, and detects a change to a file that an
//! input reads. Needs terraform, and for a first build of the mirror python3, pip and PyPI.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use opsbook_testkit::terraform::{self, Offline};

const MAIN_TF: &str = r#"
resource "terraform_data" "input" {
  input = file("${path.module}/input.txt")
}

resource "null_resource" "follower" {
  triggers = {
    input = terraform_data.input.output
  }
}

output "input" {
  value = terraform_data.input.output
}
"#;

/// Runs `terraform args...` in `dir` with only `offline.env()` as its environment: the exit
/// code and stdout + stderr.
fn tf(offline: &Offline, dir: &Path, args: &[&str]) -> (i32, String) {
    let binary = terraform::binary().unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(&binary)
        .args(args)
        .current_dir(dir)
        .env_clear()
        .envs(offline.env())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let code = out.status.code().unwrap_or(-1);
    (code, text)
}

/// Runs terraform and asserts its exit code.
fn tf_expect(offline: &Offline, dir: &Path, args: &[&str], code: i32) -> String {
    let (got, text) = tf(offline, dir, args);
    assert_eq!(
        got, code,
        "terraform {args:?} exited {got}, not {code}:\n{text}"
    );
    text
}

/// The `change.actions` of resource `address` in the saved plan `plan`.
fn actions(offline: &Offline, dir: &Path, plan: &str, address: &str) -> Vec<String> {
    let json = tf_expect(offline, dir, &["show", "-json", "-no-color", plan], 0);
    let plan: serde_json::Value = serde_json::from_str(&json)
        .unwrap_or_else(|e| panic!("terraform show -json is not JSON ({e}): {json}"));
    let change = plan["resource_changes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["address"] == address)
        .unwrap_or_else(|| panic!("no resource change for {address} in {json}"));
    change["change"]["actions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| a.as_str().unwrap_or("?").to_string())
        .collect()
}

#[test]
fn offline_terraform_plans_and_applies_with_the_null_provider() {
    let started = Instant::now();
    let offline = Offline::get().unwrap_or_else(|e| panic!("{e}"));
    println!("Offline::get (first) took {:?}", started.elapsed());
    let started = Instant::now();
    let again = Offline::get().unwrap_or_else(|e| panic!("{e}"));
    let cached = started.elapsed();
    println!("Offline::get (cached) took {cached:?}");
    assert_eq!(again, offline);
    assert!(
        cached < Duration::from_secs(1),
        "cached get took {cached:?}"
    );
    assert!(offline.cli_config().is_file());
    let config = fs::read_to_string(offline.cli_config()).unwrap();
    assert!(
        config.contains(&offline.mirror().display().to_string()),
        "{config}"
    );
    assert!(!config.contains("plugin_cache_dir"), "{config}");

    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    fs::write(work.join("main.tf"), MAIN_TF).unwrap();
    fs::write(work.join("input.txt"), "first\n").unwrap();

    let started = Instant::now();
    let init = tf_expect(&offline, work, &["init", "-input=false", "-no-color"], 0);
    let init_time = started.elapsed();
    assert!(
        init.contains("Installed hashicorp/null v2.1.2"),
        "init did not install null 2.1.2 from the mirror:\n{init}"
    );
    assert!(
        !init.contains("problems with the CLI configuration"),
        "terraform complained about the CLI config:\n{init}"
    );

    let started = Instant::now();
    let plan_args = [
        "plan",
        "-out=p",
        "-input=false",
        "-detailed-exitcode",
        "-no-color",
    ];
    tf_expect(&offline, work, &plan_args, 2);
    println!(
        "terraform init took {init_time:?}, the first plan {:?}",
        started.elapsed()
    );
    assert_eq!(
        actions(&offline, work, "p", "terraform_data.input"),
        ["create"]
    );
    assert_eq!(
        actions(&offline, work, "p", "null_resource.follower"),
        ["create"]
    );

    tf_expect(
        &offline,
        work,
        &["apply", "-input=false", "-no-color", "p"],
        0,
    );
    let output = tf_expect(&offline, work, &["output", "-json", "input"], 0);
    assert_eq!(output.trim(), r#""first\n""#);

    tf_expect(&offline, work, &plan_args, 0);

    fs::write(work.join("input.txt"), "second\n").unwrap();
    tf_expect(&offline, work, &plan_args, 2);
    assert_eq!(
        actions(&offline, work, "p", "terraform_data.input"),
        ["update"]
    );
    assert_eq!(
        actions(&offline, work, "p", "null_resource.follower"),
        ["delete", "create"]
    );
}
