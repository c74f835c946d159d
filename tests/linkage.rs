//! Linkage beyond a transfer (`linkage.md`) over a real store, on SQLite and PostgreSQL:
//! disputes and the linkage office, urges, extensions, prior handling, assists, the routing
//! basis, and the defaults firing on time. The desks' documents are written here from
//! `formats.md` (gd-json for Ningbo's 12345, jjd-json for its 110) and what the gateway sends
//! them is read the same way, field by field, so that the gateway's own renderer is not what
//! checks itself.

use liandong::engine::{Engine, EngineError};
use liandong::formats::Registry;
use liandong::model::linkage::Action;
use liandong::model::{
    CategoryCode, DisputeOutcome, DisputeState, EndpointId, HistoryEvent, PriorHandling,
    ReasonCode, RoutingBasis, State, StatusUpdate, Timestamp, Transfer,
};
use liandong::security::Identity;
use liandong::store::{DeliveryKind, Store};
use serde_json::{json, Value};

use crate::common;
use common::stores::{engine, ningbo_request, stores};

const POLICE: &str = "330200/110";
const HOTLINE: &str = "330200/12345";

fn id(s: &str) -> EndpointId {
    s.parse().unwrap()
}

fn desk(endpoint: &str) -> Identity {
    Identity::Endpoint(id(endpoint))
}

fn office(name: &str) -> Identity {
    Identity::Office(name.to_string())
}

/// gd-json's time layout (`formats.md`): `yyyy/MM/dd HH:mm:ss`, Beijing time.
fn gd_time(at: Timestamp) -> String {
    at.format_beijing("yyyy/MM/dd HH:mm:ss")
}

/// A label's time (`linkage.md`): Beijing `yyyy-MM-dd HH:mm`.
fn label_time(at: Timestamp) -> String {
    at.format_beijing("yyyy-MM-dd HH:mm")
}

/// Ningbo's 12345 reports a status natively: a gd-json status document (`formats.md`), read
/// by the endpoint's own reader, applied by the engine as the native route does.
async fn hotline_says(
    engine: &Engine,
    transfer_id: &str,
    gdzt: &str,
    sm: Option<&str>,
) -> Result<Transfer, EngineError> {
    let mut doc = json!({"lzbh": transfer_id, "gdzt": gdzt, "czsj": gd_time(Timestamp::now())});
    if let Some(sm) = sm {
        doc["sm"] = json!(sm);
    }
    let registry = Registry::builtin();
    let update =
        registry.endpoint_named(HOTLINE).unwrap().read_status(doc.to_string().as_bytes()).map_err(
            |e| EngineError::Invalid(liandong::model::ModelError::new("document", e.to_string())),
        )?;
    engine.update_status(&id(HOTLINE), update).await.map(|(t, _)| t)
}

/// A lock-out (NP05) from Ningbo's 110, received by its 12345 and rejected as out of scope —
/// natively, with the label in front of the note.
async fn rejected_lockout(engine: &Engine, sender_ref: &str) -> Transfer {
    let mut request = ningbo_request(sender_ref);
    request.case.category = "NP05".parse::<CategoryCode>().unwrap();
    request.case.source_category = None;
    let t = engine.submit(&id(POLICE), request).await.unwrap().transfer;
    hotline_says(engine, &t.transfer_id, "签收", None).await.unwrap();
    let t = hotline_says(
        engine,
        &t.transfer_id,
        "退回",
        Some("【非职责范围】开锁涉及人身安全，属公安职责"),
    )
    .await
    .unwrap();
    let last = t.history.last().unwrap();
    assert_eq!(last.reason_code, Some(ReasonCode::OutOfScope), "the label read into reason_code");
    assert_eq!(last.note.as_deref(), Some("开锁涉及人身安全，属公安职责"), "and stripped");
    t
}

/// The native documents queued for `destination` about a transfer, in order, each as JSON
/// (both Ningbo formats are JSON), with its kind.
async fn sent_to(
    engine: &Engine,
    store: &Store,
    transfer_id: &str,
    destination: &str,
) -> Vec<(DeliveryKind, Value)> {
    let mut out = Vec::new();
    for item in store.deliveries_of(transfer_id).await.unwrap() {
        if item.destination.to_string() != destination {
            continue;
        }
        let bytes = engine.render_delivery(&item).unwrap();
        out.push((item.kind, serde_json::from_slice(&bytes).unwrap()));
    }
    out
}

/// The last native document queued for `destination` about a transfer.
async fn last_sent(engine: &Engine, store: &Store, transfer_id: &str, destination: &str) -> Value {
    sent_to(engine, store, transfer_id, destination).await.pop().unwrap().1
}

/// A status update by `by` on a transfer named by its id.
fn status(transfer_id: &str, state: State, by: &str, note: Option<&str>) -> StatusUpdate {
    StatusUpdate {
        transfer_id: Some(transfer_id.to_string()),
        transfer_ref: None,
        state,
        at: Timestamp::now(),
        by: id(by),
        unit: None,
        note: note.map(str::to_string),
        resolution: None,
        feedback: None,
        reason_code: None,
    }
}

