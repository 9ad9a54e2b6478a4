//! What `runloom serve` asks of the store: admitting triggered runs through the safety
//! kernel, claiming queued runs for workers, alert episodes, the breaker, the global pause,
//! and recovery after a restart. Each decision and its record happen in one transaction.

use super::db::{DbError, Row as DbRow, Tx, params};
use super::{Backend, Store};
use crate::run::{RunRecord, RunStatus, now_ms};
use crate::safety::{self, Facts, Rules, Verdict, Waiting};
use serde_json::Value;
use sqlx::Row;
use std::collections::{HashMap, HashSet};

/// How a triggered run is keyed and limited, beyond the run record itself.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Admission {
    /// Which trigger of the runbook created it (`cron:0`, `alert:1`, `webhook:deploy`, `manual`).
    pub trigger_id: Option<String>,
    /// Per-target lock key, when the runbook has a lock.
    pub lock_key: Option<String>,
    /// Key for rate limit and cooldown: the lock key, else the runbook name.
    pub rule_key: String,
    /// The runbook's concurrency limit.
    pub max_concurrency: i64,
    /// The alert episode (`fingerprint@startsAt`) that triggered it.
    pub alert_key: Option<String>,
    /// Cron runs: `runbook#trigger@tick`, unique across every node.
    pub schedule_key: Option<String>,
    /// Cron runs: the tick (Unix ms).
    pub scheduled_at: Option<i64>,
    /// Admission rules from the runbook's policy.
    pub rules: Rules,
    /// Record the run as skipped with this rule and reason, whatever the kernel says (a
    /// missed cron tick, an overlapping one).
    pub skip: Option<(String, String)>,
    /// Cron runs: the trigger's overlap policy, decided here against the trigger's runs
    /// still queued or running, in the same transaction as the insert.
    pub overlap: Option<crate::runbook::Overlap>,
}

/// Runs ready to record, each with its admission keys.
pub type PlannedRuns = Vec<(RunRecord, Admission)>;

/// One alert of a notification, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRecord {
    /// Alertmanager's fingerprint of the label set.
    pub fingerprint: String,
    /// When the episode started, as Alertmanager wrote it.
    pub starts_at: String,
    /// `firing` or `resolved`.
    pub status: String,
    /// Labels.
    pub labels: Value,
    /// Annotations.
    pub annotations: Value,
    /// When it ended (resolved alerts).
    pub ends_at: Option<String>,
    /// Link to the source.
    pub generator_url: Option<String>,
    /// The Alertmanager receiver.
    pub receiver: Option<String>,
    /// The notification's group key.
    pub group_key: Option<String>,
}

impl AlertRecord {
    /// `fingerprint@startsAt`: the episode's identity, stored on the runs it starts.
    pub fn key(&self) -> String {
        format!("{}@{}", self.fingerprint, self.starts_at)
    }
}

/// What storing one alert did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AlertOutcome {
    /// `new`, `duplicate`, `resolved`, `stale` (a firing notification for an episode already
    /// resolved: ignored) or `unknown-resolved` (resolved before we saw it fire).
    pub disposition: String,
    /// Runs recorded (queued or skipped), in order.
    pub runs: Vec<RunRecord>,
    /// Queued runs cancelled because the alert resolved.
    pub cancelled: u64,
}

/// Turn the store's answer about a run into the record.
fn record_from(mut run: RunRecord, verdict: &Verdict, at: i64) -> RunRecord {
    if let Verdict::Suppress { rule, reason } = verdict {
        run.status = RunStatus::Skipped;
        run.reason = Some(reason.clone());
        run.error_kind = Some((*rule).to_string());
        run.ended_at = Some(at);
    }
    run
}

/// The rule names a forced skip may carry, as the `&'static str` a verdict holds.
fn static_rule(rule: &str) -> &'static str {
    match rule {
        "missed" => "missed",
        "overlap" => "overlap",
        "parameters" => "parameters",
        "paused" => "paused",
        _ => "skipped",
    }
}

/// The single row a statement returns.
fn one(rows: Vec<DbRow>) -> Result<DbRow, DbError> {
    rows.into_iter()
        .next()
        .ok_or_else(|| DbError::Failed("the statement returned no row".into()))
}

