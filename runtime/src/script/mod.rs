//! Rhai runbook bodies: compiled once when the runbook is loaded, run sandboxed for each run,
//! talking to the engine only through [`RunApi`].
//!
//! Invariant: the only code that names `rhai`. Every `rhai::Engine`, for compiling and for
//! running, comes from one constructor (`sandbox::engine`), which is the only place limits,
//! disabled symbols, the module resolver and the host functions are set. A script can reach
//! nothing but the functions listed below; each run gets a fresh engine (cheap: the standard
//! library and the host functions are built once and shared), so nothing leaks between runs.
//!
//! A script runs inside its run's task, on a small stack of its own (`fiber`): a host
//! function waiting for the async [`RunApi`] suspends the script, and the worker thread goes
//! on with other tasks until the call is done; no thread is held or woken per run. Rhai
//! counts no operations while a host function waits, so the engine's own deadline handling
//! in [`RunApi::call`] and [`RunApi::sleep`] is what bounds those waits; between host calls
//! the operation hook checks the run's deadline and its cancel flag, and gives the thread up
//! to other tasks every 200 µs of computation. A run whose future is dropped (cancelled, or
//! past its deadline's grace) has its script unwound at once.
//!
//! # Writing a runbook body in Rhai (`main.rhai`)
//!
//! The language is [Rhai](https://rhai.rs/book/). A runbook sees these names and no others
//! beyond Rhai's standard library:
//!
//! | Name | What it does |
//! |---|---|
//! | `params` | Constant map of the run's parameters, typed as declared (durations as strings like `"5m"`). |
//! | `trigger` | Constant map describing what started the run: `#{ kind: "manual" }`, `#{ kind: "cron", scheduled_at }`, `#{ kind: "alert", alert }`, `#{ kind: "webhook", name, body }`. |
//! | `alert` | Constant: the alert map (`status`, `labels`, `annotations`, `startsAt`, …) when an alert started the run, else `()`. `trigger` and `alert` are given only to a script whose source names either (in code, a string or a comment): the others skip converting the whole alert for every run, and a trigger too large or too deeply nested for the limits fails only the runs of scripts that name it. |
//! | `call(plugin, action, input)` | Calls a plugin action with a map input and returns its output (map, array or plain value). Each call is recorded as a step; retryable failures are retried per the runbook's policy; in a dry-run, `mutate` actions are planned and return `#{ planned: true, … }`. |
//! | `call(plugin, action, input, #{ retries: 2, timeout: "10s" })` | The same, overriding the retry count and the per-attempt timeout (a duration string or whole seconds). |
//! | `step(name, \|\| { … })` | Runs the closure as a named step grouping the calls inside it; returns the closure's value; if the closure throws, the step is recorded as failed and the error is re-thrown. |
//! | `sleep(duration)` | Waits `"30s"`, `"5m"`, … or a number of seconds; counts toward the run's timeout and ends early when the run is cancelled. |
//! | `secret(name)` | The value of a secret granted to the runbook (masked in every log and record). |
//! | `history(n)` | Up to `n` earlier succeeded runs of this runbook, newest first: `#{ id, started_at, params, output }`. |
//! | `now()` | Wall-clock time in Unix milliseconds (the clock of `history`'s `started_at`). |
//! | `datetime(ms)`, `datetime(ms, zone)` | Calendar fields of a Unix-ms time in UTC or an IANA zone (`"Europe/Berlin"`): `#{ year, month, day, hour, minute, second, weekday: "sat", date: "2026-11-28", text: "2026-11-28T03:00:00+01:00" }`. |
//! | `fail(reason)` | Ends the run as failed with `reason`; cannot be caught. |
//! | `log(msg)`, `info(msg)` | Writes `msg` to the run log at info level; `print(msg)` does the same. |
//! | `debug(msg)`, `warn(msg)`, `error(msg)` | Writes `msg` to the run log at that level. |
//! | `parse_json(text)` | Parses JSON text into a map, array or value; invalid JSON throws. |
//! | `to_json(value)` | Compact JSON text of a map, array or value. |
//!
//! **Failures.** A failed `call` (and `secret`, or a host function given bad arguments) throws
//! a map `#{ kind, message, blame, retryable }`, which `try`/`catch` can handle:
//!
//! ```rhai
//! try {
//!     call("http-check", "get", #{ url: params.url }, #{ timeout: "5s" });
//! } catch (e) {
//!     if e.kind == "timeout" { warn(`still slow: ${e.message}`); } else { throw e; }
//! }
//! ```
//!
//! `kind` is one of `invalid_input`, `failed`, `retryable`, `denied`, `timeout`,
//! `memory_limit`, `output_too_large`, `invalid_output`, `crashed`, `misconfigured`,
//! `engine`, `not_allowed` (a plugin the runbook does not list) or `script` (a host function
//! was called wrongly); `blame` is `runbook`, `plugin` or `engine`. An error nobody catches
//! ends the run as failed, with that kind and blame and the file, line and column of the
//! call. Cancellation and the run's timeout cannot be caught.
//!
//! **Output.** The script's last value (or the value of `return`) is the run's output, as
//! JSON: `()` is `null`; maps, arrays, strings, integers, floats and booleans map naturally;
//! functions and timestamps have no JSON form and fail the run.
//!
//! **Limits** ([`ScriptLimits`]): operations (roughly, evaluated expressions; waiting in
//! `call` or `sleep` costs nothing), nesting of function calls, and the size of any one
//! string, array or map. Going over one fails the run, naming the limit. The run's timeout
//! and cancellation stop a script anywhere, including in a loop that never calls the host.
//!
//! Arrays, maps and closures may nest 128 levels deep.
//!
//! **Not available:** `eval`, `import` (a runbook is one file), `curry` (use a closure), and
//! Rhai's blocking `sleep` (replaced by the one above). Because `call` is the plugin call,
//! call a function pointer `f` with `call(f, args…)` or by name, not `f.call(args…)`.
//! `log(x)` always logs; for a logarithm write `log(x, 10.0)` or `ln(x)`. Functions declared
//! with `fn` do not see `params`, `trigger` or `alert` (Rhai functions see only their
//! arguments): pass what they need, or use closures, which capture them.

