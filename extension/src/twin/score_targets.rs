//! `enkf.score_targets`: every stored hub target (`enkf.target_forecasts`) scored against the
//! counts in the observation table as they are now (read under the caller; the latest version
//! of each count), once its truth is known: WIS for quantiles, the ranked probability score
//! and the log score (truncated at 10 nats, as the FluSight challenges scored) for pmfs, the
//! energy score for the sample trajectories; each beside its reference's on the same tasks:
//! the climatological pmf for rate change (the hub publishes no baseline pmf), the baseline
//! for everything else.

// pgrx needs the returned row tuple spelled out in the #[pg_extern] signature.
#![allow(clippy::type_complexity)]

use std::collections::{BTreeMap, HashMap};

use enkf_core::twin::forecast::{TargetRow, RATE_CHANGE_TARGET};
use enkf_core::twin::target_scores::{score_rows, TaskScore, Truth};
use pgrx::datum::{Date, DatumWithOid};
use pgrx::prelude::*;
use pgrx::spi::{SpiClient, SpiHeapTupleData, SpiResult};

use super::catalog;
use super::score::latest_counts;
use super::source::Source;
use crate::error::{null_argument, raise};
use crate::spi;

#[pg_extern(
    stable,
    parallel_restricted,
    security_invoker,
    schema = "enkf",
    name = "score_targets"
)]
#[search_path(pg_catalog, pg_temp)]
fn score_targets(
    twin: Option<&str>,
    reference_from: default!(Option<Date>, "NULL"),
    reference_to: default!(Option<Date>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(model, String),
        name!(target, String),
        name!(output_type, String),
        name!(horizon, Option<i32>),
        name!(score, String),
        name!(tasks, i32),
        name!(mean, f64),
        name!(reference, String),
        name!(reference_mean, f64),
        name!(relative, Option<f64>),
    ),
> {
    let name = twin.unwrap_or_else(|| null_argument("twin"));
    if let (Some(from), Some(to)) = (reference_from, reference_to) {
        if from > to {
            raise(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!(
                    "reference_from {} is after reference_to {}",
                    enkf_core::dates::iso(from.to_pg_epoch_days()),
                    enkf_core::dates::iso(to.to_pg_epoch_days())
                ),
                None,
                "give the first and the last reference date to score, in that order (NULL: no bound)",
            );
        }
    }
    let totals = Spi::connect(|client| tally(client, name, reference_from, reference_to));
    TableIterator::new(totals.into_iter().map(|(k, t)| {
        let relative = (t.reference > 0.0).then(|| t.sum / t.reference);
        let n = t.tasks as f64;
        (
            k.model,
            k.target,
            k.output_type,
            k.horizon,
            k.score,
            t.tasks,
            t.sum / n,
            k.reference,
            t.reference / n,
            relative,
        )
    }))
}

/// A line of the result: a model's score of one kind on one target, output type and horizon.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    model: String,
    target: String,
    output_type: String,
    horizon: Option<i32>,
    score: String,
    reference: String,
}

/// Sums over the tasks that both the model and its reference were scored on.
#[derive(Default)]
struct Tally {
    tasks: i32,
    sum: f64,
    reference: f64,
}

/// The reference model of a target: the climatology for rate change, else the baseline.
fn reference_of(target: &str) -> &'static str {
    if target == RATE_CHANGE_TARGET {
        "climatology"
    } else {
        "baseline"
    }
}

/// Every stored target of the twin with a reference date in the range, scored location by
/// location (its rows and its counts read together), summed per line.
fn tally(
    client: &SpiClient<'_>,
    name: &str,
    reference_from: Option<Date>,
    reference_to: Option<Date>,
) -> BTreeMap<Key, Tally> {
    let twin = catalog::load(client, name);
    let source = latest_counts(client, &twin);
    let populations = catalog::populations(client, &twin);
    let count_target = twin.config.forecast.target.clone();
    let range = [
        DatumWithOid::from(twin.id),
        reference_from.map_or(DatumWithOid::null::<Date>(), DatumWithOid::from),
        reference_to.map_or(DatumWithOid::null::<Date>(), DatumWithOid::from),
    ];
    let locations = spi::select(
        client,
        "SELECT DISTINCT location FROM enkf.target_forecasts
          WHERE twin_id = $1 AND ($2::pg_catalog.date IS NULL OR reference_date >= $2)
            AND ($3::pg_catalog.date IS NULL OR reference_date <= $3)
          ORDER BY 1",
        &range,
        |r| Ok(r.get::<String>(1)?.unwrap_or_default()),
    );
    let mut out: BTreeMap<Key, Tally> = BTreeMap::new();
    for location in locations {
        pgrx::check_for_interrupts!();
        let Some(&population) = populations.get(&location) else {
            continue;
        };
        let (counts, proportions) = truths_of(client, &source, &location);
        let count = |w: i32| counts.get(&w).copied();
        let proportion = |w: i32| proportions.get(&w).copied();
        for (reference, rows) in rows_of(client, twin.id, (reference_from, reference_to), &location)
        {
            let season = twin
                .config
                .targets
                .season(reference)
                .map(|s| s.weeks())
                .unwrap_or_default();
            let truth = Truth {
                count: &count,
                ed: &proportion,
                population,
                season_weeks: &season,
            };
            add(
                &mut out,
                score_rows(&rows, reference, &count_target, &truth),
            );
        }
    }
    out
}

