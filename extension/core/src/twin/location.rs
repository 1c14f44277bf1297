//! One location's twin: its prior ensemble, the weekly forecast-analysis cycle, and the
//! predictive distribution of future weekly admissions. Every random draw is seeded from the
//! twin's seed, the location and the week, so re-running any week reproduces it exactly.

use nalgebra::DMatrix;

use super::config::{ProcessNoise, TwinConfig};
use super::ed;
use crate::dates::day_of_year;
use crate::error::Result;
use crate::filter::{analyze, Observations};
use crate::model::seirh::{self, Bounds, Dynamics, BETA, E, H, I, IHR, R, S, STATE_DIM};
use crate::rng::{normal, seeded, uniform};
use crate::scoring::quantiles_unsorted;

// The seeds of the twin's random draws (twin/streams.rs), here where they are drawn.
pub use super::streams::PURPOSE_NOWCAST;
pub use super::streams::{location_seed, mix, week_seed};
use super::streams::{PURPOSE_FILTER, PURPOSE_FORECAST, PURPOSE_PROCESS};

/// Draws of the predictive distribution of every week from the last analysed one on, kept per
/// trajectory: `admissions[w][j * draws + d]` is the week ending `last_week_end + 7 w` in
/// member j's d-th draw (w = 0: the nowcast of the last analysed week).
#[derive(Debug, Clone)]
pub struct Pool {
    pub last_week_end: i32,
    pub members: usize,
    pub draws: usize,
    pub admissions: Vec<Vec<f64>>,
    /// The ED-visit proportion, same layout, for a twin with the ED stream.
    pub ed: Option<Vec<Vec<f64>>>,
}

pub struct LocationModel<'a> {
    pub cfg: &'a TwinConfig,
    pub population: f64,
    pub seed: u64,
    dynamics: Dynamics,
    bounds: Bounds,
}

impl<'a> LocationModel<'a> {
    pub fn new(cfg: &'a TwinConfig, location: &str, population: f64) -> Self {
        LocationModel {
            cfg,
            population,
            seed: location_seed(cfg.seed, location),
            dynamics: cfg.dynamics(),
            bounds: cfg.bounds(),
        }
    }

    /// The prior ensemble (STATE_DIM x members) at the end of the week before the first one.
    pub fn prior(&self, members: usize) -> DMatrix<f64> {
        let p = &self.cfg.priors;
        let pop = self.population;
        let mut rng = seeded(self.seed);
        let mut uniform = || uniform(&mut rng);
        let mut ens = DMatrix::zeros(STATE_DIM, members);
        for j in 0..members {
            let s = p.susceptible.0 + (p.susceptible.1 - p.susceptible.0) * uniform();
            let i = log_uniform(p.infectious, uniform());
            let r0 = p.r0.0 + (p.r0.1 - p.r0.0) * uniform();
            let ihr = log_uniform(p.ihr, uniform());
            let mut col = [0.0; STATE_DIM];
            col[S] = s * pop;
            col[E] = i * pop;
            col[I] = i * pop;
            col[R] = (1.0 - s - 2.0 * i).max(0.0) * pop;
            col[BETA] = r0 / self.dynamics.infectious_days;
            col[IHR] = ihr;
            col[H] = ihr * i * pop * 7.0 / self.dynamics.infectious_days;
            seirh::constrain(&mut col, pop, &self.bounds);
            ens.column_mut(j).copy_from_slice(&col);
        }
        ens
    }

    /// Forecast step: every member advances through the week ending on `week_end`, and its
    /// parameters take a step of their random walk.
    pub fn step(&self, ens: &mut DMatrix<f64>, week_end: i32) {
        self.step_scaled(ens, week_end, 1.0);
    }

    /// As `step`, with the random walk's standard deviations multiplied by `noise_scale`.
    pub fn step_scaled(&self, ens: &mut DMatrix<f64>, week_end: i32, noise_scale: f64) {
        let forcing = self.dynamics.forcing(day_of_year(week_end - 6), 7);
        let noise = ProcessNoise {
            beta: self.cfg.process_noise.beta * noise_scale,
            ihr: self.cfg.process_noise.ihr * noise_scale,
        };
        let mut rng = seeded(week_seed(self.seed, week_end, PURPOSE_PROCESS));
        self.dynamics
            .advance_members(ens.as_mut_slice(), self.population, &forcing);
        for mut col in ens.column_iter_mut() {
            let x = col.as_mut_slice();
            if noise.beta > 0.0 {
                x[BETA] *= (noise.beta * normal(&mut rng)).exp();
            }
            if noise.ihr > 0.0 {
                x[IHR] *= (noise.ihr * normal(&mut rng)).exp();
            }
            seirh::constrain(x, self.population, &self.bounds);
        }
    }

