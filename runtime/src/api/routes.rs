//! The route handlers. Each reads its request, calls the node or the store, and answers JSON
//! (or an event stream, or the metrics text); errors are [`ApiError`]s.

use super::auth::Caller;
use super::error::ApiError;
use super::{AppState, sse};
use crate::catalog::{Body, Prepared};
use crate::run::{RunRecord, RunStatus, StepRecord};
use crate::runbook::{Missed, Trigger};
use crate::store::RunFilter;
use crate::trigger::cron;
use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use tokio::sync::OwnedSemaphorePermit;

type ApiResult<T = Response> = Result<T, ApiError>;

// ---- reading requests ------------------------------------------------------------------

/// Read the body, refusing it past `[server] max_body` before buffering more than that.
async fn read_body(
    state: &AppState,
    headers: &HeaderMap,
    body: axum::body::Body,
) -> ApiResult<axum::body::Bytes> {
    let limit = state.settings.max_body;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::too_large(limit));
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(ApiError::too_large(limit)),
        Err(e) => Err(ApiError::bad_request(format!(
            "reading the body failed: {e}"
        ))),
    }
}

/// Parse a JSON body: 400 when it is not JSON, 422 when it is JSON of the wrong shape.
fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::invalid(e.to_string()),
        _ => ApiError::bad_request(format!("the body is not JSON: {e}")),
    })
}

/// An optional JSON body: empty means the defaults.
fn parse_optional_json<T: DeserializeOwned + Default>(bytes: &[u8]) -> ApiResult<T> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        Ok(T::default())
    } else {
        parse_json(bytes)
    }
}

fn path(p: Result<Path<String>, PathRejection>) -> ApiResult<String> {
    p.map(|Path(v)| v)
        .map_err(|e| ApiError::bad_request(e.body_text()))
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> ApiResult<T> {
    q.map(|Query(v)| v)
        .map_err(|e| ApiError::bad_request(e.body_text()))
}

/// Log a rejected intake request loudly: senders do not retry 4xx, so it is lost to them.
fn loudly<T>(route: &'static str, result: ApiResult<T>) -> ApiResult<T> {
    if let Err(e) = &result
        && e.status().is_client_error()
    {
        tracing::warn!(route, status = %e.status(), error = e.message(), "intake request rejected");
    }
    result
}

impl AppState {
    /// A slot for one intake request: 503 when shutting down or when `[server] max_intake`
    /// requests are already in flight (the sender retries).
    fn intake_permit(&self) -> ApiResult<OwnedSemaphorePermit> {
        if !self.node.is_accepting() {
            return Err(ApiError::shutting_down());
        }
        self.intake
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError::overloaded(self.settings.max_intake))
    }
}

// ---- rendering ---------------------------------------------------------------------------

/// A run as the API shows it: the record, its duration, and its steps when given.
fn run_json(run: &RunRecord, steps: Option<&[StepRecord]>) -> Value {
    let mut doc = serde_json::to_value(run).unwrap_or_default();
    doc["duration_ms"] = run.duration_ms().into();
    if let Some(steps) = steps {
        doc["steps"] = serde_json::to_value(steps).unwrap_or_default();
    }
    doc
}

fn duration(d: std::time::Duration) -> String {
    humantime::format_duration(d).to_string()
}

fn trigger_json(t: &Trigger) -> Value {
    match t {
        Trigger::Cron(c) => json!({
            "kind": "cron",
            "schedule": c.schedule,
            "timezone": c.timezone.name(),
            "dst": cron::kind(&c.cron),
            "missed": cron::missed_word(c.missed),
            "missed_window": match c.missed {
                Missed::Skip => None,
                Missed::RunOnce { window } => Some(duration(window)),
            },
            "overlap": cron::overlap_word(c.overlap),
        }),
        Trigger::Alert(a) => json!({
            "kind": "alert",
            "matchers": a.matchers.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "repeat": a.repeat,
        }),
        Trigger::Webhook(w) => json!({ "kind": "webhook", "name": w.name }),
        Trigger::Manual => json!({ "kind": "manual" }),
    }
}

