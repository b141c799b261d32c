//! The object endpoints: list (selectors, `limit`/`continue`), get, create, replace, patch
//! in its four formats (server-side apply through `ssa.rs`), delete and deletecollection
//! with DeleteOptions, and the `status` and `scale` subresources.

use std::sync::Arc;

use hyper::Method;
use serde_json::{json, Map, Value};

use super::patch;
use super::registry::{Resource, Sub};
use super::selector::{selector_string, FieldSelector, LabelSelector};
use super::server::{json_resp, media_type, Req, Resp, Target};
use super::ssa;
use super::status::{self, ApiResult};
use super::store::{self, DeleteOpts, Key, Propagation, WriteCtx};
use super::{logs, watch, Shared};

/// The object endpoints.
pub(crate) async fn object(shared: &Arc<Shared>, r: &Req, t: Target) -> ApiResult<Resp> {
    let verbs = t.r.verbs();
    match (t.name.is_some(), t.sub.as_deref()) {
        (false, None) => match r.method {
            Method::GET if r.query.flag("watch") => watch::serve(shared.clone(), r, &t),
            Method::GET => list(shared, r, &t).map(|v| json_resp(200, &v)),
            Method::POST => create(shared, r, &t),
            Method::DELETE if verbs.contains(&"deletecollection") => {
                delete_collection(shared, r, &t)
            }
            _ => Err(status::method_not_allowed()),
        },
        (true, None) => match r.method {
            Method::GET => {
                let st = shared.store.lock().expect("store lock");
                st.get(&t.key())
                    .map(|o| json_resp(200, o))
                    .ok_or_else(|| status::not_found(t.r, t.name.as_deref().unwrap_or_default()))
            }
            Method::PUT => replace(shared, r, &t, ""),
            Method::PATCH => patch_object(shared, r, &t),
            Method::DELETE => delete(shared, r, &t),
            _ => Err(status::method_not_allowed()),
        },
        (true, Some("status")) if t.r.has(Sub::Status) => match r.method {
            Method::GET => {
                let st = shared.store.lock().expect("store lock");
                st.get(&t.key())
                    .map(|o| json_resp(200, o))
                    .ok_or_else(|| status::not_found(t.r, t.name.as_deref().unwrap_or_default()))
            }
            Method::PUT => replace(shared, r, &t, "status"),
            Method::PATCH => patch_status(shared, r, &t),
            _ => Err(status::method_not_allowed()),
        },
        (true, Some("scale")) if t.r.has(Sub::Scale) => scale(shared, r, &t),
        (true, Some("log")) if t.r.has(Sub::Log) => {
            if r.method != Method::GET {
                return Err(status::method_not_allowed());
            }
            logs::serve(shared.clone(), r, &t)
        }
        _ => Err(status::no_route()),
    }
}

/// Hex of a continue token's key.
fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<String> {
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect();
    String::from_utf8(bytes?).ok()
}

/// Parsed `labelSelector` and `fieldSelector`.
pub(crate) fn selectors(r: &Req, t: &Target) -> ApiResult<(LabelSelector, FieldSelector)> {
    let labels = LabelSelector::parse(r.query.get("labelSelector").unwrap_or_default())
        .map_err(|e| status::bad_request(&e))?;
    let fields = FieldSelector::parse(r.query.get("fieldSelector").unwrap_or_default(), t.r)
        .map_err(|e| status::bad_request(&e))?;
    Ok((labels, fields))
}

/// LIST: items without apiVersion/kind (as a real server strips them), `limit`/`continue`.
fn list(shared: &Shared, r: &Req, t: &Target) -> ApiResult<Value> {
    let (labels, fields) = selectors(r, t)?;
    let limit: usize = r
        .query
        .get("limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    let after: Option<(String, String)> = match r.query.get("continue") {
        Some(c) if !c.is_empty() => {
            let decoded = unhex(c)
                .and_then(|s| serde_json::from_str::<(String, String)>(&s).ok())
                .ok_or_else(|| {
                    status::bad_request("continue key is not valid: illegal base64 data")
                })?;
            Some(decoded)
        }
        _ => None,
    };
    let st = shared.store.lock().expect("store lock");
    let matching: Vec<(&Key, &Value)> = st
        .list(t.r, t.ns.as_deref())
        .filter(|(k, _)| {
            after
                .as_ref()
                .is_none_or(|(ns, name)| (&k.2, &k.3) > (ns, name))
        })
        .filter(|(_, o)| labels.matches(o) && fields.matches(o))
        .collect();
    let total = matching.len();
    let page: Vec<Value> = matching
        .iter()
        .take(limit)
        .map(|(_, o)| {
            let mut o = (*o).clone();
            if let Some(m) = o.as_object_mut() {
                m.remove("apiVersion");
                m.remove("kind");
            }
            o
        })
        .collect();
    let mut meta = Map::new();
    meta.insert("resourceVersion".into(), json!(st.rv().to_string()));
    if total > page.len() {
        let (k, _) = matching[page.len() - 1];
        meta.insert(
            "continue".into(),
            json!(hex(&json!([k.2, k.3]).to_string())),
        );
        meta.insert("remainingItemCount".into(), json!(total - page.len()));
    }
    Ok(json!({
        "kind": format!("{}List", t.r.kind),
        "apiVersion": t.r.api_version(),
        "metadata": meta,
        "items": page,
    }))
}

