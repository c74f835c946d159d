//! `liandong.v1.TransferService`: submit, read, report status, list, watch, acknowledge and
//! reconcile transfers, as the engine does them for the HTTPS front.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{caller, follow, invalid, limit, model_error, peer, refused, unavailable, WatchStream};
use crate::api::refusal::{Reason, Refusal};
use crate::api::AppState;
use crate::model::Timestamp;
use crate::proto::v1::{self, transfer_service_server::TransferService};
use crate::security::ratelimit::CallKind;
use crate::store::{FeedCursor, TransferFilter, Write, WriteResult};
use crate::sync::reconcile::{reconcile, Claim};

/// The service.
pub struct Transfers {
    pub state: Arc<AppState>,
}

impl Transfers {
    /// A linkage action by the caller (an endpoint party or a linkage office), answered with
    /// the transfer after it.
    async fn act<T>(
        &self,
        request: Request<T>,
        transfer_id: impl FnOnce(&T) -> String,
        action: impl FnOnce(T) -> Result<crate::model::linkage::Action, Status>,
    ) -> Result<Response<v1::Transfer>, Status> {
        let who = peer(&request)?;
        limit(&self.state, &who, CallKind::Status)?;
        let message = request.into_inner();
        let id = transfer_id(&message);
        let action = action(message)?;
        let transfer = self
            .state
            .engine
            .act(&who.identity, &id, action, Timestamp::now())
            .await
            .map_err(|e| refused(&who, e))?;
        Ok(Response::new(transfer.into()))
    }
}

#[tonic::async_trait]
impl TransferService for Transfers {
    async fn urge(
        &self,
        request: Request<v1::UrgeRequest>,
    ) -> Result<Response<v1::Transfer>, Status> {
        use crate::model::linkage::Action;
        self.act(request, |m| m.transfer_id.clone(), |m| Ok(Action::Urge { note: m.note })).await
    }

    async fn request_extension(
        &self,
        request: Request<v1::RequestExtensionRequest>,
    ) -> Result<Response<v1::Transfer>, Status> {
        use crate::model::linkage::Action;
        self.act(
            request,
            |m| m.transfer_id.clone(),
            |m| {
                let until = m.until.ok_or_else(|| invalid("until", crate::model::MISSING))?;
                let until = Timestamp::from_unix_seconds(until.seconds)
                    .ok_or_else(|| invalid("until", "expected a time"))?;
                Ok(Action::RequestExtension { until, reason: m.reason })
            },
        )
        .await
    }

    async fn decide_extension(
        &self,
        request: Request<v1::DecideExtensionRequest>,
    ) -> Result<Response<v1::Transfer>, Status> {
        use crate::model::linkage::Action;
        self.act(
            request,
            |m| m.transfer_id.clone(),
            |m| Ok(Action::DecideExtension { grant: m.grant, note: m.note }),
        )
        .await
    }

    async fn open_dispute(
        &self,
        request: Request<v1::OpenDisputeRequest>,
    ) -> Result<Response<v1::Transfer>, Status> {
        use crate::model::linkage::Action;
        self.act(request, |m| m.transfer_id.clone(), |m| Ok(Action::OpenDispute { note: m.note }))
            .await
    }

    async fn note_dispute(
        &self,
        request: Request<v1::NoteDisputeRequest>,
    ) -> Result<Response<v1::Transfer>, Status> {
        use crate::model::linkage::Action;
        self.act(
            request,
            |m| m.transfer_id.clone(),
            |m| Ok(Action::NoteDispute { note: m.note, call_ref: m.call_ref }),
        )
        .await
    }

    async fn decide_dispute(
        &self,
        request: Request<v1::DecideDisputeRequest>,
    ) -> Result<Response<v1::Transfer>, Status> {
        use crate::model::linkage::Action;
        self.act(
            request,
            |m| m.transfer_id.clone(),
            |m| {
                let outcome =
                    m.outcome.trim().parse().map_err(|e: String| invalid("outcome", e))?;
                Ok(Action::DecideDispute { outcome, note: m.note })
            },
        )
        .await
    }

    async fn submit_transfer(
        &self,
        request: Request<v1::SubmitTransferRequest>,
    ) -> Result<Response<v1::SubmitTransferResponse>, Status> {
        let me = caller(&request)?;
        let who = peer(&request)?;
        let mut message = request
            .into_inner()
            .request
            .ok_or_else(|| invalid("request", crate::model::MISSING))?;
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
        let submission =
            self.state.engine.submit(&me, submitted).await.map_err(|e| refused(&who, e))?;
        let reachable = crate::api::reachable(&self.state, &submission.transfer.to).await;
        Ok(Response::new(v1::SubmitTransferResponse {
            transfer: Some(submission.transfer.into()),
            created: submission.created,
            destination_reachable: reachable,
        }))
    }

