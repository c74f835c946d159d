//! A site's certificate authority, for the security teams who manage what the gateway trusts
//! (`liandong certs`): an offline root, an online intermediate that signs everything else, and
//! a ledger of every certificate issued and revoked.
//!
//! Layout of a CA folder (`certs init --dir D`):
//!
//! | file | what |
//! |---|---|
//! | `root.pem`, `root-key.pem` | the root: the gateway's trust anchor (`tls.ca`); its key belongs offline |
//! | `intermediate.pem`, `intermediate-key.pem` | signs certificates and CRLs |
//! | `chain.pem` | intermediate + root |
//! | `ledger.json` | every certificate issued: serial, identity, dates, status; the CRL number |
//! | `crl.pem` | the latest CRL (`certs crl`), signed by the intermediate |
//! | `issued/NAME.pem`, `NAME-key.pem`, `NAME-chain.pem` | what was issued; present the chain file |
//!
//! Keys are written with mode 0600; with a passphrase they are PKCS#8-encrypted (PBKDF2-SHA256,
//! AES-256-CBC), which OpenSSL reads too. The identity of a certificate always comes from the
//! command, never from a CSR.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams,
    CertificateSigningRequestParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, PublicKeyData, RevocationReason,
    RevokedCertParams, SanType, SerialNumber,
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::pki::write_file;
use super::Identity;
use crate::formats::Registry;
use crate::model::digest::hex;

/// Why a CA operation failed; every message names the file or the identity at fault.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{0}: no CA here (run `liandong certs init --dir {0}` first)")]
    NotInitialized(String),
    #[error("{0}: a CA is already there; refusing to overwrite it")]
    Exists(String),
    #[error("{0}: wrong passphrase (or the file is damaged)")]
    WrongPassphrase(String),
    #[error("{0}: the key is encrypted; give the passphrase (--passphrase-file or LIANDONG_CA_PASSPHRASE)")]
    PassphraseNeeded(String),
    #[error("{path}: expected {expected}, found {found}")]
    WrongFileType { path: String, expected: String, found: String },
    #[error("{key} does not belong to {cert}")]
    KeyMismatch { key: String, cert: String },
    #[error("{path}: the CA certificate expired on {not_after}; renew the CA before issuing")]
    Expired { path: String, not_after: String },
    #[error("{0}")]
    Refused(String),
    /// The CA log's chain is broken, or the ledger differs from it.
    #[error("{0}")]
    Tampered(String),
    #[error("{path}: {problem}")]
    File { path: String, problem: String },
    #[error("certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

fn file_error(path: &Path, problem: impl std::fmt::Display) -> CaError {
    CaError::File { path: path.display().to_string(), problem: problem.to_string() }
}

/// The key algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    /// ECDSA P-256 with SHA-256 (the default).
    P256,
    Ed25519,
}

impl Algorithm {
    fn rcgen(self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            Algorithm::P256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            Algorithm::Ed25519 => &rcgen::PKCS_ED25519,
        }
    }
}

/// What a certificate is for: an identity of the gateway's scheme, or a server's names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subject {
    Identity(Identity),
    /// DNS names or IP addresses; the first is the common name.
    Server(Vec<String>),
}

impl Subject {
    /// How the ledger names it: the identity URI, or `server:NAME,NAME`.
    pub fn name(&self) -> String {
        match self {
            Subject::Identity(identity) => identity.uri(),
            Subject::Server(names) => format!("server:{}", names.join(",")),
        }
    }

