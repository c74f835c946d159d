//! The canonical case-exchange model (`canonical.md`): the one shape every native format is
//! translated into and rendered out of.
//!
//! Types here serialise to exactly the JSON the contract shows: its field names, absent fields
//! omitted, times as RFC 3339 in Beijing time, points as WGS-84 with six decimals. Values that
//! have a canonical form (times, phones, regions, endpoints, categories) are newtypes that
//! cannot hold anything else; the rules that span fields live in the `validate` methods, whose
//! errors name the field by its dotted canonical path so that the format layer can translate
//! that path back to the sender's own field name.

pub mod category;
pub mod digest;
pub mod geo;
pub mod json;
pub mod lifecycle;
pub mod linkage;
pub mod phone;
pub mod time;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use time::Timestamp;

/// A rule of the model that a value breaks, at a dotted canonical path (`case.caller.phone`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {problem}")]
pub struct ModelError {
    /// Where: the canonical field, dotted (`case.summary`, `case.attachments[0].uri`).
    pub path: String,
    /// What is wrong, as a person reads it.
    pub problem: String,
}

impl ModelError {
    pub fn new(path: impl Into<String>, problem: impl Into<String>) -> Self {
        ModelError { path: path.into(), problem: problem.into() }
    }

    /// The message for a required field that is absent or blank.
    pub fn missing(path: impl Into<String>) -> Self {
        ModelError::new(path, MISSING)
    }
}

/// The problem text for a required field that is absent or blank.
pub const MISSING: &str = "required field is missing or empty";

/// The two kinds of platform the gateway links.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Platform {
    /// 110 报警服务台, the police alarm desk.
    Police,
    /// 12345 政务服务便民热线, the government service hotline.
    Hotline,
}

impl Platform {
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Police => "110",
            Platform::Hotline => "12345",
        }
    }

    /// The platform a transfer from this one goes to.
    pub fn other(self) -> Platform {
        match self {
            Platform::Police => Platform::Hotline,
            Platform::Hotline => Platform::Police,
        }
    }
}

impl FromStr for Platform {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "110" => Ok(Platform::Police),
            "12345" => Ok(Platform::Hotline),
            _ => Err(format!("expected platform 110 or 12345, got {s:?}")),
        }
    }
}

/// A GB/T 2260 division code: six digits, or nine for a township (six + three).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Region(String);

impl Region {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The six-digit county (or city, or province) part.
    pub fn county(&self) -> &str {
        &self.0[..6]
    }
}

impl FromStr for Region {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if (s.len() == 6 || s.len() == 9) && s.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Region(s.to_string()))
        } else {
            Err(format!("expected a six- or nine-digit region code, got {s:?}"))
        }
    }
}

/// An endpoint: the platform instance of a province or city, `REGION/PLATFORM` (`330200/110`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndpointId {
    /// The six-digit code of the province or city the platform serves.
    pub region: String,
    pub platform: Platform,
}

impl EndpointId {
    /// The same place's endpoint of the other platform.
    pub fn counterpart(&self) -> EndpointId {
        EndpointId { region: self.region.clone(), platform: self.platform.other() }
    }
}

impl fmt::Display for EndpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.region, self.platform.as_str())
    }
}

impl FromStr for EndpointId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let fail = || format!("expected an endpoint REGION/PLATFORM such as 330200/110, got {s:?}");
        let (region, platform) = s.split_once('/').ok_or_else(fail)?;
        if region.len() != 6 || !region.bytes().all(|b| b.is_ascii_digit()) {
            return Err(fail());
        }
        Ok(EndpointId {
            region: region.to_string(),
            platform: platform.parse().map_err(|_| fail())?,
        })
    }
}

/// A canonical category code from the taxonomy (`NP07`, `PM02`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CategoryCode(String);

impl CategoryCode {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for CategoryCode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if category::is_known(s) {
            Ok(CategoryCode(s.to_string()))
        } else {
            Err(format!(
                "unknown canonical category {s:?}; expected NP01–NP10, NP99, PM01–PM08 or PM99"
            ))
        }
    }
}

