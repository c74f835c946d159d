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
//! every connection plan its statements again, for the table as it now is. And each `VACUUM`
//! of the tables goes at autovacuum's pace, not at a statement's full speed ([`Pace`]).

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

    /// How fast its `VACUUM` may go ([`Pace`]).
    pub fn pace(self) -> Pace {
        match self {
            Part::Queue => Pace::FullSpeed,
            Part::Tables => Pace::Autovacuum,
        }
    }
}

/// How fast an upkeep's statement works: PostgreSQL's cost-based delay (`vacuum_cost_delay`),
/// which a `VACUUM` run as a statement leaves off and autovacuum turns on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pace {
    /// No pauses: the queue's dead rows slow every lease read until they are gone, and its
    /// vacuum is short while nothing waits for long.
    FullSpeed,
    /// Autovacuum's own pauses (`autovacuum_vacuum_cost_delay` and `_cost_limit`, 2 ms per 200
    /// units of work at their defaults). Unpaused, one `VACUUM` of the transfers at 3.4 million
    /// took the disk and one of the two cores from the desks' submissions for up to 108 s
    /// (docs/PERFORMANCE.md, "The upkeep at autovacuum's pace"); autovacuum would have worked
    /// at this pace, and the gateway stands in for it.
    Autovacuum,
}

