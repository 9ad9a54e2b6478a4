//! End-to-end tests, one binary. Each module pins one area's behaviour with real parts:
//! WebAssembly components built from this repository, SQLite files, HTTP on 127.0.0.1.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking, with the message saying what broke"
)]

mod scratch;
mod support;

mod api;
mod backup;
mod cli;
mod cluster;
mod cron;
mod disk_check;
mod host_capabilities;
mod host_check;
mod hostile;
mod http_check;
mod node;
mod notify;
mod patch;
mod plugin_host;
mod prometheus_check;
mod remediate;
mod runbooks;
mod runs;
mod tcp_check;
mod tls_check;
mod validate;
mod wasm_runbook;
