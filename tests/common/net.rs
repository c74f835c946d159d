//! A site with real certificates, a mutual-TLS client, and a test endpoint server that records
//! what the gateway delivers and answers with the endpoint's own native receipt.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use liandong::formats::{ReceiptKind, Registry};
use liandong::security::tls;

/// A folder with `liandong init`'s site in it, removed at the end.
pub struct Site {
    pub dir: PathBuf,
    pub config: PathBuf,
}

impl Site {
    /// A site as `liandong init` writes it: a CA made by the certificate tool (root and
    /// intermediate; clients present chains) in `DIR/ca`, and a CRL the gateway loads.
    pub fn new(name: &str) -> Site {
        let dir = Site::folder(name);
        let any = "127.0.0.1:0".parse().unwrap();
        let site = liandong::site::init(&dir, any, any, &Registry::builtin()).unwrap();
        Site { dir, config: site.config }
    }

    fn folder(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!(
            "liandong-{name}-{}-{}",
            std::process::id(),
            ulid::Ulid::new()
        ))
    }

    /// A site whose CA the test keeps, to issue more certificates.
    pub fn with_ca(name: &str, ca: &liandong::security::pki::DevCa) -> Site {
        let dir = Site::folder(name);
        let any = "127.0.0.1:0".parse().unwrap();
        let site = liandong::site::init_with_ca(&dir, any, any, &Registry::builtin(), ca).unwrap();
        Site { dir, config: site.config }
    }

    /// Sets the configuration's text with a function of the current one.
    pub fn edit_config(&self, f: impl FnOnce(String) -> String) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        std::fs::write(&self.config, f(text)).unwrap();
    }

    /// Gives an endpoint a delivery URL.
    pub fn push_to(&self, endpoint: &str, url: &str) {
        self.edit_config(|text| {
            text.must_replace(
                &format!("id = \"{endpoint}\"\n# url = \"https://127.0.0.1:9443/receive\""),
                &format!("id = \"{endpoint}\"\nurl = \"{url}\""),
            )
        });
    }

    pub fn identity(&self, endpoint: &str) -> (PathBuf, PathBuf) {
        let name = endpoint.replace('/', "-");
        (
            self.dir.join("identities").join(format!("{name}.pem")),
            self.dir.join("identities").join(format!("{name}-key.pem")),
        )
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Keep the evidence of a failed test: config, database, logs.
            eprintln!("test site kept at {}", self.dir.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Edits of a configuration's text that fail when what they replace is not there: an edit
/// that silently finds nothing would let a test run against the unedited configuration.
pub trait ConfigEdit {
    fn must_replace(&self, from: &str, to: &str) -> String;
    fn must_replacen(&self, from: &str, to: &str, count: usize) -> String;
}

impl ConfigEdit for str {
    fn must_replace(&self, from: &str, to: &str) -> String {
        assert!(self.contains(from), "{from:?} is not in the configuration");
        self.replace(from, to)
    }

    fn must_replacen(&self, from: &str, to: &str, count: usize) -> String {
        assert!(self.contains(from), "{from:?} is not in the configuration");
        self.replacen(from, to, count)
    }
}

/// An HTTPS client presenting one identity's certificate.
#[derive(Clone)]
pub struct Client {
    connector: tokio_rustls::TlsConnector,
    addr: SocketAddr,
}

/// An answer: status, headers, body.
pub struct Answer {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Client {
    pub fn new(site: &Site, cert: &Path, key: &Path, addr: SocketAddr) -> Client {
        let config = tls::client_config(&site.dir.join("ca.pem"), cert, key).unwrap();
        Client { connector: tokio_rustls::TlsConnector::from(config), addr }
    }

    /// A client that presents no certificate at all.
    pub fn anonymous(site: &Site, addr: SocketAddr) -> Client {
        liandong::security::install_crypto_provider();
        let mut roots = rustls::RootCertStore::empty();
        for cert in tls::certificates(&site.dir.join("ca.pem")).unwrap() {
            roots.add(cert).unwrap();
        }
        let config =
            rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
        Client { connector: tokio_rustls::TlsConnector::from(Arc::new(config)), addr }
    }

    /// The site's operator (`identities/operator-ops.pem`).
    pub fn operator(site: &Site, addr: SocketAddr) -> Client {
        Client::for_identity(site, "operator-ops", addr)
    }

    /// An identity `liandong init` wrote, by its file name (`agency-demo`).
    pub fn for_identity(site: &Site, name: &str, addr: SocketAddr) -> Client {
        let dir = site.dir.join("identities");
        Client::new(
            site,
            &dir.join(format!("{name}.pem")),
            &dir.join(format!("{name}-key.pem")),
            addr,
        )
    }

    pub fn for_endpoint(site: &Site, endpoint: &str, addr: SocketAddr) -> Client {
        let (cert, key) = site.identity(endpoint);
        Client::new(site, &cert, &key, addr)
    }

    pub async fn request(&self, method: &str, path: &str, body: Vec<u8>) -> Result<Answer, String> {
        self.request_with(method, path, &[], body).await
    }

    /// A request with extra headers.
    pub async fn request_with(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<Answer, String> {
        let tcp = tokio::net::TcpStream::connect(self.addr).await.map_err(|e| e.to_string())?;
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tls = self.connector.connect(name, tcp).await.map_err(|e| e.to_string())?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(format!("https://localhost:{}{path}", self.addr.port()))
            .header("host", "localhost");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(Bytes::from(body))).unwrap();
        let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok(Answer { status, headers, body })
    }

    /// Writes raw bytes on a new TLS connection (ignoring a write the server cut short) and
    /// returns what the server answered, as text, and whether the server closed the connection
    /// (within 10 s).
    pub async fn raw(&self, bytes: &[u8]) -> (String, bool) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let tcp = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = self.connector.connect(name, tcp).await.unwrap();
        let _ = tls.write_all(bytes).await;
        let _ = tls.flush().await;
        let mut answer = Vec::new();
        let closed =
            tokio::time::timeout(std::time::Duration::from_secs(10), tls.read_to_end(&mut answer))
                .await
                .is_ok();
        (String::from_utf8_lossy(&answer).into_owned(), closed)
    }

    /// Opens a connection and sends `bytes` (a request's head and the start of its body), and
    /// leaves the request unfinished: the stream, to read the answer from later.
    pub async fn unfinished(
        &self,
        bytes: &[u8],
    ) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        use tokio::io::AsyncWriteExt;
        let tcp = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = self.connector.connect(name, tcp).await.unwrap();
        tls.write_all(bytes).await.unwrap();
        tls.flush().await.unwrap();
        tls
    }

    pub async fn post(&self, path: &str, body: Vec<u8>) -> Answer {
        self.request("POST", path, body).await.unwrap()
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.request("GET", path, Vec::new()).await.unwrap()
    }
}

/// What a test endpoint received: its path, the delivery headers, and the native body.
#[derive(Clone, Debug)]
pub struct Received {
    pub path: String,
    pub transfer_id: Option<String>,
    pub attempt: Option<String>,
    pub body: Vec<u8>,
}

/// A test endpoint: an HTTPS server (client certificates required) that records deliveries
/// and answers each with the success receipt of `endpoint`'s format.
pub struct Receiver {
    pub addr: SocketAddr,
    pub received: Arc<Mutex<Vec<Received>>>,
    /// When false, it answers 503 with the format's busy receipt.
    pub up: Arc<std::sync::atomic::AtomicBool>,
}

impl Receiver {
    pub async fn start(site: &Site, endpoint: &str) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Receiver::serve(site, endpoint, listener)
    }

    pub fn serve(site: &Site, endpoint: &str, listener: tokio::net::TcpListener) -> Receiver {
        Receiver::serve_as(
            site,
            endpoint,
            listener,
            &site.dir.join("server.pem"),
            &site.dir.join("server-key.pem"),
        )
    }

    /// [`Receiver::serve`] with its own server certificate (a desk with a PKI of its own).
    pub fn serve_as(
        site: &Site,
        endpoint: &str,
        listener: tokio::net::TcpListener,
        cert: &Path,
        key: &Path,
    ) -> Receiver {
        let addr = listener.local_addr().unwrap();
        let config = tls::server_config(&site.dir.join("ca.pem"), cert, key, None).unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let up = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let registry = Arc::new(Registry::builtin());
        let endpoint = registry.endpoint_named(endpoint).unwrap().clone();
        let (record, up_flag) = (received.clone(), up.clone());
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let (acceptor, record, up, endpoint) =
                    (acceptor.clone(), record.clone(), up_flag.clone(), endpoint.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let service = hyper::service::service_fn(
                        move |request: hyper::Request<hyper::body::Incoming>| {
                            let (record, up, endpoint) =
                                (record.clone(), up.clone(), endpoint.clone());
                            async move {
                                let path = request.uri().path().to_string();
                                let header = |n: &str| {
                                    request
                                        .headers()
                                        .get(n)
                                        .and_then(|v| v.to_str().ok())
                                        .map(str::to_string)
                                };
                                let (transfer_id, attempt) = (
                                    header("x-liandong-transfer-id"),
                                    header("x-liandong-attempt"),
                                );
                                let body = request
                                    .into_body()
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes().to_vec())
                                    .unwrap_or_default();
                                if !up.load(std::sync::atomic::Ordering::SeqCst) {
                                    let busy = endpoint.write_receipt(
                                        ReceiptKind::Busy,
                                        None,
                                        Some("down for maintenance"),
                                    );
                                    return Ok::<_, std::convert::Infallible>(
                                        hyper::Response::builder()
                                            .status(503)
                                            .body(Full::new(Bytes::from(busy)))
                                            .unwrap(),
                                    );
                                }
                                record.lock().unwrap().push(Received {
                                    path,
                                    transfer_id,
                                    attempt,
                                    body,
                                });
                                let ok = endpoint.write_receipt(ReceiptKind::Success, None, None);
                                Ok(hyper::Response::new(Full::new(Bytes::from(ok))))
                            }
                        },
                    );
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Receiver { addr, received, up }
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}/receive", self.addr.port())
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

/// Waits until `check` holds, polling, for at most `seconds`.
pub async fn eventually(seconds: u64, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    while !check() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A site whose two Ningbo desks take deliveries by push and are both down, and whose
/// deliveries die at their first failure: a transfer from Ningbo's 110 becomes a dead letter,
/// and so does the notice of its return to the 110. Returns the site, the 12345 and the 110.
pub async fn ningbo_desks_down(name: &str) -> (Site, Receiver, Receiver) {
    let site = Site::new(name);
    let hotline = Receiver::start(&site, "330200/12345").await;
    let police = Receiver::start(&site, "330200/110").await;
    hotline.up.store(false, std::sync::atomic::Ordering::SeqCst);
    police.up.store(false, std::sync::atomic::Ordering::SeqCst);
    site.push_to("330200/12345", &hotline.url());
    site.push_to("330200/110", &police.url());
    site.edit_config(|t| t.must_replace("dead_after_attempts = 30", "dead_after_attempts = 1"));
    (site, hotline, police)
}

/// Starts the gateway of `site` in this process on a free port; returns its HTTPS and admin
/// addresses and a stop switch.
pub async fn start_on_free_port(
    site: &Site,
) -> (SocketAddr, SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let https = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = https.local_addr().unwrap();
    let (admin, stop) = start_gateway(site, https).await;
    (addr, admin, stop)
}

/// Starts the gateway of `site` in this process on `https` (and an admin listener on port 0);
/// returns the admin address and a stop switch.
pub async fn start_gateway(
    site: &Site,
    https: tokio::net::TcpListener,
) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let config = liandong::config::Config::load(&site.config).unwrap();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_addr = admin.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        liandong::server::run(config, liandong::server::Listeners { https, admin }, async move {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    (admin_addr, stop)
}

/// A plain HTTP GET to the admin listener (`/healthz`, `/readyz`, `/metrics`): the whole answer.
pub async fn admin_get(admin: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(admin).await.unwrap();
    tcp.write_all(
        format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut text = String::new();
    tcp.read_to_string(&mut text).await.unwrap();
    text
}

/// The admin listener's `/metrics` text (plain HTTP, as Prometheus scrapes it).
pub async fn metrics_text(admin: SocketAddr) -> String {
    admin_get(admin, "/metrics").await
}

/// The value of one series (`name{labels}` exactly as rendered) in a `/metrics` text.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// A sample document of the spec (`tests/spec/samples/PATH`).
pub fn sample(path: &str) -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/spec/samples").join(path),
    )
    .unwrap()
}

/// A gRPC channel to the gateway on `port`, presenting the certificate `cert` (and its `key`).
pub async fn grpc_channel_as(
    site: &Site,
    cert: &Path,
    key: &Path,
    port: u16,
) -> tonic::transport::Channel {
    use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(site.dir.join("ca.pem")).unwrap()))
        .identity(Identity::from_pem(std::fs::read(cert).unwrap(), std::fs::read(key).unwrap()))
        .domain_name("localhost");
    Channel::from_shared(format!("https://localhost:{port}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// A gRPC channel as one endpoint of the site.
pub async fn grpc_channel(site: &Site, endpoint: &str, port: u16) -> tonic::transport::Channel {
    let (cert, key) = site.identity(endpoint);
    grpc_channel_as(site, &cert, &key, port).await
}
