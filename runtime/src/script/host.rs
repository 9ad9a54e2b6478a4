//! The host functions a script can call, and how their failures look inside the script.
//!
//! The functions live in one module built once and shared by every engine; each finds the
//! run it belongs to in the engine's tag (a [`RunContext`]), so starting a run registers
//! nothing but the run itself, its operation hook and its log callbacks.

use super::fiber::Suspender;
use super::{ScriptLimits, outcome, value};
use crate::runbook::api::{CallOptions, Level, RunApi, StepError};
use rhai::{
    Array, Dynamic, Engine, EvalAltResult, EvalContext, Expression, FLOAT, FnPtr, FuncRegistration,
    INT, ImmutableString, Map, Module, NativeCallContext, Position, Shared,
};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The progress hook looks at the clock and the cancel flag once per this many operations:
/// at ≈ 0.2 µs per operation that is every ≈ 50 µs, and it keeps the hook off the hot path.
const PROGRESS_CHECK_INTERVAL: u64 = 256;

/// Name of the native helper `call(f, args…)` forwards function pointers to. Not a valid
/// identifier, so scripts cannot name it.
const CALL_FUNCTION_POINTER: &str = "$call_function_pointer$";

/// What a host function returns to Rhai.
type HostResult<T> = Result<T, Box<EvalAltResult>>;

/// What a run's host functions need, kept in the engine's tag.
pub(super) struct RunContext {
    pub(super) api: Arc<dyn RunApi>,
    /// The script's stack, which a host function suspends while it waits.
    pub(super) fiber: Arc<Suspender>,
    pub(super) limits: ScriptLimits,
}

impl RunContext {
    /// Wait for an async [`RunApi`] call: the script is suspended, its thread free for other
    /// tasks, until the call is done.
    fn wait<F: Future>(&self, future: F) -> F::Output {
        self.fiber.wait(future)
    }
}

/// Why a script was stopped from outside its control flow: carried by
/// `ErrorTerminated`, which `try`/`catch` cannot catch.
#[derive(Debug, Clone)]
pub(super) enum Stop {
    /// The run was cancelled.
    Cancelled,
    /// The run's deadline passed.
    Deadline,
    /// The script called `fail(reason)` at this position.
    Fail(String, Position),
}

/// Give `engine` its run: the tag the host functions read, the operation hook that enforces
/// the deadline and cancellation and gives the thread up to other tasks between host calls,
/// and `print`/`debug` into the run log.
pub(super) fn attach(engine: &mut Engine, run: RunContext) {
    let api = Arc::clone(&run.api);
    let fiber = Arc::clone(&run.fiber);
    engine.on_progress(move |operations| {
        fiber.mark_depth();
        if !operations.is_multiple_of(PROGRESS_CHECK_INTERVAL) {
            None
        } else if api.is_cancelled() || fiber.abandoned() {
            Some(Dynamic::from(Stop::Cancelled))
        } else {
            let now = Instant::now();
            if now >= api.deadline() {
                Some(Dynamic::from(Stop::Deadline))
            } else {
                fiber.yield_if_due(now);
                None
            }
        }
    });
    let api = Arc::clone(&run.api);
    engine.on_print(move |text| api.log(Level::Info, text));
    let api = Arc::clone(&run.api);
    engine.on_debug(move |text, _, _| api.log(Level::Debug, text));
    engine.set_default_tag(Dynamic::from(Arc::new(run)));
}

/// The run the current call belongs to.
fn run_of(tag: Option<&Dynamic>) -> HostResult<Arc<RunContext>> {
    tag.and_then(|tag| tag.read_lock::<Arc<RunContext>>())
        .map(|run| Arc::clone(&run))
        .ok_or_else(|| {
            // Only an engine built without `attach` gets here: a bug, not a script error.
            EvalAltResult::ErrorSystem(
                "host function called outside a run".to_string(),
                "the engine has no run attached".into(),
            )
            .into()
        })
}

/// `error` as thrown into the script: interruptions stop it, anything else is a catchable
/// `#{ kind, message, blame, retryable }`.
pub(super) fn throw(error: &StepError) -> Box<EvalAltResult> {
    match error.kind.as_str() {
        "cancelled" => terminate(Stop::Cancelled),
        "deadline" => terminate(Stop::Deadline),
        _ => {
            let mut map = Map::new();
            map.insert("kind".into(), error.kind.clone().into());
            map.insert("message".into(), error.message.clone().into());
            map.insert("blame".into(), error.blame.clone().into());
            map.insert("retryable".into(), error.retryable.into());
            EvalAltResult::ErrorRuntime(map.into(), Position::NONE).into()
        }
    }
}

