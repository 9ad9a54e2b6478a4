//! Cron triggers: when a schedule fires, and the scheduler that turns due ticks into runs.
//!
//! A schedule is read in its trigger's IANA time zone and every fire time ("tick") is an
//! instant in UTC. Daylight saving follows Vixie cron, the behaviour operators expect
//! (reference/perf-reliability.md §5.4), made explicit here rather than left to the cron
//! library:
//!
//! - A **wall-clock** schedule has a single fixed second, minute and hour per match (lists
//!   and ranges allowed, no `*` and no `/step` in those fields): `30 2 * * *`,
//!   `0 9-17 * * MON-FRI`. In a spring-forward gap its tick fires once, at the first instant
//!   after the gap (02:30 in a 02:00→03:00 gap fires at 03:00; two ticks in one gap fire
//!   once). In the repeated autumn hour it fires once, at the first occurrence.
//! - An **interval** schedule has `*` or a step in the second, minute or hour field:
//!   `*/15 * * * *`, `0 * * * *`, `*/10 * * * * *`. It follows real elapsed time: ticks
//!   that fall in a gap do not exist and are not fired; in the repeated hour it fires in both
//!   passes, in time order.
//!
//! The scheduler ([`Scheduler::tick`]) fires each due tick once: a tick's run is keyed
//! `runbook#cron:N@<tick ms>`, unique in the store, so when several nodes share a store the
//! first to record a tick wins and the others record nothing. A new trigger starts from the
//! moment the scheduler first sees it (no back-fill); after downtime the trigger's `missed`
//! policy decides, and every tick that does not run is recorded as a `skipped` run with its
//! rule (`missed`, `overlap`, or a safety rule) and reason. The overlap policy is decided in
//! the same store transaction as the insert (see `Store::admit`), so it holds across nodes.
//!
//! Invariant: pure time arithmetic lives in [`Schedule`] and [`plan`]; the scheduler creates
//! runs only through the executor and never runs steps.

use crate::catalog::{Catalog, Prepared};
use crate::executor::{EnqueueError, Executor, RunRequest};
use crate::node::Node;
use crate::run::RunRecord;
use crate::runbook::{CronTrigger, Missed, Overlap, Runbook, Trigger};
use crate::store::Admission;
use chrono::{DateTime, LocalResult, NaiveDateTime, Offset, SecondsFormat, TimeZone, Utc};
use chrono_tz::Tz;
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Ticks recorded one by one after downtime; the rest are summarised in one record.
pub const MISSED_RECORDED: usize = 100;
/// Missed ticks counted exactly; beyond this the summary says "more than".
const MISSED_COUNTED: usize = 100_000;
/// Naive matches examined for one next fire time before giving up (a wall-clock schedule
/// skips at most its matches inside one repeated hour).
const MAX_STEPS: usize = 100_000;

/// How a schedule behaves across daylight-saving changes (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Fixed times of day: once in a gap (right after it), once in a repeated hour (first).
    WallClock,
    /// `*` or a step in seconds, minutes or hours: follows elapsed time.
    Interval,
}

/// The kind of a parsed schedule.
pub fn kind(cron: &croner::Cron) -> Kind {
    let p = &cron.pattern;
    let stepped = [&p.seconds, &p.minutes, &p.hours]
        .iter()
        .any(|c| c.from_wildcard || c.step > 1);
    if stepped {
        Kind::Interval
    } else {
        Kind::WallClock
    }
}

/// A schedule in its time zone: computes fire times as UTC instants.
#[derive(Debug, Clone, Copy)]
pub struct Schedule<'a> {
    cron: &'a croner::Cron,
    tz: Tz,
    kind: Kind,
}

impl<'a> Schedule<'a> {
    /// `cron` read in `tz`.
    pub fn new(cron: &'a croner::Cron, tz: Tz) -> Self {
        Self {
            cron,
            tz,
            kind: kind(cron),
        }
    }

    /// A cron trigger's schedule.
    pub fn of(trigger: &'a CronTrigger) -> Self {
        Self::new(&trigger.cron, trigger.timezone)
    }

