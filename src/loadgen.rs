//! `liandong bench`: a load generator that speaks to the gateway as endpoints do — native
//! documents in each sender's own format (or gRPC) over mutual TLS on keep-alive connections,
//! as one or several identities — at a fixed rate or flat out, and reports throughput and
//! latency percentiles (HdrHistogram). Neither `wrk` nor `h2load` can present a client
//! certificate, hence this tool. `--store-only` measures the engine and store alone, the
//! baseline for what the front door adds.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde::Serialize;

use crate::security::tls;

pub mod destination;

/// The case every request sends: the spec's Ningbo township sample, read once as 330200/110.
const TEMPLATE: &str = include_str!("../tests/spec/samples/jjd-json/transfer-ningbo-township.json");

/// The case as `endpoint` submits it: from that endpoint to the other platform.
fn case_for(
    registry: &crate::formats::Registry,
    endpoint: &str,
) -> Result<crate::model::TransferRequest, String> {
    let sample = registry.endpoint_named("330200/110").map_err(|e| e.to_string())?;
    let mut case =
        sample.read_transfer(TEMPLATE.as_bytes()).map_err(|e| format!("the sample: {e}"))?;
    let sender = registry.endpoint_named(endpoint).map_err(|e| e.to_string())?;
    case.from = sender.id.clone();
    case.to_platform = sender.id.platform.other();
    Ok(case)
}

/// Request `n` of run `run_id`: the case with its own reference and record number, taken and
/// handed over now — a case from the sample's date would be overdue on arrival, and the
/// gateway's escalations of it would compete with the load being measured. Both numbers rise
/// with time, as a desk's do (`J2101022023050800017` in formats.md: the date, then a padded
/// sequence), run after run: a number that starts again at 1 each run, unpadded, lands all over
/// the store's index of cases on a store kept from the run before.
fn fresh(
    case: &crate::model::TransferRequest,
    run_id: &str,
    n: u64,
) -> crate::model::TransferRequest {
    let mut request = case.clone();
    request.sender_ref = format!("B{run_id}-{n:010}");
    request.case.origin.local_id = format!("JB{run_id}{n:010}");
    request.case.case_id = crate::model::Case::id_for(&request.from, &request.case.origin.local_id);
    request.requested_at = crate::model::time::Timestamp::now();
    request
}

/// One identity the generator submits as: an endpoint and its client certificate.
#[derive(Clone, Debug)]
pub struct Submitter {
    /// `330200/110`: documents go to its native route, in its format.
    pub endpoint: String,
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Plan {
    pub url: String,
    pub ca: std::path::PathBuf,
    /// The identities to submit as; connection `i` is submitter `i` modulo their number.
    pub submitters: Vec<Submitter>,
    /// Connections, each sending one request at a time.
    pub concurrency: usize,
    pub duration: Duration,
    /// Requests per second in all, or flat out when absent.
    pub rate: Option<f64>,
    /// Submit over gRPC (`SubmitTransfer`, one HTTP/2 connection per worker) instead of native
    /// HTTPS documents.
    pub grpc: bool,
    /// Submit in this process to this site's store, through the engine (routing, deadlines,
    /// the durable commit) and nothing in front of it — no TLS, HTTP, policy, rate check or
    /// translation: the baseline that the front door's cost is measured against.
    pub store_only: Option<Box<crate::config::Config>>,
    /// Also play the destinations of this site's configuration (`destination`): count what
    /// arrives, the backlog each second, submit → destination latency, and the drain after.
    pub deliver: Option<Box<crate::config::Config>>,
    /// With `deliver`: a window in which the destinations are down (nothing listens, and
    /// the connections they had are cut).
    pub outage: Option<Outage>,
}

/// When the destinations are down during a `--deliver` run.
#[derive(Clone, Copy, Debug, Default)]
pub struct Outage {
    /// From the start of the run (zero: down from the first submission).
    pub from: Duration,
    pub lasting: Duration,
}

impl Outage {
    /// When the destinations come back, from the start of the run.
    pub fn back(&self) -> Duration {
        self.from + self.lasting
    }
}

/// What happened.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub requests: u64,
    pub ok: u64,
    pub errors: u64,
    /// Of the errors, answers 429 (over the gateway's rate limit for the identity).
    pub limited: u64,
    pub seconds: f64,
    pub per_second: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub concurrency: usize,
    /// How many identities the connections shared.
    pub identities: usize,
    pub rate: Option<f64>,
    /// With `--deliver`: what reached the destination.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliveryReport>,
}

