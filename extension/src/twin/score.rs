//! `enkf.score`: the twin's stored forecasts and the baseline's, scored against the counts in
//! the observation table as they arrive (read under the caller; the latest version of each
//! count for a table of versions): weighted interval score, absolute error and bias of the
//! median, and 50% / 95% interval coverage, per location and horizon.

// pgrx needs the returned row tuple spelled out in the #[pg_extern] signature.
#![allow(clippy::type_complexity)]

use std::collections::BTreeMap;

use enkf_core::scoring::{at_level, covered, wis};
use pgrx::datum::{Date, DatumWithOid};
use pgrx::prelude::*;
use pgrx::spi::{SpiClient, SpiHeapTupleData, SpiResult};

use super::catalog::{self, Twin};
use super::source::Source;
use crate::error::null_argument;
use crate::spi;

/// Sums over the forecasts of one location and horizon: index 0 the twin, 1 the baseline.
#[derive(Default, Clone)]
pub(super) struct Acc {
    pub n: i32,
    pub wis: [f64; 2],
    pub ae: [f64; 2],
    /// Sum of (median - observed).
    pub err: [f64; 2],
    pub cov50: [i32; 2],
    pub cov95: [i32; 2],
}

impl Acc {
    fn add(&mut self, other: &Acc) {
        self.n += other.n;
        for m in 0..2 {
            self.wis[m] += other.wis[m];
            self.ae[m] += other.ae[m];
            self.err[m] += other.err[m];
            self.cov50[m] += other.cov50[m];
            self.cov95[m] += other.cov95[m];
        }
    }

    /// One forecast and the baseline's of the same task, against the observed count `y`.
    fn record(&mut self, forecast: &(Vec<f64>, Vec<f64>), baseline: &(Vec<f64>, Vec<f64>), y: f64) {
        self.n += 1;
        for (m, (levels, values)) in [forecast, baseline].into_iter().enumerate() {
            self.wis[m] += wis(levels, values, y);
            if let Some(med) = at_level(levels, values, 0.5) {
                self.ae[m] += (med - y).abs();
                self.err[m] += med - y;
            }
            self.cov50[m] += covered(levels, values, y, 0.5).unwrap_or(false) as i32;
            self.cov95[m] += covered(levels, values, y, 0.95).unwrap_or(false) as i32;
        }
    }

    /// The mean of a sum over this accumulator's forecasts.
    pub fn mean(&self, v: f64) -> Option<f64> {
        (self.n > 0).then(|| v / self.n as f64)
    }

    /// The twin's WIS relative to the baseline's (None when the baseline's is 0).
    pub fn relative_wis(&self) -> Option<f64> {
        (self.wis[1] > 0.0).then(|| self.wis[0] / self.wis[1])
    }
}

/// Every scored forecast of the models `models` of twin `name` with a reference date in the
/// range, each beside the baseline's of the same task, summed per (model, location, horizon);
/// with `totals`, also per model and horizon over all locations (location None) and per model
/// over everything (location and horizon None).
pub(super) fn accumulate(
    client: &SpiClient<'_>,
    name: &str,
    models: &[&str],
    reference_from: Option<Date>,
    reference_to: Option<Date>,
    totals: bool,
) -> Vec<(String, Option<String>, Option<i32>, Acc)> {
    let twin = catalog::load(client, name);
    let source = latest_counts(client, &twin);
    let range = [
        DatumWithOid::from(twin.id),
        reference_from.map_or(DatumWithOid::null::<Date>(), DatumWithOid::from),
        reference_to.map_or(DatumWithOid::null::<Date>(), DatumWithOid::from),
    ];
    let Some((first_target, last_target)) = target_span(client, &range) else {
        return Vec::new();
    };
    let query = format!(
        "WITH o AS (SELECT loc, week_end, value FROM ({}) w WHERE value IS NOT NULL)
         SELECT f.model, f.location, f.horizon, f.quantile_levels, f.quantile_values,
                b.quantile_levels, b.quantile_values, o.value
           FROM enkf.forecasts f
           JOIN enkf.forecasts b ON b.twin_id = f.twin_id AND b.reference_date = f.reference_date
                                AND b.location = f.location AND b.horizon = f.horizon AND b.model = 'baseline'
           JOIN o ON o.loc = f.location AND o.week_end = f.target_end_date
          WHERE f.twin_id = $1 AND f.model = ANY($6::pg_catalog.text[])
            AND ($2::pg_catalog.date IS NULL OR f.reference_date >= $2)
            AND ($3::pg_catalog.date IS NULL OR f.reference_date <= $3)
          ORDER BY f.model, f.location, f.horizon, f.reference_date",
        source.weekly_sql(Some((4, 5)))
    );
    let [a1, a2, a3] = range;
    let models: Vec<String> = models.iter().map(|m| m.to_string()).collect();
    let args = [
        a1,
        a2,
        a3,
        DatumWithOid::from(first_target),
        DatumWithOid::from(last_target),
        DatumWithOid::from(models),
    ];
    let mut cursor = spi::ok(client.try_open_cursor(query.as_str(), &args));
    let mut acc: BTreeMap<(String, String, i32), Acc> = BTreeMap::new();
    loop {
        let table = spi::ok(cursor.fetch(1000));
        if table.is_empty() {
            break;
        }
        for r in table {
            pgrx::check_for_interrupts!();
            let s = spi::ok(scored_of(&r));
            acc.entry((s.model, s.location, s.horizon))
                .or_default()
                .record(&s.forecast, &s.baseline, s.observed);
        }
        spi::free_tuptable();
    }
    drop(cursor);
    with_totals(acc, totals)
}