/// The step error a thrown value stands for, if it has the shape [`throw`] gives (so a
/// caught and re-thrown error keeps its kind and blame).
pub(super) fn step_error_of(value: &Dynamic) -> Option<StepError> {
    let value = value.flatten_clone();
    let map = value.as_map_ref().ok()?;
    let text = |key: &str| {
        map.get(key)
            .and_then(|v| v.as_immutable_string_ref().ok().map(|s| s.to_string()))
    };
    Some(StepError {
        kind: text("kind")?,
        message: text("message")?,
        blame: text("blame")?,
        retryable: map
            .get("retryable")
            .and_then(|v| v.as_bool().ok())
            .unwrap_or(false),
    })
}

fn terminate(stop: Stop) -> Box<EvalAltResult> {
    EvalAltResult::ErrorTerminated(Dynamic::from(stop), Position::NONE).into()
}

/// A host function was called wrongly: a catchable error blamed on the runbook.
fn misuse(message: impl Into<String>) -> Box<EvalAltResult> {
    throw(&StepError::new("script", "runbook", message))
}

/// Text of a value for the log or a reason: strings as they are, anything else as Rhai
/// prints it.
fn text_of(value: &Dynamic) -> String {
    match value.as_immutable_string_ref() {
        Ok(text) => text.to_string(),
        Err(_) => value.to_string(),
    }
}

/// A duration argument: a string like `"30s"` or `"5m"`, or a number of seconds.
fn duration_of(value: &Dynamic, what: &str) -> HostResult<Duration> {
    if let Ok(text) = value.as_immutable_string_ref() {
        return crate::config::parse_duration(&text).map_err(|e| misuse(format!("{what}: {e}")));
    }
    let seconds = if let Ok(seconds) = value.as_int() {
        u64::try_from(seconds).ok().map(Duration::from_secs)
    } else if let Ok(seconds) = value.as_float() {
        Duration::try_from_secs_f64(seconds).ok()
    } else {
        None
    };
    seconds.ok_or_else(|| {
        misuse(format!(
            "{what}: expected a duration like \"30s\" or a number of seconds ≥ 0, not {}",
            describe(value)
        ))
    })
}

/// How a wrong argument reads in an error message: its type, and its value when short and
/// not text (text could be a secret).
fn describe(value: &Dynamic) -> String {
    let shown = value.to_string();
    if value.is_string() || shown.len() > 40 {
        format!("a {}", value.type_name())
    } else {
        format!("{} {shown}", value.type_name())
    }
}

/// Make `call` the plugin call. Rhai treats `call(f, …)` as calling a function pointer and
/// would reject a string as `f`, so `call(…)` is parsed as custom syntax instead; a function
/// pointer as the first argument is still called as Rhai would.
pub(super) fn register_call_syntax(engine: &mut Engine) {
    engine.register_custom_syntax_with_state_raw(
        "call",
        |symbols, look_ahead, _| {
            let last = symbols.last().map_or("", |s| s.as_str());
            Ok(match last {
                "call" => Some("(".into()),
                "(" if look_ahead == ")" => Some(")".into()),
                "(" | "," => Some("$expr$".into()),
                ")" => None,
                // After an argument: another one, or the end.
                _ if look_ahead == "," => Some(",".into()),
                _ => Some(")".into()),
            })
        },
        false,
        call_syntax,
    );
}

/// `call(…)`: evaluate the arguments, then call a plugin or a function pointer.
fn call_syntax(
    context: &mut EvalContext,
    inputs: &[Expression],
    _: &Dynamic,
) -> HostResult<Dynamic> {
    let mut arguments = Vec::with_capacity(inputs.len());
    for input in inputs {
        arguments.push(context.eval_expression_tree(input)?.flatten());
    }
    if arguments.first().is_some_and(Dynamic::is_fnptr) {
        let function = arguments.remove(0);
        return context.call_native_fn::<Dynamic>(
            CALL_FUNCTION_POINTER,
            (function, Dynamic::from_array(arguments)),
        );
    }
    // Custom syntax errors carry no position; the first argument's is the nearest we have.
    let position = inputs.first().map_or(Position::NONE, Expression::position);
    let run = run_of(Some(context.tag()))?;
    call_plugin(&run, arguments).map_err(|mut error| {
        if error.position().is_none() {
            error.set_position(position);
        }
        error
    })
}

