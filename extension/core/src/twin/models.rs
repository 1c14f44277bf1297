//! Every model the product forecasts with, for one location: the twin, the FluSight-style
//! baseline, the local trend model and their combination. Plain data in, quantiles out, so the
//! SQL layer calls it per location with what it reads from its tables:
//!
//! 1. `combine::calibrate` once per forecast run, with the stored past forecasts (of every
//!    location, or of this one) whose targets are already observed, and those counts;
//! 2. `forecast_all` per location, with its latest analysis ensemble, its assimilated counts
//!    and that calibration: one `ComponentForecast` per model, each stored under its name.

use nalgebra::DMatrix;

use super::combine::{combine, Calibration};
use super::config::TwinConfig;
use super::location::{week_seed, LocationModel};
use super::trend::trend_quantiles;
use crate::error::{EnkfError, Result};
use crate::scoring::baseline_quantiles_all;

pub use super::streams::PURPOSE_BASELINE;

/// A forecasting model of the product, stored under `name()` as its own model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Component {
    Twin,
    Baseline,
    Trend,
    Pooled,
    Combined,
}

impl Component {
    pub const ALL: [Component; 5] = [
        Component::Twin,
        Component::Baseline,
        Component::Trend,
        Component::Pooled,
        Component::Combined,
    ];

    pub fn name(&self) -> &'static str {
        match self {
            Component::Twin => "enkf",
            Component::Baseline => "baseline",
            Component::Trend => "trend",
            Component::Pooled => "pooled",
            Component::Combined => "combined",
        }
    }

    pub fn from_name(name: &str) -> Option<Component> {
        Component::ALL.into_iter().find(|c| c.name() == name)
    }
}

/// A location's assimilated counts, weekly and contiguous, oldest first (None = not reported).
#[derive(Debug, Clone, Default)]
pub struct History {
    pub weeks: Vec<i32>,
    pub values: Vec<Option<f64>>,
}

impl History {
    /// The reported counts, oldest first, without the gaps.
    pub fn observed(&self) -> Vec<f64> {
        self.values.iter().flatten().copied().collect()
    }
}

/// One model's quantiles: `quantiles[h][k]` at horizon h and level k.
#[derive(Debug, Clone)]
pub struct ComponentForecast {
    pub component: Component,
    pub quantiles: Vec<Vec<f64>>,
}

/// Forecasts of every model for one location. `steps[h]` is how many weeks after `last_week`
/// (the last week with data) horizon h's target ends: h + 1 when the data are current.
/// `levels` are any increasing quantile levels in (0, 1) (the 23 FluSight levels by default).
/// `history` holds the counts as published; `nowcast_factors` (from `nowcast::factors`, empty
/// for none) correct its newest weeks for the trend model. The baseline sees the counts as published, as the hub's.
/// `pooled` holds the pooled model's quantiles at `steps` for this location (`PooledFit::
/// quantiles`), None where it has none.
#[allow(clippy::too_many_arguments)]
pub fn forecast_all(
    cfg: &TwinConfig,
    model: &LocationModel<'_>,
    ensemble: &DMatrix<f64>,
    history: &History,
    last_week: i32,
    steps: &[usize],
    levels: &[f64],
    nowcast_factors: &[f64],
    calibration: &Calibration,
    pooled: Option<Vec<Vec<f64>>>,
    location_seed: u64,
) -> Result<Vec<ComponentForecast>> {
    if steps.is_empty() || steps.contains(&0) {
        return Err(EnkfError::InvalidValue {
            arg: "horizons",
            detail: "every horizon must target a week after the last data".into(),
            hint: "steps[h] = h + 1 when the data are current".into(),
        });
    }
    check_levels(levels)?;
    let max_steps = steps.iter().copied().max().unwrap_or(1);
    let pick =
        |all: &[Vec<f64>]| -> Vec<Vec<f64>> { steps.iter().map(|s| all[s - 1].clone()).collect() };
    let observed = history.observed();
    let twin = model.forecast(ensemble, last_week, max_steps, levels);
    let base = baseline_quantiles_all(
        &observed,
        max_steps,
        levels,
        week_seed(location_seed, last_week, PURPOSE_BASELINE),
    );
    let corrected = super::nowcast::corrected(history, last_week, nowcast_factors).observed();
    let trend = trend_quantiles(&corrected, steps, levels, &cfg.trend);
    let mut out = vec![
        ComponentForecast {
            component: Component::Twin,
            quantiles: pick(&twin),
        },
        ComponentForecast {
            component: Component::Baseline,
            quantiles: pick(&base),
        },
        ComponentForecast {
            component: Component::Trend,
            quantiles: trend,
        },
        ComponentForecast {
            component: Component::Pooled,
            // A location the fit cannot forecast (no count in its newest weeks, or too few
            // training rows) gets the baseline's quantiles, as a model that knows nothing more.
            quantiles: pooled.unwrap_or_else(|| pick(&base)),
        },
    ];
    let combined = combination(cfg, &out, steps.len(), levels, calibration);
    out.push(combined);
    Ok(out)
}

/// The most quantile levels a forecast takes.
pub const MAX_LEVELS: usize = 999;

