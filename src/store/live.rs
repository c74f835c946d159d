//! A shared dataset held in memory and kept up to date from its change log: what the gateway
//! consults on a submission's path (the routing `directory`, the `categories` code tables),
//! so that no submission waits for the store.
//!
//! A [`LiveDataset`] is loaded before the server says it is ready, follows the log every
//! [`REFRESH`] in the background (another replica's or an import's writes are seen within a
//! second), and catches up at once when this replica has written to it. A background catch-up
//! of more than a page (another process's import) is paced: after each page it waits as long
//! as the page took, so that the submissions beside it keep half the processors.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::{FeedCursor, Store, StoreError};
use crate::model::{Record, RecordDoc};

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
    /// Each live key's last write, kept as the stored JSON (a parsed record costs several
    /// times its text: a million directory records would take gigabytes).
    records: HashMap<String, Held>,
    /// The last live version of each deleted key (a retired transfer item keeps its name).
    retired: HashMap<String, Held>,
    refreshed: Option<Instant>,
}

/// One key's write as held in memory.
#[derive(Debug)]
struct Held {
    version: u64,
    doc: RecordDoc,
}

/// The records as they are in memory, read under the cache's lock ([`LiveDataset::read`]).
pub struct View<'a> {
    records: &'a HashMap<String, Held>,
    retired: &'a HashMap<String, Held>,
}

impl View<'_> {
    /// Whether `key` has a live record.
    pub fn contains(&self, key: &str) -> bool {
        self.records.contains_key(key)
    }

    /// The live record of `key`.
    pub fn get(&self, key: &str) -> Option<Record> {
        self.records.get(key).and_then(|held| held.doc.record().ok())
    }

    /// Every live key.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.records.keys().map(String::as_str)
    }

    /// The live records whose key starts with `prefix`, and the retired ones (each deleted
    /// key's last live version), each in key order.
    pub fn with_prefix(&self, prefix: &str) -> (Vec<Record>, Vec<Record>) {
        let pick = |map: &HashMap<String, Held>| {
            let mut found: Vec<Record> = map
                .iter()
                .filter(|(k, _)| k.starts_with(prefix))
                .filter_map(|(_, held)| held.doc.record().ok())
                .collect();
            found.sort_by(|a, b| a.key.cmp(&b.key));
            found
        };
        (pick(self.records), pick(self.retired))
    }
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
        let mut found = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(held) = cache.records.get(key) {
                found.push(held.doc.record().map_err(|e| StoreError::Corrupt {
                    id: key.clone(),
                    problem: e.to_string(),
                })?);
            }
        }
        Ok(found)
    }

    /// Catches up when never loaded or written to by this replica since the last catch-up.
    async fn catch_up_if_stale(&self, store: &Store) -> Result<(), StoreError> {
        if self.needs_catch_up().await {
            self.refresh(store).await?;
        }
        Ok(())
    }

    /// Whether it was never loaded, or was written to by this replica since the last catch-up.
    pub async fn needs_catch_up(&self) -> bool {
        self.cache.read().await.refreshed.is_none() || self.stale.load(Ordering::Acquire)
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
        // Paced only in the background: not the first load (before ready), nor a catch-up
        // after this replica's own write, which a lookup may be waiting on.
        let own_write = self.stale.swap(false, Ordering::AcqRel);
        let (mut from, paced) = {
            let cache = self.cache.read().await;
            (cache.settled, cache.refreshed.is_some() && !own_write)
        };
        loop {
            let page_began = Instant::now();
            let (changes, settled) = store.record_changes_now(self.dataset, from, PAGE).await?;
            let full = changes.len() as i64 >= PAGE;
            if let Some(last) = changes.last() {
                from = last.cursor;
            }
            let changed = !changes.is_empty();
            let mut cache = self.cache.write().await;
            cache.settled = settled;
            for entry in changes {
                let held_version =
                    |map: &HashMap<String, Held>| map.get(&entry.key).map(|h| h.version);
                let newer = held_version(&cache.records).is_none_or(|v| entry.version >= v)
                    && held_version(&cache.retired).is_none_or(|v| entry.version > v);
                if !newer {
                    continue;
                }
                changed_keys.push(entry.key.clone());
                if entry.deleted {
                    if let Some(last_live) = cache.records.remove(&entry.key) {
                        cache.retired.insert(entry.key, last_live);
                    }
                } else {
                    cache.retired.remove(&entry.key);
                    cache
                        .records
                        .insert(entry.key, Held { version: entry.version, doc: entry.doc });
                }
            }
            if changed {
                self.generation.fetch_add(1, Ordering::AcqRel);
            }
            if !full {
                cache.refreshed = Some(Instant::now());
                return Ok(changed_keys);
            }
            // Let lookups in between pages; once loaded, a long catch-up (another process's
            // import) leaves the processors to the submissions half the time.
            drop(cache);
            if paced {
                tokio::time::sleep(page_began.elapsed()).await;
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

    /// Calls `read` with a view of the records under the cache's read lock: no catch-up lands
    /// in between.
    pub async fn read<R>(&self, read: impl FnOnce(&View<'_>) -> R) -> R {
        let cache = self.cache.read().await;
        read(&View { records: &cache.records, retired: &cache.retired })
    }
}
