//! Delivery: the outbox, pushed to each destination over HTTPS with the gateway's client
//! certificate, at least once, until the destination's native receipt says it has it.
//!
//! A worker leases due items from the store (so two replicas never deliver the same item at
//! once), renders each in the destination's native format at send time, POSTs it, and reads
//! the answer with the destination's own receipt profile. Success marks the item delivered
//! (and the transfer `delivered`); anything else is retried with exponential backoff and
//! jitter, until the attempt count or the age makes it a dead letter, which operators list
//! and replay. Each destination has its own small concurrency budget, so one slow or dead
//! destination never holds up the others; items of one transfer go out in order (the lease
//! hands out only the first undone one). The receiver recognises a retry by `transfer_id`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::sync::{Mutex, Semaphore};

use crate::config::Delivery as Settings;
use crate::engine::Engine;
use crate::metrics::{self, counters};
use crate::model::{StatusUpdate, Timestamp, TransferRequest};
use crate::store::{DeliveryKind, OutboxItem, Write};

/// Concurrent deliveries to one destination.
const PER_DESTINATION: usize = 8;
/// Items leased per round.
const BATCH: i64 = 64;

/// Why one delivery attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The document cannot be rendered for this destination: retrying will not help.
    #[error("cannot render: {0}")]
    Render(String),
    /// The destination has no URL: it pulls.
    #[error("no delivery URL for {0}")]
    NoUrl(String),
    #[error("connect: {0}")]
    Connect(String),
    #[error("HTTP: {0}")]
    Http(String),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The destination answered, but not with its success receipt.
    #[error("refused by the destination: HTTP {status}: {message}")]
    Refused { status: u16, message: String },
}

