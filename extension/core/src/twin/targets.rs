//! Every target of the CDC FluSight hub (hub-tasks.json) from whole trajectories, for the twin
//! and for the FluSight-style baseline, per location:
//!
//! - `wk inc flu hosp`: quantiles for horizons -1..3 and 100 connected sample trajectories;
//! - `wk flu hosp rate change`: pmf over the five classes per horizon;
//! - `peak inc flu hosp` / `peak week inc flu hosp`: quantiles of the season's highest weekly
//!   count, pmf over the season's week ends;
//! - `wk inc flu prop ed visits`: quantiles of the ED-visit proportion (twin with the ED stream).
//!
//! Everything is computed from one set of weekly draws per model (`WeeklyDraws`): week 0 is the
//! last analysed week (horizon -1 when the data are current, the nowcast of a count that is
//! still being revised), then every week to the later of the last horizon and the season's
//! end. A trajectory is one member's path with its draws of the observation error, so every
//! target of a trajectory is coherent with its others. Plain data in, plain data out; every
//! draw seeded from (twin seed, location, week, purpose).

use nalgebra::DMatrix;
use serde::{Deserialize, Serialize};

use super::location::{week_seed, LocationModel};
use super::models::{History, PURPOSE_BASELINE};
use super::season::{parse_month_day, Season};
use crate::error::{EnkfError, Result};
use crate::rng::{index, seeded};
use crate::scoring::{baseline_quantiles_all, quantiles_unsorted};

/// The hub's rate-change classes, in their order (the pmf's order).
pub const RATE_CHANGE_CLASSES: [&str; 5] = [
    "large_decrease",
    "decrease",
    "stable",
    "increase",
    "large_increase",
];
/// Index of "stable" in RATE_CHANGE_CLASSES.
pub const STABLE: usize = 2;

/// Seed purpose of the choice of the submitted samples among the trajectories.
pub const PURPOSE_SAMPLES: u64 = 12;
/// Seed purpose of the baseline's trajectories.
pub const PURPOSE_BASELINE_PATHS: u64 = 13;

/// A change of fewer admissions than this is "stable" whatever the rate (hub rule).
pub const MIN_COUNT_CHANGE: f64 = 10.0;

/// How the observation-error draws of one member are joined across weeks into trajectories.
/// Either way each week's draws are the same set (so every quantile is the same); only which
/// draw follows which changes, and with it the rate-change and peak targets and the samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NoiseCoupling {
    /// A member's d-th draw of every week is its d-th smallest: a member's deviation from its
    /// model path persists (the model is off by a level for weeks, rather than by new noise
    /// each week).
    Persistent,
    /// As drawn: independent from week to week.
    Independent,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TargetsConfig {
    /// Sample trajectories submitted per location (the hub takes exactly 100).
    pub samples: usize,
    pub noise: NoiseCoupling,
    /// The season of the peak targets: its first week is the first ending on or after this
    /// month-day in the autumn, its last the last ending on or before `season_last_week` in
    /// the spring (defaults: the hub's 2025-26 season, 2025-11-22 .. 2026-05-23).
    pub season_first_week: String,
    pub season_last_week: String,
    /// The twin's growth damping (`forecast.growth_damping`) acts up to the last horizon's
    /// week and for this many weeks more on the way to the season's end (null = every week).
    pub peak_damped_weeks: Option<u32>,
    /// The baseline's trajectories (bootstrap paths).
    pub baseline_paths: usize,
    /// Climatological rate-change pmf: past reference dates within this many weeks of the
    /// same time of year count ...
    pub climatology_window_weeks: u32,
    /// ... and each class gets this pseudo-count, so that no class has probability 0 (a
    /// log score of infinity) after one or two past seasons.
    pub climatology_pseudo_count: f64,
}

impl Default for TargetsConfig {
    fn default() -> Self {
        TargetsConfig {
            samples: 100,
            noise: NoiseCoupling::Persistent,
            season_first_week: "11-17".into(),
            season_last_week: "05-29".into(),
            peak_damped_weeks: None,
            baseline_paths: 2000,
            climatology_window_weeks: 3,
            climatology_pseudo_count: 0.5,
        }
    }
}

