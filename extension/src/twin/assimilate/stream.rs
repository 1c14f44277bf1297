//! The planned locations' weekly cycles: their start states and their weekly rows are read
//! from two cursors in location order, queued as self-contained jobs, computed in parallel
//! batches (`enkf_core::twin::cycle`) and written as they come, so that memory stays within
//! `enkf.max_ensemble_elements` whatever the history or the number of locations.

use std::collections::HashMap;

use enkf_core::twin::cycle::{self, CycleContext, DataProblem, LocationJob, WeekData};
use enkf_core::twin::ed;
use pgrx::datum::{Date, DatumWithOid};
use pgrx::memcxt::PgMemoryContexts;
use pgrx::prelude::*;
use pgrx::spi::{SpiClient, SpiCursor, SpiHeapTupleData, SpiResult};

use super::plan::Plan;
use super::write::{self, CheckpointWriter};
use crate::error::raise;
use crate::spi;
use crate::spi::merge::ByLocation;
use crate::twin::catalog::{self, Twin};
use crate::twin::dates::date;
use crate::twin::source::Source;

/// What a run did.
#[derive(Default)]
pub(super) struct Totals {
    /// Locations carried to the end week.
    pub locations: i32,
    pub observations: i32,
    pub first_week: Option<i32>,
    pub last_week: Option<i32>,
    pub compute_seconds: f64,
}

/// Location-weeks computed per parallel batch, at most: fewer when the checkpoints they make
/// would hold more than `enkf.max_ensemble_elements` values (`Stream::budget_weeks`).
const BATCH_WEEKS: usize = 2048;

/// Weekly rows fetched from the cursor at a time.
const FETCH_ROWS: i64 = 2000;

/// Where a location's run starts, from the first cursor.
struct Start {
    location: String,
    week: i32,
    /// The analysis of the week before (None: start from the prior, or replay).
    ensemble: Option<Vec<f64>>,
    /// The counts before, latest first.
    recent: Vec<f64>,
    /// The ED-visit proportions before, latest first (a twin with the ED stream).
    recent_ed: Vec<f64>,
}

struct Stream<'a> {
    twin: &'a Twin,
    source: &'a Source,
    populations: &'a HashMap<String, f64>,
    origin: i32,
    end_week: i32,
    jobs: Vec<LocationJob>,
    batch_weeks: usize,
    /// Location-weeks whose checkpoints fit in `enkf.max_ensemble_elements` values: what one
    /// round of computing may hold in memory before it is written.
    budget_weeks: usize,
    writer: CheckpointWriter,
    totals: Totals,
}

/// Runs every planned location to the plan's end week and stores its checkpoints.
pub(super) fn run(
    client: &mut SpiClient<'_>,
    twin: &Twin,
    source: &Source,
    populations: &HashMap<String, f64>,
    plan: &Plan,
    run_id: i64,
) -> Totals {
    if plan.locations.is_empty() {
        return Totals::default();
    }
    let mut stream = Stream {
        twin,
        source,
        populations,
        origin: plan.origin,
        end_week: plan.end_week,
        jobs: Vec::new(),
        batch_weeks: 0,
        budget_weeks: (crate::guc::MAX_ENSEMBLE_ELEMENTS.get().max(1) as usize
            / (ed::state_dim(&twin.config) * twin.members).max(1))
        .max(1),
        writer: CheckpointWriter::new(twin, run_id),
        totals: Totals::default(),
    };
    let mut states = open_start_states(client, twin, plan);
    let mut data = open_weekly_rows(client, source, plan);
    // Start states hold an ensemble each: fetched no more at a time than the budget allows.
    let fetch_states = stream.budget_weeks.clamp(1, 256) as i64;
    let mut scratch = PgMemoryContexts::new("pg_enkf assimilate states");
    let mut weekly = ByLocation::default();
    loop {
        // SAFETY: the fetched tuples are copied into Rust values and freed inside the switch.
        let batch: Vec<Start> = unsafe {
            scratch.switch_to(|_| {
                let table = spi::ok(states.fetch(fetch_states));
                let out = table.map(|r| spi::ok(start_of(&r))).collect();
                spi::free_tuptable();
                out
            })
        };
        unsafe { scratch.reset() };
        if batch.is_empty() {
            break;
        }
        for start in batch {
            let weeks = weekly.take(&start.location, || {
                let table = spi::ok(data.fetch(FETCH_ROWS));
                let rows = table.map(|r| spi::ok(week_of(&r))).collect();
                spi::free_tuptable();
                rows
            });
            stream.push(client, start, weeks);
        }
    }
    stream.run_batch(client);
    drop(states);
    drop(data);
    stream.totals
}