/// Gather the facts for admission and record the run, inside a transaction. Returns `None`
/// when another node already recorded this cron tick.
async fn admit_in(
    conn: &mut dyn Tx,
    backend: Backend,
    run: &RunRecord,
    a: &Admission,
) -> Result<Option<RunRecord>, DbError> {
    if backend == Backend::Postgres {
        // Serialise admissions of one runbook across nodes, so limits hold cluster-wide.
        conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext($1))",
            params![&run.runbook],
        )
        .await?;
    }
    let now = run.queued_at;
    let mut facts = Facts::default();
    // The global pause and the runbook's breaker, in one statement: admission is on every
    // triggered run's path.
    let row = one(conn
        .query(
            "SELECT s.value, r.consecutive_failures, r.breaker_open_since FROM (SELECT 1 AS one) AS o \
             LEFT JOIN settings s ON s.name = 'paused' \
             LEFT JOIN runbook_state r ON r.runbook = $1",
            params![&run.runbook],
        )
        .await?)?;
    facts.paused = row.get(0)?;
    facts.consecutive_failures = row.get::<Option<i64>>(1)?.unwrap_or(0);
    facts.breaker_open_since = row.get(2)?;
    if let Some(limit) = a.rules.rate_limit {
        let since = now - i64::try_from(limit.window.as_millis()).unwrap_or(i64::MAX);
        let row = one(conn
            .query(
                "SELECT COUNT(*) FROM runs WHERE runbook = $1 AND rule_key = $2 AND status <> 'skipped' AND queued_at >= $3",
                params![&run.runbook, &a.rule_key, since],
            )
            .await?)?;
        facts.runs_in_window = u32::try_from(row.get::<i64>(0)?).unwrap_or(u32::MAX);
    }
    if a.rules.cooldown.is_some() {
        // A run still queued or running counts as "just now".
        let row = one(conn
            .query(
                "SELECT MAX(CASE WHEN ended_at IS NULL THEN $1 ELSE ended_at END) FROM runs \
                 WHERE runbook = $2 AND rule_key = $3 AND status <> 'skipped'",
                params![now, &run.runbook, &a.rule_key],
            )
            .await?)?;
        facts.last_run_at = row.get(0)?;
    }
    let verdict = match &a.skip {
        Some((rule, reason)) => Verdict::Suppress {
            rule: static_rule(rule),
            reason: reason.clone(),
        },
        None => safety::admit(&run.runbook, &a.rule_key, &a.rules, &facts, now),
    };
    let verdict = match (verdict, a.overlap) {
        (Verdict::Admit, Some(policy)) => overlap_in(conn, run, a, policy).await?,
        (verdict, _) => verdict,
    };
    let record = record_from(run.clone(), &verdict, now);
    let inserted = conn
        .execute(
            "INSERT INTO runs (id, runbook, runbook_hash, status, trigger_kind, trigger, params, dry_run, \
             reason, error_kind, queued_at, ended_at, trigger_id, lock_key, rule_key, max_concurrency, \
             alert_key, schedule_key, scheduled_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19) \
             ON CONFLICT (schedule_key) DO NOTHING",
            params![
                &record.id,
                &record.runbook,
                &record.runbook_hash,
                record.status.as_str(),
                &record.trigger_kind,
                record.trigger.to_string(),
                record.params.to_string(),
                i64::from(record.dry_run),
                &record.reason,
                &record.error_kind,
                record.queued_at,
                record.ended_at,
                &a.trigger_id,
                &a.lock_key,
                &a.rule_key,
                a.max_concurrency,
                &a.alert_key,
                &a.schedule_key,
                a.scheduled_at
            ],
        )
        .await?;
    if inserted == 1 && record.status == RunStatus::Queued {
        // As a claim would read it back: the keys are the admission's.
        conn.remember(RunRecord {
            trigger_id: a.trigger_id.clone(),
            lock_key: a.lock_key.clone(),
            alert_key: a.alert_key.clone(),
            scheduled_at: a.scheduled_at,
            ..record.clone()
        });
    }
    Ok((inserted == 1).then_some(record))
}