fn invalid(path: &str, detail: String, hint: &str) -> EnkfError {
    EnkfError::InvalidValue {
        arg: "config",
        detail: format!("config {path}: {detail}"),
        hint: hint.into(),
    }
}

impl TargetsConfig {
    pub fn validate(&self) -> Result<()> {
        if self.samples == 0 || self.samples > 10_000 {
            return Err(invalid(
                "targets.samples",
                format!("{} must lie in 1..10000", self.samples),
                "the hub takes 100",
            ));
        }
        if self.baseline_paths < 10 || self.baseline_paths > 100_000 {
            return Err(invalid(
                "targets.baseline_paths",
                format!("{} must lie in 10..100000", self.baseline_paths),
                "2000 is the default",
            ));
        }
        if self.climatology_window_weeks > 26 {
            return Err(invalid(
                "targets.climatology_window_weeks",
                format!("{} must lie in 0..26", self.climatology_window_weeks),
                "3 weeks either side of the same time of year",
            ));
        }
        let p = self.climatology_pseudo_count;
        if !(p.is_finite() && p > 0.0 && p <= 100.0) {
            return Err(invalid(
                "targets.climatology_pseudo_count",
                format!("{p} must lie in (0, 100]"),
                "0.5 per class (Jeffreys)",
            ));
        }
        self.month_days().map(|_| ())
    }

    /// The season's first and last month-days.
    pub fn month_days(&self) -> Result<((u32, u32), (u32, u32))> {
        Ok((
            parse_month_day("targets.season_first_week", &self.season_first_week)?,
            parse_month_day("targets.season_last_week", &self.season_last_week)?,
        ))
    }

    /// The season a reference date belongs to, by this configuration.
    pub fn season(&self, reference_date: i32) -> Result<Season> {
        let (first, last) = self.month_days()?;
        Season::containing(reference_date, first, last)
    }
}

/// Draws of one model for every week from `first_week` on: `values[w][i]` is trajectory i's
/// value in the week ending `first_week + 7 w`. Every week has the same trajectories.
#[derive(Debug, Clone, PartialEq)]
pub struct WeeklyDraws {
    pub first_week: i32,
    pub values: Vec<Vec<f64>>,
}

impl WeeklyDraws {
    pub fn trajectories(&self) -> usize {
        self.values.first().map_or(0, Vec::len)
    }

    /// The index of the week ending `week`, if the draws cover it.
    pub fn step(&self, week: i32) -> Option<usize> {
        let d = week - self.first_week;
        (d >= 0 && d % 7 == 0 && ((d / 7) as usize) < self.values.len()).then_some((d / 7) as usize)
    }
}

/// One model's targets at one location and reference date.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelTargets {
    /// `samples[k][h]`: sample k's count at horizon h (integers). Sample ids are the k: the
    /// same inputs always give the same trajectory under the same id.
    pub samples: Vec<Vec<f64>>,
    /// `quantiles[h][l]`: weekly admissions at horizon h and level l (integers, monotone).
    pub quantiles: Vec<Vec<f64>>,
    /// `rate_change[h][c]`: probability of class c (RATE_CHANGE_CLASSES) at horizon h; each
    /// sums to 1 exactly in any order of summation.
    pub rate_change: Vec<[f64; 5]>,
    /// Quantiles of the season's highest weekly count, at the levels (integers).
    pub peak_intensity: Vec<f64>,
    /// Probability of each of the season's weeks (Targets::season_weeks) being the peak.
    pub peak_week: Vec<f64>,
    /// `ed_quantiles[h][l]`: the ED-visit proportion (twin with the ED stream; for the
    /// baseline, when ED history is given).
    pub ed_quantiles: Option<Vec<Vec<f64>>>,
}

/// Every target of one location and reference date, for the twin and the baseline.
#[derive(Debug, Clone, PartialEq)]
pub struct Targets {
    pub horizons: Vec<i32>,
    /// reference_date + 7 * horizon.
    pub target_end_dates: Vec<i32>,
    pub season_weeks: Vec<i32>,
    pub twin: ModelTargets,
    pub baseline: ModelTargets,
    /// The climatological rate-change pmf of the location's past seasons, per horizon: the
    /// reference the rate-change scores are relative to (the hub publishes no baseline pmf).
    pub climatology: Vec<[f64; 5]>,
}

