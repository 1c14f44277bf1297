//! Where the time of one large ETKF analysis goes (profiling aid), on the members-major layout
//! that enkf.analyze uses.
//!     cargo run --release -p enkf-core --example etkf_profile
use std::time::Instant;

use enkf_core::filter::analyze_members_major;
use enkf_core::rng::{normal, seeded};
use enkf_core::{Observations, Options};
use nalgebra::{DMatrix, SymmetricEigen};

fn time<T>(label: &str, reps: usize, mut f: impl FnMut() -> T) {
    let t = Instant::now();
    for _ in 0..reps {
        std::hint::black_box(f());
    }
    println!(
        "{label}: {:.3} ms",
        t.elapsed().as_secs_f64() * 1e3 / reps as f64
    );
}

fn main() {
    for (n, members, m) in [(1000usize, 100usize, 200usize), (5000, 100, 2000)] {
        println!("n = {n}, N = {members}, m = {m}");
        let mut rng = seeded(1);
        let at = DMatrix::from_fn(members, n, |_, _| normal(&mut rng));
        let idx: Vec<usize> = (0..m).map(|k| k * n / m).collect();
        let y = vec![0.5; m];
        let r = vec![0.25; m];
        let obs = Observations {
            values: &y,
            variance: &r,
            index: &idx,
        };
        time("  analyze", 20, || {
            let mut e = at.clone();
            analyze_members_major(&mut e, &obs, &Options::default(), &|| {}).unwrap();
            e
        });
        time("  clone", 20, || at.clone());
        let s = DMatrix::from_fn(m, members, |_, _| normal(&mut rng));
        time("  S^T S", 20, || s.transpose() * &s);
        let mm = s.transpose() * &s;
        time(
            "  nalgebra eigen (the filters use faer above order 64)",
            20,
            || SymmetricEigen::new(mm.clone()),
        );
        let t = DMatrix::from_fn(members, members, |_, _| normal(&mut rng));
        time("  T A^T", 20, || &t * &at);
        time("  whiten-like gather", 20, || {
            let mut s = DMatrix::zeros(m, members);
            for (k, &i) in idx.iter().enumerate() {
                let col = at.column(i);
                for j in 0..members {
                    s[(k, j)] = col[j] * 2.0;
                }
            }
            s
        });
    }
}
