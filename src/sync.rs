//! Shared data between the platforms (数据共享, `canonical.md` "Shared data"): the reference
//! datasets both desks read — transfer-item lists (`categories`), who handles what where
//! (`directory`), the knowledge base (`knowledge`) — and the status of every transfer
//! (`transfer_status`), each as records that followers mirror from a change feed.
//!
//! The rules live here, between the fronts (HTTPS, gRPC, the CLI) and the store: only a
//! record's owner writes it, a version only grows, a repeated write is harmless, and reads
//! follow the identity policy. `transfer_status` is not written by anyone: it is the transfer
//! engine's own event feed seen as records (key `transfer_id`, owner `gateway`, version the
//! length of the history), so it can never disagree with the transfers.

pub mod categories;
pub mod follower;
pub mod knowledge;
pub mod live;
pub mod reconcile;

use std::str::FromStr;
use std::sync::Arc;

use serde_json::{json, Value};

use crate::formats::Registry;
use crate::model::{category, EndpointId, Platform, Record, RecordDoc, Timestamp, Transfer};
use crate::routing;
use crate::security::policy::{Policy, Right};
use crate::security::Identity;
use crate::store::audit::AuditEntry;
use crate::store::{
    FeedCursor, FeedEvent, FeedTable, PutOptions, PutOutcome, PutRefused, Store, StoreError, Write,
    WriteResult,
};
use crate::sync::live::LiveDataset;

/// The transfer-item lists' dataset name.
pub const CATEGORIES: &str = "categories";

/// The shared datasets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dataset {
    Categories,
    Directory,
    Knowledge,
    TransferStatus,
}

impl Dataset {
    pub const ALL: [Dataset; 4] =
        [Dataset::Categories, Dataset::Directory, Dataset::Knowledge, Dataset::TransferStatus];

    pub fn as_str(self) -> &'static str {
        match self {
            Dataset::Categories => CATEGORIES,
            Dataset::Directory => routing::DIRECTORY,
            Dataset::Knowledge => "knowledge",
            Dataset::TransferStatus => "transfer_status",
        }
    }
}

impl FromStr for Dataset {
    type Err = SyncError;
    fn from_str(s: &str) -> Result<Self, SyncError> {
        Dataset::ALL.into_iter().find(|d| d.as_str() == s).ok_or_else(|| {
            SyncError::invalid(
                "dataset",
                format!("expected categories, directory, knowledge or transfer_status, got {s:?}"),
            )
        })
    }
}

/// The audit entry of a dataset write: who wrote it and what (the store adds the counts).
fn dataset_audit(actor: String, action: &str, detail: Value) -> AuditEntry {
    AuditEntry {
        at: Timestamp::now().unix_seconds(),
        actor,
        action: action.to_string(),
        transfer_id: None,
        detail,
    }
}

/// What an import would do (see [`Datasets::preview`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Preview {
    pub added: usize,
    pub changed: usize,
    pub deleted: usize,
    pub unchanged: usize,
    /// (record number from 1, why).
    pub refused: Vec<(usize, String)>,
    /// Where the dataset was when previewed: `import --if-version` applies only there.
    pub version: String,
}

/// Why a dataset operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// A field is not acceptable (400 / INVALID_ARGUMENT), named.
    #[error("{field}: {problem}")]
    Invalid { field: String, problem: String },
    /// The caller may not do this (403 / PERMISSION_DENIED).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// No such record (404 / NOT_FOUND).
    #[error("not found: {0}")]
    NotFound(String),
    /// The version does not grow (409 / FAILED_PRECONDITION), naming the current one.
    #[error(
        "version: {key} is at version {current}; a write must give a greater version, got {given}"
    )]
    Stale { key: String, current: u64, given: u64 },
    /// The dataset changed since the version the write was made against (409 /
    /// FAILED_PRECONDITION): `import --if-version` after a preview.
    #[error("version: {dataset} is at version {now}, not {expected} as previewed (preview again)")]
    Moved { dataset: &'static str, expected: String, now: String },
    /// A key was written by someone else while an import was being checked against it (409 /
    /// FAILED_PRECONDITION): nothing of the import was written.
    #[error(
        "version: {key} was written (now version {now}) while this import was being checked; nothing was written (import again)"
    )]
    Changed { key: String, now: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl SyncError {
    pub fn invalid(field: impl Into<String>, problem: impl Into<String>) -> SyncError {
        SyncError::Invalid { field: field.into(), problem: problem.into() }
    }
}

/// A write, as a client sends it; the owner is the caller, never a field.
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutRequest {
    pub version: u64,
    #[serde(default)]
    pub deleted: bool,
    #[serde(default)]
    pub body: Value,
    /// When the owner changed it; the gateway's clock when absent.
    #[serde(default)]
    pub updated_at: Option<Timestamp>,
    /// Delete a directory record even when it leaves its cell with no unit.
    #[serde(default)]
    pub force: bool,
}

/// How an import is made.
#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    /// What was imported (the file and its SHA-256), for the audit trail and the history.
    pub source: String,
    /// A preview's version: write only if the dataset is still there.
    pub if_version: Option<FeedCursor>,
    /// Delete directory records even when that leaves a cell with no unit.
    pub force: bool,
}

