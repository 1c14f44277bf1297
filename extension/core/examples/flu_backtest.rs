//! Real-time backtest of the twin's numerics on the bundled FluSight data, without PostgreSQL:
//! a fast loop for tuning the model and filter. The product's backtest (the demo) runs the
//! same numerics through SQL.
//!
//!     cargo run --release -p enkf-core --example flu_backtest -- data/flusight [config-json]

use std::collections::BTreeMap;

use enkf_core::dates::{from_civil, iso};
use enkf_core::scoring::{baseline_quantiles_all, covered, wis, FLUSIGHT_LEVELS};
use enkf_core::twin::location::{location_seed, mix};
use enkf_core::twin::{LocationModel, TwinConfig};

/// Twin WIS, baseline WIS, forecasts, 50% and 95% interval hits.
type Tally = (f64, f64, usize, usize, usize);

fn parse_date(s: &str) -> i32 {
    let p: Vec<u32> = s.split('-').map(|x| x.parse().unwrap()).collect();
    from_civil(p[0] as i64, p[1], p[2])
}

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
    let mut series: BTreeMap<String, BTreeMap<i32, Option<f64>>> = BTreeMap::new();
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
    let seasons = [
        ("2022-23", from_civil(2022, 10, 1), from_civil(2023, 5, 31)),
        ("2023-24", from_civil(2023, 10, 1), from_civil(2024, 5, 31)),
        ("2024-25", from_civil(2024, 10, 1), from_civil(2025, 5, 31)),
    ];
    // (season, horizon) -> (twin wis, baseline wis, n, cov50, cov95)
    let mut acc: BTreeMap<(usize, usize), Tally> = BTreeMap::new();
    let mut per_loc: BTreeMap<(usize, String), (f64, f64)> = BTreeMap::new();
    for (loc, obs) in &series {
        let pop = pops[loc];
        let model = LocationModel::new(&cfg, loc, pop);
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
            if std::env::var("DIAG").ok().as_deref() == Some(loc.as_str()) {
                let m = ens.column_mean();
                let sd = |r: usize| (ens.row(r).variance()).sqrt();
                let fc = model.forecast(&ens, week, 4, &FLUSIGHT_LEVELS);
                println!(
                    "{} obs {:>7} H {:>8.1}±{:>6.1} beta {:.3}±{:.3} ihr {:.5}±{:.5} S {:.3} I {:.2e} | h0 {:>7.1} [{:>7.1},{:>7.1}] h3 {:>7.1}",
                    iso(week),
                    obs.get(&week).copied().flatten().map(|v| v.to_string()).unwrap_or("NA".into()),
                    m[4], sd(4), m[5], sd(5), m[6], sd(6), m[0] / pop, m[2] / pop,
                    fc[0][11], fc[0][1], fc[0][21], fc[3][11]
                );
            }
            for (si, (_, from, to)) in seasons.iter().enumerate() {
                let reference = week + 7;
                if reference < *from || reference > *to {
                    continue;
                }
                let fc = model.forecast(&ens, week, 4, &FLUSIGHT_LEVELS);
                let base = baseline_quantiles_all(
                    &history,
                    4,
                    &FLUSIGHT_LEVELS,
                    mix(location_seed(cfg.seed, loc) ^ week as u64),
                );
                for (h, q) in fc.iter().enumerate() {
                    let target = week + 7 * (h as i32 + 1);
                    if let Some(Some(y)) = obs.get(&target) {
                        let b = &base[h];
                        let twin_w = wis(&FLUSIGHT_LEVELS, q, *y);
                        let base_w = wis(&FLUSIGHT_LEVELS, b, *y);
                        let pl = per_loc.entry((si, loc.clone())).or_insert((0.0, 0.0));
                        pl.0 += twin_w;
                        pl.1 += base_w;
                        let e = acc.entry((si, h)).or_default();
                        e.0 += wis(&FLUSIGHT_LEVELS, q, *y);
                        e.1 += wis(&FLUSIGHT_LEVELS, b, *y);
                        e.2 += 1;
                        e.3 += covered(&FLUSIGHT_LEVELS, q, *y, 0.5).unwrap() as usize;
                        e.4 += covered(&FLUSIGHT_LEVELS, q, *y, 0.95).unwrap() as usize;
                    }
                }
            }
            week += 7;
        }
    }
    for (si, (name, _, _)) in seasons.iter().enumerate() {
        let (mut tw, mut bw) = (0.0, 0.0);
        for h in 0..4 {
            let e = acc[&(si, h)];
            tw += e.0;
            bw += e.1;
            println!(
                "{name} h{h}: rel WIS {:.3}  (n {}, cov50 {:.2}, cov95 {:.2})",
                e.0 / e.1,
                e.2,
                e.3 as f64 / e.2 as f64,
                e.4 as f64 / e.2 as f64
            );
        }
        println!("{name}: relative WIS {:.3}", tw / bw);
        if std::env::var("TOP").is_ok() {
            let mut v: Vec<_> = per_loc
                .iter()
                .filter(|((s, _), _)| *s == si)
                .map(|((_, l), (t, b))| (t - b, l.clone(), t / b))
                .collect();
            v.sort_by(|a, b| b.0.total_cmp(&a.0));
            for (d, l, r) in v.iter().take(8) {
                println!("   {l}: excess WIS {d:.0}, ratio {r:.2}");
            }
        }
    }
    let _ = iso(0);
}