/// A telephone number in canonical form (`+8613900000001`, `+8657487654321`, `12345`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Phone(String);

impl Phone {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Phone {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        phone::normalize(s).map(Phone).map_err(|e| e.to_string())
    }
}

/// Implements string serde for the newtypes above through `FromStr` and `as_str`/`Display`.
macro_rules! string_serde {
    ($ty:ty, $to_string:expr) => {
        impl Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                #[allow(clippy::redundant_closure_call)]
                serializer.collect_str(&($to_string)(self))
            }
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                text.trim().parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

string_serde!(Platform, |p: &Platform| p.as_str());
string_serde!(Region, |r: &Region| r.0.clone());
string_serde!(EndpointId, |e: &EndpointId| e.to_string());
string_serde!(CategoryCode, |c: &CategoryCode| c.0.clone());
string_serde!(Phone, |p: &Phone| p.0.clone());

/// A point in WGS-84 degrees, kept to six decimals.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Point {
    pub lat: f64,
    pub lon: f64,
}

impl Point {
    /// A WGS-84 point, rounded to six decimals, if the degrees are on the globe.
    pub fn new(lon: f64, lat: f64) -> Result<Point, String> {
        if !lon.is_finite() || !(-180.0..=180.0).contains(&lon) {
            return Err(format!("longitude out of range: {lon}"));
        }
        if !lat.is_finite() || !(-90.0..=90.0).contains(&lat) {
            return Err(format!("latitude out of range: {lat}"));
        }
        Ok(Point { lat: geo::round6(lat), lon: geo::round6(lon) })
    }
}

/// A unit: a police station, a department, a hotline (code and name as the platform gives them).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Unit {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// The endpoint that opened the case, and its own record of it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Origin {
    pub endpoint: EndpointId,
    /// The origin's own record number (接警单编号, 工单编号).
    pub local_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<Unit>,
}

/// Who called. `anonymous` (匿名/保密) means the caller asked not to be named to the other side.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Caller {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<Phone>,
    #[serde(default)]
    pub anonymous: bool,
}

/// Where it happened.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Location {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<Region>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub point: Option<Point>,
}

/// The native category exactly as received.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceCategory {
    pub code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// How fast the case must be handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Urgency {
    /// Life or safety at risk now.
    Immediate,
    Urgent,
    Normal,
}

/// What an attachment holds. The gateway carries references, never the media.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttachmentKind {
    Audio,
    Image,
    Video,
    Document,
}

/// A reference to a recording, photo, video or document held by the origin.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attachment {
    pub kind: AttachmentKind,
    pub uri: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// The case a desk hands over (警情 / 工单).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// `PLATFORM:REGION:LOCAL_ID`.
    pub case_id: String,
    pub origin: Origin,
    pub received_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller: Option<Caller>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    pub category: CategoryCode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_category: Option<SourceCategory>,
    pub summary: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urgency: Option<Urgency>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attachment>,
}

impl Case {
    /// The `case_id` of an origin's record: `PLATFORM:REGION:LOCAL_ID`.
    pub fn id_for(origin: &EndpointId, local_id: &str) -> String {
        format!("{}:{}:{}", origin.platform.as_str(), origin.region, local_id)
    }
}

/// What a sender submits (a native transfer document translates to this).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferRequest {
    /// The sender's own reference: its idempotency key.
    pub sender_ref: String,
    /// The endpoint that sent it (from its certificate, never from the document).
    pub from: EndpointId,
    pub to_platform: Platform,
    /// The destination region, when the document names one; otherwise routing decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_region: Option<Region>,
    /// 转办说明.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub requested_at: Timestamp,
    pub case: Case,
    /// The handling unit routing chose at the destination (three-tier routing), for formats
    /// that have a field for it. Never read from a sender's document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_unit: Option<Unit>,
    /// Other transfers of the same case this one relates to (`canonical.md`, `links`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<Link>,
    /// What the origin did before handing over (先处理后移交, `linkage.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prior_handling: Option<PriorHandling>,
    /// When help must be on the scene: assist transfers (PM10/NP11) only (`linkage.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub needed_by: Option<Timestamp>,
    /// The linkage office's decision note when an overruled transfer is delivered again
    /// (【会商裁定】). Set by the gateway for the destination; never read from a sender.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ruling: Option<String>,
}

