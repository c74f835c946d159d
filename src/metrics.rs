//! A few counters and the Prometheus text the admin listener serves.
//!
//! Counters are process-wide atomics; gauges that live in the store (transfers by state, the
//! delivery backlog, dead letters) are read from it when `/metrics` is scraped.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Process-wide counters.
#[derive(Debug, Default)]
pub struct Counters {
    pub submissions: AtomicU64,
    pub status_updates: AtomicU64,
    /// Refusals by reason (`refuse`).
    pub refusals: std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>>,
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

/// Renders the Prometheus text exposition.
pub fn render(states: &[(String, i64)], outbox: &[(String, i64)], unreachable: &[String]) -> String {
    let c = counters();
    let mut out = String::with_capacity(2048);
    let counter = |out: &mut String, name: &str, help: &str, value: &AtomicU64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}", value.load(Ordering::Relaxed));
    };
    counter(&mut out, "liandong_submissions_total", "Transfers submitted (new and resent).", &c.submissions);
    counter(&mut out, "liandong_status_updates_total", "Status updates applied or repeated.", &c.status_updates);
    let _ = writeln!(out, "# HELP liandong_refusals_total Requests refused, by reason.\n# TYPE liandong_refusals_total counter");
    if let Ok(by_reason) = c.refusals.lock() {
        for (reason, n) in by_reason.iter() {
            let _ = writeln!(out, "liandong_refusals_total{{reason=\"{reason}\"}} {n}");
        }
    }
    counter(&mut out, "liandong_tls_reloads_total", "TLS material reloaded (files changed or SIGHUP).", &c.tls_reloads);
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
    counter(&mut out, "liandong_records_written_total", "Shared dataset records written (new versions).", &c.records_written);
    counter(&mut out, "liandong_deliveries_total", "Deliveries confirmed by a native receipt.", &c.deliveries_ok);
    counter(&mut out, "liandong_delivery_failures_total", "Delivery attempts that failed.", &c.deliveries_failed);
    counter(&mut out, "liandong_dead_letters_total", "Deliveries given up as dead letters.", &c.dead_letters);
    counter(&mut out, "liandong_escalations_total", "Missed deadlines escalated.", &c.escalations);
    counter(&mut out, "liandong_tls_handshake_failures_total", "TLS handshakes that failed.", &c.tls_handshake_failures);
    counter(&mut out, "liandong_rate_limited_total", "Calls refused over a rate limit.", &c.rate_limited);
    let _ = writeln!(out, "# HELP liandong_transfers Transfers by state.\n# TYPE liandong_transfers gauge");
    for (state, n) in states {
        let _ = writeln!(out, "liandong_transfers{{state=\"{state}\"}} {n}");
    }
    let _ = writeln!(out, "# HELP liandong_outbox Deliveries by status (pending is the backlog).\n# TYPE liandong_outbox gauge");
    for (status, n) in outbox {
        let _ = writeln!(out, "liandong_outbox{{status=\"{status}\"}} {n}");
    }
    let _ = writeln!(out, "# HELP liandong_endpoint_unreachable Destinations failing for longer than delivery.unreachable_after.\n# TYPE liandong_endpoint_unreachable gauge");
    for endpoint in unreachable {
        let _ = writeln!(out, "liandong_endpoint_unreachable{{endpoint=\"{endpoint}\"}} 1");
    }
    out
}
