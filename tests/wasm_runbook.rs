//! Runbook bodies written as WebAssembly components: the example `runbooks/hello-wasm` runs
//! against a `RunApi` that calls the real `hello` plugin, and hostile runbooks end as their
//! own outcome (timed out, cancelled, crashed, out of memory, sandboxed, rejected at load).

use crate::support::{builtin, builtin_bytes, fixture_bytes, host};
use runloom::plugin::{
    Blame, CallRequest, LoadError, Plugin, PluginHost, RunbookComponent, RunbookLimits,
};
use runloom::runbook::api::{BodyError, CallOptions, Level, RunApi, StepError};
use serde_json::{Map, Value, json};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A `RunApi` for one run: plugin calls go to real plugins through a real `PluginHost`;
/// steps and log lines are recorded for the test to read.
struct TestApi {
    host: PluginHost,
    plugins: Vec<Plugin>,
    params: Map<String, Value>,
    deadline: Instant,
    cancel: tokio::sync::watch::Sender<bool>,
    sleeping: AtomicBool,
    events: Mutex<Vec<String>>,
    logs: Mutex<Vec<(Level, String)>>,
}

impl TestApi {
    fn new(host: &PluginHost, plugins: Vec<Plugin>, params: Value, timeout: Duration) -> Arc<Self> {
        let Value::Object(params) = params else {
            panic!("parameters are an object")
        };
        Arc::new(Self {
            host: host.clone(),
            plugins,
            params,
            deadline: Instant::now() + timeout,
            cancel: tokio::sync::watch::channel(false).0,
            sleeping: AtomicBool::new(false),
            events: Mutex::new(Vec::new()),
            logs: Mutex::new(Vec::new()),
        })
    }

    fn record(&self, event: String) {
        self.events.lock().unwrap().push(event);
    }

    fn events(&self) -> Vec<String> {
        self.events.lock().unwrap().clone()
    }

    fn logged(&self, message: &str) -> bool {
        self.logs.lock().unwrap().iter().any(|(_, m)| m == message)
    }

    fn cancel(&self) {
        self.cancel.send_replace(true);
    }

