//! The Kubernetes plugin, on kube-rs and k8s-openapi: `k8s.get`, `k8s.list` (pods with a
//! computed health), `k8s.apply` (server-side apply), `k8s.delete`, `k8s.patch`, `k8s.scale`,
//! `k8s.rollout_restart`, `k8s.rollout_status`, `k8s.rollout_undo`, `k8s.wait`, `k8s.logs`,
//! `k8s.exec` and `k8s.job`.
//!
//! The cluster comes from the kubeconfig (the step's `kubeconfig`, `KUBECONFIG` of the step's
//! environment, `~/.kube/config`, or the in-cluster service account) with per-step `context`
//! and `namespace`; one client per (kubeconfig, context) per run is shared by every step
//! (`client`), with what discovery learnt (`discovery`). HTTPS is rustls on ring. kube's
//! built-in retry is off: the actions retry what is safe (`retry`). Writes honour `--dry-run`
//! with the API's server-side dry run (`dryRun=All`).

mod apply;
mod client;
mod common;
mod delete;
mod discovery;
mod error;
mod exec;
mod follow;
mod health;
mod job;
mod logs;
mod manifest;
mod patch;
mod pods;
mod read;
mod retry;
mod rollout;
mod scale;
mod target;
mod wait;
mod watch;

use opsbook_engine::action::Registry;

/// Adds the `k8s.*` actions.
pub fn register(registry: &mut Registry) {
    read::register(registry);
    apply::register(registry);
    delete::register(registry);
    patch::register(registry);
    scale::register(registry);
    rollout::register(registry);
    wait::register(registry);
    logs::register(registry);
    exec::register(registry);
    job::register(registry);
}
