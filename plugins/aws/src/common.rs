//! What every AWS action shares: the `region`/`profile`/`assume_role` inputs, input parsing,
//! and turning JSON values into the strings AWS takes.

use opsbook_engine::action::ActionError;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Declares an action input struct with the fields every AWS action takes (`region`,
/// `profile`, `assume_role`) after its own, and a `key()` naming the SDK config it needs.
macro_rules! aws_input {
    ($(#[$meta:meta])* pub struct $name:ident { $($body:tt)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, serde::Deserialize, schemars::JsonSchema)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            $($body)*
            /// AWS region (default: the standard chain's: `AWS_REGION`, the profile's region).
            #[serde(default)]
            pub region: Option<String>,
            /// A profile of `~/.aws/config` (default: `AWS_PROFILE` or `default`).
            #[serde(default)]
            pub profile: Option<String>,
            /// A role to assume with STS: `role_arn`, `session_name`, `external_id`.
            #[serde(default)]
            pub assume_role: Option<$crate::config::AssumeRole>,
        }

        impl $name {
            /// The SDK config this input needs.
            #[allow(dead_code)]
            pub fn key(&self) -> $crate::config::ConfigKey {
                $crate::config::ConfigKey {
                    region: self.region.clone(),
                    profile: self.profile.clone(),
                    assume_role: self.assume_role.clone(),
                }
            }
        }
    };
}
pub(crate) use aws_input;

/// The action's input, or a permanent error saying what is wrong with it.
pub fn parse<T: DeserializeOwned>(input: Value) -> Result<T, ActionError> {
    serde_json::from_value(input).map_err(|e| ActionError::permanent(format!("invalid input: {e}")))
}

/// A scalar as AWS wants it: strings as they are, numbers and booleans written out.
pub fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A value or a list of values, as strings (`{Env: prod}` or `{Env: [prod, stage]}`).
pub fn texts(v: &Value) -> Vec<String> {
    match v {
        Value::Array(a) => a.iter().map(text).collect(),
        other => vec![text(other)],
    }
}

/// The SDK's date-time as RFC 3339 text.
pub fn date(d: &aws_smithy_types::DateTime) -> String {
    d.fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap_or_else(|_| d.to_string())
}
