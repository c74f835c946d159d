//! Durable storage of transfers, their outbox and their event feed: SQLite (embedded, the
//! default) or PostgreSQL (several replicas share one database).
//!
//! Both backends run the same queries through `sqlx::Any`; what differs is chosen here: the
//! DDL's key type, SQLite's pragmas (WAL, `synchronous = FULL`: a commit is fsynced before
//! `submitted` is answered), and how delivery work is leased (`FOR UPDATE SKIP LOCKED` on
//! PostgreSQL, so two replicas never hold the same item; one writer on SQLite).
//!
//! Every change is a [`Write`] executed in a transaction by [`writes::execute`]. All of a
//! replica's writes go through one task that commits several at once ([`group_commit`]), and a
//! batch's submissions go in multi-row statements: concurrent submitters share each commit and
//! its fsync. Leases on PostgreSQL bypass it (`SKIP LOCKED` is made for concurrent takers).
//!
//! Invariants: a transfer is unique by (sender, sender_ref), so a resent document finds the
//! first transfer; a status change and the notifications it causes commit together; an outbox
//! item of a transfer is handed out only when every earlier item of that transfer for the same
//! destination is done (notifications arrive in order).

pub mod audit;
pub mod facts;
mod group_commit;
pub mod live;
pub mod outbox;
pub mod records;
mod rejected_lookup;
pub mod replicas;
pub mod schema;
mod sql;
pub mod upkeep;
pub mod writes;

use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};
use tokio::sync::oneshot;

pub use records::{FeedTable, ImportWrite, LogEntry, PutOptions, PutOutcome, PutRefused, Stale};
pub use writes::{Write, WriteResult};

use crate::model::{EndpointId, State, Timestamp, Transfer};

pub(crate) use outbox::{outbox_from_row, OUTBOX_SELECT};
pub use outbox::{DeliveryKind, OutboxGauge, OutboxItem, OutboxStatus};
/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or could not be reached.
    #[error("store: {0}")]
    Database(sqlx::Error),
    /// The database is full (the disk, or SQLite's `store.max_size`): nothing was written.
    #[error("store: the database is full (free disk space or raise store.max_size); nothing was written")]
    Full,
    /// A stored document no longer reads as the model (a bug or a hand edit).
    #[error("store: corrupt record {id}: {problem}")]
    Corrupt { id: String, problem: String },
    /// A batch commit failed; nothing of it was written.
    #[error("store: commit failed: {0}")]
    Commit(String),
    /// The writer task is gone (the gateway is shutting down).
    #[error("store: shutting down")]
    Closed,
    /// A read shared by several requests failed (each of them is told).
    #[error("store: {0}")]
    Read(String),
    /// The writer's thread could not start (the store does not open).
    #[error("store: the writer's thread did not start: {0}")]
    Writer(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> StoreError {
        // SQLite's SQLITE_FULL (13); PostgreSQL's disk_full (53100).
        match error.as_database_error().and_then(|e| e.code()) {
            Some(code) if code == "13" || code == "53100" => StoreError::Full,
            _ => StoreError::Database(error),
        }
    }
}

/// Which database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// An endpoint's delivery health.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointHealth {
    pub endpoint: String,
    pub last_success: Option<i64>,
    pub failing_since: Option<i64>,
    pub last_error: Option<String>,
}

/// Filters for listing transfers.
#[derive(Clone, Debug, Default)]
pub struct TransferFilter {
    /// Transfers this endpoint is a party to.
    pub party: Option<String>,
    pub state: Option<State>,
    pub overdue: Option<bool>,
    /// Created at or after (Unix seconds).
    pub since: Option<i64>,
    /// Created before (Unix seconds).
    pub until: Option<i64>,
    /// Page size (at most 500).
    pub limit: i64,
    /// Transfer ids after this one (the previous page's last id).
    pub after: Option<String>,
    /// Either desk's reference: the sender's (`sender_ref`) or the origin desk's case number
    /// (the local part of `case_id`).
    pub reference: Option<String>,
    /// The caller's phone, normalised (`+8613900000001`).
    pub phone: Option<String>,
    /// Only transfers waiting for a linkage decision: `dispute` (an open dispute) or
    /// `extension` (an extension request unanswered) — the linkage office's and the desks'
    /// work list (`linkage.md`).
    pub pending: Option<Pending>,
}

/// What a transfer may wait for a decision on ([`TransferFilter::pending`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pending {
    Dispute,
    Extension,
}

impl std::str::FromStr for Pending {
    type Err = String;
    fn from_str(s: &str) -> Result<Pending, String> {
        match s {
            "dispute" => Ok(Pending::Dispute),
            "extension" => Ok(Pending::Extension),
            _ => Err(format!("expected dispute or extension, got {s:?}")),
        }
    }
}

/// What the deadline sweeper reads: the ids of the transfers whose `receive_by`, or whose
/// `resolve_by`, has passed and is not escalated yet, oldest deadline first, each along a
/// partial index that holds exactly those (`transfers_receive_due`, `transfers_resolve_due`),
/// so a page costs what it returns. One query with an OR of the two read the whole table each
/// time; a UNION of the two halves with their documents, ordered by id, sorted every overdue
/// transfer in memory on every page — with hundreds of thousands overdue (a desk that never
/// confirmed receipt, at 1,000/s) that held gigabytes and escalated ~230 a second. SQLite,
/// which keeps no statistics here, is told the index (`INDEXED BY`, which also fails the
/// statement if the index could not serve it); PostgreSQL's planner finds it.
fn overdue_sql(backend: Backend, deadline: &str) -> String {
    let (index, condition) = match deadline {
        "receive_by" => ("transfers_receive_due", "state IN ('submitted', 'delivered')"),
        _ => (
            "transfers_resolve_due",
            "state NOT IN ('rejected', 'closed', 'cancelled', 'resolved')",
        ),
    };
    let indexed = match backend {
        Backend::Sqlite => format!(" INDEXED BY {index}"),
        Backend::Postgres => String::new(),
    };
    format!(
        "SELECT transfer_id FROM transfers{indexed} WHERE {condition} \
         AND escalations NOT LIKE '%{deadline}%' AND {deadline} < $1 ORDER BY {deadline} LIMIT $2"
    )
}

