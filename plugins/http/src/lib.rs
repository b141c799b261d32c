//! The HTTP plugin: `http.request` (methods, query, headers, auth, JSON/form/raw bodies,
//! timeouts, redirects, TLS with extra CAs and client certificates, downloads streamed to disk,
//! expectations, pagination, retries honouring `Retry-After`) and `http.wait` (poll until ready).
//!
//! Clients are kept for the whole run ([`client::Clients`]): one connection pool per TLS setting,
//! shared by every step. Other plugins that speak HTTP (Slack, Prometheus) use the same pool
//! through [`client_for`].

pub mod client;
pub mod input;
mod request;
pub mod send;
mod wait;

use std::path::Path;

use opsbook_engine::action::{ActionError, LogStream, Registry, StepContext};
use serde_json::Value;

pub use client::{ClientKey, Clients};
pub use request::{apply_auth, headers as header_map};
/// The HTTP client library, for plugins that use [`client_for`] and [`send::send`].
pub use reqwest;

/// Adds `http.request` and `http.wait`.
pub fn register(registry: &mut Registry) {
    registry.register(request::HttpRequest);
    registry.register(wait::HttpWait);
}

/// An error and its causes in one line (`error sending request: connection refused`).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// The run's client for these TLS settings (paths relative to the runbook).
pub fn client_for(
    cx: &StepContext,
    tls: &input::Tls,
    follow_redirects: bool,
) -> Result<reqwest::Client, ActionError> {
    let clients = cx.resources.state(Clients::default);
    let path = |p: &Option<String>| p.as_ref().map(|p| cx.cwd.join(Path::new(p)));
    // Every step that turns checking off says so in its own log.
    if tls.insecure {
        cx.log.line(
            LogStream::Stderr,
            "warning: insecure: true — server certificates are not checked, so anyone on the network path can pose as the server",
        );
    }
    clients
        .get(&ClientKey {
            ca_cert: path(&tls.ca_cert),
            client_cert: path(&tls.client_cert),
            client_key: path(&tls.client_key),
            insecure: tls.insecure,
            follow_redirects,
        })
        .map_err(ActionError::permanent)
}

/// Evaluates a bare expression over `result` (the response as `http.*` results show it).
pub fn eval(expr: &str, result: &Value) -> Result<Value, String> {
    let scope =
        opsbook_engine::template::to_template_value(&serde_json::json!({ "result": result }));
    opsbook_engine::template::eval(opsbook_engine::template::shared(), expr, &scope)
        .map_err(|e| format!("`{expr}`: {e}"))
}

/// Whether a bare expression over `result` holds.
pub fn holds(expr: &str, result: &Value) -> Result<bool, String> {
    let scope =
        opsbook_engine::template::to_template_value(&serde_json::json!({ "result": result }));
    opsbook_engine::template::eval_bool(opsbook_engine::template::shared(), expr, &scope)
        .map_err(|e| format!("`{expr}`: {e}"))
}

/// A name no other call of this process uses (temporary files).
pub fn unique() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Typed inputs from JSON, with the serde message on failure.
fn parse<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, ActionError> {
    serde_json::from_value(v).map_err(|e| ActionError::permanent(format!("invalid input: {e}")))
}