    /// Analysis step with the week's observed count; `recent_mean` is the mean of the last
    /// counts (for the observation error variance). Constraints hold afterwards.
    pub fn update(
        &self,
        ens: &mut DMatrix<f64>,
        observed: f64,
        recent_mean: f64,
        week_end: i32,
    ) -> Result<()> {
        let variance = self.cfg.observation_error.variance(recent_mean);
        self.assimilate_rows(ens, &[(H, observed, variance)], week_end)
    }

    /// Analysis step with observations `(row, value, error variance)` of state rows (the
    /// admissions `H`, and for a twin with the ED stream its proportion `ed::ED_P`), in the
    /// configured space. Rows beyond the model's (the ED stream's) are transformed and
    /// constrained with it. Constraints hold afterwards.
    pub(crate) fn assimilate_rows(
        &self,
        ens: &mut DMatrix<f64>,
        observations: &[(usize, f64, f64)],
        week_end: i32,
    ) -> Result<()> {
        let opts = self
            .cfg
            .filter_options(week_seed(self.seed, week_end, PURPOSE_FILTER));
        let log_space = self.cfg.filter.space == super::config::UpdateSpace::Log;
        if log_space {
            to_log(ens);
        }
        let mut values = Vec::with_capacity(observations.len());
        let mut variances = Vec::with_capacity(observations.len());
        let mut index = Vec::with_capacity(observations.len());
        for &(row, observed, variance) in observations {
            let (value, variance) = match (log_space, row) {
                // Delta method: var(log(1 + y)) = var(y) / (1 + y)^2.
                (true, H) => ((1.0 + observed).ln(), variance / (1.0 + observed).powi(2)),
                (true, _) => {
                    let y = observed + ed::P_OFFSET;
                    (y.ln(), variance / (y * y))
                }
                (false, _) => (observed, variance),
            };
            values.push(value);
            variances.push(variance);
            index.push(row);
        }
        let obs = Observations {
            values: &values,
            variance: &variances,
            index: &index,
        };
        // Susceptibles left to the dynamics: otherwise the filter explains a turn in the counts
        // (a holiday peak) by depleting S, and the forecasts after it crash (2023-24).
        let susceptible: Option<Vec<f64>> =
            (!self.cfg.filter.update_susceptible).then(|| ens.row(S).iter().copied().collect());
        let result = analyze(ens, &obs, &opts, &|| {});
        if let Some(row) = susceptible {
            for (j, v) in row.into_iter().enumerate() {
                ens[(S, j)] = v;
            }
        }
        if log_space {
            from_log(ens);
        }
        result?;
        let extended = ens.nrows() > STATE_DIM;
        for mut col in ens.column_iter_mut() {
            seirh::constrain(col.as_mut_slice(), self.population, &self.bounds);
            if extended {
                ed::constrain(col.as_mut_slice());
            }
        }
        Ok(())
    }

    /// One forecast week of any twin (`step_scaled`; with the ED stream's rows, `ed::step`).
    pub fn step_any(&self, ens: &mut DMatrix<f64>, week_end: i32, noise_scale: f64) {
        if ens.nrows() > STATE_DIM {
            ed::step(self, ens, week_end, noise_scale);
        } else {
            self.step_scaled(ens, week_end, noise_scale);
        }
    }

    /// Pulls each member's effective reproduction number towards 1 before the week ending
    /// `week_end`: log(R_eff) becomes `damping` * log(R_eff), through beta. Growth and decline
    /// both slow, as a damped trend's do: a member's growth rate persisting for weeks is what
    /// made the forecasts overshoot at a peak (2022-23) and crash after one (2023-24).
    fn damp_growth(&self, ens: &mut DMatrix<f64>, week_end: i32, damping: f64) {
        let d = &self.dynamics;
        let forcing = d.seasonal_factor(day_of_year(week_end - 3));
        for mut col in ens.column_iter_mut() {
            let x = col.as_mut_slice();
            let reff = x[BETA] * forcing * d.infectious_days * x[S] / self.population;
            if reff > 0.0 && reff.is_finite() {
                x[BETA] *= reff.powf(damping - 1.0);
                seirh::constrain(x, self.population, &self.bounds);
            }
        }
    }

