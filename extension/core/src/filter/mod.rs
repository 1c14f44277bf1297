//! Ensemble Kalman filter analysis steps.
//!
//! Every method works on the same footing: the prior is split into its mean and anomalies, the
//! anomalies are inflated (multiplicative prior inflation), the method computes the analysis mean
//! and anomalies, relaxation to prior spread (RTPS) is applied, and the result is checked finite.
//!
//! Internally the ensemble is held members-major: a (members x state_dim) column-major matrix,
//! whose column `l` holds the members of state element `l` contiguously. That is also exactly
//! the memory layout of a PostgreSQL `float8[state_dim][members]` array, so the SQL layer reads
//! and writes it without transposing, and every method's inner loops run over contiguous memory.
//! `analyze` takes the conventional (state_dim x members) matrix and transposes around
//! `analyze_members_major`.

mod eakf;
mod enkf;
mod etkf;
mod letkf;
pub mod rotation;
pub mod transform;
mod validate;
pub mod workspace;

use std::fmt;
use std::str::FromStr;

use nalgebra::{DMatrix, DVector};

use crate::error::{EnkfError, Result};
use crate::localization::{Domain, Taper};
use validate::{validate_arguments, validate_dimensions, validate_members_major};

/// The analysis method, named as in the SQL API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Stochastic EnKF with perturbed observations (Burgers et al. 1998).
    Enkf,
    /// Ensemble transform Kalman filter, symmetric square root (Hunt et al. 2007).
    Etkf,
    /// Serial ensemble adjustment Kalman filter (Anderson 2001, 2003).
    Eakf,
    /// Local ETKF (Hunt et al. 2007).
    Letkf,
}

impl Method {
    pub const NAMES: [&'static str; 4] = ["enkf", "etkf", "eakf", "letkf"];
}

impl FromStr for Method {
    type Err = EnkfError;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "enkf" => Ok(Method::Enkf),
            "etkf" => Ok(Method::Etkf),
            "eakf" => Ok(Method::Eakf),
            "letkf" => Ok(Method::Letkf),
            _ => Err(EnkfError::invalid(
                "method",
                format!("method \"{s}\" is unknown"),
                "method must be one of 'enkf', 'etkf', 'eakf', 'letkf'",
            )),
        }
    }
}

// Stored in a twin's configuration as its name (the same text as before it was an enum, so
// that configuration hashes do not change), and read with the parsing of `FromStr`.
impl serde::Serialize for Method {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for Method {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse()
            .map_err(|e: EnkfError| serde::de::Error::custom(format!("filter.method: {e}")))
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Method::Enkf => "enkf",
            Method::Etkf => "etkf",
            Method::Eakf => "eakf",
            Method::Letkf => "letkf",
        })
    }
}

/// Tuning of one analysis step. Defaults match the SQL function's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub method: Method,
    /// Multiplicative inflation of the prior anomalies, >= 1.
    pub inflation: f64,
    /// Relaxation to prior spread (Whitaker and Hamill 2012), in [0, 1].
    pub rtps: f64,
    /// Gaspari-Cohn half-width `c`; `None` = no localization.
    pub loc_radius: Option<f64>,
    /// State elements sit on a ring: distances wrap at state_dim.
    pub periodic: bool,
    /// Seed of the observation perturbations ('enkf').
    pub seed: u64,
    /// Random mean-preserving rotation of the analysis anomalies, drawn from `seed`
    /// (not part of `enkf.analyze`; used by the twin and by experiments).
    pub rotate: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            method: Method::Etkf,
            inflation: 1.0,
            rtps: 0.0,
            loc_radius: None,
            periodic: false,
            seed: 0,
            rotate: false,
        }
    }
}

/// Observations of single state elements: `values[k]` sees element `index[k]` (0-based) with
/// error variance `variance[k]`.
#[derive(Debug, Clone, Copy)]
pub struct Observations<'a> {
    pub values: &'a [f64],
    pub variance: &'a [f64],
    pub index: &'a [usize],
}

impl Observations<'_> {
    pub fn len(&self) -> usize {
        self.values.len()
    }
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

/// The members an ensemble must have for the method to estimate a covariance.
pub const MIN_MEMBERS: usize = 2;

/// Whether every value is finite, without an early exit so that the loop vectorizes.
pub(crate) fn all_finite(values: &[f64]) -> bool {
    values.iter().fold(true, |ok, v| ok & v.is_finite())
}

/// The prior split into mean and (inflated) anomalies, members-major: `at` is
/// (members x state_dim).
pub(crate) struct Split {
    pub mean: DVector<f64>,
    pub at: DMatrix<f64>,
}

