//! The inputs every `ssh.*` action shares: which hosts, how to connect, how to roll out.

use std::time::Duration;

use opsbook_engine::model::DurationSpec;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One pattern or a list of them.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Hosts {
    /// An inventory pattern (`web`, `web:&prod`, `all:!db`, `web*`), names and addresses
    /// separated by commas.
    One(String),
    /// Several patterns; their hosts are joined in order, each once.
    Many(Vec<String>),
}

impl Hosts {
    /// The patterns.
    pub fn patterns(&self) -> Vec<&str> {
        match self {
            Hosts::One(p) => vec![p.as_str()],
            Hosts::Many(ps) => ps.iter().map(String::as_str).collect(),
        }
    }
}

/// An environment value: text, or a number or boolean (a rendered `{{ }}` keeps its type),
/// passed as its text.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum EnvValue {
    /// Text.
    Text(String),
    /// A number.
    Number(serde_json::Number),
    /// A boolean.
    Bool(bool),
}

impl EnvValue {
    /// The value as the environment gets it.
    pub fn text(&self) -> String {
        match self {
            EnvValue::Text(s) => s.clone(),
            EnvValue::Number(n) => n.to_string(),
            EnvValue::Bool(b) => b.to_string(),
        }
    }
}

/// How host keys are checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum HostKeyChecking {
    /// The host's key must already be in known_hosts and match (the default).
    #[default]
    Strict,
    /// A host not yet in known_hosts is added on first connection; a changed key still fails.
    AcceptNew,
    /// No check at all: anyone on the path can impersonate the host. Prints a warning.
    Off,
}

/// A batch size: a number of hosts or a percentage of them (`"25%"`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum BatchSize {
    /// A number of hosts.
    Count(#[schemars(range(min = 1))] u32),
    /// A percentage of the hosts, such as `"25%"`, rounded down, at least one host (or a
    /// count as text, as a template renders it).
    Percent(#[schemars(pattern(r"^\s*[0-9]+(\.[0-9]+)?\s*%?\s*$"))] String),
}

impl BatchSize {
    /// Hosts in a batch, out of `total`.
    pub fn of(&self, total: usize) -> Result<usize, String> {
        match self {
            BatchSize::Count(n) => Ok((*n as usize).max(1)),
            BatchSize::Percent(p) => {
                let text = p.trim();
                let bad =
                    || format!("`serial: {p}` is neither a count nor a percentage such as \"25%\"");
                match text.strip_suffix('%') {
                    Some(pct) => {
                        let pct: f64 = pct.trim().parse().map_err(|_| bad())?;
                        Ok(((total as f64 * pct / 100.0).floor() as usize).max(1))
                    }
                    // A count given as text (a rendered template).
                    None => text
                        .parse::<usize>()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(bad),
                }
            }
        }
    }
}

/// `serial`: one batch size, or a list whose last size repeats (`[1, 5, "25%"]`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Serial {
    /// One size for every batch.
    One(BatchSize),
    /// Sizes in order; the last one repeats.
    Steps(#[schemars(length(min = 1))] Vec<BatchSize>),
}

/// Inputs shared by `ssh.run`, `ssh.copy` and `ssh.fetch`. Each action's input type repeats
/// them through [`common_fields!`], so that their schemas stay closed (`additionalProperties:
/// false`) and list every field.
#[derive(Debug, Clone)]
pub struct Common {
    pub hosts: Hosts,
    pub user: Option<String>,
    pub port: Option<u16>,
    pub identity_file: Option<String>,
    pub host_key_checking: HostKeyChecking,
    pub known_hosts_file: Option<String>,
    pub ssh_config: Option<String>,
    pub jump_hosts: Vec<String>,
    pub ssh_options: indexmap::IndexMap<String, String>,
    pub connect_timeout: Option<DurationSpec>,
    pub timeout: Option<DurationSpec>,
    pub r#become: bool,
    pub become_user: Option<String>,
    pub forks: Option<u32>,
    pub serial: Option<Serial>,
    pub canary: Option<u32>,
    pub max_fail_percentage: Option<f64>,
}

/// The step-wide inputs: which hosts and how the rollout goes. Read from any `ssh.*` input
/// (other fields are ignored here); these cannot depend on `host`.
#[derive(Debug, Clone, Deserialize)]
pub struct Rollout {
    /// Which hosts.
    pub hosts: Hosts,
    /// Hosts in flight.
    #[serde(default)]
    pub forks: Option<u32>,
    /// Batches.
    #[serde(default)]
    pub serial: Option<Serial>,
    /// Canary hosts.
    #[serde(default)]
    pub canary: Option<u32>,
    /// Failure threshold.
    #[serde(default)]
    pub max_fail_percentage: Option<f64>,
}

/// The fields of [`Rollout`]: a template in them cannot read `host`.
pub const STEP_WIDE: &[&str] = &["hosts", "forks", "serial", "canary", "max_fail_percentage"];

/// Hosts in flight when `forks` is not given.
pub const DEFAULT_FORKS: usize = 20;
/// How long a connection may take when `connect_timeout` is not given.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl Common {
    /// The user `become` switches to.
    pub fn become_user(&self) -> Option<&str> {
        self.r#become
            .then(|| self.become_user.as_deref().unwrap_or("root"))
    }
}

