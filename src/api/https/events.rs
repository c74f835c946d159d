//! `GET /v1/events?cursor=`: the transfer change feed as server-sent events, for a wall that
//! shows cases flowing as they flow. Each message (`event: transfers`) is a batch — every event
//! committed since the last one, up to 500 — so a browser keeps up with a thousand transfers a
//! second; its `id` is the cursor to resume from (`Last-Event-ID` is honoured as `cursor`).
//! The stream waits on this gateway's commits, not on a timer (another replica's commits are
//! found within a second on PostgreSQL). Only what the caller may watch is sent, and only a
//! case's summary: no caller's name or phone ever reaches a wall.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde_json::json;

use crate::api::refusal::Refusal;
use crate::api::{AppState, Peer};
use crate::security::ratelimit::CallKind;
use crate::store::{Backend, FeedCursor, FeedEvent};

/// Most events in one message.
const BATCH: i64 = 500;

/// How often a stream looks for other replicas' commits (PostgreSQL); this gateway's own
/// commits wake it at once.
const OTHER_REPLICAS: Duration = Duration::from_secs(1);

/// A feed event as the wall shows it.
fn summary(event: &FeedEvent) -> serde_json::Value {
    let t = &event.transfer;
    json!({
        "cursor": event.cursor.encode(),
        "kind": event.kind,
        "transfer_id": t.transfer_id,
        "from": t.from.to_string(),
        "to": t.to.to_string(),
        "direction": t.direction,
        "state": t.state.as_str(),
        "category": t.case.category.as_str(),
        "region": t.case.location.as_ref().and_then(|l| l.region.as_ref()).map(|r| r.as_str()),
        "overdue": t.overdue,
        "undeliverable": t.undeliverable(),
        "at": t.history.last().map(|h| h.at),
    })
}

pub async fn events(
    State(state): State<Arc<AppState>>,
    Extension(peer): Extension<Peer>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    state.limit(&peer, CallKind::Read)?;
    let store = state.engine.store().clone();
    let given = query
        .get("cursor")
        .cloned()
        .or_else(|| headers.get("last-event-id").and_then(|v| v.to_str().ok()).map(String::from));
    let unavailable = crate::api::unavailable;
    // No cursor: from now (a wall shows what flows, not the history).
    let mut cursor = match given {
        None => store.feed_end(true).await.map_err(unavailable)?,
        Some(text) => FeedCursor::decode(&text)
            .map_err(|e| Refusal::field("cursor", e.trim_start_matches("cursor: ")))?,
    };
    // Refused at once, not in the stream, when the caller may not watch at all.
    let refuse = |e| Refusal::from_engine(&peer.identity, e);
    state.engine.feed_for(&peer.identity, cursor, 1).await.map_err(refuse)?;

    let (sender, receiver) =
        tokio::sync::mpsc::channel::<Result<Event, std::convert::Infallible>>(16);
    let (engine, who) = (state.engine.clone(), peer.identity.clone());
    let mut commits = store.commits();
    let mut closing = state.closing.subscribe();
    let poll_others = store.backend() == Backend::Postgres;
    tokio::spawn(async move {
        loop {
            let (events, next, full) = match engine.feed_for(&who, cursor, BATCH).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(identity = %who, error = %e, "an event stream ended");
                    return;
                }
            };
            cursor = next;
            if !events.is_empty() {
                let batch: Vec<_> = events.iter().map(summary).collect();
                let event =
                    Event::default().event("transfers").id(cursor.encode()).json_data(batch);
                let Ok(event) = event else { return };
                if sender.send(Ok(event)).await.is_err() {
                    return; // the client went away
                }
            }
            if full {
                continue;
            }
            tokio::select! {
                changed = commits.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep(OTHER_REPLICAS), if poll_others => {}
                _ = closing.changed() => return,
                _ = sender.closed() => return,
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(receiver);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(state.heartbeat)).into_response())
}
