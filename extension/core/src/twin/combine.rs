//! The combined forecast: each component's quantiles recalibrated (their spread scaled, on the
//! log scale, by the factor that would have minimised their recent WIS), then averaged level by
//! level (Vincentization, as the FluSight ensemble does) with weights from each component's
//! recent WIS. Everything is learned from past forecasts whose targets were already observed
//! when the forecast is made: the caller passes those, scored against the counts it knows now.

use serde::{Deserialize, Serialize};

use super::models::Component;
use crate::scoring::wis;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CombinationConfig {
    /// The components combined (names as stored: "enkf", "baseline", "trend").
    pub components: Vec<String>,
    /// Past forecasts that count: those whose targets are the most recent this many observed
    /// weeks.
    pub window_weeks: usize,
    /// Weights are (mean log-scale WIS)^-power: 0 = equal weights; larger trusts the recently
    /// better component more.
    pub power: f64,
    /// Whether each component's spread is rescaled from its own recent scores first.
    pub recalibrate: bool,
    /// Fewer scored forecasts of a component and horizon than this: scale 1 and the
    /// component's weight is that of the average (not enough evidence to move away).
    pub min_scored: usize,
    /// The scale past forecasts are scored on: "natural" (the counts, as the hub scores:
    /// large locations and peaks weigh most) or "log" (log(1 + count): every location alike).
    pub scoring: String,
}

impl Default for CombinationConfig {
    fn default() -> Self {
        CombinationConfig {
            // The twin and the pooled model, weighted by their recent WIS, without
            // recalibration (learned from the last weeks it lagged every change of phase and
            // made the forecasts worse): chosen leaving each season out among the twin + trend
            // + pooled, the twin + pooled and the pooled model alone (docs/backtest.md).
            components: vec!["enkf".into(), "pooled".into()],
            window_weeks: 8,
            power: 2.0,
            recalibrate: false,
            min_scored: 20,
            scoring: "natural".into(),
        }
    }
}

/// A past forecast of one component at one horizon, with the count of its target as known now.
#[derive(Debug, Clone, Copy)]
pub struct Scored<'a> {
    pub component: Component,
    pub horizon: usize,
    pub target_end_date: i32,
    /// Quantiles at the caller's levels (the same levels as the forecasts to combine).
    pub values: &'a [f64],
    pub observed: f64,
}

/// What the recent past says about each component at each horizon.
#[derive(Debug, Clone, PartialEq)]
pub struct Calibration {
    pub entries: Vec<Calibrated>,
}

/// One component at one horizon: the factor its spread is scaled by, and its weight in the
/// combination (mean 1 per horizon).
#[derive(Debug, Clone, PartialEq)]
pub struct Calibrated {
    pub component: Component,
    pub horizon: usize,
    pub scale: f64,
    pub weight: f64,
}

impl Calibration {
    /// Scale 1 and equal weights: what is used without past forecasts.
    pub fn neutral() -> Calibration {
        Calibration {
            entries: Vec::new(),
        }
    }

    pub fn scale(&self, component: Component, horizon: usize) -> f64 {
        self.find(component, horizon).map_or(1.0, |e| e.scale)
    }

    pub fn weight(&self, component: Component, horizon: usize) -> f64 {
        self.find(component, horizon).map_or(1.0, |e| e.weight)
    }

    fn find(&self, component: Component, horizon: usize) -> Option<&Calibrated> {
        self.entries
            .iter()
            .find(|e| e.component == component && e.horizon == horizon)
    }
}

/// Spread scales tried by the recalibration (log scale, around the median).
const SCALES: [f64; 16] = [
    0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.35, 1.5, 1.7, 2.0, 2.3, 2.7, 3.2,
];

/// The median of quantiles at `levels` (sorted), interpolated in level when 0.5 is absent.
fn median(levels: &[f64], values: &[f64]) -> f64 {
    let i = levels.partition_point(|l| *l < 0.5);
    if i < levels.len() && (levels[i] - 0.5).abs() < 1e-12 {
        return values[i];
    }
    match (i.checked_sub(1), levels.get(i)) {
        (Some(a), Some(lb)) => {
            let t = (0.5 - levels[a]) / (lb - levels[a]);
            values[a] + t * (values[i] - values[a])
        }
        (None, _) => values.first().copied().unwrap_or(f64::NAN),
        (Some(a), None) => values[a],
    }
}

