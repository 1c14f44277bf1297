//! Real-time backtest: every reference date R of a season is forecast from the data as they were
//! published one week before R (the vintage with as_of = R - 7, or the latest earlier one when
//! the hub archived none that week), exactly as the product would: the twin assimilates each
//! vintage incrementally, re-assimilating from the earliest revised week, and forecasts
//! horizons 0..3 (horizon h targets the week ending R + 7h). Final counts are used only to score
//! (and, for 2022-23, which has no archived vintages, as the data: training only).
//!
//!     cargo run --release -p enkf-core --example realtime_backtest -- \
//!         --data /work/shared/data/flusight --seasons 2023-24,2024-25 --out /tmp/rt [--config JSON]
//!
//! Writes `forecasts-<season>.csv` (hubverse rows, one model_id per component and the
//! combination) and prints, per season, model and horizon, the WIS relative to the FluSight-style
//! baseline computed here on the same data, and 50% / 95% coverage (`SUMMARY` lines, read by
//! scripts/tune_realtime.py). Environment: MEMBERS (default 300), THREADS (default 1).

use std::collections::BTreeMap;
use std::io::Write;

use nalgebra::DMatrix;

use enkf_core::dates::{from_civil, iso};
use enkf_core::scoring::{covered, wis, FLUSIGHT_LEVELS};
use enkf_core::twin::backfill::{self, Report};
use enkf_core::twin::combine::{calibrate, combine, Calibration, CombinationConfig, Scored};
use enkf_core::twin::location::location_seed;
use enkf_core::twin::models::{self, Component, ComponentForecast, History};
use enkf_core::twin::{LocationModel, TwinConfig};

/// Every FluSight target (TARGETS=1): produced with `twin::targets` and scored.
#[path = "realtime/targets.rs"]
mod targets;

/// The day number of an ISO date (`YYYY-MM-DD`).
fn parse_date(s: &str) -> i32 {
    let p: Vec<u32> = s.split('-').map(|x| x.parse().unwrap()).collect();
    from_civil(p[0] as i64, p[1], p[2])
}

/// The text of a file, decompressed with gzip when its name ends in `.gz`.
fn read_text(path: &str) -> String {
    if path.ends_with(".gz") {
        let out = std::process::Command::new("gzip")
            .args(["-dc", path])
            .output()
            .expect("gzip");
        String::from_utf8(out.stdout).unwrap()
    } else {
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }
}

/// A location's weekly series: week end -> count (None = not reported).
type Series = BTreeMap<i32, Option<f64>>;
/// The same as (week end, count) rows, oldest first.
type Rows = Vec<(i32, Option<f64>)>;

struct Data {
    populations: BTreeMap<String, f64>,
    /// Final counts, per location.
    truth: BTreeMap<String, Series>,
    /// Archived releases: as_of -> location -> series.
    vintages: BTreeMap<i32, BTreeMap<String, Series>>,
    /// The hub's reference dates, and its tasks (reference date, location, horizon).
    hub_refs: Vec<i32>,
    hub_tasks: std::collections::HashSet<(i32, String, usize)>,
    /// ED-visit proportions (final values), per location: week end -> proportion.
    ed: BTreeMap<String, BTreeMap<i32, f64>>,
}

