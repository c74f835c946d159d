//! The audit trail: every transfer event and delivery outcome (in the same commit as the change
//! itself), every refusal, configuration load and certificate reload, appended to a hash chain
//! per replica and stored with the transfer data.
//!
//! Each entry carries the SHA-256 of the previous entry of its replica and its own, computed
//! over its content and that previous hash. Changing an entry breaks its own hash; removing or
//! reordering entries breaks the link of the entry after. A replica has one writer, so its
//! chain never forks. `liandong audit verify` walks the chains and names the first bad entry,
//! and prints each chain's last hash: keep those outside the database to detect truncation too.

use sha2::{Digest, Sha256};
use sqlx::{Any, Row, Transaction};

use super::sql::{values, ROWS_PER_STATEMENT};
use super::{Store, StoreError};

/// The previous hash of a chain's first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

tokio::task_local! {
    /// The chain entries are appended to while a store's writer commits: its replica's name
    /// ([`super::Store::name_chain`]). A store per gateway, not one name per process: several
    /// gateways in one process (the tests) keep their own chains.
    pub(super) static CHAIN: String;
}

/// The chain of the commit in hand: its store's replica name, or `local` for a tool's store
/// that was never given one.
pub fn replica() -> String {
    CHAIN.try_with(|name| name.clone()).unwrap_or_else(|_| "local".to_string())
}

/// Where a gateway's entries that come with no change to the store go (refusals, reloads):
/// written shortly, several per commit, to that gateway's store. When 10,000 are waiting (a
/// flood of refusals), further ones are counted and dropped rather than let memory grow.
#[derive(Clone, Debug, Default)]
pub struct Auditor(Option<tokio::sync::mpsc::Sender<AuditEntry>>);

impl Auditor {
    /// Starts the task that writes noted entries to `store`.
    pub fn start(store: Store) -> Auditor {
        let (sender, mut receiver) = tokio::sync::mpsc::channel::<AuditEntry>(10_000);
        tokio::spawn(async move {
            while let Some(first) = receiver.recv().await {
                let mut batch = vec![first];
                while let Ok(more) = receiver.try_recv() {
                    batch.push(more);
                    if batch.len() >= 500 {
                        break;
                    }
                }
                if let Err(e) = store.audit(batch).await {
                    tracing::error!(error = %e, "could not write audit entries");
                }
            }
        });
        Auditor(Some(sender))
    }

    /// Notes an entry.
    pub fn note(&self, entry: AuditEntry) {
        if let Some(sink) = &self.0 {
            if sink.try_send(entry).is_err() {
                crate::metrics::inc(&crate::metrics::counters().audit_dropped);
            }
        }
    }

    /// A refusal: who, where, why, and the request id its answer carried.
    pub fn refusal(
        &self,
        identity: &str,
        route: &str,
        reason: &str,
        message: &str,
        request_id: &str,
    ) {
        self.note(AuditEntry {
            at: crate::model::Timestamp::now().unix_seconds(),
            actor: identity.to_string(),
            action: "refused".into(),
            transfer_id: None,
            detail: serde_json::json!({"route": route, "reason": reason, "message": message, "request_id": request_id}),
        });
    }
}

/// An entry to append.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AuditEntry {
    pub at: i64,
    /// An endpoint, an identity URI, or `gateway`.
    pub actor: String,
    /// `transfer.submitted`, `delivery.failed`, `refused`, `config.loaded`, `tls.reloaded`, …
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer_id: Option<String>,
    pub detail: serde_json::Value,
}

/// An entry as stored.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct StoredAudit {
    pub seq: i64,
    pub replica: String,
    #[serde(flatten)]
    pub entry: AuditEntry,
    pub prev_hash: String,
    pub hash: String,
}

