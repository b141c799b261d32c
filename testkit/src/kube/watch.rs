//! Watches: `?watch=true` answers 200 with chunked NDJSON, one `{"type","object"}` per line,
//! replayed from the event history after `resourceVersion` (absent or `0`: synthetic ADDED
//! events for what exists, then live ones), filtered by namespace and selectors (an object
//! leaving the selection is DELETED, one entering it ADDED), ended after `timeoutSeconds`.
//! A resourceVersion older than the history gives an ERROR event with a 410 Expired Status.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::objects::selectors;
use super::selector::{FieldSelector, LabelSelector};
use super::server::{stream_resp, Req, Resp, Target};
use super::status::{self, ApiResult};
use super::store::{Event, EventType};
use super::Shared;

/// Server-side cap of a watch without `timeoutSeconds` (the real default is 30-60 min).
const DEFAULT_TIMEOUT: u64 = 1800;

struct Filter {
    group: String,
    plural: String,
    ns: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    fn matches(&self, obj: &Value) -> bool {
        self.labels.matches(obj) && self.fields.matches(obj)
    }

    /// The event a watch sends for a store event, if any.
    fn translate(&self, e: &Event) -> Option<(&'static str, Value)> {
        if e.key.0 != self.group || e.key.1 != self.plural {
            return None;
        }
        if self.ns.as_ref().is_some_and(|ns| *ns != e.key.2) {
            return None;
        }
        let now = self.matches(&e.obj);
        match e.kind {
            EventType::Added | EventType::Deleted => now.then(|| (e.kind.as_str(), e.obj.clone())),
            EventType::Modified => {
                let before = e.prev.as_ref().is_some_and(|p| self.matches(p));
                match (before, now) {
                    (true, true) => Some(("MODIFIED", e.obj.clone())),
                    (false, true) => Some(("ADDED", e.obj.clone())),
                    (true, false) => Some(("DELETED", e.obj.clone())),
                    (false, false) => None,
                }
            }
        }
    }
}

fn line(kind: &str, obj: &Value) -> Bytes {
    let mut s = serde_json::to_string(&json!({"type": kind, "object": obj})).unwrap_or_default();
    s.push('\n');
    Bytes::from(s)
}

fn expired(requested: u64, oldest: u64) -> Bytes {
    let e = status::failure(
        410,
        "Expired",
        &format!("too old resource version: {requested} ({oldest})"),
        None,
    );
    line("ERROR", &e.body)
}

/// Starts a watch; the answer streams until the timeout or until the client goes away.
pub(crate) fn serve(shared: Arc<Shared>, r: &Req, t: &Target) -> ApiResult<Resp> {
    let (labels, fields) = selectors(r, t)?;
    let filter = Filter {
        group: t.r.group.to_string(),
        plural: t.r.plural.to_string(),
        ns: t.ns.clone(),
        labels,
        fields,
    };
    let timeout = r
        .query
        .get("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(DEFAULT_TIMEOUT);
    let send_initial = r.query.flag("sendInitialEvents");
    let requested = match r.query.get("resourceVersion") {
        None | Some("") | Some("0") => None,
        Some(v) => Some(
            v.parse::<u64>()
                .map_err(|_| status::bad_request(&format!("invalid resource version: {v}")))?,
        ),
    };
    let mut changed = shared.changed.clone();
    changed.borrow_and_update();
    let (mut first, since) = {
        let st = shared.store.lock().expect("store lock");
        let mut first = Vec::new();
        let since = match requested {
            Some(rv) if !send_initial => match st.events_after(rv) {
                Ok(_) => rv,
                Err(oldest) => {
                    first.push(expired(rv, oldest));
                    u64::MAX
                }
            },
            _ => {
                for (_, o) in st.list(t.r, t.ns.as_deref()) {
                    if filter.matches(o) {
                        first.push(line("ADDED", o));
                    }
                }
                if send_initial {
                    let bookmark = json!({"kind": t.r.kind, "apiVersion": t.r.api_version(),
                        "metadata": {"resourceVersion": st.rv().to_string(), "annotations": {"k8s.io/initial-events-end": "true"}}});
                    first.push(line("BOOKMARK", &bookmark));
                }
                st.rv()
            }
        };
        (std::mem::take(&mut first), since)
    };
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    tokio::spawn(async move {
        for chunk in first.drain(..) {
            if tx.send(chunk).await.is_err() {
                return;
            }
        }
        if since == u64::MAX {
            return;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
        let mut since = since;
        loop {
            changed.borrow_and_update();
            let events = {
                let st = shared.store.lock().expect("store lock");
                st.events_after(since)
            };
            match events {
                Err(oldest) => {
                    let _ = tx.send(expired(since, oldest)).await;
                    return;
                }
                Ok(events) => {
                    for e in events {
                        since = e.rv;
                        if let Some((kind, obj)) = filter.translate(&e) {
                            if tx.send(line(kind, &obj)).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            }
            tokio::select! {
                r = changed.changed() => if r.is_err() { return },
                _ = tokio::time::sleep_until(deadline) => return,
                _ = tx.closed() => return,
            }
        }
    });
    Ok(stream_resp(rx, "application/json"))
}
