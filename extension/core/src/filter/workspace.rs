//! What one analysis allocates, known from the sizes of its arguments before it starts.
//!
//! A failed allocation aborts the process (Rust's default on an out-of-memory), and inside
//! PostgreSQL an aborted backend makes the postmaster restart every session. So the caller
//! checks the largest matrix a method will build against its limit first, and refuses
//! arguments that would need more; the biggest buffers are also allocated fallibly, so that an
//! estimate that is off still ends in an error instead of an abort.

use nalgebra::DMatrix;

use super::{runs_in_place, Method, Options};
use crate::error::{EnkfError, Result};

/// The largest matrix an analysis builds: its number of values, the argument whose size
/// drives it, and what it is (for the error message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workspace {
    pub elements: usize,
    pub arg: &'static str,
    pub what: String,
}

impl Workspace {
    fn of(rows: usize, cols: usize, arg: &'static str, what: &str) -> Workspace {
        Workspace {
            elements: rows.saturating_mul(cols),
            arg,
            what: format!("{what} ({rows} x {cols})"),
        }
    }
}

/// The largest matrix `method` builds for an ensemble of `state_dim` elements and `members`
/// members with `m` observations. Beside the ensemble (`state_dim x members`, bounded on its
/// own), every method builds at most a few matrices of this size (see each method's list).
pub fn largest(state_dim: usize, members: usize, m: usize, opts: &Options) -> Workspace {
    let ensemble = Workspace::of(state_dim, members, "ensemble", "the ensemble");
    workspaces(state_dim, members, m, opts)
        .into_iter()
        .fold(
            ensemble,
            |big, w| if w.elements > big.elements { w } else { big },
        )
}

/// The matrices beside the ensemble that the analysis of `opts` builds (none without
/// observations).
fn workspaces(state_dim: usize, members: usize, m: usize, opts: &Options) -> Vec<Workspace> {
    if m == 0 {
        return vec![];
    }
    if runs_in_place(opts) {
        return in_place_workspaces(members, m);
    }
    match opts.method {
        Method::Letkf => letkf_workspaces(members, m),
        // One observation at a time: nothing beyond the ensemble.
        Method::Eakf => vec![],
        Method::Enkf if opts.loc_radius.is_some() => {
            localized_enkf_workspaces(state_dim, members, m)
        }
        Method::Enkf => enkf_workspaces(state_dim, members, m),
        Method::Etkf => unreachable!("the ETKF streams"),
    }
}

/// The global ETKF's: whitened anomalies S^T (members x m); then either M = aI + S^T S with
/// its eigenvectors and the transform (members x members, when m >= members) or S S^T with
/// its eigenvectors (m x m) and the low-rank factors (members x m).
fn in_place_workspaces(members: usize, m: usize) -> Vec<Workspace> {
    let square = m.min(members);
    vec![
        Workspace::of(
            members,
            m,
            "observations",
            "the whitened observation anomalies",
        ),
        Workspace::of(square, square, "observations", "the ensemble-space matrix"),
    ]
}

/// The LETKF's: one element at a time, each against the observations near it (at most m).
fn letkf_workspaces(members: usize, m: usize) -> Vec<Workspace> {
    let square = m.min(members);
    vec![
        Workspace::of(
            m,
            members,
            "observations",
            "the local observation anomalies",
        ),
        Workspace::of(square, square, "observations", "the local transform"),
    ]
}

/// The stochastic EnKF's with localization: the innovation and cross covariances, tapered.
fn localized_enkf_workspaces(state_dim: usize, members: usize, m: usize) -> Vec<Workspace> {
    vec![
        Workspace::of(m, members, "observations", "the perturbed innovations"),
        Workspace::of(m, m, "observations", "the localized innovation covariance"),
        Workspace::of(
            m,
            state_dim,
            "observations",
            "the localized cross covariance",
        ),
    ]
}

/// The stochastic EnKF's without localization: the gain in its low-rank form.
fn enkf_workspaces(state_dim: usize, members: usize, m: usize) -> Vec<Workspace> {
    let square = m.min(members);
    vec![
        Workspace::of(m, members, "observations", "the perturbed innovations"),
        Workspace::of(square, square, "observations", "the gain's eigenvectors"),
        Workspace::of(
            m.min(members),
            state_dim,
            "observations",
            "the gain's products",
        ),
    ]
}