impl Split {
    /// Takes the members-major ensemble and turns it into anomalies in place.
    pub(crate) fn from_members_major(mut at: DMatrix<f64>, inflation: f64) -> Split {
        let (members, n) = at.shape();
        let mut mean = DVector::zeros(n);
        if members > 0 {
            // Each state element's members are contiguous: one pass per column over the slice.
            for (col, mu) in at
                .as_mut_slice()
                .chunks_exact_mut(members)
                .zip(mean.iter_mut())
            {
                *mu = crate::linalg::dense::sum(col) / members as f64;
                col.iter_mut().for_each(|v| *v = (*v - *mu) * inflation);
            }
        }
        Split { mean, at }
    }

    /// The members-major ensemble: each element's mean added back to its anomalies.
    fn into_members_major(self) -> DMatrix<f64> {
        let Split { mean, mut at } = self;
        let members = at.nrows();
        for (col, mean) in at.as_mut_slice().chunks_exact_mut(members).zip(mean.iter()) {
            col.iter_mut().for_each(|v| *v += mean);
        }
        at
    }
}

/// Whitened observation anomalies `S = R^{-1/2} H A` (m x members) and innovations
/// `d = R^{-1/2}(y - H xbar)`.
pub(crate) fn whiten(prior: &Split, obs: &Observations) -> Result<(DMatrix<f64>, DVector<f64>)> {
    let m = obs.len();
    let members = prior.at.nrows();
    let mut s = workspace::try_zeros(m, members, "observations")?;
    let mut d = DVector::zeros(m);
    for k in 0..m {
        let scale = 1.0 / obs.variance[k].sqrt();
        let i = obs.index[k];
        let col = prior.at.column(i);
        for j in 0..members {
            s[(k, j)] = col[j] * scale;
        }
        d[k] = (obs.values[k] - prior.mean[i]) * scale;
    }
    Ok((s, d))
}

/// Spread (sample standard deviation) of each state element.
fn spreads(at: &DMatrix<f64>) -> DVector<f64> {
    let a = (at.nrows() - 1) as f64;
    DVector::from_iterator(
        at.ncols(),
        at.column_iter().map(|c| (c.norm_squared() / a).sqrt()),
    )
}

/// Relaxation to prior spread: scales each element's analysis anomalies so that its spread moves
/// a fraction `rtps` of the way back to the prior's. Elements with no analysis spread stay as
/// they are (there is nothing to scale).
fn relax_to_prior_spread(prior_spread: &DVector<f64>, analysis: &mut DMatrix<f64>, rtps: f64) {
    let post = spreads(analysis);
    for (l, mut col) in analysis.column_iter_mut().enumerate() {
        let (sb, sa) = (prior_spread[l], post[l]);
        if sa > 0.0 {
            col *= 1.0 + rtps * (sb - sa) / sa;
        }
    }
}

/// One analysis step on a members-major ensemble (members x state_dim), in place.
/// `interrupt` is called regularly in long loops; it may unwind (the extension passes
/// PostgreSQL's interrupt check).
pub fn analyze_members_major(
    ensemble: &mut DMatrix<f64>,
    obs: &Observations,
    opts: &Options,
    interrupt: &dyn Fn(),
) -> Result<()> {
    analyze_members_major_with(ensemble, obs, opts, interrupt, &crate::workers::Sequential)
}

/// `analyze_members_major`, with the large dense products of the global ETKF split between
/// `workers` (results are the same to rounding: only the order of a sum changes).
pub fn analyze_members_major_with(
    ensemble: &mut DMatrix<f64>,
    obs: &Observations,
    opts: &Options,
    interrupt: &dyn Fn(),
    workers: &dyn crate::workers::Workers,
) -> Result<()> {
    if runs_in_place(opts) {
        return analyze_global_etkf(ensemble, obs, opts, interrupt, workers);
    }
    let members = ensemble.nrows();
    validate_members_major(ensemble, obs, opts)?;
    let prior = Split::from_members_major(
        std::mem::replace(ensemble, DMatrix::zeros(0, 0)),
        opts.inflation,
    );
    let prior_spread = (opts.rtps > 0.0).then(|| spreads(&prior.at));
    let mut post = analysis(prior, obs, opts, interrupt)?;
    if opts.rotate {
        // A U for the conventional layout is U^T A^T here.
        post.at = rotation::mean_preserving_rotation(members, opts.seed).transpose() * &post.at;
    }
    if let Some(prior_spread) = prior_spread {
        relax_to_prior_spread(&prior_spread, &mut post.at, opts.rtps);
    }
    *ensemble = post.into_members_major();
    if !all_finite(ensemble.as_slice()) {
        return Err(overflowed(ensemble.as_slice(), members));
    }
    Ok(())
}

