//! Which locations a run works on, and from which week: weeks whose count differs from the
//! one assimilated (revisions), weeks never assimilated, locations behind the end week; of the
//! locations the caller may see.

use std::collections::{HashMap, HashSet};

use pgrx::datum::{Date, DatumWithOid};
use pgrx::spi::SpiClient;

use super::data::check_versions;
use crate::spi;
use crate::twin::catalog::{self, Twin};
use crate::twin::dates::date;
use crate::twin::source::Source;

/// A location to assimilate from `start` on; `revised` when that week had been assimilated
/// before (its count changed).
pub(super) struct Planned {
    pub location: String,
    pub start: i32,
    pub revised: bool,
}

/// A run's work.
pub(super) struct Plan {
    /// In byte order of the location, as the run's cursors sort (COLLATE "C").
    pub locations: Vec<Planned>,
    pub origin: i32,
    pub end_week: i32,
    /// The locations carried to the twin's last week, with that week.
    pub kept: HashMap<String, i32>,
    /// The newest publication day among the versions read (tables of versions).
    pub as_of_read: Option<i32>,
}

impl Plan {
    pub(super) fn revised(&self) -> i32 {
        self.locations.iter().filter(|p| p.revised).count() as i32
    }
}

/// The run's plan. Each query reads one table or joins by hash (FULL JOIN): no plan here
/// depends on statistics, which are stale right after a twin's first, large assimilation.
pub(super) fn plan(
    client: &mut SpiClient<'_>,
    twin: &Twin,
    source: &Source,
    origin: i32,
    end_week: i32,
) -> Plan {
    let previous_end = catalog::last_week(client, twin.id);
    let kept = last_kept(client, twin, previous_end);
    let from = compare_from(twin, origin, end_week, previous_end);
    check_versions(client, twin, source, from, end_week);
    let as_of_read = source
        .latest_version_sql()
        .and_then(|sql| spi::one::<Date>(client, &sql, &[]))
        .map(|d| d.to_pg_epoch_days());
    let (mut starts, suspects) = spi::with_work_mem(client, DIFF_WORK_MEM, |client| {
        revision_starts(client, source, twin.id, from, end_week, previous_end, &kept)
    });
    if let (Some(prev), false) = (previous_end, suspects.is_empty()) {
        refresh_prints(client, source, twin.id, from, prev, suspects);
    }
    for (loc, week) in censoring_changed(client, twin, previous_end) {
        let entry = starts.entry(loc).or_insert((week, true));
        if week <= entry.0 {
            *entry = (week, true);
        }
    }
    // Every location is carried to the end week on each run: those behind move on.
    for (loc, last) in &kept {
        if *last < end_week {
            let behind = (*last + 7, false);
            let entry = starts.entry(loc.clone()).or_insert(behind);
            if behind.0 < entry.0 {
                *entry = behind;
            }
        }
    }
    let mut locations: Vec<Planned> = starts
        .into_iter()
        .map(|(location, (start, revised))| Planned {
            location,
            start,
            revised,
        })
        .collect();
    locations.sort_by(|a, b| a.location.as_bytes().cmp(b.location.as_bytes()));
    skip_hidden(client, twin, source, &mut locations);
    Plan {
        locations,
        origin,
        end_week,
        kept,
        as_of_read,
    }
}

/// Per location, the first week whose analysis was made under another censoring than this
/// run's (the twin was reclassified, or the suppression threshold changed): re-assimilated
/// from there, so that a protected twin's analyses never rest on counts a reader may no longer
/// see, and a twin's analyses always follow its classification. Every run leaves each location
/// it works on under one censoring to its last week, so the last week (one index range) tells
/// whether the whole history needs looking at.
fn censoring_changed(
    client: &SpiClient<'_>,
    twin: &Twin,
    previous_end: Option<i32>,
) -> Vec<(String, i32)> {
    let Some(prev) = previous_end else {
        return Vec::new();
    };
    let changed = spi::one::<bool>(
        client,
        "SELECT EXISTS (SELECT 1 FROM enkf.checkpoints
                         WHERE twin_id = $1 AND week_end = $2 AND inputs_censored_below IS DISTINCT FROM $3)",
        &[
            DatumWithOid::from(twin.id),
            DatumWithOid::from(date(prev)),
            DatumWithOid::from(twin.censored_below()),
        ],
    );
    if changed != Some(true) {
        return Vec::new();
    }
    spi::select(
        client,
        "SELECT location, pg_catalog.min(week_end) FROM enkf.checkpoints
          WHERE twin_id = $1 AND inputs_censored_below IS DISTINCT FROM $2
          GROUP BY location",
        &[
            DatumWithOid::from(twin.id),
            DatumWithOid::from(twin.censored_below()),
        ],
        |r| {
            Ok((
                r.get::<String>(1)?.unwrap_or_default(),
                r.get::<Date>(2)?
                    .map(|d| d.to_pg_epoch_days())
                    .unwrap_or_default(),
            ))
        },
    )
}

