//! The one refusal path, pinned: each refusal on each transport — native HTTPS (the sender's
//! own receipt), canonical HTTPS, the datasets' HTTPS and gRPC — answered exactly as the
//! snapshots in `tests/snapshots/refusals/` say (`UPDATE_SNAPSHOTS=1` rewrites them after a
//! deliberate change), each carrying the request id the caller sent; and each one counted under
//! the same reason label, and the audited ones found in the trail by that request id.

use liandong::proto::v1;
use serde_json::{json, Value};
use tonic_types::StatusExt;

use crate::common;
use common::assert_snapshot;
use common::net::{grpc_channel, metrics_text, sample, start_on_free_port, Answer, Client, Site};

/// An HTTPS answer as a snapshot: status, the headers a caller acts on, and the body (JSON
/// pretty-printed; a receipt in XML as sent).
fn http_snapshot(answer: &Answer) -> String {
    let mut text = format!("HTTP {}\n", answer.status);
    for name in ["content-type", "retry-after", "x-request-id"] {
        if let Some(value) = answer.header(name) {
            text.push_str(&format!("{name}: {value}\n"));
        }
    }
    text.push('\n');
    match serde_json::from_slice::<Value>(&answer.body) {
        Ok(value) => text.push_str(&serde_json::to_string_pretty(&value).unwrap()),
        Err(_) => text.push_str(&answer.text()),
    }
    text.push('\n');
    text
}

/// A gRPC status as a snapshot: code, message, its details, and the request id in its metadata.
fn grpc_snapshot(status: &tonic::Status) -> String {
    let mut text = format!("{:?}\n{}\n", status.code(), status.message());
    let details = status.get_error_details();
    if let Some(info) = details.error_info() {
        text.push_str(&format!("ErrorInfo: reason={} domain={}\n", info.reason, info.domain));
    }
    if let Some(info) = details.request_info() {
        text.push_str(&format!("RequestInfo: request_id={}\n", info.request_id));
    }
    if let Some(bad) = details.bad_request() {
        for violation in &bad.field_violations {
            text.push_str(&format!(
                "BadRequest: {} — {}\n",
                violation.field, violation.description
            ));
        }
    }
    if let Some(value) = status.metadata().get("x-request-id") {
        text.push_str(&format!("metadata x-request-id: {}\n", value.to_str().unwrap()));
    }
    text
}

/// A refusal over HTTPS: snapshot name, client, method, path, body, and whether it is audited.
type HttpsCase<'a> = (&'a str, &'a Client, &'a str, String, Vec<u8>, bool);

fn with_id<T>(message: T, id: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("x-request-id", id.parse().unwrap());
    request
}

