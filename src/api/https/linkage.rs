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

/// The linkage actions, as the routes name them.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    Urge,
    RequestExtension,
    DecideExtension,
    OpenDispute,
    NoteDispute,
    DecideDispute,
}

impl Kind {
    /// The action a route's body asks for: each body checked by its own shape, the field named
    /// (its texts are checked by the engine, [`Action::validate`]).
    fn action(self, body: &[u8]) -> Result<Action, Refusal> {
        Ok(match self {
            Kind::Urge => {
                let Note { note, .. } = canonical::parse(body, &["note"])?;
                Action::Urge { note }
            }
            Kind::RequestExtension => {
                let asked: ExtensionRequest = canonical::parse(body, &["until", "reason"])?;
                Action::RequestExtension { until: asked.until, reason: asked.reason }
            }
            Kind::DecideExtension => {
                let decision: ExtensionDecision = canonical::parse(body, &["grant"])?;
                Action::DecideExtension { grant: decision.grant, note: decision.note }
            }
            Kind::OpenDispute => {
                let Note { note, .. } = canonical::parse(body, &["note"])?;
                Action::OpenDispute { note }
            }
            Kind::NoteDispute => {
                let Note { note, call_ref } = canonical::parse(body, &["note"])?;
                Action::NoteDispute { note, call_ref }
            }
            Kind::DecideDispute => {
                let decision: DisputeDecision = canonical::parse(body, &["outcome"])?;
                Action::DecideDispute { outcome: decision.outcome, note: decision.note }
            }
        })
    }
}

/// `POST /v1/transfers/{id}/urge` `{"note"}` (催办: the origin or a linkage office),
/// `/extension` `{"until", "reason"}` (延期申请: the destination), `/extension/decision`
/// `{"grant", "note"?}` (the origin or an office), `/dispute` `{"note"}` (the origin, of an
/// `out_of_scope` rejection), `/dispute/notes` `{"note", "call_ref"?}` (either party or an
/// office), `/dispute/decision` `{"outcome", "note"?}` (an office; the destination withdrawing,
/// `overruled`): the action `kind` by the caller, answered with the transfer after it.
pub async fn act(
    kind: Kind,
    State(state): State<Arc<AppState>>,
    Extension(peer): Extension<Peer>,
    Path(id): Path<String>,
    Body(body): Body,
) -> Result<Json<Transfer>, Refusal> {
    let action = kind.action(&body)?;
    state.limit(&peer, CallKind::Status)?;
    let transfer = state
        .engine
        .act(&peer.identity, &id, action, Timestamp::now())
        .await
        .map_err(|e| Refusal::from_engine(&peer.identity, e))?;
    Ok(Json(transfer))
}
