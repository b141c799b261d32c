//! `http.request`.

use std::time::Duration;

use async_trait::async_trait;
use opsbook_engine::action::{Action, ActionError, ActionSpec, LogStream, StepContext};
use reqwest::header::{HeaderMap, HeaderName, AUTHORIZATION};
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::input::{Auth, Expect, Method, Paginate, RequestInput};
use crate::send::{self, Body, Call, Response};

/// Bytes read into memory per response when `max_response` is not given.
const DEFAULT_MAX_RESPONSE: u64 = 16 << 20;
/// Pages followed when `paginate.max_pages` is not given.
const DEFAULT_MAX_PAGES: u32 = 10;

const DOC: &str = "\
Sends one request (or, with `paginate`, one per page) with the run's shared connection pool. \
`query` adds parameters (a list repeats one); `headers`; `auth`: `{bearer: TOKEN}`, \
`{basic: {username, password}}` or `{api_key: {value, header: X-Key}}` / `{api_key: {value, \
query: key}}`; a body from `json`, `form` or raw `body` (at most one). `timeout` is per \
attempt (default 30s); `follow_redirects` (default true, at most 10). TLS: `ca_cert` adds a CA \
to the system's, `client_cert`/`client_key` for mutual TLS, `insecure: true` accepts any \
certificate and warns. `save_to` streams the body into a file (written whole or not at all).\n\n\
Retries: connection errors, 429 and 5xx are tried again `retries` times (default 2) after \
0.5s, 1s, 2s … or the server's `Retry-After` (at most `max_retry_after`, default 60s); POST \
and PATCH only on 429 and 503 or when the connection never opened. Other 4xx are not retried.\n\n\
`expect`: `status` (codes, `\"2xx\"`, `\"200-299\"`; default any 2xx) and `that`, bare \
expressions over `result` (`result.json.state == 'ok'`). A response that misses them fails \
the step with its status and the start of its body (the whole response is in the step's \
`result`). `paginate`: `next: link` follows `Link: <…>; rel=\"next\"`; or `next` is an \
expression giving the next URL or a mapping of query parameters (`{'cursor': \
result.json.next_cursor} if result.json.next_cursor else none`); `items` picks each page's \
items (default: the body when it is a list, else `result.json.items`); `max_pages` (default \
10). The items of every page are in `result.items`.\n\n\
Result: `status`, `headers` (lower-case names), `json` (when the body is JSON), `body` (text, \
first MiB), `url` (after redirects), `elapsed_ms`, `attempts`, and `pages`/`items`/`truncated` \
with `paginate`, `saved` {path, bytes} with `save_to`.\n\n\
`--dry-run`: GET, HEAD and OPTIONS requests run (`dry_run_reads: false` describes them too); \
other methods are described, not sent. Secrets in URLs, headers and bodies are masked in the \
log, the report and errors; the log shows URLs without their query string.";

/// What `http.request` returns.
#[derive(Debug, Serialize, JsonSchema)]
pub struct RequestOutput {
    /// Status code (of the last page).
    pub status: Option<u16>,
    /// Response headers, names in lower case.
    pub headers: Map<String, Value>,
    /// The body parsed, when it is JSON.
    pub json: Option<Value>,
    /// The body as text (first MiB).
    pub body: String,
    /// The final URL.
    pub url: String,
    /// Time of the last attempt.
    pub elapsed_ms: u64,
    /// Attempts of the last request.
    pub attempts: u32,
    /// With `paginate`: pages read.
    pub pages: Option<u32>,
    /// With `paginate`: every page's items.
    pub items: Option<Vec<Value>>,
    /// With `paginate`: whether `max_pages` stopped it before the last page.
    pub truncated: Option<bool>,
    /// With `save_to`: where the body went and its size.
    pub saved: Option<Value>,
    /// Under `--dry-run`, for a request that was not sent: what would have been.
    pub would_send: Option<String>,
}

/// The `http.request` action.
pub struct HttpRequest;

#[async_trait]
impl Action for HttpRequest {
    fn spec(&self) -> ActionSpec {
        ActionSpec::new::<RequestInput, RequestOutput>(
            "http.request",
            "Call an HTTP API: auth, JSON/form bodies, expectations, pagination, retries, downloads.",
            DOC,
        )
        .with_check()
    }

