//! Serial ensemble adjustment Kalman filter (Anderson 2001, 2003): observations are assimilated
//! one scalar at a time. Each is first updated in observation space (deterministic shift and
//! contraction of the observed element's members), then the increments are regressed onto every
//! state element, scaled by the Gaspari-Cohn taper of its distance to the observed element.

use nalgebra::DMatrix;

use super::{Observations, Split};
use crate::linalg::dense::dot;
use crate::localization::Taper;

pub(crate) fn analyze(
    prior: Split,
    obs: &Observations,
    taper: &Taper,
    interrupt: &dyn Fn(),
) -> Split {
    let (members, n) = prior.at.shape();
    let a = (members - 1) as f64;
    // Members-major: each state element's members are contiguous.
    let Split { mut mean, mut at } = prior;
    let mut near = Vec::new();
    let mut ya = vec![0.0; members];

    for k in 0..obs.len() {
        interrupt();
        let i = obs.index[k];
        let r = obs.variance[k];
        ya.copy_from_slice(at.column(i).as_slice());
        let var_b = dot(&ya, &ya) / a;
        if var_b <= 0.0 {
            // No prior spread in the observed element: the prior is certain there and the
            // observation carries no weight.
            continue;
        }
        let ybar = mean[i];
        let gain = var_b / (var_b + r);
        let dmean = gain * (obs.values[k] - ybar);
        let shrink = (r / (var_b + r)).sqrt() - 1.0;

        let update =
            |l: usize, weight: f64, mean: &mut nalgebra::DVector<f64>, at: &mut DMatrix<f64>| {
                let mut col = at.column_mut(l);
                let cov = dot(col.as_slice(), &ya) / a;
                let g = weight * cov / var_b;
                if g == 0.0 {
                    return;
                }
                mean[l] += g * dmean;
                let c = g * shrink;
                for (x, y) in col.iter_mut().zip(&ya) {
                    *x += c * y;
                }
            };
        if taper.radius.is_none() {
            for l in 0..n {
                update(l, 1.0, &mut mean, &mut at);
            }
        } else {
            taper.neighbours(i, &mut near);
            for &(l, w) in &near {
                update(l, w, &mut mean, &mut at);
            }
        }
    }
    Split { mean, at }
}
