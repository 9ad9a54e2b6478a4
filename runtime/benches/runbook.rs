//! A whole run end to end: a Rhai runbook making three plugin calls, with every store write
//! (run created, started, three steps opened and closed, log lines, run finished) committed to
//! a real SQLite file in WAL mode.
//!
//! Run with `cargo bench -p runloom --bench runbook`. It reports per-run latency one run at a
//! time, then throughput with 16 runs in flight, for `synchronous=FULL` (the default: an
//! acknowledged write survives power loss) and `NORMAL`. The runbook and its setup are in
//! `common/runbook.rs`, shared with the suite.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "a broken setup should panic"
)]

mod common;

use common::runbook::ThreeCalls;
use common::{Sample, print_table};
use runloom::store::Durability;
use std::time::Instant;

const WARMUP: usize = 50;
const SEQUENTIAL: usize = 500;
const CONCURRENT_RUNS: usize = 2_000;
const IN_FLIGHT: usize = 16;

async fn measure(durability: Durability) -> (Sample, f64) {
    let s = ThreeCalls::setup(durability).await;
    let times = s.sequential(WARMUP, SEQUENTIAL).await;
    let per_second = s.throughput(CONCURRENT_RUNS, IN_FLIGHT).await;
    s.remove();
    (
        Sample::new(format!("run, 3 plugin calls, {durability:?}"), times),
        per_second,
    )
}

fn main() {
    let started = Instant::now();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut samples = Vec::new();
    let mut rates = Vec::new();
    for durability in [Durability::Full, Durability::Normal] {
        let (sample, rate) = rt.block_on(measure(durability));
        rates.push((durability, rate));
        samples.push(sample);
    }
    println!("one run at a time (enqueue + execute + every store write committed):");
    print_table(&samples.iter().collect::<Vec<_>>(), None);
    println!();
    for (durability, rate) in rates {
        println!(
            "{IN_FLIGHT} runs in flight, {durability:?}: {rate:.0} runs/s ({CONCURRENT_RUNS} runs)"
        );
    }
    println!("took {:.1} s", started.elapsed().as_secs_f64());
}
