//! Secrets: resolved once at the start of a run, and masked as `***` everywhere after.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use indexmap::IndexMap;

use crate::action::Registry;
use crate::model::SecretSource;
use crate::resources::RunResources;

/// A secret store that a plugin provides for a `secrets:` source the engine cannot read itself
/// (`aws_secretsmanager`, `aws_ssm`). Registered with [`Registry::register_secret_store`].
#[async_trait]
pub trait SecretStore: Send + Sync {
    /// The source key it answers, as written in runbooks (`aws_ssm`).
    fn kind(&self) -> &'static str;

    /// The value behind `reference` (the text after the key). Errors must name the reference
    /// and the store's reason, never a value. `resources` is the run's, so that clients and
    /// credentials are shared with the plugin's steps.
    async fn fetch(&self, reference: &str, resources: &RunResources) -> Result<String, String>;
}

/// Replaces every secret value with `***` in text and data.
#[derive(Debug, Clone, Default)]
pub struct Masker {
    /// Longest first, so that a secret containing another is masked whole.
    values: Arc<Vec<String>>,
    /// The secrets as given, to add more later.
    raw: Arc<Vec<String>>,
}

/// Shorter values are not masked: masking `a` or `1` would shred every line.
const MIN_MASKED_LEN: usize = 3;

