//! The energy score of sample trajectories (Gneiting et al. 2008): the multivariate
//! generalisation of the CRPS, which rewards samples that are connected the way the truth is.
//! `ES = 1/m sum_i |X_i - y| - 1/(2 m^2) sum_i sum_j |X_i - X_j|` (Euclidean norms over the
//! horizons), as scoringRules' `es_sample`. Negatively oriented; 0 for every sample equal to
//! the truth; in the units of the counts (so large locations weigh most, as WIS on counts).

use crate::error::{EnkfError, Result};

/// The largest sample set scored (the pairwise term costs m^2 * d).
pub const MAX_SAMPLES: usize = 10_000;

/// Energy score of `samples` (each one trajectory, all of the observation's length) against
/// the observed trajectory `observed`.
pub fn energy_score(samples: &[Vec<f64>], observed: &[f64]) -> Result<f64> {
    let m = samples.len();
    if m == 0 || m > MAX_SAMPLES {
        return Err(EnkfError::shape(
            "samples",
            format!("1..{MAX_SAMPLES} samples are needed, got {m}"),
            "one trajectory per sample",
        ));
    }
    if observed.is_empty() || observed.iter().any(|v| !v.is_finite()) {
        return Err(EnkfError::invalid(
            "observed",
            "the observed trajectory must be non-empty and finite",
            "score only tasks whose every horizon is observed",
        ));
    }
    for s in samples {
        if s.len() != observed.len() {
            return Err(EnkfError::shape(
                "samples",
                format!(
                    "a sample has {} values, the observation {}",
                    s.len(),
                    observed.len()
                ),
                "every sample covers the same horizons as the observation",
            ));
        }
        if s.iter().any(|v| !v.is_finite()) {
            return Err(EnkfError::invalid(
                "samples",
                "samples must be finite",
                "drop non-finite samples first",
            ));
        }
    }
    let dist = |a: &[f64], b: &[f64]| -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y) * (x - y))
            .sum::<f64>()
            .sqrt()
    };
    let to_truth: f64 = samples.iter().map(|s| dist(s, observed)).sum::<f64>() / m as f64;
    let mut spread = 0.0;
    for i in 0..m {
        for j in i + 1..m {
            spread += dist(&samples[i], &samples[j]);
        }
    }
    // Each unordered pair counted once: the double sum is twice it.
    Ok(to_truth - spread / (m * m) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_equal_to_the_truth_score_zero() {
        let y = vec![3.0, 5.0, 8.0];
        assert_eq!(energy_score(&vec![y.clone(); 4], &y).unwrap(), 0.0);
    }

    #[test]
    fn hand_computed() {
        // One sample: the distance to the truth. (3, 4) from (0, 0) is 5.
        assert_eq!(energy_score(&[vec![3.0, 4.0]], &[0.0, 0.0]).unwrap(), 5.0);
        // Two samples (0, 0) and (6, 8), truth (0, 0): 1/2 (0 + 10) - 1/8 (2 * 10) = 2.5.
        let s = [vec![0.0, 0.0], vec![6.0, 8.0]];
        assert!((energy_score(&s, &[0.0, 0.0]).unwrap() - 2.5).abs() < 1e-12);
        // One dimension: the energy score is the CRPS of the empirical distribution. Samples
        // {0, 1}, truth 0: E|X - y| = 0.5, E|X - X'| / 2 = 0.25: 0.25.
        let c = [vec![0.0], vec![1.0]];
        assert!((energy_score(&c, &[0.0]).unwrap() - 0.25).abs() < 1e-12);
    }

    #[test]
    fn connected_samples_beat_shuffled_ones_on_a_connected_truth() {
        // Trajectories that are either all low or all high; the truth is all high. Shuffling
        // the horizons between samples keeps every marginal (so WIS could not tell) and makes
        // the energy score worse.
        let connected: Vec<Vec<f64>> = (0..20)
            .map(|k| vec![if k % 2 == 0 { 10.0 } else { 20.0 }; 4])
            .collect();
        let shuffled: Vec<Vec<f64>> = (0..20)
            .map(|k| {
                (0..4)
                    .map(|h| if (k + h) % 2 == 0 { 10.0 } else { 20.0 })
                    .collect()
            })
            .collect();
        let y = [20.0; 4];
        assert!(energy_score(&connected, &y).unwrap() < energy_score(&shuffled, &y).unwrap());
    }

    #[test]
    fn bad_shapes_are_refused() {
        assert_eq!(
            energy_score(&[], &[1.0]).unwrap_err().argument(),
            Some("samples")
        );
        assert_eq!(
            energy_score(&[vec![1.0]], &[1.0, 2.0])
                .unwrap_err()
                .argument(),
            Some("samples")
        );
        assert_eq!(
            energy_score(&[vec![1.0]], &[f64::NAN])
                .unwrap_err()
                .argument(),
            Some("observed")
        );
    }
}
