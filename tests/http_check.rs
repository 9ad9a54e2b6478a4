//! `http-check` against a real HTTP server on 127.0.0.1: every way an endpoint can behave is a
//! check result; only a missing grant is an error.

use crate::support::{builtin, host};
use runloom::grant::Grants;
use runloom::plugin::{CallError, CallRequest};
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

async fn serve() -> SocketAddr {
    use axum::{Router, http::StatusCode, routing::get};
    let app = Router::new()
        .route("/ok", get(|| async { "service ready, version=7" }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                "late"
            }),
        )
        .route(
            "/hang",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                "never"
            }),
        )
        .route(
            "/down",
            get(|| async { (StatusCode::SERVICE_UNAVAILABLE, "maintenance") }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

async fn check(grant: &str, input: Value) -> Result<Value, CallError> {
    let host = host();
    let plugin = builtin(&host, "http-check").await;
    let mut req = CallRequest::new("check", input.to_string());
    req.grants = Arc::new(Grants {
        hosts: vec![grant.parse().unwrap()],
        ..Grants::default()
    });
    host.call(&plugin, req).await.map(|o| o.output)
}

#[tokio::test]
async fn a_healthy_endpoint_is_ok_with_its_latency() {
    let addr = serve().await;
    let out = check(
        &addr.to_string(),
        serde_json::json!({
            "url": format!("http://{addr}/ok"),
            "body_regex": "version=\\d+",
            "body_contains": "ready",
        }),
    )
    .await
    .unwrap();
    assert_eq!(out["status"], "ok", "{out}");
    assert_eq!(out["facts"]["http_status"], 200);
    assert_eq!(out["unit"], "ms");
    assert!(out["value"].as_f64().unwrap() >= 0.0);
}

#[tokio::test]
async fn a_slow_endpoint_trips_the_latency_threshold() {
    let addr = serve().await;
    let out = check(
        &addr.to_string(),
        serde_json::json!({
            "url": format!("http://{addr}/slow"),
            "latency_warning_ms": 100,
            "latency_critical_ms": 5000,
        }),
    )
    .await
    .unwrap();
    assert_eq!(out["status"], "warning", "{out}");
    assert!(out["value"].as_f64().unwrap() >= 300.0, "{out}");
}

#[tokio::test]
async fn an_error_status_is_critical() {
    let addr = serve().await;
    let out = check(
        &addr.to_string(),
        serde_json::json!({"url": format!("http://{addr}/down")}),
    )
    .await
    .unwrap();
    assert_eq!(out["status"], "critical");
    assert_eq!(
        out["detail"],
        format!("GET http://{addr}/down returned 503, expected 2xx or 3xx")
    );
}

#[tokio::test]
async fn a_refused_connection_is_a_critical_result_not_a_crash() {
    // Bind then drop: nothing listens on this port any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = check(
        "127.0.0.1:*",
        serde_json::json!({"url": format!("http://127.0.0.1:{port}/")}),
    )
    .await
    .unwrap();
    assert_eq!(out["status"], "critical", "{out}");
    assert!(
        out["detail"]
            .as_str()
            .unwrap()
            .contains("connection refused"),
        "{out}"
    );
}

#[tokio::test]
async fn a_hanging_endpoint_times_out_as_a_critical_result() {
    let addr = serve().await;
    let out = check(
        &addr.to_string(),
        serde_json::json!({
            "url": format!("http://{addr}/hang"),
            "timeout_ms": 300,
        }),
    )
    .await
    .unwrap();
    assert_eq!(out["status"], "critical", "{out}");
    assert!(
        out["detail"]
            .as_str()
            .unwrap()
            .ends_with("failed: timed out"),
        "{out}"
    );
}

#[tokio::test]
async fn a_host_outside_the_grant_is_denied_even_on_another_port() {
    let addr = serve().await;
    let err = check(
        &addr.to_string(),
        serde_json::json!({"url": format!("http://127.0.0.1:{}/ok", addr.port() + 1)}),
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "plugin `http-check` may not connect to `127.0.0.1:{}`: not granted",
            addr.port() + 1
        )
    );
}

/// Checks of `/ok` in turn with `keep_alive` set as given; returns the connections the
/// server accepted for them.
async fn connections_for_checks(checks: usize, keep_alive: Duration) -> usize {
    use axum::serve::{Listener, ListenerExt};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .tap_io(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
        });
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route("/ok", axum::routing::get(|| async { "ready" }));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let host = host();
    let plugin = builtin(&host, "http-check").await;
    for _ in 0..checks {
        let mut req = CallRequest::new(
            "check",
            serde_json::json!({"url": format!("http://{addr}/ok")}).to_string(),
        );
        req.grants = Arc::new(Grants {
            hosts: vec![addr.to_string().parse().unwrap()],
            ..Grants::default()
        });
        req.keep_alive = keep_alive;
        let out = host.call(&plugin, req).await.unwrap().output;
        assert_eq!(out["status"], "ok", "{out}");
        // The connection goes back to the host once the plugin has read the answer.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    accepted.load(Ordering::SeqCst)
}

#[tokio::test]
async fn each_check_opens_its_own_connection_unless_keep_alive_is_set() {
    assert_eq!(
        connections_for_checks(4, Duration::ZERO).await,
        4,
        "by default a check's latency includes its connect"
    );
    assert_eq!(
        connections_for_checks(4, Duration::from_secs(30)).await,
        1,
        "with keep_alive the checks share one connection"
    );
}
