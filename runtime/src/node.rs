//! A node: one `runloom serve` process. It owns the plugin host, the catalog of runbooks, the
//! store and the executor; takes triggered runs in (alerts, webhooks, the API, the scheduler);
//! and runs a bounded pool of workers that claim queued runs and execute them.
//!
//! Queued runs live in the store, so they survive restarts: at start the node puts runs a
//! crash left `running` back in the queue, and its graceful shutdown stops taking work, lets
//! running runs finish within a grace period, and puts the rest back in the queue too.
//!
//! Invariant: every run a node starts was claimed from the store first, so the start rules
//! (concurrency, per-target locks) hold for every run however it was triggered.

use crate::catalog::{Catalog, Prepared};
use crate::config::Config;
use crate::executor::{EnqueueError, Executed, Executor, RunRequest};
use crate::metrics::Metrics;
use crate::plugin::{HostConfig, PluginHost, Registry};
use crate::run::{RunRecord, RunStatus};
use crate::store::{ClaimNext, Store, StoreError};
use crate::trigger::alert;
use anyhow::Context;
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long a busy node's workers wait to claim several runs at once.
const CLAIM_BATCHING: Duration = Duration::from_millis(2);

/// How a node works.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// Name recorded on the runs it executes; unique per node.
    pub name: String,
    /// Runs executing at once.
    pub workers: usize,
    /// How often idle workers look for queued runs when nothing woke them.
    pub poll: Duration,
    /// How long a claim is valid before another node may take the run over; renewed every
    /// quarter of it while the run goes on. On PostgreSQL a crashed node's runs are back in
    /// the queue within this time plus one renewal period.
    pub lease: Duration,
    /// How long a graceful shutdown waits for running runs before requeueing them.
    pub shutdown_grace: Duration,
    /// Whether to start the cron scheduler.
    pub schedule: bool,
    /// The `runloom` executable that compiles plugins missing from the cache, as a child
    /// process, so that the compiler's memory is never the node's; `None` compiles them in
    /// this process.
    pub plugin_compiler: Option<std::path::PathBuf>,
}

impl Default for NodeOptions {
    fn default() -> Self {
        Self {
            name: default_node_name(),
            workers: 16,
            poll: Duration::from_millis(500),
            lease: Duration::from_secs(6),
            shutdown_grace: Duration::from_secs(30),
            schedule: true,
            plugin_compiler: None,
        }
    }
}

/// `hostname` of this machine (or `runloom`) and a random suffix: node names must be unique
/// among the nodes sharing a store, since a node renews the leases of runs held in its name.
pub fn default_node_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "runloom".into());
    format!("{host}-{:04x}", rand::random::<u16>())
}

/// Why a request to the node was refused.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// No runbook of that name.
    #[error("no runbook `{0}`")]
    UnknownRunbook(String),
    /// No runbook has a webhook trigger of that name.
    #[error("no runbook has a webhook trigger named `{0}`")]
    UnknownWebhook(String),
    /// The request does not fit the runbook (parameters), or the body is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// No run of that id.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The node is shutting down and takes no new work.
    #[error("this node is shutting down")]
    ShuttingDown,
    /// The store failed.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// What one alert notification did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IntakeReport {
    /// Alerts in the notification.
    pub alerts: usize,
    /// First notifications of an episode.
    pub new: usize,
    /// Resends and HA duplicates of an episode already seen.
    pub duplicates: usize,
    /// Resolved notifications.
    pub resolved: usize,
    /// Queued runs cancelled because their alert resolved.
    pub cancelled: u64,
    /// Runs recorded: queued, or skipped with the rule that suppressed them.
    pub runs: Vec<RunSummary>,
}

/// A run as an intake or API answer shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// Run id.
    pub id: String,
    /// Runbook.
    pub runbook: String,
    /// `queued` or `skipped`.
    pub status: RunStatus,
    /// Why it was skipped.
    pub reason: Option<String>,
}

impl From<&RunRecord> for RunSummary {
    fn from(r: &RunRecord) -> Self {
        Self {
            id: r.id.clone(),
            runbook: r.runbook.clone(),
            status: r.status,
            reason: r.reason.clone(),
        }
    }
}

