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

pub use super::streams::{PURPOSE_BASELINE_PATHS, PURPOSE_SAMPLES};

/// A change of fewer admissions than this is "stable" whatever the rate (hub rule).
pub const MIN_COUNT_CHANGE: f64 = 10.0;

/// What the trajectories hold for the last analysed week (horizon -1 when the data are
/// current), whose count is reported but still being revised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Nowcast {
    /// The twin's own: each member's analysed admissions with its draws of the observation
    /// error (centred between the model and the report, as wide as a forecast's error).
    Model,
    /// The reported count itself in every trajectory (as the baseline): exact when revisions
    /// are small; the twin's trajectories then start from it.
    Reported,
}

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
    /// The last analysed week's value in the trajectories.
    pub nowcast: Nowcast,
    /// The baseline's trajectories (bootstrap paths).
    pub baseline_paths: usize,
    /// Climatological rate-change pmf: past reference dates within this many weeks of the
    /// same time of year count ...
    pub climatology_window_weeks: u32,
    /// ... and each class gets this pseudo-count, so that no class has probability 0 (a
    /// log score of infinity) after one or two past seasons.
    pub climatology_pseudo_count: f64,
    /// The combined model's pmfs give this share of their probability to every event the data
    /// can still produce: the rate-change pmf is mixed with the climatological one, the peak
    /// week pmf with a uniform one over the weeks not yet past. A trajectory-count pmf alone
    /// puts probability 0 on anything no trajectory reached, and one such week or class scores
    /// a log score of minus infinity.
    pub probability_floor: f64,
}