    /// Wall-clock or interval.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The first tick strictly after `after`, or `None` if the schedule never fires again.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Ticks are whole seconds: a tick after `after` is a tick after its whole second.
        let after = DateTime::from_timestamp(after.timestamp(), 0)?;
        let local = after.with_timezone(&self.tz).naive_local();
        // In the first pass of a repeated hour, an interval schedule's next tick may be in the
        // second pass (its wall-clock time is earlier than `after`'s).
        let mut second_pass = None;
        if self.kind == Kind::Interval
            && let LocalResult::Ambiguous(first, _) = self.tz.from_local_datetime(&local)
            && first.with_timezone(&Utc) == after
        {
            let fold_start = fold_start(self.tz, &local)?;
            if let Some(m) = self.next_match(fold_start, true)
                && let LocalResult::Ambiguous(_, second) = self.tz.from_local_datetime(&m)
            {
                second_pass = Some(second.with_timezone(&Utc));
            }
        }
        let mut cursor = local;
        let mut forward = None;
        for _ in 0..MAX_STEPS {
            let Some(m) = self.next_match(cursor, false) else {
                break;
            };
            cursor = m;
            let candidate = match self.tz.from_local_datetime(&m) {
                LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
                LocalResult::Ambiguous(first, second) => {
                    let (first, second) = (first.with_timezone(&Utc), second.with_timezone(&Utc));
                    if first > after {
                        Some(first)
                    } else if self.kind == Kind::Interval && second > after {
                        Some(second)
                    } else {
                        None
                    }
                }
                LocalResult::None => match self.kind {
                    Kind::WallClock => gap_end(self.tz, &m),
                    Kind::Interval => None,
                },
            };
            if let Some(c) = candidate.filter(|c| *c > after) {
                forward = Some(c);
                break;
            }
        }
        match (second_pass, forward) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Ticks in `(after, until]`, in order.
    pub fn ticks(&self, after: DateTime<Utc>, until: DateTime<Utc>) -> Ticks<'a> {
        Ticks {
            schedule: *self,
            last: after,
            until,
        }
    }

    /// The first wall-clock time matching the pattern after `from` (or at it, if
    /// `inclusive`), as a calendar search without time zones.
    fn next_match(&self, from: NaiveDateTime, inclusive: bool) -> Option<NaiveDateTime> {
        self.cron
            .find_next_occurrence(&Utc.from_utc_datetime(&from), inclusive)
            .ok()
            .map(|t| t.naive_utc())
    }
}

/// Ticks of a schedule in a range, in order (see [`Schedule::ticks`]).
#[derive(Debug, Clone)]
pub struct Ticks<'a> {
    schedule: Schedule<'a>,
    last: DateTime<Utc>,
    until: DateTime<Utc>,
}

impl Iterator for Ticks<'_> {
    type Item = DateTime<Utc>;

    fn next(&mut self) -> Option<DateTime<Utc>> {
        let next = self
            .schedule
            .next_after(self.last)
            .filter(|t| *t <= self.until)?;
        self.last = next;
        Some(next)
    }
}

