//! The dense kernels under the filters: matrix products, Gram matrices and vector sums,
//! computed by faer on zero-copy views of nalgebra's column-major storage.
//!
//! Why faer: its blocked GEMM and its divide-and-conquer symmetric eigensolver are several
//! times faster than nalgebra's own (100 x 100 eigendecomposition: 0.33 ms against 1.2 ms on
//! the benchmark machine), and transposed operands are strided views rather than copies.
//! Everything runs on the calling thread (`Par::Seq`): threads are the business of
//! [`crate::workers`], which can block signals as a PostgreSQL backend requires.

use faer::{Accum, MatMut, MatRef, Par};
use nalgebra::DMatrix;

/// Independent partial sums: a plain `iter().sum()` is one dependent chain of additions
/// (the compiler may not reorder floating point), about 4x slower over an ensemble column.
const LANES: usize = 8;

/// `sum a_i b_i` with independent partial sums (vectorizes).
pub(crate) fn dot(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f64 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// `sum a_i` with independent partial sums (vectorizes).
pub(crate) fn sum(a: &[f64]) -> f64 {
    let mut acc = [0.0; LANES];
    let chunks = a.chunks_exact(LANES);
    let tail: f64 = chunks.remainder().iter().sum();
    for x in chunks {
        for l in 0..LANES {
            acc[l] += x[l];
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// A read-only faer view of a nalgebra matrix.
pub(crate) fn view(m: &DMatrix<f64>) -> MatRef<'_, f64> {
    MatRef::from_column_major_slice(m.as_slice(), m.nrows(), m.ncols())
}

/// A mutable faer view of a column-major slice holding `nrows x ncols` values.
pub(crate) fn view_mut(data: &mut [f64], nrows: usize, ncols: usize) -> MatMut<'_, f64> {
    MatMut::from_column_major_slice_mut(data, nrows, ncols)
}

/// `dst = a b` on the calling thread.
pub(crate) fn gemm_into(dst: MatMut<'_, f64>, a: MatRef<'_, f64>, b: MatRef<'_, f64>) {
    faer::linalg::matmul::matmul(dst, Accum::Replace, a, b, 1.0, Par::Seq);
    clear_upper_vector_state();
}

/// faer's AVX-512 kernels can return with the upper halves of the vector registers in use.
/// Until a `vzeroupper`, every SSE instruction of code compiled for baseline x86-64 (the rest
/// of this crate, and PostgreSQL) pays for a false dependency on them: measured in a backend,
/// the EAKF ran at half speed (24 ms instead of 12 ms a call) for the rest of the session after
/// one ETKF call. So every call into faer ends with one.
#[inline]
pub(crate) fn clear_upper_vector_state() {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: AVX is available (just checked); vzeroupper only clears the upper halves of
        // the vector registers, which hold nothing live between Rust statements.
        unsafe { zeroupper() }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn zeroupper() {
    std::arch::x86_64::_mm256_zeroupper();
}

/// The lower triangle (diagonal included) of `s^T s`, for the symmetric eigensolvers, which
/// read nothing else: half the multiply-adds of the full product. The strict upper triangle is
/// left as zeros.
pub(crate) fn gram_lower(s: MatRef<'_, f64>) -> DMatrix<f64> {
    let n = s.ncols();
    if s.nrows() * n * n < FAER_GEMM_MIN {
        return product(s.transpose(), s);
    }
    let mut out = DMatrix::zeros(n, n);
    faer::linalg::matmul::triangular::matmul(
        view_mut(out.as_mut_slice(), n, n),
        faer::linalg::matmul::triangular::BlockStructure::TriangularLower,
        Accum::Replace,
        s.transpose(),
        faer::linalg::matmul::triangular::BlockStructure::Rectangular,
        s,
        faer::linalg::matmul::triangular::BlockStructure::Rectangular,
        1.0,
        Par::Seq,
    );
    clear_upper_vector_state();
    out
}

/// Below this many multiply-adds faer's per-call set-up outweighs its kernel: the local
/// analyses of the LETKF (24 x 24 and smaller) ran 1.7x slower through it.
const FAER_GEMM_MIN: usize = 48 * 48 * 48;

/// `a b` as a new nalgebra matrix.
pub(crate) fn product(a: MatRef<'_, f64>, b: MatRef<'_, f64>) -> DMatrix<f64> {
    if a.nrows() * a.ncols() * b.ncols() < FAER_GEMM_MIN {
        let na = DMatrix::from_fn(a.nrows(), a.ncols(), |i, j| a[(i, j)]);
        let nb = DMatrix::from_fn(b.nrows(), b.ncols(), |i, j| b[(i, j)]);
        return na * nb;
    }
    let mut out = DMatrix::zeros(a.nrows(), b.ncols());
    let (r, c) = out.shape();
    gemm_into(view_mut(out.as_mut_slice(), r, c), a, b);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lane_sums_match_plain_sums() {
        for n in [0, 1, 7, 8, 9, 100, 1001] {
            let a: Vec<f64> = (0..n).map(|i| (i as f64 * 0.37).sin()).collect();
            let b: Vec<f64> = (0..n).map(|i| (i as f64 * 0.11).cos()).collect();
            let plain: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot(&a, &b) - plain).abs() < 1e-12, "dot {n}");
            assert!((sum(&a) - a.iter().sum::<f64>()).abs() < 1e-12, "sum {n}");
        }
    }

    #[test]
    fn products_through_transposed_views() {
        let a = DMatrix::from_fn(7, 5, |i, j| (i as f64) - 2.0 * j as f64);
        let b = DMatrix::from_fn(7, 3, |i, j| ((i + j) as f64).cos());
        let p = product(view(&a).transpose(), view(&b));
        assert!((p - a.transpose() * &b).amax() < 1e-13);
    }
}