/// A runbook with its triggers, its policy, and its breaker's state.
fn runbook_json(p: &Prepared, breaker: Option<&(i64, Option<i64>)>) -> Value {
    let rb = &p.runbook;
    let policy = &rb.policy;
    let (failures, open_since) = breaker.copied().unwrap_or((0, None));
    json!({
        "name": rb.name,
        "description": rb.description,
        "content_hash": rb.content_hash,
        "body": match p.body { Body::Script(_) => "rhai", Body::Wasm(_) => "wasm" },
        "parameters": rb.parameters.iter().map(|param| json!({
            "name": param.name,
            "type": param.kind.name(),
            "description": param.description,
            "default": param.default,
            "required": param.required,
            "allowed": param.allowed,
        })).collect::<Vec<_>>(),
        "triggers": rb.triggers.iter().map(trigger_json).collect::<Vec<_>>(),
        "policy": {
            "timeout": duration(policy.timeout),
            "retries": policy.retries,
            "concurrency": policy.concurrency,
            "lock": policy.lock.as_ref().map(ToString::to_string),
            "rate_limit": policy.rate_limit.map(|r| format!("{}/{}", r.count, duration(r.window))),
            "cooldown": policy.cooldown.map(duration),
            "breaker": policy.breaker,
        },
        "breaker": {
            "threshold": policy.breaker,
            "consecutive_failures": failures,
            "open": open_since.is_some(),
            "open_since": open_since,
        },
        "plugins": rb.plugins.keys().collect::<Vec<_>>(),
    })
}

// ---- intake ------------------------------------------------------------------------------

