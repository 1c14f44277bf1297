//! The four steps of the AWS rotation protocol, alternating-users strategy (the "PostgreSQL
//! multi-user" template): the secret's user and its clone take turns, so the user in
//! AWSCURRENT keeps its password while the other one gets a new one. Each step is idempotent:
//! run again on the same token, it finds its work done and returns, which is what makes an
//! interrupted rotation resumable.

use tokio_postgres::Client;
use tracing::info;

use super::RotationError;
use crate::config::{PasswordSource, RotationConfig};
use crate::db::Connector;
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

/// The other user of the pair: `app` <-> `app_clone`.
pub fn alternate_user(username: &str, suffix: &str) -> String {
    match username.strip_suffix(suffix) {
        Some(base) if !base.is_empty() => base.to_string(),
        _ => format!("{username}{suffix}"),
    }
}

/// PostgreSQL identifier quoting (`quote_ident`).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// PostgreSQL literal quoting, for the verifier in `PASSWORD '...'` (utility statements take
/// no parameters).
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
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
    /// A session of the master user, opened by the caller (it also holds the rotation lock).
    pub master: &'a Client,
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
        pending.username = alternate_user(&current.username, &self.cfg.clone_suffix);
        pending.password = password;
        self.store.put_pending(token, &pending).await?;
        info!(version = token, user = %pending.username, "createSecret: pending version stored");
        Ok(())
    }

    /// setSecret: the pending user gets the pending password (created if needed, with the
    /// current user's role memberships), sent as a SCRAM verifier.
    async fn set_secret(&self, token: &str) -> Result<(), RotationError> {
        let id = self.store.secret_id();
        let current = self.store.get(id, None, AWSCURRENT).await?.secret;
        let pending = self.pending(token).await?;
        let expected = alternate_user(&current.username, &self.cfg.clone_suffix);
        // Never touch a role outside the pair: a tampered pending version must not let the
        // master reset an arbitrary password.
        if pending.username != expected {
            return Err(RotationError::Inconsistent(format!(
                "pending user {} is not the alternate {} of the current user {}",
                pending.username, expected, current.username
            )));
        }
        if pending.host != current.host || pending.port != current.port {
            return Err(RotationError::Inconsistent(
                "pending and current versions name different database servers".into(),
            ));
        }
        if self.connector.connect(&pending).await.is_ok() {
            info!(version = token, user = %pending.username, "setSecret: pending password already logs in");
            return Ok(());
        }
        let verifier = scram::new_verifier(&pending.password)?;
        let user = quote_ident(&pending.username);
        let exists = self
            .master
            .query_opt(
                "SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1",
                &[&pending.username],
            )
            .await?
            .is_some();
        // Memberships of the current user, granted to the pending one so that both users
        // can do the same things.
        let memberships = self
            .master
            .query(
                "SELECT r.rolname, m.admin_option
                   FROM pg_catalog.pg_auth_members m
                   JOIN pg_catalog.pg_roles r ON r.oid = m.roleid
                   JOIN pg_catalog.pg_roles u ON u.oid = m.member
                  WHERE u.rolname = $1
                    AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_auth_members m2
                                      JOIN pg_catalog.pg_roles p ON p.oid = m2.member
                                     WHERE p.rolname = $2 AND m2.roleid = m.roleid)",
                &[&current.username, &pending.username],
            )
            .await?;
        let mut sql = String::from("BEGIN;\n");
        if exists {
            sql.push_str(&format!(
                "ALTER ROLE {user} WITH LOGIN PASSWORD {};\n",
                quote_literal(&verifier)
            ));
        } else {
            sql.push_str(&format!(
                "CREATE ROLE {user} WITH LOGIN PASSWORD {};\n",
                quote_literal(&verifier)
            ));
        }
        for row in &memberships {
            let role: String = row.get(0);
            let admin: bool = row.get(1);
            sql.push_str(&format!(
                "GRANT {} TO {user}{};\n",
                quote_ident(&role),
                if admin { " WITH ADMIN OPTION" } else { "" }
            ));
        }
        sql.push_str("COMMIT;");
        if let Err(e) = self.master.batch_execute(&sql).await {
            // The session may be left inside the failed transaction.
            let _ = self.master.batch_execute("ROLLBACK").await;
            return Err(e.into());
        }
        info!(
            version = token,
            user = %pending.username,
            created = !exists,
            memberships_granted = memberships.len(),
            "setSecret: password set from a SCRAM-SHA-256 verifier"
        );
        Ok(())
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
    fn users_alternate() {
        assert_eq!(alternate_user("app", "_clone"), "app_clone");
        assert_eq!(alternate_user("app_clone", "_clone"), "app");
        // A user named only the suffix still gets a distinct alternate.
        assert_eq!(alternate_user("_clone", "_clone"), "_clone_clone");
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
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
