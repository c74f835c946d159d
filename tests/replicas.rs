//! Two gateway replicas on one PostgreSQL database: submissions arrive through both, the
//! destination receives each transfer once (two replicas never deliver the same item at once),
//! and a `Watch` on one replica sees every transfer submitted through either, in order, once;
//! the same for shared dataset records read as changes from one replica.

use std::collections::BTreeMap;

use liandong::proto::v1::{self, transfer_service_client::TransferServiceClient};

use crate::common;
use common::crash::{
    config_on_free_ports, gateway_command, postgres_schema, start_replicas, transfers_by_case,
    wait_ready,
};
use common::net::ConfigEdit;
use common::net::{eventually, grpc_channel, Client, Receiver, Site};

fn document(i: usize) -> Vec<u8> {
    let sample = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/spec/samples/jjd-json/transfer-ningbo-township.json"),
    )
    .unwrap();
    sample
        .replace("LZ202305080001", &format!("REP-{i:05}"))
        .replace("JJ202305080001", &format!("JJR{i:05}"))
        .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_the_work_without_doubling_and_a_watch_sees_both() {
    let store = postgres_schema("replicas").await;
    let site = Site::new("replicas");
    let destination = Receiver::start(&site, "330200/12345").await;
    site.push_to("330200/12345", &destination.url());
    let mut replicas = start_replicas(&site, &store).await;

    // a watch on replica a, from the beginning
    let channel = grpc_channel(&site, "330200/12345", replicas[0].1.port()).await;
    let mut watch = TransferServiceClient::new(channel)
        .watch(v1::WatchRequest { cursor: String::new(), from_now: false })
        .await
        .unwrap()
        .into_inner();

    // 300 submissions, alternately through a and b, from 8 concurrent clients
    let total = 300;
    let clients: Vec<Client> = replicas
        .iter()
        .map(|(_, https, _)| Client::for_endpoint(&site, "330200/110", *https))
        .collect();
    let mut tasks = Vec::new();
    for worker in 0..8 {
        let clients = clients.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in (worker..total).step_by(8) {
                let answer =
                    clients[i % 2].post("/v1/native/330200/110/transfers", document(i)).await;
                assert_eq!(answer.status, 200);
                ids.push(answer.header("x-liandong-transfer-id").unwrap());
            }
            ids
        }));
    }
    let mut submitted = Vec::new();
    for task in tasks {
        submitted.extend(task.await.unwrap());
    }
    assert_eq!(submitted.len(), total);

    // the watch on a sees all of them, once each
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    while seen.values().sum::<usize>() < total {
        let event = watch.message().await.unwrap().unwrap();
        if event.kind == "submitted" {
            *seen.entry(event.transfer.unwrap().transfer_id).or_default() += 1;
        }
    }
    assert_eq!(seen.len(), total, "every transfer, through either replica");
    assert!(seen.values().all(|n| *n == 1), "nothing twice");

    // every transfer reaches the destination exactly once (it never failed, so no retries)
    eventually(60, "all delivered", || destination.received().len() >= total).await;
    let mut delivered: BTreeMap<String, usize> = BTreeMap::new();
    for received in destination.received() {
        *delivered.entry(received.transfer_id.unwrap()).or_default() += 1;
    }
    assert_eq!(delivered.len(), total);
    let doubled: Vec<_> = delivered.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "delivered twice by the two replicas: {doubled:?}");

    // shared data too: records written through both replicas reach a follower of one, once each
    let owners: Vec<Client> = replicas
        .iter()
        .map(|(_, https, _)| Client::for_endpoint(&site, "330200/12345", *https))
        .collect();
    let records = 40;
    for i in 0..records {
        let body = serde_json::json!({"version": 1, "body": {"unit": {"code": format!("U{i}"), "name": "单位"}}});
        let answer = owners[i % 2]
            .request(
                "PUT",
                &format!("/v1/datasets/directory/records/330203{i:03}/NP07"),
                body.to_string().into_bytes(),
            )
            .await
            .unwrap();
        assert_eq!(answer.status, 200);
    }
    let reader = Client::for_endpoint(&site, "330200/110", replicas[0].1);
    let mut cursor = String::new();
    let mut keys: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..200 {
        let page = reader
            .get(&format!("/v1/datasets/directory/changes?cursor={cursor}&limit=7"))
            .await
            .json();
        for change in page["changes"].as_array().unwrap() {
            *keys.entry(change["record"]["key"].as_str().unwrap().to_string()).or_default() += 1;
        }
        cursor = page["cursor"].as_str().unwrap().to_string();
        if keys.len() == records {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(keys.len(), records, "every record, through either replica");
    assert!(keys.values().all(|n| *n == 1), "nothing twice: {keys:?}");
    for (child, _, _) in &mut replicas {
        let _ = child.kill();
    }
}

/// One of two replicas is killed while it holds deliveries: the other delivers everything once
/// the dead replica's leases run out — nothing lost, no case under two transfer ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_while_delivering_leaves_nothing_undelivered() {
    let store = postgres_schema("replica_kill").await;
    let site = Site::new("replica-kill");
    let destination = Receiver::start(&site, "330200/12345").await;
    site.push_to("330200/12345", &destination.url());
    // short delivery timeouts, so a dead replica's leases (3 × timeout + 5 s) run out soon
    site.edit_config(|t| {
        t.must_replace("timeout = \"10s\"", "timeout = \"1s\"")
            .must_replace("initial_backoff = \"1s\"", "initial_backoff = \"200ms\"")
            .must_replace("max_backoff = \"5m\"", "max_backoff = \"1s\"")
    });
    let mut replicas = start_replicas(&site, &store).await;
    // the destination is down while 200 transfers pile up through both replicas
    destination.up.store(false, std::sync::atomic::Ordering::SeqCst);
    let total = 200;
    let clients: Vec<Client> = replicas
        .iter()
        .map(|(_, https, _)| Client::for_endpoint(&site, "330200/110", *https))
        .collect();
    let mut submitted = BTreeMap::new();
    for i in 0..total {
        let answer =
            clients[i % 2].post("/v1/native/330200/110/transfers", document(10_000 + i)).await;
        assert_eq!(answer.status, 200);
        submitted.insert(answer.header("x-liandong-transfer-id").unwrap(), i);
    }
    // it comes back; replica a is killed as the deliveries start flowing
    destination.up.store(true, std::sync::atomic::Ordering::SeqCst);
    eventually(30, "deliveries flowing", || !destination.received().is_empty()).await;
    let killed_at = std::time::Instant::now();
    replicas[0].0.kill().unwrap();
    replicas[0].0.wait().unwrap();
    eventually(90, "every transfer delivered by the surviving replica", || {
        let got: std::collections::BTreeSet<String> =
            destination.received().into_iter().filter_map(|r| r.transfer_id).collect();
        submitted.keys().all(|id| got.contains(id))
    })
    .await;
    let by_case = transfers_by_case(&destination);
    assert_eq!(by_case.len(), total, "every case delivered");
    assert!(by_case.values().all(|ids| ids.len() == 1), "no case under two transfer ids");
    println!(
        "replica killed while delivering: {total} delivered, all within {} ms of the kill",
        killed_at.elapsed().as_millis()
    );
    let _ = replicas[1].0.kill();
}

