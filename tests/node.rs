//! A node in process: the worker pool, the remediation safety kernel, alert intake, restarts
//! with queued runs, and graceful shutdown — with real plugins and a real SQLite store.

use crate::support::{node_dir, start_node, wait_for};
use runloom::run::{RunRecord, RunStatus, StepStatus};
use runloom::store::RunFilter;
use serde_json::json;
use std::time::Duration;

const FIRING: &str = include_str!("cases/alertmanager/firing.json");
const RESOLVED: &str = include_str!("cases/alertmanager/resolved.json");

async fn all_runs(node: &runloom::node::Node) -> Vec<RunRecord> {
    let mut runs = node
        .store
        .list_runs(&RunFilter {
            limit: 1000,
            ..RunFilter::default()
        })
        .await
        .unwrap();
    runs.reverse();
    runs
}

async fn wait_final(node: &runloom::node::Node, id: &str) -> RunRecord {
    wait_for(Duration::from_secs(30), || async {
        let r = node.store.get_run(id).await.unwrap();
        r.status.is_final().then_some(r)
    })
    .await
}

/// Submit `n` runs of `runbook` without parameters and wait for each to end.
async fn run_all(node: &runloom::node::Node, runbook: &str, n: usize) -> Vec<RunRecord> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let run = node
            .submit(runbook, Default::default(), false)
            .await
            .unwrap();
        ids.push(run.id);
    }
    let mut runs = Vec::new();
    for id in &ids {
        runs.push(wait_final(node, id).await);
    }
    runs
}

/// The most runs in progress at any run's start.
fn most_at_once(runs: &[RunRecord]) -> usize {
    runs.iter()
        .map(|r| {
            let at = r.started_at.unwrap();
            runs.iter()
                .filter(|o| o.started_at.unwrap() <= at && o.ended_at.unwrap() > at)
                .count()
        })
        .max()
        .unwrap_or(0)
}

const WEBHOOK_FAILING: &str = r#"
version = 1
description = "Fails every time."
[[trigger]]
kind = "webhook"
name = "flaky-service"
[policy]
breaker = 2
"#;

#[tokio::test]
async fn a_per_target_lock_keeps_runs_for_one_host_apart_and_others_concurrent() {
    let dir = node_dir(
        "",
        &[(
            "restart",
            "version = 1\ndescription = \"x\"\n[parameters.host]\ntype = \"string\"\nrequired = true\n[policy]\nconcurrency = 5\nlock = \"{{ params.host }}\"\n",
            r#"sleep("300ms"); params.host"#,
        )],
        &[],
    );
    let node = start_node(&dir, 8, Duration::from_secs(5)).await;
    let mut ids = Vec::new();
    for host in ["a", "a", "a", "b", "b"] {
        let params = json!({ "host": host }).as_object().cloned().unwrap();
        ids.push(node.submit("restart", params, false).await.unwrap().id);
    }
    let mut runs = Vec::new();
    for id in &ids {
        runs.push(wait_final(&node, id).await);
    }
    assert!(
        runs.iter().all(|r| r.status == RunStatus::Succeeded),
        "{runs:#?}"
    );
    let overlaps = |x: &RunRecord, y: &RunRecord| {
        x.started_at.unwrap() < y.ended_at.unwrap() && y.started_at.unwrap() < x.ended_at.unwrap()
    };
    for (i, x) in runs.iter().enumerate() {
        for y in &runs[i + 1..] {
            if x.lock_key == y.lock_key {
                assert!(
                    !overlaps(x, y),
                    "two runs for `{:?}` overlapped",
                    x.lock_key
                );
            }
        }
    }
    // Different targets did run at the same time.
    assert!(runs.iter().any(|a| {
        runs.iter()
            .any(|b| a.lock_key != b.lock_key && overlaps(a, b))
    }));
    assert_eq!(runs[0].lock_key.as_deref(), Some("a"));
    node.shutdown().await;
}

