//! End-to-end tests of the `aws.ssm.*` actions, the `aws_secretsmanager` / `aws_ssm` secret
//! sources and the shipped `ssm-command.yaml`, through the `opsbook` binary against the moto
//! server (`opsbook_testkit::moto`).
//!
//! What moto (5.x) simplifies, read from `moto/ssm/models.py` and `responses.py`:
//! - SendCommand runs nothing. Every invocation is created at once with `Status: Success`,
//!   `StatusDetails: Success`, `ResponseCode: 0`, empty `StandardOutputContent` and
//!   `StandardErrorContent`, plugin `aws:runShellScript`, `ExecutionElapsedTime: PT5M`
//!   (hard-coded), and the command itself is `Success` at once. So `wait` returns on the first
//!   poll, and the failure path of invocations (Failed, TimedOut, Undeliverable …) cannot be
//!   reached here.
//! - SendCommand checks neither the document nor the instance ids (any name, any id is
//!   accepted); tag targets are resolved against moto's EC2 at send time and moto lists the
//!   resolved ids in the command's `InstanceIds` (real SSM leaves it empty for targets). A
//!   command sent to `InstanceIds` (no `Targets`) lands on every instance moto's EC2 knows:
//!   moto turns the empty target list into an EC2 filter with no criteria.
//! - ListCommandInvocations and CancelCommand are not implemented (a bare HTTP 500): the action
//!   then reads each instance with GetCommandInvocation (real AWS takes the
//!   ListCommandInvocations path), and a cancel could not be tested.
//! - AWS-owned documents (`AWS-RunShellScript` …) do not exist in moto: the tests create a
//!   document of that name (real AWS forbids the `AWS-` prefix for your own) so that the dry
//!   run's DescribeDocument finds it.
//! - SecureString values are not really encrypted (without decryption moto returns
//!   `kms:alias/aws/ssm:VALUE`).

mod common;
use common::*;

use opsbook_testkit::moto::Moto;
use serde_json::Value;

/// Creates the `AWS-RunShellScript` document moto lacks, and instances: `web` ×2 and `db` ×1
/// (tag `Role`); their ids in that order.
fn fixtures(moto: &Moto) -> Vec<String> {
    let out = boto3(
        moto,
        r#"
import boto3, json
ssm = boto3.client("ssm")
ssm.create_document(Name="AWS-RunShellScript", DocumentType="Command", Content=json.dumps({
    "schemaVersion": "2.2", "description": "Run a shell script.",
    "parameters": {
        "commands": {"type": "StringList", "description": "commands"},
        "workingDirectory": {"type": "String", "default": "", "description": "dir"},
        "executionTimeout": {"type": "String", "default": "3600", "description": "secs"}},
    "mainSteps": [{"action": "aws:runShellScript", "name": "runShellScript",
        "inputs": {"runCommand": "{{ commands }}"}}]}))
ec2 = boto3.client("ec2")
def run(role, name):
    r = ec2.run_instances(ImageId="ami-12345678", MinCount=1, MaxCount=1, InstanceType="t3.micro",
        TagSpecifications=[{"ResourceType": "instance", "Tags": [
            {"Key": "Role", "Value": role}, {"Key": "Name", "Value": name}]}])
    return r["Instances"][0]["InstanceId"]
print(run("web", "web-1"), run("web", "web-2"), run("db", "db-1"))
"#,
    );
    out.split_whitespace().map(str::to_string).collect()
}

fn commands(moto: &Moto) -> Value {
    serde_json::from_str(&boto3(
        moto,
        r#"
import boto3, json
cs = boto3.client("ssm").list_commands()["Commands"]
print(json.dumps([{"id": c["CommandId"], "document": c["DocumentName"], "parameters": c["Parameters"],
    "targets": c["Targets"], "instance_ids": sorted(c["InstanceIds"]), "comment": c["Comment"],
    "max_concurrency": c["MaxConcurrency"], "max_errors": c["MaxErrors"]} for c in cs]))
"#,
    ))
    .unwrap()
}

fn sorted(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect();
    out.sort();
    out
}

