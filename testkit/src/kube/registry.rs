//! The static table of served resources, and the documents generated from it: legacy
//! discovery (`/api`, `/apis`, `/api/v1`, `/apis/{g}/{v}`), aggregated discovery v2, and the
//! OpenAPI v3 stubs that make `kubectl apply` trust server-side field validation.

use serde_json::{json, Map, Value};

/// A subresource a resource offers.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Sub {
    Status,
    Scale,
    Log,
    Exec,
}

impl Sub {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Sub::Status => "status",
            Sub::Scale => "scale",
            Sub::Log => "log",
            Sub::Exec => "exec",
        }
    }
}

/// One served resource (a group/version/plural).
#[derive(Debug)]
pub(crate) struct Resource {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub subs: &'static [Sub],
    /// Field selector labels beyond `metadata.name` and `metadata.namespace`.
    pub fields: &'static [&'static str],
    /// A DELETE answers with the object (`ReturnDeletedObject` in the real registry) rather
    /// than a `Status`.
    pub returns_deleted: bool,
}

const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
const NS_VERBS: &[&str] = &[
    "create", "delete", "get", "list", "patch", "update", "watch",
];

macro_rules! res {
    ($g:expr, $v:expr, $plural:expr, $singular:expr, $kind:expr, $ns:expr, $short:expr, $cat:expr, $subs:expr, $fields:expr, $ret:expr) => {
        Resource {
            group: $g,
            version: $v,
            plural: $plural,
            singular: $singular,
            kind: $kind,
            namespaced: $ns,
            short_names: $short,
            categories: $cat,
            subs: $subs,
            fields: $fields,
            returns_deleted: $ret,
        }
    };
}

const ALL: &[&str] = &["all"];
const POD_FIELDS: &[&str] = &[
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.nominatedNodeName",
];

const EVENT_FIELDS: &[&str] = &[
    "involvedObject.kind",
    "involvedObject.name",
    "involvedObject.namespace",
    "involvedObject.uid",
    "reason",
    "type",
];

/// Every served resource. Discovery, OpenAPI and routing all come from this table.
/// Columns: group, version, plural, singular, kind, namespaced, short names, categories,
/// subresources, extra field-selector labels, whether DELETE answers with the object.
#[rustfmt::skip]
pub(crate) static RESOURCES: &[Resource] = &[
    res!("", "v1", "namespaces", "namespace", "Namespace", false, &["ns"], &[], &[Sub::Status], &["status.phase"], true),
    res!("", "v1", "nodes", "node", "Node", false, &["no"], &[], &[Sub::Status], &["spec.unschedulable"], false),
    res!("", "v1", "pods", "pod", "Pod", true, &["po"], ALL, &[Sub::Status, Sub::Log, Sub::Exec], POD_FIELDS, true),
    res!("", "v1", "services", "service", "Service", true, &["svc"], ALL, &[Sub::Status], &[], true),
    res!("", "v1", "configmaps", "configmap", "ConfigMap", true, &["cm"], &[], &[], &[], false),
    res!("", "v1", "secrets", "secret", "Secret", true, &[], &[], &[], &["type"], false),
    res!("", "v1", "serviceaccounts", "serviceaccount", "ServiceAccount", true, &["sa"], &[], &[], &[], true),
    res!("", "v1", "events", "event", "Event", true, &["ev"], &[], &[], EVENT_FIELDS, false),
    res!("apps", "v1", "deployments", "deployment", "Deployment", true, &["deploy"], ALL, &[Sub::Status, Sub::Scale], &[], false),
    res!("apps", "v1", "replicasets", "replicaset", "ReplicaSet", true, &["rs"], ALL, &[Sub::Status, Sub::Scale], &["status.replicas"], false),
    res!("apps", "v1", "statefulsets", "statefulset", "StatefulSet", true, &["sts"], ALL, &[Sub::Status, Sub::Scale], &[], false),
    res!("apps", "v1", "daemonsets", "daemonset", "DaemonSet", true, &["ds"], ALL, &[Sub::Status], &[], false),
    res!("apps", "v1", "controllerrevisions", "controllerrevision", "ControllerRevision", true, &[], &[], &[], &[], false),
    res!("batch", "v1", "jobs", "job", "Job", true, &[], ALL, &[Sub::Status], &["status.successful"], false),
    res!("batch", "v1", "cronjobs", "cronjob", "CronJob", true, &["cj"], ALL, &[Sub::Status], &[], false),
];

impl Resource {
    /// `v1` or `apps/v1`.
    pub(crate) fn api_version(&self) -> String {
        group_version(self.group, self.version)
    }

    /// `pods` or `deployments.apps`: how error messages name the resource.
    pub(crate) fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `Pod` or `Deployment.apps`: how `Invalid` messages name the kind.
    pub(crate) fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.to_string()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    /// Whether the kind has `metadata.generation` (bumped on spec changes): the workloads.
    pub(crate) fn tracks_generation(&self) -> bool {
        matches!(
            self.kind,
            "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" | "Job" | "CronJob"
        )
    }