    /// The file name of its certificate (`endpoint-330200-110`, `server-localhost`).
    pub fn file_stem(&self) -> String {
        let raw = match self {
            Subject::Identity(identity) => {
                identity.uri().trim_start_matches(super::identity::SCHEME).to_string()
            }
            Subject::Server(names) => {
                format!("server-{}", names.first().map(String::as_str).unwrap_or("server"))
            }
        };
        raw.chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '-' })
            .collect()
    }

    /// Reads a ledger name back.
    pub fn parse(name: &str) -> Result<Subject, CaError> {
        match name.strip_prefix("server:") {
            Some(names) => Ok(Subject::Server(names.split(',').map(String::from).collect())),
            None => Identity::from_uri(name).map(Subject::Identity).map_err(CaError::Refused),
        }
    }

    fn params(
        &self,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<CertificateParams, CaError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        let (common_name, sans, usages) = match self {
            Subject::Identity(identity) => {
                let uri = identity.uri();
                let sans = vec![SanType::URI(uri.as_str().try_into()?)];
                (uri, sans, vec![ExtendedKeyUsagePurpose::ClientAuth])
            }
            Subject::Server(names) => {
                let sans = names
                    .iter()
                    .map(|n| match n.parse::<std::net::IpAddr>() {
                        Ok(ip) => Ok(SanType::IpAddress(ip)),
                        Err(_) => Ok(SanType::DnsName(n.as_str().try_into()?)),
                    })
                    .collect::<Result<Vec<_>, rcgen::Error>>()?;
                (
                    names.first().cloned().unwrap_or_default(),
                    sans,
                    vec![ExtendedKeyUsagePurpose::ServerAuth],
                )
            }
        };
        dn.push(DnType::CommonName, common_name);
        dn.push(DnType::OrganizationName, "Liandong");
        params.distinguished_name = dn;
        params.subject_alt_names = sans;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = usages;
        params.not_before = not_before;
        params.not_after = not_after;
        params.serial_number = Some(new_serial());
        params.use_authority_key_identifier_extension = true;
        Ok(params)
    }
}

/// A random, positive 128-bit serial number.
fn new_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    random(&mut bytes);
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

/// Fills `bytes` from the system's secure random source (through rustls' one provider).
fn random(bytes: &mut [u8]) {
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(bytes)
        .expect("the system's random source works");
}

/// A certificate's status in the ledger.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Live,
    /// Replaced by a newer certificate for the same identity (still valid until it expires).
    Replaced,
    Revoked,
}

/// One certificate the CA issued.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Lower-case hex.
    pub serial: String,
    /// The identity URI, or `server:NAME,…`.
    pub subject: String,
    pub not_before: i64,
    pub not_after: i64,
    pub status: Status,
    /// The certificate file, relative to the CA folder.
    pub file: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The ledger: everything issued, and the last CRL number.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Ledger {
    pub algorithm: Option<Algorithm>,
    pub crl_number: u64,
    pub certificates: Vec<Entry>,
}

/// What an issue wrote.
#[derive(Clone, Debug, Serialize)]
pub struct IssuedFiles {
    pub serial: String,
    pub subject: String,
    pub cert: PathBuf,
    /// Absent when a CSR was signed (the partner keeps its key).
    pub key: Option<PathBuf>,
    pub chain: PathBuf,
    pub not_after: i64,
    /// Shorter than asked: it would have outlived the intermediate that signed it.
    pub capped_by_issuer: bool,
}

/// A CA folder.
pub struct CaDir {
    pub dir: PathBuf,
    passphrase: Option<String>,
}

/// The revocation reasons `certs revoke --reason` takes.
pub const REASONS: &[(&str, RevocationReason)] = &[
    ("unspecified", RevocationReason::Unspecified),
    ("key-compromise", RevocationReason::KeyCompromise),
    ("ca-compromise", RevocationReason::CaCompromise),
    ("affiliation-changed", RevocationReason::AffiliationChanged),
    ("superseded", RevocationReason::Superseded),
    ("cessation-of-operation", RevocationReason::CessationOfOperation),
    ("privilege-withdrawn", RevocationReason::PrivilegeWithdrawn),
];

