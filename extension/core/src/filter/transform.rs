//! The linear algebra shared by the ensemble filters, in whitened form.
//!
//! With prior observation anomalies `Yb` (m x N), `R = diag(r)`, `S = R^{-1/2} Yb`,
//! innovations `d = R^{-1/2} (y - ybar)` and `a = N - 1`, every update here goes through
//! `M = a I + S^T S` (N x N), symmetric positive definite with eigenvalues >= a. When there are
//! fewer observations than members, the same quantities come from the smaller
//! `G = S S^T` (m x m) by the push-through identity `(aI + S^T S)^{-1} S^T = S^T (aI + S S^T)^{-1}`.
//! Either way only a symmetric eigendecomposition is used: no explicit inverse.

use nalgebra::{DMatrix, DMatrixViewMut, DVector, SymmetricEigen};

use crate::workers::{Job, Sequential, Workers};

/// `a^T b` for matrices. nalgebra's `tr_mul` computes each element as a separate dot product;
/// an explicit transpose lets the product go through its blocked GEMM, several times faster
/// for the sizes here.
fn t_mul(a: &DMatrix<f64>, b: &DMatrix<f64>) -> DMatrix<f64> {
    a.transpose() * b
}

/// Work below this many multiply-adds is not worth a thread.
const PARALLEL_MIN_FLOPS: usize = 4_000_000;

/// `S^T S` for a tall `S` (m x N), the row blocks summed from several threads.
fn gram(s: &DMatrix<f64>, workers: &dyn Workers) -> DMatrix<f64> {
    let (m, n) = s.shape();
    let parts = workers.threads().min(m * n * n / PARALLEL_MIN_FLOPS).max(1);
    if parts == 1 {
        return t_mul(s, s);
    }
    let rows = m.div_ceil(parts);
    let mut partial: Vec<DMatrix<f64>> = (0..parts).map(|_| DMatrix::zeros(0, 0)).collect();
    let jobs: Vec<Job> = partial
        .iter_mut()
        .enumerate()
        .map(|(k, out)| {
            let block = s.rows(k * rows, rows.min(m - (k * rows).min(m)));
            Box::new(move || *out = block.transpose() * block) as Job
        })
        .collect();
    workers.run(jobs);
    let mut sum = partial.pop().unwrap_or_else(|| DMatrix::zeros(n, n));
    for p in partial {
        sum += p;
    }
    sum
}

/// `t * at` (N x N times N x k), the columns of the result split between threads: each writes
/// its own contiguous block of the column-major output.
fn left_mul(t: &DMatrix<f64>, at: &DMatrix<f64>, workers: &dyn Workers) -> DMatrix<f64> {
    let (n, k) = at.shape();
    let parts = workers.threads().min(n * n * k / PARALLEL_MIN_FLOPS).max(1);
    if parts == 1 {
        return t * at;
    }
    let cols = k.div_ceil(parts);
    let mut out = DMatrix::zeros(n, k);
    let jobs: Vec<Job> = out
        .as_mut_slice()
        .chunks_mut(n * cols)
        .enumerate()
        .map(|(p, chunk)| {
            let width = chunk.len() / n;
            let src = at.columns(p * cols, width);
            Box::new(move || {
                let mut dst = DMatrixViewMut::from_slice(chunk, n, width);
                dst.gemm(1.0, t, &src, 0.0);
            }) as Job
        })
        .collect();
    workers.run(jobs);
    out
}

/// `g(l) = (sqrt(a / (a + l)) - 1) / l`, written so that it is exact near `l = 0`.
fn sqrt_shrink_over_lambda(a: f64, l: f64) -> f64 {
    let s = (a + l).sqrt();
    -1.0 / (s * (a.sqrt() + s))
}

/// Eigenvalues of a positive semi-definite matrix can come out slightly negative by rounding.
fn psd_eigen(m: DMatrix<f64>) -> (DMatrix<f64>, DVector<f64>) {
    let eig = SymmetricEigen::new(m);
    let vals = eig.eigenvalues.map(|v| v.max(0.0));
    (eig.eigenvectors, vals)
}

/// The ETKF transform of Hunt et al. (2007): the symmetric square root
/// `T = [a M^{-1}]^{1/2}` and the mean weights `w = M^{-1} S^T d` (N x N and N).
pub struct EnsembleTransform {
    pub t: DMatrix<f64>,
    pub w: DVector<f64>,
}

pub fn etkf_transform(s: &DMatrix<f64>, d: &DVector<f64>, a: f64) -> EnsembleTransform {
    etkf_transform_with(s, d, a, &Sequential)
}