    pub(crate) fn has(&self, sub: Sub) -> bool {
        self.subs.contains(&sub)
    }

    pub(crate) fn verbs(&self) -> &'static [&'static str] {
        if self.plural == "namespaces" {
            NS_VERBS
        } else {
            VERBS
        }
    }

    /// Whether `label` may be used in a field selector on this resource.
    pub(crate) fn supports_field(&self, label: &str) -> bool {
        label == "metadata.name"
            || (label == "metadata.namespace" && self.namespaced)
            || self.fields.contains(&label)
    }

    /// The subresource's entry in an `APIResourceList`.
    fn sub_entry(&self, sub: Sub) -> Value {
        let (group, version, kind, verbs): (&str, &str, &str, &[&str]) = match sub {
            Sub::Status => (
                self.group,
                self.version,
                self.kind,
                &["get", "patch", "update"],
            ),
            Sub::Scale => ("autoscaling", "v1", "Scale", &["get", "patch", "update"]),
            Sub::Log => (self.group, self.version, self.kind, &["get"]),
            Sub::Exec => (
                self.group,
                self.version,
                "PodExecOptions",
                &["create", "get"],
            ),
        };
        let mut e = json!({
            "name": format!("{}/{}", self.plural, sub.name()),
            "singularName": "",
            "namespaced": self.namespaced,
        });
        if sub == Sub::Scale {
            e["group"] = json!(group);
            e["version"] = json!(version);
        }
        e["kind"] = json!(kind);
        e["verbs"] = json!(verbs);
        e
    }

    fn entry(&self) -> Value {
        let mut e = json!({
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": self.verbs(),
        });
        if !self.short_names.is_empty() {
            e["shortNames"] = json!(self.short_names);
        }
        if !self.categories.is_empty() {
            e["categories"] = json!(self.categories);
        }
        e["storageVersionHash"] = json!(storage_hash(self));
        e
    }
}

/// A stable, made-up storage version hash (8 bytes, base64-ish), as discovery carries one.
fn storage_hash(r: &Resource) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut h = fnv32(format!("{}/{}", r.api_version(), r.plural).as_bytes()) as u64;
    let mut s = String::new();
    for _ in 0..11 {
        s.push(ALPHABET[(h % 64) as usize] as char);
        h = h / 64 + 0x9e37_79b9;
    }
    s.push('=');
    s
}

/// FNV-1a, 32 bits.
pub(crate) fn fnv32(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

pub(crate) fn group_version(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    }
}

/// The resource with this group, version and plural.
pub(crate) fn find(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The resource for an `apiVersion` and a kind (`Deployment`), or a plural (`deployments`),
/// a singular or a short name, as the test API takes them.
pub(crate) fn lookup(api_version: &str, kind: &str) -> Option<&'static Resource> {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    RESOURCES.iter().find(|r| {
        r.group == group
            && r.version == version
            && (r.kind == kind
                || r.plural == kind
                || r.singular == kind
                || r.short_names.contains(&kind))
    })
}

/// The resource for an object's `apiVersion` and `kind`.
pub(crate) fn of_object(obj: &Value) -> Option<&'static Resource> {
    let api_version = obj.get("apiVersion")?.as_str()?;
    let kind = obj.get("kind")?.as_str()?;
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.kind == kind)
}

/// The served group/versions, core first, in table order.
fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for r in RESOURCES {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}

/// `GET /api`.
pub(crate) fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

fn api_group(group: &str) -> Option<Value> {
    let versions: Vec<Value> = group_versions()
        .into_iter()
        .filter(|(g, _)| *g == group)
        .map(|(g, v)| json!({"groupVersion": group_version(g, v), "version": v}))
        .collect();
    let preferred = versions.first()?.clone();
    Some(json!({"name": group, "versions": versions, "preferredVersion": preferred}))
}

/// `GET /apis/{group}`.
pub(crate) fn group_doc(group: &str) -> Option<Value> {
    let mut doc = api_group(group)?;
    let map = doc.as_object_mut()?;
    let mut out = Map::new();
    out.insert("kind".into(), json!("APIGroup"));
    out.insert("apiVersion".into(), json!("v1"));
    out.append(map);
    Some(Value::Object(out))
}

/// `GET /apis`.
pub(crate) fn api_group_list() -> Value {
    let mut groups: Vec<&str> = Vec::new();
    for (g, _) in group_versions() {
        if !g.is_empty() && !groups.contains(&g) {
            groups.push(g);
        }
    }
    let groups: Vec<Value> = groups.into_iter().filter_map(api_group).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `GET /api/v1` or `GET /apis/{group}/{version}`.
pub(crate) fn resource_list(group: &str, version: &str) -> Value {
    let mut resources = Vec::new();
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        resources.push(r.entry());
        for sub in r.subs {
            resources.push(r.sub_entry(*sub));
        }
    }
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version(group, version),
        "resources": resources,
    })
}

