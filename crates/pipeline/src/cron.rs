//! Cron schedules with time zones (croner), and which instants are due.
//!
//! Instants are Unix milliseconds. A schedule's expression is read in its
//! time zone: `0 3 * * *` in Europe/Paris fires at 03:00 Paris time, which
//! is 01:00 or 02:00 UTC depending on the season. On a spring-forward day
//! a time that does not exist fires at the first instant after the gap
//! (croner's rule).

use std::str::FromStr;

use chrono::{DateTime, TimeZone};
use chrono_tz::Tz;
use croner::Cron;

use crate::spec::Schedule;

fn parse(s: &Schedule) -> Result<(Cron, Tz), String> {
    let tz = Tz::from_str(s.timezone.trim()).map_err(|_| {
        format!("unknown time zone '{}': give an IANA name such as UTC, Europe/Paris or America/New_York", s.timezone)
    })?;
    let cron = Cron::from_str(s.cron.trim()).map_err(|e| {
        format!(
            "bad cron expression '{}': {e} (use 5 fields, minute hour day-of-month month day-of-week, e.g. \"0 3 * * *\", or @daily, @hourly)",
            s.cron
        )
    })?;
    Ok((cron, tz))
}

fn at(tz: Tz, ms: i64) -> Result<DateTime<Tz>, String> {
    tz.timestamp_millis_opt(ms).single().ok_or_else(|| format!("{ms} is not a valid instant"))
}

/// Checks a schedule: the cron expression parses and the time zone exists.
pub fn check(s: &Schedule) -> Result<(), String> {
    parse(s).map(|_| ())
}

/// The first instant strictly after `after` (Unix ms) at which the schedule
/// fires, in its time zone (DST handled by croner).
pub fn next_after(s: &Schedule, after: i64) -> Result<i64, String> {
    let (cron, tz) = parse(s)?;
    next(&cron, tz, after)
}

fn next(cron: &Cron, tz: Tz, after: i64) -> Result<i64, String> {
    let mut from = at(tz, after)?;
    // croner works in whole seconds; step over any instant not after `after`.
    for _ in 0..4 {
        let t = cron.find_next_occurrence(&from, false).map_err(|e| format!("no next instant for '{cron}': {e}"))?;
        let ms = t.timestamp_millis();
        if ms > after {
            return Ok(ms);
        }
        from = t;
    }
    Err(format!("no next instant for '{cron}'"))
}

/// The latest instant at or before `now` at which the schedule fires.
pub fn latest_at_or_before(s: &Schedule, now: i64) -> Result<Option<i64>, String> {
    let (cron, tz) = parse(s)?;
    latest(&cron, tz, now)
}

fn latest(cron: &Cron, tz: Tz, now: i64) -> Result<Option<i64>, String> {
    let mut from = at(tz, now)?;
    for _ in 0..4 {
        match cron.find_previous_occurrence(&from, true) {
            Ok(t) => {
                let ms = t.timestamp_millis();
                if ms <= now {
                    return Ok(Some(ms));
                }
                from = at(tz, ms - 1000)?;
            }
            Err(_) => return Ok(None),
        }
    }
    Ok(None)
}

/// The instants to run now, given the last instant that was handled (or
/// the pipeline's creation time) and `now`: the instants in `(last, now]`,
/// in increasing order. Without catch-up only the latest due instant (if
/// any); with catch-up all of them, at most `limit`: the earliest `limit`
/// ones (the scheduler records the last one it handled and gets the rest
/// on its next call).
pub fn due(s: &Schedule, last: i64, now: i64, catchup: bool, limit: usize) -> Result<Vec<i64>, String> {
    let (cron, tz) = parse(s)?;
    if now <= last || limit == 0 {
        return Ok(Vec::new());
    }
    if !catchup {
        return Ok(match latest(&cron, tz, now)? {
            Some(t) if t > last => vec![t],
            _ => Vec::new(),
        });
    }
    let mut out = Vec::new();
    let mut t = last;
    while out.len() < limit {
        t = next(&cron, tz, t)?;
        if t > now {
            break;
        }
        out.push(t);
    }
    Ok(out)
}
