//! Stochastic EnKF with perturbed observations (Burgers, van Leeuwen and Evensen 1998).
//!
//! Each member is updated with the Kalman gain against the observations plus a draw of their
//! error; the draws are centred over the members so that the analysis mean equals the Kalman
//! mean of the prior mean (one source of sampling error removed, as DAPPER does). Without
//! localization the gain is applied in ensemble space; with `loc_radius` the covariances are
//! tapered element-wise (Schur product) and the gain is solved in observation space by Cholesky.

use nalgebra::DMatrix;

use super::transform::gain_apply;
use super::{whiten, Observations, Split};
use crate::error::{EnkfError, Result};
use crate::localization::Taper;

/// Centred observation-error draws, one column per member, in whitened units (unit variance).
fn perturbations(m: usize, members: usize, seed: u64) -> Result<DMatrix<f64>> {
    let mut rng = crate::rng::seeded(seed);
    // Column-major fill: member by member, observation by observation.
    let mut e = super::workspace::try_zeros(m, members, "observations")?;
    for v in e.iter_mut() {
        *v = crate::rng::normal(&mut rng);
    }
    for mut row in e.row_iter_mut() {
        let mu = row.mean();
        row.add_scalar_mut(-mu);
    }
    Ok(e)
}

pub(crate) fn analyze(
    prior: &Split,
    obs: &Observations,
    taper: &Taper,
    seed: u64,
    interrupt: &dyn Fn(),
) -> Result<Split> {
    let (members, n) = prior.at.shape();
    let m = obs.len();
    let a = (members - 1) as f64;
    let (s, d) = whiten(prior, obs)?;
    let eps = perturbations(m, members, seed)?;
    // Whitened innovation of each member: d - s_j + eps_j.
    let mut dmat = eps;
    for j in 0..members {
        let mut col = dmat.column_mut(j);
        col += &d;
        col -= s.column(j);
    }
    interrupt();
    // Increments, members-major (members x n).
    let increments = if taper.radius.is_none() {
        gain_apply(&prior.at, &s, &dmat, a)
    } else {
        localized_increments(prior, obs, taper, &s, &dmat, interrupt)?
    };
    // Members = mean + anomalies + increments; split again into mean and anomalies.
    let mut at = &prior.at + increments;
    let mut mean = prior.mean.clone();
    for (l, mut col) in at.column_iter_mut().enumerate() {
        let shift = col.mean();
        col.add_scalar_mut(-shift);
        mean[l] += shift;
    }
    debug_assert_eq!(at.ncols(), n);
    Ok(Split { mean, at })
}

/// `(K D)^T` with `K = (rho_xy o A S^T)(rho_yy o S S^T + a I)^{-1}` in whitened units (the
/// `R^{-1/2}` factors are folded into `S` and `D`), solved by Cholesky; members-major result.
fn localized_increments(
    prior: &Split,
    obs: &Observations,
    taper: &Taper,
    s: &DMatrix<f64>,
    dmat: &DMatrix<f64>,
    interrupt: &dyn Fn(),
) -> Result<DMatrix<f64>> {
    let (members, n) = prior.at.shape();
    let m = obs.len();
    let a = (members - 1) as f64;
    let mut c = s * s.transpose();
    for p in 0..m {
        for q in 0..m {
            c[(p, q)] *= taper.weight(obs.index[p], obs.index[q]);
        }
        c[(p, p)] += a;
    }
    interrupt();
    if !cholesky_in_place(&mut c, interrupt) {
        return Err(EnkfError::NotFinite {
            detail: "the localized innovation covariance is not positive definite".into(),
            hint: "check obs_variance for extremely small values relative to the ensemble spread"
                .into(),
        });
    }
    let mut z = dmat.clone(); // m x members
    c.solve_lower_triangular_mut(&mut z);
    c.tr_solve_lower_triangular_mut(&mut z);
    // (rho o A S^T)^T = rho^T o (S A^T), m x n.
    let mut cross_t = s * &prior.at;
    for l in 0..n {
        interrupt();
        let mut col = cross_t.column_mut(l);
        for q in 0..m {
            col[q] *= taper.weight(l, obs.index[q]);
        }
    }
    Ok(z.transpose() * cross_t)
}

/// Right-looking Cholesky factorisation `C = L L^T`, leaving `L` in the lower triangle (the
/// upper triangle is left as scratch). Column-oriented, so the inner loops run over contiguous
/// memory, and interruptible between columns: it is the one O(m^3) step of this filter.
fn cholesky_in_place(c: &mut DMatrix<f64>, interrupt: &dyn Fn()) -> bool {
    let m = c.nrows();
    for j in 0..m {
        if j % 16 == 0 {
            interrupt();
        }
        let d = c[(j, j)];
        if !(d > 0.0 && d.is_finite()) {
            return false;
        }
        let root = d.sqrt();
        c[(j, j)] = root;
        for i in j + 1..m {
            c[(i, j)] /= root;
        }
        // Trailing update of the lower triangle: C[k.., k] -= L[k.., j] * L[k, j].
        for k in j + 1..m {
            let lkj = c[(k, j)];
            if lkj == 0.0 {
                continue;
            }
            for i in k..m {
                let lij = c[(i, j)];
                c[(i, k)] -= lij * lkj;
            }
        }
    }
    // Zero the strict upper triangle so that `c` is exactly L.
    for j in 1..m {
        for i in 0..j {
            c[(i, j)] = 0.0;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cholesky_matches_nalgebra() {
        let m = 9;
        let b = DMatrix::from_fn(m, m, |i, j| {
            ((i * 7 + j * 3) % 5) as f64 - 2.0 + if i == j { 0.5 } else { 0.0 }
        });
        let a = &b * b.transpose() + DMatrix::identity(m, m);
        let mut l = a.clone();
        assert!(cholesky_in_place(&mut l, &|| {}));
        let want = a.clone().cholesky().unwrap().l();
        assert!((l - want).amax() < 1e-12);
        let mut bad = DMatrix::from_element(3, 3, 1.0);
        bad[(2, 2)] = -1.0;
        assert!(!cholesky_in_place(&mut bad, &|| {}));
    }
}
