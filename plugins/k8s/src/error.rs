//! Kubernetes errors in words: the API's `Status` (code, reason, message, causes) in the message
//! and the details, and whether a retry can help.

use kube::core::Status;
use opsbook_engine::action::ActionError;
use serde_json::{json, Value};

/// An error and its causes in one line.
pub fn chain(e: &dyn std::error::Error) -> String {
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

/// HTTP codes a later try may not meet again.
pub fn retryable_code(code: u16) -> bool {
    matches!(code, 429 | 500 | 502 | 503 | 504)
}

/// Whether a 409 is an optimistic-concurrency conflict ("the object has been modified"), which
/// a re-read and a new try resolves; not `AlreadyExists` nor a server-side apply field conflict.
pub fn is_modified_conflict(s: &Status) -> bool {
    s.code == 409 && s.reason == "Conflict" && !is_field_manager_conflict(s)
}

fn is_field_manager_conflict(s: &Status) -> bool {
    s.details
        .as_ref()
        .is_some_and(|d| d.causes.iter().any(|c| c.reason == "FieldManagerConflict"))
        || s.message.starts_with("Apply failed with")
}

/// The API's Status of an error, when the server answered with one.
pub fn status(e: &kube::Error) -> Option<&Status> {
    match e {
        kube::Error::Api(s) => Some(s),
        _ => None,
    }
}

/// Whether a connection error happened before the request could reach the server (safe to
/// send again whatever the request).
pub fn never_sent(e: &kube::Error) -> bool {
    match e {
        // hyper-util's client says `client error (Connect)` when no connection could be made;
        // `connection reset`/`connection closed before message completed` (a request that
        // may have reached the server) must not count, so no looser text match.
        kube::Error::Service(_) => {
            let text = chain(e);
            text.contains("client error (Connect)")
                || text.to_ascii_lowercase().contains("connection refused")
        }
        _ => false,
    }
}

/// Whether a retry of a read can help (429, 5xx, the connection).
pub fn transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => retryable_code(s.code),
        kube::Error::Service(_) | kube::Error::HyperError(_) | kube::Error::ReadEvents(_) => true,
        _ => false,
    }
}

fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// The error of an API call, as opsbook reports it: `<what>: <Reason> (<code>): <message>`.
pub fn from_kube(what: &str, e: kube::Error) -> ActionError {
    match &e {
        kube::Error::Api(s) => from_status(what, s),
        kube::Error::Service(_) | kube::Error::HyperError(_) => ActionError::retryable(format!(
            "{what}: cannot reach the Kubernetes API server: {}",
            chain(&e)
        ))
        .with_details(json!({"retryable": true})),
        kube::Error::ReadEvents(_) => {
            ActionError::retryable(format!("{what}: the answer broke off: {}", chain(&e)))
        }
        kube::Error::UpgradeConnection(_) => ActionError::permanent(format!(
            "{what}: {} (exec needs a WebSocket upgrade; a proxy between opsbook and the API server may strip it)",
            chain(&e)
        )),
        // An exec credential plugin's failure carries its whole output, which may hold a
        // token: it is not repeated.
        kube::Error::Auth(_) => ActionError::permanent(format!(
            "{what}: cannot authenticate with the kubeconfig's user (the credential plugin's \
             output is withheld: it may hold a token); `kubectl auth whoami` with the same \
             context shows what is wrong"
        )),
        kube::Error::Discovery(_) | kube::Error::SerdeError(_) => {
            ActionError::permanent(format!("{what}: {}", chain(&e)))
        }
        _ => ActionError::permanent(format!("{what}: {}", chain(&e))),
    }
}

/// A failure `Status` of the API as an action error.
pub fn from_status(what: &str, s: &Status) -> ActionError {
    let reason = if s.reason.is_empty() {
        "Failure"
    } else {
        s.reason.as_str()
    };
    let message = clip(&s.message, 2000);
    let mut text = format!("{what}: {reason} ({}): {message}", s.code);
    let retry = if s.code == 409 {
        is_modified_conflict(s)
    } else {
        retryable_code(s.code)
    };
    if s.code == 409 && is_field_manager_conflict(s) {
        text.push_str(
            " (another field manager owns these fields: set `force_conflicts: true` to take them over)",
        );
    } else if s.code == 415 {
        text.push_str(
            " (custom resources take no strategic merge patch: use `type: merge` or `type: json`)",
        );
    } else if retry {
        text.push_str(" (a retry may help)");
    }
    let status = serde_json::to_value(s).unwrap_or(Value::Null);
    let details = json!({
        "code": s.code,
        "reason": reason,
        "message": message,
        "status": status,
        "retryable": retry,
    });
    if retry {
        ActionError::retryable(text).with_details(details)
    } else {
        ActionError::permanent(text).with_details(details)
    }
}