/// A cron trigger's overlap policy against its runs still queued or running.
async fn overlap_in(
    conn: &mut dyn Tx,
    run: &RunRecord,
    a: &Admission,
    policy: crate::runbook::Overlap,
) -> Result<Verdict, DbError> {
    use crate::runbook::Overlap;
    if policy == Overlap::Allow {
        return Ok(Verdict::Admit);
    }
    let mut active: HashMap<String, String> = HashMap::new();
    for row in conn
        .query(
            "SELECT status, MIN(id) FROM runs WHERE runbook = $1 AND trigger_id = $2 \
             AND status IN ('queued', 'running') GROUP BY status",
            params![&run.runbook, &a.trigger_id],
        )
        .await?
    {
        active.insert(row.get(0)?, row.get(1)?);
    }
    let (status, id, word) = match (policy, active.get("running"), active.get("queued")) {
        (Overlap::Skip, Some(id), _) => ("running", id, "skip"),
        (Overlap::Skip, None, Some(id)) => ("queued", id, "skip"),
        (Overlap::QueueOne, _, Some(id)) => ("queued", id, "queue-one"),
        _ => return Ok(Verdict::Admit),
    };
    Ok(Verdict::Suppress {
        rule: "overlap",
        reason: format!("run {id} of this trigger is still {status}; overlap = \"{word}\""),
    })
}

/// Queued runs to claim for a worker that is about to free its slot: see
/// [`Store::finish_claimed_run`].
#[derive(Debug, Clone)]
pub struct ClaimNext {
    /// The claiming node.
    pub node: String,
    /// Most runs to claim.
    pub max: usize,
    /// Lease length, as for [`Store::claim`].
    pub lease_ms: i64,
    /// Claim nothing once this is cancelled (the node began to shut down), checked in the
    /// write itself.
    pub unless: tokio_util::sync::CancellationToken,
}

impl Store {
    /// Record a triggered run: queued if the safety kernel admits it, else skipped with the
    /// rule and reason. `None` when another node already recorded this cron tick. Durable
    /// when this returns.
    pub async fn admit(
        &self,
        run: RunRecord,
        admission: Admission,
    ) -> anyhow::Result<Option<RunRecord>> {
        let backend = self.backend();
        // Shared by the write and its retry, not copied for each.
        let input = std::sync::Arc::new((run, admission));
        self.write_value(Box::new(move |conn| {
            let input = input.clone();
            Box::pin(async move {
                let (run, admission) = &*input;
                let record = admit_in(conn, backend, run, admission).await?;
                Ok((u64::from(record.is_some()), record))
            })
        }))
        .await
    }

    /// Store one alert of a notification and record the runs it starts, in one transaction.
    ///
    /// A firing alert seen for the first time records `new_runs`; seen again (Alertmanager
    /// resends, HA duplicates) it records only `repeat_runs` (triggers with `repeat = true`).
    /// A firing notification for an episode already resolved is stale and records nothing.
    /// A resolved alert marks the episode resolved and cancels its runs still queued.
    pub async fn ingest_alert(
        &self,
        alert: AlertRecord,
        new_runs: Vec<(RunRecord, Admission)>,
        repeat_runs: Vec<(RunRecord, Admission)>,
    ) -> anyhow::Result<AlertOutcome> {
        let backend = self.backend();
        // Shared by the write and its retry, not copied for each.
        let input = std::sync::Arc::new((alert, new_runs, repeat_runs));
        self.write_value(Box::new(move |conn| {
            let input = input.clone();
            Box::pin(async move {
                let (alert, new_runs, repeat_runs) = &*input;
                let outcome = ingest_in(conn, backend, alert, new_runs, repeat_runs).await?;
                Ok((1, outcome))
            })
        }))
        .await
    }