/// What reached the destination in a `--deliver` run.
#[derive(Clone, Debug, Serialize)]
pub struct DeliveryReport {
    /// Transfers that reached the destination, once each.
    pub delivered: u64,
    /// Deliveries that came again (retries of ones already there).
    pub repeated: u64,
    /// Answered "submitted" but not at the destination when the run gave up waiting.
    pub undelivered: u64,
    /// Delivered per second while submissions went on.
    pub while_submitting_per_second: f64,
    /// After the last submission: how long until everything had arrived, and at what rate the
    /// backlog went.
    pub drain_seconds: f64,
    pub drain_per_second: f64,
    /// Submit → destination: from the send's scheduled time to its first arrival.
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// `[seconds since the start, submitted and not yet arrived]`, once a second.
    pub backlog: Vec<[f64; 2]>,
    /// Minute by minute of sending: what was sent, what of it arrived, and its submit →
    /// destination latency (what a long run compares between its start and its end).
    pub minutes: Vec<destination::Minute>,
    /// With `--outage`: the backlog the outage left and how fast it cleared once the
    /// destination came back (while any submissions still went on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after_outage: Option<OutageDrain>,
}

/// How the backlog an outage left cleared.
#[derive(Clone, Debug, Serialize)]
pub struct OutageDrain {
    /// Submitted and not arrived when the destination came back.
    pub backlog: u64,
    /// From then until the backlog first fell to 1 % of that (what new submissions keep in
    /// flight), and what arrived per second meanwhile.
    pub cleared_seconds: f64,
    pub delivered_per_second: f64,
}

/// One look at the destination's side: when, how many were waiting, how many had arrived.
#[derive(Clone, Copy, Debug)]
struct Sample {
    at: f64,
    waiting: u64,
    delivered: u64,
}

/// From samples taken every 100 ms: the backlog when the destination came back at `back`
/// seconds, and how it cleared. `None` if it had not cleared when the run ended.
fn outage_drain(samples: &[Sample], back: f64) -> Option<OutageDrain> {
    let start = samples.iter().find(|s| s.at >= back)?;
    let cleared = samples.iter().find(|s| s.at > start.at && s.waiting * 100 <= start.waiting)?;
    let seconds = cleared.at - start.at;
    Some(OutageDrain {
        backlog: start.waiting,
        cleared_seconds: seconds,
        delivered_per_second: (cleared.delivered - start.delivered) as f64 / seconds,
    })
}

/// Runs the plan.
pub async fn run(plan: Plan) -> Result<Report, String> {
    if plan.submitters.is_empty() {
        return Err("no identity to submit as".into());
    }
    if let Some(config) = plan.store_only.clone() {
        return run_store_only(plan, *config).await;
    }
    if plan.grpc {
        return run_grpc(plan).await;
    }
    if let Some(config) = plan.deliver.clone() {
        return run_delivering(plan, *config).await;
    }
    run_native(plan, None).await
}

