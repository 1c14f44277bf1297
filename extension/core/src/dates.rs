//! Calendar dates as PostgreSQL stores them: days since 2000-01-01 (`date` internal form).

/// Days from 1970-01-01 to 2000-01-01.
const PG_EPOCH_UNIX_DAYS: i64 = 10_957;

/// (year, month, day) of a PostgreSQL day number (proleptic Gregorian).
pub fn civil(pg_days: i32) -> (i64, u32, u32) {
    // Howard Hinnant's days_from_civil inverse.
    let z = pg_days as i64 + PG_EPOCH_UNIX_DAYS + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// PostgreSQL day number of a calendar date.
pub fn from_civil(year: i64, month: u32, day: u32) -> i32 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = month as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe - 719_468 - PG_EPOCH_UNIX_DAYS) as i32
}

/// Day of the year, 1 on January 1st.
pub fn day_of_year(pg_days: i32) -> f64 {
    let (y, _, _) = civil(pg_days);
    (pg_days - from_civil(y, 1, 1) + 1) as f64
}

/// ISO 8601 text of a PostgreSQL day number.
pub fn iso(pg_days: i32) -> String {
    // PostgreSQL's infinite dates.
    match pg_days {
        i32::MAX => return "infinity".into(),
        i32::MIN => return "-infinity".into(),
        _ => {}
    }
    let (y, m, d) = civil(pg_days);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(from_civil(2000, 1, 1), 0);
        assert_eq!(iso(i32::MAX), "infinity");
        assert_eq!(iso(i32::MIN), "-infinity");
        assert_eq!(civil(0), (2000, 1, 1));
        assert_eq!(iso(from_civil(2024, 2, 29)), "2024-02-29");
        assert_eq!(day_of_year(from_civil(2024, 12, 31)), 366.0);
        assert_eq!(day_of_year(from_civil(2023, 3, 1)), 60.0);
        for d in -100_000..100_000 {
            let (y, m, dd) = civil(d);
            assert_eq!(from_civil(y, m, dd), d);
        }
    }
}