#[test]
fn send_command_by_ids_and_tags_waits_and_reports_each_instance() {
    let moto = Moto::start().unwrap_or_else(|e| panic!("{e}"));
    let d = Dir::new("ssm-send");
    let ids = fixtures(&moto);
    let (web1, web2, db1) = (&ids[0], &ids[1], &ids[2]);
    let rb = format!(
        r#"version: 1
name: ssm
steps:
  - id: by_ids
    uses: aws.ssm.send_command
    with:
      instance_ids: [{web1}, {db1}]
      commands: ["echo hello", "uptime"]
      comment: by ids
      timeout: 90s
      poll_interval: 50ms
      wait_timeout: 20s
  - id: by_tags
    uses: aws.ssm.send_command
    with:
      tags: {{Role: web}}
      commands: uptime
      max_concurrency: 50%
      max_errors: 1
      poll_interval: 50ms
      wait_timeout: 20s
  - id: nowait
    uses: aws.ssm.send_command
    with:
      instance_ids: [{db1}]
      document: AWS-RunShellScript
      parameters: {{commands: [df -h], workingDirectory: /tmp}}
      wait: false
  - id: nothing
    uses: aws.ssm.send_command
    with:
      tags: {{Role: none}}
      commands: uptime
      poll_interval: 50ms
      wait_timeout: 20s
  - id: both
    uses: aws.ssm.send_command
    continue_on_error: true
    with:
      tags: {{Role: web}}
      instance_ids: [{db1}]
      commands: uptime
"#
    );
    let (code, report, o) = run_moto(&d, &moto, &rb, &[]);
    assert_eq!(code, 0, "{}", text(&o));

    let by_ids = &step(&report, "by_ids")["result"];
    // Moto resolves a command's (empty) `Targets` as an EC2 filter with no criteria, so a command
    // sent to `InstanceIds` lands on every instance it knows: all three here, not two.
    assert_eq!(by_ids["count"], 3, "{by_ids}");
    assert_eq!(
        sorted(&by_ids["ids"]),
        sorted(&serde_json::json!([web1, web2, db1]))
    );
    assert_eq!(by_ids["status"], "Success");
    assert_eq!(by_ids["document"], "AWS-RunShellScript");
    for i in by_ids["instances"].as_array().unwrap() {
        assert_eq!(i["status"], "Success", "{i}");
        assert_eq!(i["outcome"], "succeeded", "{i}");
        assert_eq!(i["exit_code"], 0, "{i}");
        assert_eq!(i["stdout"], "", "{i}");
        assert_eq!(i["elapsed"], "PT5M", "{i}");
        assert_eq!(i["duration_ms"], 300_000, "{i}");
        assert!(i["started_at"].is_string(), "{i}");
    }
    assert_eq!(by_ids["totals"]["succeeded"], 3);
    assert_eq!(by_ids["totals"]["failed"], 0);
    assert_eq!(by_ids["statuses"][web1.as_str()], "Success");
    assert_eq!(by_ids["failed_ids"], serde_json::json!([]));
    // One JUnit case per instance.
    let cases = step(&report, "by_ids")["cases"].as_array().unwrap();
    let mut names: Vec<&str> = cases.iter().map(|c| c["name"].as_str().unwrap()).collect();
    names.sort();
    let mut want = vec![web1.as_str(), web2.as_str(), db1.as_str()];
    want.sort();
    assert_eq!(names, want);
    assert!(
        cases.iter().all(|c| c["status"] == "succeeded"),
        "{cases:?}"
    );
    let junit = std::fs::read_to_string(d.path("out/junit.xml")).unwrap();
    assert!(
        junit.contains(&format!("name=\"by_ids[{web1}]\"")),
        "{junit}"
    );
    // Each instance's closing line, prefixed with its id, in the step log.
    let log = std::fs::read_to_string(d.path("out/logs/by_ids.log")).unwrap();
    assert!(
        log.contains(&format!("[{db1}] -- Success (exit 0)")),
        "{log}"
    );
    assert!(log.contains("sent command"), "{log}");

    let by_tags = &step(&report, "by_tags")["result"];
    assert_eq!(
        sorted(&by_tags["ids"]),
        sorted(&serde_json::json!([web1, web2]))
    );
    assert_eq!(by_tags["totals"]["instances"], 2);
    assert_eq!(
        step(&report, "by_tags")["cases"].as_array().unwrap().len(),
        2
    );

    let nowait = &step(&report, "nowait")["result"];
    assert!(nowait["command_id"].is_string(), "{nowait}");
    assert_eq!(nowait["instances"][0]["status"], "Pending", "{nowait}");
    assert_eq!(nowait["totals"]["pending"], nowait["count"], "{nowait}");
    assert!(nowait["statuses"][db1.as_str()] == "Pending", "{nowait}");

    let nothing = &step(&report, "nothing")["result"];
    assert_eq!(nothing["count"], 0, "{nothing}");

    let both = step(&report, "both");
    assert_eq!(both["status"], "failed");
    assert!(
        both["error"]
            .as_str()
            .unwrap()
            .contains("either `instance_ids` or `tags`"),
        "{both}"
    );

    // What SSM was sent.
    let sent = commands(&moto);
    assert_eq!(sent.as_array().unwrap().len(), 4, "{sent}");
    let first = &sent[0];
    assert_eq!(
        first["parameters"],
        serde_json::json!({"commands": ["echo hello", "uptime"], "executionTimeout": ["90"]})
    );
    assert_eq!(first["comment"], "by ids");
    assert_eq!(first["targets"], serde_json::json!([]));
    let second = &sent[1];
    assert_eq!(
        second["targets"],
        serde_json::json!([{"Key": "tag:Role", "Values": ["web"]}])
    );
    assert_eq!(second["max_concurrency"], "50%");
    assert_eq!(second["max_errors"], "1");
    assert_eq!(
        sent[2]["parameters"],
        serde_json::json!({"commands": ["df -h"], "workingDirectory": ["/tmp"]})
    );
}

