//! Twins in `enkf.twins`, and checks of the caller's tables against what a twin needs: columns
//! present, of usable types. Every failure names the argument or column and gives a hint.

use enkf_core::twin::TwinConfig;
use pgrx::datum::DatumWithOid;
use pgrx::spi::SpiClient;
use pgrx::PgSqlErrorCode;

use super::spi;
use crate::error::raise;

/// Advisory lock key space of pg_enkf (`ENKF`): the sidecar takes the same lock per twin, so
/// two schedulers or a manual run never work on one twin at once.
pub const LOCK_CLASS: i32 = 0x454E_4B46;

#[derive(Debug, Clone)]
pub struct Twin {
    pub id: i64,
    pub name: String,
    pub observations: String,
    pub locations: String,
    pub time_column: String,
    pub location_column: String,
    pub value_column: String,
    pub members: usize,
    pub config: TwinConfig,
    pub config_json: String,
    pub config_hash: String,
    /// Week end of the first week of the twin's grid (PostgreSQL day number).
    pub origin: Option<i32>,
}

/// Loads a twin by name; 42704 if there is none.
pub fn load(client: &SpiClient<'_>, name: &str) -> Twin {
    let rows = spi::select(
        client,
        "SELECT twin_id, name, observations, locations, time_column::text, location_column::text,
                value_column::text, members, config::text, config_hash, origin
           FROM enkf.twins WHERE name = $1",
        &[DatumWithOid::from(name)],
        |r| {
            Ok(Twin {
                id: r.get::<i64>(1)?.unwrap_or_default(),
                name: r.get::<String>(2)?.unwrap_or_default(),
                observations: r.get::<String>(3)?.unwrap_or_default(),
                locations: r.get::<String>(4)?.unwrap_or_default(),
                time_column: r.get::<String>(5)?.unwrap_or_default(),
                location_column: r.get::<String>(6)?.unwrap_or_default(),
                value_column: r.get::<String>(7)?.unwrap_or_default(),
                members: r.get::<i32>(8)?.unwrap_or_default().max(0) as usize,
                config: TwinConfig::default(),
                config_json: r.get::<String>(9)?.unwrap_or_default(),
                config_hash: r.get::<String>(10)?.unwrap_or_default(),
                origin: r
                    .get::<pgrx::datum::Date>(11)?
                    .map(|d| d.to_pg_epoch_days()),
            })
        },
    );
    let mut twin = match rows.into_iter().next() {
        Some(t) => t,
        None => raise(
            PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            format!("twin \"{name}\" does not exist"),
            None,
            "create it with enkf.create_twin(); SELECT name FROM enkf.twin_summary lists the twins you can see",
        ),
    };
    twin.config = match TwinConfig::from_json(&twin.config_json) {
        Ok(c) => c,
        Err(e) => raise(
            PgSqlErrorCode::ERRCODE_DATA_CORRUPTED,
            format!("twin \"{name}\" has an invalid stored configuration: {e}"),
            None,
            "restore enkf.twins.config from a backup, or drop and re-create the twin",
        ),
    };
    twin
}

/// Serialises work on one twin for the rest of the transaction (re-entrant for the session).
pub fn lock(client: &SpiClient<'_>, twin_id: i64) {
    spi::select(
        client,
        "SELECT pg_advisory_xact_lock($1, $2)",
        &[
            DatumWithOid::from(LOCK_CLASS),
            DatumWithOid::from(twin_id as i32),
        ],
        |_| Ok(()),
    );
}

/// What the observation table's columns guarantee.
pub struct ObservationColumns {
    pub kind: TimeKind,
    /// The time and location columns are both NOT NULL: every row can be placed in a week.
    pub always_placed: bool,
}

/// How the time column is turned into a calendar date.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeKind {
    Date,
    Timestamp,
    /// Taken in UTC, so that every session buckets the same instant into the same week.
    Timestamptz,
}

struct Column {
    type_name: String,
    not_null: bool,
}

fn column(client: &SpiClient<'_>, relation: &str, column_name: &str) -> Option<Column> {
    spi::select(
        client,
        "SELECT format_type(a.atttypid, NULL), a.attnotnull
           FROM pg_catalog.pg_attribute a
          WHERE a.attrelid = $1::regclass AND a.attname = $2 AND a.attnum > 0 AND NOT a.attisdropped",
        &[DatumWithOid::from(relation), DatumWithOid::from(column_name)],
        |r| {
            Ok(Column {
                type_name: r.get::<String>(1)?.unwrap_or_default(),
                not_null: r.get::<bool>(2)?.unwrap_or(false),
            })
        },
    )
    .into_iter()
    .next()
}

