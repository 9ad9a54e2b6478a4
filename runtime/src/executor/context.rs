//! One run's view of the engine: the [`RunApi`] a body calls, recording steps and logs.

use super::{Inner, run_end};
use crate::catalog::Prepared;
use crate::plugin::{
    ActionKind, CallContext, CallError, CallRequest, LogLine, LogSink, SecretSource,
};
use crate::run::{LogRecord, RunRecord, StepRecord, StepStatus, now_ms};
use crate::runbook::api::{BodyError, CallOptions, Level, RunApi, StepError};
use crate::secret::{Masker, MaskingSecrets};
use crate::store::RunEnd;
use serde_json::{Map, Value};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Sees every log line of a run as it is written (for `runloom run` and following logs).
pub type LogObserver = Arc<dyn Fn(&LogRecord) + Send + Sync>;

/// Mutable bookkeeping of a run.
#[derive(Default)]
struct Steps {
    /// Last step number used.
    last: i64,
    /// Open named steps, innermost last.
    open: Vec<StepRecord>,
}

/// What earlier attempts of a run left: its steps (the journal) and how many log lines.
#[derive(Debug, Default)]
pub(super) struct Earlier {
    pub(super) steps: Vec<StepRecord>,
    pub(super) last_log_seq: i64,
}

pub(super) struct RunContext {
    exec: Arc<Inner>,
    runbook: Arc<Prepared>,
    run_id: String,
    params: Arc<Value>,
    trigger: Arc<Value>,
    dry_run: bool,
    deadline: Instant,
    cancel: CancellationToken,
    masker: Masker,
    observer: Option<LogObserver>,
    steps: Mutex<Steps>,
    log_seq: Arc<AtomicI64>,
    /// Plugin calls of the body so far in this attempt.
    calls: AtomicI64,
    /// `mutate` calls completed by earlier attempts of this run, by call index: replayed, not
    /// repeated, when the body makes the same call again.
    journal: std::collections::HashMap<i64, StepRecord>,
    /// The run's fencing token from its claim: step writes carry it.
    fence: i64,
    /// Set when a step write was refused because another claim took the run over.
    lost: std::sync::atomic::AtomicBool,
    /// Lines from the body and its plugins so far in this attempt (see [`MAX_LOG_LINES`]).
    lines: Arc<AtomicI64>,
}

/// Most lines a run's body and its plugins may log per attempt. A runbook stuck logging in a
/// loop must not fill the store; the engine says where the log was cut, and its own lines
/// (steps, the outcome) are always kept.
pub(super) const MAX_LOG_LINES: i64 = 10_000;

/// Whether one more body or plugin line may be kept, given the count so far; `Err` once, at
/// the first line over the limit, so the cut is logged exactly once.
fn take_line(lines: &AtomicI64) -> Result<bool, ()> {
    match lines.fetch_add(1, Ordering::SeqCst) + 1 {
        n if n <= MAX_LOG_LINES => Ok(true),
        n if n == MAX_LOG_LINES + 1 => Err(()),
        _ => Ok(false),
    }
}

fn cut_notice() -> String {
    format!(
        "log limit reached: this run logged {MAX_LOG_LINES} lines; later lines from its body and plugins are not kept"
    )
}

impl RunContext {
    pub(super) fn new(
        exec: Arc<Inner>,
        runbook: Arc<Prepared>,
        run: &RunRecord,
        masker: Masker,
        cancel: CancellationToken,
        observer: Option<LogObserver>,
        earlier: Earlier,
    ) -> Self {
        let Earlier {
            steps: earlier_steps,
            last_log_seq,
        } = earlier;
        let deadline = Instant::now() + runbook.runbook.policy.timeout;
        let last_seq = earlier_steps.iter().map(|s| s.seq).max().unwrap_or(0);
        let journal = earlier_steps
            .into_iter()
            .filter(|s| {
                s.action_kind.as_deref() == Some("mutate")
                    && matches!(s.status, StepStatus::Succeeded | StepStatus::Replayed)
            })
            .filter_map(|s| Some((s.call_index?, s)))
            .collect();
        Self {
            exec,
            runbook,
            run_id: run.id.clone(),
            params: run.params.clone(),
            trigger: run.trigger.clone(),
            dry_run: run.dry_run,
            deadline,
            cancel,
            masker,
            observer,
            steps: Mutex::new(Steps {
                last: last_seq,
                open: Vec::new(),
            }),
            log_seq: Arc::new(AtomicI64::new(last_log_seq)),
            calls: AtomicI64::new(0),
            journal,
            fence: run.fence,
            lost: std::sync::atomic::AtomicBool::new(false),
            lines: Arc::new(AtomicI64::new(0)),
        }
    }

