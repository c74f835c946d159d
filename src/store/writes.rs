//! Every change to the store, as a value, and the transaction that carries it out.
//!
//! Keeping writes as data lets the SQLite writer batch them (several per commit) and keeps the
//! rules of each change — which rows, which notifications, which events — in one place for
//! both backends.

use sqlx::{Any, Row, Transaction};

use super::audit::AuditEntry;
use super::sql::{tx_stamp, values, ROWS_PER_STATEMENT};
use super::{
    outbox_from_row, transfer_from_row, Backend, DeliveryKind, OutboxItem, OutboxStatus, StoreError,
};
use crate::model::lifecycle::{self, DeadlineRule, Outcome, Refusal, Role};
use crate::model::linkage::{self, Action, Actor, Party};
use crate::model::{
    DisputeOutcome, EndpointId, HistoryEntry, HistoryEvent, LinkRel, Record, State, StatusUpdate,
    Timestamp, Transfer,
};

/// A change to make durably.
#[derive(Debug)]
pub enum Write {
    /// A new transfer and its delivery to the destination — or, when the sender has used this
    /// `sender_ref` before, nothing (the first transfer is returned).
    /// Made with [`Write::submit`].
    Submit(Box<NewTransfer>),
    /// A status update by one party; the other party is notified in the same commit.
    Status { transfer_id: String, update: Box<StatusUpdate>, role: Role },
    /// The destination's system confirmed a delivery (its native success receipt).
    Delivered { item_id: i64, at: i64 },
    /// A delivery attempt failed; retried at `next_attempt_at` (milliseconds), or dead when
    /// `dead` is true. A dead transfer delivery with an `undeliverable` note is rejected on
    /// the destination's behalf in the same commit, and its origin told (`canonical.md`,
    /// "Undeliverable transfers").
    Failed {
        item_id: i64,
        at: i64,
        error: String,
        next_attempt_at: i64,
        dead: bool,
        undeliverable: Option<String>,
    },
    /// A deadline was missed: `escalated` in the history, `overdue`, both parties' feeds told.
    Escalate { transfer_id: String, deadline: &'static str, at: i64 },
    /// Take due deliveries for a while: up to so many of each destination's (see
    /// [`super::Store::lease_from`]; milliseconds).
    Lease { now: i64, lease: i64, wants: Vec<(String, i64)> },
    /// Put a dead letter back in the queue — unless it is a transfer the gateway has already
    /// handed back to its origin as undeliverable: that origin re-sends it (docs/DECISIONS.md).
    /// `by` (an operator's identity URI, or `cli:USER@HOST`) is audited with the replay, and
    /// `request_id` when it came over HTTPS.
    Replay { item_id: i64, at: i64, by: String, request_id: String },
    /// Pull delivery: the destination confirms it has the transfer (on its `Watch`).
    Acknowledge { transfer_id: String, destination: String, at: i64 },
    /// Records of one shared dataset, all or nothing (see [`super::records::put`]).
    /// With `audit`: the entry that says who wrote them (its detail gets the counts), in the
    /// same commit — when anything was written.
    PutRecords {
        dataset: String,
        records: Vec<Record>,
        options: super::PutOptions,
        audit: Option<AuditEntry>,
    },
    /// Entries for the audit trail that come with no other change (refusals, loads, reloads).
    Audit(Vec<AuditEntry>),
    /// A linkage action (`linkage.md`): an urge, an extension asked or answered, a dispute
    /// opened, noted or decided; the desks it concerns are told in the same commit. `rule`
    /// gives an overruled transfer's fresh deadlines.
    Linkage {
        transfer_id: String,
        action: Box<Action>,
        actor: Actor,
        at: Timestamp,
        settings: linkage::Settings,
        rule: DeadlineRule,
    },
    /// A linkage timer is due (see [`super::Store::due_timers`]): a dispute still open past
    /// `dispute_within` is decided `first_receiver` and escalated; a missed `needed_by` is
    /// escalated. The timer goes in the same commit.
    Timer { transfer_id: String, kind: String, now: Timestamp },
}

/// The timer kinds (`timers.kind`).
pub const TIMER_DISPUTE: &str = "dispute";
pub const TIMER_NEEDED_BY: &str = "needed_by";
/// An extension request waiting for its answer, due at `resolve_by` (when it lapses).
pub const TIMER_EXTENSION: &str = "extension";

/// What a write did.
#[derive(Debug)]
pub enum WriteResult {
    Submitted {
        transfer: Box<Transfer>,
        created: bool,
    },
    Status(Result<(Box<Transfer>, Outcome), StatusRefused>),
    /// A linkage action's transfer after it, and the entries it wrote.
    Linkage(Result<(Box<Transfer>, Vec<HistoryEntry>), StatusRefused>),
    Leased(Vec<OutboxItem>),
    /// What became of each record, or the records whose version does not grow.
    Records(Result<Vec<super::PutOutcome>, super::PutRefused>),
    /// For the other writes: whether a row was changed.
    Done(bool),
}

/// Why a status update changed nothing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StatusRefused {
    #[error("no transfer {0}")]
    NotFound(String),
    #[error(transparent)]
    Rule(#[from] Refusal),
}

impl Write {
    /// Which of the writer's queues this write waits in: housekeeping nobody waits on — an
    /// escalation, a linkage timer, the record of a delivery the destination confirmed —
    /// yields to the rest ([`super::group_commit`]).
    pub fn lane(&self) -> super::group_commit::Lane {
        use super::group_commit::Lane;
        match self {
            Write::Escalate { .. } | Write::Timer { .. } | Write::Delivered { .. } => {
                Lane::Yielding
            }
            _ => Lane::Urgent,
        }
    }

    /// Whether this write may queue a delivery (a transfer, a status notice, a replay): the
    /// commit that carries it wakes the deliverer.
    pub fn queues_delivery(&self) -> bool {
        matches!(
            self,
            Write::Submit(_)
                | Write::Status { .. }
                | Write::Failed { .. }
                | Write::Replay { .. }
                | Write::Linkage { .. }
                | Write::Timer { .. }
        )
    }

