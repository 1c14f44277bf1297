//! PostgreSQL dates from the twin's day numbers (days since 2000-01-01), range-checked.

use pgrx::datum::Date;
use pgrx::prelude::*;

use crate::error::raise;

/// Whether a day number is a finite date PostgreSQL can hold: 4713-11-24 BC up to
/// 5874897-12-31 (IS_VALID_DATE in PostgreSQL's datetime.h).
pub(super) fn valid_day(days: i64) -> bool {
    (-2_451_545..2_147_483_494 - 2_451_545).contains(&days)
}

/// A date from its day number (or an infinite date). A day outside the date type's range (a
/// week end or forecast target computed from a date near its limits) raises 22008 instead of
/// storing a value that PostgreSQL could neither print nor read back.
pub(super) fn date(days: i32) -> Date {
    // i32::MIN and i32::MAX are the dates -infinity and infinity.
    if !valid_day(days as i64) && days != i32::MIN && days != i32::MAX {
        raise(
            PgSqlErrorCode::ERRCODE_DATETIME_FIELD_OVERFLOW,
            format!("date out of range: day {days} from 2000-01-01"),
            None,
            "week ends and forecast targets must fall between 4713 BC and 5874897 AD: \
             the table's times or the arguments are too close to the limits of type date",
        );
    }
    // SAFETY: the day is inside the date type's range, or one of its infinities (checked above).
    unsafe { Date::from_pg_epoch_days(days) }
}
