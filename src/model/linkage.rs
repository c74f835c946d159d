//! Linkage beyond a transfer (`linkage.md`): jurisdiction disputes, urges, deadline extensions,
//! and the labels that carry them — and prior handling and assists — in native notes and
//! reasons, as pure functions beside [`super::lifecycle`].
//!
//! An action changes a transfer's `dispute`, `urges`, deadlines or (overruled) state, appends
//! its history entry, and says which desk is told what; the store carries that out in one
//! commit, so that every replica and both stores apply the same rules.

use super::lifecycle::{self, DeadlineRule, Refusal};
use super::{
    Deadlines, Dispute, DisputeDecision, DisputeNote, DisputeOutcome, DisputeState, HistoryEntry,
    HistoryEvent, ReasonCode, RoutingBasis, State, Timestamp, Transfer,
};

/// Who acts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Party {
    /// The transfer's origin.
    Origin,
    /// Its destination.
    Destination,
    /// A linkage office (联动办) whose regions cover the transfer, with `decide_disputes`.
    Office,
    /// The gateway, when a default fires.
    Gateway,
}

/// An actor: its part and the name written in `by` (an endpoint, an office's identity URI,
/// `gateway`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actor {
    pub party: Party,
    pub name: String,
}

/// A linkage action on one transfer.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// 催办: the origin or the office presses for progress.
    Urge { note: String },
    /// 延期申请: the destination asks to move `resolve_by` to `until`.
    RequestExtension { until: Timestamp, reason: String },
    /// The origin or the office grants (`resolve_by` moves) or refuses the pending request.
    DecideExtension { grant: bool, note: Option<String> },
    /// The origin disputes an `out_of_scope` rejection.
    OpenDispute { note: String },
    /// A consultation note on an open dispute; `call_ref` names a three-way call's recording.
    NoteDispute { note: String, call_ref: Option<String> },
    /// The office decides (any outcome), the destination withdraws its rejection
    /// (`overruled`), or the gateway's default fires (`first_receiver`).
    DecideDispute { outcome: DisputeOutcome, note: Option<String> },
}

impl Action {
    /// Trims its texts, drops blank optional ones, and refuses a blank required one, naming it
    /// (`note`, `reason`) — for every front alike.
    pub fn validate(&mut self) -> Result<(), super::ModelError> {
        match self {
            Action::Urge { note } | Action::OpenDispute { note } => super::require(note, "note"),
            Action::RequestExtension { reason, .. } => super::require(reason, "reason"),
            Action::DecideExtension { note, .. } | Action::DecideDispute { note, .. } => {
                super::tidy(note);
                Ok(())
            }
            Action::NoteDispute { note, call_ref } => {
                super::tidy(call_ref);
                super::require(note, "note")
            }
        }
    }

    /// The action's name, as routes, audit entries and errors say it.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Urge { .. } => "urge",
            Action::RequestExtension { .. } => "extension request",
            Action::DecideExtension { .. } => "extension decision",
            Action::OpenDispute { .. } => "dispute",
            Action::NoteDispute { .. } => "dispute note",
            Action::DecideDispute { .. } => "dispute decision",
        }
    }
}

/// The linkage defaults (`linkage.md`), configurable per site (`[linkage]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// How long after a rejection the origin may dispute it, and how long a dispute may stay
    /// open before the first-receiver rule decides it (seconds; default 24 h).
    pub dispute_within: i64,
    /// The least time between two urges of one transfer (seconds; default 1 h).
    pub urge_interval: i64,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings { dispute_within: 24 * 3600, urge_interval: 3600 }
    }
}

/// A status notice for one desk: the transfer's current state with a labelled note.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    /// `Origin` or `Destination`.
    pub to: Party,
    pub note: String,
}

/// What an action did, for the store to carry out in the same commit.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Effect {
    pub entries: Vec<HistoryEntry>,
    pub notices: Vec<Notice>,
    /// Overruled: deliver the transfer to its destination again (with 【会商裁定】).
    pub redeliver: bool,
    /// The dispute's default is due at this time (opened) — or no longer (decided: `Some(None)`).
    pub dispute_timer: Option<Option<Timestamp>>,
    /// An extension request waits until `resolve_by` (asked) — or no longer (answered).
    pub extension_timer: Option<Option<Timestamp>>,
}

