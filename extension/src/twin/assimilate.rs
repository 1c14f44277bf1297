//! `enkf.assimilate`: steps every location's ensemble through the weeks up to `through`,
//! updating it with each observed count, and stores one checkpoint per location and week.
//!
//! It is incremental: each location resumes from its latest checkpoint. Counts that changed
//! since they were assimilated (NHSN backfill) are found by comparing the table with the counts
//! stored in the checkpoints; the location is then re-assimilated from the checkpoint of the
//! week before the earliest change. Missing weeks (NULL, NaN, no row) are forecast without an
//! update. Rows are streamed through a cursor, one location at a time, so memory does not grow
//! with the history or the number of locations.

use std::collections::{HashMap, VecDeque};

use enkf_core::model::seirh::STATE_DIM;
use enkf_core::twin::LocationModel;
use nalgebra::DMatrix;
use pgrx::datum::{Date, DatumWithOid, TimestampWithTimeZone};
use pgrx::memcxt::PgMemoryContexts;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;

use super::catalog::{self, Twin};
use super::source::Source;
use super::spi;
use crate::arrays::Float8Matrix;
use crate::error::{null_argument, null_option, raise, OrRaise};

pub(super) fn date(days: i32) -> Date {
    // SAFETY: any i32 day number is a valid (if distant) PostgreSQL date.
    unsafe { Date::from_pg_epoch_days(days) }
}

pub(super) fn timestamptz_of(
    client: &SpiClient<'_>,
    days: Option<i32>,
) -> Option<TimestampWithTimeZone> {
    days.and_then(|d| {
        spi::one::<TimestampWithTimeZone>(
            client,
            "SELECT $1::date::timestamptz",
            &[DatumWithOid::from(date(d))],
        )
    })
}

/// One row of the stream: a location's week from the table, its checkpoint, or both.
struct Row {
    location: String,
    week: i32,
    has_data: bool,
    value: Option<f64>,
    n_rows: i64,
    n_times: i64,
    min_value: Option<f64>,
    has_checkpoint: bool,
    observed: Option<f64>,
}

#[derive(Default)]
struct Stats {
    locations: i32,
    observations: i32,
    reassimilated: i32,
    first_week: Option<i32>,
    last_week: Option<i32>,
}

enum Mode {
    /// Weeks already assimilated, unchanged so far.
    Scanning { last_checkpoint: Option<i32> },
    /// Re-running weeks: the ensemble is at the end of `week`.
    Processing { ens: DMatrix<f64>, week: i32 },
    /// Replayed from the prior in one go; the rest of the stream for it is skipped.
    Done,
}

struct Run<'a> {
    twin: &'a Twin,
    source: &'a Source,
    populations: &'a HashMap<String, f64>,
    origin: i32,
    end_week: i32,
    run_id: i64,
    stats: Stats,
    scratch: PgMemoryContexts,
}

struct Loc<'a> {
    name: String,
    model: LocationModel<'a>,
    recent: VecDeque<f64>,
    mode: Mode,
    processed_any: bool,
}

impl<'a> Run<'a> {
    fn validate(&self, row: &Row) {
        if !row.has_data {
            return;
        }
        if row.n_rows > row.n_times {
            raise(
                PgSqlErrorCode::ERRCODE_UNIQUE_VIOLATION,
                format!(
                    "observations: {} has more than one row for location \"{}\" at the same time (week ending {})",
                    self.twin.observations,
                    row.location,
                    enkf_core::dates::iso(row.week)
                ),
                None,
                "keep one row per (time, location), e.g. with a unique index, or deduplicate in a view",
            );
        }
        if let Some(v) = row.min_value {
            if v < 0.0 {
                raise(
                    PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                    format!(
                        "observations: negative count {v} for location \"{}\" in the week ending {}",
                        row.location,
                        enkf_core::dates::iso(row.week)
                    ),
                    None,
                    "counts must be >= 0; mark unreported weeks with NULL or NaN",
                );
            }
        }
    }

