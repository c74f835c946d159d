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
            return Err(SyncError::invalid(
                "q",
                format!("expected 1 to 200 characters of words to find, got {:?}", self.q),
            ));
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
            return Err(SyncError::invalid(
                "limit",
                format!("expected at most {MAX_RESULTS}, got {}", self.limit),
            ));
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

/// Token → slots, ascending.
type Postings = HashMap<Box<str>, Vec<u32>>;

#[derive(Debug, Default)]
struct Index {
    /// Slot → what ranking and filtering need, without reading the record; `None` once the
    /// key was re-indexed or deleted.
    slots: Vec<Option<Slot>>,
    slot_of: HashMap<String, u32>,
    /// The tokens of titles, and of bodies, apart: a two-character word's hits and where they
    /// are come from these lists alone.
    title: Postings,
    body: Postings,
    /// Each CJK character → the tokens holding it: a one-character query is the union of
    /// their lists.
    by_char: HashMap<char, Vec<Box<str>>>,
    dead: usize,
}

#[derive(Debug)]
struct Slot {
    key: String,
    /// The title and body, lowercased: a word longer than two characters is checked against
    /// them, without reading the record.
    title: Box<str>,
    body: Box<str>,
    updated_at: i64,
    valid_until: Option<i64>,
    /// Bit i: the answer lists `category::TAXONOMY[i]`.
    categories: u32,
}

impl Default for KnowledgeIndex {
    fn default() -> KnowledgeIndex {
        KnowledgeIndex { live: Arc::new(LiveDataset::new(KNOWLEDGE)), index: RwLock::default() }
    }
}

/// One term's hits: (slot, score) by slot.
type Hits = Vec<(u32, u32)>;

impl KnowledgeIndex {
    /// Catches up with the dataset's log and re-indexes the keys that changed.
    pub async fn refresh(&self, store: &Store) -> Result<(), StoreError> {
        let keys = self.live.refresh_keys(store).await?;
        if keys.is_empty() {
            return Ok(());
        }
        self.live
            .read(|view| {
                let mut index =
                    self.index.write().unwrap_or_else(std::sync::PoisonError::into_inner);
                for key in &keys {
                    index.remove(key);
                    if let Some(record) = view.get(key) {
                        index.insert(&record);
                    }
                }
                // Slots of changed keys pile up; start over once they are half the index.
                if index.dead > 1024 && index.dead * 2 > index.slots.len() {
                    let mut fresh = Index::default();
                    for key in view.keys() {
                        if let Some(record) = view.get(key) {
                            fresh.insert(&record);
                        }
                    }
                    *index = fresh;
                }
            })
            .await;
        Ok(())
    }

    /// Catches up when never loaded, or written to by this replica since: a search sees this
    /// replica's own writes at once, and a process that only writes (an import) never loads
    /// the index at all.
    pub async fn refresh_if_stale(&self, store: &Store) -> Result<(), StoreError> {
        if self.live.needs_catch_up().await {
            self.refresh(store).await?;
        }
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
        let limit = if query.limit == 0 { DEFAULT_RESULTS } else { query.limit.min(MAX_RESULTS) };
        let wanted_category = query.category.as_deref().and_then(category_bit);
        self.live
            .read(|view| {
                let index = self.index.read().unwrap_or_else(std::sync::PoisonError::into_inner);
                let mut hits: Option<Hits> = None;
                for term in &terms {
                    let found = index.term(term);
                    hits = Some(match hits {
                        None => found,
                        Some(so_far) => both(&so_far, &found),
                    });
                    if hits.as_ref().is_some_and(Vec::is_empty) {
                        break;
                    }
                }
                let now = now.unix_seconds();
                let mut ranked: Vec<(u32, &Slot)> = hits
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|(slot, score)| {
                        index.slots[slot as usize].as_ref().map(|s| (score, s))
                    })
                    .filter(|(_, s)| {
                        query.include_expired || s.valid_until.is_none_or(|until| until >= now)
                    })
                    .filter(|(_, s)| wanted_category.is_none_or(|bit| s.categories & bit != 0))
                    .collect();
                let total = ranked.len();
                let order = |a: &(u32, &Slot), b: &(u32, &Slot)| {
                    b.0.cmp(&a.0)
                        .then_with(|| b.1.updated_at.cmp(&a.1.updated_at))
                        .then_with(|| a.1.key.cmp(&b.1.key))
                };
                if ranked.len() > limit {
                    ranked.select_nth_unstable_by(limit, order);
                    ranked.truncate(limit);
                }
                ranked.sort_by(order);
                KnowledgeAnswer {
                    records: ranked.iter().filter_map(|(_, s)| view.get(&s.key)).collect(),
                    total,
                }
            })
            .await
    }
}

/// The hits in both lists, their scores added.
fn both(a: &Hits, b: &Hits) -> Hits {
    let (mut i, mut j, mut out) = (0, 0, Vec::with_capacity(a.len().min(b.len())));
    while i < a.len() && j < b.len() {
        match a[i].0.cmp(&b[j].0) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                out.push((a[i].0, a[i].1 + b[j].1));
                i += 1;
                j += 1;
            }
        }
    }
    out
}

/// The slots of the union of several ascending lists, ascending.
fn union(lists: &[&[u32]]) -> Vec<u32> {
    let mut all: Vec<u32> = lists.iter().flat_map(|l| l.iter().copied()).collect();
    all.sort_unstable();
    all.dedup();
    all
}