/// What the origin already did before handing over (先处理后移交, `linkage.md`). A native
/// reader gets only `actions` (from the reason's 【先期处置】 part).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriorHandling {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by_unit: Option<Unit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<Timestamp>,
    pub actions: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safe: Option<bool>,
}

/// Why a transfer went where it went (`linkage.md`, "Routing basis").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoutingBasis {
    /// On the origin's transfer-item list (分流转办事项清单) for this direction.
    Catalogue,
    /// The two platforms agreed on it, after a dispute.
    Negotiated,
    /// No agreement: the first receiver keeps it (首接负责).
    FirstReceiver,
    /// 110 acted first because life, property or public safety was at risk.
    SafetyFirst,
}

impl FromStr for RoutingBasis {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [
            RoutingBasis::Catalogue,
            RoutingBasis::Negotiated,
            RoutingBasis::FirstReceiver,
            RoutingBasis::SafetyFirst,
        ]
        .into_iter()
        .find(|b| b.as_str() == s)
        .ok_or_else(|| {
            format!(
                "unknown routing_basis {s:?}; expected catalogue, negotiated, first_receiver or safety_first"
            )
        })
    }
}

impl RoutingBasis {
    pub fn as_str(self) -> &'static str {
        match self {
            RoutingBasis::Catalogue => "catalogue",
            RoutingBasis::Negotiated => "negotiated",
            RoutingBasis::FirstReceiver => "first_receiver",
            RoutingBasis::SafetyFirst => "safety_first",
        }
    }
}

/// A jurisdiction dispute over a rejection (职责争议, `linkage.md`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dispute {
    pub opened_at: Timestamp,
    pub by: String,
    pub note: String,
    pub state: DisputeState,
    #[serde(default)]
    pub notes: Vec<DisputeNote>,
    #[serde(default)]
    pub decision: Option<DisputeDecision>,
}

/// Whether a dispute waits for its decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DisputeState {
    Open,
    Decided,
}

/// A consultation note (会商意见); `call_ref` names a three-way call's recording.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisputeNote {
    pub at: Timestamp,
    pub by: String,
    pub note: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_ref: Option<String>,
}

/// How a dispute was decided.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisputeDecision {
    pub at: Timestamp,
    pub by: String,
    pub outcome: DisputeOutcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A dispute's outcome (`linkage.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DisputeOutcome {
    /// The rejection stands (维持退回).
    Upheld,
    /// The transfer goes back to its destination.
    Overruled,
    /// No agreement: the origin keeps the case (首接办理).
    FirstReceiver,
}

impl DisputeOutcome {
    pub const ALL: [DisputeOutcome; 3] =
        [DisputeOutcome::Upheld, DisputeOutcome::Overruled, DisputeOutcome::FirstReceiver];

    pub fn as_str(self) -> &'static str {
        match self {
            DisputeOutcome::Upheld => "upheld",
            DisputeOutcome::Overruled => "overruled",
            DisputeOutcome::FirstReceiver => "first_receiver",
        }
    }
}

impl FromStr for DisputeOutcome {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        DisputeOutcome::ALL.into_iter().find(|o| o.as_str() == s).ok_or_else(|| {
            format!("unknown outcome {s:?}; expected upheld, overruled or first_receiver")
        })
    }
}

/// The lifecycle of a transfer (`canonical.md`, "States").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// 已提交: stored durably by the gateway.
    Submitted,
    /// 已送达: the destination's system confirmed receipt.
    Delivered,
    /// 已签收: a person or unit at the destination signed for it.
    Received,
    /// 已受理: the destination takes responsibility.
    Accepted,
    /// 已退回: handed back with a reason; terminal.
    Rejected,
    /// 办理中: work under way.
    InProgress,
    /// 已办结: done.
    Resolved,
    /// 已回访: the caller was called back; terminal.
    Closed,
    /// 已撤回: withdrawn by the origin; terminal.
    Cancelled,
}

