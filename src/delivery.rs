//! Delivery: the outbox, pushed to each destination over HTTPS with the gateway's client
//! certificate, at least once, until the destination's native receipt says it has it.
//!
//! A worker takes due items per destination — leased in the store on PostgreSQL (so two
//! replicas never deliver the same item at once), held in memory on SQLite (one gateway owns
//! the file) — renders each in the destination's native format at send time, reads it back
//! with the destination's own profile, POSTs it, and reads the answer with the destination's
//! receipt profile. Success marks the item delivered (and the transfer `delivered`); what
//! [`verdict`]'s table calls permanent (the destination's `invalid` receipt, a document its own
//! profile would refuse) is a dead letter at once, and the rest is retried with exponential
//! backoff and jitter until the attempt count or the age makes it one. A dead transfer is
//! rejected on its destination's behalf so that its origin hears of it (`canonical.md`,
//! "Undeliverable transfers"); operators list and replay dead letters.
//!
//! Each destination has `per_destination` slots (its connections), freed when it answers, so
//! one slow or dead destination never holds up the others and a small desk is never flooded;
//! a destination that stops answering gets one paced probe at a time until it answers again.
//! Items of one transfer go out in order (only the first undone one is ever due). A commit that
//! queues work wakes the worker; a short poll finds retries and other replicas' work. The
//! receiver recognises a retry by `transfer_id`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::sync::{Mutex, Semaphore};

use crate::config::Delivery as Settings;
use crate::engine::Engine;
use crate::formats::ReceiptKind;
use crate::metrics::{self, counters};
use crate::model::{ReasonCode, Timestamp, TransferRequest};
use crate::store::{now_millis, DeliveryKind, OutboxItem, Write};

/// How often to look for due work when no commit of this process has woken the deliverer:
/// retries coming due, and other replicas' submissions.
const POLL: Duration = Duration::from_millis(100);

/// What one delivery attempt came to.
#[derive(Debug)]
pub enum Attempt {
    /// The destination's success receipt came back.
    Delivered,
    /// No valid document for this destination: rendering failed, or the destination's own
    /// reader refuses what was rendered (a bug or a gap in a profile, never cured by retrying).
    Unrenderable(String),
    /// The destination has no URL: it pulls.
    NoUrl(String),
    /// No connection (refused, unresolvable, TLS failed).
    Connect(String),
    /// The connection broke during the exchange.
    Http(String),
    /// No answer in time.
    Timeout(Duration),
    /// The destination answered, but not with its success receipt: the HTTP status, which of
    /// its receipts it was (if any), and its message.
    Answered { status: u16, receipt: Option<ReceiptKind>, message: String },
}

impl std::fmt::Display for Attempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Attempt::Delivered => write!(f, "delivered"),
            Attempt::Unrenderable(e) => {
                write!(f, "cannot render a document the destination accepts: {e}")
            }
            Attempt::NoUrl(d) => write!(f, "no delivery URL for {d}"),
            Attempt::Connect(e) => write!(f, "connect: {e}"),
            Attempt::Http(e) => write!(f, "HTTP: {e}"),
            Attempt::Timeout(d) => write!(f, "timed out after {d:?}"),
            Attempt::Answered { status, receipt, message } => {
                let kind = match receipt {
                    Some(ReceiptKind::Invalid) => "its invalid receipt",
                    Some(ReceiptKind::Refused) => "its refused receipt",
                    Some(ReceiptKind::Busy) => "its busy receipt",
                    Some(ReceiptKind::Success) => "a success receipt",
                    None => "no receipt of its format",
                };
                write!(f, "the destination answered HTTP {status} with {kind}: {message}")
            }
        }
    }
}

/// What follows an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    /// Try again after the backoff (until the attempt limit or `dead_after`).
    Retry,
    /// A dead letter at once: the same bytes would be refused again.
    Permanent,
}

