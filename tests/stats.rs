//! `GET /v1/stats`: the figures of four transfers driven through their states over the API,
//! each figure checked against a count made here, independently, from what `GET /v1/transfers`
//! lists to the same caller; the read policy narrows them (an endpoint sees its own, a Beijing
//! desk none of Ningbo's), the filters narrow them, and a bad filter is refused naming it.

use serde_json::{json, Value};

use crate::common;
use common::net::{start_on_free_port, Client, Site};

fn now() -> String {
    liandong::model::Timestamp::now().to_rfc3339()
}

/// The Ningbo 110's transfer, or the Ningbo 12345's (a public-order case for the 110).
fn request(sender_ref: &str, from_hotline: bool) -> Vec<u8> {
    let mut request = common::stores::ningbo_request(sender_ref);
    if from_hotline {
        let hotline: liandong::model::EndpointId = "330200/12345".parse().unwrap();
        request.from = hotline.clone();
        request.to_platform = liandong::model::Platform::Police;
        request.case.origin.endpoint = hotline.clone();
        request.case.origin.unit = None;
        request.case.case_id = liandong::model::Case::id_for(&hotline, sender_ref);
        request.case.category = "PM04".parse().unwrap();
        request.case.source_category = None;
    }
    serde_json::to_vec(&request).unwrap()
}

async fn status(client: &Client, id: &str, update: Value) {
    let answer =
        client.post(&format!("/v1/transfers/{id}/status"), update.to_string().into_bytes()).await;
    assert_eq!(answer.status, 200, "{update}: {}", answer.text());
}

/// The figures of `GET /v1/transfers` as `client` sees them, counted here.
async fn counted_from_the_list(client: &Client) -> Value {
    let listed = client.get("/v1/transfers?limit=500").await.json();
    let transfers = listed["transfers"].as_array().unwrap();
    let reached = |t: &Value, state: &str| {
        t["history"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["state"] == state)
            .map(|h| h["at"].as_str().unwrap().to_string())
    };
    let seconds =
        |at: &str| liandong::model::Timestamp::parse_rfc3339(at, false).unwrap().unix_seconds();
    let mut counts = json!({"transfers": transfers.len(), "received": 0, "received_on_time": 0, "resolved": 0,
                            "called_back": 0, "satisfied": 0, "rejected": 0});
    for t in transfers {
        let bump =
            |counts: &mut Value, key: &str| counts[key] = json!(counts[key].as_u64().unwrap() + 1);
        if let Some(at) = reached(t, "received") {
            bump(&mut counts, "received");
            if seconds(&at) <= seconds(t["deadlines"]["receive_by"].as_str().unwrap()) {
                bump(&mut counts, "received_on_time");
            }
        }
        if reached(t, "resolved").is_some() {
            bump(&mut counts, "resolved");
        }
        if t["feedback"].is_object() {
            bump(&mut counts, "called_back");
            if matches!(
                t["feedback"]["satisfaction"].as_str(),
                Some("satisfied" | "basically_satisfied")
            ) {
                bump(&mut counts, "satisfied");
            }
        }
        if t["state"] == "rejected" {
            bump(&mut counts, "rejected");
        }
    }
    counts
}

