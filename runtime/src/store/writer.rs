//! The single writer: a task that owns the write connection and group-commits queued writes.
//!
//! Each write is a function that issues its statements on the connection. The task takes the
//! first waiting write plus every other one already queued (up to [`MAX_BATCH`]), runs them in
//! one transaction and commits once; then it answers each. If the batch fails, it rolls back
//! and retries each write in its own transaction, so one bad write fails alone. A write
//! function may therefore run twice and must not have side effects outside the connection.
//!
//! When the connection itself is lost (a PostgreSQL restart, a network cut), the writer
//! reconnects with backoff and retries the batch: callers wait rather than lose a write. A
//! commit whose acknowledgement was lost may then be retried; the writes are keyed by run id,
//! so such a retry fails on the duplicate key instead of recording twice.

use super::Backend;
use sqlx::AnyConnection;
use std::future::Future;
use std::pin::Pin;
use tokio::sync::{mpsc, oneshot};

/// A boxed future borrowing the connection.
pub(super) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One write: statements issued on the connection, returning rows affected.
pub(super) type WriteFn = Box<
    dyn for<'c> Fn(&'c mut AnyConnection) -> BoxFuture<'c, Result<u64, sqlx::Error>> + Send + Sync,
>;

/// One write that also produces a value: (rows affected, value).
pub(super) type ValueFn<T> = Box<
    dyn for<'c> Fn(&'c mut AnyConnection) -> BoxFuture<'c, Result<(u64, T), sqlx::Error>>
        + Send
        + Sync,
>;

/// Opens a fresh write connection, set up like the first.
pub(super) type Connect =
    Box<dyn Fn() -> BoxFuture<'static, Result<AnyConnection, sqlx::Error>> + Send + Sync>;

/// Most writes committed together.
const MAX_BATCH: usize = 512;

struct Job {
    write: WriteFn,
    done: Option<oneshot::Sender<Result<u64, String>>>,
}

/// Handle to the writer task.
pub(super) struct Writer {
    queue: mpsc::UnboundedSender<Job>,
}

impl Writer {
    /// Start the task on `conn`.
    pub(super) fn start(conn: AnyConnection, backend: Backend, reconnect: Connect) -> Writer {
        let (queue, jobs) = mpsc::unbounded_channel();
        tokio::spawn(run(conn, backend, reconnect, jobs));
        Writer { queue }
    }

    /// Queue a write and wait for its commit.
    pub(super) async fn submit(&self, write: WriteFn) -> anyhow::Result<u64> {
        let (done, wait) = oneshot::channel();
        self.queue
            .send(Job {
                write,
                done: Some(done),
            })
            .map_err(|_| anyhow::anyhow!("the store's writer has stopped"))?;
        wait.await
            .map_err(|_| anyhow::anyhow!("the store's writer stopped before committing"))?
            .map_err(anyhow::Error::msg)
    }

    /// Queue a write without waiting; a failure is logged.
    pub(super) fn submit_detached(&self, write: WriteFn) {
        if self.queue.send(Job { write, done: None }).is_err() {
            tracing::error!("the store's writer has stopped; a write was dropped");
        }
    }
}

async fn run(
    mut conn: AnyConnection,
    backend: Backend,
    reconnect: Connect,
    mut jobs: mpsc::UnboundedReceiver<Job>,
) {
    let begin = match backend {
        Backend::Sqlite => "BEGIN IMMEDIATE",
        Backend::Postgres => "BEGIN",
    };
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = jobs.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let mut outcome = apply(&mut conn, begin, &batch).await;
        let mut backoff = std::time::Duration::from_millis(100);
        while let Err(e) = &outcome
            && connection_lost(e)
        {
            tracing::error!(error = %e, writes = batch.len(), retry_in = ?backoff, "the store connection was lost; reconnecting");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(std::time::Duration::from_secs(5));
            match reconnect().await {
                Ok(fresh) => {
                    conn = fresh;
                    tracing::info!("reconnected to the store");
                    outcome = apply(&mut conn, begin, &batch).await;
                }
                Err(e) => outcome = Err(e),
            }
        }
        match outcome {
            Ok(results) => {
                for (job, rows) in batch.drain(..).zip(results) {
                    answer(job, Ok(rows));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, writes = batch.len(), "batch write failed; retrying one by one");
                for job in batch.drain(..) {
                    let result = apply(&mut conn, begin, std::slice::from_ref(&job))
                        .await
                        .map(|r| r.first().copied().unwrap_or(0))
                        .map_err(|e| e.to_string());
                    if let Err(e) = &result {
                        tracing::error!(error = %e, "store write failed");
                    }
                    answer(job, result);
                }
            }
        }
    }
}

fn answer(job: Job, result: Result<u64, String>) {
    if let Some(done) = job.done {
        let _ = done.send(result);
    }
}

async fn apply(
    conn: &mut AnyConnection,
    begin: &str,
    batch: &[Job],
) -> Result<Vec<u64>, sqlx::Error> {
    sqlx::query(begin).execute(&mut *conn).await?;
    let mut results = Vec::with_capacity(batch.len());
    for job in batch {
        match (job.write)(conn).await {
            Ok(rows) => results.push(rows),
            Err(e) => {
                let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                return Err(e);
            }
        }
    }
    if let Err(e) = sqlx::query("COMMIT").execute(&mut *conn).await {
        let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
        return Err(e);
    }
    Ok(results)
}

/// Whether `e` means the connection is gone (rather than a bad statement).
fn connection_lost(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        // PostgreSQL: connection exceptions (08…), operator intervention (57P…, e.g. the
        // server shutting down), and a session ended for idling in a transaction (25P03).
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("08") || c.starts_with("57P") || c == "25P03"),
        _ => false,
    }
}