/// An import under way ([`Datasets::begin_import`]); dropped without [`Import::finish`], it
/// writes nothing.
pub struct Import<'a> {
    datasets: &'a Datasets,
    dataset: Dataset,
    write: crate::store::ImportWrite,
    options: ImportOptions,
    /// (line, why): every refusal found so far; any one and nothing is committed.
    errors: Vec<(usize, String)>,
}

impl Import<'_> {
    /// Checks one chunk of (line, record) and writes it into the import's transaction.
    /// Refusals are kept for [`Import::finish`]; after the first, the rest of the file is
    /// still checked (every bad line is reported) but no longer written.
    pub async fn add(&mut self, chunk: Vec<(usize, Record)>) {
        let dataset = self.dataset;
        let (lines, mut records): (Vec<usize>, Vec<Record>) = chunk.into_iter().unzip();
        let errors_before = self.errors.len();
        for (line, record) in lines.iter().zip(records.iter_mut()) {
            if let Err(e) = self.datasets.check(dataset, record) {
                self.errors.push((*line, e.to_string()));
            }
        }
        if self.errors.len() == errors_before && !self.options.force {
            match self.datasets.orphaning(dataset, &records).await {
                Ok(orphaned) => {
                    self.errors.extend(orphaned.into_iter().map(|(i, e)| (lines[i], e.to_string())))
                }
                Err(e) => self.errors.push((0, e.to_string())),
            }
        }
        if !self.errors.is_empty() {
            return;
        }
        match self.write.put(&records).await {
            Ok(Ok(_)) => {}
            Ok(Err(refused)) => self.errors.extend(Import::refusals(
                dataset,
                self.options.if_version,
                refused,
                &lines,
            )),
            Err(e) => self.errors.push((0, e.to_string())),
        }
    }

    /// Why the store refused the import, by the file's line (0: not one line's); `lines` are
    /// those of the records refused by their position.
    fn refusals(
        dataset: Dataset,
        if_version: Option<FeedCursor>,
        refused: PutRefused,
        lines: &[usize],
    ) -> Vec<(usize, String)> {
        let line = |i: usize| lines.get(i).copied().unwrap_or(0);
        match refused {
            PutRefused::Stale(stale) => Datasets::refusals(stale)
                .into_iter()
                .map(|(i, e)| (line(i), e.to_string()))
                .collect(),
            PutRefused::Moved { now } => {
                let moved = SyncError::Moved {
                    dataset: dataset.as_str(),
                    expected: if_version.unwrap_or_default().encode(),
                    now: now.encode(),
                };
                vec![(0, moved.to_string())]
            }
            PutRefused::Changed(changed) => changed
                .into_iter()
                .map(|(key, now)| (0, SyncError::Changed { key, now }.to_string()))
                .collect(),
        }
    }

    /// Records a line of the file that could not be read as a record: nothing is committed.
    pub fn refuse(&mut self, line: usize, problem: String) {
        self.errors.push((line, problem));
    }

    /// Commits the import when nothing was refused, answering how many records were written;
    /// otherwise writes nothing and answers every refusal by its line (0: not a line's).
    pub async fn finish(self) -> Result<usize, Vec<(usize, String)>> {
        if !self.errors.is_empty() {
            return Err(self.errors);
        }
        let detail = json!({"dataset": self.dataset.as_str(), "source": self.options.source});
        let audit = dataset_audit("import".into(), "dataset.import", detail);
        let Import { datasets, dataset, write, options, .. } = self;
        let written = match write.commit(Some(audit)).await {
            Ok(Ok(written)) => written,
            Ok(Err(refused)) => {
                return Err(Import::refusals(dataset, options.if_version, refused, &[]))
            }
            Err(e) => return Err(vec![(0, e.to_string())]),
        };
        crate::metrics::add(&crate::metrics::counters().records_written, written as u64);
        datasets.written(dataset).await.map_err(|e| vec![(0, e.to_string())])?;
        Ok(written)
    }
}

/// A page of a snapshot.
#[derive(Clone, Debug)]
pub struct SnapshotPage {
    pub records: Vec<RecordDoc>,
    /// Give it back for the next page; empty on the last.
    pub next_page_token: String,
    /// The snapshot is the dataset as of this cursor: follow `Changes` from it.
    pub cursor: String,
}

