//! Fire times with fixed instants in four zones: spring-forward gaps, repeated hours,
//! 5- and 6-field schedules; missed-tick plans; the schedule listing.

use super::*;
use crate::runbook::{LoadContext, parse_schedule};
use chrono_tz::America::{New_York, Sao_Paulo};
use chrono_tz::Australia::Sydney;
use chrono_tz::Europe::Berlin;
use std::collections::BTreeSet;
use std::path::Path;

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("{s}: {e}"))
        .with_timezone(&Utc)
}

/// Ticks of `schedule` in `tz` in `(from, until]`, as RFC 3339 in the zone.
fn ticks(schedule: &str, tz: Tz, from: &str, until: &str) -> Vec<String> {
    let cron = parse_schedule(schedule).unwrap();
    Schedule::new(&cron, tz)
        .ticks(utc(from), utc(until))
        .map(|t| rfc3339_in(t, tz))
        .collect()
}

/// Every `step` minutes in UTC from `from` (inclusive) to `until` (inclusive).
fn every(step: i64, from: &str, until: &str) -> Vec<DateTime<Utc>> {
    let (mut t, until) = (utc(from), utc(until));
    let mut out = Vec::new();
    while t <= until {
        out.push(t);
        t += chrono::Duration::minutes(step);
    }
    out
}

fn instants(schedule: &str, tz: Tz, from: &str, until: &str) -> Vec<DateTime<Utc>> {
    let cron = parse_schedule(schedule).unwrap();
    Schedule::new(&cron, tz)
        .ticks(utc(from), utc(until))
        .collect()
}

#[test]
fn schedules_with_a_star_or_step_in_time_fields_are_interval_schedules() {
    for (s, k) in [
        ("30 2 * * *", Kind::WallClock),
        ("0 9-17 * * MON-FRI", Kind::WallClock),
        ("0,30 2 * * *", Kind::WallClock),
        ("15 30 2 * * *", Kind::WallClock),
        ("@daily", Kind::WallClock),
        ("*/15 * * * *", Kind::Interval),
        ("0 * * * *", Kind::Interval),
        ("0 */2 * * *", Kind::Interval),
        ("0-59/10 3 * * *", Kind::Interval),
        ("*/10 0 3 * * *", Kind::Interval),
        ("@hourly", Kind::Interval),
    ] {
        assert_eq!(kind(&parse_schedule(s).unwrap()), k, "{s}");
    }
}

// --- America/New_York: 2025-03-09 02:00 EST → 03:00 EDT; 2025-11-02 02:00 EDT → 01:00 EST.

#[test]
fn new_york_a_wall_clock_tick_in_the_gap_fires_once_right_after_it() {
    assert_eq!(
        ticks(
            "30 2 * * *",
            New_York,
            "2025-03-08T00:00:00Z",
            "2025-03-11T00:00:00Z"
        ),
        [
            "2025-03-08T02:30:00-05:00",
            "2025-03-09T03:00:00-04:00",
            "2025-03-10T02:30:00-04:00"
        ]
    );
}

#[test]
fn new_york_two_wall_clock_ticks_in_one_gap_fire_once() {
    assert_eq!(
        ticks(
            "0,30 2 * * *",
            New_York,
            "2025-03-09T00:00:00Z",
            "2025-03-10T12:00:00Z"
        ),
        [
            "2025-03-09T03:00:00-04:00",
            "2025-03-10T02:00:00-04:00",
            "2025-03-10T02:30:00-04:00"
        ]
    );
}

#[test]
fn new_york_a_wall_clock_tick_in_the_repeated_hour_fires_at_the_first_occurrence_only() {
    assert_eq!(
        ticks(
            "30 1 * * *",
            New_York,
            "2025-11-01T12:00:00Z",
            "2025-11-03T12:00:00Z"
        ),
        ["2025-11-02T01:30:00-04:00", "2025-11-03T01:30:00-05:00"]
    );
}

