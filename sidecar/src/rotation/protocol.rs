//! The four steps of the AWS rotation protocol, alternating-users strategy (the "PostgreSQL
//! multi-user" template): the secret's user and its clone take turns, so the user in
//! AWSCURRENT keeps its password while the other one gets a new one. Each step is idempotent:
//! run again on the same token, it finds its work done and returns, which is what makes an
//! interrupted rotation resumable.

use tokio_postgres::Client;
use tracing::info;

use super::mirror::{self, Reader};
use super::pair::Pair;
use super::RotationError;
use crate::config::{PasswordSource, RotationConfig};
use crate::db::{describe, Connector};
use crate::scram;
use crate::secret::DbSecret;
use crate::store::aws::AwsStore;
use crate::store::{AWSCURRENT, AWSPENDING};

/// The steps, named as in the AWS rotation protocol (hence the common suffix).
#[allow(clippy::enum_variant_names)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    CreateSecret,
    SetSecret,
    TestSecret,
    FinishSecret,
}

impl Step {
    pub const ALL: [Step; 4] = [
        Step::CreateSecret,
        Step::SetSecret,
        Step::TestSecret,
        Step::FinishSecret,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Step::CreateSecret => "createSecret",
            Step::SetSecret => "setSecret",
            Step::TestSecret => "testSecret",
            Step::FinishSecret => "finishSecret",
        }
    }
}

/// PostgreSQL identifier quoting (`quote_ident`).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// PostgreSQL literal quoting (`quote_literal`), for utility statements, which take no
/// parameters. A backslash makes it an escape string, so that the literal means the same
/// whatever `standard_conforming_strings` says.
pub fn quote_literal(text: &str) -> String {
    let body = text.replace('\'', "''");
    if body.contains('\\') {
        format!("E'{}'", body.replace('\\', "\\\\"))
    } else {
        format!("'{body}'")
    }
}

/// A password from the OS RNG, from characters that need no quoting in connection strings
/// or URIs.
pub fn os_rng_password(length: u32) -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~!*";
    let mut rng = rand::rngs::OsRng;
    (0..length)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

pub struct Protocol<'a> {
    pub store: &'a AwsStore,
    pub connector: &'a Connector,
    pub cfg: &'a RotationConfig,
    pub pair: &'a Pair,
    /// A session of the master user in the application's database, opened by the caller
    /// (the rotation lock is held for the whole protocol).
    pub master: &'a Client,
    /// The master's user name, for messages.
    pub master_user: &'a str,
}

