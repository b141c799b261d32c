//! One HTTP exchange with retries: connection errors, 429 and 5xx are tried again with
//! exponential backoff or the server's `Retry-After`; the body is read up to a limit or
//! streamed to a file.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use opsbook_engine::action::{ActionError, LogStream, StepContext};
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{json, Map, Value};
use tokio::io::AsyncWriteExt;

use crate::input::Method;

/// Bytes of body text kept in `result.body`.
pub const MAX_BODY_TEXT: usize = 1 << 20;

/// A request body.
#[derive(Debug, Clone)]
pub enum Body {
    /// None.
    Empty,
    /// JSON.
    Json(Value),
    /// URL-encoded form.
    Form(Vec<(String, String)>),
    /// Raw text.
    Raw(String),
}

/// Everything one exchange needs.
pub struct Call<'a> {
    /// The client (from the run's pool).
    pub client: reqwest::Client,
    /// The method.
    pub method: Method,
    /// The full URL, query included.
    pub url: reqwest::Url,
    /// Headers (auth included).
    pub headers: HeaderMap,
    /// The body.
    pub body: Body,
    /// Time limit per attempt.
    pub timeout: Duration,
    /// Tries after the first.
    pub retries: u32,
    /// Longest `Retry-After` honoured.
    pub max_retry_after: Duration,
    /// Bytes read into memory at most.
    pub max_response: u64,
    /// Stream the body here instead.
    pub save_to: Option<PathBuf>,
    /// The step.
    pub cx: &'a StepContext,
    /// How the log names the request (default: method and URL without its query); set it when
    /// the URL itself is a secret (a webhook).
    pub label: Option<String>,
    /// Retry 5xx and timeouts even for POST (a read-only POST, such as a PromQL query).
    pub idempotent: bool,
}

/// A response, read.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Reason phrase (`Not Found`).
    pub reason: String,
    /// Headers, names in lower case; repeated headers joined with `, `.
    pub headers: Map<String, Value>,
    /// The final URL (after redirects).
    pub url: String,
    /// The body as text (up to [`MAX_BODY_TEXT`]).
    pub body: String,
    /// Whether `body` was cut.
    pub body_truncated: bool,
    /// The body as JSON, when it is JSON.
    pub json: Option<Value>,
    /// Wall time of the last attempt.
    pub elapsed_ms: u64,
    /// Attempts made.
    pub attempts: u32,
    /// With `save_to`: the file and its size.
    pub saved: Option<(String, u64)>,
}

impl Response {
    /// The response as templates and expressions see it (`result.status`, `result.json` …).
    pub fn to_value(&self) -> Value {
        let mut v = json!({
            "status": self.status,
            "headers": self.headers,
            "url": self.url,
            "body": self.body,
            "json": self.json,
            "elapsed_ms": self.elapsed_ms,
            "attempts": self.attempts,
        });
        if self.body_truncated {
            v["body_truncated"] = Value::Bool(true);
        }
        if let Some((path, bytes)) = &self.saved {
            v["saved"] = json!({"path": path, "bytes": bytes});
        }
        v
    }

    /// The start of the body, for error messages.
    pub fn excerpt(&self) -> String {
        let text = self.body.trim();
        match text.char_indices().nth(500) {
            Some((at, _)) => format!("{}…", &text[..at]),
            None => text.to_string(),
        }
    }
}

/// `GET https://host/path` with the query string left out (it may hold keys), for logs.
pub fn shown(method: Method, url: &reqwest::Url) -> String {
    let mut u = url.clone();
    let had_query = u.query().is_some_and(|q| !q.is_empty());
    u.set_query(None);
    let _ = u.set_password(None);
    format!(
        "{} {}{}",
        method.http(),
        u,
        if had_query { "?…" } else { "" }
    )
}