/// An error of a watch (rollout status, waits), in words.
pub fn from_watcher(what: &str, e: kube::runtime::watcher::Error) -> ActionError {
    use kube::runtime::watcher::Error as W;
    match e {
        W::InitialListFailed(e) | W::WatchStartFailed(e) | W::WatchFailed(e) => from_kube(what, e),
        W::WatchError(s) => from_status(what, &s),
        W::NoResourceVersion => ActionError::permanent(format!(
            "{what}: the API server gave no resourceVersion (does the kind support watch?)"
        )),
    }
}

/// Whether a watch error may go away on its own (the watcher then starts again).
pub fn watcher_transient(e: &kube::runtime::watcher::Error) -> bool {
    use kube::runtime::watcher::Error as W;
    match e {
        W::InitialListFailed(e) | W::WatchStartFailed(e) | W::WatchFailed(e) => transient(e),
        W::WatchError(s) => retryable_code(s.code) || s.code == 410,
        W::NoResourceVersion => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(v: Value) -> Status {
        serde_json::from_value(v).unwrap()
    }

    #[derive(Debug)]
    struct E(&'static str, Option<Box<E>>);
    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for E {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn only_connect_errors_count_as_never_sent() {
        let service =
            |outer, inner| kube::Error::Service(Box::new(E(outer, Some(Box::new(E(inner, None))))));
        assert!(never_sent(&service(
            "client error (Connect)",
            "tcp connect error: Connection refused (os error 111)"
        )));
        // The request may have reached the server: a write must not be sent again.
        assert!(!never_sent(&service(
            "client error (SendRequest)",
            "connection closed before message completed"
        )));
        assert!(!never_sent(&service(
            "client error (SendRequest)",
            "connection error: Connection reset by peer (os error 104)"
        )));
    }

    #[test]
    fn statuses_in_words() {
        let e = from_status(
            "get Deployment default/nope",
            &status(
                json!({"status": "Failure", "code": 404, "reason": "NotFound",
                "message": "deployments.apps \"nope\" not found"}),
            ),
        );
        assert_eq!(e.kind, opsbook_engine::action::ErrorKind::Permanent);
        assert_eq!(
            e.message,
            "get Deployment default/nope: NotFound (404): deployments.apps \"nope\" not found"
        );
        assert_eq!(e.details["code"], 404);

        let ssa = status(json!({"code": 409, "reason": "Conflict",
            "message": "Apply failed with 1 conflict: conflict with \"kubectl\": .spec.replicas",
            "details": {"causes": [{"reason": "FieldManagerConflict", "message": "conflict", "field": ".spec.replicas"}]}}));
        assert!(!is_modified_conflict(&ssa));
        let e = from_status("apply", &ssa);
        assert_eq!(e.kind, opsbook_engine::action::ErrorKind::Permanent);
        assert!(e.message.contains("force_conflicts: true"), "{}", e.message);

        let modified = status(json!({"code": 409, "reason": "Conflict",
            "message": "Operation cannot be fulfilled on deployments.apps \"web\": the object has been modified"}));
        assert!(is_modified_conflict(&modified));
        assert_eq!(
            from_status("patch", &modified).kind,
            opsbook_engine::action::ErrorKind::Retryable
        );

        let exists =
            status(json!({"code": 409, "reason": "AlreadyExists", "message": "x already exists"}));
        assert_eq!(
            from_status("create", &exists).kind,
            opsbook_engine::action::ErrorKind::Permanent
        );
        assert_eq!(
            from_status(
                "list",
                &status(json!({"code": 503, "reason": "ServiceUnavailable", "message": "x"}))
            )
            .kind,
            opsbook_engine::action::ErrorKind::Retryable
        );
    }
}
