//! The store: runs, steps and logs in SQLite (the default, one file in WAL mode) or
//! PostgreSQL, chosen by URL. All SQL in Runloom lives in this module.
//!
//! Writes go through one writer task that group-commits: it takes every write waiting in its
//! queue, applies them in one transaction (`BEGIN IMMEDIATE` on SQLite, so the busy timeout
//! applies instead of an immediate `SQLITE_BUSY`), commits once, then acknowledges each. A
//! caller that needs durability awaits the acknowledgement; log lines are fire-and-forget but
//! ordered before any later acknowledged write. Reads use a separate pool.
//!
//! Queries are written once for both backends through `sqlx::Any`: `$N` placeholders in
//! increasing order (SQLite numbers named parameters by first appearance), integers for
//! booleans and times (Unix milliseconds), JSON as text.
//!
//! Invariant: other modules see plain Rust types ([`crate::run`]), never rows or SQL.

mod notify;
mod server;
mod tokens;
mod writer;

pub use server::{Admission, AlertOutcome, AlertRecord, PlannedRuns};
pub use tokens::{NewToken, TOKEN_PREFIX, TokenRecord};

use crate::run::{LogRecord, RunRecord, RunStatus, StepRecord, StepStatus};
use anyhow::Context;
use serde_json::Value;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use writer::{WriteFn, Writer};

/// The database behind the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// One SQLite file.
    Sqlite,
    /// A PostgreSQL database, shared by several nodes.
    Postgres,
}

/// How hard SQLite works to keep a commit across a power loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous=FULL`: an acknowledged commit survives power loss (the default).
    #[default]
    Full,
    /// `synchronous=NORMAL`: faster; the last commits may be lost on power loss (not on a crash).
    Normal,
}

/// A store failure that a caller may act on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No run has this id (or id prefix).
    #[error("no run `{0}`")]
    NotFound(String),
    /// An id prefix matches several runs.
    #[error("`{0}` matches several runs; give more characters")]
    Ambiguous(String),
    /// The database failed.
    #[error(transparent)]
    Database(#[from] anyhow::Error),
}

/// Handle to the store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Backend,
    read: AnyPool,
    writer: Writer,
    /// Queue hints to other nodes (PostgreSQL only).
    hinter: Option<notify::Hinter>,
    /// Log lines waiting for the writer.
    log_buffer: Arc<std::sync::Mutex<Vec<LogRecord>>>,
    /// The connection URL (with any password: never shown).
    url: String,
}

/// Per-connection settings: on SQLite, WAL (readers never block the writer), the durability
/// level, and a busy timeout so a second process waits for the write lock instead of failing.
fn setup<'c>(
    conn: &'c mut sqlx::AnyConnection,
    backend: Backend,
    sync: &'static str,
) -> writer::BoxFuture<'c, Result<(), sqlx::Error>> {
    Box::pin(async move {
        if backend == Backend::Sqlite {
            for pragma in [
                "PRAGMA journal_mode = WAL".to_string(),
                format!("PRAGMA synchronous = {sync}"),
                "PRAGMA busy_timeout = 10000".to_string(),
                "PRAGMA foreign_keys = ON".to_string(),
            ] {
                sqlx::query(&pragma).execute(&mut *conn).await?;
            }
        } else {
            // A node that stalls (SIGSTOP, a VM pause, a partition) in the middle of a
            // transaction must not hold row locks for longer than this: PostgreSQL ends its
            // session and the locks go, so other nodes can recover its runs. Runloom's own
            // transactions never wait between statements.
            sqlx::query("SET idle_in_transaction_session_timeout = '10s'")
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    })
}

/// The fenced end of a run: see [`Store::finish_run`].
async fn finish_in(
    conn: &mut sqlx::AnyConnection,
    e: RunEnd,
    fence: i64,
) -> Result<u64, sqlx::Error> {
    sqlx::query(
        "UPDATE runs SET status = $1, output = $2, reason = $3, error_kind = $4, blame = $5, \
         ended_at = $6, lease_until = NULL WHERE id = $7 AND fence = $8 AND status = 'running'",
    )
    .bind(e.status.as_str())
    .bind(e.output.map(|o| o.to_string()))
    .bind(e.reason)
    .bind(e.error_kind)
    .bind(e.blame)
    .bind(e.ended_at)
    .bind(e.id)
    .bind(fence)
    .execute(conn)
    .await
    .map(|r| r.rows_affected())
}

