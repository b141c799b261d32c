//! SDK configuration: the standard credential and region chain (environment, profiles, SSO,
//! IMDS, web identity; `AWS_ENDPOINT_URL` honoured), per-step `region`, `profile` and
//! `assume_role`, built once per (region, profile, role) per run.

use std::collections::HashMap;
use std::sync::Arc;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_smithy_http_client::tls;
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use opsbook_engine::action::{ActionError, StepContext};
use opsbook_engine::resources::{RunResources, RunState};
use schemars::JsonSchema;
use serde::Deserialize;

/// A role to assume for a step.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AssumeRole {
    /// The role's ARN.
    pub role_arn: String,
    /// The session name (default `opsbook`).
    #[serde(default)]
    pub session_name: Option<String>,
    /// The external id the role's trust policy asks for.
    #[serde(default)]
    pub external_id: Option<String>,
}

/// Which credentials and region a step uses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ConfigKey {
    pub region: Option<String>,
    pub profile: Option<String>,
    pub assume_role: Option<AssumeRole>,
}

/// The run's SDK configs, and the one HTTPS client (connection pool) they share.
#[derive(Default)]
pub struct Configs {
    configs: tokio::sync::Mutex<HashMap<ConfigKey, SdkConfig>>,
    http: std::sync::OnceLock<SharedHttpClient>,
}

impl Configs {
    /// The SDK's hyper client on rustls with ring (not the default aws-lc, see Cargo.toml),
    /// trusting the platform's roots like the default client.
    fn http_client(&self) -> SharedHttpClient {
        self.http
            .get_or_init(|| {
                aws_smithy_http_client::Builder::new()
                    .tls_provider(tls::Provider::Rustls(
                        tls::rustls_provider::CryptoMode::Ring,
                    ))
                    .build_https()
            })
            .clone()
    }
}

impl RunState for Configs {}

/// The SDK config for `key`, built on first use in the run.
pub async fn sdk_config(cx: &StepContext, key: &ConfigKey) -> Result<SdkConfig, ActionError> {
    config_for(&cx.resources, key)
        .await
        .map_err(ActionError::permanent)
}

/// The SDK config for `key` in a run's resources (steps and secret stores share them).
pub async fn config_for(resources: &RunResources, key: &ConfigKey) -> Result<SdkConfig, String> {
    let configs: Arc<Configs> = resources.state(Configs::default);
    let mut map = configs.configs.lock().await;
    if let Some(c) = map.get(key) {
        return Ok(c.clone());
    }
    let mut loader =
        aws_config::defaults(BehaviorVersion::latest()).http_client(configs.http_client());
    if let Some(r) = &key.region {
        loader = loader.region(Region::new(r.clone()));
    }
    if let Some(p) = &key.profile {
        loader = loader.profile_name(p);
    }
    let mut config = loader.load().await;
    if config.region().is_none() {
        return Err(
            "no AWS region: set `region` on the step, AWS_REGION, or a region in the profile"
                .into(),
        );
    }
    if let Some(role) = &key.assume_role {
        let mut b = aws_config::sts::AssumeRoleProvider::builder(role.role_arn.clone())
            .session_name(
                role.session_name
                    .clone()
                    .unwrap_or_else(|| "opsbook".into()),
            );
        if let Some(id) = &role.external_id {
            b = b.external_id(id.clone());
        }
        let provider = b.configure(&config).build().await;
        config = config
            .into_builder()
            .credentials_provider(
                aws_credential_types::provider::SharedCredentialsProvider::new(provider),
            )
            .build();
    }
    map.insert(key.clone(), config.clone());
    Ok(config)
}
