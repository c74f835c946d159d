//! The abuse suite: hostile input over the real mTLS listener — malformed, oversized, deeply
//! nested, invalid GBK, entity expansion (billion laughs), external entities, a document that
//! claims another sender, a flood of idle connections — each refused clearly, the store left
//! unchanged, and the gateway serving an honest client throughout.

use crate::common;
use common::net::ConfigEdit;
use common::net::{metrics_text, sample, start_on_free_port, Client, Site};

/// The site's operator, as a client.
fn operator(site: &Site, addr: std::net::SocketAddr) -> Client {
    Client::new(
        site,
        &site.dir.join("identities/operator-ops.pem"),
        &site.dir.join("identities/operator-ops-key.pem"),
        addr,
    )
}

/// How many transfers the operator can see.
async fn stored(operator: &Client) -> usize {
    operator.get("/v1/transfers?limit=500").await.json()["transfers"].as_array().unwrap().len()
}

/// (what, who sends it, where, the body, the status expected, what the answer must say).
type Case<'a> = (&'a str, &'a Client, &'a str, Vec<u8>, u16, &'a str);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_documents_are_refused_and_change_nothing_while_others_are_served() {
    let site = Site::new("abuse");
    let (addr, _, _stop) = start_on_free_port(&site).await;
    let operator = operator(&site, addr);
    let police = Client::for_endpoint(&site, "330200/110", addr);
    let yunnan = Client::for_endpoint(&site, "530000/110", addr);
    let honest = || async {
        police
            .post(
                "/v1/native/330200/110/transfers",
                sample("jjd-json/transfer-ningbo-township.json"),
            )
            .await
            .status
    };
    assert_eq!(honest().await, 200);
    let before = stored(&operator).await;

    let deep_json = format!("{}{}", "{\"a\":".repeat(10_000), "}".repeat(10_000));
    let deep_xml =
        format!("<?xml version=\"1.0\"?>{}{}", "<JQXX>".repeat(5_000), "</JQXX>".repeat(5_000));
    let laughs = r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;"><!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]><JQXX><BJNR>&lol3;</BJNR></JQXX>"#;
    let external = r#"<?xml version="1.0"?><!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><JQXX><BJNR>&xxe;</BJNR></JQXX>"#;
    let mut bad_gbk = b"<?xml version=\"1.0\" encoding=\"GBK\"?><JQXX><BJNR>".to_vec();
    bad_gbk.extend_from_slice(&[0x81, 0x20, 0xff, 0xfe]);
    bad_gbk.extend_from_slice(b"</BJNR></JQXX>");
    let cases: Vec<Case<'_>> = vec![
        (
            "malformed JSON",
            &police,
            "/v1/native/330200/110/transfers",
            b"{\"LZBH\": ".to_vec(),
            400,
            "malformed JSON: EOF",
        ),
        (
            "not JSON at all",
            &police,
            "/v1/native/330200/110/transfers",
            vec![0u8; 64],
            400,
            "malformed JSON",
        ),
        (
            "deeply nested JSON",
            &police,
            "/v1/native/330200/110/transfers",
            deep_json.into_bytes(),
            400,
            "recursion limit exceeded",
        ),
        // over the 1 MiB limit: in the sender's own receipt, or the canonical error, naming it
        (
            "oversized",
            &police,
            "/v1/native/330200/110/transfers",
            vec![b' '; 2 << 20],
            413,
            "over the 1 MiB limit (1048576 bytes)",
        ),
        (
            "oversized XML",
            &yunnan,
            "/v1/native/530000/110/transfers",
            vec![b' '; 2 << 20],
            413,
            "over the 1 MiB limit",
        ),
        (
            "oversized canonical",
            &police,
            "/v1/transfers",
            vec![b' '; 2 << 20],
            413,
            "\"message\":\"body: over the 1 MiB limit",
        ),
        (
            "deeply nested XML",
            &yunnan,
            "/v1/native/530000/110/transfers",
            deep_xml.into_bytes(),
            400,
            "nested too deeply",
        ),
        // (named where it is: the DOCTYPE starts at column 22, after the declaration)
        (
            "billion laughs",
            &yunnan,
            "/v1/native/530000/110/transfers",
            laughs.as_bytes().to_vec(),
            400,
            "DOCTYPE is not allowed: line 1, column 22",
        ),
        (
            "external entity",
            &yunnan,
            "/v1/native/530000/110/transfers",
            external.as_bytes().to_vec(),
            400,
            "DOCTYPE is not allowed",
        ),
        ("invalid GBK", &yunnan, "/v1/native/530000/110/transfers", bad_gbk, 400, "GBK"),
        (
            "another endpoint's route",
            &police,
            "/v1/native/530000/110/transfers",
            sample("jqxx-xml/transfer-yunnan-gbk.xml"),
            403,
            "may send only as itself, not as 530000/110",
        ),
        (
            "a canonical request claiming another sender",
            &police,
            "/v1/transfers",
            impostor_canonical(),
            403,
            "may submit only as itself",
        ),
    ];
    for (what, client, path, body, status, says) in cases {
        // An oversized body is answered as soon as the limit is passed, while this client may
        // still be writing the rest: the server's close can then cut the write short before the
        // answer is read. That is the test client's race, not an answer; it asks again.
        let mut attempts = 0;
        let answer = loop {
            match client.request("POST", path, body.clone()).await {
                Ok(answer) => break answer,
                Err(e) if attempts < 5 && e.contains("writing a body") => attempts += 1,
                Err(e) => panic!("{what}: {e}"),
            }
        };
        assert_eq!(answer.status, status, "{what}: {}", String::from_utf8_lossy(&answer.body));
        let text = String::from_utf8_lossy(&answer.body);
        assert!(
            !says.is_empty() && text.contains(says),
            "{what}: the answer should say {says:?}: {text}"
        );
        assert_eq!(honest().await, 200, "{what}: an honest client is still served");
    }
    // the honest resends are the one transfer (the same reference), and nothing hostile was stored
    assert_eq!(stored(&operator).await, before, "hostile input stored nothing");
}

