//! The nowcast inside `enkf.forecast` (enkf-core's `twin::nowcast`): how much the counts first
//! published at each lag have grown since, read from the observation table's own versions,
//! under the caller, only among the versions published by the twin's last assimilation (the
//! newest publication day it read: in a backtest, the reference date's data). The pooled and
//! trend models then start from the corrected newest weeks.

use std::collections::{BTreeMap, HashMap};

use enkf_core::twin::nowcast::{self, Revision};
use enkf_core::twin::pooled::is_aggregate;
use enkf_core::twin::suppression::censored;
use pgrx::datum::{Date, DatumWithOid};
use pgrx::prelude::*;
use pgrx::spi::SpiClient;

use super::catalog::{self, Twin};
use super::dates::date;
use super::source::Source;
use crate::error::raise;
use crate::spi;

/// The factors applied, the lag-0 residuals (the newest week's spread: `nowcast::residuals`)
/// and the number of releases they were learned from.
pub(super) struct Nowcast {
    pub factors: Vec<f64>,
    pub residuals: Vec<f64>,
    pub releases: usize,
}

/// The nowcast factors at the twin's last analysis week `last`; None for a twin without
/// versions, with `nowcast.lags` 0, or never assimilated from versions.
pub(super) fn learn(client: &SpiClient<'_>, twin: &Twin, last: i32) -> Option<Nowcast> {
    let cfg = &twin.config.nowcast;
    let column = twin.as_of_column.as_deref()?;
    if cfg.lags == 0 {
        return None;
    }
    let as_of = spi::one::<Date>(
        client,
        "SELECT as_of FROM enkf.runs WHERE twin_id = $1 AND kind = 'assimilate' AND status = 'succeeded'
            AND as_of IS NOT NULL ORDER BY run_id DESC LIMIT 1",
        &[DatumWithOid::from(twin.id)],
    )?
    .to_pg_epoch_days();
    let populations = catalog::populations(client, twin);
    let total: f64 = populations.values().sum();
    // Bounded before reading: a row per location, lag and release.
    let max = crate::guc::MAX_ENSEMBLE_ELEMENTS.get().max(1) as usize;
    let rows = populations
        .len()
        .saturating_mul(cfg.lags)
        .saturating_mul(cfg.window_weeks + 1);
    if rows > max {
        raise(
            PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            format!(
                "config: the nowcast would read {} locations x {} lags x {} releases, more than enkf.max_ensemble_elements = {max}",
                populations.len(),
                cfg.lags,
                cfg.window_weeks
            ),
            None,
            "lower nowcast.window_weeks or nowcast.lags (0 = off), or ask a superuser to raise enkf.max_ensemble_elements",
        );
    }
    let (base, _) = Source::checked(client, twin);
    let kind = catalog::check_as_of(client, &twin.observations, column);
    let source = base.with_versions(column, kind, Some(as_of));
    // Every version of the weeks any release of the window showed at a lag, read once (an
    // index on the time column serves); the values in force at each release day are worked out
    // here rather than by one query per release over the whole table.
    let from = as_of - 7 * (cfg.window_weeks + cfg.lags + 2) as i32;
    let versions = spi::select(
        client,
        &format!("{} LIMIT {}", source.versions_in_weeks_sql()?, max + 1),
        &[
            DatumWithOid::from(date(from)),
            DatumWithOid::from(date(last)),
        ],
        |r| {
            Ok(Row {
                location: r.get::<String>(1)?.unwrap_or_default(),
                week: r.get::<i32>(2)?.unwrap_or_default(),
                time: r.get::<String>(3)?.unwrap_or_default(),
                day: r.get::<i32>(4)?.unwrap_or_default(),
                value: r.get::<f64>(5)?.unwrap_or(f64::NAN),
                ok: r.get::<bool>(6)?.unwrap_or(false),
            })
        },
    );
    if versions.len() > max {
        raise(
            PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            format!(
                "config: the nowcast would read more than enkf.max_ensemble_elements = {max} versions of {}",
                twin.observations
            ),
            None,
            "lower nowcast.window_weeks or nowcast.lags (0 = off), or ask a superuser to raise enkf.max_ensemble_elements",
        );
    }
    let table = Versions::new(versions);
    let window_start = as_of - 7 * cfg.window_weeks as i32;
    let lags = cfg.lags as i32;
    let mut first = Vec::new();
    for (day, newest) in table.releases(window_start) {
        pgrx::check_for_interrupts!();
        if newest > last {
            continue;
        }
        for lag in 0..lags {
            let week = newest - 7 * lag;
            for loc in table.locations_of(week) {
                if let Some(value) = table.value(loc, week, day) {
                    first.push((day, lag as usize, loc.to_string(), week, value));
                }
            }
        }
    }
    let current = |loc: &str, week: i32| table.value(loc, week, as_of);
    let revisions: Vec<Revision> = first
        .into_iter()
        .filter(|(_, _, loc, _, _)| {
            populations
                .get(loc)
                .is_some_and(|p| !is_aggregate(*p, total))
        })
        .filter_map(|(release, lag, loc, week, value)| {
            let now = current(&loc, week)?;
            Some(Revision {
                release,
                lag,
                week,
                // A protected twin's models see censored counts; so does what teaches them.
                first: censored(twin.censoring, value),
                current: censored(twin.censoring, now),
            })
        })
        .collect();
    // The releases that taught the factors (pairs old enough at some lag).
    let releases = {
        let young = last - 7 * cfg.min_age_weeks as i32;
        let mut r: Vec<i32> = revisions
            .iter()
            .filter(|r| r.week <= young)
            .map(|r| r.release)
            .collect();
        r.sort_unstable();
        r.dedup();
        r.len()
    };
    let factors = nowcast::factors(cfg, &revisions, last);
    let residuals = nowcast::residuals(cfg, &revisions, last, factors[0]);
    Some(Nowcast {
        factors,
        residuals,
        releases,
    })
}

