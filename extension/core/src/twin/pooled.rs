//! The pooled model: one forecast model fitted on every location of the twin and every past
//! season at once, as the leading models of the CDC hub do. One location's few noisy weeks say
//! little about where its curve goes next; hundreds of location-weeks from the same time of year
//! say a lot (docs/twin.md, "The pooled model", has the measurements behind each choice).
//!
//! - Counts become rates per 100,000 and then y = rate^`power` (a fourth root by default): on
//!   that scale a small state's and a large state's weekly changes are alike, so one set of
//!   coefficients serves them all, and the spread grows with the level as the counts' does.
//! - For each step ahead s, one least-squares fit of the change y[t+s] - y[t] on: 1, the level
//!   y[t], the location's last `own_changes` weekly changes, and the last `aggregate_changes`
//!   weekly changes of the aggregate (every location's counts over every location's people: the
//!   national curve for states, and the same with a national row included, since it then counts
//!   twice in both sums).
//! - Training rows: origins of past seasons within `window_weeks` weeks of the same week of the
//!   season as the newest data, and the current season's `window_weeks + 1` most recent origins.
//!   Flu's course depends on the time of year: the window is what made the probe level with the
//!   hub's ensemble.
//! - Quantiles: the residuals, divided by each location's own scale (its mean absolute residual
//!   shrunk toward the pooled one by `shrinkage_rows` pseudo-rows), give pooled empirical
//!   quantiles; a forecast is the fitted change plus its location's scale times those quantiles
//!   (centred on their median), widened by `widen` because residuals in sample are smaller than
//!   errors out of it. Monotone by construction, then back to counts (at least 0).
//!
//! Everything is computed from the data the caller passes: in `enkf.forecast`, the counts the
//! twin assimilated, as published by the reference date. `PooledFit` keeps what was fitted (rows,
//! origins, coefficients, residual quantiles, scales) for `enkf.pooled_fits`.

use std::collections::HashMap;

use nalgebra::{DMatrix, DVector};
use serde::{Deserialize, Serialize};

use super::models::History;
use crate::dates::{civil, from_civil, iso};
use crate::error::{EnkfError, Result};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PooledConfig {
    /// Off: the model is not fitted and its forecasts are the baseline's.
    pub enabled: bool,
    /// The transform of the rate per 100,000: y = rate^power, in (0, 1].
    pub power: f64,
    /// Past seasons' origins within this many weeks of the same week of the season train the
    /// fit; the current season's most recent `window_weeks + 1` do too.
    pub window_weeks: usize,
    /// The location's own recent weekly changes among the features.
    pub own_changes: usize,
    /// The aggregate's recent weekly changes among the features.
    pub aggregate_changes: usize,
    /// The residual quantiles are multiplied by this: out of sample, errors exceed residuals.
    pub widen: f64,
    /// Pseudo-rows pulling each location's residual scale toward the pooled one.
    pub shrinkage_rows: f64,
    /// Origins before this ISO date do not train the fit (None: every week the twin has).
    pub train_from: Option<String>,
    /// Fewer training rows than this for a step: no fit, and the baseline's forecast instead.
    pub min_rows: usize,
    /// Each row weighs its location's people (relative to the median location), a location
    /// that aggregates others no more than the largest one that does not: the large locations
    /// dominate the hub's scores, and the small ones' noise would otherwise flatten the trend
    /// coefficients they need. False: every row alike.
    pub population_weights: bool,
}

impl Default for PooledConfig {
    fn default() -> Self {
        PooledConfig {
            // Chosen on 2021-22 .. 2024-25 leaving each season out in turn; the same choice won
            // for three of the four held-out seasons (docs/backtest.md).
            enabled: true,
            power: 0.25,
            window_weeks: 8,
            own_changes: 3,
            aggregate_changes: 2,
            widen: 1.25,
            shrinkage_rows: 10.0,
            train_from: None,
            min_rows: 50,
            population_weights: true,
        }
    }
}

/// The most own or aggregate changes among the features.
pub const MAX_CHANGES: usize = 8;