    fn new_location(&self, name: &str) -> Loc<'a> {
        let population = match self.populations.get(name) {
            Some(p) => *p,
            None => raise(
                PgSqlErrorCode::ERRCODE_FOREIGN_KEY_VIOLATION,
                format!("observations: location \"{name}\" has no row in {}", self.twin.locations),
                None,
                "add the location with its population to the locations table, or filter it out with a view",
            ),
        };
        Loc {
            name: name.to_string(),
            model: LocationModel::new(&self.twin.config, name, population),
            recent: VecDeque::new(),
            mode: Mode::Scanning {
                last_checkpoint: None,
            },
            processed_any: false,
        }
    }

    fn load_checkpoint(
        &mut self,
        client: &SpiClient<'_>,
        location: &str,
        week: i32,
    ) -> Option<DMatrix<f64>> {
        let members = self.twin.members;
        let twin_id = self.twin.id;
        let flat: Option<Vec<f64>> = unsafe {
            self.scratch.switch_to(|_| {
                spi::one::<Vec<f64>>(
                    client,
                    "SELECT ensemble FROM enkf.checkpoints WHERE twin_id = $1 AND location = $2 AND week_end = $3",
                    &[DatumWithOid::from(twin_id), DatumWithOid::from(location), DatumWithOid::from(date(week))],
                )
            })
        };
        let flat = flat?;
        if flat.len() != STATE_DIM * members {
            raise(
                PgSqlErrorCode::ERRCODE_DATA_CORRUPTED,
                format!(
                    "checkpoint of twin \"{}\", location \"{location}\", week {} has {} values, expected {}",
                    self.twin.name,
                    enkf_core::dates::iso(week),
                    flat.len(),
                    STATE_DIM * members
                ),
                None,
                "the checkpoints table was changed outside pg_enkf; drop and re-create the twin",
            );
        }
        Some(DMatrix::from_row_slice(STATE_DIM, members, &flat))
    }

    fn delete_from(&mut self, client: &mut SpiClient<'_>, location: &str, week: i32) {
        let twin_id = self.twin.id;
        spi::update(
            client,
            "DELETE FROM enkf.checkpoints WHERE twin_id = $1 AND location = $2 AND week_end >= $3",
            &[
                DatumWithOid::from(twin_id),
                DatumWithOid::from(location),
                DatumWithOid::from(date(week)),
            ],
        );
    }

    /// Steps one week; updates with the count if there is one; stores the checkpoint.
    fn advance(
        &mut self,
        client: &mut SpiClient<'_>,
        loc: &mut Loc<'_>,
        ens: &mut DMatrix<f64>,
        week: i32,
        value: Option<f64>,
    ) {
        pgrx::check_for_interrupts!();
        loc.model.step(ens, week);
        if let Some(y) = value {
            loc.recent.push_back(y);
            while loc.recent.len() > self.twin.config.observation_error.window {
                loc.recent.pop_front();
            }
            let mean = loc.recent.iter().sum::<f64>() / loc.recent.len() as f64;
            loc.model.update(ens, y, mean, week).or_raise();
            self.stats.observations += 1;
        }
        loc.processed_any = true;
        self.stats.first_week = Some(self.stats.first_week.map_or(week, |w| w.min(week)));
        self.stats.last_week = Some(self.stats.last_week.map_or(week, |w| w.max(week)));
        let (twin_id, run_id) = (self.twin.id, self.run_id);
        let name = loc.name.as_str();
        let matrix = ens.clone();
        unsafe {
            self.scratch.switch_to(|_| {
                spi::update(
                    client,
                    "INSERT INTO enkf.checkpoints (twin_id, location, week_end, run_id, observed, ensemble)
                     VALUES ($1, $2, $3, $4, $5, $6)",
                    &[
                        DatumWithOid::from(twin_id),
                        DatumWithOid::from(name),
                        DatumWithOid::from(date(week)),
                        DatumWithOid::from(run_id),
                        value.map_or(DatumWithOid::null::<f64>(), DatumWithOid::from),
                        DatumWithOid::from(Float8Matrix(matrix)),
                    ],
                )
            })
        };
    }

    /// Leaves scanning at week `start`: the ensemble is restored from the checkpoint of the week
    /// before, or from the prior at the origin; later checkpoints are removed for rewriting.
    fn begin(&mut self, client: &mut SpiClient<'_>, loc: &mut Loc<'_>, start: i32) {
        let ens = if start <= self.origin {
            Some(loc.model.prior(self.twin.members))
        } else {
            self.load_checkpoint(client, &loc.name.clone(), start - 7)
        };
        match ens {
            Some(ens) => {
                let name = loc.name.clone();
                self.delete_from(client, &name, start);
                loc.mode = Mode::Processing {
                    ens,
                    week: start.max(self.origin) - 7,
                };
            }
            None => self.replay(client, loc),
        }
    }

    /// Re-assimilates a location from its prior at the origin, reading its rows afresh: used
    /// when the checkpoint a revision needs is gone (pruned by checkpoints.keep_weeks) or the
    /// location first appears after the origin.
    fn replay(&mut self, client: &mut SpiClient<'_>, loc: &mut Loc<'_>) {
        let name = loc.name.clone();
        self.delete_from(client, &name, self.origin);
        let query = format!(
            "SELECT week_end, value, n_rows, n_times, min_value FROM ({}) w
              WHERE loc = $1 AND week_end BETWEEN $2 AND $3 ORDER BY week_end",
            self.source.weekly_sql()
        );
        let rows = spi::select(
            client,
            &query,
            &[
                DatumWithOid::from(name.as_str()),
                DatumWithOid::from(date(self.origin)),
                DatumWithOid::from(date(self.end_week)),
            ],
            |r| {
                Ok(Row {
                    location: name.clone(),
                    week: r
                        .get::<Date>(1)?
                        .map(|d| d.to_pg_epoch_days())
                        .unwrap_or_default(),
                    has_data: true,
                    value: r.get::<f64>(2)?,
                    n_rows: r.get::<i64>(3)?.unwrap_or_default(),
                    n_times: r.get::<i64>(4)?.unwrap_or_default(),
                    min_value: r.get::<f64>(5)?,
                    has_checkpoint: false,
                    observed: None,
                })
            },
        );
        loc.recent.clear();
        let mut ens = loc.model.prior(self.twin.members);
        let mut week = self.origin - 7;
        for row in rows {
            self.validate(&row);
            while week + 7 < row.week {
                week += 7;
                self.advance(client, loc, &mut ens, week, None);
            }
            week = row.week;
            self.advance(client, loc, &mut ens, week, row.value);
        }
        while week < self.end_week {
            week += 7;
            self.advance(client, loc, &mut ens, week, None);
        }
        loc.mode = Mode::Done;
    }

    fn on_row(&mut self, client: &mut SpiClient<'_>, loc: &mut Loc<'_>, row: &Row) {
        self.validate(row);
        let current = if row.has_data { row.value } else { None };
        if let Mode::Scanning { last_checkpoint } = &mut loc.mode {
            if row.has_checkpoint && same(row.observed, current) {
                if let Some(v) = row.observed {
                    loc.recent.push_back(v);
                    while loc.recent.len() > self.twin.config.observation_error.window {
                        loc.recent.pop_front();
                    }
                }
                *last_checkpoint = Some(row.week);
                return;
            }
            if row.has_checkpoint {
                self.stats.reassimilated += 1;
            }
            self.begin(client, loc, row.week);
        }
        let mode = std::mem::replace(&mut loc.mode, Mode::Done);
        loc.mode = match mode {
            Mode::Processing { mut ens, mut week } => {
                while week + 7 < row.week {
                    week += 7;
                    self.advance(client, loc, &mut ens, week, None);
                }
                self.advance(client, loc, &mut ens, row.week, current);
                Mode::Processing {
                    ens,
                    week: row.week,
                }
            }
            other => other,
        };
    }

    /// After a location's last row: carries it through missing weeks up to the end week.
    fn finish(&mut self, client: &mut SpiClient<'_>, mut loc: Loc<'_>) {
        if let Mode::Scanning {
            last_checkpoint: Some(w),
        } = loc.mode
        {
            if w < self.end_week {
                self.begin(client, &mut loc, w + 7);
            }
        }
        if let Mode::Processing { mut ens, mut week } = std::mem::replace(&mut loc.mode, Mode::Done)
        {
            while week < self.end_week {
                week += 7;
                self.advance(client, &mut loc, &mut ens, week, None);
            }
        }
        if loc.processed_any {
            self.stats.locations += 1;
        }
        unsafe { self.scratch.reset() };
    }
}

