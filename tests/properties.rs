//! Property tests over every endpoint: canonical → native → canonical keeps everything the
//! native format can carry; translating between formats keeps the content; coordinate
//! transforms invert; and no bytes, however wrong, make a parser panic.

use liandong::formats::{Endpoint, Registry};
use liandong::model::geo::{self, CoordSystem};
use liandong::model::{
    category, Attachment, AttachmentKind, Caller, Case, CategoryCode, EndpointId, Feedback,
    Location, Origin, Point, ReasonCode, Region, Resolution, Satisfaction, SourceCategory, State,
    StatusUpdate, Timestamp, TransferRequest, Unit, Urgency,
};
use liandong::proto::v1;
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::Value;

use crate::common;
use common::canonical_diff;

fn registry() -> &'static Registry {
    static REGISTRY: std::sync::OnceLock<Registry> = std::sync::OnceLock::new();
    REGISTRY.get_or_init(Registry::builtin)
}

fn endpoints() -> Vec<Endpoint> {
    registry().endpoints().cloned().collect()
}

/// Text that survives trimming, with the characters that test escaping and encodings:
/// XML specials, quotes, GBK-only characters, a character outside GBK, a newline inside.
fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 &<>'\"·喆堃䶮中文李女士报警€\n]{0,16}".prop_map(|s| format!("T{s}Z"))
}

fn reference() -> impl Strategy<Value = String> {
    "[A-Z0-9][A-Z0-9-]{0,24}"
}

fn time() -> impl Strategy<Value = Timestamp> {
    (946_684_800i64..1_924_992_000).prop_map(|s| Timestamp::from_unix_seconds(s).unwrap())
}

fn region() -> impl Strategy<Value = String> {
    prop_oneof!["[1-6][0-9]{5}", "[1-6][0-9]{8}"]
}

fn phone() -> impl Strategy<Value = String> {
    prop_oneof![
        "1[3-9][0-9]{9}",
        "0[2-9][0-9]{8,10}",
        "010[0-9]{8}",
        select(vec!["110", "12345", "95598"]).prop_map(str::to_string)
    ]
    .prop_map(|p| liandong::model::phone::normalize(&p).unwrap())
}

fn unit() -> impl Strategy<Value = Option<Unit>> {
    (proptest::option::of(reference()), proptest::option::of(text()))
        .prop_map(|(code, name)| (code.is_some() || name.is_some()).then_some(Unit { code, name }))
}

fn point() -> impl Strategy<Value = Point> {
    prop_oneof![(73.0f64..135.0, 4.0f64..53.0), (-179.0f64..179.0, -89.0f64..89.0)]
        .prop_map(|(lon, lat)| Point::new(lon, lat).unwrap())
}

fn location() -> impl Strategy<Value = Option<Location>> {
    (proptest::option::of(text()), proptest::option::of(region()), proptest::option::of(point()))
        .prop_map(|(address, region, point)| {
            (address.is_some() || region.is_some() || point.is_some()).then(|| Location {
                address,
                region: region.map(|r| r.parse().unwrap()),
                point,
            })
        })
}

fn attachment() -> impl Strategy<Value = Attachment> {
    (
        select(vec![
            AttachmentKind::Audio,
            AttachmentKind::Image,
            AttachmentKind::Video,
            AttachmentKind::Document,
        ]),
        "https://[a-z]{1,8}\\.example/[a-z0-9]{1,10}\\?a=1&b=2",
        proptest::option::of("[0-9a-f]{64}"),
    )
        .prop_map(|(kind, uri, sha256)| Attachment { kind, uri, sha256 })
}

