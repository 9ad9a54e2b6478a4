//! Which archives a retention policy keeps. Pure: timestamps in, reasons out.
//!
//! The rules are those of restic and borg, which operators already know: `keep_last` keeps
//! the N newest archives; `keep_daily` keeps the newest archive of each of the D most recent
//! days that have archives; `keep_weekly` the same per ISO week. Days and weeks without
//! archives do not count, so a backup job that stopped for a fortnight does not age its last
//! good archives out. Days and weeks are UTC, like the timestamps in archive names.
//!
//! Invariant: an archive is deleted only if no rule keeps it.

use chrono::{DateTime, Datelike, NaiveDate, Utc};

/// How many archives to keep, by rule. The rules add up: an archive is kept if any rule
/// keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Policy {
    /// The N newest archives.
    pub keep_last: u32,
    /// The newest archive of each of the D most recent days that have archives.
    pub keep_daily: u32,
    /// The newest archive of each of the W most recent ISO weeks that have archives.
    pub keep_weekly: u32,
}

impl Policy {
    /// True when the policy keeps nothing, which would delete every archive.
    pub fn keeps_nothing(&self) -> bool {
        self.keep_last == 0 && self.keep_daily == 0 && self.keep_weekly == 0
    }
}

/// Why each archive is kept, in the order of `timestamps`: an empty list means delete.
///
/// Reasons read `last`, `daily 2025-01-31`, `weekly 2025-W05`. Ties (equal timestamps) are
/// broken by position, earlier first, so the result never depends on sort stability.
pub fn select(timestamps: &[DateTime<Utc>], policy: &Policy) -> Vec<Vec<String>> {
    let mut newest_first: Vec<usize> = (0..timestamps.len()).collect();
    newest_first.sort_by(|&a, &b| timestamps[b].cmp(&timestamps[a]).then(a.cmp(&b)));

    let mut reasons = vec![Vec::new(); timestamps.len()];
    for &i in newest_first.iter().take(to_usize(policy.keep_last)) {
        reasons[i].push("last".to_string());
    }
    keep_newest_per_bucket(
        timestamps,
        &newest_first,
        policy.keep_daily,
        |t| t.date_naive(),
        |day: &NaiveDate| format!("daily {day}"),
        &mut reasons,
    );
    keep_newest_per_bucket(
        timestamps,
        &newest_first,
        policy.keep_weekly,
        |t| {
            let week = t.iso_week();
            (week.year(), week.week())
        },
        |(year, week): &(i32, u32)| format!("weekly {year}-W{week:02}"),
        &mut reasons,
    );
    reasons
}

/// Walk newest first and keep the first archive of each new bucket until `count` buckets
/// are kept. Buckets are monotonic in time, so "new" means "differs from the last one kept".
fn keep_newest_per_bucket<B: PartialEq>(
    timestamps: &[DateTime<Utc>],
    newest_first: &[usize],
    count: u32,
    bucket: impl Fn(&DateTime<Utc>) -> B,
    label: impl Fn(&B) -> String,
    reasons: &mut [Vec<String>],
) {
    let mut remaining = count;
    let mut last: Option<B> = None;
    for &i in newest_first {
        if remaining == 0 {
            break;
        }
        let b = bucket(&timestamps[i]);
        if last.as_ref() != Some(&b) {
            reasons[i].push(label(&b));
            remaining -= 1;
            last = Some(b);
        }
    }
}

