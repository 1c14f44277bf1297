//! One location's weekly cycle over a span of weeks: every week the forecast step, and when
//! the week has a count the analysis with it; one checkpoint per week. Pure computation on
//! plain data, so that `enkf.assimilate` runs it on any thread and the tests run it without a
//! database.
//!
//! A twin with the ED-visit stream (`ed.enabled`, `twin/ed.rs`) starts from `ed::prior`, steps
//! with `LocationModel::step_any` and updates each week jointly with the count and the week's
//! ED proportion, whichever are reported (`ed::update`); its checkpoints have
//! `ed::ED_STATE_DIM` rows per member. Without it the cycle is the 7-row one, unchanged.

use std::collections::VecDeque;

use nalgebra::DMatrix;

use super::config::TwinConfig;
use super::ed;
use super::location::LocationModel;
use super::suppression::{censored, Censoring};
use crate::error::EnkfError;

/// A week of a location's data, as the observation table gives it.
#[derive(Debug, Clone, PartialEq)]
pub struct WeekData {
    /// Week end (PostgreSQL day number).
    pub week: i32,
    /// The week's count (None: not reported, or a row with NULL or NaN).
    pub value: Option<f64>,
    /// Rows of the week, and distinct times among them (more rows than times: duplicates).
    pub rows: i64,
    pub times: i64,
    /// The smallest reported count of the week's rows.
    pub min_value: Option<f64>,
    /// The week's rows' fingerprint (XOR of a hash of each row's time and count).
    pub fingerprint: i64,
    /// The week's ED-visit proportion (the mean of its rows' reported proportions; None: none
    /// reported). Read only by a twin with the ED stream.
    pub ed: Option<f64>,
}

/// One location's work: where it starts and the weeks to go through.
#[derive(Debug, Clone)]
pub struct LocationJob {
    pub location: String,
    pub population: f64,
    /// First week to process (the origin for a run from the prior).
    pub start: i32,
    /// The analysis of the week before `start`, row-major [state][members] (None: the prior).
    pub ensemble: Option<Vec<f64>>,
    /// The counts before `start`, oldest first (for the observation error).
    pub recent: Vec<f64>,
    /// The ED proportions before `start`, oldest first (for their observation error; a twin
    /// with the ED stream).
    pub recent_ed: Vec<f64>,
    /// The weeks with data from `start` on, in order.
    pub weeks: Vec<WeekData>,
}

/// A week's analysis, to be stored.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub location: String,
    pub week: i32,
    pub observed: Option<f64>,
    /// The ED proportion assimilated (None: none reported, or a twin without the stream).
    pub observed_ed: Option<f64>,
    pub fingerprint: i64,
    pub rows: i32,
    /// `ed::state_dim(config)` x members.
    pub ensemble: DMatrix<f64>,
}

/// What every location's cycle of one run shares.
pub struct CycleContext<'a> {
    pub config: &'a TwinConfig,
    pub members: usize,
    /// The first week of the twin's grid.
    pub origin: i32,
    /// The last week of this run.
    pub end_week: i32,
    /// A twin of protected data: small counts enter the analysis censored (`suppression`).
    /// The checkpoints still record each count as the table holds it.
    pub censoring: Option<Censoring>,
}

/// Why a location's weeks cannot be assimilated.
#[derive(Debug, Clone, PartialEq)]
pub enum DataProblem {
    /// More than one row at the same time.
    Duplicate {
        location: String,
        week: i32,
    },
    Negative {
        location: String,
        week: i32,
        value: f64,
    },
    /// A stored analysis of the wrong size.
    Corrupt {
        location: String,
        week: i32,
        len: usize,
    },
    /// An ED-visit proportion outside [0, 1] (a twin with the ED stream).
    EdProportion {
        location: String,
        week: i32,
        value: f64,
    },
    Numerics(EnkfError),
}

/// A cycle's result: the checkpoints, the counts assimilated, and the job that continues from
/// the last checkpoint when weeks are left.
pub struct Cycled {
    pub checkpoints: Vec<Checkpoint>,
    pub observations: i32,
    pub rest: Option<LocationJob>,
}

