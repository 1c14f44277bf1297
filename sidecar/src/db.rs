//! Database connections. TLS is what libpq calls verify-full: tokio-postgres has no such
//! sslmode, so `sslmode=require` is combined with a native-tls connector that trusts only the
//! configured CA root(s) and checks the server's name against the secret's host.

use std::time::Duration;

use native_tls::{Certificate, Protocol, TlsConnector};
use postgres_native_tls::MakeTlsConnector;
use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, NoTls};
use tracing::{error, warn};

use crate::config::{DatabaseConfig, TlsMode};
use crate::secret::DbSecret;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot read CA file {path}: {source}")]
    CaFile {
        path: String,
        source: std::io::Error,
    },
    #[error("CA file {0} holds no PEM certificate")]
    NoCertificate(String),
    #[error("TLS setup: {0}")]
    Tls(#[from] native_tls::Error),
    #[error("connecting to {host}:{port} as {user}: {}", describe(.source))]
    Connect {
        host: String,
        port: u16,
        user: String,
        source: tokio_postgres::Error,
    },
    #[error("{}", describe(.0))]
    Query(#[from] tokio_postgres::Error),
}

/// Formats a PostgreSQL error with its SQLSTATE, or the chain of causes otherwise.
pub fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} {}: {}", db.severity(), db.code().code(), db.message());
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

/// Server-side limits of a session, in milliseconds on the wire.
#[derive(Debug, Clone, Copy)]
pub struct SessionTimeouts {
    pub statement: Duration,
    pub lock: Duration,
}

#[derive(Clone)]
pub struct Connector {
    tls: Option<MakeTlsConnector>,
    connect_timeout: Duration,
    application_name: String,
}

/// Splits a PEM bundle (such as the RDS global bundle) into certificates.
fn pem_certificates(pem: &str) -> Vec<String> {
    const END: &str = "-----END CERTIFICATE-----";
    pem.split_inclusive(END)
        .filter_map(|chunk| {
            chunk
                .find("-----BEGIN CERTIFICATE-----")
                .map(|start| chunk[start..].to_string())
        })
        .filter(|c| c.ends_with(END))
        .collect()
}

impl Connector {
    pub fn new(cfg: &DatabaseConfig) -> Result<Connector, DbError> {
        let tls = match cfg.tls {
            TlsMode::Disable => {
                warn!(
                    setting = "database.tls",
                    "TLS IS DISABLED: database connections, passwords exchanges included, travel in plain text; set database.tls = \"verify-full\" with database.ca_file outside of tests"
                );
                None
            }
            TlsMode::VerifyFull => {
                let path = cfg.ca_file.clone().unwrap_or_default();
                let shown = path.display().to_string();
                let pem = std::fs::read_to_string(&path).map_err(|source| DbError::CaFile {
                    path: shown.clone(),
                    source,
                })?;
                let mut builder = TlsConnector::builder();
                // Only the configured roots: a certificate from any public CA must not pass.
                builder
                    .disable_built_in_roots(true)
                    .danger_accept_invalid_certs(false)
                    .danger_accept_invalid_hostnames(false)
                    .min_protocol_version(Some(Protocol::Tlsv12));
                let certs = pem_certificates(&pem);
                if certs.is_empty() {
                    return Err(DbError::NoCertificate(shown));
                }
                for c in certs {
                    builder.add_root_certificate(Certificate::from_pem(c.as_bytes())?);
                }
                Some(MakeTlsConnector::new(builder.build()?))
            }
        };
        Ok(Connector {
            tls,
            connect_timeout: cfg.connect_timeout.0,
            application_name: cfg.application_name.clone(),
        })
    }

    /// Every session's settings. Its search_path is pg_catalog only: the scheduler's queries
    /// name pg_enkf's objects with their schema, and an operator `#>>(jsonb, text)` planted in
    /// a schema of the role's default path would otherwise beat pg_catalog's for an unknown
    /// literal (operators are resolved on the path, not qualified by the name of a table).
    pub fn config(&self, s: &DbSecret) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        c.options("-c search_path=pg_catalog,pg_temp");
        c.host(&s.host)
            .port(s.port)
            .user(&s.username)
            .password(&s.password)
            .dbname(&s.dbname)
            .application_name(&self.application_name)
            .connect_timeout(self.connect_timeout)
            .ssl_mode(if self.tls.is_some() {
                SslMode::Require
            } else {
                SslMode::Disable
            });
        c
    }

    /// Opens a session with these credentials; the connection task runs in the background
    /// until the client is dropped.
    pub async fn connect(&self, s: &DbSecret) -> Result<Client, DbError> {
        self.connect_config(s, self.config(s)).await
    }

    /// A session of the master user. Its statements time out, so that a blocked ALTER ROLE
    /// (a lock held by someone else) fails on its own rather than holding catalog locks after
    /// the sidecar is gone; and its search_path is pg_catalog only, so that every name the
    /// rotation prints from a catalog (`oid::regclass`) comes out schema-qualified and no
    /// object of another schema can capture an unqualified name.
    pub async fn connect_master(
        &self,
        s: &DbSecret,
        timeouts: &SessionTimeouts,
    ) -> Result<Client, DbError> {
        let mut cfg = self.config(s);
        cfg.options(format!(
            "-c statement_timeout={} -c lock_timeout={} -c search_path=pg_catalog,pg_temp",
            timeouts.statement.as_millis(),
            timeouts.lock.as_millis()
        ));
        self.connect_config(s, cfg).await
    }

    async fn connect_config(
        &self,
        s: &DbSecret,
        cfg: tokio_postgres::Config,
    ) -> Result<Client, DbError> {
        let err = |source| DbError::Connect {
            host: s.host.clone(),
            port: s.port,
            user: s.username.clone(),
            source,
        };
        match &self.tls {
            Some(tls) => {
                let (client, conn) = cfg.connect(tls.clone()).await.map_err(err)?;
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        error!(error = %describe(&e), "database connection ended with an error");
                    }
                });
                Ok(client)
            }
            None => {
                warn!("opening a database connection WITHOUT TLS (database.tls = \"disable\")");
                let (client, conn) = cfg.connect(NoTls).await.map_err(err)?;
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        error!(error = %describe(&e), "database connection ended with an error");
                    }
                });
                Ok(client)
            }
        }
    }

    /// Sends a cancel request for the query running on `client`'s session.
    pub async fn cancel(&self, token: &tokio_postgres::CancelToken) {
        let r = match &self.tls {
            Some(tls) => token.cancel_query(tls.clone()).await,
            None => token.cancel_query(NoTls).await,
        };
        if let Err(e) = r {
            warn!(error = %describe(&e), "cancel request failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_pem_bundles() {
        let one = "-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----";
        let bundle = format!("# comment\n{one}\nsubject=x\n{one}\n\n");
        assert_eq!(
            pem_certificates(&bundle),
            vec![one.to_string(), one.to_string()]
        );
        assert!(pem_certificates("no certificates").is_empty());
    }
}