/// The default store URL for a data directory.
pub fn default_url(data_dir: &Path) -> String {
    format!("sqlite://{}", data_dir.join("runloom.db").display())
}

impl Store {
    /// Open (creating if needed) and migrate the store at `url` (`sqlite://path` or
    /// `postgres://…`).
    pub async fn open(url: &str, durability: Durability) -> anyhow::Result<Store> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            anyhow::bail!("store URL `{url}`: expected `sqlite://PATH` or `postgres://…`");
        };
        let url = match backend {
            Backend::Sqlite => {
                let path = url
                    .trim_start_matches("sqlite://")
                    .trim_start_matches("sqlite:");
                if let Some(dir) = Path::new(path)
                    .parent()
                    .filter(|d| !d.as_os_str().is_empty())
                {
                    std::fs::create_dir_all(dir).with_context(|| {
                        format!("creating the data directory `{}`", dir.display())
                    })?;
                }
                format!("sqlite://{path}?mode=rwc")
            }
            Backend::Postgres => url.to_string(),
        };
        let options = AnyConnectOptions::from_str(&url)
            .with_context(|| format!("store URL `{}`", redact(&url)))?;
        let sync = match durability {
            Durability::Full => "FULL",
            Durability::Normal => "NORMAL",
        };
        let read = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 4 } else { 8 })
            .after_connect(move |conn, _| setup(conn, backend, sync))
            .connect_with(options.clone())
            .await
            .with_context(|| format!("opening the store `{}`", redact(&url)))?;
        let mut write_conn = {
            use sqlx::ConnectOptions;
            options
                .connect()
                .await
                .with_context(|| format!("opening the store `{}`", redact(&url)))?
        };
        setup(&mut write_conn, backend, sync).await?;
        let migrator = match backend {
            Backend::Sqlite => sqlx::migrate!("migrations/sqlite"),
            Backend::Postgres => sqlx::migrate!("migrations/postgres"),
        };
        migrator
            .run(&mut write_conn)
            .await
            .context("migrating the store")?;
        let reconnect: writer::Connect = Box::new(move || {
            let options = options.clone();
            Box::pin(async move {
                use sqlx::ConnectOptions;
                let mut conn = options.connect().await?;
                setup(&mut conn, backend, sync).await?;
                Ok(conn)
            })
        });
        let writer = Writer::start(write_conn, backend, reconnect);
        Ok(Store {
            inner: Arc::new(Inner {
                backend,
                hinter: notify::Hinter::start(backend, read.clone()),
                log_buffer: Arc::default(),
                url: url.clone(),
                read,
                writer,
            }),
        })
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.inner.backend
    }

    /// Queue a write and wait until it is committed.
    async fn write(&self, f: WriteFn) -> anyhow::Result<u64> {
        self.inner.writer.submit(f).await
    }

    /// Queue a write that also produces a value, wait until it is committed, and return the
    /// value. `f` gives (rows affected, value); a batch that is retried runs `f` again, and
    /// the committed run's value is the one returned.
    async fn write_value<T: Default + Send + 'static>(
        &self,
        f: writer::ValueFn<T>,
    ) -> anyhow::Result<T> {
        let slot: Arc<std::sync::Mutex<T>> = Arc::default();
        let out = slot.clone();
        let f = Arc::new(f);
        self.write(Box::new(move |conn| {
            let (f, slot) = (f.clone(), slot.clone());
            Box::pin(async move {
                let (rows, value) = (*f)(conn).await?;
                if let Ok(mut s) = slot.lock() {
                    *s = value;
                }
                Ok(rows)
            })
        }))
        .await?;
        Ok(out
            .lock()
            .map(|mut s| std::mem::take(&mut *s))
            .unwrap_or_default())
    }

    /// Record a new run (queued, or skipped with its reason). Durable when this returns.
    pub async fn insert_run(&self, run: &RunRecord) -> anyhow::Result<()> {
        let r = run.clone();
        self.write(Box::new(move |conn| {
            let r = r.clone();
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO runs (id, runbook, runbook_hash, status, trigger_kind, trigger, params, \
                     dry_run, reason, queued_at, started_at, ended_at, trigger_id) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                )
                .bind(r.id)
                .bind(r.runbook)
                .bind(r.runbook_hash)
                .bind(r.status.as_str())
                .bind(r.trigger_kind)
                .bind(r.trigger.to_string())
                .bind(r.params.to_string())
                .bind(i64::from(r.dry_run))
                .bind(r.reason)
                .bind(r.queued_at)
                .bind(r.started_at)
                .bind(r.ended_at)
                .bind(r.trigger_id)
                .execute(conn)
                .await
                .map(|r| r.rows_affected())
            })
        }))
        .await?;
        Ok(())
    }

    /// Move a queued run to running. False if it was not queued (already taken or cancelled).
    pub async fn start_run(&self, id: &str, at: i64) -> anyhow::Result<bool> {
        let id = id.to_string();
        let changed = self
            .write(Box::new(move |conn| {
                let id = id.clone();
                Box::pin(async move {
                    sqlx::query(
                        "UPDATE runs SET status = 'running', started_at = $1, attempt = attempt + 1 \
                         WHERE id = $2 AND status = 'queued'",
                    )
                    .bind(at)
                    .bind(id)
                    .execute(conn)
                    .await
                    .map(|r| r.rows_affected())
                })
            }))
            .await?;
        Ok(changed == 1)
    }

    /// Record how a run ended, if `fence` is still the run's fencing token and it is still
    /// running: a node whose claim was taken over cannot overwrite the new claimant's result.
    /// Returns whether it was recorded. Durable when this returns.
    pub async fn finish_run(&self, end: &RunEnd, fence: i64) -> anyhow::Result<bool> {
        let e = end.clone();
        let n = self
            .write(Box::new(move |conn| {
                let e = e.clone();
                Box::pin(async move { finish_in(conn, e, fence).await })
            }))
            .await?;
        Ok(n == 1)
    }

    pub async fn request_cancel(&self, id: &str, at: i64) -> Result<RunStatus, StoreError> {
        let run = self.get_run(id).await?;
        let full = run.id.clone();
        self.write(Box::new(move |conn| {
            let id = full.clone();
            Box::pin(async move {
                let queued = sqlx::query(
                    "UPDATE runs SET status = 'cancelled', reason = 'cancelled before it started', \
                     ended_at = $1, cancel_requested = 1 WHERE id = $2 AND status = 'queued'",
                )
                .bind(at)
                .bind(id.clone())
                .execute(&mut *conn)
                .await?
                .rows_affected();
                let running = sqlx::query(
                    "UPDATE runs SET cancel_requested = 1 WHERE id = $1 AND status = 'running'",
                )
                .bind(id)
                .execute(&mut *conn)
                .await?
                .rows_affected();
                Ok(queued + running)
            })
        }))
        .await?;
        Ok(self.get_run(&run.id).await?.status)
    }

    /// Whether cancellation was requested for a run (by another process, say).
    pub async fn cancel_requested(&self, id: &str) -> anyhow::Result<bool> {
        let row = sqlx::query("SELECT cancel_requested FROM runs WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.inner.read)
            .await?;
        Ok(row
            .map(|r| r.try_get::<i64, _>(0))
            .transpose()?
            .unwrap_or(0)
            != 0)
    }

    /// Record a step as started, if `fence` is still the run's fencing token. Returns whether
    /// it was recorded.
    pub async fn insert_step(&self, step: &StepRecord, fence: i64) -> anyhow::Result<bool> {
        let s = step.clone();
        let n = self.write(Box::new(move |conn| {
            let s = s.clone();
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO steps (run_id, seq, parent, kind, name, plugin, action, action_kind, \
                     plugin_hash, status, input, output, error_kind, error, blame, attempts, started_at, ended_at, \
                     call_index) \
                     SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19 \
                     WHERE EXISTS (SELECT 1 FROM runs WHERE id = $20 AND fence = $21)",
                )
                .bind(s.run_id.clone())
                .bind(s.seq)
                .bind(s.parent)
                .bind(s.kind)
                .bind(s.name)
                .bind(s.plugin)
                .bind(s.action)
                .bind(s.action_kind)
                .bind(s.plugin_hash)
                .bind(s.status.as_str())
                .bind(s.input.map(|v| v.to_string()))
                .bind(s.output.map(|v| v.to_string()))
                .bind(s.error_kind)
                .bind(s.error)
                .bind(s.blame)
                .bind(s.attempts)
                .bind(s.started_at)
                .bind(s.ended_at)
                .bind(s.call_index)
                .bind(s.run_id)
                .bind(fence)
                .execute(conn)
                .await
                .map(|r| r.rows_affected())
            })
        }))
        .await?;
        Ok(n == 1)
    }

    /// Record how a step ended, if `fence` is still the run's fencing token. Returns whether
    /// it was recorded.
    pub async fn finish_step(&self, step: &StepRecord, fence: i64) -> anyhow::Result<bool> {
        let s = step.clone();
        let n = self.write(Box::new(move |conn| {
            let s = s.clone();
            Box::pin(async move {
                sqlx::query(
                    "UPDATE steps SET status = $1, output = $2, error_kind = $3, error = $4, blame = $5, \
                     attempts = $6, ended_at = $7, plugin_hash = $8 WHERE run_id = $9 AND seq = $10 \
                     AND EXISTS (SELECT 1 FROM runs WHERE id = $11 AND fence = $12)",
                )
                .bind(s.status.as_str())
                .bind(s.output.map(|v| v.to_string()))
                .bind(s.error_kind)
                .bind(s.error)
                .bind(s.blame)
                .bind(s.attempts)
                .bind(s.ended_at)
                .bind(s.plugin_hash)
                .bind(s.run_id.clone())
                .bind(s.seq)
                .bind(s.run_id)
                .bind(fence)
                .execute(conn)
                .await
                .map(|r| r.rows_affected())
            })
        }))
        .await?;
        Ok(n == 1)
    }

    /// The last log line number of a run (0 when it has none): a resumed run numbers its
    /// lines after the earlier attempts' lines.
    pub async fn last_log_seq(&self, run_id: &str) -> anyhow::Result<i64> {
        self.flush().await?;
        let row = sqlx::query("SELECT MAX(seq) FROM logs WHERE run_id = $1")
            .bind(run_id.to_string())
            .fetch_one(&self.inner.read)
            .await?;
        Ok(row.try_get::<Option<i64>, _>(0)?.unwrap_or(0))
    }

    /// Append log lines without waiting for the commit; a later awaited write (such as
    /// [`Store::finish_run`]) commits them too.
    pub fn append_logs(&self, lines: Vec<LogRecord>) {
        if lines.is_empty() {
            return;
        }
        // Lines wait in one buffer; a single queued write takes whatever is there when it
        // runs, so lines from many runs share one multi-row insert.
        let submit = match self.inner.log_buffer.lock() {
            Ok(mut buffer) => {
                let first = buffer.is_empty();
                buffer.extend(lines);
                first
            }
            Err(_) => return,
        };
        if !submit {
            return;
        }
        let buffer = self.inner.log_buffer.clone();
        // What this write took from the buffer, kept so a retry inserts the same lines.
        let taken: Arc<std::sync::Mutex<Vec<LogRecord>>> = Arc::default();
        self.inner.writer.submit_detached(Box::new(move |conn| {
            let lines = match (taken.lock(), buffer.lock()) {
                (Ok(mut mine), Ok(mut queued)) => {
                    mine.append(&mut queued);
                    mine.clone()
                }
                _ => Vec::new(),
            };
            Box::pin(async move {
                let mut n = 0;
                for chunk in lines.chunks(100) {
                    let mut sql = String::from(
                        "INSERT INTO logs (run_id, seq, step, ts, level, source, message, fields) VALUES ",
                    );
                    for i in 0..chunk.len() {
                        let b = i * 8;
                        if i > 0 {
                            sql.push_str(", ");
                        }
                        sql.push_str(&format!(
                            "(${}, ${}, ${}, ${}, ${}, ${}, ${}, ${})",
                            b + 1, b + 2, b + 3, b + 4, b + 5, b + 6, b + 7, b + 8
                        ));
                    }
                    // A line numbered twice can only come from a node whose claim was taken
                    // over; the first stays, and the other lines of the batch are kept.
                    sql.push_str(" ON CONFLICT (run_id, seq) DO NOTHING");
                    let mut q = sqlx::query(&sql);
                    for l in chunk {
                        let fields = (!l.fields.is_empty())
                            .then(|| serde_json::to_string(&l.fields).unwrap_or_default());
                        q = q
                            .bind(l.run_id.clone())
                            .bind(l.seq)
                            .bind(l.step)
                            .bind(l.ts)
                            .bind(l.level.clone())
                            .bind(l.source.clone())
                            .bind(l.message.clone())
                            .bind(fields);
                    }
                    n += q.execute(&mut *conn).await?.rows_affected();
                }
                Ok(n)
            })
        }));
    }

    /// Wait until every write queued so far is committed.
    pub async fn flush(&self) -> anyhow::Result<()> {
        self.write(Box::new(|_| Box::pin(async { Ok(0) }))).await?;
        Ok(())
    }

    /// The run with this id, or the only run whose id starts with it.
    pub async fn get_run(&self, id: &str) -> Result<RunRecord, StoreError> {
        let id = id.to_ascii_lowercase();
        if id.len() < 4 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(StoreError::NotFound(id));
        }
        let rows = sqlx::query(&format!(
            "{RUN_COLUMNS} WHERE id >= $1 AND id < $2 ORDER BY id LIMIT 2"
        ))
        .bind(id.clone())
        .bind(format!("{id}~"))
        .fetch_all(&self.inner.read)
        .await
        .map_err(anyhow::Error::from)?;
        match rows.as_slice() {
            [] => Err(StoreError::NotFound(id)),
            [one] => Ok(run_from_row(one)?),
            [first, ..] => {
                let first = run_from_row(first)?;
                if first.id == id {
                    Ok(first)
                } else {
                    Err(StoreError::Ambiguous(id))
                }
            }
        }
    }

    /// Runs, newest first.
    pub async fn list_runs(&self, filter: &RunFilter) -> anyhow::Result<Vec<RunRecord>> {
        let mut sql = format!("{RUN_COLUMNS} WHERE 1 = 1");
        let mut n = 0;
        let mut next = || {
            n += 1;
            format!("${n}")
        };
        if filter.runbook.is_some() {
            sql.push_str(&format!(" AND runbook = {}", next()));
        }
        if filter.status.is_some() {
            sql.push_str(&format!(" AND status = {}", next()));
        }
        sql.push_str(&format!(" ORDER BY id DESC LIMIT {}", next()));
        let mut q = sqlx::query(&sql);
        if let Some(r) = &filter.runbook {
            q = q.bind(r.clone());
        }
        if let Some(s) = filter.status {
            q = q.bind(s.as_str());
        }
        q = q.bind(i64::from(filter.limit));
        let rows = q.fetch_all(&self.inner.read).await?;
        rows.iter().map(run_from_row).collect()
    }

    /// The steps of a run, in order.
    pub async fn steps(&self, run_id: &str) -> anyhow::Result<Vec<StepRecord>> {
        let rows = sqlx::query(
            "SELECT run_id, seq, parent, kind, name, plugin, action, action_kind, plugin_hash, status, \
             input, output, error_kind, error, blame, attempts, call_index, started_at, ended_at \
             FROM steps WHERE run_id = $1 ORDER BY seq",
        )
        .bind(run_id.to_string())
        .fetch_all(&self.inner.read)
        .await?;
        rows.iter().map(step_from_row).collect()
    }

    /// Log lines of a run with `seq` above `after`, at most `limit`.
    pub async fn logs(
        &self,
        run_id: &str,
        after: i64,
        limit: u32,
    ) -> anyhow::Result<Vec<LogRecord>> {
        let rows = sqlx::query(
            "SELECT run_id, seq, step, ts, level, source, message, fields FROM logs \
             WHERE run_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(run_id.to_string())
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.inner.read)
        .await?;
        rows.iter()
            .map(|r| {
                let fields: Option<String> = r.try_get("fields")?;
                Ok(LogRecord {
                    run_id: r.try_get("run_id")?,
                    seq: r.try_get("seq")?,
                    step: r.try_get("step")?,
                    ts: r.try_get("ts")?,
                    level: r.try_get("level")?,
                    source: r.try_get("source")?,
                    message: r.try_get("message")?,
                    fields: fields
                        .and_then(|f| serde_json::from_str(&f).ok())
                        .unwrap_or_default(),
                })
            })
            .collect()
    }
}

