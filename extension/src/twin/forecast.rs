//! `enkf.forecast`: quantiles of weekly admissions for every location of a twin, from its
//! latest analysis, with the FluSight-style baseline beside them; both stored in
//! `enkf.forecasts`, the twin's returned.

use enkf_core::model::seirh::STATE_DIM;
use enkf_core::scoring::baseline_quantiles_all;
use enkf_core::twin::location::{location_seed, week_seed};
use enkf_core::twin::LocationModel;
use nalgebra::DMatrix;
use pgrx::datum::{Array, Date, DatumWithOid};
use pgrx::memcxt::PgMemoryContexts;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;

use super::catalog::{self, Twin};
use super::dates::date;
use super::provenance;
use super::spi;
use crate::arrays::vector_arg;
use crate::error::{null_argument, null_option, raise};

/// Quantile levels: strictly increasing, inside (0, 1).
fn levels_arg(arr: Option<Array<'_, f64>>) -> Vec<f64> {
    // More than 999 levels are refused below; the copy is bounded first all the same.
    let levels = vector_arg(
        "quantile_levels",
        Some(arr.unwrap_or_else(|| null_option("quantile_levels"))),
        crate::guc::MAX_ENSEMBLE_ELEMENTS.get().max(1) as usize,
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

/// Forecast rows written per statement (2,048 rows of 23 quantiles: under 1 MB of parameters).
const WRITE_BATCH: usize = 2048;

#[pg_extern(
    volatile,
    parallel_unsafe,
    security_invoker,
    schema = "enkf",
    name = "forecast"
)]
#[search_path(pg_catalog, pg_temp)]
fn forecast(
    twin: Option<&str>,
    horizons: default!(Option<i32>, 4),
    quantile_levels: default!(
        Option<Array<'_, f64>>,
        "'{0.01,0.025,0.05,0.1,0.15,0.2,0.25,0.3,0.35,0.4,0.45,0.5,0.55,0.6,0.65,0.7,0.75,0.8,0.85,0.9,0.95,0.975,0.99}'::float8[]"
    ),
    reference_date: default!(Option<Date>, "NULL"),
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
    let reference = reference_date.map(|d| {
        if !d.is_finite() {
            raise(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                "reference_date must be a finite date",
                None,
                "leave it out to forecast from the week after the last assimilated one",
            );
        }
        d.to_pg_epoch_days()
    });
    let blocks =
        Spi::connect_mut(|client| run(client, name, horizons as usize, &levels, reference));
    // One row per quantile, made as PostgreSQL asks for them: memory holds one value a row.
    TableIterator::new(blocks.into_iter().flat_map(move |b| {
        let (reference, target) = (date(b.reference), date(b.target));
        levels
            .clone()
            .into_iter()
            .zip(b.values)
            .map(move |(p, v)| (b.location.clone(), reference, b.horizon, target, p, v))
    }))
}

/// The returned quantiles of one location and horizon.
pub(super) struct Block {
    location: String,
    reference: i32,
    horizon: i32,
    target: i32,
    values: Vec<f64>,
}

