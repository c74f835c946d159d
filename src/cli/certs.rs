//! `liandong certs`: the security teams' tool over [`crate::security::ca`].

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::CliError;
use crate::security::ca::{date, Algorithm, CaDir, CaError, IssuedFiles, Status, Subject};
use crate::security::Identity;

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Make an offline root CA and an online intermediate, with an empty ledger.
    Init {
        #[command(flatten)]
        ca: CaArgs,
        #[arg(long, value_enum, default_value = "p256")]
        algorithm: Algorithm,
        #[arg(long, default_value_t = 3650)]
        root_days: u32,
        #[arg(long, default_value_t = 1825)]
        intermediate_days: u32,
    },
    /// Issue a key and certificate: `endpoint REGION/PLATFORM`, `agency NAME`, `office NAME` (a
    /// linkage office), `operator NAME`, `gateway NAME` or `server NAME…` (DNS names or IP
    /// addresses).
    Issue {
        #[command(flatten)]
        ca: CaArgs,
        kind: String,
        #[arg(required = true)]
        names: Vec<String>,
        #[arg(long, default_value_t = 365)]
        days: u32,
        /// Issue even though the identity has a live certificate (which is marked replaced).
        #[arg(long)]
        replace: bool,
        /// Also write a PKCS#12 bundle (key + chain to the root), encrypted with the passphrase in this file.
        #[arg(long, value_name = "FILE")]
        p12: Option<PathBuf>,
        /// Write the new key encrypted (PKCS#8, as the CA's keys) with the passphrase in this
        /// file, for its holder; without it the key is written in the clear (mode 0600).
        #[arg(long, value_name = "FILE", conflicts_with = "p12")]
        encrypt: Option<PathBuf>,
    },
    /// Sign a partner's CSR; the identity comes from --as, never from the CSR.
    SignCsr {
        #[command(flatten)]
        ca: CaArgs,
        file: PathBuf,
        /// `liandong://endpoint/330200/110`, `endpoint/330200/110`, `agency/NAME`, …
        #[arg(long = "as")]
        identity: String,
        #[arg(long, default_value_t = 365)]
        days: u32,
        #[arg(long)]
        replace: bool,
    },
    /// A new certificate for the same identity (a new key unless --keep-key); the old one is marked replaced.
    Renew {
        #[command(flatten)]
        ca: CaArgs,
        /// A serial (8 hex digits or more) or an identity.
        which: String,
        #[arg(long, default_value_t = 365)]
        days: u32,
        #[arg(long)]
        keep_key: bool,
    },
    /// Revoke a certificate by serial, or every certificate of an identity; then run `crl`.
    Revoke {
        #[command(flatten)]
        ca: CaArgs,
        serial: Option<String>,
        #[arg(long, conflicts_with = "serial")]
        identity: Option<String>,
        /// unspecified, key-compromise, ca-compromise, affiliation-changed, superseded,
        /// cessation-of-operation, privilege-withdrawn.
        #[arg(long, default_value = "unspecified")]
        reason: String,
    },
    /// Write a signed CRL (crl.pem) of every revoked certificate.
    Crl {
        #[command(flatten)]
        ca: CaArgs,
        #[arg(long, default_value = "7d", value_parser = crate::config::duration::parse)]
        next_update: std::time::Duration,
    },
    /// Everything issued: identity, serial, expiry, days left, status.
    List {
        #[command(flatten)]
        ca: CaArgs,
        #[arg(long)]
        json: bool,
    },
    /// Describe any certificate, chain, CSR or CRL (PEM or DER).
    Inspect { file: PathBuf },
    /// Exit 1, listing them, when a live certificate expires within the window (for monitoring).
    CheckExpiry {
        #[command(flatten)]
        ca: CaArgs,
        #[arg(long, default_value = "30d", value_parser = crate::config::duration::parse)]
        within: std::time::Duration,
    },
}

#[derive(Debug, Args)]
pub struct CaArgs {
    /// The CA folder.
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// A file holding the passphrase of the CA's keys (or LIANDONG_CA_PASSPHRASE).
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
}

