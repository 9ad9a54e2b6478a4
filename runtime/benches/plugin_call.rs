//! What one plugin call costs, next to what a process-per-action tool pays to start a process.
//!
//! Run with `cargo bench -p runloom --bench plugin_call`. Three measurements, each timed one
//! operation at a time after a warm-up, reported as p50/p90/p99/mean:
//!
//! - a warm call of the standard `hello` plugin's `greet` action through
//!   [`PluginHost::call`]: a fresh `Store`, instantiation, the call, JSON in and out, with
//!   default limits. It runs inside a task on a multi-thread tokio runtime, as a server's
//!   request handler would;
//! - spawning `/bin/true` and waiting for it to exit;
//! - spawning `python3 -c pass` and waiting for it (skipped, with a note, without python3).
//!
//! A small harness of its own rather than criterion: one `Instant` pair per operation gives
//! the tail percentiles the targets are written in, and adds no dependency.

// A benchmark reports a broken setup by panicking; there is no caller to hand an error to.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use common::{Sample, print_table, time_sync};
use runloom::plugin::{CallRequest, HostConfig, PluginHost};
use std::process::{Command, Stdio};
use std::time::Instant;

/// Plugin calls: enough for a stable p99 in about a second.
const PLUGIN_WARMUP: usize = 2_000;
const PLUGIN_ITERS: usize = 30_000;
/// `/bin/true` takes about a millisecond to spawn and reap.
const TRUE_WARMUP: usize = 100;
const TRUE_ITERS: usize = 2_000;
/// Python takes tens of milliseconds to start.
const PYTHON_WARMUP: usize = 10;
const PYTHON_ITERS: usize = 200;

/// Spawn `program args` with no stdio and wait for it; panics unless it exits 0, so a
/// missing program cannot pass for a fast one.
fn spawn_and_wait(program: &str, args: &[&str]) {
    let status = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("spawning {program}: {e}"));
    assert!(status.success(), "{program} exited with {status}");
}

fn bench_plugin_call() -> Sample {
    // Multi-thread, as `runloom serve` runs; on this class of machine that is two workers.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let times = rt.block_on(async {
        // Default host configuration, as a server gets it; no cache directory, so the
        // component is compiled once here, outside the timed loop.
        let host = PluginHost::new(HostConfig::default()).expect("plugin host");
        assert!(host.is_pooling(), "expected the pooling allocator");
        let bytes = runloom::builtin::standard_plugins()
            .iter()
            .find(|(name, _)| *name == "hello")
            .map(|(_, bytes)| bytes.to_vec())
            .expect("the standard `hello` plugin");
        let hello = host.load("builtin:hello", bytes).await.expect("load hello");
        // Time inside a spawned task so the calls run on a worker thread, like a request
        // handler, rather than on the thread that blocks on the runtime.
        tokio::spawn(async move {
            let call = || host.call(&hello, CallRequest::new("greet", r#"{"name":"bench"}"#));
            let first = call().await.expect("greet");
            assert_eq!(first.output["greeting"], "hello, bench");
            for _ in 0..PLUGIN_WARMUP {
                call().await.expect("greet");
            }
            let mut times = Vec::with_capacity(PLUGIN_ITERS);
            for _ in 0..PLUGIN_ITERS {
                let start = Instant::now();
                let out = call().await;
                times.push(start.elapsed());
                out.expect("greet");
            }
            times
        })
        .await
        .expect("benchmark task")
    });
    Sample::new("plugin call (hello.greet)", times)
}

/// The interpreter `python3` on PATH resolves to. Version managers put a shell-script shim
/// first on PATH; spawning the real binary keeps the shim's cost out of the comparison.
fn python3() -> Option<String> {
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let path = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !path.is_empty()).then_some(path)
}

fn main() {
    // `cargo bench` passes `--bench`; a filter or other flags mean nothing to this harness.
    let started = Instant::now();
    let plugin = bench_plugin_call();
    let mut samples = vec![Sample::new(
        "spawn /bin/true",
        time_sync(TRUE_WARMUP, TRUE_ITERS, || spawn_and_wait("/bin/true", &[])),
    )];
    match python3() {
        Some(python) => {
            println!("python3: {python}");
            samples.push(Sample::new(
                "spawn python3 -c pass",
                time_sync(PYTHON_WARMUP, PYTHON_ITERS, || {
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