/// What `forecast_targets` needs of one location, beside the twin's configuration and model.
#[derive(Debug, Clone)]
pub struct TargetInputs<'a> {
    /// The latest analysis ensemble (7 rows per member, or 10 with the ED stream).
    pub ensemble: &'a DMatrix<f64>,
    /// The week the ensemble was analysed at (the last week with data).
    pub last_week: i32,
    /// The assimilated counts, oldest first (as `forecast_all` takes them): the season's
    /// observed weeks and the past seasons of the climatology come from here.
    pub history: &'a History,
    /// The ED-visit proportions, weekly, oldest first (for the baseline's ED quantiles).
    pub ed_history: Option<&'a History>,
    /// A week end after `last_week` (by default `last_week + 7`, the FluSight convention).
    pub reference_date: i32,
    /// Horizons in -1..=3, increasing (the hub's: -1, 0, 1, 2, 3).
    pub horizons: &'a [i32],
    /// Quantile levels, increasing within (0, 1).
    pub levels: &'a [f64],
    pub season: Season,
    /// The most weeks the members may be run (to the later of the last horizon and the
    /// season's end): bounds the work a far-off season or stale data could ask for.
    pub max_weeks: usize,
    /// `location_seed(cfg.seed, location)`.
    pub location_seed: u64,
}

/// The hub's rate-change thresholds of a horizon, per 100,000 people: |change| below the first
/// is stable, at or above the second large (2024-25 and 2025-26 rules). Horizon -1 compares the
/// week before the reference date with itself (a change of 0, always stable): it uses
/// horizon 0's thresholds, which it never reaches.
pub fn rate_change_thresholds(horizon: i32) -> Result<(f64, f64)> {
    match horizon {
        -1 | 0 => Ok((0.3, 1.7)),
        1 => Ok((0.5, 3.0)),
        2 => Ok((0.7, 4.0)),
        3 => Ok((1.0, 5.0)),
        _ => Err(EnkfError::invalid(
            "horizons",
            format!("the hub defines rate change for horizons -1..3, not {horizon}"),
            "horizons -1, 0, 1, 2, 3",
        )),
    }
}

/// The class (index into RATE_CHANGE_CLASSES) of a change from `base` to `target` admissions
/// (whole counts) at `horizon`: stable when the count changes by fewer than 10 or the rate by
/// less than the stable threshold; large at or above the large threshold. The rate is
/// change * 100000 / population in one division, so a change exactly at a threshold (say 30
/// admissions in 10 million people, 0.3 per 100k) compares equal to it.
pub fn rate_change_class(base: f64, target: f64, population: f64, horizon: i32) -> Result<usize> {
    let (stable, large) = rate_change_thresholds(horizon)?;
    let change = target - base;
    if change.abs() < MIN_COUNT_CHANGE {
        return Ok(STABLE);
    }
    let rate = change * 100_000.0 / population;
    Ok(if rate.abs() < stable {
        STABLE
    } else if rate >= large {
        4
    } else if rate <= -large {
        0
    } else if rate > 0.0 {
        3
    } else {
        1
    })
}

/// Probabilities proportional to `weights` that sum to exactly 1 in any order of summation:
/// each is a multiple of 2^-40 (largest-remainder apportionment), so every partial sum is
/// exact. Off from weight / total by less than 1e-12. All-zero weights: uniform.
pub fn exact_pmf(weights: &[f64]) -> Vec<f64> {
    const UNIT: f64 = (1u64 << 40) as f64;
    let total: f64 = weights.iter().filter(|w| w.is_finite() && **w > 0.0).sum();
    let k = weights.len();
    if k == 0 {
        return Vec::new();
    }
    let shares: Vec<f64> = weights
        .iter()
        .map(|w| {
            if total > 0.0 {
                if w.is_finite() && *w > 0.0 {
                    w / total * UNIT
                } else {
                    0.0
                }
            } else {
                UNIT / k as f64
            }
        })
        .collect();
    let mut units: Vec<u64> = shares.iter().map(|s| s.floor() as u64).collect();
    let assigned: u64 = units.iter().sum();
    let mut left = (1u64 << 40).saturating_sub(assigned);
    let mut order: Vec<usize> = (0..k).collect();
    // Largest remainders first; ties to the lower index, so the result is deterministic.
    order.sort_by(|&a, &b| {
        let ra = shares[a] - shares[a].floor();
        let rb = shares[b] - shares[b].floor();
        rb.total_cmp(&ra).then(a.cmp(&b))
    });
    for &i in order.iter().cycle() {
        if left == 0 {
            break;
        }
        if shares[i] > 0.0 || total <= 0.0 {
            units[i] += 1;
            left -= 1;
        }
    }
    units.into_iter().map(|u| u as f64 / UNIT).collect()
}

