//! Credential rotation: decides whether to start a rotation or to finish an interrupted one,
//! and runs the protocol's steps under a lock so that two sidecars (or the daemon and an
//! on-demand `rotate`) never rotate the same secret at once.
//!
//! Resumption: a version labelled AWSPENDING but not AWSCURRENT is a rotation that did not
//! finish. Its version id is the rotation's ClientRequestToken, so the same token is run
//! through all four steps again; each step sees what is already done (the pending version
//! exists, the pending password already logs in, AWSCURRENT already moved) and skips it.

pub mod mirror;
pub mod pair;
pub mod protocol;

use std::time::Duration;

use chrono::Utc;
use tracing::{info, warn};

use crate::config::RotationConfig;
use crate::db::{Connector, DbError, SessionTimeouts};
use crate::scram::ScramError;
use crate::store::aws::AwsStore;
use crate::store::{StoreError, AWSCURRENT, AWSPENDING};
use pair::Pair;
use protocol::{Protocol, Step};

/// Advisory lock class of rotations (`ENKR`); the second key is a hash of the secret id.
pub const ROTATION_LOCK_CLASS: i32 = 0x454E_4B52;

/// Test-only hook: the step after which the process kills itself.
pub const CRASH_ENV: &str = "ENKF_SIDECAR_CRASH_AFTER";

/// Test-only hook: milliseconds to sleep between the first read of AWSCURRENT and taking the
/// rotation lock, so that a test can finish another rotation in that window.
pub const PAUSE_ENV: &str = "ENKF_SIDECAR_TEST_PAUSE_BEFORE_LOCK";

#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("database: {}", crate::db::describe(.0))]
    Pg(#[from] tokio_postgres::Error),
    #[error(transparent)]
    Scram(#[from] ScramError),
    #[error("inconsistent secret: {0}")]
    Inconsistent(String),
    #[error("testSecret failed: {0}")]
    Test(String),
    #[error("another rotation of this secret is in progress (rotation lock held)")]
    Busy,
    #[error(
        "the secret has no masterarn: rotation needs the master user's secret to set passwords"
    )]
    NoMaster,
    /// A role the rotation must not change; nothing was changed.
    #[error("refusing to rotate: {0}")]
    Refused(String),
    /// The clone could not be made a copy of rotation.user; setSecret rolled back.
    #[error("cannot make the clone a copy of rotation.user, so setSecret was rolled back (no password or privilege changed): {0}. The master needs to be able to make each change (see docs/sidecar.md, \"What the master needs\")")]
    Mirror(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// `rotate`: now (after the grace period of the previous version, if needed).
    OnDemand,
    /// The daemon: only when AWSCURRENT is older than the rotation period.
    IfDue,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Rotated { version: String, user: String },
    Resumed { version: String, user: String },
    NotDue,
}

/// Kills the process with SIGKILL when [`CRASH_ENV`] names this point (tests of resumption).
pub fn crash_point(name: &str) {
    if std::env::var(CRASH_ENV).is_ok_and(|v| v == name) {
        warn!(point = name, "test hook {CRASH_ENV}: killing the process");
        // SAFETY: raise() has no memory-safety preconditions; SIGKILL ends the process at
        // once, like an OOM kill, with no destructor run.
        unsafe {
            libc::raise(libc::SIGKILL);
        }
    }
}

/// A stable 32-bit hash (FNV-1a) of the secret id: the same key in every build and process.
pub fn lock_key(secret_id: &str) -> i32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in secret_id.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h as i32
}

