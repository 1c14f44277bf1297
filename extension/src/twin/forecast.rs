//! `enkf.forecast`: quantiles of weekly admissions for every location of a twin, from its
//! latest analysis, with the FluSight-style baseline beside them; both stored in
//! `enkf.forecasts`, the twin's returned.

use enkf_core::model::seirh::STATE_DIM;
use enkf_core::scoring::{baseline_quantiles, FLUSIGHT_LEVELS};
use enkf_core::twin::location::{location_seed, week_seed};
use enkf_core::twin::LocationModel;
use nalgebra::DMatrix;
use pgrx::datum::{Array, Date, DatumWithOid, TimestampWithTimeZone};
use pgrx::memcxt::PgMemoryContexts;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;

use super::assimilate::date;
use super::catalog;
use super::spi;
use crate::arrays::vector_arg;
use crate::error::{null_argument, null_option, raise};

type ForecastRow = (
    name!(location, String),
    name!(reference_date, Date),
    name!(horizon, i32),
    name!(target_end_date, Date),
    name!(quantile, f64),
    name!(value, f64),
);

/// Quantile levels: strictly increasing, inside (0, 1).
fn levels_arg(arr: Option<Array<'_, f64>>) -> Vec<f64> {
    let levels = vector_arg(
        "quantile_levels",
        Some(arr.unwrap_or_else(|| null_option("quantile_levels"))),
    );
    let ok = !levels.is_empty()
        && levels.len() <= 999
        && levels.iter().all(|p| p.is_finite() && *p > 0.0 && *p < 1.0)
        && levels.windows(2).all(|w| w[0] < w[1]);
    if !ok {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("quantile_levels must be strictly increasing values inside (0, 1), got {levels:?}"),
            None,
            "leave quantile_levels out for the 23 FluSight levels 0.01, 0.025, 0.05, 0.1, ..., 0.975, 0.99",
        );
    }
    levels
}

const PURPOSE_BASELINE: u64 = 7;

#[pg_extern(
    volatile,
    parallel_unsafe,
    security_invoker,
    schema = "enkf",
    name = "forecast"
)]
fn forecast(
    twin: Option<&str>,
    horizons: default!(Option<i32>, 4),
    quantile_levels: default!(
        Option<Array<'_, f64>>,
        "'{0.01,0.025,0.05,0.1,0.15,0.2,0.25,0.3,0.35,0.4,0.45,0.5,0.55,0.6,0.65,0.7,0.75,0.8,0.85,0.9,0.95,0.975,0.99}'::float8[]"
    ),
) -> TableIterator<
    'static,
    (
        name!(location, String),
        name!(reference_date, Date),
        name!(horizon, i32),
        name!(target_end_date, Date),
        name!(quantile, f64),
        name!(value, f64),
    ),
> {
    let name = twin.unwrap_or_else(|| null_argument("twin"));
    let horizons = horizons.unwrap_or_else(|| null_option("horizons"));
    if !(1..=52).contains(&horizons) {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("horizons must lie in 1..52, got {horizons}"),
            None,
            "horizons = 4 gives horizons 0, 1, 2 and 3 weeks after the reference date",
        );
    }
    let levels = levels_arg(quantile_levels);
    let rows = Spi::connect_mut(|client| run(client, name, horizons as usize, &levels));
    TableIterator::new(rows)
}

