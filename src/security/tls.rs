//! rustls configurations from PEM files: the server (client certificates required) and the
//! client the gateway delivers with.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use super::{install_crypto_provider, TlsError};

fn file_error(path: &Path, problem: impl std::fmt::Display) -> TlsError {
    TlsError::File { path: path.display().to_string(), problem: problem.to_string() }
}

/// Every object of one kind in a PEM file; none is an error saying what was expected.
fn pem_all<T: PemObject>(path: &Path, none: &str) -> Result<Vec<T>, TlsError> {
    let items = T::pem_file_iter(path)
        .map_err(|e| file_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))?;
    if items.is_empty() {
        return Err(file_error(path, none));
    }
    Ok(items)
}

/// A certificate and key that rustls would not pair, named by their files.
fn pair_error(cert: &Path, key: &Path, error: rustls::Error) -> TlsError {
    match error {
        rustls::Error::InconsistentKeys(_) => file_error(
            key,
            format!("this key does not belong to the certificate in {}", cert.display()),
        ),
        other => file_error(cert, format!("with the key {}: {other}", key.display())),
    }
}

/// Every certificate in a PEM file.
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    pem_all(path, "no certificate in the file")
}

/// The private key in a PEM file.
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| file_error(path, format!("no usable private key: {e}")))
}

fn roots(ca: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(ca)? {
        roots.add(cert).map_err(|e| file_error(ca, e))?;
    }
    Ok(roots)
}

/// Every CRL in a PEM file.
pub fn crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    pem_all(path, "no CRL in the file (expected -----BEGIN X509 CRL-----)")
}

