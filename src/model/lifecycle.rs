//! The rules of a transfer's life (`canonical.md`, "States", "Deadlines"), as pure functions.
//!
//! Everything that decides whether a status update is allowed, what it writes into the history
//! and when a transfer is due lives here, apart from storage and I/O, so that one table of
//! tests pins the contract down and every replica applies it identically.

use super::{
    EndpointId, HistoryEntry, HistoryEvent, Platform, ReasonCode, Satisfaction, State,
    StatusUpdate, Timestamp, Transfer, Urgency,
};

/// Who is acting on a transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The endpoint that sent the transfer.
    Origin,
    /// The endpoint it is addressed to.
    Destination,
    /// The gateway itself (delivery receipts).
    Gateway,
}

/// An update the rules refuse; nothing changes. The message names the current state.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("refused: the transfer is {current}; {reason}")]
pub struct Refusal {
    pub current: State,
    pub reason: String,
}

/// What applying an update did.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The transfer changed; these entries were appended to its history.
    Applied(Vec<HistoryEntry>),
    /// The same update was applied before (same state, same `at`): success, no change.
    Duplicate,
}

/// The position of a state on the main chain, if it is on it.
fn rank(state: State) -> Option<u8> {
    Some(match state {
        State::Submitted => 0,
        State::Delivered => 1,
        State::Received => 2,
        State::Accepted => 3,
        State::InProgress => 4,
        State::Resolved => 5,
        State::Closed => 6,
        State::Rejected | State::Cancelled => return None,
    })
}

const CHAIN: [State; 7] = [
    State::Submitted,
    State::Delivered,
    State::Received,
    State::Accepted,
    State::InProgress,
    State::Resolved,
    State::Closed,
];

/// Who may set a state.
fn setter(state: State) -> Role {
    match state {
        State::Submitted | State::Closed | State::Cancelled => Role::Origin,
        State::Delivered => Role::Gateway,
        State::Received
        | State::Accepted
        | State::Rejected
        | State::InProgress
        | State::Resolved => Role::Destination,
    }
}

/// Whether nothing can follow `state` (rejected, closed, cancelled).
pub fn is_terminal(state: State) -> bool {
    matches!(state, State::Rejected | State::Closed | State::Cancelled)
}

/// The role of `by` on `transfer`, if it is a party to it.
pub fn role_of(transfer: &Transfer, by: &EndpointId) -> Option<Role> {
    if *by == transfer.from {
        Some(Role::Origin)
    } else if *by == transfer.to {
        Some(Role::Destination)
    } else {
        None
    }
}