/// The retry table: which outcomes are retried and which are permanent (each row has its test
/// below). Retrying is the default — at least once, never lost — and permanent is kept for
/// what will never work: the destination's `invalid` receipt (the document is bad), `413` (too
/// large for it), or a document the destination's own profile refuses. A `refused` receipt is
/// retried: vendors answer it for a transient state conflict, and some for a repeated transfer
/// they already hold, which a dead letter would wrongly hand back.
pub fn verdict(attempt: &Attempt) -> Verdict {
    match attempt {
        Attempt::Delivered => Verdict::Delivered,
        Attempt::Unrenderable(_) => Verdict::Permanent,
        Attempt::NoUrl(_) | Attempt::Connect(_) | Attempt::Http(_) | Attempt::Timeout(_) => {
            Verdict::Retry
        }
        Attempt::Answered { status, receipt, .. } => match (*status, receipt) {
            (_, Some(ReceiptKind::Invalid)) => Verdict::Permanent,
            (413, _) => Verdict::Permanent,
            (_, Some(ReceiptKind::Busy | ReceiptKind::Refused | ReceiptKind::Success)) => {
                Verdict::Retry
            }
            (_, None) => Verdict::Retry,
        },
    }
}

/// The delivery worker.
pub struct Deliverer {
    engine: Engine,
    /// The delivery client's TLS material, as last reloaded: each new connection takes it.
    tls: Arc<crate::security::reload::TlsReloader>,
    settings: Settings,
    /// Idle HTTP/1.1 connections, by `host:port`.
    idle: Mutex<HashMap<String, Vec<SendRequest<Full<Bytes>>>>>,
    budgets: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// Signalled when a delivery ends, freeing its destination's slot, and when its outcome is
    /// committed (on SQLite the read-ahead waits for outcomes, not slots: without this wake it
    /// would wait for the next poll, and a backlog would drain a batch per poll).
    freed: tokio::sync::Notify,
    /// The destinations that stopped answering, and when to probe each next.
    down: std::sync::Mutex<HashMap<String, Down>>,
    /// The outbox items this deliverer has taken and not yet recorded (on SQLite its leases),
    /// and those whose outcome it recorded lately.
    taken: std::sync::Mutex<TakenItems>,
}

/// A destination that stopped answering.
#[derive(Clone, Copy, Debug)]
struct Down {
    /// Failed attempts in a row.
    failures: u32,
    next_probe: Instant,
}

/// Whether a destination may be sent to.
enum Probe {
    /// It answers: as much as its slots allow.
    No,
    /// It is down and a probe is due: one delivery.
    Due,
    /// It is down: nothing until the next probe.
    Wait,
}

/// The longest wait between probes of a destination that is down: how late, at most, the
/// gateway notices it is back.
const PROBE_AT_MOST: Duration = Duration::from_secs(5);

/// The outbox items this deliverer took and has not yet recorded, and (for SQLite's reads)
/// when the outcomes of the others were committed.
#[derive(Debug, Default)]
struct TakenItems {
    items: HashMap<i64, Taken>,
    /// How many are out (being delivered or recorded), by destination.
    out: HashMap<String, usize>,
    /// Released items, oldest first, to forget them in order.
    released: std::collections::VecDeque<(Instant, i64)>,
}

impl TakenItems {
    fn out_to(&self, destination: &str) -> usize {
        self.out.get(destination).copied().unwrap_or(0)
    }

    /// Marks these items of `destination` taken: out until released.
    fn take(&mut self, destination: &str, ids: impl IntoIterator<Item = i64>) {
        let mut count = 0;
        for id in ids {
            self.items.insert(id, Taken::Out);
            count += 1;
        }
        *self.out.entry(destination.to_string()).or_default() += count;
    }

    /// The outcome of item `id` of `destination` is committed (or failed to be) at `now`: it
    /// may be taken again by reads that begin from then on. An item not taken here changes
    /// nothing. What was released a second ago is forgotten here (an earlier build forgot only
    /// in SQLite's reads, and a PostgreSQL replica remembered every delivery it ever made).
    fn release(&mut self, destination: &str, id: i64, now: Instant) {
        let Some(taken @ Taken::Out) = self.items.get_mut(&id) else { return };
        *taken = Taken::Released(now);
        if let Some(out) = self.out.get_mut(destination) {
            *out = out.saturating_sub(1);
        }
        self.released.push_back((now, id));
        self.forget_old(now);
    }

