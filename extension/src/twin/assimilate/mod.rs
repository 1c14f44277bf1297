//! `enkf.assimilate`: steps every location's ensemble through the weeks up to `through`,
//! updating it with each observed count, and stores one checkpoint per location and week.
//!
//! It is incremental: each location resumes from its latest checkpoint. Counts that changed
//! since they were assimilated (NHSN backfill) are found by comparing the table with the counts
//! stored in the checkpoints; the location is then re-assimilated from the checkpoint of the
//! week before the earliest change. Missing weeks (NULL, NaN, no row) are forecast without an
//! update. Rows are streamed through a cursor, one location at a time, so memory does not grow
//! with the history or the number of locations.
//!
//! A run is a sequence of named steps, each in the module of its concern: what the table holds
//! (`data`), which locations need work from which week (`plan`), the weekly cycle of each
//! location over the rows read in location order (`stream`, arithmetic in
//! `enkf_core::twin::cycle`), and the checkpoints written (`write`).

// pgrx needs the returned row tuple spelled out in the #[pg_extern] signature.
#![allow(clippy::type_complexity)]

mod data;
mod plan;
mod stream;
mod write;

use pgrx::datum::{Date, DatumWithOid, TimestampWithTimeZone};
use pgrx::prelude::*;
use pgrx::spi::SpiClient;

use super::catalog;
use super::dates::date;
use super::provenance;
use crate::error::{null_argument, null_option, raise};
use crate::spi;

pub(super) type AssimilateRow = (
    name!(run_id, i64),
    name!(locations, i32),
    name!(observations, i32),
    name!(first_time, Option<TimestampWithTimeZone>),
    name!(last_time, Option<TimestampWithTimeZone>),
);