    /// A new transfer to store: its JSON is made here, on the submitter's task, not by the
    /// writer that every submission waits for.
    /// `native`: the document as the sender sent it (as text), kept as evidence.
    pub fn submit(
        transfer: Transfer,
        sender_ref: String,
        payload: String,
        native: Option<String>,
    ) -> Result<Write, StoreError> {
        let document = serde_json::to_string(&transfer).map_err(|e| StoreError::Corrupt {
            id: transfer.transfer_id.clone(),
            problem: e.to_string(),
        })?;
        Ok(Write::Submit(Box::new(NewTransfer { transfer, sender_ref, payload, document, native })))
    }
}

/// Carries out one write inside `tx`.
pub async fn execute(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    write: Write,
) -> Result<WriteResult, StoreError> {
    match write {
        Write::Submit(new) => {
            let mut results = submit_many(tx, backend, vec![*new]).await?;
            Ok(results.pop().unwrap_or(WriteResult::Done(false)))
        }
        Write::Status { transfer_id, update, role } => {
            status(tx, backend, &transfer_id, &update, role).await
        }
        Write::Delivered { item_id, at } => Ok(delivered_many(tx, backend, &[(item_id, at)])
            .await?
            .pop()
            .unwrap_or(WriteResult::Done(false))),
        Write::Failed { item_id, at, error, next_attempt_at, dead, undeliverable } => {
            let status = if dead { "dead" } else { "pending" };
            // An item given up on lets the next of its transfer go: its transfer is locked
            // first, as for every change to what waits (see `promote_next`).
            let pair = if dead { lock_item_transfer(tx, backend, item_id).await? } else { None };
            let changed = sqlx::query(
                "UPDATE outbox SET attempts = attempts + 1, status = $1, next_attempt_at = $2, leased_until = 0, last_error = $3 \
                 WHERE id = $4 AND status = 'pending'",
            )
            .bind(status)
            .bind(next_attempt_at)
            .bind(&error)
            .bind(item_id)
            .execute(&mut **tx)
            .await?
            .rows_affected();
            let row = sqlx::query(
                "SELECT destination, transfer_id, kind, attempts FROM outbox WHERE id = $1",
            )
            .bind(item_id)
            .fetch_optional(&mut **tx)
            .await?;
            if let Some(row) = row {
                let (destination, transfer_id, kind, attempts): (String, String, String, i64) =
                    (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?, row.try_get(3)?);
                if changed > 0 {
                    let entry = AuditEntry {
                        at,
                        actor: "gateway".into(),
                        action: if dead { "delivery.dead" } else { "delivery.failed" }.into(),
                        transfer_id: Some(transfer_id.clone()),
                        detail: serde_json::json!({"destination": destination, "kind": kind, "attempt": attempts, "error": error}),
                    };
                    super::audit::append(tx, backend, &[entry]).await?;
                }
                sqlx::query(
                    "INSERT INTO endpoint_health (endpoint, failing_since, last_error) VALUES ($1, $2, $3) \
                     ON CONFLICT (endpoint) DO UPDATE SET failing_since = COALESCE(endpoint_health.failing_since, $4), last_error = $5",
                )
                .bind(&destination)
                .bind(at)
                .bind(&error)
                .bind(at)
                .bind(&error)
                .execute(&mut **tx)
                .await?;
                if let (true, Some(pair)) = (changed > 0, &pair) {
                    promote_next(tx, backend, std::slice::from_ref(pair)).await?;
                }
                if let (true, true, Some(note)) =
                    (changed > 0, kind == DeliveryKind::Transfer.as_str(), undeliverable)
                {
                    reject_undeliverable(tx, backend, &transfer_id, note).await?;
                }
            }
            Ok(WriteResult::Done(changed > 0))
        }
        Write::Escalate { transfer_id, deadline, at } => {
            escalate(tx, backend, &transfer_id, deadline, at).await
        }
        Write::Acknowledge { transfer_id, destination, at } => {
            let Some((transfer, _)) = load_for_update(tx, backend, &transfer_id).await? else {
                return Ok(WriteResult::Done(false));
            };
            if transfer.to.to_string() != destination {
                return Ok(WriteResult::Done(false));
            }
            // The transfer's deliveries, the one on its way and any queued behind it (a
            // redelivery with a ruling): the desk has the transfer.
            sqlx::query(
                "UPDATE outbox SET status = 'delivered', delivered_at = $1 WHERE transfer_id = $2 AND destination = $3 \
                 AND kind = 'transfer' AND status IN ('pending', 'queued')",
            )
            .bind(at)
            .bind(&transfer_id)
            .bind(&destination)
            .execute(&mut **tx)
            .await?;
            promote_next(tx, backend, &[(transfer_id.clone(), destination.clone())]).await?;
            let acknowledged = [(transfer.transfer_id.as_str(), destination.as_str())];
            let recorded =
                mark_delivered_many(tx, backend, &acknowledged, ACKNOWLEDGEMENT, at).await?;
            Ok(WriteResult::Done(!recorded.is_empty()))
        }
        Write::Lease { now, lease, wants } => lease_due(tx, backend, now, lease, &wants).await,
        Write::Linkage { transfer_id, action, actor, at, settings, rule } => {
            act(tx, backend, &transfer_id, &action, &actor, at, &settings, Some(rule), None).await
        }
        Write::Timer { transfer_id, kind, now } => {
            timer(tx, backend, &transfer_id, &kind, now).await
        }
        Write::Audit(entries) => {
            super::audit::append(tx, backend, &entries).await?;
            Ok(WriteResult::Done(true))
        }
        Write::PutRecords { dataset, records, options, audit } => {
            let result = super::records::put(tx, backend, &dataset, &records, &options).await?;
            if let (Ok(outcomes), Some(mut entry)) = (&result, audit) {
                let written = outcomes.iter().filter(|o| **o == super::PutOutcome::Written).count();
                if written > 0 {
                    if let Some(detail) = entry.detail.as_object_mut() {
                        detail.insert("records".into(), records.len().into());
                        detail.insert("written".into(), written.into());
                    }
                    super::audit::append(tx, backend, &[entry]).await?;
                }
            }
            Ok(WriteResult::Records(result))
        }
        Write::Replay { item_id, at, by, request_id } => {
            // Replayed, a dead letter waits like a new delivery: behind what of its transfer
            // for that destination is still undone, if anything.
            let Some((transfer_id, destination)) = lock_item_transfer(tx, backend, item_id).await?
            else {
                return Ok(WriteResult::Done(false));
            };
            let status = first_status(tx, &transfer_id, &destination).await?;
            let replayed = sqlx::query(
                "UPDATE outbox SET status = $1, attempts = 0, next_attempt_at = $2, leased_until = 0 WHERE id = $3 AND status = 'dead' \
                 AND NOT (kind = 'transfer' AND EXISTS (SELECT 1 FROM transfers t WHERE t.transfer_id = outbox.transfer_id AND t.state = 'rejected')) \
                 RETURNING transfer_id, destination, kind",
            )
            .bind(status.as_str())
            .bind(super::now_millis())
            .bind(item_id)
            .fetch_optional(&mut **tx)
            .await?;
            let Some(row) = replayed else { return Ok(WriteResult::Done(false)) };
            let (transfer_id, destination, kind): (String, String, String) =
                (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
            let mut detail =
                serde_json::json!({"item": item_id, "destination": destination, "kind": kind});
            if !request_id.is_empty() {
                detail["request_id"] = serde_json::json!(request_id);
            }
            let entry = AuditEntry {
                at,
                actor: by,
                action: "delivery.replayed".into(),
                transfer_id: Some(transfer_id),
                detail,
            };
            super::audit::append(tx, backend, &[entry]).await?;
            Ok(WriteResult::Done(true))
        }
    }
}

/// A transfer to store, with its idempotency key, the payload of its first delivery, and its
/// JSON.
#[derive(Debug)]
pub struct NewTransfer {
    pub transfer: Transfer,
    pub sender_ref: String,
    pub payload: String,
    pub document: String,
    /// The native document as received, when it came as one.
    pub native: Option<String>,
}

/// The `escalations` column of a transfer: the deadlines its history records as missed.
fn escalations_of(transfer: &Transfer) -> String {
    linkage::current_round(&transfer.history)
        .iter()
        .filter(|h| h.state == HistoryEvent::Escalated)
        .filter_map(|h| h.note.as_deref())
        .map(|deadline| format!("{deadline};"))
        .collect()
}

/// Stores new transfers, several per statement: each is inserted unless its sender used its
/// `sender_ref` before (then the first transfer is answered, and nothing else is written).
/// On SQLite a whole group commit's submissions go through here together.
pub async fn submit_many(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    items: Vec<NewTransfer>,
) -> Result<Vec<WriteResult>, StoreError> {
    let now = Timestamp::now().unix_seconds();
    // The same key twice in one batch: the later ones are answered with the first.
    let mut first_of: std::collections::HashMap<(String, &str), usize> =
        std::collections::HashMap::new();
    let mut duplicate_of = vec![None; items.len()];
    for (i, item) in items.iter().enumerate() {
        match first_of.entry((item.transfer.from.to_string(), item.sender_ref.as_str())) {
            std::collections::hash_map::Entry::Occupied(e) => duplicate_of[i] = Some(*e.get()),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(i);
            }
        }
    }
    let candidates: Vec<usize> = (0..items.len()).filter(|i| duplicate_of[*i].is_none()).collect();
    let mut inserted = std::collections::HashSet::new();
    for chunk in candidates.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO transfers (transfer_id, sender, sender_ref, destination, state, requested_at, receive_by, resolve_by, \
             document, created_at, updated_at, overdue, escalations, native) VALUES {} \
             ON CONFLICT (sender, sender_ref) DO NOTHING RETURNING transfer_id",
            values(backend, chunk.len(), 14, None)
        );
        let mut query = sqlx::query(&sql);
        for &i in chunk {
            let t = &items[i].transfer;
            query = query
                .bind(&t.transfer_id)
                .bind(t.from.to_string())
                .bind(&items[i].sender_ref)
                .bind(t.to.to_string())
                .bind(t.state.as_str())
                .bind(t.requested_at.unix_seconds())
                .bind(t.deadlines.receive_by.unix_seconds())
                .bind(t.deadlines.resolve_by.map(Timestamp::unix_seconds))
                .bind(&items[i].document)
                .bind(now)
                .bind(now)
                .bind(i64::from(t.overdue))
                .bind(escalations_of(t))
                .bind(items[i].native.as_deref());
        }
        for row in query.fetch_all(&mut **tx).await? {
            inserted.insert(row.try_get::<String, _>(0)?);
        }
    }
    let created: Vec<usize> = candidates
        .iter()
        .copied()
        .filter(|&i| inserted.contains(&items[i].transfer.transfer_id))
        .collect();
    for chunk in created.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO case_transfers (case_id, transfer_id, sender) VALUES {}",
            values(backend, chunk.len(), 3, None)
        );
        let mut query = sqlx::query(&sql);
        for &i in chunk {
            let t = &items[i].transfer;
            query = query.bind(&t.case.case_id).bind(&t.transfer_id).bind(t.from.to_string());
        }
        query.execute(&mut **tx).await?;
    }
    let links: Vec<(&str, &str, &str)> = created
        .iter()
        .flat_map(|&i| {
            let t = &items[i].transfer;
            t.links.iter().map(|l| (l.transfer_id.as_str(), l.rel.as_str(), t.transfer_id.as_str()))
        })
        .collect();
    for chunk in links.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO transfer_links (linked_id, rel, transfer_id) VALUES {} ON CONFLICT DO NOTHING",
            values(backend, chunk.len(), 3, None)
        );
        let mut query = sqlx::query(&sql);
        for (linked, rel, id) in chunk {
            query = query.bind(*linked).bind(*rel).bind(*id);
        }
        query.execute(&mut **tx).await?;
    }
    for &i in &created {
        let t = &items[i].transfer;
        if let Some(needed_by) = t.needed_by {
            set_timer(tx, &t.transfer_id, TIMER_NEEDED_BY, Some(needed_by.unix_seconds())).await?;
        }
    }
    let deliveries: Vec<Delivery<'_>> = created
        .iter()
        .map(|&i| {
            let t = &items[i].transfer;
            Delivery {
                destination: &t.to,
                transfer_id: &t.transfer_id,
                kind: DeliveryKind::Transfer,
                payload: &items[i].payload,
                status: OutboxStatus::Pending,
            }
        })
        .collect();
    enqueue(tx, backend, &deliveries, now).await?;
    let mut events: Vec<Event<'_>> = Vec::with_capacity(created.len());
    for &i in &created {
        let (transfer, document) = (&items[i].transfer, items[i].document.as_str());
        events.push(Event::new(transfer, "submitted", document));
        // Overdue on arrival: both parties hear of the escalation like any other.
        if transfer.overdue {
            events.push(Event::new(transfer, "escalated", document));
        }
    }
    record(tx, backend, &events, now).await?;
    let mut results: Vec<Option<WriteResult>> = (0..items.len()).map(|_| None).collect();
    for &i in candidates.iter().filter(|&&i| !inserted.contains(&items[i].transfer.transfer_id)) {
        let row = sqlx::query(
            "SELECT transfer_id, document FROM transfers WHERE sender = $1 AND sender_ref = $2",
        )
        .bind(items[i].transfer.from.to_string())
        .bind(&items[i].sender_ref)
        .fetch_one(&mut **tx)
        .await?;
        results[i] = Some(WriteResult::Submitted {
            transfer: Box::new(transfer_from_row(&row)?),
            created: false,
        });
    }
    for (i, item) in items.into_iter().enumerate() {
        if results[i].is_none()
            && duplicate_of[i].is_none()
            && inserted.contains(&item.transfer.transfer_id)
        {
            results[i] =
                Some(WriteResult::Submitted { transfer: Box::new(item.transfer), created: true });
        }
    }
    for i in 0..results.len() {
        if let Some(first) = duplicate_of[i] {
            if let Some(WriteResult::Submitted { transfer, .. }) = &results[first] {
                results[i] =
                    Some(WriteResult::Submitted { transfer: transfer.clone(), created: false });
            }
        }
    }
    Ok(results.into_iter().map(|r| r.unwrap_or(WriteResult::Done(false))).collect())
}