/// The twin's locations: those with a checkpoint in its last assimilated week.
fn last_kept(
    client: &SpiClient<'_>,
    twin: &Twin,
    previous_end: Option<i32>,
) -> HashMap<String, i32> {
    let Some(prev) = previous_end else {
        return HashMap::new();
    };
    spi::select(
        client,
        "SELECT location FROM enkf.checkpoints WHERE twin_id = $1 AND week_end = $2",
        &[DatumWithOid::from(twin.id), DatumWithOid::from(date(prev))],
        |r| Ok((r.get::<String>(1)?.unwrap_or_default(), prev)),
    )
    .into_iter()
    .collect()
}

/// The first week compared with the table: the origin, unless a lookback or pruning limits it.
fn compare_from(twin: &Twin, origin: i32, end_week: i32, previous_end: Option<i32>) -> i32 {
    let mut from = origin;
    if let Some(k) = twin.config.revisions.lookback_weeks {
        from = from.max(end_week - 7 * (k as i32 - 1));
    }
    if let (Some(k), Some(prev)) = (twin.config.checkpoints.keep_weeks, previous_end) {
        // Weeks before this were pruned: there is nothing to compare them with.
        from = from.max(prev - 7 * (k as i32 - 1));
    }
    from
}

/// Minimum necessary access: a caller under row-level security assimilates only the locations
/// granted to them in enkf.location_grants; the others are left as they are (the policies
/// would refuse their checkpoints anyway, failing the whole run).
fn skip_hidden(client: &SpiClient<'_>, twin: &Twin, source: &Source, plan: &mut Vec<Planned>) {
    if plan.is_empty() {
        return;
    }
    let names: Vec<String> = plan.iter().map(|p| p.location.clone()).collect();
    let mut hidden: HashSet<String> = spi::select(
        client,
        "SELECT l FROM pg_catalog.unnest($1::pg_catalog.text[]) AS l WHERE NOT enkf.location_visible(l)",
        &[DatumWithOid::from(names)],
        |r| Ok(r.get::<String>(1)?.unwrap_or_default()),
    )
    .into_iter()
    .collect();
    // Row-level security on the caller's own observation table: a location none of whose rows
    // the caller can read is skipped, not taken for one whose counts were deleted (which would
    // overwrite its analyses with forecasts made without data).
    let obs_rls = spi::one::<bool>(
        client,
        "SELECT pg_catalog.row_security_active($1::pg_catalog.regclass)",
        &[DatumWithOid::from(twin.observations.as_str())],
    );
    if obs_rls == Some(true) {
        let readable: HashSet<String> = spi::select(
            client,
            &format!("SELECT DISTINCT s.loc FROM ({}) s", source.raw_sql(None)),
            &[],
            |r| Ok(r.get::<String>(1)?.unwrap_or_default()),
        )
        .into_iter()
        .collect();
        hidden.extend(
            plan.iter()
                .filter(|p| !readable.contains(&p.location))
                .map(|p| p.location.clone()),
        );
    }
    if !hidden.is_empty() {
        plan.retain(|p| !hidden.contains(&p.location));
        pgrx::notice!(
            "enkf.assimilate: {} location(s) of twin \"{}\" skipped: not granted to {} in enkf.location_grants, or none of their observations readable by them",
            hidden.len(),
            twin.name,
            spi::one::<String>(client, "SELECT CURRENT_USER::pg_catalog.text", &[]).unwrap_or_default()
        );
    }
}