    /// Claim up to `max` queued runs for `node`: the oldest that the start rules allow
    /// (concurrency per runbook, per-target locks), moved to `running` with a lease until
    /// `lease_ms` from now and a new fencing token.
    ///
    /// On SQLite the claim is one write of the single writer. On PostgreSQL it is its own
    /// short transaction: candidates are locked with `FOR NO KEY UPDATE SKIP LOCKED`, so
    /// claimers on other nodes pass over them instead of waiting (and the key-share locks that
    /// inserting a run's steps or log lines takes on it do not hide it), and each candidate runbook's advisory
    /// lock (taken in name order; admissions take the same lock) makes the concurrency and
    /// per-target lock counts exact across nodes.
    pub async fn claim(
        &self,
        node: &str,
        max: usize,
        lease_ms: i64,
    ) -> anyhow::Result<Vec<RunRecord>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        // Look past the first `max` candidates: some may be held back by their runbook's limits.
        let look_ahead = (max * 8).clamp(64, 1000);
        Ok(match self.backend() {
            Backend::Sqlite => {
                let node = node.to_string();
                self.write_value(Box::new(move |conn| {
                    let node = node.clone();
                    Box::pin(async move {
                        let claimed =
                            claim_in(conn, Backend::Sqlite, &node, max, look_ahead, lease_ms)
                                .await?;
                        Ok((claimed.len() as u64, claimed))
                    })
                }))
                .await?
            }
            Backend::Postgres => {
                let mut tx = self.inner.read.begin().await?;
                let runs =
                    claim_in(&mut *tx, Backend::Postgres, node, max, look_ahead, lease_ms).await?;
                tx.commit().await?;
                runs
            }
        })
    }

    /// Put runs left `running` (by a crash, or by this node's shutdown) back in the queue so
    /// they run again; `node` limits it to one node's runs. Returns how many.
    pub async fn requeue_interrupted(
        &self,
        node: Option<&str>,
        reason: &str,
    ) -> anyhow::Result<u64> {
        let (node, reason) = (node.map(str::to_string), reason.to_string());
        self.write(Box::new(move |conn| {
            let (node, reason) = (node.clone(), reason.clone());
            Box::pin(async move {
                let q = match &node {
                    Some(_) => "UPDATE runs SET status = 'queued', reason = $1, node = NULL, lease_until = NULL \
                                WHERE status = 'running' AND node = $2",
                    None => "UPDATE runs SET status = 'queued', reason = $1, node = NULL, lease_until = NULL \
                             WHERE status = 'running'",
                };
                let mut params = params![reason];
                if let Some(n) = node {
                    params.extend(params![n]);
                }
                conn.execute(q, params).await
            })
        }))
        .await
    }

    /// Put one running run back in the queue (this node is shutting down), to run again, if
    /// `fence` is still its fencing token.
    pub async fn requeue_run(&self, id: &str, fence: i64, reason: &str) -> anyhow::Result<()> {
        let (id, reason) = (id.to_string(), reason.to_string());
        self.write(Box::new(move |conn| {
            let (id, reason) = (id.clone(), reason.clone());
            Box::pin(async move {
                conn.execute(
                    "UPDATE runs SET status = 'queued', reason = $1, node = NULL, lease_until = NULL \
                     WHERE id = $2 AND status = 'running' AND fence = $3",
                    params![reason, id, fence],
                )
                .await
            })
        }))
        .await?;
        Ok(())
    }

    /// Extend to `until` (Unix ms) the leases of `runs`, which `node` is executing, and return
    /// the ids it still holds: a run missing from the answer was taken over by another node
    /// after this node's lease lapsed (or has just ended).
    pub async fn heartbeat(
        &self,
        node: &str,
        runs: &[String],
        until: i64,
    ) -> anyhow::Result<HashSet<String>> {
        if runs.is_empty() {
            return Ok(HashSet::new());
        }
        let (node, runs) = (node.to_string(), runs.to_vec());
        self.write_value(Box::new(move |conn| {
            let (node, runs) = (node.clone(), runs.clone());
            Box::pin(async move {
                let list = placeholders(3, runs.len());
                let sql = format!(
                    "UPDATE runs SET lease_until = $1 WHERE node = $2 AND status = 'running' \
                     AND id IN ({list}) RETURNING id"
                );
                let mut params = params![until, node];
                params.extend(runs.into_iter().map(Into::into));
                let ids: HashSet<String> = conn
                    .query(&sql, params)
                    .await?
                    .iter()
                    .map(|r| r.get::<String>(0))
                    .collect::<Result<_, _>>()?;
                Ok((ids.len() as u64, ids))
            })
        }))
        .await
    }

    /// Put back in the queue every run whose lease ran out before `now` (its node died or
    /// stalled), saying which node lost it. Any node may run this at any time. Returns how many.
    pub async fn requeue_expired(&self, now: i64) -> anyhow::Result<u64> {
        self.write(Box::new(move |conn| {
            Box::pin(async move {
                conn.execute(
                    "UPDATE runs SET status = 'queued', \
                     reason = 'node ' || COALESCE(node, '?') || ' stopped renewing its lease; it will run again', \
                     node = NULL, lease_until = NULL \
                     WHERE status = 'running' AND lease_until IS NOT NULL AND lease_until < $1",
                    params![now],
                )
                .await
            })
        }))
        .await
    }

    /// Record how a claimed run ended (fenced, as [`Store::finish_run`]) and count it for its
    /// runbook's breaker, in one write. Returns whether it was recorded, and the runs claimed
    /// for `next`: the worker that ran it takes its next run at once, in the same commit,
    /// without waiting for the node's claim loop.
    ///
    /// Only on SQLite. On PostgreSQL `next` is ignored: there a claim is a transaction of its
    /// own (candidates locked, runbooks locked in name order), and one per run instead of the
    /// claim loop's one per batch halved a node's throughput (1,030 → 533 runs/s, BENCHMARKS.md).
    pub async fn finish_claimed_run(
        &self,
        end: &super::RunEnd,
        fence: i64,
        runbook: &str,
        threshold: Option<u32>,
        next: Option<ClaimNext>,
    ) -> anyhow::Result<(bool, Vec<RunRecord>)> {
        let backend = self.backend();
        let next = next.filter(|_| backend == Backend::Sqlite);
        let (end, runbook) = (end.clone(), runbook.to_string());
        self.write_value(Box::new(move |conn| {
            let (end, runbook, next) = (end.clone(), runbook.clone(), next.clone());
            Box::pin(async move {
                let status = end.status;
                let recorded = super::finish_in(conn, end, fence).await? == 1;
                if recorded {
                    outcome_in(conn, &runbook, status, threshold).await?;
                }
                let claimed = match next.filter(|c| !c.unless.is_cancelled()) {
                    // A few candidates: if they are all held back, the worker frees its slot
                    // and the claim loop looks further.
                    Some(c) => {
                        let look_ahead = (c.max * 8).clamp(8, 1000);
                        claim_in(conn, backend, &c.node, c.max, look_ahead, c.lease_ms).await?
                    }
                    None => Vec::new(),
                };
                Ok((u64::from(recorded), (recorded, claimed)))
            })
        }))
        .await
    }

    /// Close a runbook's breaker and clear its failure count. True if it was open.
    pub async fn reset_breaker(&self, runbook: &str) -> anyhow::Result<bool> {
        let runbook = runbook.to_string();
        let n = self
            .write(Box::new(move |conn| {
                let runbook = runbook.clone();
                Box::pin(async move {
                    conn.execute(
                        "UPDATE runbook_state SET consecutive_failures = 0, breaker_open_since = NULL, \
                         breaker_reason = NULL WHERE runbook = $1 AND breaker_open_since IS NOT NULL",
                        params![runbook],
                    )
                    .await
                })
            }))
            .await?;
        Ok(n > 0)
    }

    /// Breaker state of every runbook that has one: (runbook, consecutive failures, open since).
    pub async fn breakers(&self) -> anyhow::Result<Vec<(String, i64, Option<i64>)>> {
        let rows = sqlx::query(
            "SELECT runbook, consecutive_failures, breaker_open_since FROM runbook_state ORDER BY runbook",
        )
        .fetch_all(&self.inner.read)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect()
    }

    /// Pause every runbook (new triggered runs are recorded as skipped) with a reason, or
    /// resume with `None`.
    pub async fn set_paused(&self, reason: Option<&str>) -> anyhow::Result<()> {
        let reason = reason.map(str::to_string);
        self.write(Box::new(move |conn| {
            let reason = reason.clone();
            Box::pin(async move {
                match reason {
                    Some(r) => {
                        conn.execute(
                            "INSERT INTO settings (name, value, updated_at) VALUES ('paused', $1, $2) \
                             ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                            params![r, now_ms()],
                        )
                        .await
                    }
                    None => {
                        conn.execute("DELETE FROM settings WHERE name = 'paused'", Vec::new())
                            .await
                    }
                }
            })
        }))
        .await?;
        Ok(())
    }

    /// Why runloom is paused, if it is.
    pub async fn paused(&self) -> anyhow::Result<Option<String>> {
        let row = sqlx::query("SELECT value FROM settings WHERE name = 'paused'")
            .fetch_optional(&self.inner.read)
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    /// The latest tick recorded for a cron trigger (Unix ms), by any node.
    pub async fn last_scheduled(
        &self,
        runbook: &str,
        trigger_id: &str,
    ) -> anyhow::Result<Option<i64>> {
        let row = sqlx::query(
            "SELECT MAX(scheduled_at) FROM runs WHERE runbook = $1 AND trigger_id = $2",
        )
        .bind(runbook.to_string())
        .bind(trigger_id.to_string())
        .fetch_one(&self.inner.read)
        .await?;
        Ok(row.try_get(0)?)
    }

    /// Runs waiting in the queue.
    pub async fn queue_depth(&self) -> anyhow::Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) FROM runs WHERE status = 'queued'")
            .fetch_one(&self.inner.read)
            .await?;
        Ok(row.try_get(0)?)
    }

    /// An alert episode, by fingerprint and start.
    pub async fn alert(
        &self,
        fingerprint: &str,
        starts_at: &str,
    ) -> anyhow::Result<Option<(String, i64)>> {
        let row = sqlx::query(
            "SELECT status, notifications FROM alerts WHERE fingerprint = $1 AND starts_at = $2",
        )
        .bind(fingerprint.to_string())
        .bind(starts_at.to_string())
        .fetch_optional(&self.inner.read)
        .await?;
        Ok(row
            .map(|r| Ok::<_, sqlx::Error>((r.try_get(0)?, r.try_get(1)?)))
            .transpose()?)
    }
}

