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
use crate::run::{LogRecord, RunRecord, RunStatus, new_id, now_ms};
use crate::runbook::api::{BodyError, RunApi};
use crate::runbook::params;
use crate::script::ScriptLimits;
use crate::secret::{Masker, Secrets};
use crate::store::{RunEnd, Store};
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
    /// The trigger event, passed to the body as `trigger`.
    pub trigger: Value,
    /// Plan `mutate` actions instead of invoking them.
    pub dry_run: bool,
}

impl RunRequest {
    /// A manual run with these parameters.
    pub fn manual(params: Map<String, Value>, dry_run: bool) -> Self {
        Self {
            params,
            trigger_kind: "manual".into(),
            trigger: serde_json::json!({"kind": "manual"}),
            dry_run,
        }
    }
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
                host,
                registry,
                config,
                store,
                secrets,
            }),
        }
    }

    /// The store runs are recorded in.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Create a queued run of `runbook`. Durable when this returns.
    pub async fn enqueue(
        &self,
        runbook: &Prepared,
        request: RunRequest,
    ) -> Result<RunRecord, EnqueueError> {
        let rb = &runbook.runbook;
        let params =
            params::resolve(&rb.parameters, &request.params).map_err(EnqueueError::Parameters)?;
        let record = RunRecord {
            id: new_id(),
            runbook: rb.name.clone(),
            runbook_hash: rb.content_hash.clone(),
            status: RunStatus::Queued,
            trigger_kind: request.trigger_kind,
            trigger: request.trigger,
            params: Value::Object(params),
            dry_run: request.dry_run,
            reason: None,
            error_kind: None,
            blame: None,
            output: None,
            queued_at: now_ms(),
            started_at: None,
            ended_at: None,
            attempt: 0,
        };
        self.inner.store.insert_run(&record).await?;
        Ok(record)
    }

    /// Carry the queued run `run` of `runbook` to a final status and return its record.
    /// `cancel` stops it from outside; `observer` sees every log line as it is written.
    pub async fn execute(
        &self,
        runbook: Arc<Prepared>,
        run: RunRecord,
        cancel: CancellationToken,
        observer: Option<LogObserver>,
    ) -> anyhow::Result<RunRecord> {
        let store = &self.inner.store;
        if !store.start_run(&run.id, now_ms()).await? {
            // Cancelled (or taken) before it started.
            return Ok(store.get_run(&run.id).await?);
        }
        let policy = runbook.runbook.policy.clone();
        let masker = Masker::default();
        let ctx = Arc::new(RunContext::new(
            self.inner.clone(),
            runbook.clone(),
            &run,
            masker.clone(),
            cancel.clone(),
            observer,
        ));
        ctx.log_engine(
            "info",
            format!(
                "run {} of runbook `{}` started ({}{})",
                run.id,
                runbook.runbook.name,
                run.trigger_kind,
                if run.dry_run { ", dry-run" } else { "" }
            ),
        );

        let watcher = spawn_cancel_watcher(store.clone(), run.id.clone(), cancel.clone());
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
            () = cancel.cancelled() => {
                // Give the body a moment to stop on its own; it is dropped either way.
                Err(BodyError::Cancelled)
            }
        };
        watcher.abort();
        let end = ctx.finish(outcome).await;
        store.finish_run(&end).await?;
        Ok(store.get_run(&run.id).await?)
    }
}

/// Cancel `token` when someone (another process, an API call on another node) asks the store
/// to cancel the run.
fn spawn_cancel_watcher(
    store: Store,
    id: String,
    token: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = token.cancelled() => return,
                () = tokio::time::sleep(CANCEL_POLL) => {}
            }
            if store.cancel_requested(&id).await.unwrap_or(false) {
                token.cancel();
                return;
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