/// `call(plugin, action, input[, options])`.
fn call_plugin(run: &RunContext, arguments: Vec<Dynamic>) -> HostResult<Dynamic> {
    let count = arguments.len();
    if !(3..=4).contains(&count) {
        return Err(misuse(format!(
            "call(plugin, action, input[, options]) takes 3 or 4 arguments, not {count}"
        )));
    }
    let mut arguments = arguments.into_iter();
    let mut next = || arguments.next().unwrap_or(Dynamic::UNIT);
    let plugin = string_argument(&next(), "call: the plugin")?;
    let action = string_argument(&next(), "call: the action")?;
    let input = next();
    if !input.is_map() {
        return Err(misuse(format!(
            "call: the input must be a map like #{{ path: \"/var\" }}, not {}",
            describe(&input)
        )));
    }
    let input = value::to_json(&input)
        .map_err(|e| misuse(format!("call: the input cannot be sent as JSON: {e}")))?;
    let options = match count {
        4 => call_options(&next())?,
        _ => CallOptions::default(),
    };
    match run.wait(run.api.call(&plugin, &action, input, options)) {
        Ok(output) => value::from_json(&output).map_err(|e| {
            misuse(format!(
                "call: the output of {plugin}/{action} cannot be used by a script: {e}"
            ))
        }),
        Err(error) => Err(throw(&error)),
    }
}

fn string_argument(value: &Dynamic, what: &str) -> HostResult<String> {
    value
        .as_immutable_string_ref()
        .map(|s| s.to_string())
        .map_err(|_| misuse(format!("{what} must be a string, not {}", describe(value))))
}

/// The options map of `call`: `retries` and `timeout`, nothing else.
fn call_options(value: &Dynamic) -> HostResult<CallOptions> {
    let Ok(map) = value.as_map_ref() else {
        return Err(misuse(format!(
            "call: the options must be a map like #{{ retries: 2, timeout: \"10s\" }}, not {}",
            describe(value)
        )));
    };
    let mut options = CallOptions::default();
    for (key, value) in map.iter() {
        match key.as_str() {
            "retries" => {
                let retries = value.as_int().ok().and_then(|n| u32::try_from(n).ok());
                options.retries = Some(retries.ok_or_else(|| {
                    misuse(format!(
                        "call: retries must be a whole number ≥ 0, not {}",
                        describe(value)
                    ))
                })?);
            }
            "timeout" => options.timeout = Some(duration_of(value, "call: timeout")?),
            other => {
                return Err(misuse(format!(
                    "call: unknown option `{other}` (the options are retries and timeout)"
                )));
            }
        }
    }
    Ok(options)
}

/// The host functions, built once (see `sandbox`).
pub(super) fn module() -> Shared<Module> {
    let mut module = Module::new();
    // Volatile: results depend on the world, so the optimizer must never fold a call.
    let register = |name: &str| FuncRegistration::new(name).with_volatility(true);

    register("step").set_into_module(&mut module, step);
    register(CALL_FUNCTION_POINTER).set_into_module(&mut module, call_function_pointer);
    register("sleep").set_into_module(&mut module, |ctx: NativeCallContext, s: ImmutableString| {
        sleep(&ctx, &Dynamic::from(s))
    });
    register("sleep").set_into_module(&mut module, |ctx: NativeCallContext, s: INT| {
        sleep(&ctx, &Dynamic::from(s))
    });
    register("sleep").set_into_module(&mut module, |ctx: NativeCallContext, s: FLOAT| {
        sleep(&ctx, &Dynamic::from(s))
    });
    register("secret").set_into_module(&mut module, secret);
    register("history").set_into_module(&mut module, history);
    register("now").set_into_module(&mut module, now);
    register("datetime").set_into_module(&mut module, |ms: INT| datetime(ms, "UTC"));
    register("datetime").set_into_module(&mut module, |ms: INT, zone: ImmutableString| {
        datetime(ms, &zone)
    });
    register("fail").set_into_module(&mut module, fail);

    register("log").set_into_module(&mut module, log_at(Level::Info));
    // Shadows the standard library's one-argument `log` (base-10 logarithm) so `log(x)`
    // always logs.
    register("log").set_into_module(&mut module, |ctx: NativeCallContext, x: FLOAT| {
        log_at(Level::Info)(ctx, Dynamic::from(x))
    });
    register("info").set_into_module(&mut module, log_at(Level::Info));
    register("warn").set_into_module(&mut module, log_at(Level::Warn));
    register("error").set_into_module(&mut module, log_at(Level::Error));
    // `debug(x)` is special in Rhai: the function makes the text, then the engine's debug
    // callback (the run log at debug level) receives it. The standard library quotes
    // strings; this keeps them as written.
    register("debug").set_into_module(&mut module, |text: ImmutableString| text);

    register("parse_json").set_into_module(&mut module, parse_json);
    register("to_json").set_into_module(&mut module, |value: Dynamic| to_json(&value));
    // The standard library has its own `to_json` for maps, preferred for exact types.
    register("to_json").set_into_module(&mut module, |value: Map| to_json(&value.into()));
    register("to_json").set_into_module(&mut module, |value: Array| to_json(&value.into()));
    module.into()
}

