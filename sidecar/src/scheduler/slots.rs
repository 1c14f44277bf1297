//! Due slots and retries, without a database: which cron occurrence a twin should run now,
//! whether a recorded slot gets another attempt, and how long to wait before it.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error("schedule.cron \"{cron}\": {message}")]
    Cron { cron: String, message: String },
    #[error("schedule.timezone \"{0}\" is not an IANA time zone name")]
    TimeZone(String),
}

/// A twin's schedule: a 5-field cron expression evaluated in a time zone (so "0 6 * * 1" is
/// 06:00 local time on Mondays across daylight-saving changes).
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
    tz: Tz,
}

impl Schedule {
    pub fn parse(cron: &str, timezone: &str) -> Result<Schedule, ScheduleError> {
        // Five fields, as enkf.create_twin validates: no seconds or year field.
        let parsed = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(cron)
            .map_err(|e| ScheduleError::Cron {
                cron: cron.to_string(),
                message: e.to_string(),
            })?;
        let tz = Tz::from_str(timezone).map_err(|_| ScheduleError::TimeZone(timezone.into()))?;
        Ok(Schedule { cron: parsed, tz })
    }

    /// The slot to run at `now`: the latest occurrence at or before `now`, provided it is not
    /// before `not_before` (the twin's creation). After downtime this is the one catch-up
    /// run; earlier missed occurrences are not run.
    pub fn due_slot(&self, now: DateTime<Utc>, not_before: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // croner carries the start time's fraction of a second into the occurrence; a slot
        // must be the same instant in every pass, so search from, and keep, whole seconds.
        let whole = now.with_nanosecond(0)?;
        let slot = self
            .cron
            .find_previous_occurrence(&whole.with_timezone(&self.tz), true)
            .ok()?
            .with_timezone(&Utc)
            .with_nanosecond(0)?;
        (slot >= not_before && slot <= now).then_some(slot)
    }

    /// The first occurrence after `t`.
    #[cfg(test)]
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&t.with_timezone(&self.tz), false)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }
}

/// What is recorded for a slot in enkf.schedule_slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotState {
    /// No attempt committed yet.
    New,
    Succeeded,
    /// Attempts exhausted.
    Failed,
    /// A later slot ran first.
    Superseded,
    /// Failed `attempts` times; may retry once `retry_due`.
    Retrying {
        attempts: u32,
        retry_due: bool,
    },
}

impl SlotState {
    pub fn from_row(status: &str, attempts: i32, retry_due: bool) -> SlotState {
        match status {
            "succeeded" => SlotState::Succeeded,
            "failed" => SlotState::Failed,
            "superseded" => SlotState::Superseded,
            _ => SlotState::Retrying {
                attempts: attempts.max(0) as u32,
                retry_due,
            },
        }
    }
}

/// The number of the attempt to make now, or `None` when the slot is settled or waiting.
pub fn next_attempt(state: SlotState, max_attempts: u32) -> Option<u32> {
    match state {
        SlotState::New => Some(1),
        SlotState::Retrying {
            attempts,
            retry_due: true,
        } if attempts < max_attempts => Some(attempts + 1),
        _ => None,
    }
}