#[tokio::test]
async fn the_concurrency_limit_bounds_runs_of_a_runbook() {
    let dir = node_dir(
        "",
        &[(
            "busy",
            "version = 1\ndescription = \"x\"\n[policy]\nconcurrency = 2\n",
            r#"sleep("200ms"); 1"#,
        )],
        &[],
    );
    let node = start_node(&dir, 8, Duration::from_secs(5)).await;
    let runs = run_all(&node, "busy", 6).await;
    // At every start, at most two runs were in progress.
    let most = most_at_once(&runs);
    assert!(most <= 2, "{most} runs at once");
    node.shutdown().await;
}

#[tokio::test]
async fn the_worker_pool_bounds_runs_at_once_and_runs_each_queued_run_once() {
    // Workers take their next run in the write that ends the last one: the pool must still
    // never hold more runs than it has workers.
    let dir = node_dir(
        "",
        &[(
            "short",
            "version = 1\ndescription = \"x\"\n",
            r#"sleep("100ms"); 1"#,
        )],
        &[],
    );
    let node = start_node(&dir, 2, Duration::from_secs(5)).await;
    let runs = run_all(&node, "short", 8).await;
    assert!(
        runs.iter()
            .all(|r| r.status == RunStatus::Succeeded && r.attempt == 1),
        "{runs:#?}"
    );
    let most = most_at_once(&runs);
    assert!(most <= 2, "{most} runs at once on two workers");
    // Queue order holds: runs start in the order they were queued.
    let mut starts: Vec<_> = runs
        .iter()
        .map(|r| (r.started_at.unwrap(), r.queued_at))
        .collect();
    starts.sort();
    assert!(starts.windows(2).all(|w| w[0].1 <= w[1].1), "{starts:?}");
    // Every slot is given back once the queue is empty.
    wait_for(Duration::from_secs(5), || async {
        (node.running_count() == 0).then_some(())
    })
    .await;
    node.shutdown().await;
}

fn webhook_runbook(policy: &str) -> String {
    format!(
        "version = 1\ndescription = \"x\"\n[[trigger]]\nkind = \"webhook\"\nname = \"deploy\"\n[policy]\n{policy}\n"
    )
}

#[tokio::test]
async fn the_rate_limit_records_runs_over_it_as_skipped_with_the_rule() {
    let dir = node_dir(
        "",
        &[("deploy", &webhook_runbook("rate_limit = \"2/1h\""), "1")],
        &[],
    );
    let node = start_node(&dir, 4, Duration::from_secs(5)).await;
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let runs = node
            .ingest_webhook("deploy", json!({"service": "api"}))
            .await
            .unwrap();
        statuses.push((runs[0].status, runs[0].reason.clone()));
    }
    assert_eq!(statuses[0].0, RunStatus::Queued);
    assert_eq!(statuses[1].0, RunStatus::Queued);
    assert_eq!(statuses[2].0, RunStatus::Skipped);
    assert_eq!(
        statuses[2].1.as_deref(),
        Some("rate limit: 2 runs within 1h already (limit 2/1h)")
    );
    let skipped = all_runs(&node)
        .await
        .into_iter()
        .find(|r| r.status == RunStatus::Skipped)
        .unwrap();
    assert_eq!(skipped.error_kind.as_deref(), Some("rate_limit"));
    node.shutdown().await;
}

#[tokio::test]
async fn a_cooldown_suppresses_runs_for_the_same_key() {
    let dir = node_dir(
        "",
        &[(
            "deploy",
            &webhook_runbook("cooldown = \"1h\"\nlock = \"{{ body.service }}\""),
            "1",
        )],
        &[],
    );
    let node = start_node(&dir, 4, Duration::from_secs(5)).await;
    let first = node
        .ingest_webhook("deploy", json!({"service": "api"}))
        .await
        .unwrap();
    wait_final(&node, &first[0].id).await;
    let again = node
        .ingest_webhook("deploy", json!({"service": "api"}))
        .await
        .unwrap();
    assert_eq!(again[0].status, RunStatus::Skipped);
    assert!(
        again[0]
            .reason
            .as_deref()
            .unwrap()
            .starts_with("cooldown: the last run for `api` was"),
        "{:?}",
        again[0].reason
    );
    // Another key is not cooling down.
    let other = node
        .ingest_webhook("deploy", json!({"service": "db"}))
        .await
        .unwrap();
    assert_eq!(other[0].status, RunStatus::Queued);
    node.shutdown().await;
}