/// Applies `action` by `actor` at `at` to `transfer`; on refusal the transfer is unchanged.
/// `rule` gives the fresh deadlines of an overruled transfer.
pub fn apply(
    transfer: &mut Transfer,
    action: &Action,
    actor: &Actor,
    at: Timestamp,
    settings: &Settings,
    rule: DeadlineRule,
) -> Result<Effect, Refusal> {
    let current = transfer.state;
    let refuse = |reason: String| Refusal { current, reason };
    let may = |allowed: &[Party]| {
        if allowed.contains(&actor.party) {
            Ok(())
        } else {
            let names: Vec<&str> = allowed
                .iter()
                .map(|p| match p {
                    Party::Origin => "the origin",
                    Party::Destination => "the destination",
                    Party::Office => "the linkage office",
                    Party::Gateway => "the gateway",
                })
                .collect();
            Err(refuse(format!("a {} may be made only by {}", action.name(), names.join(" or "))))
        }
    };
    // The same action by the same actor, already applied (a client's retry after a lost
    // answer): success, and nothing changes — nothing doubled.
    if is_repeat(transfer, action, actor, at, settings) {
        return Ok(Effect::default());
    }
    let mut effect = Effect::default();
    let entry = |event: HistoryEvent, note: Option<String>| {
        let mut e = HistoryEntry::new(event, at, actor.name.clone());
        e.note = note;
        e
    };
    match action {
        Action::Urge { note } => {
            may(&[Party::Origin, Party::Office])?;
            if lifecycle::is_terminal(current) || current == State::Resolved {
                return Err(refuse(format!("only an open transfer is urged, not a {current} one")));
            }
            let last = transfer.history.iter().rev().find(|h| h.state == HistoryEvent::Urged);
            if let Some(last) = last {
                let next = last.at.plus_seconds(settings.urge_interval);
                if at < next {
                    return Err(refuse(format!(
                        "urged at {}; the next urge is allowed from {} (urge_interval {} s)",
                        last.at.to_rfc3339(),
                        next.to_rfc3339(),
                        settings.urge_interval
                    )));
                }
            }
            transfer.urges += 1;
            effect.entries.push(entry(HistoryEvent::Urged, Some(note.clone())));
            effect.notices.push(Notice { to: Party::Destination, note: urge_note(note) });
        }
        Action::RequestExtension { until, reason } => {
            may(&[Party::Destination])?;
            if lifecycle::is_terminal(current) || current == State::Resolved {
                return Err(refuse(format!(
                    "only an open transfer is extended, not a {current} one"
                )));
            }
            let Some(resolve_by) = transfer.deadlines.resolve_by else {
                return Err(refuse("the transfer has no resolve_by to extend".into()));
            };
            if at > resolve_by {
                return Err(refuse(format!(
                    "an extension is asked before resolve_by passes; it passed at {}",
                    resolve_by.to_rfc3339()
                )));
            }
            if *until <= resolve_by {
                return Err(refuse(format!(
                    "until: expected a time after resolve_by {}, got {}",
                    resolve_by.to_rfc3339(),
                    until.to_rfc3339()
                )));
            }
            if let Some(pending) = pending_extension(transfer) {
                return Err(refuse(format!(
                    "an extension to {} asked at {} awaits its answer",
                    pending.until.map(|u| u.to_rfc3339()).unwrap_or_default(),
                    pending.at.to_rfc3339()
                )));
            }
            let mut e = entry(HistoryEvent::ExtensionRequested, Some(reason.clone()));
            e.until = Some(*until);
            effect.entries.push(e);
            effect.extension_timer = Some(Some(resolve_by));
            effect
                .notices
                .push(Notice { to: Party::Origin, note: extension_request_note(reason, *until) });
        }
        Action::DecideExtension { grant, note } => {
            may(&[Party::Origin, Party::Office])?;
            let Some(until) = pending_extension(transfer).map(|p| p.until) else {
                return Err(refuse("no extension request awaits an answer".into()));
            };
            effect.extension_timer = Some(None);
            if *grant {
                let until = until.unwrap_or(at);
                transfer.deadlines.resolve_by = Some(until);
                let mut e = entry(HistoryEvent::ExtensionGranted, note.clone());
                e.until = Some(until);
                effect.entries.push(e);
                effect.notices.push(Notice {
                    to: Party::Destination,
                    note: format!("{}{}", labels::EXTENSION_GRANTED, label_time(until)),
                });
            } else {
                effect.entries.push(entry(HistoryEvent::ExtensionRefused, note.clone()));
                effect.notices.push(Notice {
                    to: Party::Destination,
                    note: format!("{}{}", labels::EXTENSION_REFUSED, note.as_deref().unwrap_or("")),
                });
            }
        }
        Action::OpenDispute { note } => {
            may(&[Party::Origin])?;
            if transfer.dispute.is_some() {
                return Err(refuse("the transfer was disputed before; one dispute each".into()));
            }
            let rejection = last_rejection(transfer)
                .filter(|_| current == State::Rejected)
                .ok_or_else(|| refuse("only a rejected transfer is disputed".into()))?;
            if rejection.reason_code != Some(ReasonCode::OutOfScope) {
                return Err(refuse(format!(
                    "only a rejection out_of_scope is disputed, not {}",
                    rejection.reason_code.unwrap_or(ReasonCode::Other)
                )));
            }
            let last_day = rejection.at.plus_seconds(settings.dispute_within);
            if at > last_day {
                return Err(refuse(format!(
                    "a rejection is disputed within dispute_within ({} s) of it: until {}",
                    settings.dispute_within,
                    last_day.to_rfc3339()
                )));
            }
            transfer.dispute = Some(Dispute {
                opened_at: at,
                by: actor.name.clone(),
                note: note.clone(),
                state: DisputeState::Open,
                notes: Vec::new(),
                decision: None,
            });
            effect.entries.push(entry(HistoryEvent::DisputeOpened, Some(note.clone())));
            effect.dispute_timer = Some(Some(at.plus_seconds(settings.dispute_within)));
        }
        Action::NoteDispute { note, call_ref } => {
            may(&[Party::Origin, Party::Destination, Party::Office])?;
            let dispute = open_dispute(transfer).ok_or_else(|| refuse("no open dispute".into()))?;
            dispute.notes.push(DisputeNote {
                at,
                by: actor.name.clone(),
                note: note.clone(),
                call_ref: call_ref.clone(),
            });
            effect.entries.push(entry(HistoryEvent::DisputeNoted, Some(note.clone())));
        }
        Action::DecideDispute { outcome, note } => {
            match (actor.party, outcome) {
                (Party::Office, _)
                | (Party::Destination, DisputeOutcome::Overruled)
                | (Party::Gateway, DisputeOutcome::FirstReceiver) => {}
                (Party::Destination, _) => return Err(refuse(
                    "the destination decides only by withdrawing its rejection: outcome overruled"
                        .into(),
                )),
                _ => may(&[Party::Office, Party::Destination])?,
            }
            let dispute = open_dispute(transfer).ok_or_else(|| refuse("no open dispute".into()))?;
            dispute.state = DisputeState::Decided;
            dispute.decision = Some(DisputeDecision {
                at,
                by: actor.name.clone(),
                outcome: *outcome,
                note: note.clone(),
            });
            let mut e = entry(HistoryEvent::DisputeDecided, note.clone());
            e.outcome = Some(*outcome);
            effect.entries.push(e);
            effect.dispute_timer = Some(None);
            match outcome {
                DisputeOutcome::Overruled => {
                    // The one transition out of `rejected`: back to the destination, with
                    // fresh deadlines from the decision.
                    transfer.state = State::Delivered;
                    transfer.routing_basis = Some(RoutingBasis::Negotiated);
                    transfer.overdue = false;
                    transfer.deadlines = Deadlines {
                        receive_by: at.plus_seconds(rule.receive_within),
                        resolve_by: rule.resolve_within.map(|s| at.plus_seconds(s)),
                    };
                    let mut delivered =
                        HistoryEntry::new(HistoryEvent::State(State::Delivered), at, "gateway");
                    delivered.note = Some(labels::RULING.to_string());
                    effect.entries.push(delivered);
                    effect.redeliver = true;
                }
                DisputeOutcome::Upheld | DisputeOutcome::FirstReceiver => {
                    if *outcome == DisputeOutcome::FirstReceiver {
                        transfer.routing_basis = Some(RoutingBasis::FirstReceiver);
                    }
                    let note = outcome_note(*outcome, note.as_deref());
                    for to in [Party::Origin, Party::Destination] {
                        effect.notices.push(Notice { to, note: note.clone() });
                    }
                }
            }
        }
    }
    transfer.history.extend(effect.entries.iter().cloned());
    Ok(effect)
}

