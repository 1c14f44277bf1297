//! Random mean-preserving rotation of the analysis anomalies (Sakov and Oke 2008): an
//! orthogonal transform that leaves the mean and covariance unchanged but breaks the alignment
//! of members that square-root filters otherwise keep from cycle to cycle, which in strongly
//! nonlinear systems lets outlier members build up.

use nalgebra::DMatrix;

use crate::rng::{normal, seeded};

/// A Haar-distributed orthogonal `N x N` matrix `U` with `U 1 = 1` (mean-preserving).
pub fn mean_preserving_rotation(members: usize, seed: u64) -> DMatrix<f64> {
    let n = members;
    if n < 2 {
        return DMatrix::identity(n, n);
    }
    // Orthonormal basis of the complement of 1: the Helmert sub-matrix (columns).
    let mut basis = DMatrix::zeros(n, n - 1);
    for k in 1..n {
        let norm = ((k * (k + 1)) as f64).sqrt();
        for i in 0..k {
            basis[(i, k - 1)] = 1.0 / norm;
        }
        basis[(k, k - 1)] = -(k as f64) / norm;
    }
    let mut rng = seeded(seed ^ 0x5eed_0f40_7a7e);
    let g = DMatrix::from_fn(n - 1, n - 1, |_, _| normal(&mut rng));
    let qr = g.qr();
    let mut q = qr.q();
    // Fix the signs so that the distribution is Haar (Mezzadri 2007).
    let r = qr.r();
    for j in 0..n - 1 {
        if r[(j, j)] < 0.0 {
            let mut col = q.column_mut(j);
            col *= -1.0;
        }
    }
    let mut u = &basis * q * basis.transpose();
    u.add_scalar_mut(1.0 / n as f64);
    u
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_is_orthogonal_and_keeps_the_mean() {
        for n in [2, 3, 7, 24] {
            let u = mean_preserving_rotation(n, 42);
            assert!((u.transpose() * &u - DMatrix::identity(n, n)).amax() < 1e-12);
            for row in u.row_iter() {
                assert!((row.sum() - 1.0).abs() < 1e-12);
            }
        }
        assert_eq!(
            mean_preserving_rotation(5, 1),
            mean_preserving_rotation(5, 1)
        );
        assert_ne!(
            mean_preserving_rotation(5, 1),
            mean_preserving_rotation(5, 2)
        );
    }
}