/// Checks a body's apiVersion and kind against the resource (when given).
fn check_type(t: &Target, body: &Value, required: bool) -> ApiResult<()> {
    let want_av = t.r.api_version();
    match body["apiVersion"].as_str() {
        Some(av) if av != want_av => {
            return Err(status::bad_request(&format!(
                "the API version in the data ({av}) does not match the expected API version ({want_av})"
            )))
        }
        None if required => {
            return Err(status::bad_request(&format!(
                "Object 'apiVersion' is missing in '{body}'"
            )))
        }
        _ => {}
    }
    match body["kind"].as_str() {
        Some(k) if k != t.r.kind => Err(status::bad_request(&format!(
            "the kind in the data ({k}) does not match the expected kind ({})",
            t.r.kind
        ))),
        None if required => Err(status::bad_request(&format!(
            "Object 'Kind' is missing in '{body}'"
        ))),
        _ => Ok(()),
    }
}

fn check_name(t: &Target, body: &Value) -> ApiResult<()> {
    let url = t.name.as_deref().unwrap_or_default();
    match body["metadata"]["name"].as_str() {
        Some(n) if n != url => Err(status::bad_request(&format!(
            "the name of the object ({n}) does not match the name on the URL ({url})"
        ))),
        _ => Ok(()),
    }
}

fn ctx(r: &Req, manager: String, sub: &str) -> WriteCtx {
    WriteCtx {
        manager,
        subresource: sub.to_string(),
        dry_run: r.query.dry_run(),
    }
}

/// POST: create (201).
fn create(shared: &Shared, r: &Req, t: &Target) -> ApiResult<Resp> {
    let body = r.json_body()?;
    check_type(t, &body, false)?;
    let mut st = shared.store.lock().expect("store lock");
    let obj = st.create(t.r, t.ns.as_deref(), body, &ctx(r, r.manager(), ""), None)?;
    Ok(json_resp(201, &obj))
}

/// PUT on the object (`sub == ""`) or its status.
fn replace(shared: &Shared, r: &Req, t: &Target, sub: &str) -> ApiResult<Resp> {
    let body = r.json_body()?;
    check_type(t, &body, false)?;
    check_name(t, &body)?;
    let mut st = shared.store.lock().expect("store lock");
    let obj = st.update(t.r, &t.key(), body, &ctx(r, r.manager(), sub), None)?;
    Ok(json_resp(200, &obj))
}

/// Applies a non-apply patch body to `current`.
fn apply_patch(r: &Req, current: &Value) -> ApiResult<Value> {
    let body = r.json_body()?;
    match media_type(&r.content_type) {
        "application/merge-patch+json" => Ok(patch::merge_patch(current, &body)),
        "application/strategic-merge-patch+json" => {
            patch::strategic_merge(current, &body).map_err(|e| status::bad_request(&e))
        }
        "application/json-patch+json" => patch::json_patch(current, &body).map_err(|e| match e {
            patch::JsonPatchError::Decode(m) => status::bad_request(&m),
            // NewGenericServerResponse(422, ...) in the real patch handler.
            patch::JsonPatchError::Apply(m) => status::failure(
                422,
                "Invalid",
                "the server rejected our request due to an error in our request",
                Some(json!({"causes": [{"reason": "UnexpectedServerResponse", "message": m}]})),
            ),
        }),
        other => Err(status::unsupported_media_type(other)),
    }
}

const APPLY: &str = "application/apply-patch+yaml";