/// The bit of a canonical category code.
fn category_bit(code: &str) -> Option<u32> {
    category::TAXONOMY.iter().position(|(c, _, _)| *c == code).map(|i| 1 << i)
}

impl Index {
    fn remove(&mut self, key: &str) {
        if let Some(slot) = self.slot_of.remove(key) {
            self.slots[slot as usize] = None;
            self.dead += 1;
        }
    }

    fn insert(&mut self, record: &Record) {
        let field = |name: &str| {
            record.body.get(name).and_then(Value::as_str).unwrap_or_default().to_lowercase()
        };
        let slot = self.slots.len() as u32;
        let categories = record
            .body
            .get("categories")
            .and_then(Value::as_array)
            .map(|codes| {
                codes
                    .iter()
                    .filter_map(|c| c.as_str().and_then(category_bit))
                    .fold(0, |bits, bit| bits | bit)
            })
            .unwrap_or(0);
        let valid_until = record
            .body
            .get("valid_until")
            .and_then(Value::as_str)
            .and_then(|t| Timestamp::parse_rfc3339(t, true).ok())
            .map(Timestamp::unix_seconds);
        let (title, body) = (field("title"), field("body"));
        self.slots.push(Some(Slot {
            key: record.key.clone(),
            title: title.clone().into_boxed_str(),
            body: body.clone().into_boxed_str(),
            updated_at: record.updated_at.unix_seconds(),
            valid_until,
            categories,
        }));
        self.slot_of.insert(record.key.clone(), slot);
        for (text, postings) in [(title, &mut self.title), (body, &mut self.body)] {
            let distinct: HashSet<String> = tokenize(&text).collect();
            for token in distinct {
                let token = token.into_boxed_str();
                let list = postings.entry(token.clone()).or_default();
                if list.is_empty() {
                    for c in token.chars().filter(|c| is_cjk(*c)) {
                        let holders = self.by_char.entry(c).or_default();
                        if !holders.contains(&token) {
                            holders.push(token.clone());
                        }
                    }
                }
                list.push(slot);
            }
        }
    }

    /// The slots holding `token` in titles and in bodies; a lone CJK character is every token
    /// that holds it.
    fn lists(&self, token: &str) -> (Vec<u32>, Vec<u32>) {
        let gather = |postings: &Postings| -> Vec<u32> {
            if is_lone_cjk(token) {
                let c = token.chars().next().unwrap_or_default();
                let holders = self.by_char.get(&c).map(Vec::as_slice).unwrap_or_default();
                let lists: Vec<&[u32]> =
                    holders.iter().filter_map(|t| postings.get(t)).map(Vec::as_slice).collect();
                union(&lists)
            } else {
                postings.get(token).cloned().unwrap_or_default()
            }
        };
        (gather(&self.title), gather(&self.body))
    }

    /// One term's hits. A term that is a single token (a two-character word, a character, a
    /// Latin word) is answered by the lists alone; a longer one by the answers holding all its
    /// tokens, each checked to hold the term as written.
    fn term(&self, term: &str) -> Hits {
        let tokens: Vec<String> = tokenize(term).collect();
        if tokens.len() == 1 && tokens[0] == term {
            let (title, body) = self.lists(term);
            let mut hits: Hits = Vec::with_capacity(title.len().max(body.len()));
            let (mut i, mut j) = (0, 0);
            while i < title.len() || j < body.len() {
                let (slot, score) = match (title.get(i), body.get(j)) {
                    (Some(t), Some(b)) if t == b => {
                        i += 1;
                        j += 1;
                        (*t, 3)
                    }
                    (Some(t), Some(b)) if t < b => {
                        i += 1;
                        (*t, 2)
                    }
                    (Some(t), None) => {
                        i += 1;
                        (*t, 2)
                    }
                    (_, Some(b)) => {
                        j += 1;
                        (*b, 1)
                    }
                    (None, None) => break,
                };
                hits.push((slot, score));
            }
            return hits;
        }
        // Lone characters inside a longer term narrow nothing the other tokens do not.
        let mut narrowing: Vec<&String> = tokens.iter().filter(|t| !is_lone_cjk(t)).collect();
        if narrowing.is_empty() {
            narrowing = tokens.iter().collect();
        }
        let mut candidates: Option<Vec<u32>> = None;
        for token in narrowing {
            let (title, body) = self.lists(token);
            let either = union(&[&title, &body]);
            candidates = Some(match candidates {
                None => either,
                Some(so_far) => {
                    so_far.into_iter().filter(|s| either.binary_search(s).is_ok()).collect()
                }
            });
        }
        let mut hits = Hits::new();
        for slot in candidates.unwrap_or_default() {
            let Some(held) = self.slots[slot as usize].as_ref() else { continue };
            let (in_title, in_body) = (held.title.contains(term), held.body.contains(term));
            if in_title || in_body {
                hits.push((slot, 2 * u32::from(in_title) + u32::from(in_body)));
            }
        }
        hits
    }
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
    fn hits_of_several_terms_are_the_slots_in_all_with_scores_added() {
        assert_eq!(
            both(&vec![(1, 2), (4, 1), (9, 3)], &vec![(4, 2), (9, 1), (12, 1)]),
            vec![(4, 3), (9, 4)]
        );
        assert_eq!(union(&[&[1, 5, 9], &[2, 5]]), vec![1, 2, 5, 9]);
    }
}
