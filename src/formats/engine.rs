//! The generic engine: any [`FormatProfile`], compiled once, read and written in both
//! directions.
//!
//! Reading: bytes → (decode, parse, check the root) → document tree → each field into canonical
//! JSON → the context the document cannot know (the sender) → required fields → the typed
//! model and its rules. Every error on the way is placed at the native field that caused it,
//! using the profile itself to translate a canonical path back into the sender's field name.
//! Writing: typed model → canonical JSON → the code table applied → each field into a native
//! tree → bytes in the format's syntax and encoding.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::encoding::TextEncoding;
use super::field::{
    source_category_path, CodeRow, CodeTable, Field, NativeValue, ReadContext, Scope,
};
use super::profile::{DocumentProfile, FieldMapping, FormatProfile, ReceiptProfile, Syntax};
use super::tree::{text_of, token_of, Node, Path};
use super::{xml, FormatError, ProfileError};
use crate::model::json as canonical;
use crate::model::{
    category, EndpointId, Link, LinkRel, ModelError, PriorHandling, ReasonCode, State,
    StatusUpdate, TransferRequest,
};

/// A format profile compiled for use.
#[derive(Clone, Debug)]
pub struct Format {
    pub name: String,
    pub title: String,
    pub syntax: Syntax,
    pub encoding: TextEncoding,
    pub namespace: Option<String>,
    transfer: Document,
    status: Document,
    receipt: Receipts,
    /// The rows every endpoint of this format shares.
    pub codes: CodeTable,
}

/// Which document a route carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DocumentKind {
    Transfer,
    Status,
}

#[derive(Clone, Debug)]
struct Document {
    root: Option<String>,
    fields: Vec<Field>,
}

/// The kinds of receipt (`formats.md`: success, and the three error kinds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReceiptKind {
    /// The document was taken.
    Success,
    /// The document is bad: syntax, encoding or a field.
    Invalid,
    /// A good document refused: a transition, a permission.
    Refused,
    /// Over a rate limit; try again later.
    Busy,
}

/// What a receipt from an endpoint says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceiptReading {
    pub ok: bool,
    /// Which of the format's receipts it is: the success one, or the error receipt whose fixed
    /// values (`CODE` `1001`, `error.kind` `invalid`) it carries; `None` when it is none of them.
    pub kind: Option<ReceiptKind>,
    pub message: Option<String>,
    pub reference: Option<String>,
}

#[derive(Clone, Debug)]
struct Receipts {
    root: Option<String>,
    success: Node,
    invalid: Node,
    refused: Node,
    busy: Node,
    ok_path: Path,
    ok_value: NativeValue,
    message_path: Option<Path>,
    ref_path: Option<Path>,
    notice_path: Option<Path>,
}

/// What a canonical path may be filled with: the kinds of mapping, and for enumerations the
/// canonical values.
struct Target {
    path: &'static str,
    kinds: &'static [&'static str],
    values: &'static [&'static str],
}

const TEXT: &[&str] = &["text"];
const TIME: &[&str] = &["time"];
const ENUM: &[&str] = &["enum"];
const REGION: &[&str] = &["region", "text"];

/// The canonical fields a transfer document may map (`canonical.md`, "Transfer request").
const TRANSFER_TARGETS: &[Target] = &[
    Target { path: "sender_ref", kinds: TEXT, values: &[] },
    Target { path: "to_platform", kinds: &["text", "enum"], values: &["110", "12345"] },
    Target { path: "to_region", kinds: REGION, values: &[] },
    Target { path: "reason", kinds: TEXT, values: &[] },
    Target { path: "requested_at", kinds: TIME, values: &[] },
    Target { path: "case.origin.local_id", kinds: TEXT, values: &[] },
    Target { path: "case.origin.unit.code", kinds: TEXT, values: &[] },
    Target { path: "case.origin.unit.name", kinds: TEXT, values: &[] },
    Target { path: "case.received_at", kinds: TIME, values: &[] },
    Target { path: "case.caller.name", kinds: TEXT, values: &[] },
    Target { path: "case.caller.phone", kinds: &["phone"], values: &[] },
    Target { path: "case.caller.anonymous", kinds: &["bool"], values: &[] },
    Target { path: "case.location.address", kinds: TEXT, values: &[] },
    Target { path: "case.location.region", kinds: REGION, values: &[] },
    Target { path: "case.location.point", kinds: &["point"], values: &[] },
    Target { path: "case.category", kinds: &["category"], values: &[] },
    Target { path: "case.summary", kinds: TEXT, values: &[] },
    Target {
        path: "case.urgency",
        kinds: &["enum", "flags"],
        values: &["immediate", "urgent", "normal"],
    },
    Target { path: "case.attachments", kinds: &["list"], values: &[] },
];

