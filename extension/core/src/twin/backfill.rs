//! Backfill: the latest weeks of a release are revised upwards as late reports arrive (NHSN
//! 2024-25: the newest week's first count was 12% below its final value on aggregate, the week
//! before it 5%). The factor of each lag is learned from past releases: how much the counts they
//! first published at that lag have grown in the data known now. Only releases published
//! before the forecast are used, so the estimate lags the truth a little but never peeks.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackfillConfig {
    /// The newest this many weeks are corrected (0 = off): lag 0 is the newest week.
    pub lags: usize,
    /// Releases of the last this many weeks teach the factors.
    pub window_weeks: usize,
}

impl Default for BackfillConfig {
    fn default() -> Self {
        BackfillConfig {
            // Off: measured in real time, correcting the newest week did not improve the
            // combination in either season with vintages (docs/backtest.md).
            lags: 0,
            window_weeks: 10,
        }
    }
}

/// A count as a past release first published it, `lag` weeks after its week, and the same
/// week's count in the data known now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Report {
    pub lag: usize,
    pub reported: f64,
    pub current: f64,
}

/// Pseudo-count added to both sums of a location's ratio, so that a small location's few
/// admissions do not swing its factor (5 admissions: a ratio is trusted once counts are tens).
const PSEUDO: f64 = 5.0;
/// Factors are kept within [1 / MAX_FACTOR, MAX_FACTOR].
const MAX_FACTOR: f64 = 2.0;

fn ratio(reports: &[Report], lag: usize, pseudo: f64) -> Option<f64> {
    let (mut r, mut c, mut n) = (0.0, 0.0, 0);
    for p in reports.iter().filter(|p| p.lag == lag) {
        if p.reported.is_finite() && p.current.is_finite() && p.reported >= 0.0 && p.current >= 0.0
        {
            r += p.reported;
            c += p.current;
            n += 1;
        }
    }
    (n > 0 && r + pseudo > 0.0).then(|| (c + pseudo) / (r + pseudo))
}

/// The factor by which to multiply the count first published at each lag 0..`lags`: the
/// geometric mean of this location's ratio (its own reporting delays) and the ratio pooled
/// over every location the caller passes in `pooled` (stable). 1 without reports.
pub fn factors(local: &[Report], pooled: &[Report], lags: usize) -> Vec<f64> {
    (0..lags)
        .map(|lag| {
            let own = ratio(local, lag, PSEUDO);
            let all = ratio(pooled, lag, 0.0);
            let f = match (own, all) {
                (Some(a), Some(b)) => (a * b).sqrt(),
                (Some(a), None) => a,
                (None, Some(b)) => b,
                (None, None) => 1.0,
            };
            f.clamp(1.0 / MAX_FACTOR, MAX_FACTOR)
        })
        .collect()
}

/// `values` (oldest first, the newest week last) with the newest weeks multiplied by their
/// factors (`factors[0]` for the newest).
pub fn corrected(values: &[Option<f64>], factors: &[f64]) -> Vec<Option<f64>> {
    let n = values.len();
    values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let lag = n - 1 - i;
            match (v, factors.get(lag)) {
                (Some(y), Some(f)) => Some(y * f),
                (v, _) => *v,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_revisions_no_correction() {
        let reports: Vec<Report> = (0..10)
            .map(|k| Report {
                lag: k % 2,
                reported: 100.0 + k as f64,
                current: 100.0 + k as f64,
            })
            .collect();
        assert_eq!(factors(&reports, &reports, 2), vec![1.0, 1.0]);
        assert_eq!(factors(&[], &[], 2), vec![1.0, 1.0]);
    }

    #[test]
    fn a_steady_undercount_is_learned_and_corrected() {
        // Every newest week first came out at 80% of its later count.
        let reports: Vec<Report> = (0..8)
            .map(|k| Report {
                lag: 0,
                reported: 800.0 + 8.0 * k as f64,
                current: 1000.0 + 10.0 * k as f64,
            })
            .collect();
        let f = factors(&reports, &reports, 1);
        assert!((f[0] - 1.25).abs() < 0.01, "{f:?}");
        let v = corrected(&[Some(10.0), None, Some(80.0)], &f);
        assert_eq!(v[0], Some(10.0));
        assert_eq!(v[1], None);
        assert!((v[2].unwrap() - 100.0).abs() < 1.0);
        // Bounded, whatever the reports say.
        let wild = [Report {
            lag: 0,
            reported: 1.0,
            current: 1e6,
        }];
        assert_eq!(factors(&wild, &wild, 1), vec![MAX_FACTOR]);
    }
}
