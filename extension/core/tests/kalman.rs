//! Known answers: in the linear-Gaussian case the deterministic filters reproduce the exact
//! Kalman update of the ensemble's own mean and covariance, and the stochastic EnKF converges
//! to it as the ensemble grows. Property tests over random sizes and values.

use enkf_core::localization::gaspari_cohn;
use enkf_core::rng::{normal, seeded};
use enkf_core::{analyzed, Method, Observations, Options};
use nalgebra::{DMatrix, DVector};
use proptest::prelude::*;

/// Sample mean and covariance (divisor N - 1) of the columns.
fn moments(x: &DMatrix<f64>) -> (DVector<f64>, DMatrix<f64>) {
    let mean = x.column_mean();
    let mut a = x.clone();
    for mut c in a.column_iter_mut() {
        c -= &mean;
    }
    let cov = &a * a.transpose() / (x.ncols() as f64 - 1.0);
    (mean, cov)
}

/// The exact Kalman update of (mean, cov) for observations of single elements.
fn kalman(
    mean: &DVector<f64>,
    p: &DMatrix<f64>,
    y: &[f64],
    r: &[f64],
    idx: &[usize],
) -> (DVector<f64>, DMatrix<f64>) {
    let n = mean.len();
    let m = y.len();
    let h = DMatrix::from_fn(m, n, |k, i| if idx[k] == i { 1.0 } else { 0.0 });
    let s = &h * p * h.transpose() + DMatrix::from_diagonal(&DVector::from_column_slice(r));
    let k = p * h.transpose() * s.cholesky().expect("innovation covariance SPD").inverse();
    let innov = DVector::from_column_slice(y) - &h * mean;
    let xa = mean + &k * innov;
    let pa = (DMatrix::identity(n, n) - &k * &h) * p;
    (xa, pa)
}

fn scale(m: &DMatrix<f64>) -> f64 {
    m.amax().max(1.0)
}

#[derive(Debug, Clone)]
struct Problem {
    ens: DMatrix<f64>,
    y: Vec<f64>,
    r: Vec<f64>,
    idx: Vec<usize>,
    inflation: f64,
}

fn problem() -> impl Strategy<Value = Problem> {
    problem_sized(2..30, 1..10)
}

/// Problems with `members` and `obs` in the given ranges (observations may repeat elements).
fn problem_sized(
    members: std::ops::Range<usize>,
    obs: std::ops::Range<usize>,
) -> impl Strategy<Value = Problem> {
    (1usize..8, members, obs, any::<u64>(), 1.0f64..1.5).prop_map(
        |(n, members, m, seed, inflation)| {
            let mut rng = seeded(seed);
            // Correlated members: a random linear map of white noise plus a random mean.
            let mix = DMatrix::from_fn(n, n, |_, _| normal(&mut rng));
            let white = DMatrix::from_fn(n, members, |_, _| normal(&mut rng));
            let mut ens = mix * white;
            for (i, mut row) in ens.row_iter_mut().enumerate() {
                row.add_scalar_mut(3.0 * i as f64);
            }
            let idx: Vec<usize> = (0..m).map(|k| (k * 7 + seed as usize % 5) % n).collect();
            let y = (0..m)
                .map(|k| 3.0 * idx[k] as f64 + 2.0 * normal(&mut rng))
                .collect();
            let r = (0..m)
                .map(|_| 0.1 + 4.9 * (normal(&mut rng).abs() / 3.0).min(1.0))
                .collect();
            Problem {
                ens,
                y,
                r,
                idx,
                inflation,
            }
        },
    )
}

