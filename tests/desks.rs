//! The closed loop (闭环) end to end, as provincial desks live it: independent 110 and 12345
//! desks of all six formats (`tests/python/desk.py`, written from `formats.md` alone, never from
//! the gateway's profiles) exchange transfers through the real gateway process, on SQLite and on
//! PostgreSQL, with status, rejection and re-routing, reopening, cancellation, a late signature,
//! a busy desk, a desk that refuses a document as invalid, and a desk down for ten seconds.
//!
//! Every case must end where its flow says, nothing lost and nothing doubled; every missed
//! deadline is counted once; every undeliverable transfer is answered to its origin in the
//! origin's own format; every status reaches the other desk in order; a township region goes to
//! a desk whose format takes six digits as its county; and every request the gateway makes is
//! in origin form.

use crate::common;
use common::net::ConfigEdit;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write as _};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::crash::{free_port, postgres_schema, spawn_gateway, wait_ready};
use common::net::Site;
use liandong::model::{EndpointId, HistoryEvent, LinkRel, ReasonCode, State, Transfer};
use liandong::store::{Store, TransferFilter};
use serde_json::{json, Value};

/// One direction between two desks: origin, its format, the destination and its format, the
/// case's region and the origin's native category code, and the flows to play.
struct Pair {
    origin: (&'static str, &'static str),
    destination: (&'static str, &'static str),
    region: &'static str,
    category: &'static str,
    flows: &'static [(&'static str, usize)],
}