#[test]
fn new_york_every_15_minutes_follows_elapsed_time_through_the_repeated_hour() {
    let got = instants(
        "*/15 * * * *",
        New_York,
        "2025-11-02T04:50:00Z",
        "2025-11-02T07:10:00Z",
    );
    // 01:00 EDT … 01:45 EDT, then 01:00 EST … 01:45 EST, then 02:00 EST: every 15 real minutes.
    assert_eq!(
        got,
        every(15, "2025-11-02T05:00:00Z", "2025-11-02T07:00:00Z")
    );
    let local: Vec<String> = got.iter().map(|t| rfc3339_in(*t, New_York)).collect();
    assert_eq!(local[3], "2025-11-02T01:45:00-04:00");
    assert_eq!(local[4], "2025-11-02T01:00:00-05:00");
}

#[test]
fn new_york_every_15_minutes_skips_the_times_that_do_not_exist() {
    assert_eq!(
        ticks(
            "*/15 * * * *",
            New_York,
            "2025-03-09T06:40:00Z",
            "2025-03-09T07:20:00Z"
        ),
        [
            "2025-03-09T01:45:00-05:00",
            "2025-03-09T03:00:00-04:00",
            "2025-03-09T03:15:00-04:00"
        ]
    );
}

#[test]
fn new_york_next_tick_from_inside_the_first_pass_is_in_the_second_pass() {
    let cron = parse_schedule("*/15 * * * *").unwrap();
    let s = Schedule::new(&cron, New_York);
    // 01:45 EDT → 01:00 EST (not 02:00 EST, an hour later).
    assert_eq!(
        s.next_after(utc("2025-11-02T05:45:00Z")),
        Some(utc("2025-11-02T06:00:00Z"))
    );
    // From inside the second pass, on through it.
    assert_eq!(
        s.next_after(utc("2025-11-02T06:45:10Z")),
        Some(utc("2025-11-02T07:00:00Z"))
    );
    let wall = parse_schedule("0,30 1 * * *").unwrap();
    // A wall-clock schedule does not fire again in the second pass.
    assert_eq!(
        Schedule::new(&wall, New_York).next_after(utc("2025-11-02T05:30:00Z")),
        Some(utc("2025-11-03T06:00:00Z"))
    );
}

// --- Europe/Berlin: 2025-03-30 02:00 CET → 03:00 CEST; 2025-10-26 03:00 CEST → 02:00 CET.

#[test]
fn berlin_six_field_wall_clock_tick_in_the_gap_fires_at_the_first_instant_after_it() {
    assert_eq!(
        ticks(
            "15 30 2 * * *",
            Berlin,
            "2025-03-29T12:00:00Z",
            "2025-03-31T12:00:00Z"
        ),
        ["2025-03-30T03:00:00+02:00", "2025-03-31T02:30:15+02:00"]
    );
}

#[test]
fn berlin_wall_clock_tick_in_the_repeated_hour_fires_once() {
    assert_eq!(
        ticks(
            "0 2 * * *",
            Berlin,
            "2025-10-25T12:00:00Z",
            "2025-10-27T12:00:00Z"
        ),
        ["2025-10-26T02:00:00+02:00", "2025-10-27T02:00:00+01:00"]
    );
}

#[test]
fn berlin_seconds_schedule_fires_on_elapsed_time_through_the_repeated_hour() {
    let got = instants(
        "0 */20 * * * *",
        Berlin,
        "2025-10-25T23:30:00Z",
        "2025-10-26T02:30:00Z",
    );
    assert_eq!(
        got,
        every(20, "2025-10-25T23:40:00Z", "2025-10-26T02:20:00Z")
    );
    let local: Vec<String> = got.iter().map(|t| rfc3339_in(*t, Berlin)).collect();
    assert!(local.contains(&"2025-10-26T02:20:00+02:00".to_string()));
    assert!(local.contains(&"2025-10-26T02:20:00+01:00".to_string()));
}

