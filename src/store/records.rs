//! The shared datasets' records (`canonical.md`, "Shared data"): the current record of each
//! key in `records`, and every accepted write, in commit order, in `record_log`.
//!
//! The log is what followers read. `Changes` is the log after a cursor, in the same
//! (transaction, sequence) order as the transfer feed and with the same horizon on PostgreSQL
//! (see [`super::Store::events_after`]), so nothing is missed or repeated across replicas. A
//! `Snapshot` is the log folded at one cursor: for each key, the last write at or before it —
//! a true picture of that moment, however long the pages take to read, after which `Changes`
//! from the same cursor continues without a gap or an overlap.

use std::collections::HashMap;

use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::sql::{tx_stamp, values, ROWS_PER_STATEMENT};
use super::{Backend, FeedCursor, Store, StoreError};
use crate::model::{Record, RecordDoc, Timestamp};

/// What became of one record of a put.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutOutcome {
    /// Stored as the new version.
    Written,
    /// The same version with the same content was already there (a repeated write), or, when
    /// seeding, the key already had a record.
    Unchanged,
}

/// A record that may not be written: its version does not grow, or another endpoint owns its
/// key. Nothing of its put was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stale {
    /// Its position in the put.
    pub index: usize,
    pub key: String,
    /// The version stored now.
    pub current: u64,
    /// The version and the owner the put gave.
    pub given: u64,
    pub writer: String,
    /// When the key belongs to another endpoint: that owner (a record's owner never changes;
    /// the knowledge base's first writer owns its key).
    pub owned_by: Option<String>,
}

/// One write of a dataset's log, with what a reader keys it by (no JSON to parse for that).
#[derive(Clone, Debug)]
pub struct LogEntry {
    pub cursor: FeedCursor,
    pub key: String,
    pub version: u64,
    pub deleted: bool,
    pub doc: RecordDoc,
}

/// Why a put wrote nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PutRefused {
    /// Records whose version does not grow, or whose key another endpoint owns.
    Stale(Vec<Stale>),
    /// The dataset is no longer where the writer expected (`import --if-version`): it is at
    /// `now`.
    Moved { now: FeedCursor },
    /// Keys written by someone else while an import was being checked (SQLite's staged
    /// import), each with its version now: the import was checked against what is no longer
    /// there.
    Changed(Vec<(String, u64)>),
}

/// How one put is made: who writes (kept with each version in the log), whether it only
/// seeds, and where the dataset must still be.
#[derive(Clone, Debug, Default)]
pub struct PutOptions {
    /// The writer, for `datasets history`: the endpoint, `import FILE sha256:…`, or
    /// `gateway (seed)`.
    pub writer: String,
    /// Leave a key that already has a record as it is.
    pub seed: bool,
    /// Write only if the dataset's last change is still this one.
    pub expect_at: Option<FeedCursor>,
}

/// An import's write, all or nothing, with only one chunk in memory at a time.
///
/// On PostgreSQL: chunk after chunk in one transaction, committed whole at the end or dropped
/// (rolled back). It locks only the rows it writes, so the replicas' writes go on beside it.
///
/// On SQLite one such transaction would hold the store's only write lock from the first chunk
/// to the commit — tens of seconds for a million records, longer than a desk's submission may
/// wait for it (the busy timeout, 10 s). So each chunk is checked against the store as it
/// stands and *staged* in a scratch database beside it, with no lock on the store; the commit
/// then applies them all in one short write (set-based statements inside SQLite), after making
/// sure that no key the chunks were checked against has been written since — if one has,
/// nothing is written and the key is named ([`PutRefused::Changed`]).
pub struct ImportWrite {
    way: ImportWay,
    backend: Backend,
    pool: sqlx::AnyPool,
    /// The audit chain its entry goes to.
    chain: String,
    dataset: String,
    options: PutOptions,
    chunks: usize,
    records: usize,
    written: usize,
}

