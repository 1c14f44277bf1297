//! Symmetric eigendecomposition for the ETKF's ensemble-space matrices (order 64 and up):
//! faer's Householder tridiagonalization, divide and conquer on the tridiagonal matrix done
//! here (split in the middle, recursively, down to the order where faer's QR iteration solves
//! the pieces), and faer's back-transformation.
//!
//! Why not faer's solver whole: at order 100 its merges spend a third of its time on the
//! roots of the secular equation, found by a secant iteration that evaluates the function 10
//! or more times a root. The merge here fits two poles and a constant, as LAPACK's dlaed4 does
//! (Li 1993): 4 to 5 evaluations a root, counting the first. The two halves of the top split,
//! the roots and the back-transformation are independent pieces of work for two threads. The
//! merge's eigenvectors come from recomputed weights (Gu & Eisenstat 1995), so that they are
//! orthogonal to working precision even when eigenvalues are close.

use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::evd::tridiag::{tridiag_in_place, tridiag_in_place_scratch};
use faer::linalg::evd::{
    self_adjoint_evd_scratch, tridiagonal_self_adjoint_evd, ComputeEigenvectors,
    SelfAdjointEvdParams,
};
use faer::linalg::householder::{
    apply_block_householder_sequence_on_the_left_in_place_scratch,
    apply_block_householder_sequence_on_the_left_in_place_with_conj,
};
use faer::{ColRef, Conj, Mat, MatRef, Par, Spec};
use nalgebra::{DMatrix, DVector};

use super::dense::{clear_upper_vector_state, gemm_into, view, view_mut};

/// faer's divide and conquer stops splitting at this order and uses the QR iteration below it,
/// as LAPACK's dsyevd does (faer's default, 128, was 10% slower at order 100).
pub(crate) const EIGEN_RECURSION: usize = 25;
use crate::workers::{Job, Sequential, Workers};

/// The solver gave up (faer's QR iteration did not converge, or a value came out non-finite);
/// the caller falls back to another implementation.
#[derive(Debug)]
pub(crate) struct NotConverged;

/// Eigenvalues, ascending, and their eigenvectors (columns).
type Eigenpairs = (DVector<f64>, DMatrix<f64>);

/// Eigenvectors (columns) and eigenvalues, ascending, of the symmetric `a` (n >= 2), reading
/// its lower triangle only. `interrupt` is called between the three stages (reduction,
/// tridiagonal solve, back-transformation), each O(n^3): the longest stretch without a check
/// is the reduction, measured in docs/operations.md ("Limits").
pub(crate) fn symmetric_eigen(
    a: MatRef<'_, f64>,
    workers: &dyn Workers,
    interrupt: &dyn Fn(),
) -> Result<(DMatrix<f64>, DVector<f64>), NotConverged> {
    let reduction = Reduction::of(a);
    interrupt();
    let (values, mut vectors) =
        tridiagonal_eigen(&reduction.diagonal(), &reduction.offdiagonal(), workers)?;
    interrupt();
    reduction.back_transform(&mut vectors, workers);
    if !vectors.iter().all(|v| v.is_finite()) {
        return Err(NotConverged);
    }
    Ok((vectors, values))
}

/// faer's Householder reduction of a symmetric matrix to tridiagonal form, kept for the
/// back-transformation of the tridiagonal matrix's eigenvectors.
struct Reduction {
    /// The tridiagonal matrix (diagonal and subdiagonal) with the reflectors below it.
    trid: Mat<f64>,
    /// The reflectors' block factors, in blocks of `block_size` columns.
    householder: Mat<f64>,
    block_size: usize,
}

impl Reduction {
    /// The reduction of the symmetric `a`, read from its lower triangle.
    fn of(a: MatRef<'_, f64>) -> Reduction {
        let n = a.nrows();
        let block_size = faer::linalg::qr::no_pivoting::factor::recommended_block_size::<f64>(n, n);
        let mut trid = Mat::<f64>::zeros(n, n);
        trid.copy_from_triangular_lower(a);
        let mut householder = Mat::<f64>::zeros(block_size, n - 1);
        let mut buf = MemBuffer::new(tridiag_in_place_scratch::<f64>(
            n,
            Par::Seq,
            Default::default(),
        ));
        tridiag_in_place(
            trid.as_mut(),
            householder.as_mut(),
            Par::Seq,
            MemStack::new(&mut buf),
            Default::default(),
        );
        clear_upper_vector_state();
        Reduction {
            trid,
            householder,
            block_size,
        }
    }

