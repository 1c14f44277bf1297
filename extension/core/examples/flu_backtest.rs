//! Real-time backtest of the twin's numerics on the bundled FluSight data, without PostgreSQL:
//! a fast loop for tuning the model and filter. The product's backtest (the demo) runs the
//! same numerics through SQL.
//!
//!     cargo run --release -p enkf-core --example flu_backtest -- data/flusight [config-json]

use std::collections::BTreeMap;

use nalgebra::DMatrix;

use enkf_core::dates::{from_civil, iso};
use enkf_core::scoring::{baseline_quantiles_all, covered, wis, FLUSIGHT_LEVELS};
use enkf_core::twin::location::{location_seed, mix};
use enkf_core::twin::{LocationModel, TwinConfig};

fn parse_date(s: &str) -> i32 {
    let p: Vec<u32> = s.split('-').map(|x| x.parse().unwrap()).collect();
    from_civil(p[0] as i64, p[1], p[2])
}

/// Runs every location through every week of its data, then prints each season's relative
/// WIS per horizon.
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "data/flusight".into());
    let cfg = TwinConfig::from_json(args.get(2).map(String::as_str).unwrap_or("{}")).unwrap();
    let members: usize = std::env::var("MEMBERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let pops = load_populations(&dir);
    let series = load_series(&dir);
    let seasons = seasons();
    let mut scores = Scores::default();
    for (loc, obs) in &series {
        let backtest = Backtest {
            cfg: &cfg,
            loc,
            pop: pops[loc],
            obs,
            seasons: &seasons,
        };
        backtest.run(members, &mut scores);
    }
    for (si, season) in seasons.iter().enumerate() {
        print_season(si, season.name, &scores.per_horizon);
        if std::env::var("TOP").is_ok() {
            print_top(si, &scores.per_location);
        }
    }
}

/// A location's weekly counts: week end -> count (None = not reported).
type Series = BTreeMap<i32, Option<f64>>;

/// Population per location (`locations.csv`).
fn load_populations(dir: &str) -> BTreeMap<String, f64> {
    let mut pops = BTreeMap::new();
    for line in std::fs::read_to_string(format!("{dir}/locations.csv"))
        .unwrap()
        .lines()
        .skip(1)
    {
        let f: Vec<String> = line
            .split(',')
            .map(|x| x.trim_matches('"').to_string())
            .collect();
        pops.insert(f[1].clone(), f[3].parse::<f64>().unwrap());
    }
    pops
}

/// Final counts per location (`target-hospital-admissions.csv`).
fn load_series(dir: &str) -> BTreeMap<String, Series> {
    let mut series: BTreeMap<String, Series> = BTreeMap::new();
    for line in std::fs::read_to_string(format!("{dir}/target-hospital-admissions.csv"))
        .unwrap()
        .lines()
        .skip(1)
    {
        let f: Vec<&str> = line.split(',').collect();
        let v = f[f.len() - 2].parse::<f64>().ok();
        series
            .entry(f[1].to_string())
            .or_default()
            .insert(parse_date(f[0]), v);
    }
    series
}

/// A season scored: forecasts whose reference date falls in `from..=to`.
struct Season {
    name: &'static str,
    from: i32,
    to: i32,
}

fn seasons() -> [Season; 3] {
    let season = |name, start: i64| Season {
        name,
        from: from_civil(start, 10, 1),
        to: from_civil(start + 1, 5, 31),
    };
    [
        season("2022-23", 2022),
        season("2023-24", 2023),
        season("2024-25", 2024),
    ]
}

/// Sums over the forecasts of one season and horizon: the twin's WIS, the baseline's WIS,
/// their number, and how many of the observations fell in the 50% and 95% intervals.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    twin_wis: f64,
    baseline_wis: f64,
    n: usize,
    hits50: usize,
    hits95: usize,
}

/// What the backtest accumulates: per (season, horizon), and per (season, location) the
/// twin's and the baseline's WIS.
#[derive(Default)]
struct Scores {
    per_horizon: BTreeMap<(usize, usize), Tally>,
    per_location: BTreeMap<(usize, String), (f64, f64)>,
}

/// One location's backtest: its model, counts and the seasons scored.
struct Backtest<'a> {
    cfg: &'a TwinConfig,
    loc: &'a str,
    pop: f64,
    obs: &'a Series,
    seasons: &'a [Season],
}

