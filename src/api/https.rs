//! The HTTPS front: native documents from provincial systems, canonical JSON for everything
//! else, on the routes below. Its handlers answer and refuse through the helpers above it
//! ([`super::refusal`], [`super::AppState`]), as the gRPC front does.
//!
//! | route | body | answer |
//! |---|---|---|
//! | `POST /v1/native/{region}/{platform}/transfers` | the endpoint's native transfer document | its native receipt |
//! | `POST /v1/native/{region}/{platform}/status` | its native status document | its native receipt |
//! | `POST /v1/transfers` | a canonical transfer request | the transfer |
//! | `GET /v1/transfers/{id}` | | the transfer (its parties only) |
//! | `POST /v1/transfers/{id}/status` | a canonical status update | the transfer |
//! | `GET /v1/transfers/{id}/evidence` | | its audit entries and deliveries with their native documents (its readers) |
//! | `GET /v1/whoami` | | the caller's identity, and the regions an agency is granted |
//! | `GET /v1/transfers?state=&overdue=&since=&until=&limit=&after=` | | the caller's transfers |
//! | `GET /v1/endpoints` | | the registry with each endpoint's delivery health |
//! | `GET /v1/deliveries/dead` | | dead letters (operators only) |
//! | `GET /v1/certificates` | | the certificates served and trusted, their expiry, the CRL's next update (operators only) |
//! | `POST /v1/deliveries/{id}/replay` | | puts a dead letter back in the queue (operators only) |
//! | `GET /v1/datasets/{dataset}/records/{key}` | | one record (keys may contain `/`) |
//! | `PUT /v1/datasets/{dataset}/records/{key}` | `{"version", "body", "deleted"?, "updated_at"?, "force"?}` | the record; its owner only |
//! | `GET /v1/datasets/{dataset}/snapshot?page_token=&page_size=` | | a page of a consistent snapshot and its cursor |
//! | `GET /v1/datasets/{dataset}/changes?cursor=&limit=` | | changes after a cursor, in commit order |
//! | `GET /v1/knowledge?q=&category=&include_expired=&limit=` | | knowledge answers with every word, best first |
//! | `GET /v1/directory/coverage?region=&category=` | | the directory's gaps in a region: cells falling back to a coarser unit or with none |
//! | `POST /v1/reconcile` | the caller's view `{"transfers": [{"reference", "state"}]}` | every difference |
//! | `GET /v1/stats?region=&category=&direction=&since=&until=` | | the figures ([`crate::stats`]) of the transfers the caller may read |
//! | `GET /v1/events?cursor=` | | the change feed as server-sent events, in batches (a wall) |
//!
//! The console's pages are served beside them (`/console/`, [`super::console`]).
//!
//! Statuses: 200; 400 a bad document (the native receipt names the field); 403 not yours;
//! 404; 409 a refused transition (naming the current state); 413 too large; 503 the store
//! failed (nothing was done).

pub mod bodies;
mod datasets;
mod events;
mod linkage;
mod transfers;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;

use super::refusal::{Reason, Refusal};
use super::{console, AppState, Peer};
use crate::model::EndpointId;

/// The OpenAPI 3 description of this API, served at `/v1/openapi.json` (a test checks it
/// against the routes).
pub const OPENAPI: &str = include_str!("openapi.json");

/// Every route, as (method, path template): what the OpenAPI document must describe.
pub const ROUTES: &[(&str, &str)] = &[
    ("post", "/v1/native/{region}/{platform}/transfers"),
    ("post", "/v1/native/{region}/{platform}/status"),
    ("post", "/v1/transfers"),
    ("get", "/v1/transfers"),
    ("get", "/v1/transfers/{id}"),
    ("post", "/v1/transfers/{id}/status"),
    ("get", "/v1/transfers/{id}/evidence"),
    ("post", "/v1/transfers/{id}/urge"),
    ("post", "/v1/transfers/{id}/extension"),
    ("post", "/v1/transfers/{id}/extension/decision"),
    ("post", "/v1/transfers/{id}/dispute"),
    ("post", "/v1/transfers/{id}/dispute/notes"),
    ("post", "/v1/transfers/{id}/dispute/decision"),
    ("get", "/v1/whoami"),
    ("get", "/v1/endpoints"),
    ("get", "/v1/deliveries/dead"),
    ("get", "/v1/certificates"),
    ("post", "/v1/deliveries/{id}/replay"),
    ("get", "/v1/datasets/{dataset}/records/{key}"),
    ("put", "/v1/datasets/{dataset}/records/{key}"),
    ("get", "/v1/datasets/{dataset}/snapshot"),
    ("get", "/v1/datasets/{dataset}/changes"),
    ("get", "/v1/knowledge"),
    ("get", "/v1/directory/coverage"),
    ("post", "/v1/reconcile"),
    ("get", "/v1/stats"),
    ("get", "/v1/events"),
    ("get", "/v1/openapi.json"),
];