/// Quantiles with their spread around the median scaled by `scale` on the log(1 + y) scale.
pub fn rescale(levels: &[f64], values: &[f64], scale: f64) -> Vec<f64> {
    if (scale - 1.0).abs() < 1e-12 {
        return values.to_vec();
    }
    let m = median(levels, values).max(0.0).ln_1p();
    values
        .iter()
        .map(|v| (m + scale * (v.max(0.0).ln_1p() - m)).exp_m1().max(0.0))
        .collect()
}

/// WIS on the log(1 + y) scale: comparable across locations of any size.
pub fn log_wis(levels: &[f64], values: &[f64], observed: f64) -> f64 {
    let logged: Vec<f64> = values.iter().map(|v| v.max(0.0).ln_1p()).collect();
    wis(levels, &logged, observed.max(0.0).ln_1p())
}

/// Learns each component's spread scale and weight per horizon from `past` (already limited
/// by the caller to forecasts whose targets are observed; pooled over whatever locations the
/// caller passes). Only the most recent `window_weeks` target weeks count.
pub fn calibrate(levels: &[f64], past: &[Scored<'_>], cfg: &CombinationConfig) -> Calibration {
    let from = window_start(past, cfg.window_weeks);
    let mut keys: Vec<(Component, usize)> = past.iter().map(|p| (p.component, p.horizon)).collect();
    keys.sort_unstable();
    keys.dedup();
    let mut entries = Vec::new();
    for (component, horizon) in keys {
        let recent: Vec<&Scored> = past
            .iter()
            .filter(|p| {
                p.component == component
                    && p.horizon == horizon
                    && p.target_end_date >= from
                    && p.observed.is_finite()
                    && p.values.len() == levels.len()
            })
            .collect();
        if recent.len() < cfg.min_scored.max(1) {
            continue;
        }
        let (scale, best) = best_scale(levels, &recent, cfg);
        let w = if best > 0.0 && best.is_finite() {
            best.powf(-cfg.power)
        } else {
            1.0
        };
        entries.push(Calibrated {
            component,
            horizon,
            scale,
            weight: w,
        });
    }
    normalise_per_horizon(&mut entries);
    Calibration { entries }
}

/// The first of the last `window_weeks` target weeks scored (all of them when fewer).
fn window_start(past: &[Scored<'_>], window_weeks: usize) -> i32 {
    let mut weeks: Vec<i32> = past.iter().map(|p| p.target_end_date).collect();
    weeks.sort_unstable();
    weeks.dedup();
    weeks
        .len()
        .checked_sub(window_weeks.max(1))
        .map_or(i32::MIN, |i| weeks[i])
}

/// The spread scale (1 without `recalibrate`) that minimises the mean score of `recent`, and
/// that score (WIS, or WIS of the log counts).
fn best_scale(levels: &[f64], recent: &[&Scored<'_>], cfg: &CombinationConfig) -> (f64, f64) {
    let natural = cfg.scoring == "natural";
    let score = |scale: f64| -> f64 {
        recent
            .iter()
            .map(|p| {
                let v = rescale(levels, p.values, scale);
                if natural {
                    wis(levels, &v, p.observed)
                } else {
                    log_wis(levels, &v, p.observed)
                }
            })
            .sum::<f64>()
            / recent.len() as f64
    };
    if cfg.recalibrate {
        SCALES
            .iter()
            .map(|&s| (s, score(s)))
            .fold((1.0, f64::INFINITY), |a, b| if b.1 < a.1 { b } else { a })
    } else {
        (1.0, score(1.0))
    }
}

/// Weights normalised to mean 1 per horizon, so that a component missing from the calibration
/// (weight 1 by default) counts as an average one.
fn normalise_per_horizon(entries: &mut [Calibrated]) {
    let mut horizons: Vec<usize> = entries.iter().map(|e| e.horizon).collect();
    horizons.sort_unstable();
    horizons.dedup();
    for h in horizons {
        let total: f64 = entries
            .iter()
            .filter(|e| e.horizon == h)
            .map(|e| e.weight)
            .sum();
        let count = entries.iter().filter(|e| e.horizon == h).count() as f64;
        for e in entries.iter_mut().filter(|e| e.horizon == h) {
            e.weight = if total > 0.0 {
                e.weight * count / total
            } else {
                1.0
            };
        }
    }
}

/// The weighted level-by-level average of `forecasts` (each at `levels`): monotone when each
/// forecast is. Forecasts with a NaN or of the wrong length are left out; none left: NaN.
pub fn average(levels: &[f64], forecasts: &[(&[f64], f64)]) -> Vec<f64> {
    let usable: Vec<&(&[f64], f64)> = forecasts
        .iter()
        .filter(|(v, w)| v.len() == levels.len() && v.iter().all(|x| x.is_finite()) && *w > 0.0)
        .collect();
    let total: f64 = usable.iter().map(|f| f.1).sum();
    if usable.is_empty() || total <= 0.0 {
        return vec![f64::NAN; levels.len()];
    }
    (0..levels.len())
        .map(|k| usable.iter().map(|(v, w)| v[k] * w).sum::<f64>() / total)
        .collect()
}

/// The combination at horizon `horizon` of the given components' quantiles.
pub fn combine(
    levels: &[f64],
    horizon: usize,
    components: &[(Component, &[f64])],
    calibration: &Calibration,
) -> Vec<f64> {
    let rescaled: Vec<(Vec<f64>, f64)> = components
        .iter()
        .map(|(c, v)| {
            (
                rescale(levels, v, calibration.scale(*c, horizon)),
                calibration.weight(*c, horizon),
            )
        })
        .collect();
    let refs: Vec<(&[f64], f64)> = rescaled.iter().map(|(v, w)| (v.as_slice(), *w)).collect();
    average(levels, &refs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scoring::FLUSIGHT_LEVELS;

    fn forecast(centre: f64, sd_log: f64) -> Vec<f64> {
        // Log-normal quantiles: exp(log(1 + centre) + sd * z_p) - 1.
        FLUSIGHT_LEVELS
            .iter()
            .map(|p| ((1.0 + centre).ln() + sd_log * probit(*p)).exp() - 1.0)
            .collect()
    }

    /// Inverse normal CDF (Acklam's rational approximation; 1e-9 is plenty here).
    #[allow(clippy::excessive_precision)]
    fn probit(p: f64) -> f64 {
        let a = [
            -39.696830286653757,
            220.94609842452050,
            -275.92851044696869,
            138.35775186726900,
            -30.664798066147160,
            2.5066282774592392,
        ];
        let b = [
            -54.476098798224058,
            161.58583685804089,
            -155.69897985988661,
            66.801311887719720,
            -13.280681552885721,
        ];
        let c = [
            -7.7848940024302926e-3,
            -0.32239645804113648,
            -2.4007582771618381,
            -2.5497325393437338,
            4.3746641414649678,
            2.9384164102070640,
        ];
        let d = [
            7.7846957090414622e-3,
            0.32246712907003983,
            2.4451341003941000,
            3.7544086444293300,
        ];
        let q = p.min(1.0 - p);
        let x = if q < 0.02425 {
            let r = (-2.0 * q.ln()).sqrt();
            (((((c[0] * r + c[1]) * r + c[2]) * r + c[3]) * r + c[4]) * r + c[5])
                / ((((d[0] * r + d[1]) * r + d[2]) * r + d[3]) * r + 1.0)
        } else {
            let r = (q - 0.5) * (q - 0.5);
            (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * (q - 0.5)
                / (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1.0)
        };
        // x = probit(q), q <= 0.5.
        if p < 0.5 {
            x
        } else {
            -x
        }
    }

    #[test]
    fn combination_of_identical_forecasts_is_that_forecast() {
        let f = forecast(120.0, 0.3);
        let cal = Calibration::neutral();
        let got = combine(
            &FLUSIGHT_LEVELS,
            0,
            &[
                (Component::Twin, &f),
                (Component::Baseline, &f),
                (Component::Trend, &f),
            ],
            &cal,
        );
        for (a, b) in got.iter().zip(&f) {
            assert!((a - b).abs() < 1e-9 * b.max(1.0));
        }
    }

    #[test]
    fn weights_favour_the_recently_better_component() {
        // Outcomes scattered around 100 as the sharp forecast says; the other is centred at 300.
        let good = forecast(100.0, 0.2);
        let bad = forecast(300.0, 0.2);
        let outcomes: Vec<f64> = (0..60)
            .map(|k| 100.0 * (0.2 * probit((k as f64 + 0.5) / 60.0)).exp())
            .collect();
        let mut past = Vec::new();
        for (k, y) in outcomes.iter().enumerate() {
            for (c, v) in [(Component::Twin, &good), (Component::Trend, &bad)] {
                past.push(Scored {
                    component: c,
                    horizon: 0,
                    target_end_date: k as i32,
                    values: v,
                    observed: *y,
                });
            }
        }
        let cfg = CombinationConfig {
            window_weeks: 100,
            recalibrate: false,
            power: 2.0,
            ..CombinationConfig::default()
        };
        let cal = calibrate(&FLUSIGHT_LEVELS, &past, &cfg);
        assert!(cal.weight(Component::Twin, 0) > 2.0 * cal.weight(Component::Trend, 0));
        let comb = combine(
            &FLUSIGHT_LEVELS,
            0,
            &[(Component::Twin, &good), (Component::Trend, &bad)],
            &cal,
        );
        assert!(comb[11] < 200.0);
    }

    #[test]
    fn recalibration_of_a_calibrated_forecast_changes_little() {
        // Outcomes drawn from the forecast's own distribution: the best scale is close to 1.
        let f = forecast(200.0, 0.3);
        let n = 400;
        let outcomes: Vec<f64> = (0..n)
            .map(|k| (201.0f64.ln() + 0.3 * probit((k as f64 + 0.5) / n as f64)).exp() - 1.0)
            .collect();
        let past: Vec<Scored> = outcomes
            .iter()
            .map(|y| Scored {
                component: Component::Twin,
                horizon: 1,
                target_end_date: 0,
                values: &f,
                observed: *y,
            })
            .collect();
        let on = CombinationConfig {
            recalibrate: true,
            ..CombinationConfig::default()
        };
        let cal = calibrate(&FLUSIGHT_LEVELS, &past, &on);
        let s = cal.scale(Component::Twin, 1);
        assert!((0.9..=1.1).contains(&s), "scale {s}");
        // A forecast twice too wide is narrowed, one too narrow widened.
        let wide = forecast(200.0, 0.6);
        let narrow = forecast(200.0, 0.15);
        for (v, lo, hi) in [(&wide, 0.4, 0.6), (&narrow, 1.7, 2.3)] {
            let past: Vec<Scored> = outcomes
                .iter()
                .map(|y| Scored {
                    component: Component::Twin,
                    horizon: 1,
                    target_end_date: 0,
                    values: v,
                    observed: *y,
                })
                .collect();
            let s = calibrate(&FLUSIGHT_LEVELS, &past, &on).scale(Component::Twin, 1);
            assert!((lo..=hi).contains(&s), "scale {s}");
        }
    }

    #[test]
    fn rescale_keeps_the_median_and_order_and_any_levels() {
        let levels = [0.1, 0.3, 0.7, 0.9];
        let v = [10.0, 40.0, 60.0, 150.0];
        let r = rescale(&levels, &v, 2.0);
        assert!(r.windows(2).all(|w| w[0] <= w[1]));
        assert!(r[0] < v[0] && r[3] > v[3]);
        assert_eq!(rescale(&levels, &v, 1.0), v.to_vec());
        assert!(average(&levels, &[]).iter().all(|x| x.is_nan()));
    }
}
