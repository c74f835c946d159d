//! The canonical model as protocol buffers (`proto/liandong/v1/`), and lossless conversion
//! between the two.
//!
//! The messages mirror `canonical.md` field for field. Converting model → proto cannot fail;
//! proto → model checks what proto3 cannot express (required messages, enumerations left
//! unspecified, endpoint and region forms) and names the field by its canonical path.

use std::str::FromStr;

use crate::model::{self, ModelError, Timestamp};

/// The generated messages of package `liandong.v1`.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/liandong.v1.rs"));
}

/// The encoded file descriptor set of `proto/`, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/liandong_descriptor.bin"));

fn time_to_proto(t: Timestamp) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: t.unix_seconds(), nanos: 0 }
}

fn time_from_proto(t: Option<prost_types::Timestamp>, path: &str) -> Result<Timestamp, ModelError> {
    let t = t.ok_or_else(|| ModelError::missing(path))?;
    Timestamp::from_unix_seconds(t.seconds)
        .ok_or_else(|| ModelError::new(path, format!("time out of range: {} seconds", t.seconds)))
}

fn parse<T: FromStr<Err = String>>(text: &str, path: &str) -> Result<T, ModelError> {
    text.parse().map_err(|e| ModelError::new(path, e))
}

fn required<T>(value: Option<T>, path: &str) -> Result<T, ModelError> {
    value.ok_or_else(|| ModelError::missing(path))
}

fn unit_to_proto(u: model::Unit) -> v1::Unit {
    v1::Unit { code: u.code, name: u.name }
}

fn unit_from_proto(u: v1::Unit) -> model::Unit {
    model::Unit { code: u.code, name: u.name }
}

pub fn state_to_proto(s: model::State) -> v1::State {
    use model::State as S;
    match s {
        S::Submitted => v1::State::Submitted,
        S::Delivered => v1::State::Delivered,
        S::Received => v1::State::Received,
        S::Accepted => v1::State::Accepted,
        S::Rejected => v1::State::Rejected,
        S::InProgress => v1::State::InProgress,
        S::Resolved => v1::State::Resolved,
        S::Closed => v1::State::Closed,
        S::Cancelled => v1::State::Cancelled,
    }
}

pub fn state_from_proto(value: i32, path: &str) -> Result<model::State, ModelError> {
    use model::State as S;
    Ok(match v1::State::try_from(value) {
        Ok(v1::State::Submitted) => S::Submitted,
        Ok(v1::State::Delivered) => S::Delivered,
        Ok(v1::State::Received) => S::Received,
        Ok(v1::State::Accepted) => S::Accepted,
        Ok(v1::State::Rejected) => S::Rejected,
        Ok(v1::State::InProgress) => S::InProgress,
        Ok(v1::State::Resolved) => S::Resolved,
        Ok(v1::State::Closed) => S::Closed,
        Ok(v1::State::Cancelled) => S::Cancelled,
        _ => return Err(ModelError::new(path, format!("expected a state, got {value}"))),
    })
}

fn satisfaction_from_proto(value: i32, path: &str) -> Result<model::Satisfaction, ModelError> {
    match v1::Satisfaction::try_from(value) {
        Ok(v1::Satisfaction::Satisfied) => Ok(model::Satisfaction::Satisfied),
        Ok(v1::Satisfaction::BasicallySatisfied) => Ok(model::Satisfaction::BasicallySatisfied),
        Ok(v1::Satisfaction::Dissatisfied) => Ok(model::Satisfaction::Dissatisfied),
        _ => Err(ModelError::new(path, format!("expected a satisfaction, got {value}"))),
    }
}

fn satisfaction_to_proto(s: model::Satisfaction) -> v1::Satisfaction {
    match s {
        model::Satisfaction::Satisfied => v1::Satisfaction::Satisfied,
        model::Satisfaction::BasicallySatisfied => v1::Satisfaction::BasicallySatisfied,
        model::Satisfaction::Dissatisfied => v1::Satisfaction::Dissatisfied,
    }
}

