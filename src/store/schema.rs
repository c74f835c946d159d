//! The tables, for SQLite and PostgreSQL. Applied at start-up; each statement is idempotent.
//!
//! Times are Unix seconds (`BIGINT`), booleans `0`/`1`, documents canonical JSON text: the same
//! column types on both backends, so the same queries serve both.

/// The statements, with `{serial}` standing for an auto-incrementing key column type,
/// `{bytes}` for byte-wise ordering of text (SQLite's default; `COLLATE "C"` on PostgreSQL), so
/// that dataset keys sort the same everywhere, and `{without_rowid}` for a table clustered by
/// its primary key (SQLite's `WITHOUT ROWID`).
const STATEMENTS: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS transfers (
        transfer_id TEXT PRIMARY KEY,
        sender TEXT NOT NULL,
        sender_ref TEXT NOT NULL,
        destination TEXT NOT NULL,
        state TEXT NOT NULL,
        overdue BIGINT NOT NULL DEFAULT 0,
        requested_at BIGINT NOT NULL,
        receive_by BIGINT NOT NULL,
        resolve_by BIGINT,
        escalations TEXT NOT NULL DEFAULT '',
        document TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        UNIQUE (sender, sender_ref)
    )",
    "CREATE INDEX IF NOT EXISTS transfers_destination ON transfers (destination, created_at)",
    // Finding a transfer by the sender's reference, whoever sent it (a console's search).
    "CREATE INDEX IF NOT EXISTS transfers_sender_ref ON transfers (sender_ref)",
    "CREATE INDEX IF NOT EXISTS transfers_open ON transfers (state, receive_by)",
    // The transfers not yet received nor escalated for `receive_by`, by it: what the
    // sweeper reads (escalated ones leave the index, so a page never walks past them).
    "CREATE INDEX IF NOT EXISTS transfers_receive_due ON transfers (receive_by) \
     WHERE state IN ('submitted', 'delivered') AND escalations NOT LIKE '%receive_by%'",
    // The open transfers not yet escalated for `resolve_by`, by it: what the sweeper reads.
    "CREATE INDEX IF NOT EXISTS transfers_resolve_due ON transfers (resolve_by) \
     WHERE state NOT IN ('rejected', 'closed', 'cancelled', 'resolved') AND escalations NOT LIKE '%resolve_by%'",
    "CREATE TABLE IF NOT EXISTS outbox (
        id {serial},
        destination TEXT NOT NULL,
        transfer_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        payload TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending',
        attempts BIGINT NOT NULL DEFAULT 0,
        next_attempt_at BIGINT NOT NULL,
        leased_until BIGINT NOT NULL DEFAULT 0,
        last_error TEXT,
        created_at BIGINT NOT NULL,
        delivered_at BIGINT
    )",
    "CREATE INDEX IF NOT EXISTS outbox_due ON outbox (status, destination, next_attempt_at)",
    "CREATE INDEX IF NOT EXISTS outbox_transfer ON outbox (transfer_id, destination, status, id)",
    "CREATE TABLE IF NOT EXISTS events (
        seq {serial},
        transfer_id TEXT NOT NULL,
        origin TEXT NOT NULL,
        destination TEXT NOT NULL,
        kind TEXT NOT NULL,
        body TEXT NOT NULL,
        at BIGINT NOT NULL,
        tx BIGINT NOT NULL DEFAULT 0
    )",
    "CREATE INDEX IF NOT EXISTS events_feed ON events (tx, seq)",
    "CREATE INDEX IF NOT EXISTS events_transfer ON events (transfer_id, tx, seq)",
    "CREATE TABLE IF NOT EXISTS records (
        dataset TEXT NOT NULL,
        key TEXT {bytes} NOT NULL,
        owner TEXT NOT NULL,
        version BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        deleted BIGINT NOT NULL DEFAULT 0,
        body TEXT NOT NULL,
        PRIMARY KEY (dataset, key)
    )",
    "CREATE TABLE IF NOT EXISTS record_log (
        seq {serial},
        dataset TEXT NOT NULL,
        key TEXT {bytes} NOT NULL,
        version BIGINT NOT NULL,
        deleted BIGINT NOT NULL DEFAULT 0,
        doc TEXT NOT NULL,
        tx BIGINT NOT NULL DEFAULT 0
    )",
    "CREATE INDEX IF NOT EXISTS record_log_feed ON record_log (dataset, tx, seq)",
    "CREATE TABLE IF NOT EXISTS audit (
        seq {serial},
        replica TEXT NOT NULL,
        at BIGINT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        transfer_id TEXT,
        detail TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS audit_chain ON audit (replica, seq)",
    "CREATE INDEX IF NOT EXISTS audit_transfer ON audit (transfer_id, seq)",
    "CREATE INDEX IF NOT EXISTS record_log_key ON record_log (dataset, key, tx, seq)",
    // Which transfers carry a case: how a re-routed transfer finds the rejected one it follows.
    "CREATE TABLE IF NOT EXISTS case_transfers (
        case_id TEXT NOT NULL,
        transfer_id TEXT PRIMARY KEY,
        sender TEXT NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS case_transfers_case ON case_transfers (sender, case_id)",
    "CREATE TABLE IF NOT EXISTS endpoint_health (
        endpoint TEXT PRIMARY KEY,
        last_success BIGINT,
        failing_since BIGINT,
        last_error TEXT
    )",
    // The figures' facts, one row per transfer, clustered by when it was submitted (a period
    // is one range): see store::facts.
    "CREATE TABLE IF NOT EXISTS transfer_facts (
        submitted_at BIGINT NOT NULL,
        transfer_id TEXT NOT NULL UNIQUE,
        requested_at BIGINT NOT NULL,
        origin TEXT NOT NULL,
        destination TEXT NOT NULL,
        location TEXT NOT NULL,
        category TEXT NOT NULL,
        direction TEXT NOT NULL,
        receive_by BIGINT NOT NULL,
        resolve_by BIGINT,
        received_at BIGINT,
        resolved_at BIGINT,
        called_back BIGINT NOT NULL,
        satisfied BIGINT NOT NULL,
        rejected BIGINT NOT NULL,
        PRIMARY KEY (submitted_at, transfer_id)
    ){without_rowid}",
    // Every link between transfers (`canonical.md`, `links`), read from the linked side: the
    // assists to cancel with their parent, and a case page's links both ways.
    "CREATE TABLE IF NOT EXISTS transfer_links (
        linked_id TEXT NOT NULL,
        rel TEXT NOT NULL,
        transfer_id TEXT NOT NULL,
        PRIMARY KEY (linked_id, rel, transfer_id)
    ){without_rowid}",
    // When a linkage default fires (`linkage.md`): a dispute left open past `dispute_within`,
    // an assist's `needed_by`. The sweeper reads what is due.
    "CREATE TABLE IF NOT EXISTS timers (
        transfer_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        due BIGINT NOT NULL,
        PRIMARY KEY (transfer_id, kind)
    )",
    "CREATE INDEX IF NOT EXISTS timers_due ON timers (due)",
    // The changes to existing rows a release made once, when it first opened the store (see
    // `DATA_MIGRATIONS`), by name.
    "CREATE TABLE IF NOT EXISTS data_migrations (
        name TEXT PRIMARY KEY,
        applied_at BIGINT NOT NULL
    )",
    // Who holds each replica name (its audit chain), until when: see store::replicas.
    "CREATE TABLE IF NOT EXISTS replicas (
        name TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        lease_until BIGINT NOT NULL
    )",
];