/// The index of each horizon's target week among the draws (week 0 = `last_week`): the target
/// of horizon h ends `reference_date + 7 h`. Refuses a reference date whose week before is
/// already past the analysis (the nowcast of that week needs the analysis at it).
pub fn horizon_steps(reference_date: i32, last_week: i32, horizons: &[i32]) -> Result<Vec<usize>> {
    if (reference_date - last_week) % 7 != 0 || reference_date - 7 < last_week {
        return Err(EnkfError::invalid(
            "reference_date",
            format!(
                "the reference date {} must be a week end at least one week after the last week with data {}",
                crate::dates::iso(reference_date),
                crate::dates::iso(last_week)
            ),
            "reference_date = the last assimilated week + 7 days when the data are current",
        ));
    }
    if horizons.is_empty() || !horizons.windows(2).all(|w| w[0] < w[1]) {
        return Err(EnkfError::invalid(
            "horizons",
            "horizons must be given, increasing",
            "the hub's: -1, 0, 1, 2, 3",
        ));
    }
    horizons
        .iter()
        .map(|&h| {
            rate_change_thresholds(h)?;
            Ok(((reference_date + 7 * h - last_week) / 7) as usize)
        })
        .collect()
}

/// The twin's weekly draws of admissions (and of the ED proportion, with the stream) from its
/// analysis at `last_week` for `weeks` weeks after it, damped for the first `damped_weeks`;
/// joined into trajectories by `coupling`. See `LocationModel::pool`.
pub fn twin_draws(
    model: &LocationModel<'_>,
    ensemble: &DMatrix<f64>,
    last_week: i32,
    weeks: usize,
    damped_weeks: usize,
    coupling: NoiseCoupling,
) -> (WeeklyDraws, Option<WeeklyDraws>) {
    let pool = model.pool(ensemble, last_week, weeks, damped_weeks);
    let join = |mut values: Vec<Vec<f64>>| {
        if coupling == NoiseCoupling::Persistent && pool.draws > 1 {
            for week in values.iter_mut() {
                for member in week.chunks_mut(pool.draws) {
                    member.sort_by(f64::total_cmp);
                }
            }
        }
        WeeklyDraws {
            first_week: last_week,
            values,
        }
    };
    let ed = pool.ed.clone().map(join);
    (join(pool.admissions), ed)
}

/// The FluSight-style baseline as trajectories: from the last observed value (week 0, held
/// exactly), each path adds a week-to-week change of the history (both signs) drawn at random
/// each week, as `scoring::baseline_quantiles_all` does from its second week on; each week's
/// paths are then shifted together so that their median is the last value (the baseline's
/// flat median), and truncated at 0. `weeks` weeks after week 0, `paths` trajectories.
pub fn baseline_draws(
    observed: &[f64],
    last_week: i32,
    weeks: usize,
    paths: usize,
    seed: u64,
) -> WeeklyDraws {
    let last = observed.last().copied().unwrap_or(0.0);
    let mut diffs: Vec<f64> = observed
        .windows(2)
        .flat_map(|w| [w[1] - w[0], w[0] - w[1]])
        .collect();
    if diffs.is_empty() {
        diffs.push(0.0);
    }
    let mut rng = seeded(seed);
    let mut values = Vec::with_capacity(weeks + 1);
    values.push(vec![last; paths]);
    let mut current = vec![last; paths];
    for _ in 0..weeks {
        for p in current.iter_mut() {
            *p += diffs[index(&mut rng, diffs.len())];
        }
        let mut scratch = current.clone();
        let median = quantiles_unsorted(&mut scratch, &[0.5])[0];
        values.push(
            current
                .iter()
                .map(|v| (v - median + last).max(0.0))
                .collect(),
        );
    }
    WeeklyDraws {
        first_week: last_week,
        values,
    }
}

