//! `tls-check` against real TLS servers on 127.0.0.1 whose certificates rcgen makes for the
//! occasion: expiring soon, expired, for another name. Days left come from the certificate
//! the server really presented; only a missing grant is an error.

use crate::support::{builtin, host};
use runloom::grant::Grants;
use runloom::plugin::{CallError, CallRequest};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const DAY: u64 = 86_400;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A TLS server on 127.0.0.1 presenting a self-signed certificate for `names`, valid from
/// `valid_from` to `valid_until` (seconds since the Unix epoch). Returns its port.
async fn tls_server(names: &[&str], valid_from: u64, valid_until: u64) -> u16 {
    use rcgen::{CertificateParams, KeyPair, date_time_ymd};
    use tokio_rustls::rustls;
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    let epoch = date_time_ymd(1970, 1, 1);
    params.not_before = epoch + Duration::from_secs(valid_from);
    params.not_after = epoch + Duration::from_secs(valid_until);
    let cert = params.self_signed(&key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _ = acceptor.accept(tcp).await;
            });
        }
    });
    port
}

/// A server for `localhost` whose certificate expires in `days` (negative: expired).
pub(crate) async fn expiring_in(days: i64) -> u16 {
    let until = now().checked_add_signed(days * DAY as i64).unwrap();
    tls_server(&["localhost"], now() - 400 * DAY, until).await
}

async fn check(input: Value, grants: Grants) -> Result<Value, CallError> {
    let host = host();
    let plugin = builtin(&host, "tls-check").await;
    let mut req = CallRequest::new("check", input.to_string());
    req.grants = Arc::new(grants);
    host.call(&plugin, req).await.map(|o| o.output)
}

fn loopback() -> Grants {
    Grants {
        hosts: vec!["127.0.0.1:*".parse().unwrap()],
        ..Grants::default()
    }
}

fn endpoint(port: u16) -> Value {
    json!({"host": "127.0.0.1", "port": port, "server_name": "localhost"})
}

/// `endpoint(port)` with more fields.
fn with(port: u16, extra: Value) -> Value {
    let mut input = endpoint(port);
    input
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    input
}

#[tokio::test]
async fn days_left_are_read_from_the_presented_certificate() {
    let port = expiring_in(100).await;
    let out = check(with(port, json!({"allow_untrusted": true})), loopback())
        .await
        .unwrap();
    assert_eq!(out["status"], "ok", "{out}");
    assert_eq!(out["unit"], "days");
    let days = out["value"].as_f64().unwrap();
    assert!((days - 100.0).abs() <= 0.1, "{out}");
    let e = &out["facts"]["endpoints"][0];
    assert_eq!(e["dns_names"], json!(["localhost"]));
    assert_eq!(e["hostname_matches"], true);
    assert_eq!(e["trusted"], false, "rcgen's certificate is self-signed");
}

#[tokio::test]
async fn a_certificate_expiring_soon_trips_the_day_thresholds() {
    let soon = expiring_in(20).await;
    let out = check(with(soon, json!({"allow_untrusted": true})), loopback())
        .await
        .unwrap();
    assert_eq!(out["status"], "warning", "{out}");
    assert!(
        out["detail"]
            .as_str()
            .unwrap()
            .ends_with("at or below the warning threshold of 30 days"),
        "{out}"
    );
    let sooner = expiring_in(3).await;
    let out = check(with(sooner, json!({"allow_untrusted": true})), loopback())
        .await
        .unwrap();
    assert_eq!(out["status"], "critical", "{out}");
    assert!((out["value"].as_f64().unwrap() - 3.0).abs() <= 0.1, "{out}");
}

#[tokio::test]
async fn an_expired_certificate_is_critical_with_negative_days() {
    let port = expiring_in(-2).await;
    let out = check(with(port, json!({"allow_untrusted": true})), loopback())
        .await
        .unwrap();
    assert_eq!(out["status"], "critical", "{out}");
    assert!((out["value"].as_f64().unwrap() + 2.0).abs() <= 0.1, "{out}");
    assert!(
        out["detail"]
            .as_str()
            .unwrap()
            .contains("the certificate for `localhost` expired 2 days ago"),
        "{out}"
    );
}