    /// How many items are remembered, out or lately released.
    #[cfg(test)]
    fn remembered(&self) -> usize {
        self.items.len()
    }

    /// Forgets items released a second before `now` or earlier: no read still running began
    /// before their commit (a read takes milliseconds).
    fn forget_old(&mut self, now: Instant) {
        while let Some((at, item)) = self.released.front().copied() {
            if now.saturating_duration_since(at) < Duration::from_secs(1) {
                break;
            }
            self.released.pop_front();
            if matches!(self.items.get(&item), Some(Taken::Released(when)) if *when == at) {
                self.items.remove(&item);
            }
        }
    }
}

/// An outbox item this deliverer took.
#[derive(Clone, Copy, Debug)]
enum Taken {
    /// Being delivered, or its outcome being recorded.
    Out,
    /// Its outcome was committed at this moment.
    Released(Instant),
}

impl Deliverer {
    pub fn new(
        engine: Engine,
        tls: Arc<crate::security::reload::TlsReloader>,
        settings: Settings,
    ) -> Arc<Deliverer> {
        Arc::new(Deliverer {
            engine,
            tls,
            settings,
            idle: Mutex::new(HashMap::new()),
            budgets: Mutex::new(HashMap::new()),
            freed: tokio::sync::Notify::new(),
            taken: std::sync::Mutex::default(),
            down: std::sync::Mutex::default(),
        })
    }

    /// Runs until `shutdown` is set. Each round takes, per destination, no more due work than
    /// it has free delivery slots: a slow or dead destination holds its own slots and nobody
    /// else's, and nothing taken waits for a slot. On PostgreSQL the work is leased in the store
    /// (replicas share it); on SQLite, whose file one gateway owns, the leases are held here in
    /// memory and cost no write (a crash forgets them with everything else in flight, and the
    /// work is simply due again).
    pub async fn run(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let push: Vec<String> = self.engine.push_endpoints().map(String::from).collect();
        let lease = (self.settings.timeout.as_millis() as i64) * 3 + 5_000;
        let in_memory = self.engine.store().backend() == crate::store::Backend::Sqlite;
        // Destinations whose last read found less than it asked for: nothing more is due there
        // until a commit queues work or the poll comes round (retries, other replicas' work),
        // so a freed slot does not read them again. (With few waiting, each delivery's freed
        // slot read the outbox again for one or two items: a read per two deliveries.)
        let mut caught_up: std::collections::HashSet<String> = std::collections::HashSet::new();
        loop {
            if *shutdown.borrow() {
                return;
            }
            // PostgreSQL: each destination's free slots, the round's batch shared among them,
            // and never more than a batch of a destination out: taken and not yet recorded.
            // A slot is free once the destination answers, but the record of a confirmed
            // delivery yields to the desks' writes; without the bound a drain sent on while
            // thousands of records waited (and their leases ran down), and took the store
            // from the submissions. SQLite (leases in memory, which never run out): read
            // ahead, up to a batch per destination, once half of what was read has gone.
            let mut wants = Vec::with_capacity(push.len());
            let mut left = self.settings.batch;
            for destination in push.iter().filter(|d| !caught_up.contains(*d)) {
                let want = if in_memory {
                    let out = self.taken.lock().map_or(0, |t| t.out_to(destination));
                    if out <= self.settings.batch / 2 {
                        self.settings.batch - out
                    } else {
                        0
                    }
                } else {
                    let out = self.taken.lock().map_or(0, |t| t.out_to(destination));
                    let free = self
                        .budget(destination)
                        .await
                        .available_permits()
                        .min(left)
                        .min(self.settings.batch.saturating_sub(out));
                    left -= free;
                    free
                };
                // A destination that is down gets one probe at a time, paced, not its whole
                // backlog: the rest waits untried (no backoff, no attempts spent) and is due at
                // once when a probe gets through.
                let want = match self.probing(destination) {
                    Probe::No => want,
                    Probe::Due
                        if self.budget(destination).await.available_permits()
                            == self.settings.per_destination =>
                    {
                        want.min(1)
                    }
                    Probe::Due | Probe::Wait => 0,
                };
                if want > 0 {
                    wants.push((destination.clone(), want as i64));
                }
            }
            let saturated = wants.is_empty();
            let items = match in_memory {
                true => self.take_due(wants.clone()).await,
                false => self.lease(lease, &wants).await,
            };
            let items = items.unwrap_or_else(|e| {
                tracing::error!(error = %e, "taking due deliveries failed");
                Vec::new()
            });
            for (destination, want) in &wants {
                let got =
                    items.iter().filter(|i| i.destination.to_string() == *destination).count();
                if (got as i64) < *want {
                    caught_up.insert(destination.clone());
                }
            }
            let idle = items.is_empty();
            for item in items {
                let budget = self.budget(&item.destination.to_string()).await;
                let this = self.clone();
                tokio::spawn(async move {
                    let Ok(permit) = budget.acquire_owned().await else { return };
                    let started = Instant::now();
                    let attempt = this.deliver(&item).await;
                    let destination = metrics::endpoint_label(&item.destination.to_string());
                    counters().delivery_seconds.observe(destination, started.elapsed());
                    // The slot is the destination's connection: free as soon as it has answered.
                    drop(permit);
                    this.freed.notify_one();
                    this.record(&item, attempt).await;
                    this.release(&item);
                    this.freed.notify_one();
                });
            }
            if idle || saturated {
                // A freed slot may take more of a backlog; work newly queued, or come due, needs
                // a read of every destination. (An item queued behind one in flight waits for
                // either: at most a poll.)
                tokio::select! {
                    _ = self.engine.store().outbox_ready() => caught_up.clear(),
                    _ = self.freed.notified() => {}
                    _ = tokio::time::sleep(POLL) => caught_up.clear(),
                    _ = shutdown.changed() => {}
                }
            }
        }
    }

