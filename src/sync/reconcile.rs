//! Reconciliation (对账): an endpoint sends its own view of its transfers — references and
//! states — and gets back every difference with the gateway's record. The endpoint names a
//! transfer as it knows it: the origin by its own `sender_ref`, the destination by the
//! gateway's `transfer_id` (either is accepted from either side).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::model::{EndpointId, State};
use crate::store::{Store, StoreError};

/// One transfer as the endpoint sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claim {
    /// Its `sender_ref` (as origin) or the gateway's `transfer_id`.
    pub reference: String,
    pub state: State,
}

/// What kind of difference.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DifferenceKind {
    /// Both know it, in different states.
    StateDiffers,
    /// The endpoint has it; the gateway has no such transfer of this endpoint.
    UnknownHere,
    /// The gateway has it (within the window); the endpoint's view does not.
    UnknownThere,
    /// The endpoint's view names one transfer twice (by two references, or one twice) in
    /// different states: its own records disagree.
    ClaimedTwice,
}

/// One difference.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Difference {
    pub kind: DifferenceKind,
    /// As the endpoint knows it.
    pub reference: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer_id: Option<String>,
    /// The gateway's state ("here").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_state: Option<State>,
    /// The endpoint's state ("there").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_state: Option<State>,
    /// For people: "closed here, open there".
    pub note: String,
}

/// The report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub endpoint: String,
    /// Transfers on which both agree.
    pub matched: usize,
    pub differences: Vec<Difference>,
}

fn open_or_closed(state: State) -> &'static str {
    if crate::model::lifecycle::is_terminal(state) || state == State::Resolved {
        "closed"
    } else {
        "open"
    }
}

/// Compares `claims` with the gateway's transfers of `endpoint` created in `[since, until)`
/// (Unix seconds; all when absent). A claim outside the window is still looked up by itself.
pub async fn reconcile(
    store: &Store,
    endpoint: &EndpointId,
    claims: &[Claim],
    since: Option<i64>,
    until: Option<i64>,
) -> Result<Report, StoreError> {
    let me = endpoint.to_string();
    let known = store.transfers_of(&me, since, until).await?;
    let mut by_reference: HashMap<&str, usize> = HashMap::with_capacity(known.len() * 2);
    for (i, k) in known.iter().enumerate() {
        by_reference.insert(k.transfer_id.as_str(), i);
        if k.sender == me {
            by_reference.insert(k.sender_ref.as_str(), i);
        }
    }
    let mut seen = vec![false; known.len()];
    let mut matched = 0;
    let mut differences = Vec::new();
    // Transfer id → the first claim of it, to find a transfer claimed twice in two states.
    let mut first_claim: HashMap<String, &Claim> = HashMap::new();
    for claim in claims {
        let found = match by_reference.get(claim.reference.as_str()) {
            Some(&i) => {
                seen[i] = true;
                Some(known[i].clone())
            }
            None => store.transfer_of(&me, &claim.reference).await?,
        };
        if let Some(k) = &found {
            match first_claim.get(&k.transfer_id) {
                Some(first) if first.state != claim.state => differences.push(Difference {
                    kind: DifferenceKind::ClaimedTwice,
                    reference: claim.reference.clone(),
                    transfer_id: Some(k.transfer_id.clone()),
                    gateway_state: Some(k.state),
                    endpoint_state: Some(claim.state),
                    note: format!(
                        "claimed {} as {} and {} as {}",
                        first.reference,
                        first.state.as_str(),
                        claim.reference,
                        claim.state.as_str()
                    ),
                }),
                Some(_) => {}
                None => {
                    first_claim.insert(k.transfer_id.clone(), claim);
                }
            }
        }
        match found {
            Some(k) if k.state == claim.state => matched += 1,
            Some(k) => {
                let (here, there) = (open_or_closed(k.state), open_or_closed(claim.state));
                let note = if here == there {
                    format!("{} here, {} there", k.state.as_str(), claim.state.as_str())
                } else {
                    format!(
                        "{here} here ({}), {there} there ({})",
                        k.state.as_str(),
                        claim.state.as_str()
                    )
                };
                differences.push(Difference {
                    kind: DifferenceKind::StateDiffers,
                    reference: claim.reference.clone(),
                    transfer_id: Some(k.transfer_id),
                    gateway_state: Some(k.state),
                    endpoint_state: Some(claim.state),
                    note,
                });
            }
            None => differences.push(Difference {
                kind: DifferenceKind::UnknownHere,
                reference: claim.reference.clone(),
                transfer_id: None,
                gateway_state: None,
                endpoint_state: Some(claim.state),
                note: format!("unknown here, {} there", claim.state.as_str()),
            }),
        }
    }
    for (k, _) in known.iter().zip(&seen).filter(|(_, seen)| !**seen) {
        differences.push(Difference {
            kind: DifferenceKind::UnknownThere,
            reference: k.reference_for(&me).to_string(),
            transfer_id: Some(k.transfer_id.clone()),
            gateway_state: Some(k.state),
            endpoint_state: None,
            note: format!("{} here, unknown there", k.state.as_str()),
        });
    }
    Ok(Report { endpoint: me, matched, differences })
}