/// The locations whose stored counts differ from the table, each with the earliest week
/// that differs and whether that week had been assimilated (a revision) or not (new data).
///
/// Comparing every (location, week) of the table with the checkpoints is a join of two
/// tables of locations x weeks rows. Most weeks nothing was revised, so the comparison goes
/// per location first: an order-independent fingerprint of the rows it was assimilated from
/// (the XOR of a 64-bit hash of each row's time and count, and their number), from one hash
/// aggregate over the table, against the same kept per week in the checkpoints. Only
/// locations whose fingerprints or first weeks differ are compared week by week. (A change
/// goes unnoticed only if it keeps the number of rows and the hashes of the rows changed XOR
/// to zero: a chance of 2^-64.)
fn revision_starts(
    client: &SpiClient<'_>,
    source: &Source,
    twin_id: i64,
    compare_from: i32,
    end_week: i32,
    previous_end: Option<i32>,
    kept: &HashMap<String, i32>,
) -> (HashMap<String, (i32, bool)>, Vec<String>) {
    let weeks = (date(compare_from), date(end_week));
    let suspects: Option<Vec<String>> = previous_end.map(|prev| {
        let table = table_prints(client, source, weeks, prev);
        let stored = stored_prints(client, twin_id, weeks.0, prev);
        differing_prints(&table, &stored, kept)
    });
    if suspects.as_ref().is_some_and(|s| s.is_empty()) {
        return (HashMap::new(), Vec::new());
    }
    let starts = weekly_differences(client, source, twin_id, weeks, suspects.as_deref());
    (starts, suspects.unwrap_or_default())
}

/// Per location of the table: its first week from `weeks.0` and the fingerprint and number
/// of its rows up to the previous run's last week `prev`.
fn table_prints(
    client: &SpiClient<'_>,
    source: &Source,
    (from, to): (Date, Date),
    prev: i32,
) -> HashMap<String, Fingerprint> {
    spi::select(
        client,
        &format!(
            "SELECT loc, pg_catalog.min(week_end),
                    coalesce(pg_catalog.bit_xor({print}) FILTER (WHERE week_end <= $3), 0),
                    pg_catalog.count(*) FILTER (WHERE week_end <= $3), false
               FROM ({raw}) o GROUP BY loc",
            print = source.row_print_sql(),
            raw = source.raw_sql(Some((1, 2))),
        ),
        &[
            DatumWithOid::from(from),
            DatumWithOid::from(to),
            DatumWithOid::from(date(prev)),
        ],
        fingerprint_row,
    )
    .into_iter()
    .collect()
}

/// The same per location of the twin's checkpoints from `from` to `prev`. Checkpoints
/// written before 0.2.0 have no fingerprint (NULL): their locations are flagged `legacy`, to
/// be compared week by week (and `refresh_prints` fills the fingerprints in).
fn stored_prints(
    client: &SpiClient<'_>,
    twin_id: i64,
    from: Date,
    prev: i32,
) -> HashMap<String, Fingerprint> {
    spi::select(
        client,
        "SELECT location, pg_catalog.min(week_end), coalesce(pg_catalog.bit_xor(rows_print), 0),
                coalesce(pg_catalog.sum(source_rows), 0),
                pg_catalog.bool_or(source_rows IS NULL OR rows_print IS NULL)
           FROM enkf.checkpoints
          WHERE twin_id = $3 AND week_end BETWEEN $1 AND $2
          GROUP BY location",
        &[
            DatumWithOid::from(from),
            DatumWithOid::from(date(prev)),
            DatumWithOid::from(twin_id),
        ],
        fingerprint_row,
    )
    .into_iter()
    .collect()
}

/// The locations to compare week by week: a fingerprint differs, or data earlier than the
/// first checkpoint, or one side only, or a location not carried to the last week (left out
/// of an earlier run).
fn differing_prints(
    table: &HashMap<String, Fingerprint>,
    stored: &HashMap<String, Fingerprint>,
    kept: &HashMap<String, i32>,
) -> Vec<String> {
    let mut out: Vec<String> = table
        .iter()
        .filter(|(loc, here)| match stored.get(*loc) {
            Some(there) => {
                there.legacy
                    || (here.print, here.rows) != (there.print, there.rows)
                    || here.first < there.first
                    || !kept.contains_key(*loc)
            }
            None => true,
        })
        .map(|(loc, _)| loc.clone())
        .collect();
    out.extend(
        stored
            .iter()
            .filter(|(loc, there)| (there.rows > 0 || there.legacy) && !table.contains_key(*loc))
            .map(|(loc, _)| loc.clone()),
    );
    out
}