impl PooledConfig {
    /// Checks every key; each error names it.
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &'static str, detail: String, hint: &str| {
            Err(EnkfError::invalid(key, detail, hint))
        };
        if !(self.power.is_finite() && self.power > 0.0 && self.power <= 1.0) {
            return bad(
                "pooled.power",
                format!("{} must lie in (0, 1]", self.power),
                "0.25 (a fourth root) is the default; 0.5 is a square root, 1 the rate itself",
            );
        }
        if !(1..=26).contains(&self.window_weeks) {
            return bad(
                "pooled.window_weeks",
                format!("{} must lie in 1..26", self.window_weeks),
                "weeks either side of the same week of the season; 8 is the default",
            );
        }
        if self.own_changes > MAX_CHANGES || self.aggregate_changes > MAX_CHANGES {
            return bad(
                "pooled.own_changes",
                format!(
                    "own_changes {} and aggregate_changes {} must each lie in 0..{MAX_CHANGES}",
                    self.own_changes, self.aggregate_changes
                ),
                "3 and 2 are the defaults",
            );
        }
        if !(self.widen.is_finite() && (0.5..=5.0).contains(&self.widen)) {
            return bad(
                "pooled.widen",
                format!("{} must lie in [0.5, 5]", self.widen),
                "1.25 is the default; 1 keeps the residuals' spread",
            );
        }
        if !(self.shrinkage_rows.is_finite() && (0.0..=1e6).contains(&self.shrinkage_rows)) {
            return bad(
                "pooled.shrinkage_rows",
                format!("{} must lie in [0, 1e6]", self.shrinkage_rows),
                "10 is the default; 0 gives each location its own scale",
            );
        }
        if !(1..=1_000_000).contains(&self.min_rows) {
            return bad(
                "pooled.min_rows",
                format!("{} must lie in 1..1000000", self.min_rows),
                "50 is the default",
            );
        }
        self.train_from_day()?;
        Ok(())
    }

    /// `train_from` as a day number, checked.
    pub fn train_from_day(&self) -> Result<Option<i32>> {
        let Some(text) = &self.train_from else {
            return Ok(None);
        };
        let parts: Vec<&str> = text.trim().split('-').collect();
        let parsed = (parts.len() == 3)
            .then(|| {
                let y = parts[0].parse::<i64>().ok()?;
                let m = parts[1].parse::<u32>().ok()?;
                let d = parts[2].parse::<u32>().ok()?;
                ((1900..=2200).contains(&y) && (1..=12).contains(&m) && (1..=31).contains(&d))
                    .then(|| from_civil(y, m, d))
                    .filter(|day| iso(*day) == format!("{y:04}-{m:02}-{d:02}"))
            })
            .flatten();
        match parsed {
            Some(day) => Ok(Some(day)),
            None => Err(EnkfError::invalid(
                "pooled.train_from",
                format!("\"{text}\" is not a date YYYY-MM-DD between 1900 and 2200"),
                "e.g. \"2021-08-07\"; leave it out to train on every week",
            )),
        }
    }

    /// The number of features: intercept, level, own changes, aggregate changes.
    pub fn features(&self) -> usize {
        2 + self.own_changes + self.aggregate_changes
    }

    /// The features' names, in the order of the coefficients.
    pub fn feature_names(&self) -> Vec<String> {
        let mut names = vec!["intercept".to_string(), "level".to_string()];
        names.extend((1..=self.own_changes).map(|k| format!("change_{k}")));
        names.extend((1..=self.aggregate_changes).map(|k| format!("aggregate_change_{k}")));
        names
    }
}

/// One location's counts and people, as the fit reads them.
#[derive(Debug, Clone)]
pub struct PoolInput {
    pub location: String,
    pub population: f64,
    pub history: History,
}

/// The fit of one step ahead.
#[derive(Debug, Clone, PartialEq)]
pub struct StepFit {
    pub step: usize,
    /// Training rows (location-origins) and the span of their origins.
    pub rows: usize,
    pub locations: usize,
    pub first_origin: i32,
    pub last_origin: i32,
    pub coefficients: Vec<f64>,
    /// The pooled quantiles of the scaled residuals at the levels, centred on their median.
    pub residual_quantiles: Vec<f64>,
    /// The mean absolute residual over every row (the unit of the scales).
    pub mean_abs_residual: f64,
    /// Each training location's residual scale, relative to `mean_abs_residual`.
    pub scales: HashMap<String, f64>,
}

/// What a location's forecast needs from the fit: its transformed level and features at the
/// newest week, and its people.
#[derive(Debug, Clone)]
struct Origin {
    features: Vec<f64>,
    level: f64,
    population: f64,
}

