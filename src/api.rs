//! The HTTPS API: native documents from provincial systems, canonical JSON for everything
//! else. Every request arrives with the caller's [`Identity`], established by the TLS layer
//! ([`crate::server`]); handlers never look at a document to decide who is calling.
//!
//! | route | body | answer |
//! |---|---|---|
//! | `POST /v1/native/{region}/{platform}/transfers` | the endpoint's native transfer document | its native receipt |
//! | `POST /v1/native/{region}/{platform}/status` | its native status document | its native receipt |
//! | `POST /v1/transfers` | a canonical transfer request | the transfer |
//! | `GET /v1/transfers/{id}` | | the transfer (its parties only) |
//! | `POST /v1/transfers/{id}/status` | a canonical status update | the transfer |
//! | `GET /v1/transfers?state=&overdue=&since=&until=&limit=&after=` | | the caller's transfers |
//! | `GET /v1/endpoints` | | the registry with each endpoint's delivery health |
//! | `GET /v1/deliveries/dead` | | dead letters (operators only) |
//! | `POST /v1/deliveries/{id}/replay` | | puts a dead letter back in the queue (operators only) |
//! | `GET /v1/datasets/{dataset}/records/{key}` | | one record (keys may contain `/`) |
//! | `PUT /v1/datasets/{dataset}/records/{key}` | `{"version", "body", "deleted"?, "updated_at"?, "force"?}` | the record; its owner only |
//! | `GET /v1/datasets/{dataset}/snapshot?page_token=&page_size=` | | a page of a consistent snapshot and its cursor |
//! | `GET /v1/datasets/{dataset}/changes?cursor=&limit=` | | changes after a cursor, in commit order |
//! | `GET /v1/knowledge?q=&category=&include_expired=&limit=` | | knowledge answers with every word, best first |
//! | `POST /v1/reconcile` | the caller's view `{"transfers": [{"reference", "state"}]}` | every difference |
//!
//! Statuses: 200; 400 a bad document (the native receipt names the field); 403 not yours;
//! 404; 409 a refused transition (naming the current state); 413 too large; 503 the store
//! failed (nothing was done).

pub mod bodies;
pub mod context;
mod datasets;
pub mod grpc;
pub(crate) mod handlers;
pub mod logging;
pub mod refusal;
mod sync_grpc;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;

use crate::engine::Engine;
use crate::security::Identity;

/// The OpenAPI 3 description of this API, served at `/v1/openapi.json` (a test checks it
/// against the routes).
pub const OPENAPI: &str = include_str!("api/openapi.json");

/// Every route, as (method, path template): what the OpenAPI document must describe.
pub const ROUTES: &[(&str, &str)] = &[
    ("post", "/v1/native/{region}/{platform}/transfers"),
    ("post", "/v1/native/{region}/{platform}/status"),
    ("post", "/v1/transfers"),
    ("get", "/v1/transfers"),
    ("get", "/v1/transfers/{id}"),
    ("post", "/v1/transfers/{id}/status"),
    ("get", "/v1/endpoints"),
    ("get", "/v1/deliveries/dead"),
    ("post", "/v1/deliveries/{id}/replay"),
    ("get", "/v1/datasets/{dataset}/records/{key}"),
    ("put", "/v1/datasets/{dataset}/records/{key}"),
    ("get", "/v1/datasets/{dataset}/snapshot"),
    ("get", "/v1/datasets/{dataset}/changes"),
    ("get", "/v1/knowledge"),
    ("post", "/v1/reconcile"),
    ("get", "/v1/openapi.json"),
];

