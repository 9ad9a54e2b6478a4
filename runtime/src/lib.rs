//! Runloom: an automation runbook engine for IT operations.
//!
//! Runbooks (Rhai scripts or WebAssembly components) run on cron schedules, on alerts, or by
//! hand, and call plugins: sandboxed WebAssembly components that can do only what they were
//! granted. See `ARCHITECTURE.md` for the map of modules and their invariants.

pub mod grant;
pub mod plugin;
pub mod builtin;
