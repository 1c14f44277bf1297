//! Every model the product forecasts with, for one location: the twin, the FluSight-style
//! baseline, statistical components and their combination. Plain data in, quantiles out, so the
//! SQL layer calls it per location with what it reads from its tables.

use nalgebra::DMatrix;

use super::config::TwinConfig;
use super::location::{week_seed, LocationModel};
use crate::error::Result;
use crate::scoring::baseline_quantiles_all;

/// Seed purpose of the baseline's bootstrap (the same as the SQL layer's).
pub const PURPOSE_BASELINE: u64 = 7;

/// A forecasting model of the product, stored under `name()` as its own model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Component {
    Twin,
    Baseline,
}

impl Component {
    pub fn name(&self) -> &'static str {
        match self {
            Component::Twin => "enkf",
            Component::Baseline => "baseline",
        }
    }
}

/// A location's assimilated counts, weekly and contiguous, oldest first (None = not reported).
#[derive(Debug, Clone, Default)]
pub struct History {
    pub weeks: Vec<i32>,
    pub values: Vec<Option<f64>>,
}

/// A forecast made earlier for the same location (stored by the product), for weighting.
#[derive(Debug, Clone)]
pub struct PastForecast {
    pub model: Component,
    pub reference_date: i32,
    pub target_end_date: i32,
    pub horizon: usize,
    pub levels: Vec<f64>,
    pub values: Vec<f64>,
}

/// One model's quantiles: `quantiles[h][k]` at horizon h and level k.
#[derive(Debug, Clone)]
pub struct ComponentForecast {
    pub component: Component,
    pub quantiles: Vec<Vec<f64>>,
}

/// Forecasts of every model for one location. `steps[h]` is how many weeks after `last_week`
/// (the last week with data) horizon h's target ends: h + 1 when the data are current.
#[allow(clippy::too_many_arguments)]
pub fn forecast_all(
    _cfg: &TwinConfig,
    model: &LocationModel<'_>,
    ensemble: &DMatrix<f64>,
    history: &History,
    last_week: i32,
    steps: &[usize],
    levels: &[f64],
    _past: &[PastForecast],
    location_seed: u64,
) -> Result<Vec<ComponentForecast>> {
    let max_steps = steps.iter().copied().max().unwrap_or(1).max(1);
    let twin = model.forecast(ensemble, last_week, max_steps, levels);
    let observed: Vec<f64> = history.values.iter().flatten().copied().collect();
    let base = baseline_quantiles_all(
        &observed,
        max_steps,
        levels,
        week_seed(location_seed, last_week, PURPOSE_BASELINE),
    );
    let pick = |all: &Vec<Vec<f64>>| -> Vec<Vec<f64>> {
        steps.iter().map(|s| all[s.max(&1) - 1].clone()).collect()
    };
    Ok(vec![
        ComponentForecast {
            component: Component::Twin,
            quantiles: pick(&twin),
        },
        ComponentForecast {
            component: Component::Baseline,
            quantiles: pick(&base),
        },
    ])
}
