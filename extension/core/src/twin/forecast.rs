//! One location's forecasts from its stored analysis: what `enkf.forecast` computes per
//! location, on any thread, once it has read the analysis and the counts assimilated.

use nalgebra::DMatrix;

use super::combine::Calibration;
use super::config::TwinConfig;
use super::ed;
use super::location::LocationModel;
use super::models::{forecast_all, ComponentForecast, History};
use super::pooled::PooledFit;
use super::season::MAX_SEASON_WEEKS;
use super::streams::location_seed;
use super::targets::{
    forecast_targets, CombinedInputs, ModelTargets, TargetInputs, Targets, RATE_CHANGE_CLASSES,
};
use crate::dates::iso;
use crate::error::Result;
use crate::model::seirh::{E, I, R, S};

/// A location's latest analysis as a checkpoint stores it, and the counts it assimilated.
pub struct StoredAnalysis {
    pub location: String,
    /// The analysis's week end.
    pub week: i32,
    /// Row-major [state][members]; `ed::state_dim(config) * members` values (checked by the
    /// reader).
    pub ensemble: Vec<f64>,
    pub history: History,
    /// The ED-visit proportions it assimilated (a twin with the ED stream; None without): the
    /// baseline's ED quantiles start from them.
    pub ed_history: Option<History>,
}

/// The hub's names of the targets beside the weekly count (`forecast.target`).
pub const RATE_CHANGE_TARGET: &str = "wk flu hosp rate change";
pub const PEAK_TARGET: &str = "peak inc flu hosp";
pub const PEAK_WEEK_TARGET: &str = "peak week inc flu hosp";
pub const ED_TARGET: &str = "wk inc flu prop ed visits";

/// The most weeks the members are run for the targets: a reference date at most 53 weeks
/// after the analysis (as `enkf.forecast` allows), then a whole season.
pub const MAX_TARGET_WEEKS: usize = 53 + MAX_SEASON_WEEKS + 4;

/// One stored row of the hub's targets: one model's output of one output type for one
/// target and horizon (None: the season's peak), as output type ids and values.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetRow {
    /// "enkf", "baseline", "combined" or "climatology" (the rate-change reference).
    pub model: &'static str,
    pub target: String,
    /// "quantile", "pmf" or "sample".
    pub output_type: &'static str,
    pub horizon: Option<i32>,
    pub target_end_date: Option<i32>,
    pub ids: Vec<String>,
    pub values: Vec<f64>,
}

impl StoredAnalysis {
    fn model<'a>(&self, cfg: &'a TwinConfig, members: usize) -> (DMatrix<f64>, LocationModel<'a>) {
        let ens = DMatrix::from_row_slice(ed::state_dim(cfg), members, &self.ensemble);
        // Every member carries the whole population in its compartments (H counts flows).
        let population: f64 = [S, E, I, R].iter().map(|&c| ens[(c, 0)]).sum();
        let model = LocationModel::new(cfg, &self.location, population);
        (ens, model)
    }

    /// Every hub target from the twin's trajectories and the baseline's, for the reference
    /// date and the horizons -1 up to min(horizons, 4) - 1; the combined model's too when its
    /// forecast is given. With the ED stream, the twin's ED quantiles, and the baseline's when
    /// a proportion has been reported (`ed_history`).
    pub fn targets(
        &self,
        cfg: &TwinConfig,
        members: usize,
        reference_date: i32,
        horizons: usize,
        levels: &[f64],
        combined: Option<CombinedInputs<'_>>,
    ) -> Result<Targets> {
        let (ens, model) = self.model(cfg, members);
        let hs: Vec<i32> = (-1..horizons.min(4) as i32).collect();
        forecast_targets(
            &model,
            &TargetInputs {
                ensemble: &ens,
                last_week: self.week,
                history: &self.history,
                ed_history: self
                    .ed_history
                    .as_ref()
                    .filter(|h| cfg.ed.enabled && h.values.iter().any(Option::is_some)),
                reference_date,
                horizons: &hs,
                levels,
                season: cfg.targets.season(reference_date)?,
                max_weeks: MAX_TARGET_WEEKS,
                location_seed: location_seed(cfg.seed, &self.location),
                combined,
            },
        )
    }

    /// Every model's forecast at `steps` weeks after the analysis (a step per horizon); the
    /// trend model starts from the newest weeks multiplied by the `nowcast` factors.
    pub fn forecast(
        &self,
        cfg: &TwinConfig,
        members: usize,
        steps: &[usize],
        levels: &[f64],
        run: &RunInputs<'_>,
    ) -> Result<Vec<ComponentForecast>> {
        let RunInputs {
            calibration,
            pooled,
            nowcast,
        } = *run;
        let (ens, model) = self.model(cfg, members);
        forecast_all(
            cfg,
            &model,
            &ens,
            &self.history,
            self.week,
            steps,
            levels,
            nowcast,
            calibration,
            pooled.and_then(|p| p.quantiles(&self.location)),
            location_seed(cfg.seed, &self.location),
        )
    }
}

