//! Safe retries of API calls (kube's own retry layer is off, see `client`): reads on 429, 5xx
//! and connection errors; writes only when the server did not take the request (429, 503) or
//! the connection never opened. `Retry-After` (the Status's `retryAfterSeconds`) is honoured.
//! A step's own `retry:` comes on top.

use std::future::Future;
use std::time::Duration;

use opsbook_engine::action::{ActionError, LogStream, StepContext};

use crate::error::{from_kube, never_sent, status, transient};

/// Tries in all (the first and the retries).
const TRIES: u32 = 4;

fn delay(try_no: u32, e: &kube::Error) -> Duration {
    let after = status(e)
        .and_then(|s| s.details.as_ref())
        .map(|d| d.retry_after_seconds)
        .filter(|s| *s > 0);
    match after {
        Some(s) => Duration::from_secs(u64::from(s.min(10))),
        None => Duration::from_millis(250 << try_no.min(4)),
    }
}

async fn attempt<T, F, Fut>(
    cx: &StepContext,
    what: &str,
    safe: fn(&kube::Error) -> bool,
    f: F,
) -> Result<T, kube::Error>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let mut n = 0;
    loop {
        // kube sets no read timeout: a stuck server must not outlive Ctrl-C or the step's
        // timeout.
        let outcome = tokio::select! {
            r = f() => r,
            _ = cx.cancel.cancelled() => {
                return Err(kube::Error::Service(format!("{what}: cancelled").into()));
            }
        };
        match outcome {
            Ok(v) => return Ok(v),
            Err(e) if n + 1 < TRIES && safe(&e) && !cx.cancel.is_cancelled() => {
                let wait = delay(n, &e);
                cx.log.line(
                    LogStream::Stderr,
                    &format!(
                        "{what}: {}; trying again in {}ms",
                        from_kube(what, kube_clone(&e)).message,
                        wait.as_millis()
                    ),
                );
                n += 1;
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = cx.cancel.cancelled() => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// A shallow stand-in for an error (kube's errors do not clone) to word it twice.
fn kube_clone(e: &kube::Error) -> kube::Error {
    match e {
        kube::Error::Api(s) => kube::Error::Api(s.clone()),
        other => kube::Error::Service(crate::error::chain(other).into()),
    }
}

fn write_safe(e: &kube::Error) -> bool {
    status(e).is_some_and(|s| matches!(s.code, 429 | 503)) || never_sent(e)
}

/// A read (GET, LIST, discovery), retried on 429, 5xx and connection errors.
pub async fn read_raw<T, F, Fut>(cx: &StepContext, what: &str, f: F) -> Result<T, kube::Error>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    attempt(cx, what, transient, f).await
}

/// [`read_raw`], its error in words.
pub async fn read<T, F, Fut>(cx: &StepContext, what: &str, f: F) -> Result<T, ActionError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    read_raw(cx, what, f).await.map_err(|e| from_kube(what, e))
}

/// A write, retried only when the server surely did not act on it.
pub async fn write_raw<T, F, Fut>(cx: &StepContext, what: &str, f: F) -> Result<T, kube::Error>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    attempt(cx, what, write_safe, f).await
}

/// [`write_raw`], its error in words.
pub async fn write<T, F, Fut>(cx: &StepContext, what: &str, f: F) -> Result<T, ActionError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    write_raw(cx, what, f).await.map_err(|e| from_kube(what, e))
}