/// `step(name, || { … })`.
fn step(ctx: NativeCallContext, name: ImmutableString, body: FnPtr) -> HostResult<Dynamic> {
    let run = run_of(ctx.tag())?;
    run.wait(run.api.begin_step(&name));
    let result = body.call_within_context::<Dynamic>(&ctx, ());
    let error = result
        .as_ref()
        .err()
        .map(|error| outcome::step_error(error, &run.limits));
    run.wait(run.api.end_step(error.as_ref()));
    result
}

/// `call(f, args…)` with a function pointer `f`, as Rhai's own `call` would.
fn call_function_pointer(
    ctx: NativeCallContext,
    function: FnPtr,
    arguments: Array,
) -> HostResult<Dynamic> {
    function.call_within_context(&ctx, arguments)
}

fn sleep(ctx: &NativeCallContext, duration: &Dynamic) -> HostResult<()> {
    let duration = duration_of(duration, "sleep")?;
    let run = run_of(ctx.tag())?;
    run.wait(run.api.sleep(duration)).map_err(|e| throw(&e))
}

fn secret(ctx: NativeCallContext, name: ImmutableString) -> HostResult<String> {
    let run = run_of(ctx.tag())?;
    run.wait(run.api.secret(&name)).map_err(|e| throw(&e))
}

fn history(ctx: NativeCallContext, limit: INT) -> HostResult<Dynamic> {
    let run = run_of(ctx.tag())?;
    let limit = u32::try_from(limit.max(0)).unwrap_or(u32::MAX);
    let runs = run.wait(run.api.history(limit)).map_err(|e| throw(&e))?;
    value::from_json(&serde_json::Value::Array(runs)).map_err(|e| misuse(format!("history: {e}")))
}

/// Wall-clock time in Unix milliseconds: the clock `history`'s `started_at` is on. A Wasm
/// body reads the same clock through `wasi:clocks`.
fn now() -> INT {
    chrono::Utc::now().timestamp_millis()
}

/// The calendar fields of `ms` (Unix milliseconds) in the IANA time zone `zone`.
fn datetime(ms: INT, zone: &str) -> HostResult<Map> {
    use chrono::{Datelike, SecondsFormat, Timelike};
    let tz: chrono_tz::Tz = zone.parse().map_err(|_| {
        misuse(format!(
            "datetime: `{zone}` is not an IANA time zone like \"UTC\" or \"Europe/Berlin\""
        ))
    })?;
    let time = chrono::DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| misuse(format!("datetime: {ms} ms is out of range")))?
        .with_timezone(&tz);
    let mut map = Map::new();
    let mut set = |key: &str, value: Dynamic| {
        map.insert(key.into(), value);
    };
    set("year", INT::from(time.year()).into());
    set("month", INT::from(time.month()).into());
    set("day", INT::from(time.day()).into());
    set("hour", INT::from(time.hour()).into());
    set("minute", INT::from(time.minute()).into());
    set("second", INT::from(time.second()).into());
    set(
        "weekday",
        time.format("%a").to_string().to_lowercase().into(),
    );
    set("date", time.format("%Y-%m-%d").to_string().into());
    set(
        "text",
        time.to_rfc3339_opts(SecondsFormat::Secs, true).into(),
    );
    Ok(map)
}

fn fail(ctx: NativeCallContext, reason: Dynamic) -> HostResult<()> {
    Err(terminate(Stop::Fail(text_of(&reason), ctx.call_position())))
}

fn log_at(level: Level) -> impl Fn(NativeCallContext, Dynamic) -> HostResult<()> + Copy {
    move |ctx, message| {
        let run = run_of(ctx.tag())?;
        run.api.log(level, &text_of(&message));
        Ok(())
    }
}

fn parse_json(text: ImmutableString) -> HostResult<Dynamic> {
    let json = serde_json::from_str(&text)
        .map_err(|e| misuse(format!("parse_json: not valid JSON: {e}")))?;
    value::from_json(&json).map_err(|e| misuse(format!("parse_json: {e}")))
}

fn to_json(value: &Dynamic) -> HostResult<String> {
    let json = value::to_json(value).map_err(|e| misuse(format!("to_json: {e}")))?;
    Ok(json.to_string())
}
