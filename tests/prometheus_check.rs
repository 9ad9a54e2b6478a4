//! `prometheus-check` against an HTTP server on 127.0.0.1 that answers `GET /api/v1/query`
//! with Prometheus' own JSON format (bodies shaped like those of Prometheus 2.x/3.x), for the
//! queries the tests send: vectors, scalars, empty results and API errors.

use crate::support::{builtin, host};
use runloom::grant::Grants;
use runloom::plugin::{CallError, CallRequest, SecretSource};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

const UP: &str = r#"up{job="node"}"#;
/// Braces, quotes, `=~`, brackets and spaces: only survives a correctly encoded URL.
const ERROR_RATE: &str =
    r#"sum by (instance) (rate(http_requests_total{code=~"5.."}[5m])) / 1e-3 > 0"#;
const SCALAR: &str = "scalar(count(up))";
const NOTHING_DOWN: &str = "up == 0";
const SLOW: &str = "count_over_time(everything[10y])";
const TOKEN: &str = "s3cr3t-token";

fn vector(samples: &[(&str, &str)]) -> Value {
    let result: Vec<Value> = samples
        .iter()
        .map(|(instance, value)| {
            json!({
                "metric": {"__name__": "up", "instance": instance, "job": "node"},
                "value": [1_763_900_000.781, value],
            })
        })
        .collect();
    json!({"status": "success", "data": {"resultType": "vector", "result": result}})
}

/// What Prometheus answers to `query`, as (HTTP status, body).
fn answer(query: &str, authorization: Option<&str>) -> (u16, Value) {
    match query {
        UP => (200, vector(&[("a:9100", "1"), ("b:9100", "0")])),
        ERROR_RATE => (200, vector(&[("a:9100", "2.5"), ("b:9100", "0.4")])),
        SCALAR => (
            200,
            json!({"status": "success", "data": {"resultType": "scalar",
                   "result": [1_763_900_000.781, "42"]}}),
        ),
        NOTHING_DOWN => (
            200,
            json!({"status": "success", "data": {"resultType": "vector", "result": []}}),
        ),
        SLOW => (
            503,
            json!({"status": "error", "errorType": "timeout",
                   "error": "query timed out in expression evaluation"}),
        ),
        "secured" if authorization == Some(format!("Bearer {TOKEN}").as_str()) => {
            (200, vector(&[("a:9100", "1")]))
        }
        "secured" => (
            401,
            json!({"status": "error", "errorType": "unauthorized", "error": "bad token"}),
        ),
        // Anything else is what Prometheus says about a query it cannot parse.
        other => (
            400,
            json!({"status": "error", "errorType": "bad_data",
                   "error": format!("invalid parameter \"query\": 1:1: parse error: unexpected \
                                     input in `{other}`")}),
        ),
    }
}