/// Whether `action` by `actor` is the last such action already applied: the dispute this
/// actor opened with this note, its last note, the decision it made, its urge or extension
/// request still standing, its answer to the last request.
/// An urge is a repeat only within `urge_interval` of the last (after it, it is a new urge).
pub fn is_repeat(
    transfer: &Transfer,
    action: &Action,
    actor: &Actor,
    at: Timestamp,
    settings: &Settings,
) -> bool {
    let by = actor.name.as_str();
    let dispute = transfer.dispute.as_ref();
    let last = |event: HistoryEvent| transfer.history.iter().rev().find(|h| h.state == event);
    match action {
        Action::OpenDispute { note } => dispute.is_some_and(|d| d.by == by && d.note == *note),
        Action::NoteDispute { note, call_ref } => dispute
            .and_then(|d| d.notes.last())
            .is_some_and(|n| n.by == by && n.note == *note && n.call_ref == *call_ref),
        Action::DecideDispute { outcome, note } => dispute
            .and_then(|d| d.decision.as_ref())
            .is_some_and(|d| d.by == by && d.outcome == *outcome && d.note == *note),
        Action::Urge { note } => last(HistoryEvent::Urged).is_some_and(|h| {
            h.by == by
                && h.note.as_deref() == Some(note.as_str())
                && at < h.at.plus_seconds(settings.urge_interval)
        }),
        Action::RequestExtension { until, reason } => {
            pending_extension(transfer).is_some_and(|h| {
                h.by == by && h.until == Some(*until) && h.note.as_deref() == Some(reason.as_str())
            })
        }
        Action::DecideExtension { grant, note } => {
            let answered = transfer.history.iter().rev().find(|h| {
                matches!(
                    h.state,
                    HistoryEvent::ExtensionGranted
                        | HistoryEvent::ExtensionRefused
                        | HistoryEvent::ExtensionRequested
                )
            });
            let event = if *grant {
                HistoryEvent::ExtensionGranted
            } else {
                HistoryEvent::ExtensionRefused
            };
            answered.is_some_and(|h| h.state == event && h.by == by && h.note == *note)
        }
    }
}