async fn ingest_in(
    conn: &mut dyn Tx,
    backend: Backend,
    alert: &AlertRecord,
    new_runs: &[(RunRecord, Admission)],
    repeat_runs: &[(RunRecord, Admission)],
) -> Result<AlertOutcome, DbError> {
    let now = now_ms();
    let firing = alert.status == "firing";
    // A firing alert is usually new: try to insert it first, and look at what is stored only
    // when it was already there.
    let inserted = firing && insert_alert(conn, alert, now, None).await?;
    let existing = if inserted {
        None
    } else {
        conn.query(
            "SELECT status FROM alerts WHERE fingerprint = $1 AND starts_at = $2",
            params![&alert.fingerprint, &alert.starts_at],
        )
        .await?
        .first()
        .map(|r| r.get::<String>(0))
        .transpose()?
    };
    let mut outcome = AlertOutcome::default();
    let runs: &[(RunRecord, Admission)] = match (firing, existing.as_deref()) {
        (true, None) => {
            outcome.disposition = "new".into();
            new_runs
        }
        (true, Some("firing")) => {
            touch(conn, alert, now).await?;
            outcome.disposition = "duplicate".into();
            repeat_runs
        }
        (true, Some(_)) => {
            touch(conn, alert, now).await?;
            outcome.disposition = "stale".into();
            &[]
        }
        (false, existing) => {
            if existing.is_none() {
                insert_alert(conn, alert, now, Some(now)).await?;
                outcome.disposition = "unknown-resolved".into();
            } else {
                conn.execute(
                    "UPDATE alerts SET status = 'resolved', ends_at = $1, resolved_at = COALESCE(resolved_at, $2), \
                     last_seen = $3, notifications = notifications + 1 WHERE fingerprint = $4 AND starts_at = $5",
                    params![&alert.ends_at, now, now, &alert.fingerprint, &alert.starts_at],
                )
                .await?;
                outcome.disposition = "resolved".into();
            }
            let cancelled = conn
                .query(
                    "UPDATE runs SET status = 'cancelled', reason = 'the alert resolved before the run started', \
                     error_kind = 'resolved', ended_at = $1 WHERE alert_key = $2 AND status = 'queued' RETURNING id",
                    params![now, alert.key()],
                )
                .await?;
            for row in &cancelled {
                // No claim will take them: do not keep them for one.
                conn.recall(&row.get::<String>(0)?);
            }
            outcome.cancelled = cancelled.len() as u64;
            &[]
        }
    };
    for (run, admission) in runs {
        if let Some(record) = admit_in(conn, backend, run, admission).await? {
            outcome.runs.push(record);
        }
    }
    Ok(outcome)
}

