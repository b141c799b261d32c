//! AWS errors in words: the service's error code and message, and whether a retry can help.

use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use opsbook_engine::action::ActionError;
use serde_json::json;

/// Codes that a later try may not meet again.
const RETRYABLE: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "ServiceUnavailable",
    "InternalError",
    "InternalFailure",
    "IncorrectInstanceState",
];

/// The error of an SDK call, as opsbook reports it: `<what>: <Code>: <message>`.
pub fn from_sdk<E, R>(what: &str, e: SdkError<E, R>) -> ActionError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match &e {
        SdkError::ServiceError(se) => {
            let err = se.err();
            let code = err.code().unwrap_or("Unknown").to_string();
            let message = err.message().unwrap_or("").to_string();
            let retry = RETRYABLE.contains(&code.as_str());
            let text = if message.is_empty() {
                format!("{what}: {code}")
            } else {
                format!("{what}: {code}: {message}")
            };
            let e = if retry {
                ActionError::retryable(format!("{text} (a retry may help)"))
            } else {
                ActionError::permanent(text)
            };
            e.with_details(json!({"code": code, "message": message, "retryable": retry}))
        }
        SdkError::TimeoutError(_) => ActionError::retryable(format!("{what}: timed out")),
        SdkError::DispatchFailure(d) => ActionError::retryable(format!(
            "{what}: cannot reach AWS: {}",
            d.as_connector_error()
                .map(|c| c.to_string())
                .unwrap_or_else(|| "connection failed".into())
        )),
        other => ActionError::retryable(format!("{what}: {}", chain(other))),
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let t = s.to_string();
        if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        source = s.source();
    }
    out
}

/// The AWS error code an error of [`from_sdk`] carries.
pub fn code(e: &ActionError) -> Option<&str> {
    e.details.get("code")?.as_str()
}
