//! Golden tests: every sample of the spec translates to exactly its expected canonical JSON,
//! and every invalid sample is refused naming the field its README gives.
//!
//! The samples are kept in `tests/spec/` (a copy of `shared/spec/`, pinned by
//! `tests/spec/SHA256SUMS` and checked against `shared/` when that folder is beside the
//! checkout), so the tests run from a clean clone alone.

use std::path::{Path, PathBuf};

use liandong::formats::{FormatError, ReceiptKind, Registry};
use serde_json::Value;

use crate::common;
use common::assert_canonical_eq;

fn spec_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/spec")
}

fn manifest() -> Value {
    let text = std::fs::read_to_string(spec_dir().join("samples/manifest.json")).expect("manifest");
    serde_json::from_str(&text).expect("manifest is JSON")
}

#[test]
fn every_valid_sample_yields_its_canonical_json() {
    let registry = Registry::builtin();
    let manifest = manifest();
    let valid = manifest["valid"].as_array().unwrap();
    assert!(valid.len() >= 30, "the manifest lists the samples");
    for case in valid {
        let file = case["file"].as_str().unwrap();
        let endpoint = registry.endpoint_named(case["endpoint"].as_str().unwrap()).unwrap();
        let bytes = std::fs::read(spec_dir().join("samples").join(file)).unwrap();
        let expected: Value = serde_json::from_slice(
            &std::fs::read(spec_dir().join("samples").join(case["expected"].as_str().unwrap()))
                .unwrap(),
        )
        .unwrap();
        let actual = match case["kind"].as_str().unwrap() {
            "transfer" => serde_json::to_value(
                endpoint.read_transfer(&bytes).unwrap_or_else(|e| panic!("{file}: {e}")),
            )
            .unwrap(),
            _ => serde_json::to_value(
                endpoint.read_status(&bytes).unwrap_or_else(|e| panic!("{file}: {e}")),
            )
            .unwrap(),
        };
        assert_canonical_eq(&actual, &expected, file);
    }
}

/// The sender and the error for an entry of the manifest's `invalid` list.
fn refusal<'a>(
    registry: &'a Registry,
    case: &Value,
) -> (&'a liandong::formats::Endpoint, FormatError) {
    let file = case["file"].as_str().unwrap();
    let endpoint = registry.endpoint_named(case["endpoint"].as_str().unwrap()).unwrap();
    let bytes = std::fs::read(spec_dir().join("samples").join(file)).unwrap();
    let error = match case["kind"].as_str().unwrap() {
        "transfer" => endpoint.read_transfer(&bytes).map(|_| ()).unwrap_err(),
        _ => endpoint.read_status(&bytes).map(|_| ()).unwrap_err(),
    };
    (endpoint, error)
}

#[test]
fn every_invalid_sample_is_refused_naming_its_field() {
    let registry = Registry::builtin();
    let manifest = manifest();
    for case in manifest["invalid"].as_array().unwrap() {
        let file = case["file"].as_str().unwrap();
        let (endpoint, error) = refusal(&registry, case);
        let message = error.to_string();
        match case["field"].as_str() {
            Some(field) => {
                assert_eq!(error.field(), Some(field), "{file}: {message}");
                assert!(message.starts_with(&format!("{field}: ")), "{file}: {message}");
            }
            None => {
                assert_eq!(error.field(), None, "{file}: {message}");
                let example = case["example_message"].as_str().unwrap();
                let kind = example.split(':').next().unwrap();
                assert!(
                    message.starts_with(kind),
                    "{file}: {message:?} should start like {example:?}"
                );
            }
        }
        // The receipt is the sender's "bad document" kind and carries the message.
        let receipt = endpoint.error_receipt(None, &error);
        let reading = endpoint.read_receipt(&receipt).unwrap();
        assert!(!reading.ok, "{file}");
        assert_eq!(reading.message.as_deref(), Some(message.as_str()), "{file}");
        assert_receipt_form(
            &endpoint.format.encoding.decode(&receipt).unwrap(),
            case["receipt"].as_str().unwrap(),
            file,
        );
    }
}

/// The receipt has the form the README shows: a JSON receipt holds the shown keys and values;
/// an XML receipt has the shown root and elements.
fn assert_receipt_form(actual: &str, shown: &str, file: &str) {
    if shown.starts_with('{') {
        let expected: Value = serde_json::from_str(&shown.replace(", ...", "")).unwrap();
        let actual: Value = serde_json::from_str(actual).unwrap();
        assert_subset(&actual, &expected, file);
    } else {
        let shown = shown.trim_end_matches("...");
        let (root, inner) = shown[1..].split_once('>').unwrap();
        let compact: String = actual.lines().map(str::trim).collect();
        assert!(compact.contains(&format!("<{root}")), "{file}: {compact} has root {root}");
        assert!(compact.contains(inner), "{file}: {compact} contains {inner}");
    }
}

fn assert_subset(actual: &Value, expected: &Value, file: &str) {
    match expected {
        Value::Object(map) => {
            for (k, v) in map {
                assert_subset(&actual[k], v, file);
            }
        }
        other => assert_eq!(actual, other, "{file}"),
    }
}

