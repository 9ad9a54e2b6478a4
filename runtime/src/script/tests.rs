//! The script layer against a fake [`RunApi`]: host functions, errors, limits, interruption.
//! End-to-end runs with real plugins are the executor's tests.

use super::*;
use crate::runbook::api::{CallOptions, Level, StepError};
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// What the fake engine was asked to do, in order.
#[derive(Debug, Clone, PartialEq)]
enum Event {
    Call {
        plugin: String,
        action: String,
        input: Value,
        options: CallOptions,
    },
    BeginStep(String),
    /// The kind of the error the step ended with, if any.
    EndStep(Option<String>),
    Sleep(Duration),
    Log(Level, String),
}

/// A [`RunApi`] that records every request and answers from canned outputs.
struct FakeApi {
    events: Mutex<Vec<Event>>,
    /// Outputs by `plugin/action`; other calls echo their request.
    outputs: HashMap<String, Result<Value, StepError>>,
    parameters: Map<String, Value>,
    trigger: Value,
    secrets: HashMap<String, String>,
    deadline: Instant,
    cancelled: AtomicBool,
    cancel: Notify,
    /// Signalled when a sleep starts or a line is logged, so a test can act mid-run.
    sleeping: Notify,
    logged: Notify,
    /// What `call` does instead of answering, if anything.
    call_misbehaves: Option<Misbehaviour>,
    /// Set when a call left pending was dropped.
    released: AtomicBool,
}

/// A `call` that does not answer.
#[derive(Debug, Clone, Copy)]
enum Misbehaviour {
    /// Never completes (until dropped).
    Hang,
    /// Panics, as a bug in the engine would.
    Panic,
}

/// Sets its flag when dropped.
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl FakeApi {
    fn new() -> Self {
        Self {
            events: Mutex::new(Vec::new()),
            outputs: HashMap::new(),
            parameters: Map::new(),
            trigger: json!({ "kind": "manual" }),
            secrets: HashMap::new(),
            deadline: Instant::now() + Duration::from_secs(300),
            cancelled: AtomicBool::new(false),
            cancel: Notify::new(),
            sleeping: Notify::new(),
            logged: Notify::new(),
            call_misbehaves: None,
            released: AtomicBool::new(false),
        }
    }

    fn misbehaving(mut self, misbehaviour: Misbehaviour) -> Self {
        self.call_misbehaves = Some(misbehaviour);
        self
    }

    fn output(mut self, call: &str, output: Result<Value, StepError>) -> Self {
        self.outputs.insert(call.to_string(), output);
        self
    }

    fn deadline_in(mut self, timeout: Duration) -> Self {
        self.deadline = Instant::now() + timeout;
        self
    }

    fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
        self.cancel.notify_waiters();
    }

    fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }

    fn record(&self, event: Event) {
        self.events.lock().unwrap().push(event);
    }
}

#[async_trait::async_trait]
impl RunApi for FakeApi {
    async fn call(
        &self,
        plugin: &str,
        action: &str,
        input: Value,
        options: CallOptions,
    ) -> Result<Value, StepError> {
        self.record(Event::Call {
            plugin: plugin.to_string(),
            action: action.to_string(),
            input: input.clone(),
            options,
        });
        match self.call_misbehaves {
            Some(Misbehaviour::Hang) => {
                let _release = SetOnDrop(&self.released);
                std::future::pending::<()>().await;
            }
            Some(Misbehaviour::Panic) => panic!("the fake engine broke"),
            None => {}
        }
        match self.outputs.get(&format!("{plugin}/{action}")) {
            Some(output) => output.clone(),
            None => Ok(json!({ "plugin": plugin, "action": action, "input": input })),
        }
    }

    async fn begin_step(&self, name: &str) {
        self.record(Event::BeginStep(name.to_string()));
    }

    async fn end_step(&self, error: Option<&StepError>) {
        self.record(Event::EndStep(error.map(|e| e.kind.clone())));
    }

    async fn sleep(&self, duration: Duration) -> Result<(), StepError> {
        self.record(Event::Sleep(duration));
        let cancelled = self.cancel.notified();
        tokio::pin!(cancelled);
        cancelled.as_mut().enable();
        self.sleeping.notify_one();
        if self.cancelled.load(Ordering::SeqCst) {
            return Err(StepError::cancelled());
        }
        tokio::select! {
            () = tokio::time::sleep(duration) => Ok(()),
            () = cancelled => Err(StepError::cancelled()),
        }
    }

    fn log(&self, level: Level, message: &str) {
        self.record(Event::Log(level, message.to_string()));
        self.logged.notify_one();
    }

    async fn secret(&self, name: &str) -> Result<String, StepError> {
        self.secrets.get(name).cloned().ok_or_else(|| {
            StepError::new(
                "denied",
                "runbook",
                format!("secret `{name}` is not granted"),
            )
        })
    }

    async fn history(&self, limit: u32) -> Result<Vec<Value>, StepError> {
        Ok((1..=limit.min(2))
            .map(|i| json!({"id": format!("r{i}"), "output": {"used": i}}))
            .collect())
    }

    fn parameters(&self) -> &Map<String, Value> {
        &self.parameters
    }

    fn trigger(&self) -> &Value {
        &self.trigger
    }

    fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }

    fn deadline(&self) -> Instant {
        self.deadline
    }
}

const FILE: &str = "runbooks/test/main.rhai";

fn compile(source: &str) -> Script {
    match Script::compile(FILE, source) {
        Ok(script) => script,
        Err(error) => panic!("the test script does not compile: {error}"),
    }
}

async fn run_with(
    source: &str,
    api: &Arc<FakeApi>,
    limits: ScriptLimits,
) -> Result<Value, BodyError> {
    let api: Arc<dyn RunApi> = api.clone();
    compile(source).run(api, limits).await
}

/// Limits with no bound on operations, for scripts that must be stopped some other way.
fn no_operation_limit() -> ScriptLimits {
    ScriptLimits {
        max_operations: 0,
        ..ScriptLimits::default()
    }
}

/// Runs `source` in a task of its own, so the test can act while it runs.
fn spawn_run(
    source: &'static str,
    api: &Arc<FakeApi>,
    limits: ScriptLimits,
) -> tokio::task::JoinHandle<Result<Value, BodyError>> {
    let api = api.clone();
    tokio::spawn(async move { run_with(source, &api, limits).await })
}

async fn run(source: &str, api: &Arc<FakeApi>) -> Result<Value, BodyError> {
    run_with(source, api, ScriptLimits::default()).await
}

async fn run_alone(source: &str) -> Result<Value, BodyError> {
    run(source, &Arc::new(FakeApi::new())).await
}

fn timeout_error() -> StepError {
    StepError {
        kind: "timeout".to_string(),
        message: "no answer within 5s".to_string(),
        blame: "plugin".to_string(),
        retryable: true,
    }
}

fn at(line: u32, column: u32) -> Option<Location> {
    Some(Location {
        file: FILE.to_string(),
        line,
        column,
    })
}

/// The message of a `Failed` ending with `kind`, or a panic naming what happened instead.
fn failed_message(result: Result<Value, BodyError>, kind: &str) -> String {
    match result {
        Err(BodyError::Failed {
            kind: actual,
            message,
            ..
        }) if actual == kind => message,
        other => panic!("expected a `{kind}` failure, got {other:?}"),
    }
}

/// Bounds a test that waits for the script, so a regression fails instead of hanging.
async fn within_a_minute<T>(future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(60), future).await {
        Ok(value) => value,
        Err(_) => panic!("the script did not stop"),
    }
}

