//! The cron scheduler against real runbooks and a real store, driven with fixed times:
//! missed ticks after downtime (`skip`, `run-once`), overlap policies, exactly one run per
//! tick with two nodes on one store (SQLite, and PostgreSQL where it runs), the scheduler
//! loop on an injected clock and on the system clock, and `runloom schedule list`.

use crate::support::{node_dir, wait_for};
use chrono::{DateTime, Utc};
use runloom::node::{Node, NodeOptions};
use runloom::run::{RunRecord, RunStatus};
use runloom::store::RunFilter;
use runloom::trigger::cron::{Clock, Scheduler, SystemClock};
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn secs(n: i64) -> chrono::Duration {
    chrono::Duration::seconds(n)
}

/// A runbook with one cron trigger; `extra` lines go into the `[[trigger]]` table.
fn cron_runbook(schedule: &str, extra: &str) -> String {
    format!(
        "version = 1\ndescription = \"On a schedule.\"\n[[trigger]]\nkind = \"cron\"\nschedule = \"{schedule}\"\n{extra}\n"
    )
}

/// A scratch directory as [`node_dir`] makes it (linked to the shared compiled-plugin
/// cache), removed when dropped.
fn scratch(runbooks: &[(&str, &str, &str)]) -> crate::scratch::ScratchDir {
    node_dir("", runbooks, &[])
}

/// A node on `dir` with `workers` workers and no scheduler of its own; `store` overrides
/// the store URL.
async fn start(dir: &Path, name: &str, workers: usize, store: Option<&str>) -> Arc<Node> {
    let mut config = runloom::config::Config::load(Some(&dir.join("runloom.toml"))).unwrap();
    if let Some(url) = store {
        config.store_url = Some(url.to_string());
    }
    let options = NodeOptions {
        name: name.into(),
        workers,
        poll: Duration::from_millis(50),
        shutdown_grace: Duration::from_millis(200),
        schedule: false,
        ..NodeOptions::default()
    };
    let node = Node::start(config, options).await.unwrap();
    assert!(
        node.catalog.errors().is_empty(),
        "{:?}",
        node.catalog.errors()
    );
    node
}

/// A scheduler for `node`, as a fresh process would have it (nothing remembered).
fn scheduler(node: &Arc<Node>) -> Scheduler {
    Scheduler::for_node(node, Arc::new(SystemClock))
}

/// Every run of `runbook`, oldest tick first.
async fn runs_of(node: &Node, runbook: &str) -> Vec<RunRecord> {
    let mut runs = node
        .store
        .list_runs(&RunFilter {
            runbook: Some(runbook.into()),
            limit: 10_000,
            ..RunFilter::default()
        })
        .await
        .unwrap();
    runs.sort_by_key(|r| r.scheduled_at);
    runs
}

fn tick_of(r: &RunRecord) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(r.scheduled_at.unwrap()).unwrap()
}

#[tokio::test]
async fn missed_skip_records_every_missed_tick_as_skipped_with_its_reason() {
    let dir = scratch(&[(
        "minutely",
        &cron_runbook("* * * * *", "overlap = \"allow\""),
        "1",
    )]);
    let node = start(&dir, "a", 0, None).await;
    let t0 = at("2031-05-01T10:00:00Z");
    let first = scheduler(&node);
    // A new trigger starts when the scheduler first sees it: nothing before is back-filled.
    assert!(first.tick(t0 - secs(20)).await.unwrap().is_empty());
    let runs = first.tick(t0 + secs(1)).await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status, RunStatus::Queued);
    assert_eq!(tick_of(&runs[0]), t0);
    assert_eq!(runs[0].trigger_id.as_deref(), Some("cron:0"));
    assert_eq!(runs[0].trigger["tick"], "2031-05-01T10:00:00Z");
    // Down for five minutes: a restarted scheduler finds the last recorded tick in the store.
    let runs = scheduler(&node).tick(t0 + secs(310)).await.unwrap();
    let summary: Vec<(String, RunStatus, Option<String>)> = runs
        .iter()
        .map(|r| (tick_of(r).to_rfc3339(), r.status, r.error_kind.clone()))
        .collect();
    let missed = |t: &str| {
        (
            t.to_string(),
            RunStatus::Skipped,
            Some("missed".to_string()),
        )
    };
    assert_eq!(
        summary,
        [
            missed("2031-05-01T10:01:00+00:00"),
            missed("2031-05-01T10:02:00+00:00"),
            missed("2031-05-01T10:03:00+00:00"),
            missed("2031-05-01T10:04:00+00:00"),
            ("2031-05-01T10:05:00+00:00".into(), RunStatus::Queued, None),
        ]
    );
    assert_eq!(
        runs[0].reason.as_deref(),
        Some(
            "missed tick 2031-05-01T10:01:00Z: no scheduler ran it between the last recorded \
             tick (2031-05-01T10:00:00Z) and 2031-05-01T10:05:10Z (5m 10s later); \
             missed = \"skip\""
        )
    );
    // Down for a day: 1,440 missed ticks become 100 records and one that stands for the rest.
    let runs = scheduler(&node)
        .tick(t0 + secs(86_400 + 340))
        .await
        .unwrap();
    assert_eq!(runs.len(), 101);
    assert!(runs.iter().all(|r| r.status == RunStatus::Skipped));
    assert_eq!(tick_of(&runs[99]), at("2031-05-01T11:45:00Z"));
    assert_eq!(tick_of(&runs[100]), at("2031-05-02T10:05:00Z"));
    let reason = runs[100].reason.as_deref().unwrap();
    assert!(
        reason.starts_with("missed 1340 ticks from 2031-05-01T11:46:00Z to 2031-05-02T10:05:00Z"),
        "{reason}"
    );
    // Everything is on record; nothing was dropped silently.
    assert_eq!(runs_of(&node, "minutely").await.len(), 1 + 5 + 101);
    node.shutdown().await;
}