mod fiber;
mod host;
mod outcome;
mod sandbox;
mod value;

#[cfg(test)]
mod tests;

use crate::runbook::api::{BodyError, Location, RunApi};
use rhai::{AST, Dynamic, Scope};
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

/// How much one run of a script may consume. Going over a limit fails the run with
/// `kind: "script"` and a message naming the limit. Zero turns a limit off (Rhai's
/// convention), except `max_call_levels`, where zero forbids calling functions at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScriptLimits {
    /// Operations (about one per evaluated expression, loop iteration or function call).
    /// Default 10,000,000: about 0.7 s of pure computation on a 2-core VM, far more than
    /// glue code needs; waiting in host calls costs none.
    pub max_operations: u64,
    /// Depth of nested function calls, closures included. Default 64 (Rhai's own release
    /// default), which stays well inside a script's 2 MiB stack.
    pub max_call_levels: usize,
    /// Bytes in a string, and in all the strings of one array or map together. Default
    /// 2 MiB: twice the default plugin output cap, so a whole plugin output fits, as data or
    /// as `to_json` text.
    pub max_string_size: usize,
    /// Elements in an array, nested arrays counted too. Default 50,000: room for large
    /// plugin outputs, while bounding time as well as memory — Rhai re-measures an array on
    /// every `push`, so building one element by element costs time growing with the square
    /// of its length (≈ 1 s for 50,000 on a 2-core VM).
    pub max_array_size: usize,
    /// Properties in a map, nested maps counted too. Default 50,000, for the same reasons.
    pub max_map_size: usize,
}

impl Default for ScriptLimits {
    fn default() -> Self {
        Self {
            max_operations: 10_000_000,
            max_call_levels: 64,
            max_string_size: 2 << 20,
            max_array_size: 50_000,
            max_map_size: 50_000,
        }
    }
}

/// A definition error in a script: it does not compile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {message}")]
pub struct ScriptError {
    /// Where: the file as given to [`Script::compile`], 1-based line and column.
    pub location: Location,
    /// What is wrong, for the runbook author.
    pub message: String,
}

/// A compiled runbook script. Compile once when the runbook is loaded; run it any number of
/// times, concurrently (the compiled form is shared, each run gets its own engine and
/// variables).
#[derive(Clone)]
pub struct Script {
    ast: Arc<AST>,
    file: Arc<str>,
    /// Whether the source spells `trigger` or `alert` anywhere (code, string or comment).
    /// When it does not, no expression of the script can read them, so a run skips turning
    /// the trigger (the whole alert, for alert-triggered runs) into Rhai values.
    reads_trigger: bool,
}

impl fmt::Debug for Script {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Script").field("file", &self.file).finish()
    }
}

/// The constants every script sees, in this order.
const CONSTANTS: [&str; 3] = ["params", "trigger", "alert"];

