//! The linkage actions over HTTPS (`linkage.md`): urge, ask for an extension and answer it,
//! dispute a rejection, note and decide the dispute. Each is a small canonical JSON body posted
//! beside the transfer's status route, by one of its desks or a linkage office; each answers
//! the transfer after the action.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::{Extension, Json};
use serde::Deserialize;

use crate::api::refusal::{Body, Refusal};
use crate::api::{AppState, Peer};
use crate::model::json as canonical;
use crate::model::linkage::Action;
use crate::model::{DisputeOutcome, Timestamp, Transfer};
use crate::security::ratelimit::CallKind;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Note {
    note: String,
    #[serde(default)]
    call_ref: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExtensionRequest {
    until: Timestamp,
    reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExtensionDecision {
    grant: bool,
    #[serde(default)]
    note: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DisputeDecision {
    outcome: DisputeOutcome,
    #[serde(default)]
    note: Option<String>,
}

/// Trims a required text; blank is refused naming the field.
fn required(text: String, path: &str) -> Result<String, Refusal> {
    let text = text.trim().to_string();
    if text.is_empty() {
        Err(crate::model::ModelError::missing(path).into())
    } else {
        Ok(text)
    }
}

/// Trims an optional text; blank is absent.
fn optional(text: Option<String>) -> Option<String> {
    text.map(|t| t.trim().to_string()).filter(|t| !t.is_empty())
}

async fn act(
    state: &AppState,
    peer: &Peer,
    id: &str,
    action: Action,
) -> Result<Json<Transfer>, Refusal> {
    state.limit(peer, CallKind::Status)?;
    let transfer = state
        .engine
        .act(&peer.identity, id, action, Timestamp::now())
        .await
        .map_err(|e| Refusal::from_engine(&peer.identity, e))?;
    Ok(Json(transfer))
}

/// `POST /v1/transfers/{id}/urge` `{"note"}`: 催办, by the origin or a linkage office.
pub async fn urge(
    State(state): State<Arc<AppState>>,
    Extension(peer): Extension<Peer>,
    Path(id): Path<String>,
    Body(body): Body,
) -> Result<Json<Transfer>, Refusal> {
    let Note { note, .. } = canonical::parse(&body, &["note"])?;
    act(&state, &peer, &id, Action::Urge { note: required(note, "note")? }).await
}

/// `POST /v1/transfers/{id}/extension` `{"until", "reason"}`: 延期申请, by the destination.
pub async fn request_extension(
    State(state): State<Arc<AppState>>,
    Extension(peer): Extension<Peer>,
    Path(id): Path<String>,
    Body(body): Body,
) -> Result<Json<Transfer>, Refusal> {
    let asked: ExtensionRequest = canonical::parse(&body, &["until", "reason"])?;
    let action =
        Action::RequestExtension { until: asked.until, reason: required(asked.reason, "reason")? };
    act(&state, &peer, &id, action).await
}

/// `POST /v1/transfers/{id}/extension/decision` `{"grant", "note"?}`: by the origin or a
/// linkage office.
pub async fn decide_extension(
    State(state): State<Arc<AppState>>,
    Extension(peer): Extension<Peer>,
    Path(id): Path<String>,
    Body(body): Body,
) -> Result<Json<Transfer>, Refusal> {
    let decision: ExtensionDecision = canonical::parse(&body, &["grant"])?;
    let action = Action::DecideExtension { grant: decision.grant, note: optional(decision.note) };
    act(&state, &peer, &id, action).await
}

/// `POST /v1/transfers/{id}/dispute` `{"note"}`: the origin disputes an `out_of_scope`
/// rejection.
pub async fn open_dispute(
    State(state): State<Arc<AppState>>,
    Extension(peer): Extension<Peer>,
    Path(id): Path<String>,
    Body(body): Body,
) -> Result<Json<Transfer>, Refusal> {
    let Note { note, .. } = canonical::parse(&body, &["note"])?;
    act(&state, &peer, &id, Action::OpenDispute { note: required(note, "note")? }).await
}

/// `POST /v1/transfers/{id}/dispute/notes` `{"note", "call_ref"?}`: a consultation note.
pub async fn note_dispute(
    State(state): State<Arc<AppState>>,
    Extension(peer): Extension<Peer>,
    Path(id): Path<String>,
    Body(body): Body,
) -> Result<Json<Transfer>, Refusal> {
    let Note { note, call_ref } = canonical::parse(&body, &["note"])?;
    let action =
        Action::NoteDispute { note: required(note, "note")?, call_ref: optional(call_ref) };
    act(&state, &peer, &id, action).await
}

/// `POST /v1/transfers/{id}/dispute/decision` `{"outcome", "note"?}`: by a linkage office, or
/// by the destination withdrawing its rejection (`overruled`).
pub async fn decide_dispute(
    State(state): State<Arc<AppState>>,
    Extension(peer): Extension<Peer>,
    Path(id): Path<String>,
    Body(body): Body,
) -> Result<Json<Transfer>, Refusal> {
    let decision: DisputeDecision = canonical::parse(&body, &["outcome"])?;
    let action = Action::DecideDispute { outcome: decision.outcome, note: optional(decision.note) };
    act(&state, &peer, &id, action).await
}