/// The route a request took, as a bounded label: `METHOD /template` from [`ROUTES`] (a
/// dataset key may hold `/`: it is the rest of the path), the method path of a gRPC call to one
/// of the gateway's services, else `other`.
pub fn route_template(method: &axum::http::Method, path: &str) -> String {
    const GRPC_SERVICES: &[&str] =
        &["/liandong.v1.", "/grpc.health.v1.Health/", "/grpc.reflection.v1.", "/grpc.reflection.v1alpha."];
    if GRPC_SERVICES.iter().any(|service| path.starts_with(service)) && path.matches('/').count() == 2 {
        return path.to_string();
    }
    let method = method.as_str().to_ascii_lowercase();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let fits = |template: &str| {
        let parts: Vec<&str> = template.trim_start_matches('/').split('/').collect();
        let rest = parts.last().is_some_and(|last| *last == "{key}");
        let arity = if rest { segments.len() >= parts.len() } else { segments.len() == parts.len() };
        arity && parts.iter().zip(&segments).all(|(part, segment)| part.starts_with('{') || part == segment)
    };
    ROUTES
        .iter()
        .find(|(m, template)| *m == method && fits(template))
        .map_or_else(|| "other".to_string(), |(m, template)| format!("{} {template}", m.to_ascii_uppercase()))
}

/// The largest document accepted.
pub const MAX_BODY: usize = 1 << 20;

/// The caller, as the TLS layer established it: the identity, its URI (made once per
/// connection; it is the rate limiters' key), and where its refusals are recorded.
#[derive(Clone, Debug)]
pub struct Peer {
    pub identity: Identity,
    pub uri: String,
    pub auditor: crate::store::audit::Auditor,
}

impl Peer {
    pub fn new(identity: Identity, auditor: crate::store::audit::Auditor) -> Peer {
        let uri = identity.uri();
        Peer { identity, uri, auditor }
    }
}

/// What the handlers share.
pub struct AppState {
    pub engine: Engine,
    /// A destination failing longer than this (seconds) is reported unreachable.
    pub unreachable_after: std::time::Duration,
    /// Endpoint health, read from the store at most once a second (it is on every submit's
    /// answer; a second's staleness is nothing next to `unreachable_after`).
    pub health: tokio::sync::Mutex<Option<(std::time::Instant, Arc<Vec<crate::store::EndpointHealth>>)>>,
    /// Rate limits per identity.
    pub limits: crate::security::ratelimit::RateLimits,
    /// The shared datasets.
    pub datasets: crate::sync::Datasets,
    /// Set when the gateway begins to shut down: open streams end at once (their clients
    /// resume from their cursors elsewhere) instead of holding the shutdown up.
    pub closing: tokio::sync::watch::Sender<bool>,
    /// How long a stream may be quiet before it sends a heartbeat.
    pub heartbeat: std::time::Duration,
    /// The memory budget of request bodies in flight.
    pub bodies: bodies::BodyBudget,
}

impl AppState {
    pub fn new(engine: Engine, unreachable_after: std::time::Duration) -> AppState {
        let limits = crate::security::ratelimit::RateLimits::new(&engine.config.limits);
        let datasets = crate::sync::Datasets::new(&engine);
        let heartbeat = engine.config.listen.stream_heartbeat;
        let listen = &engine.config.listen;
        let bodies = bodies::BodyBudget::new(listen.body_budget, listen.body_budget_per_identity, listen.body_timeout);
        AppState {
            engine,
            unreachable_after,
            health: tokio::sync::Mutex::new(None),
            limits,
            datasets,
            closing: tokio::sync::watch::Sender::new(false),
            heartbeat,
            bodies,
        }
    }

    /// Takes one call of `kind` from the caller's budget; when it is spent, the refusal saying
    /// how long to wait.
    pub fn limit(&self, peer: &Peer, kind: crate::security::ratelimit::CallKind) -> Result<(), refusal::Refusal> {
        self.limits.check_keyed(&peer.identity, &peer.uri, kind).map_err(|wait| {
            crate::metrics::inc(&crate::metrics::counters().rate_limited);
            refusal::Refusal::limited(wait)
        })
    }