async fn load_for_update(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    transfer_id: &str,
) -> Result<Option<(Transfer, String)>, StoreError> {
    let lock = if backend == Backend::Postgres { " FOR UPDATE" } else { "" };
    let row = sqlx::query(&format!(
        "SELECT transfer_id, document, sender_ref, escalations FROM transfers WHERE transfer_id = $1{lock}"
    ))
    .bind(transfer_id)
    .fetch_optional(&mut **tx)
    .await?;
    match row {
        None => Ok(None),
        Some(row) => {
            let sender_ref: String = row.try_get(2)?;
            Ok(Some((transfer_from_row(&row)?, sender_ref)))
        }
    }
}

/// `n` transfers' ids and documents by id, in id order (`$1`…), locked if `for_update`.
pub(super) fn transfers_by_id_sql(backend: Backend, n: usize, for_update: bool) -> String {
    let lock = if for_update { " FOR UPDATE" } else { "" };
    format!(
        "SELECT transfer_id, document FROM transfers WHERE transfer_id IN ({}) ORDER BY transfer_id{lock}",
        in_list(backend, n, 1)
    )
}

/// Reads transfers by id, several per statement, leaving out ids not found: in id order, and
/// locked on PostgreSQL, so that two replicas' writes of several transfers lock shared rows in
/// the same order.
async fn load_many_for_update(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    ids: &[&str],
) -> Result<Vec<Transfer>, StoreError> {
    let mut transfers = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(ROWS_PER_STATEMENT) {
        let sql = transfers_by_id_sql(backend, chunk.len(), backend == Backend::Postgres);
        let mut query = sqlx::query(&sql);
        for id in chunk {
            query = query.bind(*id);
        }
        for row in query.fetch_all(&mut **tx).await? {
            transfers.push(transfer_from_row(&row)?);
        }
    }
    Ok(transfers)
}

/// Writes a changed transfer: its document and the columns the sweeper and lists read from it
/// (state, deadlines — an extension or an overruling moves them — and escalations).
async fn save(
    tx: &mut Transaction<'_, Any>,
    transfer: &Transfer,
    now: i64,
) -> Result<String, StoreError> {
    let document = serde_json::to_string(transfer).map_err(|e| StoreError::Corrupt {
        id: transfer.transfer_id.clone(),
        problem: e.to_string(),
    })?;
    sqlx::query(
        "UPDATE transfers SET state = $1, overdue = $2, document = $3, updated_at = $4, escalations = $5, \
         receive_by = $6, resolve_by = $7 WHERE transfer_id = $8",
    )
    .bind(transfer.state.as_str())
    .bind(i64::from(transfer.overdue))
    .bind(&document)
    .bind(now)
    .bind(escalations_of(transfer))
    .bind(transfer.deadlines.receive_by.unix_seconds())
    .bind(transfer.deadlines.resolve_by.map(Timestamp::unix_seconds))
    .bind(&transfer.transfer_id)
    .execute(&mut **tx)
    .await?;
    Ok(document)
}