impl Pace {
    /// The statement that sets this pace on the upkeep's connection, for its session: each
    /// statement of an upkeep is preceded by its own, so a pooled connection never carries
    /// another's.
    fn statement(self) -> &'static str {
        match self {
            Pace::FullSpeed => "SELECT set_config('vacuum_cost_delay', '0', false)",
            // -1 is autovacuum's "as the statements' setting": the server's, not what an
            // earlier statement of this session set (`reset_val`)
            Pace::Autovacuum => {
                "SELECT set_config('vacuum_cost_delay', \
                     CASE current_setting('autovacuum_vacuum_cost_delay') WHEN '-1' \
                     THEN (SELECT reset_val FROM pg_settings WHERE name = 'vacuum_cost_delay') \
                     ELSE current_setting('autovacuum_vacuum_cost_delay') END, false), \
                 set_config('vacuum_cost_limit', \
                     CASE current_setting('autovacuum_vacuum_cost_limit') WHEN '-1' \
                     THEN (SELECT reset_val FROM pg_settings WHERE name = 'vacuum_cost_limit') \
                     ELSE current_setting('autovacuum_vacuum_cost_limit') END, false)"
            }
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
    /// The statements that do it, each with its pace: a `VACUUM` at `part`'s, an `ANALYZE` at
    /// full speed whatever the part. A `VACUUM` holds back no one's view of the rows, so a
    /// paced one costs the others only its pauses; an `ANALYZE` holds a snapshot while it runs,
    /// and every dead row of the queue made meanwhile stays in the lease read's way until it
    /// ends, so it is kept short (docs/PERFORMANCE.md, "The upkeep at autovacuum's pace").
    fn statements(self, table: &str, part: Part) -> Vec<(Pace, String)> {
        let mut statements = Vec::new();
        if self.vacuum {
            statements.push((part.pace(), format!("VACUUM {table}")));
        }
        if self.analyze {
            statements.push((Pace::FullSpeed, format!("ANALYZE {table}")));
        }
        statements
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
        let done = upkeep_tables(&mut conn, part).await;
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
async fn upkeep_tables(conn: &mut sqlx::AnyConnection, part: Part) -> Result<Upkept, StoreError> {
    let counted: String =
        sqlx::query_scalar("SELECT current_setting('track_counts')").fetch_one(&mut *conn).await?;
    let changes: Vec<(String, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT relname::text, n_live_tup, n_dead_tup, n_ins_since_vacuum, n_mod_since_analyze \
         FROM pg_stat_user_tables WHERE schemaname = current_schema()",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut done = Upkept::new();
    for table in part.tables() {
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
        let statements = due.statements(table, part);
        if statements.is_empty() {
            continue;
        }
        for (pace, statement) in statements {
            sqlx::query(pace.statement()).execute(&mut *conn).await?;
            sqlx::query(&statement).execute(&mut *conn).await?;
        }
        done.push((table, due));
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
    fn a_vacuum_goes_at_its_parts_pace_and_an_analyze_at_full_speed() {
        let due = |vacuum, analyze| Due { vacuum, analyze };
        let owned = |list: &[(Pace, &str)]| {
            list.iter().map(|(pace, s)| (*pace, s.to_string())).collect::<Vec<_>>()
        };
        assert_eq!(
            due(true, true).statements("transfers", Part::Tables),
            owned(&[
                (Pace::Autovacuum, "VACUUM transfers"),
                (Pace::FullSpeed, "ANALYZE transfers")
            ])
        );
        assert_eq!(
            due(true, false).statements("audit", Part::Tables),
            owned(&[(Pace::Autovacuum, "VACUUM audit")])
        );
        assert_eq!(
            due(false, true).statements("transfers", Part::Tables),
            owned(&[(Pace::FullSpeed, "ANALYZE transfers")])
        );
        assert_eq!(
            due(true, true).statements("outbox", Part::Queue),
            owned(&[(Pace::FullSpeed, "VACUUM outbox"), (Pace::FullSpeed, "ANALYZE outbox")])
        );
        assert!(due(false, false).statements("outbox", Part::Queue).is_empty());
    }

    /// Each pace is the session's setting it says, whatever the connection had before; and
    /// the tables' upkeep vacuums at autovacuum's. A pool of one connection, so that what the
    /// upkeep left on it is what is read after.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_tables_are_vacuumed_at_autovacuums_pace_whatever_the_session_set_before() {
        let (mut conn, store, schema) =
            crate::store::tests::scratch_postgres("upkeep_pace", 1).await;
        let setting = |name: &'static str| {
            let pool = store.pool.clone();
            async move {
                sqlx::query_scalar::<_, String>(&format!("SELECT current_setting('{name}')"))
                    .fetch_one(&pool)
                    .await
                    .unwrap()
            }
        };
        let paced =
            || async { (setting("vacuum_cost_delay").await, setting("vacuum_cost_limit").await) };
        // autovacuum's own, as the server has them (-1: the statements' setting)
        let autovacuums: (String, String) = sqlx::query_as(
            "SELECT CASE current_setting('autovacuum_vacuum_cost_delay') WHEN '-1' \
                    THEN current_setting('vacuum_cost_delay') \
                    ELSE current_setting('autovacuum_vacuum_cost_delay') END, \
                    CASE current_setting('autovacuum_vacuum_cost_limit') WHEN '-1' \
                    THEN current_setting('vacuum_cost_limit') \
                    ELSE current_setting('autovacuum_vacuum_cost_limit') END",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        assert_ne!(autovacuums.0, "0", "autovacuum pauses at the server's settings");
        // what the session set before is not the server's setting autovacuum falls back on
        sqlx::query("SET vacuum_cost_limit = 999").execute(&store.pool).await.unwrap();
        for pace in [Pace::Autovacuum, Pace::FullSpeed, Pace::Autovacuum, Pace::FullSpeed] {
            sqlx::query(pace.statement()).execute(&store.pool).await.unwrap();
            match pace {
                Pace::Autovacuum => assert_eq!(paced().await, autovacuums),
                Pace::FullSpeed => assert_eq!(setting("vacuum_cost_delay").await, "0"),
            }
        }
        // rows inserted and analyzed by hand: only a vacuum is due, and the upkeep leaves its
        // pace on the connection
        sqlx::query(
            "INSERT INTO case_transfers (case_id, transfer_id, sender) \
             SELECT 'C' || g, 'T' || g, '330200/110' FROM generate_series(1, 2000) g",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        // the server counts a connection's changes up to seconds after it sends them: they
        // are counted before the analyze, or they would count as changed since
        let waited = std::time::Instant::now();
        loop {
            let (inserted, modified): (i64, i64) = sqlx::query_as(
                "SELECT n_ins_since_vacuum, n_mod_since_analyze FROM pg_stat_user_tables \
                 WHERE schemaname = current_schema() AND relname = 'case_transfers'",
            )
            .fetch_one(&mut conn)
            .await
            .unwrap();
            if inserted >= 2000 && modified >= 2000 {
                break;
            }
            assert!(waited.elapsed() < Duration::from_secs(30), "the inserts never counted");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        sqlx::query("ANALYZE case_transfers").execute(&mut conn).await.unwrap();
        let done = store.upkeep(Part::Tables).await.unwrap().expect("the tables' upkeep ran");
        assert_eq!(done, vec![("case_transfers", Due { vacuum: true, analyze: false })]);
        assert_eq!(paced().await, autovacuums);
        drop(store);
        sqlx::query(&format!("DROP SCHEMA {schema} CASCADE")).execute(&mut conn).await.unwrap();
    }

    #[test]
    fn the_upkeep_comes_often_while_the_tables_are_young_then_every_minute() {
        let pauses: Vec<u64> = pauses().take(7).map(|p| p.as_secs()).collect();
        assert_eq!(pauses, vec![5, 10, 20, 40, 60, 60, 60]);
    }
}