    /// The tridiagonal matrix's diagonal.
    fn diagonal(&self) -> Vec<f64> {
        (0..self.trid.nrows()).map(|i| self.trid[(i, i)]).collect()
    }

    /// The tridiagonal matrix's subdiagonal.
    fn offdiagonal(&self) -> Vec<f64> {
        (0..self.trid.nrows() - 1)
            .map(|i| self.trid[(i + 1, i)])
            .collect()
    }

    /// Takes `vectors` (columns) back to the original basis: the Householder reflectors act
    /// on rows 1.., independently on each column. Always two halves of the columns, on one
    /// thread or two, so that the arithmetic (the products' blocking) does not depend on the
    /// threads.
    fn back_transform(&self, vectors: &mut DMatrix<f64>, workers: &dyn Workers) {
        let n = self.trid.nrows();
        let bs = self.block_size;
        let basis = self.trid.as_ref().submatrix(1, 0, n - 1, n - 1);
        let reflectors = self.householder.as_ref();
        let width = n.div_ceil(2);
        let jobs: Vec<Job> = vectors
            .as_mut_slice()
            .chunks_mut(n * width)
            .map(|cols| {
                Box::new(move || {
                    let k = cols.len() / n;
                    let mut buf = MemBuffer::new(
                        apply_block_householder_sequence_on_the_left_in_place_scratch::<f64>(
                            n - 1,
                            bs,
                            k,
                        ),
                    );
                    apply_block_householder_sequence_on_the_left_in_place_with_conj(
                        basis,
                        reflectors,
                        Conj::No,
                        view_mut(cols, n, k).subrows_mut(1, n - 1),
                        Par::Seq,
                        MemStack::new(&mut buf),
                    );
                    clear_upper_vector_state();
                }) as Job
            })
            .collect();
        workers.run(jobs);
    }
}

/// Eigenvalues (ascending) and eigenvectors of the symmetric tridiagonal matrix with diagonal
/// `d` and off-diagonal `e`: split in the middle and merged, recursively, down to
/// `EIGEN_RECURSION` where faer's QR iteration takes over. The two halves of the top split go
/// to `workers`.
fn tridiagonal_eigen(
    d: &[f64],
    e: &[f64],
    workers: &dyn Workers,
) -> Result<Eigenpairs, NotConverged> {
    let n = d.len();
    if n <= EIGEN_RECURSION {
        let (vals, u) = faer_tridiagonal(d, e)?;
        return Ok((
            DVector::from_vec(vals),
            DMatrix::from_fn(n, n, |i, j| u[(i, j)]),
        ));
    }
    let k = n / 2;
    // T = diag(T1', T2') + rho u u^T with u = e_{k-1} + sign(beta) e_k and rho = |beta|:
    // the halves lose rho from the diagonal entries next to the cut.
    let beta = e[k - 1];
    let rho = beta.abs();
    let sign = if beta < 0.0 { -1.0 } else { 1.0 };
    let mut d1 = d[..k].to_vec();
    let mut d2 = d[k..].to_vec();
    d1[k - 1] -= rho;
    d2[0] -= rho;
    let mut halves: [Result<Eigenpairs, NotConverged>; 2] = [Err(NotConverged), Err(NotConverged)];
    {
        let [h1, h2] = &mut halves;
        let (e1, e2) = (&e[..k - 1], &e[k..]);
        let (d1, d2) = (&d1, &d2);
        let jobs: Vec<Job> = vec![
            Box::new(move || *h1 = tridiagonal_eigen(d1, e1, &Sequential)),
            Box::new(move || *h2 = tridiagonal_eigen(d2, e2, &Sequential)),
        ];
        workers.run(jobs);
    }
    let [h1, h2] = halves;
    let (vals1, q1) = h1?;
    let (vals2, q2) = h2?;

    merge(&vals1, &q1, &vals2, &q2, sign, rho, workers)
}

