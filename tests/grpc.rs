//! gRPC over mutual TLS on the gateway's listener: a tonic client submits, reads, updates,
//! lists, watches from a cursor across a gateway restart, acknowledges (pull delivery), and
//! checks health and reflection.

use liandong::proto::v1;
use liandong::proto::v1::transfer_service_client::TransferServiceClient;

use crate::common;
use common::net::ConfigEdit;
use common::net::{grpc_channel, grpc_channel_as, start_gateway, Site};

async fn start(site: &Site, https: tokio::net::TcpListener) -> tokio::sync::oneshot::Sender<()> {
    start_gateway(site, https).await.1
}

fn request(sender_ref: &str) -> v1::TransferRequest {
    common::stores::ningbo_request(sender_ref).into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_service_over_grpc_with_a_resumable_watch() {
    let site = Site::new("grpc");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = start(&site, listener).await;

    let mut police = TransferServiceClient::new(grpc_channel(&site, "330200/110", port).await);
    let mut hotline = TransferServiceClient::new(grpc_channel(&site, "330200/12345", port).await);

    // submit, and a resend is the same transfer
    let answer = police
        .submit_transfer(v1::SubmitTransferRequest { request: Some(request("G-1")) })
        .await
        .unwrap()
        .into_inner();
    assert!(answer.created && answer.destination_reachable);
    let first = answer.transfer.unwrap();
    assert_eq!(first.to, "330200/12345");
    let again = police
        .submit_transfer(v1::SubmitTransferRequest { request: Some(request("G-1")) })
        .await
        .unwrap()
        .into_inner();
    assert!(!again.created);
    assert_eq!(again.transfer.unwrap().transfer_id, first.transfer_id);

    // error codes
    let mut bad = request("G-2");
    bad.case.as_mut().unwrap().category = "NP42".into();
    let status =
        police.submit_transfer(v1::SubmitTransferRequest { request: Some(bad) }).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().starts_with("case.category: unknown canonical category"),
        "{}",
        status.message()
    );
    let status = hotline
        .submit_transfer(v1::SubmitTransferRequest { request: Some(request("G-3")) })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "12345 cannot submit as 110");
    let status = police
        .get_transfer(v1::GetTransferRequest { transfer_id: "01ZZZZZZZZZZZZZZZZZZZZZZZZ".into() })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    let premature = v1::StatusUpdate {
        transfer_id: Some(first.transfer_id.clone()),
        state: v1::State::Closed as i32,
        at: Some(prost_types::Timestamp {
            seconds: liandong::model::Timestamp::now().unix_seconds(),
            nanos: 0,
        }),
        by: "330200/12345".into(),
        feedback: Some(v1::Feedback {
            satisfaction: v1::Satisfaction::Satisfied as i32,
            visited_at: Some(prost_types::Timestamp { seconds: 1, nanos: 0 }),
            note: None,
        }),
        ..Default::default()
    };
    let status = hotline
        .update_status(v1::UpdateStatusRequest { update: Some(premature) })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(status.message().contains("the transfer is submitted"), "{}", status.message());

    // the destination watches from the beginning and sees the transfer addressed to it
    let mut watch = hotline
        .watch(v1::WatchRequest { cursor: String::new(), from_now: false })
        .await
        .unwrap()
        .into_inner();
    let event = watch.message().await.unwrap().unwrap();
    assert_eq!(
        (event.kind.as_str(), event.transfer.as_ref().unwrap().transfer_id.as_str()),
        ("submitted", first.transfer_id.as_str())
    );
    // pull delivery: acknowledging marks it delivered, which the watch then shows
    let acked = hotline
        .acknowledge(v1::AcknowledgeRequest { transfer_ids: vec![first.transfer_id.clone()] })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(acked.acknowledged, 1);
    let delivered = watch.message().await.unwrap().unwrap();
    assert_eq!(delivered.kind, "delivered");
    let cursor = delivered.cursor.clone();
    drop(watch);
    let read = hotline
        .get_transfer(v1::GetTransferRequest { transfer_id: first.transfer_id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read.state, v1::State::Delivered as i32);

    // restart the gateway on the same store; resume from the cursor: only what came after
    let _ = stop.send(());
    let listener = loop {
        // the old server lets go of the port as it shuts down
        match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
            Ok(listener) => break listener,
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    };
    let _stop = start(&site, listener).await;
    let mut police = TransferServiceClient::new(grpc_channel(&site, "330200/110", port).await);
    let mut hotline = TransferServiceClient::new(grpc_channel(&site, "330200/12345", port).await);
    let second = police
        .submit_transfer(v1::SubmitTransferRequest { request: Some(request("G-4")) })
        .await
        .unwrap()
        .into_inner()
        .transfer
        .unwrap();
    let mut watch =
        hotline.watch(v1::WatchRequest { cursor, from_now: false }).await.unwrap().into_inner();
    let next = watch.message().await.unwrap().unwrap();
    assert_eq!(
        (next.kind.as_str(), next.transfer.unwrap().transfer_id),
        ("submitted", second.transfer_id.clone()),
        "nothing repeated, nothing missed"
    );

    // listing, paged
    let page = police
        .list_transfers(v1::ListTransfersRequest { page_size: 1, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.transfers.len(), 1);
    let rest = police
        .list_transfers(v1::ListTransfersRequest {
            page_size: 1,
            page_token: page.next_page_token,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.transfers.len(), 1);
    assert_ne!(rest.transfers[0].transfer_id, page.transfers[0].transfer_id);
    let status = police
        .list_transfers(v1::ListTransfersRequest {
            endpoint: "330200/12345".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);

    // standard health checking and reflection
    let mut health = tonic_health::pb::health_client::HealthClient::new(
        grpc_channel(&site, "330200/110", port).await,
    );
    let serving = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "liandong.v1.TransferService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        serving.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    use tonic_reflection::pb::v1::{
        server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        ServerReflectionRequest,
    };
    let mut reflection = ServerReflectionClient::new(grpc_channel(&site, "330200/110", port).await);
    let ask = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(tokio_stream::iter(vec![ask]))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        answers.message().await.unwrap().unwrap().message_response
    else {
        panic!("a list")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"liandong.v1.TransferService".to_string())
            && names.contains(&"liandong.v1.SyncService".to_string())
            && names.contains(&"grpc.health.v1.Health".to_string()),
        "{names:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_limit_grpc_answers_resource_exhausted_with_retry_info() {
    let site = Site::new("grpc-limits");
    site.edit_config(|t| {
        format!(
            "{t}\n[limits.endpoint]\nsubmit = {{ per_second = 1, burst = 1 }}\nimmediate = {{ per_second = 1, burst = 5 }}\nstatus = {{ per_second = 1, burst = 1 }}\nread = {{ per_second = 100, burst = 100 }}\n"
        )
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let _stop = start(&site, listener).await;
    let mut police = TransferServiceClient::new(grpc_channel(&site, "330200/110", port).await);
    police
        .submit_transfer(v1::SubmitTransferRequest { request: Some(request("L-1")) })
        .await
        .unwrap();
    let status = police
        .submit_transfer(v1::SubmitTransferRequest { request: Some(request("L-2")) })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    use tonic_types::StatusExt;
    let retry = status.get_error_details().retry_info().cloned().expect("retry info");
    assert!(retry.retry_delay.is_some_and(|d| d > std::time::Duration::ZERO), "{retry:?}");
    let mut urgent = request("L-3");
    urgent.case.as_mut().unwrap().urgency = v1::Urgency::Immediate as i32;
    police
        .submit_transfer(v1::SubmitTransferRequest { request: Some(urgent) })
        .await
        .expect("immediate has its own budget");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agency_watches_only_what_its_grant_covers() {
    let site = Site::new("grpc-agency");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let _stop = start(&site, listener).await;
    let mut police = TransferServiceClient::new(grpc_channel(&site, "330200/110", port).await);
    let ningbo = police
        .submit_transfer(v1::SubmitTransferRequest { request: Some(request("A-1")) })
        .await
        .unwrap()
        .into_inner();
    let mut beijing = request("A-2");
    beijing.from = "110000/110".into();
    beijing.case.as_mut().unwrap().origin.as_mut().unwrap().endpoint = "110000/110".into();
    // its own case: the case id names the Beijing 110
    let case = beijing.case.as_mut().unwrap();
    case.case_id = case.case_id.replace("110:330200:", "110:110000:");
    beijing.case.as_mut().unwrap().location = None;
    beijing.to_region = None;
    let mut beijing_client =
        TransferServiceClient::new(grpc_channel(&site, "110000/110", port).await);
    beijing_client
        .submit_transfer(v1::SubmitTransferRequest { request: Some(beijing) })
        .await
        .unwrap();
    let mut later = request("A-3");
    later.sender_ref = "A-3".into();
    let third = police
        .submit_transfer(v1::SubmitTransferRequest { request: Some(later) })
        .await
        .unwrap()
        .into_inner();

    let agency_channel = grpc_channel_as(
        &site,
        &site.dir.join("identities/agency-demo.pem"),
        &site.dir.join("identities/agency-demo-key.pem"),
        port,
    )
    .await;
    let mut agency = TransferServiceClient::new(agency_channel);
    let mut watch = agency
        .watch(v1::WatchRequest { cursor: String::new(), from_now: false })
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    let second = watch.message().await.unwrap().unwrap();
    let first_id = first.transfer.clone().unwrap().transfer_id;
    assert_eq!(first.transfer.unwrap().transfer_id, ningbo.transfer.unwrap().transfer_id);
    assert_eq!(
        second.transfer.unwrap().transfer_id,
        third.transfer.unwrap().transfer_id,
        "Beijing's transfer is not shown"
    );
    let status = agency
        .submit_transfer(v1::SubmitTransferRequest { request: Some(request("A-4")) })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    // the refusal is in the audit trail, with who and which method
    let mut beijing_read =
        TransferServiceClient::new(grpc_channel(&site, "110000/110", port).await);
    let ningbo_id = first_id;
    let status = beijing_read
        .get_transfer(v1::GetTransferRequest { transfer_id: ningbo_id })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    use sqlx::Connection;
    let db = format!("sqlite://{}", site.dir.join("liandong.db").display());
    let mut found = 0;
    for _ in 0..50 {
        let mut conn = sqlx::SqliteConnection::connect(&db).await.unwrap();
        found = sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM audit WHERE action = 'refused' AND actor = 'liandong://endpoint/110000/110' AND detail LIKE '%GetTransfer%'",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        if found > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(found, 1, "the gRPC refusal is audited");
}

/// What a partner built from reflection alone found: pages that end exactly, tokens and
/// cursors the gateway never gave, an operator narrowing to one endpoint, `from` and `by` from
/// the certificate, a quiet watch that says so, a watch from now, and streams that end at once
/// when the gateway stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edges_a_partner_found_from_reflection() {
    let site = Site::new("grpc-edges");
    site.edit_config(|t| {
        t.must_replacen("[listen]\n", "[listen]\nstream_heartbeat = \"300ms\"\n", 1)
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let config = liandong::config::Config::load(&site.config).unwrap();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(liandong::server::run(
        config,
        liandong::server::Listeners { https: listener, admin },
        async move {
            let _ = stopped.await;
        },
    ));
    let mut police = TransferServiceClient::new(grpc_channel(&site, "330200/110", port).await);
    let mut hotline = TransferServiceClient::new(grpc_channel(&site, "330200/12345", port).await);

    // `from` and the case's origin come from the certificate when left out
    let mut bare = request("E-1");
    bare.from.clear();
    bare.case.as_mut().unwrap().origin.as_mut().unwrap().endpoint.clear();
    bare.case.as_mut().unwrap().case_id.clear();
    let first = police
        .submit_transfer(v1::SubmitTransferRequest { request: Some(bare) })
        .await
        .unwrap()
        .into_inner();
    let first = first.transfer.unwrap();
    assert_eq!(
        (first.from.as_str(), first.case.as_ref().unwrap().case_id.starts_with("110:330200:")),
        ("330200/110", true)
    );
    police
        .submit_transfer(v1::SubmitTransferRequest { request: Some(request("E-2")) })
        .await
        .unwrap();
    // `by` from the certificate too
    let accepted = hotline
        .update_status(v1::UpdateStatusRequest {
            update: Some(v1::StatusUpdate {
                transfer_id: Some(first.transfer_id.clone()),
                state: v1::State::Accepted as i32,
                at: Some(prost_types::Timestamp {
                    seconds: liandong::model::Timestamp::now().unix_seconds(),
                    nanos: 0,
                }),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(accepted.state, v1::State::Accepted as i32);

    // two transfers, pages of two: no token after an exactly full last page
    let list = |page_size: u32, page_token: String, endpoint: String| v1::ListTransfersRequest {
        page_size,
        page_token,
        endpoint,
        ..Default::default()
    };
    let page =
        police.list_transfers(list(2, String::new(), String::new())).await.unwrap().into_inner();
    assert_eq!((page.transfers.len(), page.next_page_token.as_str()), (2, ""));
    let page =
        police.list_transfers(list(1, String::new(), String::new())).await.unwrap().into_inner();
    assert_eq!(page.transfers.len(), 1);
    let page = police
        .list_transfers(list(1, page.next_page_token, String::new()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((page.transfers.len(), page.next_page_token.as_str()), (1, ""));
    let made_up = police.list_transfers(list(1, "page-2".into(), String::new())).await.unwrap_err();
    assert_eq!(made_up.code(), tonic::Code::InvalidArgument);
    assert!(made_up.message().starts_with("page_token: "), "{}", made_up.message());
    // an operator narrows to one endpoint
    let (cert, key) = (
        site.dir.join("identities/operator-ops.pem"),
        site.dir.join("identities/operator-ops-key.pem"),
    );
    let mut operator = TransferServiceClient::new(grpc_channel_as(&site, &cert, &key, port).await);
    let mut beijing = request("E-3");
    beijing.from = "110000/110".into();
    let case = beijing.case.as_mut().unwrap();
    case.origin.as_mut().unwrap().endpoint = "110000/110".into();
    case.case_id = case.case_id.replace("110:330200:", "110:110000:");
    case.location = None;
    beijing.to_region = None;
    TransferServiceClient::new(grpc_channel(&site, "110000/110", port).await)
        .submit_transfer(v1::SubmitTransferRequest { request: Some(beijing) })
        .await
        .unwrap();
    let all =
        operator.list_transfers(list(10, String::new(), String::new())).await.unwrap().into_inner();
    assert_eq!(all.transfers.len(), 3);
    let ningbo = operator
        .list_transfers(list(10, String::new(), "330200/110".into()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ningbo.transfers.len(), 2, "the endpoint filter holds for an operator");

    // a cursor past the end was never given
    let past = hotline
        .watch(v1::WatchRequest { cursor: "0.999999".into(), from_now: false })
        .await
        .unwrap_err();
    assert_eq!(past.code(), tonic::Code::InvalidArgument);
    assert!(past.message().starts_with("cursor: "), "{}", past.message());
    // from now: the next event is the next change, and a quiet stream sends heartbeats
    let mut watch = hotline
        .watch(v1::WatchRequest { cursor: String::new(), from_now: true })
        .await
        .unwrap()
        .into_inner();
    let beat = tokio::time::timeout(std::time::Duration::from_secs(10), watch.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!((beat.kind.as_str(), beat.transfer.is_none()), ("heartbeat", true));
    police
        .submit_transfer(v1::SubmitTransferRequest { request: Some(request("E-4")) })
        .await
        .unwrap();
    let next = loop {
        let event = tokio::time::timeout(std::time::Duration::from_secs(10), watch.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if event.kind != "heartbeat" {
            break event;
        }
    };
    assert_eq!(
        (next.kind.as_str(), next.transfer.unwrap().from.as_str()),
        ("submitted", "330200/110")
    );

    // stopping: the open watch ends with UNAVAILABLE (resume from the cursor), and the gateway
    // does not wait out its grace period for it
    let _ = stop.send(());
    let ended = loop {
        match tokio::time::timeout(std::time::Duration::from_secs(5), watch.message())
            .await
            .expect("the stream ends")
        {
            Ok(Some(event)) if event.kind == "heartbeat" => continue,
            other => break other,
        }
    };
    assert_eq!(ended.unwrap_err().code(), tonic::Code::Unavailable);
    tokio::time::timeout(std::time::Duration::from_secs(5), server)
        .await
        .expect("the gateway stops")
        .unwrap()
        .unwrap();
}
