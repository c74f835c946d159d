//! The one place that turns errors into answers: HTTP statuses, canonical JSON errors and
//! native receipts of the kind the sender's format has for them.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::engine::EngineError;
use crate::formats::{Endpoint, FormatError, ReceiptKind};

/// An error answered in canonical JSON: `{"error": {"status": 409, "message": "…"}}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// For 429: how long until the caller's budget allows another call.
    pub retry_after: Option<std::time::Duration>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into(), retry_after: None }
    }

    /// Over the rate limit.
    pub fn limited(wait: std::time::Duration) -> ApiError {
        ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: "busy: over the rate limit; retry later".into(),
            retry_after: Some(wait),
        }
    }
}

/// The HTTP status of an engine error.
pub fn status_of(error: &EngineError) -> StatusCode {
    match error {
        EngineError::Invalid(_) => StatusCode::BAD_REQUEST,
        EngineError::Forbidden(_) => StatusCode::FORBIDDEN,
        EngineError::NotFound(_) => StatusCode::NOT_FOUND,
        EngineError::Refused(_) => StatusCode::CONFLICT,
        EngineError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// The native receipt kind for an HTTP status.
pub fn receipt_kind(status: StatusCode) -> ReceiptKind {
    match status {
        StatusCode::OK => ReceiptKind::Success,
        StatusCode::BAD_REQUEST | StatusCode::PAYLOAD_TOO_LARGE => ReceiptKind::Invalid,
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => ReceiptKind::Busy,
        _ => ReceiptKind::Refused,
    }
}

impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> Self {
        ApiError::new(status_of(&error), error.to_string())
    }
}

impl From<FormatError> for ApiError {
    fn from(error: FormatError) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, error.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": {"status": self.status.as_u16(), "message": self.message}});
        let response = (self.status, axum::Json(body)).into_response();
        match self.retry_after {
            Some(wait) => too_many(response, wait),
            None => response,
        }
    }
}

/// Why a request body could not be taken: over the limit (naming it), or cut short.
pub fn body_problem(rejection: &axum::extract::rejection::BytesRejection) -> String {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        format!("body: over the 1 MiB limit ({} bytes); send a smaller document", super::MAX_BODY)
    } else {
        format!("body: could not be read: {}", rejection.body_text())
    }
}

/// A request body of at most [`super::MAX_BODY`]; otherwise the canonical error (413 naming
/// the limit), never axum's plain text.
pub struct Body(pub axum::body::Bytes);

impl<S: Send + Sync> axum::extract::FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::body::Bytes::from_request(request, state).await {
            Ok(bytes) => Ok(Body(bytes)),
            Err(rejection) => {
                crate::metrics::refuse("too_large");
                Err(ApiError::new(rejection.status(), body_problem(&rejection)))
            }
        }
    }
}

/// A native receipt as an HTTP response, with the content type of the endpoint's format.
pub fn native_receipt(endpoint: &Endpoint, status: StatusCode, reference: Option<&str>, message: Option<&str>) -> Response {
    let bytes = endpoint.write_receipt(receipt_kind(status), reference, message);
    let mut response = (status, bytes).into_response();
    if let Ok(value) = HeaderValue::from_str(&endpoint.content_type()) {
        response.headers_mut().insert(axum::http::header::CONTENT_TYPE, value);
    }
    response
}

/// The answer to a call over its rate limit: 429 with `Retry-After` (whole seconds, at least 1).
pub fn too_many(response: Response, wait: std::time::Duration) -> Response {
    let mut response = response;
    *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    if let Ok(value) = HeaderValue::from_str(&seconds.max(1).to_string()) {
        response.headers_mut().insert(axum::http::header::RETRY_AFTER, value);
    }
    response
}
