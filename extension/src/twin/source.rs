//! The caller's observation table as a stream of weekly counts: SQL built from the names given
//! at `create_twin`, every identifier quoted (no injection through names), rows bucketed into
//! weeks with TimescaleDB's `time_bucket` when it is installed and plain date arithmetic when not.

use pgrx::spi::quote_identifier;

use super::catalog::{TimeKind, Twin};

pub struct Source {
    /// Qualified, quoted relation name.
    pub relation: String,
    time: String,
    location: String,
    value: String,
    kind: TimeKind,
    /// A week end (PostgreSQL day number): weeks end on this date's weekday.
    anchor: i32,
    timescaledb: Option<String>,
}

impl Source {
    pub fn new(twin: &Twin, kind: TimeKind, timescaledb: Option<String>) -> Source {
        // 2000-01-01 (day 0) was a Saturday (weekday 6).
        let weekday = twin.config.week_end_weekday().unwrap_or(6) as i32;
        Source {
            relation: twin.observations.clone(),
            time: quote_identifier(&twin.time_column),
            location: quote_identifier(&twin.location_column),
            value: quote_identifier(&twin.value_column),
            kind,
            anchor: weekday - 6,
            timescaledb,
        }
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

    /// The caller's rows as (loc, week_end, t, v, ok): `ok` is false for NULL or NaN counts.
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
                    (src.{value} IS NOT NULL AND (src.{value})::pg_catalog.float8 <> 'NaN'::pg_catalog.float8) AS ok
               FROM {rel} AS src{filter}",
            loc = self.location,
            week = self.week_expr(),
            time = self.time,
            value = self.value,
            rel = self.relation,
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
        format!("pg_catalog.hashfloat8extended(coalesce(v, 'NaN'::pg_catalog.float8), {seed})")
    }

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
            rel = self.relation,
            bound = self.time_bound("<", "($1::pg_catalog.date + 1)"),
        )
    }

    /// Whether a row has no time or no location (it cannot be placed in a week).
    pub fn unplaced_sql(&self) -> String {
        format!(
            "SELECT EXISTS (SELECT 1 FROM {rel} AS src WHERE src.{time} IS NULL OR src.{loc} IS NULL)",
            rel = self.relation,
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
                    pg_catalog.min(v) FILTER (WHERE ok) AS min_value, pg_catalog.bit_xor({print}) AS print
               FROM ({raw}) s
              GROUP BY loc, week_end",
            print = self.row_print_sql(),
            raw = self.raw_sql(weeks)
        )
    }

    /// One row per (location, week) with the week's count only: the cheap form for comparing
    /// the table with what was assimilated.
    pub fn weekly_values_sql(&self, weeks: Option<(usize, usize)>) -> String {
        format!(
            "SELECT loc, week_end, CASE WHEN pg_catalog.bool_and(ok) THEN pg_catalog.sum(v) END AS value
               FROM ({}) s GROUP BY loc, week_end",
            self.raw_sql(weeks)
        )
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
            kind: super::TimeKind::Date,
            anchor,
            timescaledb: None,
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
