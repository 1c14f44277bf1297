//! `enkf.assimilate`: steps every location's ensemble through the weeks up to `through`,
//! updating it with each observed count, and stores one checkpoint per location and week.
//!
//! It is incremental: each location resumes from its latest checkpoint. Counts that changed
//! since they were assimilated (NHSN backfill) are found by comparing the table with the counts
//! stored in the checkpoints; the location is then re-assimilated from the checkpoint of the
//! week before the earliest change. Missing weeks (NULL, NaN, no row) are forecast without an
//! update. Rows are streamed through a cursor, one location at a time, so memory does not grow
//! with the history or the number of locations.

// pgrx needs the returned row tuple spelled out in the #[pg_extern] signature.
#![allow(clippy::type_complexity)]

use std::collections::{HashMap, VecDeque};

use enkf_core::model::seirh::STATE_DIM;
use enkf_core::twin::LocationModel;
use nalgebra::DMatrix;
use pgrx::datum::{Date, DatumWithOid, TimestampWithTimeZone};
use pgrx::memcxt::PgMemoryContexts;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;

use super::catalog::{self, Twin};
use super::dates::date;
use super::provenance;
use super::source::Source;
use super::spi;
use crate::arrays::Float8Matrix;
use crate::error::{null_argument, null_option, raise};

pub(super) fn timestamptz_of(
    client: &SpiClient<'_>,
    days: Option<i32>,
) -> Option<TimestampWithTimeZone> {
    days.and_then(|d| {
        spi::one::<TimestampWithTimeZone>(
            client,
            "SELECT $1::pg_catalog.date::pg_catalog.timestamptz",
            &[DatumWithOid::from(date(d))],
        )
    })
}

/// A week of a location to (re-)assimilate, from the table.
#[derive(Clone)]
struct Row {
    location: String,
    week: i32,
    value: Option<f64>,
    n_rows: i64,
    n_times: i64,
    min_value: Option<f64>,
    /// XOR of the hashes of the week's rows (`Source::row_print_sql`).
    print: i64,
}

/// Where a location's run starts: its first week to process, and the analysis of the week
/// before with the counts that preceded it (None: start from the prior, or replay).
struct Start {
    location: String,
    week: i32,
    ensemble: Option<Vec<f64>>,
    /// Latest first.
    recent: Vec<f64>,
}

/// One location's work, self-contained so that it can run on any thread.
struct Job {
    location: String,
    population: f64,
    /// First week to process (the origin for a run from the prior).
    start: i32,
    ensemble: Option<Vec<f64>>,
    /// Chronological.
    recent: Vec<f64>,
    rows: Vec<Row>,
}

/// A checkpoint to write.
struct Pending {
    location: String,
    week: i32,
    observed: Option<f64>,
    /// The week's rows in the table: their fingerprint and number (0 and 0 without rows).
    print: i64,
    rows: i32,
    ensemble: DMatrix<f64>,
}

struct Outcome {
    checkpoints: Vec<Pending>,
    observations: i32,
}

/// What can go wrong in a location's work; raised by the backend's thread.
enum Problem {
    Duplicate {
        location: String,
        week: i32,
    },
    Negative {
        location: String,
        week: i32,
        value: f64,
    },
    Corrupt {
        location: String,
        week: i32,
        len: usize,
    },
    Numerics(enkf_core::EnkfError),
}

#[derive(Default)]
struct Stats {
    locations: i32,
    observations: i32,
    reassimilated: i32,
    first_week: Option<i32>,
    last_week: Option<i32>,
}

/// The parts of a run every location's work reads.
struct Ctx<'a> {
    config: &'a enkf_core::twin::TwinConfig,
    members: usize,
    origin: i32,
    end_week: i32,
}

fn validate(row: &Row) -> Result<(), Problem> {
    if row.n_rows > row.n_times {
        return Err(Problem::Duplicate {
            location: row.location.clone(),
            week: row.week,
        });
    }
    match row.min_value {
        Some(v) if v < 0.0 => Err(Problem::Negative {
            location: row.location.clone(),
            week: row.week,
            value: v,
        }),
        _ => Ok(()),
    }
}