/// A running node. Share it as `Arc<Node>`.
pub struct Node {
    /// Configuration.
    pub config: Arc<Config>,
    /// The plugin host.
    pub host: PluginHost,
    /// Loaded plugins.
    pub registry: Arc<Registry>,
    /// Loaded runbooks.
    pub catalog: Arc<Catalog>,
    /// The store.
    pub store: Store,
    /// The executor.
    pub executor: Executor,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// How it works.
    pub options: NodeOptions,
    /// Wakes the workers when runs are queued or slots free up.
    wake: Notify,
    /// Cancellation handles of the runs executing here.
    running: Mutex<HashMap<String, CancellationToken>>,
    /// Set by shutdown: no new intake, no new claims.
    stopping: AtomicBool,
    /// Cancelled by shutdown: workers stop claiming.
    shutdown: CancellationToken,
    /// Cancelled after the grace period: runs still executing go back to the queue.
    interrupt: CancellationToken,
    /// Every task executing a run.
    tasks: TaskTracker,
}

impl Node {
    /// Load plugins and runbooks, open the store, put runs a crash left running back in the
    /// queue, and start the workers (and the scheduler, unless disabled).
    pub async fn start(config: Config, options: NodeOptions) -> anyhow::Result<Arc<Node>> {
        let config = Arc::new(config);
        let host = PluginHost::new(HostConfig {
            cache_dir: Some(config.cache_dir()),
            compiler: options.plugin_compiler.clone(),
            ..HostConfig::default()
        })?;
        let mut registry = Registry::load(&host, &config.plugin_dir).await;
        for p in registry.problems() {
            tracing::error!(origin = %p.origin, error = %p.error, "plugin not loaded");
        }
        let catalog = Arc::new(Catalog::load(&config.runbook_dir, &config, &registry, &host).await);
        for e in catalog.errors() {
            tracing::error!("runbook not loaded: {e}");
        }
        // Runs may call only the plugins their runbook declares, and the runbooks are fixed
        // for the node's life: the other plugins' compiled code is unmapped.
        let used: std::collections::BTreeSet<&str> = catalog
            .runbooks()
            .flat_map(|p| p.runbook.plugins.keys().map(String::as_str))
            .collect();
        let callable = registry.keep_code_only_for(&used);
        tracing::debug!(
            callable,
            "kept compiled code for the plugins runbooks declare"
        );
        let registry = Arc::new(registry);
        crate::alloc::release_freed_memory();
        let store = Store::open(&config.store_url(), config.durability)
            .await
            .context("opening the store")?;
        let metrics = Arc::new(Metrics::new());
        let executor = Executor::new(
            host.clone(),
            registry.clone(),
            config.clone(),
            store.clone(),
        )
        .with_metrics(metrics.clone());
        let recovered = if store.backend() == crate::store::Backend::Sqlite {
            // One node owns a SQLite store: whatever is `running` was interrupted.
            store
                .requeue_interrupted(None, "interrupted by a restart; it will run again")
                .await?
        } else {
            // Runs held in this node's name are from an earlier process of the same name; other
            // nodes' runs come back when their leases lapse.
            store
                .requeue_interrupted(
                    Some(&options.name),
                    "interrupted by a restart of its node; it will run again",
                )
                .await?
        };
        if recovered > 0 {
            tracing::warn!(runs = recovered, "requeued runs interrupted by a restart");
        }
        let node = Arc::new(Node {
            config,
            host,
            registry,
            catalog,
            store,
            executor,
            metrics,
            options,
            wake: Notify::new(),
            running: Mutex::new(HashMap::new()),
            stopping: AtomicBool::new(false),
            shutdown: CancellationToken::new(),
            interrupt: CancellationToken::new(),
            tasks: TaskTracker::new(),
        });
        tokio::spawn(node.clone().work());
        if node.options.schedule {
            crate::trigger::cron::spawn(node.clone());
        }
        tokio::spawn(node.clone().keep_leases());
        let waker = Arc::downgrade(&node);
        node.store.on_queue_hint(
            move || {
                if let Some(node) = waker.upgrade() {
                    node.wake();
                }
            },
            node.shutdown.clone(),
        );
        Ok(node)
    }

    /// Whether the node takes new work.
    pub fn is_accepting(&self) -> bool {
        !self.stopping.load(Ordering::SeqCst)
    }

    fn accepting(&self) -> Result<(), NodeError> {
        if self.is_accepting() {
            Ok(())
        } else {
            Err(NodeError::ShuttingDown)
        }
    }

