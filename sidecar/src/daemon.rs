//! The subcommands: the daemon's tasks (rotation, scheduler, HTTP) with a shared shutdown
//! signal, and the one-shot commands `rotate`, `schedule --once` and `check`.

use std::sync::Arc;

use tokio::sync::watch;
use tracing::{error, info, warn};
use tracing_subscriber::EnvFilter;

use crate::config::{Config, SecretSource, TlsMode};
use crate::db::Connector;
use crate::metrics::Metrics;
use crate::rotation::{self, Outcome, RotationError, Trigger};
use crate::scheduler::{sidecar_id, Scheduler};
use crate::store::{Store, AWSCURRENT, AWSPENDING};

/// JSON lines on stderr (journald and the CloudWatch agent take them as they are). The SDK
/// and driver crates stay at warn: their debug output is noise, never needed in production.
pub fn init_logging(level: &str) {
    let quiet = "aws_config=warn,aws_smithy_runtime=warn,aws_smithy_runtime_api=warn,aws_sdk_secretsmanager=warn,hyper=warn,hyper_util=warn,rustls=warn,tokio_postgres=warn";
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(format!("{level},{quiet}")))
        .unwrap_or_else(|_| EnvFilter::new(format!("info,{quiet}")));
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .init();
}

/// A channel that turns true on SIGTERM or SIGINT.
fn shutdown_channel() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (mut term, mut int) = match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(t), Ok(i)) => (t, i),
            _ => {
                error!("cannot install signal handlers");
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => info!(signal = "SIGTERM", "shutdown requested"),
            _ = int.recv() => info!(signal = "SIGINT", "shutdown requested"),
        }
        let _ = tx.send(true);
        // Keep the sender alive so receivers see `true` rather than a closed channel.
        std::future::pending::<()>().await;
    });
    rx
}

/// Sleeps `d` unless shutdown comes first; returns whether shutdown was requested.
async fn sleep_or_shutdown(d: std::time::Duration, rx: &mut watch::Receiver<bool>) -> bool {
    if *rx.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => *rx.borrow(),
        _ = rx.changed() => true,
    }
}

async fn open(cfg: &Config) -> Result<(Arc<Store>, Connector), String> {
    let connector = Connector::new(&cfg.database).map_err(|e| e.to_string())?;
    let store = Store::open(&cfg.secrets).await.map_err(|e| e.to_string())?;
    Ok((Arc::new(store), connector))
}

pub async fn run(cfg: Config) -> u8 {
    let shutdown = shutdown_channel();
    let (store, connector) = match open(&cfg).await {
        Ok(x) => x,
        Err(e) => {
            error!(error = %e, "cannot start");
            return 1;
        }
    };
    let metrics = Arc::new(Metrics::default());
    info!(version = env!("CARGO_PKG_VERSION"), source = %store.describe(),
          rotation = cfg.rotation.enabled, scheduler = cfg.scheduler.enabled, "enkf-sidecar starting");
    let mut tasks = Vec::new();

    if !cfg.http.listen.is_empty() {
        match tokio::net::TcpListener::bind(&cfg.http.listen).await {
            Ok(listener) => tasks.push(tokio::spawn(crate::http::serve(
                listener,
                metrics.clone(),
                shutdown.clone(),
            ))),
            Err(e) => {
                error!(listen = %cfg.http.listen, error = %e, "cannot listen for /healthz and /metrics");
                return 1;
            }
        }
    }

    if cfg.rotation.enabled {
        if matches!(*store, Store::Aws(_)) {
            let (store, connector, metrics) = (store.clone(), connector.clone(), metrics.clone());
            let rcfg = cfg.rotation.clone();
            let mut rx = shutdown.clone();
            tasks.push(tokio::spawn(async move {
                let Store::Aws(aws) = &*store else { return };
                loop {
                    // SIGTERM drops a rotation in progress: its master sessions close, the
                    // server rolls back an open setSecret, and the next start resumes it.
                    let result = tokio::select! {
                        r = rotation::rotate(aws, &connector, &rcfg, Trigger::IfDue) => r,
                        _ = crate::scheduler::shutdown_requested(rx.clone()) => {
                            warn!("rotation interrupted by shutdown; the next start resumes it");
                            break;
                        }
                    };
                    match result {
                        Ok(Outcome::NotDue) => metrics.rotation_check(None),
                        Ok(Outcome::Rotated { version, user }) => {
                            metrics.rotation("succeeded");
                            metrics.rotation_check(None);
                            info!(%version, %user, "rotation completed");
                        }
                        Ok(Outcome::Resumed { version, user }) => {
                            metrics.rotation("resumed");
                            metrics.rotation_check(None);
                            info!(%version, %user, "interrupted rotation completed");
                        }
                        Err(RotationError::Busy) => {
                            metrics.rotation("busy");
                            metrics.rotation_check(None);
                            info!("rotation skipped: another rotation holds the lock");
                        }
                        Err(e @ RotationError::Refused(_)) => {
                            metrics.rotation("refused");
                            metrics.rotation_check(Some(e.to_string()));
                            error!(error = %e, "rotation refused; /healthz reports it until a check succeeds");
                        }
                        Err(e) => {
                            metrics.rotation("failed");
                            metrics.rotation_check(Some(e.to_string()));
                            error!(error = %e, "rotation failed; retried at the next check, /healthz reports it until then");
                        }
                    }
                    if sleep_or_shutdown(rcfg.check_interval.0, &mut rx).await {
                        break;
                    }
                }
            }));
        } else {
            info!("rotation off: credentials come from a local file");
        }
    }

    if cfg.scheduler.enabled {
        let sched = Scheduler {
            store: store.clone(),
            connector: connector.clone(),
            cfg: cfg.scheduler.clone(),
            metrics: metrics.clone(),
            sidecar: sidecar_id(),
        };
        let mut rx = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                match sched.pass(&rx).await {
                    Ok(s) if s.due > 0 => info!(
                        due = s.due,
                        succeeded = s.succeeded,
                        failed = s.failed,
                        busy = s.busy,
                        settled = s.settled,
                        interrupted = s.interrupted,
                        "scheduler pass"
                    ),
                    Ok(_) => {}
                    Err(e) => error!(error = %e, "scheduler pass failed"),
                }
                if sleep_or_shutdown(sched.cfg.poll_interval.0, &mut rx).await {
                    break;
                }
            }
        }));
    }

    for t in tasks {
        let _ = t.await;
    }
    info!("enkf-sidecar stopped");
    0
}

