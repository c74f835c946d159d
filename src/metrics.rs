//! Counters, latency histograms and the Prometheus text the admin listener serves.
//!
//! Counters and histograms are process-wide (every part of the gateway adds to them without
//! being handed a registry); gauges that live in the store (transfers by state, the delivery
//! backlog and its age, dead letters) are read from it when `/metrics` is scraped. Labels are
//! bounded: endpoints come from the registry, routes from the route table (anything else is
//! `other`), reasons from the refusal model and the connection layer. It depends on no other part of
//! the gateway, so that every part may count.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Counts by a label set (rendered once, `endpoint="330200/110"`).
#[derive(Debug, Default)]
pub struct Labelled(Mutex<BTreeMap<String, u64>>);

impl Labelled {
    pub fn inc(&self, labels: String) {
        if let Ok(mut counts) = self.0.lock() {
            *counts.entry(labels).or_default() += 1;
        }
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        if let Ok(counts) = self.0.lock() {
            for (labels, n) in counts.iter() {
                let _ = writeln!(out, "{name}{{{labels}}} {n}");
            }
        }
    }
}

/// The upper bounds of the latency buckets, in seconds: from half a millisecond (a commit) to
/// ten seconds (a delivery's timeout).
const BOUNDS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// One latency histogram: cumulative only when rendered.
#[derive(Debug, Default)]
struct Histogram {
    buckets: [u64; BOUNDS.len()],
    count: u64,
    sum: f64,
}

/// Latency histograms by a label set.
#[derive(Debug, Default)]
pub struct Histograms(Mutex<BTreeMap<String, Histogram>>);

impl Histograms {
    /// Most label sets one histogram family keeps; later ones are counted under `other`.
    const MAX_SERIES: usize = 200;

    pub fn observe(&self, labels: String, took: Duration) {
        let seconds = took.as_secs_f64();
        let Ok(mut series) = self.0.lock() else { return };
        let labels = if series.len() >= Self::MAX_SERIES && !series.contains_key(&labels) {
            "route=\"other\"".to_string()
        } else {
            labels
        };
        let histogram = series.entry(labels).or_default();
        if let Some(bucket) = BOUNDS.iter().position(|bound| seconds <= *bound) {
            histogram.buckets[bucket] += 1;
        }
        histogram.count += 1;
        histogram.sum += seconds;
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let Ok(series) = self.0.lock() else { return };
        for (labels, h) in series.iter() {
            let sep = if labels.is_empty() { "" } else { "," };
            let mut cumulative = 0;
            for (bound, n) in BOUNDS.iter().zip(h.buckets) {
                cumulative += n;
                let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}");
            }
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", h.count);
            let braced = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
            let _ = writeln!(out, "{name}_sum{braced} {}", h.sum);
            let _ = writeln!(out, "{name}_count{braced} {}", h.count);
        }
    }
}

/// `endpoint="…"`, the label of a per-endpoint series.
pub fn endpoint_label(endpoint: &str) -> String {
    format!("endpoint=\"{endpoint}\"")
}

/// Process-wide counters.
#[derive(Debug, Default)]
pub struct Counters {
    pub submissions: AtomicU64,
    pub status_updates: AtomicU64,
    /// Refusals by reason (`refuse`).
    pub refusals: Mutex<BTreeMap<&'static str, u64>>,
    pub deliveries_ok: AtomicU64,
    pub deliveries_failed: AtomicU64,
    pub dead_letters: AtomicU64,
    pub escalations: AtomicU64,
    pub tls_handshake_failures: AtomicU64,
    pub rate_limited: AtomicU64,
    /// Dataset records written (new versions, not repetitions).
    pub records_written: AtomicU64,
    /// TLS material reloaded, and reloads that failed (the old material kept).
    pub tls_reloads: AtomicU64,
    pub tls_reload_failures: AtomicU64,
    /// Refusal entries the audit trail could not take during a flood.
    pub audit_dropped: AtomicU64,
    /// Per endpoint: submissions by their sender; deliveries, failed attempts and dead letters
    /// by their destination; refusals of an endpoint's calls by reason.
    pub submissions_by_endpoint: Labelled,
    pub deliveries_by_endpoint: Labelled,
    pub failures_by_endpoint: Labelled,
    pub dead_letters_by_endpoint: Labelled,
    pub refusals_by_endpoint: Labelled,
    /// Time to answer a request, by route template (or gRPC method).
    pub request_seconds: Histograms,
    /// Time of a delivery attempt (request to receipt), by destination.
    pub delivery_seconds: Histograms,
    /// Time of one group commit (its batch of writes) in the store.
    pub commit_seconds: Histograms,
}

