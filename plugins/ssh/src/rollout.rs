//! Fan-out over hosts: `forks` hosts in flight, `serial` batches one after another, a `canary`
//! batch first, `max_fail_percentage` stopping the rollout, and one result per host.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use futures_util::stream::{FuturesUnordered, StreamExt};
use openssh::Session;
use opsbook_engine::action::{ActionError, LogStream, StepContext, TargetCase};
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::conn::{ConnKey, Pool};
use crate::input::{
    Common, HostKeyChecking, Hosts, Rollout, Serial, DEFAULT_CONNECT_TIMEOUT, DEFAULT_FORKS,
};
use crate::inventory::Host;

/// How a host's part of the step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HostStatus {
    /// It ran and worked.
    Succeeded,
    /// It ran and failed (exit code, timeout, a transfer error).
    Failed,
    /// No connection could be made.
    Unreachable,
    /// It was running when the step was cancelled.
    Cancelled,
    /// It was not started (the rollout stopped, or the step was cancelled first).
    Skipped,
}

impl HostStatus {
    /// The name in results.
    pub fn as_str(self) -> &'static str {
        match self {
            HostStatus::Succeeded => "succeeded",
            HostStatus::Failed => "failed",
            HostStatus::Unreachable => "unreachable",
            HostStatus::Cancelled => "cancelled",
            HostStatus::Skipped => "skipped",
        }
    }

    fn is_failure(self) -> bool {
        matches!(
            self,
            HostStatus::Failed | HostStatus::Unreachable | HostStatus::Cancelled
        )
    }
}

/// One host's result.
#[derive(Debug, Clone, Serialize)]
pub struct HostResult {
    /// Inventory name (or the address given).
    pub host: String,
    /// Where it connected.
    pub address: String,
    /// How it ended.
    pub status: HostStatus,
    /// The command's exit code.
    pub exit_code: Option<i32>,
    /// Captured stdout.
    pub stdout: String,
    /// Captured stderr.
    pub stderr: String,
    /// Wall time on this host, connecting included.
    pub duration_ms: u64,
    /// Why it did not succeed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The batch it ran in (1-based).
    pub batch: usize,
    /// Action-specific fields (files copied, where fetched files went).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl HostResult {
    /// A result for `target` with nothing run yet.
    pub fn new(target: &Target, status: HostStatus) -> Self {
        HostResult {
            host: target.name.clone(),
            address: target.address.clone(),
            status,
            exit_code: None,
            stdout: String::new(),
            stderr: String::new(),
            duration_ms: 0,
            error: None,
            batch: 0,
            extra: Map::new(),
        }
    }

    /// This result, failed with `message`.
    pub fn failed(mut self, message: impl Into<String>) -> Self {
        self.status = HostStatus::Failed;
        self.error = Some(message.into());
        self
    }
}

/// A host to run on: from the inventory, or given by address.
#[derive(Debug, Clone)]
pub struct Target {
    /// Inventory name.
    pub name: String,
    /// Address or name ssh connects to.
    pub address: String,
    /// `ansible_port`.
    pub port: Option<u16>,
    /// `ansible_user`.
    pub user: Option<String>,
    /// `ansible_ssh_private_key_file`.
    pub identity_file: Option<String>,
    /// Every var of the host.
    pub vars: Map<String, Value>,
}

impl From<Host> for Target {
    fn from(h: Host) -> Self {
        Target {
            name: h.name,
            address: h.address,
            port: h.port,
            user: h.user,
            identity_file: h.identity_file,
            vars: h.vars,
        }
    }
}

impl Target {
    /// `host` as templates see it: name, address, port, user and vars.
    pub fn template_value(&self) -> Value {
        json!({
            "name": self.name, "address": self.address, "port": self.port,
            "user": self.user, "vars": self.vars,
        })
    }

