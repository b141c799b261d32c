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

use crate::input::Common;
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
        /// Bytes of files a host may send (default 1 GiB); more fails that host.
        #[serde(default)]
        #[schemars(range(min = 1))]
        pub max_bytes: Option<u64>,
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
        let per_host = CopyToHost {
            cx: cx.clone(),
            archives: Mutex::new(HashMap::new()),
        };
        crate::fleet(&input, cx, &per_host).await
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
        let per_host = FetchFromHost { cx: cx.clone() };
        crate::fleet(&input, cx, &per_host).await
    }
}

/// An archive built once per distinct (src, content, dest, mode) and streamed to every host.
struct Archive {
    file: tempfile::NamedTempFile,
    /// The remote folder it unpacks in.
    dir: String,
    files: usize,
    bytes: u64,
}

/// What makes two hosts' archives the same: (src, content, dest, mode).
type ArchiveKey = (Option<String>, Option<String>, String, Option<String>);

type ArchiveCell = Arc<tokio::sync::OnceCell<Result<Arc<Archive>, String>>>;

struct CopyToHost {
    cx: StepContext,
    archives: Mutex<HashMap<ArchiveKey, ArchiveCell>>,
}

impl CopyToHost {
    /// The archive for these inputs, built once (off the async threads: a big folder takes a
    /// while) however many hosts ask at the same time.
    async fn archive(&self, input: &CopyInput) -> Result<Arc<Archive>, String> {
        let key = (
            input.src.clone(),
            input.content.clone(),
            input.dest.clone(),
            input.mode.clone(),
        );
        let cell = match self.archives.lock() {
            Ok(mut m) => m.entry(key).or_default().clone(),
            Err(_) => return Err("the archive cache is unusable after a crash".into()),
        };
        cell.get_or_init(|| async {
            let input = input.clone();
            let base = self.cx.cwd.clone();
            match tokio::task::spawn_blocking(move || build_archive(&input, &base)).await {
                Ok(r) => r.map(Arc::new),
                Err(e) => Err(format!("building the archive stopped: {e}")),
            }
        })
        .await
        .clone()
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
                    // Folders get no entry of their own (tar creates them for their files), so
                    // an existing folder on the host keeps its mode and owner; only empty
                    // folders need one.
                    let empty = std::fs::read_dir(&p)
                        .map(|mut d| d.next().is_none())
                        .unwrap_or(false);
                    if empty {
                        let mut header = tar::Header::new_gnu();
                        header.set_entry_type(tar::EntryType::Directory);
                        header.set_mode(0o755);
                        header.set_size(0);
                        self.builder
                            .append_data(&mut header, &rel, std::io::empty())
                            .map_err(|e| format!("cannot archive {}: {e}", p.display()))?;
                    }
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
        files: p.files,
        bytes: p.bytes,
    })
}

fn local_mode(m: &std::fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    m.permissions().mode() & 0o7777
}

impl PerHost for CopyToHost {
    fn common(&self, input: &Value) -> Result<Common, String> {
        crate::parse::<CopyInput>(input)
            .map(|i| i.common())
            .map_err(|e| e.message)
    }

    fn run<'a>(
        &'a self,
        _target: &'a Target,
        input: Value,
        session: Arc<Session>,
        log: &'a HostLog,
        mut result: HostResult,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = HostResult> + Send + 'a>> {
        Box::pin(async move {
            let input: CopyInput = match crate::parse(&input) {
                Ok(i) => i,
                Err(e) => return result.failed(e.message),
            };
            let archive = match self.archive(&input).await {
                Ok(a) => a,
                Err(e) => return result.failed(e),
            };
            let common = input.common();
            let dir = quote_posix(&archive.dir);
            // -p: the modes in the archive exactly (no umask); -o: files owned by whoever
            // writes them (the login user, or become_user).
            let script = format!("mkdir -p -- {dir} && tar -x -o -p -f - -C {dir}");
            result.extra.insert("files".into(), json!(archive.files));
            result.extra.insert("bytes".into(), json!(archive.bytes));
            result.extra.insert("dest".into(), json!(input.dest));
            let become_user = common.become_user().map(str::to_string);
            if self.cx.dry_run {
                log.note(&format!(
                    "would copy {} file{} ({} bytes) to {}",
                    archive.files,
                    if archive.files == 1 { "" } else { "s" },
                    archive.bytes,
                    input.dest
                ));
                if let Some(user) = &become_user {
                    if let Err(why) = crate::probe_sudo(&session, user, log, &self.cx).await {
                        return result.failed(why);
                    }
                    result.extra.insert("sudo".into(), json!("ok"));
                }
                return result;
            }
            let spec = Spec {
                script,
                become_user,
                ..Default::default()
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
    cx: StepContext,
}

/// Bytes a host may send to `ssh.fetch` when `max_bytes` is not given.
const DEFAULT_MAX_FETCH: u64 = 1 << 30;

impl PerHost for FetchFromHost {
    fn common(&self, input: &Value) -> Result<Common, String> {
        crate::parse::<FetchInput>(input)
            .map(|i| i.common())
            .map_err(|e| e.message)
    }

    fn run<'a>(
        &'a self,
        target: &'a Target,
        input: Value,
        session: Arc<Session>,
        log: &'a HostLog,
        mut result: HostResult,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = HostResult> + Send + 'a>> {
        Box::pin(async move {
            let input: FetchInput = match crate::parse(&input) {
                Ok(i) => i,
                Err(e) => return result.failed(e.message),
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
                "cd -- {dir} 2>/dev/null || {{ printf 'no folder %s on the host\\n' {dir} >&2; exit 2; }}; tar -c -f - -- {name}",
                dir = quote_posix(dir),
                name = quote_posix(name)
            );
            let become_user = common.become_user().map(str::to_string);
            if self.cx.dry_run {
                if let Some(user) = &become_user {
                    if let Err(why) = crate::probe_sudo(&session, user, log, &self.cx).await {
                        return result.failed(why);
                    }
                }
            }
            let spec = Spec {
                script: if self.cx.dry_run {
                    format!("test -e {}", quote_posix(src))
                } else {
                    script
                },
                become_user,
                ..Default::default()
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
                Output::Unpack(dest.clone(), input.max_bytes.unwrap_or(DEFAULT_MAX_FETCH)),
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
