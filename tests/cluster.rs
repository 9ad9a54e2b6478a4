//! Several `runloom serve` processes on one PostgreSQL database: a shared queue where every
//! run executes exactly once, recovery of a killed node's runs, fencing of a stalled node's
//! late result, exactly-once cron ticks, and one run for an alert posted to every node.
//!
//! These need PostgreSQL: the URL comes from `RUNLOOM_TEST_POSTGRES_URL` (set by `.ci/run`);
//! without it they print why and pass without checking anything.

use crate::support::wait_for;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection, Row};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const FIRING: &str = include_str!("cases/alertmanager/firing.json");

/// Runbooks every node loads.
const RUNBOOKS: &[(&str, &str, &str)] = &[
    (
        "quick",
        "version = 1\ndescription = \"A short run.\"\n[parameters.n]\ntype = \"int\"\nrequired = true\n[policy]\nconcurrency = 100\n",
        r#"sleep("5ms"); log("ran " + params.n); params.n"#,
    ),
    (
        "slow",
        "version = 1\ndescription = \"A run that takes a while.\"\n",
        r#"sleep("4s"); "done""#,
    ),
    (
        "ticker",
        "version = 1\ndescription = \"Every second.\"\n[[trigger]]\nkind = \"cron\"\nschedule = \"* * * * * *\"\noverlap = \"allow\"\n",
        "1",
    ),
    (
        "disk-alert",
        "version = 1\ndescription = \"Reacts to DiskSpaceLow.\"\n[[trigger]]\nkind = \"alert\"\nmatchers = ['alertname=\"DiskSpaceLow\"']\n",
        r#"sleep("200ms"); "handled""#,
    ),
];

/// A directory of runbooks shared by the nodes of one test.
fn runbook_dir(root: &Path, with_cron: bool) -> PathBuf {
    let dir = root.join("runbooks");
    for (name, toml, body) in RUNBOOKS {
        if *name == "ticker" && !with_cron {
            continue;
        }
        let d = dir.join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("runbook.toml"), toml).unwrap();
        std::fs::write(d.join("main.rhai"), body).unwrap();
    }
    dir
}

/// One `runloom serve` process.
struct ServeNode {
    name: String,
    url: String,
    child: Child,
    stderr: PathBuf,
}