/// The counters of this process.
pub fn counters() -> &'static Counters {
    static COUNTERS: std::sync::OnceLock<Counters> = std::sync::OnceLock::new();
    COUNTERS.get_or_init(Counters::default)
}

/// Adds one.
pub fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Adds `n`.
pub fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// Counts a refusal: `identity` (a caller acting beyond itself), `policy` (beyond its grant),
/// `transition`, `not_found`, `certificate` (no Liandong identity in it), `bad_document`.
pub fn refuse(reason: &'static str) {
    if let Ok(mut by_reason) = counters().refusals.lock() {
        *by_reason.entry(reason).or_default() += 1;
    }
}

/// Counts a refusal of an endpoint's call under both its reason and the endpoint.
pub fn refuse_endpoint(reason: &'static str, endpoint: &str) {
    refuse(reason);
    counters()
        .refusals_by_endpoint
        .inc(format!("{},reason=\"{reason}\"", endpoint_label(endpoint)));
}

/// One destination's deliveries in one outbox status (`pending` or `dead`), as the store
/// counts them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backlog {
    pub destination: String,
    pub status: &'static str,
    pub count: i64,
    /// When the oldest of them was queued (Unix seconds).
    pub oldest: i64,
}

/// What the store holds, read when `/metrics` is scraped.
#[derive(Debug, Default)]
pub struct StoreGauges {
    /// Transfers by state.
    pub states: Vec<(String, i64)>,
    /// The backlog and the dead letters by destination.
    pub outbox: Vec<Backlog>,
    /// Destinations failing for longer than `delivery.unreachable_after`.
    pub unreachable: Vec<String>,
    /// The endpoints the gateway pushes to (the others pull with `Watch`).
    pub push: std::collections::HashSet<String>,
    /// The clock, in Unix seconds, to age the backlog by.
    pub now: i64,
}

