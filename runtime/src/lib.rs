//! Runloom: an automation runbook engine for IT operations.
//!
//! Runbooks (Rhai scripts or WebAssembly components) run on cron schedules, on alerts, or by
//! hand, and call plugins: sandboxed WebAssembly components that can do only what they were
//! granted. `ARCHITECTURE.md` maps the modules and their invariants:
//!
//! - [`config`]: `runloom.toml`, strict and resolved;
//! - [`grant`]: capabilities and their checks;
//! - [`plugin`]: the WebAssembly plugin host (the only code that names wasmtime);
//! - [`secret`]: where secret values come from;
//! - [`builtin`]: the standard plugins embedded at build time;
//! - [`api`]: the HTTP API of `runloom serve`;
//! - [`cli`] and [`demo`]: the `runloom` command.

pub mod alloc;
pub mod api;
pub mod builtin;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod demo;
pub mod executor;
pub mod grant;
pub mod metrics;
pub mod node;
pub mod plugin;
pub mod run;
pub mod runbook;
pub mod safety;
pub mod script;
pub mod secret;
pub mod store;
pub mod trigger;
