//! Faults beyond crashes (tests/crash.rs) and PostgreSQL restarts: the SQLite store full. Writes
//! are refused with the sender's "busy" receipt and a clear reason, nothing already answered is
//! lost or damaged, and the gateway takes writes again when space returns.

use std::path::Path;

use crate::common;
use common::net::ConfigEdit;
use common::net::{start_gateway, Client, Site};

fn document(n: usize) -> Vec<u8> {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/spec/samples/jjd-json/transfer-ningbo-township.json"),
    )
    .unwrap()
    .replace("LZ202305080001", &format!("FULL-{n:05}"))
    .replace("JJ202305080001", &format!("JJF{n:05}"))
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_database_refuses_writes_clearly_loses_nothing_and_recovers() {
    let site = Site::new("disk-full");
    site.edit_config(|t| {
        t.must_replace("path = \"liandong.db\"", "path = \"liandong.db\"\nmax_size = \"1MB\"")
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (_, stop) = start_gateway(&site, listener).await;
    let police = Client::for_endpoint(&site, "330200/110", listener_addr(port));
    let mut answered = Vec::new();
    let mut refused = None;
    for n in 0..3000 {
        let answer = police.post("/v1/native/330200/110/transfers", document(n)).await;
        match answer.status {
            200 => answered.push(n),
            503 => {
                refused = Some((n, String::from_utf8_lossy(&answer.body).into_owned()));
                break;
            }
            other => {
                panic!("transfer {n}: HTTP {other}: {}", String::from_utf8_lossy(&answer.body))
            }
        }
    }
    let (first_refused, receipt) = refused.expect("the 1 MB store fills up");
    assert!(!answered.is_empty());
    assert!(receipt.contains("full"), "the busy receipt says why: {receipt}");
    // still full: a status or another submission is refused the same way, and reads still work
    assert_eq!(
        police.post("/v1/native/330200/110/transfers", document(first_refused + 1)).await.status,
        503
    );
    assert_eq!(police.get("/v1/transfers?limit=1").await.status, 200, "reads go on");
    let _ = stop.send(());
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    // nothing answered is missing, and the file is sound
    {
        use sqlx::Connection;
        let mut conn = sqlx::SqliteConnection::connect(&format!(
            "sqlite://{}",
            site.dir.join("liandong.db").display()
        ))
        .await
        .unwrap();
        let check: String =
            sqlx::query_scalar("PRAGMA integrity_check").fetch_one(&mut conn).await.unwrap();
        assert_eq!(check, "ok");
        let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM transfers")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(stored as usize, answered.len(), "every answered transfer, and nothing refused");
    }

    // space returns: the same gateway takes writes again, the refused document included
    site.edit_config(|t| t.must_replace("max_size = \"1MB\"", "max_size = \"64MB\""));
    let listener = loop {
        match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
            Ok(listener) => break listener,
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    };
    let (_, _stop) = start_gateway(&site, listener).await;
    let answer = police.post("/v1/native/330200/110/transfers", document(first_refused)).await;
    assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
    let again = police.post("/v1/native/330200/110/transfers", document(answered[0])).await;
    assert_eq!(again.status, 200, "a resend of an early one is the same transfer");
}

fn listener_addr(port: u16) -> std::net::SocketAddr {
    format!("127.0.0.1:{port}").parse().unwrap()
}
