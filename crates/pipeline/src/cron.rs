//! Cron schedules with time zones (croner), and which instants are due.

use crate::spec::Schedule;

/// Checks a schedule: the cron expression parses and the time zone exists.
pub fn check(s: &Schedule) -> Result<(), String> {
    todo!("{s:?}")
}

/// The first instant strictly after `after` (Unix ms) at which the schedule
/// fires, in its time zone (DST handled by croner).
pub fn next_after(s: &Schedule, after: i64) -> Result<i64, String> {
    todo!("{s:?}{after}")
}

/// The instants to run now, given the last instant that was handled (or
/// the pipeline's creation time) and `now`: without catch-up only the
/// latest due instant (if any), with catch-up all of them (at most `limit`).
pub fn due(s: &Schedule, last: i64, now: i64, catchup: bool, limit: usize) -> Result<Vec<i64>, String> {
    todo!("{s:?}{last}{now}{catchup}{limit}")
}
