//! End-to-end tests of the `aws.ec2.*` actions and the ec2-schedule runbook, through the
//! `opsbook` binary against the moto server (`opsbook_testkit::moto`: a real AWS API emulator on
//! 127.0.0.1; instances are created with boto3 as fixtures).
//!
//! Moto simplifies EC2: instances change state at once (so `wait` returns on the first poll),
//! a reboot changes nothing visible, and terminated instances stay listed.

mod common;

use common::*;
use opsbook_testkit::moto::Moto;

/// Launches one instance per tag set with boto3; their ids.
fn launch(moto: &Moto, tag_sets: &[&[(&str, &str)]]) -> Vec<String> {
    let sets: Vec<String> = tag_sets
        .iter()
        .map(|tags| {
            let pairs: Vec<String> = tags
                .iter()
                .map(|(k, v)| format!("{{'Key': '{k}', 'Value': '{v}'}}"))
                .collect();
            format!("[{}]", pairs.join(", "))
        })
        .collect();
    let out = boto3(
        moto,
        &format!(
            r#"
import boto3
ec2 = boto3.client("ec2")
ids = []
for tags in [{}]:
    r = ec2.run_instances(ImageId="ami-12345678", MinCount=1, MaxCount=1, InstanceType="t3.micro",
        TagSpecifications=[{{"ResourceType": "instance", "Tags": tags}}])
    ids.append(r["Instances"][0]["InstanceId"])
print(" ".join(ids))
"#,
            sets.join(", ")
        ),
    );
    out.split_whitespace().map(str::to_string).collect()
}

fn state(moto: &Moto, id: &str) -> String {
    boto3(
        moto,
        &format!(
            r#"
import boto3
r = boto3.client("ec2").describe_instances(InstanceIds=["{id}"])
print(r["Reservations"][0]["Instances"][0]["State"]["Name"])
"#
        ),
    )
}

#[test]
fn describe_stop_start_reboot_by_tags_with_waits_and_errors() {
    let moto = Moto::start().unwrap_or_else(|e| panic!("{e}"));
    let d = Dir::new("ec2-states");
    let ids = launch(
        &moto,
        &[
            &[("Schedule", "office"), ("Name", "web-1")],
            &[("Schedule", "office"), ("Name", "web-2")],
            &[("Schedule", "always"), ("Name", "db-1")],
        ],
    );
    assert_eq!(ids.len(), 3);
    let rb = r#"version: 1
name: ec2
steps:
  - id: office
    uses: aws.ec2.describe_instances
    with:
      tags: {Schedule: office}
  - id: stop
    uses: aws.ec2.stop_instances
    needs: [office]
    with:
      tags: {Schedule: office}
      wait: true
  - id: stopped
    uses: aws.ec2.describe_instances
    needs: [stop]
    with:
      filters: {instance-state-name: stopped}
  - id: start_one
    uses: aws.ec2.start_instances
    needs: [stopped]
    with:
      instance_ids: ["{{ steps.office.result.ids[0] }}"]
      wait: true
  - id: reboot
    uses: aws.ec2.reboot_instances
    needs: [start_one]
    with:
      tags: {Name: db-1}
  - id: nothing
    uses: aws.ec2.stop_instances
    with:
      tags: {Schedule: never}
  - id: missing
    uses: aws.ec2.describe_instances
    continue_on_error: true
    with:
      instance_ids: [i-0123456789abcdef0]
  - id: as_role
    uses: aws.ec2.describe_instances
    with:
      region: us-east-1
      assume_role: {role_arn: "arn:aws:iam::123456789012:role/opsbook-ops", session_name: ci, external_id: ext-1}
      tags: {Schedule: office}
  - id: guard
    uses: aws.ec2.stop_instances
    continue_on_error: true
    needs: [reboot]
    with:
      filters: {instance-state-name: [running, stopped]}
      max_instances: 2
  - id: reboot_wait
    uses: aws.ec2.reboot_instances
    continue_on_error: true
    with:
      instance_ids: ["{{ steps.office.result.ids[0] }}"]
      wait: true
"#;
    let (code, report, o) = run_moto(&d, &moto, rb, &[]);
    assert_eq!(code, 0, "{}", text(&o));
    let office = &step(&report, "office")["result"];
    assert_eq!(office["count"], 2, "{office}");
    let names: Vec<&str> = office["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["tags"]["Name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["web-1", "web-2"]);
    assert_eq!(office["instances"][0]["type"], "t3.micro");
    assert_eq!(office["instances"][0]["name"], "web-1");
    assert!(office["instances"][0]["private_ip"].is_string(), "{office}");

    let stop = &step(&report, "stop")["result"];
    assert_eq!(stop["count"], 2);
    assert!(
        stop["instances"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["state"] == "stopped" && i["previous_state"] == "running"),
        "{stop}"
    );
    assert_eq!(step(&report, "stopped")["result"]["count"], 2);
    let start = &step(&report, "start_one")["result"];
    assert_eq!(start["instances"][0]["state"], "running", "{start}");
    assert_eq!(state(&moto, &ids[0]), "running");
    assert_eq!(state(&moto, &ids[1]), "stopped");
    let reboot = &step(&report, "reboot")["result"];
    assert_eq!(reboot["ids"][0], ids[2].as_str(), "{reboot}");
    assert_eq!(step(&report, "nothing")["result"]["count"], 0);

    // Through STS AssumeRole: the step's credentials are the temporary ones moto's STS issues
    // (moto checks no trust policy, so a wrong external id is not caught here).
    assert_eq!(step(&report, "as_role")["result"]["count"], 2);
    let missing = step(&report, "missing")["error"].as_str().unwrap();
    assert!(missing.contains("InvalidInstanceID"), "{missing}");
    // Three instances match the filter: more than max_instances, so nothing changed.
    let guard = step(&report, "guard")["error"].as_str().unwrap();
    assert!(
        guard.contains("3 instances match, more than max_instances (2)"),
        "{guard}"
    );
    assert_eq!(state(&moto, &ids[2]), "running");
    let reboot_wait = step(&report, "reboot_wait")["error"].as_str().unwrap();
    assert!(
        reboot_wait.contains("does not apply to a reboot"),
        "{reboot_wait}"
    );
}

