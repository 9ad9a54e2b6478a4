//! The plugin host: loading, the manifest, calls, logs, the compile cache, isolation.

use crate::support::{self, builtin, builtin_bytes, fixture, fixture_bytes, host, host_with_cache};
use runloom::plugin::{
    ActionKind, CallError, CallRequest, HostConfig, LoadError, LogLevel, LogLine, LogSource,
    Plugin, PluginHost, content_hash,
};
use std::os::unix::fs::PermissionsExt;
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

/// Call `hello.greet` and check the output document.
async fn assert_greets(host: &PluginHost, hello: &Plugin) {
    let out = host
        .call(hello, CallRequest::new("greet", r#"{"name":"ops"}"#))
        .await
        .unwrap();
    assert_eq!(out.output, serde_json::json!({"greeting": "hello, ops"}));
}

#[tokio::test]
async fn a_call_returns_the_output_document() {
    let host = host();
    let hello = builtin(&host, "hello").await;
    assert_greets(&host, &hello).await;
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
    let dir = scratch("cache-test");
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

/// A fresh directory for one test.
fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("runloom-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Wait until the script just written at `path` can be executed: a process another test
/// thread spawned meanwhile may briefly hold it open for writing (`ETXTBSY`).
fn runnable(path: &std::path::Path) {
    for _ in 0..100 {
        match std::process::Command::new(path).status() {
            Err(e) if e.raw_os_error() == Some(nix::errno::Errno::ETXTBSY as i32) => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => {
                assert!(other.unwrap().success());
                return;
            }
        }
    }
    panic!("{} stayed busy", path.display());
}

/// A host caching in `dir/cache` that compiles misses by running `compiler`, as
/// `runloom serve` runs itself.
fn host_compiling_with(dir: &std::path::Path, compiler: std::path::PathBuf) -> PluginHost {
    PluginHost::new(HostConfig {
        cache_dir: Some(dir.join("cache")),
        compiler: Some(compiler),
        max_concurrent_calls: 16,
        ..HostConfig::default()
    })
    .unwrap()
}

#[tokio::test]
async fn a_cache_miss_is_compiled_by_a_child_runloom_process() {
    let dir = scratch("child-compile");
    // The real binary behind a wrapper that records each child's exit code.
    let log = dir.join("children.log");
    let wrapper = dir.join("compiler");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n[ \"$1\" = __compile-plugin ] || exit 0\n\"{}\" \"$@\"\ncode=$?\n\
             echo $code >> \"{}\"\nexit $code\n",
            env!("CARGO_BIN_EXE_runloom"),
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    runnable(&wrapper);
    let host = host_compiling_with(&dir, wrapper);

    // An embedded plugin (the child finds its bytes in its own binary) ...
    let (_, bytes) = runloom::builtin::standard_plugins()
        .iter()
        .find(|(n, _)| *n == "hello")
        .unwrap();
    let hash = runloom::builtin::standard_plugin_hash("hello").unwrap();
    let hello = host
        .load_embedded("builtin:hello", bytes, hash)
        .await
        .unwrap();
    assert_greets(&host, &hello).await;
    // ... and a file's bytes (sent to the child on stdin).
    let counter = fixture(&host, "count-calls").await;
    let out = host
        .call(&counter, CallRequest::new("count", "{}"))
        .await
        .unwrap();
    assert_eq!(out.output["calls"], 1);
    // A broken component fails in the child with the message compiling here gives.
    let junk = b"not wasm at all".to_vec();
    let in_child = host.load("junk.wasm", junk.clone()).await.unwrap_err();
    let in_process = support::host().load("junk.wasm", junk).await.unwrap_err();
    assert!(matches!(in_child, LoadError::Invalid { .. }), "{in_child}");
    assert_eq!(in_child.to_string(), in_process.to_string());

    let codes = std::fs::read_to_string(&log).unwrap();
    assert_eq!(codes.lines().collect::<Vec<_>>(), ["0", "0", "6"]);
    let mut cached: Vec<String> = std::fs::read_dir(dir.join("cache"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    cached.sort();
    assert_eq!(cached.len(), 2, "{cached:?}");
    assert!(cached.iter().all(|n| n.ends_with(".cwasm")), "{cached:?}");
    assert!(cached.iter().any(|n| n.starts_with(hash)), "{cached:?}");

    // A restart maps what the children wrote: no child runs.
    let host = host_compiling_with(&dir, dir.join("compiler"));
    builtin(&host, "hello").await;
    fixture(&host, "count-calls").await;
    assert_eq!(std::fs::read_to_string(&log).unwrap(), codes);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_compiler_that_cannot_run_falls_back_to_compiling_in_process() {
    let dir = scratch("child-compile-missing");
    let host = host_compiling_with(&dir, dir.join("no-such-runloom"));
    let hello = builtin(&host, "hello").await;
    assert_greets(&host, &hello).await;
    assert_eq!(std::fs::read_dir(dir.join("cache")).unwrap().count(), 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_compiling_child_refuses_another_engine_and_unknown_plugins() {
    let dir = scratch("child-compile-refuses");
    let out = dir.join("out.cwasm");
    let hash = runloom::builtin::standard_plugin_hash("hello").unwrap();
    let child = |hash: &str, fingerprint: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_runloom"))
            .args([runloom::plugin::CHILD_SUBCOMMAND, "--out"])
            .arg(&out)
            .args(["--hash", hash, "--fingerprint", fingerprint])
            .output()
            .unwrap()
    };
    let other_engine = child(hash, "0000000000000000");
    assert_eq!(other_engine.status.code(), Some(4));
    let stderr = String::from_utf8_lossy(&other_engine.stderr);
    assert!(
        stderr.contains("fingerprint") && stderr.contains("0000000000000000"),
        "{stderr}"
    );
    let unknown = child(&"ab".repeat(32), "0000000000000000");
    assert_eq!(unknown.status.code(), Some(4));
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(stderr.contains("is embedded"), "{stderr}");
    assert!(!out.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}