/// `count` trajectories chosen among the draws without replacement (seeded; when there are
/// fewer, all of them in a seeded order, repeated), each at `steps`, rounded to whole counts
/// when `round`. Ids are the positions in the result.
pub fn select_samples(
    draws: &WeeklyDraws,
    steps: &[usize],
    count: usize,
    seed: u64,
    round: bool,
) -> Vec<Vec<f64>> {
    let n = draws.trajectories();
    if n == 0 {
        return Vec::new();
    }
    let mut rng = seeded(seed);
    let mut order: Vec<usize> = (0..n).collect();
    let take = count.min(n);
    for i in 0..take {
        let j = i + index(&mut rng, n - i);
        order.swap(i, j);
    }
    (0..count)
        .map(|k| {
            let t = order[k % take];
            steps
                .iter()
                .map(|&s| {
                    let v = draws.values[s][t];
                    if round {
                        v.round()
                    } else {
                        v
                    }
                })
                .collect()
        })
        .collect()
}

/// Type-7 quantiles of the draws at each step, rounded to whole counts when `round`.
pub fn quantiles_at(
    draws: &WeeklyDraws,
    steps: &[usize],
    levels: &[f64],
    round: bool,
) -> Vec<Vec<f64>> {
    steps
        .iter()
        .map(|&s| {
            let mut v = draws.values[s].clone();
            let q = quantiles_unsorted(&mut v, levels);
            if round {
                q.into_iter().map(f64::round).collect()
            } else {
                q
            }
        })
        .collect()
}

/// The rate-change pmf at each horizon: the fraction of trajectories in each class, comparing
/// each trajectory's (rounded) count of the target week with its own count of the week before
/// the reference date (`base_step`). For the twin that week's count is its nowcast, so the
/// pmf carries the uncertainty of a count still being revised, as the hub scores against the
/// final counts of both weeks.
pub fn rate_change_pmf(
    draws: &WeeklyDraws,
    base_step: usize,
    steps: &[usize],
    horizons: &[i32],
    population: f64,
) -> Result<Vec<[f64; 5]>> {
    steps
        .iter()
        .zip(horizons)
        .map(|(&s, &h)| {
            let mut counts = [0.0; 5];
            for (b, t) in draws.values[base_step].iter().zip(&draws.values[s]) {
                counts[rate_change_class(b.round(), t.round(), population, h)?] += 1.0;
            }
            let p = exact_pmf(&counts);
            Ok([p[0], p[1], p[2], p[3], p[4]])
        })
        .collect()
}

/// The season's observed counts as known: week end -> count, for the weeks of `history`.
fn observed_in(history: &History, weeks: &[i32]) -> Vec<Option<f64>> {
    weeks
        .iter()
        .map(|w| {
            history
                .weeks
                .iter()
                .position(|x| x == w)
                .and_then(|i| history.values[i])
        })
        .collect()
}

/// The peak of a series over the season's weeks: (index of the first week with the highest
/// value, that value); None when no week has a value. The hub's peak week is the week with
/// the highest count; ties (rare but for small counts) go to the earliest.
pub fn peak_of(values: &[Option<f64>]) -> Option<(usize, f64)> {
    let mut best: Option<(usize, f64)> = None;
    for (i, v) in values.iter().enumerate() {
        if let Some(v) = v {
            if best.is_none_or(|(_, b)| *v > b) {
                best = Some((i, *v));
            }
        }
    }
    best
}

