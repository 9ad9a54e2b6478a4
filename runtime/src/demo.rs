//! `runloom demo`: the main job end to end on a fresh checkout, with nothing to set up.
//!
//! It loads the standard plugins embedded in the binary (compiling them once into the cache),
//! inspects `http-check`, starts a small service on 127.0.0.1 with a healthy, a slow and a
//! broken endpoint, and checks each one with `http-check` granted only that service. A last
//! check of a host that was not granted shows the sandbox refusing it.

use crate::config::Config;
use crate::grant::Grants;
use crate::plugin::{CallError, CallRequest, HostConfig, Plugin, PluginHost, Registry};
use anyhow::Context;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Run the demo, printing as it goes. Fails only on an engine fault.
pub async fn run(config: &Config) -> anyhow::Result<crate::cli::ExitCode> {
    let started = Instant::now();
    println!("Runloom demo: sandboxed plugins checking a live service\n");

    println!("1. Loading the standard plugins embedded in this binary");
    let host = PluginHost::new(HostConfig {
        cache_dir: Some(config.cache_dir()),
        ..HostConfig::default()
    })?;
    let loading = Instant::now();
    let registry = Registry::load(&host, &config.plugin_dir).await;
    for p in registry.plugins() {
        let actions: Vec<String> = p
            .manifest()
            .actions
            .iter()
            .map(|a| format!("{} ({})", a.name, a.kind))
            .collect();
        println!(
            "   {:<12} {:<8} {}",
            p.name(),
            p.manifest().version,
            actions.join(", ")
        );
    }
    for problem in registry.problems() {
        println!("   ! {}: {}", problem.origin, problem.error);
    }
    println!(
        "   loaded {} plugins in {} ms (compiled code cached in {})\n",
        registry.plugins().count(),
        loading.elapsed().as_millis(),
        config.cache_dir().display()
    );

    let check = registry
        .get("http-check")
        .context("the standard plugin `http-check` is missing from this build")?;
    println!("2. Inspecting http-check");
    if let Some(action) = check.manifest().action("check") {
        println!(
            "   action `{}` [{}]: {}",
            action.name, action.kind, action.description
        );
        let fields = action.input_schema["properties"]
            .as_object()
            .map(|p| p.keys().cloned().collect::<Vec<_>>().join(", "))
            .unwrap_or_default();
        println!("   input fields: {fields}\n");
    }

    let service = start_service().await?;
    println!("3. Started a service on {service} with /health, /slow and /broken\n");

    println!("4. Checking it with http-check, granted only {service}");
    let grants = Arc::new(Grants {
        hosts: vec![format!("{service}").parse()?],
        ..Grants::default()
    });
    let cases = [
        (
            "healthy endpoint",
            format!("http://{service}/health"),
            r#""body_contains": "ok""#,
        ),
        (
            "slow endpoint",
            format!("http://{service}/slow"),
            r#""latency_warning_ms": 100"#,
        ),
        (
            "broken endpoint",
            format!("http://{service}/broken"),
            r#""timeout_ms": 2000"#,
        ),
        (
            "host not granted",
            "https://example.org/".to_string(),
            r#""timeout_ms": 2000"#,
        ),
    ];
    for (label, url, extra) in cases {
        let input = format!(r#"{{"url": "{url}", {extra}}}"#);
        let outcome = call(&host, check, &grants, &input).await;
        println!("   {label:<17} {outcome}");
    }
    println!(
        "\nDone in {:.1} s. Next: `runloom plugin inspect http-check`, \
         `runloom plugin call hello greet --input '{{\"name\":\"you\"}}'`.",
        started.elapsed().as_secs_f64()
    );
    Ok(crate::cli::ExitCode::Success)
}

async fn call(host: &PluginHost, plugin: &Plugin, grants: &Arc<Grants>, input: &str) -> String {
    let mut request = CallRequest::new("check", input);
    request.grants = grants.clone();
    match host.call(plugin, request).await {
        Ok(out) => format!(
            "{:<8} {}",
            out.output["status"].as_str().unwrap_or("?"),
            out.output["detail"].as_str().unwrap_or("")
        ),
        Err(e @ CallError::Denied { .. }) => format!("{:<8} {e}", "denied"),
        Err(e) => format!("{:<8} {e}", e.kind()),
    }
}

/// A service with a healthy, a slow and a broken endpoint, on an ephemeral loopback port.
async fn start_service() -> anyhow::Result<std::net::SocketAddr> {
    use axum::{Router, http::StatusCode, routing::get};
    let app = Router::new()
        .route("/health", get(|| async { "ok" }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(250)).await;
                "ok, eventually"
            }),
        )
        .route(
            "/broken",
            get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "database unavailable") }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "demo service stopped");
        }
    });
    Ok(addr)
}
