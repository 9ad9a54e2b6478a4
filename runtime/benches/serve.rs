//! Alert intake over real HTTP on 127.0.0.1: a node (SQLite store, real plugins) serving the
//! API, and Alertmanager v4 notifications posted to `/hooks/alertmanager`.
//!
//! Run with `cargo bench -p runloom --bench serve`. It measures, for `synchronous=FULL` (the
//! default) with `http-check` keeping its connection to the receiver (`keep_alive`), the same
//! with a connection per remediation, and `synchronous=NORMAL` with `keep_alive`:
//!
//! - **alert acknowledged**: from sending the POST to its 2xx (the alert and its run are
//!   durably stored by then), one alert at a time;
//! - **alert → run start**: from sending to the run's recorded start (the store's clock, whole
//!   milliseconds);
//! - **alert → remediation done**: from sending to the moment the runbook's action (an
//!   `http-check` call to a receiver in this process, on a kept connection: `keep_alive`)
//!   reaches the receiver;
//! - **sustained**: 10,000 distinct alerts from 64 concurrent senders, timed until every run
//!   has ended; then every alert is accounted for: one run each, each succeeded, each action
//!   received exactly once.
//!
//! The node, the receiver, the posting and the accounting are `common/alerts.rs`, shared with
//! the suite. The node runs 64 workers; `RUNLOOM_BENCH_WORKERS=N` sets another number (for
//! this bench and the suite alike).

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "a broken setup should panic"
)]

mod common;

use common::alerts::{KEEP_ALIVE, measure_node};
use common::{Sample, print_table};
use runloom::store::Durability;
use std::time::Duration;

const WARMUP: usize = 100;
const SEQUENTIAL: usize = 1_000;
const SUSTAINED: usize = 10_000;
const SENDERS: usize = 64;

async fn measure(durability: Durability, keep_alive: Duration) -> (Vec<Sample>, f64, String) {
    let name = format!("serve-{durability:?}");
    let sizes = (WARMUP, SEQUENTIAL, SUSTAINED);
    let f = measure_node(&name, durability, None, keep_alive, sizes, SENDERS).await;
    let rate = SUSTAINED as f64 / f.elapsed.as_secs_f64();
    let (node_cpu, load_cpu) = f.cpu;
    let per_run = |cpu: Duration| cpu.as_secs_f64() * 1e6 / SUSTAINED as f64;
    let note = format!(
        "{durability:?}, keep_alive {keep_alive:?}: {SUSTAINED} alerts accepted in {:.2} s ({} answered 503 and retried), \
         all runs ended after {:.2} s; CPU per run: node {:.0} µs, load generator {:.0} µs",
        f.load.accepted_in.as_secs_f64(),
        f.load.refused,
        f.elapsed.as_secs_f64(),
        per_run(node_cpu),
        per_run(load_cpu)
    );
    let l = f.latencies;
    (
        vec![
            Sample::new(
                format!("alert acknowledged, {durability:?}, {keep_alive:?}"),
                l.ack,
            ),
            Sample::new(
                format!("alert → run start (1 ms clock), {durability:?}, {keep_alive:?}"),
                l.start,
            ),
            Sample::new(
                format!("alert → remediation done, {durability:?}, {keep_alive:?}"),
                l.done,
            ),
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
    let runs = [
        (Durability::Full, KEEP_ALIVE),
        (Durability::Full, Duration::ZERO),
        (Durability::Normal, KEEP_ALIVE),
    ];
    for (durability, keep_alive) in runs {
        let (s, rate, note) = rt.block_on(measure(durability, keep_alive));
        samples.extend(s);
        notes.push(format!("{note}: {rate:.0} alert-triggered runs/s"));
    }
    print_table(&samples.iter().collect::<Vec<_>>(), None);
    for n in notes {
        println!("{n}");
    }
}
