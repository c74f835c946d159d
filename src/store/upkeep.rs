//! PostgreSQL's upkeep of the gateway's tables when its autovacuum is off.
//!
//! PostgreSQL plans each query from statistics that autovacuum's `ANALYZE` keeps, and reclaims
//! the dead rows every update leaves behind with its `VACUUM`. Some installs turn autovacuum off;
//! then a table created empty is planned as empty for ever: a connection's cached plan, made
//! while the table was small, is kept until the table is analyzed. Found in the hour on two
//! replicas (docs/PERFORMANCE.md): at a million transfers the outbox's due read ran for minutes
//! (one for 27), the rejected-transfers lookup on each submission took seconds and each commit's
//! read of its audit chain's last hash scanned the chain, so deliveries stopped and submissions
//! timed out. So where autovacuum is off the gateway says so at start and runs `VACUUM
//! (ANALYZE)` of its own tables every [`EVERY`] (more often in the first minute, while they are
//! small and growing fast: [`pauses`]), one replica at a time: each run also makes every
//! connection plan its statements again, for the tables as they now are.

use std::time::Duration;

use super::{Backend, Store, StoreError};

/// How often the gateway vacuums and analyzes its tables where autovacuum is off, once started.
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

/// The tables the gateway updates or grows all the time, the busiest first.
pub const TABLES: &[&str] = &[
    "outbox",
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

    /// `VACUUM (ANALYZE)` of each of [`TABLES`] on PostgreSQL, unless another replica is at it:
    /// answers whether it ran. Neither blocks the gateway's reads and writes.
    pub async fn upkeep(&self) -> Result<bool, StoreError> {
        if self.backend != Backend::Postgres {
            return Ok(false);
        }
        let mut conn = self.pool.acquire().await?;
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(LOCK)
            .fetch_one(&mut *conn)
            .await?;
        if !locked {
            return Ok(false);
        }
        let mut vacuumed = Ok(());
        for table in TABLES {
            vacuumed = sqlx::query(&format!("VACUUM (ANALYZE) {table}"))
                .execute(&mut *conn)
                .await
                .map(drop);
            if vacuumed.is_err() {
                break;
            }
        }
        // Unlocked whatever happened; a failed VACUUM is the error to tell.
        let unlocked =
            sqlx::query("SELECT pg_advisory_unlock($1)").bind(LOCK).execute(&mut *conn).await;
        vacuumed?;
        unlocked?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upkeep_comes_often_while_the_tables_are_young_then_every_minute() {
        let pauses: Vec<u64> = pauses().take(7).map(|p| p.as_secs()).collect();
        assert_eq!(pauses, vec![5, 10, 20, 40, 60, 60, 60]);
    }
}