    /// Record a log line (masked) and show it to the observer.
    fn emit(
        &self,
        step: Option<i64>,
        level: &str,
        source: &str,
        message: &str,
        fields: Vec<(String, String)>,
    ) {
        if source != "engine" {
            match take_line(&self.lines) {
                Ok(true) => {}
                Ok(false) => return,
                Err(()) => return self.emit(step, "warn", "engine", &cut_notice(), Vec::new()),
            }
        }
        let record = LogRecord {
            run_id: self.run_id.clone(),
            seq: self.log_seq.fetch_add(1, Ordering::SeqCst) + 1,
            step,
            ts: now_ms(),
            level: level.to_string(),
            source: source.to_string(),
            message: self.masker.mask(message),
            fields: fields
                .into_iter()
                .map(|(k, v)| (self.masker.mask(&k), self.masker.mask(&v)))
                .collect(),
        };
        if let Some(observer) = &self.observer {
            observer(&record);
        }
        self.exec.store.append_logs(vec![record]);
    }

    /// A line from the engine about this run.
    pub(super) fn log_engine(&self, level: &str, message: String) {
        self.emit(self.current_group(), level, "engine", &message, Vec::new());
    }

    fn current_group(&self) -> Option<i64> {
        self.steps
            .lock()
            .ok()
            .and_then(|s| s.open.last().map(|g| g.seq))
    }

    fn next_step(&self) -> (i64, Option<i64>) {
        match self.steps.lock() {
            Ok(mut s) => {
                s.last += 1;
                (s.last, s.open.last().map(|g| g.seq))
            }
            Err(_) => (0, None),
        }
    }

    fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Mark named steps still open as interrupted.
    pub(super) async fn close_open_steps(&self) {
        let open: Vec<StepRecord> = self
            .steps
            .lock()
            .map(|mut s| s.open.drain(..).rev().collect())
            .unwrap_or_default();
        for mut group in open {
            group.status = StepStatus::Interrupted;
            group.ended_at = Some(now_ms());
            let _ = self.record_end(&group).await;
        }
    }

    /// Record a step as started, fenced by this run's claim (see [`Self::still_held`]).
    async fn record_start(&self, step: &StepRecord) -> anyhow::Result<()> {
        let held = self.exec.store.insert_step(step, self.fence).await?;
        self.still_held(held);
        Ok(())
    }

    /// Record how a step ended, fenced by this run's claim (see [`Self::still_held`]).
    async fn record_end(&self, step: &StepRecord) -> anyhow::Result<()> {
        let held = self.exec.store.finish_step(step, self.fence).await?;
        self.still_held(held);
        Ok(())
    }

    /// After a fenced step write: `held` false means another claim took the run over (this
    /// node's lease lapsed), so the body stops here and records nothing more.
    fn still_held(&self, held: bool) {
        if !held && !self.lost.swap(true, Ordering::SeqCst) {
            tracing::warn!(run = %self.run_id, fence = self.fence, "the run was claimed by another node after this node's lease lapsed; stopping it here without recording more");
            self.cancel.cancel();
        }
    }

