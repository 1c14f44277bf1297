//! The linear algebra shared by the ensemble filters, in whitened form.
//!
//! With prior observation anomalies `Yb` (m x N), `R = diag(r)`, `S = R^{-1/2} Yb`,
//! innovations `d = R^{-1/2} (y - ybar)` and `a = N - 1`, every update here goes through
//! `M = a I + S^T S` (N x N), symmetric positive definite with eigenvalues >= a. When there are
//! fewer observations than members, the same quantities come from the smaller
//! `G = S S^T` (m x m) by the push-through identity `(aI + S^T S)^{-1} S^T = S^T (aI + S S^T)^{-1}`.
//! Either way only a symmetric eigendecomposition is used: no explicit inverse.

use faer::{MatMut, MatRef};
use nalgebra::{DMatrix, DVector};

use crate::linalg::dense::{gemm_into, gram_lower, product, view, view_mut};
use crate::linalg::{psd_eigen, psd_eigen_with};
use crate::workers::{Job, Sequential, Workers};

/// `a^T b` for matrices, the transpose a strided view.
fn t_mul(a: &DMatrix<f64>, b: &DMatrix<f64>) -> DMatrix<f64> {
    product(view(a).transpose(), view(b))
}

/// `a b`.
fn mul(a: &DMatrix<f64>, b: &DMatrix<f64>) -> DMatrix<f64> {
    product(view(a), view(b))
}

/// `a b^T`.
fn mul_t(a: &DMatrix<f64>, b: &DMatrix<f64>) -> DMatrix<f64> {
    product(view(a), view(b).transpose())
}

/// Work below this many multiply-adds is not worth a thread.
pub(crate) const PARALLEL_MIN_FLOPS: usize = 4_000_000;

/// The lower triangle of `S^T S` (all the eigensolver reads) for a tall `S` (m x N), the row
/// blocks summed from several threads. Above `GRAM_BLOCK_FLOPS` the rows go in blocks of a
/// fixed height, a round of them per thread at a time, with an interrupt check between rounds
/// (a 10^5 x 3000 product takes seconds) and the partial sums added in block order, so that
/// the result does not depend on the threads.
fn gram(s: MatRef<'_, f64>, workers: &dyn Workers, interrupt: &dyn Fn()) -> DMatrix<f64> {
    let (m, n) = (s.nrows(), s.ncols());
    let flops = m.saturating_mul(n).saturating_mul(n);
    if flops >= GRAM_BLOCK_FLOPS {
        return gram_in_blocks(s, workers, interrupt);
    }
    let parts = workers.threads().min(flops / PARALLEL_MIN_FLOPS).max(1);
    if parts == 1 {
        return gram_lower(s);
    }
    let rows = m.div_ceil(parts);
    let mut partial: Vec<DMatrix<f64>> = (0..parts).map(|_| DMatrix::zeros(0, 0)).collect();
    let jobs: Vec<Job> = partial
        .iter_mut()
        .enumerate()
        .map(|(k, out)| {
            let start = (k * rows).min(m);
            let block = s.subrows(start, rows.min(m - start));
            Box::new(move || *out = gram_lower(block)) as Job
        })
        .collect();
    workers.run(jobs);
    let mut sum = partial.pop().unwrap_or_else(|| DMatrix::zeros(n, n));
    for p in partial {
        sum += p;
    }
    sum
}

/// Multiply-adds of a Gram product above which it is computed in interruptible blocks: about
/// a tenth of a second of work.
const GRAM_BLOCK_FLOPS: usize = 1 << 28;

fn gram_in_blocks(s: MatRef<'_, f64>, workers: &dyn Workers, interrupt: &dyn Fn()) -> DMatrix<f64> {
    let (m, n) = (s.nrows(), s.ncols());
    let height = (GRAM_BLOCK_FLOPS / 4 / (n * n).max(1)).max(64);
    let starts: Vec<usize> = (0..m).step_by(height).collect();
    let mut total = DMatrix::zeros(n, n);
    for round in starts.chunks(workers.threads().max(1)) {
        interrupt();
        let mut partial: Vec<DMatrix<f64>> = round.iter().map(|_| DMatrix::zeros(0, 0)).collect();
        let jobs: Vec<Job> = partial
            .iter_mut()
            .zip(round)
            .map(|(out, &start)| {
                let block = s.subrows(start, height.min(m - start));
                Box::new(move || *out = gram_lower(block)) as Job
            })
            .collect();
        workers.run(jobs);
        for p in partial {
            total += p;
        }
    }
    total
}