/// The observation table as scores read it: the latest version of every count.
pub(super) fn latest_counts(client: &SpiClient<'_>, twin: &Twin) -> Source {
    let (source, _) = Source::checked(client, twin);
    match &twin.as_of_column {
        Some(column) => {
            let kind = catalog::check_as_of(client, &twin.observations, column);
            source.with_versions(column, kind, None)
        }
        None => source,
    }
}

/// The first and last weeks the twin's forecasts in the range target: only those weeks are
/// read from the table (which also leaves out rows that no week holds, such as an infinite
/// time). None without forecasts.
fn target_span(client: &SpiClient<'_>, range: &[DatumWithOid<'_>; 3]) -> Option<(Date, Date)> {
    let targets = spi::select(
        client,
        "SELECT pg_catalog.min(target_end_date), pg_catalog.max(target_end_date) FROM enkf.forecasts
          WHERE twin_id = $1 AND model = 'enkf'
            AND ($2::pg_catalog.date IS NULL OR reference_date >= $2)
            AND ($3::pg_catalog.date IS NULL OR reference_date <= $3)",
        range,
        |r| Ok((r.get::<Date>(1)?, r.get::<Date>(2)?)),
    );
    match targets.first() {
        Some((Some(a), Some(b))) => Some((*a, *b)),
        _ => None,
    }
}

/// A stored forecast beside the baseline's of the same task and the count it targeted.
struct ScoredForecast {
    model: String,
    location: String,
    horizon: i32,
    /// Levels and values.
    forecast: (Vec<f64>, Vec<f64>),
    baseline: (Vec<f64>, Vec<f64>),
    observed: f64,
}

fn scored_of(r: &SpiHeapTupleData<'_>) -> SpiResult<ScoredForecast> {
    // The tables' CHECK constraints guarantee arrays of equal length without NULLs.
    let array = |i: usize| -> SpiResult<Vec<f64>> { Ok(r.get::<Vec<f64>>(i)?.unwrap_or_default()) };
    Ok(ScoredForecast {
        model: r.get::<String>(1)?.unwrap_or_default(),
        location: r.get::<String>(2)?.unwrap_or_default(),
        horizon: r.get::<i32>(3)?.unwrap_or_default(),
        forecast: (array(4)?, array(5)?),
        baseline: (array(6)?, array(7)?),
        observed: r.get::<f64>(8)?.unwrap_or_default(),
    })
}

/// The sums per (model, location, horizon), preceded with `totals` by those per model and
/// horizon (location None) and per model (location and horizon None).
fn with_totals(
    acc: BTreeMap<(String, String, i32), Acc>,
    totals: bool,
) -> Vec<(String, Option<String>, Option<i32>, Acc)> {
    let mut out: Vec<(String, Option<String>, Option<i32>, Acc)> = Vec::with_capacity(acc.len());
    if totals {
        let mut per_horizon: BTreeMap<(String, i32), Acc> = BTreeMap::new();
        let mut all: BTreeMap<String, Acc> = BTreeMap::new();
        for ((m, _, h), a) in &acc {
            per_horizon.entry((m.clone(), *h)).or_default().add(a);
            all.entry(m.clone()).or_default().add(a);
        }
        out.extend(
            per_horizon
                .into_iter()
                .map(|((m, h), a)| (m, None, Some(h), a)),
        );
        out.extend(all.into_iter().map(|(m, a)| (m, None, None, a)));
    }
    out.extend(
        acc.into_iter()
            .map(|((m, l, h), a)| (m, Some(l), Some(h), a)),
    );
    out
}

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
        name!(bias, Option<f64>),
        name!(baseline_bias, Option<f64>),
    ),
> {
    let name = twin.unwrap_or_else(|| null_argument("twin"));
    let sums = Spi::connect(|client| {
        accumulate(client, name, &["enkf"], reference_from, reference_to, false)
    });
    TableIterator::new(sums.into_iter().map(|(_, location, horizon, a)| {
        (
            location.unwrap_or_default(),
            horizon.unwrap_or_default(),
            a.n,
            a.mean(a.wis[0]).unwrap_or(0.0),
            a.mean(a.wis[1]).unwrap_or(0.0),
            a.relative_wis(),
            a.mean(a.ae[0]),
            a.mean(a.ae[1]),
            a.mean(a.cov50[0] as f64),
            a.mean(a.cov95[0] as f64),
            a.mean(a.cov50[1] as f64),
            a.mean(a.cov95[1] as f64),
            a.mean(a.err[0]),
            a.mean(a.err[1]),
        )
    }))
}