#[tokio::test]
async fn run_once_runs_the_latest_missed_tick_and_records_the_others() {
    let dir = scratch(&[(
        "catch-up",
        &cron_runbook(
            "*/10 * * * *",
            "timezone = \"Europe/Berlin\"\nmissed = \"run-once\"\nmissed_window = \"1h\"\noverlap = \"allow\"",
        ),
        "1",
    )]);
    let node = start(&dir, "a", 0, None).await;
    let t0 = at("2031-05-01T10:00:00Z");
    let s = scheduler(&node);
    s.tick(t0 - secs(1)).await.unwrap();
    assert_eq!(s.tick(t0 + secs(1)).await.unwrap().len(), 1);
    let runs = scheduler(&node).tick(t0 + secs(45 * 60 + 5)).await.unwrap();
    let got: Vec<(DateTime<Utc>, RunStatus)> =
        runs.iter().map(|r| (tick_of(r), r.status)).collect();
    assert_eq!(
        got,
        [
            (at("2031-05-01T10:10:00Z"), RunStatus::Skipped),
            (at("2031-05-01T10:20:00Z"), RunStatus::Skipped),
            (at("2031-05-01T10:30:00Z"), RunStatus::Skipped),
            (at("2031-05-01T10:40:00Z"), RunStatus::Queued),
        ]
    );
    let reason = runs[0].reason.as_deref().unwrap();
    assert!(
        reason.starts_with("missed tick 2031-05-01T12:10:00+02:00: no scheduler ran it"),
        "{reason}"
    );
    assert!(
        reason.ends_with(
            "missed = \"run-once\" runs only the latest missed tick (2031-05-01T12:40:00+02:00)"
        ),
        "{reason}"
    );
    node.shutdown().await;
}

/// A per-second trigger with `overlap` whose runs take 5 s, on a node with one worker:
/// ticks 1, 2 and 3 seconds after the start, the second and third while the first runs.
async fn overlapping(overlap: &str) -> Vec<RunRecord> {
    let dir = scratch(&[(
        "slow",
        &cron_runbook("* * * * * *", &format!("overlap = \"{overlap}\"")),
        r#"sleep("5s"); 1"#,
    )]);
    let node = start(&dir, "a", 1, None).await;
    let t0 = at("2031-05-01T10:00:00Z");
    let s = scheduler(&node);
    s.tick(t0).await.unwrap();
    let first = s.tick(t0 + secs(1)).await.unwrap();
    assert_eq!(first.len(), 1);
    let id = first[0].id.clone();
    wait_for(Duration::from_secs(10), || async {
        (node.store.get_run(&id).await.unwrap().status == RunStatus::Running).then_some(())
    })
    .await;
    let mut runs = first;
    runs.extend(s.tick(t0 + secs(2)).await.unwrap());
    runs.extend(s.tick(t0 + secs(3)).await.unwrap());
    node.shutdown().await;
    runs
}

fn outcomes(runs: &[RunRecord]) -> Vec<(RunStatus, Option<&str>)> {
    runs.iter()
        .map(|r| (r.status, r.error_kind.as_deref()))
        .collect()
}

#[tokio::test]
async fn overlap_skip_records_ticks_as_skipped_while_a_run_is_going() {
    let runs = overlapping("skip").await;
    assert_eq!(
        outcomes(&runs),
        [
            (RunStatus::Queued, None),
            (RunStatus::Skipped, Some("overlap")),
            (RunStatus::Skipped, Some("overlap")),
        ]
    );
    assert_eq!(
        runs[1].reason.as_deref(),
        Some(
            format!(
                "run {} of this trigger is still running; overlap = \"skip\"",
                runs[0].id
            )
            .as_str()
        )
    );
}

