//! The SSH plugin: `ssh.run`, `ssh.copy` and `ssh.fetch` on fleets of hosts.
//!
//! - Hosts come from Ansible inventories, YAML or INI ([`inventory`]), selected by patterns
//!   (`web`, `web:&prod`, `all:!db`, `web*`), or are given by name or address.
//! - Connections are OpenSSH ControlMasters, one per host per run, shared by every step and
//!   command ([`conn`]); host keys are checked strictly unless a step opts out.
//! - Steps fan out over hosts with `forks`, `serial` batches, a `canary` batch and
//!   `max_fail_percentage` ([`rollout`]), and report one result (and one JUnit case) per host.

pub mod conn;
pub mod input;
pub mod inventory;
mod pattern;
pub mod remote;
pub mod rollout;
mod run;
mod transfer;

use opsbook_engine::action::{ActionError, Registry, StepContext};
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::Value;

pub use inventory::{Host, Inventory, InventoryError};

/// Adds the `ssh.*` actions.
pub fn register(registry: &mut Registry) {
    registry.register(run::SshRun);
    registry.register(transfer::SshCopy);
    registry.register(transfer::SshFetch);
}

/// Documentation shared by the `ssh.*` actions.
const FLEET_DOC: &str = "\
Hosts: `hosts` takes inventory patterns (`web`, `web:&prod`, `all:!db`, `web*`), names or \
addresses, comma-separated or as a list. The inventory is the runbook's `inventory:` (Ansible YAML \
or INI) or `--inventory`; `ansible_host`, `ansible_port`, `ansible_user` and \
`ansible_ssh_private_key_file` are honoured, and the step's own `user`, `port` and \
`identity_file` win over them. Templates in `with:` may read `host` (`host.name`, \
`host.address`, `host.vars.<var>`): they are rendered once per host.\n\n\
Connections: the system's OpenSSH client, one ControlMaster per host per run, reused by every \
step; `~/.ssh/config` and ssh-agent apply. Host keys are checked strictly against known_hosts; \
`host_key_checking: accept-new` adds unknown hosts, `off` checks nothing and warns. A host that \
cannot be reached within `connect_timeout` (default 10s) is `unreachable`.\n\n\
Rollout: `forks` hosts in flight (default 20); `serial` runs batches one after another (a count, \
a percentage such as `\"25%\"`, or a list whose last size repeats); `canary: N` runs the first \
N hosts alone first. When more than `max_fail_percentage` (default 0) of a batch's hosts fail, \
later batches are not started and their hosts are `skipped`. The step fails when the rollout \
stopped or more than `max_fail_percentage` of all hosts failed; `max_fail_percentage: 100` makes \
a probe whose failures are data.\n\n\
Result: `hosts` (one entry per host: `host`, `address`, `status` = succeeded | failed | \
unreachable | cancelled | skipped, `exit_code`, `stdout`, `stderr`, `duration_ms`, `error`, \
`batch`), `totals`, `succeeded_hosts`, `failed_hosts`, `unreachable_hosts`, `batches`, `stopped`. \
Log lines start with the host's name; junit.xml has a test case per host.\n\n\
Cancellation and `timeout` stop the remote process group (TERM, then KILL), through sudo for \
`become` commands; the result says which hosts were cut short.";

const RUN_DOC: &str =
    "`command` runs through the remote `/bin/sh -c` (quote template values with `| shquote`); \
`args` runs a program with each argument quoted, so data never becomes code; `script` uploads \
inline text or a local `{file: path}` to a temporary file on the host, runs it (with `args` as \
its arguments) and removes it. `env` and `cwd` apply on the host; `become: true` runs through \
`sudo -n` (as `become_user`, default root) and fails clearly when sudo wants a password. \
`expect_exit` lists the exit codes that count as success (default `[0]`). \
`--dry-run` connects to every host (reachability) and, with `become`, asks sudo whether it \
would run without a password; the command itself is not run.";

/// An action's documentation followed by the shared part.
fn doc(own: &str) -> String {
    format!("{own}\n\n{FLEET_DOC}")
}

/// What every `ssh.*` step returns.
#[derive(Debug, Serialize, JsonSchema)]
pub struct FleetOutput {
    /// One entry per host, in inventory order.
    pub hosts: Vec<HostEntry>,
    /// Counts by status.
    pub totals: Totals,
    /// Names of the hosts that succeeded.
    pub succeeded_hosts: Vec<String>,
    /// Names of the hosts whose command (or transfer) failed.
    pub failed_hosts: Vec<String>,
    /// Names of the hosts that could not be reached.
    pub unreachable_hosts: Vec<String>,
    /// How many batches the rollout had.
    pub batches: usize,
    /// Why the rollout stopped early (null when it did not).
    pub stopped: Option<String>,
}

/// One host's entry in [`FleetOutput`].
#[derive(Debug, Serialize, JsonSchema)]
pub struct HostEntry {
    /// Inventory name.
    pub host: String,
    /// Address connected to.
    pub address: String,
    /// `succeeded`, `failed`, `unreachable`, `cancelled` or `skipped`.
    pub status: String,
    /// Exit code of the command.
    pub exit_code: Option<i32>,
    /// Captured stdout.
    pub stdout: String,
    /// Captured stderr.
    pub stderr: String,
    /// Wall time on the host.
    pub duration_ms: u64,
    /// Why it did not succeed.
    pub error: Option<String>,
    /// Its batch (1-based).
    pub batch: usize,
}