/// How a run ended, for [`Store::finish_run`].
#[derive(Debug, Clone, PartialEq)]
pub struct RunEnd {
    /// The run.
    pub id: String,
    /// Final status.
    pub status: RunStatus,
    /// Output (masked).
    pub output: Option<Value>,
    /// Why it did not succeed (masked).
    pub reason: Option<String>,
    /// Failure kind.
    pub error_kind: Option<String>,
    /// Blame.
    pub blame: Option<String>,
    /// Unix milliseconds.
    pub ended_at: i64,
}

/// Which runs to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunFilter {
    /// Only this runbook.
    pub runbook: Option<String>,
    /// Only this status.
    pub status: Option<RunStatus>,
    /// At most this many.
    pub limit: u32,
}

impl Default for RunFilter {
    fn default() -> Self {
        Self {
            runbook: None,
            status: None,
            limit: 50,
        }
    }
}

pub(super) const RUN_COLUMNS: &str = "SELECT id, runbook, runbook_hash, status, trigger_kind, trigger, params, dry_run, \
    reason, error_kind, blame, output, queued_at, started_at, ended_at, attempt, trigger_id, lock_key, \
    alert_key, scheduled_at, node, fence FROM runs";

fn json(text: Option<String>) -> Option<Value> {
    text.map(|t| serde_json::from_str(&t).unwrap_or(Value::String(t)))
}