    /// Quantiles of the weekly admissions for each of `horizons` weeks after `last_week_end`
    /// (horizon 0 = the week ending last_week_end + 7): members propagated by the model, each
    /// widened by draws of the observation error, truncated at 0.
    pub fn forecast(
        &self,
        ens: &DMatrix<f64>,
        last_week_end: i32,
        horizons: usize,
        levels: &[f64],
    ) -> Vec<Vec<f64>> {
        let draws = self.cfg.forecast.draws_per_member as usize;
        let mut rng = seeded(week_seed(self.seed, last_week_end, PURPOSE_FORECAST));
        let mut x = ens.clone();
        let mut out = Vec::with_capacity(horizons);
        let mut samples = Vec::with_capacity(x.ncols() * draws);
        let damping = self.cfg.forecast.growth_damping;
        for h in 0..horizons {
            let week_end = last_week_end + 7 * (h as i32 + 1);
            if damping < 1.0 {
                self.damp_growth(&mut x, week_end, damping);
            }
            self.step_any(&mut x, week_end, self.cfg.forecast.process_noise_scale);
            samples.clear();
            for col in x.column_iter() {
                let mean = col[H];
                let sd = self.cfg.forecast.noise_scale
                    * self.cfg.observation_error.variance(mean).sqrt();
                for _ in 0..draws {
                    samples.push((mean + sd * normal(&mut rng)).max(0.0));
                }
            }
            out.push(quantiles_unsorted(&mut samples, levels));
        }
        out
    }

    /// The predictive distribution week by week, kept per trajectory (for twin/targets.rs).
    /// Week 0 is `last_week_end` itself, the nowcast: each member's analysed admissions widened
    /// by draws of the observation error (its own seed). Weeks 1..=`weeks` are forecast exactly
    /// as `forecast` does, the same draws in the same order, so that week k's quantiles are
    /// `forecast`'s at horizon k - 1 bit for bit, except that the growth damping acts in the
    /// first `damped_weeks` weeks only. A twin with the ED stream also gets its proportion's.
    pub fn pool(
        &self,
        ens: &DMatrix<f64>,
        last_week_end: i32,
        weeks: usize,
        damped_weeks: usize,
    ) -> Pool {
        let draws = self.cfg.forecast.draws_per_member as usize;
        let fc = &self.cfg.forecast;
        let extended = ens.nrows() > STATE_DIM;
        let n = ens.ncols() * draws;
        let mut admissions = Vec::with_capacity(weeks + 1);
        let mut ed_values = extended.then(|| Vec::with_capacity(weeks + 1));
        let widen = |x: &DMatrix<f64>, rng: &mut crate::rng::Rng| -> Vec<f64> {
            let mut out = Vec::with_capacity(n);
            for col in x.column_iter() {
                let mean = col[H];
                let sd = fc.noise_scale * self.cfg.observation_error.variance(mean).sqrt();
                for _ in 0..draws {
                    out.push((mean + sd * normal(rng)).max(0.0));
                }
            }
            out
        };
        let widen_ed = |x: &DMatrix<f64>, week: i32| -> Vec<f64> {
            let mut rng = seeded(week_seed(self.seed, week, ed::PURPOSE_ED_NOISE));
            let mut out = Vec::with_capacity(n);
            for col in x.column_iter() {
                for _ in 0..draws {
                    out.push(ed::draw(
                        &self.cfg.ed,
                        col[ed::ED_P],
                        fc.noise_scale,
                        &mut rng,
                    ));
                }
            }
            out
        };
        let mut rng = seeded(week_seed(self.seed, last_week_end, PURPOSE_NOWCAST));
        admissions.push(widen(ens, &mut rng));
        if let Some(e) = ed_values.as_mut() {
            e.push(widen_ed(ens, last_week_end));
        }
        let mut rng = seeded(week_seed(self.seed, last_week_end, PURPOSE_FORECAST));
        let mut x = ens.clone();
        let damping = fc.growth_damping;
        for h in 0..weeks {
            let week_end = last_week_end + 7 * (h as i32 + 1);
            if damping < 1.0 && h < damped_weeks {
                self.damp_growth(&mut x, week_end, damping);
            }
            self.step_any(&mut x, week_end, fc.process_noise_scale);
            admissions.push(widen(&x, &mut rng));
            if let Some(e) = ed_values.as_mut() {
                e.push(widen_ed(&x, week_end));
            }
        }
        Pool {
            last_week_end,
            members: ens.ncols(),
            draws,
            admissions,
            ed: ed_values,
        }
    }
}

/// Counts to log(1 + count), parameters to log(parameter); the ED stream's proportion (rows
/// beyond the model's) to log(p + P_OFFSET), its parameters to their logs.
fn to_log(ens: &mut DMatrix<f64>) {
    let extended = ens.nrows() > STATE_DIM;
    for mut col in ens.column_iter_mut() {
        for r in S..=H {
            col[r] = col[r].max(0.0).ln_1p();
        }
        for r in [BETA, IHR] {
            col[r] = col[r].max(f64::MIN_POSITIVE).ln();
        }
        if extended {
            col[ed::ED_P] = (col[ed::ED_P].max(0.0) + ed::P_OFFSET).ln();
            for r in [ed::ED_RATIO, ed::ED_BACKGROUND] {
                col[r] = col[r].max(f64::MIN_POSITIVE).ln();
            }
        }
    }
}