#[tokio::test]
async fn the_breaker_opens_after_consecutive_failures_until_reset() {
    let dir = node_dir(
        "",
        &[("flaky", WEBHOOK_FAILING, r#"fail("service still down")"#)],
        &[],
    );
    let node = start_node(&dir, 4, Duration::from_secs(5)).await;
    for _ in 0..2 {
        let r = node
            .ingest_webhook("flaky-service", json!({}))
            .await
            .unwrap();
        assert_eq!(wait_final(&node, &r[0].id).await.status, RunStatus::Failed);
    }
    let tripped = node
        .ingest_webhook("flaky-service", json!({}))
        .await
        .unwrap();
    assert_eq!(tripped[0].status, RunStatus::Skipped);
    assert!(
        tripped[0]
            .reason
            .as_deref()
            .unwrap()
            .starts_with("circuit breaker open: 2 consecutive failed runs of `flaky`")
    );
    assert_eq!(node.store.breakers().await.unwrap()[0].0, "flaky");
    assert!(node.store.reset_breaker("flaky").await.unwrap());
    let again = node
        .ingest_webhook("flaky-service", json!({}))
        .await
        .unwrap();
    assert_eq!(again[0].status, RunStatus::Queued);
    node.shutdown().await;
}

#[tokio::test]
async fn the_global_pause_records_triggered_runs_as_skipped() {
    let dir = node_dir("", &[("deploy", &webhook_runbook(""), "1")], &[]);
    let node = start_node(&dir, 4, Duration::from_secs(5)).await;
    node.store.set_paused(Some("change freeze")).await.unwrap();
    let paused = node.ingest_webhook("deploy", json!({})).await.unwrap();
    assert_eq!(paused[0].status, RunStatus::Skipped);
    assert_eq!(
        paused[0].reason.as_deref(),
        Some("runloom is paused: change freeze")
    );
    node.store.set_paused(None).await.unwrap();
    let resumed = node.ingest_webhook("deploy", json!({})).await.unwrap();
    assert_eq!(resumed[0].status, RunStatus::Queued);
    node.shutdown().await;
}

const DISK_ALERT: &str = r#"
version = 1
description = "Reacts to DiskSpaceLow."
[parameters.mountpoint]
type = "string"
[parameters.host]
type = "string"
[[trigger]]
kind = "alert"
matchers = ['alertname="DiskSpaceLow"', 'severity=~"warning|critical"']
parameters = { mountpoint = "{{ labels.mountpoint }}", host = "{{ labels.exported_instance }}" }
[policy]
lock = "{{ labels.exported_instance }}"
"#;

#[tokio::test]
async fn a_firing_alert_runs_once_until_it_resolves() {
    let dir = node_dir(
        "",
        &[(
            "disk",
            DISK_ALERT,
            "#{ host: params.host, path: params.mountpoint, status: alert.status }",
        )],
        &[],
    );
    let node = start_node(&dir, 4, Duration::from_secs(5)).await;
    let report = node.ingest_alertmanager(FIRING.as_bytes()).await.unwrap();
    assert_eq!((report.alerts, report.new, report.runs.len()), (1, 1, 1));
    let run = wait_final(&node, &report.runs[0].id).await;
    assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.reason);
    assert_eq!(
        run.output,
        Some(json!({"host": "web-1", "path": "/var", "status": "firing"}))
    );
    assert_eq!(
        run.alert_key.as_deref(),
        Some("66c85521d92ab7bb@2026-11-23T20:12:54.442Z")
    );
    assert_eq!(run.lock_key.as_deref(), Some("web-1"));
    // Alertmanager's resend and an HA replica's duplicate start nothing new.
    for _ in 0..2 {
        let again = node.ingest_alertmanager(FIRING.as_bytes()).await.unwrap();
        assert_eq!((again.duplicates, again.runs.len()), (1, 0));
    }
    let resolved = node.ingest_alertmanager(RESOLVED.as_bytes()).await.unwrap();
    assert_eq!(resolved.resolved, 1);
    // A late firing notification for the resolved episode does not reopen it.
    let late = node.ingest_alertmanager(FIRING.as_bytes()).await.unwrap();
    assert_eq!(late.runs.len(), 0);
    assert_eq!(all_runs(&node).await.len(), 1);
    // A new episode (a new startsAt) runs again.
    let next = FIRING.replace("2026-11-23T20:12:54.442Z", "2026-11-23T21:00:00.000Z");
    assert_eq!(
        node.ingest_alertmanager(next.as_bytes())
            .await
            .unwrap()
            .runs
            .len(),
        1
    );
    node.shutdown().await;
}

#[tokio::test]
async fn a_resolved_alert_cancels_its_queued_runs() {
    let dir = node_dir("", &[("disk", DISK_ALERT, "1")], &[]);
    // No workers: the run stays queued.
    let node = start_node(&dir, 0, Duration::from_secs(5)).await;
    let report = node.ingest_alertmanager(FIRING.as_bytes()).await.unwrap();
    assert_eq!(report.runs[0].status, RunStatus::Queued);
    let resolved = node.ingest_alertmanager(RESOLVED.as_bytes()).await.unwrap();
    assert_eq!(resolved.cancelled, 1);
    let run = node.store.get_run(&report.runs[0].id).await.unwrap();
    assert_eq!(run.status, RunStatus::Cancelled);
    assert_eq!(
        run.reason.as_deref(),
        Some("the alert resolved before the run started")
    );
    node.shutdown().await;
}

#[tokio::test]
async fn an_alert_matching_no_runbook_is_stored_and_starts_nothing() {
    let dir = node_dir("", &[("disk", DISK_ALERT, "1")], &[]);
    let node = start_node(&dir, 4, Duration::from_secs(5)).await;
    let other = FIRING.replace("DiskSpaceLow", "HighLatency");
    let report = node.ingest_alertmanager(other.as_bytes()).await.unwrap();
    assert_eq!((report.new, report.runs.len()), (1, 0));
    assert!(
        node.store
            .alert("66c85521d92ab7bb", "2026-11-23T20:12:54.442Z")
            .await
            .unwrap()
            .is_some()
    );
    node.shutdown().await;
}

#[tokio::test]
async fn queued_runs_survive_a_restart() {
    let dir = node_dir(
        "",
        &[("quick", "version = 1\ndescription = \"x\"\n", "42")],
        &[],
    );
    let node = start_node(&dir, 0, Duration::from_secs(1)).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(
            node.submit("quick", Default::default(), false)
                .await
                .unwrap()
                .id,
        );
    }
    node.shutdown().await;
    drop(node);
    let node = start_node(&dir, 4, Duration::from_secs(5)).await;
    for id in &ids {
        let run = wait_final(&node, id).await;
        assert_eq!(
            (run.status, run.output.clone()),
            (RunStatus::Succeeded, Some(json!(42)))
        );
    }
    node.shutdown().await;
}

