//! Request bodies in flight, bounded. A REST body is read whole (it is at most 1 MiB) before its
//! handler runs, within `listen.body_timeout`, and while it is read and handled it holds its
//! size from a memory budget — `listen.body_budget` in total, `listen.body_budget_per_identity`
//! for one client identity. So a client holding many unfinished bodies gets "busy" once its
//! share is taken, instead of taking the gateway's memory, and a body sent too slowly is cut
//! off instead of being held. gRPC streams are not buffered here (tonic bounds its messages).
//!
//! Where the route alone says which rate budget a call takes (a status update, a dataset write,
//! a reconciliation), the rate limit is checked here, before the body is read: a client over
//! its budget costs no body. A submission's budget depends on its urgency, in the body, so its
//! handler checks it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{AppState, Peer, MAX_BODY};
use crate::security::ratelimit::CallKind;

/// The rate budget a route's calls take, when the route alone says it.
fn kind_by_route(method: &Method, path: &str) -> Option<CallKind> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        (&Method::POST, ["v1", "native", _, _, "status"]) | (&Method::POST, ["v1", "transfers", _, "status"]) => {
            Some(CallKind::Status)
        }
        (&Method::PUT, ["v1", "datasets", _, "records", ..]) => Some(CallKind::Status),
        (&Method::POST, ["v1", "reconcile"]) => Some(CallKind::Read),
        _ => None,
    }
}

/// The budgets, and how long a body may take.
pub struct BodyBudget {
    total: Arc<Semaphore>,
    per_identity: usize,
    identities: Mutex<HashMap<String, Arc<Semaphore>>>,
    timeout: Duration,
}

/// Why a body was not taken.
enum Refusal {
    /// Every byte of the budget (the gateway's, or this identity's) is held by bodies in flight.
    Busy(&'static str),
    /// The body did not arrive within the timeout.
    Slow(Duration),
}

impl BodyBudget {
    pub fn new(total: usize, per_identity: usize, timeout: Duration) -> BodyBudget {
        BodyBudget {
            total: Arc::new(Semaphore::new(total.min(Semaphore::MAX_PERMITS))),
            per_identity: per_identity.min(Semaphore::MAX_PERMITS),
            identities: Mutex::new(HashMap::new()),
            timeout,
        }
    }

    /// Takes `bytes` from the total and from `identity`'s share, at once or not at all.
    fn claim(&self, identity: &str, bytes: u32) -> Result<(OwnedSemaphorePermit, OwnedSemaphorePermit), Refusal> {
        let own = {
            let mut identities = self.identities.lock().unwrap_or_else(|e| e.into_inner());
            // Shares nobody holds are forgotten, so the map stays as small as the clients in flight.
            identities.retain(|_, share| share.available_permits() < self.per_identity);
            identities.entry(identity.to_string()).or_insert_with(|| Arc::new(Semaphore::new(self.per_identity))).clone()
        };
        let own = own.try_acquire_many_owned(bytes).map_err(|_| Refusal::Busy("identity"))?;
        let total = self.total.clone().try_acquire_many_owned(bytes).map_err(|_| Refusal::Busy("total"))?;
        Ok((total, own))
    }
}

/// The middleware: claim, read within the timeout, handle, release.
pub async fn bounded_bodies(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let grpc = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|t| t.starts_with("application/grpc"));
    let length = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    let chunked = headers.contains_key(header::TRANSFER_ENCODING);
    // No body, a gRPC stream, or one over the limit (refused by the handler's own limit from
    // its length alone, in the sender's format): nothing to hold.
    if grpc {
        return next.run(request).await;
    }
    let identity = request.extensions().get::<Peer>().map(|p| p.1.clone()).unwrap_or_default();
    let path = request.uri().path().to_string();
    if let (Some(kind), Some(peer)) = (kind_by_route(request.method(), &path), request.extensions().get::<Peer>()) {
        if let Err(wait) = state.limit(peer, kind) {
            return over_the_limit(&state, &path, wait);
        }
    }
    if (length.unwrap_or(0) == 0 && !chunked) || length.is_some_and(|l| l > MAX_BODY) {
        return next.run(request).await;
    }
    let claim = length.unwrap_or(MAX_BODY) as u32;
    let budget = &state.bodies;
    let permits = match budget.claim(&identity, claim) {
        Ok(permits) => permits,
        Err(refusal) => return refuse(&state, &path, &identity, refusal),
    };
    let (parts, mut body) = request.into_parts();
    let read = async {
        let mut bytes = Vec::with_capacity(claim as usize);
        // One byte past the limit is enough for the handler's limit to refuse it.
        while bytes.len() <= MAX_BODY {
            match body.frame().await {
                None => break,
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        bytes.extend_from_slice(&data);
                    }
                }
                Some(Err(_)) => return None,
            }
        }
        Some(bytes)
    };
    let bytes = match tokio::time::timeout(budget.timeout, read).await {
        Err(_) => return refuse(&state, &path, &identity, Refusal::Slow(budget.timeout)),
        // The client went away mid-body: nobody to answer.
        Ok(None) => return StatusCode::BAD_REQUEST.into_response(),
        Ok(Some(bytes)) => bytes,
    };
    let response = next.run(Request::from_parts(parts, axum::body::Body::from(bytes))).await;
    drop(permits);
    response
}

/// The endpoint of a native route's path (`/v1/native/REGION/PLATFORM/…`).
fn native_endpoint<'a>(state: &'a AppState, path: &str) -> Option<&'a crate::formats::Endpoint> {
    let mut parts = path.strip_prefix("/v1/native/")?.split('/');
    let (region, platform) = (parts.next()?, parts.next()?);
    state.engine.registry.endpoint_named(&format!("{region}/{platform}")).ok()
}

/// 429 with `Retry-After`: the sender's busy receipt on the native routes, else the canonical error.
fn over_the_limit(state: &AppState, path: &str, wait: Duration) -> Response {
    match native_endpoint(state, path) {
        Some(endpoint) => super::errors::too_many(
            super::errors::native_receipt(
                endpoint,
                StatusCode::TOO_MANY_REQUESTS,
                None,
                Some("busy: over the rate limit; retry later"),
            ),
            wait,
        ),
        None => super::errors::ApiError::limited(wait).into_response(),
    }
}

/// The refusal: 503 and "busy" (retry) or 408 (too slow), in the sender's native receipt on the
/// native routes, else the canonical error.
fn refuse(state: &AppState, path: &str, identity: &str, refusal: Refusal) -> Response {
    let (status, reason, message) = match refusal {
        Refusal::Busy(whose) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "body_budget",
            format!(
                "busy: the request bodies in flight {} fill the gateway's memory budget for them; retry shortly",
                if whose == "identity" { "from this identity" } else { "from all clients" }
            ),
        ),
        Refusal::Slow(timeout) => (
            StatusCode::REQUEST_TIMEOUT,
            "body_too_slow",
            format!("body: not received within {} s; send the whole document at once", timeout.as_secs_f64()),
        ),
    };
    crate::metrics::refuse(reason);
    tracing::warn!(target: "liandong::request", %identity, path, reason, "refused a request body");
    let mut response = match native_endpoint(state, path) {
        Some(endpoint) => super::errors::native_receipt(endpoint, status, None, Some(&message)),
        None => super::errors::ApiError::new(status, message).into_response(),
    };
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    }
    response
}
