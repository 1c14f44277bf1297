//! Times the twin's weekly step, update and forecast for one location (profiling aid).
//!     cargo run --release -p enkf-core --example twin_profile
use std::time::Instant;

use enkf_core::dates::from_civil;
use enkf_core::scoring::FLUSIGHT_LEVELS;
use enkf_core::twin::{LocationModel, TwinConfig};

fn main() {
    let cfg = TwinConfig::default();
    let model = LocationModel::new(&cfg, "X", 1e6);
    for members in [100usize, 300] {
        let mut ens = model.prior(members);
        let w0 = from_civil(2023, 1, 7);
        let n = 2000;
        let t = Instant::now();
        for k in 0..n {
            model.step(&mut ens, w0 + 7 * k);
        }
        let step = t.elapsed().as_secs_f64() / n as f64;
        let t = Instant::now();
        for k in 0..n {
            model.update(&mut ens, 100.0, 100.0, w0 + 7 * k).unwrap();
        }
        let update = t.elapsed().as_secs_f64() / n as f64;
        let t = Instant::now();
        for k in 0..200 {
            std::hint::black_box(model.forecast(&ens, w0 + 7 * k, 4, &FLUSIGHT_LEVELS));
        }
        let fc = t.elapsed().as_secs_f64() / 200.0;
        let hist: Vec<f64> = (0..104)
            .map(|k| 100.0 + 50.0 * (k as f64 / 8.0).sin())
            .collect();
        let t = Instant::now();
        for k in 0..200 {
            std::hint::black_box(enkf_core::scoring::baseline_quantiles_all(
                &hist,
                4,
                &FLUSIGHT_LEVELS,
                k,
            ));
        }
        let base = t.elapsed().as_secs_f64() / 200.0;
        println!(
            "baseline (4 horizons, 104 weeks of history) {:.1} us",
            base * 1e6
        );
        println!(
            "members {members}: step {:.1} us, update {:.1} us, forecast (4 horizons) {:.1} us",
            step * 1e6,
            update * 1e6,
            fc * 1e6
        );
    }
}
