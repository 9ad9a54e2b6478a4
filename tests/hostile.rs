//! Hostile plugins: each misbehaviour ends as its own error kind, quickly, and the same host
//! then serves a normal call.

use crate::support::{builtin, fixture, host};
use runloom::grant::Grants;
use runloom::plugin::{CallError, CallRequest, Limits, PluginHost};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// After any misbehaviour, the host must still serve a normal call.
async fn host_still_works(host: &PluginHost) {
    let hello = builtin(host, "hello").await;
    let out = host
        .call(&hello, CallRequest::new("greet", r#"{"name":"after"}"#))
        .await
        .expect("a normal call after a hostile one");
    assert_eq!(out.output["greeting"], "hello, after");
}

fn with_timeout(timeout: Duration) -> CallRequest {
    let mut req = CallRequest::new("run", "{}");
    req.limits = Limits {
        timeout,
        ..Limits::default()
    };
    req
}

#[tokio::test]
async fn sleep_forever_times_out_near_its_deadline() {
    let host = host();
    let plugin = fixture(&host, "sleep-forever").await;
    let started = Instant::now();
    let err = host
        .call(&plugin, with_timeout(Duration::from_millis(500)))
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, CallError::Timeout { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "plugin `sleep-forever` did not finish within 500ms"
    );
    assert!(took >= Duration::from_millis(500), "ended early: {took:?}");
    assert!(took < Duration::from_millis(2500), "ended late: {took:?}");
    host_still_works(&host).await;
}

#[tokio::test]
async fn spin_forever_is_interrupted_at_its_deadline() {
    let host = host();
    let plugin = fixture(&host, "spin-forever").await;
    let started = Instant::now();
    let err = host
        .call(&plugin, with_timeout(Duration::from_millis(500)))
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, CallError::Timeout { .. }), "{err}");
    assert!(took < Duration::from_millis(2500), "ended late: {took:?}");
    host_still_works(&host).await;
}

/// The epoch clock sleeps after a second without guests (so an idle server is not woken a
/// hundred times a second); the next call must wake it, or a spinning guest would never
/// reach its deadline.
#[test]
fn spin_forever_is_interrupted_after_the_host_sat_idle() {
    // The call runs on a thread of its own, so a guest never interrupted fails this test
    // instead of hanging it.
    let (done, outcome) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let host = host();
            let plugin = fixture(&host, "spin-forever").await;
            tokio::time::sleep(Duration::from_millis(2500)).await;
            let started = Instant::now();
            let result = host
                .call(&plugin, with_timeout(Duration::from_millis(500)))
                .await;
            let took = started.elapsed();
            host_still_works(&host).await;
            let _ = done.send((result.map(|_| ()), took));
        });
    });
    let (result, took) = match outcome.recv_timeout(Duration::from_secs(30)) {
        Ok(outcome) => outcome,
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            std::panic::resume_unwind(worker.join().unwrap_err())
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("the spinning guest was never interrupted")
        }
    };
    worker.join().unwrap();
    let err = result.unwrap_err();
    assert!(matches!(err, CallError::Timeout { .. }), "{err}");
    assert!(took < Duration::from_millis(2500), "ended late: {took:?}");
}

#[tokio::test]
async fn alloc_forever_hits_the_memory_limit() {
    let host = host();
    let plugin = fixture(&host, "alloc-forever").await;
    let mut req = CallRequest::new("run", "{}");
    req.limits.memory = 32 * 1024 * 1024;
    let err = host.call(&plugin, req).await.unwrap_err();
    assert!(matches!(err, CallError::MemoryLimit { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "plugin `alloc-forever` exceeded its memory limit of 32 MiB"
    );
    host_still_works(&host).await;
}

#[tokio::test]
async fn reading_a_file_outside_the_grants_is_denied() {
    let host = host();
    let plugin = fixture(&host, "read-etc-shadow").await;
    // Even with a directory granted, /etc/shadow stays out of reach.
    let granted = std::env::temp_dir();
    let mut req = CallRequest::new("run", "{}");
    req.grants = Arc::new(Grants {
        dirs: vec![
            format!("{}:/scratch:ro", granted.display())
                .parse()
                .unwrap(),
        ],
        ..Grants::default()
    });
    let err = host.call(&plugin, req).await.unwrap_err();
    assert!(matches!(err, CallError::Denied { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "plugin `read-etc-shadow` may not read `/etc/shadow`: not granted"
    );
    host_still_works(&host).await;
}

#[tokio::test]
async fn connecting_to_a_host_outside_the_grants_is_denied() {
    let host = host();
    let plugin = fixture(&host, "connect-example-org").await;
    let mut req = CallRequest::new("run", "{}");
    req.grants = Arc::new(Grants {
        hosts: vec!["127.0.0.1:*".parse().unwrap()],
        ..Grants::default()
    });
    let err = host.call(&plugin, req).await.unwrap_err();
    assert!(matches!(err, CallError::Denied { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "plugin `connect-example-org` may not connect to `example.org:443`: not granted"
    );
    host_still_works(&host).await;
}

#[tokio::test]
async fn running_a_command_outside_the_grants_is_denied() {
    let host = host();
    let plugin = fixture(&host, "run-shell").await;
    let mut req = CallRequest::new("run", "{}");
    req.grants = Arc::new(Grants {
        commands: vec!["/usr/bin/id".parse().unwrap()],
        ..Grants::default()
    });
    let err = host.call(&plugin, req).await.unwrap_err();
    assert!(matches!(err, CallError::Denied { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "plugin `run-shell` may not run `/bin/sh -c id`: not granted"
    );
    host_still_works(&host).await;
}

#[tokio::test]
async fn a_panic_is_a_crash_with_the_panic_message() {
    let host = host();
    let plugin = fixture(&host, "panic").await;
    let err = host
        .call(&plugin, CallRequest::new("run", "{}"))
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::Crashed { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.starts_with("plugin `panic` crashed: panicked at"),
        "{message}"
    );
    assert!(message.contains("fixture panicked on purpose"), "{message}");
    host_still_works(&host).await;
}

#[tokio::test]
async fn oversized_output_is_rejected() {
    let host = host();
    let plugin = fixture(&host, "huge-output").await;
    let err = host
        .call(&plugin, CallRequest::new("run", "{}"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, CallError::OutputTooLarge { limit: 1048576, .. }),
        "{err}"
    );
    host_still_works(&host).await;
}