/// faer's eigendecomposition of a small symmetric tridiagonal matrix.
fn faer_tridiagonal(d: &[f64], e: &[f64]) -> Result<(Vec<f64>, Mat<f64>), NotConverged> {
    let m = d.len();
    let mut s = faer::diag::Diag::<f64>::zeros(m);
    let mut u = Mat::<f64>::zeros(m, m);
    let mut params: Spec<SelfAdjointEvdParams, f64> = Default::default();
    params.recursion_threshold = EIGEN_RECURSION;
    let mut buf = MemBuffer::new(self_adjoint_evd_scratch::<f64>(
        m,
        ComputeEigenvectors::Yes,
        Par::Seq,
        params,
    ));
    let solved = tridiagonal_self_adjoint_evd(
        ColRef::from_slice(d).as_diagonal(),
        ColRef::from_slice(e).as_diagonal(),
        s.as_mut(),
        Some(u.as_mut()),
        Par::Seq,
        MemStack::new(&mut buf),
        params,
    );
    clear_upper_vector_state();
    solved.map_err(|_| NotConverged)?;
    Ok(((0..m).map(|i| s[i]).collect(), u))
}

/// Eigenpairs of `Q (diag(d1, d2) + rho z z^T) Q^T` with `Q = diag(Q1, Q2)` and `z = Q^T u`,
/// `u = e_{k-1} + sign e_k` (k = the order of Q1), rho >= 0; sorted ascending.
fn merge(
    d1: &DVector<f64>,
    q1: &DMatrix<f64>,
    d2: &DVector<f64>,
    q2: &DMatrix<f64>,
    sign: f64,
    rho: f64,
    workers: &dyn Workers,
) -> Result<Eigenpairs, NotConverged> {
    let (mut poles, rho) = Poles::sorted(d1, q1, d2, q2, sign, rho);
    let deflation = deflate(&mut poles, rho);
    let pole: Vec<f64> = deflation.kept.iter().map(|&i| poles.d[i]).collect();
    let weight: Vec<f64> = deflation.kept.iter().map(|&i| poles.w[i]).collect();
    let roots = secular_roots(&pole, &weight, rho, workers)?;
    let v = secular_eigenvectors(&pole, &weight, rho, &roots);
    // Eigenvectors in the original basis: the kept columns of Q times V.
    let (n, nk) = (poles.d.len(), pole.len());
    let qk = DMatrix::<f64>::from_fn(n, nk, |r, c| poles.q[(r, deflation.kept[c])]);
    let mut merged = DMatrix::<f64>::zeros(n, nk);
    gemm_into(view_mut(merged.as_mut_slice(), n, nk), view(&qk), view(&v));
    let values: Vec<f64> = roots.iter().map(|r| r.value(&pole)).collect();
    Ok(sorted_eigenpairs(
        &values,
        &merged,
        &poles,
        &deflation.deflated,
    ))
}

/// The rank-one problem of a merge in the basis of the halves' eigenvectors: its poles
/// ascending, the rank-one vector's components (weights, unit length overall), and the
/// columns of `diag(Q1, Q2)` in the poles' order.
struct Poles {
    d: Vec<f64>,
    w: Vec<f64>,
    q: DMatrix<f64>,
}

impl Poles {
    /// The rank-one problem of `merge`'s arguments, poles sorted, and rho scaled for a
    /// rank-one vector of unit length.
    fn sorted(
        d1: &DVector<f64>,
        q1: &DMatrix<f64>,
        d2: &DVector<f64>,
        q2: &DMatrix<f64>,
        sign: f64,
        rho: f64,
    ) -> (Poles, f64) {
        let k = d1.len();
        let n = k + d2.len();
        let poles: Vec<f64> = d1.iter().chain(d2.iter()).copied().collect();
        let z: Vec<f64> = (0..n)
            .map(|j| {
                if j < k {
                    q1[(k - 1, j)]
                } else {
                    sign * q2[(0, j - k)]
                }
            })
            .collect();
        // |z|^2 = |u|^2 = 2 up to rounding: z to unit length, rho scaled accordingly.
        let norm2: f64 = z.iter().map(|v| v * v).sum();
        let rho = rho * norm2;
        let scale = 1.0 / norm2.sqrt();
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&i, &j| poles[i].total_cmp(&poles[j]));
        let d: Vec<f64> = order.iter().map(|&i| poles[i]).collect();
        let w: Vec<f64> = order.iter().map(|&i| z[i] * scale).collect();
        let mut q = DMatrix::<f64>::zeros(n, n);
        for (c, &j) in order.iter().enumerate() {
            if j < k {
                q.view_mut((0, c), (k, 1)).copy_from(&q1.column(j));
            } else {
                q.view_mut((k, c), (n - k, 1)).copy_from(&q2.column(j - k));
            }
        }
        (Poles { d, w, q }, rho)
    }
}