/// The fields of one attachment, inside the `case.attachments` list.
const ATTACHMENT_TARGETS: &[Target] = &[
    Target { path: "kind", kinds: ENUM, values: &["audio", "image", "video", "document"] },
    Target { path: "uri", kinds: TEXT, values: &[] },
    Target { path: "sha256", kinds: TEXT, values: &[] },
];

/// The canonical fields a status document may map (`canonical.md`, "Status update").
const STATUS_TARGETS: &[Target] = &[
    Target { path: "transfer_ref", kinds: TEXT, values: &[] },
    Target {
        path: "state",
        kinds: ENUM,
        values: &[
            "received",
            "accepted",
            "rejected",
            "in_progress",
            "resolved",
            "closed",
            "cancelled",
        ],
    },
    Target { path: "at", kinds: TIME, values: &[] },
    Target { path: "unit.code", kinds: TEXT, values: &[] },
    Target { path: "unit.name", kinds: TEXT, values: &[] },
    Target { path: "note", kinds: TEXT, values: &[] },
    Target { path: "resolution.result", kinds: TEXT, values: &[] },
    Target { path: "resolution.resolved_at", kinds: TIME, values: &[] },
    Target {
        path: "feedback.satisfaction",
        kinds: ENUM,
        values: &["satisfied", "basically_satisfied", "dissatisfied"],
    },
    Target { path: "feedback.visited_at", kinds: TIME, values: &[] },
];

fn kind_name(mapping: &FieldMapping) -> &'static str {
    match mapping {
        FieldMapping::Text { .. } => "text",
        FieldMapping::Time { .. } => "time",
        FieldMapping::Phone { .. } => "phone",
        FieldMapping::Region { .. } => "region",
        FieldMapping::Enum { .. } => "enum",
        FieldMapping::Bool { .. } => "bool",
        FieldMapping::Point { .. } => "point",
        FieldMapping::Category { .. } => "category",
        FieldMapping::Flags { .. } => "flags",
        FieldMapping::Const { .. } => "const",
        FieldMapping::List { .. } => "list",
    }
}

/// Checks that each mapping fills a canonical field that exists, with a suitable kind and
/// canonical values the model knows.
fn check_targets(
    mappings: &[FieldMapping],
    targets: &[Target],
    key: &str,
) -> Result<(), ProfileError> {
    for (i, mapping) in mappings.iter().enumerate() {
        let at = format!("{key}[{i}]");
        let (canonical, values): (&str, Vec<&str>) = match mapping {
            FieldMapping::Const { .. } => continue,
            FieldMapping::Text { canonical, .. }
            | FieldMapping::Time { canonical, .. }
            | FieldMapping::Phone { canonical, .. }
            | FieldMapping::Region { canonical, .. }
            | FieldMapping::Bool { canonical, .. }
            | FieldMapping::Point { canonical, .. }
            | FieldMapping::Category { canonical, .. }
            | FieldMapping::List { canonical, .. } => (canonical, Vec::new()),
            FieldMapping::Enum { canonical, values, .. } => {
                (canonical, values.iter().map(|(_, c)| c.as_str()).collect())
            }
            FieldMapping::Flags { canonical, flags, otherwise } => {
                let mut v: Vec<&str> = flags.iter().map(|(_, c)| c.as_str()).collect();
                v.push(otherwise);
                (canonical, v)
            }
        };
        let target = targets.iter().find(|t| t.path == canonical).ok_or_else(|| {
            let known: Vec<&str> = targets.iter().map(|t| t.path).collect();
            ProfileError::at(
                format!("{at}.canonical"),
                format!(
                    "unknown canonical field {canonical:?}; expected one of {}",
                    known.join(", ")
                ),
            )
        })?;
        let kind = kind_name(mapping);
        if !target.kinds.contains(&kind) {
            return Err(ProfileError::at(
                format!("{at}.type"),
                format!(
                    "{canonical} is mapped with type {}, got {kind:?}",
                    target.kinds.join(" or ")
                ),
            ));
        }
        if !target.values.is_empty() {
            if let Some(bad) = values.iter().find(|v| !target.values.contains(v)) {
                return Err(ProfileError::at(
                    format!("{at}.values"),
                    format!(
                        "{bad:?} is not a value of {canonical}; expected one of {}",
                        target.values.join(", ")
                    ),
                ));
            }
        }
        if let FieldMapping::List { items, .. } = mapping {
            check_targets(items, ATTACHMENT_TARGETS, &format!("{at}.items"))?;
        }
    }
    Ok(())
}

