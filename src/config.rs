//! The gateway's configuration: one TOML file of plain data (`liandong serve --config FILE`).
//!
//! Every key has a doc comment here and in `docs/CONFIG.md`; unknown keys are refused, so a
//! misspelt key is an error naming it rather than a setting silently ignored. Relative paths
//! are taken from the config file's folder. Secrets and addresses may come from the
//! environment instead (`LIANDONG_STORE_URL`, `LIANDONG_HTTPS`, `LIANDONG_ADMIN`), so one file
//! serves several replicas. [`Config::validate`] checks what serde cannot and names the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::model::EndpointId;

/// A mistake in the configuration, named by its key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {}{problem}", if key.is_empty() { String::new() } else { format!("{key}: ") })]
pub struct ConfigError {
    pub file: String,
    /// The dotted key (`delivery.max_backoff`, `endpoint[2].url`), empty for the whole file.
    pub key: String,
    pub problem: String,
}

/// The largest document a request may carry (1 MiB): the HTTPS front's body limit, and the
/// unit the body budgets are checked against.
pub const MAX_BODY: usize = 1 << 20;

/// The whole configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the gateway listens.
    pub listen: Listen,
    /// The certificates of mutual TLS.
    pub tls: Tls,
    /// Where transfers are kept.
    #[serde(default)]
    pub store: Store,
    /// How transfers and status changes are delivered to endpoints.
    #[serde(default)]
    pub delivery: Delivery,
    /// A folder of extra format profiles and endpoint files, added to the built-in ones.
    #[serde(default)]
    pub profiles: Option<PathBuf>,
    /// What each partner agency may do (deny by default): `[[agency]]` entries.
    #[serde(default, rename = "agency")]
    pub agencies: Vec<crate::security::policy::AgencyGrant>,
    /// The linkage offices (联动办, `liandong://office/NAME`): their regions and rights, like an
    /// agency's, plus `decide_disputes` (`docs/LINKAGE.md`). `[[office]]` entries.
    #[serde(default, rename = "office")]
    pub offices: Vec<crate::security::policy::AgencyGrant>,
    /// The linkage defaults (`linkage.md`): `dispute_within`, `urge_interval`.
    #[serde(default)]
    pub linkage: Linkage,
    /// The assessment figures: how many transfers' facts each replica keeps in memory.
    #[serde(default)]
    pub figures: Figures,
    /// Rate limits per identity class and kind of call (`docs/CONFIG.md`).
    #[serde(default)]
    pub limits: crate::security::ratelimit::LimitsConfig,
    /// Per-endpoint settings: where to deliver, deadline overrides.
    #[serde(default, rename = "endpoint")]
    pub endpoints: Vec<EndpointSettings>,
}

/// Listener addresses.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    /// The mutual-TLS listener for endpoints: native and canonical HTTPS APIs.
    pub https: SocketAddr,
    /// The plain-HTTP admin listener: `/healthz`, `/readyz`, `/metrics`. Keep it on localhost.
    #[serde(default = "default_admin")]
    pub admin: SocketAddr,
    /// How long a client may take to send a request's headers; slower ones are cut off
    /// (slowloris).
    #[serde(default = "default_header_timeout", with = "duration")]
    pub header_timeout: Duration,
    /// How long a `Watch` stream may go without an event before it sends a heartbeat, so that
    /// a quiet stream can be told from a dead one.
    #[serde(default = "default_stream_heartbeat", with = "duration")]
    pub stream_heartbeat: Duration,
    /// Connections open at once on the HTTPS listener, counted before TLS; more are closed at
    /// once (and counted). Keep it under the process's file-descriptor limit.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Connections open at once from one source address.
    #[serde(default = "default_max_connections_per_source")]
    pub max_connections_per_source: usize,
    /// How long a request body may take to arrive, whole (a body of at most 1 MiB: 10 s is
    /// ~100 KiB/s at the least); slower ones are cut off (408).
    #[serde(default = "default_body_timeout", with = "duration")]
    pub body_timeout: Duration,
    /// Bytes of request bodies in flight, from all clients together; beyond, "busy" (503).
    #[serde(default = "default_body_budget")]
    pub body_budget: usize,
    /// Bytes of request bodies in flight from one client identity.
    #[serde(default = "default_body_budget_per_identity")]
    pub body_budget_per_identity: usize,
}