pub async fn rotate_now(cfg: Config) -> u8 {
    let (store, connector) = match open(&cfg).await {
        Ok(x) => x,
        Err(e) => {
            error!(error = %e, "cannot start");
            eprintln!("enkf-sidecar rotate: {e}");
            return 1;
        }
    };
    let Store::Aws(aws) = &*store else {
        eprintln!("enkf-sidecar rotate: rotation needs secrets.source = \"aws\" (a local credentials file is not rotated)");
        return 2;
    };
    match rotation::rotate(aws, &connector, &cfg.rotation, Trigger::OnDemand).await {
        Ok(outcome) => {
            let (kind, version, user) = match outcome {
                Outcome::Rotated { version, user } => ("rotated", version, user),
                Outcome::Resumed { version, user } => ("resumed", version, user),
                Outcome::NotDue => ("not-due", String::new(), String::new()),
            };
            info!(outcome = kind, %version, %user, "rotate: done");
            println!(
                "{}",
                serde_json::json!({"outcome": kind, "version": version, "user": user})
            );
            0
        }
        Err(e) => {
            if matches!(e, RotationError::Refused(_)) {
                error!(error = %e, "rotate: refused");
            } else {
                error!(error = %e, "rotate: failed");
            }
            eprintln!("enkf-sidecar rotate: {e}");
            1
        }
    }
}

pub async fn schedule_once(cfg: Config) -> u8 {
    let shutdown = shutdown_channel();
    let (store, connector) = match open(&cfg).await {
        Ok(x) => x,
        Err(e) => {
            eprintln!("enkf-sidecar schedule: {e}");
            return 1;
        }
    };
    let sched = Scheduler {
        store,
        connector,
        cfg: cfg.scheduler.clone(),
        metrics: Arc::new(Metrics::default()),
        sidecar: sidecar_id(),
    };
    match sched.pass(&shutdown).await {
        Ok(summary) => {
            println!("{}", serde_json::to_string(&summary).unwrap_or_default());
            0
        }
        Err(e) => {
            error!(error = %e, "scheduler pass failed");
            eprintln!("enkf-sidecar schedule: {e}");
            1
        }
    }
}

fn fail(what: &str, e: impl std::fmt::Display) -> u8 {
    println!("FAILED {what}: {e}");
    eprintln!("enkf-sidecar check failed: {what}: {e}");
    1
}

