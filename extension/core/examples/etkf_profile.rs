//! Where the time of one large ETKF analysis goes (profiling aid).
//!     cargo run --release -p enkf-core --example etkf_profile
use std::time::Instant;

use enkf_core::rng::{normal, seeded};
use enkf_core::{analyze, Observations, Options};
use nalgebra::{DMatrix, SymmetricEigen};

fn main() {
    let (n, members, m) = (5000usize, 100usize, 2000usize);
    let mut rng = seeded(1);
    let ens = DMatrix::from_fn(n, members, |_, _| normal(&mut rng));
    let idx: Vec<usize> = (0..m).map(|k| k * n / m).collect();
    let y = vec![0.5; m];
    let r = vec![0.25; m];
    let obs = Observations {
        values: &y,
        variance: &r,
        index: &idx,
    };
    let t = Instant::now();
    for _ in 0..10 {
        let mut e = ens.clone();
        analyze(&mut e, &obs, &Options::default(), &|| {}).unwrap();
    }
    println!("analyze: {:.2} ms", t.elapsed().as_secs_f64() * 100.0);
    let s = DMatrix::from_fn(m, members, |_, _| normal(&mut rng));
    let t = Instant::now();
    let mm = s.tr_mul(&s);
    println!("S^T S: {:.2} ms", t.elapsed().as_secs_f64() * 1000.0);
    let t = Instant::now();
    let e = SymmetricEigen::new(mm.clone());
    println!("eigen: {:.2} ms", t.elapsed().as_secs_f64() * 1000.0);
    let t = Instant::now();
    let _p = &ens * &e.eigenvectors;
    println!("A T: {:.2} ms", t.elapsed().as_secs_f64() * 1000.0);
    let t = Instant::now();
    let _c = ens.clone();
    println!("clone: {:.2} ms", t.elapsed().as_secs_f64() * 1000.0);
    let t = Instant::now();
    let _tt = ens.transpose();
    println!("transpose: {:.2} ms", t.elapsed().as_secs_f64() * 1000.0);
}