fn etkf_transform_with(
    s: &DMatrix<f64>,
    d: &DVector<f64>,
    a: f64,
    workers: &dyn Workers,
) -> EnsembleTransform {
    let (m, n_members) = s.shape();
    if m >= n_members {
        let (q, lam) = ensemble_space_eigen(s, a, workers);
        let sqrt_fac = lam.map(|l| (a / l).sqrt());
        let t = &q * DMatrix::from_diagonal(&sqrt_fac) * q.transpose();
        let qt_std = q.tr_mul(&s.tr_mul(d));
        let w = &q * qt_std.component_div(&lam);
        EnsembleTransform { t, w }
    } else {
        let g = s * s.transpose();
        let (u, lam) = psd_eigen(g);
        // T = I + S^T U diag(g(l)) U^T S
        let us = t_mul(&u, s); // m x N
        let scaled = DMatrix::from_diagonal(&lam.map(|l| sqrt_shrink_over_lambda(a, l))) * &us;
        let mut t = t_mul(&us, &scaled);
        for i in 0..n_members {
            t[(i, i)] += 1.0;
        }
        // w = S^T U diag(1/(a+l)) U^T d
        let utd = u.tr_mul(d).component_div(&lam.map(|l| a + l));
        let w = us.tr_mul(&utd);
        EnsembleTransform { t, w }
    }
}

/// Eigenvectors and eigenvalues (>= a) of `M = a I + S^T S`.
fn ensemble_space_eigen(
    s: &DMatrix<f64>,
    a: f64,
    workers: &dyn Workers,
) -> (DMatrix<f64>, DVector<f64>) {
    let mut mm = gram(s, workers);
    for i in 0..mm.nrows() {
        mm[(i, i)] += a;
    }
    let (q, lam) = psd_eigen(mm);
    (q, lam.map(|l| l.max(a)))
}

/// The ETKF update of members-major anomalies `at` (members x k, the prior anomalies of k state
/// elements): returns `(A w, (A T)^T)`, the mean increments and the analysis anomalies,
/// members-major. With fewer observations than members the N x N transform is never formed:
/// the cost is O(k m N) instead of O(k N^2).
pub fn etkf_apply(
    at: &DMatrix<f64>,
    s: &DMatrix<f64>,
    d: &DVector<f64>,
    a: f64,
    workers: &dyn Workers,
) -> (DVector<f64>, DMatrix<f64>) {
    let (m, n_members) = s.shape();
    if m >= n_members {
        let tr = etkf_transform_with(s, d, a, workers);
        // (A T)^T = T A^T, T symmetric.
        (at.tr_mul(&tr.w), left_mul(&tr.t, at, workers))
    } else {
        let (u, lam) = psd_eigen(s * s.transpose());
        let utd = u.tr_mul(d).component_div(&lam.map(|l| a + l));
        let w = t_mul(&u, s).tr_mul(&utd); // S^T U diag(1/(a+l)) U^T d
        let shift = at.tr_mul(&w);
        // (A + A S^T G S)^T = A^T + S^T G (S A^T), G = U diag(g) U^T.
        let gl = lam.map(|l| sqrt_shrink_over_lambda(a, l));
        let mut us_at = u.transpose() * (s * at); // m x k
        for (mut row, g) in us_at.row_iter_mut().zip(gl.iter()) {
            row *= *g;
        }
        let anomalies = at + s.transpose() * (u * us_at);
        (shift, anomalies)
    }
}

/// The ETKF update of one state element (LETKF): its prior anomalies `x` (members) against
/// its local whitened `s`, `d`. Returns the mean increment and the analysis anomalies.
pub fn etkf_apply_column(
    x: &DVector<f64>,
    s: &DMatrix<f64>,
    d: &DVector<f64>,
    a: f64,
) -> (f64, DVector<f64>) {
    let (m, n_members) = s.shape();
    if m >= n_members {
        let tr = etkf_transform(s, d, a);
        (x.dot(&tr.w), &tr.t * x)
    } else {
        let (u, lam) = psd_eigen(s * s.transpose());
        let p = u.tr_mul(&(s * x)); // U^T S x
        let q = p.component_mul(&lam.map(|l| sqrt_shrink_over_lambda(a, l)));
        let utd = u.tr_mul(d).component_div(&lam.map(|l| a + l));
        (p.dot(&utd), x + s.tr_mul(&(&u * q)))
    }
}

