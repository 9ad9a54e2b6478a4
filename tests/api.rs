//! The HTTP API of `runloom serve`, over real HTTP on 127.0.0.1: Alertmanager intake (firing,
//! retried, resolved, grouped, malformed, oversized, overloaded), webhooks, runs and their
//! logs (JSON and Server-Sent Events), cancel, pause and resume, the breaker, tokens and
//! scopes on every route, the request timeout, graceful shutdown, restarts — and the
//! `runloom serve | pause | resume | breaker | token` commands against a running server.

use crate::support::{node_dir, start_node, wait_for};
use reqwest::StatusCode;
use runloom::node::Node;
use runloom::run::RunStatus;
use runloom::store::RunFilter;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

const FIRING: &str = include_str!("cases/alertmanager/firing.json");
const RESOLVED: &str = include_str!("cases/alertmanager/resolved.json");
const FINGERPRINT: &str = "66c85521d92ab7bb";
const STARTS_AT: &str = "2026-11-23T20:12:54.442Z";

/// Reacts to DiskSpaceLow, one run per host at a time.
const DISK_ALERT: &str = r#"
version = 1
description = "Reacts to DiskSpaceLow."
[parameters.mountpoint]
type = "string"
[parameters.host]
type = "string"
[[trigger]]
kind = "alert"
matchers = ['alertname="DiskSpaceLow"', 'severity=~"warning|critical"']
parameters = { mountpoint = "{{ labels.mountpoint }}", host = "{{ labels.exported_instance }}" }
[policy]
lock = "{{ labels.exported_instance }}"
"#;

/// Started by `POST /hooks/webhook/deploy`; its parameter comes from the body.
const DEPLOY: &str = r#"
version = 1
description = "Deploys a service."
[parameters.service]
type = "string"
default = "none"
[[trigger]]
kind = "webhook"
name = "deploy"
parameters = { service = "{{ body.service }}" }
"#;

/// Fails every time; its breaker opens after one failure.
const FLAKY: &str = r#"
version = 1
description = "Fails every time."
[[trigger]]
kind = "webhook"
name = "flaky"
[policy]
breaker = 1
"#;

/// Runs nightly at 03:00 Berlin time.
const NIGHTLY: &str = r#"
version = 1
description = "Nightly chores."
[[trigger]]
kind = "cron"
schedule = "0 3 * * *"
timezone = "Europe/Berlin"
"#;

/// Logs three lines with pauses between them.
const CHATTY: (&str, &str, &str) = (
    "chatty",
    "version = 1\ndescription = \"Talks.\"\n[parameters.who]\ntype = \"string\"\nrequired = true\n",
    r#"log("one " + params.who); sleep("300ms"); log("two"); sleep("300ms"); log("three"); "done""#,
);

/// Sleeps long enough to be caught running.
const SLOW: (&str, &str, &str) = (
    "slow",
    "version = 1\ndescription = \"Takes its time.\"\n[parameters.wait]\ntype = \"duration\"\ndefault = \"30s\"\n",
    r#"sleep(params.wait); "slept""#,
);

/// An API server on an ephemeral port of 127.0.0.1, over a node on a scratch directory.
struct Server {
    node: Arc<Node>,
    base: String,
    http: reqwest::Client,
    closing: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), runloom::api::ServeError>>,
    dir: PathBuf,
}

impl Server {
    async fn start(dir: &Path, workers: usize) -> Server {
        Self::start_with_grace(dir, workers, Duration::from_secs(5)).await
    }