fn resolution_to_proto(r: model::Resolution) -> v1::Resolution {
    v1::Resolution {
        result: r.result,
        resolved_at: Some(time_to_proto(r.resolved_at)),
        unit: r.unit.map(unit_to_proto),
    }
}

fn resolution_from_proto(r: v1::Resolution, path: &str) -> Result<model::Resolution, ModelError> {
    Ok(model::Resolution {
        result: r.result,
        resolved_at: time_from_proto(r.resolved_at, &format!("{path}.resolved_at"))?,
        unit: r.unit.map(unit_from_proto),
    })
}

fn feedback_to_proto(f: model::Feedback) -> v1::Feedback {
    v1::Feedback {
        satisfaction: satisfaction_to_proto(f.satisfaction) as i32,
        visited_at: Some(time_to_proto(f.visited_at)),
        note: f.note,
    }
}

fn feedback_from_proto(f: v1::Feedback, path: &str) -> Result<model::Feedback, ModelError> {
    Ok(model::Feedback {
        satisfaction: satisfaction_from_proto(f.satisfaction, &format!("{path}.satisfaction"))?,
        visited_at: time_from_proto(f.visited_at, &format!("{path}.visited_at"))?,
        note: f.note,
    })
}

impl From<model::Case> for v1::Case {
    fn from(c: model::Case) -> Self {
        use model::{AttachmentKind as K, Urgency as U};
        v1::Case {
            case_id: c.case_id,
            origin: Some(v1::Origin {
                endpoint: c.origin.endpoint.to_string(),
                local_id: c.origin.local_id,
                unit: c.origin.unit.map(unit_to_proto),
            }),
            received_at: Some(time_to_proto(c.received_at)),
            caller: c.caller.map(|caller| v1::Caller {
                name: caller.name,
                phone: caller.phone.map(|p| p.as_str().to_string()),
                anonymous: caller.anonymous,
            }),
            location: c.location.map(|l| v1::Location {
                address: l.address,
                region: l.region.map(|r| r.as_str().to_string()),
                point: l.point.map(|p| v1::Point { lat: p.lat, lon: p.lon }),
            }),
            category: c.category.as_str().to_string(),
            source_category: c
                .source_category
                .map(|s| v1::SourceCategory { code: s.code, name: s.name }),
            summary: c.summary,
            urgency: match c.urgency {
                None => v1::Urgency::Unspecified,
                Some(U::Immediate) => v1::Urgency::Immediate,
                Some(U::Urgent) => v1::Urgency::Urgent,
                Some(U::Normal) => v1::Urgency::Normal,
            } as i32,
            attachments: c
                .attachments
                .into_iter()
                .map(|a| v1::Attachment {
                    kind: match a.kind {
                        K::Audio => v1::AttachmentKind::Audio,
                        K::Image => v1::AttachmentKind::Image,
                        K::Video => v1::AttachmentKind::Video,
                        K::Document => v1::AttachmentKind::Document,
                    } as i32,
                    uri: a.uri,
                    sha256: a.sha256,
                })
                .collect(),
        }
    }
}

