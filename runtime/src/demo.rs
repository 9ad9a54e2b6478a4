//! `runloom demo`: the main job end to end on a fresh checkout, with nothing to set up.
//!
//! A disk fills, Alertmanager fires, Runloom cleans up, verifies, and posts what it did. The
//! demo writes the `disk-space-low` runbook (the one in `runbooks/`, embedded in this binary)
//! into a scratch directory, with a `runloom.toml` granting it only two directories there,
//! which the demo fills with old and fresh files. It starts a node on a SQLite store in that
//! directory and an HTTP receiver on 127.0.0.1 standing in for the team's chat webhook,
//! delivers a firing Alertmanager v4 payload through the node's alert intake, and prints the
//! run's steps as the store records them. Then it resolves the alert, checks what is left on
//! disk, and removes the scratch directory. Compiled plugins are cached in the configured data
//! directory, so only the first demo compiles them.

use crate::cli::ExitCode;
use crate::config::Config;
use crate::node::{Node, NodeOptions};
use crate::run::{RunRecord, RunStatus, StepStatus};
use anyhow::Context;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

const RUNBOOK_TOML: &str = include_str!("../../runbooks/disk-space-low/runbook.toml");
const RUNBOOK_BODY: &str = include_str!("../../runbooks/disk-space-low/main.rhai");

const MIB: u64 = 1 << 20;
const fn days(n: u64) -> Duration {
    Duration::from_secs(n * 86_400)
}

/// The files the demo puts in the runbook's two directories: (path, bytes, age). The old
/// ones are what the runbook should delete; the fresh ones must stay.
const OLD_FILES: [(&str, u64, Duration); 10] = [
    ("var-tmp/thumbnails/batch-0412.bin", 3 * MIB, days(40)),
    ("var-tmp/thumbnails/batch-0413.bin", 3 * MIB, days(39)),
    ("var-tmp/thumbnails/batch-0414.bin", 3 * MIB, days(38)),
    ("var-tmp/export-2026-q3.csv", 4 * MIB, days(21)),
    ("var-tmp/upload-7f3a.part", 2 * MIB, days(12)),
    ("var-tmp/upload-91cc.part", 2 * MIB, days(9)),
    ("var-log-app/app.log.4.gz", MIB / 2, days(28)),
    ("var-log-app/app.log.3.gz", MIB / 2, days(21)),
    ("var-log-app/app.log.2.gz", MIB / 2, days(14)),
    ("var-log-app/app.log.1.gz", MIB / 2, days(8)),
];
const FRESH_FILES: [(&str, u64, Duration); 2] = [
    ("var-tmp/upload-e02b.part", MIB, Duration::from_secs(600)),
    ("var-log-app/app.log", MIB / 4, Duration::from_secs(5)),
];

