//! The one refusal model. Every "no" the gateway answers — a bad document, a caller who may not,
//! a transition the rules refuse, a version that does not grow, a call over its budget — is a
//! [`Refusal`]: a [`Reason`] (one label in metrics, logs, the audit trail and every answer), the
//! field at fault with what was expected, and the message. It is built from the layers' typed
//! errors ([`EngineError`], [`SyncError`], [`FormatError`], [`ModelError`]) and answered in the
//! caller's own terms: canonical JSON with its HTTP status, the native receipt of the sender's
//! format, or a gRPC status with `ErrorInfo`, `BadRequest` and `RequestInfo` details.
//!
//! Answering a refusal records it — counted (`liandong_refusals_total{reason}`), logged with the
//! identity, route and request id, and written to the audit trail — so no front can answer one
//! and forget the rest. Retry-later answers (`rate_limit`, `body_budget`) are counted and logged
//! but not audited (a flood of them would only crowd the trail); a failed store is not a
//! refusal: it is logged as an error and answered 503 / UNAVAILABLE.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tonic::Code;

use super::context;
use crate::engine::EngineError;
use crate::formats::{Endpoint, FormatError, ReceiptKind};
use crate::model::ModelError;
use crate::security::Identity;
use crate::sync::SyncError;

/// Why a request was refused. The label is the same everywhere it appears.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The document or request is not acceptable: syntax, encoding or a field.
    BadDocument,
    /// The caller is not who it claims, or not the kind of caller the route is for.
    Identity,
    /// The caller's role or regions do not allow this.
    Policy,
    /// A shared record belongs to another endpoint.
    Ownership,
    /// No such transfer or record, as far as the caller may know.
    NotFound,
    /// The rules refuse the transition (the message names the current state).
    Transition,
    /// A dataset write's version does not grow, or the dataset moved since a preview.
    Version,
    /// The body is over the size limit.
    TooLarge,
    /// The header block is over its limit.
    HeadersTooLarge,
    /// The body did not arrive in time.
    BodyTooSlow,
    /// The gateway's memory budget for bodies in flight is full: retry shortly.
    BodyBudget,
    /// Over the caller's rate limit: retry after the time given.
    RateLimit,
    /// No such route or method.
    NoRoute,
    /// The store failed: nothing was done; retry. Not a refusal of the caller.
    Unavailable,
}

impl Reason {
    /// Every reason, for documentation and tests.
    pub const ALL: [Reason; 14] = [
        Reason::BadDocument,
        Reason::Identity,
        Reason::Policy,
        Reason::Ownership,
        Reason::NotFound,
        Reason::Transition,
        Reason::Version,
        Reason::TooLarge,
        Reason::HeadersTooLarge,
        Reason::BodyTooSlow,
        Reason::BodyBudget,
        Reason::RateLimit,
        Reason::NoRoute,
        Reason::Unavailable,
    ];