fn inflated_prior(p: &Problem) -> (DVector<f64>, DMatrix<f64>) {
    let (mean, cov) = moments(&p.ens);
    (mean, cov * p.inflation * p.inflation)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// ETKF, serial EAKF and (unlocalized) LETKF give the Kalman mean and covariance to rounding.
    #[test]
    fn deterministic_filters_are_the_exact_kalman_update(p in problem()) {
        let (mean, cov) = inflated_prior(&p);
        let (xa, pa) = kalman(&mean, &cov, &p.y, &p.r, &p.idx);
        let obs = Observations { values: &p.y, variance: &p.r, index: &p.idx };
        for method in [Method::Etkf, Method::Eakf, Method::Letkf] {
            let opts = Options { method, inflation: p.inflation, ..Options::default() };
            let out = analyzed(&p.ens, &obs, &opts).unwrap();
            let (m_out, c_out) = moments(&out);
            let tol = 1e-9 * scale(&cov).max(xa.amax());
            prop_assert!((&m_out - &xa).amax() <= tol, "{method}: mean off by {}", (&m_out - &xa).amax());
            prop_assert!((&c_out - &pa).amax() <= 1e-9 * scale(&cov), "{method}: covariance off by {}", (&c_out - &pa).amax());
        }
    }

    /// The same with ensembles of 64 members and more, where the ETKF's eigensolver is the
    /// divide and conquer of filter/eigen.rs, with more and with fewer observations than members.
    #[test]
    fn etkf_is_the_exact_kalman_update_with_large_ensembles(p in problem_sized(64..110, 50..140)) {
        let (mean, cov) = inflated_prior(&p);
        let (xa, pa) = kalman(&mean, &cov, &p.y, &p.r, &p.idx);
        let obs = Observations { values: &p.y, variance: &p.r, index: &p.idx };
        let opts = Options { method: Method::Etkf, inflation: p.inflation, ..Options::default() };
        let (m_out, c_out) = moments(&analyzed(&p.ens, &obs, &opts).unwrap());
        prop_assert!((&m_out - &xa).amax() <= 1e-9 * scale(&cov).max(xa.amax()), "mean off by {}", (&m_out - &xa).amax());
        prop_assert!((&c_out - &pa).amax() <= 1e-9 * scale(&cov), "covariance off by {}", (&c_out - &pa).amax());
    }

    /// The stochastic EnKF's centred perturbations keep the mean exact for any ensemble size.
    #[test]
    fn stochastic_enkf_mean_is_exact(p in problem(), seed in any::<u64>()) {
        let (mean, cov) = inflated_prior(&p);
        let (xa, _) = kalman(&mean, &cov, &p.y, &p.r, &p.idx);
        let obs = Observations { values: &p.y, variance: &p.r, index: &p.idx };
        let opts = Options { method: Method::Enkf, inflation: p.inflation, seed, ..Options::default() };
        let out = analyzed(&p.ens, &obs, &opts).unwrap();
        let (m_out, _) = moments(&out);
        prop_assert!((&m_out - &xa).amax() <= 1e-9 * scale(&cov).max(xa.amax()));
    }

    /// ... and its covariance converges to the Kalman covariance as members grow.
    #[test]
    fn stochastic_enkf_covariance_converges(n in 1usize..5, m in 1usize..4, seed in any::<u64>()) {
        let mut rng = seeded(seed);
        let mix = DMatrix::from_fn(n, n, |_, _| normal(&mut rng));
        let idx: Vec<usize> = (0..m).map(|k| k % n).collect();
        let y: Vec<f64> = (0..m).map(|_| normal(&mut rng)).collect();
        let r: Vec<f64> = (0..m).map(|_| 0.5 + normal(&mut rng).abs()).collect();
        let obs = Observations { values: &y, variance: &r, index: &idx };
        let mut errors = Vec::new();
        for members in [20usize, 20_000] {
            let ens = &mix * DMatrix::from_fn(n, members, |_, _| normal(&mut rng));
            let (mean, cov) = moments(&ens);
            let (_, pa) = kalman(&mean, &cov, &y, &r, &idx);
            let opts = Options { method: Method::Enkf, seed: seed ^ members as u64, ..Options::default() };
            let (_, c_out) = moments(&analyzed(&ens, &obs, &opts).unwrap());
            errors.push((&c_out - &pa).norm() / pa.norm().max(1e-12));
        }
        // Sampling error of a covariance falls as 1/sqrt(N): about 1% at N = 20,000.
        prop_assert!(errors[1] < 0.06, "relative covariance error {} at N = 20000", errors[1]);
    }

    /// LETKF localization is R-localization: one observation's influence on element l is the
    /// scalar Kalman update with its variance divided by the taper weight.
    #[test]
    fn letkf_single_observation_is_the_tapered_kalman_update(p in problem(), c in 0.5f64..4.0, periodic in any::<bool>()) {
        let n = p.ens.nrows();
        let (y, r, i) = (p.y[0], p.r[0], p.idx[0]);
        let obs = Observations { values: &[y], variance: &[r], index: &[i] };
        let opts = Options { method: Method::Letkf, loc_radius: Some(c), periodic, ..Options::default() };
        let out = analyzed(&p.ens, &obs, &opts).unwrap();
        let (mean, cov) = moments(&p.ens);
        let (m_out, _) = moments(&out);
        for l in 0..n {
            let d = if periodic { i.abs_diff(l).min(n - i.abs_diff(l)) } else { i.abs_diff(l) } as f64;
            let w = gaspari_cohn(d, c);
            let want = if w > 0.0 { mean[l] + cov[(l, i)] / (cov[(i, i)] + r / w) * (y - mean[i]) } else { mean[l] };
            prop_assert!((m_out[l] - want).abs() <= 1e-9 * scale(&cov).max(want.abs()), "element {l}");
        }
    }

    /// Serial EAKF localization tapers the regression: increment = weight x unlocalized increment.
    #[test]
    fn eakf_single_observation_increment_is_tapered(p in problem(), c in 0.5f64..4.0) {
        let n = p.ens.nrows();
        let (y, r, i) = (p.y[0], p.r[0], p.idx[0]);
        let obs = Observations { values: &[y], variance: &[r], index: &[i] };
        let global = analyzed(&p.ens, &obs, &Options { method: Method::Eakf, ..Options::default() }).unwrap();
        let local = analyzed(&p.ens, &obs, &Options { method: Method::Eakf, loc_radius: Some(c), ..Options::default() }).unwrap();
        for l in 0..n {
            let w = gaspari_cohn(i.abs_diff(l) as f64, c);
            for j in 0..p.ens.ncols() {
                let want = p.ens[(l, j)] + w * (global[(l, j)] - p.ens[(l, j)]);
                prop_assert!((local[(l, j)] - want).abs() <= 1e-9 * scale(&p.ens));
            }
        }
    }

    /// RTPS with factor 1 restores the prior spread of every updated element; the mean is untouched.
    #[test]
    fn rtps_one_restores_prior_spread(p in problem()) {
        let obs = Observations { values: &p.y, variance: &p.r, index: &p.idx };
        let plain = analyzed(&p.ens, &obs, &Options::default()).unwrap();
        let relaxed = analyzed(&p.ens, &obs, &Options { rtps: 1.0, ..Options::default() }).unwrap();
        let (m0, c0) = moments(&p.ens);
        let (m1, _) = moments(&plain);
        let (m2, c2) = moments(&relaxed);
        prop_assert!((&m1 - &m2).amax() <= 1e-9 * scale(&c0).max(m1.amax()));
        for l in 0..p.ens.nrows() {
            if c2[(l, l)] > 1e-20 {
                prop_assert!((c2[(l, l)].sqrt() - c0[(l, l)].sqrt()).abs() <= 1e-9 * c0[(l, l)].sqrt().max(1.0));
            }
        }
        let _ = m0;
    }

    /// Same inputs and seed, same output, bit for bit, for every method.
    #[test]
    fn analysis_is_deterministic(p in problem(), seed in any::<u64>()) {
        let obs = Observations { values: &p.y, variance: &p.r, index: &p.idx };
        for method in [Method::Enkf, Method::Etkf, Method::Eakf, Method::Letkf] {
            let loc = if matches!(method, Method::Etkf) { None } else { Some(2.0) };
            let opts = Options { method, seed, loc_radius: loc, inflation: p.inflation, rtps: 0.5, ..Options::default() };
            let a = analyzed(&p.ens, &obs, &opts).unwrap();
            let b = analyzed(&p.ens, &obs, &opts).unwrap();
            prop_assert_eq!(&a, &b);
            prop_assert!(a.iter().all(|v| v.is_finite()));
        }
    }
}

