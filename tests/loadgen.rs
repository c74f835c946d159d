//! The load generator (`liandong bench`) counts what it claims: every submission it reports as
//! answered "ok" is one stored transfer — no more, no fewer — over native HTTPS, over gRPC and
//! straight to the store; its cases are taken now, so none is overdue on arrival (the
//! gateway's escalations would otherwise compete with the load being measured); and with
//! several identities each submits as itself, in its own format.

use crate::common;

use common::net::{start_on_free_port, Site};
use liandong::loadgen::{run, Plan, Report, Submitter};
use liandong::model::Timestamp;
use liandong::store::Store;

/// The site's configuration with the generator identity's quotas lifted, as docs/PERFORMANCE.md
/// runs it (the limiter still checks every call).
fn site(name: &str) -> Site {
    let site = Site::new(name);
    site.edit_config(|text| {
        let quota = "{ per_second = 1000000, burst = 1000000 }";
        format!("{text}\n[limits.endpoint]\nsubmit = {quota}\nimmediate = {quota}\nstatus = {quota}\nread = {quota}\n")
    });
    site
}

fn submitters(site: &Site, endpoints: &[&str]) -> Vec<Submitter> {
    endpoints
        .iter()
        .map(|endpoint| {
            let (cert, key) = site.identity(endpoint);
            Submitter { endpoint: endpoint.to_string(), cert, key }
        })
        .collect()
}

fn plan(site: &Site, url: String) -> Plan {
    Plan {
        url,
        ca: site.dir.join("ca.pem"),
        submitters: submitters(site, &["330200/110"]),
        concurrency: 4,
        duration: std::time::Duration::from_millis(800),
        rate: None,
        grpc: false,
        store_only: None,
        deliver: None,
        outage: None,
    }
}

async fn stored(store: &Store) -> i64 {
    store.count_by_state().await.unwrap().iter().map(|(_, n)| n).sum()
}