/// The pooled model fitted at one newest week, for each step asked.
#[derive(Debug, Clone)]
pub struct PooledFit {
    pub config: PooledConfig,
    /// The week whose counts the forecasts start from.
    pub newest_week: i32,
    pub levels: Vec<f64>,
    /// One per step asked; None where too few rows trained it.
    pub steps: Vec<(usize, Option<StepFit>)>,
    origins: HashMap<String, Origin>,
}

/// The week of the season: weeks since the first week end on or after August 1st of the season
/// year (August to July), 0..52.
pub fn week_of_season(week: i32) -> i64 {
    let (y, m, _) = civil(week);
    let year = if m >= 8 { y } else { y - 1 };
    let aug1 = from_civil(year, 8, 1);
    // The first day on or after August 1st on the week's weekday.
    let first = aug1 + (week - aug1).rem_euclid(7);
    ((week - first) / 7) as i64
}

/// The season year (August to July) a week falls in.
fn season_year(week: i32) -> i64 {
    let (y, m, _) = civil(week);
    if m >= 8 {
        y
    } else {
        y - 1
    }
}

/// Distance between two weeks of the season, around the year (52 weeks).
fn season_distance(a: i64, b: i64) -> i64 {
    let d = (a - b).abs() % 52;
    d.min(52 - d)
}

/// A grid of transformed rates: one row per location, one column per week from `first`.
struct Grid {
    first: i32,
    weeks: usize,
    names: Vec<String>,
    populations: Vec<f64>,
    /// Each location's weight in the fit.
    weights: Vec<f64>,
    y: Vec<Vec<Option<f64>>>,
    aggregate: Vec<Option<f64>>,
}

impl Grid {
    fn new(inputs: &[PoolInput], newest: i32, power: f64) -> Option<Grid> {
        let first = inputs
            .iter()
            .filter(|p| p.population > 0.0 && p.population.is_finite())
            .flat_map(|p| p.history.weeks.iter().copied())
            .filter(|w| *w <= newest && (newest - w) % 7 == 0)
            .min()?;
        let weeks = ((newest - first) / 7 + 1) as usize;
        let mut grid = Grid {
            first,
            weeks,
            names: Vec::new(),
            populations: Vec::new(),
            weights: Vec::new(),
            y: Vec::new(),
            aggregate: vec![None; weeks],
        };
        let (mut counts, mut people) = (vec![0.0; weeks], vec![0.0; weeks]);
        for p in inputs {
            if !(p.population > 0.0 && p.population.is_finite()) {
                continue;
            }
            let mut row = vec![None; weeks];
            for (w, v) in p.history.weeks.iter().zip(&p.history.values) {
                let (Some(v), true) = (v, *w >= first && *w <= newest && (w - first) % 7 == 0)
                else {
                    continue;
                };
                if !v.is_finite() {
                    continue;
                }
                let i = ((w - first) / 7) as usize;
                let v = v.max(0.0);
                row[i] = Some(transform(v, p.population, power));
                counts[i] += v;
                people[i] += p.population;
            }
            grid.names.push(p.location.clone());
            grid.populations.push(p.population);
            grid.y.push(row);
        }
        for i in 0..weeks {
            if people[i] > 0.0 {
                grid.aggregate[i] = Some(transform(counts[i], people[i], power));
            }
        }
        grid.weights = population_weights(&grid.populations);
        Some(grid)
    }

    fn week(&self, i: usize) -> i32 {
        self.first + 7 * i as i32
    }

    /// The features at origin index i of location l (None: a value is missing).
    fn features(&self, cfg: &PooledConfig, l: usize, i: usize) -> Option<Vec<f64>> {
        let lags = cfg.own_changes.max(cfg.aggregate_changes);
        if i < lags {
            return None;
        }
        let y = &self.y[l];
        let mut x = Vec::with_capacity(cfg.features());
        x.push(1.0);
        x.push(y[i]?);
        for k in 0..cfg.own_changes {
            x.push(y[i - k]? - y[i - k - 1]?);
        }
        for k in 0..cfg.aggregate_changes {
            x.push(self.aggregate[i - k]? - self.aggregate[i - k - 1]?);
        }
        Some(x)
    }
}

