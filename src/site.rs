//! `liandong init DIR`: a working site to try the gateway with — a configuration, a
//! development CA, a server certificate for localhost, the gateway's delivery certificate and
//! a client certificate for every registered endpoint.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::formats::Registry;
use crate::security::pki::{write_file, DevCa};
use crate::security::{Identity, TlsError};

/// What `init` wrote.
#[derive(Debug)]
pub struct Site {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub https: SocketAddr,
    pub admin: SocketAddr,
    /// `(endpoint, certificate, key)` for every registered endpoint.
    pub identities: Vec<(String, PathBuf, PathBuf)>,
}

impl Site {
    /// The manifest `init --json` prints, for scripts.
    pub fn manifest(&self) -> Value {
        let identities: serde_json::Map<String, Value> =
            self.identities.iter().map(|(id, cert, key)| (id.clone(), json!({"cert": cert, "key": key}))).collect();
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

/// Writes a site into `dir` (created if missing; existing files are replaced).
pub fn init(dir: &Path, https: SocketAddr, admin: SocketAddr, registry: &Registry) -> Result<Site, TlsError> {
    init_with_ca(dir, https, admin, registry, &DevCa::new("Liandong development CA")?)
}

/// [`init`] with a given CA (tests keep it to issue more certificates).
pub fn init_with_ca(dir: &Path, https: SocketAddr, admin: SocketAddr, registry: &Registry, ca: &DevCa) -> Result<Site, TlsError> {
    let fail = |e: std::io::Error| TlsError::File { path: dir.display().to_string(), problem: e.to_string() };
    std::fs::create_dir_all(dir.join("identities")).map_err(fail)?;
    write_file(&dir.join("ca.pem"), &ca.cert_pem, false)?;
    let host = https.ip().to_string();
    let mut names = vec!["localhost", "127.0.0.1"];
    if !names.contains(&host.as_str()) && !https.ip().is_unspecified() {
        names.push(&host);
    }
    ca.server(&names)?.write(dir, "server")?;
    ca.client(&Identity::Gateway("gateway".into()))?.write(dir, "gateway")?;
    ca.client(&Identity::Operator("ops".into()))?.write(&dir.join("identities"), "operator-ops")?;
    ca.client(&Identity::Agency("demo".into()))?.write(&dir.join("identities"), "agency-demo")?;
    let mut identities = Vec::new();
    for endpoint in registry.endpoints() {
        let name = endpoint.id.to_string().replace('/', "-");
        let (cert, key) = ca.client(&Identity::Endpoint(endpoint.id.clone()))?.write(&dir.join("identities"), &name)?;
        identities.push((endpoint.id.to_string(), cert, key));
    }
    let endpoints: String = registry
        .endpoints()
        .map(|e| {
            format!(
                "\n[[endpoint]]\n# {} ({}). Give `url` to have the gateway push documents to it; without one it pulls.\nid = \"{}\"\n# url = \"https://127.0.0.1:9443/receive\"\n",
                e.place, e.format.name, e.id
            )
        })
        .collect();
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

[store]
# The embedded default. For several replicas: kind = "postgres", url = "postgres://…".
kind = "sqlite"
path = "liandong.db"

[delivery]
initial_backoff = "1s"
max_backoff = "5m"
dead_after_attempts = 30
dead_after = "24h"
unreachable_after = "2m"
timeout = "10s"
sweep_every = "5s"

# What the partner agency `liandong://agency/demo` (identities/agency-demo.pem) may do.
# Agencies get nothing that is not granted here.
[[agency]]
name = "demo"
regions = ["3302"]
rights = ["read_transfers", "watch", "read_datasets"]
{endpoints}"#
    );
    let config_path = dir.join("liandong.toml");
    write_file(&config_path, &config, false)?;
    Ok(Site { dir: dir.to_path_buf(), config: config_path, https, admin, identities })
}