fn assert_clean(report: &Report, what: &str) {
    assert!(report.ok > 0, "{what}: nothing was answered: {report:?}");
    assert_eq!(report.errors, 0, "{what}: {report:?}");
    assert!(
        report.p50_ms > 0.0 && report.p50_ms <= report.p99_ms && report.p99_ms <= report.max_ms,
        "{what}: {report:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_submission_counted_is_one_transfer_taken_now() {
    let site = site("loadgen");
    let (addr, _, _stop) = start_on_free_port(&site).await;
    let url = format!("https://localhost:{}", addr.port());

    let native = run(plan(&site, url.clone())).await.unwrap();
    assert_clean(&native, "native");
    let grpc = run(Plan { grpc: true, ..plan(&site, url) }).await.unwrap();
    assert_clean(&grpc, "gRPC");

    let config = liandong::config::Config::load(&site.config).unwrap();
    let store = liandong::server::open_store(&config).await.unwrap();
    assert_eq!(
        stored(&store).await as u64,
        native.ok + grpc.ok,
        "one stored transfer per answer counted ok"
    );
    let overdue = store.overdue_candidates(Timestamp::now().unix_seconds(), 10).await.unwrap();
    assert!(
        overdue.is_empty(),
        "cases are taken now, not on the sample's date: {:?}",
        overdue[0].requested_at
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_only_baseline_writes_through_the_engine() {
    let site = site("loadgen-store");
    let config = liandong::config::Config::load(&site.config).unwrap();
    let report =
        run(Plan { store_only: Some(Box::new(config.clone())), ..plan(&site, String::new()) })
            .await
            .unwrap();
    assert_clean(&report, "store only");
    let store = liandong::server::open_store(&config).await.unwrap();
    assert_eq!(stored(&store).await as u64, report.ok);
    // what a 110 desk submitted a moment ago: from the 110, submitted, not overdue
    let tally = store.tally().await.unwrap();
    assert!(
        tally
            .iter()
            .all(|(from, state, overdue, _)| from == "110" && state == "submitted" && !overdue),
        "{tally:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_identities_each_submit_as_themselves_in_their_own_format() {
    let site = site("loadgen-identities");
    let (addr, _, _stop) = start_on_free_port(&site).await;
    // jjd-json, jqxx-xml in GBK, ticket-json: a 110 and a 12345
    let endpoints = ["330200/110", "210000/110", "110000/12345"];
    let report = run(Plan {
        submitters: submitters(&site, &endpoints),
        concurrency: 6,
        ..plan(&site, format!("https://localhost:{}", addr.port()))
    })
    .await
    .unwrap();
    assert_clean(&report, "three identities");
    assert_eq!(report.identities, 3);
    let config = liandong::config::Config::load(&site.config).unwrap();
    let store = liandong::server::open_store(&config).await.unwrap();
    let mut total = 0;
    for endpoint in endpoints {
        let sent = store
            .transfers_of(endpoint, None, None)
            .await
            .unwrap()
            .into_iter()
            .filter(|t| t.sender == endpoint)
            .count();
        assert!(sent > 0, "{endpoint} submitted nothing");
        total += sent as u64;
    }
    assert_eq!(total, report.ok);
}

/// A `--deliver` run at 200/s for `seconds` against a gateway pushing Ningbo 12345's transfers
/// to the generator, the destination down `from` for `lasting`: the report, and the store (with
/// its site, which holds its folder).
async fn run_delivering(
    name: &str,
    seconds: u64,
    from: std::time::Duration,
    lasting: std::time::Duration,
) -> (liandong::loadgen::Report, liandong::store::Store, Site) {
    let site = site(name);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    site.push_to("330200/12345", &format!("https://127.0.0.1:{port}/desk"));
    let (addr, _, _stop) = start_on_free_port(&site).await;
    let config = liandong::config::Config::load(&site.config).unwrap();
    let deliver = Plan {
        deliver: Some(Box::new(config.clone())),
        outage: Some(liandong::loadgen::Outage { from, lasting }),
        duration: std::time::Duration::from_secs(seconds),
        rate: Some(200.0),
        ..plan(&site, format!("https://localhost:{}", addr.port()))
    };
    let report = run(deliver).await.unwrap();
    assert_clean(&report, "deliver");
    (report, liandong::server::open_store(&config).await.unwrap(), site)
}

/// `--deliver`: the generator is also the destination, and what it reports arrived is what the
/// gateway delivered — each transfer it counted ok, once, with none left behind; with
/// `--outage` the destination is down first and the backlog arrives when it comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_counts_what_reached_the_destination() {
    let (report, store, _site) = run_delivering(
        "loadgen-deliver",
        2,
        std::time::Duration::ZERO,
        std::time::Duration::from_millis(1500),
    )
    .await;
    let delivery = report.delivery.expect("a delivery report");
    assert_eq!(
        (delivery.delivered, delivery.undelivered, delivery.repeated),
        (report.ok, 0, 0),
        "{delivery:?}"
    );
    assert!(
        delivery.backlog.iter().any(|[_, waiting]| *waiting > 0.0),
        "the outage left a backlog: {delivery:?}"
    );
    assert!(delivery.p50_ms > 0.0 && delivery.p50_ms <= delivery.p99_ms, "{delivery:?}");
    let minutes = &delivery.minutes;
    assert_eq!(minutes.iter().map(|m| m.sent).sum::<u64>(), report.ok, "{minutes:?}");
    assert_eq!(minutes.iter().map(|m| m.arrived).sum::<u64>(), report.ok, "{minutes:?}");
    assert_eq!(stored(&store).await as u64, report.ok);
}

/// `--outage-from`: the destination answers, goes down in the middle of the run (its
/// connections cut), and comes back; everything submitted arrives, the backlog the outage made
/// is reported, and the submissions went on throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_in_the_middle_of_a_run_is_survived() {
    let (report, store, _site) = run_delivering(
        "loadgen-outage-from",
        3,
        std::time::Duration::from_secs(1),
        std::time::Duration::from_millis(1500),
    )
    .await;
    let delivery = report.delivery.expect("a delivery report");
    assert_eq!((delivery.delivered, delivery.undelivered), (report.ok, 0), "{delivery:?}");
    let outage =
        delivery.after_outage.as_ref().unwrap_or_else(|| panic!("no drain figure: {delivery:?}"));
    assert!(outage.backlog > 0, "the outage left a backlog: {delivery:?}");
    // Before the outage the destination kept up; during it the backlog grew.
    let at = |second: f64| {
        delivery.backlog.iter().find(|[t, _]| *t >= second).map(|[_, waiting]| *waiting)
    };
    assert!(at(2.0) > at(1.0), "{delivery:?}");
    assert_eq!(stored(&store).await as u64, report.ok);
}
