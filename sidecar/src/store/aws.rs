//! The Secrets Manager calls of the rotation protocol. Every GetSecretValue names its staging
//! label explicitly: AWS requires the label to match the version, and test servers that are
//! laxer must not let a wrong pairing pass unnoticed.

use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_secretsmanager::error::DisplayErrorContext;
use aws_sdk_secretsmanager::Client;
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
use chrono::{DateTime, Utc};

use super::{StoreError, Versioned};
use crate::config::SecretsConfig;
use crate::secret::DbSecret;

/// Characters that break connection strings and URIs (`user:password@host/db`) or quoting.
pub const EXCLUDED_CHARACTERS: &str = ":/@\"'\\";

pub struct AwsStore {
    client: Client,
    secret_id: String,
    /// The last AWSCURRENT of `secret_id` read successfully: the scheduler logs in with it
    /// while Secrets Manager is unreachable (the database may well be up).
    /// Boxed: a Versioned is large next to the other variant of Store.
    last_current: std::sync::Mutex<Option<Box<Versioned>>>,
}

/// One version of the secret and its staging labels.
#[derive(Debug, Clone)]
pub struct VersionInfo {
    pub version_id: String,
    pub stages: Vec<String>,
}

impl VersionInfo {
    pub fn has(&self, stage: &str) -> bool {
        self.stages.iter().any(|s| s == stage)
    }
}

fn aws_err<E: std::error::Error>(operation: &'static str, secret: &str, e: E) -> StoreError {
    StoreError::Aws {
        operation,
        secret: secret.to_string(),
        message: DisplayErrorContext(e).to_string(),
    }
}

fn to_chrono(t: &aws_sdk_secretsmanager::primitives::DateTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.secs(), t.subsec_nanos())
}

impl AwsStore {
    pub async fn new(cfg: &SecretsConfig) -> AwsStore {
        // rustls with ring: the SDK's default (aws-lc) needs a C toolchain with cmake.
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http)
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_timeout(Duration::from_secs(60))
                    .operation_attempt_timeout(Duration::from_secs(20))
                    .build(),
            );
        if let Some(region) = &cfg.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(url) = &cfg.endpoint_url {
            loader = loader.endpoint_url(url.clone());
        }
        let shared = loader.load().await;
        AwsStore {
            client: Client::new(&shared),
            secret_id: cfg.secret_id.clone(),
            last_current: std::sync::Mutex::new(None),
        }
    }

    pub fn secret_id(&self) -> &str {
        &self.secret_id
    }

    /// The last AWSCURRENT of the application secret that any read returned.
    pub fn cached_current(&self) -> Option<Versioned> {
        // A panic while holding the lock leaves a plain value: still usable.
        self.last_current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_deref()
            .cloned()
    }

    /// GetSecretValue of `secret_id` with `stage` (and `version_id` when given).
    pub async fn get(
        &self,
        secret_id: &str,
        version_id: Option<&str>,
        stage: &str,
    ) -> Result<Versioned, StoreError> {
        self.get_opt(secret_id, version_id, stage)
            .await?
            .ok_or_else(|| StoreError::Aws {
                operation: "GetSecretValue",
                secret: secret_id.to_string(),
                message: format!("no version labelled {stage}"),
            })
    }

    /// Like [`get`](Self::get), but `None` when no such version carries `stage`.
    pub async fn get_opt(
        &self,
        secret_id: &str,
        version_id: Option<&str>,
        stage: &str,
    ) -> Result<Option<Versioned>, StoreError> {
        let out = match self
            .client
            .get_secret_value()
            .secret_id(secret_id)
            .set_version_id(version_id.map(str::to_string))
            .version_stage(stage)
            .send()
            .await
        {
            Ok(o) => o,
            Err(e) => {
                let missing = e
                    .as_service_error()
                    .map(|s| s.is_resource_not_found_exception())
                    .unwrap_or(false);
                if missing && version_id.is_some() {
                    return Ok(None);
                }
                return Err(aws_err("GetSecretValue", secret_id, e));
            }
        };
        // A lax server may return the version without the label: treat that as absent.
        if !out.version_stages().is_empty() && !out.version_stages().iter().any(|s| s == stage) {
            return Ok(None);
        }
        let text = out
            .secret_string()
            .ok_or_else(|| StoreError::NoString(secret_id.to_string()))?;
        let label = match version_id {
            Some(v) => format!("secret {secret_id} version {v} ({stage})"),
            None => format!("secret {secret_id} ({stage})"),
        };
        let versioned = Versioned {
            secret: DbSecret::parse(text, &label)?,
            version_id: out.version_id().map(str::to_string),
            created: out.created_date().and_then(to_chrono),
        };
        if secret_id == self.secret_id && version_id.is_none() && stage == super::AWSCURRENT {
            *self.last_current.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(Box::new(versioned.clone()));
        }
        Ok(Some(versioned))
    }

    /// Every version that still carries a staging label.
    pub async fn versions(&self) -> Result<Vec<VersionInfo>, StoreError> {
        let mut all = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let out = self
                .client
                .list_secret_version_ids()
                .secret_id(&self.secret_id)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| aws_err("ListSecretVersionIds", &self.secret_id, e))?;
            for v in out.versions() {
                if let Some(id) = v.version_id() {
                    if !v.version_stages().is_empty() {
                        all.push(VersionInfo {
                            version_id: id.to_string(),
                            stages: v.version_stages().to_vec(),
                        });
                    }
                }
            }
            match out.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => break,
            }
        }
        Ok(all)
    }

    pub async fn random_password(&self, length: u32) -> Result<String, StoreError> {
        let out = self
            .client
            .get_random_password()
            .password_length(i64::from(length))
            .exclude_characters(EXCLUDED_CHARACTERS)
            .send()
            .await
            .map_err(|e| aws_err("GetRandomPassword", &self.secret_id, e))?;
        let pw = out
            .random_password()
            .ok_or_else(|| StoreError::Other("GetRandomPassword returned no password".into()))?
            .to_string();
        // Checked again here: a password with one of these would break connection strings.
        if pw.len() != length as usize || pw.chars().any(|c| EXCLUDED_CHARACTERS.contains(c)) {
            return Err(StoreError::Other(
                "GetRandomPassword returned a password of the wrong length or with an excluded character".into(),
            ));
        }
        Ok(pw)
    }

    /// PutSecretValue with the rotation's token as version id, labelled AWSPENDING.
    pub async fn put_pending(&self, token: &str, secret: &DbSecret) -> Result<(), StoreError> {
        self.client
            .put_secret_value()
            .secret_id(&self.secret_id)
            .client_request_token(token)
            .secret_string(secret.to_json())
            .version_stages(super::AWSPENDING)
            .send()
            .await
            .map_err(|e| aws_err("PutSecretValue", &self.secret_id, e))?;
        Ok(())
    }

    /// UpdateSecretVersionStage: moves `stage` to `to` and/or removes it from `from`.
    pub async fn move_stage(
        &self,
        stage: &str,
        to: Option<&str>,
        from: Option<&str>,
    ) -> Result<(), StoreError> {
        self.client
            .update_secret_version_stage()
            .secret_id(&self.secret_id)
            .version_stage(stage)
            .set_move_to_version_id(to.map(str::to_string))
            .set_remove_from_version_id(from.map(str::to_string))
            .send()
            .await
            .map_err(|e| aws_err("UpdateSecretVersionStage", &self.secret_id, e))?;
        Ok(())
    }
}
