//! The document tree every format is read into, and the paths that address it.
//!
//! A [`Node`] is JSON's shape with objects kept as ordered lists of entries: order matters when
//! an XML document is written (vendors validate element order), lookups in the small objects of
//! these documents are faster by scan than by hashing, and a JSON object that repeats a key is
//! refused rather than silently resolved one way or the other. XML documents are read into the
//! same shape (see [`super::xml`]): an element with neither attributes nor child elements is its
//! text; any other element is an object whose keys are child names, `@name` for attributes and
//! `#text` for its own text; repeated children become a list. One tree type lets one engine
//! serve both syntaxes.

use std::fmt;

use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The key under which an XML element that also has attributes or children keeps its text.
pub const TEXT_KEY: &str = "#text";

/// A node of a native document.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Node {
    #[default]
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array(Vec<Node>),
    Object(Vec<(String, Node)>),
}

impl Node {
    /// The value under `key`, if this is an object that has it.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match self {
            Node::Object(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Node::Null)
    }

    pub fn is_object(&self) -> bool {
        matches!(self, Node::Object(_))
    }

    /// Sets `key` to `value`, in place if present, else at the end.
    pub fn insert(entries: &mut Vec<(String, Node)>, key: &str, value: Node) {
        match entries.iter_mut().find(|(k, _)| k == key) {
            Some((_, slot)) => *slot = value,
            None => entries.push((key.to_string(), value)),
        }
    }

    /// The same document as a `serde_json::Value` (for tests and tools).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match self {
            Node::Null => Value::Null,
            Node::Bool(b) => Value::Bool(*b),
            Node::Number(n) => Value::Number(n.clone()),
            Node::String(s) => Value::String(s.clone()),
            Node::Array(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            Node::Object(entries) => {
                Value::Object(entries.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
            }
        }
    }

    /// A node from TOML (profiles' templates and constants), keeping the order of tables.
    pub fn from_toml(value: &toml::Value) -> Node {
        match value {
            toml::Value::String(s) => Node::String(s.clone()),
            toml::Value::Integer(i) => Node::Number((*i).into()),
            toml::Value::Float(f) => {
                serde_json::Number::from_f64(*f).map_or(Node::Null, Node::Number)
            }
            toml::Value::Boolean(b) => Node::Bool(*b),
            toml::Value::Datetime(d) => Node::String(d.to_string()),
            toml::Value::Array(items) => Node::Array(items.iter().map(Node::from_toml).collect()),
            toml::Value::Table(table) => Node::from_toml_table(table),
        }
    }

    pub fn from_toml_table(table: &toml::Table) -> Node {
        Node::Object(table.iter().map(|(k, v)| (k.clone(), Node::from_toml(v))).collect())
    }
}

impl From<&str> for Node {
    fn from(s: &str) -> Node {
        Node::String(s.to_string())
    }
}