/// The delivery worker.
pub struct Deliverer {
    engine: Engine,
    tls: tokio_rustls::TlsConnector,
    settings: Settings,
    /// Idle HTTP/1.1 connections, by `host:port`.
    idle: Mutex<HashMap<String, Vec<SendRequest<Full<Bytes>>>>>,
    budgets: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl Deliverer {
    pub fn new(engine: Engine, client: Arc<rustls::ClientConfig>, settings: Settings) -> Arc<Deliverer> {
        Arc::new(Deliverer {
            engine,
            tls: tokio_rustls::TlsConnector::from(client),
            settings,
            idle: Mutex::new(HashMap::new()),
            budgets: Mutex::new(HashMap::new()),
        })
    }

    /// Runs until `shutdown` is set.
    pub async fn run(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let push: Vec<String> = self.engine.config.endpoints.iter().filter(|e| e.url.is_some()).map(|e| e.id.clone()).collect();
        let lease = (self.settings.timeout.as_secs() as i64) * 3 + 5;
        loop {
            if *shutdown.borrow() {
                return;
            }
            let now = Timestamp::now().unix_seconds();
            let items = match self.engine.store.lease(now, lease, BATCH, &push).await {
                Ok(items) => items,
                Err(e) => {
                    tracing::error!(error = %e, "leasing deliveries failed");
                    Vec::new()
                }
            };
            let idle = items.is_empty();
            for item in items {
                let budget = self.budget(&item.destination.to_string()).await;
                let this = self.clone();
                tokio::spawn(async move {
                    let Ok(_permit) = budget.acquire_owned().await else { return };
                    this.deliver_and_record(item).await;
                });
            }
            if idle {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
    }

    async fn budget(&self, destination: &str) -> Arc<Semaphore> {
        self.budgets
            .lock()
            .await
            .entry(destination.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(PER_DESTINATION)))
            .clone()
    }

    /// One attempt, and its outcome written to the store.
    pub async fn deliver_and_record(&self, item: OutboxItem) {
        let result = self.deliver(&item).await;
        let now = Timestamp::now().unix_seconds();
        let write = match result {
            Ok(()) => {
                metrics::inc(&counters().deliveries_ok);
                Write::Delivered { item_id: item.id, at: now }
            }
            Err(error) => {
                metrics::inc(&counters().deliveries_failed);
                let attempts = item.attempts + 1;
                let too_old = now - item.created_at >= self.settings.dead_after.as_secs() as i64;
                let dead = matches!(error, DeliveryError::Render(_))
                    || attempts >= i64::from(self.settings.dead_after_attempts)
                    || too_old;
                if dead {
                    metrics::inc(&counters().dead_letters);
                    tracing::error!(item = item.id, transfer = %item.transfer_id, destination = %item.destination, %error, "dead letter");
                } else {
                    tracing::warn!(item = item.id, transfer = %item.transfer_id, destination = %item.destination, attempts, %error, "delivery failed; will retry");
                }
                let next = now + backoff(&self.settings, attempts, item.id).as_secs() as i64;
                Write::Failed { item_id: item.id, at: now, error: error.to_string(), next_attempt_at: next, dead }
            }
        };
        if let Err(e) = self.engine.store.write(write).await {
            // The lease runs out and the item is tried again: at least once, never lost.
            tracing::error!(item = item.id, error = %e, "recording a delivery outcome failed");
        }
    }

    /// Renders and POSTs one item; Ok when the destination's success receipt came back.
    pub async fn deliver(&self, item: &OutboxItem) -> Result<(), DeliveryError> {
        let endpoint = self.engine.registry.endpoint(&item.destination).map_err(|e| DeliveryError::Render(e.to_string()))?;
        let body = match item.kind {
            DeliveryKind::Transfer => {
                let request: TransferRequest =
                    serde_json::from_str(&item.payload).map_err(|e| DeliveryError::Render(e.to_string()))?;
                endpoint.write_transfer(&request)
            }
            DeliveryKind::Status => {
                let update: StatusUpdate =
                    serde_json::from_str(&item.payload).map_err(|e| DeliveryError::Render(e.to_string()))?;
                endpoint.write_status(&update)
            }
        }
        .map_err(|e| DeliveryError::Render(e.to_string()))?;
        let url = self
            .engine
            .config
            .endpoint(&item.destination)
            .and_then(|s| s.url.clone())
            .ok_or_else(|| DeliveryError::NoUrl(item.destination.to_string()))?;
        let content_type = endpoint.content_type();
        let timeout = self.settings.timeout;
        let (status, answer) = tokio::time::timeout(timeout, self.post(&url, item, &content_type, body))
            .await
            .map_err(|_| DeliveryError::Timeout(timeout))??;
        let receipt = endpoint
            .read_receipt(&answer)
            .map_err(|e| DeliveryError::Refused { status, message: format!("unreadable receipt: {e}") })?;
        if (200..300).contains(&status) && receipt.ok {
            Ok(())
        } else {
            Err(DeliveryError::Refused { status, message: receipt.message.unwrap_or_else(|| "no message".into()) })
        }
    }

    async fn post(&self, url: &str, item: &OutboxItem, content_type: &str, body: Vec<u8>) -> Result<(u16, Bytes), DeliveryError> {
        let uri: hyper::Uri = url.parse().map_err(|e| DeliveryError::Connect(format!("{url}: {e}")))?;
        let host =
            uri.host().ok_or_else(|| DeliveryError::Connect(format!("{url}: no host")))?.trim_matches(['[', ']']).to_string();
        let port = uri.port_u16().unwrap_or(443);
        let key = format!("{host}:{port}");
        let mut sender = match self.idle_connection(&key).await {
            Some(sender) => sender,
            None => self.connect(&host, port).await?,
        };
        let request = hyper::Request::post(uri.clone())
            .header(hyper::header::HOST, format!("{host}:{port}"))
            .header(hyper::header::CONTENT_TYPE, content_type)
            .header("x-liandong-transfer-id", &item.transfer_id)
            .header("x-liandong-kind", item.kind.as_str())
            .header("x-liandong-delivery", item.id.to_string())
            .header("x-liandong-attempt", (item.attempts + 1).to_string())
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| DeliveryError::Http(e.to_string()))?;
        let response = sender.send_request(request).await.map_err(|e| DeliveryError::Http(e.to_string()))?;
        let status = response.status().as_u16();
        let answer = response.into_body().collect().await.map_err(|e| DeliveryError::Http(e.to_string()))?.to_bytes();
        if sender.is_ready() {
            self.idle.lock().await.entry(key).or_default().push(sender);
        }
        Ok((status, answer))
    }

    async fn idle_connection(&self, key: &str) -> Option<SendRequest<Full<Bytes>>> {
        let mut idle = self.idle.lock().await;
        let list = idle.get_mut(key)?;
        while let Some(sender) = list.pop() {
            if sender.is_ready() {
                return Some(sender);
            }
        }
        None
    }

    async fn connect(&self, host: &str, port: u16) -> Result<SendRequest<Full<Bytes>>, DeliveryError> {
        let tcp = tokio::net::TcpStream::connect((host, port))
            .await
            .map_err(|e| DeliveryError::Connect(format!("{host}:{port}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(host.to_string()).map_err(|e| DeliveryError::Connect(format!("{host}: {e}")))?;
        let tls =
            self.tls.connect(name, tcp).await.map_err(|e| DeliveryError::Connect(format!("TLS with {host}:{port}: {e}")))?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(|e| DeliveryError::Connect(e.to_string()))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }
}

/// The delay before retry `attempts` (1 = the first retry): `initial × 2^(attempts−1)`, capped,
/// with ±20 % jitter so that retries of many items do not arrive together.
pub fn backoff(settings: &Settings, attempts: i64, salt: i64) -> Duration {
    let exponent = u32::try_from(attempts.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
    let base = settings.initial_backoff.saturating_mul(2u32.saturating_pow(exponent)).min(settings.max_backoff);
    // A cheap, deterministic spread from the item id and attempt count.
    let spread = ((salt.wrapping_mul(0x9E37_79B9) ^ attempts.wrapping_mul(0x85EB_CA6B)).rem_euclid(41) - 20) as f64 / 100.0;
    base.mul_f64(1.0 + spread).min(settings.max_backoff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let settings = Settings::default();
        for attempts in 1..20 {
            let d = backoff(&settings, attempts, 7).as_secs_f64();
            let base = (2f64.powi(attempts as i32 - 1)).min(300.0);
            assert!(d >= base * 0.8 - 1e-9 && d <= (base * 1.2).min(300.0) + 1e-9, "{attempts}: {d}");
        }
    }
}