#[test]
fn send_command_dry_run_checks_document_and_targets_and_sends_nothing() {
    let moto = Moto::start().unwrap_or_else(|e| panic!("{e}"));
    let d = Dir::new("ssm-dry");
    let ids = fixtures(&moto);
    // The db instance is stopped: the dry run warns about it.
    boto3(
        &moto,
        &format!(
            r#"import boto3; boto3.client("ec2").stop_instances(InstanceIds=["{}"])"#,
            ids[2]
        ),
    );
    let rb = format!(
        r#"version: 1
name: ssm-dry
steps:
  - id: by_tags
    uses: aws.ssm.send_command
    with:
      tags: {{Role: [web, db]}}
      commands: uptime
  - id: by_ids
    uses: aws.ssm.send_command
    with:
      instance_ids: [{}]
      commands: uptime
  - id: unknown_document
    uses: aws.ssm.send_command
    continue_on_error: true
    with:
      document: No-Such-Document
      instance_ids: [{}]
  - id: unknown_instance
    uses: aws.ssm.send_command
    continue_on_error: true
    with:
      instance_ids: [i-0123456789abcdef0]
      commands: uptime
  - id: unknown_parameter
    uses: aws.ssm.send_command
    continue_on_error: true
    with:
      instance_ids: [{}]
      commands: uptime
      parameters: {{workdir: /tmp}}
  - id: no_commands
    uses: aws.ssm.send_command
    continue_on_error: true
    with:
      instance_ids: [{}]
  - id: put
    uses: aws.ssm.put_parameter
    with: {{name: /dry/put, value: s3cr3t-dry, type: SecureString}}
"#,
        ids[0], ids[0], ids[0], ids[0]
    );
    let (code, report, o) = run_moto(&d, &moto, &rb, &["--dry-run"]);
    assert_eq!(code, 0, "{}", text(&o));
    // put_parameter changes nothing in a dry run, and its SecureString value is masked.
    assert_eq!(step(&report, "put")["result"]["dry_run"], true);
    let stored = boto3(
        &moto,
        "import boto3\nprint(len(boto3.client('ssm').describe_parameters()['Parameters']))",
    );
    assert_eq!(stored, "0", "the dry run stored a parameter");
    assert!(!run_folder(&d).contains("s3cr3t-dry"));
    let by_tags = &step(&report, "by_tags")["result"];
    assert_eq!(by_tags["dry_run"], true, "{by_tags}");
    assert_eq!(by_tags["count"], 3, "{by_tags}");
    assert_eq!(by_tags["not_running"], serde_json::json!([ids[2]]));
    assert_eq!(by_tags["parameters"], serde_json::json!(["commands"]));
    let log = std::fs::read_to_string(d.path("out/logs/by_tags.log")).unwrap();
    assert!(
        log.contains(&format!("warning: {} is stopped", ids[2])),
        "{log}"
    );
    assert_eq!(
        step(&report, "by_ids")["result"]["ids"],
        serde_json::json!([ids[0]])
    );

    let err = |id: &str| {
        step(&report, id)["error"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    let e = err("unknown_document");
    assert!(e.contains("DescribeDocument: InvalidDocument"), "{e}");
    assert_eq!(
        step(&report, "unknown_document")["result"]["code"],
        "InvalidDocument"
    );
    let e = err("unknown_instance");
    assert!(
        e.contains("DescribeInstances: InvalidInstanceID.NotFound"),
        "{e}"
    );
    let e = err("unknown_parameter");
    assert!(e.contains("takes no parameter `workdir`"), "{e}");
    assert!(
        e.contains("commands, workingDirectory, executionTimeout"),
        "{e}"
    );
    let e = err("no_commands");
    assert!(e.contains("needs the parameter(s) commands"), "{e}");

    // Nothing was sent.
    assert_eq!(commands(&moto), serde_json::json!([]));
}

#[test]
fn parameters_put_get_names_path_and_secure_strings() {
    let moto = Moto::start().unwrap_or_else(|e| panic!("{e}"));
    let d = Dir::new("ssm-params");
    let secret = "p4ss-w0rd-xyz";
    let rb = format!(
        r#"version: 1
name: params
steps:
  - id: put_plain
    uses: aws.ssm.put_parameter
    with: {{name: /app/prod/feature, value: "on", description: a flag, tags: {{Team: sre}}}}
  - id: put_list
    uses: aws.ssm.put_parameter
    with: {{name: /app/prod/hosts, value: [a, b, c], type: StringList}}
  - id: put_secure
    uses: aws.ssm.put_parameter
    with: {{name: /app/prod/db/password, value: "{secret}", type: SecureString}}
  - id: put_other
    uses: aws.ssm.put_parameter
    with: {{name: /other/x, value: 7}}
  - id: again
    uses: aws.ssm.put_parameter
    continue_on_error: true
    with: {{name: /app/prod/feature, value: "off"}}
  - id: overwrite
    uses: aws.ssm.put_parameter
    with: {{name: /app/prod/feature, value: "off", overwrite: true, tags: {{Owner: me}}}}
  - id: one
    uses: aws.ssm.get_parameter
    with: {{name: /app/prod/feature}}
  - id: secure
    uses: aws.ssm.get_parameter
    with: {{name: /app/prod/db/password}}
  - id: use_secure
    uses: shell
    with:
      command: "printf %s {{{{ steps.secure.result.value | shquote }}}} > got.txt; echo got={{{{ steps.secure.result.value | shquote }}}}"
  - id: names
    uses: aws.ssm.get_parameter
    with: {{names: [/app/prod/hosts, /app/prod/feature]}}
  - id: path
    uses: aws.ssm.get_parameter
    with: {{path: /app/prod}}
  - id: tree
    uses: aws.ssm.get_parameter
    with: {{path: /app, recursive: true}}
  - id: missing
    uses: aws.ssm.get_parameter
    continue_on_error: true
    with: {{name: /app/none}}
  - id: missing_names
    uses: aws.ssm.get_parameter
    continue_on_error: true
    with: {{names: [/app/prod/hosts, /app/none, /app/nope]}}
"#
    );
    let (code, report, o) = run_moto(&d, &moto, &rb, &[]);
    assert_eq!(code, 0, "{}", text(&o));
    let r = |id: &str| step(&report, id)["result"].clone();
    assert_eq!(
        r("put_plain"),
        serde_json::json!({"name": "/app/prod/feature", "version": 1, "type": "String", "tier": "Standard"})
    );
    assert_eq!(r("put_list")["type"], "StringList");
    assert_eq!(r("put_secure")["type"], "SecureString");
    let again = step(&report, "again");
    assert_eq!(again["status"], "failed");
    assert!(
        again["error"]
            .as_str()
            .unwrap()
            .contains("PutParameter: ParameterAlreadyExists"),
        "{again}"
    );
    assert_eq!(r("overwrite")["version"], 2);

    let one = r("one");
    assert_eq!(one["value"], "off");
    assert_eq!(one["type"], "String");
    assert_eq!(one["version"], 2);
    assert!(one["parameters"][0]["last_modified"].is_string(), "{one}");
    assert_eq!(r("secure")["value"], "***");
    assert_eq!(r("secure")["type"], "SecureString");
    // A SecureString becomes a secret of the run: later steps get the value (the file), the
    // terminal and the run folder only `***`.
    assert_eq!(
        std::fs::read_to_string(d.path("got.txt")).unwrap_or_default(),
        secret
    );
    assert!(!text(&o).contains(secret), "{}", text(&o));
    assert!(!run_folder(&d).contains(secret));
    assert!(run_folder(&d).contains("got=***"));
    let names = r("names");
    assert_eq!(names["count"], 2);
    assert_eq!(names["parameters"][0]["name"], "/app/prod/hosts");
    assert_eq!(names["values"]["/app/prod/hosts"], "a,b,c");
    assert!(names.get("value").is_none(), "{names}");
    let path = r("path");
    assert_eq!(path["count"], 2, "{path}");
    assert_eq!(path["values"]["/app/prod/feature"], "off");
    let tree = r("tree");
    assert_eq!(tree["count"], 3, "{tree}");
    assert_eq!(tree["values"]["/app/prod/db/password"], "***");
    let missing = step(&report, "missing");
    assert_eq!(missing["status"], "failed");
    assert!(
        missing["error"]
            .as_str()
            .unwrap()
            .contains("GetParameter: ParameterNotFound"),
        "{missing}"
    );
    let e = step(&report, "missing_names")["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(e.contains("ParameterNotFound: /app/none, /app/nope"), "{e}");

    // The value is never logged (the report's rendered inputs do hold a literal value: pass
    // secrets from `secrets:` to have them masked).
    let log = std::fs::read_to_string(d.path("out/logs/put_secure.log")).unwrap();
    assert!(!log.contains(secret), "{log}");
    assert!(
        log.contains("put /app/prod/db/password (SecureString), version 1"),
        "{log}"
    );
    let log = std::fs::read_to_string(d.path("out/logs/secure.log")).unwrap();
    assert!(!log.contains(secret), "{log}");

    // What moto holds: the overwrite kept the first tags and added the new one.
    let tags = boto3(
        &moto,
        r#"
import boto3
ssm = boto3.client("ssm")
t = ssm.list_tags_for_resource(ResourceType="Parameter", ResourceId="/app/prod/feature")["TagList"]
print(sorted((x["Key"], x["Value"]) for x in t))
print(ssm.get_parameter(Name="/app/prod/db/password", WithDecryption=True)["Parameter"]["Value"])
"#,
    );
    assert_eq!(
        tags,
        format!("[('Owner', 'me'), ('Team', 'sre')]\n{secret}")
    );
}

#[test]
fn secrets_from_secrets_manager_and_parameter_store_are_masked() {
    let moto = Moto::start().unwrap_or_else(|e| panic!("{e}"));
    let d = Dir::new("ssm-secrets");
    let (db, pass, token) = ("db-s3cret-value", "json-pa55word", "ssm-t0ken-value");
    boto3(
        &moto,
        &format!(
            r#"
import boto3, json
sm = boto3.client("secretsmanager")
sm.create_secret(Name="prod/db", SecretString="{db}")
sm.create_secret(Name="prod/json", SecretString=json.dumps({{"username": "app", "password": "{pass}"}}))
boto3.client("ssm").put_parameter(Name="/prod/token", Value="{token}", Type="SecureString")
"#
        ),
    );
    let rb = r#"version: 1
name: secrets
secrets:
  db: {aws_secretsmanager: prod/db}
  dbpass: {aws_secretsmanager: "prod/json#password"}
  token: {aws_ssm: /prod/token}
steps:
  - id: show
    uses: shell
    with:
      command: "echo db={{ secrets.db | shquote }}; echo pass={{ secrets.dbpass | shquote }}; echo token={{ secrets.token | shquote }}"
  - id: check
    uses: assert
    with:
      that:
        - "secrets.dbpass | length == 13"
        - "steps.show.result.stdout | length > 0"
outputs:
  echoed: "{{ steps.show.result.stdout }}"
"#;
    let (code, report, o) = run_moto(&d, &moto, rb, &[]);
    let all = format!("{}{}", text(&o), run_folder(&d));
    assert_eq!(code, 0, "{all}");
    for v in [db, pass, token] {
        assert!(!all.contains(v), "{v} leaked:\n{all}");
    }
    let stdout = step(&report, "show")["result"]["stdout"].as_str().unwrap();
    assert_eq!(stdout, "db=***\npass=***\ntoken=***\n");
    assert!(run_folder(&d).contains("token=***"));
    assert!(report["outputs"]["echoed"]
        .as_str()
        .unwrap()
        .contains("db=***"));

    // A missing secret fails the run before any step, naming the secret and AWS's code.
    for (source, code_name) in [
        (
            "{aws_secretsmanager: prod/missing}",
            "ResourceNotFoundException",
        ),
        ("{aws_ssm: /prod/missing}", "ParameterNotFound"),
    ] {
        let rb = format!(
            r#"version: 1
name: missing
secrets:
  db: {{aws_secretsmanager: prod/db}}
  gone: {source}
steps:
  - id: never
    uses: shell
    with: {{command: "echo ran > ran.txt"}}
"#
        );
        let (code, report, o) = run_moto(&d, &moto, &rb, &[]);
        let out = text(&o);
        assert_eq!(code, 1, "{out}");
        assert!(out.contains("secret `gone`"), "{out}");
        assert!(out.contains(code_name), "{out}");
        assert!(!out.contains(db), "{out}");
        assert!(!d.path("ran.txt").exists(), "a step ran");
        if !report.is_null() {
            assert_ne!(step(&report, "never")["status"], "succeeded", "{report}");
            assert!(!run_folder(&d).contains(db));
        }
    }
}

#[test]
fn shipped_ssm_command_runbook_runs_on_tagged_instances() {
    let moto = Moto::start().unwrap_or_else(|e| panic!("{e}"));
    let d = Dir::new("ssm-runbook");
    let ids = fixtures(&moto);
    let file = shipped("ssm-command.yaml");
    let run = |extra: &[&str]| {
        let mut args = vec!["-p", "wait_timeout=20s"];
        args.extend_from_slice(extra);
        run_file(&d, &file, &args, |cmd| {
            moto.apply_env(cmd);
        })
    };

    // Dry run: lists the instances, sends nothing.
    let (code, report, o) = run(&["-p", "tag_value=web", "--dry-run"]);
    assert_eq!(code, 0, "{}", text(&o));
    let summary = report["outputs"]["summary"].as_str().unwrap();
    assert!(
        summary.starts_with("Dry run: `uptime` would run on 2 instance(s)"),
        "{summary}"
    );
    assert_eq!(commands(&moto), serde_json::json!([]));

    let (code, report, o) = run(&[
        "-p",
        "tag_value=web",
        "-p",
        "command=systemctl is-active nginx",
    ]);
    assert_eq!(code, 0, "{}", text(&o));
    let statuses = &report["outputs"]["statuses"];
    assert_eq!(statuses[ids[0].as_str()], "Success", "{report}");
    assert_eq!(statuses[ids[1].as_str()], "Success", "{report}");
    assert!(statuses.get(ids[2].as_str()).is_none(), "{statuses}");
    assert_eq!(report["outputs"]["failed"], serde_json::json!([]));
    let summary = report["outputs"]["summary"].as_str().unwrap();
    assert!(
        summary.contains("`systemctl is-active nginx` on Role=web")
            && summary.contains("2 of 2 succeeded"),
        "{summary}"
    );
    assert!(
        summary.contains(&format!("- {}: Success (exit 0)", ids[0])),
        "{summary}"
    );
    let sent = commands(&moto);
    assert_eq!(
        sent[0]["parameters"]["commands"],
        serde_json::json!(["systemctl is-active nginx"])
    );
    assert_eq!(
        sent[0]["parameters"]["executionTimeout"],
        serde_json::json!(["600"])
    );
    assert_eq!(sent[0]["max_concurrency"], "50%");

    // No instance with the tag: nothing is sent.
    let (code, report, o) = run(&["-p", "tag_key=Name", "-p", "tag_value=nope"]);
    assert_eq!(code, 0, "{}", text(&o));
    assert_eq!(step(&report, "run")["status"], "skipped");
    let summary = report["outputs"]["summary"].as_str().unwrap();
    assert!(
        summary.starts_with("No running instance has the tag Name=nope"),
        "{summary}"
    );
    assert_eq!(commands(&moto).as_array().unwrap().len(), 1);
}