    /// The label: in `liandong_refusals_total{reason}`, log lines, audit entries, JSON answers
    /// (`reason`) and gRPC `ErrorInfo.reason` (upper-cased there, as Google's APIs write it).
    pub fn label(self) -> &'static str {
        match self {
            Reason::BadDocument => "bad_document",
            Reason::Identity => "identity",
            Reason::Policy => "policy",
            Reason::Ownership => "ownership",
            Reason::NotFound => "not_found",
            Reason::Transition => "transition",
            Reason::Version => "version",
            Reason::TooLarge => "too_large",
            Reason::HeadersTooLarge => "headers_too_large",
            Reason::BodyTooSlow => "body_too_slow",
            Reason::BodyBudget => "body_budget",
            Reason::RateLimit => "rate_limit",
            Reason::NoRoute => "no_route",
            Reason::Unavailable => "unavailable",
        }
    }

    pub fn http_status(self) -> StatusCode {
        match self {
            Reason::BadDocument => StatusCode::BAD_REQUEST,
            Reason::Identity | Reason::Policy | Reason::Ownership => StatusCode::FORBIDDEN,
            Reason::NotFound | Reason::NoRoute => StatusCode::NOT_FOUND,
            Reason::Transition | Reason::Version => StatusCode::CONFLICT,
            Reason::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Reason::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Reason::BodyTooSlow => StatusCode::REQUEST_TIMEOUT,
            Reason::RateLimit => StatusCode::TOO_MANY_REQUESTS,
            Reason::BodyBudget | Reason::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn grpc_code(self) -> Code {
        match self {
            Reason::BadDocument | Reason::HeadersTooLarge => Code::InvalidArgument,
            Reason::Identity | Reason::Policy | Reason::Ownership => Code::PermissionDenied,
            Reason::NotFound => Code::NotFound,
            Reason::Transition | Reason::Version => Code::FailedPrecondition,
            Reason::TooLarge | Reason::RateLimit => Code::ResourceExhausted,
            Reason::BodyTooSlow => Code::DeadlineExceeded,
            Reason::NoRoute => Code::Unimplemented,
            Reason::BodyBudget | Reason::Unavailable => Code::Unavailable,
        }
    }

    /// The kind of native receipt a vendor desk gets: `invalid` (fix the document), `busy`
    /// (send it again later) or `refused` (a good document the gateway will not take).
    pub fn receipt(self) -> ReceiptKind {
        match self {
            Reason::BadDocument | Reason::TooLarge | Reason::HeadersTooLarge => {
                ReceiptKind::Invalid
            }
            Reason::RateLimit | Reason::BodyBudget | Reason::BodyTooSlow | Reason::Unavailable => {
                ReceiptKind::Busy
            }
            Reason::Identity
            | Reason::Policy
            | Reason::Ownership
            | Reason::NotFound
            | Reason::Transition
            | Reason::Version
            | Reason::NoRoute => ReceiptKind::Refused,
        }
    }

    /// Whether the refusal goes into the audit trail (the retry-later ones and a failed store do not).
    fn audited(self) -> bool {
        !matches!(self, Reason::RateLimit | Reason::BodyBudget | Reason::Unavailable)
    }
}

/// The field at fault and what was expected of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldProblem {
    /// Native (`JQXX.BJSJ`) or canonical (`case.urgency`), as the caller wrote it.
    pub path: String,
    pub expected: String,
}

/// A refusal, ready to be answered on any front.
#[derive(Clone, Debug)]
pub struct Refusal {
    pub reason: Reason,
    pub message: String,
    pub field: Option<FieldProblem>,
    /// For `rate_limit`: how long until the caller's budget allows another call.
    pub retry_after: Option<Duration>,
}

impl Refusal {
    pub fn new(reason: Reason, message: impl Into<String>) -> Refusal {
        Refusal { reason, message: message.into(), field: None, retry_after: None }
    }

    /// A bad field: `path: expected`.
    pub fn field(path: impl Into<String>, expected: impl Into<String>) -> Refusal {
        let (path, expected) = (path.into(), expected.into());
        Refusal {
            reason: Reason::BadDocument,
            message: format!("{path}: {expected}"),
            field: Some(FieldProblem { path, expected }),
            retry_after: None,
        }
    }

    /// Over the rate limit.
    pub fn limited(wait: Duration) -> Refusal {
        Refusal {
            retry_after: Some(wait),
            ..Refusal::new(Reason::RateLimit, "busy: over the rate limit; retry later")
        }
    }

    /// The caller may not do this: `policy` for an agency or operator (its role or regions),
    /// `identity` for an endpoint (it may act only as itself).
    pub fn forbidden(identity: &Identity, message: impl Into<String>) -> Refusal {
        let reason = if identity.endpoint().is_some() { Reason::Identity } else { Reason::Policy };
        Refusal::new(reason, message)
    }

    /// An engine error, as refused to `identity`.
    pub fn from_engine(identity: &Identity, error: EngineError) -> Refusal {
        match error {
            EngineError::Invalid(e) => e.into(),
            EngineError::Forbidden(_) => Refusal::forbidden(identity, error.to_string()),
            EngineError::NotFound(_) => Refusal::new(Reason::NotFound, error.to_string()),
            EngineError::Refused(_) => Refusal::new(Reason::Transition, error.to_string()),
            EngineError::Store(_) => Refusal::new(Reason::Unavailable, error.to_string()),
        }
    }