/// Whether a location of `population` people aggregates the others, among locations of `total`
/// people in all: its people are those of all the others, within 5% (the FluSight national row
/// is 0.99 of its 52 jurisdictions).
pub fn is_aggregate(population: f64, total: f64) -> bool {
    let others = total - population;
    others > 0.0 && (population - others).abs() <= 0.05 * population
}

/// Weights in proportion to people, relative to the median location; an aggregate location is
/// capped at the largest one that is not.
fn population_weights(populations: &[f64]) -> Vec<f64> {
    let total: f64 = populations.iter().sum();
    let cap = populations
        .iter()
        .copied()
        .filter(|p| !is_aggregate(*p, total))
        .fold(0.0, f64::max);
    let cap = if cap > 0.0 { cap } else { total };
    let mut sorted: Vec<f64> = populations.iter().map(|p| p.min(cap)).collect();
    sorted.sort_unstable_by(f64::total_cmp);
    let median = sorted
        .get(sorted.len() / 2)
        .copied()
        .unwrap_or(1.0)
        .max(1.0);
    populations.iter().map(|p| p.min(cap) / median).collect()
}

fn transform(count: f64, population: f64, power: f64) -> f64 {
    (count.max(0.0) / population * 1e5).powf(power)
}

fn untransform(y: f64, population: f64, power: f64) -> f64 {
    y.max(0.0).powf(1.0 / power) * population / 1e5
}

/// The training rows the fit of `steps` steps would read: bounded by the caller before fitting
/// (locations x weeks of the grid).
pub fn grid_cells(inputs: &[PoolInput], newest: i32) -> usize {
    let first = inputs
        .iter()
        .flat_map(|p| p.history.weeks.iter().copied())
        .filter(|w| *w <= newest)
        .min();
    first.map_or(0, |f| {
        inputs.len().saturating_mul(((newest - f) / 7 + 1) as usize)
    })
}

/// Empirical quantile of sorted values at level p (linear interpolation between order
/// statistics, as R's type 7 and numpy's default).
fn quantile_sorted(sorted: &[f64], p: f64) -> f64 {
    let n = sorted.len();
    if n == 1 {
        return sorted[0];
    }
    let h = (n - 1) as f64 * p;
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(n - 1);
    sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
}

/// Weighted least squares by the normal equations (p is small: 7 by default), with a ridge of 1e-9 of
/// the diagonal's scale so that a constant feature (an aggregate that never changed) cannot
/// make the system singular.
fn least_squares(x: &[Vec<f64>], t: &[f64], w: &[f64], p: usize) -> Option<Vec<f64>> {
    let mut xtx = DMatrix::<f64>::zeros(p, p);
    let mut xty = DVector::<f64>::zeros(p);
    for ((row, target), w) in x.iter().zip(t).zip(w) {
        for a in 0..p {
            xty[a] += w * row[a] * target;
            for b in 0..=a {
                xtx[(a, b)] += w * row[a] * row[b];
            }
        }
    }
    for a in 0..p {
        for b in 0..a {
            xtx[(b, a)] = xtx[(a, b)];
        }
    }
    let scale = (0..p).map(|a| xtx[(a, a)]).fold(0.0, f64::max).max(1e-300);
    for a in 0..p {
        xtx[(a, a)] += 1e-9 * scale;
    }
    let b = xtx.cholesky()?.solve(&xty);
    b.iter()
        .all(|v| v.is_finite())
        .then(|| b.iter().copied().collect())
}

/// Fits the pooled model at `newest` (the week forecasts start from) for each of `steps`, on
/// the locations' counts. `levels` are the quantile levels the forecasts will ask for.
/// `interrupt` is called between steps (a database checks for cancellation there).
pub fn fit(
    cfg: &PooledConfig,
    inputs: &[PoolInput],
    newest: i32,
    steps: &[usize],
    levels: &[f64],
    interrupt: &mut dyn FnMut(),
) -> Result<PooledFit> {
    cfg.validate()?;
    super::models::check_levels(levels)?;
    let train_from = cfg.train_from_day()?;
    let mut out = PooledFit {
        config: cfg.clone(),
        newest_week: newest,
        levels: levels.to_vec(),
        steps: Vec::new(),
        origins: HashMap::new(),
    };
    let Some(grid) = Grid::new(inputs, newest, cfg.power) else {
        out.steps = steps.iter().map(|s| (*s, None)).collect();
        return Ok(out);
    };
    let newest_i = grid.weeks - 1;
    for l in 0..grid.names.len() {
        if let Some(x) = grid.features(cfg, l, newest_i) {
            out.origins.insert(
                grid.names[l].clone(),
                Origin {
                    level: x[1],
                    features: x,
                    population: grid.populations[l],
                },
            );
        }
    }
    let newest_season = season_year(newest);
    let newest_wos = week_of_season(newest);
    let mut distinct: Vec<usize> = steps.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    let mut fits: HashMap<usize, Option<StepFit>> = HashMap::new();
    for &s in &distinct {
        interrupt();
        fits.insert(
            s,
            fit_step(cfg, &grid, s, train_from, newest_season, newest_wos, levels),
        );
    }
    out.steps = steps
        .iter()
        .map(|s| (*s, fits.get(s).cloned().flatten()))
        .collect();
    Ok(out)
}

