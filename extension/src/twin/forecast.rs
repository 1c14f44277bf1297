//! `enkf.forecast`: quantiles of weekly admissions for every location of a twin, from its
//! latest analysis, by every model of the product (enkf-core's `twin::models`): the twin, the
//! FluSight-style baseline, the local trend model and their combination weighted by their
//! recent scores. All are stored in `enkf.forecasts`, each under its own model name; one
//! (the twin's by default) is returned.

use enkf_core::twin::combine::{calibrate, Calibration, Scored};
use enkf_core::twin::ed;
use enkf_core::twin::forecast::{target_rows, RunInputs, StoredAnalysis, TargetRow};
use enkf_core::twin::models::{Component, ComponentForecast, History};
use enkf_core::twin::suppression::{censored, Censoring};
use enkf_core::twin::targets::CombinedInputs;
use enkf_core::EnkfError;
use pgrx::datum::{Array, Date, DatumWithOid};
use pgrx::memcxt::PgMemoryContexts;
use pgrx::prelude::*;
use pgrx::spi::{SpiClient, SpiHeapTupleData, SpiResult};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use super::catalog::{self, Twin};
use super::dates::date;
use super::provenance;
use super::targets::{self, TargetWriter};
use crate::arrays::vector_arg;
use crate::error::{null_argument, null_option, raise, OrRaise};
use crate::spi;
use crate::spi::bulk::{BulkInsert, Slices};
use crate::spi::merge::ByLocation;

/// Quantile levels, as the core checks them (`models::check_levels`).
fn levels_arg(arr: Option<Array<'_, f64>>) -> Vec<f64> {
    // The copy is bounded before the check refuses more than MAX_LEVELS.
    let levels = vector_arg(
        "quantile_levels",
        Some(arr.unwrap_or_else(|| null_option("quantile_levels"))),
        crate::guc::MAX_ENSEMBLE_ELEMENTS.get().max(1) as usize,
    );
    enkf_core::twin::models::check_levels(&levels).or_raise();
    levels
}

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
    model: default!(Option<&str>, "'enkf'"),
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
    let model = model.unwrap_or_else(|| null_option("model"));
    let returned = Component::from_name(model).unwrap_or_else(|| {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("model \"{model}\" is unknown"),
            None,
            "model is the one whose forecasts are returned: 'enkf' (the twin), 'baseline', 'trend', 'pooled' or 'combined'; all are stored",
        )
    });
    let request = Request {
        horizons: horizons as usize,
        levels: &levels,
        reference,
        returned,
    };
    let blocks = Spi::connect_mut(|client| run(client, name, &request));
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

/// What one forecast run asks for.
pub(super) struct Request<'a> {
    pub horizons: usize,
    pub levels: &'a [f64],
    /// The reference date asked for (None: the week after the last analysis).
    pub reference: Option<i32>,
    /// The model whose quantiles are returned (all are stored).
    pub returned: Component,
}