/// The poles that stay in the secular equation (`kept`, ascending) and those that are
/// eigenvalues already, with their columns as eigenvectors (`deflated`).
struct Deflation {
    kept: Vec<usize>,
    deflated: Vec<usize>,
}

/// Deflation: a negligible weight leaves its pole an eigenvalue with its column as vector;
/// two poles close enough are rotated (in `poles`) so that one of them has weight 0.
fn deflate(poles: &mut Poles, rho: f64) -> Deflation {
    let Poles { d, w, q } = poles;
    let n = d.len();
    let dmax = d.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let tol = 8.0 * f64::EPSILON * dmax.max(rho);
    let mut kept: Vec<usize> = Vec::with_capacity(n);
    let mut deflated: Vec<usize> = Vec::new();
    for i in 0..n {
        if rho * w[i].abs() <= tol {
            deflated.push(i);
            continue;
        }
        if let Some(&p) = kept.last() {
            let r = w[p].hypot(w[i]);
            let (c, s) = (w[i] / r, w[p] / r);
            if ((d[i] - d[p]) * c * s).abs() <= tol {
                for row in 0..n {
                    let (qp, qi) = (q[(row, p)], q[(row, i)]);
                    q[(row, p)] = c * qp - s * qi;
                    q[(row, i)] = s * qp + c * qi;
                }
                let (dp, di) = (d[p], d[i]);
                d[p] = c * c * dp + s * s * di;
                d[i] = s * s * dp + c * c * di;
                w[p] = 0.0;
                w[i] = r;
                kept.pop();
                deflated.push(p);
            }
        }
        kept.push(i);
    }
    Deflation { kept, deflated }
}

/// A root of the secular equation as the index of the pole it is measured from and its
/// offset from that pole: the differences to the poles are then exact where it matters.
#[derive(Debug, Clone, Copy)]
struct Root {
    pole: usize,
    offset: f64,
}

impl Root {
    /// The eigenvalue, given the poles.
    fn value(&self, pole: &[f64]) -> f64 {
        pole[self.pole] + self.offset
    }

    /// lambda - pole_j, from the root's own pole so that nothing cancels.
    fn gap(&self, pole: &[f64], j: usize) -> f64 {
        (pole[self.pole] - pole[j]) + self.offset
    }
}

/// Every root of the secular equation of `pole` (ascending) and `weight` (non-zero), in two
/// halves for `workers`; `NotConverged` if one came out non-finite.
fn secular_roots(
    pole: &[f64],
    weight: &[f64],
    rho: f64,
    workers: &dyn Workers,
) -> Result<Vec<Root>, NotConverged> {
    let nk = pole.len();
    let mut roots = vec![
        Root {
            pole: 0,
            offset: 0.0
        };
        nk
    ];
    if nk > 0 {
        let per = nk.div_ceil(2);
        let jobs: Vec<Job> = roots
            .chunks_mut(per)
            .enumerate()
            .map(|(part, roots)| {
                Box::new(move || {
                    for (k, root) in roots.iter_mut().enumerate() {
                        *root = secular_root(pole, weight, rho, part * per + k);
                    }
                }) as Job
            })
            .collect();
        workers.run(jobs);
    }
    if !roots.iter().all(|r| r.offset.is_finite()) {
        return Err(NotConverged);
    }
    Ok(roots)
}

