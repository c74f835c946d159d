//! Who may read what, as data in the configuration, deny by default.
//!
//! Endpoints act only as themselves: they submit as themselves and read and update only the
//! transfers they are a party to (the engine enforces that). Agencies get exactly what their
//! `[[agency]]` entry grants: reading the transfers that touch their regions, watching them,
//! reading datasets. Operators read everything and replay dead letters, and change no
//! transfer. Anything not granted is refused.

use serde::Deserialize;

use super::Identity;
use crate::model::Transfer;

/// A right an agency may be granted.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Right {
    /// Read (get, list) transfers of the granted regions.
    ReadTransfers,
    /// Watch the change feed of the granted regions.
    Watch,
    /// Read the shared datasets.
    ReadDatasets,
    /// Decide jurisdiction disputes, urge, and answer extension requests in the granted
    /// regions: a linkage office's right (`liandong://office/NAME`, `linkage.md`).
    DecideDisputes,
}

/// One agency's grant (`[[agency]]` in the configuration).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AgencyGrant {
    /// The name in its certificate: `liandong://agency/NAME`.
    pub name: String,
    /// Region prefixes (a province `33`, a city `3302`, a county `330203`): transfers whose
    /// origin, destination or case location falls in one of them.
    pub regions: Vec<String>,
    pub rights: Vec<Right>,
}

impl AgencyGrant {
    /// Checks the grant; errors are (key, problem) relative to the entry.
    pub fn validate(&self) -> Result<(), (String, String)> {
        Identity::from_uri(&format!("liandong://agency/{}", self.name))
            .map_err(|e| ("name".to_string(), e))?;
        if self.regions.is_empty() {
            return Err(("regions".into(), "grant at least one region prefix".into()));
        }
        for region in &self.regions {
            if region.is_empty() || region.len() > 6 || !region.bytes().all(|b| b.is_ascii_digit())
            {
                return Err((
                    "regions".into(),
                    format!("expected a region prefix of up to six digits, got {region:?}"),
                ));
            }
        }
        if self.rights.is_empty() {
            return Err((
                "rights".into(),
                "grant at least one right: read_transfers, watch, read_datasets, decide_disputes"
                    .into(),
            ));
        }
        Ok(())
    }

    fn covers(&self, transfer: &Transfer) -> bool {
        self.regions.iter().any(|prefix| transfer.lies_in(prefix))
    }
}

/// What an identity may read, as conditions ([`Policy::scope`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scope {
    /// Only transfers this endpoint is a party to.
    pub party: Option<String>,
    /// Only transfers lying in one of these region prefixes.
    pub regions: Option<Vec<String>>,
}

/// The policy: the agencies' and the linkage offices' grants.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    agencies: Vec<AgencyGrant>,
    offices: Vec<AgencyGrant>,
}

impl Policy {
    pub fn new(agencies: Vec<AgencyGrant>) -> Policy {
        Policy { agencies, offices: Vec::new() }
    }

    /// The policy with linkage offices too (`[[office]]`: regions and rights like an agency's).
    pub fn with_offices(mut self, offices: Vec<AgencyGrant>) -> Policy {
        self.offices = offices;
        self
    }

    /// An agency's grant, if it has one.
    pub fn grant(&self, name: &str) -> Option<&AgencyGrant> {
        self.agencies.iter().find(|a| a.name == name)
    }

    /// A linkage office's grant, if it has one.
    pub fn office(&self, name: &str) -> Option<&AgencyGrant> {
        self.offices.iter().find(|a| a.name == name)
    }

