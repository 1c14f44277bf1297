//! Every FluSight target of the twin and the baseline in the real-time backtest (TARGETS=1):
//! `twin::targets::forecast_targets` from the same analysis `forecast_all` used, scored against
//! the final counts. Scores are means over the tasks, each model beside the reference:
//!
//! - `wk inc flu hosp` quantiles, horizons -1..3: WIS (the hub's tasks, as the main table;
//!   horizon -1 on the tasks of horizon 0);
//! - `wk inc flu hosp` samples: energy score of the 100 trajectories over -1..3;
//! - `wk flu hosp rate change`, horizons 0..3: RPS and log score (truncated at 10 nats), twin and the baseline's
//!   trajectories against the climatological pmf of past seasons;
//! - `peak inc flu hosp` (WIS) and `peak week inc flu hosp` (RPS, log score), every reference
//!   date of the season, against the season's final peak;
//! - `wk inc flu prop ed visits`, horizons -1..3 (only with `ed.enabled`): WIS against the
//!   FluSight-style baseline of the ED series.

use std::collections::BTreeMap;

use enkf_core::scoring::categorical::{rps, truncated_log_score, LOG_SCORE_CAP};
use enkf_core::scoring::energy::energy_score;
use enkf_core::scoring::wis;
use enkf_core::twin::location::location_seed;
use enkf_core::twin::models::History;
use enkf_core::twin::targets::{
    forecast_targets, peak_of, rate_change_class, ModelTargets, TargetInputs, Targets,
};
use enkf_core::twin::{LocationModel, TwinConfig};

use super::{Data, Season, State};

const HORIZONS: [i32; 5] = [-1, 0, 1, 2, 3];
/// The members are run to the season's end at most this far.
const MAX_WEEKS: usize = 80;

/// (season, target, horizon, metric).
type Key = (String, String, i32, String);

/// Key -> model -> (sum, n).
#[derive(Default)]
pub struct Scores {
    map: BTreeMap<Key, BTreeMap<String, (f64, usize)>>,
}

impl Scores {
    fn add(&mut self, season: &str, target: &str, h: i32, metric: &str, model: &str, v: f64) {
        let e = self
            .map
            .entry((season.into(), target.into(), h, metric.into()))
            .or_default()
            .entry(model.into())
            .or_insert((0.0, 0));
        e.0 += v;
        e.1 += 1;
    }

    /// One line per (season, target, horizon, metric): each model's mean and its ratio to the
    /// reference ("climatology" for rate change, "baseline" otherwise); horizon 99 = all.
    pub fn print(&self) {
        for ((season, target, h, metric), models) in &self.map {
            let reference = if models.contains_key("climatology") {
                "climatology"
            } else {
                "baseline"
            };
            let Some(&(rs, rn)) = models.get(reference) else {
                continue;
            };
            let rmean = rs / rn as f64;
            let mut line =
                format!("TARGETS {season} {target} {h} {metric} n {rn} {reference} {rmean:.6}");
            for (m, (s, n)) in models {
                if m != reference {
                    let mean = s / *n as f64;
                    line += &format!(" {m} {mean:.6} rel {:.4}", mean / rmean);
                }
            }
            println!("{line}");
        }
    }
}

fn add_twin_and_variants(
    scores: &mut Scores,
    key: (&str, &str, i32, &str),
    models: &[(String, &ModelTargets)],
    f: impl Fn(&ModelTargets) -> Option<f64>,
) {
    for (name, m) in models {
        if let Some(v) = f(m) {
            for h in [key.2, 99] {
                scores.add(key.0, key.1, h, key.3, name, v);
            }
        }
    }
}

/// Produces every target for one location at reference date `r` and scores those whose truth
/// is known.
#[allow(clippy::too_many_arguments)]
pub fn score(
    scores: &mut Scores,
    variants: &[TwinConfig],
    data: &Data,
    season: &Season,
    r: i32,
    st: &State<'_>,
    history: &History,
    last: i32,
) {
    let Some((t, models)) = forecast_models(variants, r, st, history, last) else {
        return;
    };
    let Some(truth) = data.truth.get(&st.loc) else {
        return;
    };
    let models: Vec<(String, &ModelTargets)> = models.iter().map(|(n, m)| (n.clone(), m)).collect();
    let task = Task {
        season: season.name.as_str(),
        r,
        loc: &st.loc,
        from_final: season.from_final,
        data,
        truth,
        population: st.twin.model.population,
    };
    score_weekly(scores, &task, &models);
    score_rate_change(scores, &task, &models, &t);
    score_peaks(scores, &task, &models, &t);
    score_ed(scores, &task, &models);
}

/// Every target of the twin, the baseline and each variant configuration at `r`, from the
/// analysis of week `last` (None: no analysis that week, or no season).
fn forecast_models(
    variants: &[TwinConfig],
    r: i32,
    st: &State<'_>,
    history: &History,
    last: i32,
) -> Option<(Targets, Vec<(String, ModelTargets)>)> {
    let cfg = st.twin.model.cfg;
    let idx = st.twin.weeks.iter().position(|w| w.0 == last)?;
    let ed_history = (!st.twin.ed.is_empty()).then(|| History {
        weeks: st.twin.ed.keys().copied().collect(),
        values: st.twin.ed.values().map(|v| Some(*v)).collect(),
    });
    let inputs = TargetInputs {
        ensemble: &st.twin.analyses[idx],
        last_week: last,
        history,
        ed_history: ed_history.as_ref(),
        reference_date: r,
        horizons: &HORIZONS,
        levels: &enkf_core::scoring::FLUSIGHT_LEVELS,
        season: cfg.targets.season(r).ok()?,
        max_weeks: MAX_WEEKS,
        location_seed: location_seed(cfg.seed, &st.loc),
    };
    let t = match forecast_targets(&st.twin.model, &inputs) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{} {}: {e}", st.loc, enkf_core::dates::iso(r));
            return None;
        }
    };
    let mut models: Vec<(String, ModelTargets)> = vec![
        ("enkf".into(), t.twin.clone()),
        ("baseline".into(), t.baseline.clone()),
    ];
    for (k, v) in variants.iter().enumerate() {
        let m = LocationModel::new(v, &st.loc, st.twin.model.population);
        if let Ok(tv) = forecast_targets(&m, &inputs) {
            models.push((format!("enkf/{k}"), tv.twin));
        }
    }
    Some((t, models))
}

