//! Small helpers over pgrx's SPI: results copied out and their memory released at once, so that
//! loops over thousands of locations do not accumulate tuple tables until the call ends.
//!
//! Every function of pg_enkf runs with `search_path = pg_catalog, pg_temp`, and the SQL text
//! here and in the twin's modules also names every function with its schema: nothing a user
//! creates in another schema is ever called. (Operators are left unqualified: with that
//! search_path they resolve in pg_catalog only, as pg_temp is never searched for operators.)

pub mod bulk;
pub mod merge;

use pgrx::datum::DatumWithOid;
use pgrx::pg_sys;
use pgrx::spi::{SpiClient, SpiHeapTupleData, SpiResult};
use pgrx::PgSqlErrorCode;

use crate::error::raise;

/// Unwraps an SPI-level result (errors raised by PostgreSQL itself keep their own SQLSTATE and
/// never reach here).
pub fn ok<T>(r: SpiResult<T>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => raise(
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            format!("pg_enkf: SPI failed: {e}"),
            None,
            "this is a bug in pg_enkf: please report it with the statement that raised it",
        ),
    }
}

/// Runs a query and maps each row with `f`, then frees the tuple table.
pub fn select<T>(
    client: &SpiClient<'_>,
    query: &str,
    args: &[DatumWithOid<'_>],
    mut f: impl FnMut(&SpiHeapTupleData<'_>) -> SpiResult<T>,
) -> Vec<T> {
    let table = ok(client.select(query, None, args));
    let mut out = Vec::with_capacity(table.len());
    for row in table {
        out.push(ok(f(&row)));
    }
    free_tuptable();
    out
}

/// Runs one of pg_enkf's own statements that change its tables and returns rows (INSERT ...
/// RETURNING), with `enkf.writing()` true (see `crate::writes`): the statement must read
/// nothing of the caller's (only its parameters and pg_enkf's tables).
pub fn update_rows<T>(
    client: &mut SpiClient<'_>,
    query: &str,
    args: &[DatumWithOid<'_>],
    mut f: impl FnMut(&SpiHeapTupleData<'_>) -> SpiResult<T>,
) -> Vec<T> {
    let table = crate::writes::own_write(|| ok(client.update(query, None, args)));
    let mut out = Vec::with_capacity(table.len());
    for row in table {
        out.push(ok(f(&row)));
    }
    free_tuptable();
    out
}

/// Runs one of pg_enkf's own statements that change its tables, with `enkf.writing()` true:
/// the statement must read nothing of the caller's (see `update_rows`).
pub fn update(client: &mut SpiClient<'_>, query: &str, args: &[DatumWithOid<'_>]) {
    crate::writes::own_write(|| ok(client.update(query, None, args)));
    free_tuptable();
}

/// Releases the last SPI result (SPI keeps each until the connection ends otherwise).
pub fn free_tuptable() {
    // SAFETY: SPI_tuptable is either NULL or the table of the last command; both are accepted.
    unsafe {
        if !pg_sys::SPI_tuptable.is_null() {
            pg_sys::SPI_freetuptable(pg_sys::SPI_tuptable);
            pg_sys::SPI_tuptable = std::ptr::null_mut();
        }
    }
}

/// Reads a 1-row, 1-column result.
pub fn one<T: pgrx::FromDatum + pgrx::IntoDatum>(
    client: &SpiClient<'_>,
    query: &str,
    args: &[DatumWithOid<'_>],
) -> Option<T> {
    select(client, query, args, |r| r.get::<T>(1))
        .into_iter()
        .next()
        .flatten()
}

/// `f` run with work_mem at least `least` for the transaction, the caller's setting put back
/// afterwards (an error in `f` ends the transaction, which puts it back too).
pub fn with_work_mem<'c, T>(
    client: &mut SpiClient<'c>,
    least: &str,
    f: impl FnOnce(&mut SpiClient<'c>) -> T,
) -> T {
    let before = raise_work_mem(client, least);
    let out = f(client);
    restore_work_mem(client, before);
    out
}

/// Raises work_mem to at least `least` for the transaction; returns the setting before.
pub fn raise_work_mem(client: &SpiClient<'_>, least: &str) -> Option<String> {
    let before = one::<String>(client, "SELECT pg_catalog.current_setting('work_mem')", &[]);
    one::<String>(
        client,
        "SELECT pg_catalog.set_config('work_mem', $1, true)
          WHERE pg_catalog.pg_size_bytes(pg_catalog.current_setting('work_mem')) < pg_catalog.pg_size_bytes($1)",
        &[DatumWithOid::from(least)],
    );
    before
}

/// Puts back the work_mem `raise_work_mem` returned.
pub fn restore_work_mem(client: &SpiClient<'_>, before: Option<String>) {
    if let Some(before) = before {
        one::<String>(
            client,
            "SELECT pg_catalog.set_config('work_mem', $1, true)",
            &[DatumWithOid::from(before)],
        );
    }
}
