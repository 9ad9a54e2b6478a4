//! The vocabulary of runs shared by the executor, the store, the CLI and the API: statuses,
//! step outcomes, and the records each keeps. Pure data.

use serde::Serialize;
use serde_json::Value;
use std::sync::Arc;

/// Where a run is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Waiting for a worker.
    Queued,
    /// Executing.
    Running,
    /// Finished: the body returned normally.
    Succeeded,
    /// Finished: a step failed, the body failed, or a script limit was hit.
    Failed,
    /// Finished: a fault in the engine (database, bug).
    Errored,
    /// Finished: the run's deadline passed.
    TimedOut,
    /// Finished: cancelled (by an operator, or by its alert resolving).
    Cancelled,
    /// Never ran: a policy, an overlap rule or a missed tick suppressed it; `reason` says which.
    Skipped,
}

impl RunStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [RunStatus; 8] = [
        RunStatus::Queued,
        RunStatus::Running,
        RunStatus::Succeeded,
        RunStatus::Failed,
        RunStatus::Errored,
        RunStatus::TimedOut,
        RunStatus::Cancelled,
        RunStatus::Skipped,
    ];

    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Errored => "errored",
            RunStatus::TimedOut => "timed_out",
            RunStatus::Cancelled => "cancelled",
            RunStatus::Skipped => "skipped",
        }
    }

    /// Whether the run is over.
    pub fn is_final(self) -> bool {
        !matches!(self, RunStatus::Queued | RunStatus::Running)
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for RunStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RunStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                let all: Vec<&str> = RunStatus::ALL.iter().map(|s| s.as_str()).collect();
                format!("`{s}` is not a run status (one of: {})", all.join(", "))
            })
    }
}

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// In progress.
    Running,
    /// Done.
    Succeeded,
    /// Failed (after any retries).
    Failed,
    /// A `mutate` action in a dry-run: recorded with its input, not invoked.
    Planned,
    /// Interrupted by cancellation or the run's deadline.
    Interrupted,
    /// Completed by an earlier attempt of this run (before a restart): its recorded output
    /// was returned again and the action was not invoked a second time.
    Replayed,
}

impl StepStatus {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Running => "running",
            StepStatus::Succeeded => "succeeded",
            StepStatus::Failed => "failed",
            StepStatus::Planned => "planned",
            StepStatus::Interrupted => "interrupted",
            StepStatus::Replayed => "replayed",
        }
    }

    /// Parse a stored name.
    pub fn parse(s: &str) -> Option<StepStatus> {
        [
            StepStatus::Running,
            StepStatus::Succeeded,
            StepStatus::Failed,
            StepStatus::Planned,
            StepStatus::Interrupted,
            StepStatus::Replayed,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }
}

/// A run as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunRecord {
    /// Sortable unique id (ULID).
    pub id: String,
    /// Runbook name.
    pub runbook: String,
    /// SHA-256 of the runbook's files when the run was created.
    pub runbook_hash: String,
    /// Status.
    pub status: RunStatus,
    /// `manual`, `cron`, `alert` or `webhook`.
    pub trigger_kind: String,
    /// The trigger event (alert labels, cron tick, …). Shared, not copied, by every copy of
    /// the record on the run's way from intake to its worker: it holds the whole alert.
    pub trigger: Arc<Value>,
    /// Resolved parameters (an object), shared like `trigger`.
    pub params: Arc<Value>,
    /// Whether `mutate` actions were planned instead of invoked.
    pub dry_run: bool,
    /// Why it was skipped, or why it failed (secrets masked).
    pub reason: Option<String>,
    /// Kind of failure (`fail`, `script`, a step error kind).
    pub error_kind: Option<String>,
    /// `runbook`, `plugin` or `engine`.
    pub blame: Option<String>,
    /// The body's output (secrets masked).
    pub output: Option<Value>,
    /// Unix milliseconds.
    pub queued_at: i64,
    /// Unix milliseconds.
    pub started_at: Option<i64>,
    /// Unix milliseconds.
    pub ended_at: Option<i64>,
    /// How many times a worker started it (more than 1 after a restart).
    pub attempt: i64,
    /// Which trigger of the runbook created it: `manual`, `cron:0`, `alert:1`, `webhook:NAME`.
    pub trigger_id: Option<String>,
    /// The per-target lock key it held or waits for.
    pub lock_key: Option<String>,
    /// The alert episode (`fingerprint@startsAt`) that started it.
    pub alert_key: Option<String>,
    /// The cron tick it is for (Unix ms).
    pub scheduled_at: Option<i64>,
    /// The node that ran it.
    pub node: Option<String>,
    /// Fencing token: raised by every claim, so only the latest claimant may record the
    /// run's steps and result.
    pub fence: i64,
}

