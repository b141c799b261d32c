//! `Status` error bodies, written the way a real API server writes them: the same HTTP code,
//! `reason`, `message` and `details` (kubectl prints `Error from server (Reason): message`).

use serde_json::{json, Map, Value};

use super::registry::Resource;

/// An error answer: HTTP code and `Status` body (and `Retry-After` seconds for 429/503).
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub code: u16,
    pub body: Value,
    pub retry_after: Option<u32>,
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;

/// A `Status` with `status: Failure`.
pub(crate) fn failure(code: u16, reason: &str, message: &str, details: Option<Value>) -> ApiError {
    let mut s = Map::new();
    s.insert("kind".into(), json!("Status"));
    s.insert("apiVersion".into(), json!("v1"));
    s.insert("metadata".into(), json!({}));
    s.insert("status".into(), json!("Failure"));
    s.insert("message".into(), json!(message));
    if !reason.is_empty() {
        s.insert("reason".into(), json!(reason));
    }
    if let Some(d) = details {
        s.insert("details".into(), d);
    }
    s.insert("code".into(), json!(code));
    ApiError {
        code,
        body: Value::Object(s),
        retry_after: None,
    }
}

/// `details` naming one object: `{"name", "group" (not for core), "kind": plural}`.
pub(crate) fn details(r: &Resource, name: &str) -> Value {
    let mut d = Map::new();
    if !name.is_empty() {
        d.insert("name".into(), json!(name));
    }
    if !r.group.is_empty() {
        d.insert("group".into(), json!(r.group));
    }
    d.insert("kind".into(), json!(r.plural));
    Value::Object(d)
}

/// 404 `deployments.apps "nope" not found`.
pub(crate) fn not_found(r: &Resource, name: &str) -> ApiError {
    failure(
        404,
        "NotFound",
        &format!("{} \"{name}\" not found", r.qualified()),
        Some(details(r, name)),
    )
}

/// 404 for a path that names no resource.
pub(crate) fn no_route() -> ApiError {
    failure(
        404,
        "NotFound",
        "the server could not find the requested resource",
        Some(json!({})),
    )
}

/// 409 `deployments.apps "web" already exists`.
pub(crate) fn already_exists(r: &Resource, name: &str) -> ApiError {
    failure(
        409,
        "AlreadyExists",
        &format!("{} \"{name}\" already exists", r.qualified()),
        Some(details(r, name)),
    )
}

/// 409 for a stale `metadata.resourceVersion`.
pub(crate) fn conflict(r: &Resource, name: &str) -> ApiError {
    conflict_msg(
        r,
        name,
        "the object has been modified; please apply your changes to the latest version and try again",
    )
}

/// 409 `Operation cannot be fulfilled on deployments.apps "web": {why}`.
pub(crate) fn conflict_msg(r: &Resource, name: &str, why: &str) -> ApiError {
    failure(
        409,
        "Conflict",
        &format!(
            "Operation cannot be fulfilled on {} \"{name}\": {why}",
            r.qualified()
        ),
        Some(details(r, name)),
    )
}

/// 422 `Deployment.apps "web" is invalid: field: message`, one cause per field.
pub(crate) fn invalid(r: &Resource, name: &str, causes: &[(&str, &str, &str)]) -> ApiError {
    let text: Vec<String> = causes
        .iter()
        .map(|(_, field, msg)| format!("{field}: {msg}"))
        .collect();
    let text = if text.len() == 1 {
        text[0].clone()
    } else {
        format!("[{}]", text.join(", "))
    };
    let causes: Vec<Value> = causes
        .iter()
        .map(|(reason, field, msg)| json!({"reason": reason, "message": msg, "field": field}))
        .collect();
    let mut d = Map::new();
    d.insert("name".into(), json!(name));
    if !r.group.is_empty() {
        d.insert("group".into(), json!(r.group));
    }
    d.insert("kind".into(), json!(r.kind));
    d.insert("causes".into(), json!(causes));
    failure(
        422,
        "Invalid",
        &format!("{} \"{name}\" is invalid: {text}", r.qualified_kind()),
        Some(Value::Object(d)),
    )
}

/// 400 BadRequest.
pub(crate) fn bad_request(message: &str) -> ApiError {
    failure(400, "BadRequest", message, None)
}

/// 405 for a verb the resource does not offer.
pub(crate) fn method_not_allowed() -> ApiError {
    failure(
        405,
        "MethodNotAllowed",
        "the server does not allow this method on the requested resource",
        Some(json!({})),
    )
}

/// 415 for an unknown patch or body media type.
pub(crate) fn unsupported_media_type(content_type: &str) -> ApiError {
    failure(
        415,
        "UnsupportedMediaType",
        &format!(
            "the body of the request was in an unknown format - accepted media types include: \
             application/json-patch+json, application/merge-patch+json, \
             application/apply-patch+yaml, application/strategic-merge-patch+json (got {content_type:?})"
        ),
        None,
    )
}

/// 415 for a request body the fake cannot decode (protobuf, CBOR).
pub(crate) fn unsupported_media_type_of_body(content_type: &str) -> ApiError {
    failure(
        415,
        "UnsupportedMediaType",
        &format!(
            "the body of the request was in an unknown format - accepted media types include: \
             application/json, application/yaml (the fake does not decode {content_type})"
        ),
        None,
    )
}

/// 401 for a request without the kubeconfig's bearer token.
pub(crate) fn unauthorized() -> ApiError {
    failure(401, "Unauthorized", "Unauthorized", None)
}

/// 403 as the RBAC authorizer words it.
pub(crate) fn forbidden(
    r: &Resource,
    user: &str,
    verb: &str,
    resource: &str,
    name: &str,
    ns: Option<&str>,
) -> ApiError {
    let subject = if name.is_empty() {
        r.qualified()
    } else {
        format!("{} \"{name}\"", r.qualified())
    };
    let scope = match ns {
        Some(ns) => format!("in the namespace \"{ns}\""),
        None => "at the cluster scope".to_string(),
    };
    failure(
        403,
        "Forbidden",
        &format!(
            "{subject} is forbidden: User \"{user}\" cannot {verb} resource \"{resource}\" in API group \"{}\" {scope}",
            r.group
        ),
        Some(details(r, name)),
    )
}

/// An error injected by `FakeKube::fail_next`, with the message a real server gives for
/// that code.
pub(crate) fn injected(code: u16, reason: &str, target: Option<(&Resource, &str)>) -> ApiError {
    let message = match (code, target) {
        (409, Some((r, name))) if reason == "Conflict" && !name.is_empty() => {
            return conflict(r, name);
        }
        (409, Some((r, name))) if reason == "AlreadyExists" => return already_exists(r, name),
        (404, Some((r, name))) if !name.is_empty() => return not_found(r, name),
        (429, _) => "Too many requests, please try again later.".to_string(),
        (500, _) => "Internal error occurred: injected by FakeKube::fail_next".to_string(),
        (503, _) => "the server is currently unable to handle the request".to_string(),
        (504, _) => "the server was unable to return a response in the time allotted, but may still be processing the request".to_string(),
        _ => format!("{reason} (injected by FakeKube::fail_next)"),
    };
    let mut e = failure(code, reason, &message, None);
    if code == 429 || code == 503 {
        e.retry_after = Some(1);
        e.body["details"] = json!({"retryAfterSeconds": 1});
    }
    e
}
