//! Scores of the stored hub targets (`forecast::target_rows`) against the counts as they are
//! known: WIS for quantiles, the ranked probability score and the truncated log score for
//! pmfs, the energy score for the sample trajectories. A target is scored only once its truth
//! is known: the target week's count (and for rate change the week before the reference
//! date's), the whole season's counts for the peak targets, the target week's ED-visit
//! proportion for the ED target.

use super::forecast::{TargetRow, ED_TARGET, PEAK_TARGET, PEAK_WEEK_TARGET, RATE_CHANGE_TARGET};
use super::targets::rate_change_class;
use crate::dates::iso;
use crate::scoring::categorical::{rps, truncated_log_score, LOG_SCORE_CAP};
use crate::scoring::energy::energy_score;
use crate::scoring::wis;

/// One score of one stored row (samples: of one model's trajectories across the horizons).
#[derive(Debug, Clone, PartialEq)]
pub struct TaskScore {
    pub model: &'static str,
    pub target: String,
    pub output_type: &'static str,
    /// None: the season's peak, or the sample trajectories across the horizons.
    pub horizon: Option<i32>,
    /// "wis", "rps", "log" (truncated at LOG_SCORE_CAP nats) or "energy".
    pub score: &'static str,
    pub value: f64,
}

/// What the scores of one location and reference date are measured against.
pub struct Truth<'a> {
    /// The count of a week end, as known now (None: not reported).
    pub count: &'a dyn Fn(i32) -> Option<f64>,
    /// The ED-visit proportion of a week end, as known now (None: not reported, or a twin
    /// without the ED stream).
    pub ed: &'a dyn Fn(i32) -> Option<f64>,
    /// The location's population (rate change is per 100,000 people).
    pub population: f64,
    /// The season's week ends (the peak targets' season of this reference date).
    pub season_weeks: &'a [i32],
}

impl Truth<'_> {
    /// The season's peak week and count, once every week of the season is reported. A season
    /// whose highest count is reached in more than one week has no peak to score: the hub
    /// leaves such a location out of the peak targets' scores.
    fn peak(&self) -> Option<(i32, f64)> {
        let mut best: Option<(i32, f64)> = None;
        let mut tied = false;
        for &w in self.season_weeks {
            let y = (self.count)(w)?;
            match best {
                Some((_, b)) if y == b => tied = true,
                Some((_, b)) if y < b => {}
                _ => {
                    best = Some((w, y));
                    tied = false;
                }
            }
        }
        best.filter(|_| !tied)
    }
}

/// Every score of one location's rows of one reference date whose truth is known.
pub fn score_rows(
    rows: &[TargetRow],
    reference_date: i32,
    count_target: &str,
    truth: &Truth<'_>,
) -> Vec<TaskScore> {
    let mut out = Vec::new();
    for r in rows {
        let one = |score, value| TaskScore {
            model: r.model,
            target: r.target.clone(),
            output_type: r.output_type,
            horizon: r.horizon,
            score,
            value,
        };
        match (r.output_type, r.target.as_str()) {
            ("quantile", t) => {
                let y = if t == count_target {
                    r.target_end_date.and_then(|d| (truth.count)(d))
                } else if t == PEAK_TARGET {
                    truth.peak().map(|p| p.1)
                } else if t == ED_TARGET {
                    r.target_end_date.and_then(|d| (truth.ed)(d))
                } else {
                    None
                };
                if let (Some(y), Some(levels)) = (y, levels_of(&r.ids)) {
                    out.push(one("wis", wis(&levels, &r.values, y)));
                }
            }
            ("pmf", t) => {
                let observed = if t == RATE_CHANGE_TARGET {
                    rate_change_observed(r, reference_date, truth)
                } else if t == PEAK_WEEK_TARGET {
                    truth
                        .peak()
                        .and_then(|(w, _)| r.ids.iter().position(|id| *id == iso(w)))
                } else {
                    None
                };
                if let Some(k) = observed {
                    if let (Ok(s), Ok(l)) = (
                        rps(&r.values, k),
                        truncated_log_score(&r.values, k, LOG_SCORE_CAP),
                    ) {
                        out.push(one("rps", s));
                        out.push(one("log", l));
                    }
                }
            }
            _ => {}
        }
    }
    out.extend(energy_scores(rows, count_target, truth));
    out
}

