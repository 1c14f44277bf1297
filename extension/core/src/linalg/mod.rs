//! The linear algebra under the filters: dense products (`dense`), and the symmetric
//! eigendecomposition every filter solves through (`psd_eigen`), by nalgebra for small orders
//! and by the divide and conquer of `eigen` from order 64.

pub(crate) mod dense;
pub(crate) mod eigen;

use nalgebra::{DMatrix, DVector, SymmetricEigen};

use dense::view;

/// Eigenvectors (columns) and eigenvalues, ascending, of a symmetric matrix; only its lower
/// triangle is read. Eigenvalues of a positive semi-definite matrix can come out slightly
/// negative by rounding: they are clamped at 0.
pub(crate) fn psd_eigen(m: &DMatrix<f64>) -> (DMatrix<f64>, DVector<f64>) {
    psd_eigen_with(m, &crate::workers::Sequential, &|| {})
}

/// As [`psd_eigen`], with independent parts of the work on `workers` (same result) and
/// `interrupt` called between its stages.
pub(crate) fn psd_eigen_with(
    m: &DMatrix<f64>,
    workers: &dyn crate::workers::Workers,
    interrupt: &dyn Fn(),
) -> (DMatrix<f64>, DVector<f64>) {
    let n = m.nrows();
    if n == 0 {
        return (DMatrix::zeros(0, 0), DVector::zeros(0));
    }
    if n < FAER_EIGEN_MIN {
        return nalgebra_eigen(m);
    }
    match eigen::symmetric_eigen(view(m), workers, interrupt) {
        Ok((u, vals)) => (u, vals.map(|v| v.max(0.0))),
        // An iteration did not converge (never seen on the symmetric positive definite
        // matrices here): fall back to nalgebra's independent implementation.
        Err(_) => nalgebra_eigen(m),
    }
}

/// Below this order nalgebra's eigensolver is the faster (24 x 24: 0.026 ms against 0.055 ms;
/// at 100 x 100 faer's is faster and the gap grows with the order).
const FAER_EIGEN_MIN: usize = 64;

/// nalgebra's eigendecomposition, sorted ascending like faer's.
fn nalgebra_eigen(m: &DMatrix<f64>) -> (DMatrix<f64>, DVector<f64>) {
    let eig = SymmetricEigen::new(m.clone());
    let n = m.nrows();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| eig.eigenvalues[i].total_cmp(&eig.eigenvalues[j]));
    let vals = DVector::from_fn(n, |k, _| eig.eigenvalues[order[k]].max(0.0));
    let vecs = DMatrix::from_fn(n, n, |i, k| eig.eigenvectors[(i, order[k])]);
    (vecs, vals)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eigen_reconstructs_and_sorts() {
        let b = DMatrix::from_fn(30, 12, |i, j| ((i * 7 + j * 3) as f64).sin());
        let m = b.transpose() * &b;
        let (u, l) = psd_eigen(&m);
        let back = &u * DMatrix::from_diagonal(&l) * u.transpose();
        assert!((back - &m).amax() < 1e-11 * m.amax());
        assert!((u.transpose() * &u - DMatrix::identity(12, 12)).amax() < 1e-12);
        assert!(l.as_slice().windows(2).all(|w| w[0] <= w[1]));
        // Both implementations, side of FAER_EIGEN_MIN.
        let b = DMatrix::from_fn(90, 70, |i, j| ((i * 5 + j * 11) as f64).cos());
        let m = b.transpose() * &b;
        let (u, l) = psd_eigen(&m);
        let (u2, l2) = nalgebra_eigen(&m);
        assert!((&l - &l2).amax() < 1e-10 * l.amax());
        let back = &u2 * DMatrix::from_diagonal(&l2) * u2.transpose();
        assert!((back - &u * DMatrix::from_diagonal(&l) * u.transpose()).amax() < 1e-10 * m.amax());
        let (u0, l0) = psd_eigen(&DMatrix::zeros(0, 0));
        assert_eq!((u0.len(), l0.len()), (0, 0));
    }
}