/// Where an import's chunks go until its commit.
enum ImportWay {
    /// PostgreSQL: the import's own transaction.
    Transaction(Transaction<'static, Any>),
    /// SQLite: a scratch database.
    Staged(Staging),
}

impl Store {
    /// Begins an import of `dataset`.
    pub async fn begin_import(
        &self,
        dataset: &str,
        options: PutOptions,
    ) -> Result<ImportWrite, StoreError> {
        let way = match self.backend {
            Backend::Sqlite => ImportWay::Staged(Staging::open(&self.pool).await?),
            Backend::Postgres => ImportWay::Transaction(self.pool.begin().await?),
        };
        Ok(ImportWrite {
            way,
            pool: self.pool.clone(),
            backend: self.backend,
            chain: self.chain(),
            dataset: dataset.to_string(),
            options,
            chunks: 0,
            records: 0,
            written: 0,
        })
    }
}

impl ImportWrite {
    /// Puts one chunk (see [`put`]); `expect_at` is checked before the first (and, on SQLite,
    /// again at the commit).
    pub async fn put(
        &mut self,
        records: &[Record],
    ) -> Result<Result<Vec<PutOutcome>, PutRefused>, StoreError> {
        let mut options = self.options.clone();
        if self.chunks > 0 {
            options.expect_at = None;
        }
        self.chunks += 1;
        self.records += records.len();
        let result = match &mut self.way {
            ImportWay::Transaction(tx) => {
                put(tx, self.backend, &self.dataset, records, &options).await?
            }
            ImportWay::Staged(staging) => staging.put(&self.dataset, records, &options).await?,
        };
        if let Ok(outcomes) = &result {
            self.written += outcomes.iter().filter(|o| **o == PutOutcome::Written).count();
        }
        Ok(result)
    }

    /// How many records were written so far (repeats of stored ones are not).
    pub fn written(&self) -> usize {
        self.written
    }

    /// Commits everything put, with `audit` (given the counts) when anything was written.
    pub async fn commit(
        self,
        audit: Option<super::audit::AuditEntry>,
    ) -> Result<Result<usize, PutRefused>, StoreError> {
        let mut entries = Vec::new();
        if let (Some(mut entry), true) = (audit, self.written > 0) {
            if let Some(detail) = entry.detail.as_object_mut() {
                detail.insert("records".into(), self.records.into());
                detail.insert("written".into(), self.written.into());
            }
            entries.push(entry);
        }
        let append = |tx| async {
            let append = super::audit::append(tx, self.backend, &entries);
            super::audit::CHAIN.scope(self.chain.clone(), append).await
        };
        match self.way {
            ImportWay::Transaction(mut tx) => {
                append(&mut tx).await?;
                tx.commit().await?;
            }
            ImportWay::Staged(mut staging) => {
                let mut tx =
                    sqlx::Connection::begin_with(&mut staging.conn, "BEGIN IMMEDIATE").await?;
                if let Err(refused) = Staging::apply(&mut tx, &self.dataset, &self.options).await? {
                    return Ok(Err(refused));
                }
                append(&mut tx).await?;
                tx.commit().await?;
                // Fold the import's write-ahead log into the database now, here, rather than
                // leave it to whichever commit of the gateway's next crosses the checkpoint
                // threshold (a submission would pay for the import). Best effort: a busy
                // reader only makes it partial.
                let _ = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&self.pool).await;
            }
        }
        Ok(Ok(self.written))
    }
}

/// An SQLite import's scratch database: a file beside the store's, attached to a connection
/// taken out of the pool for the import alone; both go when the import ends, committed or not.
struct Staging {
    conn: sqlx::AnyConnection,
    path: std::path::PathBuf,
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Staging {
    async fn open(pool: &sqlx::AnyPool) -> Result<Staging, StoreError> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let mut conn = pool.acquire().await?.detach();
        let main: String =
            sqlx::query_scalar("SELECT file FROM pragma_database_list WHERE name = 'main'")
                .fetch_one(&mut conn)
                .await?;
        let dir = std::path::Path::new(&main)
            .parent()
            .filter(|_| !main.is_empty())
            .map_or_else(std::env::temp_dir, std::path::Path::to_path_buf);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = dir.join(format!(".liandong-import-{}-{n}.db", std::process::id()));
        let mut staging = Staging { conn, path };
        sqlx::query("ATTACH DATABASE ? AS stage")
            .bind(staging.path.to_string_lossy().into_owned())
            .execute(&mut staging.conn)
            .await?;
        for statement in [
            // Scratch: nothing to recover after a crash.
            "PRAGMA stage.journal_mode = OFF",
            "PRAGMA stage.synchronous = OFF",
            // The records to write, in the import's order.
            "CREATE TABLE stage.rows (seq INTEGER PRIMARY KEY, key TEXT NOT NULL, \
             owner TEXT NOT NULL, version INTEGER NOT NULL, updated_at INTEGER NOT NULL, \
             deleted INTEGER NOT NULL, body TEXT NOT NULL, doc TEXT NOT NULL)",
            "CREATE INDEX stage.rows_by_key ON rows (key, seq)",
            // Each key as the store had it when a chunk was checked against it.
            "CREATE TABLE stage.observed (key TEXT PRIMARY KEY, present INTEGER NOT NULL, \
             version INTEGER NOT NULL, owner TEXT NOT NULL)",
        ] {
            sqlx::query(statement).execute(&mut staging.conn).await?;
        }
        Ok(staging)
    }

