//! Pod logs: `GET .../pods/{name}/log` answers `text/plain` from the text set with
//! `FakeKube::set_logs` (`container`, `tailLines`, `sinceSeconds`, `sinceTime`, `timestamps`,
//! `previous`, `limitBytes`); `follow=true` streams what is appended until the pod is
//! Succeeded, Failed or deleted, or the container has terminated.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::mpsc;

use super::server::{stream_resp, text_resp, Req, Resp, Target};
use super::status::{self, ApiResult};
use super::store::{LogText, Store};
use super::Shared;

/// The container a request means: the named one, or the only one.
pub(crate) fn container_of(pod: &Value, asked: Option<&str>) -> ApiResult<String> {
    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
    let mut names: Vec<&str> = Vec::new();
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        if let Some(cs) = pod["spec"][list].as_array() {
            names.extend(cs.iter().filter_map(|c| c["name"].as_str()));
        }
    }
    let main: Vec<&str> = pod["spec"]["containers"]
        .as_array()
        .map(|cs| cs.iter().filter_map(|c| c["name"].as_str()).collect())
        .unwrap_or_default();
    match asked.filter(|c| !c.is_empty()) {
        Some(c) if names.contains(&c) => Ok(c.to_string()),
        Some(c) => Err(status::bad_request(&format!(
            "container {c} is not valid for pod {name}"
        ))),
        None if main.len() == 1 => Ok(main[0].to_string()),
        None if main.is_empty() => Ok(String::new()),
        None => Err(status::bad_request(&format!(
            "a container name must be specified for pod {name}, choose one of: [{}]",
            main.join(" ")
        ))),
    }
}

/// The log of a container (`container == ""`: what was set without a container name).
pub(crate) fn log_of<'a>(
    st: &'a Store,
    ns: &str,
    pod: &str,
    container: &str,
) -> Option<&'a LogText> {
    st.logs
        .get(&(ns.to_string(), pod.to_string(), container.to_string()))
        .or_else(|| {
            st.logs
                .get(&(ns.to_string(), pod.to_string(), String::new()))
        })
}

/// RFC 3339 with nanoseconds, as `timestamps=true` prefixes lines.
fn nano(ts: jiff::Timestamp) -> String {
    format!(
        "{}.{:09}Z",
        ts.strftime("%Y-%m-%dT%H:%M:%S"),
        ts.subsec_nanosecond()
    )
}

struct Opts {
    tail: Option<usize>,
    since: Option<jiff::Timestamp>,
    timestamps: bool,
    limit: Option<usize>,
}