pub(super) fn run_from_row(r: &AnyRow) -> anyhow::Result<RunRecord> {
    let status: String = r.try_get("status")?;
    Ok(RunRecord {
        id: r.try_get("id")?,
        runbook: r.try_get("runbook")?,
        runbook_hash: r.try_get("runbook_hash")?,
        status: status.parse().map_err(anyhow::Error::msg)?,
        trigger_kind: r.try_get("trigger_kind")?,
        trigger: json(r.try_get("trigger")?).unwrap_or(Value::Null),
        params: json(r.try_get("params")?).unwrap_or(Value::Null),
        dry_run: r.try_get::<i64, _>("dry_run")? != 0,
        reason: r.try_get("reason")?,
        error_kind: r.try_get("error_kind")?,
        blame: r.try_get("blame")?,
        output: json(r.try_get("output")?),
        queued_at: r.try_get("queued_at")?,
        started_at: r.try_get("started_at")?,
        ended_at: r.try_get("ended_at")?,
        attempt: r.try_get("attempt")?,
        trigger_id: r.try_get("trigger_id")?,
        lock_key: r.try_get("lock_key")?,
        alert_key: r.try_get("alert_key")?,
        scheduled_at: r.try_get("scheduled_at")?,
        node: r.try_get("node")?,
        fence: r.try_get("fence")?,
    })
}

fn step_from_row(r: &AnyRow) -> anyhow::Result<StepRecord> {
    let status: String = r.try_get("status")?;
    Ok(StepRecord {
        run_id: r.try_get("run_id")?,
        seq: r.try_get("seq")?,
        parent: r.try_get("parent")?,
        kind: r.try_get("kind")?,
        name: r.try_get("name")?,
        plugin: r.try_get("plugin")?,
        action: r.try_get("action")?,
        action_kind: r.try_get("action_kind")?,
        plugin_hash: r.try_get("plugin_hash")?,
        status: StepStatus::parse(&status)
            .with_context(|| format!("unknown step status `{status}` in the store"))?,
        input: json(r.try_get("input")?),
        output: json(r.try_get("output")?),
        error_kind: r.try_get("error_kind")?,
        error: r.try_get("error")?,
        blame: r.try_get("blame")?,
        attempts: r.try_get("attempts")?,
        call_index: r.try_get("call_index")?,
        started_at: r.try_get("started_at")?,
        ended_at: r.try_get("ended_at")?,
    })
}

/// A URL with any password replaced, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests;