/// One location and reference date, with the final counts to score against.
struct Task<'a> {
    season: &'a str,
    r: i32,
    loc: &'a str,
    from_final: bool,
    data: &'a Data,
    truth: &'a BTreeMap<i32, Option<f64>>,
    population: f64,
}

impl Task<'_> {
    /// The final count of week `w`.
    fn y(&self, w: i32) -> Option<f64> {
        self.truth.get(&w).copied().flatten()
    }

    /// Whether horizon `h` is one of the hub's tasks (horizon -1 on those of horizon 0).
    fn on_task(&self, h: i32) -> bool {
        self.from_final
            || self
                .data
                .hub_tasks
                .contains(&(self.r, self.loc.to_string(), h.max(0) as usize))
    }

    fn observed(&self) -> Vec<Option<f64>> {
        HORIZONS.iter().map(|h| self.y(self.r + 7 * h)).collect()
    }
}

/// Weekly admissions: quantiles per horizon, samples as trajectories.
fn score_weekly(scores: &mut Scores, task: &Task<'_>, models: &[(String, &ModelTargets)]) {
    let (s, levels) = (task.season, &enkf_core::scoring::FLUSIGHT_LEVELS);
    let observed = task.observed();
    for (i, &h) in HORIZONS.iter().enumerate() {
        if let (Some(v), true) = (observed[i], task.on_task(h)) {
            add_twin_and_variants(scores, (s, "wk_inc_flu_hosp", h, "wis"), models, |m| {
                Some(wis(levels, &m.quantiles[i], v))
            });
        }
    }
    if observed.iter().all(Option::is_some) && task.on_task(0) {
        let obs: Vec<f64> = observed.iter().flatten().copied().collect();
        add_twin_and_variants(scores, (s, "samples", -1, "energy"), models, |m| {
            energy_score(&m.samples, &obs).ok()
        });
    }
}

/// Rate change against the final count of the week before the reference date.
fn score_rate_change(
    scores: &mut Scores,
    task: &Task<'_>,
    models: &[(String, &ModelTargets)],
    t: &Targets,
) {
    let Some(base) = task.y(task.r - 7) else {
        return;
    };
    let observed = task.observed();
    for (i, &h) in HORIZONS.iter().enumerate().skip(1) {
        let (Some(v), true) = (observed[i], task.on_task(h)) else {
            continue;
        };
        let Ok(class) = rate_change_class(base, v, task.population, h) else {
            continue;
        };
        for metric in ["rps", "log"] {
            let f = |p: &[f64]| {
                if metric == "rps" {
                    rps(p, class).ok()
                } else {
                    truncated_log_score(p, class, LOG_SCORE_CAP).ok()
                }
            };
            let key = (task.season, "rate_change", h, metric);
            add_twin_and_variants(scores, key, models, |m| f(&m.rate_change[i]));
            if let Some(v) = f(&t.climatology[i]) {
                for hh in [h, 99] {
                    scores.add(task.season, "rate_change", hh, metric, "climatology", v);
                }
            }
        }
    }
}

/// Peak intensity and week: the season's final counts, when all are known.
fn score_peaks(
    scores: &mut Scores,
    task: &Task<'_>,
    models: &[(String, &ModelTargets)],
    t: &Targets,
) {
    let finals: Vec<Option<f64>> = t.season_weeks.iter().map(|w| task.y(*w)).collect();
    if !(finals.iter().all(Option::is_some) && task.on_task(0)) {
        return;
    }
    let Some((week, height)) = peak_of(&finals) else {
        return;
    };
    let (s, levels) = (task.season, &enkf_core::scoring::FLUSIGHT_LEVELS);
    add_twin_and_variants(scores, (s, "peak_intensity", -1, "wis"), models, |m| {
        Some(wis(levels, &m.peak_intensity, height))
    });
    add_twin_and_variants(scores, (s, "peak_week", -1, "rps"), models, |m| {
        rps(&m.peak_week, week).ok()
    });
    add_twin_and_variants(scores, (s, "peak_week", -1, "log"), models, |m| {
        truncated_log_score(&m.peak_week, week, LOG_SCORE_CAP).ok()
    });
}

/// The ED-visit proportion.
fn score_ed(scores: &mut Scores, task: &Task<'_>, models: &[(String, &ModelTargets)]) {
    let Some(ed) = task.data.ed.get(task.loc) else {
        return;
    };
    let levels = &enkf_core::scoring::FLUSIGHT_LEVELS;
    for (i, &h) in HORIZONS.iter().enumerate() {
        if let (Some(v), true) = (ed.get(&(task.r + 7 * h)), task.on_task(h)) {
            add_twin_and_variants(scores, (task.season, "ed_prop", h, "wis"), models, |m| {
                m.ed_quantiles.as_ref().map(|q| wis(levels, &q[i], *v))
            });
        }
    }
}