/// A canonical request from the Ningbo 110's certificate that says it is from Beijing.
fn impostor_canonical() -> Vec<u8> {
    let registry = liandong::formats::Registry::builtin();
    let mut request = registry
        .endpoint_named("330200/110")
        .unwrap()
        .read_transfer(&sample("jjd-json/transfer-ningbo-township.json"))
        .unwrap();
    request.from = "110000/110".parse().unwrap();
    request.sender_ref = "IMPOSTOR-1".into();
    serde_json::to_vec(&request).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_idle_connections_does_not_stop_an_honest_client() {
    let site = Site::new("abuse-flood");
    let (addr, _, _stop) = start_on_free_port(&site).await;
    // 400 connections that never start TLS, and 100 that send garbage instead of a handshake
    let mut idle = Vec::new();
    for i in 0..500 {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        if i % 5 == 0 {
            use tokio::io::AsyncWriteExt;
            let _ = tcp.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
        }
        idle.push(tcp);
    }
    let police = Client::for_endpoint(&site, "330200/110", addr);
    let started = std::time::Instant::now();
    let answer = police
        .post("/v1/native/330200/110/transfers", sample("jjd-json/transfer-ningbo-township.json"))
        .await;
    assert_eq!(answer.status, 200, "served while 500 connections hang");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "and promptly: {:?}",
        started.elapsed()
    );
    drop(idle);
}

/// A document posted to a path no route takes (a trailing slash, a typo) is answered 404 with
/// the canonical error naming the path, and nothing is stored; only a gRPC request gets gRPC's
/// UNIMPLEMENTED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_answer_404_and_store_nothing() {
    let site = Site::new("abuse-routes");
    let (addr, _, _stop) = start_on_free_port(&site).await;
    let operator = operator(&site, addr);
    let police = Client::for_endpoint(&site, "330200/110", addr);
    let document = sample("jjd-json/transfer-ningbo-township.json");
    for path in
        ["/v1/native/330200/110/transfers/", "/v1/native/330200/110/transfer", "/v2/transfers"]
    {
        let answer = police.post(path, document.clone()).await;
        assert_eq!(answer.status, 404, "{path}");
        assert!(
            answer.header("content-type").unwrap_or_default().starts_with("application/json"),
            "{path}"
        );
        assert_eq!(answer.header("grpc-status"), None, "{path}");
        let message = answer.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(message.contains(path) && message.contains("/v1/openapi.json"), "{message}");
    }
    assert_eq!(police.get("/nowhere").await.status, 404);
    assert_eq!(stored(&operator).await, 0, "nothing was stored");
    // the same document on its route is taken
    assert_eq!(police.post("/v1/native/330200/110/transfers", document).await.status, 200);
    // a gRPC call to no such method: gRPC's own answer
    let (answer, _) = police
        .raw(b"POST /liandong.v1.Nope/Nothing HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/grpc\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        .await;
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.to_lowercase().contains("grpc-status: 12"),
        "{answer}"
    );
}