pub(super) fn run(
    client: &mut SpiClient<'_>,
    name: &str,
    horizons: usize,
    levels: &[f64],
    reference: Option<i32>,
) -> Vec<Block> {
    let twin = catalog::load_locked(client, name);
    let started = provenance::start(client);
    let last_week = catalog::last_week(client, twin.id);
    let Some(last) = last_week else {
        raise(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!("twin \"{name}\" has no analysis to forecast from"),
            None,
            "run enkf.assimilate() on the twin first",
        );
    };
    // Weeks between the last analysis and the reference date's week, stepped through without
    // data (a real-time forecast when the latest release lags).
    let gap = gap_weeks(name, last, reference);
    // Written once, complete, at the end (provenance::record).
    let run_id = started.id;
    let bounds = Bounds::new(
        client,
        &twin,
        last_week.unwrap_or_default(),
        horizons,
        levels.len(),
    );
    // A forecast replaces whatever an earlier one from the same analysis stored (of the
    // locations the caller may see: row-level security applies to the DELETE as to the rest).
    spi::update(
        client,
        "DELETE FROM enkf.forecasts WHERE twin_id = $1 AND reference_date = $2",
        &[
            DatumWithOid::from(twin.id),
            DatumWithOid::from(date(last + 7 * (gap as i32 + 1))),
        ],
    );

    // Each location's latest analysis and the counts it has assimilated (for the baseline).
    // Two single-table queries merged here by location (byte order): robust to the stale
    // statistics a twin's first large assimilation leaves behind.
    // Every location's analysis of the twin's last assimilated week.
    let query = "SELECT location, week_end, ensemble FROM enkf.checkpoints
                  WHERE twin_id = $1 AND week_end = $2 ORDER BY location COLLATE \"C\"";
    // Each location's weeks and counts in any order, put in order here: hashing the rows into
    // locations and sorting each location's hundred-odd weeks afterwards took half the time of
    // sorting all of the twin's rows by (location, week) for array_agg(... ORDER BY week_end)
    // (bench/twin_breakdown.py --explain).
    let history_query =
        "SELECT location, pg_catalog.array_agg(week_end - DATE '2000-01-01'), pg_catalog.array_agg(observed)
           FROM enkf.checkpoints WHERE twin_id = $1 AND observed IS NOT NULL
          GROUP BY location ORDER BY location COLLATE \"C\"";
    // At county scale the aggregate holds ~3,000 locations' arrays, more than the default 4 MB.
    let work_mem = spi::raise_work_mem(client, "64MB");
    let mut histories =
        spi::ok(client.try_open_cursor(history_query, &[DatumWithOid::from(twin.id)]));
    let mut history_buffer: std::collections::VecDeque<(String, Vec<f64>)> =
        std::collections::VecDeque::new();
    let mut cursor = spi::ok(client.try_open_cursor(
        query,
        &[
            DatumWithOid::from(twin.id),
            DatumWithOid::from(date(last_week.unwrap_or_default())),
        ],
    ));
    let mut scratch = PgMemoryContexts::new("pg_enkf forecast");
    let mut write_scratch = PgMemoryContexts::new("pg_enkf forecast writes");
    let mut out = Vec::new();
    let mut returned = 0usize;
    let mut locations = 0;
    let mut reference: Option<i32> = None;
    let mut pending: Vec<Pending> = Vec::new();
    let clock = std::time::Instant::now();
    let (mut t_read, mut t_write) = (0.0f64, 0.0f64);
    // The next batch of locations: latest analysis and assimilated counts (read here).
    let next = || -> Vec<LocationInput> {
        let t0 = std::time::Instant::now();
        let latest: Vec<(String, i32, Vec<f64>)> = unsafe {
            scratch.switch_to(|_| {
                let table = spi::ok(cursor.fetch(bounds.fetch_locations));
                let mut rows = Vec::with_capacity(table.len());
                for r in table {
                    rows.push((
                        spi::ok(r.get::<String>(1)).unwrap_or_default(),
                        spi::ok(r.get::<Date>(2))
                            .map(|d| d.to_pg_epoch_days())
                            .unwrap_or_default(),
                        spi::ok(r.get::<Vec<f64>>(3)).unwrap_or_default(),
                    ));
                }
                spi::free_tuptable();
                rows
            })
        };
        unsafe { scratch.reset() };
        // Each location's assimilated counts, from the second cursor (same order).
        let mut batch = Vec::with_capacity(latest.len());
        for (location, week, flat) in latest {
            let mut history = Vec::new();
            loop {
                match history_buffer.front() {
                    Some((l, _)) if l.as_bytes() < location.as_bytes() => {
                        history_buffer.pop_front();
                    }
                    Some((l, _)) if *l == location => {
                        history = history_buffer.pop_front().map(|h| h.1).unwrap_or_default();
                        break;
                    }
                    Some(_) => break,
                    None => {
                        let table = spi::ok(histories.fetch(500));
                        if table.is_empty() {
                            break;
                        }
                        for r in table {
                            let weeks = spi::ok(r.get::<Vec<i32>>(2)).unwrap_or_default();
                            let counts = spi::ok(r.get::<Vec<f64>>(3)).unwrap_or_default();
                            let mut pairs: Vec<(i32, f64)> =
                                weeks.into_iter().zip(counts).collect();
                            pairs.sort_unstable_by_key(|p| p.0);
                            history_buffer.push_back((
                                spi::ok(r.get::<String>(1)).unwrap_or_default(),
                                pairs.into_iter().map(|p| p.1).collect(),
                            ));
                        }
                        spi::free_tuptable();
                    }
                }
            }
            if flat.len() != STATE_DIM * twin.members {
                raise(
                    PgSqlErrorCode::ERRCODE_DATA_CORRUPTED,
                    format!("checkpoint of twin \"{name}\", location \"{location}\" has {} values, expected {}", flat.len(), STATE_DIM * twin.members),
                    None,
                    "the checkpoints table was changed outside pg_enkf; drop and re-create the twin",
                );
            }
            batch.push((location, week, flat, history));
        }
        pgrx::check_for_interrupts!();
        t_read += t0.elapsed().as_secs_f64();
        batch
    };
    // The twin's and the baseline's quantiles of one location (pure computation, on any thread).
    let compute = |(location, last_week, flat, history): &LocationInput| {
        let ens = DMatrix::from_row_slice(STATE_DIM, twin.members, flat);
        // Population is implied by the compartments, which always sum to it.
        let population: f64 = (0..4).map(|r| ens[(r, 0)]).sum();
        let model = LocationModel::new(&twin.config, location, population);
        let mut twin_q = model.forecast(&ens, *last_week, gap + horizons, levels);
        let loc_seed = location_seed(twin.config.seed, location);
        let mut baseline = baseline_quantiles_all(
            history,
            gap + horizons,
            levels,
            week_seed(loc_seed, *last_week, PURPOSE_BASELINE),
        );
        twin_q.drain(..gap);
        baseline.drain(..gap);
        (twin_q, baseline)
    };
    // A computed batch's rows: returned, and stored (written here).
    let done = |batch: Vec<LocationInput>, computed: Vec<Quantiles>| {
        let t0 = std::time::Instant::now();
        for ((location, last_week, _, _), (twin_q, baseline)) in batch.into_iter().zip(computed) {
            let reference_date = last_week + 7 * (gap as i32 + 1);
            reference = Some(reference.map_or(reference_date, |r: i32| r.max(reference_date)));
            returned += horizons * levels.len();
            bounds.check_rows(returned);
            for ((h, q), base) in twin_q.into_iter().enumerate().zip(baseline) {
                let target = reference_date + 7 * h as i32;
                // Checked now: the rows are made after this function has returned.
                date(target);
                out.push(Block {
                    location: location.clone(),
                    reference: reference_date,
                    horizon: h as i32,
                    target,
                    values: q.clone(),
                });
                pending.push((
                    reference_date,
                    "enkf",
                    location.clone(),
                    h as i32,
                    target,
                    q,
                ));
                pending.push((
                    reference_date,
                    "baseline",
                    location.clone(),
                    h as i32,
                    target,
                    base,
                ));
            }
            if pending.len() >= WRITE_BATCH {
                write(
                    client,
                    &mut write_scratch,
                    twin.id,
                    run_id,
                    levels,
                    &mut pending,
                );
            }
            locations += 1;
        }
        t_write += t0.elapsed().as_secs_f64();
    };
    // Reading and writing overlap the computing when enkf.threads > 1.
    crate::parallel::pipeline(next, compute, done);
    pgrx::debug1!(
        "pg_enkf forecast of twin \"{name}\": {locations} locations in {:.3} s (read {t_read:.3} s, write {t_write:.3} s, the rest computing or waiting for it)",
        clock.elapsed().as_secs_f64()
    );
    drop(cursor);
    drop(histories);
    spi::restore_work_mem(client, work_mem);
    write(
        client,
        &mut write_scratch,
        twin.id,
        run_id,
        levels,
        &mut pending,
    );
    provenance::record(
        client,
        &twin,
        "forecast",
        &started,
        provenance::Outcome {
            locations: Some(locations),
            first_week: reference,
            last_week: reference.map(|d| d + 7 * (horizons as i32 - 1)),
            detail: Some(format!(
                "horizons {horizons}, {} quantile levels",
                levels.len()
            )),
            ..Default::default()
        },
    );
    out
}

