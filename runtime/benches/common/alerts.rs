//! Alerts over HTTP on 127.0.0.1, end to end: Alertmanager v4 notifications posted to an
//! intake, an alert-triggered runbook `fix` whose remediation is one real `http-check` call,
//! and a [`Receiver`] that records when each remediation arrives and how often.
//!
//! The intake may be a node in this process ([`AlertNode`]), a `runloom serve` process, or a
//! baseline receiver: the posting and the accounting are the same for all of them.

use super::load::LoadThread;
use super::site::{scratch, write_runbook};
use axum::extract::{Path as UrlPath, State};
use runloom::config::Config;
use runloom::node::{Node, NodeOptions};
use runloom::run::{RunRecord, RunStatus};
use runloom::store::{Durability, RunFilter};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The alert-triggered runbook's name.
pub(crate) const RUNBOOK: &str = "fix";

/// How long `http-check` keeps its idle connection to the receiver (`keep_alive` in
/// `runloom.toml`), as one would configure a remediation endpoint called often.
pub(crate) const KEEP_ALIVE: Duration = Duration::from_secs(30);

/// Longest any wait for runs or arrivals may take before the bench gives up.
const PATIENCE: Duration = Duration::from_secs(600);

/// Where remediations arrive: `GET /done/{fingerprint}` on 127.0.0.1.
pub(crate) struct Receiver {
    /// Fingerprint → (first arrival, arrivals).
    hits: Mutex<HashMap<String, (Instant, u32)>>,
    arrived: Notify,
    port: u16,
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

impl Receiver {
    /// Listen on an ephemeral port of 127.0.0.1.
    pub(crate) async fn start() -> Arc<Receiver> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let receiver = Arc::new(Receiver {
            hits: Mutex::default(),
            arrived: Notify::new(),
            port: listener.local_addr().unwrap().port(),
        });
        let app = axum::Router::new()
            .route("/done/{fp}", axum::routing::get(done))
            .with_state(receiver.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        receiver
    }

    /// Its port on 127.0.0.1.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// The URL a remediation calls, less the fingerprint that ends it (the baselines fetch it).
    pub(crate) fn done_url(&self) -> String {
        format!("http://127.0.0.1:{}/done/", self.port)
    }

    /// When the first remediation for `fp` arrived, waiting for it.
    pub(crate) async fn arrival(&self, fp: &str) -> Instant {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let arrived = self.arrived.notified();
            if let Some((at, _)) = self.hits.lock().unwrap().get(fp) {
                return *at;
            }
            assert!(Instant::now() < deadline, "no remediation for {fp}");
            let _ = tokio::time::timeout(Duration::from_millis(50), arrived).await;
        }
    }

    /// Distinct fingerprints received so far.
    pub(crate) fn received(&self) -> usize {
        self.hits.lock().unwrap().len()
    }

