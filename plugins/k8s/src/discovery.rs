//! Discovery: from `apiVersion` + `kind` (or a plural or short name: `deploy`, `pods`) to the
//! resource the API serves and its scope. One request per group version per run, cached on the
//! connection; a miss asks again once (a CRD applied by an earlier step).

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::APIResource;
use kube::api::{ApiResource, DynamicObject};
use kube::{Api, Client};
use opsbook_engine::action::{ActionError, StepContext};

use crate::client::Conn;

/// Kinds opsbook knows without asking the API which group they are in:
/// (`apiVersion`, `Kind`, plural, short names).
const BUILTIN: &[(&str, &str, &str, &[&str])] = &[
    ("v1", "Pod", "pods", &["po"]),
    ("v1", "Service", "services", &["svc"]),
    ("v1", "ConfigMap", "configmaps", &["cm"]),
    ("v1", "Secret", "secrets", &[]),
    ("v1", "Namespace", "namespaces", &["ns"]),
    ("v1", "Node", "nodes", &["no"]),
    (
        "v1",
        "PersistentVolumeClaim",
        "persistentvolumeclaims",
        &["pvc"],
    ),
    ("v1", "PersistentVolume", "persistentvolumes", &["pv"]),
    ("v1", "ServiceAccount", "serviceaccounts", &["sa"]),
    ("v1", "Event", "events", &["ev"]),
    ("v1", "Endpoints", "endpoints", &["ep"]),
    ("v1", "ResourceQuota", "resourcequotas", &["quota"]),
    ("v1", "LimitRange", "limitranges", &["limits"]),
    (
        "v1",
        "ReplicationController",
        "replicationcontrollers",
        &["rc"],
    ),
    ("apps/v1", "Deployment", "deployments", &["deploy"]),
    ("apps/v1", "StatefulSet", "statefulsets", &["sts"]),
    ("apps/v1", "DaemonSet", "daemonsets", &["ds"]),
    ("apps/v1", "ReplicaSet", "replicasets", &["rs"]),
    ("apps/v1", "ControllerRevision", "controllerrevisions", &[]),
    ("batch/v1", "Job", "jobs", &[]),
    ("batch/v1", "CronJob", "cronjobs", &["cj"]),
    ("networking.k8s.io/v1", "Ingress", "ingresses", &["ing"]),
    (
        "networking.k8s.io/v1",
        "NetworkPolicy",
        "networkpolicies",
        &["netpol"],
    ),
    (
        "networking.k8s.io/v1",
        "IngressClass",
        "ingressclasses",
        &[],
    ),
    (
        "policy/v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
        &["pdb"],
    ),
    (
        "autoscaling/v2",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
        &["hpa"],
    ),
    ("rbac.authorization.k8s.io/v1", "Role", "roles", &[]),
    (
        "rbac.authorization.k8s.io/v1",
        "RoleBinding",
        "rolebindings",
        &[],
    ),
    (
        "rbac.authorization.k8s.io/v1",
        "ClusterRole",
        "clusterroles",
        &[],
    ),
    (
        "rbac.authorization.k8s.io/v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        &[],
    ),
    (
        "storage.k8s.io/v1",
        "StorageClass",
        "storageclasses",
        &["sc"],
    ),
    (
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        &["crd", "crds"],
    ),
    ("coordination.k8s.io/v1", "Lease", "leases", &[]),
    (
        "discovery.k8s.io/v1",
        "EndpointSlice",
        "endpointslices",
        &[],
    ),
];

/// The built-in `(apiVersion, Kind)` for a kind, plural or short name (any case).
pub fn builtin(name: &str) -> Option<(&'static str, &'static str)> {
    let n = name.to_ascii_lowercase();
    BUILTIN
        .iter()
        .find(|(_, kind, plural, short)| {
            kind.eq_ignore_ascii_case(&n)
                || *plural == n
                || short.contains(&n.as_str())
                || (n.ends_with('s') && kind.eq_ignore_ascii_case(&n[..n.len() - 1]))
        })
        .map(|(av, kind, _, _)| (*av, *kind))
}

/// A resource of the API.
#[derive(Debug, Clone)]
pub struct Kind {
    /// Group, version, `apiVersion`, `Kind` and plural.
    pub ar: ApiResource,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// Subresources it serves (`status`, `scale`, `log`, `exec`).
    pub subresources: Vec<String>,
}

impl Kind {
    /// The API for objects of this kind in `ns` (ignored for cluster-scoped kinds).
    pub fn api(&self, client: &Client, ns: &str) -> Api<DynamicObject> {
        if self.namespaced {
            Api::namespaced_with(client.clone(), ns, &self.ar)
        } else {
            Api::all_with(client.clone(), &self.ar)
        }
    }

    /// The API across every namespace (lists and watches).
    pub fn api_all(&self, client: &Client) -> Api<DynamicObject> {
        Api::all_with(client.clone(), &self.ar)
    }

    /// The namespace objects of this kind live in (`None` for cluster-scoped kinds).
    pub fn ns<'a>(&self, ns: &'a str) -> Option<&'a str> {
        self.namespaced.then_some(ns)
    }

    /// `deployments.apps`, as the API names the resource in messages.
    pub fn resource(&self) -> String {
        if self.ar.group.is_empty() {
            self.ar.plural.clone()
        } else {
            format!("{}.{}", self.ar.plural, self.ar.group)
        }
    }
}

/// What the run learnt about one cluster's API.
#[derive(Default)]
pub struct Discovery {
    lists: tokio::sync::Mutex<HashMap<String, Arc<Vec<APIResource>>>>,
}

