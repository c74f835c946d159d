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

use crate::config::{Config, EndpointSettings};
use crate::formats::Registry;
use crate::model::lifecycle::DeadlineRule;
use crate::model::lifecycle::{self, Outcome, Refusal};
use crate::model::linkage::{self, Action, Actor, Party};
use crate::model::{
    category, Deadlines, DisputeOutcome, EndpointId, HistoryEntry, HistoryEvent, Link, LinkRel,
    Platform, RoutingBasis, State, StatusUpdate, Timestamp, Transfer, TransferRequest,
};
use crate::routing::{self, Decision, RouteError};
use crate::security::policy::{Policy, Right};
use crate::security::Identity;
use crate::store::audit::StoredAudit;
use crate::store::facts::{Aggregates, FactsFilter, FactsIndex};
use crate::store::writes::StatusRefused;
use crate::store::{
    DeliveryKind, FeedCursor, FeedEvent, OutboxItem, Store, StoreError, TransferFilter, Write,
    WriteResult,
};
use crate::sync::live::LiveDataset;

/// Why the engine refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The request is not acceptable as it stands (400), naming the field and what was expected.
    #[error(transparent)]
    Invalid(#[from] crate::model::ModelError),
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

/// What the gateway holds as evidence of a transfer ([`Engine::evidence_for`]).
#[derive(Clone, Debug)]
pub struct Evidence {
    pub transfer: Transfer,
    pub audit: Vec<StoredAudit>,
    /// The native document the transfer was received as, when it came as one.
    pub received: Option<String>,
    /// Each delivery and its native document as text (or why it cannot be rendered).
    pub deliveries: Vec<(OutboxItem, Result<String, String>)>,
    /// The transfers that link to this one (its assists, the re-routes that followed it), with
    /// how (`rel`), those `who` may read.
    pub linked_from: Vec<(String, Transfer)>,
}

/// The engine: the store, the registry, the endpoints' settings and the read policy, and the
/// shared datasets it reads as it decides (the directory, the transfer-item lists, the
/// knowledge base). It takes from the configuration only what it decides with; the rest
/// (listeners, limits, delivery) belongs to the parts that run them.
#[derive(Clone)]
pub struct Engine {
    store: Store,
    registry: Arc<Registry>,
    endpoints: Arc<Vec<EndpointSettings>>,
    policy: Arc<Policy>,
    directory: Arc<LiveDataset>,
    categories: Arc<LiveDataset>,
    knowledge: Arc<crate::sync::knowledge::KnowledgeIndex>,
    facts: Arc<FactsIndex>,
    linkage: linkage::Settings,
}

impl Engine {
    pub fn new(store: Store, registry: Arc<Registry>, config: Arc<Config>) -> Engine {
        let policy =
            Arc::new(Policy::new(config.agencies.clone()).with_offices(config.offices.clone()));
        Engine {
            linkage: config.linkage.settings(),
            store,
            registry,
            endpoints: Arc::new(config.endpoints.clone()),
            policy,
            directory: Arc::new(LiveDataset::new(routing::DIRECTORY)),
            categories: Arc::new(LiveDataset::new(crate::sync::CATEGORIES)),
            knowledge: Arc::default(),
            facts: FactsIndex::new(config.figures.memory_limit),
        }
    }

    /// The store it commits to.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The endpoint registry (formats, places).
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The agencies' read policy.
    pub fn policy(&self) -> &Arc<Policy> {
        &self.policy
    }

    /// One endpoint's settings (delivery URL, deadline overrides, server key pin), if configured.
    pub fn endpoint(&self, id: &EndpointId) -> Option<&EndpointSettings> {
        let id = id.to_string();
        self.endpoints.iter().find(|e| e.id == id)
    }

    /// The endpoints the gateway pushes to (those with a delivery URL).
    pub fn push_endpoints(&self) -> impl Iterator<Item = &str> {
        self.endpoints.iter().filter(|e| e.url.is_some()).map(|e| e.id.as_str())
    }

    /// The routing directory, in memory.
    pub fn directory(&self) -> &Arc<LiveDataset> {
        &self.directory
    }

    /// The transfer-item lists, in memory: the endpoints' live code tables.
    pub fn categories(&self) -> &Arc<LiveDataset> {
        &self.categories
    }

    /// The knowledge base, in memory with its search index.
    pub fn knowledge(&self) -> &Arc<crate::sync::knowledge::KnowledgeIndex> {
        &self.knowledge
    }

    /// The shared datasets over this engine's store and its live copies of them.
    pub fn datasets(&self) -> crate::sync::Datasets {
        crate::sync::Datasets {
            store: self.store.clone(),
            registry: self.registry.clone(),
            policy: self.policy.clone(),
            directory: self.directory.clone(),
            categories: self.categories.clone(),
            knowledge: self.knowledge.clone(),
        }
    }

    /// Loads the figures' facts into memory and keeps them caught up with `store` until `stop`
    /// ([`FactsIndex::follow`]); until loaded, figures are aggregated by the database.
    pub fn follow_facts(
        &self,
        store: Store,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> impl std::future::Future<Output = ()> {
        self.facts.clone().follow(store, stop)
    }

    /// Whether the figures' facts are in memory ([`Engine::follow_facts`]).
    pub async fn facts_loaded(&self) -> bool {
        self.facts.loaded().await
    }

    /// Keeps this engine's live datasets caught up with `store` until `stop` ([`crate::sync::live::follow`]).
    pub fn follow_datasets(
        &self,
        store: Store,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> impl std::future::Future<Output = ()> {
        crate::sync::live::follow(
            self.directory.clone(),
            self.categories.clone(),
            self.knowledge.clone(),
            self.registry.clone(),
            store,
            stop,
        )
    }

    /// The region a request is routed on, and the field it came from (`canonical.md`,
    /// "Routing"): when `to_region` contains the case's location (regions nest by their
    /// digits), the location, the more specific; else `to_region`; else the location; else the
    /// sender's own region.
    fn routing_region(request: &TransferRequest) -> (&str, &'static str) {
        let location =
            request.case.location.as_ref().and_then(|l| l.region.as_ref()).map(|r| r.as_str());
        routing::region_for(
            request.to_region.as_ref().map(|r| r.as_str()),
            location,
            request.from.region.as_str(),
        )
    }

    /// Routes a request (three-tier routing, [`crate::routing`]): the other platform's endpoint
    /// for [`Engine::routing_region`], and the directory's handling unit there for the case's
    /// category.
    pub async fn route(&self, request: &TransferRequest) -> Result<Decision, EngineError> {
        let (region, field) = Engine::routing_region(request);
        let category = request.case.category.as_str();
        routing::route(
            &self.directory,
            &self.store,
            &self.registry,
            request.to_platform,
            region,
            category,
            field,
        )
        .await
        .map_err(|e| match e {
            RouteError::NoEndpoint { field, .. } => {
                let problem = e.to_string().trim_start_matches(&format!("{field}: ")).to_string();
                EngineError::Invalid(crate::model::ModelError::new(field, problem))
            }
            RouteError::Store(e) => EngineError::Store(e),
        })
    }

    /// Whom to phone about a request's case at its destination, from the `directory`: the
    /// most specific record's phone, and its unit's name.
    pub async fn directory_contact(&self, request: &TransferRequest) -> Option<String> {
        self.route(request).await.ok()?.records.iter().find_map(|record| {
            let phone = record.body.get("phone")?.as_str()?.to_string();
            Some(match routing::unit_of(&record.body).and_then(|unit| unit.name.or(unit.code)) {
                Some(unit) => format!("{phone} ({unit})"),
                None => phone,
            })
        })
    }

    /// The deadlines of a transfer to `to`: the endpoint's overrides, else `canonical.md`'s table.
    pub fn deadlines(&self, request: &TransferRequest, to: &EndpointId) -> Deadlines {
        let rule = self.deadline_rule(to, request.case.urgency);
        Deadlines {
            receive_by: request.requested_at.plus_seconds(rule.receive_within),
            resolve_by: rule.resolve_within.map(|s| request.requested_at.plus_seconds(s)),
        }
    }

    /// How long a transfer to `to` of this urgency has to be received and resolved.
    fn deadline_rule(
        &self,
        to: &EndpointId,
        urgency: Option<crate::model::Urgency>,
    ) -> DeadlineRule {
        let rule = lifecycle::default_deadline(to.platform, urgency);
        let settings = self.endpoint(to);
        DeadlineRule {
            receive_within: settings
                .and_then(|s| s.receive_within)
                .map_or(rule.receive_within, |d| d.as_secs() as i64),
            resolve_within: settings
                .and_then(|s| s.resolve_within)
                .map(|d| d.as_secs() as i64)
                .or(rule.resolve_within),
        }
    }

    /// Why a transfer goes where it goes (`linkage.md`, "Routing basis"): `negotiated` when it
    /// re-routes a transfer whose dispute was upheld; `safety_first` when 110 handled it first
    /// (it carries `prior_handling`); `catalogue` when its category is on the origin's live
    /// transfer-item list for this direction (the catch-alls NP99/PM99 are not items);
    /// otherwise none.
    fn routing_basis(
        &self,
        request: &TransferRequest,
        rerouted: &[Transfer],
    ) -> Option<RoutingBasis> {
        let upheld = rerouted.iter().any(|t| {
            t.dispute
                .as_ref()
                .and_then(|d| d.decision.as_ref())
                .is_some_and(|d| d.outcome == DisputeOutcome::Upheld)
        });
        if upheld {
            return Some(RoutingBasis::Negotiated);
        }
        if request.from.platform == Platform::Police && request.prior_handling.is_some() {
            return Some(RoutingBasis::SafetyFirst);
        }
        let code = request.case.category.as_str();
        let side_fits = match category::side_of(code) {
            Some(category::CategorySide::NonPolice) => request.to_platform == Platform::Hotline,
            Some(category::CategorySide::Police) => request.to_platform == Platform::Police,
            None => false,
        };
        let listed = self.registry.endpoint(&request.from).is_ok_and(|endpoint| {
            endpoint.code_table().rows.iter().any(|row| row.canonical == code)
        });
        (side_fits && listed && !category::is_catch_all(code)).then_some(RoutingBasis::Catalogue)
    }

    /// Submits a transfer from `sender` (the caller's identity). Answers once durable.
    pub async fn submit(
        &self,
        sender: &EndpointId,
        request: TransferRequest,
    ) -> Result<Submission, EngineError> {
        self.submit_native(sender, request, None).await
    }

    /// [`Engine::submit`], keeping the native document the request was read from (as text)
    /// as evidence of what the origin sent.
    pub async fn submit_native(
        &self,
        sender: &EndpointId,
        mut request: TransferRequest,
        native: Option<String>,
    ) -> Result<Submission, EngineError> {
        if request.from != *sender {
            return Err(EngineError::Forbidden(format!(
                "{sender} may submit only as itself, not as {}",
                request.from
            )));
        }
        // The case is the sender's own: its origin and its case_id say so (a native document
        // gets both from the certificate; a canonical one must not claim another's).
        if request.case.origin.endpoint != *sender {
            return Err(EngineError::Forbidden(format!(
                "case.origin.endpoint: {sender} may hand over only its own cases, not {}'s",
                request.case.origin.endpoint
            )));
        }
        let own_prefix = format!("{}:{}:", sender.platform.as_str(), sender.region);
        if !request.case.case_id.starts_with(&own_prefix) {
            return Err(EngineError::Forbidden(format!(
                "case.case_id: {sender}'s case ids begin {own_prefix:?}, got {:?}",
                request.case.case_id
            )));
        }
        request.to_unit = None;
        request.ruling = None;
        request.validate()?;
        let (links, linked) = self.links_for(sender, &request).await?;
        request.links = links.clone();
        let decision = self.route(&request).await?;
        let to = decision.endpoint;
        let now = Timestamp::now();
        let mut history =
            vec![HistoryEntry::new(HistoryEvent::State(State::Submitted), now, sender.to_string())];
        if let (Some(unit), Some(record)) = (decision.unit, decision.records.first()) {
            let mut routed = HistoryEntry::new(HistoryEvent::Routed, now, "gateway");
            routed.unit = Some(unit);
            routed.note = Some(format!("directory {} v{}", record.key, record.version));
            history.push(routed);
        }
        let rerouted: Vec<Transfer> = linked
            .iter()
            .filter(|t| {
                links
                    .iter()
                    .any(|l| l.rel == LinkRel::ReroutedFrom && l.transfer_id == t.transfer_id)
            })
            .cloned()
            .collect();
        let routing_basis = self.routing_basis(&request, &rerouted);
        let mut transfer = Transfer {
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
            links,
            prior_handling: request.prior_handling.clone(),
            needed_by: request.needed_by,
            routing_basis,
            dispute: None,
            urges: 0,
        };
        // A transfer that arrives already late is overdue on arrival (`canonical.md`).
        let misses = lifecycle::missed_deadlines(&transfer, now);
        lifecycle::record_misses(&mut transfer, &misses, now);
        let mut for_destination = transfer.for_destination();
        for_destination.to_region = request.to_region.clone();
        // An assist names its linked transfer, for the destination, by the reference the
        // destination knows it by: its own sender_ref if it sent it, else the id (`linkage.md`).
        for link in for_destination.links.iter_mut().filter(|l| l.rel == LinkRel::AssistFor) {
            if linked.iter().any(|t| t.transfer_id == link.transfer_id && t.from == to) {
                if let Some(reference) = self.store.sender_ref_of(&link.transfer_id).await? {
                    link.transfer_id = reference;
                }
            }
        }
        let payload = serde_json::to_string(&for_destination).map_err(|e| {
            EngineError::Invalid(crate::model::ModelError::new("transfer", e.to_string()))
        })?;
        let write = Write::submit(transfer, request.sender_ref.clone(), payload, native)?;
        match self.store.write(write).await? {
            WriteResult::Submitted { transfer, created } => {
                crate::metrics::inc(&crate::metrics::counters().submissions);
                crate::metrics::counters()
                    .submissions_by_endpoint
                    .inc(crate::metrics::endpoint_label(&sender.to_string()));
                Ok(Submission { transfer: *transfer, created })
            }
            other => Err(EngineError::Store(StoreError::Corrupt {
                id: request.sender_ref,
                problem: format!("unexpected answer {other:?}"),
            })),
        }
    }

    /// The links of a new transfer, and the transfers they name: those the sender names, each
    /// to a transfer it is a party to, and `rerouted_from` to its own rejected transfers of the
    /// same case (改派: the gateway adds it, so both desks and the console can follow a case
    /// across transfers). An assist's `assist_for` may name its transfer by the reference the
    /// sender knows it by (a native document's 【关联单号】: its own `sender_ref`, or the id it
    /// received) and must name an open one (`linkage.md`).
    async fn links_for(
        &self,
        sender: &EndpointId,
        request: &TransferRequest,
    ) -> Result<(Vec<Link>, Vec<Transfer>), EngineError> {
        let mut links: Vec<Link> = Vec::with_capacity(request.links.len());
        let mut linked: Vec<Transfer> = Vec::new();
        for (i, link) in request.links.iter().enumerate() {
            let found = match link.rel {
                LinkRel::AssistFor => {
                    match self.store.transfer_by_reference(sender, &link.transfer_id).await? {
                        Some(t) => Some(t),
                        None => self.store.transfer(&link.transfer_id).await?,
                    }
                }
                _ => self.store.transfer(&link.transfer_id).await?,
            };
            let Some(found) = found.filter(|t| lifecycle::role_of(t, sender).is_some()) else {
                return Err(EngineError::Forbidden(format!(
                    "links[{i}].transfer_id: {sender} is not a party to transfer {:?}",
                    link.transfer_id
                )));
            };
            if link.rel == LinkRel::AssistFor
                && (lifecycle::is_terminal(found.state) || found.state >= State::Resolved)
            {
                return Err(EngineError::Invalid(crate::model::ModelError::new(
                    format!("links[{i}].transfer_id"),
                    format!(
                        "an assist is asked only while its transfer is open; {:?} is {}",
                        link.transfer_id, found.state
                    ),
                )));
            }
            let link = Link { rel: link.rel, transfer_id: found.transfer_id.clone() };
            if !links.contains(&link) {
                links.push(link);
                linked.push(found);
            }
        }
        for rejected in self.store.rejected_of_case(sender, &request.case.case_id).await? {
            let link = Link { rel: LinkRel::ReroutedFrom, transfer_id: rejected };
            if !links.contains(&link) {
                if let Some(t) = self.store.transfer(&link.transfer_id).await? {
                    linked.push(t);
                }
                links.push(link);
            }
        }
        Ok((links, linked))
    }

    /// A linkage action (`linkage.md`) by `who` on a transfer it may act on: an endpoint as
    /// the transfer's origin or destination, a linkage office whose regions cover it (with
    /// `decide_disputes`). Answers once durable, with the transfer after it.
    pub async fn act(
        &self,
        who: &Identity,
        transfer_id: &str,
        mut action: Action,
        at: Timestamp,
    ) -> Result<Transfer, EngineError> {
        action.validate()?;
        let transfer = match self.store.transfer(transfer_id).await? {
            Some(t) => t,
            None => return Err(EngineError::NotFound(transfer_id.to_string())),
        };
        let party = match who {
            crate::security::Identity::Endpoint(e) => match lifecycle::role_of(&transfer, e) {
                Some(lifecycle::Role::Origin) => Party::Origin,
                Some(_) => Party::Destination,
                None => {
                    return Err(EngineError::Forbidden(format!(
                        "{e} is not a party to transfer {transfer_id}"
                    )))
                }
            },
            crate::security::Identity::Office(_) => {
                self.policy.may_decide(who, &transfer).map_err(EngineError::Forbidden)?;
                Party::Office
            }
            other => {
                return Err(EngineError::Forbidden(format!(
                    "{}: only the transfer's desks and a linkage office act on it",
                    other.uri()
                )))
            }
        };
        let name = match who {
            crate::security::Identity::Endpoint(e) => e.to_string(),
            other => other.uri(),
        };
        let rule = self.deadline_rule(&transfer.to, transfer.case.urgency);
        let write = Write::Linkage {
            transfer_id: transfer.transfer_id.clone(),
            action: Box::new(action),
            actor: Actor { party, name },
            at,
            settings: self.linkage,
            rule,
        };
        match self.store.write(write).await? {
            WriteResult::Linkage(Ok((transfer, _))) => Ok(*transfer),
            WriteResult::Linkage(Err(StatusRefused::Rule(refusal))) => {
                Err(EngineError::Refused(refusal))
            }
            WriteResult::Linkage(Err(StatusRefused::NotFound(id))) => {
                Err(EngineError::NotFound(id))
            }
            other => Err(EngineError::Store(StoreError::Corrupt {
                id: transfer.transfer_id,
                problem: format!("unexpected answer {other:?}"),
            })),
        }
    }

    /// Finds the transfer a status update names, as the caller knows it: by `transfer_id`, or
    /// by `transfer_ref` (the gateway's id for a destination, its own `sender_ref` for an
    /// origin). A transfer the caller is no party to is refused as forbidden.
    pub async fn find(
        &self,
        caller: &EndpointId,
        update: &StatusUpdate,
    ) -> Result<Transfer, EngineError> {
        let reference =
            update.transfer_id.as_deref().or(update.transfer_ref.as_deref()).unwrap_or_default();
        let found = match &update.transfer_id {
            Some(id) => self.store.transfer(id).await?,
            None => match self.store.transfer_by_reference(caller, reference).await? {
                Some(t) => Some(t),
                None => self.store.transfer(reference).await?,
            },
        };
        match found {
            Some(t) if lifecycle::role_of(&t, caller).is_some() => Ok(t),
            Some(t) => Err(EngineError::Forbidden(format!(
                "{caller} is not a party to transfer {}",
                t.transfer_id
            ))),
            None => Err(EngineError::NotFound(format!("no transfer {reference:?} for {caller}"))),
        }
    }

    /// Applies a status update from `caller`. Answers once durable.
    pub async fn update_status(
        &self,
        caller: &EndpointId,
        mut update: StatusUpdate,
    ) -> Result<(Transfer, Outcome), EngineError> {
        if update.by != *caller {
            return Err(EngineError::Forbidden(format!(
                "{caller} may report status only as itself, not as {}",
                update.by
            )));
        }
        update.validate()?;
        let transfer = self.find(caller, &update).await?;
        let role = lifecycle::role_of(&transfer, caller)
            .ok_or_else(|| EngineError::NotFound(transfer.transfer_id.clone()))?;
        // An in-progress note 【延期申请】reason至time asks for an extension (`linkage.md`): no
        // state change, an `extension_requested` entry.
        if update.state == State::InProgress {
            if let Some(asked) = update.note.as_deref().and_then(linkage::read_extension_request) {
                let (reason, until) = asked.map_err(|e| {
                    EngineError::Invalid(crate::model::ModelError::new("note", e.0))
                })?;
                let before = transfer.history.len();
                let who = crate::security::Identity::Endpoint(caller.clone());
                let action = Action::RequestExtension { until, reason };
                let after = self.act(&who, &transfer.transfer_id, action, update.at).await?;
                let written = after.history[before.min(after.history.len())..].to_vec();
                return Ok((after, Outcome::Applied(written)));
            }
        }
        let write = Write::Status {
            transfer_id: transfer.transfer_id.clone(),
            update: Box::new(update),
            role,
        };
        match self.store.write(write).await? {
            WriteResult::Status(Ok((transfer, outcome))) => {
                crate::metrics::inc(&crate::metrics::counters().status_updates);
                Ok((*transfer, outcome))
            }
            WriteResult::Status(Err(StatusRefused::Rule(refusal))) => {
                Err(EngineError::Refused(refusal))
            }
            WriteResult::Status(Err(StatusRefused::NotFound(id))) => Err(EngineError::NotFound(id)),
            other => Err(EngineError::Store(StoreError::Corrupt {
                id: transfer.transfer_id,
                problem: format!("unexpected answer {other:?}"),
            })),
        }
    }

    /// A transfer, if `who` may read it (its parties, operators, agencies granted its region).
    pub async fn transfer_for(
        &self,
        who: &Identity,
        transfer_id: &str,
    ) -> Result<Transfer, EngineError> {
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
        // An endpoint sees only its own; an agency or operator may narrow to one endpoint.
        if let Some(me) = who.endpoint() {
            filter.party = Some(me.to_string());
        }
        // One row more than the page says whether a next page exists: a last page that is
        // exactly full has no token.
        let size = filter.limit.clamp(1, 500);
        filter.limit = size + 1;
        let mut page = self.store.transfers(&filter).await?;
        let more = page.len() as i64 > size;
        page.truncate(size as usize);
        let next = more.then(|| page.last().map(|t| t.transfer_id.clone())).flatten();
        let visible = page.into_iter().filter(|t| self.policy.may_read(who, t).is_ok()).collect();
        Ok((visible, next))
    }

    /// A delivery in the destination's native format, read back by the destination's own
    /// profile: a document its reader would refuse is never sent. The deliverer sends it; the
    /// case page shows it as the destination received it.
    pub fn render_delivery(&self, item: &OutboxItem) -> Result<Vec<u8>, String> {
        let endpoint = self.registry.endpoint(&item.destination).map_err(|e| e.to_string())?;
        let own_reader = |e: crate::formats::FormatError| {
            format!("{}'s own reader refuses it: {e}", item.destination)
        };
        match item.kind {
            DeliveryKind::Transfer => {
                let request: TransferRequest =
                    serde_json::from_str(&item.payload).map_err(|e| e.to_string())?;
                let body = endpoint.write_transfer(&request).map_err(|e| e.to_string())?;
                endpoint
                    .format
                    .read_transfer(&body, &request.from, &endpoint.codes)
                    .map_err(own_reader)?;
                Ok(body)
            }
            DeliveryKind::Status => {
                let update: StatusUpdate =
                    serde_json::from_str(&item.payload).map_err(|e| e.to_string())?;
                let body = endpoint.write_status(&update).map_err(|e| e.to_string())?;
                endpoint.read_status(&body).map_err(own_reader)?;
                Ok(body)
            }
        }
    }

    /// The evidence of a transfer `who` may read: its audit entries, the native document it
    /// was received as, and its deliveries with the native document each destination was (or
    /// will be) sent.
    pub async fn evidence_for(
        &self,
        who: &Identity,
        transfer_id: &str,
    ) -> Result<Evidence, EngineError> {
        let transfer = self.transfer_for(who, transfer_id).await?;
        let audit = self.store.audit_of(&transfer.transfer_id).await?;
        let received = self.store.native_document(&transfer.transfer_id).await?;
        let deliveries = self
            .store
            .deliveries_of(&transfer.transfer_id)
            .await?
            .into_iter()
            .map(|item| {
                let document = self.render_delivery(&item).and_then(|bytes| {
                    let endpoint =
                        self.registry.endpoint(&item.destination).map_err(|e| e.to_string())?;
                    endpoint.format.encoding.decode(&bytes)
                });
                (item, document)
            })
            .collect();
        let mut linked_from = Vec::new();
        for (rel, id) in self.store.links_to(&transfer.transfer_id).await? {
            if let Ok(linked) = self.transfer_for(who, &id).await {
                linked_from.push((rel, linked));
            }
        }
        Ok(Evidence { transfer, audit, received, deliveries, linked_from })
    }

    /// The figures' aggregates over what `who` may read ([`Policy::scope`]) and `filter`.
    pub async fn figures_for(
        &self,
        who: &Identity,
        mut filter: FactsFilter,
    ) -> Result<Aggregates, EngineError> {
        self.scope(who, &mut filter)?;
        Ok(self.facts.figures(&self.store, &filter).await?)
    }

    /// Transfers by category over what `who` may read and `filter`.
    pub async fn categories_for(
        &self,
        who: &Identity,
        mut filter: FactsFilter,
    ) -> Result<Vec<(String, u64)>, EngineError> {
        self.scope(who, &mut filter)?;
        Ok(self.facts.categories(&self.store, &filter).await?)
    }

    fn scope(&self, who: &Identity, filter: &mut FactsFilter) -> Result<(), EngineError> {
        let scope = self.policy.scope(who, Right::ReadTransfers).map_err(EngineError::Forbidden)?;
        filter.party = scope.party;
        filter.visible_regions = scope.regions;
        Ok(())
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
        let visible = events
            .into_iter()
            .filter(|e| self.policy.may(who, &e.transfer, Right::Watch).is_ok())
            .collect();
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
                    let write = Write::Escalate {
                        transfer_id: transfer.transfer_id.clone(),
                        deadline,
                        at: now.unix_seconds(),
                    };
                    let store = self.store.clone();
                    writes.spawn(async move { store.write(write).await });
                }
            }
            while let Some(done) = writes.join_next().await {
                let result = done.map_err(|e| {
                    EngineError::Store(StoreError::Commit(format!(
                        "an escalation's task failed: {e}"
                    )))
                })?;
                if let WriteResult::Done(true) = result? {
                    escalated += 1;
                    progress = true;
                }
            }
            if candidates.len() < 200 || !progress {
                break;
            }
        }
        // The linkage defaults that are due: disputes left open, assists' needed_by.
        loop {
            let due = self.store.due_timers(now.unix_seconds(), 200).await?;
            for (transfer_id, kind) in &due {
                let write =
                    Write::Timer { transfer_id: transfer_id.clone(), kind: kind.clone(), now };
                if let WriteResult::Done(true) = self.store.write(write).await? {
                    escalated += 1;
                }
            }
            if due.len() < 200 {
                return Ok(escalated);
            }
        }
    }
}
