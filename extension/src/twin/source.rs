//! The caller's observation table as a stream of weekly counts: SQL built from the names given
//! at `create_twin`, every identifier quoted (no injection through names), rows bucketed into
//! weeks with TimescaleDB's `time_bucket` when it is installed and plain date arithmetic when not.
//!
//! A table that keeps every published version of a count (an as-of column, as epidemiological
//! data services publish them) is read as the latest version of each (location, time) among
//! those published by a given day, or the latest of all.

use pgrx::spi::{quote_identifier, SpiClient};

use super::catalog::{self, TimeKind, Twin};

pub struct Source {
    /// Qualified, quoted relation name.
    pub relation: String,
    time: String,
    location: String,
    value: String,
    /// The quoted ED-visit proportion column (a twin with the ED stream).
    ed: Option<String>,
    kind: TimeKind,
    /// A week end (PostgreSQL day number): weeks end on this date's weekday.
    anchor: i32,
    timescaledb: Option<String>,
    versions: Option<Versions>,
}

/// The as-of column of a table of versions, and the last day of publication read.
pub struct Versions {
    /// Quoted column name.
    column: String,
    kind: TimeKind,
    /// Versions published on or before this day (PostgreSQL day number); None = all.
    through: Option<i32>,
}

impl Source {
    /// The twin's observation table, its columns checked to exist with usable types (42703,
    /// 42804 otherwise; the ED column too), every version; and whether every row can be placed in a week (the
    /// time and location columns are NOT NULL).
    pub fn checked(client: &SpiClient<'_>, twin: &Twin) -> (Source, bool) {
        let columns = catalog::check_observations(
            client,
            &twin.observations,
            &twin.time_column,
            &twin.location_column,
            &twin.value_column,
        );
        if let Some(ed) = &twin.ed_column {
            catalog::check_ed_column(client, &twin.observations, ed);
        }
        let source = Source::new(twin, columns.kind, catalog::timescaledb_schema(client));
        (source, columns.always_placed)
    }

    pub fn new(twin: &Twin, kind: TimeKind, timescaledb: Option<String>) -> Source {
        // 2000-01-01 (day 0) was a Saturday (weekday 6).
        let weekday = twin.config.week_end_weekday().unwrap_or(6) as i32;
        Source {
            relation: twin.observations.clone(),
            time: quote_identifier(&twin.time_column),
            location: quote_identifier(&twin.location_column),
            value: quote_identifier(&twin.value_column),
            ed: twin.ed_column.as_deref().map(quote_identifier),
            kind,
            anchor: weekday - 6,
            timescaledb,
            versions: None,
        }
    }

    /// The table as it stood on `through` (or now, None): each (location, time) at its latest
    /// version published by then, by the as-of column `column` of type `kind`.
    pub fn with_versions(mut self, column: &str, kind: TimeKind, through: Option<i32>) -> Source {
        self.versions = Some(Versions {
            column: quote_identifier(column),
            kind,
            through,
        });
        self
    }