    /// Checks a chunk against what this import staged before, else the store as it stands
    /// (noting what it saw), and stages what it writes.
    async fn put(
        &mut self,
        dataset: &str,
        records: &[Record],
        options: &PutOptions,
    ) -> Result<Result<Vec<PutOutcome>, PutRefused>, StoreError> {
        if let Some(moved) = moved(&mut self.conn, dataset, options.expect_at).await? {
            return Ok(Err(moved));
        }
        let mut keys: Vec<&str> = records.iter().map(|r| r.key.as_str()).collect();
        keys.sort_unstable();
        keys.dedup();
        let mut current = self.staged(dataset, &keys).await?;
        let unseen: Vec<&str> =
            keys.iter().copied().filter(|key| !current.contains_key(*key)).collect();
        let stored = stored(&mut self.conn, dataset, &unseen, "").await?;
        for chunk in unseen.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "INSERT OR IGNORE INTO stage.observed (key, present, version, owner) VALUES {}",
                values(Backend::Sqlite, chunk.len(), 4, None)
            );
            let mut query = sqlx::query(&sql);
            for key in chunk {
                let seen = stored.get(*key);
                query = query
                    .bind(*key)
                    .bind(i64::from(seen.is_some()))
                    .bind(seen.map_or(0, version))
                    .bind(seen.map_or(String::new(), |r| r.owner.clone()));
            }
            query.execute(&mut self.conn).await?;
        }
        current.extend(stored);
        let decided = match decide(records, &current, options.seed) {
            Ok(decided) => decided,
            Err(stale) => return Ok(Err(PutRefused::Stale(stale))),
        };
        for chunk in decided.written.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO stage.rows (key, owner, version, updated_at, deleted, body, doc) VALUES {}",
                values(Backend::Sqlite, chunk.len(), 7, None)
            );
            let mut query = sqlx::query(&sql);
            for r in chunk {
                let doc = log_doc(r)?;
                query = query
                    .bind(r.key.as_str())
                    .bind(r.owner.as_str())
                    .bind(version(r))
                    .bind(r.updated_at.unix_seconds())
                    .bind(i64::from(r.deleted))
                    .bind(r.body.to_string())
                    .bind(doc);
            }
            query.execute(&mut self.conn).await?;
        }
        Ok(Ok(decided.outcomes))
    }

    /// The last record this import staged for each of these keys.
    async fn staged(
        &mut self,
        dataset: &str,
        keys: &[&str],
    ) -> Result<HashMap<String, Record>, StoreError> {
        let mut found = HashMap::new();
        for chunk in keys.chunks(ROWS_PER_STATEMENT) {
            let places = vec!["?"; chunk.len()].join(", ");
            let sql = format!(
                "{RECORD_SELECT} FROM stage.rows WHERE seq IN \
                 (SELECT MAX(seq) FROM stage.rows WHERE key IN ({places}) GROUP BY key)"
            );
            let mut query = sqlx::query(&sql);
            for key in chunk {
                query = query.bind(*key);
            }
            for row in query.fetch_all(&mut self.conn).await? {
                let record = record_from_row(dataset, &row)?;
                found.insert(record.key.clone(), record);
            }
        }
        Ok(found)
    }

    /// Writes what was staged, in `tx` (the store's write lock held): unless the dataset has
    /// moved from `expect_at`, or a key was written by someone else since it was checked.
    async fn apply(
        tx: &mut Transaction<'_, Any>,
        dataset: &str,
        options: &PutOptions,
    ) -> Result<Result<(), PutRefused>, StoreError> {
        if let Some(moved) = moved(tx, dataset, options.expect_at).await? {
            return Ok(Err(moved));
        }
        let changed: Vec<(String, i64)> = sqlx::query_as(
            "SELECT o.key, COALESCE(r.version, 0) FROM stage.observed o \
             LEFT JOIN main.records r ON r.dataset = ? AND r.key = o.key \
             WHERE (r.key IS NULL) <> (o.present = 0) \
             OR (r.key IS NOT NULL AND (r.version <> o.version OR r.owner <> o.owner)) \
             ORDER BY o.key LIMIT 100",
        )
        .bind(dataset)
        .fetch_all(&mut **tx)
        .await?;
        if !changed.is_empty() {
            let changed = changed.into_iter().map(|(key, now)| (key, now.max(0) as u64));
            return Ok(Err(PutRefused::Changed(changed.collect())));
        }
        sqlx::query(&format!(
            "INSERT INTO main.record_log (dataset, key, version, deleted, doc, writer, tx) \
             SELECT ?, key, version, deleted, doc, ?, {} FROM stage.rows ORDER BY seq",
            tx_stamp(Backend::Sqlite)
        ))
        .bind(dataset)
        .bind(options.writer.as_str())
        .execute(&mut **tx)
        .await?;
        // Each key's last staged write, in key order: the table's key index then grows at its
        // end page by page instead of at random places (a million keys in a random order took
        // twice as long in the file's order; docs/PERFORMANCE.md).
        sqlx::query(
            "INSERT INTO main.records (dataset, key, owner, version, updated_at, deleted, body) \
             SELECT ?, key, owner, version, updated_at, deleted, body FROM stage.rows s \
             WHERE NOT EXISTS (SELECT 1 FROM stage.rows t WHERE t.key = s.key AND t.seq > s.seq) \
             ORDER BY key \
             ON CONFLICT (dataset, key) DO UPDATE SET owner = excluded.owner, \
             version = excluded.version, updated_at = excluded.updated_at, \
             deleted = excluded.deleted, body = excluded.body",
        )
        .bind(dataset)
        .execute(&mut **tx)
        .await?;
        Ok(Ok(()))
    }
}

