//! Configuration: a TOML file, then `ENKF_SIDECAR_<SECTION>_<KEY>` environment overrides, then
//! validation. Every setting is listed once in [`SETTINGS`], which feeds both `--help` and the
//! environment parser, so the two cannot drift apart.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Prefix of every environment override.
pub const ENV_PREFIX: &str = "ENKF_SIDECAR_";

/// Variables with the prefix that are not settings (read elsewhere).
const RESERVED_ENV: &[&str] = &[
    "ENKF_SIDECAR_CONFIG",
    "ENKF_SIDECAR_CRASH_AFTER",
    "ENKF_SIDECAR_TEST_PAUSE_BEFORE_LOCK",
];

/// PostgreSQL truncates longer identifiers (NAMEDATALEN - 1 bytes): a clone name past it would
/// silently name another role.
pub const MAX_ROLE_NAME: usize = 63;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("configuration file {path} is not valid TOML: {message}")]
    Toml { path: PathBuf, message: String },
    #[error("unknown environment setting {0}: see `enkf-sidecar --help` for the list")]
    UnknownEnv(String),
    #[error("environment setting {name}: {message}")]
    BadEnv { name: String, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// A duration written as `90s`, `15m`, `2h`, `30d` or `500ms` (or a bare number of seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl Dur {
    pub fn parse(text: &str) -> Result<Dur, String> {
        let t = text.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("\"{text}\" is not a duration such as 30s, 15m, 2h or 30d"))?;
        let ms = match unit.trim() {
            "ms" => 1,
            "" | "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(format!("\"{text}\": unknown unit (use ms, s, m, h or d)")),
        };
        n.checked_mul(ms)
            .map(|v| Dur(Duration::from_millis(v)))
            .ok_or_else(|| format!("\"{text}\" is too long"))
    }
}

