//! Checks the moto test server end to end with boto3: an S3 bucket and a tagged EC2
//! instance created through it are listed back, and gone after a reset. Needs moto and
//! boto3 for `python3` (`pip install 'moto[server]' boto3`).

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use opsbook_testkit::moto::Moto;

/// Creates the bucket `opsbook-testkit-bucket` with one object, and one instance tagged
/// `opsbook=testkit`; prints `{"instance": ID}`.
const CREATE: &str = r#"
import json, boto3
from botocore.config import Config
s3 = boto3.client("s3", config=Config(s3={"addressing_style": "path"}))
ec2 = boto3.client("ec2")
s3.create_bucket(Bucket="opsbook-testkit-bucket")
s3.put_object(Bucket="opsbook-testkit-bucket", Key="hello.txt", Body=b"hello")
run = ec2.run_instances(
    ImageId="ami-12c6146b", InstanceType="t3.micro", MinCount=1, MaxCount=1,
    TagSpecifications=[{"ResourceType": "instance",
                        "Tags": [{"Key": "opsbook", "Value": "testkit"}]}])
print(json.dumps({"instance": run["Instances"][0]["InstanceId"]}))
"#;

/// Prints `{"buckets": [NAME...], "objects": [KEY...], "instances": [ID...], "region": R}`:
/// every bucket, the keys in `opsbook-testkit-bucket` if it exists, and the instances
/// tagged `opsbook=testkit`.
const LIST: &str = r#"
import json, boto3
from botocore.config import Config
s3 = boto3.client("s3", config=Config(s3={"addressing_style": "path"}))
ec2 = boto3.client("ec2")
buckets = [b["Name"] for b in s3.list_buckets()["Buckets"]]
objects = []
if "opsbook-testkit-bucket" in buckets:
    listing = s3.list_objects_v2(Bucket="opsbook-testkit-bucket")
    objects = [o["Key"] for o in listing.get("Contents", [])]
found = ec2.describe_instances(Filters=[{"Name": "tag:opsbook", "Values": ["testkit"]}])
ids = [i["InstanceId"] for r in found["Reservations"] for i in r["Instances"]]
print(json.dumps({"buckets": buckets, "objects": objects, "instances": ids,
                  "region": ec2.meta.region_name}))
"#;

/// Runs `python3 -c script` with the moto environment and parses its JSON output.
fn boto3(moto: &Moto, script: &str) -> serde_json::Value {
    let mut command = Command::new("python3");
    let out = moto
        .apply_env(command.args(["-c", script]))
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "boto3 script failed ({}):\n{}{stdout}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

fn strings(value: &serde_json::Value) -> Vec<&str> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
        .iter()
        .map(|v| v.as_str().expect("a string"))
        .collect()
}

/// PIDs of the processes in process group `pgid`, from `/proc/*/stat`.
fn group_members(pgid: u32) -> Vec<u32> {
    let mut members = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().filter_map(Result::ok) {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "PID (comm) STATE PPID PGRP ..."; comm may hold spaces and parentheses.
        let after_comm = &stat[stat.rfind(')').unwrap() + 1..];
        if after_comm.split_whitespace().nth(2) == Some(&pgid.to_string()) {
            members.push(pid);
        }
    }
    members
}

#[test]
fn boto3_resources_exist_until_reset() {
    let started = Instant::now();
    let moto = Moto::start().unwrap_or_else(|e| panic!("{e}"));
    println!("moto ready after {:?}", started.elapsed());
    assert!(
        moto.url().starts_with("http://127.0.0.1:"),
        "{}",
        moto.url()
    );

    let env = moto.env();
    let get = |name: &str| {
        env.iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("{name} missing from {env:?}"))
    };
    assert_eq!(get("AWS_ENDPOINT_URL"), moto.url());
    assert_eq!(get("AWS_ACCESS_KEY_ID"), "test");
    assert_eq!(get("AWS_SECRET_ACCESS_KEY"), "test");
    assert_eq!(get("AWS_REGION"), "us-east-1");
    assert_eq!(get("AWS_DEFAULT_REGION"), "us-east-1");
    assert_eq!(get("AWS_EC2_METADATA_DISABLED"), "true");
    for name in ["AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"] {
        let path = get(name);
        assert!(Path::new(&path).starts_with(moto.dir()), "{name}={path}");
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "",
            "{path} is not empty"
        );
    }

    let created = boto3(&moto, CREATE);
    let instance = created["instance"].as_str().expect("an instance ID");
    assert!(instance.starts_with("i-"), "{created}");

    let listed = boto3(&moto, LIST);
    assert_eq!(strings(&listed["buckets"]), ["opsbook-testkit-bucket"]);
    assert_eq!(strings(&listed["objects"]), ["hello.txt"]);
    assert_eq!(strings(&listed["instances"]), [instance]);
    assert_eq!(listed["region"], "us-east-1");

    let reset = Instant::now();
    moto.reset().unwrap_or_else(|e| panic!("{e}"));
    println!("reset took {:?}", reset.elapsed());
    let listed = boto3(&moto, LIST);
    assert_eq!(strings(&listed["buckets"]), Vec::<&str>::new(), "{listed}");
    assert_eq!(
        strings(&listed["instances"]),
        Vec::<&str>::new(),
        "{listed}"
    );

    let pid = moto.pid();
    let dir = moto.dir().to_path_buf();
    assert_eq!(
        group_members(pid),
        [pid],
        "moto should be alone in its group"
    );
    let stopped = Instant::now();
    drop(moto);
    println!("moto stopped after {:?}", stopped.elapsed());
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "{pid} remains"
    );
    assert_eq!(group_members(pid), Vec::<u32>::new());
    assert!(!dir.exists(), "{} still exists", dir.display());
}

#[test]
fn servers_side_by_side_keep_their_own_state() {
    let one = Moto::start().unwrap_or_else(|e| panic!("{e}"));
    let two = Moto::start().unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(one.url(), two.url());
    boto3(&one, CREATE);
    assert_eq!(
        strings(&boto3(&one, LIST)["buckets"]),
        ["opsbook-testkit-bucket"]
    );
    assert_eq!(strings(&boto3(&two, LIST)["buckets"]), Vec::<&str>::new());
    two.reset().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        strings(&boto3(&one, LIST)["buckets"]),
        ["opsbook-testkit-bucket"]
    );
}