/// The wall-clock time at which the repeated hour holding `local` starts.
fn fold_start(tz: Tz, local: &NaiveDateTime) -> Option<NaiveDateTime> {
    let LocalResult::Ambiguous(first, second) = tz.from_local_datetime(local) else {
        return None;
    };
    // The clock goes back at the one instant in (first, second] whose offset is the later one.
    let later = second.offset().fix();
    let (mut lo, mut hi) = (first.timestamp(), second.timestamp());
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        let at = DateTime::from_timestamp(mid, 0)?;
        if tz.offset_from_utc_datetime(&at.naive_utc()).fix() == later {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Some(
        DateTime::from_timestamp(hi, 0)?
            .with_timezone(&tz)
            .naive_local(),
    )
}

/// The first instant after the spring-forward gap that holds the wall-clock time `local`.
fn gap_end(tz: Tz, local: &NaiveDateTime) -> Option<DateTime<Utc>> {
    // Offsets are within ±26 h, so the search range holds the transition; no zone changes
    // its offset twice within it.
    let naive = local.and_utc().timestamp();
    let after = |secs: i64| {
        DateTime::from_timestamp(secs, 0)
            .map(|t| t.with_timezone(&tz).naive_local() > *local)
            .unwrap_or(true)
    };
    let (mut lo, mut hi) = (naive - 30 * 3600, naive + 30 * 3600);
    if after(lo) || !after(hi) {
        return None;
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if after(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    DateTime::from_timestamp(hi, 0)
}

/// An instant as RFC 3339 in a zone, to the second (`2025-03-30T03:00:00+02:00`).
pub fn rfc3339_in(t: DateTime<Utc>, tz: Tz) -> String {
    t.with_timezone(&tz)
        .to_rfc3339_opts(SecondsFormat::Secs, tz == chrono_tz::UTC)
}

/// A policy as words: `skip`, `run-once`, `queue-one`, `allow`.
pub fn missed_word(missed: Missed) -> &'static str {
    match missed {
        Missed::Skip => "skip",
        Missed::RunOnce { .. } => "run-once",
    }
}

/// An overlap policy as a word.
pub fn overlap_word(overlap: Overlap) -> &'static str {
    match overlap {
        Overlap::Skip => "skip",
        Overlap::QueueOne => "queue-one",
        Overlap::Allow => "allow",
    }
}

/// One cron trigger and its next fire times, for `runloom schedule list` and
/// `GET /api/v1/schedules`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScheduleInfo {
    /// The runbook.
    pub runbook: String,
    /// The trigger: `cron:N`, N its position among the runbook's triggers (from 0).
    pub trigger: String,
    /// The schedule as written.
    pub schedule: String,
    /// The IANA time zone it is read in.
    pub timezone: String,
    /// How daylight-saving changes affect it: `wall-clock` or `interval`.
    pub kind: Kind,
    /// After downtime: `skip` or `run-once`.
    pub missed: String,
    /// How far back `run-once` looks (`1h`); absent for `skip`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missed_window: Option<String>,
    /// While a run of this trigger is queued or running: `skip`, `queue-one` or `allow`.
    pub overlap: String,
    /// The next fire times after `now`, RFC 3339 in the trigger's zone; fewer if the
    /// schedule ends.
    pub next: Vec<String>,
}

/// Every cron trigger of the catalog's runbooks (by runbook name, then trigger order), each
/// with its next `count` fire times after `now`.
pub fn schedules(catalog: &Catalog, now: DateTime<Utc>, count: usize) -> Vec<ScheduleInfo> {
    catalog
        .runbooks()
        .flat_map(|p| runbook_schedules(&p.runbook, now, count))
        .collect()
}

/// One runbook's cron triggers, in trigger order, each with its next `count` fire times.
pub fn runbook_schedules(rb: &Runbook, now: DateTime<Utc>, count: usize) -> Vec<ScheduleInfo> {
    let mut out = Vec::new();
    for (index, trigger) in rb.triggers.iter().enumerate() {
        let Trigger::Cron(c) = trigger else { continue };
        let schedule = Schedule::of(c);
        let next = schedule
            .ticks(now, DateTime::<Utc>::MAX_UTC)
            .take(count)
            .map(|t| rfc3339_in(t, c.timezone))
            .collect();
        out.push(ScheduleInfo {
            runbook: rb.name.clone(),
            trigger: trigger_id(index),
            schedule: c.schedule.clone(),
            timezone: c.timezone.name().to_string(),
            kind: schedule.kind(),
            missed: missed_word(c.missed).to_string(),
            missed_window: match c.missed {
                Missed::Skip => None,
                Missed::RunOnce { window } => Some(humantime::format_duration(window).to_string()),
            },
            overlap: overlap_word(c.overlap).to_string(),
            next,
        });
    }
    out
}

/// The id of the runbook's trigger at `index`: `cron:N`.
pub fn trigger_id(index: usize) -> String {
    format!("cron:{index}")
}

/// The store key of one tick of one trigger, unique across nodes.
pub fn tick_key(runbook: &str, trigger_id: &str, tick: DateTime<Utc>) -> String {
    format!("{runbook}#{trigger_id}@{}", tick.timestamp_millis())
}

/// What to record for one tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedTick {
    /// The tick.
    pub at: DateTime<Utc>,
    /// `None`: admit a run (the overlap policy and the safety kernel still decide).
    /// `Some(reason)`: record it skipped, rule `missed`.
    pub missed: Option<String>,
}

