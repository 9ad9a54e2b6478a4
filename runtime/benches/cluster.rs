//! Runs per second through the shared PostgreSQL queue with one and with three `runloom
//! serve` processes, for an I/O-bound runbook (it waits 20 ms, as a check waiting on the
//! network does) and a CPU-bound one (a Rhai loop of about 5 ms).
//!
//! Run with `cargo bench -p runloom --bench cluster`. It needs PostgreSQL: the URL comes from
//! `RUNLOOM_BENCH_POSTGRES_URL` or `RUNLOOM_TEST_POSTGRES_URL` (each measurement makes its own
//! database there); without one it says so and exits.
//!
//! Each measurement queues the runs first, then starts the nodes and measures from the first
//! run's start to the last run's end, as the store recorded them; it then checks every run
//! succeeded on its first attempt (none lost, none run twice).

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "a broken setup should panic"
)]

mod common;

use common::postgres::{base_url, drop_database, fresh_database};
use common::server::Server;
use common::site::write_runbook;
use runloom::run::RunRecord;
use runloom::store::{Admission, Durability, Store};
use serde_json::json;
use sqlx::{Connection, PgConnection};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const WORKERS: usize = 16;

struct Case {
    name: &'static str,
    body: &'static str,
    runs: usize,
}

const CASES: &[Case] = &[
    Case {
        name: "io-bound (sleep 20 ms)",
        body: r#"sleep("20ms"); 1"#,
        runs: 4_000,
    },
    Case {
        name: "cpu-bound (Rhai loop)",
        body: "let x = 0; for i in 0..20000 { x += i % 7; } x",
        runs: 1_000,
    },
];

fn main() {
    let Some(base) = base_url() else {
        println!(
            "skipped: set RUNLOOM_BENCH_POSTGRES_URL (or RUNLOOM_TEST_POSTGRES_URL) to a PostgreSQL URL"
        );
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    println!(
        "{:<24} {:>6} {:>7} {:>10} {:>10} {:>9}",
        "runbook", "nodes", "runs", "seconds", "runs/s", "per node"
    );
    for case in CASES {
        for nodes in [1, 3] {
            let (secs, per_node) = rt.block_on(measure(&base, case, nodes));
            let rate = case.runs as f64 / secs;
            println!(
                "{:<24} {:>6} {:>7} {:>10.2} {:>10.0} {:>9}",
                case.name,
                nodes,
                case.runs,
                secs,
                rate,
                per_node
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("/")
            );
        }
    }
}

/// A `runloom serve` process for node `i` on `store`, its files in `root/node-{i}`.
fn start_node(root: &Path, i: usize, store: &str) -> Server {
    let dir = root.join(format!("node-{i}"));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("runloom.toml");
    std::fs::write(
        &config,
        format!(
            "version = 1\nrunbook_dir = \"{}\"\ndata_dir = \"{}\"\n[store]\nurl = \"{store}\"\n\
             [server]\nname = \"bench-{i}\"\nworkers = {WORKERS}\n",
            root.join("runbooks").display(),
            std::env::temp_dir()
                .join("runloom-bench-cluster-data")
                .display(),
        ),
    )
    .unwrap();
    Server::runloom(&config, &dir.join("stderr.log"))
}

async fn measure(base: &str, case: &Case, nodes: usize) -> (f64, Vec<i64>) {
    let url = fresh_database(base).await.unwrap();
    let root: PathBuf = std::env::temp_dir().join(format!(
        "runloom-bench-cluster-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    write_runbook(
        &root.join("runbooks"),
        "work",
        "version = 1\ndescription = \"Benchmark work.\"\n[policy]\nconcurrency = 1000\n",
        case.body,
    );

    // Queue every run before any node starts.
    let store = Store::open(&url, Durability::Full).await.unwrap();
    let admission = Admission {
        rule_key: "work".into(),
        max_concurrency: 1000,
        ..Admission::default()
    };
    let mut pending = Vec::new();
    for _ in 0..case.runs {
        let run = RunRecord::queued(
            "work",
            "bench",
            "manual",
            json!({"kind": "manual"}),
            json!({}),
            false,
        );
        let (store, admission) = (store.clone(), admission.clone());
        pending.push(tokio::spawn(
            async move { store.admit(run, admission).await },
        ));
    }
    for p in pending {
        p.await.unwrap().unwrap().unwrap();
    }

    let nodes: Vec<Server> = (0..nodes).map(|i| start_node(&root, i, &url)).collect();
    let mut db = PgConnection::connect(&url).await.unwrap();
    let started = Instant::now();
    loop {
        let left: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM runs WHERE status IN ('queued', 'running')")
                .fetch_one(&mut db)
                .await
                .unwrap();
        if left == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "{left} runs still unfinished after 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Dropping a node's `Server` kills it.
    drop(nodes);
    let (first, last, ok, once): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT MIN(started_at), MAX(ended_at), \
         COUNT(*) FILTER (WHERE status = 'succeeded'), COUNT(*) FILTER (WHERE attempt = 1) FROM runs",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    let expected = i64::try_from(case.runs).unwrap();
    assert_eq!(
        (ok, once),
        (expected, expected),
        "every run succeeded, each exactly once"
    );
    let per_node: Vec<i64> =
        sqlx::query_scalar("SELECT COUNT(*) FROM runs GROUP BY node ORDER BY node")
            .fetch_all(&mut db)
            .await
            .unwrap();
    drop(db);
    drop(store);
    drop_database(base, &url).await;
    let _ = std::fs::remove_dir_all(&root);
    ((last - first) as f64 / 1000.0, per_node)
}