/// One forecast run: every model of every location the caller may see, stored; the returned
/// model's quantiles returned.
pub(super) fn run(client: &mut SpiClient<'_>, name: &str, req: &Request<'_>) -> Vec<Block> {
    let twin = catalog::load_locked(client, name);
    let started = provenance::start(client);
    let last = last_analysis(client, &twin);
    // Weeks between the last analysis and the reference date's week, stepped through without
    // data (a real-time forecast when the latest release lags).
    let gap = gap_weeks(name, last, req.reference);
    let reference = last + 7 * (gap as i32 + 1);
    let bounds = Bounds::new(client, &twin, last, req.horizons, req.levels.len());
    targets::check_trajectories(&twin);
    // Learned before this run replaces anything: from forecasts already scored.
    let (calibration, calibrated_below) = calibration(client, &twin, last, req.levels);
    replace_stored(client, &twin, reference);
    let mut sink = Sink {
        req,
        reference,
        bounds,
        writer: Writer::new(&twin, started.id, req.levels, reference),
        targets: TargetWriter::new(&twin, started.id, reference),
        out: Vec::new(),
        returned_values: 0,
        locations: 0,
        run_below: twin.censored_below(),
        calibrated_below,
    };
    let steps: Vec<usize> = (1..=req.horizons).map(|h| gap + h).collect();
    // Learned from the table's versions, then the pooled model fitted on every location, before
    // any location is forecast.
    let nowcast = super::nowcast::learn(client, &twin, last);
    let factors = nowcast.as_ref().map_or(&[][..], |n| n.factors.as_slice());
    let residuals = nowcast.as_ref().map_or(&[][..], |n| n.residuals.as_slice());
    let pooled = super::pooled::fit(client, &twin, last, &steps, req.levels, factors);
    let mut reader = Reader::open(client, &twin, last, sink.bounds.fetch_locations);
    let clock = Instant::now();
    // Reading and writing overlap the computing when enkf.threads > 1. Each is timed for the
    // DEBUG1 line (the computing summed over the threads).
    let count_target = twin.config.forecast.target.as_str();
    let computing = AtomicU64::new(0);
    let (mut reading, mut writing) = (0.0, 0.0);
    crate::parallel::pipeline(
        || {
            let t = Instant::now();
            let batch = reader.next();
            reading += t.elapsed().as_secs_f64();
            batch
        },
        |input: &Input| -> Result<Computed, EnkfError> {
            let t = Instant::now();
            let (cfg, a) = (&twin.config, &input.analysis);
            let run = RunInputs {
                calibration: &calibration,
                pooled: pooled.as_ref(),
                nowcast: factors,
            };
            let models = a.forecast(cfg, twin.members, &steps, req.levels, &run)?;
            // Every target of the combination is drawn from the quantiles it submits.
            let combined = models
                .iter()
                .find(|m| m.component == Component::Combined)
                .map(|m| CombinedInputs {
                    quantiles: &m.quantiles,
                    factor: factors.first().copied().unwrap_or(1.0),
                    residuals,
                });
            let t_targets = a.targets(
                cfg,
                twin.members,
                reference,
                req.horizons,
                req.levels,
                combined,
            )?;
            let targets = target_rows(&t_targets, &a.location, req.levels, count_target);
            computing.fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
            Ok(Computed { models, targets })
        },
        |batch, computed| {
            let t = Instant::now();
            sink.store(client, batch, computed);
            writing += t.elapsed().as_secs_f64();
        },
    );
    let t = Instant::now();
    reader.close(client);
    sink.writer.flush(client);
    sink.targets.flush(client);
    writing += t.elapsed().as_secs_f64();
    let locations = sink.locations;
    pgrx::debug1!(
        "pg_enkf forecast of twin \"{name}\": {locations} locations in {:.3} s (read {reading:.3} s, compute {:.3} s summed over threads, write {writing:.3} s)",
        clock.elapsed().as_secs_f64(),
        computing.load(Ordering::Relaxed) as f64 * 1e-9,
    );
    let fit = pooled.map(|p| p.to_json().to_string());
    let nowcast = nowcast.map(|n| {
        let f: Vec<String> = n.factors.iter().map(|f| format!("{f:.4}")).collect();
        format!(
            ", nowcast factors {} from {} releases",
            f.join(" "),
            n.releases
        )
    });
    let record = RunRecord {
        reference,
        locations,
        model_fit: fit,
        nowcast,
    };
    record_run(client, &twin, &started, req, record);
    sink.out
}

/// The week of the twin's latest analysis (55000 when it has none).
fn last_analysis(client: &SpiClient<'_>, twin: &Twin) -> i32 {
    catalog::last_week(client, twin.id).unwrap_or_else(|| {
        raise(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!("twin \"{}\" has no analysis to forecast from", twin.name),
            None,
            "run enkf.assimilate() on the twin first",
        )
    })
}

/// What a forecast run records beside its request.
struct RunRecord {
    reference: i32,
    locations: i32,
    /// The pooled model's fit (JSON).
    model_fit: Option<String>,
    /// The nowcast factors, as the run's detail shows them.
    nowcast: Option<String>,
}

