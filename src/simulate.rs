//! Simulated provincial platforms: a 110 or 12345 system as the gateway sees one — an HTTPS
//! server (mutual TLS) that takes deliveries in its own native format and answers its own
//! receipts, and a client that submits native transfers and reports status with its own
//! certificate. `liandong demo` runs several; `liandong simulate` runs one against any gateway,
//! for partners to test an integration.
//!
//! What a simulated platform does with what it receives:
//! - a transfer addressed to it: `accepted` after a moment, then `resolved` (or `rejected`
//!   with a note, when told to refuse that category — once: sent back by a ruling, it is worked);
//!   an assist (PM10/NP11) is `in_progress` when its people are on the scene; told to, it signs
//!   for a category and leaves it a while (overdue), or asks natively for more time (延期申请);
//! - news that its own transfer was `resolved`: calls the citizen back and `closes` it
//!   (回访, with satisfaction);
//! - news that its own transfer was `rejected`: sends it again, once — completed when it came
//!   back for missing information (`【信息不全】`), else to its province's other district; not
//!   when it was out of scope (its people dispute that) or the first receiver keeps it;
//! - an urge (`【催办】`) about a transfer it works: counted.
//!
//! Its cases happen in its own province (a real district, an address and coordinates there),
//! with the reason and words a desk of its side would give.

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
    Case, EndpointId, Feedback, Resolution, Satisfaction, State, StatusUpdate, Timestamp,
    TransferRequest, Unit, Urgency,
};
use crate::security::tls;

/// The sample every simulated transfer starts from (the Ningbo 110's document).
const SAMPLE: &str = include_str!("../tests/spec/samples/jjd-json/transfer-ningbo-township.json");

/// Where a simulated platform's cases happen: a district of its own province (a township for
/// Ningbo, whose directory the demo fills), an address there with its coordinates (WGS-84),
/// and a second district to hand a case on to.
struct Place {
    prefix: &'static str,
    city: &'static str,
    region: &'static str,
    other_region: &'static str,
    address: &'static str,
    point: (f64, f64),
}

const PLACES: &[Place] = &[
    Place {
        prefix: "3302",
        city: "宁波市",
        region: "330203101",
        other_region: "330205",
        address: "浙江省宁波市海曙区高桥镇望春路88号锦绣家园3幢",
        point: (29.868336, 121.54399),
    },
    Place {
        prefix: "3300",
        city: "杭州市",
        region: "330102",
        other_region: "330105",
        address: "浙江省杭州市上城区解放路138号",
        point: (30.2505, 120.1693),
    },
    Place {
        prefix: "3600",
        city: "南昌市",
        region: "360102",
        other_region: "360103",
        address: "江西省南昌市东湖区八一大道333号",
        point: (28.6829, 115.9043),
    },
    Place {
        prefix: "2100",
        city: "沈阳市",
        region: "210102",
        other_region: "210103",
        address: "辽宁省沈阳市和平区南京北街206号",
        point: (41.7968, 123.4061),
    },
    Place {
        prefix: "1100",
        city: "北京市",
        region: "110101",
        other_region: "110102",
        address: "北京市东城区东直门内大街5号",
        point: (39.9401, 116.4197),
    },
];

/// The place of an endpoint's cases (its province's entry; Ningbo's for one not listed).
fn place_of(endpoint: &EndpointId) -> &'static Place {
    PLACES.iter().find(|p| endpoint.region.starts_with(p.prefix)).unwrap_or(&PLACES[0])
}

/// What a caller of this category says (canonical.md's category table, in a caller's words).
fn summary_of(category: &str) -> &'static str {
    match category {
        "NP01" => "举报路边店铺占道经营",
        "NP02" => "购买的家电有质量问题，商家拒绝退换",
        "NP03" => "工地拖欠农民工工资三个月",
        "NP04" => "小区停水一天，物业联系不上",
        "NP05" => "被锁在家门外，请求开锁",
        "NP06" => "咨询社保卡补办需要什么材料",
        "NP07" => "车辆被堵无法驶出，请求联系车主挪车",
        "NP08" => "路灯不亮，窨井盖缺失",
        "NP09" => "邻居装修占用公共楼道",
        "NP10" => "夜间施工噪声扰民",
        "PM01" => "来电称正在发生入室盗窃",
        "PM02" => "有人扬言轻生，情绪激动",
        "PM03" => "路口两车相撞，有人受伤",
        "PM04" => "饭店门口有人打架",
        "PM05" => "老人走失，家属求助",
        "PM06" => "接到冒充客服的电话，已转账",
        "PM07" => "多人聚集堵路讨要说法",
        "PM08" => "楼道内堆放液化气罐，有泄漏气味",
        _ => "市民求助",
    }
}

