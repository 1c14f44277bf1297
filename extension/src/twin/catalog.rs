//! Twins in `enkf.twins`, and checks of the caller's tables against what a twin needs: columns
//! present, of usable types. Every failure names the argument or column and gives a hint.

use std::collections::HashMap;

use enkf_core::twin::suppression::Censoring;
use enkf_core::twin::{ed, TwinConfig};
use pgrx::datum::DatumWithOid;
use pgrx::spi::SpiClient;
use pgrx::PgSqlErrorCode;

use crate::error::raise;
use crate::spi;

/// Advisory lock key space of pg_enkf (`ENKF`): the sidecar takes the same lock per twin, so
/// two schedulers or a manual run never work on one twin at once.
pub const LOCK_CLASS: i32 = 0x454E_4B46;

#[derive(Debug, Clone)]
pub struct Twin {
    pub id: i64,
    pub name: String,
    /// The observation and location tables: qualified, quoted names resolved from the OIDs
    /// stored with the twin, at this run (a renamed table is followed; a dropped one refused).
    pub observations: String,
    pub locations: String,
    pub time_column: String,
    pub location_column: String,
    pub value_column: String,
    /// The column of the publication day of each version, for a table that keeps versions.
    pub as_of_column: Option<String>,
    /// The column of the week's ED-visit proportion: the twin's second observed stream
    /// (`config.ed.enabled` exactly when it is set).
    pub ed_column: Option<String>,
    pub members: usize,
    pub config: TwinConfig,
    pub config_json: String,
    pub config_hash: String,
    /// Week end of the first week of the twin's grid (PostgreSQL day number).
    pub origin: Option<i32>,
    /// A protected twin under a suppression threshold above 1: how its small counts enter every
    /// model (docs/hipaa.md); None for public aggregate data.
    pub censoring: Option<Censoring>,
}

impl Twin {
    /// What the models' inputs were censored below (`inputs_censored_below` of the rows a run
    /// writes): None for counts that entered as they are.
    pub fn censored_below(&self) -> Option<f64> {
        self.censoring.map(|c| c.below())
    }
}

/// The stored row of a twin, before its tables are resolved and checked.
struct Stored {
    id: i64,
    name: String,
    observations: Option<String>,
    locations: Option<String>,
    time_column: String,
    location_column: String,
    value_column: String,
    as_of_column: Option<String>,
    ed_column: Option<String>,
    members: i32,
    config_json: String,
    config_hash: String,
    origin: Option<i32>,
    creator: Option<String>,
    creator_reads: bool,
    protected: bool,
}

fn not_found(name: &str) -> ! {
    raise(
        PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
        format!("twin \"{name}\" does not exist"),
        None,
        "create it with enkf.create_twin(); SELECT name FROM enkf.twin_summary lists the twins you can see",
    )
}

fn stored(client: &SpiClient<'_>, id: i64) -> Option<Stored> {
    // The table names come from the OIDs (NULL when a table was dropped), and whether the
    // twin's creator can still read both tables (false when the creator was dropped).
    spi::select(
        client,
        "SELECT t.twin_id, t.name,
                (SELECT pg_catalog.format('%I.%I', n.nspname, c.relname) FROM pg_catalog.pg_class c
                   JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = t.observations),
                (SELECT pg_catalog.format('%I.%I', n.nspname, c.relname) FROM pg_catalog.pg_class c
                   JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = t.locations),
                t.time_column::pg_catalog.text, t.location_column::pg_catalog.text,
                t.value_column::pg_catalog.text, t.members, t.config::pg_catalog.text, t.config_hash,
                t.origin, r.rolname::pg_catalog.text,
                r.oid IS NOT NULL
                  AND EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = t.observations)
                  AND EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = t.locations)
                  AND pg_catalog.has_table_privilege(r.oid, t.observations, 'SELECT')
                  AND pg_catalog.has_table_privilege(r.oid, t.locations, 'SELECT'),
                t.as_of_column::pg_catalog.text, t.ed_column::pg_catalog.text,
                t.classification = 'protected'
           FROM enkf.twins t LEFT JOIN pg_catalog.pg_roles r ON r.oid = t.created_by
          WHERE t.twin_id = $1",
        &[DatumWithOid::from(id)],
        |r| {
            Ok(Stored {
                id: r.get::<i64>(1)?.unwrap_or_default(),
                name: r.get::<String>(2)?.unwrap_or_default(),
                observations: r.get::<String>(3)?,
                locations: r.get::<String>(4)?,
                time_column: r.get::<String>(5)?.unwrap_or_default(),
                location_column: r.get::<String>(6)?.unwrap_or_default(),
                value_column: r.get::<String>(7)?.unwrap_or_default(),
                members: r.get::<i32>(8)?.unwrap_or_default(),
                config_json: r.get::<String>(9)?.unwrap_or_default(),
                config_hash: r.get::<String>(10)?.unwrap_or_default(),
                origin: r.get::<pgrx::datum::Date>(11)?.map(|d| d.to_pg_epoch_days()),
                creator: r.get::<String>(12)?,
                creator_reads: r.get::<bool>(13)?.unwrap_or(false),
                as_of_column: r.get::<String>(14)?,
                ed_column: r.get::<String>(15)?,
                protected: r.get::<bool>(16)?.unwrap_or(true),
            })
        },
    )
    .into_iter()
    .next()
}

