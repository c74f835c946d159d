//! Nothing lost, nothing doubled: the real `liandong` binary is killed with SIGKILL again and
//! again while clients submit transfers and a test destination acknowledges deliveries. Every
//! transfer answered "submitted" must exist after the restarts and reach the destination; the
//! destination may see a transfer more than once only as a retry with the same `transfer_id`.
//! The destination is down for a while in the middle of each run.
//!
//! `LIANDONG_CRASH_TRANSFERS` (default 2000) and `LIANDONG_CRASH_KILLS` (default 5) set the
//! size; the long form is in docs/RELIABILITY.md. The PostgreSQL run uses
//! `LIANDONG_TEST_POSTGRES` (default the local server) in a schema of its own.

use crate::common;
use common::crash::{postgres_schema, run, Disruption};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_on_sqlite_loses_and_doubles_nothing() {
    run(None, Disruption::KillGateway(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_on_postgres_loses_and_doubles_nothing() {
    run(Some(postgres_schema("crash").await), Disruption::KillGateway(5)).await;
}
