//! A whole run end to end: a Rhai runbook making three plugin calls (`hello.greet`), each run
//! `Executor::enqueue` then `Executor::execute`, with every store write (run created, started,
//! three steps opened and closed, log lines, run finished) committed to a real SQLite file in
//! WAL mode through the store's writer.

use runloom::catalog::Prepared;
use runloom::config::Config;
use runloom::executor::{Executor, RunRequest};
use runloom::plugin::{HostConfig, PluginHost, Registry};
use runloom::run::RunStatus;
use runloom::store::{Durability, Store};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const RUNBOOK: &str = "version = 1\ndescription = \"Three greetings.\"\n[plugins.hello]\n";
const BODY: &str = r#"
let a = call("hello", "greet", #{ name: "one" });
let b = call("hello", "greet", #{ name: "two" });
let c = call("hello", "greet", #{ name: "three" });
info("greeted three times");
#{ last: c.greeting }
"#;

/// An executor over a fresh SQLite store, and the three-call runbook.
pub(crate) struct ThreeCalls {
    executor: Executor,
    runbook: Arc<Prepared>,
    dir: PathBuf,
}

impl ThreeCalls {
    /// Set up in a scratch directory named after `durability`.
    pub(crate) async fn setup(durability: Durability) -> Arc<ThreeCalls> {
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
        Arc::new(ThreeCalls {
            executor,
            runbook,
            dir,
        })
    }

    /// One run, enqueued and executed; panics unless it succeeded.
    pub(crate) async fn run_once(&self) {
        let run = self
            .executor
            .enqueue(&self.runbook, RunRequest::manual(Default::default(), false))
            .await
            .unwrap();
        let done = self
            .executor
            .execute(self.runbook.clone(), run, CancellationToken::new(), None)
            .await
            .unwrap();
        assert_eq!(done.status, RunStatus::Succeeded, "{:?}", done.reason);
    }

    /// `warmup` untimed runs, then `iters` timed one at a time.
    pub(crate) async fn sequential(&self, warmup: usize, iters: usize) -> Vec<Duration> {
        for _ in 0..warmup {
            self.run_once().await;
        }
        let mut times = Vec::with_capacity(iters);
        for _ in 0..iters {
            let start = Instant::now();
            self.run_once().await;
            times.push(start.elapsed());
        }
        times
    }

    /// Runs per second over `runs` runs with `in_flight` at a time.
    pub(crate) async fn throughput(self: &Arc<Self>, runs: usize, in_flight: usize) -> f64 {
        let started = Instant::now();
        let next = Arc::new(AtomicUsize::new(0));
        let workers: Vec<_> = (0..in_flight)
            .map(|_| {
                let (s, next) = (self.clone(), next.clone());
                tokio::spawn(async move {
                    while next.fetch_add(1, Ordering::SeqCst) < runs {
                        s.run_once().await;
                    }
                })
            })
            .collect();
        for w in workers {
            w.await.unwrap();
        }
        runs as f64 / started.elapsed().as_secs_f64()
    }

    /// Remove the scratch directory.
    pub(crate) fn remove(&self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs per second of `op` over `runs` runs with `in_flight` OS threads running it.
pub(crate) fn threaded_throughput(runs: usize, in_flight: usize, op: impl Fn() + Sync) -> f64 {
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..in_flight {
            s.spawn(|| {
                while next.fetch_add(1, Ordering::SeqCst) < runs {
                    op();
                }
            });
        }
    });
    runs as f64 / started.elapsed().as_secs_f64()
}