/// Checks each CRL before it is used: signed by a CA the gateway knows — one in `tls.ca`, or
/// in the chain that comes with its own certificate — and not past its next update. Another
/// CA's CRL copied over `tls.crl` would otherwise refuse every client (webpki finds a CRL by its
/// issuer's name and fails the handshake on its signature), and a stale one would go on
/// passing certificates revoked since.
fn check_crls(
    path: &Path,
    crls: &[CertificateRevocationListDer<'_>],
    known: &[CertificateDer<'_>],
) -> Result<(), TlsError> {
    let cas: Vec<_> = known
        .iter()
        .filter_map(|der| x509_parser::parse_x509_certificate(der).ok().map(|(_, c)| c))
        .collect();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    for der in crls {
        let (_, crl) = x509_parser::parse_x509_crl(der)
            .map_err(|e| file_error(path, format!("an unreadable CRL: {e}")))?;
        let issuer = crl.issuer().to_string();
        let named: Vec<_> =
            cas.iter().filter(|ca| ca.subject().as_raw() == crl.issuer().as_raw()).collect();
        if named.is_empty() {
            return Err(file_error(
                path,
                format!("the CRL of \"{issuer}\" is not from a CA the gateway trusts (tls.ca, or the chain in tls.cert); to trust that CA, add its chain.pem to tls.ca"),
            ));
        }
        if !named.iter().any(|ca| crl.verify_signature(ca.public_key()).is_ok()) {
            return Err(file_error(
                path,
                format!("the CRL names \"{issuer}\" as its issuer, but that CA's key did not sign it (another CA with the same name?)"),
            ));
        }
        match crl.next_update() {
            Some(next) if next.timestamp() <= now => {
                return Err(file_error(
                    path,
                    format!(
                        "the CRL of \"{issuer}\" expired at {} (its next update): make a new one with `liandong certs crl`",
                        crate::security::ca::date(next.timestamp())
                    ),
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

/// Where handshake refusals are audited, once the audit trail has started.
pub type RefusalAudit = Arc<std::sync::OnceLock<crate::store::audit::Auditor>>;

/// Client certificate verification as webpki does it, with each refusal counted by its reason
/// (`liandong_refusals_total{reason="certificate_revoked"}`, …), logged and audited with the
/// certificate it was about — serial, subject, identity — instead of the remote address alone.
#[derive(Debug)]
struct Reporting {
    inner: Arc<dyn ClientCertVerifier>,
    audit: Option<RefusalAudit>,
}

/// The refusal reason of a certificate error, as counted and audited.
fn refusal_reason(error: &rustls::Error) -> &'static str {
    use rustls::CertificateError as E;
    match error {
        rustls::Error::InvalidCertificate(e) => match e {
            E::Revoked => "certificate_revoked",
            E::Expired | E::ExpiredContext { .. } => "certificate_expired",
            E::NotValidYet | E::NotValidYetContext { .. } => "certificate_not_yet_valid",
            E::UnknownIssuer => "certificate_unknown_ca",
            E::InvalidPurpose | E::InvalidPurposeContext { .. } => "certificate_not_for_clients",
            E::BadSignature => "certificate_bad_signature",
            _ => "certificate_invalid",
        },
        _ => "certificate_invalid",
    }
}

impl ClientCertVerifier for Reporting {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verdict = self.inner.verify_client_cert(end_entity, intermediates, now);
        if let Err(error) = &verdict {
            let reason = refusal_reason(error);
            crate::metrics::refuse(reason);
            let (serial, subject) = match x509_parser::parse_x509_certificate(end_entity) {
                Ok((_, cert)) => {
                    (cert.raw_serial_as_string().replace(':', ""), cert.subject().to_string())
                }
                Err(_) => (String::new(), "(unreadable)".to_string()),
            };
            let identity =
                super::Identity::from_certificate(end_entity).map(|i| i.uri()).unwrap_or_default();
            tracing::warn!(reason, %serial, %subject, %identity, %error, "refused a client certificate at the handshake");
            if let Some(auditor) = self.audit.as_ref().and_then(|a| a.get()) {
                auditor.note(crate::store::audit::AuditEntry {
                    at: time::OffsetDateTime::now_utc().unix_timestamp(),
                    actor: if identity.is_empty() { "unknown".into() } else { identity.clone() },
                    action: "tls.client_refused".into(),
                    transfer_id: None,
                    detail: serde_json::json!({"reason": reason, "serial": serial, "subject": subject, "identity": identity, "error": error.to_string()}),
                });
            }
        }
        verdict
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The server side: our certificate, and client certificates required, chained to `ca` and
/// not revoked by `crl` (the leaf is checked: the CRL is the issuing CA's).
pub fn server_config(
    ca: &Path,
    cert: &Path,
    key: &Path,
    crl: Option<&Path>,
) -> Result<Arc<ServerConfig>, TlsError> {
    audited_server_config(ca, cert, key, crl, None)
}

/// [`server_config`], its handshake refusals audited through `audit` as well as logged.
pub fn audited_server_config(
    ca: &Path,
    cert: &Path,
    key: &Path,
    crl: Option<&Path>,
    audit: Option<RefusalAudit>,
) -> Result<Arc<ServerConfig>, TlsError> {
    install_crypto_provider();
    let mut builder = WebPkiClientVerifier::builder(Arc::new(roots(ca)?));
    if let Some(crl) = crl {
        let list = crls(crl)?;
        let mut known = certificates(ca)?;
        known.extend(certificates(cert)?.into_iter().skip(1));
        check_crls(crl, &list, &known)?;
        builder = builder.with_crls(list).only_check_end_entity_revocation();
    }
    let verifier = Arc::new(Reporting {
        inner: builder.build().map_err(|e| TlsError::Verifier(e.to_string()))?,
        audit,
    });
    let mut config = ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(certificates(cert)?, private_key(key)?)
        .map_err(|e| pair_error(cert, key, e))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The client side: servers verified against `ca`, our certificate presented.
pub fn client_config(ca: &Path, cert: &Path, key: &Path) -> Result<Arc<ClientConfig>, TlsError> {
    install_crypto_provider();
    let mut config = ClientConfig::builder()
        .with_root_certificates(roots(ca)?)
        .with_client_auth_cert(certificates(cert)?, private_key(key)?)
        .map_err(|e| pair_error(cert, key, e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