/// The longest a PostgreSQL lease read may run (its transaction's `statement_timeout`) before
/// the server cancels it; the deliverer's next round reads again, with a fresh snapshot. A lease
/// read takes milliseconds, but one that ran for minutes was found with the tables past the
/// server's memory (docs/PERFORMANCE.md, "The upkeep past the server's memory"): its snapshot
/// kept every delivery's dead outbox rows alive for every other reader and for `VACUUM`, so each
/// lease read walked more of them and took longer, and deliveries all but stopped.
pub const LEASE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The store.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
    pool: AnyPool,
    /// The replica's writer, which batches commits.
    writer: group_commit::Writer,
    /// What the writer tells after each commit: the deliverer waits on its `outbox_ready`
    /// rather than its next poll, live readers of the change feed on `committed` rather than
    /// polling (another replica's commits are found by those polls).
    signals: group_commit::Signals,
    /// The replica's name, its audit chain: given once by the gateway that claimed it.
    chain: Arc<std::sync::OnceLock<String>>,
    /// Where submissions ask for their case's rejected transfers, several per statement.
    rejected: rejected_lookup::RejectedLookup,
}

impl Store {
    /// Names this store's audit chain: the replica name its gateway claimed
    /// ([`Store::claim_replica`]). Once; a tool's store keeps `local`.
    pub fn name_chain(&self, name: String) {
        let _ = self.chain.set(name);
    }

    /// This store's audit chain.
    pub fn chain(&self) -> String {
        self.chain.get().cloned().unwrap_or_else(|| "local".to_string())
    }

    /// Opens a SQLite file (created if missing), applies the schema, and starts the writer.
    pub async fn sqlite(path: &std::path::Path) -> Result<Store, StoreError> {
        Store::sqlite_limited(path, None).await
    }

    /// [`Store::sqlite`], the file growing to at most `max_size` bytes: beyond, writes fail as
    /// on a full disk ([`StoreError::Full`]) and what is stored stays intact.
    pub async fn sqlite_limited(
        path: &std::path::Path,
        max_size: Option<u64>,
    ) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let pool = AnyPoolOptions::new()
            // The writer keeps one; the others are for readers.
            .max_connections(5)
            // A connection to a local file does not go stale: no ping before each use.
            .test_before_acquire(false)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    for pragma in [
                        "PRAGMA journal_mode = WAL",
                        "PRAGMA synchronous = FULL",
                        "PRAGMA busy_timeout = 10000",
                        "PRAGMA foreign_keys = ON",
                        // Savepoints' undo pages in memory, not in a temporary file.
                        "PRAGMA temp_store = MEMORY",
                        // 64 MiB of page cache (the default 2 MiB re-read index pages on every batch).
                        "PRAGMA cache_size = -65536",
                    ] {
                        sqlx::query(pragma).execute(&mut *conn).await?;
                    }
                    if let Some(max) = max_size {
                        // Pages are 4 KiB (SQLite's default for new files).
                        sqlx::query(&format!("PRAGMA max_page_count = {}", (max / 4096).max(1)))
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await?;
        migrate(&pool, Backend::Sqlite).await?;
        let chain = Arc::new(std::sync::OnceLock::new());
        let signals = group_commit::Signals::default();
        Ok(Store {
            backend: Backend::Sqlite,
            pool: pool.clone(),
            rejected: rejected_lookup::RejectedLookup::start(pool.clone(), Backend::Sqlite),
            writer: group_commit::start(pool, Backend::Sqlite, chain.clone(), signals.clone())
                .map_err(|e| StoreError::Writer(e.to_string()))?,
            signals,
            chain,
        })
    }