impl RunRecord {
    /// A new queued run.
    pub fn queued(
        runbook: &str,
        runbook_hash: &str,
        trigger_kind: &str,
        trigger: Value,
        params: Value,
        dry_run: bool,
    ) -> Self {
        RunRecord {
            id: new_id(),
            runbook: runbook.to_string(),
            runbook_hash: runbook_hash.to_string(),
            status: RunStatus::Queued,
            trigger_kind: trigger_kind.to_string(),
            trigger: Arc::new(trigger),
            params: Arc::new(params),
            dry_run,
            reason: None,
            error_kind: None,
            blame: None,
            output: None,
            queued_at: now_ms(),
            started_at: None,
            ended_at: None,
            attempt: 0,
            trigger_id: None,
            lock_key: None,
            alert_key: None,
            scheduled_at: None,
            node: None,
            fence: 0,
        }
    }

    /// Time from start to end.
    pub fn duration_ms(&self) -> Option<i64> {
        Some(self.ended_at? - self.started_at?)
    }
}

/// A step as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepRecord {
    /// The run.
    pub run_id: String,
    /// Order within the run, from 1.
    pub seq: i64,
    /// Enclosing named step, if any.
    pub parent: Option<i64>,
    /// `call` (a plugin call) or `group` (a named step).
    pub kind: String,
    /// The group name, or `plugin.action`.
    pub name: String,
    /// Plugin called.
    pub plugin: Option<String>,
    /// Action called.
    pub action: Option<String>,
    /// `read` or `mutate`.
    pub action_kind: Option<String>,
    /// SHA-256 of the plugin component called.
    pub plugin_hash: Option<String>,
    /// Outcome.
    pub status: StepStatus,
    /// Input (secrets masked).
    pub input: Option<Value>,
    /// Output (secrets masked).
    pub output: Option<Value>,
    /// Kind of failure.
    pub error_kind: Option<String>,
    /// Failure message (secrets masked).
    pub error: Option<String>,
    /// `runbook`, `plugin` or `engine`.
    pub blame: Option<String>,
    /// Attempts made (1 without retries).
    pub attempts: i64,
    /// For plugin calls: the n-th call of the body (from 1), the key that lets a resumed run
    /// replay completed calls.
    pub call_index: Option<i64>,
    /// Unix milliseconds.
    pub started_at: i64,
    /// Unix milliseconds.
    pub ended_at: Option<i64>,
}

/// A log line as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogRecord {
    /// The run.
    pub run_id: String,
    /// Order within the run, from 1.
    pub seq: i64,
    /// The step that produced it, if any.
    pub step: Option<i64>,
    /// Unix milliseconds.
    pub ts: i64,
    /// `trace` … `error`.
    pub level: String,
    /// `engine`, `script`, `plugin`, `stdout`, `stderr`.
    pub source: String,
    /// The text (secrets masked).
    pub message: String,
    /// `key=value` fields (secrets masked).
    pub fields: Vec<(String, String)>,
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A new sortable run id.
pub fn new_id() -> String {
    // Monotonic within this process, so ids made in one millisecond still sort in the order
    // they were made: the queue is claimed oldest id first.
    static GENERATOR: std::sync::Mutex<Option<ulid::Generator>> = std::sync::Mutex::new(None);
    let id = GENERATOR
        .lock()
        .ok()
        .and_then(|mut g| g.get_or_insert_with(ulid::Generator::new).generate().ok());
    // (The generator fails only when one millisecond's random space is exhausted.)
    id.unwrap_or_else(|| ulid::Ulid::from_datetime(std::time::SystemTime::now()))
        .to_string()
        .to_ascii_lowercase()
}