    async fn get_transfer(
        &self,
        request: Request<v1::GetTransferRequest>,
    ) -> Result<Response<v1::Transfer>, Status> {
        let who = peer(&request)?;
        limit(&self.state, &who, CallKind::Read)?;
        let id = request.into_inner().transfer_id;
        let transfer = self
            .state
            .engine
            .transfer_for(&who.identity, &id)
            .await
            .map_err(|e| refused(&who, e))?;
        Ok(Response::new(transfer.into()))
    }

    async fn update_status(
        &self,
        request: Request<v1::UpdateStatusRequest>,
    ) -> Result<Response<v1::Transfer>, Status> {
        let me = caller(&request)?;
        let who = peer(&request)?;
        let mut message =
            request.into_inner().update.ok_or_else(|| invalid("update", crate::model::MISSING))?;
        if message.by.is_empty() {
            message.by = me.to_string();
        }
        let update = crate::model::StatusUpdate::try_from(message).map_err(model_error)?;
        limit(&self.state, &who, CallKind::Status)?;
        let (transfer, _) =
            self.state.engine.update_status(&me, update).await.map_err(|e| refused(&who, e))?;
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
            return Err(invalid(
                "page_token",
                format!("a next_page_token this gateway gave, got {:?}", query.page_token),
            ));
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
            reference: (!query.reference.is_empty()).then(|| query.reference.clone()),
            phone: match query.phone.as_str() {
                "" => None,
                given => Some(
                    crate::model::phone::normalize(given)
                        .map_err(|e| invalid("phone", e.to_string()))?,
                ),
            },
            pending: match query.pending.as_str() {
                "" => None,
                given => Some(given.parse().map_err(|e: String| invalid("pending", e))?),
            },
        };
        let (transfers, next) = self
            .state
            .engine
            .transfers_for(&who.identity, filter)
            .await
            .map_err(|e| refused(&who, e))?;
        let next = next.unwrap_or_default();
        Ok(Response::new(v1::ListTransfersResponse {
            transfers: transfers.into_iter().map(Into::into).collect(),
            next_page_token: next,
        }))
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<v1::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let who = peer(&request)?;
        limit(&self.state, &who, CallKind::Read)?;
        let message = request.into_inner();
        let store = &self.state.engine.store();
        let cursor = match (message.from_now, message.cursor.is_empty()) {
            (true, false) => return Err(invalid("cursor", "a cursor or from_now, not both")),
            (true, true) => store.feed_end(true).await.map_err(unavailable)?,
            (false, _) => {
                let cursor = FeedCursor::decode(&message.cursor)
                    .map_err(|e| invalid("cursor", e.trim_start_matches("cursor: ")))?;
                if cursor > store.feed_end(false).await.map_err(unavailable)? {
                    let given = &message.cursor;
                    return Err(invalid(
                        "cursor",
                        format!(
                            "a cursor this gateway gave; {given:?} is past the end of the feed"
                        ),
                    ));
                }
                cursor
            }
        };
        // Refuse at once, not in the stream, when the caller may not watch at all.
        self.state.engine.feed_for(&who.identity, cursor, 1).await.map_err(|e| refused(&who, e))?;
        let engine = self.state.engine.clone();
        let heartbeat = |cursor: &FeedCursor| {
            Some(v1::WatchEvent {
                cursor: cursor.encode(),
                kind: "heartbeat".to_string(),
                transfer: None,
            })
        };
        let stream = follow(&self.state, cursor, heartbeat, move |cursor| {
            let (engine, who) = (engine.clone(), who.clone());
            async move {
                let (events, next, full) = engine
                    .feed_for(&who.identity, cursor, 200)
                    .await
                    .map_err(|e| refused(&who, e))?;
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

    async fn acknowledge(
        &self,
        request: Request<v1::AcknowledgeRequest>,
    ) -> Result<Response<v1::AcknowledgeResponse>, Status> {
        let me = caller(&request)?.to_string();
        let who = peer(&request)?;
        limit(&self.state, &who, CallKind::Status)?;
        let mut acknowledged = 0;
        for transfer_id in request.into_inner().transfer_ids {
            let write = Write::Acknowledge {
                transfer_id,
                destination: me.clone(),
                at: Timestamp::now().unix_seconds(),
            };
            if let WriteResult::Done(true) =
                self.state.engine.store().write(write).await.map_err(unavailable)?
            {
                acknowledged += 1;
            }
        }
        Ok(Response::new(v1::AcknowledgeResponse { acknowledged }))
    }

    async fn reconcile(
        &self,
        request: Request<v1::ReconcileRequest>,
    ) -> Result<Response<v1::ReconcileResponse>, Status> {
        let me = caller(&request)?;
        let who = peer(&request)?;
        limit(&self.state, &who, CallKind::Read)?;
        let message = request.into_inner();
        let claims = message
            .transfers
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                let state =
                    crate::proto::state_from_proto(c.state, &format!("transfers[{i}].state"))
                        .map_err(model_error)?;
                Ok(Claim { reference: c.reference, state })
            })
            .collect::<Result<Vec<_>, Status>>()?;
        let report = reconcile(
            self.state.engine.store(),
            &me,
            &claims,
            message.since.map(|t| t.seconds),
            message.until.map(|t| t.seconds),
        )
        .await
        .map_err(unavailable)?;
        let state = |s: Option<crate::model::State>| {
            s.map_or(0, |s| crate::proto::state_to_proto(s) as i32)
        };
        Ok(Response::new(v1::ReconcileResponse {
            matched: report.matched as u32,
            differences: report
                .differences
                .into_iter()
                .map(|d| v1::reconcile_response::Difference {
                    kind: serde_json::to_value(d.kind)
                        .ok()
                        .and_then(|v| v.as_str().map(String::from))
                        .unwrap_or_default(),
                    reference: d.reference,
                    transfer_id: d.transfer_id.unwrap_or_default(),
                    gateway_state: state(d.gateway_state),
                    endpoint_state: state(d.endpoint_state),
                    note: d.note,
                })
                .collect(),
        }))
    }

    async fn get_stats(
        &self,
        request: Request<v1::StatsRequest>,
    ) -> Result<Response<v1::StatsResponse>, Status> {
        let who = peer(&request)?;
        limit(&self.state, &who, CallKind::Read)?;
        let message = request.into_inner();
        let query = crate::stats::StatsQuery::new(
            Some(message.region),
            Some(message.category),
            Some(message.direction),
            message.since.map(|t| t.seconds),
            message.until.map(|t| t.seconds),
        )
        .map_err(model_error)?;
        let figures = crate::stats::compute(&self.state.engine, &who.identity, &query)
            .await
            .map_err(|e| refused(&who, e))?;
        let share = |s: crate::stats::Share| Some(v1::Share { count: s.count, rate: s.rate });
        let times = |t: crate::stats::Times| {
            Some(v1::Times {
                count: t.count,
                median_seconds: t.median_seconds,
                p90_seconds: t.p90_seconds,
            })
        };
        let at = |seconds: i64| Some(prost_types::Timestamp { seconds, nanos: 0 });
        let l = figures.linkage;
        let linkage = Some(v1::LinkageFigures {
            routing_basis: l.routing_basis.into_iter().collect(),
            rejections_by_reason: l.rejections_by_reason.into_iter().collect(),
            disputes: Some(v1::DisputeFigures {
                opened: l.disputes.opened,
                open: l.disputes.open,
                upheld: l.disputes.upheld,
                overruled: l.disputes.overruled,
                first_receiver: l.disputes.first_receiver,
                decided_late: l.disputes.decided_late,
            }),
            urges: Some(v1::UrgeFigures {
                total: l.urges.total,
                urged: share(l.urges.urged),
                per_transfer: l.urges.per_transfer,
            }),
            extensions: Some(v1::ExtensionFigures {
                asked: l.extensions.asked,
                granted: l.extensions.granted,
                refused: l.extensions.refused,
            }),
            assists: Some(v1::AssistFigures {
                asked: l.assists.asked,
                committed: share(l.assists.committed),
                on_scene_in_time: share(l.assists.on_scene_in_time),
            }),
        });
        Ok(Response::new(v1::StatsResponse {
            linkage,
            since: at(query.since),
            until: at(query.until),
            transfers: figures.transfers,
            by_direction: figures.by_direction.into_iter().collect(),
            received: share(figures.received),
            received_on_time: share(figures.received_on_time),
            resolved: share(figures.resolved),
            resolved_on_time: share(figures.resolved_on_time),
            called_back: share(figures.called_back),
            satisfied: share(figures.satisfied),
            rejected: share(figures.rejected),
            time_to_receive: times(figures.time_to_receive),
            time_to_resolve: times(figures.time_to_resolve),
            top_categories: figures
                .top_categories
                .into_iter()
                .map(|(category, count)| v1::CategoryCount { category, count })
                .collect(),
        }))
    }
}