/// `POST /hooks/alertmanager`: 200 with what the notification did, once every alert in it is
/// durably stored.
pub(super) async fn alertmanager(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> ApiResult {
    loudly(
        "alertmanager",
        async {
            let _permit = state.intake_permit()?;
            let bytes = read_body(&state, &headers, body).await?;
            // Syntax errors are 400; a JSON body of the wrong shape is 422, naming the field.
            serde_json::from_slice::<serde::de::IgnoredAny>(&bytes)
                .map_err(|e| ApiError::bad_request(format!("the body is not JSON: {e}")))?;
            let report = state.node.ingest_alertmanager(&bytes).await?;
            Ok(Json(report).into_response())
        }
        .await,
    )
}

/// `POST /hooks/webhook/{name}`: any JSON body (empty means `null`) to the runbooks with a
/// webhook trigger of that name; 202 when a run was queued.
pub(super) async fn webhook(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> ApiResult {
    loudly(
        "webhook",
        async {
            let name = path(name)?;
            let _permit = state.intake_permit()?;
            let bytes = read_body(&state, &headers, body).await?;
            let value: Value = if bytes.iter().all(u8::is_ascii_whitespace) {
                Value::Null
            } else {
                serde_json::from_slice(&bytes)
                    .map_err(|e| ApiError::bad_request(format!("the body is not JSON: {e}")))?
            };
            let runs = state.node.ingest_webhook(&name, value).await?;
            let status = if runs.iter().any(|r| r.status == RunStatus::Queued) {
                StatusCode::ACCEPTED
            } else {
                StatusCode::OK
            };
            Ok((status, Json(json!({ "runs": runs }))).into_response())
        }
        .await,
    )
}

// ---- runs --------------------------------------------------------------------------------

/// The body of `POST /api/v1/runbooks/{name}/runs`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunBody {
    /// Parameter values.
    #[serde(default)]
    params: Map<String, Value>,
    /// Plan `mutate` actions instead of applying them.
    #[serde(default)]
    dry_run: bool,
}

/// `POST /api/v1/runbooks/{name}/runs`: 202 with the run queued, or 201 with it recorded as
/// skipped (runloom is paused, the breaker is open); `Location` names it.
pub(super) async fn start_run(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> ApiResult {
    let name = path(name)?;
    let bytes = read_body(&state, &headers, body).await?;
    let request: RunBody = parse_optional_json(&bytes)?;
    let run = state
        .node
        .submit(&name, request.params, request.dry_run)
        .await?;
    let status = if run.status == RunStatus::Queued {
        StatusCode::ACCEPTED
    } else {
        StatusCode::CREATED
    };
    let location = HeaderValue::from_str(&format!("/api/v1/runs/{}", run.id))
        .map_err(|e| ApiError::internal(&e))?;
    Ok((
        status,
        [(header::LOCATION, location)],
        Json(run_json(&run, None)),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RunsQuery {
    runbook: Option<String>,
    status: Option<String>,
    limit: Option<u32>,
}

/// Most runs one listing returns.
const MAX_RUNS: u32 = 1000;

/// `GET /api/v1/runs?runbook=&status=&limit=`: newest first.
pub(super) async fn list_runs(
    State(state): State<AppState>,
    q: Result<Query<RunsQuery>, QueryRejection>,
) -> ApiResult {
    let q = query(q)?;
    let status = q
        .status
        .as_deref()
        .map(str::parse::<RunStatus>)
        .transpose()
        .map_err(ApiError::bad_request)?;
    let filter = RunFilter {
        runbook: q.runbook,
        status,
        limit: q.limit.unwrap_or(50).min(MAX_RUNS),
    };
    let runs = state.node.store.list_runs(&filter).await?;
    let docs: Vec<Value> = runs.iter().map(|r| run_json(r, None)).collect();
    Ok(Json(docs).into_response())
}

/// `GET /api/v1/runs/{id}`: the run with its steps (a unique id prefix is enough).
pub(super) async fn get_run(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let id = path(id)?;
    let run = state.node.store.get_run(&id).await?;
    let steps = state.node.store.steps(&run.id).await?;
    Ok(Json(run_json(&run, Some(&steps))).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LogsQuery {
    follow: Option<bool>,
    after: Option<i64>,
    limit: Option<u32>,
}

/// Most log lines one JSON answer holds.
const MAX_LINES: u32 = 10_000;

/// `GET /api/v1/runs/{id}/logs?after=&limit=`: a JSON array of lines. With `follow=true` or
/// `Accept: text/event-stream`: an event stream of new lines ending with the final status,
/// resuming after `Last-Event-ID` when the client sends one.
pub(super) async fn logs(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    q: Result<Query<LogsQuery>, QueryRejection>,
    headers: HeaderMap,
) -> ApiResult {
    let id = path(id)?;
    let q = query(q)?;
    let run = state.node.store.get_run(&id).await?;
    let wants_stream = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    if q.follow.unwrap_or(false) || wants_stream {
        let resume = headers
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<i64>().ok());
        let after = resume.or(q.after).unwrap_or(0);
        let stream = sse::follow(
            state.node.store.clone(),
            run,
            after,
            state.settings.closing.clone(),
        );
        return Ok(stream);
    }
    let lines = state
        .node
        .store
        .logs(
            &run.id,
            q.after.unwrap_or(0),
            q.limit.unwrap_or(MAX_LINES).min(MAX_LINES),
        )
        .await?;
    Ok(Json(lines).into_response())
}

/// `POST /api/v1/runs/{id}/cancel`: a queued run is cancelled at once, a running one at its
/// next step boundary; 409 for a run already over.
pub(super) async fn cancel(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let id = path(id)?;
    let run = state.node.store.get_run(&id).await?;
    if run.status.is_final() {
        return Err(ApiError::conflict(format!(
            "run `{}` is already over ({})",
            run.id, run.status
        )));
    }
    state.node.cancel(&run.id).await?;
    let run = state.node.store.get_run(&run.id).await?;
    Ok(Json(run_json(&run, None)).into_response())
}

// ---- catalogue ---------------------------------------------------------------------------

/// `GET /api/v1/runbooks`: every loaded runbook with its triggers, policy and breaker state;
/// the global pause; and the runbooks that failed to load.
pub(super) async fn runbooks(State(state): State<AppState>) -> ApiResult {
    let node = &state.node;
    let breakers: HashMap<String, (i64, Option<i64>)> = node
        .store
        .breakers()
        .await?
        .into_iter()
        .map(|(name, failures, since)| (name, (failures, since)))
        .collect();
    let paused = node.store.paused().await?;
    let runbooks: Vec<Value> = node
        .catalog
        .runbooks()
        .map(|p| runbook_json(p, breakers.get(&p.runbook.name)))
        .collect();
    let errors: Vec<String> = node
        .catalog
        .errors()
        .iter()
        .map(ToString::to_string)
        .collect();
    Ok(Json(json!({
        "paused": paused.is_some(),
        "paused_reason": paused,
        "runbooks": runbooks,
        "errors": errors,
    }))
    .into_response())
}

/// `GET /api/v1/plugins`: every loaded plugin with its actions, and those that failed to load.
pub(super) async fn plugins(State(state): State<AppState>) -> ApiResult {
    let registry = &state.node.registry;
    let plugins: Vec<Value> = registry
        .plugins()
        .map(|p| {
            let m = p.manifest();
            json!({
                "name": p.name(),
                "version": m.version,
                "description": m.description,
                "origin": p.origin(),
                "content_hash": p.content_hash(),
                "actions": m.actions,
            })
        })
        .collect();
    let errors: Vec<Value> = registry
        .problems()
        .iter()
        .map(|p| json!({ "origin": p.origin, "error": p.error }))
        .collect();
    Ok(Json(json!({ "plugins": plugins, "errors": errors })).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SchedulesQuery {
    count: Option<usize>,
}

/// Most fire times listed per trigger.
const MAX_FIRE_TIMES: usize = 100;

/// `GET /api/v1/schedules?count=N`: each cron trigger with its policies and next `N` fire
/// times (default 5), as `runloom schedule list --json` shows them.
pub(super) async fn schedules(
    State(state): State<AppState>,
    q: Result<Query<SchedulesQuery>, QueryRejection>,
) -> ApiResult {
    let q = query(q)?;
    let count = q.count.unwrap_or(5).min(MAX_FIRE_TIMES);
    let list = cron::schedules(&state.node.catalog, chrono::Utc::now(), count);
    Ok(Json(list).into_response())
}

// ---- the safety switches -----------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PauseBody {
    reason: Option<String>,
}

/// `POST /api/v1/pause` `{"reason": …}`: every triggered run is recorded as skipped (rule
/// `paused`) until resumed.
pub(super) async fn pause(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> ApiResult {
    let bytes = read_body(&state, &headers, body).await?;
    let request: PauseBody = parse_optional_json(&bytes)?;
    let reason = request
        .reason
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| match &caller {
            Caller::Token { name, .. } => format!("paused through the API by token `{name}`"),
            Caller::Open => "paused through the API".to_string(),
        });
    state.node.store.set_paused(Some(&reason)).await?;
    tracing::warn!(reason = %reason, by = %caller, "runloom paused");
    Ok(Json(json!({ "paused": true, "paused_reason": reason })).into_response())
}

/// `POST /api/v1/resume`: lift the global pause.
pub(super) async fn resume(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
) -> ApiResult {
    let was = state.node.store.paused().await?;
    state.node.store.set_paused(None).await?;
    if was.is_some() {
        tracing::warn!(by = %caller, "runloom resumed");
    }
    Ok(Json(json!({ "paused": false, "was_paused": was.is_some() })).into_response())
}

/// `POST /api/v1/runbooks/{name}/breaker/reset`: close the runbook's circuit breaker.
pub(super) async fn reset_breaker(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    name: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let name = path(name)?;
    let known = state.node.catalog.get(&name).is_some()
        || state
            .node
            .store
            .breakers()
            .await?
            .iter()
            .any(|(runbook, ..)| *runbook == name);
    if !known {
        return Err(ApiError::not_found(format!("no runbook `{name}`")));
    }
    let was_open = state.node.store.reset_breaker(&name).await?;
    if was_open {
        tracing::warn!(runbook = %name, by = %caller, "circuit breaker reset");
    }
    Ok(Json(json!({ "runbook": name, "was_open": was_open })).into_response())
}

// ---- operations --------------------------------------------------------------------------

/// `GET /healthz` (no token): 200 while the node takes work, 503 once it is shutting down.
pub(super) async fn healthz(State(state): State<AppState>) -> Response {
    let accepting = state.node.is_accepting();
    let body = Json(json!({
        "node": state.node.options.name,
        "status": if accepting { "ok" } else { "shutting_down" },
        "version": env!("CARGO_PKG_VERSION"),
    }));
    if accepting {
        (StatusCode::OK, body).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(
                header::RETRY_AFTER,
                HeaderValue::from(super::error::RETRY_AFTER_SECS),
            )],
            body,
        )
            .into_response()
    }
}

/// `GET /metrics`: Prometheus metrics (OpenMetrics text, which Prometheus scrapes natively).
pub(super) async fn metrics(State(state): State<AppState>) -> ApiResult {
    let depth = state.node.store.queue_depth().await?;
    let text = state.node.metrics.render(depth);
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        text,
    )
        .into_response())
}

/// Any other path.
pub(super) async fn not_found() -> ApiError {
    ApiError::not_found("no such route; the routes are listed in the README")
}

/// A known path with another method.
pub(super) async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}