    async fn run(&self, input: Value, cx: &StepContext) -> Result<Value, ActionError> {
        let input: RequestInput = crate::parse(input)?;
        let mut url = reqwest::Url::parse(&input.url).map_err(|e| {
            ActionError::permanent(format!("`url`: `{}` is not a URL ({e})", input.url))
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ActionError::permanent(format!(
                "`url`: only http and https URLs, not `{}`",
                url.scheme()
            )));
        }
        add_query(&mut url, &input.query);
        let mut headers = headers(&input.headers)?;
        apply_auth(input.auth.as_ref(), &mut headers, &mut url)?;
        let body = body(&input)?;
        // An API key in the query: re-applied on every page, hidden in what is shown.
        let query_key = match &input.auth {
            Some(Auth::ApiKey {
                value,
                query: Some(q),
                ..
            }) => Some((q.clone(), value.clone())),
            _ => None,
        };
        let client = crate::client_for(cx, &input.tls(), input.follow_redirects)?;
        if cx.dry_run && !(input.method.reads() && input.dry_run_reads) {
            let would = send::shown(input.method, &url);
            cx.log
                .line(LogStream::Stdout, &format!("would send {would}"));
            return Ok(redact(
                json!({"status": null, "headers": {}, "json": null, "body": "", "url": url.to_string(), "elapsed_ms": 0, "attempts": 0, "would_send": would}),
                query_key.as_ref(),
            ));
        }
        let call = Call {
            client,
            method: input.method,
            url,
            headers,
            body,
            timeout: input
                .timeout
                .map(|t| t.get())
                .unwrap_or(Duration::from_secs(30)),
            retries: input.retries.unwrap_or(2),
            max_retry_after: input
                .max_retry_after
                .map(|t| t.get())
                .unwrap_or(Duration::from_secs(60)),
            max_response: input.max_response.unwrap_or(DEFAULT_MAX_RESPONSE),
            save_to: input.save_to.as_ref().map(|p| cx.cwd.join(p)),
            cx,
            label: None,
            idempotent: false,
        };
        let expect = input.expect.clone().unwrap_or_default();
        match &input.paginate {
            None => {
                let resp = send::send(&call).await?;
                check(&resp, &expect, input.method, &call.url)?;
                Ok(redact(resp.to_value(), query_key.as_ref()))
            }
            Some(p) => paginate(call, &expect, p, query_key.clone())
                .await
                .map(|v| redact(v, query_key.as_ref())),
        }
    }
}