/// A replica name is its audit chain: a second gateway under a name a running one holds is
/// refused at start, naming the holder; a gateway killed outright frees its name on this host at
/// once (its process is gone), and a clean stop gives the name back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_name_a_running_gateway_holds_is_refused() {
    let store = postgres_schema("replica_names").await;
    let site = Site::new("replica-names");
    let start = |name: &str| {
        let (config, _, admin) = config_on_free_ports(&site, name);
        let mut command = gateway_command(&site, &config, Some(&store));
        command.env("LIANDONG_REPLICA", "twin");
        (command.spawn().unwrap(), admin)
    };
    let (mut first, admin) = start("first");
    wait_ready(admin).await;

    let (mut second, _) = start("second");
    let status = tokio::task::spawn_blocking(move || second.wait().unwrap()).await.unwrap();
    assert!(!status.success(), "a second gateway under the same name is refused");
    let log = std::fs::read_to_string(site.dir.join("gateway.log")).unwrap();
    assert!(log.contains("replica name \"twin\" is held by a running gateway"), "{log}");

    // killed outright: its name is free again at once on this host (its process is gone)
    first.kill().unwrap();
    first.wait().unwrap();
    let (mut third, admin) = start("third");
    wait_ready(admin).await;
    // a clean stop gives the name back
    let stopped = std::process::Command::new("kill")
        .args(["-TERM", &third.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    assert!(tokio::task::spawn_blocking(move || third.wait().unwrap()).await.unwrap().success());
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&store).await.unwrap();
    let held: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM replicas WHERE name = 'twin'")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(held, 0, "the name was given back");
}
