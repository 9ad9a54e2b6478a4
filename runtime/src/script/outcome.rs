//! How a script ended, in the engine's terms: Rhai's errors become [`ScriptError`] (at
//! compile time), [`BodyError`] (an uncaught error ends the run) or [`StepError`] (an error
//! leaving a `step(…)`), with messages that name the limit or the call that failed.

use super::host::{self, Stop};
use super::{CONSTANTS, ScriptError, ScriptLimits, sandbox};
use crate::runbook::api::{BodyError, Location, StepError};
use rhai::{EvalAltResult, LexError, ParseError, ParseErrorType, Position};

/// A compile error: where, and what, for the runbook author.
pub(super) fn compile_error(file: &str, error: &ParseError) -> ScriptError {
    let ParseError(kind, position) = error;
    let message = match kind.as_ref() {
        ParseErrorType::BadInput(LexError::ImproperSymbol(word, _))
            if word == "eval" || word == "curry" =>
        {
            format!("`{word}` is not available in runbooks")
        }
        ParseErrorType::Reserved(word) if word == "import" => {
            "`import` is not available in runbooks: a runbook body is one file".to_string()
        }
        other => other.to_string(),
    };
    // Rhai gives every syntax error a position; should one lack it, point at the start.
    let location = location(file, *position).unwrap_or_else(|| Location {
        file: file.to_string(),
        line: 1,
        column: 1,
    });
    ScriptError { location, message }
}

/// How an uncaught error ends the run.
pub(super) fn body_error(file: &str, error: &EvalAltResult, limits: &ScriptLimits) -> BodyError {
    let (ending, position) = classify(error, limits);
    match ending {
        Ending::Cancelled => BodyError::Cancelled,
        Ending::TimedOut => BodyError::TimedOut,
        Ending::Engine(message) => BodyError::Engine(message),
        Ending::Failed(error) => BodyError::Failed {
            message: error.message,
            blame: error.blame,
            location: location(file, position),
            kind: error.kind,
        },
    }
}

/// The error a `step(…)` is recorded with when its closure throws `error`.
pub(super) fn step_error(error: &EvalAltResult, limits: &ScriptLimits) -> StepError {
    match classify(error, limits).0 {
        Ending::Cancelled => StepError::cancelled(),
        Ending::TimedOut => StepError::deadline(),
        Ending::Engine(message) => StepError::new("engine", "engine", message),
        Ending::Failed(error) => error,
    }
}

enum Ending {
    Cancelled,
    TimedOut,
    /// Kind, blame and message as the run or step records them.
    Failed(StepError),
    Engine(String),
}

/// What `error` means, and where it happened (the innermost position: inside the function
/// or closure where it was raised, not where that was called from).
fn classify(error: &EvalAltResult, limits: &ScriptLimits) -> (Ending, Position) {
    let inner = error.unwrap_inner();
    let mut position = match inner.position() {
        position if position.is_none() => error.position(),
        position => position,
    };
    let script = |message: String| Ending::Failed(StepError::new("script", "runbook", message));
    let ending = match inner {
        EvalAltResult::ErrorTerminated(value, _) => {
            match value.read_lock::<Stop>().map(|stop| stop.clone()) {
                Some(Stop::Cancelled) => Ending::Cancelled,
                Some(Stop::Deadline) => Ending::TimedOut,
                Some(Stop::Fail(reason, at)) => {
                    // Rhai moves an uncatchable error's position to each function's call site
                    // on the way out; the position recorded by `fail` is where it was called.
                    position = at;
                    Ending::Failed(StepError::new("fail", "runbook", reason))
                }
                None => script("the script was terminated".to_string()),
            }
        }
        EvalAltResult::ErrorRuntime(value, _) => match host::step_error_of(value) {
            Some(error) if error.kind == "cancelled" => Ending::Cancelled,
            Some(error) if error.kind == "deadline" => Ending::TimedOut,
            Some(error) => Ending::Failed(error),
            None => match value.as_immutable_string_ref() {
                Ok(text) => script(text.to_string()),
                Err(_) => script(format!("uncaught exception: {value}")),
            },
        },
        EvalAltResult::ErrorSystem(..) => Ending::Engine(message_of(inner)),
        EvalAltResult::ErrorTooManyOperations(_) => script(format!(
            "the script ran more than {} operations (the max_operations limit); \
             does a loop never end?",
            limits.max_operations
        )),
        EvalAltResult::ErrorDataTooLarge(what, _) => script(match what.as_str() {
            "Length of string" => format!(
                "a string grew past {} bytes (the max_string_size limit, which counts all \
                 the strings in one array or map together)",
                limits.max_string_size
            ),
            "Size of array/BLOB" => format!(
                "an array grew past {} elements (the max_array_size limit)",
                limits.max_array_size
            ),
            "Size of object map" => format!(
                "a map grew past {} properties (the max_map_size limit)",
                limits.max_map_size
            ),
            sandbox::NESTING => format!(
                "data nested more than {} levels deep (arrays, maps or closures inside \
                 each other); is a value being wrapped in itself in a loop?",
                sandbox::MAX_NESTING
            ),
            other => format!("{other} is over its limit"),
        }),
        EvalAltResult::ErrorStackOverflow(_) => script(format!(
            "function calls nested deeper than {} levels (the max_call_levels limit); \
             does a recursion never end?",
            limits.max_call_levels
        )),
        EvalAltResult::ErrorTooManyModules(_) | EvalAltResult::ErrorModuleNotFound(..) => {
            script("`import` is not available in runbooks: a runbook body is one file".to_string())
        }
        EvalAltResult::ErrorVariableNotFound(name, _) if CONSTANTS.contains(&name.as_str()) => {
            script(format!(
                "Variable not found: {name} (functions declared with `fn` see only their \
                 arguments: pass `{name}` in, or use a closure)"
            ))
        }
        other => script(message_of(other)),
    };
    (ending, position)
}

/// Rhai's message for `error`, without the position it appends (a [`Location`] carries it).
fn message_of(error: &EvalAltResult) -> String {
    let text = error.to_string();
    let suffix = format!(" ({})", error.position());
    match text.strip_suffix(&suffix) {
        Some(message) if !error.position().is_none() => message.to_string(),
        _ => text,
    }
}

/// `position` in `file`, if Rhai knows it. Rhai counts lines and columns from 1; column 0
/// means the start of the line.
fn location(file: &str, position: Position) -> Option<Location> {
    let line = position.line()?;
    Some(Location {
        file: file.to_string(),
        line: u32::try_from(line).unwrap_or(u32::MAX),
        column: u32::try_from(position.position().unwrap_or(1)).unwrap_or(u32::MAX),
    })
}