/// PATCH on the object: the four formats, `dryRun`, `force`, `fieldManager`.
fn patch_object(shared: &Shared, r: &Req, t: &Target) -> ApiResult<Resp> {
    let name = t.name.as_deref().unwrap_or_default();
    let is_apply = media_type(&r.content_type) == APPLY;
    if r.query.get("force").is_some() && !is_apply {
        return Err(status::invalid(
            t.r,
            name,
            &[(
                "FieldValueNotSupported",
                "force",
                "Unsupported value: true: may not be specified for non-apply patch",
            )],
        ));
    }
    let key = t.key();
    let mut st = shared.store.lock().expect("store lock");
    if is_apply {
        let Some(manager) = r.query.get("fieldManager").filter(|m| !m.is_empty()) else {
            return Err(status::bad_request(
                "PATCH, fieldManager is required for apply requests",
            ));
        };
        let mut cfg = r.json_body().map_err(|_| {
            status::bad_request(
                "the apply body must be JSON in this fake (kubectl and kube-rs send JSON)",
            )
        })?;
        check_type(t, &cfg, true)?;
        check_name(t, &cfg)?;
        if let Some(md) = cfg["metadata"].as_object_mut() {
            md.remove("managedFields");
        }
        let force = r.query.flag("force");
        let live = st.get(&key).cloned();
        let mut managed = st.managed_of(&key);
        let new = ssa::apply(
            live.as_ref(),
            &cfg,
            &mut managed,
            manager,
            force,
            &t.r.api_version(),
            &store::now(),
        )
        .map_err(|conflicts| {
            let causes: Vec<Value> = conflicts
                .iter()
                .map(|(m, p)| json!({"type": "FieldManagerConflict", "message": format!("conflict with {m}"), "field": ssa::path_string(p)}))
                .collect();
            status::failure(409, "Conflict", &ssa::conflict_message(&conflicts), Some(json!({"causes": causes})))
        })?;
        let c = ctx(r, manager.to_string(), "");
        return match live {
            Some(_) => {
                let mut new = new;
                // An apply without resourceVersion is unconditional.
                if cfg["metadata"]["resourceVersion"].is_null() {
                    if let Some(md) = new["metadata"].as_object_mut() {
                        md.remove("resourceVersion");
                    }
                }
                Ok(json_resp(
                    200,
                    &st.update(t.r, &key, new, &c, Some(managed))?,
                ))
            }
            None => {
                let mut new = new;
                new["metadata"]["name"] = json!(name);
                Ok(json_resp(
                    201,
                    &st.create(t.r, t.ns.as_deref(), new, &c, Some(managed))?,
                ))
            }
        };
    }
    let current = st
        .get(&key)
        .cloned()
        .ok_or_else(|| status::not_found(t.r, name))?;
    let patched = apply_patch(r, &current)?;
    let obj = st.update(t.r, &key, patched, &ctx(r, r.manager(), ""), None)?;
    Ok(json_resp(200, &obj))
}

/// PATCH on `/status`: only `.status` changes.
fn patch_status(shared: &Shared, r: &Req, t: &Target) -> ApiResult<Resp> {
    let key = t.key();
    let name = t.name.as_deref().unwrap_or_default();
    let mut st = shared.store.lock().expect("store lock");
    let current = st
        .get(&key)
        .cloned()
        .ok_or_else(|| status::not_found(t.r, name))?;
    let (patched, manager) = if media_type(&r.content_type) == APPLY {
        let cfg = r.json_body()?;
        let manager = r
            .query
            .get("fieldManager")
            .ok_or_else(|| {
                status::bad_request("PATCH, fieldManager is required for apply requests")
            })?
            .to_string();
        let p = patch::strategic_merge(&current, &json!({"status": cfg["status"]}))
            .map_err(|e| status::bad_request(&e))?;
        (p, manager)
    } else {
        (apply_patch(r, &current)?, r.manager())
    };
    let obj = st.update(t.r, &key, patched, &ctx(r, manager, "status"), None)?;
    Ok(json_resp(200, &obj))
}

/// The autoscaling/v1 Scale of an object.
fn scale_of(t: &Target, obj: &Value) -> Value {
    let md = &obj["metadata"];
    let mut meta = Map::new();
    for f in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ] {
        if !md[f].is_null() {
            meta.insert(f.into(), md[f].clone());
        }
    }
    let _ = t;
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": meta,
        "spec": {"replicas": obj["spec"]["replicas"].as_i64().unwrap_or(1)},
        "status": {
            "replicas": obj["status"]["replicas"].as_i64().unwrap_or(0),
            "selector": selector_string(&obj["spec"]["selector"]),
        },
    })
}

/// How `Invalid` errors of a scale write name the kind (`Scale.autoscaling`).
static SCALE: Resource = Resource {
    group: "autoscaling",
    version: "v1",
    plural: "scale",
    singular: "",
    kind: "Scale",
    namespaced: true,
    short_names: &[],
    categories: &[],
    subs: &[],
    fields: &[],
    returns_deleted: false,
};

