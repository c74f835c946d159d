//! `liandong.v1.TransferService` over gRPC, with standard health checking and server
//! reflection, served on the same mutual-TLS listener as the HTTPS API (HTTP/2 by ALPN). The
//! caller is the [`Peer`] the TLS layer attached; engine errors become gRPC codes here.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::refusal::{Reason, Refusal};
use super::{AppState, Peer};
use crate::engine::EngineError;
use crate::model::{EndpointId, Timestamp};
use crate::proto::v1::{self, transfer_service_server::TransferService};
use crate::security::ratelimit::CallKind;
use crate::store::{FeedCursor, TransferFilter, Write, WriteResult};
use crate::sync::reconcile::{reconcile, Claim};

/// How often a watch looks for new events when it has caught up.
const WATCH_POLL: Duration = Duration::from_millis(100);

/// An engine error, refused to `who` (recorded, with `ErrorInfo`, `BadRequest` and `RequestInfo`).
fn refused(who: &Peer, error: EngineError) -> Status {
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
    super::handlers::unavailable(e).grpc()
}

/// Takes one call from the caller's budget, or RESOURCE_EXHAUSTED with a `RetryInfo`.
pub(super) fn limit(state: &AppState, peer: &Peer, kind: CallKind) -> Result<(), Status> {
    state.limit(peer, kind).map_err(Refusal::grpc)
}

/// The caller, as the TLS layer established it.
pub(super) fn peer<T>(request: &Request<T>) -> Result<Peer, Status> {
    request.extensions().get::<Peer>().cloned().ok_or_else(|| Status::unauthenticated("no client certificate"))
}

/// The calling endpoint.
fn caller<T>(request: &Request<T>) -> Result<EndpointId, Status> {
    let peer = peer(request)?;
    peer.identity
        .endpoint()
        .cloned()
        .ok_or_else(|| Refusal::new(Reason::Identity, format!("forbidden: {} is not an endpoint", peer.identity)).grpc())
}