/// What to record for a trigger whose last handled tick is `cursor`, at `now`: each tick in
/// `(cursor, now]`. Ticks at most `late` old are on time and admitted. Older ones were
/// missed (the scheduler was down or stalled): with `missed = "skip"` each is recorded
/// skipped; with `run-once` the latest missed tick within the window is admitted and the
/// others are recorded skipped. Skipped ticks beyond [`MISSED_RECORDED`] are summarised in
/// one record, the last of them, so the output stays bounded however long the downtime.
pub fn plan(
    trigger: &CronTrigger,
    cursor: DateTime<Utc>,
    now: DateTime<Utc>,
    late: Duration,
) -> Vec<PlannedTick> {
    let schedule = Schedule::of(trigger);
    let tz = trigger.timezone;
    let late = chrono::Duration::from_std(late).unwrap_or(chrono::Duration::MAX);
    let on_time_from = now.checked_sub_signed(late).unwrap_or(cursor).max(cursor);
    let scan = scan_missed(&schedule, cursor, on_time_from);
    let mut out = Vec::new();
    if scan.count > 0 {
        let downtime = format!(
            "no scheduler ran it between the last recorded tick ({}) and {} ({} later)",
            rfc3339_in(cursor, tz),
            rfc3339_in(now, tz),
            humantime::format_duration(Duration::from_secs(
                u64::try_from((now - cursor).num_seconds()).unwrap_or(0)
            )),
        );
        // The catch-up run of `run-once`, if the latest missed tick is within the window.
        let catch_up = match trigger.missed {
            Missed::Skip => None,
            Missed::RunOnce { window } => scan.last.filter(|last| {
                chrono::Duration::from_std(window)
                    .ok()
                    .and_then(|w| now.checked_sub_signed(w))
                    .is_none_or(|edge| *last >= edge)
            }),
        };
        let why = |subject: String| match trigger.missed {
            Missed::Skip => format!("{subject}: {downtime}; missed = \"skip\""),
            Missed::RunOnce { window } => match catch_up {
                Some(latest) => format!(
                    "{subject}: {downtime}; missed = \"run-once\" runs only the latest missed \
                     tick ({})",
                    rfc3339_in(latest, tz)
                ),
                None => format!(
                    "{subject}: {downtime}; missed = \"run-once\" and the latest missed tick \
                     is older than the window of {}",
                    humantime::format_duration(window)
                ),
            },
        };
        let skipped_count = scan.count - usize::from(catch_up.is_some());
        let individually = if skipped_count <= MISSED_RECORDED + 1 {
            skipped_count
        } else {
            MISSED_RECORDED
        };
        for &tick in scan.first.iter().take(individually) {
            out.push(PlannedTick {
                at: tick,
                missed: Some(why(format!("missed tick {}", rfc3339_in(tick, tz)))),
            });
        }
        if individually < skipped_count {
            // One record, on the last skipped tick, stands for the rest.
            let last_skipped = if catch_up.is_some() {
                scan.before_last
            } else {
                scan.last
            };
            if let (Some(first), Some(last)) = (scan.first.get(individually), last_skipped) {
                let n = skipped_count - individually;
                let n = if scan.exact {
                    format!("{n}")
                } else {
                    format!("more than {n}")
                };
                out.push(PlannedTick {
                    at: last,
                    missed: Some(why(format!(
                        "missed {n} ticks from {} to {} (this record stands for all of them; \
                         the {MISSED_RECORDED} before have one record each)",
                        rfc3339_in(*first, tz),
                        rfc3339_in(last, tz)
                    ))),
                });
            }
        }
        if let Some(tick) = catch_up {
            out.push(PlannedTick {
                at: tick,
                missed: None,
            });
        }
    }
    out.extend(
        schedule
            .ticks(on_time_from, now)
            .take(MAX_STEPS)
            .map(|at| PlannedTick { at, missed: None }),
    );
    out
}

/// Missed ticks in `(cursor, until]`: the first [`MISSED_RECORDED`] + 1, how many, and the
/// last two.
#[derive(Debug, Default)]
struct MissedScan {
    first: Vec<DateTime<Utc>>,
    count: usize,
    exact: bool,
    before_last: Option<DateTime<Utc>>,
    last: Option<DateTime<Utc>>,
}

fn scan_missed(schedule: &Schedule<'_>, cursor: DateTime<Utc>, until: DateTime<Utc>) -> MissedScan {
    let mut scan = MissedScan {
        exact: true,
        ..MissedScan::default()
    };
    let mut ticks = schedule.ticks(cursor, until);
    for tick in ticks.by_ref() {
        if scan.first.len() <= MISSED_RECORDED {
            scan.first.push(tick);
        }
        scan.count += 1;
        scan.before_last = scan.last.replace(tick);
        if scan.count >= MISSED_COUNTED {
            scan.exact = false;
            break;
        }
    }
    if !scan.exact {
        // Too many to count: find the last two ticks before `until` from a window that
        // widens until it holds two.
        for hours in [1, 24, 24 * 31, 24 * 366, 24 * 366 * 10] {
            let from = until - chrono::Duration::hours(hours);
            if from <= cursor {
                break;
            }
            let mut tail = schedule.ticks(from, until).take(MISSED_COUNTED);
            let mut last_two = (None, None);
            for tick in tail.by_ref() {
                last_two = (last_two.1, Some(tick));
            }
            if let (Some(a), Some(b)) = last_two {
                scan.before_last = Some(a);
                scan.last = Some(b);
                break;
            }
        }
    }
    scan
}

