//! Who may read a twin's results (docs/hipaa.md, "Twin outputs follow the source's grants").
//!
//! A twin's checkpoints hold the counts it assimilated, and every forecast is computed from
//! them (the baseline's median is the last count). So reading them requires what reading the
//! observation table requires: SELECT on the columns the twin reads, and, when the table has
//! row-level security of its own, a row of that location the caller can read. An
//! administrator may also publish a twin's results to a role (`enkf.twin_publications`):
//! members then read its forecasts (under the suppression rules of a protected twin) without
//! reading the table; its checkpoints, which hold the counts as they are, stay with the table's
//! grants.
//!
//! The row-level security policies of `enkf.checkpoints`, `enkf.forecasts` and
//! `enkf.target_forecasts`, and the publication views, call these functions once per row, so a
//! twin's answer is worked out once per statement and kept: backends are single-threaded for
//! SQL, so a thread_local cache keyed by (transaction, statement, user) is sufficient; a grant
//! changed by a later statement is seen by that statement. (Keyed by command instead, an
//! assimilation under row-level security would read the table's locations again after each of
//! its writes.)

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

use pgrx::datum::DatumWithOid;
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;

use crate::spi;

/// What the current user may read of one twin.
struct Access {
    /// The twin's results are published to a role the user is a member of.
    published: bool,
    source: Source,
}

/// What the user may read of the twin's observation table.
enum Source {
    /// Not the columns the twin reads (or the table is gone).
    Denied,
    /// Every row: the table has no row-level security that applies to the user.
    All,
    /// The locations of the rows the user's row-level security lets through.
    Locations(HashSet<String>),
}

impl Source {
    fn reads(&self, location: &str) -> bool {
        match self {
            Source::Denied => false,
            Source::All => true,
            Source::Locations(l) => l.contains(location),
        }
    }
}

/// The statement the cached answers belong to: (local transaction, statement start, user).
type Command = (u32, i64, pg_sys::Oid);

#[derive(Default)]
struct Cache {
    command: Option<Command>,
    twins: HashMap<i64, Access>,
}

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::new(Cache::default());
}

fn current_command() -> Command {
    // SAFETY: MyProc is set for every backend that runs SQL; the other two only read state.
    unsafe {
        (
            (*pg_sys::MyProc).lxid,
            pg_sys::GetCurrentStatementStartTimestamp(),
            pg_sys::GetUserId(),
        )
    }
}

/// `enkf.analyses_readable(twin, location)`: whether the current user may read the twin's
/// checkpoints of a location (the counts it assimilated): the observation table's grants and
/// row-level security decide. The policy of `enkf.checkpoints` calls it.
#[pg_extern(
    stable,
    parallel_safe,
    strict,
    schema = "enkf",
    name = "analyses_readable"
)]
#[search_path(pg_catalog, pg_temp)]
pub fn analyses_readable(twin: i64, location: &str) -> bool {
    with_access(twin, |a| a.source.reads(location))
}

/// `enkf.outputs_readable(twin, location)`: whether the current user may read the twin's
/// forecasts of a location: as its checkpoints, or through a publication of the twin to one of
/// the user's roles. The policies of the forecast tables and the publication views call it.
#[pg_extern(
    stable,
    parallel_safe,
    strict,
    schema = "enkf",
    name = "outputs_readable"
)]
#[search_path(pg_catalog, pg_temp)]
pub fn outputs_readable(twin: i64, location: &str) -> bool {
    with_access(twin, |a| a.published || a.source.reads(location))
}

/// `enkf.model_readable(twin, model)`: whether the current user may read a model's forecasts
/// of the twin at all, beyond the location. The pooled model and the combination (which may
/// include it) rest on every location the forecast could read (its coefficients and the
/// aggregate's recent changes): a reader whose row-level security on the observation table
/// keeps some locations from them would learn about those through any location's forecast
/// (in a twin of two counties, the other county's counts). So they are read by users to whom no
/// row-level security of the table applies (conservatively, even a policy that passes every
/// row), or through a publication of the twin. Other models: true.
#[pg_extern(
    stable,
    parallel_safe,
    strict,
    schema = "enkf",
    name = "model_readable"
)]
#[search_path(pg_catalog, pg_temp)]
pub fn model_readable(twin: i64, model: &str) -> bool {
    if model != "pooled" && model != "combined" {
        return true;
    }
    with_access(twin, |a| a.published || matches!(a.source, Source::All))
}