fn to_usize(n: u32) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn policy(keep_last: u32, keep_daily: u32, keep_weekly: u32) -> Policy {
        Policy {
            keep_last,
            keep_daily,
            keep_weekly,
        }
    }

    /// The timestamps kept, as written in the test, in input order.
    fn kept<'a>(stamps: &[&'a str], p: Policy) -> Vec<&'a str> {
        let times: Vec<_> = stamps.iter().map(|s| t(s)).collect();
        select(&times, &p)
            .iter()
            .zip(stamps)
            .filter(|(r, _)| !r.is_empty())
            .map(|(_, s)| *s)
            .collect()
    }

    #[test]
    fn keep_last_keeps_the_n_newest_whatever_the_input_order() {
        let stamps = [
            "2025-01-03T00:00:00Z",
            "2025-01-05T00:00:00Z",
            "2025-01-01T00:00:00Z",
            "2025-01-04T00:00:00Z",
            "2025-01-02T00:00:00Z",
        ];
        assert_eq!(
            kept(&stamps, policy(2, 0, 0)),
            ["2025-01-05T00:00:00Z", "2025-01-04T00:00:00Z"]
        );
    }

    #[test]
    fn daily_keeps_the_newest_archive_of_each_day() {
        let stamps = [
            "2025-01-02T23:00:00Z",
            "2025-01-02T01:00:00Z",
            "2025-01-01T12:00:00Z",
            "2025-01-01T06:00:00Z",
            "2024-12-31T00:00:00Z",
        ];
        assert_eq!(
            kept(&stamps, policy(0, 2, 0)),
            ["2025-01-02T23:00:00Z", "2025-01-01T12:00:00Z"]
        );
    }

    #[test]
    fn days_without_archives_do_not_count() {
        // A week-long gap: daily=3 still keeps three archives, reaching back past the gap.
        let stamps = [
            "2025-01-20T02:00:00Z",
            "2025-01-10T02:00:00Z",
            "2025-01-09T02:00:00Z",
            "2025-01-08T02:00:00Z",
        ];
        assert_eq!(kept(&stamps, policy(0, 3, 0)), &stamps[..3]);
    }

    #[test]
    fn days_are_utc_days() {
        // 23:59:59 and 00:00:00 the next second are different days.
        let stamps = ["2025-03-02T00:00:00Z", "2025-03-01T23:59:59Z"];
        assert_eq!(kept(&stamps, policy(0, 2, 0)), stamps);
        let stamps = ["2025-03-01T23:59:59Z", "2025-03-01T00:00:00Z"];
        assert_eq!(kept(&stamps, policy(0, 2, 0)), ["2025-03-01T23:59:59Z"]);
    }

    #[test]
    fn weekly_uses_iso_weeks_across_the_year_boundary() {
        // Monday 2024-12-30 is in 2025-W01; Sunday 2024-12-29 in 2024-W52.
        let times = [
            t("2025-01-05T10:00:00Z"), // Sunday, 2025-W01
            t("2024-12-30T10:00:00Z"), // Monday, 2025-W01
            t("2024-12-29T10:00:00Z"), // Sunday, 2024-W52
            t("2024-12-23T10:00:00Z"), // Monday, 2024-W52
            t("2024-12-22T10:00:00Z"), // Sunday, 2024-W51
        ];
        let reasons = select(&times, &policy(0, 0, 2));
        assert_eq!(reasons[0], ["weekly 2025-W01"]);
        assert!(reasons[1].is_empty());
        assert_eq!(reasons[2], ["weekly 2024-W52"]);
        assert!(reasons[3].is_empty() && reasons[4].is_empty());
    }

    #[test]
    fn rules_add_up_and_every_reason_is_listed() {
        let times = [
            t("2025-01-08T02:00:00Z"), // Wednesday, W02
            t("2025-01-07T02:00:00Z"),
            t("2025-01-06T02:00:00Z"), // Monday, W02
            t("2025-01-05T02:00:00Z"), // Sunday, W01
            t("2025-01-04T02:00:00Z"),
        ];
        let reasons = select(&times, &policy(1, 2, 2));
        assert_eq!(
            reasons,
            [
                vec!["last", "daily 2025-01-08", "weekly 2025-W02"],
                vec!["daily 2025-01-07"],
                vec![],
                vec!["weekly 2025-W01"],
                vec![],
            ]
        );
    }

    #[test]
    fn a_policy_larger_than_the_history_keeps_everything() {
        let stamps = ["2025-01-02T00:00:00Z", "2025-01-01T00:00:00Z"];
        assert_eq!(kept(&stamps, policy(10, 10, 10)), stamps);
        assert!(select(&[], &policy(1, 1, 1)).is_empty());
    }

    #[test]
    fn an_empty_policy_keeps_nothing_and_says_so() {
        let p = policy(0, 0, 0);
        assert!(p.keeps_nothing());
        assert!(!policy(0, 0, 1).keeps_nothing());
        let stamps = ["2025-01-02T00:00:00Z"];
        assert!(kept(&stamps, p).is_empty());
    }

    #[test]
    fn equal_timestamps_are_broken_by_position() {
        let times = [t("2025-01-01T00:00:00Z"), t("2025-01-01T00:00:00Z")];
        let reasons = select(&times, &policy(1, 1, 0));
        assert_eq!(reasons[0], ["last", "daily 2025-01-01"]);
        assert!(reasons[1].is_empty());
    }

    #[test]
    fn hourly_backups_over_five_weeks_thin_out_as_expected() {
        // Hourly from Monday 2025-01-06 00:00 to Sunday 2025-02-09 23:00: 35 days, 5 ISO weeks.
        let start = Utc.with_ymd_and_hms(2025, 1, 6, 0, 0, 0).unwrap();
        let times: Vec<_> = (0..35 * 24).map(|h| start + Duration::hours(h)).collect();
        let reasons = select(&times, &policy(3, 7, 4));
        let kept: Vec<_> = times
            .iter()
            .zip(&reasons)
            .filter(|(_, r)| !r.is_empty())
            .map(|(t, _)| t.format("%m-%d %H").to_string())
            .collect();
        // The last 3 hours; 23:00 on each of the last 7 days; 23:00 on the Sundays that end
        // the last 4 ISO weeks (the newest of them is also the newest daily).
        assert_eq!(
            kept,
            [
                "01-19 23", "01-26 23", "02-02 23", "02-03 23", "02-04 23", "02-05 23", "02-06 23",
                "02-07 23", "02-08 23", "02-09 21", "02-09 22", "02-09 23",
            ]
        );
        let last = reasons.last().unwrap();
        assert_eq!(last, &["last", "daily 2025-02-09", "weekly 2025-W06"]);
    }
}