/// The run's provenance row: the locations forecast and the weeks the horizons target.
fn record_run(
    client: &mut SpiClient<'_>,
    twin: &Twin,
    started: &provenance::RunStart,
    req: &Request<'_>,
    record: RunRecord,
) {
    let RunRecord {
        reference,
        locations,
        model_fit,
        nowcast,
    } = record;
    let (horizons, levels) = (req.horizons, req.levels.len());
    provenance::record(
        client,
        twin,
        "forecast",
        started,
        provenance::Outcome {
            locations: Some(locations),
            first_week: (locations > 0).then_some(reference),
            last_week: (locations > 0).then_some(reference + 7 * (horizons as i32 - 1)),
            detail: Some(format!(
                "horizons {horizons}, {levels} quantile levels{}",
                nowcast.unwrap_or_default()
            )),
            model_fit,
            ..Default::default()
        },
    );
}

/// A forecast replaces whatever an earlier one from the same analysis stored (of the locations
/// the caller may see: row-level security applies to the DELETE as to the rest).
fn replace_stored(client: &mut SpiClient<'_>, twin: &Twin, reference: i32) {
    for table in ["enkf.forecasts", "enkf.target_forecasts"] {
        spi::update(
            client,
            &format!("DELETE FROM {table} WHERE twin_id = $1 AND reference_date = $2"),
            &[
                DatumWithOid::from(twin.id),
                DatumWithOid::from(date(reference)),
            ],
        );
    }
}

/// One location's forecasts: every model's quantiles, and every hub target's rows.
struct Computed {
    models: Vec<ComponentForecast>,
    targets: Vec<TargetRow>,
}

/// Where computed forecasts go: stored, and the returned model's kept (database work, on the
/// backend's thread).
struct Sink<'a> {
    req: &'a Request<'a>,
    reference: i32,
    bounds: Bounds,
    writer: Writer,
    targets: TargetWriter,
    out: Vec<Block>,
    returned_values: usize,
    locations: i32,
    /// What this run censors the counts it reads below (a protected twin).
    run_below: Option<f64>,
    /// What the past forecasts the combination learned from had their inputs censored below.
    calibrated_below: Option<f64>,
}

/// The weaker of two censorings (None: counts entered as they are, the weakest).
fn weakest(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some(a?.min(b?))
}

/// A location's analysis as read, and what its assimilated counts were censored below.
struct Input {
    analysis: StoredAnalysis,
    censored_below: Option<f64>,
}

impl Sink<'_> {
    fn store(
        &mut self,
        client: &mut SpiClient<'_>,
        batch: Vec<Input>,
        computed: Vec<Result<Computed, EnkfError>>,
    ) {
        for (input, computed) in batch.into_iter().zip(computed) {
            // Every value stored rests on this location's analysis, the counts read now and
            // the past forecasts the combination learned from: the weakest censoring of these.
            let censored_below = weakest(
                weakest(input.censored_below, self.run_below),
                self.calibrated_below,
            );
            let input = input.analysis;
            let computed = computed.unwrap_or_else(|e| crate::error::raise_core(e));
            let forecasts = computed.models;
            self.returned_values += self.req.horizons * self.req.levels.len();
            self.bounds.check_rows(self.returned_values);
            for f in forecasts {
                for (h, q) in f.quantiles.into_iter().enumerate() {
                    let target = self.reference + 7 * h as i32;
                    // Checked now: the rows are made after this function has returned.
                    date(target);
                    if f.component == self.req.returned {
                        self.out.push(Block {
                            location: input.location.clone(),
                            reference: self.reference,
                            horizon: h as i32,
                            target,
                            values: q.clone(),
                        });
                    }
                    self.writer.queue(
                        f.component.name(),
                        &input.location,
                        h as i32,
                        censored_below,
                        q,
                    );
                }
            }
            self.writer.flush_if_full(client);
            self.targets
                .queue(client, &input.location, censored_below, computed.targets);
            self.locations += 1;
        }
    }
}

