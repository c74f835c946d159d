//! The gateway process: listeners, TLS, and the background workers, wired from a [`Config`].
//!
//! [`run`] takes bound listeners and a shutdown future, so tests start the real server on port
//! 0. On shutdown it stops accepting, lets open requests finish (up to a grace period), and
//! stops the workers; what was answered "submitted" is already in the store.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::{Extension, Router};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use crate::api::logging::MAX_HEADER_BYTES;
use crate::api::{self, AppState, Peer};
use crate::config::{Config, Store as StoreConfig};
use crate::delivery::Deliverer;
use crate::engine::Engine;
use crate::formats::Registry;
use crate::metrics::{self, counters};
use crate::model::Timestamp;
use crate::security::Identity;
use crate::store::{Store, StoreError};

/// How long a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open requests may run on after shutdown begins.
const GRACE: Duration = Duration::from_secs(10);

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Tls(#[from] crate::security::TlsError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("profiles: {0}")]
    Profiles(String),
    #[error("listen: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Replica(#[from] crate::store::replicas::ClaimError),
}

/// The listeners the gateway serves on.
pub struct Listeners {
    /// Mutual TLS, the APIs.
    pub https: TcpListener,
    /// Plain HTTP, health and metrics.
    pub admin: TcpListener,
}

/// Opens the configured store.
pub async fn open_store(config: &Config) -> Result<Store, StoreError> {
    match &config.store {
        StoreConfig::Sqlite { path, max_size } => Store::sqlite_limited(path, *max_size).await,
        StoreConfig::Postgres { url, pool } => Store::postgres(url, *pool).await,
    }
}

/// Loads the registry: the built-in formats and endpoints, plus the configured folder.
pub fn registry(config: &Config) -> Result<Registry, ServeError> {
    let registry = match &config.profiles {
        None => Registry::builtin(),
        Some(dir) => Registry::with_dir(dir).map_err(|errors| {
            ServeError::Profiles(
                errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "),
            )
        })?,
    };
    // An endpoint's settings for an endpoint the registry does not have would be ignored: a
    // typo in an id must not silently leave a desk without its deliveries.
    if let Some(unknown) = config.endpoints.iter().find(|e| registry.endpoint_named(&e.id).is_err())
    {
        return Err(ServeError::Profiles(format!(
            "[[endpoint]] id = \"{}\": not an endpoint of the registry (see `liandong endpoints`)",
            unknown.id
        )));
    }
    Ok(registry)
}