async fn status(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    transfer_id: &str,
    update: &StatusUpdate,
    role: Role,
) -> Result<WriteResult, StoreError> {
    let Some((mut transfer, sender_ref)) = load_for_update(tx, backend, transfer_id).await? else {
        return Ok(WriteResult::Status(Err(StatusRefused::NotFound(transfer_id.to_string()))));
    };
    let clock = Timestamp::now();
    // The gateway's own updates are stamped by its own clock.
    if role != Role::Gateway && !lifecycle::is_repeat(&transfer, update) {
        if let Err(refusal) = lifecycle::check_time(&transfer, update, clock) {
            return Ok(WriteResult::Status(Err(refusal.into())));
        }
    }
    // Deadlines already passed and not met are missed whatever this update says: the update
    // that arrives late records the miss, in its own commit (`canonical.md`, "Deadlines").
    let misses = lifecycle::missed_deadlines(&transfer, clock);
    let outcome = match lifecycle::apply(&mut transfer, update, role) {
        Ok(outcome) => outcome,
        Err(refusal) => return Ok(WriteResult::Status(Err(refusal.into()))),
    };
    if outcome == Outcome::Duplicate {
        return Ok(WriteResult::Status(Ok((Box::new(transfer), outcome))));
    }
    let now = clock.unix_seconds();
    lifecycle::record_misses(&mut transfer, &misses, clock);
    let document = save(tx, &transfer, now).await?;
    // The other party hears of it, by the reference it knows the transfer by. The gateway's
    // own `delivered` is no news to a desk; its undeliverable rejection is, and an assist
    // cancelled with its parent (both of the assist's desks hear of that).
    let receivers: &[Party] = match (role, update.state) {
        (Role::Origin, _) => &[Party::Destination],
        (Role::Destination, _) | (Role::Gateway, State::Rejected) => &[Party::Origin],
        (Role::Gateway, State::Cancelled) => &[Party::Origin, Party::Destination],
        (Role::Gateway, _) => &[],
    };
    for to in receivers {
        enqueue_notice(tx, backend, &transfer, &sender_ref, *to, update, now).await?;
    }
    let mut events = vec![Event::new(&transfer, update.state.as_str(), &document)];
    if !misses.is_empty() {
        events.push(Event::new(&transfer, "escalated", &document));
    }
    record(tx, backend, &events, now).await?;
    if update.state == State::Cancelled {
        cancel_assists(tx, backend, &transfer, update.at).await?;
    }
    Ok(WriteResult::Status(Ok((Box::new(transfer), outcome))))
}

/// Cancels the open assists of a cancelled transfer (`linkage.md`: an assist is cancelled with
/// the transfer it helps), by the gateway, in the parent's commit.
async fn cancel_assists(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    parent: &Transfer,
    at: Timestamp,
) -> Result<(), StoreError> {
    let assists: Vec<String> = sqlx::query_scalar(
        "SELECT transfer_id FROM transfer_links WHERE linked_id = $1 AND rel = $2 ORDER BY transfer_id",
    )
    .bind(&parent.transfer_id)
    .bind(LinkRel::AssistFor.as_str())
    .fetch_all(&mut **tx)
    .await?;
    for id in assists {
        let Some((assist, _)) = load_for_update(tx, backend, &id).await? else { continue };
        if lifecycle::is_terminal(assist.state) || assist.state >= State::Resolved {
            continue;
        }
        let update = StatusUpdate {
            transfer_id: Some(id.clone()),
            transfer_ref: None,
            state: State::Cancelled,
            at: at.max(assist.history.last().map_or(at, |h| h.at)),
            by: assist.from.clone(),
            unit: None,
            note: Some(format!("关联转办已撤回 (transfer {} cancelled)", parent.transfer_id)),
            resolution: None,
            feedback: None,
            reason_code: None,
        };
        Box::pin(status(tx, backend, &id, &update, Role::Gateway)).await?;
    }
    Ok(())
}

/// Queues a status document about `transfer` for one of its desks, naming the transfer by the
/// reference that desk knows it by (the origin its `sender_ref`, the destination the id).
async fn enqueue_notice(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    transfer: &Transfer,
    sender_ref: &str,
    to: Party,
    notice: &StatusUpdate,
    now: i64,
) -> Result<(), StoreError> {
    let (receiver, reference) = match to {
        Party::Origin => (&transfer.from, sender_ref.to_string()),
        _ => (&transfer.to, transfer.transfer_id.clone()),
    };
    let mut notice = notice.clone();
    notice.transfer_id = Some(transfer.transfer_id.clone());
    notice.transfer_ref = Some(reference);
    let payload = serde_json::to_string(&notice).map_err(|e| StoreError::Corrupt {
        id: transfer.transfer_id.clone(),
        problem: e.to_string(),
    })?;
    let status = first_status(tx, &transfer.transfer_id, &receiver.to_string()).await?;
    let delivery = Delivery {
        destination: receiver,
        transfer_id: &transfer.transfer_id,
        kind: DeliveryKind::Status,
        payload: &payload,
        status,
    };
    enqueue(tx, backend, &[delivery], now).await
}

/// Sets (`Some`) or clears a linkage timer of a transfer.
async fn set_timer(
    tx: &mut Transaction<'_, Any>,
    transfer_id: &str,
    kind: &str,
    due: Option<i64>,
) -> Result<(), StoreError> {
    match due {
        Some(due) => {
            sqlx::query(
                "INSERT INTO timers (transfer_id, kind, due) VALUES ($1, $2, $3) \
                 ON CONFLICT (transfer_id, kind) DO UPDATE SET due = $4",
            )
            .bind(transfer_id)
            .bind(kind)
            .bind(due)
            .bind(due)
            .execute(&mut **tx)
            .await?;
        }
        None => {
            sqlx::query("DELETE FROM timers WHERE transfer_id = $1 AND kind = $2")
                .bind(transfer_id)
                .bind(kind)
                .execute(&mut **tx)
                .await?;
        }
    }
    Ok(())
}

