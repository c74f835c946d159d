//! PostgreSQL's upkeep of the gateway's tables when its autovacuum is off.
//!
//! PostgreSQL plans each query from statistics that autovacuum's `ANALYZE` keeps, and reclaims
//! the dead rows every update leaves behind with its `VACUUM`. Some installs turn autovacuum off;
//! then a table created empty is planned as empty for ever: a connection's cached plan, made
//! while the table was small, is kept until the table is analyzed. Found in the hour on two
//! replicas (docs/PERFORMANCE.md): at a million transfers the outbox's due read ran for minutes
//! (one for 27), the rejected-transfers lookup on each submission took seconds and each commit's
//! read of its audit chain's last hash scanned the chain, so deliveries stopped and submissions
//! timed out. So where autovacuum is off the gateway says so at start and looks after its own
//! tables every [`EVERY`] (more often in the first minute, while they are small and growing
//! fast: [`pauses`]), the queue (the outbox) apart from the others ([`Part`]), one replica at
//! a time.
//!
//! Each table is vacuumed or analyzed when autovacuum itself would have done it (its rule at
//! PostgreSQL's default settings: [`Changes::due`]), not every time: `ANALYZE` reads a sample of
//! 30,000 pages wherever they are on disk, and once the tables outgrew the server's memory
//! (about 3 million transfers, 30 GB, on a 24 GB machine) the upkeep of every table every
//! minute read 150–200 MB/s for 10 s of each minute and the desks' submissions waited seconds
//! (docs/PERFORMANCE.md, "The upkeep past the server's memory"). Each `ANALYZE` also makes
//! every connection plan its statements again, for the table as it now is.

use std::time::Duration;

use super::{Backend, Store, StoreError};

/// How often the gateway looks for tables due a vacuum or an analyze where autovacuum is off,
/// once started.
/// (A minute: at 1,000 transfers a second the tables grow by 60,000 rows between runs; five
/// minutes left the first five after a start with plans for empty tables.)
pub const EVERY: Duration = Duration::from_secs(60);

/// The first pause after the upkeep at start; it doubles up to [`EVERY`]. Tables created empty
/// grow fastest relative to their size in the first minute: with the first run again only a
/// minute later, the hour on two replicas ran its first minute at ~430 transfers/s on plans
/// made for empty tables (docs/PERFORMANCE.md).
pub const FIRST_PAUSE: Duration = Duration::from_secs(5);

/// The pauses between upkeeps: [`FIRST_PAUSE`], doubling, then [`EVERY`] for good.
pub fn pauses() -> impl Iterator<Item = Duration> {
    std::iter::successors(Some(FIRST_PAUSE), |pause| Some((*pause * 2).min(EVERY)))
}

/// The queue: the outbox, looked after on its own (under [`QUEUE_LOCK`]), so that its dead
/// rows never wait behind a large table's vacuum. In the hour on two replicas one `VACUUM` of
/// the transfers took 108 s at 3.4 million; the outbox, next in line, went unvacuumed
/// meanwhile, its lease reads slowed past their timeout, and the deliveries stalled
/// (docs/PERFORMANCE.md, "The hour at 7a71129").
pub const QUEUE: &[&str] = &["outbox"];

/// The other tables the gateway updates or grows all the time, the busiest first.
pub const TABLES: &[&str] = &[
    "transfers",
    "case_transfers",
    "timers",
    "events",
    "transfer_facts",
    "audit",
    "records",
    "record_log",
];

/// One upkeep at a time across replicas: the key of the session-level advisory lock it holds.
pub const LOCK: i64 = 727275;

/// One upkeep of the queue at a time across replicas, beside the other tables' ([`LOCK`]).
pub const QUEUE_LOCK: i64 = 727276;

/// What one upkeep looks after: the queue ([`QUEUE`]) or the other tables ([`TABLES`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Queue,
    Tables,
}

impl Part {
    pub fn tables(self) -> &'static [&'static str] {
        match self {
            Part::Queue => QUEUE,
            Part::Tables => TABLES,
        }
    }

    pub fn lock(self) -> i64 {
        match self {
            Part::Queue => QUEUE_LOCK,
            Part::Tables => LOCK,
        }
    }
}

/// A table's changes since it was last vacuumed and analyzed (`pg_stat_user_tables`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Its live rows, as the server counts them.
    pub live: i64,
    /// The dead rows its updates and deletes left since its last vacuum.
    pub dead: i64,
    /// The rows inserted since its last vacuum.
    pub inserted: i64,
    /// The rows inserted, updated or deleted since its last analyze.
    pub modified: i64,
    /// For the queue, the items waiting, counted up to just past [`QUEUE_WAITING`]; 0 for
    /// the other tables.
    pub waiting: i64,
}

