//! The template runbook body in Rust: greets `name` through the `hello` plugin and returns the
//! greeting. `runtime/build.rs` builds it into `main.wasm` next to `runbook.toml`.

use runloom_sdk::runbook::{self, RunError};
use serde::{Deserialize, Serialize};

/// The run's parameters.
#[derive(Debug, Deserialize)]
pub struct Params {
    /// Who to greet.
    #[serde(default = "default_name")]
    pub name: String,
}

fn default_name() -> String {
    "world".to_string()
}

/// The run's output.
#[derive(Debug, Serialize, PartialEq)]
pub struct Output {
    /// What `hello` said.
    pub greeting: String,
    /// What started the run: `manual`, `cron`, `alert` or `webhook`.
    pub trigger: String,
}

fn run() -> Result<Output, RunError> {
    let params: Params = runbook::params()?;
    let trigger: serde_json::Value = runbook::trigger()?;
    let trigger = trigger_kind(&trigger);
    runbook::log::info("greeting", &[("name", &params.name), ("trigger", &trigger)]);
    let reply = runbook::step("greet", || {
        let input = serde_json::json!({ "name": params.name });
        Ok(runbook::call("hello", "greet", &input)?)
    })?;
    Ok(Output {
        greeting: greeting(&reply)?,
        trigger,
    })
}

/// The kind of trigger that started the run.
pub fn trigger_kind(trigger: &serde_json::Value) -> String {
    trigger["kind"].as_str().unwrap_or("unknown").to_string()
}

/// The greeting in `hello.greet`'s output.
pub fn greeting(reply: &serde_json::Value) -> Result<String, RunError> {
    reply["greeting"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| RunError::failed(format!("`hello.greet` returned no greeting: {reply}")))
}

runloom_sdk::export_runbook!(run);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_the_greeting_from_the_reply() {
        let greeting = greeting(&json!({"greeting": "hello, ops"}));
        assert_eq!(greeting.ok().as_deref(), Some("hello, ops"));
    }

    #[test]
    fn a_reply_without_a_greeting_fails_the_run() {
        assert!(matches!(greeting(&json!({})), Err(RunError::Failed(_))));
    }

    #[test]
    fn names_the_trigger_kind() {
        assert_eq!(trigger_kind(&json!({"kind": "cron"})), "cron");
        assert_eq!(trigger_kind(&json!({})), "unknown");
    }
}