/// Loads a twin by name for reading its results (no lock); 42704 if there is none.
pub fn load(client: &SpiClient<'_>, name: &str) -> Twin {
    let id = twin_id(client, name);
    checked(stored(client, id).unwrap_or_else(|| not_found(name)))
}

/// Locks a twin for the rest of the transaction, then loads it: a run that waited for another
/// sees the configuration and state that one left. 42704 if there is none (or it was dropped
/// while this waited).
pub fn load_locked(client: &SpiClient<'_>, name: &str) -> Twin {
    let id = twin_id(client, name);
    lock(client, id);
    match stored(client, id) {
        Some(s) if s.name == name => checked(s),
        _ => not_found(name),
    }
}

/// Locks a twin by name and returns its id, without loading or checking it (for dropping).
pub fn lock_by_name(client: &SpiClient<'_>, name: &str) -> i64 {
    let id = twin_id(client, name);
    lock(client, id);
    if stored(client, id).is_none_or(|s| s.name != name) {
        not_found(name);
    }
    id
}

fn twin_id(client: &SpiClient<'_>, name: &str) -> i64 {
    spi::one::<i64>(
        client,
        "SELECT twin_id FROM enkf.twins WHERE name = $1",
        &[DatumWithOid::from(name)],
    )
    .unwrap_or_else(|| not_found(name))
}

/// Refuses a twin whose tables are gone or whose creator may no longer read them, whose
/// configuration does not parse, or whose ensemble exceeds the memory limits now in force.
fn checked(s: Stored) -> Twin {
    let name = &s.name;
    let (observations, locations) = match (s.observations, s.locations) {
        (Some(o), Some(l)) => (o, l),
        (o, _) => raise(
            PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
            format!(
                "{}: the table twin \"{name}\" was created over no longer exists",
                if o.is_none() { "observations" } else { "locations" }
            ),
            None,
            "a twin reads the table it was created over, by identity: drop the twin and create it again over the new table",
        ),
    };
    if !s.creator_reads {
        raise(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!(
                "observations: the creator of twin \"{name}\" ({}) may no longer read {observations} or {locations}",
                s.creator.as_deref().unwrap_or("a dropped role")
            ),
            Some("a twin only runs over data its creator may read, so that no one obtains through a twin what their own grants withhold".into()),
            "grant SELECT on both tables back to the creator, or drop and re-create the twin by a role that may read them",
        );
    }
    let config = match TwinConfig::from_json(&s.config_json) {
        Ok(c) => c,
        Err(e) => raise(
            PgSqlErrorCode::ERRCODE_DATA_CORRUPTED,
            format!("twin \"{name}\" has an invalid stored configuration: {e}"),
            None,
            "restore enkf.twins.config from a backup, or drop and re-create the twin",
        ),
    };
    let members = usize::try_from(s.members).unwrap_or(0);
    check_size(members, &config);
    if config.ed.enabled != s.ed_column.is_some() {
        raise(
            PgSqlErrorCode::ERRCODE_DATA_CORRUPTED,
            format!("twin \"{name}\" has ed.enabled = {} in its configuration but {} ed_column", config.ed.enabled, if s.ed_column.is_some() { "an" } else { "no" }),
            None,
            "the ED-visit stream is turned on by ed_column at enkf.create_twin; drop and re-create the twin",
        );
    }
    Twin {
        id: s.id,
        name: s.name,
        observations,
        locations,
        time_column: s.time_column,
        location_column: s.location_column,
        value_column: s.value_column,
        as_of_column: s.as_of_column,
        ed_column: s.ed_column,
        members,
        config,
        config_json: s.config_json,
        config_hash: s.config_hash,
        origin: s.origin,
        // The threshold in force at this run: what a reader is shown of counts from now on.
        censoring: s
            .protected
            .then(|| Censoring::at(crate::guc::SUPPRESSION_THRESHOLD.get() as f64))
            .flatten(),
    }
}