    /// The connection settings for this host under the step's inputs: the step's inputs win
    /// over the inventory's `ansible_*` vars, which win over `ansible_ssh_common_args` and
    /// `ansible_ssh_extra_args`. Relative paths are the runbook's.
    pub fn conn_key(&self, c: &Common, base: &Path) -> Result<ConnKey, String> {
        // Absolute: ssh reads relative paths in a config file against ~/.ssh, not the runbook.
        let path = |p: &str| {
            let joined = base.join(shellexpand_home(p));
            std::path::absolute(&joined).unwrap_or(joined)
        };
        let args = SshArgs::from_vars(&self.vars)?;
        let mut options: Vec<(String, String)> = c
            .ssh_options
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        options.extend(args.options);
        Ok(ConnKey {
            address: self.address.clone(),
            port: c.port.or(self.port).or(args.port),
            user: c.user.clone().or_else(|| self.user.clone()),
            identity_file: c
                .identity_file
                .as_deref()
                .or(self.identity_file.as_deref())
                .or(args.identity.as_deref())
                .map(path),
            checking: c.host_key_checking,
            known_hosts_file: c.known_hosts_file.as_deref().map(path),
            ssh_config: c.ssh_config.as_deref().or(args.config.as_deref()).map(path),
            jump_hosts: if c.jump_hosts.is_empty() {
                args.jump
            } else {
                c.jump_hosts.clone()
            },
            options,
        })
    }
}

/// What a ControlMaster takes of Ansible's `ansible_ssh_common_args` and
/// `ansible_ssh_extra_args` inventory vars: `-o Key=Value`, `-F file`, `-J hosts`, `-i key`,
/// `-p port`.
#[derive(Debug, Default, PartialEq)]
pub struct SshArgs {
    /// `-o` options.
    pub options: Vec<(String, String)>,
    /// `-F`.
    pub config: Option<String>,
    /// `-J`, split at commas.
    pub jump: Vec<String>,
    /// `-i`.
    pub identity: Option<String>,
    /// `-p`.
    pub port: Option<u16>,
}

impl SshArgs {
    /// Reads the two vars of a host.
    pub fn from_vars(vars: &Map<String, Value>) -> Result<SshArgs, String> {
        let mut out = SshArgs::default();
        for var in ["ansible_ssh_common_args", "ansible_ssh_extra_args"] {
            if let Some(text) = vars.get(var).and_then(Value::as_str) {
                out.parse(text)
                    .map_err(|e| format!("inventory var `{var}`: {e}"))?;
            }
        }
        Ok(out)
    }

    fn parse(&mut self, text: &str) -> Result<(), String> {
        let words = crate::inventory::split_words(text)?;
        let mut it = words.into_iter();
        while let Some(w) = it.next() {
            let (flag, attached) = match w.get(..2) {
                Some(f @ ("-o" | "-F" | "-J" | "-i" | "-p")) if w.len() > 2 => {
                    (f.to_string(), Some(w[2..].to_string()))
                }
                _ => (w.clone(), None),
            };
            let mut value = || {
                attached
                    .clone()
                    .or_else(|| it.next())
                    .ok_or_else(|| format!("`{flag}` needs a value"))
            };
            match flag.as_str() {
                "-o" => {
                    let v = value()?;
                    let (k, val) = v
                        .split_once('=')
                        .or_else(|| v.split_once(' '))
                        .ok_or_else(|| format!("`-o {v}` is not `-o Key=Value`"))?;
                    self.options
                        .push((k.trim().to_string(), val.trim().to_string()));
                }
                "-F" => self.config = Some(value()?),
                "-J" => self.jump = value()?.split(',').map(str::to_string).collect(),
                "-i" => self.identity = Some(value()?),
                "-p" => {
                    let v = value()?;
                    self.port = Some(v.parse().map_err(|_| format!("`-p {v}` is not a port"))?);
                }
                other => {
                    return Err(format!(
                        "`{other}` is not supported (opsbook takes -o Key=Value, -F, -J, -i and -p)"
                    ))
                }
            }
        }
        Ok(())
    }
}

/// `~/x` → `$HOME/x`; anything else as it is.
fn shellexpand_home(p: &str) -> std::path::PathBuf {
    match (p.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => Path::new(&home).join(rest),
        _ => p.into(),
    }
}

