//! What the line filters of past queries kept of each block.
//!
//! A block never changes once written, so a query that meets a block again
//! with the same filters (a dashboard or a page refreshing
//! `{pod="x"} |= "error"` every few seconds) takes the answer from here
//! instead of decompressing the block again. Only small answers are kept:
//! a filter that keeps many lines finds its limit in the newest blocks,
//! while a rare needle has to read every block of the range, and its
//! answers (often none) are tiny. The memory is bounded by configuration
//! and the least useful answers are evicted first.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::block::{BlockRef, Entries};

/// Answers larger than this are not kept: the block is read each time.
pub(super) const MAX_ANSWER_BYTES: usize = 64 << 10;

/// Bookkeeping counted per answer besides its lines (key, map slot, `Arc`).
const OVERHEAD: u64 = 128;

/// A query's list of filters as text, hashed once for all its lookups.
#[derive(Clone, Debug)]
pub(super) struct Filters {
    text: Arc<str>,
    hash: u64,
}

impl Filters {
    /// The filters' text (see `Query::filter_key`).
    pub(super) fn new(text: Arc<str>) -> Self {
        let hash = xxhash_rust::xxh3::xxh3_64(text.as_bytes());
        Self { text, hash }
    }
}

/// One stream's part of one block, seen through one list of filters.
#[derive(Clone)]
pub(super) struct Key {
    partition: u32,
    segment: u32,
    offset: u64,
    stream: u64,
    filters: Filters,
}

impl Key {
    /// The key of `block`'s part of its stream under `filters`.
    pub(super) fn new(block: &BlockRef, filters: &Filters) -> Self {
        Self {
            partition: block.partition,
            segment: block.segment,
            offset: block.offset,
            stream: block.stream.0,
            filters: filters.clone(),
        }
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (&self.filters, &other.filters);
        (self.partition, self.segment, self.offset, self.stream)
            == (other.partition, other.segment, other.offset, other.stream)
            && a.hash == b.hash
            && (Arc::ptr_eq(&a.text, &b.text) || a.text == b.text)
    }
}

impl Eq for Key {}

impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // The filters' text is compared on equality only: hashing it per
        // lookup cost more than the lookup.
        (
            self.partition,
            self.segment,
            self.offset,
            self.stream,
            self.filters.hash,
        )
            .hash(state);
    }
}

#[derive(Clone)]
struct Weight;

impl quick_cache::Weighter<Key, Arc<Entries>> for Weight {
    fn weight(&self, key: &Key, kept: &Arc<Entries>) -> u64 {
        OVERHEAD + key.filters.text.len() as u64 + kept.held_bytes() as u64
    }
}

/// The remembered answers, bounded in bytes.
pub(super) struct KeptCache {
    /// `None` when configured to zero bytes.
    cache: Option<quick_cache::sync::Cache<Key, Arc<Entries>, Weight>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl KeptCache {
    /// A cache of at most `bytes` (0 turns it off).
    pub(super) fn new(bytes: usize) -> Self {
        let cache = (bytes > 0).then(|| {
            // The item estimate only sizes the table; small answers are
            // the common ones.
            let items = (bytes / 512).max(16);
            quick_cache::sync::Cache::with_weighter(items, bytes as u64, Weight)
        });
        Self {
            cache,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// What the filters kept of this part, if remembered.
    pub(super) fn get(&self, key: &Key) -> Option<Arc<Entries>> {
        let found = self.cache.as_ref()?.get(key);
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Remembers what the filters kept, unless it is too large to be worth it.
    pub(super) fn insert(&self, key: Key, kept: Arc<Entries>) {
        if let Some(cache) = &self.cache
            && kept.held_bytes() <= MAX_ANSWER_BYTES
        {
            cache.insert(key, kept);
        }
    }

    /// Lookups answered and not answered so far, and the bytes held.
    pub(super) fn counts(&self) -> (u64, u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
            self.cache.as_ref().map_or(0, |c| c.weight()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log_database::labels::StreamId;
    use crate::log_database::level::Level;

    fn block(offset: u64) -> BlockRef {
        BlockRef {
            stream: StreamId(7),
            partition: 1,
            segment: 2,
            offset,
            len: 0,
            min_ts: 0,
            max_ts: 0,
            count: 0,
            raw: 0,
        }
    }

    fn entries(lines: usize, bytes: usize) -> Arc<Entries> {
        let mut e = Entries::default();
        for i in 0..lines {
            e.push(i as i64, &vec![b'x'; bytes], Level::Info);
        }
        Arc::new(e)
    }

    #[test]
    fn answers_are_kept_per_block_and_filters_and_bounded() {
        let cache = KeptCache::new(64 << 10);
        let (error, timeout) = (
            Filters::new("c5:error".into()),
            Filters::new("c7:timeout".into()),
        );
        cache.insert(Key::new(&block(0), &error), entries(0, 0));
        cache.insert(Key::new(&block(0), &timeout), entries(2, 10));
        assert_eq!(cache.get(&Key::new(&block(0), &error)).unwrap().len(), 0);
        assert_eq!(cache.get(&Key::new(&block(0), &timeout)).unwrap().len(), 2);
        assert!(cache.get(&Key::new(&block(1), &error)).is_none());
        assert_eq!(cache.counts().0, 2);
        assert_eq!(cache.counts().1, 1);
        // Too large an answer is not kept.
        cache.insert(Key::new(&block(2), &error), entries(100, 1000));
        assert!(cache.get(&Key::new(&block(2), &error)).is_none());
        // However many answers come, the bytes held stay within the bound.
        for offset in 10..2_000 {
            cache.insert(Key::new(&block(offset), &error), entries(2, 100));
        }
        assert!(cache.counts().2 <= 64 << 10, "{:?}", cache.counts());
        let off = KeptCache::new(0);
        off.insert(Key::new(&block(0), &error), entries(0, 0));
        assert!(off.get(&Key::new(&block(0), &error)).is_none());
    }
}