/// A page of changes.
#[derive(Clone, Debug)]
pub struct ChangesPage {
    /// Each change with the cursor just after it.
    pub changes: Vec<(String, RecordDoc)>,
    /// Where to go on from (past everything looked at, visible or not).
    pub cursor: String,
    /// False when the caller has caught up.
    pub more: bool,
}

/// The largest page.
pub const MAX_PAGE: i64 = 5000;

/// The shared datasets: their rules over the store.
#[derive(Clone)]
pub struct Datasets {
    pub store: Store,
    pub registry: Arc<Registry>,
    pub policy: Arc<Policy>,
    /// Routing's copy of the directory, told when this replica writes to it.
    pub directory: Arc<LiveDataset>,
    /// The transfer-item lists in memory, caught up (and the code tables rebuilt) when this
    /// replica writes to them.
    pub categories: Arc<LiveDataset>,
    /// The knowledge base's search index, caught up when this replica writes to it.
    pub knowledge: Arc<knowledge::KnowledgeIndex>,
}

impl Datasets {
    /// Writes a record as `who`, its owner. Answers the stored record and whether it changed.
    pub async fn put(
        &self,
        who: &Identity,
        dataset: Dataset,
        key: &str,
        request: PutRequest,
    ) -> Result<(Record, PutOutcome), SyncError> {
        let Identity::Endpoint(writer) = who else {
            return Err(SyncError::Forbidden(format!(
                "{who} may not write datasets: only a record's owning endpoint does"
            )));
        };
        let mut record = Record {
            dataset: dataset.as_str().to_string(),
            key: key.to_string(),
            owner: writer.to_string(),
            version: request.version,
            updated_at: request.updated_at.unwrap_or_else(Timestamp::now),
            deleted: request.deleted,
            body: request.body,
        };
        if let Some(current) = self.store.record(dataset.as_str(), key).await? {
            if current.owner != record.owner {
                return Err(SyncError::Forbidden(format!(
                    "{key} is owned by {}, not {writer}",
                    current.owner
                )));
            }
        }
        self.check(dataset, &mut record)?;
        if !request.force {
            if let Some((_, error)) =
                self.orphaning(dataset, std::slice::from_ref(&record)).await?.pop()
            {
                return Err(error);
            }
        }
        let audit = dataset_audit(
            writer.to_string(),
            "dataset.put",
            json!({"dataset": dataset.as_str(), "key": key, "version": record.version, "deleted": record.deleted}),
        );
        let options = PutOptions { writer: writer.to_string(), ..PutOptions::default() };
        let mut outcomes =
            self.store_records(dataset, vec![record.clone()], options, audit).await?;
        Ok((record, outcomes.pop().unwrap_or(PutOutcome::Unchanged)))
    }