/// Refuses a week whose rows repeat a time or hold a negative count, or (with the ED stream,
/// `ed`) whose ED proportion is outside [0, 1].
fn check_week(location: &str, w: &WeekData, ed: bool) -> Result<(), DataProblem> {
    if w.rows > w.times {
        return Err(DataProblem::Duplicate {
            location: location.to_string(),
            week: w.week,
        });
    }
    if let Some(v) = w.min_value.filter(|v| *v < 0.0) {
        return Err(DataProblem::Negative {
            location: location.to_string(),
            week: w.week,
            value: v,
        });
    }
    match w.ed {
        Some(p) if ed && !(p.is_finite() && (0.0..=1.0).contains(&p)) => {
            Err(DataProblem::EdProportion {
                location: location.to_string(),
                week: w.week,
                value: p,
            })
        }
        _ => Ok(()),
    }
}

/// A start state: the ensemble and the recent counts and ED proportions.
type Start = (DMatrix<f64>, VecDeque<f64>, VecDeque<f64>);

/// The ensemble and recent values a job starts from: its stored analysis (of the twin's
/// `ed::state_dim` rows per member), or the prior (`ed::prior` with the ED stream).
fn starting_state(
    ctx: &CycleContext<'_>,
    model: &LocationModel<'_>,
    job: &LocationJob,
) -> Result<Start, DataProblem> {
    let dim = ed::state_dim(ctx.config);
    match &job.ensemble {
        Some(flat) if job.start > ctx.origin => {
            if flat.len() != dim * ctx.members {
                return Err(DataProblem::Corrupt {
                    location: job.location.clone(),
                    week: job.start - 7,
                    len: flat.len(),
                });
            }
            let recent_ed = if ctx.config.ed.enabled {
                job.recent_ed.iter().copied().collect()
            } else {
                VecDeque::new()
            };
            Ok((
                DMatrix::from_row_slice(dim, ctx.members, flat),
                job.recent
                    .iter()
                    .map(|y| censored(ctx.censoring, *y))
                    .collect(),
                recent_ed,
            ))
        }
        _ if ctx.config.ed.enabled => Ok((
            ed::prior(model, ctx.members),
            VecDeque::new(),
            VecDeque::new(),
        )),
        _ => Ok((model.prior(ctx.members), VecDeque::new(), VecDeque::new())),
    }
}

/// Appends `y` to the last values and returns their mean over the window (`y` included).
fn push_mean(recent: &mut VecDeque<f64>, window: usize, y: f64) -> f64 {
    recent.push_back(y);
    while recent.len() > window {
        recent.pop_front();
    }
    recent.iter().sum::<f64>() / recent.len() as f64
}

/// A location's state between weeks.
struct Stepper<'a> {
    model: LocationModel<'a>,
    censoring: Option<Censoring>,
    window: usize,
    ens: DMatrix<f64>,
    recent: VecDeque<f64>,
    /// With the ED stream: its window, and its last proportions.
    ed_window: Option<usize>,
    recent_ed: VecDeque<f64>,
    out: Vec<Checkpoint>,
    observations: i32,
}

/// What a week brings: its count, its ED proportion, and its rows' fingerprint and number.
#[derive(Clone, Copy)]
struct Observed {
    value: Option<f64>,
    ed: Option<f64>,
    fingerprint: i64,
    rows: i32,
}

impl Observed {
    const NONE: Observed = Observed {
        value: None,
        ed: None,
        fingerprint: 0,
        rows: 0,
    };
}

impl Stepper<'_> {
    /// The week ending on `week`: the forecast step, then the analysis with its count (and,
    /// with the ED stream, its ED proportion: jointly).
    fn advance(&mut self, location: &str, week: i32, o: Observed) -> Result<(), DataProblem> {
        let observed_ed = match self.ed_window {
            None => {
                self.model.step(&mut self.ens, week);
                if let Some(y) = o.value.map(|y| censored(self.censoring, y)) {
                    let mean = push_mean(&mut self.recent, self.window, y);
                    self.model
                        .update(&mut self.ens, y, mean, week)
                        .map_err(DataProblem::Numerics)?;
                }
                None
            }
            Some(ed_window) => {
                self.model.step_any(&mut self.ens, week, 1.0);
                let admissions = o
                    .value
                    .map(|y| censored(self.censoring, y))
                    .map(|y| (y, push_mean(&mut self.recent, self.window, y)));
                let proportion =
                    o.ed.map(|p| (p, push_mean(&mut self.recent_ed, ed_window, p)));
                ed::update(&self.model, &mut self.ens, admissions, proportion, week)
                    .map_err(DataProblem::Numerics)?;
                o.ed
            }
        };
        if o.value.is_some() {
            self.observations += 1;
        }
        self.out.push(Checkpoint {
            location: location.to_string(),
            week,
            observed: o.value,
            observed_ed,
            fingerprint: o.fingerprint,
            rows: o.rows,
            ensemble: self.ens.clone(),
        });
        Ok(())
    }
}

