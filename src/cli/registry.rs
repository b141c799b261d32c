//! Wiring: the one place that names the plugins.

use opsbook_engine::Registry;

/// Every action this build has.
pub fn registry() -> Registry {
    let mut r = Registry::new();
    opsbook_engine::builtins::register(&mut r);
    opsbook_shell::register(&mut r);
    opsbook_ssh::register(&mut r);
    opsbook_http::register(&mut r);
    opsbook_slack::register(&mut r);
    opsbook_prometheus::register(&mut r);
    opsbook_terraform::register(&mut r);
    opsbook_aws::register(&mut r);
    opsbook_k8s::register(&mut r);
    r
}