/// The eigenvectors (columns, unit length) of `diag(pole) + rho zhat zhat^T`, where zhat are
/// the weights that the computed roots are exact eigenvalues for (Gu & Eisenstat):
/// zhat_j^2 = (lambda_j - d_j) / rho * prod_{i != j} (lambda_i - d_j) / (d_i - d_j).
/// Orthogonal to working precision even where roots are close.
fn secular_eigenvectors(pole: &[f64], weight: &[f64], rho: f64, roots: &[Root]) -> DMatrix<f64> {
    let nk = pole.len();
    let zhat: Vec<f64> = (0..nk)
        .map(|j| {
            let mut p = roots[j].gap(pole, j) / rho;
            for i in 0..nk {
                if i != j {
                    p *= roots[i].gap(pole, j) / (pole[i] - pole[j]);
                }
            }
            p.max(0.0).sqrt().copysign(weight[j])
        })
        .collect();
    let mut v = DMatrix::<f64>::zeros(nk, nk);
    for (i, root) in roots.iter().enumerate() {
        let mut col = v.column_mut(i);
        for j in 0..nk {
            col[j] = zhat[j] / -root.gap(pole, j);
        }
        let norm = col.norm();
        col /= norm;
    }
    v
}

/// The merge's eigenpairs, ascending: the roots' `values` with the columns of `merged`, and
/// the `deflated` poles with their columns of Q.
fn sorted_eigenpairs(
    values: &[f64],
    merged: &DMatrix<f64>,
    poles: &Poles,
    deflated: &[usize],
) -> Eigenpairs {
    /// An eigenvalue and where its vector is: column `index` of `merged` (a root) or of Q.
    struct Found {
        value: f64,
        index: usize,
        is_root: bool,
    }
    let n = poles.d.len();
    let mut found: Vec<Found> = values
        .iter()
        .enumerate()
        .map(|(i, &value)| Found {
            value,
            index: i,
            is_root: true,
        })
        .chain(deflated.iter().map(|&i| Found {
            value: poles.d[i],
            index: i,
            is_root: false,
        }))
        .collect();
    found.sort_by(|a, b| a.value.total_cmp(&b.value));
    let values = DVector::from_iterator(n, found.iter().map(|f| f.value));
    let mut vectors = DMatrix::<f64>::zeros(n, n);
    for (c, f) in found.iter().enumerate() {
        let src = if f.is_root {
            merged.column(f.index)
        } else {
            poles.q.column(f.index)
        };
        vectors.column_mut(c).copy_from(&src);
    }
    (values, vectors)
}

/// Root `i` of `1/rho + sum_j w_j^2 / (d_j - lambda)` (poles `d` ascending, weights non-zero,
/// rho > 0): between d_i and d_{i+1}, or above the last pole.
/// The iteration fits two poles and a constant to the function and its derivatives at the
/// current point (LAPACK's dlaed4, "middle way"), safeguarded by bisection on a bracket.
fn secular_root(d: &[f64], w: &[f64], rho: f64, i: usize) -> Root {
    let k = d.len();
    if k == 1 {
        return Root {
            pole: 0,
            offset: rho * w[0] * w[0],
        };
    }
    let secular = Secular::around(w, rho, i);
    let Start {
        pole: o,
        mut lo,
        mut hi,
        first,
    } = secular.start(d, i);
    let delta: Vec<f64> = d.iter().map(|dj| dj - d[o]).collect();
    let mut mu = nearest_in_bracket(first, (lo + hi) / 2.0, lo, hi);
    for _ in 0..100 {
        let s = secular.sums(&delta, mu);
        let f = secular.value(&s);
        if f == 0.0 {
            break;
        }
        if f < 0.0 {
            lo = mu;
        } else {
            hi = mu;
        }
        let bound = 8.0 * k as f64 * f64::EPSILON * (secular.inv_rho + s.psi.abs() + s.phi.abs());
        if f.abs() <= bound {
            break;
        }
        let next = nearest_in_bracket(secular.step(&delta, mu, f, &s), mu, lo, hi);
        let done = (next - mu).abs() <= 2.0 * f64::EPSILON * next.abs().max(f64::MIN_POSITIVE);
        mu = next;
        if done || hi - lo <= 2.0 * f64::EPSILON * lo.abs().max(hi.abs()) {
            break;
        }
    }
    Root {
        pole: o,
        offset: mu,
    }
}

/// The secular function of one root, `1/rho + psi + phi`, with psi summed over the poles up
/// to `left` and phi over those beyond: the model fitted to it keeps the poles `left` and
/// `right`, those on either side of the root (the last two poles for the last root).
struct Secular<'a> {
    w: &'a [f64],
    rho: f64,
    inv_rho: f64,
    left: usize,
    right: usize,
}

/// The partial sums psi and phi and their derivatives at one point.
struct Sums {
    psi: f64,
    dpsi: f64,
    phi: f64,
    dphi: f64,
}

