//! `liandong init DIR`: a working site to try the gateway with — a configuration, a CA made
//! with `liandong certs` (in `DIR/ca`), a server certificate for localhost, the gateway's
//! delivery certificate and a client certificate for every registered endpoint.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::formats::Registry;
use crate::security::ca::{Algorithm, CaDir, CaError, Subject};
use crate::security::pki::{write_file, DevCa};
use crate::security::{Identity, TlsError};

/// What `init` wrote.
#[derive(Debug)]
pub struct Site {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub https: SocketAddr,
    pub admin: SocketAddr,
    /// `(identity, certificate, key)` of every client identity written: the operator
    /// (`operator/ops`), the agency (`agency/demo`), and every registered endpoint.
    pub identities: Vec<(String, PathBuf, PathBuf)>,
}

impl Site {
    /// The manifest `init --json` prints, for scripts.
    pub fn manifest(&self) -> Value {
        let identities: serde_json::Map<String, Value> = self
            .identities
            .iter()
            .map(|(id, cert, key)| (id.clone(), json!({"cert": cert, "key": key})))
            .collect();
        json!({
            "config": self.config,
            "ca": self.dir.join("ca.pem"),
            "https": format!("https://{}", self.https),
            "grpc": format!("https://{}", self.https),
            "admin": format!("http://{}", self.admin),
            "identities": identities,
        })
    }
}

/// What in `dir` says a site is there already (its configuration, or its CA), if anything:
/// `liandong init` refuses to replace it without `--force`.
pub fn existing(dir: &Path) -> Option<PathBuf> {
    [dir.join("liandong.toml"), dir.join("ca")].into_iter().find(|p| p.exists())
}

/// Writes a site into `dir` (created if missing; existing files are replaced), its certificates
/// made by the security teams' tool ([`CaDir`]): a CA in `ca/` (root, intermediate, ledger, an
/// empty CRL the gateway loads), and copies under the names the configuration uses.
pub fn init(
    dir: &Path,
    https: SocketAddr,
    admin: SocketAddr,
    registry: &Registry,
) -> Result<Site, TlsError> {
    let fail = |e: std::io::Error| TlsError::File {
        path: dir.display().to_string(),
        problem: e.to_string(),
    };
    let ca_error = |e: CaError| TlsError::File {
        path: dir.join("ca").display().to_string(),
        problem: e.to_string(),
    };
    std::fs::create_dir_all(dir.join("identities")).map_err(fail)?;
    if dir.join("ca").exists() {
        std::fs::remove_dir_all(dir.join("ca")).map_err(fail)?;
    }
    let ca = CaDir::init(&dir.join("ca"), Algorithm::P256, None, 3650, 1825).map_err(ca_error)?;
    std::fs::copy(dir.join("ca/root.pem"), dir.join("ca.pem")).map_err(fail)?;
    let place =
        |subject: Subject, folder: &Path, name: &str| -> Result<(PathBuf, PathBuf), TlsError> {
            let issued = ca.issue(&subject, 825, true).map_err(ca_error)?;
            let (cert, key) =
                (folder.join(format!("{name}.pem")), folder.join(format!("{name}-key.pem")));
            let read = |p: &Path| std::fs::read_to_string(p).map_err(fail);
            write_file(&cert, &read(&issued.chain)?, false)?;
            write_file(&key, &read(issued.key.as_deref().unwrap_or(Path::new("")))?, true)?;
            Ok((cert, key))
        };
    place(Subject::Server(server_names(https)), dir, "server")?;
    place(Subject::Identity(Identity::Gateway("gateway".into())), dir, "gateway")?;
    let identities_dir = dir.join("identities");
    let mut identities = Vec::new();
    let (cert, key) = place(
        Subject::Identity(Identity::Operator("ops".into())),
        &identities_dir,
        "operator-ops",
    )?;
    identities.push(("operator/ops".to_string(), cert, key));
    let (cert, key) =
        place(Subject::Identity(Identity::Agency("demo".into())), &identities_dir, "agency-demo")?;
    identities.push(("agency/demo".to_string(), cert, key));
    let (cert, key) =
        place(Subject::Identity(Identity::Office("demo".into())), &identities_dir, "office-demo")?;
    identities.push(("office/demo".to_string(), cert, key));
    for endpoint in registry.endpoints() {
        let name = endpoint.id.to_string().replace('/', "-");
        let (cert, key) = place(
            Subject::Identity(Identity::Endpoint(endpoint.id.clone())),
            &identities_dir,
            &name,
        )?;
        identities.push((endpoint.id.to_string(), cert, key));
    }
    ca.crl(std::time::Duration::from_secs(30 * 86_400)).map_err(ca_error)?;
    write_config(dir, https, admin, registry, Some("ca/crl.pem"), identities)
}

fn server_names(https: SocketAddr) -> Vec<String> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let host = https.ip().to_string();
    if !names.contains(&host) && !https.ip().is_unspecified() {
        names.push(host);
    }
    names
}

