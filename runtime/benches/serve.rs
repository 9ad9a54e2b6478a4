//! Alert intake over real HTTP on 127.0.0.1: a node (SQLite store, real plugins) serving the
//! API, and Alertmanager v4 notifications posted to `/hooks/alertmanager`.
//!
//! Run with `cargo bench -p runloom --bench serve`. It measures, for `synchronous=FULL` (the
//! default) and `NORMAL`:
//!
//! - **alert acknowledged**: from sending the POST to its 2xx (the alert and its run are
//!   durably stored by then), one alert at a time;
//! - **alert → run start**: from sending to the run's recorded start (the store's clock, whole
//!   milliseconds);
//! - **alert → remediation done**: from sending to the moment the runbook's action (an
//!   `http-check` call to a receiver in this process) reaches the receiver;
//! - **sustained**: 10,000 distinct alerts from 64 concurrent senders, timed until every run
//!   has ended; then every alert is accounted for: one run each, each succeeded, each action
//!   received exactly once.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "a broken setup should panic"
)]

mod common;

use axum::extract::{Path as UrlPath, State};
use common::{Sample, print_table};
use runloom::config::Config;
use runloom::node::{Node, NodeOptions};
use runloom::run::RunStatus;
use runloom::store::{Durability, RunFilter};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

const WARMUP: usize = 100;
const SEQUENTIAL: usize = 1_000;
const SUSTAINED: usize = 10_000;
const SENDERS: usize = 64;

/// Arrivals at the receiver: fingerprint → (when, how many times).
#[derive(Default)]
struct Receiver {
    hits: Mutex<HashMap<String, (Instant, u32)>>,
    arrived: Notify,
}

async fn done(State(r): State<Arc<Receiver>>, UrlPath(fp): UrlPath<String>) -> &'static str {
    {
        let mut hits = r.hits.lock().unwrap();
        let e = hits.entry(fp).or_insert((Instant::now(), 0));
        e.1 += 1;
    }
    r.arrived.notify_waiters();
    "done"
}

fn notification(fp: &str) -> Value {
    json!({
        "version": "4",
        "groupKey": format!("{{}}:{{alertname=\"BenchAlert\",fp=\"{fp}\"}}"),
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "runloom",
        "groupLabels": {"alertname": "BenchAlert"},
        "commonLabels": {"alertname": "BenchAlert", "fp": fp},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.example:9093",
        "alerts": [{
            "status": "firing",
            "labels": {"alertname": "BenchAlert", "fp": fp, "severity": "critical"},
            "annotations": {"summary": "benchmark"},
            "startsAt": "2026-11-23T20:12:54.442Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus.example:9090/graph",
            "fingerprint": fp,
        }],
    })
}

struct Bench {
    node: Arc<Node>,
    url: String,
    receiver: Arc<Receiver>,
    stop: CancellationToken,
    dir: std::path::PathBuf,
}