/// The last rejection entry of a transfer.
fn last_rejection(transfer: &Transfer) -> Option<&HistoryEntry> {
    transfer.history.iter().rev().find(|h| h.state == HistoryEvent::State(State::Rejected))
}

fn open_dispute(transfer: &mut Transfer) -> Option<&mut Dispute> {
    transfer.dispute.as_mut().filter(|d| d.state == DisputeState::Open)
}

/// The extension request awaiting an answer, if any: the last request not followed by a
/// grant or a refusal.
pub fn pending_extension(transfer: &Transfer) -> Option<&HistoryEntry> {
    for h in transfer.history.iter().rev() {
        match h.state {
            HistoryEvent::ExtensionGranted | HistoryEvent::ExtensionRefused => return None,
            HistoryEvent::ExtensionRequested => return Some(h),
            _ => {}
        }
    }
    None
}

/// The refusal the gateway records when `resolve_by` passes with a request undecided.
pub fn lapse_extension(transfer: &Transfer, at: Timestamp) -> Option<HistoryEntry> {
    pending_extension(transfer)?;
    let mut e = HistoryEntry::new(HistoryEvent::ExtensionRefused, at, "gateway");
    e.note = Some("resolve_by passed undecided".to_string());
    Some(e)
}

/// The history of the transfer's current round: everything after an overruling sent it to
/// its destination again (deadlines are met and missed anew from there).
pub fn current_round(history: &[HistoryEntry]) -> &[HistoryEntry] {
    let start = history
        .iter()
        .rposition(|h| {
            h.state == HistoryEvent::DisputeDecided && h.outcome == Some(DisputeOutcome::Overruled)
        })
        .map_or(0, |i| i + 1);
    &history[start..]
}

/// The native labels of `linkage.md`, "Native forms, exactly".
pub mod labels {
    pub const PRIOR_HANDLING: &str = "【先期处置】";
    pub const NEEDED_BY: &str = "【需到场时间】";
    pub const LINKED_REF: &str = "【关联单号】";
    pub const RULING: &str = "【会商裁定】";
    pub const URGE: &str = "【催办】";
    pub const OUTCOME: &str = "【会商结果】";
    pub const EXTENSION_REQUEST: &str = "【延期申请】";
    pub const EXTENSION_GRANTED: &str = "【延期批准】";
    pub const EXTENSION_REFUSED: &str = "【延期驳回】";
    /// Every label a transfer document's reason may carry.
    pub const REASON: [&str; 4] = [PRIOR_HANDLING, NEEDED_BY, LINKED_REF, RULING];
}