/// The lines of `log` the options select, as text.
fn render(log: &LogText, o: &Opts) -> String {
    let mut lines: Vec<String> = Vec::new();
    for (at, chunk) in &log.chunks {
        if o.since.is_some_and(|s| *at < s) {
            continue;
        }
        for l in chunk.split_inclusive('\n') {
            if o.timestamps {
                lines.push(format!("{} {l}", nano(*at)));
            } else {
                lines.push(l.to_string());
            }
        }
    }
    if let Some(n) = o.tail {
        let skip = lines.len().saturating_sub(n);
        lines.drain(..skip);
    }
    let mut text: String = lines.concat();
    if let Some(limit) = o.limit {
        let mut cut = limit.min(text.len());
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

/// Whether a followed log is over: the pod is gone or done, or the container terminated.
fn finished(st: &Store, ns: &str, pod: &str, uid: &Value, container: &str) -> bool {
    let key = (
        String::new(),
        "pods".to_string(),
        ns.to_string(),
        pod.to_string(),
    );
    let Some(p) = st.get(&key) else { return true };
    if p["metadata"]["uid"] != *uid {
        return true;
    }
    let phase = p["status"]["phase"].as_str().unwrap_or_default();
    if phase == "Succeeded" || phase == "Failed" {
        return true;
    }
    p["status"]["containerStatuses"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == container))
        .is_some_and(|c| c["state"]["terminated"].is_object())
}

pub(crate) fn serve(shared: Arc<Shared>, r: &Req, t: &Target) -> ApiResult<Resp> {
    let ns = t.ns.clone().unwrap_or_default();
    let name = t.name.clone().unwrap_or_default();
    let q = &r.query;
    let parse_n = |k: &str| -> ApiResult<Option<i64>> {
        q.get(k)
            .map(|v| {
                v.parse::<i64>()
                    .map_err(|_| status::bad_request(&format!("invalid {k}: {v}")))
            })
            .transpose()
    };
    let since = match (parse_n("sinceSeconds")?, q.get("sinceTime")) {
        (Some(s), _) => Some(jiff::Timestamp::now() - jiff::SignedDuration::from_secs(s)),
        (None, Some(t)) => Some(
            t.parse::<jiff::Timestamp>()
                .map_err(|e| status::bad_request(&format!("invalid sinceTime {t}: {e}")))?,
        ),
        (None, None) => None,
    };
    let opts = Opts {
        tail: parse_n("tailLines")?.map(|n| n.max(0) as usize),
        since,
        timestamps: q.flag("timestamps"),
        limit: parse_n("limitBytes")?.map(|n| n.max(0) as usize),
    };
    let st = shared.store.lock().expect("store lock");
    let pod = st
        .get(&(String::new(), "pods".into(), ns.clone(), name.clone()))
        .cloned()
        .ok_or_else(|| status::not_found(t.r, &name))?;
    let container = container_of(&pod, q.get("container"))?;
    if q.flag("previous") {
        let prev = st
            .logs
            .get(&(ns.clone(), name.clone(), container.clone()))
            .and_then(|l| l.previous.clone());
        return match prev {
            Some(text) => {
                let log = LogText {
                    chunks: vec![(jiff::Timestamp::now(), text)],
                    previous: None,
                };
                Ok(text_resp(
                    200,
                    &render(
                        &log,
                        &Opts {
                            since: None,
                            ..opts
                        },
                    ),
                ))
            }
            None => Err(status::bad_request(&format!(
                "previous terminated container \"{container}\" in pod \"{name}\" not found"
            ))),
        };
    }
    let waiting = pod["status"]["containerStatuses"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == container.as_str()))
        .and_then(|c| c["state"]["waiting"]["reason"].as_str())
        .filter(|r| matches!(*r, "ContainerCreating" | "PodInitializing"));
    if let Some(reason) = waiting {
        return Err(status::bad_request(&format!(
            "container \"{container}\" in pod \"{name}\" is waiting to start: {reason}"
        )));
    }
    let text = log_of(&st, &ns, &name, &container)
        .map(|l| render(l, &opts))
        .unwrap_or_default();
    if !q.flag("follow") {
        return Ok(text_resp(200, &text));
    }
    // Follow: what is there, then what gets appended, until the container is done.
    let mut sent = log_of(&st, &ns, &name, &container).map_or(0, |l| l.text().len());
    let uid = pod["metadata"]["uid"].clone();
    drop(st);
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let mut changed = shared.changed.clone();
    changed.borrow_and_update();
    tokio::spawn(async move {
        if !text.is_empty() && tx.send(Bytes::from(text)).await.is_err() {
            return;
        }
        loop {
            changed.borrow_and_update();
            let (more, done) = {
                let st = shared.store.lock().expect("store lock");
                let full = log_of(&st, &ns, &name, &container)
                    .map(LogText::text)
                    .unwrap_or_default();
                let more = if full.len() > sent && full.is_char_boundary(sent) {
                    let m = full[sent..].to_string();
                    sent = full.len();
                    m
                } else {
                    String::new()
                };
                (more, finished(&st, &ns, &name, &uid, &container))
            };
            if !more.is_empty() && tx.send(Bytes::from(more)).await.is_err() {
                return;
            }
            if done {
                return;
            }
            tokio::select! {
                r = changed.changed() => if r.is_err() { return },
                _ = tx.closed() => return,
            }
        }
    });
    Ok(stream_resp(rx, "text/plain"))
}
