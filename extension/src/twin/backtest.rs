//! `enkf.backtest`: the real-time backtest as a SQL function. It replays history inside the
//! database: at each reference date it assimilates only the versions of the counts published
//! by then (a publication lag before the reference date), forecasts, and at the end scores
//! every forecast against the latest version of the data, with the built-in baseline made from
//! the same versions beside it. This is how a health department checks a configuration on its
//! own history before trusting it, and the tool defaults are tuned with.

// pgrx needs the returned row tuple spelled out in the #[pg_extern] signature.
#![allow(clippy::type_complexity)]

use enkf_core::scoring::FLUSIGHT_LEVELS;
use pgrx::datum::{Date, DatumWithOid, JsonB, TimestampWithTimeZone};
use pgrx::prelude::*;
use pgrx::spi::SpiClient;

use super::dates::date;
use super::{assimilate, catalog, forecast, score};
use crate::error::{null_argument, null_option, raise};
use crate::spi;
use crate::sqltypes::{RegClass, SqlName};

/// What the backtest replays: the twin and the reference dates.
struct Replay {
    twin: String,
    first: i32,
    last: i32,
    lag: i32,
    horizons: usize,
}

#[allow(clippy::too_many_arguments)]
#[pg_extern(
    volatile,
    parallel_unsafe,
    security_invoker,
    schema = "enkf",
    name = "backtest"
)]
#[search_path(pg_catalog, pg_temp)]
fn backtest(
    twin: Option<&str>,
    observations: Option<RegClass>,
    locations: Option<RegClass>,
    first_reference: Option<Date>,
    last_reference: Option<Date>,
    time_column: default!(Option<SqlName>, "'time'"),
    location_column: default!(Option<SqlName>, "'location'"),
    value_column: default!(Option<SqlName>, "'value'"),
    as_of_column: default!(Option<SqlName>, "'as_of'"),
    members: default!(Option<i32>, 300),
    config: default!(Option<JsonB>, "'{}'"),
    publication_lag: default!(Option<i32>, 7),
    horizons: default!(Option<i32>, 4),
    ed_column: default!(Option<SqlName>, "NULL"),
    classification: default!(Option<&str>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(model, String),
        name!(location, Option<String>),
        name!(horizon, Option<i32>),
        name!(forecasts, i32),
        name!(wis, Option<f64>),
        name!(relative_wis, Option<f64>),
        name!(coverage_50, Option<f64>),
        name!(coverage_95, Option<f64>),
        name!(bias, Option<f64>),
    ),
> {
    let name = twin.unwrap_or_else(|| null_argument("twin"));
    let observations = observations.unwrap_or_else(|| null_argument("observations"));
    let locations = locations.unwrap_or_else(|| null_argument("locations"));
    let first = finite_day("first_reference", first_reference);
    let last = finite_day("last_reference", last_reference);
    if first > last {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!(
                "first_reference {} is after last_reference {}: the range is empty",
                enkf_core::dates::iso(first),
                enkf_core::dates::iso(last)
            ),
            None,
            "give the first and the last reference date to replay, first <= last",
        );
    }
    let lag = publication_lag.unwrap_or_else(|| null_option("publication_lag"));
    if !(1..=365).contains(&lag) {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("publication_lag must lie in 1..365 days, got {lag}"),
            None,
            "the days between a reference date and the last publication day the forecast may use: 7 for the FluSight hub (the release whose data end the Saturday before)",
        );
    }
    let horizons = horizons.unwrap_or_else(|| null_option("horizons"));
    if !(1..=52).contains(&horizons) {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("horizons must lie in 1..52, got {horizons}"),
            None,
            "4 gives horizons 0 to 3 weeks after each reference date",
        );
    }
    let replay = Replay {
        twin: name.to_string(),
        first,
        last,
        lag,
        horizons: horizons as usize,
    };
    let args = TwinArgs {
        observations,
        locations,
        time_column: time_column.unwrap_or_else(|| null_option("time_column")),
        location_column: location_column.unwrap_or_else(|| null_option("location_column")),
        value_column: value_column.unwrap_or_else(|| null_option("value_column")),
        as_of_column,
        members: members.unwrap_or_else(|| null_option("members")),
        config: config.unwrap_or_else(|| null_option("config")),
        ed_column,
        classification: super::create::classification_arg(classification),
    };
    let sums = Spi::connect_mut(|client| {
        prepare_twin(client, &replay, &args);
        run(client, &replay);
        score::accumulate(
            client,
            name,
            &["enkf", "trend", "pooled", "combined"],
            date_opt(first),
            date_opt(last),
            true,
        )
    });
    // Each model's rows, and the baseline's once (from its pairing with the twin's).
    TableIterator::new(sums.into_iter().flat_map(|(model, location, horizon, a)| {
        let relative = a.relative_wis();
        let baseline = (model == "enkf").then(|| {
            (
                "baseline".to_string(),
                location.clone(),
                horizon,
                a.n,
                a.mean(a.wis[1]),
                (a.wis[1] > 0.0).then_some(1.0),
                a.mean(a.cov50[1] as f64),
                a.mean(a.cov95[1] as f64),
                a.mean(a.err[1]),
            )
        });
        std::iter::once((
            model,
            location,
            horizon,
            a.n,
            a.mean(a.wis[0]),
            relative,
            a.mean(a.cov50[0] as f64),
            a.mean(a.cov95[0] as f64),
            a.mean(a.err[0]),
        ))
        .chain(baseline)
    }))
}