/// Where a dataset's log ends: its last change (the beginning when it has none).
pub async fn position(
    conn: &mut sqlx::AnyConnection,
    dataset: &str,
) -> Result<FeedCursor, StoreError> {
    let row = sqlx::query(
        "SELECT tx, seq FROM record_log WHERE dataset = $1 ORDER BY tx DESC, seq DESC LIMIT 1",
    )
    .bind(dataset)
    .fetch_optional(conn)
    .await?;
    Ok(match row {
        Some(row) => FeedCursor { tx: row.try_get(0)?, seq: row.try_get(1)? },
        None => FeedCursor::default(),
    })
}

/// The refusal of a write that expected the dataset `at` a position it has moved from.
async fn moved(
    conn: &mut sqlx::AnyConnection,
    dataset: &str,
    at: Option<FeedCursor>,
) -> Result<Option<PutRefused>, StoreError> {
    let Some(expected) = at else { return Ok(None) };
    let now = position(conn, dataset).await?;
    Ok((now != expected).then_some(PutRefused::Moved { now }))
}

/// A record as its log entry keeps it.
fn log_doc(record: &Record) -> Result<String, StoreError> {
    serde_json::to_string(record)
        .map_err(|e| StoreError::Corrupt { id: record.key.clone(), problem: e.to_string() })
}

/// What a put does: the outcome of each record, and the records to write, in order.
struct Decided<'r> {
    outcomes: Vec<PutOutcome>,
    written: Vec<&'r Record>,
}

/// What a put of `records` does over `stored` (each key's record before it) — or every record
/// that may not be written.
fn decide<'r>(
    records: &'r [Record],
    stored: &HashMap<String, Record>,
    seed: bool,
) -> Result<Decided<'r>, Vec<Stale>> {
    let mut outcomes = Vec::with_capacity(records.len());
    let mut stale = Vec::new();
    let mut written: Vec<&Record> = Vec::new();
    // What this put has written so far: a later record of the same key is compared with it.
    let mut written_here: HashMap<&str, &Record> = HashMap::new();
    for (index, record) in records.iter().enumerate() {
        let now =
            written_here.get(record.key.as_str()).copied().or_else(|| stored.get(&record.key));
        let outcome = match now {
            None => PutOutcome::Written,
            Some(_) if seed => PutOutcome::Unchanged,
            Some(now) if now.owner == record.owner && record.version > now.version => {
                PutOutcome::Written
            }
            Some(now)
                if now.owner == record.owner
                    && record.version == now.version
                    && same_content(now, record) =>
            {
                PutOutcome::Unchanged
            }
            // Another owner's record, or an older or conflicting version: refused, saying which.
            Some(now) => {
                stale.push(Stale {
                    index,
                    key: record.key.clone(),
                    current: now.version,
                    given: record.version,
                    writer: record.owner.clone(),
                    owned_by: (now.owner != record.owner).then(|| now.owner.clone()),
                });
                PutOutcome::Unchanged
            }
        };
        if outcome == PutOutcome::Written {
            written_here.insert(record.key.as_str(), record);
            written.push(record);
        }
        outcomes.push(outcome);
    }
    if stale.is_empty() {
        Ok(Decided { outcomes, written })
    } else {
        Err(stale)
    }
}