/// Counts of hosts by status.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Totals {
    /// All selected hosts.
    pub hosts: usize,
    /// Succeeded.
    pub succeeded: usize,
    /// Failed.
    pub failed: usize,
    /// Unreachable.
    pub unreachable: usize,
    /// Cancelled while running.
    pub cancelled: usize,
    /// Not started.
    pub skipped: usize,
}

/// Typed inputs from JSON, with the serde message on failure.
fn parse<T: serde::de::DeserializeOwned>(v: &Value) -> Result<T, ActionError> {
    serde_json::from_value(v.clone())
        .map_err(|e| ActionError::permanent(format!("invalid input: {e}")))
}

/// Resolves the hosts and rolls `per_host` out over them. `raw` is the step's input, with the
/// fields that read `host` still templates.
async fn fleet(
    raw: &Value,
    cx: &StepContext,
    per_host: &dyn rollout::PerHost,
) -> Result<Value, ActionError> {
    let pool = cx.resources.state(conn::Pool::default);
    if let Some(p) = &cx.per_target {
        for ptr in p.pointers() {
            let field = ptr.trim_start_matches('/').split('/').next().unwrap_or("");
            if input::STEP_WIDE.contains(&field) {
                return Err(ActionError::permanent(format!(
                    "`{field}` cannot read `host`: it applies to the whole step, before any host runs"
                )));
            }
        }
    }
    let step: input::Rollout = parse(raw)?;
    let targets =
        rollout::resolve_targets(&step.hosts, cx, &pool).map_err(ActionError::permanent)?;
    rollout::rollout(targets, &step, raw, cx, &pool, per_host).await
}

/// A host's result from how its command ended.
fn finish(
    mut result: rollout::HostResult,
    done: remote::Finished,
    expect_exit: Option<&[i32]>,
    become_user: Option<&str>,
) -> rollout::HostResult {
    use rollout::HostStatus;
    result.exit_code = done.exit_code;
    if done.truncated {
        result.extra.insert("truncated".into(), Value::Bool(true));
    }
    match done.stopped {
        Some(remote::Stop::Cancelled { killed }) => {
            result.status = HostStatus::Cancelled;
            result.error = Some(if killed {
                "cut short: the step was cancelled; the remote command was stopped".into()
            } else {
                "cut short: the step was cancelled; the remote command could not be stopped (its process group was not known)".into()
            });
        }
        Some(remote::Stop::TimedOut { after, killed }) => {
            result.status = HostStatus::Failed;
            result.error = Some(format!(
                "timed out after {}; {}",
                conn::humanize(after),
                if killed {
                    "the remote command was stopped"
                } else {
                    "the remote command could not be stopped (its process group was not known)"
                }
            ));
        }
        Some(remote::Stop::Lost(why)) => {
            result.status = HostStatus::Failed;
            result.error = Some(format!(
                "the connection failed while the command ran: {why}"
            ));
        }
        None => {
            let ok = match done.exit_code {
                Some(c) => expect_exit.unwrap_or(&[0]).contains(&c),
                None => false,
            };
            if !ok {
                result.status = HostStatus::Failed;
                let sudo = become_user.and_then(|u| sudo_problem(&done.stderr, u));
                let said = last_line(&done.stderr);
                result.error = Some(match (sudo, done.exit_code) {
                    (Some(why), _) => why,
                    (None, Some(c)) if said.is_empty() => format!("exit code {c}"),
                    (None, Some(c)) => format!("exit code {c}: {said}"),
                    (None, None) if done.signaled => "the command was killed by a signal".into(),
                    (None, None) => "the command ended without an exit code".into(),
                });
            }
        }
    }
    result.stdout = done.stdout;
    result.stderr = done.stderr;
    result
}

/// The last non-empty line of a command's stderr, cut to 200 characters, for an error message.
fn last_line(stderr: &str) -> String {
    let line = stderr
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or("");
    match line.char_indices().nth(200) {
        Some((at, _)) => format!("{}…", &line[..at]),
        None => line.to_string(),
    }
}

/// Asks sudo on the host whether it would run a command as `user` without a password
/// (`--dry-run` with `become`).
async fn probe_sudo(
    session: &std::sync::Arc<openssh::Session>,
    user: &str,
    log: &rollout::HostLog,
    cx: &StepContext,
) -> Result<(), String> {
    let probe = remote::Spec {
        script: "true".into(),
        become_user: Some(user.to_string()),
        ..Default::default()
    };
    let done = remote::run(
        session,
        &probe,
        None,
        log,
        4096,
        Some(std::time::Duration::from_secs(30)),
        &cx.cancel,
    )
    .await;
    if done.exit_code == Some(0) {
        return Ok(());
    }
    Err(sudo_problem(&done.stderr, user).unwrap_or_else(|| {
        format!(
            "become: `sudo -n -u {user} true` failed: {}",
            last_line(&done.stderr)
        )
    }))
}

/// A clear message when sudo refused to run the command without a password.
fn sudo_problem(stderr: &str, user: &str) -> Option<String> {
    let s = stderr.to_ascii_lowercase();
    if s.contains("sudo: a password is required")
        || s.contains("sudo: a terminal is required")
        || s.contains("is not in the sudoers file")
        || s.contains("is not allowed to execute")
        || s.contains("may not run sudo")
    {
        Some(format!(
            "become: sudo would not run the command as `{user}` without a password ({}); \
             give the login user passwordless sudo (NOPASSWD) for it",
            stderr
                .lines()
                .find(|l| l.contains("sudo"))
                .unwrap_or("")
                .trim()
        ))
    } else if s.contains("sudo: command not found") || s.contains("sudo: not found") {
        Some("become: sudo is not installed on the host".into())
    } else {
        None
    }
}