/// What one forecast run learned across locations, passed to each location's forecast: the
/// combination's calibration, the pooled model's fit, the nowcast factors (empty: none).
#[derive(Clone, Copy)]
pub struct RunInputs<'a> {
    pub calibration: &'a Calibration,
    pub pooled: Option<&'a PooledFit>,
    pub nowcast: &'a [f64],
}

/// The rows of one location's targets as stored (enkf.target_forecasts), each in the hub's
/// terms: the weekly count's quantiles at horizon -1 (those at 0.. are the stored forecasts of
/// every model), its 100 sample trajectories (ids "<location>_<k>", one per trajectory across
/// the horizons), the rate-change pmf at horizons 0.. (at -1 it is "stable" by definition), the
/// season's peak intensity and peak week, the ED proportion's quantiles when the twin has the
/// stream; for the twin, the baseline, and the climatological rate-change pmf.
pub fn target_rows(
    t: &Targets,
    location: &str,
    levels: &[f64],
    count_target: &str,
) -> Vec<TargetRow> {
    let level_ids: Vec<String> = levels.iter().map(|l| l.to_string()).collect();
    let mut rows = Vec::new();
    for (model, m) in [("enkf", &t.twin), ("baseline", &t.baseline)] {
        model_rows(&mut rows, model, m, t, location, &level_ids, count_target);
    }
    if let Some(m) = &t.combined {
        model_rows(
            &mut rows,
            "combined",
            m,
            t,
            location,
            &level_ids,
            count_target,
        );
    }
    for (h, pmf) in t.horizons.iter().zip(&t.climatology) {
        if *h >= 0 {
            rows.push(rate_change_row("climatology", t, *h, pmf));
        }
    }
    rows
}

fn model_rows(
    rows: &mut Vec<TargetRow>,
    model: &'static str,
    m: &ModelTargets,
    t: &Targets,
    location: &str,
    level_ids: &[String],
    count_target: &str,
) {
    let weekly =
        |target: &str, output_type, h: usize, ids: Vec<String>, values: Vec<f64>| TargetRow {
            model,
            target: target.to_string(),
            output_type,
            horizon: Some(t.horizons[h]),
            target_end_date: Some(t.target_end_dates[h]),
            ids,
            values,
        };
    let digits = m.samples.len().saturating_sub(1).max(1).to_string().len();
    let sample_ids: Vec<String> = (0..m.samples.len())
        .map(|k| format!("{location}_{k:0digits$}"))
        .collect();
    for (h, &horizon) in t.horizons.iter().enumerate() {
        if horizon == -1 {
            rows.push(weekly(
                count_target,
                "quantile",
                h,
                level_ids.to_vec(),
                m.quantiles[h].clone(),
            ));
        }
        let samples = m.samples.iter().map(|s| s[h]).collect();
        rows.push(weekly(
            count_target,
            "sample",
            h,
            sample_ids.clone(),
            samples,
        ));
        if horizon >= 0 {
            rows.push(rate_change_row(model, t, horizon, &m.rate_change[h]));
        }
        if let Some(ed) = &m.ed_quantiles {
            rows.push(weekly(
                ED_TARGET,
                "quantile",
                h,
                level_ids.to_vec(),
                ed[h].clone(),
            ));
        }
    }
    season_rows(rows, model, m, t, level_ids);
}

