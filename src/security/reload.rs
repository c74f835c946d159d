//! The gateway's TLS material, reloaded while it runs: its server certificate, the CA bundle it
//! trusts and the CRL, and the client certificate it delivers with (and the bundle it trusts
//! desks' servers by), when the files change (checked every `tls.reload_check`) and on SIGHUP.
//!
//! Each new connection takes the configuration current at its handshake; established
//! connections keep the one they started with, so a reload drops nobody. A reload that fails
//! (a half-written file, a key that does not match) keeps the old material and says why, in the
//! log and in `/metrics`.

use std::collections::HashSet;
use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use rustls::{ClientConfig, ServerConfig};

use super::TlsError;
use crate::metrics::{counters, inc};
use crate::store::audit::Auditor;

/// A certificate change, for the audit trail.
fn note_change(auditor: &Auditor, action: &str, detail: serde_json::Value) {
    auditor.note(crate::store::audit::AuditEntry {
        at: time::OffsetDateTime::now_utc().unix_timestamp(),
        actor: "gateway".into(),
        action: action.into(),
        transfer_id: None,
        detail,
    });
}

/// The files, and what was loaded from them.
pub struct TlsReloader {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    crl: Option<PathBuf>,
    /// The delivery side: the bundle desks' servers must chain to, the client certificate, its key.
    destination_ca: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    current: RwLock<Arc<ServerConfig>>,
    current_client: RwLock<Arc<ClientConfig>>,
    state: Mutex<Loaded>,
    /// Bumped on every reload that took: open connections look at their peer again.
    reloads: tokio::sync::watch::Sender<u64>,
    /// Where handshake refusals are audited (set when [`TlsReloader::run`] starts).
    refusals: super::tls::RefusalAudit,
}

/// The loaded material ([`TlsReloader::certificates`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Certificates {
    /// `(which, subject, not_after)`.
    pub certificates: Vec<(String, String, i64)>,
    pub crl_next_update: Option<i64>,
    pub last_error: Option<String>,
}

/// What the current material says, for `/metrics`.
#[derive(Clone, Debug, Default)]
struct Loaded {
    /// Modification times of the files, as last loaded.
    stamps: Vec<Option<SystemTime>>,
    /// `(which, subject, not_after)` of each loaded certificate.
    expiries: Vec<(&'static str, String, i64)>,
    crl_next_update: Option<i64>,
    /// `(issuer name, serial)` of every certificate the loaded CRLs revoke.
    revoked: Arc<HashSet<(Vec<u8>, Vec<u8>)>>,
    last_error: Option<String>,
}

/// The files the gateway's TLS is made of (PEM), as the configuration names them.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The CA bundle client certificates must chain to.
    pub ca: PathBuf,
    /// The CA bundle desks' receiving servers must chain to; `ca` when absent.
    pub destination_ca: Option<PathBuf>,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub crl: Option<PathBuf>,
}

impl TlsReloader {
    /// Loads the material; a failure here stops the start.
    pub fn load(tls: &TlsFiles) -> Result<TlsReloader, TlsError> {
        let refusals = super::tls::RefusalAudit::default();
        let (ca, cert, key, crl) = (&tls.ca, &tls.cert, &tls.key, tls.crl.as_deref());
        let destination_ca = tls.destination_ca.clone().unwrap_or_else(|| tls.ca.clone());
        let reloader = TlsReloader {
            ca: ca.to_path_buf(),
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            crl: crl.map(Path::to_path_buf),
            current_client: RwLock::new(super::tls::client_config(
                &destination_ca,
                &tls.client_cert,
                &tls.client_key,
            )?),
            destination_ca,
            client_cert: tls.client_cert.clone(),
            client_key: tls.client_key.clone(),
            current: RwLock::new(super::tls::audited_server_config(
                ca,
                cert,
                key,
                crl,
                Some(refusals.clone()),
            )?),
            state: Mutex::new(Loaded::default()),
            reloads: tokio::sync::watch::Sender::new(0),
            refusals,
        };
        let loaded = reloader.describe()?;
        *reloader.state.lock().unwrap_or_else(|e| e.into_inner()) = loaded;
        Ok(reloader)
    }

