//! `liandong bench --deliver`: the other desk, for measuring a transfer until it arrives. It
//! listens where the site's configuration sends an endpoint's deliveries (mutual TLS with the
//! site's server certificate, the gateway's client certificate required), answers each with
//! that endpoint's success receipt, and notes when each transfer first arrived. The generator
//! notes when it sent each one, so the pair gives submit → destination latency, the delivered
//! rate and the backlog over time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::formats::{ReceiptKind, Registry};

/// When each transfer was sent and when it arrived.
#[derive(Default)]
pub struct Arrivals {
    /// Transfer id → when the generator sent it (its scheduled time).
    sent: Mutex<HashMap<String, Instant>>,
    /// Transfer id → when it first reached the destination.
    arrived: Mutex<HashMap<String, Instant>>,
    /// Transfers that reached the destination, counted once each.
    pub delivered: AtomicU64,
    /// Deliveries that came again (a retry of one already here).
    pub repeated: AtomicU64,
}

impl Arrivals {
    /// The generator sent `transfer_id` at `at` and the gateway answered "submitted".
    pub fn sent(&self, transfer_id: String, at: Instant) {
        if let Ok(mut sent) = self.sent.lock() {
            sent.insert(transfer_id, at);
        }
    }

    /// How many transfers were sent.
    pub fn sent_count(&self) -> u64 {
        self.sent.lock().map_or(0, |s| s.len() as u64)
    }

    fn arrived(&self, transfer_id: String) {
        let now = Instant::now();
        let Ok(mut arrived) = self.arrived.lock() else { return };
        if arrived.insert(transfer_id, now).is_some() {
            self.repeated.fetch_add(1, Ordering::Relaxed);
        } else {
            self.delivered.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Minute by minute of sending (from `started`): sent, arrived, and the latency
    /// percentiles of those that arrived.
    pub fn minutes(&self, started: Instant) -> Vec<Minute> {
        let (Ok(sent), Ok(arrived)) = (self.sent.lock(), self.arrived.lock()) else {
            return Vec::new();
        };
        let mut minutes: Vec<(u64, Vec<u64>)> = Vec::new();
        for (id, at) in sent.iter() {
            let minute = at.saturating_duration_since(started).as_secs() as usize / 60;
            if minutes.len() <= minute {
                minutes.resize_with(minute + 1, Default::default);
            }
            minutes[minute].0 += 1;
            if let Some(came) = arrived.get(id) {
                minutes[minute].1.push(came.saturating_duration_since(*at).as_micros() as u64);
            }
        }
        minutes
            .into_iter()
            .enumerate()
            .map(|(minute, (sent, mut latencies))| {
                latencies.sort_unstable();
                Minute {
                    minute: minute as u64,
                    sent,
                    arrived: latencies.len() as u64,
                    p50_ms: quantile_ms(&latencies, 0.5),
                    p99_ms: quantile_ms(&latencies, 0.99),
                }
            })
            .collect()
    }

    /// Submit → destination latency of every transfer sent and arrived, in microseconds, and
    /// how many sent have not arrived.
    pub fn latencies(&self) -> (Vec<u64>, u64) {
        let (Ok(sent), Ok(arrived)) = (self.sent.lock(), self.arrived.lock()) else {
            return (Vec::new(), 0);
        };
        let mut latencies = Vec::with_capacity(sent.len());
        let mut missing = 0;
        for (id, at) in sent.iter() {
            match arrived.get(id) {
                Some(came) => {
                    latencies.push(came.saturating_duration_since(*at).as_micros() as u64)
                }
                None => missing += 1,
            }
        }
        (latencies, missing)
    }
}

/// The `q` quantile of sorted latencies in microseconds, in milliseconds (0 when none).
pub fn quantile_ms(sorted: &[u64], q: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 * q).ceil() as usize).saturating_sub(1))
        .map_or(0.0, |us| *us as f64 / 1000.0)
}

/// One minute of a `--deliver` run, by when the transfers were sent.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Minute {
    pub minute: u64,
    pub sent: u64,
    /// Of those sent this minute, how many arrived (at any time).
    pub arrived: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// Listens at every local delivery URL of `config` (`https://127.0.0.1:PORT/…` or
