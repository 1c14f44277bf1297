//! The assimilation scheduler. Schedules live in the database (enkf.twins.config ->
//! 'schedule'); each pass opens a new session with the current credentials, computes every
//! twin's due slot and runs it:
//!
//! ```text
//! BEGIN
//!   pg_try_advisory_xact_lock(ENKF, twin_id)      -- the same key enkf.assimilate takes
//!   read enkf.schedule_slots (twin, slot)         -- settled, or waiting for its retry? skip
//!   SAVEPOINT; enkf.assimilate(twin); enkf.forecast(twin)
//!   ok:    RELEASE; slot row 'succeeded'          -- committed with the runs themselves
//!   error: ROLLBACK TO SAVEPOINT; a 'failed' row in enkf.runs; slot row 'retrying'/'failed'
//! COMMIT
//! ```
//!
//! The slot row commits atomically with the runs, and every attempt happens under the twin's
//! lock, so a slot runs exactly once whatever the number of sidecars. The failure is recorded
//! in the same transaction, after the twin's work was rolled back to the savepoint, so that
//! the lock is still held: no other sidecar can start the same attempt again in between.

pub mod public_error;
pub mod slots;
pub mod submission;

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio_postgres::Client;
use tracing::{info, warn};

use crate::config::SchedulerConfig;
use crate::db::{describe, Connector, DbError};
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};
use slots::{backoff, next_attempt, Schedule, SlotState};

/// Advisory lock class of pg_enkf (`ENKF`), as in extension/src/twin/catalog.rs; the second
/// key is `twin_id as i32`, the same conversion the extension makes.
pub const LOCK_CLASS: i32 = 0x454E_4B46;

#[derive(Debug, thiserror::Error)]
pub enum SchedError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("database: {}", describe(.0))]
    Pg(#[from] tokio_postgres::Error),
}

#[derive(Debug, Clone)]
pub struct Twin {
    pub id: i64,
    pub name: String,
    pub cron: String,
    pub timezone: String,
    pub created_at: DateTime<Utc>,
}

/// What happened to one due slot in this pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotOutcome {
    Succeeded,
    Failed {
        attempt: u32,
        final_attempt: bool,
    },
    /// Another session holds the twin's lock (another sidecar, or a manual run).
    Busy,
    /// Already run, exhausted, or waiting for its retry time.
    Settled,
    /// Cancelled by shutdown: rolled back, not counted as an attempt.
    Interrupted,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct PassSummary {
    pub twins: usize,
    pub due: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub busy: usize,
    pub settled: usize,
    pub invalid_schedules: usize,
    pub interrupted: usize,
}

pub struct Scheduler {
    pub store: Arc<Store>,
    pub connector: Connector,
    pub cfg: SchedulerConfig,
    pub metrics: Arc<Metrics>,
    /// host:pid, recorded in enkf.schedule_slots.sidecar.
    pub sidecar: String,
}

pub fn sidecar_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    format!("{host}:{}", std::process::id())
}

