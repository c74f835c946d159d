//! Identities: what a certificate's URI SAN says its holder is.

use std::fmt;

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::model::EndpointId;

/// The URI scheme of Liandong identities.
pub const SCHEME: &str = "liandong://";

/// Who a client is.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Identity {
    /// A provincial or city platform: `liandong://endpoint/REGION/PLATFORM`.
    Endpoint(EndpointId),
    /// A partner agency: `liandong://agency/NAME`.
    Agency(String),
    /// An operator of the gateway: `liandong://operator/NAME`.
    Operator(String),
    /// A linkage office (联动办) that settles disputes: `liandong://office/NAME` (`linkage.md`).
    Office(String),
    /// The gateway itself, when it delivers: `liandong://gateway/NAME`.
    Gateway(String),
}

impl Identity {
    /// The URI form, as written in certificates.
    pub fn uri(&self) -> String {
        match self {
            Identity::Endpoint(e) => format!("{SCHEME}endpoint/{e}"),
            Identity::Agency(n) => format!("{SCHEME}agency/{n}"),
            Identity::Operator(n) => format!("{SCHEME}operator/{n}"),
            Identity::Office(n) => format!("{SCHEME}office/{n}"),
            Identity::Gateway(n) => format!("{SCHEME}gateway/{n}"),
        }
    }

    /// Parses a URI SAN.
    pub fn from_uri(uri: &str) -> Result<Identity, String> {
        let rest =
            uri.strip_prefix(SCHEME).ok_or_else(|| format!("not a {SCHEME} identity: {uri:?}"))?;
        let (kind, name) = rest
            .split_once('/')
            .ok_or_else(|| format!("expected {SCHEME}KIND/NAME, got {uri:?}"))?;
        let plain = |n: &str| {
            if n.is_empty()
                || !n.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                Err(format!("bad name in {uri:?}"))
            } else {
                Ok(n.to_string())
            }
        };
        match kind {
            "endpoint" => name.parse().map(Identity::Endpoint),
            "agency" => plain(name).map(Identity::Agency),
            "operator" => plain(name).map(Identity::Operator),
            "office" => plain(name).map(Identity::Office),
            "gateway" => plain(name).map(Identity::Gateway),
            other => Err(format!("unknown identity kind {other:?} in {uri:?}")),
        }
    }

    /// The identity in a (verified) certificate: its one Liandong URI SAN.
    pub fn from_certificate(der: &[u8]) -> Result<Identity, String> {
        let (_, certificate) =
            X509Certificate::from_der(der).map_err(|e| format!("unreadable certificate: {e}"))?;
        let san = certificate
            .subject_alternative_name()
            .map_err(|e| format!("unreadable subjectAltName: {e}"))?
            .ok_or("the certificate has no subjectAltName")?;
        let uris: Vec<&str> = san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::URI(uri) if uri.starts_with(SCHEME) => Some(*uri),
                _ => None,
            })
            .collect();
        match uris.as_slice() {
            [one] => Identity::from_uri(one),
            [] => Err(format!("the certificate has no {SCHEME} URI SAN")),
            _ => Err(format!("the certificate has more than one {SCHEME} URI SAN")),
        }
    }

    /// The endpoint, for an endpoint identity.
    pub fn endpoint(&self) -> Option<&EndpointId> {
        match self {
            Identity::Endpoint(e) => Some(e),
            _ => None,
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_round_trip() {
        for uri in [
            "liandong://endpoint/330200/110",
            "liandong://agency/fire-dept",
            "liandong://operator/ops1",
            "liandong://gateway/gw",
        ] {
            assert_eq!(Identity::from_uri(uri).unwrap().uri(), uri);
        }
        for bad in [
            "https://endpoint/330200/110",
            "liandong://endpoint/3302/110",
            "liandong://agency/",
            "liandong://who/x",
            "liandong://agency/a b",
        ] {
            assert!(Identity::from_uri(bad).is_err(), "{bad}");
        }
    }
}
