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

use crate::api::refusal::{Reason, Refusal};
use crate::api::{AppState, Peer, MAX_BODY};
use crate::security::ratelimit::CallKind;

/// The rate budget a route's calls take, when the route alone says it.
fn kind_by_route(method: &Method, path: &str) -> Option<CallKind> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        (&Method::POST, ["v1", "native", _, _, "status"])
        | (&Method::POST, ["v1", "transfers", _, "status"]) => Some(CallKind::Status),
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
enum BodyRefusal {
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
    fn claim(
        &self,
        identity: &str,
        bytes: u32,
    ) -> Result<(OwnedSemaphorePermit, OwnedSemaphorePermit), BodyRefusal> {
        let own = {
            let mut identities = self.identities.lock().unwrap_or_else(|e| e.into_inner());
            // Shares nobody holds are forgotten, so the map stays as small as the clients in flight.
            identities.retain(|_, share| share.available_permits() < self.per_identity);
            identities
                .entry(identity.to_string())
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_identity)))
                .clone()
        };
        let own = own.try_acquire_many_owned(bytes).map_err(|_| BodyRefusal::Busy("identity"))?;
        let total = self
            .total
            .clone()
            .try_acquire_many_owned(bytes)
            .map_err(|_| BodyRefusal::Busy("total"))?;
        Ok((total, own))
    }
}

/// The middleware: claim, read within the timeout, handle, release.
pub async fn bounded_bodies(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    let grpc = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/grpc"));
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let chunked = headers.contains_key(header::TRANSFER_ENCODING);
    // No body, a gRPC stream, or one over the limit (refused by the handler's own limit from
    // its length alone, in the sender's format): nothing to hold.
    if grpc {
        return next.run(request).await;
    }
    let identity = request.extensions().get::<Peer>().map(|p| p.uri.clone()).unwrap_or_default();
    let path = request.uri().path().to_string();
    if let (Some(kind), Some(peer)) =
        (kind_by_route(request.method(), &path), request.extensions().get::<Peer>())
    {
        if let Err(refusal) = state.limit(peer, kind) {
            return answer(&state, &path, refusal);
        }
    }
    if (length.unwrap_or(0) == 0 && !chunked) || length.is_some_and(|l| l > MAX_BODY) {
        return next.run(request).await;
    }
    let claim = length.unwrap_or(MAX_BODY) as u32;
    let budget = &state.bodies;
    let permits = match budget.claim(&identity, claim) {
        Ok(permits) => permits,
        Err(why) => return answer(&state, &path, body_refusal(why)),
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
        Err(_) => return answer(&state, &path, body_refusal(BodyRefusal::Slow(budget.timeout))),
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
    state.engine.registry().endpoint_named(&format!("{region}/{platform}")).ok()
}

/// The refusal, in the sender's native receipt on the native routes, else in canonical JSON.
fn answer(state: &AppState, path: &str, refusal: Refusal) -> Response {
    match native_endpoint(state, path) {
        Some(endpoint) => refusal.native(endpoint, None),
        None => refusal.into_response(),
    }
}

/// 503 and "busy" (retry shortly), or 408 (too slow).
fn body_refusal(why: BodyRefusal) -> Refusal {
    match why {
        BodyRefusal::Busy(whose) => Refusal::new(
            Reason::BodyBudget,
            format!(
                "busy: the request bodies in flight {} fill the gateway's memory budget for them; retry shortly",
                if whose == "identity" { "from this identity" } else { "from all clients" }
            ),
        ),
        BodyRefusal::Slow(timeout) => Refusal::new(
            Reason::BodyTooSlow,
            format!("body: not received within {} s; send the whole document at once", timeout.as_secs_f64()),
        ),
    }
}
