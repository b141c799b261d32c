//! End-to-end tests of the `aws.cloudwatch.*`, `aws.autoscaling.*` and `aws.ecs.*` actions and
//! the asg-cpu-scaling runbook, through the `opsbook` binary against the moto server
//! (`opsbook_testkit::moto`; fixtures are made with boto3).
//!
//! CloudWatch goes through a protocol shim: the Rust SDK's CloudWatch client (aws-sdk-cloudwatch
//! 1.100 and later) speaks Smithy RPC v2 CBOR, as AWS now prefers, and moto (5.2) speaks only
//! CloudWatch's Query and JSON protocols. [`CborShim`] is a small HTTP proxy (Python, with
//! botocore's own CBOR codec and CloudWatch model) that turns each CBOR request into the JSON
//! request for the same operation, forwards it to moto, and turns moto's answer (or error) back
//! into CBOR. Only CloudWatch is sent to it (`AWS_ENDPOINT_URL_CLOUDWATCH`); moto's behaviour
//! is unchanged.
//!
//! Where moto simplifies:
//! - CloudWatch has no metrics of its own (no CPU of instances): the tests put datapoints with
//!   timestamps inside the window. Moto starts its periods at the query's start time rather than
//!   on whole minutes, so the datapoints are put two minutes apart (one per period).
//! - Auto Scaling launches and terminates instances at once (InService immediately), and moto
//!   answers SetDesiredCapacity on an unknown group with a 500 (AWS: ValidationError): the
//!   action describes the group first and fails with its own message.
//! - ECS runs no tasks: a service created with a desired count above zero stays IN_PROGRESS
//!   with no task running (its deployment is never updated), while UpdateService with a desired
//!   count sets the running count at once and leaves the deployment as it was. So services are
//!   created with `desiredCount=0` (deployment 0/0, COMPLETED): after an update the service is
//!   steady on the first poll of `wait`.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};

use common::*;
use opsbook_testkit::moto::Moto;
use serde_json::{json, Value};

/// Python prelude of the fixtures: clients, and `put(ns, metric, dims, [(minutes_ago, value)])`.
const PRELUDE: &str = r#"
import boto3, datetime
cw = boto3.client("cloudwatch")
asg = boto3.client("autoscaling")
ec2 = boto3.client("ec2")
ecs = boto3.client("ecs")
now = datetime.datetime.now(datetime.timezone.utc)
def put(ns, metric, dims, points, unit="Percent"):
    cw.put_metric_data(Namespace=ns, MetricData=[
        {"MetricName": metric, "Dimensions": [{"Name": k, "Value": v} for k, v in dims.items()],
         "Timestamp": now - datetime.timedelta(minutes=m), "Value": v, "Unit": unit}
        for m, v in points])
def cpu(group, points):
    put("AWS/EC2", "CPUUtilization", {"AutoScalingGroupName": group}, points)
def group(name, lo, hi, desired, tags=None):
    try:
        ec2.create_launch_template(LaunchTemplateName="web-lt",
            LaunchTemplateData={"ImageId": "ami-12345678", "InstanceType": "t3.micro"})
    except Exception:
        pass
    asg.create_auto_scaling_group(AutoScalingGroupName=name, MinSize=lo, MaxSize=hi,
        DesiredCapacity=desired, LaunchTemplate={"LaunchTemplateName": "web-lt"},
        AvailabilityZones=["us-east-1a"],
        Tags=[{"Key": k, "Value": v, "PropagateAtLaunch": True} for k, v in (tags or {}).items()])
def desired(name):
    return asg.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"][0]["DesiredCapacity"]
"#;

/// The shim's Python source: `python3 -c SHIM MOTO_URL` prints its port, then serves.
const SHIM: &str = r#"
import sys, json, datetime, urllib.request, urllib.error
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import botocore.session
from botocore.parsers import RpcV2CBORParser, JSONParser
from botocore.serialize import RpcV2CBORSerializer

UPSTREAM = sys.argv[1].rstrip("/")
MODEL = botocore.session.get_session().get_service_model("cloudwatch")
PREFIX = MODEL.metadata["targetPrefix"]
DROP = ("host", "content-length", "content-type", "accept", "smithy-protocol")

def cbor_text(s):
    b = s.encode()
    n = len(b)
    head = bytes([0x60 | n]) if n < 24 else bytes([0x78, n]) if n < 256 else bytes([0x79]) + n.to_bytes(2, "big")
    return head + b