    /// Whether `destination` is down, and if so whether its next probe is due.
    fn probing(&self, destination: &str) -> Probe {
        let Ok(down) = self.down.lock() else { return Probe::No };
        match down.get(destination) {
            None => Probe::No,
            Some(d) if Instant::now() >= d.next_probe => Probe::Due,
            Some(_) => Probe::Wait,
        }
    }

    /// Notes whether `destination` answered: a connection that failed, timed out or broke, or
    /// a gateway error (502–504), marks it down, with the next probe after a delay that
    /// doubles from `initial_backoff` up to [`PROBE_AT_MOST`]; any answer of its own marks it up.
    fn note_health(&self, destination: &str, attempt: &Attempt) {
        let unreachable = match attempt {
            Attempt::Connect(_) | Attempt::Http(_) | Attempt::Timeout(_) => true,
            Attempt::Answered { status, .. } => matches!(status, 502..=504),
            Attempt::Delivered | Attempt::Unrenderable(_) | Attempt::NoUrl(_) => false,
        };
        let Ok(mut down) = self.down.lock() else { return };
        if !unreachable {
            if down.remove(destination).is_some() {
                tracing::info!(%destination, "the destination answers again: its backlog goes out");
            }
            return;
        }
        let entry = down
            .entry(destination.to_string())
            .or_insert(Down { failures: 0, next_probe: Instant::now() });
        entry.failures = entry.failures.saturating_add(1);
        let delay = self
            .settings
            .initial_backoff
            .saturating_mul(2u32.saturating_pow(entry.failures.min(16) - 1))
            .min(PROBE_AT_MOST);
        entry.next_probe = Instant::now() + delay;
    }