/// proto → model for a case at `path` (`case`).
pub fn case_from_proto(c: v1::Case, path: &str) -> Result<model::Case, ModelError> {
    use model::{AttachmentKind as K, Urgency as U};
    let origin = required(c.origin, &format!("{path}.origin"))?;
    Ok(model::Case {
        case_id: c.case_id,
        origin: model::Origin {
            endpoint: parse(&origin.endpoint, &format!("{path}.origin.endpoint"))?,
            local_id: origin.local_id,
            unit: origin.unit.map(unit_from_proto),
        },
        received_at: time_from_proto(c.received_at, &format!("{path}.received_at"))?,
        caller: c
            .caller
            .map(|caller| -> Result<_, ModelError> {
                Ok(model::Caller {
                    name: caller.name,
                    phone: caller
                        .phone
                        .map(|p| parse(&p, &format!("{path}.caller.phone")))
                        .transpose()?,
                    anonymous: caller.anonymous,
                })
            })
            .transpose()?,
        location: c
            .location
            .map(|l| -> Result<_, ModelError> {
                Ok(model::Location {
                    address: l.address,
                    region: l
                        .region
                        .map(|r| parse(&r, &format!("{path}.location.region")))
                        .transpose()?,
                    point: l
                        .point
                        .map(|p| {
                            model::Point::new(p.lon, p.lat)
                                .map_err(|e| ModelError::new(format!("{path}.location.point"), e))
                        })
                        .transpose()?,
                })
            })
            .transpose()?,
        category: parse(&c.category, &format!("{path}.category"))?,
        source_category: c
            .source_category
            .map(|s| model::SourceCategory { code: s.code, name: s.name }),
        summary: c.summary,
        urgency: match v1::Urgency::try_from(c.urgency) {
            Ok(v1::Urgency::Unspecified) => None,
            Ok(v1::Urgency::Immediate) => Some(U::Immediate),
            Ok(v1::Urgency::Urgent) => Some(U::Urgent),
            Ok(v1::Urgency::Normal) => Some(U::Normal),
            Err(_) => {
                return Err(ModelError::new(
                    format!("{path}.urgency"),
                    format!("expected an urgency, got {}", c.urgency),
                ))
            }
        },
        attachments: c
            .attachments
            .into_iter()
            .enumerate()
            .map(|(i, a)| {
                let kind = match v1::AttachmentKind::try_from(a.kind) {
                    Ok(v1::AttachmentKind::Audio) => K::Audio,
                    Ok(v1::AttachmentKind::Image) => K::Image,
                    Ok(v1::AttachmentKind::Video) => K::Video,
                    Ok(v1::AttachmentKind::Document) => K::Document,
                    _ => {
                        return Err(ModelError::new(
                            format!("{path}.attachments[{i}].kind"),
                            format!("expected an attachment kind, got {}", a.kind),
                        ))
                    }
                };
                Ok(model::Attachment { kind, uri: a.uri, sha256: a.sha256 })
            })
            .collect::<Result<_, _>>()?,
    })
}

impl From<model::TransferRequest> for v1::TransferRequest {
    fn from(r: model::TransferRequest) -> Self {
        v1::TransferRequest {
            sender_ref: r.sender_ref,
            from: r.from.to_string(),
            to_platform: r.to_platform.as_str().to_string(),
            to_region: r.to_region.map(|x| x.as_str().to_string()),
            reason: r.reason,
            requested_at: Some(time_to_proto(r.requested_at)),
            case: Some(r.case.into()),
            to_unit: r.to_unit.map(unit_to_proto),
            links: links_to_proto(r.links),
            prior_handling: r.prior_handling.map(prior_to_proto),
            needed_by: r.needed_by.map(time_to_proto),
        }
    }
}

impl TryFrom<v1::TransferRequest> for model::TransferRequest {
    type Error = ModelError;
    fn try_from(r: v1::TransferRequest) -> Result<Self, ModelError> {
        Ok(model::TransferRequest {
            sender_ref: r.sender_ref,
            from: parse(&r.from, "from")?,
            to_platform: parse(&r.to_platform, "to_platform")?,
            to_region: r.to_region.map(|x| parse(&x, "to_region")).transpose()?,
            reason: r.reason,
            requested_at: time_from_proto(r.requested_at, "requested_at")?,
            case: case_from_proto(required(r.case, "case")?, "case")?,
            to_unit: r.to_unit.map(unit_from_proto),
            links: links_from_proto(r.links)?,
            prior_handling: r
                .prior_handling
                .map(|p| prior_from_proto(p, "prior_handling"))
                .transpose()?,
            needed_by: r.needed_by.map(|t| time_from_proto(Some(t), "needed_by")).transpose()?,
            ruling: None,
        })
    }
}

