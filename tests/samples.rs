//! Golden tests: every sample of the spec translates to exactly its expected canonical JSON,
//! and every invalid sample is refused naming the field its README gives.
//!
//! The samples are kept in `tests/spec/` (a copy of `shared/spec/`, checked against it when
//! that folder is beside the checkout), so the tests run from a clean clone alone.

use std::path::{Path, PathBuf};

use liandong::formats::{FormatError, ReceiptKind, Registry};
use serde_json::Value;

mod common;
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
        let expected: Value =
            serde_json::from_slice(&std::fs::read(spec_dir().join("samples").join(case["expected"].as_str().unwrap())).unwrap())
                .unwrap();
        let actual = match case["kind"].as_str().unwrap() {
            "transfer" => serde_json::to_value(endpoint.read_transfer(&bytes).unwrap_or_else(|e| panic!("{file}: {e}"))).unwrap(),
            _ => serde_json::to_value(endpoint.read_status(&bytes).unwrap_or_else(|e| panic!("{file}: {e}"))).unwrap(),
        };
        assert_canonical_eq(&actual, &expected, file);
    }
}

/// The sender and the error for an entry of the manifest's `invalid` list.
fn refusal<'a>(registry: &'a Registry, case: &Value) -> (&'a liandong::formats::Endpoint, FormatError) {
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
                assert!(message.starts_with(kind), "{file}: {message:?} should start like {example:?}");
            }
        }
        // The receipt is the sender's "bad document" kind and carries the message.
        let receipt = endpoint.error_receipt(None, &error);
        let reading = endpoint.read_receipt(&receipt).unwrap();
        assert!(!reading.ok, "{file}");
        assert_eq!(reading.message.as_deref(), Some(message.as_str()), "{file}");
        assert_receipt_form(&endpoint.format.encoding.decode(&receipt).unwrap(), case["receipt"].as_str().unwrap(), file);
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
fn the_copied_spec_matches_shared_when_present() {
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/spec/samples");
    if !shared.exists() {
        return; // a checkout without shared/ beside it: the copy is all there is
    }
    for entry in std::fs::read_dir(&shared).unwrap() {
        let dir = entry.unwrap().path();
        let files: Vec<PathBuf> =
            if dir.is_dir() { std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect() } else { vec![dir.clone()] };
        for file in files {
            let relative = file.strip_prefix(&shared).unwrap();
            let copy = spec_dir().join("samples").join(relative);
            assert_eq!(std::fs::read(&file).unwrap(), std::fs::read(&copy).unwrap_or_default(), "{}", relative.display());
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