    /// Checks a record against its dataset's rules: the dataset it names (none: this one), the
    /// key's form, the owner the key implies, the version, the body (normalised in place).
    pub fn check(&self, dataset: Dataset, record: &mut Record) -> Result<(), SyncError> {
        if record.dataset.is_empty() {
            record.dataset = dataset.as_str().to_string();
        }
        if record.dataset != dataset.as_str() {
            return Err(SyncError::invalid(
                "dataset",
                format!("expected {}, got {:?}", dataset.as_str(), record.dataset),
            ));
        }
        let key = record.key.as_str();
        // Characters, not bytes: a key of Chinese words counts its words' characters.
        if key.is_empty() || key.chars().count() > 200 || key.chars().any(char::is_control) {
            return Err(SyncError::invalid(
                "key",
                format!("expected 1 to 200 printable characters, got {key:?}"),
            ));
        }
        if record.version == 0 || record.version > i64::MAX as u64 {
            return Err(SyncError::invalid(
                "version",
                "expected a whole number from 1 that grows with each write",
            ));
        }
        let owner: EndpointId = record.owner.parse().map_err(|e: String| {
            SyncError::invalid("owner", format!("expected an endpoint: {e}"))
        })?;
        if self.registry.endpoint(&owner).is_err() {
            return Err(SyncError::invalid(
                "owner",
                format!("{owner} is not a registered endpoint"),
            ));
        }
        match dataset {
            Dataset::Categories => {
                let (endpoint, code) = key
                    .split_once('/')
                    .and_then(|(r, rest)| {
                        let (platform, code) = rest.split_once('/')?;
                        Some((format!("{r}/{platform}"), code))
                    })
                    .ok_or_else(|| {
                        SyncError::invalid(
                            "key",
                            format!("expected ENDPOINT/NATIVE_CODE, got {key:?}"),
                        )
                    })?;
                if endpoint != record.owner {
                    return Err(SyncError::Forbidden(format!(
                        "{key} belongs to {endpoint}'s list, not {owner}'s"
                    )));
                }
                if code.trim().is_empty() || code.trim() != code {
                    return Err(SyncError::invalid(
                        "key",
                        format!("expected a native code without surrounding spaces, got {code:?}"),
                    ));
                }
                let table = &self
                    .registry
                    .endpoint(&owner)
                    .map_err(|e| SyncError::invalid("owner", e.to_string()))?
                    .codes;
                let catch_all = [(&table.catch_all_np, "NP"), (&table.catch_all_pm, "PM")]
                    .into_iter()
                    .find(|(c, _)| *c == code);
                if let Some((_, side)) = catch_all {
                    // Codes with no row render as the catch-all: it may be renamed, never retired
                    // or moved to the other side.
                    if record.deleted {
                        return Err(SyncError::invalid(
                            "deleted",
                            format!(
                                "{code:?} is {owner}'s catch-all for {side} matters and cannot be retired; rename it instead"
                            ),
                        ));
                    }
                    check_body(dataset, &mut record.body)?;
                    let canonical =
                        record.body.get("canonical").and_then(Value::as_str).unwrap_or_default();
                    if !canonical.starts_with(side) {
                        return Err(SyncError::invalid(
                            "body.canonical",
                            format!(
                                "{code:?} is {owner}'s catch-all for {side} matters; expected an {side} code, got {canonical:?}"
                            ),
                        ));
                    }
                }
            }
            Dataset::Directory => {
                let (region, code) = key
                    .split_once('/')
                    .filter(|(r, _)| (r.len() == 6 || r.len() == 9) && r.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or_else(|| {
                        SyncError::invalid(
                            "key",
                            format!("expected REGION/CATEGORY with a six- or nine-digit region, got {key:?}"),
                        )
                    })?;
                let platform = match category::side_of(code) {
                    Some(category::CategorySide::NonPolice) => Platform::Hotline,
                    Some(category::CategorySide::Police) => Platform::Police,
                    None => {
                        return Err(SyncError::invalid(
                            "key",
                            format!("{code:?} is not a canonical category code"),
                        ))
                    }
                };
                let rightful =
                    routing::endpoint_for(&self.registry, region, platform).ok_or_else(|| {
                        SyncError::invalid(
                            "key",
                            format!(
                                "no {} endpoint is registered for region {region}",
                                platform.as_str()
                            ),
                        )
                    })?;
                if rightful != owner {
                    return Err(SyncError::Forbidden(format!(
                        "{key} is kept by {rightful}, not {owner}"
                    )));
                }
            }
            Dataset::Knowledge => {}
            Dataset::TransferStatus => {
                return Err(SyncError::Forbidden(
                    "transfer_status is written by the gateway alone".into(),
                ));
            }
        }
        if record.deleted {
            record.body = Value::Null;
            return Ok(());
        }
        check_body(dataset, &mut record.body)
    }

    /// Stores checked records of one dataset in one commit, all or nothing.
    async fn store_records(
        &self,
        dataset: Dataset,
        records: Vec<Record>,
        options: PutOptions,
        audit: AuditEntry,
    ) -> Result<Vec<PutOutcome>, SyncError> {
        match self.write_records(dataset, records, options, audit).await? {
            Ok(outcomes) => Ok(outcomes),
            Err(mut stale) => Err(stale.swap_remove(0).1),
        }
    }

    /// The one commit behind every put: what became of each record, or each record (by its
    /// position) whose version does not grow — then nothing was written.
    async fn write_records(
        &self,
        dataset: Dataset,
        records: Vec<Record>,
        options: PutOptions,
        audit: AuditEntry,
    ) -> Result<Result<Vec<PutOutcome>, Vec<(usize, SyncError)>>, SyncError> {
        let expected = options.expect_at;
        let write = Write::PutRecords {
            dataset: dataset.as_str().to_string(),
            records,
            options,
            audit: Some(audit),
        };
        let answer = self.store.write(write).await;
        self.written(dataset).await?;
        match answer? {
            WriteResult::Records(Ok(outcomes)) => {
                let written = outcomes.iter().filter(|o| **o == PutOutcome::Written).count();
                crate::metrics::add(&crate::metrics::counters().records_written, written as u64);
                Ok(Ok(outcomes))
            }
            WriteResult::Records(Err(PutRefused::Moved { now })) => Err(SyncError::Moved {
                dataset: dataset.as_str(),
                expected: expected.unwrap_or_default().encode(),
                now: now.encode(),
            }),
            WriteResult::Records(Err(PutRefused::Stale(stale))) => {
                Ok(Err(Datasets::refusals(stale)))
            }
            other => Err(SyncError::Store(StoreError::Corrupt {
                id: dataset.as_str().into(),
                problem: format!("unexpected answer {other:?}"),
            })),
        }
    }

    /// Imports records (an operator's file): each checked, then all stored in one commit or
    /// none. Errors are (record number from 1, message), every one found. See
    /// [`Datasets::begin_import`] for a file read a chunk at a time.
    pub async fn import(
        &self,
        dataset: Dataset,
        records: Vec<Record>,
        options: ImportOptions,
    ) -> Result<usize, Vec<(usize, String)>> {
        let mut import =
            self.begin_import(dataset, options).await.map_err(|e| vec![(0, e.to_string())])?;
        import.add(records.into_iter().enumerate().map(|(i, r)| (i + 1, r)).collect()).await;
        import.finish().await
    }

    /// Begins an import: chunks of records are checked and written one after another into one
    /// transaction ([`Import::add`]), committed by [`Import::finish`] only when none was
    /// refused — all or nothing, with one chunk in memory at a time. `options.source` names
    /// what was imported (the file and its SHA-256): the import is one entry of the audit
    /// trail, with its counts. With `options.if_version` (a preview's `version`), nothing is
    /// written unless the dataset is still there.
    pub async fn begin_import(
        &self,
        dataset: Dataset,
        options: ImportOptions,
    ) -> Result<Import<'_>, SyncError> {
        if dataset == Dataset::TransferStatus {
            return Err(SyncError::Forbidden(
                "transfer_status is written by the gateway alone".into(),
            ));
        }
        let put = PutOptions {
            writer: format!("import {}", options.source),
            seed: false,
            expect_at: options.if_version,
        };
        let write = self.store.begin_import(dataset.as_str(), put).await?;
        Ok(Import { datasets: self, dataset, write, options, errors: Vec::new() })
    }