#[tokio::test]
async fn shutdown_starts_no_queued_run_even_one_claimed_as_a_running_run_ends() {
    // One worker: the first run's end would claim the second, but shutdown began meanwhile, so
    // the second stays in the queue.
    let dir = node_dir(
        "",
        &[(
            "nap",
            "version = 1\ndescription = \"x\"\n",
            r#"sleep("400ms"); 1"#,
        )],
        &[],
    );
    let node = start_node(&dir, 1, Duration::from_secs(5)).await;
    let first = node
        .submit("nap", Default::default(), false)
        .await
        .unwrap()
        .id;
    let second = node
        .submit("nap", Default::default(), false)
        .await
        .unwrap()
        .id;
    wait_for(Duration::from_secs(10), || async {
        (node.store.get_run(&first).await.unwrap().status == RunStatus::Running).then_some(())
    })
    .await;
    assert_eq!(
        node.shutdown().await,
        0,
        "the running run finished within the grace"
    );
    assert_eq!(
        node.store.get_run(&first).await.unwrap().status,
        RunStatus::Succeeded
    );
    let left = node.store.get_run(&second).await.unwrap();
    assert_eq!(left.status, RunStatus::Queued, "{left:#?}");
    assert_eq!(left.started_at, None, "it was never claimed: {left:#?}");
}