/// `(A M^{-1} S^T D)^T` for members-major anomalies `at` (members x k) and whitened
/// innovations `D` (m x c): the Kalman gain applied to each column of `D`, members-major
/// (c x k), in the cheaper of ensemble and observation space.
pub fn gain_apply(
    at: &DMatrix<f64>,
    s: &DMatrix<f64>,
    dmat: &DMatrix<f64>,
    a: f64,
) -> DMatrix<f64> {
    let (m, n_members) = s.shape();
    if m >= n_members {
        let (q, lam) = ensemble_space_eigen(s, a, &Sequential);
        let mut qt = t_mul(&q, &t_mul(s, dmat)); // N x c
        for (mut row, l) in qt.row_iter_mut().zip(lam.iter()) {
            row /= *l;
        }
        // (A W)^T = W^T A^T with W = Q qt, N x N: small, since N <= m here.
        t_mul(&(q * qt), at)
    } else {
        let (u, lam) = psd_eigen(s * s.transpose());
        let mut utd = t_mul(&u, dmat); // m x c
        for (mut row, l) in utd.row_iter_mut().zip(lam.iter()) {
            row /= a + *l;
        }
        // W = S^T M with M = U utd (m x N); (A W)^T = M^T (S A^T) never forms the N x N W,
        // which for large ensembles would not fit in memory.
        t_mul(&(u * utd), &(s * at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(m: usize, n: usize, seed: u64) -> (DMatrix<f64>, DVector<f64>) {
        // A small deterministic generator keeps this test free of RNG crates.
        let mut state = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        };
        let mut s = DMatrix::from_fn(m, n, |_, _| next());
        // Observation anomalies have zero mean over members.
        for mut row in s.row_iter_mut() {
            let mean = row.mean();
            row.add_scalar_mut(-mean);
        }
        let d = DVector::from_fn(m, |_, _| next());
        (s, d)
    }

    #[test]
    fn ensemble_and_observation_space_agree() {
        for (m, n) in [(3, 10), (10, 3), (7, 7), (1, 5), (20, 21)] {
            let (s, d) = sample(m, n, (m * 31 + n) as u64);
            let a = (n - 1) as f64;
            // Reference in ensemble space, always.
            let mut mm = s.tr_mul(&s);
            for i in 0..n {
                mm[(i, i)] += a;
            }
            let chol = mm.clone().cholesky().unwrap();
            let w_ref = chol.solve(&s.tr_mul(&d));
            let tr = etkf_transform(&s, &d, a);
            assert!((&tr.w - &w_ref).amax() < 1e-12, "w m={m} n={n}");
            // T^2 = a M^{-1}  <=>  T^2 M = a I
            let check = &tr.t * &tr.t * &mm;
            assert!(
                (check - DMatrix::identity(n, n) * a).amax() < 1e-9,
                "T m={m} n={n}"
            );
            assert!((&tr.t - tr.t.transpose()).amax() < 1e-12);
            // Rows of the transform sum to one: the mean is carried exactly.
            for r in tr.t.row_iter() {
                assert!((r.sum() - 1.0).abs() < 1e-12);
            }
            let dm = DMatrix::from_fn(m, 4, |i, j| d[i] * (j as f64 + 1.0));
            let x = DMatrix::from_fn(3, n, |i, j| ((i + 1) as f64 * j as f64).sin());
            let xt = x.transpose();
            let g = gain_apply(&xt, &s, &dm, a);
            let g_ref = (&x * chol.solve(&s.tr_mul(&dm))).transpose();
            assert!((g - g_ref).amax() < 1e-11);
            let (shift, anom) = etkf_apply(&xt, &s, &d, a, &Sequential);
            assert!((shift - &x * &w_ref).amax() < 1e-11);
            assert!((anom - (&x * &tr.t).transpose()).amax() < 1e-11);
            let (c_shift, c_anom) = etkf_apply_column(&xt.column(1).into_owned(), &s, &d, a);
            assert!((c_shift - x.row(1).transpose().dot(&w_ref)).abs() < 1e-11);
            assert!((c_anom - (x.row(1) * &tr.t).transpose()).amax() < 1e-11);
        }
    }

    #[test]
    fn zero_spread_is_the_identity() {
        let s = DMatrix::zeros(4, 5);
        let d = DVector::from_element(4, 3.0);
        let tr = etkf_transform(&s, &d, 4.0);
        assert!((tr.t - DMatrix::identity(5, 5)).amax() < 1e-15);
        assert_eq!(tr.w.amax(), 0.0);
        let s = DMatrix::zeros(8, 5);
        let d = DVector::from_element(8, 3.0);
        let tr = etkf_transform(&s, &d, 4.0);
        assert!((tr.t - DMatrix::identity(5, 5)).amax() < 1e-15);
        assert_eq!(tr.w.amax(), 0.0);
    }

    /// Scoped threads, as the extension's workers are (minus the signal mask).
    struct TwoThreads;
    impl Workers for TwoThreads {
        fn threads(&self) -> usize {
            2
        }
        fn run<'a>(&self, jobs: Vec<Job<'a>>) {
            std::thread::scope(|scope| {
                for job in jobs {
                    scope.spawn(job);
                }
            });
        }
    }

    #[test]
    fn threaded_products_equal_sequential_ones() {
        // Large enough to split: m N^2 and N^2 k above PARALLEL_MIN_FLOPS; odd sizes so that
        // the blocks are uneven.
        let (m, n_members, k) = (2001, 67, 2501);
        let (s, _) = sample(m, n_members, 3);
        let (at, _) = sample(n_members, k, 4);
        let (t, _) = sample(n_members, n_members, 5);
        let g1 = gram(&s, &Sequential);
        let g2 = gram(&s, &TwoThreads);
        assert!((&g1 - &g2).amax() <= 1e-12 * g1.amax());
        assert!((&g1 - s.transpose() * &s).amax() <= 1e-12 * g1.amax());
        let p1 = left_mul(&t, &at, &Sequential);
        let p2 = left_mul(&t, &at, &TwoThreads);
        assert_eq!(p1, p2); // same products, column by column
        assert!((&p1 - &t * &at).amax() <= 1e-12 * p1.amax());
    }
}