    /// SQLite: the due work of each destination not already taken by this deliverer, marked
    /// taken here until its outcome is committed. A read that began before an outcome was
    /// committed may still show that item as due: what was released after the read began is
    /// left out too.
    async fn take_due(
        &self,
        wants: Vec<(String, i64)>,
    ) -> Result<Vec<OutboxItem>, crate::store::StoreError> {
        let now = now_millis();
        let mut items = Vec::new();
        for (destination, free) in wants {
            let read_began = Instant::now();
            // What is out is left out by the read itself (no row of it is read again); what is
            // released during the read is filtered below.
            let held: Vec<i64> = self.taken.lock().map_or(Vec::new(), |t| {
                t.items
                    .iter()
                    .filter(|(_, taken)| matches!(taken, Taken::Out))
                    .map(|(id, _)| *id)
                    .collect()
            });
            let mut due = self.engine.store().due(now, &destination, free, &held).await?;
            let Ok(mut taken) = self.taken.lock() else { continue };
            due.retain(|item| match taken.items.get(&item.id) {
                None => true,
                Some(Taken::Out) => false,
                Some(Taken::Released(at)) => *at < read_began,
            });
            due.truncate(free as usize);
            taken.take(&destination, due.iter().map(|item| item.id));
            taken.forget_old(read_began);
            items.extend(due);
        }
        Ok(items)
    }

    /// PostgreSQL: leases due work in the store for this replica, and notes it out here.
    async fn lease(
        &self,
        lease: i64,
        wants: &[(String, i64)],
    ) -> Result<Vec<OutboxItem>, crate::store::StoreError> {
        let items = self.engine.store().lease_from(now_millis(), lease, wants.to_vec()).await?;
        if let Ok(mut taken) = self.taken.lock() {
            for item in &items {
                taken.take(&item.destination.to_string(), [item.id]);
            }
        }
        Ok(items)
    }

    /// The outcome of `item` is committed (or failed to be): it is no longer out, and (SQLite)
    /// may be taken again by reads that begin from now on.
    fn release(&self, item: &OutboxItem) {
        if let Ok(mut taken) = self.taken.lock() {
            taken.release(&item.destination.to_string(), item.id, Instant::now());
        }
    }