    /// A dataset error, as refused to `identity` (an endpoint writing another's record is refused
    /// for `ownership`).
    pub fn from_sync(identity: &Identity, error: SyncError) -> Refusal {
        match error {
            SyncError::Invalid { field, problem } => Refusal::field(field, problem),
            SyncError::Forbidden(_) if identity.endpoint().is_some() => {
                Refusal::new(Reason::Ownership, error.to_string())
            }
            SyncError::Forbidden(_) => Refusal::new(Reason::Policy, error.to_string()),
            SyncError::NotFound(_) => Refusal::new(Reason::NotFound, error.to_string()),
            SyncError::Stale { .. } | SyncError::Moved { .. } | SyncError::Changed { .. } => {
                Refusal::new(Reason::Version, error.to_string())
            }
            SyncError::Store(_) => Refusal::new(Reason::Unavailable, error.to_string()),
        }
    }

    /// Counts, logs and (where [`Reason`] says so) audits the refusal, naming the caller, the
    /// route and the request id of the request in hand.
    pub fn record(&self) {
        let (id, route, peer) = context::current();
        let identity = peer.as_ref().map(|p| p.uri.as_str()).unwrap_or("");
        let field = self.field.as_ref().map(|f| f.path.as_str()).unwrap_or("");
        if self.reason == Reason::Unavailable {
            tracing::error!(identity, route, request_id = %id, error = %self.message, "store failed");
            return;
        }
        match peer.as_ref().and_then(|p| p.identity.endpoint()) {
            Some(endpoint) => {
                crate::metrics::refuse_endpoint(self.reason.label(), &endpoint.to_string())
            }
            None => crate::metrics::refuse(self.reason.label()),
        }
        if self.reason.audited() {
            tracing::warn!(identity, route, request_id = %id, reason = self.reason.label(), field, message = %self.message, "refused");
            if let Some(peer) = &peer {
                peer.auditor.refusal(&peer.uri, &route, self.reason.label(), &self.message, &id);
            }
        } else {
            tracing::info!(identity, route, request_id = %id, reason = self.reason.label(), message = %self.message, "refused");
        }
    }

    /// The canonical JSON body: `{"error": {"status", "reason", "message", "field"?,
    /// "expected"?, "request_id"}}`.
    pub fn body(&self) -> Value {
        let mut error = json!({
            "status": self.reason.http_status().as_u16(),
            "reason": self.reason.label(),
            "message": self.message,
            "request_id": context::request_id(),
        });
        if let Some(field) = &self.field {
            error["field"] = json!(field.path);
            error["expected"] = json!(field.expected);
        }
        json!({ "error": error })
    }

    /// Records the refusal and answers it as the native receipt of `endpoint`'s format. The
    /// message is the refusal's alone, as `formats.md` gives it (a vendor desk may match on it,
    /// and some formats bound its length); the request id is in the `x-request-id` header.
    pub fn native(self, endpoint: &Endpoint, reference: Option<&str>) -> Response {
        self.record();
        let message = Some(self.message.as_str());
        let response = native_receipt(
            endpoint,
            self.reason.http_status(),
            self.reason.receipt(),
            reference,
            message,
        );
        self.with_retry_after(response)
    }

    /// Records the refusal and answers it as a gRPC status: the code, the message, and the
    /// details `ErrorInfo` (reason, domain `liandong`), `RequestInfo` (request id),
    /// `BadRequest` (the field and what was expected) and `RetryInfo` where they apply.
    pub fn grpc(self) -> tonic::Status {
        use tonic_types::StatusExt;
        self.record();
        let mut details = tonic_types::ErrorDetails::new();
        details.set_error_info(
            self.reason.label().to_uppercase(),
            "liandong",
            std::collections::HashMap::new(),
        );
        details.set_request_info(context::request_id(), "");
        if let Some(field) = &self.field {
            details.add_bad_request_violation(field.path.clone(), field.expected.clone());
        }
        if let Some(wait) = self.retry_after {
            details.set_retry_info(Some(wait));
        }
        tonic::Status::with_error_details(self.reason.grpc_code(), self.message, details)
    }

    /// `Retry-After` on a retry-later answer (whole seconds, at least 1).
    fn with_retry_after(&self, mut response: Response) -> Response {
        let wait = match (self.retry_after, self.reason) {
            (Some(wait), _) => wait,
            (None, Reason::BodyBudget) => Duration::from_secs(1),
            _ => return response,
        };
        let seconds = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
        if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, value);
        }
        response
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Recorded and answered in canonical JSON.
impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        self.record();
        let response = (self.reason.http_status(), axum::Json(self.body())).into_response();
        self.with_retry_after(response)
    }
}

impl From<ModelError> for Refusal {
    fn from(error: ModelError) -> Refusal {
        Refusal::field(error.path, error.problem)
    }
}

