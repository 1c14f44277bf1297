//! The season of the peak targets: its first and last week ends. The hub names them per season
//! (2025-26: the Saturdays 2025-11-22 .. 2026-05-23); a twin's configuration names them as
//! month-days (`targets.season_first_week` / `season_last_week`) so that one setting serves
//! every season, and the SQL layer may pass explicit dates instead.

use crate::dates::{civil, from_civil};
use crate::error::{EnkfError, Result};

/// The most weeks a season may have (the hub's have 27 to 33).
pub const MAX_SEASON_WEEKS: usize = 60;

/// A season: the weeks ending `first_week`, `first_week + 7`, ..., `last_week`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Season {
    pub first_week: i32,
    pub last_week: i32,
}

impl Season {
    /// A season from its first and last week ends (PostgreSQL day numbers), checked: the same
    /// weekday, in order, at most MAX_SEASON_WEEKS weeks.
    pub fn new(first_week: i32, last_week: i32) -> Result<Season> {
        if last_week < first_week || (last_week - first_week) % 7 != 0 {
            return Err(EnkfError::invalid(
                "season_last_week",
                format!(
                    "the season's last week end {} must be a whole number of weeks after its first {}",
                    crate::dates::iso(last_week),
                    crate::dates::iso(first_week)
                ),
                "both are week ends (Saturdays for MMWR weeks), the first one not after the last",
            ));
        }
        let weeks = ((last_week - first_week) / 7 + 1) as usize;
        if weeks > MAX_SEASON_WEEKS {
            return Err(EnkfError::TooLarge {
                arg: "season_last_week",
                detail: format!("a season of {weeks} weeks is longer than {MAX_SEASON_WEEKS}"),
                hint: "a season runs from autumn to spring".into(),
            });
        }
        Ok(Season {
            first_week,
            last_week,
        })
    }

    /// The season's week ends, in order.
    pub fn weeks(&self) -> Vec<i32> {
        (self.first_week..=self.last_week).step_by(7).collect()
    }

    /// The season a reference date belongs to, from month-days: a season year runs from
    /// August 1st to July 31st; its first week is the first one ending on or after
    /// `first` in the autumn, its last the last one ending on or before `last` in the next
    /// spring; week ends fall on the reference date's weekday.
    pub fn containing(reference_date: i32, first: (u32, u32), last: (u32, u32)) -> Result<Season> {
        let (y, m, _) = civil(reference_date);
        let start_year = if m >= 8 { y } else { y - 1 };
        let on_or_after = from_civil(start_year, first.0, first.1);
        let first_week = on_or_after + (reference_date - on_or_after).rem_euclid(7);
        let on_or_before = from_civil(start_year + 1, last.0, last.1);
        let last_week = on_or_before - (on_or_before - reference_date).rem_euclid(7);
        Season::new(first_week, last_week)
    }

    /// August 1st of the season's year: data before it are past seasons (the climatology's).
    pub fn year_start(&self) -> i32 {
        let (y, m, _) = civil(self.first_week);
        from_civil(if m >= 8 { y } else { y - 1 }, 8, 1)
    }
}

/// A month-day "MM-DD" of the configuration; `path` names its key in errors.
pub fn parse_month_day(path: &str, text: &str) -> Result<(u32, u32)> {
    let bad = || EnkfError::InvalidValue {
        arg: "config",
        detail: format!("config {path}: \"{text}\" is not a month-day"),
        hint:
            "\"MM-DD\", e.g. \"11-17\" (the season's first week is the first ending on or after it)"
                .into(),
    };
    let (m, d) = text.trim().split_once('-').ok_or_else(bad)?;
    let m: u32 = m.parse().map_err(|_| bad())?;
    let d: u32 = d.parse().map_err(|_| bad())?;
    let days = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if !(1..=12).contains(&m) || d == 0 || d > days[m as usize - 1] || (m, d) == (2, 29) {
        return Err(bad());
    }
    Ok((m, d))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dates::iso;

    fn date(y: i64, m: u32, d: u32) -> i32 {
        from_civil(y, m, d)
    }

    #[test]
    fn the_default_month_days_give_the_hubs_2025_26_season() {
        let first = parse_month_day("f", "11-17").unwrap();
        let last = parse_month_day("l", "05-29").unwrap();
        for r in [date(2025, 10, 18), date(2025, 12, 20), date(2026, 5, 30)] {
            let s = Season::containing(r, first, last).unwrap();
            assert_eq!(iso(s.first_week), "2025-11-22");
            assert_eq!(iso(s.last_week), "2026-05-23");
            assert_eq!(s.weeks().len(), 27);
        }
        // 2024-25 starts on the hub's first Saturday too (the hub's last was a week later).
        let s = Season::containing(date(2025, 1, 4), first, last).unwrap();
        assert_eq!(iso(s.first_week), "2024-11-23");
        assert_eq!(iso(s.last_week), "2025-05-24");
        assert_eq!(iso(s.year_start()), "2024-08-01");
    }

    #[test]
    fn bad_seasons_and_month_days_are_refused() {
        let d = date(2025, 11, 22);
        assert!(Season::new(d, d).is_ok());
        assert_eq!(
            Season::new(d, d - 7).unwrap_err().argument(),
            Some("season_last_week")
        );
        assert!(Season::new(d, d + 3).is_err());
        assert!(matches!(
            Season::new(d, d + 7 * 80),
            Err(EnkfError::TooLarge { .. })
        ));
        for bad in ["13-01", "02-30", "11", "x-y", "00-10", "02-29"] {
            assert_eq!(
                parse_month_day("targets.season_first_week", bad)
                    .unwrap_err()
                    .argument(),
                Some("config"),
                "{bad}"
            );
        }
    }
}
