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

/// Seed purpose of the baseline's bootstrap (the same as the SQL layer's).
pub const PURPOSE_BASELINE: u64 = 7;

/// A forecasting model of the product, stored under `name()` as its own model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Component {
    Twin,
    Baseline,
    Trend,
    Combined,
}

impl Component {
    pub const ALL: [Component; 4] = [
        Component::Twin,
        Component::Baseline,
        Component::Trend,
        Component::Combined,
    ];

    pub fn name(&self) -> &'static str {
        match self {
            Component::Twin => "enkf",
            Component::Baseline => "baseline",
            Component::Trend => "trend",
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
#[allow(clippy::too_many_arguments)]
pub fn forecast_all(
    cfg: &TwinConfig,
    model: &LocationModel<'_>,
    ensemble: &DMatrix<f64>,
    history: &History,
    last_week: i32,
    steps: &[usize],
    levels: &[f64],
    calibration: &Calibration,
    location_seed: u64,
) -> Result<Vec<ComponentForecast>> {
    if steps.is_empty() || steps.contains(&0) {
        return Err(EnkfError::InvalidValue {
            arg: "horizons",
            detail: "every horizon must target a week after the last data".into(),
            hint: "steps[h] = h + 1 when the data are current".into(),
        });
    }
    if levels.is_empty()
        || !levels.windows(2).all(|w| w[0] < w[1])
        || levels[0] <= 0.0
        || levels[levels.len() - 1] >= 1.0
    {
        return Err(EnkfError::InvalidValue {
            arg: "quantile_levels",
            detail: "levels must increase strictly within (0, 1)".into(),
            hint: "e.g. the 23 FluSight levels 0.01, 0.025, 0.05, ..., 0.975, 0.99".into(),
        });
    }
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
    let trend = trend_quantiles(&observed, steps, levels, &cfg.trend);
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
    ];
    let members: Vec<Component> = cfg
        .combination
        .components
        .iter()
        .filter_map(|n| Component::from_name(n))
        .collect();
    let combined = (0..steps.len())
        .map(|h| {
            let parts: Vec<(Component, &[f64])> = out
                .iter()
                .filter(|c| members.contains(&c.component))
                .map(|c| (c.component, c.quantiles[h].as_slice()))
                .collect();
            combine(levels, h, &parts, calibration)
        })
        .collect();
    out.push(ComponentForecast {
        component: Component::Combined,
        quantiles: combined,
    });
    Ok(out)
}
