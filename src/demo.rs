//! `liandong demo`: the whole linkage in one command, nothing to install. A site with a fresh
//! CA, the gateway on the embedded SQLite store, simulated 110 and 12345 platforms of five
//! provinces speaking their own formats with their own certificates, a partner agency watching
//! over gRPC — and the scenarios of the report this project comes from, played while you watch.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::formats::Registry;
use crate::model::{SourceCategory, Urgency};
use crate::simulate::{Behaviour, SimulatedPlatform};

/// The simulated platforms.
const PLATFORMS: &[&str] = &[
    "360000/110",
    "360000/12345",
    "330200/110",
    "330200/12345",
    "330000/110",
    "330000/12345",
    "210000/110",
    "210000/12345",
    "110000/110",
    "110000/12345",
];

/// What to run.
#[derive(Clone, Debug)]
pub struct DemoPlan {
    pub duration: Duration,
    /// Jiangxi's car-moving transfers per second (the volume scenario).
    pub rate: f64,
    /// Leave the site here (and keep the gateway running until Ctrl-C) instead of a temporary one.
    pub keep: Option<PathBuf>,
}

fn say(line: impl AsRef<str>) {
    eprintln!("{}", line.as_ref());
}

/// Runs the demo and returns the final report.
pub async fn run(plan: DemoPlan) -> Result<String, String> {
    let started = Instant::now();
    let dir = match &plan.keep {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("liandong-demo-{}", ulid::Ulid::new())),
    };
    let registry = Registry::builtin();
    let https = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
    let (https_addr, admin_addr) =
        (https.local_addr().map_err(|e| e.to_string())?, admin.local_addr().map_err(|e| e.to_string())?);
    let site = crate::site::init(&dir, https_addr, admin_addr, &registry).map_err(|e| e.to_string())?;
    say(format!("site in {} — CA in ca/, config liandong.toml, client certificates in identities/", dir.display()));

    // The simulated platforms, each with its receiving server; the gateway pushes to them.
    let mut config_text = std::fs::read_to_string(&site.config).map_err(|e| e.to_string())?;
    let mut platforms = Vec::new();
    for name in PLATFORMS {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        config_text = config_text.replace(
            &format!("id = \"{name}\"\n# url = \"https://127.0.0.1:9443/receive\""),
            &format!("id = \"{name}\"\nurl = \"https://127.0.0.1:{port}/receive\""),
        );
        let file = name.replace('/', "-");
        let behaviour = Behaviour {
            think: Duration::from_millis(400),
            // Liaoning's 12345 hands lock-outs back: not its county.
            reject: if *name == "210000/12345" {
                vec![("NP05".into(), "非本辖区，请转属地处理".into())]
            } else {
                vec![]
            },
        };
        let platform = SimulatedPlatform::new(
            &registry,
            name,
            https_addr,
            &dir.join("ca.pem"),
            &dir.join(format!("identities/{file}.pem")),
            &dir.join(format!("identities/{file}-key.pem")),
            behaviour,
        )?;
        platform.serve(listener, &dir.join("ca.pem"), &dir.join("server.pem"), &dir.join("server-key.pem"))?;
        platforms.push(platform);
    }
    // Quick to call a destination unreachable, and generous limits for the volume.
    config_text = config_text
        .replace("unreachable_after = \"2m\"", "unreachable_after = \"5s\"")
        .replace("max_backoff = \"5m\"", "max_backoff = \"3s\"");
    std::fs::write(&site.config, config_text).map_err(|e| e.to_string())?;
    let config = crate::config::Config::load(&site.config).map_err(|e| e.to_string())?;
    let store_path = match &config.store {
        crate::config::Store::Sqlite { path, .. } => path.clone(),
        crate::config::Store::Postgres { .. } => return Err("the demo runs on SQLite".into()),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let gateway = tokio::spawn(crate::server::run(config, crate::server::Listeners { https, admin }, async move {
        let _ = stopped.await;
    }));
    wait_ready(admin_addr).await?;
    say(format!("gateway on https://localhost:{} (mTLS: HTTPS and gRPC), admin on http://{admin_addr}", https_addr.port()));
    let by = |name: &str| platforms.iter().find(|p| p.endpoint.id.to_string() == name).cloned().ok_or("no such platform");

    // The Ningbo 12345 tells the directory who handles wage disputes in Gaoqiao township.
    let agency_events = Arc::new(std::sync::atomic::AtomicU64::new(0));
    put_directory(&dir, https_addr).await?;
    watch_as_agency(&dir, https_addr, agency_events.clone()).await?;

    // Scenarios that are told one by one.
    let ningbo = by("330200/110")?;
    let mut wage = ningbo.request("NP03", Urgency::Normal)?;
    wage.case.summary = "农民工讨薪：工地拖欠三个月工资".into();
    wage.to_region = "330203".parse().ok();
    if let Some(location) = wage.case.location.as_mut() {
        location.region = "330203101".parse().ok();
    }
    let id = ningbo.submit(&wage).await?;
    let routed = routed_unit(&dir, https_addr, &id).await;
    say(format!("· 宁波 110 → 12345 讨薪 (unpaid wages), routed to the township: {routed}"));

    let zhejiang = by("330000/12345")?;
    let mut crime = zhejiang.request("PM01", Urgency::Immediate)?;
    crime.case.summary = "来电称正在发生入室盗窃".into();
    let id = zhejiang.submit(&crime).await?;
    say(format!("· 浙江 12345 → 110, a crime in progress: transfer {id}, must be received within 60 s"));

    let liaoning = by("210000/110")?;
    let mut lockout = liaoning.request("NP05", Urgency::Normal)?;
    lockout.case.summary = "被锁门外，请求开锁".into();
    liaoning.submit(&lockout).await?;
    say("· 辽宁 110 → 12345 开锁 (lock-out): the 12345 will hand it back, the 110 re-routes it");

    let beijing = by("110000/110")?;
    let mut noise = beijing.request("NP10", Urgency::Normal)?;
    noise.case.summary = "夜间施工噪声扰民（接诉即办）".into();
    beijing.submit(&noise).await?;
    say("· 北京 110 → 12345 接诉即办: resolved, then the citizen is called back and the case closed");

    // Volume: Jiangxi car-moving at the rate, background elsewhere; Jiangxi's 12345 goes down a while.
    let jiangxi = by("360000/110")?;
    let jiangxi_hotline = by("360000/12345")?;
    say(format!(
        "· 江西 110 → 12345 挪车 (car moving, code 070301) at {}/s for {} s, with background traffic",
        plan.rate,
        plan.duration.as_secs()
    ));
    let volume_end = Instant::now() + plan.duration;
    let outage = (plan.duration / 3, plan.duration / 3 + Duration::from_secs(6).min(plan.duration / 3));
    let mut outage_told = (false, false);
    let mut next_progress = Instant::now() + Duration::from_secs(2);
    let tick = Duration::from_secs_f64(1.0 / plan.rate.max(0.1));
    let volume_start = Instant::now();
    let mut n = 0u64;
    while Instant::now() < volume_end {
        let mut car = jiangxi.request("NP07", Urgency::Normal)?;
        car.case.source_category = Some(SourceCategory { code: "070301".into(), name: Some("占道停车挪车".into()) });
        car.case.summary = "车辆被占道停放挡住出口，请求挪车".into();
        let platform = jiangxi.clone();
        tokio::spawn(async move {
            let _ = platform.submit(&car).await;
        });
        n += 1;
        if n.is_multiple_of((plan.rate.max(1.0) as u64 * 2).max(1)) {
            for background in ["330200/110", "110000/12345", "330000/110"] {
                let platform = by(background)?;
                let category = if platform.endpoint.id.platform == crate::model::Platform::Police { "NP09" } else { "PM04" };
                let request = platform.request(category, Urgency::Normal)?;
                tokio::spawn(async move {
                    let _ = platform.submit(&request).await;
                });
            }
        }
        let elapsed = volume_start.elapsed();
        if elapsed >= outage.0 && !outage_told.0 {
            jiangxi_hotline.up.store(false, Ordering::SeqCst);
            outage_told.0 = true;
            say("· 江西 12345 goes down: deliveries are refused, the gateway retries with backoff");
        }
        if elapsed >= outage.1 && !outage_told.1 {
            jiangxi_hotline.up.store(true, Ordering::SeqCst);
            outage_told.1 = true;
            say("· 江西 12345 is back: the backlog drains");
        }
        if Instant::now() >= next_progress {
            say(progress(started, &platforms, &agency_events));
            next_progress += Duration::from_secs(2);
        }
        tokio::time::sleep_until((volume_start + tick * n as u32).into()).await;
    }

    // Let the loops close: deliveries drain, statuses come back, citizens are called back.
    let drain_until = Instant::now() + Duration::from_secs(20);
    let store = crate::store::Store::sqlite(&store_path).await.map_err(|e| e.to_string())?;
    while Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_secs(2)).await;
        say(progress(started, &platforms, &agency_events));
        let pending = store
            .outbox_backlog()
            .await
            .map_err(|e| e.to_string())?
            .iter()
            .filter(|g| g.status == "pending")
            .map(|g| g.count)
            .sum::<i64>();
        let open = store
            .tally()
            .await
            .map_err(|e| e.to_string())?
            .iter()
            .filter(|t| !matches!(t.1.as_str(), "closed" | "rejected" | "cancelled"))
            .map(|t| t.3)
            .sum::<i64>();
        if pending == 0 && open == 0 {
            break;
        }
    }
    let report = report(&store, &platforms, &agency_events, &dir, https_addr, admin_addr).await?;
    if plan.keep.is_some() {
        say(format!("\nthe site stays in {}; the gateway runs until Ctrl-C", dir.display()));
        println!("{report}");
        let _ = tokio::signal::ctrl_c().await;
    }
    let _ = stop.send(());
    let _ = gateway.await;
    if plan.keep.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(report)
}