impl Document {
    fn compile(
        profile: &DocumentProfile,
        syntax: Syntax,
        targets: &[Target],
        key: &str,
    ) -> Result<Document, ProfileError> {
        if syntax == Syntax::Xml && profile.root.is_none() {
            return Err(ProfileError::at(
                format!("{key}.root"),
                "an XML document needs its root element's name",
            ));
        }
        check_targets(&profile.fields, targets, &format!("{key}.fields"))?;
        let fields = profile
            .fields
            .iter()
            .enumerate()
            .map(|(i, m)| {
                Field::compile(m)
                    .map_err(|(k, e)| ProfileError::at(format!("{key}.fields[{i}].{k}"), e))
            })
            .collect::<Result<_, _>>()?;
        Ok(Document { root: profile.root.clone(), fields })
    }

    /// The native field that carries a canonical path, or the canonical path itself.
    fn native_path(&self, canonical_path: &str) -> String {
        self.fields
            .iter()
            .find_map(|f| f.native_path_for(canonical_path, Scope::Document))
            .unwrap_or_else(|| canonical_path.to_string())
    }

    fn place(&self, error: ModelError) -> FormatError {
        FormatError::Field { path: self.native_path(&error.path), problem: error.problem }
    }
}

impl Receipts {
    fn compile(profile: &ReceiptProfile, syntax: Syntax) -> Result<Receipts, ProfileError> {
        if syntax == Syntax::Xml && profile.root.is_none() {
            return Err(ProfileError::at(
                "receipt.root",
                "an XML receipt needs its root element's name",
            ));
        }
        let path = |key: &str, p: &str| {
            Path::parse(p).map_err(|e| ProfileError::at(format!("receipt.{key}"), e))
        };
        Ok(Receipts {
            root: profile.root.clone(),
            success: Node::from_toml_table(&profile.success),
            invalid: Node::from_toml_table(&profile.invalid),
            refused: Node::from_toml_table(&profile.refused),
            busy: Node::from_toml_table(&profile.busy),
            ok_path: path("ok_path", &profile.ok_path)?,
            ok_value: NativeValue::from_toml(&profile.ok_value)
                .map_err(|e| ProfileError::at("receipt.ok_value", e))?,
            message_path: profile
                .message_path
                .as_deref()
                .map(|p| path("message_path", p))
                .transpose()?,
            ref_path: profile.ref_path.as_deref().map(|p| path("ref_path", p)).transpose()?,
            notice_path: profile
                .notice_path
                .as_deref()
                .or(profile.message_path.as_deref())
                .map(|p| path("notice_path", p))
                .transpose()?,
        })
    }
}

/// Replaces `{ref}` and `{message}` in a receipt template; a leaf that is only a placeholder
/// with nothing to put in it is left out.
fn fill(template: &Node, reference: Option<&str>, message: Option<&str>) -> Option<Node> {
    match template {
        Node::String(s) => {
            let whole = |placeholder: &str, value: Option<&str>| {
                (s == placeholder).then(|| value.map(Node::from))
            };
            if let Some(filled) = whole("{ref}", reference).or_else(|| whole("{message}", message))
            {
                return filled;
            }
            Some(Node::String(
                s.replace("{ref}", reference.unwrap_or(""))
                    .replace("{message}", message.unwrap_or("")),
            ))
        }
        Node::Object(entries) => Some(Node::Object(
            entries
                .iter()
                .filter_map(|(k, v)| fill(v, reference, message).map(|v| (k.clone(), v)))
                .collect(),
        )),
        other => Some(other.clone()),
    }
}

