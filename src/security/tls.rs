//! rustls configurations from PEM files: the server (client certificates required) and the
//! client the gateway delivers with.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
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

/// Every certificate in a PEM file.
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    pem_all(path, "no certificate in the file")
}

/// The private key in a PEM file.
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| file_error(path, format!("no usable private key: {e}")))
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
fn check_crls(path: &Path, crls: &[CertificateRevocationListDer<'_>], known: &[CertificateDer<'_>]) -> Result<(), TlsError> {
    let cas: Vec<_> = known.iter().filter_map(|der| x509_parser::parse_x509_certificate(der).ok().map(|(_, c)| c)).collect();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    for der in crls {
        let (_, crl) = x509_parser::parse_x509_crl(der).map_err(|e| file_error(path, format!("an unreadable CRL: {e}")))?;
        let issuer = crl.issuer().to_string();
        let named: Vec<_> = cas.iter().filter(|ca| ca.subject().as_raw() == crl.issuer().as_raw()).collect();
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

/// The server side: our certificate, and client certificates required, chained to `ca` and
/// not revoked by `crl` (the leaf is checked: the CRL is the issuing CA's).
pub fn server_config(ca: &Path, cert: &Path, key: &Path, crl: Option<&Path>) -> Result<Arc<ServerConfig>, TlsError> {
    install_crypto_provider();
    let mut builder = WebPkiClientVerifier::builder(Arc::new(roots(ca)?));
    if let Some(crl) = crl {
        let list = crls(crl)?;
        let mut known = certificates(ca)?;
        known.extend(certificates(cert)?.into_iter().skip(1));
        check_crls(crl, &list, &known)?;
        builder = builder.with_crls(list).only_check_end_entity_revocation();
    }
    let verifier = builder.build().map_err(|e| TlsError::Verifier(e.to_string()))?;
    let mut config =
        ServerConfig::builder().with_client_cert_verifier(verifier).with_single_cert(certificates(cert)?, private_key(key)?)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The client side: servers verified against `ca`, our certificate presented.
pub fn client_config(ca: &Path, cert: &Path, key: &Path) -> Result<Arc<ClientConfig>, TlsError> {
    install_crypto_provider();
    let mut config = ClientConfig::builder()
        .with_root_certificates(roots(ca)?)
        .with_client_auth_cert(certificates(cert)?, private_key(key)?)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
