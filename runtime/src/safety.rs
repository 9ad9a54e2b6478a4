//! The remediation safety kernel: the rules that decide whether a triggered run may be queued
//! at all (global pause, circuit breaker, rate limit, cooldown) and which queued runs may start
//! (concurrency limit, per-target lock).
//!
//! Admission rules suppress: a suppressed run is recorded `skipped` with the rule and its
//! reason, never dropped. Start rules only delay: a run waits in the queue until its runbook
//! has a free slot and nothing else holds its lock key.
//!
//! Invariant: pure decisions over facts the store gathers inside the same transaction that
//! records the outcome, so two triggers racing cannot both slip past a limit.

use crate::runbook::{Policy, RateLimit};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// What the store knows when a run asks to be admitted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// Why every runbook is paused (`runloom pause`), if it is.
    pub paused: Option<String>,
    /// Since when this runbook's breaker is open (Unix ms), if it is.
    pub breaker_open_since: Option<i64>,
    /// Consecutive failed runs of this runbook.
    pub consecutive_failures: i64,
    /// Admitted runs with the same rule key queued within the rate-limit window.
    pub runs_in_window: u32,
    /// When the latest admitted run with the same rule key was queued or ended (Unix ms).
    pub last_run_at: Option<i64>,
}

/// The rules a runbook's policy sets for admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rules {
    /// N runs per window per key.
    pub rate_limit: Option<RateLimit>,
    /// Quiet time per key after a run.
    pub cooldown: Option<Duration>,
    /// Consecutive failures that open the breaker.
    pub breaker: Option<u32>,
}

impl From<&Policy> for Rules {
    fn from(p: &Policy) -> Self {
        Rules {
            rate_limit: p.rate_limit,
            cooldown: p.cooldown,
            breaker: p.breaker,
        }
    }
}

/// Whether a run may be queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Queue it.
    Admit,
    /// Record it as skipped.
    Suppress {
        /// The rule: `paused`, `breaker`, `rate_limit` or `cooldown`.
        rule: &'static str,
        /// Why, for operators.
        reason: String,
    },
}

/// Decide admission for a run of `runbook` whose rule key is `key`, at `now` (Unix ms).
pub fn admit(runbook: &str, key: &str, rules: &Rules, facts: &Facts, now: i64) -> Verdict {
    if let Some(why) = &facts.paused {
        return Verdict::Suppress {
            rule: "paused",
            reason: format!("runloom is paused: {why}"),
        };
    }
    if let (Some(threshold), Some(_)) = (rules.breaker, facts.breaker_open_since) {
        return Verdict::Suppress {
            rule: "breaker",
            reason: format!(
                "circuit breaker open: {} consecutive failed runs of `{runbook}` (threshold {threshold}); reset it with `runloom breaker reset {runbook}`",
                facts.consecutive_failures
            ),
        };
    }
    let shown = if key == runbook {
        String::new()
    } else {
        format!(" for `{key}`")
    };
    if let Some(limit) = rules.rate_limit
        && facts.runs_in_window >= limit.count
    {
        return Verdict::Suppress {
            rule: "rate_limit",
            reason: format!(
                "rate limit: {} runs{shown} within {} already (limit {}/{})",
                facts.runs_in_window,
                humantime::format_duration(limit.window),
                limit.count,
                humantime::format_duration(limit.window)
            ),
        };
    }
    if let (Some(cooldown), Some(last)) = (rules.cooldown, facts.last_run_at) {
        let since = Duration::from_millis(u64::try_from(now - last).unwrap_or(0));
        if since < cooldown {
            return Verdict::Suppress {
                rule: "cooldown",
                reason: format!(
                    "cooldown: the last run{shown} was {} ago (cooldown {})",
                    humantime::format_duration(Duration::from_secs(since.as_secs())),
                    humantime::format_duration(cooldown)
                ),
            };
        }
    }
    Verdict::Admit
}

/// A queued run as the start rules see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    /// Run id.
    pub id: String,
    /// Runbook.
    pub runbook: String,
    /// Per-target lock key, if the runbook has a lock.
    pub lock_key: Option<String>,
    /// The runbook's concurrency limit.
    pub max_concurrency: i64,
}

