//! The document tree every format is read into, and the paths that address it.
//!
//! JSON documents are `serde_json::Value`s as they are. XML documents are read into the same
//! shape (see [`super::xml`]): an element with neither attributes nor child elements is its text;
//! any other element is an object whose keys are child names, `@name` for attributes and
//! `#text` for its own text; repeated children become a list. One tree type lets one engine
//! serve both syntaxes.

use serde_json::{Map, Value};

/// The key under which an XML element that also has attributes or children keeps its text.
pub const TEXT_KEY: &str = "#text";

/// A compiled field path: `JQXX.JQLB@DM` is `["JQXX", "JQLB", "@DM"]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Path {
    keys: Vec<String>,
    /// As written in the profile (without a trailing `[]`), for messages.
    display: String,
}

impl Path {
    /// Compiles a path; the empty path is the node itself.
    pub fn parse(text: &str) -> Result<Path, String> {
        let display = text.strip_suffix("[]").unwrap_or(text).to_string();
        let mut keys = Vec::new();
        if !display.is_empty() {
            for part in display.split('.') {
                let (element, attribute) = match part.split_once('@') {
                    Some((element, attribute)) => (element, Some(attribute)),
                    None => (part, None),
                };
                if !element.is_empty() {
                    keys.push(element.to_string());
                } else if attribute.is_none() || (keys.is_empty() && !part.starts_with('@')) {
                    return Err(format!("empty segment in path {text:?}"));
                }
                if let Some(attribute) = attribute {
                    if attribute.is_empty() || attribute.contains('@') {
                        return Err(format!("bad attribute in path {text:?}"));
                    }
                    keys.push(format!("@{attribute}"));
                }
            }
        }
        if keys.iter().any(|k| k.contains('[') || k.contains(']') || k.contains(char::is_whitespace)) {
            return Err(format!("unexpected character in path {text:?}"));
        }
        Ok(Path { keys, display })
    }

    /// The path as written in the profile.
    pub fn display(&self) -> &str {
        &self.display
    }

    /// This path inside list item `index` of `list`: `gd.fj[0].lx`, `JQXX.FJ[0]@LX`.
    pub fn in_item(&self, list: &str, index: usize) -> String {
        match self.display.chars().next() {
            None => format!("{list}[{index}]"),
            Some('@') => format!("{list}[{index}]{}", self.display),
            Some(_) => format!("{list}[{index}].{}", self.display),
        }
    }

    /// The node at this path, if there is one.
    pub fn get<'a>(&self, root: &'a Value) -> Option<&'a Value> {
        let mut node = root;
        for key in &self.keys {
            node = node.as_object()?.get(key)?;
        }
        Some(node)
    }

    /// Writes `value` at this path, making objects on the way. Writing onto an XML text node
    /// (a string) turns it into an element object that keeps the text under `#text`; writing a
    /// text onto an element object sets its `#text`.
    pub fn set(&self, root: &mut Value, value: Value) {
        let mut node = root;
        for key in &self.keys {
            let map = as_object_mut(node);
            node = map.entry(key.clone()).or_insert(Value::Null);
        }
        match node {
            Value::Object(map) if !value.is_object() => {
                map.insert(TEXT_KEY.to_string(), value);
            }
            _ => *node = value,
        }
    }
}

/// The object at `node`, turning a null into an empty object and a text into `{"#text": …}`.
fn as_object_mut(node: &mut Value) -> &mut Map<String, Value> {
    if !node.is_object() {
        let previous = std::mem::take(node);
        let mut map = Map::new();
        if !previous.is_null() {
            map.insert(TEXT_KEY.to_string(), previous);
        }
        *node = Value::Object(map);
    }
    match node {
        Value::Object(map) => map,
        _ => unreachable!("made an object above"),
    }
}

/// A short description of a native value, for error messages.
pub fn describe(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        Value::Array(_) => "a list".to_string(),
        Value::Object(_) => "an object".to_string(),
        other => other.to_string(),
    }
}

/// The text of a native value: a string trimmed, a number's digits; blank and null are absent.
/// An XML element's text is found under `#text`; an element with only attributes has none.
pub fn text_of(value: &Value) -> Result<Option<String>, String> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => {
            let t = s.trim();
            Ok((!t.is_empty()).then(|| t.to_string()))
        }
        Value::Number(n) => Ok(Some(n.to_string())),
        Value::Object(map) => match map.get(TEXT_KEY) {
            Some(text) => text_of(text),
            None if map.keys().all(|k| k.starts_with('@')) => Ok(None),
            None => Err("expected text, got an object".to_string()),
        },
        other => Err(format!("expected text, got {}", describe(other))),
    }
}

/// Like [`text_of`], but booleans read as `true`/`false` (for flags and enumerations).
pub fn token_of(value: &Value) -> Result<Option<String>, String> {
    match value {
        Value::Bool(b) => Ok(Some(b.to_string())),
        other => text_of(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_address_elements_attributes_and_items() {
        let p = Path::parse("JQXX.JQLB@DM").unwrap();
        let doc = json!({"JQXX": {"JQLB": {"@DM": "FJW07", "#text": "挪车"}}});
        assert_eq!(p.get(&doc), Some(&json!("FJW07")));
        assert_eq!(text_of(Path::parse("JQXX.JQLB").unwrap().get(&doc).unwrap()).unwrap().as_deref(), Some("挪车"));
        assert_eq!(Path::parse("@LX").unwrap().in_item("JQXX.FJ", 0), "JQXX.FJ[0]@LX");
        assert_eq!(Path::parse("lx").unwrap().in_item("gd.fj", 2), "gd.fj[2].lx");
        assert_eq!(Path::parse("").unwrap().in_item("JQXX.FJ", 1), "JQXX.FJ[1]");
        assert!(Path::parse("a..b").is_err());
        assert!(Path::parse("a@").is_err());
    }

    #[test]
    fn setting_text_and_attributes_on_one_element_in_either_order() {
        let mut doc = Value::Null;
        Path::parse("JQLB").unwrap().set(&mut doc, json!("挪车"));
        Path::parse("JQLB@DM").unwrap().set(&mut doc, json!("FJW07"));
        assert_eq!(doc, json!({"JQLB": {"#text": "挪车", "@DM": "FJW07"}}));
        let mut doc = Value::Null;
        Path::parse("JQLB@DM").unwrap().set(&mut doc, json!("FJW07"));
        Path::parse("JQLB").unwrap().set(&mut doc, json!("挪车"));
        assert_eq!(doc, json!({"JQLB": {"@DM": "FJW07", "#text": "挪车"}}));
    }

    #[test]
    fn text_rules() {
        assert_eq!(text_of(&json!("  ")).unwrap(), None);
        assert_eq!(text_of(&json!(12345)).unwrap().as_deref(), Some("12345"));
        assert_eq!(text_of(&json!({"@code": "x"})).unwrap(), None);
        assert!(text_of(&json!(true)).is_err());
        assert!(text_of(&json!({"a": 1})).is_err());
        assert_eq!(token_of(&json!(true)).unwrap().as_deref(), Some("true"));
    }
}