#[test]
fn berlin_every_ten_seconds_jumps_the_gap() {
    assert_eq!(
        ticks(
            "*/10 * * * * *",
            Berlin,
            "2025-03-30T00:59:40Z",
            "2025-03-30T01:00:10Z"
        ),
        [
            "2025-03-30T01:59:50+01:00",
            "2025-03-30T03:00:00+02:00",
            "2025-03-30T03:00:10+02:00"
        ]
    );
}

// --- Australia/Sydney (southern hemisphere): 2025-04-06 03:00 AEDT → 02:00 AEST;
// 2025-10-05 02:00 AEST → 03:00 AEDT.

#[test]
fn sydney_april_repeated_hour_wall_clock_once_and_hourly_twice() {
    assert_eq!(
        ticks(
            "30 2 * * *",
            Sydney,
            "2025-04-05T00:00:00Z",
            "2025-04-07T00:00:00Z"
        ),
        ["2025-04-06T02:30:00+11:00", "2025-04-07T02:30:00+10:00"]
    );
    assert_eq!(
        ticks(
            "0 * * * *",
            Sydney,
            "2025-04-05T14:30:00Z",
            "2025-04-05T17:30:00Z"
        ),
        [
            "2025-04-06T02:00:00+11:00",
            "2025-04-06T02:00:00+10:00",
            "2025-04-06T03:00:00+10:00"
        ]
    );
}

#[test]
fn sydney_october_gap_moves_a_wall_clock_tick_to_three_oclock() {
    assert_eq!(
        ticks(
            "30 2 * * SUN",
            Sydney,
            "2025-09-27T00:00:00Z",
            "2025-10-13T00:00:00Z"
        ),
        [
            "2025-09-28T02:30:00+10:00",
            "2025-10-05T03:00:00+11:00",
            "2025-10-12T02:30:00+11:00"
        ]
    );
}

// --- America/Sao_Paulo: last DST from 2018-11-04 (midnight does not exist) to 2019-02-17
// (23:00–24:00 on the 16th repeated); no DST since 2019.

#[test]
fn sao_paulo_midnight_that_does_not_exist_fires_at_one() {
    assert_eq!(
        ticks(
            "0 0 * * *",
            Sao_Paulo,
            "2018-11-02T12:00:00Z",
            "2018-11-05T12:00:00Z"
        ),
        [
            "2018-11-03T00:00:00-03:00",
            "2018-11-04T01:00:00-02:00",
            "2018-11-05T00:00:00-02:00"
        ]
    );
}

#[test]
fn sao_paulo_repeated_hour_of_2019_fires_once() {
    assert_eq!(
        ticks(
            "30 23 * * *",
            Sao_Paulo,
            "2019-02-15T12:00:00Z",
            "2019-02-18T12:00:00Z"
        ),
        [
            "2019-02-15T23:30:00-02:00",
            "2019-02-16T23:30:00-02:00",
            "2019-02-17T23:30:00-03:00"
        ]
    );
}

#[test]
fn sao_paulo_has_no_daylight_saving_since_2019() {
    // The first Sunday of November was a spring-forward day until 2018.
    let got = instants(
        "*/30 * * * *",
        Sao_Paulo,
        "2025-10-31T00:00:00Z",
        "2025-11-10T00:00:00Z",
    );
    assert_eq!(
        got,
        every(30, "2025-10-31T00:30:00Z", "2025-11-10T00:00:00Z")
    );
    assert!(
        got.iter()
            .all(|t| rfc3339_in(*t, Sao_Paulo).ends_with("-03:00"))
    );
    assert_eq!(
        ticks(
            "0 0 * * *",
            Sao_Paulo,
            "2025-11-01T12:00:00Z",
            "2025-11-03T12:00:00Z"
        ),
        ["2025-11-02T00:00:00-03:00", "2025-11-03T00:00:00-03:00"]
    );
}

#[test]
fn five_field_weekdays_are_posix_sunday_zero_or_seven() {
    // 2025-06-01 is a Sunday.
    for s in ["0 9 * * 0", "0 9 * * 7", "0 9 * * SUN"] {
        assert_eq!(
            ticks(
                s,
                chrono_tz::UTC,
                "2025-05-31T00:00:00Z",
                "2025-06-08T00:00:00Z"
            ),
            ["2025-06-01T09:00:00Z"],
            "{s}"
        );
    }
}

