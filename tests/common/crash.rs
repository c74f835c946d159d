//! The crash harness: the real `liandong` binary under load from sixteen clients, disturbed
//! (SIGKILL, or a PostgreSQL restart) again and again, with a test destination acknowledging.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::net::{eventually, Client, ConfigEdit, Receiver, Site};

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn spawn_gateway(site: &Site, store_url: Option<&str>) -> Child {
    spawn_gateway_with(site, &site.config, store_url)
}

/// Starts the binary with a given configuration file of the site.
pub fn spawn_gateway_with(site: &Site, config: &Path, store_url: Option<&str>) -> Child {
    gateway_command(site, config, store_url).spawn().expect("the gateway starts")
}

/// The command that starts the binary with a configuration file of the site, its log
/// appended to the site's `gateway.log`.
pub fn gateway_command(site: &Site, config: &Path, store_url: Option<&str>) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_liandong"));
    // The gateway's log goes next to its config, for reading after a failure.
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(site.dir.join("gateway.log"))
        .expect("a log file");
    command
        .args(["serve", "--config", config.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::from(log));
    command.env("RUST_LOG", "warn");
    match store_url {
        Some(url) => command.env("LIANDONG_STORE_URL", url),
        None => command.env_remove("LIANDONG_STORE_URL"),
    };
    command
}

/// A copy of the site's configuration listening on free ports: `(config, https, admin)`.
pub fn config_on_free_ports(
    site: &Site,
    name: &str,
) -> (std::path::PathBuf, SocketAddr, SocketAddr) {
    let (https, admin) = (free_port(), free_port());
    let config = site.dir.join(format!("liandong-{name}.toml"));
    let text = std::fs::read_to_string(&site.config)
        .unwrap()
        .replace("https = \"127.0.0.1:0\"", &format!("https = \"127.0.0.1:{https}\""))
        .replace("admin = \"127.0.0.1:0\"", &format!("admin = \"127.0.0.1:{admin}\""));
    std::fs::write(&config, text).unwrap();
    (
        config,
        format!("127.0.0.1:{https}").parse().unwrap(),
        format!("127.0.0.1:{admin}").parse().unwrap(),
    )
}

pub async fn wait_ready(admin: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut tcp) = tokio::net::TcpStream::connect(admin).await {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let _ = tcp
                .write_all(b"GET /readyz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                .await;
            let mut answer = String::new();
            let _ = tcp.read_to_string(&mut answer).await;
            if answer.starts_with("HTTP/1.1 200") {
                return;
            }
        }
        assert!(Instant::now() < deadline, "the gateway did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn document(i: usize) -> Vec<u8> {
    let sample = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/spec/samples/jjd-json/transfer-ningbo-township.json"),
    )
    .unwrap();
    sample
        .replace("LZ202305080001", &format!("CRASH-{i:06}"))
        .replace("JJ202305080001", &format!("JJC{i:06}"))
        .into_bytes()
}

/// What a gd-json destination received: each case's record number, with the transfer ids it
/// came under (one, when nothing was doubled).
pub fn transfers_by_case(destination: &Receiver) -> BTreeMap<String, BTreeSet<String>> {
    let mut by_case: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for received in destination.received() {
        let doc: serde_json::Value = serde_json::from_slice(&received.body).unwrap();
        by_case
            .entry(doc["gd"]["gdbh"].as_str().unwrap().to_string())
            .or_default()
            .insert(doc["lzbh"].as_str().unwrap().to_string());
    }
    by_case
}

/// Two gateway processes on one PostgreSQL schema, each on its own ports, ready: `(process,
/// https, admin)`.
pub async fn start_replicas(site: &Site, store: &str) -> Vec<(Child, SocketAddr, SocketAddr)> {
    let mut replicas = Vec::new();
    for name in ["a", "b"] {
        let (config, https, admin) = config_on_free_ports(site, name);
        let child = spawn_gateway_with(site, &config, Some(store));
        replicas.push((child, https, admin));
    }
    for (_, _, admin) in &replicas {
        wait_ready(*admin).await;
    }
    replicas
}

/// How the run is disturbed while the clients submit.
#[derive(Clone, Copy, Debug)]
pub enum Disruption {
    /// SIGKILL the gateway and start it again, this many times.
    KillGateway(usize),
    /// Restart the PostgreSQL server (`pg_ctlcluster … restart`), this many times.
    RestartPostgres(usize),
}