fn fit_step(
    cfg: &PooledConfig,
    grid: &Grid,
    s: usize,
    train_from: Option<i32>,
    newest_season: i64,
    newest_wos: i64,
    levels: &[f64],
) -> Option<StepFit> {
    let newest_i = grid.weeks - 1;
    if newest_i < s {
        return None;
    }
    let window = cfg.window_weeks as i64;
    // Origins of the current season: the window's most recent that are already observed s
    // weeks later.
    let recent_from = newest_i as i64 - s as i64 - window;
    let origin_ok = |i: usize| -> bool {
        let t = grid.week(i);
        if train_from.is_some_and(|f| t < f) {
            return false;
        }
        if season_year(t) == newest_season {
            i as i64 >= recent_from
        } else {
            season_distance(week_of_season(t), newest_wos) <= window
        }
    };
    let (mut x, mut target, mut owner) = (Vec::new(), Vec::new(), Vec::new());
    let (mut first_origin, mut last_origin) = (i32::MAX, i32::MIN);
    for l in 0..grid.names.len() {
        for i in 0..=(newest_i - s) {
            if !origin_ok(i) {
                continue;
            }
            let (Some(f), Some(later)) = (grid.features(cfg, l, i), grid.y[l][i + s]) else {
                continue;
            };
            target.push(later - f[1]);
            x.push(f);
            owner.push(l);
            first_origin = first_origin.min(grid.week(i));
            last_origin = last_origin.max(grid.week(i));
        }
    }
    if x.len() < cfg.min_rows.max(cfg.features() + 1) {
        return None;
    }
    let p = cfg.features();
    let weights: Vec<f64> = owner
        .iter()
        .map(|l| {
            if cfg.population_weights {
                grid.weights[*l]
            } else {
                1.0
            }
        })
        .collect();
    let b = least_squares(&x, &target, &weights, p)?;
    let residuals: Vec<f64> = x
        .iter()
        .zip(&target)
        .map(|(row, t)| t - row.iter().zip(&b).map(|(a, c)| a * c).sum::<f64>())
        .collect();
    let n = residuals.len() as f64;
    let mean_abs = residuals.iter().map(|r| r.abs()).sum::<f64>() / n;
    let (mut sum_abs, mut rows) = (vec![0.0; grid.names.len()], vec![0usize; grid.names.len()]);
    for (r, l) in residuals.iter().zip(&owner) {
        sum_abs[*l] += r.abs();
        rows[*l] += 1;
    }
    let c = cfg.shrinkage_rows;
    let scale_of = |l: usize| -> f64 {
        if mean_abs <= 0.0 {
            return 1.0;
        }
        let shrunk = (sum_abs[l] + c * mean_abs) / (rows[l] as f64 + c);
        (shrunk / mean_abs).max(1e-6)
    };
    let mut z: Vec<f64> = residuals
        .iter()
        .zip(&owner)
        .map(|(r, l)| r / scale_of(*l))
        .collect();
    z.sort_unstable_by(f64::total_cmp);
    let median = quantile_sorted(&z, 0.5);
    let residual_quantiles = levels
        .iter()
        .map(|p| quantile_sorted(&z, *p) - median)
        .collect();
    let scales = (0..grid.names.len())
        .filter(|l| rows[*l] > 0)
        .map(|l| (grid.names[l].clone(), scale_of(l)))
        .collect();
    Some(StepFit {
        step: s,
        rows: x.len(),
        locations: rows.iter().filter(|n| **n > 0).count(),
        first_origin,
        last_origin,
        coefficients: b,
        residual_quantiles,
        mean_abs_residual: mean_abs,
        scales,
    })
}

