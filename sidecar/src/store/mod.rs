//! Where the database credentials come from: AWS Secrets Manager (with rotation) or a local
//! JSON file in the same RDS format (read on every use, so an edited file takes effect for
//! the next connection).

pub mod aws;

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use tracing::warn;

use crate::config::{SecretSource, SecretsConfig};
use crate::secret::DbSecret;

pub const AWSCURRENT: &str = "AWSCURRENT";
pub const AWSPENDING: &str = "AWSPENDING";

/// How long a scheduler pass waits for GetSecretValue before it uses the cached AWSCURRENT
/// (the SDK's own retries take up to a minute).
const CURRENT_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("Secrets Manager {operation} on {secret}: {message}")]
    Aws {
        operation: &'static str,
        secret: String,
        message: String,
    },
    #[error("secret {0} has no SecretString")]
    NoString(String),
    #[error(transparent)]
    Parse(#[from] crate::secret::SecretParseError),
    #[error("cannot read credentials file {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

/// One version of a secret.
#[derive(Debug, Clone)]
pub struct Versioned {
    pub secret: DbSecret,
    pub version_id: Option<String>,
    pub created: Option<DateTime<Utc>>,
}

pub enum Store {
    Aws(aws::AwsStore),
    File(PathBuf),
}

impl Store {
    pub async fn open(cfg: &SecretsConfig) -> Result<Store, StoreError> {
        match cfg.source {
            SecretSource::Aws => Ok(Store::Aws(aws::AwsStore::new(cfg).await)),
            SecretSource::File => cfg
                .file
                .clone()
                .map(Store::File)
                .ok_or_else(|| StoreError::Other("secrets.file is not set".into())),
        }
    }

    /// The credentials that new connections use: AWSCURRENT, or the file's content.
    pub async fn current(&self) -> Result<Versioned, StoreError> {
        match self {
            Store::Aws(a) => a.get(a.secret_id(), None, AWSCURRENT).await,
            Store::File(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| StoreError::File {
                    path: path.clone(),
                    source,
                })?;
                let secret =
                    DbSecret::parse(&text, &format!("credentials file {}", path.display()))?;
                Ok(Versioned {
                    secret,
                    version_id: None,
                    created: None,
                })
            }
        }
    }

    /// For the scheduler: AWSCURRENT, or, when Secrets Manager does not answer (in time), the
    /// last AWSCURRENT read. With alternating users that credential keeps logging in until
    /// the rotation after next, so scheduled runs go on while the database is up.
    pub async fn current_or_cached(&self) -> Result<Versioned, StoreError> {
        let Store::Aws(a) = self else {
            return self.current().await;
        };
        let fresh = tokio::time::timeout(CURRENT_READ_TIMEOUT, self.current()).await;
        let error = match fresh {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => e,
            Err(_) => StoreError::Aws {
                operation: "GetSecretValue",
                secret: a.secret_id().to_string(),
                message: format!("no answer within {} s", CURRENT_READ_TIMEOUT.as_secs()),
            },
        };
        match a.cached_current() {
            Some(v) => {
                warn!(error = %error, version = v.version_id.as_deref().unwrap_or("-"),
                      "cannot read AWSCURRENT from Secrets Manager: using the last AWSCURRENT read");
                Ok(v)
            }
            None => Err(error),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Store::Aws(a) => format!("Secrets Manager secret {}", a.secret_id()),
            Store::File(p) => format!("credentials file {}", p.display()),
        }
    }
}
