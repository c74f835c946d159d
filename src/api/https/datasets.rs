//! The HTTPS face of shared data (`/v1/datasets/…`) and reconciliation (`/v1/reconcile`):
//! the same operations as gRPC's `SyncService` and `TransferService.Reconcile`, in JSON.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use serde_json::{json, Value};

use super::caller_endpoint;
use crate::api::refusal::{Body, Refusal};
use crate::api::{AppState, Peer};
use crate::model::Timestamp;
use crate::security::ratelimit::CallKind;
use crate::store::PutOutcome;
use crate::sync::knowledge::KnowledgeQuery;
use crate::sync::reconcile::Claim;
use crate::sync::{Dataset, PutRequest, SyncError};

/// A dataset error, as refused to the caller.
fn refused(peer: &Peer, error: SyncError) -> Refusal {
    Refusal::from_sync(&peer.identity, error)
}

fn dataset(peer: &Peer, name: &str) -> Result<Dataset, Refusal> {
    name.parse().map_err(|e| refused(peer, e))
}

fn number(query: &HashMap<String, String>, key: &str, default: i64) -> Result<i64, Refusal> {
    query
        .get(key)
        .map(|v| {
            v.parse::<i64>()
                .map_err(|_| Refusal::field(key, format!("expected a number, got {v:?}")))
        })
        .transpose()
        .map(|v| v.unwrap_or(default))
}

pub async fn get_record(
    State(state): State<Arc<AppState>>,
    Extension(peer): Extension<Peer>,
    Path((name, key)): Path<(String, String)>,
) -> Result<Json<Value>, Refusal> {
    state.limit(&peer, CallKind::Read)?;
    let dataset = dataset(&peer, &name)?;
    let record =
        state.datasets.get(&peer.identity, dataset, &key).await.map_err(|e| refused(&peer, e))?;
    Ok(Json(json!(record)))
}

pub async fn put_record(
    State(state): State<Arc<AppState>>,
    Extension(peer): Extension<Peer>,
    Path((name, key)): Path<(String, String)>,
    Body(body): Body,
) -> Result<Json<Value>, Refusal> {
    let dataset = dataset(&peer, &name)?;
    let request: PutRequest = serde_json::from_slice(&body).map_err(|e| {
        refused(
            &peer,
            SyncError::invalid(
                "body",
                format!("expected {{\"version\", \"body\", \"deleted\"?, \"updated_at\"?, \"force\"?}}: {e}"),
            ),
        )
    })?;
    let (record, outcome) = state
        .datasets
        .put(&peer.identity, dataset, &key, request)
        .await
        .map_err(|e| refused(&peer, e))?;
    Ok(Json(json!({"record": record, "changed": outcome == PutOutcome::Written})))
}

/// `GET /v1/knowledge?q=&category=&include_expired=&limit=`: the knowledge base searched.
pub async fn search_knowledge(
    State(state): State<Arc<AppState>>,
    Extension(peer): Extension<Peer>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, Refusal> {
    state.limit(&peer, CallKind::Read)?;
    let include_expired = match query.get("include_expired").map(String::as_str) {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") => true,
        Some(other) => {
            return Err(refused(
                &peer,
                SyncError::invalid(
                    "include_expired",
                    format!("expected true or false, got {other:?}"),
                ),
            ))
        }
    };
    let limit = number(&query, "limit", 0)?;
    let search = KnowledgeQuery {
        q: query.get("q").cloned().unwrap_or_default(),
        category: query.get("category").filter(|c| !c.is_empty()).cloned(),
        include_expired,
        limit: usize::try_from(limit).map_err(|_| {
            refused(&peer, SyncError::invalid("limit", format!("expected 1 to 100, got {limit}")))
        })?,
    };
    let answer =
        state.datasets.search(&peer.identity, &search).await.map_err(|e| refused(&peer, e))?;
    Ok(Json(json!({"records": answer.records, "total": answer.total})))
}

/// `GET /v1/directory/coverage?region=&category=`: the township × category cells of a region
/// that fall back to a coarser unit or have none, and how many are covered at their own tier.
pub async fn coverage(
    State(state): State<Arc<AppState>>,
    Extension(peer): Extension<Peer>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, Refusal> {
    state.limit(&peer, CallKind::Read)?;
    let region = query
        .get("region")
        .filter(|r| !r.is_empty())
        .ok_or_else(|| Refusal::field("region", "expected a region code (330203, 330203101)"))?;
    let category = query.get("category").filter(|c| !c.is_empty()).map(String::as_str);
    let cells = state
        .datasets
        .coverage(&peer.identity, region, category)
        .await
        .map_err(|e| refused(&peer, e))?;
    let (covered, gaps): (Vec<_>, Vec<_>) = cells.iter().partition(|c| c.covered_at_its_tier());
    let no_unit = gaps.iter().filter(|c| c.answered_by.is_none()).count();
    Ok(Json(json!({
        "region": region,
        "cells": cells.len(),
        "covered": covered.len(),
        "fall_back": gaps.len() - no_unit,
        "no_unit": no_unit,
        "gaps": gaps,
    })))
}

pub async fn snapshot(
    State(state): State<Arc<AppState>>,
    Extension(peer): Extension<Peer>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, Refusal> {
    state.limit(&peer, CallKind::Read)?;
    let dataset = dataset(&peer, &name)?;
    let token = query.get("page_token").map(String::as_str).unwrap_or("");
    let page = state
        .datasets
        .snapshot(&peer.identity, dataset, token, number(&query, "page_size", 1000)?)
        .await
        .map_err(|e| refused(&peer, e))?;
    Ok(Json(
        json!({"records": page.records, "next_page_token": page.next_page_token, "cursor": page.cursor}),
    ))
}

pub async fn changes(
    State(state): State<Arc<AppState>>,
    Extension(peer): Extension<Peer>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, Refusal> {
    state.limit(&peer, CallKind::Read)?;
    let dataset = dataset(&peer, &name)?;
    let cursor = query.get("cursor").map(String::as_str).unwrap_or("");
    let page = state
        .datasets
        .changes(&peer.identity, dataset, cursor, number(&query, "limit", 1000)?)
        .await
        .map_err(|e| refused(&peer, e))?;
    let changes: Vec<Value> = page
        .changes
        .into_iter()
        .map(|(cursor, record)| json!({"cursor": cursor, "record": record}))
        .collect();
    Ok(Json(json!({"changes": changes, "cursor": page.cursor, "more": page.more})))
}

/// The body of `POST /v1/reconcile`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ReconcileBody {
    transfers: Vec<Claim>,
    #[serde(default)]
    since: Option<Timestamp>,
    #[serde(default)]
    until: Option<Timestamp>,
}

pub async fn reconcile(
    State(state): State<Arc<AppState>>,
    Extension(peer): Extension<Peer>,
    Body(body): Body,
) -> Result<Json<Value>, Refusal> {
    let me = caller_endpoint(&peer)?.clone();
    let request: ReconcileBody = serde_json::from_slice(&body).map_err(|e| {
        refused(
            &peer,
            SyncError::invalid(
                "body",
                format!("expected {{\"transfers\": [{{\"reference\", \"state\"}}], \"since\"?, \"until\"?}}: {e}"),
            ),
        )
    })?;
    let report = crate::sync::reconcile::reconcile(
        state.engine.store(),
        &me,
        &request.transfers,
        request.since.map(Timestamp::unix_seconds),
        request.until.map(Timestamp::unix_seconds),
    )
    .await
    .map_err(|e| refused(&peer, SyncError::Store(e)))?;
    Ok(Json(json!(report)))
}