impl PooledFit {
    /// What was fitted, as `enkf.runs.model_fit` stores it: per step, the training rows and
    /// locations, the span of the origins, the features and their coefficients (on the
    /// transformed scale), the mean absolute residual and the centred quantiles of the scaled
    /// residuals at the levels. Pooled figures only: no location's own values.
    pub fn to_json(&self) -> serde_json::Value {
        let steps: Vec<serde_json::Value> = self
            .steps
            .iter()
            .map(|(step, fit)| match fit {
                None => serde_json::json!({"step": step, "fitted": false}),
                Some(f) => serde_json::json!({
                    "step": step,
                    "fitted": true,
                    "rows": f.rows,
                    "locations": f.locations,
                    "first_origin": iso(f.first_origin),
                    "last_origin": iso(f.last_origin),
                    "coefficients": f.coefficients,
                    "mean_abs_residual": f.mean_abs_residual,
                    "residual_quantiles": f.residual_quantiles,
                }),
            })
            .collect();
        serde_json::json!({
            "model": "pooled",
            "newest_week": iso(self.newest_week),
            "features": self.config.feature_names(),
            "transform": format!("(count / population * 100000)^{}", self.config.power),
            "quantile_levels": self.levels,
            "locations_forecast": self.origins.len(),
            "steps": steps,
        })
    }