/// Applies `update`, made by `role`, to `transfer`: checks the rules, appends the history
/// (skipped states as `implied`), and sets the state, resolution and feedback. On refusal the
/// transfer is unchanged.
pub fn apply(
    transfer: &mut Transfer,
    update: &StatusUpdate,
    role: Role,
) -> Result<Outcome, Refusal> {
    let current = transfer.state;
    let refuse = |reason: String| Refusal { current, reason };
    let wanted = update.state;
    if is_repeat(transfer, update) {
        return Ok(Outcome::Duplicate);
    }
    if is_terminal(current) {
        return Err(refuse(format!("{current} is final; nothing follows it")));
    }
    let by = match role {
        Role::Gateway => "gateway".to_string(),
        _ => update.by.to_string(),
    };
    let mut entries = Vec::new();
    // A destination that answers at all has received the document: if the delivery receipt
    // is still on its way, the delivery is implied.
    let mut from = current;
    if role == Role::Destination && current == State::Submitted {
        entries.push(entry(State::Delivered, update.at, "gateway".to_string(), true));
        from = State::Delivered;
    }
    let reopen = current == State::Resolved && wanted == State::InProgress;
    // The gateway hands back what it cannot deliver (`canonical.md`, "Undeliverable
    // transfers"), on the destination's behalf, before the destination has it.
    let undeliverable = role == Role::Gateway && wanted == State::Rejected;
    // An assist is cancelled with the transfer it helps (`linkage.md`), by the gateway.
    let with_parent = role == Role::Gateway && wanted == State::Cancelled;
    if undeliverable {
        if update.reason_code != Some(ReasonCode::Undeliverable)
            || !matches!(current, State::Submitted | State::Delivered)
        {
            return Err(refuse(
                "the gateway rejects only an undeliverable transfer, before it is received".into(),
            ));
        }
    } else if update.reason_code == Some(ReasonCode::Undeliverable) {
        return Err(refuse("reason_code undeliverable is the gateway's own".into()));
    }
    if reopen {
        let dissatisfied =
            update.feedback.as_ref().is_some_and(|f| f.satisfaction == Satisfaction::Dissatisfied);
        if role != Role::Origin || !dissatisfied {
            return Err(refuse(
                "only the origin may reopen (重办) a resolved transfer, with feedback dissatisfied"
                    .into(),
            ));
        }
    } else if !undeliverable && !with_parent && setter(wanted) != role {
        let who = match setter(wanted) {
            Role::Origin => "the origin",
            Role::Destination => "the destination",
            Role::Gateway => "the gateway",
        };
        return Err(refuse(format!("{wanted} may only be set by {who}")));
    }
    match wanted {
        State::Rejected if undeliverable => {}
        State::Rejected if !matches!(from, State::Delivered | State::Received) => {
            return Err(refuse("rejected is allowed only from delivered or received".into()));
        }
        State::Cancelled if rank(from).is_some_and(|r| r >= rank(State::Resolved).unwrap_or(5)) => {
            return Err(refuse("cancelled is allowed only before resolved".into()));
        }
        State::Rejected | State::Cancelled => {}
        _ if reopen => {}
        State::InProgress if from == State::InProgress => {}
        _ => {
            let (Some(have), Some(want)) = (rank(from), rank(wanted)) else {
                return Err(refuse(format!("{wanted} cannot follow {from}")));
            };
            if want <= have {
                return Err(refuse(format!(
                    "{wanted} cannot follow {from}: states only move forward"
                )));
            }
            for skipped in &CHAIN[usize::from(have) + 1..usize::from(want)] {
                let implied_by =
                    if *skipped == State::Delivered { "gateway".to_string() } else { by.clone() };
                entries.push(entry(*skipped, update.at, implied_by, true));
            }
        }
    }
    let mut last = entry(wanted, update.at, by, false);
    last.unit = update.unit.clone();
    last.note = update.note.clone();
    last.reason_code = update.reason_code;
    entries.push(last);
    transfer.state = wanted;
    if let Some(resolution) = &update.resolution {
        transfer.resolution = Some(resolution.clone());
    }
    if let Some(feedback) = &update.feedback {
        transfer.feedback = Some(feedback.clone());
    }
    transfer.history.extend(entries.iter().cloned());
    Ok(Outcome::Applied(entries))
}

fn entry(state: State, at: Timestamp, by: String, implied: bool) -> HistoryEntry {
    let mut entry = HistoryEntry::new(HistoryEvent::State(state), at, by);
    entry.implied = implied;
    entry
}

/// Whether `update` repeats one already applied (`canonical.md`: same state, same `at`, same
/// `note`): answered as success, changing nothing. Two progress notes in one second differ.
pub fn is_repeat(transfer: &Transfer, update: &StatusUpdate) -> bool {
    transfer.history.iter().any(|h| {
        h.state == HistoryEvent::State(update.state)
            && h.at == update.at
            && !h.implied
            && h.note == update.note
    })
}

/// How far ahead of the gateway's clock a desk's `at` may be, and how far behind an entry the
/// gateway stamped itself (`delivered`, `escalated`): two clocks never agree exactly.
pub const CLOCK_SKEW_SECONDS: i64 = 60;

