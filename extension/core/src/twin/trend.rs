//! A local trend model, the statistical component beside the twin: the log of the counts
//! continues its recent slope (least squares over the last `window` weeks), damped each week
//! ahead; the spread is the empirical distribution of the same method's errors at the same
//! number of weeks ahead over the location's own history (every origin whose target is
//! already observed), so a series the method predicts exactly gets zero spread.

use serde::{Deserialize, Serialize};

use crate::scoring::quantiles_unsorted;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrendConfig {
    /// Weeks in the least-squares fit of the slope (at least 2).
    pub window: usize,
    /// Factor applied to the slope for each further week ahead, in [0, 1]: 1 = straight line,
    /// 0 = flat (persistence on the log scale). Epidemic growth slows, so a full-strength line
    /// overshoots at the peak.
    pub damping: f64,
    /// Past origins whose errors make the spread (the most recent ones).
    pub error_weeks: usize,
}

impl Default for TrendConfig {
    fn default() -> Self {
        // Chosen by the leave-one-season-out tuning (docs/backtest.md): the last week's change,
        // halved for each week ahead.
        TrendConfig {
            window: 2,
            damping: 0.5,
            error_weeks: 104,
        }
    }
}

/// log(1 + count): defined at 0, multiplicative for large counts.
fn to_log(y: f64) -> f64 {
    y.max(0.0).ln_1p()
}

fn from_log(z: f64) -> f64 {
    z.exp_m1().max(0.0)
}

/// Point forecasts on the log scale `steps` weeks after the end of `z` (z has at least one
/// value): the last value plus the damped slope of the last `window` values.
fn point(z: &[f64], cfg: &TrendConfig, steps: usize) -> f64 {
    let n = z.len();
    let last = z[n - 1];
    let k = cfg.window.min(n);
    if k < 2 {
        return last;
    }
    let xs = (0..k).map(|i| i as f64);
    let x_mean = (k - 1) as f64 / 2.0;
    let tail = &z[n - k..];
    let z_mean = tail.iter().sum::<f64>() / k as f64;
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for (x, v) in xs.zip(tail) {
        sxy += (x - x_mean) * (v - z_mean);
        sxx += (x - x_mean) * (x - x_mean);
    }
    let slope = sxy / sxx;
    // slope * (phi + phi^2 + ... + phi^steps)
    let mut gain = 0.0;
    let mut f = 1.0;
    for _ in 0..steps {
        f *= cfg.damping;
        gain += f;
    }
    last + slope * gain
}

/// Quantiles at `levels` of the counts `steps[h]` weeks after the last of `observed` (oldest
/// first, reported weeks only), for each h. Empty `observed` gives NaN.
pub fn trend_quantiles(
    observed: &[f64],
    steps: &[usize],
    levels: &[f64],
    cfg: &TrendConfig,
) -> Vec<Vec<f64>> {
    if observed.is_empty() {
        return vec![vec![f64::NAN; levels.len()]; steps.len()];
    }
    let z: Vec<f64> = observed.iter().map(|y| to_log(*y)).collect();
    let n = z.len();
    let min_origin = cfg.window.max(2);
    steps
        .iter()
        .map(|&s| {
            let s = s.max(1);
            let centre = point(&z, cfg, s);
            // Errors of the origins t (data z[..t]) whose target t - 1 + s is observed.
            let mut errors: Vec<f64> = Vec::new();
            let last_origin = (n + 1).saturating_sub(s); // exclusive end of the data prefix
            let first_origin = min_origin.max(last_origin.saturating_sub(cfg.error_weeks));
            for t in first_origin..last_origin {
                errors.push(z[t - 1 + s] - point(&z[..t], cfg, s));
            }
            if errors.len() < 2 {
                // Too short a history to learn from: the symmetrised week-to-week changes,
                // as the baseline, grown like a random walk.
                errors = z
                    .windows(2)
                    .flat_map(|w| [w[1] - w[0], w[0] - w[1]])
                    .map(|d| d * (s as f64).sqrt())
                    .collect();
                if errors.is_empty() {
                    errors.push(0.0);
                }
            }
            quantiles_unsorted(&mut errors, levels)
                .into_iter()
                .map(|e| from_log(centre + e))
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scoring::FLUSIGHT_LEVELS;

    #[test]
    fn exact_exponential_is_predicted_exactly() {
        // 1 + y grows by 15% a week: a straight line on the model's scale. Without damping
        // every past error is zero, so every quantile is the continuation of the line.
        let cfg = TrendConfig {
            damping: 1.0,
            ..TrendConfig::default()
        };
        let series: Vec<f64> = (0..40)
            .map(|t| (0.15 * t as f64 + 1.0).exp() - 1.0)
            .collect();
        let q = trend_quantiles(&series, &[1, 2, 3, 4], &FLUSIGHT_LEVELS, &cfg);
        for (h, qs) in q.iter().enumerate() {
            let want = (0.15 * (39 + h + 1) as f64 + 1.0).exp() - 1.0;
            for v in qs {
                assert!((v - want).abs() < 1e-6 * want, "h{h}: {v} vs {want}");
            }
        }
    }

    #[test]
    fn damping_slows_the_line_and_zero_damping_is_persistence() {
        let z: Vec<f64> = (0..30).map(|t| (100.0 * 1.2f64.powi(t)).ln_1p()).collect();
        let last = z[29];
        let flat = TrendConfig {
            damping: 0.0,
            ..TrendConfig::default()
        };
        assert_eq!(point(&z, &flat, 1), last);
        assert_eq!(point(&z, &flat, 3), last);
        let straight = TrendConfig {
            damping: 1.0,
            ..TrendConfig::default()
        };
        let damped = point(&z, &TrendConfig::default(), 3);
        assert!(damped > last && damped < point(&z, &straight, 3));
    }

    #[test]
    fn quantiles_are_ordered_non_negative_and_widen_with_noise() {
        let mut state = 7u64;
        let noisy: Vec<f64> = (0..80)
            .map(|t| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let u = (state >> 11) as f64 / (1u64 << 53) as f64;
                (50.0 + 40.0 * (t as f64 / 8.0).sin()) * (0.7 + 0.6 * u)
            })
            .collect();
        let q = trend_quantiles(&noisy, &[1, 4], &FLUSIGHT_LEVELS, &TrendConfig::default());
        for qs in &q {
            assert!(qs.windows(2).all(|w| w[0] <= w[1]));
            assert!(qs.iter().all(|v| *v >= 0.0 && v.is_finite()));
        }
        assert!(q[1][21] - q[1][1] > q[0][21] - q[0][1]);
        // Short and empty histories do not fail.
        assert_eq!(
            trend_quantiles(&[3.0], &[1], &[0.5], &TrendConfig::default())[0][0],
            3.0
        );
        assert!(trend_quantiles(&[], &[1], &[0.5], &TrendConfig::default())[0][0].is_nan());
    }
}