impl State {
    pub const ALL: [State; 9] = [
        State::Submitted,
        State::Delivered,
        State::Received,
        State::Accepted,
        State::Rejected,
        State::InProgress,
        State::Resolved,
        State::Closed,
        State::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Submitted => "submitted",
            State::Delivered => "delivered",
            State::Received => "received",
            State::Accepted => "accepted",
            State::Rejected => "rejected",
            State::InProgress => "in_progress",
            State::Resolved => "resolved",
            State::Closed => "closed",
            State::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for State {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        State::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| format!("unknown state {s:?}"))
    }
}

/// 回访 satisfaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Satisfaction {
    Satisfied,
    BasicallySatisfied,
    Dissatisfied,
}

/// How the destination resolved the case (with `resolved`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resolution {
    pub result: String,
    pub resolved_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<Unit>,
}

/// The origin's call-back to the citizen (with `closed`, or a reopen).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Feedback {
    pub satisfaction: Satisfaction,
    pub visited_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A status update (回执 / 状态反馈). Translated from a native document it names the transfer
/// by `transfer_ref`; once the gateway has looked the reference up, by `transfer_id`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer_ref: Option<String>,
    pub state: State,
    pub at: Timestamp,
    /// The endpoint that sent it.
    pub by: EndpointId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<Unit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<Resolution>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feedback: Option<Feedback>,
    /// Why a transfer was rejected (`linkage.md`, "Rejection reasons"); only with `rejected`,
    /// where it defaults to `other`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason_code: Option<ReasonCode>,
}

/// Why a destination handed a transfer back (`linkage.md`, "Rejection reasons"). Native
/// documents carry it as a label in front of the note.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasonCode {
    /// 非职责范围: not this platform's matter.
    OutOfScope,
    /// 非本辖区: another region's matter.
    WrongRegion,
    /// 重复: already transferred or handled.
    Duplicate,
    /// 信息不全: cannot act on what was sent.
    InsufficientInformation,
    /// 无法送达: the gateway could not deliver it (set by the gateway only).
    Undeliverable,
    /// Anything else.
    Other,
}

impl ReasonCode {
    pub const ALL: [ReasonCode; 6] = [
        ReasonCode::OutOfScope,
        ReasonCode::WrongRegion,
        ReasonCode::Duplicate,
        ReasonCode::InsufficientInformation,
        ReasonCode::Undeliverable,
        ReasonCode::Other,
    ];

    /// Every code with its native label (`other` has none).
    pub const LABELS: [(ReasonCode, &'static str); 5] = [
        (ReasonCode::OutOfScope, "【非职责范围】"),
        (ReasonCode::WrongRegion, "【非本辖区】"),
        (ReasonCode::Duplicate, "【重复】"),
        (ReasonCode::InsufficientInformation, "【信息不全】"),
        (ReasonCode::Undeliverable, "【无法送达】"),
    ];

    /// The canonical note of an undeliverable rejection begins with this.
    pub const UNDELIVERABLE_PREFIX: &'static str = "undeliverable:";

    pub fn as_str(self) -> &'static str {
        match self {
            ReasonCode::OutOfScope => "out_of_scope",
            ReasonCode::WrongRegion => "wrong_region",
            ReasonCode::Duplicate => "duplicate",
            ReasonCode::InsufficientInformation => "insufficient_information",
            ReasonCode::Undeliverable => "undeliverable",
            ReasonCode::Other => "other",
        }
    }

    /// A native rejection note → (code, canonical note): a leading label is taken off into the
    /// code (none: `other`); `【无法送达】X` reads back as `undeliverable: X`.
    pub fn from_native_note(note: &str) -> (ReasonCode, String) {
        let note = note.trim();
        for (code, label) in ReasonCode::LABELS {
            if let Some(rest) = note.strip_prefix(label) {
                let rest = rest.trim();
                if code == ReasonCode::Undeliverable {
                    return (
                        code,
                        format!("{} {rest}", ReasonCode::UNDELIVERABLE_PREFIX)
                            .trim_end()
                            .to_string(),
                    );
                }
                return (code, rest.to_string());
            }
        }
        (ReasonCode::Other, note.to_string())
    }

