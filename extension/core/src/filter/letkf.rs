//! LETKF (Hunt, Kostelich and Szunyogh 2007): an ETKF per state element over the observations
//! within the taper's support, each observation's inverse variance weighted by the
//! Gaspari-Cohn taper of its distance (R-localization).

use nalgebra::{DMatrix, DVector};

use super::transform::etkf_apply_column;
use super::{Observations, Split};
use crate::localization::Taper;

pub(crate) fn analyze(
    prior: &Split,
    obs: &Observations,
    taper: &Taper,
    interrupt: &dyn Fn(),
) -> Split {
    let (members, n) = prior.at.shape();
    let a = (members - 1) as f64;

    // Observations grouped by the element they see, so each element gathers its local set
    // from the elements in its neighbourhood instead of scanning every observation.
    let mut by_element: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (k, &i) in obs.index.iter().enumerate() {
        by_element[i].push(k);
    }
    let inv_sd: Vec<f64> = obs.variance.iter().map(|v| 1.0 / v.sqrt()).collect();

    let mut mean = prior.mean.clone();
    let mut at = prior.at.clone();
    let mut near = Vec::new();
    let mut local: Vec<(usize, f64)> = Vec::new();
    for l in 0..n {
        interrupt();
        taper.neighbours(l, &mut near);
        local.clear();
        for &(e, w) in &near {
            local.extend(by_element[e].iter().map(|&k| (k, w)));
        }
        if local.is_empty() {
            continue;
        }
        let m = local.len();
        let mut s = DMatrix::zeros(m, members);
        let mut d = DVector::zeros(m);
        for (row, &(k, w)) in local.iter().enumerate() {
            let i = obs.index[k];
            let scale = w.sqrt() * inv_sd[k];
            let col = prior.at.column(i);
            for j in 0..members {
                s[(row, j)] = col[j] * scale;
            }
            d[row] = (obs.values[k] - prior.mean[i]) * scale;
        }
        let (shift, new_col) = etkf_apply_column(&prior.at.column(l).into_owned(), &s, &d, a);
        mean[l] += shift;
        at.column_mut(l).copy_from(&new_col);
    }
    Split { mean, at }
}