#[test]
fn run_tag_terminate_and_dry_runs() {
    let moto = Moto::start().unwrap_or_else(|e| panic!("{e}"));
    let d = Dir::new("ec2-launch");
    let rb = r##"version: 1
name: launch
steps:
  - id: launch
    uses: aws.ec2.run_instances
    with:
      image_id: ami-12345678
      instance_type: t3.small
      count: 2
      tags: {Team: sre, Name: batch}
      user_data: "#!/bin/sh\necho hello\n"
      wait: true
  - id: tag
    uses: aws.ec2.create_tags
    with:
      resource_ids: "{{ steps.launch.result.ids }}"
      tags: {Owner: oncall, Cost: 42}
  - id: tagged
    uses: aws.ec2.describe_instances
    needs: [tag]
    with:
      tags: {Owner: oncall, Cost: "42"}
  - id: terminate
    uses: aws.ec2.terminate_instances
    needs: [tagged]
    with:
      tags: {Team: sre}
      wait: true
"##;
    let (code, report, o) = run_moto(&d, &moto, rb, &[]);
    assert_eq!(code, 0, "{}", text(&o));
    let launch = &step(&report, "launch")["result"];
    assert_eq!(launch["count"], 2, "{launch}");
    assert!(
        launch["instances"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["state"] == "running"
                && i["type"] == "t3.small"
                && i["tags"]["Team"] == "sre"),
        "{launch}"
    );
    let id0 = launch["ids"][0].as_str().unwrap().to_string();
    let user_data = boto3(
        &moto,
        &format!(
            r#"
import boto3, base64
r = boto3.client("ec2").describe_instance_attribute(InstanceId="{id0}", Attribute="userData")
print(base64.b64decode(r["UserData"]["Value"]).decode().splitlines()[1])
"#
        ),
    );
    assert_eq!(user_data, "echo hello");
    assert_eq!(step(&report, "tagged")["result"]["count"], 2);
    let terminate = &step(&report, "terminate")["result"];
    assert_eq!(terminate["count"], 2, "{terminate}");
    assert!(terminate["instances"]
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["state"] == "terminated"));
    assert_eq!(state(&moto, &id0), "terminated");

    // Dry runs: EC2 is asked with DryRun=true; nothing changes.
    let ids = launch_one(&moto);
    let rb = format!(
        r#"version: 1
name: dry
steps:
  - id: stop
    uses: aws.ec2.stop_instances
    with:
      instance_ids: [{ids}]
  - id: launch
    uses: aws.ec2.run_instances
    with:
      image_id: ami-12345678
      instance_type: t3.micro
  - id: tag
    uses: aws.ec2.create_tags
    with:
      resource_ids: [{ids}]
      tags: {{Dry: run}}
"#
    );
    let (code, report, o) = run_moto(&d, &moto, &rb, &["--dry-run"]);
    assert_eq!(code, 0, "{}", text(&o));
    for id in ["stop", "launch", "tag"] {
        let r = &step(&report, id)["result"];
        assert_eq!(r["dry_run"], true, "{id}: {r}");
        assert_eq!(r["allowed"], true, "{id}: {r}");
    }
    assert_eq!(
        state(&moto, &ids),
        "running",
        "the dry run stopped an instance"
    );
    let count = boto3(
        &moto,
        r#"
import boto3
r = boto3.client("ec2").describe_instances(Filters=[{"Name": "instance-state-name", "Values": ["running", "pending"]}])
tags = [t for res in r["Reservations"] for i in res["Instances"] for t in i.get("Tags", [])]
print(sum(len(res["Instances"]) for res in r["Reservations"]), len([t for t in tags if t["Key"] == "Dry"]))
"#,
    );
    assert_eq!(count, "1 0", "the dry run launched or tagged something");
}