impl Backtest<'_> {
    /// Assimilates every week from the first to the last, forecasting after each and scoring
    /// the forecasts of the seasons' reference dates (the week after) into `scores`.
    fn run(&self, members: usize, scores: &mut Scores) {
        let (cfg, obs) = (self.cfg, self.obs);
        let model = LocationModel::new(cfg, self.loc, self.pop);
        let first = *obs.keys().next().unwrap();
        let last = *obs.keys().last().unwrap();
        let mut ens = model.prior(members);
        let mut recent: Vec<f64> = Vec::new();
        let mut history: Vec<f64> = Vec::new();
        let mut week = first;
        while week <= last {
            model.step(&mut ens, week);
            if let Some(Some(y)) = obs.get(&week) {
                recent.push(*y);
                if recent.len() > cfg.observation_error.window {
                    recent.remove(0);
                }
                let mean = recent.iter().sum::<f64>() / recent.len() as f64;
                model.update(&mut ens, *y, mean, week).unwrap();
                history.push(*y);
            }
            if std::env::var("DIAG").ok().as_deref() == Some(self.loc) {
                self.print_diag(&model, &ens, week);
            }
            self.score_week(&model, &ens, week, &history, scores);
            week += 7;
        }
    }

    /// Scores the forecasts made after `week` (reference date the week after), for every
    /// season that reference date falls in, against the twin and the baseline.
    fn score_week(
        &self,
        model: &LocationModel,
        ens: &DMatrix<f64>,
        week: i32,
        history: &[f64],
        scores: &mut Scores,
    ) {
        for (si, season) in self.seasons.iter().enumerate() {
            let reference = week + 7;
            if reference < season.from || reference > season.to {
                continue;
            }
            let fc = model.forecast(ens, week, 4, &FLUSIGHT_LEVELS);
            let base = baseline_quantiles_all(
                history,
                4,
                &FLUSIGHT_LEVELS,
                mix(location_seed(self.cfg.seed, self.loc) ^ week as u64),
            );
            for (h, q) in fc.iter().enumerate() {
                let target = week + 7 * (h as i32 + 1);
                if let Some(Some(y)) = self.obs.get(&target) {
                    scores.add(si, self.loc, h, q, &base[h], *y);
                }
            }
        }
    }

    /// DIAG=<location>: the analysis after `week` and its forecasts (h0 with its 95% interval,
    /// and h3).
    fn print_diag(&self, model: &LocationModel, ens: &DMatrix<f64>, week: i32) {
        let pop = self.pop;
        let m = ens.column_mean();
        let sd = |r: usize| (ens.row(r).variance()).sqrt();
        let fc = model.forecast(ens, week, 4, &FLUSIGHT_LEVELS);
        println!(
            "{} obs {:>7} H {:>8.1}±{:>6.1} beta {:.3}±{:.3} ihr {:.5}±{:.5} S {:.3} I {:.2e} | h0 {:>7.1} [{:>7.1},{:>7.1}] h3 {:>7.1}",
            iso(week),
            self.obs.get(&week).copied().flatten().map(|v| v.to_string()).unwrap_or("NA".into()),
            m[4], sd(4), m[5], sd(5), m[6], sd(6), m[0] / pop, m[2] / pop,
            fc[0][11], fc[0][1], fc[0][21], fc[3][11]
        );
    }
}

impl Scores {
    /// Adds the score of the twin's forecast `q` and the baseline's `base` against `y`.
    fn add(&mut self, si: usize, loc: &str, h: usize, q: &[f64], base: &[f64], y: f64) {
        let twin_w = wis(&FLUSIGHT_LEVELS, q, y);
        let base_w = wis(&FLUSIGHT_LEVELS, base, y);
        let pl = self
            .per_location
            .entry((si, loc.to_string()))
            .or_insert((0.0, 0.0));
        pl.0 += twin_w;
        pl.1 += base_w;
        let e = self.per_horizon.entry((si, h)).or_default();
        e.twin_wis += twin_w;
        e.baseline_wis += base_w;
        e.n += 1;
        e.hits50 += covered(&FLUSIGHT_LEVELS, q, y, 0.5).unwrap() as usize;
        e.hits95 += covered(&FLUSIGHT_LEVELS, q, y, 0.95).unwrap() as usize;
    }
}

/// Season `si`'s relative WIS per horizon, with coverage, then over all horizons.
fn print_season(si: usize, name: &str, per_horizon: &BTreeMap<(usize, usize), Tally>) {
    let (mut tw, mut bw) = (0.0, 0.0);
    for h in 0..4 {
        let e = per_horizon[&(si, h)];
        tw += e.twin_wis;
        bw += e.baseline_wis;
        println!(
            "{name} h{h}: rel WIS {:.3}  (n {}, cov50 {:.2}, cov95 {:.2})",
            e.twin_wis / e.baseline_wis,
            e.n,
            e.hits50 as f64 / e.n as f64,
            e.hits95 as f64 / e.n as f64
        );
    }
    println!("{name}: relative WIS {:.3}", tw / bw);
}

/// TOP: the 8 locations whose WIS exceeds the baseline's most in season `si`.
fn print_top(si: usize, per_location: &BTreeMap<(usize, String), (f64, f64)>) {
    let mut v: Vec<_> = per_location
        .iter()
        .filter(|((s, _), _)| *s == si)
        .map(|((_, l), (t, b))| (t - b, l.clone(), t / b))
        .collect();
    v.sort_by(|a, b| b.0.total_cmp(&a.0));
    for (d, l, r) in v.iter().take(8) {
        println!("   {l}: excess WIS {d:.0}, ratio {r:.2}");
    }
}
