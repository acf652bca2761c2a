//! The in-memory index: every stream's label set, its blocks on disk and
//! its head in memory, and the postings (label name → value → streams)
//! that narrow a selector to the streams it can match.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use super::block::{BlockRef, Entries};
use super::labels::{Labels, StreamId};
use super::query::{MatchOp, Matcher};
use super::range::TimeRange;

/// One stream: where its entries are, on disk and in memory.
pub(super) struct Stream {
    pub(super) labels: Arc<Labels>,
    /// Its blocks on disk, ordered by time.
    pub(super) blocks: Vec<BlockRef>,
    /// Entries written since the last flush.
    pub(super) head: Entries,
    /// Entries being flushed: still queryable until their blocks are.
    pub(super) flushing: Option<Arc<Entries>>,
    /// Not yet named in the commit log.
    pub(super) unlogged: bool,
}

/// Streams by id, and the postings of their labels.
#[derive(Default)]
pub(super) struct Index {
    pub(super) streams: HashMap<StreamId, Stream>,
    pub(super) postings: BTreeMap<String, BTreeMap<String, BTreeSet<StreamId>>>,
}

impl Index {
    /// The stream `id`, added (with its postings) if it is new.
    pub(super) fn add_stream(
        &mut self,
        id: StreamId,
        labels: &Labels,
        unlogged: bool,
    ) -> &mut Stream {
        if !self.streams.contains_key(&id) {
            for (n, v) in labels.iter() {
                self.postings
                    .entry(n.to_owned())
                    .or_default()
                    .entry(v.to_owned())
                    .or_default()
                    .insert(id);
            }
            self.streams.insert(
                id,
                Stream {
                    labels: Arc::new(labels.clone()),
                    blocks: Vec::new(),
                    head: Entries::default(),
                    flushing: None,
                    unlogged,
                },
            );
        }
        self.streams.get_mut(&id).expect("just inserted")
    }

    /// Forgets the stream `id` and its postings.
    pub(super) fn remove_stream(&mut self, id: StreamId) {
        if let Some(stream) = self.streams.remove(&id) {
            for (n, v) in stream.labels.iter() {
                if let Some(values) = self.postings.get_mut(n) {
                    if let Some(ids) = values.get_mut(v) {
                        ids.remove(&id);
                        if ids.is_empty() {
                            values.remove(v);
                        }
                    }
                    if values.is_empty() {
                        self.postings.remove(n);
                    }
                }
            }
        }
    }

    /// Streams matching a selector, using the postings of `=` matchers.
    pub(super) fn select(&self, selector: &[Matcher]) -> Vec<StreamId> {
        let mut candidates: Option<BTreeSet<StreamId>> = None;
        for m in selector {
            if m.op == MatchOp::Equal && !m.value.is_empty() {
                let ids = self
                    .postings
                    .get(&m.name)
                    .and_then(|values| values.get(&m.value))
                    .cloned()
                    .unwrap_or_default();
                candidates = Some(match candidates {
                    Some(c) => c.intersection(&ids).copied().collect(),
                    None => ids,
                });
            }
        }
        let ids: Vec<StreamId> = match candidates {
            Some(c) => c.into_iter().collect(),
            None => self.streams.keys().copied().collect(),
        };
        ids.into_iter()
            .filter(|id| {
                let labels = &self.streams[id].labels;
                selector.iter().all(|m| m.matches(labels))
            })
            .collect()
    }
}

impl Stream {
    /// Whether the stream has entries in `range` (by block bounds).
    pub(super) fn overlaps(&self, range: TimeRange) -> bool {
        let in_range = |ts: &i64| range.contains(*ts);
        self.blocks
            .iter()
            .any(|b| range.overlaps(b.min_ts, b.max_ts))
            || self.head.timestamps.iter().any(in_range)
            || self
                .flushing
                .as_ref()
                .is_some_and(|f| f.timestamps.iter().any(in_range))
    }
}