/// Sends the request, retrying as the inputs allow, and reads the response.
pub async fn send(call: &Call<'_>) -> Result<Response, ActionError> {
    let what = call
        .label
        .clone()
        .unwrap_or_else(|| shown(call.method, &call.url));
    let mut attempt = 0;
    loop {
        attempt += 1;
        let last = attempt > call.retries;
        let mut req = call
            .client
            .request(call.method.http(), call.url.clone())
            .headers(call.headers.clone());
        // `timeout` bounds the whole exchange, except for a download to a file: there it
        // bounds the wait for the answer, then each pause in the data.
        if call.save_to.is_none() {
            req = req.timeout(call.timeout);
        }
        req = match &call.body {
            Body::Empty => req,
            Body::Json(v) => req.json(v),
            Body::Form(pairs) => req.form(pairs),
            Body::Raw(s) => req.body(s.clone()),
        };
        let started = Instant::now();
        let sent = tokio::select! {
            r = tokio::time::timeout(call.timeout, req.send()) => r,
            _ = call.cx.cancel.cancelled() => return Err(ActionError::cancelled()),
        };
        let idempotent = call.method.idempotent() || call.idempotent;
        let sent = match sent {
            Ok(r) => r.map_err(|e| (describe_error(&e, call.timeout), e.is_connect())),
            Err(_) => Err((format!("no answer within {}", secs(call.timeout)), false)),
        };
        let resp = match sent {
            Ok(r) => r,
            Err((why, never_connected)) => {
                // A connection that never opened sent nothing: any method may try again.
                let may_retry = idempotent || never_connected;
                if !last && may_retry {
                    let wait = backoff(attempt);
                    call.cx.log.line(
                        LogStream::Stderr,
                        &format!(
                            "{what}: {why}; attempt {attempt} of {}, again in {}",
                            call.retries + 1,
                            secs(wait)
                        ),
                    );
                    pause(wait, call.cx).await?;
                    continue;
                }
                return Err(ActionError::retryable(format!("{what}: {why}")));
            }
        };
        let status = resp.status().as_u16();
        let server_said_retry = status == 429 || status == 503;
        let may_retry = status == 429 || status >= 500;
        if may_retry && !last && (idempotent || server_said_retry) {
            let wait = match retry_after(resp.headers()) {
                Some(w) if w > call.max_retry_after => {
                    return Err(ActionError::retryable(format!(
                        "{what} answered {status} and asked to wait {} before trying again, more than max_retry_after ({})",
                        secs(w),
                        secs(call.max_retry_after)
                    )))
                }
                Some(w) => w,
                None => backoff(attempt),
            };
            call.cx.log.line(
                LogStream::Stderr,
                &format!(
                    "{what} answered {status}; attempt {attempt} of {}, again in {}{}",
                    call.retries + 1,
                    secs(wait),
                    if resp.headers().contains_key(reqwest::header::RETRY_AFTER) {
                        " (Retry-After)"
                    } else {
                        ""
                    }
                ),
            );
            drop(resp);
            pause(wait, call.cx).await?;
            continue;
        }
        let mut out = match read(resp, call).await {
            Ok(o) => o,
            // The answer broke off: worth another try when the method allows it.
            Err(e)
                if e.kind == opsbook_engine::action::ErrorKind::Retryable
                    && !last
                    && idempotent =>
            {
                let wait = backoff(attempt);
                call.cx.log.line(
                    LogStream::Stderr,
                    &format!(
                        "{}; attempt {attempt} of {}, again in {}",
                        e.message,
                        call.retries + 1,
                        secs(wait)
                    ),
                );
                pause(wait, call.cx).await?;
                continue;
            }
            Err(e) => return Err(e),
        };
        out.elapsed_ms = started.elapsed().as_millis() as u64;
        out.attempts = attempt;
        call.cx.log.line(
            LogStream::Stdout,
            &format!(
                "{what} → {} {} in {} ms{}",
                out.status,
                out.reason,
                out.elapsed_ms,
                if attempt > 1 {
                    format!(" (attempt {attempt})")
                } else {
                    String::new()
                }
            ),
        );
        return Ok(out);
    }
}

async fn pause(wait: Duration, cx: &StepContext) -> Result<(), ActionError> {
    tokio::select! {
        _ = tokio::time::sleep(wait) => Ok(()),
        _ = cx.cancel.cancelled() => Err(ActionError::cancelled()),
    }
}

/// 0.5 s, 1 s, 2 s … at most 10 s.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(500u64.saturating_mul(1 << attempt.saturating_sub(1).min(5)))
        .min(Duration::from_secs(10))
}

fn secs(d: Duration) -> String {
    if d.as_millis().is_multiple_of(1000) {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// `Retry-After`: seconds, or an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(s) = v.parse::<u64>() {
        return Some(Duration::from_secs(s));
    }
    let when = httpdate(v)?;
    let now = std::time::SystemTime::now();
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn httpdate(s: &str) -> Option<std::time::SystemTime> {
    let t = jiff::fmt::rfc2822::parse(s).ok()?;
    let secs = t.timestamp().as_second();
    let secs = u64::try_from(secs).ok()?;
    Some(std::time::UNIX_EPOCH + Duration::from_secs(secs))
}

/// A transport error in words: what failed, not reqwest's layers, and never the URL (it may
/// hold a key, or be a secret itself).
fn describe_error(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!("no complete answer within {}", secs(timeout));
    }
    let mut text = e.to_string();
    if let Some(u) = e.url() {
        text = text.replace(&format!(" for url ({u})"), "");
        text = text.replace(u.as_str(), "<url>");
    }
    let mut source = std::error::Error::source(e);
    while let Some(src) = source {
        let t = src.to_string();
        if !text.contains(&t) {
            text.push_str(": ");
            text.push_str(&t);
        }
        source = src.source();
    }
    if e.is_connect() {
        format!("cannot connect: {text}")
    } else {
        text
    }
}

