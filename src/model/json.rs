//! Canonical JSON by dotted path, and strict decoding into the typed model.
//!
//! The format engine builds canonical JSON field by field (`case.caller.phone`), and canonical
//! JSON also arrives from people and programs (`liandong convert --to`, the HTTPS API). Both
//! are decoded here, so that every error names the canonical field by its dotted path.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::ModelError;

/// Reads the value at a dotted canonical path (`case.caller.phone`); null is absent.
pub fn get<'a>(root: &'a Value, path: &str) -> Option<&'a Value> {
    let mut node = root;
    for key in path.split('.').filter(|k| !k.is_empty()) {
        node = node.as_object()?.get(key)?;
    }
    (!node.is_null()).then_some(node)
}

/// Writes a value at a dotted canonical path, making objects on the way.
pub fn set(root: &mut Value, path: &str, value: Value) {
    let mut node = root;
    for key in path.split('.').filter(|k| !k.is_empty()) {
        if !node.is_object() {
            *node = Value::Object(Map::new());
        }
        node = match node {
            Value::Object(map) => map.entry(key.to_string()).or_insert(Value::Null),
            _ => unreachable!("made an object above"),
        };
    }
    *node = value;
}

/// Canonical JSON → a typed value: the `required` paths first (so the most important absence
/// is the one reported), then the model's own types, unknown fields refused.
pub fn decode<T: DeserializeOwned>(value: Value, required: &[&str]) -> Result<T, ModelError> {
    for path in required {
        if get(&value, path).is_none() {
            return Err(ModelError::missing(*path));
        }
    }
    // Most documents are well formed: decoded from a borrow first, with no path tracked, and
    // decoded again (tracking the path, to name the field) only when that fails.
    if let Ok(typed) = T::deserialize(&value) {
        return Ok(typed);
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let message = e.inner().to_string();
        match message.strip_prefix("missing field `").and_then(|m| m.split_once('`')) {
            Some((field, _)) if path == "." => ModelError::missing(field),
            Some((field, _)) => ModelError::missing(format!("{path}.{field}")),
            None => ModelError::new(if path == "." { String::new() } else { path }, message),
        }
    })
}

/// Parses canonical JSON text into a typed, validated value.
pub fn parse<T: DeserializeOwned>(bytes: &[u8], required: &[&str]) -> Result<T, ModelError> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| ModelError::new("", format!("malformed JSON: {e}")))?;
    if !value.is_object() {
        return Err(ModelError::new("", "malformed JSON: expected an object at the top level"));
    }
    decode(value, required)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TransferRequest;
    use serde_json::json;

    #[test]
    fn errors_name_the_canonical_path() {
        let request = json!({"sender_ref": "R", "from": "330200/110", "to_platform": "12345",
            "requested_at": "2023-05-08T09:43:00+08:00",
            "case": {"case_id": "c", "origin": {"endpoint": "330200/110", "local_id": "J"},
                     "received_at": "2023-05-08T09:41:09+08:00", "category": "NP07", "summary": "s",
                     "caller": {"phone": "12"}}});
        let err =
            decode::<TransferRequest>(request.clone(), TransferRequest::REQUIRED).unwrap_err();
        assert_eq!(err.path, "case.caller.phone");
        let mut missing = request;
        missing["case"].as_object_mut().unwrap().remove("summary");
        let err = decode::<TransferRequest>(missing, TransferRequest::REQUIRED).unwrap_err();
        assert_eq!(err.to_string(), "case.summary: required field is missing or empty");
    }
}