impl CaDir {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Makes a root (valid `root_days`) and an intermediate (valid `intermediate_days`) in `dir`.
    pub fn init(
        dir: &Path,
        algorithm: Algorithm,
        passphrase: Option<String>,
        root_days: u32,
        intermediate_days: u32,
    ) -> Result<CaDir, CaError> {
        if dir.join("root.pem").exists() {
            return Err(CaError::Exists(dir.display().to_string()));
        }
        super::pki::private_dir(dir).map_err(|e| file_error(dir, e))?;
        super::pki::private_dir(&dir.join("issued")).map_err(|e| file_error(dir, e))?;
        let ca = CaDir { dir: dir.to_path_buf(), passphrase };
        let now = OffsetDateTime::now_utc();
        let ca_params =
            |name: &str, days: u32, path_len: Option<u8>| -> Result<CertificateParams, CaError> {
                let mut params = CertificateParams::new(Vec::<String>::new())?;
                let mut dn = DistinguishedName::new();
                dn.push(DnType::CommonName, name);
                dn.push(DnType::OrganizationName, "Liandong");
                params.distinguished_name = dn;
                params.is_ca = IsCa::Ca(
                    path_len.map_or(BasicConstraints::Unconstrained, BasicConstraints::Constrained),
                );
                params.key_usages = vec![
                    KeyUsagePurpose::KeyCertSign,
                    KeyUsagePurpose::CrlSign,
                    KeyUsagePurpose::DigitalSignature,
                ];
                params.not_before = now - time::Duration::minutes(5);
                params.not_after = now + time::Duration::days(i64::from(days));
                params.serial_number = Some(new_serial());
                params.key_identifier_method = KeyIdMethod::Sha256;
                Ok(params)
            };
        // Each CA's names carry its key's id: verifiers (webpki among them) find a CRL's issuer
        // and a chain's next link by name, so two CAs trusted at once (a rotation) must never
        // share one.
        let root_key = KeyPair::generate_for(algorithm.rcgen())?;
        let root_params =
            ca_params(&format!("Liandong root CA {}", key_id(&root_key)), root_days, None)?;
        let root = root_params.self_signed(&root_key)?;
        let intermediate_key = KeyPair::generate_for(algorithm.rcgen())?;
        let mut intermediate_params = ca_params(
            &format!("Liandong intermediate CA {}", key_id(&intermediate_key)),
            intermediate_days,
            Some(0),
        )?;
        intermediate_params.use_authority_key_identifier_extension = true;
        let intermediate = intermediate_params
            .signed_by(&intermediate_key, &Issuer::from_params(&root_params, &root_key))?;
        write_file(&ca.path("root.pem"), &root.pem(), false).map_err(|e| file_error(dir, e))?;
        ca.write_key(&ca.path("root-key.pem"), &root_key)?;
        write_file(&ca.path("intermediate.pem"), &intermediate.pem(), false)
            .map_err(|e| file_error(dir, e))?;
        ca.write_key(&ca.path("intermediate-key.pem"), &intermediate_key)?;
        write_file(&ca.path("chain.pem"), &format!("{}{}", intermediate.pem(), root.pem()), false)
            .map_err(|e| file_error(dir, e))?;
        ca.commit("init", Vec::new(), &Ledger { algorithm: Some(algorithm), ..Ledger::default() })?;
        Ok(ca)
    }

    /// Opens a CA folder; the passphrase is needed only when its keys are encrypted.
    pub fn open(dir: &Path, passphrase: Option<String>) -> Result<CaDir, CaError> {
        if !dir.join("root.pem").exists() || !dir.join("ledger.json").exists() {
            return Err(CaError::NotInitialized(dir.display().to_string()));
        }
        Ok(CaDir { dir: dir.to_path_buf(), passphrase })
    }

    fn write_key(&self, path: &Path, key: &KeyPair) -> Result<(), CaError> {
        let pem = match &self.passphrase {
            None => key.serialize_pem(),
            Some(passphrase) => encrypt_key(key, passphrase).map_err(|e| file_error(path, e))?,
        };
        write_file(path, &pem, true).map_err(|e| file_error(path, e))
    }