/// The planned locations' start states (`start_of`), in location order: the checkpoint of
/// the week before each start and the recent counts the observation error needs.
fn open_start_states<'c>(client: &SpiClient<'c>, twin: &Twin, plan: &Plan) -> SpiCursor<'c> {
    let (locations, starts) = plan_columns(plan);
    spi::ok(client.try_open_cursor(
        "SELECT p.loc, p.start, cp.ensemble,
                ARRAY(SELECT r.observed FROM enkf.checkpoints r
                       WHERE r.twin_id = $1 AND r.location = p.loc AND r.week_end < p.start
                         AND r.observed IS NOT NULL ORDER BY r.week_end DESC LIMIT $4),
                ARRAY(SELECT r.observed_ed FROM enkf.checkpoints r
                       WHERE r.twin_id = $1 AND r.location = p.loc AND r.week_end < p.start
                         AND r.observed_ed IS NOT NULL ORDER BY r.week_end DESC LIMIT $5)
           FROM ROWS FROM (pg_catalog.unnest($2::pg_catalog.text[]), pg_catalog.unnest($3::pg_catalog.date[])) AS p(loc, start)
           LEFT JOIN enkf.checkpoints cp ON cp.twin_id = $1 AND cp.location = p.loc AND cp.week_end = p.start - 7
          ORDER BY p.loc COLLATE \"C\"",
        &[
            DatumWithOid::from(twin.id),
            DatumWithOid::from(locations),
            DatumWithOid::from(starts),
            DatumWithOid::from(twin.config.observation_error.window as i64),
            DatumWithOid::from(twin.config.ed.observation_error.window as i64),
        ],
    ))
}

/// The planned locations' weekly rows (`week_of`) from their starts to the end week, in the
/// same location order.
fn open_weekly_rows<'c>(client: &SpiClient<'c>, source: &Source, plan: &Plan) -> SpiCursor<'c> {
    let (locations, starts) = plan_columns(plan);
    let min_start = plan
        .locations
        .iter()
        .map(|p| p.start)
        .min()
        .unwrap_or(plan.origin);
    let rows_sql = format!(
        "SELECT s.loc, s.week_end, CASE WHEN pg_catalog.bool_and(s.ok) THEN pg_catalog.sum(s.v) END,
                pg_catalog.count(*), pg_catalog.count(DISTINCT s.t),
                pg_catalog.min(s.v) FILTER (WHERE s.ok), pg_catalog.bit_xor({print}), {ed}
           FROM ({raw}) s JOIN ROWS FROM (pg_catalog.unnest($3::pg_catalog.text[]), pg_catalog.unnest($4::pg_catalog.date[])) AS p(loc, start)
             ON p.loc = s.loc AND s.week_end >= p.start
          WHERE s.week_end <= $2
          GROUP BY s.loc, s.week_end ORDER BY s.loc COLLATE \"C\", s.week_end",
        raw = source.raw_sql(Some((1, 2))),
        print = source.row_print_sql(),
        ed = Source::week_ed_sql(),
    );
    spi::ok(client.try_open_cursor(
        rows_sql.as_str(),
        &[
            DatumWithOid::from(date(min_start)),
            DatumWithOid::from(date(plan.end_week)),
            DatumWithOid::from(locations),
            DatumWithOid::from(starts),
        ],
    ))
}

