//! Write Runloom runbook bodies in Rust: the alternative to `main.rhai` when a runbook needs
//! real types, libraries or heavy computation.
//!
//! A runbook body is a WebAssembly component (built for `wasm32-wasip2`) with one function
//! that returns the run's output. It has no capabilities of its own: everything it does in the
//! world goes through the engine, with the functions below. The whole of a runbook:
//!
//! ```ignore
//! use runloom_sdk::runbook::{self, RunError};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Deserialize)]
//! struct Params { name: String }
//!
//! #[derive(Serialize)]
//! struct Output { greeting: serde_json::Value }
//!
//! fn run() -> Result<Output, RunError> {
//!     let params: Params = runbook::params()?;
//!     let reply = runbook::call("hello", "greet", &serde_json::json!({ "name": params.name }))?;
//!     Ok(Output { greeting: reply["greeting"].clone() })
//! }
//!
//! runloom_sdk::export_runbook!(run);
//! ```
//!
//! A [`StepError`] returned by a host call can be handled, or passed on with `?`: the run then
//! fails with its kind and blame (or ends `cancelled` / `timed_out`). [`RunError::failed`]
//! fails the run for a reason of the runbook's own. A panic fails the run as `crashed`.
//!
//! Logging is [`log`](crate::log), the same as in plugins.

use serde::Serialize;
use serde::de::DeserializeOwned;
use std::time::Duration;

pub use crate::log;

/// Bindings generated from the `runbook` world of `wit/plugin.wit`. Runbook code rarely needs
/// them directly.
#[allow(missing_docs, unreachable_pub, clippy::all, reason = "generated code")]
pub mod bindings {
    wit_bindgen::generate!({
        world: "runbook",
        path: "../../wit",
        // Interfaces the plugin world has too: one set of bindings, one set of types.
        with: {
            "runloom:plugin/log@0.1.0": crate::bindings::runloom::plugin::log,
            "wasi:io/poll@0.2.12": crate::bindings::wasi::io::poll,
            "wasi:clocks/wall-clock@0.2.12": crate::bindings::wasi::clocks::wall_clock,
            "wasi:clocks/monotonic-clock@0.2.12": crate::bindings::wasi::clocks::monotonic_clock,
            "wasi:random/random@0.2.12": crate::bindings::wasi::random::random,
        },
        pub_export_macro: true,
        export_macro_name: "__export_runbook_bindings",
        default_bindings_module: "runloom_sdk::runbook::bindings",
        runtime_path: "runloom_sdk::__wit_bindgen::rt",
        // Keeps this crate's description of the world apart from one a runbook crate may
        // generate itself: the linker would merge two sections of the same name into garbage.
        type_section_suffix: "runloom-sdk-runbook",
    });
}

use bindings::runloom::plugin::engine;

pub use bindings::exports::runloom::plugin::body::RunError;
pub use engine::{CallOptions, StepError};

impl StepError {
    /// An error of `kind` (`failed`, `invalid_input`, …) blamed on the runbook, for work a
    /// runbook does itself inside a [`step`].
    pub fn new(kind: &str, message: impl std::fmt::Display) -> Self {
        StepError {
            kind: kind.to_string(),
            message: message.to_string(),
            blame: "runbook".to_string(),
            retryable: false,
        }
    }
}

impl RunError {
    /// Fail the run for `reason`, blamed on the runbook.
    pub fn failed(reason: impl std::fmt::Display) -> Self {
        RunError::Failed(reason.to_string())
    }
}

impl From<StepError> for RunError {
    fn from(e: StepError) -> Self {
        RunError::Step(e)
    }
}

/// Call `action` of the plugin `plugin` with `input` and return the action's output.
///
/// The call is a step of the run, retried as the runbook's policy allows. In a dry-run a
/// `mutate` action is only planned, and the output is
/// `{"planned": true, "plugin": …, "action": …, "input": …}`.
pub fn call(
    plugin: &str,
    action: &str,
    input: &impl Serialize,
) -> Result<serde_json::Value, StepError> {
    call_with(plugin, action, input, CallOptions::default())
}