    /// A canonical rejection note → the native note: the code's label, then the note.
    pub fn to_native_note(self, note: &str) -> String {
        let label = ReasonCode::LABELS.iter().find(|(c, _)| *c == self).map(|(_, l)| *l);
        match label {
            None => note.to_string(),
            Some(label) if self == ReasonCode::Undeliverable => {
                let rest =
                    note.strip_prefix(ReasonCode::UNDELIVERABLE_PREFIX).unwrap_or(note).trim();
                format!("{label}{rest}")
            }
            Some(label) => format!("{label}{note}"),
        }
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ReasonCode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        ReasonCode::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| format!("unknown reason_code {s:?}"))
    }
}

/// How a transfer relates to another transfer of the same case (`canonical.md`, `links`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkRel {
    /// Sent after the linked transfer was rejected (re-routing, 改派).
    ReroutedFrom,
    /// Asks for help on site with the linked transfer (`linkage.md`).
    AssistFor,
    /// Any other relation.
    Related,
}

impl LinkRel {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkRel::ReroutedFrom => "rerouted_from",
            LinkRel::AssistFor => "assist_for",
            LinkRel::Related => "related",
        }
    }
}

impl FromStr for LinkRel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [LinkRel::ReroutedFrom, LinkRel::AssistFor, LinkRel::Related]
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                format!("unknown link rel {s:?}; expected rerouted_from, assist_for or related")
            })
    }
}

/// One link from a transfer to another.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Link {
    pub rel: LinkRel,
    pub transfer_id: String,
}

/// The deadlines of a transfer (`canonical.md`, "Deadlines").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deadlines {
    pub receive_by: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolve_by: Option<Timestamp>,
}

/// What a history entry records: a state, or an event that is not a state — an escalation
/// (超时督办), or the routing decision (分流: the handling unit the directory chose).
/// The linkage events (`linkage.md`) are entries of this kind too: an urge, an extension asked,
/// granted or refused, a dispute opened, noted or decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HistoryEvent {
    State(State),
    Escalated,
    Routed,
    Urged,
    ExtensionRequested,
    ExtensionGranted,
    ExtensionRefused,
    DisputeOpened,
    DisputeNoted,
    DisputeDecided,
}

impl HistoryEvent {
    /// Every event that is not a state.
    pub const EVENTS: [HistoryEvent; 9] = [
        HistoryEvent::Escalated,
        HistoryEvent::Routed,
        HistoryEvent::Urged,
        HistoryEvent::ExtensionRequested,
        HistoryEvent::ExtensionGranted,
        HistoryEvent::ExtensionRefused,
        HistoryEvent::DisputeOpened,
        HistoryEvent::DisputeNoted,
        HistoryEvent::DisputeDecided,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HistoryEvent::State(state) => state.as_str(),
            HistoryEvent::Escalated => "escalated",
            HistoryEvent::Routed => "routed",
            HistoryEvent::Urged => "urged",
            HistoryEvent::ExtensionRequested => "extension_requested",
            HistoryEvent::ExtensionGranted => "extension_granted",
            HistoryEvent::ExtensionRefused => "extension_refused",
            HistoryEvent::DisputeOpened => "dispute_opened",
            HistoryEvent::DisputeNoted => "dispute_noted",
            HistoryEvent::DisputeDecided => "dispute_decided",
        }
    }
}

impl FromStr for HistoryEvent {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match HistoryEvent::EVENTS.into_iter().find(|e| e.as_str() == s) {
            Some(event) => Ok(event),
            None => s.parse().map(HistoryEvent::State),
        }
    }
}

string_serde!(HistoryEvent, |e: &HistoryEvent| e.as_str());

/// One entry of a transfer's history. `by` is an endpoint or `gateway`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryEntry {
    pub state: HistoryEvent,
    pub at: Timestamp,
    pub by: String,
    /// A state skipped over by a forward move, recorded for completeness.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub implied: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<Unit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// With `rejected`: why (`linkage.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason_code: Option<ReasonCode>,
    /// With `extension_requested` and `extension_granted`: the new `resolve_by`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<Timestamp>,
    /// With `dispute_decided`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<DisputeOutcome>,
}

