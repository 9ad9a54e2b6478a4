//! Following a run's log as Server-Sent Events.
//!
//! Each log line is an event `log` whose `id` is the line's sequence number (so a client that
//! reconnects with `Last-Event-ID` resumes after it) and whose data is the line as JSON. When
//! the run reaches a final status, one event `end` carries `{id, status, reason}` and the
//! stream ends. When the server closes first, an event `closing` says so; reconnecting
//! elsewhere resumes the log.

use crate::run::RunRecord;
use crate::store::Store;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

/// How often the store is read for new lines.
const POLL: Duration = Duration::from_millis(200);

/// Lines read from the store at a time.
const BATCH: u32 = 1000;

/// The event stream for `run`, starting after log line `after`, as a response.
pub(crate) fn follow(
    store: Store,
    run: RunRecord,
    after: i64,
    closing: CancellationToken,
) -> Response {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        if let Err(e) = pump(&store, &run.id, after, &tx, &closing).await {
            tracing::error!(run = %run.id, error = %format_args!("{e:#}"), "following a run's log failed");
        }
    });
    Sse::new(ReceiverStream::new(rx))
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// Send lines until the run ends, the client leaves (the channel closes) or the server closes.
async fn pump(
    store: &Store,
    id: &str,
    mut after: i64,
    tx: &mpsc::Sender<Result<Event, Infallible>>,
    closing: &CancellationToken,
) -> anyhow::Result<()> {
    loop {
        // Read the status before the lines: lines written before a final status are then
        // always sent before the `end` event.
        let run = store.get_run(id).await?;
        loop {
            let lines = store.logs(id, after, BATCH).await?;
            for line in &lines {
                after = line.seq;
                let event = Event::default()
                    .event("log")
                    .id(line.seq.to_string())
                    .json_data(line)?;
                if tx.send(Ok(event)).await.is_err() {
                    return Ok(());
                }
            }
            if lines.len() < BATCH as usize {
                break;
            }
        }
        if run.status.is_final() {
            let end = Event::default().event("end").json_data(json!({
                "id": run.id,
                "status": run.status,
                "reason": run.reason,
            }))?;
            let _ = tx.send(Ok(end)).await;
            return Ok(());
        }
        tokio::select! {
            () = tokio::time::sleep(POLL) => {}
            () = tx.closed() => return Ok(()),
            () = closing.cancelled() => {
                let event = Event::default()
                    .event("closing")
                    .json_data(json!({"reason": "the server is shutting down; reconnect with Last-Event-ID to resume"}))?;
                let _ = tx.send(Ok(event)).await;
                return Ok(());
            }
        }
    }
}
