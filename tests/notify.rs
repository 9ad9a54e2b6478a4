//! `notify` against a real HTTP receiver on 127.0.0.1: the documents each action sends, retries
//! on 429/5xx and none on other 4xx, denials for missing host and secret grants, and secret
//! values kept out of outputs, errors and log lines.

use crate::scratch::ScratchDir;
use crate::support::{builtin, host};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use runloom::config::SecretRef;
use runloom::grant::Grants;
use runloom::plugin::{CallError, CallRequest, LogLine};
use runloom::secret::Secrets;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// A canary token: if it shows up anywhere but the request, a secret leaked.
const TOKEN: &str = "tok-canary-4f9a2c81e7";
/// A PagerDuty integration key is 32 characters.
const ROUTING_KEY: &str = "R0UT1NGKEYcanary0123456789abcdef";

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: HeaderMap,
    body: Value,
}

type Log = Arc<Mutex<Vec<Received>>>;

async fn receive(State(log): State<Log>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path().to_string();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let earlier = {
        let mut log = log.lock().unwrap();
        let earlier = log.iter().filter(|r| r.path == path).count();
        log.push(Received {
            path: path.clone(),
            headers: headers.clone(),
            body: body.clone(),
        });
        earlier
    };
    match path.as_str() {
        "/hook" | "/services/T000/B000/XXXX" => (StatusCode::OK, "ok").into_response(),
        "/flaky" if earlier == 0 => (StatusCode::SERVICE_UNAVAILABLE, "warming up").into_response(),
        "/flaky" => (StatusCode::OK, "ok").into_response(),
        "/bad" => (
            StatusCode::BAD_REQUEST,
            r#"{"status":"invalid event","message":"Event object is invalid"}"#,
        )
            .into_response(),
        // A broken receiver that echoes the credentials it got.
        "/echo" => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "cannot handle request with {:?}",
                headers.get("authorization")
            ),
        )
            .into_response(),
        "/v2/enqueue" => {
            let key = body["dedup_key"].as_str().unwrap_or("generated-by-receiver");
            (
                StatusCode::ACCEPTED,
                json!({"status": "success", "message": "Event processed", "dedup_key": key})
                    .to_string(),
            )
                .into_response()
        }
        "/busy-once" if earlier == 0 => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "0")],
            "slow down",
        )
            .into_response(),
        "/busy-once" => (
            StatusCode::ACCEPTED,
            json!({"status": "success", "message": "Event processed", "dedup_key": body["dedup_key"]})
                .to_string(),
        )
            .into_response(),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn receiver() -> (SocketAddr, Log) {
    let log: Log = Arc::default();
    let app = axum::Router::new()
        .fallback(axum::routing::post(receive))
        .with_state(log.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, log)
}

fn hits(log: &Log, path: &str) -> Vec<Received> {
    log.lock()
        .unwrap()
        .iter()
        .filter(|r| r.path == path)
        .cloned()
        .collect()
}

/// Grants for `notify`: the receiver's address (when given) and these secret names.
fn grants(addr: Option<SocketAddr>, secrets: &[&str]) -> Grants {
    Grants {
        hosts: addr
            .iter()
            .map(|a| a.to_string().parse().unwrap())
            .collect(),
        secrets: secrets.iter().map(|s| s.to_string()).collect(),
        ..Grants::default()
    }
}

