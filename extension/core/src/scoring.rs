//! Scoring of quantile forecasts (weighted interval score, interval coverage, absolute error of
//! the median) and the FluSight-style baseline forecaster they are compared with; the scores
//! of the hub's other output types are in `categorical` (pmf) and `energy` (samples).

pub mod categorical;
pub mod energy;

use crate::rng::seeded;

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

/// Type-7 quantiles of unsorted samples at `levels`, without sorting them all: only the order
/// statistics the levels need are found (multi-quickselect), which is faster than a sort for
/// a few dozen levels. `samples` is used as scratch space.
pub fn quantiles_unsorted(samples: &mut [f64], levels: &[f64]) -> Vec<f64> {
    let n = samples.len();
    if n == 0 {
        return vec![f64::NAN; levels.len()];
    }
    let mut wanted: Vec<usize> = Vec::with_capacity(2 * levels.len());
    for &p in levels {
        let h = (n - 1) as f64 * p.clamp(0.0, 1.0);
        let lo = h.floor() as usize;
        wanted.push(lo);
        wanted.push((lo + 1).min(n - 1));
    }
    wanted.sort_unstable();
    wanted.dedup();
    // Integer keys that order like the floats (sign-magnitude to two's complement): selection
    // on them is cheaper than on f64::total_cmp.
    let mut keys: Vec<i64> = samples
        .iter()
        .map(|v| {
            let b = v.to_bits() as i64;
            b ^ (((b >> 63) as u64) >> 1) as i64
        })
        .collect();
    select_many(&mut keys, &wanted, 0);
    for &i in &wanted {
        let k = keys[i];
        samples[i] = f64::from_bits((k ^ (((k >> 63) as u64) >> 1) as i64) as u64);
    }
    levels
        .iter()
        .map(|&p| {
            let h = (n - 1) as f64 * p.clamp(0.0, 1.0);
            let lo = h.floor() as usize;
            let hi = (lo + 1).min(n - 1);
            samples[lo] + (h - lo as f64) * (samples[hi] - samples[lo])
        })
        .collect()
}

