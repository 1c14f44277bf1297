//! The nowcast of the newest weeks from a table's own versions. A week's first published count
//! is systematically low (late reports arrive for weeks after), so the newest weeks are
//! multiplied by how much counts first published at the same lag have grown since: learned
//! from the releases of the last `window_weeks` weeks, pooled over every location that is not
//! an aggregate of the others (a national row would count its states twice), only from releases
//! published by the run's data (never a later one). Early in a season, with few releases, the
//! factors stay near 1: the log factor is shrunk by n / (n + `shrinkage`), n releases.
//!
//! Off without versions (nothing to learn from), and when `nowcast.lags` is 0.

use serde::{Deserialize, Serialize};

use super::models::History;
use crate::error::{EnkfError, Result};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NowcastConfig {
    /// The newest this many weeks are corrected (0 = off): lag 0 is the newest week.
    pub lags: usize,
    /// Releases of the last this many weeks teach the factors.
    pub window_weeks: usize,
    /// A pair counts only when its week is at least this many weeks older than the newest:
    /// younger weeks' current counts are themselves still growing.
    pub min_age_weeks: usize,
    /// Pseudo-releases pulling each log factor toward 0.
    pub shrinkage: f64,
}

impl Default for NowcastConfig {
    fn default() -> Self {
        NowcastConfig {
            lags: 2,
            window_weeks: 10,
            min_age_weeks: 2,
            shrinkage: 4.0,
        }
    }
}

/// Factors are kept within [1 / MAX_FACTOR, MAX_FACTOR].
const MAX_FACTOR: f64 = 2.0;

impl NowcastConfig {
    pub fn validate(&self) -> Result<()> {
        if self.lags > 8 {
            return Err(EnkfError::invalid(
                "nowcast.lags",
                format!("{} must lie in 0..8", self.lags),
                "0 = no correction; 2 corrects the newest two weeks",
            ));
        }
        if !(1..=104).contains(&self.window_weeks) {
            return Err(EnkfError::invalid(
                "nowcast.window_weeks",
                format!("{} must lie in 1..104", self.window_weeks),
                "releases of the last this many weeks teach the factors; 10 is the default",
            ));
        }
        if self.min_age_weeks > 52 {
            return Err(EnkfError::invalid(
                "nowcast.min_age_weeks",
                format!("{} must lie in 0..52", self.min_age_weeks),
                "2 is the default",
            ));
        }
        if !(self.shrinkage.is_finite() && (0.0..=1000.0).contains(&self.shrinkage)) {
            return Err(EnkfError::invalid(
                "nowcast.shrinkage",
                format!("{} must lie in [0, 1000]", self.shrinkage),
                "4 is the default; 0 trusts the releases fully",
            ));
        }
        Ok(())
    }
}

/// One count as a release first showed it, `lag` weeks before that release's newest week, and
/// the same count in the data known now. `release` tells releases apart (its publication day).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Revision {
    pub release: i32,
    pub lag: usize,
    /// The week the count describes.
    pub week: i32,
    pub first: f64,
    pub current: f64,
}

/// The factor of each lag 0..`cfg.lags` (1 without pairs), from the revisions of non-aggregate
/// locations; pairs whose week is younger than `cfg.min_age_weeks` before `newest` are left out.
pub fn factors(cfg: &NowcastConfig, revisions: &[Revision], newest: i32) -> Vec<f64> {
    (0..cfg.lags)
        .map(|lag| {
            let (mut first, mut current) = (0.0, 0.0);
            let mut releases: Vec<i32> = Vec::new();
            for r in revisions.iter().filter(|r| {
                r.lag == lag
                    && r.week <= newest - 7 * cfg.min_age_weeks as i32
                    && r.first.is_finite()
                    && r.current.is_finite()
                    && r.first >= 0.0
                    && r.current >= 0.0
            }) {
                first += r.first;
                current += r.current;
                releases.push(r.release);
            }
            releases.sort_unstable();
            releases.dedup();
            if releases.is_empty() {
                return 1.0;
            }
            let n = releases.len() as f64;
            let log = ((current + 1.0) / (first + 1.0)).ln() * n / (n + cfg.shrinkage);
            log.exp().clamp(1.0 / MAX_FACTOR, MAX_FACTOR)
        })
        .collect()
}

/// How far counts first published at lag 0 (the newest week) still moved once the factor is
/// applied, on the square-root scale where late reports of a count y scatter by about the same
/// amount whatever y (binomial thinning): `sqrt(current) - sqrt(first * factors[0])` of every
/// pair the factor was learned from, sorted. The predictive distribution of the newest week
/// (horizon -1) is `(sqrt(reported * factor) + r)^2` over these residuals r (`newest_week`).
/// Empty without pairs.
pub fn residuals(
    cfg: &NowcastConfig,
    revisions: &[Revision],
    newest: i32,
    factor: f64,
) -> Vec<f64> {
    let mut r: Vec<f64> = revisions
        .iter()
        .filter(|r| {
            r.lag == 0
                && r.week <= newest - 7 * cfg.min_age_weeks as i32
                && r.first.is_finite()
                && r.current.is_finite()
                && r.first >= 0.0
                && r.current >= 0.0
        })
        .map(|r| r.current.sqrt() - (r.first * factor).sqrt())
        .collect();
    r.sort_by(f64::total_cmp);
    r
}