/// A native run while playing the destinations: the submissions' report, and what arrived.
async fn run_delivering(plan: Plan, config: crate::config::Config) -> Result<Report, String> {
    let registry = crate::formats::Registry::builtin();
    let arrivals = destination::start(&config, &registry, plan.outage.unwrap_or_default()).await?;
    let started = Instant::now();
    let samples = Arc::new(std::sync::Mutex::new(Vec::<Sample>::new()));
    let sampler = {
        let (arrivals, samples) = (arrivals.clone(), samples.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(
                (started + Duration::from_millis(100)).into(),
                Duration::from_millis(100),
            );
            loop {
                tick.tick().await;
                let delivered = arrivals.delivered.load(Ordering::Relaxed);
                let waiting = arrivals.sent_count().saturating_sub(delivered);
                if let Ok(mut s) = samples.lock() {
                    s.push(Sample { at: started.elapsed().as_secs_f64(), waiting, delivered });
                }
            }
        })
    };
    let outage = plan.outage;
    let mut report = run_native(plan, Some(arrivals.clone())).await?;
    let submitting = started.elapsed().as_secs_f64();
    let delivered_then = arrivals.delivered.load(Ordering::Relaxed);
    // The drain: until everything sent has arrived, or nothing has for 30 s (after any outage).
    if let Some(outage) = outage {
        tokio::time::sleep_until((started + outage.back()).into()).await;
    }
    let (mut last, mut still) = (delivered_then, Instant::now());
    while arrivals.delivered.load(Ordering::Relaxed) < arrivals.sent_count()
        && still.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = arrivals.delivered.load(Ordering::Relaxed);
        if now != last {
            (last, still) = (now, Instant::now());
        }
    }
    sampler.abort();
    // And a last look now: the backlog may have cleared since the sampler's last one.
    let mut samples = samples.lock().map(|s| s.clone()).unwrap_or_default();
    let delivered = arrivals.delivered.load(Ordering::Relaxed);
    samples.push(Sample {
        at: started.elapsed().as_secs_f64(),
        waiting: arrivals.sent_count().saturating_sub(delivered),
        delivered,
    });
    let drain_seconds = started.elapsed().as_secs_f64() - submitting;
    let (mut latencies, undelivered) = arrivals.latencies();
    latencies.sort_unstable();
    let quantile = |q: f64| destination::quantile_ms(&latencies, q);
    report.delivery = Some(DeliveryReport {
        delivered,
        repeated: arrivals.repeated.load(Ordering::Relaxed),
        undelivered,
        while_submitting_per_second: delivered_then as f64 / submitting,
        drain_seconds,
        drain_per_second: (delivered - delivered_then) as f64 / drain_seconds.max(1e-3),
        p50_ms: quantile(0.5),
        p90_ms: quantile(0.9),
        p99_ms: quantile(0.99),
        max_ms: latencies.last().map_or(0.0, |us| *us as f64 / 1000.0),
        backlog: samples
            .iter()
            .skip(9)
            .step_by(10)
            .map(|s| [s.at.round(), s.waiting as f64])
            .collect(),
        after_outage: outage.and_then(|outage| outage_drain(&samples, outage.back().as_secs_f64())),
        minutes: arrivals.minutes(started),
    });
    Ok(report)
}