/// Call `action` with the secret values in `secrets` available (granted or not, as `grants`
/// says) and the step's idempotency key `key`; returns the result and every log line.
async fn call(
    action: &str,
    input: Value,
    grants: Grants,
    secrets: &[(&str, &str)],
    key: &str,
) -> (Result<Value, CallError>, Vec<String>) {
    let dir = ScratchDir::new("notify-secrets");
    let mut sources = Secrets::default();
    for (name, value) in secrets {
        let path = dir.join(name);
        std::fs::write(&path, value).unwrap();
        sources.insert(name.to_string(), SecretRef::File(path));
    }
    let host = host();
    let plugin = builtin(&host, "notify").await;
    let mut req = CallRequest::new(action, input.to_string());
    req.grants = Arc::new(grants);
    req.secrets = Arc::new(sources);
    req.context.idempotency_key = key.to_string();
    let lines: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = lines.clone();
    req.log = Some(Arc::new(move |line: LogLine| {
        sink.lock()
            .unwrap()
            .push(format!("{} {:?}", line.message, line.fields));
    }));
    let result = host.call(&plugin, req).await.map(|o| o.output);
    let lines = lines.lock().unwrap().clone();
    (result, lines)
}

/// Fails when `secret` appears in the result (output or error) or in any log line.
fn assert_kept_secret(secret: &str, result: &Result<Value, CallError>, lines: &[String]) {
    let shown = match result {
        Ok(v) => v.to_string(),
        Err(e) => format!("{e} {e:?}"),
    };
    assert!(!shown.contains(secret), "secret in the result: {shown}");
    for line in lines {
        assert!(!line.contains(secret), "secret in a log line: {line}");
    }
}

/// Short waits so retries take milliseconds, not seconds.
fn quick_retries(max_attempts: u32) -> Value {
    json!({"max_attempts": max_attempts, "initial_backoff_ms": 10, "max_backoff_ms": 50})
}

#[tokio::test]
async fn webhook_posts_the_body_with_headers_token_and_idempotency_key() {
    let (addr, log) = receiver().await;
    let (result, lines) = call(
        "webhook",
        json!({
            "url": format!("http://{addr}/hook"),
            "body": {"runbook": "disk-cleanup", "freed_bytes": 1800},
            "headers": {"x-team": "ops"},
            "bearer_secret": "hook-token",
        }),
        grants(Some(addr), &["hook-token"]),
        &[("hook-token", TOKEN)],
        "run-1/step-2",
    )
    .await;
    assert_kept_secret(TOKEN, &result, &lines);
    let out = result.unwrap();
    assert_eq!(
        out,
        json!({"url": format!("http://{addr}/hook"), "status": 200, "attempts": 1, "response": "ok"})
    );
    let got = hits(&log, "/hook");
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert_eq!(
        r.body,
        json!({"runbook": "disk-cleanup", "freed_bytes": 1800})
    );
    let header = |name: &str| r.headers.get(name).unwrap().to_str().unwrap().to_string();
    assert_eq!(header("content-type"), "application/json");
    assert_eq!(header("x-team"), "ops");
    assert_eq!(header("authorization"), format!("Bearer {TOKEN}"));
    assert_eq!(header("idempotency-key"), "run-1/step-2");
}

#[tokio::test]
async fn a_503_then_200_is_retried_until_delivered() {
    let (addr, log) = receiver().await;
    let (result, lines) = call(
        "webhook",
        json!({"url": format!("http://{addr}/flaky"), "body": {"n": 1}, "retry": quick_retries(5)}),
        grants(Some(addr), &[]),
        &[],
        "",
    )
    .await;
    let out = result.unwrap();
    assert_eq!(
        (out["status"].as_u64(), out["attempts"].as_u64()),
        (Some(200), Some(2))
    );
    assert_eq!(hits(&log, "/flaky").len(), 2);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("delivery failed; retrying")
                && l.contains("HTTP 503: warming up")),
        "{lines:?}"
    );
}