#[test]
fn a_schedule_that_never_matches_has_no_next_tick() {
    let cron = parse_schedule("0 0 30 2 *").unwrap();
    assert_eq!(
        Schedule::new(&cron, Berlin).next_after(utc("2025-01-01T00:00:00Z")),
        None
    );
}

// --- Missed ticks after downtime.

fn trigger(schedule: &str, missed: Missed) -> CronTrigger {
    CronTrigger {
        schedule: schedule.into(),
        cron: parse_schedule(schedule).unwrap(),
        timezone: chrono_tz::UTC,
        missed,
        overlap: Overlap::Skip,
        parameters: Default::default(),
    }
}

const LATE: Duration = Duration::from_secs(30);

#[test]
fn on_time_ticks_are_admitted() {
    let t = trigger("* * * * *", Missed::Skip);
    let plan = plan(
        &t,
        utc("2025-01-01T10:00:00Z"),
        utc("2025-01-01T10:01:05Z"),
        LATE,
    );
    assert_eq!(
        plan,
        [PlannedTick {
            at: utc("2025-01-01T10:01:00Z"),
            missed: None
        }]
    );
}

#[test]
fn missed_skip_records_each_missed_tick_with_the_downtime() {
    let t = trigger("* * * * *", Missed::Skip);
    let plan = plan(
        &t,
        utc("2025-01-01T10:00:00Z"),
        utc("2025-01-01T10:05:10Z"),
        LATE,
    );
    let at: Vec<_> = plan
        .iter()
        .map(|p| rfc3339_in(p.at, chrono_tz::UTC))
        .collect();
    assert_eq!(
        at,
        [
            "2025-01-01T10:01:00Z",
            "2025-01-01T10:02:00Z",
            "2025-01-01T10:03:00Z",
            "2025-01-01T10:04:00Z",
            "2025-01-01T10:05:00Z"
        ]
    );
    // 10:05:00 is 10 s old: on time. The rest were missed.
    assert!(plan[..4].iter().all(|p| p.missed.is_some()));
    assert_eq!(plan[4].missed, None);
    assert_eq!(
        plan[0].missed.as_deref(),
        Some(
            "missed tick 2025-01-01T10:01:00Z: no scheduler ran it between the last recorded \
             tick (2025-01-01T10:00:00Z) and 2025-01-01T10:05:10Z (5m 10s later); \
             missed = \"skip\""
        )
    );
}

#[test]
fn a_long_downtime_records_a_hundred_ticks_and_one_summary() {
    let t = trigger("* * * * *", Missed::Skip);
    // A day: 1,440 missed minutes.
    let plan = plan(
        &t,
        utc("2025-01-01T00:00:00Z"),
        utc("2025-01-02T00:00:40Z"),
        LATE,
    );
    assert_eq!(plan.len(), MISSED_RECORDED + 1);
    assert_eq!(plan[99].at, utc("2025-01-01T01:40:00Z"));
    let summary = &plan[100];
    assert_eq!(summary.at, utc("2025-01-02T00:00:00Z"));
    let reason = summary.missed.as_deref().unwrap();
    assert!(
        reason.starts_with(
            "missed 1340 ticks from 2025-01-01T01:41:00Z to 2025-01-02T00:00:00Z (this record \
             stands for all of them; the 100 before have one record each)"
        ),
        "{reason}"
    );
}

#[test]
fn run_once_runs_the_latest_missed_tick_and_records_the_rest() {
    let t = trigger(
        "*/10 * * * *",
        Missed::RunOnce {
            window: Duration::from_secs(3600),
        },
    );
    let plan = plan(
        &t,
        utc("2025-01-01T10:00:00Z"),
        utc("2025-01-01T10:45:00Z"),
        LATE,
    );
    let runs: Vec<_> = plan.iter().filter(|p| p.missed.is_none()).collect();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].at, utc("2025-01-01T10:40:00Z"));
    let skipped: Vec<_> = plan
        .iter()
        .filter(|p| p.missed.is_some())
        .map(|p| p.at)
        .collect();
    assert_eq!(
        skipped,
        every(10, "2025-01-01T10:10:00Z", "2025-01-01T10:30:00Z")
    );
    assert!(
        plan[0]
            .missed
            .as_deref()
            .unwrap()
            .contains("runs only the latest missed tick (2025-01-01T10:40:00Z)")
    );
}