/// Native HTTPS documents, each in its sender's format; with `arrivals`, each transfer's send
/// time is noted for the destination's side.
async fn run_native(
    plan: Plan,
    arrivals: Option<Arc<destination::Arrivals>>,
) -> Result<Report, String> {
    // Several URLs (replicas with no balancer in front): connection `i` goes to the `i`-th,
    // modulo their number.
    let mut targets = Vec::new();
    for url in plan.url.split(',') {
        let uri: hyper::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
        let host = uri.host().ok_or_else(|| format!("{url}: the URL has no host"))?.to_string();
        targets.push((host, uri.port_u16().unwrap_or(443)));
    }
    let registry = crate::formats::Registry::builtin();
    // Per submitter: its TLS identity, its native route, its format, its case.
    let mut senders = Vec::with_capacity(plan.submitters.len());
    for submitter in &plan.submitters {
        let config = tls::client_config(&plan.ca, &submitter.cert, &submitter.key)
            .map_err(|e| e.to_string())?;
        let endpoint =
            registry.endpoint_named(&submitter.endpoint).map_err(|e| e.to_string())?.clone();
        let path = format!("/v1/native/{}/transfers", submitter.endpoint);
        let case = case_for(&registry, &submitter.endpoint)?;
        senders.push(Arc::new((tokio_rustls::TlsConnector::from(config), path, endpoint, case)));
    }
    drive(&plan, |worker, mut turn| {
        let (identity, arrivals) = (senders[worker % senders.len()].clone(), arrivals.clone());
        let (host, port) = targets[worker % targets.len()].clone();
        async move {
            let (connector, path, endpoint, case) = &*identity;
            let mut tally = Tally::new();
            let mut sender = None;
            while let Some((scheduled, n)) = turn.next().await {
                if sender.is_none() {
                    sender = connect(connector, (host.as_str(), port), &host).await.ok();
                    if sender.is_none() {
                        tally.errors += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                }
                let Ok(body) = endpoint.write_transfer(&fresh(case, &turn.run_id, n)) else {
                    tally.errors += 1;
                    continue;
                };
                let request = hyper::Request::post(path.as_str())
                    .header(hyper::header::HOST, host.as_str())
                    .header(hyper::header::CONTENT_TYPE, endpoint.content_type())
                    .body(Full::new(Bytes::from(body)))
                    .expect("a request");
                let Some(s) = sender.as_mut() else { continue };
                match s.send_request(request).await {
                    Ok(response) => {
                        let status = response.status();
                        if let (Some(arrivals), true) = (&arrivals, status.is_success()) {
                            if let Some(id) = response
                                .headers()
                                .get("x-liandong-transfer-id")
                                .and_then(|v| v.to_str().ok())
                            {
                                arrivals.sent(id.to_string(), scheduled);
                            }
                        }
                        let _ = response.into_body().collect().await;
                        tally.answer(
                            scheduled,
                            status.is_success(),
                            status == hyper::StatusCode::TOO_MANY_REQUESTS,
                        );
                    }
                    Err(_) => {
                        tally.errors += 1;
                        sender = None;
                    }
                }
            }
            tally
        }
    })
    .await
}

/// One worker's place in a run: the switch that ends it, the request numbers all workers
/// draw from, the run's id, and when this worker sends next.
struct Turn {
    stop: Arc<AtomicBool>,
    counter: Arc<AtomicU64>,
    run_id: Arc<str>,
    pacer: Pacer,
}

impl Turn {
    /// When the next request is due and its number; none once the run is over.
    async fn next(&mut self) -> Option<(Instant, u64)> {
        if self.stop.load(Ordering::Relaxed) {
            return None;
        }
        let scheduled = self.pacer.next().await;
        Some((scheduled, self.counter.fetch_add(1, Ordering::Relaxed)))
    }
}

/// Runs `worker(i, turn)` for each of the plan's connections for the plan's duration, then
/// joins them and makes the report.
async fn drive<W, F>(plan: &Plan, mut worker: W) -> Result<Report, String>
where
    W: FnMut(usize, Turn) -> F,
    F: std::future::Future<Output = Tally> + Send + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let counter = Arc::new(AtomicU64::new(0));
    let run_id: Arc<str> = ulid::Ulid::new().to_string().into();
    let started = Instant::now();
    let workers: Vec<_> = (0..plan.concurrency)
        .map(|i| {
            let turn = Turn {
                stop: stop.clone(),
                counter: counter.clone(),
                run_id: run_id.clone(),
                pacer: Pacer::new(plan, i),
            };
            tokio::spawn(worker(i, turn))
        })
        .collect();
    tokio::time::sleep(plan.duration).await;
    stop.store(true, Ordering::Relaxed);
    collect(workers, started, plan).await
}

/// When a worker sends: at a fixed rate (its share of `--rate`, the workers spread over one
/// interval so the load is smooth, not bursty) or as soon as the last answer is in.
struct Pacer {
    interval: Option<Duration>,
    next_send: Instant,
}

impl Pacer {
    fn new(plan: &Plan, worker: usize) -> Pacer {
        let interval = plan.rate.map(|r| Duration::from_secs_f64(plan.concurrency as f64 / r));
        let offset = interval
            .map(|i| i.mul_f64(worker as f64 / plan.concurrency as f64))
            .unwrap_or_default();
        Pacer { interval, next_send: Instant::now() + offset }
    }