    /// Whether a destination failing since `since` (Unix seconds) has failed longer than
    /// `delivery.unreachable_after` at `now`.
    pub fn failing_too_long(&self, since: i64, now: i64) -> bool {
        std::time::Duration::from_secs((now - since).max(0) as u64) > self.unreachable_after
    }

    /// Endpoint health, at most a second old.
    pub async fn health(&self) -> Arc<Vec<crate::store::EndpointHealth>> {
        let mut cached = self.health.lock().await;
        if let Some((at, health)) = cached.as_ref() {
            if at.elapsed() < std::time::Duration::from_secs(1) {
                return health.clone();
            }
        }
        let health = Arc::new(self.engine.store.endpoint_health().await.unwrap_or_default());
        *cached = Some((std::time::Instant::now(), health.clone()));
        health
    }
}

/// What a request no route takes is answered: a gRPC call (`content-type: application/grpc…`)
/// `UNIMPLEMENTED` as gRPC says; anything else 404 with the canonical error body — never a
/// 200, so a document posted to a mistyped path is not taken for delivered.
pub async fn unknown_route(request: axum::extract::Request) -> axum::response::Response {
    let grpc = request
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    let (method, path) = (request.method().clone(), request.uri().path().to_string());
    if grpc {
        return refusal::Refusal::new(refusal::Reason::NoRoute, format!("no such method {path}")).grpc().into_http();
    }
    refusal::Refusal::new(
        refusal::Reason::NoRoute,
        format!("no route for {method} {path}: the routes are listed at /v1/openapi.json"),
    )
    .into_response()
}

/// The router of the HTTPS API. The caller's [`Peer`] must be added as an extension.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/native/{region}/{platform}/transfers", post(handlers::native_transfer))
        .route("/v1/native/{region}/{platform}/status", post(handlers::native_status))
        .route("/v1/transfers", post(handlers::submit).get(handlers::list))
        .route("/v1/transfers/{id}", get(handlers::get_transfer))
        .route("/v1/transfers/{id}/status", post(handlers::status))
        .route("/v1/endpoints", get(handlers::endpoints))
        .route("/v1/deliveries/dead", get(handlers::dead_letters))
        .route("/v1/deliveries/{id}/replay", post(handlers::replay))
        .route("/v1/datasets/{dataset}/records/{*key}", get(datasets::get_record).put(datasets::put_record))
        .route("/v1/datasets/{dataset}/snapshot", get(datasets::snapshot))
        .route("/v1/datasets/{dataset}/changes", get(datasets::changes))
        .route("/v1/knowledge", get(datasets::search_knowledge))
        .route("/v1/reconcile", post(datasets::reconcile))
        .route("/v1/openapi.json", get(|| async { ([(axum::http::header::CONTENT_TYPE, "application/json")], OPENAPI) }))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(state.clone(), bodies::bounded_bodies))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use axum::http::Method;

    #[test]
    fn routes_are_labelled_by_their_template() {
        let label = |m: Method, p: &str| super::route_template(&m, p);
        assert_eq!(label(Method::POST, "/v1/native/330200/110/transfers"), "POST /v1/native/{region}/{platform}/transfers");
        assert_eq!(label(Method::GET, "/v1/transfers/01J"), "GET /v1/transfers/{id}");
        assert_eq!(label(Method::GET, "/v1/transfers"), "GET /v1/transfers");
        assert_eq!(
            label(Method::PUT, "/v1/datasets/directory/records/330203101/NP03"),
            "PUT /v1/datasets/{dataset}/records/{key}"
        );
        assert_eq!(
            label(Method::POST, "/liandong.v1.TransferService/SubmitTransfer"),
            "/liandong.v1.TransferService/SubmitTransfer"
        );
        assert_eq!(label(Method::GET, "/v1/nothing"), "other");
        assert_eq!(label(Method::POST, "/evil.Service/Method"), "other");
        assert_eq!(label(Method::DELETE, "/v1/transfers/01J"), "other");
    }
}
