//! The ED-visit stream: the weekly proportion of emergency-department visits due to influenza
//! (NSSP), a second observed quantity of the twin, assimilated jointly with the admissions.
//!
//! Observation operator. Flu ED visits follow infections, not admissions (most visits are by
//! people who are never admitted, and their age mix differs); every other visit is roughly
//! steady from week to week. With `i` the week's new infections per capita (the model's onsets
//! over the week / population), the proportion is
//!
//! ```text
//! p = b + kappa * i        (clamped to [0, 1])
//! ```
//!
//! `kappa` (ED visits per infection, relative to all other visits) and `b` (the background:
//! visits coded as influenza outside any epidemic, 0 to 0.16% in the bundled data) are two new
//! parameters in the augmented state, estimated by the filter and walking like `beta` and
//! `ihr`. The linear form is the first-order expansion of flu / (other + flu) visits, which
//! is within 7% of it while p < 0.07, the highest weekly proportion in the bundled data.
//!
//! State layout. A twin WITHOUT the stream keeps the 7 rows of `model::seirh` (checkpoints of
//! 7 rows per member, bit-for-bit the results of before). A twin WITH it (`ed.enabled`) has
//! `ED_STATE_DIM` = 10 rows per member: the same 7 rows, then `ED_P` (7: the proportion of the
//! last week), `ED_RATIO` (8: kappa) and `ED_BACKGROUND` (9: b). Its rows 0..7 step exactly as
//! a twin without the stream would from the same values.

use nalgebra::DMatrix;
use serde::{Deserialize, Serialize};

use super::config::{ObservationError, TwinConfig};
use super::location::{mix, week_seed, LocationModel};
use crate::error::{EnkfError, Result};
use crate::model::seirh::{H, IHR, STATE_DIM};
use crate::rng::{normal, seeded, uniform};

/// Row of the week's ED-visit proportion (the observed quantity).
pub const ED_P: usize = 7;
/// Row of kappa: ED proportion per weekly infection per capita.
pub const ED_RATIO: usize = 8;
/// Row of the background proportion b.
pub const ED_BACKGROUND: usize = 9;
/// Rows per member of a twin with the ED stream.
pub const ED_STATE_DIM: usize = 10;
pub const ED_STATE_NAMES: [&str; 3] = ["ed_p", "ed_ratio", "ed_background"];

/// The proportion is updated on log(p + P_OFFSET), as counts on log(1 + count): one visit in
/// ten thousand, below which differences are noise, and defined at p = 0 (reported zeros).
pub const P_OFFSET: f64 = 1e-4;