#[tokio::test]
async fn shutdown_lets_short_runs_finish_and_requeues_long_ones_which_resume_without_reapplying() {
    let dir = node_dir(
        "[plugins.append-line]\ndirs = [\"{dir}:/state:rw\"]\n",
        &[
            (
                "short",
                "version = 1\ndescription = \"x\"\n",
                r#"sleep("200ms"); "done""#,
            ),
            (
                "long",
                "version = 1\ndescription = \"x\"\n[parameters.wait]\ntype = \"duration\"\ndefault = \"3s\"\n[plugins.append-line]\n",
                r#"
                call("append-line", "append", #{ line: "first" });
                sleep(params.wait);
                call("append-line", "append", #{ line: "second" });
                "done"
                "#,
            ),
        ],
        &["append-line"],
    );
    let node = start_node(&dir, 4, Duration::from_millis(800)).await;
    let short = node
        .submit("short", Default::default(), false)
        .await
        .unwrap()
        .id;
    let long = node
        .submit("long", Default::default(), false)
        .await
        .unwrap()
        .id;
    // Wait until the long run has applied its first mutation.
    wait_for(Duration::from_secs(20), || async {
        std::fs::read_to_string(dir.join("lines"))
            .ok()
            .filter(|t| t.contains("first"))
    })
    .await;
    let requeued = node.shutdown().await;
    assert_eq!(requeued, 1);
    assert_eq!(
        node.store.get_run(&short).await.unwrap().status,
        RunStatus::Succeeded
    );
    let interrupted = node.store.get_run(&long).await.unwrap();
    assert_eq!(interrupted.status, RunStatus::Queued, "{interrupted:?}");
    assert_eq!(
        interrupted.reason.as_deref(),
        Some("interrupted by a shutdown; it will run again")
    );
    drop(node);

    let node = start_node(&dir, 4, Duration::from_secs(5)).await;
    let run = wait_final(&node, &long).await;
    assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.reason);
    assert_eq!(run.attempt, 2);
    // The first mutation was replayed from the journal, not applied a second time.
    assert_eq!(
        std::fs::read_to_string(dir.join("lines")).unwrap(),
        "first\nsecond\n"
    );
    let steps = node.store.steps(&long).await.unwrap();
    let statuses: Vec<StepStatus> = steps
        .iter()
        .filter(|s| s.kind == "call")
        .map(|s| s.status)
        .collect();
    assert_eq!(
        statuses,
        [
            StepStatus::Succeeded,
            StepStatus::Replayed,
            StepStatus::Succeeded
        ]
    );
    node.shutdown().await;
}

#[tokio::test]
async fn a_run_left_running_by_a_crash_is_requeued_at_start() {
    let dir = node_dir(
        "",
        &[("quick", "version = 1\ndescription = \"x\"\n", "7")],
        &[],
    );
    let node = start_node(&dir, 0, Duration::from_secs(1)).await;
    let id = node
        .submit("quick", Default::default(), false)
        .await
        .unwrap()
        .id;
    // Simulate a crash after the claim: the run is `running` with no process behind it.
    let claimed = node.store.claim("crashed-node", 1, 30_000).await.unwrap();
    assert_eq!(claimed[0].id, id);
    drop(node);
    let node = start_node(&dir, 2, Duration::from_secs(5)).await;
    let run = wait_final(&node, &id).await;
    assert_eq!(run.status, RunStatus::Succeeded);
    assert_eq!(run.attempt, 2);
    node.shutdown().await;
}