/// Stores records of one dataset, all or nothing: when any version does not grow (and is not a
/// repetition of the stored one), nothing is written and every such record is named. With
/// `seed`, a key that already has a record is left as it is.
pub async fn put(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    dataset: &str,
    records: &[Record],
    options: &PutOptions,
) -> Result<Result<Vec<PutOutcome>, PutRefused>, StoreError> {
    let seed = options.seed;
    let lock = if backend == Backend::Postgres {
        // One writer per dataset at a time across replicas, so that "the dataset has not moved"
        // holds until this commit (SQLite has one writer anyway).
        sqlx::query("SELECT pg_advisory_xact_lock(727275, hashtext($1))")
            .bind(dataset)
            .execute(&mut **tx)
            .await?;
        " FOR UPDATE"
    } else {
        ""
    };
    if let Some(moved) = moved(tx, dataset, options.expect_at).await? {
        return Ok(Err(moved));
    }
    let keys: Vec<&str> = records.iter().map(|r| r.key.as_str()).collect();
    let current = stored(tx, dataset, &keys, lock).await?;
    let Decided { outcomes, written: accepted } = match decide(records, &current, seed) {
        Ok(decided) => decided,
        Err(stale) => return Ok(Err(PutRefused::Stale(stale))),
    };
    // The table holds each key's last write; the log every write.
    let mut last: Vec<&Record> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for record in accepted.iter().rev() {
        if seen.insert(record.key.as_str()) {
            last.push(record);
        }
    }
    for chunk in last.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO records (dataset, key, owner, version, updated_at, deleted, body) VALUES {} \
             ON CONFLICT (dataset, key) DO UPDATE SET owner = excluded.owner, version = excluded.version, \
             updated_at = excluded.updated_at, deleted = excluded.deleted, body = excluded.body",
            values(backend, chunk.len(), 7, None)
        );
        bind_records(sqlx::query(&sql), dataset, chunk).execute(&mut **tx).await?;
    }
    for chunk in accepted.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO record_log (dataset, key, version, deleted, doc, writer, tx) VALUES {}",
            values(backend, chunk.len(), 6, Some((6, tx_stamp(backend))))
        );
        let mut query = sqlx::query(&sql);
        for r in chunk {
            let doc = log_doc(r)?;
            query = query
                .bind(dataset)
                .bind(r.key.as_str())
                .bind(version(r))
                .bind(i64::from(r.deleted))
                .bind(doc)
                .bind(options.writer.as_str());
        }
        query.execute(&mut **tx).await?;
    }
    Ok(Ok(outcomes))
}

/// The stored records (tombstones included) of these keys of a dataset, several keys per
/// statement; `lock` is appended to each (`FOR UPDATE` inside a put on PostgreSQL).
async fn stored(
    conn: &mut sqlx::AnyConnection,
    dataset: &str,
    keys: &[&str],
    lock: &str,
) -> Result<HashMap<String, Record>, StoreError> {
    let mut found = HashMap::with_capacity(keys.len());
    for chunk in keys.chunks(ROWS_PER_STATEMENT) {
        let places: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 2)).collect();
        let sql = format!(
            "{RECORD_SELECT} FROM records WHERE dataset = $1 AND key IN ({}){lock}",
            places.join(", ")
        );
        let mut query = sqlx::query(&sql).bind(dataset);
        for key in chunk {
            query = query.bind(*key);
        }
        for row in query.fetch_all(&mut *conn).await? {
            let record = record_from_row(dataset, &row)?;
            found.insert(record.key.clone(), record);
        }
    }
    Ok(found)
}

fn same_content(a: &Record, b: &Record) -> bool {
    a.owner == b.owner && a.deleted == b.deleted && a.body == b.body
}

fn bind_records<'q>(
    mut query: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>,
    dataset: &'q str,
    records: &[&'q Record],
) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>> {
    for r in records {
        query = query
            .bind(dataset)
            .bind(r.key.as_str())
            .bind(r.owner.as_str())
            .bind(version(r))
            .bind(r.updated_at.unix_seconds())
            .bind(i64::from(r.deleted))
            .bind(r.body.to_string());
    }
    query
}

fn version(record: &Record) -> i64 {
    record.version.min(i64::MAX as u64) as i64
}

const RECORD_SELECT: &str = "SELECT key, owner, version, updated_at, deleted, body";

fn record_from_row(dataset: &str, row: &AnyRow) -> Result<Record, StoreError> {
    let key: String = row.try_get(0)?;
    let version: i64 = row.try_get(2)?;
    let updated_at: i64 = row.try_get(3)?;
    let deleted: i64 = row.try_get(4)?;
    let body: String = row.try_get(5)?;
    let body = serde_json::from_str(&body).map_err(|e| StoreError::Corrupt {
        id: format!("record {dataset}/{key}"),
        problem: e.to_string(),
    })?;
    Ok(Record {
        dataset: dataset.to_string(),
        key,
        owner: row.try_get(1)?,
        version: version.max(0) as u64,
        updated_at: Timestamp::from_unix_seconds(updated_at).unwrap_or_else(Timestamp::now),
        deleted: deleted != 0,
        body,
    })
}