impl std::fmt::Display for Dur {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = self.0.as_millis();
        for (unit, size) in [
            ("d", 86_400_000),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1_000),
        ] {
            if ms >= size && ms.is_multiple_of(size) {
                return write!(f, "{}{unit}", ms / size);
            }
        }
        write!(f, "{ms}ms")
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Secs(s) => Ok(Dur(Duration::from_secs(s))),
            Raw::Text(t) => Dur::parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    /// Certificate chain to `ca_file` and host name checked (libpq's verify-full).
    VerifyFull,
    /// Plain TCP: only when set explicitly; logged as a warning on every connection.
    Disable,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SecretSource {
    Aws,
    File,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PasswordSource {
    /// Secrets Manager's GetRandomPassword.
    SecretsManager,
    /// The operating system's random number generator.
    OsRng,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    pub tls: TlsMode,
    pub ca_file: Option<PathBuf>,
    pub connect_timeout: Dur,
    pub application_name: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecretsConfig {
    pub source: SecretSource,
    pub secret_id: String,
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
    pub file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RotationConfig {
    pub enabled: bool,
    /// The login that is rotated; with `user + clone_suffix` it forms the only pair of roles
    /// the sidecar ever changes. Configuration, never taken from the secret.
    pub user: String,
    pub period: Dur,
    pub check_interval: Dur,
    pub previous_grace: Dur,
    pub password_length: u32,
    pub password_source: PasswordSource,
    pub clone_suffix: String,
    /// statement_timeout of the master's sessions: a blocked ALTER ROLE must not outlive
    /// SIGTERM or hold catalog locks indefinitely.
    pub statement_timeout: Dur,
    /// lock_timeout of the master's sessions.
    pub lock_timeout: Dur,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchedulerConfig {
    pub enabled: bool,
    pub poll_interval: Dur,
    pub max_attempts: u32,
    pub backoff_base: Dur,
    pub backoff_max: Dur,
    pub run_timeout: Dur,
    pub shutdown_grace: Dur,
    /// After each successful run, the reference date's `enkf.hub_submission` written as
    /// `<reference_date>-<team>-<model>.csv` into this directory (none: no file), its SHA-256,
    /// rows and coverage in the log and the metrics.
    pub submission_directory: Option<PathBuf>,
    /// The hub's team abbreviation (letters, digits, underscore; at most 16): pg_enkf.
    pub submission_team: String,
    /// The product's model whose distribution is submitted (`quantile_model` of
    /// enkf.hub_submission: combined, enkf, baseline, trend, pooled), also the file's model
    /// abbreviation.
    pub submission_model: String,
    /// Write a file below the hub's 75% coverage (with a warning) rather than none.
    pub submission_partial: bool,
}

/// What `[scheduler] submission_*` asks for, when a directory is set.
#[derive(Debug, Clone, PartialEq)]
pub struct SubmissionConfig {
    pub directory: PathBuf,
    pub team: String,
    pub model: String,
    pub partial: bool,
}

impl SchedulerConfig {
    pub fn submission(&self) -> Option<SubmissionConfig> {
        self.submission_directory
            .as_ref()
            .map(|directory| SubmissionConfig {
                directory: directory.clone(),
                team: self.submission_team.clone(),
                model: self.submission_model.clone(),
                partial: self.submission_partial,
            })
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    pub listen: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub level: String,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub database: DatabaseConfig,
    pub secrets: SecretsConfig,
    pub rotation: RotationConfig,
    pub scheduler: SchedulerConfig,
    pub http: HttpConfig,
    pub log: LogConfig,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            tls: TlsMode::VerifyFull,
            ca_file: None,
            connect_timeout: Dur(Duration::from_secs(10)),
            application_name: "enkf-sidecar".into(),
        }
    }
}

impl Default for SecretsConfig {
    fn default() -> Self {
        SecretsConfig {
            source: SecretSource::Aws,
            secret_id: String::new(),
            region: None,
            endpoint_url: None,
            file: None,
        }
    }
}

impl Default for RotationConfig {
    fn default() -> Self {
        RotationConfig {
            enabled: true,
            user: String::new(),
            period: Dur(Duration::from_secs(30 * 86_400)),
            check_interval: Dur(Duration::from_secs(300)),
            previous_grace: Dur(Duration::from_secs(60)),
            password_length: 32,
            password_source: PasswordSource::SecretsManager,
            clone_suffix: "_clone".into(),
            statement_timeout: Dur(Duration::from_secs(60)),
            lock_timeout: Dur(Duration::from_secs(10)),
        }
    }
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            enabled: true,
            poll_interval: Dur(Duration::from_secs(30)),
            max_attempts: 5,
            backoff_base: Dur(Duration::from_secs(60)),
            backoff_max: Dur(Duration::from_secs(3600)),
            run_timeout: Dur(Duration::from_secs(7200)),
            shutdown_grace: Dur(Duration::from_secs(300)),
            submission_directory: None,
            submission_team: "pg_enkf".into(),
            submission_model: "combined".into(),
            submission_partial: false,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "127.0.0.1:9187".into(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Int,
    Bool,
}

/// One setting: `section.key`, its type, default (as written in TOML) and meaning.
pub struct Setting {
    pub section: &'static str,
    pub key: &'static str,
    kind: Kind,
    pub default: &'static str,
    pub help: &'static str,
}

macro_rules! setting {
    ($s:literal, $k:literal, $kind:ident, $d:literal, $h:literal) => {
        Setting {
            section: $s,
            key: $k,
            kind: Kind::$kind,
            default: $d,
            help: $h,
        }
    };
}

pub const SETTINGS: &[Setting] = &[
    setting!("database", "tls", Text, "verify-full", "verify-full: TLS, server certificate chained to ca_file and issued for the secret's host; disable: plain TCP (logged as a warning)"),
    setting!("database", "ca_file", Text, "(none)", "PEM file of the CA root(s) to trust; the only roots used (system roots are ignored); required with tls = verify-full"),
    setting!("database", "connect_timeout", Text, "10s", "timeout of each database connection attempt"),
    setting!("database", "application_name", Text, "enkf-sidecar", "application_name of the sidecar's sessions (pg_stat_activity, logs)"),
    setting!("secrets", "source", Text, "aws", "aws: AWS Secrets Manager; file: a local JSON file in the same RDS format (no rotation)"),
    setting!("secrets", "secret_id", Text, "(none)", "name or ARN of the application secret (RDS JSON: engine, host, port, username, password, dbname, masterarn)"),
    setting!("secrets", "region", Text, "(AWS default chain)", "AWS region; otherwise AWS_REGION or the instance metadata"),
    setting!("secrets", "endpoint_url", Text, "(AWS default)", "Secrets Manager endpoint, e.g. a VPC endpoint or a test server"),
    setting!("secrets", "file", Text, "(none)", "with source = file: the credentials file"),
    setting!("rotation", "enabled", Bool, "true", "rotate the application secret when it is older than period (daemon); needs source = aws"),
    setting!("rotation", "user", Text, "(none)", "the login that is rotated; it and user<clone_suffix> are the only roles the sidecar changes (a secret naming any other user is refused); required when rotation is enabled with source = aws"),
    setting!("rotation", "period", Text, "30d", "age of AWSCURRENT after which the daemon rotates"),
    setting!("rotation", "check_interval", Text, "5m", "how often the daemon checks whether a rotation is due or was interrupted"),
    setting!("rotation", "previous_grace", Text, "60s", "minimum age of AWSCURRENT before the next rotation may change the password of the AWSPREVIOUS user (protects clients that just read the secret)"),
    setting!("rotation", "password_length", Int, "32", "length of new passwords (16 to 4096)"),
    setting!("rotation", "password_source", Text, "secrets-manager", "secrets-manager: GetRandomPassword; os-rng: the operating system's random generator"),
    setting!("rotation", "clone_suffix", Text, "_clone", "suffix of the alternate user: user and user<suffix> take turns"),
    setting!("rotation", "statement_timeout", Text, "60s", "statement_timeout of the master user's sessions (a blocked ALTER ROLE fails instead of waiting)"),
    setting!("rotation", "lock_timeout", Text, "10s", "lock_timeout of the master user's sessions"),
    setting!("scheduler", "enabled", Bool, "true", "run due twins (enkf.twins.config -> 'schedule')"),
    setting!("scheduler", "poll_interval", Text, "30s", "how often the schedules are read and due twins run"),
    setting!("scheduler", "max_attempts", Int, "5", "attempts per due slot before it is marked failed"),
    setting!("scheduler", "backoff_base", Text, "60s", "delay before the second attempt; doubles per attempt, with jitter"),
    setting!("scheduler", "backoff_max", Text, "1h", "upper bound of the retry delay"),
    setting!("scheduler", "run_timeout", Text, "2h", "statement_timeout of a scheduled run"),
    setting!("scheduler", "shutdown_grace", Text, "5m", "on SIGTERM, how long a running job may finish before it is cancelled and rolled back"),
    setting!("scheduler", "submission_directory", Text, "(none)", "after each successful run, write the week's hub submission file <reference_date>-<team>-<model>.csv here (checksum, rows and coverage logged)"),
    setting!("scheduler", "submission_team", Text, "pg_enkf", "the hub's team abbreviation in the file name (1 to 16 letters, digits, underscores)"),
    setting!("scheduler", "submission_model", Text, "combined", "the model submitted (combined, enkf, baseline, trend, pooled), also the file name's model abbreviation"),
    setting!("scheduler", "submission_partial", Bool, "false", "also write a file below the hub's 75% coverage (the database warns)"),
    setting!("http", "listen", Text, "127.0.0.1:9187", "address of /healthz and /metrics; empty disables the server"),
    setting!("log", "level", Text, "info", "log filter (tracing EnvFilter syntax); RUST_LOG overrides it"),
];

impl Setting {
    pub fn env_name(&self) -> String {
        format!("{ENV_PREFIX}{}_{}", self.section, self.key).to_ascii_uppercase()
    }
}

/// The settings reference printed by `--help`.
pub fn settings_help() -> String {
    let mut out = String::from(
        "SETTINGS (TOML file [section] key = value; each overridden by its environment variable):\n",
    );
    let mut section = "";
    for s in SETTINGS {
        if s.section != section {
            section = s.section;
            out.push_str(&format!("\n  [{section}]\n"));
        }
        out.push_str(&format!(
            "  {} (env {}, default {})\n      {}\n",
            s.key,
            s.env_name(),
            s.default,
            s.help
        ));
    }
    out
}

impl Config {
    /// Reads `path` (a missing file is an error only when `required`), applies the environment
    /// `env` (pairs of name and value) and validates the result.
    pub fn load(
        path: &Path,
        required: bool,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => String::new(),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })
            }
        };
        Config::from_parts(&text, env).map_err(|e| match e {
            ConfigError::Toml { message, .. } => ConfigError::Toml {
                path: path.to_owned(),
                message,
            },
            other => other,
        })
    }

    pub fn from_parts(
        toml_text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let toml_err = |e: toml::de::Error| ConfigError::Toml {
            path: PathBuf::new(),
            message: e.message().to_string(),
        };
        let mut table: toml::Table = toml::from_str(toml_text).map_err(toml_err)?;
        let mut overrides: BTreeMap<String, String> = BTreeMap::new();
        for (name, value) in env {
            if name.starts_with(ENV_PREFIX) && !RESERVED_ENV.contains(&name.as_str()) {
                overrides.insert(name, value);
            }
        }
        for (name, raw) in overrides {
            let setting = SETTINGS
                .iter()
                .find(|s| s.env_name() == name)
                .ok_or_else(|| ConfigError::UnknownEnv(name.clone()))?;
            let bad = |message: String| ConfigError::BadEnv {
                name: name.clone(),
                message,
            };
            let value = match setting.kind {
                Kind::Text => toml::Value::String(raw),
                Kind::Int => toml::Value::Integer(
                    raw.trim()
                        .parse()
                        .map_err(|_| bad(format!("\"{raw}\" is not an integer")))?,
                ),
                Kind::Bool => match raw.trim().to_ascii_lowercase().as_str() {
                    "true" | "1" | "yes" | "on" => toml::Value::Boolean(true),
                    "false" | "0" | "no" | "off" => toml::Value::Boolean(false),
                    _ => return Err(bad(format!("\"{raw}\" is not true or false"))),
                },
            };
            let section = table
                .entry(setting.section)
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            match section {
                toml::Value::Table(t) => {
                    t.insert(setting.key.to_string(), value);
                }
                _ => {
                    return Err(ConfigError::Invalid(format!(
                        "[{}] must be a table",
                        setting.section
                    )))
                }
            }
        }
        let config: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Invalid(e.message().to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Refuses (`Invalid`, naming the setting) a configuration that cannot work; checked in
    /// a fixed order, so that the first problem found is always the one reported.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_connection()?;
        self.validate_rotation()?;
        if self.scheduler.max_attempts == 0 {
            return invalid("scheduler.max_attempts must be at least 1");
        }
        self.validate_durations()?;
        self.validate_submission()?;
        if !self.http.listen.is_empty() && self.http.listen.parse::<std::net::SocketAddr>().is_err()
        {
            return invalid("http.listen must be an address such as 127.0.0.1:9187, or empty");
        }
        Ok(())
    }

    /// The hub's abbreviations: letters, digits and underscores, at most 16 characters.
    fn validate_submission(&self) -> Result<(), ConfigError> {
        let Some(s) = self.scheduler.submission() else {
            return Ok(());
        };
        let abbreviation = |v: &str| {
            !v.is_empty()
                && v.len() <= 16
                && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        };
        if !abbreviation(&s.team) {
            return invalid("scheduler.submission_team must be the hub's team abbreviation: 1 to 16 letters, digits or underscores");
        }
        if !["combined", "enkf", "baseline", "trend", "pooled"].contains(&s.model.as_str()) {
            return invalid(
                "scheduler.submission_model must be one of combined, enkf, baseline, trend, pooled",
            );
        }
        Ok(())
    }

    /// Where the secret comes from, and how the database connection is verified.
    fn validate_connection(&self) -> Result<(), ConfigError> {
        match self.secrets.source {
            SecretSource::Aws if self.secrets.secret_id.trim().is_empty() => {
                return invalid("secrets.secret_id is required with secrets.source = \"aws\"")
            }
            SecretSource::File if self.secrets.file.is_none() => {
                return invalid("secrets.file is required with secrets.source = \"file\"")
            }
            _ => {}
        }
        if self.database.tls == TlsMode::VerifyFull && self.database.ca_file.is_none() {
            return invalid(
                "database.ca_file is required with database.tls = \"verify-full\" (set tls = \"disable\" explicitly for plain connections)",
            );
        }
        Ok(())
    }

    /// The rotated pair's names, the password length and the rotation's timeouts.
    fn validate_rotation(&self) -> Result<(), ConfigError> {
        if !(16..=4096).contains(&self.rotation.password_length) {
            return invalid("rotation.password_length must be between 16 and 4096");
        }
        if self.rotation.clone_suffix.is_empty() {
            return invalid("rotation.clone_suffix must not be empty");
        }
        if self.rotation.enabled
            && self.secrets.source == SecretSource::Aws
            && self.rotation.user.is_empty()
        {
            return invalid("rotation.user is required with rotation.enabled and secrets.source = \"aws\": the login to rotate (it and rotation.user + rotation.clone_suffix take turns; the user name in the secret must be one of them)");
        }
        if self.rotation.user.len() + self.rotation.clone_suffix.len() > MAX_ROLE_NAME {
            return invalid("rotation.user + rotation.clone_suffix is longer than 63 bytes: PostgreSQL would truncate the clone's name");
        }
        if self.rotation.lock_timeout.0 > self.rotation.statement_timeout.0 {
            return invalid("rotation.lock_timeout must not exceed rotation.statement_timeout");
        }
        Ok(())
    }

    /// Every period, interval and timeout positive, and the backoff's cap not below its base.
    fn validate_durations(&self) -> Result<(), ConfigError> {
        for (name, d) in [
            ("rotation.period", self.rotation.period),
            ("rotation.check_interval", self.rotation.check_interval),
            (
                "rotation.statement_timeout",
                self.rotation.statement_timeout,
            ),
            ("rotation.lock_timeout", self.rotation.lock_timeout),
            ("scheduler.poll_interval", self.scheduler.poll_interval),
            ("scheduler.backoff_base", self.scheduler.backoff_base),
            ("scheduler.run_timeout", self.scheduler.run_timeout),
            ("database.connect_timeout", self.database.connect_timeout),
        ] {
            if d.0.is_zero() {
                return Err(ConfigError::Invalid(format!("{name} must be positive")));
            }
        }
        if self.scheduler.backoff_max.0 < self.scheduler.backoff_base.0 {
            return invalid("scheduler.backoff_max must not be below scheduler.backoff_base");
        }
        Ok(())
    }
}

/// The `Invalid` error with message `m`.
fn invalid(m: &str) -> Result<(), ConfigError> {
    Err(ConfigError::Invalid(m.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    const BASE: &str = r#"
        [database]
        ca_file = "/etc/ca.pem"
        [secrets]
        secret_id = "app"
        [rotation]
        user = "app"
    "#;

    #[test]
    fn durations_parse_and_print() {
        assert_eq!(Dur::parse("90s").unwrap().0, Duration::from_secs(90));
        assert_eq!(Dur::parse("15m").unwrap().0, Duration::from_secs(900));
        assert_eq!(Dur::parse("2h").unwrap().0, Duration::from_secs(7200));
        assert_eq!(
            Dur::parse("30d").unwrap().0,
            Duration::from_secs(30 * 86400)
        );
        assert_eq!(Dur::parse("250ms").unwrap().0, Duration::from_millis(250));
        assert_eq!(Dur::parse("7").unwrap().0, Duration::from_secs(7));
        assert!(Dur::parse("5 weeks").is_err());
        assert!(Dur::parse("m").is_err());
        assert_eq!(Dur(Duration::from_secs(3600)).to_string(), "1h");
        assert_eq!(Dur(Duration::from_millis(1500)).to_string(), "1500ms");
    }

    #[test]
    fn file_then_env_overrides() {
        let text = format!("{BASE}\n[scheduler]\npoll_interval = \"10s\"\nmax_attempts = 3\n");
        let c = Config::from_parts(
            &text,
            env(&[
                ("ENKF_SIDECAR_SCHEDULER_MAX_ATTEMPTS", "7"),
                ("ENKF_SIDECAR_ROTATION_ENABLED", "false"),
                ("ENKF_SIDECAR_SECRETS_SECRET_ID", "12345"),
                ("ENKF_SIDECAR_CRASH_AFTER", "setSecret"),
                ("UNRELATED", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(c.scheduler.poll_interval.0, Duration::from_secs(10));
        assert_eq!(c.scheduler.max_attempts, 7);
        assert!(!c.rotation.enabled);
        // A numeric-looking secret name stays a string.
        assert_eq!(c.secrets.secret_id, "12345");
        assert_eq!(c.database.tls, TlsMode::VerifyFull);
        assert_eq!(c.rotation.clone_suffix, "_clone");
    }

    #[test]
    fn errors_name_the_setting() {
        let e = Config::from_parts(BASE, env(&[("ENKF_SIDECAR_SCHEDULER_POLL", "1s")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("ENKF_SIDECAR_SCHEDULER_POLL"), "{e}");
        let e = Config::from_parts(BASE, env(&[("ENKF_SIDECAR_SCHEDULER_MAX_ATTEMPTS", "x")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not an integer"), "{e}");
        let e = Config::from_parts("[secrets]\nsecret_id = \"a\"\n", env(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("ca_file is required"), "{e}");
        let e = Config::from_parts(&format!("{BASE}\n[scheduler]\npoll = 3\n"), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field"), "{e}");
        let e = Config::from_parts(BASE, env(&[("ENKF_SIDECAR_DATABASE_TLS", "prefer")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown variant"), "{e}");
    }

    #[test]
    fn rotation_needs_a_configured_pair() {
        let no_user = "[database]\nca_file = \"/etc/ca.pem\"\n[secrets]\nsecret_id = \"app\"\n";
        let e = Config::from_parts(no_user, env(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("rotation.user is required"), "{e}");
        // Without rotation (a scheduler-only host) no pair is needed.
        assert!(
            Config::from_parts(no_user, env(&[("ENKF_SIDECAR_ROTATION_ENABLED", "false")])).is_ok()
        );
        let long = "x".repeat(58);
        let e = Config::from_parts(BASE, env(&[("ENKF_SIDECAR_ROTATION_USER", &long)]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("longer than 63 bytes"), "{e}");
        let e = Config::from_parts(
            BASE,
            env(&[
                ("ENKF_SIDECAR_ROTATION_LOCK_TIMEOUT", "2m"),
                ("ENKF_SIDECAR_ROTATION_STATEMENT_TIMEOUT", "1m"),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("lock_timeout"), "{e}");
    }

    #[test]
    fn the_example_file_is_valid() {
        let c = Config::from_parts(include_str!("../enkf-sidecar.example.toml"), env(&[])).unwrap();
        assert_eq!(c.rotation.period.0, Duration::from_secs(30 * 86400));
        assert_eq!(c.http.listen, "127.0.0.1:9187");
        // Every setting of the reference appears in the example, at least commented out.
        let text = include_str!("../enkf-sidecar.example.toml");
        for s in SETTINGS {
            assert!(text.contains(&format!("{} =", s.key)), "{}", s.key);
        }
    }

    #[test]
    fn a_submission_needs_the_hubs_abbreviations() {
        let base = "[database]\ntls = \"disable\"\n[secrets]\nsource = \"file\"\nfile = \"/x.json\"\n[scheduler]\nsubmission_directory = \"/tmp/s\"\n";
        let with = |extra: &str| Config::from_parts(&format!("{base}{extra}"), env(&[]));
        let c = with("submission_team = \"pgenkf\"\n").unwrap();
        let s = c.scheduler.submission().unwrap();
        assert_eq!(
            (s.team.as_str(), s.model.as_str(), s.partial),
            ("pgenkf", "combined", false)
        );
        assert_eq!(
            with("").unwrap().scheduler.submission().unwrap().team,
            "pg_enkf"
        );
        for bad in [
            "submission_team = \"pg-enkf\"\n",
            "submission_team = \"a_very_long_team_name\"\n",
            "submission_team = \"t\"\nsubmission_model = \"ensemble\"\n",
        ] {
            assert!(with(bad).is_err(), "{bad}");
        }
        // No directory: no file, whatever else is set.
        let none = Config::from_parts(
            "[database]\ntls = \"disable\"\n[secrets]\nsource = \"file\"\nfile = \"/x.json\"\n",
            env(&[]),
        )
        .unwrap();
        assert!(none.scheduler.submission().is_none());
    }

    #[test]
    fn plain_and_file_modes() {
        let c = Config::from_parts(
            "[database]\ntls = \"disable\"\n[secrets]\nsource = \"file\"\nfile = \"/x.json\"\n",
            env(&[]),
        )
        .unwrap();
        assert_eq!(c.database.tls, TlsMode::Disable);
        assert_eq!(c.secrets.source, SecretSource::File);
        assert!(Config::from_parts("[secrets]\nsource = \"file\"\n", env(&[])).is_err());
    }

    #[test]
    fn every_setting_is_a_real_field() {
        // Each documented setting must deserialize into the struct: deny_unknown_fields
        // rejects any key that the struct does not have.
        for s in SETTINGS {
            let value = match s.kind {
                Kind::Int => "20",
                Kind::Bool => "true",
                Kind::Text => match s.key {
                    "tls" => "verify-full",
                    "source" => "aws",
                    "password_source" => "os-rng",
                    "listen" => "127.0.0.1:1",
                    "ca_file" => "/etc/ca.pem",
                    "secret_id" => "app",
                    // Must stay below statement_timeout's default.
                    "lock_timeout" => "1s",
                    k if k.contains("interval")
                        || k.contains("period")
                        || k.contains("grace")
                        || k.contains("timeout")
                        || k.starts_with("backoff") =>
                    {
                        "1h"
                    }
                    _ => "x",
                },
            };
            let r = Config::from_parts(BASE, env(&[(&s.env_name(), value)]));
            assert!(r.is_ok(), "{}: {:?}", s.env_name(), r.err());
        }
        assert!(settings_help().contains("ENKF_SIDECAR_ROTATION_PREVIOUS_GRACE"));
    }
}