/// `s` with every byte outside `A-Za-z0-9-._~` percent-encoded (RFC 3986 unreserved kept), as
/// URL query builders write it.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Masker {
    /// A masker for these secret values.
    pub fn new<I: IntoIterator<Item = String>>(values: I) -> Self {
        let raw: Vec<String> = values
            .into_iter()
            .filter(|s| s.len() >= MIN_MASKED_LEN)
            .collect();
        let mut v = raw.clone();
        // Multi-line secrets are also masked line by line, since logs arrive a line at a time.
        let lines: Vec<String> = v
            .iter()
            .filter(|s| s.contains('\n'))
            .flat_map(|s| s.lines().map(str::to_string).collect::<Vec<_>>())
            .filter(|l| l.trim().len() >= MIN_MASKED_LEN)
            .collect();
        v.extend(lines);
        // A secret put into a URL or a form travels percent-encoded (`a+b/c` → `a%2Bb%2Fc`,
        // a space as `%20` or `+`); those forms are masked too.
        let encoded: Vec<String> = v
            .iter()
            .flat_map(|s| {
                let pct = percent_encode(s);
                let plus = pct.replace("%20", "+");
                // application/x-www-form-urlencoded (URL query builders): `~` encoded, `*` kept.
                let form = plus.replace('~', "%7E").replace("%2A", "*");
                [pct, plus, form]
            })
            .filter(|e| !v.contains(e))
            .collect();
        v.extend(encoded);
        v.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        v.dedup();
        Masker {
            values: Arc::new(v),
            raw: Arc::new(raw),
        }
    }

    /// This masker and one more secret (a value an action read from a secret store).
    pub fn with(&self, value: &str) -> Masker {
        if value.len() < MIN_MASKED_LEN || self.raw.iter().any(|r| r == value) {
            return self.clone();
        }
        Masker::new(
            self.raw
                .iter()
                .cloned()
                .chain(std::iter::once(value.to_string())),
        )
    }

    /// The text with every secret replaced by `***`.
    pub fn mask(&self, text: &str) -> String {
        let mut out = text.to_string();
        for v in self.values.iter() {
            if out.contains(v.as_str()) {
                out = out.replace(v.as_str(), "***");
            }
        }
        out
    }

    /// The data with every string (keys included) masked.
    pub fn mask_value(&self, v: &serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        if self.values.is_empty() {
            return v.clone();
        }
        match v {
            Value::String(s) => Value::String(self.mask(s)),
            Value::Array(a) => Value::Array(a.iter().map(|x| self.mask_value(x)).collect()),
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, x)| (self.mask(k), self.mask_value(x)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
}

/// Resolves every secret: environment variables of this process, files (relative to `base`),
/// commands run through `sh -c`, and the stores plugins registered (`aws_ssm` …). One trailing
/// newline is dropped from files and commands. Errors name the secret and the source, never a
/// value.
pub async fn resolve(
    secrets: &IndexMap<String, SecretSource>,
    base: &Path,
    registry: &Registry,
    resources: &RunResources,
) -> Result<IndexMap<String, String>, String> {
    let mut out = IndexMap::new();
    for (name, source) in secrets {
        let value = match source {
            SecretSource::AwsSecretsmanager(reference) | SecretSource::AwsSsm(reference) => {
                let kind = source.kind();
                let store = registry.secret_store(kind).ok_or_else(|| {
                    format!("secret `{name}`: this build has no plugin for `{kind}` secrets")
                })?;
                store
                    .fetch(reference, resources)
                    .await
                    .map_err(|e| format!("secret `{name}` ({kind} {reference}): {e}"))?
            }
            SecretSource::Env(var) => std::env::var(var).map_err(|_| {
                format!("secret `{name}`: the environment variable `{var}` is not set")
            })?,
            SecretSource::File(path) => {
                let p = base.join(path);
                let text = std::fs::read_to_string(&p)
                    .map_err(|e| format!("secret `{name}`: cannot read {}: {e}", p.display()))?;
                strip_newline(text)
            }
            SecretSource::Command(cmd) => {
                let output = std::process::Command::new("sh")
                    .arg("-c")
                    .arg(cmd)
                    .current_dir(base)
                    .stdin(std::process::Stdio::null())
                    .output()
                    .map_err(|e| format!("secret `{name}`: cannot run its command: {e}"))?;
                if !output.status.success() {
                    return Err(format!(
                        "secret `{name}`: its command failed ({})",
                        output.status
                    ));
                }
                strip_newline(String::from_utf8_lossy(&output.stdout).into_owned())
            }
        };
        out.insert(name.clone(), value);
    }
    Ok(out)
}

fn strip_newline(mut s: String) -> String {
    if s.ends_with('\n') {
        s.pop();
        if s.ends_with('\r') {
            s.pop();
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encoded_secrets_are_masked_too() {
        let m = Masker::new(["tok en/+1".to_string()]);
        assert_eq!(m.mask("url?t=tok%20en%2F%2B1&x=1"), "url?t=***&x=1");
        assert_eq!(m.mask("form t=tok+en%2F%2B1"), "form t=***");
        assert_eq!(m.mask("raw tok en/+1"), "raw ***");
        let m = Masker::new(["a~b*c-d".to_string()]);
        assert_eq!(m.mask("q=a%7Eb*c-d"), "q=***");
        assert_eq!(m.mask("q=a~b%2Ac-d"), "q=***");
    }
    use serde_json::json;

    #[test]
    fn masks_inside_longer_text_and_data() {
        let m = Masker::new([
            "hunter22".to_string(),
            "ab".to_string(),
            "line one\nline two".to_string(),
        ]);
        assert_eq!(m.mask("token=hunter22;x"), "token=***;x");
        assert_eq!(
            m.mask("ab stays (too short to mask)"),
            "ab stays (too short to mask)"
        );
        assert_eq!(m.mask("got line two here"), "got *** here");
        assert_eq!(
            m.mask_value(&json!({"k": ["hunter22", 1], "hunter22": true})),
            json!({"k": ["***", 1], "***": true})
        );
    }

    #[test]
    fn resolves_env_file_and_command() {
        let dir = std::env::temp_dir().join(format!("opsbook-secrets-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("s.txt"), "from-file\n").unwrap();
        let mut secrets = IndexMap::new();
        secrets.insert("f".to_string(), SecretSource::File("s.txt".into()));
        secrets.insert(
            "c".to_string(),
            SecretSource::Command("printf 'from-command\\n'".into()),
        );
        secrets.insert("e".to_string(), SecretSource::Env("PATH".into()));
        let got = resolve_now(&secrets, &dir, &Registry::new()).unwrap();
        assert_eq!(got["f"], "from-file");
        assert_eq!(got["c"], "from-command");
        assert!(!got["e"].is_empty());
        let mut missing = IndexMap::new();
        missing.insert(
            "m".to_string(),
            SecretSource::Env("OPSBOOK_SURELY_UNSET_VAR".into()),
        );
        assert!(resolve_now(&missing, &dir, &Registry::new())
            .unwrap_err()
            .contains("`OPSBOOK_SURELY_UNSET_VAR` is not set"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn resolve_now(
        secrets: &IndexMap<String, SecretSource>,
        dir: &Path,
        registry: &Registry,
    ) -> Result<IndexMap<String, String>, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(resolve(secrets, dir, registry, &RunResources::default()))
    }

    /// A store that knows one reference.
    struct OneSecret;

    #[async_trait]
    impl SecretStore for OneSecret {
        fn kind(&self) -> &'static str {
            "aws_ssm"
        }
        async fn fetch(&self, reference: &str, _: &RunResources) -> Result<String, String> {
            match reference {
                "/known" => Ok("from-store".into()),
                _ => Err("ParameterNotFound".into()),
            }
        }
    }

    #[test]
    fn plugin_stores_resolve_their_sources() {
        let dir = std::env::temp_dir();
        let mut secrets = IndexMap::new();
        secrets.insert("s".to_string(), SecretSource::AwsSsm("/known".into()));
        // No plugin for the source: a clear error.
        let e = resolve_now(&secrets, &dir, &Registry::new()).unwrap_err();
        assert_eq!(
            e,
            "secret `s`: this build has no plugin for `aws_ssm` secrets"
        );
        let mut registry = Registry::new();
        registry.register_secret_store(OneSecret);
        assert_eq!(
            resolve_now(&secrets, &dir, &registry).unwrap()["s"],
            "from-store"
        );
        secrets.insert("m".to_string(), SecretSource::AwsSsm("/missing".into()));
        assert_eq!(
            resolve_now(&secrets, &dir, &registry).unwrap_err(),
            "secret `m` (aws_ssm /missing): ParameterNotFound"
        );
        // A store's kind must not reach another source.
        secrets.clear();
        secrets.insert(
            "x".to_string(),
            SecretSource::AwsSecretsmanager("/known".into()),
        );
        assert!(resolve_now(&secrets, &dir, &registry)
            .unwrap_err()
            .contains("no plugin for `aws_secretsmanager`"));
    }
}