fn default_body_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_body_budget() -> usize {
    64 << 20
}

fn default_body_budget_per_identity() -> usize {
    8 << 20
}

fn default_max_connections() -> usize {
    10_000
}

fn default_max_connections_per_source() -> usize {
    1_000
}

fn default_stream_heartbeat() -> Duration {
    Duration::from_secs(15)
}

fn default_admin() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9090))
}

fn default_header_timeout() -> Duration {
    Duration::from_secs(10)
}

/// TLS files (PEM).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// The CA bundle client certificates must chain to.
    pub ca: PathBuf,
    /// The CA bundle the desks' receiving servers must chain to when the gateway delivers;
    /// `ca` when absent. Kept apart so that trusting a province's own PKI for its desk servers
    /// never lets that PKI mint client identities.
    #[serde(default)]
    pub destination_ca: Option<PathBuf>,
    /// The server's certificate chain.
    pub cert: PathBuf,
    /// The server's private key.
    pub key: PathBuf,
    /// The certificate the gateway presents when it delivers to endpoints.
    pub client_cert: PathBuf,
    /// Its private key.
    pub client_key: PathBuf,
    /// A CRL (PEM, from `liandong certs crl`): client certificates it lists are refused.
    #[serde(default)]
    pub crl: Option<PathBuf>,
    /// How often the server certificate, the CA bundle and the CRL are checked for changes
    /// (they are also reloaded on SIGHUP).
    #[serde(default = "default_reload_check", with = "duration")]
    pub reload_check: Duration,
}

impl Tls {
    /// The files, as the security layer loads them.
    pub fn files(&self) -> crate::security::reload::TlsFiles {
        crate::security::reload::TlsFiles {
            ca: self.ca.clone(),
            destination_ca: self.destination_ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
            client_cert: self.client_cert.clone(),
            client_key: self.client_key.clone(),
            crl: self.crl.clone(),
        }
    }
}

fn default_reload_check() -> Duration {
    Duration::from_secs(5)
}

/// The store: SQLite (embedded, the default) or PostgreSQL (several replicas).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "lowercase")]
pub enum Store {
    Sqlite {
        /// The database file; created when missing.
        #[serde(default = "default_sqlite_path")]
        path: PathBuf,
        /// The most the database may grow to (`500MB`, `20GB`); at the limit writes are refused
        /// as when the disk is full, and nothing already stored is harmed.
        #[serde(default, with = "size")]
        max_size: Option<u64>,
    },
    Postgres {
        /// `postgres://user@host:port/db`; `LIANDONG_STORE_URL` overrides it.
        #[serde(default)]
        url: String,
        /// Connections in the pool.
        #[serde(default = "default_pool")]
        pool: u32,
    },
}

fn default_sqlite_path() -> PathBuf {
    PathBuf::from("liandong.db")
}

fn default_pool() -> u32 {
    16
}

impl Default for Store {
    fn default() -> Self {
        Store::Sqlite { path: default_sqlite_path(), max_size: None }
    }
}

/// The linkage defaults (`linkage.md`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Linkage {
    /// How long after a rejection its origin may dispute it, and how long a dispute stays open
    /// before the first receiver keeps the case (首接负责).
    #[serde(with = "duration")]
    pub dispute_within: Duration,
    /// The least time between two urges (催办) of one transfer.
    #[serde(with = "duration")]
    pub urge_interval: Duration,
}

impl Default for Linkage {
    fn default() -> Self {
        Linkage {
            dispute_within: Duration::from_secs(24 * 3600),
            urge_interval: Duration::from_secs(3600),
        }
    }
}

impl Linkage {
    /// The settings the linkage rules take.
    pub fn settings(&self) -> crate::model::linkage::Settings {
        crate::model::linkage::Settings {
            dispute_within: self.dispute_within.as_secs() as i64,
            urge_interval: self.urge_interval.as_secs() as i64,
        }
    }
}

/// The assessment figures (`GET /v1/stats`, the console's 考核 page).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Figures {
    /// The most transfers whose facts are kept in memory (about 130 MB a million), where a
    /// province's year answers in milliseconds; past it they are let go and the database
    /// aggregates every figure (seconds for a million). 0: never in memory.
    pub memory_limit: usize,
}