    /// What to do after this replica wrote to a dataset: the copies in memory catch up.
    async fn written(&self, dataset: Dataset) -> Result<(), SyncError> {
        match dataset {
            Dataset::Directory => self.directory.invalidate(),
            Dataset::Categories => {
                // A new or retired transfer item takes effect on this replica at once.
                self.categories.refresh(&self.store).await?;
                categories::apply(&self.registry, &self.categories).await;
            }
            Dataset::Knowledge => self.knowledge.live.invalidate(),
            Dataset::TransferStatus => {}
        }
        Ok(())
    }

    /// The refusals of a put's stale records, by their position in it.
    fn refusals(stale: Vec<crate::store::Stale>) -> Vec<(usize, SyncError)> {
        stale
            .into_iter()
            .map(|s| match s.owned_by {
                Some(owner) => (
                    s.index,
                    SyncError::Forbidden(format!(
                        "{} is owned by {owner}, not {}",
                        s.key, s.writer
                    )),
                ),
                None => {
                    (s.index, SyncError::Stale { key: s.key, current: s.current, given: s.given })
                }
            })
            .collect()
    }

    /// The deletions among `records` (by position) that would leave their own cell of the
    /// directory with no unit: a live record with no coarser record for its category (county,
    /// city, province) after these records are applied. Such a deletion needs `force`.
    async fn orphaning(
        &self,
        dataset: Dataset,
        records: &[Record],
    ) -> Result<Vec<(usize, SyncError)>, SyncError> {
        if dataset != Dataset::Directory || !records.iter().any(|r| r.deleted) {
            return Ok(Vec::new());
        }
        let batch: std::collections::HashMap<&str, &Record> =
            records.iter().map(|r| (r.key.as_str(), r)).collect();
        let mut wanted: Vec<String> = Vec::new();
        for record in records.iter().filter(|r| r.deleted) {
            if let Some((region, category)) = record.key.split_once('/') {
                wanted.extend(routing::directory_keys(region, category));
            }
        }
        wanted.sort();
        wanted.dedup();
        let refs: Vec<&str> = wanted.iter().map(String::as_str).collect();
        let stored = self.store.records_of(dataset.as_str(), &refs).await?;
        let live_after = |key: &str| match batch.get(key) {
            Some(record) => !record.deleted,
            None => stored.get(key).is_some_and(|r| !r.deleted),
        };
        let mut orphaned = Vec::new();
        for (index, record) in records.iter().enumerate().filter(|(_, r)| r.deleted) {
            let Some((region, category)) = record.key.split_once('/') else { continue };
            let live_now = stored.get(&record.key).is_some_and(|r| !r.deleted);
            let keys = routing::directory_keys(region, category);
            if live_now && !keys.iter().skip(1).any(|key| live_after(key)) {
                orphaned.push((
                    index,
                    SyncError::invalid(
                        "deleted",
                        format!(
                            "{} is the only unit for {category} in {region}: no coarser record ({}) covers it, so its cases would have no unit; force the deletion to leave the cell without one",
                            record.key,
                            keys[1..].join(", ")
                        ),
                    ),
                ));
            }
        }
        Ok(orphaned)
    }

