//! `liandong.v1.TransferService` over gRPC, with standard health checking and server
//! reflection, served on the same mutual-TLS listener as the HTTPS API (HTTP/2 by ALPN). The
//! caller is the [`Peer`] the TLS layer attached; engine errors become gRPC codes here.

mod sync;
mod transfers;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio_stream::Stream;
use tonic::{Request, Status};

use super::refusal::{Reason, Refusal};
use super::{AppState, Peer};
use crate::engine::EngineError;
use crate::model::EndpointId;
use crate::proto::v1;
use crate::security::ratelimit::CallKind;

/// The stream a `Watch` answers with.
type WatchStream = Pin<Box<dyn Stream<Item = Result<v1::WatchEvent, Status>> + Send>>;

/// How often a watch looks for new events when it has caught up.
/// A stream that has caught up wakes at once when this gateway commits, and looks again at least
/// this often for what others wrote (another replica, an import by the CLI).
const WATCH_POLL: Duration = Duration::from_secs(1);

/// An engine error, refused to `who` (recorded, with `ErrorInfo`, `BadRequest` and `RequestInfo`).
pub(crate) fn refused(who: &Peer, error: EngineError) -> Status {
    Refusal::from_engine(&who.identity, error).grpc()
}

/// A field of the request that is not acceptable.
pub(super) fn invalid(path: &str, expected: impl Into<String>) -> Status {
    Refusal::field(path, expected).grpc()
}

pub(super) fn model_error(e: crate::model::ModelError) -> Status {
    Refusal::from(e).grpc()
}

/// The store failed: nothing was done.
pub(super) fn unavailable(e: crate::store::StoreError) -> Status {
    super::unavailable(e).grpc()
}

/// Takes one call from the caller's budget, or RESOURCE_EXHAUSTED with a `RetryInfo`.
pub(super) fn limit(state: &AppState, peer: &Peer, kind: CallKind) -> Result<(), Status> {
    state.limit(peer, kind).map_err(Refusal::grpc)
}

/// The caller, as the TLS layer established it.
pub(super) fn peer<T>(request: &Request<T>) -> Result<Peer, Status> {
    request
        .extensions()
        .get::<Peer>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("no client certificate"))
}

/// The calling endpoint.
pub(crate) fn caller<T>(request: &Request<T>) -> Result<EndpointId, Status> {
    let peer = peer(request)?;
    peer.identity.endpoint().cloned().ok_or_else(|| {
        Refusal::new(Reason::Identity, format!("forbidden: {} is not an endpoint", peer.identity))
            .grpc()
    })
}

/// A server stream that follows a feed from `cursor`: `next_page` answers a page, the cursor
/// after it and whether more are waiting; when caught up the stream waits for this gateway's
/// next commit (or at most [`WATCH_POLL`], for other writers) and asks again, and after
/// `state.heartbeat` without an item it sends `heartbeat(cursor)` (when the feed has one). It ends when the client goes away, a page fails (with that error), or the
/// gateway begins to shut down (UNAVAILABLE: resume from the last cursor).
pub(super) fn follow<C, T, F, Fut>(
    state: &AppState,
    mut cursor: C,
    heartbeat: impl Fn(&C) -> Option<T> + Send + 'static,
    mut next_page: F,
) -> tokio_stream::wrappers::ReceiverStream<Result<T, Status>>
where
    C: Send + 'static,
    T: Send + 'static,
    F: FnMut(C) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(Vec<T>, C, bool), Status>> + Send,
{
    let (sender, receiver) = tokio::sync::mpsc::channel(64);
    let mut closing = state.closing.subscribe();
    let mut commits = state.engine.store().commits();
    let quiet_limit = state.heartbeat;
    tokio::spawn(async move {
        let mut quiet_since = tokio::time::Instant::now();
        loop {
            if *closing.borrow_and_update() {
                let _ = sender
                    .send(Err(Status::unavailable(
                        "the gateway is shutting down; resume from your last cursor",
                    )))
                    .await;
                return;
            }
            let (items, next, more) = match next_page(cursor).await {
                Ok(page) => page,
                Err(e) => {
                    let _ = sender.send(Err(e)).await;
                    return;
                }
            };
            cursor = next;
            if !items.is_empty() {
                quiet_since = tokio::time::Instant::now();
            }
            for item in items {
                if sender.send(Ok(item)).await.is_err() {
                    return; // the client went away
                }
            }
            if quiet_since.elapsed() >= quiet_limit {
                if let Some(beat) = heartbeat(&cursor) {
                    if sender.send(Ok(beat)).await.is_err() {
                        return;
                    }
                }
                quiet_since = tokio::time::Instant::now();
            }
            if !more {
                // Until this gateway commits, another writer may have, or a heartbeat is due.
                let wait = WATCH_POLL.min(quiet_limit.saturating_sub(quiet_since.elapsed()));
                tokio::select! {
                    changed = commits.changed() => if changed.is_err() { return },
                    _ = tokio::time::sleep(wait) => {}
                    _ = sender.closed() => return,
                    _ = closing.changed() => {}
                }
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(receiver)
}

/// The gRPC routes: the transfer service, health checking and reflection.
pub async fn routes(state: Arc<AppState>) -> axum::Router {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_serving::<v1::transfer_service_server::TransferServiceServer<transfers::Transfers>>()
        .await;
    // Both reflection versions: grpcurl speaks v1, grpcio's Python client still v1alpha.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1().expect("the compiled-in descriptors are valid");
    let reflection_v1alpha =
        reflection().build_v1alpha().expect("the compiled-in descriptors are valid");
    reporter.set_serving::<v1::sync_service_server::SyncServiceServer<sync::Sync>>().await;
    tonic::service::Routes::new(v1::transfer_service_server::TransferServiceServer::new(
        transfers::Transfers { state: state.clone() },
    ))
    .add_service(v1::sync_service_server::SyncServiceServer::new(sync::Sync { state }))
    .add_service(health)
    .add_service(reflection_v1)
    .add_service(reflection_v1alpha)
    .prepare()
    .into_axum_router()
}