impl Default for Figures {
    fn default() -> Self {
        Figures { memory_limit: 5_000_000 }
    }
}

/// Delivery: retries, dead letters, liveness.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Delivery {
    /// The first retry's delay; each retry doubles it, with jitter.
    #[serde(with = "duration")]
    pub initial_backoff: Duration,
    /// The longest delay between retries.
    #[serde(with = "duration")]
    pub max_backoff: Duration,
    /// After this many attempts a delivery becomes a dead letter.
    pub dead_after_attempts: u32,
    /// After this long undelivered a delivery becomes a dead letter.
    #[serde(with = "duration")]
    pub dead_after: Duration,
    /// A destination failing for longer than this is reported `unreachable`.
    #[serde(with = "duration")]
    pub unreachable_after: Duration,
    /// How long one delivery request may take.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// How often the deadline sweeper looks for overdue transfers.
    #[serde(with = "duration")]
    pub sweep_every: Duration,
    /// Deliveries in flight to one destination at once (its connections): one slow desk holds
    /// up only its own, and a small desk is never sent more than this at a time.
    pub per_destination: usize,
    /// Deliveries taken from the queue per round, and the most of one destination this gateway
    /// holds taken and not yet recorded.
    pub batch: usize,
}

impl Default for Delivery {
    fn default() -> Self {
        Delivery {
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            dead_after_attempts: 30,
            dead_after: Duration::from_secs(24 * 3600),
            unreachable_after: Duration::from_secs(120),
            timeout: Duration::from_secs(10),
            sweep_every: Duration::from_secs(5),
            per_destination: 16,
            batch: 256,
        }
    }
}

/// One endpoint's settings. The endpoint's format comes from the registry.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointSettings {
    /// `REGION/PLATFORM`, an endpoint of the registry (`liandong endpoints`).
    pub id: String,
    /// Where its native documents are POSTed (`https://…`). Without it, the endpoint pulls.
    #[serde(default)]
    pub url: Option<String>,
    /// The SHA-256 (hex) of the desk server's public key (its SubjectPublicKeyInfo): delivery
    /// to it then also requires that exact key, whatever CA signed its certificate.
    #[serde(default)]
    pub server_key_sha256: Option<String>,
    /// Overrides the default `receive_by` of transfers to this endpoint.
    #[serde(default, with = "duration::option")]
    pub receive_within: Option<Duration>,
    /// Overrides the default `resolve_by` of transfers to this endpoint.
    #[serde(default, with = "duration::option")]
    pub resolve_within: Option<Duration>,
}