/// One version of one row of the table.
struct Row {
    location: String,
    week: i32,
    time: String,
    day: i32,
    value: f64,
    ok: bool,
}

/// A row's versions: (publication day, value, whether it is a count), sorted by day.
type RowVersions = Vec<(i32, f64, bool)>;

/// The versions read, by (location, week) and row time, each row's versions by day.
struct Versions {
    /// (location, week) -> row time -> its versions.
    rows: HashMap<(String, i32), HashMap<String, RowVersions>>,
    /// Publication day -> the newest week it published.
    releases: BTreeMap<i32, i32>,
}

impl Versions {
    fn new(read: Vec<Row>) -> Versions {
        let mut rows: HashMap<(String, i32), HashMap<String, RowVersions>> = HashMap::new();
        let mut releases: BTreeMap<i32, i32> = BTreeMap::new();
        for r in read {
            let newest = releases.entry(r.day).or_insert(r.week);
            *newest = (*newest).max(r.week);
            rows.entry((r.location, r.week))
                .or_default()
                .entry(r.time)
                .or_default()
                .push((r.day, r.value, r.ok));
        }
        for times in rows.values_mut() {
            for versions in times.values_mut() {
                versions.sort_unstable_by_key(|v| v.0);
            }
        }
        Versions { rows, releases }
    }

    /// The releases published after `after`, with their newest week.
    fn releases(&self, after: i32) -> Vec<(i32, i32)> {
        self.releases
            .range(after + 1..)
            .map(|(d, w)| (*d, *w))
            .collect()
    }

    fn locations_of(&self, week: i32) -> Vec<&str> {
        let mut l: Vec<&str> = self
            .rows
            .keys()
            .filter(|(_, w)| *w == week)
            .map(|(l, _)| l.as_str())
            .collect();
        l.sort_unstable();
        l
    }

    /// The week's count as the table stood on `day`: the sum of its rows' latest versions
    /// published by then (None when none was, or one of them is missing, as a week is read).
    fn value(&self, location: &str, week: i32, day: i32) -> Option<f64> {
        let times = self.rows.get(&(location.to_string(), week))?;
        let mut sum = None;
        for versions in times.values() {
            let Some(&(_, v, ok)) = versions.iter().rev().find(|(d, _, _)| *d <= day) else {
                continue;
            };
            if !ok {
                return None;
            }
            sum = Some(sum.unwrap_or(0.0) + v);
        }
        sum
    }
}