fn with_access(twin: i64, f: impl FnOnce(&Access) -> bool) -> bool {
    let now = current_command();
    let cached = CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.command != Some(now) {
            c.command = Some(now);
            c.twins.clear();
        }
        c.twins.remove(&twin)
    });
    // Worked out outside the borrow: the lookup runs SQL, which may call these functions again.
    let access = cached.unwrap_or_else(|| lookup(twin));
    let answer = f(&access);
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.command == Some(now) {
            c.twins.insert(twin, access);
        }
    });
    answer
}

/// The user's access to a twin, read under the user (readers hold SELECT on the columns of
/// `enkf.twins` this reads, and see their own publications).
fn lookup(twin: i64) -> Access {
    Spi::connect(|client| {
        let row = spi::select(
            client,
            "SELECT CASE WHEN c.oid IS NOT NULL THEN pg_catalog.format('%I.%I', n.nspname, c.relname) END,
                    pg_catalog.quote_ident(t.location_column),
                    coalesce(pg_catalog.has_column_privilege(t.observations, t.time_column, 'SELECT')
                             AND pg_catalog.has_column_privilege(t.observations, t.location_column, 'SELECT')
                             AND pg_catalog.has_column_privilege(t.observations, t.value_column, 'SELECT')
                             AND (t.as_of_column IS NULL
                                  OR pg_catalog.has_column_privilege(t.observations, t.as_of_column, 'SELECT'))
                             AND (t.ed_column IS NULL
                                  OR pg_catalog.has_column_privilege(t.observations, t.ed_column, 'SELECT')), false),
                    EXISTS (SELECT 1 FROM enkf.twin_publications p
                              JOIN pg_catalog.pg_roles r ON r.oid = p.role::pg_catalog.oid
                             WHERE p.twin_id = t.twin_id AND pg_catalog.pg_has_role(r.oid, 'MEMBER'))
               FROM enkf.twins t
               LEFT JOIN pg_catalog.pg_class c ON c.oid = t.observations::pg_catalog.oid
               LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
              WHERE t.twin_id = $1",
            &[DatumWithOid::from(twin)],
            |r| {
                Ok((
                    r.get::<String>(1)?,
                    r.get::<String>(2)?.unwrap_or_default(),
                    r.get::<bool>(3)?.unwrap_or(false),
                    r.get::<bool>(4)?.unwrap_or(false),
                ))
            },
        );
        let Some((table, location_column, columns, published)) = row.into_iter().next() else {
            return Access {
                published: false,
                source: Source::Denied,
            };
        };
        let source = match table {
            Some(table) if columns => source_rows(client, &table, &location_column),
            _ => Source::Denied,
        };
        Access { published, source }
    })
}

/// Whether row-level security limits the user's rows of the table, and to which locations.
fn source_rows(client: &SpiClient<'_>, table: &str, location_column: &str) -> Source {
    let limited = spi::one::<bool>(
        client,
        "SELECT pg_catalog.row_security_active($1::pg_catalog.regclass)",
        &[DatumWithOid::from(table)],
    );
    if limited != Some(true) {
        return Source::All;
    }
    // The caller's own policies run here: with pg_enkf's write flag down, so that nothing they
    // call can pass for one of pg_enkf's own writes (crate::writes).
    let locations = crate::writes::not_writing(|| {
        spi::select(
            client,
            &format!("SELECT DISTINCT ({location_column})::pg_catalog.text FROM {table}"),
            &[],
            |r| Ok(r.get::<String>(1)?.unwrap_or_default()),
        )
    });
    Source::Locations(locations.into_iter().collect())
}
