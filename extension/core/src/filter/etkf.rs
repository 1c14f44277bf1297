//! ETKF, the symmetric square-root form of Hunt, Kostelich and Szunyogh (2007):
//! `xa = xbar + A w`, `Aa = A T` with `T = [(N-1) M^{-1}]^{1/2}` symmetric, which keeps the
//! analysis mean exactly the Kalman mean and the anomalies centred.

use super::transform::etkf_apply;
use super::{whiten, Observations, Split};
use crate::workers::Workers;

pub(crate) fn analyze(prior: &Split, obs: &Observations, workers: &dyn Workers) -> Split {
    let a = (prior.at.nrows() - 1) as f64;
    let (s, d) = whiten(prior, obs);
    let (shift, at) = etkf_apply(&prior.at, &s, &d, a, workers);
    Split {
        mean: &prior.mean + shift,
        at,
    }
}
