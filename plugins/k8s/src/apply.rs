//! `k8s.apply`: server-side apply of inline manifests or files, field manager `opsbook`,
//! Namespaces and CRDs first; per object `created`, `configured` or `unchanged`.

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use kube::api::{Patch, PatchParams};
use opsbook_engine::action::{
    Action, ActionError, ActionSpec, LogStream, Registry, StepContext, TargetCase,
};
use serde_json::{json, Value};

use crate::client::conn;
use crate::common::{comparable, k8s_input, parse, shown, FIELD_MANAGER};
use crate::discovery::{resolve, Kind};
use crate::manifest;
use crate::target::to_value;

pub(crate) fn register(r: &mut Registry) {
    r.register(Apply);
}

k8s_input! {
    /// Input of `k8s.apply`.
    pub struct ApplyInput {
        /// Objects to apply: a mapping, a list of mappings, or YAML text with one or more
        /// `---`-separated documents.
        #[serde(default)]
        pub manifest: Option<Value>,
        /// Manifest files (YAML or JSON, several documents each), relative to the runbook; a
        /// folder means its `.yaml`, `.yml` and `.json` files in name order.
        #[serde(default)]
        pub files: Vec<String>,
        /// Take over fields another field manager owns (kubectl's `--force-conflicts`);
        /// without it such a conflict fails the step and changes nothing.
        #[serde(default)]
        pub force_conflicts: bool,
    }
}

const DOC: &str = "Server-side apply (`PATCH` with `application/apply-patch+yaml`, \
`fieldManager=opsbook`) of every object of `manifest` and `files`, in order, Namespaces and \
CustomResourceDefinitions first (custom resources of a CRD applied in the same step wait up to \
10s for the API to serve them). `kind: List` documents are opened up. Each object needs \
`apiVersion`, `kind` and `metadata.name`; its namespace is its own `metadata.namespace`, else \
the step's `namespace`, else the context's (an object naming another namespace than the step's \
is an error). A field owned by another manager (a `kubectl apply`, an HPA's `spec.replicas`) \
fails with the API's conflict message unless `force_conflicts: true`. Result: `objects` (each \
`api_version`, `kind`, `name`, `namespace`, `action`: created, configured or unchanged, `uid`, \
`generation`) and the counts `created`, `configured`, `unchanged`. The first failure stops the \
step; the objects applied before it are in the error's details (`applied`). `--dry-run`: the \
server checks every object (`dryRun=All`: admission, validation, conflicts) and stores nothing; \
the actions say what would happen.";

/// Sort key: Namespaces, then CRDs, then the rest in their order.
fn rank(doc: &Value) -> u8 {
    match doc.get("kind").and_then(Value::as_str) {
        Some("Namespace") => 0,
        Some("CustomResourceDefinition") => 1,
        _ => 2,
    }
}

/// (group, kind) of the custom resources the CRDs among `docs` define.
fn crd_kinds(docs: &[Value]) -> HashSet<(String, String)> {
    docs.iter()
        .filter(|d| d.get("kind").and_then(Value::as_str) == Some("CustomResourceDefinition"))
        .filter_map(|d| {
            Some((
                d.pointer("/spec/group")?.as_str()?.to_string(),
                d.pointer("/spec/names/kind")?.as_str()?.to_string(),
            ))
        })
        .collect()
}

fn group_of(api_version: &str) -> &str {
    api_version.split_once('/').map(|(g, _)| g).unwrap_or("")
}

/// `k8s.apply`.
pub struct Apply;

#[async_trait]
impl Action for Apply {
    fn spec(&self) -> ActionSpec {
        ActionSpec::new::<ApplyInput, Value>(
            "k8s.apply",
            "Server-side apply of Kubernetes manifests (inline or files, several documents).",
            DOC,
        )
        .with_check()
    }

    async fn run(&self, input: Value, cx: &StepContext) -> Result<Value, ActionError> {
        let input: ApplyInput = parse(input)?;
        let mut docs = match &input.manifest {
            Some(m) => manifest::from_input(m).map_err(ActionError::permanent)?,
            None => Vec::new(),
        };
        for f in &input.files {
            docs.extend(manifest::from_path(&cx.cwd.join(f)).map_err(ActionError::permanent)?);
        }
        let mut docs = manifest::flatten(docs);
        if docs.is_empty() {
            return Err(ActionError::permanent(
                "nothing to apply: give `manifest` or `files` with at least one object",
            ));
        }
        docs.sort_by_key(rank);
        let crds = crd_kinds(&docs);
        let conn = conn(cx, input.conn()).await?;
        let mut applied: Vec<Value> = Vec::new();
        for (i, doc) in docs.into_iter().enumerate() {
            let started = std::time::Instant::now();
            let case_name = shown(
                doc.get("kind").and_then(Value::as_str).unwrap_or("object"),
                doc.pointer("/metadata/namespace").and_then(Value::as_str),
                doc.pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or("?"),
            );
            let outcome = apply_one(cx, &conn, &input, &crds, doc, i).await;
            // One JUnit case per object.
            cx.log.case(TargetCase {
                name: outcome
                    .as_ref()
                    .ok()
                    .map(|v| {
                        shown(
                            v["kind"].as_str().unwrap_or(""),
                            v["namespace"].as_str(),
                            v["name"].as_str().unwrap_or(""),
                        )
                    })
                    .unwrap_or(case_name),
                status: if outcome.is_ok() {
                    "succeeded"
                } else {
                    "failed"
                }
                .into(),
                duration_ms: crate::common::ms(started),
                message: outcome.as_ref().err().map(|e| e.message.clone()),
                output: None,
                item: None,
            });
            match outcome {
                Ok(v) => applied.push(v),
                Err(e) => {
                    let mut details = e.details.clone();
                    if !details.is_object() {
                        details = json!({});
                    }
                    details["applied"] = Value::Array(applied);
                    return Err(e.with_details(details));
                }
            }
        }
        let count = |a: &str| applied.iter().filter(|o| o["action"] == a).count();
        Ok(json!({
            "created": count("created"),
            "configured": count("configured"),
            "unchanged": count("unchanged"),
            "count": applied.len(),
            "objects": applied,
        }))
    }
}