impl Config {
    /// Reads, applies environment overrides, resolves relative paths and validates.
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        let name = file.display().to_string();
        let text = std::fs::read_to_string(file).map_err(|e| ConfigError {
            file: name.clone(),
            key: String::new(),
            problem: format!("cannot read: {e}"),
        })?;
        let mut config = Config::parse(&name, &text)?;
        config.apply_env(&name, |key| std::env::var(key).ok())?;
        config.resolve_paths(file.parent().unwrap_or(Path::new(".")));
        config.validate(&name)?;
        Ok(config)
    }

    /// Parses TOML text, naming the key and the line and column of any mistake.
    pub fn parse(file: &str, text: &str) -> Result<Config, ConfigError> {
        let fail =
            |key: String, problem: String| ConfigError { file: file.to_string(), key, problem };
        // "line L, column C: message", where the parser says where.
        let placed = |error: &toml::de::Error| match error.span() {
            Some(span) => {
                let before = &text[..span.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
                format!("line {line}, column {column}: {}", error.message())
            }
            None => error.message().to_string(),
        };
        let deserializer =
            toml::Deserializer::parse(text).map_err(|e| fail(String::new(), placed(&e)))?;
        serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let key = e.path().to_string();
            fail(if key == "." { String::new() } else { key }, placed(&e.into_inner()))
        })
    }

    /// Environment overrides: `LIANDONG_HTTPS`, `LIANDONG_ADMIN`, `LIANDONG_STORE_URL`.
    pub fn apply_env(
        &mut self,
        file: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        let fail = |key: &str, problem: String| ConfigError {
            file: file.to_string(),
            key: key.to_string(),
            problem,
        };
        if let Some(addr) = env("LIANDONG_HTTPS") {
            self.listen.https = addr
                .parse()
                .map_err(|e| fail("LIANDONG_HTTPS", format!("expected host:port, {e}")))?;
        }
        if let Some(addr) = env("LIANDONG_ADMIN") {
            self.listen.admin = addr
                .parse()
                .map_err(|e| fail("LIANDONG_ADMIN", format!("expected host:port, {e}")))?;
        }
        if let Some(url) = env("LIANDONG_STORE_URL") {
            self.store = Store::Postgres {
                url,
                pool: match &self.store {
                    Store::Postgres { pool, .. } => *pool,
                    Store::Sqlite { .. } => default_pool(),
                },
            };
        }
        Ok(())
    }

    fn resolve_paths(&mut self, base: &Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        for p in [
            &mut self.tls.ca,
            &mut self.tls.cert,
            &mut self.tls.key,
            &mut self.tls.client_cert,
            &mut self.tls.client_key,
        ] {
            resolve(p);
        }
        for p in [&mut self.tls.crl, &mut self.tls.destination_ca].into_iter().flatten() {
            resolve(p);
        }
        if let Store::Sqlite { path, .. } = &mut self.store {
            resolve(path);
        }
        if let Some(p) = &mut self.profiles {
            resolve(p);
        }
    }

    /// Checks what the types cannot: endpoint ids, URLs, durations that make sense, files.
    pub fn validate(&self, file: &str) -> Result<(), ConfigError> {
        let fail = |key: String, problem: String| {
            Err(ConfigError { file: file.to_string(), key, problem })
        };
        for (key, path) in [
            ("tls.ca", &self.tls.ca),
            ("tls.cert", &self.tls.cert),
            ("tls.key", &self.tls.key),
            ("tls.client_cert", &self.tls.client_cert),
            ("tls.client_key", &self.tls.client_key),
        ] {
            if !path.is_file() {
                return fail(key.to_string(), format!("no such file: {}", path.display()));
            }
        }
        for (key, path) in
            [("tls.crl", &self.tls.crl), ("tls.destination_ca", &self.tls.destination_ca)]
        {
            if let Some(path) = path.as_ref().filter(|p| !p.is_file()) {
                return fail(key.into(), format!("no such file: {}", path.display()));
            }
        }
        if let Store::Postgres { url, pool } = &self.store {
            if !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
                return fail(
                    "store.url".into(),
                    "expected postgres://… (or set LIANDONG_STORE_URL)".into(),
                );
            }
            if *pool == 0 {
                return fail("store.pool".into(), "expected at least 1".into());
            }
        }
        if self.listen.max_connections == 0 {
            return fail("listen.max_connections".into(), "expected at least 1".into());
        }
        if self.listen.max_connections_per_source == 0
            || self.listen.max_connections_per_source > self.listen.max_connections
        {
            return fail(
                "listen.max_connections_per_source".into(),
                format!("expected 1 to listen.max_connections ({})", self.listen.max_connections),
            );
        }
        // A body of the largest size (1 MiB) must fit in one identity's share, and a share in
        // the whole budget, or such bodies would be "busy" for ever.
        let largest = MAX_BODY;
        if self.listen.body_budget_per_identity < largest {
            return fail(
                "listen.body_budget_per_identity".into(),
                format!("expected at least {largest} bytes (one 1 MiB body)"),
            );
        }
        if self.listen.body_budget < self.listen.body_budget_per_identity {
            return fail(
                "listen.body_budget".into(),
                format!(
                    "expected at least listen.body_budget_per_identity ({})",
                    self.listen.body_budget_per_identity
                ),
            );
        }
        let d = &self.delivery;
        if d.initial_backoff.is_zero() || d.initial_backoff > d.max_backoff {
            return fail(
                "delivery.initial_backoff".into(),
                "expected more than 0 and at most delivery.max_backoff".into(),
            );
        }
        if d.dead_after_attempts == 0 {
            return fail("delivery.dead_after_attempts".into(), "expected at least 1".into());
        }
        if !(1..=1024).contains(&d.per_destination) {
            return fail("delivery.per_destination".into(), "expected 1 to 1024".into());
        }
        if !(1..=2000).contains(&d.batch) {
            return fail("delivery.batch".into(), "expected 1 to 2000".into());
        }
        if self.listen.header_timeout.is_zero() {
            return fail("listen.header_timeout".into(), "expected more than 0".into());
        }
        if d.timeout.is_zero() {
            return fail("delivery.timeout".into(), "expected more than 0".into());
        }
        if d.sweep_every.is_zero() {
            return fail("delivery.sweep_every".into(), "expected more than 0".into());
        }
        if let Err((key, problem)) = self.limits.validate() {
            return fail(key, problem);
        }
        let mut names = std::collections::HashSet::new();
        for (i, agency) in self.agencies.iter().enumerate() {
            if let Err((key, problem)) = agency.validate() {
                return fail(format!("agency[{i}].{key}"), problem);
            }
            if !names.insert(&agency.name) {
                return fail(format!("agency[{i}].name"), format!("{} appears twice", agency.name));
            }
        }
        let mut names = std::collections::HashSet::new();
        for (i, office) in self.offices.iter().enumerate() {
            if let Err((key, problem)) = office.validate() {
                return fail(format!("office[{i}].{key}"), problem);
            }
            if !names.insert(&office.name) {
                return fail(format!("office[{i}].name"), format!("{} appears twice", office.name));
            }
        }
        if self.linkage.dispute_within.is_zero() || self.linkage.urge_interval.is_zero() {
            return fail(
                "linkage".into(),
                "dispute_within and urge_interval: expected more than 0".into(),
            );
        }
        let mut seen = std::collections::HashSet::new();
        for (i, endpoint) in self.endpoints.iter().enumerate() {
            if let Err(e) = endpoint.id.parse::<EndpointId>() {
                return fail(format!("endpoint[{i}].id"), e);
            }
            if !seen.insert(&endpoint.id) {
                return fail(format!("endpoint[{i}].id"), format!("{} appears twice", endpoint.id));
            }
            // A transfer's deadlines are times to the second (canonical.md): a deadline rule
            // finer than that could not be kept as written.
            for (key, within) in [
                ("receive_within", endpoint.receive_within),
                ("resolve_within", endpoint.resolve_within),
            ] {
                if let Some(within) = within.filter(|w| w.subsec_nanos() != 0 || w.is_zero()) {
                    return fail(
                        format!("endpoint[{i}].{key}"),
                        format!("expected whole seconds, at least 1s (deadlines are kept to the second), got {within:?}"),
                    );
                }
            }
            if let Some(pin) = &endpoint.server_key_sha256 {
                let hex = pin.replace(':', "");
                if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                    return fail(
                        format!("endpoint[{i}].server_key_sha256"),
                        format!("expected 64 hex digits (the SHA-256 of the server's public key), got {pin:?}"),
                    );
                }
            }
            if let Some(url) = &endpoint.url {
                if !url.starts_with("https://") || url.parse::<hyper::Uri>().is_err() {
                    return fail(
                        format!("endpoint[{i}].url"),
                        format!("expected an https:// URL, got {url:?}"),
                    );
                }
            }
        }
        Ok(())
    }

    /// The settings of one endpoint, if the file has any.
    pub fn endpoint(&self, id: &EndpointId) -> Option<&EndpointSettings> {
        let id = id.to_string();
        self.endpoints.iter().find(|e| e.id == id)
    }
}