    /// Wait until `n` distinct fingerprints have arrived.
    pub(crate) async fn wait_for(&self, n: usize) {
        let deadline = Instant::now() + PATIENCE;
        while self.received() < n {
            assert!(
                Instant::now() < deadline,
                "only {} of {n} remediations arrived",
                self.received()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Panics unless exactly `fps` arrived, each exactly once.
    pub(crate) fn assert_each_once(&self, fps: &[String]) {
        let hits = self.hits.lock().unwrap();
        for fp in fps {
            match hits.get(fp) {
                Some((_, 1)) => {}
                Some((_, n)) => panic!("the remediation for {fp} arrived {n} times"),
                None => panic!("the remediation for {fp} never arrived"),
            }
        }
        assert_eq!(hits.len(), fps.len(), "remediations for unknown alerts");
    }
}

/// An Alertmanager v4 notification carrying one firing alert with fingerprint `fp`.
pub(crate) fn notification(fp: &str) -> Value {
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

/// `n` distinct fingerprints starting with `prefix`.
pub(crate) fn fingerprints(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i:06}")).collect()
}

/// Write a site in `dir`: `runbooks/fix` (alert-triggered by `alertname="BenchAlert"`, the
/// fingerprint as a parameter, one `http-check` call to the receiver at `receiver_port`) and a
/// `runloom.toml` granting that call, with `server` appended to its `[server]` table and the
/// store at `store_url` (default: SQLite in `dir/data`). Returns the config's path.
pub(crate) fn write_site(
    dir: &Path,
    receiver_port: u16,
    server: &str,
    store_url: Option<&str>,
) -> PathBuf {
    write_runbook(
        &dir.join("runbooks"),
        RUNBOOK,
        "version = 1\ndescription = \"Fixes what BenchAlert reports.\"\n\
         [parameters.fp]\ntype = \"string\"\nrequired = true\n\
         [[trigger]]\nkind = \"alert\"\nmatchers = ['alertname=\"BenchAlert\"']\n\
         parameters = { fp = \"{{ labels.fp }}\" }\n\
         [plugins.http-check]\n[policy]\nconcurrency = 64\n",
        &format!(
            "let r = call(\"http-check\", \"check\", #{{ url: `http://127.0.0.1:{receiver_port}/done/${{params.fp}}`, timeout_ms: 5000 }});\n\
             if r.status != \"ok\" {{ fail(r.detail); }}\nr.status"
        ),
    );
    let store = store_url
        .map(|url| format!("[store]\nurl = \"{url}\"\n"))
        .unwrap_or_default();
    let config = dir.join("runloom.toml");
    std::fs::write(
        &config,
        format!(
            "version = 1\nrunbook_dir = \"runbooks\"\ndata_dir = \"data\"\n{store}\
             [plugins.http-check]\nhosts = [\"127.0.0.1:{receiver_port}\"]\n\
             [server]\n{server}\n"
        ),
    )
    .unwrap();
    config
}

/// A node in this process (64 workers, the real plugin host, no scheduler) serving the API on
/// 127.0.0.1, over the site of [`write_site`].
pub(crate) struct AlertNode {
    pub(crate) node: Arc<Node>,
    /// `http://…/hooks/alertmanager`.
    pub(crate) url: String,
    stop: CancellationToken,
    dir: PathBuf,
}

impl AlertNode {
    /// Start it in a scratch directory named `name`, `http-check` keeping its idle connections
    /// for `keep_alive` (zero: a connection per remediation).
    pub(crate) async fn start(
        name: &str,
        receiver: &Receiver,
        durability: Durability,
        store_url: Option<&str>,
        keep_alive: Duration,
    ) -> AlertNode {
        let dir = scratch(name);
        let path = write_site(&dir, receiver.port(), "", store_url);
        let mut config = Config::parse(&std::fs::read_to_string(&path).unwrap(), &path).unwrap();
        config.durability = durability;
        config
            .plugins
            .get_mut("http-check")
            .expect("the site grants http-check")
            .keep_alive = keep_alive;
        let node = Node::start(
            config,
            NodeOptions {
                workers: std::env::var("RUNLOOM_BENCH_WORKERS").map_or(64, |w| {
                    w.parse()
                        .expect("RUNLOOM_BENCH_WORKERS: a number of workers")
                }),
                schedule: false,
                ..NodeOptions::default()
            },
        )
        .await
        .unwrap();
        assert!(node.catalog.get(RUNBOOK).is_some(), "the runbook loaded");
        let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks/alertmanager", api.local_addr().unwrap());
        let stop = CancellationToken::new();
        tokio::spawn(runloom::api::serve(node.clone(), api, stop.clone()));
        AlertNode {
            node,
            url,
            stop,
            dir,
        }
    }

    /// When the run an intake answer reports started, in Unix ms.
    pub(crate) async fn run_started_ms(&self, report: &Value) -> i64 {
        let id = report["runs"][0]["id"].as_str().unwrap();
        let run = self.node.store.get_run(id).await.unwrap();
        run.started_at.unwrap()
    }

    /// Wait until `receiver` has seen `n` remediations and nothing is queued.
    pub(crate) async fn wait_done(&self, receiver: &Receiver, n: usize) {
        let deadline = Instant::now() + PATIENCE;
        while receiver.received() < n || self.node.store.queue_depth().await.unwrap() > 0 {
            assert!(Instant::now() < deadline, "runs did not finish");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Once every run has ended, panic unless each alert in `fps` has exactly one run,
    /// succeeded, whose remediation reached `receiver` once.
    pub(crate) async fn account_for(&self, receiver: &Receiver, fps: &[String]) {
        self.wait_done(receiver, fps.len()).await;
        self.node.store.flush().await.unwrap();
        let deadline = Instant::now() + PATIENCE;
        while self.node.running_count() > 0 {
            assert!(Instant::now() < deadline, "runs did not finish");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let runs = self
            .node
            .store
            .list_runs(&RunFilter {
                runbook: Some(RUNBOOK.into()),
                status: None,
                limit: u32::try_from(fps.len() * 2 + 10).unwrap(),
            })
            .await
            .unwrap();
        assert_one_run_each(&runs, fps);
        receiver.assert_each_once(fps);
    }

    /// Stop the API and the node and remove the scratch directory.
    pub(crate) async fn stop(self) {
        self.stop.cancel();
        self.node.shutdown().await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Panics unless `runs` are exactly one succeeded run per fingerprint in `fps`.
pub(crate) fn assert_one_run_each(runs: &[RunRecord], fps: &[String]) {
    let mut per_fp: HashMap<&str, usize> = HashMap::new();
    for run in runs {
        assert_eq!(
            run.status,
            RunStatus::Succeeded,
            "run {} ended {:?}: {:?}",
            run.id,
            run.status,
            run.reason
        );
        *per_fp
            .entry(run.params["fp"].as_str().unwrap())
            .or_default() += 1;
    }
    for fp in fps {
        match per_fp.get(fp.as_str()) {
            Some(1) => {}
            Some(n) => panic!("alert {fp} has {n} runs"),
            None => panic!("alert {fp} has no run: lost"),
        }
    }
    assert_eq!(runs.len(), fps.len(), "runs for unknown alerts");
}

/// Now, in Unix milliseconds.
pub(crate) fn unix_ms() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// One alert posted and its remediation waited for.
pub(crate) struct Posted {
    /// The fingerprint.
    pub(crate) fp: String,
    /// When it was sent, Unix ms.
    pub(crate) sent_ms: i64,
    /// Send → 2xx.
    pub(crate) ack: Duration,
    /// Send → the remediation reached the receiver.
    pub(crate) done: Duration,
    /// The intake's answer.
    pub(crate) report: Value,
}

/// Post one alert to `url` and wait for its remediation to reach `receiver`.
pub(crate) async fn post_and_wait(
    http: &reqwest::Client,
    url: &str,
    receiver: &Receiver,
    fp: &str,
) -> Posted {
    let body = notification(fp);
    let sent_ms = unix_ms();
    let sent = Instant::now();
    let answer = http.post(url).json(&body).send().await.unwrap();
    let ack = sent.elapsed();
    assert!(answer.status().is_success(), "{}", answer.status());
    let report: Value = answer.json().await.unwrap();
    let done = receiver.arrival(fp).await.duration_since(sent);
    Posted {
        fp: fp.to_string(),
        sent_ms,
        ack,
        done,
        report,
    }
}

/// `warmup` alerts untimed, then `fps` one at a time.
pub(crate) async fn one_at_a_time(
    http: &reqwest::Client,
    url: &str,
    receiver: &Receiver,
    warmup: &[String],
    fps: &[String],
) -> Vec<Posted> {
    for fp in warmup {
        post_and_wait(http, url, receiver, fp).await;
    }
    let mut posted = Vec::with_capacity(fps.len());
    for fp in fps {
        posted.push(post_and_wait(http, url, receiver, fp).await);
    }
    posted
}

/// A whole-millisecond latency (clocks that record whole ms) as a duration, never negative.
pub(crate) fn whole_ms(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(ms.max(0)).unwrap())
}

/// How a load of alerts went in.
pub(crate) struct Load {
    /// Answers 503 (each retried after its Retry-After).
    pub(crate) refused: u64,
    /// From the first send until every alert was acknowledged.
    pub(crate) accepted_in: Duration,
}

/// Post one notification per fingerprint from `senders` concurrent senders, each sending the
/// next as soon as the last was answered. A 503 is retried after its `Retry-After`, as
/// Alertmanager retries a 5xx; any other answer but 2xx panics.
pub(crate) async fn post_all(
    http: &reqwest::Client,
    url: &str,
    fps: &[String],
    senders: usize,
) -> Load {
    let fps: Arc<Vec<String>> = Arc::new(fps.to_vec());
    let next = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..senders)
        .map(|_| {
            let (http, url) = (http.clone(), url.to_string());
            let (fps, next, refused) = (fps.clone(), next.clone(), refused.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(fp) = fps.get(i) else { return };
                    let body = notification(fp);
                    loop {
                        let r = http.post(&url).json(&body).send().await.unwrap();
                        if r.status().is_success() {
                            break;
                        }
                        assert_eq!(r.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
                        refused.fetch_add(1, Ordering::SeqCst);
                        let wait = r
                            .headers()
                            .get(reqwest::header::RETRY_AFTER)
                            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                            .expect("a 503 from the intake carries Retry-After in seconds");
                        tokio::time::sleep(Duration::from_secs(wait)).await;
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    Load {
        refused: refused.load(Ordering::SeqCst),
        accepted_in: started.elapsed(),
    }
}

/// Latencies of alerts posted one at a time.
pub(crate) struct Latencies {
    /// Send → 2xx.
    pub(crate) ack: Vec<Duration>,
    /// Send → the run (or the action process) started, in whole milliseconds.
    pub(crate) start: Vec<Duration>,
    /// Send → the remediation reached the receiver.
    pub(crate) done: Vec<Duration>,
}

impl Latencies {
    /// From alerts `posted` and when each one's run started (Unix ms, in the same order).
    pub(crate) fn new(posted: &[Posted], started_ms: &[i64]) -> Latencies {
        Latencies {
            ack: posted.iter().map(|p| p.ack).collect(),
            start: posted
                .iter()
                .zip(started_ms)
                .map(|(p, s)| whole_ms(s - p.sent_ms))
                .collect(),
            done: posted.iter().map(|p| p.done).collect(),
        }
    }
}

/// Post `fps` from `senders` concurrent senders (see [`post_all`]), then wait for `finished`;
/// returns how they went in and the time from the first send until `finished` completed.
pub(crate) async fn sustained(
    http: &reqwest::Client,
    url: &str,
    fps: &[String],
    senders: usize,
    finished: impl Future<Output = ()>,
) -> (Load, Duration) {
    let started = Instant::now();
    let load = post_all(http, url, fps, senders).await;
    finished.await;
    (load, started.elapsed())
}

/// What a node in this process did with alerts.
pub(crate) struct NodeFigures {
    /// Alerts posted one at a time.
    pub(crate) latencies: Latencies,
    /// The sustained load.
    pub(crate) load: Load,
    /// From its first send until every run ended.
    pub(crate) elapsed: Duration,
    /// Alerts posted in all, each verified to have one succeeded run and one remediation.
    pub(crate) alerts: usize,
    /// CPU time used during the sustained load by the node (every thread of the process
    /// but the load generator's) and by the load generator (senders and receiver).
    pub(crate) cpu: (Duration, Duration),
}

/// Start an [`AlertNode`] named `name`; post `warmup` alerts, then `iters` one at a time, then
/// `load` distinct alerts from `senders` concurrent senders until every run has ended; check
/// every alert is accounted for (one succeeded run, one remediation received); stop it. The
/// senders and the receiver run on a [`LoadThread`], the node on the caller's runtime.
pub(crate) async fn measure_node(
    name: &str,
    durability: Durability,
    store_url: Option<&str>,
    keep_alive: Duration,
    (warmup, iters, load): (usize, usize, usize),
    senders: usize,
) -> NodeFigures {
    let generator = LoadThread::start();
    let receiver = generator.run(Receiver::start()).await;
    let b = AlertNode::start(name, &receiver, durability, store_url, keep_alive).await;
    let (warm, seq) = (fingerprints("warm", warmup), fingerprints("seq", iters));
    let (url, r, w, s) = (b.url.clone(), receiver.clone(), warm.clone(), seq.clone());
    let posted = generator
        .run(async move {
            let http = reqwest::Client::new();
            one_at_a_time(&http, &url, &r, &w, &s).await
        })
        .await;
    let mut started_ms = Vec::with_capacity(posted.len());
    for p in &posted {
        started_ms.push(b.run_started_ms(&p.report).await);
    }
    let load_fps = fingerprints("load", load);
    let total = warmup + iters + load;
    let before = generator.cpu().await;
    let started = Instant::now();
    let (url, fps) = (b.url.clone(), load_fps.clone());
    let sending = generator.run(async move {
        // A client of its own, so its connections' tasks live on the load thread.
        let http = reqwest::Client::new();
        post_all(&http, &url, &fps, senders).await
    });
    let (went_in, ()) = tokio::join!(sending, b.wait_done(&receiver, total));
    let elapsed = started.elapsed();
    let cpu = before.until(generator.cpu().await);
    let all: Vec<String> = warm.into_iter().chain(seq).chain(load_fps).collect();
    b.account_for(&receiver, &all).await;
    b.stop().await;
    NodeFigures {
        latencies: Latencies::new(&posted, &started_ms),
        load: went_in,
        elapsed,
        alerts: all.len(),
        cpu,
    }
}
