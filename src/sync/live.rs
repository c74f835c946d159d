//! A shared dataset held in memory and kept up to date from its change log: what the gateway
//! consults on a submission's path (the routing `directory`, the `categories` code tables),
//! so that no submission waits for the store.
//!
//! A [`LiveDataset`] is loaded before the server says it is ready, follows the log every
//! [`REFRESH`] in the background (another replica's or an import's writes are seen within a
//! second), and catches up at once when this replica has written to it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::model::Record;
use crate::store::{FeedCursor, Store, StoreError};

/// How often the server catches its live datasets up with other replicas' and imports' writes.
pub const REFRESH: Duration = Duration::from_secs(1);

/// How many log entries one catch-up step reads (and applies under one write lock).
const PAGE: i64 = 5000;

/// The live records of one dataset, in memory.
#[derive(Debug)]
pub struct LiveDataset {
    dataset: &'static str,
    cache: tokio::sync::RwLock<Cache>,
    /// Set by a write on this replica: catch up before the next lookup.
    stale: AtomicBool,
    /// One catch-up at a time.
    refreshing: tokio::sync::Mutex<()>,
    /// Grows with every catch-up that changed something, so that what is derived from the
    /// records (the code tables) knows when to be rebuilt.
    generation: AtomicU64,
}

#[derive(Debug, Default)]
struct Cache {
    /// Where to read the log from next.
    settled: FeedCursor,
    records: HashMap<String, Record>,
    /// The last live version of each deleted key (a retired transfer item keeps its name).
    retired: HashMap<String, Record>,
    refreshed: Option<Instant>,
}

impl LiveDataset {
    pub fn new(dataset: &'static str) -> LiveDataset {
        LiveDataset {
            dataset,
            cache: tokio::sync::RwLock::new(Cache::default()),
            stale: AtomicBool::new(true),
            refreshing: tokio::sync::Mutex::new(()),
            generation: AtomicU64::new(0),
        }
    }

    /// The dataset's name.
    pub fn dataset(&self) -> &'static str {
        self.dataset
    }

    /// Says the dataset was written to on this replica: the next lookup catches up first.
    pub fn invalidate(&self) {
        self.stale.store(true, Ordering::Release);
    }

    /// The live records of these keys. Reads memory only, except: before the first load, and
    /// right after this replica wrote to the dataset (a small catch-up, so its own writes take
    /// effect at once). Everything else is caught up by [`LiveDataset::refresh`], which the
    /// server runs before it is ready and then every second, off the submission path.
    pub async fn lookup(&self, store: &Store, keys: &[String]) -> Result<Vec<Record>, StoreError> {
        self.catch_up_if_stale(store).await?;
        let cache = self.cache.read().await;
        Ok(keys.iter().filter_map(|k| cache.records.get(k).cloned()).collect())
    }

    /// Catches up when never loaded or written to by this replica since the last catch-up.
    pub async fn catch_up_if_stale(&self, store: &Store) -> Result<(), StoreError> {
        let loaded = self.cache.read().await.refreshed.is_some();
        if !loaded || self.stale.load(Ordering::Acquire) {
            self.refresh(store).await?;
        }
        Ok(())
    }

    /// Catches up with the dataset's log: other replicas', imports' and this replica's writes.
    /// The log is read without holding the cache, and applied a page at a time, so lookups
    /// wait at most for one page's worth of map updates, never for the store.
    pub async fn refresh(&self, store: &Store) -> Result<(), StoreError> {
        self.refresh_keys(store).await.map(drop)
    }

    /// [`LiveDataset::refresh`], answering the keys whose record changed (for what is derived
    /// from them key by key: the knowledge index).
    pub async fn refresh_keys(&self, store: &Store) -> Result<Vec<String>, StoreError> {
        let _one = self.refreshing.lock().await;
        let mut changed_keys = Vec::new();
        self.stale.store(false, Ordering::Release);
        let mut from = self.cache.read().await.settled;
        loop {
            let (changes, settled) = store.record_changes_now(self.dataset, from, PAGE).await?;
            let full = changes.len() as i64 >= PAGE;
            if let Some((last, _)) = changes.last() {
                from = *last;
            }
            let mut records = Vec::with_capacity(changes.len());
            for (_, doc) in changes {
                records.push(doc.record().map_err(|e| StoreError::Corrupt { id: self.dataset.into(), problem: e.to_string() })?);
            }
            let changed = !records.is_empty();
            let mut cache = self.cache.write().await;
            cache.settled = settled;
            for record in records {
                changed_keys.push(record.key.clone());
                let newer = cache.records.get(&record.key).is_none_or(|held| record.version >= held.version)
                    && cache.retired.get(&record.key).is_none_or(|held| record.version > held.version);
                if newer && record.deleted {
                    if let Some(last_live) = cache.records.remove(&record.key) {
                        cache.retired.insert(record.key.clone(), last_live);
                    }
                } else if newer {
                    cache.retired.remove(&record.key);
                    cache.records.insert(record.key.clone(), record);
                }
            }
            if changed {
                self.generation.fetch_add(1, Ordering::AcqRel);
            }
            if !full {
                cache.refreshed = Some(Instant::now());
                return Ok(changed_keys);
            }
        }
    }

    /// How many live records the dataset holds.
    pub async fn records(&self) -> usize {
        self.cache.read().await.records.len()
    }

    /// Grows whenever a catch-up changed the records.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Calls `read` with the live records and the retired ones (each deleted key's last live
    /// version), under the cache's read lock: no catch-up lands in between.
    pub async fn read<R>(&self, read: impl FnOnce(&HashMap<String, Record>, &HashMap<String, Record>) -> R) -> R {
        let cache = self.cache.read().await;
        read(&cache.records, &cache.retired)
    }
}

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
