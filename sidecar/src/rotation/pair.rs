//! The pair of logins that take turns, from the configuration. The user name stored in the
//! secret is data anyone with `PutSecretValue` can write, so it is only ever checked against
//! this pair, never used to choose which role the master changes.

use super::RotationError;
use crate::config::RotationConfig;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    /// `rotation.user`: the login the DBA manages; the source of the clone's privileges.
    pub user: String,
    /// `rotation.user + rotation.clone_suffix`: rebuilt from `user` at every rotation.
    pub clone: String,
}

impl Pair {
    pub fn from_config(cfg: &RotationConfig) -> Result<Pair, RotationError> {
        if cfg.user.is_empty() {
            return Err(RotationError::Refused(
                "rotation.user is not set: the sidecar rotates only a configured pair of logins (rotation.user and rotation.user + rotation.clone_suffix)".into(),
            ));
        }
        Ok(Pair {
            user: cfg.user.clone(),
            clone: format!("{}{}", cfg.user, cfg.clone_suffix),
        })
    }

    /// The other login of the pair, or `None` for a name outside it.
    pub fn other(&self, name: &str) -> Option<&str> {
        if name == self.user {
            Some(&self.clone)
        } else if name == self.clone {
            Some(&self.user)
        } else {
            None
        }
    }

    /// The user a rotation may change, given the user in AWSCURRENT: the other one of the
    /// pair. A name outside the pair means a tampered (or misconfigured) secret: refused.
    pub fn pending_for(&self, secret_id: &str, current_user: &str) -> Result<&str, RotationError> {
        self.other(current_user).ok_or_else(|| {
            RotationError::Refused(format!(
                "AWSCURRENT of secret {secret_id} names user {current_user:?}, which is neither rotation.user {:?} nor its clone {:?}; the secret may have been tampered with. No role was changed; restore the secret's username (or fix rotation.user)",
                self.user, self.clone
            ))
        })
    }

    /// Checks a pending version against AWSCURRENT: it must name the other user of the pair.
    pub fn check_pending(
        &self,
        secret_id: &str,
        current_user: &str,
        pending_user: &str,
    ) -> Result<(), RotationError> {
        let expected = self.pending_for(secret_id, current_user)?;
        if pending_user != expected {
            return Err(RotationError::Refused(format!(
                "AWSPENDING of secret {secret_id} names user {pending_user:?}, but the rotation may only change {expected:?} (the other user of the pair {:?}/{:?} while AWSCURRENT is {current_user:?}); the secret may have been tampered with. No role was changed",
                self.user, self.clone
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> Pair {
        let cfg = RotationConfig {
            user: "app".into(),
            ..RotationConfig::default()
        };
        Pair::from_config(&cfg).unwrap()
    }

    #[test]
    fn the_pair_comes_from_configuration() {
        let p = pair();
        assert_eq!((p.user.as_str(), p.clone.as_str()), ("app", "app_clone"));
        assert_eq!(p.other("app"), Some("app_clone"));
        assert_eq!(p.other("app_clone"), Some("app"));
        // Names the old suffix logic would have paired are outside the configured pair.
        assert_eq!(p.other("victim_clone"), None);
        assert_eq!(p.other("app_clone_clone"), None);
        assert!(Pair::from_config(&RotationConfig::default()).is_err());
    }

    #[test]
    fn a_secret_outside_the_pair_is_refused_by_name() {
        let p = pair();
        assert_eq!(p.pending_for("s", "app").unwrap(), "app_clone");
        let e = p.pending_for("s", "victim_clone").unwrap_err().to_string();
        assert!(e.starts_with("refusing to rotate"), "{e}");
        assert!(
            e.contains("\"victim_clone\"") && e.contains("\"app\""),
            "{e}"
        );
        assert!(e.contains("No role was changed"), "{e}");
        assert!(p.check_pending("s", "app", "app_clone").is_ok());
        let e = p
            .check_pending("s", "app", "victim")
            .unwrap_err()
            .to_string();
        assert!(e.contains("AWSPENDING") && e.contains("\"victim\""), "{e}");
        // The pending user must be the *other* one, not the current one again.
        assert!(p.check_pending("s", "app", "app").is_err());
    }
}
