//! The checks every analysis runs before it allocates or computes anything: shapes, finite
//! values, ranges of the options. Each error names the SQL argument at fault.

use nalgebra::DMatrix;

use super::{all_finite, Method, Observations, Options, MIN_MEMBERS};
use crate::error::{EnkfError, Result};

/// Checks everything `analyze` relies on; each error names the SQL argument at fault.
/// `ensemble` is members-major (members x state_dim).
pub(super) fn validate_members_major(
    ensemble: &DMatrix<f64>,
    obs: &Observations,
    opts: &Options,
) -> Result<()> {
    let (members, n) = ensemble.shape();
    validate_dimensions(members, n, opts)?;
    check_values(ensemble.as_slice(), members)?;
    validate_arguments(n, obs, opts)
}

pub(super) fn validate_dimensions(members: usize, n: usize, opts: &Options) -> Result<()> {
    if n == 0 {
        return Err(EnkfError::shape(
            "ensemble",
            "ensemble has no state elements",
            "pass a 2-D array [state_dim][members] with state_dim >= 1",
        ));
    }
    if members < MIN_MEMBERS {
        return Err(EnkfError::invalid(
            "ensemble",
            format!("ensemble has {members} member(s); method '{}' needs at least {MIN_MEMBERS}", opts.method),
            "an ensemble filter estimates covariances from the spread of the members: pass 2 or more columns",
        ));
    }
    Ok(())
}

fn check_values(data: &[f64], members: usize) -> Result<()> {
    // A branch-free pass first (it vectorizes); the position only when something is wrong.
    if !all_finite(data) {
        let (pos, v) = data
            .iter()
            .enumerate()
            .find(|(_, v)| !v.is_finite())
            .unwrap_or((0, &f64::NAN));
        return Err(EnkfError::invalid(
            "ensemble",
            format!(
                "ensemble element [{}][{}] is {v}",
                pos / members + 1,
                pos % members + 1
            ),
            "all ensemble values must be finite numbers",
        ));
    }
    Ok(())
}

pub(super) fn validate_arguments(n: usize, obs: &Observations, opts: &Options) -> Result<()> {
    validate_observations(n, obs)?;
    validate_options(opts)
}

/// The observations: one variance and one state index (below `n`) per value, all finite,
/// variances positive.
fn validate_observations(n: usize, obs: &Observations) -> Result<()> {
    let m = obs.values.len();
    if obs.variance.len() != m {
        return Err(EnkfError::shape(
            "obs_variance",
            format!(
                "obs_variance has {} element(s) but observations has {m}",
                obs.variance.len()
            ),
            "pass one error variance per observation",
        ));
    }
    if obs.index.len() != m {
        return Err(EnkfError::shape(
            "obs_index",
            format!(
                "obs_index has {} element(s) but observations has {m}",
                obs.index.len()
            ),
            "pass one state index per observation",
        ));
    }
    if let Some((k, v)) = obs.values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(EnkfError::invalid(
            "observations",
            format!("observations element {} is {v}", k + 1),
            "drop missing observations (and their variance and index) instead of passing NaN or infinity",
        ));
    }
    if let Some((k, v)) = obs
        .variance
        .iter()
        .enumerate()
        .find(|(_, v)| !(v.is_finite() && **v > 0.0))
    {
        return Err(EnkfError::invalid(
            "obs_variance",
            format!("obs_variance element {} is {v}; variances must be finite and positive", k + 1),
            "an observation without error cannot be assimilated by an ensemble filter: use a small positive variance",
        ));
    }
    if let Some((k, i)) = obs.index.iter().enumerate().find(|(_, i)| **i >= n) {
        return Err(EnkfError::IndexOutOfRange {
            arg: "obs_index",
            detail: format!("obs_index element {} is {}, outside 1..{n}", k + 1, i + 1),
            hint: "obs_index is 1-based and must not exceed the number of state elements (rows of ensemble)".into(),
        });
    }
    Ok(())
}

/// The filter's options: inflation, relaxation and localization radius.
fn validate_options(opts: &Options) -> Result<()> {
    if !(opts.inflation.is_finite() && opts.inflation >= 1.0) {
        return Err(EnkfError::invalid(
            "inflation",
            format!(
                "inflation must be a finite number >= 1, got {}",
                opts.inflation
            ),
            "1.0 means no inflation; values such as 1.01 to 1.1 are usual",
        ));
    }
    if !(opts.rtps.is_finite() && (0.0..=1.0).contains(&opts.rtps)) {
        return Err(EnkfError::invalid(
            "rtps",
            format!("rtps must lie in [0, 1], got {}", opts.rtps),
            "0 disables relaxation to prior spread; 0.5 to 0.9 are usual",
        ));
    }
    if let Some(c) = opts.loc_radius {
        if !(c.is_finite() && c >= 0.0) {
            return Err(EnkfError::invalid(
                "loc_radius",
                format!("loc_radius must be a finite number >= 0, got {c}"),
                "loc_radius is the Gaspari-Cohn half-width in state elements: weights reach 0 at distance 2*loc_radius; pass NULL for no localization",
            ));
        }
        if opts.method == Method::Etkf {
            return Err(EnkfError::invalid(
                "loc_radius",
                "loc_radius cannot be used with method 'etkf', a global filter",
                "use method 'letkf' (local ETKF) or 'eakf' with loc_radius, or pass loc_radius => NULL",
            ));
        }
    }
    Ok(())
}
