//! `ssh.copy` and `ssh.fetch`: files and folders to and from hosts, as tar streams over the
//! host's master connection (no scp or sftp needed on the host, only `tar`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use openssh::Session;
use opsbook_engine::action::{Action, ActionError, ActionSpec, StepContext};
use opsbook_engine::template::filters::quote_posix;
use serde_json::{json, Value};

use crate::remote::{self, Output, Spec, Stdin};
use crate::rollout::{HostLog, HostResult, PerHost, Target};

crate::input_struct! {
    /// `ssh.copy` inputs.
    #[schemars(extend("oneOf" = [{"required": ["src"]}, {"required": ["content"]}]))]
    pub struct CopyInput {
        /// A local file or folder, relative to the runbook. A folder's contents are copied into
        /// `dest`.
        #[serde(default)]
        pub src: Option<String>,
        /// Text to write to `dest` instead of a local file (may read `host.vars`).
        #[serde(default)]
        pub content: Option<String>,
        /// The remote path: the file to write (or, ending in `/`, the folder to put `src` in), or
        /// the folder a local folder's contents go into. Parent folders are created.
        pub dest: String,
        /// Permissions of every file written, as an octal string (`"0644"`). Quote it: YAML
        /// reads an unquoted 0644 as the number 644.
        #[serde(default)]
        #[schemars(pattern(r"^0?[0-7]{3,4}$"))]
        pub mode: Option<String>,
    }
}

crate::input_struct! {
    /// `ssh.fetch` inputs.
    pub struct FetchInput {
        /// The remote file or folder.
        pub src: String,
        /// A local folder, relative to the runbook: each host's copy goes to `dest/<host>/`.
        pub dest: String,
    }
}

/// The `ssh.copy` action.
pub struct SshCopy;

/// The `ssh.fetch` action.
pub struct SshFetch;

const COPY_DOC: &str = "Uploads `src` (a local file or folder) or `content` (text, which may read \
`host.vars`) to `dest` on every host, with `mode` on every file written when given; parent \
folders are created; with `become` the files are written through sudo (and owned by \
`become_user`). It needs `tar` on the host. Each host's result adds `files` and `bytes`. \
`--dry-run` connects and lists what would be copied.";

const FETCH_DOC: &str = "Downloads `src` (a remote file or folder) from every host into \
`dest/<host>/` locally (one folder per host, so hosts never overwrite each other). It needs `tar` \
on the host. Each host's result adds `dest` (the local folder), `files` and `bytes`. \
`--dry-run` connects and lists what would be fetched.";

#[async_trait]
impl Action for SshCopy {
    fn spec(&self) -> ActionSpec {
        ActionSpec::new::<CopyInput, crate::FleetOutput>(
            "ssh.copy",
            "Upload files or folders to hosts, with a mode.",
            &crate::doc(COPY_DOC),
        )
        .with_check()
        .binding("host")
    }

    async fn run(&self, input: Value, cx: &StepContext) -> Result<Value, ActionError> {
        let parsed: CopyInput = crate::parse(&input)?;
        let per_host = CopyToHost {
            raw: input,
            cx: cx.clone(),
            archives: Mutex::new(HashMap::new()),
        };
        crate::fleet(&parsed.common(), cx, &per_host).await
    }
}

#[async_trait]
impl Action for SshFetch {
    fn spec(&self) -> ActionSpec {
        ActionSpec::new::<FetchInput, crate::FleetOutput>(
            "ssh.fetch",
            "Download files or folders from hosts, one local folder per host.",
            &crate::doc(FETCH_DOC),
        )
        .with_check()
        .binding("host")
    }

    async fn run(&self, input: Value, cx: &StepContext) -> Result<Value, ActionError> {
        let parsed: FetchInput = crate::parse(&input)?;
        let per_host = FetchFromHost {
            raw: input,
            cx: cx.clone(),
        };
        crate::fleet(&parsed.common(), cx, &per_host).await
    }
}

