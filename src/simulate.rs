//! Simulated provincial platforms: a 110 or 12345 system as the gateway sees one — an HTTPS
//! server (mutual TLS) that takes deliveries in its own native format and answers its own
//! receipts, and a client that submits native transfers and reports status with its own
//! certificate. `liandong demo` runs several; `liandong simulate` runs one against any gateway,
//! for partners to test an integration.
//!
//! What a simulated platform does with what it receives:
//! - a transfer addressed to it: `accepted` after a moment, then `resolved` (or `rejected`
//!   with a note, when told to refuse that category);
//! - news that its own transfer was `resolved`: calls the citizen back and `closes` it
//!   (回访, with satisfaction);
//! - news that its own transfer was `rejected`: hands it on again, to another county.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::formats::{Endpoint, ReceiptKind, Registry};
use crate::model::{
    Case, EndpointId, Feedback, Resolution, Satisfaction, State, StatusUpdate, Timestamp, TransferRequest, Unit, Urgency,
};
use crate::security::tls;

/// The sample every simulated transfer starts from (the Ningbo 110's document).
const SAMPLE: &str = include_str!("../tests/spec/samples/jjd-json/transfer-ningbo-township.json");

/// How a simulated platform answers the transfers it receives.
#[derive(Clone, Debug, Default)]
pub struct Behaviour {
    /// How long before it accepts, and again before it resolves.
    pub think: Duration,
    /// Categories it hands back (`rejected`, with this note).
    pub reject: Vec<(String, String)>,
}

/// What a simulated platform has seen and done.
#[derive(Debug, Default)]
pub struct Tally {
    pub submitted: AtomicU64,
    pub received: AtomicU64,
    pub statuses_sent: AtomicU64,
    pub closed: AtomicU64,
    pub rerouted: AtomicU64,
    pub errors: AtomicU64,
    /// When each transfer it received arrived.
    pub arrivals: Mutex<HashMap<String, Instant>>,
}

/// One simulated platform.
pub struct SimulatedPlatform {
    pub endpoint: Endpoint,
    gateway: SocketAddr,
    client: tokio_rustls::TlsConnector,
    behaviour: Behaviour,
    pub tally: Tally,
    /// When false, deliveries get the format's busy receipt with 503 (the system is down).
    pub up: AtomicBool,
    counter: AtomicU64,
    run: String,
}

impl SimulatedPlatform {
    /// A platform for `endpoint`, talking to the gateway at `gateway` with its certificate.
    pub fn new(
        registry: &Registry,
        endpoint: &str,
        gateway: SocketAddr,
        ca: &Path,
        cert: &Path,
        key: &Path,
        behaviour: Behaviour,
    ) -> Result<Arc<SimulatedPlatform>, String> {
        let endpoint = registry.endpoint_named(endpoint).map_err(|e| e.to_string())?.clone();
        let config = tls::client_config(ca, cert, key).map_err(|e| e.to_string())?;
        Ok(Arc::new(SimulatedPlatform {
            endpoint,
            gateway,
            client: tokio_rustls::TlsConnector::from(config),
            behaviour,
            tally: Tally::default(),
            up: AtomicBool::new(true),
            counter: AtomicU64::new(0),
            run: ulid::Ulid::new().to_string()[20..].to_string(),
        }))
    }

