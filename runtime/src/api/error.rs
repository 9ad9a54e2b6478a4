//! Every error the API answers, as one JSON shape: `{"error": {"code": "...", "message": "..."}}`.
//!
//! 4xx messages say what was wrong with the request (the field, the scope needed); 5xx
//! messages never carry internals: the cause is logged once, here, at error level.

use crate::node::NodeError;
use crate::store::StoreError;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Seconds a client is told to wait before retrying a 503.
pub(crate) const RETRY_AFTER_SECS: u64 = 5;

/// An error response.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<u64>,
    challenge: bool,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
            challenge: false,
        }
    }

    /// 400: the request cannot be read (not JSON, a bad query string).
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 422: well-formed, but its content is wrong (a missing field, a bad parameter).
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message)
    }

    /// 404.
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 409: the resource is not in a state that allows it.
    pub(crate) fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// 401, with a `WWW-Authenticate: Bearer` challenge.
    pub(crate) fn unauthorized(message: impl Into<String>) -> Self {
        Self {
            challenge: true,
            ..Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
        }
    }

    /// 403.
    pub(crate) fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 413.
    pub(crate) fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the body is larger than {limit} bytes (`[server] max_body`)"),
        )
    }

    /// 503 with `Retry-After`: the node is shutting down.
    pub(crate) fn shutting_down() -> Self {
        Self {
            retry_after: Some(RETRY_AFTER_SECS),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "this node is shutting down; retry shortly",
            )
        }
    }

    /// 503 with `Retry-After`: too many intake requests at once.
    pub(crate) fn overloaded(limit: usize) -> Self {
        Self {
            retry_after: Some(1),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                format!(
                    "{limit} intake requests are already being handled (`[server] max_intake`); retry shortly"
                ),
            )
        }
    }

    /// 503 with `Retry-After`: the request took longer than `[server] request_timeout`.
    pub(crate) fn timeout(limit: std::time::Duration) -> Self {
        Self {
            retry_after: Some(1),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                format!(
                    "no answer within {} (`[server] request_timeout`)",
                    humantime::format_duration(limit)
                ),
            )
        }
    }

    /// 405.
    pub(crate) fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this route does not take that method",
        )
    }

    /// 500: logged here with its cause; the answer says only that it happened.
    pub(crate) fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "API request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; the server log has the cause",
        )
    }

    /// The status it answers.
    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }

    /// The message it answers.
    pub(crate) fn message(&self) -> &str {
        &self.message
    }
}

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> Self {
        match e {
            NodeError::UnknownRunbook(_) | NodeError::UnknownWebhook(_) => {
                ApiError::not_found(e.to_string())
            }
            NodeError::BadRequest(message) => ApiError::invalid(message),
            NodeError::Store(e) => e.into(),
            NodeError::ShuttingDown => ApiError::shutting_down(),
            NodeError::Internal(e) => ApiError::internal(&format_args!("{e:#}")),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(_) => ApiError::not_found(e.to_string()),
            StoreError::Ambiguous(_) => ApiError::bad_request(e.to_string()),
            StoreError::Database(e) => ApiError::internal(&format_args!("{e:#}")),
        }
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        ApiError::internal(&format_args!("{e:#}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": { "code": self.code, "message": self.message } });
        let mut response = (self.status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.challenge {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"runloom\""),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_errors_map_to_statuses_without_leaking_internals() {
        let cases: Vec<(NodeError, StatusCode, &str)> = vec![
            (
                NodeError::UnknownRunbook("x".into()),
                StatusCode::NOT_FOUND,
                "no runbook `x`",
            ),
            (
                NodeError::UnknownWebhook("deploy".into()),
                StatusCode::NOT_FOUND,
                "no runbook has a webhook trigger named `deploy`",
            ),
            (
                NodeError::BadRequest("`version` is \"3\"".into()),
                StatusCode::UNPROCESSABLE_ENTITY,
                "`version` is \"3\"",
            ),
            (
                NodeError::Store(StoreError::NotFound("01abc".into())),
                StatusCode::NOT_FOUND,
                "no run `01abc`",
            ),
            (
                NodeError::Store(StoreError::Ambiguous("01ab".into())),
                StatusCode::BAD_REQUEST,
                "`01ab` matches several runs; give more characters",
            ),
            (
                NodeError::ShuttingDown,
                StatusCode::SERVICE_UNAVAILABLE,
                "this node is shutting down; retry shortly",
            ),
            (
                NodeError::Internal(anyhow::anyhow!("disk I/O error at /secret/path")),
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error; the server log has the cause",
            ),
        ];
        for (error, status, message) in cases {
            let e = ApiError::from(error);
            assert_eq!((e.status(), e.message()), (status, message));
        }
        let r = ApiError::shutting_down().into_response();
        assert_eq!(r.headers()[header::RETRY_AFTER], "5");
        let r = ApiError::unauthorized("no token").into_response();
        assert!(r.headers().contains_key(header::WWW_AUTHENTICATE));
    }
}