/// A location's latest analysis: (location, its week, the flat ensemble, assimilated counts).
type LocationInput = (String, i32, Vec<f64>, Vec<f64>);

/// The twin's and the baseline's quantiles of a location, per horizon.
type Quantiles = (Vec<Vec<f64>>, Vec<Vec<f64>>);

/// (reference date, model, location, horizon, target end date, quantile values)
type Pending = (i32, &'static str, String, i32, i32, Vec<f64>);

/// Inserts the queued forecasts with one statement: each column one array parameter (the
/// quantile values one flat array, sliced per row), so a batch costs one small plan whatever
/// its size. At county scale this took the forecast's writes from 0.35-0.41 s (a multi-row
/// VALUES upsert, six parameters a row) to about 0.2 s (bench/twin_breakdown.py).
fn write(
    client: &mut SpiClient<'_>,
    scratch: &mut PgMemoryContexts,
    twin_id: i64,
    run_id: i64,
    levels: &[f64],
    pending: &mut Vec<Pending>,
) {
    if pending.is_empty() {
        return;
    }
    let rows = std::mem::take(pending);
    let width = levels.len();
    let sql = format!(
        "INSERT INTO enkf.forecasts (twin_id, run_id, quantile_levels, reference_date, model, location,
                                     horizon, target_end_date, quantile_values)
         SELECT $1, $2, $3, r.reference_date, r.model, r.location, r.horizon, r.target_end_date,
                $9[(r.k - 1) * {width} + 1 : r.k * {width}]
           FROM ROWS FROM (pg_catalog.unnest($4::pg_catalog.date[]), pg_catalog.unnest($5::pg_catalog.text[]), pg_catalog.unnest($6::pg_catalog.text[]), pg_catalog.unnest($7::pg_catalog.int4[]), pg_catalog.unnest($8::pg_catalog.date[]))
                WITH ORDINALITY AS r(reference_date, model, location, horizon, target_end_date, k)"
    );
    unsafe {
        scratch.switch_to(|_| {
            let mut references = Vec::with_capacity(rows.len());
            let mut models = Vec::with_capacity(rows.len());
            let mut locations = Vec::with_capacity(rows.len());
            let mut horizons = Vec::with_capacity(rows.len());
            let mut targets = Vec::with_capacity(rows.len());
            let mut values = Vec::with_capacity(rows.len() * width);
            for (reference, model, location, horizon, target, q) in rows {
                references.push(date(reference));
                models.push(model);
                locations.push(location);
                horizons.push(horizon);
                targets.push(date(target));
                values.extend_from_slice(&q);
            }
            spi::update(
                client,
                &sql,
                &[
                    DatumWithOid::from(twin_id),
                    DatumWithOid::from(run_id),
                    DatumWithOid::from(levels.to_vec()),
                    DatumWithOid::from(references),
                    DatumWithOid::from(models),
                    DatumWithOid::from(locations),
                    DatumWithOid::from(horizons),
                    DatumWithOid::from(targets),
                    DatumWithOid::from(values),
                ],
            );
        });
        scratch.reset();
    }
}