fn missing_column(argument: &str, relation: &str, column_name: &str) -> ! {
    raise(
        PgSqlErrorCode::ERRCODE_UNDEFINED_COLUMN,
        format!("{argument}: column \"{column_name}\" does not exist in {relation}"),
        None,
        "name the columns with time_column, location_column and value_column at enkf.create_twin, or expose them under those names through a view",
    )
}

fn wrong_type(argument: &str, relation: &str, column_name: &str, found: &str, wanted: &str) -> ! {
    raise(
        PgSqlErrorCode::ERRCODE_DATATYPE_MISMATCH,
        format!("{argument}: column \"{column_name}\" of {relation} has type {found}, but {wanted} is needed"),
        None,
        "cast the column in a view over the table and give the view to the twin",
    )
}

/// Checks the observation table's columns; returns how to read its time column.
pub fn check_observations(
    client: &SpiClient<'_>,
    relation: &str,
    time: &str,
    location: &str,
    value: &str,
) -> ObservationColumns {
    let t = column(client, relation, time)
        .unwrap_or_else(|| missing_column("time_column", relation, time));
    let kind = match t.type_name.as_str() {
        "date" => TimeKind::Date,
        "timestamp without time zone" => TimeKind::Timestamp,
        "timestamp with time zone" => TimeKind::Timestamptz,
        other => wrong_type(
            "time_column",
            relation,
            time,
            other,
            "date, timestamp or timestamptz",
        ),
    };
    let l = column(client, relation, location)
        .unwrap_or_else(|| missing_column("location_column", relation, location));
    if !is_location_type(&l.type_name) {
        wrong_type(
            "location_column",
            relation,
            location,
            &l.type_name,
            "text, varchar, char or an integer type",
        );
    }
    let v = column(client, relation, value)
        .unwrap_or_else(|| missing_column("value_column", relation, value));
    if !is_numeric_type(&v.type_name) {
        wrong_type(
            "value_column",
            relation,
            value,
            &v.type_name,
            "a numeric type (integer, numeric, real or double precision)",
        );
    }
    ObservationColumns {
        kind,
        always_placed: t.not_null && l.not_null,
    }
}

/// Checks the locations table: columns `location` and `population`.
pub fn check_locations(client: &SpiClient<'_>, relation: &str) {
    let l = column(client, relation, "location").unwrap_or_else(|| {
        raise(
            PgSqlErrorCode::ERRCODE_UNDEFINED_COLUMN,
            format!("locations: column \"location\" does not exist in {relation}"),
            None,
            "the locations table needs columns location (text) and population (numeric)",
        )
    });
    if !is_location_type(&l.type_name) {
        wrong_type(
            "locations",
            relation,
            "location",
            &l.type_name,
            "text, varchar, char or an integer type",
        );
    }
    let p = column(client, relation, "population").unwrap_or_else(|| {
        raise(
            PgSqlErrorCode::ERRCODE_UNDEFINED_COLUMN,
            format!("locations: column \"population\" does not exist in {relation}"),
            None,
            "the locations table needs columns location (text) and population (numeric)",
        )
    });
    if !is_numeric_type(&p.type_name) {
        wrong_type(
            "locations",
            relation,
            "population",
            &p.type_name,
            "a numeric type",
        );
    }
}

fn is_location_type(t: &str) -> bool {
    matches!(
        t,
        "text" | "character varying" | "character" | "name" | "smallint" | "integer" | "bigint"
    )
}

fn is_numeric_type(t: &str) -> bool {
    matches!(
        t,
        "smallint" | "integer" | "bigint" | "numeric" | "real" | "double precision"
    )
}

/// Whether TimescaleDB is installed in this database, and in which schema.
pub fn timescaledb_schema(client: &SpiClient<'_>) -> Option<String> {
    spi::one::<String>(
        client,
        "SELECT n.nspname::text FROM pg_catalog.pg_extension e
           JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'timescaledb'",
        &[],
    )
}

/// The last week the twin has assimilated: from its runs (cheap), or from its checkpoints if
/// the runs were purged.
pub fn last_week(client: &SpiClient<'_>, twin_id: i64) -> Option<i32> {
    let from_runs = spi::one::<pgrx::datum::Date>(
        client,
        "SELECT max(last_week) FROM enkf.runs WHERE twin_id = $1 AND kind = 'assimilate' AND status = 'succeeded'",
        &[DatumWithOid::from(twin_id)],
    );
    from_runs
        .or_else(|| {
            spi::one::<pgrx::datum::Date>(
                client,
                "SELECT max(week_end) FROM enkf.checkpoints WHERE twin_id = $1",
                &[DatumWithOid::from(twin_id)],
            )
        })
        .map(|d| d.to_pg_epoch_days())
}