impl Serialize for Node {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Node::Null => serializer.serialize_unit(),
            Node::Bool(b) => serializer.serialize_bool(*b),
            Node::Number(n) => n.serialize(serializer),
            Node::String(s) => serializer.serialize_str(s),
            Node::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Node::Object(entries) => {
                let mut map = serializer.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

/// Above this many keys, duplicate detection switches from a scan to a set.
const SCAN_LIMIT: usize = 32;

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Node, D::Error> {
        struct NodeVisitor;
        impl<'de> Visitor<'de> for NodeVisitor {
            type Value = Node;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_unit<E>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_none<E>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_bool<E>(self, b: bool) -> Result<Node, E> {
                Ok(Node::Bool(b))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Node, E> {
                Ok(Node::Number(n.into()))
            }
            fn visit_u64<E>(self, n: u64) -> Result<Node, E> {
                Ok(Node::Number(n.into()))
            }
            fn visit_f64<E>(self, n: f64) -> Result<Node, E> {
                Ok(serde_json::Number::from_f64(n).map_or(Node::Null, Node::Number))
            }
            fn visit_str<E>(self, s: &str) -> Result<Node, E> {
                Ok(Node::String(s.to_string()))
            }
            fn visit_string<E>(self, s: String) -> Result<Node, E> {
                Ok(Node::String(s))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Node::Array(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
                let mut entries: Vec<(String, Node)> = Vec::new();
                let mut seen: Option<std::collections::HashSet<String>> = None;
                while let Some(key) = map.next_key::<String>()? {
                    let duplicate = match &mut seen {
                        Some(set) => !set.insert(key.clone()),
                        None => entries.iter().any(|(k, _)| *k == key),
                    };
                    if duplicate {
                        return Err(de::Error::custom(format!("duplicate key {key:?}")));
                    }
                    if seen.is_none() && entries.len() >= SCAN_LIMIT {
                        let mut set: std::collections::HashSet<String> =
                            entries.iter().map(|(k, _)| k.clone()).collect();
                        set.insert(key.clone());
                        seen = Some(set);
                    }
                    let value = map.next_value()?;
                    entries.push((key, value));
                }
                Ok(Node::Object(entries))
            }
        }
        deserializer.deserialize_any(NodeVisitor)
    }
}

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
        if keys
            .iter()
            .any(|k| k.contains('[') || k.contains(']') || k.contains(char::is_whitespace))
        {
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
    pub fn get<'a>(&self, root: &'a Node) -> Option<&'a Node> {
        let mut node = root;
        for key in &self.keys {
            node = node.get(key)?;
        }
        Some(node)
    }

    /// Writes `value` at this path, making objects on the way. Writing onto an XML text node
    /// (a string) turns it into an element object that keeps the text under `#text`; writing a
    /// text onto an element object sets its `#text`.
    pub fn set(&self, root: &mut Node, value: Node) {
        let mut node = root;
        for key in &self.keys {
            let entries = as_object_mut(node);
            let index = match entries.iter().position(|(k, _)| k == key) {
                Some(index) => index,
                None => {
                    entries.push((key.clone(), Node::Null));
                    entries.len() - 1
                }
            };
            node = &mut entries[index].1;
        }
        match node {
            Node::Object(entries) if !value.is_object() => Node::insert(entries, TEXT_KEY, value),
            _ => *node = value,
        }
    }
}

/// The object at `node`, turning a null into an empty object and a text into `{"#text": …}`.
fn as_object_mut(node: &mut Node) -> &mut Vec<(String, Node)> {
    if !node.is_object() {
        let previous = std::mem::take(node);
        let mut entries = Vec::with_capacity(4);
        if !previous.is_null() {
            entries.push((TEXT_KEY.to_string(), previous));
        }
        *node = Node::Object(entries);
    }
    match node {
        Node::Object(entries) => entries,
        _ => unreachable!("made an object above"),
    }
}

/// A short description of a native value, for error messages.
pub fn describe(value: &Node) -> String {
    match value {
        Node::Null => "null".to_string(),
        Node::Bool(b) => b.to_string(),
        Node::Number(n) => n.to_string(),
        Node::String(s) => format!("{s:?}"),
        Node::Array(_) => "a list".to_string(),
        Node::Object(_) => "an object".to_string(),
    }
}

/// The text of a native value: a string trimmed, a number's digits; blank and null are absent.
/// An XML element's text is found under `#text`; an element with only attributes has none.
pub fn text_of(value: &Node) -> Result<Option<String>, String> {
    match value {
        Node::Null => Ok(None),
        Node::String(s) => {
            let t = s.trim();
            Ok((!t.is_empty()).then(|| t.to_string()))
        }
        Node::Number(n) => Ok(Some(n.to_string())),
        Node::Object(entries) => match value.get(TEXT_KEY) {
            Some(text) => text_of(text),
            None if entries.iter().all(|(k, _)| k.starts_with('@')) => Ok(None),
            None => Err("expected text, got an object".to_string()),
        },
        other => Err(format!("expected text, got {}", describe(other))),
    }
}

/// Like [`text_of`], but booleans read as `true`/`false` (for flags and enumerations).
pub fn token_of(value: &Node) -> Result<Option<String>, String> {
    match value {
        Node::Bool(b) => Ok(Some(b.to_string())),
        other => text_of(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(value: serde_json::Value) -> Node {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn paths_address_elements_attributes_and_items() {
        let p = Path::parse("JQXX.JQLB@DM").unwrap();
        let doc = node(json!({"JQXX": {"JQLB": {"@DM": "FJW07", "#text": "挪车"}}}));
        assert_eq!(p.get(&doc), Some(&Node::from("FJW07")));
        assert_eq!(
            text_of(Path::parse("JQXX.JQLB").unwrap().get(&doc).unwrap()).unwrap().as_deref(),
            Some("挪车")
        );
        assert_eq!(Path::parse("@LX").unwrap().in_item("JQXX.FJ", 0), "JQXX.FJ[0]@LX");
        assert_eq!(Path::parse("lx").unwrap().in_item("gd.fj", 2), "gd.fj[2].lx");
        assert_eq!(Path::parse("").unwrap().in_item("JQXX.FJ", 1), "JQXX.FJ[1]");
        assert!(Path::parse("a..b").is_err());
        assert!(Path::parse("a@").is_err());
    }

    #[test]
    fn setting_text_and_attributes_on_one_element_in_either_order() {
        let mut doc = Node::Null;
        Path::parse("JQLB").unwrap().set(&mut doc, "挪车".into());
        Path::parse("JQLB@DM").unwrap().set(&mut doc, "FJW07".into());
        assert_eq!(doc.to_json(), json!({"JQLB": {"#text": "挪车", "@DM": "FJW07"}}));
        let mut doc = Node::Null;
        Path::parse("JQLB@DM").unwrap().set(&mut doc, "FJW07".into());
        Path::parse("JQLB").unwrap().set(&mut doc, "挪车".into());
        assert_eq!(doc.to_json(), json!({"JQLB": {"@DM": "FJW07", "#text": "挪车"}}));
    }

    #[test]
    fn text_rules() {
        assert_eq!(text_of(&node(json!("  "))).unwrap(), None);
        assert_eq!(text_of(&node(json!(12345))).unwrap().as_deref(), Some("12345"));
        assert_eq!(text_of(&node(json!({"@code": "x"}))).unwrap(), None);
        assert!(text_of(&node(json!(true))).is_err());
        assert!(text_of(&node(json!({"a": 1}))).is_err());
        assert_eq!(token_of(&node(json!(true))).unwrap().as_deref(), Some("true"));
    }

    #[test]
    fn json_objects_may_not_repeat_a_key() {
        let err =
            serde_json::from_str::<Node>(r#"{"LZBH": "a", "x": 1, "LZBH": "b"}"#).unwrap_err();
        assert!(err.to_string().contains("duplicate key \"LZBH\""), "{err}");
        let many: String =
            (0..100).map(|i| format!("\"k{i}\": {i},")).collect::<String>() + "\"k7\": 0";
        assert!(serde_json::from_str::<Node>(&format!("{{{many}}}")).is_err());
        let order = serde_json::from_str::<Node>(r#"{"b": 1, "a": 2}"#).unwrap();
        assert_eq!(serde_json::to_string(&order).unwrap(), r#"{"b":1,"a":2}"#);
    }
}