/// Run the demo, printing as it goes. Exits 0 when the loop worked end to end.
pub async fn run(config: &Config) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    println!(
        "Runloom demo: a disk fills, Alertmanager fires, Runloom cleans up, verifies and reports.\n"
    );

    let scratch = Scratch::new()?;
    let dir = scratch.0.clone();
    let (receiver, inbox) = start_receiver().await?;
    let config = write_site(&dir, config, receiver)?;
    let old_bytes: u64 = OLD_FILES.iter().map(|(_, len, _)| len).sum();
    println!("Setting up in {} (removed afterwards):", dir.display());
    println!(
        "  {} old files ({} MiB, 8 to 40 days old) and {} fresh ones in var-tmp/ and var-log-app/",
        OLD_FILES.len(),
        old_bytes / MIB,
        FRESH_FILES.len()
    );
    println!("  the runbook disk-space-low from runbooks/, granted only those two directories");
    println!("  a webhook receiver on {receiver} standing in for the team chat");

    let loading = Instant::now();
    let node = Node::start(
        config,
        NodeOptions {
            name: "demo".into(),
            workers: 2,
            poll: Duration::from_millis(50),
            shutdown_grace: Duration::from_secs(5),
            schedule: false,
            ..NodeOptions::default()
        },
    )
    .await?;
    if let Some(e) = node.catalog.errors().first() {
        anyhow::bail!("the embedded disk-space-low runbook does not load: {e}");
    }
    println!(
        "  a node on the SQLite store data/runloom.db: {} plugins, {} runbook ({} ms{})\n",
        node.registry.plugins().count(),
        node.catalog.runbooks().count(),
        loading.elapsed().as_millis(),
        if loading.elapsed() > Duration::from_secs(2) {
            "; the first demo compiles the plugins, later ones load them from the cache"
        } else {
            ""
        }
    );

    let timeline = Timeline::new();
    let starts_at = rfc3339(now_ms() - 60_000);
    let firing = alertmanager_payload("firing", &starts_at, "0001-01-01T00:00:00Z");
    timeline.print(
        now_ms(),
        "Alertmanager → POST /hooks/alertmanager: DiskSpaceLow firing for /var on web-1:9100",
    );
    let report = node
        .ingest_alertmanager(firing.to_string().as_bytes())
        .await?;
    let queued = report
        .runs
        .first()
        .context("the alert matched no runbook")?;
    let record = follow(&node, &queued.id, &timeline, &inbox).await?;

    let resolved = alertmanager_payload("resolved", &starts_at, &rfc3339(now_ms()));
    let resolved = node
        .ingest_alertmanager(resolved.to_string().as_bytes())
        .await?;
    timeline.print(
        now_ms(),
        &format!(
            "Alertmanager → POST /hooks/alertmanager: DiskSpaceLow resolved ({} alert closed, {} queued runs cancelled, no new run)",
            resolved.resolved, resolved.cancelled
        ),
    );

    let steps = node.store.steps(&record.id).await?;
    let old_left = OLD_FILES
        .iter()
        .filter(|(path, _, _)| dir.join(path).exists())
        .count();
    let fresh_kept = FRESH_FILES
        .iter()
        .filter(|(path, _, _)| dir.join(path).exists())
        .count();
    let notified = inbox.lock().map(|i| i.len()).unwrap_or(0);
    node.shutdown().await;

    let worked = record.status == RunStatus::Succeeded
        && old_left == 0
        && fresh_kept == FRESH_FILES.len()
        && notified == 1;
    println!("\nChecked afterwards:");
    println!(
        "  on disk: {} of {} old files deleted, {} of {} fresh files kept",
        OLD_FILES.len() - old_left,
        OLD_FILES.len(),
        fresh_kept,
        FRESH_FILES.len()
    );
    println!(
        "  in the store: run {} {}, {} steps (every plugin call with its input and output), for alert {}",
        record.id,
        record.status.as_str(),
        steps.len(),
        record.alert_key.as_deref().unwrap_or("?")
    );
    println!("  at the webhook: {notified} notification");
    println!(
        "\n{} in {:.1} s. Next: read runbooks/disk-space-low/, then `runloom validate runbooks/` and `runloom plugin list`.",
        if worked { "Done" } else { "FAILED" },
        started.elapsed().as_secs_f64()
    );
    Ok(if worked {
        ExitCode::Success
    } else {
        ExitCode::Failed
    })
}