/// Store an alert episode first seen now: firing, or already resolved (`resolved_at`). False
/// when the episode was already stored.
async fn insert_alert(
    conn: &mut dyn Tx,
    alert: &AlertRecord,
    now: i64,
    resolved_at: Option<i64>,
) -> Result<bool, DbError> {
    let status = if resolved_at.is_some() {
        "resolved"
    } else {
        "firing"
    };
    let inserted = conn
        .execute(
            "INSERT INTO alerts (fingerprint, starts_at, status, labels, annotations, ends_at, generator_url, \
             receiver, group_key, first_seen, last_seen, resolved_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
             ON CONFLICT (fingerprint, starts_at) DO NOTHING",
            params![
                &alert.fingerprint,
                &alert.starts_at,
                status,
                alert.labels.to_string(),
                alert.annotations.to_string(),
                &alert.ends_at,
                &alert.generator_url,
                &alert.receiver,
                &alert.group_key,
                now,
                now,
                resolved_at
            ],
        )
        .await?;
    Ok(inserted == 1)
}

async fn touch(conn: &mut dyn Tx, alert: &AlertRecord, now: i64) -> Result<(), DbError> {
    conn.execute(
        "UPDATE alerts SET last_seen = $1, notifications = notifications + 1 WHERE fingerprint = $2 AND starts_at = $3",
        params![now, &alert.fingerprint, &alert.starts_at],
    )
    .await?;
    Ok(())
}

