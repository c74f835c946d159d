//! Knowledge-base search (知识库检索): full text over the `knowledge` dataset's Chinese titles
//! and bodies, for the desks on both sides (`GET /v1/knowledge`, gRPC `SyncService.Search`).
//!
//! Chinese has no spaces, so words are not tokens: the index holds every pair of adjacent CJK
//! characters (bigrams) and every run of letters and digits, lowercased. A query's tokens are
//! looked up and intersected (every token must occur), then each candidate is checked to
//! contain every query term as written, so a bigram match that is not the phrase is dropped.
//! The records stay in a [`LiveDataset`] (the same log-following copy as routing uses); the
//! index holds only token → slot lists and is updated key by key as the log moves, on every
//! replica. Measured in `benches/knowledge.rs` (docs/PERFORMANCE.md); SQLite FTS5's trigram
//! tokenizer was the alternative, and it cannot find the two-character words (挪车, 停水) most
//! queries are.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use serde_json::Value;

use super::live::LiveDataset;
use super::SyncError;
use crate::model::{category, Record, Timestamp};
use crate::store::{Store, StoreError};

/// The knowledge dataset's name.
pub const KNOWLEDGE: &str = "knowledge";

/// At most this many results per answer; 20 when not asked.
pub const MAX_RESULTS: usize = 100;
const DEFAULT_RESULTS: usize = 20;

/// A search.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KnowledgeQuery {
    /// The words to find; every whitespace-separated term must occur in the title or body.
    pub q: String,
    /// Only answers for this canonical category (in their `categories`).
    pub category: Option<String>,
    /// Answers past their `valid_until` too (left out by default).
    pub include_expired: bool,
    /// How many results (1 to [`MAX_RESULTS`]; 0 means 20).
    pub limit: usize,
}

impl KnowledgeQuery {
    /// Checks the query, naming the field at fault.
    pub fn check(&self) -> Result<(), SyncError> {
        let q = self.q.trim();
        if q.is_empty() || q.chars().count() > 200 {
            return Err(SyncError::invalid("q", format!("expected 1 to 200 characters of words to find, got {:?}", self.q)));
        }
        if let Some(code) = &self.category {
            if !category::is_known(code) {
                return Err(SyncError::invalid(
                    "category",
                    format!("expected a canonical category code (NP01…, PM01…), got {code:?}"),
                ));
            }
        }
        if self.limit > MAX_RESULTS {
            return Err(SyncError::invalid("limit", format!("expected at most {MAX_RESULTS}, got {}", self.limit)));
        }
        Ok(())
    }
}

/// What a search found: the best `limit` records, and how many matched in all.
#[derive(Clone, Debug, Default)]
pub struct KnowledgeAnswer {
    pub records: Vec<Record>,
    pub total: usize,
}

/// The knowledge records in memory and their index.
#[derive(Debug)]
pub struct KnowledgeIndex {
    pub live: Arc<LiveDataset>,
    index: RwLock<Index>,
}

#[derive(Debug, Default)]
struct Index {
    /// Slot → key; `None` once the key was re-indexed or deleted.
    slots: Vec<Option<String>>,
    slot_of: HashMap<String, u32>,
    /// Token → slots holding it, ascending.
    postings: HashMap<Box<str>, Vec<u32>>,
    dead: usize,
}

impl Default for KnowledgeIndex {
    fn default() -> KnowledgeIndex {
        KnowledgeIndex { live: Arc::new(LiveDataset::new(KNOWLEDGE)), index: RwLock::default() }
    }
}

