//! What every benchmark shares. This file is the timing harness: per-operation samples,
//! nearest-rank percentiles, and one table format. Small on purpose: one `Instant` pair per
//! operation gives the tail percentiles Runloom's targets are written in, and adds no
//! dependency. The modules hold the measurements more than one bench makes:
//!
//! - `process`: spawning a process per action (the baselines), memory read from `/proc`;
//! - `plugin`: warm plugin calls;
//! - `runbook`: a Rhai runbook making three plugin calls, run through the executor;
//! - `alerts`: Alertmanager notifications over HTTP, a receiver for the remediation, a node
//!   in process, sustained load with every alert accounted for;
//! - `load`: a thread of its own for the load generator, whose CPU is counted apart;
//! - `server`: a `runloom serve` process (or any server that prints its address);
//! - `site`: scratch directories, runbooks and compiled caches on disk;
//! - `baseline`: a minimal Python webhook receiver that spawns a process per action;
//! - `postgres`: a fresh database per measurement.

#![allow(dead_code, reason = "each bench uses the parts it needs")]

/// The `runloom` binary's allocator, so in-process figures measure what ships.
#[global_allocator]
static ALLOCATOR: runloom::alloc::MiMalloc = runloom::alloc::MiMalloc;

pub(crate) mod alerts;
pub(crate) mod baseline;
pub(crate) mod load;
pub(crate) mod plugin;
pub(crate) mod postgres;
pub(crate) mod process;
pub(crate) mod runbook;
pub(crate) mod server;
pub(crate) mod site;

use std::time::{Duration, Instant};

/// Sorted per-operation durations of one measurement.
pub(crate) struct Sample {
    /// What was measured.
    pub(crate) name: String,
    /// Durations, ascending.
    pub(crate) sorted: Vec<Duration>,
}

impl Sample {
    /// A sample named `name` from unsorted `times`.
    pub(crate) fn new(name: impl Into<String>, mut times: Vec<Duration>) -> Self {
        times.sort_unstable();
        Self {
            name: name.into(),
            sorted: times,
        }
    }

    /// Nearest-rank percentile.
    pub(crate) fn percentile(&self, p: f64) -> Duration {
        let rank = ((p / 100.0) * self.sorted.len() as f64).ceil() as usize;
        self.sorted[rank.clamp(1, self.sorted.len()) - 1]
    }

    /// Arithmetic mean.
    pub(crate) fn mean(&self) -> Duration {
        self.sorted.iter().sum::<Duration>() / self.sorted.len() as u32
    }
}

/// Time `op` once per iteration, after `warmup` untimed runs.
pub(crate) fn time_sync(warmup: usize, iters: usize, mut op: impl FnMut()) -> Vec<Duration> {
    for _ in 0..warmup {
        op();
    }
    (0..iters)
        .map(|_| {
            let start = Instant::now();
            op();
            start.elapsed()
        })
        .collect()
}

/// `d` in microseconds with one decimal.
pub(crate) fn micros(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e6)
}

/// Print samples as a table; with `base`, a last column gives each p50 relative to it.
pub(crate) fn print_table(samples: &[&Sample], base: Option<Duration>) {
    let width = samples
        .iter()
        .map(|s| s.name.len())
        .max()
        .unwrap_or(9)
        .max(9);
    print!(
        "{:<width$} {:>7} {:>10} {:>10} {:>10} {:>10}",
        "operation", "n", "p50 µs", "p90 µs", "p99 µs", "mean µs"
    );
    if base.is_some() {
        print!(" {:>12}", "p50 / base");
    }
    println!();
    for s in samples {
        let p50 = s.percentile(50.0);
        print!(
            "{:<width$} {:>7} {:>10} {:>10} {:>10} {:>10}",
            s.name,
            s.sorted.len(),
            micros(p50),
            micros(s.percentile(90.0)),
            micros(s.percentile(99.0)),
            micros(s.mean()),
        );
        if let Some(base) = base {
            print!(" {:>11.1}×", p50.as_secs_f64() / base.as_secs_f64());
        }
        println!();
    }
}