impl ServeNode {
    fn start(root: &Path, name: &str, store: &str, runbooks: &Path) -> ServeNode {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        // One compiled-plugin cache for every node and test: compiling is slow.
        let data = std::env::temp_dir().join("runloom-cluster-data");
        let config = dir.join("runloom.toml");
        std::fs::write(
            &config,
            format!(
                "version = 1\nrunbook_dir = \"{}\"\ndata_dir = \"{}\"\n[store]\nurl = \"{store}\"\n\
                 [server]\nlisten = \"127.0.0.1:{port}\"\nname = \"{name}\"\nlease = \"2s\"\nworkers = 8\nshutdown_grace = \"1s\"\n",
                runbooks.display(),
                data.display(),
            ),
        )
        .unwrap();
        let stderr = dir.join("stderr.log");
        let child = Command::new(env!("CARGO_BIN_EXE_runloom"))
            .args(["serve", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        ServeNode {
            name: name.to_string(),
            url: format!("http://127.0.0.1:{port}"),
            child,
            stderr,
        }
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.id()).unwrap())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for ServeNode {
    fn drop(&mut self) {
        let _ = kill(self.pid(), Signal::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start `n` nodes and wait until each answers `/healthz`.
async fn cluster(root: &Path, store: &str, runbooks: &Path, n: usize) -> Vec<ServeNode> {
    let nodes: Vec<ServeNode> = (0..n)
        .map(|i| ServeNode::start(root, &format!("node-{i}"), store, runbooks))
        .collect();
    let http = reqwest::Client::new();
    for node in &nodes {
        let url = format!("{}/healthz", node.url);
        let started = Instant::now();
        loop {
            if let Ok(r) = http.get(&url).send().await
                && r.status().is_success()
            {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "{} did not come up; its log:\n{}",
                node.name,
                node.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    nodes
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "runloom-cluster-{name}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn post(http: &reqwest::Client, url: &str, body: Value) -> Value {
    let r = http.post(url).json(&body).send().await.unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    assert!(status.is_success(), "{url}: {status} {text}");
    serde_json::from_str(&text).unwrap()
}

/// (status, node, attempt) of a run.
async fn run_row(db: &mut PgConnection, id: &str) -> (String, Option<String>, i64) {
    let r = sqlx::query("SELECT status, node, attempt FROM runs WHERE id = $1")
        .bind(id)
        .fetch_one(db)
        .await
        .unwrap();
    (r.get(0), r.get(1), r.get(2))
}

fn run_id(answer: &Value) -> String {
    answer["id"]
        .as_str()
        .or_else(|| answer["run"]["id"].as_str())
        .unwrap_or_else(|| panic!("no run id in {answer}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_the_queue_cron_ticks_and_alerts_each_exactly_once() {
    let Some(store) = crate::support::fresh_postgres("cluster").await else {
        return;
    };
    let root = scratch("shared");
    let runbooks = runbook_dir(&root, true);
    let nodes = cluster(&root, &store, &runbooks, 3).await;
    let mut db = PgConnection::connect(&store).await.unwrap();
    let http = reqwest::Client::new();

    // One alert posted to every node at once (Alertmanager HA sends one per peer): one run.
    let body: Value = serde_json::from_str(FIRING).unwrap();
    let posts = nodes.iter().map(|n| {
        let (http, body) = (http.clone(), body.clone());
        let url = format!("{}/hooks/alertmanager", n.url);
        async move { post(&http, &url, body).await }
    });
    futures_join_all(posts).await;

    // A thousand runs queued through all three nodes.
    let mut ids = Vec::new();
    for chunk in (0..1000).collect::<Vec<i64>>().chunks(50) {
        let posts = chunk.iter().map(|&n| {
            let http = http.clone();
            let url = format!(
                "{}/api/v1/runbooks/quick/runs",
                nodes[usize::try_from(n).unwrap() % 3].url
            );
            async move { run_id(&post(&http, &url, json!({"params": {"n": n}})).await) }
        });
        ids.extend(futures_join_all(posts).await);
    }
    wait_for(Duration::from_secs(180), || {
        let store = store.clone();
        async move {
            let mut db = PgConnection::connect(&store).await.unwrap();
            let left: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM runs WHERE runbook = 'quick' AND status IN ('queued', 'running')",
            )
            .fetch_one(&mut db)
            .await
            .unwrap();
            (left == 0).then_some(())
        }
    })
    .await;
    let rows =
        sqlx::query("SELECT status, attempt, node, output FROM runs WHERE runbook = 'quick'")
            .fetch_all(&mut db)
            .await
            .unwrap();
    assert_eq!(rows.len(), 1000);
    let mut per_node = std::collections::BTreeMap::<String, usize>::new();
    for r in &rows {
        let (status, attempt): (String, i64) = (r.get(0), r.get(1));
        assert_eq!(
            (status.as_str(), attempt),
            ("succeeded", 1),
            "each run executed once"
        );
        *per_node.entry(r.get::<String, _>(2)).or_default() += 1;
    }
    assert!(per_node.len() >= 2, "the queue was shared: {per_node:?}");
    // Each run logged its one execution once.
    let logged: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM logs l JOIN runs r ON r.id = l.run_id \
         WHERE r.runbook = 'quick' AND l.message LIKE 'ran %'",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(logged, 1000);
    for id in [&ids[0], &ids[999]] {
        assert_eq!(run_row(&mut db, id).await.0, "succeeded");
    }

    // The alert started exactly one run, whichever node recorded it.
    let alert_runs: Vec<String> =
        sqlx::query_scalar("SELECT status FROM runs WHERE runbook = 'disk-alert'")
            .fetch_all(&mut db)
            .await
            .unwrap();
    assert_eq!(alert_runs.len(), 1, "one alert, one run: {alert_runs:?}");
    let notifications: i64 = sqlx::query_scalar("SELECT notifications FROM alerts")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert!(
        notifications >= 3,
        "each node stored its copy: {notifications}"
    );

    // Every cron tick while three nodes ran produced one run, and no tick was dropped.
    wait_for(Duration::from_secs(30), || {
        let store = store.clone();
        async move {
            let mut db = PgConnection::connect(&store).await.unwrap();
            let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM runs WHERE runbook = 'ticker'")
                .fetch_one(&mut db)
                .await
                .unwrap();
            (n >= 4).then_some(())
        }
    })
    .await;
    let ticks: Vec<i64> = sqlx::query_scalar(
        "SELECT scheduled_at FROM runs WHERE runbook = 'ticker' ORDER BY scheduled_at",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    assert!(ticks.len() >= 3, "the scheduler ran: {ticks:?}");
    for pair in ticks.windows(2) {
        assert_eq!(
            pair[1] - pair[0],
            1000,
            "one run per tick, none missing: {ticks:?}"
        );
    }
    drop(nodes);
    let _ = std::fs::remove_dir_all(root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_run_is_recovered_and_a_stalled_nodes_late_result_is_refused() {
    let Some(store) = crate::support::fresh_postgres("cluster").await else {
        return;
    };
    let root = scratch("recovery");
    let runbooks = runbook_dir(&root, false);
    let mut nodes = cluster(&root, &store, &runbooks, 3).await;
    let mut db = PgConnection::connect(&store).await.unwrap();
    let http = reqwest::Client::new();

    // kill -9 the node running a run: another node runs it again within the lease.
    let id = run_id(
        &post(
            &http,
            &format!("{}/api/v1/runbooks/slow/runs", nodes[0].url),
            json!({}),
        )
        .await,
    );
    let holder = wait_for(Duration::from_secs(30), || {
        let store = store.clone();
        let id = id.clone();
        async move {
            let mut db = PgConnection::connect(&store).await.unwrap();
            let (status, node, _) = run_row(&mut db, &id).await;
            (status == "running").then_some(node).flatten()
        }
    })
    .await;
    let victim = nodes.iter().position(|n| n.name == holder).unwrap();
    kill(nodes[victim].pid(), Signal::SIGKILL).unwrap();
    let killed_at = Instant::now();
    let (status, node, attempt) = wait_for(Duration::from_secs(60), || {
        let store = store.clone();
        let id = id.clone();
        async move {
            let mut db = PgConnection::connect(&store).await.unwrap();
            let row = run_row(&mut db, &id).await;
            (row.0 == "succeeded").then_some(row)
        }
    })
    .await;
    assert_eq!((status.as_str(), attempt), ("succeeded", 2));
    assert_ne!(node.as_deref(), Some(holder.as_str()));
    eprintln!(
        "killed node's run finished elsewhere {:?} after the kill",
        killed_at.elapsed()
    );
    let resumed: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM logs WHERE run_id = $1 AND message LIKE '%attempt 2%'",
    )
    .bind(&id)
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(resumed, 1, "the run's log shows its second attempt");
    nodes.remove(victim);

    // SIGSTOP the node running a run past its lease: the run moves to the other node, and
    // the stalled node's result, once it wakes, is refused.
    let id = run_id(
        &post(
            &http,
            &format!("{}/api/v1/runbooks/slow/runs", nodes[0].url),
            json!({}),
        )
        .await,
    );
    let holder = wait_for(Duration::from_secs(30), || {
        let store = store.clone();
        let id = id.clone();
        async move {
            let mut db = PgConnection::connect(&store).await.unwrap();
            let (status, node, _) = run_row(&mut db, &id).await;
            (status == "running").then_some(node).flatten()
        }
    })
    .await;
    let stalled = nodes.iter().position(|n| n.name == holder).unwrap();
    kill(nodes[stalled].pid(), Signal::SIGSTOP).unwrap();
    let taker = wait_for(Duration::from_secs(30), || {
        let store = store.clone();
        let (id, holder) = (id.clone(), holder.clone());
        async move {
            let mut db = PgConnection::connect(&store).await.unwrap();
            let (status, node, attempt) = run_row(&mut db, &id).await;
            (status == "running" && attempt == 2 && node.as_deref() != Some(&holder))
                .then_some(node)
                .flatten()
        }
    })
    .await;
    // The stalled node's 4 s sleep is over by now: waking, it tries to record its result.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    kill(nodes[stalled].pid(), Signal::SIGCONT).unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (status, node, attempt) = run_row(&mut db, &id).await;
    assert_eq!(
        (status.as_str(), node.as_deref(), attempt),
        ("running", Some(taker.as_str()), 2),
        "the stalled node's late result was not recorded"
    );
    let (status, node, _) = wait_for(Duration::from_secs(30), || {
        let store = store.clone();
        let id = id.clone();
        async move {
            let mut db = PgConnection::connect(&store).await.unwrap();
            let row = run_row(&mut db, &id).await;
            (row.0 != "running").then_some(row)
        }
    })
    .await;
    assert_eq!(
        (status.as_str(), node.as_deref()),
        ("succeeded", Some(taker.as_str()))
    );
    let log = nodes[stalled].log();
    assert!(
        log.contains("another node claimed the run") || log.contains("claimed by another node"),
        "the stalled node says why its result was dropped:\n{log}"
    );
    drop(nodes);
    let _ = std::fs::remove_dir_all(root);
}

/// Await every future, concurrently, in order.
async fn futures_join_all<F>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}