/// How each model fared recently, at these quantile levels: its stored forecasts whose targets
/// are observed (the counts the twin has assimilated, as known now and censored as this run
/// censors them), of the locations the caller may see, within the weeks the combination's
/// weights look at. With the weakest censoring of the forecasts it learned from.
fn calibration(
    client: &SpiClient<'_>,
    twin: &Twin,
    last: i32,
    levels: &[f64],
) -> (Calibration, Option<f64>) {
    let cfg = &twin.config.combination;
    // Twice the window and the horizons: enough target weeks whatever the horizons forecast.
    let weeks = (2 * cfg.window_weeks + 8) as i32;
    let max = crate::guc::MAX_ENSEMBLE_ELEMENTS.get().max(1) as usize;
    let rows = spi::select(
        client,
        // Each forecast's observed count looked up by the checkpoints' whole primary key
        // (LATERAL, kept a subquery by OFFSET 0), whatever the statistics say. A backtest writes
        // a season in one transaction, so the statistics know nothing of its twin: flattened
        // into a join, the look-up was planned as a scan of the twin's every checkpoint per
        // forecast (the 2024-25 replay after 2023-24 in one database: 646 s, 74 s with the
        // whole key).
        "SELECT f.model, f.horizon, f.target_end_date - DATE '2000-01-01', f.quantile_values, c.observed,
                f.inputs_censored_below
           FROM enkf.forecasts f
           CROSS JOIN LATERAL (SELECT k.observed FROM enkf.checkpoints k
                                WHERE k.twin_id = f.twin_id AND k.location = f.location
                                  AND k.week_end = f.target_end_date OFFSET 0) c
          WHERE f.twin_id = $1 AND f.model = ANY($2::pg_catalog.text[])
            AND f.quantile_levels = $3::pg_catalog.float8[]
            AND f.target_end_date <= $4 AND f.target_end_date > $4 - 7 * $5
            AND c.observed IS NOT NULL",
        &[
            DatumWithOid::from(twin.id),
            DatumWithOid::from(cfg.components.clone()),
            DatumWithOid::from(levels.to_vec()),
            DatumWithOid::from(date(last)),
            DatumWithOid::from(weeks),
        ],
        |r| {
            Ok((
                r.get::<String>(1)?.unwrap_or_default(),
                r.get::<i32>(2)?.unwrap_or_default(),
                r.get::<i32>(3)?.unwrap_or_default(),
                r.get::<Vec<f64>>(4)?.unwrap_or_default(),
                censored(twin.censoring, r.get::<f64>(5)?.unwrap_or_default()),
                r.get::<f64>(6)?,
            ))
        },
    );
    if rows.len().saturating_mul(levels.len()) > max {
        raise(
            PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            format!(
                "config: combination.window_weeks = {} reads {} past forecasts of {} values, more than enkf.max_ensemble_elements = {max}",
                cfg.window_weeks,
                rows.len(),
                levels.len()
            ),
            None,
            "lower combination.window_weeks, or ask a superuser to raise enkf.max_ensemble_elements",
        );
    }
    let below = rows
        .iter()
        .fold(twin.censored_below(), |b, r| weakest(b, r.5));
    let past: Vec<Scored<'_>> = rows
        .iter()
        .filter_map(|(model, h, target, values, observed, _)| {
            Some(Scored {
                component: Component::from_name(model)?,
                horizon: usize::try_from(*h).ok()?,
                target_end_date: *target,
                values,
                observed: *observed,
            })
        })
        .collect();
    (calibrate(levels, &past, cfg), below)
}

/// The two cursors a forecast reads, merged by location (byte order): every location's
/// analysis of the twin's last week, and its assimilated counts. Two single-table queries:
/// robust to the stale statistics a twin's first large assimilation leaves behind.
struct Reader<'c, 't> {
    analyses: pgrx::spi::SpiCursor<'c>,
    histories: pgrx::spi::SpiCursor<'c>,
    /// Each location's counts, and its ED-visit proportions.
    merged: ByLocation<(History, History)>,
    fetch: i64,
    twin: &'t Twin,
    scratch: PgMemoryContexts,
    work_mem: Option<String>,
}

/// Locations' counts fetched from the second cursor at a time.
const FETCH_HISTORIES: i64 = 500;