/// Checks a status update's `at` against the history and the clock: the history only moves
/// forward (no earlier than its last entry, less the skew allowance where the gateway's own
/// clock stamped that entry), and nothing is reported from the future (beyond the allowance).
/// Repeats are checked before this and are never refused here.
pub fn check_time(
    transfer: &Transfer,
    update: &StatusUpdate,
    now: Timestamp,
) -> Result<(), Refusal> {
    let refuse = |reason: String| Refusal { current: transfer.state, reason };
    if update.at.unix_seconds() > now.unix_seconds() + CLOCK_SKEW_SECONDS {
        return Err(refuse(format!(
            "at: {} is in the future (the gateway's clock says {}; {CLOCK_SKEW_SECONDS} s of skew allowed)",
            update.at.to_rfc3339(),
            now.to_rfc3339()
        )));
    }
    if let Some(last) = transfer.history.last() {
        let allowance = if last.by == "gateway" { CLOCK_SKEW_SECONDS } else { 0 };
        if update.at.unix_seconds() < last.at.unix_seconds() - allowance {
            return Err(refuse(format!(
                "at: {} is earlier than the transfer's last history entry ({} {} at {})",
                update.at.to_rfc3339(),
                last.state.as_str(),
                last.by,
                last.at.to_rfc3339()
            )));
        }
    }
    Ok(())
}

/// Deadline defaults and overrides, in seconds (`canonical.md`, "Deadlines").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeadlineRule {
    pub receive_within: i64,
    pub resolve_within: Option<i64>,
}

impl DeadlineRule {
    /// The spans a transfer's own deadlines give (from its `requested_at`).
    pub fn spans_of(transfer: &Transfer) -> DeadlineRule {
        let from = transfer.requested_at.unix_seconds();
        DeadlineRule {
            receive_within: transfer.deadlines.receive_by.unix_seconds() - from,
            resolve_within: transfer.deadlines.resolve_by.map(|r| r.unix_seconds() - from),
        }
    }
}

/// The default deadlines for a transfer to `to` of the given urgency (absent = normal).
pub fn default_deadline(to: Platform, urgency: Option<Urgency>) -> DeadlineRule {
    const MINUTE: i64 = 60;
    const HOUR: i64 = 3600;
    match (to, urgency.unwrap_or(Urgency::Normal)) {
        (Platform::Police, Urgency::Immediate) => {
            DeadlineRule { receive_within: 60, resolve_within: None }
        }
        (Platform::Police, _) => DeadlineRule { receive_within: 10 * MINUTE, resolve_within: None },
        (Platform::Hotline, Urgency::Immediate | Urgency::Urgent) => {
            DeadlineRule { receive_within: 10 * MINUTE, resolve_within: Some(24 * HOUR) }
        }
        (Platform::Hotline, Urgency::Normal) => {
            DeadlineRule { receive_within: 30 * MINUTE, resolve_within: Some(72 * HOUR) }
        }
    }
}

/// Every deadline a transfer has missed at `now` and not yet had escalated: what an update
/// recorded at `now` escalates in its own commit (`canonical.md`: whichever comes first, the
/// late update or the clock, records the miss, once).
pub fn missed_deadlines(transfer: &Transfer, now: Timestamp) -> Vec<&'static str> {
    // After an overruling the deadlines start again: only the current round counts.
    let round = super::linkage::current_round(&transfer.history);
    let reached = |target: State| {
        round.iter().any(|h| matches!(h.state, HistoryEvent::State(s) if rank(s) >= rank(target) && rank(s).is_some()))
    };
    // A deadline already escalated is not missed again: a transfer never received gets its
    // resolve_by escalation too, once.
    let escalated = |deadline: &str| {
        round
            .iter()
            .any(|h| h.state == HistoryEvent::Escalated && h.note.as_deref() == Some(deadline))
    };
    if is_terminal(transfer.state) {
        return Vec::new();
    }
    let deadlines = [
        ("receive_by", Some(transfer.deadlines.receive_by), State::Received),
        ("resolve_by", transfer.deadlines.resolve_by, State::Resolved),
        // An assist's help must be on the scene (`in_progress`) by `needed_by` (`linkage.md`).
        ("needed_by", transfer.needed_by, State::InProgress),
    ];
    deadlines
        .into_iter()
        .filter(|(name, by, target)| {
            by.is_some_and(|by| now > by) && !reached(*target) && !escalated(name)
        })
        .map(|(name, _, _)| name)
        .collect()
}

