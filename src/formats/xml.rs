//! XML documents to and from the document tree ([`super::tree`]).
//!
//! The reader is strict and small on purpose: the declared encoding is honoured exactly (an
//! undecodable byte refuses the whole document), DOCTYPE is refused outright — so no entity
//! expansion (billion laughs) and no external entities can ever happen — and only the five
//! predefined entities and character references are understood. Namespace prefixes are dropped
//! after the root's namespace is checked by the caller; profiles use local names.

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

use super::encoding::TextEncoding;
use super::tree::{Node, TEXT_KEY};

/// Deeper nesting than this is refused; no native format comes close.
pub const MAX_DEPTH: usize = 32;

/// A parsed XML document.
#[derive(Debug)]
pub struct XmlDocument {
    /// The root element's local name.
    pub root: String,
    /// The root element's namespace, if it declares one.
    pub namespace: Option<String>,
    /// The root element's content as a tree (its attributes as `@name` keys).
    pub content: Node,
}

/// Reads a document; `default` is the encoding assumed when there is no declaration.
pub fn parse(bytes: &[u8], default: TextEncoding) -> Result<XmlDocument, String> {
    let encoding = match declared_encoding(bytes)? {
        Some(label) => TextEncoding::from_label(&label).ok_or_else(|| {
            format!("unsupported encoding {label:?}; expected GBK, GB2312, CP936, GB18030 or UTF-8")
        })?,
        None => default,
    };
    let text = encoding.decode(bytes)?;
    parse_text(&text)
}

/// The encoding named in the XML declaration, if any (the declaration is ASCII in every
/// encoding the gateway reads).
fn declared_encoding(bytes: &[u8]) -> Result<Option<String>, String> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    if !bytes.starts_with(b"<?xml") {
        return Ok(None);
    }
    let end = bytes
        .windows(2)
        .position(|w| w == b"?>")
        .ok_or("malformed XML: unterminated XML declaration")?;
    let decl = String::from_utf8_lossy(&bytes[..end]);
    let Some(at) = decl.find("encoding") else {
        return Ok(None);
    };
    let rest = decl[at + "encoding".len()..].trim_start();
    let rest = rest
        .strip_prefix('=')
        .ok_or("malformed XML: bad encoding in the XML declaration")?
        .trim_start();
    let quote = rest.chars().next().filter(|c| *c == '"' || *c == '\'');
    let quote = quote.ok_or("malformed XML: bad encoding in the XML declaration")?;
    let value = &rest[1..];
    let close = value.find(quote).ok_or("malformed XML: bad encoding in the XML declaration")?;
    Ok(Some(value[..close].to_string()))
}

/// An element being read.
struct Open {
    name: String,
    attributes: Vec<(String, Node)>,
    children: Vec<(String, Node)>,
    text: String,
}

fn parse_text(text: &str) -> Result<XmlDocument, String> {
    let mut reader = Reader::from_str(text);
    reader.config_mut().check_end_names = true;
    let mut stack: Vec<Open> = Vec::new();
    let mut done: Option<(Open, Node)> = None;
    let mut namespace = None;
    // A refusal of a well-formed event (a DOCTYPE, a second root, an unknown entity) is placed
    // where that event starts; quick-xml's error position is set only for its own errors.
    let malformed = |at: usize, what: &str| malformed_error(text, at, what);
    loop {
        let event_start = reader.buffer_position() as usize;
        let event = match reader.read_event() {
            Ok(event) => event,
            Err(e) => {
                return Err(malformed_error(text, reader.error_position() as usize, &e.to_string()))
            }
        };
        match event {
            Event::Start(start) | Event::Empty(start) if done.is_some() => {
                let _ = start;
                return Err(malformed(event_start, "a second root element"));
            }
            Event::Start(start) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(format!(
                        "document is nested too deeply (more than {MAX_DEPTH} levels)"
                    ));
                }
                let open = open_element(&start, stack.is_empty().then_some(&mut namespace))?;
                stack.push(open);
            }
            Event::Empty(start) => {
                let open = open_element(&start, stack.is_empty().then_some(&mut namespace))?;
                close_element(&mut stack, &mut done, open);
            }
            Event::End(_) => {
                let open =
                    stack.pop().ok_or_else(|| malformed(event_start, "unexpected end tag"))?;
                close_element(&mut stack, &mut done, open);
            }
            Event::Text(t) => {
                let content = t.xml10_content();
                match stack.last_mut() {
                    Some(open) => open.text.push_str(&content),
                    None if content.trim().is_empty() => {}
                    None => return Err(malformed(event_start, "text outside the root element")),
                }
            }
            Event::CData(t) => match stack.last_mut() {
                Some(open) => open.text.push_str(&t.xml10_content()),
                None => return Err(malformed(event_start, "CDATA outside the root element")),
            },
            Event::GeneralRef(r) => {
                let ch = match r.resolve_char_ref() {
                    Ok(Some(ch)) => ch,
                    Ok(None) => match &*r.xml10_content() {
                        "amp" => '&',
                        "lt" => '<',
                        "gt" => '>',
                        "quot" => '"',
                        "apos" => '\'',
                        other => {
                            return Err(malformed(
                                event_start,
                                &format!("unknown entity &{other};"),
                            ))
                        }
                    },
                    Err(e) => return Err(malformed(event_start, &e.to_string())),
                };
                match stack.last_mut() {
                    Some(open) => open.text.push(ch),
                    None => {
                        return Err(malformed(event_start, "reference outside the root element"))
                    }
                }
            }
            Event::DocType(_) => {
                return Err(malformed(event_start, "DOCTYPE is not allowed"));
            }
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err(malformed_error(text, text.len(), "unexpected end of document"));
    }
    let (root, content) = done.ok_or_else(|| "malformed XML: no root element".to_string())?;
    Ok(XmlDocument { root: root.name, namespace, content })
}