#[test]
fn success_receipts_carry_the_reference() {
    let registry = Registry::builtin();
    for endpoint in registry.endpoints() {
        let receipt = endpoint.write_receipt(ReceiptKind::Success, Some("LZ-1"), None);
        let reading = endpoint.read_receipt(&receipt).unwrap();
        assert!(reading.ok, "{}", endpoint.id);
        assert_eq!(reading.reference.as_deref(), Some("LZ-1"), "{}", endpoint.id);
        for kind in [ReceiptKind::Invalid, ReceiptKind::Refused, ReceiptKind::Busy] {
            let receipt = endpoint.write_receipt(kind, None, Some("why"));
            assert!(!endpoint.read_receipt(&receipt).unwrap().ok, "{} {kind:?}", endpoint.id);
        }
    }
}

#[test]
fn the_copied_spec_is_the_one_recorded_and_matches_shared() {
    use sha2::Digest;
    // Always: every file of the copy is the one `tests/spec/SHA256SUMS` records (refreshed with
    // the copy: `cd tests/spec && find . -type f ! -name SHA256SUMS | sort | xargs sha256sum >
    // SHA256SUMS`), and no file is missing or added.
    let spec = spec_dir();
    let recorded = std::fs::read_to_string(spec.join("SHA256SUMS")).unwrap();
    let mut listed = Vec::new();
    for line in recorded.lines() {
        let (hash, file) = line.split_once("  ").unwrap();
        let bytes = std::fs::read(spec.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(
            format!("{:x}", sha2::Sha256::digest(&bytes)),
            hash,
            "{file} is not the recorded copy"
        );
        listed.push(file.trim_start_matches("./").to_string());
    }
    let mut present = Vec::new();
    let mut folders = vec![spec.clone()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                folders.push(path);
            } else if path.file_name().is_some_and(|n| n != "SHA256SUMS") {
                present.push(path.strip_prefix(&spec).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    listed.sort();
    present.sort();
    assert_eq!(listed, present, "files in tests/spec and in its SHA256SUMS");
    // And where the customer's documents are beside this checkout (a working session, not CI's
    // clean clone), the copy is theirs, byte for byte.
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/spec");
    if shared.is_dir() {
        for file in &present {
            let theirs = std::fs::read(shared.join(file)).unwrap_or_default();
            assert_eq!(
                theirs,
                std::fs::read(spec.join(file)).unwrap(),
                "{file} differs from ../shared/spec: refresh the copy"
            );
        }
    }
}

#[test]
fn invalid_messages_say_what_was_expected() {
    let registry = Registry::builtin();
    for case in manifest()["invalid"].as_array().unwrap() {
        let file = case["file"].as_str().unwrap();
        let (_, error) = refusal(&registry, case);
        println!("{file}: {error}");
        // Where the README's example names a field, our message is the same words.
        let example = case["example_message"].as_str().unwrap();
        if case["field"].is_string() {
            assert_eq!(error.to_string(), example, "{file}");
        }
    }
}

/// Error receipts are told apart by kind, as each format's section of `formats.md` writes them
/// (typed in here, not rendered by the gateway): what delivery's retry table reads.
#[test]
fn receipts_are_told_apart_by_kind() {
    let registry = Registry::builtin();
    let cases: &[(&str, &str, Option<ReceiptKind>)] = &[
        ("330200/110", r#"{"CODE": "0000", "MSG": "成功", "LZBH": "X"}"#, Some(ReceiptKind::Success)),
        ("330200/110", r#"{"CODE": "1001", "MSG": "MBQH: bad"}"#, Some(ReceiptKind::Invalid)),
        ("330200/110", r#"{"CODE": "1002", "MSG": "state"}"#, Some(ReceiptKind::Refused)),
        ("330200/110", r#"{"CODE": "1003", "MSG": "busy"}"#, Some(ReceiptKind::Busy)),
        ("330200/110", r#"{"CODE": "9999"}"#, None),
        ("330200/12345", r#"{"code": "400", "msg": "bad"}"#, Some(ReceiptKind::Invalid)),
        ("330200/12345", r#"{"code": "429", "msg": "busy"}"#, Some(ReceiptKind::Busy)),
        ("110000/110", r#"{"code": 400, "message": "bad"}"#, Some(ReceiptKind::Invalid)),
        ("110000/110", r#"{"code": 409, "message": "no"}"#, Some(ReceiptKind::Refused)),
        ("110000/12345", r#"{"success": false, "error": {"kind": "invalid", "message": "bad"}}"#, Some(ReceiptKind::Invalid)),
        ("110000/12345", r#"{"success": false, "error": {"kind": "busy", "message": "later"}}"#, Some(ReceiptKind::Busy)),
        (
            "210000/110",
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><FHXX><CODE>1</CODE><MSG>bad</MSG></FHXX>",
            Some(ReceiptKind::Invalid),
        ),
        (
            "210000/110",
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><FHXX><CODE>3</CODE><MSG>busy</MSG></FHXX>",
            Some(ReceiptKind::Busy),
        ),
        (
            "210000/12345",
            "<Receipt xmlns=\"urn:gov:12345:workorder:2\"><Result>Invalid</Result><Message>bad</Message></Receipt>",
            Some(ReceiptKind::Invalid),
        ),
        (
            "210000/12345",
            "<Receipt xmlns=\"urn:gov:12345:workorder:2\"><Result>Refused</Result><Message>no</Message></Receipt>",
            Some(ReceiptKind::Refused),
        ),
    ];
    for (endpoint, receipt, kind) in cases {
        let endpoint = registry.endpoint_named(endpoint).unwrap();
        assert_eq!(
            endpoint.read_receipt(receipt.as_bytes()).unwrap().kind,
            *kind,
            "{} {receipt}",
            endpoint.id
        );
    }
}

/// A success receipt can carry a notice for the desk (the destination is unreachable), in the
/// field its format reads messages from, or beside `success` where the receipt has none.
#[test]
fn a_success_receipt_carries_a_notice_in_its_body() {
    let registry = Registry::builtin();
    for endpoint in registry.endpoints() {
        let receipt =
            endpoint.write_receipt(ReceiptKind::Success, Some("R-1"), Some("目标平台暂时无法送达"));
        let reading = endpoint.read_receipt(&receipt).unwrap();
        assert!(reading.ok, "{}", endpoint.id);
        let text = endpoint.format.encoding.decode(&receipt).unwrap_or_default();
        assert!(text.contains("目标平台暂时无法送达"), "{}: {text}", endpoint.id);
    }
}

/// `formats.md`: jjd-json's `MBQH` is six digits. A reader refuses nine; a township written to
/// it becomes its county.
#[test]
fn a_six_digit_region_field_refuses_nine_and_is_written_as_the_county() {
    let registry = Registry::builtin();
    let ningbo_110 = registry.endpoint_named("330200/110").unwrap();
    let sample =
        std::fs::read_to_string(spec_dir().join("samples/jjd-json/transfer-ningbo-township.json"))
            .unwrap();
    let township = sample.replace(r#""MBQH": "330203""#, r#""MBQH": "330203101""#);
    assert_ne!(township, sample);
    let error = ningbo_110.read_transfer(township.as_bytes()).unwrap_err();
    assert_eq!(error.to_string(), "MBQH: expected a six-digit region code, got \"330203101\"");
    let mut request = ningbo_110.read_transfer(sample.as_bytes()).unwrap();
    request.to_region = Some("330203101".parse().unwrap());
    let written: Value =
        serde_json::from_slice(&ningbo_110.write_transfer(&request).unwrap()).unwrap();
    assert_eq!(written["MBQH"], "330203");
    // gd-json's region fields take nine digits as they are
    let gd = registry.endpoint_named("330200/12345").unwrap();
    let written: Value = serde_json::from_slice(&gd.write_transfer(&request).unwrap()).unwrap();
    assert_eq!(written["mbqh"], "330203101");
}

/// `linkage.md`: a rejection's reason travels as a label in front of the native note.
#[test]
fn rejection_labels_are_read_into_reason_codes_and_written_back() {
    use liandong::model::ReasonCode;
    let registry = Registry::builtin();
    let jjd = registry.endpoint_named("330200/12345").unwrap();
    let status = |note: &str| {
        format!(
            r#"{{"lzbh": "T1", "gdzt": "退回", "czsj": "2026/11/30 10:00:00", "sm": "{note}"}}"#
        )
    };
    let read = |note: &str| jjd.read_status(status(note).as_bytes());
    let update = read("【重复】 已由12345转办").unwrap();
    assert_eq!(
        (update.reason_code, update.note.as_deref()),
        (Some(ReasonCode::Duplicate), Some("已由12345转办"))
    );
    let update = read("不属于本部门").unwrap();
    assert_eq!(
        (update.reason_code, update.note.as_deref()),
        (Some(ReasonCode::Other), Some("不属于本部门"))
    );
    let update = read("【无法送达】目标平台拒收").unwrap();
    assert_eq!(update.note.as_deref(), Some("undeliverable: 目标平台拒收"));
    assert_eq!(
        read("【非本辖区】").unwrap_err().to_string(),
        "sm: a rejection's label needs the reason after it"
    );
    let mut update = read("【非本辖区】应由鄞州区办理").unwrap();
    assert_eq!(update.reason_code, Some(ReasonCode::WrongRegion));
    let written: Value = serde_json::from_slice(&jjd.write_status(&update).unwrap()).unwrap();
    assert_eq!(written["sm"], "【非本辖区】应由鄞州区办理");
    update.reason_code = Some(ReasonCode::Undeliverable);
    update.note = Some("undeliverable: 330200/110 could not take it".into());
    let written: Value = serde_json::from_slice(&jjd.write_status(&update).unwrap()).unwrap();
    assert_eq!(written["sm"], "【无法送达】330200/110 could not take it");
}
