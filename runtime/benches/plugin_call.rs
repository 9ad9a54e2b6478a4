//! What one plugin call costs, next to what a process-per-action tool pays to start a process.
//!
//! Run with `cargo bench -p runloom --bench plugin_call`. Three measurements, each timed one
//! operation at a time after a warm-up, reported as p50/p90/p99/mean:
//!
//! - a warm call of the standard `hello` plugin's `greet` action through
//!   `PluginHost::call`: a fresh `Store`, instantiation, the call, JSON in and out, with
//!   default limits. It runs inside a task on a multi-thread tokio runtime, as a server's
//!   request handler would.
//!   Calls above 50 µs are listed with their time on the calling thread's CPU clock and what
//!   its counters show, beside a control: a loop of register arithmetic as long as the
//!   warm-up calls' median, timed the same way right after each call, whose slow runs are
//!   the machine's;
//! - spawning `/bin/true` and waiting for it to exit;
//! - spawning `python3 -c pass` and waiting for it (skipped, with a note, without python3).
//!
//! The plugin call is `common/plugin.rs`, the spawning `common/process.rs`, both shared with
//! the suite. A small harness of its own rather than criterion: one `Instant` pair per
//! operation gives the tail percentiles the targets are written in, and adds no dependency.

// A benchmark reports a broken setup by panicking; there is no caller to hand an error to.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use common::process::{python3, spawn_and_wait};
use common::{Sample, print_table, time_sync};
use common::{plugin, process};
use std::time::Instant;

fn bench_plugin_call() -> Sample {
    // Multi-thread, as `runloom serve` runs; on this class of machine that is two workers.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let plugin::WarmCalls { calls, control } =
        plugin::warm_calls(&rt, plugin::WARMUP, plugin::ITERS);
    println!(
        "plugin calls: {}",
        plugin::summary(&calls, plugin::NEVER_ABOVE)
    );
    for line in plugin::describe_slow(&calls, plugin::NEVER_ABOVE) {
        println!("  {line}");
    }
    println!(
        "control, a CPU-only loop as long as a call's median, run after each call: {}",
        plugin::summary(&control, plugin::NEVER_ABOVE)
    );
    for line in plugin::describe_slow(&control, plugin::NEVER_ABOVE) {
        println!("  {line}");
    }
    Sample::new(
        "plugin call (hello.greet)",
        calls.iter().map(|c| c.took).collect(),
    )
}

fn main() {
    // `cargo bench` passes `--bench`; a filter or other flags mean nothing to this harness.
    let started = Instant::now();
    let plugin = bench_plugin_call();
    let mut samples = vec![Sample::new(
        "spawn /bin/true",
        time_sync(process::SPAWN_WARMUP, process::SPAWN_ITERS, || {
            spawn_and_wait("/bin/true", &[])
        }),
    )];
    match python3() {
        Some(python) => {
            println!("python3: {python}");
            samples.push(Sample::new(
                "spawn python3 -c pass",
                time_sync(process::PYTHON_WARMUP, process::PYTHON_ITERS, || {
                    spawn_and_wait(&python, &["-c", "pass"])
                }),
            ));
        }
        None => println!("python3 not found: skipping `spawn python3 -c pass`"),
    }

    let base = plugin.percentile(50.0);
    let workers = std::thread::available_parallelism().map_or(1, usize::from);
    println!(
        "plugin calls: one at a time in a task on a multi-thread tokio runtime, {workers} workers"
    );
    println!();
    let all: Vec<&Sample> = std::iter::once(&plugin).chain(&samples).collect();
    print_table(&all, Some(base));
    println!();
    println!(
        "target: plugin call p50 ≤ 25 µs (ceiling 50 µs) and ≥ 20× cheaper than a process; \
         took {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