    fn read_key(&self, path: &Path) -> Result<KeyPair, CaError> {
        let text = std::fs::read_to_string(path).map_err(|e| file_error(path, e))?;
        let shown = path.display().to_string();
        if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
            let passphrase =
                self.passphrase.as_ref().ok_or_else(|| CaError::PassphraseNeeded(shown.clone()))?;
            use pkcs8::der::Decode;
            let (_, document) =
                pkcs8::SecretDocument::from_pem(&text).map_err(|e| file_error(path, e))?;
            let info = pkcs8::EncryptedPrivateKeyInfo::from_der(document.as_bytes())
                .map_err(|e| file_error(path, e))?;
            let plain =
                info.decrypt(passphrase).map_err(|_| CaError::WrongPassphrase(shown.clone()))?;
            return KeyPair::try_from(plain.as_bytes())
                .map_err(|_| CaError::WrongPassphrase(shown));
        }
        match pem_label(&text) {
            Some(label) if label.ends_with("PRIVATE KEY") => {
                KeyPair::from_pem(&text).map_err(|e| file_error(path, e))
            }
            found => Err(CaError::WrongFileType {
                path: shown,
                expected: "a private key (PEM)".into(),
                found: found.map_or("no PEM block".to_string(), |l| format!("a PEM {l}")),
            }),
        }
    }

    /// The intermediate as an issuer, after checking it (a certificate, not expired, its key),
    /// and when it expires.
    fn issuer(&self) -> Result<(Issuer<'static, KeyPair>, i64), CaError> {
        let cert_path = self.path("intermediate.pem");
        let key_path = self.path("intermediate-key.pem");
        let cert_pem =
            std::fs::read_to_string(&cert_path).map_err(|e| file_error(&cert_path, e))?;
        let der = certificate_der(&cert_path, &cert_pem)?;
        let (_, cert) =
            x509_parser::parse_x509_certificate(&der).map_err(|e| file_error(&cert_path, e))?;
        let not_after = cert.validity().not_after.timestamp();
        if not_after <= OffsetDateTime::now_utc().unix_timestamp() {
            return Err(CaError::Expired {
                path: cert_path.display().to_string(),
                not_after: date(not_after),
            });
        }
        let key = self.read_key(&key_path)?;
        if key.subject_public_key_info() != cert.tbs_certificate.subject_pki.raw {
            return Err(CaError::KeyMismatch {
                key: key_path.display().to_string(),
                cert: cert_path.display().to_string(),
            });
        }
        Ok((Issuer::from_ca_cert_der(&der.into(), key)?, not_after))
    }

    /// The ledger, once checked against the CA log (see [`super::ca_log`]). A CA folder from
    /// before the log gets one, starting from its ledger as it is (an `adopt` entry).
    pub fn ledger(&self) -> Result<Ledger, CaError> {
        let path = self.path("ledger.json");
        let text = std::fs::read_to_string(&path).map_err(|e| file_error(&path, e))?;
        let ledger: Ledger = serde_json::from_str(&text).map_err(|e| file_error(&path, e))?;
        let log = self.path("ca.log");
        if !log.exists() {
            super::ca_log::append(&log, "adopt", ledger.certificates.clone(), ledger.crl_number)?;
        }
        super::ca_log::check(&log, &ledger)?;
        Ok(ledger)
    }

    /// Records `action` in the CA log with the certificates it changed, then saves the ledger.
    fn commit(&self, action: &str, changed: Vec<Entry>, ledger: &Ledger) -> Result<(), CaError> {
        super::ca_log::append(&self.path("ca.log"), action, changed, ledger.crl_number)?;
        self.save(ledger)
    }

    fn save(&self, ledger: &Ledger) -> Result<(), CaError> {
        let path = self.path("ledger.json");
        let temporary = self.path("ledger.json.new");
        let text = serde_json::to_string_pretty(ledger).map_err(|e| file_error(&path, e))?;
        write_file(&temporary, &(text + "\n"), true).map_err(|e| file_error(&path, e))?;
        std::fs::rename(&temporary, &path).map_err(|e| file_error(&path, e))
    }

    /// Refuses an endpoint the registry does not know.
    pub fn check_subject(subject: &Subject, registry: &Registry) -> Result<(), CaError> {
        if let Subject::Identity(Identity::Endpoint(endpoint)) = subject {
            if registry.endpoint(endpoint).is_err() {
                return Err(CaError::Refused(format!(
                    "{endpoint} is not a registered endpoint (see `liandong endpoints`)"
                )));
            }
        }
        if let Subject::Server(names) = subject {
            if names.is_empty() || names.iter().any(String::is_empty) {
                return Err(CaError::Refused(
                    "a server certificate needs at least one DNS name or IP address".into(),
                ));
            }
        }
        Ok(())
    }

    /// Issues a certificate with a new key. A second live certificate for the same subject is
    /// refused unless `replace` (the old one is then marked replaced, and stays valid until it
    /// expires: revoke it when it must stop at once).
    pub fn issue(
        &self,
        subject: &Subject,
        days: u32,
        replace: bool,
    ) -> Result<IssuedFiles, CaError> {
        self.issue_with(subject, days, replace, None)
    }

    /// [`CaDir::issue`], the new key written encrypted with `key_passphrase` when given (the
    /// CA's own passphrase never protects an issued key: its holder would need it).
    pub fn issue_with(
        &self,
        subject: &Subject,
        days: u32,
        replace: bool,
        key_passphrase: Option<&str>,
    ) -> Result<IssuedFiles, CaError> {
        let algorithm = self.ledger()?.algorithm.unwrap_or(Algorithm::P256);
        let key = KeyPair::generate_for(algorithm.rcgen())?;
        self.sign(subject, days, replace, Signee::Key(&key, key_passphrase))
    }

    /// Signs a partner's CSR as `subject`; nothing of the CSR but its public key is used.
    pub fn sign_csr(
        &self,
        csr_path: &Path,
        subject: &Subject,
        days: u32,
        replace: bool,
    ) -> Result<IssuedFiles, CaError> {
        let text = std::fs::read_to_string(csr_path).map_err(|e| file_error(csr_path, e))?;
        if pem_label(&text).as_deref() != Some("CERTIFICATE REQUEST") {
            return Err(CaError::WrongFileType {
                path: csr_path.display().to_string(),
                expected: "a certificate signing request (PEM CERTIFICATE REQUEST)".into(),
                found: pem_label(&text)
                    .map_or("no PEM block".to_string(), |l| format!("a PEM {l}")),
            });
        }
        let csr = CertificateSigningRequestParams::from_pem(&text)
            .map_err(|e| file_error(csr_path, e))?;
        self.sign(subject, days, replace, Signee::Csr(Box::new(csr)))
    }

    fn sign(
        &self,
        subject: &Subject,
        days: u32,
        replace: bool,
        signee: Signee<'_>,
    ) -> Result<IssuedFiles, CaError> {
        if days == 0 {
            return Err(CaError::Refused("--days: expected at least 1".into()));
        }
        let (issuer, issuer_not_after) = self.issuer()?;
        let mut ledger = self.ledger()?;
        let name = subject.name();
        let now = OffsetDateTime::now_utc();
        let live: Vec<usize> = ledger
            .certificates
            .iter()
            .enumerate()
            .filter(|(_, e)| {
                e.subject == name && e.status == Status::Live && e.not_after > now.unix_timestamp()
            })
            .map(|(i, _)| i)
            .collect();
        if let (Some(&first), false) = (live.first(), replace) {
            return Err(CaError::Refused(format!(
                "{name} already has a live certificate (serial {}); use --replace to issue another, or `renew`",
                ledger.certificates[first].serial
            )));
        }
        // A certificate never outlives its issuer: verifiers stop trusting it when the
        // intermediate expires, whatever its own date says.
        let asked = now + time::Duration::days(i64::from(days));
        let not_after = match OffsetDateTime::from_unix_timestamp(issuer_not_after) {
            Ok(cap) if cap < asked => cap,
            _ => asked,
        };
        let capped_by_issuer = not_after < asked;
        let params = subject.params(now - time::Duration::minutes(5), not_after)?;
        let serial =
            hex(&params.serial_number.as_ref().map(SerialNumber::to_bytes).unwrap_or_default());
        let (cert, key_pem) = match signee {
            Signee::Key(key, passphrase) => {
                let pem = match passphrase {
                    Some(passphrase) => {
                        encrypt_key(key, passphrase).map_err(|e| file_error(&self.dir, e))?
                    }
                    None => key.serialize_pem(),
                };
                (params.signed_by(key, &issuer)?, Some(pem))
            }
            Signee::Csr(mut csr) => {
                csr.params = params;
                (csr.signed_by(&issuer)?, None)
            }
        };
        let stem = format!("{}-{}", subject.file_stem(), &serial[..8]);
        let cert_path = self.path(&format!("issued/{stem}.pem"));
        let chain_path = self.path(&format!("issued/{stem}-chain.pem"));
        let intermediate = std::fs::read_to_string(self.path("intermediate.pem"))
            .map_err(|e| file_error(&self.dir, e))?;
        write_file(&cert_path, &cert.pem(), false).map_err(|e| file_error(&cert_path, e))?;
        write_file(&chain_path, &format!("{}{intermediate}", cert.pem()), false)
            .map_err(|e| file_error(&chain_path, e))?;
        let key_path = match &key_pem {
            Some(pem) => {
                let path = self.path(&format!("issued/{stem}-key.pem"));
                write_file(&path, pem, true).map_err(|e| file_error(&path, e))?;
                Some(path)
            }
            None => None,
        };
        let mut changed = Vec::new();
        for i in live {
            ledger.certificates[i].status = Status::Replaced;
            changed.push(ledger.certificates[i].clone());
        }
        let not_after = not_after.unix_timestamp();
        ledger.certificates.push(Entry {
            serial: serial.clone(),
            subject: name.clone(),
            not_before: now.unix_timestamp() - 300,
            not_after,
            status: Status::Live,
            file: format!("issued/{stem}.pem"),
            revoked_at: None,
            reason: None,
        });
        changed.extend(ledger.certificates.last().cloned());
        self.commit("issue", changed, &ledger)?;
        Ok(IssuedFiles {
            serial,
            subject: name,
            cert: cert_path,
            key: key_path,
            chain: chain_path,
            not_after,
            capped_by_issuer,
        })
    }

    /// Writes a PKCS#12 bundle of an issued key and its chain up to the root, next to the
    /// certificate (`…p12`), encrypted with `password` (PBES2, AES-256, HMAC-SHA-256: what
    /// OpenSSL 3 and current JDKs read).
    pub fn write_p12(&self, files: &IssuedFiles, password: &str) -> Result<PathBuf, CaError> {
        let key_path = files
            .key
            .as_ref()
            .ok_or_else(|| CaError::Refused("a signed CSR has no key here to bundle".into()))?;
        let key = KeyPair::from_pem(
            &std::fs::read_to_string(key_path).map_err(|e| file_error(key_path, e))?,
        )
        .map_err(|e| file_error(key_path, e))?;
        let mut certs = Vec::new();
        for path in [&files.chain, &self.path("root.pem")] {
            for der in super::tls::certificates(path).map_err(|e| file_error(path, e))? {
                certs.push(
                    p12_keystore::Certificate::from_der(&der).map_err(|e| file_error(path, e))?,
                );
            }
        }
        let private = p12_keystore::PrivateKey::from_der(&key.serialize_der())
            .map_err(|e| file_error(key_path, e))?;
        let mut store = p12_keystore::KeyStore::new();
        let chain = p12_keystore::PrivateKeyChain::new(files.serial.as_bytes(), private, certs);
        store.add_entry(&files.subject, p12_keystore::KeyStoreEntry::PrivateKeyChain(chain));
        let bytes = store.writer(password).write().map_err(|e| file_error(&files.cert, e))?;
        let path = files.cert.with_extension("p12");
        super::pki::write_bytes(&path, &bytes, true).map_err(|e| file_error(&path, e))?;
        Ok(path)
    }

    /// Finds ledger entries by serial (a unique prefix of at least 8 hex digits) or by subject.
    fn find(&self, ledger: &Ledger, which: &str) -> Result<Vec<usize>, CaError> {
        let which = which.trim().to_ascii_lowercase();
        let by_serial: Vec<usize> = ledger
            .certificates
            .iter()
            .enumerate()
            .filter(|(_, e)| which.len() >= 8 && e.serial.starts_with(&which))
            .map(|(i, _)| i)
            .collect();
        if !by_serial.is_empty() {
            return if by_serial.len() == 1 {
                Ok(by_serial)
            } else {
                Err(CaError::Refused(format!(
                    "{which} matches {} serials; give more digits",
                    by_serial.len()
                )))
            };
        }
        let by_subject: Vec<usize> = ledger
            .certificates
            .iter()
            .enumerate()
            .filter(|(_, e)| {
                e.subject == which || Subject::parse(&which).is_ok_and(|s| s.name() == e.subject)
            })
            .map(|(i, _)| i)
            .collect();
        if by_subject.is_empty() {
            return Err(CaError::Refused(format!(
                "no certificate with serial or identity {which:?} in the ledger"
            )));
        }
        Ok(by_subject)
    }

    /// Renews: a new certificate for the same subject, with a new key (or, with `keep_key`, the
    /// old key); the old one is marked replaced.
    pub fn renew(&self, which: &str, days: u32, keep_key: bool) -> Result<IssuedFiles, CaError> {
        let ledger = self.ledger()?;
        let found = self.find(&ledger, which)?;
        let entry = found
            .iter()
            .rev()
            .map(|&i| &ledger.certificates[i])
            .find(|e| e.status != Status::Revoked)
            .ok_or_else(|| {
                CaError::Refused(format!("{which}: revoked; issue a new certificate instead"))
            })?
            .clone();
        let subject = Subject::parse(&entry.subject)?;
        if keep_key {
            let key_path = self.path(&entry.file.replace(".pem", "-key.pem"));
            if !key_path.exists() {
                return Err(CaError::Refused(format!(
                    "{}: no key here (a CSR was signed); renew with a new CSR",
                    entry.subject
                )));
            }
            let key = KeyPair::from_pem(
                &std::fs::read_to_string(&key_path).map_err(|e| file_error(&key_path, e))?,
            )
            .map_err(|e| file_error(&key_path, e))?;
            return self.sign(&subject, days, true, Signee::Key(&key, None));
        }
        self.issue(&subject, days, true)
    }

    /// Revokes by serial, or every live certificate of an identity. Returns the serials.
    pub fn revoke(&self, which: &str, reason: &str) -> Result<Vec<String>, CaError> {
        if !REASONS.iter().any(|(name, _)| *name == reason) {
            let names: Vec<&str> = REASONS.iter().map(|(n, _)| *n).collect();
            return Err(CaError::Refused(format!(
                "--reason: expected one of {}, got {reason:?}",
                names.join(", ")
            )));
        }
        let mut ledger = self.ledger()?;
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let mut revoked = Vec::new();
        for i in self.find(&ledger, which)? {
            let entry = &mut ledger.certificates[i];
            if entry.status != Status::Revoked {
                entry.status = Status::Revoked;
                entry.revoked_at = Some(now);
                entry.reason = Some(reason.to_string());
                revoked.push(entry.clone());
            }
        }
        if revoked.is_empty() {
            return Err(CaError::Refused(format!("{which}: already revoked")));
        }
        let serials = revoked.iter().map(|e| e.serial.clone()).collect();
        self.commit("revoke", revoked, &ledger)?;
        Ok(serials)
    }

    /// Writes `crl.pem`: every revoked certificate not yet expired, signed by the intermediate,
    /// with the next CRL number; valid until now + `next_update`.
    pub fn crl(&self, next_update: Duration) -> Result<PathBuf, CaError> {
        let (issuer, _) = self.issuer()?;
        let mut ledger = self.ledger()?;
        let now = OffsetDateTime::now_utc();
        ledger.crl_number += 1;
        let revoked_certs = ledger
            .certificates
            .iter()
            .filter(|e| e.status == Status::Revoked && e.not_after > now.unix_timestamp())
            .map(|e| {
                let bytes: Vec<u8> = (0..e.serial.len() / 2)
                    .filter_map(|i| u8::from_str_radix(&e.serial[2 * i..2 * i + 2], 16).ok())
                    .collect();
                RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&bytes),
                    revocation_time: e
                        .revoked_at
                        .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok())
                        .unwrap_or(now),
                    reason_code: REASONS
                        .iter()
                        .find(|(n, _)| Some(*n) == e.reason.as_deref())
                        .map(|(_, r)| *r),
                    invalidity_date: None,
                }
            })
            .collect();
        let params = CertificateRevocationListParams {
            this_update: now - time::Duration::minutes(1),
            next_update: now
                + time::Duration::seconds(next_update.as_secs().min(i64::MAX as u64) as i64),
            crl_number: SerialNumber::from(ledger.crl_number),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params.signed_by(&issuer)?;
        let path = self.path("crl.pem");
        write_file(&path, &crl.pem()?, false).map_err(|e| file_error(&path, e))?;
        self.commit("crl", Vec::new(), &ledger)?;
        Ok(path)
    }

    /// What expires within `window` (already expired included): live certificates, the CA's
    /// own two (`ca:root`, `ca:intermediate`), and the CRL (`crl`, its next update — after it,
    /// verifiers that check dates refuse it).
    pub fn expiring(&self, window: Duration) -> Result<Vec<Entry>, CaError> {
        let limit = OffsetDateTime::now_utc().unix_timestamp() + window.as_secs() as i64;
        let mut all = self.ledger()?.certificates;
        for which in ["root", "intermediate"] {
            let path = self.path(&format!("{which}.pem"));
            let pem = std::fs::read_to_string(&path).map_err(|e| file_error(&path, e))?;
            let der = certificate_der(&path, &pem)?;
            let (_, cert) =
                x509_parser::parse_x509_certificate(&der).map_err(|e| file_error(&path, e))?;
            all.push(Entry {
                serial: cert.raw_serial_as_string().replace(':', ""),
                subject: format!("ca:{which} ({})", cert.subject()),
                not_before: cert.validity().not_before.timestamp(),
                not_after: cert.validity().not_after.timestamp(),
                status: Status::Live,
                file: format!("{which}.pem"),
                revoked_at: None,
                reason: None,
            });
        }
        let crl_path = self.path("crl.pem");
        if let Ok(pem) = std::fs::read(&crl_path) {
            use rustls::pki_types::pem::PemObject;
            let der = rustls::pki_types::CertificateRevocationListDer::from_pem_slice(&pem)
                .map_err(|e| file_error(&crl_path, e))?;
            let (_, crl) =
                x509_parser::parse_x509_crl(&der).map_err(|e| file_error(&crl_path, e))?;
            if let Some(next) = crl.next_update() {
                all.push(Entry {
                    serial: crl.crl_number().map_or(String::new(), |n| format!("#{n}")),
                    subject: "crl (its next update)".into(),
                    not_before: crl.last_update().timestamp(),
                    not_after: next.timestamp(),
                    status: Status::Live,
                    file: "crl.pem".into(),
                    revoked_at: None,
                    reason: None,
                });
            }
        }
        Ok(all.into_iter().filter(|e| e.status == Status::Live && e.not_after <= limit).collect())
    }
}