    async fn budget(&self, destination: &str) -> Arc<Semaphore> {
        self.budgets
            .lock()
            .await
            .entry(destination.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(self.settings.per_destination)))
            .clone()
    }

    /// Writes an attempt's outcome to the store.
    pub async fn record(&self, item: &OutboxItem, attempt: Attempt) {
        self.note_health(&item.destination.to_string(), &attempt);
        let now = Timestamp::now().unix_seconds();
        let write = match verdict(&attempt) {
            Verdict::Delivered => {
                metrics::inc(&counters().deliveries_ok);
                counters()
                    .deliveries_by_endpoint
                    .inc(metrics::endpoint_label(&item.destination.to_string()));
                Write::Delivered { item_id: item.id, at: now }
            }
            verdict => {
                metrics::inc(&counters().deliveries_failed);
                counters()
                    .failures_by_endpoint
                    .inc(metrics::endpoint_label(&item.destination.to_string()));
                let attempts = item.attempts + 1;
                let too_old = Duration::from_secs((now - item.created_at).max(0) as u64)
                    >= self.settings.dead_after;
                let dead = verdict == Verdict::Permanent
                    || attempts >= i64::from(self.settings.dead_after_attempts)
                    || too_old;
                let (transfer, destination) = (&item.transfer_id, &item.destination);
                let undeliverable = match (dead, item.kind) {
                    (false, _) => {
                        tracing::warn!(item = item.id, %transfer, %destination, attempts, error = %attempt, "delivery failed; will retry");
                        None
                    }
                    (true, DeliveryKind::Transfer) => {
                        metrics::inc(&counters().dead_letters);
                        counters()
                            .dead_letters_by_endpoint
                            .inc(metrics::endpoint_label(&item.destination.to_string()));
                        tracing::error!(item = item.id, %transfer, %destination, error = %attempt, "dead letter: the transfer is rejected as undeliverable and its origin told");
                        Some(self.undeliverable_note(item, &attempt).await)
                    }
                    (true, DeliveryKind::Status) => {
                        metrics::inc(&counters().dead_letters);
                        counters()
                            .dead_letters_by_endpoint
                            .inc(metrics::endpoint_label(&item.destination.to_string()));
                        tracing::error!(item = item.id, %transfer, %destination, error = %attempt, "dead letter: a status notice its receiver never took; replay it once the receiver is mended");
                        None
                    }
                };
                let next =
                    now_millis() + backoff(&self.settings, attempts, item.id).as_millis() as i64;
                Write::Failed {
                    item_id: item.id,
                    at: now,
                    error: attempt.to_string(),
                    next_attempt_at: next,
                    dead,
                    undeliverable,
                }
            }
        };
        // A confirmed delivery's record yields to the desks' writes (`Write::lane`): during a
        // drain, new submissions go first.
        if let Err(e) = self.engine.store().write(write).await {
            // The lease runs out and the item is tried again: at least once, never lost.
            tracing::error!(item = item.id, error = %e, "recording a delivery outcome failed");
        }
    }

    /// The note of the rejection the gateway makes for an undeliverable transfer: why, and
    /// whom the origin's desk can phone instead (the directory's record for the case).
    async fn undeliverable_note(&self, item: &OutboxItem, attempt: &Attempt) -> String {
        let mut note = format!(
            "{} {} could not take it ({attempt})",
            ReasonCode::UNDELIVERABLE_PREFIX,
            item.destination
        );
        if let Ok(request) = serde_json::from_str::<TransferRequest>(&item.payload) {
            if let Some(contact) = self.engine.directory_contact(&request).await {
                note.push_str(&format!("; phone {contact}"));
            }
        }
        note
    }

    /// Renders, checks and POSTs one item.
    pub async fn deliver(&self, item: &OutboxItem) -> Attempt {
        let body = match self.render(item) {
            Ok(body) => body,
            Err(problem) => return Attempt::Unrenderable(problem),
        };
        let Some(url) = self.engine.endpoint(&item.destination).and_then(|s| s.url.clone()) else {
            return Attempt::NoUrl(item.destination.to_string());
        };
        let Ok(endpoint) = self.engine.registry().endpoint(&item.destination) else {
            return Attempt::Unrenderable(format!("{} is not in the registry", item.destination));
        };
        let content_type = endpoint.content_type();
        let timeout = self.settings.timeout;
        let pin =
            self.engine.endpoint(&item.destination).and_then(|s| s.server_key_sha256.as_deref());
        let (status, answer) =
            match tokio::time::timeout(timeout, self.post(&url, pin, item, &content_type, body))
                .await
            {
                Err(_) => return Attempt::Timeout(timeout),
                Ok(Err(attempt)) => return attempt,
                Ok(Ok(answered)) => answered,
            };
        match endpoint.read_receipt(&answer) {
            Ok(receipt) if (200..300).contains(&status) && receipt.ok => Attempt::Delivered,
            Ok(receipt) => Attempt::Answered {
                status,
                receipt: receipt.kind,
                message: receipt.message.unwrap_or_else(|| "no message".into()),
            },
            Err(e) => Attempt::Answered {
                status,
                receipt: None,
                message: format!("unreadable receipt: {e}"),
            },
        }
    }

    /// The item in the destination's native format, read back by the destination's own
    /// profile before it is sent ([`Engine::render_delivery`]).
    pub fn render(&self, item: &OutboxItem) -> Result<Vec<u8>, String> {
        self.engine.render_delivery(item)
    }

    async fn post(
        &self,
        url: &str,
        pin: Option<&str>,
        item: &OutboxItem,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<(u16, Bytes), Attempt> {
        let uri: hyper::Uri = url.parse().map_err(|e| Attempt::Connect(format!("{url}: {e}")))?;
        let host = uri
            .host()
            .ok_or_else(|| Attempt::Connect(format!("{url}: no host")))?
            .trim_matches(['[', ']'])
            .to_string();
        let port = uri.port_u16().unwrap_or(443);
        // A pinned connection is pooled apart: it was checked against that pin.
        let key = format!("{host}:{port}#{}", pin.unwrap_or(""));
        let mut sender = match self.idle_connection(&key).await {
            Some(sender) => sender,
            None => self.connect(&host, port, pin).await?,
        };
        // Origin form (RFC 9112 §3.2.1): on a direct connection the request line has the path.
        let target = uri.path_and_query().map_or("/", |p| p.as_str());
        let request = hyper::Request::post(target)
            .header(hyper::header::HOST, format!("{host}:{port}"))
            .header(hyper::header::CONTENT_TYPE, content_type)
            .header("x-liandong-transfer-id", &item.transfer_id)
            .header("x-liandong-kind", item.kind.as_str())
            .header("x-liandong-delivery", item.id.to_string())
            .header("x-liandong-attempt", (item.attempts + 1).to_string())
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| Attempt::Http(e.to_string()))?;
        let response =
            sender.send_request(request).await.map_err(|e| Attempt::Http(e.to_string()))?;
        let status = response.status().as_u16();
        let answer = response
            .into_body()
            .collect()
            .await
            .map_err(|e| Attempt::Http(e.to_string()))?
            .to_bytes();
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

    async fn connect(
        &self,
        host: &str,
        port: u16,
        pin: Option<&str>,
    ) -> Result<SendRequest<Full<Bytes>>, Attempt> {
        let tcp = tokio::net::TcpStream::connect((host, port))
            .await
            .map_err(|e| Attempt::Connect(format!("{host}:{port}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| Attempt::Connect(format!("{host}: {e}")))?;
        let connector = tokio_rustls::TlsConnector::from(self.tls.current_client());
        let tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| Attempt::Connect(format!("TLS with {host}:{port}: {e}")))?;
        if let Some(pin) = pin {
            let presented = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|leaf| key_sha256(leaf));
            let wanted = pin.replace(':', "").to_ascii_lowercase();
            if presented.as_deref() != Some(wanted.as_str()) {
                return Err(Attempt::Connect(format!(
                    "TLS with {host}:{port}: the server's key (sha256 {}) is not the one pinned for it (server_key_sha256 {wanted})",
                    presented.unwrap_or_default()
                )));
            }
        }
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| Attempt::Connect(e.to_string()))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }
}