#[tokio::test]
async fn a_400_fails_at_once_without_a_retry() {
    let (addr, log) = receiver().await;
    let (result, _) = call(
        "webhook",
        json!({"url": format!("http://{addr}/bad"), "body": {}, "retry": quick_retries(5)}),
        grants(Some(addr), &[]),
        &[],
        "",
    )
    .await;
    let err = result.unwrap_err();
    assert!(matches!(err, CallError::Failed(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "webhook `http://{addr}/bad` refused the request with HTTP 400: {{\"status\":\"invalid event\",\"message\":\"Event object is invalid\"}}"
        )
    );
    assert_eq!(hits(&log, "/bad").len(), 1);
}

#[tokio::test]
async fn persistent_5xx_gives_up_retryable_and_never_repeats_the_token() {
    let (addr, log) = receiver().await;
    let (result, lines) = call(
        "webhook",
        json!({
            "url": format!("http://{addr}/echo"),
            "body": {},
            "bearer_secret": "hook-token",
            "retry": quick_retries(3),
        }),
        grants(Some(addr), &["hook-token"]),
        &[("hook-token", TOKEN)],
        "",
    )
    .await;
    assert_kept_secret(TOKEN, &result, &lines);
    let err = result.unwrap_err();
    assert!(matches!(err, CallError::Retryable(_)), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("in 3 attempts"), "{message}");
    assert!(message.contains("Bearer [redacted]"), "{message}");
    assert_eq!(hits(&log, "/echo").len(), 3);
}

#[tokio::test]
async fn a_receiver_outside_the_host_grant_is_denied() {
    let (addr, log) = receiver().await;
    let (result, _) = call(
        "webhook",
        json!({"url": format!("http://{addr}/hook"), "body": {}}),
        grants(None, &[]),
        &[],
        "",
    )
    .await;
    assert_eq!(
        result.unwrap_err().to_string(),
        format!("plugin `notify` may not connect to `{addr}`: not granted")
    );
    assert!(hits(&log, "/hook").is_empty());
}

#[tokio::test]
async fn slack_posts_text_to_the_url_kept_in_a_secret() {
    let (addr, log) = receiver().await;
    let url = format!("http://{addr}/services/T000/B000/XXXX");
    let (result, lines) = call(
        "slack",
        json!({"text": "Cleaned /var/log on db1: 1.8 kB freed"}),
        grants(Some(addr), &["slack-webhook"]),
        &[("slack-webhook", &url)],
        "",
    )
    .await;
    assert_kept_secret("/services/T000/B000/XXXX", &result, &lines);
    assert_eq!(result.unwrap(), json!({"status": 200, "attempts": 1}));
    let got = hits(&log, "/services/T000/B000/XXXX");
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].body,
        json!({"text": "Cleaned /var/log on db1: 1.8 kB freed"})
    );
}

#[tokio::test]
async fn slack_without_its_secret_grant_is_denied() {
    let (addr, log) = receiver().await;
    let url = format!("http://{addr}/services/T000/B000/XXXX");
    let (result, _) = call(
        "slack",
        json!({"text": "hello"}),
        grants(Some(addr), &[]),
        &[("slack-webhook", &url)],
        "",
    )
    .await;
    assert_eq!(
        result.unwrap_err().to_string(),
        "plugin `notify` may not read secret `slack-webhook`: not granted"
    );
    assert!(log.lock().unwrap().is_empty());
}

#[tokio::test]
async fn pagerduty_trigger_sends_an_events_v2_document_keyed_by_the_step() {
    let (addr, log) = receiver().await;
    let (result, lines) = call(
        "pagerduty",
        json!({
            "endpoint": format!("http://{addr}/v2/enqueue"),
            "summary": "Disk full on db1: /var/log at 100%",
            "source": "db1.example.org",
            "severity": "critical",
            "component": "postgres",
            "timestamp": "2024-05-14T09:12:33Z",
            "custom_details": {"free_bytes": 0},
            "links": [{"href": "https://runbooks.example.org/disk-full", "text": "runbook"}],
        }),
        grants(Some(addr), &["pagerduty-routing-key"]),
        &[("pagerduty-routing-key", ROUTING_KEY)],
        "run-9/step-3",
    )
    .await;
    assert_kept_secret(ROUTING_KEY, &result, &lines);
    assert_eq!(
        result.unwrap(),
        json!({
            "event_action": "trigger",
            "dedup_key": "run-9/step-3",
            "status": "success",
            "message": "Event processed",
            "http_status": 202,
            "attempts": 1,
        })
    );
    let got = hits(&log, "/v2/enqueue");
    assert_eq!(
        got[0].body,
        json!({
            "routing_key": ROUTING_KEY,
            "event_action": "trigger",
            "dedup_key": "run-9/step-3",
            "payload": {
                "summary": "Disk full on db1: /var/log at 100%",
                "source": "db1.example.org",
                "severity": "critical",
                "component": "postgres",
                "timestamp": "2024-05-14T09:12:33Z",
                "custom_details": {"free_bytes": 0},
            },
            "links": [{"href": "https://runbooks.example.org/disk-full", "text": "runbook"}],
        })
    );
}