/// GET/PATCH/PUT `/scale`: a PATCH or PUT sets the parent's `spec.replicas`.
fn scale(shared: &Shared, r: &Req, t: &Target) -> ApiResult<Resp> {
    let key = t.key();
    let name = t.name.as_deref().unwrap_or_default();
    let mut st = shared.store.lock().expect("store lock");
    let parent = st
        .get(&key)
        .cloned()
        .ok_or_else(|| status::not_found(t.r, name))?;
    let current = scale_of(t, &parent);
    let new_scale = match r.method {
        Method::GET => return Ok(json_resp(200, &current)),
        Method::PUT => r.json_body()?,
        Method::PATCH if media_type(&r.content_type) == APPLY => {
            patch::merge_patch(&current, &r.json_body()?)
        }
        Method::PATCH => apply_patch(r, &current)?,
        _ => return Err(status::method_not_allowed()),
    };
    let replicas = new_scale["spec"]["replicas"].as_i64();
    let Some(replicas) = replicas.filter(|n| *n >= 0) else {
        let msg = format!(
            "Invalid value: {}: must be greater than or equal to 0",
            new_scale["spec"]["replicas"]
        );
        return Err(status::invalid(
            &SCALE,
            name,
            &[("FieldValueInvalid", "spec.replicas", &msg)],
        ));
    };
    if let Some(rv) = new_scale["metadata"]["resourceVersion"].as_str() {
        if !rv.is_empty() && Some(rv) != parent["metadata"]["resourceVersion"].as_str() {
            return Err(status::conflict(t.r, name));
        }
    }
    let mut new = parent.clone();
    new["spec"]["replicas"] = json!(replicas);
    let manager = r.manager();
    let obj = st.update(t.r, &key, new, &ctx(r, manager, "scale"), None)?;
    Ok(json_resp(200, &scale_of(t, &obj)))
}

/// DeleteOptions from the body (JSON) and the query.
fn delete_opts(r: &Req) -> ApiResult<DeleteOpts> {
    let body: Value = if r.body.is_empty() {
        json!({})
    } else {
        r.json_body()?
    };
    let q = &r.query;
    let grace = body["gracePeriodSeconds"]
        .as_i64()
        .or_else(|| q.get("gracePeriodSeconds").and_then(|g| g.parse().ok()));
    let policy = body["propagationPolicy"]
        .as_str()
        .map(str::to_string)
        .or_else(|| q.get("propagationPolicy").map(str::to_string));
    let orphan = body["orphanDependents"]
        .as_bool()
        .or_else(|| q.get("orphanDependents").map(|v| v == "true"));
    let propagation = match (policy.as_deref(), orphan) {
        (Some("Background"), _) => Some(Propagation::Background),
        (Some("Foreground"), _) => Some(Propagation::Foreground),
        (Some("Orphan"), _) => Some(Propagation::Orphan),
        (Some(other), _) => {
            return Err(status::failure(
                422,
                "Invalid",
                &format!("DeleteOptions.meta.k8s.io \"\" is invalid: propagationPolicy: Unsupported value: \"{other}\": supported values: \"Foreground\", \"Background\", \"Orphan\", \"nil\""),
                None,
            ))
        }
        (None, Some(true)) => Some(Propagation::Orphan),
        (None, Some(false)) => Some(Propagation::Background),
        (None, None) => None,
    };
    let body_dry = body["dryRun"]
        .as_array()
        .is_some_and(|a| a.iter().any(|v| v == "All"));
    Ok(DeleteOpts {
        grace,
        propagation,
        dry_run: body_dry || q.dry_run(),
        uid: body["preconditions"]["uid"].as_str().map(str::to_string),
        resource_version: body["preconditions"]["resourceVersion"]
            .as_str()
            .map(str::to_string),
    })
}

fn delete(shared: &Shared, r: &Req, t: &Target) -> ApiResult<Resp> {
    let opts = delete_opts(r)?;
    let mut st = shared.store.lock().expect("store lock");
    let out = st.delete(t.r, &t.key(), &opts)?;
    Ok(json_resp(200, &out))
}

fn delete_collection(shared: &Shared, r: &Req, t: &Target) -> ApiResult<Resp> {
    let opts = delete_opts(r)?;
    let (labels, fields) = selectors(r, t)?;
    let mut st = shared.store.lock().expect("store lock");
    let keys: Vec<Key> = st
        .list(t.r, t.ns.as_deref())
        .filter(|(_, o)| labels.matches(o) && fields.matches(o))
        .map(|(k, _)| k.clone())
        .collect();
    let mut items = Vec::new();
    for k in keys {
        if let Some(o) = st.get(&k).cloned() {
            st.delete(t.r, &k, &opts)?;
            items.push(o);
        }
    }
    Ok(json_resp(
        200,
        &json!({"kind": format!("{}List", t.r.kind), "apiVersion": t.r.api_version(), "metadata": {"resourceVersion": st.rv().to_string()}, "items": items}),
    ))
}
