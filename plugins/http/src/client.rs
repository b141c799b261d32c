//! HTTP clients shared by every step of a run: one connection pool per TLS and redirect
//! setting, built on first use and kept for the run.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, Once};
use std::time::Duration;

use opsbook_engine::resources::RunState;

/// What makes two clients different.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ClientKey {
    /// Extra CA certificates (PEM) trusted on top of the system's.
    pub ca_cert: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    pub client_cert: Option<PathBuf>,
    /// Its private key (PEM); may be in `client_cert` itself.
    pub client_key: Option<PathBuf>,
    /// Accept any server certificate.
    pub insecure: bool,
    /// Follow redirects (at most 10).
    pub follow_redirects: bool,
}

/// The run's HTTP clients.
#[derive(Default)]
pub struct Clients {
    clients: Mutex<HashMap<ClientKey, reqwest::Client>>,
    warned_insecure: std::sync::atomic::AtomicBool,
}

impl RunState for Clients {}

static PROVIDER: Once = Once::new();

impl Clients {
    /// The client for `key`, built once per run.
    pub fn get(&self, key: &ClientKey) -> Result<reqwest::Client, String> {
        if let Some(c) = self.clients.lock().ok().and_then(|m| m.get(key).cloned()) {
            return Ok(c);
        }
        let client = build(key)?;
        if let Ok(mut m) = self.clients.lock() {
            m.insert(key.clone(), client.clone());
        }
        Ok(client)
    }

    /// Whether this is the first `insecure: true` of the run (to warn once).
    pub fn first_insecure(&self) -> bool {
        !self
            .warned_insecure
            .swap(true, std::sync::atomic::Ordering::SeqCst)
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read the {what} {}: {e}", path.display()))
}

fn build(key: &ClientKey) -> Result<reqwest::Client, String> {
    PROVIDER.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    let mut b = reqwest::Client::builder()
        .user_agent(concat!("opsbook/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .pool_idle_timeout(Duration::from_secs(60))
        .redirect(if key.follow_redirects {
            reqwest::redirect::Policy::limited(10)
        } else {
            reqwest::redirect::Policy::none()
        });
    if let Some(ca) = &key.ca_cert {
        let certs = reqwest::Certificate::from_pem_bundle(&read(ca, "CA certificate")?)
            .map_err(|e| format!("the CA certificate {} is not PEM: {e}", ca.display()))?;
        if certs.is_empty() {
            return Err(format!("no certificate in {}", ca.display()));
        }
        b = b.tls_certs_merge(certs);
    }
    match (&key.client_cert, &key.client_key) {
        (Some(cert), key_file) => {
            let mut pem = read(cert, "client certificate")?;
            if let Some(k) = key_file {
                pem.push(b'\n');
                pem.extend(read(k, "client key")?);
            }
            let id = reqwest::Identity::from_pem(&pem).map_err(|e| {
                format!(
                    "the client certificate {} (and its key) cannot be used: {e}",
                    cert.display()
                )
            })?;
            b = b.identity(id);
        }
        (None, Some(_)) => return Err("`client_key` needs `client_cert`".into()),
        (None, None) => {}
    }
    if key.insecure {
        b = b.tls_danger_accept_invalid_certs(true);
    }
    b.build()
        .map_err(|e| format!("cannot set up the HTTP client: {}", crate::error_chain(&e)))
}