/// Whether `tree` carries every fixed (placeholder-free) value of a receipt `template`: how an
/// error receipt's kind is told from another's (`CODE` `1001` against `1002`).
fn carries_fixed_values(template: &Node, tree: &Node) -> bool {
    match template {
        Node::Object(entries) => entries.iter().all(|(key, child)| {
            !has_fixed_values(child)
                || tree.get(key).is_some_and(|value| carries_fixed_values(child, value))
        }),
        Node::String(s) if s.contains('{') => true,
        Node::String(_) | Node::Number(_) | Node::Bool(_) => {
            let expected = token_of(template).ok().flatten();
            expected.is_some() && token_of(tree).ok().flatten() == expected
        }
        Node::Null | Node::Array(_) => true,
    }
}

/// Whether a template part holds any value that is not a placeholder.
fn has_fixed_values(template: &Node) -> bool {
    match template {
        Node::String(s) => !s.contains('{'),
        Node::Object(entries) => entries.iter().any(|(_, child)| has_fixed_values(child)),
        Node::Number(_) | Node::Bool(_) => true,
        Node::Null | Node::Array(_) => false,
    }
}

impl Format {
    /// Compiles a profile, checking everything a profile can get wrong.
    pub fn compile(profile: &FormatProfile) -> Result<Format, ProfileError> {
        if profile.name.trim().is_empty() || profile.name.contains(char::is_whitespace) {
            return Err(ProfileError::at(
                "name",
                format!("expected a name without spaces, got {:?}", profile.name),
            ));
        }
        let encoding = TextEncoding::from_label(&profile.encoding).ok_or_else(|| {
            ProfileError::at(
                "encoding",
                format!("expected utf-8, gbk or gb18030, got {:?}", profile.encoding),
            )
        })?;
        if profile.syntax == Syntax::Json && encoding != TextEncoding::Utf8 {
            return Err(ProfileError::at("encoding", "JSON documents are UTF-8"));
        }
        let mut codes = CodeTable::default();
        for (i, (code, name, canonical_code)) in profile.codes.rows.iter().enumerate() {
            add_row(&mut codes, code, name, canonical_code)
                .map_err(|e| ProfileError::at(format!("codes.rows[{i}]"), e))?;
        }
        for side in ["NP", "PM"] {
            let code = profile.codes.catch_all.get(side).ok_or_else(|| {
                ProfileError::at("codes.catch_all", format!("needs a catch-all code for {side}"))
            })?;
            let row = codes.rows.iter().find(|r| &r.code == code).ok_or_else(|| {
                ProfileError::at(
                    format!("codes.catch_all.{side}"),
                    format!("{code:?} is not a code of the table"),
                )
            })?;
            if !row.canonical.starts_with(side) {
                return Err(ProfileError::at(
                    format!("codes.catch_all.{side}"),
                    format!("{code:?} maps to {}, not to an {side} code", row.canonical),
                ));
            }
            if side == "NP" {
                codes.catch_all_np = code.clone();
            } else {
                codes.catch_all_pm = code.clone();
            }
        }
        if let Some(extra) = profile.codes.catch_all.keys().find(|k| *k != "NP" && *k != "PM") {
            return Err(ProfileError::at(
                format!("codes.catch_all.{extra}"),
                "catch-alls are given for NP and PM only",
            ));
        }
        Ok(Format {
            name: profile.name.clone(),
            title: profile.title.clone(),
            syntax: profile.syntax,
            encoding,
            namespace: profile.namespace.clone(),
            transfer: Document::compile(
                &profile.transfer,
                profile.syntax,
                TRANSFER_TARGETS,
                "transfer",
            )?,
            status: Document::compile(&profile.status, profile.syntax, STATUS_TARGETS, "status")?,
            receipt: Receipts::compile(&profile.receipt, profile.syntax)?,
            codes,
        })
    }

    fn document(&self, kind: DocumentKind) -> &Document {
        match kind {
            DocumentKind::Transfer => &self.transfer,
            DocumentKind::Status => &self.status,
        }
    }