/// Without observations the analysis is the inflated prior.
#[test]
fn inflation_scales_the_prior_anomalies() {
    let ens = DMatrix::from_row_slice(2, 3, &[1.0, 2.0, 6.0, -1.0, 0.0, 1.0]);
    let obs = Observations {
        values: &[],
        variance: &[],
        index: &[],
    };
    let out = analyzed(
        &ens,
        &obs,
        &Options {
            inflation: 1.5,
            ..Options::default()
        },
    )
    .unwrap();
    let want = DMatrix::from_row_slice(2, 3, &[0.0, 1.5, 7.5, -1.5, 0.0, 1.5]);
    assert!((out - want).amax() < 1e-12);
}

/// A tight observation of one element of a perfectly correlated pair pulls both to it.
#[test]
fn correlated_element_follows_the_observation() {
    let ens = DMatrix::from_row_slice(2, 4, &[0.0, 1.0, 2.0, 3.0, 0.0, 2.0, 4.0, 6.0]);
    let obs = Observations {
        values: &[10.0],
        variance: &[1e-8],
        index: &[0],
    };
    for method in [Method::Etkf, Method::Eakf, Method::Letkf, Method::Enkf] {
        let out = analyzed(
            &ens,
            &obs,
            &Options {
                method,
                ..Options::default()
            },
        )
        .unwrap();
        let mean = out.column_mean();
        assert!((mean[0] - 10.0).abs() < 1e-6, "{method}: {mean}");
        assert!((mean[1] - 20.0).abs() < 1e-5, "{method}: {mean}");
    }
}

