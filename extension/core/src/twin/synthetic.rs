//! Synthetic surveillance from the twin's own model with known parameters: the data of the
//! tests and of the scale benchmarks (never real patient-level data).

use crate::dates::day_of_year;
use crate::model::seirh::{self, Dynamics, BETA, E, H, I, IHR, R, S, STATE_DIM};
use crate::rng::{normal, seeded, uniform};
use crate::twin::config::ObservationError;
use crate::twin::streams::{location_seed, mix, SYNTHETIC_LOCATION};

/// One location's synthetic truth.
#[derive(Debug, Clone)]
pub struct SyntheticLocation {
    pub location: String,
    pub population: f64,
    pub beta: f64,
    pub ihr: f64,
    /// (week end, true admissions, observed count)
    pub weeks: Vec<(i32, f64, f64)>,
}

/// Ranges the truth is drawn from.
#[derive(Debug, Clone)]
pub struct SyntheticSpec {
    pub locations: usize,
    pub weeks: usize,
    /// Week end (PostgreSQL day number) of the first week.
    pub first_week_end: i32,
    pub seed: i64,
    pub population: (f64, f64),
    pub r0: (f64, f64),
    pub ihr: (f64, f64),
    pub dynamics: Dynamics,
    pub noise: ObservationError,
}

pub fn generate(spec: &SyntheticSpec) -> Vec<SyntheticLocation> {
    (0..spec.locations)
        .map(|k| generate_location(spec, k))
        .collect()
}

pub fn location_name(k: usize) -> String {
    format!("L{:05}", k + 1)
}

pub fn generate_location(spec: &SyntheticSpec, k: usize) -> SyntheticLocation {
    let name = location_name(k);
    let mut rng = seeded(mix(location_seed(spec.seed, &name) ^ SYNTHETIC_LOCATION));
    let lu = |(lo, hi): (f64, f64), u: f64| (lo.ln() + (hi.ln() - lo.ln()) * u).exp();
    let population = lu(spec.population, uniform(&mut rng)).round();
    let r0 = spec.r0.0 + (spec.r0.1 - spec.r0.0) * uniform(&mut rng);
    let beta = r0 / spec.dynamics.infectious_days;
    let ihr = lu(spec.ihr, uniform(&mut rng));
    let s0 = 0.55 + 0.2 * uniform(&mut rng);
    let i0 = 1e-5 * population;
    let mut x = [0.0; STATE_DIM];
    x[S] = s0 * population;
    x[E] = i0;
    x[I] = i0;
    x[R] = population - x[S] - 2.0 * i0;
    x[BETA] = beta;
    x[IHR] = ihr;
    let bounds = seirh::Bounds {
        beta: (0.0, 100.0),
        ihr: (0.0, 1.0),
    };
    let mut weeks = Vec::with_capacity(spec.weeks);
    for w in 0..spec.weeks {
        let week_end = spec.first_week_end + 7 * w as i32;
        spec.dynamics
            .advance(&mut x, population, day_of_year(week_end - 6), 7);
        seirh::constrain(&mut x, population, &bounds);
        let truth = x[H];
        let sd = spec.noise.variance(truth).sqrt();
        let observed = (truth + sd * normal(&mut rng)).max(0.0).round();
        weeks.push((week_end, truth, observed));
    }
    SyntheticLocation {
        location: name,
        population,
        beta,
        ihr,
        weeks,
    }
}

/// The share of a week's final count missing from its first release: NHSN's first releases
/// of weekly admissions run a few tenths below the final count, and fill in over the
/// following weeks (the hub's vintages show it).
pub const FIRST_RELEASE_SHORTFALL: f64 = 0.3;
/// How much of the remaining shortfall each later release still lacks.
pub const SHORTFALL_DECAY: f64 = 0.5;

/// The published versions of a week's final count, a known backfill process: release k
/// (0-based, published k weeks after the week ends) reports the final count less
/// `FIRST_RELEASE_SHORTFALL x SHORTFALL_DECAY^k` of it, rounded; the last release reports the
/// final count itself.
pub fn published_versions(final_count: f64, versions: usize) -> Vec<f64> {
    (0..versions)
        .map(|k| {
            if k + 1 == versions {
                final_count
            } else {
                (final_count * (1.0 - FIRST_RELEASE_SHORTFALL * SHORTFALL_DECAY.powi(k as i32)))
                    .round()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_rise_to_the_final_count() {
        assert_eq!(published_versions(100.0, 1), vec![100.0]);
        assert_eq!(published_versions(100.0, 4), vec![70.0, 85.0, 93.0, 100.0]);
        assert_eq!(published_versions(0.0, 3), vec![0.0, 0.0, 0.0]);
        let v = published_versions(1234.0, 6);
        assert!(v.windows(2).all(|w| w[0] <= w[1]), "{v:?}");
    }
}