    /// What importing `records` would do, writing nothing (`datasets import --dry-run`): each
    /// record added, changed, deleted (a tombstone for a live record), unchanged (a repeat), or
    /// refused with why (its form, its owner, a version that does not grow).
    /// Without `force`, a deletion that would leave a cell with no unit is refused.
    pub async fn preview(
        &self,
        dataset: Dataset,
        mut records: Vec<Record>,
        force: bool,
    ) -> Result<Preview, SyncError> {
        // Read first: a write landing during the preview makes `--if-version` refuse.
        let version = self.store.dataset_position(dataset.as_str()).await?.encode();
        let mut orphaned: std::collections::HashMap<usize, SyncError> = if force {
            Default::default()
        } else {
            self.orphaning(dataset, &records).await?.into_iter().collect()
        };
        let keys: Vec<String> = records.iter().map(|r| r.key.clone()).collect();
        let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let mut current = self.store.records_of(dataset.as_str(), &key_refs).await?;
        let mut preview = Preview { version, ..Preview::default() };
        for (i, record) in records.iter_mut().enumerate() {
            let refused = self
                .check(dataset, record)
                .err()
                .or_else(|| orphaned.remove(&i))
                .map(|e| e.to_string());
            if let Some(why) = refused {
                preview.refused.push((i + 1, why));
                continue;
            }
            let outcome = match current.get(&record.key) {
                Some(now) if now.owner != record.owner => Err(format!(
                    "forbidden: {} is owned by {}, not {}",
                    record.key, now.owner, record.owner
                )),
                Some(now)
                    if record.version == now.version
                        && now.deleted == record.deleted
                        && now.body == record.body =>
                {
                    Ok(&mut preview.unchanged)
                }
                Some(now) if record.version <= now.version => Err(format!(
                    "version: {} is at version {}; a write must give a greater version, got {}",
                    record.key, now.version, record.version
                )),
                Some(now) if record.deleted && !now.deleted => Ok(&mut preview.deleted),
                Some(_) => Ok(&mut preview.changed),
                None if record.deleted => Ok(&mut preview.unchanged),
                None => Ok(&mut preview.added),
            };
            match outcome {
                Ok(count) => {
                    *count += 1;
                    current.insert(record.key.clone(), record.clone());
                }
                Err(why) => preview.refused.push((i + 1, why)),
            }
        }
        Ok(preview)
    }

    /// Seeds `categories` with every endpoint's built-in code table (version 1, owned by the
    /// endpoint); keys that already have a record are left alone. Returns how many were added.
    pub async fn seed_categories(&self) -> Result<usize, SyncError> {
        let now = Timestamp::now();
        let records: Vec<Record> = self
            .registry
            .endpoints()
            .flat_map(|endpoint| {
                endpoint.codes.rows.iter().map(move |row| Record {
                    dataset: Dataset::Categories.as_str().to_string(),
                    key: format!("{}/{}", endpoint.id, row.code),
                    owner: endpoint.id.to_string(),
                    version: 1,
                    updated_at: now,
                    deleted: false,
                    body: json!({"canonical": row.canonical, "name": row.name}),
                })
            })
            .collect();
        let audit = dataset_audit(
            "gateway".into(),
            "dataset.seed",
            json!({"dataset": Dataset::Categories.as_str()}),
        );
        let options = PutOptions { writer: "gateway (seed)".into(), seed: true, expect_at: None };
        let outcomes = self.store_records(Dataset::Categories, records, options, audit).await?;
        Ok(outcomes.iter().filter(|o| **o == PutOutcome::Written).count())
    }

    /// Refuses `who` unless it may read datasets at all (agencies: `read_datasets`); which
    /// `transfer_status` records it sees is decided per transfer.
    fn may_read(&self, who: &Identity) -> Result<(), SyncError> {
        self.policy.has_right(who, Right::ReadDatasets).map_err(SyncError::Forbidden)
    }

    /// Searches the knowledge base as `who` (anyone who may read datasets).
    pub async fn search(
        &self,
        who: &Identity,
        query: &knowledge::KnowledgeQuery,
    ) -> Result<knowledge::KnowledgeAnswer, SyncError> {
        self.may_read(who)?;
        query.check()?;
        self.knowledge.refresh_if_stale(&self.store).await?;
        Ok(self.knowledge.search(query, Timestamp::now()).await)
    }