impl KnowledgeIndex {
    /// Catches up with the dataset's log and re-indexes the keys that changed.
    pub async fn refresh(&self, store: &Store) -> Result<(), StoreError> {
        let keys = self.live.refresh_keys(store).await?;
        if keys.is_empty() {
            return Ok(());
        }
        self.live
            .read(|records, _| {
                let mut index = self.index.write().unwrap_or_else(std::sync::PoisonError::into_inner);
                for key in keys {
                    match records.get(&key) {
                        Some(record) => index.insert(&key, &searchable(record)),
                        None => index.remove(&key),
                    }
                }
                // Slots of changed keys pile up; start over once they are half the index.
                if index.dead > 1024 && index.dead * 2 > index.slots.len() {
                    let mut fresh = Index::default();
                    for (key, record) in records {
                        fresh.insert(key, &searchable(record));
                    }
                    *index = fresh;
                }
            })
            .await;
        Ok(())
    }

    /// How many records are indexed.
    pub async fn records(&self) -> usize {
        self.live.records().await
    }

    /// Finds the records with every term of `query.q`, best first: more terms in the title,
    /// then more in the body, then the most recently updated.
    pub async fn search(&self, query: &KnowledgeQuery, now: Timestamp) -> KnowledgeAnswer {
        let terms: Vec<String> = query.q.split_whitespace().map(str::to_lowercase).collect();
        let mut tokens: Vec<String> = Vec::new();
        for term in &terms {
            tokens.extend(tokenize(term));
        }
        tokens.sort();
        tokens.dedup();
        let candidates = self.index.read().unwrap_or_else(std::sync::PoisonError::into_inner).candidates(&tokens);
        let limit = if query.limit == 0 { DEFAULT_RESULTS } else { query.limit.min(MAX_RESULTS) };
        self.live
            .read(|records, _| {
                let mut scored: Vec<(u32, &Record)> = Vec::new();
                let consider = |record: &Record| score(record, query, &terms, now);
                match &candidates {
                    Some(keys) => {
                        scored.extend(keys.iter().filter_map(|key| records.get(key)).filter_map(|r| consider(r).map(|s| (s, r))))
                    }
                    None => scored.extend(records.values().filter_map(|r| consider(r).map(|s| (s, r)))),
                }
                let total = scored.len();
                scored.sort_by(|(a, ra), (b, rb)| {
                    b.cmp(a).then_with(|| rb.updated_at.cmp(&ra.updated_at)).then_with(|| ra.key.cmp(&rb.key))
                });
                KnowledgeAnswer { records: scored.into_iter().take(limit).map(|(_, r)| r.clone()).collect(), total }
            })
            .await
    }
}

/// A record's score for the query's terms, or `None` when it does not answer the query (a
/// term missing, expired, another category).
fn score(record: &Record, query: &KnowledgeQuery, terms: &[String], now: Timestamp) -> Option<u32> {
    let body = &record.body;
    if !query.include_expired && expired(body, now) {
        return None;
    }
    if let Some(code) = &query.category {
        let listed = body.get("categories").and_then(Value::as_array);
        if !listed.is_some_and(|codes| codes.iter().any(|c| c.as_str() == Some(code))) {
            return None;
        }
    }
    let title = body.get("title").and_then(Value::as_str).unwrap_or_default();
    let text = body.get("body").and_then(Value::as_str).unwrap_or_default();
    let mut score = 0;
    for term in terms {
        let (in_title, in_body) = (contains(title, term), contains(text, term));
        if !in_title && !in_body {
            return None;
        }
        score += 2 * u32::from(in_title) + u32::from(in_body);
    }
    Some(score)
}

impl Index {
    fn remove(&mut self, key: &str) {
        if let Some(slot) = self.slot_of.remove(key) {
            self.slots[slot as usize] = None;
            self.dead += 1;
        }
    }

    fn insert(&mut self, key: &str, text: &str) {
        self.remove(key);
        let slot = self.slots.len() as u32;
        self.slots.push(Some(key.to_string()));
        self.slot_of.insert(key.to_string(), slot);
        let distinct: HashSet<String> = tokenize(&text.to_lowercase()).collect();
        for token in distinct {
            self.postings.entry(token.into_boxed_str()).or_default().push(slot);
        }
    }

