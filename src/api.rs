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
    pub health: Cached<Vec<crate::store::EndpointHealth>>,
    /// The transfers by state for `/metrics`, counted at most every [`STATES_EVERY`] (or
    /// [`STATES_SPACING`] times the last count's time).
    pub states: Cached<Vec<(String, i64)>>,
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
            health: Cached::new(std::time::Duration::from_secs(1)),
            states: Cached::spaced(STATES_EVERY, STATES_SPACING),
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
        self.health.get(|| self.engine.store().endpoint_health()).await
    }

    /// The transfers by state, at most [`STATES_EVERY`] old, or [`STATES_SPACING`] times the
    /// last count's own time.
    pub async fn states(&self) -> Arc<Vec<(String, i64)>> {
        self.states.get(|| self.engine.store().count_by_state()).await
    }
}

/// How often `/metrics` counts the transfers by state, at most: the count reads every
/// transfer (1–7.7 s at 3.5 million under load, measured: docs/PERFORMANCE.md), and a scrape
/// every few seconds from each replica kept one running all the time.
pub const STATES_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// And never sooner than this many times the last count's own time: the count grows with the
/// store (1.2 s at 4.4 million on PostgreSQL, a parallel scan of every transfer), so at a
/// fixed period its share of the server would grow without end; spaced, it runs at most 1 %
/// of the time however large the store (a 2-s count: every 200 s).
pub const STATES_SPACING: u32 = 100;

/// A value read from the store at most once per `every` (and, if spaced, once per that many
/// times the last read's own time), shared by whoever asks meanwhile. One read at a time: who
/// asks during it waits for it, rather than reading again. A read that fails is not kept: the
/// last value is answered (or an empty one), and the next asker reads again.
pub struct Cached<T> {
    every: std::time::Duration,
    spacing: u32,
    /// When the last value was read, how long its read took, and the value.
    last: tokio::sync::Mutex<Option<(std::time::Instant, std::time::Duration, Arc<T>)>>,
}

impl<T: Default> Cached<T> {
    pub fn new(every: std::time::Duration) -> Cached<T> {
        Cached::spaced(every, 0)
    }

    /// Read again no sooner than `every`, nor than `spacing` times the last read's time.
    pub fn spaced(every: std::time::Duration, spacing: u32) -> Cached<T> {
        Cached { every, spacing, last: tokio::sync::Mutex::new(None) }
    }

    /// The value, read with `read` if the last is old enough.
    pub async fn get<F, E>(&self, read: impl FnOnce() -> F) -> Arc<T>
    where
        F: std::future::Future<Output = Result<T, E>>,
    {
        let mut last = self.last.lock().await;
        if let Some((at, took, value)) = last.as_ref() {
            if at.elapsed() < self.every.max(*took * self.spacing) {
                return value.clone();
            }
        }
        let started = std::time::Instant::now();
        match read().await {
            Ok(value) => {
                let value = Arc::new(value);
                *last = Some((std::time::Instant::now(), started.elapsed(), value.clone()));
                value
            }
            Err(_) => last.as_ref().map(|(_, _, value)| value.clone()).unwrap_or_default(),
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A cached value is read again only once it is older than its period; a failed read
    /// answers the last value and is not kept.
    #[tokio::test]
    async fn a_cached_value_is_read_once_per_period_and_a_failed_read_keeps_the_last() {
        let read = |n: i64| move || async move { Ok::<_, ()>(n) };
        let kept = Cached::new(Duration::from_secs(3600));
        assert_eq!(*kept.get(read(1)).await, 1);
        assert_eq!(*kept.get(read(2)).await, 1, "within its period: the first read");
        let fresh = Cached::new(Duration::ZERO);
        assert_eq!(*fresh.get(read(1)).await, 1);
        assert_eq!(*fresh.get(read(2)).await, 2, "past its period: read again");
        let failed = || async { Err::<i64, ()>(()) };
        assert_eq!(*fresh.get(failed).await, 2, "a failed read answers the last value");
        assert_eq!(*fresh.get(read(3)).await, 3, "and is not kept");
        let never: Cached<i64> = Cached::new(Duration::ZERO);
        assert_eq!(*never.get(failed).await, 0, "nothing read yet: the empty value");
    }

    /// A spaced value whose read took 30 ms is not read again within 1,000 times that (30 s),
    /// where one that is not spaced is read again at once.
    #[tokio::test]
    async fn a_spaced_value_waits_for_a_multiple_of_its_reads_time() {
        let slow = |n: i64| {
            move || async move {
                tokio::time::sleep(Duration::from_millis(30)).await;
                Ok::<_, ()>(n)
            }
        };
        let spaced = Cached::spaced(Duration::ZERO, 1000);
        assert_eq!(*spaced.get(slow(1)).await, 1);
        assert_eq!(*spaced.get(slow(2)).await, 1, "within 1,000 times its read's 30 ms");
        let unspaced = Cached::new(Duration::ZERO);
        assert_eq!(*unspaced.get(slow(1)).await, 1);
        assert_eq!(*unspaced.get(slow(2)).await, 2);
    }
}