    /// Waits for the next send and returns the time it was scheduled for: latency is measured
    /// from there, so a slow answer that delays later sends is counted, not hidden.
    async fn next(&mut self) -> Instant {
        match self.interval {
            Some(interval) => {
                tokio::time::sleep_until(self.next_send.into()).await;
                let scheduled = self.next_send;
                self.next_send += interval;
                scheduled
            }
            None => Instant::now(),
        }
    }
}

/// One worker's counts and latencies.
struct Tally {
    histogram: Histogram<u64>,
    ok: u64,
    errors: u64,
    limited: u64,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            histogram: Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds"),
            ok: 0,
            errors: 0,
            limited: 0,
        }
    }

    /// An answer to the send scheduled at `scheduled`.
    fn answer(&mut self, scheduled: Instant, ok: bool, limited: bool) {
        if ok {
            self.ok += 1;
        } else {
            self.errors += 1;
            self.limited += u64::from(limited);
        }
        let _ =
            self.histogram.record((scheduled.elapsed().as_micros().min(60_000_000) as u64).max(1));
    }
}

/// Joins the workers and makes the report.
async fn collect(
    workers: Vec<tokio::task::JoinHandle<Tally>>,
    started: Instant,
    plan: &Plan,
) -> Result<Report, String> {
    let mut histogram =
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
    let (mut ok, mut errors, mut limited) = (0, 0, 0);
    for worker in workers {
        let tally = worker.await.map_err(|e| e.to_string())?;
        histogram.add(tally.histogram).map_err(|e| e.to_string())?;
        ok += tally.ok;
        errors += tally.errors;
        limited += tally.limited;
    }
    let seconds = started.elapsed().as_secs_f64();
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    Ok(Report {
        requests: ok + errors,
        ok,
        errors,
        limited,
        seconds,
        per_second: ok as f64 / seconds,
        p50_ms: ms(0.5),
        p90_ms: ms(0.9),
        p99_ms: ms(0.99),
        max_ms: histogram.max() as f64 / 1000.0,
        concurrency: plan.concurrency,
        identities: plan.submitters.len(),
        rate: plan.rate,
        delivery: None,
    })
}

/// An HTTP/1.1 connection over mutual TLS to `addr`, verifying the server as `server_name`.
pub(crate) async fn connect(
    connector: &tokio_rustls::TlsConnector,
    addr: impl tokio::net::ToSocketAddrs,
    server_name: &str,
) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, String> {
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let _ = tcp.set_nodelay(true);
    let name = rustls::pki_types::ServerName::try_from(server_name.to_string())
        .map_err(|e| e.to_string())?;
    let tls = connector.connect(name, tcp).await.map_err(|e| e.to_string())?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    Ok(sender)
}

/// The gRPC variant: each worker holds one mTLS channel and submits canonical transfers.
async fn run_grpc(plan: Plan) -> Result<Report, String> {
    use crate::proto::v1::{transfer_service_client::TransferServiceClient, SubmitTransferRequest};
    use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
    let read = |p: &std::path::Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    let registry = crate::formats::Registry::builtin();
    let mut senders = Vec::with_capacity(plan.submitters.len());
    for submitter in &plan.submitters {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read(&plan.ca)?))
            .identity(Identity::from_pem(read(&submitter.cert)?, read(&submitter.key)?))
            .domain_name("localhost");
        let channel = Channel::from_shared(plan.url.clone())
            .map_err(|e| e.to_string())?
            .tls_config(tls)
            .map_err(|e| e.to_string())?;
        senders.push((channel, case_for(&registry, &submitter.endpoint)?));
    }
    drive(&plan, |worker, mut turn| {
        let (channel, case) = senders[worker % senders.len()].clone();
        async move {
            let mut tally = Tally::new();
            let Ok(channel) = channel.connect().await else {
                tally.errors += 1;
                return tally;
            };
            let mut client = TransferServiceClient::new(channel);
            while let Some((scheduled, n)) = turn.next().await {
                let request = fresh(&case, &turn.run_id, n);
                match client
                    .submit_transfer(SubmitTransferRequest { request: Some(request.into()) })
                    .await
                {
                    Ok(_) => tally.answer(scheduled, true, false),
                    Err(status) => tally.answer(
                        scheduled,
                        false,
                        status.code() == tonic::Code::ResourceExhausted,
                    ),
                }
            }
            tally
        }
    })
    .await
}