/// Carries out a linkage action (`linkage.md`) on one transfer: the rules of
/// [`linkage::apply`], deadlines the clock has passed recorded as missed, the transfer saved,
/// the desks told (status notices in their formats), an overruled transfer delivered again,
/// the dispute's timer set or cleared, and the feed and audit written. `escalate`: an
/// escalation to add (a default that fired). `rule`: an overruled transfer's fresh deadlines
/// (`None`: the spans of its own deadlines — a default never overrules).
#[allow(clippy::too_many_arguments)]
async fn act(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    transfer_id: &str,
    action: &Action,
    actor: &Actor,
    at: Timestamp,
    settings: &linkage::Settings,
    rule: Option<DeadlineRule>,
    escalate: Option<&str>,
) -> Result<WriteResult, StoreError> {
    let Some((mut transfer, sender_ref)) = load_for_update(tx, backend, transfer_id).await? else {
        return Ok(WriteResult::Linkage(Err(StatusRefused::NotFound(transfer_id.to_string()))));
    };
    let rule = rule.unwrap_or_else(|| DeadlineRule::spans_of(&transfer));
    let effect = match linkage::apply(&mut transfer, action, actor, at, settings, rule) {
        Ok(effect) => effect,
        Err(refusal) => return Ok(WriteResult::Linkage(Err(refusal.into()))),
    };
    if effect.entries.is_empty() {
        // A repeat of an action already applied (every action writes an entry): nothing to
        // write, no default to fire again.
        return Ok(WriteResult::Linkage(Ok((Box::new(transfer), Vec::new()))));
    }
    let clock = Timestamp::now();
    let now = clock.unix_seconds();
    let mut entries = effect.entries.clone();
    if let Some(deadline) = escalate {
        transfer.overdue = true;
        let entry = lifecycle::escalation(deadline, clock);
        transfer.history.push(entry.clone());
        entries.push(entry);
    }
    let misses = lifecycle::missed_deadlines(&transfer, clock);
    lifecycle::record_misses(&mut transfer, &misses, clock);
    let document = save(tx, &transfer, now).await?;
    // A notice carries the transfer's current state, from the other party's side — pushed only
    // when that state has a native code (`received` and after; before that the desk learns
    // through the feed and the console, `linkage.md`).
    let native = !matches!(transfer.state, State::Submitted | State::Delivered);
    for notice in effect.notices.iter().filter(|_| native) {
        let by = match notice.to {
            Party::Origin => transfer.to.clone(),
            _ => transfer.from.clone(),
        };
        let update = StatusUpdate {
            transfer_id: None,
            transfer_ref: None,
            state: transfer.state,
            at,
            by,
            unit: None,
            note: Some(notice.note.clone()),
            resolution: None,
            feedback: None,
            reason_code: None,
        };
        enqueue_notice(tx, backend, &transfer, &sender_ref, notice.to, &update, now).await?;
    }
    if effect.redeliver {
        // The transfer as its destination was first sent it (its references already in the
        // destination's own terms), now with the ruling.
        let first: String = sqlx::query_scalar(
            "SELECT payload FROM outbox WHERE transfer_id = $1 AND destination = $2 AND kind = 'transfer' ORDER BY id LIMIT 1",
        )
        .bind(&transfer.transfer_id)
        .bind(transfer.to.to_string())
        .fetch_one(&mut **tx)
        .await?;
        let corrupt = |e: serde_json::Error| StoreError::Corrupt {
            id: transfer_id.to_string(),
            problem: e.to_string(),
        };
        let mut request: crate::model::TransferRequest =
            serde_json::from_str(&first).map_err(corrupt)?;
        request.ruling = Some(
            transfer
                .dispute
                .as_ref()
                .and_then(|d| d.decision.as_ref())
                .and_then(|d| d.note.clone())
                .unwrap_or_default(),
        );
        let payload = serde_json::to_string(&request).map_err(corrupt)?;
        let status = first_status(tx, &transfer.transfer_id, &transfer.to.to_string()).await?;
        let delivery = Delivery {
            destination: &transfer.to,
            transfer_id: &transfer.transfer_id,
            kind: DeliveryKind::Transfer,
            payload: &payload,
            status,
        };
        enqueue(tx, backend, &[delivery], now).await?;
    }
    if let Some(due) = effect.dispute_timer {
        set_timer(tx, transfer_id, TIMER_DISPUTE, due.map(Timestamp::unix_seconds)).await?;
    }
    if let Some(due) = effect.extension_timer {
        set_timer(tx, transfer_id, TIMER_EXTENSION, due.map(Timestamp::unix_seconds)).await?;
    }
    let mut events: Vec<Event<'_>> =
        effect.entries.iter().map(|e| Event::new(&transfer, e.state.as_str(), &document)).collect();
    if escalate.is_some() || !misses.is_empty() {
        events.push(Event::new(&transfer, "escalated", &document));
    }
    record(tx, backend, &events, now).await?;
    Ok(WriteResult::Linkage(Ok((Box::new(transfer), entries))))
}

/// A due linkage timer: fires the default it stands for, if it still applies, and goes.
async fn timer(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    transfer_id: &str,
    kind: &str,
    now: Timestamp,
) -> Result<WriteResult, StoreError> {
    set_timer(tx, transfer_id, kind, None).await?;
    match kind {
        TIMER_DISPUTE => {
            // Undecided by `dispute_within`: the first receiver keeps it, and the office hears.
            let action = Action::DecideDispute {
                outcome: DisputeOutcome::FirstReceiver,
                note: Some("dispute_within passed undecided".to_string()),
            };
            let gateway = Actor { party: Party::Gateway, name: "gateway".to_string() };
            let settings = linkage::Settings::default();
            let result = act(
                tx,
                backend,
                transfer_id,
                &action,
                &gateway,
                now,
                &settings,
                None,
                Some("dispute"),
            )
            .await?;
            let fired =
                matches!(&result, WriteResult::Linkage(Ok((_, entries))) if !entries.is_empty());
            Ok(WriteResult::Done(fired))
        }
        // An unanswered extension lapses with resolve_by's escalation (which records it).
        TIMER_EXTENSION => {
            escalate(tx, backend, transfer_id, "resolve_by", now.unix_seconds()).await
        }
        _ => escalate(tx, backend, transfer_id, TIMER_NEEDED_BY, now.unix_seconds()).await,
    }
}

/// Rejects a transfer the gateway could not deliver, on its destination's behalf (`by`
/// `gateway`, reason `undeliverable`), and tells the origin like any status. A transfer the
/// destination has answered meanwhile is left as it is.
async fn reject_undeliverable(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    transfer_id: &str,
    note: String,
) -> Result<(), StoreError> {
    let Some((transfer, _)) = load_for_update(tx, backend, transfer_id).await? else {
        return Ok(());
    };
    let update = StatusUpdate {
        transfer_id: Some(transfer.transfer_id.clone()),
        transfer_ref: None,
        state: State::Rejected,
        at: Timestamp::now(),
        by: transfer.to.clone(),
        unit: None,
        note: Some(note),
        resolution: None,
        feedback: None,
        reason_code: Some(crate::model::ReasonCode::Undeliverable),
    };
    status(tx, backend, transfer_id, &update, Role::Gateway).await?;
    Ok(())
}

/// A destination's due deliveries (`$1` destination, `$2` and `$3` now), with `$except` added
/// to the condition and `$limit` the limit's parameter: pending, due and not leased, longest
/// due first along the `outbox_due` index. Nothing else is asked: a delivery behind an undone
/// earlier one of its transfer is `queued`, not `pending`, so the read needs no look at other
/// rows — the look whose plan followed the table's statistics (a walk of every pending item
/// for every candidate when they were taken with little waiting: docs/PERFORMANCE.md).
macro_rules! due_deliveries {
    ($except:literal, $limit:literal) => {
        concat!(
            "SELECT id, destination, transfer_id, kind, payload, attempts, created_at, status, last_error \
             FROM outbox o WHERE o.status = 'pending' AND o.destination = $1 AND o.next_attempt_at <= $2 AND o.leased_until <= $3",
            $except,
            " ORDER BY o.next_attempt_at LIMIT ",
            $limit
        )
    };
}

/// Due deliveries, `$4` the limit.
pub(super) const DUE: &str = due_deliveries!("", "$4");

/// Due deliveries except those whose ids are in `$4` (a JSON array: what the SQLite deliverer
/// already holds), `$5` the limit. The ids are checked on the index entry, before the row is
/// read, so held items cost a backlog's drain nothing (SQLite only: `json_each`).
pub(super) const DUE_EXCEPT: &str =
    due_deliveries!(" AND o.id NOT IN (SELECT value FROM json_each($4))", "$5");

