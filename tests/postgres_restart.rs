//! PostgreSQL restarts (fast shutdown) three times while clients submit: answers in between
//! are refusals the clients retry; nothing answered "submitted" is lost or doubled. It takes
//! the server alone (`common::stores::take_postgres_alone`), so that no other PostgreSQL test
//! runs while the server is down.

use crate::common;
use common::crash::{postgres_schema, run, Disruption};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarts_lose_and_double_nothing() {
    common::stores::take_postgres_alone();
    run(Some(postgres_schema("restart").await), Disruption::RestartPostgres(3)).await;
}