impl Default for TargetsConfig {
    fn default() -> Self {
        TargetsConfig {
            samples: 100,
            noise: NoiseCoupling::Persistent,
            season_first_week: "11-17".into(),
            season_last_week: "05-29".into(),
            peak_damped_weeks: None,
            nowcast: Nowcast::Model,
            baseline_paths: 2000,
            climatology_window_weeks: 3,
            climatology_pseudo_count: 0.5,
            probability_floor: 0.02,
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
        let f = self.probability_floor;
        if !(f.is_finite() && (0.0..=0.5).contains(&f)) {
            return Err(invalid(
                "targets.probability_floor",
                format!("{f} must lie in [0, 0.5]"),
                "0.02: a fiftieth of each pmf spread over the events still possible",
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
    /// The combined model's targets (`TargetInputs::combined`), when it was given.
    pub combined: Option<ModelTargets>,
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
    /// The combined model's forecast: its targets are then drawn from it too.
    pub combined: Option<CombinedInputs<'a>>,
}

/// The predictive distribution every target of the combined model is drawn from: its
/// quantiles at the horizons 0.. (those stored and submitted), and for the newest week
/// (horizon -1 when the data are current) the nowcast's.
#[derive(Debug, Clone, Copy)]
pub struct CombinedInputs<'a> {
    /// `quantiles[h]` at hub horizon h = 0, 1, ..., at `TargetInputs::levels`.
    pub quantiles: &'a [Vec<f64>],
    /// The nowcast's lag-0 factor (1 without versions) ...
    pub factor: f64,
    /// ... and its residuals (`nowcast::residuals`; empty: the newest week is known exactly
    /// once corrected).
    pub residuals: &'a [f64],
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
        // Half a week either side: exactly 2 * window + 1 week ends of each past year.
        diff.min(365.25 - diff) < 7.0 * window_weeks as f64 + 3.5
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
    super::models::check_levels(inputs.levels)?;
    if inputs.ensemble.ncols() == 0 {
        return Err(EnkfError::shape(
            "ensemble",
            "the ensemble has no members",
            "forecast from a stored analysis",
        ));
    }
    Ok(())
}

/// What every target of one location needs: the simulation steps of the horizons, of the
/// week before the reference date (`base_step`) and of the latest horizon, the weeks to run,
/// the season's Saturdays with their counts so far, and the samples' random stream.
struct TargetPlan {
    steps: Vec<usize>,
    base_step: usize,
    last_step: usize,
    weeks: usize,
    season_weeks: Vec<i32>,
    observed: Vec<Option<f64>>,
    sample_seed: u64,
}

fn target_plan(inputs: &TargetInputs<'_>) -> Result<TargetPlan> {
    let steps = horizon_steps(inputs.reference_date, inputs.last_week, inputs.horizons)?;
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
    let season_weeks = inputs.season.weeks();
    Ok(TargetPlan {
        base_step: ((inputs.reference_date - 7 - inputs.last_week) / 7) as usize,
        last_step,
        weeks,
        observed: observed_in(inputs.history, &season_weeks),
        season_weeks,
        sample_seed: week_seed(inputs.location_seed, inputs.reference_date, PURPOSE_SAMPLES),
        steps,
    })
}

/// Every target for the twin and the baseline at one location (the composition of the
/// functions above). Weeks run: up to the later of the last horizon's target and the season's
/// last week, at most `inputs.max_weeks`.
pub fn forecast_targets(model: &LocationModel<'_>, inputs: &TargetInputs<'_>) -> Result<Targets> {
    check_inputs(inputs, model.population)?;
    let plan = target_plan(inputs)?;
    let (twin, twin_draws) = twin_targets(model, inputs, &plan)?;
    let baseline = baseline_targets(model, inputs, &plan)?;
    let tc = &model.cfg.targets;
    let climatology = climatological_rate_change(
        inputs.history,
        inputs.reference_date,
        inputs.horizons,
        model.population,
        inputs.season.year_start(),
        tc.climatology_window_weeks,
        tc.climatology_pseudo_count,
    )?;
    let combined = match &inputs.combined {
        Some(c) => Some(combined_targets(
            &twin_draws,
            c,
            inputs,
            &plan,
            model.population,
            &climatology,
            tc,
        )?),
        None => None,
    };
    Ok(Targets {
        horizons: inputs.horizons.to_vec(),
        target_end_dates: inputs
            .horizons
            .iter()
            .map(|h| inputs.reference_date + 7 * h)
            .collect(),
        season_weeks: plan.season_weeks,
        twin,
        baseline,
        combined,
        climatology,
    })
}

/// The twin's targets, from its members' trajectories, and those trajectories.
fn twin_targets(
    model: &LocationModel<'_>,
    inputs: &TargetInputs<'_>,
    plan: &TargetPlan,
) -> Result<(ModelTargets, WeeklyDraws)> {
    let tc = &model.cfg.targets;
    let damped = match tc.peak_damped_weeks {
        Some(k) => plan.last_step + k as usize,
        None => plan.weeks,
    };
    let (mut twin, twin_ed) = twin_draws(
        model,
        inputs.ensemble,
        inputs.last_week,
        plan.weeks,
        damped,
        tc.noise,
    );
    if tc.nowcast == Nowcast::Reported {
        if let Some(y) = observed_in(inputs.history, &[inputs.last_week])[0] {
            twin.values[0].iter_mut().for_each(|v| *v = y);
        }
    }
    let steps = &plan.steps;
    let (peak_q, peak_w) = peak_targets(&twin, &plan.season_weeks, &plan.observed, inputs.levels);
    let targets = ModelTargets {
        samples: select_samples(&twin, steps, tc.samples, plan.sample_seed, true),
        quantiles: quantiles_at(&twin, steps, inputs.levels, true),
        rate_change: rate_change_pmf(
            &twin,
            plan.base_step,
            steps,
            inputs.horizons,
            model.population,
        )?,
        peak_intensity: peak_q,
        peak_week: peak_w,
        ed_quantiles: twin_ed.map(|d| quantiles_at(&d, steps, inputs.levels, false)),
    };
    Ok((targets, twin))
}

/// The value at probability `u` of the distribution whose quantiles at `levels` are `values`:
/// linear between the levels, continued beyond the outer ones with the outer segments' slopes
/// (the tails a trajectory ranked first or last of thousands needs), never below 0.
pub fn quantile_function(levels: &[f64], values: &[f64], u: f64) -> f64 {
    let n = levels.len().min(values.len());
    if n == 0 {
        return f64::NAN;
    }
    if n == 1 {
        return values[0].max(0.0);
    }
    let k = levels[..n].partition_point(|&l| l < u).clamp(1, n - 1);
    let (l0, l1, v0, v1) = (levels[k - 1], levels[k], values[k - 1], values[k]);
    let slope = if l1 > l0 { (v1 - v0) / (l1 - l0) } else { 0.0 };
    (v0 + slope * (u - l0)).max(0.0)
}

/// Ensemble copula coupling (Schefzik, Thorarinsdottir and Gneiting 2013): each trajectory's
/// value in a week is replaced by the target distribution's quantile at the trajectory's rank
/// in that week, (rank + 1/2) / n. The week's draws then follow the target's distribution and
/// the trajectories keep the twin's order from week to week (its dependence across weeks).
/// Ties rank by trajectory, so the result is deterministic.
fn couple(values: &mut [f64], quantile: impl Fn(f64) -> f64) {
    let n = values.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]).then(a.cmp(&b)));
    for (rank, &t) in order.iter().enumerate() {
        values[t] = quantile((rank as f64 + 0.5) / n as f64);
    }
}

/// `(1 - floor) * p + floor * q`, apportioned to sum to exactly 1.
fn floored(p: &[f64], q: &[f64], floor: f64) -> Vec<f64> {
    let mixed: Vec<f64> = p
        .iter()
        .zip(q)
        .map(|(a, b)| (1.0 - floor) * a + floor * b)
        .collect();
    exact_pmf(&mixed)
}

/// The combined model's targets: the twin's trajectories coupled (`couple`) to the combined
/// quantiles at each horizon 0.. and, in the newest week, to the nowcast's distribution
/// (`nowcast::newest_week`: the reported count corrected, spread by how such counts were
/// revised); the weeks between and after follow each trajectory's own change from the nearest
/// coupled week, so a trajectory stays continuous to the season's end. Its samples, quantiles
/// at horizon -1, rate-change pmf and season peaks are all read from those trajectories, so
/// they describe the distribution whose quantiles are submitted; the pmfs are floored
/// (`targets.probability_floor`).
fn combined_targets(
    twin: &WeeklyDraws,
    c: &CombinedInputs<'_>,
    inputs: &TargetInputs<'_>,
    plan: &TargetPlan,
    population: f64,
    climatology: &[[f64; 5]],
    tc: &TargetsConfig,
) -> Result<ModelTargets> {
    let levels = inputs.levels;
    let mut d = twin.clone();
    let mut coupled = vec![false; d.values.len()];
    for (&s, &h) in plan.steps.iter().zip(inputs.horizons) {
        if let Some(q) = usize::try_from(h).ok().and_then(|h| c.quantiles.get(h)) {
            couple(&mut d.values[s], |u| quantile_function(levels, q, u));
            coupled[s] = true;
        }
    }
    let reported = observed_in(inputs.history, &[inputs.last_week])[0];
    let newest =
        |u: f64| reported.map(|y| super::nowcast::newest_week(y, c.factor, c.residuals, &[u])[0]);
    if reported.is_some() {
        couple(&mut d.values[0], |u| newest(u).unwrap_or(0.0));
        coupled[0] = true;
    }
    follow_coupled(&mut d, twin, &coupled);
    let steps = &plan.steps;
    let quantiles = steps
        .iter()
        .zip(inputs.horizons)
        .map(
            |(&s, &h)| match (h, usize::try_from(h).ok().and_then(|h| c.quantiles.get(h))) {
                (_, Some(q)) => q.iter().map(|v| v.round()).collect(),
                // The newest week's quantiles are the nowcast's own, exactly.
                (_, None) if s == 0 && reported.is_some() => levels
                    .iter()
                    .map(|&l| newest(l).unwrap_or(f64::NAN).round())
                    .collect(),
                _ => quantiles_at(&d, &[s], levels, true).remove(0),
            },
        )
        .collect();
    let rate_change = rate_change_pmf(&d, plan.base_step, steps, inputs.horizons, population)?
        .iter()
        .zip(climatology)
        .map(|(p, clim)| {
            let f = floored(p, clim, tc.probability_floor);
            [f[0], f[1], f[2], f[3], f[4]]
        })
        .collect();
    let (peak_intensity, peak_week) = peak_targets(&d, &plan.season_weeks, &plan.observed, levels);
    Ok(ModelTargets {
        samples: select_samples(&d, steps, tc.samples, plan.sample_seed, true),
        quantiles,
        rate_change,
        peak_intensity,
        peak_week: floored(
            &peak_week,
            &possible_peak_weeks(&plan.season_weeks, &plan.observed, d.first_week),
            tc.probability_floor,
        ),
        ed_quantiles: None,
    })
}

/// Each week that was not coupled takes, per trajectory, the twin's change (on the count + 1
/// scale) from the nearest coupled week before it, or after it when none is before.
fn follow_coupled(d: &mut WeeklyDraws, twin: &WeeklyDraws, coupled: &[bool]) {
    let anchors: Vec<usize> = (0..coupled.len()).filter(|&s| coupled[s]).collect();
    if anchors.is_empty() {
        return;
    }
    for s in (0..coupled.len()).filter(|&s| !coupled[s]) {
        let a = anchors
            .iter()
            .rev()
            .find(|&&a| a < s)
            .or(anchors.first())
            .copied()
            .unwrap_or(s);
        for t in 0..d.values[s].len() {
            let ratio = (d.values[a][t] + 1.0) / (twin.values[a][t] + 1.0).max(1e-9);
            d.values[s][t] = ((twin.values[s][t] + 1.0) * ratio - 1.0).max(0.0);
        }
    }
}

/// Weights of the season's weeks that can still be its peak: every week from the draws' first
/// on, and the observed week highest so far (uniform among them).
fn possible_peak_weeks(
    season_weeks: &[i32],
    observed: &[Option<f64>],
    first_week: i32,
) -> Vec<f64> {
    let past: Vec<Option<f64>> = season_weeks
        .iter()
        .zip(observed)
        .map(|(&w, v)| if w < first_week { *v } else { None })
        .collect();
    let best = peak_of(&past).map(|(i, _)| i);
    season_weeks
        .iter()
        .enumerate()
        .map(|(i, &w)| {
            if w >= first_week || Some(i) == best {
                1.0
            } else {
                0.0
            }
        })
        .collect()
}

/// The baseline's targets. It sees the counts as published, as the hub's does; its quantiles
/// at the weeks after the data are exactly those `forecast_all` stores (rounded), the week of
/// the data itself is its last value.
fn baseline_targets(
    model: &LocationModel<'_>,
    inputs: &TargetInputs<'_>,
    plan: &TargetPlan,
) -> Result<ModelTargets> {
    let published = inputs.history.observed();
    let paths = baseline_draws(
        &published,
        inputs.last_week,
        plan.weeks,
        model.cfg.targets.baseline_paths,
        week_seed(
            inputs.location_seed,
            inputs.last_week,
            PURPOSE_BASELINE_PATHS,
        ),
    );
    let seed = week_seed(inputs.location_seed, inputs.last_week, PURPOSE_BASELINE);
    let quantiles = baseline_at_steps(&published, inputs.levels, &plan.steps, seed, |v| v.round());
    let (peak_q, peak_w) = peak_targets(&paths, &plan.season_weeks, &plan.observed, inputs.levels);
    let ed_seed = week_seed(
        inputs.location_seed,
        inputs.last_week,
        super::ed::PURPOSE_ED_BASELINE,
    );
    let ed_quantiles = inputs.ed_history.map(|h| {
        baseline_at_steps(&h.observed(), inputs.levels, &plan.steps, ed_seed, |v| {
            v.clamp(0.0, 1.0)
        })
    });
    Ok(ModelTargets {
        samples: select_samples(
            &paths,
            &plan.steps,
            model.cfg.targets.samples,
            plan.sample_seed,
            true,
        ),
        quantiles,
        rate_change: rate_change_pmf(
            &paths,
            plan.base_step,
            &plan.steps,
            inputs.horizons,
            model.population,
        )?,
        peak_intensity: peak_q,
        peak_week: peak_w,
        ed_quantiles,
    })
}

/// The baseline's quantiles of `series` at each step: step 0 (the week of the data) is its
/// last value at every level (as given), later steps `baseline_quantiles_all`'s, through
/// `finish` (rounding for counts, clamping for proportions).
fn baseline_at_steps(
    series: &[f64],
    levels: &[f64],
    steps: &[usize],
    seed: u64,
    finish: impl Fn(f64) -> f64,
) -> Vec<Vec<f64>> {
    let last_step = steps.iter().copied().max().unwrap_or(0);
    let stored = baseline_quantiles_all(series, last_step.max(1), levels, seed);
    let last = series.last().copied().unwrap_or(f64::NAN);
    steps
        .iter()
        .map(|&s| match s {
            0 => vec![finish(last); levels.len()],
            s => stored[s - 1].iter().map(|&v| finish(v)).collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scoring::FLUSIGHT_LEVELS;
    use crate::twin::combine::Calibration;
    use crate::twin::location::location_seed;
    use crate::twin::models::{forecast_all, Component};
    use crate::twin::TwinConfig;

    const HORIZONS: [i32; 5] = [-1, 0, 1, 2, 3];

    /// Draws whose trajectories are given: `paths[i][w]`.
    fn draws(first_week: i32, paths: &[Vec<f64>]) -> WeeklyDraws {
        let weeks = paths[0].len();
        WeeklyDraws {
            first_week,
            values: (0..weeks)
                .map(|w| paths.iter().map(|p| p[w]).collect())
                .collect(),
        }
    }

    #[test]
    fn rate_change_classes_at_the_exact_boundaries() {
        // 10 million people: 100,000s = 100, so a change of 30 admissions is 0.3 per 100k.
        let pop = 1e7;
        let class = |d: f64, h: i32| rate_change_class(1000.0, 1000.0 + d, pop, h).unwrap();
        for (h, stable, large) in [
            (0, 30.0, 170.0),
            (1, 50.0, 300.0),
            (2, 70.0, 400.0),
            (3, 100.0, 500.0),
        ] {
            assert_eq!(class(stable - 1.0, h), STABLE, "h {h}");
            assert_eq!(
                class(stable, h),
                3,
                "h {h}: at the stable threshold it is an increase"
            );
            assert_eq!(class(large - 1.0, h), 3, "h {h}");
            assert_eq!(
                class(large, h),
                4,
                "h {h}: at the large threshold it is large"
            );
            assert_eq!(class(-stable + 1.0, h), STABLE, "h {h}");
            assert_eq!(class(-stable, h), 1, "h {h}");
            assert_eq!(class(-large + 1.0, h), 1, "h {h}");
            assert_eq!(class(-large, h), 0, "h {h}");
        }
        // Horizon -1 compares a week with itself.
        assert_eq!(class(0.0, -1), STABLE);
        assert!(rate_change_class(1.0, 2.0, pop, 4).is_err());
    }

    #[test]
    fn fewer_than_ten_admissions_is_stable_whatever_the_rate_in_a_small_population() {
        // 500,000 people: 9 admissions more is 1.8 per 100k, above the large threshold of
        // horizon 0, yet stable; 10 more is 2.0: large.
        let pop = 5e5;
        assert_eq!(rate_change_class(20.0, 29.0, pop, 0).unwrap(), STABLE);
        assert_eq!(rate_change_class(29.0, 20.0, pop, 0).unwrap(), STABLE);
        assert_eq!(rate_change_class(20.0, 30.0, pop, 0).unwrap(), 4);
        assert_eq!(rate_change_class(30.0, 20.0, pop, 0).unwrap(), 0);
        // Horizon 3: 10 more is 2.0 per 100k, an increase (large from 5.0 = 25 admissions).
        assert_eq!(rate_change_class(20.0, 30.0, pop, 3).unwrap(), 3);
        assert_eq!(rate_change_class(20.0, 44.0, pop, 3).unwrap(), 3);
        assert_eq!(rate_change_class(20.0, 45.0, pop, 3).unwrap(), 4);
    }

    #[test]
    fn the_rate_change_pmf_is_the_fraction_of_trajectories_in_each_class() {
        // 8 trajectories over weeks R-7 (the base), R, R+7, R+14, R+21, in 10 million people.
        let paths: Vec<Vec<f64>> = [
            [1000.0, 1000.0, 1000.0, 1000.0, 1000.0],
            [1000.0, 1029.0, 1049.0, 1069.0, 1099.0],
            [1000.0, 1030.0, 1050.0, 1070.0, 1100.0],
            [1000.0, 1170.0, 1300.0, 1400.0, 1500.0],
            [1000.0, 830.0, 700.0, 600.0, 500.0],
            [1000.0, 969.6, 950.0, 930.0, 900.0],
            [2000.0, 2000.0, 2000.0, 2000.0, 2000.0],
            [1000.0, 1169.0, 1299.0, 1399.0, 1499.0],
        ]
        .iter()
        .map(|p| p.to_vec())
        .collect();
        let d = draws(0, &paths);
        let pmf = rate_change_pmf(&d, 0, &[0, 1, 2, 3, 4], &HORIZONS, 1e7).unwrap();
        // Horizon -1: the base week against itself.
        assert_eq!(pmf[0], [0.0, 0.0, 1.0, 0.0, 0.0]);
        // Horizon 0: stable 0, 1 (29), 6; increase 2 (30), 7 (169); large 3 (170);
        // decrease 5 (969.6 rounds to 970: -30); large decrease 4 (-170).
        assert_eq!(pmf[1], [0.125, 0.125, 0.375, 0.25, 0.125]);
        // Horizon 3 (stable < 100, large >= 500): 0, 1 (99), 6 stable; 2 (100) increase;
        // 3 (500) large; 7 (499) increase; 4 (-500) large decrease; 5 (-100) decrease.
        assert_eq!(pmf[4], [0.125, 0.125, 0.375, 0.25, 0.125]);
        for p in &pmf {
            assert_eq!(p.iter().sum::<f64>(), 1.0);
        }
    }

    #[test]
    fn pmfs_sum_to_exactly_one_in_any_order() {
        let mut state = 99u64;
        for k in [1usize, 2, 3, 5, 7, 27, 33] {
            let w: Vec<f64> = (0..k)
                .map(|_| {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
                    ((state >> 33) % 1000) as f64 / 3.0
                })
                .collect();
            let p = exact_pmf(&w);
            let total: f64 = w.iter().sum();
            for (pi, wi) in p.iter().zip(&w) {
                assert!((pi - wi / total).abs() < 1e-12);
            }
            assert_eq!(p.iter().sum::<f64>(), 1.0, "{k}");
            assert_eq!(p.iter().rev().sum::<f64>(), 1.0, "{k}");
            let mut sorted = p.clone();
            sorted.sort_by(f64::total_cmp);
            assert_eq!(sorted.iter().sum::<f64>(), 1.0, "{k}");
        }
        assert_eq!(exact_pmf(&[1.0, 1.0, 1.0]).iter().sum::<f64>(), 1.0);
        assert_eq!(exact_pmf(&[0.0, 0.0]), vec![0.5, 0.5]);
        assert_eq!(exact_pmf(&[0.0, 3.0]), vec![0.0, 1.0]);
    }

    #[test]
    fn a_season_whose_peak_has_passed_gives_the_observed_peak_probability_one() {
        // Ten season weeks; six observed (peak 500 at the fourth); trajectories from the
        // sixth week on, all below 500.
        let season: Vec<i32> = (0..10).map(|k| 7 * k).collect();
        let observed = [
            Some(100.0),
            Some(300.0),
            Some(450.0),
            Some(500.0),
            Some(420.0),
            Some(300.0),
            None,
            None,
            None,
            None,
        ];
        let paths: Vec<Vec<f64>> = (0..20)
            .map(|i| (0..5).map(|w| 280.0 - 30.0 * w as f64 + i as f64).collect())
            .collect();
        let d = draws(35, &paths);
        let (q, pmf) = peak_targets(&d, &season, &observed, &FLUSIGHT_LEVELS);
        assert!(q.iter().all(|v| *v == 500.0), "{q:?}");
        assert_eq!(pmf[3], 1.0);
        assert_eq!(pmf.iter().sum::<f64>(), 1.0);
        // A quarter of the trajectories surge past it at the eighth week: they move there.
        let mut surge = paths.clone();
        for p in surge.iter_mut().take(5) {
            p[2] = 800.0;
        }
        let (q, pmf) = peak_targets(&draws(35, &surge), &season, &observed, &FLUSIGHT_LEVELS);
        assert_eq!(pmf[3], 0.75);
        assert_eq!(pmf[7], 0.25);
        assert_eq!(q[0], 500.0);
        assert_eq!(q[22], 800.0);
        // A tie goes to the earliest week (the observed one).
        let mut tie = paths.clone();
        tie[0][1] = 500.0;
        let (_, pmf) = peak_targets(&draws(35, &tie), &season, &observed, &FLUSIGHT_LEVELS);
        assert_eq!(pmf[3], 1.0);
    }

    #[test]
    fn the_climatology_counts_past_seasons_at_the_same_time_of_year() {
        // Two past years, counts rising by 100 a week all year in 10 million people (1 per
        // 100k a week): at horizon 0 every past pair is a change of 100 = 1.0 per 100k: an
        // increase; at horizon 1, 200 = 2.0: an increase; horizon 2, 300 = 3.0: increase;
        // horizon 3, 400 = 4.0: increase (large from 5). Before the season only.
        let first = crate::dates::from_civil(2021, 8, 7);
        let weeks: Vec<i32> = (0..160).map(|k| first + 7 * k).collect();
        let values: Vec<Option<f64>> = (0..160).map(|k| Some(1000.0 + 100.0 * k as f64)).collect();
        let history = History { weeks, values };
        let r = crate::dates::from_civil(2024, 1, 6);
        let season = Season::containing(r, (11, 17), (5, 29)).unwrap();
        let pmf =
            climatological_rate_change(&history, r, &HORIZONS, 1e7, season.year_start(), 3, 0.5)
                .unwrap();
        assert_eq!(pmf[0], [0.0, 0.0, 1.0, 0.0, 0.0]);
        // 7 reference dates (+-3 weeks) in each of the 2 past years: 14 increases, + 0.5 each.
        let want = exact_pmf(&[0.5, 0.5, 0.5, 14.5, 0.5]);
        for h in 1..5 {
            assert_eq!(pmf[h].to_vec(), want, "horizon {}", HORIZONS[h]);
        }
        // No past seasons: the pseudo-counts alone, uniform.
        let none = climatological_rate_change(&history, r, &[0], 1e7, first, 3, 0.5).unwrap();
        assert_eq!(none[0].to_vec(), exact_pmf(&[1.0; 5]));
    }

    /// A twin that assimilated 30 weeks of a rising series.
    fn setup(cfg: &TwinConfig) -> (LocationModel<'_>, DMatrix<f64>, History, i32) {
        let model = LocationModel::new(cfg, "06", 3.9e7);
        let mut ens = if cfg.ed.enabled {
            crate::twin::ed::prior(&model, 60)
        } else {
            model.prior(60)
        };
        let first = crate::dates::from_civil(2023, 6, 3);
        let weeks: Vec<i32> = (0..30).map(|k| first + 7 * k).collect();
        let values: Vec<Option<f64>> = (0..30).map(|k| Some(50.0 + 10.0 * k as f64)).collect();
        for (w, v) in weeks.iter().zip(&values) {
            model.step_any(&mut ens, *w, 1.0);
            if let Some(y) = v {
                if cfg.ed.enabled {
                    let p = 0.002 + 1e-4 * y;
                    crate::twin::ed::update(&model, &mut ens, Some((*y, *y)), Some((p, p)), *w)
                        .unwrap();
                } else {
                    model.update(&mut ens, *y, *y, *w).unwrap();
                }
            }
        }
        let last = weeks[29];
        (model, ens, History { weeks, values }, last)
    }

    fn inputs<'a>(
        cfg: &TwinConfig,
        ens: &'a DMatrix<f64>,
        history: &'a History,
        last: i32,
    ) -> TargetInputs<'a> {
        let r = last + 7;
        TargetInputs {
            ensemble: ens,
            last_week: last,
            history,
            ed_history: None,
            reference_date: r,
            horizons: &HORIZONS,
            levels: &FLUSIGHT_LEVELS,
            season: cfg.targets.season(r).unwrap(),
            max_weeks: 104,
            location_seed: location_seed(cfg.seed, "06"),
            combined: None,
        }
    }

    #[test]
    fn quantiles_are_those_stored_and_samples_are_connected_trajectories() {
        let cfg = TwinConfig::default();
        let (model, ens, history, last) = setup(&cfg);
        let inp = inputs(&cfg, &ens, &history, last);
        let t = forecast_targets(&model, &inp).unwrap();
        assert_eq!(t.target_end_dates[0], last);
        // Horizons 0..3: the quantiles forecast_all stores, rounded.
        let stored = forecast_all(
            &cfg,
            &model,
            &ens,
            &history,
            last,
            &[1, 2, 3, 4],
            &FLUSIGHT_LEVELS,
            &[],
            &Calibration::neutral(),
            None,
            inp.location_seed,
        )
        .unwrap();
        let get = |c: Component| stored.iter().find(|f| f.component == c).unwrap();
        for h in 0..4 {
            let round = |q: &[f64]| q.iter().map(|v| v.round()).collect::<Vec<_>>();
            assert_eq!(
                t.twin.quantiles[h + 1],
                round(&get(Component::Twin).quantiles[h])
            );
            assert_eq!(
                t.baseline.quantiles[h + 1],
                round(&get(Component::Baseline).quantiles[h])
            );
        }
        // Horizon -1 of the baseline: the last count.
        assert!(t.baseline.quantiles[0].iter().all(|v| *v == 340.0));
        for m in [&t.twin, &t.baseline] {
            assert_eq!(m.samples.len(), 100);
            for q in &m.quantiles {
                assert!(q.windows(2).all(|w| w[0] <= w[1]));
                assert!(q.iter().all(|v| v.fract() == 0.0 && *v >= 0.0));
            }
            for s in &m.samples {
                assert_eq!(s.len(), 5);
                assert!(s.iter().all(|v| v.fract() == 0.0 && *v >= 0.0));
            }
            for p in m.rate_change.iter() {
                assert_eq!(p.iter().sum::<f64>(), 1.0);
            }
            assert_eq!(m.rate_change[0], [0.0, 0.0, 1.0, 0.0, 0.0]);
            assert_eq!(m.peak_week.iter().sum::<f64>(), 1.0);
            assert_eq!(m.peak_week.len(), t.season_weeks.len());
            assert!(m.peak_intensity.windows(2).all(|w| w[0] <= w[1]));
        }
        // Each sample is one trajectory of the draws, whole: the same member and draw at every
        // horizon.
        let steps = horizon_steps(inp.reference_date, last, &HORIZONS).unwrap();
        let weeks = (inp.season.last_week - last) / 7;
        let (d, _) = twin_draws(
            &model,
            &ens,
            last,
            weeks as usize,
            weeks as usize,
            cfg.targets.noise,
        );
        for s in &t.twin.samples {
            let found = (0..d.trajectories()).any(|i| {
                steps
                    .iter()
                    .zip(s)
                    .all(|(&st, v)| d.values[st][i].round() == *v)
            });
            assert!(found, "sample {s:?} is not one trajectory");
        }
        // The 100 samples' quantiles match the stored ones within sampling error: the share of
        // all draws below a sample quantile at level p is p within 3.5 binomial sds.
        for (h, &st) in steps.iter().enumerate() {
            let mut col: Vec<f64> = t.twin.samples.iter().map(|s| s[h]).collect();
            col.sort_by(f64::total_cmp);
            for p in [0.1, 0.25, 0.5, 0.75, 0.9] {
                let q = crate::scoring::quantile_sorted(&col, p);
                let share = d.values[st].iter().filter(|v| v.round() <= q).count() as f64
                    / d.trajectories() as f64;
                let sd = (p * (1.0 - p) / 100.0f64).sqrt();
                assert!(share >= p - 3.5 * sd - 0.02, "h {h} p {p}: share {share}");
            }
        }
        // Reproducible, and ids stable.
        assert_eq!(forecast_targets(&model, &inp).unwrap(), t);
        // The reported count as the nowcast: horizon -1 is the last count in every sample.
        let mut rcfg = cfg.clone();
        rcfg.targets.nowcast = Nowcast::Reported;
        let rmodel = LocationModel::new(&rcfg, "06", 3.9e7);
        let r = forecast_targets(&rmodel, &inp).unwrap();
        assert!(r.twin.quantiles[0].iter().all(|v| *v == 340.0));
        assert!(r.twin.samples.iter().all(|s| s[0] == 340.0));
        assert_eq!(r.twin.quantiles[1..], t.twin.quantiles[1..]);
    }

    #[test]
    fn the_baselines_trajectories_match_its_quantiles_within_sampling_error() {
        let hist: Vec<f64> = (0..60)
            .map(|k| 200.0 + 80.0 * (k as f64 / 5.0).sin() + 3.0 * k as f64)
            .collect();
        let last = *hist.last().unwrap();
        let d = baseline_draws(&hist, 0, 4, 4000, 5);
        assert!(d.values[0].iter().all(|v| *v == last));
        let q = baseline_quantiles_all(&hist, 4, &FLUSIGHT_LEVELS, 5);
        for k in 1..=4 {
            let mut v = d.values[k].clone();
            let got = quantiles_unsorted(&mut v, &FLUSIGHT_LEVELS);
            assert_eq!(got[11], last, "the median is the last value");
            let width = q[k - 1][21] - q[k - 1][1];
            for l in 0..23 {
                assert!(
                    (got[l] - q[k - 1][l]).abs() < 0.06 * width + 1.0,
                    "week {k} level {l}: {} vs {}",
                    got[l],
                    q[k - 1][l]
                );
            }
        }
    }

    #[test]
    fn noise_coupling_changes_trajectories_not_quantiles() {
        let cfg = TwinConfig::default();
        let (model, ens, _, last) = setup(&cfg);
        let (a, _) = twin_draws(&model, &ens, last, 6, 6, NoiseCoupling::Persistent);
        let (b, _) = twin_draws(&model, &ens, last, 6, 6, NoiseCoupling::Independent);
        assert_ne!(a, b);
        let steps: Vec<usize> = (0..7).collect();
        assert_eq!(
            quantiles_at(&a, &steps, &FLUSIGHT_LEVELS, false),
            quantiles_at(&b, &steps, &FLUSIGHT_LEVELS, false)
        );
    }

    #[test]
    fn a_passed_peak_of_a_real_twin_gets_probability_one() {
        // A season that peaked at 900 a month ago and is now at a fifth of it and falling: the
        // twin's members, run to the season's end, stay far below.
        let cfg = TwinConfig::default();
        let model = LocationModel::new(&cfg, "06", 3.9e7);
        let mut ens = model.prior(60);
        let first = crate::dates::from_civil(2023, 9, 2);
        let series: Vec<f64> = (0..30)
            .map(|k| {
                let x = (k as f64 - 14.0) / 3.0;
                20.0 + 880.0 * (-x * x / 2.0).exp()
            })
            .collect();
        let weeks: Vec<i32> = (0..30).map(|k| first + 7 * k).collect();
        for (w, y) in weeks.iter().zip(&series) {
            model.step(&mut ens, *w);
            model.update(&mut ens, y.round(), y.round(), *w).unwrap();
        }
        let history = History {
            weeks: weeks.clone(),
            values: series.iter().map(|y| Some(y.round())).collect(),
        };
        let last = weeks[29];
        let inp = inputs(&cfg, &ens, &history, last);
        let t = forecast_targets(&model, &inp).unwrap();
        let peak_week = weeks[14];
        let i = t.season_weeks.iter().position(|w| *w == peak_week).unwrap();
        assert_eq!(t.twin.peak_week[i], 1.0, "{:?}", t.twin.peak_week);
        assert!(t.twin.peak_intensity.iter().all(|v| *v == 900.0));
    }

    #[test]
    fn the_ed_stream_gives_proportion_quantiles() {
        let mut cfg = TwinConfig::default();
        cfg.ed.enabled = true;
        let (model, ens, history, last) = setup(&cfg);
        let ed_history = History {
            weeks: history.weeks.clone(),
            values: history
                .values
                .iter()
                .map(|v| v.map(|y| 0.002 + 1e-4 * y))
                .collect(),
        };
        let mut inp = inputs(&cfg, &ens, &history, last);
        inp.ed_history = Some(&ed_history);
        let t = forecast_targets(&model, &inp).unwrap();
        let q = t.twin.ed_quantiles.as_ref().unwrap();
        assert_eq!(q.len(), 5);
        for qs in q {
            assert!(qs.windows(2).all(|w| w[0] <= w[1]));
            assert!(qs.iter().all(|v| (0.0..=1.0).contains(v)));
        }
        // The nowcast is near the last observed proportion (0.002 + 0.034).
        assert!((q[0][11] - 0.036).abs() < 0.015, "{:?}", q[0]);
        let b = t.baseline.ed_quantiles.as_ref().unwrap();
        assert!(b[0].iter().all(|v| (*v - 0.036).abs() < 1e-12));
        // Without the stream there are none.
        let plain = TwinConfig::default();
        let (model, ens, history, last) = setup(&plain);
        let t = forecast_targets(&model, &inputs(&plain, &ens, &history, last)).unwrap();
        assert!(t.twin.ed_quantiles.is_none());
    }

    #[test]
    fn bad_inputs_are_refused_with_the_argument_named() {
        let cfg = TwinConfig::default();
        let (model, ens, history, last) = setup(&cfg);
        let base = inputs(&cfg, &ens, &history, last);
        let mut i = base.clone();
        i.reference_date = last;
        assert_eq!(
            forecast_targets(&model, &i).unwrap_err().argument(),
            Some("reference_date")
        );
        let mut i = base.clone();
        i.horizons = &[0, 4];
        assert_eq!(
            forecast_targets(&model, &i).unwrap_err().argument(),
            Some("horizons")
        );
        let mut i = base.clone();
        i.max_weeks = 3;
        assert_eq!(
            forecast_targets(&model, &i).unwrap_err().argument(),
            Some("max_weeks")
        );
        let mut i = base.clone();
        i.levels = &[0.5, 0.4];
        assert_eq!(
            forecast_targets(&model, &i).unwrap_err().argument(),
            Some("quantile_levels")
        );
        let bad = LocationModel::new(&cfg, "06", 0.0);
        assert_eq!(
            forecast_targets(&bad, &base).unwrap_err().argument(),
            Some("population")
        );
    }

    #[test]
    fn the_quantile_function_interpolates_and_continues_the_tails() {
        let (l, v) = ([0.1, 0.5, 0.9], [10.0, 20.0, 40.0]);
        assert_eq!(quantile_function(&l, &v, 0.5), 20.0);
        assert!((quantile_function(&l, &v, 0.3) - 15.0).abs() < 1e-12);
        assert!((quantile_function(&l, &v, 0.95) - 42.5).abs() < 1e-12);
        assert!((quantile_function(&l, &v, 0.0) - 7.5).abs() < 1e-12);
        // Never below 0, whatever the slope.
        assert_eq!(quantile_function(&l, &[1.0, 20.0, 40.0], 0.0), 0.0);
        assert_eq!(quantile_function(&[0.5], &[7.0], 0.9), 7.0);
    }

    /// Combined quantiles unlike the twin's: median 500 + 50 h, from 0.6 to 1.4 times it.
    fn combined_quantiles() -> Vec<Vec<f64>> {
        (0..4)
            .map(|h| {
                let m = 500.0 + 50.0 * h as f64;
                FLUSIGHT_LEVELS
                    .iter()
                    .map(|l| m * (0.6 + 0.8 * l))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn every_combined_target_is_drawn_from_the_submitted_distribution() {
        let cfg = TwinConfig::default();
        let (model, ens, history, last) = setup(&cfg);
        let q = combined_quantiles();
        let residuals = [-1.0, 0.0, 1.0];
        let mut inp = inputs(&cfg, &ens, &history, last);
        inp.combined = Some(CombinedInputs {
            quantiles: &q,
            factor: 1.1,
            residuals: &residuals,
        });
        let t = forecast_targets(&model, &inp).unwrap();
        let c = t.combined.as_ref().expect("combined targets");
        let level = |x: f64| FLUSIGHT_LEVELS.iter().position(|l| *l == x).unwrap();
        for h in 0..4 {
            // The submitted quantiles are the combination's; its samples follow them: the
            // median sample lies within the 45-55% quantiles, and 40-60 of the 100 samples
            // lie between the 25% and 75% quantiles.
            assert_eq!(
                c.quantiles[h + 1],
                q[h].iter().map(|v| v.round()).collect::<Vec<_>>()
            );
            let mut s: Vec<f64> = c.samples.iter().map(|k| k[h + 1]).collect();
            s.sort_by(f64::total_cmp);
            let median = (s[49] + s[50]) / 2.0;
            assert!(
                median >= q[h][level(0.45)] - 1.0 && median <= q[h][level(0.55)] + 1.0,
                "h {h}: median sample {median}, combined {:?}",
                q[h]
            );
            let inside = s
                .iter()
                .filter(|v| **v >= q[h][level(0.25)] - 0.5 && **v <= q[h][level(0.75)] + 0.5)
                .count();
            assert!((40..=60).contains(&inside), "h {h}: {inside} of 100");
        }
        // The newest week: the nowcast's distribution, exactly.
        let y = 50.0 + 10.0 * 29.0;
        let want: Vec<f64> =
            crate::twin::nowcast::newest_week(y, 1.1, &residuals, &FLUSIGHT_LEVELS)
                .into_iter()
                .map(f64::round)
                .collect();
        assert_eq!(c.quantiles[0], want);
        // No class and no week still possible has probability 0; a week already past that was
        // not the highest so far has.
        for p in &c.rate_change[1..] {
            assert!(p.iter().all(|x| *x > 0.0), "{p:?}");
            assert_eq!(p.iter().sum::<f64>(), 1.0);
        }
        assert_eq!(c.peak_week.iter().sum::<f64>(), 1.0);
        for (i, w) in t.season_weeks.iter().enumerate() {
            let highest_so_far = *w == last - 7;
            assert_eq!(
                c.peak_week[i] > 0.0,
                *w >= last || highest_so_far,
                "{}",
                crate::dates::iso(*w)
            );
        }
        // The season's peak is at least the newest week's, and the same inputs give the same.
        assert!(c.peak_intensity[level(0.5)] >= q[0][level(0.5)] * 0.9);
        assert_eq!(forecast_targets(&model, &inp).unwrap(), t);
        // The twin's own targets do not change when the combination is asked for too.
        let alone = forecast_targets(&model, &inputs(&cfg, &ens, &history, last)).unwrap();
        assert_eq!(alone.twin, t.twin);
        assert!(alone.combined.is_none());
    }
}