/// The layout of times in labels: Beijing time to the minute.
const LABEL_TIME: &str = "yyyy-MM-dd HH:mm";

/// A time as a label writes it (Beijing, seconds dropped).
pub fn label_time(at: Timestamp) -> String {
    at.format_beijing(LABEL_TIME)
}

/// A time as a label reads it (`:00` seconds), if it is one.
pub fn parse_label_time(text: &str) -> Option<Timestamp> {
    Timestamp::parse_beijing(text.trim(), LABEL_TIME).ok()
}

/// The note of an urge notice.
pub fn urge_note(note: &str) -> String {
    format!("{}{}", labels::URGE, note)
}

/// The note of an extension request (and of the origin's copy of it).
pub fn extension_request_note(reason: &str, until: Timestamp) -> String {
    format!("{}{}至{}", labels::EXTENSION_REQUEST, reason, label_time(until))
}

/// The note of a dispute outcome's notice: 【会商结果】维持退回：note.
pub fn outcome_note(outcome: DisputeOutcome, note: Option<&str>) -> String {
    let name = match outcome {
        DisputeOutcome::Upheld => "维持退回",
        DisputeOutcome::FirstReceiver => "首接办理",
        DisputeOutcome::Overruled => "改判重派",
    };
    match note.map(str::trim).filter(|n| !n.is_empty()) {
        Some(note) => format!("{}{name}：{note}", labels::OUTCOME),
        None => format!("{}{name}", labels::OUTCOME),
    }
}

/// Why a native label was refused: the problem, for the native field that carried it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelError(pub String);

/// An in-progress note that asks for an extension natively: 【延期申请】reason至YYYY-MM-DD HH:mm.
/// `None` when the note is not one; an error when it starts with the label but is malformed.
pub fn read_extension_request(note: &str) -> Option<Result<(String, Timestamp), LabelError>> {
    let rest = note.trim().strip_prefix(labels::EXTENSION_REQUEST)?;
    let rest = rest.trim();
    let chars: Vec<char> = rest.chars().collect();
    let parsed = (chars.len() >= 17).then(|| {
        let time: String = chars[chars.len() - 16..].iter().collect();
        let head: String = chars[..chars.len() - 16].iter().collect();
        (head, time)
    });
    Some(match parsed {
        Some((head, time)) if head.ends_with('至') => {
            let reason = head.trim_end_matches('至').trim().to_string();
            match parse_label_time(&time) {
                Some(until) if !reason.is_empty() => Ok((reason, until)),
                Some(_) => Err(LabelError(format!(
                    "{} needs a reason before 至",
                    labels::EXTENSION_REQUEST
                ))),
                None => Err(LabelError(format!(
                    "{} must end with 至 and a time yyyy-MM-dd HH:mm, got {time:?}",
                    labels::EXTENSION_REQUEST
                ))),
            }
        }
        _ => Err(LabelError(format!(
            "{} must end with 至 and a time yyyy-MM-dd HH:mm",
            labels::EXTENSION_REQUEST
        ))),
    })
}

/// A native transfer reason split at its labels (each at most once, in any order).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReasonParts {
    /// The text before the first label.
    pub reason: Option<String>,
    pub prior_actions: Option<String>,
    pub needed_by: Option<Timestamp>,
    pub linked_ref: Option<String>,
}

/// Splits a native reason at the labels: the text before the first is the reason; the ruling's
/// part is for people and is dropped. A required part left empty, a label twice, or a
/// `needed_by` that is not a label time is refused.
pub fn split_reason(native: &str) -> Result<ReasonParts, LabelError> {
    let mut found: Vec<(usize, &str)> = Vec::new();
    for label in labels::REASON {
        let mut hits = native.match_indices(label);
        if let Some((at, _)) = hits.next() {
            if hits.next().is_some() {
                return Err(LabelError(format!("{label} appears more than once")));
            }
            found.push((at, label));
        }
    }
    found.sort();
    let mut parts = ReasonParts::default();
    let head = &native[..found.first().map_or(native.len(), |f| f.0)];
    parts.reason = Some(head.trim().to_string()).filter(|r| !r.is_empty());
    for (i, (at, label)) in found.iter().enumerate() {
        let end = found.get(i + 1).map_or(native.len(), |f| f.0);
        let text = native[at + label.len()..end].trim();
        let required = |what: &str| {
            if text.is_empty() {
                Err(LabelError(format!("{label} needs {what} after it")))
            } else {
                Ok(text.to_string())
            }
        };
        match *label {
            labels::PRIOR_HANDLING => parts.prior_actions = Some(required("what was done")?),
            labels::NEEDED_BY => {
                let text = required("a time")?;
                parts.needed_by = Some(parse_label_time(&text).ok_or_else(|| {
                    LabelError(format!(
                        "{label} must be followed by a time yyyy-MM-dd HH:mm, got {text:?}"
                    ))
                })?);
            }
            labels::LINKED_REF => parts.linked_ref = Some(required("a reference")?),
            _ => {}
        }
    }
    Ok(parts)
}