/// Every input of the backtest in `dir` (the FluSight data of data/flusight/README.md).
fn load(dir: &str) -> Data {
    let mut populations = BTreeMap::new();
    for line in read_text(&format!("{dir}/locations.csv")).lines().skip(1) {
        let f: Vec<String> = line
            .split(',')
            .map(|x| x.trim_matches('"').to_string())
            .collect();
        populations.insert(f[1].clone(), f[3].parse::<f64>().unwrap());
    }
    let mut truth: BTreeMap<String, Series> = BTreeMap::new();
    for line in read_text(&format!("{dir}/target-hospital-admissions.csv"))
        .lines()
        .skip(1)
    {
        let f: Vec<&str> = line.split(',').collect();
        let v = f[f.len() - 2].parse::<f64>().ok();
        truth
            .entry(f[1].to_string())
            .or_default()
            .insert(parse_date(f[0]), v);
    }
    let mut vintages: BTreeMap<i32, BTreeMap<String, Series>> = BTreeMap::new();
    for line in read_text(&format!("{dir}/vintages-hospital-admissions.csv.gz"))
        .lines()
        .skip(1)
    {
        let f: Vec<&str> = line.split(',').collect();
        vintages
            .entry(parse_date(f[0]))
            .or_default()
            .entry(f[2].to_string())
            .or_default()
            .insert(parse_date(f[1]), f[3].parse::<f64>().ok());
    }
    let mut refs = std::collections::BTreeSet::new();
    let mut tasks = std::collections::HashSet::new();
    let text = read_text(&format!("{dir}/reference-forecasts.csv.gz"));
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let r = parse_date(f[1]);
        refs.insert(r);
        tasks.insert((r, f[4].to_string(), f[2].parse::<usize>().unwrap()));
    }
    Data {
        populations,
        truth,
        vintages,
        hub_refs: refs.into_iter().collect(),
        hub_tasks: tasks,
        ed: load_ed(dir),
    }
}

/// The ED-visit proportions of `target-ed-visits-prop.csv`, per location: week end ->
/// proportion (weeks without a value left out).
fn load_ed(dir: &str) -> BTreeMap<String, BTreeMap<i32, f64>> {
    let mut ed: BTreeMap<String, BTreeMap<i32, f64>> = BTreeMap::new();
    for line in read_text(&format!("{dir}/target-ed-visits-prop.csv"))
        .lines()
        .skip(1)
    {
        let f: Vec<&str> = line.split(',').collect();
        if let Ok(v) = f[f.len() - 1].parse::<f64>() {
            ed.entry(f[1].to_string())
                .or_default()
                .insert(parse_date(f[0]), v);
        }
    }
    ed
}

struct Season {
    name: String,
    refs: Vec<i32>,
    /// Data from the final counts (2022-23 has no archived vintage): training only.
    from_final: bool,
}

/// The seasons named (e.g. `2023-24`), each with its reference dates.
fn seasons(data: &Data, names: &[String]) -> Vec<Season> {
    names
        .iter()
        .map(|name| {
            let start: i64 = name[..4].parse().unwrap();
            let (from, to) = (from_civil(start, 8, 1), from_civil(start + 1, 7, 31));
            if name == "2022-23" {
                // FluSight 2022-23 ran from mid-October to mid-May; Saturdays.
                let first = parse_date("2022-10-15");
                Season {
                    name: name.clone(),
                    refs: (0..31).map(|k| first + 7 * k).collect(),
                    from_final: true,
                }
            } else {
                Season {
                    name: name.clone(),
                    refs: data
                        .hub_refs
                        .iter()
                        .copied()
                        .filter(|r| *r >= from && *r <= to)
                        .collect(),
                    // FINAL=1: final counts instead of vintages (a diagnostic of what backfill costs).
                    from_final: std::env::var("FINAL").is_ok(),
                }
            }
        })
        .collect()
}

/// The data as known at `as_of` for one location: the latest release published by then
/// (or the final counts truncated there, for a season without vintages).
fn known(data: &Data, loc: &str, as_of: i32, from_final: bool) -> Option<(i32, Rows)> {
    let series = if from_final {
        data.truth.get(loc)?
    } else {
        let (_, release) = data.vintages.range(..=as_of).next_back()?;
        release.get(loc)?
    };
    let rows: Vec<(i32, Option<f64>)> = series.range(..=as_of).map(|(w, v)| (*w, *v)).collect();
    let last = rows.iter().rev().find(|r| r.1.is_some())?.0;
    Some((last, rows))
}

struct Twin<'a> {
    model: LocationModel<'a>,
    members: usize,
    /// Weeks assimilated (contiguous), their counts, and the analysis after each.
    weeks: Vec<(i32, Option<f64>)>,
    analyses: Vec<DMatrix<f64>>,
    /// ED-visit proportions known now, by week (assimilated when `ed.enabled`): final values,
    /// the only ones archived, so they never change and trigger no re-assimilation.
    ed: BTreeMap<i32, f64>,
}