impl CaArgs {
    fn passphrase(&self) -> Result<Option<String>, CliError> {
        match &self.passphrase_file {
            Some(file) => std::fs::read_to_string(file)
                .map(|p| Some(p.trim_end_matches(['\n', '\r']).to_string()))
                .map_err(|e| CliError::Failed(format!("{}: {e}", file.display()))),
            None => Ok(std::env::var("LIANDONG_CA_PASSPHRASE").ok().filter(|p| !p.is_empty())),
        }
    }

    fn open(&self) -> Result<CaDir, CliError> {
        CaDir::open(&self.dir, self.passphrase()?).map_err(failed)
    }
}

/// A CA error as the command's failure: refusals and wrong input exit 2, the rest 1.
fn failed(error: CaError) -> CliError {
    match error {
        CaError::File { .. } | CaError::Generate(_) | CaError::Tampered(_) => {
            CliError::Failed(error.to_string())
        }
        _ => CliError::Invalid(error.to_string()),
    }
}

/// `endpoint 330200/110` and the like, as a subject.
pub fn subject(kind: &str, names: &[String]) -> Result<Subject, CliError> {
    let one = || match names {
        [name] => Ok(name.clone()),
        _ => Err(CliError::Invalid(format!("{kind}: expected one name, got {}", names.len()))),
    };
    let identity =
        |uri: String| Identity::from_uri(&uri).map(Subject::Identity).map_err(CliError::Invalid);
    match kind {
        "endpoint" | "agency" | "office" | "operator" | "gateway" => {
            identity(format!("liandong://{kind}/{}", one()?))
        }
        "server" => Ok(Subject::Server(names.to_vec())),
        other => Err(CliError::Invalid(format!(
            "expected endpoint, agency, office, operator, gateway or server, got {other:?}"
        ))),
    }
}

/// `liandong://endpoint/330200/110` or `endpoint/330200/110`.
fn identity_subject(text: &str) -> Result<Subject, CliError> {
    let uri = if text.starts_with("liandong://") {
        text.to_string()
    } else {
        format!("liandong://{text}")
    };
    Identity::from_uri(&uri)
        .map(Subject::Identity)
        .map_err(|e| CliError::Invalid(format!("--as: {e}")))
}

fn issued_text(files: &IssuedFiles) -> String {
    let mut out = format!(
        "issued {} serial {} (expires {})\n  certificate: {}\n  chain:       {}\n",
        files.subject,
        files.serial,
        date(files.not_after),
        files.cert.display(),
        files.chain.display()
    );
    if let Some(key) = &files.key {
        out.push_str(&format!("  key:         {} (mode 0600)\n", key.display()));
    }
    if files.capped_by_issuer {
        out.push_str(&format!(
            "warning: shortened to end with the intermediate CA ({}): no certificate outlives its issuer; make a new CA before then (certs/README.md, rotation)\n",
            date(files.not_after)
        ));
    }
    out
}