/// The plan's locations and start weeks, as the two array parameters of the cursors.
fn plan_columns(plan: &Plan) -> (Vec<String>, Vec<Date>) {
    plan.locations
        .iter()
        .map(|p| (p.location.clone(), date(p.start)))
        .unzip()
}

fn start_of(r: &SpiHeapTupleData<'_>) -> SpiResult<Start> {
    Ok(Start {
        location: r.get::<String>(1)?.unwrap_or_default(),
        week: r
            .get::<Date>(2)?
            .map(|d| d.to_pg_epoch_days())
            .unwrap_or_default(),
        ensemble: r.get::<Vec<f64>>(3)?,
        recent: r
            .get::<Vec<Option<f64>>>(4)?
            .unwrap_or_default()
            .into_iter()
            .flatten()
            .collect(),
        recent_ed: r
            .get::<Vec<Option<f64>>>(5)?
            .unwrap_or_default()
            .into_iter()
            .flatten()
            .collect(),
    })
}

/// A location's week from the weekly rows query (location, week_end, value, rows, times,
/// smallest value, fingerprint, ED proportion).
fn week_of(r: &SpiHeapTupleData<'_>) -> SpiResult<(String, WeekData)> {
    Ok((r.get::<String>(1)?.unwrap_or_default(), week_data(r, 2)?))
}

/// The week from column `from` on: week_end, value, rows, times, smallest value, fingerprint,
/// ED proportion.
fn week_data(r: &SpiHeapTupleData<'_>, from: usize) -> SpiResult<WeekData> {
    Ok(WeekData {
        week: r
            .get::<Date>(from)?
            .map(|d| d.to_pg_epoch_days())
            .unwrap_or_default(),
        value: r.get::<f64>(from + 1)?,
        rows: r.get::<i64>(from + 2)?.unwrap_or(0),
        times: r.get::<i64>(from + 3)?.unwrap_or(0),
        min_value: r.get::<f64>(from + 4)?,
        fingerprint: r.get::<i64>(from + 5)?.unwrap_or(0),
        ed: r.get::<f64>(from + 6)?,
    })
}