/// Peak intensity quantiles (integers) and peak week pmf over `season_weeks`, from the
/// trajectories: a season week before the draws' first week counts with its observed value
/// (`observed[i]`, None = not reported: not a candidate), a later one with each trajectory's
/// rounded value. A season whose peak has passed (every trajectory below it since) puts
/// probability 1 on the observed peak week and intensity.
pub fn peak_targets(
    draws: &WeeklyDraws,
    season_weeks: &[i32],
    observed: &[Option<f64>],
    levels: &[f64],
) -> (Vec<f64>, Vec<f64>) {
    let n = draws.trajectories();
    let mut heights = Vec::with_capacity(n);
    let mut counts = vec![0.0; season_weeks.len()];
    let mut series: Vec<Option<f64>> = vec![None; season_weeks.len()];
    for t in 0..n {
        for (i, &w) in season_weeks.iter().enumerate() {
            series[i] = match draws.step(w) {
                Some(s) => Some(draws.values[s][t].round()),
                None if w < draws.first_week => observed[i],
                None => None,
            };
        }
        if let Some((i, v)) = peak_of(&series) {
            counts[i] += 1.0;
            heights.push(v);
        }
    }
    if heights.is_empty() {
        return (
            vec![f64::NAN; levels.len()],
            exact_pmf(&vec![0.0; season_weeks.len()]),
        );
    }
    let q = quantiles_unsorted(&mut heights, levels)
        .into_iter()
        .map(f64::round)
        .collect();
    (q, exact_pmf(&counts))
}

/// The climatological rate-change pmf of a location: over its past seasons (data before the
/// current season's August 1st), every reference date within `window_weeks` weeks of the same
/// time of year, the class of the change from the week before it to the target week, counted
/// with `pseudo` added to each class. Horizon -1 is always stable.
pub fn climatological_rate_change(
    history: &History,
    reference_date: i32,
    horizons: &[i32],
    population: f64,
    before: i32,
    window_weeks: u32,
    pseudo: f64,
) -> Result<Vec<[f64; 5]>> {
    let known: std::collections::HashMap<i32, f64> = history
        .weeks
        .iter()
        .zip(&history.values)
        .filter_map(|(w, v)| v.map(|v| (*w, v)))
        .filter(|(w, _)| *w < before)
        .collect();
    let doy = |d: i32| crate::dates::day_of_year(d);
    let close = |d: i32| {
        let diff = (doy(d) - doy(reference_date)).abs();
        diff.min(365.25 - diff) <= 7.0 * window_weeks as f64 + 0.5
    };
    horizons
        .iter()
        .map(|&h| {
            rate_change_thresholds(h)?;
            if h == -1 {
                return Ok([0.0, 0.0, 1.0, 0.0, 0.0]);
            }
            let mut counts = [pseudo; 5];
            for (&w, &base) in &known {
                let r = w + 7;
                if !close(r) {
                    continue;
                }
                if let Some(&target) = known.get(&(r + 7 * h)) {
                    counts[rate_change_class(base.round(), target.round(), population, h)?] += 1.0;
                }
            }
            let p = exact_pmf(&counts);
            Ok([p[0], p[1], p[2], p[3], p[4]])
        })
        .collect()
}

fn check_inputs(inputs: &TargetInputs<'_>, population: f64) -> Result<()> {
    if !(population.is_finite() && population >= 1.0) {
        return Err(EnkfError::invalid(
            "population",
            format!("a population must be a positive number of people, got {population}"),
            "the locations table's population",
        ));
    }
    let levels = inputs.levels;
    if levels.is_empty()
        || !levels.windows(2).all(|w| w[0] < w[1])
        || levels[0] <= 0.0
        || levels[levels.len() - 1] >= 1.0
    {
        return Err(EnkfError::invalid(
            "quantile_levels",
            "levels must increase strictly within (0, 1)",
            "e.g. the 23 FluSight levels 0.01, 0.025, 0.05, ..., 0.975, 0.99",
        ));
    }
    if inputs.ensemble.ncols() == 0 {
        return Err(EnkfError::shape(
            "ensemble",
            "the ensemble has no members",
            "forecast from a stored analysis",
        ));
    }
    Ok(())
}

