//! Structured log lines into the run's log.
//!
//! ```ignore
//! runloom_sdk::log::info("checked endpoint", &[("url", url), ("status", &status.to_string())]);
//! ```
//!
//! Lines carry the step that produced them; secret values are masked by the engine.

use crate::bindings::runloom::plugin::log::{Level, log};

fn emit(level: Level, message: &str, fields: &[(&str, &str)]) {
    let fields: Vec<(String, String)> = fields
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    log(level, message, &fields);
}

/// Log at `debug` level: diagnostics for plugin authors.
pub fn debug(message: &str, fields: &[(&str, &str)]) {
    emit(Level::Debug, message, fields);
}

/// Log at `info` level: normal progress an operator may want to read.
pub fn info(message: &str, fields: &[(&str, &str)]) {
    emit(Level::Info, message, fields);
}

/// Log at `warn` level: something unexpected that did not stop the action.
pub fn warn(message: &str, fields: &[(&str, &str)]) {
    emit(Level::Warn, message, fields);
}

/// Log at `error` level: something failed.
pub fn error(message: &str, fields: &[(&str, &str)]) {
    emit(Level::Error, message, fields);
}