fn from_log(ens: &mut DMatrix<f64>) {
    let extended = ens.nrows() > STATE_DIM;
    for mut col in ens.column_iter_mut() {
        for r in S..=H {
            col[r] = col[r].exp_m1();
        }
        for r in [BETA, IHR] {
            col[r] = col[r].exp();
        }
        if extended {
            col[ed::ED_P] = col[ed::ED_P].exp() - ed::P_OFFSET;
            for r in [ed::ED_RATIO, ed::ED_BACKGROUND] {
                col[r] = col[r].exp();
            }
        }
    }
}

fn log_uniform((lo, hi): (f64, f64), u: f64) -> f64 {
    (lo.ln() + (hi.ln() - lo.ln()) * u).exp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prior_respects_constraints_and_is_reproducible() {
        let cfg = TwinConfig::default();
        let m = LocationModel::new(&cfg, "06", 3.9e7);
        let a = m.prior(50);
        assert_eq!(a, m.prior(50));
        for col in a.column_iter() {
            let total: f64 = col.rows(S, 4).sum();
            assert!((total - 3.9e7).abs() < 1.0);
            assert!(col.iter().all(|v| *v >= 0.0 && v.is_finite()));
        }
        let other = LocationModel::new(&cfg, "48", 3.9e7).prior(50);
        assert_ne!(a, other, "locations get different draws");
    }

    #[test]
    fn the_pools_weeks_have_the_forecasts_quantiles_bit_for_bit() {
        let cfg = TwinConfig::default();
        let m = LocationModel::new(&cfg, "06", 3.9e7);
        let mut ens = m.prior(40);
        for k in 0..10 {
            m.step(&mut ens, 7 * (1000 + k));
        }
        let last = 7 * 1009;
        let levels = crate::scoring::FLUSIGHT_LEVELS;
        let want = m.forecast(&ens, last, 4, &levels);
        let pool = m.pool(&ens, last, 6, 4);
        assert_eq!(pool.admissions.len(), 7);
        assert_eq!(pool.admissions[0].len(), 400);
        for (h, want) in want.iter().enumerate() {
            let mut s = pool.admissions[h + 1].clone();
            assert_eq!(quantiles_unsorted(&mut s, &levels), *want, "horizon {h}");
        }
        // The nowcast is of the analysed week itself: centred on the members' H.
        let mean_h = ens.row(H).mean();
        let nowcast: f64 = pool.admissions[0].iter().sum::<f64>() / 400.0;
        assert!(
            (nowcast - mean_h).abs() < 0.2 * mean_h + 10.0,
            "{nowcast} vs {mean_h}"
        );
        // Reproducible.
        assert_eq!(m.pool(&ens, last, 6, 4).admissions, pool.admissions);
    }

    #[test]
    fn growth_damping_pulls_reff_towards_one() {
        let cfg = TwinConfig::default();
        let m = LocationModel::new(&cfg, "06", 3.9e7);
        let ens = m.prior(20);
        let week = 7 * 1000;
        let reff = |e: &DMatrix<f64>| -> Vec<f64> {
            let f = m.dynamics.seasonal_factor(day_of_year(week - 3));
            e.column_iter()
                .map(|c| c[BETA] * f * m.dynamics.infectious_days * c[S] / m.population)
                .collect()
        };
        let before = reff(&ens);
        let mut held = ens.clone();
        m.damp_growth(&mut held, week, 0.0);
        let mut half = ens.clone();
        m.damp_growth(&mut half, week, 0.5);
        for ((b, h), z) in before.iter().zip(reff(&half)).zip(reff(&held)) {
            // Within the beta bounds, log(R_eff) is exactly scaled.
            let clamped = |e: &DMatrix<f64>| {
                e.row(BETA)
                    .iter()
                    .any(|v| *v <= cfg.bounds.beta.0 || *v >= cfg.bounds.beta.1)
            };
            if !clamped(&held) {
                assert!((z - 1.0).abs() < 1e-9, "{z}");
            }
            if !clamped(&half) {
                assert!((h.ln() - 0.5 * b.ln()).abs() < 1e-9);
            }
        }
        let mut same = ens.clone();
        m.damp_growth(&mut same, week, 1.0);
        assert_eq!(same, ens);
    }
}