    /// One record.
    pub async fn get(
        &self,
        who: &Identity,
        dataset: Dataset,
        key: &str,
    ) -> Result<Record, SyncError> {
        self.may_read(who)?;
        if dataset == Dataset::TransferStatus {
            let transfer = self
                .store
                .transfer(key)
                .await?
                .ok_or_else(|| SyncError::NotFound(key.to_string()))?;
            self.policy.may(who, &transfer, Right::ReadDatasets).map_err(SyncError::Forbidden)?;
            return Ok(status_record(&transfer));
        }
        self.store
            .record(dataset.as_str(), key)
            .await?
            .ok_or_else(|| SyncError::NotFound(format!("{} {key}", dataset.as_str())))
    }

    /// A page of a consistent snapshot. The first page (empty token) fixes the cursor the
    /// snapshot is taken at; the token carries it to the next pages.
    /// The directory's coverage of `region` (`liandong route --coverage`): each township and
    /// county it names inside the region, for each category (or `category`), and the record
    /// that answers for it — its own tier, a coarser one, or none.
    pub async fn coverage(
        &self,
        who: &Identity,
        region: &str,
        category: Option<&str>,
    ) -> Result<Vec<crate::routing::Cell>, SyncError> {
        self.may_read(who)?;
        region.parse::<crate::model::Region>().map_err(|e| SyncError::invalid("region", e))?;
        let categories: Vec<&str> = match category {
            Some(code) => {
                code.parse::<crate::model::CategoryCode>()
                    .map_err(|e| SyncError::invalid("category", e))?;
                vec![code]
            }
            None => crate::model::category::TAXONOMY.iter().map(|(code, _, _)| *code).collect(),
        };
        Ok(self.directory.read(|view| crate::routing::coverage(view, region, &categories)).await)
    }

    pub async fn snapshot(
        &self,
        who: &Identity,
        dataset: Dataset,
        page_token: &str,
        page_size: i64,
    ) -> Result<SnapshotPage, SyncError> {
        self.may_read(who)?;
        let limit = page_size.clamp(1, MAX_PAGE);
        let (at, after) = if page_token.is_empty() {
            let table = if dataset == Dataset::TransferStatus {
                FeedTable::Events
            } else {
                FeedTable::Records
            };
            (self.store.feed_head(table).await?, String::new())
        } else {
            let (cursor, after) = page_token.split_once(':').ok_or_else(|| {
                SyncError::invalid("page_token", "expected a token from a previous page")
            })?;
            (
                FeedCursor::decode(cursor).map_err(|_| {
                    SyncError::invalid("page_token", "expected a token from a previous page")
                })?,
                after.to_string(),
            )
        };
        let (records, next) = if dataset == Dataset::TransferStatus {
            let party = who.endpoint().map(ToString::to_string);
            let (events, next) =
                self.store.transfer_snapshot(party.as_deref(), at, &after, limit).await?;
            (
                self.visible_status(who, events)
                    .into_iter()
                    .map(|(_, r)| RecordDoc::from_record(&r))
                    .collect(),
                next,
            )
        } else {
            self.store.record_snapshot(dataset.as_str(), at, &after, limit).await?
        };
        Ok(SnapshotPage {
            records,
            next_page_token: next.map(|key| format!("{}:{key}", at.encode())).unwrap_or_default(),
            cursor: at.encode(),
        })
    }

    /// Changes after a cursor (empty: from the beginning), in commit order.
    pub async fn changes(
        &self,
        who: &Identity,
        dataset: Dataset,
        cursor: &str,
        limit: i64,
    ) -> Result<ChangesPage, SyncError> {
        self.may_read(who)?;
        let from = FeedCursor::decode(cursor).map_err(|e| {
            SyncError::invalid("cursor", e.trim_start_matches("cursor: ").to_string())
        })?;
        let limit = limit.clamp(1, MAX_PAGE);
        let (changes, last, looked_at) = if dataset == Dataset::TransferStatus {
            let party = who.endpoint().map(ToString::to_string);
            let events = self.store.events_after(party.as_deref(), from, limit).await?;
            let looked_at = events.len();
            let last = events.last().map_or(from, |e| e.cursor);
            let visible = self
                .visible_status(who, events)
                .into_iter()
                .map(|(c, r)| (c.encode(), RecordDoc::from_record(&r)));
            (visible.collect(), last, looked_at)
        } else {
            let rows = self.store.record_changes(dataset.as_str(), from, limit).await?;
            let looked_at = rows.len();
            let last = rows.last().map_or(from, |(c, _)| *c);
            (rows.into_iter().map(|(c, r)| (c.encode(), r)).collect(), last, looked_at)
        };
        Ok(ChangesPage { changes, cursor: last.encode(), more: looked_at as i64 >= limit })
    }

