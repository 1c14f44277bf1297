//! The `seirh` epidemic model: per location S, E, I, R plus the week's new hospital admissions,
//! with the transmission rate and the infection-to-admission fraction carried in the state so
//! that the filter estimates them jointly (augmented state).
//!
//! ```text
//! lambda(t) = beta * f(t) * I / P + iota          force of infection (iota: importation/seeding)
//! f(t)      = 1 + A cos(2 pi (day_of_year - peak) / 365.25)   seasonal forcing
//! dS/dt = -lambda S + omega R      dE/dt = lambda S - sigma E
//! dI/dt = sigma E - gamma I        dR/dt = gamma I - omega R
//! H_week = ihr * (new infectious over the week)
//! ```
//!
//! Waning immunity (omega) refills the susceptibles and the seeding term restarts transmission,
//! so the model runs through many seasons without a reset. Locations are independent patches:
//! each one's ensemble is assimilated on its own.

use super::rk4_step_fixed;

/// Rows of a member's state vector.
pub const S: usize = 0;
pub const E: usize = 1;
pub const I: usize = 2;
pub const R: usize = 3;
/// New hospital admissions during the last week (the observed quantity).
pub const H: usize = 4;
/// Transmission rate per day (before seasonal forcing).
pub const BETA: usize = 5;
/// Fraction of new infections admitted to hospital (and reported).
pub const IHR: usize = 6;
pub const STATE_DIM: usize = 7;
pub const STATE_NAMES: [&str; STATE_DIM] = ["S", "E", "I", "R", "H", "beta", "ihr"];

/// Fixed (not estimated) rates of the model.
#[derive(Debug, Clone, PartialEq)]
pub struct Dynamics {
    pub latent_days: f64,
    pub infectious_days: f64,
    pub immunity_days: f64,
    /// Infections per person per day from outside (seeding), keeps every location able to start
    /// an epidemic after a quiet season.
    pub importation: f64,
    pub seasonal_amplitude: f64,
    /// Day of the year (1..366) when transmission peaks.
    pub seasonal_peak_day: f64,
    /// Integration steps per day (RK4).
    pub steps_per_day: usize,
}

impl Default for Dynamics {
    fn default() -> Self {
        Dynamics {
            latent_days: 2.0,
            infectious_days: 3.0,
            immunity_days: 540.0,
            importation: 2e-7,
            // 0.3 chosen by the twin's leave-one-season-out tuning over 0, 0.15 and 0.3
            // (docs/backtest.md); 0.15 before.
            seasonal_amplitude: 0.3,
            seasonal_peak_day: 350.0,
            steps_per_day: 1,
        }
    }
}

impl Dynamics {
    pub fn seasonal_factor(&self, day_of_year: f64) -> f64 {
        1.0 + self.seasonal_amplitude
            * (2.0 * std::f64::consts::PI * (day_of_year - self.seasonal_peak_day) / 365.25).cos()
    }

    /// The seasonal forcing at the midpoint of each integration step of the `days` days from
    /// `day_of_year`: the same for every member, so computed once per week.
    pub fn forcing(&self, day_of_year: f64, days: usize) -> Vec<f64> {
        let dt = 1.0 / self.steps_per_day as f64;
        (0..days * self.steps_per_day)
            .map(|k| self.seasonal_factor(day_of_year + (k as f64 + 0.5) * dt))
            .collect()
    }

    /// Advances one member `days` days from `day_of_year` and sets H to the admissions over
    /// that span.
    pub fn advance(&self, x: &mut [f64], population: f64, day_of_year: f64, days: usize) {
        let forcing = self.forcing(day_of_year, days);
        self.advance_with(x, population, &forcing);
    }

    /// As `advance`, with the forcing of each step given (see `forcing`).
    pub fn advance_with(&self, x: &mut [f64], population: f64, forcing: &[f64]) {
        self.advance_members(x, population, forcing);
    }