#[pg_extern(
    volatile,
    parallel_unsafe,
    security_invoker,
    schema = "enkf",
    name = "assimilate"
)]
#[search_path(pg_catalog, pg_temp)]
fn assimilate(
    twin: Option<&str>,
    through: default!(Option<TimestampWithTimeZone>, "now()"),
    as_of: default!(Option<Date>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(run_id, i64),
        name!(locations, i32),
        name!(observations, i32),
        name!(first_time, Option<TimestampWithTimeZone>),
        name!(last_time, Option<TimestampWithTimeZone>),
    ),
> {
    let name = twin.unwrap_or_else(|| null_argument("twin"));
    let through = through.unwrap_or_else(|| null_option("through"));
    let as_of = as_of.map(|d| {
        if !d.is_finite() {
            raise(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                "as_of must be a finite date",
                None,
                "pass the last day of publication to read, or leave it out for the latest versions",
            );
        }
        d.to_pg_epoch_days()
    });
    let row = Spi::connect_mut(|client| run(client, name, through, as_of));
    TableIterator::new(std::iter::once(row))
}

/// One assimilation of twin `name` through `through`, reading the versions published on or
/// before `as_of` (a table of versions; all versions without it).
pub(super) fn run(
    client: &mut SpiClient<'_>,
    name: &str,
    through: TimestampWithTimeZone,
    as_of: Option<i32>,
) -> AssimilateRow {
    let clock = std::time::Instant::now();
    let twin = catalog::load_locked(client, name);
    let started = provenance::start(client);
    let source = data::source(client, &twin, as_of);
    let populations = catalog::populations(client, &twin);
    let span = data::span(client, &twin, &source, through);
    let origin = data::origin(client, &twin, span.first);
    let plan = plan::plan(client, &twin, &source, origin, span.end_week);
    let t_plan = clock.elapsed().as_secs_f64();
    write::cut_revised(client, &twin, &plan);
    let totals = stream::run(client, &twin, &source, &populations, &plan, started.id);
    write::prune(client, &twin, span.end_week);
    pgrx::debug1!(
        "pg_enkf assimilate of twin \"{name}\": {} locations, {} counts in {:.3} s (plan {t_plan:.3} s, compute {:.3} s)",
        totals.locations,
        totals.observations,
        clock.elapsed().as_secs_f64(),
        totals.compute_seconds
    );
    provenance::record(
        client,
        &twin,
        "assimilate",
        &started,
        provenance::Outcome {
            through: Some(through),
            locations: Some(totals.locations),
            observations: Some(totals.observations),
            reassimilated: Some(plan.revised()),
            first_week: totals.first_week,
            last_week: totals.last_week,
            as_of: plan.as_of_read,
            detail: None,
            model_fit: None,
        },
    );
    (
        started.id,
        totals.locations,
        totals.observations,
        timestamptz_of(client, totals.first_week),
        timestamptz_of(client, totals.last_week),
    )
}

fn timestamptz_of(client: &SpiClient<'_>, days: Option<i32>) -> Option<TimestampWithTimeZone> {
    days.and_then(|d| {
        spi::one::<TimestampWithTimeZone>(
            client,
            "SELECT $1::pg_catalog.date::pg_catalog.timestamptz",
            &[DatumWithOid::from(date(d))],
        )
    })
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use enkf_core::model::seirh::STATE_DIM;
    use enkf_core::twin::cycle::{self, CycleContext, LocationJob, WeekData};
    use enkf_core::twin::suppression::Censoring;
    use enkf_core::twin::TwinConfig;
    use pgrx::prelude::*;

    /// What `enkf.assimilate` stores is the core's weekly cycle, bit for bit: the SQL layer
    /// reads, batches (here in rounds of a few weeks) and writes, and changes no value.
    #[pg_test]
    fn stored_checkpoints_are_the_core_cycle_bit_for_bit() {
        stored_checkpoints_are_the_core_cycle(false);
    }

    /// The same for a twin with the ED-visit stream: 10 rows per member, both streams read.
    #[pg_test]
    fn stored_checkpoints_of_an_ed_twin_are_the_core_cycle_bit_for_bit() {
        stored_checkpoints_are_the_core_cycle(true);
    }

    fn stored_checkpoints_are_the_core_cycle(with_ed: bool) {
        Spi::run(
            "CREATE TABLE o AS SELECT time, location, value FROM enkf.synthetic_surveillance(1, 12, '2023-10-07', 2);
             UPDATE o SET value = NULL WHERE time = '2023-11-04';
             UPDATE o SET value = 4 WHERE time = '2023-10-21';
             DELETE FROM o WHERE time = '2023-11-18';
             ALTER TABLE o ADD COLUMN ed float8;
             UPDATE o SET ed = 0.004 + value / 2e5 WHERE time <> '2023-10-28';
             CREATE TABLE l AS SELECT DISTINCT location, population FROM enkf.synthetic_surveillance(1, 1, '2023-10-07', 2);
             SET enkf.max_ensemble_elements = 300;",
        )
        .expect("setup");
        let ed_column = if with_ed { "'ed'" } else { "NULL" };
        Spi::run(&format!(
            "SELECT enkf.create_twin('t', 'o', 'l', members => 10, ed_column => {ed_column})"
        ))
        .expect("create");
        Spi::run("SELECT * FROM enkf.assimilate('t')").expect("assimilate");
        let config: String = Spi::get_one("SELECT config::text FROM enkf.twins")
            .expect("spi")
            .expect("config");
        let config = TwinConfig::from_json(&config).expect("stored config");
        let population: f64 = Spi::get_one("SELECT population FROM l")
            .expect("spi")
            .expect("population");
        let location: String = Spi::get_one("SELECT location FROM l")
            .expect("spi")
            .expect("location");
        let days =
            |q: &str| -> Vec<i32> { Spi::get_one::<Vec<i32>>(q).expect("spi").expect("weeks") };
        let weeks_with_rows =
            days("SELECT array_agg(time - DATE '2000-01-01' ORDER BY time) FROM o");
        let values: Vec<Option<f64>> = Spi::get_one("SELECT array_agg(value ORDER BY time) FROM o")
            .expect("spi")
            .expect("values");
        let proportions: Vec<Option<f64>> =
            Spi::get_one("SELECT array_agg(ed ORDER BY time) FROM o")
                .expect("spi")
                .expect("proportions");
        let weeks: Vec<WeekData> = weeks_with_rows
            .iter()
            .zip(values.iter().zip(&proportions))
            .map(|(&week, (&value, &ed))| WeekData {
                week,
                value,
                rows: 1,
                times: 1,
                min_value: value,
                fingerprint: 0,
                ed: ed.filter(|_| with_ed),
            })
            .collect();
        let dim = enkf_core::twin::ed::state_dim(&config);
        assert_eq!(dim, if with_ed { 10 } else { STATE_DIM });
        let members = 10;
        let ctx = CycleContext {
            config: &config,
            members,
            origin: weeks[0].week,
            end_week: *weeks_with_rows.last().expect("weeks"),
            // A protected twin (the default) under the default threshold: the 4 enters
            // censored, the checkpoint still records it.
            censoring: Censoring::at(11.0),
        };
        let job = LocationJob {
            location,
            population,
            start: ctx.origin,
            ensemble: None,
            recent: Vec::new(),
            recent_ed: Vec::new(),
            weeks,
        };
        let expected = cycle::run(&ctx, &job, usize::MAX).expect("cycle");
        assert!(expected.rest.is_none());
        let stored_weeks = days("SELECT array_agg(week_end - DATE '2000-01-01' ORDER BY week_end) FROM enkf.checkpoints");
        assert_eq!(
            stored_weeks.len(),
            12,
            "one checkpoint a week, the missing one too"
        );
        for (c, week) in expected.checkpoints.iter().zip(&stored_weeks) {
            assert_eq!(c.week, *week);
            let stored: Vec<f64> = Spi::get_one(&format!(
                "SELECT ensemble FROM enkf.checkpoints WHERE week_end = DATE '2000-01-01' + {week}"
            ))
            .expect("spi")
            .expect("ensemble");
            assert_eq!(stored.len(), dim * members);
            for i in 0..dim {
                for j in 0..members {
                    assert_eq!(
                        stored[i * members + j].to_bits(),
                        c.ensemble[(i, j)].to_bits(),
                        "week {week}, state {i}, member {j}"
                    );
                }
            }
        }
        if with_ed {
            let assimilated: Option<i64> =
                Spi::get_one("SELECT count(*) FROM enkf.checkpoints WHERE observed_ed IS NOT NULL")
                    .expect("spi");
            // 11 weeks with rows; two without a proportion (one of them without a count).
            assert_eq!(assimilated, Some(9));
        }
    }
}
