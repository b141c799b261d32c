//! Cluster connections: the kubeconfig (the step's `kubeconfig`, else `KUBECONFIG` of the step's
//! environment, else the process's, else `~/.kube/config`, else the in-cluster service account)
//! and context, one client per (kubeconfig files, context) per run, shared by every step.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use opsbook_engine::action::{ActionError, StepContext};
use opsbook_engine::resources::RunState;

use crate::discovery::Discovery;

/// What the step asks for: its `context` and `kubeconfig` inputs.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConnInput<'a> {
    /// The kubeconfig context.
    pub context: Option<&'a str>,
    /// Kubeconfig file(s), `:`-separated.
    pub kubeconfig: Option<&'a str>,
}

/// What makes two connections different.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    /// The kubeconfig files, merged in order (`None`: no file, in-cluster).
    files: Option<Vec<PathBuf>>,
    context: Option<String>,
}

/// A client of one cluster and context, with what the run learnt about its API.
pub struct Conn {
    /// The kube client (cheap to clone; one connection pool).
    pub client: Client,
    /// The context's namespace, or `default` (in-cluster: the service account's).
    pub default_ns: String,
    /// The context's name, for messages.
    pub context: String,
    /// The API's kinds, asked once per group version per run.
    pub discovery: Discovery,
}

impl Conn {
    /// The step's namespace, else the context's.
    pub fn ns(&self, namespace: &Option<String>) -> String {
        namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| self.default_ns.clone())
    }
}

/// The run's cluster connections.
#[derive(Default)]
pub struct Conns {
    conns: tokio::sync::Mutex<HashMap<Key, Arc<Conn>>>,
}

impl RunState for Conns {}

static PROVIDER: Once = Once::new();

/// The connection a step needs, made on first use in the run.
pub async fn conn(cx: &StepContext, input: ConnInput<'_>) -> Result<Arc<Conn>, ActionError> {
    let files = kubeconfig_files(cx, input.kubeconfig)?;
    let key = Key {
        files,
        // An empty context (a template that rendered nothing) means the current one.
        context: input
            .context
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_string),
    };
    let conns = cx.resources.state(Conns::default);
    let mut map = conns.conns.lock().await;
    if let Some(c) = map.get(&key) {
        return Ok(c.clone());
    }
    PROVIDER.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    let (mut config, context) = config_for(&key).await.map_err(ActionError::permanent)?;
    // kube's own retry layer waits up to minutes on 429/503/504 without a word; the actions
    // retry what is safe to retry themselves (see `retry`).
    config.default_retry = false;
    let default_ns = config.default_namespace.clone();
    let client = Client::try_from(config).map_err(|e| {
        ActionError::permanent(format!(
            "cannot set up the Kubernetes client: {}",
            crate::error::chain(&e)
        ))
    })?;
    let conn = Arc::new(Conn {
        client,
        default_ns,
        context,
        discovery: Discovery::default(),
    });
    cx.log.line(
        opsbook_engine::action::LogStream::Stdout,
        &format!(
            "Kubernetes context `{}` (default namespace {})",
            conn.context, conn.default_ns
        ),
    );
    map.insert(key, conn.clone());
    Ok(conn)
}

/// The kubeconfig files to merge: the step's `kubeconfig`, else `KUBECONFIG` (the step's
/// environment first), else `~/.kube/config` when it exists; `None` means in-cluster.
fn kubeconfig_files(
    cx: &StepContext,
    given: Option<&str>,
) -> Result<Option<Vec<PathBuf>>, ActionError> {
    let list = given
        .map(str::to_string)
        .or_else(|| cx.env.get("KUBECONFIG").cloned())
        .or_else(|| std::env::var("KUBECONFIG").ok())
        .filter(|s| !s.trim().is_empty());
    if let Some(list) = list {
        let files: Vec<PathBuf> = std::env::split_paths(&list)
            .filter(|p| !p.as_os_str().is_empty())
            .map(|p| absolute(&cx.cwd, &p))
            .collect();
        if files.is_empty() {
            return Err(ActionError::permanent("`kubeconfig` names no file"));
        }
        return Ok(Some(files));
    }
    let home = cx
        .env
        .get("HOME")
        .cloned()
        .or_else(|| std::env::var("HOME").ok());
    Ok(home
        .map(|h| Path::new(&h).join(".kube").join("config"))
        .filter(|p| p.exists())
        .map(|p| vec![p]))
}

fn absolute(cwd: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        cwd.join(p)
    }
}

/// The kube config of a key, and the context's name.
async fn config_for(key: &Key) -> Result<(Config, String), String> {
    let opts = KubeConfigOptions {
        context: key.context.clone(),
        ..Default::default()
    };
    let Some(files) = &key.files else {
        if let Some(c) = &key.context {
            return Err(format!(
                "no kubeconfig to take the context `{c}` from: set KUBECONFIG, `kubeconfig`, or create ~/.kube/config"
            ));
        }
        let config = Config::incluster().map_err(|e| {
            format!("no kubeconfig (KUBECONFIG, ~/.kube/config) and not in a cluster: {e}")
        })?;
        return Ok((config, "in-cluster".into()));
    };
    let mut merged = Kubeconfig::default();
    for f in files {
        let one = Kubeconfig::read_from(f).map_err(|e| {
            format!(
                "cannot read the kubeconfig {}: {}",
                f.display(),
                crate::error::chain(&e)
            )
        })?;
        merged = merged
            .merge(one)
            .map_err(|e| format!("cannot merge the kubeconfig {}: {e}", f.display()))?;
    }
    let context = key
        .context
        .clone()
        .or_else(|| merged.current_context.clone())
        .unwrap_or_default();
    if key.context.is_some() && !merged.contexts.iter().any(|c| c.name == context) {
        let known: Vec<&str> = merged.contexts.iter().map(|c| c.name.as_str()).collect();
        return Err(format!(
            "no context `{context}` in the kubeconfig (it has: {})",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        ));
    }
    let config = Config::from_custom_kubeconfig(merged, &opts)
        .await
        .map_err(|e| {
            format!(
                "kubeconfig context `{context}`: {}",
                crate::error::chain(&e)
            )
        })?;
    Ok((config, context))
}
