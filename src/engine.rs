//! The transfer engine: what happens when an endpoint submits a transfer or reports a status,
//! between the API (which has identified the caller and translated the document) and the store
//! (which makes it durable).
//!
//! Submitting picks the destination, computes the deadlines and stores the transfer with its
//! first delivery in one commit; only then is "submitted" answered. The same `sender_ref` from
//! the same endpoint returns the first transfer, on any replica, after any restart. A status
//! update is checked against the rules of `model::lifecycle` inside the store's transaction, so
//! two replicas cannot both apply conflicting updates.

use std::sync::Arc;

use crate::config::Config;
use crate::formats::Registry;
use crate::model::lifecycle::{self, Outcome, Refusal};
use crate::model::{
    Deadlines, EndpointId, HistoryEntry, HistoryEvent, State, StatusUpdate, Timestamp, Transfer, TransferRequest,
};
use crate::routing::{self, Decision, RouteError};
use crate::security::policy::{Policy, Right};
use crate::security::Identity;
use crate::store::writes::StatusRefused;
use crate::store::{FeedCursor, FeedEvent, Store, StoreError, TransferFilter, Write, WriteResult};

/// Why the engine refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The request is not acceptable as it stands (400).
    #[error("{0}")]
    Invalid(String),
    /// The caller may not do this (403).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// No such transfer, as far as the caller may know (404).
    #[error("not found: {0}")]
    NotFound(String),
    /// The rules refuse the transition (409); the message names the current state.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The store failed (503): nothing was answered as done.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a submission produced.
#[derive(Clone, Debug)]
pub struct Submission {
    pub transfer: Transfer,
    /// False when the sender had used this `sender_ref` before: the first transfer is returned.
    pub created: bool,
}

/// The engine: the store, the registry, the per-endpoint settings and the read policy.
#[derive(Clone)]
pub struct Engine {
    pub store: Store,
    pub registry: Arc<Registry>,
    pub config: Arc<Config>,
    pub policy: Arc<Policy>,
    /// The routing directory, in memory.
    pub directory: Arc<routing::Directory>,
}

impl Engine {
    pub fn new(store: Store, registry: Arc<Registry>, config: Arc<Config>) -> Engine {
        let policy = Arc::new(Policy::new(config.agencies.clone()));
        Engine { store, registry, config, policy, directory: Arc::default() }
    }

    /// Routes a request (three-tier routing, [`crate::routing`]): for `to_region`, else the
    /// case's location, else the sender's own region, the other platform's endpoint there and
    /// the directory's handling unit for the case's category. A location inside `to_region`
    /// (a township of that county) refines it: the most specific place known is routed on.
    pub async fn route(&self, request: &TransferRequest) -> Result<Decision, EngineError> {
        let location = request.case.location.as_ref().and_then(|l| l.region.as_ref()).map(|r| r.as_str());
        let (region, field) = match (&request.to_region, location) {
            (Some(to), Some(place)) if place.len() > to.as_str().len() && place.starts_with(to.as_str()) => {
                (place, "case.location.region")
            }
            (Some(to), _) => (to.as_str(), "to_region"),
            (None, Some(place)) => (place, "case.location.region"),
            (None, None) => (request.from.region.as_str(), "to_region"),
        };
        let category = request.case.category.as_str();
        routing::route(&self.directory, &self.store, &self.registry, request.to_platform, region, category, field).await.map_err(
            |e| match e {
                RouteError::NoEndpoint { .. } => EngineError::Invalid(e.to_string()),
                RouteError::Store(e) => EngineError::Store(e),
            },
        )
    }

    /// The deadlines of a transfer to `to`: the endpoint's overrides, else `canonical.md`'s table.
    pub fn deadlines(&self, request: &TransferRequest, to: &EndpointId) -> Deadlines {
        let rule = lifecycle::default_deadline(to.platform, request.case.urgency);
        let settings = self.config.endpoint(to);
        let receive = settings.and_then(|s| s.receive_within).map_or(rule.receive_within, |d| d.as_secs() as i64);
        let resolve = settings.and_then(|s| s.resolve_within).map(|d| d.as_secs() as i64).or(rule.resolve_within);
        Deadlines {
            receive_by: request.requested_at.plus_seconds(receive),
            resolve_by: resolve.map(|seconds| request.requested_at.plus_seconds(seconds)),
        }
    }