/// A model's season targets: peak intensity (quantiles) and peak week (pmf over the season's
/// Saturdays).
fn season_rows(
    rows: &mut Vec<TargetRow>,
    model: &'static str,
    m: &ModelTargets,
    t: &Targets,
    level_ids: &[String],
) {
    let season = |target: &str, output_type, ids: Vec<String>, values: Vec<f64>| TargetRow {
        model,
        target: target.to_string(),
        output_type,
        horizon: None,
        target_end_date: None,
        ids,
        values,
    };
    rows.push(season(
        PEAK_TARGET,
        "quantile",
        level_ids.to_vec(),
        m.peak_intensity.clone(),
    ));
    let weeks = t.season_weeks.iter().map(|w| iso(*w)).collect();
    rows.push(season(PEAK_WEEK_TARGET, "pmf", weeks, m.peak_week.clone()));
}

fn rate_change_row(model: &'static str, t: &Targets, horizon: i32, pmf: &[f64; 5]) -> TargetRow {
    let h = t.horizons.iter().position(|x| *x == horizon).unwrap_or(0);
    TargetRow {
        model,
        target: RATE_CHANGE_TARGET.to_string(),
        output_type: "pmf",
        horizon: Some(horizon),
        target_end_date: Some(t.target_end_dates[h]),
        ids: RATE_CHANGE_CLASSES.iter().map(|c| c.to_string()).collect(),
        values: pmf.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_rows_hold_every_hub_output_once() {
        use crate::dates::from_civil;
        use crate::scoring::FLUSIGHT_LEVELS;
        let cfg = TwinConfig::default();
        let members = 20;
        let model = LocationModel::new(&cfg, "06", 1e6);
        let last = from_civil(2024, 1, 6);
        let history = History {
            weeks: (0..12).map(|k| last - 7 * (11 - k)).collect(),
            values: (0..12).map(|k| Some(50.0 + 10.0 * k as f64)).collect(),
        };
        let a = StoredAnalysis {
            location: "06".into(),
            week: last,
            ensemble: model.prior(members).transpose().as_slice().to_vec(),
            history,
            ed_history: None,
        };
        let t = a
            .targets(&cfg, members, last + 7, 4, &FLUSIGHT_LEVELS, None)
            .expect("targets");
        let rows = target_rows(&t, "06", &FLUSIGHT_LEVELS, "wk inc flu hosp");
        let count = |model: &str, target: &str, output_type: &str| {
            rows.iter()
                .filter(|r| r.model == model && r.target == target && r.output_type == output_type)
                .count()
        };
        for model in ["enkf", "baseline"] {
            assert_eq!(
                count(model, "wk inc flu hosp", "quantile"),
                1,
                "horizon -1 only"
            );
            assert_eq!(
                count(model, "wk inc flu hosp", "sample"),
                5,
                "horizons -1..3"
            );
            assert_eq!(count(model, RATE_CHANGE_TARGET, "pmf"), 4, "horizons 0..3");
            assert_eq!(count(model, PEAK_TARGET, "quantile"), 1);
            assert_eq!(count(model, PEAK_WEEK_TARGET, "pmf"), 1);
        }
        assert_eq!(count("climatology", RATE_CHANGE_TARGET, "pmf"), 4);
        assert_eq!(rows.len(), 2 * 12 + 4);
        for r in &rows {
            assert_eq!(r.ids.len(), r.values.len(), "{r:?}");
            assert_eq!(r.horizon.is_none(), r.target.starts_with("peak"));
            if let (Some(h), Some(d)) = (r.horizon, r.target_end_date) {
                assert_eq!(d, last + 7 + 7 * h);
            }
            if r.output_type == "pmf" {
                assert_eq!(r.values.iter().sum::<f64>(), 1.0, "{r:?}");
            }
            if r.output_type == "sample" {
                assert_eq!(r.ids[0], "06_00");
                assert_eq!(r.ids[99], "06_99");
                assert!(r.values.iter().all(|v| v.fract() == 0.0 && *v >= 0.0));
            }
        }
        let weeks = rows
            .iter()
            .find(|r| r.target == PEAK_WEEK_TARGET)
            .expect("peak week");
        assert_eq!(
            weeks.ids[0], "2023-11-18",
            "the season's first Saturday on or after Nov 17"
        );
        assert_eq!(weeks.ids.last().map(String::as_str), Some("2024-05-25"));
    }

    #[test]
    fn an_ed_twin_stores_ed_quantiles_of_the_twin_and_of_the_baseline() {
        use crate::dates::from_civil;
        use crate::scoring::FLUSIGHT_LEVELS;
        let mut cfg = TwinConfig::default();
        cfg.ed.enabled = true;
        let members = 20;
        let model = LocationModel::new(&cfg, "06", 1e6);
        let last = from_civil(2024, 1, 6);
        let weeks: Vec<i32> = (0..12).map(|k| last - 7 * (11 - k)).collect();
        let history = History {
            weeks: weeks.clone(),
            values: (0..12).map(|k| Some(50.0 + 10.0 * k as f64)).collect(),
        };
        let proportions = History {
            weeks,
            values: (0..12)
                .map(|k| (k != 4).then_some(0.01 + 0.001 * k as f64))
                .collect(),
        };
        let analysis = |ed_history: Option<History>| StoredAnalysis {
            location: "06".into(),
            week: last,
            ensemble: ed::prior(&model, members).transpose().as_slice().to_vec(),
            history: history.clone(),
            ed_history,
        };
        let ed_rows = |a: &StoredAnalysis| -> Vec<TargetRow> {
            let t = a
                .targets(&cfg, members, last + 7, 4, &FLUSIGHT_LEVELS, None)
                .expect("targets");
            target_rows(&t, "06", &FLUSIGHT_LEVELS, "wk inc flu hosp")
                .into_iter()
                .filter(|r| r.target == ED_TARGET)
                .collect()
        };
        let rows = ed_rows(&analysis(Some(proportions)));
        for model in ["enkf", "baseline"] {
            let mine: Vec<&TargetRow> = rows.iter().filter(|r| r.model == model).collect();
            let horizons: Vec<Option<i32>> = mine.iter().map(|r| r.horizon).collect();
            assert_eq!(horizons, vec![Some(-1), Some(0), Some(1), Some(2), Some(3)]);
            for r in mine {
                assert_eq!(r.output_type, "quantile");
                assert_eq!(r.ids.len(), FLUSIGHT_LEVELS.len());
                assert!(r.values.iter().all(|v| (0.0..=1.0).contains(v)), "{r:?}");
                assert!(r.values.windows(2).all(|w| w[0] <= w[1]), "{r:?}");
            }
        }
        // The baseline's horizon -1 is the last reported proportion.
        let base = rows
            .iter()
            .find(|r| r.model == "baseline" && r.horizon == Some(-1))
            .expect("baseline at -1");
        assert!(base.values.iter().all(|v| *v == 0.01 + 0.001 * 11.0));
        // Without any reported proportion the baseline has none; the twin still has its own.
        for none in [None, Some(History::default())] {
            let rows = ed_rows(&analysis(none));
            assert!(rows.iter().all(|r| r.model == "enkf"));
            assert_eq!(rows.len(), 5);
        }
        // Every model's weekly forecast takes the ED twin's 10 rows too.
        let a = analysis(None);
        let out = a
            .forecast(
                &cfg,
                members,
                &[1, 2],
                &FLUSIGHT_LEVELS,
                &RunInputs {
                    calibration: &Calibration::neutral(),
                    pooled: None,
                    nowcast: &[],
                },
            )
            .expect("forecast");
        assert!(out.iter().all(|f| f.quantiles.len() == 2));
    }
}