    /// The grant of an agency or office identity.
    fn grant_of<'a>(
        &'a self,
        identity: &'a Identity,
    ) -> Option<(&'static str, &'a str, Option<&'a AgencyGrant>)> {
        match identity {
            Identity::Agency(name) => Some(("agency", name, self.grant(name))),
            Identity::Office(name) => Some(("office", name, self.office(name))),
            _ => None,
        }
    }

    /// Whether `identity` is a linkage office that may act on `transfer` (`decide_disputes`
    /// and a region covering it).
    pub fn may_decide(&self, identity: &Identity, transfer: &Transfer) -> Result<(), String> {
        match identity {
            Identity::Office(_) => self.may(identity, transfer, Right::DecideDisputes),
            other => Err(format!("{} is not a linkage office", other.uri())),
        }
    }

    /// Whether `identity` may read `transfer`; the reason when not.
    pub fn may_read(&self, identity: &Identity, transfer: &Transfer) -> Result<(), String> {
        self.may(identity, transfer, Right::ReadTransfers)
    }

    /// Whether `identity` may see `transfer` by the given right (reading it, or watching it).
    pub fn may(
        &self,
        identity: &Identity,
        transfer: &Transfer,
        right: Right,
    ) -> Result<(), String> {
        match identity {
            Identity::Endpoint(e) if *e == transfer.from || *e == transfer.to => Ok(()),
            Identity::Endpoint(e) => Err(format!("{e} is not a party to {}", transfer.transfer_id)),
            Identity::Operator(_) => Ok(()),
            Identity::Agency(_) | Identity::Office(_) => {
                let (kind, name, grant) = self.grant_of(identity).unwrap_or(("agency", "", None));
                match grant {
                    Some(grant) if grant.rights.contains(&right) && grant.covers(transfer) => {
                        Ok(())
                    }
                    Some(grant) if grant.rights.contains(&right) => Err(format!(
                        "{kind} {name} is granted regions {:?}, not this transfer's",
                        grant.regions
                    )),
                    Some(_) => Err(format!("{kind} {name} is not granted {right:?}")),
                    None => Err(format!("{kind} {name} has no grant")),
                }
            }
            Identity::Gateway(_) => Err("the gateway's identity reads nothing".into()),
        }
    }

    /// What `identity` may read by `right`, as conditions a query can carry: the transfers of
    /// one party (an endpoint's own), or of some regions (an agency's grant), or all
    /// (operators) — the same rule as [`Policy::may`], for aggregates that never see a
    /// transfer one by one.
    pub fn scope(&self, identity: &Identity, right: Right) -> Result<Scope, String> {
        self.has_right(identity, right)?;
        Ok(match identity {
            Identity::Endpoint(e) => Scope { party: Some(e.to_string()), regions: None },
            Identity::Agency(_) | Identity::Office(_) => Scope {
                party: None,
                regions: Some(
                    self.grant_of(identity)
                        .and_then(|(_, _, g)| g)
                        .map(|g| g.regions.clone())
                        .unwrap_or_default(),
                ),
            },
            _ => Scope::default(),
        })
    }

    /// Whether `identity` may use `right` at all (before looking at any transfer).
    pub fn has_right(&self, identity: &Identity, right: Right) -> Result<(), String> {
        match identity {
            Identity::Endpoint(_) | Identity::Operator(_) => Ok(()),
            Identity::Agency(_) | Identity::Office(_) => {
                let (kind, name, grant) = self.grant_of(identity).unwrap_or(("agency", "", None));
                match grant {
                    Some(grant) if grant.rights.contains(&right) => Ok(()),
                    Some(_) => Err(format!("{kind} {name} is not granted {right:?}")),
                    None => Err(format!("{kind} {name} has no grant")),
                }
            }
            Identity::Gateway(_) => Err("the gateway's identity has no rights here".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transfer(from: &str, to: &str, region: &str) -> Transfer {
        serde_json::from_value(serde_json::json!({
            "transfer_id": "T1",
            "case": {"case_id": "c", "origin": {"endpoint": from, "local_id": "J"}, "received_at": "2023-05-08T09:41:09+08:00",
                     "category": "NP07", "summary": "s", "location": {"region": region}},
            "from": from, "to": to, "direction": "110->12345", "requested_at": "2023-05-08T09:43:00+08:00",
            "deadlines": {"receive_by": "2023-05-08T10:13:00+08:00"}, "state": "submitted", "history": []
        }))
        .unwrap()
    }

    #[test]
    fn deny_by_default_and_grants_by_region() {
        let policy = Policy::new(vec![AgencyGrant {
            name: "nb-fire".into(),
            regions: vec!["3302".into()],
            rights: vec![Right::ReadTransfers],
        }]);
        let ningbo = transfer("330200/110", "330200/12345", "330203");
        let beijing = transfer("110000/110", "110000/12345", "110105");
        let fire = Identity::Agency("nb-fire".into());
        assert!(policy.may_read(&fire, &ningbo).is_ok());
        assert!(policy.may_read(&fire, &beijing).is_err());
        assert!(
            policy.may_read(&Identity::Agency("unknown".into()), &ningbo).is_err(),
            "no grant, no access"
        );
        assert!(policy.has_right(&fire, Right::Watch).is_err(), "only what is granted");
        assert!(policy.may_read(&Identity::Operator("ops".into()), &beijing).is_ok());
        assert!(policy
            .may_read(&Identity::Endpoint("330200/110".parse().unwrap()), &ningbo)
            .is_ok());
        assert!(policy
            .may_read(&Identity::Endpoint("330000/110".parse().unwrap()), &ningbo)
            .is_err());
    }

    #[test]
    fn grants_are_checked() {
        let bad = AgencyGrant {
            name: "a b".into(),
            regions: vec!["33".into()],
            rights: vec![Right::Watch],
        };
        assert_eq!(bad.validate().unwrap_err().0, "name");
        let bad = AgencyGrant {
            name: "ok".into(),
            regions: vec!["3302001".into()],
            rights: vec![Right::Watch],
        };
        assert_eq!(bad.validate().unwrap_err().0, "regions");
    }
}