    /// Whether the run was taken over by another claim while it ran here.
    pub(super) fn lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// Close open named steps, log the end, and say how the run ended.
    pub(super) async fn finish(&self, outcome: Result<Value, BodyError>) -> RunEnd {
        self.close_open_steps().await;
        let end = run_end(&self.run_id, outcome, &self.masker);
        let level = if end.status == crate::run::RunStatus::Errored {
            tracing::error!(run = %self.run_id, reason = ?end.reason, "run errored");
            "error"
        } else if end.status == crate::run::RunStatus::Succeeded {
            "info"
        } else {
            "warn"
        };
        let detail = end
            .reason
            .as_deref()
            .map(|r| format!(": {r}"))
            .unwrap_or_default();
        self.log_engine(level, format!("run {}{detail}", end.status));
        end
    }

    /// Wait `d`, or until the run is cancelled or its deadline passes.
    async fn wait(&self, d: Duration) -> Result<(), StepError> {
        let remaining = self.remaining();
        tokio::select! {
            () = tokio::time::sleep(d.min(remaining)) => {
                if d > remaining { Err(StepError::deadline()) } else { Ok(()) }
            }
            () = self.cancel.cancelled() => Err(StepError::cancelled()),
        }
    }

    /// One attempt of a plugin call, interrupted by cancellation or the run's deadline.
    async fn attempt(
        &self,
        plugin: &crate::plugin::Plugin,
        request: CallRequest,
    ) -> Result<Value, StepError> {
        tokio::select! {
            result = self.exec.host.call(plugin, request) => result.map(|o| o.output).map_err(|e| self.step_error(&e)),
            () = self.cancel.cancelled() => Err(StepError::cancelled()),
            () = tokio::time::sleep(self.remaining()) => Err(StepError::deadline()),
        }
    }

    fn step_error(&self, e: &CallError) -> StepError {
        let blame = match e.blame() {
            crate::plugin::Blame::Runbook => "runbook",
            crate::plugin::Blame::Plugin => "plugin",
            crate::plugin::Blame::Engine => "engine",
        };
        let mut error = StepError::new(e.kind(), blame, self.masker.mask(&e.to_string()));
        error.retryable = e.is_retryable();
        error
    }

    /// Record a finished call step.
    async fn record(&self, mut step: StepRecord, result: &Result<Value, StepError>, attempts: i64) {
        step.attempts = attempts;
        step.ended_at = Some(now_ms());
        match result {
            Ok(output) => {
                step.status = StepStatus::Succeeded;
                step.output = Some(self.masker.mask_json(output));
            }
            Err(e) => {
                step.status = if e.is_interruption() {
                    StepStatus::Interrupted
                } else {
                    StepStatus::Failed
                };
                step.error_kind = Some(e.kind.clone());
                step.error = Some(e.message.clone());
                step.blame = Some(e.blame.clone());
            }
        }
        if step.action_kind.as_deref() == Some("read") {
            // Recorded whole, once it ended, and not waited for: a read can safely happen
            // again if the process dies before the next commit. The run's next awaited
            // write (a mutate step's start, its end) commits it, in order, and is fenced
            // like it, so a run whose claim was taken over still stops there.
            self.exec.store.insert_step_detached(&step, self.fence);
        } else if let Err(e) = self.record_end(&step).await {
            tracing::error!(run = %self.run_id, error = %e, "cannot record a step");
        }
    }
}