/// Leases up to `limit` due deliveries of each destination until `now + lease`: pending (so
/// the first undone of their transfer for that destination), due, not leased by another
/// worker. Longest due first, read along
/// the `outbox_due` index one destination at a time, so a round costs what it takes, not the
/// size of the backlog; the leases are taken in one statement.
async fn lease_due(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    now: i64,
    lease: i64,
    wants: &[(String, i64)],
) -> Result<WriteResult, StoreError> {
    let lock = if backend == Backend::Postgres { " FOR UPDATE SKIP LOCKED" } else { "" };
    let sql = format!("{DUE}{lock}");
    let mut items = Vec::new();
    for (destination, limit) in wants.iter().filter(|(_, limit)| *limit > 0) {
        let rows = sqlx::query(&sql)
            .bind(destination)
            .bind(now)
            .bind(now)
            .bind(*limit)
            .fetch_all(&mut **tx)
            .await?;
        for row in &rows {
            items.push(outbox_from_row(row)?);
        }
    }
    // The lease moves the item's next attempt too: the `outbox_due` index then holds it past
    // `now` until the lease runs out, so the next round's read starts after it instead of
    // walking every item out or awaiting its record (thousands while a backlog drains).
    for chunk in items.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "UPDATE outbox SET leased_until = {}, next_attempt_at = {} WHERE id IN ({})",
            in_list(backend, 1, 1),
            in_list(backend, 1, 2),
            in_list(backend, chunk.len(), 3)
        );
        let mut query = sqlx::query(&sql).bind(now + lease).bind(now + lease);
        for item in chunk {
            query = query.bind(item.id);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(WriteResult::Leased(items))
}

/// `?, ?, ?` (SQLite) or `$FIRST, …` (PostgreSQL): `n` parameters for an `IN (…)` list. A
/// statement uses one style throughout: SQLite numbers `$1` and `?` independently.
fn in_list(backend: Backend, n: usize, first: usize) -> String {
    (0..n)
        .map(|i| match backend {
            Backend::Sqlite => "?".to_string(),
            Backend::Postgres => format!("${}", first + i),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Deliveries their destinations confirmed (their native success receipts), several per
/// statement: each outbox item marked delivered, its destination healthy, an audit entry each,
/// and `delivered` on the transfers not already past it. An item no longer pending changes
/// nothing (`Done(false)`). On SQLite a whole group commit's outcomes go through here together.
pub async fn delivered_many(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    items: &[(i64, i64)],
) -> Result<Vec<WriteResult>, StoreError> {
    // id → (destination, transfer, kind, at) of the items still pending.
    let at_of: std::collections::HashMap<i64, i64> = items.iter().copied().collect();
    let mut found: Vec<(i64, String, String, String, i64)> = Vec::with_capacity(items.len());
    let ids: Vec<i64> = at_of.keys().copied().collect();
    for chunk in ids.chunks(ROWS_PER_STATEMENT) {
        let sql = outbox_items_sql(backend, chunk.len());
        let mut query = sqlx::query(&sql);
        for id in chunk {
            query = query.bind(*id);
        }
        for row in query.fetch_all(&mut **tx).await? {
            let (id, status): (i64, String) = (row.try_get(0)?, row.try_get(4)?);
            if status == "pending" {
                found.push((id, row.try_get(1)?, row.try_get(2)?, row.try_get(3)?, at_of[&id]));
            }
        }
    }
    found.sort_by_key(|f| f.0);
    let at = found.iter().map(|f| f.4).max().unwrap_or_default();
    let transfer_ids: Vec<&str> = found.iter().map(|f| f.2.as_str()).collect();
    lock_transfers(tx, backend, &transfer_ids).await?;
    // On PostgreSQL another replica may be recording the same delivery at this moment (its
    // lease ran out while this one's answer was on its way): the update is guarded by the
    // status and says which items it changed, so the second waits on the row, changes nothing,
    // and records nothing. SQLite has one writer, whose transaction has just read them pending;
    // there the update goes by id alone, for the reason `outbox_items_sql` gives.
    let guard = match backend {
        Backend::Postgres => " AND status = 'pending' RETURNING id",
        Backend::Sqlite => "",
    };
    let mut marked = std::collections::HashSet::with_capacity(found.len());
    for chunk in found.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "UPDATE outbox SET status = 'delivered', delivered_at = {}, attempts = attempts + 1, leased_until = 0 WHERE id IN ({}){guard}",
            in_list(backend, 1, 1),
            in_list(backend, chunk.len(), 2)
        );
        let mut query = sqlx::query_scalar::<_, i64>(&sql).bind(at);
        for f in chunk {
            query = query.bind(f.0);
        }
        match backend {
            Backend::Postgres => marked.extend(query.fetch_all(&mut **tx).await?),
            Backend::Sqlite => {
                query.fetch_all(&mut **tx).await?;
                marked.extend(chunk.iter().map(|f| f.0));
            }
        }
    }
    found.retain(|f| marked.contains(&f.0));
    let done_pairs: Vec<(String, String)> =
        found.iter().map(|f| (f.2.clone(), f.1.clone())).collect();
    promote_next(tx, backend, &done_pairs).await?;
    let destinations: std::collections::BTreeSet<&str> =
        found.iter().map(|f| f.1.as_str()).collect();
    for destination in destinations {
        // Written when it changes (at most once a second while healthy), not by every commit:
        // the row is one per destination, and on PostgreSQL each write locked it until its
        // commit, so two replicas' commits during a drain queued behind each other on it.
        let health: Option<(Option<i64>, Option<i64>)> = sqlx::query_as(
            "SELECT last_success, failing_since FROM endpoint_health WHERE endpoint = $1",
        )
        .bind(destination)
        .fetch_optional(&mut **tx)
        .await?;
        if matches!(health, Some((Some(last), None)) if last >= at) {
            continue;
        }
        sqlx::query(
            "INSERT INTO endpoint_health (endpoint, last_success) VALUES ($1, $2) \
             ON CONFLICT (endpoint) DO UPDATE SET last_success = $3, failing_since = NULL, last_error = NULL",
        )
        .bind(destination)
        .bind(at)
        .bind(at)
        .execute(&mut **tx)
        .await?;
    }
    let transfers: Vec<(&str, &str)> = found
        .iter()
        .filter(|f| f.3 == DeliveryKind::Transfer.as_str())
        .map(|f| (f.2.as_str(), f.1.as_str()))
        .collect();
    let recorded = mark_delivered_many(tx, backend, &transfers, SUCCESS_RECEIPT, at).await?;
    // A delivery that recorded `delivered` is in that entry; the others (notices, a transfer
    // already past `delivered`) get one of their own.
    let entries: Vec<AuditEntry> = found
        .iter()
        .filter(|f| !(f.3 == DeliveryKind::Transfer.as_str() && recorded.contains(f.2.as_str())))
        .map(|(_, destination, transfer_id, kind, at)| AuditEntry {
            at: *at,
            actor: destination.clone(),
            action: "delivery.delivered".into(),
            transfer_id: Some(transfer_id.clone()),
            detail: receipt(destination, kind, SUCCESS_RECEIPT),
        })
        .collect();
    super::audit::append(tx, backend, &entries).await?;
    let done: std::collections::HashSet<i64> = found.iter().map(|f| f.0).collect();
    Ok(items.iter().map(|(id, _)| WriteResult::Done(done.contains(id))).collect())
}

/// How a destination confirmed a delivery, as its audit entry says: a pushed document's answer,
/// or a pull endpoint's acknowledgement.
const SUCCESS_RECEIPT: &str = "the destination's success receipt";
const ACKNOWLEDGEMENT: &str = "the destination's acknowledgement";

/// What an audit entry says of a confirmed delivery.
fn receipt(destination: &str, kind: &str, answer: &str) -> serde_json::Value {
    serde_json::json!({"destination": destination, "kind": kind, "answer": answer})
}

/// `n` outbox items by id, with their status. By id alone: with `status = 'pending'` in the
/// condition SQLite walked every pending entry of `outbox_due` instead (57 ms a statement with
/// a million waiting, a drain of 1,500/s), so the status is checked by the caller.
pub(super) fn outbox_items_sql(backend: Backend, n: usize) -> String {
    format!("SELECT id, destination, transfer_id, kind, status FROM outbox WHERE id IN ({}) ORDER BY id", in_list(backend, n, 1))
}

/// Records `delivered` on these transfers (id, the destination that confirmed it; `answer` says
/// how), each unless it is already past it (its destination answered first), several per
/// statement; returns the ids recorded. Each one's audit entry names the confirmation too, and
/// the figures' facts are rewritten only where `delivered` moved them (today it moves none).
async fn mark_delivered_many<'a>(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    transfers: &[(&'a str, &'a str)],
    answer: &str,
    at: i64,
) -> Result<std::collections::HashSet<String>, StoreError> {
    let destination_of: std::collections::HashMap<&str, &str> = transfers.iter().copied().collect();
    let transfer_ids: Vec<&str> = transfers.iter().map(|t| t.0).collect();
    let mut changed: Vec<(Transfer, String, bool)> = Vec::new();
    for mut transfer in load_many_for_update(tx, backend, &transfer_ids).await? {
        let facts_before = super::facts::Fact::of(&transfer, 0);
        let update = StatusUpdate {
            transfer_id: Some(transfer.transfer_id.clone()),
            transfer_ref: None,
            state: State::Delivered,
            at: Timestamp::from_unix_seconds(at).unwrap_or_else(Timestamp::now),
            by: transfer.to.clone(),
            unit: None,
            note: None,
            resolution: None,
            feedback: None,
            reason_code: None,
        };
        if let Ok(Outcome::Applied(_)) = lifecycle::apply(&mut transfer, &update, Role::Gateway) {
            let document = serde_json::to_string(&transfer).map_err(|e| StoreError::Corrupt {
                id: transfer.transfer_id.clone(),
                problem: e.to_string(),
            })?;
            let facts = super::facts::Fact::of(&transfer, 0) != facts_before;
            changed.push((transfer, document, facts));
        }
    }
    for chunk in changed.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "WITH v (id, state, document) AS (VALUES {}) \
             UPDATE transfers SET state = v.state, document = v.document, updated_at = {at} FROM v WHERE transfers.transfer_id = v.id",
            values(backend, chunk.len(), 3, None)
        );
        let mut query = sqlx::query(&sql);
        for (transfer, document, _) in chunk {
            query = query.bind(&transfer.transfer_id).bind(transfer.state.as_str()).bind(document);
        }
        query.execute(&mut **tx).await?;
    }
    let events: Vec<Event<'_>> = changed
        .iter()
        .map(|(transfer, document, facts)| Event {
            facts: *facts,
            receipt: destination_of
                .get(transfer.transfer_id.as_str())
                .map(|destination| Receipt { destination, answer }),
            ..Event::new(transfer, "delivered", document)
        })
        .collect();
    record(tx, backend, &events, at).await?;
    Ok(changed.into_iter().map(|(transfer, _, _)| transfer.transfer_id).collect())
}

