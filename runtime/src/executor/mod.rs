//! The executor: creates runs and carries them from `queued` to a final status, recording
//! every step and log line.
//!
//! A run's body (Rhai or Wasm) talks to the engine only through [`RunApi`], implemented here
//! by [`context::RunContext`]: each plugin call becomes a step with masked input and output,
//! duration, outcome and blame; retryable failures are retried with exponential backoff and
//! jitter; in a dry-run `mutate` actions are planned, not invoked; the run's deadline and
//! cancellation interrupt calls, sleeps and scripts.
//!
//! Invariant: the executor is the only writer of run state (runs, steps, logs). Triggers and
//! the API create runs through [`Executor::enqueue`] and never touch steps.

mod context;

use crate::catalog::{Body, Prepared};
use crate::config::Config;
use crate::plugin::{PluginHost, Registry, RunbookLimits};
use crate::run::{LogRecord, RunRecord, RunStatus, now_ms};
use crate::runbook::api::{BodyError, RunApi};
use crate::runbook::params;
use crate::safety::Rules;
use crate::script::ScriptLimits;
use crate::secret::{Masker, Secrets};
use crate::store::{Admission, AlertOutcome, AlertRecord, ClaimNext, RunEnd, Store};
use context::RunContext;
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub use context::LogObserver;

/// How often a running run checks the store for a cancellation requested elsewhere.
const CANCEL_POLL: Duration = Duration::from_millis(500);
/// Grace after the deadline for a body to notice it before the executor stops waiting.
const DEADLINE_GRACE: Duration = Duration::from_secs(2);

/// What a new run is for.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// Parameter values given (checked and completed with defaults here).
    pub params: Map<String, Value>,
    /// `manual`, `cron`, `alert` or `webhook`.
    pub trigger_kind: String,
    /// Which trigger of the runbook (`cron:0`, `alert:1`, `webhook:NAME`); `None` for manual.
    pub trigger_id: Option<String>,
    /// The trigger event, passed to the body as `trigger`.
    pub trigger: Value,
    /// Plan `mutate` actions instead of invoking them.
    pub dry_run: bool,
    /// The alert episode (`fingerprint@startsAt`) behind an alert-triggered run.
    pub alert_key: Option<String>,
    /// A cron run's tick: its unique key and time (Unix ms).
    pub schedule: Option<(String, i64)>,
}

impl RunRequest {
    /// A manual run with these parameters.
    pub fn manual(params: Map<String, Value>, dry_run: bool) -> Self {
        Self {
            params,
            trigger_kind: "manual".into(),
            trigger_id: None,
            trigger: serde_json::json!({"kind": "manual"}),
            dry_run,
            alert_key: None,
            schedule: None,
        }
    }
}

/// How a run ended from the worker's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The operator cancelled it: it ends `cancelled`.
    Cancel,
    /// The node is shutting down: it goes back to the queue to run again.
    Interrupt,
}

/// Why a run could not be created.
#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    /// The parameters do not fit the runbook (every problem listed).
    #[error("{}", .0.join("; "))]
    Parameters(Vec<String>),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

/// Runs runbooks. Cheap to clone; share one per process.
#[derive(Clone)]
pub struct Executor {
    inner: Arc<Inner>,
}

struct Inner {
    metrics: std::sync::OnceLock<Arc<crate::metrics::Metrics>>,
    host: PluginHost,
    registry: Arc<Registry>,
    config: Arc<Config>,
    store: Store,
    secrets: Secrets,
}

impl Executor {
    /// An executor calling plugins from `registry` through `host`, recording in `store`.
    pub fn new(
        host: PluginHost,
        registry: Arc<Registry>,
        config: Arc<Config>,
        store: Store,
    ) -> Self {
        let secrets = Secrets::new(config.secrets.clone());
        Self {
            inner: Arc::new(Inner {
                metrics: std::sync::OnceLock::new(),
                host,
                registry,
                config,
                store,
                secrets,
            }),
        }
    }

    /// Count plugin calls in `metrics`.
    pub fn with_metrics(self, metrics: Arc<crate::metrics::Metrics>) -> Self {
        let _ = self.inner.metrics.set(metrics);
        self
    }