/// The route a request took, as a bounded label: `METHOD /template` from [`ROUTES`] (a
/// dataset key may hold `/`: it is the rest of the path), the method path of a gRPC call to one
/// of the gateway's services, else `other`.
pub fn route_template(method: &axum::http::Method, path: &str) -> String {
    const GRPC_SERVICES: &[&str] = &[
        "/liandong.v1.",
        "/grpc.health.v1.Health/",
        "/grpc.reflection.v1.",
        "/grpc.reflection.v1alpha.",
    ];
    if GRPC_SERVICES.iter().any(|service| path.starts_with(service))
        && path.matches('/').count() == 2
    {
        return path.to_string();
    }
    let method = method.as_str().to_ascii_lowercase();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let fits = |template: &str| {
        let parts: Vec<&str> = template.trim_start_matches('/').split('/').collect();
        let rest = parts.last().is_some_and(|last| *last == "{key}");
        let arity =
            if rest { segments.len() >= parts.len() } else { segments.len() == parts.len() };
        arity
            && parts
                .iter()
                .zip(&segments)
                .all(|(part, segment)| part.starts_with('{') || part == segment)
    };
    ROUTES.iter().find(|(m, template)| *m == method && fits(template)).map_or_else(
        || "other".to_string(),
        |(m, template)| format!("{} {template}", m.to_ascii_uppercase()),
    )
}

fn caller_endpoint(peer: &Peer) -> Result<&EndpointId, Refusal> {
    peer.identity.endpoint().ok_or_else(|| {
        Refusal::new(Reason::Identity, format!("forbidden: {} is not an endpoint", peer.identity))
    })
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
        return Refusal::new(Reason::NoRoute, format!("no such method {path}")).grpc().into_http();
    }
    Refusal::new(
        Reason::NoRoute,
        format!("no route for {method} {path}: the routes are listed at /v1/openapi.json"),
    )
    .into_response()
}

/// The router of the HTTPS API. The caller's [`Peer`] must be added as an extension.
/// The `POST` route of one linkage action ([`linkage::act`]).
fn linkage_route(kind: linkage::Kind) -> axum::routing::MethodRouter<Arc<AppState>> {
    post(move |state, peer, id, body| linkage::act(kind, state, peer, id, body))
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/native/{region}/{platform}/transfers", post(transfers::native_transfer))
        .route("/v1/native/{region}/{platform}/status", post(transfers::native_status))
        .route("/v1/transfers", post(transfers::submit).get(transfers::list))
        .route("/v1/transfers/{id}", get(transfers::get_transfer))
        .route("/v1/transfers/{id}/status", post(transfers::status))
        .route("/v1/transfers/{id}/evidence", get(transfers::evidence))
        .route("/v1/transfers/{id}/urge", linkage_route(linkage::Kind::Urge))
        .route("/v1/transfers/{id}/extension", linkage_route(linkage::Kind::RequestExtension))
        .route(
            "/v1/transfers/{id}/extension/decision",
            linkage_route(linkage::Kind::DecideExtension),
        )
        .route("/v1/transfers/{id}/dispute", linkage_route(linkage::Kind::OpenDispute))
        .route("/v1/transfers/{id}/dispute/notes", linkage_route(linkage::Kind::NoteDispute))
        .route("/v1/transfers/{id}/dispute/decision", linkage_route(linkage::Kind::DecideDispute))
        .route("/v1/whoami", get(transfers::whoami))
        .route("/v1/endpoints", get(transfers::endpoints))
        .route("/v1/deliveries/dead", get(transfers::dead_letters))
        .route("/v1/certificates", get(transfers::certificates))
        .route("/v1/deliveries/{id}/replay", post(transfers::replay))
        .route(
            "/v1/datasets/{dataset}/records/{*key}",
            get(datasets::get_record).put(datasets::put_record),
        )
        .route("/v1/datasets/{dataset}/snapshot", get(datasets::snapshot))
        .route("/v1/datasets/{dataset}/changes", get(datasets::changes))
        .route("/v1/knowledge", get(datasets::search_knowledge))
        .route("/v1/directory/coverage", get(datasets::coverage))
        .route("/v1/reconcile", post(datasets::reconcile))
        .route("/v1/stats", get(transfers::stats))
        .route("/v1/events", get(events::events))
        .route("/", get(console::to_console))
        .route("/console", get(console::to_console))
        .route("/console/", get(console::index))
        .route("/console/{*file}", get(console::file))
        .route(
            "/v1/openapi.json",
            get(|| async { ([(axum::http::header::CONTENT_TYPE, "application/json")], OPENAPI) }),
        )
        .layer(DefaultBodyLimit::max(super::MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(state.clone(), bodies::bounded_bodies))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use axum::http::Method;

    #[test]
    fn routes_are_labelled_by_their_template() {
        let label = |m: Method, p: &str| super::route_template(&m, p);
        assert_eq!(
            label(Method::POST, "/v1/native/330200/110/transfers"),
            "POST /v1/native/{region}/{platform}/transfers"
        );
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