/// A canonical transfer request of the Ningbo 110, from the spec's sample.
fn grpc_request(sender_ref: &str) -> v1::TransferRequest {
    common::stores::ningbo_request(sender_ref).into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_refusal_on_each_transport_is_answered_recorded_and_audited_alike() {
    let site = Site::new("refusals");
    // A read budget of one call for the agency, to meet the rate limit on purpose.
    site.edit_config(|text| {
        format!(
            "{text}\n[[limits.override]]\nidentity = \"liandong://agency/demo\"\nkind = \"read\"\nper_second = 1\nburst = 1\n"
        )
    });
    let (addr, admin, _stop) = start_on_free_port(&site).await;
    let police = Client::for_endpoint(&site, "330200/110", addr);
    let hotline = Client::for_endpoint(&site, "330200/12345", addr);
    let liaoning = Client::for_endpoint(&site, "210000/110", addr);
    let agency = Client::new(
        &site,
        &site.dir.join("identities/agency-demo.pem"),
        &site.dir.join("identities/agency-demo-key.pem"),
        addr,
    );

    let submitted = police
        .post("/v1/native/330200/110/transfers", sample("jjd-json/transfer-ningbo-township.json"))
        .await;
    assert_eq!(submitted.status, 200, "{}", submitted.text());
    let transfer_id = submitted.header("x-liandong-transfer-id").unwrap();
    let now = liandong::model::Timestamp::now().to_rfc3339();
    let premature_close = json!({"state": "closed", "at": now, "feedback": {"satisfaction": "satisfied", "visited_at": now}});
    let record =
        json!({"version": 1, "body": {"unit": {"code": "GQ-LB", "name": "高桥镇劳动保障所"}}});
    let put = hotline
        .request(
            "PUT",
            "/v1/datasets/directory/records/330203101/NP03",
            record.to_string().into_bytes(),
        )
        .await
        .unwrap();
    assert_eq!(put.status, 200, "{}", put.text());

    let stale = json!({"version": 1, "body": {"unit": {"name": "别处"}}});
    let too_large = vec![b' '; (1 << 20) + 10];
    let https: Vec<HttpsCase> = vec![
        (
            "native-bad-document",
            &police,
            "POST",
            "/v1/native/330200/110/transfers".into(),
            sample("invalid/jjd-bad-time.json"),
            true,
        ),
        (
            "native-bad-document-xml",
            &liaoning,
            "POST",
            "/v1/native/210000/110/transfers".into(),
            sample("invalid/jqxx-jw11-in-liaoning.xml"),
            true,
        ),
        (
            "native-identity",
            &hotline,
            "POST",
            "/v1/native/330200/110/transfers".into(),
            sample("jjd-json/transfer-ningbo-township.json"),
            true,
        ),
        (
            "native-too-large",
            &police,
            "POST",
            "/v1/native/330200/110/transfers".into(),
            too_large,
            true,
        ),
        (
            "canonical-bad-document",
            &police,
            "GET",
            "/v1/transfers?state=nonsense".into(),
            vec![],
            true,
        ),
        (
            "canonical-not-an-endpoint",
            &agency,
            "POST",
            "/v1/transfers".into(),
            b"{}".to_vec(),
            true,
        ),
        (
            "canonical-not-found",
            &police,
            "GET",
            "/v1/transfers/01ZZZZZZZZZZZZZZZZZZZZZZZZ".into(),
            vec![],
            true,
        ),
        (
            "canonical-transition",
            &hotline,
            "POST",
            format!("/v1/transfers/{transfer_id}/status"),
            premature_close.to_string().into_bytes(),
            true,
        ),
        ("canonical-policy", &police, "GET", "/v1/deliveries/dead".into(), vec![], true),
        ("canonical-no-route", &police, "GET", "/v1/nothing-here".into(), vec![], true),
        ("canonical-rate-limit", &agency, "GET", "/v1/transfers".into(), vec![], false),
        (
            "datasets-ownership",
            &police,
            "PUT",
            "/v1/datasets/directory/records/330203101/NP03".into(),
            json!({"version": 2, "body": {}}).to_string().into_bytes(),
            true,
        ),
        (
            "datasets-version",
            &hotline,
            "PUT",
            "/v1/datasets/directory/records/330203101/NP03".into(),
            stale.to_string().into_bytes(),
            true,
        ),
        (
            "datasets-bad-document",
            &hotline,
            "PUT",
            "/v1/datasets/knowledge/records/k1".into(),
            b"{\"body\": 1}".to_vec(),
            true,
        ),
    ];
    let mut audited = Vec::new();
    for (name, client, method, path, body, is_audited) in https {
        let id = format!("snap-{name}");
        if name == "canonical-rate-limit" {
            // the first read takes the agency's one call; the next is over the limit
            let _ = agency
                .request_with("GET", "/v1/transfers", &[("x-request-id", "snap-spent")], vec![])
                .await
                .unwrap();
        }
        let answer =
            client.request_with(method, &path, &[("x-request-id", &id)], body).await.unwrap();
        assert_snapshot(&format!("refusals/{name}"), &http_snapshot(&answer));
        if is_audited {
            audited.push(id);
        }
    }

    // the same refusals over gRPC
    let mut police_grpc = v1::transfer_service_client::TransferServiceClient::new(
        grpc_channel(&site, "330200/110", addr.port()).await,
    );
    let mut hotline_grpc = v1::transfer_service_client::TransferServiceClient::new(
        grpc_channel(&site, "330200/12345", addr.port()).await,
    );
    let mut sync_grpc = v1::sync_service_client::SyncServiceClient::new(
        grpc_channel(&site, "330200/110", addr.port()).await,
    );
    let mut unknown = grpc_request("R-1");
    unknown.case.as_mut().unwrap().category = "NP42".into();
    let premature = v1::StatusUpdate {
        transfer_id: Some(transfer_id.clone()),
        state: v1::State::Closed as i32,
        at: Some(prost_types::Timestamp {
            seconds: liandong::model::Timestamp::now().unix_seconds(),
            nanos: 0,
        }),
        by: "330200/12345".into(),
        feedback: Some(v1::Feedback {
            satisfaction: v1::Satisfaction::Satisfied as i32,
            visited_at: Some(prost_types::Timestamp {
                seconds: liandong::model::Timestamp::now().unix_seconds(),
                nanos: 0,
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let grpc: Vec<(&str, tonic::Status)> = vec![
        (
            "grpc-bad-document",
            police_grpc
                .submit_transfer(with_id(
                    v1::SubmitTransferRequest { request: Some(unknown) },
                    "snap-grpc-bad-document",
                ))
                .await
                .unwrap_err(),
        ),
        (
            "grpc-identity",
            hotline_grpc
                .submit_transfer(with_id(
                    v1::SubmitTransferRequest { request: Some(grpc_request("R-2")) },
                    "snap-grpc-identity",
                ))
                .await
                .unwrap_err(),
        ),
        (
            "grpc-not-found",
            police_grpc
                .get_transfer(with_id(
                    v1::GetTransferRequest { transfer_id: "01ZZZZZZZZZZZZZZZZZZZZZZZZ".into() },
                    "snap-grpc-not-found",
                ))
                .await
                .unwrap_err(),
        ),
        (
            "grpc-transition",
            hotline_grpc
                .update_status(with_id(
                    v1::UpdateStatusRequest { update: Some(premature) },
                    "snap-grpc-transition",
                ))
                .await
                .unwrap_err(),
        ),
        (
            "grpc-ownership",
            sync_grpc
                .put(with_id(
                    v1::PutRequest {
                        dataset: "directory".into(),
                        key: "330203101/NP03".into(),
                        version: 2,
                        body_json: "{}".into(),
                        ..Default::default()
                    },
                    "snap-grpc-ownership",
                ))
                .await
                .unwrap_err(),
        ),
    ];
    for (name, status) in &grpc {
        assert_snapshot(&format!("refusals/{name}"), &grpc_snapshot(status));
        audited.push(format!("snap-{name}"));
    }

    // every refusal counted under its label, on every transport alike
    let text = metrics_text(admin).await;
    for (label, at_least) in [
        ("bad_document", 5),
        ("identity", 3),
        ("not_found", 2),
        ("transition", 2),
        ("ownership", 2),
        ("version", 1),
        ("policy", 1),
        ("too_large", 1),
        ("rate_limit", 1),
        ("no_route", 1),
    ] {
        let line = format!("liandong_refusals_total{{reason=\"{label}\"}}");
        let count: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix(&line).map(|n| n.trim().parse().unwrap()))
            .unwrap_or_else(|| panic!("no {line} in\n{text}"));
        assert!(count >= at_least, "{line} is {count}, expected at least {at_least}");
    }
    assert!(!text.contains("reason=\"permission\"") && !text.contains("reason=\"grpc\""), "{text}");

    // and the audited ones in the trail, each found by the request id its answer carried
    use sqlx::Connection;
    let db = site.dir.join("liandong.db");
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=ro", db.display()))
        .await
        .unwrap();
    let mut found = Vec::new();
    for _ in 0..100 {
        let details: Vec<String> =
            sqlx::query_scalar("SELECT detail FROM audit WHERE action = 'refused'")
                .fetch_all(&mut conn)
                .await
                .unwrap();
        found = details
            .iter()
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .filter_map(|d| d["request_id"].as_str().map(String::from))
            .collect();
        if audited.iter().all(|id| found.contains(id)) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    for id in &audited {
        assert!(found.contains(id), "{id} is not in the audit trail: {found:?}");
    }
    assert!(
        !found.iter().any(|id| id == "snap-canonical-rate-limit"),
        "a retry-later answer is not audited"
    );
}