impl Discovery {
    async fn list(
        &self,
        client: &Client,
        cx: &StepContext,
        api_version: &str,
        fresh: bool,
    ) -> Result<Arc<Vec<APIResource>>, ActionError> {
        if !fresh {
            if let Some(l) = self.lists.lock().await.get(api_version) {
                return Ok(l.clone());
            }
        }
        let what = format!("discovery of {api_version}");
        let list = crate::retry::read(cx, &what, || async {
            if api_version.contains('/') {
                client.list_api_group_resources(api_version).await
            } else {
                client.list_core_api_resources(api_version).await
            }
        })
        .await
        .map_err(|e| {
            if e.details.get("code").and_then(|c| c.as_u64()) == Some(404) {
                ActionError::permanent(format!(
                    "the API server does not serve apiVersion `{api_version}`"
                ))
                .with_details(e.details)
            } else {
                e
            }
        })?;
        let list = Arc::new(list.resources);
        self.lists
            .lock()
            .await
            .insert(api_version.to_string(), list.clone());
        Ok(list)
    }
}

fn find(list: &[APIResource], name: &str) -> Option<APIResource> {
    let top = || list.iter().filter(|r| !r.name.contains('/'));
    top().find(|r| r.kind == name).cloned().or_else(|| {
        let n = name.to_ascii_lowercase();
        top()
            .find(|r| {
                r.kind.eq_ignore_ascii_case(&n)
                    || r.name == n
                    || r.singular_name == n
                    || r.short_names.as_ref().is_some_and(|s| s.contains(&n))
            })
            .cloned()
    })
}

fn kind_of(api_version: &str, r: &APIResource, list: &[APIResource]) -> Kind {
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (String::new(), api_version.to_string()),
    };
    let prefix = format!("{}/", r.name);
    Kind {
        ar: ApiResource {
            group,
            version,
            api_version: api_version.to_string(),
            kind: r.kind.clone(),
            plural: r.name.clone(),
        },
        namespaced: r.namespaced,
        subresources: list
            .iter()
            .filter_map(|s| s.name.strip_prefix(&prefix).map(str::to_string))
            .collect(),
    }
}

/// The resource for `kind` (a Kind, plural or short name) in `api_version` (default: the
/// built-in table, else every group the API serves).
pub async fn resolve(
    conn: &Conn,
    cx: &StepContext,
    api_version: Option<&str>,
    kind: &str,
) -> Result<Kind, ActionError> {
    let kind = kind.trim();
    if kind.is_empty() {
        return Err(ActionError::permanent("`kind` is empty"));
    }
    let client = &conn.client;
    let (api_version, name) = match api_version.map(str::trim).filter(|a| !a.is_empty()) {
        Some(av) => (av.to_string(), kind.to_string()),
        None => match builtin(kind) {
            Some((av, k)) => (av.to_string(), k.to_string()),
            None => return search(conn, cx, kind).await,
        },
    };
    let list = conn.discovery.list(client, cx, &api_version, false).await?;
    if let Some(r) = find(&list, &name) {
        return Ok(kind_of(&api_version, &r, &list));
    }
    let list = conn.discovery.list(client, cx, &api_version, true).await?;
    if let Some(r) = find(&list, &name) {
        return Ok(kind_of(&api_version, &r, &list));
    }
    let known: Vec<&str> = list
        .iter()
        .filter(|r| !r.name.contains('/'))
        .map(|r| r.kind.as_str())
        .collect();
    Err(ActionError::permanent(format!(
        "the API server has no kind `{kind}` in {api_version} (it has: {})",
        if known.is_empty() {
            "none".to_string()
        } else {
            known.join(", ")
        }
    )))
}

/// A kind outside the built-in table without `api_version`: every group's preferred version.
async fn search(conn: &Conn, cx: &StepContext, kind: &str) -> Result<Kind, ActionError> {
    let client = &conn.client;
    let groups = crate::retry::read(cx, "discovery of the API groups", || {
        client.list_api_groups()
    })
    .await?;
    let mut versions = vec!["v1".to_string()];
    versions.extend(groups.groups.iter().filter_map(|g| {
        g.preferred_version
            .as_ref()
            .map(|p| p.group_version.clone())
            .or_else(|| g.versions.first().map(|v| v.group_version.clone()))
    }));
    // One broken aggregated API (metrics.k8s.io answering 503 is common) must not hide a
    // kind another group serves: such groups are skipped and named if nothing is found.
    let mut unreadable = Vec::new();
    for av in versions {
        let list = match conn.discovery.list(client, cx, &av, false).await {
            Ok(list) => list,
            Err(e) if !cx.cancel.is_cancelled() => {
                unreadable.push(format!("{av} ({})", e.message));
                continue;
            }
            Err(e) => return Err(e),
        };
        if let Some(r) = find(&list, kind) {
            return Ok(kind_of(&av, &r, &list));
        }
    }
    let mut message = format!(
        "the API server serves no kind `{kind}` (give `api_version` for a custom resource, e.g. `api_version: example.com/v1`)"
    );
    if !unreadable.is_empty() {
        message.push_str(&format!(
            "; these API groups could not be read: {}",
            unreadable.join("; ")
        ));
    }
    Err(ActionError::permanent(message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_names() {
        assert_eq!(builtin("deploy"), Some(("apps/v1", "Deployment")));
        assert_eq!(builtin("Deployments"), Some(("apps/v1", "Deployment")));
        assert_eq!(builtin("pods"), Some(("v1", "Pod")));
        assert_eq!(builtin("job"), Some(("batch/v1", "Job")));
        assert_eq!(builtin("Widget"), None);
    }
}