#[async_trait::async_trait]
impl RunApi for RunContext {
    async fn call(
        &self,
        plugin: &str,
        action: &str,
        input: Value,
        options: CallOptions,
    ) -> Result<Value, StepError> {
        let call_index = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let (seq, parent) = self.next_step();
        let mut step = StepRecord {
            run_id: self.run_id.clone(),
            seq,
            parent,
            kind: "call".into(),
            name: format!("{plugin}.{action}"),
            plugin: Some(plugin.to_string()),
            action: Some(action.to_string()),
            action_kind: None,
            plugin_hash: None,
            status: StepStatus::Running,
            input: Some(self.masker.mask_json(&input)),
            output: None,
            error_kind: None,
            error: None,
            blame: None,
            attempts: 0,
            call_index: Some(call_index),
            started_at: now_ms(),
            ended_at: None,
        };
        if let Some(done) = self.journal.get(&call_index)
            && done.plugin.as_deref() == Some(plugin)
            && done.action.as_deref() == Some(action)
            && done.input == step.input
        {
            // An earlier attempt completed this very mutation before the run was interrupted:
            // return what it returned instead of applying it twice.
            step.status = StepStatus::Replayed;
            step.action_kind = done.action_kind.clone();
            step.plugin_hash = done.plugin_hash.clone();
            step.output = done.output.clone();
            step.ended_at = Some(now_ms());
            if let Err(e) = self.record_start(&step).await {
                return Err(StepError::new(
                    "engine",
                    "engine",
                    format!("cannot record the step: {e}"),
                ));
            }
            self.emit(
                Some(seq),
                "info",
                "engine",
                &format!("{plugin}.{action} completed in an earlier attempt (step {}); replayed, not invoked again", done.seq),
                Vec::new(),
            );
            return Ok(done.output.clone().unwrap_or(Value::Null));
        }
        let rb = &self.runbook.runbook;
        let resolved = (|| {
            let uses = rb.plugins.get(plugin).ok_or_else(|| {
                StepError::new(
                    "not_allowed",
                    "runbook",
                    format!("runbook `{}` may not call plugin `{plugin}`: add `[plugins.{plugin}]` to its runbook.toml", rb.name),
                )
            })?;
            let loaded = self.exec.registry.get(plugin).ok_or_else(|| {
                StepError::new(
                    "not_allowed",
                    "engine",
                    format!("plugin `{plugin}` is not loaded"),
                )
            })?;
            let info = loaded.manifest().action(action).ok_or_else(|| {
                let known: Vec<&str> = loaded
                    .manifest()
                    .actions
                    .iter()
                    .map(|a| a.name.as_str())
                    .collect();
                StepError::new(
                    "invalid_input",
                    "runbook",
                    format!(
                        "plugin `{plugin}` has no action `{action}` (it has: {})",
                        known.join(", ")
                    ),
                )
            })?;
            Ok::<_, StepError>((uses, loaded, info.kind))
        })();
        let (uses, loaded, kind) = match resolved {
            Ok(r) => r,
            Err(e) => {
                let _ = self.record_start(&step).await;
                self.emit(Some(seq), "error", "engine", &e.message, Vec::new());
                let result = Err(e);
                self.record(step, &result, 0).await;
                return result;
            }
        };
        step.action_kind = Some(kind.to_string());
        step.plugin_hash = Some(loaded.content_hash().to_string());

        if self.dry_run && kind == ActionKind::Mutate {
            step.status = StepStatus::Planned;
            step.ended_at = Some(now_ms());
            step.attempts = 0;
            if let Err(e) = self.record_start(&step).await {
                return Err(StepError::new(
                    "engine",
                    "engine",
                    format!("cannot record the planned step: {e}"),
                ));
            }
            self.emit(
                Some(seq),
                "info",
                "engine",
                &format!("dry-run: planned {plugin}.{action}, not invoked"),
                Vec::new(),
            );
            return Ok(serde_json::json!({
                "planned": true,
                "plugin": plugin,
                "action": action,
                "input": input,
            }));
        }
        // A mutation is recorded before it is invoked: the journal must know it was attempted.
        // A read is recorded once, when it ends (one write instead of two on every check).
        if kind == ActionKind::Mutate
            && let Err(e) = self.record_start(&step).await
        {
            return Err(StepError::new(
                "engine",
                "engine",
                format!("cannot record the step: {e}"),
            ));
        }

        let settings = self.exec.config.plugin(plugin);
        let mut limits = settings.limits;
        if let Some(t) = uses.timeout {
            limits.timeout = limits.timeout.min(t);
        }
        if let Some(t) = options.timeout {
            limits.timeout = limits.timeout.min(t);
        }
        let grants = Arc::new(uses.grants.clone());
        let secrets: Arc<dyn SecretSource> = Arc::new(MaskingSecrets {
            inner: self.exec.secrets.clone(),
            masker: self.masker.clone(),
        });
        let sink = self.plugin_sink(seq);
        let policy = &rb.policy;
        let retries = options.retries.unwrap_or(policy.retries);
        let input_text = input.to_string();
        let mut attempts = 0i64;
        let started = Instant::now();
        let result = loop {
            attempts += 1;
            let mut request = CallRequest::new(action, input_text.clone());
            request.context = CallContext {
                run_id: self.run_id.clone(),
                step_id: seq.to_string(),
                idempotency_key: format!("{}:{seq}", self.run_id),
                dry_run: self.dry_run,
            };
            request.grants = grants.clone();
            request.secrets = secrets.clone();
            request.limits = limits;
            request.keep_alive = settings.keep_alive;
            request.log = Some(sink.clone());
            match self.attempt(loaded, request).await {
                Err(e) if e.retryable && attempts <= i64::from(retries) => {
                    let delay = backoff(policy.retry_backoff, policy.retry_backoff_max, attempts);
                    self.emit(
                        Some(seq),
                        "warn",
                        "engine",
                        &format!(
                            "attempt {attempts} failed ({}): {}; retrying in {}",
                            e.kind,
                            e.message,
                            humantime::format_duration(Duration::from_millis(
                                delay.as_millis() as u64
                            ))
                        ),
                        Vec::new(),
                    );
                    if let Err(interrupted) = self.wait(delay).await {
                        break Err(interrupted);
                    }
                }
                other => break other,
            }
        };
        if let Err(e) = &result {
            self.emit(
                Some(seq),
                "error",
                "engine",
                &format!("{plugin}.{action} failed ({}): {}", e.kind, e.message),
                Vec::new(),
            );
        }
        if let Some(m) = self.exec.metrics.get() {
            m.plugin_call(plugin, action, started.elapsed());
        }
        self.record(step, &result, attempts).await;
        result
    }