/// Submits `LIANDONG_CRASH_TRANSFERS` transfers while disrupting, then checks that every one
/// answered "submitted" was delivered, none under two transfer ids.
pub async fn run(store_url: Option<String>, disruption: Disruption) {
    let transfers: usize =
        std::env::var("LIANDONG_CRASH_TRANSFERS").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    let kills = match disruption {
        Disruption::KillGateway(n) | Disruption::RestartPostgres(n) => {
            std::env::var("LIANDONG_CRASH_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(n)
        }
    };
    let site = Site::new("crash");
    let destination = Receiver::start(&site, "330200/12345").await;
    site.push_to("330200/12345", &destination.url());
    let (https, admin) = (free_port(), free_port());
    site.edit_config(|t| {
        t.must_replace("https = \"127.0.0.1:0\"", &format!("https = \"127.0.0.1:{https}\""))
            .must_replace("admin = \"127.0.0.1:0\"", &format!("admin = \"127.0.0.1:{admin}\""))
            .must_replace("initial_backoff = \"1s\"", "initial_backoff = \"200ms\"")
            .must_replace("max_backoff = \"5m\"", "max_backoff = \"1s\"")
            .must_replace("timeout = \"10s\"", "timeout = \"2s\"")
    });
    let https: SocketAddr = format!("127.0.0.1:{https}").parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
    let gateway = Arc::new(Mutex::new(spawn_gateway(&site, store_url.as_deref())));
    wait_ready(admin).await;

    // Submitters: each document is sent until it is answered "submitted", resent as it is
    // after any failure (the gateway may have died before or after committing it).
    let answered: Arc<Mutex<BTreeMap<usize, BTreeSet<String>>>> = Arc::default();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let client = Client::for_endpoint(&site, "330200/110", https);
    let mut submitters = Vec::new();
    for _ in 0..16 {
        let (client, answered, next) = (client.clone(), answered.clone(), next.clone());
        submitters.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if i >= transfers {
                    return;
                }
                loop {
                    match client
                        .request("POST", "/v1/native/330200/110/transfers", document(i))
                        .await
                    {
                        Ok(answer) if answer.status == 200 => {
                            let id = answer.header("x-liandong-transfer-id").unwrap();
                            answered.lock().unwrap().entry(i).or_default().insert(id);
                            break;
                        }
                        _ => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
            }
        }));
    }
    // The killer: SIGKILL, restart, repeatedly, while the submitters run.
    let mut killed_under_load = 0;
    let mut slowest_recovery = Duration::ZERO;
    for k in 0..kills {
        // The destination is down (answering its "busy" receipt) across the second and third
        // disruptions, so deliveries pile up, retry, and must all arrive once it is back.
        destination.up.store(!(1..=2).contains(&k), std::sync::atomic::Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(300 + 150 * k as u64)).await;
        if next.load(std::sync::atomic::Ordering::SeqCst) < transfers {
            killed_under_load += 1;
        }
        let disrupted = Instant::now();
        match disruption {
            Disruption::KillGateway(_) => {
                {
                    let mut child = gateway.lock().unwrap();
                    child.kill().unwrap();
                    child.wait().unwrap();
                    *child = spawn_gateway(&site, store_url.as_deref());
                }
                wait_ready(admin).await;
            }
            Disruption::RestartPostgres(_) => {
                restart_postgres().await;
                wait_ready(admin).await;
            }
        }
        // Recovered: ready again (the gateway answers /readyz only when its store answers).
        slowest_recovery = slowest_recovery.max(disrupted.elapsed());
    }
    let last_disruption = Instant::now();
    destination.up.store(true, std::sync::atomic::Ordering::SeqCst);
    for s in submitters {
        s.await.unwrap();
    }
    let answered = answered.lock().unwrap().clone();
    assert_eq!(answered.len(), transfers, "every document was answered in the end");
    for (i, ids) in &answered {
        assert_eq!(ids.len(), 1, "document {i} was answered with different transfers: {ids:?}");
    }
    // Every answered transfer reaches the destination.
    let expected: BTreeSet<String> = answered.values().flatten().cloned().collect();
    eventually(120, "every transfer delivered", || {
        let got: BTreeSet<String> =
            destination.received().into_iter().filter_map(|r| r.transfer_id).collect();
        expected.is_subset(&got)
    })
    .await;
    let drained = last_disruption.elapsed();
    // The destination never got one case under two transfer ids.
    let by_case = transfers_by_case(&destination);
    assert_eq!(by_case.len(), transfers, "one case per document");
    let doubled: Vec<_> = by_case.iter().filter(|(_, ids)| ids.len() > 1).collect();
    assert!(doubled.is_empty(), "cases delivered as two transfers: {doubled:?}");
    let repeats = destination.received().len() - transfers;
    let submitted = answered.len();
    let delivered = by_case.len();
    let backend = if store_url.is_some() { "PostgreSQL" } else { "SQLite" };
    println!(
        "{backend}: {transfers} transfers, {kills} × {disruption:?} ({killed_under_load} while submitting): submitted {submitted}, delivered {delivered}, \
         0 lost, 0 doubled, {repeats} deliveries repeated with the same transfer_id; slowest recovery {} ms (disruption → ready), \
         everything delivered {} ms after the last disruption",
        slowest_recovery.as_millis(),
        drained.as_millis()
    );
    assert!(killed_under_load >= 1, "no disruption happened while transfers were being submitted");
    gateway.lock().unwrap().kill().unwrap();
}

/// Restarts the local PostgreSQL cluster and waits until it answers again.
pub async fn restart_postgres() {
    let version = std::fs::read_dir("/etc/postgresql")
        .expect("a Debian PostgreSQL cluster")
        .next()
        .unwrap()
        .unwrap()
        .file_name();
    let status = Command::new("pg_ctlcluster")
        .args([
            "--skip-systemctl-redirect",
            version.to_str().unwrap(),
            "main",
            "restart",
            "-m",
            "fast",
        ])
        .status()
        .expect("pg_ctlcluster runs");
    assert!(status.success(), "PostgreSQL restarted");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !Command::new("pg_isready")
        .args(["-q", "-h", "127.0.0.1", "-p", "5432"])
        .status()
        .is_ok_and(|s| s.success())
    {
        assert!(Instant::now() < deadline, "PostgreSQL came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A fresh schema in the test database, as a store URL.
pub async fn postgres_schema(name: &str) -> String {
    let base = super::stores::postgres_url();
    let schema = format!("{name}_{}", std::process::id());
    {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&base)
            .await
            .expect("PostgreSQL must be running for this test");
        sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::query(&format!("CREATE SCHEMA {schema}")).execute(&mut conn).await.unwrap();
    }
    let separator = if base.contains('?') { '&' } else { '?' };
    format!("{base}{separator}options=-c%20search_path%3D{schema}")
}