/// A transfer request as `endpoint` would send it, with any row of its code table as the
/// source category.
fn transfer_from(endpoint: Endpoint) -> impl Strategy<Value = TransferRequest> {
    let rows: Vec<(String, String, String)> = endpoint
        .codes
        .rows
        .iter()
        .map(|r| (r.canonical.clone(), r.code.clone(), r.name.clone()))
        .collect();
    (
        (
            reference(),
            proptest::option::of(region()),
            proptest::option::of(text()),
            time(),
            reference(),
            unit(),
            time(),
        ),
        (
            proptest::option::of((
                proptest::option::of(text()),
                proptest::option::of(phone()),
                any::<bool>(),
            )),
            location(),
            select(rows),
            text(),
            proptest::option::of(select(vec![
                Urgency::Immediate,
                Urgency::Urgent,
                Urgency::Normal,
            ])),
            proptest::collection::vec(attachment(), 0..3),
        ),
        (proptest::option::of(text()), time()),
    )
        .prop_map(
            move |(
                (sender_ref, to_region, reason, requested_at, local_id, origin_unit, received_at),
                (caller, location, (canonical, code, name), summary, urgency, attachments),
                (prior, needed_by),
            )| {
                // linkage.md: an assist carries its time (to the minute: labels drop seconds) and
                // the reference of the transfer it helps with; any transfer may carry prior
                // handling. Natively all three are labelled parts of the reason.
                let assist = liandong::model::category::is_assist(&canonical);
                let minute = |t: Timestamp| {
                    Timestamp::from_unix_seconds(t.unix_seconds() / 60 * 60).unwrap()
                };
                TransferRequest {
                    prior_handling: prior.map(|actions| liandong::model::PriorHandling {
                        by_unit: None,
                        at: None,
                        actions,
                        safe: None,
                    }),
                    needed_by: assist.then(|| minute(needed_by)),
                    ruling: None,
                    sender_ref,
                    from: endpoint.id.clone(),
                    to_platform: endpoint.id.platform.other(),
                    to_region: to_region.map(|r| r.parse().unwrap()),
                    reason,
                    requested_at,
                    // Set by routing, never read from a document: native round trips leave it out.
                    to_unit: None,
                    links: if assist {
                        vec![liandong::model::Link {
                            rel: liandong::model::LinkRel::AssistFor,
                            transfer_id: format!("REF-{local_id}"),
                        }]
                    } else {
                        Vec::new()
                    },
                    case: Case {
                        case_id: Case::id_for(&endpoint.id, &local_id),
                        origin: Origin {
                            endpoint: endpoint.id.clone(),
                            local_id,
                            unit: origin_unit,
                        },
                        received_at,
                        caller: caller.map(|(name, phone, anonymous)| Caller {
                            name,
                            phone: phone.map(|p| p.parse().unwrap()),
                            anonymous,
                        }),
                        location,
                        category: canonical.parse::<CategoryCode>().unwrap(),
                        source_category: Some(SourceCategory { code, name: Some(name) }),
                        summary,
                        urgency,
                        attachments,
                    },
                }
            },
        )
}

/// A status update as `endpoint` would send it, with what its state requires.
fn status_from(endpoint: Endpoint) -> impl Strategy<Value = StatusUpdate> {
    let states = vec![
        State::Received,
        State::Accepted,
        State::Rejected,
        State::InProgress,
        State::Resolved,
        State::Closed,
        State::Cancelled,
    ];
    (
        reference(),
        select(states),
        time(),
        unit(),
        proptest::option::of(text()),
        proptest::option::of(text()),
        proptest::option::of(select(vec![
            Satisfaction::Satisfied,
            Satisfaction::BasicallySatisfied,
            Satisfaction::Dissatisfied,
        ])),
        select(ReasonCode::ALL.to_vec()),
    )
        .prop_map(
            move |(transfer_ref, state, at, unit, note, result, satisfaction, reason)| {
                let note = match state {
                    State::Rejected | State::Cancelled => note.or(Some("原因".to_string())),
                    _ => note,
                };
                // linkage.md: a rejection carries its reason code; the gateway's own, undeliverable,
                // has its canonical note begin `undeliverable:`.
                let reason_code = (state == State::Rejected).then_some(reason);
                let note = match (reason_code, note) {
                    (Some(ReasonCode::Undeliverable), Some(note)) => {
                        Some(format!("undeliverable: {note}"))
                    }
                    (_, note) => note,
                };
                let result = if state == State::Resolved {
                    result.or(Some("已办结".to_string()))
                } else {
                    result
                };
                let satisfaction = if state == State::Closed {
                    satisfaction.or(Some(Satisfaction::Satisfied))
                } else {
                    satisfaction
                };
                StatusUpdate {
                    transfer_id: None,
                    transfer_ref: Some(transfer_ref),
                    state,
                    at,
                    by: endpoint.id.clone(),
                    unit,
                    note,
                    resolution: result.map(|result| Resolution {
                        result,
                        resolved_at: at,
                        unit: None,
                    }),
                    feedback: satisfaction.map(|satisfaction| Feedback {
                        satisfaction,
                        visited_at: at,
                        note: None,
                    }),
                    reason_code,
                }
            },
        )
}