    async fn start_with_grace(dir: &Path, workers: usize, grace: Duration) -> Server {
        let node = start_node(dir, workers, grace).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let closing = CancellationToken::new();
        let task = tokio::spawn(runloom::api::serve(node.clone(), listener, closing.clone()));
        Server {
            node,
            base,
            http: reqwest::Client::new(),
            closing,
            task,
            dir: dir.to_path_buf(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn addr(&self) -> String {
        self.base.trim_start_matches("http://").to_string()
    }

    /// A request with an optional bearer token.
    fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let r = self.http.request(method, self.url(path));
        match token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        answer(self.request(reqwest::Method::GET, path, None)).await
    }

    async fn post(&self, path: &str, body: &str) -> (StatusCode, Value) {
        answer(
            self.request(reqwest::Method::POST, path, None)
                .header("content-type", "application/json")
                .body(body.to_string()),
        )
        .await
    }

    /// Poll a run over HTTP until it is over.
    async fn wait_final(&self, id: &str) -> Value {
        wait_for(Duration::from_secs(30), || async {
            let (status, run) = self.get(&format!("/api/v1/runs/{id}")).await;
            assert_eq!(status, StatusCode::OK, "{run}");
            let s: RunStatus = run["status"].as_str().unwrap().parse().unwrap();
            s.is_final().then_some(run)
        })
        .await
    }

    async fn runs(&self) -> Vec<runloom::run::RunRecord> {
        self.node
            .store
            .list_runs(&RunFilter {
                limit: 1000,
                ..RunFilter::default()
            })
            .await
            .unwrap()
    }

    /// Run `runloom` with this server's config.
    async fn cli(&self, args: &[&str]) -> std::process::Output {
        runloom_cli(&self.dir, args).await
    }

    async fn stop(self) {
        self.node.shutdown().await;
        self.closing.cancel();
        self.task.await.unwrap().unwrap();
    }
}

async fn answer(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

/// Run the `runloom` executable on the config in `dir`.
async fn runloom_cli(dir: &Path, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_runloom"))
        .arg("--config")
        .arg(dir.join("runloom.toml"))
        .args(args)
        .env_remove("RUNLOOM_DATA_DIR")
        .output()
        .await
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The `error.code` and `error.message` of an error body.
fn error_of(body: &Value) -> (&str, &str) {
    (
        body["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("not an error body: {body}")),
        body["error"]["message"].as_str().unwrap(),
    )
}

/// A copy of the firing notification's alert with another host and fingerprint.
fn alert_for(host: &str, fingerprint: &str, status: &str) -> Value {
    let mut a: Value = serde_json::from_str::<Value>(FIRING).unwrap()["alerts"][0].clone();
    a["labels"]["exported_instance"] = json!(host);
    a["fingerprint"] = json!(fingerprint);
    a["status"] = json!(status);
    a
}

/// A notification carrying `alerts`.
fn notification(alerts: Vec<Value>) -> String {
    let mut n: Value = serde_json::from_str(FIRING).unwrap();
    n["alerts"] = Value::Array(alerts);
    n.to_string()
}

/// Send `request` on a raw connection and return what the server answers (up to closing or
/// `limit`).
async fn raw_exchange(addr: &str, request: &[u8], limit: Duration) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(limit, stream.read_to_end(&mut out)).await;
    text(&out)
}

// ---- Alertmanager intake ---------------------------------------------------------------

#[tokio::test]
async fn a_firing_notification_is_stored_before_the_2xx_and_queues_one_run() {
    let dir = node_dir("", &[("disk", DISK_ALERT, "1")], &[]);
    // No workers: what the answer promises is visible in the store, nothing ran yet.
    let server = Server::start(&dir, 0).await;
    let (status, report) = server.post("/hooks/alertmanager", FIRING).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(
        (&report["alerts"], &report["new"], &report["duplicates"]),
        (&json!(1), &json!(1), &json!(0))
    );
    assert_eq!(report["runs"][0]["status"], "queued");
    let stored = server
        .node
        .store
        .alert(FINGERPRINT, STARTS_AT)
        .await
        .unwrap();
    assert_eq!(stored, Some(("firing".to_string(), 1)));
    let runs = server.runs().await;
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status, RunStatus::Queued);
    assert_eq!(runs[0].id, report["runs"][0]["id"].as_str().unwrap());
    assert_eq!(
        runs[0].alert_key.as_deref(),
        Some("66c85521d92ab7bb@2026-11-23T20:12:54.442Z")
    );
    assert_eq!(
        *runs[0].params,
        json!({"host": "web-1", "mountpoint": "/var"})
    );
    server.stop().await;
}

#[tokio::test]
async fn a_retried_notification_starts_no_second_run_even_when_replicas_race() {
    let dir = node_dir("", &[("disk", DISK_ALERT, "1")], &[]);
    let server = Server::start(&dir, 0).await;
    let (status, _) = server.post("/hooks/alertmanager", FIRING).await;
    assert_eq!(status, StatusCode::OK);
    // Alertmanager retrying after a timeout, and HA replicas sending at once.
    let sends: Vec<_> = (0..6)
        .map(|_| {
            let request = server
                .http
                .post(server.url("/hooks/alertmanager"))
                .body(FIRING);
            tokio::spawn(answer(request))
        })
        .collect();
    for send in sends {
        let (status, report) = send.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{report}");
        assert_eq!(
            (&report["duplicates"], &report["runs"]),
            (&json!(1), &json!([]))
        );
    }
    assert_eq!(server.runs().await.len(), 1);
    let (_, notifications) = server
        .node
        .store
        .alert(FINGERPRINT, STARTS_AT)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(notifications, 7);
    server.stop().await;
}

#[tokio::test]
async fn a_resolved_notification_resolves_the_alert_and_cancels_its_queued_run() {
    let dir = node_dir("", &[("disk", DISK_ALERT, "1")], &[]);
    let server = Server::start(&dir, 0).await;
    let (_, fired) = server.post("/hooks/alertmanager", FIRING).await;
    let id = fired["runs"][0]["id"].as_str().unwrap().to_string();
    let (status, report) = server.post("/hooks/alertmanager", RESOLVED).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(
        (&report["resolved"], &report["cancelled"]),
        (&json!(1), &json!(1))
    );
    let (status, run) = server.get(&format!("/api/v1/runs/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(run["status"], "cancelled");
    assert_eq!(run["reason"], "the alert resolved before the run started");
    let (state, _) = server
        .node
        .store
        .alert(FINGERPRINT, STARTS_AT)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state, "resolved");
    server.stop().await;
}

#[tokio::test]
async fn each_alert_of_a_grouped_notification_is_handled_on_its_own() {
    let dir = node_dir("", &[("disk", DISK_ALERT, "1")], &[]);
    let server = Server::start(&dir, 0).await;
    let mut unrelated = alert_for("web-4", "ffff000000000004", "firing");
    unrelated["labels"]["alertname"] = json!("HighLatency");
    let group = notification(vec![
        alert_for("web-1", "aaaa000000000001", "firing"),
        alert_for("web-2", "aaaa000000000002", "firing"),
        // Resolved before runloom saw it fire: stored, starts nothing.
        alert_for("web-3", "aaaa000000000003", "resolved"),
        // Matches no runbook: stored, starts nothing.
        unrelated,
    ]);
    let (status, report) = server.post("/hooks/alertmanager", &group).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(
        (&report["alerts"], &report["new"], &report["resolved"]),
        (&json!(4), &json!(3), &json!(1))
    );
    let mut hosts: Vec<String> = server
        .runs()
        .await
        .iter()
        .map(|r| r.params["host"].as_str().unwrap().to_string())
        .collect();
    hosts.sort();
    assert_eq!(hosts, ["web-1", "web-2"]);
    for fp in [
        "aaaa000000000001",
        "aaaa000000000002",
        "aaaa000000000003",
        "ffff000000000004",
    ] {
        assert!(
            server
                .node
                .store
                .alert(fp, STARTS_AT)
                .await
                .unwrap()
                .is_some(),
            "alert {fp} not stored"
        );
    }
    // The group again (Alertmanager resends every group_interval): nothing new starts.
    let (_, again) = server.post("/hooks/alertmanager", &group).await;
    assert_eq!(
        (&again["duplicates"], &again["runs"]),
        (&json!(3), &json!([]))
    );
    assert_eq!(server.runs().await.len(), 2);
    server.stop().await;
}

#[tokio::test]
async fn malformed_wrong_version_and_oversized_payloads_get_4xx_and_store_nothing() {
    let dir = node_dir(
        "[server]\nmax_body = \"16KiB\"\n",
        &[("disk", DISK_ALERT, "1")],
        &[],
    );
    let server = Server::start(&dir, 0).await;
    let mut huge: Value = serde_json::from_str(FIRING).unwrap();
    huge["alerts"][0]["annotations"]["description"] = json!("x".repeat(32 << 10));
    let mut late_bad = alert_for("web-2", "aaaa000000000002", "firing");
    late_bad["startsAt"] = json!("yesterday");
    let cases: Vec<(String, StatusCode, &str, &str)> = vec![
        (
            "{".into(),
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the body is not JSON",
        ),
        (
            "".into(),
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the body is not JSON",
        ),
        (
            FIRING.replace("\"version\": \"4\"", "\"version\": \"3\""),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "`version` is \"3\"",
        ),
        (
            FIRING.replace("\"alerts\"", "\"alertz\""),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "missing field `alerts`",
        ),
        (
            FIRING.replace(
                "\"fingerprint\": \"66c85521d92ab7bb\"",
                "\"fingerprint\": \"\"",
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "`alerts[0].fingerprint` is empty",
        ),
        (
            // The first alert is fine, the second is not: neither is stored.
            notification(vec![alert_for("web-1", FINGERPRINT, "firing"), late_bad]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "`alerts[1].startsAt` is not an RFC 3339 time",
        ),
        (
            "[1, 2]".into(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "invalid type",
        ),
        (
            huge.to_string(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            "the body is larger than 16384 bytes",
        ),
    ];
    for (body, expected, code, message) in &cases {
        let (status, answer) = server.post("/hooks/alertmanager", body).await;
        assert_eq!(status, *expected, "{answer}");
        let (c, m) = error_of(&answer);
        assert_eq!(c, *code);
        assert!(m.contains(message), "`{m}` does not contain `{message}`");
    }
    // A body without a length, growing past the limit, is cut off the same way.
    let chunk = format!("{:x}\r\n{}\r\n", 20 << 10, " ".repeat(20 << 10));
    let request = format!(
        "POST /hooks/alertmanager HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n{chunk}0\r\n\r\n"
    );
    let raw = raw_exchange(&server.addr(), request.as_bytes(), Duration::from_secs(5)).await;
    assert!(raw.starts_with("HTTP/1.1 413"), "{raw}");
    assert!(server.runs().await.is_empty());
    assert!(
        server
            .node
            .store
            .alert(FINGERPRINT, STARTS_AT)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        server
            .node
            .store
            .alert("aaaa000000000002", STARTS_AT)
            .await
            .unwrap()
            .is_none()
    );
    server.stop().await;
}

#[tokio::test]
async fn an_overloaded_intake_answers_503_with_retry_after_and_recovers() {
    let dir = node_dir(
        "[server]\nmax_intake = 1\n",
        &[("disk", DISK_ALERT, "1")],
        &[],
    );
    let server = Server::start(&dir, 0).await;
    // One request holds the only intake slot: its body never finishes arriving. Probes carry
    // a body that stores nothing: 422 while they get the slot, 503 once the holder has it.
    const HOLD: &[u8] = b"POST /hooks/alertmanager HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: 5000\r\n\r\n{";
    let mut hold = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    hold.write_all(HOLD).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let refused = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the intake never filled up"
        );
        // A probe that won the race answered the holder 503: hold again.
        let mut peek = [0u8; 64];
        match hold.try_read(&mut peek) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            _ => {
                hold = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
                hold.write_all(HOLD).await.unwrap();
            }
        }
        let response = server
            .http
            .post(server.url("/hooks/alertmanager"))
            .body("{}")
            .send()
            .await
            .unwrap();
        match response.status() {
            StatusCode::SERVICE_UNAVAILABLE => break response,
            StatusCode::UNPROCESSABLE_ENTITY => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => panic!("unexpected {other}"),
        }
    };
    assert_eq!(refused.headers()["retry-after"], "1");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(error_of(&body).0, "overloaded");
    assert!(server.runs().await.is_empty());
    drop(hold);
    let (status, report) = wait_for(Duration::from_secs(10), || async {
        let (status, report) = server.post("/hooks/alertmanager", FIRING).await;
        (status != StatusCode::SERVICE_UNAVAILABLE).then_some((status, report))
    })
    .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(server.runs().await.len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn a_request_that_takes_too_long_is_answered_503_and_changes_nothing() {
    let dir = node_dir("[server]\nrequest_timeout = \"300ms\"\n", &[CHATTY], &[]);
    let server = Server::start(&dir, 0).await;
    let raw = raw_exchange(
        &server.addr(),
        b"POST /api/v1/runbooks/chatty/runs HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: 100\r\n\r\n{\"params\"",
        Duration::from_secs(5),
    )
    .await;
    assert!(raw.starts_with("HTTP/1.1 503"), "{raw}");
    assert!(raw.contains("\"code\":\"timeout\""), "{raw}");
    assert!(server.runs().await.is_empty());
    server.stop().await;
}

// ---- webhooks ------------------------------------------------------------------------------

#[tokio::test]
async fn the_webhook_route_passes_its_json_body_to_the_runbooks_that_name_it() {
    let dir = node_dir(
        "",
        &[(
            "deploy",
            DEPLOY,
            r#"log("deploying " + params.service); params.service"#,
        )],
        &[],
    );
    let server = Server::start(&dir, 2).await;
    let (status, answer) = server
        .post(
            "/hooks/webhook/deploy",
            r#"{"service": "api", "sha": "abc123"}"#,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let id = answer["runs"][0]["id"].as_str().unwrap();
    let run = server.wait_final(id).await;
    assert_eq!(
        (&run["status"], &run["output"]),
        (&json!("succeeded"), &json!("api"))
    );
    assert_eq!(run["trigger_kind"], "webhook");
    assert_eq!(run["trigger"]["body"]["sha"], "abc123");
    let (status, answer) = server.post("/hooks/webhook/nobody", "{}").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        error_of(&answer),
        (
            "not_found",
            "no runbook has a webhook trigger named `nobody`"
        )
    );
    let (status, answer) = server.post("/hooks/webhook/deploy", "service=api").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(server.runs().await.len(), 1);
    server.stop().await;
}

// ---- runs and logs -------------------------------------------------------------------------

/// Server-Sent Events read from a response until the stream ends: (event, id, data).
async fn read_events(mut response: reqwest::Response) -> Vec<(String, Option<String>, Value)> {
    let mut buffer = String::new();
    let mut events = Vec::new();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(30), response.chunk())
        .await
        .expect("the event stream stalled")
        .unwrap()
    {
        buffer.push_str(&text(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let (mut event, mut id, mut data) = (String::from("message"), None, String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim().to_string();
                } else if let Some(v) = line.strip_prefix("id:") {
                    id = Some(v.trim().to_string());
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim());
                }
            }
            if !data.is_empty() {
                events.push((event, id, serde_json::from_str(&data).unwrap()));
            }
        }
    }
    events
}

#[tokio::test]
async fn runs_are_started_listed_shown_and_their_logs_followed_as_server_sent_events() {
    let dir = node_dir("", &[CHATTY], &[]);
    let server = Server::start(&dir, 2).await;
    let response = server
        .http
        .post(server.url("/api/v1/runbooks/chatty/runs"))
        .json(&json!({"params": {"who": "ops"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let location = response.headers()["location"].to_str().unwrap().to_string();
    let run: Value = response.json().await.unwrap();
    let id = run["id"].as_str().unwrap().to_string();
    assert_eq!(location, format!("/api/v1/runs/{id}"));
    assert_eq!(
        (&run["status"], &run["trigger_kind"]),
        (&json!("queued"), &json!("manual"))
    );

    // Follow while it runs: every line, then the final status.
    let response = server
        .http
        .get(server.url(&format!("{location}/logs?follow=true")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let events = read_events(response).await;
    let (last, rest) = events.split_last().unwrap();
    assert_eq!(last.0, "end");
    assert_eq!(
        (&last.2["id"], &last.2["status"]),
        (&json!(id), &json!("succeeded"))
    );
    let said: Vec<&str> = rest
        .iter()
        .filter(|(event, _, line)| event == "log" && line["source"] == "script")
        .map(|(_, _, line)| line["message"].as_str().unwrap())
        .collect();
    assert_eq!(said, ["one ops", "two", "three"]);
    for (_, event_id, line) in rest {
        assert_eq!(event_id.as_deref(), Some(line["seq"].to_string().as_str()));
    }

    // Reconnecting with Last-Event-ID resumes after that line.
    let first_seq = rest[0].1.clone().unwrap();
    let resumed = server
        .http
        .get(server.url(&format!("{location}/logs")))
        .header("accept", "text/event-stream")
        .header("last-event-id", &first_seq)
        .send()
        .await
        .unwrap();
    let again = read_events(resumed).await;
    assert_eq!(again.len(), events.len() - 1);
    assert_eq!(again.last().unwrap().0, "end");

    // The same lines as JSON, the run with its steps, and the listing.
    let (status, lines) = server.get(&format!("{location}/logs")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(lines.as_array().unwrap().len(), rest.len());
    let (_, shown) = server.get(&format!("/api/v1/runs/{}", &id[..10])).await;
    assert_eq!(
        (&shown["id"], &shown["output"]),
        (&json!(id), &json!("done"))
    );
    assert!(shown["steps"].is_array() && shown["duration_ms"].is_i64());
    let (_, listed) = server
        .get("/api/v1/runs?runbook=chatty&status=succeeded&limit=5")
        .await;
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let (_, none) = server
        .get("/api/v1/runs?runbook=chatty&status=failed")
        .await;
    assert_eq!(none, json!([]));
    let (status, bad) = server.get("/api/v1/runs?status=done").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        error_of(&bad).1.contains("`done` is not a run status"),
        "{bad}"
    );
    let (status, missing) = server.get("/api/v1/runs/01ZZZZZZZZZZZZ").await;
    assert_eq!(
        (status, error_of(&missing).0),
        (StatusCode::NOT_FOUND, "not_found")
    );
    server.stop().await;
}

#[tokio::test]
async fn starting_a_run_names_what_is_wrong_with_the_request() {
    let dir = node_dir("", &[CHATTY], &[]);
    let server = Server::start(&dir, 0).await;
    let cases = [
        (
            "/api/v1/runbooks/nope/runs",
            "{}",
            StatusCode::NOT_FOUND,
            "no runbook `nope`",
        ),
        (
            "/api/v1/runbooks/chatty/runs",
            "{}",
            StatusCode::UNPROCESSABLE_ENTITY,
            "who",
        ),
        (
            "/api/v1/runbooks/chatty/runs",
            r#"{"params": {"who": 5}}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "who",
        ),
        (
            "/api/v1/runbooks/chatty/runs",
            r#"{"parms": {}}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown field `parms`",
        ),
        (
            "/api/v1/runbooks/chatty/runs",
            "{\"params\": ",
            StatusCode::BAD_REQUEST,
            "not JSON",
        ),
    ];
    for (path, body, expected, message) in cases {
        let (status, answer) = server.post(path, body).await;
        assert_eq!(status, expected, "{path} {body}: {answer}");
        assert!(error_of(&answer).1.contains(message), "{answer}");
    }
    assert!(server.runs().await.is_empty());
    // A dry run is recorded as such.
    let (status, run) = server
        .post(
            "/api/v1/runbooks/chatty/runs",
            r#"{"params": {"who": "x"}, "dry_run": true}"#,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(run["dry_run"], true);
    // Unknown routes and methods answer JSON too.
    let (status, answer) = server.get("/api/v2/runs").await;
    assert_eq!(
        (status, error_of(&answer).0),
        (StatusCode::NOT_FOUND, "not_found")
    );
    let (status, answer) = server.get("/api/v1/pause").await;
    assert_eq!(
        (status, error_of(&answer).0),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
    );
    server.stop().await;
}

#[tokio::test]
async fn cancel_ends_a_queued_run_at_once_and_a_running_one_at_its_next_step() {
    let dir = node_dir("", &[SLOW], &[]);
    let server = Server::start(&dir, 1).await;
    let (_, running) = server.post("/api/v1/runbooks/slow/runs", "{}").await;
    let (_, queued) = server.post("/api/v1/runbooks/slow/runs", "{}").await;
    let running = running["id"].as_str().unwrap().to_string();
    let queued = queued["id"].as_str().unwrap().to_string();
    wait_for(Duration::from_secs(10), || async {
        let (_, run) = server.get(&format!("/api/v1/runs/{running}")).await;
        (run["status"] == "running").then_some(())
    })
    .await;
    let (status, run) = server
        .post(&format!("/api/v1/runs/{queued}/cancel"), "")
        .await;
    assert_eq!(
        (status, &run["status"]),
        (StatusCode::OK, &json!("cancelled"))
    );
    let (status, _) = server
        .post(&format!("/api/v1/runs/{running}/cancel"), "")
        .await;
    assert_eq!(status, StatusCode::OK);
    let run = server.wait_final(&running).await;
    assert_eq!(run["status"], "cancelled", "{run}");
    let (status, answer) = server
        .post(&format!("/api/v1/runs/{queued}/cancel"), "")
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(error_of(&answer).1.contains("is already over (cancelled)"));
    server.stop().await;
}

#[tokio::test]
async fn queued_runs_survive_a_restart_of_the_server() {
    let dir = node_dir(
        "",
        &[("quick", "version = 1\ndescription = \"x\"\n", "42")],
        &[],
    );
    let server = Server::start(&dir, 0).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (status, run) = server.post("/api/v1/runbooks/quick/runs", "").await;
        assert_eq!(status, StatusCode::ACCEPTED);
        ids.push(run["id"].as_str().unwrap().to_string());
    }
    server.stop().await;
    let server = Server::start(&dir, 2).await;
    for id in &ids {
        let run = server.wait_final(id).await;
        assert_eq!(
            (&run["status"], &run["output"]),
            (&json!("succeeded"), &json!(42))
        );
    }
    server.stop().await;
}

// ---- the safety kernel -------------------------------------------------------------------

#[tokio::test]
async fn pause_and_resume_through_the_api_and_the_cli_record_skipped_runs_with_the_rule() {
    let dir = node_dir("", &[("deploy", DEPLOY, "1")], &[]);
    let server = Server::start(&dir, 2).await;
    let (status, answer) = server
        .post("/api/v1/pause", r#"{"reason": "change freeze"}"#)
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (status, answer) = server.post("/hooks/webhook/deploy", "{}").await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a skipped run is not accepted work: {answer}"
    );
    let skipped = &answer["runs"][0];
    assert_eq!(
        (&skipped["status"], &skipped["reason"]),
        (
            &json!("skipped"),
            &json!("runloom is paused: change freeze")
        )
    );
    let (_, run) = server
        .get(&format!("/api/v1/runs/{}", skipped["id"].as_str().unwrap()))
        .await;
    assert_eq!(run["error_kind"], "paused");
    // A manual run is recorded, skipped, too: 201, not 202.
    let (status, manual) = server.post("/api/v1/runbooks/deploy/runs", "").await;
    assert_eq!(
        (status, &manual["status"]),
        (StatusCode::CREATED, &json!("skipped"))
    );
    let (_, catalogue) = server.get("/api/v1/runbooks").await;
    assert_eq!(
        (&catalogue["paused"], &catalogue["paused_reason"]),
        (&json!(true), &json!("change freeze"))
    );
    let (status, _) = server.post("/api/v1/resume", "").await;
    assert_eq!(status, StatusCode::OK);
    let (status, answer) = server.post("/hooks/webhook/deploy", "{}").await;
    assert_eq!(
        (status, &answer["runs"][0]["status"]),
        (StatusCode::ACCEPTED, &json!("queued"))
    );

    // The CLI acts on the running server's store.
    let out = server
        .cli(&["pause", "--reason", "maintenance window"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("reason: maintenance window"));
    let (_, answer) = server.post("/hooks/webhook/deploy", "{}").await;
    assert_eq!(
        answer["runs"][0]["reason"],
        "runloom is paused: maintenance window"
    );
    let out = server.cli(&["resume"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim(),
        "resumed (was paused: maintenance window)"
    );
    let (_, answer) = server.post("/hooks/webhook/deploy", "{}").await;
    assert_eq!(answer["runs"][0]["status"], "queued");
    server.stop().await;
}

#[tokio::test]
async fn the_breaker_shows_in_the_catalogue_and_is_reset_through_the_api_and_the_cli() {
    let dir = node_dir("", &[("flaky", FLAKY, r#"fail("still down")"#)], &[]);
    let server = Server::start(&dir, 2).await;
    let trip = || async {
        let (_, answer) = server.post("/hooks/webhook/flaky", "{}").await;
        let id = answer["runs"][0]["id"].as_str().unwrap().to_string();
        assert_eq!(server.wait_final(&id).await["status"], "failed");
        let (_, answer) = server.post("/hooks/webhook/flaky", "{}").await;
        let skipped = answer["runs"][0].clone();
        assert_eq!(skipped["status"], "skipped", "{answer}");
        assert!(
            skipped["reason"]
                .as_str()
                .unwrap()
                .starts_with("circuit breaker open: 1 consecutive failed runs of `flaky`"),
            "{skipped}"
        );
    };
    trip().await;
    let (_, catalogue) = server.get("/api/v1/runbooks").await;
    let flaky = &catalogue["runbooks"][0];
    assert_eq!(flaky["name"], "flaky");
    assert_eq!(flaky["policy"]["breaker"], 1);
    assert_eq!(
        flaky["triggers"][0],
        json!({"kind": "webhook", "name": "flaky"})
    );
    assert_eq!(
        (
            &flaky["breaker"]["open"],
            &flaky["breaker"]["consecutive_failures"]
        ),
        (&json!(true), &json!(1))
    );
    let (status, answer) = server
        .post("/api/v1/runbooks/flaky/breaker/reset", "")
        .await;
    assert_eq!(
        (status, &answer["was_open"]),
        (StatusCode::OK, &json!(true))
    );
    let (_, catalogue) = server.get("/api/v1/runbooks").await;
    assert_eq!(catalogue["runbooks"][0]["breaker"]["open"], false);
    let (status, _) = server.post("/api/v1/runbooks/nope/breaker/reset", "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    trip().await;
    let out = server.cli(&["breaker", "list"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let listing = text(&out.stdout);
    assert!(listing.starts_with("RUNBOOK"), "{listing}");
    assert!(
        listing.contains("flaky") && listing.contains("open since"),
        "{listing}"
    );
    let out = server.cli(&["breaker", "reset", "flaky"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("breaker of `flaky` reset"));
    let (_, answer) = server.post("/hooks/webhook/flaky", "{}").await;
    assert_eq!(answer["runs"][0]["status"], "queued");
    server.stop().await;
}

#[tokio::test]
async fn schedules_list_each_cron_trigger_with_its_next_fire_times() {
    let dir = node_dir(
        "",
        &[("nightly", NIGHTLY, "1"), ("deploy", DEPLOY, "1")],
        &[],
    );
    let server = Server::start(&dir, 0).await;
    let (status, list) = server.get("/api/v1/schedules?count=2").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1, "only the cron trigger: {list:?}");
    let nightly = &list[0];
    assert_eq!(
        (
            &nightly["runbook"],
            &nightly["trigger"],
            &nightly["schedule"]
        ),
        (&json!("nightly"), &json!("cron:0"), &json!("0 3 * * *"))
    );
    assert_eq!(nightly["timezone"], "Europe/Berlin");
    let next = nightly["next"].as_array().unwrap();
    assert_eq!(next.len(), 2);
    for t in next {
        let t = chrono::DateTime::parse_from_rfc3339(t.as_str().unwrap()).unwrap();
        assert_eq!(t.format("%H:%M").to_string(), "03:00", "{t}");
    }
    // The catalogue shows the same trigger with its policies.
    let (_, catalogue) = server.get("/api/v1/runbooks").await;
    let rb = catalogue["runbooks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "nightly")
        .unwrap()
        .clone();
    assert_eq!(rb["triggers"][0]["kind"], "cron");
    assert_eq!(rb["triggers"][0]["overlap"], nightly["overlap"]);
    let (status, bad) = server.get("/api/v1/schedules?count=many").await;
    assert_eq!(
        (status, error_of(&bad).0),
        (StatusCode::BAD_REQUEST, "bad_request")
    );
    server.stop().await;
}

// ---- tokens and scopes -------------------------------------------------------------------

/// Who calls, in the route × scope table.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Who {
    Nobody,
    BadToken,
    Revoked,
    Scoped(&'static str),
}

#[tokio::test]
async fn every_route_answers_every_scope_as_the_scope_table_says() {
    let dir = node_dir(
        "",
        &[
            ("disk", DISK_ALERT, "1"),
            ("deploy", DEPLOY, "1"),
            ("nightly", NIGHTLY, "1"),
        ],
        &[],
    );
    let server = Server::start(&dir, 0).await;
    let store = &server.node.store;
    let mut secrets = std::collections::HashMap::new();
    for scope in ["read", "run", "admin", "alert"] {
        let t = store
            .create_token(scope, &[scope.to_string()])
            .await
            .unwrap();
        secrets.insert(scope, t.secret);
    }
    let revoked = store.create_token("old", &["admin".into()]).await.unwrap();
    store.revoke_token(&revoked.record.id).await.unwrap();
    let run_id = server
        .node
        .submit("deploy", Default::default(), false)
        .await
        .unwrap()
        .id;

    // (method, path, body, the scope it needs; None: no token needed)
    let routes: Vec<(&str, String, &str, Option<&str>)> = vec![
        ("GET", "/healthz".into(), "", None),
        ("GET", "/metrics".into(), "", Some("read")),
        ("GET", "/api/v1/runs".into(), "", Some("read")),
        ("GET", format!("/api/v1/runs/{run_id}"), "", Some("read")),
        (
            "GET",
            format!("/api/v1/runs/{run_id}/logs"),
            "",
            Some("read"),
        ),
        ("GET", "/api/v1/runbooks".into(), "", Some("read")),
        ("GET", "/api/v1/plugins".into(), "", Some("read")),
        ("GET", "/api/v1/schedules".into(), "", Some("read")),
        (
            "POST",
            "/api/v1/runbooks/deploy/runs".into(),
            "{}",
            Some("run"),
        ),
        (
            "POST",
            "/api/v1/runs/{fresh}/cancel".into(),
            "",
            Some("run"),
        ),
        (
            "POST",
            "/api/v1/pause".into(),
            r#"{"reason": "matrix"}"#,
            Some("admin"),
        ),
        ("POST", "/api/v1/resume".into(), "", Some("admin")),
        (
            "POST",
            "/api/v1/runbooks/deploy/breaker/reset".into(),
            "",
            Some("admin"),
        ),
        ("POST", "/hooks/alertmanager".into(), FIRING, Some("alert")),
        ("POST", "/hooks/webhook/deploy".into(), "{}", Some("alert")),
    ];
    let allowed = |has: &str, needed: &str| match has {
        "admin" => true,
        "run" => needed == "read" || needed == "run",
        other => other == needed,
    };
    let callers = [
        Who::Nobody,
        Who::BadToken,
        Who::Revoked,
        Who::Scoped("read"),
        Who::Scoped("run"),
        Who::Scoped("admin"),
        Who::Scoped("alert"),
    ];
    let mut failures = Vec::new();
    for who in callers {
        let token = match who {
            Who::Nobody => None,
            Who::BadToken => Some(
                "rlt_0000000000000000000000000000000000000000000000000000000000000000".to_string(),
            ),
            Who::Revoked => Some(revoked.secret.clone()),
            Who::Scoped(s) => Some(secrets[s].clone()),
        };
        for (method, path, body, needed) in &routes {
            let path = if path.contains("{fresh}") {
                let fresh = server
                    .node
                    .submit("deploy", Default::default(), false)
                    .await
                    .unwrap();
                path.replace("{fresh}", &fresh.id)
            } else {
                path.clone()
            };
            let expected = match (needed, who) {
                (None, _) => "2xx",
                (Some(_), Who::Nobody | Who::BadToken | Who::Revoked) => "401",
                (Some(needed), Who::Scoped(has)) if allowed(has, needed) => "2xx",
                (Some(_), Who::Scoped(_)) => "403",
            };
            let response = server
                .request(method.parse().unwrap(), &path, token.as_deref())
                .body(body.to_string())
                .send()
                .await
                .unwrap();
            let status = response.status();
            let got = match status.as_u16() {
                200..=299 => "2xx",
                401 => "401",
                403 => "403",
                _ => "other",
            };
            let headers = response.headers().clone();
            let answer: Value = response.json().await.unwrap_or(Value::Null);
            if got != expected {
                failures.push(format!(
                    "{who:?} {method} {path}: expected {expected}, got {status} {answer}"
                ));
                continue;
            }
            if got == "401" {
                assert_eq!(error_of(&answer).0, "unauthorized");
                assert!(headers.contains_key("www-authenticate"));
            }
            if got == "403" {
                let (code, message) = error_of(&answer);
                assert_eq!(code, "forbidden");
                assert!(
                    message.contains(&format!("`{}`", needed.unwrap())),
                    "{message}"
                );
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // No secret ever appears in what the API shows.
    let (_, runs) = answer(server.request(
        reqwest::Method::GET,
        "/api/v1/runs?limit=1000",
        Some(&secrets["admin"]),
    ))
    .await;
    for secret in secrets.values() {
        assert!(!runs.to_string().contains(secret.as_str()));
    }
    server.stop().await;
}

#[tokio::test]
async fn tokens_created_listed_and_revoked_with_the_cli_take_effect_on_a_running_server() {
    let dir = node_dir("", &[("deploy", DEPLOY, "1")], &[]);
    let server = Server::start(&dir, 0).await;
    // No token yet: loopback needs none.
    assert_eq!(server.get("/api/v1/runs").await.0, StatusCode::OK);
    let out = server
        .cli(&[
            "token", "create", "--name", "ci", "--scope", "run", "--scope", "read",
        ])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let secret = text(&out.stdout).trim().to_string();
    assert!(secret.starts_with("rlt_") && secret.len() == 68, "{secret}");
    assert!(text(&out.stderr).contains("not shown again"));
    // Within seconds, a token is needed, and this one works.
    wait_for(Duration::from_secs(5), || async {
        (server.get("/api/v1/runs").await.0 == StatusCode::UNAUTHORIZED).then_some(())
    })
    .await;
    let with = |path: &str| {
        server
            .request(reqwest::Method::POST, path, Some(&secret))
            .body("{}")
    };
    assert_eq!(
        answer(with("/api/v1/runbooks/deploy/runs")).await.0,
        StatusCode::ACCEPTED
    );
    assert_eq!(answer(with("/api/v1/pause")).await.0, StatusCode::FORBIDDEN);

    let out = server.cli(&["token", "list"]).await;
    let listing = text(&out.stdout);
    assert!(
        listing.contains("ci") && listing.contains("run,read"),
        "{listing}"
    );
    assert!(!listing.contains(&secret));
    let id = listing
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let out = server.cli(&["token", "revoke", &id]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    wait_for(Duration::from_secs(5), || async {
        (answer(with("/api/v1/runbooks/deploy/runs")).await.0 == StatusCode::UNAUTHORIZED)
            .then_some(())
    })
    .await;
    let out = server
        .cli(&["token", "create", "--name", "x", "--scope", "root"])
        .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("`root` is not a scope"));
    let out = server.cli(&["token", "revoke", "nope"]).await;
    assert_eq!(out.status.code(), Some(2));
    server.stop().await;
}

#[tokio::test]
async fn without_tokens_a_web_page_cannot_drive_a_loopback_server() {
    let dir = node_dir("", &[("deploy", DEPLOY, "1")], &[]);
    let server = Server::start(&dir, 0).await;
    // A cross-site form post from a page in the operator's browser.
    let (status, answer) = answer(
        server
            .request(reqwest::Method::POST, "/api/v1/runbooks/deploy/runs", None)
            .header("origin", "https://evil.example")
            .header("content-type", "text/plain")
            .body("{}"),
    )
    .await;
    assert_eq!(
        (status, error_of(&answer).0),
        (StatusCode::FORBIDDEN, "forbidden")
    );
    // A DNS-rebound name pointing at 127.0.0.1.
    let raw = raw_exchange(
        &server.addr(),
        b"GET /api/v1/runs HTTP/1.1\r\nhost: rebind.evil.example:8080\r\nconnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(raw.starts_with("HTTP/1.1 403"), "{raw}");
    assert!(server.runs().await.is_empty());
    // Tools (curl, Alertmanager, the CLI) send neither: they are answered.
    assert_eq!(server.get("/api/v1/runs").await.0, StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn without_tokens_the_server_refuses_any_address_but_loopback() {
    let dir = node_dir("", &[("deploy", DEPLOY, "1")], &[]);
    let out = runloom_cli(&dir, &["serve", "--listen", "0.0.0.0:0"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(
        err.contains("refusing to listen on 0.0.0.0:0 without an API token"),
        "{err}"
    );
    assert!(err.contains("runloom token create"), "{err}");
    // The library refuses too, and accepts once a token exists.
    let node = start_node(&dir, 0, Duration::from_secs(1)).await;
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let refused = runloom::api::serve(node.clone(), listener, CancellationToken::new()).await;
    assert!(
        matches!(refused, Err(runloom::api::ServeError::NeedsToken(_))),
        "{refused:?}"
    );
    node.store
        .create_token("ops", &["admin".into()])
        .await
        .unwrap();
    let addr: std::net::SocketAddr = "0.0.0.0:8080".parse().unwrap();
    runloom::api::check_listen(addr, &node.store).await.unwrap();
    node.shutdown().await;
}

// ---- health, metrics, shutdown -----------------------------------------------------------

#[tokio::test]
async fn metrics_count_alerts_runs_and_the_queue_in_prometheus_text() {
    let dir = node_dir("", &[("disk", DISK_ALERT, "1")], &[]);
    let server = Server::start(&dir, 0).await;
    server.post("/hooks/alertmanager", FIRING).await;
    server.post("/hooks/alertmanager", FIRING).await;
    let response = server
        .http
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = response.text().await.unwrap();
    for expected in [
        "runloom_alerts_received_total{status=\"firing\"} 2",
        "runloom_alerts_deduplicated_total 1",
        "runloom_queue_depth 1",
        "# TYPE runloom_run_duration_seconds histogram",
        "# TYPE runloom_plugin_call_duration_seconds histogram",
    ] {
        assert!(text.contains(expected), "missing `{expected}` in\n{text}");
    }
    let (status, health) = server.get("/healthz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (&health["node"], &health["status"]),
        (&json!("test-node"), &json!("ok"))
    );
    server.stop().await;
}

#[tokio::test]
async fn while_shutting_down_intake_answers_503_with_retry_after_and_running_runs_finish() {
    let dir = node_dir("", &[SLOW, ("disk", DISK_ALERT, "1")], &[]);
    let server = Server::start_with_grace(&dir, 1, Duration::from_secs(20)).await;
    let (_, run) = server
        .post(
            "/api/v1/runbooks/slow/runs",
            r#"{"params": {"wait": "1500ms"}}"#,
        )
        .await;
    let id = run["id"].as_str().unwrap().to_string();
    wait_for(Duration::from_secs(10), || async {
        let (_, run) = server.get(&format!("/api/v1/runs/{id}")).await;
        (run["status"] == "running").then_some(())
    })
    .await;
    let node = server.node.clone();
    let shutdown = tokio::spawn(async move { node.shutdown().await });
    let response = wait_for(Duration::from_secs(5), || async {
        let r = server
            .http
            .get(server.url("/healthz"))
            .send()
            .await
            .unwrap();
        (r.status() == StatusCode::SERVICE_UNAVAILABLE).then_some(r)
    })
    .await;
    assert!(response.headers().contains_key("retry-after"));
    let health: Value = response.json().await.unwrap();
    assert_eq!(health["status"], "shutting_down");
    let response = server
        .http
        .post(server.url("/hooks/alertmanager"))
        .body(FIRING)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "5");
    let body: Value = response.json().await.unwrap();
    assert_eq!(error_of(&body).0, "shutting_down");
    let (status, _) = server.post("/api/v1/runbooks/slow/runs", "{}").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    // Reads still work while the node drains.
    let (status, _) = server.get(&format!("/api/v1/runs/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        shutdown.await.unwrap(),
        0,
        "the run finished within the grace period"
    );
    assert!(
        server
            .node
            .store
            .alert(FINGERPRINT, STARTS_AT)
            .await
            .unwrap()
            .is_none()
    );
    let (_, run) = server.get(&format!("/api/v1/runs/{id}")).await;
    assert_eq!(run["status"], "succeeded");
    server.closing.cancel();
    server.task.await.unwrap().unwrap();
}

/// `runloom serve` as a process: its address, read from its first line of output.
struct Process {
    child: tokio::process::Child,
    base: String,
}

async fn spawn_serve(dir: &Path) -> Process {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_runloom"))
        .arg("--config")
        .arg(dir.join("runloom.toml"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let first = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("runloom serve did not start")
        .unwrap()
        .unwrap_or_default();
    let base = first
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in `{first}`"))
        .to_string();
    // Keep reading so the process never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Process { child, base }
}

#[tokio::test]
async fn sigterm_stops_serve_gracefully_and_the_next_start_finishes_the_requeued_run() {
    let dir = node_dir("[server]\nshutdown_grace = \"200ms\"\n", &[SLOW], &[]);
    let http = reqwest::Client::new();
    let serve = spawn_serve(&dir).await;
    let run: Value = http
        .post(format!("{}/api/v1/runbooks/slow/runs", serve.base))
        .json(&json!({"params": {"wait": "2s"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = run["id"].as_str().unwrap().to_string();
    let run_url = format!("{}/api/v1/runs/{id}", serve.base);
    wait_for(Duration::from_secs(20), || async {
        let run: Value = http
            .get(&run_url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (run["status"] == "running").then_some(())
    })
    .await;
    let pid = nix::unistd::Pid::from_raw(i32::try_from(serve.child.id().unwrap()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let mut child = serve.child;
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("runloom serve did not stop")
        .unwrap();
    assert_eq!(status.code(), Some(0));
    // The run outlived the grace period: it is back in the queue, and the next start runs it.
    let store = runloom::store::Store::open(
        &format!("sqlite://{}", dir.join("data/runloom.db").display()),
        runloom::store::Durability::Normal,
    )
    .await
    .unwrap();
    let requeued = store.get_run(&id).await.unwrap();
    assert_eq!(requeued.status, RunStatus::Queued, "{requeued:?}");
    drop(store);
    let serve = spawn_serve(&dir).await;
    let run_url = format!("{}/api/v1/runs/{id}", serve.base);
    let run = wait_for(Duration::from_secs(30), || async {
        let run: Value = http
            .get(&run_url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (run["status"] == "succeeded").then_some(run)
    })
    .await;
    assert_eq!(
        (&run["output"], &run["attempt"]),
        (&json!("slept"), &json!(2))
    );
    let pid = nix::unistd::Pid::from_raw(i32::try_from(serve.child.id().unwrap()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let mut child = serve.child;
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
}