/// A transfer to escalate for a deadline it missed, as of `at`.
pub struct Escalation {
    pub transfer_id: String,
    pub deadline: &'static str,
    pub at: i64,
}

/// Escalates transfers for the deadlines they missed, their reads and the events, facts and
/// audit entries they write several per statement: each is escalated unless it is gone, was
/// already escalated for that deadline in this round, or no longer misses it (`Done(false)`).
/// On SQLite and PostgreSQL alike, a group commit's escalations go through here together.
pub async fn escalate_many(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    items: &[Escalation],
) -> Result<Vec<WriteResult>, StoreError> {
    let mut ids: Vec<&str> = items.iter().map(|e| e.transfer_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut transfers: std::collections::HashMap<String, Transfer> =
        load_many_for_update(tx, backend, &ids)
            .await?
            .into_iter()
            .map(|t| (t.transfer_id.clone(), t))
            .collect();
    let mut results = Vec::with_capacity(items.len());
    // Each escalation's transfer as it left it, its document and its moment.
    let mut escalated: Vec<(Transfer, String, i64)> = Vec::new();
    for item in items {
        let Some(transfer) = transfers.get_mut(&item.transfer_id) else {
            results.push(WriteResult::Done(false));
            continue;
        };
        let now = Timestamp::from_unix_seconds(item.at).unwrap_or_else(Timestamp::now);
        // A deadline already escalated in this round is not missed again.
        if !lifecycle::missed_deadlines(transfer, now).contains(&item.deadline) {
            results.push(WriteResult::Done(false));
            continue;
        }
        lifecycle::record_misses(transfer, &[item.deadline], now);
        let document = save(tx, transfer, item.at).await?;
        escalated.push((transfer.clone(), document, item.at));
        results.push(WriteResult::Done(true));
    }
    // One sweep's escalations share their moment: recorded together, a run of moments each.
    for run in escalated.chunk_by(|a, b| a.2 == b.2) {
        let events: Vec<Event<'_>> = run
            .iter()
            .map(|(transfer, document, _)| Event::new(transfer, "escalated", document))
            .collect();
        record(tx, backend, &events, run[0].2).await?;
    }
    Ok(results)
}

/// [`escalate_many`] for one transfer.
async fn escalate(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    transfer_id: &str,
    deadline: &'static str,
    at: i64,
) -> Result<WriteResult, StoreError> {
    let item = Escalation { transfer_id: transfer_id.to_string(), deadline, at };
    Ok(escalate_many(tx, backend, &[item]).await?.pop().unwrap_or(WriteResult::Done(false)))
}

/// Where a new delivery of `transfer_id` for `destination` starts: `queued` when an earlier
/// one of the transfer for that destination is still undone (pending or queued), else
/// `pending`. The caller holds the transfer's row (PostgreSQL), as does whoever finishes a
/// delivery ([`promote_next`]): so one never misses the other's change.
///
/// Read by transfer along `outbox_transfer` (a transfer has a handful of rows), the status
/// checked here: with the status in the condition PostgreSQL may walk `outbox_due` instead,
/// every row of that status, when its statistics say there are none (as it did the lease read).
async fn first_status(
    tx: &mut Transaction<'_, Any>,
    transfer_id: &str,
    destination: &str,
) -> Result<OutboxStatus, StoreError> {
    let statuses: Vec<String> =
        sqlx::query_scalar("SELECT status FROM outbox WHERE transfer_id = $1 AND destination = $2")
            .bind(transfer_id)
            .bind(destination)
            .fetch_all(&mut **tx)
            .await?;
    let undone = statuses
        .iter()
        .any(|s| s == OutboxStatus::Pending.as_str() || s == OutboxStatus::Queued.as_str());
    Ok(if undone { OutboxStatus::Queued } else { OutboxStatus::Pending })
}

/// After deliveries left `pending` (delivered, or given up), makes the earliest delivery
/// queued behind each of them pending: the next of that transfer for that destination.
/// `pairs` are (transfer, destination); a pair with a delivery still pending keeps its queue
/// as it is (an acknowledgement marks a transfer's deliveries, not the notice that may be on
/// its way). The transfers are locked already (PostgreSQL: [`lock_transfers`]), so a delivery
/// being queued behind one of them at this moment has either committed (and is seen here) or
/// waits and then finds it done (and starts pending).
/// Read by transfer, the status checked here, for the reason [`first_status`] gives.
async fn promote_next(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    pairs: &[(String, String)],
) -> Result<(), StoreError> {
    let wanted: std::collections::HashSet<(&str, &str)> =
        pairs.iter().map(|(t, d)| (t.as_str(), d.as_str())).collect();
    let mut ids: Vec<&str> = wanted.iter().map(|(t, _)| *t).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut next: std::collections::HashMap<(String, String), i64> = Default::default();
    let mut busy: std::collections::HashSet<(String, String)> = Default::default();
    for chunk in ids.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "SELECT id, transfer_id, destination, status FROM outbox WHERE transfer_id IN ({})",
            in_list(backend, chunk.len(), 1)
        );
        let mut query = sqlx::query_as::<_, (i64, String, String, String)>(&sql);
        for id in chunk {
            query = query.bind(*id);
        }
        for (id, transfer_id, destination, status) in query.fetch_all(&mut **tx).await? {
            if !wanted.contains(&(transfer_id.as_str(), destination.as_str())) {
                continue;
            }
            if status == OutboxStatus::Pending.as_str() {
                busy.insert((transfer_id, destination));
            } else if status == OutboxStatus::Queued.as_str() {
                let first = next.entry((transfer_id, destination)).or_insert(id);
                *first = (*first).min(id);
            }
        }
    }
    let promoted: Vec<i64> =
        next.into_iter().filter(|(pair, _)| !busy.contains(pair)).map(|(_, id)| id).collect();
    let promote = "UPDATE outbox SET status = 'pending' WHERE status = 'queued' AND id IN ({})";
    execute_over(tx, backend, promote, &promoted).await
}