impl<'c, 't> Reader<'c, 't> {
    fn open(client: &SpiClient<'c>, twin: &'t Twin, last: i32, fetch: i64) -> Reader<'c, 't> {
        // At county scale the aggregate holds ~3,000 locations' arrays, more than 4 MB.
        let work_mem = spi::raise_work_mem(client, "64MB");
        let analyses = spi::ok(client.try_open_cursor(
            "SELECT location, week_end, ensemble, inputs_censored_below FROM enkf.checkpoints
              WHERE twin_id = $1 AND week_end = $2 ORDER BY location COLLATE \"C\"",
            &[DatumWithOid::from(twin.id), DatumWithOid::from(date(last))],
        ));
        // Each location's weeks and counts in any order, put in order here: hashing the rows
        // into locations and sorting each location's weeks afterwards took half the time of
        // sorting all of the twin's rows (bench/twin_breakdown.py --explain).
        let histories = spi::ok(client.try_open_cursor(
            "SELECT location, pg_catalog.array_agg(week_end - DATE '2000-01-01'), pg_catalog.array_agg(observed),
                    pg_catalog.array_agg(observed_ed)
               FROM enkf.checkpoints
              WHERE twin_id = $1 AND (observed IS NOT NULL OR observed_ed IS NOT NULL)
              GROUP BY location ORDER BY location COLLATE \"C\"",
            &[DatumWithOid::from(twin.id)],
        ));
        Reader {
            analyses,
            histories,
            merged: ByLocation::default(),
            fetch,
            twin,
            scratch: PgMemoryContexts::new("pg_enkf forecast"),
            work_mem,
        }
    }

    /// The next batch of locations (empty at the end), their counts censored as this run
    /// censors them (a protected twin).
    fn next(&mut self) -> Vec<Input> {
        let fetch = self.fetch;
        let analyses = &mut self.analyses;
        // SAFETY: the rows are copied into Rust values before the context is reset.
        let latest: Vec<Analysis> = unsafe {
            self.scratch.switch_to(|_| {
                let table = spi::ok(analyses.fetch(fetch));
                let rows = table.map(|r| spi::ok(analysis_of(&r))).collect();
                spi::free_tuptable();
                rows
            })
        };
        unsafe { self.scratch.reset() };
        let mut batch = Vec::with_capacity(latest.len());
        for (location, week, ensemble, censored_below) in latest {
            if ensemble.len() != ed::state_dim(&self.twin.config) * self.twin.members {
                catalog::corrupt_checkpoint(self.twin, &location, week, ensemble.len());
            }
            let histories = &mut self.histories;
            let (history, ed_history) = self
                .merged
                .take(&location, || {
                    let table = spi::ok(histories.fetch(FETCH_HISTORIES));
                    let rows = table.map(|r| spi::ok(history_of(&r))).collect();
                    spi::free_tuptable();
                    rows
                })
                .pop()
                .unwrap_or_default();
            batch.push(Input {
                analysis: StoredAnalysis {
                    location,
                    week,
                    ensemble,
                    history: censor(history, self.twin.censoring),
                    ed_history: self.twin.config.ed.enabled.then_some(ed_history),
                },
                censored_below,
            });
        }
        pgrx::check_for_interrupts!();
        batch
    }

    fn close(self, client: &SpiClient<'_>) {
        let work_mem = self.work_mem;
        drop(self.analyses);
        drop(self.histories);
        spi::restore_work_mem(client, work_mem);
    }
}

/// A location, its analysis's week and ensemble, and what its counts were censored below.
type Analysis = (String, i32, Vec<f64>, Option<f64>);

fn analysis_of(r: &SpiHeapTupleData<'_>) -> SpiResult<Analysis> {
    Ok((
        r.get::<String>(1)?.unwrap_or_default(),
        r.get::<Date>(2)?
            .map(|d| d.to_pg_epoch_days())
            .unwrap_or_default(),
        r.get::<Vec<f64>>(3)?.unwrap_or_default(),
        r.get::<f64>(4)?,
    ))
}

/// A history as the models of a protected twin see it.
fn censor(mut h: History, censoring: Option<Censoring>) -> History {
    if censoring.is_some() {
        for v in h.values.iter_mut().flatten() {
            *v = censored(censoring, *v);
        }
    }
    h
}

/// A location's assimilated counts, and ED-visit proportions, in week order (the aggregate
/// leaves them in any order); each holds only the weeks that reported it.
fn history_of(r: &SpiHeapTupleData<'_>) -> SpiResult<(String, (History, History))> {
    let weeks = r.get::<Vec<i32>>(2)?.unwrap_or_default();
    let counts = r.get::<Vec<Option<f64>>>(3)?.unwrap_or_default();
    let proportions = r.get::<Vec<Option<f64>>>(4)?.unwrap_or_default();
    let of = |values: Vec<Option<f64>>| {
        let mut pairs: Vec<(i32, f64)> = weeks
            .iter()
            .zip(values)
            .filter_map(|(w, v)| v.map(|v| (*w, v)))
            .collect();
        pairs.sort_unstable_by_key(|p| p.0);
        History {
            weeks: pairs.iter().map(|p| p.0).collect(),
            values: pairs.iter().map(|p| Some(p.1)).collect(),
        }
    };
    Ok((
        r.get::<String>(1)?.unwrap_or_default(),
        (of(counts), of(proportions)),
    ))
}