async fn read(resp: reqwest::Response, call: &Call<'_>) -> Result<Response, ActionError> {
    let what = call
        .label
        .clone()
        .unwrap_or_else(|| shown(call.method, &call.url));
    let status = resp.status();
    let mut headers = Map::new();
    for (name, value) in resp.headers() {
        let v = String::from_utf8_lossy(value.as_bytes()).into_owned();
        match headers.get_mut(name.as_str()) {
            Some(Value::String(prev)) => {
                prev.push_str(", ");
                prev.push_str(&v);
            }
            _ => {
                headers.insert(name.as_str().to_string(), Value::String(v));
            }
        }
    }
    let is_json = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.contains("json"));
    let url = resp.url().to_string();
    let mut out = Response {
        status: status.as_u16(),
        reason: status.canonical_reason().unwrap_or("").to_string(),
        headers,
        url,
        body: String::new(),
        body_truncated: false,
        json: None,
        elapsed_ms: 0,
        attempts: 0,
        saved: None,
    };
    let mut resp = resp;
    if let (Some(path), true) = (&call.save_to, status.is_success()) {
        // Streamed to a temporary file of its own next to the target (two downloads to one
        // path cannot mix), renamed when complete, removed on any failure.
        if let Some(parent) = path.parent() {
            let _ = tokio::fs::create_dir_all(parent).await;
        }
        let tmp = path.with_file_name(format!(
            ".{}.{}.part",
            path.file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default(),
            crate::unique()
        ));
        let mut file = tokio::fs::File::create(&tmp)
            .await
            .map_err(|e| ActionError::permanent(format!("cannot write {}: {e}", tmp.display())))?;
        let mut bytes = 0u64;
        let fail = |e: ActionError| {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        };
        loop {
            let chunk = tokio::select! {
                c = tokio::time::timeout(call.timeout, resp.chunk()) => c,
                _ = call.cx.cancel.cancelled() => return fail(ActionError::cancelled()),
            };
            let Ok(chunk) = chunk else {
                return fail(ActionError::retryable(format!(
                    "{what}: the download stalled (no data for {}) after {bytes} bytes",
                    secs(call.timeout)
                )));
            };
            match chunk {
                Ok(Some(c)) => {
                    bytes += c.len() as u64;
                    if let Err(e) = file.write_all(&c).await {
                        return fail(ActionError::permanent(format!(
                            "cannot write {}: {e}",
                            tmp.display()
                        )));
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    return fail(ActionError::retryable(format!(
                        "{what}: the download broke off after {bytes} bytes: {}",
                        describe_error(&e, call.timeout)
                    )));
                }
            }
        }
        file.flush().await.ok();
        file.sync_all().await.ok();
        drop(file);
        if let Err(e) = tokio::fs::rename(&tmp, path).await {
            return fail(ActionError::permanent(format!(
                "cannot move {} into place: {e}",
                tmp.display()
            )));
        }
        out.saved = Some((path.display().to_string(), bytes));
        return Ok(out);
    }
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let chunk = tokio::select! {
            c = resp.chunk() => c,
            _ = call.cx.cancel.cancelled() => return Err(ActionError::cancelled()),
        };
        match chunk {
            Ok(Some(c)) => {
                if buf.len() as u64 + c.len() as u64 > call.max_response {
                    return Err(ActionError::permanent(format!(
                        "{what}: the response is bigger than max_response ({} bytes); raise it or use save_to",
                        call.max_response
                    )));
                }
                buf.extend_from_slice(&c);
            }
            Ok(None) => break,
            Err(e) => {
                return Err(ActionError::retryable(format!(
                    "{what}: the response broke off: {}",
                    describe_error(&e, call.timeout)
                )))
            }
        }
    }
    if is_json && !buf.is_empty() {
        out.json = serde_json::from_slice(&buf).ok();
    }
    let text = String::from_utf8_lossy(&buf);
    if text.len() > MAX_BODY_TEXT {
        let mut end = MAX_BODY_TEXT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        out.body = text[..end].to_string();
        out.body_truncated = true;
    } else {
        out.body = text.into_owned();
    }
    Ok(out)
}

/// A header value from input text.
pub fn header_value(name: &str, value: &str) -> Result<HeaderValue, ActionError> {
    HeaderValue::from_str(value).map_err(|_| {
        ActionError::permanent(format!(
            "the value of header `{name}` has characters a header cannot carry (a line break?)"
        ))
    })
}