    /// Advances every member of `members` (column-major, STATE_DIM values per member) over the
    /// steps of `forcing`, and sets each one's H to its admissions over that span.
    ///
    /// Members go through the integrator LANES at a time, each variable of the chunk held
    /// contiguously so that the arithmetic vectorises; every lane does exactly the operations of
    /// a one-member integration, in the same order, so results do not depend on the chunking.
    pub fn advance_members(&self, members: &mut [f64], population: f64, forcing: &[f64]) {
        let sigma = 1.0 / self.latent_days;
        let gamma = 1.0 / self.infectious_days;
        let omega = if self.immunity_days.is_finite() && self.immunity_days > 0.0 {
            1.0 / self.immunity_days
        } else {
            0.0
        };
        let inv_pop = 1.0 / population;
        let dt = 1.0 / self.steps_per_day as f64;
        for chunk in members.chunks_mut(STATE_DIM * LANES) {
            let count = chunk.len() / STATE_DIM;
            // y[v * LANES + l] = variable v of lane l: S, E, I, R, cumulative new infectious.
            // Unused lanes stay 0 and are never read back.
            let mut y = [0.0; 5 * LANES];
            let mut beta0 = [0.0; LANES];
            for (l, x) in chunk.chunks_exact(STATE_DIM).enumerate() {
                for v in 0..4 {
                    y[v * LANES + l] = x[S + v];
                }
                beta0[l] = x[BETA];
            }
            for &f in forcing {
                let beta: [f64; LANES] = std::array::from_fn(|l| beta0[l] * f);
                rk4_step_fixed(&mut y, dt, |s, out| {
                    for l in 0..LANES {
                        let lambda =
                            beta[l] * s[2 * LANES + l].max(0.0) * inv_pop + self.importation;
                        let infection = lambda * s[l].max(0.0);
                        let onset = sigma * s[LANES + l].max(0.0);
                        let recovery = gamma * s[2 * LANES + l].max(0.0);
                        let waning = omega * s[3 * LANES + l].max(0.0);
                        out[l] = -infection + waning;
                        out[LANES + l] = infection - onset;
                        out[2 * LANES + l] = onset - recovery;
                        out[3 * LANES + l] = recovery - waning;
                        out[4 * LANES + l] = onset;
                    }
                });
            }
            for (l, x) in chunk.chunks_exact_mut(STATE_DIM).enumerate().take(count) {
                for v in 0..4 {
                    x[S + v] = y[v * LANES + l];
                }
                x[H] = x[IHR] * y[4 * LANES + l].max(0.0);
            }
        }
    }
}

/// Members integrated together (see `Dynamics::advance_members`).
const LANES: usize = 8;

/// Bounds that hold after every update.
#[derive(Debug, Clone, PartialEq)]
pub struct Bounds {
    pub beta: (f64, f64),
    pub ihr: (f64, f64),
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            beta: (0.05, 2.0),
            ihr: (1e-5, 0.1),
        }
    }
}

/// Puts a member back into the physical domain after an update: compartments non-negative and
/// summing to the population, admissions non-negative, parameters inside their bounds.
pub fn constrain(x: &mut [f64], population: f64, bounds: &Bounds) {
    let mut total = 0.0;
    for v in &mut x[S..=R] {
        if !v.is_finite() || *v < 0.0 {
            *v = 0.0;
        }
        total += *v;
    }
    if total > 0.0 {
        let scale = population / total;
        for v in &mut x[S..=R] {
            *v *= scale;
        }
    } else {
        x[S] = population;
    }
    if !x[H].is_finite() || x[H] < 0.0 {
        x[H] = 0.0;
    }
    x[BETA] = clamp(x[BETA], bounds.beta);
    x[IHR] = clamp(x[IHR], bounds.ihr);
}