/// Steps a location from its start state towards the end week, updating with each count, for
/// at most `max_weeks` weeks (the same arithmetic as one uninterrupted run: every draw is
/// seeded by location and week).
pub fn run(
    ctx: &CycleContext<'_>,
    job: &LocationJob,
    max_weeks: usize,
) -> Result<Cycled, DataProblem> {
    let model = LocationModel::new(ctx.config, &job.location, job.population);
    let (ens, recent, recent_ed) = starting_state(ctx, &model, job)?;
    let ed = ctx.config.ed.enabled;
    let mut s = Stepper {
        model,
        censoring: ctx.censoring,
        window: ctx.config.observation_error.window,
        ens,
        recent,
        ed_window: ed.then_some(ctx.config.ed.observation_error.window),
        recent_ed,
        out: Vec::new(),
        observations: 0,
    };
    let mut week = job.start.max(ctx.origin) - 7;
    let mut next = 0;
    for _ in 0..max_weeks.max(1) {
        match job.weeks.get(next) {
            // A week with rows (weeks without rows before it are stepped through first).
            Some(w) if w.week <= week + 7 => {
                check_week(&job.location, w, ed)?;
                week = w.week;
                let observed = Observed {
                    value: w.value,
                    ed: w.ed,
                    fingerprint: w.fingerprint,
                    rows: i32::try_from(w.rows).unwrap_or(i32::MAX),
                };
                s.advance(&job.location, week, observed)?;
                next += 1;
            }
            _ if week < ctx.end_week => {
                week += 7;
                s.advance(&job.location, week, Observed::NONE)?;
            }
            _ => break,
        }
    }
    let rest = (next < job.weeks.len() || week < ctx.end_week).then(|| LocationJob {
        location: job.location.clone(),
        population: job.population,
        start: week + 7,
        // Row-major [state][members], as a checkpoint stores it.
        ensemble: Some(s.ens.transpose().as_slice().to_vec()),
        recent: s.recent.iter().copied().collect(),
        recent_ed: s.recent_ed.iter().copied().collect(),
        weeks: job.weeks[next..].to_vec(),
    });
    Ok(Cycled {
        checkpoints: s.out,
        observations: s.observations,
        rest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::seirh::STATE_DIM as STATE_DIM_PLAIN;

    fn week(week: i32, value: Option<f64>) -> WeekData {
        WeekData {
            week,
            value,
            rows: 1,
            times: 1,
            min_value: value,
            fingerprint: week as i64,
            ed: None,
        }
    }

    fn job(weeks: Vec<WeekData>) -> LocationJob {
        LocationJob {
            location: "06".into(),
            population: 1e6,
            start: 0,
            ensemble: None,
            recent: Vec::new(),
            recent_ed: Vec::new(),
            weeks,
        }
    }

    #[test]
    fn gaps_are_stepped_through_and_every_week_has_a_checkpoint() {
        let cfg = TwinConfig::default();
        let ctx = CycleContext {
            config: &cfg,
            members: 10,
            origin: 0,
            end_week: 35,
            censoring: None,
        };
        let out = run(
            &ctx,
            &job(vec![week(0, Some(5.0)), week(21, Some(9.0))]),
            100,
        )
        .unwrap();
        let weeks: Vec<i32> = out.checkpoints.iter().map(|c| c.week).collect();
        assert_eq!(weeks, vec![0, 7, 14, 21, 28, 35]);
        assert_eq!(out.observations, 2);
        assert!(out.rest.is_none());
        assert_eq!(out.checkpoints[1].observed, None);
    }

    #[test]
    fn rounds_continue_exactly_where_they_stopped() {
        let cfg = TwinConfig::default();
        let ctx = CycleContext {
            config: &cfg,
            members: 12,
            origin: 0,
            end_week: 7 * 20,
            censoring: None,
        };
        let data: Vec<WeekData> = (0..18)
            .map(|k| week(7 * k, Some(10.0 + k as f64)))
            .collect();
        let whole = run(&ctx, &job(data.clone()), 1000).unwrap();
        let mut pieces = Vec::new();
        let mut next = Some(job(data));
        while let Some(j) = next {
            let part = run(&ctx, &j, 4).unwrap();
            pieces.extend(part.checkpoints);
            next = part.rest;
        }
        assert_eq!(pieces.len(), whole.checkpoints.len());
        for (a, b) in pieces.iter().zip(&whole.checkpoints) {
            assert_eq!((a.week, &a.ensemble), (b.week, &b.ensemble));
        }
    }

    /// A protected twin's analyses are the same whichever small count was withheld (in the
    /// week itself or in the window of a later run's start), and its checkpoints still record
    /// the count the table holds; without censoring the analyses differ.
    #[test]
    fn withheld_counts_leave_no_trace_in_the_analyses() {
        let cfg = TwinConfig::default();
        let with = |censoring: Option<Censoring>, small: f64| {
            let ctx = CycleContext {
                config: &cfg,
                members: 12,
                origin: 0,
                end_week: 7 * 11,
                censoring,
            };
            let data: Vec<WeekData> = (0..12)
                .map(|k| week(7 * k, Some(if k == 5 { small } else { 40.0 })))
                .collect();
            // In two rounds: the second starts from week 6 with week 5 in its recent window.
            let first = run(&ctx, &job(data), 7).unwrap();
            let rest = first.rest.expect("weeks left");
            let mut all = first.checkpoints;
            all.extend(run(&ctx, &rest, 100).unwrap().checkpoints);
            all
        };
        let censoring = Censoring::at(11.0);
        let (three, seven) = (with(censoring, 3.0), with(censoring, 7.0));
        assert_eq!(three.len(), 12);
        for (a, b) in three.iter().zip(&seven) {
            assert_eq!(a.ensemble, b.ensemble, "week {}", a.week);
        }
        assert_eq!(
            (three[5].observed, seven[5].observed),
            (Some(3.0), Some(7.0))
        );
        // The censored count is the midpoint of the withheld range, exactly.
        assert_eq!(with(censoring, 5.5)[11].ensemble, three[11].ensemble);
        assert_ne!(with(None, 3.0)[11].ensemble, with(None, 7.0)[11].ensemble);
    }

    fn ed_config() -> TwinConfig {
        let mut cfg = TwinConfig::default();
        cfg.ed.enabled = true;
        cfg
    }

    /// Weeks 0..n with counts and ED proportions, some of either missing.
    fn ed_weeks(n: i32) -> Vec<WeekData> {
        (0..n)
            .map(|k| {
                let mut w = week(7 * k, (k % 5 != 3).then_some(20.0 + 4.0 * k as f64));
                w.ed = (k % 4 != 2).then_some(0.004 + 0.0005 * k as f64);
                w
            })
            .collect()
    }

    /// Known answer: a week's proportion pulls the ensemble's modelled proportion (row ED_P)
    /// towards it; the same week without a proportion is the count-only update of that row.
    #[test]
    fn a_weeks_proportion_pulls_the_ed_rows_towards_it_and_its_absence_leaves_them_count_only() {
        let cfg = ed_config();
        let members = 40;
        let ctx = CycleContext {
            config: &cfg,
            members,
            origin: 0,
            end_week: 7 * 8,
            censoring: None,
        };
        let mean_p = |e: &DMatrix<f64>| e.row(ed::ED_P).mean();
        let mut data: Vec<WeekData> = (0..8).map(|k| week(7 * k, Some(30.0))).collect();
        let plain = run(&ctx, &job(data.clone()), 1000).unwrap();
        // The forecast of week 7 from week 6's analysis: its proportion is what week 7 would
        // have without any ED data.
        let model = LocationModel::new(&cfg, "06", 1e6);
        let mut forecast = plain.checkpoints[6].ensemble.clone();
        model.step_any(&mut forecast, 49, 1.0);
        let prior = mean_p(&forecast);
        for target in [0.2, 1e-4] {
            data[7].ed = Some(target);
            let with = run(&ctx, &job(data.clone()), 1000).unwrap();
            assert_eq!(with.checkpoints[7].observed_ed, Some(target));
            let post = mean_p(&with.checkpoints[7].ensemble);
            assert!(
                (post - target).abs() < (prior - target).abs(),
                "target {target}: prior {prior}, posterior {post}"
            );
            // Weeks before it are untouched.
            assert_eq!(with.checkpoints[6].ensemble, plain.checkpoints[6].ensemble);
        }
        // Without a proportion, week 7 is ed::update with the count alone.
        let mut count_only = forecast.clone();
        ed::update(&model, &mut count_only, Some((30.0, 30.0)), None, 49).unwrap();
        assert_eq!(plain.checkpoints[7].ensemble, count_only);
        assert_eq!(plain.checkpoints[7].observed_ed, None);
    }

    #[test]
    fn the_ed_stream_is_the_joint_update_of_both_streams_week_by_week() {
        let cfg = ed_config();
        let members = 16;
        let ctx = CycleContext {
            config: &cfg,
            members,
            origin: 0,
            end_week: 7 * 13,
            censoring: None,
        };
        let mut data = ed_weeks(12);
        // A week with neither stream, and one without rows at all (week 12's gap to 13).
        data[6].value = None;
        data[6].ed = None;
        let out = run(&ctx, &job(data.clone()), 1000).unwrap();
        assert_eq!(out.checkpoints.len(), 14);
        assert!(out.rest.is_none());
        assert_eq!(
            out.observations,
            data.iter().filter(|w| w.value.is_some()).count() as i32
        );

        // The same by hand: ed::prior, step_any, ed::update with the recent means of both.
        let model = LocationModel::new(&cfg, "06", 1e6);
        let mut ens = ed::prior(&model, members);
        let (mut counts, mut props) = (VecDeque::new(), VecDeque::new());
        for (k, c) in out.checkpoints.iter().enumerate() {
            let w = data.get(k);
            let (value, p) = (w.and_then(|w| w.value), w.and_then(|w| w.ed));
            model.step_any(&mut ens, c.week, 1.0);
            let adm = value.map(|y| (y, push_mean(&mut counts, 3, y)));
            let edv = p.map(|p| (p, push_mean(&mut props, 3, p)));
            ed::update(&model, &mut ens, adm, edv, c.week).unwrap();
            assert_eq!(c.week, 7 * k as i32);
            assert_eq!((c.observed, c.observed_ed), (value, p), "week {k}");
            assert_eq!(c.ensemble.nrows(), ed::ED_STATE_DIM);
            assert_eq!(c.ensemble, ens, "week {k}");
        }
        // A week without either is the forecast step alone.
        let mut stepped = out.checkpoints[5].ensemble.clone();
        model.step_any(&mut stepped, 7 * 6, 1.0);
        assert_eq!(out.checkpoints[6].ensemble, stepped);
    }

    #[test]
    fn an_ed_twin_resumes_from_a_checkpoint_and_its_recent_values_exactly() {
        let cfg = ed_config();
        let ctx = CycleContext {
            config: &cfg,
            members: 12,
            origin: 0,
            end_week: 7 * 15,
            censoring: None,
        };
        let data = ed_weeks(16);
        let whole = run(&ctx, &job(data.clone()), 1000).unwrap();
        // In rounds of 4 weeks (the job carried on in memory).
        let mut pieces = Vec::new();
        let mut next = Some(job(data.clone()));
        while let Some(j) = next {
            let part = run(&ctx, &j, 4).unwrap();
            pieces.extend(part.checkpoints);
            next = part.rest;
        }
        assert_eq!(pieces.len(), whole.checkpoints.len());
        for (a, b) in pieces.iter().zip(&whole.checkpoints) {
            assert_eq!((a.week, &a.ensemble), (b.week, &b.ensemble));
        }
        // As enkf.assimilate resumes: from the stored checkpoint of week 8 and the last
        // window's values stored before week 9 (reported ones only, oldest first).
        let stored = &whole.checkpoints[..9];
        let last = |f: &dyn Fn(&Checkpoint) -> Option<f64>| -> Vec<f64> {
            let mut v: Vec<f64> = stored.iter().rev().filter_map(f).take(3).collect();
            v.reverse();
            v
        };
        let resumed = LocationJob {
            start: 7 * 9,
            ensemble: Some(stored[8].ensemble.transpose().as_slice().to_vec()),
            recent: last(&|c| c.observed),
            recent_ed: last(&|c| c.observed_ed),
            ..job(data[9..].to_vec())
        };
        let rest = run(&ctx, &resumed, 1000).unwrap();
        assert_eq!(rest.checkpoints.len(), 7);
        for (a, b) in rest.checkpoints.iter().zip(&whole.checkpoints[9..]) {
            assert_eq!((a.week, &a.ensemble), (b.week, &b.ensemble));
        }
        // Without the recent ED values the observation error differs, and so does the result.
        let forgetful = LocationJob {
            recent_ed: Vec::new(),
            ..resumed
        };
        let other = run(&ctx, &forgetful, 1000).unwrap();
        assert_ne!(other.checkpoints[0].ensemble, whole.checkpoints[9].ensemble);
    }

    #[test]
    fn without_the_stream_the_cycle_is_the_seven_row_one_bit_for_bit() {
        let cfg = TwinConfig::default();
        let members = 14;
        let ctx = CycleContext {
            config: &cfg,
            members,
            origin: 0,
            end_week: 7 * 11,
            censoring: None,
        };
        let data = ed_weeks(12);
        let plain: Vec<WeekData> = data
            .iter()
            .map(|w| WeekData {
                ed: None,
                ..w.clone()
            })
            .collect();
        // ED values given to a twin without the stream are not read.
        let with_ed = run(&ctx, &job(data.clone()), 1000).unwrap();
        let without = run(&ctx, &job(plain), 1000).unwrap();
        // The cycle of before: model.prior, model.step, model.update.
        let model = LocationModel::new(&cfg, "06", 1e6);
        let mut ens = model.prior(members);
        let mut counts = VecDeque::new();
        for (k, (a, b)) in with_ed
            .checkpoints
            .iter()
            .zip(&without.checkpoints)
            .enumerate()
        {
            model.step(&mut ens, a.week);
            if let Some(y) = data[k].value {
                let mean = push_mean(&mut counts, 3, y);
                model.update(&mut ens, y, mean, a.week).unwrap();
            }
            assert_eq!(a.ensemble.nrows(), STATE_DIM_PLAIN);
            assert_eq!(a.observed_ed, None);
            for (x, y) in [(a, &ens), (b, &ens)] {
                let same = x
                    .ensemble
                    .iter()
                    .zip(y.iter())
                    .all(|(p, q)| p.to_bits() == q.to_bits());
                assert!(same, "week {k}");
            }
        }
    }

    #[test]
    fn ed_proportions_outside_zero_one_and_seven_row_states_of_an_ed_twin_are_refused() {
        let cfg = ed_config();
        let ctx = CycleContext {
            config: &cfg,
            members: 10,
            origin: 0,
            end_week: 14,
            censoring: None,
        };
        let mut pct = week(7, Some(3.0));
        pct.ed = Some(2.3);
        assert!(matches!(
            run(&ctx, &job(vec![pct]), 10),
            Err(DataProblem::EdProportion { week: 7, .. })
        ));
        let mut inf = week(7, None);
        inf.ed = Some(f64::INFINITY);
        assert!(matches!(
            run(&ctx, &job(vec![inf]), 10),
            Err(DataProblem::EdProportion { .. })
        ));
        // A twin without the stream does not read them.
        let plain = TwinConfig::default();
        let plain_ctx = CycleContext {
            config: &plain,
            ..ctx
        };
        let mut pct = week(7, Some(3.0));
        pct.ed = Some(2.3);
        assert!(run(&plain_ctx, &job(vec![pct]), 10).is_ok());
        // Checkpoints of 7 rows are of a twin without the stream.
        let mut seven = job(vec![]);
        seven.start = 7;
        seven.ensemble = Some(vec![0.5; STATE_DIM_PLAIN * 10]);
        assert!(matches!(
            run(&ctx, &seven, 10),
            Err(DataProblem::Corrupt { len: 70, .. })
        ));
    }

    #[test]
    fn duplicates_negatives_and_corrupt_states_are_refused() {
        let cfg = TwinConfig::default();
        let ctx = CycleContext {
            config: &cfg,
            members: 10,
            origin: 0,
            end_week: 14,
            censoring: None,
        };
        let mut dup = week(7, Some(3.0));
        dup.rows = 2;
        assert!(matches!(
            run(&ctx, &job(vec![dup]), 10),
            Err(DataProblem::Duplicate { week: 7, .. })
        ));
        let mut neg = week(7, Some(3.0));
        neg.min_value = Some(-1.0);
        assert!(matches!(
            run(&ctx, &job(vec![neg]), 10),
            Err(DataProblem::Negative { .. })
        ));
        let mut bad = job(vec![]);
        bad.start = 7;
        bad.ensemble = Some(vec![0.0; 5]);
        assert!(matches!(
            run(&ctx, &bad, 10),
            Err(DataProblem::Corrupt { len: 5, .. })
        ));
    }
}