    /// Submits a transfer from `sender` (the caller's identity). Answers once durable.
    pub async fn submit(&self, sender: &EndpointId, mut request: TransferRequest) -> Result<Submission, EngineError> {
        if request.from != *sender {
            return Err(EngineError::Forbidden(format!("{sender} may submit only as itself, not as {}", request.from)));
        }
        request.validate().map_err(|e| EngineError::Invalid(e.to_string()))?;
        request.to_unit = None;
        let decision = self.route(&request).await?;
        let to = decision.endpoint;
        let now = Timestamp::now();
        let mut history = vec![HistoryEntry {
            state: HistoryEvent::State(State::Submitted),
            at: now,
            by: sender.to_string(),
            implied: false,
            unit: None,
            note: None,
        }];
        if let (Some(unit), Some(record)) = (decision.unit, decision.records.first()) {
            history.push(HistoryEntry {
                state: HistoryEvent::Routed,
                at: now,
                by: "gateway".to_string(),
                implied: false,
                unit: Some(unit),
                note: Some(format!("directory {} v{}", record.key, record.version)),
            });
        }
        let transfer = Transfer {
            transfer_id: ulid::Ulid::new().to_string(),
            case: request.case.clone(),
            from: request.from.clone(),
            to: to.clone(),
            direction: Transfer::direction_of(request.from.platform, to.platform),
            reason: request.reason.clone(),
            requested_at: request.requested_at,
            deadlines: self.deadlines(&request, &to),
            state: State::Submitted,
            history,
            resolution: None,
            feedback: None,
            overdue: false,
        };
        let mut for_destination = transfer.for_destination();
        for_destination.to_region = request.to_region.clone();
        let payload = serde_json::to_string(&for_destination).map_err(|e| EngineError::Invalid(e.to_string()))?;
        let write = Write::submit(transfer, request.sender_ref.clone(), payload)?;
        match self.store.write(write).await? {
            WriteResult::Submitted { transfer, created } => {
                crate::metrics::inc(&crate::metrics::counters().submissions);
                Ok(Submission { transfer: *transfer, created })
            }
            other => Err(EngineError::Store(StoreError::Corrupt {
                id: request.sender_ref,
                problem: format!("unexpected answer {other:?}"),
            })),
        }
    }

    /// Finds the transfer a status update names, as the caller knows it: by `transfer_id`, or
    /// by `transfer_ref` (the gateway's id for a destination, its own `sender_ref` for an
    /// origin). A transfer the caller is no party to is refused as forbidden.
    pub async fn find(&self, caller: &EndpointId, update: &StatusUpdate) -> Result<Transfer, EngineError> {
        let reference = update.transfer_id.as_deref().or(update.transfer_ref.as_deref()).unwrap_or_default();
        let found = match &update.transfer_id {
            Some(id) => self.store.transfer(id).await?,
            None => match self.store.transfer_by_reference(caller, reference).await? {
                Some(t) => Some(t),
                None => self.store.transfer(reference).await?,
            },
        };
        match found {
            Some(t) if lifecycle::role_of(&t, caller).is_some() => Ok(t),
            Some(t) => Err(EngineError::Forbidden(format!("{caller} is not a party to transfer {}", t.transfer_id))),
            None => Err(EngineError::NotFound(format!("no transfer {reference:?} for {caller}"))),
        }
    }