fn run(
    client: &mut SpiClient<'_>,
    name: &str,
    horizons: usize,
    levels: &[f64],
) -> Vec<ForecastRow> {
    let started = spi::one::<TimestampWithTimeZone>(client, "SELECT clock_timestamp()", &[]);
    let twin = catalog::load(client, name);
    catalog::lock(client, twin.id);
    let has_any = spi::one::<bool>(
        client,
        "SELECT true FROM enkf.checkpoints WHERE twin_id = $1 LIMIT 1",
        &[DatumWithOid::from(twin.id)],
    );
    if has_any.is_none() {
        raise(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!("twin \"{name}\" has no analysis to forecast from"),
            None,
            "run enkf.assimilate() on the twin first",
        );
    }
    let run_id = spi::update_rows(
        client,
        "INSERT INTO enkf.runs (twin_id, kind, status, started_at, source, config, config_hash, extension_version, seed, detail)
         VALUES ($1, 'forecast', 'succeeded', $2, $3, $4::jsonb, $5, $6, $7, $8) RETURNING run_id",
        &[
            DatumWithOid::from(twin.id),
            started.map_or(DatumWithOid::null::<TimestampWithTimeZone>(), DatumWithOid::from),
            DatumWithOid::from(twin.observations.as_str()),
            DatumWithOid::from(twin.config_json.as_str()),
            DatumWithOid::from(twin.config_hash.as_str()),
            DatumWithOid::from(env!("CARGO_PKG_VERSION")),
            DatumWithOid::from(twin.config.seed),
            DatumWithOid::from(format!("horizons {horizons}, {} quantile levels", levels.len()).as_str()),
        ],
        |r| r.get::<i64>(1),
    )
    .into_iter()
    .next()
    .flatten()
    .unwrap_or_default();

    // Each location's latest analysis and the counts it has assimilated (for the baseline).
    let query = "SELECT l.location, l.week_end, l.ensemble,
                        (SELECT array_agg(c.observed ORDER BY c.week_end) FROM enkf.checkpoints c
                          WHERE c.twin_id = $1 AND c.location = l.location AND c.observed IS NOT NULL) AS history
                   FROM (SELECT DISTINCT ON (location) location, week_end, ensemble FROM enkf.checkpoints
                          WHERE twin_id = $1 ORDER BY location, week_end DESC) l
                  ORDER BY l.location";
    let mut cursor = spi::ok(client.try_open_cursor(query, &[DatumWithOid::from(twin.id)]));
    let mut scratch = PgMemoryContexts::new("pg_enkf forecast");
    let mut out = Vec::new();
    let mut locations = 0;
    let mut reference: Option<i32> = None;
    let twin_levels = if levels.is_empty() {
        FLUSIGHT_LEVELS.to_vec()
    } else {
        levels.to_vec()
    };
    loop {
        let batch: Vec<(String, i32, Vec<f64>, Vec<f64>)> = unsafe {
            scratch.switch_to(|_| {
                let table = spi::ok(cursor.fetch(200));
                let mut rows = Vec::with_capacity(table.len());
                for r in table {
                    rows.push((
                        spi::ok(r.get::<String>(1)).unwrap_or_default(),
                        spi::ok(r.get::<Date>(2))
                            .map(|d| d.to_pg_epoch_days())
                            .unwrap_or_default(),
                        spi::ok(r.get::<Vec<f64>>(3)).unwrap_or_default(),
                        spi::ok(r.get::<Vec<f64>>(4)).unwrap_or_default(),
                    ));
                }
                spi::free_tuptable();
                rows
            })
        };
        unsafe { scratch.reset() };
        if batch.is_empty() {
            break;
        }
        for (location, last_week, flat, history) in batch {
            pgrx::check_for_interrupts!();
            if flat.len() != STATE_DIM * twin.members {
                raise(
                    PgSqlErrorCode::ERRCODE_DATA_CORRUPTED,
                    format!("checkpoint of twin \"{name}\", location \"{location}\" has {} values, expected {}", flat.len(), STATE_DIM * twin.members),
                    None,
                    "the checkpoints table was changed outside pg_enkf; drop and re-create the twin",
                );
            }
            let ens = DMatrix::from_row_slice(STATE_DIM, twin.members, &flat);
            // Population is implied by the compartments, which always sum to it.
            let population: f64 = (0..4).map(|r| ens[(r, 0)]).sum();
            let model = LocationModel::new(&twin.config, &location, population);
            let twin_q = model.forecast(&ens, last_week, horizons, &twin_levels);
            let reference_date = last_week + 7;
            reference = Some(reference.map_or(reference_date, |r: i32| r.max(reference_date)));
            let loc_seed = location_seed(twin.config.seed, &location);
            for (h, q) in twin_q.iter().enumerate() {
                let target = reference_date + 7 * h as i32;
                let base = baseline_quantiles(
                    &history,
                    h + 1,
                    &twin_levels,
                    week_seed(loc_seed, last_week, PURPOSE_BASELINE + h as u64),
                );
                for (model_name, values) in [("enkf", q), ("baseline", &base)] {
                    unsafe {
                        scratch.switch_to(|_| {
                            spi::update(
                                client,
                                "INSERT INTO enkf.forecasts (twin_id, reference_date, model, location, horizon, target_end_date,
                                                             run_id, quantile_levels, quantile_values)
                                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                                 ON CONFLICT (twin_id, reference_date, model, location, horizon) DO UPDATE
                                    SET target_end_date = EXCLUDED.target_end_date, run_id = EXCLUDED.run_id,
                                        quantile_levels = EXCLUDED.quantile_levels, quantile_values = EXCLUDED.quantile_values",
                                &[
                                    DatumWithOid::from(twin.id),
                                    DatumWithOid::from(date(reference_date)),
                                    DatumWithOid::from(model_name),
                                    DatumWithOid::from(location.as_str()),
                                    DatumWithOid::from(h as i32),
                                    DatumWithOid::from(date(target)),
                                    DatumWithOid::from(run_id),
                                    DatumWithOid::from(twin_levels.clone()),
                                    DatumWithOid::from(values.clone()),
                                ],
                            )
                        })
                    };
                }
                for (p, v) in twin_levels.iter().zip(q) {
                    out.push((
                        location.clone(),
                        date(reference_date),
                        h as i32,
                        date(target),
                        *p,
                        *v,
                    ));
                }
            }
            unsafe { scratch.reset() };
            locations += 1;
        }
    }
    drop(cursor);
    spi::update(
        client,
        "UPDATE enkf.runs SET locations = $2, first_week = $3, last_week = $4, finished_at = clock_timestamp() WHERE run_id = $1",
        &[
            DatumWithOid::from(run_id),
            DatumWithOid::from(locations),
            reference.map_or(DatumWithOid::null::<Date>(), |d| DatumWithOid::from(date(d))),
            reference.map_or(DatumWithOid::null::<Date>(), |d| DatumWithOid::from(date(d + 7 * (horizons as i32 - 1)))),
        ],
    );
    out
}
