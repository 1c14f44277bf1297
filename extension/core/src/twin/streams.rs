//! Every random stream of the twin, in one place: a draw is seeded from the twin's seed, the
//! location, the week and the purpose of the draw, so that re-running any week reproduces it
//! exactly and no two purposes share a stream. A new kind of draw takes a new purpose here.

/// splitmix64: a bijective mixer, so distinct inputs give unrelated seeds.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A location's seed: FNV-1a of its key mixed with the twin's seed. Stable across machines.
pub fn location_seed(twin_seed: i64, location: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in location.as_bytes() {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    mix(h ^ mix(twin_seed as u64))
}

/// The seed of one week's draws at a location.
pub fn week_seed(location_seed: u64, week_end: i32, purpose: u64) -> u64 {
    mix(location_seed ^ mix(week_end as i64 as u64) ^ purpose.wrapping_mul(0x2545_f491_4f6c_dd1d))
}

/// The analysis' draws (the perturbed observations of method 'enkf', the random rotation).
pub const PURPOSE_FILTER: u64 = 1;
/// The forecast's observation-noise draws.
pub const PURPOSE_FORECAST: u64 = 2;
/// The weekly random walk of the parameters.
pub const PURPOSE_PROCESS: u64 = 3;
/// The baseline's bootstrap of past week-to-week changes (7 since 0.1.0: stored baselines
/// must not change).
pub const PURPOSE_BASELINE: u64 = 7;
/// The nowcast draws of the last analysed week (targets.rs).
pub const PURPOSE_NOWCAST: u64 = 11;
/// The choice of the submitted samples among the trajectories (targets.rs).
pub const PURPOSE_SAMPLES: u64 = 12;
/// The baseline's trajectories (targets.rs).
pub const PURPOSE_BASELINE_PATHS: u64 = 13;
/// The ED-visit stream (ed.rs): its prior, its weekly random walk, its observation noise in
/// forecasts, and its baseline.
pub const PURPOSE_ED_PRIOR: u64 = 21;
pub const PURPOSE_ED_PROCESS: u64 = 22;
pub const PURPOSE_ED_NOISE: u64 = 23;
pub const PURPOSE_ED_BASELINE: u64 = 24;
/// The synthetic data generator's draws of one location (mixed into its location seed).
pub const SYNTHETIC_LOCATION: u64 = 0x5717;