/// The SHA-256 (hex) of a certificate's public key (SubjectPublicKeyInfo), as a pin names it.
fn key_sha256(certificate: &[u8]) -> String {
    match x509_parser::parse_x509_certificate(certificate) {
        Ok((_, cert)) => crate::model::digest::sha256_hex(cert.public_key().raw),
        Err(_) => String::new(),
    }
}

/// The delay before retry `attempts` (1 = the first retry): `initial × 2^(attempts−1)`, capped,
/// with ±20 % jitter so that retries of many items do not arrive together.
pub fn backoff(settings: &Settings, attempts: i64, salt: i64) -> Duration {
    let exponent = u32::try_from(attempts.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
    let base = settings
        .initial_backoff
        .saturating_mul(2u32.saturating_pow(exponent))
        .min(settings.max_backoff);
    // A cheap, deterministic spread from the item id and attempt count.
    let spread = ((salt.wrapping_mul(0x9E37_79B9) ^ attempts.wrapping_mul(0x85EB_CA6B))
        .rem_euclid(41)
        - 20) as f64
        / 100.0;
    base.mul_f64(1.0 + spread).min(settings.max_backoff)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(status: u16, receipt: Option<ReceiptKind>) -> Attempt {
        Attempt::Answered { status, receipt, message: "m".into() }
    }

    // What a deliverer remembers of the items it took (on SQLite its leases, held in memory).

    #[test]
    fn a_taken_item_is_remembered_until_a_second_after_its_release() {
        let mut taken = TakenItems::default();
        let start = Instant::now();
        taken.take("330200/12345", [1, 2]);
        assert_eq!(taken.out_to("330200/12345"), 2);
        taken.release("330200/12345", 1, start);
        assert_eq!(taken.out_to("330200/12345"), 1);
        // Released a moment ago: a read that began before it still skips it.
        taken.forget_old(start + Duration::from_millis(500));
        assert_eq!(taken.remembered(), 2);
        taken.forget_old(start + Duration::from_secs(1));
        assert_eq!(taken.remembered(), 1, "the released item is forgotten, the one out is not");
        taken.release("330200/12345", 2, start + Duration::from_secs(1));
        taken.forget_old(start + Duration::from_secs(2));
        assert_eq!((taken.remembered(), taken.out_to("330200/12345")), (0, 0));
    }

    #[test]
    fn releasing_what_was_not_taken_here_remembers_nothing() {
        // A release of an item this deliverer never took (nor holds any longer) is a no-op.
        let mut taken = TakenItems::default();
        let start = Instant::now();
        for id in 0..1000 {
            taken.release("330200/12345", id, start);
        }
        assert_eq!(taken.remembered(), 0);
        assert!(taken.released.is_empty());
        assert_eq!(taken.out_to("330200/12345"), 0);
        // Nor does a second release of an item already released.
        taken.take("330200/12345", [7]);
        taken.release("330200/12345", 7, start);
        taken.release("330200/12345", 7, start);
        assert_eq!((taken.released.len(), taken.out_to("330200/12345")), (1, 0));
    }

    // The retry table, one test per row.

    #[test]
    fn the_success_receipt_delivers() {
        assert_eq!(verdict(&Attempt::Delivered), Verdict::Delivered);
    }

    #[test]
    fn a_document_the_destination_cannot_take_is_permanent() {
        assert_eq!(
            verdict(&Attempt::Unrenderable("MBQH: expected a six-digit region code".into())),
            Verdict::Permanent
        );
    }

    #[test]
    fn the_invalid_receipt_is_permanent_whatever_the_status() {
        for status in [200, 400, 422, 500] {
            assert_eq!(
                verdict(&answered(status, Some(ReceiptKind::Invalid))),
                Verdict::Permanent,
                "{status}"
            );
        }
    }

    #[test]
    fn too_large_is_permanent() {
        assert_eq!(verdict(&answered(413, None)), Verdict::Permanent);
    }

    #[test]
    fn busy_is_retried() {
        assert_eq!(verdict(&answered(429, Some(ReceiptKind::Busy))), Verdict::Retry);
        assert_eq!(verdict(&answered(503, Some(ReceiptKind::Busy))), Verdict::Retry);
        assert_eq!(verdict(&answered(429, None)), Verdict::Retry);
    }

    #[test]
    fn refused_is_retried() {
        assert_eq!(verdict(&answered(409, Some(ReceiptKind::Refused))), Verdict::Retry);
    }

    #[test]
    fn a_success_receipt_with_an_error_status_is_retried() {
        assert_eq!(verdict(&answered(500, Some(ReceiptKind::Success))), Verdict::Retry);
    }

    #[test]
    fn an_answer_in_no_receipt_form_is_retried() {
        for status in [200, 404, 500, 502] {
            assert_eq!(verdict(&answered(status, None)), Verdict::Retry, "{status}");
        }
    }

    #[test]
    fn transport_failures_are_retried() {
        for attempt in [
            Attempt::Connect("refused".into()),
            Attempt::Http("connection reset".into()),
            Attempt::Timeout(Duration::from_secs(10)),
            Attempt::NoUrl("330200/12345".into()),
        ] {
            assert_eq!(verdict(&attempt), Verdict::Retry, "{attempt}");
        }
    }

    #[test]
    fn backoff_keeps_sub_second_precision() {
        let settings =
            Settings { initial_backoff: Duration::from_millis(1500), ..Settings::default() };
        let first = backoff(&settings, 1, 3);
        assert!(
            first >= Duration::from_millis(1200) && first <= Duration::from_millis(1800),
            "{first:?}"
        );
        assert_ne!(first.subsec_millis(), 0, "{first:?}: not rounded to whole seconds");
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let settings = Settings::default();
        for attempts in 1..20 {
            let d = backoff(&settings, attempts, 7).as_secs_f64();
            let base = (2f64.powi(attempts as i32 - 1)).min(300.0);
            assert!(
                d >= base * 0.8 - 1e-9 && d <= (base * 1.2).min(300.0) + 1e-9,
                "{attempts}: {d}"
            );
        }
    }
}
