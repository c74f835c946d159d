//! The CA's own log: every action on the CA folder (init, issue, revoke, CRL) appended to
//! `ca.log`, one JSON line each, hash-chained, with the certificates the action changed as they
//! were after it. `ledger.json` is what the tool reads and edits; the log is how it knows the
//! ledger was not edited by hand: before the ledger is trusted, the chain is checked (naming the
//! first entry that was changed) and the ledger is compared with what the log says (naming the
//! first certificate that differs) — a revoked certificate set back to `live` in the ledger
//! would otherwise silently drop off the next CRL.

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::ca::{CaError, Entry, Ledger};

/// One line of the log.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Record {
    pub seq: u64,
    pub at: i64,
    /// `init`, `adopt` (a CA folder from before the log), `issue`, `revoke`, `crl`.
    pub action: String,
    /// The certificates this action changed, as they were after it.
    #[serde(default)]
    pub certificates: Vec<Entry>,
    pub crl_number: u64,
    pub prev: String,
    #[serde(default)]
    pub hash: String,
}

/// The hash of a record: SHA-256 over the previous hash and the record's JSON without its hash.
fn digest(record: &Record) -> String {
    let mut unhashed = record.clone();
    unhashed.hash = String::new();
    let text = serde_json::to_string(&unhashed).unwrap_or_default();
    crate::model::digest::sha256_hex(format!("{}\n{text}", record.prev).as_bytes())
}

fn tampered(path: &Path, problem: String) -> CaError {
    CaError::Tampered(format!("{}: {problem}", path.display()))
}

/// Reads and checks the chain; the records in order.
pub fn read(path: &Path) -> Result<Vec<Record>, CaError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CaError::File { path: path.display().to_string(), problem: e.to_string() })?;
    let mut records: Vec<Record> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i as u64 + 1;
        let record: Record = serde_json::from_str(line)
            .map_err(|e| tampered(path, format!("entry {n} is unreadable: {e}")))?;
        let prev = records.last().map_or(String::new(), |r| r.hash.clone());
        if record.seq != n || record.prev != prev || record.hash != digest(&record) {
            return Err(tampered(
                path,
                format!(
                    "entry {n} ({} at {}) was changed: its hash does not follow from what came before",
                    record.action,
                    super::ca::date(record.at)
                ),
            ));
        }
        records.push(record);
    }
    Ok(records)
}

/// Appends a record of `action` with the certificates it changed. The chain was checked when
/// the ledger was read ([`check`]); only the last record is needed to extend it.
pub fn append(
    path: &Path,
    action: &str,
    certificates: Vec<Entry>,
    crl_number: u64,
) -> Result<(), CaError> {
    let last: Option<Record> = match std::fs::read_to_string(path) {
        Ok(text) => match text.lines().last() {
            Some(line) => Some(
                serde_json::from_str(line)
                    .map_err(|e| tampered(path, format!("its last entry is unreadable: {e}")))?,
            ),
            None => None,
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(CaError::File { path: path.display().to_string(), problem: e.to_string() })
        }
    };
    let mut record = Record {
        seq: last.as_ref().map_or(0, |r| r.seq) + 1,
        at: time::OffsetDateTime::now_utc().unix_timestamp(),
        action: action.to_string(),
        certificates,
        crl_number,
        prev: last.map_or(String::new(), |r| r.hash),
        hash: String::new(),
    };
    record.hash = digest(&record);
    let line = serde_json::to_string(&record).unwrap_or_default() + "\n";
    let io = |e: std::io::Error| CaError::File {
        path: path.display().to_string(),
        problem: e.to_string(),
    };
    let mut file = super::pki::append_private(path).map_err(io)?;
    file.write_all(line.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)
}

/// Checks the ledger against the log: every certificate as the log last recorded it, in the
/// order the log first recorded them, and the last CRL number.
pub fn check(path: &Path, ledger: &Ledger) -> Result<(), CaError> {
    let records = read(path)?;
    let mut expected: Vec<(Entry, u64, String)> = Vec::new();
    let mut crl_number = 0;
    for record in &records {
        crl_number = crl_number.max(record.crl_number);
        for entry in &record.certificates {
            match expected.iter_mut().find(|(e, _, _)| e.serial == entry.serial) {
                Some(slot) => *slot = (entry.clone(), record.seq, record.action.clone()),
                None => expected.push((entry.clone(), record.seq, record.action.clone())),
            }
        }
    }
    let ledger_file = path.with_file_name("ledger.json");
    for (i, (entry, seq, action)) in expected.iter().enumerate() {
        match ledger.certificates.get(i) {
            Some(found) if found == entry => {}
            Some(found) if found.serial == entry.serial => {
                return Err(tampered(
                    &ledger_file,
                    format!(
                        "serial {} differs from the CA log (entry {seq}, {action}): the ledger says {}, the log {}; it was edited by hand — restore it from a backup",
                        entry.serial,
                        serde_json::to_string(found).unwrap_or_default(),
                        serde_json::to_string(entry).unwrap_or_default()
                    ),
                ))
            }
            _ => {
                return Err(tampered(
                    &ledger_file,
                    format!("certificate {} of the CA log (serial {}, entry {seq}) is missing or out of place", i + 1, entry.serial),
                ))
            }
        }
    }
    if let Some(extra) = ledger.certificates.get(expected.len()) {
        return Err(tampered(
            &ledger_file,
            format!("serial {} is in the ledger but not in the CA log", extra.serial),
        ));
    }
    if ledger.crl_number != crl_number {
        return Err(tampered(
            &ledger_file,
            format!("the CRL number is {}, the CA log's last is {crl_number}", ledger.crl_number),
        ));
    }
    Ok(())
}