impl From<model::StatusUpdate> for v1::StatusUpdate {
    fn from(u: model::StatusUpdate) -> Self {
        v1::StatusUpdate {
            transfer_id: u.transfer_id,
            transfer_ref: u.transfer_ref,
            state: state_to_proto(u.state) as i32,
            at: Some(time_to_proto(u.at)),
            by: u.by.to_string(),
            unit: u.unit.map(unit_to_proto),
            note: u.note,
            resolution: u.resolution.map(resolution_to_proto),
            feedback: u.feedback.map(feedback_to_proto),
            reason_code: u.reason_code.map(|c| c.as_str().to_string()),
        }
    }
}

impl TryFrom<v1::StatusUpdate> for model::StatusUpdate {
    type Error = ModelError;
    fn try_from(u: v1::StatusUpdate) -> Result<Self, ModelError> {
        Ok(model::StatusUpdate {
            transfer_id: u.transfer_id,
            transfer_ref: u.transfer_ref,
            state: state_from_proto(u.state, "state")?,
            at: time_from_proto(u.at, "at")?,
            by: parse(&u.by, "by")?,
            unit: u.unit.map(unit_from_proto),
            note: u.note,
            resolution: u.resolution.map(|r| resolution_from_proto(r, "resolution")).transpose()?,
            feedback: u.feedback.map(|f| feedback_from_proto(f, "feedback")).transpose()?,
            reason_code: u.reason_code.map(|c| parse(&c, "reason_code")).transpose()?,
        })
    }
}

impl From<model::Transfer> for v1::Transfer {
    fn from(t: model::Transfer) -> Self {
        v1::Transfer {
            transfer_id: t.transfer_id,
            case: Some(t.case.into()),
            from: t.from.to_string(),
            to: t.to.to_string(),
            direction: t.direction,
            reason: t.reason,
            requested_at: Some(time_to_proto(t.requested_at)),
            deadlines: Some(v1::Deadlines {
                receive_by: Some(time_to_proto(t.deadlines.receive_by)),
                resolve_by: t.deadlines.resolve_by.map(time_to_proto),
            }),
            state: state_to_proto(t.state) as i32,
            history: t
                .history
                .into_iter()
                .map(|h| v1::HistoryEntry {
                    state: match h.state {
                        model::HistoryEvent::State(s) => state_to_proto(s) as i32,
                        _ => v1::State::Unspecified as i32,
                    },
                    escalated: h.state == model::HistoryEvent::Escalated,
                    routed: h.state == model::HistoryEvent::Routed,
                    event: match h.state {
                        model::HistoryEvent::State(_)
                        | model::HistoryEvent::Escalated
                        | model::HistoryEvent::Routed => String::new(),
                        event => event.as_str().to_string(),
                    },
                    until: h.until.map(time_to_proto),
                    outcome: h.outcome.map(|o| o.as_str().to_string()),
                    at: Some(time_to_proto(h.at)),
                    by: h.by,
                    implied: h.implied,
                    unit: h.unit.map(unit_to_proto),
                    note: h.note,
                    reason_code: h.reason_code.map(|c| c.as_str().to_string()),
                })
                .collect(),
            resolution: t.resolution.map(resolution_to_proto),
            feedback: t.feedback.map(feedback_to_proto),
            overdue: t.overdue,
            links: links_to_proto(t.links),
            prior_handling: t.prior_handling.map(prior_to_proto),
            needed_by: t.needed_by.map(time_to_proto),
            routing_basis: t.routing_basis.map(|b| b.as_str().to_string()),
            dispute: t.dispute.map(dispute_to_proto),
            urges: t.urges,
        }
    }
}