impl From<FormatError> for Refusal {
    fn from(error: FormatError) -> Refusal {
        match error {
            FormatError::Field { path, problem } => Refusal::field(path, problem),
            FormatError::Document(_) => Refusal::new(Reason::BadDocument, error.to_string()),
            FormatError::UnknownEndpoint(_) => Refusal::new(Reason::NotFound, error.to_string()),
        }
    }
}

/// A native receipt as an HTTP response, with the content type of the endpoint's format.
pub fn native_receipt(
    endpoint: &Endpoint,
    status: StatusCode,
    kind: ReceiptKind,
    reference: Option<&str>,
    message: Option<&str>,
) -> Response {
    let bytes = endpoint.write_receipt(kind, reference, message);
    let mut response = (status, bytes).into_response();
    if let Ok(value) = HeaderValue::from_str(&endpoint.content_type()) {
        response.headers_mut().insert(axum::http::header::CONTENT_TYPE, value);
    }
    response
}

/// The body of a request that could not be taken: over the limit (naming it), or cut short.
pub fn body_refusal(rejection: &axum::extract::rejection::BytesRejection) -> Refusal {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        Refusal::new(
            Reason::TooLarge,
            format!(
                "body: over the 1 MiB limit ({} bytes); send a smaller document",
                super::MAX_BODY
            ),
        )
    } else {
        Refusal::new(
            Reason::BadDocument,
            format!("body: could not be read: {}", rejection.body_text()),
        )
    }
}

/// A request body of at most [`super::MAX_BODY`]; otherwise the canonical refusal (413 naming
/// the limit), never axum's plain text.
pub struct Body(pub axum::body::Bytes);

impl<S: Send + Sync> axum::extract::FromRequest<S> for Body {
    type Rejection = Refusal;

    async fn from_request(
        request: axum::extract::Request,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        axum::body::Bytes::from_request(request, state)
            .await
            .map(Body)
            .map_err(|rejection| body_refusal(&rejection))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_its_own_label_and_a_refusal_status() {
        let labels: std::collections::HashSet<_> = Reason::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(labels.len(), Reason::ALL.len());
        for reason in Reason::ALL {
            assert!(
                reason.http_status().is_client_error() || reason.http_status().is_server_error(),
                "{reason:?}"
            );
            assert_ne!(reason.grpc_code(), Code::Ok, "{reason:?}");
        }
    }

    #[test]
    fn the_openapi_document_lists_every_reason() {
        let document: Value = serde_json::from_str(super::super::OPENAPI).unwrap();
        let listed = &document["components"]["schemas"]["Error"]["properties"]["error"]
            ["properties"]["reason"]["enum"];
        let labels: Vec<&str> = Reason::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(
            listed.as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect::<Vec<_>>(),
            labels
        );
    }

    #[test]
    fn a_field_problem_names_the_field_and_what_was_expected() {
        let refusal: Refusal = FormatError::Field {
            path: "JQXX.BJSJ".into(),
            problem: "expected yyyyMMddHHmmss".into(),
        }
        .into();
        assert_eq!(refusal.reason, Reason::BadDocument);
        assert_eq!(refusal.message, "JQXX.BJSJ: expected yyyyMMddHHmmss");
        let body = refusal.body();
        assert_eq!(body["error"]["field"], "JQXX.BJSJ");
        assert_eq!(body["error"]["expected"], "expected yyyyMMddHHmmss");
        assert_eq!(body["error"]["reason"], "bad_document");
        assert_eq!(body["error"]["status"], 400);
    }

    #[test]
    fn forbidden_is_identity_for_an_endpoint_and_policy_for_others() {
        let endpoint = Identity::from_uri("liandong://endpoint/330200/110").unwrap();
        let agency = Identity::from_uri("liandong://agency/demo").unwrap();
        let error = || EngineError::Forbidden("no".into());
        assert_eq!(Refusal::from_engine(&endpoint, error()).reason, Reason::Identity);
        assert_eq!(Refusal::from_engine(&agency, error()).reason, Reason::Policy);
        let taken = || SyncError::Forbidden("owned by another".into());
        assert_eq!(Refusal::from_sync(&endpoint, taken()).reason, Reason::Ownership);
        assert_eq!(Refusal::from_sync(&agency, taken()).reason, Reason::Policy);
    }
}