    /// Connects to PostgreSQL and applies the schema.
    pub async fn postgres(url: &str, pool_size: u32) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let pool = AnyPoolOptions::new()
            .max_connections(pool_size)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await?;
        migrate(&pool, Backend::Postgres).await?;
        let chain = Arc::new(std::sync::OnceLock::new());
        let signals = group_commit::Signals::default();
        Ok(Store {
            backend: Backend::Postgres,
            pool: pool.clone(),
            rejected: rejected_lookup::RejectedLookup::start(pool.clone(), Backend::Postgres),
            writer: group_commit::start(pool, Backend::Postgres, chain.clone(), signals.clone())
                .map_err(|e| StoreError::Writer(e.to_string()))?,
            signals,
            chain,
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }
}

/// Applies the schema.
async fn migrate(pool: &AnyPool, backend: Backend) -> Result<(), StoreError> {
    let postgres = backend == Backend::Postgres;
    let mut conn = pool.acquire().await?;
    if postgres {
        // Replicas starting together must not race each other's DDL.
        sqlx::query("SELECT pg_advisory_lock(727274)").execute(&mut *conn).await?;
    }
    let facts_existed = table_exists(&mut conn, postgres, "transfer_facts").await?;
    let mut result = Ok(());
    for statement in schema::statements(postgres) {
        if let Err(e) = sqlx::query(&statement).execute(&mut *conn).await {
            result = Err(e.into());
            break;
        }
    }
    if result.is_ok() {
        result = add_columns(&mut conn, postgres).await;
    }
    if result.is_ok() {
        result = migrate_data(&mut conn).await;
    }
    if result.is_ok() && !facts_existed {
        result = facts::backfill(&mut conn, backend).await.map(|filled| {
            if filled > 0 {
                tracing::info!(transfers = filled, "the figures' facts filled from the transfers");
            }
        });
    }
    if postgres {
        sqlx::query("SELECT pg_advisory_unlock(727274)").execute(&mut *conn).await?;
    }
    result
}

async fn table_exists(
    conn: &mut sqlx::AnyConnection,
    postgres: bool,
    table: &str,
) -> Result<bool, StoreError> {
    let sql = if postgres {
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = $1"
    } else {
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = $1"
    };
    let found: i64 = sqlx::query_scalar(sql).bind(table).fetch_one(&mut *conn).await?;
    Ok(found > 0)
}

/// Makes the [`schema::DATA_MIGRATIONS`] this store has not had, each with its mark in one
/// transaction (under the schema's lock on PostgreSQL, so replicas starting together make each
/// once; a tool opening the same SQLite file at that moment makes it again, which changes
/// nothing).
async fn migrate_data(conn: &mut sqlx::AnyConnection) -> Result<(), StoreError> {
    use sqlx::Connection;
    for (name, statement) in schema::DATA_MIGRATIONS {
        let applied: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM data_migrations WHERE name = $1")
                .bind(*name)
                .fetch_one(&mut *conn)
                .await?;
        if applied > 0 {
            continue;
        }
        let mut tx = conn.begin().await?;
        let changed = sqlx::query(statement).execute(&mut *tx).await?.rows_affected();
        sqlx::query("INSERT INTO data_migrations (name, applied_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
            .bind(*name)
            .bind(Timestamp::now().unix_seconds())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        if changed > 0 {
            tracing::info!(
                migration = *name,
                rows = changed,
                "the store's rows brought up to date"
            );
        }
    }
    Ok(())
}

/// Adds [`schema::ADDED_COLUMNS`] a store made by an earlier release lacks.
async fn add_columns(conn: &mut sqlx::AnyConnection, postgres: bool) -> Result<(), StoreError> {
    for (table, column, kind) in schema::ADDED_COLUMNS {
        let exists = if postgres {
            "SELECT COUNT(*) FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = $1 AND column_name = $2"
        } else {
            "SELECT COUNT(*) FROM pragma_table_info($1) WHERE name = $2"
        };
        let found: i64 =
            sqlx::query_scalar(exists).bind(*table).bind(*column).fetch_one(&mut *conn).await?;
        if found == 0 {
            if let Err(e) = sqlx::query(&format!("ALTER TABLE {table} ADD COLUMN {column} {kind}"))
                .execute(&mut *conn)
                .await
            {
                // Another process opening the same SQLite file at the same moment (a CLI tool
                // beside the gateway) may have added it first.
                let found: i64 = sqlx::query_scalar(exists)
                    .bind(*table)
                    .bind(*column)
                    .fetch_one(&mut *conn)
                    .await?;
                if found == 0 {
                    return Err(e.into());
                }
            }
        }
    }
    Ok(())
}

impl Store {
    /// Executes a write durably: when this returns, the change is committed. Writes nobody
    /// waits on (escalations, linkage timers, the record of a confirmed delivery) yield to the
    /// others, a few dozen per commit ([`Write::lane`], [`group_commit`]).
    pub async fn write(&self, write: Write) -> Result<WriteResult, StoreError> {
        let lane = write.lane();
        let (reply, answer) = oneshot::channel();
        self.writer
            .send(lane, group_commit::Job { write, reply })
            .await
            .map_err(|()| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Changes after every commit of this process's writer (see [`group_commit::Signals`]).
    pub fn commits(&self) -> tokio::sync::watch::Receiver<u64> {
        self.signals.committed.subscribe()
    }

    /// Resolves when a commit of this process may have queued a delivery since the last call
    /// (a wake-up is kept if nobody was waiting).
    pub async fn outbox_ready(&self) {
        self.signals.outbox_ready.notified().await
    }

    /// A transfer by id.
    pub async fn transfer(&self, transfer_id: &str) -> Result<Option<Transfer>, StoreError> {
        let row = sqlx::query("SELECT transfer_id, document FROM transfers WHERE transfer_id = $1")
            .bind(transfer_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| transfer_from_row(&r)).transpose()
    }

    /// The reference the origin of a transfer knows it by (its `sender_ref`).
    pub async fn sender_ref_of(&self, transfer_id: &str) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT sender_ref FROM transfers WHERE transfer_id = $1")
            .bind(transfer_id)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// The transfers that link to `transfer_id`, with how (`rel`): an assist's parent lists its
    /// assists, a rejected transfer the re-routes that followed it.
    pub async fn links_to(&self, transfer_id: &str) -> Result<Vec<(String, String)>, StoreError> {
        let sql =
            "SELECT rel, transfer_id FROM transfer_links WHERE linked_id = $1 ORDER BY transfer_id";
        self.pairs(sqlx::query(sql).bind(transfer_id)).await
    }

    /// Linkage timers due at `now` (Unix seconds): (transfer, kind), earliest first.
    pub async fn due_timers(
        &self,
        now: i64,
        limit: i64,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let sql = "SELECT transfer_id, kind FROM timers WHERE due <= $1 ORDER BY due, transfer_id LIMIT $2";
        self.pairs(sqlx::query(sql).bind(now).bind(limit)).await
    }

    /// The rows of a query of two text columns.
    async fn pairs<'q>(
        &self,
        query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// The rejected transfers `sender` sent of the case `case_id`, oldest first (asked with
    /// the other submissions of the moment: [`rejected_lookup`]).
    pub async fn rejected_of_case(
        &self,
        sender: &EndpointId,
        case_id: &str,
    ) -> Result<Vec<String>, StoreError> {
        self.rejected.ask(sender.to_string(), case_id.to_string()).await
    }

    /// A transfer by the reference an endpoint knows it by: the gateway's `transfer_id` (the
    /// destination) or the endpoint's own `sender_ref` (the origin).
    pub async fn transfer_by_reference(
        &self,
        endpoint: &EndpointId,
        reference: &str,
    ) -> Result<Option<Transfer>, StoreError> {
        let row = sqlx::query(
            "SELECT transfer_id, document FROM transfers WHERE (sender = $1 AND sender_ref = $2) \
             OR (transfer_id = $2 AND (sender = $1 OR destination = $1)) LIMIT 1",
        )
        .bind(endpoint.to_string())
        .bind(reference)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| transfer_from_row(&r)).transpose()
    }

    /// The native document a transfer was received as (text), if it came as one.
    pub async fn native_document(&self, transfer_id: &str) -> Result<Option<String>, StoreError> {
        let native: Option<Option<String>> =
            sqlx::query_scalar("SELECT native FROM transfers WHERE transfer_id = $1")
                .bind(transfer_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(native.flatten())
    }

    /// Transfers matching a filter, ordered by id (ULIDs sort by creation time).
    pub async fn transfers(&self, filter: &TransferFilter) -> Result<Vec<Transfer>, StoreError> {
        let mut sql = String::from("SELECT transfer_id, document FROM transfers WHERE 1 = 1");
        let mut n = 0;
        let mut next = || {
            n += 1;
            format!("${n}")
        };
        let mut binds: Vec<Bind> = Vec::new();
        if let Some(party) = &filter.party {
            let (a, b) = (next(), next());
            sql.push_str(&format!(" AND (sender = {a} OR destination = {b})"));
            binds.push(Bind::Text(party.clone()));
            binds.push(Bind::Text(party.clone()));
        }
        if let Some(state) = filter.state {
            sql.push_str(&format!(" AND state = {}", next()));
            binds.push(Bind::Text(state.as_str().to_string()));
        }
        if let Some(overdue) = filter.overdue {
            sql.push_str(&format!(" AND overdue = {}", next()));
            binds.push(Bind::Int(i64::from(overdue)));
        }
        if let Some(since) = filter.since {
            sql.push_str(&format!(" AND created_at >= {}", next()));
            binds.push(Bind::Int(since));
        }
        if let Some(until) = filter.until {
            sql.push_str(&format!(" AND created_at < {}", next()));
            binds.push(Bind::Int(until));
        }
        if let Some(after) = &filter.after {
            sql.push_str(&format!(" AND transfer_id > {}", next()));
            binds.push(Bind::Text(after.clone()));
        }
        if let Some(reference) = &filter.reference {
            let (a, b) = (next(), next());
            sql.push_str(&format!(
                " AND (sender_ref = {a} OR transfer_id IN \
                 (SELECT transfer_id FROM case_transfers WHERE case_id LIKE {b} ESCAPE '\\'))"
            ));
            let escaped = reference.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
            binds.push(Bind::Text(reference.clone()));
            binds.push(Bind::Text(format!("%:{escaped}")));
        }
        if let Some(pending) = filter.pending {
            // An open dispute and an unanswered extension request each hold a timer (the
            // default that decides them), cleared when they are decided.
            sql.push_str(&format!(
                " AND transfer_id IN (SELECT transfer_id FROM timers WHERE kind = {})",
                next()
            ));
            binds.push(Bind::Text(
                match pending {
                    Pending::Dispute => writes::TIMER_DISPUTE,
                    Pending::Extension => writes::TIMER_EXTENSION,
                }
                .to_string(),
            ));
        }
        if let Some(phone) = &filter.phone {
            // The document is the transfer's compact JSON; a normalised phone has no LIKE
            // wildcards in it. (A scan of the period's rows: fine for a desk's search, not indexed.)
            sql.push_str(&format!(" AND document LIKE {}", next()));
            binds.push(Bind::Text(format!("%\"phone\":\"{phone}\"%")));
        }
        sql.push_str(&format!(" ORDER BY transfer_id LIMIT {}", next()));
        // 501: the engine asks for one more than a page to know whether another follows.
        binds.push(Bind::Int(filter.limit.clamp(1, 501)));
        let mut query = sqlx::query(&sql);
        for bind in binds {
            query = match bind {
                Bind::Text(t) => query.bind(t),
                Bind::Int(i) => query.bind(i),
            };
        }
        query.fetch_all(&self.pool).await?.iter().map(transfer_from_row).collect()
    }

    /// Takes up to `limit` deliveries of each of the given destinations that are due at `now`,
    /// for `lease` (both in milliseconds since the epoch); see [`Store::lease_from`].
    pub async fn lease(
        &self,
        now: i64,
        lease: i64,
        limit: i64,
        destinations: &[String],
    ) -> Result<Vec<OutboxItem>, StoreError> {
        let wants: Vec<(String, i64)> = destinations.iter().map(|d| (d.clone(), limit)).collect();
        self.lease_from(now, lease, wants).await
    }

    /// Takes, for each `(destination, limit)`, up to `limit` of its deliveries that are due at
    /// `now`, for `lease` (milliseconds): pending, due, not held by another worker, and the
    /// first undone item of their transfer for that destination.
    pub async fn lease_from(
        &self,
        now: i64,
        lease: i64,
        wants: Vec<(String, i64)>,
    ) -> Result<Vec<OutboxItem>, StoreError> {
        if wants.iter().all(|(_, limit)| *limit <= 0) {
            return Ok(Vec::new());
        }
        if self.backend == Backend::Sqlite {
            return match self.write(Write::Lease { now, lease, wants }).await? {
                WriteResult::Leased(items) => Ok(items),
                _ => Ok(Vec::new()),
            };
        }
        let mut tx = self.pool.begin().await?;
        let timeout = format!("SET LOCAL statement_timeout = {}", LEASE_TIMEOUT.as_millis());
        sqlx::query(&timeout).execute(&mut *tx).await?;
        let result =
            writes::execute(&mut tx, self.backend, Write::Lease { now, lease, wants }).await?;
        tx.commit().await?;
        match result {
            WriteResult::Leased(items) => Ok(items),
            _ => Ok(Vec::new()),
        }
    }

    /// Up to `limit` of `destination`'s deliveries due at `now` (milliseconds), longest due
    /// first, leaving out the ids in `except`, read without leasing them: on SQLite, where one
    /// gateway owns the file, the deliverer holds its leases in memory instead of writing them
    /// (see [`crate::delivery`]), and gives the ones it holds as `except`.
    pub async fn due(
        &self,
        now: i64,
        destination: &str,
        limit: i64,
        except: &[i64],
    ) -> Result<Vec<OutboxItem>, StoreError> {
        let query = match except {
            [] => sqlx::query(writes::DUE).bind(destination).bind(now).bind(now).bind(limit),
            _ => sqlx::query(writes::DUE_EXCEPT)
                .bind(destination)
                .bind(now)
                .bind(now)
                .bind(serde_json::to_string(except).unwrap_or_else(|_| "[]".into()))
                .bind(limit),
        };
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter().map(outbox_from_row).collect()
    }

    /// Deliveries in the dead-letter state, oldest first.
    pub async fn dead_letters(&self, limit: i64) -> Result<Vec<OutboxItem>, StoreError> {
        self.dead_letters_after(0, limit).await
    }

    /// Dead letters with ids after `after`, oldest first: a page of them.
    pub async fn dead_letters_after(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<OutboxItem>, StoreError> {
        let rows = sqlx::query(&format!(
            "{OUTBOX_SELECT} WHERE status = 'dead' AND id > $1 ORDER BY id LIMIT $2"
        ))
        .bind(after)
        .bind(limit.clamp(1, 1000))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(outbox_from_row).collect()
    }

    /// Every outbox item of a transfer, in order.
    pub async fn deliveries_of(&self, transfer_id: &str) -> Result<Vec<OutboxItem>, StoreError> {
        let rows = sqlx::query(&format!("{OUTBOX_SELECT} WHERE transfer_id = $1 ORDER BY id"))
            .bind(transfer_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(outbox_from_row).collect()
    }

    /// Delivery health of every endpoint that has been delivered to.
    pub async fn endpoint_health(&self) -> Result<Vec<EndpointHealth>, StoreError> {
        let rows = sqlx::query("SELECT endpoint, last_success, failing_since, last_error FROM endpoint_health ORDER BY endpoint")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(EndpointHealth {
                    endpoint: r.try_get(0)?,
                    last_success: r.try_get(1)?,
                    failing_since: r.try_get(2)?,
                    last_error: r.try_get(3)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// Open transfers whose deadline has passed at `now` and that have not been escalated for
    /// it yet, up to `limit` of each deadline, oldest first (see [`overdue_sql`]).
    pub async fn overdue_candidates(
        &self,
        now: i64,
        limit: i64,
    ) -> Result<Vec<Transfer>, StoreError> {
        let mut ids: Vec<String> = Vec::new();
        for deadline in ["receive_by", "resolve_by"] {
            let sql = overdue_sql(self.backend, deadline);
            let page: Vec<String> =
                sqlx::query_scalar(&sql).bind(now).bind(limit).fetch_all(&self.pool).await?;
            ids.extend(page.into_iter().filter(|id| !ids.contains(id)).collect::<Vec<_>>());
        }
        let mut transfers = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(sql::ROWS_PER_STATEMENT) {
            let query = writes::transfers_by_id_sql(self.backend, chunk.len(), false);
            let rows = chunk
                .iter()
                .fold(sqlx::query(&query), |q, id| q.bind(id))
                .fetch_all(&self.pool)
                .await?;
            for row in &rows {
                transfers.push(transfer_from_row(row)?);
            }
        }
        Ok(transfers)
    }

    /// Counts by state, for metrics and reports.
    pub async fn count_by_state(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows =
            sqlx::query("SELECT state, COUNT(*) FROM transfers GROUP BY state ORDER BY state")
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// The backlog (pending and queued) and the dead letters by destination, with the oldest
    /// of each: read along the `outbox_due` index (status first), so it costs what is waiting,
    /// not the history of everything delivered.
    pub async fn outbox_backlog(&self) -> Result<Vec<OutboxGauge>, StoreError> {
        let rows = sqlx::query(
            "SELECT destination, s, COUNT(*), MIN(created_at) FROM \
             (SELECT destination, CASE status WHEN 'queued' THEN 'pending' ELSE status END AS s, created_at \
              FROM outbox WHERE status IN ('pending', 'queued', 'dead')) waiting \
             GROUP BY destination, s ORDER BY destination, s",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let status: String = r.try_get(1)?;
                let status = status
                    .parse()
                    .map_err(|problem| StoreError::Corrupt { id: "outbox".into(), problem })?;
                Ok(OutboxGauge {
                    destination: r.try_get(0)?,
                    status,
                    count: r.try_get(2)?,
                    oldest: r.try_get(3)?,
                })
            })
            .collect()
    }

    /// The change feed after `cursor`, in order, at most `limit`: of the transfers `party` is
    /// origin or destination of, or of all transfers when `party` is `None`.
    ///
    /// On PostgreSQL several replicas write concurrently, and sequence numbers are taken before
    /// commit, so reading "everything after seq N" could miss an event that commits late. The
    /// feed is therefore ordered by (transaction id, seq) and only events of transactions older
    /// than the oldest one still running are handed out: every later event has a larger
    /// transaction id than any handed out, so nothing is missed and nothing repeats. SQLite has
    /// one writer, and its order is the sequence's (transaction id 0).
    pub async fn events_after(
        &self,
        party: Option<&str>,
        cursor: FeedCursor,
        limit: i64,
    ) -> Result<Vec<FeedEvent>, StoreError> {
        let rows = sqlx::query(&self.events_after_sql())
            .bind(party.unwrap_or(""))
            .bind(party.unwrap_or(""))
            .bind(cursor.tx)
            .bind(cursor.tx)
            .bind(cursor.seq)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                event_from_parts(
                    (r.try_get(0)?, r.try_get(1)?),
                    r.try_get(2)?,
                    r.try_get(3)?,
                    r.try_get(4)?,
                )
            })
            .collect()
    }

    /// The change feed's page: (party, party, tx, tx, seq, limit).
    fn events_after_sql(&self) -> String {
        format!(
            "SELECT seq, tx, kind, body, at FROM events WHERE ($1 = '' OR origin = $1 OR destination = $2) \
             AND {} {} ORDER BY tx, seq LIMIT $6",
            self.after_cursor(3, 4, 5),
            self.horizon()
        )
    }

    /// The cursor of the newest event in the feed: with `settled`, the newest a reader may
    /// start after without missing a transaction still running (PostgreSQL); without, the
    /// newest written at all, beyond which no cursor can be genuine.
    pub async fn feed_end(&self, settled: bool) -> Result<FeedCursor, StoreError> {
        let horizon = if settled { self.horizon() } else { "" };
        let row = sqlx::query(&format!(
            "SELECT tx, seq FROM events WHERE 1 = 1 {horizon} ORDER BY tx DESC, seq DESC LIMIT 1"
        ))
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some(row) => FeedCursor { tx: row.try_get(0)?, seq: row.try_get(1)? },
            None => FeedCursor::default(),
        })
    }

    /// Every transfer `party` is a party to, created in `[since, until)` (all when absent), as
    /// reconciliation compares them: id, sender, sender's reference, state.
    pub async fn transfers_of(
        &self,
        party: &str,
        since: Option<i64>,
        until: Option<i64>,
    ) -> Result<Vec<TransferSummary>, StoreError> {
        let rows = sqlx::query(
            "SELECT transfer_id, sender, sender_ref, state FROM transfers WHERE (sender = $1 OR destination = $2) \
             AND created_at >= $3 AND created_at < $4 ORDER BY transfer_id",
        )
        .bind(party)
        .bind(party)
        .bind(since.unwrap_or(i64::MIN))
        .bind(until.unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(summary_from_row).collect()
    }

    /// One transfer of `party` by the reference it knows it by, as reconciliation compares it.
    pub async fn transfer_of(
        &self,
        party: &str,
        reference: &str,
    ) -> Result<Option<TransferSummary>, StoreError> {
        let row = sqlx::query(
            "SELECT transfer_id, sender, sender_ref, state FROM transfers WHERE (sender = $1 AND sender_ref = $2) \
             OR (transfer_id = $3 AND (sender = $4 OR destination = $5)) LIMIT 1",
        )
        .bind(party)
        .bind(reference)
        .bind(reference)
        .bind(party)
        .bind(party)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(summary_from_row).transpose()
    }

    /// Transfers by sending platform and state, with how many are overdue: `(platform, state,
    /// overdue, count)`.
    pub async fn tally(&self) -> Result<Vec<(String, String, bool, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT CASE WHEN sender LIKE '%/110' THEN '110' ELSE '12345' END, state, overdue, COUNT(*) FROM transfers \
             GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((r.try_get(0)?, r.try_get(1)?, r.try_get::<i64, _>(2)? != 0, r.try_get(3)?))
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// Deliveries that needed more than one attempt, and how many were given up.
    pub async fn retried_deliveries(&self) -> Result<(i64, i64), StoreError> {
        let row = sqlx::query(
            "SELECT COALESCE(SUM(CASE WHEN attempts > 1 THEN 1 ELSE 0 END), 0), COALESCE(SUM(CASE WHEN status = 'dead' THEN 1 ELSE 0 END), 0) FROM outbox",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok((row.try_get(0)?, row.try_get(1)?))
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").fetch_one(&self.pool).await.is_ok()
    }
}

/// A transfer in brief, as reconciliation compares it.
#[derive(Clone, Debug)]
pub struct TransferSummary {
    pub transfer_id: String,
    pub sender: String,
    pub sender_ref: String,
    pub state: State,
}

impl TransferSummary {
    /// The reference `endpoint` knows it by: its own `sender_ref` as origin, else the id.
    pub fn reference_for(&self, endpoint: &str) -> &str {
        if self.sender == endpoint {
            &self.sender_ref
        } else {
            &self.transfer_id
        }
    }
}

/// A position in the change feed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct FeedCursor {
    pub tx: i64,
    pub seq: i64,
}

impl FeedCursor {
    /// The opaque text form handed to clients.
    pub fn encode(&self) -> String {
        format!("{}.{}", self.tx, self.seq)
    }

    /// Reads a cursor a client gave back; empty is the beginning.
    pub fn decode(text: &str) -> Result<FeedCursor, String> {
        if text.is_empty() {
            return Ok(FeedCursor::default());
        }
        let bad = || format!("cursor: expected a cursor from a previous event, got {text:?}");
        let (tx, seq) = text.split_once('.').ok_or_else(bad)?;
        Ok(FeedCursor { tx: tx.parse().map_err(|_| bad())?, seq: seq.parse().map_err(|_| bad())? })
    }
}

/// One event of the change feed: what happened, and the transfer after it.
#[derive(Clone, Debug)]
pub struct FeedEvent {
    pub cursor: FeedCursor,
    pub kind: String,
    pub transfer: Transfer,
    /// When it was written (Unix seconds).
    pub at: i64,
}

fn summary_from_row(row: &AnyRow) -> Result<TransferSummary, StoreError> {
    let transfer_id: String = row.try_get(0)?;
    let state: String = row.try_get(3)?;
    let state = state
        .parse()
        .map_err(|e: String| StoreError::Corrupt { id: transfer_id.clone(), problem: e })?;
    Ok(TransferSummary { transfer_id, sender: row.try_get(1)?, sender_ref: row.try_get(2)?, state })
}

/// An event from its columns.
pub(crate) fn event_from_parts(
    (seq, tx): (i64, i64),
    kind: String,
    body: String,
    at: i64,
) -> Result<FeedEvent, StoreError> {
    let transfer = serde_json::from_str(&body)
        .map_err(|e| StoreError::Corrupt { id: format!("event {seq}"), problem: e.to_string() })?;
    Ok(FeedEvent { cursor: FeedCursor { tx, seq }, kind, transfer, at })
}

enum Bind {
    Text(String),
    Int(i64),
}

/// The time now in milliseconds since the epoch: the unit of the outbox's `next_attempt_at`
/// and `leased_until`, so that sub-second backoff is kept (every other stored time is seconds).
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

pub(crate) fn transfer_from_row(row: &AnyRow) -> Result<Transfer, StoreError> {
    let id: String = row.try_get(0)?;
    let document: String = row.try_get(1)?;
    serde_json::from_str(&document).map_err(|e| StoreError::Corrupt { id, problem: e.to_string() })
}

/// The current time in Unix seconds.
pub fn now() -> i64 {
    Timestamp::now().unix_seconds()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The steps of SQLite's plan for `sql` on a fresh store, with these parameters (the texts
    /// first, then the numbers).
    async fn plan(sql: &str, texts: &[&str], numbers: &[i64]) -> Vec<String> {
        plan_then(sql, texts, numbers, &[]).await
    }

    /// [`plan`], with more texts after the numbers.
    async fn plan_then(sql: &str, texts: &[&str], numbers: &[i64], then: &[&str]) -> Vec<String> {
        let dir = std::env::temp_dir().join(format!("liandong-plan-{}", ulid::Ulid::new()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = Store::sqlite(&dir.join("plan.db")).await.unwrap();
        let explain = format!("EXPLAIN QUERY PLAN {sql}");
        let mut query = sqlx::query(&explain);
        for text in texts {
            query = query.bind(*text);
        }
        for number in numbers {
            query = query.bind(*number);
        }
        for text in then {
            query = query.bind(*text);
        }
        let steps = query
            .fetch_all(&store.pool)
            .await
            .unwrap()
            .iter()
            .map(|row| row.try_get::<String, _>(3).unwrap())
            .collect();
        std::fs::remove_dir_all(&dir).unwrap();
        steps
    }

    /// The deliverer's read of due work walks the `outbox_due` index in order and stops at its
    /// limit: no sort of the whole backlog (which made the drain slow down as the backlog grew).
    #[tokio::test]
    async fn due_deliveries_are_read_along_the_index_without_a_sort() {
        let plan = plan(writes::DUE, &["330200/12345"], &[0, 0, 10]).await;
        assert!(plan.iter().any(|step| step.contains("USING INDEX outbox_due")), "{plan:?}");
        assert!(
            !plan.iter().any(|step| step.contains("TEMP B-TREE") || step.starts_with("SCAN")),
            "{plan:?}"
        );
        // leaving out what the deliverer holds: the same walk, the ids looked up in a list
        let plan =
            plan_then(writes::DUE_EXCEPT, &["330200/12345"], &[0, 0], &["[1, 2]", "10"]).await;
        assert!(plan.iter().any(|step| step.contains("USING INDEX outbox_due")), "{plan:?}");
        assert!(
            !plan.iter().any(|step| step.contains("TEMP B-TREE") || step.starts_with("SCAN o")),
            "{plan:?}"
        );
    }

    /// A PostgreSQL schema of its own for one test (`LIANDONG_TEST_POSTGRES`, or the local
    /// server): a connection whose search path is the schema, a store on it with `pool_size`
    /// connections, and the schema's name, for the test to drop.
    pub(crate) async fn scratch_postgres(
        prefix: &str,
        pool_size: u32,
    ) -> (sqlx::PgConnection, Store, String) {
        use sqlx::Connection;
        let url = std::env::var("LIANDONG_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string());
        let schema = format!("{prefix}_{}", std::process::id());
        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
        for statement in
            [format!("DROP SCHEMA IF EXISTS {schema} CASCADE"), format!("CREATE SCHEMA {schema}")]
        {
            sqlx::query(&statement).execute(&mut conn).await.unwrap();
        }
        let separator = if url.contains('?') { '&' } else { '?' };
        let in_schema = format!("{url}{separator}options=-c%20search_path%3D{schema}");
        let store = Store::postgres(&in_schema, pool_size).await.unwrap();
        sqlx::query(&format!("SET search_path = {schema}")).execute(&mut conn).await.unwrap();
        (conn, store, schema)
    }

    /// PostgreSQL's plan of the lease read, where its statistics were taken when nothing was
    /// waiting (the hour's stall: docs/PERFORMANCE.md), is still a walk of `outbox_due` that
    /// stops at its limit: no anti-join, no subplan, no sort. With the earlier read (a
    /// `NOT EXISTS` for an earlier pending item of the transfer) the same data planned a walk of
    /// every pending item for each candidate.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_postgres_lease_read_walks_the_index_whatever_the_statistics() {
        let (mut conn, store, schema) = scratch_postgres("plan_lease", 2).await;
        let fill = |status: &str, from: i64, to: i64| {
            format!(
                "INSERT INTO outbox (destination, transfer_id, kind, payload, status, next_attempt_at, created_at) \
                 SELECT '330200/12345', 'T' || g, 'transfer', '{{}}', '{status}', g, g FROM generate_series({from}, {to}) g"
            )
        };
        // statistics that saw only delivered items, then a backlog
        sqlx::query(&fill("delivered", 1, 50_000)).execute(&mut conn).await.unwrap();
        sqlx::query("ANALYZE outbox").execute(&mut conn).await.unwrap();
        sqlx::query(&fill("pending", 50_001, 60_000)).execute(&mut conn).await.unwrap();
        let explain = format!(
            "EXPLAIN {} FOR UPDATE SKIP LOCKED",
            writes::DUE
                .replace("$1", "'330200/12345'")
                .replace("$2", "99999999")
                .replace("$3", "99999999")
                .replace("$4", "64")
        );
        let plan: Vec<String> = sqlx::query_scalar(&explain).fetch_all(&mut conn).await.unwrap();
        sqlx::query(&format!("DROP SCHEMA {schema} CASCADE")).execute(&mut conn).await.unwrap();
        drop(store);
        let plan = plan.join("\n");
        assert!(plan.contains("Index Scan using outbox_due"), "{plan}");
        for step in ["Anti Join", "SubPlan", "Sort", "Seq Scan"] {
            assert!(!plan.contains(step), "{step}: {plan}");
        }
    }

    /// Recording outcomes reads the items by id, however many: never a walk of the backlog
    /// (with the status in the condition and a long id list, SQLite chose `outbox_due`).
    #[tokio::test]
    async fn outcomes_read_their_items_by_id() {
        let ids: Vec<i64> = (1..=200).collect();
        let steps = plan(&writes::outbox_items_sql(Backend::Sqlite, ids.len()), &[], &ids).await;
        assert!(steps.iter().all(|step| step.contains("USING INTEGER PRIMARY KEY")), "{steps:?}");
    }

    /// The feeds read from the cursor on, along their index (a page must not cost more as the
    /// log grows): the transfers' change feed, and a dataset's log as the live copies read it.
    #[tokio::test]
    async fn the_feeds_read_from_the_cursor_along_their_index() {
        let dir = std::env::temp_dir().join(format!("liandong-plan-{}", ulid::Ulid::new()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = Store::sqlite(&dir.join("plan.db")).await.unwrap();
        let (events, log) = (store.events_after_sql(), store.log_page_sql());
        std::fs::remove_dir_all(&dir).unwrap();
        let plan = plan(&events, &["", ""], &[0, 0, 5, 10]).await;
        assert!(
            plan.iter().any(|step| step.contains("USING INDEX events_feed (tx=? AND seq>?)")),
            "{plan:?}"
        );
        let plan =
            plan_then(&log, &["directory"], &[0, 0, 5, 10], &["\n", "\t", "\t", "\t", "\t", "\t"])
                .await;
        assert!(
            plan.iter()
                .any(|step| step
                    .contains("USING INDEX record_log_feed (dataset=? AND tx=? AND seq>?)")),
            "{plan:?}"
        );
        // (`SCAN page` walks the page the subquery made, not the log.)
        assert!(
            !plan
                .iter()
                .any(|step| step.starts_with("SCAN record_log") || step.contains("TEMP B-TREE")),
            "{plan:?}"
        );
    }

    /// The shared read of cases' rejected transfers walks the asked cases and finds each one's
    /// transfers along `case_transfers_case`: never a scan of the cases or the transfers.
    #[tokio::test]
    async fn rejected_transfers_of_several_cases_are_read_along_the_index() {
        let asked = ["330200/110", "110:330200:A", "330200/110", "110:330200:B"];
        let plan = plan(&rejected_lookup::rejected_sql(Backend::Sqlite, 2), &asked, &[]).await;
        assert!(
            plan.iter().any(|step| step.contains("USING INDEX case_transfers_case")),
            "{plan:?}"
        );
        assert!(
            !plan.iter().any(|step| step.starts_with("SCAN c") || step.starts_with("SCAN t")),
            "{plan:?}"
        );
    }

    /// Submissions asking at the same moment, more than one statement holds, each get their
    /// own case's rejected transfers, in id order, and nothing of another sender's or case's.
    #[tokio::test]
    async fn each_submission_gets_its_own_cases_rejected_transfers() {
        let dir = std::env::temp_dir().join(format!("liandong-rejected-{}", ulid::Ulid::new()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = Store::sqlite(&dir.join("rejected.db")).await.unwrap();
        use std::collections::HashMap;
        // case n of a sender: n % 4 transfers, every other one rejected (stored newest first)
        let senders = ["330200/110", "360700/110"];
        let mut expected: HashMap<(String, String), Vec<String>> = HashMap::new();
        for sender in senders {
            for n in 0..100 {
                let case = format!("110:{}:{n}", &sender[..6]);
                for k in (0..n % 4).rev() {
                    let id = format!("{sender}-{n}-{k}");
                    let state = if k % 2 == 0 { "rejected" } else { "received" };
                    sqlx::query(
                        "INSERT INTO transfers (transfer_id, sender, sender_ref, destination, state, \
                         requested_at, receive_by, document, created_at, updated_at) \
                         VALUES ($1, $2, $3, '330200/12345', $4, 0, 0, '{}', 0, 0)",
                    )
                    .bind(&id)
                    .bind(sender)
                    .bind(&id)
                    .bind(state)
                    .execute(&store.pool)
                    .await
                    .unwrap();
                    sqlx::query("INSERT INTO case_transfers (case_id, transfer_id, sender) VALUES ($1, $2, $3)")
                        .bind(&case)
                        .bind(&id)
                        .bind(sender)
                        .execute(&store.pool)
                        .await
                        .unwrap();
                    if state == "rejected" {
                        expected.entry((sender.to_string(), case.clone())).or_default().push(id);
                    }
                }
            }
        }
        for ids in expected.values_mut() {
            ids.sort();
        }
        // every case of both senders asked at once, each twice, and under the other sender
        let mut asks = tokio::task::JoinSet::new();
        for round in 0..2 {
            for (i, sender) in senders.iter().enumerate() {
                for n in 0..100 {
                    let store = store.clone();
                    let asker: EndpointId = senders[(i + round) % 2].parse().unwrap();
                    let case = format!("110:{}:{n}", &sender[..6]);
                    asks.spawn(async move {
                        let found = store.rejected_of_case(&asker, &case).await.unwrap();
                        (asker.to_string(), case, found)
                    });
                }
            }
        }
        let mut answered = 0;
        while let Some(answer) = asks.join_next().await {
            let (asker, case, found) = answer.unwrap();
            let want = expected.get(&(asker.clone(), case.clone())).cloned().unwrap_or_default();
            assert_eq!(found, want, "{asker} {case}");
            answered += 1;
        }
        assert_eq!(answered, 400);
        assert!(expected.values().any(|ids| ids.len() == 2));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The sweeper's queries each read their partial index in deadline order and stop at the
    /// limit: no scan of the transfers, no sort of every overdue one.
    #[tokio::test]
    async fn the_sweeper_reads_what_is_due_along_its_indexes() {
        for (deadline, index) in
            [("receive_by", "transfers_receive_due"), ("resolve_by", "transfers_resolve_due")]
        {
            let plan = plan(&overdue_sql(Backend::Sqlite, deadline), &[], &[0, 10]).await;
            assert!(plan.iter().any(|step| step.contains(index)), "{plan:?}");
            assert!(
                !plan
                    .iter()
                    .any(|step| step.starts_with("SCAN transfers") || step.contains("TEMP B-TREE")),
                "{plan:?}"
            );
        }
    }
}