/// The time now; injected so tests drive the scheduler with fixed times.
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// How old a tick may be when the scheduler finds it and still count as on time; older
/// ticks were missed (the scheduler was down or stalled) and follow the `missed` policy.
pub const LATE: Duration = Duration::from_secs(30);
/// The longest the scheduler sleeps, so a jump of the system clock is noticed.
const MAX_SLEEP: Duration = Duration::from_secs(1);

/// Called with every run the scheduler records (queued or skipped).
pub type OnRecord = Arc<dyn Fn(&RunRecord) + Send + Sync>;

/// Turns the due ticks of every cron trigger in a catalog into runs (see the module docs).
pub struct Scheduler {
    catalog: Arc<Catalog>,
    executor: Executor,
    clock: Arc<dyn Clock>,
    on_record: Option<OnRecord>,
    state: tokio::sync::Mutex<HashMap<(String, usize), TriggerState>>,
}

/// What the scheduler remembers about one trigger between ticks.
#[derive(Debug, Default)]
struct TriggerState {
    /// Ticks at or before this are handled: when the scheduler first saw a trigger with no
    /// recorded tick (no back-fill), then the latest tick it recorded.
    floor: Option<DateTime<Utc>>,
    /// The first tick after `floor`: nothing to do before it. `None` once seen: never again.
    next: Option<DateTime<Utc>>,
}

impl Scheduler {
    /// A scheduler for the cron triggers of `catalog`, recording runs through `executor`.
    pub fn new(catalog: Arc<Catalog>, executor: Executor, clock: Arc<dyn Clock>) -> Self {
        Self {
            catalog,
            executor,
            clock,
            on_record: None,
            state: tokio::sync::Mutex::default(),
        }
    }

    /// Call `f` with every run recorded.
    pub fn on_record(mut self, f: OnRecord) -> Self {
        self.on_record = Some(f);
        self
    }

    /// The scheduler of a node: its catalog and executor; queued runs wake its workers.
    pub fn for_node(node: &Arc<Node>, clock: Arc<dyn Clock>) -> Self {
        let n = node.clone();
        Self::new(node.catalog.clone(), node.executor.clone(), clock)
            .on_record(Arc::new(move |run| n.after_admit(run)))
    }

    /// Record every tick due at `now`: ticks after each trigger's last recorded tick (by any
    /// node) up to `now`, each queued or skipped with its reason. Returns the runs this call
    /// recorded; a tick another node recorded first is not among them.
    pub async fn tick(&self, now: DateTime<Utc>) -> anyhow::Result<Vec<RunRecord>> {
        let mut recorded = Vec::new();
        let mut state = self.state.lock().await;
        for prepared in self.catalog.runbooks() {
            let rb = &prepared.runbook;
            for (index, trigger) in rb.triggers.iter().enumerate() {
                let Trigger::Cron(c) = trigger else { continue };
                let st = state.entry((rb.name.clone(), index)).or_default();
                if st.floor.is_some() && st.next.is_none_or(|next| next > now) {
                    continue;
                }
                let id = trigger_id(index);
                // The store knows the last tick any node recorded. Ask it when this scheduler
                // starts, or finds itself late (it was stalled; other nodes may have gone on);
                // on time, what it remembers is enough: a tick another node recorded first
                // is not recorded again whatever this one decides.
                let late = chrono::Duration::from_std(LATE).unwrap_or(chrono::Duration::MAX);
                let last = if st.next.is_none_or(|next| now - next > late) {
                    self.executor
                        .store()
                        .last_scheduled(&rb.name, &id)
                        .await?
                        .and_then(DateTime::from_timestamp_millis)
                } else {
                    None
                };
                let schedule = Schedule::of(c);
                let Some(mut cursor) = last.max(st.floor) else {
                    // A new trigger starts now.
                    st.floor = Some(now);
                    st.next = schedule.next_after(now);
                    continue;
                };
                let planned = plan(c, cursor, now, LATE);
                let missed = planned.iter().filter(|p| p.missed.is_some()).count();
                if missed > 0 {
                    tracing::warn!(runbook = %rb.name, trigger = %id, missed, since = %rfc3339_in(cursor, c.timezone), "missed cron ticks after downtime");
                }
                for tick in planned {
                    let at = tick.at;
                    if let Some(run) = self.record(prepared, index, c, tick).await? {
                        if let Some(f) = &self.on_record {
                            f(&run);
                        }
                        recorded.push(run);
                    }
                    cursor = cursor.max(at);
                    st.floor = Some(cursor);
                }
                st.floor = Some(cursor);
                st.next = schedule.next_after(cursor);
            }
        }
        Ok(recorded)
    }

