//! A whole run end to end: a Rhai runbook making three plugin calls, with every store write
//! (run created, started, three steps opened and closed, log lines, run finished) committed to
//! a real SQLite file in WAL mode.
//!
//! Run with `cargo bench -p runloom --bench runbook`. It reports per-run latency one run at a
//! time, then throughput with 16 runs in flight, for `synchronous=FULL` (the default: an
//! acknowledged write survives power loss) and `NORMAL`.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "a broken setup should panic"
)]

mod common;

use common::{Sample, print_table};
use runloom::catalog::Prepared;
use runloom::config::Config;
use runloom::executor::{Executor, RunRequest};
use runloom::plugin::{HostConfig, PluginHost, Registry};
use runloom::run::RunStatus;
use runloom::store::{Durability, Store};
use std::sync::Arc;
use std::time::Instant;
use tokio_util::sync::CancellationToken;

const WARMUP: usize = 50;
const SEQUENTIAL: usize = 500;
const CONCURRENT_RUNS: usize = 2_000;
const IN_FLIGHT: usize = 16;

const RUNBOOK: &str = "version = 1\ndescription = \"Three greetings.\"\n[plugins.hello]\n";
const BODY: &str = r#"
let a = call("hello", "greet", #{ name: "one" });
let b = call("hello", "greet", #{ name: "two" });
let c = call("hello", "greet", #{ name: "three" });
info("greeted three times");
#{ last: c.greeting }
"#;

struct Setup {
    executor: Executor,
    runbook: Arc<Prepared>,
    dir: std::path::PathBuf,
}

async fn setup(durability: Durability) -> Setup {
    let dir = std::env::temp_dir().join(format!(
        "runloom-bench-runbook-{}-{durability:?}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("runbooks/three")).unwrap();
    std::fs::write(dir.join("runbooks/three/runbook.toml"), RUNBOOK).unwrap();
    std::fs::write(dir.join("runbooks/three/main.rhai"), BODY).unwrap();
    let mut config = Config::parse("version = 1\n", &dir.join("runloom.toml")).unwrap();
    config.durability = durability;
    let host = PluginHost::new(HostConfig::default()).unwrap();
    let registry = Arc::new(Registry::load(&host, &config.plugin_dir).await);
    let store = Store::open(&config.store_url(), config.durability)
        .await
        .unwrap();
    let names = registry.plugins().map(|p| p.name().to_string()).collect();
    let ctx = runloom::runbook::LoadContext {
        config: &config,
        plugins: &names,
    };
    let runbook = Arc::new(
        runloom::catalog::prepare(&dir.join("runbooks/three"), &ctx, &host)
            .await
            .map_err(|e| format!("{e:?}"))
            .unwrap(),
    );
    let executor = Executor::new(host, registry, Arc::new(config), store);
    Setup {
        executor,
        runbook,
        dir,
    }
}

async fn one_run(s: &Setup) {
    let run = s
        .executor
        .enqueue(&s.runbook, RunRequest::manual(Default::default(), false))
        .await
        .unwrap();
    let done = s
        .executor
        .execute(s.runbook.clone(), run, CancellationToken::new(), None)
        .await
        .unwrap();
    assert_eq!(done.status, RunStatus::Succeeded, "{:?}", done.reason);
}

async fn measure(durability: Durability) -> (Sample, f64) {
    let s = Arc::new(setup(durability).await);
    for _ in 0..WARMUP {
        one_run(&s).await;
    }
    let mut times = Vec::with_capacity(SEQUENTIAL);
    for _ in 0..SEQUENTIAL {
        let start = Instant::now();
        one_run(&s).await;
        times.push(start.elapsed());
    }
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let (s, next) = (s.clone(), next.clone());
            tokio::spawn(async move {
                while next.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < CONCURRENT_RUNS {
                    one_run(&s).await;
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let per_second = CONCURRENT_RUNS as f64 / started.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&s.dir);
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