/// Forecast rows written per statement (2,048 rows of 23 quantiles: under 1 MB of parameters).
const WRITE_BATCH: usize = 2048;

/// A stored forecast waiting to be written.
struct Pending {
    model: &'static str,
    location: String,
    horizon: i32,
    censored_below: Option<f64>,
    values: Vec<f64>,
}

/// Writes a run's forecasts in batches.
struct Writer {
    twin_id: i64,
    run_id: i64,
    reference: i32,
    levels: Vec<f64>,
    sql: String,
    pending: Vec<Pending>,
    scratch: PgMemoryContexts,
}

impl Writer {
    fn new(twin: &Twin, run_id: i64, levels: &[f64], reference: i32) -> Writer {
        let sql = BulkInsert {
            table: "enkf.forecasts",
            shared: &["twin_id", "run_id", "quantile_levels", "reference_date"],
            per_row: &[
                ("model", "pg_catalog.text"),
                ("location", "pg_catalog.text"),
                ("horizon", "pg_catalog.int4"),
                ("target_end_date", "pg_catalog.date"),
                ("inputs_censored_below", "pg_catalog.float8"),
            ],
            sliced: &["quantile_values"],
            slices: Slices::Fixed(levels.len()),
        }
        .sql();
        Writer {
            twin_id: twin.id,
            run_id,
            reference,
            levels: levels.to_vec(),
            sql,
            pending: Vec::new(),
            scratch: PgMemoryContexts::new("pg_enkf forecast writes"),
        }
    }

    fn queue(
        &mut self,
        model: &'static str,
        location: &str,
        horizon: i32,
        censored_below: Option<f64>,
        values: Vec<f64>,
    ) {
        self.pending.push(Pending {
            model,
            location: location.to_string(),
            horizon,
            censored_below,
            values,
        });
    }

    fn flush_if_full(&mut self, client: &mut SpiClient<'_>) {
        if self.pending.len() >= WRITE_BATCH {
            self.flush(client);
        }
    }

    fn flush(&mut self, client: &mut SpiClient<'_>) {
        if self.pending.is_empty() {
            return;
        }
        let rows = std::mem::take(&mut self.pending);
        let (twin_id, run_id, reference) = (self.twin_id, self.run_id, self.reference);
        let (levels, sql) = (&self.levels, &self.sql);
        // SAFETY: the parameters are built, used and freed inside the switch; nothing allocated
        // in the scratch context outlives its reset.
        unsafe {
            self.scratch.switch_to(|_| {
                let mut models = Vec::with_capacity(rows.len());
                let mut locations = Vec::with_capacity(rows.len());
                let mut horizons = Vec::with_capacity(rows.len());
                let mut targets = Vec::with_capacity(rows.len());
                let mut recent = Vec::with_capacity(rows.len());
                let mut values = Vec::with_capacity(rows.len() * levels.len());
                for row in rows {
                    models.push(row.model);
                    locations.push(row.location);
                    horizons.push(row.horizon);
                    targets.push(date(reference + 7 * row.horizon));
                    recent.push(row.censored_below);
                    values.extend_from_slice(&row.values);
                }
                spi::update(
                    client,
                    sql,
                    &[
                        DatumWithOid::from(twin_id),
                        DatumWithOid::from(run_id),
                        DatumWithOid::from(levels.clone()),
                        DatumWithOid::from(date(reference)),
                        DatumWithOid::from(models),
                        DatumWithOid::from(locations),
                        DatumWithOid::from(horizons),
                        DatumWithOid::from(targets),
                        DatumWithOid::from(recent),
                        DatumWithOid::from(values),
                    ],
                );
            });
            self.scratch.reset();
        }
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
            fetch_locations: (max / (ed::state_dim(&twin.config) * twin.members).max(1))
                .clamp(1, 200) as i64,
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