fn figures_counts(stats: &Value) -> Value {
    let f = &stats["figures"];
    json!({"transfers": f["transfers"], "received": f["received"]["count"], "received_on_time": f["received_on_time"]["count"],
           "resolved": f["resolved"]["count"], "called_back": f["called_back"]["count"],
           "satisfied": f["satisfied"]["count"], "rejected": f["rejected"]["count"]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_figures_are_the_transfers_counted() {
    let site = Site::new("stats");
    let (addr, _, _stop) = start_on_free_port(&site).await;
    let police = Client::for_endpoint(&site, "330200/110", addr);
    let hotline = Client::for_endpoint(&site, "330200/12345", addr);
    let (cert, key) = (
        site.dir.join("identities/operator-ops.pem"),
        site.dir.join("identities/operator-ops-key.pem"),
    );
    let operator = Client::new(&site, &cert, &key, addr);
    let beijing = Client::for_endpoint(&site, "110000/110", addr);

    let mut ids = Vec::new();
    for (reference, client, from_hotline) in [
        ("ST-A", &police, false),
        ("ST-B", &police, false),
        ("ST-C", &police, false),
        ("ST-D", &hotline, true),
    ] {
        let answer = client.post("/v1/transfers", request(reference, from_hotline)).await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        ids.push(answer.json()["transfer"]["transfer_id"].as_str().unwrap().to_string());
    }
    // A: accepted, resolved, called back satisfied; B: handed back; C: untouched; D: accepted by the 110.
    status(&hotline, &ids[0], json!({"state": "accepted", "at": now()})).await;
    let resolved_at = now();
    status(
        &hotline,
        &ids[0],
        json!({"state": "resolved", "at": resolved_at,
        "resolution": {"result": "已联系车主挪车", "resolved_at": resolved_at}}),
    )
    .await;
    status(
        &police,
        &ids[0],
        json!({"state": "closed", "at": now(),
        "feedback": {"satisfaction": "satisfied", "visited_at": now()}}),
    )
    .await;
    status(
        &hotline,
        &ids[1],
        json!({"state": "rejected", "at": now(), "note": "【非职责范围】请联系物业"}),
    )
    .await;
    status(&police, &ids[3], json!({"state": "accepted", "at": now()})).await;

    let stats = operator.get("/v1/stats").await;
    assert_eq!(stats.status, 200, "{}", stats.text());
    let stats = stats.json();
    assert_eq!(figures_counts(&stats), counted_from_the_list(&operator).await, "{stats}");
    let f = &stats["figures"];
    assert_eq!(
        (f["transfers"].as_u64(), f["rejected"]["count"].as_u64(), f["resolved"]["count"].as_u64()),
        (Some(4), Some(1), Some(1))
    );
    assert_eq!(f["by_direction"], json!({"110->12345": 3, "12345->110": 1}), "{f}");
    assert_eq!(
        (f["called_back"]["rate"].as_f64(), f["satisfied"]["rate"].as_f64()),
        (Some(1.0), Some(1.0)),
        "{f}"
    );
    assert_eq!(f["top_categories"][0], json!(["NP07", 3]), "{f}");
    assert!(
        f["time_to_resolve"]["median_seconds"].as_i64().is_some_and(|s| (0..60).contains(&s)),
        "{f}"
    );

    // what each caller may read, counted the same way
    for client in [&police, &hotline, &beijing] {
        let stats = client.get("/v1/stats").await.json();
        assert_eq!(figures_counts(&stats), counted_from_the_list(client).await, "{stats}");
    }
    assert_eq!(beijing.get("/v1/stats").await.json()["figures"]["transfers"], 0);

    // the filters
    let narrowed = |query: &'static str| {
        let operator = &operator;
        async move {
            operator.get(&format!("/v1/stats?{query}")).await.json()["figures"]["transfers"]
                .as_u64()
        }
    };
    assert_eq!(narrowed("direction=12345-%3E110").await, Some(1));
    assert_eq!(narrowed("category=NP07").await, Some(3));
    assert_eq!(narrowed("region=3302").await, Some(4));
    assert_eq!(narrowed("region=1100").await, Some(0));
    assert_eq!(
        narrowed("until=2020-01-01T00:00:00%2B08:00&since=2019-01-01T00:00:00%2B08:00").await,
        Some(0)
    );
    let refused = operator.get("/v1/stats?direction=sideways").await;
    assert_eq!(
        (refused.status, refused.json()["error"]["field"].as_str()),
        (400, Some("direction")),
        "{}",
        refused.text()
    );

    // the same figures over gRPC, for the partner agency (granted Ningbo: all four)
    use liandong::proto::v1;
    use tonic_types::StatusExt;
    let (cert, key) = (
        site.dir.join("identities/agency-demo.pem"),
        site.dir.join("identities/agency-demo-key.pem"),
    );
    let mut agency = v1::transfer_service_client::TransferServiceClient::new(
        common::net::grpc_channel_as(&site, &cert, &key, addr.port()).await,
    );
    let answer = agency.get_stats(v1::StatsRequest::default()).await.unwrap().into_inner();
    let over_https = &stats["figures"];
    assert_eq!(answer.transfers, over_https["transfers"].as_u64().unwrap());
    assert_eq!(answer.resolved.unwrap().count, over_https["resolved"]["count"].as_u64().unwrap());
    assert_eq!(answer.rejected.unwrap().rate, over_https["rejected"]["rate"].as_f64());
    assert_eq!(answer.by_direction.get("12345->110"), Some(&1));
    assert_eq!(answer.top_categories[0].category, "NP07");
    let refused = agency
        .get_stats(v1::StatsRequest { direction: "sideways".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    let details = refused.get_error_details();
    assert_eq!(details.bad_request().unwrap().field_violations[0].field, "direction");
}

/// The case a caller phones about is found by either desk's reference or by the caller's
/// phone as any desk writes it, only among the transfers the searcher may read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_case_is_found_by_either_reference_or_the_callers_phone() {
    let site = Site::new("stats-search");
    let (addr, _, _stop) = start_on_free_port(&site).await;
    let police = Client::for_endpoint(&site, "330200/110", addr);
    let hotline = Client::for_endpoint(&site, "330200/12345", addr);
    let beijing = Client::for_endpoint(&site, "110000/110", addr);
    let answer = police
        .post(
            "/v1/native/330200/110/transfers",
            common::net::sample("jjd-json/transfer-ningbo-township.json"),
        )
        .await;
    let id = answer.header("x-liandong-transfer-id").unwrap();
    let found = |client: &Client, query: &str| {
        let (client, query) = (client.clone(), query.to_string());
        async move {
            let answer = client.get(&format!("/v1/transfers?{query}")).await;
            assert_eq!(answer.status, 200, "{query}: {}", answer.text());
            answer.json()["transfers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["transfer_id"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    // the sender's reference (LZBH), the origin desk's case number (JJDBH)
    assert_eq!(found(&hotline, "reference=LZ202305080001").await, vec![id.clone()]);
    assert_eq!(found(&hotline, "reference=JJ202305080001").await, vec![id.clone()]);
    assert!(found(&hotline, "reference=%25").await.is_empty(), "no wildcards");
    // the phone, as a desk would type it
    assert_eq!(found(&hotline, "phone=139-0000-0001").await, vec![id.clone()]);
    assert_eq!(found(&police, "phone=%2B86%20139%200000%200001").await, vec![id.clone()]);
    assert!(found(&hotline, "phone=13900000002").await.is_empty());
    assert!(found(&beijing, "phone=13900000001").await.is_empty(), "not Beijing's to read");
    let refused = hotline.get("/v1/transfers?phone=call-me").await;
    assert_eq!((refused.status, refused.json()["error"]["field"].as_str()), (400, Some("phone")));
    // and over gRPC
    use liandong::proto::v1;
    let mut client = v1::transfer_service_client::TransferServiceClient::new(
        common::net::grpc_channel(&site, "330200/12345", addr.port()).await,
    );
    let listed = client
        .list_transfers(v1::ListTransfersRequest {
            phone: "13900000001".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.transfers.iter().map(|t| t.transfer_id.clone()).collect::<Vec<_>>(), [id]);
}

/// Reads a server-sent event stream until `wanted` is in it (or `seconds` pass): what was read.
async fn read_events_until(
    stream: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    wanted: &str,
    seconds: u64,
) -> String {
    use tokio::io::AsyncReadExt;
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(seconds);
    let mut buffer = vec![0u8; 16 * 1024];
    while !seen.contains(wanted) {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Ok(Ok(n)) if n > 0 => seen.push_str(&String::from_utf8_lossy(&buffer[..n])),
            _ => break,
        }
    }
    seen
}

/// The wall's feed: a transfer submitted after the stream opened arrives on it as a
/// server-sent event (a batch, with the cursor as its id), carrying no caller's personal
/// data; an agency's stream carries only its regions' transfers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_carries_what_flows_to_whom_may_see_it() {
    let site = Site::new("stats-events");
    let (addr, _, _stop) = start_on_free_port(&site).await;
    let police = Client::for_endpoint(&site, "330200/110", addr);
    let beijing = Client::for_endpoint(&site, "110000/110", addr);
    let (cert, key) = (
        site.dir.join("identities/operator-ops.pem"),
        site.dir.join("identities/operator-ops-key.pem"),
    );
    let operator = Client::new(&site, &cert, &key, addr);
    let (cert, key) = (
        site.dir.join("identities/agency-demo.pem"),
        site.dir.join("identities/agency-demo-key.pem"),
    );
    let agency = Client::new(&site, &cert, &key, addr);
    let open = b"GET /v1/events HTTP/1.1\r\nhost: localhost\r\naccept: text/event-stream\r\n\r\n";
    let mut wall = operator.unfinished(open).await;
    let mut regional = agency.unfinished(open).await;
    let head = read_events_until(&mut wall, "\r\n\r\n", 5).await;
    assert!(head.starts_with("HTTP/1.1 200") && head.contains("text/event-stream"), "{head}");

    // a Beijing transfer, then a Ningbo one
    let mut request = common::stores::ningbo_request("EV-BJ");
    let capital: liandong::model::EndpointId = "110000/110".parse().unwrap();
    request.from = capital.clone();
    request.case.origin.endpoint = capital.clone();
    request.case.origin.unit = None;
    request.case.case_id = liandong::model::Case::id_for(&capital, "EV-BJ");
    request.to_region = None;
    if let Some(location) = request.case.location.as_mut() {
        location.region = "110101".parse().ok();
    }
    let answer = beijing.post("/v1/transfers", serde_json::to_vec(&request).unwrap()).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let beijing_id = answer.json()["transfer"]["transfer_id"].as_str().unwrap().to_string();
    let answer = police.post("/v1/transfers", request_bytes("EV-NB")).await;
    let ningbo_id = answer.json()["transfer"]["transfer_id"].as_str().unwrap().to_string();

    let seen = read_events_until(&mut wall, &ningbo_id, 10).await;
    assert!(
        seen.contains("event: transfers")
            && seen.contains(&beijing_id)
            && seen.contains(&ningbo_id),
        "{seen}"
    );
    assert!(seen.contains("\nid: "), "each message names its cursor: {seen}");
    assert!(
        !seen.contains("13900000001") && !seen.contains("李女士"),
        "no caller's data on a wall: {seen}"
    );
    let regional_seen = read_events_until(&mut regional, &ningbo_id, 10).await;
    assert!(
        regional_seen.contains(&ningbo_id) && !regional_seen.contains(&beijing_id),
        "{regional_seen}"
    );

    // A browser whose connection dropped reconnects with the last id it had (`Last-Event-ID`,
    // as EventSource does): it gets what came after, and nothing it already showed.
    let last_id =
        seen.lines().filter_map(|l| l.strip_prefix("id: ")).next_back().expect("an id").to_string();
    drop(wall);
    let later = police.post("/v1/transfers", request_bytes("EV-NB-2")).await;
    let later_id = later.json()["transfer"]["transfer_id"].as_str().unwrap().to_string();
    let resume = format!(
        "GET /v1/events HTTP/1.1\r\nhost: localhost\r\naccept: text/event-stream\r\nlast-event-id: {last_id}\r\n\r\n"
    );
    let mut resumed = operator.unfinished(resume.as_bytes()).await;
    let after = read_events_until(&mut resumed, &later_id, 10).await;
    assert!(after.contains(&later_id), "{after}");
    assert!(!after.contains(&ningbo_id) && !after.contains(&beijing_id), "{after}");
}

fn request_bytes(sender_ref: &str) -> Vec<u8> {
    request(sender_ref, false)
}