impl<'a> Twin<'a> {
    /// Brings the analyses up to `rows` (contiguous weeks filled with None), re-assimilating
    /// from the earliest week that differs from what was assimilated (revisions).
    fn assimilate(&mut self, rows: &[(i32, Option<f64>)]) {
        let series = contiguous(rows);
        let keep = self.unchanged_weeks(&series);
        self.weeks.truncate(keep);
        self.analyses.truncate(keep);
        let mut ens = self.start_ensemble();
        for &(week, value) in &series[keep..] {
            self.model.step_any(&mut ens, week, 1.0);
            self.update(&mut ens, week, value);
            self.weeks.push((week, value));
            self.analyses.push(ens.clone());
        }
    }

    /// How many of the weeks assimilated `series` repeats unchanged from its start (0 when it
    /// starts on another week).
    fn unchanged_weeks(&self, series: &[(i32, Option<f64>)]) -> usize {
        let same_start = self.weeks.first().map(|w| w.0) == series.first().map(|w| w.0);
        let mut keep = 0;
        if same_start {
            while keep < self.weeks.len() && keep < series.len() && self.weeks[keep] == series[keep]
            {
                keep += 1;
            }
        }
        keep
    }

    /// The ensemble assimilation resumes from: the last analysis kept, or else the prior (with
    /// the ED-visit rows when `ed.enabled`).
    fn start_ensemble(&self) -> DMatrix<f64> {
        match self.analyses.last() {
            Some(a) => a.clone(),
            None if self.model.cfg.ed.enabled => {
                enkf_core::twin::ed::prior(&self.model, self.members)
            }
            None => self.model.prior(self.members),
        }
    }

    /// Updates `ens` with the count `value` of `week` (None: not reported) and, when
    /// `ed.enabled`, with the week's ED-visit proportion.
    fn update(&self, ens: &mut DMatrix<f64>, week: i32, value: Option<f64>) {
        let admissions = value.map(|y| (y, self.recent_mean(y)));
        if self.model.cfg.ed.enabled {
            let ed = self.ed.get(&week).map(|p| (*p, self.recent_ed_mean(week)));
            enkf_core::twin::ed::update(&self.model, ens, admissions, ed, week).unwrap();
        } else if let Some((y, mean)) = admissions {
            self.model.update(ens, y, mean, week).unwrap();
        }
    }

    /// The mean of the count `y` and the counts assimilated before it (the observation-error
    /// window's).
    fn recent_mean(&self, y: f64) -> f64 {
        let window = self.model.cfg.observation_error.window;
        let recent: Vec<f64> = self
            .weeks
            .iter()
            .rev()
            .filter_map(|w| w.1)
            .take(window - 1)
            .chain(std::iter::once(y))
            .collect();
        recent.iter().sum::<f64>() / recent.len() as f64
    }

    /// The mean of the ED-visit proportions known up to `week` (the ED observation-error
    /// window's).
    fn recent_ed_mean(&self, week: i32) -> f64 {
        let window = self.model.cfg.ed.observation_error.window;
        let recent: Vec<f64> = self
            .ed
            .range(..=week)
            .rev()
            .take(window)
            .map(|e| *e.1)
            .collect();
        recent.iter().sum::<f64>() / recent.len() as f64
    }
}

/// `rows` on every week from their first to their last (weeks missing from `rows`: None).
fn contiguous(rows: &[(i32, Option<f64>)]) -> Rows {
    let first = rows[0].0;
    let last = rows[rows.len() - 1].0;
    let by_week: BTreeMap<i32, Option<f64>> = rows.iter().copied().collect();
    (0..=(last - first) / 7)
        .map(|k| {
            let w = first + 7 * k;
            (w, by_week.get(&w).copied().flatten())
        })
        .collect()
}

/// The quantile levels forecast, and the horizons (0..3) forecast from each reference date.
const LEVELS: &[f64] = &FLUSIGHT_LEVELS;
const HORIZONS: usize = 4;

