//! `enkf.score`: the twin's stored forecasts and the baseline's, scored against the counts in
//! the observation table as they arrive (read under the caller): weighted interval score,
//! absolute error of the median, and 50% / 95% interval coverage, per location and horizon.

// pgrx needs the returned row tuple spelled out in the #[pg_extern] signature.
#![allow(clippy::type_complexity)]

use std::collections::BTreeMap;

use enkf_core::scoring::{at_level, covered, wis};
use pgrx::datum::{Date, DatumWithOid};
use pgrx::prelude::*;

use super::catalog;
use super::source::Source;
use super::spi;
use crate::error::null_argument;

#[derive(Default)]
struct Acc {
    n: i32,
    wis: [f64; 2],
    ae: [f64; 2],
    cov50: [i32; 2],
    cov95: [i32; 2],
}

type ScoreRow = (
    name!(location, String),
    name!(horizon, i32),
    name!(forecasts, i32),
    name!(wis, f64),
    name!(baseline_wis, f64),
    name!(relative_wis, Option<f64>),
    name!(ae_median, Option<f64>),
    name!(baseline_ae_median, Option<f64>),
    name!(coverage_50, Option<f64>),
    name!(coverage_95, Option<f64>),
    name!(baseline_coverage_50, Option<f64>),
    name!(baseline_coverage_95, Option<f64>),
);

#[pg_extern(
    stable,
    parallel_restricted,
    security_invoker,
    schema = "enkf",
    name = "score"
)]
#[search_path(pg_catalog, pg_temp)]
fn score(
    twin: Option<&str>,
    reference_from: default!(Option<Date>, "NULL"),
    reference_to: default!(Option<Date>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(location, String),
        name!(horizon, i32),
        name!(forecasts, i32),
        name!(wis, f64),
        name!(baseline_wis, f64),
        name!(relative_wis, Option<f64>),
        name!(ae_median, Option<f64>),
        name!(baseline_ae_median, Option<f64>),
        name!(coverage_50, Option<f64>),
        name!(coverage_95, Option<f64>),
        name!(baseline_coverage_50, Option<f64>),
        name!(baseline_coverage_95, Option<f64>),
    ),
> {
    let name = twin.unwrap_or_else(|| null_argument("twin"));
    let rows = Spi::connect(|client| {
        let twin = catalog::load(client, name);
        let columns = catalog::check_observations(
            client,
            &twin.observations,
            &twin.time_column,
            &twin.location_column,
            &twin.value_column,
        );
        let source = Source::new(&twin, columns.kind, catalog::timescaledb_schema(client));
        // Only the weeks that forecasts target are read from the table (which also leaves out
        // rows that no week holds, such as an infinite time).
        let targets = spi::select(
            client,
            "SELECT pg_catalog.min(target_end_date), pg_catalog.max(target_end_date) FROM enkf.forecasts
              WHERE twin_id = $1 AND model = 'enkf'
                AND ($2::date IS NULL OR reference_date >= $2) AND ($3::date IS NULL OR reference_date <= $3)",
            &[
                DatumWithOid::from(twin.id),
                reference_from.map_or(DatumWithOid::null::<Date>(), DatumWithOid::from),
                reference_to.map_or(DatumWithOid::null::<Date>(), DatumWithOid::from),
            ],
            |r| Ok((r.get::<Date>(1)?, r.get::<Date>(2)?)),
        );
        let (first_target, last_target) = match targets.first() {
            Some((Some(a), Some(b))) => (*a, *b),
            _ => return Vec::new(),
        };
        let query = format!(
            "WITH o AS (SELECT loc, week_end, value FROM ({}) w WHERE value IS NOT NULL)
             SELECT f.location, f.horizon, f.reference_date, f.quantile_levels, f.quantile_values,
                    b.quantile_levels, b.quantile_values, o.value
               FROM enkf.forecasts f
               JOIN enkf.forecasts b ON b.twin_id = f.twin_id AND b.reference_date = f.reference_date
                                    AND b.location = f.location AND b.horizon = f.horizon AND b.model = 'baseline'
               JOIN o ON o.loc = f.location AND o.week_end = f.target_end_date
              WHERE f.twin_id = $1 AND f.model = 'enkf'
                AND ($2::date IS NULL OR f.reference_date >= $2) AND ($3::date IS NULL OR f.reference_date <= $3)
              ORDER BY f.location, f.horizon, f.reference_date",
            source.weekly_sql(Some((4, 5)))
        );
        let mut cursor = spi::ok(client.try_open_cursor(
            query.as_str(),
            &[
                DatumWithOid::from(twin.id),
                reference_from.map_or(DatumWithOid::null::<Date>(), DatumWithOid::from),
                reference_to.map_or(DatumWithOid::null::<Date>(), DatumWithOid::from),
                DatumWithOid::from(first_target),
                DatumWithOid::from(last_target),
            ],
        ));
        let mut acc: BTreeMap<(String, i32), Acc> = BTreeMap::new();
        loop {
            let table = spi::ok(cursor.fetch(1000));
            if table.is_empty() {
                break;
            }
            for r in table {
                pgrx::check_for_interrupts!();
                let location = spi::ok(r.get::<String>(1)).unwrap_or_default();
                let horizon = spi::ok(r.get::<i32>(2)).unwrap_or_default();
                let forecasts = [
                    (
                        spi::ok(r.get::<Vec<f64>>(4)).unwrap_or_default(),
                        spi::ok(r.get::<Vec<f64>>(5)).unwrap_or_default(),
                    ),
                    (
                        spi::ok(r.get::<Vec<f64>>(6)).unwrap_or_default(),
                        spi::ok(r.get::<Vec<f64>>(7)).unwrap_or_default(),
                    ),
                ];
                let y = spi::ok(r.get::<f64>(8)).unwrap_or_default();
                let a = acc.entry((location, horizon)).or_default();
                a.n += 1;
                for (m, (levels, values)) in forecasts.iter().enumerate() {
                    a.wis[m] += wis(levels, values, y);
                    if let Some(med) = at_level(levels, values, 0.5) {
                        a.ae[m] += (med - y).abs();
                    }
                    a.cov50[m] += covered(levels, values, y, 0.5).unwrap_or(false) as i32;
                    a.cov95[m] += covered(levels, values, y, 0.95).unwrap_or(false) as i32;
                }
            }
            spi::free_tuptable();
        }
        drop(cursor);
        acc.into_iter()
            .map(|((location, horizon), a)| {
                let n = a.n as f64;
                let mean = |v: f64| Some(v / n);
                (
                    location,
                    horizon,
                    a.n,
                    a.wis[0] / n,
                    a.wis[1] / n,
                    if a.wis[1] > 0.0 {
                        Some(a.wis[0] / a.wis[1])
                    } else {
                        None
                    },
                    mean(a.ae[0]),
                    mean(a.ae[1]),
                    mean(a.cov50[0] as f64),
                    mean(a.cov95[0] as f64),
                    mean(a.cov50[1] as f64),
                    mean(a.cov95[1] as f64),
                )
            })
            .collect::<Vec<ScoreRow>>()
    });
    TableIterator::new(rows)
}