    /// The configuration for the next handshake.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The configuration for the next delivery connection.
    pub fn current_client(&self) -> Arc<ClientConfig> {
        self.current_client.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn files(&self) -> Vec<&Path> {
        let mut files = vec![self.ca.as_path(), self.cert.as_path(), self.key.as_path()];
        files.extend(self.crl.as_deref());
        files.extend([
            self.destination_ca.as_path(),
            self.client_cert.as_path(),
            self.client_key.as_path(),
        ]);
        files
    }

    fn stamps(&self) -> Vec<Option<SystemTime>> {
        self.files().iter().map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok()).collect()
    }

    /// Reads what the files say (expiries, the CRL's next update) and their stamps.
    fn describe(&self) -> Result<Loaded, TlsError> {
        let mut expiries: Vec<(&'static str, String, i64)> = Vec::new();
        // The leaf of each chain file is the server's or the client's own; what follows it is
        // an intermediate CA, whichever file brought it.
        for (which, path) in
            [("server", &self.cert), ("client", &self.client_cert), ("ca", &self.ca)]
        {
            for (i, der) in super::tls::certificates(path)?.iter().enumerate() {
                if let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) {
                    let which = if i > 0 && which != "ca" { "intermediate" } else { which };
                    let entry =
                        (which, cert.subject().to_string(), cert.validity().not_after.timestamp());
                    if !expiries.contains(&entry) {
                        expiries.push(entry);
                    }
                }
            }
        }
        let crls = match &self.crl {
            Some(path) => super::tls::crls(path)?,
            None => Vec::new(),
        };
        let parsed: Vec<_> = crls
            .iter()
            .filter_map(|der| x509_parser::parse_x509_crl(der).ok().map(|(_, crl)| crl))
            .collect();
        let crl_next_update =
            parsed.iter().filter_map(|crl| crl.next_update().map(|t| t.timestamp())).min();
        let revoked = parsed
            .iter()
            .flat_map(|crl| {
                let issuer = crl.issuer().as_raw().to_vec();
                crl.iter_revoked_certificates()
                    .map(move |r| (issuer.clone(), r.raw_serial().to_vec()))
            })
            .collect();
        Ok(Loaded {
            stamps: self.stamps(),
            expiries,
            crl_next_update,
            revoked: Arc::new(revoked),
            last_error: None,
        })
    }