    /// Cancelled when the node starts shutting down.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Runs executing on this node now.
    pub fn running_count(&self) -> usize {
        self.running.lock().map(|r| r.len()).unwrap_or(0)
    }

    /// Wake the workers: runs were queued or a slot freed up.
    pub fn wake(&self) {
        self.wake.notify_waiters();
        self.wake.notify_one();
    }

    /// The runbook called `name`.
    pub fn runbook(&self, name: &str) -> Result<&Arc<Prepared>, NodeError> {
        self.catalog
            .get(name)
            .ok_or_else(|| NodeError::UnknownRunbook(name.to_string()))
    }

    /// A manual run requested through the API, queued for the workers (or skipped if runloom
    /// is paused).
    pub async fn submit(
        &self,
        runbook: &str,
        params: Map<String, Value>,
        dry_run: bool,
    ) -> Result<RunRecord, NodeError> {
        self.accepting()?;
        let prepared = self.runbook(runbook)?;
        let record = self
            .executor
            .admit(prepared, RunRequest::manual(params, dry_run))
            .await
            .map_err(enqueue_error)?
            .context("a manual run was not recorded")?;
        self.after_admit(&record);
        Ok(record)
    }

    pub(crate) fn after_admit(&self, record: &RunRecord) {
        if record.status == RunStatus::Queued {
            self.wake();
            self.store.hint_queued();
        } else {
            self.metrics
                .run_finished(&record.runbook, record.status.as_str(), None);
        }
    }

    /// An Alertmanager webhook body: validated, then each alert stored and its runs recorded
    /// (durably) before this returns.
    pub async fn ingest_alertmanager(&self, body: &[u8]) -> Result<IntakeReport, NodeError> {
        self.accepting()?;
        let payload = alert::parse(body).map_err(NodeError::BadRequest)?;
        let mut report = IntakeReport {
            alerts: payload.alerts.len(),
            ..IntakeReport::default()
        };
        for a in &payload.alerts {
            self.metrics.alert_received(&a.status);
            let (first, repeat) = alert::plan(&self.catalog, &self.executor, &payload, a);
            let outcome = self
                .executor
                .ingest_alert(a.record(&payload), first, repeat)
                .await?;
            match outcome.disposition.as_str() {
                "new" => report.new += 1,
                "duplicate" | "stale" => {
                    report.duplicates += 1;
                    self.metrics.alert_deduplicated();
                }
                _ => report.resolved += 1,
            }
            report.cancelled += outcome.cancelled;
            for run in &outcome.runs {
                if let Some(rule) = run
                    .error_kind
                    .as_deref()
                    .filter(|_| run.status == RunStatus::Skipped)
                {
                    self.metrics.alert_throttled(rule);
                }
                self.after_admit(run);
                report.runs.push(RunSummary::from(run));
            }
        }
        Ok(report)
    }

    /// A generic webhook: runs of every runbook with a `webhook` trigger of this name.
    pub async fn ingest_webhook(
        &self,
        name: &str,
        body: Value,
    ) -> Result<Vec<RunSummary>, NodeError> {
        self.accepting()?;
        let mut out = Vec::new();
        let mut matched = false;
        for prepared in self.catalog.runbooks() {
            for (index, trigger) in prepared.runbook.triggers.iter().enumerate() {
                let crate::runbook::Trigger::Webhook(w) = trigger else {
                    continue;
                };
                if w.name != name {
                    continue;
                }
                matched = true;
                let context = serde_json::json!({ "body": body });
                let params = w
                    .parameters
                    .iter()
                    .map(|(k, source)| {
                        let v = match source {
                            crate::runbook::ParamSource::Fixed(v) => v.clone(),
                            crate::runbook::ParamSource::Template(t) => {
                                let text = t.render(&context);
                                prepared
                                    .runbook
                                    .parameter(k)
                                    .and_then(|p| p.kind.parse_cli(&text).ok())
                                    .unwrap_or(Value::String(text))
                            }
                        };
                        (k.clone(), v)
                    })
                    .collect();
                let request = RunRequest {
                    params,
                    trigger_kind: "webhook".into(),
                    trigger_id: Some(format!("webhook:{index}")),
                    trigger: serde_json::json!({"kind": "webhook", "name": name, "body": body}),
                    dry_run: false,
                    alert_key: None,
                    schedule: None,
                };
                let record = self
                    .executor
                    .admit(prepared, request)
                    .await
                    .map_err(enqueue_error)?
                    .context("a webhook run was not recorded")?;
                self.after_admit(&record);
                out.push(RunSummary::from(&record));
            }
        }
        if !matched {
            return Err(NodeError::UnknownWebhook(name.to_string()));
        }
        Ok(out)
    }

