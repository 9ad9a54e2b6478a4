//! Triggers: what turns the outside world into runs — Alertmanager alerts, webhooks, cron
//! schedules. Triggers decide which runbooks an event concerns and build the run requests;
//! the executor records them through the safety kernel.
//!
//! Invariant: triggers create runs, never run steps, and never write to the store directly.

pub mod alert;
pub mod cron;