async fn prometheus() -> SocketAddr {
    use axum::extract::Query;
    use axum::http::{HeaderMap, StatusCode};
    use axum::{Json, Router, routing::get};
    let app = Router::new().route(
        "/api/v1/query",
        get(
            |Query(params): Query<HashMap<String, String>>, headers: HeaderMap| async move {
                let query = params.get("query").map(String::as_str).unwrap_or("");
                let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
                let (status, body) = answer(query, auth);
                (StatusCode::from_u16(status).unwrap(), Json(body))
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

struct OneSecret;

#[async_trait::async_trait]
impl SecretSource for OneSecret {
    async fn get(&self, name: &str) -> Option<String> {
        (name == "prometheus-token").then(|| TOKEN.to_string())
    }
}

async fn query(addr: SocketAddr, input: Value) -> Result<Value, CallError> {
    let grants = Grants {
        hosts: vec![addr.to_string().parse().unwrap()],
        secrets: vec!["prometheus-token".into()],
        ..Grants::default()
    };
    call(input, grants).await
}

async fn call(input: Value, grants: Grants) -> Result<Value, CallError> {
    let host = host();
    let plugin = builtin(&host, "prometheus-check").await;
    let mut req = CallRequest::new("query", input.to_string());
    req.grants = Arc::new(grants);
    req.secrets = Arc::new(OneSecret);
    host.call(&plugin, req).await.map(|o| o.output)
}

#[tokio::test]
async fn each_sample_of_a_vector_is_judged_and_the_worst_decides() {
    let addr = prometheus().await;
    let out = query(
        addr,
        json!({"url": format!("http://{addr}"), "query": UP,
               "critical": 0.5, "direction": "below"}),
    )
    .await
    .unwrap();
    assert_eq!(out["status"], "critical", "{out}");
    assert_eq!(out["value"], 0.0);
    assert_eq!(
        out["detail"],
        r#"1 of 2 samples are not ok; the worst is up{instance="b:9100", job="node"} = 0, at or below the critical threshold of 0.5"#
    );
    assert_eq!(out["facts"]["result_type"], "vector");
    assert_eq!(out["facts"]["sample_count"], 2);
    assert_eq!(out["facts"]["samples"][0]["labels"]["instance"], "b:9100");
    assert_eq!(out["facts"]["samples"][1]["status"], "ok");
}

#[tokio::test]
async fn any_promql_reaches_prometheus_intact() {
    let addr = prometheus().await;
    let out = query(
        addr,
        json!({"url": format!("http://{addr}/"), "query": ERROR_RATE,
               "warning": 1, "critical": 5, "unit": "errors/s"}),
    )
    .await
    .unwrap();
    assert_eq!(out["status"], "warning", "{out}");
    assert_eq!(out["value"], 2.5);
    assert_eq!(out["unit"], "errors/s");
}

#[tokio::test]
async fn a_scalar_result_is_judged_as_one_value() {
    let addr = prometheus().await;
    let out = query(
        addr,
        json!({"url": format!("http://{addr}"), "query": SCALAR, "warning": 40, "critical": 100}),
    )
    .await
    .unwrap();
    assert_eq!(out["status"], "warning", "{out}");
    assert_eq!(out["value"], 42.0);
    assert_eq!(out["facts"]["result_type"], "scalar");
    assert_eq!(
        out["detail"],
        "the value 42, at or above the warning threshold of 40"
    );
}

#[tokio::test]
async fn an_empty_result_is_unknown_unless_told_otherwise() {
    let addr = prometheus().await;
    let url = format!("http://{addr}");
    let out = query(addr, json!({"url": url, "query": NOTHING_DOWN}))
        .await
        .unwrap();
    assert_eq!(out["status"], "unknown", "{out}");
    assert_eq!(out["detail"], "`up == 0` returned no samples");
    for status in ["ok", "critical"] {
        let out = query(
            addr,
            json!({"url": url, "query": NOTHING_DOWN, "on_empty": status}),
        )
        .await
        .unwrap();
        assert_eq!(out["status"], status, "{out}");
    }
}

#[tokio::test]
async fn a_query_prometheus_cannot_parse_is_invalid_input() {
    let addr = prometheus().await;
    let err = query(
        addr,
        json!({"url": format!("http://{addr}"), "query": "rate(up[5m]"}),
    )
    .await
    .unwrap_err();
    match err {
        CallError::InvalidInput(m) => assert!(
            m.starts_with("Prometheus rejected the query `rate(up[5m]`: invalid parameter"),
            "{m}"
        ),
        other => panic!("expected invalid input, got {other}"),
    }
}

#[tokio::test]
async fn other_api_errors_are_unknown_results() {
    let addr = prometheus().await;
    let out = query(
        addr,
        json!({"url": format!("http://{addr}"), "query": SLOW}),
    )
    .await
    .unwrap();
    assert_eq!(out["status"], "unknown", "{out}");
    assert_eq!(
        out["detail"],
        "Prometheus answered 503, timeout: query timed out in expression evaluation"
    );
}

#[tokio::test]
async fn a_bearer_token_comes_from_a_granted_secret() {
    let addr = prometheus().await;
    let url = format!("http://{addr}");
    let out = query(
        addr,
        json!({"url": url, "query": "secured", "bearer_token_secret": "prometheus-token"}),
    )
    .await
    .unwrap();
    assert_eq!(out["status"], "ok", "{out}");
    // Without the token the server refuses; with an ungranted secret the plugin is denied.
    let out = query(addr, json!({"url": url, "query": "secured"}))
        .await
        .unwrap();
    assert_eq!(out["status"], "unknown", "{out}");
    let err = query(
        addr,
        json!({"url": url, "query": "secured", "bearer_token_secret": "other"}),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, CallError::Denied { .. }), "{err}");
}

#[tokio::test]
async fn an_unreachable_prometheus_is_critical() {
    // Bind then drop: nothing listens on this port any more.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let out = query(addr, json!({"url": format!("http://{addr}"), "query": UP}))
        .await
        .unwrap();
    assert_eq!(out["status"], "critical", "{out}");
    assert!(
        out["detail"]
            .as_str()
            .unwrap()
            .starts_with(&format!("cannot query Prometheus at http://{addr}: ")),
        "{out}"
    );
}

#[tokio::test]
async fn prometheus_outside_the_grant_is_denied() {
    let addr = prometheus().await;
    let err = call(
        json!({"url": format!("http://{addr}"), "query": UP}),
        Grants::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("plugin `prometheus-check` may not connect to `{addr}`: not granted")
    );
}