/// Runs the gateway until `shutdown` completes.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let server_tls = Arc::new(crate::security::reload::TlsReloader::load(&config.tls.files())?);
    let registry = Arc::new(registry(&config)?);
    let store = open_store(&config).await?;
    let config = Arc::new(config);
    let replica =
        std::env::var("LIANDONG_REPLICA").ok().filter(|r| !r.is_empty()).unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "host".into());
            format!("{host}:{}", listeners.https.local_addr().map(|a| a.port()).unwrap_or(0))
        });
    // The name is this replica's audit chain: claimed before anything is written under it.
    let holder = crate::store::replicas::holder_id();
    store.claim_replica(&replica, &holder).await?;
    store.name_chain(replica.clone());
    let auditor = crate::store::audit::Auditor::start(store.clone());
    store
        .audit(vec![crate::store::audit::AuditEntry {
            at: Timestamp::now().unix_seconds(),
            actor: "gateway".into(),
            action: "config.loaded".into(),
            transfer_id: None,
            detail: serde_json::json!({
                "replica": replica,
                "version": env!("CARGO_PKG_VERSION"),
                "endpoints": config.endpoints.iter().map(|e| e.id.to_string()).collect::<Vec<_>>(),
                "agencies": config.agencies.iter().map(|a| a.name.clone()).collect::<Vec<_>>(),
                "crl": config.tls.crl.is_some(),
            }),
        }])
        .await?;
    let engine = Engine::new(store.clone(), registry, config.clone());
    // The transfer-item lists start as the built-in code tables (added once, never overwritten).
    let seeded = engine.datasets().seed_categories().await.map_err(|e| match e {
        crate::sync::SyncError::Store(e) => ServeError::Store(e),
        other => ServeError::Profiles(format!("seeding categories: {other}")),
    })?;
    if seeded > 0 {
        tracing::info!(records = seeded, "seeded the categories dataset from the code tables");
    }
    // The routing directory and the transfer-item lists are in memory before the first
    // submission, and kept up to date off the submission path.
    engine.directory().refresh(&store).await?;
    engine.categories().refresh(&store).await?;
    crate::sync::categories::apply(engine.registry(), engine.categories()).await;
    engine.knowledge().refresh(&store).await?;
    let records = engine.directory().records().await;
    let items = engine.categories().records().await;
    let answers = engine.knowledge().records().await;
    tracing::info!(
        records,
        items,
        answers,
        "routing directory, transfer-item lists and knowledge index loaded"
    );
    let state = Arc::new(AppState {
        tls: Some(server_tls.clone()),
        ..AppState::new(engine.clone(), &config)
    });

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let deliverer = Deliverer::new(engine.clone(), server_tls.clone(), config.delivery.clone());
    let delivery = tokio::spawn(deliverer.run(stopped.clone()));
    let sweeper = tokio::spawn(sweep(engine.clone(), config.delivery.sweep_every, stopped.clone()));
    let admin = tokio::spawn(serve_admin(
        listeners.admin,
        state.clone(),
        server_tls.clone(),
        stopped.clone(),
    ));
    tokio::spawn(server_tls.clone().run(config.tls.reload_check, auditor.clone(), stopped.clone()));
    tokio::spawn(engine.follow_datasets(store.clone(), stopped.clone()));
    tokio::spawn(engine.follow_facts(store.clone(), stopped.clone()));
    if store.autovacuum_off().await? {
        tracing::warn!(
            every_seconds = crate::store::upkeep::EVERY.as_secs(),
            "PostgreSQL's autovacuum is off: the gateway vacuums and analyzes its own tables \
             (turn autovacuum on and this stops; docs/OPERATORS.md)"
        );
        use crate::store::upkeep::{self, Part};
        for part in [Part::Tables, Part::Queue] {
            tokio::spawn(keep_up(store.clone(), part, upkeep::pauses(), stopped.clone()));
        }
    }
    let lease =
        tokio::spawn(hold_replica(store.clone(), replica.clone(), holder.clone(), stopped.clone()));
    // governor remembers every key it has seen; forget the idle ones so memory stays bounded.
    let forgetting = state.clone();
    let mut forget_stop = stopped.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(60)) => forgetting.limits.forget_idle(),
                _ = forget_stop.changed() => return,
            }
        }
    });
    tracing::info!(https = %listeners.https.local_addr()?, "liandong is serving");

    let router = api::router(state.clone())
        .merge(api::grpc::routes(state.clone()).await)
        // After the merge: replaces tonic's answer to everything unknown (a gRPC 200).
        .fallback(api::unknown_route)
        .layer(axum::middleware::from_fn(api::logging::time_limit))
        .layer(axum::middleware::from_fn(api::logging::header_limit))
        .layer(axum::middleware::from_fn(api::logging::log_request))
        // Outermost: every answer, log line and refusal below names the request.
        .layer(axum::middleware::from_fn(api::context::with_request_id));
    let header_timeout = config.listen.header_timeout;
    let connections = crate::security::connections::ConnectionLimits::new(
        config.listen.max_connections,
        config.listen.max_connections_per_source,
    );
    let (mut accept_pause, mut accept_logged) = (ACCEPT_PAUSE_MIN, None);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listeners.https.accept() => {
                let (tcp, remote) = match accepted {
                    Ok(accepted) => {
                        accept_pause = ACCEPT_PAUSE_MIN;
                        accepted
                    }
                    Err(e) => {
                        // Out of file descriptors, most likely: pause rather than spin a core on
                        // an accept that fails at once (the tokio and hyper guides' advice).
                        metrics::refuse("accept_failed");
                        if accept_logged.is_none_or(|at: std::time::Instant| at.elapsed() >= Duration::from_secs(1)) {
                            accept_logged = Some(std::time::Instant::now());
                            tracing::warn!(error = %e, pause_ms = accept_pause.as_millis() as u64, open = connections.open(), "accepting a connection failed; pausing");
                        }
                        tokio::time::sleep(accept_pause).await;
                        accept_pause = (accept_pause * 2).min(ACCEPT_PAUSE_MAX);
                        continue;
                    }
                };
                let Ok(admitted) = connections.admit(remote.ip()) else {
                    drop(tcp);
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                // The material current now; a reload later leaves this connection as it is.
                let acceptor = tokio_rustls::TlsAcceptor::from(server_tls.current());
                let reloader = server_tls.clone();
                let auditor = auditor.clone();
                let router = router.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    // The connection's place, given back when the task ends.
                    let _admitted = admitted;
                    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => {
                            metrics::inc(&counters().tls_handshake_failures);
                            tracing::info!(%remote, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            metrics::inc(&counters().tls_handshake_failures);
                            tracing::info!(%remote, "TLS handshake timed out");
                            return;
                        }
                    };
                    let leaf = tls.get_ref().1.peer_certificates().and_then(|chain| chain.first()).map(|leaf| leaf.to_vec());
                    let identity = leaf
                        .as_deref()
                        .ok_or_else(|| "no client certificate".to_string())
                        .and_then(Identity::from_certificate);
                    let identity = match identity {
                        Ok(identity) => identity,
                        Err(reason) => {
                            metrics::refuse("certificate");
                            tracing::warn!(%remote, %reason, "refused: the client certificate names no Liandong identity");
                            return;
                        }
                    };
                    let who = identity.uri();
                    let service = TowerToHyperService::new(router.layer(Extension(Peer::new(identity, auditor.clone()))));
                    let builder = connection_builder(header_timeout);
                    let connection = builder.serve_connection(TokioIo::new(tls), service);
                    let leaf = leaf.unwrap_or_default();
                    tokio::select! {
                        _ = watcher.watch(connection.into_owned()) => {}
                        why = reloader.withdrawn(&leaf) => {
                            metrics::refuse("certificate_withdrawn");
                            tracing::warn!(%remote, identity = %who, why, "closed an open connection: its client certificate was {why}");
                        }
                    }
                });
            }
            _ = &mut shutdown => break,
        }
    }
    tracing::info!("shutting down");
    drop(listeners.https);
    // Streams end at once (their clients resume from their cursors), and the background work
    // stops before the open requests are waited for.
    state.closing.send_replace(true);
    let _ = stop.send(true);
    let _ = tokio::time::timeout(GRACE, graceful.shutdown()).await;
    let _ = tokio::time::timeout(GRACE, async {
        let _ = delivery.await;
        let _ = sweeper.await;
        let _ = admin.await;
        let _ = lease.await;
    })
    .await;
    Ok(())
}