/// Steps a location from its start state through the end week, updating with each count, for
/// at most `max_weeks` weeks: pure computation, no database access. Returns the checkpoints
/// and, when weeks are left, the job that continues from the last of them (the same
/// arithmetic as one uninterrupted run: every draw is seeded by location and week).
fn process(ctx: &Ctx<'_>, job: &Job, max_weeks: usize) -> Result<(Outcome, Option<Job>), Problem> {
    let model = LocationModel::new(ctx.config, &job.location, job.population);
    let (mut ens, mut recent) = match &job.ensemble {
        Some(flat) if job.start > ctx.origin => {
            if flat.len() != STATE_DIM * ctx.members {
                return Err(Problem::Corrupt {
                    location: job.location.clone(),
                    week: job.start - 7,
                    len: flat.len(),
                });
            }
            (
                DMatrix::from_row_slice(STATE_DIM, ctx.members, flat),
                job.recent.iter().cloned().collect::<VecDeque<f64>>(),
            )
        }
        _ => (model.prior(ctx.members), VecDeque::new()),
    };
    let window = ctx.config.observation_error.window;
    let mut out = Outcome {
        checkpoints: Vec::new(),
        observations: 0,
    };
    let mut advance = |ens: &mut DMatrix<f64>,
                       recent: &mut VecDeque<f64>,
                       week: i32,
                       value: Option<f64>,
                       print: i64,
                       rows: i32|
     -> Result<(), Problem> {
        model.step(ens, week);
        if let Some(y) = value {
            recent.push_back(y);
            while recent.len() > window {
                recent.pop_front();
            }
            let mean = recent.iter().sum::<f64>() / recent.len() as f64;
            model
                .update(ens, y, mean, week)
                .map_err(Problem::Numerics)?;
            out.observations += 1;
        }
        out.checkpoints.push(Pending {
            location: job.location.clone(),
            week,
            observed: value,
            print,
            rows,
            ensemble: ens.clone(),
        });
        Ok(())
    };
    let mut week = job.start.max(ctx.origin) - 7;
    let mut next_row = 0;
    for _ in 0..max_weeks.max(1) {
        match job.rows.get(next_row) {
            // A week with rows (weeks without rows before it are stepped through first).
            Some(row) if row.week <= week + 7 => {
                validate(row)?;
                week = row.week;
                let rows = i32::try_from(row.n_rows).unwrap_or(i32::MAX);
                advance(&mut ens, &mut recent, week, row.value, row.print, rows)?;
                next_row += 1;
            }
            _ if week < ctx.end_week => {
                week += 7;
                advance(&mut ens, &mut recent, week, None, 0, 0)?;
            }
            _ => break,
        }
    }
    let rest = (next_row < job.rows.len() || week < ctx.end_week).then(|| Job {
        location: job.location.clone(),
        population: job.population,
        start: week + 7,
        // Row-major [state][members], as a checkpoint stores it.
        ensemble: Some(ens.transpose().as_slice().to_vec()),
        recent: recent.into_iter().collect(),
        rows: job.rows[next_row..].to_vec(),
    });
    Ok((out, rest))
}

/// Checkpoints written per statement, at most; fewer for large ensembles (`FLUSH_VALUES`).
const FLUSH_ROWS: usize = 128;
/// Ensemble values written per statement, at most (8 MB of parameters).
const FLUSH_VALUES: usize = 1 << 20;
/// Location-weeks computed per parallel batch, at most: fewer when the checkpoints they make
/// would hold more than `enkf.max_ensemble_elements` values (`Run::budget_weeks`).
const BATCH_WEEKS: i64 = 2048;

struct Run<'a> {
    twin: &'a Twin,
    source: &'a Source,
    populations: &'a HashMap<String, f64>,
    origin: i32,
    end_week: i32,
    run_id: i64,
    stats: Stats,
    pending: Vec<Pending>,
    jobs: Vec<Job>,
    batch_weeks: i64,
    /// Location-weeks whose checkpoints fit in `enkf.max_ensemble_elements` values: what one
    /// round of computing may hold in memory before it is written.
    budget_weeks: usize,
    compute_seconds: f64,
    scratch: PgMemoryContexts,
}

impl<'a> Run<'a> {
    fn raise(&self, problem: Problem) -> ! {
        match problem {
            Problem::Duplicate { location, week } => raise(
                PgSqlErrorCode::ERRCODE_UNIQUE_VIOLATION,
                format!(
                    "observations: {} has more than one row for location \"{location}\" at the same time (week ending {})",
                    self.twin.observations,
                    enkf_core::dates::iso(week)
                ),
                None,
                "keep one row per (time, location), e.g. with a unique index, or deduplicate in a view",
            ),
            Problem::Negative { location, week, value } => raise(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!(
                    "observations: negative count {value} for location \"{location}\" in the week ending {}",
                    enkf_core::dates::iso(week)
                ),
                None,
                "counts must be >= 0; mark unreported weeks with NULL or NaN",
            ),
            Problem::Corrupt { location, week, len } => raise(
                PgSqlErrorCode::ERRCODE_DATA_CORRUPTED,
                format!(
                    "checkpoint of twin \"{}\", location \"{location}\", week {} has {len} values, expected {}",
                    self.twin.name,
                    enkf_core::dates::iso(week),
                    STATE_DIM * self.twin.members
                ),
                None,
                "the checkpoints table was changed outside pg_enkf; drop and re-create the twin",
            ),
            Problem::Numerics(e) => crate::error::raise_core(e),
        }
    }

    fn population(&self, name: &str) -> f64 {
        match self.populations.get(name) {
            Some(p) => *p,
            None => raise(
                PgSqlErrorCode::ERRCODE_FOREIGN_KEY_VIOLATION,
                format!("observations: location \"{name}\" has no row in {}", self.twin.locations),
                None,
                "add the location with its population to the locations table, or filter it out with a view",
            ),
        }
    }

    /// Queues a location's work; runs the batch when it is large enough.
    fn push(&mut self, client: &mut SpiClient<'_>, start: Start, rows: Vec<Row>) {
        let population = self.population(&start.location);
        let job = if start.week > self.origin && start.ensemble.is_none() {
            // The checkpoint this needs is gone (pruned by checkpoints.keep_weeks), or the location
            // first appears after the origin: replay it from the prior, reading its rows afresh.
            self.replay_job(client, start.location, population)
        } else {
            Job {
                location: start.location,
                population,
                start: start.week,
                ensemble: start.ensemble,
                recent: start.recent.into_iter().rev().collect(),
                rows,
            }
        };
        self.batch_weeks += ((self.end_week - job.start.max(self.origin)) / 7 + 1) as i64;
        self.jobs.push(job);
        if self.batch_weeks >= BATCH_WEEKS.min(self.budget_weeks as i64) {
            self.run_batch(client);
        }
    }