/// A claim's candidates, oldest first (read from the `runs_queued` index alone).
pub(super) const OLDEST_QUEUED: &str = "SELECT id, runbook, lock_key, max_concurrency FROM runs \
     WHERE status = 'queued' ORDER BY id LIMIT $1";
/// Running runs per runbook and lock key (read from the `runs_running` index alone).
pub(super) const RUNNING_COUNTS: &str = "SELECT runbook, lock_key, COUNT(*) FROM runs \
     WHERE status = 'running' GROUP BY runbook, lock_key";

/// Claim up to `max` of the oldest `candidates` queued runs that the start rules allow.
async fn claim_in(
    conn: &mut dyn Tx,
    backend: Backend,
    node: &str,
    max: usize,
    candidates: usize,
    lease_ms: i64,
) -> Result<Vec<RunRecord>, DbError> {
    let select: std::borrow::Cow<str> = match backend {
        Backend::Sqlite => OLDEST_QUEUED.into(),
        Backend::Postgres => format!("{OLDEST_QUEUED} FOR NO KEY UPDATE SKIP LOCKED").into(),
    };
    let waiting: Vec<Waiting> = conn
        .query(&select, params![i64::try_from(candidates).unwrap_or(1000)])
        .await?
        .iter()
        .map(|r| {
            Ok(Waiting {
                id: r.get(0)?,
                runbook: r.get(1)?,
                lock_key: r.get(2)?,
                max_concurrency: r.get(3)?,
            })
        })
        .collect::<Result<_, DbError>>()?;
    if waiting.is_empty() {
        return Ok(Vec::new());
    }
    if backend == Backend::Postgres {
        // Serialise with admissions and other nodes' claims of the same runbooks, always in
        // name order so two claimers cannot deadlock.
        let runbooks: std::collections::BTreeSet<&str> =
            waiting.iter().map(|w| w.runbook.as_str()).collect();
        for runbook in runbooks {
            conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext($1))",
                params![runbook],
            )
            .await?;
        }
    }
    // Running runs per runbook and the lock keys they hold, in one statement.
    let mut running: HashMap<String, i64> = HashMap::new();
    let mut held: HashSet<(String, String)> = HashSet::new();
    for r in conn.query(RUNNING_COUNTS, Vec::new()).await? {
        let runbook: String = r.get(0)?;
        let n: i64 = r.get(2)?;
        if let Some(key) = r.get::<Option<String>>(1)? {
            held.insert((runbook.clone(), key));
        }
        *running.entry(runbook).or_default() += n;
    }
    let ids = safety::startable(&waiting, &running, &held, max);
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let now = now_ms();
    let list = placeholders(4, ids.len());
    // On SQLite the claimed runs were, as a rule, admitted by this writer moments ago: take
    // them from [`Tx::recall`] and read back only the others. PostgreSQL reads them all.
    let returning = match backend {
        Backend::Sqlite => "id, attempt, fence".to_string(),
        Backend::Postgres => super::RUN_COLUMNS
            .trim_start_matches("SELECT ")
            .trim_end_matches(" FROM runs")
            .to_string(),
    };
    let sql = format!(
        "UPDATE runs SET status = 'running', started_at = $1, attempt = attempt + 1, node = $2, \
         lease_until = $3, fence = fence + 1 WHERE status = 'queued' AND id IN ({list}) RETURNING {returning}"
    );
    let mut params = params![now, node, now + lease_ms];
    params.extend(ids.iter().map(Into::into));
    let rows = conn.query(&sql, params).await?;
    // The claimed runs as this transaction left them: what a worker executes.
    let mut claimed: HashMap<String, RunRecord> = HashMap::new();
    let mut unknown: Vec<String> = Vec::new();
    for row in rows {
        if backend == Backend::Postgres {
            let run = super::run_from_row(&row).map_err(|e| DbError::Failed(e.to_string()))?;
            claimed.insert(run.id.clone(), run);
            continue;
        }
        let (id, attempt, fence): (String, i64, i64) = (row.get(0)?, row.get(1)?, row.get(2)?);
        match conn.recall(&id).filter(|_| attempt == 1) {
            Some(admitted) => {
                let run = RunRecord {
                    status: RunStatus::Running,
                    started_at: Some(now),
                    attempt,
                    node: Some(node.to_string()),
                    fence,
                    ..admitted
                };
                claimed.insert(id, run);
            }
            None => unknown.push(id),
        }
    }
    if !unknown.is_empty() {
        let sql = format!(
            "{} WHERE id IN ({})",
            super::RUN_COLUMNS,
            placeholders(1, unknown.len())
        );
        for row in conn
            .query(&sql, unknown.into_iter().map(Into::into).collect())
            .await?
        {
            let run = super::run_from_row(&row).map_err(|e| DbError::Failed(e.to_string()))?;
            claimed.insert(run.id.clone(), run);
        }
    }
    Ok(ids
        .into_iter()
        .filter_map(|id| claimed.remove(&id))
        .collect())
}