/// What a table is due.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Due {
    pub vacuum: bool,
    pub analyze: bool,
}

impl Due {
    /// The statement that does it, if anything is due.
    fn statement(self, table: &str) -> Option<String> {
        match (self.vacuum, self.analyze) {
            (true, true) => Some(format!("VACUUM (ANALYZE) {table}")),
            (true, false) => Some(format!("VACUUM {table}")),
            (false, true) => Some(format!("ANALYZE {table}")),
            (false, false) => None,
        }
    }
}

/// The outbox, a queue: its dead rows are vacuumed at every upkeep that finds more than this
/// many, whatever the table's size. Each delivery leaves two (its lease, its outcome), each a
/// dead entry in the `outbox_due` index that every lease read walks past until a vacuum removes
/// it. Its vacuum reads each of its indexes in full: seconds once they hold millions of
/// delivered items (docs/PERFORMANCE.md, "The upkeep past the server's memory").
pub const QUEUE_DEAD_ROWS: i64 = 1000;

/// The outbox is analyzed at every upkeep that finds more than this many items waiting,
/// whatever autovacuum's rule says: autovacuum's rule would analyze it again only after
/// changes to a tenth of its rows (350,000 at 3.5 million transfers), so statistics taken
/// while almost nothing waited would last a whole backlog. Made for the lease read's check for
/// an earlier item of its transfer, which those statistics turned into a walk of every pending
/// item for every candidate (docs/PERFORMANCE.md, "The hour at 7a71129"); that check is gone
/// (deliveries behind another are `queued`), and the rule now keeps the other reads of the
/// outbox (the backlog gauge, the dead letters) planned for what waits. One `ANALYZE` a minute
/// while a backlog lasts.
pub const QUEUE_WAITING: i64 = 1000;

impl Changes {
    /// Autovacuum's rule at PostgreSQL's default settings: vacuum once the dead rows pass
    /// 50 + 20 % of the live ones (`autovacuum_vacuum_threshold`, `_scale_factor`) or the rows
    /// inserted since the last vacuum pass 1,000 + 20 % (`autovacuum_vacuum_insert_threshold`,
    /// `_scale_factor`: the visibility map that index-only scans use); analyze once the rows
    /// changed pass 50 + 10 % (`autovacuum_analyze_threshold`, `_scale_factor`). The outbox is
    /// vacuumed past [`QUEUE_DEAD_ROWS`] dead rows, and analyzed while more than
    /// [`QUEUE_WAITING`] items wait.
    pub fn due(&self, table: &str) -> Due {
        let live = self.live.max(0) as f64;
        let queue = QUEUE.contains(&table);
        let dead_limit = if queue { QUEUE_DEAD_ROWS as f64 } else { 50.0 + 0.2 * live };
        Due {
            vacuum: self.dead as f64 > dead_limit || self.inserted as f64 > 1000.0 + 0.2 * live,
            analyze: self.modified as f64 > 50.0 + 0.1 * live
                || (queue && self.waiting > QUEUE_WAITING),
        }
    }
}