/// [`call`] with its own retries or per-attempt timeout instead of the runbook's policy.
pub fn call_with(
    plugin: &str,
    action: &str,
    input: &impl Serialize,
    options: CallOptions,
) -> Result<serde_json::Value, StepError> {
    let input = serde_json::to_string(input).map_err(|e| {
        StepError::new(
            "invalid_input",
            format!("the input for `{plugin}` action `{action}` cannot be encoded: {e}"),
        )
    })?;
    let output = engine::call(plugin, action, &input, options)?;
    serde_json::from_str(&output).map_err(|e| {
        StepError::new(
            "invalid_output",
            format!("`{plugin}` action `{action}` returned output that is not JSON: {e}"),
        )
    })
}

#[allow(
    clippy::derivable_impls,
    reason = "the type is generated; a derive would apply to every generated type"
)]
impl Default for CallOptions {
    fn default() -> Self {
        CallOptions {
            retries: None,
            timeout_ms: None,
        }
    }
}

/// Run `work` as the step `name`: the plugin calls it makes are recorded under that step,
/// which ends failed when `work` returns an error.
pub fn step<T>(name: &str, work: impl FnOnce() -> Result<T, RunError>) -> Result<T, RunError> {
    engine::begin_step(name);
    let result = work();
    let error = match &result {
        Ok(_) => None,
        Err(RunError::Step(e)) => Some(e.clone()),
        Err(RunError::Failed(reason)) => Some(StepError::new("fail", reason)),
    };
    engine::end_step(error.as_ref());
    result
}

/// Wait for `duration`, which counts toward the run's timeout.
///
/// Returns early with a [`StepError`] of kind `cancelled` or `deadline` when the run is
/// cancelled or times out; pass it on with `?` so the run ends promptly.
pub fn sleep(duration: Duration) -> Result<(), StepError> {
    let ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    engine::sleep(ms)
}

/// The run's parameters, as declared in `runbook.toml` and resolved by the engine, read into
/// `T` (a `serde_json::Value` takes anything).
pub fn params<T: DeserializeOwned>() -> Result<T, StepError> {
    serde_json::from_str(&engine::parameters()).map_err(|e| {
        StepError::new(
            "invalid_input",
            format!("the run's parameters do not fit the runbook: {e}"),
        )
    })
}

/// What started the run, read into `T`: `{"kind": "manual"}`,
/// `{"kind": "cron", "scheduled_at": …}`, `{"kind": "alert", "alert": {…}}` or
/// `{"kind": "webhook", "name": …, "body": …}`.
pub fn trigger<T: DeserializeOwned>() -> Result<T, StepError> {
    serde_json::from_str(&engine::trigger()).map_err(|e| {
        StepError::new(
            "invalid_input",
            format!("the run's trigger does not fit the runbook: {e}"),
        )
    })
}

/// The value of the secret `name`, if it is granted to the runbook. The engine masks it in
/// every log line and stored record.
pub fn secret(name: &str) -> Result<String, StepError> {
    engine::secret(name)
}

/// Whether the run has been cancelled. A long computation may check it to stop cleanly;
/// otherwise the engine interrupts the runbook.
pub fn is_cancelled() -> bool {
    engine::cancelled()
}

/// Time left before the run's timeout passes.
pub fn time_left() -> Duration {
    Duration::from_millis(engine::time_left_ms())
}

/// `body.run`: the output document of `body`, encoded. Called by the code
/// [`export_runbook!`](crate::export_runbook) generates.
#[doc(hidden)]
pub fn __run<O: Serialize>(body: impl FnOnce() -> Result<O, RunError>) -> Result<String, RunError> {
    let output = body()?;
    serde_json::to_string(&output)
        .map_err(|e| RunError::failed(format!("cannot encode the runbook's output: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_error_passes_on_as_the_run_error() {
        fn body() -> Result<u32, RunError> {
            Err(StepError::new("failed", "no disk").into())
        }
        match __run(body) {
            Err(RunError::Step(e)) => {
                assert_eq!((e.kind.as_str(), e.blame.as_str()), ("failed", "runbook"));
                assert_eq!(e.message, "no disk");
            }
            other => panic!("expected the step error, got {other:?}"),
        }
    }

    #[test]
    fn the_output_is_encoded_as_json() {
        let out = __run(|| Ok(serde_json::json!({"cleaned": 3}))).unwrap();
        assert_eq!(out, r#"{"cleaned":3}"#);
    }
}