/// A server stream that follows a feed from `cursor`: `next_page` answers a page, the cursor
/// after it and whether more are waiting; when caught up the stream waits [`WATCH_POLL`] and
/// asks again, and after `state.heartbeat` without an item it sends `heartbeat(cursor)` (when
/// the feed has one). It ends when the client goes away, a page fails (with that error), or the
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
    let quiet_limit = state.heartbeat;
    tokio::spawn(async move {
        let mut quiet_since = tokio::time::Instant::now();
        loop {
            if *closing.borrow_and_update() {
                let _ = sender.send(Err(Status::unavailable("the gateway is shutting down; resume from your last cursor"))).await;
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
                tokio::select! {
                    _ = tokio::time::sleep(WATCH_POLL) => {}
                    _ = sender.closed() => return,
                    _ = closing.changed() => {}
                }
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(receiver)
}

/// The service.
pub struct Transfers {
    pub state: Arc<AppState>,
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<v1::WatchEvent, Status>> + Send>>;

#[tonic::async_trait]
impl TransferService for Transfers {
    async fn submit_transfer(
        &self,
        request: Request<v1::SubmitTransferRequest>,
    ) -> Result<Response<v1::SubmitTransferResponse>, Status> {
        let me = caller(&request)?;
        let who = peer(&request)?;
        let mut message = request.into_inner().request.ok_or_else(|| invalid("request", crate::model::MISSING))?;
        // What the certificate already says need not be repeated: the sender, and its case.
        if message.from.is_empty() {
            message.from = me.to_string();
        }
        if let Some(case) = message.case.as_mut() {
            let origin = case.origin.get_or_insert_with(Default::default);
            if origin.endpoint.is_empty() {
                origin.endpoint = me.to_string();
            }
            if case.case_id.is_empty() && !origin.local_id.is_empty() {
                case.case_id = crate::model::Case::id_for(&me, &origin.local_id);
            }
        }
        let submitted = crate::model::TransferRequest::try_from(message).map_err(model_error)?;
        limit(&self.state, &who, CallKind::for_submission(submitted.case.urgency))?;
        let submission = self.state.engine.submit(&me, submitted).await.map_err(|e| refused(&who, e))?;
        let reachable = super::handlers::reachable(&self.state, &submission.transfer.to).await;
        Ok(Response::new(v1::SubmitTransferResponse {
            transfer: Some(submission.transfer.into()),
            created: submission.created,
            destination_reachable: reachable,
        }))
    }

    async fn get_transfer(&self, request: Request<v1::GetTransferRequest>) -> Result<Response<v1::Transfer>, Status> {
        let who = peer(&request)?;
        limit(&self.state, &who, CallKind::Read)?;
        let id = request.into_inner().transfer_id;
        let transfer = self.state.engine.transfer_for(&who.identity, &id).await.map_err(|e| refused(&who, e))?;
        Ok(Response::new(transfer.into()))
    }

    async fn update_status(&self, request: Request<v1::UpdateStatusRequest>) -> Result<Response<v1::Transfer>, Status> {
        let me = caller(&request)?;
        let who = peer(&request)?;
        let mut message = request.into_inner().update.ok_or_else(|| invalid("update", crate::model::MISSING))?;
        if message.by.is_empty() {
            message.by = me.to_string();
        }
        let update = crate::model::StatusUpdate::try_from(message).map_err(model_error)?;
        limit(&self.state, &who, CallKind::Status)?;
        let (transfer, _) = self.state.engine.update_status(&me, update).await.map_err(|e| refused(&who, e))?;
        Ok(Response::new(transfer.into()))
    }

    async fn list_transfers(
        &self,
        request: Request<v1::ListTransfersRequest>,
    ) -> Result<Response<v1::ListTransfersResponse>, Status> {
        let who = peer(&request)?;
        limit(&self.state, &who, CallKind::Read)?;
        let query = request.into_inner();
        if let (Some(me), false) = (who.identity.endpoint(), query.endpoint.is_empty()) {
            if query.endpoint != me.to_string() {
                let message = format!("forbidden: {me} may list only its own transfers");
                return Err(Refusal::new(Reason::Identity, message).grpc());
            }
        }
        let state = match query.state {
            0 => None,
            n => Some(crate::proto::state_from_proto(n, "state").map_err(model_error)?),
        };
        if !query.page_token.is_empty() && query.page_token.parse::<ulid::Ulid>().is_err() {
            return Err(invalid("page_token", format!("a next_page_token this gateway gave, got {:?}", query.page_token)));
        }
        let page = if query.page_size == 0 { 100 } else { i64::from(query.page_size.min(500)) };
        let filter = TransferFilter {
            party: (!query.endpoint.is_empty()).then_some(query.endpoint),
            state,
            overdue: query.overdue,
            since: query.since.map(|t| t.seconds),
            until: query.until.map(|t| t.seconds),
            limit: page,
            after: (!query.page_token.is_empty()).then_some(query.page_token),
        };
        let (transfers, next) = self.state.engine.transfers_for(&who.identity, filter).await.map_err(|e| refused(&who, e))?;
        let next = next.unwrap_or_default();
        Ok(Response::new(v1::ListTransfersResponse {
            transfers: transfers.into_iter().map(Into::into).collect(),
            next_page_token: next,
        }))
    }

    type WatchStream = WatchStream;

    async fn watch(&self, request: Request<v1::WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let who = peer(&request)?;
        limit(&self.state, &who, CallKind::Read)?;
        let message = request.into_inner();
        let store = &self.state.engine.store;
        let cursor = match (message.from_now, message.cursor.is_empty()) {
            (true, false) => return Err(invalid("cursor", "a cursor or from_now, not both")),
            (true, true) => store.feed_end(true).await.map_err(unavailable)?,
            (false, _) => {
                let cursor =
                    FeedCursor::decode(&message.cursor).map_err(|e| invalid("cursor", e.trim_start_matches("cursor: ")))?;
                if cursor > store.feed_end(false).await.map_err(unavailable)? {
                    let given = &message.cursor;
                    return Err(invalid("cursor", format!("a cursor this gateway gave; {given:?} is past the end of the feed")));
                }
                cursor
            }
        };
        // Refuse at once, not in the stream, when the caller may not watch at all.
        self.state.engine.feed_for(&who.identity, cursor, 1).await.map_err(|e| refused(&who, e))?;
        let engine = self.state.engine.clone();
        let heartbeat =
            |cursor: &FeedCursor| Some(v1::WatchEvent { cursor: cursor.encode(), kind: "heartbeat".to_string(), transfer: None });
        let stream = follow(&self.state, cursor, heartbeat, move |cursor| {
            let (engine, who) = (engine.clone(), who.clone());
            async move {
                let (events, next, full) = engine.feed_for(&who.identity, cursor, 200).await.map_err(|e| refused(&who, e))?;
                let messages = events
                    .into_iter()
                    .map(|event| v1::WatchEvent {
                        cursor: event.cursor.encode(),
                        kind: event.kind,
                        transfer: Some(event.transfer.into()),
                    })
                    .collect();
                Ok((messages, next, full))
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn acknowledge(&self, request: Request<v1::AcknowledgeRequest>) -> Result<Response<v1::AcknowledgeResponse>, Status> {
        let me = caller(&request)?.to_string();
        let who = peer(&request)?;
        limit(&self.state, &who, CallKind::Status)?;
        let mut acknowledged = 0;
        for transfer_id in request.into_inner().transfer_ids {
            let write = Write::Acknowledge { transfer_id, destination: me.clone(), at: Timestamp::now().unix_seconds() };
            if let WriteResult::Done(true) = self.state.engine.store.write(write).await.map_err(unavailable)? {
                acknowledged += 1;
            }
        }
        Ok(Response::new(v1::AcknowledgeResponse { acknowledged }))
    }

    async fn reconcile(&self, request: Request<v1::ReconcileRequest>) -> Result<Response<v1::ReconcileResponse>, Status> {
        let me = caller(&request)?;
        let who = peer(&request)?;
        limit(&self.state, &who, CallKind::Read)?;
        let message = request.into_inner();
        let claims = message
            .transfers
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                let state = crate::proto::state_from_proto(c.state, &format!("transfers[{i}].state")).map_err(model_error)?;
                Ok(Claim { reference: c.reference, state })
            })
            .collect::<Result<Vec<_>, Status>>()?;
        let report =
            reconcile(&self.state.engine.store, &me, &claims, message.since.map(|t| t.seconds), message.until.map(|t| t.seconds))
                .await
                .map_err(unavailable)?;
        let state = |s: Option<crate::model::State>| s.map_or(0, |s| crate::proto::state_to_proto(s) as i32);
        Ok(Response::new(v1::ReconcileResponse {
            matched: report.matched as u32,
            differences: report
                .differences
                .into_iter()
                .map(|d| v1::reconcile_response::Difference {
                    kind: serde_json::to_value(d.kind).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default(),
                    reference: d.reference,
                    transfer_id: d.transfer_id.unwrap_or_default(),
                    gateway_state: state(d.gateway_state),
                    endpoint_state: state(d.endpoint_state),
                    note: d.note,
                })
                .collect(),
        }))
    }
}

/// The gRPC routes: the transfer service, health checking and reflection.
pub async fn routes(state: Arc<AppState>) -> axum::Router {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_serving::<v1::transfer_service_server::TransferServiceServer<Transfers>>().await;
    // Both reflection versions: grpcurl speaks v1, grpcio's Python client still v1alpha.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1().expect("the compiled-in descriptors are valid");
    let reflection_v1alpha = reflection().build_v1alpha().expect("the compiled-in descriptors are valid");
    reporter.set_serving::<v1::sync_service_server::SyncServiceServer<super::sync_grpc::Sync>>().await;
    tonic::service::Routes::new(v1::transfer_service_server::TransferServiceServer::new(Transfers { state: state.clone() }))
        .add_service(v1::sync_service_server::SyncServiceServer::new(super::sync_grpc::Sync { state }))
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .prepare()
        .into_axum_router()
}
