//! The HTTPS handlers. Each one: who is calling (from [`Peer`]), what they sent (translated or
//! decoded), what the engine says, and the answer in the caller's own form.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{json, Value};

use super::caller_endpoint;
use crate::api::refusal::{body_refusal, native_receipt, Body, Reason, Refusal};
use crate::api::{reachable, unavailable, AppState, Peer};
use crate::formats::{Endpoint, ReceiptKind};
use crate::model::{
    json as canonical, EndpointId, State as TransferState, StatusUpdate, Timestamp, Transfer,
    TransferRequest,
};
use crate::security::ratelimit::CallKind;
use crate::store::TransferFilter;

/// The registered endpoint named by the path, and whether the caller is it.
fn native_endpoint<'a>(
    state: &'a AppState,
    peer: &Peer,
    region: &str,
    platform: &str,
) -> Result<&'a Endpoint, Box<Response>> {
    let name = format!("{region}/{platform}");
    let endpoint = state
        .engine
        .registry()
        .endpoint_named(&name)
        .map_err(|e| Box::new(Refusal::from(e).into_response()))?;
    if peer.identity.endpoint() != Some(&endpoint.id) {
        let message =
            format!("forbidden: {} may send only as itself, not as {name}", peer.identity);
        return Err(Box::new(Refusal::new(Reason::Identity, message).native(endpoint, None)));
    }
    Ok(endpoint)
}

fn with_header(mut response: Response, name: &'static str, value: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().insert(name, value);
    }
    response
}

/// The message of a success receipt whose destination is unreachable: taken and kept, not yet
/// delivered, and whom to phone if it cannot wait.
pub(crate) fn unreachable_notice(destination: &EndpointId, contact: Option<String>) -> String {
    let mut notice =
        format!("成功：已接收并保存；目标平台 {destination} 暂时无法送达，网关将持续重试");
    if let Some(contact) = contact {
        notice.push_str(&format!("；紧急请致电 {contact}"));
    }
    notice
}

/// The endpoint of a native route (the caller must be it) and its body read with `read`;
/// otherwise the answer, in that endpoint's own receipt where there is one.
fn native_document<'a, T>(
    state: &'a AppState,
    peer: &Peer,
    (region, platform): (&str, &str),
    body: Result<Bytes, BytesRejection>,
    read: impl FnOnce(&Endpoint, &[u8]) -> Result<T, crate::formats::FormatError>,
) -> Result<(&'a Endpoint, T), Box<Response>> {
    let body = native_body(state, peer, region, platform, body)?;
    let endpoint = native_endpoint(state, peer, region, platform)?;
    match read(endpoint, &body) {
        Ok(document) => Ok((endpoint, document)),
        Err(e) => Err(Box::new(Refusal::from(e).native(endpoint, None))),
    }
}

/// The body of a native document; when it cannot be taken (over the 1 MiB limit), the answer
/// in the sender's own receipt, naming the limit.
fn native_body(
    state: &AppState,
    peer: &Peer,
    region: &str,
    platform: &str,
    body: Result<Bytes, BytesRejection>,
) -> Result<Bytes, Box<Response>> {
    let rejection = match body {
        Ok(body) => return Ok(body),
        Err(rejection) => rejection,
    };
    let endpoint = native_endpoint(state, peer, region, platform)?;
    Err(Box::new(body_refusal(&rejection).native(endpoint, None)))
}

/// Takes a call from the caller's budget; over it, the 429 answer in the sender's own receipt.
fn native_limit(
    state: &AppState,
    peer: &Peer,
    endpoint: &Endpoint,
    kind: CallKind,
    reference: Option<&str>,
) -> Option<Response> {
    let refusal = state.limit(peer, kind).err()?;
    Some(refusal.native(endpoint, reference))
}