const PAIRS: &[Pair] = &[
    // Ningbo 110 (jjd-json) → Ningbo 12345 (gd-json)
    Pair {
        origin: ("330200/110", "jjd-json"),
        destination: ("330200/12345", "gd-json"),
        region: "330203",
        category: "070300",
        flows: &[
            ("normal", 8),
            ("reject", 2),
            ("reopen", 2),
            ("cancel", 2),
            ("busy", 2),
            ("invalid", 2),
        ],
    },
    // Ningbo 12345 (gd-json) → Ningbo 110 (jjd-json), a township's nine digits: MBQH takes six
    Pair {
        origin: ("330200/12345", "gd-json"),
        destination: ("330200/110", "jjd-json"),
        region: "330203101",
        category: "2004",
        flows: &[("normal", 8), ("reject", 2), ("cancel", 2), ("invalid", 2)],
    },
    // Beijing 110 (incident-json) → Beijing 12345 (ticket-json), which must sign within 2 s
    Pair {
        origin: ("110000/110", "incident-json"),
        destination: ("110000/12345", "ticket-json"),
        region: "110105",
        category: "NONPOLICE.MOVE_CAR",
        flows: &[("normal", 6), ("late", 5)],
    },
    // Beijing 12345 (ticket-json) → Beijing 110 (incident-json)
    Pair {
        origin: ("110000/12345", "ticket-json"),
        destination: ("110000/110", "incident-json"),
        region: "110105",
        category: "JQ-04",
        flows: &[("normal", 6), ("reopen", 2)],
    },
    // Liaoning 110 (jqxx-xml, GBK) → Liaoning 12345 (workorder-xml), which goes down for 10 s
    Pair {
        origin: ("210000/110", "jqxx-xml"),
        destination: ("210000/12345", "workorder-xml"),
        region: "210102",
        category: "FJW07",
        flows: &[("normal", 8), ("cancel", 2)],
    },
    // Liaoning 12345 (workorder-xml) → Liaoning 110 (jqxx-xml)
    Pair {
        origin: ("210000/12345", "workorder-xml"),
        destination: ("210000/110", "jqxx-xml"),
        region: "210102",
        category: "J04",
        flows: &[("normal", 6), ("invalid", 2), ("busy", 2)],
    },
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loop_closes_for_every_flow_and_format_on_sqlite() {
    play(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loop_closes_for_every_flow_and_format_on_postgres() {
    play(Some(postgres_schema("desks").await)).await;
}

/// A case as the plan gives it to the desks.
fn cases() -> Vec<Value> {
    let mut cases = Vec::new();
    for (p, pair) in PAIRS.iter().enumerate() {
        for (flow, count) in pair.flows {
            for i in 0..*count {
                let reference = format!("E2E-{p}-{flow}-{i}");
                cases.push(json!({
                    "origin": pair.origin.0, "destination": pair.destination.0, "flow": flow,
                    "ref": reference, "local_id": format!("L{p}{flow}{i}"),
                    "region": pair.region, "category": pair.category,
                    "summary": format!("[{flow}] 端到端测试 {reference}"),
                }));
            }
        }
    }
    cases
}

async fn play(store_url: Option<String>) {
    let backend = if store_url.is_some() { "PostgreSQL" } else { "SQLite" };
    let site = Site::new("desks");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut desks: Vec<Value> = Vec::new();
    for pair in PAIRS {
        for (endpoint, format) in [pair.origin, pair.destination] {
            if desks.iter().any(|d| d["endpoint"] == endpoint) {
                continue;
            }
            let (cert, key) = site.identity(endpoint);
            desks.push(json!({"endpoint": endpoint, "format": format, "cert": cert, "key": key}));
        }
    }
    let cases = cases();
    let plan = json!({
        "ca": site.dir.join("ca.pem"), "server_cert": site.dir.join("server.pem"), "server_key": site.dir.join("server-key.pem"),
        "desks": desks, "cases": cases,
        "down": {"endpoint": "210000/12345", "after": 1.0, "seconds": 10},
    });
    let mut python = Killed(
        Command::new("python3")
            .arg(root.join("tests/python/desk.py"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs the desks"),
    );
    let mut to_desks = python.0.stdin.take().unwrap();
    let mut from_desks = BufReader::new(python.0.stdout.take().unwrap());
    writeln!(to_desks, "PLAN {plan}").unwrap();
    let ports: BTreeMap<String, u16> =
        serde_json::from_str(read_line(&mut from_desks, "READY ").trim()).unwrap();

    // Every desk is pushed to; Beijing 12345 must sign within two seconds.
    for (endpoint, port) in &ports {
        site.push_to(endpoint, &format!("https://localhost:{port}/desk"));
    }
    site.edit_config(|t| {
        t.must_replace(
            "id = \"110000/12345\"\nurl",
            "id = \"110000/12345\"\nreceive_within = \"2s\"\nurl",
        )
    });
    let (https, admin) = (free_port(), free_port());
    site.edit_config(|t| {
        t.must_replace("https = \"127.0.0.1:0\"", &format!("https = \"127.0.0.1:{https}\""))
            .must_replace("admin = \"127.0.0.1:0\"", &format!("admin = \"127.0.0.1:{admin}\""))
            .must_replace("sweep_every = \"5s\"", "sweep_every = \"1s\"")
    });
    let gateway = Killed(spawn_gateway(&site, store_url.as_deref()));
    wait_ready(format!("127.0.0.1:{admin}").parse().unwrap()).await;
    writeln!(to_desks, "GO {https}").unwrap();

    let store = match &store_url {
        Some(url) => Store::postgres(url, 2).await.unwrap(),
        None => Store::sqlite(&site.dir.join("liandong.db")).await.unwrap(),
    };
    // Every case ends: closed, cancelled or rejected (a rejected case's re-route closed too).
    let expected_ends = cases.len() + cases.iter().filter(|c| c["flow"] == "reject").count();
    let deadline = Instant::now() + Duration::from_secs(120);
    let transfers = loop {
        let transfers = all_transfers(&store).await;
        let ended = transfers
            .values()
            .filter(|t| matches!(t.state, State::Closed | State::Cancelled | State::Rejected))
            .count();
        if ended == expected_ends || Instant::now() > deadline {
            break transfers;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    // Let the last notices reach the desks before they report.
    tokio::time::sleep(Duration::from_secs(2)).await;
    writeln!(to_desks, "STOP").unwrap();
    let report: BTreeMap<String, Vec<Value>> =
        serde_json::from_str(read_line(&mut from_desks, "REPORT ").trim()).unwrap();
    let _ = python.0.wait();
    drop(gateway);

    let mut figures = Figures::default();
    // Each case's transfers, found by the reference its origin's desk knows them by.
    let mut by_ref: BTreeMap<(String, String), Transfer> = BTreeMap::new();
    for case in &cases {
        let origin: EndpointId = case["origin"].as_str().unwrap().parse().unwrap();
        for reference in [
            case["ref"].as_str().unwrap().to_string(),
            format!("{}-R", case["ref"].as_str().unwrap()),
        ] {
            if let Some(t) = store.transfer_by_reference(&origin, &reference).await.unwrap() {
                by_ref.insert((origin.to_string(), reference), t);
            }
        }
    }
    for case in &cases {
        let (origin, reference, flow) = (
            case["origin"].as_str().unwrap(),
            case["ref"].as_str().unwrap(),
            case["flow"].as_str().unwrap(),
        );
        let at = format!("{backend}: {reference} ({flow})");
        let Some(transfer) = by_ref.get(&(origin.to_string(), reference.to_string())) else {
            figures.lost += 1;
            eprintln!("{at}: lost — no transfer");
            continue;
        };
        let expected = match flow {
            "cancel" => State::Cancelled,
            "reject" | "invalid" => State::Rejected,
            _ => State::Closed,
        };
        assert_eq!(transfer.state, expected, "{at}: {:#?}", transfer.history);
        let entries = |state: State| {
            transfer
                .history
                .iter()
                .filter(|h| h.state == HistoryEvent::State(state) && !h.implied)
                .count()
        };
        match flow {
            "normal" | "busy" | "late" => {
                assert_eq!(
                    entries(State::InProgress),
                    2,
                    "{at}: two progress notes in one second are two updates"
                );
                assert_notices_in_order(&report, origin, reference, &at);
            }
            "reopen" => {
                assert_eq!(entries(State::Resolved), 2, "{at}: resolved, reopened, resolved again")
            }
            "reject" => {
                let rejected = transfer
                    .history
                    .iter()
                    .find(|h| h.state == HistoryEvent::State(State::Rejected))
                    .unwrap();
                assert_eq!(
                    rejected.reason_code,
                    Some(ReasonCode::OutOfScope),
                    "{at}: the label became the reason code"
                );
                let rerouted = by_ref
                    .get(&(origin.to_string(), format!("{reference}-R")))
                    .unwrap_or_else(|| panic!("{at}: re-routed"));
                assert_eq!(rerouted.state, State::Closed, "{at}: the re-route closes");
                assert!(
                    rerouted
                        .links
                        .iter()
                        .any(|l| l.rel == LinkRel::ReroutedFrom
                            && l.transfer_id == transfer.transfer_id),
                    "{at}: the re-route links the rejected transfer: {:?}",
                    rerouted.links
                );
            }
            "invalid" => {
                let rejected = transfer.history.last().unwrap();
                assert_eq!(
                    (rejected.by.as_str(), rejected.reason_code),
                    ("gateway", Some(ReasonCode::Undeliverable)),
                    "{at}"
                );
                assert!(
                    rejected.note.as_deref().unwrap_or_default().starts_with("undeliverable:"),
                    "{at}: {rejected:?}"
                );
                let told = report[origin].iter().any(|e| {
                    e["what"] == "notice"
                        && e["ref"] == reference
                        && e["state"] == "rejected"
                        && e["note"].as_str().unwrap_or_default().starts_with("【无法送达】")
                });
                assert!(told, "{at}: the origin's desk was told in its own format");
                figures.undeliverable_answered += 1;
            }
            _ => {}
        }
        let escalations =
            transfer.history.iter().filter(|h| h.state == HistoryEvent::Escalated).count();
        if flow == "late" {
            assert!(transfer.overdue, "{at}: signed three seconds late, with two to sign");
            assert_eq!(escalations, 1, "{at}: the miss is counted once: {:#?}", transfer.history);
            figures.misses_counted += 1;
        } else {
            assert_eq!(escalations, 0, "{at}: nothing else is late: {:#?}", transfer.history);
        }
        figures.ended += 1;
    }
    // Nothing doubled: one transfer per sender's reference, and each destination saw each
    // transfer as new once (a retry may arrive again; the desk knows it by its id).
    assert_eq!(transfers.len(), expected_ends, "{backend}: one transfer per case and re-route");
    for (endpoint, events) in &report {
        let mut first: BTreeMap<&str, usize> = BTreeMap::new();
        for e in events.iter().filter(|e| e["what"] == "received" && e["first"] == true) {
            *first.entry(e["ref"].as_str().unwrap()).or_default() += 1;
        }
        figures.doubled += first.values().filter(|n| **n > 1).count();
        let refused: Vec<&Value> = events
            .iter()
            .filter(|e| e["what"] == "refused" || e["what"] == "refused_document")
            .collect();
        assert!(refused.is_empty(), "{backend}: {endpoint} refused or was refused: {refused:?}");
        let absolute: Vec<&Value> =
            events.iter().filter(|e| e["what"] == "absolute_form").collect();
        assert!(
            absolute.is_empty(),
            "{backend}: requests in absolute form reached {endpoint}: {absolute:?}"
        );
    }
    eprintln!(
        "{backend}: {} cases and {} re-routes: {} ended as their flow says, lost {}, doubled {}, misses counted {}, undeliverable answered {}",
        cases.len(),
        expected_ends - cases.len(),
        figures.ended,
        figures.lost,
        figures.doubled,
        figures.misses_counted,
        figures.undeliverable_answered
    );
    assert_eq!((figures.lost, figures.doubled), (0, 0), "{backend}");
}

/// A child process that is killed when the test ends, passed or failed.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[derive(Default)]
struct Figures {
    ended: usize,
    lost: usize,
    doubled: usize,
    misses_counted: usize,
    undeliverable_answered: usize,
}

/// The origin desk heard of every step of a normal flow, in order.
fn assert_notices_in_order(
    report: &BTreeMap<String, Vec<Value>>,
    origin: &str,
    reference: &str,
    at: &str,
) {
    let heard: Vec<&str> = report[origin]
        .iter()
        .filter(|e| e["what"] == "notice" && e["ref"] == reference)
        .map(|e| e["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        heard,
        ["received", "accepted", "in_progress", "in_progress", "resolved"],
        "{at}: the origin's desk heard"
    );
}

/// Every transfer in the store, by id.
async fn all_transfers(store: &Store) -> BTreeMap<String, Transfer> {
    let mut all = BTreeMap::new();
    let mut after = None;
    loop {
        let filter =
            TransferFilter { limit: 500, after: after.clone(), ..TransferFilter::default() };
        let page = store.transfers(&filter).await.unwrap();
        let full = page.len() == 500;
        for t in page {
            after = Some(t.transfer_id.clone());
            all.insert(t.transfer_id.clone(), t);
        }
        if !full {
            break;
        }
    }
    all
}

fn read_line(reader: &mut impl BufRead, prefix: &str) -> String {
    loop {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).unwrap() > 0, "the desks ended before {prefix}");
        if let Some(rest) = line.strip_prefix(prefix) {
            return rest.to_string();
        }
    }
}