/// A random UUID (version 4) from the OS RNG: the rotation's ClientRequestToken.
pub fn new_token() -> String {
    use rand::RngCore;
    let mut b = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn test_pause_before_lock() -> Option<Duration> {
    std::env::var(PAUSE_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_millis)
}

/// Whether AWSCURRENT is old enough for the daemon to rotate.
fn is_due(created: Option<chrono::DateTime<Utc>>, cfg: &RotationConfig) -> Option<bool> {
    created
        .map(|c| (Utc::now() - c).to_std().unwrap_or(Duration::ZERO))
        .map(|age| age >= cfg.period.0 && age >= cfg.previous_grace.0)
}

pub async fn rotate(
    store: &AwsStore,
    connector: &Connector,
    cfg: &RotationConfig,
    trigger: Trigger,
) -> Result<Outcome, RotationError> {
    let pair = Pair::from_config(cfg)?;
    let id = store.secret_id();
    // This first read only decides whether a master login is needed at all and finds the
    // master's secret. Everything else is decided from a second read made under the lock.
    let early = store.get(id, None, AWSCURRENT).await?;
    // Checked at every daemon check, so a tampered secret is reported (and /healthz turns
    // unhealthy) even while no rotation is due.
    pair.pending_for(id, &early.secret.username)?;
    // The daemon asks every check_interval: answer "not due" without a master login (each
    // one is an audited session) unless a rotation is due or was interrupted.
    if trigger == Trigger::IfDue {
        let interrupted = store.versions().await?.iter().any(|v| v.has(AWSPENDING));
        if !interrupted && is_due(early.created, cfg) != Some(true) {
            return Ok(Outcome::NotDue);
        }
    }
    let masterarn = early
        .secret
        .masterarn
        .clone()
        .ok_or(RotationError::NoMaster)?;
    let master_secret = store.get(&masterarn, None, AWSCURRENT).await?.secret;
    let timeouts = SessionTimeouts {
        statement: cfg.statement_timeout.0,
        lock: cfg.lock_timeout.0,
    };
    let master = connector.connect_master(&master_secret, &timeouts).await?;
    if let Some(pause) = test_pause_before_lock() {
        warn!(
            pause_ms = pause.as_millis() as u64,
            "test hook {PAUSE_ENV}: pausing before the rotation lock"
        );
        tokio::time::sleep(pause).await;
    }
    // Session-level lock, released when `master` is dropped (also if the process dies).
    let locked: bool = master
        .query_one(
            "SELECT pg_catalog.pg_try_advisory_lock($1, $2)",
            &[&ROTATION_LOCK_CLASS, &lock_key(id)],
        )
        .await?
        .get(0);
    if !locked {
        return Err(RotationError::Busy);
    }

    // Under the lock: read AWSCURRENT again. A rotation that finished between the first read
    // and the lock has moved AWSCURRENT to a version created moments ago; deciding the grace
    // wait from the first read would change the password of the user that was current a
    // moment ago, while clients may still hold it.
    let current = store.get(id, None, AWSCURRENT).await?;
    pair.pending_for(id, &current.secret.username)?;
    let versions = store.versions().await?;
    let interrupted = versions
        .iter()
        .find(|v| v.has(AWSPENDING) && !v.has(AWSCURRENT))
        .map(|v| v.version_id.clone());
    let (token, resumed) = match interrupted {
        Some(token) => {
            info!(version = %token, "resuming an interrupted rotation");
            (token, true)
        }
        None => {
            // AWSPENDING left on the current version: finishSecret stopped after moving
            // AWSCURRENT. The rotation is complete; only the label remains to clear.
            for v in versions
                .iter()
                .filter(|v| v.has(AWSPENDING) && v.has(AWSCURRENT))
            {
                store
                    .move_stage(AWSPENDING, None, Some(&v.version_id))
                    .await?;
                info!(version = %v.version_id, "cleared AWSPENDING from the current version");
            }
            if trigger == Trigger::IfDue {
                match is_due(current.created, cfg) {
                    Some(true) => {}
                    Some(false) => return Ok(Outcome::NotDue),
                    None => {
                        warn!("AWSCURRENT has no creation date; not rotating on schedule");
                        return Ok(Outcome::NotDue);
                    }
                }
            }
            // Clients that read AWSCURRENT just before the last rotation finished still hold
            // what is now AWSPREVIOUS: its password changes in setSecret, so wait until the
            // current version is old enough.
            let age = current
                .created
                .map(|c| (Utc::now() - c).to_std().unwrap_or(Duration::ZERO))
                .unwrap_or(Duration::ZERO);
            if age < cfg.previous_grace.0 {
                let wait = cfg.previous_grace.0 - age;
                info!(
                    wait_ms = wait.as_millis() as u64,
                    "waiting for rotation.previous_grace before changing the AWSPREVIOUS user"
                );
                tokio::time::sleep(wait).await;
            }
            (new_token(), false)
        }
    };

    // The secret's database holds the grants and location grants to copy; the master's own
    // secret may name another one (often `postgres`).
    let app_db = if master_secret.dbname == current.secret.dbname {
        None
    } else {
        let mut s = master_secret.clone();
        s.dbname = current.secret.dbname.clone();
        Some(connector.connect_master(&s, &timeouts).await?)
    };
    let db = app_db.as_ref().unwrap_or(&master);
    // Refuse before createSecret writes anything, so that a refusal leaves no AWSPENDING
    // behind; setSecret checks again inside its transaction.
    mirror::refuse_unsafe(db, &pair, pair.pending_for(id, &current.secret.username)?).await?;
    let proto = Protocol {
        store,
        connector,
        cfg,
        pair: &pair,
        master: db,
        master_user: &master_secret.username,
    };
    for step in Step::ALL {
        proto.run(step, &token).await?;
        crash_point(step.name());
    }
    let now_current = store.get(id, None, AWSCURRENT).await?;
    warn_if_grace_is_short(&now_current, cfg);
    let user = now_current.secret.username;
    Ok(if resumed {
        Outcome::Resumed {
            version: token,
            user,
        }
    } else {
        Outcome::Rotated {
            version: token,
            user,
        }
    })
}

/// The grace of the next rotation is measured from the new version's creation (createSecret),
/// the only date Secrets Manager reports, not from finishSecret. A rotation resumed long
/// after it began leaves a version that already looks old: say so, since the next rotation
/// may then change AWSPREVIOUS's password at once.
fn warn_if_grace_is_short(current: &crate::store::Versioned, cfg: &RotationConfig) {
    let took = current
        .created
        .and_then(|c| (Utc::now() - c).to_std().ok())
        .unwrap_or(Duration::ZERO);
    if !cfg.previous_grace.0.is_zero() && took >= cfg.previous_grace.0 / 2 {
        warn!(
            since_created_s = took.as_secs(),
            previous_grace_s = cfg.previous_grace.0.as_secs(),
            "the new AWSCURRENT version was created long before it became current (a resumed or slow rotation): the next rotation's previous_grace wait is shortened by that much; wait previous_grace before rotating again"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_uuid_v4() {
        let t = new_token();
        assert_eq!(t.len(), 36);
        assert_eq!(&t[14..15], "4");
        assert!("89ab".contains(&t[19..20]));
        assert_ne!(t, new_token());
    }

    #[test]
    fn lock_key_is_stable() {
        // FNV-1a of "" and "a": fixed values, so every sidecar build agrees on the key.
        assert_eq!(lock_key(""), 0x811c_9dc5_u32 as i32);
        assert_eq!(lock_key("a"), 0xe40c_292c_u32 as i32);
    }
}