    fn replay_job(&mut self, client: &mut SpiClient<'_>, location: String, population: f64) -> Job {
        spi::update(
            client,
            "DELETE FROM enkf.checkpoints WHERE twin_id = $1 AND location = $2",
            &[
                DatumWithOid::from(self.twin.id),
                DatumWithOid::from(location.as_str()),
            ],
        );
        let query = format!(
            "SELECT week_end, value, n_rows, n_times, min_value, print FROM ({}) w
              WHERE loc = $3 AND week_end BETWEEN $1 AND $2 ORDER BY week_end",
            self.source.weekly_sql(Some((1, 2)))
        );
        let rows = spi::select(
            client,
            &query,
            &[
                DatumWithOid::from(date(self.origin)),
                DatumWithOid::from(date(self.end_week)),
                DatumWithOid::from(location.as_str()),
            ],
            |r| {
                Ok(Row {
                    location: location.clone(),
                    week: r
                        .get::<Date>(1)?
                        .map(|d| d.to_pg_epoch_days())
                        .unwrap_or_default(),
                    value: r.get::<f64>(2)?,
                    n_rows: r.get::<i64>(3)?.unwrap_or_default(),
                    n_times: r.get::<i64>(4)?.unwrap_or_default(),
                    min_value: r.get::<f64>(5)?,
                    print: r.get::<i64>(6)?.unwrap_or(0),
                })
            },
        );
        Job {
            location,
            population,
            start: self.origin,
            ensemble: None,
            recent: Vec::new(),
            rows,
        }
    }

    /// Computes the queued locations (on `enkf.threads` threads) and writes their checkpoints,
    /// in rounds that each hold at most `budget_weeks` location-weeks of checkpoints (a long
    /// history of a large ensemble goes in several rounds, each continuing the last).
    fn run_batch(&mut self, client: &mut SpiClient<'_>) {
        let mut jobs = std::mem::take(&mut self.jobs);
        self.batch_weeks = 0;
        let twin = self.twin;
        let ctx = Ctx {
            config: &twin.config,
            members: twin.members,
            origin: self.origin,
            end_week: self.end_week,
        };
        let flush_rows = (FLUSH_VALUES / (STATE_DIM * twin.members).max(1)).clamp(1, FLUSH_ROWS);
        while !jobs.is_empty() {
            pgrx::check_for_interrupts!();
            let max_weeks = (self.budget_weeks / jobs.len()).max(1);
            let t = std::time::Instant::now();
            let outcomes = crate::parallel::map(&jobs, |job| process(&ctx, job, max_weeks));
            self.compute_seconds += t.elapsed().as_secs_f64();
            let mut rest = Vec::new();
            for outcome in outcomes {
                let (outcome, more) = outcome.unwrap_or_else(|p| self.raise(p));
                if more.is_none() {
                    self.stats.locations += 1;
                }
                self.stats.observations += outcome.observations;
                for c in outcome.checkpoints {
                    self.stats.first_week =
                        Some(self.stats.first_week.map_or(c.week, |w| w.min(c.week)));
                    self.stats.last_week =
                        Some(self.stats.last_week.map_or(c.week, |w| w.max(c.week)));
                    self.pending.push(c);
                    if self.pending.len() >= flush_rows {
                        self.flush(client);
                    }
                }
                rest.extend(more);
            }
            self.flush(client);
            jobs = rest;
        }
    }

    fn flush(&mut self, client: &mut SpiClient<'_>) {
        if self.pending.is_empty() {
            return;
        }
        let rows = std::mem::take(&mut self.pending);
        let sql = format!(
            "INSERT INTO enkf.checkpoints (twin_id, run_id, location, week_end, observed, rows_print, source_rows, ensemble) VALUES {}",
            spi::values_placeholders(2, 6, rows.len())
        );
        let (twin_id, run_id) = (self.twin.id, self.run_id);
        unsafe {
            self.scratch.switch_to(|_| {
                let mut args: Vec<DatumWithOid<'_>> = Vec::with_capacity(2 + 6 * rows.len());
                args.push(DatumWithOid::from(twin_id));
                args.push(DatumWithOid::from(run_id));
                for r in rows {
                    args.push(DatumWithOid::from(r.location));
                    args.push(DatumWithOid::from(date(r.week)));
                    args.push(
                        r.observed
                            .map_or(DatumWithOid::null::<f64>(), DatumWithOid::from),
                    );
                    args.push(DatumWithOid::from(r.print));
                    args.push(DatumWithOid::from(r.rows));
                    args.push(DatumWithOid::from(Float8Matrix::from_state_major(
                        &r.ensemble,
                    )));
                }
                spi::update(client, &sql, &args);
            });
            self.scratch.reset();
        }
    }
}

/// The largest population a location may have (people).
const MAX_POPULATION: f64 = 1e10;