fn refused(result: Result<Transfer, EngineError>, what: &str) -> String {
    match result {
        Err(EngineError::Refused(r)) => r.to_string(),
        Err(EngineError::Forbidden(f)) => format!("forbidden: {f}"),
        other => panic!("{what}: expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispute_overruled_by_the_office_goes_back_to_the_destination() {
    for (backend, store, _dir) in stores("dispute_overruled").await {
        let engine = engine(store.clone());
        let t = rejected_lockout(&engine, "LZ-D1").await;
        let tid = t.transfer_id.as_str();
        let now = Timestamp::now();
        let opened = engine
            .act(
                &desk(POLICE),
                tid,
                Action::OpenDispute { note: "被困者无危险，属开锁服务".into() },
                now,
            )
            .await
            .unwrap();
        let dispute = opened.dispute.as_ref().unwrap();
        assert_eq!((dispute.state, dispute.by.as_str()), (DisputeState::Open, POLICE), "{backend}");
        assert_eq!(opened.state, State::Rejected, "{backend}: a dispute is not a state");
        assert_eq!(opened.history.last().unwrap().state, HistoryEvent::DisputeOpened);
        // Consultation: both parties and the office, one with the three-way call's recording.
        let note = |n: &str, c: Option<&str>| Action::NoteDispute {
            note: n.into(),
            call_ref: c.map(str::to_string),
        };
        engine
            .act(&desk(HOTLINE), tid, note("三方通话已进行", Some("REC-20230508-0042")), now)
            .await
            .unwrap();
        let noted =
            engine.act(&office("nb"), tid, note("联动办已听取双方意见", None), now).await.unwrap();
        let notes = &noted.dispute.as_ref().unwrap().notes;
        assert_eq!(notes.len(), 2, "{backend}");
        assert_eq!(notes[0].call_ref.as_deref(), Some("REC-20230508-0042"));
        assert_eq!(notes[1].by, "liandong://office/nb");
        // Who may decide: not the origin; not an office of another region; not an agency;
        // the destination only by withdrawing.
        let decide = |o: DisputeOutcome| Action::DecideDispute {
            outcome: o,
            note: Some("经会商，开锁服务属12345职责".into()),
        };
        let r = refused(
            engine.act(&desk(POLICE), tid, decide(DisputeOutcome::Upheld), now).await,
            "origin",
        );
        assert!(r.contains("linkage office"), "{backend}: {r}");
        let r = refused(
            engine.act(&office("sh"), tid, decide(DisputeOutcome::Upheld), now).await,
            "sh",
        );
        assert!(r.contains("forbidden") && r.contains("31"), "{backend}: {r}");
        let r = refused(
            engine
                .act(&Identity::Agency("nb-fire".into()), tid, decide(DisputeOutcome::Upheld), now)
                .await,
            "agency",
        );
        assert!(r.contains("forbidden"), "{backend}: {r}");
        let r = refused(
            engine.act(&desk(HOTLINE), tid, decide(DisputeOutcome::Upheld), now).await,
            "dest",
        );
        assert!(r.contains("overruled"), "{backend}: {r}");
        assert_eq!(
            store.transfer(tid).await.unwrap().unwrap().dispute,
            noted.dispute,
            "{backend}: refusals change nothing"
        );
        let decided_at = Timestamp::now();
        let t = engine
            .act(&office("nb"), tid, decide(DisputeOutcome::Overruled), decided_at)
            .await
            .unwrap();
        assert_eq!(t.state, State::Delivered, "{backend}: the one transition out of rejected");
        assert_eq!(t.routing_basis, Some(RoutingBasis::Negotiated));
        assert_eq!(
            t.dispute.as_ref().unwrap().decision.as_ref().unwrap().outcome,
            DisputeOutcome::Overruled
        );
        assert_eq!(
            t.deadlines.receive_by,
            decided_at.plus_seconds(300),
            "{backend}: fresh deadlines from the decision (the endpoint's 5 min)"
        );
        assert!(!t.overdue);
        // The destination receives it again in gd-json, the ruling at the end of 转办说明.
        let sent = sent_to(&engine, &store, tid, HOTLINE).await;
        let (kind, again) = sent.last().unwrap();
        assert_eq!(*kind, DeliveryKind::Transfer, "{backend}");
        let zbsm = again["zbsm"].as_str().unwrap();
        assert!(zbsm.ends_with("【会商裁定】经会商，开锁服务属12345职责"), "{backend}: {zbsm}");
        assert_eq!(again["lzbh"], json!(tid));
        // Its deadlines run anew: the first round's 签收 does not meet the new receive_by.
        let late = decided_at.plus_seconds(301);
        assert!(engine.sweep_deadlines(late).await.unwrap() >= 1, "{backend}");
        let t = store.transfer(tid).await.unwrap().unwrap();
        assert!(t.overdue, "{backend}: the new receive_by was missed");
        let again = engine.act(&office("nb"), tid, decide(DisputeOutcome::Upheld), now).await;
        assert!(refused(again, "decided").contains("no open dispute"), "{backend}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upheld_first_receiver_and_the_dispute_default() {
    for (backend, store, _dir) in stores("dispute_outcomes").await {
        let engine = engine(store.clone());
        let now = Timestamp::now();
        let open = || Action::OpenDispute { note: "请会商".into() };
        // Upheld: the rejection stands; both desks are told; the origin's re-route is negotiated.
        let t = rejected_lockout(&engine, "LZ-U1").await;
        engine.act(&desk(POLICE), &t.transfer_id, open(), now).await.unwrap();
        let upheld = Action::DecideDispute {
            outcome: DisputeOutcome::Upheld,
            note: Some("属公安职责".into()),
        };
        let after = engine.act(&office("nb"), &t.transfer_id, upheld, now).await.unwrap();
        assert_eq!(after.state, State::Rejected, "{backend}");
        let to_police = sent_to(&engine, &store, &t.transfer_id, POLICE).await;
        let (_, notice) = to_police.last().unwrap();
        assert_eq!(notice["LZBH"], json!("LZ-U1"), "{backend}: the 110 knows it by its own LZBH");
        assert_eq!(notice["ZT"], json!("30"), "{backend}: with the current state, rejected");
        assert_eq!(notice["SM"], json!("【会商结果】维持退回：属公安职责"), "{backend}");
        let to_hotline = sent_to(&engine, &store, &t.transfer_id, HOTLINE).await;
        assert_eq!(to_hotline.last().unwrap().1["sm"], json!("【会商结果】维持退回：属公安职责"));
        let mut reroute = ningbo_request("LZ-U1-B");
        reroute.case = after.case.clone();
        let rerouted = engine.submit(&id(POLICE), reroute).await.unwrap().transfer;
        assert_eq!(rerouted.routing_basis, Some(RoutingBasis::Negotiated), "{backend}");
        assert!(rerouted.links.iter().any(|l| l.transfer_id == t.transfer_id), "{backend}");

        // Only out_of_scope, only within dispute_within, once.
        let duplicate = engine.submit(&id(POLICE), ningbo_request("LZ-U2")).await.unwrap().transfer;
        hotline_says(&engine, &duplicate.transfer_id, "退回", Some("【重复】已另案受理"))
            .await
            .unwrap();
        let r =
            refused(engine.act(&desk(POLICE), &duplicate.transfer_id, open(), now).await, "dup");
        assert!(r.contains("out_of_scope"), "{backend}: {r}");
        let t = rejected_lockout(&engine, "LZ-U3").await;
        let too_late = now.plus_seconds(24 * 3600 + 120);
        let r = refused(engine.act(&desk(POLICE), &t.transfer_id, open(), too_late).await, "late");
        assert!(r.contains("dispute_within"), "{backend}: {r}");
        engine.act(&desk(POLICE), &t.transfer_id, open(), now).await.unwrap();
        // the same dispute sent again is a repeat (nothing doubled); another is refused
        let again = engine.act(&desk(POLICE), &t.transfer_id, open(), now).await.unwrap();
        let opened =
            again.history.iter().filter(|h| h.state == HistoryEvent::DisputeOpened).count();
        assert_eq!(opened, 1, "{backend}");
        let other = Action::OpenDispute { note: "再议".into() };
        let r = refused(engine.act(&desk(POLICE), &t.transfer_id, other, now).await, "twice");
        assert!(r.contains("one dispute"), "{backend}: {r}");
        // The destination withdraws its rejection: overruled, decided by the destination.
        let withdraw = Action::DecideDispute { outcome: DisputeOutcome::Overruled, note: None };
        let back = engine.act(&desk(HOTLINE), &t.transfer_id, withdraw, now).await.unwrap();
        assert_eq!(back.state, State::Delivered, "{backend}");
        let sent = sent_to(&engine, &store, &t.transfer_id, HOTLINE).await;
        assert!(
            sent.last().unwrap().1["zbsm"].as_str().unwrap().ends_with("【会商裁定】"),
            "{backend}: the label alone"
        );

        // Left undecided: at dispute_within the gateway decides first_receiver and escalates.
        let t = rejected_lockout(&engine, "LZ-U4").await;
        engine.act(&desk(POLICE), &t.transfer_id, open(), now).await.unwrap();
        engine.sweep_deadlines(now.plus_seconds(3600)).await.unwrap();
        let still = store.transfer(&t.transfer_id).await.unwrap().unwrap();
        assert_eq!(
            still.dispute.as_ref().unwrap().state,
            DisputeState::Open,
            "{backend}: not before its time"
        );
        engine.sweep_deadlines(now.plus_seconds(24 * 3600 + 5)).await.unwrap();
        let decided = store.transfer(&t.transfer_id).await.unwrap().unwrap();
        let decision = decided.dispute.as_ref().unwrap().decision.clone().unwrap();
        assert_eq!(
            (decision.outcome, decision.by.as_str()),
            (DisputeOutcome::FirstReceiver, "gateway"),
            "{backend}"
        );
        assert_eq!(decided.routing_basis, Some(RoutingBasis::FirstReceiver));
        assert!(decided.overdue, "{backend}: escalated to the office");
        assert!(decided
            .history
            .iter()
            .any(|h| h.state == HistoryEvent::Escalated && h.note.as_deref() == Some("dispute")));
        let notice = &last_sent(&engine, &store, &t.transfer_id, POLICE).await;
        assert!(
            notice["SM"].as_str().unwrap().starts_with("【会商结果】首接办理"),
            "{backend}: {notice}"
        );
        assert_eq!(
            engine.sweep_deadlines(now.plus_seconds(48 * 3600)).await.unwrap(),
            0,
            "{backend}: once"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urges_and_extensions() {
    for (backend, store, _dir) in stores("urges").await {
        let engine = engine(store.clone());
        let t = engine.submit(&id(POLICE), ningbo_request("LZ-E1")).await.unwrap().transfer;
        let tid = t.transfer_id.as_str();
        // Before it is received, an urge reaches the desk through the feed only (no native code).
        let now = Timestamp::now();
        let urge = |n: &str| Action::Urge { note: n.into() };
        engine.act(&desk(POLICE), tid, urge("请尽快签收"), now).await.unwrap();
        assert!(
            sent_to(&engine, &store, tid, HOTLINE)
                .await
                .iter()
                .all(|(k, _)| *k == DeliveryKind::Transfer),
            "{backend}"
        );
        hotline_says(&engine, tid, "受理", None).await.unwrap();
        let r = refused(
            engine.act(&desk(POLICE), tid, urge("再催"), now.plus_seconds(1800)).await,
            "interval",
        );
        assert!(r.contains("urge_interval"), "{backend}: {r}");
        let r = refused(
            engine.act(&desk(HOTLINE), tid, urge("x"), now.plus_seconds(3600)).await,
            "dest",
        );
        assert!(r.contains("origin or the linkage office"), "{backend}: {r}");
        let t = engine
            .act(&office("nb"), tid, urge("联动办督促办理"), now.plus_seconds(3600))
            .await
            .unwrap();
        assert_eq!(t.urges, 2, "{backend}");
        let notice = &last_sent(&engine, &store, tid, HOTLINE).await;
        assert_eq!(
            (notice["gdzt"].as_str(), notice["sm"].as_str()),
            (Some("受理"), Some("【催办】联动办督促办理")),
            "{backend}"
        );

        // An extension asked natively: 办理中 with 【延期申请】reason至time (no state change).
        let resolve_by = t.deadlines.resolve_by.unwrap();
        let until = resolve_by.plus_seconds(2 * 86_400);
        let ask = format!("【延期申请】需协调物业维修 至{}", label_time(until));
        let t = hotline_says(&engine, tid, "办理中", Some(&ask)).await.unwrap();
        assert_eq!(t.state, State::Accepted, "{backend}: not a state");
        let asked = t.history.last().unwrap();
        assert_eq!(asked.state, HistoryEvent::ExtensionRequested);
        assert_eq!(asked.note.as_deref(), Some("需协调物业维修"));
        let until_minute =
            Timestamp::parse_beijing(&label_time(until), "yyyy-MM-dd HH:mm").unwrap();
        assert_eq!(asked.until, Some(until_minute), "{backend}: read to the minute");
        let notice = &last_sent(&engine, &store, tid, POLICE).await;
        assert_eq!(notice["ZT"], json!("20"), "{backend}: the current state, accepted");
        assert_eq!(
            notice["SM"],
            json!(format!("【延期申请】需协调物业维修至{}", label_time(until)))
        );
        // malformed: starts with the label but no 至 and a time — refused naming the note.
        let bad = hotline_says(&engine, tid, "办理中", Some("【延期申请】需协调物业维修")).await;
        let Err(EngineError::Invalid(e)) = bad else { panic!("{backend}: {bad:?}") };
        assert!(e.to_string().contains("sm"), "{backend}: names the native field: {e}");
        // one request at a time; only the origin or the office answers.
        let again = Action::RequestExtension { until, reason: "再申请".into() };
        assert!(refused(engine.act(&desk(HOTLINE), tid, again, now).await, "pending")
            .contains("awaits"));
        let grant = Action::DecideExtension { grant: true, note: None };
        refused(engine.act(&desk(HOTLINE), tid, grant.clone(), now).await, "dest grants");
        let t = engine.act(&desk(POLICE), tid, grant, now).await.unwrap();
        assert_eq!(t.deadlines.resolve_by, Some(until_minute), "{backend}: resolve_by moved");
        let notice = &last_sent(&engine, &store, tid, HOTLINE).await;
        assert_eq!(notice["sm"], json!(format!("【延期批准】{}", label_time(until))), "{backend}");
        // A refusal, canonically.
        let later = until_minute.plus_seconds(86_400);
        let ask = Action::RequestExtension { until: later, reason: "仍需协调".into() };
        engine.act(&desk(HOTLINE), tid, ask, now).await.unwrap();
        let refuse = Action::DecideExtension { grant: false, note: Some("请按期办结".into()) };
        let t = engine.act(&office("nb"), tid, refuse, now).await.unwrap();
        assert_eq!(t.history.last().unwrap().state, HistoryEvent::ExtensionRefused);
        assert_eq!(t.deadlines.resolve_by, Some(until_minute), "{backend}: unchanged");
        let notice = &last_sent(&engine, &store, tid, HOTLINE).await;
        assert_eq!(notice["sm"], json!("【延期驳回】请按期办结"), "{backend}");
        // Undecided when resolve_by passes: refused by the gateway, with the escalation.
        let ask = Action::RequestExtension { until: later, reason: "第三次".into() };
        engine.act(&desk(HOTLINE), tid, ask, now).await.unwrap();
        engine.sweep_deadlines(until_minute.plus_seconds(1)).await.unwrap();
        let t = store.transfer(tid).await.unwrap().unwrap();
        let lapsed =
            t.history.iter().rev().find(|h| h.state == HistoryEvent::ExtensionRefused).unwrap();
        assert_eq!(lapsed.by, "gateway", "{backend}");
        assert!(t.overdue, "{backend}: resolve_by missed");
        let r = refused(
            engine
                .act(
                    &desk(HOTLINE),
                    tid,
                    Action::RequestExtension { until: later, reason: "迟".into() },
                    until_minute.plus_seconds(2),
                )
                .await,
            "after",
        );
        assert!(r.contains("before resolve_by"), "{backend}: {r}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handling_first_and_help_on_site() {
    for (backend, store, _dir) in stores("assists").await {
        let engine = engine(store.clone());
        let registry = Registry::builtin();
        // A wage dispute 110 handled first: routing basis safety_first, the prior handling
        // rendered into 12345's 转办说明.
        let mut request = ningbo_request("LZ-W1");
        request.case.category = "NP03".parse::<CategoryCode>().unwrap();
        request.case.source_category = None;
        request.prior_handling = Some(PriorHandling {
            by_unit: None,
            at: Some(Timestamp::now()),
            actions: "民警到场稳定情绪，现场无冲突".into(),
            safe: Some(true),
        });
        let parent = engine.submit(&id(POLICE), request).await.unwrap().transfer;
        assert_eq!(parent.routing_basis, Some(RoutingBasis::SafetyFirst), "{backend}");
        let doc = &sent_to(&engine, &store, &parent.transfer_id, HOTLINE).await[0].1;
        assert!(
            doc["zbsm"].as_str().unwrap().ends_with("【先期处置】民警到场稳定情绪，现场无冲突"),
            "{backend}: {doc}"
        );
        hotline_says(&engine, &parent.transfer_id, "受理", None).await.unwrap();
        // A plain NP07 is on the list (catalogue); the catch-all NP99 is on none.
        let plain = engine.submit(&id(POLICE), ningbo_request("LZ-W2")).await.unwrap().transfer;
        assert_eq!(plain.routing_basis, Some(RoutingBasis::Catalogue), "{backend}");
        let mut other = ningbo_request("LZ-W3");
        other.case.category = "NP99".parse::<CategoryCode>().unwrap();
        other.case.source_category = None;
        assert_eq!(
            engine.submit(&id(POLICE), other).await.unwrap().transfer.routing_basis,
            None,
            "{backend}"
        );

        // 12345's enforcement team asks 110 for police presence: a PM10 gd-json document
        // naming the wage dispute by the id it received (【关联单号】) and the time (【需到场时间】).
        let needed_by = Timestamp::now().plus_seconds(1800);
        let assist_doc = |lzbh: &str, zbsm: String, sqlx: &str| {
            json!({
                "lzbh": lzbh, "zbsj": gd_time(Timestamp::now()), "zbsm": zbsm, "mbpt": "110",
                "gd": {"gdbh": format!("GD-{lzbh}"), "ldsj": gd_time(Timestamp::now()), "sqlx": sqlx,
                       "sqnr": "执法队现场处置欠薪纠纷，需民警到场维持秩序", "qhdm": "330203", "jjcd": "紧急"}
            })
            .to_string()
        };
        let read =
            |doc: String| registry.endpoint_named(HOTLINE).unwrap().read_transfer(doc.as_bytes());
        let zbsm = format!(
            "需民警到场【需到场时间】{}【关联单号】{}",
            label_time(needed_by),
            parent.transfer_id
        );
        let request = read(assist_doc("GD-A1", zbsm.clone(), "2010")).unwrap();
        let assist = engine.submit(&id(HOTLINE), request).await.unwrap().transfer;
        assert_eq!(assist.to.to_string(), POLICE, "{backend}");
        assert_eq!(assist.case.category.as_str(), "PM10");
        assert_eq!(
            assist.links[0].transfer_id, parent.transfer_id,
            "{backend}: resolved to the id"
        );
        assert!(assist.needed_by.is_some());
        // 110 gets it in jjd-json: JQLB 990100, and the wage dispute by its own LZBH.
        let doc = &sent_to(&engine, &store, &assist.transfer_id, POLICE).await[0].1;
        assert_eq!(doc["JQXX"]["JQLB"], json!("990100"), "{backend}");
        let zjyy = doc["ZJYY"].as_str().unwrap();
        assert!(
            zjyy.contains(&format!("【需到场时间】{}", label_time(needed_by))),
            "{backend}: {zjyy}"
        );
        assert!(zjyy.ends_with("【关联单号】LZ-W1"), "{backend}: {zjyy}");
        // Refused: no needed_by (naming 转办说明's labels' field), a reference to nothing,
        // an assist_for on an ordinary category.
        let e = read(assist_doc(
            "GD-A2",
            format!("需民警到场【需到场时间】【关联单号】{}", parent.transfer_id),
            "2010",
        ))
        .unwrap_err();
        assert!(e.to_string().contains("zbsm"), "{backend}: {e}");
        let e = read(assist_doc(
            "GD-A3",
            format!("需民警到场【关联单号】{}", parent.transfer_id),
            "2010",
        ))
        .unwrap_err();
        assert!(e.to_string().contains("needed_by"), "{backend}: {e}");
        let nothing = read(assist_doc(
            "GD-A4",
            format!("x【需到场时间】{}【关联单号】NO-SUCH", label_time(needed_by)),
            "2010",
        ))
        .unwrap();
        assert!(engine.submit(&id(HOTLINE), nothing).await.is_err(), "{backend}");
        let e = read(assist_doc("GD-A5", zbsm.clone(), "2001")).unwrap_err();
        assert!(e.to_string().contains("needed_by"), "{backend}: {e}");
        // A second assist, whose help never arrives; the first one's officers do.
        let zbsm_b = format!(
            "需民警到场【需到场时间】{}【关联单号】{}",
            label_time(needed_by),
            parent.transfer_id
        );
        let second = engine
            .submit(&id(HOTLINE), read(assist_doc("GD-A7", zbsm_b, "2010")).unwrap())
            .await
            .unwrap()
            .transfer;
        let update =
            status(&assist.transfer_id, State::InProgress, POLICE, Some("海曙分局民警已到场"));
        engine.update_status(&id(POLICE), update).await.unwrap();
        // needed_by missed: escalated like receive_by — the one whose help is not on the scene.
        engine.sweep_deadlines(needed_by.plus_seconds(60)).await.unwrap();
        let missed = |t: &Transfer| {
            t.history.iter().any(|h| {
                h.state == HistoryEvent::Escalated && h.note.as_deref() == Some("needed_by")
            })
        };
        assert!(missed(&store.transfer(&second.transfer_id).await.unwrap().unwrap()), "{backend}");
        assert!(
            !missed(&store.transfer(&assist.transfer_id).await.unwrap().unwrap()),
            "{backend}: on the scene in time"
        );
        // The wage dispute is withdrawn: its assists go with it, and both of their desks hear.
        let cancel = status(&parent.transfer_id, State::Cancelled, POLICE, Some("当事人已和解"));
        engine.update_status(&id(POLICE), cancel).await.unwrap();
        for a in [&assist, &second] {
            let gone = store.transfer(&a.transfer_id).await.unwrap().unwrap();
            assert_eq!(gone.state, State::Cancelled, "{backend}: cancelled with its parent");
            assert_eq!(gone.history.last().unwrap().by, "gateway");
        }
        let to_police = sent_to(&engine, &store, &assist.transfer_id, POLICE).await;
        assert_eq!(to_police.last().unwrap().1["ZT"], json!("90"), "{backend}");
        let to_hotline = sent_to(&engine, &store, &assist.transfer_id, HOTLINE).await;
        assert_eq!(to_hotline.last().unwrap().1["gdzt"], json!("撤回"), "{backend}");
        // An assist for a closed-off transfer is refused.
        let late = read(assist_doc("GD-A6", zbsm, "2010")).unwrap();
        let e = engine.submit(&id(HOTLINE), late).await.unwrap_err();
        assert!(e.to_string().contains("open"), "{backend}: {e}");

        // The other way: 12345 hands 110 a brawl (canonically); 110, handling it, asks 12345
        // for a department on the scene — an NP11 jjd-json document (formats.md: JQLB 079800)
        // naming the brawl by the id it received; 12345 gets it in gd-json naming the brawl by
        // its own reference.
        let mut brawl = ningbo_request("GD-BRAWL-1");
        let hotline_id = id(HOTLINE);
        brawl.from = hotline_id.clone();
        brawl.to_platform = liandong::model::Platform::Police;
        brawl.case.origin.endpoint = hotline_id.clone();
        brawl.case.origin.unit = None;
        brawl.case.case_id = liandong::model::Case::id_for(&hotline_id, "GD-BRAWL-1");
        brawl.case.category = "PM04".parse::<CategoryCode>().unwrap();
        brawl.case.source_category = None;
        brawl.to_region = None;
        let brawl = engine.submit(&hotline_id, brawl).await.unwrap().transfer;
        assert_eq!(brawl.to.to_string(), POLICE, "{backend}");
        let jjd_time = |t: Timestamp| t.format_beijing("yyyy-MM-dd HH:mm:ss");
        let np11 = json!({
            "LZBH": "LZ-NP11-1", "ZJSJ": jjd_time(now_plus(0)), "MBPT": "12345",
            "ZJYY": format!("现场有商户纠纷需市场监管到场【需到场时间】{}【关联单号】{}", label_time(needed_by), brawl.transfer_id),
            "JQXX": {"JJDBH": "JJ-NP11-1", "BJSJ": jjd_time(now_plus(0)), "JQLB": "079800",
                     "BJNR": "饭店门口纠纷，民警处置中，需市场监管部门到场", "XZQH": "330203", "JQDJ": "2"}
        });
        let request = registry
            .endpoint_named(POLICE)
            .unwrap()
            .read_transfer(np11.to_string().as_bytes())
            .unwrap();
        assert_eq!(request.case.category.as_str(), "NP11", "{backend}");
        let dept = engine.submit(&id(POLICE), request).await.unwrap().transfer;
        assert_eq!(
            (dept.to.to_string().as_str(), dept.links[0].transfer_id.as_str()),
            (HOTLINE, brawl.transfer_id.as_str())
        );
        let doc = &sent_to(&engine, &store, &dept.transfer_id, HOTLINE).await[0].1;
        assert_eq!(doc["gd"]["sqlx"], json!("1011"), "{backend}: NP11 in gd-json");
        assert!(
            doc["zbsm"].as_str().unwrap().ends_with("【关联单号】GD-BRAWL-1"),
            "{backend}: {doc}"
        );
    }
}

fn now_plus(seconds: i64) -> Timestamp {
    Timestamp::now().plus_seconds(seconds)
}

/// One endpoint of each format, a transfer sample of it, and the native code of the assist
/// category it sends (`linkage.md`'s table).
const FORMATS: &[(&str, &str, &str)] = &[
    ("330200/110", "jjd-json/transfer-ningbo-township.canonical.json", "079800"),
    ("210000/110", "jqxx-xml/transfer-liaoning.canonical.json", "FJW11"),
    ("110000/110", "incident-json/transfer-beijing.canonical.json", "NONPOLICE.ASSIST"),
    ("330200/12345", "gd-json/transfer-ningbo.canonical.json", "2010"),
    ("210000/12345", "workorder-xml/transfer-liaoning.canonical.json", "J10"),
    ("110000/12345", "ticket-json/transfer-beijing.canonical.json", "JQ-10"),
];

#[test]
fn labels_round_trip_through_every_format() {
    let registry = Registry::builtin();
    for (endpoint_id, sample, assist_code) in FORMATS {
        let endpoint = registry.endpoint_named(endpoint_id).unwrap();
        let mut request: liandong::model::TransferRequest =
            serde_json::from_slice(&common::net::sample(sample)).unwrap();
        let assist =
            if endpoint.id.platform == liandong::model::Platform::Police { "NP11" } else { "PM10" };
        request.case.category = assist.parse::<CategoryCode>().unwrap();
        request.case.source_category = None;
        let needed_by = Timestamp::parse_rfc3339("2023-05-08T10:30:00+08:00", false).unwrap();
        request.needed_by = Some(needed_by);
        request.links = vec![liandong::model::Link {
            rel: liandong::model::LinkRel::AssistFor,
            transfer_id: "LZ-REF-9".into(),
        }];
        request.prior_handling = Some(PriorHandling {
            by_unit: None,
            at: None,
            actions: "民警到场处置".into(),
            safe: None,
        });
        request.ruling = Some("经会商属本平台".into());
        // A status this endpoint sends about a transfer it knows by a reference.
        let native_status = |state: State, note: &str| StatusUpdate {
            transfer_ref: Some("01J0000000000000000000000".into()),
            transfer_id: None,
            at: needed_by,
            by: endpoint.id.clone(),
            ..status("", state, endpoint_id, Some(note))
        };
        let bytes = endpoint.write_transfer(&request).unwrap();
        let text = endpoint.format.encoding.decode(&bytes).unwrap();
        // What linkage.md says the native document holds, read as text.
        let reason = request.reason.clone().unwrap_or_default();
        let expected = format!(
            "{reason}【先期处置】民警到场处置【需到场时间】2023-05-08 10:30【关联单号】LZ-REF-9【会商裁定】经会商属本平台"
        );
        assert!(text.contains(&expected), "{endpoint_id}: {text}");
        assert!(
            text.contains(assist_code),
            "{endpoint_id}: the assist's native code {assist_code}"
        );
        // Read back: the parts as fields, the ruling dropped.
        let back = endpoint.read_transfer(&bytes).unwrap();
        assert_eq!(back.reason, request.reason, "{endpoint_id}");
        assert_eq!(back.prior_handling.as_ref().map(|p| p.actions.as_str()), Some("民警到场处置"));
        assert_eq!(back.needed_by, Some(needed_by), "{endpoint_id}");
        assert_eq!(back.links, request.links, "{endpoint_id}");
        assert_eq!(back.ruling, None, "{endpoint_id}: the ruling is for people");
        assert_eq!(back.case.category.as_str(), assist, "{endpoint_id}");

        // Rejection notes: each reason code's label, in front, read back into reason_code.
        for code in ReasonCode::ALL {
            let note = if code == ReasonCode::Undeliverable {
                "undeliverable: 对方系统拒收"
            } else {
                "请核实"
            };
            let update =
                StatusUpdate { reason_code: Some(code), ..native_status(State::Rejected, note) };
            let bytes = endpoint.write_status(&update).unwrap();
            let text = endpoint.format.encoding.decode(&bytes).unwrap();
            let label = ReasonCode::LABELS.iter().find(|(c, _)| *c == code).map(|(_, l)| *l);
            if let Some(label) = label {
                assert!(text.contains(label), "{endpoint_id} {code}: {text}");
            }
            let back = endpoint.read_status(&bytes).unwrap();
            assert_eq!(
                (back.reason_code, back.note.as_deref()),
                (Some(code), Some(note)),
                "{endpoint_id}"
            );
        }
        // An extension asked natively, and the notices' notes, travel in the note unchanged.
        for note in [
            "【延期申请】需协调物业维修至2023-05-12 18:00",
            "【催办】请尽快办理",
            "【延期批准】2023-05-12 18:00",
        ] {
            let update = native_status(State::InProgress, note);
            let back = endpoint.read_status(&endpoint.write_status(&update).unwrap()).unwrap();
            assert_eq!(back.note.as_deref(), Some(note), "{endpoint_id}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_office_decides_over_https_and_a_desk_urges_over_grpc() {
    use common::net::{grpc_channel, start_on_free_port, Client, Site};
    use liandong::proto::v1;
    use v1::transfer_service_client::TransferServiceClient;
    let site = Site::new("linkage-https");
    let (addr, _admin, _stop) = start_on_free_port(&site).await;
    let police = Client::for_endpoint(&site, POLICE, addr);
    let hotline = Client::for_endpoint(&site, HOTLINE, addr);
    let answer = police
        .post(
            "/v1/native/330200/110/transfers",
            common::net::sample("jjd-json/transfer-ningbo-township.json"),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let listed = hotline.get("/v1/transfers?limit=1").await.json();
    let tid = listed["transfers"][0]["transfer_id"].as_str().unwrap().to_string();
    let status = |gdzt: &str, sm: &str| {
        json!({"lzbh": tid, "gdzt": gdzt, "czsj": gd_time(Timestamp::now()), "sm": sm})
            .to_string()
            .into_bytes()
    };
    let answer = hotline.post("/v1/native/330200/12345/status", status("签收", "已签收")).await;
    assert_eq!(answer.json()["code"], json!("200"), "{}", answer.text());
    // A native extension request that is malformed: gd-json's own error receipt, naming sm.
    let answer = hotline
        .post("/v1/native/330200/12345/status", status("办理中", "【延期申请】需协调"))
        .await;
    assert_eq!(answer.json()["code"], json!("400"), "{}", answer.text());
    assert!(answer.text().contains("sm"), "{}", answer.text());
    let answer = hotline
        .post("/v1/native/330200/12345/status", status("退回", "【非职责范围】请转公安"))
        .await;
    assert_eq!(answer.json()["code"], json!("200"), "{}", answer.text());
    // The origin disputes canonically; an agency may not decide; the office (init's) does.
    let answer =
        police.post(&format!("/v1/transfers/{tid}/dispute"), br#"{"note": "  "}"#.to_vec()).await;
    assert_eq!(answer.status, 400, "{}", answer.text());
    assert!(answer.text().contains("note"), "{}", answer.text());
    let (dispute, opening) =
        (format!("/v1/transfers/{tid}/dispute"), r#"{"note": "挪车属12345"}"#.as_bytes());
    let answer = police.post(&dispute, opening.to_vec()).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["dispute"]["state"], json!("open"));
    // Sent again (a retry after a lost answer): the same answer, nothing doubled.
    let again = police.post(&dispute, opening.to_vec()).await;
    assert_eq!(again.status, 200, "{}", again.text());
    let opened = again.json()["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["state"] == "dispute_opened")
        .count();
    assert_eq!(opened, 1, "{}", again.text());
    // The office's work list, over gRPC: the open dispute; a bad filter named.
    let identities = site.dir.join("identities");
    let office_channel = common::net::grpc_channel_as(
        &site,
        &identities.join("office-demo.pem"),
        &identities.join("office-demo-key.pem"),
        addr.port(),
    )
    .await;
    let mut office_grpc = TransferServiceClient::new(office_channel);
    let pending = office_grpc
        .list_transfers(v1::ListTransfersRequest {
            pending: "dispute".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let listed: Vec<&str> = pending.transfers.iter().map(|t| t.transfer_id.as_str()).collect();
    assert_eq!(listed, vec![tid.as_str()], "the open dispute, and nothing else");
    let bad = office_grpc
        .list_transfers(v1::ListTransfersRequest {
            pending: "everything".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(bad.message().contains("pending"), "{}", bad.message());
    let decision = r#"{"outcome": "overruled", "note": "经会商属12345"}"#.as_bytes().to_vec();
    let agency = Client::for_identity(&site, "agency-demo", addr);
    let answer =
        agency.post(&format!("/v1/transfers/{tid}/dispute/decision"), decision.clone()).await;
    assert_eq!(answer.status, 403, "{}", answer.text());
    let office = Client::for_identity(&site, "office-demo", addr);
    let answer = office
        .post(&format!("/v1/transfers/{tid}/dispute/decision"), br#"{"outcome": "maybe"}"#.to_vec())
        .await;
    assert_eq!(answer.status, 400, "{}", answer.text());
    assert!(answer.text().contains("outcome"), "{}", answer.text());
    let answer = office.post(&format!("/v1/transfers/{tid}/dispute/decision"), decision).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let t = answer.json();
    assert_eq!(
        (t["state"].as_str(), t["routing_basis"].as_str()),
        (Some("delivered"), Some("negotiated"))
    );
    assert_eq!(t["dispute"]["decision"]["by"], json!("liandong://office/demo"));
    let whoami = office.get("/v1/whoami").await.json();
    assert_eq!(whoami["kind"], json!("office"), "{whoami}");
    // Over gRPC: the 12345 accepts, the 110 urges; a second urge at once is refused.
    hotline.post("/v1/native/330200/12345/status", status("受理", "已受理")).await;
    let mut grpc = TransferServiceClient::new(grpc_channel(&site, POLICE, addr.port()).await);
    let urged = grpc
        .urge(v1::UrgeRequest { transfer_id: tid.clone(), note: "请尽快办理".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(urged.urges, 1);
    assert_eq!(urged.history.last().unwrap().event, "urged");
    let again = grpc.urge(v1::UrgeRequest { transfer_id: tid.clone(), note: "再催".into() }).await;
    assert_eq!(again.unwrap_err().code(), tonic::Code::FailedPrecondition);
}

/// The figures count what linkage did (`linkage.md`, "The figures these feed"), on both stores,
/// from the database and from memory alike, each equal to a count made here from the listed
/// transfers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_figures_count_what_linkage_did() {
    use liandong::stats::{compute, StatsQuery};
    for (backend, store, _dir) in stores("linkage_figures").await {
        let engine = engine(store.clone());
        let now = Timestamp::now();
        // urged twice, an extension granted and another refused
        let t1 = engine.submit(&id(POLICE), ningbo_request("LZ-F1")).await.unwrap().transfer;
        hotline_says(&engine, &t1.transfer_id, "受理", None).await.unwrap();
        for at in [now, now.plus_seconds(3600)] {
            engine
                .act(&desk(POLICE), &t1.transfer_id, Action::Urge { note: "催".into() }, at)
                .await
                .unwrap();
        }
        let until = t1.deadlines.resolve_by.unwrap().plus_seconds(86_400);
        for grant in [true, false] {
            let ask = Action::RequestExtension {
                until: until.plus_seconds(if grant { 0 } else { 86_400 }),
                reason: "协调".into(),
            };
            engine.act(&desk(HOTLINE), &t1.transfer_id, ask, now).await.unwrap();
            engine
                .act(
                    &desk(POLICE),
                    &t1.transfer_id,
                    Action::DecideExtension { grant, note: None },
                    now,
                )
                .await
                .unwrap();
        }
        // a dispute overruled, another left to the default
        let open = || Action::OpenDispute { note: "请会商".into() };
        let t2 = rejected_lockout(&engine, "LZ-F2").await;
        engine.act(&desk(POLICE), &t2.transfer_id, open(), now).await.unwrap();
        let overrule = Action::DecideDispute { outcome: DisputeOutcome::Overruled, note: None };
        engine.act(&office("nb"), &t2.transfer_id, overrule, now).await.unwrap();
        let t3 = rejected_lockout(&engine, "LZ-F3").await;
        engine.act(&desk(POLICE), &t3.transfer_id, open(), now).await.unwrap();
        // a catch-all, rejected as a duplicate
        let mut other = ningbo_request("LZ-F4");
        other.case.category = "NP99".parse::<CategoryCode>().unwrap();
        other.case.source_category = None;
        let t4 = engine.submit(&id(POLICE), other).await.unwrap().transfer;
        hotline_says(&engine, &t4.transfer_id, "退回", Some("【重复】已有工单")).await.unwrap();
        // handled first, with two assists: one on the scene in time, one only committed
        let mut wage = ningbo_request("LZ-F5");
        wage.case.category = "NP03".parse::<CategoryCode>().unwrap();
        wage.case.source_category = None;
        wage.prior_handling =
            Some(PriorHandling {
                by_unit: None, at: None, actions: "民警到场".into(), safe: None
            });
        let t5 = engine.submit(&id(POLICE), wage).await.unwrap().transfer;
        let registry = Registry::builtin();
        let mut assists = Vec::new();
        for n in 0..2 {
            let doc = json!({
                "lzbh": format!("GD-F{n}"), "zbsj": gd_time(now), "mbpt": "110",
                "zbsm": format!("需民警到场【需到场时间】{}【关联单号】{}", label_time(now.plus_seconds(1800)), t5.transfer_id),
                "gd": {"gdbh": format!("GD-F{n}"), "ldsj": gd_time(now), "sqlx": "2010", "sqnr": "需民警到场", "qhdm": "330203"}
            });
            let request = registry
                .endpoint_named(HOTLINE)
                .unwrap()
                .read_transfer(doc.to_string().as_bytes())
                .unwrap();
            assists.push(engine.submit(&id(HOTLINE), request).await.unwrap().transfer);
        }
        for (n, state) in [State::InProgress, State::Accepted].into_iter().enumerate() {
            let update = status(&assists[n].transfer_id, state, POLICE, None);
            engine.update_status(&id(POLICE), update).await.unwrap();
        }
        // the default decides the open dispute (in the future: a query's period is asked so)
        engine.sweep_deadlines(now.plus_seconds(24 * 3600 + 5)).await.unwrap();

        let operator = Identity::Operator("ops".into());
        let everything =
            StatsQuery::new(None, None, None, None, Some(now.unix_seconds() + 86_400 * 3)).unwrap();
        let from_database = compute(&engine, &operator, &everything).await.unwrap();
        let l = &from_database.linkage;
        // counted here, from the list
        let filter = liandong::store::TransferFilter { limit: 500, ..Default::default() };
        let (listed, _) = engine.transfers_for(&operator, filter).await.unwrap();
        for basis in ["catalogue", "negotiated", "first_receiver", "safety_first"] {
            let here = listed
                .iter()
                .filter(|t| t.routing_basis.map(|b| b.as_str()) == Some(basis))
                .count() as u64;
            assert_eq!(l.routing_basis[basis], here, "{backend}: {basis}");
        }
        assert_eq!(
            l.routing_basis["none"],
            listed.iter().filter(|t| t.routing_basis.is_none()).count() as u64
        );
        assert_eq!(l.routing_basis["none"], 1, "{backend}: the catch-all");
        assert_eq!(l.routing_basis["safety_first"], 1, "{backend}");
        assert_eq!(
            (l.rejections_by_reason["out_of_scope"], l.rejections_by_reason["duplicate"]),
            (2, 1),
            "{backend}"
        );
        let d = &l.disputes;
        assert_eq!(
            (d.opened, d.open, d.overruled, d.first_receiver, d.upheld, d.decided_late),
            (2, 0, 1, 1, 0, 1),
            "{backend}"
        );
        assert_eq!((l.urges.total, l.urges.urged.count), (2, 1), "{backend}");
        assert_eq!(
            (l.extensions.asked, l.extensions.granted, l.extensions.refused),
            (2, 1, 1),
            "{backend}"
        );
        let a = &l.assists;
        assert_eq!((a.asked, a.committed.count, a.on_scene_in_time.count), (2, 2, 1), "{backend}");
        let urges_listed: u32 = listed.iter().map(|t| t.urges).sum();
        assert_eq!(l.urges.total, u64::from(urges_listed), "{backend}");

        // In memory, the same.
        let stop = common::stores::facts_in_memory(&engine, &store).await;
        let from_memory = compute(&engine, &operator, &everything).await.unwrap();
        assert_eq!(
            from_memory.linkage, from_database.linkage,
            "{backend}: memory and database agree"
        );
        stop.send(true).unwrap();
    }
}

/// Two replicas sweeping at once fire each linkage default once: a second gateway on the same
/// store (a second process's store on SQLite's file, a second pool on PostgreSQL's schema) and
/// this one sweep together; the dispute is decided once, escalated once, its desks told once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_fire_a_default_once() {
    for (backend, store, dir) in stores("replica_timers").await {
        let other = match backend {
            "sqlite" => Store::sqlite(&dir.path().join("test.db")).await.unwrap(),
            _ => Store::postgres(&common::stores::schema_url("replica_timers"), 4).await.unwrap(),
        };
        let (one, two) = (engine(store.clone()), engine(other));
        let now = Timestamp::now();
        let mut disputed = Vec::new();
        for n in 0..5 {
            let t = rejected_lockout(&one, &format!("LZ-R{n}")).await;
            one.act(
                &desk(POLICE),
                &t.transfer_id,
                Action::OpenDispute { note: "请会商".into() },
                now,
            )
            .await
            .unwrap();
            disputed.push(t.transfer_id);
        }
        let later = now.plus_seconds(24 * 3600 + 5);
        let (a, b) = tokio::join!(one.sweep_deadlines(later), two.sweep_deadlines(later));
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(a + b, 5, "{backend}: each default fired once between them ({a} + {b})");
        for id in &disputed {
            let t = store.transfer(id).await.unwrap().unwrap();
            let decided =
                t.history.iter().filter(|h| h.state == HistoryEvent::DisputeDecided).count();
            let escalated = t
                .history
                .iter()
                .filter(|h| {
                    h.state == HistoryEvent::Escalated && h.note.as_deref() == Some("dispute")
                })
                .count();
            assert_eq!((decided, escalated), (1, 1), "{backend}: {id}");
            let outcomes = sent_to(&one, &store, id, POLICE)
                .await
                .into_iter()
                .filter(|(_, doc)| {
                    doc["SM"].as_str().is_some_and(|s| s.starts_with("【会商结果】"))
                })
                .count();
            assert_eq!(outcomes, 1, "{backend}: the 110 told once");
        }
    }
}