/// Resolves when shutdown is requested (or the sender is gone).
pub async fn shutdown_requested(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

impl Scheduler {
    /// One pass over every scheduled twin.
    pub async fn pass(&self, shutdown: &watch::Receiver<bool>) -> Result<PassSummary, SchedError> {
        let result = self.pass_inner(shutdown).await;
        self.metrics
            .pass(result.as_ref().err().map(|e| e.to_string()));
        result
    }

    async fn pass_inner(
        &self,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<PassSummary, SchedError> {
        // A new session per pass: it logs in with whatever secret is current now, or the last
        // one known while Secrets Manager is unreachable.
        let current = self.store.current_or_cached().await?;
        let mut client = self.connector.connect(&current.secret).await?;
        let rows = client
            .query(
                "SELECT t.twin_id, t.name, t.config OPERATOR(pg_catalog.#>>) '{schedule,cron}'::pg_catalog.text[],
                        coalesce(t.config OPERATOR(pg_catalog.#>>) '{schedule,timezone}'::pg_catalog.text[], 'UTC'),
                        t.created_at, now()
                   FROM enkf.twins t
                  WHERE jsonb_typeof(t.config -> 'schedule') = 'object'
                  ORDER BY t.twin_id",
                &[],
            )
            .await?;
        let mut summary = PassSummary {
            twins: rows.len(),
            ..PassSummary::default()
        };
        for row in rows {
            if *shutdown.borrow() {
                break;
            }
            let twin = Twin {
                id: row.get(0),
                name: row.get(1),
                cron: row.get::<_, Option<String>>(2).unwrap_or_default(),
                timezone: row.get(3),
                created_at: row.get(4),
            };
            let now: DateTime<Utc> = row.get(5);
            let schedule = match Schedule::parse(&twin.cron, &twin.timezone) {
                Ok(s) => s,
                Err(e) => {
                    warn!(twin = %twin.name, error = %e, "skipping twin with an invalid schedule");
                    summary.invalid_schedules += 1;
                    continue;
                }
            };
            let Some(slot) = schedule.due_slot(now, twin.created_at) else {
                continue;
            };
            summary.due += 1;
            match self.run_guarded(&mut client, &twin, slot, shutdown).await? {
                SlotOutcome::Succeeded => summary.succeeded += 1,
                SlotOutcome::Failed { .. } => summary.failed += 1,
                SlotOutcome::Busy => summary.busy += 1,
                SlotOutcome::Settled => summary.settled += 1,
                SlotOutcome::Interrupted => summary.interrupted += 1,
            }
        }
        Ok(summary)
    }

    /// Runs a slot; if shutdown is requested and the grace period passes first, cancels the
    /// running statement so that the transaction rolls back.
    async fn run_guarded(
        &self,
        client: &mut Client,
        twin: &Twin,
        slot: DateTime<Utc>,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<SlotOutcome, SchedError> {
        let cancel = client.cancel_token();
        let grace = self.cfg.shutdown_grace.0;
        let run = self.run_slot(client, twin, slot, shutdown);
        tokio::pin!(run);
        let deadline = async {
            shutdown_requested(shutdown.clone()).await;
            tokio::time::sleep(grace).await;
        };
        tokio::select! {
            r = &mut run => r,
            _ = deadline => {
                warn!(twin = %twin.name, "shutdown grace elapsed: cancelling the running job; its transaction rolls back");
                self.connector.cancel(&cancel).await;
                run.await
            }
        }
    }

    async fn run_slot(
        &self,
        client: &mut Client,
        twin: &Twin,
        slot: DateTime<Utc>,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<SlotOutcome, SchedError> {
        let max = self.cfg.max_attempts;
        let mut tx = client.transaction().await?;
        let locked: bool = tx
            .query_one(
                "SELECT pg_catalog.pg_try_advisory_xact_lock($1, $2)",
                &[&LOCK_CLASS, &(twin.id as i32)],
            )
            .await?
            .get(0);
        if !locked {
            tx.rollback().await?;
            return Ok(SlotOutcome::Busy);
        }
        // Read after the lock is held: under READ COMMITTED this statement sees every slot
        // row committed by whoever held the lock before.
        let state = tx
            .query_opt(
                "SELECT status, attempts, coalesce(next_attempt_at <= clock_timestamp(), true)
                   FROM enkf.schedule_slots WHERE twin_id = $1 AND slot = $2",
                &[&twin.id, &slot],
            )
            .await?
            .map(|r| SlotState::from_row(r.get::<_, &str>(0), r.get(1), r.get(2)))
            .unwrap_or(SlotState::New);
        let Some(attempt) = next_attempt(state, max) else {
            tx.rollback().await?;
            return Ok(SlotOutcome::Settled);
        };
        let lateness = (Utc::now() - slot).num_seconds();
        info!(twin = %twin.name, %slot, attempt, lateness_s = lateness, "running scheduled slot");
        tx.execute(
            "SELECT pg_catalog.set_config('statement_timeout', $1, true)",
            &[&format!("{}ms", self.cfg.run_timeout.0.as_millis())],
        )
        .await?;
        let started: DateTime<Utc> = tx.query_one("SELECT clock_timestamp()", &[]).await?.get(0);
        let timer = Instant::now();

        let sp = tx.savepoint("enkf_sidecar_run").await?;
        let result: Result<Option<i64>, (&'static str, tokio_postgres::Error)> = async {
            let rows = sp
                .query("SELECT * FROM enkf.assimilate($1)", &[&twin.name])
                .await
                .map_err(|e| ("assimilate", e))?;
            let run_id = rows
                .first()
                .and_then(|r| r.try_get::<_, Option<i64>>("run_id").ok().flatten());
            sp.query("SELECT * FROM enkf.forecast($1)", &[&twin.name])
                .await
                .map_err(|e| ("forecast", e))?;
            Ok(run_id)
        }
        .await;
        let seconds = timer.elapsed().as_secs_f64();

        match result {
            Ok(run_id) => {
                sp.commit().await?;
                tx.execute(
                    "INSERT INTO enkf.schedule_slots (twin_id, slot, status, attempts, run_id, sidecar)
                     VALUES ($1, $2, 'succeeded', $3, $4, $5)
                     ON CONFLICT (twin_id, slot) DO UPDATE
                        SET status = 'succeeded', attempts = EXCLUDED.attempts,
                            run_id = EXCLUDED.run_id, sidecar = EXCLUDED.sidecar,
                            next_attempt_at = NULL, updated_at = clock_timestamp()",
                    &[&twin.id, &slot, &(attempt as i32), &run_id, &self.sidecar],
                )
                .await?;
                // Older slots still waiting for a retry would re-run stale work: close them.
                tx.execute(
                    "UPDATE enkf.schedule_slots
                        SET status = 'superseded', next_attempt_at = NULL, updated_at = clock_timestamp()
                      WHERE twin_id = $1 AND slot < $2 AND status = 'retrying'",
                    &[&twin.id, &slot],
                )
                .await?;
                tx.commit().await?;
                self.metrics.run("succeeded", seconds);
                info!(twin = %twin.name, %slot, attempt, seconds, run_id, "scheduled run succeeded");
                self.write_submission(client, twin).await;
                Ok(SlotOutcome::Succeeded)
            }
            Err((kind, e)) => {
                sp.rollback().await?;
                if *shutdown.borrow() {
                    // Cancelled for shutdown: not the twin's fault, so no attempt is used up.
                    tx.rollback().await?;
                    warn!(twin = %twin.name, %slot, "scheduled run interrupted by shutdown and rolled back");
                    return Ok(SlotOutcome::Interrupted);
                }
                let final_attempt = attempt >= max;
                let jitter: f64 = rand::random();
                let delay = backoff(
                    attempt,
                    self.cfg.backoff_base.0,
                    self.cfg.backoff_max.0,
                    jitter,
                );
                // The full message (which may quote data) only in the sidecar's log; the
                // tables readers can see get the SQLSTATE and its name.
                let error = describe(&e);
                let public = format!(
                    "{} in enkf.{kind} (full message in the sidecar's log)",
                    public_error::public_error(&e)
                );
                let detail = if final_attempt {
                    format!("scheduled slot {slot}: attempt {attempt} of {max} failed: {public}; no attempts left")
                } else {
                    format!(
                        "scheduled slot {slot}: attempt {attempt} of {max} failed: {public}; retry in {} s",
                        delay.as_secs()
                    )
                };
                self.record_failed_run(&tx, twin, kind, started, &e, &detail)
                    .await?;
                tx.execute(
                    "INSERT INTO enkf.schedule_slots (twin_id, slot, status, attempts, next_attempt_at,
                                                      last_error, sidecar)
                     VALUES ($1, $2, $3, $4,
                             CASE WHEN $3 = 'retrying'
                                  THEN clock_timestamp() + make_interval(secs => $5) END,
                             $6, $7)
                     ON CONFLICT (twin_id, slot) DO UPDATE
                        SET status = EXCLUDED.status, attempts = EXCLUDED.attempts,
                            next_attempt_at = EXCLUDED.next_attempt_at,
                            last_error = EXCLUDED.last_error, sidecar = EXCLUDED.sidecar,
                            updated_at = clock_timestamp()",
                    &[
                        &twin.id,
                        &slot,
                        &(if final_attempt { "failed" } else { "retrying" }),
                        &(attempt as i32),
                        &delay.as_secs_f64(),
                        &public,
                        &self.sidecar,
                    ],
                )
                .await?;
                tx.commit().await?;
                self.metrics.run("failed", seconds);
                warn!(twin = %twin.name, %slot, attempt, max_attempts = max, kind, error = %error,
                      retry_in_s = delay.as_secs(), final_attempt, "scheduled run failed");
                Ok(SlotOutcome::Failed {
                    attempt,
                    final_attempt,
                })
            }
        }
    }
}

impl Scheduler {
    /// The week's hub file after a successful run, when `scheduler.submission_directory` is
    /// set. A file the database refuses (below the hub's coverage, levels the hub does not
    /// take) or cannot write is a warning and a metric: the run itself succeeded.
    async fn write_submission(&self, client: &Client, twin: &Twin) {
        let Some(cfg) = self.cfg.submission() else {
            return;
        };
        match submission::write(client, &twin.name, &cfg).await {
            Ok(w) => {
                self.metrics.submission(Some(w.coverage));
                info!(twin = %twin.name, file = %w.path.display(), sha256 = %w.sha256, rows = w.rows,
                      locations = w.locations, coverage = w.coverage, "hub submission written");
            }
            Err(e) => {
                self.metrics.submission(None);
                let error = match &e {
                    submission::SubmissionError::Db(db) => describe(db),
                    other => other.to_string(),
                };
                warn!(twin = %twin.name, error = %error, "hub submission not written");
            }
        }
    }

    /// The failed attempt's row in enkf.runs. From pg_enkf 0.3.0 on, enkf.runs takes writes
    /// only from the extension's functions (its provenance cannot be forged), through
    /// `enkf.record_failed_run`, which stores the SQLSTATE only; before that, the sidecar
    /// inserts the row itself, with `detail` (attempt, SQLSTATE, retry; no message text).
    async fn record_failed_run(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        twin: &Twin,
        kind: &str,
        started: DateTime<Utc>,
        error: &tokio_postgres::Error,
        detail: &str,
    ) -> Result<(), SchedError> {
        let recorder: bool = tx
            .query_one(
                "SELECT pg_catalog.to_regprocedure(
                            'enkf.record_failed_run(text, text, timestamptz, text)') IS NOT NULL",
                &[],
            )
            .await?
            .get(0);
        if recorder {
            // An error without a SQLSTATE is a broken connection: the transaction cannot
            // record anything anyway, this only keeps the argument well-formed.
            let sqlstate = error.code().map_or("08006", |c| c.code());
            tx.query_one(
                "SELECT enkf.record_failed_run($1, $2, $3, $4)",
                &[&twin.name, &kind, &started, &sqlstate],
            )
            .await?;
        } else {
            tx.execute(
                "INSERT INTO enkf.runs (twin_id, kind, status, started_at, config, config_hash,
                                        extension_version, seed, source, detail)
                 SELECT t.twin_id, $2, 'failed', $3, t.config, t.config_hash,
                        coalesce((SELECT e.extversion FROM pg_catalog.pg_extension e
                                   WHERE e.extname = 'pg_enkf'), 'unknown'),
                        coalesce((t.config OPERATOR(pg_catalog.->>) 'seed'::pg_catalog.text)::int8, 0), 'enkf-sidecar', $4
                   FROM enkf.twins t WHERE t.twin_id = $1",
                &[&twin.id, &kind, &started, &detail],
            )
            .await?;
        }
        Ok(())
    }
}
