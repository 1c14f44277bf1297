//! Scoring of quantile forecasts (weighted interval score, interval coverage, absolute error of
//! the median) and the FluSight-style baseline forecaster they are compared with.

use crate::rng::{seeded, uniform};

/// The 23 quantile levels of the FluSight hubs.
pub const FLUSIGHT_LEVELS: [f64; 23] = [
    0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75,
    0.8, 0.85, 0.9, 0.95, 0.975, 0.99,
];

/// Quantile of sorted samples, linear interpolation between order statistics (Hyndman and Fan
/// type 7, R's and numpy's default).
pub fn quantile_sorted(sorted: &[f64], p: f64) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        1 => sorted[0],
        n => {
            let h = (n - 1) as f64 * p.clamp(0.0, 1.0);
            let lo = h.floor() as usize;
            let hi = (lo + 1).min(n - 1);
            sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
        }
    }
}

/// Weighted interval score (Bracher et al. 2021) of quantiles `values` at `levels` against the
/// observation `y`, in its quantile-loss form: `2 / L * sum_i rho_tau_i(y - q_i)`, which equals
/// the interval form `(|y - m| / 2 + sum_k alpha_k / 2 * IS_alpha_k) / (K + 1/2)` when the
/// levels are the median and K symmetric pairs (as the 23 FluSight levels are).
pub fn wis(levels: &[f64], values: &[f64], y: f64) -> f64 {
    let total: f64 = levels
        .iter()
        .zip(values)
        .map(|(&tau, &q)| {
            let u = y - q;
            u * (tau - if u < 0.0 { 1.0 } else { 0.0 })
        })
        .sum();
    2.0 * total / levels.len() as f64
}

/// The value at `level` (exact match within 1e-9), if the forecast has it.
pub fn at_level(levels: &[f64], values: &[f64], level: f64) -> Option<f64> {
    levels
        .iter()
        .position(|l| (l - level).abs() < 1e-9)
        .map(|i| values[i])
}

/// Whether `y` lies in the central interval of nominal coverage `coverage` (e.g. 0.95 uses the
/// 0.025 and 0.975 quantiles); None if those levels are missing.
pub fn covered(levels: &[f64], values: &[f64], y: f64, coverage: f64) -> Option<bool> {
    let lo = at_level(levels, values, (1.0 - coverage) / 2.0)?;
    let hi = at_level(levels, values, (1.0 + coverage) / 2.0)?;
    Some(lo <= y && y <= hi)
}