    /// The transfer events `who` may see, as `transfer_status` records.
    fn visible_status(&self, who: &Identity, events: Vec<FeedEvent>) -> Vec<(FeedCursor, Record)> {
        events
            .into_iter()
            .filter(|e| self.policy.may(who, &e.transfer, Right::ReadDatasets).is_ok())
            .map(|e| (e.cursor, status_record(&e.transfer)))
            .collect()
    }
}

/// A transfer's `transfer_status` record: its state, whether overdue, its last history entry.
pub fn status_record(transfer: &Transfer) -> Record {
    let last = transfer.history.last();
    Record {
        dataset: Dataset::TransferStatus.as_str().to_string(),
        key: transfer.transfer_id.clone(),
        owner: "gateway".to_string(),
        version: transfer.history.len() as u64,
        updated_at: last.map_or(transfer.requested_at, |h| h.at),
        deleted: false,
        body: json!({
            "state": transfer.state.as_str(),
            "overdue": transfer.overdue,
            "from": transfer.from.to_string(),
            "to": transfer.to.to_string(),
            "last": last,
        }),
    }
}

/// Checks and tidies a body by its dataset's shape (`canonical.md`, "Shared data").
fn check_body(dataset: Dataset, body: &mut Value) -> Result<(), SyncError> {
    let Value::Object(fields) = body else {
        return Err(SyncError::invalid("body", "expected a JSON object"));
    };
    let allowed: &[&str] = match dataset {
        Dataset::Categories => &["canonical", "name"],
        Dataset::Directory => &["unit", "phone", "hours"],
        Dataset::Knowledge => &["title", "body", "categories", "valid_until"],
        Dataset::TransferStatus => &[],
    };
    if let Some(unknown) = fields.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(SyncError::invalid(
            format!("body.{unknown}"),
            format!("unknown field; expected {}", allowed.join(", ")),
        ));
    }
    let text = |fields: &serde_json::Map<String, Value>,
                name: &str,
                required: bool|
     -> Result<(), SyncError> {
        match fields.get(name) {
            Some(Value::String(s)) if !s.trim().is_empty() => Ok(()),
            None | Some(Value::Null) if !required => Ok(()),
            None | Some(Value::Null) => {
                Err(SyncError::invalid(format!("body.{name}"), crate::model::MISSING))
            }
            Some(other) => Err(SyncError::invalid(
                format!("body.{name}"),
                format!("expected text, got {other}"),
            )),
        }
    };
    let code = |value: &Value, field: String| -> Result<(), SyncError> {
        match value.as_str() {
            Some(c) if category::is_known(c) => Ok(()),
            _ => Err(SyncError::invalid(
                field,
                format!("expected a canonical category code (NP01…, PM01…), got {value}"),
            )),
        }
    };
    match dataset {
        Dataset::Categories => {
            code(fields.get("canonical").unwrap_or(&Value::Null), "body.canonical".into())?;
            text(fields, "name", true)?;
        }
        Dataset::Directory => {
            let unit = fields
                .get("unit")
                .ok_or_else(|| SyncError::invalid("body.unit", crate::model::MISSING))?;
            let unit: crate::model::Unit = serde_json::from_value(unit.clone()).map_err(|e| {
                SyncError::invalid("body.unit", format!("expected {{\"code\", \"name\"}}: {e}"))
            })?;
            if unit.code.as_deref().unwrap_or("").trim().is_empty()
                && unit.name.as_deref().unwrap_or("").trim().is_empty()
            {
                return Err(SyncError::invalid("body.unit", "expected a code or a name"));
            }
            text(fields, "phone", false)?;
            text(fields, "hours", false)?;
        }
        Dataset::Knowledge => {
            text(fields, "title", true)?;
            text(fields, "body", true)?;
            match fields.get("categories") {
                None | Some(Value::Null) => {}
                Some(Value::Array(codes)) => {
                    for (i, c) in codes.iter().enumerate() {
                        code(c, format!("body.categories[{i}]"))?;
                    }
                }
                Some(other) => {
                    return Err(SyncError::invalid(
                        "body.categories",
                        format!("expected a list of codes, got {other}"),
                    ))
                }
            }
            if let Some(until) = fields.get("valid_until").filter(|v| !v.is_null()) {
                let parsed = until.as_str().map(|s| Timestamp::parse_rfc3339(s, true));
                match parsed {
                    Some(Ok(t)) => {
                        fields.insert("valid_until".into(), Value::String(t.to_string()));
                    }
                    _ => {
                        return Err(SyncError::invalid(
                            "body.valid_until",
                            format!("expected an RFC 3339 time, got {until}"),
                        ))
                    }
                }
            }
        }
        Dataset::TransferStatus => {}
    }
    fields.retain(|_, v| !v.is_null());
    Ok(())
}