/// Week by week, for the `suspects` only (every location on a twin's first run, `None`): per
/// location, the earliest week whose count differs from its checkpoint's, and whether that
/// week had been assimilated.
fn weekly_differences(
    client: &SpiClient<'_>,
    source: &Source,
    twin_id: i64,
    (from, to): (Date, Date),
    suspects: Option<&[String]>,
) -> HashMap<String, (i32, bool)> {
    let only = |col: &str| match suspects {
        Some(_) => format!(" AND {col} = ANY($4::pg_catalog.text[])"),
        None => String::new(),
    };
    let diff_sql = format!(
        "WITH o AS (SELECT * FROM ({weekly}) w WHERE true{o_only}),
              c AS (SELECT location, week_end, observed, observed_ed FROM enkf.checkpoints
                     WHERE twin_id = $3 AND week_end BETWEEN $1 AND $2{c_only})
         SELECT coalesce(o.loc, c.location), pg_catalog.min(coalesce(o.week_end, c.week_end)),
                -- Whether the earliest differing week had been assimilated (a revision): an
                -- aggregate without a per-group sort.
                pg_catalog.min(c.week_end) = pg_catalog.min(coalesce(o.week_end, c.week_end))
           FROM o FULL JOIN c ON c.location = o.loc AND c.week_end = o.week_end
          WHERE (c.location IS NULL OR c.observed IS DISTINCT FROM o.value
                 OR c.observed_ed IS DISTINCT FROM o.ed)
            AND coalesce(o.week_end, c.week_end) BETWEEN $1 AND $2
          GROUP BY 1",
        weekly = source.weekly_values_sql(Some((1, 2))),
        o_only = only("w.loc"),
        c_only = only("location"),
    );
    let mut args = vec![
        DatumWithOid::from(from),
        DatumWithOid::from(to),
        DatumWithOid::from(twin_id),
    ];
    if let Some(s) = suspects {
        args.push(DatumWithOid::from(s.to_vec()));
    }
    spi::select(client, &diff_sql, &args, |r| {
        Ok((
            r.get::<String>(1)?.unwrap_or_default(),
            (
                r.get::<Date>(2)?
                    .map(|d| d.to_pg_epoch_days())
                    .unwrap_or_default(),
                r.get::<bool>(3)?.unwrap_or(false),
            ),
        ))
    })
    .into_iter()
    .collect()
}

/// A location's first week in the compared weeks and the fingerprint of its rows there.
struct Fingerprint {
    first: i32,
    print: i64,
    rows: i64,
    /// Some checkpoints have no fingerprint (written before 0.2.0).
    legacy: bool,
}

fn fingerprint_row(
    r: &pgrx::spi::SpiHeapTupleData<'_>,
) -> pgrx::spi::SpiResult<(String, Fingerprint)> {
    Ok((
        r.get::<String>(1)?.unwrap_or_default(),
        Fingerprint {
            first: r
                .get::<Date>(2)?
                .map(|d| d.to_pg_epoch_days())
                .unwrap_or_default(),
            print: r.get::<i64>(3)?.unwrap_or(0),
            rows: r.get::<i64>(4)?.unwrap_or(0),
            legacy: r.get::<bool>(5)?.unwrap_or(false),
        },
    ))
}