impl HistoryEntry {
    /// An entry of `state` at `at` by `by`, with nothing else.
    pub fn new(state: HistoryEvent, at: Timestamp, by: impl Into<String>) -> HistoryEntry {
        HistoryEntry {
            state,
            at,
            by: by.into(),
            implied: false,
            unit: None,
            note: None,
            reason_code: None,
            until: None,
            outcome: None,
        }
    }
}

/// A transfer (分流转办) as the gateway keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transfer {
    /// A ULID assigned by the gateway.
    pub transfer_id: String,
    pub case: Case,
    pub from: EndpointId,
    pub to: EndpointId,
    /// `110->12345` or `12345->110`.
    pub direction: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub requested_at: Timestamp,
    pub deadlines: Deadlines,
    pub state: State,
    pub history: Vec<HistoryEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<Resolution>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feedback: Option<Feedback>,
    #[serde(default)]
    pub overdue: bool,
    /// Other transfers of the same case this one relates to (`canonical.md`, `links`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<Link>,
    /// What the origin did before handing over (`linkage.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prior_handling: Option<PriorHandling>,
    /// When help must be on the scene (assists only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub needed_by: Option<Timestamp>,
    /// Why it went where it went; absent when its category is on no list (`linkage.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing_basis: Option<RoutingBasis>,
    /// A jurisdiction dispute over its rejection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispute: Option<Dispute>,
    /// How many times it was urged (催办).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub urges: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Transfer {
    /// Whether the transfer lies in the region `prefix` (`33`, `3302`, `330203`): its origin's,
    /// its destination's or its case location's region begins with it. An agency's grant and a
    /// figure's region filter both read regions this way.
    pub fn lies_in(&self, prefix: &str) -> bool {
        let location =
            self.case.location.as_ref().and_then(|l| l.region.as_ref()).map(|r| r.as_str());
        [Some(self.from.region.as_str()), Some(self.to.region.as_str()), location]
            .into_iter()
            .flatten()
            .any(|place| place.starts_with(prefix))
    }

    /// Whether the gateway gave the transfer up as undeliverable (rejected by the gateway with
    /// `reason_code` `undeliverable`, `canonical.md`).
    pub fn undeliverable(&self) -> bool {
        self.state == State::Rejected
            && self
                .history
                .iter()
                .rev()
                .find(|h| h.state == HistoryEvent::State(State::Rejected))
                .is_some_and(|h| h.reason_code == Some(ReasonCode::Undeliverable))
    }

    /// The transfer as a request addressed to its destination: the destination's document
    /// carries the gateway's `transfer_id` in its reference field (`formats.md`).
    pub fn for_destination(&self) -> TransferRequest {
        TransferRequest {
            sender_ref: self.transfer_id.clone(),
            from: self.from.clone(),
            to_platform: self.to.platform,
            to_region: None,
            reason: self.reason.clone(),
            requested_at: self.requested_at,
            case: self.case.clone(),
            to_unit: self
                .history
                .iter()
                .find(|h| h.state == HistoryEvent::Routed)
                .and_then(|h| h.unit.clone()),
            links: self.links.clone(),
            prior_handling: self.prior_handling.clone(),
            needed_by: self.needed_by,
            ruling: None,
        }
    }

    /// The canonical fields a transfer must have.
    pub const REQUIRED: &'static [&'static str] =
        &["transfer_id", "from", "to", "requested_at", "case", "deadlines", "state"];

    /// The direction text for a transfer between two platforms.
    pub fn direction_of(from: Platform, to: Platform) -> String {
        format!("{}->{}", from.as_str(), to.as_str())
    }
}

/// A record of a shared dataset (数据共享).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub dataset: String,
    pub key: String,
    pub owner: String,
    pub version: u64,
    pub updated_at: Timestamp,
    #[serde(default)]
    pub deleted: bool,
    #[serde(default)]
    pub body: serde_json::Value,
}

