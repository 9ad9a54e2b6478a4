//! The store: runs, steps and logs in SQLite (the default, one file in WAL mode) or
//! PostgreSQL, chosen by URL. All SQL in Runloom lives in this module.
//!
//! Writes go through one writer that group-commits: it takes every write waiting in its
//! queue, applies them in one transaction (`BEGIN IMMEDIATE` on SQLite, so the busy timeout
//! applies instead of an immediate `SQLITE_BUSY`), commits once, then acknowledges each. A
//! caller that needs durability awaits the acknowledgement; log lines are fire-and-forget but
//! ordered before any later acknowledged write. On SQLite the writer is a thread of its own
//! with a `rusqlite` connection (see `db`); reads use a separate sqlx pool.
//!
//! Queries are written once for both backends: `$N` placeholders in increasing order (SQLite
//! numbers named parameters by first appearance), integers for booleans and times (Unix
//! milliseconds), JSON as text. Writes issue them through [`db::Tx`], reads through
//! `sqlx::Any`.
//!
//! Invariant: other modules see plain Rust types ([`crate::run`]), never rows or SQL.

mod db;
mod notify;
mod server;
mod tokens;
mod writer;

pub use server::{Admission, AlertOutcome, AlertRecord, ClaimNext, PlannedRuns};
pub use tokens::{NewToken, TOKEN_PREFIX, TokenRecord};

use crate::run::{LogRecord, RunRecord, RunStatus, StepRecord, StepStatus};
use anyhow::Context;
use db::{DbError, Row as DbRow, Tx, params};
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