async fn wait_ready(admin: SocketAddr) -> Result<(), String> {
    for _ in 0..100 {
        if let Ok(mut tcp) = tokio::net::TcpStream::connect(admin).await {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let _ = tcp.write_all(b"GET /readyz HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n").await;
            let mut answer = String::new();
            let _ = tcp.read_to_string(&mut answer).await;
            if answer.starts_with("HTTP/1.1 200") {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err("the gateway did not become ready".into())
}

/// An HTTPS call as `identity` (a file stem under identities/).
async fn call(
    dir: &Path,
    gateway: SocketAddr,
    identity: &str,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> Result<serde_json::Value, String> {
    let config = crate::security::tls::client_config(
        &dir.join("ca.pem"),
        &dir.join(format!("identities/{identity}.pem")),
        &dir.join(format!("identities/{identity}-key.pem")),
    )
    .map_err(|e| e.to_string())?;
    let connector = tokio_rustls::TlsConnector::from(config);
    let (_, _, bytes) = crate::simulate::call(&connector, gateway, method, path, body).await?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{path}: {e}"))
}

async fn put_directory(dir: &Path, gateway: SocketAddr) -> Result<(), String> {
    let body = serde_json::json!({"version": 1, "body": {"unit": {"code": "330203101-LB", "name": "高桥镇劳动保障所"}, "phone": "0574-87000000"}});
    call(dir, gateway, "330200-12345", "PUT", "/v1/datasets/directory/records/330203101/NP03", body.to_string().into_bytes())
        .await?;
    Ok(())
}

async fn routed_unit(dir: &Path, gateway: SocketAddr, id: &str) -> String {
    match call(dir, gateway, "330200-110", "GET", &format!("/v1/transfers/{id}"), Vec::new()).await {
        Ok(transfer) => transfer["history"]
            .as_array()
            .and_then(|h| h.iter().find(|e| e["state"] == "routed"))
            .map(|e| format!("{} ({})", e["unit"]["name"].as_str().unwrap_or(""), e["note"].as_str().unwrap_or("")))
            .unwrap_or_else(|| "no directory record".into()),
        Err(e) => format!("({e})"),
    }
}

/// The partner agency watches its regions' transfers over gRPC.
async fn watch_as_agency(dir: &Path, gateway: SocketAddr, events: Arc<std::sync::atomic::AtomicU64>) -> Result<(), String> {
    let channel = crate::sync::follower::channel(
        &format!("https://localhost:{}", gateway.port()),
        &dir.join("ca.pem"),
        &dir.join("identities/agency-demo.pem"),
        &dir.join("identities/agency-demo-key.pem"),
    )
    .await?;
    let mut client = crate::proto::v1::transfer_service_client::TransferServiceClient::new(channel);
    let mut stream = client
        .watch(crate::proto::v1::WatchRequest { cursor: String::new(), from_now: false })
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    tokio::spawn(async move {
        while let Ok(Some(_)) = stream.message().await {
            events.fetch_add(1, Ordering::Relaxed);
        }
    });
    say("· a partner agency (liandong://agency/demo, Ningbo) watches its region's transfers over gRPC");
    Ok(())
}

fn progress(started: Instant, platforms: &[Arc<SimulatedPlatform>], agency: &std::sync::atomic::AtomicU64) -> String {
    let sum = |f: fn(&crate::simulate::Tally) -> &std::sync::atomic::AtomicU64| -> u64 {
        platforms.iter().map(|p| f(&p.tally).load(Ordering::Relaxed)).sum()
    };
    format!(
        "  [{:>3}s] submitted {} · delivered to platforms {} · statuses {} · closed after call-back {} · re-routed {} · agency saw {} events",
        started.elapsed().as_secs(),
        sum(|t| &t.submitted),
        sum(|t| &t.received),
        sum(|t| &t.statuses_sent),
        sum(|t| &t.closed),
        sum(|t| &t.rerouted),
        agency.load(Ordering::Relaxed)
    )
}

async fn report(
    store: &crate::store::Store,
    platforms: &[Arc<SimulatedPlatform>],
    agency: &std::sync::atomic::AtomicU64,
    dir: &Path,
    https: SocketAddr,
    admin: SocketAddr,
) -> Result<String, String> {
    let tally = store.tally().await.map_err(|e| e.to_string())?;
    let (retried, dead) = store.retried_deliveries().await.map_err(|e| e.to_string())?;
    let mut out = String::from("\ntransfers by direction and state\n");
    out.push_str(&format!("  {:<12} {:<12} {:>7} {:>9}\n", "direction", "state", "count", "overdue"));
    for (platform, state, overdue, count) in &tally {
        let direction = if platform == "110" { "110->12345" } else { "12345->110" };
        out.push_str(&format!(
            "  {direction:<12} {state:<12} {count:>7} {:>9}\n",
            if *overdue { count.to_string() } else { "-".into() }
        ));
    }
    let total: i64 = tally.iter().map(|t| t.3).sum();
    let overdue: i64 = tally.iter().filter(|t| t.2).map(|t| t.3).sum();
    out.push_str(&format!("\ndeadlines: {} met, {overdue} missed (escalated)\n", total - overdue));
    // Delivery latency: from submission (the origin's answer) to arrival at the destination.
    let mut latencies: Vec<f64> = Vec::new();
    for platform in platforms {
        let arrivals = platform.tally.arrivals.lock().unwrap_or_else(|e| e.into_inner());
        for id in arrivals.keys() {
            if let Ok(ulid) = id.parse::<ulid::Ulid>() {
                let created = ulid.timestamp_ms() as i128;
                let arrived_at = arrivals[id];
                let arrived = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as i128)
                    .unwrap_or(0)
                    - arrived_at.elapsed().as_millis() as i128;
                latencies.push((arrived - created).max(0) as f64);
            }
        }
    }
    latencies.sort_by(|a, b| a.total_cmp(b));
    let pct = |q: f64| latencies.get(((latencies.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or(0.0);
    out.push_str(&format!(
        "delivery latency (stored → at the destination), {} deliveries: p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms, max {:.0} ms\n",
        latencies.len(),
        pct(0.5),
        pct(0.9),
        pct(0.99),
        latencies.last().copied().unwrap_or(0.0)
    ));
    out.push_str(&format!("retried: {retried} deliveries needed more than one attempt (the outage); {dead} dead letters\n"));
    let errors: u64 = platforms.iter().map(|p| p.tally.errors.load(Ordering::Relaxed)).sum();
    out.push_str(&format!(
        "the partner agency's Watch saw {} events; platform-side errors: {errors}\n",
        agency.load(Ordering::Relaxed)
    ));
    out.push_str(&format!(
        "\nwhere to look next\n  the site:     {} (liandong.toml, ca/, identities/)\n  the API:      https://localhost:{} (docs/INTEGRATORS.md), http://{admin}/metrics\n  certificates: liandong certs list --dir {}\n  run it again with --keep DIR to explore it while it runs\n",
        dir.display(),
        https.port(),
        dir.join("ca").display()
    ));
    Ok(out)
}