    /// The live keys holding every token, or `None` when the tokens cannot be looked up (a
    /// lone CJK character is not a token of a longer run): then every record is a candidate.
    fn candidates(&self, tokens: &[String]) -> Option<Vec<String>> {
        if tokens.is_empty() || tokens.iter().any(|t| is_lone_cjk(t)) {
            return None;
        }
        let mut lists: Vec<&[u32]> = Vec::with_capacity(tokens.len());
        for token in tokens {
            match self.postings.get(token.as_str()) {
                Some(list) => lists.push(list),
                None => return Some(Vec::new()),
            }
        }
        lists.sort_by_key(|l| l.len());
        let (shortest, rest) = lists.split_first()?;
        Some(
            shortest
                .iter()
                .filter(|slot| rest.iter().all(|list| list.binary_search(slot).is_ok()))
                .filter_map(|slot| self.slots[*slot as usize].clone())
                .collect(),
        )
    }
}

/// The text a record is searched by: its title and body.
fn searchable(record: &Record) -> String {
    let field = |name: &str| record.body.get(name).and_then(Value::as_str).unwrap_or_default();
    format!("{}\n{}", field("title"), field("body"))
}

/// Whether an answer's `valid_until` has passed.
fn expired(body: &Value, now: Timestamp) -> bool {
    body.get("valid_until")
        .and_then(Value::as_str)
        .and_then(|t| Timestamp::parse_rfc3339(t, true).ok())
        .is_some_and(|until| until < now)
}

/// Whether `text` contains `term` (already lowercased), ignoring case.
fn contains(text: &str, term: &str) -> bool {
    text.contains(term) || (text.chars().any(char::is_uppercase) && text.to_lowercase().contains(term))
}

fn is_cjk(c: char) -> bool {
    matches!(c, '\u{3400}'..='\u{4dbf}' | '\u{4e00}'..='\u{9fff}' | '\u{f900}'..='\u{faff}' | '\u{20000}'..='\u{2ffff}')
}

fn is_lone_cjk(token: &str) -> bool {
    let mut chars = token.chars();
    matches!((chars.next(), chars.next()), (Some(c), None) if is_cjk(c))
}

/// The tokens of (lowercased) text: each pair of adjacent CJK characters, a CJK character
/// standing alone, and each run of other letters and digits.
fn tokenize(text: &str) -> impl Iterator<Item = String> + '_ {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if is_cjk(c) {
            let start = i;
            while i < chars.len() && is_cjk(chars[i]) {
                i += 1;
            }
            if i - start == 1 {
                tokens.push(c.to_string());
            }
            for pair in chars[start..i].windows(2) {
                tokens.push(pair.iter().collect());
            }
        } else if c.is_alphanumeric() {
            let start = i;
            while i < chars.len() && chars[i].is_alphanumeric() && !is_cjk(chars[i]) {
                i += 1;
            }
            tokens.push(chars[start..i].iter().collect());
        } else {
            i += 1;
        }
    }
    tokens.into_iter()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chinese_is_cut_into_bigrams_and_words_stay_whole() {
        let tokens: Vec<String> = tokenize("停水通知 a12345 热线、挪").collect();
        assert_eq!(tokens, ["停水", "水通", "通知", "a12345", "热线", "挪"]);
    }

    #[test]
    fn candidates_need_every_token_and_skip_replaced_slots() {
        let mut index = Index::default();
        index.insert("a", "小区停水怎么办");
        index.insert("b", "停电通知");
        index.insert("a", "燃气报修");
        let find = |q: &str| {
            let tokens: Vec<String> = tokenize(q).collect();
            index.candidates(&tokens)
        };
        assert_eq!(find("停水"), Some(vec![]), "a no longer says it");
        assert_eq!(find("燃气"), Some(vec!["a".to_string()]));
        assert_eq!(find("停电 通知"), Some(vec!["b".to_string()]));
        assert_eq!(find("停"), None, "a lone character is looked for in every record");
    }
}