/// Every SQLite connection's settings, the sqlx read connections' and the writer's alike.
pub(super) fn sqlite_pragmas(sync: &str) -> [String; 4] {
    [
        "PRAGMA journal_mode = WAL".to_string(),
        format!("PRAGMA synchronous = {sync}"),
        "PRAGMA busy_timeout = 10000".to_string(),
        "PRAGMA foreign_keys = ON".to_string(),
    ]
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
            for pragma in sqlite_pragmas(sync) {
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
async fn finish_in(conn: &mut dyn Tx, e: RunEnd, fence: i64) -> Result<u64, DbError> {
    conn.execute(
        "UPDATE runs SET status = $1, output = $2, reason = $3, error_kind = $4, blame = $5, \
         ended_at = $6, lease_until = NULL WHERE id = $7 AND fence = $8 AND status = 'running'",
        params![
            e.status.as_str(),
            e.output.map(|o| o.to_string()),
            e.reason,
            e.error_kind,
            e.blame,
            e.ended_at,
            e.id,
            fence
        ],
    )
    .await
}

/// Insert log lines. A line numbered twice can only come from a node whose claim was taken
/// over; the first stays, and the other lines are kept.
async fn insert_logs(conn: &mut dyn Tx, lines: Vec<LogRecord>) -> Result<u64, DbError> {
    // SQLite runs each insert on the writer's thread from one cached statement; PostgreSQL
    // gets them 100 rows to a statement, one round trip each.
    let rows_per_statement = match conn.backend() {
        Backend::Sqlite => 1,
        Backend::Postgres => 100,
    };
    // Every chunk but the last has the same shape: build its statement once.
    let per_statement = rows_per_statement.min(lines.len());
    let full = insert_logs_sql(per_statement);
    let mut n = 0;
    for chunk in lines.chunks(rows_per_statement) {
        let short;
        let sql = if chunk.len() == per_statement {
            &full
        } else {
            short = insert_logs_sql(chunk.len());
            &short
        };
        let mut params = Vec::with_capacity(chunk.len() * 8);
        for l in chunk {
            let fields = (!l.fields.is_empty())
                .then(|| serde_json::to_string(&l.fields).unwrap_or_default());
            params.extend(params![
                l.run_id.clone(),
                l.seq,
                l.step,
                l.ts,
                l.level.clone(),
                l.source.clone(),
                l.message.clone(),
                fields
            ]);
        }
        n += conn.execute(sql, params).await?;
    }
    Ok(n)
}

/// The insert of `rows` log lines; a line numbered twice keeps its first version.
fn insert_logs_sql(rows: usize) -> String {
    let values: Vec<String> = (0..rows)
        .map(|i| {
            let b = i * 8;
            format!(
                "(${}, ${}, ${}, ${}, ${}, ${}, ${}, ${})",
                b + 1,
                b + 2,
                b + 3,
                b + 4,
                b + 5,
                b + 6,
                b + 7,
                b + 8
            )
        })
        .collect();
    format!(
        "INSERT INTO logs (run_id, seq, step, ts, level, source, message, fields) VALUES {} \
         ON CONFLICT (run_id, seq) DO NOTHING",
        values.join(", ")
    )
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
        let mut sqlite_path = None;
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
                sqlite_path = Some(path.to_string());
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
        let writer = match sqlite_path {
            Some(path) => {
                // SQLite: the writer thread owns its own connection (see `db`).
                use sqlx::Connection;
                write_conn.close().await?;
                let open: writer::Connect<db::Sqlite> = Box::new(move || {
                    let path = path.clone();
                    Box::pin(async move { db::Sqlite::open(&path, sync) })
                });
                Writer::start_thread(open, backend)
                    .with_context(|| format!("opening the store `{}`", redact(&url)))?
            }
            None => {
                let reconnect: writer::Connect<sqlx::AnyConnection> = Box::new(move || {
                    let options = options.clone();
                    Box::pin(async move {
                        use sqlx::ConnectOptions;
                        let mut conn = options.connect().await?;
                        setup(&mut conn, backend, sync).await?;
                        Ok(conn)
                    })
                });
                Writer::start(write_conn, backend, reconnect)
            }
        };
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
                conn.execute(
                    "INSERT INTO runs (id, runbook, runbook_hash, status, trigger_kind, trigger, params, \
                     dry_run, reason, queued_at, started_at, ended_at, trigger_id) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                    params![
                        r.id,
                        r.runbook,
                        r.runbook_hash,
                        r.status.as_str(),
                        r.trigger_kind,
                        r.trigger.to_string(),
                        r.params.to_string(),
                        i64::from(r.dry_run),
                        r.reason,
                        r.queued_at,
                        r.started_at,
                        r.ended_at,
                        r.trigger_id
                    ],
                )
                .await
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
                    conn.execute(
                        "UPDATE runs SET status = 'running', started_at = $1, attempt = attempt + 1 \
                         WHERE id = $2 AND status = 'queued'",
                        params![at, id],
                    )
                    .await
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
                let queued = conn
                    .execute(
                        "UPDATE runs SET status = 'cancelled', reason = 'cancelled before it started', \
                         ended_at = $1, cancel_requested = 1 WHERE id = $2 AND status = 'queued'",
                        params![at, id.clone()],
                    )
                    .await?;
                if queued == 1 {
                    // No claim will take it: do not keep it for one.
                    conn.recall(&id);
                }
                let running = conn
                    .execute(
                        "UPDATE runs SET cancel_requested = 1 WHERE id = $1 AND status = 'running'",
                        params![id],
                    )
                    .await?;
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
        Ok(self.write(insert_step_write(step, fence)).await? == 1)
    }

    /// Queue the record of a step without waiting for its commit, in order with this store's
    /// other writes: the next awaited write (the run's end at the latest) commits it too. Only
    /// for steps that can safely happen again (a `read` call): if the process dies before
    /// that commit, the run is recovered and runs the step again. Like [`Store::insert_step`]
    /// it records nothing unless `fence` is still the run's fencing token; a failure is logged.
    pub fn insert_step_detached(&self, step: &StepRecord, fence: i64) {
        self.inner
            .writer
            .submit_detached(insert_step_write(step, fence));
    }

    /// Record how a step ended, if `fence` is still the run's fencing token. Returns whether
    /// it was recorded.
    pub async fn finish_step(&self, step: &StepRecord, fence: i64) -> anyhow::Result<bool> {
        let s = step.clone();
        let n = self.write(Box::new(move |conn| {
            let s = s.clone();
            Box::pin(async move {
                conn.execute(
                    "UPDATE steps SET status = $1, output = $2, error_kind = $3, error = $4, blame = $5, \
                     attempts = $6, ended_at = $7, plugin_hash = $8 WHERE run_id = $9 AND seq = $10 \
                     AND EXISTS (SELECT 1 FROM runs WHERE id = $11 AND fence = $12)",
                    params![
                        s.status.as_str(),
                        s.output.map(|v| v.to_string()),
                        s.error_kind,
                        s.error,
                        s.blame,
                        s.attempts,
                        s.ended_at,
                        s.plugin_hash,
                        s.run_id.clone(),
                        s.seq,
                        s.run_id,
                        fence
                    ],
                )
                .await
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
            Box::pin(async move { insert_logs(conn, lines).await })
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
            [one] => Ok(run_from_any(one)?),
            [first, ..] => {
                let first = run_from_any(first)?;
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
        rows.iter().map(run_from_any).collect()
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

/// A run read through the sqlx pool.
pub(super) fn run_from_any(r: &AnyRow) -> anyhow::Result<RunRecord> {
    run_from_row(&DbRow::from_any(r)?)
}

fn run_from_row(r: &DbRow) -> anyhow::Result<RunRecord> {
    let status: String = r.get("status")?;
    Ok(RunRecord {
        id: r.get("id")?,
        runbook: r.get("runbook")?,
        runbook_hash: r.get("runbook_hash")?,
        status: status.parse().map_err(anyhow::Error::msg)?,
        trigger_kind: r.get("trigger_kind")?,
        trigger: Arc::new(json(r.get("trigger")?).unwrap_or(Value::Null)),
        params: Arc::new(json(r.get("params")?).unwrap_or(Value::Null)),
        dry_run: r.get::<i64>("dry_run")? != 0,
        reason: r.get("reason")?,
        error_kind: r.get("error_kind")?,
        blame: r.get("blame")?,
        output: json(r.get("output")?),
        queued_at: r.get("queued_at")?,
        started_at: r.get("started_at")?,
        ended_at: r.get("ended_at")?,
        attempt: r.get("attempt")?,
        trigger_id: r.get("trigger_id")?,
        lock_key: r.get("lock_key")?,
        alert_key: r.get("alert_key")?,
        scheduled_at: r.get("scheduled_at")?,
        node: r.get("node")?,
        fence: r.get("fence")?,
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

/// The write that inserts `step` if `fence` is still its run's fencing token. Its
/// parameters (the input and output as JSON text) are built here, on the caller's thread,
/// once: the writer only copies them.
fn insert_step_write(step: &StepRecord, fence: i64) -> writer::WriteFn {
    let s = step;
    let params = params![
        &s.run_id,
        s.seq,
        s.parent,
        &s.kind,
        &s.name,
        &s.plugin,
        &s.action,
        &s.action_kind,
        &s.plugin_hash,
        s.status.as_str(),
        s.input.as_ref().map(Value::to_string),
        s.output.as_ref().map(Value::to_string),
        &s.error_kind,
        &s.error,
        &s.blame,
        s.attempts,
        s.started_at,
        s.ended_at,
        s.call_index,
        &s.run_id,
        fence
    ];
    Box::new(move |conn| {
        let params = params.clone();
        Box::pin(async move {
            conn.execute(
                "INSERT INTO steps (run_id, seq, parent, kind, name, plugin, action, action_kind, \
                 plugin_hash, status, input, output, error_kind, error, blame, attempts, started_at, ended_at, \
                 call_index) \
                 SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19 \
                 WHERE EXISTS (SELECT 1 FROM runs WHERE id = $20 AND fence = $21)",
                params,
            )
            .await
        })
    })
}

#[cfg(test)]
mod tests;
