//! Scores of probability mass functions over categories (the hub's `pmf` output type): the
//! ranked probability score for ordered categories (rate-change classes, peak weeks) and the
//! log score. Both are negatively oriented (lower is better) and 0 for a point mass on the
//! observed category.

use crate::error::{EnkfError, Result};

/// The largest number of categories a pmf may have (a season has at most 53 weeks; this bound
/// only keeps a caller's array from sizing the work).
pub const MAX_CATEGORIES: usize = 1000;

fn check(probs: &[f64], observed: usize) -> Result<()> {
    if probs.is_empty() || probs.len() > MAX_CATEGORIES {
        return Err(EnkfError::shape(
            "pmf",
            format!(
                "a pmf needs 1..{MAX_CATEGORIES} categories, got {}",
                probs.len()
            ),
            "one probability per category, in the categories' order",
        ));
    }
    if observed >= probs.len() {
        return Err(EnkfError::IndexOutOfRange {
            arg: "observed",
            detail: format!(
                "observed category {observed} is outside the pmf's {} categories",
                probs.len()
            ),
            hint: "the 0-based index of the observed category".into(),
        });
    }
    let total: f64 = probs.iter().sum();
    if probs.iter().any(|p| !p.is_finite() || *p < 0.0) || (total - 1.0).abs() > 1e-6 {
        return Err(EnkfError::invalid(
            "pmf",
            format!("probabilities must be finite, >= 0 and sum to 1 (sum {total})"),
            "normalise the pmf first",
        ));
    }
    Ok(())
}

/// Ranked probability score (Epstein 1969): the squared distance between the forecast's and
/// the observation's cumulative distributions, summed over the K - 1 inner category
/// boundaries (not divided by K - 1, as scoringutils' `rps_ordinal`). A forecast one category
/// off with certainty scores 1; two categories off, 2.
pub fn rps(probs: &[f64], observed: usize) -> Result<f64> {
    check(probs, observed)?;
    let mut cdf = 0.0;
    let mut score = 0.0;
    for (k, p) in probs.iter().enumerate().take(probs.len() - 1) {
        cdf += p;
        let o = if k >= observed { 1.0 } else { 0.0 };
        score += (cdf - o).powi(2);
    }
    Ok(score)
}

/// Log score: -ln(probability of the observed category), in nats; infinite when the forecast
/// gave the observed category probability 0 (which is why the baselines' pmfs are smoothed).
pub fn log_score(probs: &[f64], observed: usize) -> Result<f64> {
    check(probs, observed)?;
    Ok(-probs[observed].ln())
}

/// The log score truncated at `cap` nats, as the CDC's FluSight challenges scored categorical
/// forecasts (log scores below -10 counted as -10): one category given probability 0 by a
/// forecast built from finitely many trajectories then costs `cap`, not infinity, and the mean
/// over many tasks stays informative.
pub fn truncated_log_score(probs: &[f64], observed: usize, cap: f64) -> Result<f64> {
    Ok(log_score(probs, observed)?.min(cap))
}

/// The cap of the FluSight challenges' truncated log score.
pub const LOG_SCORE_CAP: f64 = 10.0;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_point_mass_on_the_truth_scores_zero() {
        let p = [0.0, 0.0, 1.0, 0.0, 0.0];
        assert_eq!(rps(&p, 2).unwrap(), 0.0);
        assert_eq!(log_score(&p, 2).unwrap(), 0.0);
    }

    #[test]
    fn hand_computed() {
        // Certain and one category off: the cdfs differ at one boundary by 1.
        let p = [0.0, 1.0, 0.0, 0.0, 0.0];
        assert_eq!(rps(&p, 2).unwrap(), 1.0);
        // Two categories off: two boundaries.
        assert_eq!(rps(&p, 3).unwrap(), 2.0);
        // Uniform over 5, truth in the middle: cdf 0.2, 0.4, 0.6, 0.8 against 0, 0, 1, 1:
        // 0.04 + 0.16 + 0.16 + 0.04 = 0.4.
        let u = [0.2; 5];
        assert!((rps(&u, 2).unwrap() - 0.4).abs() < 1e-12);
        assert!((log_score(&u, 2).unwrap() - 5f64.ln()).abs() < 1e-12);
        // 0.5 / 0.5 on categories 1 and 2, truth 2: (0 - 0)^2 + (0.5 - 0)^2 + (1 - 1)^2 + ...
        let h = [0.0, 0.5, 0.5, 0.0, 0.0];
        assert!((rps(&h, 2).unwrap() - 0.25).abs() < 1e-12);
        assert!((log_score(&h, 2).unwrap() - 2f64.ln()).abs() < 1e-12);
        // Probability 0 on the truth: infinite log score (capped when truncated), finite RPS.
        assert!(log_score(&p, 0).unwrap().is_infinite());
        assert_eq!(truncated_log_score(&p, 0, LOG_SCORE_CAP).unwrap(), 10.0);
        assert_eq!(
            truncated_log_score(&u, 2, LOG_SCORE_CAP).unwrap(),
            5f64.ln()
        );
        assert_eq!(rps(&p, 0).unwrap(), 1.0);
    }

    #[test]
    fn the_rps_rewards_nearby_mass_the_log_score_does_not() {
        let near = [0.0, 0.5, 0.0, 0.5, 0.0];
        let far = [0.5, 0.0, 0.0, 0.0, 0.5];
        assert!(rps(&near, 2).unwrap() < rps(&far, 2).unwrap());
        assert_eq!(log_score(&near, 2).unwrap(), log_score(&far, 2).unwrap());
    }

    #[test]
    fn bad_pmfs_are_refused() {
        assert_eq!(rps(&[], 0).unwrap_err().argument(), Some("pmf"));
        assert_eq!(
            rps(&[0.5, 0.5], 2).unwrap_err().argument(),
            Some("observed")
        );
        assert_eq!(rps(&[0.5, 0.6], 0).unwrap_err().argument(), Some("pmf"));
        assert_eq!(
            log_score(&[1.5, -0.5], 0).unwrap_err().argument(),
            Some("pmf")
        );
        assert_eq!(
            rps(&[f64::NAN, 1.0], 0).unwrap_err().argument(),
            Some("pmf")
        );
    }
}