    /// The location's quantiles at each step asked (`quantiles[h][k]`), as counts; None when
    /// the location has no features at the newest week or a step has no fit (the caller falls
    /// back to another model).
    pub fn quantiles(&self, location: &str) -> Option<Vec<Vec<f64>>> {
        let origin = self.origins.get(location)?;
        let power = self.config.power;
        self.steps
            .iter()
            .map(|(_, fit)| {
                let fit = fit.as_ref()?;
                let change: f64 = origin
                    .features
                    .iter()
                    .zip(&fit.coefficients)
                    .map(|(a, b)| a * b)
                    .sum();
                let centre = origin.level + change;
                // The residual quantiles are in units of the scaled residuals.
                let spread = self.config.widen * fit.scales.get(location).copied().unwrap_or(1.0);
                let mut previous = 0.0f64;
                Some(
                    fit.residual_quantiles
                        .iter()
                        .map(|q| {
                            let v = untransform(centre + spread * q, origin.population, power);
                            // Sorted residuals times a positive spread are monotone already;
                            // kept as a guard against rounding.
                            previous = previous.max(v);
                            previous
                        })
                        .collect(),
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{normal, seeded};
    use crate::scoring::FLUSIGHT_LEVELS;

    const SAT_2021_08_07: i32 = 7889; // 2021-08-07 in days since 2000-01-01

    /// Locations whose transformed rates follow a known pooled law from 2021-08-07 for `weeks`:
    /// each week's change is 0.8 x the aggregate's last change - 0.05 x (level - 2) + noise,
    /// the aggregate being what the model computes (all counts over all people, transformed).
    fn synthetic(locations: usize, weeks: usize, noise: f64, seed: u64) -> Vec<PoolInput> {
        let mut rng = seeded(seed);
        let power = 0.25;
        let pops: Vec<f64> = (0..locations)
            .map(|l| 5e5 * (1.0 + l as f64 * 0.7))
            .collect();
        let total: f64 = pops.iter().sum();
        let mut y: Vec<Vec<f64>> = (0..locations)
            .map(|l| vec![1.5 + 0.05 * l as f64; 2])
            .collect();
        let aggregate = |y: &[Vec<f64>], t: usize| -> f64 {
            let rate: f64 = (0..locations)
                .map(|l| y[l][t].powf(1.0 / power) * pops[l])
                .sum::<f64>()
                / total;
            rate.powf(power)
        };
        let mut agg = vec![aggregate(&y, 0), aggregate(&y, 1)];
        for t in 2..weeks {
            for yl in y.iter_mut() {
                let change = 0.8 * (agg[t - 1] - agg[t - 2]) - 0.05 * (yl[t - 1] - 2.0)
                    + noise * normal(&mut rng);
                let v = (yl[t - 1] + change).max(0.1);
                yl.push(v);
            }
            agg.push(aggregate(&y, t));
        }
        (0..locations)
            .map(|l| PoolInput {
                location: format!("L{l}"),
                population: pops[l],
                history: History {
                    weeks: (0..weeks).map(|k| SAT_2021_08_07 + 7 * k as i32).collect(),
                    values: y[l]
                        .iter()
                        .map(|v| Some(v.powf(1.0 / power) * pops[l] / 1e5))
                        .collect(),
                },
            })
            .collect()
    }

    #[test]
    fn week_of_season_counts_from_the_first_saturday_of_august() {
        assert_eq!(iso(SAT_2021_08_07), "2021-08-07");
        assert_eq!(week_of_season(SAT_2021_08_07), 0);
        assert_eq!(week_of_season(SAT_2021_08_07 + 7 * 20), 20);
        // 2021-07-31 closes 2020-21, a season of 53 weeks (2020-08-01 was a Saturday).
        assert_eq!(week_of_season(SAT_2021_08_07 - 7), 52);
        assert_eq!(season_distance(1, 50), 3);
    }

    #[test]
    fn a_known_law_is_recovered_and_its_quantiles_cover() {
        // The law's coefficients come back from the pooled rows one step ahead.
        let inputs = synthetic(20, 150, 0.02, 3);
        let newest = SAT_2021_08_07 + 7 * 149;
        let cfg = PooledConfig {
            window_weeks: 26,
            own_changes: 1,
            aggregate_changes: 1,
            ..PooledConfig::default()
        };
        let mut ticks = 0;
        let f = fit(&cfg, &inputs, newest, &[1], &FLUSIGHT_LEVELS, &mut || {
            ticks += 1
        })
        .unwrap();
        assert_eq!(ticks, 1);
        let s = f.steps[0].1.as_ref().unwrap();
        assert!(s.rows > 500, "{}", s.rows);
        // intercept 0.1 + 0.04 drive-free part is time-varying; the level and aggregate
        // coefficients are structural.
        assert!(
            (s.coefficients[3] - 0.8).abs() < 0.1,
            "{:?}",
            s.coefficients
        );
        assert!(
            (s.coefficients[1] + 0.05).abs() < 0.03,
            "{:?}",
            s.coefficients
        );

        // With noise: the 90% interval one step ahead holds about 90% of what comes, over
        // every location and many origins out of sample.
        let inputs = synthetic(30, 200, 0.05, 9);
        let (mut inside, mut total) = (0, 0);
        for end in (120..199).step_by(3) {
            let newest = SAT_2021_08_07 + 7 * end as i32;
            let f = fit(&cfg, &inputs, newest, &[1], &FLUSIGHT_LEVELS, &mut || {}).unwrap();
            for p in &inputs {
                let q = f.quantiles(&p.location).unwrap();
                let truth = p.history.values[end + 1].unwrap();
                inside += (q[0][3] <= truth && truth <= q[0][19]) as usize;
                total += 1;
            }
        }
        let coverage = inside as f64 / total as f64;
        assert!((0.85..=0.99).contains(&coverage), "90% coverage {coverage}");
    }

    #[test]
    fn the_window_and_train_from_choose_the_rows() {
        let inputs = synthetic(10, 160, 0.05, 5);
        let newest = SAT_2021_08_07 + 7 * 159;
        let wide = fit(
            &PooledConfig::default(),
            &inputs,
            newest,
            &[1, 2],
            &FLUSIGHT_LEVELS,
            &mut || {},
        )
        .unwrap();
        let s1 = wide.steps[0].1.as_ref().unwrap();
        let s2 = wide.steps[1].1.as_ref().unwrap();
        // Current season: the 9 most recent origins; three past seasons: at most 17 weeks each
        // around the same week of the season.
        assert_eq!(iso(newest), "2024-08-24");
        assert!(
            s1.rows <= 10 * (9 + 3 * 17) && s1.rows > 10 * 9,
            "{}",
            s1.rows
        );
        assert!(s1.last_origin == newest - 7 && s2.last_origin == newest - 14);
        // Trained from 30 weeks before a mid-season week: no past season, the current one's 9
        // most recent origins.
        let mid = SAT_2021_08_07 + 7 * 140;
        assert_eq!(iso(mid), "2024-04-13");
        let late = fit(
            &PooledConfig {
                train_from: Some(iso(mid - 7 * 30)),
                ..PooledConfig::default()
            },
            &inputs,
            mid,
            &[1],
            &FLUSIGHT_LEVELS,
            &mut || {},
        )
        .unwrap();
        let s = late.steps[0].1.as_ref().unwrap();
        assert_eq!((s.rows, s.first_origin), (10 * 9, mid - 7 * 9), "{s:?}");
    }

    #[test]
    fn later_weeks_change_nothing_and_gaps_fall_back() {
        let inputs = synthetic(8, 120, 0.05, 7);
        let newest = SAT_2021_08_07 + 7 * 100;
        let a = fit(
            &PooledConfig::default(),
            &inputs,
            newest,
            &[1, 2, 3, 4],
            &FLUSIGHT_LEVELS,
            &mut || {},
        )
        .unwrap();
        // The same data with every week after the newest changed: the fit reads none of them.
        let mut changed = inputs.clone();
        for p in &mut changed {
            for (w, v) in p.history.weeks.iter().zip(p.history.values.iter_mut()) {
                if *w > newest {
                    *v = Some(1e6);
                }
            }
        }
        let b = fit(
            &PooledConfig::default(),
            &changed,
            newest,
            &[1, 2, 3, 4],
            &FLUSIGHT_LEVELS,
            &mut || {},
        )
        .unwrap();
        assert_eq!(a.quantiles("L3"), b.quantiles("L3"));
        // A location without its newest count has no pooled forecast.
        let mut gap = inputs.clone();
        gap[3].history.values[100] = None;
        let c = fit(
            &PooledConfig::default(),
            &gap,
            newest,
            &[1],
            &FLUSIGHT_LEVELS,
            &mut || {},
        )
        .unwrap();
        assert!(c.quantiles("L3").is_none() && c.quantiles("L2").is_some());
        // Too few rows: no fit.
        let few = fit(
            &PooledConfig {
                min_rows: 100_000,
                ..PooledConfig::default()
            },
            &inputs,
            newest,
            &[1],
            &FLUSIGHT_LEVELS,
            &mut || {},
        )
        .unwrap();
        assert!(few.steps[0].1.is_none() && few.quantiles("L2").is_none());
    }

    #[test]
    fn quantiles_are_monotone_and_never_negative() {
        let inputs = synthetic(12, 130, 0.3, 11);
        let newest = SAT_2021_08_07 + 7 * 129;
        let f = fit(
            &PooledConfig::default(),
            &inputs,
            newest,
            &[1, 4],
            &FLUSIGHT_LEVELS,
            &mut || {},
        )
        .unwrap();
        for p in &inputs {
            for q in f.quantiles(&p.location).unwrap() {
                assert!(q[0] >= 0.0 && q.windows(2).all(|w| w[0] <= w[1]), "{q:?}");
            }
        }
    }

    #[test]
    fn a_national_row_weighs_no_more_than_the_largest_state() {
        // Three states and their nation (the sum).
        let w = population_weights(&[1e6, 2e6, 4e6, 7e6]);
        assert_eq!(w, vec![0.25, 0.5, 1.0, 1.0]);
        // A large state is not a nation.
        let w = population_weights(&[1e6, 1e6, 1e6, 6e6]);
        assert_eq!(w, vec![1.0, 1.0, 1.0, 6.0]);
        assert_eq!(population_weights(&[3.0]), vec![1.0]);
    }

    #[test]
    fn bad_settings_name_their_key() {
        for (cfg, key) in [
            (
                PooledConfig {
                    power: 0.0,
                    ..Default::default()
                },
                "pooled.power",
            ),
            (
                PooledConfig {
                    window_weeks: 0,
                    ..Default::default()
                },
                "pooled.window_weeks",
            ),
            (
                PooledConfig {
                    own_changes: 9,
                    ..Default::default()
                },
                "pooled.own_changes",
            ),
            (
                PooledConfig {
                    widen: f64::NAN,
                    ..Default::default()
                },
                "pooled.widen",
            ),
            (
                PooledConfig {
                    train_from: Some("2021-02-30".into()),
                    ..Default::default()
                },
                "pooled.train_from",
            ),
        ] {
            let e = cfg.validate().unwrap_err();
            assert_eq!(e.argument(), Some(key), "{e:?}");
        }
    }
}