    async fn begin_step(&self, name: &str) {
        let (seq, parent) = self.next_step();
        let group = StepRecord {
            run_id: self.run_id.clone(),
            seq,
            parent,
            kind: "group".into(),
            name: name.to_string(),
            plugin: None,
            action: None,
            action_kind: None,
            plugin_hash: None,
            status: StepStatus::Running,
            input: None,
            output: None,
            error_kind: None,
            error: None,
            blame: None,
            attempts: 1,
            call_index: None,
            started_at: now_ms(),
            ended_at: None,
        };
        if let Err(e) = self.record_start(&group).await {
            tracing::error!(run = %self.run_id, error = %e, "cannot record a step");
        }
        if let Ok(mut s) = self.steps.lock() {
            s.open.push(group);
        }
        self.emit(
            Some(seq),
            "info",
            "engine",
            &format!("step `{name}` started"),
            Vec::new(),
        );
    }

    async fn end_step(&self, error: Option<&StepError>) {
        let Some(mut group) = self.steps.lock().ok().and_then(|mut s| s.open.pop()) else {
            return;
        };
        group.ended_at = Some(now_ms());
        match error {
            None => group.status = StepStatus::Succeeded,
            Some(e) => {
                group.status = if e.is_interruption() {
                    StepStatus::Interrupted
                } else {
                    StepStatus::Failed
                };
                group.error_kind = Some(e.kind.clone());
                group.error = Some(self.masker.mask(&e.message));
                group.blame = Some(e.blame.clone());
            }
        }
        let (level, word) = if error.is_some() {
            ("warn", "failed")
        } else {
            ("info", "succeeded")
        };
        self.emit(
            Some(group.seq),
            level,
            "engine",
            &format!("step `{}` {word}", group.name),
            Vec::new(),
        );
        if let Err(e) = self.record_end(&group).await {
            tracing::error!(run = %self.run_id, error = %e, "cannot record a step");
        }
    }

    async fn sleep(&self, duration: Duration) -> Result<(), StepError> {
        self.wait(duration).await
    }

    fn log(&self, level: Level, message: &str) {
        let level = match level {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        };
        self.emit(self.current_group(), level, "script", message, Vec::new());
    }