    /// Applies a status update from `caller`. Answers once durable.
    pub async fn update_status(&self, caller: &EndpointId, mut update: StatusUpdate) -> Result<(Transfer, Outcome), EngineError> {
        if update.by != *caller {
            return Err(EngineError::Forbidden(format!("{caller} may report status only as itself, not as {}", update.by)));
        }
        update.validate().map_err(|e| EngineError::Invalid(e.to_string()))?;
        let transfer = self.find(caller, &update).await?;
        let role = lifecycle::role_of(&transfer, caller).ok_or_else(|| EngineError::NotFound(transfer.transfer_id.clone()))?;
        let write = Write::Status { transfer_id: transfer.transfer_id.clone(), update: Box::new(update), role };
        match self.store.write(write).await? {
            WriteResult::Status(Ok((transfer, outcome))) => {
                crate::metrics::inc(&crate::metrics::counters().status_updates);
                Ok((*transfer, outcome))
            }
            WriteResult::Status(Err(StatusRefused::Rule(refusal))) => Err(EngineError::Refused(refusal)),
            WriteResult::Status(Err(StatusRefused::NotFound(id))) => Err(EngineError::NotFound(id)),
            other => Err(EngineError::Store(StoreError::Corrupt {
                id: transfer.transfer_id,
                problem: format!("unexpected answer {other:?}"),
            })),
        }
    }

    /// A transfer, if `who` may read it (its parties, operators, agencies granted its region).
    pub async fn transfer_for(&self, who: &Identity, transfer_id: &str) -> Result<Transfer, EngineError> {
        match self.store.transfer(transfer_id).await? {
            Some(t) => self.policy.may_read(who, &t).map(|()| t).map_err(EngineError::Forbidden),
            None => Err(EngineError::NotFound(transfer_id.to_string())),
        }
    }

    /// A page of the transfers `who` may read, and the token of the next page. Endpoints see
    /// their own; operators everything; agencies what their grant covers.
    pub async fn transfers_for(
        &self,
        who: &Identity,
        mut filter: TransferFilter,
    ) -> Result<(Vec<Transfer>, Option<String>), EngineError> {
        self.policy.has_right(who, Right::ReadTransfers).map_err(EngineError::Forbidden)?;
        filter.party = who.endpoint().map(ToString::to_string);
        let page = self.store.transfers(&filter).await?;
        let next =
            (page.len() as i64 >= filter.limit.clamp(1, 500)).then(|| page.last().map(|t| t.transfer_id.clone())).flatten();
        let visible = page.into_iter().filter(|t| self.policy.may_read(who, t).is_ok()).collect();
        Ok((visible, next))
    }

    /// Change-feed events after `cursor` that `who` may watch, and the cursor to go on from.
    pub async fn feed_for(
        &self,
        who: &Identity,
        cursor: FeedCursor,
        limit: i64,
    ) -> Result<(Vec<FeedEvent>, FeedCursor, bool), EngineError> {
        self.policy.has_right(who, Right::Watch).map_err(EngineError::Forbidden)?;
        let party = who.endpoint().map(ToString::to_string);
        let events = self.store.events_after(party.as_deref(), cursor, limit).await?;
        let full = events.len() as i64 >= limit;
        let last = events.last().map(|e| e.cursor).unwrap_or(cursor);
        let visible = events.into_iter().filter(|e| self.policy.may(who, &e.transfer, Right::Watch).is_ok()).collect();
        Ok((visible, last, full))
    }

    /// Escalates every transfer that has missed a deadline at `now`; returns how many.
    pub async fn sweep_deadlines(&self, now: Timestamp) -> Result<usize, EngineError> {
        let mut escalated = 0;
        loop {
            let candidates = self.store.overdue_candidates(now.unix_seconds(), 200).await?;
            let mut progress = false;
            // A page's escalations go to the writer together, so that they share commits.
            let mut writes = tokio::task::JoinSet::new();
            for transfer in &candidates {
                if let Some(deadline) = lifecycle::missed_deadline(transfer, now) {
                    let write = Write::Escalate { transfer_id: transfer.transfer_id.clone(), deadline, at: now.unix_seconds() };
                    let store = self.store.clone();
                    writes.spawn(async move { store.write(write).await });
                }
            }
            while let Some(done) = writes.join_next().await {
                let result =
                    done.map_err(|e| EngineError::Store(StoreError::Commit(format!("an escalation's task failed: {e}"))))?;
                if let WriteResult::Done(true) = result? {
                    escalated += 1;
                    progress = true;
                }
            }
            if candidates.len() < 200 || !progress {
                return Ok(escalated);
            }
        }
    }
}