#[tokio::test]
async fn an_untrusted_chain_is_critical_unless_allowed() {
    let port = expiring_in(100).await;
    let out = check(endpoint(port), loopback()).await.unwrap();
    assert_eq!(out["status"], "critical", "{out}");
    assert!(
        out["detail"].as_str().unwrap().contains("is not trusted: "),
        "{out}"
    );
    assert!(
        out["facts"]["endpoints"][0]["verify_error"].is_string(),
        "{out}"
    );
}

#[tokio::test]
async fn a_certificate_for_another_name_is_critical() {
    let now = now();
    let port = tls_server(
        &["db.internal", "*.db.internal"],
        now - DAY,
        now + 100 * DAY,
    )
    .await;
    let out = check(with(port, json!({"allow_untrusted": true})), loopback())
        .await
        .unwrap();
    assert_eq!(out["status"], "critical", "{out}");
    assert_eq!(out["facts"]["endpoints"][0]["hostname_matches"], false);
    assert!(
        out["detail"]
            .as_str()
            .unwrap()
            .ends_with("does not cover `localhost` (it covers db.internal, *.db.internal)"),
        "{out}"
    );
    // The wildcard covers a name one label down.
    let input = json!({"host": "127.0.0.1", "port": port, "server_name": "replica.db.internal",
                       "allow_untrusted": true});
    let out = check(input, loopback()).await.unwrap();
    assert_eq!(out["status"], "ok", "{out}");
}

#[tokio::test]
async fn several_endpoints_report_the_worst_and_the_soonest() {
    let (fine, soon) = (expiring_in(200).await, expiring_in(10).await);
    let refused = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let input = json!({
        "endpoints": [endpoint(fine), endpoint(soon)],
        "allow_untrusted": true,
    });
    let out = check(input, loopback()).await.unwrap();
    assert_eq!(out["status"], "warning", "{out}");
    assert!(
        (out["value"].as_f64().unwrap() - 10.0).abs() <= 0.1,
        "{out}"
    );
    assert_eq!(out["facts"]["endpoints"].as_array().unwrap().len(), 2);
    assert_eq!(out["facts"]["endpoints"][0]["status"], "ok");
    assert_eq!(out["facts"]["endpoints"][1]["status"], "warning");
    // Nothing listens on `refused` any more: that endpoint is critical, the call still answers.
    let input = json!({
        "endpoints": [endpoint(fine), endpoint(refused)],
        "allow_untrusted": true,
    });
    let out = check(input, loopback()).await.unwrap();
    assert_eq!(out["status"], "critical", "{out}");
    assert!(
        (out["value"].as_f64().unwrap() - 200.0).abs() <= 0.1,
        "{out}"
    );
    let down = &out["facts"]["endpoints"][1];
    assert_eq!(down["status"], "critical");
    assert!(
        down["detail"]
            .as_str()
            .unwrap()
            .starts_with(&format!("127.0.0.1:{refused}: no certificate: ")),
        "{out}"
    );
}

#[tokio::test]
async fn an_endpoint_outside_the_grant_is_denied() {
    let port = expiring_in(100).await;
    let err = check(endpoint(port), Grants::default()).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("plugin `tls-check` may not connect to `127.0.0.1:{port}`: not granted")
    );
    // One ungranted endpoint in a list denies the whole call.
    let grants = Grants {
        hosts: vec![format!("127.0.0.1:{port}").parse().unwrap()],
        ..Grants::default()
    };
    let input = json!({"endpoints": [endpoint(port), endpoint(port + 1)]});
    let err = check(input, grants).await.unwrap_err();
    assert!(matches!(err, CallError::Denied { .. }), "{err}");
}