#[test]
fn run_once_outside_the_window_runs_nothing() {
    let t = trigger(
        "0 * * * *",
        Missed::RunOnce {
            window: Duration::from_secs(600),
        },
    );
    let plan = plan(
        &t,
        utc("2025-01-01T10:00:00Z"),
        utc("2025-01-01T13:30:00Z"),
        LATE,
    );
    assert_eq!(plan.len(), 3);
    assert!(plan.iter().all(|p| {
        p.missed
            .as_deref()
            .is_some_and(|r| r.contains("older than the window of 10m"))
    }));
}

#[test]
fn nothing_is_due_before_the_next_tick_or_when_the_clock_went_back() {
    let t = trigger("*/5 * * * *", Missed::Skip);
    assert!(
        plan(
            &t,
            utc("2025-01-01T10:00:00Z"),
            utc("2025-01-01T10:04:59Z"),
            LATE
        )
        .is_empty()
    );
    assert!(
        plan(
            &t,
            utc("2025-01-01T10:00:00Z"),
            utc("2025-01-01T09:00:00Z"),
            LATE
        )
        .is_empty()
    );
}

// --- The listing.

#[test]
fn runbook_schedules_lists_each_cron_trigger_with_its_next_fire_times() {
    let root = std::env::temp_dir().join(format!(
        "runloom-cron-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let dir = root.join("nightly");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("runbook.toml"),
        r#"
version = 1
description = "Nightly."
[[trigger]]
kind = "manual"
[[trigger]]
kind = "cron"
schedule = "30 2 * * *"
timezone = "Europe/Berlin"
missed = "run-once"
missed_window = "2h"
overlap = "queue-one"
[[trigger]]
kind = "cron"
schedule = "*/30 * * * * *"
"#,
    )
    .unwrap();
    std::fs::write(dir.join("main.rhai"), "1").unwrap();
    let config =
        crate::config::Config::parse("version = 1", Path::new("/tmp/runloom.toml")).unwrap();
    let plugins = BTreeSet::new();
    let rb = crate::runbook::load(
        &dir,
        &LoadContext {
            config: &config,
            plugins: &plugins,
        },
    )
    .unwrap();
    std::fs::remove_dir_all(&root).unwrap();
    let list = runbook_schedules(&rb, utc("2025-03-29T12:00:00Z"), 3);
    assert_eq!(
        list[0],
        ScheduleInfo {
            runbook: "nightly".into(),
            trigger: "cron:1".into(),
            schedule: "30 2 * * *".into(),
            timezone: "Europe/Berlin".into(),
            kind: Kind::WallClock,
            missed: "run-once".into(),
            missed_window: Some("2h".into()),
            overlap: "queue-one".into(),
            next: vec![
                "2025-03-30T03:00:00+02:00".into(),
                "2025-03-31T02:30:00+02:00".into(),
                "2025-04-01T02:30:00+02:00".into(),
            ],
        }
    );
    assert_eq!(list[1].trigger, "cron:2");
    assert_eq!(list[1].timezone, "UTC");
    assert_eq!(list[1].missed, "skip");
    assert_eq!(list[1].overlap, "skip");
    assert_eq!(
        list[1].next,
        [
            "2025-03-29T12:00:30Z",
            "2025-03-29T12:01:00Z",
            "2025-03-29T12:01:30Z"
        ]
    );
    let json = serde_json::to_value(&list[1]).unwrap();
    assert_eq!(json["kind"], "interval");
    assert!(json.get("missed_window").is_none());
    assert_eq!(list.len(), 2);
}