async fn setup(durability: Durability) -> Bench {
    let receiver = Arc::new(Receiver::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new()
        .route("/done/{fp}", axum::routing::get(done))
        .with_state(receiver.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = std::env::temp_dir().join(format!(
        "runloom-bench-serve-{}-{durability:?}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let rb = dir.join("runbooks/fix");
    std::fs::create_dir_all(&rb).unwrap();
    std::fs::write(
        rb.join("runbook.toml"),
        "version = 1\ndescription = \"Fixes what BenchAlert reports.\"\n\
         [parameters.fp]\ntype = \"string\"\nrequired = true\n\
         [[trigger]]\nkind = \"alert\"\nmatchers = ['alertname=\"BenchAlert\"']\n\
         parameters = { fp = \"{{ labels.fp }}\" }\n\
         [plugins.http-check]\n[policy]\nconcurrency = 64\n",
    )
    .unwrap();
    std::fs::write(
        rb.join("main.rhai"),
        format!(
            "let r = call(\"http-check\", \"check\", #{{ url: `http://127.0.0.1:{port}/done/${{params.fp}}`, timeout_ms: 5000 }});\n\
             if r.status != \"ok\" {{ fail(r.detail); }}\nr.status"
        ),
    )
    .unwrap();
    let text = format!(
        "version = 1\nrunbook_dir = \"runbooks\"\ndata_dir = \"data\"\n\
         [plugins.http-check]\nhosts = [\"127.0.0.1:{port}\"]\n"
    );
    let mut config = Config::parse(&text, &dir.join("runloom.toml")).unwrap();
    config.durability = durability;
    let node = Node::start(
        config,
        NodeOptions {
            workers: 64,
            schedule: false,
            ..NodeOptions::default()
        },
    )
    .await
    .unwrap();
    assert!(node.catalog.get("fix").is_some(), "the runbook loaded");
    let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks/alertmanager", api.local_addr().unwrap());
    let stop = CancellationToken::new();
    tokio::spawn(runloom::api::serve(node.clone(), api, stop.clone()));
    Bench {
        node,
        url,
        receiver,
        stop,
        dir,
    }
}

fn unix_ms() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// Post one alert and wait for its action to reach the receiver. Returns (ack, run start as
/// whole ms after sending, action done).
async fn one_alert(b: &Bench, http: &reqwest::Client, fp: &str) -> (Duration, i64, Duration) {
    let body = notification(fp);
    let sent_ms = unix_ms();
    let sent = Instant::now();
    let answer = http.post(&b.url).json(&body).send().await.unwrap();
    let ack = sent.elapsed();
    assert!(answer.status().is_success(), "{}", answer.status());
    let report: Value = answer.json().await.unwrap();
    let run_id = report["runs"][0]["id"].as_str().unwrap().to_string();
    let done = loop {
        let arrived = b.receiver.arrived.notified();
        if let Some((at, _)) = b.receiver.hits.lock().unwrap().get(fp) {
            break at.duration_since(sent);
        }
        let _ = tokio::time::timeout(Duration::from_millis(50), arrived).await;
    };
    let run = b.node.store.get_run(&run_id).await.unwrap();
    (ack, run.started_at.unwrap() - sent_ms, done)
}

async fn measure(durability: Durability) -> (Vec<Sample>, f64, String) {
    let b = Arc::new(setup(durability).await);
    let http = reqwest::Client::new();
    for i in 0..WARMUP {
        one_alert(&b, &http, &format!("warm{i:06}")).await;
    }
    let (mut acks, mut starts, mut dones) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..SEQUENTIAL {
        let (ack, start_ms, done) = one_alert(&b, &http, &format!("seq{i:06}")).await;
        acks.push(ack);
        starts.push(Duration::from_millis(
            u64::try_from(start_ms.max(0)).unwrap(),
        ));
        dones.push(done);
    }

    // Sustained: every sender posts distinct alerts as fast as it is answered.
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let senders: Vec<_> = (0..SENDERS)
        .map(|_| {
            let (b, http, next) = (b.clone(), http.clone(), next.clone());
            tokio::spawn(async move {
                let mut refused = 0u64;
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if i >= SUSTAINED {
                        return refused;
                    }
                    let body = notification(&format!("load{i:06}"));
                    loop {
                        let r = http.post(&b.url).json(&body).send().await.unwrap();
                        if r.status().is_success() {
                            break;
                        }
                        // 503 + Retry-After: retry, as Alertmanager does.
                        assert_eq!(r.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
                        refused += 1;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            })
        })
        .collect();
    let mut refused = 0;
    for s in senders {
        refused += s.await.unwrap();
    }
    let accepted_in = started.elapsed();
    loop {
        let hits = b.receiver.hits.lock().unwrap().len();
        if hits >= WARMUP + SEQUENTIAL + SUSTAINED && b.node.store.queue_depth().await.unwrap() == 0
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "runs did not finish"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    // Every alert accounted for: one run each, succeeded, its action received once.
    b.node.store.flush().await.unwrap();
    while b.node.running_count() > 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let runs = b
        .node
        .store
        .list_runs(&RunFilter {
            runbook: Some("fix".into()),
            status: None,
            limit: 100_000,
        })
        .await
        .unwrap();
    let total = WARMUP + SEQUENTIAL + SUSTAINED;
    assert_eq!(runs.len(), total, "one run per alert");
    assert!(runs.iter().all(|r| r.status == RunStatus::Succeeded));
    let hits = b.receiver.hits.lock().unwrap();
    assert_eq!(hits.len(), total);
    assert!(hits.values().all(|(_, n)| *n == 1), "each action ran once");
    drop(hits);
    let rate = SUSTAINED as f64 / elapsed.as_secs_f64();
    let note = format!(
        "{durability:?}: {SUSTAINED} alerts accepted in {:.2} s ({refused} answered 503 and retried), \
         all runs ended after {:.2} s",
        accepted_in.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    b.stop.cancel();
    b.node.shutdown().await;
    let _ = std::fs::remove_dir_all(&b.dir);
    (
        vec![
            Sample::new(format!("alert acknowledged, {durability:?}"), acks),
            Sample::new(format!("alert → run start (1 ms clock), {durability:?}"), starts),
            Sample::new(format!("alert → remediation done, {durability:?}"), dones),
        ],
        rate,
        note,
    )
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut samples = Vec::new();
    let mut notes = Vec::new();
    for durability in [Durability::Full, Durability::Normal] {
        let (s, rate, note) = rt.block_on(measure(durability));
        samples.extend(s);
        notes.push(format!("{note}: {rate:.0} alert-triggered runs/s"));
    }
    print_table(&samples.iter().collect::<Vec<_>>(), None);
    for n in notes {
        println!("{n}");
    }
}
