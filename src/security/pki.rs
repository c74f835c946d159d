//! A development certificate authority: what `liandong init` and the tests use to make a site
//! with real certificates. (Security teams get the full tool, `liandong certs`, in its own
//! module.)

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use super::{Identity, TlsError};

/// A CA that can issue certificates.
pub struct DevCa {
    params: CertificateParams,
    key: KeyPair,
    /// The CA certificate, PEM.
    pub cert_pem: String,
}

/// An issued certificate and its key, PEM.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl DevCa {
    /// A new self-signed CA, valid ten years.
    pub fn new(name: &str) -> Result<DevCa, TlsError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        dn.push(DnType::OrganizationName, "Liandong development");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        params.not_after = rcgen::date_time_ymd(2035, 1, 1);
        let key = KeyPair::generate()?;
        let cert_pem = params.self_signed(&key)?.pem();
        Ok(DevCa { params, key, cert_pem })
    }

    fn issue(
        &self,
        common_name: &str,
        sans: Vec<SanType>,
        usages: Vec<ExtendedKeyUsagePurpose>,
    ) -> Result<Issued, TlsError> {
        self.issue_between(
            common_name,
            sans,
            usages,
            rcgen::date_time_ymd(2024, 1, 1),
            rcgen::date_time_ymd(2034, 1, 1),
        )
    }

    fn issue_between(
        &self,
        common_name: &str,
        sans: Vec<SanType>,
        usages: Vec<ExtendedKeyUsagePurpose>,
        not_before: time::OffsetDateTime,
        not_after: time::OffsetDateTime,
    ) -> Result<Issued, TlsError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        params.subject_alt_names = sans;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = usages;
        params.not_before = not_before;
        params.not_after = not_after;
        let key = KeyPair::generate()?;
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer)?;
        Ok(Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// A server certificate for these DNS names and IP addresses.
    pub fn server(&self, names: &[&str]) -> Result<Issued, TlsError> {
        let sans = names
            .iter()
            .map(|n| match n.parse::<std::net::IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => Ok(SanType::DnsName((*n).try_into()?)),
            })
            .collect::<Result<Vec<_>, rcgen::Error>>()?;
        self.issue(
            names.first().copied().unwrap_or("localhost"),
            sans,
            vec![ExtendedKeyUsagePurpose::ServerAuth],
        )
    }

    /// A client certificate carrying an identity as its URI SAN.
    pub fn client(&self, identity: &Identity) -> Result<Issued, TlsError> {
        let uri = identity.uri();
        self.issue(
            &uri,
            vec![SanType::URI(uri.as_str().try_into()?)],
            vec![ExtendedKeyUsagePurpose::ClientAuth],
        )
    }

    /// A client certificate that expired at the end of 2024 (for tests of refusals).
    pub fn expired_client(&self, identity: &Identity) -> Result<Issued, TlsError> {
        let uri = identity.uri();
        let sans = vec![SanType::URI(uri.as_str().try_into()?)];
        let usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue_between(
            &uri,
            sans,
            usages,
            rcgen::date_time_ymd(2023, 1, 1),
            rcgen::date_time_ymd(2024, 12, 31),
        )
    }

    /// A client certificate valid from a minute ago until `not_after` (for tests of expiry).
    pub fn client_until(
        &self,
        identity: &Identity,
        not_after: time::OffsetDateTime,
    ) -> Result<Issued, TlsError> {
        let uri = identity.uri();
        let sans = vec![SanType::URI(uri.as_str().try_into()?)];
        let usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue_between(
            &uri,
            sans,
            usages,
            time::OffsetDateTime::now_utc() - time::Duration::minutes(1),
            not_after,
        )
    }

    /// A certificate usable both ways (a test destination that is also a client).
    pub fn server_and_client(
        &self,
        names: &[&str],
        identity: &Identity,
    ) -> Result<Issued, TlsError> {
        let mut sans = vec![SanType::URI(identity.uri().as_str().try_into()?)];
        for n in names {
            sans.push(match n.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*n).try_into()?),
            });
        }
        self.issue(
            &identity.uri(),
            sans,
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
        )
    }
}

impl Issued {
    /// Writes `NAME.pem` and `NAME-key.pem` (mode 0600) into `dir`; returns their paths.
    pub fn write(&self, dir: &Path, name: &str) -> Result<(PathBuf, PathBuf), TlsError> {
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}-key.pem"));
        write_file(&cert, &self.cert_pem, false)?;
        write_file(&key, &self.key_pem, true)?;
        Ok((cert, key))
    }
}

/// Writes a file; private ones get mode 0600.
pub fn write_file(path: &Path, contents: &str, private: bool) -> Result<(), TlsError> {
    write_bytes(path, contents.as_bytes(), private)
        .map_err(|e| TlsError::File { path: path.display().to_string(), problem: e.to_string() })
}

/// Writes a file; a private one (keys, `.p12` bundles, the CA ledger) is created with mode 0600
/// — never readable by others, not even between its creation and a later chmod — and made
/// 0600 first when it already exists with a wider mode.
pub fn write_bytes(path: &Path, contents: &[u8], private: bool) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(0o600);
        if path.exists() {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    options.open(path)?.write_all(contents)
}

/// Opens a private file (mode 0600 when created) for appending: the CA log.
pub fn append_private(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.append(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

/// Makes a folder (and its parents) that only its owner may enter: mode 0700 (the CA's).
pub fn private_dir(path: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}