    /// The earliest next tick of any trigger seen so far.
    pub async fn next_due(&self) -> Option<DateTime<Utc>> {
        self.state
            .lock()
            .await
            .values()
            .filter_map(|s| s.next)
            .min()
    }

    /// Record one tick of the trigger at `index` of `prepared`.
    async fn record(
        &self,
        prepared: &Prepared,
        index: usize,
        c: &CronTrigger,
        tick: PlannedTick,
    ) -> anyhow::Result<Option<RunRecord>> {
        let rb = &prepared.runbook;
        let id = trigger_id(index);
        let key = tick_key(&rb.name, &id, tick.at);
        let at_ms = tick.at.timestamp_millis();
        let request = RunRequest {
            params: c.parameters.clone(),
            trigger_kind: "cron".into(),
            trigger_id: Some(id.clone()),
            trigger: json!({
                "kind": "cron",
                "trigger": id,
                "schedule": c.schedule,
                "timezone": c.timezone.name(),
                "tick": rfc3339_in(tick.at, c.timezone),
            }),
            dry_run: false,
            alert_key: None,
            schedule: Some((key.clone(), at_ms)),
        };
        let (record, mut admission) = match self.executor.prepare_run(prepared, request.clone()) {
            Ok(planned) => planned,
            Err(EnqueueError::Parameters(problems)) => {
                // Record the tick, skipped with why, instead of losing it.
                let mut record = RunRecord::queued(
                    &rb.name,
                    &rb.content_hash,
                    "cron",
                    request.trigger,
                    Value::Object(request.params),
                    false,
                );
                record.trigger_id = Some(id.clone());
                record.scheduled_at = Some(at_ms);
                let admission = Admission {
                    trigger_id: Some(id),
                    rule_key: rb.name.clone(),
                    max_concurrency: i64::from(rb.policy.concurrency),
                    schedule_key: Some(key),
                    scheduled_at: Some(at_ms),
                    skip: Some((
                        "parameters".into(),
                        format!(
                            "the cron trigger's parameters are invalid: {}",
                            problems.join("; ")
                        ),
                    )),
                    ..Admission::default()
                };
                (record, admission)
            }
            Err(EnqueueError::Store(e)) => return Err(e),
        };
        if let Some(reason) = tick.missed {
            admission.skip = Some(("missed".into(), reason));
        }
        self.executor.admit_prepared(record, admission).await
    }

    /// Tick on the clock until `stop`: after each tick sleep until the next one is due, at
    /// most [`MAX_SLEEP`].
    pub async fn run(&self, stop: CancellationToken) {
        loop {
            if stop.is_cancelled() {
                return;
            }
            let wait = match self.tick(self.clock.now()).await {
                Ok(_) => match self.next_due().await {
                    Some(next) => (next - self.clock.now())
                        .to_std()
                        .unwrap_or(Duration::ZERO)
                        .clamp(Duration::from_millis(10), MAX_SLEEP),
                    None => MAX_SLEEP,
                },
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "recording cron ticks failed; retrying");
                    MAX_SLEEP
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = stop.cancelled() => return,
            }
        }
    }
}

/// Run the scheduler of `node` on the system clock until the node shuts down.
pub fn spawn(node: Arc<Node>) -> tokio::task::JoinHandle<()> {
    let scheduler = Scheduler::for_node(&node, Arc::new(SystemClock));
    let stop = node.shutdown_token();
    tokio::spawn(async move { scheduler.run(stop).await })
}

#[cfg(test)]
mod tests;