impl TryFrom<v1::Transfer> for model::Transfer {
    type Error = ModelError;
    fn try_from(t: v1::Transfer) -> Result<Self, ModelError> {
        let deadlines = required(t.deadlines, "deadlines")?;
        Ok(model::Transfer {
            transfer_id: t.transfer_id,
            case: case_from_proto(required(t.case, "case")?, "case")?,
            from: parse(&t.from, "from")?,
            to: parse(&t.to, "to")?,
            direction: t.direction,
            reason: t.reason,
            requested_at: time_from_proto(t.requested_at, "requested_at")?,
            deadlines: model::Deadlines {
                receive_by: time_from_proto(deadlines.receive_by, "deadlines.receive_by")?,
                resolve_by: deadlines
                    .resolve_by
                    .map(|r| time_from_proto(Some(r), "deadlines.resolve_by"))
                    .transpose()?,
            },
            state: state_from_proto(t.state, "state")?,
            history: t
                .history
                .into_iter()
                .enumerate()
                .map(|(i, h)| {
                    let path = format!("history[{i}]");
                    Ok(model::HistoryEntry {
                        state: if h.escalated {
                            model::HistoryEvent::Escalated
                        } else if h.routed {
                            model::HistoryEvent::Routed
                        } else if !h.event.is_empty() {
                            parse(&h.event, &format!("{path}.event"))?
                        } else {
                            model::HistoryEvent::State(state_from_proto(
                                h.state,
                                &format!("{path}.state"),
                            )?)
                        },
                        at: time_from_proto(h.at, &format!("{path}.at"))?,
                        by: h.by,
                        implied: h.implied,
                        unit: h.unit.map(unit_from_proto),
                        note: h.note,
                        reason_code: h
                            .reason_code
                            .map(|c| parse(&c, &format!("{path}.reason_code")))
                            .transpose()?,
                        until: h
                            .until
                            .map(|u| time_from_proto(Some(u), &format!("{path}.until")))
                            .transpose()?,
                        outcome: h
                            .outcome
                            .map(|o| parse(&o, &format!("{path}.outcome")))
                            .transpose()?,
                    })
                })
                .collect::<Result<_, ModelError>>()?,
            resolution: t.resolution.map(|r| resolution_from_proto(r, "resolution")).transpose()?,
            feedback: t.feedback.map(|f| feedback_from_proto(f, "feedback")).transpose()?,
            overdue: t.overdue,
            links: links_from_proto(t.links)?,
            prior_handling: t
                .prior_handling
                .map(|p| prior_from_proto(p, "prior_handling"))
                .transpose()?,
            needed_by: t.needed_by.map(|n| time_from_proto(Some(n), "needed_by")).transpose()?,
            routing_basis: t.routing_basis.map(|b| parse(&b, "routing_basis")).transpose()?,
            dispute: t.dispute.map(dispute_from_proto).transpose()?,
            urges: t.urges,
        })
    }
}

fn prior_to_proto(p: model::PriorHandling) -> v1::PriorHandling {
    v1::PriorHandling {
        by_unit: p.by_unit.map(unit_to_proto),
        at: p.at.map(time_to_proto),
        actions: p.actions,
        safe: p.safe,
    }
}

fn prior_from_proto(p: v1::PriorHandling, path: &str) -> Result<model::PriorHandling, ModelError> {
    Ok(model::PriorHandling {
        by_unit: p.by_unit.map(unit_from_proto),
        at: p.at.map(|t| time_from_proto(Some(t), &format!("{path}.at"))).transpose()?,
        actions: p.actions,
        safe: p.safe,
    })
}

fn dispute_to_proto(d: model::Dispute) -> v1::Dispute {
    v1::Dispute {
        opened_at: Some(time_to_proto(d.opened_at)),
        by: d.by,
        note: d.note,
        state: match d.state {
            model::DisputeState::Open => "open",
            model::DisputeState::Decided => "decided",
        }
        .to_string(),
        notes: d
            .notes
            .into_iter()
            .map(|n| v1::DisputeNote {
                at: Some(time_to_proto(n.at)),
                by: n.by,
                note: n.note,
                call_ref: n.call_ref,
            })
            .collect(),
        decision: d.decision.map(|x| v1::DisputeDecision {
            at: Some(time_to_proto(x.at)),
            by: x.by,
            outcome: x.outcome.as_str().to_string(),
            note: x.note,
        }),
    }
}