/// `analyze_flat` (storage of a PostgreSQL array) gives what `analyze` gives, for every method:
/// in place for the ETKF, through a matrix for the others; and it refuses storage that is not
/// whole columns.
#[test]
fn flat_storage_matches_the_matrix_api() {
    let mut rng = seeded(21);
    let (n, members) = (30, 12);
    let ens = DMatrix::from_fn(n, members, |i, _| (i as f64 * 0.3).sin() + normal(&mut rng));
    let idx = [0usize, 7, 15, 29];
    let obs = Observations {
        values: &[0.2, -0.4, 1.0, 0.5],
        variance: &[0.3, 0.3, 0.5, 0.2],
        index: &idx,
    };
    for (method, radius) in [
        (Method::Etkf, None),
        (Method::Letkf, None),
        (Method::Letkf, Some(3.0)),
        (Method::Eakf, Some(3.0)),
        (Method::Enkf, None),
    ] {
        let opts = Options {
            method,
            loc_radius: radius,
            inflation: 1.1,
            rtps: 0.4,
            seed: 5,
            ..Options::default()
        };
        let want = analyzed(&ens, &obs, &opts).unwrap();
        // members-major storage: element 0's members, then element 1's, ...
        let mut flat: Vec<f64> = ens.transpose().as_slice().to_vec();
        enkf_core::filter::analyze_flat(
            &mut flat,
            members,
            &obs,
            &opts,
            &|| {},
            &enkf_core::workers::Sequential,
        )
        .unwrap();
        let got = DMatrix::from_column_slice(members, n, &flat).transpose();
        assert!((got - &want).amax() < 1e-12, "{method:?} {radius:?}");
    }
    let mut ragged = vec![0.0; 25];
    assert!(enkf_core::filter::analyze_flat(
        &mut ragged,
        12,
        &obs,
        &Options::default(),
        &|| {},
        &enkf_core::workers::Sequential
    )
    .is_err());
}