/// Columns added after their table was first released: (table, column, type). A store made
/// by an earlier release gets them at start; a new store too (its tables are made without).
pub const ADDED_COLUMNS: &[(&str, &str, &str)] = &[
    // Who wrote each version of a shared record (`datasets history`): the endpoint, or the
    // import with its file's hash, or the gateway's seeding.
    ("record_log", "writer", "TEXT"),
    // The native document a transfer was received as (text, in the sender's format): the case
    // page's evidence of what the origin sent.
    ("transfers", "native", "TEXT"),
    // The figures' linkage facts (`linkage.md`, store::facts::LinkageFact): 0 for transfers
    // from before linkage, which had none.
    ("transfer_facts", "basis", "BIGINT NOT NULL DEFAULT 0"),
    ("transfer_facts", "reason", "BIGINT NOT NULL DEFAULT 0"),
    ("transfer_facts", "dispute", "BIGINT NOT NULL DEFAULT 0"),
    ("transfer_facts", "dispute_late", "BIGINT NOT NULL DEFAULT 0"),
    ("transfer_facts", "urges", "BIGINT NOT NULL DEFAULT 0"),
    ("transfer_facts", "ext_asked", "BIGINT NOT NULL DEFAULT 0"),
    ("transfer_facts", "ext_granted", "BIGINT NOT NULL DEFAULT 0"),
    ("transfer_facts", "ext_refused", "BIGINT NOT NULL DEFAULT 0"),
    ("transfer_facts", "assist", "BIGINT NOT NULL DEFAULT 0"),
];

/// Changes to existing rows, each made once, when a release first opens a store (a new store's
/// tables are empty, so there they change nothing): (name, statement).
pub const DATA_MIGRATIONS: &[(&str, &str)] = &[
    // Deliveries queued behind an earlier one of their transfer (docs/DECISIONS.md, "What waits
    // behind an earlier delivery is queued"): a store from before may hold several pending.
    ("outbox_queued", super::writes::QUEUE_BEHIND_EARLIER),
];

/// The statements for a backend.
pub fn statements(postgres: bool) -> Vec<String> {
    let serial =
        if postgres { "BIGSERIAL PRIMARY KEY" } else { "INTEGER PRIMARY KEY AUTOINCREMENT" };
    let bytes = if postgres { "COLLATE \"C\"" } else { "" };
    let without_rowid = if postgres { "" } else { " WITHOUT ROWID" };
    STATEMENTS
        .iter()
        .map(|s| {
            s.replace("{serial}", serial)
                .replace("{bytes}", bytes)
                .replace("{without_rowid}", without_rowid)
        })
        .collect()
}