fn launch_one(moto: &Moto) -> String {
    launch(moto, &[&[("Name", "dry")]]).remove(0)
}

#[test]
fn ec2_schedule_runbook_stops_then_starts_by_tag() {
    let moto = Moto::start().unwrap_or_else(|e| panic!("{e}"));
    let d = Dir::new("ec2-schedule");
    let ids = launch(
        &moto,
        &[
            &[("Schedule", "office-hours"), ("Name", "app-1")],
            &[("Schedule", "office-hours"), ("Name", "app-2")],
            &[("Schedule", "24x7"), ("Name", "db")],
        ],
    );
    let rb = shipped("ec2-schedule.yaml");
    let (code, report, o) = run_file(&d, &rb, &["-p", "action=stop"], |c| {
        moto.apply_env(c);
    });
    assert_eq!(code, 0, "{}", text(&o));
    assert_eq!(
        report["outputs"]["changed"].as_array().unwrap().len(),
        2,
        "{report}"
    );
    assert_eq!(state(&moto, &ids[0]), "stopped");
    assert_eq!(state(&moto, &ids[1]), "stopped");
    assert_eq!(state(&moto, &ids[2]), "running");
    assert_eq!(step(&report, "start")["status"], "skipped");

    // Stopping again finds nothing running: nothing to do.
    let (code, report, o) = run_file(&d, &rb, &["-p", "action=stop"], |c| {
        moto.apply_env(c);
    });
    assert_eq!(code, 0, "{}", text(&o));
    assert_eq!(
        report["outputs"]["changed"],
        serde_json::json!([]),
        "{report}"
    );

    // The guard: one instance allowed, two match → the run fails and nothing starts.
    let (code, report, o) = run_file(
        &d,
        &rb,
        &["-p", "action=start", "-p", "max_instances=1"],
        |c| {
            moto.apply_env(c);
        },
    );
    assert_eq!(code, 1, "{}", text(&o));
    let e = step(&report, "start")["error"].as_str().unwrap();
    assert!(e.contains("more than max_instances"), "{e}");
    assert_eq!(state(&moto, &ids[0]), "stopped");

    let (code, report, o) = run_file(&d, &rb, &["-p", "action=start"], |c| {
        moto.apply_env(c);
    });
    assert_eq!(code, 0, "{}", text(&o));
    assert_eq!(state(&moto, &ids[0]), "running");
    assert_eq!(state(&moto, &ids[1]), "running");
    let message = report["outputs"]["message"].as_str().unwrap();
    assert!(message.starts_with("start: 2 instance(s)"), "{message}");
}