fn same(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(x), Some(y)) => x.to_bits() == y.to_bits(),
        _ => false,
    }
}

/// Populations of the twin's locations, read under the caller; every one positive.
fn populations(client: &SpiClient<'_>, twin: &Twin) -> HashMap<String, f64> {
    let rows = spi::select(
        client,
        &format!(
            "SELECT (location)::text, (population)::float8 FROM {}",
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
            Some(p) if !(p.is_finite() && p > 0.0) => raise(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!(
                    "locations: population of \"{loc}\" in {} is {p}",
                    twin.locations
                ),
                None,
                "populations must be positive numbers",
            ),
            Some(p) => {
                out.insert(loc, p);
            }
        }
    }
    out
}

type AssimilateRow = (
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
fn assimilate(
    twin: Option<&str>,
    through: default!(Option<TimestampWithTimeZone>, "now()"),
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
    let row = Spi::connect_mut(|client| run(client, name, through));
    TableIterator::new(std::iter::once(row))
}

fn run(client: &mut SpiClient<'_>, name: &str, through: TimestampWithTimeZone) -> AssimilateRow {
    let started = spi::one::<TimestampWithTimeZone>(client, "SELECT clock_timestamp()", &[]);
    let twin = catalog::load(client, name);
    catalog::lock(client, twin.id);
    let kind = catalog::check_observations(
        client,
        &twin.observations,
        &twin.time_column,
        &twin.location_column,
        &twin.value_column,
    );
    catalog::check_locations(client, &twin.locations);
    let source = Source::new(&twin, kind, catalog::timescaledb_schema(client));
    let through_day = spi::one::<Date>(
        client,
        "SELECT ($1::timestamptz)::date",
        &[DatumWithOid::from(through)],
    )
    .map(|d| d.to_pg_epoch_days())
    .unwrap_or(i32::MAX);
    let populations = populations(client, &twin);

    // The span of the data, and rows that cannot be placed.
    let summary = spi::select(
        client,
        &format!(
            "SELECT min(week_end), max(week_end) FILTER (WHERE week_end <= $1), count(*),
                    count(*) FILTER (WHERE loc IS NULL OR week_end IS NULL)
               FROM ({}) w",
            source.weekly_sql()
        ),
        &[DatumWithOid::from(date(through_day))],
        |r| {
            Ok((
                r.get::<Date>(1)?,
                r.get::<Date>(2)?,
                r.get::<i64>(3)?.unwrap_or(0),
                r.get::<i64>(4)?.unwrap_or(0),
            ))
        },
    );
    let (first, last, count, unplaced) = summary.into_iter().next().unwrap_or((None, None, 0, 0));
    if count == 0 {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("observations: {} has no rows the caller can read", twin.observations),
            None,
            "load surveillance counts first; if rows exist, check the caller's SELECT grant and row-level security policies",
        );
    }
    if unplaced > 0 {
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

    let run_id = spi::update_rows(
        client,
        "INSERT INTO enkf.runs (twin_id, kind, status, started_at, through, source, config, config_hash,
                                extension_version, seed)
         VALUES ($1, 'assimilate', 'succeeded', $2, $3, $4, $5::jsonb, $6, $7, $8) RETURNING run_id",
        &[
            DatumWithOid::from(twin.id),
            started.map_or(DatumWithOid::null::<TimestampWithTimeZone>(), DatumWithOid::from),
            DatumWithOid::from(through),
            DatumWithOid::from(twin.observations.as_str()),
            DatumWithOid::from(twin.config_json.as_str()),
            DatumWithOid::from(twin.config_hash.as_str()),
            DatumWithOid::from(env!("CARGO_PKG_VERSION")),
            DatumWithOid::from(twin.config.seed),
        ],
        |r| r.get::<i64>(1),
    )
    .into_iter()
    .next()
    .flatten()
    .unwrap_or_default();

    let mut run = Run {
        twin: &twin,
        source: &source,
        populations: &populations,
        origin,
        end_week,
        run_id,
        stats: Stats::default(),
        scratch: PgMemoryContexts::new("pg_enkf assimilate"),
    };

    let stream = format!(
        "WITH o AS (SELECT * FROM ({weekly}) w WHERE week_end BETWEEN $2 AND $3),
              c AS (SELECT location, week_end, observed FROM enkf.checkpoints
                     WHERE twin_id = $1 AND week_end <= $3),
              k AS (SELECT location, min(week_end) AS first_kept FROM c GROUP BY location)
         SELECT coalesce(o.loc, c.location) AS loc, coalesce(o.week_end, c.week_end) AS week_end,
                o.loc IS NOT NULL AS has_data, o.value, o.n_rows, o.n_times, o.min_value,
                c.week_end IS NOT NULL AS has_checkpoint, c.observed
           FROM o FULL JOIN c ON c.location = o.loc AND c.week_end = o.week_end
           LEFT JOIN k ON k.location = coalesce(o.loc, c.location)
          WHERE k.first_kept IS NULL OR coalesce(o.week_end, c.week_end) >= k.first_kept
          ORDER BY 1, 2",
        weekly = source.weekly_sql()
    );
    let mut cursor = spi::ok(client.try_open_cursor(
        stream.as_str(),
        &[
            DatumWithOid::from(twin.id),
            DatumWithOid::from(date(origin)),
            DatumWithOid::from(date(end_week)),
        ],
    ));
    let mut current: Option<Loc<'_>> = None;
    loop {
        let batch: Vec<Row> = {
            let table = spi::ok(cursor.fetch(2000));
            let mut rows = Vec::with_capacity(table.len());
            for r in table {
                rows.push(Row {
                    location: spi::ok(r.get::<String>(1)).unwrap_or_default(),
                    week: spi::ok(r.get::<Date>(2))
                        .map(|d| d.to_pg_epoch_days())
                        .unwrap_or_default(),
                    has_data: spi::ok(r.get::<bool>(3)).unwrap_or(false),
                    value: spi::ok(r.get::<f64>(4)),
                    n_rows: spi::ok(r.get::<i64>(5)).unwrap_or(0),
                    n_times: spi::ok(r.get::<i64>(6)).unwrap_or(0),
                    min_value: spi::ok(r.get::<f64>(7)),
                    has_checkpoint: spi::ok(r.get::<bool>(8)).unwrap_or(false),
                    observed: spi::ok(r.get::<f64>(9)),
                });
            }
            spi::free_tuptable();
            rows
        };
        if batch.is_empty() {
            break;
        }
        for row in &batch {
            if current
                .as_ref()
                .map(|l| l.name != row.location)
                .unwrap_or(true)
            {
                if let Some(done) = current.take() {
                    run.finish(client, done);
                }
                current = Some(run.new_location(&row.location));
            }
            if let Some(loc) = current.as_mut() {
                run.on_row(client, loc, row);
            }
        }
    }
    if let Some(done) = current.take() {
        run.finish(client, done);
    }
    drop(cursor);

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
    spi::update(
        client,
        "UPDATE enkf.runs SET locations = $2, observations = $3, reassimilated = $4, first_week = $5,
                              last_week = $6, finished_at = clock_timestamp()
          WHERE run_id = $1",
        &[
            DatumWithOid::from(run_id),
            DatumWithOid::from(stats.locations),
            DatumWithOid::from(stats.observations),
            DatumWithOid::from(stats.reassimilated),
            stats.first_week.map_or(DatumWithOid::null::<Date>(), |d| DatumWithOid::from(date(d))),
            stats.last_week.map_or(DatumWithOid::null::<Date>(), |d| DatumWithOid::from(date(d))),
        ],
    );
    (
        run_id,
        stats.locations,
        stats.observations,
        timestamptz_of(client, stats.first_week),
        timestamptz_of(client, stats.last_week),
    )
}
