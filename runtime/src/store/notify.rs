//! Wake-up hints between nodes on PostgreSQL: `NOTIFY runloom_queue` after runs are queued,
//! and a `LISTEN` that wakes this node's workers.
//!
//! A hint is only a hint: notifications are lost while a listener reconnects, so workers
//! also poll. Hints are coalesced (at most one `NOTIFY` in flight per node) and sent outside
//! the writer's transactions, because a transaction that notifies takes a cluster-wide lock
//! at commit.

use super::{Backend, Store};
use sqlx::postgres::PgListener;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The channel name.
const CHANNEL: &str = "runloom_queue";

/// Sends coalesced hints from a background task.
pub(super) struct Hinter {
    pending: Arc<AtomicBool>,
    kick: Arc<Notify>,
}

impl Hinter {
    /// Start the sender for a PostgreSQL store (`None` for SQLite: one node, nothing to tell).
    pub(super) fn start(backend: Backend, pool: sqlx::AnyPool) -> Option<Hinter> {
        if backend != Backend::Postgres {
            return None;
        }
        let pending = Arc::new(AtomicBool::new(false));
        let kick = Arc::new(Notify::new());
        let (p, k) = (pending.clone(), kick.clone());
        tokio::spawn(async move {
            loop {
                k.notified().await;
                while p.swap(false, Ordering::SeqCst) {
                    let sent = sqlx::query("SELECT pg_notify($1, '')")
                        .bind(CHANNEL)
                        .execute(&pool)
                        .await;
                    if let Err(e) = sent {
                        // Workers poll as well; a lost hint only costs latency.
                        tracing::debug!(error = %e, "queue hint not sent");
                    }
                }
            }
        });
        Some(Hinter { pending, kick })
    }

    fn hint(&self) {
        self.pending.store(true, Ordering::SeqCst);
        self.kick.notify_one();
    }
}

impl Store {
    /// Tell other nodes that runs were queued (PostgreSQL; nothing on SQLite).
    pub fn hint_queued(&self) {
        if let Some(h) = &self.inner.hinter {
            h.hint();
        }
    }

    /// Call `wake` whenever another node hints that runs were queued, until `stop`; a no-op
    /// on SQLite. The listener reconnects on its own after a lost connection.
    pub fn on_queue_hint(&self, wake: impl Fn() + Send + Sync + 'static, stop: CancellationToken) {
        if self.backend() != Backend::Postgres {
            return;
        }
        let url = self.inner.url.clone();
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(200);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    result = listen(&url, &wake) => {
                        let Err(e) = result;
                        tracing::warn!(error = %e, retry_in = ?backoff, "listening for queue hints failed; polling until it reconnects");
                    }
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        });
    }
}

/// Listen for hints and call `wake` for each until the connection fails.
async fn listen(url: &str, wake: &(impl Fn() + Send + Sync)) -> Result<Infallible, sqlx::Error> {
    let mut listener = PgListener::connect(url).await?;
    listener.listen(CHANNEL).await?;
    // Whatever was queued while this node was not listening is found by the next poll;
    // wake now so it is found at once.
    wake();
    loop {
        listener.recv().await?;
        wake();
    }
}
