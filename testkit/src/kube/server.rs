//! The HTTP side: hyper on the fake's runtime, the request log, authentication, injected
//! failures and `deny` rules, path parsing, discovery. The object endpoints are in
//! `objects.rs`; watches, logs and exec have their own modules.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};

use super::registry::{self, Resource, Sub};
use super::status::{self, ApiError, ApiResult};
use super::store::{self, Key};
use super::{exec, objects, Seen, Shared, GIT_VERSION, TOKEN, USER};

pub(crate) type Body = BoxBody<Bytes, Infallible>;
pub(crate) type Resp = Response<Body>;

/// A streaming body fed by a channel (watches, followed logs); the producer sees the
/// client go away when sending fails.
pub(crate) struct ChanBody(pub tokio::sync::mpsc::Receiver<Bytes>);

impl http_body::Body for ChanBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok(http_body::Frame::data(b))))
    }
}

/// A streaming answer: 200, chunked, with this content type.
pub(crate) fn stream_resp(
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    content_type: &'static str,
) -> Resp {
    let mut r = Response::new(ChanBody(rx).boxed());
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// A full body.
pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

/// A JSON answer.
pub(crate) fn json_resp(code: u16, v: &Value) -> Resp {
    json_typed(code, v, "application/json")
}

fn json_typed(code: u16, v: &Value, content_type: &'static str) -> Resp {
    let mut r = Response::new(full(serde_json::to_vec(v).unwrap_or_default()));
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// A `Status` error answer.
pub(crate) fn error_resp(e: &ApiError) -> Resp {
    let mut r = json_resp(e.code, &e.body);
    if let Some(s) = e.retry_after {
        r.headers_mut().insert("Retry-After", HeaderValue::from(s));
    }
    r
}

pub(crate) fn text_resp(code: u16, text: &str) -> Resp {
    let mut r = Response::new(full(text.to_string()));
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Decoded query parameters, in order (a name may repeat: `command=a&command=b`).
#[derive(Clone, Debug, Default)]
pub(crate) struct Query(pub Vec<(String, String)>);

impl Query {
    pub(crate) fn parse(raw: &str) -> Query {
        Query(
            raw.split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (percent_decode(k), percent_decode(v))
                })
                .collect(),
        )
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub(crate) fn flag(&self, name: &str) -> bool {
        matches!(self.get(name), Some("true" | "1"))
    }

    pub(crate) fn dry_run(&self) -> bool {
        self.all("dryRun").iter().any(|v| v == "All")
    }
}

/// `%XX` and `+` decoding of a query component.
pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A request as the handlers see it.
pub(crate) struct Req {
    pub method: Method,
    pub path: String,
    pub query: Query,
    pub content_type: String,
    pub accept: String,
    pub user_agent: String,
    pub body: Bytes,
}

impl Req {
    /// The field manager of a non-apply write: `fieldManager`, else the User-Agent's
    /// product (`kubectl`), as the real server derives it.
    pub(crate) fn manager(&self) -> String {
        if let Some(m) = self.query.get("fieldManager") {
            return m.to_string();
        }
        let ua = self.user_agent.split('/').next().unwrap_or_default().trim();
        if ua.is_empty() {
            "unknown".into()
        } else {
            ua.chars().take(128).collect()
        }
    }

    pub(crate) fn json_body(&self) -> ApiResult<Value> {
        let media = media_type(&self.content_type);
        if media.contains("protobuf") || media.contains("cbor") {
            return Err(status::unsupported_media_type_of_body(media));
        }
        if self.body.is_empty() {
            return Err(status::bad_request("the body of the request is empty"));
        }
        serde_json::from_slice(&self.body).map_err(|e| {
            status::bad_request(&format!(
                "the body of the request could not be decoded as JSON: {e}"
            ))
        })
    }
}

/// What a resource path names.
#[derive(Debug)]
pub(crate) struct Target {
    pub r: &'static Resource,
    pub ns: Option<String>,
    pub name: Option<String>,
    pub sub: Option<String>,
}

impl Target {
    pub(crate) fn key(&self) -> Key {
        store::key(
            self.r,
            self.ns.as_deref(),
            self.name.as_deref().unwrap_or_default(),
        )
    }
}

/// What a path under `/api` or `/apis` names.
enum Route {
    ResourceList(&'static str, &'static str),
    Group(String),
    Object(Target),
}

fn parse_path(path: &str) -> Option<Route> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest): (&str, &str, &[&str]) = match parts.as_slice() {
        ["api", v, rest @ ..] => ("", v, rest),
        ["apis", g] => return Some(Route::Group(g.to_string())),
        ["apis", g, v, rest @ ..] => (g, v, rest),
        _ => return None,
    };
    let (g, v) = registry::RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version)
        .map(|r| (r.group, r.version))?;
    if rest.is_empty() {
        return Some(Route::ResourceList(g, v));
    }
    let (ns, rest) = match rest {
        ["namespaces", ns, plural, more @ ..]
            if !(matches!(*plural, "status" | "finalize") && more.is_empty()) =>
        {
            (Some(ns.to_string()), &rest[2..])
        }
        _ => (None, rest),
    };
    let r = registry::find(g, v, rest[0])?;
    if r.namespaced != ns.is_some() && !(r.namespaced && rest.len() == 1) {
        return None;
    }
    if rest.len() > 3 {
        return None;
    }
    Some(Route::Object(Target {
        r,
        ns,
        name: rest.get(1).map(|s| s.to_string()),
        sub: rest.get(2).map(|s| s.to_string()),
    }))
}