    /// The store runs are recorded in.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The run record and admission keys for a request: parameters checked and completed, the
    /// per-target lock key rendered from the trigger and parameters.
    pub fn prepare_run(
        &self,
        runbook: &Prepared,
        request: RunRequest,
    ) -> Result<(RunRecord, Admission), EnqueueError> {
        let rb = &runbook.runbook;
        let params =
            params::resolve(&rb.parameters, &request.params).map_err(EnqueueError::Parameters)?;
        let policy = &rb.policy;
        let lock_key = policy.lock.as_ref().map(|lock| {
            let alert = request.trigger.get("alert");
            let context = serde_json::json!({
                "labels": alert.and_then(|a| a.get("labels")),
                "annotations": alert.and_then(|a| a.get("annotations")),
                "params": params,
                "body": request.trigger.get("body"),
            });
            lock.render(&context)
        });
        let mut record = RunRecord::queued(
            &rb.name,
            &rb.content_hash,
            &request.trigger_kind,
            request.trigger,
            Value::Object(params),
            request.dry_run,
        );
        let trigger_id = request
            .trigger_id
            .unwrap_or_else(|| request.trigger_kind.clone());
        record.trigger_id = Some(trigger_id.clone());
        record.lock_key = lock_key.clone();
        record.alert_key = request.alert_key.clone();
        record.scheduled_at = request.schedule.as_ref().map(|(_, at)| *at);
        // Manual runs are an operator's explicit request: the rate limit, cooldown and breaker
        // guard automation, not people. The pause, concurrency and locks still apply.
        let rules = if request.trigger_kind == "manual" {
            Rules::default()
        } else {
            Rules::from(policy)
        };
        let admission = Admission {
            trigger_id: Some(trigger_id),
            rule_key: lock_key.clone().unwrap_or_else(|| rb.name.clone()),
            lock_key,
            max_concurrency: i64::from(policy.concurrency),
            alert_key: request.alert_key,
            schedule_key: request.schedule.as_ref().map(|(key, _)| key.clone()),
            scheduled_at: request.schedule.map(|(_, at)| at),
            rules,
            skip: None,
            overlap: cron_overlap(rb, record.trigger_id.as_deref()),
        };
        Ok((record, admission))
    }

    /// Create a queued run of `runbook` directly, for `runloom run`, which executes it at once
    /// in this process. Durable when this returns.
    pub async fn enqueue(
        &self,
        runbook: &Prepared,
        request: RunRequest,
    ) -> Result<RunRecord, EnqueueError> {
        let (record, _) = self.prepare_run(runbook, request)?;
        self.inner.store.insert_run(&record).await?;
        Ok(record)
    }

    /// Record a triggered run through the safety kernel: queued for the workers, or skipped
    /// with the rule that suppressed it. `None` when another node already recorded this cron
    /// tick. Durable when this returns.
    pub async fn admit(
        &self,
        runbook: &Prepared,
        request: RunRequest,
    ) -> Result<Option<RunRecord>, EnqueueError> {
        let (record, admission) = self.prepare_run(runbook, request)?;
        Ok(self.inner.store.admit(record, admission).await?)
    }

    /// Record a run prepared with [`Executor::prepare_run`] whose admission the trigger
    /// adjusted (the scheduler records a missed cron tick as skipped). `None` when another
    /// node already recorded this cron tick. Durable when this returns.
    pub async fn admit_prepared(
        &self,
        record: RunRecord,
        admission: Admission,
    ) -> anyhow::Result<Option<RunRecord>> {
        self.inner.store.admit(record, admission).await
    }

    /// Store one alert and record the runs it starts (see [`Store::ingest_alert`]).
    pub async fn ingest_alert(
        &self,
        alert: AlertRecord,
        new_runs: Vec<(RunRecord, Admission)>,
        repeat_runs: Vec<(RunRecord, Admission)>,
    ) -> anyhow::Result<AlertOutcome> {
        self.inner
            .store
            .ingest_alert(alert, new_runs, repeat_runs)
            .await
    }

    /// Carry the run `run` of `runbook` (queued, or already claimed by a worker) to a final
    /// status and return its record. `cancel` stops it from outside; `observer` sees every log
    /// line as it is written.
    pub async fn execute(
        &self,
        runbook: Arc<Prepared>,
        run: RunRecord,
        cancel: CancellationToken,
        observer: Option<LogObserver>,
    ) -> anyhow::Result<RunRecord> {
        let executed = self
            .execute_until(
                runbook,
                run,
                cancel,
                CancellationToken::new(),
                observer,
                None,
            )
            .await?;
        Ok(executed.run)
    }