/// The media type of an aggregated discovery answer.
pub(crate) const AGGREGATED_TYPE: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// Whether an `Accept` header asks for aggregated discovery v2.
pub(crate) fn wants_aggregated(accept: &str) -> bool {
    accept.split(',').any(|part| {
        let p: String = part.chars().filter(|c| !c.is_whitespace()).collect();
        p.contains("g=apidiscovery.k8s.io")
            && p.contains("v=v2;")
            && p.contains("as=APIGroupDiscoveryList")
    })
}

/// `GET /api` (`core == true`) or `GET /apis` as an aggregated `APIGroupDiscoveryList`.
pub(crate) fn aggregated(core: bool) -> Value {
    let mut items = Vec::new();
    let mut groups: Vec<&str> = Vec::new();
    for (g, _) in group_versions() {
        if g.is_empty() == core && !groups.contains(&g) {
            groups.push(g);
        }
    }
    for group in groups {
        let mut versions = Vec::new();
        for (_, version) in group_versions().into_iter().filter(|(g, _)| *g == group) {
            let mut resources = Vec::new();
            for r in RESOURCES
                .iter()
                .filter(|r| r.group == group && r.version == version)
            {
                let mut e = json!({
                    "resource": r.plural,
                    "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
                    "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
                    "singularResource": r.singular,
                    "verbs": r.verbs(),
                });
                if !r.short_names.is_empty() {
                    e["shortNames"] = json!(r.short_names);
                }
                if !r.categories.is_empty() {
                    e["categories"] = json!(r.categories);
                }
                if !r.subs.is_empty() {
                    let subs: Vec<Value> = r
                        .subs
                        .iter()
                        .map(|s| {
                            let entry = r.sub_entry(*s);
                            let (g, v) = match s {
                                Sub::Scale => ("autoscaling", "v1"),
                                _ => (r.group, r.version),
                            };
                            json!({
                                "subresource": s.name(),
                                "responseKind": {"group": g, "version": v, "kind": entry["kind"]},
                                "verbs": entry["verbs"],
                            })
                        })
                        .collect();
                    e["subresources"] = json!(subs);
                }
                resources.push(e);
            }
            versions
                .push(json!({"version": version, "resources": resources, "freshness": "Current"}));
        }
        items.push(
            json!({"metadata": {"name": group, "creationTimestamp": null}, "versions": versions}),
        );
    }
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
}

/// The OpenAPI v3 path of a group/version: `api/v1` or `apis/apps/v1`.
fn openapi_gv(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `GET /openapi/v3`: the index of group/version documents.
pub(crate) fn openapi_index() -> Value {
    let mut paths = Map::new();
    for (g, v) in group_versions() {
        let p = openapi_gv(g, v);
        paths.insert(
            p.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash=0001")}),
        );
    }
    json!({ "paths": paths })
}

/// `GET /openapi/v3/{api/v1 | apis/g/v}`: a stub with one operation per write path, each
/// tagged with its group/version/kind and the `fieldValidation` parameter. That is what
/// kubectl checks before it leaves validation to the server (`fieldValidation=Strict`); it
/// carries no schemas.
pub(crate) fn openapi_doc(gv_path: &str) -> Option<Value> {
    let (group, version) = group_versions()
        .into_iter()
        .find(|(g, v)| openapi_gv(g, v) == gv_path)?;
    let param = json!([{"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}}]);
    let mut paths = Map::new();
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
        let op =
            json!({"x-kubernetes-group-version-kind": gvk, "parameters": param, "responses": {}});
        let base = if r.namespaced {
            format!("/{gv_path}/namespaces/{{namespace}}/{}", r.plural)
        } else {
            format!("/{gv_path}/{}", r.plural)
        };
        paths.insert(base.clone(), json!({"post": op}));
        paths.insert(format!("{base}/{{name}}"), json!({"put": op, "patch": op}));
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": super::GIT_VERSION},
        "paths": paths,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_lists_subresources_and_scale_group() {
        let list = resource_list("apps", "v1");
        let names: Vec<&str> = list["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"deployments/scale"));
        assert!(names.contains(&"deployments/status"));
        let scale = list["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "deployments/scale")
            .unwrap();
        assert_eq!(scale["group"], "autoscaling");
        assert_eq!(scale["kind"], "Scale");
    }

    #[test]
    fn lookup_by_kind_or_plural() {
        assert_eq!(
            lookup("apps/v1", "Deployment").unwrap().plural,
            "deployments"
        );
        assert_eq!(lookup("v1", "pods").unwrap().kind, "Pod");
        assert!(lookup("apps/v1", "Pod").is_none());
        assert!(wants_aggregated(
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
        ));
        assert!(!wants_aggregated("application/json, */*"));
    }
}