    /// Decodes and parses a native document into its tree, checking the root (XML).
    fn read_tree(&self, bytes: &[u8], root: Option<&str>) -> Result<Node, FormatError> {
        match self.syntax {
            Syntax::Json => {
                let text = self.encoding.decode(bytes).map_err(FormatError::Document)?;
                let tree: Node = serde_json::from_str(&text)
                    .map_err(|e| FormatError::Document(format!("malformed JSON: {e}")))?;
                if !tree.is_object() {
                    return Err(FormatError::Document(
                        "malformed JSON: expected an object at the top level".into(),
                    ));
                }
                Ok(tree)
            }
            Syntax::Xml => {
                let document = xml::parse(bytes, self.encoding).map_err(FormatError::Document)?;
                if let Some(expected) = root {
                    if document.root != expected {
                        return Err(FormatError::Document(format!(
                            "expected root element <{expected}>, got <{}>",
                            document.root
                        )));
                    }
                }
                if let Some(namespace) = &self.namespace {
                    if document.namespace.as_deref() != Some(namespace.as_str()) {
                        return Err(FormatError::Document(format!(
                            "root element <{}> must be in namespace {namespace}, got {}",
                            document.root,
                            document.namespace.as_deref().unwrap_or("none")
                        )));
                    }
                }
                Ok(document.content)
            }
        }
    }

    /// Reads every field of a document into canonical JSON.
    fn read_fields(
        &self,
        kind: DocumentKind,
        bytes: &[u8],
        endpoint: &EndpointId,
        codes: &CodeTable,
    ) -> Result<Value, FormatError> {
        let document = self.document(kind);
        let tree = self.read_tree(bytes, document.root.as_deref())?;
        let ctx = ReadContext { endpoint, codes, xml: self.syntax == Syntax::Xml };
        let mut out = Value::Object(Map::new());
        for field in &document.fields {
            field
                .read(&tree, &ctx, Scope::Document, &mut out)
                .map_err(|(path, problem)| FormatError::Field { path, problem })?;
        }
        Ok(out)
    }

    /// Native transfer document → canonical transfer request.
    pub fn read_transfer(
        &self,
        bytes: &[u8],
        endpoint: &EndpointId,
        codes: &CodeTable,
    ) -> Result<TransferRequest, FormatError> {
        let mut out = self.read_fields(DocumentKind::Transfer, bytes, endpoint, codes)?;
        let from = Value::String(endpoint.to_string());
        canonical::set(&mut out, "from", from.clone());
        canonical::set(&mut out, "case.origin.endpoint", from);
        if let Some(local_id) = canonical::get(&out, "case.origin.local_id").and_then(Value::as_str)
        {
            let case_id = crate::model::Case::id_for(endpoint, local_id);
            canonical::set(&mut out, "case.case_id", Value::String(case_id));
        }
        if canonical::get(&out, "to_platform").is_none() {
            canonical::set(
                &mut out,
                "to_platform",
                Value::String(endpoint.platform.other().as_str().to_string()),
            );
        }
        if let Some(caller) = out.pointer_mut("/case/caller").and_then(Value::as_object_mut) {
            caller.entry("anonymous").or_insert(Value::Bool(false));
        }
        let mut request: TransferRequest = typed(&self.transfer, out, TransferRequest::REQUIRED)?;
        // `linkage.md`: prior handling, an assist's time and reference, and a ruling travel as
        // labelled parts of the reason.
        if let Some(native) = request.reason.take() {
            let parts = crate::model::linkage::split_reason(&native)
                .map_err(|e| self.transfer.place(ModelError::new("reason", e.0)))?;
            request.reason = parts.reason;
            request.prior_handling = parts.prior_actions.map(|actions| PriorHandling {
                by_unit: None,
                at: None,
                actions,
                safe: None,
            });
            request.needed_by = parts.needed_by;
            if let Some(reference) = parts.linked_ref {
                request.links.push(Link { rel: LinkRel::AssistFor, transfer_id: reference });
            }
        }
        request.validate().map_err(|e| self.transfer.place(e))?;
        Ok(request)
    }

