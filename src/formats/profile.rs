//! The profile file: how one native format maps onto the canonical model, as plain data.
//!
//! A profile is a TOML file (`profiles/*.toml` for the six built-in formats; any directory named
//! at run time for more). It names the document syntax and encoding, the document roots, the
//! list of field mappings for transfers and for status documents, the code table and the
//! receipt forms. [`crate::formats::engine`] is the one generic engine that reads any profile in
//! both directions; nothing in Rust knows a particular format. `docs/PROFILES.md` is the guide
//! for people writing profiles; this module is its schema, with `deny_unknown_fields`
//! everywhere so that a misspelt key is an error that names it, not a silent no-op.

use std::collections::BTreeMap;

use serde::Deserialize;

/// One native format (`jjd-json`, `jqxx-xml`, …).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FormatProfile {
    /// The format's name, as endpoints refer to it (`jjd-json`).
    pub name: String,
    /// A line for people: who uses it and what it looks like.
    #[serde(default)]
    pub title: String,
    /// `json` or `xml`.
    pub syntax: Syntax,
    /// The encoding the gateway writes, and assumes for an XML document with no declaration:
    /// `utf-8`, `gbk` or `gb18030`.
    #[serde(default = "default_encoding")]
    pub encoding: String,
    /// XML only: the namespace the root element must be in (and is written with).
    #[serde(default)]
    pub namespace: Option<String>,
    /// The transfer document (a sender hands a case over).
    pub transfer: DocumentProfile,
    /// The status document (回执 / 状态反馈).
    pub status: DocumentProfile,
    /// The synchronous answer to either document.
    pub receipt: ReceiptProfile,
    /// The category code table shared by every endpoint of this format.
    pub codes: CodeTableProfile,
}

fn default_encoding() -> String {
    "utf-8".to_string()
}

/// The syntax of a native document.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Syntax {
    Json,
    Xml,
}

/// One kind of document: its root (XML) and its field mappings, in document order.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DocumentProfile {
    /// XML only: the root element's name.
    #[serde(default)]
    pub root: Option<String>,
    /// How each native field maps to the canonical model; rendering writes them in this order.
    pub fields: Vec<FieldMapping>,
}

/// How one canonical value is found in, and written to, a native document.
///
/// Paths are dotted element or key names relative to the document root, `@name` for an XML
/// attribute (`JQXX.JQLB@DM`), a trailing `[]` for a list (`gd.fj[]`); inside a list item, paths
/// are relative to the item, and the empty path is the item's own text.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum FieldMapping {
    /// Text as it is (trimmed; blank is absent). A JSON number is read as its digits.
    Text { canonical: String, path: String },
    /// A time in one of the native styles.
    Time {
        canonical: String,
        path: String,
        /// Beijing wall-clock time in a layout of `yyyy MM dd HH mm ss` and separators
        /// (`yyyy-MM-dd HH:mm:ss`); or else
        #[serde(default)]
        layout: Option<String>,
        /// `epoch_millis` (an integer, UTC) or `rfc3339` (the offset optional; none = Beijing).
        #[serde(default)]
        style: Option<NamedTimeStyle>,
    },
    /// A telephone number: read into the canonical form, written in the bare national form.
    Phone { canonical: String, path: String },
    /// A region code (GB/T 2260, six digits, or a township's nine). `digits` lists the lengths
    /// the format allows (default both): a reader refuses any other, and a writer given a
    /// township for a six-digit field writes its county (`canonical.md`, regions nest).
    Region {
        canonical: String,
        path: String,
        #[serde(default = "region_digits")]
        digits: Vec<usize>,
    },
    /// One native value per canonical value (urgency, state, satisfaction, attachment kind).
    Enum {
        canonical: String,
        path: String,
        /// What the values are, for error messages (`urgency`, `status code`).
        what: String,
        /// `[native, canonical]` pairs; the native side may be text, a number or a boolean.
        /// Rendering writes the first pair whose canonical value matches.
        values: Vec<(toml::Value, String)>,
    },
    /// A yes/no flag.
    Bool {
        canonical: String,
        path: String,
        /// `[yes, no]` as the native document writes them (`["1", "0"]`, `["是", "否"]`,
        /// `[true, false]`). `true`/`false` are accepted too.
        values: (toml::Value, toml::Value),
    },
    /// A point: two fields (`lon`, `lat`) or one `[lon, lat]` list (`pair`), in a fixed
    /// coordinate system or one named by the document (`system_path`).
    Point {
        canonical: String,
        #[serde(default)]
        lon: Option<String>,
        #[serde(default)]
        lat: Option<String>,
        #[serde(default)]
        pair: Option<String>,
        /// The fixed system: `wgs84`, `gcj02`, `bd09`.
        #[serde(default)]
        system: Option<crate::model::geo::CoordSystem>,
        /// Where the document names its system, and the names it may use.
        #[serde(default)]
        system_path: Option<String>,
        #[serde(default)]
        systems: Vec<(String, crate::model::geo::CoordSystem)>,
        /// With `system_path`: the system the gateway writes.
        #[serde(default)]
        render_system: Option<crate::model::geo::CoordSystem>,
        /// JSON only: write coordinates as `number` (default) or six-decimal `string`.
        #[serde(default)]
        write: NumberStyle,
    },
    /// The category: the native code through the endpoint's code table, and its name.
    Category {
        canonical: String,
        code: String,
        #[serde(default)]
        name: Option<String>,
    },
    /// An ordered set of boolean flags standing for one enumeration (ticket-json's
    /// `lifeThreat`/`urgent`): the first true flag gives its value; `otherwise` when any flag is
    /// present but none is true; absent when no flag is present. Rendering sets a flag true when
    /// the value is that flag's or an earlier (stronger) one's.
    Flags {
        canonical: String,
        /// `[path, canonical value]`, strongest first.
        flags: Vec<(String, String)>,
        otherwise: String,
    },
    /// A fixed native value written whenever the canonical value at `when` is present
    /// (GeoJSON's `"type": "Point"`); ignored when reading.
    Const { path: String, value: toml::Value, when: String },
    /// A list (attachments): each native item maps through `items`.
    List { canonical: String, path: String, items: Vec<FieldMapping> },
}

