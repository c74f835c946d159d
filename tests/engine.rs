//! The transfer engine over a real store: one suite, run against SQLite and against the
//! PostgreSQL server (see `common::stores`).

use liandong::engine::EngineError;
use liandong::formats::Registry;
use liandong::model::lifecycle::Outcome;
use liandong::model::{EndpointId, HistoryEvent, State, StatusUpdate, Timestamp};
use liandong::store::{Write, WriteResult};

use crate::common;
use common::stores::{engine, ningbo_request, stores};
use liandong::model::{Link, LinkRel};

fn id(s: &str) -> EndpointId {
    s.parse().unwrap()
}

fn update(transfer_id: &str, state: State, by: &str) -> StatusUpdate {
    StatusUpdate {
        transfer_id: Some(transfer_id.to_string()),
        transfer_ref: None,
        state,
        at: Timestamp::now(),
        by: id(by),
        unit: None,
        note: matches!(state, State::Rejected | State::Cancelled).then(|| "原因".into()),
        resolution: None,
        feedback: None,
        reason_code: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_is_idempotent_by_sender_ref() {
    for (backend, store, _dir) in stores("submit").await {
        let engine = engine(store.clone());
        let origin = id("330200/110");
        let first = engine.submit(&origin, ningbo_request("LZ-1")).await.unwrap();
        assert!(first.created, "{backend}");
        assert_eq!(first.transfer.to.to_string(), "330200/12345", "{backend}: Ningbo's own 12345");
        assert_eq!(first.transfer.direction, "110->12345");
        let receive = first.transfer.deadlines.receive_by.unix_seconds()
            - first.transfer.requested_at.unix_seconds();
        assert_eq!(receive, 300, "{backend}: the endpoint's override of receive_by");
        let again = engine.submit(&origin, ningbo_request("LZ-1")).await.unwrap();
        assert!(!again.created, "{backend}");
        assert_eq!(again.transfer.transfer_id, first.transfer.transfer_id, "{backend}");
        assert_eq!(
            store.deliveries_of(&first.transfer.transfer_id).await.unwrap().len(),
            1,
            "{backend}: one delivery"
        );
        // Concurrent resends of one document make one transfer.
        let handles: Vec<_> = (0..16)
            .map(|_| {
                let engine = engine.clone();
                let origin = origin.clone();
                tokio::spawn(async move {
                    engine.submit(&origin, ningbo_request("LZ-2")).await.unwrap()
                })
            })
            .collect();
        let mut ids = Vec::new();
        for h in handles {
            let s = h.await.unwrap();
            ids.push(s.transfer.transfer_id);
        }
        ids.dedup();
        assert_eq!(ids.len(), 1, "{backend}: {ids:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_and_rules_are_enforced_and_refusals_change_nothing() {
    for (backend, store, _dir) in stores("rules").await {
        let engine = engine(store.clone());
        let origin = id("330200/110");
        let err = engine.submit(&id("330000/110"), ningbo_request("X")).await.unwrap_err();
        assert!(matches!(err, EngineError::Forbidden(_)), "{backend}: {err}");
        let t = engine.submit(&origin, ningbo_request("LZ-3")).await.unwrap().transfer;
        // a stranger cannot touch it
        let err = engine
            .update_status(
                &id("210000/12345"),
                update(&t.transfer_id, State::Accepted, "210000/12345"),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, EngineError::Forbidden(_)), "{backend}: {err}");
        // the origin cannot accept; nothing changes
        let before = store.transfer(&t.transfer_id).await.unwrap().unwrap();
        let err = engine
            .update_status(&origin, update(&t.transfer_id, State::Accepted, "330200/110"))
            .await
            .unwrap_err();
        assert!(
            err.to_string().starts_with(
                "refused: the transfer is submitted; accepted may only be set by the destination"
            ),
            "{backend}: {err}"
        );
        assert_eq!(store.transfer(&t.transfer_id).await.unwrap().unwrap(), before, "{backend}");
        assert_eq!(
            store.deliveries_of(&t.transfer_id).await.unwrap().len(),
            1,
            "{backend}: no notification"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_flow_notifies_the_other_party_by_its_own_reference() {
    for (backend, store, _dir) in stores("flow").await {
        let engine = engine(store.clone());
        let origin = id("330200/110");
        let destination = id("330200/12345");
        let t = engine.submit(&origin, ningbo_request("LZ-4")).await.unwrap().transfer;
        // the destination names it by transfer_ref = transfer_id
        let mut accepted = update(&t.transfer_id, State::Accepted, "330200/12345");
        accepted.transfer_id = None;
        accepted.transfer_ref = Some(t.transfer_id.clone());
        let (after, outcome) = engine.update_status(&destination, accepted.clone()).await.unwrap();
        assert!(matches!(outcome, Outcome::Applied(_)), "{backend}");
        assert_eq!(after.state, State::Accepted);
        let states: Vec<_> = after.history.iter().map(|h| (h.state, h.implied)).collect();
        assert_eq!(
            states,
            vec![
                (HistoryEvent::State(State::Submitted), false),
                (HistoryEvent::State(State::Delivered), true),
                (HistoryEvent::State(State::Received), true),
                (HistoryEvent::State(State::Accepted), false)
            ],
            "{backend}"
        );
        // a repeat is a success that changes nothing
        let (_, again) = engine.update_status(&destination, accepted).await.unwrap();
        assert_eq!(again, Outcome::Duplicate, "{backend}");
        // the origin is notified, by its own sender_ref
        let deliveries = store.deliveries_of(&t.transfer_id).await.unwrap();
        assert_eq!(deliveries.len(), 2, "{backend}");
        assert_eq!(deliveries[1].destination, origin);
        let notice: StatusUpdate = serde_json::from_str(&deliveries[1].payload).unwrap();
        assert_eq!(notice.transfer_ref.as_deref(), Some("LZ-4"), "{backend}");
        // the origin cancels by its own reference; the destination hears of it by transfer_id
        let mut cancel = update(&t.transfer_id, State::Cancelled, "330200/110");
        cancel.transfer_id = None;
        cancel.transfer_ref = Some("LZ-4".into());
        engine.update_status(&origin, cancel).await.unwrap();
        let deliveries = store.deliveries_of(&t.transfer_id).await.unwrap();
        let notice: StatusUpdate = serde_json::from_str(&deliveries[2].payload).unwrap();
        assert_eq!(
            (deliveries[2].destination.clone(), notice.transfer_ref),
            (destination, Some(t.transfer_id.clone())),
            "{backend}"
        );
    }
}

/// A PostgreSQL lease read that cannot finish is cancelled by the server after
/// `store::LEASE_TIMEOUT`, and the next read goes through: a read left running for minutes
/// kept every delivery's dead outbox rows alive for every other reader (docs/PERFORMANCE.md,
/// "The upkeep past the server's memory"). Here the read waits on a lock another session holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_lease_read_that_cannot_finish_is_cancelled_and_the_next_goes_through() {
    use sqlx::Connection;
    for (backend, store, _dir) in stores("lease_timeout").await {
        if backend != "postgres" {
            continue;
        }
        let engine = engine(store.clone());
        engine.submit(&id("330200/110"), ningbo_request("LZ-T1")).await.unwrap();
        let mut other = sqlx::PgConnection::connect(&common::stores::schema_url("lease_timeout"))
            .await
            .unwrap();
        sqlx::query("BEGIN").execute(&mut other).await.unwrap();
        sqlx::query("LOCK TABLE outbox IN ACCESS EXCLUSIVE MODE")
            .execute(&mut other)
            .await
            .unwrap();
        let now = liandong::store::now_millis();
        let started = std::time::Instant::now();
        let read = tokio::time::timeout(
            liandong::store::LEASE_TIMEOUT * 4,
            store.lease(now, 30_000, 10, &everyone()),
        )
        .await
        .expect("the lease read was left running");
        let waited = started.elapsed();
        let error = read.expect_err("the lease read cannot have finished").to_string();
        assert!(error.contains("statement timeout"), "{error}");
        assert!(waited >= liandong::store::LEASE_TIMEOUT, "cancelled after {waited:?}");
        sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
        let leased = store.lease(now, 30_000, 10, &everyone()).await.unwrap();
        assert_eq!(leased.len(), 1, "the next read takes the delivery");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_are_leased_in_order_retried_and_dead_lettered() {
    for (backend, store, _dir) in stores("outbox").await {
        let engine = engine(store.clone());
        let origin = id("330200/110");
        let t = engine.submit(&origin, ningbo_request("LZ-5")).await.unwrap().transfer;
        engine
            .update_status(&origin, update(&t.transfer_id, State::Cancelled, "330200/110"))
            .await
            .unwrap();
        // The outbox keeps its times in milliseconds; everything else in seconds.
        let now = liandong::store::now_millis();
        let at = now / 1000;
        let leased = store.lease(now, 30_000, 10, &everyone()).await.unwrap();
        assert_eq!(
            leased.len(),
            1,
            "{backend}: the cancellation waits for the transfer's delivery"
        );
        assert!(
            store.lease(now, 30_000, 10, &everyone()).await.unwrap().is_empty(),
            "{backend}: a leased item is not handed out twice"
        );
        // A lease that runs out (its replica died) makes the item due again, then and not before.
        assert!(
            store.lease(now + 29_000, 30_000, 10, &everyone()).await.unwrap().is_empty(),
            "{backend}: out until its lease runs out"
        );
        let again = store.lease(now + 30_000, 30_000, 10, &everyone()).await.unwrap();
        assert_eq!(
            again.iter().map(|i| i.id).collect::<Vec<_>>(),
            [leased[0].id],
            "{backend}: due again once its lease ran out"
        );
        let item = &leased[0];
        store
            .write(Write::Failed {
                item_id: item.id,
                at,
                error: "connection refused".into(),
                next_attempt_at: now + 60_000,
                dead: false,
                undeliverable: None,
            })
            .await
            .unwrap();
        assert!(
            store.lease(now, 30_000, 10, &everyone()).await.unwrap().is_empty(),
            "{backend}: not due before its retry time"
        );
        let retried = store.lease(now + 61_000, 30_000, 10, &everyone()).await.unwrap();
        assert_eq!(retried[0].id, item.id, "{backend}");
        assert_eq!(retried[0].attempts, 1);
        store.write(Write::Delivered { item_id: item.id, at: at + 61 }).await.unwrap();
        // the transfer is cancelled already, so the delivery receipt records nothing new
        assert_eq!(
            store.transfer(&t.transfer_id).await.unwrap().unwrap().state,
            State::Cancelled,
            "{backend}"
        );
        let next = store.lease(now + 61_000, 30_000, 10, &everyone()).await.unwrap();
        assert_eq!(next.len(), 1, "{backend}: now the cancellation");
        store
            .write(Write::Failed {
                item_id: next[0].id,
                at,
                error: "HTTP 500".into(),
                next_attempt_at: now,
                dead: true,
                undeliverable: None,
            })
            .await
            .unwrap();
        let dead = store.dead_letters(10).await.unwrap();
        assert_eq!(dead.len(), 1, "{backend}");
        assert_eq!(dead[0].last_error.as_deref(), Some("HTTP 500"));
        let WriteResult::Done(true) = store
            .write(Write::Replay {
                item_id: dead[0].id,
                at,
                by: "cli:test".into(),
                request_id: String::new(),
            })
            .await
            .unwrap()
        else {
            panic!("{backend}: replayed")
        };
        let replayed = store.lease(now + 62_000, 30_000, 10, &everyone()).await.unwrap();
        assert_eq!(replayed.len(), 1, "{backend}");
        let health = store.endpoint_health().await.unwrap();
        assert!(
            health.iter().any(|h| h.endpoint == "330200/12345" && h.failing_since.is_some()),
            "{backend}: {health:?}"
        );
        // A success in the second of the last one still clears the failure (the health row is
        // written only when it changes).
        store.write(Write::Delivered { item_id: replayed[0].id, at: at + 61 }).await.unwrap();
        let health = store.endpoint_health().await.unwrap();
        assert!(
            health.iter().any(|h| h.endpoint == "330200/12345"
                && h.failing_since.is_none()
                && h.last_success == Some(at + 61)),
            "{backend}: {health:?}"
        );
    }
}

/// The statuses of a transfer's deliveries, in order.
async fn statuses(store: &liandong::store::Store, transfer_id: &str) -> Vec<String> {
    let items = store.deliveries_of(transfer_id).await.unwrap();
    items.iter().map(|i| i.status.to_string()).collect()
}

/// A delivery behind an undone one of its transfer for the same destination waits `queued`
/// (the deliverer's read never sees it) and becomes pending when that one is delivered or
/// given up; a replayed dead letter waits behind what is undone like a new delivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_behind_an_undone_one_of_its_transfer_waits_queued_and_goes_next() {
    for (backend, store, _dir) in stores("queued").await {
        let engine = engine(store.clone());
        let origin = id("330200/110");
        let t = engine.submit(&origin, ningbo_request("QU-1")).await.unwrap().transfer;
        let t = t.transfer_id;
        engine.update_status(&origin, update(&t, State::Cancelled, "330200/110")).await.unwrap();
        assert_eq!(statuses(&store, &t).await, ["pending", "queued"], "{backend}");
        let now = liandong::store::now_millis();
        let at = now / 1000;
        let leased = store.lease(now, 30_000, 10, &everyone()).await.unwrap();
        assert_eq!(leased.len(), 1, "{backend}: only the transfer is due");
        let dead = Write::Failed {
            item_id: leased[0].id,
            at,
            error: "HTTP 500".into(),
            next_attempt_at: now,
            dead: true,
            undeliverable: None,
        };
        store.write(dead).await.unwrap();
        assert_eq!(
            statuses(&store, &t).await,
            ["dead", "pending"],
            "{backend}: given up, the next goes"
        );
        let replay = Write::Replay {
            item_id: leased[0].id,
            at,
            by: "cli:test".into(),
            request_id: String::new(),
        };
        assert!(matches!(store.write(replay).await.unwrap(), WriteResult::Done(true)));
        assert_eq!(
            statuses(&store, &t).await,
            ["queued", "pending"],
            "{backend}: the replayed transfer waits for the cancellation on its way"
        );
        let next = store.lease(now, 30_000, 10, &everyone()).await.unwrap();
        assert_eq!(next.len(), 1, "{backend}");
        assert_eq!(next[0].kind, liandong::store::DeliveryKind::Status, "{backend}");
        store.write(Write::Delivered { item_id: next[0].id, at }).await.unwrap();
        assert_eq!(statuses(&store, &t).await, ["pending", "delivered"], "{backend}");
        // (a replay is due from the moment it was made)
        let later = liandong::store::now_millis();
        let last = store.lease(later, 30_000, 10, &everyone()).await.unwrap();
        assert_eq!(last.iter().map(|i| i.id).collect::<Vec<_>>(), [leased[0].id], "{backend}");
    }
}

/// Runs statements on a test store's database behind its back (`stores(name)`'s).
async fn raw_sql(
    backend: &str,
    dir: &common::stores::tempdir::Dir,
    name: &str,
    statements: &[&str],
) {
    use sqlx::Connection;
    let url = match backend {
        "sqlite" => format!("sqlite://{}", dir.path().join("test.db").display()),
        _ => common::stores::schema_url(name),
    };
    let mut conn = sqlx::AnyConnection::connect(&url).await.unwrap();
    for statement in statements {
        sqlx::query(statement).execute(&mut conn).await.unwrap();
    }
    conn.close().await.unwrap();
}

/// A pull desk acknowledging a transfer has it, re-deliveries queued behind included; a
/// notice still on its way keeps what is queued behind it waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_transfer_leaves_a_notice_on_its_way_in_front_of_its_queue() {
    for (backend, store, dir) in stores("acked").await {
        let engine = engine(store.clone());
        let origin = id("330200/110");
        let t = engine.submit(&origin, ningbo_request("AK-1")).await.unwrap().transfer.transfer_id;
        let cancel = update(&t, State::Cancelled, "330200/110");
        engine.update_status(&origin, cancel).await.unwrap();
        // the transfer pending, its cancellation queued; then a re-delivery and a notice more
        // queued behind them, as a ruling and an urge would queue them
        let queue = format!(
            "INSERT INTO outbox (destination, transfer_id, kind, payload, status, next_attempt_at, created_at) \
             VALUES ('330200/12345', '{t}', 'transfer', '{{}}', 'queued', 0, 0), ('330200/12345', '{t}', 'status', '{{}}', 'queued', 0, 0)"
        );
        raw_sql(backend, &dir, "acked", &[&queue]).await;
        let acknowledge = |at| Write::Acknowledge {
            transfer_id: t.clone(),
            destination: "330200/12345".into(),
            at,
        };
        store.write(acknowledge(1)).await.unwrap();
        assert_eq!(
            statuses(&store, &t).await,
            ["delivered", "pending", "delivered", "queued"],
            "{backend}: the transfer and its re-delivery delivered, the cancellation next"
        );
        // acknowledged again while the cancellation is on its way: the notice behind it waits
        store.write(acknowledge(2)).await.unwrap();
        assert_eq!(
            statuses(&store, &t).await,
            ["delivered", "pending", "delivered", "queued"],
            "{backend}"
        );
    }
}

/// A store from before queued deliveries (no `outbox_queued` data migration), with two
/// deliveries of one transfer pending for one desk, gets the later one queued when it is next
/// opened; a transfer's only delivery stays pending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_store_gets_the_deliveries_behind_an_earlier_one_queued_when_opened() {
    for (backend, store, dir) in stores("upgrade").await {
        let engine = engine(store.clone());
        let origin = id("330200/110");
        let first = engine.submit(&origin, ningbo_request("UP-1")).await.unwrap().transfer;
        let alone = engine.submit(&origin, ningbo_request("UP-2")).await.unwrap().transfer;
        let cancel = update(&first.transfer_id, State::Cancelled, "330200/110");
        engine.update_status(&origin, cancel).await.unwrap();
        // as an earlier release left it
        let older = [
            "UPDATE outbox SET status = 'pending' WHERE status = 'queued'",
            "DROP TABLE data_migrations",
        ];
        drop((engine, store));
        raw_sql(backend, &dir, "upgrade", &older).await;
        let reopened = match backend {
            "sqlite" => liandong::store::Store::sqlite(&dir.path().join("test.db")).await.unwrap(),
            _ => {
                let url = common::stores::schema_url("upgrade");
                liandong::store::Store::postgres(&url, 2).await.unwrap()
            }
        };
        assert_eq!(
            statuses(&reopened, &first.transfer_id).await,
            ["pending", "queued"],
            "{backend}"
        );
        assert_eq!(statuses(&reopened, &alone.transfer_id).await, ["pending"], "{backend}");
    }
}

/// Two stores on one fresh PostgreSQL schema, as two replicas have: with the schema's URL.
async fn two_postgres_replicas(
    name: &str,
) -> (liandong::store::Store, liandong::store::Store, String, common::stores::tempdir::Dir) {
    let postgres = stores(name).await.into_iter().find(|(backend, ..)| *backend == "postgres");
    let (_, store, dir) = postgres.unwrap();
    let url = common::stores::schema_url(name);
    let other = liandong::store::Store::postgres(&url, 8).await.unwrap();
    (store, other, url, dir)
}

/// Two replicas, one recording deliveries of notices while the other queues the next notice
/// of the same transfer behind each at the same moment: every queued notice is promoted once
/// the one before it is done, none is left waiting behind nothing, and no transfer has two
/// pending for one desk. (Both lock the transfer first; without that, a notice was stranded.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_queued_while_the_one_before_it_finishes_on_another_replica_is_never_stranded() {
    const TRANSFERS: usize = 120;
    let (store, other, url, _dir) = two_postgres_replicas("strand").await;
    let (origin, hotline) = (id("330200/110"), id("330200/12345"));
    let here = engine(store.clone());
    let mut transfers = Vec::with_capacity(TRANSFERS);
    for n in 0..TRANSFERS {
        let submitted = here.submit(&origin, ningbo_request(&format!("ST-{n}")));
        transfers.push(submitted.await.unwrap().transfer.transfer_id);
    }
    // the transfers delivered and signed for: a notice to the origin each, taken for delivery
    let now = liandong::store::now_millis();
    for item in store.lease(now, 30_000, TRANSFERS as i64, &everyone()).await.unwrap() {
        store.write(Write::Delivered { item_id: item.id, at: now / 1000 }).await.unwrap();
    }
    for t in &transfers {
        here.update_status(&hotline, update(t, State::Received, "330200/12345")).await.unwrap();
    }
    let now = liandong::store::now_millis();
    let notices = store.lease(now, 30_000, TRANSFERS as i64, &everyone()).await.unwrap();
    assert_eq!(notices.len(), TRANSFERS);
    // The receipts' commit is held (another transaction has the origin's health row, which
    // the first success to it writes) while the acceptances are written on the other replica.
    // Had the acceptances not waited for the receipts' transfers, they would have found their
    // notices still pending and been queued after the receipts had looked for what to promote
    // (stranded: 1 or 2 each run, the first commit's, with the lock taken out; 0 with it).
    use sqlx::Connection;
    let mut holder = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut holder).await.unwrap();
    sqlx::query("INSERT INTO endpoint_health (endpoint, last_success) VALUES ('330200/110', 0)")
        .execute(&mut holder)
        .await
        .unwrap();
    let mut writes = tokio::task::JoinSet::new();
    for notice in &notices {
        let (store, write) =
            (store.clone(), Write::Delivered { item_id: notice.id, at: now / 1000 });
        writes
            .spawn(async move { store.write(write).await.map(|_| ()).map_err(|e| e.to_string()) });
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let there = engine(other);
    for transfer in &transfers {
        let (there, hotline) = (there.clone(), hotline.clone());
        let accepted = update(transfer, State::Accepted, "330200/12345");
        writes.spawn(async move {
            there.update_status(&hotline, accepted).await.map(|_| ()).map_err(|e| e.to_string())
        });
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
    while let Some(done) = writes.join_next().await {
        done.unwrap().unwrap();
    }
    let mut raw = sqlx::PgConnection::connect(&url).await.unwrap();
    let stranded = "SELECT COUNT(*) FROM outbox q WHERE q.status = 'queued' AND NOT EXISTS \
                    (SELECT 1 FROM outbox p WHERE p.transfer_id = q.transfer_id AND p.destination = q.destination AND p.status = 'pending')";
    assert_eq!(sqlx::query_scalar::<_, i64>(stranded).fetch_one(&mut raw).await.unwrap(), 0);
    let doubled = "SELECT COUNT(*) FROM (SELECT 1 FROM outbox WHERE status = 'pending' \
                   GROUP BY transfer_id, destination HAVING COUNT(*) > 1) d";
    assert_eq!(sqlx::query_scalar::<_, i64>(doubled).fetch_one(&mut raw).await.unwrap(), 0);
    let due = "SELECT COUNT(*) FROM outbox WHERE kind = 'status' AND status = 'pending'";
    assert_eq!(
        sqlx::query_scalar::<_, i64>(due).fetch_one(&mut raw).await.unwrap(),
        TRANSFERS as i64,
        "each acceptance is due once the notice before it is delivered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_receipt_marks_the_transfer_delivered() {
    for (backend, store, _dir) in stores("delivered").await {
        let engine = engine(store.clone());
        let t = engine.submit(&id("330200/110"), ningbo_request("LZ-6")).await.unwrap().transfer;
        let now = liandong::store::now_millis();
        let at = now / 1000;
        let item = store.lease(now, 30_000, 10, &everyone()).await.unwrap().remove(0);
        store.write(Write::Delivered { item_id: item.id, at }).await.unwrap();
        let t = store.transfer(&t.transfer_id).await.unwrap().unwrap();
        assert_eq!(t.state, State::Delivered, "{backend}");
        assert_eq!(t.history.last().unwrap().by, "gateway");
        assert_eq!(store.endpoint_health().await.unwrap()[0].failing_since, None);
    }
}

/// Two replicas recording the same deliveries at once (each took a receipt for them: a lease
/// that ran out while the first answer was on its way) move each item once and record each
/// delivery once: the second move finds the item gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_recording_the_same_deliveries_at_once_record_each_once() {
    const TRANSFERS: usize = 60;
    let (store, other, url, _dir) = two_postgres_replicas("twice").await;
    let backend = "postgres";
    let engine = engine(store.clone());
    for n in 0..TRANSFERS {
        engine.submit(&id("330200/110"), ningbo_request(&format!("TW-{n}"))).await.unwrap();
    }
    let now = liandong::store::now_millis();
    let items = store.lease(now, 30_000, TRANSFERS as i64, &everyone()).await.unwrap();
    assert_eq!(items.len(), TRANSFERS);
    let record = |store: liandong::store::Store, ids: Vec<i64>| {
        tokio::spawn(async move {
            let mut recorded = 0;
            for id in ids {
                let write = Write::Delivered { item_id: id, at: now / 1000 };
                if let WriteResult::Done(true) = store.write(write).await.unwrap() {
                    recorded += 1;
                }
            }
            recorded
        })
    };
    let ids: Vec<i64> = items.iter().map(|i| i.id).collect();
    let (a, b) = (record(store.clone(), ids.clone()), record(other, ids));
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    assert_eq!(a + b, TRANSFERS, "{backend}: each delivery recorded by one of them");
    use sqlx::Connection;
    let mut raw = sqlx::PgConnection::connect(&url).await.unwrap();
    let twice = "SELECT COUNT(*) FROM (SELECT transfer_id FROM audit WHERE action IN \
                 ('transfer.delivered', 'delivery.delivered') GROUP BY transfer_id HAVING COUNT(*) <> 1) d";
    assert_eq!(
        sqlx::query_scalar::<_, i64>(twice).fetch_one(&mut raw).await.unwrap(),
        0,
        "every delivery in the audit once"
    );
    let audited = "SELECT COUNT(DISTINCT transfer_id) FROM audit WHERE action IN \
                   ('transfer.delivered', 'delivery.delivered')";
    assert_eq!(
        sqlx::query_scalar::<_, i64>(audited).fetch_one(&mut raw).await.unwrap(),
        TRANSFERS as i64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missed_deadlines_are_escalated_once() {
    for (backend, store, _dir) in stores("deadline").await {
        let engine = engine(store.clone());
        let t = engine.submit(&id("330200/110"), ningbo_request("LZ-7")).await.unwrap().transfer;
        let later = t.deadlines.receive_by.plus_seconds(1);
        assert_eq!(
            engine.sweep_deadlines(t.deadlines.receive_by).await.unwrap(),
            0,
            "{backend}: not yet"
        );
        assert_eq!(engine.sweep_deadlines(later).await.unwrap(), 1, "{backend}");
        assert_eq!(engine.sweep_deadlines(later).await.unwrap(), 0, "{backend}: only once");
        let t = store.transfer(&t.transfer_id).await.unwrap().unwrap();
        assert!(t.overdue, "{backend}");
        assert_eq!(t.history.iter().filter(|h| h.state == HistoryEvent::Escalated).count(), 1);
    }
}

/// Two sweeps at once over the same overdue transfers (two replicas' sweepers, or a sweep that
/// overlaps the next): their escalations share commits, the same transfer's twice in one, and
/// each transfer is escalated once all the same, with one event and one audit entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_sweeps_escalate_each_transfer_once() {
    for (backend, store, _dir) in stores("overlap").await {
        let engine = engine(store.clone());
        let mut ids = Vec::new();
        for n in 0..300 {
            let request = ningbo_request(&format!("OVERLAP-{n}"));
            ids.push(engine.submit(&id("330200/110"), request).await.unwrap().transfer);
        }
        let later = ids[0].deadlines.receive_by.plus_seconds(60);
        let (a, b) = tokio::join!(engine.sweep_deadlines(later), engine.sweep_deadlines(later));
        assert_eq!(a.unwrap() + b.unwrap(), 300, "{backend}: each once, by one sweep or the other");
        assert_eq!(engine.sweep_deadlines(later).await.unwrap(), 0, "{backend}");
        for t in &ids {
            let t = store.transfer(&t.transfer_id).await.unwrap().unwrap();
            let escalated = t.history.iter().filter(|h| h.state == HistoryEvent::Escalated);
            assert_eq!(escalated.count(), 1, "{backend}: {}", t.transfer_id);
            assert!(t.overdue, "{backend}");
        }
        let audited = store.audit_by_action("transfer.escalated").await.unwrap();
        assert_eq!(audited.len(), 300, "{backend}");
        let verified = store.verify_audit().await.unwrap();
        assert_eq!(verified.first_problem, None, "{backend}");
    }
}

/// The clock jumps: three days forward (both deadlines pass at once), then back to the start:
/// each missed deadline is escalated exactly once, and going back undoes nothing and repeats
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_jump_escalates_each_missed_deadline_once() {
    for (backend, store, _dir) in stores("clockjump").await {
        let engine = engine(store.clone());
        let mut ids = Vec::new();
        for n in 0..5 {
            ids.push(
                engine
                    .submit(&id("330200/110"), ningbo_request(&format!("JUMP-{n}")))
                    .await
                    .unwrap()
                    .transfer,
            );
        }
        let start = ids[0].requested_at;
        let jump = start.plus_seconds(4 * 86_400);
        assert_eq!(
            engine.sweep_deadlines(jump).await.unwrap(),
            5,
            "{backend}: receive_by of all five"
        );
        // the resolve deadline (72 h) is missed too; the next pass escalates it
        assert_eq!(
            engine.sweep_deadlines(jump).await.unwrap(),
            5,
            "{backend}: resolve_by of all five"
        );
        assert_eq!(engine.sweep_deadlines(jump).await.unwrap(), 0, "{backend}: nothing twice");
        assert_eq!(
            engine.sweep_deadlines(start).await.unwrap(),
            0,
            "{backend}: back in time, nothing"
        );
        assert_eq!(
            engine.sweep_deadlines(jump.plus_seconds(86_400)).await.unwrap(),
            0,
            "{backend}: forward again, nothing"
        );
        for t in &ids {
            let t = store.transfer(&t.transfer_id).await.unwrap().unwrap();
            let escalations: Vec<&str> = t
                .history
                .iter()
                .filter(|h| h.state == HistoryEvent::Escalated)
                .filter_map(|h| h.note.as_deref())
                .collect();
            assert_eq!(escalations, ["receive_by", "resolve_by"], "{backend}: each deadline once");
            assert!(t.overdue, "{backend}");
        }
    }
}

fn everyone() -> Vec<String> {
    Registry::builtin().endpoints().map(|e| e.id.to_string()).collect()
}

/// `party`'s feed (everyone's with `None`) after `cursor`, once `done` holds of it (or after
/// 30 s): on PostgreSQL the feed stays behind any transaction still running in the server —
/// another test's, here — so that a cursor never skips one that commits later.
async fn settled_feed(
    store: &liandong::store::Store,
    party: Option<&str>,
    cursor: liandong::store::FeedCursor,
    done: impl Fn(&[liandong::store::FeedEvent]) -> bool,
) -> Vec<liandong::store::FeedEvent> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let events = store.events_after(party, cursor, 100).await.unwrap();
        if done(&events) || std::time::Instant::now() > deadline {
            return events;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_change_feed_resumes_from_a_cursor_with_nothing_missed_or_repeated() {
    use liandong::store::FeedCursor;
    for (backend, store, _dir) in stores("feed").await {
        let engine = engine(store.clone());
        let a = engine.submit(&id("330200/110"), ningbo_request("F-1")).await.unwrap().transfer;
        let all =
            settled_feed(&store, Some("330200/12345"), FeedCursor::default(), |e| !e.is_empty())
                .await;
        assert_eq!(all.len(), 1, "{backend}");
        assert!(
            store
                .events_after(Some("210000/12345"), FeedCursor::default(), 100)
                .await
                .unwrap()
                .is_empty(),
            "{backend}: a stranger sees nothing"
        );
        let cursor = FeedCursor::decode(&all[0].cursor.encode()).unwrap();
        engine
            .update_status(
                &id("330200/12345"),
                update(&a.transfer_id, State::Received, "330200/12345"),
            )
            .await
            .unwrap();
        let b = engine.submit(&id("330200/110"), ningbo_request("F-2")).await.unwrap().transfer;
        let after: Vec<(String, String)> =
            settled_feed(&store, Some("330200/12345"), cursor, |e| e.len() >= 2)
                .await
                .into_iter()
                .map(|e| (e.kind, e.transfer.transfer_id))
                .collect();
        assert_eq!(
            after,
            vec![
                ("received".to_string(), a.transfer_id.clone()),
                ("submitted".to_string(), b.transfer_id.clone())
            ],
            "{backend}"
        );
        assert!(FeedCursor::decode("nonsense").is_err());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canonical_sender_may_not_claim_another_endpoints_case() {
    for (backend, store, _dir) in stores("claims").await {
        let engine = engine(store.clone());
        let origin = id("330200/110");
        let mut request = ningbo_request("C-1");
        request.case.origin.endpoint = id("330000/110");
        let refused = engine.submit(&origin, request).await.unwrap_err();
        assert!(matches!(refused, EngineError::Forbidden(_)), "{backend}: {refused}");
        assert!(refused.to_string().contains("case.origin.endpoint"), "{refused}");
        let mut request = ningbo_request("C-2");
        request.case.case_id = "110:330000:JJ1".into();
        let refused = engine.submit(&origin, request).await.unwrap_err();
        assert!(
            matches!(refused, EngineError::Forbidden(_))
                && refused.to_string().contains("case.case_id"),
            "{refused}"
        );
        // a link to a transfer the sender is not party to
        let beijing = {
            let mut r = ningbo_request("C-3");
            r.from = id("110000/110");
            r.case.origin.endpoint = r.from.clone();
            r.case.case_id = liandong::model::Case::id_for(&r.from, &r.case.origin.local_id);
            r.to_region = None;
            r.case.location = None;
            engine.submit(&r.from.clone(), r).await.unwrap().transfer
        };
        let mut request = ningbo_request("C-4");
        request.links =
            vec![Link { rel: LinkRel::Related, transfer_id: beijing.transfer_id.clone() }];
        let refused = engine.submit(&origin, request).await.unwrap_err();
        assert!(
            matches!(refused, EngineError::Forbidden(_))
                && refused.to_string().starts_with("forbidden: links[0]"),
            "{refused}"
        );
        assert!(
            store.transfer_by_reference(&origin, "C-4").await.unwrap().is_none(),
            "{backend}: nothing stored"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_case_sent_again_after_its_rejection_links_the_rejected_transfer() {
    for (backend, store, _dir) in stores("reroute").await {
        let engine = engine(store.clone());
        let (origin, destination) = (id("330200/110"), id("330200/12345"));
        let first = engine.submit(&origin, ningbo_request("RR-1")).await.unwrap().transfer;
        assert!(first.links.is_empty());
        engine
            .update_status(
                &destination,
                update(&first.transfer_id, State::Rejected, "330200/12345"),
            )
            .await
            .unwrap();
        let again = engine.submit(&origin, ningbo_request("RR-2")).await.unwrap().transfer;
        assert_eq!(again.case.case_id, first.case.case_id);
        assert_eq!(
            again.links,
            [Link { rel: LinkRel::ReroutedFrom, transfer_id: first.transfer_id.clone() }],
            "{backend}"
        );
        let stored = store.transfer(&again.transfer_id).await.unwrap().unwrap();
        assert_eq!(stored.links, again.links, "{backend}: the link is stored");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_late_on_arrival_is_overdue_at_once_and_a_late_update_records_its_miss() {
    for (backend, store, _dir) in stores("late").await {
        let engine = engine(store.clone());
        let (origin, destination) = (id("330200/110"), id("330200/12345"));
        // sent 40 minutes ago: receive_by (30 min) has passed on arrival
        let mut request = ningbo_request("LATE-1");
        request.requested_at = Timestamp::now().plus_seconds(-40 * 60);
        let t = engine.submit(&origin, request).await.unwrap().transfer;
        assert!(t.overdue, "{backend}");
        let escalated: Vec<_> =
            t.history.iter().filter(|h| h.state == HistoryEvent::Escalated).collect();
        assert_eq!(escalated.len(), 1, "{backend}: {:?}", t.history);
        assert_eq!(escalated[0].note.as_deref(), Some("receive_by"));
        assert_eq!(
            engine.sweep_deadlines(Timestamp::now()).await.unwrap(),
            0,
            "{backend}: the sweeper does not count it again"
        );
        let heard = |e: &liandong::store::FeedEvent| {
            e.kind == "escalated" && e.transfer.transfer_id == t.transfer_id
        };
        let events =
            settled_feed(&store, None, Default::default(), |events| events.iter().any(heard)).await;
        assert!(events.iter().any(heard), "{backend}: both parties hear");

        // sent 71 h 59 min 59 s ago and resolved now, after both deadlines: both misses, once each
        let mut request = ningbo_request("LATE-2");
        request.requested_at = Timestamp::now().plus_seconds(-(72 * 3600) + 1);
        let t = engine.submit(&origin, request).await.unwrap().transfer;
        assert_eq!(
            t.history.iter().filter(|h| h.state == HistoryEvent::Escalated).count(),
            1,
            "{backend}: receive_by only"
        );
        tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
        let mut resolved = update(&t.transfer_id, State::Resolved, "330200/12345");
        resolved.resolution = Some(liandong::model::Resolution {
            result: "已办结".into(),
            resolved_at: resolved.at,
            unit: None,
        });
        let (t, _) = engine.update_status(&destination, resolved).await.unwrap();
        let misses: Vec<_> = t
            .history
            .iter()
            .filter(|h| h.state == HistoryEvent::Escalated)
            .filter_map(|h| h.note.as_deref())
            .collect();
        assert_eq!(
            misses,
            ["receive_by", "resolve_by"],
            "{backend}: received late and resolved late"
        );
        assert!(t.overdue);
    }
}

/// A transfer whose delivery is dead is rejected on the destination's behalf, its origin told
/// in the same commit; that dead letter is not replayed (the origin re-sends instead), while a
/// dead status notice still is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undeliverable_transfer_is_handed_back_to_its_origin() {
    for (backend, store, _dir) in stores("undeliverable").await {
        let engine = engine(store.clone());
        let t = engine.submit(&id("330200/110"), ningbo_request("UD-1")).await.unwrap().transfer;
        let now = liandong::store::now_millis();
        let item = store.lease(now, 30_000, 10, &everyone()).await.unwrap().remove(0);
        let note = "undeliverable: 330200/12345 could not take it (its invalid receipt); phone 0574-87000000".to_string();
        let write = Write::Failed {
            item_id: item.id,
            at: now / 1000,
            error: "HTTP 400 invalid".into(),
            next_attempt_at: now,
            dead: true,
            undeliverable: Some(note.clone()),
        };
        store.write(write).await.unwrap();
        let t = store.transfer(&t.transfer_id).await.unwrap().unwrap();
        assert_eq!(t.state, State::Rejected, "{backend}");
        let last = t.history.last().unwrap();
        assert_eq!(
            (last.by.as_str(), last.note.as_deref()),
            ("gateway", Some(note.as_str())),
            "{backend}"
        );
        assert_eq!(last.reason_code, Some(liandong::model::ReasonCode::Undeliverable));
        let told =
            store.lease(liandong::store::now_millis(), 30_000, 10, &everyone()).await.unwrap();
        assert_eq!(told.len(), 1, "{backend}: a notice to the origin");
        assert_eq!(told[0].destination.to_string(), "330200/110");
        let notice: StatusUpdate = serde_json::from_str(&told[0].payload).unwrap();
        assert_eq!(
            (notice.state, notice.transfer_ref.as_deref()),
            (State::Rejected, Some("UD-1")),
            "{backend}: by its own reference"
        );
        let WriteResult::Done(replayed) = store
            .write(Write::Replay {
                item_id: item.id,
                at: now / 1000,
                by: "cli:test".into(),
                request_id: String::new(),
            })
            .await
            .unwrap()
        else {
            panic!("done")
        };
        assert!(!replayed, "{backend}: the origin has it back; it is not sent again");
        // a dead notice is replayed as before
        let write = Write::Failed {
            item_id: told[0].id,
            at: now / 1000,
            error: "down".into(),
            next_attempt_at: now,
            dead: true,
            undeliverable: None,
        };
        store.write(write).await.unwrap();
        assert_eq!(
            store.transfer(&t.transfer_id).await.unwrap().unwrap().history.len(),
            t.history.len(),
            "{backend}"
        );
        let WriteResult::Done(replayed) = store
            .write(Write::Replay {
                item_id: told[0].id,
                at: now / 1000,
                by: "cli:test".into(),
                request_id: String::new(),
            })
            .await
            .unwrap()
        else {
            panic!("done")
        };
        assert!(replayed, "{backend}");
    }
}

/// The search a console makes — by either desk's reference, by the caller's phone — reads the
/// same on both stores, and a reference's `%` or `_` is a character, not a wildcard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_are_found_by_reference_and_phone_on_both_stores() {
    use liandong::store::TransferFilter;
    for (backend, store, _dir) in stores("search").await {
        let engine = engine(store.clone());
        let origin = id("330200/110");
        let submitted = engine.submit(&origin, ningbo_request("LZ_50%")).await.unwrap().transfer;
        engine.submit(&origin, ningbo_request("LZX50Y")).await.unwrap();
        let find = |reference: Option<&str>, phone: Option<&str>| {
            let filter = TransferFilter {
                limit: 100,
                reference: reference.map(String::from),
                phone: phone.map(String::from),
                ..TransferFilter::default()
            };
            let store = store.clone();
            async move {
                store
                    .transfers(&filter)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|t| t.transfer_id)
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(
            find(Some("LZ_50%"), None).await,
            vec![submitted.transfer_id.clone()],
            "{backend}"
        );
        let case_number = submitted.case.origin.local_id.clone();
        assert_eq!(
            find(Some(&case_number), None).await.len(),
            2,
            "{backend}: both carry the sample's case number"
        );
        assert!(find(Some("LZ%"), None).await.is_empty(), "{backend}: no wildcard");
        assert_eq!(find(None, Some("+8613900000001")).await.len(), 2, "{backend}");
        assert!(find(None, Some("+8613900000002")).await.is_empty(), "{backend}");
    }
}

/// The figures come from facts kept with every write, on both stores: each figure equals a
/// count made here from the transfers the same caller lists, for an operator, a party and a
/// stranger, with region filters; and a store made before the facts existed gets them, from
/// its transfers, when it is next opened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn figures_follow_every_write_and_an_older_store_gets_its_facts() {
    use liandong::model::{Feedback, Resolution, Satisfaction};
    use liandong::security::Identity;
    use liandong::stats::{compute, StatsQuery};
    for (backend, store, dir) in stores("figures").await {
        let engine = engine(store.clone());
        let origin = id("330200/110");
        let mut ids = Vec::new();
        for n in 1..=5 {
            let submitted = engine.submit(&origin, ningbo_request(&format!("LZ-F{n}"))).await;
            ids.push(submitted.unwrap().transfer.transfer_id);
        }
        let hotline = id("330200/12345");
        let apply = |u: StatusUpdate, by: EndpointId| {
            let engine = engine.clone();
            async move { engine.update_status(&by, u).await.unwrap() }
        };
        apply(update(&ids[0], State::Received, "330200/12345"), hotline.clone()).await;
        apply(update(&ids[1], State::Received, "330200/12345"), hotline.clone()).await;
        let mut resolved = update(&ids[1], State::Resolved, "330200/12345");
        resolved.resolution = Some(Resolution {
            result: "已联系车主挪车".into(),
            resolved_at: Timestamp::now(),
            unit: None,
        });
        apply(resolved, hotline.clone()).await;
        let mut closed = update(&ids[1], State::Closed, "330200/110");
        closed.feedback = Some(Feedback {
            satisfaction: Satisfaction::Satisfied,
            visited_at: Timestamp::now(),
            note: None,
        });
        apply(closed, origin.clone()).await;
        apply(update(&ids[2], State::Rejected, "330200/12345"), hotline.clone()).await;
        // accepted at once: received is implied
        apply(update(&ids[3], State::Accepted, "330200/12345"), hotline.clone()).await;

        let operator = Identity::Operator("ops".into());
        let everything = StatsQuery::new(None, None, None, None, None).unwrap();
        let figures = compute(&engine, &operator, &everything).await.unwrap();
        // counted here, from the list
        let filter = liandong::store::TransferFilter { limit: 500, ..Default::default() };
        let (listed, _) = engine.transfers_for(&operator, filter).await.unwrap();
        let reached = |t: &liandong::model::Transfer, s: State| {
            t.history.iter().any(|h| h.state == HistoryEvent::State(s))
        };
        let count = |f: &dyn Fn(&liandong::model::Transfer) -> bool| {
            listed.iter().filter(|t| f(t)).count() as u64
        };
        assert_eq!(
            (
                figures.transfers,
                figures.received.count,
                figures.resolved.count,
                figures.called_back.count,
                figures.satisfied.count,
                figures.rejected.count
            ),
            (
                count(&|_| true),
                count(&|t| reached(t, State::Received)),
                count(&|t| reached(t, State::Resolved)),
                count(&|t| t.feedback.is_some()),
                count(&|t| t.feedback.is_some()),
                count(&|t| t.state == State::Rejected)
            ),
            "{backend}"
        );
        assert_eq!((figures.transfers, figures.received.count), (5, 3), "{backend}");
        assert_eq!(figures.time_to_receive.count, 3, "{backend}");
        assert_eq!(figures.by_direction.get("110->12345"), Some(&5), "{backend}");

        // The read policy and the region filter.
        let party = Identity::Endpoint(hotline.clone());
        assert_eq!(compute(&engine, &party, &everything).await.unwrap().transfers, 5, "{backend}");
        let stranger = Identity::Endpoint(id("110000/110"));
        assert_eq!(
            compute(&engine, &stranger, &everything).await.unwrap().transfers,
            0,
            "{backend}"
        );
        let region = |r: &str| StatsQuery::new(Some(r.into()), None, None, None, None).unwrap();
        let township = compute(&engine, &operator, &region("330203101")).await.unwrap();
        assert_eq!(township.transfers, 5, "{backend}: the case location's township");
        let elsewhere = compute(&engine, &operator, &region("3301")).await.unwrap();
        assert_eq!(elsewhere.transfers, 0, "{backend}: Hangzhou has none");

        // In memory (as a running gateway has them): the same figures, and a write committed
        // just before an answer is counted in it.
        let stop = common::stores::facts_in_memory(&engine, &store).await;
        let in_memory = compute(&engine, &operator, &everything).await.unwrap();
        assert_eq!(in_memory, figures, "{backend}: memory and database agree");
        for (who, query) in [
            (&party, &everything),
            (&stranger, &everything),
            (&operator, &region("330203101")),
            (&operator, &region("3301")),
        ] {
            let from_memory = compute(&engine, who, query).await.unwrap();
            assert_eq!(
                from_memory.transfers,
                if matches!(who, Identity::Endpoint(e) if e.region.as_str() == "110000")
                    || query.region.as_deref() == Some("3301")
                {
                    0
                } else {
                    5
                },
                "{backend}"
            );
        }
        apply(update(&ids[4], State::Received, "330200/12345"), hotline.clone()).await;
        let after = compute(&engine, &operator, &everything).await.unwrap();
        assert_eq!(after.received.count, figures.received.count + 1, "{backend}");
        let sixth = engine.submit(&origin, ningbo_request("LZ-F6")).await.unwrap();
        assert!(sixth.created);
        // (A query's period ends when it is made: ask anew for one that includes the sixth.)
        let everything = StatsQuery::new(None, None, None, None, None).unwrap();
        assert_eq!(
            compute(&engine, &operator, &everything).await.unwrap().transfers,
            6,
            "{backend}"
        );
        stop.send(true).unwrap();

        // A store from before the facts: the table gone, opened again, filled from transfers.
        let reopened = match backend {
            "sqlite" => {
                use sqlx::Connection;
                let path = dir.path().join("test.db");
                let mut conn =
                    sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
                        .await
                        .unwrap();
                sqlx::query("DROP TABLE transfer_facts").execute(&mut conn).await.unwrap();
                conn.close().await.unwrap();
                liandong::store::Store::sqlite(&path).await.unwrap()
            }
            _ => {
                use sqlx::Connection;
                let url = common::stores::schema_url("figures");
                let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
                sqlx::query("DROP TABLE transfer_facts").execute(&mut conn).await.unwrap();
                conn.close().await.unwrap();
                liandong::store::Store::postgres(&url, 2).await.unwrap()
            }
        };
        let again =
            compute(&common::stores::engine(reopened), &operator, &everything).await.unwrap();
        assert_eq!(again.transfers, 6, "{backend}");
        assert_eq!(again.received.count, after.received.count, "{backend}");
        assert_eq!(again.resolved.count, figures.resolved.count, "{backend}");
        assert_eq!(again.satisfied.count, figures.satisfied.count, "{backend}");
        assert_eq!(again.rejected.count, figures.rejected.count, "{backend}");
    }
}

/// The figures' facts in memory are bounded (`[figures] memory_limit`): past the limit they
/// are let go and the database answers, the same figures; a store already past it at start is
/// never loaded; a limit of 0 never loads them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn figures_past_the_memory_limit_are_let_go_and_the_database_answers() {
    use liandong::security::Identity;
    use liandong::stats::{compute, StatsQuery};
    let operator = Identity::Operator("ops".into());
    let transfers = |engine: liandong::engine::Engine| {
        let operator = operator.clone();
        async move {
            let everything = StatsQuery::new(None, None, None, None, None).unwrap();
            compute(&engine, &operator, &everything).await.unwrap().transfers
        }
    };
    for (backend, store, _dir) in stores("figures_limit").await {
        let engine = common::stores::engine_with(store.clone(), "[figures]\nmemory_limit = 3");
        let origin = id("330200/110");
        for n in 1..=2 {
            engine.submit(&origin, ningbo_request(&format!("LZ-M{n}"))).await.unwrap();
        }
        let stop = common::stores::facts_in_memory(&engine, &store).await;
        assert_eq!(transfers(engine.clone()).await, 2, "{backend}");
        for n in 3..=4 {
            engine.submit(&origin, ningbo_request(&format!("LZ-M{n}"))).await.unwrap();
        }
        assert_eq!(transfers(engine.clone()).await, 4, "{backend}: counted by the database");
        assert!(!engine.facts_loaded().await, "{backend}: four facts are over the limit of three");
        stop.send(true).unwrap();

        // Started again over four transfers: not loaded at all, and the figures still answer.
        for more in ["[figures]\nmemory_limit = 3", "[figures]\nmemory_limit = 0"] {
            let again = common::stores::engine_with(store.clone(), more);
            let (stop, stopped) = tokio::sync::watch::channel(false);
            let following = tokio::spawn(again.follow_facts(store.clone(), stopped));
            tokio::time::timeout(std::time::Duration::from_secs(10), following)
                .await
                .expect("following ends at once when the facts are over the limit")
                .unwrap();
            assert!(!again.facts_loaded().await, "{backend}: {more}");
            assert_eq!(transfers(again.clone()).await, 4, "{backend}: {more}");
            drop(stop);
        }
    }
}

/// A figure counts every write committed before it was asked, even while another transaction
/// in the same PostgreSQL server runs: the facts read beyond the horizon for an answer (the
/// horizon keeps the feed's cursor from skipping a transaction that commits later).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn figures_count_a_write_while_another_transaction_is_still_running() {
    use liandong::security::Identity;
    use liandong::stats::{compute, StatsQuery};
    for (backend, store, _dir) in stores("figures_horizon").await {
        let engine = engine(store.clone());
        let stop = common::stores::facts_in_memory(&engine, &store).await;
        let operator = Identity::Operator("ops".into());
        let everything = || StatsQuery::new(None, None, None, None, None).unwrap();
        // Another session's transaction, begun before the write and open through the answer.
        let open = match backend {
            "postgres" => {
                use sqlx::Connection;
                let mut conn =
                    sqlx::PgConnection::connect(&common::stores::postgres_url()).await.unwrap();
                sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
                sqlx::query("SELECT txid_current()").execute(&mut conn).await.unwrap();
                Some(conn)
            }
            _ => None,
        };
        let origin = id("330200/110");
        let first = engine.submit(&origin, ningbo_request("LZ-H1")).await.unwrap().transfer;
        assert_eq!(
            compute(&engine, &operator, &everything()).await.unwrap().transfers,
            1,
            "{backend}"
        );
        engine
            .update_status(
                &id("330200/12345"),
                update(&first.transfer_id, State::Received, "330200/12345"),
            )
            .await
            .unwrap();
        engine.submit(&origin, ningbo_request("LZ-H2")).await.unwrap();
        let query = everything();
        let figures = compute(&engine, &operator, &query).await.unwrap();
        assert_eq!((figures.transfers, figures.received.count), (2, 1), "{backend}");
        drop(open);
        // Once it ends, the same figures: what was applied early is applied again, unchanged.
        let settled = compute(&engine, &operator, &query).await.unwrap();
        assert_eq!(settled, figures, "{backend}");
        stop.send(true).unwrap();
    }
}

/// Where PostgreSQL's autovacuum is off, a table created empty keeps an empty table's plans for
/// ever (the hour on two replicas stopped delivering at a million transfers): the gateway then
/// vacuums and analyzes its own tables, one replica at a time, each when autovacuum would have
/// (`store::upkeep::Changes::due`), so a table that has not changed is left alone. SQLite needs
/// none of it.
#[tokio::test]
async fn the_gateway_vacuums_and_analyzes_its_tables_that_are_due_where_postgres_autovacuum_is_off()
{
    use liandong::store::upkeep::{self, Part};
    use sqlx::Connection;
    // 60 transfers: more changed rows than autovacuum's rule lets a young table go unanalyzed
    const SUBMITTED: i64 = 60;
    for (backend, store, _dir) in stores("upkeep").await {
        let engine = engine(store.clone());
        for n in 1..=SUBMITTED {
            engine.submit(&id("330200/110"), ningbo_request(&format!("LZ-U{n}"))).await.unwrap();
        }
        if backend == "sqlite" {
            assert!(!store.autovacuum_off().await.unwrap());
            for part in [Part::Tables, Part::Queue] {
                assert!(store.upkeep(part).await.unwrap().is_none(), "SQLite has no upkeep to run");
            }
            continue;
        }
        let url = common::stores::schema_url("upkeep");
        let mut other = sqlx::PgConnection::connect(&url).await.unwrap();
        let (autovacuum, track_counts): (String, String) =
            sqlx::query_as("SELECT current_setting('autovacuum'), current_setting('track_counts')")
                .fetch_one(&mut other)
                .await
                .unwrap();
        assert_eq!(
            store.autovacuum_off().await.unwrap(),
            autovacuum != "on" || track_counts != "on",
            "autovacuum {autovacuum}, track_counts {track_counts}"
        );
        // The server counts a connection's changes when it sends them, up to 10 s after its
        // transaction: wait until the writer's are counted, so what is due is known.
        let waited = std::time::Instant::now();
        loop {
            let counted: i64 = sqlx::query_scalar(
                "SELECT n_mod_since_analyze FROM pg_stat_user_tables \
                 WHERE schemaname = current_schema() AND relname = 'case_transfers'",
            )
            .fetch_one(&mut other)
            .await
            .unwrap();
            if counted >= SUBMITTED {
                break;
            }
            assert!(
                waited.elapsed() < std::time::Duration::from_secs(30),
                "the writer's changes never counted"
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        // another replica at the tables: this one leaves them, and still keeps up the queue
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(upkeep::LOCK)
            .execute(&mut other)
            .await
            .unwrap();
        assert!(
            store.upkeep(Part::Tables).await.unwrap().is_none(),
            "skipped while another replica holds the upkeep"
        );
        let queue = store.upkeep(Part::Queue).await.unwrap().expect("the queue's upkeep ran");
        assert_eq!(queue.iter().map(|(table, _)| *table).collect::<Vec<_>>(), ["outbox"]);
        assert!(queue[0].1.analyze, "the outbox analyzed: {queue:?}");
        sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(upkeep::LOCK)
            .execute(&mut other)
            .await
            .unwrap();
        let done = store.upkeep(Part::Tables).await.unwrap().expect("the upkeep ran");
        let analyzed: Vec<&str> =
            done.iter().filter(|(_, due)| due.analyze).map(|(table, _)| *table).collect();
        for table in ["transfers", "case_transfers"] {
            assert!(analyzed.contains(&table), "{table} not analyzed: {done:?}");
        }
        assert!(!done.iter().any(|(table, _)| *table == "timers"), "timers is empty: {done:?}");
        assert!(!done.iter().any(|(table, _)| *table == "outbox"), "the queue apart: {done:?}");
        // ANALYZE leaves the planner an exact count of a small table's rows (-1 for a table
        // never vacuumed nor analyzed)
        for table in ["outbox", "transfers", "case_transfers"] {
            let (planned, rows): (f32, i64) = sqlx::query_as(&format!(
                "SELECT c.reltuples, (SELECT COUNT(*) FROM {table}) FROM pg_class c \
                 WHERE c.oid = '{table}'::regclass"
            ))
            .fetch_one(&mut other)
            .await
            .unwrap();
            assert_eq!((planned, rows), (SUBMITTED as f32, SUBMITTED), "{table}");
        }
        // nothing has changed since: nothing is due
        assert_eq!(store.upkeep(Part::Tables).await.unwrap(), Some(vec![]));
        assert_eq!(store.upkeep(Part::Queue).await.unwrap(), Some(vec![]));
        // a backlog: the outbox analyzed at every upkeep while it lasts, changed or not
        sqlx::query(&format!(
            "INSERT INTO outbox (destination, transfer_id, kind, payload, next_attempt_at, created_at) \
             SELECT '330200/12345', 'wait-' || g, 'transfer', '{{}}', 0, 0 FROM generate_series(1, {}) g",
            upkeep::QUEUE_WAITING + 1 - SUBMITTED
        ))
        .execute(&mut other)
        .await
        .unwrap();
        for _ in 0..2 {
            let queue = store.upkeep(Part::Queue).await.unwrap().expect("the queue's upkeep ran");
            assert!(queue.iter().any(|(t, due)| *t == "outbox" && due.analyze), "{queue:?}");
        }
    }
}