/// Whether a response is what `expect` asks (any 2xx by default).
pub fn check(
    resp: &Response,
    expect: &Expect,
    method: Method,
    url: &reqwest::Url,
) -> Result<(), ActionError> {
    let what = send::shown(method, url);
    let ok = if expect.status.is_empty() {
        (200..300).contains(&resp.status)
    } else {
        expect.status.iter().any(|s| s.matches(resp.status))
    };
    let details = resp.to_value();
    if !ok {
        let wanted = if expect.status.is_empty() {
            "2xx".to_string()
        } else {
            expect
                .status
                .iter()
                .map(|s| match s {
                    crate::input::StatusSpec::Code(c) => c.to_string(),
                    crate::input::StatusSpec::Pattern(p) => p.clone(),
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let excerpt = resp.excerpt();
        let message = format!(
            "{what} answered {} {}, expected {wanted}{}",
            resp.status,
            resp.reason,
            if excerpt.is_empty() {
                String::new()
            } else {
                format!(": {excerpt}")
            }
        );
        // A client error will be the same next time; a server error may not.
        let e = if (400..500).contains(&resp.status) && resp.status != 429 {
            ActionError::permanent(message)
        } else {
            ActionError::retryable(message)
        };
        return Err(e.with_details(details));
    }
    for expr in &expect.that {
        match crate::holds(expr, &details) {
            Ok(true) => {}
            Ok(false) => {
                return Err(ActionError::retryable(format!(
                    "{what} answered {}, but `{expr}` is false{}",
                    resp.status,
                    match resp.excerpt() {
                        e if e.is_empty() => String::new(),
                        e => format!(": {e}"),
                    }
                ))
                .with_details(details))
            }
            Err(e) => {
                return Err(
                    ActionError::permanent(format!("expect.that: {e}")).with_details(details)
                )
            }
        }
    }
    Ok(())
}

async fn paginate(
    mut call: Call<'_>,
    expect: &Expect,
    p: &Paginate,
    query_key: Option<(String, String)>,
) -> Result<Value, ActionError> {
    let first = call.url.clone();
    let max = p.max_pages.unwrap_or(DEFAULT_MAX_PAGES);
    let mut items: Vec<Value> = Vec::new();
    let mut pages = 0;
    let mut truncated = false;
    let mut seen = std::collections::HashSet::new();
    let last;
    loop {
        seen.insert(call.url.to_string());
        let resp = send::send(&call).await?;
        check(&resp, expect, call.method, &call.url)?;
        pages += 1;
        let page = resp.to_value();
        let page_items = match &p.items {
            Some(expr) => crate::eval(expr, &page)
                .map_err(|e| ActionError::permanent(format!("paginate.items: {e}")))?,
            None => match &resp.json {
                Some(Value::Array(_)) => resp.json.clone().unwrap_or_default(),
                Some(j) if j.get("items").is_some() => j["items"].clone(),
                _ => {
                    return Err(ActionError::permanent(
                        "paginate: the page is not a JSON list and has no `items`; say where the items are with `paginate.items`",
                    )
                    .with_details(page))
                }
            },
        };
        match page_items {
            Value::Array(list) => items.extend(list),
            Value::Null => {}
            other => {
                return Err(ActionError::permanent(format!(
                    "paginate.items gave {} instead of a list",
                    kind(&other)
                ))
                .with_details(page))
            }
        }
        let next = next_url(p, &resp, &page, &call.url, &first)?;
        let Some(next) = next else {
            last = page;
            break;
        };
        if seen.contains(next.as_str()) {
            call.cx.log.line(
                LogStream::Stderr,
                "paginate: the next page is one already read; stopping",
            );
            last = page;
            break;
        }
        if pages >= max {
            truncated = true;
            call.cx.log.line(
                LogStream::Stderr,
                &format!("paginate: stopped at max_pages ({max}); more pages remain"),
            );
            last = page;
            break;
        }
        // Credentials go only where the first page went.
        if next.origin() != first.origin() {
            return Err(ActionError::permanent(format!(
                "paginate: the next page is on another site ({}); not sending the credentials there",
                next.origin().ascii_serialization()
            ))
            .with_details(page));
        }
        // Later pages carry their own query (a Link URL, or the merged parameters); a key in
        // the query goes on every page.
        let mut next = next;
        if let Some((name, value)) = &query_key {
            if !next.query_pairs().any(|(k, _)| k == name.as_str()) {
                next.query_pairs_mut().append_pair(name, value);
            }
        }
        call.url = next;
    }
    let mut out = last;
    out["pages"] = json!(pages);
    out["items"] = Value::Array(items);
    out["truncated"] = json!(truncated);
    Ok(out)
}

/// The next page's URL: from the `Link` header, or from the `next` expression (a URL,
/// relative or absolute, or query parameters merged into the first page's URL).
fn next_url(
    p: &Paginate,
    resp: &Response,
    page: &Value,
    current: &reqwest::Url,
    first: &reqwest::Url,
) -> Result<Option<reqwest::Url>, ActionError> {
    if p.next == "link" {
        let Some(link) = resp.headers.get("link").and_then(Value::as_str) else {
            return Ok(None);
        };
        return Ok(link_next(link).and_then(|u| current.join(&u).ok()));
    }
    let v = crate::eval(&p.next, page)
        .map_err(|e| ActionError::permanent(format!("paginate.next: {e}")))?;
    match v {
        Value::Null | Value::Bool(false) => Ok(None),
        Value::String(s) if s.is_empty() => Ok(None),
        Value::String(s) => current.join(&s).map(Some).map_err(|e| {
            ActionError::permanent(format!("paginate.next gave `{s}`, not a URL ({e})"))
        }),
        Value::Object(params) if params.is_empty() => Ok(None),
        Value::Object(params) => {
            let mut url = first.clone();
            let keep: Vec<(String, String)> = url
                .query_pairs()
                .filter(|(k, _)| !params.contains_key(k.as_ref()))
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            url.set_query(None);
            {
                let mut q = url.query_pairs_mut();
                for (k, v) in &keep {
                    q.append_pair(k, v);
                }
                for (k, v) in &params {
                    if !v.is_null() {
                        q.append_pair(k, &scalar(v));
                    }
                }
            }
            Ok(Some(url))
        }
        other => Err(ActionError::permanent(format!(
            "paginate.next gave {} instead of a URL, a mapping of query parameters or none",
            kind(&other)
        ))),
    }
}

/// The `rel="next"` target of a `Link` header. Targets are read between `<` and `>`, so commas
/// and semicolons inside a URL do not split it.
fn link_next(header: &str) -> Option<String> {
    let mut rest = header;
    while let Some(open) = rest.find('<') {
        let after = &rest[open + 1..];
        let close = after.find('>')?;
        let target = &after[..close];
        let params = &after[close + 1..];
        // The parameters of this link run to the next `<` (or the end).
        let end = params.find('<').unwrap_or(params.len());
        let is_next = params[..end].split(';').any(|attr| {
            attr.trim()
                .trim_end_matches(',')
                .trim()
                .strip_prefix("rel=")
                .map(|r| r.trim_matches('"').split_whitespace().any(|r| r == "next"))
                .unwrap_or(false)
        });
        if is_next {
            return Some(target.to_string());
        }
        rest = &params[end..];
    }
    None
}

/// The result with an API key given in the query replaced by `***` in its URL.
fn redact(mut v: Value, key: Option<&(String, String)>) -> Value {
    if let (Some((name, _)), Some(url)) = (key, v["url"].as_str()) {
        if let Ok(mut u) = reqwest::Url::parse(url) {
            let pairs: Vec<(String, String)> = u
                .query_pairs()
                .map(|(k, val)| {
                    let val = if k == name.as_str() {
                        "***".to_string()
                    } else {
                        val.into_owned()
                    };
                    (k.into_owned(), val)
                })
                .collect();
            u.query_pairs_mut().clear().extend_pairs(pairs);
            v["url"] = Value::String(u.to_string());
        }
    }
    v
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "none",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// A query value as text.
fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn add_query(url: &mut reqwest::Url, query: &indexmap::IndexMap<String, Value>) {
    if query.is_empty() {
        return;
    }
    let mut q = url.query_pairs_mut();
    for (k, v) in query {
        match v {
            Value::Null => {}
            Value::Array(list) => {
                for item in list {
                    q.append_pair(k, &scalar(item));
                }
            }
            other => {
                q.append_pair(k, &scalar(other));
            }
        }
    }
}

/// Headers from input.
pub fn headers(input: &indexmap::IndexMap<String, String>) -> Result<HeaderMap, ActionError> {
    let mut map = HeaderMap::new();
    for (k, v) in input {
        let name = HeaderName::from_bytes(k.as_bytes()).map_err(|_| {
            ActionError::permanent(format!("`headers`: `{k}` is not a header name"))
        })?;
        map.append(name, send::header_value(k, v)?);
    }
    Ok(map)
}

/// Puts the credentials where they go.
pub fn apply_auth(
    auth: Option<&Auth>,
    headers: &mut HeaderMap,
    url: &mut reqwest::Url,
) -> Result<(), ActionError> {
    match auth {
        None => {}
        Some(Auth::Bearer(token)) => {
            let mut v = send::header_value("Authorization", &format!("Bearer {token}"))?;
            v.set_sensitive(true);
            headers.insert(AUTHORIZATION, v);
        }
        Some(Auth::Basic { username, password }) => {
            use base64::Engine;
            let encoded =
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
            let mut v = send::header_value("Authorization", &format!("Basic {encoded}"))?;
            v.set_sensitive(true);
            headers.insert(AUTHORIZATION, v);
        }
        Some(Auth::ApiKey {
            value,
            header,
            query,
        }) => match (header, query) {
            (Some(h), None) => {
                let name = HeaderName::from_bytes(h.as_bytes()).map_err(|_| {
                    ActionError::permanent(format!(
                        "`auth.api_key.header`: `{h}` is not a header name"
                    ))
                })?;
                let mut v = send::header_value(h, value)?;
                v.set_sensitive(true);
                headers.insert(name, v);
            }
            (None, Some(q)) => {
                url.query_pairs_mut().append_pair(q, value);
            }
            _ => {
                return Err(ActionError::permanent(
                    "`auth.api_key` needs exactly one of `header` or `query`",
                ))
            }
        },
    }
    Ok(())
}

fn body(input: &RequestInput) -> Result<Body, ActionError> {
    Ok(match (&input.json, &input.form, &input.body) {
        (None, None, None) => Body::Empty,
        (Some(j), None, None) => Body::Json(j.clone()),
        (None, Some(f), None) => Body::Form(
            f.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), scalar(v)))
                .collect(),
        ),
        (None, None, Some(b)) => Body::Raw(b.clone()),
        _ => {
            return Err(ActionError::permanent(
                "give at most one of `json`, `form` or `body`",
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_headers_give_the_next_page() {
        let h = r#"<https://api.github.com/repos/x/y/issues?page=2>; rel="next", <https://api.github.com/repos/x/y/issues?page=5>; rel="last""#;
        assert_eq!(
            link_next(h).as_deref(),
            Some("https://api.github.com/repos/x/y/issues?page=2")
        );
        assert_eq!(link_next(r#"<a>; rel="prev""#), None);
        assert_eq!(
            link_next(r#"</p/3>; rel="next last""#).as_deref(),
            Some("/p/3")
        );
        assert_eq!(link_next("garbage"), None);
        assert_eq!(
            link_next(r#"<https://api/x?fields=a,b;c&page=2>; rel="next", <https://api/x?page=9>; rel="last""#)
                .as_deref(),
            Some("https://api/x?fields=a,b;c&page=2")
        );
        assert_eq!(
            link_next(r#"<https://api/x?page=9>; rel="last", <https://api/x?page=2>; rel="next""#)
                .as_deref(),
            Some("https://api/x?page=2")
        );
    }

    #[test]
    fn status_specs_match_codes_classes_and_ranges() {
        use crate::input::StatusSpec::*;
        assert!(Code(204).matches(204) && !Code(204).matches(200));
        assert!(Pattern("2xx".into()).matches(299) && !Pattern("2xx".into()).matches(300));
        assert!(Pattern("400-404".into()).matches(404) && !Pattern("400-404".into()).matches(405));
        assert!(!Pattern("junk".into()).matches(200));
    }
}