/// The destination region as a format can carry it. formats.md: `jjd-json`'s `MBQH` is six
/// digits; the other formats' destination fields take a township's nine too. A township in a
/// six-digit field is written as its county (canonical.md: regions nest by their digits).
fn to_region_in(format: &str, region: Option<Region>) -> Option<Region> {
    match region {
        Some(r) if format == "jjd-json" && r.as_str().len() == 9 => {
            Some(r.as_str()[..6].parse().unwrap())
        }
        other => other,
    }
}

fn json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap()
}

fn endpoint_and_transfer() -> impl Strategy<Value = (Endpoint, TransferRequest)> {
    select(endpoints()).prop_flat_map(|e| (Just(e.clone()), transfer_from(e)))
}

fn endpoint_and_status() -> impl Strategy<Value = (Endpoint, StatusUpdate)> {
    select(endpoints()).prop_flat_map(|e| (Just(e.clone()), status_from(e)))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, ..ProptestConfig::default() })]

    #[test]
    fn transfers_survive_native_and_back((endpoint, request) in endpoint_and_transfer()) {
        let native = endpoint.write_transfer(&request).unwrap();
        let back = endpoint.read_transfer(&native).map_err(|e| TestCaseError::fail(format!("{e}\n{}", String::from_utf8_lossy(&native))))?;
        let mut expected = request.clone();
        expected.to_region = to_region_in(&endpoint.format.name, request.to_region.clone());
        canonical_diff(&json(&back), &json(&expected), &endpoint.id.to_string()).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn statuses_survive_native_and_back((endpoint, update) in endpoint_and_status()) {
        let native = endpoint.write_status(&update).unwrap();
        let back = endpoint.read_status(&native).map_err(|e| TestCaseError::fail(format!("{e}\n{}", String::from_utf8_lossy(&native))))?;
        canonical_diff(&json(&back), &json(&update), &endpoint.id.to_string()).map_err(TestCaseError::fail)?;
    }

    /// A transfer sent by one endpoint, rendered for any other, reads back with the same
    /// content; a category the destination's table lacks becomes its catch-all, with the name
    /// put before the summary.
    #[test]
    fn translation_between_formats_keeps_the_content((origin, request) in endpoint_and_transfer(), destination in select(endpoints())) {
        let native = destination.write_transfer(&request).unwrap();
        // The destination's own reader (its profile and code table) takes what was rendered
        // for it, as delivery checks before sending.
        let back = destination.format.read_transfer(&native, &origin.id, &destination.codes)
            .map_err(|e| TestCaseError::fail(format!("{}'s reader: {e}\n{}", destination.id, String::from_utf8_lossy(&native))))?;
        let mut expected = request.clone();
        expected.to_region = to_region_in(&destination.format.name, request.to_region.clone());
        let source_code = request.case.source_category.as_ref().map(|s| s.code.as_str());
        let own_row = destination.codes.rows.iter().find(|r| Some(r.code.as_str()) == source_code && r.canonical == request.case.category.as_str());
        let (row, catch_all) = match own_row.or_else(|| destination.codes.rows.iter().find(|r| r.canonical == request.case.category.as_str())) {
            Some(row) => (row, false),
            None => destination.codes.row_for(request.case.category.as_str(), None).unwrap(),
        };
        if catch_all {
            let name = request.case.source_category.as_ref().and_then(|s| s.name.clone())
                .unwrap_or_else(|| category::name_of(request.case.category.as_str()).unwrap().to_string());
            expected.case.summary = format!("【类别：{name}】\n{}", request.case.summary);
        }
        expected.case.category = row.canonical.parse().unwrap();
        expected.case.source_category = Some(SourceCategory { code: row.code.clone(), name: Some(row.name.clone()) });
        canonical_diff(&json(&back), &json(&expected), &format!("{} -> {}", origin.id, destination.id)).map_err(TestCaseError::fail)?;
    }

    /// Canonical JSON ⇄ proto is lossless, through the wire encoding too.
    #[test]
    fn proto_conversion_is_lossless((_, request) in endpoint_and_transfer(), (_, update) in endpoint_and_status()) {
        use prost::Message;
        let wire = v1::TransferRequest::from(request.clone()).encode_to_vec();
        let back = TransferRequest::try_from(v1::TransferRequest::decode(wire.as_slice()).unwrap()).unwrap();
        prop_assert_eq!(json(&back), json(&request));
        let wire = v1::StatusUpdate::from(update.clone()).encode_to_vec();
        let back = StatusUpdate::try_from(v1::StatusUpdate::decode(wire.as_slice()).unwrap()).unwrap();
        prop_assert_eq!(json(&back), json(&update));
    }

    #[test]
    fn coordinate_transforms_invert(lon in 72.1f64..137.8, lat in 0.9f64..55.8, system in select(vec![CoordSystem::Gcj02, CoordSystem::Bd09])) {
        let (x, y) = geo::from_wgs84(system, lon, lat);
        let (ilon, ilat) = geo::to_wgs84(system, x, y);
        prop_assert!((ilon - lon).abs() < 1e-6 && (ilat - lat).abs() < 1e-6, "{lon},{lat} -> {x},{y} -> {ilon},{ilat}");
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), endpoint in select(endpoints())) {
        let _ = endpoint.read_transfer(&bytes);
        let _ = endpoint.read_status(&bytes);
        let _ = endpoint.read_receipt(&bytes);
    }

    /// Texts made of linkage.md's labels and pieces of times and words, in any arrangement:
    /// the label readers answer or refuse, never panic; what a reason reads as composes back
    /// into a reason that reads the same.
    #[test]
    fn linkage_labels_in_any_arrangement_never_panic(pieces in proptest::collection::vec(select(vec![
        "【先期处置】", "【需到场时间】", "【关联单号】", "【会商裁定】", "【延期申请】", "【催办】",
        "【非职责范围】", "【无法送达】", "至", "2023-05-08 10:30", "2023-13-40 99:99", " ", "讨薪", "R-1", "【", "】",
    ]), 0..12)) {
        use liandong::model::linkage;
        let text: String = pieces.concat();
        let _ = linkage::read_extension_request(&text);
        let _ = liandong::model::ReasonCode::from_native_note(&text);
        if let Ok(parts) = linkage::split_reason(&text) {
            let again = linkage::compose_reason(
                parts.reason.as_deref(),
                parts.prior_actions.as_deref(),
                parts.needed_by,
                parts.linked_ref.as_deref(),
                None,
            );
            if let Some(again) = again {
                let reread = linkage::split_reason(&again);
                prop_assert_eq!(reread.as_ref().ok(), Some(&parts), "{} -> {}", text, again);
            }
        }
    }

    /// Samples with bytes changed, cut short or spliced: refused or read, never a panic, and
    /// whatever is read is valid canonical data that renders again.
    #[test]
    fn damaged_samples_never_panic(sample in select(sample_files()), at in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<bool>()) {
        let (endpoint, kind, mut bytes) = sample;
        let i = at.index(bytes.len().max(1));
        if cut { bytes.truncate(i) } else if let Some(b) = bytes.get_mut(i) { *b = byte }
        let endpoint = registry().endpoint_named(&endpoint).unwrap();
        if kind == "transfer" {
            if let Ok(request) = endpoint.read_transfer(&bytes) {
                endpoint.write_transfer(&request).unwrap();
            }
        } else if let Ok(update) = endpoint.read_status(&bytes) {
            endpoint.write_status(&update).unwrap();
        }
    }
}