/// Populations of the twin's locations, read under the caller; every one in (0, 1e10].
fn populations(client: &SpiClient<'_>, twin: &Twin) -> HashMap<String, f64> {
    let rows = spi::select(
        client,
        &format!(
            "SELECT (location)::pg_catalog.text, (population)::pg_catalog.float8 FROM {}",
            twin.locations
        ),
        &[],
        |r| Ok((r.get::<String>(1)?, r.get::<f64>(2)?)),
    );
    let mut out = HashMap::with_capacity(rows.len());
    for (loc, pop) in rows {
        let loc = match loc {
            Some(l) => l,
            None => continue,
        };
        match pop {
            None => raise(
                PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
                format!(
                    "locations: population of \"{loc}\" in {} is NULL",
                    twin.locations
                ),
                None,
                "every location needs its population (people), used to scale the compartments",
            ),
            // Above the world's population the compartments' variances overflow float8.
            Some(p) if !(p.is_finite() && p > 0.0 && p <= MAX_POPULATION) => raise(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!(
                    "locations: population of \"{loc}\" in {} is {p}",
                    twin.locations
                ),
                None,
                "populations must be numbers of people: positive, at most 10 billion",
            ),
            Some(p) => {
                out.insert(loc, p);
            }
        }
    }
    out
}

/// The locations whose stored counts differ from the table, each with the earliest week
/// that differs and whether that week had been assimilated (a revision) or not (new data).
///
/// Comparing every (location, week) of the table with the checkpoints is a join of two
/// tables of locations x weeks rows. Most weeks nothing was revised, so the comparison goes
/// per location first: an order-independent fingerprint of the rows it was assimilated from
/// (the XOR of a 64-bit hash of each row's time and count, and their number), from one hash
/// aggregate over the table, against the same kept per week in the checkpoints. Only
/// locations whose fingerprints or first weeks differ are compared week by week. (A change
/// goes unnoticed only if it keeps the number of rows and the hashes of the rows changed XOR
/// to zero: a chance of 2^-64.)
fn revision_starts(
    client: &SpiClient<'_>,
    source: &Source,
    twin_id: i64,
    compare_from: i32,
    end_week: i32,
    previous_end: Option<i32>,
    kept: &HashMap<String, i32>,
) -> (HashMap<String, (i32, bool)>, Vec<String>) {
    let weekly = source.weekly_values_sql(Some((1, 2)));
    let (from, to) = (date(compare_from), date(end_week));
    let suspects: Option<Vec<String>> = previous_end.map(|prev| {
        let table: HashMap<String, Print> = spi::select(
            client,
            &format!(
                "SELECT loc, pg_catalog.min(week_end),
                        coalesce(pg_catalog.bit_xor({print}) FILTER (WHERE week_end <= $3), 0),
                        pg_catalog.count(*) FILTER (WHERE week_end <= $3), false
                   FROM ({raw}) o GROUP BY loc",
                print = source.row_print_sql(),
                raw = source.raw_sql(Some((1, 2))),
            ),
            &[
                DatumWithOid::from(from),
                DatumWithOid::from(to),
                DatumWithOid::from(date(prev)),
            ],
            location_print,
        )
        .into_iter()
        .collect();
        // Checkpoints written before 0.2.0 have no fingerprint (NULL): their locations are
        // compared week by week, and `refresh_prints` fills the fingerprints in.
        let stored: HashMap<String, Print> = spi::select(
            client,
            "SELECT location, pg_catalog.min(week_end), coalesce(pg_catalog.bit_xor(rows_print), 0),
                    coalesce(pg_catalog.sum(source_rows), 0),
                    pg_catalog.bool_or(source_rows IS NULL OR rows_print IS NULL)
               FROM enkf.checkpoints
              WHERE twin_id = $3 AND week_end BETWEEN $1 AND $2
              GROUP BY location",
            &[
                DatumWithOid::from(from),
                DatumWithOid::from(date(prev)),
                DatumWithOid::from(twin_id),
            ],
            location_print,
        )
        .into_iter()
        .collect();
        // Differs: a fingerprint, or data earlier than the first checkpoint, or one side only,
        // or a location not carried to the last week (left out of an earlier run).
        let mut out: Vec<String> = table
            .iter()
            .filter(|(loc, here)| match stored.get(*loc) {
                Some(there) => {
                    there.legacy
                        || (here.print, here.rows) != (there.print, there.rows)
                        || here.first < there.first
                        || !kept.contains_key(*loc)
                }
                None => true,
            })
            .map(|(loc, _)| loc.clone())
            .collect();
        out.extend(
            stored
                .iter()
                .filter(|(loc, there)| {
                    (there.rows > 0 || there.legacy) && !table.contains_key(*loc)
                })
                .map(|(loc, _)| loc.clone()),
        );
        out
    });
    if suspects.as_ref().is_some_and(|s| s.is_empty()) {
        return (HashMap::new(), Vec::new());
    }
    // Week by week, for the suspects only (all locations on a twin's first run).
    let only = |col: &str| match suspects {
        Some(_) => format!(" AND {col} = ANY($4::pg_catalog.text[])"),
        None => String::new(),
    };
    let diff_sql = format!(
        "WITH o AS (SELECT * FROM ({weekly}) w WHERE true{o_only}),
              c AS (SELECT location, week_end, observed FROM enkf.checkpoints
                     WHERE twin_id = $3 AND week_end BETWEEN $1 AND $2{c_only})
         SELECT coalesce(o.loc, c.location), pg_catalog.min(coalesce(o.week_end, c.week_end)),
                -- Whether the earliest differing week had been assimilated (a revision): an
                -- aggregate without a per-group sort.
                pg_catalog.min(c.week_end) = pg_catalog.min(coalesce(o.week_end, c.week_end))
           FROM o FULL JOIN c ON c.location = o.loc AND c.week_end = o.week_end
          WHERE (c.location IS NULL OR c.observed IS DISTINCT FROM o.value)
            AND coalesce(o.week_end, c.week_end) BETWEEN $1 AND $2
          GROUP BY 1",
        o_only = only("w.loc"),
        c_only = only("location"),
    );
    let mut args = vec![
        DatumWithOid::from(from),
        DatumWithOid::from(to),
        DatumWithOid::from(twin_id),
    ];
    if let Some(s) = &suspects {
        args.push(DatumWithOid::from(s.clone()));
    }
    let starts = spi::select(client, &diff_sql, &args, |r| {
        Ok((
            r.get::<String>(1)?.unwrap_or_default(),
            (
                r.get::<Date>(2)?
                    .map(|d| d.to_pg_epoch_days())
                    .unwrap_or_default(),
                r.get::<bool>(3)?.unwrap_or(false),
            ),
        ))
    })
    .into_iter()
    .collect();
    (starts, suspects.unwrap_or_default())
}