    /// The rows read: the table, or the versions in force (a subquery with the table's columns,
    /// so that the filters below apply to it unchanged; the planner pushes bounds on the time
    /// and location columns into it). A version without an as-of is never in force.
    ///
    /// The versions in force are found by hashing, not sorting: the newest as-of of each
    /// (location, time), joined back to its row. On the bundled FluSight vintages (412,393
    /// versions) that took 0.11 s against 0.18 s for DISTINCT ON ... ORDER BY, and an
    /// assimilation reads the table three or four times.
    fn rows(&self) -> String {
        let Some(v) = &self.versions else {
            return self.relation.clone();
        };
        let bound = self
            .version_bound("ver")
            .map_or(String::new(), |b| format!(" AND {b}"));
        format!(
            "(SELECT ver.* FROM {rel} AS ver
               JOIN (SELECT ver.{loc} AS l, ver.{time} AS t, pg_catalog.max(ver.{asof}) AS a
                       FROM {rel} AS ver WHERE ver.{asof} IS NOT NULL{bound}
                      GROUP BY 1, 2) newest
                 ON ver.{loc} = newest.l AND ver.{time} = newest.t AND ver.{asof} = newest.a)",
            loc = self.location,
            time = self.time,
            rel = self.relation,
            asof = v.column,
        )
    }

    /// The publication day of a version of table alias `alias`.
    fn version_day(&self, alias: &str) -> String {
        match &self.versions {
            None => "NULL".into(),
            Some(v) => match v.kind {
                TimeKind::Date => format!("{alias}.{}", v.column),
                TimeKind::Timestamp => format!("({alias}.{})::pg_catalog.date", v.column),
                TimeKind::Timestamptz => {
                    format!("({alias}.{} AT TIME ZONE 'UTC')::pg_catalog.date", v.column)
                }
            },
        }
    }

    /// The condition "published on or before the bound" on table alias `alias`, on the raw
    /// as-of column (so that an index on it serves); None without a bound.
    fn version_bound(&self, alias: &str) -> Option<String> {
        let v = self.versions.as_ref()?;
        let day = v.through?;
        let end = format!("(DATE '{}' + 1)", enkf_core::dates::iso(day));
        let limit = match v.kind {
            TimeKind::Date => end,
            TimeKind::Timestamp => format!("{end}::pg_catalog.timestamp"),
            TimeKind::Timestamptz => format!("({end}::pg_catalog.timestamp AT TIME ZONE 'UTC')"),
        };
        Some(format!("{alias}.{} < {limit}", v.column))
    }

    /// How many versions published by the bound, dated in the weeks ending from date parameter
    /// `$1` to date parameter `$2`, claim a publication day before the day they describe (a
    /// count published before it was counted): NULL when the table keeps no versions.
    pub fn early_versions_sql(&self) -> Option<String> {
        self.versions.as_ref()?;
        Some(format!(
            "SELECT pg_catalog.count(*) FROM {rel} AS src
              WHERE {from} AND {to}{bound} AND {as_of} < {time}",
            rel = self.relation,
            from = self.time_bound(">=", "($1::pg_catalog.date - 6)"),
            to = self.time_bound("<", "($2::pg_catalog.date + 1)"),
            bound = self
                .version_bound("src")
                .map_or(String::new(), |b| format!(" AND {b}")),
            as_of = self.version_day("src"),
            time = self.date_expr(&format!("src.{}", self.time)),
        ))
    }

    /// The newest publication day among the versions read (NULL without versions).
    pub fn latest_version_sql(&self) -> Option<String> {
        self.versions.as_ref()?;
        Some(format!(
            "SELECT pg_catalog.max({day}) FROM {rel} AS src WHERE src.{asof} IS NOT NULL{bound}",
            day = self.version_day("src"),
            rel = self.relation,
            asof = self.versions.as_ref()?.column,
            bound = self
                .version_bound("src")
                .map_or(String::new(), |b| format!(" AND {b}")),
        ))
    }

    /// Every version published by the bound of the rows of the weeks ending from date parameter
    /// `$1` to date parameter `$2`, as (loc, week_end, t, as_of day, v, ok): the raw material
    /// of the values in force at any earlier day, read once (the nowcast). NULL without versions.
    pub fn versions_in_weeks_sql(&self) -> Option<String> {
        self.versions.as_ref()?;
        Some(format!(
            "SELECT (src.{loc})::pg_catalog.text, {week} - DATE '2000-01-01', src.{time}::pg_catalog.text,
                    {day} - DATE '2000-01-01', (src.{value})::pg_catalog.float8,
                    (src.{value} IS NOT NULL AND (src.{value})::pg_catalog.float8 <> 'NaN'::pg_catalog.float8)
               FROM {rel} AS src WHERE {from} AND {to}",
            loc = self.location,
            week = self.week_expr(),
            time = self.time,
            day = self.version_day("src"),
            value = self.value,
            rel = self.published(),
            from = self.time_bound(">=", "($1::pg_catalog.date - 6)"),
            to = self.time_bound("<", "($2::pg_catalog.date + 1)"),
        ))
    }

    /// The calendar date of a time value (`time_expr`: the time column or a value of its type).
    fn date_expr(&self, time_expr: &str) -> String {
        match self.kind {
            TimeKind::Date => time_expr.to_string(),
            TimeKind::Timestamp => format!("({time_expr})::pg_catalog.date"),
            TimeKind::Timestamptz => format!("({time_expr} AT TIME ZONE 'UTC')::pg_catalog.date"),
        }
    }

    /// The week end on or after a row's date.
    fn week_expr(&self) -> String {
        self.week_of(&format!("src.{}", self.time))
    }

    /// The week end on or after the date of a time value.
    fn week_of(&self, time_expr: &str) -> String {
        let d = self.date_expr(time_expr);
        let anchor = enkf_core::dates::iso(self.anchor);
        match &self.timescaledb {
            // time_bucket(interval, date, origin date) returns the start of the 7-day bucket
            // containing the date; buckets start the day after a week end.
            Some(schema) => format!(
                "({}.time_bucket(INTERVAL '7 days', {d}, DATE '{}') + 6)",
                quote_identifier(schema),
                enkf_core::dates::iso(self.anchor + 1)
            ),
            None => format!("({d} + ((DATE '{anchor}' - {d}) % 7 + 7) % 7)"),
        }
    }

    /// A bound on the raw time column from a date expression, so that an index on the time
    /// column (or TimescaleDB's chunk exclusion) can skip rows outside the weeks asked for.
    fn time_bound(&self, op: &str, date_expr: &str) -> String {
        match self.kind {
            TimeKind::Date => format!("src.{} {op} {date_expr}", self.time),
            TimeKind::Timestamp => {
                format!("src.{} {op} ({date_expr})::pg_catalog.timestamp", self.time)
            }
            TimeKind::Timestamptz => format!(
                "src.{} {op} (({date_expr})::pg_catalog.timestamp AT TIME ZONE 'UTC')",
                self.time
            ),
        }
    }

    /// The caller's rows as (loc, week_end, t, v, ok, e): `ok` is false for NULL or NaN counts;
    /// `e` is the row's ED-visit proportion (NULL for NULL or NaN, and for a twin without the
    /// ED stream).
    /// With `weeks = Some((a, b))`, only rows of the weeks ending from date parameter `$a` to
    /// date parameter `$b` are read.
    pub fn raw_sql(&self, weeks: Option<(usize, usize)>) -> String {
        let filter = match weeks {
            // A week ending on day W holds rows dated W - 6 .. W.
            Some((a, b)) => format!(
                " WHERE {} AND {}",
                self.time_bound(">=", &format!("(${a}::pg_catalog.date - 6)")),
                self.time_bound("<", &format!("(${b}::pg_catalog.date + 1)"))
            ),
            None => String::new(),
        };
        format!(
            "SELECT (src.{loc})::pg_catalog.text AS loc, {week} AS week_end, src.{time} AS t,
                    (src.{value})::pg_catalog.float8 AS v,
                    (src.{value} IS NOT NULL AND (src.{value})::pg_catalog.float8 <> 'NaN'::pg_catalog.float8) AS ok,
                    {ed} AS e
               FROM {rel} AS src{filter}",
            ed = self.ed.as_ref().map_or("NULL::pg_catalog.float8".to_string(), |c| format!(
                "NULLIF((src.{c})::pg_catalog.float8, 'NaN'::pg_catalog.float8)"
            )),
            loc = self.location,
            week = self.week_expr(),
            time = self.time,
            value = self.value,
            rel = self.rows(),
        )
    }

    /// A 64-bit hash of one row of `raw_sql` (its time and count; NULL and NaN hash alike,
    /// both being a missing count). A location's rows are fingerprinted by the XOR of these
    /// and their number, which the checkpoints keep per week (`rows_print`, `source_rows`): the
    /// revision check then groups the table's rows by location only, one hash aggregate, instead
    /// of first summing them into weeks (0.05-0.06 s against 0.20-0.23 s at county scale).
    pub fn row_print_sql(&self) -> String {
        let seed = match self.kind {
            TimeKind::Date => "(t - DATE '2000-01-01')".to_string(),
            // Seconds since 1970 (exact to the microsecond in a float8 for any current date),
            // whatever the session's time zone.
            TimeKind::Timestamp | TimeKind::Timestamptz => {
                "pg_catalog.hashfloat8extended(pg_catalog.date_part('epoch', t), 0)".to_string()
            }
        };
        let count =
            format!("pg_catalog.hashfloat8extended(coalesce(v, 'NaN'::pg_catalog.float8), {seed})");
        // With the ED stream a row's proportion is part of it too (a revised proportion is a
        // revision); without, the hash is the one of before, bit for bit.
        match self.ed {
            None => count,
            Some(_) => format!(
                "pg_catalog.hashfloat8extended(coalesce(e, 'NaN'::pg_catalog.float8), {count})"
            ),
        }
    }

    /// A week's ED-visit proportion from its rows `e`: their mean, or, when a row is outside
    /// [0, 1], the smallest such value (which the cycle refuses by name). NULL without any.
    const WEEK_ED: &'static str = "CASE WHEN pg_catalog.bool_or(e < 0 OR e > 1)
              THEN pg_catalog.min(e) FILTER (WHERE e < 0 OR e > 1) ELSE pg_catalog.avg(e) END";

    /// The last week end on or before `day` (a PostgreSQL day number; the infinite dates, and
    /// days too early to have a week end before them in PostgreSQL's range, are kept as they are).
    pub fn last_week_end(&self, day: i32) -> i32 {
        // 4714-11-24 BC, the first day PostgreSQL's dates can hold.
        const FIRST_DATE: i64 = -2_451_545;
        if day == i32::MAX || day == i32::MIN {
            return day;
        }
        let end = day as i64 - (day as i64 - self.anchor as i64).rem_euclid(7);
        if end < FIRST_DATE {
            day
        } else {
            end as i32
        }
    }

    /// The week of the table's first row, and that of its last row dated on or before date
    /// parameter `$1` (a week end: `last_week_end`): a minimum and a maximum of the time column,
    /// which an index on it (TimescaleDB makes one on every hypertable) answers without reading
    /// the table.
    /// The third column is false when either of those times is infinite (no week holds it).
    pub fn span_sql(&self) -> String {
        format!(
            "SELECT CASE WHEN finite THEN {first} END, CASE WHEN finite THEN {last} END, finite
               FROM (SELECT first_time, last_time,
                            coalesce(pg_catalog.isfinite(first_time), true)
                              AND coalesce(pg_catalog.isfinite(last_time), true) AS finite
                       FROM (SELECT (SELECT pg_catalog.min(src.{time}) FROM {rel} AS src) AS first_time,
                                    (SELECT pg_catalog.max(src.{time}) FROM {rel} AS src WHERE {bound}) AS last_time) t) span",
            first = self.week_of("span.first_time"),
            last = self.week_of("span.last_time"),
            time = self.time,
            // Every time with a version published by the bound has one in force: the span
            // needs no choice among versions.
            rel = self.published(),
            bound = self.time_bound("<", "($1::pg_catalog.date + 1)"),
        )
    }

    /// The rows published by the bound, every version (the table without versions).
    fn published(&self) -> String {
        match (&self.versions, self.version_bound("ver")) {
            (None, _) => self.relation.clone(),
            (Some(v), bound) => format!(
                "(SELECT ver.* FROM {rel} AS ver WHERE ver.{asof} IS NOT NULL{bound})",
                rel = self.relation,
                asof = v.column,
                bound = bound.map_or(String::new(), |b| format!(" AND {b}")),
            ),
        }
    }

    /// Whether a row has no time or no location (it cannot be placed in a week).
    pub fn unplaced_sql(&self) -> String {
        format!(
            "SELECT EXISTS (SELECT 1 FROM {rel} AS src WHERE src.{time} IS NULL OR src.{loc} IS NULL)",
            rel = self.published(),
            time = self.time,
            loc = self.location,
        )
    }

    /// One row per (location, week): the week's count (NULL when any row of the week is NULL or
    /// NaN), the number of rows, of distinct times, and the smallest value, for validation.
    pub fn weekly_sql(&self, weeks: Option<(usize, usize)>) -> String {
        format!(
            "SELECT loc, week_end, CASE WHEN pg_catalog.bool_and(ok) THEN pg_catalog.sum(v) END AS value,
                    pg_catalog.count(*) AS n_rows, pg_catalog.count(DISTINCT t) AS n_times,
                    pg_catalog.min(v) FILTER (WHERE ok) AS min_value, pg_catalog.bit_xor({print}) AS print,
                    {ed} AS ed
               FROM ({raw}) s
              GROUP BY loc, week_end",
            ed = Self::WEEK_ED,
            print = self.row_print_sql(),
            raw = self.raw_sql(weeks)
        )
    }

    /// One row per (location, week) with the week's count and ED-visit proportion only: the
    /// cheap form for comparing the table with what was assimilated.
    pub fn weekly_values_sql(&self, weeks: Option<(usize, usize)>) -> String {
        format!(
            "SELECT loc, week_end, CASE WHEN pg_catalog.bool_and(ok) THEN pg_catalog.sum(v) END AS value,
                    {ed} AS ed
               FROM ({raw}) s GROUP BY loc, week_end",
            ed = Self::WEEK_ED,
            raw = self.raw_sql(weeks)
        )
    }

    /// The SQL of a week's ED-visit proportion from rows `e` (see `weekly_sql`).
    pub fn week_ed_sql() -> &'static str {
        Self::WEEK_ED
    }
}