/// The hash of an entry: SHA-256 over the previous hash and the entry's fields, each
/// length-prefixed so that no two different entries read the same.
pub fn digest(prev_hash: &str, replica: &str, entry: &AuditEntry, detail: &str) -> String {
    let mut hasher = Sha256::new();
    for part in [
        prev_hash,
        replica,
        &entry.at.to_string(),
        &entry.actor,
        &entry.action,
        entry.transfer_id.as_deref().unwrap_or(""),
        detail,
    ] {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    crate::model::digest::hex(&hasher.finalize())
}

/// Appends entries to this replica's chain, inside the caller's transaction.
pub async fn append(
    tx: &mut Transaction<'_, Any>,
    backend: super::Backend,
    entries: &[AuditEntry],
) -> Result<(), StoreError> {
    if entries.is_empty() {
        return Ok(());
    }
    let replica = replica();
    let replica = replica.as_str();
    let last = sqlx::query("SELECT hash FROM audit WHERE replica = $1 ORDER BY seq DESC LIMIT 1")
        .bind(replica)
        .fetch_optional(&mut **tx)
        .await?;
    let mut prev: String = match last {
        Some(row) => row.try_get(0)?,
        None => GENESIS.to_string(),
    };
    let mut rows = Vec::with_capacity(entries.len());
    for entry in entries {
        let detail = entry.detail.to_string();
        let hash = digest(&prev, replica, entry, &detail);
        rows.push((entry, detail, std::mem::replace(&mut prev, hash.clone()), hash));
    }
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO audit (replica, at, actor, action, transfer_id, detail, prev_hash, hash) VALUES {}",
            values(backend, chunk.len(), 8, None)
        );
        let mut query = sqlx::query(&sql);
        for (entry, detail, prev_hash, hash) in chunk {
            query = query
                .bind(replica)
                .bind(entry.at)
                .bind(entry.actor.as_str())
                .bind(entry.action.as_str())
                .bind(entry.transfer_id.as_deref())
                .bind(detail.as_str())
                .bind(prev_hash.as_str())
                .bind(hash.as_str());
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

/// What verification found.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Verification {
    /// `(replica, entries, last hash)` of every chain.
    pub chains: Vec<(String, u64, String)>,
    /// The first bad entry, if any: `(seq, what is wrong)`.
    pub first_problem: Option<(i64, String)>,
}

const SELECT: &str =
    "SELECT seq, replica, at, actor, action, transfer_id, detail, prev_hash, hash FROM audit";

fn stored_from_row(row: &sqlx::any::AnyRow) -> Result<(StoredAudit, String), StoreError> {
    let detail: String = row.try_get(6)?;
    let entry = AuditEntry {
        at: row.try_get(2)?,
        actor: row.try_get(3)?,
        action: row.try_get(4)?,
        transfer_id: row.try_get(5)?,
        detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::String(detail.clone())),
    };
    Ok((
        StoredAudit {
            seq: row.try_get(0)?,
            replica: row.try_get(1)?,
            entry,
            prev_hash: row.try_get(7)?,
            hash: row.try_get(8)?,
        },
        detail,
    ))
}

impl Store {
    /// Appends entries outside any other change (refusals, configuration loads, reloads).
    pub async fn audit(&self, entries: Vec<AuditEntry>) -> Result<(), StoreError> {
        self.write(super::Write::Audit(entries)).await.map(|_| ())
    }

    /// Walks every chain and names the first entry that is changed, missing its predecessor, or
    /// out of order.
    pub async fn verify_audit(&self) -> Result<Verification, StoreError> {
        let mut chains: std::collections::BTreeMap<String, (u64, String, i64)> =
            std::collections::BTreeMap::new();
        let mut after = 0i64;
        loop {
            let rows = sqlx::query(&format!("{SELECT} WHERE seq > $1 ORDER BY seq LIMIT 5000"))
                .bind(after)
                .fetch_all(&self.pool)
                .await?;
            if rows.is_empty() {
                break;
            }
            for row in &rows {
                let (stored, detail) = stored_from_row(row)?;
                after = stored.seq;
                let (count, last_hash, last_seq) =
                    chains.entry(stored.replica.clone()).or_insert((0, GENESIS.to_string(), 0));
                let problem = if digest(&stored.prev_hash, &stored.replica, &stored.entry, &detail)
                    != stored.hash
                {
                    Some("its content does not match its hash: it was changed".to_string())
                } else if stored.prev_hash != *last_hash && *count == 0 {
                    Some(format!(
                        "the first entry of replica {} does not start the chain: entries before it were removed",
                        stored.replica
                    ))
                } else if stored.prev_hash != *last_hash {
                    Some(format!("it does not follow entry {last_seq} of replica {}: an entry between them was removed, or entries were reordered", stored.replica))
                } else {
                    None
                };
                if let Some(problem) = problem {
                    return Ok(Verification {
                        chains: chains.into_iter().map(|(r, (n, h, _))| (r, n, h)).collect(),
                        first_problem: Some((stored.seq, problem)),
                    });
                }
                *count += 1;
                *last_hash = stored.hash;
                *last_seq = stored.seq;
            }
        }
        Ok(Verification {
            chains: chains.into_iter().map(|(r, (n, h, _))| (r, n, h)).collect(),
            first_problem: None,
        })
    }

    /// Every entry of an action (`dataset.put`, `dataset.import`, …), in order.
    pub async fn audit_by_action(&self, action: &str) -> Result<Vec<StoredAudit>, StoreError> {
        let rows = sqlx::query(&format!("{SELECT} WHERE action = $1 ORDER BY seq"))
            .bind(action)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| stored_from_row(r).map(|(s, _)| s)).collect()
    }

    /// One transfer's evidence: every entry that names it, in order.
    pub async fn audit_of(&self, transfer_id: &str) -> Result<Vec<StoredAudit>, StoreError> {
        let rows = sqlx::query(&format!("{SELECT} WHERE transfer_id = $1 ORDER BY seq"))
            .bind(transfer_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| stored_from_row(r).map(|(s, _)| s)).collect()
    }
}
