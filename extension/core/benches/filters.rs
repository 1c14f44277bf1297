//! Criterion benchmarks of one analysis step at the sizes of docs/benchmarks.md:
//! (state_dim n, members N, observations m) = (40, 24, 40), (1000, 100, 200), (5000, 100, 2000),
//! for ETKF (global), serial EAKF and LETKF (both localized). Run: `cargo bench -p enkf-core`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use enkf_core::rng::{normal, seeded};
use enkf_core::{analyze, Method, Observations, Options};
use nalgebra::DMatrix;

pub struct Case {
    pub n: usize,
    pub members: usize,
    pub m: usize,
    /// Gaspari-Cohn half-width for the localized methods.
    pub radius: f64,
    pub periodic: bool,
}

pub const CASES: [Case; 3] = [
    Case {
        n: 40,
        members: 24,
        m: 40,
        radius: 7.28,
        periodic: true,
    },
    Case {
        n: 1000,
        members: 100,
        m: 200,
        radius: 10.0,
        periodic: false,
    },
    Case {
        n: 5000,
        members: 100,
        m: 2000,
        radius: 10.0,
        periodic: false,
    },
];

fn inputs(c: &Case) -> (DMatrix<f64>, Vec<f64>, Vec<f64>, Vec<usize>) {
    let mut rng = seeded(1);
    let ens = DMatrix::from_fn(c.n, c.members, |i, _| {
        (i as f64 * 0.1).sin() + normal(&mut rng)
    });
    let idx: Vec<usize> = (0..c.m).map(|k| k * c.n / c.m).collect();
    let y = idx
        .iter()
        .map(|&i| (i as f64 * 0.1).sin() + 0.5 * normal(&mut rng))
        .collect();
    let r = vec![0.25; c.m];
    (ens, y, r, idx)
}

fn bench(cr: &mut Criterion) {
    let mut group = cr.benchmark_group("analyze");
    group.sample_size(10);
    for c in &CASES {
        let (ens, y, r, idx) = inputs(c);
        let obs = Observations {
            values: &y,
            variance: &r,
            index: &idx,
        };
        for method in [Method::Etkf, Method::Eakf, Method::Letkf] {
            let opts = Options {
                method,
                inflation: 1.05,
                loc_radius: (method != Method::Etkf).then_some(c.radius),
                periodic: c.periodic,
                ..Options::default()
            };
            let id = BenchmarkId::new(
                method.to_string(),
                format!("n{}_N{}_m{}", c.n, c.members, c.m),
            );
            group.bench_with_input(id, &opts, |b, opts| {
                b.iter(|| {
                    let mut e = ens.clone();
                    analyze(&mut e, &obs, opts, &|| {}).unwrap();
                    e
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