/// FluSight-style baseline: the median is the last observed value; the spread comes from the
/// location's past week-to-week changes, taken with both signs; `steps` weeks ahead the changes
/// of `steps` random weeks are summed (a seeded bootstrap); values are truncated at 0.
/// `history` is the observed series up to the reference time, oldest first, without gaps.
pub fn baseline_quantiles(history: &[f64], steps: usize, levels: &[f64], seed: u64) -> Vec<f64> {
    let last = match history.last() {
        Some(v) => *v,
        None => return vec![f64::NAN; levels.len()],
    };
    let mut diffs: Vec<f64> = history
        .windows(2)
        .flat_map(|w| [w[1] - w[0], w[0] - w[1]])
        .collect();
    if diffs.is_empty() {
        diffs.push(0.0);
    }
    let mut samples: Vec<f64> = if steps <= 1 {
        diffs.iter().map(|d| last + d).collect()
    } else {
        const DRAWS: usize = 4000;
        let mut rng = seeded(seed);
        (0..DRAWS)
            .map(|_| {
                let mut v = last;
                for _ in 0..steps {
                    let k =
                        ((uniform(&mut rng) * diffs.len() as f64) as usize).min(diffs.len() - 1);
                    v += diffs[k];
                }
                v
            })
            .collect()
    };
    samples.sort_by(f64::total_cmp);
    // The symmetrised changes centre the distribution on the last value; pin the median there
    // exactly and shift the other quantiles with it.
    let centre = quantile_sorted(&samples, 0.5);
    levels
        .iter()
        .map(|&p| (quantile_sorted(&samples, p) - centre + last).max(0.0))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The interval form of the WIS, straight from Bracher et al. (2021).
    fn wis_intervals(levels: &[f64], values: &[f64], y: f64) -> f64 {
        let median = at_level(levels, values, 0.5).unwrap();
        let mut sum = 0.5 * (y - median).abs();
        let mut k = 0.0;
        for (i, &l) in levels.iter().enumerate() {
            if l < 0.5 {
                let alpha = 2.0 * l;
                let lo = values[i];
                let hi = at_level(levels, values, 1.0 - l).unwrap();
                let is = (hi - lo) + 2.0 / alpha * ((lo - y).max(0.0) + (y - hi).max(0.0));
                sum += alpha / 2.0 * is;
                k += 1.0;
            }
        }
        sum / (k + 0.5)
    }

    #[test]
    fn wis_hand_computed() {
        // One 50% interval [2, 8], median 5, y = 10: IS = 6 + 4 * 2 = 14,
        // WIS = (0.5 * 5 + 0.25 * 14) / 1.5 = 4.
        assert!((wis(&[0.25, 0.5, 0.75], &[2.0, 5.0, 8.0], 10.0) - 4.0).abs() < 1e-12);
        // A perfect point forecast scores 0.
        assert_eq!(wis(&[0.25, 0.5, 0.75], &[3.0, 3.0, 3.0], 3.0), 0.0);
    }

    #[test]
    fn wis_forms_agree_on_flusight_levels() {
        let values: Vec<f64> = FLUSIGHT_LEVELS
            .iter()
            .map(|p| 100.0 + 80.0 * (p - 0.5) + 30.0 * (p - 0.5f64).powi(3))
            .collect();
        for y in [0.0, 50.0, 99.0, 100.0, 130.0, 400.0] {
            let a = wis(&FLUSIGHT_LEVELS, &values, y);
            let b = wis_intervals(&FLUSIGHT_LEVELS, &values, y);
            assert!((a - b).abs() < 1e-9, "y={y}: {a} vs {b}");
        }
    }

    #[test]
    fn quantiles_type7() {
        let s = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(quantile_sorted(&s, 0.0), 1.0);
        assert_eq!(quantile_sorted(&s, 1.0), 4.0);
        assert!((quantile_sorted(&s, 0.5) - 2.5).abs() < 1e-12);
        assert!((quantile_sorted(&s, 0.25) - 1.75).abs() < 1e-12);
    }

    #[test]
    fn coverage_uses_central_intervals() {
        let v: Vec<f64> = FLUSIGHT_LEVELS.iter().map(|p| p * 100.0).collect();
        assert_eq!(covered(&FLUSIGHT_LEVELS, &v, 50.0, 0.5), Some(true));
        assert_eq!(covered(&FLUSIGHT_LEVELS, &v, 80.0, 0.5), Some(false));
        assert_eq!(covered(&FLUSIGHT_LEVELS, &v, 97.0, 0.95), Some(true));
        assert_eq!(covered(&FLUSIGHT_LEVELS, &v, 98.0, 0.95), Some(false));
        assert_eq!(covered(&[0.5], &[1.0], 1.0, 0.95), None);
    }

    #[test]
    fn baseline_median_is_last_value_and_spread_grows() {
        let hist = [10.0, 14.0, 12.0, 20.0, 18.0, 25.0];
        let q1 = baseline_quantiles(&hist, 1, &FLUSIGHT_LEVELS, 1);
        let q3 = baseline_quantiles(&hist, 3, &FLUSIGHT_LEVELS, 1);
        assert_eq!(at_level(&FLUSIGHT_LEVELS, &q1, 0.5), Some(25.0));
        assert_eq!(at_level(&FLUSIGHT_LEVELS, &q3, 0.5), Some(25.0));
        assert!(q1.windows(2).all(|w| w[0] <= w[1]));
        let width = |q: &[f64]| q[21] - q[1];
        assert!(width(&q3) > width(&q1));
        // Truncated at zero.
        let low = baseline_quantiles(&[100.0, 0.0, 100.0, 1.0], 1, &FLUSIGHT_LEVELS, 1);
        assert!(low.iter().all(|v| *v >= 0.0));
        assert_eq!(low[0], 0.0);
    }
}