/// A location's first week in the compared weeks and the fingerprint of its rows there.
struct Print {
    first: i32,
    print: i64,
    rows: i64,
    /// Some checkpoints have no fingerprint (written before 0.2.0).
    legacy: bool,
}

fn location_print(r: &pgrx::spi::SpiHeapTupleData<'_>) -> pgrx::spi::SpiResult<(String, Print)> {
    Ok((
        r.get::<String>(1)?.unwrap_or_default(),
        Print {
            first: r
                .get::<Date>(2)?
                .map(|d| d.to_pg_epoch_days())
                .unwrap_or_default(),
            print: r.get::<i64>(3)?.unwrap_or(0),
            rows: r.get::<i64>(4)?.unwrap_or(0),
            legacy: r.get::<bool>(5)?.unwrap_or(false),
        },
    ))
}

/// Stores the table's fingerprint in the checkpoints of the suspects' weeks whose counts are
/// unchanged (rows rewritten with the same weekly count, or checkpoints from before 0.2.0), so
/// that they are not compared week by week again on every run. Weeks whose counts changed are
/// re-assimilated, and their checkpoints rewritten, by the caller.
///
/// The table is read first and the checkpoints updated from parameters after: pg_enkf's own
/// writes never read the caller's objects (see `crate::writes`).
fn refresh_prints(
    client: &mut SpiClient<'_>,
    source: &Source,
    twin_id: i64,
    from: i32,
    prev: i32,
    suspects: Vec<String>,
) {
    let weeks = spi::select(
        client,
        &format!(
            "SELECT w.loc, w.week_end, w.value, w.print, w.n_rows FROM ({weekly}) w
              WHERE w.loc = ANY($3::pg_catalog.text[])",
            weekly = source.weekly_sql(Some((1, 2))),
        ),
        &[
            DatumWithOid::from(date(from)),
            DatumWithOid::from(date(prev)),
            DatumWithOid::from(suspects.clone()),
        ],
        |r| {
            Ok((
                r.get::<String>(1)?.unwrap_or_default(),
                r.get::<Date>(2)?,
                r.get::<f64>(3)?,
                r.get::<i64>(4)?.unwrap_or(0),
                r.get::<i64>(5)?.unwrap_or(0),
            ))
        },
    );
    let mut locations = Vec::with_capacity(weeks.len());
    let mut week_ends = Vec::with_capacity(weeks.len());
    let mut values = Vec::with_capacity(weeks.len());
    let mut prints = Vec::with_capacity(weeks.len());
    let mut counts = Vec::with_capacity(weeks.len());
    for (loc, week, value, print, n) in weeks {
        locations.push(loc);
        week_ends.push(week);
        values.push(value);
        prints.push(print);
        counts.push(i32::try_from(n).unwrap_or(i32::MAX));
    }
    // Weeks with rows, then weeks without (missing, assimilated as such).
    spi::update(
        client,
        "UPDATE enkf.checkpoints c SET rows_print = w.print, source_rows = w.n_rows
           FROM ROWS FROM (pg_catalog.unnest($4::pg_catalog.text[]), pg_catalog.unnest($5::pg_catalog.date[]), pg_catalog.unnest($6::pg_catalog.float8[]), pg_catalog.unnest($7::pg_catalog.int8[]), pg_catalog.unnest($8::pg_catalog.int4[])) AS w(loc, week_end, value, print, n_rows)
          WHERE c.twin_id = $3 AND c.location = w.loc AND c.week_end = w.week_end
            AND c.week_end BETWEEN $1 AND $2 AND c.observed IS NOT DISTINCT FROM w.value
            AND (c.rows_print IS DISTINCT FROM w.print OR c.source_rows IS DISTINCT FROM w.n_rows)",
        &[
            DatumWithOid::from(date(from)),
            DatumWithOid::from(date(prev)),
            DatumWithOid::from(twin_id),
            DatumWithOid::from(locations.clone()),
            DatumWithOid::from(week_ends.clone()),
            DatumWithOid::from(values),
            DatumWithOid::from(prints),
            DatumWithOid::from(counts),
        ],
    );
    spi::update(
        client,
        "UPDATE enkf.checkpoints c SET rows_print = 0, source_rows = 0
          WHERE c.twin_id = $3 AND c.location = ANY($4::pg_catalog.text[]) AND c.week_end BETWEEN $1 AND $2
            AND c.observed IS NULL
            AND (c.rows_print IS DISTINCT FROM 0 OR c.source_rows IS DISTINCT FROM 0)
            AND NOT EXISTS (SELECT 1 FROM ROWS FROM (pg_catalog.unnest($5::pg_catalog.text[]), pg_catalog.unnest($6::pg_catalog.date[])) AS s(loc, week_end)
                             WHERE s.loc = c.location AND s.week_end = c.week_end)",
        &[
            DatumWithOid::from(date(from)),
            DatumWithOid::from(date(prev)),
            DatumWithOid::from(twin_id),
            DatumWithOid::from(suspects),
            DatumWithOid::from(locations),
            DatumWithOid::from(week_ends),
        ],
    );
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
fn check_versions(client: &SpiClient<'_>, twin: &Twin, source: &Source, from: i32, to: i32) {
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

/// The least work_mem the revision check runs with: its passes aggregate every row of the table
/// and of the twin's checkpoints, and the week-by-week comparison joins them; at county scale
/// (3,143 locations x 100 weeks) that spilled to disk with the default 4 MB and took twice as
/// long.
const DIFF_WORK_MEM: &str = "64MB";

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

pub(super) fn run(
    client: &mut SpiClient<'_>,
    name: &str,
    through: TimestampWithTimeZone,
    as_of: Option<i32>,
) -> AssimilateRow {
    let clock = std::time::Instant::now();
    let twin = catalog::load_locked(client, name);
    let started = provenance::start(client);
    let columns = catalog::check_observations(
        client,
        &twin.observations,
        &twin.time_column,
        &twin.location_column,
        &twin.value_column,
    );
    catalog::check_locations(client, &twin.locations);
    let source = versioned(
        client,
        &twin,
        Source::new(&twin, columns.kind, catalog::timescaledb_schema(client)),
        as_of,
    );
    let through_day = spi::one::<Date>(
        client,
        "SELECT ($1::pg_catalog.timestamptz)::pg_catalog.date",
        &[DatumWithOid::from(through)],
    )
    .map(|d| d.to_pg_epoch_days())
    .unwrap_or(i32::MAX);
    let populations = populations(client, &twin);

    // Rows that cannot be placed (not looked for when the columns are NOT NULL), then the span
    // of the data.
    if !columns.always_placed && spi::one::<bool>(client, &source.unplaced_sql(), &[]) == Some(true)
    {
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
    if first.is_none() {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("observations: {} has no rows the caller can read", twin.observations),
            None,
            "load surveillance counts first; if rows exist, check the caller's SELECT grant and row-level security policies",
        );
    }
    let first = first.map(|d| d.to_pg_epoch_days()).unwrap_or_default();
    let end_week = match last {
        Some(d) => d.to_pg_epoch_days(),
        None => raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!(
                "through: {} is before the first observation (week ending {})",
                enkf_core::dates::iso(through_day),
                enkf_core::dates::iso(first)
            ),
            None,
            "pass a later through, or leave it out to assimilate everything up to now",
        ),
    };
    let origin = match twin.origin {
        Some(o) => o,
        None => {
            spi::update(
                client,
                "UPDATE enkf.twins SET origin = $2 WHERE twin_id = $1",
                &[DatumWithOid::from(twin.id), DatumWithOid::from(date(first))],
            );
            first
        }
    };

    // The run's row is written once, complete, at the end (provenance::record).
    let run_id = started.id;

    // 1. Which locations need work, from which week: weeks whose count differs from the one
    //    assimilated (revisions), weeks never assimilated, and locations behind the end week.
    //    Each query reads one table or joins by hash (FULL JOIN): no plan here depends on
    //    statistics, which are stale right after a twin's first, large assimilation.
    // Every location is carried to the end week on each run, so the twin's locations are those
    // with a checkpoint in its last assimilated week.
    let previous_end = catalog::last_week(client, twin.id);
    let last_kept: HashMap<String, i32> = match previous_end {
        None => HashMap::new(),
        Some(prev) => spi::select(
            client,
            "SELECT location FROM enkf.checkpoints WHERE twin_id = $1 AND week_end = $2",
            &[DatumWithOid::from(twin.id), DatumWithOid::from(date(prev))],
            |r| Ok((r.get::<String>(1)?.unwrap_or_default(), prev)),
        )
        .into_iter()
        .collect(),
    };
    let mut compare_from = origin;
    if let Some(k) = twin.config.revisions.lookback_weeks {
        compare_from = compare_from.max(end_week - 7 * (k as i32 - 1));
    }
    if let (Some(k), Some(prev)) = (twin.config.checkpoints.keep_weeks, previous_end) {
        // Weeks before this were pruned: there is nothing to compare them with.
        compare_from = compare_from.max(prev - 7 * (k as i32 - 1));
    }
    check_versions(client, &twin, &source, compare_from, end_week);
    let as_of_read = source
        .latest_version_sql()
        .and_then(|sql| spi::one::<Date>(client, &sql, &[]))
        .map(|d| d.to_pg_epoch_days());
    let (mut starts_by_location, suspects) = spi::with_work_mem(client, DIFF_WORK_MEM, |client| {
        revision_starts(
            client,
            &source,
            twin.id,
            compare_from,
            end_week,
            previous_end,
            &last_kept,
        )
    });
    if let (Some(prev), false) = (previous_end, suspects.is_empty()) {
        refresh_prints(client, &source, twin.id, compare_from, prev, suspects);
    }
    for (loc, last) in &last_kept {
        if *last < end_week {
            let behind = (*last + 7, false);
            let entry = starts_by_location.entry(loc.clone()).or_insert(behind);
            if behind.0 < entry.0 {
                *entry = behind;
            }
        }
    }
    // Byte order, as the cursors below sort with COLLATE "C".
    let mut plan: Vec<(String, i32, bool)> = starts_by_location
        .into_iter()
        .map(|(l, (w, r))| (l, w, r))
        .collect();
    plan.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    // Minimum necessary access: a caller under row-level security assimilates only the
    // locations granted to them in enkf.location_grants; the others are left as they are (the
    // policies would refuse their checkpoints anyway, failing the whole run).
    if !plan.is_empty() {
        let names: Vec<String> = plan.iter().map(|p| p.0.clone()).collect();
        let hidden: std::collections::HashSet<String> = spi::select(
            client,
            "SELECT l FROM pg_catalog.unnest($1::pg_catalog.text[]) AS l WHERE NOT enkf.location_visible(l)",
            &[DatumWithOid::from(names)],
            |r| Ok(r.get::<String>(1)?.unwrap_or_default()),
        )
        .into_iter()
        .collect();
        let mut hidden = hidden;
        // Row-level security on the caller's own observation table: a location none of whose
        // rows the caller can read is skipped, not taken for one whose counts were deleted
        // (which would overwrite its analyses with forecasts made without data).
        let obs_rls = spi::one::<bool>(
            client,
            "SELECT pg_catalog.row_security_active($1::pg_catalog.regclass)",
            &[DatumWithOid::from(twin.observations.as_str())],
        );
        if obs_rls == Some(true) {
            let readable: std::collections::HashSet<String> = spi::select(
                client,
                &format!("SELECT DISTINCT s.loc FROM ({}) s", source.raw_sql(None)),
                &[],
                |r| Ok(r.get::<String>(1)?.unwrap_or_default()),
            )
            .into_iter()
            .collect();
            hidden.extend(
                plan.iter()
                    .filter(|p| !readable.contains(&p.0))
                    .map(|p| p.0.clone()),
            );
        }
        if !hidden.is_empty() {
            plan.retain(|p| !hidden.contains(&p.0));
            pgrx::notice!(
                "enkf.assimilate: {} location(s) of twin \"{}\" skipped: not granted to {} in enkf.location_grants, or none of their observations readable by them",
                hidden.len(),
                twin.name,
                spi::one::<String>(client, "SELECT CURRENT_USER::pg_catalog.text", &[]).unwrap_or_default()
            );
        }
    }
    let t_plan = clock.elapsed().as_secs_f64();
    let mut run = Run {
        twin: &twin,
        source: &source,
        populations: &populations,
        origin,
        end_week,
        run_id,
        stats: Stats::default(),
        pending: Vec::new(),
        jobs: Vec::new(),
        batch_weeks: 0,
        budget_weeks: (crate::guc::MAX_ENSEMBLE_ELEMENTS.get().max(1) as usize
            / (STATE_DIM * twin.members).max(1))
        .max(1),
        compute_seconds: 0.0,
        scratch: PgMemoryContexts::new("pg_enkf assimilate"),
    };
    if !plan.is_empty() {
        run.stats.reassimilated = plan.iter().filter(|p| p.2).count() as i32;
        let locations: Vec<String> = plan.iter().map(|p| p.0.clone()).collect();
        let starts: Vec<Date> = plan.iter().map(|p| date(p.1)).collect();
        let min_start = plan.iter().map(|p| p.1).min().unwrap_or(origin);

        // 2. Revised locations lose their checkpoints from the changed week on. A location that
        //    only moves on past its last checkpoint (the weekly case) has none to lose: the
        //    statement, which reads every checkpoint of the twin, runs only when needed.
        let (cut_locations, cut_starts): (Vec<String>, Vec<Date>) = plan
            .iter()
            .filter(|p| p.2 || last_kept.get(&p.0).is_none_or(|&last| p.1 <= last))
            .map(|p| (p.0.clone(), date(p.1)))
            .unzip();
        if !cut_locations.is_empty() {
            spi::update(
                client,
                "DELETE FROM enkf.checkpoints c USING ROWS FROM (pg_catalog.unnest($2::pg_catalog.text[]), pg_catalog.unnest($3::pg_catalog.date[])) AS p(loc, start)
                  WHERE c.twin_id = $1 AND c.location = p.loc AND c.week_end >= p.start",
                &[
                    DatumWithOid::from(twin.id),
                    DatumWithOid::from(cut_locations),
                    DatumWithOid::from(cut_starts),
                ],
            );
        }

        // 3. Two cursors in location order: the start states, and the rows to process.
        let window = twin.config.observation_error.window as i64;
        let mut states = spi::ok(client.try_open_cursor(
            "SELECT p.loc, p.start, cp.ensemble,
                    ARRAY(SELECT r.observed FROM enkf.checkpoints r
                           WHERE r.twin_id = $1 AND r.location = p.loc AND r.week_end < p.start
                             AND r.observed IS NOT NULL ORDER BY r.week_end DESC LIMIT $4)
               FROM ROWS FROM (pg_catalog.unnest($2::pg_catalog.text[]), pg_catalog.unnest($3::pg_catalog.date[])) AS p(loc, start)
               LEFT JOIN enkf.checkpoints cp ON cp.twin_id = $1 AND cp.location = p.loc AND cp.week_end = p.start - 7
              ORDER BY p.loc COLLATE \"C\"",
            &[DatumWithOid::from(twin.id), DatumWithOid::from(locations.clone()), DatumWithOid::from(starts.clone()), DatumWithOid::from(window)],
        ));
        let rows_sql = format!(
            "SELECT s.loc, s.week_end, CASE WHEN pg_catalog.bool_and(s.ok) THEN pg_catalog.sum(s.v) END,
                    pg_catalog.count(*), pg_catalog.count(DISTINCT s.t),
                    pg_catalog.min(s.v) FILTER (WHERE s.ok), pg_catalog.bit_xor({print})
               FROM ({raw}) s JOIN ROWS FROM (pg_catalog.unnest($3::pg_catalog.text[]), pg_catalog.unnest($4::pg_catalog.date[])) AS p(loc, start)
                 ON p.loc = s.loc AND s.week_end >= p.start
              WHERE s.week_end <= $2
              GROUP BY s.loc, s.week_end ORDER BY s.loc COLLATE \"C\", s.week_end",
            raw = source.raw_sql(Some((1, 2))),
            print = source.row_print_sql(),
        );
        let mut data = spi::ok(client.try_open_cursor(
            rows_sql.as_str(),
            &[
                DatumWithOid::from(date(min_start)),
                DatumWithOid::from(date(end_week)),
                DatumWithOid::from(locations),
                DatumWithOid::from(starts),
            ],
        ));
        // Start states hold an ensemble each: fetched no more at a time than the budget allows.
        let fetch_states = run.budget_weeks.clamp(1, 256) as i64;
        let mut buffered: VecDeque<Row> = VecDeque::new();
        let mut data_done = false;
        loop {
            let batch: Vec<Start> = unsafe {
                run.scratch.switch_to(|_| {
                    let table = spi::ok(states.fetch(fetch_states));
                    let mut out = Vec::with_capacity(table.len());
                    for r in table {
                        out.push(Start {
                            location: spi::ok(r.get::<String>(1)).unwrap_or_default(),
                            week: spi::ok(r.get::<Date>(2))
                                .map(|d| d.to_pg_epoch_days())
                                .unwrap_or_default(),
                            ensemble: spi::ok(r.get::<Vec<f64>>(3)),
                            recent: spi::ok(r.get::<Vec<Option<f64>>>(4))
                                .unwrap_or_default()
                                .into_iter()
                                .flatten()
                                .collect(),
                        });
                    }
                    spi::free_tuptable();
                    out
                })
            };
            unsafe { run.scratch.reset() };
            if batch.is_empty() {
                break;
            }
            for start in batch {
                // This location's rows: everything buffered or fetched up to the next location.
                let mut mine = Vec::new();
                loop {
                    while let Some(front) = buffered.front() {
                        if front.location.as_bytes() < start.location.as_bytes() {
                            buffered.pop_front();
                        } else if front.location == start.location {
                            mine.push(buffered.pop_front().unwrap_or_else(|| unreachable!()));
                        } else {
                            break;
                        }
                    }
                    if !buffered.is_empty() || data_done {
                        break;
                    }
                    let table = spi::ok(data.fetch(2000));
                    if table.is_empty() {
                        data_done = true;
                    }
                    for r in table {
                        buffered.push_back(Row {
                            location: spi::ok(r.get::<String>(1)).unwrap_or_default(),
                            week: spi::ok(r.get::<Date>(2))
                                .map(|d| d.to_pg_epoch_days())
                                .unwrap_or_default(),
                            value: spi::ok(r.get::<f64>(3)),
                            n_rows: spi::ok(r.get::<i64>(4)).unwrap_or(0),
                            n_times: spi::ok(r.get::<i64>(5)).unwrap_or(0),
                            min_value: spi::ok(r.get::<f64>(6)),
                            print: spi::ok(r.get::<i64>(7)).unwrap_or(0),
                        });
                    }
                    spi::free_tuptable();
                }
                run.push(client, start, mine);
            }
        }
        run.run_batch(client);
        drop(states);
        drop(data);
    }

    if let Some(keep) = twin.config.checkpoints.keep_weeks {
        spi::update(
            client,
            "DELETE FROM enkf.checkpoints WHERE twin_id = $1 AND week_end <= $2",
            &[
                DatumWithOid::from(twin.id),
                DatumWithOid::from(date(end_week - 7 * keep as i32)),
            ],
        );
    }
    let stats = std::mem::take(&mut run.stats);
    pgrx::debug1!(
        "pg_enkf assimilate of twin \"{name}\": {} locations, {} counts in {:.3} s (plan {t_plan:.3} s, compute {:.3} s)",
        stats.locations,
        stats.observations,
        clock.elapsed().as_secs_f64(),
        run.compute_seconds
    );
    provenance::record(
        client,
        &twin,
        "assimilate",
        &started,
        provenance::Outcome {
            through: Some(through),
            locations: Some(stats.locations),
            observations: Some(stats.observations),
            reassimilated: Some(stats.reassimilated),
            first_week: stats.first_week,
            last_week: stats.last_week,
            as_of: as_of_read,
            detail: None,
        },
    );
    (
        run_id,
        stats.locations,
        stats.observations,
        timestamptz_of(client, stats.first_week),
        timestamptz_of(client, stats.last_week),
    )
}
