//! The HTTP API of `runloom serve` (axum): alert and webhook intake, runs and their logs,
//! the runbook and plugin catalogues, schedules, the safety switches (pause, resume, breaker
//! reset), `/healthz` and `/metrics`. Start reading at [`router`].
//!
//! Every route but `/healthz` goes through one authorisation check (`auth.rs`) with the scope
//! the route needs; every error is one JSON shape (`error.rs`); bodies are capped at
//! `[server] max_body` before they are buffered; answers are bounded by
//! `[server] request_timeout` (a log stream, once started, is not).
//!
//! Invariant: handlers only call the node and the store; an intake request is answered 2xx
//! only after what it carried is durably stored, and 5xx only when a retry may succeed
//! (Alertmanager retries 5xx and drops 4xx).

mod auth;
mod error;
mod routes;
mod sse;

pub use auth::Scope;

use crate::config::ServerConfig;
use crate::node::Node;
use crate::store::Store;
use auth::Auth;
use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use error::ApiError;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// How the API works.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Largest request body, in bytes.
    pub max_body: usize,
    /// Longest time to answer a request (a log stream is exempt once started).
    pub request_timeout: Duration,
    /// Intake requests handled at once; more are answered 503 with `Retry-After`.
    pub max_intake: usize,
    /// Ask for a token even while the store holds none: set for any address but loopback.
    pub always_require_token: bool,
    /// Cancelled when the server closes: log streams end so their connections can close.
    pub closing: CancellationToken,
}

impl Settings {
    /// Settings from `[server]` for a server listening on `addr`.
    pub fn new(server: &ServerConfig, addr: SocketAddr) -> Self {
        Self {
            max_body: server.max_body,
            request_timeout: server.request_timeout,
            max_intake: server.max_intake,
            always_require_token: !addr.ip().is_loopback(),
            closing: CancellationToken::new(),
        }
    }
}

/// Why the API would not serve.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A non-loopback address, and no API token in the store.
    #[error(
        "refusing to listen on {0} without an API token: anyone who can reach it could run runbooks. \
         Create a token first (`runloom token create --name NAME --scope admin`), or listen on a \
         loopback address such as 127.0.0.1:8080"
    )]
    NeedsToken(SocketAddr),
    /// The store could not be read.
    #[error("checking the API tokens: {0:#}")]
    Store(anyhow::Error),
    /// Serving failed.
    #[error("serving HTTP: {0}")]
    Io(#[from] std::io::Error),
}

/// Refuse an address other than loopback while the store holds no active token.
pub async fn check_listen(addr: SocketAddr, store: &Store) -> Result<(), ServeError> {
    if addr.ip().is_loopback() {
        return Ok(());
    }
    let tokens = store.active_tokens().await.map_err(ServeError::Store)?;
    if tokens == 0 {
        return Err(ServeError::NeedsToken(addr));
    }
    Ok(())
}

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct AppState(Arc<Shared>);

pub(crate) struct Shared {
    node: Arc<Node>,
    settings: Settings,
    auth: Auth,
    intake: Arc<Semaphore>,
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The API's routes over `node`.
pub fn router(node: Arc<Node>, settings: Settings) -> Router {
    let state = AppState(Arc::new(Shared {
        auth: Auth::new(node.store.clone(), settings.always_require_token),
        intake: Arc::new(Semaphore::new(settings.max_intake)),
        node,
        settings,
    }));
    let read = Router::new()
        .route("/api/v1/runs", get(routes::list_runs))
        .route("/api/v1/runs/{id}", get(routes::get_run))
        .route("/api/v1/runs/{id}/logs", get(routes::logs))
        .route("/api/v1/runbooks", get(routes::runbooks))
        .route("/api/v1/plugins", get(routes::plugins))
        .route("/api/v1/schedules", get(routes::schedules))
        .route("/metrics", get(routes::metrics));
    let run = Router::new()
        .route("/api/v1/runbooks/{name}/runs", post(routes::start_run))
        .route("/api/v1/runs/{id}/cancel", post(routes::cancel));
    let admin = Router::new()
        .route("/api/v1/pause", post(routes::pause))
        .route("/api/v1/resume", post(routes::resume))
        .route(
            "/api/v1/runbooks/{name}/breaker/reset",
            post(routes::reset_breaker),
        );
    let intake = Router::new()
        .route("/hooks/alertmanager", post(routes::alertmanager))
        .route("/hooks/webhook/{name}", post(routes::webhook));
    Router::new()
        .route("/healthz", get(routes::healthz))
        .merge(scoped(&state, Scope::Read, read))
        .merge(scoped(&state, Scope::Run, run))
        .merge(scoped(&state, Scope::Admin, admin))
        .merge(scoped(&state, Scope::Alert, intake))
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), deadline))
        .with_state(state)
}

/// `routes`, each behind a check for `scope`.
fn scoped(state: &AppState, scope: Scope, routes: Router<AppState>) -> Router<AppState> {
    routes.route_layer(middleware::from_fn_with_state(
        (state.clone(), scope),
        authorize,
    ))
}

async fn authorize(
    State((state, scope)): State<(AppState, Scope)>,
    mut request: Request,
    next: Next,
) -> Response {
    match state.auth.check(request.headers(), scope).await {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(e) => e.into_response(),
    }
}

/// Answer within `[server] request_timeout`. A log stream answers at once and then streams,
/// so only its start is bounded.
async fn deadline(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let limit = state.settings.request_timeout;
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::timeout(limit).into_response(),
    }
}

/// Serve the API on `listener` until `shutdown` is cancelled, then finish the requests in
/// flight (log streams end at once) and return. Refuses a non-loopback address while the store
/// holds no API token.
pub async fn serve(
    node: Arc<Node>,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let addr = listener.local_addr()?;
    check_listen(addr, &node.store).await?;
    let mut settings = Settings::new(&node.config.server, addr);
    settings.closing = shutdown.clone();
    let app = router(node, settings);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await?;
    Ok(())
}