/// [`init`] with a development CA the caller keeps (tests issue more certificates with it).
pub fn init_with_ca(
    dir: &Path,
    https: SocketAddr,
    admin: SocketAddr,
    registry: &Registry,
    ca: &DevCa,
) -> Result<Site, TlsError> {
    let fail = |e: std::io::Error| TlsError::File {
        path: dir.display().to_string(),
        problem: e.to_string(),
    };
    std::fs::create_dir_all(dir.join("identities")).map_err(fail)?;
    write_file(&dir.join("ca.pem"), &ca.cert_pem, false)?;
    let names = server_names(https);
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    ca.server(&names)?.write(dir, "server")?;
    ca.client(&Identity::Gateway("gateway".into()))?.write(dir, "gateway")?;
    ca.client(&Identity::Operator("ops".into()))?.write(&dir.join("identities"), "operator-ops")?;
    ca.client(&Identity::Agency("demo".into()))?.write(&dir.join("identities"), "agency-demo")?;
    ca.client(&Identity::Office("demo".into()))?.write(&dir.join("identities"), "office-demo")?;
    let mut identities = Vec::new();
    for endpoint in registry.endpoints() {
        let name = endpoint.id.to_string().replace('/', "-");
        let (cert, key) = ca
            .client(&Identity::Endpoint(endpoint.id.clone()))?
            .write(&dir.join("identities"), &name)?;
        identities.push((endpoint.id.to_string(), cert, key));
    }
    write_config(dir, https, admin, registry, None, identities)
}

/// Writes `liandong.toml`.
fn write_config(
    dir: &Path,
    https: SocketAddr,
    admin: SocketAddr,
    registry: &Registry,
    crl: Option<&str>,
    identities: Vec<(String, PathBuf, PathBuf)>,
) -> Result<Site, TlsError> {
    let crl = crl
        .map(|c| {
            format!("# Revoked client certificates (`liandong certs revoke` + `certs crl`); reloaded on change.\ncrl = \"{c}\"\n")
        })
        .unwrap_or_default();
    let endpoints: String = registry
        .endpoints()
        .map(|e| {
            format!(
                "\n[[endpoint]]\n# {} ({}). Give `url` to have the gateway push documents to it; without one it pulls.\nid = \"{}\"\n# url = \"https://127.0.0.1:9443/receive\"\n",
                e.place, e.format.name, e.id
            )
        })
        .collect();
    // The delivery settings written out are the defaults themselves, never a second copy.
    let defaults = crate::config::Delivery::default();
    let format = crate::config::duration::format;
    let (initial_backoff, max_backoff, dead_after) = (
        format(defaults.initial_backoff),
        format(defaults.max_backoff),
        format(defaults.dead_after),
    );
    let (unreachable_after, timeout, sweep_every) = (
        format(defaults.unreachable_after),
        format(defaults.timeout),
        format(defaults.sweep_every),
    );
    let dead_after_attempts = defaults.dead_after_attempts;
    let memory_limit = crate::config::Figures::default().memory_limit;
    let config = format!(
        r#"# Liandong site written by `liandong init`. Every key is explained in docs/CONFIG.md.

[listen]
# Mutual TLS: native and canonical HTTPS APIs.
https = "{https}"
# Plain HTTP on localhost: /healthz, /readyz, /metrics.
admin = "{admin}"

[tls]
ca = "ca.pem"
cert = "server.pem"
key = "server-key.pem"
client_cert = "gateway.pem"
client_key = "gateway-key.pem"
{crl}
[store]
# The embedded default. For several replicas: kind = "postgres", url = "postgres://…".
kind = "sqlite"
path = "liandong.db"

[delivery]
initial_backoff = "{initial_backoff}"
max_backoff = "{max_backoff}"
dead_after_attempts = {dead_after_attempts}
dead_after = "{dead_after}"
unreachable_after = "{unreachable_after}"
timeout = "{timeout}"
sweep_every = "{sweep_every}"

# What the partner agency `liandong://agency/demo` (identities/agency-demo.pem) may do.
# Agencies get nothing that is not granted here.
[[agency]]
name = "demo"
regions = ["3302"]
rights = ["read_transfers", "watch", "read_datasets"]

# The linkage office `liandong://office/demo` (identities/office-demo.pem): it decides the
# jurisdiction disputes, urges and answers extension requests of its regions (docs/LINKAGE.md).
[[office]]
name = "demo"
regions = ["33"]
rights = ["read_transfers", "watch", "decide_disputes"]

# The linkage defaults (linkage.md).
[linkage]
dispute_within = "24h"
urge_interval = "1h"

# The figures' facts kept in memory (about 130 MB a million transfers); past the limit the
# database aggregates the figures instead (docs/CONFIG.md).
[figures]
memory_limit = {memory_limit}
{endpoints}"#
    );
    let config_path = dir.join("liandong.toml");
    write_file(&config_path, &config, false)?;
    Ok(Site { dir: dir.to_path_buf(), config: config_path, https, admin, identities })
}
