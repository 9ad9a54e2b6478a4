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
//!
//! The node, the receiver, the posting and the accounting are `common/alerts.rs`, shared with
//! the suite.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "a broken setup should panic"
)]

mod common;

use common::alerts::{AlertNode, Receiver, fingerprints, one_at_a_time, post_all, whole_ms};
use common::{Sample, print_table};
use runloom::store::Durability;
use std::time::Instant;

const WARMUP: usize = 100;
const SEQUENTIAL: usize = 1_000;
const SUSTAINED: usize = 10_000;
const SENDERS: usize = 64;

async fn measure(durability: Durability) -> (Vec<Sample>, f64, String) {
    let receiver = Receiver::start().await;
    let b = AlertNode::start(
        &format!("serve-{durability:?}"),
        &receiver,
        durability,
        None,
    )
    .await;
    let http = reqwest::Client::new();
    let (warm, seq) = (
        fingerprints("warm", WARMUP),
        fingerprints("seq", SEQUENTIAL),
    );
    let posted = one_at_a_time(&http, &b.url, &receiver, &warm, &seq).await;
    let (mut acks, mut starts, mut dones) = (Vec::new(), Vec::new(), Vec::new());
    for p in &posted {
        acks.push(p.ack);
        starts.push(whole_ms(b.run_started_ms(&p.report).await - p.sent_ms));
        dones.push(p.done);
    }

    // Sustained: every sender posts distinct alerts as fast as it is answered.
    let load = fingerprints("load", SUSTAINED);
    let started = Instant::now();
    let posted = post_all(&http, &b.url, &load, SENDERS).await;
    b.wait_done(&receiver, WARMUP + SEQUENTIAL + SUSTAINED)
        .await;
    let elapsed = started.elapsed();
    // Every alert accounted for: one run each, succeeded, its action received once.
    let all: Vec<String> = warm.into_iter().chain(seq).chain(load).collect();
    b.account_for(&receiver, &all).await;
    let rate = SUSTAINED as f64 / elapsed.as_secs_f64();
    let note = format!(
        "{durability:?}: {SUSTAINED} alerts accepted in {:.2} s ({} answered 503 and retried), \
         all runs ended after {:.2} s",
        posted.accepted_in.as_secs_f64(),
        posted.refused,
        elapsed.as_secs_f64()
    );
    b.stop().await;
    (
        vec![
            Sample::new(format!("alert acknowledged, {durability:?}"), acks),
            Sample::new(
                format!("alert → run start (1 ms clock), {durability:?}"),
                starts,
            ),
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