/// Runs every season's reference dates in order, then writes the forecasts and prints the
/// SUMMARY lines.
fn main() {
    let args = parse_args();
    let t0 = std::time::Instant::now();
    let data = load(&args.dir);
    eprintln!("loaded in {:.1} s", t0.elapsed().as_secs_f64());
    let seasons = seasons(&data, &args.season_names);
    let mut states = new_states(&args, &data);
    let mut results = Results {
        target_scores: args.targets.then(targets::Scores::default),
        ..Results::default()
    };
    for (k, season) in seasons.iter().enumerate() {
        // Forecasts made from final counts (2022-23) are not carried into a season forecast
        // from vintages: they used data published after its reference dates.
        if k > 0 && seasons[k - 1].from_final && !season.from_final {
            for st in states.iter_mut() {
                st.past.clear();
            }
        }
        for &r in &season.refs {
            forecast_reference_date(&args, &data, season, r, &mut states, &mut results);
        }
    }
    eprintln!("ran in {:.1} s", t0.elapsed().as_secs_f64());
    if let Some(scores) = &results.target_scores {
        scores.print();
    }
    if let Some(out) = &args.out_dir {
        write_forecasts(out, &results.lines);
    }
    print_summary(&results.tally);
}

/// What a run is asked for: the command line (`--data`, `--out`, `--config`, `--seasons`,
/// `--variants`, `--target-variants`) and the environment (MEMBERS, THREADS, LOCATION,
/// TARGETS).
struct Args {
    dir: String,
    out_dir: Option<String>,
    cfg: TwinConfig,
    season_names: Vec<String>,
    members: usize,
    threads: usize,
    /// LOCATION: that location only.
    only: Option<String>,
    /// Further combinations of the same components, scored beside (model "variant<k>"): one
    /// run of the twin serves every combination setting the tuning tries.
    variants: Vec<CombinationConfig>,
    /// TARGETS=1: every hub target of the twin and the baseline, scored (examples/realtime/
    /// targets.rs).
    targets: bool,
    /// `--target-variants '[{targets config}, ...]'`: other settings of the twin's targets
    /// (same ensembles), scored as "enkf/<k>".
    target_variants: Vec<TwinConfig>,
}

/// The run's settings, with their defaults.
fn parse_args() -> Args {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let env = |name: &str, default: usize| -> usize {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let cfg = TwinConfig::from_json(&arg("--config").unwrap_or_else(|| "{}".into())).unwrap();
    let target_variants = arg("--target-variants")
        .map(|v| target_configs(&cfg, &v))
        .unwrap_or_default();
    Args {
        dir: arg("--data").unwrap_or_else(|| "/work/shared/data/flusight".into()),
        out_dir: arg("--out"),
        cfg,
        season_names: arg("--seasons")
            .unwrap_or_else(|| "2022-23,2023-24,2024-25".into())
            .split(',')
            .map(String::from)
            .collect(),
        members: env("MEMBERS", 300),
        threads: env("THREADS", 1).max(1),
        only: std::env::var("LOCATION").ok(),
        variants: arg("--variants")
            .map(|v| serde_json::from_str(&v).unwrap())
            .unwrap_or_default(),
        targets: std::env::var("TARGETS").is_ok(),
        target_variants,
    }
}

/// The run's configuration `cfg` with each of the targets settings of `json` (a JSON list)
/// in place of its own.
fn target_configs(cfg: &TwinConfig, json: &str) -> Vec<TwinConfig> {
    let list: Vec<serde_json::Value> = serde_json::from_str(json).unwrap();
    list.into_iter()
        .map(|t| {
            let mut c = cfg.clone();
            c.targets = serde_json::from_value(t).unwrap();
            c
        })
        .collect()
}

/// A fresh twin for every location (or the one of LOCATION), with nothing assimilated.
fn new_states<'a>(args: &'a Args, data: &Data) -> Vec<State<'a>> {
    data.populations
        .iter()
        .filter(|(l, _)| args.only.as_ref().is_none_or(|o| o == *l))
        .map(|(loc, pop)| State {
            loc: loc.clone(),
            twin: Twin {
                model: LocationModel::new(&args.cfg, loc, *pop),
                members: args.members,
                weeks: Vec::new(),
                analyses: Vec::new(),
                ed: BTreeMap::new(),
            },
            known: BTreeMap::new(),
            rows: Vec::new(),
            last: 0,
            reports: Vec::new(),
            factors: Vec::new(),
            past: Vec::new(),
            current: None,
        })
        .collect()
}

