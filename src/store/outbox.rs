//! The outbox: what the gateway owes each destination, written in the same commit as the
//! change it reports (a transfer to deliver, a status to tell), and taken by the deliverer.
//! Its rows are `pending` until a destination's receipt makes them `delivered`, or until the
//! gateway gives up on them (`dead`: a dead letter an operator may replay). A row queued
//! behind an undone earlier one of the same transfer for the same destination is `queued`,
//! and becomes `pending` when that one is done: so each transfer's deliveries go out in order
//! while the deliverer's read stays a plain walk of the due `pending` rows (docs/DECISIONS.md,
//! "What waits behind an earlier delivery is queued").

use std::str::FromStr;

use sqlx::any::AnyRow;
use sqlx::Row;

use super::StoreError;
use crate::model::EndpointId;

/// Why a replay changed nothing.
pub const NOT_REPLAYABLE: &str =
    "is not a dead letter that can be replayed (a transfer already handed back to its \
     origin as undeliverable is re-sent by the origin, not replayed)";

/// Where an outbox row stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OutboxStatus {
    /// Waiting: due now or at its next attempt.
    Pending,
    /// Waiting behind an earlier delivery of its transfer to the same destination, not yet
    /// done: pending once that one is delivered or given up.
    Queued,
    /// The destination's receipt said it has it.
    Delivered,
    /// Given up: a dead letter.
    Dead,
}

impl OutboxStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxStatus::Pending => "pending",
            OutboxStatus::Queued => "queued",
            OutboxStatus::Delivered => "delivered",
            OutboxStatus::Dead => "dead",
        }
    }
}

impl std::fmt::Display for OutboxStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OutboxStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "pending" => Ok(OutboxStatus::Pending),
            "queued" => Ok(OutboxStatus::Queued),
            "delivered" => Ok(OutboxStatus::Delivered),
            "dead" => Ok(OutboxStatus::Dead),
            other => Err(format!("unknown outbox status {other:?}")),
        }
    }
}

/// What is delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryKind {
    /// A transfer, to its destination.
    Transfer,
    /// A status change, to the other party.
    Status,
}

impl DeliveryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryKind::Transfer => "transfer",
            DeliveryKind::Status => "status",
        }
    }
}

impl FromStr for DeliveryKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "transfer" => Ok(DeliveryKind::Transfer),
            "status" => Ok(DeliveryKind::Status),
            other => Err(format!("unknown delivery kind {other:?}")),
        }
    }
}

/// One delivery in the outbox.
#[derive(Clone, Debug)]
pub struct OutboxItem {
    pub id: i64,
    pub destination: EndpointId,
    pub transfer_id: String,
    pub kind: DeliveryKind,
    /// Canonical JSON of what to render: a transfer request (for a destination) or a status
    /// update (with the reference the receiver knows the transfer by).
    pub payload: String,
    pub attempts: i64,
    pub created_at: i64,
    pub status: OutboxStatus,
    pub last_error: Option<String>,
}

/// One destination's deliveries in one status (`pending` or `dead`), for metrics: `pending`
/// counts the queued ones too (all that waits).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxGauge {
    pub destination: String,
    pub status: OutboxStatus,
    pub count: i64,
    /// When the oldest of them was queued (Unix seconds).
    pub oldest: i64,
}

pub(crate) const OUTBOX_SELECT: &str =
    "SELECT id, destination, transfer_id, kind, payload, attempts, created_at, status, last_error FROM outbox";

pub(crate) fn outbox_from_row(row: &AnyRow) -> Result<OutboxItem, StoreError> {
    let id: i64 = row.try_get(0)?;
    let corrupt = |problem: String| StoreError::Corrupt { id: format!("outbox {id}"), problem };
    let destination: String = row.try_get(1)?;
    let kind: String = row.try_get(3)?;
    let status: String = row.try_get(7)?;
    Ok(OutboxItem {
        id,
        destination: destination.parse().map_err(corrupt)?,
        transfer_id: row.try_get(2)?,
        kind: kind.parse().map_err(corrupt)?,
        payload: row.try_get(4)?,
        attempts: row.try_get(5)?,
        created_at: row.try_get(6)?,
        status: status.parse().map_err(corrupt)?,
        last_error: row.try_get(8)?,
    })
}