impl Stream<'_> {
    fn population(&self, name: &str) -> f64 {
        match self.populations.get(name) {
            Some(p) => *p,
            None => raise(
                PgSqlErrorCode::ERRCODE_FOREIGN_KEY_VIOLATION,
                format!(
                    "observations: location \"{name}\" has no row in {}",
                    self.twin.locations
                ),
                None,
                "add the location with its population to the locations table, or filter it out with a view",
            ),
        }
    }

    /// Queues a location's work; runs the batch when it is large enough.
    fn push(&mut self, client: &mut SpiClient<'_>, start: Start, weeks: Vec<WeekData>) {
        let population = self.population(&start.location);
        let job = if start.week > self.origin && start.ensemble.is_none() {
            // The checkpoint this needs is gone (pruned by checkpoints.keep_weeks), or the
            // location first appears after the origin: replay it from the prior, reading its
            // rows afresh.
            self.replay_job(client, start.location, population)
        } else {
            LocationJob {
                location: start.location,
                population,
                start: start.week,
                ensemble: start.ensemble,
                recent: start.recent.into_iter().rev().collect(),
                recent_ed: start.recent_ed.into_iter().rev().collect(),
                weeks,
            }
        };
        self.batch_weeks += ((self.end_week - job.start.max(self.origin)) / 7 + 1).max(0) as usize;
        self.jobs.push(job);
        if self.batch_weeks >= BATCH_WEEKS.min(self.budget_weeks) {
            self.run_batch(client);
        }
    }

    fn replay_job(
        &mut self,
        client: &mut SpiClient<'_>,
        location: String,
        population: f64,
    ) -> LocationJob {
        write::cut_location(client, self.twin, &location);
        let query = format!(
            "SELECT week_end, value, n_rows, n_times, min_value, print, ed FROM ({}) w
              WHERE loc = $3 AND week_end BETWEEN $1 AND $2 ORDER BY week_end",
            self.source.weekly_sql(Some((1, 2)))
        );
        let weeks = spi::select(
            client,
            &query,
            &[
                DatumWithOid::from(date(self.origin)),
                DatumWithOid::from(date(self.end_week)),
                DatumWithOid::from(location.as_str()),
            ],
            |r| week_data(r, 1),
        );
        LocationJob {
            location,
            population,
            start: self.origin,
            ensemble: None,
            recent: Vec::new(),
            recent_ed: Vec::new(),
            weeks,
        }
    }

    /// Computes the queued locations (on `enkf.threads` threads) and writes their checkpoints,
    /// in rounds that each hold at most `budget_weeks` location-weeks of checkpoints (a long
    /// history of a large ensemble goes in several rounds, each continuing the last).
    fn run_batch(&mut self, client: &mut SpiClient<'_>) {
        let mut jobs = std::mem::take(&mut self.jobs);
        self.batch_weeks = 0;
        let ctx = CycleContext {
            config: &self.twin.config,
            members: self.twin.members,
            origin: self.origin,
            end_week: self.end_week,
            censoring: self.twin.censoring,
        };
        while !jobs.is_empty() {
            pgrx::check_for_interrupts!();
            let max_weeks = (self.budget_weeks / jobs.len()).max(1);
            let t = std::time::Instant::now();
            let outcomes = crate::parallel::map(&jobs, |job| cycle::run(&ctx, job, max_weeks));
            self.totals.compute_seconds += t.elapsed().as_secs_f64();
            let mut rest = Vec::new();
            for outcome in outcomes {
                let cycled = outcome.unwrap_or_else(|p| self.raise(p));
                if cycled.rest.is_none() {
                    self.totals.locations += 1;
                }
                self.totals.observations += cycled.observations;
                for c in cycled.checkpoints {
                    let t = &mut self.totals;
                    t.first_week = Some(t.first_week.map_or(c.week, |w| w.min(c.week)));
                    t.last_week = Some(t.last_week.map_or(c.week, |w| w.max(c.week)));
                    self.writer.push(client, c);
                }
                rest.extend(cycled.rest);
            }
            self.writer.flush(client);
            jobs = rest;
        }
    }

    fn raise(&self, problem: DataProblem) -> ! {
        let iso = enkf_core::dates::iso;
        match problem {
            DataProblem::Duplicate { location, week } => raise(
                PgSqlErrorCode::ERRCODE_UNIQUE_VIOLATION,
                format!(
                    "observations: {} has more than one row for location \"{location}\" at the same time (week ending {})",
                    self.twin.observations,
                    iso(week)
                ),
                None,
                "keep one row per (time, location), e.g. with a unique index, or deduplicate in a view",
            ),
            DataProblem::Negative { location, week, value } => raise(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!(
                    "observations: negative count {value} for location \"{location}\" in the week ending {}",
                    iso(week)
                ),
                None,
                "counts must be >= 0; mark unreported weeks with NULL or NaN",
            ),
            DataProblem::EdProportion { location, week, value } => raise(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!(
                    "observations: ED-visit proportion {value} in column \"{}\" for location \"{location}\" in the week ending {} is outside [0, 1]",
                    self.twin.ed_column.as_deref().unwrap_or("ed"),
                    iso(week)
                ),
                None,
                "ED proportions are fractions of visits (0.012 for 1.2%); mark unreported weeks with NULL",
            ),
            DataProblem::Corrupt { location, week, len } => {
                catalog::corrupt_checkpoint(self.twin, &location, week, len)
            }
            DataProblem::Numerics(e) => crate::error::raise_core(e),
        }
    }
}
