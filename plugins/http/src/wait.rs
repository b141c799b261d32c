//! `http.wait`: poll a URL until it answers as expected or a deadline passes; every attempt's
//! status and latency are in the result.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use opsbook_engine::action::{Action, ActionError, ActionSpec, LogStream, StepContext};
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::{json, Value};

use crate::input::WaitInput;
use crate::send::{self, Body, Call};

const DOC: &str = "\
Polls `url` every `interval` (default 2s) until the response matches `expect` (default: any \
2xx; `status` and `that` as for `http.request`) or `deadline` (default 5m) passes. Each attempt \
has its own `timeout` (default 10s) and is not retried; a refused connection or a timeout is \
an attempt like any other. The result lists every attempt (`attempt`, `at`, `status`, \
`latency_ms`, `error`), so an incident responder reads the whole story in the report; the \
step fails at the deadline with the last answer. `--dry-run` makes one attempt and reports \
whether the service is ready now, without failing.";

/// One poll.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Attempt {
    /// 1-based.
    pub attempt: u32,
    /// RFC 3339 time it started.
    pub at: String,
    /// Status code, when there was an answer.
    pub status: Option<u16>,
    /// Time to the answer (or the error).
    pub latency_ms: u64,
    /// Why it did not count (connection refused, timed out, unexpected status, `that` false).
    pub error: Option<String>,
}

/// What `http.wait` returns.
#[derive(Debug, Serialize, JsonSchema)]
pub struct WaitOutput {
    /// Whether the URL answered as expected.
    pub ready: bool,
    /// Every attempt.
    pub attempts: Vec<Attempt>,
    /// The last answer's status.
    pub status: Option<u16>,
    /// The last answer's JSON body, when JSON.
    pub json: Option<Value>,
    /// Time from the first attempt to the last answer.
    pub elapsed_ms: u64,
}

/// The `http.wait` action.
pub struct HttpWait;

#[async_trait]
impl Action for HttpWait {
    fn spec(&self) -> ActionSpec {
        ActionSpec::new::<WaitInput, WaitOutput>(
            "http.wait",
            "Poll a URL until it answers as expected or a deadline passes, recording every attempt.",
            DOC,
        )
        .with_check()
    }

    async fn run(&self, input: Value, cx: &StepContext) -> Result<Value, ActionError> {
        let input: WaitInput = crate::parse(input)?;
        let mut url = reqwest::Url::parse(&input.url).map_err(|e| {
            ActionError::permanent(format!("`url`: `{}` is not a URL ({e})", input.url))
        })?;
        let mut headers = crate::request::headers(&input.headers)?;
        crate::request::apply_auth(input.auth.as_ref(), &mut headers, &mut url)?;
        let client = crate::client_for(cx, &input.tls(), input.follow_redirects)?;
        let expect = input.expect.clone().unwrap_or_default();
        let interval = input
            .interval
            .map(|d| d.get())
            .unwrap_or(Duration::from_secs(2));
        let deadline = input
            .deadline
            .map(|d| d.get())
            .unwrap_or(Duration::from_secs(300));
        let call = Call {
            client,
            method: input.method,
            url,
            headers,
            body: Body::Empty,
            timeout: input
                .timeout
                .map(|d| d.get())
                .unwrap_or(Duration::from_secs(10)),
            retries: 0,
            max_retry_after: Duration::ZERO,
            max_response: 1 << 20,
            save_to: None,
            cx,
            label: None,
            idempotent: false,
        };
        let what = send::shown(input.method, &call.url);
        if cx.dry_run && !input.method.reads() {
            cx.log
                .line(LogStream::Stdout, &format!("dry run: would poll {what}"));
            return Ok(
                json!({"ready": false, "attempts": [], "status": null, "json": null, "elapsed_ms": 0}),
            );
        }
        let started = Instant::now();
        let mut attempts: Vec<Attempt> = Vec::new();
        let mut last: Option<send::Response> = None;
        loop {
            let n = attempts.len() as u32 + 1;
            let at = jiff::Timestamp::now().to_string();
            let t0 = Instant::now();
            let outcome = send::send(&call).await;
            let latency_ms = t0.elapsed().as_millis() as u64;
            let (status, error) = match &outcome {
                Ok(resp) => {
                    let verdict =
                        crate::request::check(resp, &expect, input.method, &call.url).err();
                    (Some(resp.status), verdict.map(|e| e.message))
                }
                Err(e) if e.kind == opsbook_engine::action::ErrorKind::Cancelled => {
                    return Err(ActionError::cancelled_with(format!(
                        "cancelled while waiting for {what} ({} attempts)",
                        attempts.len()
                    ))
                    .with_details(output(
                        false,
                        &attempts,
                        last.as_ref(),
                        started,
                    )))
                }
                Err(e) => (None, Some(e.message.clone())),
            };
            if let Ok(resp) = outcome {
                last = Some(resp);
            }
            let ready = error.is_none();
            attempts.push(Attempt {
                attempt: n,
                at,
                status,
                latency_ms,
                error: error.clone(),
            });
            if ready {
                cx.log.line(
                    LogStream::Stdout,
                    &format!("ready after {n} attempt{}", if n == 1 { "" } else { "s" }),
                );
                return Ok(output(true, &attempts, last.as_ref(), started));
            }
            if cx.dry_run {
                cx.log.line(
                    LogStream::Stdout,
                    &format!(
                        "dry run: not ready now ({}); not waiting",
                        error.unwrap_or_default()
                    ),
                );
                return Ok(output(false, &attempts, last.as_ref(), started));
            }
            let elapsed = started.elapsed();
            if elapsed.saturating_add(interval) > deadline {
                let why = error.unwrap_or_default();
                return Err(ActionError::retryable(format!(
                    "{what} was not ready within {}s ({} attempts); last: {why}",
                    deadline.as_secs(),
                    attempts.len()
                ))
                .with_details(output(false, &attempts, last.as_ref(), started)));
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = cx.cancel.cancelled() => {
                    return Err(ActionError::cancelled_with(format!(
                        "cancelled while waiting for {what} ({} attempts)",
                        attempts.len()
                    ))
                    .with_details(output(false, &attempts, last.as_ref(), started)))
                }
            }
        }
    }
}

fn output(
    ready: bool,
    attempts: &[Attempt],
    last: Option<&send::Response>,
    started: Instant,
) -> Value {
    json!({
        "ready": ready,
        "attempts": attempts,
        "status": last.map(|r| r.status),
        "json": last.and_then(|r| r.json.clone()),
        "elapsed_ms": started.elapsed().as_millis() as u64,
    })
}
