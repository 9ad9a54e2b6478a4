//! The single writer: it owns the write connection and group-commits queued writes.
//!
//! Each write is a function that issues its statements on the connection ([`Tx`]). The
//! writer takes the first waiting write plus every other one already queued (up to
//! [`MAX_BATCH`]), runs them in one transaction and commits once; then it answers each. If
//! the batch fails, it rolls back and retries each write in its own transaction, so one bad
//! write fails alone. A write function may therefore run twice and must not have side effects
//! outside the connection.
//!
//! On SQLite the writer is a thread of its own that runs every statement itself; on
//! PostgreSQL it is a tokio task. When the connection itself is lost (a PostgreSQL restart,
//! a network cut), the writer reconnects with backoff and retries the batch: callers wait
//! rather than lose a write. A commit whose acknowledgement was lost may then be retried; the
//! writes are keyed by run id, so such a retry fails on the duplicate key instead of
//! recording twice.

use super::Backend;
use super::db::{DbError, Tx};
use std::future::Future;
use std::pin::Pin;
use tokio::sync::{mpsc, oneshot};

/// A boxed future borrowing the connection.
pub(super) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One write: statements issued on the connection, returning rows affected.
pub(super) type WriteFn =
    Box<dyn for<'c> Fn(&'c mut dyn Tx) -> BoxFuture<'c, Result<u64, DbError>> + Send + Sync>;

/// One write that also produces a value: (rows affected, value).
pub(super) type ValueFn<T> =
    Box<dyn for<'c> Fn(&'c mut dyn Tx) -> BoxFuture<'c, Result<(u64, T), DbError>> + Send + Sync>;

/// Opens a fresh write connection, set up like the first.
pub(super) type Connect<C> = Box<dyn Fn() -> BoxFuture<'static, Result<C, DbError>> + Send + Sync>;

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
    /// Start the task on `conn`, a PostgreSQL connection, on tokio.
    pub(super) fn start<C: Tx + 'static>(
        conn: C,
        backend: Backend,
        reconnect: Connect<C>,
    ) -> Writer {
        let (queue, jobs) = mpsc::unbounded_channel();
        tokio::spawn(run(conn, backend, reconnect, jobs));
        Writer { queue }
    }

    /// Start the writer on a thread of its own, which opens its connection with `open` and
    /// runs every statement itself (SQLite: no hand-off per statement).
    pub(super) fn start_thread<C: Tx + 'static>(
        open: Connect<C>,
        backend: Backend,
    ) -> anyhow::Result<Writer> {
        let (queue, jobs) = mpsc::unbounded_channel();
        let (opened, wait) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("runloom-writer".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = opened.send(Err(DbError::Failed(e.to_string())));
                        return;
                    }
                };
                rt.block_on(async move {
                    match open().await {
                        Ok(conn) => {
                            let _ = opened.send(Ok(()));
                            run(conn, backend, open, jobs).await;
                        }
                        Err(e) => {
                            let _ = opened.send(Err(e));
                        }
                    }
                });
            })?;
        wait.recv()
            .map_err(|_| anyhow::anyhow!("the store's writer thread stopped while opening"))??;
        Ok(Writer { queue })
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

async fn run<C: Tx>(
    mut conn: C,
    backend: Backend,
    reconnect: Connect<C>,
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
        while let Err(e @ DbError::Lost(_)) = &outcome {
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

async fn apply<C: Tx>(conn: &mut C, begin: &str, batch: &[Job]) -> Result<Vec<u64>, DbError> {
    conn.execute(begin, Vec::new()).await?;
    let mut results = Vec::with_capacity(batch.len());
    for job in batch {
        match (job.write)(conn).await {
            Ok(rows) => results.push(rows),
            Err(e) => {
                let _ = conn.execute("ROLLBACK", Vec::new()).await;
                return Err(e);
            }
        }
    }
    if let Err(e) = conn.execute("COMMIT", Vec::new()).await {
        let _ = conn.execute("ROLLBACK", Vec::new()).await;
        return Err(e);
    }
    Ok(results)
}