    /// Serves deliveries on `listener` with the server certificate `cert`/`key` (clients must
    /// present certificates chained to `ca`), until the process ends.
    pub fn serve(self: &Arc<Self>, listener: tokio::net::TcpListener, ca: &Path, cert: &Path, key: &Path) -> Result<(), String> {
        let config = tls::server_config(ca, cert, key, None).map_err(|e| e.to_string())?;
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let platform = self.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let (acceptor, platform) = (acceptor.clone(), platform.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                        let platform = platform.clone();
                        async move { Ok::<_, std::convert::Infallible>(platform.receive(request).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Ok(())
    }

    async fn receive(self: Arc<Self>, request: hyper::Request<hyper::body::Incoming>) -> hyper::Response<Full<Bytes>> {
        let header = |n: &str| request.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
        let (kind, transfer_id) = (header("x-liandong-kind"), header("x-liandong-transfer-id"));
        let body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        if !self.up.load(Ordering::SeqCst) {
            let busy = self.endpoint.write_receipt(ReceiptKind::Busy, None, Some("系统维护中"));
            return hyper::Response::builder().status(503).body(Full::new(Bytes::from(busy))).unwrap_or_default();
        }
        let answer = match kind.as_deref() {
            Some("status") => self.endpoint.read_status(&body).map(|update| {
                let reference = update.transfer_ref.clone();
                let platform = self.clone();
                tokio::spawn(async move { platform.on_status(update).await });
                reference
            }),
            // A delivered document is in this platform's format, from the other platform.
            _ => {
                self.endpoint.format.read_transfer(&body, &self.endpoint.id.counterpart(), &self.endpoint.codes).map(|request| {
                    let id = transfer_id.unwrap_or_else(|| request.sender_ref.clone());
                    self.tally.received.fetch_add(1, Ordering::Relaxed);
                    self.tally.arrivals.lock().unwrap_or_else(|e| e.into_inner()).insert(id.clone(), Instant::now());
                    let platform = self.clone();
                    let handled = id.clone();
                    tokio::spawn(async move { platform.handle(handled, request).await });
                    Some(id)
                })
            }
        };
        match answer {
            Ok(reference) => {
                let ok = self.endpoint.write_receipt(ReceiptKind::Success, reference.as_deref(), None);
                hyper::Response::new(Full::new(Bytes::from(ok)))
            }
            Err(e) => {
                let bad = self.endpoint.error_receipt(None, &e);
                hyper::Response::builder().status(400).body(Full::new(Bytes::from(bad))).unwrap_or_default()
            }
        }
    }

    /// Works a received transfer: accept, then resolve — or hand it back.
    async fn handle(self: Arc<Self>, transfer_id: String, request: TransferRequest) {
        tokio::time::sleep(self.behaviour.think).await;
        let category = request.case.category.as_str().to_string();
        let unit = Unit {
            code: Some(format!("{}-ZX", self.endpoint.id.region)),
            name: Some(format!("{}处置中心", self.endpoint.place)),
        };
        let handed_on = request.reason.as_deref().is_some_and(|r| r.contains("改派"));
        if let Some((_, note)) = self.behaviour.reject.iter().find(|(c, _)| *c == category && !handed_on) {
            let mut update = self.update(&transfer_id, State::Rejected);
            update.note = Some(note.clone());
            self.send_status(update).await;
            return;
        }
        let mut accepted = self.update(&transfer_id, State::Accepted);
        accepted.unit = Some(unit.clone());
        if !self.send_status(accepted).await {
            return;
        }
        tokio::time::sleep(self.behaviour.think).await;
        let mut resolved = self.update(&transfer_id, State::Resolved);
        resolved.unit = Some(unit.clone());
        resolved.note = Some("已处置完毕".into());
        resolved.resolution =
            Some(Resolution { result: "已按诉求办结".into(), resolved_at: resolved.at, unit: Some(unit) });
        self.send_status(resolved).await;
    }

    /// Reacts to news of its own transfers.
    async fn on_status(self: Arc<Self>, update: StatusUpdate) {
        let Some(reference) = update.transfer_ref.clone() else { return };
        match update.state {
            State::Resolved => {
                tokio::time::sleep(self.behaviour.think).await;
                let mut closed = self.update(&reference, State::Closed);
                closed.feedback = Some(Feedback {
                    satisfaction: Satisfaction::Satisfied,
                    visited_at: closed.at,
                    note: Some("市民表示满意".into()),
                });
                if self.send_status(closed).await {
                    self.tally.closed.fetch_add(1, Ordering::Relaxed);
                }
            }
            State::Rejected if !reference.ends_with("-R") => {
                // Hand it on again, once, to the next county, with a reference of its own.
                if let Ok(mut again) = self.request("NP05", Urgency::Normal) {
                    again.sender_ref = format!("{reference}-R");
                    again.reason = Some(format!("原转办被退回（{}），改派", update.note.unwrap_or_default()));
                    again.to_region = format!("{}02", &self.endpoint.id.region[..4]).parse().ok();
                    if self.submit(&again).await.is_ok() {
                        self.tally.rerouted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            _ => {}
        }
    }

    fn update(&self, reference: &str, state: State) -> StatusUpdate {
        StatusUpdate {
            reason_code: None,
            transfer_id: None,
            transfer_ref: Some(reference.to_string()),
            state,
            at: Timestamp::now(),
            by: self.endpoint.id.clone(),
            unit: None,
            note: None,
            resolution: None,
            feedback: None,
        }
    }

    /// A canonical transfer from this platform to the other one, of `category`.
    pub fn request(&self, category: &str, urgency: Urgency) -> Result<TransferRequest, String> {
        let registry = Registry::builtin();
        let ningbo: EndpointId = "330200/110".parse().map_err(|e: String| e)?;
        let mut request =
            registry.endpoint(&ningbo).map_err(|e| e.to_string())?.read_transfer(SAMPLE.as_bytes()).map_err(|e| e.to_string())?;
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let me = self.endpoint.id.clone();
        request.sender_ref = format!("SIM{}{}{n:06}", me.region, self.run);
        request.from = me.clone();
        request.to_platform = me.platform.other();
        request.requested_at = Timestamp::now();
        request.case.origin = crate::model::Origin { endpoint: me.clone(), local_id: format!("L{}{n:06}", self.run), unit: None };
        request.case.case_id = Case::id_for(&me, &request.case.origin.local_id);
        request.case.category = category.parse().map_err(|e: String| e)?;
        request.case.source_category = None;
        request.case.urgency = Some(urgency);
        request.case.received_at = request.requested_at;
        request.to_region = None;
        if let Some(location) = request.case.location.as_mut() {
            location.region = format!("{}01", &me.region[..4]).parse().ok();
        }
        Ok(request)
    }

    /// Submits a transfer as a native document; returns the gateway's transfer id.
    pub async fn submit(&self, request: &TransferRequest) -> Result<String, String> {
        let bytes = self.endpoint.write_transfer(request).map_err(|e| e.to_string())?;
        let path = format!("/v1/native/{}/{}/transfers", self.endpoint.id.region, self.endpoint.id.platform.as_str());
        match self.post(&path, bytes).await {
            Ok((200, headers)) => {
                self.tally.submitted.fetch_add(1, Ordering::Relaxed);
                Ok(headers.get("x-liandong-transfer-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string())
            }
            Ok((status, _)) => {
                self.tally.errors.fetch_add(1, Ordering::Relaxed);
                Err(format!("HTTP {status}"))
            }
            Err(e) => {
                self.tally.errors.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// Reports a status as a native document; says whether the gateway took it.
    async fn send_status(&self, update: StatusUpdate) -> bool {
        let Ok(bytes) = self.endpoint.write_status(&update) else {
            self.tally.errors.fetch_add(1, Ordering::Relaxed);
            return false;
        };
        let path = format!("/v1/native/{}/{}/status", self.endpoint.id.region, self.endpoint.id.platform.as_str());
        let ok = matches!(self.post(&path, bytes).await, Ok((200, _)));
        let counter = if ok { &self.tally.statuses_sent } else { &self.tally.errors };
        counter.fetch_add(1, Ordering::Relaxed);
        ok
    }

    async fn post(&self, path: &str, body: Vec<u8>) -> Result<(u16, hyper::HeaderMap), String> {
        call(&self.client, self.gateway, "POST", path, body).await.map(|(status, headers, _)| (status, headers))
    }
}

/// One request to the gateway at `gateway` (verified as `localhost`) on a new mutual-TLS
/// connection: the status, the headers and the body.
pub async fn call(
    connector: &tokio_rustls::TlsConnector,
    gateway: SocketAddr,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> Result<(u16, hyper::HeaderMap, Bytes), String> {
    let mut sender = crate::loadgen::connect(connector, gateway, "localhost").await?;
    let request = hyper::Request::builder()
        .method(method)
        .uri(format!("https://localhost:{}{path}", gateway.port()))
        .header(hyper::header::HOST, "localhost")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((status, headers, bytes))
}