/// A record as the store keeps it: its canonical JSON. Feeds pass it on as it is — to JSON
/// answers verbatim, to protobuf without building the body's tree — because decoding and
/// re-encoding every body is most of the cost of a follower's catch-up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordDoc(pub String);

impl RecordDoc {
    pub fn from_record(record: &Record) -> RecordDoc {
        RecordDoc(serde_json::to_string(record).unwrap_or_default())
    }

    /// The record, decoded.
    pub fn record(&self) -> Result<Record, serde_json::Error> {
        serde_json::from_str(&self.0)
    }
}

impl Serialize for RecordDoc {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let raw = serde_json::value::RawValue::from_string(self.0.clone())
            .map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

/// Trims text; blank is absent (`canonical.md`, "Text").
fn tidy(text: &mut Option<String>) {
    if let Some(t) = text {
        let trimmed = t.trim();
        if trimmed.is_empty() {
            *text = None;
        } else if trimmed.len() != t.len() {
            *text = Some(trimmed.to_string());
        }
    }
}

/// Trims a required text and refuses it when blank.
fn require(text: &mut String, path: &str) -> Result<(), ModelError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(ModelError::missing(path));
    }
    if trimmed.len() != text.len() {
        *text = trimmed.to_string();
    }
    Ok(())
}

impl Unit {
    fn tidy(unit: &mut Option<Unit>) {
        if let Some(u) = unit {
            tidy(&mut u.code);
            tidy(&mut u.name);
            if u.code.is_none() && u.name.is_none() {
                *unit = None;
            }
        }
    }
}

impl Case {
    /// Trims texts, drops empty parts, and checks the required fields.
    pub fn validate(&mut self, path: &str) -> Result<(), ModelError> {
        require(&mut self.case_id, &format!("{path}.case_id"))?;
        require(&mut self.origin.local_id, &format!("{path}.origin.local_id"))?;
        Unit::tidy(&mut self.origin.unit);
        require(&mut self.summary, &format!("{path}.summary"))?;
        if let Some(caller) = &mut self.caller {
            tidy(&mut caller.name);
        }
        if let Some(location) = &mut self.location {
            tidy(&mut location.address);
            if location.address.is_none() && location.region.is_none() && location.point.is_none() {
                self.location = None;
            }
        }
        if let Some(source) = &mut self.source_category {
            tidy(&mut source.name);
            if source.code.trim().is_empty() {
                return Err(ModelError::missing(format!("{path}.source_category.code")));
            }
        }
        for (i, attachment) in self.attachments.iter_mut().enumerate() {
            require(&mut attachment.uri, &format!("{path}.attachments[{i}].uri"))?;
            let mut sha = attachment.sha256.take();
            tidy(&mut sha);
            attachment.sha256 = sha;
        }
        Ok(())
    }
}

impl TransferRequest {
    /// The canonical fields a transfer request must have (after trimming).
    pub const REQUIRED: &'static [&'static str] = &[
        "sender_ref",
        "requested_at",
        "case.origin.local_id",
        "case.received_at",
        "case.category",
        "case.summary",
    ];

    /// Trims texts, drops empty parts and checks the rules that span fields.
    pub fn validate(&mut self) -> Result<(), ModelError> {
        require(&mut self.sender_ref, "sender_ref")?;
        tidy(&mut self.reason);
        if self.to_platform == self.from.platform {
            return Err(ModelError::new(
                "to_platform",
                format!(
                    "a transfer goes to the other platform: {} sends to {}, got {}",
                    self.from.platform.as_str(),
                    self.from.platform.other().as_str(),
                    self.to_platform.as_str()
                ),
            ));
        }
        self.case.validate("case")?;
        if let Some(prior) = &mut self.prior_handling {
            require(&mut prior.actions, "prior_handling.actions")?;
            Unit::tidy(&mut prior.by_unit);
        }
        // `linkage.md`: needed_by and the assist_for link are required on PM10/NP11 transfers
        // and refused on any other.
        let assist = category::is_assist(self.case.category.as_str());
        let assist_links = self.links.iter().filter(|l| l.rel == LinkRel::AssistFor).count();
        match (assist, self.needed_by.is_some(), assist_links) {
            (true, false, _) => Err(ModelError::new(
                "needed_by",
                "required on an assist (PM10/NP11): when help must be on the scene",
            )),
            (true, true, 0) => Err(ModelError::new(
                "links",
                "an assist (PM10/NP11) names the transfer it helps with: rel assist_for",
            )),
            (true, true, 1) | (false, false, 0) => Ok(()),
            (true, true, _) => {
                Err(ModelError::new("links", "an assist helps with one transfer: one assist_for"))
            }
            (false, true, _) => Err(ModelError::new(
                "needed_by",
                format!("only an assist (PM10/NP11) has one, not {}", self.case.category.as_str()),
            )),
            (false, false, _) => Err(ModelError::new(
                "links",
                format!(
                    "assist_for only on an assist (PM10/NP11), not {}",
                    self.case.category.as_str()
                ),
            )),
        }
    }
}

