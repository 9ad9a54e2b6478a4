//! The plugin host: loading, the manifest, calls, logs, the compile cache, isolation.

use crate::support::{builtin, builtin_bytes, fixture, fixture_bytes, host, host_with_cache};
use runloom::plugin::{
    ActionKind, CallError, CallRequest, LoadError, LogLevel, LogLine, LogSource, content_hash,
};
use std::sync::{Arc, Mutex};

#[tokio::test]
async fn hello_describes_its_actions_with_kinds_and_schemas() {
    let host = host();
    let hello = builtin(&host, "hello").await;
    let m = hello.manifest();
    assert_eq!(m.name, "hello");
    assert_eq!(m.version, env!("CARGO_PKG_VERSION"));
    let greet = m.action("greet").unwrap();
    assert_eq!(greet.kind, ActionKind::Read);
    assert_eq!(greet.input_schema["required"][0], "name");
    assert_eq!(m.action("shout").unwrap().kind, ActionKind::Mutate);
    assert_eq!(hello.content_hash(), content_hash(&builtin_bytes("hello")));
}

#[tokio::test]
async fn a_call_returns_the_output_document() {
    let host = host();
    let hello = builtin(&host, "hello").await;
    let out = host
        .call(&hello, CallRequest::new("greet", r#"{"name":"ops"}"#))
        .await
        .unwrap();
    assert_eq!(out.output, serde_json::json!({"greeting": "hello, ops"}));
}

#[tokio::test]
async fn bad_input_and_unknown_actions_are_invalid_input() {
    let host = host();
    let hello = builtin(&host, "hello").await;
    let err = host
        .call(&hello, CallRequest::new("greet", r#"{"nom":"x"}"#))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CallError::InvalidInput(m) if m.contains("unknown field `nom`")),
        "{err}"
    );
    let err = host
        .call(&hello, CallRequest::new("wave", "{}"))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid input: plugin `hello` has no action `wave` (it has: greet, shout)"
    );
}

#[tokio::test]
async fn plugin_log_lines_reach_the_sink_live() {
    let host = host();
    let hello = builtin(&host, "hello").await;
    let lines: Arc<Mutex<Vec<LogLine>>> = Arc::default();
    let sink = lines.clone();
    let mut req = CallRequest::new("shout", r#"{"message":"disk full"}"#);
    req.context.step_id = "announce".into();
    req.log = Some(Arc::new(move |l| sink.lock().unwrap().push(l)));
    host.call(&hello, req).await.unwrap();
    let lines = lines.lock().unwrap();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0].level, LogLevel::Info);
    assert_eq!(lines[0].source, LogSource::Plugin);
    assert_eq!(lines[0].message, "DISK FULL");
    assert_eq!(
        lines[0].fields,
        [("step".to_string(), "announce".to_string())]
    );
}

#[tokio::test]
async fn every_call_gets_a_fresh_instance() {
    let host = host();
    let counter = fixture(&host, "count-calls").await;
    for _ in 0..3 {
        let out = host
            .call(&counter, CallRequest::new("count", "{}"))
            .await
            .unwrap();
        assert_eq!(out.output["calls"], 1, "state leaked between calls");
    }
}

#[tokio::test]
async fn compiled_plugins_are_cached_by_content_hash() {
    let dir = std::env::temp_dir().join(format!("runloom-cache-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    builtin(&host_with_cache(dir.clone()), "hello").await;
    let hash = content_hash(&builtin_bytes("hello"));
    let cached: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(cached.len(), 1, "{cached:?}");
    let name = cached[0].file_name().unwrap().to_string_lossy().to_string();
    assert!(
        name.starts_with(&format!("{hash}-")) && name.ends_with(".cwasm"),
        "{name}"
    );
    let before = std::fs::metadata(&cached[0]).unwrap().modified().unwrap();
    // A second host (a restart) loads the artifact instead of compiling again.
    builtin(&host_with_cache(dir.clone()), "hello").await;
    let after = std::fs::metadata(&cached[0]).unwrap().modified().unwrap();
    assert_eq!(before, after, "the cached artifact was rewritten");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_plugin_built_against_another_wit_version_is_rejected_at_load() {
    let host = host();
    let err = host
        .load(
            "fixture:wit-version-mismatch",
            fixture_bytes("wit-version-mismatch"),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, LoadError::IncompatibleVersion { .. }),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "`fixture:wit-version-mismatch` was built against runloom:plugin@0.2.0, but this runloom \
         implements runloom:plugin@0.1.0; rebuild it with a runloom-sdk for 0.1.0"
    );
}

#[tokio::test]
async fn bytes_that_are_not_a_component_are_rejected_at_load() {
    let host = host();
    let err = host
        .load("junk.wasm", b"not wasm at all".to_vec())
        .await
        .unwrap_err();
    assert!(matches!(err, LoadError::Invalid { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with("`junk.wasm` is not a valid WebAssembly component")
    );
}