/// Request headers over 64 KiB are answered 431 saying the limit (HTTP/1.1 over the real
/// listener); far over it, still 431.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_over_64_kib_are_answered_431_naming_the_limit() {
    let site = Site::new("abuse-headers");
    let (addr, _, _stop) = start_on_free_port(&site).await;
    let police = Client::for_endpoint(&site, "330200/110", addr);
    let request = |size: usize| {
        format!("GET /v1/endpoints HTTP/1.1\r\nhost: localhost\r\nx-padding: {}\r\nconnection: close\r\n\r\n", "a".repeat(size))
            .into_bytes()
    };
    let (answer, _) = police.raw(&request(60 * 1024)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:.200}");
    let (answer, _) = police.raw(&request(70 * 1024)).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:.200}");
    assert!(answer.contains("over the 64 KiB limit (65536 bytes)"), "{answer:.400}");
    let (answer, _) = police.raw(&request(300 * 1024)).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:.200}");
    // and the gateway goes on serving
    assert_eq!(police.get("/v1/endpoints").await.status, 200);
}

/// Connections over `listen.max_connections_per_source` are closed at once, before TLS, and
/// counted; when the flood goes, the source is served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_are_shed_before_tls() {
    use tokio::io::AsyncReadExt;
    let site = Site::new("abuse-cap");
    site.edit_config(|text| {
        text.must_replace(
            "[listen]\n",
            "[listen]\nmax_connections = 50\nmax_connections_per_source = 30\n",
        )
    });
    let (addr, admin, _stop) = start_on_free_port(&site).await;
    let police = Client::for_endpoint(&site, "330200/110", addr);
    assert_eq!(police.get("/v1/endpoints").await.status, 200);
    let mut idle = Vec::new();
    for _ in 0..30 {
        idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    // the gateway has counted them (each accept is one task away)
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let mut over = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut buffer = [0u8; 16];
    let closed =
        tokio::time::timeout(std::time::Duration::from_secs(5), over.read(&mut buffer)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "the 31st connection is closed at once: {closed:?}"
    );
    let metrics = metrics_text(admin).await;
    assert!(metrics.contains("reason=\"connections_per_source\""), "{metrics}");
    drop(idle);
    let mut served = false;
    for _ in 0..50 {
        if police.request("GET", "/v1/endpoints", Vec::new()).await.is_ok_and(|a| a.status == 200) {
            served = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(served, "served again once the flood went");
}

/// Unfinished bodies are bounded: one identity holding its share of the body budget with
/// bodies it never finishes is answered "busy" (503, in its own busy receipt, `Retry-After`)
/// while another identity is served; a body sent too slowly is cut off (408) instead of held,
/// and its share is free again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_bodies_are_bounded_per_identity_and_cut_off_when_slow() {
    use tokio::io::AsyncReadExt;
    let site = Site::new("abuse-bodies");
    site.edit_config(|t| {
        t.must_replace(
            "[listen]\n",
            "[listen]\nbody_budget_per_identity = 2000000\nbody_timeout = \"2s\"\n",
        )
    });
    let (addr, _, _stop) = start_on_free_port(&site).await;
    let police = Client::for_endpoint(&site, "330200/110", addr);
    let head = b"POST /v1/native/330200/110/transfers HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: 1000000\r\n\r\n{\"JJDBH\": \"";
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(police.unfinished(head).await);
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let busy = police
        .post("/v1/native/330200/110/transfers", sample("jjd-json/transfer-ningbo-township.json"))
        .await;
    assert_eq!(busy.status, 503, "{}", busy.text());
    assert_eq!(busy.header("retry-after").as_deref(), Some("1"));
    assert!(busy.text().contains("memory budget"), "the native receipt says why: {}", busy.text());
    assert_ne!(busy.json()["CODE"], "0000");

    let hotline = Client::for_endpoint(&site, "330200/12345", addr);
    let served = hotline
        .post("/v1/native/330200/12345/transfers", sample("gd-json/transfer-ningbo.json"))
        .await;
    assert_ne!(served.status, 503, "another identity is not held up: {}", served.text());

    for mut stream in held {
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            stream.read_to_end(&mut answer),
        )
        .await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 408"), "a body too slow is cut off: {answer}");
        assert!(answer.contains("not received within 2 s"), "{answer}");
    }
    let answer = police
        .post("/v1/native/330200/110/transfers", sample("jjd-json/transfer-ningbo-township.json"))
        .await;
    assert_eq!(answer.status, 200, "the share is free again: {}", answer.text());
}