impl StatusUpdate {
    /// The canonical fields a status update must have (after trimming).
    pub const REQUIRED: &'static [&'static str] = &["transfer_ref", "state", "at"];

    /// Trims texts, fills the times a native document has no field for, and checks the rules
    /// that depend on the state (`canonical.md`, "States").
    pub fn validate(&mut self) -> Result<(), ModelError> {
        tidy(&mut self.transfer_id);
        tidy(&mut self.transfer_ref);
        if self.transfer_id.is_none() && self.transfer_ref.is_none() {
            return Err(ModelError::missing("transfer_ref"));
        }
        Unit::tidy(&mut self.unit);
        tidy(&mut self.note);
        if let Some(resolution) = &mut self.resolution {
            require(&mut resolution.result, "resolution.result")?;
            Unit::tidy(&mut resolution.unit);
        }
        if let Some(feedback) = &mut self.feedback {
            tidy(&mut feedback.note);
        }
        let required_for =
            |path: &str| ModelError::new(path, format!("required for state {}", self.state));
        match (self.state, self.reason_code) {
            (State::Rejected, None) => self.reason_code = Some(ReasonCode::Other),
            (State::Rejected, Some(_)) => {}
            (state, Some(code)) => {
                return Err(ModelError::new(
                    "reason_code",
                    format!("only a rejected update has one, got {code} with {state}"),
                ))
            }
            (_, None) => {}
        }
        match self.state {
            State::Rejected | State::Cancelled if self.note.is_none() => Err(required_for("note")),
            State::Resolved if self.resolution.is_none() => Err(required_for("resolution.result")),
            State::Closed if self.feedback.is_none() => Err(required_for("feedback.satisfaction")),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_ids_parse_and_print() {
        let e: EndpointId = "330200/110".parse().unwrap();
        assert_eq!(e.to_string(), "330200/110");
        assert_eq!(e.counterpart().to_string(), "330200/12345");
        for bad in ["330200", "33020/110", "330200/119", "3302001/110", "abcdef/110"] {
            assert!(bad.parse::<EndpointId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn status_rules_name_the_field() {
        let mut update: StatusUpdate = serde_json::from_value(serde_json::json!({
            "transfer_ref": "X", "state": "rejected", "at": "2023-05-08T09:50:00+08:00",
            "by": "330200/12345", "note": "  "
        }))
        .unwrap();
        let err = update.validate().unwrap_err();
        assert_eq!(err.to_string(), "note: required for state rejected");
    }

    #[test]
    fn a_transfer_to_the_same_platform_is_refused() {
        let mut request: TransferRequest = serde_json::from_value(serde_json::json!({
            "sender_ref": "R1", "from": "330200/110", "to_platform": "110",
            "requested_at": "2023-05-08T09:43:00+08:00",
            "case": {"case_id": "110:330200:J1", "origin": {"endpoint": "330200/110", "local_id": "J1"},
                     "received_at": "2023-05-08T09:41:09+08:00", "category": "NP07", "summary": "s"}
        }))
        .unwrap();
        assert_eq!(request.validate().unwrap_err().path, "to_platform");
    }
}
