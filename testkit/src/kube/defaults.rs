//! What the API server itself adds to or checks on every write: defaulting (the fields the
//! rollout logic of clients relies on) and the little validation the fake does.

use serde_json::{json, Value};

use super::registry::Resource;
use super::selector::{selector_string, LabelSelector};
use super::status::{invalid, ApiResult};

/// Sets `obj[path]` to `value` when it is missing or null (creating parent maps).
fn default(obj: &mut Value, path: &[&str], value: Value) {
    let mut cur = obj;
    for (i, part) in path.iter().enumerate() {
        if !cur.is_object() {
            return;
        }
        let last = i + 1 == path.len();
        let entry = &mut cur[*part];
        if last {
            if entry.is_null() {
                *entry = value;
            }
            return;
        }
        if entry.is_null() {
            *entry = json!({});
        }
        cur = entry;
    }
}

/// Defaults applied on every write (create, update, patch, apply).
pub(crate) fn apply(r: &Resource, obj: &mut Value) {
    match (r.group, r.kind) {
        ("apps", "Deployment") => {
            default(obj, &["spec", "replicas"], json!(1));
            default(obj, &["spec", "revisionHistoryLimit"], json!(10));
            default(obj, &["spec", "progressDeadlineSeconds"], json!(600));
            default(obj, &["spec", "strategy", "type"], json!("RollingUpdate"));
            if obj["spec"]["strategy"]["type"] == "RollingUpdate" {
                default(
                    obj,
                    &["spec", "strategy", "rollingUpdate", "maxUnavailable"],
                    json!("25%"),
                );
                default(
                    obj,
                    &["spec", "strategy", "rollingUpdate", "maxSurge"],
                    json!("25%"),
                );
            }
        }
        ("apps", "ReplicaSet") => default(obj, &["spec", "replicas"], json!(1)),
        ("apps", "StatefulSet") => {
            default(obj, &["spec", "replicas"], json!(1));
            default(obj, &["spec", "revisionHistoryLimit"], json!(10));
            default(obj, &["spec", "podManagementPolicy"], json!("OrderedReady"));
            default(
                obj,
                &["spec", "updateStrategy", "type"],
                json!("RollingUpdate"),
            );
            if obj["spec"]["updateStrategy"]["type"] == "RollingUpdate" {
                default(
                    obj,
                    &["spec", "updateStrategy", "rollingUpdate", "partition"],
                    json!(0),
                );
            }
        }
        ("apps", "DaemonSet") => {
            default(obj, &["spec", "revisionHistoryLimit"], json!(10));
            default(
                obj,
                &["spec", "updateStrategy", "type"],
                json!("RollingUpdate"),
            );
            if obj["spec"]["updateStrategy"]["type"] == "RollingUpdate" {
                default(
                    obj,
                    &["spec", "updateStrategy", "rollingUpdate", "maxUnavailable"],
                    json!(1),
                );
                default(
                    obj,
                    &["spec", "updateStrategy", "rollingUpdate", "maxSurge"],
                    json!(0),
                );
            }
        }
        ("batch", "Job") => {
            default(obj, &["spec", "completions"], json!(1));
            default(obj, &["spec", "parallelism"], json!(1));
            default(obj, &["spec", "backoffLimit"], json!(6));
            default(obj, &["spec", "completionMode"], json!("NonIndexed"));
            default(obj, &["spec", "suspend"], json!(false));
        }
        ("", "Pod") => {
            default(obj, &["spec", "restartPolicy"], json!("Always"));
            default(obj, &["spec", "terminationGracePeriodSeconds"], json!(30));
        }
        ("", "Service") => default(obj, &["spec", "type"], json!("ClusterIP")),
        _ => {}
    }
}

/// Defaults of a create only: a Job's selector and pod labels (from its uid), a Service's
/// cluster IP, the initial status of kinds with a status subresource.
pub(crate) fn on_create(r: &Resource, obj: &mut Value, uid: &str, seq: u64) {
    match (r.group, r.kind) {
        ("batch", "Job") => {
            let name = obj["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if obj["spec"]["manualSelector"] != json!(true) {
                default(
                    obj,
                    &["spec", "selector"],
                    json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}),
                );
                for (k, v) in [
                    ("batch.kubernetes.io/controller-uid", uid),
                    ("batch.kubernetes.io/job-name", name.as_str()),
                    ("controller-uid", uid),
                    ("job-name", name.as_str()),
                ] {
                    default(
                        obj,
                        &["spec", "template", "metadata", "labels", k],
                        json!(v),
                    );
                }
            }
        }
        ("", "Service") if obj["spec"]["type"] != "ExternalName" => {
            default(
                obj,
                &["spec", "clusterIP"],
                json!(format!("10.96.{}.{}", seq / 250 % 250, seq % 250 + 2)),
            );
            let ip = obj["spec"]["clusterIP"].clone();
            default(obj, &["spec", "clusterIPs"], json!([ip]));
        }
        _ => {}
    }
    if r.has(super::registry::Sub::Status) {
        obj["status"] = initial_status(r);
    }
}

/// The status a fresh object of this kind gets.
pub(crate) fn initial_status(r: &Resource) -> Value {
    match r.kind {
        "Pod" => json!({"phase": "Pending", "qosClass": "BestEffort"}),
        "Namespace" => json!({"phase": "Active"}),
        "Service" => json!({"loadBalancer": {}}),
        _ => json!({}),
    }
}

/// A lowercase RFC 1123 subdomain, as object names must be.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

/// Checks a create or an update; 422 Invalid as the real validation words it.
pub(crate) fn validate(r: &Resource, obj: &Value) -> ApiResult<()> {
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    if name.is_empty() {
        return Err(invalid(
            r,
            name,
            &[(
                "FieldValueRequired",
                "metadata.name",
                "Required value: name or generateName is required",
            )],
        ));
    }
    if !valid_name(name) {
        let msg = format!(
            "Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case \
             alphanumeric characters, '-' or '.', and must start and end with an alphanumeric \
             character (e.g. 'example.com', regex used for validation is \
             '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
        );
        return Err(invalid(
            r,
            name,
            &[("FieldValueInvalid", "metadata.name", &msg)],
        ));
    }
    if matches!(
        r.kind,
        "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" | "Job"
    ) {
        let sel = &obj["spec"]["selector"];
        if !sel.is_object() {
            return Err(invalid(
                r,
                name,
                &[("FieldValueRequired", "spec.selector", "Required value")],
            ));
        }
        let labels = json!({"metadata": {"labels": obj["spec"]["template"]["metadata"]["labels"]}});
        let matches = LabelSelector::parse(&selector_string(sel)).is_ok_and(|s| s.matches(&labels));
        if !matches {
            let msg = format!(
                "Invalid value: {}: `selector` does not match template `labels`",
                obj["spec"]["template"]["metadata"]["labels"]
            );
            return Err(invalid(
                r,
                name,
                &[("FieldValueInvalid", "spec.template.metadata.labels", &msg)],
            ));
        }
    }
    if r.kind == "Job" {
        let policy = obj["spec"]["template"]["spec"]["restartPolicy"]
            .as_str()
            .unwrap_or("Always");
        if policy != "Never" && policy != "OnFailure" {
            let msg = format!(
                "Unsupported value: \"{policy}\": supported values: \"OnFailure\", \"Never\""
            );
            return Err(invalid(
                r,
                name,
                &[(
                    "FieldValueNotSupported",
                    "spec.template.spec.restartPolicy",
                    &msg,
                )],
            ));
        }
    }
    Ok(())
}
