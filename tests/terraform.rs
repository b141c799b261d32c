//! End-to-end tests of the `terraform.*` actions with the real `terraform` CLI, offline: the
//! built-in `terraform_data` resource and the real `hashicorp/null` provider from a filesystem
//! mirror (`opsbook_testkit::terraform::Offline`). No test asserts on wall-clock time.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use opsbook_testkit::terraform::Offline;
use serde_json::Value;

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("opsbook-tf-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("infra")).unwrap();
        Dir(d)
    }
    fn path(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
    fn write(&self, p: &str, text: &str) {
        std::fs::write(self.path(p), text).unwrap();
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const MAIN_TF: &str = r#"
variable "greeting" {
  type    = string
  default = "hello"
}

resource "terraform_data" "config" {
  input = file("${path.module}/input.txt")
}

resource "null_resource" "n" {
  triggers = {
    greeting = var.greeting
  }
}

output "greeting" {
  value = var.greeting
}

output "config" {
  value = terraform_data.config.output
}

output "token" {
  value     = "tf-s3cr3t-${var.greeting}"
  sensitive = true
}
"#;

fn offline() -> Offline {
    Offline::get().unwrap_or_else(|e| panic!("cannot set up terraform offline: {e}"))
}

fn command(d: &Dir, tf: &Offline, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_opsbook"));
    cmd.args(args)
        .current_dir(&d.0)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    for (k, v) in tf.env() {
        cmd.env(k, v);
    }
    cmd
}

/// Runs `rb.yaml` (written from `runbook`) in `d`; exit code, run.json, output.
fn run(d: &Dir, tf: &Offline, runbook: &str, extra: &[&str]) -> (i32, Value, Output) {
    d.write("rb.yaml", runbook);
    let _ = std::fs::remove_dir_all(d.path("out"));
    let mut args = vec!["run", "rb.yaml", "--report-dir", "out"];
    args.extend_from_slice(extra);
    let o = command(d, tf, &args).output().expect("run opsbook");
    let report = std::fs::read_to_string(d.path("out/run.json"))
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap_or(Value::Null);
    (o.status.code().unwrap_or(-1), report, o)
}

fn step<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["steps"]
        .as_array()
        .unwrap_or_else(|| panic!("no steps in {report}"))
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("no step {id} in {report}"))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

#[test]
fn init_plan_apply_outputs_drift_and_destroy() {
    let tf = offline();
    let d = Dir::new("flow");
    d.write("infra/main.tf", MAIN_TF);
    d.write("infra/input.txt", "v1");
    let rb = r#"version: 1
name: tf
steps:
  - id: init
    uses: terraform.init
    with: {dir: infra}
  - id: validate
    uses: terraform.validate
    with: {dir: infra}
  - id: plan
    uses: terraform.plan
    with:
      dir: infra
      vars: {greeting: hi}
  - id: apply
    uses: terraform.apply
    with:
      dir: infra
      plan: "{{ steps.plan.result.plan_file }}"
  - id: again
    uses: terraform.plan
    with:
      dir: infra
      vars: {greeting: hi}
  - id: outputs
    uses: terraform.output
    with: {dir: infra}
"#;
    let (code, report, o) = run(&d, &tf, rb, &[]);
    assert_eq!(code, 0, "{}", text(&o));
    let plan = &step(&report, "plan")["result"];
    assert_eq!(plan["add"], 2, "{plan}");
    assert_eq!(plan["has_changes"], true);
    let addresses: Vec<&str> = plan["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["address"].as_str().unwrap())
        .collect();
    assert_eq!(addresses, ["null_resource.n", "terraform_data.config"]);
    assert!(Path::new(plan["plan_json"].as_str().unwrap()).is_file());
    assert_eq!(step(&report, "again")["result"]["has_changes"], false);
    let outputs = &step(&report, "outputs")["result"]["outputs"];
    assert_eq!(outputs["greeting"], "hi");
    assert_eq!(outputs["config"], "v1");
    assert_eq!(outputs["token"], "(sensitive)");
    // Terraform's log streamed into the step log.
    let log = read(&d.path("out/logs/apply.log"));
    assert!(log.contains("Apply complete!"), "{log}");
    // The sensitive output is nowhere in the run folder.
    let all = read(&d.path("out/run.json")) + &read(&d.path("out/steps.jsonl"));
    assert!(!all.contains("tf-s3cr3t"), "a sensitive output leaked");

    // A change made out of band: the file a resource reads.
    d.write("infra/input.txt", "v2");
    let rb = r#"version: 1
name: drift
steps:
  - id: refresh_only
    uses: terraform.drift
    with: {dir: infra, vars: {greeting: hi}}
  - id: drift
    uses: terraform.drift
    with: {dir: infra, mode: plan, vars: {greeting: hi}, report: drift.md}
  - id: apply_unplanned
    uses: terraform.apply
    continue_on_error: true
    with: {dir: infra}
  - id: destroy_wrong
    uses: terraform.destroy
    continue_on_error: true
    with: {dir: infra, confirm: prod}
"#;
    let (code, report, o) = run(&d, &tf, rb, &[]);
    assert_eq!(code, 0, "{}", text(&o));
    // Nothing changed outside Terraform's view of the real objects…
    assert_eq!(step(&report, "refresh_only")["result"]["has_drift"], false);
    // …but the input did: the right address and attribute, before and after.
    let drift = &step(&report, "drift")["result"];
    assert_eq!(drift["has_drift"], true, "{drift}");
    assert_eq!(
        drift["drifted"],
        serde_json::json!(["terraform_data.config"])
    );
    let attrs = &drift["drifted_resources"][0]["attributes"];
    let input = attrs
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "input")
        .unwrap_or_else(|| panic!("no `input` attribute in {attrs}"));
    assert_eq!(input["before"], "v1");
    assert_eq!(input["after"], "v2");
    let md = read(&d.path("drift.md"));
    assert!(
        md.contains("| `terraform_data.config` | update | `input` | `v1` | `v2` |"),
        "{md}"
    );
    let e = step(&report, "apply_unplanned")["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(e.contains("auto_approve"), "{e}");
    let e = step(&report, "destroy_wrong")["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(e.contains("confirm: default"), "{e}");

    // Destroy with the confirmation; the state is then empty.
    let rb = r#"version: 1
name: destroy
steps:
  - id: destroy
    uses: terraform.destroy
    with: {dir: infra, confirm: default}
  - id: left
    uses: terraform.output
    with: {dir: infra}
"#;
    let (code, report, o) = run(&d, &tf, rb, &[]);
    assert_eq!(code, 0, "{}", text(&o));
    assert_eq!(
        step(&report, "left")["result"]["outputs"],
        serde_json::json!({})
    );
}

#[test]
fn a_failing_plan_dry_run_and_workspaces() {
    let tf = offline();
    let d = Dir::new("fail");
    d.write("infra/main.tf", MAIN_TF);
    d.write("infra/input.txt", "v1");
    let rb = r#"version: 1
name: init
steps:
  - id: init
    uses: terraform.init
    with: {dir: infra}
"#;
    let (code, _, o) = run(&d, &tf, rb, &[]);
    assert_eq!(code, 0, "{}", text(&o));
    // A syntax error: the plan fails with terraform's own message.
    d.write(
        "infra/broken.tf",
        "resource \"terraform_data\" \"x\" {\n  input = \n}\n",
    );
    let rb = r#"version: 1
name: fail
steps:
  - id: plan
    uses: terraform.plan
    continue_on_error: true
    with: {dir: infra}
"#;
    let (code, report, o) = run(&d, &tf, rb, &[]);
    assert_eq!(code, 0, "{}", text(&o));
    let e = step(&report, "plan")["error"].as_str().unwrap().to_string();
    assert!(e.contains("Error:") && e.contains("broken.tf"), "{e}");
    std::fs::remove_file(d.path("infra/broken.tf")).unwrap();

    // Dry run: init and plan run, apply does not.
    let rb = r#"version: 1
name: dry
steps:
  - id: init
    uses: terraform.init
    with: {dir: infra, workspace: staging}
  - id: plan
    uses: terraform.plan
    with: {dir: infra, workspace: staging}
  - id: apply
    uses: terraform.apply
    with: {dir: infra, workspace: staging, plan: "{{ steps.plan.result.plan_file }}"}
"#;
    let (code, report, o) = run(&d, &tf, rb, &["--dry-run"]);
    assert_eq!(code, 0, "{}", text(&o));
    assert_eq!(step(&report, "plan")["result"]["add"], 2);
    assert_eq!(step(&report, "apply")["result"]["applied"], false);
    assert!(
        !d.path("infra/terraform.tfstate.d/staging/terraform.tfstate")
            .exists()
            || !read(&d.path("infra/terraform.tfstate.d/staging/terraform.tfstate"))
                .contains("terraform_data"),
        "the dry run applied"
    );
    // The workspace was created (and is what terraform now has selected on disk).
    assert_eq!(
        read(&d.path("infra/.terraform/environment")).trim(),
        "staging"
    );
    // A destroy without `workspace` must be confirmed with the workspace it would really act
    // on, not `default`.
    let rb = r#"version: 1
name: destroy
steps:
  - id: destroy
    uses: terraform.destroy
    continue_on_error: true
    with: {dir: infra, confirm: default}
"#;
    let (code, report, o) = run(&d, &tf, rb, &[]);
    assert_eq!(code, 0, "{}", text(&o));
    let e = step(&report, "destroy")["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(e.contains("confirm: staging"), "{e}");
}

/// Ctrl-C in the middle of an apply: terraform gets SIGINT, stops, and leaves no lock.
#[test]
fn cancelling_an_apply_leaves_no_stale_lock() {
    let tf = offline();
    let d = Dir::new("cancel");
    let marker = d.path("provisioner-started");
    d.write(
        "infra/main.tf",
        &format!(
            r#"
resource "terraform_data" "slow" {{
  input = "x"
  provisioner "local-exec" {{
    command = "touch {} && sleep 60"
  }}
}}
"#,
            marker.display()
        ),
    );
    let rb = r#"version: 1
name: cancel
steps:
  - id: init
    uses: terraform.init
    with: {dir: infra}
  - id: apply
    uses: terraform.apply
    with: {dir: infra, auto_approve: true}
"#;
    d.write("rb.yaml", rb);
    let mut child = command(&d, &tf, &["run", "rb.yaml", "--report-dir", "out"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !marker.exists() {
        assert!(
            Instant::now() < deadline,
            "the apply never started its provisioner"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let report: Value = serde_json::from_str(&read(&d.path("out/run.json"))).unwrap_or(Value::Null);
    assert_eq!(step(&report, "apply")["status"], "cancelled", "{report}");
    let log = read(&d.path("out/logs/apply.log"));
    assert!(log.contains("interrupted"), "{log}");
    // No lock left: the lock file is gone and a plan with no lock wait succeeds.
    assert!(
        !d.path("infra/.terraform.tfstate.lock.info").exists(),
        "stale lock file"
    );
    let plan = Command::new(opsbook_testkit::terraform::binary().unwrap())
        .args(["plan", "-input=false", "-no-color", "-lock-timeout=0s"])
        .current_dir(d.path("infra"))
        .envs(tf.env())
        .output()
        .unwrap();
    assert!(
        plan.status.success(),
        "the state is still locked: {}",
        String::from_utf8_lossy(&plan.stderr)
    );
}

/// The shipped drift runbook: plan, drift, report, Slack (skipped without a webhook).
#[test]
fn terraform_drift_runbook_reports_drift() {
    let tf = offline();
    let d = Dir::new("runbook");
    d.write("infra/main.tf", MAIN_TF);
    d.write("infra/input.txt", "v1");
    let rb = r#"version: 1
name: setup
steps:
  - id: init
    uses: terraform.init
    with: {dir: infra}
  - id: apply
    uses: terraform.apply
    with: {dir: infra, auto_approve: true}
"#;
    let (code, _, o) = run(&d, &tf, rb, &[]);
    assert_eq!(code, 0, "{}", text(&o));
    d.write("infra/input.txt", "changed by hand");
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("runbooks/terraform-drift.yaml");
    let dir_param = format!("dir={}", d.path("infra").display());
    let report_param = format!("report={}", d.path("drift.md").display());
    let mut cmd = command(
        &d,
        &tf,
        &[
            "run",
            shipped.to_str().unwrap(),
            "--report-dir",
            "out2",
            "-p",
            &dir_param,
            "-p",
            &report_param,
        ],
    );
    cmd.env_remove("SLACK_WEBHOOK_URL");
    let o = cmd.output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let report: Value = serde_json::from_str(&read(&d.path("out2/run.json"))).unwrap();
    assert_eq!(report["outputs"]["has_drift"], true, "{report}");
    assert_eq!(
        report["outputs"]["drifted"],
        serde_json::json!(["terraform_data.config"])
    );
    assert_eq!(step(&report, "notify")["status"], "skipped");
    let md = read(&d.path("drift.md"));
    assert!(md.contains("changed by hand"), "{md}");
    // With fail_on_drift, a scheduled job fails.
    let mut cmd = command(
        &d,
        &tf,
        &[
            "run",
            shipped.to_str().unwrap(),
            "--report-dir",
            "out3",
            "-p",
            &dir_param,
            "-p",
            &report_param,
            "-p",
            "fail_on_drift=true",
        ],
    );
    cmd.env_remove("SLACK_WEBHOOK_URL");
    let o = cmd.output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
}