    /// Native status document → canonical status update (with `transfer_ref`).
    pub fn read_status(
        &self,
        bytes: &[u8],
        endpoint: &EndpointId,
        codes: &CodeTable,
    ) -> Result<StatusUpdate, FormatError> {
        let mut out = self.read_fields(DocumentKind::Status, bytes, endpoint, codes)?;
        canonical::set(&mut out, "by", Value::String(endpoint.to_string()));
        // `canonical.md`: resolved_at and visited_at equal `at` when the document has no field
        // of its own for them.
        if let Some(at) = canonical::get(&out, "at").cloned() {
            for (parent, child) in [("resolution", "resolved_at"), ("feedback", "visited_at")] {
                if let Some(object) = out.get_mut(parent).and_then(Value::as_object_mut) {
                    object.entry(child).or_insert_with(|| at.clone());
                }
            }
        }
        let mut update: StatusUpdate = typed(&self.status, out, StatusUpdate::REQUIRED)?;
        // `linkage.md`: a rejection's reason travels as a label in front of its note.
        if update.state == State::Rejected {
            if let Some(note) = &update.note {
                let (code, note) = ReasonCode::from_native_note(note);
                let empty = note.is_empty() || note == ReasonCode::UNDELIVERABLE_PREFIX;
                if empty && code != ReasonCode::Other {
                    return Err(self.status.place(ModelError::new(
                        "note",
                        "a rejection's label needs the reason after it",
                    )));
                }
                update.note = Some(note);
                update.reason_code = Some(code);
            }
        }
        // `linkage.md`: an in-progress note 【延期申请】reason至time asks for an extension; one
        // that starts so but does not end in 至 and a time is refused.
        if update.state == State::InProgress {
            if let Some(Err(e)) =
                update.note.as_deref().and_then(crate::model::linkage::read_extension_request)
            {
                return Err(self.status.place(ModelError::new("note", e.0)));
            }
        }
        update.validate().map_err(|e| self.status.place(e))?;
        Ok(update)
    }

    /// Canonical transfer request → native transfer document, with `sender_ref` in the
    /// reference field (the gateway passes its `transfer_id` there for a destination).
    pub fn write_transfer(
        &self,
        request: &TransferRequest,
        codes: &CodeTable,
    ) -> Result<Vec<u8>, FormatError> {
        let mut source =
            serde_json::to_value(request).map_err(|e| FormatError::Document(e.to_string()))?;
        apply_code_table(&self.transfer, &mut source, codes);
        let linked = request.links.iter().find(|l| l.rel == LinkRel::AssistFor);
        let reason = crate::model::linkage::compose_reason(
            request.reason.as_deref(),
            request.prior_handling.as_ref().map(|p| p.actions.as_str()),
            request.needed_by,
            linked.map(|l| l.transfer_id.as_str()),
            request.ruling.as_deref(),
        );
        if let Some(reason) = reason {
            canonical::set(&mut source, "reason", Value::String(reason));
        }
        self.write(DocumentKind::Transfer, &source)
    }

    /// Canonical status update → native status document. The reference field carries
    /// `transfer_ref`, or `transfer_id` when there is no `transfer_ref`.
    pub fn write_status(&self, update: &StatusUpdate) -> Result<Vec<u8>, FormatError> {
        let mut source =
            serde_json::to_value(update).map_err(|e| FormatError::Document(e.to_string()))?;
        if canonical::get(&source, "transfer_ref").is_none() {
            if let Some(id) = canonical::get(&source, "transfer_id").cloned() {
                canonical::set(&mut source, "transfer_ref", id);
            }
        }
        if let (State::Rejected, Some(note)) = (update.state, &update.note) {
            let native = update.reason_code.unwrap_or(ReasonCode::Other).to_native_note(note);
            canonical::set(&mut source, "note", Value::String(native));
        }
        self.write(DocumentKind::Status, &source)
    }

    fn write(&self, kind: DocumentKind, source: &Value) -> Result<Vec<u8>, FormatError> {
        let document = self.document(kind);
        let xml = self.syntax == Syntax::Xml;
        let mut native = Node::Object(Vec::with_capacity(document.fields.len()));
        for field in &document.fields {
            field
                .render(source, xml, &mut native)
                .map_err(|(path, problem)| FormatError::Field { path, problem })?;
        }
        Ok(self.serialize(document.root.as_deref(), &native))
    }

    fn serialize(&self, root: Option<&str>, native: &Node) -> Vec<u8> {
        match self.syntax {
            Syntax::Json => serde_json::to_vec(native).unwrap_or_default(),
            Syntax::Xml => xml::write(
                root.unwrap_or("document"),
                self.namespace.as_deref(),
                native,
                self.encoding,
            ),
        }
    }

