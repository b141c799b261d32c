//! The `secrets:` sources `aws_secretsmanager: NAME` (or `NAME#KEY` for one key of a JSON
//! secret) and `aws_ssm: /path/name` (decrypted), read with the standard credential chain and
//! the run's shared SDK config.

use async_trait::async_trait;
use opsbook_engine::action::Registry;
use opsbook_engine::resources::RunResources;
use opsbook_engine::secrets::SecretStore;
use serde_json::Value;

use crate::config::{config_for, ConfigKey};

pub(crate) fn register(r: &mut Registry) {
    r.register_secret_store(SecretsManager);
    r.register_secret_store(ParameterStore);
}

/// Secrets Manager: the secret's `SecretString`, or one key of it when it is JSON.
pub struct SecretsManager;

#[async_trait]
impl SecretStore for SecretsManager {
    fn kind(&self) -> &'static str {
        "aws_secretsmanager"
    }

    async fn fetch(&self, reference: &str, resources: &RunResources) -> Result<String, String> {
        let (id, key) = match reference.split_once('#') {
            Some((id, key)) => (id, Some(key)),
            None => (reference, None),
        };
        let config = config_for(resources, &ConfigKey::default()).await?;
        let client = aws_sdk_secretsmanager::Client::new(&config);
        let out = client
            .get_secret_value()
            .secret_id(id)
            .send()
            .await
            .map_err(|e| crate::error::from_sdk("GetSecretValue", e).message)?;
        let text = out
            .secret_string()
            .ok_or("the secret is binary; only text secrets (SecretString) can be used")?;
        let Some(key) = key else {
            return Ok(text.to_string());
        };
        // The value of the secret never appears in these errors.
        let doc: serde_json::Map<String, Value> = serde_json::from_str(text)
            .map_err(|_| format!("`#{key}` needs a JSON object secret; this one is not"))?;
        match doc.get(key) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(Value::Null) | None => {
                let keys: Vec<&str> = doc.keys().map(String::as_str).collect();
                Err(format!(
                    "the secret has no key `{key}` (its keys: {})",
                    keys.join(", ")
                ))
            }
            Some(other) => Ok(other.to_string()),
        }
    }
}

/// Parameter Store: the parameter's value, decrypted when it is a `SecureString`.
pub struct ParameterStore;

#[async_trait]
impl SecretStore for ParameterStore {
    fn kind(&self) -> &'static str {
        "aws_ssm"
    }

    async fn fetch(&self, reference: &str, resources: &RunResources) -> Result<String, String> {
        let config = config_for(resources, &ConfigKey::default()).await?;
        let client = aws_sdk_ssm::Client::new(&config);
        let out = client
            .get_parameter()
            .name(reference)
            .with_decryption(true)
            .send()
            .await
            .map_err(|e| crate::error::from_sdk("GetParameter", e).message)?;
        out.parameter()
            .and_then(|p| p.value())
            .map(str::to_string)
            .ok_or_else(|| "the parameter has no value".to_string())
    }
}