/// How a simulated platform answers the transfers it receives.
#[derive(Clone, Debug, Default)]
pub struct Behaviour {
    /// How long before it accepts, and again before it resolves.
    pub think: Duration,
    /// Categories it hands back (`rejected`, with this note) — once: a transfer that comes back
    /// after the linkage office overruled the rejection is worked.
    pub reject: Vec<(String, String)>,
    /// Categories it asks more time for (延期申请, natively) once accepted, before resolving.
    pub extend: Vec<String>,
    /// Categories it signs for at once but leaves this long before working (an overdue case).
    pub hold: Vec<(String, Duration)>,
}

/// What a simulated platform has seen and done.
#[derive(Debug, Default)]
pub struct Tally {
    pub submitted: AtomicU64,
    pub received: AtomicU64,
    pub statuses_sent: AtomicU64,
    pub closed: AtomicU64,
    pub rerouted: AtomicU64,
    /// Urges (催办) it was sent about transfers it works.
    pub urged: AtomicU64,
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
    /// What it sent and has not seen closed, by its reference: to send again when handed back.
    sent: Mutex<HashMap<String, TransferRequest>>,
    /// The transfers it handed back: one that comes again was sent back by a ruling.
    handed_back: Mutex<std::collections::HashSet<String>>,
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
            sent: Mutex::new(HashMap::new()),
            handed_back: Mutex::default(),
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
    pub fn serve(
        self: &Arc<Self>,
        listener: tokio::net::TcpListener,
        ca: &Path,
        cert: &Path,
        key: &Path,
    ) -> Result<(), String> {
        let config = tls::server_config(ca, cert, key, None).map_err(|e| e.to_string())?;
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let platform = self.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let (acceptor, platform) = (acceptor.clone(), platform.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let service = hyper::service::service_fn(
                        move |request: hyper::Request<hyper::body::Incoming>| {
                            let platform = platform.clone();
                            async move {
                                Ok::<_, std::convert::Infallible>(platform.receive(request).await)
                            }
                        },
                    );
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Ok(())
    }

    async fn receive(
        self: Arc<Self>,
        request: hyper::Request<hyper::body::Incoming>,
    ) -> hyper::Response<Full<Bytes>> {
        let header =
            |n: &str| request.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
        let (kind, transfer_id) = (header("x-liandong-kind"), header("x-liandong-transfer-id"));
        let body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        if !self.up.load(Ordering::SeqCst) {
            let busy = self.endpoint.write_receipt(ReceiptKind::Busy, None, Some("系统维护中"));
            return hyper::Response::builder()
                .status(503)
                .body(Full::new(Bytes::from(busy)))
                .unwrap_or_default();
        }
        let answer = match kind.as_deref() {
            Some("status") => self.endpoint.read_status(&body).map(|update| {
                let reference = update.transfer_ref.clone();
                let platform = self.clone();
                tokio::spawn(async move { platform.on_status(update).await });
                reference
            }),
            // A delivered document is in this platform's format, from the other platform.
            _ => self
                .endpoint
                .format
                .read_transfer(&body, &self.endpoint.id.counterpart(), &self.endpoint.codes)
                .map(|request| {
                    let id = transfer_id.unwrap_or_else(|| request.sender_ref.clone());
                    self.tally.received.fetch_add(1, Ordering::Relaxed);
                    self.tally
                        .arrivals
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(id.clone(), Instant::now());
                    let platform = self.clone();
                    let handled = id.clone();
                    tokio::spawn(async move { platform.handle(handled, request).await });
                    Some(id)
                }),
        };
        match answer {
            Ok(reference) => {
                let ok =
                    self.endpoint.write_receipt(ReceiptKind::Success, reference.as_deref(), None);
                hyper::Response::new(Full::new(Bytes::from(ok)))
            }
            Err(e) => {
                let bad = self.endpoint.error_receipt(None, &e);
                hyper::Response::builder()
                    .status(400)
                    .body(Full::new(Bytes::from(bad)))
                    .unwrap_or_default()
            }
        }
    }

    /// Works a received transfer: accept, then resolve — or hand it back.
    async fn handle(self: Arc<Self>, transfer_id: String, request: TransferRequest) {
        tokio::time::sleep(self.behaviour.think).await;
        let category = request.case.category.as_str().to_string();
        let police = self.endpoint.id.platform == crate::model::Platform::Police;
        let unit = Unit {
            code: Some(format!("{}-ZX", self.endpoint.id.region)),
            name: Some(format!(
                "{}{}",
                place_of(&self.endpoint.id).city,
                if police { "公安局110指挥中心" } else { "12345热线工单处置中心" }
            )),
        };
        let handed_on =
            request.reason.as_deref().is_some_and(|r| r.contains("改派") || r.contains("重新移交"));
        let first_time = self
            .handed_back
            .lock()
            .map(|mut h| !h.contains(&transfer_id) && h.insert(transfer_id.clone()))
            .unwrap_or(true);
        if let Some((_, note)) =
            self.behaviour.reject.iter().find(|(c, _)| *c == category && !handed_on)
        {
            if first_time {
                let mut update = self.update(&transfer_id, State::Rejected);
                update.note = Some(note.clone());
                self.send_status(update).await;
                return;
            }
        }
        if let Some((_, hold)) = self.behaviour.hold.iter().find(|(c, _)| *c == category) {
            let mut received = self.update(&transfer_id, State::Received);
            received.unit = Some(unit.clone());
            if !self.send_status(received).await {
                return;
            }
            tokio::time::sleep(*hold).await;
        }
        let mut accepted = self.update(&transfer_id, State::Accepted);
        accepted.unit = Some(unit.clone());
        if !self.send_status(accepted).await {
            return;
        }
        tokio::time::sleep(self.behaviour.think).await;
        if crate::model::category::is_assist(&category) {
            // Help on site (linkage.md): on the scene is in_progress, with the unit.
            let mut arrived = self.update(&transfer_id, State::InProgress);
            arrived.unit = Some(unit.clone());
            arrived.note = Some(format!("{}已派员到达现场", unit.name.clone().unwrap_or_default()));
            self.send_status(arrived).await;
            tokio::time::sleep(self.behaviour.think).await;
        }
        if self.behaviour.extend.contains(&category) {
            let mut asked = self.update(&transfer_id, State::InProgress);
            let until = Timestamp::now().plus_seconds(4 * 86_400);
            asked.note = Some(crate::model::linkage::extension_request_note(
                "需协调相关部门现场核实",
                until,
            ));
            self.send_status(asked).await;
            tokio::time::sleep(self.behaviour.think * 8).await;
        }
        let mut resolved = self.update(&transfer_id, State::Resolved);
        resolved.unit = Some(unit.clone());
        resolved.note = Some("已处置完毕".into());
        resolved.resolution = Some(Resolution {
            result: "已按诉求办结".into(),
            resolved_at: resolved.at,
            unit: Some(unit),
        });
        self.send_status(resolved).await;
    }

    /// Reacts to news of its own transfers.
    async fn on_status(self: Arc<Self>, update: StatusUpdate) {
        let Some(reference) = update.transfer_ref.clone() else { return };
        let note = update.note.as_deref().unwrap_or_default();
        if note.starts_with(crate::model::linkage::labels::URGE) {
            self.tally.urged.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // Out of scope: the desk's people dispute it (canonically) rather than send it
        // elsewhere; a dispute the first receiver keeps stays here.
        let keeps = update.reason_code == Some(crate::model::ReasonCode::OutOfScope)
            || note.starts_with("【会商结果】首接办理");
        match update.state {
            State::Rejected if keeps => {}
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
                    if let Ok(mut sent) = self.sent.lock() {
                        sent.remove(&reference);
                    }
                }
            }
            State::Rejected if !reference.ends_with("-R") => {
                // Send it again, once, with a reference of its own: completed, when it came back
                // for missing information; else to the province's other district.
                let Some(mut again) =
                    self.sent.lock().ok().and_then(|mut sent| sent.remove(&reference))
                else {
                    return;
                };
                let note = update.note.unwrap_or_default();
                again.sender_ref = format!("{reference}-R");
                again.requested_at = Timestamp::now();
                if note.starts_with("【信息不全】") {
                    again.reason = Some(format!("原转办被退回（{note}），已补充信息后重新移交"));
                    if let Some(location) = again.case.location.as_mut() {
                        location.address =
                            location.address.take().map(|a| format!("{a}2单元501室"));
                    }
                } else {
                    again.reason = Some(format!("原转办被退回（{note}），改派"));
                    again.to_region = place_of(&self.endpoint.id).other_region.parse().ok();
                }
                if self.submit(&again).await.is_ok() {
                    self.tally.rerouted.fetch_add(1, Ordering::Relaxed);
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
        let mut request = registry
            .endpoint(&ningbo)
            .map_err(|e| e.to_string())?
            .read_transfer(SAMPLE.as_bytes())
            .map_err(|e| e.to_string())?;
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let me = self.endpoint.id.clone();
        let place = place_of(&me);
        let police = me.platform == crate::model::Platform::Police;
        request.sender_ref = format!("SIM{}{}{n:06}", me.region, self.run);
        request.from = me.clone();
        request.to_platform = me.platform.other();
        request.requested_at = Timestamp::now();
        request.reason = Some(
            if police {
                "非警务求助，转12345由属地职能部门处置"
            } else {
                "涉及警情，移交110处置"
            }
            .into(),
        );
        let unit = if police { "公安局指挥中心" } else { "12345政务服务便民热线" };
        request.case.origin = crate::model::Origin {
            endpoint: me.clone(),
            local_id: format!("L{}{n:06}", self.run),
            unit: Some(Unit { code: None, name: Some(format!("{}{unit}", place.city)) }),
        };
        request.case.case_id = Case::id_for(&me, &request.case.origin.local_id);
        request.case.category = category.parse().map_err(|e: String| e)?;
        request.case.source_category = None;
        request.case.summary = summary_of(category).into();
        request.case.urgency = Some(urgency);
        request.case.received_at = request.requested_at;
        request.case.attachments = Vec::new();
        request.to_region = None;
        if let Some(location) = request.case.location.as_mut() {
            location.address = Some(place.address.into());
            location.region = place.region.parse().ok();
            location.point = Some(crate::model::Point { lat: place.point.0, lon: place.point.1 });
        }
        Ok(request)
    }

    /// Submits a transfer as a native document; returns the gateway's transfer id.
    pub async fn submit(&self, request: &TransferRequest) -> Result<String, String> {
        let bytes = self.endpoint.write_transfer(request).map_err(|e| e.to_string())?;
        if let Ok(mut sent) = self.sent.lock() {
            sent.insert(request.sender_ref.clone(), request.clone());
        }
        let path = format!(
            "/v1/native/{}/{}/transfers",
            self.endpoint.id.region,
            self.endpoint.id.platform.as_str()
        );
        match self.post(&path, bytes).await {
            Ok((200, headers)) => {
                self.tally.submitted.fetch_add(1, Ordering::Relaxed);
                Ok(headers
                    .get("x-liandong-transfer-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string())
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
        let path = format!(
            "/v1/native/{}/{}/status",
            self.endpoint.id.region,
            self.endpoint.id.platform.as_str()
        );
        let ok = matches!(self.post(&path, bytes).await, Ok((200, _)));
        let counter = if ok { &self.tally.statuses_sent } else { &self.tally.errors };
        counter.fetch_add(1, Ordering::Relaxed);
        ok
    }

    async fn post(&self, path: &str, body: Vec<u8>) -> Result<(u16, hyper::HeaderMap), String> {
        call(&self.client, self.gateway, "POST", path, body)
            .await
            .map(|(status, headers, _)| (status, headers))
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