/// Forecasts every location at reference date `r` from the data published one week before,
/// combined with weights learned from the past forecasts, and records them in `results`.
fn forecast_reference_date(
    args: &Args,
    data: &Data,
    season: &Season,
    r: i32,
    states: &mut [State],
    results: &mut Results,
) {
    let cfg = &args.cfg;
    let as_of = r - 7 * lag_weeks();
    load_known(states, data, season, as_of, cfg, r);
    run_twins(states, r, args.threads);
    let scored = scored_past(states, as_of);
    let calibration = calibrate(LEVELS, &scored, &cfg.combination);
    let variant_calibrations: Vec<_> = args
        .variants
        .iter()
        .map(|v| calibrate(LEVELS, &scored, v))
        .collect();
    drop(scored);
    for st in states.iter_mut() {
        let Some((out, inputs)) = st.finish(cfg, r, LEVELS, &calibration) else {
            continue;
        };
        if let Some(scores) = results.target_scores.as_mut() {
            let (history, last) = (&inputs.history, inputs.last);
            targets::score(
                scores,
                &args.target_variants,
                data,
                season,
                r,
                st,
                history,
                last,
            );
        }
        let variants = variant_forecasts(&out, &args.variants, &variant_calibrations);
        results.record(data, season, r, st, &out, &variants);
    }
    if std::env::var("VERBOSE").is_ok() {
        eprintln!("{} {:?}", iso(r), calibration.entries);
    }
}

/// Reads every location's data known at `as_of`, and learns its backfill factors from what
/// past releases said of their newest weeks (its own reports with every location's).
fn load_known(
    states: &mut [State],
    data: &Data,
    season: &Season,
    as_of: i32,
    cfg: &TwinConfig,
    r: i32,
) {
    for st in states.iter_mut() {
        st.load(
            data,
            season,
            as_of,
            cfg.backfill.lags,
            cfg.backfill.window_weeks,
        );
    }
    let pooled: Vec<Report> = states
        .iter()
        .flat_map(|s| s.reports.iter().copied())
        .collect();
    for st in states.iter_mut() {
        st.factors = backfill::factors(&st.reports, &pooled, cfg.backfill.lags);
    }
    if std::env::var("VERBOSE").is_ok() && !states.is_empty() {
        eprintln!(
            "{} backfill pooled {:?}",
            iso(r),
            backfill::factors(&[], &pooled, cfg.backfill.lags)
        );
    }
}

/// Every location's twin assimilates the data known now and prepares its forecasts of `r`,
/// split between `threads` threads.
fn run_twins(states: &mut [State], r: i32, threads: usize) {
    let chunk = states.len().div_ceil(threads);
    std::thread::scope(|scope| {
        for part in states.chunks_mut(chunk.max(1)) {
            scope.spawn(move || {
                for st in part {
                    st.components(r, HORIZONS);
                }
            });
        }
    });
}

/// What the past says, pooled over locations: forecasts whose targets are observed in the
/// data known now (and at most 60 weeks before `as_of`), scored against those counts.
fn scored_past<'s>(states: &'s [State], as_of: i32) -> Vec<Scored<'s>> {
    let mut scored: Vec<Scored> = Vec::new();
    for st in states {
        for p in &st.past {
            if let Some(Some(y)) = st.known.get(&p.target) {
                if p.target >= as_of - 7 * 60 {
                    scored.push(Scored {
                        component: p.component,
                        horizon: p.horizon,
                        target_end_date: p.target,
                        values: &p.values,
                        observed: *y,
                    });
                }
            }
        }
    }
    scored
}

/// A further combination of the components (`--variants`), scored only (tuning).
struct Variant {
    name: String,
    /// Quantiles per horizon.
    quantiles: Vec<Vec<f64>>,
}