/// Quantiles of the newest week's final count at `levels`, from its reported count, the lag-0
/// factor and the residuals (`residuals`): a point mass at `reported * factor` without
/// residuals; monotone, never below 0.
pub fn newest_week(reported: f64, factor: f64, residuals: &[f64], levels: &[f64]) -> Vec<f64> {
    let centre = (reported.max(0.0) * factor).sqrt();
    levels
        .iter()
        .map(|&l| {
            let r = if residuals.is_empty() {
                0.0
            } else {
                crate::scoring::quantile_sorted(residuals, l)
            };
            (centre + r).max(0.0).powi(2)
        })
        .collect()
}

/// The history with the counts of the weeks `newest - 7 * lag` multiplied by `factors[lag]`.
pub fn corrected(history: &History, newest: i32, factors: &[f64]) -> History {
    let values = history
        .weeks
        .iter()
        .zip(&history.values)
        .map(|(w, v)| {
            let lag = (newest - w) / 7;
            match (v, usize::try_from(lag).ok().and_then(|l| factors.get(l))) {
                (Some(y), Some(f)) if (newest - w) % 7 == 0 => Some(y * f),
                (v, _) => *v,
            }
        })
        .collect();
    History {
        weeks: history.weeks.clone(),
        values,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(release: i32, lag: usize, week: i32, first: f64, current: f64) -> Revision {
        Revision {
            release,
            lag,
            week,
            first,
            current,
        }
    }

    #[test]
    fn a_known_backfill_is_learned_and_shrunk_early() {
        let cfg = NowcastConfig::default();
        let newest = 700;
        // Ten releases whose newest week's first count was 80% of its final one (lag 0) and
        // whose week before was 90% of it (lag 1).
        let mut revisions = Vec::new();
        for k in 0..10 {
            let week = newest - 7 * (2 + k);
            revisions.push(rev(week + 7, 0, week, 800.0, 1000.0));
            revisions.push(rev(week + 7, 1, week, 900.0, 1000.0));
        }
        let f = factors(&cfg, &revisions, newest);
        let shrink = 10.0 / 14.0;
        assert!((f[0] - (10_001.0f64 / 8_001.0).ln().mul_add(shrink, 0.0).exp()).abs() < 1e-12);
        assert!((f[1] - (10_001.0f64 / 9_001.0).ln().mul_add(shrink, 0.0).exp()).abs() < 1e-12);
        // One release only: pulled most of the way back to 1.
        let one = factors(&cfg, &revisions[..2], newest);
        assert!(one[0] > 1.0 && one[0] < 1.06, "{one:?}");
        // Weeks too young to have settled teach nothing.
        let young = factors(&cfg, &[rev(700, 0, newest - 7, 100.0, 300.0)], newest);
        assert_eq!(young, vec![1.0, 1.0]);
        // Off.
        let off = NowcastConfig {
            lags: 0,
            ..cfg.clone()
        };
        assert!(factors(&off, &revisions, newest).is_empty());
    }

    #[test]
    fn the_newest_week_spreads_by_the_residuals_of_its_lag() {
        let cfg = NowcastConfig::default();
        let newest = 700;
        // Lag-0 counts first published at 100 that became 121, 144 and 100 (sqrt 11, 12, 10);
        // a lag-1 pair and a week too young teach nothing here.
        let revisions = [
            rev(693, 0, 679, 100.0, 121.0),
            rev(686, 0, 672, 100.0, 144.0),
            rev(679, 0, 665, 100.0, 100.0),
            rev(693, 1, 672, 100.0, 900.0),
            rev(700, 0, 693, 100.0, 900.0),
        ];
        let r = residuals(&cfg, &revisions, newest, 1.0);
        assert_eq!(r, vec![0.0, 1.0, 2.0]);
        // Reported 100 (sqrt 10): the median of the final count is (10 + 1)^2.
        let q = newest_week(100.0, 1.0, &r, &[0.0, 0.5, 1.0]);
        assert_eq!(q, vec![100.0, 121.0, 144.0]);
        // With the factor applied first, and never below 0; a point mass without residuals.
        let r = residuals(&cfg, &revisions, newest, 1.21);
        assert!((r[1] - 0.0).abs() < 1e-12, "{r:?}");
        assert_eq!(
            newest_week(4.0, 1.0, &[-5.0, 0.0], &[0.0, 1.0]),
            vec![0.0, 4.0]
        );
        let point = newest_week(50.0, 1.2, &[], &[0.1, 0.9]);
        assert!(point.iter().all(|v| (v - 60.0).abs() < 1e-9), "{point:?}");
    }

    #[test]
    fn only_the_newest_weeks_are_corrected() {
        let h = History {
            weeks: vec![686, 693, 700],
            values: vec![Some(10.0), None, Some(20.0)],
        };
        let c = corrected(&h, 700, &[1.5, 1.2]);
        assert_eq!(c.values, vec![Some(10.0), None, Some(30.0)]);
        assert_eq!(corrected(&h, 693, &[2.0]).values, h.values);
    }

    #[test]
    fn bad_settings_name_their_key() {
        let bad = NowcastConfig {
            lags: 9,
            ..Default::default()
        };
        assert_eq!(bad.validate().unwrap_err().argument(), Some("nowcast.lags"));
    }
}
