//! Watching one object until a check says it is done (waits, rollout status, deletion, Jobs):
//! list + watch with kube's watcher (it re-lists on `410 Gone` and when a watch ends), a
//! deadline, cancellation, and transient API errors ridden out until the deadline.

use std::time::Duration;

use futures::StreamExt;
use kube::api::DynamicObject;
use kube::Api;
use opsbook_engine::action::{ActionError, LogStream, StepContext};
use serde_json::Value;

use crate::error::{from_watcher, watcher_transient};
use crate::target::to_value;

/// How a watch ended.
pub enum Outcome<T> {
    /// The check said done.
    Done(T),
    /// The deadline passed; the last state seen (`None`: never seen or deleted).
    TimedOut(Option<Value>),
}

/// Watches `name` until `check` (given the object, `None` when it does not exist) returns
/// `Some`, fails, or `timeout` passes.
pub async fn until<T>(
    cx: &StepContext,
    api: Api<DynamicObject>,
    name: &str,
    timeout: Duration,
    what: &str,
    mut check: impl FnMut(Option<&Value>) -> Result<Option<T>, ActionError>,
) -> Result<Outcome<T>, ActionError> {
    let stream = kube::runtime::watcher::watch_object(api, name);
    let mut stream = std::pin::pin!(stream);
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last: Option<Value> = None;
    loop {
        let next = tokio::select! {
            n = stream.next() => n,
            _ = tokio::time::sleep_until(deadline) => return Ok(Outcome::TimedOut(last)),
            _ = cx.cancel.cancelled() => {
                return Err(ActionError::cancelled_with(format!("cancelled while waiting for {what}")))
            }
        };
        match next {
            None => {
                return Err(ActionError::retryable(format!(
                    "{what}: the watch ended unexpectedly"
                )))
            }
            Some(Ok(obj)) => {
                let v = obj.map(to_value);
                if let Some(t) = check(v.as_ref())? {
                    return Ok(Outcome::Done(t));
                }
                last = v;
            }
            Some(Err(e)) if watcher_transient(&e) => {
                cx.log.line(
                    LogStream::Stderr,
                    &format!("{}; watching again", from_watcher(what, e).message),
                );
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = tokio::time::sleep_until(deadline) => return Ok(Outcome::TimedOut(last)),
                    _ = cx.cancel.cancelled() => {
                        return Err(ActionError::cancelled_with(format!("cancelled while waiting for {what}")))
                    }
                }
            }
            Some(Err(e)) => return Err(from_watcher(what, e)),
        }
    }
}

/// Waits until the object of this uid is gone (`Ok(None)`), or the last state seen at the
/// deadline (`Ok(Some(obj))`).
pub async fn gone(
    cx: &StepContext,
    api: Api<DynamicObject>,
    name: &str,
    uid: Option<&str>,
    timeout: Duration,
    what: &str,
) -> Result<Option<Value>, ActionError> {
    let outcome = until(cx, api, name, timeout, what, |o| {
        Ok(match o {
            None => Some(()),
            // Same name, another object: the one deleted is gone.
            Some(o)
                if uid.is_some() && o.pointer("/metadata/uid").and_then(Value::as_str) != uid =>
            {
                Some(())
            }
            Some(_) => None,
        })
    })
    .await?;
    Ok(match outcome {
        Outcome::Done(()) => None,
        Outcome::TimedOut(last) => Some(last.unwrap_or(Value::Null)),
    })
}