#[cfg(test)]
mod unit {
    // The week arithmetic is exercised against real tables in the pg tests; here only the
    // anchor convention is pinned down.
    #[test]
    fn anchor_is_a_saturday_for_mmwr_weeks() {
        assert_eq!(enkf_core::dates::iso(0), "2000-01-01");
    }

    #[test]
    fn last_week_end_on_or_before_a_day() {
        let source = |anchor| super::Source {
            relation: "obs".into(),
            time: "time".into(),
            location: "location".into(),
            value: "value".into(),
            ed: None,
            kind: super::TimeKind::Date,
            anchor,
            timescaledb: None,
            versions: None,
        };
        let saturdays = source(0);
        // 2000-01-01 is a Saturday: itself; the Friday after goes back to it, the next
        // Saturday is its own; days before 2000 too.
        assert_eq!(saturdays.last_week_end(0), 0);
        assert_eq!(saturdays.last_week_end(6), 0);
        assert_eq!(saturdays.last_week_end(7), 7);
        assert_eq!(saturdays.last_week_end(-1), -7);
        assert_eq!(saturdays.last_week_end(-8), -14);
        // Weeks ending on Wednesdays (anchor 2000-01-05).
        assert_eq!(source(4).last_week_end(3), -3);
        assert_eq!(source(4).last_week_end(4), 4);
        // Infinite dates and the first dates PostgreSQL holds are kept.
        assert_eq!(saturdays.last_week_end(i32::MAX), i32::MAX);
        assert_eq!(saturdays.last_week_end(i32::MIN), i32::MIN);
        assert_eq!(saturdays.last_week_end(-2_451_545), -2_451_545);
    }
}
