//! What a run writes: it cuts the checkpoints a revision invalidates, stores the new ones in
//! bulk, and prunes those older than `checkpoints.keep_weeks`.

use enkf_core::twin::cycle::Checkpoint;
use enkf_core::twin::ed;
use pgrx::datum::{Date, DatumWithOid};
use pgrx::memcxt::PgMemoryContexts;
use pgrx::spi::SpiClient;

use super::plan::Plan;
use crate::arrays::Float8Array2;
use crate::spi;
use crate::spi::bulk::{BulkInsert, Slices};
use crate::twin::catalog::Twin;
use crate::twin::dates::date;

/// Revised locations lose their checkpoints from the changed week on. A location that only
/// moves on past its last checkpoint (the weekly case) has none to lose: the statement, which
/// reads every checkpoint of the twin, runs only when needed.
pub(super) fn cut_revised(client: &mut SpiClient<'_>, twin: &Twin, plan: &Plan) {
    let (locations, starts): (Vec<String>, Vec<Date>) = plan
        .locations
        .iter()
        .filter(|p| {
            p.revised
                || plan
                    .kept
                    .get(&p.location)
                    .is_none_or(|&last| p.start <= last)
        })
        .map(|p| (p.location.clone(), date(p.start)))
        .unzip();
    if locations.is_empty() {
        return;
    }
    spi::update(
        client,
        "DELETE FROM enkf.checkpoints c
          USING ROWS FROM (pg_catalog.unnest($2::pg_catalog.text[]), pg_catalog.unnest($3::pg_catalog.date[])) AS p(loc, start)
          WHERE c.twin_id = $1 AND c.location = p.loc AND c.week_end >= p.start",
        &[
            DatumWithOid::from(twin.id),
            DatumWithOid::from(locations),
            DatumWithOid::from(starts),
        ],
    );
}

/// A location's checkpoints go: it is replayed from the prior.
pub(super) fn cut_location(client: &mut SpiClient<'_>, twin: &Twin, location: &str) {
    spi::update(
        client,
        "DELETE FROM enkf.checkpoints WHERE twin_id = $1 AND location = $2",
        &[DatumWithOid::from(twin.id), DatumWithOid::from(location)],
    );
}

/// Checkpoints older than `checkpoints.keep_weeks` before the end week go.
pub(super) fn prune(client: &mut SpiClient<'_>, twin: &Twin, end_week: i32) {
    if let Some(keep) = twin.config.checkpoints.keep_weeks {
        spi::update(
            client,
            "DELETE FROM enkf.checkpoints WHERE twin_id = $1 AND week_end <= $2",
            &[
                DatumWithOid::from(twin.id),
                DatumWithOid::from(date(end_week - 7 * keep as i32)),
            ],
        );
    }
}

/// Checkpoints written per statement, at most; fewer for large ensembles (`FLUSH_VALUES`).
const FLUSH_ROWS: usize = 128;
/// Ensemble values written per statement, at most (8 MB of parameters).
const FLUSH_VALUES: usize = 1 << 20;

/// The insert of `dim`-row checkpoints (7 rows per member, 10 with the ED stream).
fn checkpoints(dim: usize) -> BulkInsert<'static> {
    BulkInsert {
        table: "enkf.checkpoints",
        shared: &["twin_id", "run_id", "inputs_censored_below"],
        per_row: &[
            ("location", "pg_catalog.text"),
            ("week_end", "pg_catalog.date"),
            ("observed", "pg_catalog.float8"),
            ("rows_print", "pg_catalog.int8"),
            ("source_rows", "pg_catalog.int4"),
            ("observed_ed", "pg_catalog.float8"),
        ],
        // The rows' ensembles stacked in one [rows * dim][members] array.
        sliced: &["ensemble"],
        slices: Slices::Fixed(dim),
    }
}

/// Stores a run's checkpoints in statements of at most `FLUSH_ROWS` rows and `FLUSH_VALUES`
/// ensemble values, their parameters built in a memory context reset after each.
pub(super) struct CheckpointWriter {
    twin_id: i64,
    run_id: i64,
    /// What the run's counts were censored below (a protected twin), for every checkpoint.
    censored_below: Option<f64>,
    members: usize,
    /// State rows per member.
    dim: usize,
    flush_rows: usize,
    sql: String,
    pending: Vec<Checkpoint>,
    scratch: PgMemoryContexts,
}

impl CheckpointWriter {
    pub(super) fn new(twin: &Twin, run_id: i64) -> Self {
        let members = twin.members;
        let dim = ed::state_dim(&twin.config);
        CheckpointWriter {
            twin_id: twin.id,
            run_id,
            censored_below: twin.censored_below(),
            members,
            dim,
            flush_rows: (FLUSH_VALUES / (dim * members).max(1)).clamp(1, FLUSH_ROWS),
            sql: checkpoints(dim).sql(),
            pending: Vec::new(),
            scratch: PgMemoryContexts::new("pg_enkf assimilate"),
        }
    }

    pub(super) fn push(&mut self, client: &mut SpiClient<'_>, checkpoint: Checkpoint) {
        self.pending.push(checkpoint);
        if self.pending.len() >= self.flush_rows {
            self.flush(client);
        }
    }

    pub(super) fn flush(&mut self, client: &mut SpiClient<'_>) {
        if self.pending.is_empty() {
            return;
        }
        let rows = std::mem::take(&mut self.pending);
        let (twin_id, run_id, members, dim, sql) =
            (self.twin_id, self.run_id, self.members, self.dim, &self.sql);
        let censored_below = self.censored_below;
        // SAFETY: the parameters are built, used and freed inside the switch; nothing allocated
        // in the scratch context outlives its reset.
        unsafe {
            self.scratch.switch_to(|_| {
                let mut ensembles = Float8Array2::new(rows.len() * dim, members);
                let values = ensembles.data_mut();
                let block = dim * members;
                for (k, r) in rows.iter().enumerate() {
                    // Row-major [state][members], as the checkpoint column stores it.
                    let out = &mut values[k * block..(k + 1) * block];
                    for (i, row) in out.chunks_exact_mut(members).enumerate() {
                        for (j, v) in row.iter_mut().enumerate() {
                            *v = r.ensemble[(i, j)];
                        }
                    }
                }
                let mut locations = Vec::with_capacity(rows.len());
                let mut weeks = Vec::with_capacity(rows.len());
                let mut observed = Vec::with_capacity(rows.len());
                let mut prints = Vec::with_capacity(rows.len());
                let mut source_rows = Vec::with_capacity(rows.len());
                let mut observed_ed = Vec::with_capacity(rows.len());
                for r in rows {
                    observed_ed.push(r.observed_ed);
                    locations.push(r.location);
                    weeks.push(date(r.week));
                    observed.push(r.observed);
                    prints.push(r.fingerprint);
                    source_rows.push(r.rows);
                }
                spi::update(
                    client,
                    sql,
                    &[
                        DatumWithOid::from(twin_id),
                        DatumWithOid::from(run_id),
                        DatumWithOid::from(censored_below),
                        DatumWithOid::from(locations),
                        DatumWithOid::from(weeks),
                        DatumWithOid::from(observed),
                        DatumWithOid::from(prints),
                        DatumWithOid::from(source_rows),
                        DatumWithOid::from(observed_ed),
                        DatumWithOid::from(ensembles),
                    ],
                );
            });
            self.scratch.reset();
        }
    }
}
