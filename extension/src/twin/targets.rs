//! Where `enkf.forecast` stores every hub target from the trajectories
//! (`enkf.target_forecasts`): the rows of `enkf_core::twin::forecast::target_rows`, written in
//! bulk, and the bound on the trajectories a twin's configuration asks for.

use enkf_core::twin::forecast::{TargetRow, ED_TARGET, MAX_TARGET_WEEKS};
use enkf_core::twin::TwinConfig;
use pgrx::datum::{Date, DatumWithOid};
use pgrx::memcxt::PgMemoryContexts;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;

use super::catalog::Twin;
use super::dates::date;
use crate::error::raise;
use crate::spi;
use crate::spi::bulk::{ragged_bounds, BulkInsert, Slices};

/// Refuses (54000), before any work, a configuration whose trajectories would hold more than
/// `enkf.max_ensemble_elements` values per location: the twin's members x draws (twice: the
/// combination's trajectories are a coupled copy) and the baseline's paths, over the weeks to
/// the season's end.
pub(super) fn check_trajectories(twin: &Twin) {
    let max = crate::guc::MAX_ENSEMBLE_ELEMENTS.get().max(1) as usize;
    let cfg: &TwinConfig = &twin.config;
    let paths =
        2 * twin.members * cfg.forecast.draws_per_member as usize + cfg.targets.baseline_paths;
    let values = paths.saturating_mul(MAX_TARGET_WEEKS);
    if values > max {
        raise(
            PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            format!(
                "config: {} members x forecast.draws_per_member {} and targets.baseline_paths {} make {values} trajectory values over {MAX_TARGET_WEEKS} weeks, more than enkf.max_ensemble_elements = {max}",
                twin.members, cfg.forecast.draws_per_member, cfg.targets.baseline_paths
            ),
            None,
            "lower forecast.draws_per_member or targets.baseline_paths, or ask a superuser to raise enkf.max_ensemble_elements",
        );
    }
}

/// Target rows written per statement, at most, and their values. Each row's ids are a slice of
/// one text[] parameter, and PostgreSQL finds a slice of a variable-width array by walking it
/// from the start: the cost of a statement grows with rows x values. 8,192 values keep that
/// walk short (1M values per statement made the writes of 53 states' targets take 3.4 s).
const FLUSH_ROWS: usize = 2048;
const FLUSH_VALUES: usize = 1 << 13;

/// Writes a forecast run's target rows in batches.
pub(super) struct TargetWriter {
    twin_id: i64,
    run_id: i64,
    reference: i32,
    sql: String,
    pending: Vec<(String, Option<f64>, TargetRow)>,
    values: usize,
    scratch: PgMemoryContexts,
}

impl TargetWriter {
    pub(super) fn new(twin: &Twin, run_id: i64, reference: i32) -> TargetWriter {
        let sql = BulkInsert {
            table: "enkf.target_forecasts",
            shared: &["twin_id", "run_id", "reference_date"],
            per_row: &[
                ("model", "pg_catalog.text"),
                ("location", "pg_catalog.text"),
                ("target", "pg_catalog.text"),
                ("output_type", "pg_catalog.text"),
                ("horizon", "pg_catalog.int4"),
                ("target_end_date", "pg_catalog.date"),
                ("counts", "pg_catalog.bool"),
                ("inputs_censored_below", "pg_catalog.float8"),
            ],
            sliced: &["output_type_ids", "output_values"],
            slices: Slices::Ragged,
        }
        .sql();
        TargetWriter {
            twin_id: twin.id,
            run_id,
            reference,
            sql,
            pending: Vec::new(),
            values: 0,
            scratch: PgMemoryContexts::new("pg_enkf target writes"),
        }
    }

    /// Queues a location's rows; writes when the batch is full.
    pub(super) fn queue(
        &mut self,
        client: &mut SpiClient<'_>,
        location: &str,
        censored_below: Option<f64>,
        rows: Vec<TargetRow>,
    ) {
        for row in rows {
            self.values += row.values.len();
            self.pending
                .push((location.to_string(), censored_below, row));
        }
        if self.pending.len() >= FLUSH_ROWS || self.values >= FLUSH_VALUES {
            self.flush(client);
        }
    }

    pub(super) fn flush(&mut self, client: &mut SpiClient<'_>) {
        if self.pending.is_empty() {
            return;
        }
        let rows = std::mem::take(&mut self.pending);
        self.values = 0;
        let (twin_id, run_id, reference, sql) =
            (self.twin_id, self.run_id, self.reference, &self.sql);
        // SAFETY: the parameters are built, used and freed inside the switch; nothing allocated
        // in the scratch context outlives its reset.
        unsafe {
            self.scratch.switch_to(|_| {
                let (lo, hi) = ragged_bounds(rows.iter().map(|r| r.2.values.len()));
                let mut columns = Columns::default();
                for (location, censored_below, row) in rows {
                    columns.push(location, censored_below, row);
                }
                let mut args = vec![
                    DatumWithOid::from(twin_id),
                    DatumWithOid::from(run_id),
                    DatumWithOid::from(date(reference)),
                ];
                args.extend(columns.into_args(lo, hi));
                spi::update(client, sql, &args);
            });
            self.scratch.reset();
        }
    }
}

/// The per-row columns of a batch, and the values sliced per row.
#[derive(Default)]
struct Columns {
    models: Vec<&'static str>,
    locations: Vec<String>,
    targets: Vec<String>,
    output_types: Vec<&'static str>,
    horizons: Vec<Option<i32>>,
    target_end_dates: Vec<Option<Date>>,
    counts: Vec<bool>,
    censored_below: Vec<Option<f64>>,
    ids: Vec<String>,
    values: Vec<f64>,
}

impl Columns {
    fn push(&mut self, location: String, censored_below: Option<f64>, row: TargetRow) {
        // Counts of admissions obey the small-cell rule value by value; probabilities and
        // proportions do not give a count away.
        self.counts
            .push(row.output_type != "pmf" && row.target != ED_TARGET);
        self.models.push(row.model);
        self.locations.push(location);
        self.targets.push(row.target);
        self.output_types.push(row.output_type);
        self.horizons.push(row.horizon);
        self.target_end_dates.push(row.target_end_date.map(date));
        self.censored_below.push(censored_below);
        self.ids.extend(row.ids);
        self.values.extend(row.values);
    }

    /// The statement's parameters after the shared ones: the per-row arrays, the slices'
    /// bounds, the sliced arrays.
    fn into_args<'a>(self, lo: Vec<i32>, hi: Vec<i32>) -> Vec<DatumWithOid<'a>> {
        vec![
            DatumWithOid::from(self.models),
            DatumWithOid::from(self.locations),
            DatumWithOid::from(self.targets),
            DatumWithOid::from(self.output_types),
            DatumWithOid::from(self.horizons),
            DatumWithOid::from(self.target_end_dates),
            DatumWithOid::from(self.counts),
            DatumWithOid::from(self.censored_below),
            DatumWithOid::from(lo),
            DatumWithOid::from(hi),
            DatumWithOid::from(self.ids),
            DatumWithOid::from(self.values),
        ]
    }
}