/// What one upkeep did: each table it vacuumed or analyzed, with what.
pub type Upkept = Vec<(&'static str, Due)>;

impl Store {
    /// Whether the gateway must look after its tables itself: PostgreSQL with autovacuum (or
    /// the row counts it works from) off. SQLite needs none of it.
    pub async fn autovacuum_off(&self) -> Result<bool, StoreError> {
        if self.backend != Backend::Postgres {
            return Ok(false);
        }
        let (autovacuum, track_counts): (String, String) =
            sqlx::query_as("SELECT current_setting('autovacuum'), current_setting('track_counts')")
                .fetch_one(&self.pool)
                .await?;
        Ok(autovacuum != "on" || track_counts != "on")
    }

    /// Vacuums and analyzes each of `part`'s tables that is due ([`Changes::due`]; every one
    /// of them where the server keeps no row counts, `track_counts` off), unless another
    /// replica is at it: answers what it did, or `None` if it did not run (SQLite, or another
    /// replica's upkeep of that part under way). Neither blocks the gateway's reads and writes.
    pub async fn upkeep(&self, part: Part) -> Result<Option<Upkept>, StoreError> {
        if self.backend != Backend::Postgres {
            return Ok(None);
        }
        let mut conn = self.pool.acquire().await?;
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(part.lock())
            .fetch_one(&mut *conn)
            .await?;
        if !locked {
            return Ok(None);
        }
        let done = upkeep_tables(&mut conn, part.tables()).await;
        // Unlocked whatever happened; a failed VACUUM is the error to tell.
        let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(part.lock())
            .execute(&mut *conn)
            .await;
        let done = done?;
        unlocked?;
        Ok(Some(done))
    }
}

/// The upkeep's work on `tables`, on a connection holding their part's lock.
async fn upkeep_tables(
    conn: &mut sqlx::AnyConnection,
    tables: &'static [&'static str],
) -> Result<Upkept, StoreError> {
    let counted: String =
        sqlx::query_scalar("SELECT current_setting('track_counts')").fetch_one(&mut *conn).await?;
    let changes: Vec<(String, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT relname::text, n_live_tup, n_dead_tup, n_ins_since_vacuum, n_mod_since_analyze \
         FROM pg_stat_user_tables WHERE schemaname = current_schema()",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut done = Upkept::new();
    for table in tables {
        let due = if counted != "on" {
            Due { vacuum: true, analyze: true }
        } else {
            let waiting = if QUEUE.contains(table) { queue_waiting(conn).await? } else { 0 };
            changes
                .iter()
                .find(|(name, ..)| name == table)
                .map(|&(_, live, dead, inserted, modified)| {
                    Changes { live, dead, inserted, modified, waiting }.due(table)
                })
                .unwrap_or_default()
        };
        if let Some(statement) = due.statement(table) {
            sqlx::query(&statement).execute(&mut *conn).await?;
            done.push((table, due));
        }
    }
    Ok(done)
}

/// The outbox's waiting items, counted along `outbox_due` up to just past [`QUEUE_WAITING`].
async fn queue_waiting(conn: &mut sqlx::AnyConnection) -> Result<i64, StoreError> {
    let waiting = sqlx::query_scalar(
        "SELECT COUNT(*) FROM (SELECT 1 FROM outbox WHERE status = 'pending' LIMIT $1) AS waiting",
    )
    .bind(QUEUE_WAITING + 1)
    .fetch_one(&mut *conn)
    .await?;
    Ok(waiting)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_is_due_what_autovacuum_would_have_done_at_its_default_settings() {
        let at =
            |live, dead, inserted, modified| Changes { live, dead, inserted, modified, waiting: 0 };
        let due = |vacuum, analyze| Due { vacuum, analyze };
        // young tables: analyzed once 50 rows have changed, vacuumed once the rows inserted pass
        // 1,000 + 20 %
        assert_eq!(at(0, 0, 0, 0).due("transfers"), due(false, false));
        assert_eq!(at(60, 0, 60, 60).due("transfers"), due(false, true));
        assert_eq!(at(1200, 0, 1200, 1200).due("events"), due(false, true));
        assert_eq!(at(1500, 0, 1500, 1500).due("events"), due(true, true));
        // three million transfers: a minute's 60,000 new rows and 60,000 updates are nothing
        // due, until 10 % of the rows have changed (analyze) or 20 % died (vacuum)
        let big = 3_000_000;
        assert_eq!(at(big, 60_000, 60_000, 120_000).due("transfers"), due(false, false));
        assert_eq!(at(big, 60_000, 60_000, 300_051).due("transfers"), due(false, true));
        assert_eq!(at(big, 600_051, 0, 0).due("transfers"), due(true, false));
        assert_eq!(at(big, 0, 601_001, 0).due("audit"), due(true, false));
        // the outbox, a queue, is vacuumed past a thousand dead rows whatever its size
        assert_eq!(at(big, 1_001, 0, 0).due("outbox"), due(true, false));
        assert_eq!(at(big, 1_000, 0, 0).due("outbox"), due(false, false));
        assert_eq!(at(big, 1_001, 0, 0).due("transfers"), due(false, false));
        // and analyzed while more than a thousand wait, changed or not
        let waiting = |waiting| Changes { live: big, waiting, ..Changes::default() };
        assert_eq!(waiting(1_001).due("outbox"), due(false, true));
        assert_eq!(waiting(1_000).due("outbox"), due(false, false));
    }

    #[test]
    fn each_due_is_one_statement() {
        let due = |vacuum, analyze| Due { vacuum, analyze };
        assert_eq!(due(true, true).statement("outbox").as_deref(), Some("VACUUM (ANALYZE) outbox"));
        assert_eq!(due(true, false).statement("outbox").as_deref(), Some("VACUUM outbox"));
        assert_eq!(due(false, true).statement("outbox").as_deref(), Some("ANALYZE outbox"));
        assert_eq!(due(false, false).statement("outbox"), None);
    }

    #[test]
    fn the_upkeep_comes_often_while_the_tables_are_young_then_every_minute() {
        let pauses: Vec<u64> = pauses().take(7).map(|p| p.as_secs()).collect();
        assert_eq!(pauses, vec![5, 10, 20, 40, 60, 60, 60]);
    }
}