/// The variants' combinations of the components in `out`, each with its own calibration.
fn variant_forecasts(
    out: &[ComponentForecast],
    variants: &[CombinationConfig],
    calibrations: &[Calibration],
) -> Vec<Variant> {
    variants
        .iter()
        .zip(calibrations)
        .enumerate()
        .map(|(k, (v, cal))| Variant {
            name: format!("variant{k}"),
            quantiles: (0..HORIZONS)
                .map(|h| {
                    let parts: Vec<(Component, &[f64])> = out
                        .iter()
                        .filter(|c| v.components.iter().any(|n| n == c.component.name()))
                        .map(|c| (c.component, c.quantiles[h].as_slice()))
                        .collect();
                    combine(LEVELS, h, &parts, cal)
                })
                .collect(),
        })
        .collect()
}

/// One model's forecasts of one location: its name, quantiles per horizon, and its component
/// (`None`: a variant, which is scored but neither written nor remembered).
struct ModelForecast<'q> {
    name: String,
    quantiles: &'q [Vec<f64>],
    component: Option<Component>,
}

/// Where a season's score for one model and horizon (`usize::MAX`: all horizons) is summed;
/// ordered as the SUMMARY lines are printed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct TallyKey {
    season: String,
    model: String,
    horizon: usize,
}

/// Sums over the forecasts scored: the model's WIS, the baseline's WIS, their number, and
/// how many of the observations fell in the 50% and 95% intervals.
#[derive(Debug, Default)]
struct Scores {
    wis: f64,
    baseline_wis: f64,
    n: f64,
    hits50: f64,
    hits95: f64,
}

type Tally = BTreeMap<TallyKey, Scores>;

/// What a run accumulates: the scores behind the SUMMARY lines, the forecasts' CSV rows per
/// season, and (TARGETS=1) the scores of every hub target behind the TARGETS lines.
#[derive(Default)]
struct Results {
    tally: Tally,
    lines: BTreeMap<String, Vec<String>>,
    target_scores: Option<targets::Scores>,
}

impl Results {
    /// Records one location's forecasts of reference date `r`: the components' as past
    /// forecasts (for the combination's weights), and, on the hub's tasks (every task for a
    /// season from final counts), the rows to write and the scores.
    fn record(
        &mut self,
        data: &Data,
        season: &Season,
        r: i32,
        st: &mut State,
        out: &[ComponentForecast],
        variants: &[Variant],
    ) {
        let models = out
            .iter()
            .map(|c| ModelForecast {
                name: c.component.name().to_string(),
                quantiles: &c.quantiles,
                component: Some(c.component),
            })
            .chain(variants.iter().map(|v| ModelForecast {
                name: v.name.clone(),
                quantiles: &v.quantiles,
                component: None,
            }));
        for model in models {
            for (h, q) in model.quantiles.iter().enumerate() {
                let target = r + 7 * h as i32;
                if let Some(component) = model.component {
                    st.past.push(Past {
                        component,
                        horizon: h,
                        target,
                        values: q.clone(),
                    });
                }
                if !season.from_final && !data.hub_tasks.contains(&(r, st.loc.clone(), h)) {
                    continue;
                }
                if model.component.is_some() {
                    self.write_rows(&season.name, &model.name, r, h, &st.loc, q);
                }
                let Some(Some(y)) = data.truth.get(&st.loc).and_then(|t| t.get(&target)) else {
                    continue;
                };
                let base = &out
                    .iter()
                    .find(|c| c.component == Component::Baseline)
                    .unwrap()
                    .quantiles[h];
                self.score(&season.name, &model.name, h, q, base, *y);
            }
        }
    }

    /// The hubverse rows of one forecast: one per quantile level.
    fn write_rows(&mut self, season: &str, name: &str, r: i32, h: usize, loc: &str, q: &[f64]) {
        let target = r + 7 * h as i32;
        let rows = self.lines.entry(season.to_string()).or_default();
        for (l, v) in LEVELS.iter().zip(q) {
            rows.push(format!(
                "{name},{},wk inc flu hosp,{h},{},{},quantile,{l},{v:.3}",
                iso(r),
                iso(target),
                loc
            ));
        }
    }