impl Protocol<'_> {
    pub async fn run(&self, step: Step, token: &str) -> Result<(), RotationError> {
        match step {
            Step::CreateSecret => self.create_secret(token).await,
            Step::SetSecret => self.set_secret(token).await,
            Step::TestSecret => self.test_secret(token).await,
            Step::FinishSecret => self.finish_secret(token).await,
        }
    }

    async fn pending(&self, token: &str) -> Result<DbSecret, RotationError> {
        Ok(self
            .store
            .get(self.store.secret_id(), Some(token), AWSPENDING)
            .await?
            .secret)
    }

    /// createSecret: a new version labelled AWSPENDING, the other user with a new password.
    async fn create_secret(&self, token: &str) -> Result<(), RotationError> {
        let id = self.store.secret_id();
        let current = self.store.get(id, None, AWSCURRENT).await?.secret;
        if self
            .store
            .get_opt(id, Some(token), AWSPENDING)
            .await?
            .is_some()
        {
            info!(
                version = token,
                "createSecret: pending version already exists"
            );
            return Ok(());
        }
        let password = match self.cfg.password_source {
            PasswordSource::SecretsManager => {
                self.store.random_password(self.cfg.password_length).await?
            }
            PasswordSource::OsRng => os_rng_password(self.cfg.password_length),
        };
        let mut pending = current.clone();
        pending.username = self.pair.pending_for(id, &current.username)?.to_string();
        pending.password = password;
        self.store.put_pending(token, &pending).await?;
        info!(version = token, user = %pending.username, "createSecret: pending version stored");
        Ok(())
    }

    /// setSecret: the pending user gets the pending password (created if needed), sent as a
    /// SCRAM verifier, and the clone is made a copy of `rotation.user`; one transaction, after
    /// the refusals of [`mirror::refuse_unsafe`].
    async fn set_secret(&self, token: &str) -> Result<(), RotationError> {
        let id = self.store.secret_id();
        let current = self.store.get(id, None, AWSCURRENT).await?.secret;
        let pending = self.pending(token).await?;
        // Never touch a role outside the configured pair: a tampered version must not let
        // the master reset an arbitrary password.
        self.pair
            .check_pending(id, &current.username, &pending.username)?;
        if pending.host != current.host || pending.port != current.port {
            return Err(RotationError::Inconsistent(
                "pending and current versions name different database servers".into(),
            ));
        }
        let logs_in = self.connector.connect(&pending).await.is_ok();
        self.master.batch_execute("BEGIN").await?;
        match self.set_and_mirror(&pending, logs_in).await {
            Ok(changes) => {
                self.master.batch_execute("COMMIT").await?;
                info!(
                    version = token,
                    user = %pending.username,
                    password_set = !logs_in,
                    clone = %self.pair.clone,
                    mirror_statements = changes.len(),
                    changes = %changes.join("; "),
                    "setSecret: password set from a SCRAM-SHA-256 verifier (unless it already logged in); the clone is a copy of rotation.user"
                );
                Ok(())
            }
            Err(e) => {
                // Nothing of the step survives: no password, no half-copied privileges.
                let _ = self.master.batch_execute("ROLLBACK").await;
                Err(e)
            }
        }
    }

    /// The body of setSecret's transaction; returns the mirroring statements it ran.
    async fn set_and_mirror(
        &self,
        pending: &DbSecret,
        logs_in: bool,
    ) -> Result<Vec<String>, RotationError> {
        let db = self.master;
        mirror::refuse_unsafe(db, self.pair, &pending.username).await?;
        if !logs_in {
            let verifier = scram::new_verifier(&pending.password)?;
            let exists = db
                .query_opt(
                    "SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1",
                    &[&pending.username],
                )
                .await?
                .is_some();
            db.batch_execute(&format!(
                "{} ROLE {} WITH LOGIN PASSWORD {}",
                if exists { "ALTER" } else { "CREATE" },
                quote_ident(&pending.username),
                quote_literal(&verifier)
            ))
            .await?;
        }
        let reader = Reader::new(db, self.master_user).await?;
        let user = reader.snapshot(&self.pair.user).await?;
        let clone = reader.snapshot(&self.pair.clone).await?;
        let statements = mirror::plan(
            self.pair,
            &user,
            &clone,
            reader.pg16(),
            reader.location_column(),
        )?;
        for sql in &statements {
            db.batch_execute(sql)
                .await
                .map_err(|e| RotationError::Mirror(format!("{sql}: {}", describe(&e))))?;
        }
        // Read back: a GRANT or REVOKE the master may not make only warns.
        let after = reader.snapshot(&self.pair.clone).await?;
        let left = mirror::differences(self.pair, &user, &after);
        if !left.is_empty() {
            return Err(RotationError::Mirror(format!(
                "after {} statement(s), {} still differs from {}: {}",
                statements.len(),
                self.pair.clone,
                self.pair.user,
                left.join("; ")
            )));
        }
        Ok(statements)
    }

    /// testSecret: the pending credentials log in and act as the pending user.
    async fn test_secret(&self, token: &str) -> Result<(), RotationError> {
        let pending = self.pending(token).await?;
        let client = self
            .connector
            .connect(&pending)
            .await
            .map_err(|e| RotationError::Test(e.to_string()))?;
        let who: String = client
            .query_one("SELECT current_user::text", &[])
            .await?
            .get(0);
        if who != pending.username {
            return Err(RotationError::Test(format!(
                "logged in as {who}, expected {}",
                pending.username
            )));
        }
        info!(version = token, user = %pending.username, "testSecret: pending credentials log in");
        Ok(())
    }

    /// finishSecret: AWSCURRENT moves to the token's version (Secrets Manager moves
    /// AWSPREVIOUS to the version it left), then AWSPENDING is cleared.
    async fn finish_secret(&self, token: &str) -> Result<(), RotationError> {
        let versions = self.store.versions().await?;
        let current = versions
            .iter()
            .find(|v| v.has(AWSCURRENT))
            .map(|v| v.version_id.clone())
            .ok_or_else(|| {
                RotationError::Inconsistent("no version is labelled AWSCURRENT".into())
            })?;
        if current != token {
            self.store
                .move_stage(AWSCURRENT, Some(token), Some(&current))
                .await?;
            info!(version = token, previous = %current, "finishSecret: AWSCURRENT moved");
        }
        super::crash_point("finishSecret:current");
        let versions = self.store.versions().await?;
        for v in versions.iter().filter(|v| v.has(AWSPENDING)) {
            self.store
                .move_stage(AWSPENDING, None, Some(&v.version_id))
                .await?;
        }
        info!(
            version = token,
            "finishSecret: rotation complete, AWSPENDING cleared"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal(r"a\b'"), r"E'a\\b'''");
    }

    #[test]
    fn os_rng_passwords_are_safe_and_distinct() {
        let a = os_rng_password(32);
        let b = os_rng_password(32);
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        assert!(!a
            .chars()
            .any(|c| crate::store::aws::EXCLUDED_CHARACTERS.contains(c)));
    }
}