impl Script {
    /// Compile once at load; a syntax error is a definition error with file, line and column.
    ///
    /// `file` names the script in errors (`runbooks/disk-space-low/main.rhai`). Variables
    /// are strict: using a name that is never defined is caught here, not at 3 a.m.
    pub fn compile(file: &str, source: &str) -> Result<Script, ScriptError> {
        let engine = sandbox::engine(&ScriptLimits::default());
        // Declared as plain variables, not constants: the optimizer would otherwise fold
        // their compile-time placeholder values into the AST. At run time they are constants.
        let mut scope = Scope::new();
        for name in CONSTANTS {
            scope.push_dynamic(name, Dynamic::UNIT);
        }
        let mut ast = engine
            .compile_with_scope(&scope, source)
            .map_err(|error| outcome::compile_error(file, &error))?;
        ast.set_source(file);
        Ok(Script {
            ast: Arc::new(ast),
            file: file.into(),
            reads_trigger: source.contains("trigger") || source.contains("alert"),
        })
    }

    /// The file name given to [`Script::compile`].
    pub fn file(&self) -> &str {
        &self.file
    }

    /// Run to its end inside the calling task, on a stack of its own (see `fiber`).
    ///
    /// Returns the script's final value as JSON, or how the run ended: [`BodyError::Failed`]
    /// (`fail(reason)`, an uncaught step error, a script error or a limit, with the file,
    /// line and column), [`BodyError::TimedOut`] (the run's deadline passed),
    /// [`BodyError::Cancelled`], or [`BodyError::Engine`] (no stack could be mapped for it,
    /// or the engine panicked running it).
    pub async fn run(
        &self,
        api: Arc<dyn RunApi>,
        limits: ScriptLimits,
    ) -> Result<serde_json::Value, BodyError> {
        let script = self.clone();
        let fiber = fiber::Fiber::new(move |suspender| script.run_on_fiber(api, limits, suspender))
            .map_err(|error| {
                BodyError::Engine(format!("cannot map a stack for the script: {error}"))
            })?;
        fiber.await.unwrap_or_else(|panic| {
            let reason = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".to_string());
            Err(BodyError::Engine(format!(
                "the script engine panicked: {reason}"
            )))
        })
    }

    /// The body of [`Script::run`], on the script's own stack.
    fn run_on_fiber(
        &self,
        api: Arc<dyn RunApi>,
        limits: ScriptLimits,
        fiber: Arc<fiber::Suspender>,
    ) -> Result<serde_json::Value, BodyError> {
        // Checked before the first operation: the progress hook only looks every few hundred.
        if api.is_cancelled() {
            return Err(BodyError::Cancelled);
        }
        if Instant::now() >= api.deadline() {
            return Err(BodyError::TimedOut);
        }

        let parameters = value::from_json_object(api.parameters());
        let trigger = if self.reads_trigger {
            value::from_json(api.trigger())
        } else {
            Ok(Dynamic::UNIT)
        };
        let (parameters, trigger) = match (parameters, trigger) {
            (Ok(parameters), Ok(trigger)) => (parameters, trigger),
            (Err(error), _) | (_, Err(error)) => {
                return Err(BodyError::Engine(format!(
                    "the run's parameters or trigger cannot be given to the script: {error}"
                )));
            }
        };
        let alert = alert_of(&trigger);

        let mut engine = sandbox::engine(&limits);
        host::attach(&mut engine, host::RunContext { api, fiber, limits });

        let mut scope = Scope::new();
        for (name, value) in CONSTANTS.into_iter().zip([parameters, trigger, alert]) {
            scope.push_constant_dynamic(name, value);
        }

        match engine.eval_ast_with_scope::<Dynamic>(&mut scope, &self.ast) {
            Ok(output) => value::to_json(&output).map_err(|error| BodyError::Failed {
                message: format!("the script's result cannot be the run's output: {error}"),
                blame: "runbook".to_string(),
                location: None,
                kind: "script".to_string(),
            }),
            Err(error) => Err(outcome::body_error(&self.file, &error, &limits)),
        }
    }
}

/// The `alert` constant: the trigger's alert when an alert started the run, else `()`.
fn alert_of(trigger: &Dynamic) -> Dynamic {
    let Ok(trigger) = trigger.as_map_ref() else {
        return Dynamic::UNIT;
    };
    let is_alert = trigger
        .get("kind")
        .and_then(|kind| {
            kind.as_immutable_string_ref()
                .ok()
                .map(|k| k.as_str() == "alert")
        })
        .unwrap_or(false);
    match trigger.get("alert") {
        Some(alert) if is_alert => alert.clone(),
        _ => Dynamic::UNIT,
    }
}
