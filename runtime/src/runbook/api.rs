//! What a runbook body (a Rhai script or a Wasm component) can ask of the engine during a run.
//!
//! The executor implements [`RunApi`] for each run; `script` (Rhai) and `plugin` (Wasm runbook
//! bodies) call it. Keeping the contract here, in plain Rust types, lets the two body kinds
//! offer the same host calls without knowing about each other or about the store.

use serde_json::{Map, Value};
use std::time::{Duration, Instant};

/// Severity of a line a runbook writes to its run's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Diagnostics.
    Debug,
    /// Normal progress.
    Info,
    /// Something unexpected.
    Warn,
    /// Something failed.
    Error,
}

/// Options for one plugin call, overriding the runbook's policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallOptions {
    /// Retries for retryable failures (`None`: the runbook's policy).
    pub retries: Option<u32>,
    /// Deadline for each attempt (`None`: the plugin's limit from `runloom.toml`).
    pub timeout: Option<Duration>,
}

/// Why a host call did not produce a value. Scripts can catch it; uncaught, it ends the run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct StepError {
    /// Stable kind: `invalid_input`, `failed`, `retryable`, `denied`, `timeout`,
    /// `memory_limit`, `output_too_large`, `invalid_output`, `crashed`, `misconfigured`,
    /// `engine`, `not_allowed` (a plugin the runbook does not list), `cancelled`, `deadline`.
    pub kind: String,
    /// What happened, for humans (secrets masked).
    pub message: String,
    /// Who is to blame: `runbook`, `plugin` or `engine`.
    pub blame: String,
    /// Whether retrying could help (already retried per policy when this is returned).
    pub retryable: bool,
}

impl StepError {
    /// An error of `kind` blamed on `blame`.
    pub fn new(kind: &str, blame: &str, message: impl Into<String>) -> Self {
        Self {
            kind: kind.to_string(),
            message: message.into(),
            blame: blame.to_string(),
            retryable: false,
        }
    }

    /// The run was cancelled while the body waited.
    pub fn cancelled() -> Self {
        StepError::new("cancelled", "engine", "the run was cancelled")
    }

    /// The run's deadline passed while the body waited.
    pub fn deadline() -> Self {
        StepError::new("deadline", "runbook", "the run's timeout passed")
    }

    /// True for the two ways a run is stopped from outside the body.
    pub fn is_interruption(&self) -> bool {
        self.kind == "cancelled" || self.kind == "deadline"
    }
}

/// The engine as seen from a runbook body during one run. Implemented by the executor.
#[async_trait::async_trait]
pub trait RunApi: Send + Sync {
    /// Call `action` of `plugin` with `input` (a JSON object). Records a step; retries
    /// retryable failures per policy; in a dry-run, plans `mutate` actions instead of calling
    /// them and returns `{"planned": true, "plugin": …, "action": …, "input": …}`.
    async fn call(
        &self,
        plugin: &str,
        action: &str,
        input: Value,
        options: CallOptions,
    ) -> Result<Value, StepError>;

    /// Start a named step: calls until the matching [`RunApi::end_step`] are grouped under it.
    async fn begin_step(&self, name: &str);

    /// End the current named step; `error` is set when the work inside it failed.
    async fn end_step(&self, error: Option<&StepError>);

    /// Wait `duration`, counting toward the run's deadline. Returns early with
    /// [`StepError::cancelled`] or [`StepError::deadline`].
    async fn sleep(&self, duration: Duration) -> Result<(), StepError>;

    /// Append a line to the run's log (secrets are masked by the engine).
    fn log(&self, level: Level, message: &str);

    /// The value of a secret granted to the runbook; the value is masked everywhere after.
    async fn secret(&self, name: &str) -> Result<String, StepError>;

    /// The run's parameters, resolved and typed (durations as strings like `"5m"`).
    fn parameters(&self) -> &Map<String, Value>;

    /// What started the run: `{"kind": "manual"}`, `{"kind": "cron", "scheduled_at": …}`,
    /// `{"kind": "alert", "alert": {"status", "labels", "annotations", "startsAt", …}}`,
    /// `{"kind": "webhook", "name": …, "body": …}`.
    fn trigger(&self) -> &Value;

    /// Earlier succeeded runs of this runbook, newest first, at most `limit`: each as
    /// `{"id", "started_at" (Unix ms), "params", "output"}` (outputs masked as stored). This is
    /// a runbook's own history — what trend reports read.
    async fn history(&self, limit: u32) -> Result<Vec<Value>, StepError>;

    /// Whether the run has been cancelled (checked often by long computations).
    fn is_cancelled(&self) -> bool;

    /// When the run's timeout passes.
    fn deadline(&self) -> Instant;
}

/// Where in a runbook body something happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The body file, as given when it was loaded (`runbooks/disk-space-low/main.rhai`).
    pub file: String,
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub column: u32,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// How a runbook body ended without an output.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// The run failed: `fail(reason)`, an uncaught step error, a script error, or a script
    /// limit (operations, sizes, call depth). `run` status `failed`.
    #[error("{}{message}", location.as_ref().map(|l| format!("{l}: ")).unwrap_or_default())]
    Failed {
        /// What went wrong (secrets masked by the executor before storing).
        message: String,
        /// `runbook`, `plugin` or `engine`.
        blame: String,
        /// Where, when known.
        location: Option<Location>,
        /// The step error's kind when an uncaught step error ended the run, else `script`
        /// (script errors and limits) or `fail` (`fail(reason)`).
        kind: String,
    },
    /// The run's deadline passed. `run` status `timed_out`.
    #[error("the run's timeout passed")]
    TimedOut,
    /// The run was cancelled. `run` status `cancelled`.
    #[error("the run was cancelled")]
    Cancelled,
    /// A fault in the engine. `run` status `errored`.
    #[error("engine fault: {0}")]
    Engine(String),
}
