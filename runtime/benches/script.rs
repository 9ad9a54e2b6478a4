//! What running a Rhai runbook body costs the engine, per run.
//!
//! Run with `cargo bench -p runloom --bench script`. Each measurement is timed one run at a
//! time after a warm-up and reported as p50/p90/p99/mean:
//!
//! - a run of a small precompiled script making 3 host calls (`call`) against a trivial
//!   [`RunApi`] that answers at once: starting the script on its own stack, a fresh
//!   sandboxed engine, the constants, evaluation, three calls with JSON in and out, the
//!   output as JSON;
//! - the same where each call waits once before it answers (`yield_now`), as a real plugin
//!   call waits for its instance or its I/O: the script is suspended and resumed three times;
//! - a run of a script that makes no host call: the fixed cost of a run;
//! - a run of a loop of 1,000 additions, no host call: the per-operation cost, the
//!   progress hook's included;
//! - compiling the 3-call script, which happens once per runbook load, not per run;
//! - for scale, a bare `spawn_blocking` round trip: the hop each run made when scripts ran on
//!   tokio's blocking pool (until the ninth round in BENCHMARKS.md).
//!
//! Runs go through `Script::run` inside a task on a multi-thread tokio runtime, as the
//! executor calls it. The same small harness as `plugin_call`: one `Instant` pair per
//! operation gives the tail percentiles, and adds no dependency.

// A benchmark reports a broken setup by panicking; there is no caller to hand an error to.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use common::{Sample, print_table};
use runloom::runbook::api::{CallOptions, Level, RunApi, StepError};
use runloom::script::{Script, ScriptLimits};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

const RUN_WARMUP: usize = 2_000;
const RUN_ITERS: usize = 20_000;
const COMPILE_WARMUP: usize = 200;
const COMPILE_ITERS: usize = 5_000;

/// Three plugin calls and a map built from their outputs: a remediation in miniature.
const THREE_CALLS: &str = r#"
let before = call("disk-check", "usage", #{ path: params.path });
let cleaned = call("remediate", "clean-tmp", #{ older_than: "7d" });
let after = call("disk-check", "usage", #{ path: params.path });
#{ before: before.used_percent, after: after.used_percent, freed: cleaned.ok }
"#;

const NO_CALL: &str = "let x = 1; x + 1";

/// Operations and nothing else: the progress hook runs at every one of them (it marks the
/// stack's depth each time and looks at the clock every few hundred), so this is what the
/// hook costs a script that computes rather than calls.
const LOOP: &str = "let s = 0; for i in 0..1000 { s += i; } s";

/// A [`RunApi`] that answers at once (or after one `yield_now`), so the figures are the
/// script layer's own.
struct TrivialApi {
    parameters: Map<String, Value>,
    trigger: Value,
    output: Value,
    deadline: Instant,
    /// Each call yields once before it answers.
    waits: bool,
}

#[async_trait::async_trait]
impl RunApi for TrivialApi {
    async fn call(&self, _: &str, _: &str, _: Value, _: CallOptions) -> Result<Value, StepError> {
        if self.waits {
            tokio::task::yield_now().await;
        }
        Ok(self.output.clone())
    }
    async fn begin_step(&self, _: &str) {}
    async fn end_step(&self, _: Option<&StepError>) {}
    async fn sleep(&self, _: Duration) -> Result<(), StepError> {
        Ok(())
    }
    fn log(&self, _: Level, _: &str) {}
    async fn secret(&self, name: &str) -> Result<String, StepError> {
        Err(StepError::new(
            "denied",
            "runbook",
            format!("{name} is not granted"),
        ))
    }
    async fn history(&self, _limit: u32) -> Result<Vec<Value>, StepError> {
        Ok(Vec::new())
    }

    fn parameters(&self) -> &Map<String, Value> {
        &self.parameters
    }
    fn trigger(&self) -> &Value {
        &self.trigger
    }
    fn is_cancelled(&self) -> bool {
        false
    }
    fn deadline(&self) -> Instant {
        self.deadline
    }
}

fn bench_runs(
    rt: &tokio::runtime::Runtime,
    source: &'static str,
    expected: Value,
    waits: bool,
) -> Vec<Duration> {
    let api: Arc<dyn RunApi> = Arc::new(TrivialApi {
        parameters: json!({ "path": "/var" }).as_object().cloned().unwrap(),
        trigger: json!({ "kind": "manual" }),
        output: json!({ "used_percent": 91, "ok": true }),
        deadline: Instant::now() + Duration::from_secs(3600),
        waits,
    });
    let script = Script::compile("bench.rhai", source).expect("compile");
    rt.block_on(async move {
        // Time inside a spawned task so runs start from a worker thread, as the executor's do.
        tokio::spawn(async move {
            let limits = ScriptLimits::default();
            let first = script.run(api.clone(), limits).await.expect("run");
            assert_eq!(first, expected);
            for _ in 0..RUN_WARMUP {
                script.run(api.clone(), limits).await.expect("run");
            }
            let mut times = Vec::with_capacity(RUN_ITERS);
            for _ in 0..RUN_ITERS {
                let start = Instant::now();
                let out = script.run(api.clone(), limits).await;
                times.push(start.elapsed());
                out.expect("run");
            }
            times
        })
        .await
        .expect("benchmark task")
    })
}

fn bench_spawn_blocking(rt: &tokio::runtime::Runtime) -> Vec<Duration> {
    rt.block_on(async {
        tokio::spawn(async {
            for _ in 0..RUN_WARMUP {
                tokio::task::spawn_blocking(|| 1)
                    .await
                    .expect("blocking task");
            }
            let mut times = Vec::with_capacity(RUN_ITERS);
            for _ in 0..RUN_ITERS {
                let start = Instant::now();
                let out = tokio::task::spawn_blocking(|| 1).await;
                times.push(start.elapsed());
                out.expect("blocking task");
            }
            times
        })
        .await
        .expect("benchmark task")
    })
}

fn bench_compile() -> Vec<Duration> {
    for _ in 0..COMPILE_WARMUP {
        Script::compile("bench.rhai", THREE_CALLS).expect("compile");
    }
    (0..COMPILE_ITERS)
        .map(|_| {
            let start = Instant::now();
            let script = Script::compile("bench.rhai", THREE_CALLS);
            let elapsed = start.elapsed();
            script.expect("compile");
            elapsed
        })
        .collect()
}

fn main() {
    // `cargo bench` passes `--bench`; a filter or other flags mean nothing to this harness.
    let started = Instant::now();
    // Multi-thread, as `runloom serve` runs; on this class of machine that is two workers.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let three = || json!({ "before": 91, "after": 91, "freed": true });
    let samples = [
        Sample::new(
            "run, 3 host calls",
            bench_runs(&rt, THREE_CALLS, three(), false),
        ),
        Sample::new(
            "run, 3 host calls that wait",
            bench_runs(&rt, THREE_CALLS, three(), true),
        ),
        Sample::new(
            "run, no host call",
            bench_runs(&rt, NO_CALL, json!(2), false),
        ),
        Sample::new(
            "run, a loop of 1,000 additions",
            bench_runs(&rt, LOOP, json!(499_500), false),
        ),
        Sample::new("compile (once per load)", bench_compile()),
        Sample::new("spawn_blocking round trip", bench_spawn_blocking(&rt)),
    ];

    println!();
    print_table(&samples.iter().collect::<Vec<_>>(), None);
    println!();
    println!(
        "for scale: rhai's Engine::new() alone costs ≈ 325 µs (reference/wasm-rhai.md §3.3); \
         took {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
