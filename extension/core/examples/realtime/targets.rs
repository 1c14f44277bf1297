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
    forecast_targets, peak_of, rate_change_class, ModelTargets, TargetInputs,
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
    let cfg = st.twin.model.cfg;
    let Some(idx) = st.twin.weeks.iter().position(|w| w.0 == last) else {
        return;
    };
    let ens = &st.twin.analyses[idx];
    let ed_history = (!st.twin.ed.is_empty()).then(|| History {
        weeks: st.twin.ed.keys().copied().collect(),
        values: st.twin.ed.values().map(|v| Some(*v)).collect(),
    });
    let Ok(peak_season) = cfg.targets.season(r) else {
        return;
    };
    let inputs = TargetInputs {
        ensemble: ens,
        last_week: last,
        history,
        ed_history: ed_history.as_ref(),
        reference_date: r,
        horizons: &HORIZONS,
        levels: &enkf_core::scoring::FLUSIGHT_LEVELS,
        season: peak_season,
        max_weeks: MAX_WEEKS,
        location_seed: location_seed(cfg.seed, &st.loc),
    };
    let t = match forecast_targets(&st.twin.model, &inputs) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{} {}: {e}", st.loc, enkf_core::dates::iso(r));
            return;
        }
    };
    let pop = st.twin.model.population;
    let mut models: Vec<(String, ModelTargets)> = vec![
        ("enkf".into(), t.twin.clone()),
        ("baseline".into(), t.baseline.clone()),
    ];
    for (k, v) in variants.iter().enumerate() {
        let m = LocationModel::new(v, &st.loc, pop);
        if let Ok(tv) = forecast_targets(&m, &inputs) {
            models.push((format!("enkf/{k}"), tv.twin));
        }
    }
    let models: Vec<(String, &ModelTargets)> = models.iter().map(|(n, m)| (n.clone(), m)).collect();
    let levels = &enkf_core::scoring::FLUSIGHT_LEVELS;
    let s = season.name.as_str();
    let Some(truth) = data.truth.get(&st.loc) else {
        return;
    };
    let y = |w: i32| truth.get(&w).copied().flatten();
    let on_task = |h: i32| {
        season.from_final
            || data
                .hub_tasks
                .contains(&(r, st.loc.clone(), h.max(0) as usize))
    };

    // Weekly admissions: quantiles per horizon, samples as trajectories.
    let observed: Vec<Option<f64>> = HORIZONS.iter().map(|h| y(r + 7 * h)).collect();
    for (i, &h) in HORIZONS.iter().enumerate() {
        if let (Some(v), true) = (observed[i], on_task(h)) {
            add_twin_and_variants(scores, (s, "wk_inc_flu_hosp", h, "wis"), &models, |m| {
                Some(wis(levels, &m.quantiles[i], v))
            });
        }
    }
    if observed.iter().all(Option::is_some) && on_task(0) {
        let obs: Vec<f64> = observed.iter().flatten().copied().collect();
        add_twin_and_variants(scores, (s, "samples", -1, "energy"), &models, |m| {
            energy_score(&m.samples, &obs).ok()
        });
    }

    // Rate change against the final count of the week before the reference date.
    if let Some(base) = y(r - 7) {
        for (i, &h) in HORIZONS.iter().enumerate().skip(1) {
            let (Some(v), true) = (observed[i], on_task(h)) else {
                continue;
            };
            let Ok(class) = rate_change_class(base, v, pop, h) else {
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
                add_twin_and_variants(scores, (s, "rate_change", h, metric), &models, |m| {
                    f(&m.rate_change[i])
                });
                if let Some(v) = f(&t.climatology[i]) {
                    for hh in [h, 99] {
                        scores.add(s, "rate_change", hh, metric, "climatology", v);
                    }
                }
            }
        }
    }

    // Peak intensity and week: the season's final counts, when all are known.
    let finals: Vec<Option<f64>> = t.season_weeks.iter().map(|w| y(*w)).collect();
    if finals.iter().all(Option::is_some) && on_task(0) {
        if let Some((week, height)) = peak_of(&finals) {
            add_twin_and_variants(scores, (s, "peak_intensity", -1, "wis"), &models, |m| {
                Some(wis(levels, &m.peak_intensity, height))
            });
            add_twin_and_variants(scores, (s, "peak_week", -1, "rps"), &models, |m| {
                rps(&m.peak_week, week).ok()
            });
            add_twin_and_variants(scores, (s, "peak_week", -1, "log"), &models, |m| {
                truncated_log_score(&m.peak_week, week, LOG_SCORE_CAP).ok()
            });
        }
    }

    // ED-visit proportion.
    if let Some(ed) = data.ed.get(&st.loc) {
        for (i, &h) in HORIZONS.iter().enumerate() {
            if let (Some(v), true) = (ed.get(&(r + 7 * h)), on_task(h)) {
                add_twin_and_variants(scores, (s, "ed_prop", h, "wis"), &models, |m| {
                    m.ed_quantiles.as_ref().map(|q| wis(levels, &q[i], *v))
                });
            }
        }
    }
}