fn dispute_from_proto(d: v1::Dispute) -> Result<model::Dispute, ModelError> {
    Ok(model::Dispute {
        opened_at: time_from_proto(d.opened_at, "dispute.opened_at")?,
        by: d.by,
        note: d.note,
        state: match d.state.as_str() {
            "open" => model::DisputeState::Open,
            "decided" => model::DisputeState::Decided,
            other => {
                return Err(ModelError::new(
                    "dispute.state",
                    format!("expected open or decided, got {other:?}"),
                ))
            }
        },
        notes: d
            .notes
            .into_iter()
            .enumerate()
            .map(|(i, n)| {
                Ok(model::DisputeNote {
                    at: time_from_proto(n.at, &format!("dispute.notes[{i}].at"))?,
                    by: n.by,
                    note: n.note,
                    call_ref: n.call_ref,
                })
            })
            .collect::<Result<_, ModelError>>()?,
        decision: d
            .decision
            .map(|x| {
                Ok::<_, ModelError>(model::DisputeDecision {
                    at: time_from_proto(x.at, "dispute.decision.at")?,
                    by: x.by,
                    outcome: parse(&x.outcome, "dispute.decision.outcome")?,
                    note: x.note,
                })
            })
            .transpose()?,
    })
}

fn links_to_proto(links: Vec<model::Link>) -> Vec<v1::Link> {
    links
        .into_iter()
        .map(|l| v1::Link { rel: l.rel.as_str().to_string(), transfer_id: l.transfer_id })
        .collect()
}

fn links_from_proto(links: Vec<v1::Link>) -> Result<Vec<model::Link>, ModelError> {
    links
        .into_iter()
        .enumerate()
        .map(|(i, l)| {
            Ok(model::Link {
                rel: parse(&l.rel, &format!("links[{i}].rel"))?,
                transfer_id: l.transfer_id,
            })
        })
        .collect()
}

impl From<model::Record> for v1::Record {
    fn from(r: model::Record) -> Self {
        v1::Record {
            dataset: r.dataset,
            key: r.key,
            owner: r.owner,
            version: r.version,
            updated_at: Some(time_to_proto(r.updated_at)),
            deleted: r.deleted,
            body_json: r.body.to_string(),
        }
    }
}

impl TryFrom<v1::Record> for model::Record {
    type Error = ModelError;
    fn try_from(r: v1::Record) -> Result<Self, ModelError> {
        Ok(model::Record {
            dataset: r.dataset,
            key: r.key,
            owner: r.owner,
            version: r.version,
            updated_at: time_from_proto(r.updated_at, "updated_at")?,
            deleted: r.deleted,
            body: if r.body_json.is_empty() {
                serde_json::Value::Null
            } else {
                serde_json::from_str(&r.body_json)
                    .map_err(|e| ModelError::new("body_json", format!("expected JSON: {e}")))?
            },
        })
    }
}

/// A stored record's JSON straight to protobuf: the body is copied as text, never decoded.
impl TryFrom<&model::RecordDoc> for v1::Record {
    type Error = ModelError;
    fn try_from(doc: &model::RecordDoc) -> Result<Self, ModelError> {
        #[derive(serde::Deserialize)]
        struct Light<'a> {
            dataset: String,
            key: String,
            owner: String,
            version: u64,
            updated_at: Timestamp,
            #[serde(default)]
            deleted: bool,
            #[serde(default, borrow)]
            body: Option<&'a serde_json::value::RawValue>,
        }
        let light: Light<'_> =
            serde_json::from_str(&doc.0).map_err(|e| ModelError::new("record", e.to_string()))?;
        Ok(v1::Record {
            dataset: light.dataset,
            key: light.key,
            owner: light.owner,
            version: light.version,
            updated_at: Some(time_to_proto(light.updated_at)),
            deleted: light.deleted,
            body_json: light
                .body
                .map(|b| b.get().to_string())
                .unwrap_or_else(|| "null".to_string()),
        })
    }
}