fn finite_day(arg: &str, d: Option<Date>) -> i32 {
    let d = d.unwrap_or_else(|| null_argument(arg));
    if !d.is_finite() {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("{arg} must be a finite date"),
            None,
            "reference dates are week ends, e.g. '2023-10-14'",
        );
    }
    d.to_pg_epoch_days()
}

fn date_opt(day: i32) -> Option<Date> {
    Some(date(day))
}

/// The arguments of the twin a backtest creates.
struct TwinArgs {
    observations: RegClass,
    locations: RegClass,
    time_column: SqlName,
    location_column: SqlName,
    value_column: SqlName,
    as_of_column: Option<SqlName>,
    members: i32,
    config: JsonB,
    /// The ED-visit proportion column: the twin's second stream (docs/twin.md).
    ed_column: Option<SqlName>,
    classification: crate::guc::Classification,
}

/// An optional column name as a text parameter (NULL when absent).
fn optional_name(column: &Option<SqlName>) -> DatumWithOid<'_> {
    column.as_ref().map_or(DatumWithOid::null::<String>(), |c| {
        DatumWithOid::from(c.0.as_str())
    })
}

/// Creates the backtest's twin, or checks that an existing one (an earlier backtest, continued)
/// reads the same table and has no forecast from the range's reference dates on.
fn prepare_twin(client: &mut SpiClient<'_>, replay: &Replay, args: &TwinArgs) {
    let existing = spi::one::<i64>(
        client,
        "SELECT twin_id FROM enkf.twins WHERE name = $1",
        &[DatumWithOid::from(replay.twin.as_str())],
    );
    match existing {
        None => create_twin(client, replay, args),
        Some(_) => check_continuation(client, replay, args),
    }
}

/// A new twin for the backtest, created as `enkf.create_twin` would (its checks included).
fn create_twin(client: &mut SpiClient<'_>, replay: &Replay, args: &TwinArgs) {
    spi::select(
        client,
        "SELECT enkf.create_twin($1, $2::pg_catalog.oid::pg_catalog.regclass,
                                 $3::pg_catalog.oid::pg_catalog.regclass, $4::pg_catalog.name,
                                 $5::pg_catalog.name, $6::pg_catalog.name, 'seirh', $7,
                                 $8::pg_catalog.jsonb, $9::pg_catalog.name, $10::pg_catalog.name, $11)",
        &[
            DatumWithOid::from(replay.twin.as_str()),
            DatumWithOid::from(args.observations.0),
            DatumWithOid::from(args.locations.0),
            DatumWithOid::from(args.time_column.0.as_str()),
            DatumWithOid::from(args.location_column.0.as_str()),
            DatumWithOid::from(args.value_column.0.as_str()),
            DatumWithOid::from(args.members),
            DatumWithOid::from(args.config.0.to_string().as_str()),
            optional_name(&args.as_of_column),
            optional_name(&args.ed_column),
            DatumWithOid::from(args.classification.name()),
        ],
        |_| Ok(()),
    );
    // Marked as the backtest's own: only such a twin is continued by a later backtest.
    spi::update(
        client,
        "UPDATE enkf.twins SET backtest = true WHERE name = $1",
        &[DatumWithOid::from(replay.twin.as_str())],
    );
    if args.as_of_column.is_none() {
        pgrx::notice!(
            "enkf.backtest: twin \"{}\" reads the table without versions: every week is taken as first published in its final form, which is not a real-time backtest",
            replay.twin
        );
    }
}

/// An existing twin continues its backtest: over the same table, from after its last
/// reference date.
fn check_continuation(client: &mut SpiClient<'_>, replay: &Replay, args: &TwinArgs) {
    let (same_table, last_reference, backtest) = spi::select(
        client,
        "SELECT t.observations::pg_catalog.oid = $2::pg_catalog.oid
                    AND t.ed_column::pg_catalog.text IS NOT DISTINCT FROM $3,
                (SELECT pg_catalog.max(f.reference_date) FROM enkf.forecasts f WHERE f.twin_id = t.twin_id),
                t.backtest
           FROM enkf.twins t WHERE t.name = $1",
        &[
            DatumWithOid::from(replay.twin.as_str()),
            DatumWithOid::from(args.observations.0),
            optional_name(&args.ed_column),
        ],
        |r| {
            Ok((
                r.get::<bool>(1)?.unwrap_or(false),
                r.get::<Date>(2)?,
                r.get::<bool>(3)?.unwrap_or(false),
            ))
        },
    )
    .into_iter()
    .next()
    .unwrap_or((false, None, false));
    if !backtest {
        raise(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!(
                "twin \"{}\" was not created by enkf.backtest: a backtest continues only its own twins",
                replay.twin
            ),
            None,
            "a backtest replays old versions of the data and would rewrite the twin's analyses; give the backtest a new twin name",
        );
    }
    if !same_table {
        raise(
            PgSqlErrorCode::ERRCODE_DUPLICATE_OBJECT,
            format!(
                "twin \"{}\" already exists over another table or ED column",
                replay.twin
            ),
            None,
            "give the backtest a new twin name, or drop the old twin with enkf.drop_twin()",
        );
    }
    if let Some(done) = last_reference.map(|d| d.to_pg_epoch_days()) {
        if done >= replay.first {
            raise(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!(
                    "first_reference {} overlaps the forecasts twin \"{}\" already has (through {})",
                    enkf_core::dates::iso(replay.first),
                    replay.twin,
                    enkf_core::dates::iso(done)
                ),
                None,
                "continue a backtest from the week after its last reference date, or start it again under a new twin name",
            );
        }
    }
}