/// HTTP settings that keep one client from holding resources: headers must arrive within
/// `header_timeout` (slowloris), header blocks and buffers are bounded, HTTP/2 connections get
/// at most [`MAX_STREAMS`] concurrent streams and are pinged so dead peers are dropped.
fn connection_builder(header_timeout: Duration) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout)
        // Room for a header block a little over the limit, so that `header_limit` can answer
        // it with a body naming the limit; beyond this hyper answers a bare 431.
        .max_buf_size(MAX_HEADER_BYTES + MAX_HEADER_BYTES / 4);
    builder
        .http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS)
        .max_header_list_size(MAX_HEADER_BYTES as u32)
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20));
    builder
}

/// The pause after a failed accept, doubling while accepts keep failing.
const ACCEPT_PAUSE_MIN: Duration = Duration::from_millis(10);
const ACCEPT_PAUSE_MAX: Duration = Duration::from_secs(1);

/// Concurrent HTTP/2 streams per connection (each Watch is one).
const MAX_STREAMS: u32 = 128;

/// Runs `work`, waits the next of `pauses`, and again, until the server stops or the pauses
/// run out.
async fn repeat<F: std::future::Future<Output = ()>>(
    pauses: impl IntoIterator<Item = Duration>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
    mut work: impl FnMut() -> F,
) {
    for pause in pauses {
        work().await;
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stopped.changed() => return,
        }
    }
}