/// Durations written as `500ms`, `30s`, `10m`, `24h`, `7d`.
/// Sizes: `500MB`, `20GB`, `1024KB`, or bytes.
pub mod size {
    use serde::{Deserialize, Deserializer};

    pub fn parse(text: &str) -> Result<u64, String> {
        let text = text.trim();
        let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let n: u64 = number
            .parse()
            .map_err(|_| format!("expected a size such as 500MB or 20GB, got {text:?}"))?;
        let unit = match unit.trim() {
            "" | "B" => 1,
            "KB" => 1 << 10,
            "MB" => 1 << 20,
            "GB" => 1 << 30,
            _ => return Err(format!("expected a size such as 500MB or 20GB, got {text:?}")),
        };
        n.checked_mul(unit).ok_or_else(|| format!("size too large: {text:?}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|t| parse(&t))
            .transpose()
            .map_err(serde::de::Error::custom)
    }
}

pub mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn parse(text: &str) -> Result<Duration, String> {
        let text = text.trim();
        let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let n: u64 = number
            .parse()
            .map_err(|_| format!("expected a duration such as 30s, 10m, 24h; got {text:?}"))?;
        let unit_ms = match unit {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(format!("expected a duration such as 30s, 10m, 24h; got {text:?}")),
        };
        n.checked_mul(unit_ms)
            .map(Duration::from_millis)
            .ok_or_else(|| format!("duration too long: {text:?}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }

    /// A duration as the configuration writes it, in the largest unit it is a whole number of
    /// (hours at most, as people write `24h`): `parse(&format(d)) == d` to the millisecond.
    pub fn format(duration: Duration) -> String {
        let ms = duration.as_millis();
        for (unit, size) in [("h", 3_600_000), ("m", 60_000), ("s", 1000)] {
            if ms >= size && ms.is_multiple_of(size) {
                return format!("{}{unit}", ms / size);
            }
        }
        format!("{ms}ms")
    }

    pub mod option {
        use super::*;

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            parse(&String::deserialize(d)?).map(Some).map_err(serde::de::Error::custom)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[listen]
https = "127.0.0.1:8443"
[tls]
ca = "ca.pem"
cert = "server.pem"
key = "server-key.pem"
client_cert = "gateway.pem"
client_key = "gateway-key.pem"
"#;

    #[test]
    fn defaults_fill_what_is_not_given() {
        let config = Config::parse("t.toml", MINIMAL).unwrap();
        assert!(matches!(config.store, Store::Sqlite { .. }));
        assert_eq!(config.delivery.max_backoff, Duration::from_secs(300));
        assert_eq!(config.listen.admin.port(), 9090);
    }

    #[test]
    fn unknown_and_bad_keys_are_named() {
        let err = Config::parse("t.toml", &format!("{MINIMAL}\n[delivery]\nmax_backof = \"1m\"\n"))
            .unwrap_err();
        assert_eq!(err.key, "delivery.max_backof");
        assert!(err.problem.contains("unknown field `max_backof`"), "{err}");
        let err =
            Config::parse("t.toml", &format!("{MINIMAL}\n[delivery]\nmax_backoff = \"soon\"\n"))
                .unwrap_err();
        assert_eq!(err.key, "delivery.max_backoff");
        let err =
            Config::parse("t.toml", &MINIMAL.replace("127.0.0.1:8443", "nowhere")).unwrap_err();
        assert_eq!(err.key, "listen.https");
    }

    /// A TOML syntax error, and a value of the wrong type, say the line and column.
    #[test]
    fn mistakes_say_where_they_are() {
        let err = Config::parse("t.toml", &format!("{MINIMAL}\n[delivery]\ntimeout = 10.s\n"))
            .unwrap_err();
        assert!(err.to_string().starts_with("t.toml: line 12, column 14: "), "{err}");
        let err = Config::parse("t.toml", &format!("{MINIMAL}\n[listen]\n")).unwrap_err();
        assert!(
            err.problem.starts_with("line 11, column 2: duplicate key"),
            "a table twice: {err}"
        );
        let err =
            Config::parse("t.toml", &format!("{MINIMAL}\n[delivery]\ntimeout = 10\n")).unwrap_err();
        assert_eq!(err.key, "delivery.timeout");
        assert!(err.problem.starts_with("line 12, column 11: "), "{err}");
    }

    #[test]
    fn environment_overrides() {
        let mut config = Config::parse("t.toml", MINIMAL).unwrap();
        let env = |k: &str| match k {
            "LIANDONG_STORE_URL" => Some("postgres://127.0.0.1:5432/test".to_string()),
            "LIANDONG_HTTPS" => Some("0.0.0.0:443".to_string()),
            _ => None,
        };
        config.apply_env("t.toml", env).unwrap();
        assert!(matches!(&config.store, Store::Postgres { url, .. } if url.ends_with("/test")));
        assert_eq!(config.listen.https.port(), 443);
    }

    #[test]
    fn durations() {
        assert_eq!(duration::parse("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(duration::parse("24h").unwrap(), Duration::from_secs(86_400));
        assert!(duration::parse("5 minutes").is_err());
        assert!(duration::parse("-1s").is_err());
        for d in ["1s", "5m", "24h", "1500ms", "90s", "0ms"] {
            assert_eq!(duration::format(duration::parse(d).unwrap()), d);
        }
    }
}
