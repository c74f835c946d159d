//! `liandong certs inspect FILE`: any certificate, chain, CSR or CRL, PEM or DER, described
//! for a person — who it is for (the Liandong identity first), who signed it, when it expires.

use std::fmt::Write;

use rustls::pki_types::pem::SectionKind;
use x509_parser::prelude::*;

use super::ca::{date, pem_label, CaError};

/// Describes every object in `bytes` (from `path`, for errors).
pub fn describe(path: &str, bytes: &[u8]) -> Result<String, CaError> {
    let wrong = |found: String| CaError::WrongFileType {
        path: path.to_string(),
        expected: "a certificate, chain, CSR or CRL (PEM or DER)".into(),
        found,
    };
    let mut out = String::new();
    if let Ok(text) = std::str::from_utf8(bytes) {
        if text.contains("-----BEGIN ") {
            let mut reader = std::io::BufReader::new(bytes);
            let mut n = 0;
            while let Ok(Some((kind, der))) = rustls::pki_types::pem::from_buf(&mut reader) {
                n += 1;
                let _ = write!(out, "{}[{n}] ", if n > 1 { "\n" } else { "" });
                match kind {
                    SectionKind::Certificate => certificate(&der, &mut out)
                        .map_err(|e| wrong(format!("a damaged certificate: {e}")))?,
                    SectionKind::Csr => {
                        request(&der, &mut out).map_err(|e| wrong(format!("a damaged CSR: {e}")))?
                    }
                    SectionKind::Crl => {
                        crl(&der, &mut out).map_err(|e| wrong(format!("a damaged CRL: {e}")))?
                    }
                    SectionKind::PrivateKey
                    | SectionKind::EcPrivateKey
                    | SectionKind::RsaPrivateKey => out.push_str(
                        "private key (not shown; keep it mode 0600 and never commit it)\n",
                    ),
                    other => {
                        let _ = writeln!(out, "{other:?} (not described)");
                    }
                }
            }
            if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
                out.push_str("\nencrypted private key (PKCS#8; not shown)\n");
                n += 1;
            }
            if n == 0 {
                return Err(wrong(
                    pem_label(text).map_or("no PEM block".into(), |l| format!("a PEM {l}")),
                ));
            }
            return Ok(out);
        }
    }
    // DER: whichever of the three it parses as.
    if certificate(bytes, &mut out).is_ok() {
        return Ok(out);
    }
    out.clear();
    if request(bytes, &mut out).is_ok() {
        return Ok(out);
    }
    out.clear();
    if crl(bytes, &mut out).is_ok() {
        return Ok(out);
    }
    Err(wrong("neither PEM nor a DER certificate, CSR or CRL".into()))
}

fn names(name: &X509Name<'_>) -> String {
    name.to_string()
}

fn certificate(der: &[u8], out: &mut String) -> Result<(), String> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| e.to_string())?;
    let now = ::time::OffsetDateTime::now_utc().unix_timestamp();
    let not_after = cert.validity().not_after.timestamp();
    let days_left = (not_after - now).div_euclid(86_400);
    let is_ca = cert.basic_constraints().ok().flatten().is_some_and(|b| b.value.ca);
    let _ = writeln!(out, "certificate{}", if is_ca { " (a CA)" } else { "" });
    if let Ok(identity) = super::Identity::from_certificate(der) {
        let _ = writeln!(out, "  identity:   {}", identity.uri());
    }
    let _ = writeln!(out, "  subject:    {}", names(cert.subject()));
    let _ = writeln!(out, "  issuer:     {}", names(cert.issuer()));
    let _ = writeln!(out, "  serial:     {}", cert.raw_serial_as_string().replace(':', ""));
    let _ = writeln!(out, "  not before: {}", date(cert.validity().not_before.timestamp()));
    let status =
        if not_after < now { "EXPIRED".to_string() } else { format!("{days_left} days left") };
    let _ = writeln!(out, "  not after:  {} ({status})", date(not_after));
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        let list: Vec<String> = san.value.general_names.iter().map(ToString::to_string).collect();
        let _ = writeln!(out, "  names:      {}", list.join(", "));
    }
    if let Ok(Some(usage)) = cert.extended_key_usage() {
        let mut uses = Vec::new();
        if usage.value.server_auth {
            uses.push("server");
        }
        if usage.value.client_auth {
            uses.push("client");
        }
        let _ = writeln!(
            out,
            "  used for:   {}",
            if uses.is_empty() { "other".to_string() } else { uses.join(", ") }
        );
    }
    let _ = writeln!(
        out,
        "  key:        {}",
        key_name(&cert.public_key().algorithm.algorithm.to_id_string())
    );
    Ok(())
}

fn key_name(oid: &str) -> &'static str {
    match oid {
        "1.2.840.10045.2.1" => "ECDSA (P-256 or another curve)",
        "1.3.101.112" => "Ed25519",
        "1.2.840.113549.1.1.1" => "RSA",
        _ => "other",
    }
}

fn request(der: &[u8], out: &mut String) -> Result<(), String> {
    let (_, csr) = X509CertificationRequest::from_der(der).map_err(|e| e.to_string())?;
    let info = &csr.certification_request_info;
    let _ = writeln!(out, "certificate signing request");
    let _ = writeln!(out, "  subject:    {}", names(&info.subject));
    let _ = writeln!(
        out,
        "  key:        {}",
        key_name(&info.subject_pki.algorithm.algorithm.to_id_string())
    );
    let _ = writeln!(
        out,
        "  signature:  {}",
        if csr.verify_signature().is_ok() { "valid" } else { "INVALID" }
    );
    out.push_str("  (the identity of a signed certificate comes from `certs sign-csr --as`, never from here)\n");
    Ok(())
}

fn crl(der: &[u8], out: &mut String) -> Result<(), String> {
    let (_, crl) = CertificateRevocationList::from_der(der).map_err(|e| e.to_string())?;
    let _ = writeln!(out, "certificate revocation list");
    let _ = writeln!(out, "  issuer:      {}", names(crl.issuer()));
    let _ = writeln!(out, "  this update: {}", date(crl.last_update().timestamp()));
    if let Some(next) = crl.next_update() {
        let _ = writeln!(out, "  next update: {}", date(next.timestamp()));
    }
    if let Some(number) = crl.crl_number() {
        let _ = writeln!(out, "  number:      {number}");
    }
    let revoked: Vec<String> = crl
        .iter_revoked_certificates()
        .map(|r| r.raw_serial_as_string().replace(':', ""))
        .collect();
    let _ = writeln!(
        out,
        "  revoked:     {}",
        if revoked.is_empty() { "none".to_string() } else { revoked.join(", ") }
    );
    Ok(())
}