enum Signee<'a> {
    /// A key made here, and the passphrase to write it encrypted with, if any.
    Key(&'a KeyPair, Option<&'a str>),
    Csr(Box<CertificateSigningRequestParams>),
}

/// The first 8 hex digits of the SHA-256 of a public key: what tells two CAs' names apart.
fn key_id(key: &KeyPair) -> String {
    use sha2::{Digest, Sha256};
    hex(&Sha256::digest(key.subject_public_key_info())[..4])
}

/// The label of the first PEM block (`CERTIFICATE`, `PRIVATE KEY`, …).
pub fn pem_label(text: &str) -> Option<String> {
    let start = text.find("-----BEGIN ")? + "-----BEGIN ".len();
    let end = text[start..].find("-----")?;
    Some(text[start..start + end].to_string())
}

/// The first certificate of a PEM text, as DER.
fn certificate_der(path: &Path, pem: &str) -> Result<Vec<u8>, CaError> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).map(|c| c.to_vec()).map_err(
        |_| CaError::WrongFileType {
            path: path.display().to_string(),
            expected: "a certificate (PEM CERTIFICATE)".into(),
            found: pem_label(pem).map_or("no PEM block".to_string(), |l| format!("a PEM {l}")),
        },
    )
}

/// A key as encrypted PKCS#8 PEM (PBKDF2-SHA256 600,000 rounds, AES-256-CBC).
fn encrypt_key(key: &KeyPair, passphrase: &str) -> Result<String, String> {
    use pkcs8::der::Decode;
    let mut salt = [0u8; 16];
    let mut iv = [0u8; 16];
    random(&mut salt);
    random(&mut iv);
    let params =
        pkcs8::pkcs5::pbes2::Parameters::pbkdf2_sha256_aes256cbc(ENCRYPTION_ROUNDS, &salt, &iv)
            .map_err(|e| e.to_string())?;
    let der = key.serialize_der();
    let info = pkcs8::PrivateKeyInfo::from_der(&der).map_err(|e| e.to_string())?;
    let encrypted =
        info.encrypt_with_params(params, passphrase.as_bytes()).map_err(|e| e.to_string())?;
    encrypted
        .to_pem("ENCRYPTED PRIVATE KEY", pkcs8::LineEnding::LF)
        .map(|s| s.to_string())
        .map_err(|e| e.to_string())
}

/// PBKDF2 rounds for encrypted keys (OWASP's 2023 figure for PBKDF2-HMAC-SHA256).
const ENCRYPTION_ROUNDS: u32 = 600_000;

/// A Unix time as a date for people.
pub fn date(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix)
        .map(|t| {
            format!(
                "{:04}-{:02}-{:02} {:02}:{:02} UTC",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute()
            )
        })
        .unwrap_or_else(|_| unix.to_string())
}