/// The global ETKF (also the LETKF without a radius), on the ensemble's storage in place.
fn analyze_global_etkf(
    ensemble: &mut DMatrix<f64>,
    obs: &Observations,
    opts: &Options,
    interrupt: &dyn Fn(),
    workers: &dyn crate::workers::Workers,
) -> Result<()> {
    let (members, n) = ensemble.shape();
    validate_dimensions(members, n, opts)?;
    validate_arguments(n, obs, opts)?;
    etkf::analyze_in_place(
        ensemble.as_mut_slice(),
        members,
        obs,
        opts,
        interrupt,
        workers,
    )
}

/// The analysis mean and anomalies (before rotation and RTPS) of the methods that work on a
/// split copy; the prior itself when there is nothing to assimilate.
fn analysis(
    prior: Split,
    obs: &Observations,
    opts: &Options,
    interrupt: &dyn Fn(),
) -> Result<Split> {
    if obs.is_empty() {
        return Ok(prior);
    }
    let taper = Taper {
        domain: Domain {
            len: prior.at.ncols(),
            periodic: opts.periodic,
        },
        radius: opts.loc_radius,
    };
    Ok(match opts.method {
        // Handled by `runs_in_place`.
        Method::Etkf => unreachable!("the ETKF runs in place"),
        Method::Letkf if opts.loc_radius.is_none() => unreachable!("the ETKF runs in place"),
        Method::Letkf => letkf::analyze(&prior, obs, &taper, interrupt),
        Method::Eakf => eakf::analyze(prior, obs, &taper, interrupt),
        Method::Enkf => enkf::analyze(&prior, obs, &taper, opts.seed, interrupt)?,
    })
}

/// The error for an analysis `data` (members-major) that came out non-finite, naming the
/// first such element.
pub(crate) fn overflowed(data: &[f64], members: usize) -> EnkfError {
    let pos = data.iter().position(|v| !v.is_finite()).unwrap_or(0);
    EnkfError::NotFinite {
        detail: format!(
            "the analysis overflowed at element [{}][{}]",
            pos / members + 1,
            pos % members + 1
        ),
        hint: "rescale the state (values near 1e150 or beyond overflow when squared)".into(),
    }
}

/// Whether the method runs in place on the ensemble's storage ([`analyze_flat`]): the ETKF,
/// which an LETKF without a radius is. The others work on an owned matrix
/// ([`analyze_members_major_with`]), which `analyze_flat` would copy to and from.
pub fn runs_in_place(opts: &Options) -> bool {
    opts.method == Method::Etkf || (opts.method == Method::Letkf && opts.loc_radius.is_none())
}

/// One analysis step on members-major storage (`members` values of state element 0, then of
/// element 1, ...: a PostgreSQL `float8[state_dim][members]`'s data), in place. The ETKF
/// works on the slice directly; other methods on a copy.
pub fn analyze_flat(
    data: &mut [f64],
    members: usize,
    obs: &Observations,
    opts: &Options,
    interrupt: &dyn Fn(),
    workers: &dyn crate::workers::Workers,
) -> Result<()> {
    let n = data.len().checked_div(members).unwrap_or(0);
    if n * members != data.len() {
        return Err(EnkfError::shape(
            "ensemble",
            format!(
                "{} values do not make whole columns of {members} members",
                data.len()
            ),
            "pass state_dim x members values",
        ));
    }
    if members == 0 || !runs_in_place(opts) {
        let mut m = DMatrix::from_column_slice(members, n, data);
        analyze_members_major_with(&mut m, obs, opts, interrupt, workers)?;
        data.copy_from_slice(m.as_slice());
        return Ok(());
    }
    validate_dimensions(members, n, opts)?;
    validate_arguments(n, obs, opts)?;
    etkf::analyze_in_place(data, members, obs, opts, interrupt, workers)
}

/// One analysis step on a conventional (state_dim x members) ensemble, in place.
pub fn analyze(
    ensemble: &mut DMatrix<f64>,
    obs: &Observations,
    opts: &Options,
    interrupt: &dyn Fn(),
) -> Result<()> {
    let mut at = ensemble.transpose();
    analyze_members_major(&mut at, obs, opts, interrupt)?;
    ensemble.copy_from(&at.transpose());
    Ok(())
}

/// The analysis as a new matrix.
pub fn analyzed(
    ensemble: &DMatrix<f64>,
    obs: &Observations,
    opts: &Options,
) -> Result<DMatrix<f64>> {
    let mut out = ensemble.clone();
    analyze(&mut out, obs, opts, &|| {})?;
    Ok(out)
}
