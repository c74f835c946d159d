//! The read every submission makes before it is routed: the sender's own rejected transfers of
//! the same case, which a re-route links to (`canonical.md`, `links`).
//!
//! One statement each made it the one statement per submission besides the group commit, and
//! on SQLite every statement is a hand-off to a connection's thread and back: flat out, about
//! 7 % of the gateway's CPU (docs/PERFORMANCE.md, "Fewer statements per transfer"). So the
//! submissions that ask at the same moment share one statement: one runs at a time, and the
//! asks that come while it runs go together in the next (at most [`MOST_ASKED`]). Alone, a
//! submission waits no longer than it did.

use std::collections::HashMap;

use sqlx::{AnyPool, Row};
use tokio::sync::{mpsc, oneshot};

use super::sql::values;
use super::{Backend, StoreError};

/// The most cases one statement asks about (two parameters each).
pub const MOST_ASKED: usize = 128;

/// One submission's question: `sender`'s rejected transfers of `case_id`.
struct Ask {
    sender: String,
    case_id: String,
    answer: oneshot::Sender<Result<Vec<String>, String>>,
}

/// Where submissions ask; a clone per [`super::Store`] clone, one task behind them all.
#[derive(Clone)]
pub(super) struct RejectedLookup {
    asks: mpsc::UnboundedSender<Ask>,
}

impl RejectedLookup {
    /// Starts the task that answers; it ends when the last store clone is dropped.
    pub(super) fn start(pool: AnyPool, backend: Backend) -> RejectedLookup {
        let (asks, mut waiting) = mpsc::unbounded_channel::<Ask>();
        tokio::spawn(async move {
            while let Some(first) = waiting.recv().await {
                // The submissions already running get to ask first: under load they come
                // microseconds apart, and this one statement answers them too.
                tokio::task::yield_now().await;
                let mut batch = vec![first];
                while batch.len() < MOST_ASKED {
                    match waiting.try_recv() {
                        Ok(ask) => batch.push(ask),
                        Err(_) => break,
                    }
                }
                answer(&pool, backend, batch).await;
            }
        });
        RejectedLookup { asks }
    }

    /// The rejected transfers `sender` sent of the case `case_id`, oldest first.
    pub(super) async fn ask(
        &self,
        sender: String,
        case_id: String,
    ) -> Result<Vec<String>, StoreError> {
        let (answer, answered) = oneshot::channel();
        self.asks.send(Ask { sender, case_id, answer }).map_err(|_| StoreError::Closed)?;
        answered.await.map_err(|_| StoreError::Closed)?.map_err(StoreError::Read)
    }
}

/// The statement for `cases` distinct (sender, case) pairs: each one's rejected transfers,
/// found along `case_transfers_case`, in id order.
pub(super) fn rejected_sql(backend: Backend, cases: usize) -> String {
    format!(
        "WITH asked (sender, case_id) AS (VALUES {}) \
         SELECT c.sender, c.case_id, c.transfer_id FROM asked \
         JOIN case_transfers c ON c.sender = asked.sender AND c.case_id = asked.case_id \
         JOIN transfers t ON t.transfer_id = c.transfer_id \
         WHERE t.state = 'rejected' ORDER BY c.transfer_id",
        values(backend, cases, 2, None)
    )
}

/// Asks one statement for a batch and answers each asker (a failure answers them all).
async fn answer(pool: &AnyPool, backend: Backend, batch: Vec<Ask>) {
    let mut askers: HashMap<(String, String), Vec<oneshot::Sender<_>>> = HashMap::new();
    for ask in batch {
        askers.entry((ask.sender, ask.case_id)).or_default().push(ask.answer);
    }
    let cases: Vec<&(String, String)> = askers.keys().collect();
    let sql = rejected_sql(backend, cases.len());
    let mut query = sqlx::query(&sql);
    for (sender, case_id) in &cases {
        query = query.bind(sender.as_str()).bind(case_id.as_str());
    }
    let found: Result<HashMap<(String, String), Vec<String>>, sqlx::Error> =
        query.fetch_all(pool).await.and_then(|rows| {
            let mut found: HashMap<(String, String), Vec<String>> = HashMap::new();
            for row in rows {
                let key = (row.try_get(0)?, row.try_get(1)?);
                found.entry(key).or_default().push(row.try_get(2)?);
            }
            Ok(found)
        });
    for (key, answers) in askers {
        let result = match &found {
            Ok(found) => Ok(found.get(&key).cloned().unwrap_or_default()),
            Err(e) => Err(e.to_string()),
        };
        for answer in answers {
            let _ = answer.send(result.clone());
        }
    }
}