/// The weeks to step through without data between the last analysis (`last`) and the week
/// before `reference` (None: the week after the last analysis, no gap). 22023 for a reference
/// date that is not a later week end of the twin, or more than 52 weeks ahead.
fn gap_weeks(name: &str, last: i32, reference: Option<i32>) -> usize {
    let Some(r) = reference else {
        return 0;
    };
    let weeks = (r as i64 - last as i64) / 7;
    if (r as i64 - last as i64) % 7 != 0 || !(1..=53).contains(&weeks) {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!(
                "reference_date: {} is not one of the 53 week ends after twin \"{name}\"'s last analysis ({})",
                enkf_core::dates::iso(r),
                enkf_core::dates::iso(last)
            ),
            None,
            "a reference date is a week end after the last assimilated week; leave it out for the next one",
        );
    }
    (weeks - 1) as usize
}

/// What a forecast may hold in memory, from `enkf.max_ensemble_elements`: the analyses read at a
/// time (each members x 7 values) and the values of the rows it returns.
struct Bounds {
    fetch_locations: i64,
    max_rows: usize,
    horizons: usize,
    levels: usize,
}

impl Bounds {
    /// Refuses (54000) a forecast whose returned rows would exceed the limit, before any work:
    /// the caller's locations x horizons x quantile levels.
    fn new(
        client: &SpiClient<'_>,
        twin: &Twin,
        last_week: i32,
        horizons: usize,
        levels: usize,
    ) -> Bounds {
        let max = crate::guc::MAX_ENSEMBLE_ELEMENTS.get().max(1) as usize;
        let bounds = Bounds {
            fetch_locations: (max / (STATE_DIM * twin.members).max(1)).clamp(1, 200) as i64,
            max_rows: max,
            horizons,
            levels,
        };
        let locations = spi::one::<i64>(
            client,
            "SELECT pg_catalog.count(*) FROM enkf.checkpoints WHERE twin_id = $1 AND week_end = $2",
            &[
                DatumWithOid::from(twin.id),
                DatumWithOid::from(date(last_week)),
            ],
        )
        .unwrap_or(0);
        bounds.check_rows((locations.max(0) as usize).saturating_mul(horizons * levels));
        bounds
    }

    fn check_rows(&self, rows: usize) {
        if rows > self.max_rows {
            raise(
                PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
                format!(
                    "horizons: {} horizons x {} quantile_levels over the twin's locations make {rows} rows, more than enkf.max_ensemble_elements = {}",
                    self.horizons, self.levels, self.max_rows
                ),
                None,
                "ask for fewer horizons or quantile levels (the defaults give 4 x 23 per location), or ask a superuser to raise enkf.max_ensemble_elements",
            );
        }
    }
}
