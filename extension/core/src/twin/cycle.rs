//! One location's weekly cycle over a span of weeks: every week the forecast step, and when
//! the week has a count the analysis with it; one checkpoint per week. Pure computation on
//! plain data, so that `enkf.assimilate` runs it on any thread and the tests run it without a
//! database.

use std::collections::VecDeque;

use nalgebra::DMatrix;

use super::config::TwinConfig;
use super::location::LocationModel;
use crate::error::EnkfError;
use crate::model::seirh::STATE_DIM;

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
    /// The weeks with data from `start` on, in order.
    pub weeks: Vec<WeekData>,
}

/// A week's analysis, to be stored.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub location: String,
    pub week: i32,
    pub observed: Option<f64>,
    pub fingerprint: i64,
    pub rows: i32,
    /// STATE_DIM x members.
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
    Numerics(EnkfError),
}

/// A cycle's result: the checkpoints, the counts assimilated, and the job that continues from
/// the last checkpoint when weeks are left.
pub struct Cycled {
    pub checkpoints: Vec<Checkpoint>,
    pub observations: i32,
    pub rest: Option<LocationJob>,
}

/// Refuses a week whose rows repeat a time or hold a negative count.
fn check_week(location: &str, w: &WeekData) -> Result<(), DataProblem> {
    if w.rows > w.times {
        return Err(DataProblem::Duplicate {
            location: location.to_string(),
            week: w.week,
        });
    }
    match w.min_value {
        Some(v) if v < 0.0 => Err(DataProblem::Negative {
            location: location.to_string(),
            week: w.week,
            value: v,
        }),
        _ => Ok(()),
    }
}

/// The ensemble and recent counts a job starts from: its stored analysis, or the prior.
fn starting_state(
    ctx: &CycleContext<'_>,
    model: &LocationModel<'_>,
    job: &LocationJob,
) -> Result<(DMatrix<f64>, VecDeque<f64>), DataProblem> {
    match &job.ensemble {
        Some(flat) if job.start > ctx.origin => {
            if flat.len() != STATE_DIM * ctx.members {
                return Err(DataProblem::Corrupt {
                    location: job.location.clone(),
                    week: job.start - 7,
                    len: flat.len(),
                });
            }
            Ok((
                DMatrix::from_row_slice(STATE_DIM, ctx.members, flat),
                job.recent.iter().copied().collect(),
            ))
        }
        _ => Ok((model.prior(ctx.members), VecDeque::new())),
    }
}

/// A location's state between weeks.
struct Stepper<'a> {
    model: LocationModel<'a>,
    window: usize,
    ens: DMatrix<f64>,
    recent: VecDeque<f64>,
    out: Vec<Checkpoint>,
    observations: i32,
}

impl Stepper<'_> {
    /// The week ending on `week`: the forecast step, then the analysis with its count.
    fn advance(
        &mut self,
        location: &str,
        week: i32,
        value: Option<f64>,
        fingerprint: i64,
        rows: i32,
    ) -> Result<(), DataProblem> {
        self.model.step(&mut self.ens, week);
        if let Some(y) = value {
            self.recent.push_back(y);
            while self.recent.len() > self.window {
                self.recent.pop_front();
            }
            let mean = self.recent.iter().sum::<f64>() / self.recent.len() as f64;
            self.model
                .update(&mut self.ens, y, mean, week)
                .map_err(DataProblem::Numerics)?;
            self.observations += 1;
        }
        self.out.push(Checkpoint {
            location: location.to_string(),
            week,
            observed: value,
            fingerprint,
            rows,
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
    let (ens, recent) = starting_state(ctx, &model, job)?;
    let mut s = Stepper {
        model,
        window: ctx.config.observation_error.window,
        ens,
        recent,
        out: Vec::new(),
        observations: 0,
    };
    let mut week = job.start.max(ctx.origin) - 7;
    let mut next = 0;
    for _ in 0..max_weeks.max(1) {
        match job.weeks.get(next) {
            // A week with rows (weeks without rows before it are stepped through first).
            Some(w) if w.week <= week + 7 => {
                check_week(&job.location, w)?;
                week = w.week;
                let rows = i32::try_from(w.rows).unwrap_or(i32::MAX);
                s.advance(&job.location, week, w.value, w.fingerprint, rows)?;
                next += 1;
            }
            _ if week < ctx.end_week => {
                week += 7;
                s.advance(&job.location, week, None, 0, 0)?;
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

    fn week(week: i32, value: Option<f64>) -> WeekData {
        WeekData {
            week,
            value,
            rows: 1,
            times: 1,
            min_value: value,
            fingerprint: week as i64,
        }
    }

    fn job(weeks: Vec<WeekData>) -> LocationJob {
        LocationJob {
            location: "06".into(),
            population: 1e6,
            start: 0,
            ensemble: None,
            recent: Vec::new(),
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

    #[test]
    fn duplicates_negatives_and_corrupt_states_are_refused() {
        let cfg = TwinConfig::default();
        let ctx = CycleContext {
            config: &cfg,
            members: 10,
            origin: 0,
            end_week: 14,
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