/// `$first, $first+1, …`: `n` statement placeholders.
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Count a run's outcome for its runbook's breaker: a failure adds one and opens the breaker at
/// `threshold`; a success clears the count.
async fn outcome_in(
    conn: &mut dyn Tx,
    runbook: &str,
    status: RunStatus,
    threshold: Option<u32>,
) -> Result<u64, DbError> {
    let failed = matches!(
        status,
        RunStatus::Failed | RunStatus::Errored | RunStatus::TimedOut
    );
    if !failed {
        if status != RunStatus::Succeeded {
            return Ok(0);
        }
        // No row means no failures to clear.
        return conn
            .execute(
                "UPDATE runbook_state SET consecutive_failures = 0 WHERE runbook = $1 AND consecutive_failures <> 0",
                params![runbook],
            )
            .await;
    }
    conn.execute(
        "INSERT INTO runbook_state (runbook, consecutive_failures) VALUES ($1, 0) \
         ON CONFLICT (runbook) DO NOTHING",
        params![runbook],
    )
    .await?;
    conn.execute(
        "UPDATE runbook_state SET consecutive_failures = consecutive_failures + 1 WHERE runbook = $1",
        params![runbook],
    )
    .await?;
    let Some(threshold) = threshold else {
        return Ok(1);
    };
    conn.execute(
        "UPDATE runbook_state SET breaker_open_since = $1, \
         breaker_reason = 'consecutive failures reached the breaker threshold' \
         WHERE runbook = $2 AND consecutive_failures >= $3 AND breaker_open_since IS NULL",
        params![now_ms(), runbook, i64::from(threshold)],
    )
    .await
}