    /// Adds the score of forecast `q` (and of the baseline's `base`) against the count `y`
    /// to its horizon's sums and to all horizons'.
    fn score(&mut self, season: &str, name: &str, h: usize, q: &[f64], base: &[f64], y: f64) {
        let bw = wis(LEVELS, base, y);
        let w = wis(LEVELS, q, y);
        let c50 = covered(LEVELS, q, y, 0.5).unwrap_or(false) as u8 as f64;
        let c95 = covered(LEVELS, q, y, 0.95).unwrap_or(false) as u8 as f64;
        for horizon in [h, usize::MAX] {
            let e = self
                .tally
                .entry(TallyKey {
                    season: season.to_string(),
                    model: name.to_string(),
                    horizon,
                })
                .or_default();
            e.wis += w;
            e.baseline_wis += bw;
            e.n += 1.0;
            e.hits50 += c50;
            e.hits95 += c95;
        }
    }
}

/// Writes `forecasts-<season>.csv` in `out` for every season.
fn write_forecasts(out: &str, lines: &BTreeMap<String, Vec<String>>) {
    std::fs::create_dir_all(out).unwrap();
    for (s, rows) in lines {
        let mut f = std::io::BufWriter::new(
            std::fs::File::create(format!("{out}/forecasts-{s}.csv")).unwrap(),
        );
        writeln!(f, "model_id,reference_date,target,horizon,target_end_date,location,output_type,output_type_id,value").unwrap();
        for l in rows {
            writeln!(f, "{l}").unwrap();
        }
    }
}

/// Prints one SUMMARY line per season, model and horizon (then all horizons).
fn print_summary(tally: &Tally) {
    for (key, s) in tally {
        println!(
            "SUMMARY {} {} {} rel {:.4} wis {:.2} n {} cov50 {:.3} cov95 {:.3}",
            key.season,
            key.model,
            if key.horizon == usize::MAX {
                "all".to_string()
            } else {
                key.horizon.to_string()
            },
            s.wis / s.baseline_wis,
            s.wis / s.n,
            s.n,
            s.hits50 / s.n,
            s.hits95 / s.n
        );
    }
}