#[tokio::test]
async fn call_passes_a_map_and_returns_the_output_as_rhai_values() {
    let api = Arc::new(FakeApi::new().output(
        "disk/usage",
        Ok(json!({ "used_percent": 91.5, "mounts": ["/", "/var"], "ok": false, "note": null })),
    ));
    let result = run(
        r#"
        let out = call("disk", "usage", #{ path: "/var", min: 5, nested: #{ list: [1, 2.5, true, ()] } });
        #{ used: out.used_percent, second: out.mounts[1], ok: out.ok, note: out.note, count: out.mounts.len() }
        "#,
        &api,
    )
    .await;
    assert_eq!(
        result,
        Ok(json!({ "used": 91.5, "second": "/var", "ok": false, "note": null, "count": 2 }))
    );
    assert_eq!(
        api.events(),
        vec![Event::Call {
            plugin: "disk".to_string(),
            action: "usage".to_string(),
            input: json!({ "path": "/var", "min": 5, "nested": { "list": [1, 2.5, true, null] } }),
            options: CallOptions::default(),
        }]
    );
}

#[tokio::test]
async fn call_options_override_retries_and_timeout() {
    let api = Arc::new(FakeApi::new());
    let result = run(
        r#"
        call("p", "a", #{}, #{ retries: 2, timeout: "10s" });
        call("p", "a", #{}, #{ timeout: 5 });
        "#,
        &api,
    )
    .await;
    assert!(result.is_ok(), "{result:?}");
    let options: Vec<CallOptions> = api
        .events()
        .into_iter()
        .filter_map(|event| match event {
            Event::Call { options, .. } => Some(options),
            _ => None,
        })
        .collect();
    assert_eq!(
        options,
        vec![
            CallOptions {
                retries: Some(2),
                timeout: Some(Duration::from_secs(10)),
            },
            CallOptions {
                retries: None,
                timeout: Some(Duration::from_secs(5)),
            },
        ]
    );

    let message = failed_message(
        run_alone(r#"call("p", "a", #{}, #{ retry: 2 })"#).await,
        "script",
    );
    assert!(message.contains("unknown option `retry`"), "{message}");
}

#[tokio::test]
async fn call_refuses_arguments_of_the_wrong_type() {
    let message = failed_message(run_alone(r#"call(42, "a", #{})"#).await, "script");
    assert!(message.contains("the plugin must be a string"), "{message}");
    let message = failed_message(run_alone(r#"call("p", "a", "x")"#).await, "script");
    assert!(message.contains("the input must be a map"), "{message}");
    let message = failed_message(run_alone(r#"call("p", "a")"#).await, "script");
    assert!(
        message.contains("takes 3 or 4 arguments, not 2"),
        "{message}"
    );
}

#[tokio::test]
async fn step_errors_are_catchable_with_their_kind_blame_and_message() {
    let api = Arc::new(FakeApi::new().output("http/get", Err(timeout_error())));
    let result = run(
        r#"
        let seen = "no error";
        try {
            call("http", "get", #{ url: "https://example.com" });
        } catch (e) {
            seen = `${e.kind}/${e.blame}/${e.retryable}/${e.message}`;
        }
        seen
        "#,
        &api,
    )
    .await;
    assert_eq!(result, Ok(json!("timeout/plugin/true/no answer within 5s")));
}

#[tokio::test]
async fn an_uncaught_step_error_fails_the_run_with_its_kind_and_the_call_location() {
    let api = Arc::new(FakeApi::new().output("http/get", Err(timeout_error())));
    let result = run(
        "let a = 1;\nlet out = call(\"http\", \"get\", #{});\n",
        &api,
    )
    .await;
    assert_eq!(
        result,
        Err(BodyError::Failed {
            message: "no answer within 5s".to_string(),
            blame: "plugin".to_string(),
            location: at(2, 16),
            kind: "timeout".to_string(),
        })
    );

    // Inside a function, the location is where the call failed, not where `check` was called.
    let result = run(
        "fn check() {\n    call(\"http\", \"get\", #{})\n}\ncheck()\n",
        &api,
    )
    .await;
    assert!(
        matches!(&result, Err(BodyError::Failed { kind, location, .. })
            if kind == "timeout" && *location == at(2, 10)),
        "{result:?}"
    );

    // Caught and thrown again, it keeps its kind and blame.
    let result = run(
        "try {\n  call(\"http\", \"get\", #{});\n} catch (e) {\n  throw e;\n}\n",
        &api,
    )
    .await;
    assert!(
        matches!(&result, Err(BodyError::Failed { kind, blame, location, .. })
            if kind == "timeout" && blame == "plugin" && *location == at(4, 3)),
        "{result:?}"
    );
}

#[tokio::test]
async fn fail_ends_the_run_as_failed_and_cannot_be_caught() {
    let result = run_alone(
        "let used = 97;\ntry {\n    fail(`disk still ${used}% full`);\n} catch (e) {\n    \"caught\"\n}\n",
    )
    .await;
    assert_eq!(
        result,
        Err(BodyError::Failed {
            message: "disk still 97% full".to_string(),
            blame: "runbook".to_string(),
            location: at(3, 5),
            kind: "fail".to_string(),
        })
    );
}

#[tokio::test]
async fn a_runtime_error_fails_the_run_with_kind_script_and_its_location() {
    let result = run_alone("let x = 1;\n  no_such_function(x)\n").await;
    assert_eq!(
        result,
        Err(BodyError::Failed {
            message: "Function not found: no_such_function (i64)".to_string(),
            blame: "runbook".to_string(),
            location: at(2, 3),
            kind: "script".to_string(),
        })
    );

    let result = run_alone("\nthrow \"giving up\";").await;
    assert_eq!(
        result,
        Err(BodyError::Failed {
            message: "giving up".to_string(),
            blame: "runbook".to_string(),
            location: at(2, 1),
            kind: "script".to_string(),
        })
    );
}

#[test]
fn a_syntax_error_is_a_definition_error_with_file_line_and_column() {
    let error = Script::compile(FILE, "let a = 1;\nlet b = ;\n").unwrap_err();
    assert_eq!(error.location, at(2, 9).unwrap());
    assert!(
        error
            .to_string()
            .starts_with("runbooks/test/main.rhai:2:9: "),
        "{error}"
    );

    // Variables are strict: a typo is caught when the runbook is loaded.
    let error = Script::compile(FILE, "let count = 1;\ncuont + 1\n").unwrap_err();
    assert_eq!(error.location, at(2, 1).unwrap());
    assert!(error.message.contains("cuont"), "{error}");
}

#[test]
fn eval_is_refused() {
    let error = Script::compile(FILE, "eval(\"1\")").unwrap_err();
    assert_eq!(error.message, "`eval` is not available in runbooks");
    assert_eq!(error.location, at(1, 1).unwrap());
}

#[test]
fn curry_is_refused() {
    let error = Script::compile(
        FILE,
        "fn g(a, b) { a }\nlet f = Fn(\"g\");\nf = curry(f, f);\n",
    )
    .unwrap_err();
    assert_eq!(error.message, "`curry` is not available in runbooks");
    assert_eq!(error.location, at(3, 5).unwrap());
    // Method style is refused too, if less eloquently (Rhai's parser wants a property name).
    assert!(Script::compile(FILE, "let f = Fn(\"g\");\nf = f.curry(f);\n").is_err());
}

#[tokio::test]
async fn data_nested_in_itself_stops_before_the_stack_runs_out() {
    let message = failed_message(run_alone("let a = []; loop { a = [a]; }").await, "script");
    assert!(message.contains("nested more than 128 levels"), "{message}");
    let message = failed_message(
        run_alone("let m = #{}; loop { m = #{ x: #{ y: #{ z: m } } }; }").await,
        "script",
    );
    assert!(message.contains("nested more than 128 levels"), "{message}");

    // A chain of closures, each capturing the previous one.
    let message = failed_message(
        run_alone("let f = || 1; loop { let h = f; f = || h; }").await,
        "script",
    );
    assert!(message.contains("nested more than 128 levels"), "{message}");

    // A closure that captures itself (to recurse) is a cycle, not deep nesting.
    let result = run_alone(
        "let fact = 0;\nfact = |n| if n < 2 { 1 } else { n * call(fact, n - 1) };\ncall(fact, 10)",
    )
    .await;
    assert_eq!(result, Ok(json!(3_628_800)));
}

#[test]
fn import_is_refused() {
    let error = Script::compile(FILE, "import \"x\" as y;\n").unwrap_err();
    assert!(
        error.message.contains("`import` is not available"),
        "{error}"
    );
}

#[tokio::test]
async fn an_endless_loop_stops_at_max_operations() {
    let limits = ScriptLimits {
        max_operations: 10_000,
        ..ScriptLimits::default()
    };
    let api = Arc::new(FakeApi::new());
    let message = failed_message(run_with("while true {}", &api, limits).await, "script");
    assert!(
        message.contains("10000 operations (the max_operations limit)"),
        "{message}"
    );
}

#[tokio::test]
async fn a_doubling_string_stops_at_the_string_limit() {
    let message = failed_message(
        run_alone(r#"let s = "x"; loop { s += s; }"#).await,
        "script",
    );
    assert!(message.contains("max_string_size"), "{message}");
}

#[tokio::test]
async fn growing_arrays_and_maps_stop_at_their_limits() {
    let limits = ScriptLimits {
        max_array_size: 1_000,
        max_map_size: 1_000,
        ..ScriptLimits::default()
    };
    let api = Arc::new(FakeApi::new());
    let message = failed_message(
        run_with("let a = []; loop { a.push(1); }", &api, limits).await,
        "script",
    );
    assert!(
        message.contains("1000 elements (the max_array_size limit)"),
        "{message}"
    );

    // Index assignment: Rhai checks only the new element, the scope check catches the map.
    let message = failed_message(
        run_with(
            "let m = #{}; let i = 0; loop { m[`k${i}`] = i; i += 1; }",
            &api,
            limits,
        )
        .await,
        "script",
    );
    assert!(
        message.contains("1000 properties (the max_map_size limit)"),
        "{message}"
    );
}

#[tokio::test]
async fn replacing_array_elements_with_big_strings_stops_at_the_string_limit() {
    let limits = ScriptLimits {
        max_string_size: 1 << 20,
        ..ScriptLimits::default()
    };
    let api = Arc::new(FakeApi::new());
    let message = failed_message(
        run_with(
            r#"
            let a = [];
            for i in 0..100 { a.push(""); }
            let big = "x";
            while big.len() < 100000 { big += big; }
            let i = 0;
            loop { a[i % 100] = big + i; i += 1; }
            "#,
            &api,
            limits,
        )
        .await,
        "script",
    );
    assert!(
        message.contains("1048576 bytes (the max_string_size limit"),
        "{message}"
    );
}

#[tokio::test]
async fn deep_recursion_stops_at_max_call_levels() {
    let message = failed_message(run_alone("fn f(n) { f(n + 1) }\nf(0)").await, "script");
    assert!(
        message.contains("64 levels (the max_call_levels limit)"),
        "{message}"
    );

    // Closures run by `step` cost more stack per level than plain functions; the limit
    // must still stop them before the thread's stack runs out.
    let message = failed_message(
        run_alone("fn f(n) { step(`level ${n}`, || f(n + 1)) }\nf(0)").await,
        "script",
    );
    assert!(message.contains("max_call_levels"), "{message}");
}

#[tokio::test]
async fn the_run_deadline_stops_a_busy_loop() {
    let api = Arc::new(FakeApi::new().deadline_in(Duration::from_millis(100)));
    let result = within_a_minute(run_with(
        "let i = 0; loop { i += 1; }",
        &api,
        no_operation_limit(),
    ))
    .await;
    assert_eq!(result, Err(BodyError::TimedOut));
}

#[tokio::test]
async fn cancelling_the_run_stops_a_busy_loop() {
    let api = Arc::new(FakeApi::new());
    let running = spawn_run("log(\"started\"); loop {}", &api, no_operation_limit());
    api.logged.notified().await;
    api.cancel();
    let result = within_a_minute(running).await.unwrap();
    assert_eq!(result, Err(BodyError::Cancelled));
}

#[tokio::test]
async fn a_run_cancelled_before_it_starts_does_not_start() {
    let api = Arc::new(FakeApi::new());
    api.cancel();
    assert_eq!(
        run("call(\"p\", \"a\", #{})", &api).await,
        Err(BodyError::Cancelled)
    );
    assert_eq!(api.events(), vec![]);
}

#[tokio::test]
async fn sleep_returns_early_when_the_run_is_cancelled() {
    let api = Arc::new(FakeApi::new());
    let running = spawn_run("sleep(\"1h\"); \"woke up\"", &api, ScriptLimits::default());
    api.sleeping.notified().await;
    api.cancel();
    let result = within_a_minute(running).await.unwrap();
    assert_eq!(result, Err(BodyError::Cancelled));
    assert_eq!(api.events(), vec![Event::Sleep(Duration::from_secs(3600))]);
}

#[tokio::test]
async fn sleep_takes_duration_strings_and_seconds() {
    let api = Arc::new(FakeApi::new());
    let result = run("sleep(0); sleep(0.001); sleep(\"2ms\"); \"done\"", &api).await;
    assert_eq!(result, Ok(json!("done")));
    assert_eq!(
        api.events(),
        vec![
            Event::Sleep(Duration::ZERO),
            Event::Sleep(Duration::from_millis(1)),
            Event::Sleep(Duration::from_millis(2)),
        ]
    );
    let message = failed_message(run_alone("sleep(-1)").await, "script");
    assert!(message.contains("sleep: expected a duration"), "{message}");
}

#[tokio::test]
async fn interruptions_from_the_engine_cannot_be_caught() {
    let api = Arc::new(
        FakeApi::new()
            .output("slow/op", Err(StepError::deadline()))
            .output("any/op", Err(StepError::cancelled())),
    );
    let result = run(
        "try { call(\"slow\", \"op\", #{}) } catch (e) { \"swallowed\" }",
        &api,
    )
    .await;
    assert_eq!(result, Err(BodyError::TimedOut));
    let result = run(
        "try { call(\"any\", \"op\", #{}) } catch (e) { \"swallowed\" }",
        &api,
    )
    .await;
    assert_eq!(result, Err(BodyError::Cancelled));
}

#[tokio::test]
async fn step_groups_calls_returns_the_closure_value_and_records_errors() {
    let api = Arc::new(FakeApi::new().output("http/get", Err(timeout_error())));
    let result = run(
        r#"
        let used = step("check", || { call("disk", "usage", #{}); 42 });
        try { step("fix", || { call("http", "get", #{}) }); } catch (e) { }
        used
        "#,
        &api,
    )
    .await;
    assert_eq!(result, Ok(json!(42)));
    let events: Vec<Event> = api
        .events()
        .into_iter()
        .map(|event| match event {
            Event::Call { plugin, action, .. } => Event::Call {
                plugin,
                action,
                input: json!({}),
                options: CallOptions::default(),
            },
            other => other,
        })
        .collect();
    let call = |plugin: &str, action: &str| Event::Call {
        plugin: plugin.to_string(),
        action: action.to_string(),
        input: json!({}),
        options: CallOptions::default(),
    };
    assert_eq!(
        events,
        vec![
            Event::BeginStep("check".to_string()),
            call("disk", "usage"),
            Event::EndStep(None),
            Event::BeginStep("fix".to_string()),
            call("http", "get"),
            Event::EndStep(Some("timeout".to_string())),
        ]
    );
}

#[tokio::test]
async fn a_step_that_throws_is_recorded_failed_and_the_error_goes_on() {
    let api = Arc::new(FakeApi::new());
    let result = run(
        "step(\"verify\", || {\n  fail(\"still full\");\n});\n\"unreached\"",
        &api,
    )
    .await;
    assert_eq!(
        result,
        Err(BodyError::Failed {
            message: "still full".to_string(),
            blame: "runbook".to_string(),
            location: at(2, 3),
            kind: "fail".to_string(),
        })
    );
    assert_eq!(
        api.events(),
        vec![
            Event::BeginStep("verify".to_string()),
            Event::EndStep(Some("fail".to_string())),
        ]
    );

    let api = Arc::new(FakeApi::new());
    let message = failed_message(
        run("step(\"s\", || {\n  let x = #{};\n  x.a.b\n})", &api).await,
        "script",
    );
    assert!(!message.is_empty());
    assert_eq!(
        api.events(),
        vec![
            Event::BeginStep("s".to_string()),
            Event::EndStep(Some("script".to_string())),
        ]
    );
}

#[tokio::test]
async fn params_trigger_and_alert_are_constants() {
    let mut api = FakeApi::new();
    api.parameters = json!({ "path": "/var", "threshold": 90 })
        .as_object()
        .cloned()
        .unwrap();
    api.trigger = json!({
        "kind": "alert",
        "alert": { "status": "firing", "labels": { "instance": "db1" } },
    });
    let api = Arc::new(api);
    let result = run(
        r#"
        let captured = step("s", || params.path);
        #{ path: params.path, over: params.threshold > 80, kind: trigger.kind,
           instance: alert.labels.instance, captured: captured }
        "#,
        &api,
    )
    .await;
    assert_eq!(
        result,
        Ok(
            json!({ "path": "/var", "over": true, "kind": "alert", "instance": "db1", "captured": "/var" })
        )
    );

    let result = run("params.path = \"/\";", &api).await;
    assert!(
        matches!(&result, Err(BodyError::Failed { kind, .. }) if kind == "script"),
        "{result:?}"
    );

    // Functions declared with `fn` see only their arguments; the error says so.
    let message = failed_message(run("fn f() { params.path }\nf()", &api).await, "script");
    assert!(message.contains("pass `params` in"), "{message}");

    // Not started by an alert: `alert` is `()`.
    let result =
        run_alone("#{ none: alert == (), kind: trigger.kind, params: params.len() }").await;
    assert_eq!(
        result,
        Ok(json!({ "none": true, "kind": "manual", "params": 0 }))
    );
}

#[tokio::test]
async fn the_final_value_becomes_json_output() {
    assert_eq!(run_alone("()").await, Ok(Value::Null));
    assert_eq!(run_alone("let x = 5;").await, Ok(Value::Null));
    assert_eq!(run_alone("if true { return 7; } 8").await, Ok(json!(7)));
    assert_eq!(
        run_alone(r#"#{ a: (), b: [1, 2.5, "s", true, 'c'], c: #{ d: -1 } }"#).await,
        Ok(json!({ "a": null, "b": [1, 2.5, "s", true, "c"], "c": { "d": -1 } }))
    );
    let message = failed_message(run_alone("|x| x + 1").await, "script");
    assert!(message.contains("no JSON form"), "{message}");
}

#[tokio::test]
async fn parse_json_and_to_json_round_trip() {
    let result = run_alone(
        r#"
        let v = parse_json(`{"a": [1, 2.5, {"b": null}], "c": "text"}`);
        #{ text: to_json(v), first: v.a[0], list: to_json([1, "x"]), number: to_json(3) }
        "#,
    )
    .await;
    assert_eq!(
        result,
        Ok(json!({
            "text": r#"{"a":[1,2.5,{"b":null}],"c":"text"}"#,
            "first": 1,
            "list": r#"[1,"x"]"#,
            "number": "3",
        }))
    );
    let result = run_alone(
        r#"let kind = (); try { parse_json("{nope"); } catch (e) { kind = e.kind; } kind"#,
    )
    .await;
    assert_eq!(result, Ok(json!("script")));
}

#[tokio::test]
async fn log_functions_and_print_write_the_run_log() {
    let api = Arc::new(FakeApi::new());
    let result = run(
        r#"log("a"); info("b"); debug("c"); warn("d"); error("e"); print("f"); debug(42); log(1.5); info(#{ x: 1 });"#,
        &api,
    )
    .await;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(
        api.events(),
        vec![
            Event::Log(Level::Info, "a".to_string()),
            Event::Log(Level::Info, "b".to_string()),
            Event::Log(Level::Debug, "c".to_string()),
            Event::Log(Level::Warn, "d".to_string()),
            Event::Log(Level::Error, "e".to_string()),
            Event::Log(Level::Info, "f".to_string()),
            Event::Log(Level::Debug, "42".to_string()),
            Event::Log(Level::Info, "1.5".to_string()),
            Event::Log(Level::Info, "#{\"x\": 1}".to_string()),
        ]
    );
}

#[tokio::test]
async fn secret_returns_a_granted_value_and_throws_otherwise() {
    let mut api = FakeApi::new();
    api.secrets
        .insert("token".to_string(), "s3cr3t".to_string());
    let api = Arc::new(api);
    let result = run(
        r#"
        let token = secret("token");
        let missing = ();
        try { secret("other"); } catch (e) { missing = `${e.kind}: ${e.message}`; }
        [token, missing]
        "#,
        &api,
    )
    .await;
    assert_eq!(
        result,
        Ok(json!(["s3cr3t", "denied: secret `other` is not granted"]))
    );
}

#[tokio::test]
async fn call_with_a_function_pointer_calls_it() {
    let result = run_alone(
        r#"
        fn double(x) { x * 2 }
        let add = |a, b| a + b;
        [call(add, 40, 2), call(Fn("double"), 4)]
        "#,
    )
    .await;
    assert_eq!(result, Ok(json!([42, 8])));
}

#[tokio::test]
async fn one_compiled_script_serves_concurrent_runs() {
    let script = compile("let out = call(\"p\", \"a\", #{ n: params.n }); out.input.n");
    let runs = (0..4).map(|n| {
        let mut api = FakeApi::new();
        api.parameters.insert("n".to_string(), json!(n));
        let api: Arc<dyn RunApi> = Arc::new(api);
        let script = script.clone();
        tokio::spawn(async move { script.run(api, ScriptLimits::default()).await })
    });
    for (n, run) in runs.collect::<Vec<_>>().into_iter().enumerate() {
        assert_eq!(run.await.unwrap(), Ok(json!(n)));
    }
}

#[tokio::test]
async fn history_returns_earlier_outputs_as_maps() {
    let out = run_alone("let h = history(5); [h.len(), h[0].output.used, h[1].id]")
        .await
        .unwrap();
    assert_eq!(out, json!([2, 1, "r2"]));
}

#[tokio::test]
async fn now_is_wall_clock_milliseconds_and_datetime_reads_it_in_a_zone() {
    let before = chrono::Utc::now().timestamp_millis();
    let out = run_alone("now()").await.unwrap();
    let after = chrono::Utc::now().timestamp_millis();
    let now = out.as_i64().unwrap();
    assert!(
        (before..=after).contains(&now),
        "{before} <= {now} <= {after}"
    );

    // 2026-03-29T01:30:00Z: the first minutes of summer time in Berlin.
    let out = run_alone(
        r#"let t = 1774747800000; [datetime(t), datetime(t, "Europe/Berlin").text, datetime(t, "Europe/Berlin").hour]"#,
    )
    .await
    .unwrap();
    assert_eq!(
        out,
        json!([
            {"year": 2026, "month": 3, "day": 29, "hour": 1, "minute": 30, "second": 0,
             "weekday": "sun", "date": "2026-03-29", "text": "2026-03-29T01:30:00Z"},
            "2026-03-29T03:30:00+02:00",
            3
        ])
    );
    let err = run_alone(r#"datetime(0, "Mars/Olympus")"#)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("`Mars/Olympus` is not an IANA time zone"),
        "{err}"
    );
}

/// The trigger is given to a script only when its source names `trigger` or `alert`: a
/// trigger nested too deeply for Rhai fails the runs of scripts that read it, and no other.
#[tokio::test]
async fn only_a_script_that_names_the_trigger_is_given_it() {
    let mut deep = json!("bottom");
    for _ in 0..200 {
        deep = json!({ "down": deep });
    }
    let mut api = FakeApi::new();
    api.parameters = json!({ "path": "/var" }).as_object().cloned().unwrap();
    api.trigger = json!({ "kind": "webhook", "name": "deep", "body": deep });
    let api = Arc::new(api);
    assert_eq!(run("params.path", &api).await, Ok(json!("/var")));
    let result = run("trigger.kind", &api).await;
    assert!(
        matches!(&result, Err(BodyError::Engine(m)) if m.contains("trigger")),
        "{result:?}"
    );
    // Named anywhere, even in a comment, it is given.
    let result = run("// the alert is not read here\nparams.path", &api).await;
    assert!(matches!(&result, Err(BodyError::Engine(_))), "{result:?}");
}

/// A script waiting in a host call holds no thread: with one worker thread and one blocking
/// thread, a thousand scripts all get to their `sleep` at once.
#[test]
fn a_thousand_waiting_scripts_hold_no_thread() {
    const RUNS: usize = 1_000;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .max_blocking_threads(1)
        .build()
        .unwrap();
    runtime.block_on(async {
        let api = Arc::new(FakeApi::new());
        let script = compile("sleep(\"1h\"); \"woke up\"");
        let runs: Vec<_> = (0..RUNS)
            .map(|_| {
                let api: Arc<dyn RunApi> = api.clone();
                let script = script.clone();
                tokio::spawn(async move { script.run(api, ScriptLimits::default()).await })
            })
            .collect();
        within_a_minute(async {
            while api.events().len() < RUNS {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await;
        api.cancel();
        for run in runs {
            assert_eq!(
                within_a_minute(run).await.unwrap(),
                Err(BodyError::Cancelled)
            );
        }
    });
}

/// A script computing for long gives its thread up now and then: on a single-threaded
/// runtime, another task runs while the loop is still going.
#[tokio::test]
async fn a_busy_script_lets_other_tasks_run() {
    let api = Arc::new(FakeApi::new());
    let source = r#"
        log("started");
        let i = 0;
        while i < 300000 { i += 1; }
        log("done");
    "#;
    let running = spawn_run(source, &api, no_operation_limit());
    api.logged.notified().await;
    api.log(Level::Info, "another task");
    within_a_minute(running).await.unwrap().unwrap();
    let logged: Vec<_> = api
        .events()
        .into_iter()
        .filter_map(|event| match event {
            Event::Log(_, text) => Some(text),
            _ => None,
        })
        .collect();
    assert_eq!(logged, ["started", "another task", "done"]);
}

/// Runs `script` against a call that never answers and drops the run after 50 ms, on a
/// runtime of its own that is shut down without waiting for anything still running (a
/// script left running would otherwise hang the test instead of failing it). Returns
/// whether the hanging call was released by then, and the events.
fn drop_a_hanging_run(script: &'static str) -> (bool, Vec<Event>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let api = Arc::new(FakeApi::new().misbehaving(Misbehaviour::Hang));
    let result = runtime.block_on(async {
        tokio::time::timeout(Duration::from_millis(50), run(script, &api)).await
    });
    let released = api.released.load(Ordering::SeqCst);
    runtime.shutdown_timeout(Duration::from_millis(100));
    assert!(result.is_err(), "the hanging call answered: {result:?}");
    (released, api.events())
}

/// Dropping a run's future (the executor does so when the run is cancelled or overruns its
/// deadline) unwinds its script at once: the call it was waiting in is released then, not
/// whenever the script would have noticed.
#[test]
fn dropping_a_run_releases_the_call_it_waits_in_at_once() {
    let (released, events) = drop_a_hanging_run("call(\"p\", \"a\", #{}); log(\"went on\")");
    assert!(released);
    assert_eq!(events.len(), 1, "{events:?}");
}

/// A script that catches the unwinding (Rhai's `sort` turns a panic in its comparer into an
/// error a script can catch) still stops when its run is dropped.
#[test]
fn a_dropped_run_stops_even_if_its_script_catches_the_unwinding() {
    let (released, _) = drop_a_hanging_run(
        r#"
        loop {
            try { [2, 1].sort(|a, b| { call("p", "a", #{}); a - b }); } catch { }
        }
        "#,
    );
    assert!(released);
}

/// A panic in the engine while a script runs fails that run as an engine error; the task
/// running it goes on.
#[tokio::test]
async fn a_panic_in_the_engine_fails_the_run_as_an_engine_error() {
    let api = Arc::new(FakeApi::new().misbehaving(Misbehaviour::Panic));
    let result = run("call(\"p\", \"a\", #{})", &api).await;
    assert!(
        matches!(&result, Err(BodyError::Engine(m)) if m.contains("the fake engine broke")),
        "{result:?}"
    );
    assert_eq!(run_alone("40 + 2").await, Ok(json!(42)));
}

/// Scripts suspended in host calls are resumed on whichever worker thread polls them next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_resume_on_any_worker_thread() {
    let script = compile(
        r#"
        let total = 0;
        for i in 0..5 {
            sleep(0.001);
            total += call("p", "a", #{ n: params.n * 10 + i }).input.n;
        }
        total
        "#,
    );
    let runs: Vec<_> = (0..200)
        .map(|n| {
            let mut api = FakeApi::new();
            api.parameters.insert("n".to_string(), json!(n));
            let api: Arc<dyn RunApi> = Arc::new(api);
            let script = script.clone();
            tokio::spawn(async move { script.run(api, ScriptLimits::default()).await })
        })
        .collect();
    for (n, run) in runs.into_iter().enumerate() {
        let n = i64::try_from(n).unwrap();
        assert_eq!(within_a_minute(run).await.unwrap(), Ok(json!(n * 50 + 10)));
    }
}

/// The deepest a script can go within its limits: every function level (64, counting the
/// closures `step` runs) nested as deep in expressions as the parser allows, and a host call
/// at the bottom with data nested almost as deep as a value may be. It must end normally: a
/// script stack too small for it would crash the whole node (a debug build needs more than
/// 512 KiB and less than 1 MiB of the 2 MiB stack).
#[tokio::test]
async fn the_deepest_script_the_limits_allow_fits_its_stack() {
    let (open, close) = ("(".repeat(10), ")".repeat(10));
    let script = |levels: u32| {
        format!(
            "fn deep(d) {{ let m = #{{}}; for i in 0..d {{ m = #{{ a: m }}; }} m }}\n\
             fn f(n) {{\n  if n <= 0 {{ return call(\"p\", \"a\", #{{ x: deep(120) }}); }}\n  \
             step(`s${{n}}`, || {open}f(n - 1){close})\n}}\n\
             f({levels})\n"
        )
    };
    let out = run_alone(&script(20))
        .await
        .expect("the deepest script within the limits runs");
    assert_eq!(
        out["input"]["x"]["a"]["a"],
        serde_json::json!({"a": out["input"]["x"]["a"]["a"]["a"]})
    );
    // One level more is over `max_call_levels`: the script above is the deepest allowed.
    let message = failed_message(run_alone(&script(21)).await, "script");
    assert!(message.contains("max_call_levels"), "{message}");

    let plain =
        format!("fn f(n) {{\n  if n <= 0 {{ return 1; }}\n  {open}f(n - 1){close}\n}}\nf(62)\n");
    assert_eq!(run_alone(&plain).await.unwrap(), serde_json::json!(1));
}

/// Reading a value inside the callback of a method running on that same value is a data race
/// that Rhai reports as an error. It must report it at once: upstream Rhai first sleeps the
/// thread for up to 50 ms, and a script runs on an async worker thread shared with other
/// tasks (vendor/README.md). 200 races fit easily in a 3 s deadline; sleeping, they took
/// over 10 s.
#[tokio::test]
async fn a_script_re_entering_its_own_value_never_sleeps_the_thread() {
    let api = Arc::new(FakeApi::new().deadline_in(Duration::from_secs(3)));
    let source = "let a = [1, 2, 3];\nlet keep = || a;\nlet races = 0;\n\
                  for i in 0..200 {\n  try { a.map(|x| a.len()); } catch { races += 1; }\n}\n\
                  races\n";
    let out = within_a_minute(run(source, &api)).await;
    assert_eq!(
        out.expect("the script ends before its deadline"),
        serde_json::json!(200)
    );
}

/// The operation hook marks how deep the script's stack went, so a spare stack is trimmed
/// after a body that recursed deep without ever calling the host (the only other place that
/// marks it). 60 levels of recursion must mark at least 16 KiB deeper than none.
#[tokio::test]
async fn the_operation_hook_marks_the_depth_of_a_script_that_never_calls_the_host() {
    async fn marked_below_top(levels: u32) -> usize {
        let script = compile(&format!(
            "fn f(n) {{ if n <= 0 {{ 0 }} else {{ f(n - 1) + 1 }} }}\nf({levels})\n"
        ));
        let api: Arc<dyn RunApi> = Arc::new(FakeApi::new());
        let seen = Arc::new(Mutex::new(None));
        let kept = Arc::clone(&seen);
        let body = fiber::Fiber::new(move |suspender: Arc<fiber::Suspender>| {
            let top = 0u8;
            let top = std::ptr::from_ref(std::hint::black_box(&top)) as usize;
            let out = script.run_on_fiber(api, ScriptLimits::default(), Arc::clone(&suspender));
            *kept.lock().unwrap() = Some((top, suspender.lowest_marked()));
            out
        })
        .expect("a stack for the script");
        assert_eq!(body.await.expect("no panic").unwrap(), json!(levels));
        let (top, lowest) = seen.lock().unwrap().take().unwrap();
        assert_ne!(lowest, usize::MAX, "no depth was marked");
        top - lowest
    }
    let shallow = marked_below_top(0).await;
    let deep = marked_below_top(60).await;
    assert!(
        deep >= shallow + 16 * 1024,
        "60 levels marked {deep} bytes below the top, none {shallow}"
    );
}