/// Which of `waiting` (oldest first) may start now, given how many runs of each runbook are
/// running and which lock keys are held, taking at most `max`.
pub fn startable(
    waiting: &[Waiting],
    running_per_runbook: &HashMap<String, i64>,
    held_locks: &HashSet<(String, String)>,
    max: usize,
) -> Vec<String> {
    let mut running = running_per_runbook.clone();
    let mut locks = held_locks.clone();
    let mut out = Vec::new();
    for w in waiting {
        if out.len() >= max {
            break;
        }
        let now = running.get(&w.runbook).copied().unwrap_or(0);
        if now >= w.max_concurrency {
            continue;
        }
        if let Some(key) = &w.lock_key
            && !locks.insert((w.runbook.clone(), key.clone()))
        {
            continue;
        }
        running.insert(w.runbook.clone(), now + 1);
        out.push(w.id.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        Rules {
            rate_limit: Some(RateLimit {
                count: 3,
                window: Duration::from_secs(3600),
            }),
            cooldown: Some(Duration::from_secs(600)),
            breaker: Some(2),
        }
    }

    #[test]
    fn each_rule_suppresses_with_its_name() {
        let now = 10_000_000;
        let ok = Facts::default();
        assert_eq!(admit("disk", "web-1", &rules(), &ok, now), Verdict::Admit);
        let paused = Facts {
            paused: Some("maintenance".into()),
            ..Facts::default()
        };
        assert!(matches!(
            admit("disk", "web-1", &rules(), &paused, now),
            Verdict::Suppress { rule: "paused", .. }
        ));
        let broken = Facts {
            breaker_open_since: Some(1),
            consecutive_failures: 2,
            ..Facts::default()
        };
        match admit("disk", "web-1", &rules(), &broken, now) {
            Verdict::Suppress {
                rule: "breaker",
                reason,
            } => {
                assert!(
                    reason.starts_with("circuit breaker open: 2 consecutive failed runs of `disk`"),
                    "{reason}"
                )
            }
            other => panic!("{other:?}"),
        }
        let busy = Facts {
            runs_in_window: 3,
            ..Facts::default()
        };
        match admit("disk", "web-1", &rules(), &busy, now) {
            Verdict::Suppress {
                rule: "rate_limit",
                reason,
            } => {
                assert_eq!(
                    reason,
                    "rate limit: 3 runs for `web-1` within 1h already (limit 3/1h)"
                )
            }
            other => panic!("{other:?}"),
        }
        let recent = Facts {
            last_run_at: Some(now - 60_000),
            ..Facts::default()
        };
        match admit("disk", "web-1", &rules(), &recent, now) {
            Verdict::Suppress {
                rule: "cooldown",
                reason,
            } => {
                assert_eq!(
                    reason,
                    "cooldown: the last run for `web-1` was 1m ago (cooldown 10m)"
                )
            }
            other => panic!("{other:?}"),
        }
        let old = Facts {
            last_run_at: Some(now - 601_000),
            ..Facts::default()
        };
        assert_eq!(admit("disk", "web-1", &rules(), &old, now), Verdict::Admit);
    }

    #[test]
    fn without_rules_only_the_pause_applies() {
        let facts = Facts {
            runs_in_window: 99,
            last_run_at: Some(0),
            breaker_open_since: Some(0),
            ..Facts::default()
        };
        assert_eq!(
            admit("x", "x", &Rules::default(), &facts, 1),
            Verdict::Admit
        );
    }

    fn w(id: &str, runbook: &str, lock: Option<&str>, max: i64) -> Waiting {
        Waiting {
            id: id.into(),
            runbook: runbook.into(),
            lock_key: lock.map(str::to_string),
            max_concurrency: max,
        }
    }

    #[test]
    fn start_rules_respect_concurrency_and_locks_in_queue_order() {
        let waiting = [
            w("1", "disk", Some("web-1"), 2),
            w("2", "disk", Some("web-1"), 2), // same target: waits
            w("3", "disk", Some("web-2"), 2),
            w("4", "disk", Some("web-3"), 2), // disk is at its limit of 2
            w("5", "backup", None, 1),
            w("6", "backup", None, 1),
        ];
        let running = HashMap::new();
        assert_eq!(
            startable(&waiting, &running, &HashSet::new(), 10),
            ["1", "3", "5"]
        );
        // A lock held by a running run blocks its key; a full runbook starts nothing.
        let held: HashSet<_> = [("disk".to_string(), "web-2".to_string())].into();
        let running: HashMap<_, _> = [("backup".to_string(), 1)].into();
        assert_eq!(startable(&waiting, &running, &held, 10), ["1", "4"]);
        assert_eq!(
            startable(&waiting, &HashMap::new(), &HashSet::new(), 1),
            ["1"]
        );
    }
}