    /// Cancel a run: at once if queued; running ones (here or on another node) stop at their
    /// next step boundary.
    pub async fn cancel(&self, id: &str) -> Result<RunStatus, NodeError> {
        let status = self.store.request_cancel(id, crate::run::now_ms()).await?;
        let full = self.store.get_run(id).await?.id;
        if let Some(token) = self.running.lock().ok().and_then(|r| r.get(&full).cloned()) {
            token.cancel();
        }
        Ok(status)
    }

    /// The worker loop: claim as many queued runs as there are free workers, execute each in
    /// its own task, and wait to be woken (or poll).
    async fn work(self: Arc<Self>) {
        loop {
            if self.shutdown.is_cancelled() {
                return;
            }
            let mut free = self.options.workers.saturating_sub(self.running_count());
            if free > 0 && free < self.options.workers.div_ceil(4) {
                // Busy: let a few more runs finish so one claim takes several queued runs
                // (a claim costs the same for one run as for many). An idle node claims at once.
                tokio::time::sleep(CLAIM_BATCHING).await;
                free = self.options.workers.saturating_sub(self.running_count());
            }
            if free > 0 {
                match self
                    .store
                    .claim(&self.options.name, free, self.lease_ms())
                    .await
                {
                    Ok(runs) => {
                        for run in runs {
                            self.clone().launch(run);
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "claiming queued runs failed"),
                }
            }
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(self.options.poll) => {}
                () = self.shutdown.cancelled() => return,
            }
        }
    }

    /// The lease of a claim, in ms.
    fn lease_ms(&self) -> i64 {
        i64::try_from(self.options.lease.as_millis()).unwrap_or(i64::MAX)
    }

    /// Execute `run` in a task of its own, which keeps its worker slot for the next queued run
    /// as long as it finds one when recording a run's end.
    fn launch(self: Arc<Self>, run: RunRecord) {
        let cancel = CancellationToken::new();
        if let Ok(mut running) = self.running.lock() {
            running.insert(run.id.clone(), cancel.clone());
        }
        self.metrics.set_running(self.running_count() as i64);
        let node = self.clone();
        self.tasks.spawn(async move {
            let (mut run, mut cancel) = (run, cancel);
            loop {
                let id = run.id.clone();
                let next = node.execute_one(run, cancel).await;
                let mut next = next.into_iter();
                let successor = next.next();
                // A claim returns at most the one run asked for; were there more, they run
                // rather than sit claimed until a restart.
                for extra in next {
                    node.clone().launch(extra);
                }
                let token = CancellationToken::new();
                if let Ok(mut running) = node.running.lock() {
                    // One step, so the claim loop never sees this slot free meanwhile.
                    running.remove(&id);
                    if let Some(s) = &successor {
                        running.insert(s.id.clone(), token.clone());
                    }
                }
                match successor {
                    Some(s) => (run, cancel) = (s, token),
                    None => break,
                }
            }
            node.metrics.set_running(node.running_count() as i64);
            node.wake();
        });
    }

    /// Carry one claimed run to its end; returns the runs claimed for this worker in the
    /// same write (on SQLite, and none once the node has begun to shut down).
    async fn execute_one(&self, run: RunRecord, cancel: CancellationToken) -> Vec<RunRecord> {
        let id = run.id.clone();
        let next = Some(ClaimNext {
            node: self.options.name.clone(),
            max: 1,
            lease_ms: self.lease_ms(),
            unless: self.shutdown.clone(),
        });
        let result = match self.catalog.get(&run.runbook).cloned() {
            Some(prepared) => {
                self.executor
                    .execute_until(prepared, run, cancel, self.interrupt.clone(), None, next)
                    .await
            }
            None => self.finish_orphan(&run).await.map(|run| Executed {
                run,
                next: Vec::new(),
            }),
        };
        match result {
            Ok(Executed { run: done, next }) => {
                if done.status.is_final() {
                    let duration = done
                        .duration_ms()
                        .map(|ms| Duration::from_millis(u64::try_from(ms).unwrap_or(0)));
                    self.metrics
                        .run_finished(&done.runbook, done.status.as_str(), duration);
                }
                next
            }
            Err(e) => {
                tracing::error!(run = %id, error = %e, "run failed to execute");
                Vec::new()
            }
        }
    }