/// Weeks between the data's as_of and the reference date: 1 in real time (LAG env var: a
/// diagnostic of stale data).
fn lag_weeks() -> i32 {
    std::env::var("LAG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// A forecast made earlier, kept for the combination's weights (as the product stores them).
struct Past {
    component: Component,
    horizon: usize,
    target: i32,
    values: Vec<f64>,
}

/// One location's twin, its past forecasts and the components of the current reference date.
struct State<'a> {
    loc: String,
    twin: Twin<'a>,
    /// The counts known at the current as_of, as rows, and the last week with a count.
    known: BTreeMap<i32, Option<f64>>,
    rows: Vec<(i32, Option<f64>)>,
    last: i32,
    /// Past releases' first counts of their newest weeks beside the counts known now, and
    /// the backfill factors learned from them (this location's with every location's).
    reports: Vec<Report>,
    factors: Vec<f64>,
    past: Vec<Past>,
    /// This reference date's inputs (`None`: no data).
    current: Option<Inputs>,
}

/// The inputs of one location's forecasts of a reference date: the counts as published, the
/// last week with a count, and the steps from it to each horizon's target.
struct Inputs {
    history: History,
    last: i32,
    steps: Vec<usize>,
}

impl<'a> State<'a> {
    /// Reads the data known at `as_of` (the counts, and the ED-visit proportions up to it), and
    /// the reports of releases published before it.
    fn load(&mut self, data: &Data, season: &Season, as_of: i32, lags: usize, window: usize) {
        self.known.clear();
        self.rows.clear();
        self.reports.clear();
        self.factors.clear();
        let Some((last, rows)) = known(data, &self.loc, as_of, season.from_final) else {
            return;
        };
        self.known = rows.iter().copied().collect();
        self.rows = rows;
        self.last = last;
        self.twin.ed = data
            .ed
            .get(&self.loc)
            .map(|e| e.range(..=as_of).map(|(w, v)| (*w, *v)).collect())
            .unwrap_or_default();
        if season.from_final {
            return;
        }
        let from = as_of - 7 * window as i32;
        for (&release, locs) in data.vintages.range(from..as_of) {
            let Some(series) = locs.get(&self.loc) else {
                continue;
            };
            for lag in 0..lags {
                let week = release - 7 * lag as i32;
                if let (Some(Some(rep)), Some(Some(cur))) =
                    (series.get(&week), self.known.get(&week))
                {
                    self.reports.push(Report {
                        lag,
                        reported: *rep,
                        current: *cur,
                    });
                }
            }
        }
    }

    /// Assimilates the known data (newest weeks corrected for backfill) and prepares the
    /// inputs of this reference date's forecasts.
    fn components(&mut self, r: i32, horizons: usize) {
        self.current = None;
        if self.rows.is_empty() {
            return;
        }
        let history = History {
            weeks: self.rows.iter().map(|r| r.0).collect(),
            values: self.rows.iter().map(|r| r.1).collect(),
        };
        // The newest weeks are those up to the last week with a count.
        let upto = self
            .rows
            .iter()
            .position(|w| w.0 == self.last)
            .map_or(self.rows.len(), |i| i + 1);
        let mut fixed = backfill::corrected(&history.values[..upto], &self.factors);
        fixed.extend_from_slice(&history.values[upto..]);
        let assimilated: Vec<(i32, Option<f64>)> =
            history.weeks.iter().copied().zip(fixed).collect();
        self.twin.assimilate(&assimilated);
        let last = self.last;
        // Steps from the last week with data to each target R + 7h.
        let steps: Vec<usize> = (0..horizons)
            .map(|h| ((r + 7 * h as i32 - last) / 7) as usize)
            .collect();
        self.current = Some(Inputs {
            history,
            last,
            steps,
        });
    }

    /// Every model's forecasts of reference date `r` from the analysis at the last week with
    /// data, with the inputs they were made from (`None`: no data).
    fn finish(
        &mut self,
        cfg: &TwinConfig,
        r: i32,
        levels: &[f64],
        calibration: &Calibration,
    ) -> Option<(Vec<ComponentForecast>, Inputs)> {
        let inputs = self.current.take()?;
        let last = inputs.last;
        let idx = self.twin.weeks.iter().position(|w| w.0 == last)?;
        let ens = &self.twin.analyses[idx];
        if std::env::var("DIAG").ok().as_deref() == Some(self.loc.as_str()) {
            self.print_diag(cfg, r, last, &inputs.history, ens);
        }
        let out = models::forecast_all(
            cfg,
            &self.twin.model,
            ens,
            &inputs.history,
            last,
            &inputs.steps,
            levels,
            &self.factors,
            calibration,
            // The pooled model needs every location at once: enkf.backtest has it.
            None,
            location_seed(cfg.seed, &self.loc),
        )
        .unwrap();
        Some((out, inputs))
    }

    /// DIAG=<location>: the analysis the forecasts of `r` start from (means, spreads, and the
    /// effective reproduction number).
    fn print_diag(
        &self,
        cfg: &TwinConfig,
        r: i32,
        last: i32,
        history: &History,
        ens: &DMatrix<f64>,
    ) {
        let m = ens.column_mean();
        let pop = self.twin.model.population;
        let sd = |row: usize| ens.row(row).variance().sqrt();
        let d = cfg.dynamics.infectious_days;
        let reff: Vec<f64> = ens.column_iter().map(|c| c[5] * d * c[0] / pop).collect();
        let rm = reff.iter().sum::<f64>() / reff.len() as f64;
        eprintln!(
            "DIAG {} last {} y {:?} H {:.0} S {:.3} I {:.2e} beta {:.3}±{:.3} ihr {:.5}±{:.5} Reff {:.3}",
            iso(r),
            iso(last),
            history.values.last(),
            m[4],
            m[0] / pop,
            m[2] / pop,
            m[5],
            sd(5),
            m[6],
            sd(6),
            rm
        );
    }
}