def cbor_error(fields):
    out = bytes([0xA0 | len(fields)])
    for k, v in fields.items():
        out += cbor_text(k) + cbor_text(v)
    return out

def post(url, data, headers):
    req = urllib.request.Request(url, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, dict(r.headers.items()), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers.items()), e.read()

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in DROP}
        if "cbor" not in (self.headers.get("Content-Type") or "") + (self.headers.get("smithy-protocol") or ""):
            headers["Content-Type"] = self.headers.get("Content-Type") or ""
            return self.reply(*post(UPSTREAM + self.path, body, headers))
        # /service/GraniteServiceVersion20100801/operation/GetMetricData
        op = self.path.rstrip("/").rsplit("/", 1)[-1]
        params = {}
        if body:
            p = RpcV2CBORParser()
            params = p.parse_data_item(p.get_peekable_stream_from_bytes(body))
        data = json.dumps(params, default=lambda o: o.timestamp()).encode()
        headers.update({"Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": PREFIX + "." + op, "x-amzn-query-mode": "true"})
        status, up_headers, up_body = post(UPSTREAM + "/", data, headers)
        out = {"Content-Type": "application/cbor", "smithy-protocol": "rpc-v2-cbor"}
        out.update({k: v for k, v in up_headers.items() if k.lower().startswith("x-amzn")})
        if status == 200:
            shape = MODEL.operation_model(op).output_shape
            if shape is None:
                return self.reply(200, out, b"\xa0")
            parsed = JSONParser().parse({"body": up_body, "headers": up_headers, "status_code": 200}, shape)
            parsed.pop("ResponseMetadata", None)
            buf = bytearray()
            RpcV2CBORSerializer()._serialize_data_item(buf, parsed, shape)
            return self.reply(200, out, bytes(buf))
        try:
            err = json.loads(up_body or b"{}")
        except ValueError:
            err = {"__type": "InternalFailure", "message": up_body.decode(errors="replace")[:500]}
        fields = {"__type": str(err.get("__type", "Unknown"))}
        if err.get("message") or err.get("Message"):
            fields["message"] = str(err.get("message") or err.get("Message"))
        return self.reply(status, out, cbor_error(fields))

    def reply(self, status, headers, body):
        self.send_response(status)
        for k, v in headers.items():
            if k.lower() not in ("content-length", "transfer-encoding", "connection", "server", "date"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;

/// The CBOR-to-JSON proxy in front of moto for CloudWatch (see the module doc); stopped on drop.
struct CborShim {
    child: Child,
    url: String,
}

impl CborShim {
    fn start(moto: &Moto) -> CborShim {
        let mut child = Command::new("python3")
            .args(["-c", SHIM, &moto.url()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the CloudWatch CBOR shim (python3)");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("the shim's stdout");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the shim's port");
        let port: u16 = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("the shim printed no port: {line:?}"));
        CborShim {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    /// Points a command's CloudWatch client at the shim (the rest goes to moto directly).
    fn apply(&self, moto: &Moto, cmd: &mut Command) {
        moto.apply_env(cmd);
        cmd.env("AWS_ENDPOINT_URL_CLOUDWATCH", &self.url);
    }
}

impl Drop for CborShim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a runbook text against moto, CloudWatch through the shim.
fn run_aws(
    d: &Dir,
    moto: &Moto,
    shim: &CborShim,
    rb: &str,
    extra: &[&str],
) -> (i32, Value, Output) {
    run_with(d, rb, extra, |cmd| shim.apply(moto, cmd))
}

fn py(moto: &Moto, code: &str) -> String {
    boto3(moto, &format!("{PRELUDE}\n{code}"))
}

fn result<'a>(report: &'a Value, id: &str) -> &'a Value {
    &step(report, id)["result"]
}

fn values(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|p| p["value"].as_f64().unwrap_or(f64::NAN))
        .collect()
}

#[test]
fn cloudwatch_get_put_and_alarms() {
    let moto = Moto::start().unwrap_or_else(|e| panic!("{e}"));
    let shim = CborShim::start(&moto);
    let d = Dir::new("aws-scaling-cw");
    // Oldest first: 60 six minutes ago, 20 four minutes ago, 10 two minutes ago.
    let ts = py(
        &moto,
        r#"
cpu("web", [(6, 60.0), (4, 20.0), (2, 10.0)])
cw.put_metric_alarm(AlarmName="cpu-high", MetricName="CPUUtilization", Namespace="AWS/EC2",
    Statistic="Average", Period=60, EvaluationPeriods=1, Threshold=70.0,
    ComparisonOperator="GreaterThanThreshold", Dimensions=[{"Name": "AutoScalingGroupName", "Value": "web"}])
cw.put_metric_alarm(AlarmName="cpu-low", MetricName="CPUUtilization", Namespace="AWS/EC2",
    Statistic="Average", Period=60, EvaluationPeriods=1, Threshold=20.0,
    ComparisonOperator="LessThanThreshold", Dimensions=[{"Name": "AutoScalingGroupName", "Value": "web"}])
cw.put_metric_alarm(AlarmName="disk-full", MetricName="disk", Namespace="Custom",
    Statistic="Maximum", Period=60, EvaluationPeriods=1, Threshold=90.0,
    ComparisonOperator="GreaterThanThreshold")
cw.set_alarm_state(AlarmName="cpu-high", StateValue="ALARM", StateReason="CPU above 70")
print((now - datetime.timedelta(minutes=3)).strftime("%Y-%m-%dT%H:%M:%SZ"),
      (now - datetime.timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%S+00:00"))
"#,
    );
    let ts: Vec<&str> = ts.split_whitespace().collect();
    let rb = format!(
        r#"version: 1
name: cw
steps:
  - id: avg
    uses: aws.cloudwatch.get_metric
    with:
      metric: CPUUtilization
      dimensions: {{AutoScalingGroupName: web}}
      expect: {{max: 50, min: 5}}
  - id: max
    uses: aws.cloudwatch.get_metric
    with:
      metric: CPUUtilization
      dimensions: {{AutoScalingGroupName: web}}
      stat: maximum
      period: 60s
      window: 15m
  - id: sum
    uses: aws.cloudwatch.get_metric
    with:
      namespace: AWS/EC2
      metric: CPUUtilization
      dimensions: {{AutoScalingGroupName: web}}
      stat: Sum
      unit: Percent
  - id: put_one
    uses: aws.cloudwatch.put_metric
    with:
      namespace: Opsbook/Test
      metric: Queue
      value: 5
      unit: Count
      dimensions: {{Service: checkout}}
      timestamp: "{t3}"
  - id: put_many
    uses: aws.cloudwatch.put_metric
    with:
      namespace: Opsbook/Test
      metric: Queue
      values: [1, 2, 3]
      unit: Count
      dimensions: {{Service: checkout}}
      timestamp: "{t5}"
  - id: read_back
    uses: aws.cloudwatch.get_metric
    with:
      namespace: Opsbook/Test
      metric: Queue
      dimensions: {{Service: checkout}}
      stat: Sum
  - id: quiet
    uses: aws.cloudwatch.get_metric
    with:
      metric: CPUUtilization
      dimensions: {{AutoScalingGroupName: nobody}}
      allow_empty: true
      expect: {{max: 1}}
  - id: in_alarm
    uses: aws.cloudwatch.describe_alarms
    with: {{state: ALARM}}
  - id: cpu_alarms
    uses: aws.cloudwatch.describe_alarms
    with: {{prefix: cpu-}}
  - id: named
    uses: aws.cloudwatch.describe_alarms
    with: {{names: [disk-full, not-there]}}
"#,
        t3 = ts[0],
        t5 = ts[1],
    );
    let (code, report, out) = run_aws(&d, &moto, &shim, &rb, &[]);
    assert_eq!(code, 0, "{}", text(&out));

    // Average: the mean of the period values (each datapoint its own period here).
    let avg = result(&report, "avg");
    assert_eq!(avg["aggregate"], json!(30.0), "{avg}");
    assert_eq!(avg["count"], 3);
    assert_eq!(avg["latest"], json!(10.0));
    assert_eq!(values(&avg["datapoints"]), vec![60.0, 20.0, 10.0]);
    assert_eq!(avg["stat"], "Average");
    assert_eq!(avg["period"], 60);
    assert_eq!(avg["namespace"], "AWS/EC2");
    assert_eq!(avg["dimensions"], json!({"AutoScalingGroupName": "web"}));
    let stamps: Vec<&str> = avg["datapoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["timestamp"].as_str().unwrap())
        .collect();
    let mut sorted = stamps.clone();
    sorted.sort();
    assert_eq!(stamps, sorted, "datapoints sorted by time");
    assert!(stamps[0].ends_with('Z'), "{stamps:?}");

    assert_eq!(result(&report, "max")["aggregate"], json!(60.0));
    assert_eq!(result(&report, "max")["stat"], "Maximum");
    assert_eq!(result(&report, "sum")["aggregate"], json!(90.0));
    assert_eq!(result(&report, "sum")["unit"], "Percent");

    let one = result(&report, "put_one");
    assert_eq!(one["values"], json!([5.0]));
    assert_eq!(one["count"], 1);
    assert_eq!(one["unit"], "Count");
    assert_eq!(one["dimensions"], json!({"Service": "checkout"}));
    assert_eq!(one["timestamp"], ts[0]);
    assert_eq!(result(&report, "put_many")["count"], 3);
    // The offset was normalised to UTC.
    assert!(result(&report, "put_many")["timestamp"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
    // Two periods: 5, then 1 + 2 + 3.
    let back = result(&report, "read_back");
    assert_eq!(back["aggregate"], json!(11.0), "{back}");
    assert_eq!(values(&back["datapoints"]), vec![6.0, 5.0]);

    let quiet = result(&report, "quiet");
    assert_eq!(quiet["count"], 0);
    assert_eq!(quiet["aggregate"], Value::Null);
    assert_eq!(quiet["latest"], Value::Null);

    let alarms = result(&report, "in_alarm");
    assert_eq!(alarms["in_alarm"], json!(["cpu-high"]), "{alarms}");
    assert_eq!(alarms["count"], 1);
    let a = &alarms["alarms"][0];
    assert_eq!(a["state"], "ALARM");
    assert_eq!(a["reason"], "CPU above 70");
    assert_eq!(a["metric"], "CPUUtilization");
    assert_eq!(a["namespace"], "AWS/EC2");
    assert_eq!(a["threshold"], json!(70.0));
    assert_eq!(a["comparison"], "GreaterThanThreshold");
    assert_eq!(a["dimensions"], json!({"AutoScalingGroupName": "web"}));
    assert!(a["updated_at"].as_str().unwrap().ends_with('Z'), "{a}");
    let cpu = result(&report, "cpu_alarms");
    assert_eq!(cpu["count"], 2, "{cpu}");
    assert_eq!(cpu["in_alarm"], json!(["cpu-high"]));
    let named = result(&report, "named");
    assert_eq!(named["count"], 1);
    assert_eq!(named["alarms"][0]["name"], "disk-full");
    assert_eq!(named["in_alarm"], json!([]));

    // A threshold crossed fails the step with the number.
    let rb = r#"version: 1
name: cw-max
steps:
  - id: gate
    uses: aws.cloudwatch.get_metric
    with:
      metric: CPUUtilization
      dimensions: {AutoScalingGroupName: web}
      expect: {max: 25}
"#;
    let (code, report, out) = run_aws(&d, &moto, &shim, rb, &[]);
    assert_eq!(code, 1, "{}", text(&out));
    let s = step(&report, "gate");
    assert_eq!(s["status"], "failed");
    let msg = s["error"].as_str().unwrap_or_default();
    assert!(msg.contains("Average 30"), "{msg}");
    assert!(msg.contains("above the maximum 25"), "{msg}");
    assert!(
        msg.contains("AWS/EC2 CPUUtilization {AutoScalingGroupName=web}"),
        "{msg}"
    );

    // No data fails by default, naming what was asked.
    let rb = r#"version: 1
name: cw-empty
steps:
  - id: gate
    uses: aws.cloudwatch.get_metric
    with:
      metric: CPUUtilisation
      dimensions: {AutoScalingGroupName: web}
      window: 5m
"#;
    let (code, report, out) = run_aws(&d, &moto, &shim, rb, &[]);
    assert_eq!(code, 1, "{}", text(&out));
    let msg = step(&report, "gate")["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        msg.contains("no datapoints for AWS/EC2 CPUUtilisation {AutoScalingGroupName=web}"),
        "{msg}"
    );
    assert!(msg.contains("allow_empty"), "{msg}");

    // Input errors: an empty range, and both `window` and `start`.
    let rb = r#"version: 1
name: cw-bad
steps:
  - id: both
    uses: aws.cloudwatch.get_metric
    continue_on_error: true
    with: {metric: CPUUtilization, window: 5m, start: "2026-01-01T00:00:00Z"}
  - id: backwards
    uses: aws.cloudwatch.get_metric
    continue_on_error: true
    with: {metric: CPUUtilization, start: "2026-01-02T00:00:00Z", end: "2026-01-01T00:00:00Z"}
  - id: neither
    uses: aws.cloudwatch.put_metric
    continue_on_error: true
    with: {namespace: X, metric: y}
"#;
    let (_, report, out) = run_aws(&d, &moto, &shim, rb, &[]);
    let err = |id: &str| {
        step(&report, id)["error"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert!(err("both").contains("not both"), "{}", text(&out));
    assert!(
        err("backwards").contains("range is empty"),
        "{}",
        err("backwards")
    );
    assert!(
        err("neither").contains("give a `value`"),
        "{}",
        err("neither")
    );

    // --dry-run: put_metric puts nothing; get_metric and describe_alarms run.
    let rb = r#"version: 1
name: cw-dry
steps:
  - id: put
    uses: aws.cloudwatch.put_metric
    with: {namespace: Opsbook/Dry, metric: Never, value: 1}
  - id: read
    uses: aws.cloudwatch.get_metric
    with: {metric: CPUUtilization, dimensions: {AutoScalingGroupName: web}}
"#;
    let (code, report, out) = run_aws(&d, &moto, &shim, rb, &["--dry-run"]);
    assert_eq!(code, 0, "{}", text(&out));
    assert_eq!(result(&report, "read")["aggregate"], json!(30.0));
    let put = result(&report, "put");
    assert_eq!(put["dry_run"], true, "{put}");
    assert_eq!(put["values"], json!([1.0]));
    let listed = py(
        &moto,
        r#"print(len(cw.list_metrics(Namespace="Opsbook/Dry")["Metrics"]))"#,
    );
    assert_eq!(listed, "0");
}

#[test]
fn autoscaling_describe_and_set_capacity() {
    let moto = Moto::start().unwrap_or_else(|e| panic!("{e}"));
    let d = Dir::new("aws-scaling-asg");
    py(
        &moto,
        r#"
group("web", 1, 3, 1, {"Env": "prod", "Team": "sre"})
group("batch", 0, 2, 0, {"Env": "stage"})
"#,
    );
    let rb = r#"version: 1
name: asg
steps:
  - id: all
    uses: aws.autoscaling.describe_groups
  - id: prod
    uses: aws.autoscaling.describe_groups
    with: {tags: {Env: [prod, qa]}}
  - id: web
    uses: aws.autoscaling.describe_groups
    with: {names: [web]}
  - id: above_max
    uses: aws.autoscaling.set_desired_capacity
    with: {group: web, desired: 5}
  - id: minus_one
    uses: aws.autoscaling.set_desired_capacity
    with: {group: web, change: "-1"}
  - id: below_min
    uses: aws.autoscaling.set_desired_capacity
    with: {group: web, change: -5}
  - id: same
    uses: aws.autoscaling.set_desired_capacity
    with: {group: web, desired: 1}
  - id: plus_one
    uses: aws.autoscaling.set_desired_capacity
    with: {group: web, change: "+1", honor_cooldown: false}
"#;
    let (code, report, out) = run_moto(&d, &moto, rb, &[]);
    assert_eq!(code, 0, "{}", text(&out));

    let all = result(&report, "all");
    assert_eq!(all["count"], 2, "{all}");
    assert_eq!(all["group"], Value::Null);
    assert_eq!(result(&report, "prod")["names"], json!(["web"]));
    let g = &result(&report, "web")["group"];
    assert_eq!(g["name"], "web", "{g}");
    assert_eq!(
        (g["min"].clone(), g["max"].clone(), g["desired"].clone()),
        (json!(1), json!(3), json!(1))
    );
    assert_eq!(g["in_service"], 1);
    assert_eq!(g["tags"], json!({"Env": "prod", "Team": "sre"}));
    let i = &g["instances"][0];
    assert!(i["id"].as_str().unwrap().starts_with("i-"), "{i}");
    assert_eq!(i["lifecycle_state"], "InService");
    assert_eq!(i["health_status"], "Healthy");
    assert_eq!(i["availability_zone"], "us-east-1a");
    assert_eq!(i["instance_type"], "t3.micro");

    // Above the max: clamped to 3, and said so.
    let r = result(&report, "above_max");
    assert_eq!(
        r,
        &json!({"group": "web", "previous": 1, "requested": 5, "desired": 3, "min": 1, "max": 3,
                "clamped": true, "changed": true})
    );
    let r = result(&report, "minus_one");
    assert_eq!(
        (r["previous"].clone(), r["desired"].clone()),
        (json!(3), json!(2))
    );
    assert_eq!(r["clamped"], false);
    let r = result(&report, "below_min");
    assert_eq!(r["requested"], -3);
    assert_eq!(r["desired"], 1);
    assert_eq!(r["clamped"], true);
    // Already there: no call.
    let r = result(&report, "same");
    assert_eq!(r["changed"], false, "{r}");
    assert_eq!(result(&report, "plus_one")["desired"], 2);
    assert_eq!(py(&moto, r#"print(desired("web"))"#), "2");
    let log = std::fs::read_to_string(d.path("out/logs/above_max.log")).unwrap_or_default();
    assert!(log.contains("1 → 3") && log.contains("clamped"), "{log}");

    // --dry-run: the group is described, the target reported, nothing set.
    let rb = r#"version: 1
name: asg-dry
steps:
  - id: grow
    uses: aws.autoscaling.set_desired_capacity
    with: {group: web, change: 10}
"#;
    let (code, report, out) = run_moto(&d, &moto, rb, &["--dry-run"]);
    assert_eq!(code, 0, "{}", text(&out));
    let r = result(&report, "grow");
    assert_eq!(r["dry_run"], true, "{r}");
    assert_eq!(r["would_change"], true);
    assert_eq!(r["changed"], false);
    assert_eq!(
        (r["previous"].clone(), r["desired"].clone()),
        (json!(2), json!(3))
    );
    assert_eq!(r["clamped"], true);
    assert_eq!(py(&moto, r#"print(desired("web"))"#), "2");

    // Errors: an unknown group (to describe or to scale), both `desired` and `change`.
    let rb = r#"version: 1
name: asg-bad
steps:
  - id: scale_nope
    uses: aws.autoscaling.set_desired_capacity
    continue_on_error: true
    with: {group: nope, desired: 2}
  - id: describe_nope
    uses: aws.autoscaling.describe_groups
    continue_on_error: true
    with: {names: [web, nope]}
  - id: both
    uses: aws.autoscaling.set_desired_capacity
    continue_on_error: true
    with: {group: web, desired: 2, change: 1}
"#;
    let (_, report, out) = run_moto(&d, &moto, rb, &[]);
    let err = |id: &str| {
        step(&report, id)["error"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        err("scale_nope").contains("no Auto Scaling group named `nope` in us-east-1"),
        "{}",
        text(&out)
    );
    assert!(
        err("describe_nope").contains("`nope`"),
        "{}",
        err("describe_nope")
    );
    assert!(err("both").contains("exactly one"), "{}", err("both"));
    assert_eq!(py(&moto, r#"print(desired("web"))"#), "2");
}

#[test]
fn ecs_describe_update_wait_and_failures() {
    let moto = Moto::start().unwrap_or_else(|e| panic!("{e}"));
    let d = Dir::new("aws-scaling-ecs");
    // desiredCount=0: see the module comment (moto runs no tasks).
    py(
        &moto,
        r#"
ecs.create_cluster(clusterName="shop")
for image in ["nginx:1", "nginx:2"]:
    ecs.register_task_definition(family="web",
        containerDefinitions=[{"name": "web", "image": image, "memory": 128}])
ecs.create_service(cluster="shop", serviceName="web", taskDefinition="web:1", desiredCount=0)
ecs.create_service(cluster="shop", serviceName="api", taskDefinition="web:1", desiredCount=0)
"#,
    );
    let rb = r#"version: 1
name: ecs
steps:
  - id: before
    uses: aws.ecs.describe_services
    with: {cluster: shop, services: [web, api]}
  - id: scale
    uses: aws.ecs.update_service
    with:
      cluster: shop
      service: web
      desired_count: 2
      force_new_deployment: true
      wait: true
      poll_interval: 1s
      wait_timeout: 30s
  - id: after
    uses: aws.ecs.describe_services
    with: {cluster: shop, services: [web]}
"#;
    let (code, report, out) = run_moto(&d, &moto, rb, &[]);
    assert_eq!(code, 0, "{}", text(&out));
    let before = result(&report, "before");
    assert_eq!(before["count"], 2, "{before}");
    assert_eq!(before["all_steady"], true);
    assert_eq!(before["service"], Value::Null);
    let web = &before["services"][0];
    assert_eq!(web["name"], "web");
    assert_eq!(web["status"], "ACTIVE");
    assert!(web["arn"].as_str().unwrap().contains(":service/"), "{web}");
    assert!(web["task_definition"].as_str().unwrap().ends_with("web:1"));
    let dep = &web["deployments"][0];
    assert_eq!(dep["status"], "PRIMARY");
    assert_eq!(dep["rollout_state"], "COMPLETED");
    let first_deployment = dep["id"].clone();

    let s = result(&report, "scale");
    assert_eq!(s["desired"], 2, "{s}");
    assert_eq!(s["running"], 2);
    assert_eq!(s["steady"], true);
    assert_eq!(s["previous"]["desired"], 0);
    assert_eq!(s["changes"]["desired_count"], json!({"from": 0, "to": 2}));
    assert_eq!(s["changes"]["force_new_deployment"], true);
    // Moto replaces the deployment's id on a forced deployment.
    assert_ne!(s["deployments"][0]["id"], first_deployment);
    let log = std::fs::read_to_string(d.path("out/logs/scale.log")).unwrap_or_default();
    assert!(log.contains("steady: web: running 2/2"), "{log}");
    let after = result(&report, "after");
    assert_eq!(after["service"]["desired"], 2);
    assert_eq!(after["service"]["running"], 2);

    // --dry-run: the service and the task definition are looked up, nothing changes.
    let rb = r#"version: 1
name: ecs-dry
steps:
  - id: plan
    uses: aws.ecs.update_service
    with: {cluster: shop, service: web, desired_count: 5, task_definition: "web:2", wait: true}
"#;
    let (code, report, out) = run_moto(&d, &moto, rb, &["--dry-run"]);
    assert_eq!(code, 0, "{}", text(&out));
    let p = result(&report, "plan");
    assert_eq!(p["dry_run"], true, "{p}");
    assert_eq!(p["would_change"], true);
    assert_eq!(p["desired"], 2);
    assert_eq!(p["changes"]["desired_count"], json!({"from": 2, "to": 5}));
    assert!(p["changes"]["task_definition"]["to"]
        .as_str()
        .unwrap()
        .ends_with("task-definition/web:2"));
    let now = py(
        &moto,
        r#"s = ecs.describe_services(cluster="shop", services=["web"])["services"][0]
print(s["desiredCount"], s["taskDefinition"].split("/")[-1])"#,
    );
    assert_eq!(now, "2 web:1");

    // Failures: a missing service (ECS's MISSING), a missing cluster (an AWS error), a
    // dry run naming a task definition that does not exist, nothing to update.
    let rb = r#"version: 1
name: ecs-bad
steps:
  - id: missing
    uses: aws.ecs.describe_services
    continue_on_error: true
    with: {cluster: shop, services: [web, nope]}
  - id: no_cluster
    uses: aws.ecs.describe_services
    continue_on_error: true
    with: {cluster: nowhere, services: [web]}
  - id: update_missing
    uses: aws.ecs.update_service
    continue_on_error: true
    with: {cluster: shop, service: nope, desired_count: 1}
  - id: nothing
    uses: aws.ecs.update_service
    continue_on_error: true
    with: {cluster: shop, service: web}
"#;
    let (code, report, out) = run_moto(&d, &moto, rb, &[]);
    assert_eq!(code, 0, "{}", text(&out));
    let err = |id: &str| {
        let s = step(&report, id);
        assert_eq!(s["status"], "failed", "{s}");
        s["error"].as_str().unwrap_or_default().to_string()
    };
    assert!(
        err("missing").contains("service `nope` in cluster `shop`: MISSING"),
        "{}",
        err("missing")
    );
    assert!(
        err("no_cluster").contains("DescribeServices: ClusterNotFoundException"),
        "{}",
        err("no_cluster")
    );
    assert!(
        err("update_missing").contains("MISSING"),
        "{}",
        err("update_missing")
    );
    assert!(
        err("nothing").contains("nothing to update"),
        "{}",
        err("nothing")
    );

    let rb = r#"version: 1
name: ecs-dry-bad
steps:
  - id: plan
    uses: aws.ecs.update_service
    with: {cluster: shop, service: web, task_definition: "nope:7"}
"#;
    let (code, report, out) = run_moto(&d, &moto, rb, &["--dry-run"]);
    assert_eq!(code, 1, "{}", text(&out));
    let msg = step(&report, "plan")["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(msg.starts_with("DescribeTaskDefinition: "), "{msg}");
}

#[test]
fn asg_cpu_scaling_runbook() {
    let moto = Moto::start().unwrap_or_else(|e| panic!("{e}"));
    let shim = CborShim::start(&moto);
    let d = Dir::new("aws-scaling-runbook");
    py(
        &moto,
        r#"
group("hot", 1, 3, 2)
group("cold", 1, 4, 3)
group("calm", 1, 4, 2)
group("idle", 1, 4, 2)
group("dry", 1, 4, 2)
cpu("hot", [(6, 90.0), (4, 85.0), (2, 95.0)])
cpu("cold", [(6, 5.0), (4, 10.0), (2, 15.0)])
cpu("calm", [(6, 40.0), (4, 50.0), (2, 60.0)])
cpu("dry", [(6, 99.0), (2, 97.0)])
"#,
    );
    let rb = shipped("asg-cpu-scaling.yaml");
    let run = |params: &[&str]| {
        let mut args = Vec::new();
        for p in params {
            args.push("-p");
            args.push(p);
        }
        run_file(&d, &rb, &args, |cmd| shim.apply(&moto, cmd))
    };

    // High CPU: +2 requested, clamped at the max of 3.
    let (code, report, out) = run(&["group=hot", "step=2"]);
    assert_eq!(code, 0, "{}", text(&out));
    let o = &report["outputs"];
    assert_eq!(o["average"], json!(90.0), "{o}");
    assert_eq!(o["decision"], "scale_out");
    assert_eq!(o["desired_before"], 2);
    assert_eq!(o["desired_after"], 3);
    assert_eq!(o["clamped"], true);
    assert_eq!(step(&report, "scale_in")["status"], "skipped");
    assert_eq!(py(&moto, r#"print(desired("hot"))"#), "3");

    // Low CPU: one fewer.
    let (code, report, out) = run(&["group=cold"]);
    assert_eq!(code, 0, "{}", text(&out));
    let o = &report["outputs"];
    assert_eq!(o["decision"], "scale_in", "{o}");
    assert_eq!(
        (o["desired_before"].clone(), o["desired_after"].clone()),
        (json!(3), json!(2))
    );
    assert_eq!(o["clamped"], false);
    assert_eq!(step(&report, "scale_out")["status"], "skipped");
    assert_eq!(py(&moto, r#"print(desired("cold"))"#), "2");

    // In the band: nothing changes. Thresholds are params.
    let (code, report, out) = run(&["group=calm"]);
    assert_eq!(code, 0, "{}", text(&out));
    assert_eq!(
        report["outputs"]["decision"], "hold",
        "{}",
        report["outputs"]
    );
    assert_eq!(report["outputs"]["desired_after"], 2);
    let (code, report, _) = run(&["group=calm", "high=45"]);
    assert_eq!(code, 0);
    assert_eq!(report["outputs"]["decision"], "scale_out");
    assert_eq!(py(&moto, r#"print(desired("calm"))"#), "3");

    // No datapoints: a decision, not a failure.
    let (code, report, out) = run(&["group=idle"]);
    assert_eq!(code, 0, "{}", text(&out));
    let o = &report["outputs"];
    assert_eq!(o["decision"], "no_data", "{o}");
    assert_eq!(o["average"], Value::Null);
    assert_eq!(o["desired_after"], 2);
    assert_eq!(py(&moto, r#"print(desired("idle"))"#), "2");

    // --dry-run: reads for real, reports what would be set, changes nothing.
    let (code, report, out) = run_file(&d, &rb, &["-p", "group=dry", "--dry-run"], |cmd| {
        shim.apply(&moto, cmd)
    });
    assert_eq!(code, 0, "{}", text(&out));
    let o = &report["outputs"];
    assert_eq!(o["decision"], "scale_out", "{o}");
    assert_eq!(o["desired_after"], 3);
    assert_eq!(result(&report, "scale_out")["dry_run"], true);
    assert_eq!(py(&moto, r#"print(desired("dry"))"#), "2");
}