    /// On PostgreSQL: renew the leases of the runs executing here every quarter lease, stop
    /// those another node took over (this node stalled past its lease), and put back in the
    /// queue the runs of nodes whose leases lapsed. Ends once shutdown has drained the runs.
    async fn keep_leases(self: Arc<Self>) {
        if self.store.backend() != crate::store::Backend::Postgres {
            // One node owns a SQLite store: nobody takes its runs over, so there is nothing
            // to renew (a restart requeues what it left running).
            return;
        }
        let lease = self.options.lease;
        let every = (lease / 4).max(Duration::from_millis(50));
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = self.interrupt.cancelled() => return,
            }
            let mine: Vec<(String, CancellationToken)> = self
                .running
                .lock()
                .map(|r| r.iter().map(|(id, t)| (id.clone(), t.clone())).collect())
                .unwrap_or_default();
            if mine.is_empty() && self.shutdown.is_cancelled() {
                return;
            }
            let now = crate::run::now_ms();
            let until = now + i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
            let ids: Vec<String> = mine.iter().map(|(id, _)| id.clone()).collect();
            match self.store.heartbeat(&self.options.name, &ids, until).await {
                Ok(held) => {
                    for (id, token) in &mine {
                        if !held.contains(id) {
                            // Ended meanwhile, or claimed elsewhere: either way, stop it here;
                            // its writes are fenced off.
                            token.cancel();
                        }
                    }
                }
                Err(e) => tracing::error!(error = %e, "renewing run leases failed"),
            }
            if !self.shutdown.is_cancelled() {
                match self.store.requeue_expired(now).await {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::warn!(
                            runs = n,
                            "requeued runs whose node stopped renewing its lease"
                        );
                        self.wake();
                        self.store.hint_queued();
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "recovering runs with lapsed leases failed")
                    }
                }
            }
        }
    }

    /// A claimed run whose runbook is no longer loaded: it ends `errored`, saying so.
    async fn finish_orphan(&self, run: &RunRecord) -> anyhow::Result<RunRecord> {
        let end = crate::store::RunEnd {
            id: run.id.clone(),
            status: RunStatus::Errored,
            output: None,
            reason: Some(format!(
                "runbook `{}` is not loaded on node {}",
                run.runbook, self.options.name
            )),
            error_kind: Some("engine".into()),
            blame: Some("engine".into()),
            ended_at: crate::run::now_ms(),
        };
        self.store.finish_run(&end, run.fence).await?;
        Ok(self.store.get_run(&run.id).await?)
    }

    /// Graceful shutdown: take no new work, let running runs finish for up to the grace
    /// period, then stop the rest and put them back in the queue. Returns how many were
    /// requeued.
    pub async fn shutdown(&self) -> usize {
        self.stopping.store(true, Ordering::SeqCst);
        self.shutdown.cancel();
        self.tasks.close();
        let started = Instant::now();
        let grace = self.options.shutdown_grace;
        let running = self.running_count();
        if running > 0 {
            tracing::info!(runs = running, grace = ?grace, "waiting for running runs to finish");
        }
        if tokio::time::timeout(grace, self.tasks.wait()).await.is_ok() {
            return 0;
        }
        let left = self.running_count();
        tracing::warn!(runs = left, waited = ?started.elapsed(), "grace period over; requeueing the runs still going");
        self.interrupt.cancel();
        // Stopping is prompt (cancellation reaches scripts, sleeps and plugin calls); bound
        // the wait anyway so a stuck host call cannot hold the process.
        let _ = tokio::time::timeout(Duration::from_secs(10), self.tasks.wait()).await;
        left
    }
}

fn enqueue_error(e: EnqueueError) -> NodeError {
    match e {
        EnqueueError::Parameters(p) => NodeError::BadRequest(p.join("; ")),
        EnqueueError::Store(e) => NodeError::Internal(e),
    }
}