/// `a^T v` for a vector `v`.
fn t_mul_vec(a: MatRef<'_, f64>, v: &DVector<f64>) -> DVector<f64> {
    let mut out = DVector::zeros(a.ncols());
    let n = out.len();
    gemm_into(
        view_mut(out.as_mut_slice(), n, 1),
        a.transpose(),
        MatRef::from_column_major_slice(v.as_slice(), v.len(), 1),
    );
    out
}

/// `g(l) = (sqrt(a / (a + l)) - 1) / l`, written so that it is exact near `l = 0`.
fn sqrt_shrink_over_lambda(a: f64, l: f64) -> f64 {
    let s = (a + l).sqrt();
    -1.0 / (s * (a.sqrt() + s))
}

/// The ETKF transform of Hunt et al. (2007): the symmetric square root
/// `T = [a M^{-1}]^{1/2}` and the mean weights `w = M^{-1} S^T d` (N x N and N).
pub struct EnsembleTransform {
    pub t: DMatrix<f64>,
    pub w: DVector<f64>,
}

pub fn etkf_transform(s: &DMatrix<f64>, d: &DVector<f64>, a: f64) -> EnsembleTransform {
    etkf_transform_with(view(s), d, a, &Sequential, &|| {})
}

/// As [`etkf_transform`], `s` (m x N) any strided view (a transposed members-major matrix).
fn etkf_transform_with(
    s: MatRef<'_, f64>,
    d: &DVector<f64>,
    a: f64,
    workers: &dyn Workers,
    interrupt: &dyn Fn(),
) -> EnsembleTransform {
    let (m, n_members) = (s.nrows(), s.ncols());
    if m >= n_members {
        let (q, lam) = ensemble_space_eigen(s, a, workers, interrupt);
        let mut qd = q.clone();
        for (mut col, l) in qd.column_iter_mut().zip(lam.iter()) {
            col *= (a / l).sqrt();
        }
        let t = mul_t(&qd, &q);
        let qt_std = q.tr_mul(&t_mul_vec(s, d));
        let w = &q * qt_std.component_div(&lam);
        EnsembleTransform { t, w }
    } else {
        let (u, lam) = psd_eigen(&gram_lower(s.transpose()));
        // T = I + S^T U diag(g(l)) U^T S
        let us = product(view(&u).transpose(), s); // m x N
        let mut scaled = us.clone();
        for (mut row, l) in scaled.row_iter_mut().zip(lam.iter()) {
            row *= sqrt_shrink_over_lambda(a, *l);
        }
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
    s: MatRef<'_, f64>,
    a: f64,
    workers: &dyn Workers,
    interrupt: &dyn Fn(),
) -> (DMatrix<f64>, DVector<f64>) {
    let mut mm = gram(s, workers, interrupt);
    for i in 0..mm.nrows() {
        mm[(i, i)] += a;
    }
    interrupt();
    let (q, lam) = psd_eigen_with(&mm, workers, interrupt);
    (q, lam.map(|l| l.max(a)))
}

/// The ETKF map from prior to analysis anomalies, members-major: `A^T -> T A^T`.
pub enum AnomalyTransform {
    /// No observations: the anomalies stay as they are.
    Identity,
    /// The N x N symmetric square root `T`.
    Full(DMatrix<f64>),
    /// `T = I + L R` with `L = S^T U diag(g)` (N x m) and `R = U^T S` (m x N). With fewer
    /// observations than members, applying the factors costs O(k m N) instead of O(k N^2).
    LowRank {
        left: DMatrix<f64>,
        right: DMatrix<f64>,
    },
}

impl AnomalyTransform {
    /// `dst = T src` for `src`, `dst` (members x k); `tmp` is scratch the caller keeps between
    /// calls so that nothing is allocated per block.
    pub fn apply(&self, src: MatRef<'_, f64>, mut dst: MatMut<'_, f64>, tmp: &mut Vec<f64>) {
        match self {
            AnomalyTransform::Identity => dst.copy_from(src),
            AnomalyTransform::Full(t) => gemm_into(dst, view(t), src),
            AnomalyTransform::LowRank { left, right } => {
                let (m, k) = (right.nrows(), src.ncols());
                tmp.resize(m * k, 0.0);
                let rs = view_mut(tmp, m, k);
                gemm_into(rs, view(right), src);
                dst.copy_from(src);
                faer::linalg::matmul::matmul(
                    dst,
                    faer::Accum::Add,
                    view(left),
                    MatRef::from_column_major_slice(tmp, m, k),
                    1.0,
                    faer::Par::Seq,
                );
                crate::linalg::dense::clear_upper_vector_state();
            }
        }
    }

    /// `U^T T`: the analysis anomalies rotated by the orthogonal `U` (members x members).
    pub fn rotated(self, u: &DMatrix<f64>) -> AnomalyTransform {
        let n = u.nrows();
        let t = match self {
            AnomalyTransform::Identity => DMatrix::identity(n, n),
            AnomalyTransform::Full(t) => t,
            AnomalyTransform::LowRank { left, right } => {
                let mut t = mul(&left, &right);
                for i in 0..n {
                    t[(i, i)] += 1.0;
                }
                t
            }
        };
        AnomalyTransform::Full(t_mul(u, &t))
    }
}

/// The ETKF's anomaly transform and mean weights `w = M^{-1} S^T d` from the whitened
/// observation anomalies, members-major (`st` = S^T, N x m: each observation's members
/// contiguous), and innovations `d`, in the cheaper space.
pub fn etkf_operator(
    st: &DMatrix<f64>,
    d: &DVector<f64>,
    a: f64,
    workers: &dyn Workers,
    interrupt: &dyn Fn(),
) -> (AnomalyTransform, DVector<f64>) {
    let (n_members, m) = st.shape();
    if m == 0 {
        return (AnomalyTransform::Identity, DVector::zeros(n_members));
    }
    let s = view(st).transpose();
    if m >= n_members {
        let tr = etkf_transform_with(s, d, a, workers, interrupt);
        return (AnomalyTransform::Full(tr.t), tr.w);
    }
    let gram_obs = gram(view(st), workers, interrupt);
    interrupt();
    let (u, lam) = psd_eigen_with(&gram_obs, workers, interrupt);
    let right = product(view(&u).transpose(), s); // U^T S, m x N
    let utd = u.tr_mul(d).component_div(&lam.map(|l| a + l));
    let w = right.tr_mul(&utd); // S^T U diag(1/(a+l)) U^T d
    let mut left = right.transpose();
    for (mut col, l) in left.column_iter_mut().zip(lam.iter()) {
        col *= sqrt_shrink_over_lambda(a, *l);
    }
    (AnomalyTransform::LowRank { left, right }, w)
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
        let (u, lam) = psd_eigen(&mul_t(s, s));
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
        let (q, lam) = ensemble_space_eigen(view(s), a, &Sequential, &|| {});
        let mut qt = t_mul(&q, &t_mul(s, dmat)); // N x c
        for (mut row, l) in qt.row_iter_mut().zip(lam.iter()) {
            row /= *l;
        }
        // (A W)^T = W^T A^T with W = Q qt, N x N: small, since N <= m here.
        t_mul(&mul(&q, &qt), at)
    } else {
        let (u, lam) = psd_eigen(&mul_t(s, s));
        let mut utd = t_mul(&u, dmat); // m x c
        for (mut row, l) in utd.row_iter_mut().zip(lam.iter()) {
            row /= a + *l;
        }
        // W = S^T M with M = U utd (m x N); (A W)^T = M^T (S A^T) never forms the N x N W,
        // which for large ensembles would not fit in memory.
        t_mul(&mul(&u, &utd), &mul(s, at))
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
            let st = s.transpose();
            let (op, w) = etkf_operator(&st, &d, a, &Sequential, &|| {});
            assert!((&w - &w_ref).amax() < 1e-12, "operator w m={m} n={n}");
            let mut tmp = Vec::new();
            let mut anom = DMatrix::zeros(n, 3);
            op.apply(view(&xt), view_mut(anom.as_mut_slice(), n, 3), &mut tmp);
            assert!((anom - (&x * &tr.t).transpose()).amax() < 1e-11);
            // A rotation folded into the operator: U^T T.
            let u = super::super::rotation::mean_preserving_rotation(n, 7);
            let (op, _) = etkf_operator(&st, &d, a, &Sequential, &|| {});
            let mut rot = DMatrix::zeros(n, 3);
            op.rotated(&u)
                .apply(view(&xt), view_mut(rot.as_mut_slice(), n, 3), &mut tmp);
            assert!((rot - u.transpose() * (&x * &tr.t).transpose()).amax() < 1e-11);
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

    #[test]
    fn threaded_products_equal_sequential_ones() {
        // Large enough to split: m N^2 above PARALLEL_MIN_FLOPS; an odd size so that the
        // blocks are uneven.
        let (m, n_members) = (2001, 67);
        let (s, _) = sample(m, n_members, 3);
        let g1 = gram(view(&s), &Sequential, &|| {});
        let g2 = gram(view(&s), &crate::workers::ScopedThreads(2), &|| {});
        assert!((&g1 - &g2).amax() <= 1e-12 * g1.amax());
        // The lower triangle is S^T S; the strict upper one is left at zero.
        let full = s.transpose() * &s;
        assert!((g1.lower_triangle() - full.lower_triangle()).amax() <= 1e-12 * full.amax());
        assert_eq!(g1.upper_triangle(), DMatrix::from_diagonal(&g1.diagonal()));
    }
}