/// The hosts `hosts` selects, in inventory order, each once.
pub fn resolve_targets(
    hosts: &Hosts,
    cx: &StepContext,
    pool: &Pool,
) -> Result<Vec<Target>, String> {
    let inventory = match &cx.inventory {
        Some(source) => Some(pool.inventory(source)?),
        None => None,
    };
    let mut out: Vec<Target> = Vec::new();
    for pattern in hosts.patterns() {
        let found: Vec<Target> = match &inventory {
            Some(inv) => inv
                .select(pattern)
                .map_err(|e| format!("hosts `{pattern}`: {e}"))?
                .into_iter()
                .map(Target::from)
                .collect(),
            // Without an inventory every name is a host for ssh to resolve (an address, or a
            // `Host` of ~/.ssh/config).
            None => pattern
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(|name| {
                    if name.starts_with(['&', '!'])
                        || name.contains('*')
                        || name.contains(":&")
                        || name.contains(":!")
                    {
                        Err(format!(
                            "hosts `{pattern}`: `{name}` is a pattern, and patterns need an inventory \
                             (`inventory:` in the runbook or --inventory)"
                        ))
                    } else {
                        Ok(Target {
                            name: name.to_string(),
                            address: name.to_string(),
                            port: None,
                            user: None,
                            identity_file: None,
                            vars: Map::new(),
                        })
                    }
                })
                .collect::<Result<_, _>>()?,
        };
        for t in found {
            if !out.iter().any(|o| o.name == t.name) {
                out.push(t);
            }
        }
    }
    Ok(out)
}

/// The batches of a rollout: indexes into the host list.
pub fn batches(
    n: usize,
    canary: Option<u32>,
    serial: Option<&Serial>,
) -> Result<Vec<Vec<usize>>, String> {
    let mut out = Vec::new();
    let mut next = 0;
    if let Some(c) = canary {
        let c = (c as usize).min(n);
        if c > 0 {
            out.push((0..c).collect());
            next = c;
        }
    }
    let rest = n - next;
    let mut sizes: Vec<usize> = match serial {
        None => vec![rest.max(1)],
        Some(Serial::One(b)) => vec![b.of(n)?],
        Some(Serial::Steps(list)) => list.iter().map(|b| b.of(n)).collect::<Result<_, _>>()?,
    };
    if sizes.is_empty() {
        sizes.push(rest.max(1));
    }
    let mut i = 0;
    while next < n {
        let size = sizes[i.min(sizes.len() - 1)].max(1);
        let end = (next + size).min(n);
        out.push((next..end).collect());
        next = end;
        i += 1;
    }
    Ok(out)
}

/// What the action does on one host.
pub trait PerHost: Sync {
    /// The connection inputs of one host's rendered inputs (`user`, `port`, `timeout` …).
    fn common(&self, input: &Value) -> Result<Common, String>;

    /// Runs on one host with its rendered inputs; `result` comes prefilled with its name and
    /// address.
    fn run<'a>(
        &'a self,
        target: &'a Target,
        input: Value,
        session: Arc<Session>,
        log: &'a HostLog,
        result: HostResult,
    ) -> std::pin::Pin<Box<dyn Future<Output = HostResult> + Send + 'a>>;
}

/// One host's inputs: the step's, with the fields that read `host` rendered for it.
pub fn input_for(raw: &Value, cx: &StepContext, target: &Target) -> Result<Value, String> {
    match &cx.per_target {
        Some(p) if !p.is_empty() => p.render(raw, "host", &target.template_value()),
        _ => Ok(raw.clone()),
    }
}

/// A host's view of the step log: every line starts with the host's name.
pub struct HostLog {
    name: String,
    cx: StepContext,
}

impl HostLog {
    /// Writes a note (stdout stream) for this host.
    pub fn note(&self, text: &str) {
        self.cx
            .log
            .line(LogStream::Stdout, &format!("{} | {text}", self.name));
    }
}

impl crate::remote::Lines for HostLog {
    fn line(&self, stream: LogStream, line: &str) {
        self.cx.log.line(stream, &format!("{} | {line}", self.name));
    }
}