#[tokio::test]
async fn overlap_queue_one_keeps_one_run_waiting() {
    let runs = overlapping("queue-one").await;
    assert_eq!(
        outcomes(&runs),
        [
            (RunStatus::Queued, None),
            (RunStatus::Queued, None),
            (RunStatus::Skipped, Some("overlap")),
        ]
    );
    assert_eq!(
        runs[2].reason.as_deref(),
        Some(
            format!(
                "run {} of this trigger is still queued; overlap = \"queue-one\"",
                runs[1].id
            )
            .as_str()
        )
    );
}

#[tokio::test]
async fn overlap_allow_queues_every_tick() {
    let runs = overlapping("allow").await;
    assert_eq!(outcomes(&runs), [(RunStatus::Queued, None); 3]);
}

/// Two nodes on one store tick the same per-second trigger at nearly the same times, then
/// both come back after downtime: each tick is recorded once, by one of them.
async fn two_nodes_record_each_tick_once(store: Option<&str>) {
    let dir = scratch(&[(
        "shared",
        &cron_runbook("* * * * * *", "overlap = \"allow\""),
        "1",
    )]);
    let a = start(&dir, "node-a", 0, store).await;
    let b = start(&dir, "node-b", 0, store).await;
    let (sa, sb) = (scheduler(&a), scheduler(&b));
    let t0 = at("2031-05-01T10:00:00Z");
    sa.tick(t0).await.unwrap();
    sb.tick(t0).await.unwrap();
    let mut recorded = 0;
    for i in 1..=20 {
        let now = t0 + secs(i);
        let (ra, rb) = tokio::join!(
            sa.tick(now),
            sb.tick(now + chrono::Duration::milliseconds(200))
        );
        recorded += ra.unwrap().len() + rb.unwrap().len();
    }
    // Both down for three minutes, then back at the same time.
    let now = t0 + secs(200);
    let restarted = scheduler(&b);
    let (ra, rb) = tokio::join!(sa.tick(now), restarted.tick(now));
    recorded += ra.unwrap().len() + rb.unwrap().len();
    let runs = runs_of(&a, "shared").await;
    assert_eq!(recorded, runs.len(), "a tick was recorded twice");
    let mut per_tick: HashMap<i64, usize> = HashMap::new();
    for r in &runs {
        *per_tick.entry(r.scheduled_at.unwrap()).or_default() += 1;
    }
    assert!(per_tick.values().all(|n| *n == 1), "{per_tick:?}");
    // Every on-time tick ran, once.
    let queued: Vec<DateTime<Utc>> = runs
        .iter()
        .filter(|r| r.status == RunStatus::Queued)
        .map(tick_of)
        .collect();
    let expected: Vec<DateTime<Utc>> = (1..=20).chain(171..=200).map(|i| t0 + secs(i)).collect();
    assert_eq!(queued, expected);
    // The 150 missed ticks are on record as skipped (100 one by one, the rest summarised).
    assert!(
        runs.iter()
            .filter(|r| r.status == RunStatus::Skipped)
            .all(|r| r.error_kind.as_deref() == Some("missed"))
    );
    assert_eq!(
        runs.iter()
            .filter(|r| r.status == RunStatus::Skipped)
            .map(tick_of)
            .max(),
        Some(t0 + secs(170))
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn two_nodes_on_one_sqlite_store_record_each_tick_once() {
    two_nodes_record_each_tick_once(None).await;
}

#[tokio::test]
async fn two_nodes_on_one_postgres_store_record_each_tick_once() {
    let Some(url) = crate::support::fresh_postgres("cron").await else {
        return;
    };
    two_nodes_record_each_tick_once(Some(&url)).await;
}

/// A clock the test moves.
struct ManualClock(Mutex<DateTime<Utc>>);

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
}

#[tokio::test]
async fn the_scheduler_loop_fires_when_the_injected_clock_reaches_a_tick() {
    let dir = scratch(&[("hourly", &cron_runbook("0 * * * *", ""), "1")]);
    let node = start(&dir, "a", 0, None).await;
    let t0 = at("2031-05-01T10:59:58Z");
    let clock = Arc::new(ManualClock(Mutex::new(t0)));
    let s = Arc::new(Scheduler::for_node(&node, clock.clone()));
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn({
        let (s, stop) = (s.clone(), stop.clone());
        async move { s.run(stop).await }
    });
    // The loop has seen the trigger once its next tick is known.
    let next = wait_for(Duration::from_secs(5), || async { s.next_due().await }).await;
    assert_eq!(next, at("2031-05-01T11:00:00Z"));
    assert!(runs_of(&node, "hourly").await.is_empty());
    *clock.0.lock().unwrap() = t0 + secs(3);
    let runs = wait_for(Duration::from_secs(5), || async {
        let runs = runs_of(&node, "hourly").await;
        (!runs.is_empty()).then_some(runs)
    })
    .await;
    assert_eq!(runs.len(), 1);
    assert_eq!(tick_of(&runs[0]), at("2031-05-01T11:00:00Z"));
    stop.cancel();
    task.await.unwrap();
    node.shutdown().await;
}

#[tokio::test]
async fn a_node_started_with_the_scheduler_runs_a_per_second_schedule() {
    let dir = scratch(&[("beat", &cron_runbook("* * * * * *", ""), "42")]);
    let config = runloom::config::Config::load(Some(&dir.join("runloom.toml"))).unwrap();
    let node = Node::start(
        config,
        NodeOptions {
            name: "scheduling".into(),
            workers: 2,
            poll: Duration::from_millis(50),
            shutdown_grace: Duration::from_millis(200),
            schedule: true,
            ..NodeOptions::default()
        },
    )
    .await
    .unwrap();
    let done = wait_for(Duration::from_secs(10), || async {
        runs_of(&node, "beat")
            .await
            .into_iter()
            .find(|r| r.status == RunStatus::Succeeded)
    })
    .await;
    assert_eq!(done.trigger_kind, "cron");
    assert_eq!(done.output, Some(serde_json::json!(42)));
    node.shutdown().await;
}

#[test]
fn schedule_list_shows_next_fire_times() {
    let dir = scratch(&[
        (
            "nightly",
            &cron_runbook(
                "0 3 * * *",
                "timezone = \"Europe/Berlin\"\nmissed = \"run-once\"\noverlap = \"queue-one\"",
            ),
            "1",
        ),
        ("by-hand", "version = 1\ndescription = \"x\"\n", "1"),
    ]);
    let runloom = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_runloom"))
            .args(args)
            .arg("--config")
            .arg(dir.join("runloom.toml"))
            .env_remove("RUNLOOM_CONFIG")
            .output()
            .unwrap()
    };
    let out = runloom(&["schedule", "list", "--count", "4", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let list = doc.as_array().unwrap();
    assert_eq!(list.len(), 1, "{doc}");
    assert_eq!(list[0]["runbook"], "nightly");
    assert_eq!(list[0]["trigger"], "cron:0");
    assert_eq!(list[0]["timezone"], "Europe/Berlin");
    assert_eq!(list[0]["missed"], "run-once");
    assert_eq!(list[0]["missed_window"], "1h");
    assert_eq!(list[0]["overlap"], "queue-one");
    let next: Vec<DateTime<chrono::FixedOffset>> = list[0]["next"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| DateTime::parse_from_rfc3339(t.as_str().unwrap()).unwrap())
        .collect();
    assert_eq!(next.len(), 4);
    let now = Utc::now();
    assert!(next[0] > now && next[0] <= now + secs(86_400), "{next:?}");
    for (i, t) in next.iter().enumerate() {
        assert_eq!(t.format("%H:%M:%S").to_string(), "03:00:00", "{t}");
        assert!(matches!(t.offset().local_minus_utc(), 3600 | 7200), "{t}");
        if i > 0 {
            assert_eq!((t.date_naive() - next[i - 1].date_naive()).num_days(), 1);
        }
    }
    let out = runloom(&["schedule", "list"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["RUNBOOK", "TRIGGER", "SCHEDULE", "ZONE", "POLICY", "NEXT"],
        "{text}"
    );
    assert!(lines[1].starts_with("nightly  cron:0"), "{text}");
    assert!(lines[1].contains("0 3 * * *"), "{text}");
    assert!(lines[1].contains("Europe/Berlin"), "{text}");
    assert!(
        lines[1].contains("missed=run-once(1h) overlap=queue-one"),
        "{text}"
    );
    assert_eq!(lines.len(), 1 + 3, "three fire times by default: {text}");
    assert!(
        lines[1..]
            .iter()
            .all(|l| l.ends_with(":00:00+01:00") || l.ends_with(":00:00+02:00")),
        "{text}"
    );
}

#[test]
fn schedule_list_exits_with_the_definition_code_for_a_bad_schedule() {
    let dir = scratch(&[("broken", &cron_runbook("61 * * * *", ""), "1")]);
    let out = Command::new(env!("CARGO_BIN_EXE_runloom"))
        .args(["schedule", "list"])
        .arg("--config")
        .arg(dir.join("runloom.toml"))
        .env_remove("RUNLOOM_CONFIG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(6));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("trigger[1].schedule"), "{stderr}");
}