    /// A receipt of the given kind; `reference` is the document's own reference when known.
    pub fn write_receipt(
        &self,
        kind: ReceiptKind,
        reference: Option<&str>,
        message: Option<&str>,
    ) -> Vec<u8> {
        let template = match kind {
            ReceiptKind::Success => &self.receipt.success,
            ReceiptKind::Invalid => &self.receipt.invalid,
            ReceiptKind::Refused => &self.receipt.refused,
            ReceiptKind::Busy => &self.receipt.busy,
        };
        let mut native = fill(template, reference, message).unwrap_or(Node::Null);
        if let (ReceiptKind::Success, Some(notice), Some(path)) =
            (kind, message, &self.receipt.notice_path)
        {
            path.set(&mut native, Node::String(notice.to_string()));
        }
        self.serialize(self.receipt.root.as_deref(), &native)
    }

    /// Reads a receipt this format sends (the answer to a delivery).
    pub fn read_receipt(&self, bytes: &[u8]) -> Result<ReceiptReading, FormatError> {
        let tree = self.read_tree(bytes, self.receipt.root.as_deref())?;
        let text = |path: &Option<Path>| {
            path.as_ref().and_then(|p| p.get(&tree)).and_then(|v| text_of(v).ok().flatten())
        };
        let ok = self.receipt.ok_path.get(&tree).and_then(|v| token_of(v).ok().flatten());
        let ok = ok.as_deref() == Some(self.receipt.ok_value.text.as_str());
        let kind = if ok {
            Some(ReceiptKind::Success)
        } else {
            [
                (ReceiptKind::Invalid, &self.receipt.invalid),
                (ReceiptKind::Refused, &self.receipt.refused),
                (ReceiptKind::Busy, &self.receipt.busy),
            ]
            .into_iter()
            .find(|(_, template)| carries_fixed_values(template, &tree))
            .map(|(kind, _)| kind)
        };
        Ok(ReceiptReading {
            ok,
            kind,
            message: text(&self.receipt.message_path),
            reference: text(&self.receipt.ref_path),
        })
    }
}

/// Adds a code-table row after checking it.
pub fn add_row(
    codes: &mut CodeTable,
    code: &str,
    name: &str,
    canonical_code: &str,
) -> Result<(), String> {
    if code.trim().is_empty() || code.trim() != code {
        return Err(format!(
            "a native code must be non-blank without surrounding spaces, got {code:?}"
        ));
    }
    if !category::is_known(canonical_code) {
        return Err(format!("unknown canonical category {canonical_code:?}"));
    }
    if codes.rows.iter().any(|r| r.code == code) {
        return Err(format!("code {code:?} appears twice"));
    }
    codes.rows.push(CodeRow {
        code: code.to_string(),
        name: name.to_string(),
        canonical: canonical_code.to_string(),
    });
    Ok(())
}

/// Rendering a category: the destination's code table decides the native code and name (see
/// [`CodeTable::row_for`]); a
/// canonical code without a row renders as the catch-all, and the summary is prefixed with
/// `【类别：NAME】` and a newline so the destination's desk still sees what it was.
fn apply_code_table(document: &Document, source: &mut Value, codes: &CodeTable) {
    for field in &document.fields {
        let Field::Category { canonical: path, .. } = field else { continue };
        let Some(code) = canonical::get(source, path).and_then(Value::as_str).map(str::to_string)
        else {
            continue;
        };
        let source_path = source_category_path(path);
        let source_code =
            canonical::get(source, &format!("{source_path}.code")).and_then(Value::as_str);
        let Some((row, catch_all)) = codes.row_for(&code, source_code) else { continue };
        if catch_all {
            let name = canonical::get(source, &format!("{source_path}.name"))
                .and_then(Value::as_str)
                .map(str::to_string)
                .or_else(|| category::name_of(&code).map(str::to_string))
                .unwrap_or_default();
            let summary_path = format!("{}summary", path.strip_suffix("category").unwrap_or(""));
            let summary =
                canonical::get(source, &summary_path).and_then(Value::as_str).unwrap_or_default();
            let prefixed = format!("【类别：{name}】\n{summary}");
            canonical::set(source, &summary_path, Value::String(prefixed));
        }
        canonical::set(
            source,
            &source_path,
            serde_json::json!({"code": row.code, "name": row.name}),
        );
    }
}

/// Canonical JSON → the typed model, with errors placed at the native field.
fn typed<T: DeserializeOwned>(
    document: &Document,
    out: Value,
    required: &[&str],
) -> Result<T, FormatError> {
    canonical::decode(out, required).map_err(|e| document.place(e))
}
