//! Shared data through the running gateway, over real mutual TLS: two gRPC followers — one
//! disconnected mid-way and resumed from its cursor after a gateway restart — end with
//! identical copies, tombstones included; a `Watch` stream delivers new writes; the HTTPS
//! routes enforce ownership and versions; reconciliation answers over both fronts.

use std::path::Path;

use liandong::proto::v1::{
    self, sync_service_client::SyncServiceClient, transfer_service_client::TransferServiceClient,
};
use liandong::sync::follower::{channel, Follower};
use serde_json::json;
use tonic::transport::Channel;

use crate::common;
use common::net::ConfigEdit;
use common::net::{start_gateway, start_on_free_port, Client, Site};

async fn connect(site: &Site, name: &str, port: u16) -> Channel {
    let dir = site.dir.join("identities");
    let file = name.replace('/', "-");
    channel(
        &format!("https://localhost:{port}"),
        &site.dir.join("ca.pem"),
        &dir.join(format!("{file}.pem")),
        &dir.join(format!("{file}-key.pem")),
    )
    .await
    .unwrap()
}

fn put(key: &str, version: u64, name: &str) -> v1::PutRequest {
    v1::PutRequest {
        dataset: "directory".into(),
        key: key.into(),
        version,
        deleted: false,
        body_json: json!({"unit": {"code": key, "name": name}}).to_string(),
        updated_at: None,
        force: false,
    }
}

fn delete(key: &str, version: u64) -> v1::PutRequest {
    v1::PutRequest {
        dataset: "directory".into(),
        key: key.into(),
        version,
        deleted: true,
        body_json: String::new(),
        updated_at: None,
        force: true, // the tests delete townships no county record covers
    }
}