/// `localhost`) as that endpoint would, except during `outage` (then nothing listens and the
/// connections the gateway had are cut: the destination is down); the listeners live as long
/// as the runtime.
pub async fn start(
    config: &crate::config::Config,
    registry: &Registry,
    outage: super::Outage,
) -> Result<Arc<Arrivals>, String> {
    let arrivals = Arc::new(Arrivals::default());
    let tls = crate::security::tls::server_config(
        &config.tls.ca,
        &config.tls.cert,
        &config.tls.key,
        None,
    )
    .map_err(|e| e.to_string())?;
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let mut listening = 0;
    for settings in &config.endpoints {
        let Some(url) = &settings.url else { continue };
        let uri: hyper::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
        let local = matches!(uri.host(), Some("127.0.0.1" | "localhost" | "[::1]"));
        if !local {
            continue;
        }
        let endpoint = registry.endpoint_named(&settings.id).map_err(|e| e.to_string())?.clone();
        let addr = format!("127.0.0.1:{}", uri.port_u16().unwrap_or(443));
        // Check now that the address is free; listen for good after the outage.
        drop(
            tokio::net::TcpListener::bind(&addr)
                .await
                .map_err(|e| format!("cannot listen as {} at {addr}: {e}", settings.id))?,
        );
        let listening_at = addr.clone();
        let receipt = Bytes::from(endpoint.write_receipt(ReceiptKind::Success, None, None));
        let content_type = endpoint.content_type();
        let (acceptor, arrivals) = (acceptor.clone(), arrivals.clone());
        let started = tokio::time::Instant::now();
        tokio::spawn(async move {
            let (down, back) = (started + outage.from, started + outage.back());
            loop {
                if tokio::time::Instant::now() >= down && !outage.lasting.is_zero() {
                    tokio::time::sleep_until(back).await;
                }
                let listener = match tokio::net::TcpListener::bind(&listening_at).await {
                    Ok(listener) => listener,
                    Err(e) => {
                        eprintln!("the destination cannot listen at {listening_at}: {e}");
                        return;
                    }
                };
                // Serve until the outage begins (if it is still ahead); then every connection
                // is dropped with the listener.
                let serving = serve(
                    listener,
                    acceptor.clone(),
                    arrivals.clone(),
                    receipt.clone(),
                    content_type.clone(),
                );
                if tokio::time::Instant::now() < down && !outage.lasting.is_zero() {
                    let _ = tokio::time::timeout_at(down, serving).await;
                } else {
                    serving.await;
                    return;
                }
            }
        });
        listening += 1;
    }
    if listening == 0 {
        return Err(
            "--deliver: no endpoint of the configuration has a local delivery url (https://127.0.0.1:PORT/…) to answer at".into(),
        );
    }
    Ok(arrivals)
}

/// Accepts and answers until dropped; the connections end with it.
async fn serve(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    arrivals: Arc<Arrivals>,
    receipt: Bytes,
    content_type: String,
) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let Ok((tcp, _)) = listener.accept().await else { continue };
        let _ = tcp.set_nodelay(true);
        let (acceptor, arrivals, receipt, content_type) =
            (acceptor.clone(), arrivals.clone(), receipt.clone(), content_type.clone());
        while connections.try_join_next().is_some() {}
        connections.spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else { return };
            let service = hyper::service::service_fn(
                move |request: hyper::Request<hyper::body::Incoming>| {
                    let (arrivals, receipt, content_type) =
                        (arrivals.clone(), receipt.clone(), content_type.clone());
                    async move {
                        let transfer = request
                            .headers()
                            .get("x-liandong-transfer-id")
                            .and_then(|v| v.to_str().ok());
                        let kind =
                            request.headers().get("x-liandong-kind").and_then(|v| v.to_str().ok());
                        if let (Some(transfer), Some("transfer")) = (transfer, kind) {
                            arrivals.arrived(transfer.to_string());
                        }
                        let _ = request.into_body().collect().await;
                        let mut response = hyper::Response::new(Full::new(receipt));
                        if let Ok(value) = hyper::header::HeaderValue::from_str(&content_type) {
                            response.headers_mut().insert(hyper::header::CONTENT_TYPE, value);
                        }
                        Ok::<_, std::convert::Infallible>(response)
                    }
                },
            );
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}
