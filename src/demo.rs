//! `liandong demo`: the whole linkage in one command, nothing to install. A site with a fresh
//! CA, the gateway on the embedded SQLite store, simulated 110 and 12345 platforms of five
//! provinces speaking their own formats with their own certificates, a partner agency watching
//! over gRPC — and the scenarios of the report this project comes from, played while you watch.

use std::io::Write;
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
    let (https_addr, admin_addr) = (
        https.local_addr().map_err(|e| e.to_string())?,
        admin.local_addr().map_err(|e| e.to_string())?,
    );
    let site =
        crate::site::init(&dir, https_addr, admin_addr, &registry).map_err(|e| e.to_string())?;
    say(format!(
        "site in {} — CA in ca/, config liandong.toml, client certificates in identities/",
        dir.display()
    ));

    // The simulated platforms, each with its receiving server; the gateway pushes to them.
    let mut config_text = std::fs::read_to_string(&site.config).map_err(|e| e.to_string())?;
    let mut platforms = Vec::new();
    for name in PLATFORMS {
        let listener =
            tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        config_text = config_text.replace(
            &format!("id = \"{name}\"\n# url = \"https://127.0.0.1:9443/receive\""),
            &format!("id = \"{name}\"\nurl = \"https://127.0.0.1:{port}/receive\""),
        );
        let file = name.replace('/', "-");
        let behaviour = Behaviour {
            think: Duration::from_millis(400),
            // Liaoning's 12345 hands lock-outs back: no door number to send the locksmith to.
            // Zhejiang's holds them to be police work: the linkage office will decide.
            reject: match *name {
                "210000/12345" => {
                    vec![("NP05".into(), "【信息不全】缺少单元、门牌号，请补充后重新移交".into())]
                }
                "330000/12345" => {
                    vec![("NP05".into(), "【非职责范围】被困人员疑似有危险，属公安110职责".into())]
                }
                _ => vec![],
            },
            // Ningbo's 12345 needs more time for a municipal facility (延期申请).
            extend: if *name == "330200/12345" { vec!["NP08".into()] } else { vec![] },
            // Liaoning's 12345 signs for a burst pipe and leaves it past its deadline.
            hold: if *name == "210000/12345" {
                vec![("NP04".into(), LIAONING_HOLD)]
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
        platform.serve(
            listener,
            &dir.join("ca.pem"),
            &dir.join("server.pem"),
            &dir.join("server-key.pem"),
        )?;
        platforms.push(platform);
    }
    // Liaoning's 12345 has a short deadline here, so that its held case is overdue in the demo.
    config_text = config_text.replacen(
        "id = \"210000/12345\"\n",
        "id = \"210000/12345\"\nresolve_within = \"6s\"\n",
        1,
    );
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
    let gateway = tokio::spawn(crate::server::run(
        config,
        crate::server::Listeners { https, admin },
        async move {
            let _ = stopped.await;
        },
    ));
    wait_ready(admin_addr).await?;
    say(format!(
        "gateway on https://localhost:{} (mTLS: HTTPS and gRPC), admin on http://{admin_addr}",
        https_addr.port()
    ));
    let by = |name: &str| {
        platforms
            .iter()
            .find(|p| p.endpoint.id.to_string() == name)
            .cloned()
            .ok_or("no such platform")
    };

    // The Ningbo 12345 tells the directory who handles wage disputes in Gaoqiao township.
    let agency_events = Arc::new(std::sync::atomic::AtomicU64::new(0));
    put_directory(&dir, https_addr).await?;
    watch_as_agency(&dir, https_addr, agency_events.clone()).await?;

    // Scenarios that are told one by one.
    let mut scenarios = Vec::new();
    let ningbo = by("330200/110")?;
    let mut wage = ningbo.request("NP03", Urgency::Normal)?;
    wage.case.summary = "农民工讨薪：工地拖欠三个月工资".into();
    wage.to_region = "330203".parse().ok();
    // 先处理后移交: the police calmed the scene first; the wages are 12345's.
    wage.prior_handling = Some(crate::model::PriorHandling {
        by_unit: Some(crate::model::Unit { code: None, name: Some("高桥派出所".into()) }),
        at: Some(crate::model::Timestamp::now()),
        actions: "民警到场劝解，现场秩序已恢复，欠薪诉求移交12345".into(),
        safe: Some(true),
    });
    let id = ningbo.submit(&wage).await?;
    // 派员参与现场处置: the labour inspectors going to the site ask 110 for police presence,
    // naming the wage dispute by the id they received it under.
    let ningbo_hotline = by("330200/12345")?;
    let mut assist = ningbo_hotline.request("PM10", Urgency::Urgent)?;
    assist.case.summary = "劳动监察到工地处置欠薪纠纷，现场人员情绪激动，需民警到场维持秩序".into();
    assist.needed_by = Some(crate::model::Timestamp::now().plus_seconds(1800));
    assist.links =
        vec![crate::model::Link { rel: crate::model::LinkRel::AssistFor, transfer_id: id.clone() }];
    let assist_id = ningbo_hotline.submit(&assist).await?;
    let routed = routed_unit(&dir, https_addr, &id).await;
    say(format!("· 宁波 110 → 12345 讨薪 (unpaid wages), handled first by the police, routed to the township: {routed}"));
    say("· 宁波 12345 → 110 派员协助: the labour inspectors ask for police presence at the site");
    scenarios.push(Scenario {
        name: "宁波 110 → 12345 讨薪 (unpaid wages)",
        origin: "330200-110",
        id,
    });
    scenarios.push(Scenario {
        name: "宁波 12345 → 110 派员协助 (police presence)",
        origin: "330200-12345",
        id: assist_id,
    });

    let zhejiang = by("330000/12345")?;
    let crime = zhejiang.request("PM01", Urgency::Immediate)?;
    let id = zhejiang.submit(&crime).await?;
    say(format!("· 杭州 (浙江 12345) → 110, a burglary in progress: transfer {id}, to be received within 60 s"));
    scenarios.push(Scenario {
        name: "浙江 12345 → 110 入室盗窃 (crime in progress)",
        origin: "330000-12345",
        id,
    });

    let liaoning = by("210000/110")?;
    let lockout = liaoning.request("NP05", Urgency::Normal)?;
    let id = liaoning.submit(&lockout).await?;
    say("· 沈阳 (辽宁 110) → 12345 开锁 (lock-out): the 12345 hands it back for the door number; the 110 completes it and sends it again");
    scenarios.push(Scenario {
        name: "辽宁 110 → 12345 开锁 (lock-out)", origin: "210000-110", id
    });

    // 职责争议: Zhejiang's 12345 hands a lock-out back as police work; the 110 disputes it and
    // the linkage office decides (see `linkage`, below).
    let zhejiang_police = by("330000/110")?;
    let disputed =
        zhejiang_police.submit(&zhejiang_police.request("NP05", Urgency::Normal)?).await?;
    say("· 杭州 (浙江 110) → 12345 开锁: handed back as out of scope; the 110 disputes it, the linkage office decides");
    scenarios.push(Scenario {
        name: "浙江 110 → 12345 开锁 (lock-out, disputed)",
        origin: "330000-110",
        id: disputed.clone(),
    });
    // 催办: Liaoning's 12345 leaves a burst pipe past its deadline; the 110 urges it.
    let liaoning_pipe = liaoning.submit(&liaoning.request("NP04", Urgency::Normal)?).await?;
    say("· 沈阳 (辽宁 110) → 12345 停水: left past its deadline, escalated, and urged");
    scenarios.push(Scenario {
        name: "辽宁 110 → 12345 停水 (no water, urged)",
        origin: "210000-110",
        id: liaoning_pipe.clone(),
    });
    // 延期: Ningbo's 12345 asks for more time for a broken streetlight; the 110 grants it.
    let mut lamp = ningbo.request("NP08", Urgency::Normal)?;
    lamp.case.summary = "小区路灯连续多日不亮，线路需改造".into();
    let extended = ningbo.submit(&lamp).await?;
    say("· 宁波 110 → 12345 路灯: the 12345 asks for an extension, the 110 grants it");
    scenarios.push(Scenario {
        name: "宁波 110 → 12345 路灯 (streetlight, extended)",
        origin: "330200-110",
        id: extended.clone(),
    });
    let linkage = tokio::spawn(linkage(dir.clone(), https_addr, disputed, liaoning_pipe, extended));

    let beijing = by("110000/110")?;
    let mut noise = beijing.request("NP10", Urgency::Normal)?;
    noise.case.summary = "夜间施工噪声扰民（接诉即办）".into();
    let id = beijing.submit(&noise).await?;
    say("· 北京 110 → 12345 接诉即办: resolved, then the citizen is called back and the case closed");
    scenarios.push(Scenario {
        name: "北京 110 → 12345 夜间施工噪声 (noise at night)",
        origin: "110000-110",
        id,
    });

    // Volume: Jiangxi car-moving at the rate, background elsewhere; Jiangxi's 12345 goes down a while.
    let jiangxi = by("360000/110")?;
    let jiangxi_hotline = by("360000/12345")?;
    say(format!(
        "· 江西 110 → 12345 挪车 (car moving, code 070301) at {}/s for {} s, with background traffic",
        plan.rate,
        plan.duration.as_secs()
    ));
    let volume_end = Instant::now() + plan.duration;
    let outage =
        (plan.duration / 3, plan.duration / 3 + Duration::from_secs(6).min(plan.duration / 3));
    let mut outage_told = (false, false);
    let mut next_progress = Instant::now() + Duration::from_secs(2);
    let tick = Duration::from_secs_f64(1.0 / plan.rate.max(0.1));
    let volume_start = Instant::now();
    let mut n = 0u64;
    while Instant::now() < volume_end {
        let mut car = jiangxi.request("NP07", Urgency::Normal)?;
        car.case.source_category =
            Some(SourceCategory { code: "070301".into(), name: Some("占道停车挪车".into()) });
        car.case.summary = "车辆被占道停放挡住出口，请求挪车".into();
        let platform = jiangxi.clone();
        tokio::spawn(async move {
            let _ = platform.submit(&car).await;
        });
        n += 1;
        if n.is_multiple_of((plan.rate.max(1.0) as u64 * 2).max(1)) {
            for background in ["330200/110", "110000/12345", "330000/110"] {
                let platform = by(background)?;
                let category = if platform.endpoint.id.platform == crate::model::Platform::Police {
                    "NP09"
                } else {
                    "PM04"
                };
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

    // The linkage scenarios play out beside the volume; their people act as they must.
    match tokio::time::timeout(Duration::from_secs(60), linkage).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => say(format!("· a linkage scenario did not play: {e}")),
        _ => say("· the linkage scenarios did not finish in time"),
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
            .filter(|g| g.status == crate::store::OutboxStatus::Pending)
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
    let mut report = outcomes(&dir, https_addr, &scenarios).await;
    report.push_str(&self::report(&store, &platforms, &agency_events).await?);
    report.push_str(&look_next(plan.keep.as_deref(), &dir, https_addr, admin_addr));
    if plan.keep.is_some() {
        say(format!("\nthe site stays in {}; the gateway runs until Ctrl-C", dir.display()));
        // Ctrl-C is ours before the report says to press it.
        #[cfg(unix)]
        let mut interrupt =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
                .map_err(|e| e.to_string())?;
        // Shown now, not on return: the report is what to read while it runs. (A reader that
        // has gone away is no reason to stop the demo.)
        let _ = writeln!(std::io::stdout(), "{report}");
        report.clear();
        #[cfg(unix)]
        interrupt.recv().await;
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        say("stopping");
    }
    let stopping = Instant::now();
    // The simulated platforms stop answering, so nothing holds the gateway's shutdown up.
    for platform in &platforms {
        platform.up.store(false, Ordering::SeqCst);
    }
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(1), gateway).await;
    tracing::debug!(took_ms = stopping.elapsed().as_millis() as u64, "the gateway stopped");
    if plan.keep.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(report)
}

/// How long Liaoning's 12345 leaves its burst pipe (past its 6 s `resolve_by`).
const LIAONING_HOLD: Duration = Duration::from_secs(14);

/// The people of the linkage scenarios (`linkage.md`), each through the canonical HTTPS routes
/// with its own certificate: the Zhejiang 110 disputes its lock-out and the linkage office
/// (`office-demo`) hears both sides and overrules the rejection; the Liaoning 110 urges its
/// overdue burst pipe; the Ningbo 110 grants the 12345's extension.
async fn linkage(
    dir: PathBuf,
    gateway: SocketAddr,
    disputed: String,
    overdue: String,
    extended: String,
) -> Result<(), String> {
    let post = |identity: &'static str, path: String, body: serde_json::Value| {
        let dir = dir.clone();
        async move { call(&dir, gateway, identity, "POST", &path, body.to_string().into_bytes()).await }
    };
    let dispute = async {
        wait_until(&dir, gateway, "330000-110", &disputed, |t| t["state"] == "rejected").await?;
        post("330000-110", format!("/v1/transfers/{disputed}/dispute"), serde_json::json!({"note": "被困者系老人，无危险情形，开锁服务在分流转办事项清单内，属12345"})).await?;
        post("office-demo", format!("/v1/transfers/{disputed}/dispute/notes"), serde_json::json!({"note": "三方通话：12345称开锁需核实身份，110称现场无警情", "call_ref": "SFTH-0042"})).await?;
        let decided = post("office-demo", format!("/v1/transfers/{disputed}/dispute/decision"), serde_json::json!({"outcome": "overruled", "note": "开锁服务属12345职责，身份核实由开锁企业按规定办理"})).await?;
        say(format!(
            "· the linkage office overrules the 12345: the lock-out goes back to it ({})",
            decided["state"].as_str().unwrap_or("?")
        ));
        Ok::<_, String>(())
    };
    let urge = async {
        wait_until(&dir, gateway, "210000-110", &overdue, |t| t["overdue"] == true).await?;
        post(
            "210000-110",
            format!("/v1/transfers/{overdue}/urge"),
            serde_json::json!({"note": "市民反映已停水超时，请尽快处置"}),
        )
        .await?;
        say("· the 辽宁 110 urges its overdue burst pipe (催办)");
        Ok(())
    };
    let extension = async {
        wait_until(&dir, gateway, "330200-110", &extended, |t| {
            t["history"]
                .as_array()
                .is_some_and(|h| h.iter().any(|e| e["state"] == "extension_requested"))
        })
        .await?;
        post(
            "330200-110",
            format!("/v1/transfers/{extended}/extension/decision"),
            serde_json::json!({"grant": true, "note": "同意延期"}),
        )
        .await?;
        say("· the 宁波 110 grants the 12345's extension (延期)");
        Ok(())
    };
    let (a, b, c) = tokio::join!(dispute, urge, extension);
    a.and(b).and(c)
}

/// Polls a transfer as `identity` until `done` holds (at most 40 s).
async fn wait_until(
    dir: &Path,
    gateway: SocketAddr,
    identity: &str,
    id: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> Result<serde_json::Value, String> {
    let until = Instant::now() + Duration::from_secs(40);
    loop {
        let transfer =
            call(dir, gateway, identity, "GET", &format!("/v1/transfers/{id}"), Vec::new()).await?;
        if done(&transfer) {
            return Ok(transfer);
        }
        if Instant::now() > until {
            return Err(format!("transfer {id} never got there: {}", transfer["state"]));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_ready(admin: SocketAddr) -> Result<(), String> {
    for _ in 0..100 {
        if let Ok(mut tcp) = tokio::net::TcpStream::connect(admin).await {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let _ = tcp
                .write_all(b"GET /readyz HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
                .await;
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
    call(
        dir,
        gateway,
        "330200-12345",
        "PUT",
        "/v1/datasets/directory/records/330203101/NP03",
        body.to_string().into_bytes(),
    )
    .await?;
    Ok(())
}

async fn routed_unit(dir: &Path, gateway: SocketAddr, id: &str) -> String {
    match call(dir, gateway, "330200-110", "GET", &format!("/v1/transfers/{id}"), Vec::new()).await
    {
        Ok(transfer) => transfer["history"]
            .as_array()
            .and_then(|h| h.iter().find(|e| e["state"] == "routed"))
            .map(|e| {
                format!(
                    "{} ({})",
                    e["unit"]["name"].as_str().unwrap_or(""),
                    e["note"].as_str().unwrap_or("")
                )
            })
            .unwrap_or_else(|| "no directory record".into()),
        Err(e) => format!("({e})"),
    }
}

/// The partner agency watches its regions' transfers over gRPC.
async fn watch_as_agency(
    dir: &Path,
    gateway: SocketAddr,
    events: Arc<std::sync::atomic::AtomicU64>,
) -> Result<(), String> {
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

fn progress(
    started: Instant,
    platforms: &[Arc<SimulatedPlatform>],
    agency: &std::sync::atomic::AtomicU64,
) -> String {
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

/// One scenario told: what it is, who sent it (a file stem under identities/), its transfer.
struct Scenario {
    name: &'static str,
    origin: &'static str,
    id: String,
}

/// Each scenario's outcome, read back from the gateway as its sender sees it.
async fn outcomes(dir: &Path, gateway: SocketAddr, scenarios: &[Scenario]) -> String {
    let mut out = String::from("\nscenarios\n");
    for scenario in scenarios {
        let transfer = match call(
            dir,
            gateway,
            scenario.origin,
            "GET",
            &format!("/v1/transfers/{}", scenario.id),
            Vec::new(),
        )
        .await
        {
            Ok(transfer) => transfer,
            Err(e) => {
                out.push_str(&format!("  {}: could not be read ({e})\n", scenario.name));
                continue;
            }
        };
        out.push_str(&format!("  {}: {}\n", scenario.name, outcome(&transfer)));
        if transfer["state"] == "rejected" {
            // The sender sent it again: the transfer linked to this one says how that went.
            let listed =
                call(dir, gateway, scenario.origin, "GET", "/v1/transfers?limit=500", Vec::new())
                    .await
                    .unwrap_or_default();
            let again = listed["transfers"].as_array().into_iter().flatten().find(|t| {
                t["links"].as_array().into_iter().flatten().any(|l| {
                    l["rel"] == "rerouted_from" && l["transfer_id"] == scenario.id.as_str()
                })
            });
            match again {
                Some(again) => {
                    out.push_str(&format!("    sent again, linked to it: {}\n", outcome(again)))
                }
                None => out.push_str("    not sent again\n"),
            }
        }
    }
    out
}

/// A transfer's outcome in a line: its state, who handled it, how it ended.
fn outcome(transfer: &serde_json::Value) -> String {
    let history = transfer["history"].as_array().cloned().unwrap_or_default();
    let at = |state: &str| {
        history
            .iter()
            .find(|e| e["state"] == state && e["implied"] != true)
            .and_then(|e| e["at"].as_str().map(String::from))
    };
    let mut line = format!(
        "{} ({})",
        transfer["state"].as_str().unwrap_or("?"),
        transfer["transfer_id"].as_str().unwrap_or("")
    );
    if let Some(unit) = history.iter().rev().find_map(|e| e["unit"]["name"].as_str()) {
        line.push_str(&format!("; handled by {unit}"));
    }
    if let (Some(submitted), Some(received)) =
        (at("submitted"), at("received").or_else(|| at("accepted")))
    {
        let seconds = |t: &str| {
            crate::model::Timestamp::parse_rfc3339(t, false).map(|t| t.unix_seconds()).unwrap_or(0)
        };
        line.push_str(&format!("; received after {} s", seconds(&received) - seconds(&submitted)));
    }
    if transfer["overdue"] == true {
        line.push_str("; a deadline was missed (escalated)");
    }
    if let Some(rejected) = history.iter().find(|e| e["state"] == "rejected") {
        let why = rejected["reason_code"].as_str().unwrap_or("other");
        line.push_str(&format!(
            "; handed back ({why}): {}",
            rejected["note"].as_str().unwrap_or("")
        ));
    }
    if let Some(satisfaction) = transfer["feedback"]["satisfaction"].as_str() {
        line.push_str(&format!("; citizen called back: {satisfaction}"));
    }
    // Linkage (linkage.md): why it went there, what was done first, help on site, disputes,
    // urges, extensions.
    if let Some(basis) = transfer["routing_basis"].as_str() {
        line.push_str(&format!("; routing basis {basis}"));
    }
    if let Some(actions) = transfer["prior_handling"]["actions"].as_str() {
        line.push_str(&format!("; handled first: {actions}"));
    }
    if let Some(link) =
        transfer["links"].as_array().into_iter().flatten().find(|l| l["rel"] == "assist_for")
    {
        line.push_str(&format!("; assists {}", link["transfer_id"].as_str().unwrap_or("")));
        let on_scene =
            history.iter().find(|e| e["state"] == "in_progress").and_then(|e| e["note"].as_str());
        if let Some(note) = on_scene {
            line.push_str(&format!(", on the scene: {note}"));
        }
    }
    if let Some(decision) = transfer["dispute"]["decision"].as_object() {
        line.push_str(&format!(
            "; disputed, {} by {}: {}",
            decision.get("outcome").and_then(|o| o.as_str()).unwrap_or("?"),
            decision.get("by").and_then(|o| o.as_str()).unwrap_or("?"),
            decision.get("note").and_then(|o| o.as_str()).unwrap_or("")
        ));
    }
    if let Some(urges) = transfer["urges"].as_u64() {
        line.push_str(&format!("; urged {urges}×"));
    }
    if let Some(granted) = history.iter().find(|e| e["state"] == "extension_granted") {
        line.push_str(&format!(
            "; extension granted until {}",
            granted["until"].as_str().unwrap_or("?")
        ));
    }
    line
}

/// Where to look next: the site only when it is kept (otherwise it is gone by now).
fn look_next(keep: Option<&Path>, dir: &Path, https: SocketAddr, admin: SocketAddr) -> String {
    match keep {
        Some(_) => format!(
            "\nwhere to look next\n  the site:     {} (liandong.toml, ca/, identities/)\n  the API:      https://localhost:{} (docs/INTEGRATORS.md), http://{admin}/metrics\n  certificates: liandong certs list --dir {}\n",
            dir.display(),
            https.port(),
            dir.join("ca").display()
        ),
        None => "\nwhere to look next\n  run it again with --keep DIR: the site stays in DIR and the gateway keeps running, to explore with the commands in README.md and docs/INTEGRATORS.md\n".to_string(),
    }
}

async fn report(
    store: &crate::store::Store,
    platforms: &[Arc<SimulatedPlatform>],
    agency: &std::sync::atomic::AtomicU64,
) -> Result<String, String> {
    let tally = store.tally().await.map_err(|e| e.to_string())?;
    let (retried, dead) = store.retried_deliveries().await.map_err(|e| e.to_string())?;
    let mut out = String::from("\ntransfers by direction and state\n");
    out.push_str(&format!(
        "  {:<12} {:<12} {:>7} {:>9}\n",
        "direction", "state", "count", "overdue"
    ));
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
    let pct = |q: f64| {
        latencies.get(((latencies.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or(0.0)
    };
    out.push_str(&format!(
        "delivery latency (stored → at the destination), {} deliveries: p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms, max {:.0} ms\n",
        latencies.len(),
        pct(0.5),
        pct(0.9),
        pct(0.99),
        latencies.last().copied().unwrap_or(0.0)
    ));
    out.push_str(&format!("retried: {retried} deliveries needed more than one attempt (the outage); {dead} dead letters\n"));
    let urged: u64 = platforms.iter().map(|p| p.tally.urged.load(Ordering::Relaxed)).sum();
    out.push_str(&format!("urges (催办) the desks received in their own format: {urged}\n"));
    let errors: u64 = platforms.iter().map(|p| p.tally.errors.load(Ordering::Relaxed)).sum();
    out.push_str(&format!(
        "the partner agency's Watch saw {} events; platform-side errors: {errors}\n",
        agency.load(Ordering::Relaxed)
    ));
    Ok(out)
}