/// Serves one connection's requests.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    peer: SocketAddr,
    mut req: Request<Incoming>,
) -> Result<Resp, Infallible> {
    let _ = peer;
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let raw_query = req.uri().query().unwrap_or_default().to_string();
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let content_type = header("content-type");
    let accept = header("accept");
    let user_agent = header("user-agent");
    let authorization = header("authorization");
    let upgrade = header("upgrade");
    let is_ws = upgrade.eq_ignore_ascii_case("websocket");
    let body = if is_ws {
        Bytes::new()
    } else {
        match req.body_mut().collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                return Ok(error_resp(&status::bad_request(&format!(
                    "cannot read the request body: {e}"
                ))))
            }
        }
    };
    {
        let mut st = shared.store.lock().expect("store lock");
        st.requests.push(Seen {
            method: method.to_string(),
            path: path.clone(),
            query: raw_query.clone(),
            content_type: content_type.clone(),
            accept: accept.clone(),
            user_agent: user_agent.clone(),
            websocket: is_ws,
            body: String::from_utf8_lossy(&body).into_owned(),
        });
    }
    let r = Req {
        method,
        path,
        query: Query::parse(&raw_query),
        content_type,
        accept,
        user_agent,
        body,
    };
    // Public endpoints, as `system:public-info-viewer` allows them.
    match r.path.as_str() {
        "/version" | "/version/" => return Ok(json_resp(200, &version())),
        "/healthz" | "/livez" | "/readyz" => return Ok(text_resp(200, "ok")),
        _ => {}
    }
    // kubectl sends no bearer token over plain HTTP: a missing token is accepted (as the
    // user USER), a wrong one is not.
    if !authorization.is_empty() && authorization != format!("Bearer {TOKEN}") {
        return Ok(error_resp(&status::unauthorized()));
    }
    let route = parse_path(&r.path);
    if let Some(e) = injected_failure(&shared, &r, route.as_ref()) {
        return Ok(error_resp(&e));
    }
    let out = match route {
        Some(Route::Object(t)) => {
            if let Some(e) = denied(&shared, &r, &t) {
                return Ok(error_resp(&e));
            }
            if t.sub.as_deref() == Some("exec") && t.r.has(Sub::Exec) {
                if is_ws {
                    return Ok(exec::upgrade(shared, &r, &t, &mut req));
                }
                return Ok(error_resp(&status::bad_request("Upgrade request required")));
            }
            objects::object(&shared, &r, t).await
        }
        Some(Route::ResourceList(g, v)) => Ok(json_resp(200, &registry::resource_list(g, v))),
        Some(Route::Group(g)) => registry::group_doc(&g)
            .map(|d| json_resp(200, &d))
            .ok_or_else(status::no_route),
        None => discovery(&shared, &r),
    };
    Ok(out.unwrap_or_else(|e| error_resp(&e)))
}