    /// Wait until `done` holds, failing the test after a few seconds.
    async fn until(&self, what: &str, done: impl Fn(&Self) -> bool) {
        let give_up = Instant::now() + Duration::from_secs(10);
        while !done(self) {
            assert!(Instant::now() < give_up, "gave up waiting until {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

#[async_trait::async_trait]
impl RunApi for TestApi {
    async fn call(
        &self,
        plugin: &str,
        action: &str,
        input: Value,
        _options: CallOptions,
    ) -> Result<Value, StepError> {
        self.record(format!("call {plugin}.{action}"));
        let Some(found) = self.plugins.iter().find(|p| p.name() == plugin) else {
            return Err(StepError::new(
                "not_allowed",
                "runbook",
                format!("the runbook does not list plugin `{plugin}`"),
            ));
        };
        let request = CallRequest::new(action, input.to_string());
        match self.host.call(found, request).await {
            Ok(out) => Ok(out.output),
            Err(e) => Err(StepError {
                kind: e.kind().to_string(),
                message: e.to_string(),
                blame: match e.blame() {
                    Blame::Runbook => "runbook",
                    Blame::Plugin => "plugin",
                    Blame::Engine => "engine",
                }
                .to_string(),
                retryable: e.is_retryable(),
            }),
        }
    }

    async fn begin_step(&self, name: &str) {
        self.record(format!("begin {name}"));
    }

    async fn end_step(&self, error: Option<&StepError>) {
        self.record(format!("end {}", error.map_or("ok", |e| e.kind.as_str())));
    }

    async fn sleep(&self, duration: Duration) -> Result<(), StepError> {
        self.sleeping.store(true, Ordering::SeqCst);
        let mut cancelled = self.cancel.subscribe();
        tokio::select! {
            _ = tokio::time::sleep(duration) => Ok(()),
            _ = cancelled.wait_for(|c| *c) => Err(StepError::cancelled()),
            _ = tokio::time::sleep_until(self.deadline.into()) => Err(StepError::deadline()),
        }
    }

    fn log(&self, level: Level, message: &str) {
        self.logs.lock().unwrap().push((level, message.to_string()));
    }

    async fn secret(&self, name: &str) -> Result<String, StepError> {
        Err(StepError::new(
            "denied",
            "runbook",
            format!("secret `{name}` is not granted"),
        ))
    }

    async fn history(&self, _limit: u32) -> Result<Vec<serde_json::Value>, StepError> {
        Ok(Vec::new())
    }

    fn parameters(&self) -> &Map<String, Value> {
        &self.params
    }

    fn trigger(&self) -> &Value {
        static MANUAL: std::sync::LazyLock<Value> =
            std::sync::LazyLock::new(|| json!({"kind": "manual"}));
        &MANUAL
    }

    fn is_cancelled(&self) -> bool {
        *self.cancel.borrow()
    }

    fn deadline(&self) -> Instant {
        self.deadline
    }
}

fn hello_wasm_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../runbooks/hello-wasm/main.wasm")
}

async fn hello_wasm(host: &PluginHost) -> RunbookComponent {
    let path = hello_wasm_path();
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    host.load_runbook("runbooks/hello-wasm/main.wasm", bytes)
        .await
        .unwrap_or_else(|e| panic!("loading hello-wasm: {e}"))
}

async fn runbook_fixture(host: &PluginHost, name: &str) -> RunbookComponent {
    host.load_runbook(&format!("fixture:{name}"), fixture_bytes(name))
        .await
        .unwrap_or_else(|e| panic!("loading fixture `{name}`: {e}"))
}

async fn run(runbook: &RunbookComponent, api: &Arc<TestApi>) -> Result<Value, BodyError> {
    runbook.run(api.clone(), RunbookLimits::default()).await
}

#[tokio::test]
async fn hello_wasm_greets_through_the_hello_plugin() {
    let host = host();
    let hello = builtin(&host, "hello").await;
    let runbook = hello_wasm(&host).await;
    let api = TestApi::new(
        &host,
        vec![hello],
        json!({"name": "ops"}),
        Duration::from_secs(30),
    );
    let output = run(&runbook, &api).await.expect("the run succeeds");
    assert_eq!(
        output,
        json!({"greeting": "hello, ops", "trigger": "manual"})
    );
    assert_eq!(api.events(), ["begin greet", "call hello.greet", "end ok"]);
    assert!(api.logged("greeting name=ops trigger=manual"));
}

#[tokio::test]
async fn a_plugin_step_error_fails_the_run_with_its_kind_and_blame() {
    let host = host();
    let hello = builtin(&host, "hello").await;
    let runbook = hello_wasm(&host).await;
    let api = TestApi::new(
        &host,
        vec![hello],
        json!({"name": " "}),
        Duration::from_secs(30),
    );
    let err = run(&runbook, &api).await.unwrap_err();
    assert_eq!(
        err,
        BodyError::Failed {
            message: "invalid input: `name` must not be empty".into(),
            blame: "runbook".into(),
            location: None,
            kind: "invalid_input".into(),
        }
    );
    assert_eq!(
        api.events(),
        ["begin greet", "call hello.greet", "end invalid_input"]
    );
}

#[tokio::test]
async fn a_plugin_the_run_cannot_call_fails_the_run() {
    let host = host();
    let runbook = hello_wasm(&host).await;
    let api = TestApi::new(&host, Vec::new(), json!({}), Duration::from_secs(30));
    match run(&runbook, &api).await {
        Err(BodyError::Failed { kind, blame, .. }) => {
            assert_eq!((kind.as_str(), blame.as_str()), ("not_allowed", "runbook"));
        }
        other => panic!("expected a failed run, got {other:?}"),
    }
}

#[tokio::test]
async fn a_runbook_that_computes_forever_times_out_at_its_deadline() {
    let host = host();
    let runbook = runbook_fixture(&host, "runbook-spin-forever").await;
    let api = TestApi::new(&host, Vec::new(), json!({}), Duration::from_millis(500));
    let started = Instant::now();
    let err = run(&runbook, &api).await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(err, BodyError::TimedOut);
    assert!(took >= Duration::from_millis(500), "ended early: {took:?}");
    assert!(took < Duration::from_millis(2500), "ended late: {took:?}");
}

#[tokio::test]
async fn a_computing_runbook_is_stopped_when_the_run_is_cancelled() {
    let host = host();
    let runbook = runbook_fixture(&host, "runbook-spin-forever").await;
    let api = TestApi::new(&host, Vec::new(), json!({}), Duration::from_secs(60));
    let running = tokio::spawn({
        let (runbook, api) = (runbook.clone(), api.clone());
        async move { run(&runbook, &api).await }
    });
    api.until("the runbook spins", |api| api.logged("spinning"))
        .await;
    let cancelled_at = Instant::now();
    api.cancel();
    let err = running.await.unwrap().unwrap_err();
    assert_eq!(err, BodyError::Cancelled);
    let took = cancelled_at.elapsed();
    assert!(took < Duration::from_secs(2), "stopped late: {took:?}");
}

#[tokio::test]
async fn a_sleeping_runbook_is_woken_and_ends_cancelled() {
    let host = host();
    let runbook = runbook_fixture(&host, "runbook-sleep-forever").await;
    let api = TestApi::new(&host, Vec::new(), json!({}), Duration::from_secs(60));
    let running = tokio::spawn({
        let (runbook, api) = (runbook.clone(), api.clone());
        async move { run(&runbook, &api).await }
    });
    api.until("the runbook sleeps", |api| {
        api.sleeping.load(Ordering::SeqCst)
    })
    .await;
    let cancelled_at = Instant::now();
    api.cancel();
    let err = running.await.unwrap().unwrap_err();
    assert_eq!(err, BodyError::Cancelled);
    let took = cancelled_at.elapsed();
    assert!(took < Duration::from_secs(2), "woke late: {took:?}");
}

#[tokio::test]
async fn a_sleeping_runbook_ends_timed_out_at_its_deadline() {
    let host = host();
    let runbook = runbook_fixture(&host, "runbook-sleep-forever").await;
    let api = TestApi::new(&host, Vec::new(), json!({}), Duration::from_millis(300));
    let err = run(&runbook, &api).await.unwrap_err();
    assert_eq!(err, BodyError::TimedOut);
}

#[tokio::test]
async fn a_panicking_runbook_crashes_blamed_on_the_runbook() {
    let host = host();
    let runbook = runbook_fixture(&host, "runbook-panic").await;
    let api = TestApi::new(&host, Vec::new(), json!({}), Duration::from_secs(30));
    match run(&runbook, &api).await {
        Err(BodyError::Failed {
            kind,
            blame,
            message,
            ..
        }) => {
            assert_eq!((kind.as_str(), blame.as_str()), ("crashed", "runbook"));
            assert!(message.contains("the runbook gave up"), "{message}");
        }
        other => panic!("expected a crash, got {other:?}"),
    }
}

#[tokio::test]
async fn a_runbook_past_its_memory_limit_fails() {
    let host = host();
    let runbook = runbook_fixture(&host, "runbook-alloc-forever").await;
    let api = TestApi::new(&host, Vec::new(), json!({}), Duration::from_secs(30));
    let limits = RunbookLimits {
        memory: 32 * 1024 * 1024,
        ..RunbookLimits::default()
    };
    let err = runbook.run(api.clone(), limits).await.unwrap_err();
    assert_eq!(
        err,
        BodyError::Failed {
            message: "the runbook exceeded its memory limit of 32 MiB".into(),
            blame: "runbook".into(),
            location: None,
            kind: "memory_limit".into(),
        }
    );
}

#[tokio::test]
async fn a_runbook_cannot_read_files_open_sockets_or_send_http_requests() {
    let host = host();
    let runbook = runbook_fixture(&host, "runbook-reach-out").await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let api = TestApi::new(
        &host,
        Vec::new(),
        json!({"addr": addr}),
        Duration::from_secs(30),
    );
    let output = run(&runbook, &api).await.expect("the runbook reports");
    for attempt in ["file", "tcp"] {
        let outcome = output[attempt].as_str().unwrap();
        assert!(outcome.starts_with("error: "), "{attempt}: {outcome}");
    }
    assert_eq!(
        output["http"],
        format!("error: may not connect to `{addr}`: not granted")
    );
    let accepted = listener.accept();
    assert!(
        matches!(&accepted, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the runbook reached the listener: {accepted:?}"
    );
}

#[tokio::test]
async fn a_runbook_built_against_another_wit_version_is_rejected_at_load() {
    let host = host();
    let err = host
        .load_runbook(
            "fixture:runbook-wit-version-mismatch",
            fixture_bytes("runbook-wit-version-mismatch"),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, LoadError::IncompatibleVersion { .. }),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "`fixture:runbook-wit-version-mismatch` was built against runloom:plugin@0.2.0, but this \
         runloom implements runloom:plugin@0.1.0; rebuild it with a runloom-sdk for 0.1.0"
    );
}

#[tokio::test]
async fn a_plugin_is_not_a_runbook_and_a_runbook_is_not_a_plugin() {
    let host = host();
    let err = host
        .load_runbook("builtin:hello", builtin_bytes("hello"))
        .await
        .unwrap_err();
    assert!(matches!(err, LoadError::NotARunbook { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "`builtin:hello` is not a Runloom runbook: it does not export `runloom:plugin/body`"
    );
    let bytes = std::fs::read(hello_wasm_path()).unwrap();
    let err = host.load("hello-wasm", bytes).await.unwrap_err();
    assert!(matches!(err, LoadError::NotAPlugin { .. }), "{err}");
}

#[tokio::test]
async fn runbook_bodies_beyond_the_call_slots_run_and_plugin_calls_still_get_instances() {
    // Two call slots, four body slots: four sleeping bodies hold four instances at once, and a
    // plugin call made meanwhile still gets one of its own.
    let host = PluginHost::new(runloom::plugin::HostConfig {
        cache_dir: Some(crate::support::cache_dir()),
        max_concurrent_calls: 2,
        max_concurrent_runbooks: 4,
        ..runloom::plugin::HostConfig::default()
    })
    .unwrap();
    let hello = builtin(&host, "hello").await;
    let runbook = runbook_fixture(&host, "runbook-sleep-forever").await;
    let bodies: Vec<_> = (0..4)
        .map(|_| {
            let (runbook, api) = (
                runbook.clone(),
                TestApi::new(&host, Vec::new(), json!({}), Duration::from_millis(800)),
            );
            tokio::spawn(async move { run(&runbook, &api).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let out = host
        .call(
            &hello,
            runloom::plugin::CallRequest::new("greet", r#"{"name":"ops"}"#),
        )
        .await;
    assert!(out.is_ok(), "{out:?}");
    for b in bodies {
        assert_eq!(b.await.unwrap().unwrap_err(), BodyError::TimedOut);
    }
}