fn sample_files() -> Vec<(String, String, Vec<u8>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/spec/samples");
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    ["valid", "invalid"]
        .iter()
        .flat_map(|k| manifest[*k].as_array().unwrap().clone())
        .map(|case| {
            (
                case["endpoint"].as_str().unwrap().to_string(),
                case["kind"].as_str().unwrap().to_string(),
                std::fs::read(dir.join(case["file"].as_str().unwrap())).unwrap(),
            )
        })
        .collect()
}

#[test]
fn every_endpoint_of_formats_md_is_registered() {
    let ids: Vec<String> = registry().endpoints().map(|e| e.id.to_string()).collect();
    assert_eq!(ids.len(), 18);
    for id in ["330200/110", "330200/12345", "360000/110", "530000/110", "110000/12345"] {
        assert!(ids.contains(&id.to_string()), "{id}");
    }
    let jiangxi = registry().endpoint(&"360000/110".parse::<EndpointId>().unwrap()).unwrap();
    assert_eq!(jiangxi.codes.canonical_of("070301"), Some("NP07"));
    let ningbo = registry().endpoint(&"330200/110".parse::<EndpointId>().unwrap()).unwrap();
    assert_eq!(ningbo.codes.canonical_of("070301"), None);
}

#[test]
fn a_whole_transfer_survives_proto() {
    let transfer: liandong::model::Transfer = serde_json::from_value(serde_json::json!({
        "transfer_id": "01HZX3V6Q8K2M7R4T9W1Y5C0DE",
        "case": {"case_id": "110:330200:JJ202305080001", "origin": {"endpoint": "330200/110", "local_id": "JJ202305080001"},
                 "received_at": "2023-05-08T09:41:09+08:00", "category": "NP07", "summary": "挪车"},
        "from": "330200/110", "to": "330200/12345", "direction": "110->12345",
        "requested_at": "2023-05-08T09:43:00+08:00",
        "deadlines": {"receive_by": "2023-05-08T10:13:00+08:00", "resolve_by": "2023-05-11T09:43:00+08:00"},
        "state": "accepted",
        "history": [
            {"state": "submitted", "at": "2023-05-08T09:43:00+08:00", "by": "330200/110"},
            {"state": "routed", "at": "2023-05-08T09:43:00+08:00", "by": "gateway", "unit": {"code": "330203005-ZF", "name": "高桥镇综合执法队"}, "note": "directory 330203005/NP07 v1"},
            {"state": "received", "at": "2023-05-08T09:47:12+08:00", "by": "330200/12345", "implied": true},
            {"state": "escalated", "at": "2023-05-08T10:13:00+08:00", "by": "gateway", "note": "receive_by missed"},
            {"state": "accepted", "at": "2023-05-08T09:47:12+08:00", "by": "330200/12345", "unit": {"code": "330203-CG", "name": "海曙区综合行政执法局"}}
        ],
        "feedback": {"satisfaction": "dissatisfied", "visited_at": "2023-05-09T09:00:00+08:00", "note": "重办"},
        "overdue": true
    })).unwrap();
    use prost::Message;
    let wire = v1::Transfer::from(transfer.clone()).encode_to_vec();
    let back = liandong::model::Transfer::try_from(v1::Transfer::decode(wire.as_slice()).unwrap())
        .unwrap();
    assert_eq!(json(&back), json(&transfer));
    // The destination's copy carries the routed unit, through proto too.
    let request = transfer.for_destination();
    assert_eq!(request.to_unit.as_ref().and_then(|u| u.name.as_deref()), Some("高桥镇综合执法队"));
    let back = TransferRequest::try_from(
        v1::TransferRequest::decode(
            v1::TransferRequest::from(request.clone()).encode_to_vec().as_slice(),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(back, request);
    let record = liandong::model::Record {
        dataset: "directory".into(),
        key: "330203/NP07".into(),
        owner: "330200/12345".into(),
        version: 7,
        updated_at: Timestamp::from_unix_seconds(1_683_504_000).unwrap(),
        deleted: false,
        body: serde_json::json!({"unit": {"code": "330203-CG", "name": "海曙区综合行政执法局"}, "phone": "0574-12345"}),
    };
    let back = liandong::model::Record::try_from(
        v1::Record::decode(v1::Record::from(record.clone()).encode_to_vec().as_slice()).unwrap(),
    )
    .unwrap();
    assert_eq!(back, record);
}

#[test]
fn proto_refusals_name_the_field() {
    let mut message = v1::TransferRequest::from(
        registry()
            .endpoint_named("330200/110")
            .unwrap()
            .read_transfer(
                &std::fs::read(
                    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                        .join("tests/spec/samples/jjd-json/transfer-ningbo-township.json"),
                )
                .unwrap(),
            )
            .unwrap(),
    );
    message.case.as_mut().unwrap().category = "NP42".into();
    assert_eq!(TransferRequest::try_from(message.clone()).unwrap_err().path, "case.category");
    message.case.as_mut().unwrap().category = "NP07".into();
    message.from = "33/110".into();
    assert_eq!(TransferRequest::try_from(message).unwrap_err().path, "from");
}

/// Inputs that once crashed a fuzz target (`fuzz/`), kept as regression cases: every parser of
/// every endpoint refuses or reads them without panicking.
#[test]
fn fuzz_regressions_stay_fixed() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-regressions");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        for endpoint in endpoints() {
            let _ = endpoint.read_transfer(&bytes);
            let _ = endpoint.read_status(&bytes);
            let _ = endpoint.read_receipt(&bytes);
        }
        seen += 1;
    }
    assert!(seen >= 1);
}