/// Out of file descriptors (the process's limit lowered with `prlimit`, then a flood of plain
/// connections): accepting fails, and the listener pauses and says so (logged, counted as
/// `accept_failed`) instead of spinning; once the flood goes, an honest client is served.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_the_listener_pauses_and_recovers() {
    use common::crash::{free_port, spawn_gateway, wait_ready};
    let site = Site::new("abuse-descriptors");
    let (https, admin) = (free_port(), free_port());
    site.edit_config(|t| {
        t.must_replace("https = \"127.0.0.1:0\"", &format!("https = \"127.0.0.1:{https}\""))
            .must_replace("admin = \"127.0.0.1:0\"", &format!("admin = \"127.0.0.1:{admin}\""))
    });
    let (https, admin): (std::net::SocketAddr, std::net::SocketAddr) = (
        format!("127.0.0.1:{https}").parse().unwrap(),
        format!("127.0.0.1:{admin}").parse().unwrap(),
    );
    let mut gateway = spawn_gateway(&site, None);
    wait_ready(admin).await;
    let police = Client::for_endpoint(&site, "330200/110", https);
    assert_eq!(
        police
            .post(
                "/v1/native/330200/110/transfers",
                sample("jjd-json/transfer-ningbo-township.json")
            )
            .await
            .status,
        200
    );
    // a limit just above what the gateway holds open now
    let open = std::fs::read_dir(format!("/proc/{}/fd", gateway.id())).unwrap().count();
    let limit = format!("--nofile={}:{}", open + 8, open + 8);
    let lowered = std::process::Command::new("prlimit")
        .args(["--pid", &gateway.id().to_string(), &limit])
        .status()
        .unwrap();
    assert!(lowered.success());
    let mut flood = Vec::new();
    for _ in 0..40 {
        flood.push(tokio::net::TcpStream::connect(https).await.unwrap());
    }
    // the admin listener is out of descriptors too: the log says it first
    common::net::eventually(30, "the failed accept is logged", || {
        std::fs::read_to_string(site.dir.join("gateway.log"))
            .unwrap()
            .contains("accepting a connection failed; pausing")
    })
    .await;
    drop(flood);
    let mut served = false;
    for _ in 0..50 {
        if let Ok(answer) = police.request("GET", "/v1/transfers", Vec::new()).await {
            served = answer.status == 200;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(served, "served again once the descriptors are back");
    assert!(metrics_text(admin)
        .await
        .contains("liandong_refusals_total{reason=\"accept_failed\"}"));
    let _ = gateway.kill();
    let _ = gateway.wait();
}

/// Where the route says which budget a call takes (a status update), a client over its rate
/// limit is answered 429 — its own busy receipt, `Retry-After` — before it has sent its body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_limit_a_status_is_refused_before_its_body() {
    use tokio::io::AsyncReadExt;
    let site = Site::new("abuse-limit-first");
    site.edit_config(|t| {
        t + "\n[limits.endpoint]\nsubmit = { per_second = 100, burst = 100 }\nimmediate = { per_second = 100, burst = 100 }\n\
             status = { per_second = 1, burst = 1 }\nread = { per_second = 100, burst = 100 }\n"
    });
    let (addr, _, _stop) = start_on_free_port(&site).await;
    let hotline = Client::for_endpoint(&site, "330200/12345", addr);
    let first = hotline
        .post("/v1/native/330200/12345/status", sample("gd-json/status-accepted.json"))
        .await;
    assert_ne!(first.status, 429, "the first is within the budget: {}", first.text());
    let head = b"POST /v1/native/330200/12345/status HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: 5000\r\n\r\n";
    let mut stream = hotline.unfinished(head).await;
    let mut answer = vec![0u8; 4096];
    let read =
        tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut answer)).await;
    let n = read.expect("answered without waiting for the body").unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]).to_lowercase();
    assert!(answer.starts_with("http/1.1 429"), "{answer}");
    assert!(answer.contains("retry-after") && answer.contains("over the rate limit"), "{answer}");
}
