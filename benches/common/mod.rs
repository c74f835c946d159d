//! What the engine benchmarks share: a configuration with only what must be said, an engine
//! over a store, percentiles, and the process's resident memory. (Each bench includes this
//! file with `#[path]`; not every bench uses every part.)
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use liandong::config::Config;
use liandong::engine::Engine;
use liandong::formats::Registry;
use liandong::store::Store;

/// A configuration with only what must be said.
pub const CONFIG: &str = r#"
[listen]
https = "127.0.0.1:0"
[tls]
ca = "ca.pem"
cert = "server.pem"
key = "server-key.pem"
client_cert = "gateway.pem"
client_key = "gateway-key.pem"
"#;

/// An engine over `store`, configured by [`CONFIG`] and `more` (agencies, endpoints).
pub fn engine_with(store: &Store, more: &str) -> Engine {
    Engine::new(
        store.clone(),
        Arc::new(Registry::builtin()),
        Arc::new(Config::parse("bench.toml", &format!("{CONFIG}{more}")).unwrap()),
    )
}

pub fn resident_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

pub fn percentiles(mut samples: Vec<Duration>) -> String {
    samples.sort();
    let at =
        |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1000.0;
    format!(
        "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} calls)",
        at(0.5),
        at(0.99),
        at(1.0),
        samples.len()
    )
}
