//! The APIs. Two fronts on one mutual-TLS listener — [`https`] (native documents and canonical
//! JSON) and [`grpc`] (partner agencies) — over what they share: the caller ([`Peer`], from
//! the TLS layer; no handler looks at a document to decide who is calling), the state
//! ([`AppState`]), the request in hand ([`context`]), the one refusal model ([`refusal`]) and
//! the per-request middleware ([`logging`]). The [`console`]'s pages are served on the HTTPS
//! front and call the same APIs.

pub mod console;
pub mod context;
pub mod grpc;
pub mod https;
pub mod logging;
pub mod refusal;

pub use https::{route_template, router, unknown_route, OPENAPI, ROUTES};

use std::sync::Arc;

use crate::engine::Engine;
use crate::model::{EndpointId, Timestamp};
use crate::security::Identity;
use refusal::{Reason, Refusal};

/// The largest document accepted.
pub use crate::config::MAX_BODY;

/// The caller, as the TLS layer established it: the identity, its URI (made once per
/// connection; it is the rate limiters' key), and where its refusals are recorded.
#[derive(Clone, Debug)]
pub struct Peer {
    pub identity: Identity,
    pub uri: String,
    pub auditor: crate::store::audit::Auditor,
}

impl Peer {
    pub fn new(identity: Identity, auditor: crate::store::audit::Auditor) -> Peer {
        let uri = identity.uri();
        Peer { identity, uri, auditor }
    }
}

/// What the handlers share.
pub struct AppState {
    pub engine: Engine,
    /// A destination failing longer than this (seconds) is reported unreachable.
    pub unreachable_after: std::time::Duration,
    /// Endpoint health, read from the store at most once a second (it is on every submit's
    /// answer; a second's staleness is nothing next to `unreachable_after`).
    pub health:
        tokio::sync::Mutex<Option<(std::time::Instant, Arc<Vec<crate::store::EndpointHealth>>)>>,
    /// Rate limits per identity.
    pub limits: crate::security::ratelimit::RateLimits,
    /// The shared datasets.
    pub datasets: crate::sync::Datasets,
    /// Set when the gateway begins to shut down: open streams end at once (their clients
    /// resume from their cursors elsewhere) instead of holding the shutdown up.
    pub closing: tokio::sync::watch::Sender<bool>,
    /// How long a stream may be quiet before it sends a heartbeat.
    pub heartbeat: std::time::Duration,
    /// The memory budget of request bodies in flight.
    pub bodies: https::bodies::BodyBudget,
    /// The TLS material in use, for operators to see its expiry (set by the server).
    pub tls: Option<Arc<crate::security::reload::TlsReloader>>,
}

impl AppState {
    /// The state of the fronts: the engine, and from the configuration the listener's
    /// budgets, the rate limits and when a destination is called unreachable.
    pub fn new(engine: Engine, config: &crate::config::Config) -> AppState {
        let limits = crate::security::ratelimit::RateLimits::new(&config.limits);
        let datasets = engine.datasets();
        let heartbeat = config.listen.stream_heartbeat;
        let unreachable_after = config.delivery.unreachable_after;
        let listen = &config.listen;
        let bodies = https::bodies::BodyBudget::new(
            listen.body_budget,
            listen.body_budget_per_identity,
            listen.body_timeout,
        );
        AppState {
            engine,
            unreachable_after,
            health: tokio::sync::Mutex::new(None),
            limits,
            datasets,
            closing: tokio::sync::watch::Sender::new(false),
            heartbeat,
            bodies,
            tls: None,
        }
    }

    /// Takes one call of `kind` from the caller's budget; when it is spent, the refusal saying
    /// how long to wait.
    pub fn limit(
        &self,
        peer: &Peer,
        kind: crate::security::ratelimit::CallKind,
    ) -> Result<(), Refusal> {
        self.limits.check_keyed(&peer.identity, &peer.uri, kind).map_err(|wait| {
            crate::metrics::inc(&crate::metrics::counters().rate_limited);
            Refusal::limited(wait)
        })
    }

    /// Whether a destination failing since `since` (Unix seconds) has failed longer than
    /// `delivery.unreachable_after` at `now`.
    pub fn failing_too_long(&self, since: i64, now: i64) -> bool {
        std::time::Duration::from_secs((now - since).max(0) as u64) > self.unreachable_after
    }

    /// Endpoint health, at most a second old.
    pub async fn health(&self) -> Arc<Vec<crate::store::EndpointHealth>> {
        let mut cached = self.health.lock().await;
        if let Some((at, health)) = cached.as_ref() {
            if at.elapsed() < std::time::Duration::from_secs(1) {
                return health.clone();
            }
        }
        let health = Arc::new(self.engine.store().endpoint_health().await.unwrap_or_default());
        *cached = Some((std::time::Instant::now(), health.clone()));
        health
    }
}

/// Whether a destination has been failing for longer than the configured time.
pub async fn reachable(state: &AppState, endpoint: &EndpointId) -> bool {
    let now = Timestamp::now().unix_seconds();
    let name = endpoint.to_string();
    !state.health().await.iter().any(|h| {
        h.endpoint == name
            && h.failing_since.is_some_and(|since| state.failing_too_long(since, now))
    })
}

/// A store that failed: nothing was done.
pub fn unavailable(error: crate::store::StoreError) -> Refusal {
    Refusal::new(Reason::Unavailable, error.to_string())
}
