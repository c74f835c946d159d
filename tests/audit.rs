//! The audit trail: a transfer's life, its deliveries and refusals are all in it, hash-chained;
//! `liandong audit verify` finds a changed, a removed and a reordered entry and names the first
//! bad one; `liandong audit export` prints one transfer's evidence.

use std::path::Path;

use crate::common;
use common::liandong;
use common::net::{eventually, start_on_free_port, Client, Receiver, Site};

async fn sql(db: &Path, statement: &str) {
    use sqlx::Connection;
    let mut conn =
        sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display())).await.unwrap();
    sqlx::query(statement).execute(&mut conn).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trail_holds_every_event_and_verify_finds_tampering() {
    let site = Site::new("audit");
    let destination = Receiver::start(&site, "330200/12345").await;
    site.push_to("330200/12345", &destination.url());
    let (addr, _, stop) = start_on_free_port(&site).await;
    let police = Client::for_endpoint(&site, "330200/110", addr);
    let sample = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/spec/samples/jjd-json/transfer-ningbo-township.json"),
    )
    .unwrap();
    let answer = police.post("/v1/native/330200/110/transfers", sample).await;
    let id = answer.header("x-liandong-transfer-id").unwrap();
    eventually(20, "delivered", || !destination.received().is_empty()).await;
    // a refusal: the 12345 reads a transfer it is a party to, the Beijing 110 may not
    let beijing = Client::for_endpoint(&site, "110000/110", addr);
    let refused = beijing.get(&format!("/v1/transfers/{id}")).await;
    assert_eq!(refused.status, 403);
    let request_id = refused.header("x-request-id").expect("every answer carries its request id");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let _ = stop.send(());
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let config = site.config.to_str().unwrap();
    let verified = liandong(&["audit", "verify", "--config", config]);
    assert!(verified.status.success(), "{}", String::from_utf8_lossy(&verified.stderr));
    assert!(String::from_utf8_lossy(&verified.stdout).contains("the audit trail is intact"));

    let export = liandong(&["audit", "export", "--config", config, "--transfer", &id]);
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&export.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let actions: Vec<&str> = lines.iter().map(|l| l["action"].as_str().unwrap()).collect();
    // The sample was sent in 2023: it arrives long past its deadlines, overdue on arrival.
    assert_eq!(
        actions,
        ["transfer.submitted", "transfer.escalated", "transfer.delivered"],
        "{lines:?}"
    );
    assert_eq!(lines[0]["actor"], "330200/110");
    assert_eq!(lines[1]["actor"], "gateway");
    // One entry for the delivery: the state it recorded and the receipt that confirmed it.
    assert_eq!(lines[2]["actor"], "330200/12345");
    assert_eq!(lines[2]["detail"]["state"], "delivered");
    assert_eq!(lines[2]["detail"]["delivery"]["destination"], "330200/12345");
    assert_eq!(lines[2]["detail"]["delivery"]["kind"], "transfer");
    assert!(lines[0]["detail"]["document_sha256"].as_str().is_some_and(|h| h.len() == 64));
    let refusals = liandong(&["audit", "verify", "--config", config, "--json"]);
    assert!(refusals.status.success());

    // every kind of tampering is found, and the first bad entry named
    let db = site.dir.join("liandong.db");
    let mut copies = Vec::new();
    for name in ["changed.db", "removed.db", "reordered.db"] {
        let path = site.dir.join(name);
        sql(&db, &format!("VACUUM INTO '{}'", path.display())).await;
        copies.push(path);
    }
    let (changed, removed, reordered) = (copies[0].clone(), copies[1].clone(), copies[2].clone());
    sql(&changed, "UPDATE audit SET actor = '330200/12345' WHERE action = 'transfer.submitted'")
        .await;
    sql(&removed, "DELETE FROM audit WHERE action = 'transfer.escalated'").await;
    // swap the first two entries (the configuration load and the submission)
    {
        use sqlx::Connection;
        let mut conn =
            sqlx::SqliteConnection::connect(&format!("sqlite://{}", reordered.display()))
                .await
                .unwrap();
        let seqs: Vec<i64> = sqlx::query_scalar("SELECT seq FROM audit ORDER BY seq LIMIT 2")
            .fetch_all(&mut conn)
            .await
            .unwrap();
        for statement in [
            format!("UPDATE audit SET seq = -1 WHERE seq = {}", seqs[0]),
            format!("UPDATE audit SET seq = {} WHERE seq = {}", seqs[0], seqs[1]),
            format!("UPDATE audit SET seq = {} WHERE seq = -1", seqs[1]),
        ] {
            sqlx::query(&statement).execute(&mut conn).await.unwrap();
        }
    }
    let cases = [
        (&changed, "transfer.submitted", "was changed"),
        (
            &removed,
            "transfer.delivered",
            "an entry between them was removed, or entries were reordered",
        ),
        (&reordered, "", "does not start the chain"),
    ];
    for (file, _, expected) in cases {
        let text = std::fs::read_to_string(&site.config).unwrap().replace(
            "path = \"liandong.db\"",
            &format!("path = \"{}\"", file.file_name().unwrap().to_str().unwrap()),
        );
        let tampered = site.dir.join("tampered.toml");
        std::fs::write(&tampered, text).unwrap();
        let output = liandong(&["audit", "verify", "--config", tampered.to_str().unwrap()]);
        assert_eq!(output.status.code(), Some(1), "{}", file.display());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.starts_with("audit entry ") && stderr.contains(expected),
            "{}: {stderr}",
            file.display()
        );
    }
    // the audit trail names the refusal too
    use sqlx::Connection;
    let mut conn =
        sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display())).await.unwrap();
    let refused: (String, String) =
        sqlx::query_as("SELECT actor, detail FROM audit WHERE action = 'refused'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(refused.0, "liandong://endpoint/110000/110");
    let detail: serde_json::Value = serde_json::from_str(&refused.1).unwrap();
    assert_eq!(detail["route"], format!("GET /v1/transfers/{id}"), "{detail}");
    assert_eq!(detail["reason"], "identity", "{detail}");
    assert_eq!(
        detail["request_id"], request_id,
        "the entry an integrator's quoted id finds: {detail}"
    );
    let loaded: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM audit WHERE action = 'config.loaded'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(loaded, 1);
}

/// Each gateway writes its own chain, named for its replica, even with two in one process:
/// the name belongs to the gateway's store, not to the process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_in_one_process_keep_their_own_chains() {
    use sqlx::Connection;
    let (first, second) = (Site::new("audit-chain-a"), Site::new("audit-chain-b"));
    let (a, admin_a, _stop_a) = start_on_free_port(&first).await;
    let (b, admin_b, _stop_b) = start_on_free_port(&second).await;
    common::crash::wait_ready(admin_a).await;
    common::crash::wait_ready(admin_b).await;
    for (site, addr) in [(&first, a), (&second, b)] {
        let db = format!("sqlite://{}", site.dir.join("liandong.db").display());
        let mut conn = sqlx::SqliteConnection::connect(&db).await.unwrap();
        let chains: Vec<String> = sqlx::query_scalar("SELECT DISTINCT replica FROM audit")
            .fetch_all(&mut conn)
            .await
            .unwrap();
        assert_eq!(chains.len(), 1, "{chains:?}");
        assert!(chains[0].ends_with(&format!(":{}", addr.port())), "{chains:?} for {addr}");
    }
}