/// Puts the order statistics at `wanted` (sorted, absolute indices into the full slice, of
/// which `slice` starts at `offset`) into place.
fn select_many(slice: &mut [i64], wanted: &[usize], offset: usize) {
    if wanted.is_empty() || slice.is_empty() {
        return;
    }
    let mid = wanted.len() / 2;
    let k = wanted[mid] - offset;
    slice.select_nth_unstable(k);
    let (left, rest) = slice.split_at_mut(k);
    select_many(left, &wanted[..mid], offset);
    select_many(&mut rest[1..], &wanted[mid + 1..], offset + k + 1);
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
/// location's past week-to-week changes, taken with both signs; `k` weeks ahead the changes
/// of `k` random weeks are summed (a seeded bootstrap); values are truncated at 0.
/// `history` is the observed series up to the reference time, oldest first.
/// Returns the quantiles for 1, 2, ..., `steps` weeks ahead.
pub fn baseline_quantiles_all(
    history: &[f64],
    steps: usize,
    levels: &[f64],
    seed: u64,
) -> Vec<Vec<f64>> {
    let last = match history.last() {
        Some(v) => *v,
        None => return vec![vec![f64::NAN; levels.len()]; steps],
    };
    let mut diffs: Vec<f64> = history
        .windows(2)
        .flat_map(|w| [w[1] - w[0], w[0] - w[1]])
        .collect();
    if diffs.is_empty() {
        diffs.push(0.0);
    }
    const DRAWS: usize = 2000;
    let (with_median, median) = match levels.iter().position(|l| *l == 0.5) {
        Some(i) => (levels.to_vec(), i),
        None => ([levels, &[0.5]].concat(), levels.len()),
    };
    let mut out = Vec::with_capacity(steps);
    // One step ahead the distribution is the changes themselves: exact, no sampling.
    let mut samples: Vec<f64> = diffs.iter().map(|d| last + d).collect();
    let mut paths = vec![last; DRAWS];
    let mut rng = seeded(seed);
    for k in 1..=steps {
        if k > 1 {
            if k == 2 {
                // Paths start from a first bootstrap step.
                for p in paths.iter_mut() {
                    *p += diffs[pick(&mut rng, diffs.len())];
                }
            }
            for p in paths.iter_mut() {
                *p += diffs[pick(&mut rng, diffs.len())];
            }
            samples.clear();
            samples.extend_from_slice(&paths);
        }
        // The symmetrised changes centre the distribution on the last value; pin the median
        // there exactly and shift the other quantiles with it.
        // The median with the other levels, in one call: the samples are scratch space for it.
        let mut q = quantiles_unsorted(&mut samples, &with_median);
        let centre = q[median];
        q.truncate(levels.len());
        out.push(
            q.into_iter()
                .map(|v| (v - centre + last).max(0.0))
                .collect(),
        );
    }
    out
}

fn pick(rng: &mut crate::rng::Rng, n: usize) -> usize {
    crate::rng::index(rng, n)
}

/// The baseline's quantiles `steps` weeks ahead only (see `baseline_quantiles_all`).
pub fn baseline_quantiles(history: &[f64], steps: usize, levels: &[f64], seed: u64) -> Vec<f64> {
    baseline_quantiles_all(history, steps.max(1), levels, seed)
        .pop()
        .unwrap_or_default()
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
    fn selection_matches_sorting() {
        let mut state = 12345u64;
        for n in [1usize, 2, 3, 10, 57, 1000, 4001] {
            let v: Vec<f64> = (0..n)
                .map(|_| {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
                    ((state >> 20) % 1000) as f64 / 7.0
                })
                .collect();
            let mut sorted = v.clone();
            sorted.sort_by(f64::total_cmp);
            let want: Vec<f64> = FLUSIGHT_LEVELS
                .iter()
                .map(|&p| quantile_sorted(&sorted, p))
                .collect();
            let mut work = v.clone();
            assert_eq!(
                quantiles_unsorted(&mut work, &FLUSIGHT_LEVELS),
                want,
                "n = {n}"
            );
        }
    }

    #[test]
    fn baseline_without_the_median_level_matches_the_full_levels() {
        // Distinct values: a median taken from samples the other levels' selection had
        // reordered (as it once was) would differ.
        let history: Vec<f64> = (0..60)
            .map(|k| 40.0 + 30.0 * (k as f64 / 6.0).sin() + (k as f64).sqrt())
            .collect();
        let full = baseline_quantiles_all(&history, 4, &FLUSIGHT_LEVELS, 9);
        let some = baseline_quantiles_all(&history, 4, &[0.025, 0.25, 0.75, 0.975], 9);
        for (h, (f, s)) in full.iter().zip(&some).enumerate() {
            assert_eq!(*s, vec![f[1], f[6], f[16], f[21]], "horizon {h}");
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

    /// Multi-quickselect gives the order statistics of a full sort, bit for bit, whatever the
    /// values: signed zeros, infinities, NaN, ties, subnormals.
    #[test]
    fn quantiles_unsorted_equal_those_of_a_full_sort() {
        use crate::rng::{index, normal, uniform};
        let mut rng = seeded(5);
        let edges = [
            0.0,
            -0.0,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            5e-324,
            -5e-324,
            1e308,
            -1e308,
            3.0,
        ];
        let mut levels = FLUSIGHT_LEVELS.to_vec();
        levels.extend([0.0, 1.0, 1e-9]);
        for n in [1usize, 2, 3, 7, 100, 257, 1000, 2001] {
            for case in 0..5 {
                let samples: Vec<f64> = (0..n)
                    .map(|_| match case {
                        0 => normal(&mut rng) * 100.0,
                        1 => (uniform(&mut rng) * 5.0).floor(), // ties
                        2 => edges[index(&mut rng, edges.len())],
                        3 => normal(&mut rng) * 1e-310, // subnormal
                        _ => -uniform(&mut rng),
                    })
                    .collect();
                let mut sorted = samples.clone();
                sorted.sort_by(|a, b| a.total_cmp(b));
                let want: Vec<u64> = levels
                    .iter()
                    .map(|&p| quantile_sorted(&sorted, p).to_bits())
                    .collect();
                let got: Vec<u64> = quantiles_unsorted(&mut samples.clone(), &levels)
                    .iter()
                    .map(|v| v.to_bits())
                    .collect();
                assert_eq!(got, want, "n {n}, case {case}");
            }
        }
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