/// This host's inputs: the step's, with the fields that read `host` rendered for it.
fn input_for<T: serde::de::DeserializeOwned>(
    raw: &Value,
    cx: &StepContext,
    target: &Target,
) -> Result<T, String> {
    let v = match &cx.per_target {
        Some(p) if !p.is_empty() => p.render(raw, "host", &target.template_value())?,
        _ => raw.clone(),
    };
    crate::parse::<T>(&v).map_err(|e| e.message)
}

/// An archive built once per distinct (src, content, dest, mode) and streamed to every host.
struct Archive {
    file: tempfile::NamedTempFile,
    /// The remote folder it unpacks in.
    dir: String,
    /// What it holds, relative to `dir`, for `chmod` and messages.
    entries: Vec<String>,
    files: usize,
    bytes: u64,
}

/// What makes two hosts' archives the same: (src, content, dest, mode).
type ArchiveKey = (Option<String>, Option<String>, String, Option<String>);

struct CopyToHost {
    raw: Value,
    cx: StepContext,
    archives: Mutex<HashMap<ArchiveKey, Arc<Archive>>>,
}

impl CopyToHost {
    fn archive(&self, input: &CopyInput) -> Result<Arc<Archive>, String> {
        let key = (
            input.src.clone(),
            input.content.clone(),
            input.dest.clone(),
            input.mode.clone(),
        );
        if let Some(a) = self.archives.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return Ok(a);
        }
        let a = Arc::new(build_archive(input, &self.cx.cwd)?);
        if let Ok(mut m) = self.archives.lock() {
            m.insert(key, a.clone());
        }
        Ok(a)
    }
}

fn parse_mode(mode: &str) -> Result<u32, String> {
    u32::from_str_radix(mode, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("`mode: {mode}` is not an octal mode such as \"0644\""))
}

/// The remote folder and entry name for a single file going to `dest`.
fn split_dest(dest: &str, local_name: &str) -> (String, String) {
    if dest.ends_with('/') {
        return (
            dest.trim_end_matches('/').to_string() + "/",
            local_name.to_string(),
        );
    }
    match dest.rsplit_once('/') {
        Some(("", name)) => ("/".into(), name.into()),
        Some((dir, name)) => (dir.into(), name.into()),
        None => (".".into(), dest.into()),
    }
}

/// Writes the archive: regular files with the requested mode, folders as they are.
struct Packer {
    builder: tar::Builder<std::fs::File>,
    mode: Option<u32>,
    entries: Vec<String>,
    files: usize,
    bytes: u64,
}

impl Packer {
    fn file(
        &mut self,
        name: &str,
        data: &mut dyn std::io::Read,
        size: u64,
        local_mode: u32,
    ) -> Result<(), String> {
        let mut header = tar::Header::new_gnu();
        header.set_size(size);
        header.set_mode(self.mode.unwrap_or(local_mode));
        header.set_mtime(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        );
        header.set_entry_type(tar::EntryType::Regular);
        self.builder
            .append_data(&mut header, name, data)
            .map_err(|e| format!("cannot archive {name}: {e}"))?;
        self.entries.push(name.to_string());
        self.files += 1;
        self.bytes += size;
        Ok(())
    }

    /// Every file and folder under `root`, in name order.
    fn folder(&mut self, root: &Path) -> Result<(), String> {
        let mut stack = vec![root.to_path_buf()];
        while let Some(folder) = stack.pop() {
            let mut list: Vec<_> = std::fs::read_dir(&folder)
                .map_err(|e| format!("cannot read {}: {e}", folder.display()))?
                .filter_map(Result::ok)
                .collect();
            list.sort_by_key(|e| e.file_name());
            for e in list {
                let p = e.path();
                let rel = p
                    .strip_prefix(root)
                    .map_err(|_| format!("{} is outside {}", p.display(), root.display()))?
                    .to_string_lossy()
                    .to_string();
                let m = std::fs::metadata(&p)
                    .map_err(|e| format!("cannot read {}: {e}", p.display()))?;
                if m.is_dir() {
                    self.builder
                        .append_dir(&rel, &p)
                        .map_err(|e| format!("cannot archive {}: {e}", p.display()))?;
                    stack.push(p);
                } else if m.is_file() {
                    let mut f = std::fs::File::open(&p)
                        .map_err(|e| format!("cannot read {}: {e}", p.display()))?;
                    self.file(&rel, &mut f, m.len(), local_mode(&m))?;
                }
            }
        }
        Ok(())
    }
}