/// Every target for the twin and the baseline at one location (the composition of the
/// functions above). Weeks run: up to the later of the last horizon's target and the season's
/// last week, at most `inputs.max_weeks`.
pub fn forecast_targets(model: &LocationModel<'_>, inputs: &TargetInputs<'_>) -> Result<Targets> {
    let cfg = model.cfg;
    let tc = &cfg.targets;
    check_inputs(inputs, model.population)?;
    let steps = horizon_steps(inputs.reference_date, inputs.last_week, inputs.horizons)?;
    let base_step = ((inputs.reference_date - 7 - inputs.last_week) / 7) as usize;
    let last_step = steps.iter().copied().max().unwrap_or(0);
    let season_steps = ((inputs.season.last_week - inputs.last_week) / 7).max(0) as usize;
    let weeks = last_step.max(season_steps);
    if weeks > inputs.max_weeks {
        return Err(EnkfError::TooLarge {
            arg: "max_weeks",
            detail: format!(
                "{weeks} weeks from the last data to the season's end exceed the limit {}",
                inputs.max_weeks
            ),
            hint: "forecast from current data, or raise the limit".into(),
        });
    }
    let damped = match tc.peak_damped_weeks {
        Some(k) => last_step + k as usize,
        None => weeks,
    };
    let season_weeks = inputs.season.weeks();
    let observed = observed_in(inputs.history, &season_weeks);
    let sample_seed = week_seed(inputs.location_seed, inputs.reference_date, PURPOSE_SAMPLES);

    let (twin, twin_ed) = twin_draws(
        model,
        inputs.ensemble,
        inputs.last_week,
        weeks,
        damped,
        tc.noise,
    );
    let (peak_q, peak_w) = peak_targets(&twin, &season_weeks, &observed, inputs.levels);
    let twin_targets = ModelTargets {
        samples: select_samples(&twin, &steps, tc.samples, sample_seed, true),
        quantiles: quantiles_at(&twin, &steps, inputs.levels, true),
        rate_change: rate_change_pmf(&twin, base_step, &steps, inputs.horizons, model.population)?,
        peak_intensity: peak_q,
        peak_week: peak_w,
        ed_quantiles: twin_ed.map(|d| quantiles_at(&d, &steps, inputs.levels, false)),
    };

    // The baseline sees the counts as published, as the hub's does; its quantiles at the
    // weeks after the data are exactly those `forecast_all` stores (rounded), the week of the
    // data itself is its last value.
    let published = inputs.history.observed();
    let paths = baseline_draws(
        &published,
        inputs.last_week,
        weeks,
        tc.baseline_paths,
        week_seed(
            inputs.location_seed,
            inputs.last_week,
            PURPOSE_BASELINE_PATHS,
        ),
    );
    let stored = baseline_quantiles_all(
        &published,
        last_step.max(1),
        inputs.levels,
        week_seed(inputs.location_seed, inputs.last_week, PURPOSE_BASELINE),
    );
    let last_value = published.last().copied().unwrap_or(f64::NAN);
    let base_quantiles = steps
        .iter()
        .map(|&s| match s {
            0 => vec![last_value.round(); inputs.levels.len()],
            s => stored[s - 1].iter().map(|v| v.round()).collect(),
        })
        .collect();
    let (bpeak_q, bpeak_w) = peak_targets(&paths, &season_weeks, &observed, inputs.levels);
    let base_ed = inputs.ed_history.map(|h| {
        let ed = h.observed();
        let last = ed.last().copied().unwrap_or(f64::NAN);
        let q = baseline_quantiles_all(
            &ed,
            last_step.max(1),
            inputs.levels,
            week_seed(
                inputs.location_seed,
                inputs.last_week,
                super::ed::PURPOSE_ED_BASELINE,
            ),
        );
        steps
            .iter()
            .map(|&s| match s {
                0 => vec![last; inputs.levels.len()],
                s => q[s - 1].iter().map(|v| v.clamp(0.0, 1.0)).collect(),
            })
            .collect()
    });
    let baseline = ModelTargets {
        samples: select_samples(&paths, &steps, tc.samples, sample_seed, true),
        quantiles: base_quantiles,
        rate_change: rate_change_pmf(&paths, base_step, &steps, inputs.horizons, model.population)?,
        peak_intensity: bpeak_q,
        peak_week: bpeak_w,
        ed_quantiles: base_ed,
    };
    let climatology = climatological_rate_change(
        inputs.history,
        inputs.reference_date,
        inputs.horizons,
        model.population,
        inputs.season.year_start(),
        tc.climatology_window_weeks,
        tc.climatology_pseudo_count,
    )?;
    Ok(Targets {
        horizons: inputs.horizons.to_vec(),
        target_end_dates: inputs
            .horizons
            .iter()
            .map(|h| inputs.reference_date + 7 * h)
            .collect(),
        season_weeks,
        twin: twin_targets,
        baseline,
        climatology,
    })
}
