//! The gateway as endpoints meet it: real TLS with certificates made for the test, the real
//! server on port 0, test endpoints that receive deliveries and answer with their receipts.

use std::path::Path;

use crate::common;
use common::net::ConfigEdit;
use common::net::{
    admin_get, eventually, metric, sample, start_on_free_port, Client, Receiver, Site,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_goes_across_and_its_status_comes_back() {
    let site = Site::new("flow");
    let hotline = Receiver::start(&site, "330200/12345").await;
    let police = Receiver::start(&site, "330200/110").await;
    site.push_to("330200/12345", &hotline.url());
    site.push_to("330200/110", &police.url());
    let (addr, admin, _stop) = start_on_free_port(&site).await;
    let ningbo_110 = Client::for_endpoint(&site, "330200/110", addr);
    let ningbo_12345 = Client::for_endpoint(&site, "330200/12345", addr);

    // 110 submits its native document (sent now, so no deadline has passed) and gets its receipt
    let now = liandong::model::Timestamp::now().format_beijing("yyyy-MM-dd HH:mm:ss");
    let document = String::from_utf8(sample("jjd-json/transfer-ningbo-township.json"))
        .unwrap()
        .replace("2023-05-08 09:43:00", &now);
    let answer = ningbo_110.post("/v1/native/330200/110/transfers", document.into_bytes()).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json()["CODE"], "0000");
    assert_eq!(answer.json()["LZBH"], "LZ202305080001");
    let transfer_id = answer.header("x-liandong-transfer-id").unwrap();
    assert_eq!(answer.header("x-liandong-destination").as_deref(), Some("330200/12345"));

    // 12345 receives it in its own format, with the transfer_id as the reference
    eventually(20, "the delivery to 12345", || !hotline.received().is_empty()).await;
    let delivered = &hotline.received()[0];
    let document: serde_json::Value = serde_json::from_slice(&delivered.body).unwrap();
    assert_eq!(document["lzbh"], transfer_id.as_str());
    assert_eq!(document["gd"]["sqlx"], "1007");
    assert_eq!(delivered.transfer_id.as_deref(), Some(transfer_id.as_str()));
    let path = format!("/v1/transfers/{transfer_id}");
    for _ in 0..200 {
        if ningbo_110.get(&path).await.json()["state"] == "delivered" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(ningbo_110.get(&path).await.json()["state"], "delivered");

    // 12345 accepts in its own format; 110 hears of it in its own, by its own reference
    // (a status may not be older than the transfer's history: it is stamped now)
    let now = liandong::model::Timestamp::now().format_beijing("yyyy/MM/dd HH:mm:ss");
    let accept = format!(
        r#"{{"lzbh": "{transfer_id}", "gdzt": "受理", "czsj": "{now}", "czdw": {{"dm": "330203-CG", "mc": "海曙区综合行政执法局"}}}}"#
    );
    let answer = ningbo_12345.post("/v1/native/330200/12345/status", accept.into_bytes()).await;
    assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
    assert_eq!(answer.json()["code"], "200");
    eventually(20, "the status notice to 110", || !police.received().is_empty()).await;
    let notice: serde_json::Value = serde_json::from_slice(&police.received()[0].body).unwrap();
    assert_eq!(notice["LZBH"], "LZ202305080001");
    assert_eq!(notice["ZT"], "20");
    let transfer = ningbo_12345.get(&path).await.json();
    assert_eq!(transfer["state"], "accepted");
    let history: Vec<&str> = transfer["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["state"].as_str().unwrap())
        .collect();
    assert_eq!(history, ["submitted", "delivered", "received", "accepted"]);

    // another 12345 cannot report on it
    let stranger = Client::for_endpoint(&site, "330000/12345", addr);
    let answer = stranger
        .post(
            "/v1/native/330000/12345/status",
            format!(
                r#"{{"lzbh": "{transfer_id}", "gdzt": "签收", "czsj": "2023/05/08 09:48:00"}}"#
            )
            .into_bytes(),
        )
        .await;
    assert_eq!(answer.status, 403);
    assert_eq!(answer.json()["code"], "409", "gd-json has one refusal code");

    // a refused transition names the current state, in the sender's receipt, and changes nothing
    let reject = format!(
        r#"{{"lzbh": "{transfer_id}", "gdzt": "退回", "czsj": "{now}", "sm": "不属于本部门"}}"#
    );
    let answer = ningbo_12345.post("/v1/native/330200/12345/status", reject.into_bytes()).await;
    assert_eq!(answer.status, 409);
    assert_eq!(answer.json()["code"], "409");
    assert!(
        answer.json()["msg"].as_str().unwrap().contains("the transfer is accepted"),
        "{}",
        answer.json()
    );
    assert_eq!(ningbo_12345.get(&path).await.json(), transfer);

    // the admin listener
    let metrics = admin_get(admin, "/metrics").await;
    assert!(metrics.contains("liandong_transfers{state=\"accepted\"} 1"), "{metrics}");
    assert!(
        metrics.contains("liandong_submissions_total ")
            && !metrics.contains("liandong_submissions_total 0\n"),
        "{metrics}"
    );
    assert!(!metrics.contains("liandong_status_updates_total 0\n"), "{metrics}");
    // per endpoint, by route, by destination; the build (counters are the process's: other
    // tests in this binary add to them)
    let at_least_one = |series: &str| {
        assert!(metric(&metrics, series).is_some_and(|n| n >= 1.0), "{series} in {metrics}");
    };
    at_least_one("liandong_endpoint_submissions_total{endpoint=\"330200/110\"}");
    at_least_one("liandong_endpoint_deliveries_total{endpoint=\"330200/12345\"}");
    at_least_one(
        "liandong_endpoint_refusals_total{endpoint=\"330200/12345\",reason=\"transition\"}",
    );
    at_least_one("liandong_endpoint_refusals_total{endpoint=\"330000/12345\",reason=\"identity\"}");
    at_least_one("liandong_request_duration_seconds_count{route=\"POST /v1/native/{region}/{platform}/transfers\"}");
    at_least_one(
        "liandong_delivery_duration_seconds_bucket{endpoint=\"330200/12345\",le=\"+Inf\"}",
    );
    at_least_one("liandong_commit_duration_seconds_count");
    at_least_one(&format!("liandong_build_info{{version=\"{}\"}}", env!("CARGO_PKG_VERSION")));
    assert!(admin_get(admin, "/readyz").await.contains("ready"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_identities_and_bad_documents_are_refused_and_change_nothing() {
    let site = Site::new("refusals");
    let (addr, admin, _stop) = start_on_free_port(&site).await;
    let ningbo_110 = Client::for_endpoint(&site, "330200/110", addr);
    let zhejiang_110 = Client::for_endpoint(&site, "330000/110", addr);

    // sending as another endpoint
    let answer = zhejiang_110
        .post("/v1/native/330200/110/transfers", sample("jjd-json/transfer-ningbo-township.json"))
        .await;
    assert_eq!(answer.status, 403);
    assert_eq!(answer.json()["CODE"], "1002");
    // a bad document: the field and what was expected, in the sender's receipt
    let answer = ningbo_110
        .post("/v1/native/330200/110/transfers", sample("invalid/jjd-bad-time.json"))
        .await;
    assert_eq!(answer.status, 400);
    assert_eq!(
        answer.json()["MSG"],
        "JQXX.BJSJ: expected yyyy-MM-dd HH:mm:ss, got \"2023/05/08 09:41:09\""
    );
    // XML in GBK answers in GBK XML
    let liaoning = Client::for_endpoint(&site, "210000/110", addr);
    let answer = liaoning
        .post("/v1/native/210000/110/transfers", sample("invalid/jqxx-jw11-in-liaoning.xml"))
        .await;
    assert_eq!(answer.status, 400);
    let text = liandong::formats::encoding::TextEncoding::Gbk.decode(&answer.body).unwrap();
    assert!(
        text.contains("<CODE>1</CODE>") && text.contains("JQXX.JQLB@DM: unknown category code"),
        "{text}"
    );
    // too large
    let mut oversized =
        format!("POST /v1/native/330200/110/transfers HTTP/1.1\r\nhost: localhost\r\ncontent-length: {}\r\n\r\n", 2 << 20)
            .into_bytes();
    oversized.extend(vec![b' '; 2 << 20]);
    let (answer, _) = ningbo_110.raw(&oversized).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer:.200}");
    // status for a transfer that is not theirs
    let answer = ningbo_110
        .post("/v1/native/330200/110/status", sample("jjd-json/status-closed.json"))
        .await;
    assert_eq!(answer.status, 404);
    // nothing was stored
    let list = ningbo_110.get("/v1/transfers").await.json();
    assert_eq!(list["transfers"].as_array().unwrap().len(), 0);
    let list = zhejiang_110.get("/v1/transfers").await.json();
    assert_eq!(list["transfers"].as_array().unwrap().len(), 0);
    // every refusal is counted by its reason
    let metrics = admin_get(admin, "/metrics").await;
    for reason in ["identity", "bad_document", "not_found"] {
        assert!(
            metrics.contains(&format!("liandong_refusals_total{{reason=\"{reason}\"}}")),
            "{reason}: {metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canonical_api_and_who_may_read() {
    let site = Site::new("canonical");
    let (addr, _, _stop) = start_on_free_port(&site).await;
    let ningbo_110 = Client::for_endpoint(&site, "330200/110", addr);
    let stranger = Client::for_endpoint(&site, "210000/12345", addr);
    let request = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/spec/samples/jjd-json/transfer-ningbo-township.canonical.json"),
    )
    .unwrap();
    let answer = ningbo_110.post("/v1/transfers", request.clone().into_bytes()).await;
    assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
    let body = answer.json();
    assert_eq!(body["created"], true);
    assert_eq!(body["destination"]["endpoint"], "330200/12345");
    let id = body["transfer"]["transfer_id"].as_str().unwrap().to_string();
    // resent: the same transfer
    let again = ningbo_110.post("/v1/transfers", request.into_bytes()).await.json();
    assert_eq!(
        (again["created"].as_bool(), again["transfer"]["transfer_id"].as_str()),
        (Some(false), Some(id.as_str()))
    );
    assert_eq!(stranger.get(&format!("/v1/transfers/{id}")).await.status, 403);
    assert_eq!(ningbo_110.get("/v1/transfers/01ZZZZZZZZZZZZZZZZZZZZZZZZ").await.status, 404);
    // canonical errors name the field
    let answer = ningbo_110
        .post("/v1/transfers", br#"{"sender_ref": "x", "from": "330200/110"}"#.to_vec())
        .await;
    assert_eq!(answer.status, 400);
    assert_eq!(
        answer.json()["error"]["message"],
        "requested_at: required field is missing or empty"
    );
    let answer = ningbo_110
        .post(
            &format!("/v1/transfers/{id}/status"),
            format!(
                r#"{{"state": "accepted", "at": "{}"}}"#,
                liandong::model::Timestamp::now().to_rfc3339()
            )
            .into_bytes(),
        )
        .await;
    assert_eq!(answer.status, 409);
    assert!(answer.json()["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("refused: the transfer is submitted"));
    let list = ningbo_110.get("/v1/transfers?state=submitted&limit=10").await.json();
    assert_eq!(list["transfers"].as_array().unwrap().len(), 1);
    let endpoints = ningbo_110.get("/v1/endpoints").await.json();
    assert_eq!(endpoints["endpoints"].as_array().unwrap().len(), 18);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_that_is_down_gets_its_transfer_when_it_comes_back() {
    let site = Site::new("down");
    let hotline = Receiver::start(&site, "330200/12345").await;
    hotline.up.store(false, std::sync::atomic::Ordering::SeqCst);
    site.push_to("330200/12345", &hotline.url());
    site.edit_config(|t| {
        t.must_replace("initial_backoff = \"1s\"", "initial_backoff = \"100ms\"")
            .must_replace("max_backoff = \"5m\"", "max_backoff = \"1s\"")
    });
    let (addr, admin, _stop) = start_on_free_port(&site).await;
    let ningbo_110 = Client::for_endpoint(&site, "330200/110", addr);
    let answer = ningbo_110
        .post("/v1/native/330200/110/transfers", sample("jjd-json/transfer-ningbo-township.json"))
        .await;
    let id = answer.header("x-liandong-transfer-id").unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert!(hotline.received().is_empty());
    // the backlog by destination, pushed, and how long its oldest has waited
    let metrics = admin_get(admin, "/metrics").await;
    let labels = "status=\"pending\",endpoint=\"330200/12345\",delivery=\"push\"";
    assert_eq!(metric(&metrics, &format!("liandong_outbox{{{labels}}}")), Some(1.0), "{metrics}");
    let waited = metric(&metrics, &format!("liandong_outbox_oldest_seconds{{{labels}}}"))
        .expect("the oldest's age");
    assert!((0.0..60.0).contains(&waited), "{waited}");
    hotline.up.store(true, std::sync::atomic::Ordering::SeqCst);
    eventually(30, "delivery after the destination recovers", || !hotline.received().is_empty())
        .await;
    let got = &hotline.received()[0];
    assert_eq!(got.transfer_id.as_deref(), Some(id.as_str()));
    assert!(got.attempt.as_deref().unwrap().parse::<u32>().unwrap() > 1, "it was a retry");
}

/// Dead letters over HTTPS: a transfer its destination never took is handed back to its
/// origin as undeliverable (and not replayed: the origin re-sends it); a status notice that
/// went dead is replayed by an operator once its receiver is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_list_and_replay_dead_letters_over_https() {
    let (site, hotline, police) = common::net::ningbo_desks_down("dead").await;
    let (addr, admin, _stop) = start_on_free_port(&site).await;
    let ningbo_110 = Client::for_endpoint(&site, "330200/110", addr);
    let (cert, key) = (
        site.dir.join("identities/operator-ops.pem"),
        site.dir.join("identities/operator-ops-key.pem"),
    );
    let operator = Client::new(&site, &cert, &key, addr);
    let answer = ningbo_110
        .post("/v1/native/330200/110/transfers", sample("jjd-json/transfer-ningbo-township.json"))
        .await;
    let transfer_id = answer.header("x-liandong-transfer-id").unwrap();
    let mut dead = serde_json::Value::Null;
    for _ in 0..200 {
        dead = operator.get("/v1/deliveries/dead").await.json();
        if dead["dead_letters"].as_array().unwrap().len() == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let letters = dead["dead_letters"].as_array().unwrap();
    assert_eq!(letters.len(), 2, "the transfer, and the notice of its return: {dead}");
    let (transfer, notice) = (&letters[0], &letters[1]);
    assert_eq!(
        (transfer["kind"].as_str(), notice["kind"].as_str()),
        (Some("transfer"), Some("status")),
        "{dead}"
    );
    assert!(transfer["last_error"].as_str().unwrap().contains("down for maintenance"), "{dead}");
    let returned = ningbo_110.get(&format!("/v1/transfers/{transfer_id}")).await.json();
    assert_eq!(returned["state"], "rejected", "handed back to its origin: {returned}");
    // counted by destination: the failed attempts and the dead letters
    let metrics = admin_get(admin, "/metrics").await;
    for series in [
        "liandong_endpoint_delivery_failures_total{endpoint=\"330200/12345\"}",
        "liandong_endpoint_dead_letters_total{endpoint=\"330200/12345\"}",
        "liandong_outbox{status=\"dead\",endpoint=\"330200/12345\",delivery=\"push\"}",
    ] {
        assert!(metric(&metrics, series).is_some_and(|n| n >= 1.0), "{series} in {metrics}");
    }
    assert_eq!(
        ningbo_110.get("/v1/deliveries/dead").await.status,
        403,
        "endpoints are not operators"
    );

    hotline.up.store(true, std::sync::atomic::Ordering::SeqCst);
    let answer =
        operator.post(&format!("/v1/deliveries/{}/replay", transfer["id"]), Vec::new()).await;
    assert_eq!(answer.status, 404);
    assert!(
        answer.json()["error"]["message"].as_str().unwrap().contains("re-sent by the origin"),
        "{}",
        answer.json()
    );

    police.up.store(true, std::sync::atomic::Ordering::SeqCst);
    let path = format!("/v1/deliveries/{}/replay", notice["id"]);
    let answer = operator
        .request_with("POST", &path, &[("x-request-id", "replay-by-ops")], Vec::new())
        .await
        .unwrap();
    assert_eq!(answer.json()["replayed"], true);
    // audited in the same commit, with who did it and the request id of the call
    use sqlx::Connection;
    let db = format!("sqlite://{}?mode=ro", site.dir.join("liandong.db").display());
    let mut conn = sqlx::SqliteConnection::connect(&db).await.unwrap();
    let (actor, transfer, detail): (String, String, String) = sqlx::query_as(
        "SELECT actor, transfer_id, detail FROM audit WHERE action = 'delivery.replayed'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(
        (actor.as_str(), transfer.as_str()),
        ("liandong://operator/ops", transfer_id.as_str())
    );
    let detail: serde_json::Value = serde_json::from_str(&detail).unwrap();
    assert_eq!(
        (detail["request_id"].as_str(), detail["kind"].as_str()),
        (Some("replay-by-ops"), Some("status")),
        "{detail}"
    );
    eventually(20, "the replayed notice", || !police.received().is_empty()).await;
    let told: serde_json::Value = serde_json::from_slice(&police.received()[0].body).unwrap();
    assert_eq!((told["LZBH"].as_str(), told["ZT"].as_str()), (Some("LZ202305080001"), Some("30")));
    assert!(
        told["SM"].as_str().unwrap().starts_with("【无法送达】330200/12345 could not take it"),
        "{told}"
    );
    assert!(hotline.received().is_empty(), "the returned transfer is not sent again");
}

const TIGHT_LIMITS: &str = r#"
[limits.endpoint]
submit = { per_second = 1, burst = 2 }
immediate = { per_second = 1, burst = 5 }
status = { per_second = 1, burst = 2 }
read = { per_second = 100, burst = 100 }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_limit_a_desk_gets_429_its_busy_receipt_and_others_keep_going() {
    let site = Site::new("limits");
    site.edit_config(|t| format!("{t}\n{TIGHT_LIMITS}"));
    let (addr, admin, _stop) = start_on_free_port(&site).await;
    let noisy = Client::for_endpoint(&site, "330200/110", addr);
    let quiet = Client::for_endpoint(&site, "360000/110", addr);
    let document = |i: usize, urgency: &str| {
        String::from_utf8(sample("jjd-json/transfer-ningbo-township.json"))
            .unwrap()
            .replace("LZ202305080001", &format!("RL-{i}"))
            .replace("\"JQDJ\": \"3\"", &format!("\"JQDJ\": \"{urgency}\""))
            .into_bytes()
    };
    let mut answers = Vec::new();
    for i in 0..4 {
        answers.push(noisy.post("/v1/native/330200/110/transfers", document(i, "3")).await);
    }
    let limited = answers.iter().find(|a| a.status == 429).expect("the burst is spent");
    assert_eq!(limited.json()["CODE"], "1003", "jjd-json's busy receipt");
    assert!(limited.header("retry-after").unwrap().parse::<u64>().unwrap() >= 1);
    // an immediate transfer is never behind the desk's bulk traffic
    let urgent = noisy.post("/v1/native/330200/110/transfers", document(10, "1")).await;
    assert_eq!(urgent.status, 200, "{}", String::from_utf8_lossy(&urgent.body));
    // another desk keeps its own budget
    let jiangxi = String::from_utf8(sample("jjd-json/transfer-jiangxi-070301.json")).unwrap();
    assert_eq!(
        quiet.post("/v1/native/360000/110/transfers", jiangxi.into_bytes()).await.status,
        200
    );
    let metrics = admin_get(admin, "/metrics").await;
    assert!(metrics.contains("liandong_rate_limited_total "), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_describes_exactly_the_routes_that_answer() {
    let site = Site::new("openapi");
    let (addr, _, _stop) = start_on_free_port(&site).await;
    let client = Client::for_endpoint(&site, "330200/110", addr);
    let served = client.get("/v1/openapi.json").await;
    assert_eq!(served.status, 200);
    let doc = served.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let mut described: Vec<(String, String)> = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            described.push((method.clone(), path.clone()));
        }
    }
    let mut routes: Vec<(String, String)> =
        liandong::api::ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    described.sort();
    routes.sort();
    assert_eq!(described, routes, "the document and the router list the same routes");
    // and each described route is really there: not 404 for want of a route, not 405
    for (method, path) in &routes {
        let mut concrete =
            path.replace("{region}", "330200").replace("{platform}", "110").replace("{id}", "1");
        if concrete == "/v1/events" {
            // a stream that never ends: asked with a bad cursor, it answers at once
            concrete.push_str("?cursor=not-a-cursor");
        }
        let answer =
            client.request(&method.to_uppercase(), &concrete, b"{}".to_vec()).await.unwrap();
        assert_ne!(answer.status, 405, "{method} {path}");
        if answer.status == 404 {
            // a 404 must be the API's own answer about a missing thing, not a missing route
            assert!(!answer.body.is_empty(), "{method} {path} has no route");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agencies_read_what_their_grant_covers_and_operators_read_all_but_change_nothing() {
    let site = Site::new("policy");
    let (addr, _, _stop) = start_on_free_port(&site).await;
    let ningbo_110 = Client::for_endpoint(&site, "330200/110", addr);
    let beijing_110 = Client::for_endpoint(&site, "110000/110", addr);
    let agency = Client::new(
        &site,
        &site.dir.join("identities/agency-demo.pem"),
        &site.dir.join("identities/agency-demo-key.pem"),
        addr,
    );
    let operator = Client::new(
        &site,
        &site.dir.join("identities/operator-ops.pem"),
        &site.dir.join("identities/operator-ops-key.pem"),
        addr,
    );
    let ningbo = ningbo_110
        .post("/v1/native/330200/110/transfers", sample("jjd-json/transfer-ningbo-township.json"))
        .await;
    let ningbo_id = ningbo.header("x-liandong-transfer-id").unwrap();
    let beijing = beijing_110
        .post("/v1/native/110000/110/transfers", sample("incident-json/transfer-beijing.json"))
        .await;
    let beijing_id = beijing.header("x-liandong-transfer-id").unwrap();
    // the agency is granted Ningbo (3302): it reads that transfer, not Beijing's
    assert_eq!(agency.get(&format!("/v1/transfers/{ningbo_id}")).await.status, 200);
    let refused = agency.get(&format!("/v1/transfers/{beijing_id}")).await;
    assert_eq!(refused.status, 403);
    assert!(
        refused.json()["error"]["message"].as_str().unwrap().contains("granted regions"),
        "{}",
        refused.json()
    );
    let listed = agency.get("/v1/transfers").await.json();
    let ids: Vec<&str> = listed["transfers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["transfer_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![ningbo_id.as_str()]);
    // an agency submits nothing and changes nothing
    assert_eq!(agency.post("/v1/transfers", b"{}".to_vec()).await.status, 403);
    // the operator reads everything, changes nothing
    assert_eq!(operator.get(&format!("/v1/transfers/{beijing_id}")).await.status, 200);
    assert_eq!(
        operator.get("/v1/transfers").await.json()["transfers"].as_array().unwrap().len(),
        2
    );
    let change = operator
        .post(
            &format!("/v1/transfers/{ningbo_id}/status"),
            br#"{"state": "cancelled", "at": "2023-05-08T10:00:00+08:00", "note": "x"}"#.to_vec(),
        )
        .await;
    assert_eq!(change.status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_sends_its_headers_too_slowly_is_cut_off() {
    let site = Site::new("slowloris");
    site.edit_config(|t| {
        t.must_replacen("[listen]\n", "[listen]\nheader_timeout = \"300ms\"\n", 1)
    });
    let (addr, _, _stop) = start_on_free_port(&site).await;
    let client = Client::for_endpoint(&site, "330200/110", addr);
    // headers that never end: the server must close the connection by itself
    let (answer, closed) = client
        .raw(b"POST /v1/native/330200/110/transfers HTTP/1.1\r\nhost: localhost\r\nx-slow: 1")
        .await;
    assert!(closed, "the server cut the slow client off");
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "{answer:.200}");
    // and the gateway keeps serving others
    let ok = client
        .post("/v1/native/330200/110/transfers", sample("jjd-json/transfer-ningbo-township.json"))
        .await;
    assert_eq!(ok.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_expired_and_misused_certificates_are_refused_and_others_keep_working() {
    use liandong::security::pki::DevCa;
    use liandong::security::Identity;
    let ca = DevCa::new("test CA").unwrap();
    let site = Site::with_ca("certs", &ca);
    let (addr, _, _stop) = start_on_free_port(&site).await;
    let ningbo: Identity = Identity::Endpoint("330200/110".parse().unwrap());
    let refused = |name: &str, issued: liandong::security::pki::Issued| {
        let (cert, key) = issued.write(&site.dir, name).unwrap();
        Client::new(&site, &cert, &key, addr)
    };
    let cases = [
        ("(none at all)", Client::anonymous(&site, addr)),
        (
            "from an unknown CA",
            refused("rogue", DevCa::new("rogue CA").unwrap().client(&ningbo).unwrap()),
        ),
        ("expired", refused("expired", ca.expired_client(&ningbo).unwrap())),
        (
            "a server certificate used as a client one",
            refused("server-as-client", ca.server(&["localhost"]).unwrap()),
        ),
    ];
    for (what, client) in &cases {
        let answer = client
            .request(
                "POST",
                "/v1/native/330200/110/transfers",
                sample("jjd-json/transfer-ningbo-township.json"),
            )
            .await;
        assert!(answer.is_err(), "a certificate {what} was let in");
    }
    let good = Client::for_endpoint(&site, "330200/110", addr);
    assert_eq!(
        good.post(
            "/v1/native/330200/110/transfers",
            sample("jjd-json/transfer-ningbo-township.json")
        )
        .await
        .status,
        200
    );
}

/// Vendor desk software reads the receipt's body, not headers: when the destination has been
/// unreachable, the origin's success receipt says so, with the directory's phone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_receipt_says_when_the_destination_is_unreachable_and_whom_to_phone() {
    let site = Site::new("unreachable");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    site.push_to("330200/12345", &format!("https://127.0.0.1:{closed}/desk"));
    site.edit_config(|t| {
        t.must_replace("unreachable_after = \"2m\"", "unreachable_after = \"1s\"")
    });
    let (addr, _, _stop) = start_on_free_port(&site).await;
    let hotline = Client::for_endpoint(&site, "330200/12345", addr);
    let directory = r#"{"version": 1, "body": {"unit": {"code": "HS-ZF", "name": "海曙区综合行政执法局"}, "phone": "0574-87000000"}}"#;
    let put = hotline
        .request("PUT", "/v1/datasets/directory/records/330203/NP07", directory.as_bytes().to_vec())
        .await
        .unwrap();
    assert_eq!(put.status, 200, "{}", String::from_utf8_lossy(&put.body));
    let police = Client::for_endpoint(&site, "330200/110", addr);
    let now = liandong::model::Timestamp::now().format_beijing("yyyy-MM-dd HH:mm:ss");
    let sample = String::from_utf8(sample("jjd-json/transfer-ningbo-township.json"))
        .unwrap()
        .replace("2023-05-08 09:43:00", &now);
    let first = police.post("/v1/native/330200/110/transfers", sample.clone().into_bytes()).await;
    assert_eq!(
        (first.json()["CODE"].as_str(), first.json()["MSG"].as_str()),
        (Some("0000"), Some("成功")),
        "reachable until it fails"
    );
    let mut answer = first;
    for i in 0..100 {
        if answer.header("x-liandong-destination-status").as_deref() == Some("unreachable") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        answer = police
            .post(
                "/v1/native/330200/110/transfers",
                sample.replace("LZ202305080001", &format!("U-{i}")).into_bytes(),
            )
            .await;
    }
    let receipt = answer.json();
    assert_eq!(receipt["CODE"], "0000", "still taken: {receipt}");
    let message = receipt["MSG"].as_str().unwrap();
    assert!(message.contains("330200/12345") && message.contains("暂时无法送达"), "{message}");
    assert!(message.contains("0574-87000000 (海曙区综合行政执法局)"), "{message}");
}

/// A destination that stops answering is probed, one delivery at a time and paced, not sent
/// its whole backlog over and over: the backlog waits untried, and goes out, each transfer
/// once, as soon as a probe gets through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_that_is_down_is_probed_not_flooded_and_its_backlog_goes_out_when_it_returns()
{
    let site = Site::new("probe");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener); // nothing listens there: connections are refused
    site.push_to("330200/12345", &format!("https://127.0.0.1:{port}/receive"));
    let (addr, _, _stop) = start_on_free_port(&site).await;
    let police = Client::for_endpoint(&site, "330200/110", addr);
    let now = liandong::model::Timestamp::now().format_beijing("yyyy-MM-dd HH:mm:ss");
    let sample = String::from_utf8(sample("jjd-json/transfer-ningbo-township.json"))
        .unwrap()
        .replace("2023-05-08 09:43:00", &now);
    for i in 0..20 {
        let answer = police
            .post(
                "/v1/native/330200/110/transfers",
                sample.replace("LZ202305080001", &format!("P-{i}")).into_bytes(),
            )
            .await;
        assert_eq!(answer.status, 200);
    }
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let attempts: i64 = sqlx::query_scalar::<_, i64>(
        "SELECT COALESCE(SUM(attempts), 0) FROM outbox WHERE destination = '330200/12345'",
    )
    .fetch_one(
        &sqlx::SqlitePool::connect(&format!("sqlite://{}", site.dir.join("liandong.db").display()))
            .await
            .unwrap(),
    )
    .await
    .unwrap();
    assert!(
        (1..=6).contains(&attempts),
        "3 s down: a probe now and then, not 20 transfers retried: {attempts} attempts"
    );
    // it comes back
    let desk = Receiver::serve(
        &site,
        "330200/12345",
        tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap(),
    );
    eventually(30, "the backlog delivered", || {
        let ids: std::collections::BTreeSet<_> =
            desk.received().iter().filter_map(|r| r.transfer_id.clone()).collect();
        ids.len() == 20
    })
    .await;
    assert_eq!(desk.received().len(), 20, "each once");
}