fn region_digits() -> Vec<usize> {
    vec![6, 9]
}

/// The named native time styles (a layout is the other kind).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NamedTimeStyle {
    EpochMillis,
    Rfc3339,
}

/// How a JSON format writes a coordinate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NumberStyle {
    #[default]
    Number,
    String,
}

/// The receipt forms: native documents with `{ref}` and `{message}` placeholders.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptProfile {
    /// XML only: the root element's name.
    #[serde(default)]
    pub root: Option<String>,
    /// The document was taken.
    pub success: toml::Table,
    /// The document is bad (a field, the syntax or the encoding).
    pub invalid: toml::Table,
    /// The document is good but refused (a transition, a permission).
    pub refused: toml::Table,
    /// Try again later (rate limit).
    pub busy: toml::Table,
    /// Reading a receipt this format sends: the field that says success, and its value.
    pub ok_path: String,
    pub ok_value: toml::Value,
    /// Where a receipt carries its message and reference, when it does.
    #[serde(default)]
    pub message_path: Option<String>,
    #[serde(default)]
    pub ref_path: Option<String>,
    /// Where a success receipt carries a notice for the desk (the destination is unreachable
    /// and whom to phone), when its success template has no message of its own; default
    /// `message_path`.
    #[serde(default)]
    pub notice_path: Option<String>,
}

/// A code table: `[native code, name, canonical code]` rows and the catch-alls.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeTableProfile {
    pub rows: Vec<(String, String, String)>,
    /// The native code used for a canonical code with no row, per side (`NP`, `PM`).
    pub catch_all: BTreeMap<String, String>,
}

/// The endpoint registry file: which endpoints exist and the format each speaks.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointsFile {
    pub endpoint: Vec<EndpointProfile>,
}

/// One endpoint in the registry.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointProfile {
    /// `REGION/PLATFORM`.
    pub id: String,
    /// The place, for people (`宁波 Ningbo`).
    #[serde(default)]
    pub place: String,
    /// The format it speaks (a profile's `name`).
    pub format: String,
    /// Code-table rows this endpoint adds (`[code, name, canonical]`), on this endpoint only.
    #[serde(default)]
    pub extra_codes: Vec<(String, String, String)>,
}