/// Runs `per_host` over `targets` in batches and builds the step's result: `hosts`, `totals`,
/// the names by outcome, and `stopped` when the rollout stopped early. The step fails when the
/// rollout stopped or more than `max_fail_percentage` of the hosts failed; its error then
/// carries the same result.
pub async fn rollout(
    targets: Vec<Target>,
    common: &Rollout,
    raw: &Value,
    cx: &StepContext,
    pool: &Pool,
    per_host: &dyn PerHost,
) -> Result<Value, ActionError> {
    let n = targets.len();
    let plan = batches(n, common.canary, common.serial.as_ref()).map_err(ActionError::permanent)?;
    let forks = common
        .forks
        .map(|f| f as usize)
        .unwrap_or(DEFAULT_FORKS)
        .max(1);
    let max_pct = common.max_fail_percentage.unwrap_or(0.0).clamp(0.0, 100.0);
    if n == 0 {
        cx.log
            .line(LogStream::Stdout, "no hosts matched: nothing to do");
    }
    let mut results: Vec<Option<HostResult>> = vec![None; n];
    let mut stopped: Option<String> = None;
    let batch_count = plan.len();
    for (b, batch) in plan.iter().enumerate() {
        if stopped.is_some() || cx.cancel.is_cancelled() {
            break;
        }
        if batch_count > 1 {
            let names: Vec<&str> = batch.iter().map(|&i| targets[i].name.as_str()).collect();
            let kind = if b == 0 && common.canary.is_some() {
                " (canary)"
            } else {
                ""
            };
            cx.log.line(
                LogStream::Stdout,
                &format!("batch {}/{batch_count}{kind}: {}", b + 1, names.join(", ")),
            );
        }
        let permits = Arc::new(tokio::sync::Semaphore::new(forks));
        let mut running: FuturesUnordered<_> = batch
            .iter()
            .map(|&i| {
                let permits = permits.clone();
                let target = &targets[i];
                async move {
                    let _permit = permits.acquire().await;
                    let log = HostLog {
                        name: target.name.clone(),
                        cx: cx.clone(),
                    };
                    let mut r = if cx.cancel.is_cancelled() {
                        let mut r = HostResult::new(target, HostStatus::Skipped);
                        r.error = Some("not started: the step was cancelled".into());
                        r
                    } else {
                        one_host(target, raw, cx, pool, per_host, &log).await
                    };
                    r.batch = b + 1;
                    report_host(cx, &log, &r);
                    (i, r)
                }
            })
            .collect();
        let mut failed_here = 0;
        while let Some((i, r)) = running.next().await {
            if r.status.is_failure() {
                failed_here += 1;
            }
            results[i] = Some(r);
        }
        if cx.cancel.is_cancelled() {
            stopped = Some("the step was cancelled".into());
        } else if b == 0 && common.canary.is_some() && failed_here > 0 && b + 1 < batch_count {
            stopped = Some(format!(
                "the canary batch failed on {failed_here} of {} host{}",
                batch.len(),
                plural(batch.len())
            ));
        } else if (failed_here as f64) * 100.0 > max_pct * batch.len() as f64 && b + 1 < batch_count
        {
            stopped = Some(format!(
                "batch {} of {batch_count}: {failed_here} of {} host{} failed, more than max_fail_percentage {max_pct}%",
                b + 1,
                batch.len(),
                plural(batch.len())
            ));
        }
    }
    // Hosts of batches never started.
    let mut not_started = 0;
    for (i, slot) in results.iter_mut().enumerate() {
        if slot.is_none() {
            not_started += 1;
            let mut r = HostResult::new(&targets[i], HostStatus::Skipped);
            r.error = Some(match &stopped {
                Some(why) => format!("not started: the rollout stopped ({why})"),
                None => "not started".into(),
            });
            let log = HostLog {
                name: targets[i].name.clone(),
                cx: cx.clone(),
            };
            report_host(cx, &log, &r);
            *slot = Some(r);
        }
    }
    let results: Vec<HostResult> = results.into_iter().flatten().collect();
    let count = |s: HostStatus| results.iter().filter(|r| r.status == s).count();
    let names = |s: HostStatus| -> Vec<&str> {
        results
            .iter()
            .filter(|r| r.status == s)
            .map(|r| r.host.as_str())
            .collect()
    };
    let failures = results.iter().filter(|r| r.status.is_failure()).count();
    let out = json!({
        "hosts": results,
        "totals": {
            "hosts": n,
            "succeeded": count(HostStatus::Succeeded),
            "failed": count(HostStatus::Failed),
            "unreachable": count(HostStatus::Unreachable),
            "cancelled": count(HostStatus::Cancelled),
            "skipped": count(HostStatus::Skipped),
        },
        "succeeded_hosts": names(HostStatus::Succeeded),
        "failed_hosts": names(HostStatus::Failed),
        "unreachable_hosts": names(HostStatus::Unreachable),
        "batches": batch_count,
        "stopped": stopped,
    });
    let too_many = (failures as f64) * 100.0 > max_pct * n.max(1) as f64;
    if cx.cancel.is_cancelled() {
        let cut: Vec<&str> = names(HostStatus::Cancelled);
        let msg = if cut.is_empty() {
            "cancelled".to_string()
        } else {
            format!("cancelled; cut short on {}", cut.join(", "))
        };
        return Err(ActionError::cancelled_with(msg).with_details(out));
    }
    if stopped.is_some() || too_many {
        let mut msg = format!("{failures} of {n} host{} failed", plural(n));
        let examples: Vec<String> = results
            .iter()
            .filter(|r| r.status.is_failure())
            .take(3)
            .map(|r| {
                format!(
                    "{}: {}",
                    r.host,
                    r.error.as_deref().unwrap_or(r.status.as_str())
                )
            })
            .collect();
        if !examples.is_empty() {
            msg.push_str(&format!(
                " ({}{})",
                examples.join("; "),
                if failures > 3 { "; …" } else { "" }
            ));
        }
        if let Some(why) = &stopped {
            msg.push_str(&format!(
                "; the rollout stopped after {why}; {not_started} host{} not started",
                plural(not_started)
            ));
        }
        // A retry (when the step has `retry:`) runs every host again, as a person re-running
        // the step would.
        let e = ActionError::retryable(msg);
        return Err(e.with_details(out));
    }
    Ok(out)
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

async fn one_host(
    target: &Target,
    raw: &Value,
    cx: &StepContext,
    pool: &Pool,
    per_host: &dyn PerHost,
    log: &HostLog,
) -> HostResult {
    let started = Instant::now();
    let failed = |status: HostStatus, e: String| {
        let mut r = HostResult::new(target, status);
        r.error = Some(e);
        r.duration_ms = started.elapsed().as_millis() as u64;
        r
    };
    let input = match input_for(raw, cx, target) {
        Ok(v) => v,
        Err(e) => return failed(HostStatus::Failed, e),
    };
    let common = match per_host.common(&input) {
        Ok(c) => c,
        Err(e) => return failed(HostStatus::Failed, e),
    };
    if common.host_key_checking == HostKeyChecking::Off && pool.first_unchecked() {
        cx.log.line(
            LogStream::Stderr,
            "warning: host_key_checking is off: host keys are not checked, so anyone on the network path can pose as these hosts",
        );
    }
    let key = match target.conn_key(&common, &cx.cwd) {
        Ok(k) => k,
        Err(e) => return failed(HostStatus::Unreachable, e),
    };
    let connect_timeout = common
        .connect_timeout
        .map(|d| d.get())
        .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
    let connect = pool.session(&key, connect_timeout);
    let session = tokio::select! {
        s = connect => s,
        _ = cx.cancel.cancelled() => {
            return failed(HostStatus::Cancelled, "cancelled while connecting".into());
        }
    };
    let mut r = match session {
        Ok(session) => {
            let r = HostResult::new(target, HostStatus::Succeeded);
            per_host.run(target, input, session, log, r).await
        }
        Err(e) => failed(HostStatus::Unreachable, e.message),
    };
    r.duration_ms = started.elapsed().as_millis() as u64;
    r
}

/// The host's closing log line and its JUnit case.
fn report_host(cx: &StepContext, log: &HostLog, r: &HostResult) {
    let how = match (r.status, r.exit_code, &r.error) {
        (HostStatus::Succeeded, Some(c), _) => format!("succeeded (exit {c})"),
        (HostStatus::Succeeded, None, _) => "succeeded".to_string(),
        (s, _, Some(e)) => format!("{}: {e}", s.as_str()),
        (s, _, None) => s.as_str().to_string(),
    };
    let secs = r.duration_ms as f64 / 1000.0;
    if r.status == HostStatus::Skipped {
        log.note(&format!("-- {how}"));
    } else {
        log.note(&format!("-- {how} in {secs:.2} s"));
    }
    let output = (r.status.is_failure() && !(r.stdout.is_empty() && r.stderr.is_empty()))
        .then(|| tail(&format!("{}{}", r.stdout, r.stderr), 20));
    cx.log.case(TargetCase {
        name: r.host.clone(),
        status: r.status.as_str().to_string(),
        duration_ms: r.duration_ms,
        message: r.error.clone(),
        output,
        item: None,
    });
}

fn tail(s: &str, lines: usize) -> String {
    let all: Vec<&str> = s.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::BatchSize;

    fn plan(n: usize, canary: Option<u32>, serial: Option<Serial>) -> Vec<Vec<usize>> {
        batches(n, canary, serial.as_ref()).unwrap()
    }

    #[test]
    fn ansible_ssh_args_give_options_config_jump_key_and_port() {
        let vars: Map<String, Value> = serde_json::from_value(json!({
            "ansible_ssh_common_args": "-o StrictHostKeyChecking=yes -oKexAlgorithms=curve25519-sha256 -F '/etc/my config'",
            "ansible_ssh_extra_args": "-J bastion,b2 -i ~/.ssh/k -p 2222",
        }))
        .unwrap();
        let a = SshArgs::from_vars(&vars).unwrap();
        assert_eq!(
            a.options,
            vec![
                ("StrictHostKeyChecking".into(), "yes".into()),
                ("KexAlgorithms".into(), "curve25519-sha256".into())
            ]
        );
        assert_eq!(a.config.as_deref(), Some("/etc/my config"));
        assert_eq!(a.jump, vec!["bastion", "b2"]);
        assert_eq!(a.identity.as_deref(), Some("~/.ssh/k"));
        assert_eq!(a.port, Some(2222));
        let bad: Map<String, Value> =
            serde_json::from_value(json!({"ansible_ssh_common_args": "-A"})).unwrap();
        let e = SshArgs::from_vars(&bad).unwrap_err();
        assert!(
            e.contains("ansible_ssh_common_args") && e.contains("`-A`"),
            "{e}"
        );
        let missing: Map<String, Value> =
            serde_json::from_value(json!({"ansible_ssh_extra_args": "-p"})).unwrap();
        assert!(SshArgs::from_vars(&missing)
            .unwrap_err()
            .contains("needs a value"));
    }

    #[test]
    fn without_serial_every_host_is_one_batch() {
        assert_eq!(plan(3, None, None), vec![vec![0, 1, 2]]);
        assert_eq!(plan(0, None, None), Vec::<Vec<usize>>::new());
    }

    #[test]
    fn serial_counts_percentages_and_lists() {
        let count = Serial::One(BatchSize::Count(2));
        assert_eq!(
            plan(5, None, Some(count)),
            vec![vec![0, 1], vec![2, 3], vec![4]]
        );
        // 25% of 10 is 2.5: rounded down to 2, as Ansible does.
        let pct = Serial::One(BatchSize::Percent("25%".into()));
        assert_eq!(plan(10, None, Some(pct)).len(), 5);
        // Never zero hosts per batch.
        let tiny = Serial::One(BatchSize::Percent("1%".into()));
        assert_eq!(plan(3, None, Some(tiny)).len(), 3);
        // A count as text (a rendered template).
        let text = Serial::One(BatchSize::Percent("2".into()));
        assert_eq!(plan(4, None, Some(text)).len(), 2);
        // The last size repeats.
        let list = Serial::Steps(vec![BatchSize::Count(1), BatchSize::Percent("50%".into())]);
        assert_eq!(
            plan(7, None, Some(list)),
            vec![vec![0], vec![1, 2, 3], vec![4, 5, 6]]
        );
        let bad = Serial::One(BatchSize::Percent("half".into()));
        assert!(batches(4, None, Some(&bad)).unwrap_err().contains("half"));
    }

    #[test]
    fn a_canary_batch_comes_first_and_serial_splits_the_rest() {
        let s = Serial::One(BatchSize::Count(2));
        assert_eq!(
            plan(5, Some(1), Some(s)),
            vec![vec![0], vec![1, 2], vec![3, 4]]
        );
        assert_eq!(plan(3, Some(1), None), vec![vec![0], vec![1, 2]]);
        // A canary as big as the fleet is the only batch.
        assert_eq!(plan(2, Some(5), None), vec![vec![0, 1]]);
    }
}
