//! Following the shared datasets live: the routing directory, the transfer-item lists and the
//! knowledge index kept caught up with the store beside the submissions (the in-memory copies
//! themselves are [`crate::store::live`]).

use std::sync::Arc;

pub use crate::store::live::{LiveDataset, View, REFRESH};
use crate::store::Store;

/// Keeps the routing directory, the transfer-item lists and the knowledge index caught up with the store every
/// [`REFRESH`] until `stop` is set, rebuilding the endpoints' code tables when the lists
/// changed: what the server runs beside the submissions, so that none of them waits for the
/// store.
pub async fn follow(
    directory: Arc<LiveDataset>,
    categories: Arc<LiveDataset>,
    knowledge: Arc<super::knowledge::KnowledgeIndex>,
    registry: Arc<crate::formats::Registry>,
    store: Store,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut applied = categories.generation();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(REFRESH) => {
                for live in [&directory, &categories] {
                    if let Err(e) = live.refresh(&store).await {
                        tracing::warn!(dataset = live.dataset(), error = %e, "catching a live dataset up failed; retrying");
                    }
                }
                if let Err(e) = knowledge.refresh(&store).await {
                    tracing::warn!(dataset = "knowledge", error = %e, "catching a live dataset up failed; retrying");
                }
                if categories.generation() != applied {
                    applied = categories.generation();
                    super::categories::apply(&registry, &categories).await;
                }
            }
            _ = stop.changed() => return,
        }
    }
}