/// Where the iteration for a root starts: the root's own pole, the bracket for the offset
/// from it, and the candidates for a first point.
struct Start {
    pole: usize,
    lo: f64,
    hi: f64,
    first: [Option<f64>; 2],
}

impl<'a> Secular<'a> {
    /// The function whose root `i` is sought (weights `w`, at least two poles).
    fn around(w: &'a [f64], rho: f64, i: usize) -> Secular<'a> {
        let k = w.len();
        let (left, right) = if i == k - 1 {
            (k - 2, k - 1)
        } else {
            (i, i + 1)
        };
        Secular {
            w,
            rho,
            inv_rho: 1.0 / rho,
            left,
            right,
        }
    }

    /// The partial sums and their derivatives at offset `mu` from the pole whose differences
    /// to the others are `delta`.
    fn sums(&self, delta: &[f64], mu: f64) -> Sums {
        let (w, left) = (self.w, self.left);
        let (mut psi, mut dpsi, mut phi, mut dphi) = (0.0, 0.0, 0.0, 0.0);
        for (wj, dj) in w[..=left].iter().zip(&delta[..=left]) {
            let t = wj / (dj - mu);
            psi += wj * t;
            dpsi += t * t;
        }
        for (wj, dj) in w[left + 1..].iter().zip(&delta[left + 1..]) {
            let t = wj / (dj - mu);
            phi += wj * t;
            dphi += t * t;
        }
        Sums {
            psi,
            dpsi,
            phi,
            dphi,
        }
    }

    /// The function's value from its partial sums.
    fn value(&self, s: &Sums) -> f64 {
        self.inv_rho + s.psi + s.phi
    }

    /// The zeros of the model fitted at offset `mu` (offsets in the same frame), where the
    /// function is `f`.
    fn step(&self, delta: &[f64], mu: f64, f: f64, s: &Sums) -> [Option<f64>; 2] {
        let (dl, dr) = (delta[self.left] - mu, delta[self.right] - mu);
        let a = (dl + dr) * f - dl * dr * (s.dpsi + s.dphi);
        let b = dl * dr * f;
        let c = f - dl * s.dpsi - dr * s.dphi;
        quadratic_roots(c, a, b).map(|eta| eta.map(|eta| mu + eta))
    }

    /// For root `i` of the poles `d`: above the last pole, the bracket up to rho |w|^2; for an
    /// inner root, the model's zero fitted at the middle of the interval, where the sign of
    /// the function also tells which pole is nearer (the root's own).
    fn start(&self, d: &[f64], i: usize) -> Start {
        if i == d.len() - 1 {
            let span = self.rho * self.w.iter().map(|v| v * v).sum::<f64>();
            return Start {
                pole: i,
                lo: 0.0,
                hi: span,
                first: [Some(span / 2.0), None],
            };
        }
        let half = (d[i + 1] - d[i]) / 2.0;
        let from_left: Vec<f64> = d.iter().map(|dj| dj - d[i]).collect();
        let s = self.sums(&from_left, half);
        let f = self.value(&s);
        let guess = self.step(&from_left, half, f, &s);
        if f >= 0.0 {
            Start {
                pole: i,
                lo: 0.0,
                hi: half,
                first: guess,
            }
        } else {
            Start {
                pole: i + 1,
                lo: -half,
                hi: 0.0,
                first: guess.map(|g| g.map(|g| g - 2.0 * half)),
            }
        }
    }
}

/// The candidate inside the bracket (`lo`, `hi`) nearest `mu`; the bracket's middle if none.
fn nearest_in_bracket(candidates: [Option<f64>; 2], mu: f64, lo: f64, hi: f64) -> f64 {
    candidates
        .into_iter()
        .flatten()
        .filter(|m| *m > lo && *m < hi)
        .min_by(|x, y| (x - mu).abs().total_cmp(&(y - mu).abs()))
        .unwrap_or((lo + hi) / 2.0)
}

/// The roots of `c x^2 - a x + b = 0`, computed without cancellation.
fn quadratic_roots(c: f64, a: f64, b: f64) -> [Option<f64>; 2] {
    if c == 0.0 {
        return [(a != 0.0).then(|| b / a), None];
    }
    let disc = (a * a - 4.0 * b * c).max(0.0).sqrt();
    let q = 0.5 * (a + disc.copysign(a));
    if q == 0.0 {
        return [Some(0.0), None];
    }
    [Some(q / c), Some(b / q)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{normal, seeded};
    use crate::workers::{ScopedThreads, Sequential};
    use nalgebra::SymmetricEigen;

    /// Residual, orthogonality and eigenvalues against nalgebra's independent solver.
    fn check(a: &DMatrix<f64>, label: &str) {
        let n = a.nrows();
        let (vecs, vals) = symmetric_eigen(view(a), &Sequential, &|| {}).expect(label);
        let scale = a.norm().max(1.0);
        let residual = (a * &vecs - &vecs * DMatrix::from_diagonal(&vals)).amax();
        assert!(residual <= 1e-13 * scale, "{label}: residual {residual:e}");
        let ortho = (vecs.transpose() * &vecs - DMatrix::identity(n, n)).amax();
        assert!(ortho <= 1e-13, "{label}: orthogonality {ortho:e}");
        let mut want: Vec<f64> = SymmetricEigen::new(a.clone())
            .eigenvalues
            .iter()
            .copied()
            .collect();
        want.sort_by(f64::total_cmp);
        for (g, w) in vals.iter().zip(&want) {
            assert!(
                (g - w).abs() <= 1e-12 * scale,
                "{label}: eigenvalue {g} vs {w}"
            );
        }
        assert!(
            vals.as_slice().windows(2).all(|p| p[0] <= p[1]),
            "{label}: not sorted"
        );
        // Two threads do the same arithmetic.
        let (vecs2, vals2) = symmetric_eigen(view(a), &ScopedThreads(2), &|| {}).unwrap();
        assert_eq!(
            (vecs2, vals2),
            (vecs, vals),
            "{label}: threads changed the result"
        );
    }

    fn random_symmetric(n: usize, seed: u64) -> DMatrix<f64> {
        let mut rng = seeded(seed);
        let g = DMatrix::from_fn(n, n, |_, _| normal(&mut rng));
        (&g + g.transpose()) * 0.5
    }

    #[test]
    fn random_matrices() {
        for (n, seed) in [(64, 1), (65, 2), (100, 3), (151, 4), (200, 5)] {
            check(&random_symmetric(n, seed), &format!("random {n}"));
        }
    }

    #[test]
    fn ensemble_space_matrices_with_repeated_eigenvalues() {
        // a I + S^T S with fewer observations than members: most eigenvalues equal a exactly,
        // so the merge deflates most of its poles; and with centred anomalies (rank N - 1).
        for (m, n, seed) in [(10, 100, 6), (99, 100, 7), (200, 100, 8), (3, 64, 9)] {
            let mut rng = seeded(seed);
            let mut s = DMatrix::from_fn(m, n, |_, _| normal(&mut rng));
            for mut row in s.row_iter_mut() {
                let mean = row.mean();
                row.add_scalar_mut(-mean);
            }
            let a = DMatrix::identity(n, n) * (n - 1) as f64 + s.transpose() * &s;
            check(&a, &format!("ensemble m {m} N {n}"));
        }
    }

    #[test]
    fn structured_matrices() {
        // Diagonal (nothing to merge), with repeated entries.
        let diag = DMatrix::from_fn(80, 80, |i, j| if i == j { (i % 7) as f64 } else { 0.0 });
        check(&diag, "diagonal");
        check(&DMatrix::identity(70, 70), "identity");
        // Identity plus a rank-one term; and Wilkinson's W+ (pairs of very close eigenvalues).
        let v = DVector::from_fn(90, |i, _| (i as f64 * 0.3).sin());
        check(
            &(DMatrix::identity(90, 90) + &v * v.transpose()),
            "rank one",
        );
        let n = 101;
        let w = DMatrix::from_fn(n, n, |i, j| {
            if i == j {
                (i as f64 - 50.0).abs()
            } else if i.abs_diff(j) == 1 {
                1.0
            } else {
                0.0
            }
        });
        check(&w, "Wilkinson W+ 101");
        // Widely spread scales.
        let mut rng = seeded(10);
        let g = DMatrix::from_fn(96, 96, |i, _| {
            normal(&mut rng) * 10f64.powi((i % 9) as i32 - 4)
        });
        check(&(g.transpose() * &g), "graded");
    }
}