/// The store-only variant: workers call [`crate::engine::Engine::submit`] with canonical
/// transfers (translated once, before the clock starts).
async fn run_store_only(plan: Plan, config: crate::config::Config) -> Result<Report, String> {
    let registry = crate::server::registry(&config).map_err(|e| e.to_string())?;
    let cases = plan
        .submitters
        .iter()
        .map(|s| case_for(&registry, &s.endpoint))
        .collect::<Result<Vec<_>, String>>()?;
    let store = crate::server::open_store(&config).await.map_err(|e| e.to_string())?;
    let engine = crate::engine::Engine::new(store, Arc::new(registry), Arc::new(config));
    drive(&plan, |worker, mut turn| {
        let (case, engine) = (cases[worker % cases.len()].clone(), engine.clone());
        async move {
            let mut tally = Tally::new();
            while let Some((scheduled, n)) = turn.next().await {
                let request = fresh(&case, &turn.run_id, n);
                let sender = request.from.clone();
                let ok = engine.submit(&sender, request).await.is_ok();
                tally.answer(scheduled, ok, false);
            }
            tally
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::{outage_drain, Sample};

    /// A destination back at 10 s with 1,000 waiting, 100 new a second arriving and the
    /// backlog falling by 200 a second: cleared (≤ 10 waiting) at 15 s, 1,500 delivered.
    #[test]
    fn the_outage_drain_runs_from_the_return_to_one_percent_of_the_backlog() {
        let samples: Vec<Sample> = (0..=200)
            .map(|tenth| {
                let at = tenth as f64 / 10.0;
                let back = (at - 10.0).max(0.0);
                let waiting = if at < 10.0 {
                    (at * 100.0) as u64
                } else {
                    (1000.0 - back * 200.0).max(5.0) as u64
                };
                let delivered = (back * 300.0) as u64;
                Sample { at, waiting, delivered }
            })
            .collect();
        let drain = outage_drain(&samples, 10.0).expect("it cleared");
        assert_eq!(drain.backlog, 1000);
        assert!((drain.cleared_seconds - 5.0).abs() < 0.15, "{drain:?}");
        assert!((drain.delivered_per_second - 300.0).abs() < 10.0, "{drain:?}");
    }

    /// A desk's numbers rise: within a run past a power of ten, and from one run to the next
    /// (each run's id is a ULID, later runs sort after), so a kept store's indexes of
    /// references and cases grow at one end, as a desk's would.
    #[test]
    fn the_generators_references_and_case_numbers_rise_run_after_run() {
        let registry = crate::formats::Registry::builtin();
        let case = super::case_for(&registry, "330200/110").unwrap();
        let first_run = ulid::Ulid::new().to_string();
        let later_run = ulid::Ulid::from_parts(ulid::Ulid::new().timestamp_ms() + 1, 0).to_string();
        let keys = |run: &str, n: u64| {
            let request = super::fresh(&case, run, n);
            (request.sender_ref, request.case.case_id)
        };
        let sequence =
            [keys(&first_run, 9), keys(&first_run, 10), keys(&first_run, 11), keys(&later_run, 1)];
        for pair in sequence.windows(2) {
            assert!(pair[0].0 < pair[1].0 && pair[0].1 < pair[1].1, "{pair:?}");
        }
    }

    #[test]
    fn a_backlog_that_never_clears_has_no_drain_figure() {
        let samples: Vec<Sample> =
            (0..100).map(|i| Sample { at: i as f64 / 10.0, waiting: 500, delivered: 0 }).collect();
        assert!(outage_drain(&samples, 2.0).is_none());
    }
}
