//! One location's forecasts from its stored analysis: what `enkf.forecast` computes per
//! location, on any thread, once it has read the analysis and the counts assimilated.

use nalgebra::DMatrix;

use super::combine::Calibration;
use super::config::TwinConfig;
use super::location::LocationModel;
use super::models::{forecast_all, ComponentForecast, History};
use super::streams::location_seed;
use crate::error::Result;
use crate::model::seirh::{E, I, R, S, STATE_DIM};

/// A location's latest analysis as a checkpoint stores it, and the counts it assimilated.
pub struct StoredAnalysis {
    pub location: String,
    /// The analysis's week end.
    pub week: i32,
    /// Row-major [state][members]; `STATE_DIM * members` values (checked by the reader).
    pub ensemble: Vec<f64>,
    pub history: History,
}

/// Counts whose smallness a forecast could reveal: those of the weeks it is made from most
/// directly (the baseline starts from the last count, the trend model from the last two).
pub const RECENT_WEEKS: i32 = 4;

impl StoredAnalysis {
    /// Every model's forecast at `steps` weeks after the analysis (a step per horizon).
    pub fn forecast(
        &self,
        cfg: &TwinConfig,
        members: usize,
        steps: &[usize],
        levels: &[f64],
        calibration: &Calibration,
    ) -> Result<Vec<ComponentForecast>> {
        let ens = DMatrix::from_row_slice(STATE_DIM, members, &self.ensemble);
        // Every member carries the whole population in its compartments (H counts flows).
        let population: f64 = [S, E, I, R].iter().map(|&c| ens[(c, 0)]).sum();
        let model = LocationModel::new(cfg, &self.location, population);
        forecast_all(
            cfg,
            &model,
            &ens,
            &self.history,
            self.week,
            steps,
            levels,
            &[],
            calibration,
            location_seed(cfg.seed, &self.location),
        )
    }

    /// The smallest count above 0 reported in the `RECENT_WEEKS` weeks through the analysis:
    /// stored with the forecasts, which readers see only when it is not a withheld small
    /// count (`enkf.forecast_withheld`).
    pub fn recent_smallest_count(&self) -> Option<f64> {
        let h = &self.history;
        h.weeks
            .iter()
            .zip(&h.values)
            .filter(|(w, _)| **w > self.week - 7 * RECENT_WEEKS && **w <= self.week)
            .filter_map(|(_, v)| *v)
            .filter(|v| *v > 0.0)
            .reduce(f64::min)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_smallest_recent_count_ignores_zeros_gaps_and_older_weeks() {
        let a = StoredAnalysis {
            location: "x".into(),
            week: 70,
            ensemble: Vec::new(),
            history: History {
                weeks: vec![35, 42, 49, 56, 63, 70],
                values: vec![Some(1.0), Some(2.0), Some(0.0), None, Some(9.0), Some(5.0)],
            },
        };
        // Weeks 49..70 are the last four: 0 (not a small count), a gap, 9, 5.
        assert_eq!(a.recent_smallest_count(), Some(5.0));
    }
}