/// Runs `statement` — its `IN` list written `{}` — over `values`, as many statements as
/// [`ROWS_PER_STATEMENT`] makes.
async fn execute_over<V>(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    statement: &str,
    values: &[V],
) -> Result<(), StoreError>
where
    V: Clone + Send + for<'q> sqlx::Encode<'q, Any> + sqlx::Type<Any> + 'static,
{
    for chunk in values.chunks(ROWS_PER_STATEMENT) {
        let sql = statement.replace("{}", &in_list(backend, chunk.len(), 1));
        let mut query = sqlx::query(&sql);
        for value in chunk {
            query = query.bind(value.clone());
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

/// Locks transfers' rows (PostgreSQL; in id order, as every write of several transfers does)
/// before what waits for them changes: see [`promote_next`]. SQLite has one writer.
async fn lock_transfers(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    ids: &[&str],
) -> Result<(), StoreError> {
    if backend != Backend::Postgres {
        return Ok(());
    }
    let mut ids: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
    ids.sort_unstable();
    ids.dedup();
    let lock = "SELECT transfer_id FROM transfers WHERE transfer_id IN ({}) ORDER BY transfer_id FOR UPDATE";
    execute_over(tx, backend, lock, &ids).await
}

/// An outbox item's (transfer, destination), its transfer locked ([`lock_transfers`]).
async fn lock_item_transfer(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    item_id: i64,
) -> Result<Option<(String, String)>, StoreError> {
    let pair: Option<(String, String)> =
        sqlx::query_as("SELECT transfer_id, destination FROM outbox WHERE id = $1")
            .bind(item_id)
            .fetch_optional(&mut **tx)
            .await?;
    if let Some((transfer_id, _)) = &pair {
        lock_transfers(tx, backend, &[transfer_id.as_str()]).await?;
    }
    Ok(pair)
}

/// Queues, in a store from before queued deliveries, every pending delivery behind an earlier
/// pending one of its transfer for the same destination (a data migration: run once).
pub(super) const QUEUE_BEHIND_EARLIER: &str =
    "UPDATE outbox SET status = 'queued' WHERE status = 'pending' AND EXISTS (SELECT 1 FROM outbox p \
     WHERE p.transfer_id = outbox.transfer_id AND p.destination = outbox.destination AND p.status = 'pending' AND p.id < outbox.id)";

/// A delivery to queue.
struct Delivery<'a> {
    destination: &'a EndpointId,
    transfer_id: &'a str,
    kind: DeliveryKind,
    payload: &'a str,
    /// `pending`, or `queued` behind an undone earlier delivery of its transfer to the same
    /// destination ([`first_status`]; a new transfer's first delivery is pending).
    status: OutboxStatus,
}

/// Queues deliveries, due at once: the one writer of outbox rows, several per statement.
async fn enqueue(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    deliveries: &[Delivery<'_>],
    now: i64,
) -> Result<(), StoreError> {
    let due = super::now_millis();
    for chunk in deliveries.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO outbox (destination, transfer_id, kind, payload, status, next_attempt_at, created_at) VALUES {}",
            values(backend, chunk.len(), 7, None)
        );
        let mut query = sqlx::query(&sql);
        for d in chunk {
            query = query
                .bind(d.destination.to_string())
                .bind(d.transfer_id)
                .bind(d.kind.as_str())
                .bind(d.payload)
                .bind(d.status.as_str())
                .bind(due)
                .bind(now);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

/// A change to a transfer, for the feed: the transfer after it, and its JSON.
struct Event<'a> {
    transfer: &'a Transfer,
    kind: &'a str,
    document: &'a str,
    /// Whether the change may have moved the transfer's facts for the figures (rewritten if so).
    facts: bool,
    /// The destination's confirmation this change records: its audit entry's actor and detail.
    receipt: Option<Receipt<'a>>,
}

/// A destination's confirmation of a delivery.
struct Receipt<'a> {
    destination: &'a str,
    /// How it confirmed: [`SUCCESS_RECEIPT`] or [`ACKNOWLEDGEMENT`].
    answer: &'a str,
}

impl<'a> Event<'a> {
    fn new(transfer: &'a Transfer, kind: &'a str, document: &'a str) -> Event<'a> {
        Event { transfer, kind, document, facts: true, receipt: None }
    }
}

/// Appends to the change feed that both parties read (`Watch`): the one writer of event rows,
/// several per statement.
async fn record(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    events: &[Event<'_>],
    now: i64,
) -> Result<(), StoreError> {
    for chunk in events.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO events (transfer_id, origin, destination, kind, body, at, tx) VALUES {}",
            values(backend, chunk.len(), 6, Some((6, tx_stamp(backend))))
        );
        let mut query = sqlx::query(&sql);
        for e in chunk {
            let t = e.transfer;
            query = query
                .bind(&t.transfer_id)
                .bind(t.from.to_string())
                .bind(t.to.to_string())
                .bind(e.kind)
                .bind(e.document)
                .bind(now);
        }
        query.execute(&mut **tx).await?;
    }
    let changed: Vec<&Transfer> = events.iter().filter(|e| e.facts).map(|e| e.transfer).collect();
    super::facts::upsert(tx, backend, &changed, now).await?;
    let entries: Vec<AuditEntry> = events
        .iter()
        .map(|e| {
            // The entry this event wrote: a status update may be followed by the escalations
            // it recorded, and a submission by its routing and any miss on arrival.
            let last = e
                .transfer
                .history
                .iter()
                .rev()
                .find(|h| h.state.as_str() == e.kind)
                .or(e.transfer.history.last());
            let mut detail = serde_json::json!({
                "from": e.transfer.from.to_string(),
                "to": e.transfer.to.to_string(),
                "state": e.transfer.state.as_str(),
                "entry": last,
                "document_sha256": crate::model::digest::sha256_hex(e.document.as_bytes()),
            });
            let actor = match &e.receipt {
                Some(r) => {
                    detail["delivery"] =
                        receipt(r.destination, DeliveryKind::Transfer.as_str(), r.answer);
                    r.destination.to_string()
                }
                None => last.map_or_else(|| e.transfer.from.to_string(), |h| h.by.clone()),
            };
            AuditEntry {
                at: now,
                actor,
                action: format!("transfer.{}", e.kind),
                transfer_id: Some(e.transfer.transfer_id.clone()),
                detail,
            }
        })
        .collect();
    super::audit::append(tx, backend, &entries).await
}
