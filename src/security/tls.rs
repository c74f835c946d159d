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

/// The server side: our certificate, and client certificates required, chained to `ca` and
/// not revoked by `crl` (the leaf is checked: the CRL is the issuing CA's).
pub fn server_config(ca: &Path, cert: &Path, key: &Path, crl: Option<&Path>) -> Result<Arc<ServerConfig>, TlsError> {
    install_crypto_provider();
    let mut builder = WebPkiClientVerifier::builder(Arc::new(roots(ca)?));
    if let Some(crl) = crl {
        builder = builder.with_crls(crls(crl)?).only_check_end_entity_revocation();
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
