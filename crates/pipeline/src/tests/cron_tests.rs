use chrono::{TimeZone, Utc};

use crate::cron::{check, due, latest_at_or_before, next_after};
use crate::spec::Schedule;

fn sched(cron: &str, tz: &str) -> Schedule {
    Schedule { cron: cron.into(), timezone: tz.into() }
}

/// A UTC instant in Unix ms.
fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> i64 {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap().timestamp_millis()
}

#[test]
fn every_fifteen_minutes() {
    let s = sched("*/15 * * * *", "UTC");
    assert_eq!(next_after(&s, utc(2025, 1, 1, 12, 7, 0)), Ok(utc(2025, 1, 1, 12, 15, 0)));
    // strictly after, also within a second
    assert_eq!(next_after(&s, utc(2025, 1, 1, 12, 15, 0)), Ok(utc(2025, 1, 1, 12, 30, 0)));
    assert_eq!(next_after(&s, utc(2025, 1, 1, 12, 15, 0) + 500), Ok(utc(2025, 1, 1, 12, 30, 0)));
    assert_eq!(next_after(&s, utc(2025, 1, 1, 12, 15, 0) - 1), Ok(utc(2025, 1, 1, 12, 15, 0)));
    assert_eq!(next_after(&s, utc(2025, 1, 1, 23, 50, 0)), Ok(utc(2025, 1, 2, 0, 0, 0)));
}

#[test]
fn three_oclock_in_paris_across_both_dst_changes() {
    let s = sched("0 3 * * *", "Europe/Paris");
    // winter: 03:00 CET = 02:00 UTC; spring forward on 2025-03-30 (02:00 -> 03:00)
    assert_eq!(next_after(&s, utc(2025, 3, 28, 12, 0, 0)), Ok(utc(2025, 3, 29, 2, 0, 0)));
    assert_eq!(next_after(&s, utc(2025, 3, 29, 2, 0, 0)), Ok(utc(2025, 3, 30, 1, 0, 0)));
    assert_eq!(next_after(&s, utc(2025, 3, 30, 1, 0, 0)), Ok(utc(2025, 3, 31, 1, 0, 0)));
    // fall back on 2025-10-26 (03:00 -> 02:00): 03:00 CET = 02:00 UTC that day
    assert_eq!(next_after(&s, utc(2025, 10, 25, 0, 0, 0)), Ok(utc(2025, 10, 25, 1, 0, 0)));
    assert_eq!(next_after(&s, utc(2025, 10, 25, 1, 0, 0)), Ok(utc(2025, 10, 26, 2, 0, 0)));
    // catch-up across the spring change lists each day once
    let days = due(&s, utc(2025, 3, 28, 12, 0, 0), utc(2025, 3, 31, 12, 0, 0), true, 10).unwrap();
    assert_eq!(days, [utc(2025, 3, 29, 2, 0, 0), utc(2025, 3, 30, 1, 0, 0), utc(2025, 3, 31, 1, 0, 0)]);
}

#[test]
fn a_time_that_does_not_exist_fires_after_the_gap() {
    // 02:30 does not exist in Paris on 2025-03-30: it fires at 03:00 CEST (01:00 UTC)
    let s = sched("30 2 * * *", "Europe/Paris");
    assert_eq!(next_after(&s, utc(2025, 3, 29, 12, 0, 0)), Ok(utc(2025, 3, 30, 1, 0, 0)));
    assert_eq!(next_after(&s, utc(2025, 3, 30, 1, 0, 0)), Ok(utc(2025, 3, 31, 0, 30, 0)));
}

#[test]
fn daily_and_weekdays() {
    let s = sched("@daily", "UTC");
    assert_eq!(next_after(&s, utc(2025, 1, 1, 10, 0, 0)), Ok(utc(2025, 1, 2, 0, 0, 0)));
    let s = sched("@daily", "America/New_York");
    assert_eq!(next_after(&s, utc(2025, 1, 1, 10, 0, 0)), Ok(utc(2025, 1, 2, 5, 0, 0)));
    // 2025-01-03 is a Friday: the next weekday 09:00 is Monday the 6th
    let s = sched("0 9 * * MON-FRI", "UTC");
    assert_eq!(next_after(&s, utc(2025, 1, 3, 10, 0, 0)), Ok(utc(2025, 1, 6, 9, 0, 0)));
}

#[test]
fn without_catch_up_only_the_latest_instant_is_due() {
    let s = sched("*/15 * * * *", "UTC");
    let last = utc(2025, 1, 1, 12, 0, 0);
    let now = utc(2025, 1, 1, 13, 5, 0);
    assert_eq!(due(&s, last, now, false, 100), Ok(vec![utc(2025, 1, 1, 13, 0, 0)]));
    assert_eq!(
        due(&s, last, now, true, 100),
        Ok(vec![
            utc(2025, 1, 1, 12, 15, 0),
            utc(2025, 1, 1, 12, 30, 0),
            utc(2025, 1, 1, 12, 45, 0),
            utc(2025, 1, 1, 13, 0, 0)
        ])
    );
    // at most `limit`, the earliest first; the next call goes on from the last one
    let first = due(&s, last, now, true, 2).unwrap();
    assert_eq!(first, [utc(2025, 1, 1, 12, 15, 0), utc(2025, 1, 1, 12, 30, 0)]);
    assert_eq!(due(&s, first[1], now, true, 2).unwrap(), [utc(2025, 1, 1, 12, 45, 0), utc(2025, 1, 1, 13, 0, 0)]);
    // nothing due: before the first instant, or already handled
    assert_eq!(due(&s, last, utc(2025, 1, 1, 12, 14, 59), false, 10), Ok(vec![]));
    assert_eq!(due(&s, utc(2025, 1, 1, 13, 0, 0), now, false, 10), Ok(vec![]));
    assert_eq!(due(&s, utc(2025, 1, 1, 13, 0, 0), now, true, 10), Ok(vec![]));
    // an instant exactly at now is due; one exactly at last is not
    assert_eq!(due(&s, last, utc(2025, 1, 1, 12, 15, 0), true, 10), Ok(vec![utc(2025, 1, 1, 12, 15, 0)]));
    assert_eq!(latest_at_or_before(&s, now), Ok(Some(utc(2025, 1, 1, 13, 0, 0))));
}

#[test]
fn a_long_downtime_without_catch_up_is_one_instant() {
    let s = sched("* * * * *", "UTC");
    let d = due(&s, utc(2024, 1, 1, 0, 0, 0), utc(2025, 1, 1, 0, 0, 30), false, 10).unwrap();
    assert_eq!(d, [utc(2025, 1, 1, 0, 0, 0)]);
}

#[test]
fn bad_schedules_are_rejected() {
    assert!(check(&sched("0 3 * * *", "Europe/Paris")).is_ok());
    assert!(check(&sched("0 3 L * *", "UTC")).is_ok());
    assert!(check(&sched("0 3 * * 5#L", "UTC")).is_ok());
    for bad in ["61 * * * *", "* * *", "every day", "", "0 25 * * *"] {
        let e = check(&sched(bad, "UTC")).unwrap_err();
        assert!(e.starts_with(&format!("bad cron expression '{bad}'")), "{e}");
    }
    let e = check(&sched("0 3 * * *", "Europe/Pariss")).unwrap_err();
    assert!(e.starts_with("unknown time zone 'Europe/Pariss'"), "{e}");
    assert!(next_after(&sched("nope", "UTC"), 0).is_err());
}