pub fn certs(
    command: &CertsCommand,
    registry: &crate::formats::Registry,
    stdout: &mut dyn Write,
) -> Result<(), CliError> {
    let text = match command {
        CertsCommand::Init { ca, algorithm, root_days, intermediate_days } => {
            let passphrase = ca.passphrase()?;
            let encrypted = passphrase.is_some();
            CaDir::init(&ca.dir, *algorithm, passphrase, *root_days, *intermediate_days)
                .map_err(failed)?;
            format!(
                "a CA in {dir}: root.pem (the gateway's tls.ca), intermediate.pem, chain.pem, ledger.json\n  keys: {}\n  move root-key.pem offline: only `certs init` needs it\n",
                if encrypted { "encrypted with the passphrase" } else { "NOT encrypted (give --passphrase-file to encrypt them)" },
                dir = ca.dir.display()
            )
        }
        CertsCommand::Issue { ca, kind, names, days, replace, p12, encrypt } => {
            let subject = subject(kind, names)?;
            CaDir::check_subject(&subject, registry).map_err(failed)?;
            let secret = |file: &PathBuf| {
                std::fs::read_to_string(file)
                    .map(|p| p.trim_end_matches(['\n', '\r']).to_string())
                    .map_err(|e| CliError::Failed(format!("{}: {e}", file.display())))
            };
            let password = p12.as_ref().map(secret).transpose()?;
            let key_passphrase = encrypt.as_ref().map(secret).transpose()?;
            let ca = ca.open()?;
            let files = ca
                .issue_with(&subject, *days, *replace, key_passphrase.as_deref())
                .map_err(failed)?;
            let mut text = issued_text(&files);
            text = match (key_passphrase.is_some(), &files.key) {
                (true, Some(_)) => text
                    .replace("(mode 0600)", "(mode 0600, encrypted with the --encrypt passphrase)"),
                (false, Some(_)) if password.is_none() => text.replace(
                    "(mode 0600)",
                    "(mode 0600, NOT encrypted: --encrypt FILE encrypts it for its holder)",
                ),
                _ => text,
            };
            if let Some(password) = password {
                let bundle = ca.write_p12(&files, &password).map_err(failed)?;
                text.push_str(&format!("  pkcs#12:     {} (mode 0600)\n", bundle.display()));
            }
            text
        }
        CertsCommand::SignCsr { ca, file, identity, days, replace } => {
            let subject = identity_subject(identity)?;
            CaDir::check_subject(&subject, registry).map_err(failed)?;
            issued_text(&ca.open()?.sign_csr(file, &subject, *days, *replace).map_err(failed)?)
        }
        CertsCommand::Renew { ca, which, days, keep_key } => {
            issued_text(&ca.open()?.renew(which, *days, *keep_key).map_err(failed)?)
        }
        CertsCommand::Revoke { ca, serial, identity, reason } => {
            let which = serial
                .as_deref()
                .or(identity.as_deref())
                .ok_or_else(|| CliError::Invalid("give a SERIAL or --identity".into()))?;
            let serials = ca.open()?.revoke(which, reason).map_err(failed)?;
            format!(
                "revoked {} ({reason}); run `liandong certs crl` and let the gateway load it\n",
                serials.join(", ")
            )
        }
        CertsCommand::Crl { ca, next_update } => {
            let path = ca.open()?.crl(*next_update).map_err(failed)?;
            format!("wrote {}\n", path.display())
        }
        CertsCommand::List { ca, json } => {
            let ledger = ca.open()?.ledger().map_err(failed)?;
            if *json {
                serde_json::to_string_pretty(&ledger.certificates).unwrap_or_default() + "\n"
            } else {
                list(&ledger.certificates)
            }
        }
        CertsCommand::Inspect { file } => {
            let bytes = std::fs::read(file)
                .map_err(|e| CliError::Failed(format!("{}: {e}", file.display())))?;
            crate::security::inspect::describe(&file.display().to_string(), &bytes)
                .map_err(failed)?
        }
        CertsCommand::CheckExpiry { ca, within } => {
            let expiring = ca.open()?.expiring(*within).map_err(failed)?;
            if !expiring.is_empty() {
                return Err(CliError::Failed(format!(
                    "{} certificate(s) expire within {} days:\n{}",
                    expiring.len(),
                    within.as_secs() / 86_400,
                    list(&expiring).trim_end()
                )));
            }
            format!("nothing expires within {} days\n", within.as_secs() / 86_400)
        }
    };
    stdout.write_all(text.as_bytes()).map_err(|e| CliError::Failed(format!("cannot write: {e}")))
}

fn list(entries: &[crate::security::ca::Entry]) -> String {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut out = format!(
        "{:<44} {:<34} {:<22} {:>9}  {}\n",
        "IDENTITY", "SERIAL", "NOT AFTER", "DAYS LEFT", "STATUS"
    );
    for e in entries {
        let status = match e.status {
            Status::Live if e.not_after < now => "expired".to_string(),
            Status::Live => "live".to_string(),
            Status::Replaced => "replaced".to_string(),
            Status::Revoked => {
                format!("revoked ({})", e.reason.as_deref().unwrap_or("unspecified"))
            }
        };
        out.push_str(&format!(
            "{:<44} {:<34} {:<22} {:>9}  {status}\n",
            e.subject,
            e.serial,
            date(e.not_after),
            (e.not_after - now).div_euclid(86_400)
        ));
    }
    out
}