/// Refuses a twin whose per-location arrays exceed `enkf.max_ensemble_elements` (54000): its
/// ensemble (state x members) and its forecast's draws (members x draws per member). Checked
/// at creation and at every run, since the setting may have been lowered since.
pub fn check_size(members: usize, config: &TwinConfig) {
    let max = crate::guc::MAX_ENSEMBLE_ELEMENTS.get().max(1) as usize;
    let ensemble = members.saturating_mul(ed::state_dim(config));
    let draws = members.saturating_mul(config.forecast.draws_per_member as usize);
    if ensemble > max {
        raise(
            PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            format!("members: {members} members give {ensemble} ensemble values per location, more than enkf.max_ensemble_elements = {max}"),
            None,
            "use fewer members, or ask a superuser to raise enkf.max_ensemble_elements",
        );
    }
    if draws > max {
        raise(
            PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            format!(
                "config: forecast.draws_per_member = {} with {members} members gives {draws} samples per location and week, more than enkf.max_ensemble_elements = {max}",
                config.forecast.draws_per_member
            ),
            None,
            "lower forecast.draws_per_member or the members, or ask a superuser to raise enkf.max_ensemble_elements",
        );
    }
}

/// Serialises work on one twin for the rest of the transaction (re-entrant for the session).
///
/// A run that waited here must then see what the run it waited for committed. pgrx runs SPI
/// queries read-only, on the snapshot of the calling statement (taken before the wait), until
/// the transaction has an id; so the id is taken now, and every later query of the run reads
/// a fresh snapshot (under READ COMMITTED, which the scheduler uses).
pub fn lock(client: &SpiClient<'_>, twin_id: i64) {
    spi::select(
        client,
        "SELECT pg_catalog.pg_advisory_xact_lock($1, $2)",
        &[
            DatumWithOid::from(LOCK_CLASS),
            DatumWithOid::from(twin_id as i32),
        ],
        |_| Ok(()),
    );
    // SAFETY: assigns the transaction an id if it has none (or raises); no other effect.
    unsafe {
        pgrx::pg_sys::GetCurrentTransactionId();
    }
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
        "SELECT pg_catalog.format_type(a.atttypid, NULL), a.attnotnull
           FROM pg_catalog.pg_attribute a
          WHERE a.attrelid = $1::pg_catalog.regclass AND a.attname = $2 AND a.attnum > 0 AND NOT a.attisdropped",
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
        "name the columns with time_column, location_column, value_column (and as_of_column, ed_column) at enkf.create_twin, or expose them under those names through a view",
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

/// Checks the as-of column of a table of versions: a date or a timestamp.
pub fn check_as_of(client: &SpiClient<'_>, relation: &str, as_of: &str) -> TimeKind {
    let c = column(client, relation, as_of)
        .unwrap_or_else(|| missing_column("as_of_column", relation, as_of));
    match c.type_name.as_str() {
        "date" => TimeKind::Date,
        "timestamp without time zone" => TimeKind::Timestamp,
        "timestamp with time zone" => TimeKind::Timestamptz,
        other => wrong_type(
            "as_of_column",
            relation,
            as_of,
            other,
            "date, timestamp or timestamptz (the day each version was published)",
        ),
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
/// the runs were purged. Only pg_enkf's functions write runs (sql/security.sql), so no role
/// can plant a run that claims a later week.
pub fn last_week(client: &SpiClient<'_>, twin_id: i64) -> Option<i32> {
    let from_runs = spi::one::<pgrx::datum::Date>(
        client,
        "SELECT pg_catalog.max(last_week) FROM enkf.runs
          WHERE twin_id = $1 AND kind = 'assimilate' AND status = 'succeeded'",
        &[DatumWithOid::from(twin_id)],
    );
    from_runs
        .or_else(|| {
            spi::one::<pgrx::datum::Date>(
                client,
                "SELECT pg_catalog.max(week_end) FROM enkf.checkpoints WHERE twin_id = $1",
                &[DatumWithOid::from(twin_id)],
            )
        })
        .map(|d| d.to_pg_epoch_days())
}

/// 'XX001' for a stored analysis that is not state_dim x members values (7 rows per member, 10
/// with the ED stream): the checkpoints table
/// was written by something other than pg_enkf.
pub fn corrupt_checkpoint(twin: &Twin, location: &str, week: i32, len: usize) -> ! {
    raise(
        PgSqlErrorCode::ERRCODE_DATA_CORRUPTED,
        format!(
            "checkpoint of twin \"{}\", location \"{location}\", week {} has {len} values, expected {}",
            twin.name,
            enkf_core::dates::iso(week),
            ed::state_dim(&twin.config) * twin.members
        ),
        None,
        "the checkpoints table was changed outside pg_enkf; drop and re-create the twin",
    )
}

/// The largest population a location may have (people).
const MAX_POPULATION: f64 = 1e10;

/// Populations of the twin's locations, read under the caller; every one in (0, 1e10].
pub fn populations(client: &SpiClient<'_>, twin: &Twin) -> HashMap<String, f64> {
    let rows = spi::select(
        client,
        &format!(
            "SELECT (location)::pg_catalog.text, (population)::pg_catalog.float8 FROM {}",
            twin.locations
        ),
        &[],
        |r| Ok((r.get::<String>(1)?, r.get::<f64>(2)?)),
    );
    let mut out = HashMap::with_capacity(rows.len());
    for (loc, pop) in rows {
        let loc = match loc {
            Some(l) => l,
            None => continue,
        };
        match pop {
            None => raise(
                PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
                format!(
                    "locations: population of \"{loc}\" in {} is NULL",
                    twin.locations
                ),
                None,
                "every location needs its population (people), used to scale the compartments",
            ),
            // Above the world's population the compartments' variances overflow float8.
            Some(p) if !(p.is_finite() && p > 0.0 && p <= MAX_POPULATION) => raise(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!(
                    "locations: population of \"{loc}\" in {} is {p}",
                    twin.locations
                ),
                None,
                "populations must be numbers of people: positive, at most 10 billion",
            ),
            Some(p) => {
                out.insert(loc, p);
            }
        }
    }
    out
}

/// Refuses a configuration that turns on the ED-visit stream by itself (22023): the stream
/// is turned on by naming its column, `ed_column` at `enkf.create_twin`, which sets
/// `ed.enabled`; `ed_column` is whether the twin has one.
pub fn check_ed(config: &TwinConfig, ed_column: bool) {
    if config.ed.enabled && !ed_column {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "config: ed.enabled needs the column of the ED-visit proportions",
            None,
            "name it with ed_column => 'the column of the weekly proportion of ED visits due to flu' at enkf.create_twin (which sets ed.enabled)",
        );
    }
}

/// Checks the ED-visit proportion column: present (42703), numeric (42804).
pub fn check_ed_column(client: &SpiClient<'_>, relation: &str, ed_column: &str) {
    let c = column(client, relation, ed_column)
        .unwrap_or_else(|| missing_column("ed_column", relation, ed_column));
    if !is_numeric_type(&c.type_name) {
        wrong_type(
            "ed_column",
            relation,
            ed_column,
            &c.type_name,
            "a numeric type holding proportions in [0, 1] (numeric, real or double precision)",
        );
    }
}