/// Declares an action's input struct: the shared fields, then the action's own.
#[macro_export]
macro_rules! input_struct {
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
            /// Hosts: inventory patterns (`web`, `web:&prod`, `all:!db`, `web*`), host names or
            /// addresses, comma-separated or as a list.
            pub hosts: $crate::input::Hosts,
            /// Login user (else the inventory's `ansible_user`, else ssh's own default).
            #[serde(default)]
            pub user: Option<String>,
            /// Port (else the inventory's `ansible_port`, else 22).
            #[serde(default)]
            pub port: Option<u16>,
            /// Private key file (else the inventory's `ansible_ssh_private_key_file`, else
            /// ssh-agent and ssh's defaults). Relative to the runbook.
            #[serde(default)]
            pub identity_file: Option<String>,
            /// `strict` (default): the host key must be in known_hosts; `accept-new`: add
            /// unknown hosts, still refuse changed keys; `off`: no check (warns).
            #[serde(default)]
            pub host_key_checking: $crate::input::HostKeyChecking,
            /// A known_hosts file to use instead of `~/.ssh/known_hosts`. Relative to the runbook.
            #[serde(default)]
            pub known_hosts_file: Option<String>,
            /// An ssh_config file to use instead of `~/.ssh/config`. Relative to the runbook.
            #[serde(default)]
            pub ssh_config: Option<String>,
            /// Jump hosts (ProxyJump), in order: `bastion`, `user@bastion:2222`.
            #[serde(default)]
            pub jump_hosts: Vec<String>,
            /// More ssh options, as in ssh_config (`{KexAlgorithms: curve25519-sha256}`); they
            /// come before `ssh_config` (or ~/.ssh/config), so they win over it.
            #[serde(default)]
            pub ssh_options: indexmap::IndexMap<String, String>,
            /// How long connecting may take (default 10s).
            #[serde(default)]
            pub connect_timeout: Option<opsbook_engine::model::DurationSpec>,
            /// Time limit per host; a host that takes longer is stopped and counted failed.
            #[serde(default)]
            pub timeout: Option<opsbook_engine::model::DurationSpec>,
            /// Run as another user through `sudo -n` (no password prompt).
            #[serde(default, rename = "become")]
            pub r#become: bool,
            /// The user `become` switches to (default `root`).
            #[serde(default)]
            pub become_user: Option<String>,
            /// Hosts in flight at once (default 20).
            #[serde(default)]
            #[schemars(range(min = 1))]
            pub forks: Option<u32>,
            /// Rolling batches: a number of hosts, a percentage (`"25%"`), or a list of them whose
            /// last repeats (`[1, "50%"]`). A batch starts when the one before it has finished.
            #[serde(default)]
            pub serial: Option<$crate::input::Serial>,
            /// Run the first N hosts alone first; the rest only if all of them succeed.
            #[serde(default)]
            #[schemars(range(min = 1))]
            pub canary: Option<u32>,
            /// Stop the rollout (later batches are not started) when more than this percentage
            /// of a batch's hosts fail. Default 0: any failure stops it. The step fails when the
            /// rollout stopped or more than this percentage of all hosts failed.
            #[serde(default)]
            #[schemars(range(min = 0, max = 100))]
            pub max_fail_percentage: Option<f64>,
            $(
                $(#[$fmeta])*
                pub $field: $ty,
            )*
        }

        impl $name {
            /// The shared fields.
            pub fn common(&self) -> $crate::input::Common {
                $crate::input::Common {
                    hosts: self.hosts.clone(),
                    user: self.user.clone(),
                    port: self.port,
                    identity_file: self.identity_file.clone(),
                    host_key_checking: self.host_key_checking,
                    known_hosts_file: self.known_hosts_file.clone(),
                    ssh_config: self.ssh_config.clone(),
                    jump_hosts: self.jump_hosts.clone(),
                    ssh_options: self.ssh_options.clone(),
                    connect_timeout: self.connect_timeout,
                    timeout: self.timeout,
                    r#become: self.r#become,
                    become_user: self.become_user.clone(),
                    forks: self.forks,
                    serial: self.serial.clone(),
                    canary: self.canary,
                    max_fail_percentage: self.max_fail_percentage,
                }
            }
        }
    };
}
