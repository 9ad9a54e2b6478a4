//! Runbooks: the file format (`runbook.toml` plus a body) parsed into a validated model, and
//! the contract between a running body and the engine ([`api`]).
//!
//! Invariant: pure. No tokio, wasmtime, rhai or sqlx here; loading reads files and nothing
//! else. Every definition error carries the file, line and field.

pub mod api;