    /// Like [`Executor::execute`], and when `interrupt` fires (the node is shutting down) the
    /// run is stopped and put back in the queue instead of ending: it runs again later, and
    /// the plugin calls it completed are replayed, not repeated. With `next`, the write that
    /// records the run's end also claims the worker's next runs (see
    /// [`Store::finish_claimed_run`]); they come back in [`Executed::next`].
    pub async fn execute_until(
        &self,
        runbook: Arc<Prepared>,
        mut run: RunRecord,
        cancel: CancellationToken,
        interrupt: CancellationToken,
        observer: Option<LogObserver>,
        next: Option<ClaimNext>,
    ) -> anyhow::Result<Executed> {
        let store = &self.inner.store;
        let ended = |run: RunRecord| Executed {
            run,
            next: Vec::new(),
        };
        if run.status == RunStatus::Queued {
            let at = now_ms();
            if !store.start_run(&run.id, at).await? {
                // Cancelled (or taken) before it started.
                return Ok(ended(store.get_run(&run.id).await?));
            }
            run.status = RunStatus::Running;
            run.started_at = Some(at);
            run.attempt += 1;
        }
        let policy = runbook.runbook.policy.clone();
        let masker = Masker::default();
        // The body stops on either signal; which one fired decides how the run is recorded.
        let stop = CancellationToken::new();
        let earlier = if run.attempt > 1 {
            context::Earlier {
                steps: store.steps(&run.id).await?,
                last_log_seq: store.last_log_seq(&run.id).await?,
            }
        } else {
            context::Earlier::default()
        };
        let ctx = Arc::new(RunContext::new(
            self.inner.clone(),
            runbook.clone(),
            &run,
            masker.clone(),
            stop.clone(),
            observer,
            earlier,
        ));
        ctx.log_engine(
            "info",
            format!(
                "run {} of runbook `{}` started ({}{}{})",
                run.id,
                runbook.runbook.name,
                run.trigger_kind,
                if run.dry_run { ", dry-run" } else { "" },
                if run.attempt > 1 {
                    format!(", attempt {}", run.attempt)
                } else {
                    String::new()
                }
            ),
        );

        let stopped_by: Arc<std::sync::Mutex<Option<Stop>>> = Arc::default();
        let watcher = spawn_stop_watcher(
            store.clone(),
            run.id.clone(),
            cancel,
            interrupt,
            stop.clone(),
            stopped_by.clone(),
        );
        let api: Arc<dyn RunApi> = ctx.clone();
        let body = async {
            match &runbook.body {
                Body::Script(script) => {
                    let limits = ScriptLimits {
                        max_operations: policy.max_operations,
                        ..ScriptLimits::default()
                    };
                    script.run(api, limits).await
                }
                Body::Wasm(component) => component.run(api, RunbookLimits::default()).await,
            }
        };
        let outcome = tokio::select! {
            result = tokio::time::timeout(policy.timeout + DEADLINE_GRACE, body) => {
                result.unwrap_or(Err(BodyError::TimedOut))
            }
            () = stop.cancelled() => Err(BodyError::Cancelled),
        };
        watcher.abort();
        let stopped = stopped_by.lock().ok().and_then(|s| *s);
        if stopped == Some(Stop::Interrupt) && outcome.is_err() {
            ctx.log_engine(
                "warn",
                "interrupted by the node's shutdown; the run goes back to the queue".into(),
            );
            ctx.close_open_steps().await;
            store
                .requeue_run(
                    &run.id,
                    run.fence,
                    "interrupted by a shutdown; it will run again",
                )
                .await?;
            return Ok(ended(store.get_run(&run.id).await?));
        }
        if ctx.lost() {
            return Ok(ended(store.get_run(&run.id).await?));
        }
        let end = ctx.finish(outcome).await;
        let (recorded, next) = store
            .finish_claimed_run(&end, run.fence, &run.runbook, policy.breaker, next)
            .await?;
        if !recorded {
            tracing::warn!(run = %run.id, fence = run.fence, status = end.status.as_str(), "result not recorded: another node claimed the run after this node's lease lapsed");
            return Ok(Executed {
                run: store.get_run(&run.id).await?,
                next,
            });
        }
        // As recorded: no need to read it back.
        run.status = end.status;
        run.output = end.output;
        run.reason = end.reason;
        run.error_kind = end.error_kind;
        run.blame = end.blame;
        run.ended_at = Some(end.ended_at);
        Ok(Executed { run, next })
    }
}

