//! Database credentials in the RDS JSON format of Secrets Manager. `Debug` never shows the
//! password, and parse errors never quote the input, so neither can leak into a log.

use serde::{Deserialize, Deserializer, Serialize};

#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct DbSecret {
    #[serde(default = "default_engine")]
    pub engine: String,
    pub host: String,
    #[serde(deserialize_with = "port_from_number_or_text")]
    pub port: u16,
    pub username: String,
    pub password: String,
    #[serde(default = "default_dbname")]
    pub dbname: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub masterarn: Option<String>,
    /// Other keys of the secret, carried over unchanged into new versions.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

fn default_engine() -> String {
    "postgres".into()
}

fn default_dbname() -> String {
    "postgres".into()
}

/// RDS writes the port as a number, hand-made secrets often as a string: accept both.
fn port_from_number_or_text<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        N(u16),
        S(String),
    }
    match Raw::deserialize(d)? {
        Raw::N(n) => Ok(n),
        Raw::S(s) => s
            .trim()
            .parse()
            .map_err(|_| serde::de::Error::custom("port is not a number between 0 and 65535")),
    }
}

impl std::fmt::Debug for DbSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbSecret")
            .field("engine", &self.engine)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("dbname", &self.dbname)
            .field("masterarn", &self.masterarn)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{what} is not valid RDS JSON ({reason} at line {line}, column {column}); expected engine, host, port, username, password, dbname, masterarn")]
pub struct SecretParseError {
    what: String,
    reason: &'static str,
    line: usize,
    column: usize,
}

impl DbSecret {
    /// Parses a secret string; `what` names it in the error (never its content).
    pub fn parse(text: &str, what: &str) -> Result<DbSecret, SecretParseError> {
        serde_json::from_str(text).map_err(|e| SecretParseError {
            what: what.to_string(),
            // serde_json's message may quote a value (a password of the wrong type): keep
            // only its category and position.
            reason: match e.classify() {
                serde_json::error::Category::Syntax => "syntax error",
                serde_json::error::Category::Eof => "unexpected end",
                serde_json::error::Category::Data => "missing field or wrong type",
                serde_json::error::Category::Io => "read error",
            },
            line: e.line(),
            column: e.column(),
        })
    }

    pub fn to_json(&self) -> String {
        // Serializing plain strings and numbers cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rds_json_with_either_port_form() {
        let s = DbSecret::parse(
            r#"{"engine":"postgres","host":"db","port":"5432","username":"app","password":"pw1","dbname":"twin","masterarn":"arn:m","rotate":true}"#,
            "t",
        )
        .unwrap();
        assert_eq!(s.port, 5432);
        assert_eq!(s.dbname, "twin");
        assert_eq!(s.extra.get("rotate"), Some(&serde_json::Value::Bool(true)));
        let again = DbSecret::parse(&s.to_json(), "t").unwrap();
        assert_eq!(again, s);
        let n = DbSecret::parse(
            r#"{"host":"db","port":5433,"username":"u","password":"p"}"#,
            "t",
        )
        .unwrap();
        assert_eq!(
            (n.port, n.engine.as_str(), n.dbname.as_str()),
            (5433, "postgres", "postgres")
        );
    }

    #[test]
    fn never_shows_the_password() {
        let s = DbSecret::parse(
            r#"{"host":"db","port":5432,"username":"u","password":"hunter2-secret"}"#,
            "t",
        )
        .unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
        // A wrong-typed field must not echo neighbouring values either.
        let e = DbSecret::parse(
            r#"{"host":"db","port":"hunter2-secret","username":"u","password":"x"}"#,
            "secret app",
        )
        .unwrap_err()
        .to_string();
        assert!(!e.contains("hunter2"), "{e}");
        assert!(e.contains("secret app"), "{e}");
        let e = DbSecret::parse(
            r#"{"host":"db","port":1,"username":"u","password":12345678}"#,
            "s",
        )
        .unwrap_err()
        .to_string();
        assert!(!e.contains("12345678"), "{e}");
    }
}