/// Stores the table's fingerprint in the checkpoints of the suspects' weeks whose counts are
/// unchanged (rows rewritten with the same weekly count, or checkpoints from before 0.2.0), so
/// that they are not compared week by week again on every run. Weeks whose counts changed are
/// re-assimilated, and their checkpoints rewritten, by the caller.
///
/// The table is read first and the checkpoints updated from parameters after: pg_enkf's own
/// writes never read the caller's objects (see `crate::writes`).
fn refresh_prints(
    client: &mut SpiClient<'_>,
    source: &Source,
    twin_id: i64,
    from: i32,
    prev: i32,
    suspects: Vec<String>,
) {
    let w = weekly_prints(client, source, from, prev, &suspects);
    // Weeks with rows, then weeks without (missing, assimilated as such).
    spi::update(
        client,
        "UPDATE enkf.checkpoints c SET rows_print = w.print, source_rows = w.n_rows
           FROM ROWS FROM (pg_catalog.unnest($4::pg_catalog.text[]), pg_catalog.unnest($5::pg_catalog.date[]), pg_catalog.unnest($6::pg_catalog.float8[]), pg_catalog.unnest($7::pg_catalog.int8[]), pg_catalog.unnest($8::pg_catalog.int4[])) AS w(loc, week_end, value, print, n_rows)
          WHERE c.twin_id = $3 AND c.location = w.loc AND c.week_end = w.week_end
            AND c.week_end BETWEEN $1 AND $2 AND c.observed IS NOT DISTINCT FROM w.value
            AND (c.rows_print IS DISTINCT FROM w.print OR c.source_rows IS DISTINCT FROM w.n_rows)",
        &[
            DatumWithOid::from(date(from)),
            DatumWithOid::from(date(prev)),
            DatumWithOid::from(twin_id),
            DatumWithOid::from(w.locations.clone()),
            DatumWithOid::from(w.week_ends.clone()),
            DatumWithOid::from(w.values),
            DatumWithOid::from(w.prints),
            DatumWithOid::from(w.counts),
        ],
    );
    spi::update(
        client,
        "UPDATE enkf.checkpoints c SET rows_print = 0, source_rows = 0
          WHERE c.twin_id = $3 AND c.location = ANY($4::pg_catalog.text[]) AND c.week_end BETWEEN $1 AND $2
            AND c.observed IS NULL
            AND (c.rows_print IS DISTINCT FROM 0 OR c.source_rows IS DISTINCT FROM 0)
            AND NOT EXISTS (SELECT 1 FROM ROWS FROM (pg_catalog.unnest($5::pg_catalog.text[]), pg_catalog.unnest($6::pg_catalog.date[])) AS s(loc, week_end)
                             WHERE s.loc = c.location AND s.week_end = c.week_end)",
        &[
            DatumWithOid::from(date(from)),
            DatumWithOid::from(date(prev)),
            DatumWithOid::from(twin_id),
            DatumWithOid::from(suspects),
            DatumWithOid::from(w.locations),
            DatumWithOid::from(w.week_ends),
        ],
    );
}

/// The table's weeks with rows of some locations, as columns: each week's sum, fingerprint
/// and number of rows.
struct WeeklyPrints {
    locations: Vec<String>,
    week_ends: Vec<Option<Date>>,
    values: Vec<Option<f64>>,
    prints: Vec<i64>,
    counts: Vec<i32>,
}

fn weekly_prints(
    client: &SpiClient<'_>,
    source: &Source,
    from: i32,
    prev: i32,
    locations: &[String],
) -> WeeklyPrints {
    let weeks = spi::select(
        client,
        &format!(
            "SELECT w.loc, w.week_end, w.value, w.print, w.n_rows FROM ({weekly}) w
              WHERE w.loc = ANY($3::pg_catalog.text[])",
            weekly = source.weekly_sql(Some((1, 2))),
        ),
        &[
            DatumWithOid::from(date(from)),
            DatumWithOid::from(date(prev)),
            DatumWithOid::from(locations.to_vec()),
        ],
        |r| {
            Ok((
                r.get::<String>(1)?.unwrap_or_default(),
                r.get::<Date>(2)?,
                r.get::<f64>(3)?,
                r.get::<i64>(4)?.unwrap_or(0),
                r.get::<i64>(5)?.unwrap_or(0),
            ))
        },
    );
    let mut out = WeeklyPrints {
        locations: Vec::with_capacity(weeks.len()),
        week_ends: Vec::with_capacity(weeks.len()),
        values: Vec::with_capacity(weeks.len()),
        prints: Vec::with_capacity(weeks.len()),
        counts: Vec::with_capacity(weeks.len()),
    };
    for (loc, week, value, print, n) in weeks {
        out.locations.push(loc);
        out.week_ends.push(week);
        out.values.push(value);
        out.prints.push(print);
        out.counts.push(i32::try_from(n).unwrap_or(i32::MAX));
    }
    out
}

/// The least work_mem the revision check runs with: its passes aggregate every row of the table
/// and of the twin's checkpoints, and the week-by-week comparison joins them; at county scale
/// (3,143 locations x 100 weeks) that spilled to disk with the default 4 MB and took twice as
/// long.
const DIFF_WORK_MEM: &str = "64MB";