/// Reference dates one backtest replays at most: 20 years of weeks. Each costs a run of the
/// twin, and the range is the caller's to choose: refused before anything is done (54000).
const MAX_REFERENCE_DATES: i64 = 1044;

/// The number of reference dates, checked: at most `MAX_REFERENCE_DATES`, and none so far past
/// the table's data that its forecast would be more than a year ahead of it (which
/// `enkf.forecast` refuses) after every earlier date had been computed.
fn check_range(client: &SpiClient<'_>, twin: &catalog::Twin, replay: &Replay) -> i64 {
    let count = (replay.last as i64 - replay.first as i64) / 7 + 1;
    if count > MAX_REFERENCE_DATES {
        raise(
            PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            format!(
                "last_reference: {count} reference dates from {} to {}, more than {MAX_REFERENCE_DATES}",
                enkf_core::dates::iso(replay.first),
                enkf_core::dates::iso(replay.last)
            ),
            None,
            "backtest at most 20 years of weeks in one call; continue the same twin with a later first_reference",
        );
    }
    let latest = spi::one::<Date>(
        client,
        &format!(
            "SELECT pg_catalog.max({})::pg_catalog.date FROM {}",
            pgrx::spi::quote_identifier(&twin.time_column),
            twin.observations
        ),
        &[],
    )
    .map(|d| d.to_pg_epoch_days());
    if let Some(latest) = latest.filter(|l| replay.last > l + replay.lag + 7 * 53) {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!(
                "last_reference {} is more than 53 weeks after the last data in {} ({})",
                enkf_core::dates::iso(replay.last),
                twin.observations,
                enkf_core::dates::iso(latest)
            ),
            None,
            "end the backtest at most a year after the data end; forecasts further ahead are refused",
        );
    }
    count
}

/// Every reference date in turn: assimilate what was published by the reference date less the
/// lag, then forecast from the reference date.
fn run(client: &mut SpiClient<'_>, replay: &Replay) {
    let twin = catalog::load(client, &replay.twin);
    let weekday = twin.config.week_end_weekday().unwrap_or(6) as i32;
    if (replay.first - (weekday - 6)).rem_euclid(7) != 0 {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!(
                "first_reference {} is not a week end of twin \"{}\" (weeks end on {})",
                enkf_core::dates::iso(replay.first),
                replay.twin,
                twin.config.week_ends_on
            ),
            None,
            "reference dates are week ends: the FluSight hub's are Saturdays",
        );
    }
    let count = check_range(client, &twin, replay);
    for (k, reference) in (replay.first..=replay.last).step_by(7).enumerate() {
        pgrx::check_for_interrupts!();
        let clock = std::time::Instant::now();
        let published = reference - replay.lag;
        let through = spi::one::<TimestampWithTimeZone>(
            client,
            "SELECT ($1::pg_catalog.date + 1)::pg_catalog.timestamptz - '1 microsecond'::pg_catalog.interval",
            &[DatumWithOid::from(date(published))],
        )
        .unwrap_or_else(|| unreachable!("a date converts"));
        let as_of = twin.as_of_column.as_ref().map(|_| published);
        let row = assimilate::run(client, &replay.twin, through, as_of);
        let last_week = catalog::last_week(client, twin.id);
        if last_week.is_none_or(|w| w >= reference) {
            pgrx::notice!(
                "enkf.backtest: reference date {} ({} of {}): nothing published by {} to forecast from",
                enkf_core::dates::iso(reference),
                k + 1,
                count,
                enkf_core::dates::iso(published)
            );
            continue;
        }
        let request = forecast::Request {
            horizons: replay.horizons,
            levels: &FLUSIGHT_LEVELS,
            reference: Some(reference),
            returned: enkf_core::twin::models::Component::Twin,
        };
        let rows = forecast::run(client, &replay.twin, &request);
        pgrx::notice!(
            "enkf.backtest: reference date {} ({} of {}): {} locations assimilated as published by {}, {} forecasts, {:.2} s",
            enkf_core::dates::iso(reference),
            k + 1,
            count,
            row.1,
            enkf_core::dates::iso(published),
            rows.len(),
            clock.elapsed().as_secs_f64()
        );
    }
}