#[tokio::test]
async fn pagerduty_resolve_carries_only_the_key_and_a_429_is_retried() {
    let (addr, log) = receiver().await;
    let (result, _) = call(
        "pagerduty",
        json!({
            "endpoint": format!("http://{addr}/busy-once"),
            "event_action": "resolve",
            "dedup_key": "disk-full-db1",
            "retry": quick_retries(3),
        }),
        grants(Some(addr), &["pagerduty-routing-key"]),
        &[("pagerduty-routing-key", ROUTING_KEY)],
        "run-10/step-1",
    )
    .await;
    let out = result.unwrap();
    assert_eq!(out["attempts"], 2);
    assert_eq!(out["dedup_key"], "disk-full-db1");
    let got = hits(&log, "/busy-once");
    assert_eq!(got.len(), 2);
    assert_eq!(
        got[1].body,
        json!({"routing_key": ROUTING_KEY, "event_action": "resolve", "dedup_key": "disk-full-db1"})
    );
}

#[tokio::test]
async fn pagerduty_events_breaking_the_schema_are_refused_before_sending() {
    let (addr, log) = receiver().await;
    let endpoint = format!("http://{addr}/v2/enqueue");
    for (input, expected) in [
        (
            json!({"endpoint": endpoint, "summary": "s", "source": "db1"}),
            "`severity` is required to trigger an alert",
        ),
        (
            json!({"endpoint": endpoint, "summary": "s", "source": "db1", "severity": "fatal"}),
            "unknown variant `fatal`",
        ),
        (
            json!({"endpoint": endpoint, "summary": "x".repeat(1025), "source": "db1", "severity": "info"}),
            "PagerDuty takes at most 1024",
        ),
        (
            json!({"endpoint": endpoint, "event_action": "acknowledge"}),
            "`acknowledge` needs the `dedup_key`",
        ),
    ] {
        let (result, _) = call(
            "pagerduty",
            input.clone(),
            grants(Some(addr), &["pagerduty-routing-key"]),
            &[("pagerduty-routing-key", ROUTING_KEY)],
            "",
        )
        .await;
        match result {
            Err(CallError::InvalidInput(m)) => assert!(m.contains(expected), "{input}: {m}"),
            other => panic!("{input}: expected invalid input, got {other:?}"),
        }
    }
    assert!(log.lock().unwrap().is_empty());
}

#[tokio::test]
async fn pagerduty_without_the_routing_key_grant_is_denied() {
    let (addr, log) = receiver().await;
    let (result, _) = call(
        "pagerduty",
        json!({
            "endpoint": format!("http://{addr}/v2/enqueue"),
            "summary": "s", "source": "db1", "severity": "info",
        }),
        grants(Some(addr), &[]),
        &[("pagerduty-routing-key", ROUTING_KEY)],
        "k",
    )
    .await;
    assert_eq!(
        result.unwrap_err().to_string(),
        "plugin `notify` may not read secret `pagerduty-routing-key`: not granted"
    );
    assert!(log.lock().unwrap().is_empty());
}
