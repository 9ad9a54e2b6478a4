//! `tcp-check` against real TCP listeners on 127.0.0.1: a server with a banner, one that
//! replies to what it is sent, one that says nothing, a closed port and a port whose accept
//! queue is full. Unreachable is a check result; only a missing grant is an error.

use crate::support::{builtin, host};
use runloom::grant::Grants;
use runloom::plugin::{CallError, CallRequest};
use serde_json::{Value, json};
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// A server that greets every connection with `banner` and keeps it open a while.
async fn banner_server(banner: &'static str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = tcp.write_all(banner.as_bytes()).await;
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            });
        }
    });
    port
}

/// A server that answers each line `PING` with `+PONG` and says nothing first.
async fn ping_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (read, mut write) = tcp.into_split();
                let mut lines = BufReader::new(read).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let reply = if line.trim() == "PING" {
                        "+PONG\r\n"
                    } else {
                        "-ERR unknown command\r\n"
                    };
                    let _ = write.write_all(reply.as_bytes()).await;
                }
            });
        }
    });
    port
}

/// A port nothing listens on any more.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn check(input: Value, grant: &str) -> Result<Value, CallError> {
    let grants = if grant.is_empty() {
        Grants::default()
    } else {
        Grants {
            hosts: vec![grant.parse().unwrap()],
            ..Grants::default()
        }
    };
    let host = host();
    let plugin = builtin(&host, "tcp-check").await;
    let mut req = CallRequest::new("check", input.to_string());
    req.grants = Arc::new(grants);
    host.call(&plugin, req).await.map(|o| o.output)
}

fn detail(out: &Value) -> &str {
    out["detail"].as_str().unwrap()
}

#[tokio::test]
async fn an_open_port_is_ok_with_its_connect_time() {
    let port = banner_server("SSH-2.0-OpenSSH_9.6\r\n").await;
    let out = check(json!({"host": "127.0.0.1", "port": port}), "127.0.0.1:*")
        .await
        .unwrap();
    assert_eq!(out["status"], "ok", "{out}");
    assert_eq!(out["unit"], "ms");
    assert!(out["value"].as_f64().unwrap() >= 0.0, "{out}");
    assert_eq!(out["facts"]["address"], format!("127.0.0.1:{port}"));
    assert_eq!(out["facts"]["banner"], Value::Null, "not asked to read it");
}

#[tokio::test]
async fn the_banner_is_read_and_matched() {
    let port = banner_server("SSH-2.0-OpenSSH_9.6\r\n").await;
    let out = check(
        json!({"host": "localhost", "port": port,
               "expect_contains": "OpenSSH", "expect_regex": "^SSH-2\\.0-"}),
        "127.0.0.1:*",
    )
    .await
    .unwrap();
    assert_eq!(out["status"], "ok", "{out}");
    assert_eq!(out["facts"]["banner"], "SSH-2.0-OpenSSH_9.6");
    assert_eq!(out["facts"]["address"], format!("127.0.0.1:{port}"));
    // A banner that never matches is read until the timeout, then judged.
    let out = check(
        json!({"host": "127.0.0.1", "port": port, "expect_contains": "dropbear", "timeout_ms": 300}),
        "127.0.0.1:*",
    )
    .await
    .unwrap();
    assert_eq!(out["status"], "critical", "{out}");
    assert!(
        detail(&out).ends_with("the banner `SSH-2.0-OpenSSH_9.6` does not contain `dropbear`"),
        "{out}"
    );
}

#[tokio::test]
async fn what_is_sent_gets_a_reply_that_is_matched() {
    let port = ping_server().await;
    let out = check(
        json!({"host": "127.0.0.1", "port": port, "send": "PING\r\n", "expect_regex": "^\\+PONG"}),
        "127.0.0.1:*",
    )
    .await
    .unwrap();
    assert_eq!(out["status"], "ok", "{out}");
    assert_eq!(out["facts"]["banner"], "+PONG");
    let out = check(
        json!({"host": "127.0.0.1", "port": port, "send": "PONG\r\n", "expect_regex": "^\\+PONG",
               "timeout_ms": 300}),
        "127.0.0.1:*",
    )
    .await
    .unwrap();
    assert_eq!(out["status"], "critical", "{out}");
    assert!(
        detail(&out).ends_with("the banner `-ERR unknown command` does not match `^\\+PONG`"),
        "{out}"
    );
}

#[tokio::test]
async fn a_silent_server_fails_an_expected_banner_at_the_timeout() {
    let port = ping_server().await;
    let out = check(
        json!({"host": "127.0.0.1", "port": port, "expect_contains": "220", "timeout_ms": 300}),
        "127.0.0.1:*",
    )
    .await
    .unwrap();
    assert_eq!(out["status"], "critical", "{out}");
    assert!(
        detail(&out).ends_with("but no banner arrived (timed out)"),
        "{out}"
    );
}

#[tokio::test]
async fn a_closed_port_is_critical_not_an_error() {
    let port = closed_port();
    let out = check(json!({"host": "127.0.0.1", "port": port}), "127.0.0.1:*")
        .await
        .unwrap();
    assert_eq!(out["status"], "critical", "{out}");
    assert_eq!(
        detail(&out),
        format!("cannot connect to 127.0.0.1:{port}: connection refused")
    );
    assert_eq!(out["value"], Value::Null);
}

#[tokio::test]
async fn a_port_that_never_answers_times_out_as_critical() {
    // A listener with a backlog of 0 that never accepts: once one connection fills its
    // queue, the kernel drops further SYNs, as a firewall that drops packets would.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let _filler = tokio::net::TcpStream::connect(addr).await.unwrap();
    let out = check(
        json!({"host": "127.0.0.1", "port": addr.port(), "timeout_ms": 300}),
        "127.0.0.1:*",
    )
    .await
    .unwrap();
    assert_eq!(out["status"], "critical", "{out}");
    assert_eq!(
        detail(&out),
        format!("cannot connect to 127.0.0.1:{}: timed out", addr.port())
    );
    drop(listener);
}

#[tokio::test]
async fn a_connect_time_threshold_trips() {
    let port = banner_server("hello\n").await;
    // Any connection takes more than 0 ms.
    let out = check(
        json!({"host": "127.0.0.1", "port": port, "latency_warning_ms": 0}),
        "127.0.0.1:*",
    )
    .await
    .unwrap();
    assert_eq!(out["status"], "warning", "{out}");
    assert!(
        detail(&out).contains("slower than the warning threshold of 0 ms"),
        "{out}"
    );
}

#[tokio::test]
async fn a_host_outside_the_grant_is_denied() {
    let port = banner_server("hello\n").await;
    // No `hosts` grant at all: for an address and for a name.
    for host in ["127.0.0.1", "localhost"] {
        let err = check(json!({"host": host, "port": port}), "")
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("plugin `tcp-check` may not connect to `{host}:{port}`: not granted")
        );
    }
    // A grant for another port does not cover this one.
    let err = check(json!({"host": "127.0.0.1", "port": port}), "127.0.0.1:1")
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::Denied { .. }), "{err}");
}

#[tokio::test]
async fn bad_input_is_invalid_input() {
    let err = check(
        json!({"host": "127.0.0.1", "port": 22, "expect_regex": "("}),
        "127.0.0.1:*",
    )
    .await
    .unwrap_err();
    assert!(matches!(err, CallError::InvalidInput(_)), "{err}");
}
