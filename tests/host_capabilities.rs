//! The `system` and `tls` host capabilities: each works when granted and is denied, naming
//! the plugin, the capability and the target, when not.

use crate::support::{fixture, host};
use runloom::grant::{Grants, SystemFact};
use runloom::plugin::{CallError, CallRequest};
use serde_json::{Value, json};
use std::sync::Arc;

async fn call(action: &str, input: Value, grants: Grants) -> Result<Value, CallError> {
    let host = host();
    let plugin = fixture(&host, "read-system-facts").await;
    let mut req = CallRequest::new(action, input.to_string());
    req.grants = Arc::new(grants);
    host.call(&plugin, req).await.map(|o| o.output)
}

fn system(facts: &[SystemFact]) -> Grants {
    Grants {
        system: facts.to_vec(),
        ..Grants::default()
    }
}

#[tokio::test]
async fn memory_load_and_processes_need_their_system_grant() {
    for (action, fact) in [
        ("memory", SystemFact::Memory),
        ("load", SystemFact::Load),
        ("processes", SystemFact::Processes),
    ] {
        let err = call(action, json!({}), Grants::default())
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "plugin `read-system-facts` may not read system facts `{}`: not granted",
                fact.name()
            )
        );
        // Another fact's grant does not help.
        let other = if fact == SystemFact::Memory {
            SystemFact::Load
        } else {
            SystemFact::Memory
        };
        assert!(matches!(
            call(action, json!({}), system(&[other])).await,
            Err(CallError::Denied { .. })
        ));
    }
}

#[tokio::test]
async fn granted_system_facts_are_real_figures() {
    let all = system(&[SystemFact::Memory, SystemFact::Load, SystemFact::Processes]);
    let memory = call("memory", json!({}), all.clone()).await.unwrap();
    let total = memory["values"]["total"].as_f64().unwrap();
    assert!(total > 64.0 * 1024.0 * 1024.0, "{memory}");
    assert!(memory["values"]["available"].as_f64().unwrap() <= total);
    let load = call("load", json!({}), all.clone()).await.unwrap();
    assert!(load["values"]["cpus"].as_f64().unwrap() >= 1.0, "{load}");
    let procs = call("processes", json!({}), all).await.unwrap();
    assert!(procs["values"]["count"].as_f64().unwrap() >= 1.0);
    // This test binary is running, so its own name is in the list.
    let me = std::fs::read_to_string("/proc/self/comm").unwrap();
    assert!(
        procs["names"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n == me.trim_end()),
        "{procs}"
    );
}

#[tokio::test]
async fn disk_usage_is_allowed_only_inside_granted_directories() {
    let dir = std::env::temp_dir();
    let grants = Grants {
        dirs: vec![format!("{}:/scratch:ro", dir.display()).parse().unwrap()],
        ..Grants::default()
    };
    let out = call("disk", json!({"path": "/scratch"}), grants.clone())
        .await
        .unwrap();
    let stat = nix_free_bytes(&dir);
    assert!(out["values"]["total"].as_f64().unwrap() > 0.0);
    // Free space moves a little between the two reads; both read the same filesystem.
    let available = out["values"]["available"].as_f64().unwrap();
    assert!(
        (available - stat).abs() < 512.0 * 1024.0 * 1024.0,
        "{available} vs {stat}"
    );
    let err = call("disk", json!({"path": "/etc"}), grants.clone())
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "plugin `read-system-facts` may not read disk usage of `/etc`: not granted"
    );
    let err = call("disk", json!({"path": "/scratch/../etc"}), grants)
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::Denied { .. }), "{err}");
}

fn nix_free_bytes(path: &std::path::Path) -> f64 {
    let out = std::process::Command::new("df")
        .args(["-B1", "--output=avail"])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// A TLS server on 127.0.0.1 with a fresh self-signed certificate for `localhost`.
async fn tls_server() -> u16 {
    use rcgen::{CertificateParams, KeyPair};
    use tokio_rustls::rustls;
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
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

#[tokio::test]
async fn a_peer_certificate_is_read_even_when_untrusted() {
    let port = tls_server().await;
    let grants = Grants {
        hosts: vec![format!("127.0.0.1:{port}").parse().unwrap()],
        ..Grants::default()
    };
    let input = json!({"host": "127.0.0.1", "port": port, "server_name": "localhost"});
    let out = call("tls", input.clone(), grants).await.unwrap();
    assert_eq!(
        out["values"]["trusted"], 0.0,
        "a self-signed certificate is not trusted"
    );
    assert!(
        out["names"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n == "localhost"),
        "{out}"
    );
    // rcgen certificates are valid until 4096; anything in the future proves the date was read.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(out["values"]["not_after"].as_f64().unwrap() > now, "{out}");
    let err = call("tls", input, Grants::default()).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("plugin `read-system-facts` may not connect to `127.0.0.1:{port}`: not granted")
    );
}