fn build_archive(input: &CopyInput, base: &Path) -> Result<Archive, String> {
    let mode = input.mode.as_deref().map(parse_mode).transpose()?;
    let file = tempfile::NamedTempFile::new()
        .map_err(|e| format!("cannot create a temporary file: {e}"))?;
    let writer = file
        .reopen()
        .map_err(|e| format!("cannot open a temporary file: {e}"))?;
    let mut p = Packer {
        builder: tar::Builder::new(writer),
        mode,
        entries: Vec::new(),
        files: 0,
        bytes: 0,
    };
    let dir = match (&input.src, &input.content) {
        (None, Some(text)) => {
            let (dir, name) = split_dest(&input.dest, "content");
            p.file(&name, &mut text.as_bytes(), text.len() as u64, 0o644)?;
            dir
        }
        (Some(src), None) => {
            let path = base.join(src);
            let meta = std::fs::metadata(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            if meta.is_dir() {
                p.folder(&path)?;
                match input.dest.trim_end_matches('/') {
                    "" => "/".to_string(),
                    d => d.to_string(),
                }
            } else {
                let local_name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_else(|| "file".into());
                let (dir, name) = split_dest(&input.dest, &local_name);
                let mut f = std::fs::File::open(&path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                p.file(&name, &mut f, meta.len(), local_mode(&meta))?;
                dir
            }
        }
        _ => return Err("give exactly one of `src` or `content`".into()),
    };
    p.builder
        .finish()
        .map_err(|e| format!("cannot write the archive: {e}"))?;
    Ok(Archive {
        file,
        dir,
        entries: p.entries,
        files: p.files,
        bytes: p.bytes,
    })
}

fn local_mode(m: &std::fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    m.permissions().mode() & 0o7777
}

impl PerHost for CopyToHost {
    fn run<'a>(
        &'a self,
        target: &'a Target,
        session: Arc<Session>,
        log: &'a HostLog,
        mut result: HostResult,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = HostResult> + Send + 'a>> {
        Box::pin(async move {
            let input: CopyInput = match input_for(&self.raw, &self.cx, target) {
                Ok(i) => i,
                Err(e) => return result.failed(e),
            };
            let archive = match self.archive(&input) {
                Ok(a) => a,
                Err(e) => return result.failed(e),
            };
            let common = input.common();
            let dir = quote_posix(&archive.dir);
            let mut script = format!("mkdir -p -- {dir} && tar -x -o -f - -C {dir}");
            if let Some(mode) = &input.mode {
                // tar applies the umask when not run as root: set the mode explicitly.
                let files: Vec<String> = archive.entries.iter().map(|e| quote_posix(e)).collect();
                script.push_str(&format!(
                    " && cd -- {dir} && chmod {} -- {}",
                    quote_posix(mode),
                    files.join(" ")
                ));
            }
            result.extra.insert("files".into(), json!(archive.files));
            result.extra.insert("bytes".into(), json!(archive.bytes));
            result.extra.insert("dest".into(), json!(input.dest));
            if self.cx.dry_run {
                log.note(&format!(
                    "would copy {} file{} ({} bytes) to {}",
                    archive.files,
                    if archive.files == 1 { "" } else { "s" },
                    archive.bytes,
                    input.dest
                ));
                return result;
            }
            let spec = Spec {
                script,
                env: Default::default(),
                cwd: None,
                become_user: common.become_user().map(str::to_string),
            };
            let done = remote::run(
                &session,
                &spec,
                Some(Stdin::File(archive.file.path().to_path_buf())),
                log,
                64 * 1024,
                common.timeout.map(|t| t.get()),
                &self.cx.cancel,
            )
            .await;
            crate::finish(result, done, None, spec.become_user.as_deref())
        })
    }
}

struct FetchFromHost {
    raw: Value,
    cx: StepContext,
}

impl PerHost for FetchFromHost {
    fn run<'a>(
        &'a self,
        target: &'a Target,
        session: Arc<Session>,
        log: &'a HostLog,
        mut result: HostResult,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = HostResult> + Send + 'a>> {
        Box::pin(async move {
            let input: FetchInput = match input_for(&self.raw, &self.cx, target) {
                Ok(i) => i,
                Err(e) => return result.failed(e),
            };
            let common = input.common();
            let src = input.src.trim_end_matches('/');
            let (dir, name) = match src.rsplit_once('/') {
                Some(("", name)) => ("/", name),
                Some((dir, name)) => (dir, name),
                None => (".", src),
            };
            if name.is_empty() || name == "." || name == ".." {
                return result.failed(format!("`src: {}` names no file or folder", input.src));
            }
            let base = std::path::absolute(&self.cx.cwd).unwrap_or_else(|_| self.cx.cwd.clone());
            let dest: PathBuf = base.join(&input.dest).join(safe_name(&target.name));
            result
                .extra
                .insert("dest".into(), json!(dest.display().to_string()));
            let script = format!(
                "cd -- {dir} 2>/dev/null || {{ echo \"no folder {dir} on the host\" >&2; exit 2; }}; tar -c -f - -- {name}",
                dir = quote_posix(dir),
                name = quote_posix(name)
            );
            let spec = Spec {
                script: if self.cx.dry_run {
                    format!("test -e {}", quote_posix(src))
                } else {
                    script
                },
                env: Default::default(),
                cwd: None,
                become_user: common.become_user().map(str::to_string),
            };
            if self.cx.dry_run {
                let done = remote::run(
                    &session,
                    &spec,
                    None,
                    log,
                    4096,
                    common.timeout.map(|t| t.get()),
                    &self.cx.cancel,
                )
                .await;
                log.note(&format!(
                    "would fetch {} into {}",
                    input.src,
                    dest.display()
                ));
                let mut r = crate::finish(result, done, None, spec.become_user.as_deref());
                if r.exit_code == Some(1) {
                    r.error = Some(format!("{} does not exist on the host", input.src));
                }
                return r;
            }
            let done = remote::run_to(
                &session,
                &spec,
                None,
                log,
                Output::Unpack(dest.clone()),
                common.timeout.map(|t| t.get()),
                &self.cx.cancel,
            )
            .await;
            let unpacked = done.unpacked.clone();
            let mut r = crate::finish(result, done, None, spec.become_user.as_deref());
            match unpacked {
                Some(Ok((files, bytes))) => {
                    r.extra.insert("files".into(), json!(files));
                    r.extra.insert("bytes".into(), json!(bytes));
                }
                Some(Err(e)) if r.status == crate::rollout::HostStatus::Succeeded => {
                    r = r.failed(e);
                }
                _ => {}
            }
            if r.status != crate::rollout::HostStatus::Succeeded {
                if r.exit_code.is_some() {
                    let said = r
                        .stderr
                        .lines()
                        .map(str::trim)
                        .find(|l| l.contains("tar:") || l.starts_with("no folder"));
                    if let Some(line) = said {
                        r.error = Some(format!("cannot fetch {}: {line}", input.src));
                    }
                }
                // Leave no empty folder behind for a host that sent nothing.
                let _ = std::fs::remove_dir(&dest);
            }
            r
        })
    }
}

/// A host name as one local path component.
fn safe_name(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| if c == '/' || c == '\0' { '_' } else { c })
        .collect();
    match s.as_str() {
        "" | "." | ".." => format!("_{s}"),
        _ => s,
    }
}