/// Print the run's progress from the store until it ends: named steps as they start, plugin
/// calls as they finish, the runbook's own log lines, and notifications as they arrive.
async fn follow(
    node: &Node,
    id: &str,
    timeline: &Timeline,
    inbox: &Inbox,
) -> anyhow::Result<RunRecord> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut shown = HashSet::new();
    let mut log_after = 0;
    let mut notices = 0;
    let mut last_pass = false;
    loop {
        // Read in the reverse of the order things happen: the webhook's inbox, the log lines,
        // the steps, then the run. Each read sees at least what preceded everything the
        // reads before it saw, so no line is printed ahead of what came before it (a step
        // ahead of the run's start, a log line ahead of its step).
        // (when, rank for ties within a millisecond, text)
        let mut events: Vec<(i64, u8, String)> = Vec::new();
        if let Ok(inbox) = inbox.lock() {
            for (at, body) in inbox.iter().skip(notices) {
                let text = body["text"].as_str().unwrap_or("(no text)");
                events.push((*at, 3, format!("✉ the webhook received: {text}")));
            }
            notices = inbox.len();
        }
        for line in node.store.logs(id, log_after, 1000).await? {
            log_after = log_after.max(line.seq);
            if line.source == "script" {
                let mark = if line.level == "info" { "" } else { "! " };
                events.push((line.ts, 3, format!("    │ {mark}{}", line.message)));
            }
        }
        for step in node.store.steps(id).await? {
            if step.kind == "group" {
                if shown.insert(("start", step.seq)) {
                    events.push((step.started_at, 4, format!("▸ {}", step.name)));
                }
                if step.status == StepStatus::Failed && shown.insert(("end", step.seq)) {
                    let at = step.ended_at.unwrap_or(step.started_at);
                    let why = step.error.unwrap_or_default();
                    events.push((at, 2, format!("✗ {} failed: {why}", step.name)));
                }
            } else if let Some(at) = step.ended_at
                && shown.insert(("end", step.seq))
            {
                events.push((
                    at,
                    2,
                    format!(
                        "    {} ({}) {} in {} ms",
                        step.name,
                        step.action_kind.as_deref().unwrap_or("call"),
                        step.status.as_str(),
                        at - step.started_at
                    ),
                ));
            }
        }
        let run = node.store.get_run(id).await?;
        if shown.insert(("queued", 0)) {
            events.push((
                run.queued_at,
                0,
                format!(
                    "alert stored; run {} of {} queued (trigger {})",
                    run.id,
                    run.runbook,
                    run.trigger_id.as_deref().unwrap_or("alert")
                ),
            ));
        }
        if let Some(at) = run.started_at
            && shown.insert(("run", 0))
        {
            events.push((at, 1, "run started on node `demo`".to_string()));
        }
        // Once the run is final, one more pass reads what it wrote after this pass's reads
        // of its lines and steps; then its end is printed.
        if last_pass {
            let at = run.ended_at.unwrap_or_else(now_ms);
            let took = run
                .started_at
                .map(|s| format!(" in {} ms", at - s))
                .unwrap_or_default();
            let why = run
                .reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default();
            events.push((at, 5, format!("run {}{took}{why}", run.status.as_str())));
        }
        events.sort_by_key(|(at, rank, _)| (*at, *rank));
        for (at, _, text) in &events {
            timeline.print(*at, text);
        }
        if last_pass {
            return Ok(run);
        }
        if run.status.is_final() {
            last_pass = true;
            continue;
        }
        if Instant::now() > deadline {
            anyhow::bail!("run {id} did not finish within a minute");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Lines stamped with the time since the alert arrived.
struct Timeline {
    start: i64,
}

impl Timeline {
    fn new() -> Self {
        Self { start: now_ms() }
    }

    fn print(&self, at: i64, text: &str) {
        println!("  {:>+6} ms  {text}", at - self.start);
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A directory under the system's temporary directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> anyhow::Result<Scratch> {
        let dir = std::env::temp_dir().join(format!("runloom-demo-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The runbook, its grants, its secret and the files to clean, in `dir`; returns the node's
/// configuration. Compiled plugins are shared with `config`'s cache.
fn write_site(
    dir: &Path,
    config: &Config,
    receiver: std::net::SocketAddr,
) -> anyhow::Result<Config> {
    let runbook = dir.join("runbooks/disk-space-low");
    std::fs::create_dir_all(&runbook)?;
    std::fs::write(runbook.join("runbook.toml"), RUNBOOK_TOML)?;
    std::fs::write(runbook.join("main.rhai"), RUNBOOK_BODY)?;
    std::fs::write(
        dir.join("notify-webhook"),
        format!("http://{receiver}/hooks/chat"),
    )?;
    let now = SystemTime::now();
    for (path, len, age) in OLD_FILES.iter().chain(FRESH_FILES.iter()) {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, vec![0u8; usize::try_from(*len)?])?;
        std::fs::File::options()
            .write(true)
            .open(&path)?
            .set_modified(now.checked_sub(*age).unwrap_or(now))?;
    }
    std::fs::create_dir_all(dir.join("data"))?;
    // Share the compiled-plugin cache: only the first demo compiles the plugins.
    if std::fs::create_dir_all(config.cache_dir()).is_ok() {
        let cache = std::path::absolute(config.cache_dir())?;
        std::os::unix::fs::symlink(cache, dir.join("data/cache"))?;
    }
    let d = dir.display();
    let text = format!(
        r#"version = 1
data_dir = "data"
runbook_dir = "runbooks"

[plugins.disk-check]
dirs = ["{d}/var-tmp:/cleanup/tmp:ro"]

[plugins.remediate]
dirs = ["{d}/var-tmp:/cleanup/tmp:rw", "{d}/var-log-app:/cleanup/logs:rw"]

[plugins.notify]
hosts = ["{receiver}"]

[secrets.notify-webhook]
file = "{d}/notify-webhook"
"#
    );
    let path = dir.join("runloom.toml");
    std::fs::write(&path, &text)?;
    Ok(Config::parse(&text, &path)?)
}

/// What the webhook receiver got: when, and the JSON body.
type Inbox = Arc<Mutex<Vec<(i64, Value)>>>;

async fn start_receiver() -> anyhow::Result<(std::net::SocketAddr, Inbox)> {
    use axum::{body::Bytes, extract::State, http::StatusCode};
    async fn receive(State(inbox): State<Inbox>, body: Bytes) -> StatusCode {
        let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if let Ok(mut inbox) = inbox.lock() {
            inbox.push((now_ms(), body));
        }
        StatusCode::OK
    }
    let inbox = Inbox::default();
    let app = axum::Router::new()
        .fallback(axum::routing::post(receive))
        .with_state(inbox.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "demo webhook receiver stopped");
        }
    });
    Ok((addr, inbox))
}

/// An Alertmanager v4 webhook body for `DiskSpaceLow` on /var of web-1, as Alertmanager sends
/// it for a node_exporter rule (`endsAt` is the zero time while firing).
fn alertmanager_payload(status: &str, starts_at: &str, ends_at: &str) -> Value {
    let labels = json!({
        "alertname": "DiskSpaceLow",
        "device": "/dev/vda1",
        "fstype": "ext4",
        "instance": "web-1:9100",
        "job": "node",
        "mountpoint": "/var",
        "severity": "critical",
    });
    let annotations = json!({ "summary": "free space below 5% on /var" });
    json!({
        "receiver": "runloom",
        "status": status,
        "alerts": [{
            "status": status,
            "labels": labels,
            "annotations": annotations,
            "startsAt": starts_at,
            "endsAt": ends_at,
            "generatorURL": "http://prometheus.example:9090/graph?g0.expr=node_filesystem_avail_bytes%7Bmountpoint%3D%22%2Fvar%22%7D+%2F+node_filesystem_size_bytes+%3C+0.05",
            "fingerprint": "d15c5ace1041de40",
        }],
        "groupLabels": { "alertname": "DiskSpaceLow", "instance": "web-1:9100" },
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": "http://alertmanager.example:9093",
        "version": "4",
        "groupKey": "{}:{alertname=\"DiskSpaceLow\", instance=\"web-1:9100\"}",
        "truncatedAlerts": 0,
    })
}