    /// Loads the files again. On failure the old material stays; the error is logged and
    /// counted. Returns whether the new material is in use.
    pub fn reload(&self, why: &str, auditor: &Auditor) -> bool {
        let result = super::tls::audited_server_config(
            &self.ca,
            &self.cert,
            &self.key,
            self.crl.as_deref(),
            Some(self.refusals.clone()),
        )
        .and_then(|config| {
            let client = super::tls::client_config(
                &self.destination_ca,
                &self.client_cert,
                &self.client_key,
            )?;
            Ok((config, client))
        })
        .and_then(|(config, client)| self.describe().map(|loaded| (config, client, loaded)));
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok((config, client, loaded)) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = config;
                *self.current_client.write().unwrap_or_else(|e| e.into_inner()) = client;
                let expiries: Vec<String> =
                    loaded.expiries.iter().map(|(w, s, t)| format!("{w} {s} until {t}")).collect();
                *state = loaded;
                self.reloads.send_modify(|n| *n += 1);
                inc(&counters().tls_reloads);
                tracing::info!(
                    why,
                    "reloaded the TLS material (server certificate, CA bundle, CRL, delivery client certificate)"
                );
                note_change(
                    auditor,
                    "tls.reloaded",
                    serde_json::json!({"why": why, "certificates": expiries}),
                );
                true
            }
            Err(e) => {
                // Do not try the same files again until they change once more.
                state.stamps = self.stamps();
                state.last_error = Some(e.to_string());
                inc(&counters().tls_reload_failures);
                tracing::warn!(why, error = %e, "TLS reload failed; keeping the material loaded before");
                note_change(
                    auditor,
                    "tls.reload_failed",
                    serde_json::json!({"why": why, "error": e.to_string()}),
                );
                false
            }
        }
    }

    /// Resolves when a connection's client certificate (its DER `leaf`) may no longer be used:
    /// a reload brought a CRL that revokes it, or its `notAfter` passed. The connection is then
    /// closed — certificate status is checked per connection, so a connection must not outlive
    /// its certificate's withdrawal. Never resolves for a certificate that stays good.
    pub async fn withdrawn(&self, leaf: &[u8]) -> &'static str {
        let Ok((_, cert)) = x509_parser::parse_x509_certificate(leaf) else {
            return std::future::pending().await;
        };
        let key = (cert.issuer().as_raw().to_vec(), cert.raw_serial().to_vec());
        let left = cert.validity().not_after.timestamp()
            - time::OffsetDateTime::now_utc().unix_timestamp();
        let expiry = tokio::time::sleep(Duration::from_secs(left.max(0) as u64));
        tokio::pin!(expiry);
        let mut reloads = self.reloads.subscribe();
        loop {
            if self.state.lock().unwrap_or_else(|e| e.into_inner()).revoked.contains(&key) {
                return "revoked";
            }
            tokio::select! {
                _ = &mut expiry => return "expired",
                changed = reloads.changed() => {
                    if changed.is_err() {
                        return std::future::pending().await;
                    }
                }
            }
        }
    }

    /// Whether any file changed since the last load (or failed load).
    pub fn changed(&self) -> bool {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).stamps != self.stamps()
    }

    /// Reloads when the files change (looked at every `every`) and on SIGHUP, until `stop`.
    pub async fn run(
        self: Arc<Self>,
        every: Duration,
        auditor: Auditor,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let _ = self.refusals.set(auditor.clone());
        #[cfg(unix)]
        let mut hangup =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        loop {
            #[cfg(unix)]
            let signalled = async {
                match hangup.as_mut() {
                    Some(signal) => signal.recv().await,
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let signalled = std::future::pending::<Option<()>>();
            tokio::select! {
                _ = tokio::time::sleep(every) => {
                    if self.changed() {
                        self.reload("the files changed", &auditor);
                    }
                }
                _ = signalled => {
                    self.reload("SIGHUP", &auditor);
                }
                _ = stop.changed() => return,
            }
        }
    }

    /// The loaded material as an operator reads it: each certificate (`server`, `client` —
    /// the gateway's own for delivering —, `intermediate`, `ca`) with its subject and expiry
    /// (Unix seconds), the CRL's next update, and the last reload's error if it failed.
    pub fn certificates(&self) -> Certificates {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner()).clone();
        Certificates {
            certificates: state
                .expiries
                .iter()
                .map(|(which, subject, not_after)| (which.to_string(), subject.clone(), *not_after))
                .collect(),
            crl_next_update: state.crl_next_update,
            last_error: state.last_error,
        }
    }

    /// The Prometheus lines for the loaded material.
    pub fn metrics(&self) -> String {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP liandong_certificate_expiry_seconds Seconds until each loaded certificate expires.\n# TYPE liandong_certificate_expiry_seconds gauge"
        );
        for (which, subject, not_after) in &state.expiries {
            let subject = subject.replace('\\', "\\\\").replace('"', "\\\"");
            let _ = writeln!(
                out,
                "liandong_certificate_expiry_seconds{{which=\"{which}\",subject=\"{subject}\"}} {}",
                not_after - now
            );
        }
        if let Some(next) = state.crl_next_update {
            let _ = writeln!(
                out,
                "# HELP liandong_crl_next_update_seconds Seconds until the loaded CRL's next update.\n# TYPE liandong_crl_next_update_seconds gauge\nliandong_crl_next_update_seconds {}",
                next - now
            );
        }
        let _ = writeln!(
            out,
            "# HELP liandong_tls_reload_failing 1 when the last reload failed (the old material is in use).\n# TYPE liandong_tls_reload_failing gauge\nliandong_tls_reload_failing {}",
            u8::from(state.last_error.is_some())
        );
        out
    }
}