/// `GET /version`: v1.33.1, so that Google's kubectl dispatcher runs kubectl 1.33.
pub(crate) fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "emulationMajor": "1",
        "emulationMinor": "33",
        "minCompatibilityMajor": "1",
        "minCompatibilityMinor": "32",
        "gitVersion": GIT_VERSION,
        "gitCommit": "8adc0f041b8e7ad1d30e29cc59c6ae7a15e19828",
        "gitTreeState": "clean",
        "buildDate": "2025-05-15T08:19:08Z",
        "goVersion": "go1.24.2",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// `/api`, `/apis` and `/openapi/...`.
fn discovery(shared: &Shared, r: &Req) -> ApiResult<Resp> {
    if r.method != Method::GET {
        return Err(status::method_not_allowed());
    }
    let aggregated = registry::wants_aggregated(&r.accept);
    match r.path.trim_end_matches('/') {
        "/api" if aggregated => Ok(json_typed(
            200,
            &registry::aggregated(true),
            registry::AGGREGATED_TYPE,
        )),
        "/apis" if aggregated => Ok(json_typed(
            200,
            &registry::aggregated(false),
            registry::AGGREGATED_TYPE,
        )),
        "/api" => Ok(json_resp(
            200,
            &registry::api_versions(&shared.addr.to_string()),
        )),
        "/apis" => Ok(json_resp(200, &registry::api_group_list())),
        "/openapi/v3" => Ok(json_resp(200, &registry::openapi_index())),
        p => match p.strip_prefix("/openapi/v3/") {
            Some(gv) => registry::openapi_doc(gv)
                .map(|d| json_resp(200, &d))
                .ok_or_else(status::no_route),
            None => Err(status::no_route()),
        },
    }
}

fn injected_failure(shared: &Shared, r: &Req, route: Option<&Route>) -> Option<ApiError> {
    let mut st = shared.store.lock().expect("store lock");
    let i = st.failures.iter().position(|f| {
        (f.method == "*" || f.method.eq_ignore_ascii_case(r.method.as_str()))
            && r.path.starts_with(&f.prefix)
    })?;
    let f = st.failures.remove(i);
    let target = match route {
        Some(Route::Object(t)) => Some((t.r, t.name.as_deref().unwrap_or_default())),
        _ => None,
    };
    Some(status::injected(f.code, &f.reason, target))
}

/// The RBAC verb of a request.
fn verb(r: &Req, t: &Target) -> &'static str {
    match (&r.method, t.name.is_some()) {
        (&Method::GET, false) if r.query.flag("watch") => "watch",
        (&Method::GET, false) => "list",
        (&Method::GET, true) => "get",
        (&Method::POST, _) => "create",
        (&Method::PUT, _) => "update",
        (&Method::PATCH, _) => "patch",
        (&Method::DELETE, false) => "deletecollection",
        (&Method::DELETE, true) => "delete",
        _ => "get",
    }
}

fn denied(shared: &Shared, r: &Req, t: &Target) -> Option<ApiError> {
    let verb = verb(r, t);
    let resource = match &t.sub {
        Some(s) => format!("{}/{s}", t.r.plural),
        None => t.r.plural.to_string(),
    };
    let qualified = match &t.sub {
        Some(s) => format!("{}/{s}", t.r.qualified()),
        None => t.r.qualified(),
    };
    let st = shared.store.lock().expect("store lock");
    let hit = st.denies.iter().any(|d| {
        let verb_ok = d.verb == "*"
            || d.verb == verb
            || (t.sub.as_deref() == Some("exec") && (d.verb == "create" || d.verb == "get"));
        let res_ok = d.resource == "*" || d.resource == resource || d.resource == qualified;
        let ns_ok = match &d.ns {
            None => true,
            Some(ns) => t.ns.as_deref() == Some(ns.as_str()),
        };
        verb_ok && res_ok && ns_ok
    });
    drop(st);
    hit.then(|| {
        status::forbidden(
            t.r,
            USER,
            verb,
            &resource,
            t.name.as_deref().unwrap_or_default(),
            t.ns.as_deref(),
        )
    })
}

/// The media type without parameters.
pub(crate) fn media_type(ct: &str) -> &str {
    ct.split(';').next().unwrap_or_default().trim()
}