/// Marks the deadlines in `misses` as missed on `transfer`: `overdue`, and an `escalated`
/// entry each. An extension request still undecided when `resolve_by` passes is refused
/// (`linkage.md`).
pub fn record_misses(transfer: &mut Transfer, misses: &[&str], at: Timestamp) {
    if !misses.is_empty() {
        transfer.overdue = true;
    }
    for deadline in misses {
        if *deadline == "resolve_by" {
            if let Some(lapsed) = super::linkage::lapse_extension(transfer, at) {
                transfer.history.push(lapsed);
            }
        }
        transfer.history.push(escalation(deadline, at));
    }
}

/// The history entry that records a missed deadline (超时督办): not a state.
pub fn escalation(deadline: &str, at: Timestamp) -> HistoryEntry {
    let mut entry = HistoryEntry::new(HistoryEvent::Escalated, at, "gateway");
    entry.note = Some(deadline.to_string());
    entry
}

/// Which deadline a transfer has missed at `now`, if any: `receive_by` until it is received,
/// `resolve_by` until it is resolved. Final states are never overdue.
pub fn missed_deadline(transfer: &Transfer, now: Timestamp) -> Option<&'static str> {
    missed_deadlines(transfer, now).first().copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Deadlines, Feedback, Resolution};
    use serde_json::json;

    fn transfer(state: State) -> Transfer {
        let mut t: Transfer = serde_json::from_value(json!({
            "transfer_id": "01HZX3V6Q8K2M7R4T9W1Y5C0DE",
            "case": {"case_id": "110:330200:J1", "origin": {"endpoint": "330200/110", "local_id": "J1"},
                     "received_at": "2023-05-08T09:41:09+08:00", "category": "NP07", "summary": "挪车"},
            "from": "330200/110", "to": "330200/12345", "direction": "110->12345",
            "requested_at": "2023-05-08T09:43:00+08:00",
            "deadlines": {"receive_by": "2023-05-08T10:13:00+08:00", "resolve_by": "2023-05-11T09:43:00+08:00"},
            "state": "submitted",
            "history": [{"state": "submitted", "at": "2023-05-08T09:43:00+08:00", "by": "330200/110"}]
        }))
        .unwrap();
        // walk it along the chain to `state` with plain updates
        let steps: &[(State, Role)] = match state {
            State::Submitted => &[],
            State::Delivered => &[(State::Delivered, Role::Gateway)],
            State::Received => {
                &[(State::Delivered, Role::Gateway), (State::Received, Role::Destination)]
            }
            State::Accepted => {
                &[(State::Delivered, Role::Gateway), (State::Accepted, Role::Destination)]
            }
            State::Resolved => {
                &[(State::Delivered, Role::Gateway), (State::Resolved, Role::Destination)]
            }
            State::Rejected => {
                &[(State::Delivered, Role::Gateway), (State::Rejected, Role::Destination)]
            }
            _ => unreachable!(),
        };
        for (i, (s, role)) in steps.iter().enumerate() {
            let by = if *role == Role::Origin { "330200/110" } else { "330200/12345" };
            apply(&mut t, &update(*s, by, 100 + i as i64), *role).unwrap();
        }
        t
    }

    fn update(state: State, by: &str, minute: i64) -> StatusUpdate {
        let at = Timestamp::parse_rfc3339("2023-05-08T09:43:00+08:00", false)
            .unwrap()
            .plus_seconds(minute * 60);
        StatusUpdate {
            reason_code: (state == State::Rejected).then_some(ReasonCode::Other),
            transfer_id: Some("01HZX3V6Q8K2M7R4T9W1Y5C0DE".into()),
            transfer_ref: None,
            state,
            at,
            by: by.parse().unwrap(),
            unit: None,
            note: matches!(state, State::Rejected | State::Cancelled).then(|| "原因".to_string()),
            resolution: (state == State::Resolved).then(|| Resolution {
                result: "已办结".into(),
                resolved_at: at,
                unit: None,
            }),
            feedback: (state == State::Closed).then_some(Feedback {
                satisfaction: Satisfaction::Satisfied,
                visited_at: at,
                note: None,
            }),
        }
    }

    const ORIGIN: &str = "330200/110";
    const DEST: &str = "330200/12345";

    #[test]
    fn forward_skips_are_recorded_as_implied() {
        let mut t = transfer(State::Delivered);
        let Outcome::Applied(entries) =
            apply(&mut t, &update(State::Accepted, DEST, 4), Role::Destination).unwrap()
        else {
            panic!("applied")
        };
        assert_eq!(entries.len(), 2);
        assert_eq!(
            (entries[0].state, entries[0].implied),
            (HistoryEvent::State(State::Received), true)
        );
        assert_eq!(
            (entries[1].state, entries[1].implied),
            (HistoryEvent::State(State::Accepted), false)
        );
        assert_eq!(t.state, State::Accepted);
        assert_eq!(t.history.len(), 4);
    }

    #[test]
    fn a_destination_answer_before_the_delivery_receipt_implies_delivery() {
        let mut t = transfer(State::Submitted);
        apply(&mut t, &update(State::Received, DEST, 2), Role::Destination).unwrap();
        assert_eq!(t.history[1].state, HistoryEvent::State(State::Delivered));
        assert!(t.history[1].implied);
        assert_eq!(t.history[1].by, "gateway");
    }

    #[test]
    fn duplicates_succeed_and_change_nothing() {
        let mut t = transfer(State::Delivered);
        apply(&mut t, &update(State::Received, DEST, 5), Role::Destination).unwrap();
        let before = t.clone();
        assert_eq!(
            apply(&mut t, &update(State::Received, DEST, 5), Role::Destination),
            Ok(Outcome::Duplicate)
        );
        assert_eq!(t, before);
    }

    #[test]
    fn refusals_name_the_current_state_and_change_nothing() {
        let cases: &[(State, State, &str, Role)] = &[
            (State::Accepted, State::Received, DEST, Role::Destination), // backwards
            (State::Accepted, State::Rejected, DEST, Role::Destination), // rejected only from delivered/received
            (State::Resolved, State::Cancelled, ORIGIN, Role::Origin), // cancelled only before resolved
            (State::Delivered, State::Closed, DEST, Role::Destination), // closed is the origin's
            (State::Delivered, State::Accepted, ORIGIN, Role::Origin), // accepted is the destination's
            (State::Rejected, State::Accepted, DEST, Role::Destination), // terminal
            (State::Resolved, State::InProgress, DEST, Role::Destination), // reopen is the origin's
            (State::Resolved, State::InProgress, ORIGIN, Role::Origin), // reopen needs dissatisfied feedback
            (State::Delivered, State::Delivered, DEST, Role::Destination), // delivered is the gateway's
        ];
        for (from, to, by, role) in cases {
            let mut t = transfer(*from);
            let before = t.clone();
            let refusal = apply(&mut t, &update(*to, by, 30), *role).unwrap_err();
            assert_eq!(refusal.current, *from, "{from} -> {to}");
            assert!(
                refusal.to_string().starts_with(&format!("refused: the transfer is {from}; ")),
                "{refusal}"
            );
            assert_eq!(t, before, "{from} -> {to} changed the transfer");
        }
    }

    #[test]
    fn allowed_moves() {
        let allowed: &[(State, State, &str, Role)] = &[
            (State::Delivered, State::Rejected, DEST, Role::Destination),
            (State::Received, State::Rejected, DEST, Role::Destination),
            (State::Accepted, State::Cancelled, ORIGIN, Role::Origin),
            (State::Submitted, State::Cancelled, ORIGIN, Role::Origin),
            (State::Resolved, State::Closed, ORIGIN, Role::Origin),
            (State::Accepted, State::InProgress, DEST, Role::Destination),
        ];
        for (from, to, by, role) in allowed {
            let mut t = transfer(*from);
            apply(&mut t, &update(*to, by, 30), *role)
                .unwrap_or_else(|e| panic!("{from} -> {to}: {e}"));
            assert_eq!(t.state, *to);
        }
    }

    #[test]
    fn in_progress_repeats_and_reopen_by_the_origin() {
        let mut t = transfer(State::Accepted);
        apply(&mut t, &update(State::InProgress, DEST, 30), Role::Destination).unwrap();
        apply(&mut t, &update(State::InProgress, DEST, 31), Role::Destination).unwrap();
        apply(&mut t, &update(State::Resolved, DEST, 40), Role::Destination).unwrap();
        assert!(t.resolution.is_some());
        let mut reopen = update(State::InProgress, ORIGIN, 50);
        reopen.feedback = Some(Feedback {
            satisfaction: Satisfaction::Dissatisfied,
            visited_at: reopen.at,
            note: None,
        });
        apply(&mut t, &reopen, Role::Origin).unwrap();
        assert_eq!(t.state, State::InProgress);
        assert_eq!(t.feedback.as_ref().unwrap().satisfaction, Satisfaction::Dissatisfied);
    }

    #[test]
    fn two_progress_notes_in_one_second_are_two_updates() {
        let mut t = transfer(State::Accepted);
        let mut first = update(State::InProgress, DEST, 30);
        first.note = Some("已派员".into());
        let mut second = first.clone();
        second.note = Some("已到场".into());
        assert!(matches!(apply(&mut t, &first, Role::Destination), Ok(Outcome::Applied(_))));
        assert!(matches!(apply(&mut t, &second, Role::Destination), Ok(Outcome::Applied(_))));
        assert_eq!(
            apply(&mut t, &second, Role::Destination),
            Ok(Outcome::Duplicate),
            "the same note again is a repeat"
        );
        assert_eq!(
            t.history.iter().filter(|h| h.state == HistoryEvent::State(State::InProgress)).count(),
            2
        );
    }

    #[test]
    fn a_status_time_before_the_history_or_in_the_future_is_refused_naming_at() {
        let t = transfer(State::Accepted);
        let last = t.history.last().unwrap().at;
        let now = last.plus_seconds(600);
        let mut early = update(State::InProgress, DEST, 0);
        early.at = last.plus_seconds(-1);
        let refusal = check_time(&t, &early, now).unwrap_err();
        assert!(refusal.reason.starts_with("at: "), "{refusal}");
        let mut future = update(State::InProgress, DEST, 0);
        future.at = now.plus_seconds(CLOCK_SKEW_SECONDS + 1);
        assert!(check_time(&t, &future, now).unwrap_err().reason.contains("future"));
        let mut fine = update(State::InProgress, DEST, 0);
        fine.at = now.plus_seconds(CLOCK_SKEW_SECONDS);
        assert_eq!(check_time(&t, &fine, now), Ok(()), "within the skew allowance");
        // an entry the gateway stamped with its own clock allows the skew before it
        let delivered = transfer(State::Delivered);
        let mut signed = update(State::Received, DEST, 0);
        signed.at = delivered.history.last().unwrap().at.plus_seconds(-5);
        assert_eq!(check_time(&delivered, &signed, now), Ok(()));
    }

    #[test]
    fn an_update_after_a_deadline_records_every_miss_once() {
        let mut t = transfer(State::Delivered);
        t.deadlines = Deadlines {
            receive_by: t.requested_at.plus_seconds(60),
            resolve_by: Some(t.requested_at.plus_seconds(120)),
        };
        assert_eq!(
            super::missed_deadlines(&t, t.requested_at.plus_seconds(59)),
            Vec::<&str>::new()
        );
        assert_eq!(super::missed_deadlines(&t, t.requested_at.plus_seconds(61)), ["receive_by"]);
        assert_eq!(
            super::missed_deadlines(&t, t.requested_at.plus_seconds(121)),
            ["receive_by", "resolve_by"]
        );
        let at = t.requested_at.plus_seconds(61);
        record_misses(&mut t, &["receive_by"], at);
        assert!(t.overdue);
        assert_eq!(
            super::missed_deadlines(&t, t.requested_at.plus_seconds(121)),
            ["resolve_by"],
            "receive_by is not missed twice"
        );
    }

    #[test]
    fn only_the_gateway_rejects_as_undeliverable_and_only_before_receipt() {
        let mut undeliverable = update(State::Rejected, DEST, 1);
        undeliverable.reason_code = Some(ReasonCode::Undeliverable);
        undeliverable.note = Some("undeliverable: 330200/12345 could not take it".into());
        let mut t = transfer(State::Submitted);
        apply(&mut t, &undeliverable, Role::Gateway).unwrap();
        assert_eq!((t.state, t.history.last().unwrap().by.as_str()), (State::Rejected, "gateway"));
        assert_eq!(t.history.last().unwrap().reason_code, Some(ReasonCode::Undeliverable));
        let mut received = transfer(State::Received);
        assert!(
            apply(&mut received, &undeliverable, Role::Gateway).is_err(),
            "a received transfer was delivered"
        );
        let mut t = transfer(State::Delivered);
        assert!(
            apply(&mut t, &undeliverable, Role::Destination).is_err(),
            "undeliverable is the gateway's own"
        );
        let mut plain = update(State::Rejected, DEST, 1);
        plain.reason_code = Some(ReasonCode::Other);
        assert!(apply(&mut transfer(State::Submitted), &plain, Role::Gateway).is_err());
    }

    #[test]
    fn deadline_table() {
        let d = |to, u| default_deadline(to, u);
        assert_eq!(
            d(Platform::Police, Some(Urgency::Immediate)),
            DeadlineRule { receive_within: 60, resolve_within: None }
        );
        assert_eq!(
            d(Platform::Police, None),
            DeadlineRule { receive_within: 600, resolve_within: None }
        );
        assert_eq!(
            d(Platform::Hotline, Some(Urgency::Urgent)),
            DeadlineRule { receive_within: 600, resolve_within: Some(86_400) }
        );
        assert_eq!(
            d(Platform::Hotline, Some(Urgency::Normal)),
            DeadlineRule { receive_within: 1800, resolve_within: Some(259_200) }
        );
    }

    #[test]
    fn missed_deadlines() {
        let mut t = transfer(State::Delivered);
        t.deadlines = Deadlines {
            receive_by: t.requested_at.plus_seconds(1800),
            resolve_by: Some(t.requested_at.plus_seconds(3600)),
        };
        assert_eq!(missed_deadline(&t, t.requested_at.plus_seconds(1799)), None);
        assert_eq!(missed_deadline(&t, t.requested_at.plus_seconds(1801)), Some("receive_by"));
        apply(&mut t, &update(State::Accepted, DEST, 31), Role::Destination).unwrap();
        assert_eq!(missed_deadline(&t, t.requested_at.plus_seconds(1801)), None);
        assert_eq!(missed_deadline(&t, t.requested_at.plus_seconds(3601)), Some("resolve_by"));
    }
}