/// Refuses quantile levels that do not increase strictly within (0, 1), or more than
/// MAX_LEVELS of them: the one check of every caller (`enkf.forecast`'s argument included).
pub fn check_levels(levels: &[f64]) -> Result<()> {
    let ok = !levels.is_empty()
        && levels.len() <= MAX_LEVELS
        && levels.iter().all(|p| p.is_finite() && *p > 0.0 && *p < 1.0)
        && levels.windows(2).all(|w| w[0] < w[1]);
    if ok {
        return Ok(());
    }
    Err(EnkfError::InvalidValue {
        arg: "quantile_levels",
        detail: format!(
            "quantile_levels must be at most {MAX_LEVELS} strictly increasing values inside (0, 1), got {levels:?}"
        ),
        hint: "leave quantile_levels out for the 23 FluSight levels 0.01, 0.025, 0.05, 0.1, ..., 0.975, 0.99".into(),
    })
}

/// The combination of the components `cfg.combination.components` names, per horizon.
fn combination(
    cfg: &TwinConfig,
    components: &[ComponentForecast],
    horizons: usize,
    levels: &[f64],
    calibration: &Calibration,
) -> ComponentForecast {
    let members: Vec<Component> = cfg
        .combination
        .components
        .iter()
        .filter_map(|n| Component::from_name(n))
        .collect();
    let quantiles = (0..horizons)
        .map(|h| {
            let parts: Vec<(Component, &[f64])> = components
                .iter()
                .filter(|c| members.contains(&c.component))
                .map(|c| (c.component, c.quantiles[h].as_slice()))
                .collect();
            combine(levels, h, &parts, calibration)
        })
        .collect();
    ComponentForecast {
        component: Component::Combined,
        quantiles,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scoring::FLUSIGHT_LEVELS;
    use crate::twin::location::location_seed;

    fn setup(cfg: &TwinConfig) -> (LocationModel<'_>, DMatrix<f64>, History, i32) {
        let model = LocationModel::new(cfg, "06", 3.9e7);
        let mut ens = model.prior(40);
        let weeks: Vec<i32> = (0..30).map(|k| 7 * k).collect();
        let values: Vec<Option<f64>> = (0..30)
            .map(|k| {
                if k == 12 {
                    None
                } else {
                    Some(50.0 + 10.0 * k as f64)
                }
            })
            .collect();
        for (w, v) in weeks.iter().zip(&values) {
            model.step(&mut ens, *w);
            if let Some(y) = v {
                model.update(&mut ens, *y, *y, *w).unwrap();
            }
        }
        (model, ens, History { weeks, values }, 7 * 29)
    }

    #[test]
    fn every_model_at_every_horizon_ordered_and_reproducible() {
        let cfg = TwinConfig::default();
        let (model, ens, history, last) = setup(&cfg);
        let seed = location_seed(cfg.seed, "06");
        let run = || {
            forecast_all(
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
                seed,
            )
            .unwrap()
        };
        let out = run();
        let names: Vec<&str> = out.iter().map(|c| c.component.name()).collect();
        assert_eq!(names, ["enkf", "baseline", "trend", "pooled", "combined"]);
        for c in &out {
            assert_eq!(c.quantiles.len(), 4);
            for q in &c.quantiles {
                assert_eq!(q.len(), FLUSIGHT_LEVELS.len());
                assert!(q.windows(2).all(|w| w[0] <= w[1]), "{}", c.component.name());
                assert!(q.iter().all(|v| v.is_finite() && *v >= 0.0));
            }
        }
        let again = run();
        for (a, b) in out.iter().zip(&again) {
            assert_eq!(a.quantiles, b.quantiles);
        }
    }

    #[test]
    fn a_combination_of_one_component_is_that_component() {
        let mut cfg = TwinConfig::default();
        cfg.combination.components = vec!["trend".into()];
        let (model, ens, history, last) = setup(&cfg);
        let levels = [0.05, 0.25, 0.5, 0.75, 0.95];
        let out = forecast_all(
            &cfg,
            &model,
            &ens,
            &history,
            last,
            &[1, 2],
            &levels,
            &[],
            &Calibration::neutral(),
            None,
            3,
        )
        .unwrap();
        assert_eq!(out[2].quantiles, out[4].quantiles);
        // Without a pooled fit, the pooled model's quantiles are the baseline's.
        assert_eq!(out[1].quantiles, out[3].quantiles);
    }

    #[test]
    fn bad_horizons_and_levels_are_refused() {
        let cfg = TwinConfig::default();
        let (model, ens, history, last) = setup(&cfg);
        let cal = Calibration::neutral();
        for (steps, levels) in [
            (vec![0usize, 1], vec![0.5]),
            (vec![], vec![0.5]),
            (vec![1], vec![0.5, 0.25]),
            (vec![1], vec![0.0, 0.5]),
            (vec![1], vec![]),
        ] {
            let err = forecast_all(
                &cfg,
                &model,
                &ens,
                &history,
                last,
                &steps,
                &levels,
                &[],
                &cal,
                None,
                1,
            )
            .unwrap_err();
            assert!(err.argument().is_some());
        }
    }
}