/// The condition "`table`'s row is at or before the cursor bound as `$a` (tx), `$b` (tx), `$c` (seq)".
fn at_or_before(table: &str, a: usize, b: usize, c: usize) -> String {
    format!("({table}.tx < ${a} OR ({table}.tx = ${b} AND {table}.seq <= ${c}))")
}

impl Store {
    /// The current record of a key (tombstones included).
    /// The stored records of these keys (tombstones included), several keys per statement.
    /// Every version of one record, oldest first, each with who wrote it (`None` for writes
    /// made before writers were kept).
    pub async fn record_history(
        &self,
        dataset: &str,
        key: &str,
    ) -> Result<Vec<(Record, Option<String>)>, StoreError> {
        let rows = sqlx::query(
            "SELECT doc, writer FROM record_log WHERE dataset = $1 AND key = $2 ORDER BY tx, seq",
        )
        .bind(dataset)
        .bind(key)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let doc = RecordDoc(row.try_get(0)?);
                let record = doc.record().map_err(|e| StoreError::Corrupt {
                    id: key.to_string(),
                    problem: e.to_string(),
                })?;
                Ok((record, row.try_get::<Option<String>, _>(1)?))
            })
            .collect()
    }

    /// Where a dataset's log ends now (its "version" for `import --if-version`).
    pub async fn dataset_position(&self, dataset: &str) -> Result<FeedCursor, StoreError> {
        let mut conn = self.pool.acquire().await?;
        position(&mut conn, dataset).await
    }

    pub async fn records_of(
        &self,
        dataset: &str,
        keys: &[&str],
    ) -> Result<HashMap<String, Record>, StoreError> {
        stored(&mut *self.pool.acquire().await?, dataset, keys, "").await
    }

    /// Up to `limit` records of a dataset after the key `after`, in key order, tombstones
    /// included: each key's last write, as an export lists them.
    pub async fn records_after(
        &self,
        dataset: &str,
        after: &str,
        limit: i64,
    ) -> Result<Vec<Record>, StoreError> {
        let rows = sqlx::query(&format!(
            "{RECORD_SELECT} FROM records WHERE dataset = $1 AND key > $2 ORDER BY key LIMIT $3"
        ))
        .bind(dataset)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|row| record_from_row(dataset, row)).collect()
    }

    pub async fn record(&self, dataset: &str, key: &str) -> Result<Option<Record>, StoreError> {
        let row =
            sqlx::query(&format!("{RECORD_SELECT} FROM records WHERE dataset = $1 AND key = $2"))
                .bind(dataset)
                .bind(key)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|r| record_from_row(dataset, &r)).transpose()
    }

    /// The feed position that everything committed so far is at or before, and everything
    /// committed later after: where a snapshot is taken. `table` is `record_log` or `events`.
    pub async fn feed_head(&self, table: FeedTable) -> Result<FeedCursor, StoreError> {
        match self.backend {
            Backend::Sqlite => {
                let row =
                    sqlx::query(&format!("SELECT COALESCE(MAX(seq), 0) FROM {}", table.name()))
                        .fetch_one(&self.pool)
                        .await?;
                Ok(FeedCursor { tx: 0, seq: row.try_get(0)? })
            }
            // Every transaction below the oldest running one has ended.
            Backend::Postgres => {
                Ok(FeedCursor { tx: self.oldest_running().await? - 1, seq: i64::MAX })
            }
        }
    }

    /// PostgreSQL's oldest running transaction id (`i64::MAX` on SQLite, whose one writer
    /// leaves nothing running behind a reader).
    async fn oldest_running(&self) -> Result<i64, StoreError> {
        match self.backend {
            Backend::Sqlite => Ok(i64::MAX),
            Backend::Postgres => {
                let row = sqlx::query("SELECT txid_snapshot_xmin(txid_current_snapshot())")
                    .fetch_one(&self.pool)
                    .await?;
                Ok(row.try_get(0)?)
            }
        }
    }

    /// Writes of a dataset after `cursor`, in commit order, at most `limit`.
    ///
    /// A page is read as one value (`string_agg` of the log's JSON documents, put in order
    /// here): sqlx hands rows over one at a time between threads, which costs more than the
    /// query itself.
    pub async fn record_changes(
        &self,
        dataset: &str,
        cursor: FeedCursor,
        limit: i64,
    ) -> Result<Vec<(FeedCursor, RecordDoc)>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT string_agg(line, $1) FROM (SELECT tx, seq, tx || '.' || seq || ' ' || doc AS line \
             FROM record_log WHERE dataset = $2 AND {} {} ORDER BY tx, seq LIMIT $6) page",
            self.after_cursor(3, 4, 5),
            self.horizon()
        ))
        .bind("\n")
        .bind(dataset)
        .bind(cursor.tx)
        .bind(cursor.tx)
        .bind(cursor.seq)
        .bind(limit)
        .fetch_one(&self.pool)
        .await?;
        let lines: Option<String> = row.try_get(0)?;
        let mut changes = Vec::new();
        for line in lines.as_deref().unwrap_or("").lines() {
            let corrupt = |problem: String| StoreError::Corrupt {
                id: format!("record_log of {dataset}"),
                problem,
            };
            let (position, doc) =
                line.split_once(' ').ok_or_else(|| corrupt(format!("bad line {line:?}")))?;
            let position = FeedCursor::decode(position).map_err(corrupt)?;
            changes.push((position, RecordDoc(doc.to_string())));
        }
        // An aggregate's input order is not promised; the positions are.
        changes.sort_by_key(|(position, _)| *position);
        Ok(changes)
    }

    /// Every write after `cursor` committed so far — including those the feed still holds back
    /// behind a running transaction on PostgreSQL — and the cursor it is safe to resume from:
    /// the last write before the first held-back one. Reading again from it repeats the
    /// held-back writes, which a reader that applies by version does not mind. For in-memory
    /// caches that must see a write as soon as it is committed.
    pub async fn record_changes_now(
        &self,
        dataset: &str,
        cursor: FeedCursor,
        limit: i64,
    ) -> Result<(Vec<LogEntry>, FeedCursor), StoreError> {
        let xmin = self.oldest_running().await?;
        // One value for the page (see `record_changes`): tab-separated fields, one line per
        // write. Keys hold no control characters (the datasets' rule) and JSON none unescaped.
        let row = sqlx::query(&self.log_page_sql())
            .bind(dataset)
            .bind(cursor.tx)
            .bind(cursor.tx)
            .bind(cursor.seq)
            .bind(limit)
            .bind("\n")
            .bind("\t")
            .bind("\t")
            .bind("\t")
            .bind("\t")
            .bind("\t")
            .fetch_one(&self.pool)
            .await?;
        let page: Option<String> = row.try_get(0)?;
        let mut settled = cursor;
        let mut held_back = false;
        let mut changes = Vec::with_capacity(limit.clamp(0, 10_000) as usize);
        let corrupt = |line: &str| StoreError::Corrupt {
            id: dataset.to_string(),
            problem: format!("a log line does not read: {line:.80}"),
        };
        for line in page.as_deref().unwrap_or("").split('\n') {
            if line.is_empty() {
                continue;
            }
            let mut fields = line.splitn(6, '\t');
            let mut number =
                || fields.next().and_then(|f| f.parse::<i64>().ok()).ok_or_else(|| corrupt(line));
            let (tx, seq, version, deleted) = (number()?, number()?, number()?, number()?);
            let (key, doc) = (
                fields.next().ok_or_else(|| corrupt(line))?,
                fields.next().ok_or_else(|| corrupt(line))?,
            );
            changes.push(LogEntry {
                cursor: FeedCursor { tx, seq },
                key: key.to_string(),
                version: version as u64,
                deleted: deleted != 0,
                doc: RecordDoc(doc.to_string()),
            });
        }
        // An aggregate's order is not promised: put the page in log order.
        changes.sort_by_key(|entry| (entry.cursor.tx, entry.cursor.seq));
        for entry in &changes {
            held_back |= entry.cursor.tx >= xmin;
            if !held_back {
                settled = entry.cursor;
            }
        }
        Ok((changes, settled))
    }

    /// A page of a dataset's log as one value: (dataset, tx, tx, seq, limit, "\n", "\t" × 5).
    pub(crate) fn log_page_sql(&self) -> String {
        format!(
            "SELECT string_agg(line, $6) FROM (SELECT tx, seq, tx || $7 || seq || $8 || version || $9 || deleted || $10 || key || $11 || doc AS line \
             FROM record_log WHERE dataset = $1 AND {} ORDER BY tx, seq LIMIT $5) page",
            self.after_cursor(2, 3, 4)
        )
    }

    /// A page of the dataset as it was at `at`: for each key after `after`, in key order, its
    /// last write at or before `at`, tombstones left out. Returns the records and the last key
    /// (the next page starts after it), or `None` at the end. Read as one value, like changes.
    pub async fn record_snapshot(
        &self,
        dataset: &str,
        at: FeedCursor,
        after: &str,
        limit: i64,
    ) -> Result<(Vec<RecordDoc>, Option<String>), StoreError> {
        let row = sqlx::query(&format!(
            "SELECT string_agg(page.key || $11 || page.doc, $1), COUNT(*), MAX(page.key) FROM (SELECT l.key, l.doc FROM record_log l \
             WHERE l.dataset = $2 AND l.key > $3 AND {} AND NOT EXISTS (SELECT 1 FROM record_log m \
             WHERE m.dataset = l.dataset AND m.key = l.key AND (m.tx > l.tx OR (m.tx = l.tx AND m.seq > l.seq)) AND {}) \
             AND l.deleted = 0 ORDER BY l.key LIMIT $10) page",
            at_or_before("l", 4, 5, 6),
            at_or_before("m", 7, 8, 9)
        ))
        .bind("\n")
        .bind(dataset)
        .bind(after)
        .bind(at.tx)
        .bind(at.tx)
        .bind(at.seq)
        .bind(at.tx)
        .bind(at.tx)
        .bind(at.seq)
        .bind(limit)
        .bind("\t")
        .fetch_one(&self.pool)
        .await?;
        let (docs, count, last): (Option<String>, i64, Option<String>) =
            (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        // Keys hold no control characters, so a tab ends each; keys compare as bytes on both
        // backends (PostgreSQL's columns are COLLATE "C"), as pages are cut.
        let mut lines: Vec<(&str, &str)> = docs
            .as_deref()
            .unwrap_or("")
            .lines()
            .filter_map(|line| line.split_once('\t'))
            .collect();
        lines.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let records = lines.into_iter().map(|(_, doc)| RecordDoc(doc.to_string())).collect();
        Ok((records, if count >= limit { last } else { None }))
    }

    /// A page of the transfers `party` is a party to (all when `None`) as they were at `at`,
    /// after the transfer id `after`, in id order: the `transfer_status` dataset's snapshot.
    pub async fn transfer_snapshot(
        &self,
        party: Option<&str>,
        at: FeedCursor,
        after: &str,
        limit: i64,
    ) -> Result<(Vec<super::FeedEvent>, Option<String>), StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT transfer_id, seq, tx, kind, body, at FROM events WHERE transfer_id > $1 AND {} \
             AND ($5 = '' OR origin = $5 OR destination = $6) ORDER BY transfer_id, tx DESC, seq DESC LIMIT $7",
            at_or_before("events", 2, 3, 4)
        ))
        .bind(after)
        .bind(at.tx)
        .bind(at.tx)
        .bind(at.seq)
        .bind(party.unwrap_or(""))
        .bind(party.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let full = rows.len() as i64 >= limit;
        let mut events = Vec::new();
        let mut last: Option<String> = None;
        for row in &rows {
            let id: String = row.try_get(0)?;
            if last.as_deref() == Some(id.as_str()) {
                continue;
            }
            last = Some(id);
            let (seq, tx): (i64, i64) = (row.try_get(1)?, row.try_get(2)?);
            events.push(super::event_from_parts(
                (seq, tx),
                row.try_get(3)?,
                row.try_get(4)?,
                row.try_get(5)?,
            )?);
        }
        Ok((events, if full { last } else { None }))
    }

    /// On PostgreSQL, the condition that keeps a feed reader behind every running transaction.
    /// The condition "after the cursor (`$tx`, `$seq`)" in (tx, seq) order, written so the feed
    /// index reads from the cursor on, not from the beginning (a page must not cost more as
    /// the log grows). `tx_again` is the cursor's tx bound a second time. SQLite's tx is always
    /// 0, so seq alone is the range there.
    pub(crate) fn after_cursor(&self, tx: usize, tx_again: usize, seq: usize) -> String {
        match self.backend {
            Backend::Postgres => format!("tx >= ${tx} AND (tx > ${tx_again} OR seq > ${seq})"),
            Backend::Sqlite => format!("tx = ${tx} AND ${tx_again} = ${tx_again} AND seq > ${seq}"),
        }
    }

    pub(crate) fn horizon(&self) -> &'static str {
        match self.backend {
            Backend::Postgres => "AND tx < txid_snapshot_xmin(txid_current_snapshot())",
            Backend::Sqlite => "",
        }
    }
}

/// The append-only tables a feed is read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeedTable {
    Records,
    Events,
}

impl FeedTable {
    fn name(self) -> &'static str {
        match self {
            FeedTable::Records => "record_log",
            FeedTable::Events => "events",
        }
    }
}