async fn rebind(port: u16) -> tokio::net::TcpListener {
    loop {
        match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
            Ok(listener) => return listener,
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_followers_end_identical_across_a_disconnect_and_a_restart() {
    let site = Site::new("sync-followers");
    let (addr, _, stop) = start_on_free_port(&site).await;
    let port = addr.port();

    let mut owner = SyncServiceClient::new(connect(&site, "330200/12345", port).await);
    for i in 0..120 {
        owner.put(put(&format!("330203{i:03}/NP07"), 1, "初版")).await.unwrap();
    }
    // follower a: all the way; follower b: only the snapshot's first page, then it drops
    let mut a_client = SyncServiceClient::new(connect(&site, "330200/110", port).await);
    let mut a = Follower::new("directory");
    a.catch_up(&mut a_client, 50).await.unwrap();
    assert_eq!(a.live().len(), 120);
    let mut b = {
        let mut b_client = SyncServiceClient::new(connect(&site, "operator-ops", port).await);
        let first = b_client
            .snapshot(v1::SnapshotRequest {
                dataset: "directory".into(),
                page_token: String::new(),
                page_size: 40,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(first.records.len(), 40);
        // b completes its snapshot, then disconnects
        let mut b = Follower::new("directory");
        let mut token = first.next_page_token.clone();
        for record in first.records {
            b.apply(record);
        }
        while !token.is_empty() {
            let page = b_client
                .snapshot(v1::SnapshotRequest {
                    dataset: "directory".into(),
                    page_token: token,
                    page_size: 40,
                })
                .await
                .unwrap()
                .into_inner();
            for record in page.records {
                b.apply(record);
            }
            b.cursor = page.cursor;
            token = page.next_page_token;
        }
        b
    };
    assert_eq!(b.live().len(), 120);

    // while b is away: updates, deletions (tombstones), new records; then the gateway restarts
    for i in 0..30 {
        owner.put(put(&format!("330203{i:03}/NP07"), 2, "二版")).await.unwrap();
    }
    for i in 30..40 {
        owner.put(delete(&format!("330203{i:03}/NP07"), 2)).await.unwrap();
    }
    owner.put(put("330203500/NP07", 1, "新增")).await.unwrap();
    let _ = stop.send(());
    let (_, _stop) = start_gateway(&site, rebind(port).await).await;
    let mut owner = SyncServiceClient::new(connect(&site, "330200/12345", port).await);
    owner.put(put("330203501/NP07", 1, "重启后")).await.unwrap();

    // both resume from their cursors on the restarted gateway
    let mut a_client = SyncServiceClient::new(connect(&site, "330200/110", port).await);
    let a_applied = a.catch_up(&mut a_client, 50).await.unwrap();
    assert_eq!(a_applied, 42, "only what came after its cursor: 30 updates, 10 deletions, 2 new");
    let mut b_client = SyncServiceClient::new(connect(&site, "operator-ops", port).await);
    b.catch_up(&mut b_client, 7).await.unwrap();
    assert_eq!(a.copy, b.copy, "identical copies, tombstones included");
    assert_eq!(a.live().len(), 112);
    assert!(a.copy["330203035/NP07"].deleted, "the tombstone propagated");
    assert_eq!(a.copy["330203005/NP07"].version, 2);

    // a watch from the end delivers the next write, once
    let mut watch = a_client
        .watch(v1::ChangesRequest {
            dataset: "directory".into(),
            cursor: a.cursor.clone(),
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner();
    owner.put(put("330203502/NP07", 1, "实时")).await.unwrap();
    let change = tokio::time::timeout(std::time::Duration::from_secs(10), watch.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(change.record.unwrap().key, "330203502/NP07");

    // refusals carry the proper codes
    let status = a_client.put(put("330203000/NP07", 3, "冒名")).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    let status = owner.put(put("330203000/NP07", 1, "旧版本")).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(status.message().contains("version 2"), "{}", status.message());
    let status = owner.put(put("bad-key", 1, "x")).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().starts_with("key:"), "{}", status.message());
    let status = a_client
        .changes(v1::ChangesRequest { dataset: "nonsense".into(), cursor: String::new(), limit: 0 })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    // the categories were seeded at start
    let jiangxi = a_client
        .get(v1::GetRequest { dataset: "categories".into(), key: "360000/110/070301".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(jiangxi.owner, "360000/110");
}

fn document(reference: &str) -> Vec<u8> {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/spec/samples/jjd-json/transfer-ningbo-township.json"),
    )
    .unwrap()
    .replace("LZ202305080001", reference)
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_datasets_routing_and_reconciliation() {
    let site = Site::new("sync-https");
    let (addr, _, _stop) = start_on_free_port(&site).await;
    let hotline = Client::for_endpoint(&site, "330200/12345", addr);
    let police = Client::for_endpoint(&site, "330200/110", addr);

    // the owner writes the township's handling unit for wage disputes; others may not
    let record = json!({"version": 1, "body": {"unit": {"code": "GQ-LB", "name": "高桥镇劳动保障所"}, "hours": "8:30-17:00"}});
    let answer = hotline
        .request(
            "PUT",
            "/v1/datasets/directory/records/330203101/NP03",
            record.to_string().into_bytes(),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
    assert_eq!(answer.json()["changed"], true);
    let again = hotline
        .request(
            "PUT",
            "/v1/datasets/directory/records/330203101/NP03",
            record.to_string().into_bytes(),
        )
        .await
        .unwrap();
    assert_eq!(
        (again.status, again.json()["changed"].as_bool()),
        (200, Some(false)),
        "a repeat is harmless"
    );
    let stale = json!({"version": 1, "body": {"unit": {"name": "别处"}}});
    let answer = hotline
        .request(
            "PUT",
            "/v1/datasets/directory/records/330203101/NP03",
            stale.to_string().into_bytes(),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, 409);
    assert!(
        answer.json()["error"]["message"].as_str().unwrap().contains("version 1"),
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    let answer = police
        .request(
            "PUT",
            "/v1/datasets/directory/records/330203101/NP03",
            record.to_string().into_bytes(),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, 403);
    let answer = police.get("/v1/datasets/directory/records/330203101/NP03").await;
    assert_eq!(answer.json()["body"]["unit"]["name"], "高桥镇劳动保障所");
    let changes = police.get("/v1/datasets/directory/changes?cursor=&limit=10").await.json();
    assert_eq!(changes["changes"].as_array().unwrap().len(), 1);
    let snapshot = police.get("/v1/datasets/directory/snapshot?page_size=10").await.json();
    assert_eq!(snapshot["records"][0]["key"], "330203101/NP03");
    assert_eq!(police.get("/v1/datasets/nonsense/snapshot").await.status, 400);

    // the knowledge base searched over HTTPS and gRPC
    let entry = json!({"version": 1, "body": {"title": "劳资纠纷怎么投诉", "body": "拨打12333或到人社局劳动监察大队。", "categories": ["NP03"]}});
    let answer = hotline
        .request("PUT", "/v1/datasets/knowledge/records/wage-howto", entry.to_string().into_bytes())
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
    let found = police.get("/v1/knowledge?q=%E5%8A%B3%E8%B5%84&category=NP03").await.json();
    assert_eq!(
        (found["total"].as_u64(), found["records"][0]["key"].as_str()),
        (Some(1), Some("wage-howto")),
        "{found}"
    );
    let refused = police.get("/v1/knowledge?q=").await;
    assert_eq!(refused.status, 400);
    assert!(
        refused.json()["error"]["message"].as_str().unwrap().starts_with("q: "),
        "{}",
        String::from_utf8_lossy(&refused.body)
    );
    let mut grpc = SyncServiceClient::new(connect(&site, "330200/110", addr.port()).await);
    let found = grpc
        .search(v1::SearchRequest {
            q: "劳动 监察".into(),
            category: String::new(),
            include_expired: false,
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((found.total, found.records[0].key.as_str()), (1, "wage-howto"));
    let refused = grpc
        .search(v1::SearchRequest {
            q: "劳动".into(),
            category: "XX".into(),
            include_expired: false,
            limit: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(refused.message().starts_with("category:"), "{}", refused.message());

    // a transfer item the 110 retires from its list is refused by name in its own receipt
    let retire = json!({"version": 2, "deleted": true});
    let answer = police
        .request(
            "PUT",
            "/v1/datasets/categories/records/330200/110/070300",
            retire.to_string().into_bytes(),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
    let answer = police.post("/v1/native/330200/110/transfers", document("RETIRED-1")).await;
    let receipt = String::from_utf8_lossy(&answer.body).to_string();
    assert!(
        answer.status >= 400
            && receipt.contains("JQXX.JQLB")
            && receipt.contains("挪车求助")
            && receipt.contains("retired"),
        "{receipt}"
    );

    // a wage dispute from the township is routed to that unit
    let wage = String::from_utf8(document("WAGE-1"))
        .unwrap()
        .replace("\"070300\"", "\"060300\"")
        .replace("挪车求助", "劳资纠纷");
    let answer = police.post("/v1/native/330200/110/transfers", wage.into_bytes()).await;
    assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
    let id = answer.header("x-liandong-transfer-id").unwrap();
    let transfer = police.get(&format!("/v1/transfers/{id}")).await.json();
    let routed =
        transfer["history"].as_array().unwrap().iter().find(|h| h["state"] == "routed").cloned();
    assert_eq!(routed.map(|h| h["unit"]["code"].clone()), Some(json!("GQ-LB")), "{transfer}");

    // reconciliation: the 110 says WAGE-1 is closed and has one the gateway never saw
    let view = json!({"transfers": [{"reference": "WAGE-1", "state": "closed"}, {"reference": "GHOST", "state": "submitted"}]});
    let report = police.post("/v1/reconcile", view.to_string().into_bytes()).await.json();
    let kinds: Vec<&str> = report["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["state_differs", "unknown_here"], "{report}");
    let mut grpc = TransferServiceClient::new(connect(&site, "330200/12345", addr.port()).await);
    let report = grpc
        .reconcile(v1::ReconcileRequest { transfers: vec![], since: None, until: None })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(report.differences.len(), 1, "the 12345 has not heard of it");
    assert_eq!(report.differences[0].kind, "unknown_there");
    assert_eq!(report.differences[0].reference, id, "the destination knows it by the gateway's id");
}

/// A follower over its read quota waits as the gateway's RetryInfo says and carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_over_its_read_quota_waits_and_finishes() {
    let site = Site::new("sync-quota");
    site.edit_config(|t| {
        format!(
            "{t}\n[limits.operator]\nsubmit = {{ per_second = 1, burst = 1 }}\nimmediate = {{ per_second = 1, burst = 1 }}\nstatus = {{ per_second = 1, burst = 1 }}\nread = {{ per_second = 20, burst = 2 }}\n"
        )
    });
    let (addr, _, _stop) = start_on_free_port(&site).await;
    let port = addr.port();
    let mut owner = SyncServiceClient::new(connect(&site, "330200/12345", port).await);
    for i in 0..60 {
        owner.put(put(&format!("330203{i:03}/NP07"), 1, "单位")).await.unwrap();
    }
    let mut client = SyncServiceClient::new(connect(&site, "operator-ops", port).await);
    let mut follower = Follower::new("directory");
    let applied = follower.catch_up(&mut client, 5).await.expect("throttled, not failed");
    assert_eq!(applied, 60);
    assert_eq!(follower.live().len(), 60);
}

/// `liandong datasets import` in its own process while desks submit to the running gateway on
/// the same SQLite file: the import's transaction takes the write lock up front, so it waits
/// its turn instead of failing with "database is locked", and every submission is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_succeeds_while_desks_submit() {
    import_while_desks_submit(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_succeeds_while_desks_submit_on_postgres() {
    import_while_desks_submit(Some(common::crash::postgres_schema("import_live").await)).await;
}

/// Three imports of 20,000 directory records by the CLI while a desk submits every 25 ms: every
/// import succeeds and every submission is answered 200.
async fn import_while_desks_submit(postgres: Option<String>) {
    let site = Site::new("import-live");
    if let Some(url) = &postgres {
        site.edit_config(|text| {
            text.must_replace(
                "kind = \"sqlite\"\npath = \"liandong.db\"",
                &format!("kind = \"postgres\"\nurl = \"{url}\"\npool = 4"),
            )
        });
        assert!(std::fs::read_to_string(&site.config).unwrap().contains("kind = \"postgres\""));
    }
    let (addr, _, _stop) = start_on_free_port(&site).await;
    let mut csv = String::from("key,owner,version,unit.code,unit.name,phone\n");
    for i in 0..20_000 {
        csv.push_str(&format!(
            "3302{:02}{:03}/NP07,330200/12345,1,U{i},单位{i},0574-8700{:04}\n",
            i % 100,
            i / 100,
            i % 10_000
        ));
    }
    let file = site.dir.join("directory.csv");
    std::fs::write(&file, csv).unwrap();
    let police = Client::for_endpoint(&site, "330200/110", addr);
    let sample = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/spec/samples/jjd-json/transfer-ningbo-township.json"),
    )
    .unwrap();
    let submitting = tokio::spawn(async move {
        let mut answers = Vec::new();
        for i in 0..60 {
            let body = sample.replace("LZ202305080001", &format!("IMP-{i}"));
            answers.push(
                police.post("/v1/native/330200/110/transfers", body.into_bytes()).await.status,
            );
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        answers
    });
    for round in 0..3 {
        let config = site.config.clone();
        let file = file.clone();
        let output = tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_liandong"))
                .args([
                    "datasets",
                    "import",
                    "--config",
                    config.to_str().unwrap(),
                    "directory",
                    file.to_str().unwrap(),
                ])
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        assert!(
            output.status.success(),
            "import {round}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let answers = submitting.await.unwrap();
    assert!(answers.iter().all(|s| *s == 200), "{answers:?}");
}

/// `liandong datasets follow` as an operator runs it, against the gateway in this process.
fn follow_cli(site: &Site, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_liandong"))
        .args([
            "datasets",
            "follow",
            "--config",
            site.config.to_str().unwrap(),
            "directory",
            "--as",
            "330200-110",
        ])
        .args(args)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_resumes_from_its_saved_cursor_watches_and_says_why_it_cannot_connect() {
    let site = Site::new("sync-follow-cli");
    let (addr, _, _stop) = start_on_free_port(&site).await;
    let server = addr.to_string();
    let mut owner = SyncServiceClient::new(connect(&site, "330200/12345", addr.port()).await);
    for i in 0..3 {
        owner.put(put(&format!("330203{i:03}/NP07"), 1, "单位")).await.unwrap();
    }
    let copy = site.dir.join("copy.jsonl");
    let copy_arg = copy.to_str().unwrap().to_string();
    let report = |output: &std::process::Output| -> serde_json::Value {
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        serde_json::from_slice(&output.stdout).unwrap()
    };
    let first = report(&follow_cli(&site, &["--server", &server, "--out", &copy_arg, "--json"]));
    assert_eq!(
        (first["records"].as_u64(), first["resumed_from"].is_null()),
        (Some(3), true),
        "{first}"
    );
    let cursor = std::fs::read_to_string(liandong::sync::follower::cursor_path(&copy)).unwrap();
    assert_eq!(cursor, first["cursor"].as_str().unwrap());

    // later: one changed, one deleted; the next run reads only those, from the saved cursor
    owner.put(put("330203001/NP07", 2, "新单位")).await.unwrap();
    owner.put(delete("330203002/NP07", 2)).await.unwrap();
    let second = report(&follow_cli(&site, &["--server", &server, "--out", &copy_arg, "--json"]));
    assert_eq!(second["resumed_from"].as_str(), Some(cursor.as_str()), "{second}");
    assert_eq!(
        (second["records"].as_u64(), second["live"].as_u64()),
        (Some(2), Some(2)),
        "{second}"
    );
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&copy)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "tombstones kept");
    assert_eq!(lines[1]["body"]["unit"]["name"], "新单位");
    assert_eq!(lines[2]["deleted"], true);

    // --watch: a change written later is printed as it comes and saved within a second or so
    /// Kills the child however the test ends.
    struct Watcher(std::process::Child);
    impl Drop for Watcher {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut watcher = Watcher(
        std::process::Command::new(env!("CARGO_BIN_EXE_liandong"))
            .args([
                "datasets",
                "follow",
                "--config",
                site.config.to_str().unwrap(),
                "directory",
                "--as",
                "330200-110",
            ])
            .args(["--server", &server, "--out", &copy_arg, "--watch", "--json"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stdout = watcher.0.stdout.take().unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let caught_up = lines_rx.recv_timeout(std::time::Duration::from_secs(20)).unwrap();
    assert!(caught_up.contains("\"records\":0"), "{caught_up}");
    owner.put(put("330203009/NP07", 1, "夜班")).await.unwrap();
    let change: serde_json::Value =
        serde_json::from_str(&lines_rx.recv_timeout(std::time::Duration::from_secs(20)).unwrap())
            .unwrap();
    assert_eq!(
        (change["key"].as_str(), change["version"].as_u64()),
        (Some("330203009/NP07"), Some(1)),
        "{change}"
    );
    owner.put(put("330203010/NP07", 1, "白班")).await.unwrap();
    lines_rx.recv_timeout(std::time::Duration::from_secs(20)).unwrap();
    common::net::eventually(5, "the copy saved", || {
        std::fs::read_to_string(&copy).unwrap().contains("330203009/NP07")
    })
    .await;
    drop(watcher);

    // when the gateway cannot be reached, it says why
    let closed =
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let output = follow_cli(&site, &["--server", &closed]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("Connection refused") && stderr.contains("is the gateway running"),
        "{stderr}"
    );
    let stranger = Site::new("sync-follow-stranger");
    let output = follow_cli(&stranger, &["--server", &server]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && stderr.contains("not signed by the CA given"), "{stderr}");
    let output = follow_cli(&site, &["--server", "http://x"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--server"));
}
