//! `enkf.runs`: the provenance row of every assimilation and forecast, and of every failed
//! scheduled attempt (`enkf.record_failed_run`). Written once, complete, at the end of a run:
//! runs are append-only, and only pg_enkf's functions write them (sql/security.sql), with the
//! caller's identity filled in by the database (`run_by`, `session_user_name`).

use pgrx::datum::{Date, DatumWithOid, TimestampWithTimeZone};
use pgrx::prelude::*;
use pgrx::spi::SpiClient;

use super::catalog::{self, Twin};
use super::dates::date;
use crate::error::{null_argument, raise};
use crate::spi;

/// A run's id, taken when it starts (its checkpoints and forecasts carry it), and its start.
pub struct RunStart {
    pub id: i64,
    pub started: Option<TimestampWithTimeZone>,
}

pub fn start(client: &SpiClient<'_>) -> RunStart {
    let row = spi::select(
        client,
        "SELECT pg_catalog.nextval('enkf.runs_run_id_seq'::pg_catalog.regclass), pg_catalog.clock_timestamp()",
        &[],
        |r| Ok((r.get::<i64>(1)?, r.get::<TimestampWithTimeZone>(2)?)),
    );
    let (id, started) = row.into_iter().next().unwrap_or((None, None));
    RunStart {
        id: id.unwrap_or_default(),
        started,
    }
}

/// What a finished run records beside its twin, kind and start.
#[derive(Default)]
pub struct Outcome {
    pub through: Option<TimestampWithTimeZone>,
    pub locations: Option<i32>,
    pub observations: Option<i32>,
    pub reassimilated: Option<i32>,
    pub first_week: Option<i32>,
    pub last_week: Option<i32>,
    /// The newest publication day among the versions read (twins over tables of versions).
    pub as_of: Option<i32>,
    pub detail: Option<String>,
    /// What the run fitted across locations (the pooled model), as JSON.
    pub model_fit: Option<String>,
}

fn nullable<'a, T: pgrx::IntoDatum + 'a>(v: Option<T>) -> DatumWithOid<'a> {
    v.map_or(DatumWithOid::null::<T>(), DatumWithOid::from)
}

/// Writes the row of a succeeded run.
pub fn record(client: &mut SpiClient<'_>, twin: &Twin, kind: &str, run: &RunStart, o: Outcome) {
    spi::update(
        client,
        "INSERT INTO enkf.runs (run_id, twin_id, kind, status, started_at, through, source, config, config_hash,
                                extension_version, seed, locations, observations, reassimilated, first_week,
                                last_week, detail, as_of, model_fit)
         VALUES ($1, $2, $3, 'succeeded', $4, $5, $6, $7::pg_catalog.jsonb, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18::pg_catalog.jsonb)",
        &[
            DatumWithOid::from(run.id),
            DatumWithOid::from(twin.id),
            DatumWithOid::from(kind),
            nullable(run.started),
            nullable(o.through),
            DatumWithOid::from(twin.observations.as_str()),
            DatumWithOid::from(twin.config_json.as_str()),
            DatumWithOid::from(twin.config_hash.as_str()),
            DatumWithOid::from(env!("CARGO_PKG_VERSION")),
            DatumWithOid::from(twin.config.seed),
            nullable(o.locations),
            nullable(o.observations),
            nullable(o.reassimilated),
            nullable::<Date>(o.first_week.map(date)),
            nullable::<Date>(o.last_week.map(date)),
            nullable(o.detail),
            nullable::<Date>(o.as_of.map(date)),
            nullable(o.model_fit),
        ],
    );
}

/// `enkf.record_failed_run`: records a failed attempt at a twin's assimilation or forecast
/// (the scheduler's, whose work was rolled back) with the caller's identity. The detail is
/// the SQLSTATE only: error messages can quote values and location names, and the run log is
/// read by roles that row-level security keeps from them.
#[pg_extern(
    volatile,
    parallel_unsafe,
    security_invoker,
    schema = "enkf",
    name = "record_failed_run"
)]
#[search_path(pg_catalog, pg_temp)]
fn record_failed_run(
    twin: Option<&str>,
    kind: Option<&str>,
    started_at: Option<TimestampWithTimeZone>,
    sqlstate: Option<&str>,
) -> i64 {
    let name = twin.unwrap_or_else(|| null_argument("twin"));
    let kind = kind.unwrap_or_else(|| null_argument("kind"));
    let started_at = started_at.unwrap_or_else(|| null_argument("started_at"));
    let sqlstate = sqlstate.unwrap_or_else(|| null_argument("sqlstate"));
    if kind != "assimilate" && kind != "forecast" {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("kind must be 'assimilate' or 'forecast', got \"{kind}\""),
            None,
            "name the function whose attempt failed",
        );
    }
    if !(sqlstate.len() == 5
        && sqlstate
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()))
    {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("sqlstate must be a five-character SQLSTATE such as 57014, got \"{sqlstate}\""),
            None,
            "pass the SQLSTATE of the error, not its message",
        );
    }
    Spi::connect_mut(|client| {
        let id = catalog::lock_by_name(client, name);
        let run = start(client);
        spi::update(
            client,
            "INSERT INTO enkf.runs (run_id, twin_id, kind, status, started_at, source, config, config_hash,
                                    extension_version, seed, detail)
             SELECT $1, t.twin_id, $3, 'failed', LEAST($4, pg_catalog.clock_timestamp()),
                    t.observations::pg_catalog.text, t.config, t.config_hash, $5,
                    coalesce((t.config OPERATOR(pg_catalog.->>) 'seed')::pg_catalog.int8, 0),
                    pg_catalog.format('enkf.%s failed with SQLSTATE %s', $3, $6)
               FROM enkf.twins t WHERE t.twin_id = $2",
            &[
                DatumWithOid::from(run.id),
                DatumWithOid::from(id),
                DatumWithOid::from(kind),
                DatumWithOid::from(started_at),
                DatumWithOid::from(env!("CARGO_PKG_VERSION")),
                DatumWithOid::from(sqlstate),
            ],
        );
        run.id
    })
}
