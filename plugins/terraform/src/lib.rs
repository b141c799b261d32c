//! The Terraform plugin: drives the real `terraform` CLI (or OpenTofu's `tofu`, through
//! `binary`). Plans are always saved and read back with `show -json`, so steps and the report
//! see counts, addresses, actions and drifted attributes; applying needs a saved plan (or an
//! explicit `auto_approve: true`); destroying needs an explicit confirmation.

mod actions;
pub mod cli;
pub mod summary;

use opsbook_engine::action::Registry;

/// Adds the `terraform.*` actions.
pub fn register(registry: &mut Registry) {
    actions::register(registry);
}

/// Declares an action's input struct: the fields every `terraform.*` action shares, then its
/// own.
macro_rules! tf_input {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $(
                $(#[$fmeta:meta])*
                pub $field:ident : $ty:ty,
            )*
        }
    ) => {
        #[derive(Debug, Clone, serde::Deserialize, schemars::JsonSchema)]
        #[serde(deny_unknown_fields)]
        $(#[$meta])*
        pub struct $name {
            /// The configuration's folder, relative to the runbook (default: the runbook's).
            #[serde(default)]
            pub dir: Option<String>,
            /// The workspace to select (created if missing); default: the current one.
            #[serde(default)]
            pub workspace: Option<String>,
            /// Environment for terraform (`TF_VAR_…`, provider credentials) on top of the step's.
            #[serde(default)]
            pub env: indexmap::IndexMap<String, String>,
            /// How long to wait for the state lock (`-lock-timeout`), e.g. `30s`.
            #[serde(default)]
            pub lock_timeout: Option<opsbook_engine::model::DurationSpec>,
            /// Resource operations in parallel (`-parallelism`).
            #[serde(default)]
            #[schemars(range(min = 1))]
            pub parallelism: Option<u32>,
            /// The binary: `terraform` (default, from PATH), `tofu`, or a path.
            #[serde(default)]
            pub binary: Option<String>,
            $(
                $(#[$fmeta])*
                pub $field: $ty,
            )*
        }

        impl $name {
            /// The shared fields.
            pub fn common(&self) -> $crate::actions::Common {
                $crate::actions::Common {
                    dir: self.dir.clone(),
                    workspace: self.workspace.clone(),
                    env: self.env.clone(),
                    lock_timeout: self.lock_timeout,
                    parallelism: self.parallelism,
                    binary: self.binary.clone(),
                }
            }
        }
    };
}
pub(crate) use tf_input;