/// The observed rate-change class of a row's horizon: the change from the week before the
/// reference date to the target week.
fn rate_change_observed(r: &TargetRow, reference_date: i32, truth: &Truth<'_>) -> Option<usize> {
    let base = (truth.count)(reference_date - 7)?;
    let target = (truth.count)(r.target_end_date?)?;
    rate_change_class(base, target, truth.population, r.horizon?).ok()
}

/// Quantile levels from the output type ids.
fn levels_of(ids: &[String]) -> Option<Vec<f64>> {
    ids.iter().map(|s| s.parse::<f64>().ok()).collect()
}

/// Each model's energy score of its sample trajectories over the horizons, once every target
/// week is reported.
fn energy_scores(rows: &[TargetRow], count_target: &str, truth: &Truth<'_>) -> Vec<TaskScore> {
    let mut out = Vec::new();
    for model in ["enkf", "baseline", "combined"] {
        let mut paths: Vec<&TargetRow> = rows
            .iter()
            .filter(|r| r.model == model && r.output_type == "sample" && r.target == count_target)
            .collect();
        if paths.is_empty() {
            continue;
        }
        paths.sort_by_key(|r| r.horizon);
        let observed: Option<Vec<f64>> = paths
            .iter()
            .map(|r| r.target_end_date.and_then(|d| (truth.count)(d)))
            .collect();
        let n = paths[0].values.len();
        if observed.is_none() || paths.iter().any(|r| r.values.len() != n) {
            continue;
        }
        let samples: Vec<Vec<f64>> = (0..n)
            .map(|k| paths.iter().map(|r| r.values[k]).collect())
            .collect();
        if let Ok(e) = energy_score(&samples, &observed.unwrap_or_default()) {
            out.push(TaskScore {
                model,
                target: count_target.to_string(),
                output_type: "sample",
                horizon: None,
                score: "energy",
                value: e,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(
        target: &str,
        output_type: &'static str,
        horizon: Option<i32>,
        ids: &[&str],
        values: &[f64],
    ) -> TargetRow {
        TargetRow {
            model: "enkf",
            target: target.into(),
            output_type,
            horizon,
            target_end_date: horizon.map(|h| 700 + 7 * h),
            ids: ids.iter().map(|s| s.to_string()).collect(),
            values: values.to_vec(),
        }
    }

    #[test]
    fn each_output_type_is_scored_against_its_truth_once_known() {
        let counts = |w: i32| -> Option<f64> {
            match w {
                693 => Some(100.0),
                700 => Some(100.0),
                707 => Some(200.0),
                _ => None,
            }
        };
        let proportions = |w: i32| (w == 707).then_some(0.02);
        let truth = Truth {
            count: &counts,
            ed: &proportions,
            population: 1e6,
            season_weeks: &[693, 700, 707],
        };
        let rows = vec![
            // The ED proportion at horizon 1 (week 707: 0.02): a median 0.005 off; at horizon
            // 2 not reported yet.
            row(ED_TARGET, "quantile", Some(1), &["0.5"], &[0.025]),
            row(ED_TARGET, "quantile", Some(2), &["0.5"], &[0.025]),
            // A point forecast of the observed count: WIS 0.
            row("wk inc flu hosp", "quantile", Some(-1), &["0.5"], &[100.0]),
            // +100 in 1e6 people at horizon 1 (rate 10 per 100k): large increase, given 1.
            row(
                RATE_CHANGE_TARGET,
                "pmf",
                Some(1),
                &["a", "b", "c", "d", "e"],
                &[0.0, 0.0, 0.0, 0.0, 1.0],
            ),
            // Horizon 2's week is not reported yet: not scored.
            row(
                RATE_CHANGE_TARGET,
                "pmf",
                Some(2),
                &["a", "b", "c", "d", "e"],
                &[0.2; 5],
            ),
            // The season's peak is 200 in its last week.
            row(PEAK_TARGET, "quantile", None, &["0.5"], &[150.0]),
            row(
                PEAK_WEEK_TARGET,
                "pmf",
                None,
                &[&iso(693), &iso(700), &iso(707)],
                &[0.5, 0.0, 0.5],
            ),
            row(
                "wk inc flu hosp",
                "sample",
                Some(-1),
                &["x_0", "x_1"],
                &[100.0, 100.0],
            ),
            row(
                "wk inc flu hosp",
                "sample",
                Some(0),
                &["x_0", "x_1"],
                &[100.0, 100.0],
            ),
        ];
        let scores = score_rows(&rows, 700, "wk inc flu hosp", &truth);
        let get = |target: &str, score: &str| -> Vec<f64> {
            scores
                .iter()
                .filter(|s| s.target == target && s.score == score)
                .map(|s| s.value)
                .collect()
        };
        assert_eq!(get("wk inc flu hosp", "wis"), vec![0.0]);
        let ed = get(ED_TARGET, "wis");
        assert_eq!(ed.len(), 1, "horizon 2 waits for its proportion");
        assert!((ed[0] - 0.005).abs() < 1e-15, "{ed:?}");
        assert_eq!(
            get(RATE_CHANGE_TARGET, "rps"),
            vec![0.0],
            "horizon 2 waits for its count"
        );
        assert_eq!(get(RATE_CHANGE_TARGET, "log"), vec![0.0]);
        assert_eq!(get(PEAK_TARGET, "wis"), vec![50.0], "a median 50 off");
        // Half on the right week, half two weeks early: cdf (0.5, 0.5) against (0, 0).
        assert_eq!(get(PEAK_WEEK_TARGET, "rps"), vec![0.5]);
        assert_eq!(get(PEAK_WEEK_TARGET, "log"), vec![-(0.5f64.ln())]);
        // Both trajectories are the observed one: energy score 0.
        assert_eq!(get("wk inc flu hosp", "energy"), vec![0.0]);
    }

    #[test]
    fn a_tied_peak_is_not_scored() {
        let rows = vec![
            row(PEAK_TARGET, "quantile", None, &["0.5"], &[50.0]),
            row("wk inc flu hosp", "quantile", Some(0), &["0.5"], &[50.0]),
        ];
        let scored = |counts: &dyn Fn(i32) -> Option<f64>| {
            let truth = Truth {
                count: counts,
                ed: &|_| None,
                population: 1e6,
                season_weeks: &[693, 700, 707],
            };
            score_rows(&rows, 700, "wk inc flu hosp", &truth)
                .into_iter()
                .map(|s| s.target.to_string())
                .collect::<Vec<_>>()
        };
        // 80 twice: the peak is not scored, the weekly count still is.
        let tied = |w: i32| Some(if w == 693 || w == 707 { 80.0 } else { 60.0 });
        assert!(!scored(&tied).iter().any(|t| t == PEAK_TARGET));
        assert!(scored(&tied).iter().any(|t| t == "wk inc flu hosp"));
        // A single highest week: scored.
        let single = |w: i32| Some(if w == 707 { 80.0 } else { 60.0 });
        assert!(scored(&single).iter().any(|t| t == PEAK_TARGET));
    }

    #[test]
    fn an_unfinished_season_has_no_peak_yet() {
        let counts = |w: i32| (w < 707).then_some(50.0);
        let truth = Truth {
            count: &counts,
            ed: &|_| None,
            population: 1e6,
            season_weeks: &[693, 700, 707],
        };
        let rows = vec![row(PEAK_TARGET, "quantile", None, &["0.5"], &[50.0])];
        assert!(score_rows(&rows, 700, "wk inc flu hosp", &truth).is_empty());
    }
}