    async fn secret(&self, name: &str) -> Result<String, StepError> {
        let rb = &self.runbook.runbook;
        if !rb.secrets.iter().any(|s| s == name) {
            return Err(StepError::new(
                "denied",
                "runbook",
                format!(
                    "runbook `{}` may not read secret `{name}`: not granted (add it to `secrets` in runbook.toml)",
                    rb.name
                ),
            ));
        }
        match self.exec.secrets.get(name).await {
            Some(value) => {
                self.masker.add(&value);
                Ok(value)
            }
            None => Err(StepError::new(
                "misconfigured",
                "engine",
                format!(
                    "secret `{name}` has no value on this host (see [secrets.{name}] in runloom.toml)"
                ),
            )),
        }
    }

    async fn history(&self, limit: u32) -> Result<Vec<Value>, StepError> {
        let filter = crate::store::RunFilter {
            runbook: Some(self.runbook.runbook.name.clone()),
            status: Some(crate::run::RunStatus::Succeeded),
            limit: limit.min(10_000),
        };
        let runs = self.exec.store.list_runs(&filter).await.map_err(|e| {
            StepError::new(
                "engine",
                "engine",
                format!("cannot read the run history: {e}"),
            )
        })?;
        Ok(runs
            .into_iter()
            .filter(|r| r.id != self.run_id)
            .map(|r| {
                serde_json::json!({
                    "id": r.id,
                    "started_at": r.started_at,
                    "params": r.params,
                    "output": r.output,
                })
            })
            .collect())
    }

    fn parameters(&self) -> &Map<String, Value> {
        static NONE: std::sync::LazyLock<Map<String, Value>> = std::sync::LazyLock::new(Map::new);
        self.params.as_object().unwrap_or(&NONE)
    }

    fn trigger(&self) -> &Value {
        &self.trigger
    }

    fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    fn deadline(&self) -> Instant {
        self.deadline
    }
}

impl RunContext {
    /// A log sink for one plugin call: lines go to the run's log under the call's step.
    fn plugin_sink(&self, seq: i64) -> LogSink {
        let store = self.exec.store.clone();
        let masker = self.masker.clone();
        let run_id = self.run_id.clone();
        let observer = self.observer.clone();
        let seqs = self.log_seq.clone();
        let lines = self.lines.clone();
        Arc::new(move |line: LogLine| {
            let (level, source, message, fields) = match take_line(&lines) {
                Ok(true) => (
                    line.level.to_string(),
                    line.source.to_string(),
                    line.message,
                    line.fields,
                ),
                Ok(false) => return,
                Err(()) => (
                    "warn".to_string(),
                    "engine".to_string(),
                    cut_notice(),
                    Vec::new(),
                ),
            };
            let record = LogRecord {
                run_id: run_id.clone(),
                seq: seqs.fetch_add(1, Ordering::SeqCst) + 1,
                step: Some(seq),
                ts: now_ms(),
                level,
                source,
                message: masker.mask(&message),
                fields: fields
                    .into_iter()
                    .map(|(k, v)| (masker.mask(&k), masker.mask(&v)))
                    .collect(),
            };
            if let Some(observer) = &observer {
                observer(&record);
            }
            store.append_logs(vec![record]);
        })
    }
}

/// Delay before retry `attempt` (1-based): doubling from `base`, capped at `max`, with full
/// jitter in its upper half so many failing runs do not retry in lockstep.
fn backoff(base: Duration, max: Duration, attempt: i64) -> Duration {
    let exp = u32::try_from(attempt.saturating_sub(1))
        .unwrap_or(u32::MAX)
        .min(20);
    let nominal = base.saturating_mul(2u32.saturating_pow(exp)).min(max);
    let jitter: f64 = rand::random_range(0.5..=1.0);
    nominal.mul_f64(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let base = Duration::from_secs(1);
        let max = Duration::from_secs(10);
        for _ in 0..100 {
            let first = backoff(base, max, 1);
            assert!(
                first >= Duration::from_millis(500) && first <= base,
                "{first:?}"
            );
            let third = backoff(base, max, 3);
            assert!(
                third >= Duration::from_secs(2) && third <= Duration::from_secs(4),
                "{third:?}"
            );
            assert!(backoff(base, max, 30) <= max);
        }
    }
}