/// Renders the Prometheus text exposition.
pub fn render(gauges: &StoreGauges) -> String {
    let c = counters();
    let mut out = String::with_capacity(4096);
    let _ = writeln!(
        out,
        "# HELP liandong_build_info The running build.\n# TYPE liandong_build_info gauge\nliandong_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    let counter = |out: &mut String, name: &str, help: &str, value: &AtomicU64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
            value.load(Ordering::Relaxed)
        );
    };
    counter(
        &mut out,
        "liandong_submissions_total",
        "Transfers submitted (new and resent).",
        &c.submissions,
    );
    counter(
        &mut out,
        "liandong_status_updates_total",
        "Status updates applied or repeated.",
        &c.status_updates,
    );
    let _ = writeln!(out, "# HELP liandong_refusals_total Requests refused, by reason.\n# TYPE liandong_refusals_total counter");
    if let Ok(by_reason) = c.refusals.lock() {
        for (reason, n) in by_reason.iter() {
            let _ = writeln!(out, "liandong_refusals_total{{reason=\"{reason}\"}} {n}");
        }
    }
    counter(
        &mut out,
        "liandong_tls_reloads_total",
        "TLS material reloaded (files changed or SIGHUP).",
        &c.tls_reloads,
    );
    counter(
        &mut out,
        "liandong_tls_reload_failures_total",
        "TLS reloads that failed; the old material stayed.",
        &c.tls_reload_failures,
    );
    counter(
        &mut out,
        "liandong_audit_dropped_total",
        "Refusal entries dropped from the audit trail during a flood.",
        &c.audit_dropped,
    );
    counter(
        &mut out,
        "liandong_records_written_total",
        "Shared dataset records written (new versions).",
        &c.records_written,
    );
    counter(
        &mut out,
        "liandong_deliveries_total",
        "Deliveries confirmed by a native receipt.",
        &c.deliveries_ok,
    );
    counter(
        &mut out,
        "liandong_delivery_failures_total",
        "Delivery attempts that failed.",
        &c.deliveries_failed,
    );
    counter(
        &mut out,
        "liandong_dead_letters_total",
        "Deliveries given up as dead letters.",
        &c.dead_letters,
    );
    counter(&mut out, "liandong_escalations_total", "Missed deadlines escalated.", &c.escalations);
    counter(
        &mut out,
        "liandong_tls_handshake_failures_total",
        "TLS handshakes that failed.",
        &c.tls_handshake_failures,
    );
    counter(
        &mut out,
        "liandong_rate_limited_total",
        "Calls refused over a rate limit.",
        &c.rate_limited,
    );
    c.submissions_by_endpoint.render(
        &mut out,
        "liandong_endpoint_submissions_total",
        "Transfers submitted, by sender.",
    );
    c.deliveries_by_endpoint.render(
        &mut out,
        "liandong_endpoint_deliveries_total",
        "Deliveries confirmed, by destination.",
    );
    c.failures_by_endpoint.render(
        &mut out,
        "liandong_endpoint_delivery_failures_total",
        "Delivery attempts that failed, by destination.",
    );
    c.dead_letters_by_endpoint.render(
        &mut out,
        "liandong_endpoint_dead_letters_total",
        "Deliveries given up, by destination.",
    );
    c.refusals_by_endpoint.render(
        &mut out,
        "liandong_endpoint_refusals_total",
        "An endpoint's calls refused, by endpoint and reason.",
    );
    c.request_seconds.render(
        &mut out,
        "liandong_request_duration_seconds",
        "Time to answer a request, by route.",
    );
    c.delivery_seconds.render(
        &mut out,
        "liandong_delivery_duration_seconds",
        "Time of a delivery attempt, by destination.",
    );
    c.commit_seconds.render(
        &mut out,
        "liandong_commit_duration_seconds",
        "Time of one group commit in the store.",
    );
    let _ = writeln!(
        out,
        "# HELP liandong_transfers Transfers by state.\n# TYPE liandong_transfers gauge"
    );
    for (state, n) in &gauges.states {
        let _ = writeln!(out, "liandong_transfers{{state=\"{state}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "# HELP liandong_outbox Deliveries waiting (pending: the backlog) or given up (dead), by destination and how it is delivered (push, or pull by Watch).\n# TYPE liandong_outbox gauge"
    );
    let labels = |g: &Backlog| {
        let delivery = if gauges.push.contains(&g.destination) { "push" } else { "pull" };
        format!("status=\"{}\",endpoint=\"{}\",delivery=\"{delivery}\"", g.status, g.destination)
    };
    for g in &gauges.outbox {
        let _ = writeln!(out, "liandong_outbox{{{}}} {}", labels(g), g.count);
    }
    let _ = writeln!(
        out,
        "# HELP liandong_outbox_oldest_seconds How long the oldest delivery of each destination has waited (pending) or been given up (dead).\n# TYPE liandong_outbox_oldest_seconds gauge"
    );
    for g in &gauges.outbox {
        let _ = writeln!(
            out,
            "liandong_outbox_oldest_seconds{{{}}} {}",
            labels(g),
            (gauges.now - g.oldest).max(0)
        );
    }
    let _ = writeln!(out, "# HELP liandong_endpoint_unreachable Destinations failing for longer than delivery.unreachable_after.\n# TYPE liandong_endpoint_unreachable gauge");
    for endpoint in &gauges.unreachable {
        let _ = writeln!(out, "liandong_endpoint_unreachable{{endpoint=\"{endpoint}\"}} 1");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_renders_cumulative_buckets_its_sum_and_count() {
        let h = Histograms::default();
        h.observe("route=\"a\"".into(), Duration::from_micros(300));
        h.observe("route=\"a\"".into(), Duration::from_millis(3));
        h.observe("route=\"a\"".into(), Duration::from_secs(60));
        let mut out = String::new();
        h.render(&mut out, "x_seconds", "help");
        assert!(out.contains("x_seconds_bucket{route=\"a\",le=\"0.0005\"} 1\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{route=\"a\",le=\"0.005\"} 2\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{route=\"a\",le=\"10\"} 2\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{route=\"a\",le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_seconds_count{route=\"a\"} 3\n"), "{out}");
        let unlabelled = Histograms::default();
        unlabelled.observe(String::new(), Duration::from_millis(1));
        let mut out = String::new();
        unlabelled.render(&mut out, "y", "help");
        assert!(out.contains("y_bucket{le=\"0.001\"} 1\n") && out.contains("y_count 1\n"), "{out}");
    }

    #[test]
    fn series_past_the_cap_are_counted_as_other() {
        let h = Histograms::default();
        for n in 0..Histograms::MAX_SERIES + 5 {
            h.observe(format!("route=\"r{n}\""), Duration::from_millis(1));
        }
        let mut out = String::new();
        h.render(&mut out, "z", "help");
        assert!(out.contains("z_count{route=\"other\"} 5\n"), "{out}");
    }
}