pub use super::streams::{
    PURPOSE_ED_BASELINE, PURPOSE_ED_NOISE, PURPOSE_ED_PRIOR, PURPOSE_ED_PROCESS,
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EdConfig {
    /// Whether the twin carries the ED stream (10 state rows instead of 7). Off by default:
    /// twins without it are unchanged.
    pub enabled: bool,
    /// Error variance of a weekly proportion: `floor + mean^2 / divisor`, `mean` over the last
    /// `window` weeks, as for the counts (the floor in proportion^2: 1e-7 is an sd of 0.03
    /// percentage points, the summer level's spread).
    pub observation_error: ObservationError,
    /// Prior of kappa as a multiple of the member's ihr: kappa / ihr is the proportion per
    /// admission per capita, 300 to 700 in the bundled data at the peaks (log-uniform).
    pub ratio_per_ihr: (f64, f64),
    /// Prior of the background proportion b (log-uniform).
    pub background: (f64, f64),
    /// Weekly random walk of log(kappa) and log(b) (standard deviations).
    pub process_noise: (f64, f64),
}

impl Default for EdConfig {
    fn default() -> Self {
        EdConfig {
            enabled: false,
            observation_error: ObservationError {
                floor: 1e-7,
                divisor: 20.0,
                window: 3,
            },
            ratio_per_ihr: (150.0, 1500.0),
            background: (1e-4, 3e-3),
            process_noise: (0.05, 0.02),
        }
    }
}

/// Bounds kept after every step and update.
const RATIO_BOUNDS: (f64, f64) = (1e-4, 1e4);
const BACKGROUND_BOUNDS: (f64, f64) = (1e-7, 0.1);

fn invalid(path: &str, detail: String, hint: &str) -> EnkfError {
    EnkfError::InvalidValue {
        arg: "config",
        detail: format!("config {path}: {detail}"),
        hint: hint.into(),
    }
}

impl EdConfig {
    pub fn validate(&self) -> Result<()> {
        let e = &self.observation_error;
        if !(e.floor.is_finite() && e.floor > 0.0 && e.floor < 1.0) {
            return Err(invalid(
                "ed.observation_error.floor",
                format!("{} must lie in (0, 1)", e.floor),
                "a variance of the proportion, e.g. 1e-7",
            ));
        }
        if !(e.divisor.is_finite() && e.divisor > 0.0) {
            return Err(invalid(
                "ed.observation_error.divisor",
                format!("{} must be positive", e.divisor),
                "20 gives a relative sd of 22%",
            ));
        }
        if e.window == 0 || e.window > 52 {
            return Err(invalid(
                "ed.observation_error.window",
                format!("{} must lie in 1..52", e.window),
                "3 weeks is usual",
            ));
        }
        for (path, (lo, hi), max) in [
            ("ed.ratio_per_ihr", self.ratio_per_ihr, 1e6),
            ("ed.background", self.background, 0.1),
        ] {
            if !(lo.is_finite() && hi.is_finite() && lo > 0.0 && lo <= hi && hi <= max) {
                return Err(invalid(
                    path,
                    format!("[{lo}, {hi}] is not a range within (0, {max}]"),
                    "give [low, high] with 0 < low <= high",
                ));
            }
        }
        let (a, b) = self.process_noise;
        if !(a.is_finite() && b.is_finite() && (0.0..=1.0).contains(&a) && (0.0..=1.0).contains(&b))
        {
            return Err(invalid(
                "ed.process_noise",
                format!("[{a}, {b}] must lie in [0, 1]"),
                "weekly sd of log(kappa) and log(b)",
            ));
        }
        Ok(())
    }
}

/// Rows per member of this configuration's twins.
pub fn state_dim(cfg: &TwinConfig) -> usize {
    if cfg.ed.enabled {
        ED_STATE_DIM
    } else {
        STATE_DIM
    }
}

/// The proportion of a member whose model rows have just advanced over a week with `ihr`
/// (the ihr of that week, before its random-walk step): onsets = H / ihr.
fn proportion(x: &[f64], ihr: f64, population: f64) -> f64 {
    let infections = x[H] / ihr.max(f64::MIN_POSITIVE) / population;
    (x[ED_BACKGROUND] + x[ED_RATIO] * infections).clamp(0.0, 1.0)
}

/// Keeps the stream's rows in their domain.
pub(crate) fn constrain(x: &mut [f64]) {
    let clamp = |v: f64, (lo, hi): (f64, f64)| if v.is_nan() { lo } else { v.clamp(lo, hi) };
    x[ED_P] = if x[ED_P].is_nan() {
        0.0
    } else {
        x[ED_P].clamp(0.0, 1.0)
    };
    x[ED_RATIO] = clamp(x[ED_RATIO], RATIO_BOUNDS);
    x[ED_BACKGROUND] = clamp(x[ED_BACKGROUND], BACKGROUND_BOUNDS);
}

fn check_rows(ens: &DMatrix<f64>) -> Result<()> {
    if ens.nrows() != ED_STATE_DIM {
        return Err(EnkfError::shape(
            "ensemble",
            format!(
                "a twin with the ED stream has {ED_STATE_DIM} rows per member, got {}",
                ens.nrows()
            ),
            "create the prior with ed::prior (checkpoints of 7 rows are of a twin without it)",
        ));
    }
    Ok(())
}

/// The prior ensemble of a twin with the stream: rows 0..7 are exactly `model.prior`'s, the
/// stream's rows are drawn from their own seed.
pub fn prior(model: &LocationModel<'_>, members: usize) -> DMatrix<f64> {
    let core = model.prior(members);
    let ed = &model.cfg.ed;
    let mut rng = seeded(mix(model.seed ^ PURPOSE_ED_PRIOR));
    let mut ens = DMatrix::zeros(ED_STATE_DIM, members);
    let log_uniform = |(lo, hi): (f64, f64), u: f64| (lo.ln() + (hi.ln() - lo.ln()) * u).exp();
    for j in 0..members {
        let mut col = [0.0; ED_STATE_DIM];
        col[..STATE_DIM].copy_from_slice(core.column(j).as_slice());
        col[ED_RATIO] = col[IHR] * log_uniform(ed.ratio_per_ihr, uniform(&mut rng));
        col[ED_BACKGROUND] = log_uniform(ed.background, uniform(&mut rng));
        col[ED_P] = proportion(&col, col[IHR], model.population);
        constrain(&mut col);
        ens.column_mut(j).copy_from_slice(&col);
    }
    ens
}

/// Forecast step of a twin with the stream: the model's rows advance exactly as
/// `LocationModel::step_scaled` advances them, then each member's proportion of the week is
/// computed and kappa and b take their random-walk step (own seed, so that the model's draws
/// are those of a twin without the stream).
pub fn step(model: &LocationModel<'_>, ens: &mut DMatrix<f64>, week_end: i32, noise_scale: f64) {
    let members = ens.ncols();
    let ihr: Vec<f64> = ens.row(IHR).iter().copied().collect();
    let mut core = ens.rows(0, STATE_DIM).clone_owned();
    model.step_scaled(&mut core, week_end, noise_scale);
    ens.rows_mut(0, STATE_DIM).copy_from(&core);
    let (sk, sb) = model.cfg.ed.process_noise;
    let mut rng = seeded(week_seed(model.seed, week_end, PURPOSE_ED_PROCESS));
    for (j, ihr) in ihr.iter().enumerate().take(members) {
        let mut col = ens.column_mut(j);
        let x = col.as_mut_slice();
        x[ED_P] = proportion(x, *ihr, model.population);
        if sk > 0.0 {
            x[ED_RATIO] *= (sk * noise_scale * normal(&mut rng)).exp();
        }
        if sb > 0.0 {
            x[ED_BACKGROUND] *= (sb * noise_scale * normal(&mut rng)).exp();
        }
        constrain(x);
    }
}

/// One week's observations of a twin with the stream, jointly: the admissions count and/or the
/// ED proportion (None = not reported), each with the mean of its last weeks for its error
/// variance. A week with neither is a no-op.
pub fn update(
    model: &LocationModel<'_>,
    ens: &mut DMatrix<f64>,
    admissions: Option<(f64, f64)>,
    ed: Option<(f64, f64)>,
    week_end: i32,
) -> Result<()> {
    check_rows(ens)?;
    let mut obs = Vec::with_capacity(2);
    if let Some((y, mean)) = admissions {
        obs.push((H, y, model.cfg.observation_error.variance(mean)));
    }
    if let Some((p, mean)) = ed {
        if !(p.is_finite() && (0.0..=1.0).contains(&p)) {
            return Err(EnkfError::invalid(
                "ed_value",
                format!("an ED-visit proportion must lie in [0, 1], got {p}"),
                "the weekly share of ED visits due to influenza, e.g. 0.023 for 2.3%",
            ));
        }
        obs.push((ED_P, p, model.cfg.ed.observation_error.variance(mean)));
    }
    if obs.is_empty() {
        return Ok(());
    }
    model.assimilate_rows(ens, &obs, week_end)
}

/// Predictive draws of one week's proportion from a member's state.
pub(crate) fn draw(cfg: &EdConfig, p: f64, scale: f64, rng: &mut crate::rng::Rng) -> f64 {
    let sd = scale * cfg.observation_error.variance(p).sqrt();
    (p + sd * normal(rng)).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::twin::location::LocationModel;

    fn ed_cfg() -> TwinConfig {
        let mut cfg = TwinConfig::default();
        cfg.ed.enabled = true;
        cfg
    }

    #[test]
    fn the_models_rows_are_those_of_a_twin_without_the_stream() {
        let plain = TwinConfig::default();
        let cfg = ed_cfg();
        let a = LocationModel::new(&plain, "06", 3.9e7);
        let b = LocationModel::new(&cfg, "06", 3.9e7);
        let mut x = a.prior(30);
        let mut y = prior(&b, 30);
        assert_eq!(y.nrows(), ED_STATE_DIM);
        assert_eq!(y.rows(0, STATE_DIM).clone_owned(), x);
        for k in 0..6 {
            let week = 7 * (1000 + k);
            a.step(&mut x, week);
            step(&b, &mut y, week, 1.0);
            assert_eq!(y.rows(0, STATE_DIM).clone_owned(), x, "week {k}");
        }
        for col in y.column_iter() {
            assert!((0.0..=1.0).contains(&col[ED_P]));
            assert!(col[ED_RATIO] > 0.0 && col[ED_BACKGROUND] > 0.0);
        }
    }

    #[test]
    fn the_operator_is_background_plus_kappa_times_infections() {
        let mut x = [0.0; ED_STATE_DIM];
        x[H] = 200.0;
        x[ED_RATIO] = 3.0;
        x[ED_BACKGROUND] = 0.002;
        // 200 admissions at ihr 0.01: 20,000 infections in 1e6 people = 0.02 per capita.
        let p = proportion(&x, 0.01, 1e6);
        assert!((p - (0.002 + 3.0 * 0.02)).abs() < 1e-15);
    }

    #[test]
    fn an_ed_observation_pulls_the_proportion_and_the_admissions_follow_the_infections() {
        let cfg = ed_cfg();
        let m = LocationModel::new(&cfg, "06", 3.9e7);
        let mut ens = prior(&m, 100);
        for k in 0..8 {
            step(&m, &mut ens, 7 * (1100 + k), 1.0);
        }
        let mean = |e: &DMatrix<f64>, r: usize| e.row(r).mean();
        let p0 = mean(&ens, ED_P);
        let target = 4.0 * p0;
        let mut upd = ens.clone();
        update(&m, &mut upd, None, Some((target, target)), 7 * 1107).unwrap();
        let p1 = mean(&upd, ED_P);
        assert!(p1 > p0 && p1 < target, "{p0} -> {p1} (observed {target})");
        // More infections explain it, so the members' admissions rise with it.
        assert!(mean(&upd, H) > mean(&ens, H));
        // Out-of-range proportions and 7-row ensembles are refused.
        let err = update(&m, &mut upd, None, Some((1.5, 1.0)), 7 * 1107).unwrap_err();
        assert_eq!(err.argument(), Some("ed_value"));
        let mut seven = m.prior(10);
        let err = update(&m, &mut seven, Some((10.0, 10.0)), None, 7).unwrap_err();
        assert_eq!(err.argument(), Some("ensemble"));
    }

    #[test]
    fn the_config_is_validated() {
        assert!(EdConfig::default().validate().is_ok());
        let bad = [
            EdConfig {
                background: (0.2, 0.1),
                ..EdConfig::default()
            },
            EdConfig {
                observation_error: ObservationError {
                    floor: 0.0,
                    divisor: 20.0,
                    window: 3,
                },
                ..EdConfig::default()
            },
            EdConfig {
                process_noise: (2.0, 0.0),
                ..EdConfig::default()
            },
        ];
        for c in bad {
            assert!(c.validate().is_err(), "{c:?}");
        }
    }
}
