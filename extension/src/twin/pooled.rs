//! The pooled model's fit inside `enkf.forecast` (enkf-core's `twin::pooled`): every location's
//! counts the twin has assimilated (as published by the run's data, never a later version, and
//! only the locations the caller may read), fitted once per run before any location is
//! forecast. The fit is recorded with the run (`enkf.runs.model_fit`).

use enkf_core::twin::models::History;
use enkf_core::twin::pooled::{self, PoolInput, PooledFit};
use enkf_core::twin::suppression::censored;
use pgrx::datum::{Date, DatumWithOid};
use pgrx::prelude::*;
use pgrx::spi::SpiClient;

use super::catalog::{self, Twin};
use super::dates::date;
use crate::error::raise;
use crate::spi;

/// Fits the pooled model at the twin's last analysis week `last` for each step; None when the
/// twin's configuration turns it off.
pub(super) fn fit(
    client: &SpiClient<'_>,
    twin: &Twin,
    last: i32,
    steps: &[usize],
    levels: &[f64],
    nowcast: &[f64],
) -> Option<PooledFit> {
    let cfg = &twin.config.pooled;
    if !cfg.enabled {
        return None;
    }
    let from = cfg
        .train_from_day()
        .unwrap_or_else(|e| crate::error::raise_core(e))
        // The features of the first origin need the weeks before it.
        .map(|d| d - 7 * (pooled::MAX_CHANGES as i32 + 1));
    let args = || {
        [
            DatumWithOid::from(twin.id),
            DatumWithOid::from(date(last)),
            from.map_or(DatumWithOid::null::<Date>(), |d| {
                DatumWithOid::from(date(d))
            }),
        ]
    };
    // Bounded before anything is read: the counts and the grid they make.
    let max = crate::guc::MAX_ENSEMBLE_ELEMENTS.get().max(1) as i64;
    let counted = spi::select(
        client,
        "SELECT pg_catalog.count(*), pg_catalog.count(DISTINCT location),
                pg_catalog.min(week_end) - DATE '2000-01-01'
           FROM enkf.checkpoints
          WHERE twin_id = $1 AND observed IS NOT NULL AND week_end <= $2
            AND ($3::pg_catalog.date IS NULL OR week_end >= $3)",
        &args(),
        |r| {
            Ok((
                r.get::<i64>(1)?.unwrap_or(0),
                r.get::<i64>(2)?.unwrap_or(0),
                r.get::<i32>(3)?,
            ))
        },
    );
    let (rows, locations, first) = counted.into_iter().next().unwrap_or((0, 0, None));
    let cells = first.map_or(0, |f| locations.saturating_mul(((last - f) / 7 + 1) as i64));
    // One step's design matrix holds a row of features per location and week, at most.
    let features = cfg.features() as i64;
    let values = rows.max(cells).saturating_mul(features);
    if values > max {
        raise(
            PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            format!(
                "config: the pooled model would fit {locations} locations x {} weeks of counts with {features} features, {values} values, more than enkf.max_ensemble_elements = {max}",
                cells / locations.max(1)
            ),
            None,
            "set the twin's pooled.train_from to a later date, or pooled.enabled to false, or ask a superuser to raise enkf.max_ensemble_elements",
        );
    }
    let histories = spi::select(
        client,
        "SELECT location, pg_catalog.array_agg(week_end - DATE '2000-01-01' ORDER BY week_end),
                pg_catalog.array_agg(observed ORDER BY week_end)
           FROM enkf.checkpoints
          WHERE twin_id = $1 AND observed IS NOT NULL AND week_end <= $2
            AND ($3::pg_catalog.date IS NULL OR week_end >= $3)
          GROUP BY location",
        &args(),
        |r| {
            Ok((
                r.get::<String>(1)?.unwrap_or_default(),
                r.get::<Vec<i32>>(2)?.unwrap_or_default(),
                r.get::<Vec<f64>>(3)?.unwrap_or_default(),
            ))
        },
    );
    let populations = catalog::populations(client, twin);
    let inputs: Vec<PoolInput> = histories
        .into_iter()
        .filter_map(|(location, weeks, values)| {
            let population = *populations.get(&location)?;
            // A protected twin's models see the counts censored (twin/suppression.rs).
            let values = values
                .into_iter()
                .map(|v| Some(censored(twin.censoring, v)))
                .collect();
            // The newest weeks as the nowcast corrects them.
            let history =
                enkf_core::twin::nowcast::corrected(&History { weeks, values }, last, nowcast);
            Some(PoolInput {
                location,
                population,
                history,
            })
        })
        .collect();
    let fit = pooled::fit(cfg, &inputs, last, steps, levels, &mut || {
        pgrx::check_for_interrupts!();
    })
    .unwrap_or_else(|e| crate::error::raise_core(e));
    Some(fit)
}
