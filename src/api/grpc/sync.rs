//! `liandong.v1.SyncService`: the shared datasets over gRPC (see [`crate::sync`]).

use std::pin::Pin;
use std::sync::Arc;

use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::{follow, limit, peer};
use crate::api::AppState;
use crate::proto::v1::{self, sync_service_server::SyncService};
use crate::security::ratelimit::CallKind;
use crate::store::PutOutcome;
use crate::sync::{Dataset, PutRequest, SyncError};

/// A dataset error, refused to `peer` (recorded, with `ErrorInfo`, `BadRequest` and `RequestInfo`).
fn status_of(peer: &crate::api::Peer, error: SyncError) -> Status {
    crate::api::refusal::Refusal::from_sync(&peer.identity, error).grpc()
}

/// A stored record as protobuf (a record that no longer reads is a bug: DATA_LOSS).
fn proto_record(doc: &crate::model::RecordDoc) -> Result<v1::Record, Status> {
    v1::Record::try_from(doc)
        .map_err(|e| Status::data_loss(format!("a stored record does not read: {e}")))
}

fn proto_changes(
    changes: Vec<(String, crate::model::RecordDoc)>,
) -> Result<Vec<v1::Change>, Status> {
    changes
        .into_iter()
        .map(|(cursor, record)| Ok(v1::Change { cursor, record: Some(proto_record(&record)?) }))
        .collect()
}

fn page(requested: u32) -> i64 {
    if requested == 0 {
        1000
    } else {
        i64::from(requested)
    }
}

/// The service.
pub struct Sync {
    pub state: Arc<AppState>,
}

type ChangeStream = Pin<Box<dyn Stream<Item = Result<v1::Change, Status>> + Send>>;

#[tonic::async_trait]
impl SyncService for Sync {
    async fn put(
        &self,
        request: Request<v1::PutRequest>,
    ) -> Result<Response<v1::PutResponse>, Status> {
        let who = peer(&request)?;
        limit(&self.state, &who, CallKind::Status)?;
        let message = request.into_inner();
        let dataset: Dataset = message.dataset.parse().map_err(|e| status_of(&who, e))?;
        let body = if message.body_json.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&message.body_json).map_err(|e| {
                status_of(&who, SyncError::invalid("body_json", format!("expected JSON: {e}")))
            })?
        };
        let updated_at = message
            .updated_at
            .map(|t| {
                crate::model::Timestamp::from_unix_seconds(t.seconds)
                    .ok_or_else(|| SyncError::invalid("updated_at", "out of range"))
            })
            .transpose()
            .map_err(|e| status_of(&who, e))?;
        let put = PutRequest {
            version: message.version,
            deleted: message.deleted,
            body,
            updated_at,
            force: message.force,
        };
        let (record, outcome) = self
            .state
            .datasets
            .put(&who.identity, dataset, &message.key, put)
            .await
            .map_err(|e| status_of(&who, e))?;
        Ok(Response::new(v1::PutResponse {
            record: Some(record.into()),
            changed: outcome == PutOutcome::Written,
        }))
    }

    async fn get(&self, request: Request<v1::GetRequest>) -> Result<Response<v1::Record>, Status> {
        let who = peer(&request)?;
        limit(&self.state, &who, CallKind::Read)?;
        let message = request.into_inner();
        let dataset: Dataset = message.dataset.parse().map_err(|e| status_of(&who, e))?;
        let record = self
            .state
            .datasets
            .get(&who.identity, dataset, &message.key)
            .await
            .map_err(|e| status_of(&who, e))?;
        Ok(Response::new(record.into()))
    }

    async fn snapshot(
        &self,
        request: Request<v1::SnapshotRequest>,
    ) -> Result<Response<v1::SnapshotResponse>, Status> {
        let who = peer(&request)?;
        limit(&self.state, &who, CallKind::Read)?;
        let message = request.into_inner();
        let dataset: Dataset = message.dataset.parse().map_err(|e| status_of(&who, e))?;
        let snapshot = self
            .state
            .datasets
            .snapshot(&who.identity, dataset, &message.page_token, page(message.page_size))
            .await
            .map_err(|e| status_of(&who, e))?;
        Ok(Response::new(v1::SnapshotResponse {
            records: snapshot.records.iter().map(proto_record).collect::<Result<_, _>>()?,
            next_page_token: snapshot.next_page_token,
            cursor: snapshot.cursor,
        }))
    }

    async fn changes(
        &self,
        request: Request<v1::ChangesRequest>,
    ) -> Result<Response<v1::ChangesResponse>, Status> {
        let who = peer(&request)?;
        limit(&self.state, &who, CallKind::Read)?;
        let message = request.into_inner();
        let dataset: Dataset = message.dataset.parse().map_err(|e| status_of(&who, e))?;
        let changes = self
            .state
            .datasets
            .changes(&who.identity, dataset, &message.cursor, page(message.limit))
            .await
            .map_err(|e| status_of(&who, e))?;
        Ok(Response::new(v1::ChangesResponse {
            changes: proto_changes(changes.changes)?,
            cursor: changes.cursor,
            more: changes.more,
        }))
    }

    async fn search(
        &self,
        request: Request<v1::SearchRequest>,
    ) -> Result<Response<v1::SearchResponse>, Status> {
        let who = peer(&request)?;
        limit(&self.state, &who, CallKind::Read)?;
        let message = request.into_inner();
        let query = crate::sync::knowledge::KnowledgeQuery {
            q: message.q,
            category: Some(message.category).filter(|c| !c.is_empty()),
            include_expired: message.include_expired,
            limit: message.limit as usize,
        };
        let answer = self
            .state
            .datasets
            .search(&who.identity, &query)
            .await
            .map_err(|e| status_of(&who, e))?;
        Ok(Response::new(v1::SearchResponse {
            records: answer.records.into_iter().map(Into::into).collect(),
            total: answer.total as u64,
        }))
    }

    type WatchStream = ChangeStream;

    async fn watch(
        &self,
        request: Request<v1::ChangesRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let who = peer(&request)?;
        limit(&self.state, &who, CallKind::Read)?;
        let message = request.into_inner();
        let dataset: Dataset = message.dataset.parse().map_err(|e| status_of(&who, e))?;
        // Refuse at once, not in the stream, when the caller may not read it or the cursor is bad.
        self.state
            .datasets
            .changes(&who.identity, dataset, &message.cursor, 1)
            .await
            .map_err(|e| status_of(&who, e))?;
        let datasets = self.state.datasets.clone();
        let stream = follow(
            &self.state,
            message.cursor,
            |_: &String| None,
            move |cursor: String| {
                let (datasets, who) = (datasets.clone(), who.clone());
                async move {
                    let page = datasets
                        .changes(&who.identity, dataset, &cursor, 500)
                        .await
                        .map_err(|e| status_of(&who, e))?;
                    let changes = proto_changes(page.changes)?;
                    Ok((changes, page.cursor, page.more))
                }
            },
        );
        Ok(Response::new(Box::pin(stream)))
    }
}