/// Refuses (`TooLarge`, naming the argument) an analysis whose largest matrix would hold more
/// than `max_elements` values.
pub fn check(
    state_dim: usize,
    members: usize,
    m: usize,
    opts: &Options,
    max_elements: usize,
) -> Result<()> {
    let w = largest(state_dim, members, m, opts);
    if w.elements <= max_elements {
        return Ok(());
    }
    Err(EnkfError::TooLarge {
        arg: w.arg,
        detail: format!(
            "{}: method '{}' with {state_dim} state elements, {members} members and {m} observations needs {} of {} values, more than enkf.max_ensemble_elements = {max_elements}",
            w.arg, opts.method, w.what, w.elements
        ),
        hint: match w.arg {
            "observations" => "pass fewer observations per call (split them, or thin them), use fewer members, or a method whose cost grows with the local observations only ('eakf'); a superuser may raise enkf.max_ensemble_elements".into(),
            _ => "reduce the state or the number of members, or ask a superuser to raise enkf.max_ensemble_elements".into(),
        },
    })
}

/// A zero matrix allocated fallibly: an allocation the system refuses is an error, not an
/// abort of the process.
pub(crate) fn try_zeros(rows: usize, cols: usize, arg: &'static str) -> Result<DMatrix<f64>> {
    let len = rows
        .checked_mul(cols)
        .ok_or_else(|| too_big(rows, cols, arg))?;
    let mut data: Vec<f64> = Vec::new();
    data.try_reserve_exact(len)
        .map_err(|_| too_big(rows, cols, arg))?;
    data.resize(len, 0.0);
    Ok(DMatrix::from_vec(rows, cols, data))
}

fn too_big(rows: usize, cols: usize, arg: &'static str) -> EnkfError {
    EnkfError::TooLarge {
        arg,
        detail: format!("{arg}: out of memory allocating a {rows} x {cols} matrix"),
        hint: "reduce the problem size, or ask a superuser to lower enkf.max_ensemble_elements so that such calls are refused up front".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(method: Method, radius: Option<f64>) -> Options {
        Options {
            method,
            loc_radius: radius,
            ..Options::default()
        }
    }

    #[test]
    fn the_issue_reproduction_is_refused_before_allocating() {
        // SELECT enkf.analyze(array_fill(1.0, ARRAY[1,100000]), ... 100000 observations):
        // an N x m = 10^10 matrix (80 GB).
        let err = check(1, 100_000, 100_000, &Options::default(), 10_000_000).unwrap_err();
        assert_eq!(err.argument(), Some("observations"));
        assert!(matches!(err, EnkfError::TooLarge { .. }));
        assert!(err.to_string().contains("100000 x 100000"), "{err}");
    }

    #[test]
    fn every_method_counts_its_largest_matrix() {
        let (n, members, m) = (40, 20, 100);
        assert_eq!(
            largest(n, members, m, &opts(Method::Etkf, None)).elements,
            members * m
        );
        assert_eq!(
            largest(n, members, m, &opts(Method::Eakf, Some(2.0))).elements,
            n * members
        );
        assert_eq!(
            largest(n, members, m, &opts(Method::Letkf, Some(2.0))).elements,
            m * members
        );
        assert_eq!(
            largest(n, members, m, &opts(Method::Enkf, Some(2.0))).elements,
            m * m
        );
        assert_eq!(
            largest(n, members, m, &opts(Method::Enkf, None)).elements,
            m * members
        );
        // No observations: the ensemble only.
        assert_eq!(
            largest(n, members, 0, &opts(Method::Etkf, None)).elements,
            n * members
        );
        // Sizes near usize::MAX saturate instead of wrapping to a small number.
        assert_eq!(
            largest(usize::MAX, 2, 1, &opts(Method::Eakf, None)).elements,
            usize::MAX
        );
    }

    #[test]
    fn allowed_sizes_pass() {
        assert!(check(7, 300, 1, &opts(Method::Eakf, None), 10_000_000).is_ok());
        assert!(check(40, 24, 40, &Options::default(), 10_000_000).is_ok());
    }

    #[test]
    fn try_zeros_refuses_what_cannot_be_allocated() {
        assert!(try_zeros(usize::MAX, 2, "observations").is_err());
        // 2^61 values (16 EiB): no system grants it.
        assert!(try_zeros(1 << 31, 1 << 30, "observations").is_err());
        let z = try_zeros(3, 2, "observations").unwrap();
        assert_eq!(z, DMatrix::zeros(3, 2));
    }
}