/// What [`Executor::execute_until`] did.
#[derive(Debug)]
pub struct Executed {
    /// The run, as it ended (or as the store has it, if it did not end here).
    pub run: RunRecord,
    /// Runs claimed for the same worker in the write that recorded the end.
    pub next: Vec<RunRecord>,
}

/// Fire `stop` when the operator cancels (`cancel`, or a cancellation requested through the
/// store by another process or node) or the node shuts down (`interrupt`), remembering which.
fn spawn_stop_watcher(
    store: Store,
    id: String,
    cancel: CancellationToken,
    interrupt: CancellationToken,
    stop: CancellationToken,
    stopped_by: Arc<std::sync::Mutex<Option<Stop>>>,
) -> tokio::task::JoinHandle<()> {
    let set = move |why: Stop| {
        if let Ok(mut s) = stopped_by.lock() {
            *s = Some(why);
        }
        stop.cancel();
    };
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = cancel.cancelled() => return set(Stop::Cancel),
                () = interrupt.cancelled() => return set(Stop::Interrupt),
                () = tokio::time::sleep(CANCEL_POLL) => {}
            }
            if store.cancel_requested(&id).await.unwrap_or(false) {
                return set(Stop::Cancel);
            }
        }
    })
}

/// How the run ended, as stored (messages masked).
fn run_end(id: &str, outcome: Result<Value, BodyError>, masker: &Masker) -> RunEnd {
    let failed = |status, reason: String, kind: &str, blame: Option<&str>| RunEnd {
        id: id.to_string(),
        status,
        output: None,
        reason: Some(masker.mask(&reason)),
        error_kind: Some(kind.to_string()),
        blame: blame.map(str::to_string),
        ended_at: now_ms(),
    };
    match outcome {
        Ok(output) => RunEnd {
            id: id.to_string(),
            status: RunStatus::Succeeded,
            output: Some(masker.mask_json(&output)),
            reason: None,
            error_kind: None,
            blame: None,
            ended_at: now_ms(),
        },
        Err(BodyError::Failed {
            message,
            blame,
            location,
            kind,
        }) => {
            let reason = match location {
                Some(at) => format!("{at}: {message}"),
                None => message,
            };
            failed(RunStatus::Failed, reason, &kind, Some(&blame))
        }
        Err(BodyError::TimedOut) => failed(
            RunStatus::TimedOut,
            "the run's timeout passed".into(),
            "timeout",
            Some("runbook"),
        ),
        Err(BodyError::Cancelled) => {
            failed(RunStatus::Cancelled, "cancelled".into(), "cancelled", None)
        }
        Err(BodyError::Engine(m)) => failed(RunStatus::Errored, m, "engine", Some("engine")),
    }
}

/// The log line an observer sees, as a human reads it.
pub fn render_log(line: &LogRecord) -> String {
    let time = chrono::DateTime::from_timestamp_millis(line.ts)
        .map(|t| t.format("%H:%M:%S%.3f").to_string())
        .unwrap_or_default();
    let step = line.step.map(|s| format!(" step {s}")).unwrap_or_default();
    let fields: String = line
        .fields
        .iter()
        .map(|(k, v)| format!(" {k}={v}"))
        .collect();
    format!(
        "{time} {:<5} [{}{step}] {}{fields}",
        line.level, line.source, line.message
    )
}

/// The overlap policy of the cron trigger (`cron:N`) a run comes from.
fn cron_overlap(
    rb: &crate::runbook::Runbook,
    trigger_id: Option<&str>,
) -> Option<crate::runbook::Overlap> {
    let index: usize = trigger_id?.strip_prefix("cron:")?.parse().ok()?;
    match rb.triggers.get(index)? {
        crate::runbook::Trigger::Cron(c) => Some(c.overlap),
        _ => None,
    }
}
