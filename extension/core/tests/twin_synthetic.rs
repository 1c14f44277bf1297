//! The twin on synthetic surveillance from its own model with known parameters: it recovers the
//! transmission rate and the admission fraction, its 95% forecast intervals cover the observed
//! counts at about the nominal rate, and the constraints hold after every update.

use enkf_core::dates::from_civil;
use enkf_core::model::seirh::{BETA, IHR, S};
use enkf_core::scoring::{covered, FLUSIGHT_LEVELS};
use enkf_core::twin::synthetic::{generate, SyntheticSpec};
use enkf_core::twin::{LocationModel, TwinConfig};

fn spec(cfg: &TwinConfig, locations: usize, weeks: usize) -> SyntheticSpec {
    SyntheticSpec {
        locations,
        weeks,
        first_week_end: from_civil(2022, 10, 1),
        seed: 11,
        population: (2e5, 2e7),
        r0: (1.4, 1.9),
        ihr: (0.002, 0.01),
        dynamics: cfg.dynamics(),
        noise: cfg.observation_error.clone(),
    }
}

/// Constant true parameters: the twin is told they do not drift. The seasonal forcing is
/// pinned at 0.15, the default this test's thresholds were set with: at the default of 0.3
/// the largest beta error is 22% (the unforced rate and the forcing trade off more).
fn static_config() -> TwinConfig {
    TwinConfig::from_json(
        r#"{"process_noise": {"beta": 0.0, "ihr": 0.0}, "filter": {"inflation": 1.0}, "dynamics": {"seasonal_amplitude": 0.15}}"#,
    )
    .unwrap()
}

#[test]
fn recovers_transmission_and_admission_fraction() {
    let cfg = static_config();
    let data = generate(&spec(&cfg, 24, 156));
    let (mut beta_errors, mut ihr_errors) = (Vec::new(), Vec::new());
    for loc in &data {
        let model = LocationModel::new(&cfg, &loc.location, loc.population);
        let mut ens = model.prior(200);
        let mut recent = Vec::new();
        for &(week, _truth, y) in &loc.weeks {
            model.step(&mut ens, week);
            recent.push(y);
            let n = recent.len().min(3);
            let mean = recent[recent.len() - n..].iter().sum::<f64>() / n as f64;
            model.update(&mut ens, y, mean, week).unwrap();
            // Constraints after every update.
            for col in ens.column_iter() {
                let total: f64 = col.rows(S, 4).sum();
                assert!((total - loc.population).abs() <= 1e-6 * loc.population);
                assert!(col.iter().all(|v| v.is_finite() && *v >= 0.0));
                assert!((cfg.bounds.beta.0..=cfg.bounds.beta.1).contains(&col[BETA]));
                assert!((cfg.bounds.ihr.0..=cfg.bounds.ihr.1).contains(&col[IHR]));
            }
        }
        let peak = loc.weeks.iter().map(|w| w.1).fold(0.0, f64::max);
        let beta = ens.row(BETA).mean();
        let ihr = ens.row(IHR).mean();
        let eb = (beta - loc.beta).abs() / loc.beta;
        let ei = (ihr - loc.ihr).abs() / loc.ihr;
        println!(
            "{} (population {:.0}, peak {peak:.0}/week): beta {beta:.3} vs {:.3} ({:.0}%), ihr {ihr:.4} vs {:.4} ({:.0}%)",
            loc.location, loc.population, loc.beta, eb * 100.0, loc.ihr, ei * 100.0
        );
        // Small epidemics (tens of admissions a week) carry too little information to separate
        // the admission fraction from the attack rate; the claim is for informative locations.
        if peak >= 500.0 {
            beta_errors.push(eb);
            ihr_errors.push(ei);
        }
    }
    assert!(
        beta_errors.len() >= 8,
        "too few informative locations: {}",
        beta_errors.len()
    );
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (max_b, max_i) = (
        beta_errors.iter().cloned().fold(0.0, f64::max),
        ihr_errors.iter().cloned().fold(0.0, f64::max),
    );
    let (med_b, med_i) = (median(&mut beta_errors), median(&mut ihr_errors));
    println!("informative locations: beta error median {:.1}% max {:.1}%, ihr error median {:.1}% max {:.1}%", med_b * 100.0, max_b * 100.0, med_i * 100.0, max_i * 100.0);
    assert!(
        max_b <= 0.20 && med_b <= 0.05,
        "beta: median {med_b}, max {max_b}"
    );
    assert!(
        max_i <= 0.50 && med_i <= 0.20,
        "ihr: median {med_i}, max {max_i}"
    );
}

/// With the default configuration (drifting parameters), the 95% intervals of the weekly
/// forecasts cover the synthetic counts at close to the nominal rate, and the 50% intervals at
/// close to theirs. The data come from the twin's own model, so the forecasts follow it: no
/// growth damping (a correction for real epidemics, which the model's would overshoot).
#[test]
fn forecast_intervals_are_calibrated() {
    let cfg = TwinConfig::from_json(r#"{"forecast": {"growth_damping": 1.0}}"#).unwrap();
    let data = generate(&spec(&cfg, 16, 156));
    let (mut n, mut c50, mut c95) = (0usize, 0usize, 0usize);
    for loc in &data {
        let model = LocationModel::new(&cfg, &loc.location, loc.population);
        let mut ens = model.prior(300);
        let mut recent = Vec::new();
        for (k, &(week, _truth, y)) in loc.weeks.iter().enumerate() {
            model.step(&mut ens, week);
            recent.push(y);
            let m = recent.len().min(3);
            let mean = recent[recent.len() - m..].iter().sum::<f64>() / m as f64;
            model.update(&mut ens, y, mean, week).unwrap();
            // After a season of spin-up, score every forecast whose target is in the data.
            if k >= 52 && k + 4 < loc.weeks.len() && k % 2 == 0 {
                let fc = model.forecast(&ens, week, 4, &FLUSIGHT_LEVELS);
                for (h, q) in fc.iter().enumerate() {
                    let target = loc.weeks[k + 1 + h].2;
                    n += 1;
                    c50 += covered(&FLUSIGHT_LEVELS, q, target, 0.5).unwrap() as usize;
                    c95 += covered(&FLUSIGHT_LEVELS, q, target, 0.95).unwrap() as usize;
                }
            }
        }
    }
    let (r50, r95) = (c50 as f64 / n as f64, c95 as f64 / n as f64);
    println!("{n} forecasts: 50% interval coverage {r50:.3}, 95% interval coverage {r95:.3}");
    assert!((0.88..=0.99).contains(&r95), "95% coverage {r95}");
    assert!((0.40..=0.65).contains(&r50), "50% coverage {r50}");
}