/// A transfer's reason as a native document carries it: the reason, then prior handling, then
/// an assist's time and reference, then a ruling.
pub fn compose_reason(
    reason: Option<&str>,
    prior_actions: Option<&str>,
    needed_by: Option<Timestamp>,
    linked_ref: Option<&str>,
    ruling: Option<&str>,
) -> Option<String> {
    let mut text = reason.unwrap_or_default().to_string();
    if let Some(actions) = prior_actions {
        text.push_str(labels::PRIOR_HANDLING);
        text.push_str(actions);
    }
    if let Some(needed_by) = needed_by {
        text.push_str(labels::NEEDED_BY);
        text.push_str(&label_time(needed_by));
    }
    if let Some(reference) = linked_ref {
        text.push_str(labels::LINKED_REF);
        text.push_str(reference);
    }
    if let Some(ruling) = ruling {
        text.push_str(labels::RULING);
        text.push_str(ruling);
    }
    (!text.is_empty()).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(text: &str) -> Timestamp {
        Timestamp::parse_rfc3339(text, false).unwrap()
    }

    fn rejected(reason: ReasonCode) -> Transfer {
        serde_json::from_value(json!({
            "transfer_id": "T1",
            "case": {"case_id": "110:330200:J1", "origin": {"endpoint": "330200/110", "local_id": "J1"},
                     "received_at": "2023-05-08T09:41:09+08:00", "category": "NP05", "summary": "开锁"},
            "from": "330200/110", "to": "330200/12345", "direction": "110->12345",
            "requested_at": "2023-05-08T09:43:00+08:00",
            "deadlines": {"receive_by": "2023-05-08T10:13:00+08:00", "resolve_by": "2023-05-11T09:43:00+08:00"},
            "state": "rejected",
            "history": [
                {"state": "submitted", "at": "2023-05-08T09:43:00+08:00", "by": "330200/110"},
                {"state": "delivered", "at": "2023-05-08T09:43:01+08:00", "by": "gateway"},
                {"state": "received", "at": "2023-05-08T09:45:00+08:00", "by": "330200/12345"},
                {"state": "rejected", "at": "2023-05-08T09:50:00+08:00", "by": "330200/12345",
                 "note": "开锁属公安", "reason_code": reason.as_str()}
            ]
        }))
        .unwrap()
    }

    fn actor(party: Party) -> Actor {
        let name = match party {
            Party::Origin => "330200/110",
            Party::Destination => "330200/12345",
            Party::Office => "liandong://office/nb",
            Party::Gateway => "gateway",
        };
        Actor { party, name: name.into() }
    }

    const RULE: DeadlineRule =
        DeadlineRule { receive_within: 1800, resolve_within: Some(72 * 3600) };

    #[test]
    fn a_dispute_is_opened_noted_and_overruled_back_to_the_destination() {
        let mut t = rejected(ReasonCode::OutOfScope);
        let s = Settings::default();
        let open = Action::OpenDispute { note: "开锁属12345服务".into() };
        let opened_at = at("2023-05-08T10:00:00+08:00");
        let e = apply(&mut t, &open, &actor(Party::Origin), opened_at, &s, RULE).unwrap();
        assert_eq!(e.dispute_timer, Some(Some(opened_at.plus_seconds(24 * 3600))));
        assert_eq!(t.dispute.as_ref().unwrap().state, DisputeState::Open);
        let other = Action::OpenDispute { note: "再议".into() };
        assert!(apply(&mut t, &other, &actor(Party::Origin), opened_at, &s, RULE).is_err(), "once");
        let note =
            Action::NoteDispute { note: "三方通话".into(), call_ref: Some("REC-1".into()) };
        apply(&mut t, &note, &actor(Party::Destination), opened_at, &s, RULE).unwrap();
        assert_eq!(t.dispute.as_ref().unwrap().notes[0].call_ref.as_deref(), Some("REC-1"));
        // the origin cannot decide; the destination only by withdrawing
        let upheld = Action::DecideDispute { outcome: DisputeOutcome::Upheld, note: None };
        assert!(apply(&mut t, &upheld, &actor(Party::Origin), opened_at, &s, RULE).is_err());
        assert!(apply(&mut t, &upheld, &actor(Party::Destination), opened_at, &s, RULE).is_err());
        let decided_at = at("2023-05-08T11:00:00+08:00");
        let overrule = Action::DecideDispute {
            outcome: DisputeOutcome::Overruled,
            note: Some("属12345".into()),
        };
        let e = apply(&mut t, &overrule, &actor(Party::Office), decided_at, &s, RULE).unwrap();
        assert!(e.redeliver);
        assert_eq!(t.state, State::Delivered);
        assert_eq!(t.routing_basis, Some(RoutingBasis::Negotiated));
        assert_eq!(t.deadlines.receive_by, decided_at.plus_seconds(1800));
        assert_eq!(current_round(&t.history).len(), 1, "the round starts after the decision");
        let retried = apply(&mut t, &overrule, &actor(Party::Office), decided_at, &s, RULE);
        assert_eq!(retried.unwrap(), Effect::default(), "the same decision again: a repeat");
        let other = Action::DecideDispute { outcome: DisputeOutcome::Upheld, note: None };
        assert!(apply(&mut t, &other, &actor(Party::Office), decided_at, &s, RULE).is_err());
    }

    #[test]
    fn a_retried_action_changes_nothing_and_succeeds() {
        let s = Settings::default();
        let mut t = rejected(ReasonCode::OutOfScope);
        let t0 = at("2023-05-08T10:00:00+08:00");
        let open = Action::OpenDispute { note: "请会商".into() };
        apply(&mut t, &open, &actor(Party::Origin), t0, &s, RULE).unwrap();
        let note = Action::NoteDispute { note: "意见".into(), call_ref: None };
        apply(&mut t, &note, &actor(Party::Office), t0, &s, RULE).unwrap();
        let decide = Action::DecideDispute { outcome: DisputeOutcome::Upheld, note: None };
        apply(&mut t, &decide, &actor(Party::Office), t0, &s, RULE).unwrap();
        let before = t.clone();
        for action in [&open, &note, &decide] {
            let again = apply(&mut t, action, &actor(Party::Office), t0, &s, RULE);
            if action == &open {
                assert!(again.is_err(), "another actor's open is no repeat");
                let again = apply(&mut t, action, &actor(Party::Origin), t0, &s, RULE).unwrap();
                assert_eq!(again, Effect::default());
            } else {
                assert_eq!(again.unwrap(), Effect::default());
            }
        }
        assert_eq!(t, before, "nothing doubled");
        // a different note is new (and refused now: the dispute is decided)
        let other = Action::NoteDispute { note: "另一意见".into(), call_ref: None };
        assert!(apply(&mut t, &other, &actor(Party::Office), t0, &s, RULE).is_err());
    }

    #[test]
    fn only_out_of_scope_within_the_window_is_disputed() {
        let s = Settings::default();
        let open = Action::OpenDispute { note: "n".into() };
        let mut t = rejected(ReasonCode::Duplicate);
        let err =
            apply(&mut t, &open, &actor(Party::Origin), at("2023-05-08T10:00:00+08:00"), &s, RULE);
        assert!(err.unwrap_err().reason.contains("out_of_scope"));
        let mut t = rejected(ReasonCode::OutOfScope);
        let late = at("2023-05-09T09:50:01+08:00");
        assert!(apply(&mut t, &open, &actor(Party::Origin), late, &s, RULE).is_err());
        assert!(t.dispute.is_none(), "a refusal changes nothing");
    }

    #[test]
    fn urges_wait_for_the_interval_and_extensions_wait_for_an_answer() {
        let s = Settings::default();
        let mut t = rejected(ReasonCode::Other);
        t.state = State::Accepted;
        let urge = Action::Urge { note: "请尽快".into() };
        let t0 = at("2023-05-08T12:00:00+08:00");
        let e = apply(&mut t, &urge, &actor(Party::Origin), t0, &s, RULE).unwrap();
        assert_eq!(
            e.notices,
            vec![Notice { to: Party::Destination, note: "【催办】请尽快".into() }]
        );
        let again = Action::Urge { note: "再催".into() };
        assert!(
            apply(&mut t, &again, &actor(Party::Origin), t0.plus_seconds(3599), &s, RULE).is_err()
        );
        let retried = apply(&mut t, &urge, &actor(Party::Origin), t0.plus_seconds(5), &s, RULE);
        assert_eq!(retried.unwrap(), Effect::default(), "the same urge again: a repeat");
        assert!(apply(&mut t, &urge, &actor(Party::Destination), t0.plus_seconds(3600), &s, RULE)
            .is_err());
        apply(&mut t, &urge, &actor(Party::Office), t0.plus_seconds(3600), &s, RULE).unwrap();
        assert_eq!(t.urges, 2);
        let until = at("2023-05-12T18:00:00+08:00");
        let ask = Action::RequestExtension { until, reason: "需协调物业".into() };
        let e = apply(&mut t, &ask, &actor(Party::Destination), t0, &s, RULE).unwrap();
        assert_eq!(e.notices[0].note, "【延期申请】需协调物业至2023-05-12 18:00");
        let other = Action::RequestExtension { until, reason: "另一理由".into() };
        assert!(
            apply(&mut t, &other, &actor(Party::Destination), t0, &s, RULE).is_err(),
            "one pending"
        );
        let retried = apply(&mut t, &ask, &actor(Party::Destination), t0, &s, RULE).unwrap();
        assert_eq!(retried, Effect::default(), "the same request again: a repeat");
        assert!(lapse_extension(&t, t0).is_some());
        let grant = Action::DecideExtension { grant: true, note: None };
        assert!(apply(&mut t, &grant, &actor(Party::Destination), t0, &s, RULE).is_err());
        let e = apply(&mut t, &grant, &actor(Party::Origin), t0, &s, RULE).unwrap();
        assert_eq!(e.notices[0].note, "【延期批准】2023-05-12 18:00");
        assert_eq!(t.deadlines.resolve_by, Some(until));
        assert!(pending_extension(&t).is_none());
    }

    #[test]
    fn reasons_split_and_compose_at_the_labels() {
        let text = compose_reason(
            Some("讨薪"),
            Some("民警到场稳定情绪"),
            Some(at("2023-05-08T10:30:45+08:00")),
            Some("R-9"),
            Some(""),
        )
        .unwrap();
        assert_eq!(text, "讨薪【先期处置】民警到场稳定情绪【需到场时间】2023-05-08 10:30【关联单号】R-9【会商裁定】");
        let parts = split_reason(&text).unwrap();
        assert_eq!(parts.reason.as_deref(), Some("讨薪"));
        assert_eq!(parts.prior_actions.as_deref(), Some("民警到场稳定情绪"));
        assert_eq!(parts.needed_by, Some(at("2023-05-08T10:30:00+08:00")));
        assert_eq!(parts.linked_ref.as_deref(), Some("R-9"));
        // any order, spaces trimmed
        let parts = split_reason("【关联单号】 R-9 【需到场时间】2023-05-08 10:30 ").unwrap();
        assert_eq!((parts.reason, parts.linked_ref.as_deref()), (None, Some("R-9")));
        assert!(split_reason("x【需到场时间】明天").is_err());
        assert!(split_reason("x【关联单号】").is_err());
        assert!(split_reason("【先期处置】a【先期处置】b").is_err());
    }

    #[test]
    fn extension_requests_read_natively() {
        let (reason, until) =
            read_extension_request("【延期申请】需协调物业 至2023-05-12 18:00").unwrap().unwrap();
        assert_eq!((reason.as_str(), until), ("需协调物业", at("2023-05-12T18:00:00+08:00")));
        assert!(read_extension_request("正在处理").is_none());
        assert!(read_extension_request("【延期申请】需协调物业").unwrap().is_err());
        assert!(read_extension_request("【延期申请】至2023-05-12 18:00").unwrap().is_err());
        assert_eq!(
            outcome_note(DisputeOutcome::Upheld, Some("属公安")),
            "【会商结果】维持退回：属公安"
        );
        assert_eq!(outcome_note(DisputeOutcome::FirstReceiver, None), "【会商结果】首接办理");
    }
}