pub async fn native_transfer(
    State(state): State<Arc<AppState>>,
    Extension(peer): Extension<Peer>,
    Path((region, platform)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let route = (region.as_str(), platform.as_str());
    let (endpoint, (request, native)) =
        match native_document(&state, &peer, route, body, |e, body| {
            // Kept as evidence of what was sent, as text in the sender's own encoding.
            e.read_transfer(body).map(|request| (request, e.format.encoding.decode(body).ok()))
        }) {
            Ok(found) => found,
            Err(response) => return *response,
        };
    let reference = request.sender_ref.clone();
    if let Some(busy) = native_limit(
        &state,
        &peer,
        endpoint,
        CallKind::for_submission(request.case.urgency),
        Some(&reference),
    ) {
        return busy;
    }
    let to_region = request.to_region.clone();
    match state.engine.submit_native(&endpoint.id, request, native).await {
        Ok(submission) => {
            let t = &submission.transfer;
            let reachable = reachable(&state, &t.to).await;
            // Vendor desk software reads the receipt's body, not our headers: an unreachable
            // destination is said there, with whom to phone meanwhile.
            let notice = match reachable {
                true => None,
                false => {
                    let mut addressed = t.for_destination();
                    addressed.to_region = to_region;
                    Some(unreachable_notice(
                        &t.to,
                        state.engine.directory_contact(&addressed).await,
                    ))
                }
            };
            let response = native_success(endpoint, Some(&reference), notice.as_deref());
            let response = with_header(response, "x-liandong-transfer-id", &t.transfer_id);
            let response = with_header(response, "x-liandong-destination", &t.to.to_string());
            with_header(
                response,
                "x-liandong-destination-status",
                if reachable { "reachable" } else { "unreachable" },
            )
        }
        Err(e) => Refusal::from_engine(&peer.identity, e).native(endpoint, Some(&reference)),
    }
}

pub async fn native_status(
    State(state): State<Arc<AppState>>,
    Extension(peer): Extension<Peer>,
    Path((region, platform)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let route = (region.as_str(), platform.as_str());
    let (endpoint, update) =
        match native_document(&state, &peer, route, body, |e, body| e.read_status(body)) {
            Ok(found) => found,
            Err(response) => return *response,
        };
    // Its rate budget was taken before the body was read (api::bodies).
    let reference = update.transfer_ref.clone();
    match state.engine.update_status(&endpoint.id, update).await {
        Ok((transfer, _)) => with_header(
            native_success(endpoint, reference.as_deref(), None),
            "x-liandong-transfer-id",
            &transfer.transfer_id,
        ),
        Err(e) => Refusal::from_engine(&peer.identity, e).native(endpoint, reference.as_deref()),
    }
}

/// A native success receipt.
fn native_success(endpoint: &Endpoint, reference: Option<&str>, message: Option<&str>) -> Response {
    native_receipt(endpoint, StatusCode::OK, ReceiptKind::Success, reference, message)
}

pub async fn submit(
    State(state): State<Arc<AppState>>,
    Extension(peer): Extension<Peer>,
    Body(body): Body,
) -> Result<Response, Refusal> {
    let caller = caller_endpoint(&peer)?;
    let request: TransferRequest = canonical::parse(&body, TransferRequest::REQUIRED)?;
    state.limit(&peer, CallKind::for_submission(request.case.urgency))?;
    let submission = state
        .engine
        .submit(caller, request)
        .await
        .map_err(|e| Refusal::from_engine(&peer.identity, e))?;
    let reachable = reachable(&state, &submission.transfer.to).await;
    Ok(Json(json!({
        "transfer": submission.transfer,
        "created": submission.created,
        "destination": {"endpoint": submission.transfer.to.to_string(), "reachable": reachable},
    }))
    .into_response())
}

pub async fn get_transfer(
    State(state): State<Arc<AppState>>,
    Extension(peer): Extension<Peer>,
    Path(id): Path<String>,
) -> Result<Json<Transfer>, Refusal> {
    state.limit(&peer, CallKind::Read)?;
    Ok(Json(
        state
            .engine
            .transfer_for(&peer.identity, &id)
            .await
            .map_err(|e| Refusal::from_engine(&peer.identity, e))?,
    ))
}

pub async fn status(
    State(state): State<Arc<AppState>>,
    Extension(peer): Extension<Peer>,
    Path(id): Path<String>,
    Body(body): Body,
) -> Result<Json<Transfer>, Refusal> {
    let caller = caller_endpoint(&peer)?;
    let mut value: Value = serde_json::from_slice(&body)
        .map_err(|e| Refusal::new(Reason::BadDocument, format!("malformed JSON: {e}")))?;
    let object = value
        .as_object_mut()
        .ok_or_else(|| Refusal::new(Reason::BadDocument, "malformed JSON: expected an object"))?;
    object.entry("by").or_insert_with(|| Value::String(caller.to_string()));
    object.insert("transfer_id".into(), Value::String(id));
    let update: StatusUpdate = canonical::decode(value, &["state", "at"])?;
    let (transfer, _) = state
        .engine
        .update_status(caller, update)
        .await
        .map_err(|e| Refusal::from_engine(&peer.identity, e))?;
    Ok(Json(transfer))
}

pub async fn list(
    State(state): State<Arc<AppState>>,
    Extension(peer): Extension<Peer>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, Refusal> {
    state.limit(&peer, CallKind::Read)?;
    let bad = |key: &str, expected: &str| Refusal::field(key, format!("expected {expected}"));
    let time = |key: &str| query_time(&query, key);
    let filter = TransferFilter {
        party: None,
        state: query
            .get("state")
            .map(|s| s.parse::<TransferState>().map_err(|_| bad("state", "a state")))
            .transpose()?,
        overdue: query
            .get("overdue")
            .map(|s| s.parse::<bool>().map_err(|_| bad("overdue", "true or false")))
            .transpose()?,
        since: time("since")?,
        until: time("until")?,
        limit: query
            .get("limit")
            .map(|s| s.parse::<i64>().map_err(|_| bad("limit", "a number")))
            .transpose()?
            .unwrap_or(100),
        after: query.get("after").cloned(),
        reference: query.get("reference").filter(|r| !r.is_empty()).cloned(),
        phone: query
            .get("phone")
            .filter(|p| !p.is_empty())
            .map(|p| {
                crate::model::phone::normalize(p)
                    .map_err(|e| Refusal::field("phone", e.to_string()))
            })
            .transpose()?,
        pending: query
            .get("pending")
            .filter(|p| !p.is_empty())
            .map(|p| p.parse().map_err(|e: String| Refusal::field("pending", e)))
            .transpose()?,
    };
    let (transfers, next) = state
        .engine
        .transfers_for(&peer.identity, filter)
        .await
        .map_err(|e| Refusal::from_engine(&peer.identity, e))?;
    Ok(Json(json!({"transfers": transfers, "next": next})))
}

pub async fn endpoints(State(state): State<Arc<AppState>>) -> Result<Json<Value>, Refusal> {
    let health = state.engine.store().endpoint_health().await.map_err(unavailable)?;
    let now = Timestamp::now().unix_seconds();
    let list: Vec<Value> = state
        .engine
        .registry()
        .endpoints()
        .map(|e| {
            let h = health.iter().find(|h| h.endpoint == e.id.to_string());
            let unreachable = h.and_then(|h| h.failing_since).is_some_and(|since| state.failing_too_long(since, now));
            json!({
                "id": e.id.to_string(),
                "format": e.format.name,
                "place": e.place,
                "delivery": state.engine.endpoint(&e.id).and_then(|s| s.url.clone()).map_or("pull", |_| "push"),
                "last_success": h.and_then(|h| h.last_success).and_then(Timestamp::from_unix_seconds),
                "failing_since": h.and_then(|h| h.failing_since).and_then(Timestamp::from_unix_seconds),
                "unreachable": unreachable,
            })
        })
        .collect();
    Ok(Json(json!({"endpoints": list})))
}

/// `GET /v1/whoami`: who the caller's certificate says it is, and what that lets it see (the
/// console shows its pages by it; the APIs decide by the same identity).
pub async fn whoami(
    State(state): State<Arc<AppState>>,
    Extension(peer): Extension<Peer>,
) -> Json<Value> {
    use crate::security::Identity;
    let (kind, name) = match &peer.identity {
        Identity::Endpoint(e) => ("endpoint", e.to_string()),
        Identity::Agency(n) => ("agency", n.clone()),
        Identity::Office(n) => ("office", n.clone()),
        Identity::Operator(n) => ("operator", n.clone()),
        Identity::Gateway(n) => ("gateway", n.clone()),
    };
    let grant = match &peer.identity {
        Identity::Agency(name) => state.engine.policy().grant(name),
        Identity::Office(name) => state.engine.policy().office(name),
        _ => None,
    };
    let place = peer
        .identity
        .endpoint()
        .and_then(|e| state.engine.registry().endpoint(e).ok())
        .map(|e| e.place.clone());
    Json(json!({
        "identity": peer.uri,
        "kind": kind,
        "name": name,
        "operator": matches!(peer.identity, Identity::Operator(_)),
        "regions": grant.map(|g| g.regions.clone()),
        "rights": grant.map(|g| g.rights.iter().map(|r| format!("{r:?}")).collect::<Vec<_>>()),
        "place": place,
    }))
}

/// `GET /v1/transfers/{id}/evidence`: what the gateway holds as evidence of a transfer the
/// caller may read — its audit entries (hash-chained) and each delivery with the native
/// document its destination was sent, as text.
pub async fn evidence(
    State(state): State<Arc<AppState>>,
    Extension(peer): Extension<Peer>,
    Path(id): Path<String>,
) -> Result<Json<Value>, Refusal> {
    state.limit(&peer, CallKind::Read)?;
    let evidence = state
        .engine
        .evidence_for(&peer.identity, &id)
        .await
        .map_err(|e| Refusal::from_engine(&peer.identity, e))?;
    let deliveries: Vec<Value> = evidence
        .deliveries
        .iter()
        .map(|(d, document)| {
            json!({
                "id": d.id,
                "destination": d.destination.to_string(),
                "kind": d.kind.as_str(),
                "status": d.status.as_str(),
                "attempts": d.attempts,
                "queued_at": Timestamp::from_unix_seconds(d.created_at),
                "last_error": d.last_error,
                "document": document.as_ref().ok(),
                "document_error": document.as_ref().err(),
            })
        })
        .collect();
    Ok(Json(json!({
        "transfer_id": evidence.transfer.transfer_id,
        "audit": evidence.audit,
        "received": evidence.received,
        "deliveries": deliveries,
        "linked_from": evidence
            .linked_from
            .iter()
            .map(|(rel, t)| {
                json!({
                    "rel": rel,
                    "transfer_id": t.transfer_id,
                    "category": t.case.category,
                    "state": t.state,
                    "requested_at": t.requested_at,
                    "from": t.from,
                    "to": t.to,
                })
            })
            .collect::<Vec<Value>>(),
    })))
}

fn operator(peer: &Peer) -> Result<(), Refusal> {
    match &peer.identity {
        crate::security::Identity::Operator(_) => Ok(()),
        other => {
            Err(Refusal::new(Reason::Policy, format!("forbidden: {other} is not an operator")))
        }
    }
}

/// `GET /v1/certificates` (operators): the certificates the gateway serves and trusts, each
/// with its expiry and days left, and the CRL's next update.
pub async fn certificates(
    State(state): State<Arc<AppState>>,
    Extension(peer): Extension<Peer>,
) -> Result<Json<Value>, Refusal> {
    operator(&peer)?;
    let Some(tls) = &state.tls else {
        return Ok(Json(
            json!({"certificates": [], "crl_next_update": null, "reload_error": null}),
        ));
    };
    let loaded = tls.certificates();
    let now = Timestamp::now().unix_seconds();
    let list: Vec<Value> = loaded
        .certificates
        .iter()
        .map(|(which, subject, not_after)| {
            json!({
                "which": which,
                "subject": subject,
                "not_after": Timestamp::from_unix_seconds(*not_after),
                "days_left": (not_after - now).div_euclid(86_400),
            })
        })
        .collect();
    Ok(Json(json!({
        "certificates": list,
        "crl_next_update": loaded.crl_next_update.and_then(Timestamp::from_unix_seconds),
        "reload_error": loaded.last_error,
    })))
}

pub async fn dead_letters(
    State(state): State<Arc<AppState>>,
    Extension(peer): Extension<Peer>,
) -> Result<Json<Value>, Refusal> {
    operator(&peer)?;
    let dead = state.engine.store().dead_letters(1000).await.map_err(unavailable)?;
    let list: Vec<Value> = dead
        .iter()
        .map(|d| {
            json!({"id": d.id, "destination": d.destination.to_string(), "transfer_id": d.transfer_id, "kind": d.kind.as_str(),
                   "attempts": d.attempts, "last_error": d.last_error})
        })
        .collect();
    Ok(Json(json!({"dead_letters": list})))
}

pub async fn replay(
    State(state): State<Arc<AppState>>,
    Extension(peer): Extension<Peer>,
    Path(id): Path<i64>,
) -> Result<Json<Value>, Refusal> {
    operator(&peer)?;
    let write = crate::store::Write::Replay {
        item_id: id,
        at: Timestamp::now().unix_seconds(),
        by: peer.uri.clone(),
        request_id: crate::api::context::request_id(),
    };
    match state.engine.store().write(write).await.map_err(unavailable)? {
        crate::store::WriteResult::Done(true) => Ok(Json(json!({"id": id, "replayed": true}))),
        _ => Err(Refusal::new(
            Reason::NotFound,
            format!("{id} {}", crate::store::outbox::NOT_REPLAYABLE),
        )),
    }
}

/// `GET /v1/stats?region=&category=&direction=&since=&until=`: the figures of the transfers
/// the caller may read (the last 30 days unless a period is given).
pub async fn stats(
    State(state): State<Arc<AppState>>,
    Extension(peer): Extension<Peer>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, Refusal> {
    state.limit(&peer, CallKind::Read)?;
    let time = |key: &str| query_time(&query, key);
    let stats_query = crate::stats::StatsQuery::new(
        query.get("region").cloned(),
        query.get("category").cloned(),
        query.get("direction").cloned(),
        time("since")?,
        time("until")?,
    )?;
    let figures = crate::stats::compute(&state.engine, &peer.identity, &stats_query)
        .await
        .map_err(|e| Refusal::from_engine(&peer.identity, e))?;
    Ok(Json(json!({
        "period": {
            "since": Timestamp::from_unix_seconds(stats_query.since),
            "until": Timestamp::from_unix_seconds(stats_query.until),
        },
        "region": stats_query.region,
        "category": stats_query.category,
        "direction": stats_query.direction,
        "figures": figures,
    })))
}

/// A time given in a query (`since=`, `until=`), as Unix seconds; refused naming the key when it
/// is not RFC 3339.
fn query_time(query: &HashMap<String, String>, key: &str) -> Result<Option<i64>, Refusal> {
    query
        .get(key)
        .map(|t| {
            Timestamp::parse_rfc3339(t, false)
                .map(Timestamp::unix_seconds)
                .map_err(|_| Refusal::field(key, format!("expected an RFC 3339 time, got {t:?}")))
        })
        .transpose()
}
