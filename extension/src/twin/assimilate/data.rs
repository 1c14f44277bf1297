//! What the observation table holds for a run: the source as read (versions included), the
//! span of weeks, and the twin's time grid.

use pgrx::datum::{Date, DatumWithOid, TimestampWithTimeZone};
use pgrx::prelude::*;
use pgrx::spi::SpiClient;

use crate::error::raise;
use crate::spi;
use crate::twin::catalog::{self, Twin};
use crate::twin::dates::date;
use crate::twin::source::Source;

/// The observation table as this run reads it, its columns checked (and the locations').
pub(super) fn source(client: &SpiClient<'_>, twin: &Twin, as_of: Option<i32>) -> Source {
    let (all_versions, always_placed) = Source::checked(client, twin);
    catalog::check_locations(client, &twin.locations);
    let source = versioned(client, twin, all_versions, as_of);
    // Rows that cannot be placed (not looked for when the columns are NOT NULL).
    if !always_placed && spi::one::<bool>(client, &source.unplaced_sql(), &[]) == Some(true) {
        raise(
            PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            format!(
                "observations: {} has rows with a NULL {} or {}",
                twin.observations, twin.time_column, twin.location_column
            ),
            None,
            "every row needs a time and a location; filter such rows out with a view",
        );
    }
    source
}

/// The weeks a run covers: the week of the table's first row, and the last week with data on
/// or before `through`.
pub(super) struct Span {
    pub first: i32,
    pub end_week: i32,
}

pub(super) fn span(
    client: &SpiClient<'_>,
    twin: &Twin,
    source: &Source,
    through: TimestampWithTimeZone,
) -> Span {
    let through_day = spi::one::<Date>(
        client,
        "SELECT ($1::pg_catalog.timestamptz)::pg_catalog.date",
        &[DatumWithOid::from(through)],
    )
    .map(|d| d.to_pg_epoch_days())
    .unwrap_or(i32::MAX);
    let (first, last, finite) = spi::select(
        client,
        &source.span_sql(),
        &[DatumWithOid::from(date(source.last_week_end(through_day)))],
        |r| Ok((r.get::<Date>(1)?, r.get::<Date>(2)?, r.get::<bool>(3)?)),
    )
    .into_iter()
    .next()
    .unwrap_or((None, None, None));
    if finite == Some(false) {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!(
                "observations: {} has a row whose {} is infinite",
                twin.observations, twin.time_column
            ),
            None,
            "every row needs a finite time to fall in a week; filter such rows out with a view",
        );
    }
    let Some(first) = first.map(|d| d.to_pg_epoch_days()) else {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("observations: {} has no rows the caller can read", twin.observations),
            None,
            "load surveillance counts first; if rows exist, check the caller's SELECT grant and row-level security policies",
        );
    };
    let Some(end_week) = last.map(|d| d.to_pg_epoch_days()) else {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!(
                "through: {} is before the first observation (week ending {})",
                enkf_core::dates::iso(through_day),
                enkf_core::dates::iso(first)
            ),
            None,
            "pass a later through, or leave it out to assimilate everything up to now",
        );
    };
    Span { first, end_week }
}

/// The twin's first week (its time grid), set by its first run.
pub(super) fn origin(client: &mut SpiClient<'_>, twin: &Twin, first: i32) -> i32 {
    if let Some(o) = twin.origin {
        return o;
    }
    spi::update(
        client,
        "UPDATE enkf.twins SET origin = $2 WHERE twin_id = $1",
        &[DatumWithOid::from(twin.id), DatumWithOid::from(date(first))],
    );
    first
}

/// The observation table as read by this run: for a twin over a table of versions, each count
/// at its latest version published on or before `as_of` (all versions without it). 22023 for an
/// `as_of` given to a twin without versions.
fn versioned(client: &SpiClient<'_>, twin: &Twin, source: Source, as_of: Option<i32>) -> Source {
    match (&twin.as_of_column, as_of) {
        (Some(column), _) => {
            let kind = catalog::check_as_of(client, &twin.observations, column);
            source.with_versions(column, kind, as_of)
        }
        (None, None) => source,
        (None, Some(_)) => raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("as_of: twin \"{}\" reads no versions (it was created without as_of_column)", twin.name),
            None,
            "create the twin with as_of_column => 'the column of publication days' to replay the data as published",
        ),
    }
}

/// Refuses versions published before the day they describe, in the weeks this run reads.
pub(super) fn check_versions(
    client: &SpiClient<'_>,
    twin: &Twin,
    source: &Source,
    from: i32,
    to: i32,
) {
    let Some(sql) = source.early_versions_sql() else {
        return;
    };
    let early = spi::one::<i64>(
        client,
        &sql,
        &[DatumWithOid::from(date(from)), DatumWithOid::from(date(to))],
    )
    .unwrap_or(0);
    if early > 0 {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!(
                "observations: {early} version(s) in {} have an {} before the time they describe",
                twin.observations,
                twin.as_of_column.as_deref().unwrap_or("as_of")
            ),
            None,
            "the as-of column holds the day each version was published: a count cannot be published before its day; fix or filter those rows in a view",
        );
    }
}