fn malformed_error(text: &str, position: usize, what: &str) -> String {
    let (line, column) = line_column(text, position);
    let what = what
        .strip_prefix("ill-formed document: ")
        .or_else(|| what.strip_prefix("syntax error: "))
        .unwrap_or(what);
    format!("malformed XML: {what}: line {line}, column {column}")
}

fn line_column(text: &str, position: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..position.min(text.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
    let column = String::from_utf8_lossy(&before[line_start..]).chars().count() + 1;
    (line, column)
}

fn local(name: &str) -> &str {
    name.rsplit_once(':').map_or(name, |(_, local)| local)
}

fn open_element(
    start: &BytesStart<'_>,
    namespace: Option<&mut Option<String>>,
) -> Result<Open, String> {
    let qname = start.name();
    let full: &str = qname.as_ref();
    let prefix = full.split_once(':').map(|(p, _)| p.to_string());
    let mut open = Open {
        name: local(full).to_string(),
        attributes: Vec::new(),
        children: Vec::new(),
        text: String::new(),
    };
    let mut root_namespace = None;
    for attribute in start.attributes().with_checks(true) {
        let attribute = attribute.map_err(|e| format!("malformed XML: {e}"))?;
        let key: &str = attribute.key.as_ref();
        let value = attribute
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map_err(|e| format!("malformed XML: {e}"))?
            .into_owned();
        if key == "xmlns" && prefix.is_none() {
            root_namespace = Some(value);
        } else if let Some(p) = key.strip_prefix("xmlns:") {
            if prefix.as_deref() == Some(p) {
                root_namespace = Some(value);
            }
        } else {
            let key = format!("@{}", local(key));
            if open.attributes.iter().any(|(k, _)| *k == key) {
                return Err(format!("malformed XML: attribute {key} repeated on <{}>", open.name));
            }
            open.attributes.push((key, Node::String(value)));
        }
    }
    if let Some(namespace) = namespace {
        *namespace = root_namespace;
    }
    Ok(open)
}

fn close_element(stack: &mut [Open], done: &mut Option<(Open, Node)>, open: Open) {
    let mut open = open;
    let value = if open.attributes.is_empty() && open.children.is_empty() {
        Node::String(std::mem::take(&mut open.text))
    } else {
        let mut entries = std::mem::take(&mut open.attributes);
        entries.append(&mut open.children);
        if !open.text.trim().is_empty() {
            entries.push((TEXT_KEY.to_string(), Node::String(std::mem::take(&mut open.text))));
        }
        Node::Object(entries)
    };
    match stack.last_mut() {
        Some(parent) => match parent.children.iter_mut().find(|(k, _)| *k == open.name) {
            Some((_, Node::Array(items))) => items.push(value),
            Some((_, existing)) => {
                let first = std::mem::take(existing);
                *existing = Node::Array(vec![first, value]);
            }
            None => parent.children.push((open.name.clone(), value)),
        },
        None => *done = Some((open, value)),
    }
}

/// Writes a document: declaration, root (with its namespace) and content, two-space indented.
pub fn write(
    root: &str,
    namespace: Option<&str>,
    content: &Node,
    encoding: TextEncoding,
) -> Vec<u8> {
    let mut out = String::with_capacity(1024);
    out.push_str("<?xml version=\"1.0\" encoding=\"");
    out.push_str(encoding.label());
    out.push_str("\"?>\n");
    match namespace {
        Some(ns) => {
            let mut entries = vec![("@xmlns".to_string(), Node::String(ns.to_string()))];
            match content {
                Node::Object(children) => entries.extend(children.iter().cloned()),
                Node::Null => {}
                text => entries.push((TEXT_KEY.to_string(), text.clone())),
            }
            write_element(&mut out, root, &Node::Object(entries), 0);
        }
        None => write_element(&mut out, root, content, 0),
    }
    encoding.encode_xml(&out)
}

fn push_scalar(out: &mut String, value: &Node, attribute: bool) {
    match value {
        Node::String(s) => escape_into(out, s, attribute),
        Node::Number(n) => out.push_str(&n.to_string()),
        Node::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Node::Null | Node::Array(_) | Node::Object(_) => {}
    }
}

fn indent(out: &mut String, depth: usize) {
    for _ in 0..depth {
        out.push_str("  ");
    }
}

fn write_element(out: &mut String, name: &str, value: &Node, depth: usize) {
    match value {
        Node::Null => {}
        Node::Array(items) => {
            for item in items {
                write_element(out, name, item, depth);
            }
        }
        Node::Object(entries) => {
            indent(out, depth);
            out.push('<');
            out.push_str(name);
            for (key, v) in entries.iter().filter(|(k, _)| k.starts_with('@')) {
                out.push(' ');
                out.push_str(&key[1..]);
                out.push_str("=\"");
                push_scalar(out, v, true);
                out.push('"');
            }
            let text = value.get(TEXT_KEY);
            let mut children =
                entries.iter().filter(|(k, _)| !k.starts_with('@') && k != TEXT_KEY).peekable();
            if children.peek().is_none() {
                match text {
                    Some(text) => {
                        out.push('>');
                        push_scalar(out, text, false);
                        out.push_str("</");
                        out.push_str(name);
                        out.push_str(">\n");
                    }
                    None => out.push_str("/>\n"),
                }
                return;
            }
            out.push('>');
            if let Some(text) = text {
                push_scalar(out, text, false);
            }
            out.push('\n');
            for (key, child) in children {
                write_element(out, key, child, depth + 1);
            }
            indent(out, depth);
            out.push_str("</");
            out.push_str(name);
            out.push_str(">\n");
        }
        scalar => {
            indent(out, depth);
            out.push('<');
            out.push_str(name);
            out.push('>');
            push_scalar(out, scalar, false);
            out.push_str("</");
            out.push_str(name);
            out.push_str(">\n");
        }
    }
}

fn escape_into(out: &mut String, text: &str, attribute: bool) {
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' if attribute => out.push_str("&quot;"),
            '\n' | '\r' | '\t' if attribute => out.push_str(&format!("&#x{:X};", u32::from(ch))),
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\r' | '\t') => {
                // Not representable in XML 1.0 at all; dropped rather than written as invalid.
            }
            c => out.push(c),
        }
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
    fn elements_attributes_and_repeats() {
        let doc = parse(
            br#"<?xml version="1.0" encoding="UTF-8"?><R xmlns="urn:x"><A>1</A><B c="2">t</B><F k="a">u1</F><F k="b">u2</F><E/></R>"#,
            TextEncoding::Utf8,
        )
        .unwrap();
        assert_eq!(doc.root, "R");
        assert_eq!(doc.namespace.as_deref(), Some("urn:x"));
        assert_eq!(
            doc.content.to_json(),
            (json!({"A": "1", "B": {"@c": "2", "#text": "t"}, "F": [{"@k": "a", "#text": "u1"}, {"@k": "b", "#text": "u2"}], "E": ""}))
        );
    }

    #[test]
    fn doctype_and_unknown_entities_are_refused() {
        let laughs = br#"<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaa">]><r>&a;</r>"#;
        assert!(parse(laughs, TextEncoding::Utf8).unwrap_err().contains("DOCTYPE"));
        assert!(parse(b"<r>&a;</r>", TextEncoding::Utf8).unwrap_err().contains("unknown entity"));
    }

    #[test]
    fn refusals_of_well_formed_events_name_where_they_are() {
        let doctype =
            parse(b"<?xml version=\"1.0\"?>\n<!DOCTYPE r>\n<r/>", TextEncoding::Utf8).unwrap_err();
        assert!(doctype.contains("DOCTYPE") && doctype.contains("line 2, column 1"), "{doctype}");
        let entity =
            parse(b"<r>\n  <a>x</a>\n  <b>&nope;</b>\n</r>", TextEncoding::Utf8).unwrap_err();
        assert!(
            entity.contains("unknown entity") && entity.contains("line 3, column 6"),
            "{entity}"
        );
        let second = parse(b"<r/>\n<s/>", TextEncoding::Utf8).unwrap_err();
        assert!(
            second.contains("a second root element") && second.contains("line 2, column 1"),
            "{second}"
        );
    }

    #[test]
    fn mismatched_tags_name_the_position() {
        let err = parse(b"<r>\n  <a>x</b>\n</r>", TextEncoding::Utf8).unwrap_err();
        assert!(err.starts_with("malformed XML:") && err.contains("line 2"), "{err}");
    }

    #[test]
    fn write_then_read_round_trips_with_gbk_references() {
        let content = node(
            json!({"A": "刘䶮 & <x>", "B": {"@c": "q\"", "#text": "t"}, "F": [{"@k": "a", "#text": "u1"}, "u2"], "E": {"@only": "1"}}),
        );
        let bytes = write("R", Some("urn:x"), &content, TextEncoding::Gbk);
        assert!(bytes.windows(8).any(|w| w == b"&#x4DAE;"));
        let doc = parse(&bytes, TextEncoding::Utf8).unwrap();
        assert_eq!(doc.namespace.as_deref(), Some("urn:x"));
        assert_eq!(doc.content.to_json(), content.to_json());
    }

    #[test]
    fn deep_nesting_is_refused() {
        let deep = "<a>".repeat(100) + &"</a>".repeat(100);
        assert!(parse(deep.as_bytes(), TextEncoding::Utf8)
            .unwrap_err()
            .contains("nested too deeply"));
    }
}