/// The deadline sweeper: escalates missed deadlines every `every`.
async fn sweep(engine: Engine, every: Duration, stopped: tokio::sync::watch::Receiver<bool>) {
    repeat(std::iter::repeat(every), stopped, || async {
        match engine.sweep_deadlines(Timestamp::now()).await {
            Ok(0) => {}
            Ok(n) => {
                counters().escalations.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(escalated = n, "transfers missed a deadline");
            }
            Err(e) => tracing::error!(error = %e, "the deadline sweep failed"),
        }
    })
    .await
}

/// Vacuums and analyzes `part`'s tables that are due now, then after each of `pauses`:
/// PostgreSQL with autovacuum off, where a growing table keeps the plans of an empty one.
async fn keep_up(
    store: Store,
    part: crate::store::upkeep::Part,
    pauses: impl IntoIterator<Item = Duration>,
    stopped: tokio::sync::watch::Receiver<bool>,
) {
    repeat(pauses, stopped, || async {
        let started = std::time::Instant::now();
        match store.upkeep(part).await {
            Ok(Some(done)) if !done.is_empty() => {
                let seconds = started.elapsed().as_secs_f64();
                let named = |pick: fn(&crate::store::upkeep::Due) -> bool| {
                    done.iter().filter(|(_, due)| pick(due)).map(|(t, _)| *t).collect::<Vec<_>>()
                };
                tracing::info!(
                    seconds,
                    vacuumed = ?named(|due| due.vacuum),
                    analyzed = ?named(|due| due.analyze),
                    "the store's tables that were due vacuumed and analyzed"
                )
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "vacuuming the store's tables failed"),
        }
    })
    .await
}

/// Renews this replica's name while it runs, and gives it back when it stops. A renewal that
/// finds the claim gone (the store was away longer than the lease and another gateway took the
/// name) is logged as an error: two chains are now interleaving.
async fn hold_replica(
    store: Store,
    name: String,
    holder: String,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(crate::store::replicas::RENEW_EVERY) => {}
            _ = stopped.changed() => break,
        }
        match store.renew_replica(&name, &holder).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::error!(replica = %name, "this replica's name is held by another gateway now; its audit chain is shared: stop one of them")
            }
            Err(e) => {
                tracing::warn!(replica = %name, error = %e, "could not renew this replica's name")
            }
        }
    }
    if let Err(e) = store.release_replica(&name, &holder).await {
        tracing::warn!(replica = %name, error = %e, "could not give this replica's name back; it lapses on its own");
    }
}

/// `/healthz` (the process runs), `/readyz` (the store answers), `/metrics` (Prometheus).
async fn serve_admin(
    listener: TcpListener,
    state: Arc<AppState>,
    tls: Arc<crate::security::reload::TlsReloader>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let ready = state.clone();
    let scrape = state.clone();
    let router = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let state = ready.clone();
                async move {
                    if state.engine.store().ping().await {
                        (axum::http::StatusCode::OK, "ready\n")
                    } else {
                        (axum::http::StatusCode::SERVICE_UNAVAILABLE, "store unavailable\n")
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let state = scrape.clone();
                let tls = tls.clone();
                async move {
                    let store = &state.engine.store();
                    let now = Timestamp::now().unix_seconds();
                    let gauges = metrics::StoreGauges {
                        states: state.states().await.as_ref().clone(),
                        outbox: store
                            .outbox_backlog()
                            .await
                            .unwrap_or_default()
                            .into_iter()
                            .map(|g| metrics::Backlog {
                                destination: g.destination,
                                status: g.status.as_str(),
                                count: g.count,
                                oldest: g.oldest,
                            })
                            .collect(),
                        unreachable: store
                            .endpoint_health()
                            .await
                            .unwrap_or_default()
                            .into_iter()
                            .filter(|h| {
                                h.failing_since
                                    .is_some_and(|since| state.failing_too_long(since, now))
                            })
                            .map(|h| h.endpoint)
                            .collect(),
                        push: state.engine.push_endpoints().map(String::from).collect(),
                        now,
                    };
                    (
                        [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                        metrics::render(&gauges) + &tls.metrics(),
                    )
                }
            }),
        );
    let _ = axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            let _ = stopped.changed().await;
        })
        .await;
}