pub async fn check(cfg: Config) -> u8 {
    println!(
        "ok     configuration (secrets.source = {}, database.tls = {})",
        match cfg.secrets.source {
            SecretSource::Aws => "aws",
            SecretSource::File => "file",
        },
        match cfg.database.tls {
            TlsMode::VerifyFull => "verify-full",
            TlsMode::Disable => "disable",
        }
    );
    let connector = match Connector::new(&cfg.database) {
        Ok(c) => c,
        Err(e) => return fail("TLS", e),
    };
    match (&cfg.database.tls, &cfg.database.ca_file) {
        (TlsMode::VerifyFull, Some(ca)) => {
            println!("ok     TLS: verify-full against the CA in {}", ca.display())
        }
        _ => println!("WARN   TLS is disabled: connections are in plain text"),
    }
    let store = match Store::open(&cfg.secrets).await {
        Ok(s) => s,
        Err(e) => return fail("credentials", e),
    };
    let current = match store.current().await {
        Ok(c) => c,
        Err(e) => return fail("credentials", e),
    };
    println!(
        "ok     credentials: {} (user {}, version {})",
        store.describe(),
        current.secret.username,
        current.version_id.as_deref().unwrap_or("-")
    );
    // The user name in the secret is checked against the configured pair before anything
    // logs in with it.
    let rotation_pair = match (&store, cfg.rotation.enabled) {
        (Store::Aws(aws), true) => {
            let pair = match rotation::pair::Pair::from_config(&cfg.rotation) {
                Ok(p) => p,
                Err(e) => return fail("rotation pair", e),
            };
            match pair.pending_for(aws.secret_id(), &current.secret.username) {
                Ok(p) => {
                    let pending = p.to_string();
                    Some((pair, pending))
                }
                Err(e) => return fail("rotation pair", e),
            }
        }
        _ => None,
    };
    let client = match connector.connect(&current.secret).await {
        Ok(c) => c,
        Err(e) => return fail("database connection", e),
    };
    let row = match client
        .query_one(
            "SELECT current_user::text, current_setting('server_version'),
                    coalesce((SELECT ssl FROM pg_catalog.pg_stat_ssl WHERE pid = pg_backend_pid()), false),
                    to_regclass('enkf.schedule_slots') IS NOT NULL
                      AND has_table_privilege('enkf.schedule_slots', 'INSERT, UPDATE, SELECT')
                      AND has_table_privilege('enkf.runs', 'INSERT')",
            &[],
        )
        .await
    {
        Ok(r) => r,
        Err(e) => return fail("database query", crate::db::describe(&e)),
    };
    let (user, version, ssl, sched_ok): (String, String, bool, bool) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    println!(
        "ok     database: {}:{}/{} as {user}, PostgreSQL {version}, TLS {}",
        current.secret.host,
        current.secret.port,
        current.secret.dbname,
        if ssl { "on" } else { "OFF" }
    );
    if cfg.scheduler.enabled {
        if !sched_ok {
            return fail(
                "scheduler",
                format!("enkf.schedule_slots is missing (pg_enkf not installed in {} or too old) or {user} lacks SELECT/INSERT/UPDATE on it or INSERT on enkf.runs", current.secret.dbname),
            );
        }
        println!("ok     scheduler: enkf.schedule_slots and enkf.runs are writable");
    }
    if let (Store::Aws(aws), true) = (&store, cfg.rotation.enabled) {
        let Some(arn) = current.secret.masterarn.clone() else {
            return fail("rotation", "the secret has no masterarn");
        };
        let master = match aws.get(&arn, None, AWSCURRENT).await {
            Ok(m) => m.secret,
            Err(e) => return fail("master credentials", e),
        };
        let mclient = match connector.connect(&master).await {
            Ok(c) => c,
            Err(e) => return fail("master connection", e),
        };
        let can: bool = match mclient
            .query_one(
                "SELECT rolsuper OR rolcreaterole FROM pg_catalog.pg_roles WHERE rolname = current_user",
                &[],
            )
            .await
        {
            Ok(r) => r.get(0),
            Err(e) => return fail("master query", crate::db::describe(&e)),
        };
        if !can {
            return fail(
                "master credentials",
                format!("{} has neither CREATEROLE nor SUPERUSER", master.username),
            );
        }
        println!(
            "ok     master: {} may create roles and set passwords",
            master.username
        );
        // The same refusals as setSecret, read-only: a tampered secret or a privileged or
        // NOLOGIN role shows up here rather than at the next rotation.
        let Some((pair, pending)) = &rotation_pair else {
            return fail("rotation pair", "not checked");
        };
        let app_db = if master.dbname == current.secret.dbname {
            None
        } else {
            let mut s = master.clone();
            s.dbname = current.secret.dbname.clone();
            match connector.connect(&s).await {
                Ok(c) => Some(c),
                Err(e) => return fail("master connection to the application's database", e),
            }
        };
        if let Err(e) =
            rotation::mirror::refuse_unsafe(app_db.as_ref().unwrap_or(&mclient), pair, pending)
                .await
        {
            return fail("rotation pair", e);
        }
        println!(
            "ok     rotation pair: {} and {} (AWSCURRENT: {}), neither privileged, next password change: {pending}",
            pair.user, pair.clone, current.secret.username
        );
        match aws.versions().await {
            Ok(vs) => {
                if let Some(v) = vs.iter().find(|v| v.has(AWSPENDING) && !v.has(AWSCURRENT)) {
                    println!(
                        "WARN   rotation: version {} is AWSPENDING (an interrupted rotation); `enkf-sidecar rotate` finishes it",
                        v.version_id
                    );
                }
            }
            Err(e) => return fail("ListSecretVersionIds", e),
        }
    }
    if cfg.database.tls == TlsMode::Disable {
        warn!("check passed with TLS disabled");
    }
    println!("check passed");
    0
}
