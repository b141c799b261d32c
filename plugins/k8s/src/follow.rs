//! Following the logs of a Job's pods while it runs: every pod the selector finds, once it has
//! started, streamed (`follow=true`) into the step's log and a buffer for the result.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{AsyncBufReadExt, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, LogParams};
use kube::Api;
use opsbook_engine::action::{LogSink, LogStream};
use tokio::task::JoinHandle;

/// Log text kept for the result (the end is kept).
const KEEP: usize = 1 << 20;

/// What the follower gathered.
#[derive(Default)]
pub struct Gathered {
    /// The log text of every pod, in order of arrival (capped, the end kept).
    pub text: String,
    /// The pods seen, in order.
    pub pods: Vec<String>,
}

fn push(g: &Mutex<Gathered>, line: &str) {
    if let Ok(mut g) = g.lock() {
        g.text.push_str(line);
        g.text.push('\n');
        if g.text.len() > KEEP {
            let mut cut = g.text.len() - KEEP;
            while !g.text.is_char_boundary(cut) {
                cut += 1;
            }
            g.text.drain(..cut);
        }
    }
}

/// A running follower.
pub struct Follower {
    gathered: Arc<Mutex<Gathered>>,
    stop: tokio::sync::watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Follower {
    /// Starts following the pods `selector` matches.
    pub fn start(api: Api<Pod>, selector: String, log: Arc<dyn LogSink>, echo: bool) -> Follower {
        let gathered = Arc::new(Mutex::new(Gathered::default()));
        let (stop, rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(run(api, selector, log, echo, gathered.clone(), rx));
        Follower {
            gathered,
            stop,
            task,
        }
    }

    /// Picks up pods not followed yet, lets the streams finish (at most `grace`), and returns
    /// what was gathered.
    pub async fn finish(self, grace: Duration) -> Gathered {
        let _ = self.stop.send(true);
        let mut task = self.task;
        if tokio::time::timeout(grace + Duration::from_secs(2), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
        let mut g = self
            .gathered
            .lock()
            .map(|mut g| std::mem::take(&mut *g))
            .unwrap_or_default();
        if g.text.ends_with('\n') {
            g.text.pop();
        }
        g
    }

    /// Stops at once (cancellation).
    pub fn abort(self) {
        self.task.abort();
    }
}

fn started(p: &Pod) -> bool {
    let phase = p
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending");
    phase != "Pending"
        || p.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .is_some_and(|cs| {
                cs.iter().any(|c| {
                    c.state
                        .as_ref()
                        .is_some_and(|s| s.running.is_some() || s.terminated.is_some())
                })
            })
}

async fn stream_pod(
    api: Api<Pod>,
    pod: String,
    containers: Vec<String>,
    log: Arc<dyn LogSink>,
    echo: bool,
    gathered: Arc<Mutex<Gathered>>,
) {
    let several = containers.len() > 1;
    for c in containers {
        let lp = LogParams {
            follow: true,
            container: Some(c.clone()),
            ..Default::default()
        };
        let mut tries = 0;
        let reader = loop {
            match api.log_stream(&pod, &lp).await {
                Ok(r) => break Some(r),
                Err(_) if tries < 10 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => {
                    log.line(
                        LogStream::Stderr,
                        &format!(
                            "cannot follow the logs of pod {pod} container {c}: {}",
                            crate::error::chain(&e)
                        ),
                    );
                    break None;
                }
            }
        };
        let Some(reader) = reader else { continue };
        let mut lines = std::pin::pin!(reader.lines());
        while let Some(Ok(line)) = lines.next().await {
            let line = if several {
                format!("[{c}] {line}")
            } else {
                line
            };
            if echo {
                log.line(LogStream::Stdout, &line);
            }
            push(&gathered, &line);
        }
    }
}

async fn run(
    api: Api<Pod>,
    selector: String,
    log: Arc<dyn LogSink>,
    echo: bool,
    gathered: Arc<Mutex<Gathered>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut seen: HashSet<String> = HashSet::new();
    let mut stopping = false;
    loop {
        if let Ok(list) = api.list(&ListParams::default().labels(&selector)).await {
            let mut pods: Vec<Pod> = list.items;
            pods.sort_by_key(|p| p.metadata.creation_timestamp.clone().map(|t| t.0));
            for p in pods {
                let name = p.metadata.name.clone().unwrap_or_default();
                if seen.contains(&name) || !started(&p) {
                    continue;
                }
                seen.insert(name.clone());
                let containers: Vec<String> = p
                    .spec
                    .as_ref()
                    .map(|s| s.containers.iter().map(|c| c.name.clone()).collect())
                    .unwrap_or_default();
                let nth = if let Ok(mut g) = gathered.lock() {
                    g.pods.push(name.clone());
                    g.pods.len()
                } else {
                    1
                };
                if nth > 1 {
                    let marker = format!("--- pod {name} (attempt {nth}) ---");
                    if echo {
                        log.line(LogStream::Stdout, &marker);
                    }
                    push(&gathered, &marker);
                }
                // One pod after the other, in this task (aborting it stops everything): a
                // retried pod starts after the one before it ended anyway, and following a
                // finished container returns its whole log at once.
                stream_pod(
                    api.clone(),
                    name,
                    containers,
                    log.clone(),
                    echo,
                    gathered.clone(),
                )
                .await;
            }
        }
        if stopping {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.changed() => stopping = true,
        }
    }
}