/// Delay after failed attempt number `attempt` (1-based): `base * 2^(attempt-1)` capped at
/// `max`, with "equal jitter" (half fixed, half scaled by `jitter` in [0, 1)), so that
/// sidecars that failed together do not retry in lockstep, yet the delay still grows.
pub fn backoff(attempt: u32, base: Duration, max: Duration, jitter: f64) -> Duration {
    let exp = attempt.saturating_sub(1).min(32);
    let full = base
        .checked_mul(1u32 << exp.min(31))
        .unwrap_or(max)
        .min(max);
    let half = full / 2;
    half + half.mul_f64(jitter.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    #[test]
    fn every_minute_slots() {
        let s = Schedule::parse("* * * * *", "UTC").unwrap();
        let created = utc(2025, 3, 1, 12, 0, 30);
        // Before the first occurrence after creation: nothing due.
        assert_eq!(s.due_slot(utc(2025, 3, 1, 12, 0, 45), created), None);
        assert_eq!(
            s.due_slot(utc(2025, 3, 1, 12, 1, 0), created),
            Some(utc(2025, 3, 1, 12, 1, 0))
        );
        assert_eq!(
            s.due_slot(utc(2025, 3, 1, 12, 1, 59), created),
            Some(utc(2025, 3, 1, 12, 1, 0))
        );
        // Passes at different fractions of a second name the very same slot.
        let a = s.due_slot(
            utc(2025, 3, 1, 12, 1, 7) + chrono::Duration::milliseconds(123),
            created,
        );
        let b = s.due_slot(
            utc(2025, 3, 1, 12, 1, 9) + chrono::Duration::microseconds(987_654),
            created,
        );
        assert_eq!(a, Some(utc(2025, 3, 1, 12, 1, 0)));
        assert_eq!(a, b);
    }

    #[test]
    fn downtime_gives_one_catch_up_slot() {
        // Down from 05:59 to 09:20 on a weekday at 06:00: only the latest slot is due, and
        // it is the same slot however often the pass runs until the next occurrence.
        let s = Schedule::parse("0 6 * * *", "UTC").unwrap();
        let created = utc(2025, 1, 1, 0, 0, 0);
        let a = s.due_slot(utc(2025, 3, 5, 9, 20, 0), created);
        let b = s.due_slot(utc(2025, 3, 5, 23, 59, 59), created);
        assert_eq!(a, Some(utc(2025, 3, 5, 6, 0, 0)));
        assert_eq!(a, b);
        // Down for three days: still one slot, the latest.
        let c = s.due_slot(utc(2025, 3, 8, 7, 0, 0), utc(2025, 3, 5, 7, 0, 0));
        assert_eq!(c, Some(utc(2025, 3, 8, 6, 0, 0)));
    }

    #[test]
    fn time_zone_and_dst() {
        // 06:00 in New York: 11:00 UTC in winter, 10:00 UTC in summer.
        let s = Schedule::parse("0 6 * * *", "America/New_York").unwrap();
        let created = utc(2025, 1, 1, 0, 0, 0);
        assert_eq!(
            s.due_slot(utc(2025, 1, 15, 12, 0, 0), created),
            Some(utc(2025, 1, 15, 11, 0, 0))
        );
        assert_eq!(
            s.due_slot(utc(2025, 7, 15, 12, 0, 0), created),
            Some(utc(2025, 7, 15, 10, 0, 0))
        );
        assert_eq!(
            s.next_after(utc(2025, 7, 15, 10, 0, 0)),
            Some(utc(2025, 7, 16, 10, 0, 0))
        );
    }

    #[test]
    fn rejects_bad_schedules() {
        assert!(matches!(
            Schedule::parse("* * * *", "UTC"),
            Err(ScheduleError::Cron { .. })
        ));
        assert!(matches!(
            Schedule::parse("0 * * * * *", "UTC"),
            Err(ScheduleError::Cron { .. })
        ));
        assert!(matches!(
            Schedule::parse("0 6 * * 1", "Mars/Olympus"),
            Err(ScheduleError::TimeZone(_))
        ));
    }

    #[test]
    fn attempts() {
        assert_eq!(next_attempt(SlotState::New, 3), Some(1));
        let r = |attempts, retry_due| SlotState::Retrying {
            attempts,
            retry_due,
        };
        assert_eq!(next_attempt(r(1, true), 3), Some(2));
        assert_eq!(next_attempt(r(1, false), 3), None);
        assert_eq!(next_attempt(r(3, true), 3), None);
        assert_eq!(next_attempt(SlotState::Succeeded, 3), None);
        assert_eq!(next_attempt(SlotState::Failed, 3), None);
        assert_eq!(next_attempt(SlotState::Superseded, 3), None);
        assert_eq!(SlotState::from_row("retrying", 2, true), r(2, true));
        assert_eq!(
            SlotState::from_row("succeeded", 1, true),
            SlotState::Succeeded
        );
    }

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let base = Duration::from_secs(10);
        let max = Duration::from_secs(100);
        assert_eq!(backoff(1, base, max, 0.0), Duration::from_secs(5));
        assert_eq!(backoff(1, base, max, 1.0), Duration::from_secs(10));
        assert_eq!(backoff(2, base, max, 0.0), Duration::from_secs(10));
        assert_eq!(backoff(3, base, max, 0.5), Duration::from_secs(30));
        assert_eq!(backoff(5, base, max, 1.0), max);
        assert_eq!(backoff(60, base, max, 0.0), max / 2);
        // Jitter spreads retries between half and all of the delay.
        let d = backoff(2, base, max, 0.25);
        assert!(d > Duration::from_secs(10) && d < Duration::from_secs(20));
    }
}