fn clamp(v: f64, (lo, hi): (f64, f64)) -> f64 {
    if v.is_nan() {
        0.5 * (lo + hi)
    } else {
        v.clamp(lo, hi)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(pop: f64, beta: f64, ihr: f64) -> Vec<f64> {
        let i0 = 1e-5 * pop;
        vec![0.7 * pop, i0, i0, 0.3 * pop - 2.0 * i0, 0.0, beta, ihr]
    }

    /// One member at a time, the plain way: what every lane of `advance_members` must equal.
    fn advance_one(d: &Dynamics, x: &mut [f64], population: f64, forcing: &[f64]) {
        let (sigma, gamma, omega) = (
            1.0 / d.latent_days,
            1.0 / d.infectious_days,
            1.0 / d.immunity_days,
        );
        let inv_pop = 1.0 / population;
        let mut y = [x[S], x[E], x[I], x[R], 0.0];
        for &f in forcing {
            let beta = x[BETA] * f;
            rk4_step_fixed(&mut y, 1.0 / d.steps_per_day as f64, |s, out| {
                let lambda = beta * s[2].max(0.0) * inv_pop + d.importation;
                let infection = lambda * s[0].max(0.0);
                let onset = sigma * s[1].max(0.0);
                let recovery = gamma * s[2].max(0.0);
                let waning = omega * s[3].max(0.0);
                out[0] = -infection + waning;
                out[1] = infection - onset;
                out[2] = onset - recovery;
                out[3] = recovery - waning;
                out[4] = onset;
            });
        }
        x[S..=R].copy_from_slice(&y[..4]);
        x[H] = x[IHR] * y[4].max(0.0);
    }

    #[test]
    fn members_in_lanes_equal_members_one_at_a_time_bit_for_bit() {
        let d = Dynamics {
            steps_per_day: 2,
            ..Dynamics::default()
        };
        let pop = 2.5e5;
        let forcing = d.forcing(300.0, 7);
        // Fewer, as many as and more members than a chunk of lanes; one with a negative
        // compartment, which the rates clamp at 0.
        for count in [1usize, 7, 8, 9, 20] {
            let mut all: Vec<f64> = (0..count)
                .flat_map(|j| member(pop, 0.2 + 0.05 * j as f64, 0.01 + 0.001 * j as f64))
                .collect();
            all[STATE_DIM * (count - 1) + E] = -3.0;
            let mut want = all.clone();
            d.advance_members(&mut all, pop, &forcing);
            for x in want.chunks_exact_mut(STATE_DIM) {
                advance_one(&d, x, pop, &forcing);
            }
            assert_eq!(all, want, "{count} members");
        }
    }

    #[test]
    fn population_is_conserved() {
        let d = Dynamics::default();
        let pop = 1e6;
        let mut x = member(pop, 0.6, 0.01);
        for week in 0..200 {
            d.advance(&mut x, pop, (week * 7 % 365) as f64, 7);
            let total: f64 = x[S..=R].iter().sum();
            assert!((total - pop).abs() < 1e-6 * pop, "week {week}: {total}");
            assert!(x[S..=H].iter().all(|v| *v >= -1e-9));
        }
    }

    #[test]
    fn epidemic_rises_and_falls_and_recurs() {
        let d = Dynamics::default();
        let pop = 5e6;
        let mut x = member(pop, 0.55, 0.005);
        let mut weekly = Vec::new();
        for week in 0..260 {
            d.advance(&mut x, pop, ((274 + week * 7) % 365) as f64, 7);
            weekly.push(x[H]);
        }
        // Several seasons with a clear peak each: the series is far from flat and recurs.
        let first: f64 = weekly[..52].iter().cloned().fold(0.0, f64::max);
        let late: f64 = weekly[156..].iter().cloned().fold(0.0, f64::max);
        assert!(first > 100.0, "first season peak {first}");
        assert!(late > 10.0, "later seasons die out: {late}");
    }

    #[test]
    fn no_transmission_without_infectious_or_importation() {
        let d = Dynamics {
            importation: 0.0,
            ..Dynamics::default()
        };
        let pop = 1e5;
        let mut x = vec![pop, 0.0, 0.0, 0.0, 0.0, 0.8, 0.01];
        d.advance(&mut x, pop, 10.0, 7);
        assert_eq!(x[H], 0.0);
        assert_eq!(x[S], pop);
    }

    #[test]
    fn constrain_restores_the_domain() {
        let b = Bounds::default();
        let mut x = vec![-5.0, 10.0, 20.0, 70.0, -3.0, 9.0, -1.0];
        constrain(&mut x, 200.0, &b);
        assert_eq!(x[S], 0.0);
        assert!((x[S..=R].iter().sum::<f64>() - 200.0).abs() < 1e-12);
        assert_eq!(x[H], 0.0);
        assert_eq!(x[BETA], b.beta.1);
        assert_eq!(x[IHR], b.ihr.0);
    }
}