async fn kind_for(
    cx: &StepContext,
    conn: &crate::client::Conn,
    crds: &HashSet<(String, String)>,
    api_version: &str,
    kind: &str,
) -> Result<Option<Kind>, ActionError> {
    let defined_here = crds.contains(&(group_of(api_version).to_string(), kind.to_string()));
    let mut tries = 0;
    loop {
        match resolve(conn, cx, Some(api_version), kind).await {
            Ok(k) => return Ok(Some(k)),
            Err(_) if defined_here && cx.dry_run => return Ok(None),
            Err(_) if defined_here && tries < 10 => {
                tries += 1;
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = cx.cancel.cancelled() => return Err(ActionError::cancelled()),
                }
            }
            Err(e) => return Err(e),
        }
    }
}

async fn apply_one(
    cx: &StepContext,
    conn: &crate::client::Conn,
    input: &ApplyInput,
    crds: &HashSet<(String, String)>,
    mut doc: Value,
    index: usize,
) -> Result<Value, ActionError> {
    let n = index + 1;
    let field = |p: &str| doc.pointer(p).and_then(Value::as_str).map(str::to_string);
    let (Some(api_version), Some(kind)) = (field("/apiVersion"), field("/kind")) else {
        return Err(ActionError::permanent(format!(
            "object {n} has no `apiVersion` and `kind`"
        )));
    };
    let Some(name) = field("/metadata/name").filter(|n| !n.is_empty()) else {
        return Err(ActionError::permanent(format!(
            "object {n} ({kind}) has no `metadata.name` (server-side apply needs one; `generateName` is not enough)"
        )));
    };
    let doc_ns = field("/metadata/namespace");
    let step_ns = input.namespace.as_deref().filter(|s| !s.is_empty());
    if let (Some(d), Some(s)) = (&doc_ns, step_ns) {
        if d != s {
            return Err(ActionError::permanent(format!(
                "{kind} {name} names the namespace `{d}`, the step `{s}`: remove one of them"
            )));
        }
    }
    let Some(k) = kind_for(cx, conn, crds, &api_version, &kind).await? else {
        let ns = doc_ns.unwrap_or_else(|| conn.ns(&input.namespace));
        cx.log.line(
            LogStream::Stdout,
            &format!(
                "dry run: {} would be created (not checked: its CRD is applied in this step)",
                shown(&kind, Some(&ns), &name)
            ),
        );
        return Ok(
            json!({"api_version": api_version, "kind": kind, "name": name,
            "namespace": ns, "action": "created", "checked": false, "uid": null, "generation": null}),
        );
    };
    let ns = doc_ns.unwrap_or_else(|| conn.ns(&input.namespace));
    if let Some(meta) = doc.get_mut("metadata").and_then(Value::as_object_mut) {
        if k.namespaced {
            meta.insert("namespace".into(), Value::String(ns.clone()));
        } else {
            meta.remove("namespace");
        }
    }
    let api = k.api(&conn.client, &ns);
    let label = shown(&k.ar.kind, k.ns(&ns), &name);
    let before = crate::retry::read(cx, &format!("get {label}"), || api.get_opt(&name)).await?;
    let mut pp = PatchParams::apply(FIELD_MANAGER);
    if input.force_conflicts {
        pp = pp.force();
    }
    if cx.dry_run {
        pp = pp.dry_run();
    }
    let what = format!("apply {label}");
    let patch = Patch::Apply(&doc);
    let after = crate::retry::write(cx, &what, || api.patch(&name, &pp, &patch)).await?;
    let after = to_value(after);
    let action = match &before {
        None => "created",
        Some(b) if comparable(&to_value(b.clone())) == comparable(&after) => "unchanged",
        Some(_) => "configured",
    };
    cx.log.line(
        LogStream::Stdout,
        &if cx.dry_run {
            format!("dry run (checked by the server): {label} would be {action}")
        } else {
            format!("{label} {action}")
        },
    );
    Ok(json!({
        "api_version": k.ar.api_version,
        "kind": k.ar.kind,
        "name": name,
        "namespace": k.ns(&ns),
        "action": action,
        "uid": after.pointer("/metadata/uid"),
        "generation": after.pointer("/metadata/generation"),
    }))
}
