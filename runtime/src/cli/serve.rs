//! `runloom serve`, and the safety switches it obeys: `pause`, `resume`, `breaker list|reset`.
//! The switches write to the store named by the config, so they act on a running server.

use super::plugin::print_table;
use super::{ExitCode, Failure, Outcome};
use crate::config::{Config, parse_listen};
use crate::node::{Node, NodeOptions};
use crate::store::Store;
use clap::{Args, Subcommand};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Arguments of `runloom serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on, overriding `[server] listen` [default: 127.0.0.1:8080]. Anything
    /// but loopback needs an API token first (`runloom token create`).
    #[arg(long, value_name = "ADDR", value_parser = parse_listen)]
    pub listen: Option<SocketAddr>,
}

/// `runloom breaker …`.
#[derive(Debug, Subcommand)]
pub enum BreakerCommand {
    /// Show each runbook's consecutive failures and whether its breaker is open.
    #[command(alias = "status")]
    List,
    /// Close a runbook's breaker so triggered runs are queued again.
    Reset {
        /// Runbook name.
        runbook: String,
    },
}

pub(super) async fn open_store(config: &Config) -> Result<Store, Failure> {
    Store::open(&config.store_url(), config.durability)
        .await
        .map_err(Failure::from)
}

/// How long the HTTP server may take to finish its requests once the node has stopped.
const HTTP_DRAIN: Duration = Duration::from_secs(10);

pub(super) async fn serve(config: &Config, args: ServeArgs) -> Outcome {
    let addr = args.listen.unwrap_or(config.server.listen);
    {
        // Refuse before anything starts (and claims queued runs).
        let store = open_store(config).await?;
        crate::api::check_listen(addr, &store)
            .await
            .map_err(|e| Failure::new(ExitCode::Usage, e.to_string()))?;
    }
    let mut sigterm = signal(SignalKind::terminate()).map_err(anyhow::Error::from)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(anyhow::Error::from)?;
    let defaults = NodeOptions::default();
    let options = NodeOptions {
        name: config.server.name.clone().unwrap_or(defaults.name.clone()),
        workers: config.server.workers,
        lease: config.server.lease,
        shutdown_grace: config.server.shutdown_grace,
        plugin_compiler: super::this_executable(),
        ..defaults
    };
    let node = Node::start(config.clone(), options).await?;
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            node.shutdown().await;
            return Err(Failure::new(
                ExitCode::Errored,
                format!("cannot listen on {addr}: {e}"),
            ));
        }
    };
    let local = listener.local_addr().map_err(anyhow::Error::from)?;
    let runbooks = node.catalog.runbooks().count();
    let problems = node.catalog.errors().len() + node.registry.problems().len();
    println!(
        "runloom serve: node {} listening on http://{local} ({runbooks} runbooks, {} plugins{})",
        node.options.name,
        node.registry.plugins().count(),
        if problems > 0 {
            format!(", {problems} not loaded: see the log")
        } else {
            String::new()
        }
    );
    tracing::info!(address = %local, node = %node.options.name, "listening");
    let closing = CancellationToken::new();
    let mut server = tokio::spawn(crate::api::serve(node.clone(), listener, closing.clone()));
    let signal_name = tokio::select! {
        _ = sigterm.recv() => "SIGTERM",
        _ = sigint.recv() => "SIGINT",
        result = &mut server => {
            node.shutdown().await;
            return match result {
                Ok(Ok(())) => Ok(ExitCode::Success),
                Ok(Err(e)) => Err(Failure::new(ExitCode::Errored, e.to_string())),
                Err(e) => Err(Failure::new(ExitCode::Errored, format!("the HTTP server stopped: {e}"))),
            };
        }
    };
    println!(
        "runloom serve: {signal_name}: shutting down (intake answers 503; running runs get {} to finish; signal again to stop now)",
        humantime::format_duration(config.server.shutdown_grace)
    );
    // A second signal stops at once; runs still going are requeued at the next start.
    tokio::spawn(async move {
        tokio::select! {
            _ = sigterm.recv() => {}
            _ = sigint.recv() => {}
        }
        eprintln!(
            "runloom serve: stopping now; runs still going will be requeued at the next start"
        );
        std::process::exit(ExitCode::Errored as i32);
    });
    // The API keeps answering while the node drains: reads work, intake answers 503 with
    // Retry-After, /healthz answers 503.
    let requeued = node.shutdown().await;
    closing.cancel();
    if tokio::time::timeout(HTTP_DRAIN, server).await.is_err() {
        tracing::warn!("HTTP requests still open after {HTTP_DRAIN:?}; closing them");
    }
    println!(
        "runloom serve: stopped{}",
        match requeued {
            0 => String::new(),
            1 => "; 1 run went back to the queue".to_string(),
            n => format!("; {n} runs went back to the queue"),
        }
    );
    Ok(ExitCode::Success)
}

pub(super) async fn pause(config: &Config, reason: Option<String>) -> Outcome {
    let store = open_store(config).await?;
    let reason = reason
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| "paused with `runloom pause`".to_string());
    store.set_paused(Some(&reason)).await?;
    println!(
        "paused: triggered runs are recorded as skipped (rule `paused`) until `runloom resume`"
    );
    println!("  reason: {reason}");
    Ok(ExitCode::Success)
}

pub(super) async fn resume(config: &Config) -> Outcome {
    let store = open_store(config).await?;
    let was = store.paused().await?;
    store.set_paused(None).await?;
    match was {
        Some(reason) => println!("resumed (was paused: {reason})"),
        None => println!("resumed (was not paused)"),
    }
    Ok(ExitCode::Success)
}

pub(super) async fn breaker(config: &Config, command: BreakerCommand) -> Outcome {
    let store = open_store(config).await?;
    match command {
        BreakerCommand::List => {
            if let Some(reason) = store.paused().await? {
                println!("runloom is paused: {reason}\n");
            }
            let rows: Vec<[String; 3]> = store
                .breakers()
                .await?
                .into_iter()
                .map(|(runbook, failures, open_since)| {
                    [
                        runbook,
                        failures.to_string(),
                        match open_since {
                            Some(ms) => format!("open since {}", super::runs::local_time(ms)),
                            None => "closed".to_string(),
                        },
                    ]
                })
                .collect();
            if rows.is_empty() {
                println!("no runbook has failed yet");
            } else {
                print_table(&["RUNBOOK", "FAILURES", "BREAKER"], &rows);
            }
            Ok(ExitCode::Success)
        }
        BreakerCommand::Reset { runbook } => {
            let known = store.breakers().await?.iter().any(|(r, ..)| *r == runbook);
            if !known {
                println!("`{runbook}` has no failures recorded; its breaker is closed");
                return Ok(ExitCode::Success);
            }
            if store.reset_breaker(&runbook).await? {
                println!("breaker of `{runbook}` reset: its triggered runs are queued again");
            } else {
                println!("breaker of `{runbook}` was not open");
            }
            Ok(ExitCode::Success)
        }
    }
}