/// Each score beside its reference's on the same task.
fn add(out: &mut BTreeMap<Key, Tally>, scores: Vec<TaskScore>) {
    let task = |s: &TaskScore| (s.target.clone(), s.output_type, s.horizon, s.score);
    let by_task: HashMap<_, HashMap<&str, f64>> = scores.iter().fold(HashMap::new(), |mut m, s| {
        m.entry(task(s)).or_default().insert(s.model, s.value);
        m
    });
    for s in &scores {
        let reference = reference_of(&s.target);
        let Some(r) = by_task.get(&task(s)).and_then(|m| m.get(reference)) else {
            continue;
        };
        let t = out
            .entry(Key {
                model: s.model.to_string(),
                target: s.target.clone(),
                output_type: s.output_type.to_string(),
                horizon: s.horizon,
                score: s.score.to_string(),
                reference: reference.to_string(),
            })
            .or_default();
        t.tasks += 1;
        t.sum += s.value;
        t.reference += r;
    }
}

/// A location's weekly counts, and ED-visit proportions (a twin with the ED stream; those in
/// [0, 1] only), as the table holds them now.
type Truths = (HashMap<i32, f64>, HashMap<i32, f64>);

fn truths_of(client: &SpiClient<'_>, source: &Source, location: &str) -> Truths {
    let query = format!(
        "SELECT week_end, value, ed FROM ({}) w
          WHERE loc = $1 AND (value IS NOT NULL OR ed IS NOT NULL)",
        source.weekly_values_sql(None)
    );
    let rows = spi::select(client, &query, &[DatumWithOid::from(location)], |r| {
        Ok((
            r.get::<Date>(1)?
                .map(|d| d.to_pg_epoch_days())
                .unwrap_or_default(),
            r.get::<f64>(2)?,
            r.get::<f64>(3)?,
        ))
    });
    let mut out: Truths = Default::default();
    for (week, value, ed) in rows {
        if let Some(v) = value {
            out.0.insert(week, v);
        }
        if let Some(p) = ed.filter(|p| (0.0..=1.0).contains(p)) {
            out.1.insert(week, p);
        }
    }
    out
}

/// A location's stored target rows in the range, by reference date.
fn rows_of(
    client: &SpiClient<'_>,
    twin_id: i64,
    (from, to): (Option<Date>, Option<Date>),
    location: &str,
) -> BTreeMap<i32, Vec<TargetRow>> {
    let args = [
        DatumWithOid::from(twin_id),
        from.map_or(DatumWithOid::null::<Date>(), DatumWithOid::from),
        to.map_or(DatumWithOid::null::<Date>(), DatumWithOid::from),
        DatumWithOid::from(location),
    ];
    let rows = spi::select(
        client,
        "SELECT reference_date, model, target, output_type, horizon, target_end_date,
                output_type_ids, output_values
           FROM enkf.target_forecasts
          WHERE twin_id = $1 AND location = $4
            AND ($2::pg_catalog.date IS NULL OR reference_date >= $2)
            AND ($3::pg_catalog.date IS NULL OR reference_date <= $3)",
        &args,
        target_row_of,
    );
    let mut out: BTreeMap<i32, Vec<TargetRow>> = BTreeMap::new();
    for (reference, row) in rows.into_iter().flatten() {
        out.entry(reference).or_default().push(row);
    }
    out
}

/// A stored row (None for a model or output type this version does not know).
fn target_row_of(r: &SpiHeapTupleData<'_>) -> SpiResult<Option<(i32, TargetRow)>> {
    let day = |d: Option<Date>| d.map(|d| d.to_pg_epoch_days());
    let model = match r.get::<String>(2)?.as_deref() {
        Some("enkf") => "enkf",
        Some("baseline") => "baseline",
        Some("combined") => "combined",
        Some("climatology") => "climatology",
        _ => return Ok(None),
    };
    let output_type = match r.get::<String>(4)?.as_deref() {
        Some("quantile") => "quantile",
        Some("pmf") => "pmf",
        Some("sample") => "sample",
        _ => return Ok(None),
    };
    let reference = day(r.get::<Date>(1)?).unwrap_or_default();
    Ok(Some((
        reference,
        TargetRow {
            model,
            target: r.get::<String>(3)?.unwrap_or_default(),
            output_type,
            horizon: r.get::<i32>(5)?,
            target_end_date: day(r.get::<Date>(6)?),
            ids: r.get::<Vec<String>>(7)?.unwrap_or_default(),
            values: r.get::<Vec<f64>>(8)?.unwrap_or_default(),
        },
    )))
}
