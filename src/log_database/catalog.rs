//! What the index answers without reading a block: label names and values,
//! series, and index statistics, for a selector and a time range.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::labels::{Labels, StreamId};
use super::query::{Matcher, validate_selector};
use super::range::TimeRange;
use super::{Database, StoreError};

/// What `index/stats` reports for a selector and range.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IndexStats {
    /// Streams with entries in the range.
    pub streams: u64,
    /// Blocks overlapping the range.
    pub chunks: u64,
    /// Entries in those blocks and in memory.
    pub entries: u64,
    /// Their line bytes.
    pub bytes: u64,
}

impl std::ops::AddAssign for IndexStats {
    /// Stores with different streams add up (a cluster's nodes).
    fn add_assign(&mut self, other: Self) {
        self.streams += other.streams;
        self.chunks += other.chunks;
        self.entries += other.entries;
        self.bytes += other.bytes;
    }
}

/// How many of a block's `count` entries, spread over `min_ts..=max_ts`,
/// are newer than `after`: exact when the block is wholly on one side,
/// else estimated as if evenly spread (the index keeps no more).
pub fn entries_after(min_ts: i64, max_ts: i64, count: u32, after: i64) -> u64 {
    if max_ts <= after {
        0
    } else if min_ts > after {
        u64::from(count)
    } else {
        let span = (max_ts - min_ts).max(1) as f64;
        let share = (max_ts - after) as f64 / span;
        (f64::from(count.saturating_sub(1)) * share).round() as u64
    }
}

impl Database {
    /// How many stored entries are newer than where `after` says each
    /// stream stands (ns; from the index, blocks estimated as in
    /// [`entries_after`]): how far a reader of every stream is behind.
    pub fn count_after(&self, after: impl Fn(StreamId) -> i64) -> u64 {
        let inner = self.read_inner();
        let mut total = 0;
        for (&id, stream) in &inner.index.streams {
            let at = after(id);
            for b in &stream.blocks {
                total += entries_after(b.min_ts, b.max_ts, b.count, at);
            }
            for entries in [Some(&stream.head), stream.flushing.as_deref()]
                .into_iter()
                .flatten()
            {
                total += entries.timestamps.iter().filter(|&&ts| ts > at).count() as u64;
            }
        }
        total
    }

    /// Every stream's labels (what a sink catches up on).
    pub fn stream_labels(&self) -> Vec<Arc<Labels>> {
        let inner = self.read_inner();
        let mut out: Vec<Arc<Labels>> = inner
            .index
            .streams
            .values()
            .map(|s| s.labels.clone())
            .collect();
        out.sort();
        out
    }

    /// Streams, blocks, entries and bytes for `selector` in `range`,
    /// from the index alone (blocks count whole, as in Loki).
    pub fn index_stats(
        &self,
        selector: &[Matcher],
        range: TimeRange,
    ) -> Result<IndexStats, StoreError> {
        validate_selector(selector)?;
        let inner = self.read_inner();
        let mut stats = IndexStats::default();
        let mut physical = BTreeSet::new();
        for id in inner.index.select(selector) {
            let stream = &inner.index.streams[&id];
            if !stream.overlaps(range) {
                continue;
            }
            stats.streams += 1;
            for b in stream
                .blocks
                .iter()
                .filter(|b| range.overlaps(b.min_ts, b.max_ts))
            {
                physical.insert((b.partition, b.segment, b.offset));
                stats.entries += u64::from(b.count);
                stats.bytes += u64::from(b.raw);
            }
            for e in [Some(&stream.head), stream.flushing.as_deref()]
                .into_iter()
                .flatten()
            {
                for i in 0..e.len() {
                    if range.contains(e.timestamps[i]) {
                        stats.entries += 1;
                        stats.bytes += e.line(i).len() as u64;
                    }
                }
            }
        }
        stats.chunks = physical.len() as u64;
        Ok(stats)
    }

    /// For every label name, how many values it has.
    pub fn label_cardinality(&self) -> BTreeMap<String, usize> {
        self.read_inner()
            .index
            .postings
            .iter()
            .map(|(name, values)| (name.clone(), values.len()))
            .collect()
    }

    /// Label names of streams with entries in `range`.
    pub fn label_names(&self, range: TimeRange) -> Vec<String> {
        let inner = self.read_inner();
        let mut names = BTreeSet::new();
        for stream in inner.index.streams.values() {
            if stream.overlaps(range) {
                names.extend(stream.labels.iter().map(|(n, _)| n.to_owned()));
            }
        }
        names.into_iter().collect()
    }

    /// Values of label `name`, optionally only of streams matching
    /// `selector`, with entries in `range`.
    pub fn label_values(
        &self,
        name: &str,
        selector: Option<&[Matcher]>,
        range: TimeRange,
    ) -> Result<Vec<String>, StoreError> {
        if let Some(selector) = selector {
            validate_selector(selector)?;
        }
        let inner = self.read_inner();
        let mut values = BTreeSet::new();
        let ids = match selector {
            Some(selector) => inner.index.select(selector),
            None => inner.index.streams.keys().copied().collect(),
        };
        for id in ids {
            let stream = &inner.index.streams[&id];
            if let Some(v) = stream.labels.get(name)
                && stream.overlaps(range)
            {
                values.insert(v.to_owned());
            }
        }
        Ok(values.into_iter().collect())
    }

    /// Label sets of streams matching `selector` with entries in `range`.
    pub fn series(
        &self,
        selector: &[Matcher],
        range: TimeRange,
    ) -> Result<Vec<Arc<Labels>>, StoreError> {
        validate_selector(selector)?;
        let inner = self.read_inner();
        let mut out: Vec<Arc<Labels>> = inner
            .index
            .select(selector)
            .into_iter()
            .map(|id| &inner.index.streams[&id])
            .filter(|s| s.overlaps(range))
            .map(|s| s.labels.clone())
            .collect();
        out.sort();
        Ok(out)
    }
}
