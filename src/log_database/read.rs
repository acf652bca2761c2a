//! Query execution: a lazy k-way merge over sorted runs (blocks on disk and
//! in-memory heads) of every selected stream.
//!
//! Each block enters the heap keyed by its time bound without being read; it
//! is decompressed only when it reaches the top. So the newest 100 lines of a
//! busy stream touch only its newest blocks.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};

use super::block::{self, BlockRef, Entries};
use super::kept::{self, KeptCache};
use super::labels::Labels;
use super::level::Level;
use super::query::{Direction, LineFilter, Query};

/// One result entry. The labels are shared with every other entry of the
/// stream, not copied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueryEntry {
    /// The stream's labels.
    pub labels: Arc<Labels>,
    /// ns since the epoch.
    pub timestamp: i64,
    /// The line.
    pub line: Vec<u8>,
    /// Its detected level (structured metadata, not a stream label).
    pub level: Level,
}

/// The selected streams of one block on disk, each with its ref into it.
pub(super) type BlockParts = Vec<(Arc<Labels>, BlockRef)>;

/// A sorted run of entries, or a block that will yield some.
pub(super) enum Run {
    /// One block on disk not read yet, with the selected streams it holds
    /// (quiet streams share blocks: it is read once for all of them).
    Block(BlockParts),
    /// Entries of one stream in memory (a head, or a block once read),
    /// filtered to the range, with a cursor.
    Loaded {
        labels: Arc<Labels>,
        entries: Arc<Entries>,
        order: Vec<u32>,
        next: usize,
    },
}

struct Source {
    run: Run,
    /// The key the heap orders by: for an unread block its time bound, else
    /// the timestamp of the next entry.
    key: i64,
    tie: u64,
}

impl Source {
    fn heap_key(&self, direction: Direction) -> (i64, u64) {
        match direction {
            Direction::Forward => (self.key, self.tie),
            // Invert so the max-heap yields the newest first.
            Direction::Backward => (-(self.key.saturating_add(1)), u64::MAX - self.tie),
        }
    }
}

struct HeapItem {
    key: (i64, u64),
    source: Source,
}

impl PartialEq for HeapItem {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}
impl Eq for HeapItem {}
impl PartialOrd for HeapItem {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for HeapItem {
    fn cmp(&self, other: &Self) -> Ordering {
        // BinaryHeap is a max-heap; smallest key first.
        Reverse(self.key).cmp(&Reverse(other.key))
    }
}

/// Streams query results lazily, in timestamp order.
pub struct QueryIter {
    query: Query,
    heap: BinaryHeap<HeapItem>,
    partitions: PathBuf,
    returned: usize,
    corrupt: Arc<AtomicU64>,
    /// What the filters kept of blocks read before, and the filters' key.
    kept: Arc<KeptCache>,
    filter_key: Option<kept::Filters>,
    files: Vec<((u32, u32), Arc<File>)>,
    /// Reused across blocks: a scan reads thousands.
    decompressor: Option<zstd::bulk::Decompressor<'static>>,
    compressed: Vec<u8>,
    plain: Vec<u8>,
}

impl QueryIter {
    pub(super) fn new(
        query: Query,
        partitions: PathBuf,
        corrupt: Arc<AtomicU64>,
        kept: Arc<KeptCache>,
    ) -> Self {
        Self {
            filter_key: query.filter_key().map(kept::Filters::new),
            query,
            heap: BinaryHeap::new(),
            partitions,
            returned: 0,
            corrupt,
            kept,
            files: Vec::new(),
            decompressor: None,
            compressed: Vec::new(),
            plain: Vec::new(),
        }
    }

    /// Adds a block (with the selected streams in it) or a loaded run.
    pub(super) fn add(&mut self, run: Run) {
        let key = match &run {
            Run::Block(parts) => match self.query.direction {
                Direction::Forward => parts.iter().map(|(_, b)| b.min_ts).min().unwrap_or(0),
                Direction::Backward => parts.iter().map(|(_, b)| b.max_ts).max().unwrap_or(0),
            },
            Run::Loaded { .. } => 0,
        };
        let tie = self.heap.len() as u64;
        let source = Source { run, key, tie };
        match source.run {
            Run::Block(_) => self.push(source),
            Run::Loaded { .. } => self.settle(source),
        }
    }

    /// Builds a loaded run of `labels`' stream from sorted entries, filtered
    /// to the query.
    pub(super) fn loaded(&self, labels: Arc<Labels>, entries: Arc<Entries>) -> Run {
        let q = &self.query;
        let order = if q.may_match(&entries.data) {
            kept_lines(q, &entries, |ts| ts >= q.start && ts < q.end)
        } else {
            Vec::new()
        };
        self.run(labels, entries, order)
    }

    /// A loaded run of entries the filters already kept: only the range
    /// is left to apply.
    fn ranged(&self, labels: Arc<Labels>, kept: Arc<Entries>) -> Run {
        let order = kept
            .within(self.query.start, self.query.end)
            .map(|i| i as u32)
            .collect();
        self.run(labels, kept, order)
    }

    /// A loaded run over `order` (indices in time order), in the query's
    /// direction.
    fn run(&self, labels: Arc<Labels>, entries: Arc<Entries>, mut order: Vec<u32>) -> Run {
        if self.query.direction == Direction::Backward {
            order.reverse();
        }
        Run::Loaded {
            labels,
            entries,
            order,
            next: 0,
        }
    }

    /// Builds a loaded run of what the query keeps of a head, which goes on
    /// changing once the store's lock is released: only the entries that
    /// can be returned are copied, at most `limit` of them from the end
    /// the query reads first. A poll for the newest 100 lines of a stream
    /// so copies 100 lines, not the head.
    pub(super) fn loaded_copy(&self, labels: Arc<Labels>, head: &Entries) -> Run {
        let unsorted;
        let head = if head.timestamps.is_sorted() {
            head
        } else {
            unsorted = head.sorted();
            &unsorted
        };
        let q = &self.query;
        let picked = if q.may_match(&head.data) {
            let range = head.within(q.start, q.end);
            let keeps = |&i: &usize| q.keeps(head.line(i));
            match q.direction {
                Direction::Forward => head.select(range.filter(keeps).take(q.limit)),
                Direction::Backward => {
                    let newest: Vec<usize> = range.rev().filter(keeps).take(q.limit).collect();
                    head.select(newest.into_iter().rev())
                }
            }
        } else {
            Entries::default()
        };
        let order = (0..picked.len() as u32).collect();
        self.run(labels, Arc::new(picked), order)
    }

    /// Where the `limit`-th entry in the query's direction lies among the
    /// runs added so far (the in-memory ones), when they hold that many:
    /// a block wholly beyond it cannot hold an answer. A poll for the
    /// newest lines of a busy stream is then answered from its head
    /// without a look at its blocks.
    pub(super) fn reach(&self) -> Option<i64> {
        let limit = self.query.limit.saturating_sub(self.returned);
        // Past this, gathering the timestamps costs more than it saves.
        if limit == 0 || limit > 100_000 {
            return None;
        }
        let mut times = Vec::new();
        for item in &self.heap {
            if let Run::Loaded {
                entries,
                order,
                next,
                ..
            } = &item.source.run
            {
                let ahead = order[*next..].iter().take(limit);
                times.extend(ahead.map(|&i| entries.timestamps[i as usize]));
            }
        }
        if times.len() < limit {
            return None;
        }
        let (_, nth, _) = match self.query.direction {
            Direction::Backward => times.select_nth_unstable_by(limit - 1, |a, b| b.cmp(a)),
            Direction::Forward => times.select_nth_unstable(limit - 1),
        };
        Some(*nth)
    }

    /// Whether `block` may hold an answer, given [`reach`](Self::reach).
    /// An entry at the very reach ties with the last answer, so a block
    /// touching it stays.
    pub(super) fn within_reach(&self, block: &BlockRef, reach: Option<i64>) -> bool {
        match (reach, self.query.direction) {
            (None, _) => true,
            (Some(at), Direction::Backward) => block.max_ts >= at,
            (Some(at), Direction::Forward) => block.min_ts <= at,
        }
    }

    fn push(&mut self, source: Source) {
        let key = source.heap_key(self.query.direction);
        self.heap.push(HeapItem { key, source });
    }

    /// Re-keys a loaded source on its next entry (or drops it when done).
    fn settle(&mut self, mut source: Source) {
        if let Run::Loaded {
            entries,
            order,
            next,
            ..
        } = &source.run
        {
            match order.get(*next) {
                Some(&i) => source.key = entries.timestamps[i as usize],
                None => return,
            }
        }
        self.push(source);
    }

    fn file(&mut self, partition: u32, segment: u32) -> std::io::Result<Arc<File>> {
        if let Some((_, f)) = self.files.iter().find(|(k, _)| *k == (partition, segment)) {
            return Ok(f.clone());
        }
        let path = super::flush::segment_path(&self.partitions, partition, segment);
        let f = Arc::new(File::open(path)?);
        self.files.push(((partition, segment), f.clone()));
        Ok(f)
    }

    /// Returns the run of each selected stream in one block: from what
    /// its filters kept of the block before when that is remembered, else
    /// by reading the block (and remembering what they keep of it).
    fn load(&mut self, parts: &[(Arc<Labels>, BlockRef)]) -> Vec<Run> {
        let mut runs = Vec::with_capacity(parts.len());
        let mut missing: Vec<&(Arc<Labels>, BlockRef)> = Vec::with_capacity(parts.len());
        match &self.filter_key {
            Some(key) => {
                for part in parts {
                    match self.kept.get(&kept::Key::new(&part.1, key)) {
                        Some(entries) => runs.push(self.ranged(part.0.clone(), entries)),
                        None => missing.push(part),
                    }
                }
            }
            None => missing.extend(parts),
        }
        let Some((_, block)) = missing.first() else {
            return runs;
        };
        let block = *block;
        let result = self.file(block.partition, block.segment).and_then(|file| {
            self.compressed.resize(block.len as usize, 0);
            file.read_exact_at(&mut self.compressed, block.offset)?;
            let decompressor = match &mut self.decompressor {
                Some(d) => d,
                empty => empty.insert(zstd::bulk::Decompressor::new()?),
            };
            let layout = block::decompress_into(decompressor, &self.compressed, &mut self.plain)?;
            // A needle absent from the whole block rules out all its streams
            // before any column is parsed.
            if !self.query.may_match(&self.plain) {
                return Ok(None);
            }
            let wanted: Vec<_> = missing.iter().map(|(_, b)| b.stream).collect();
            block::extract_many(&self.plain, layout, &wanted).map(Some)
        });
        match result {
            Ok(None) => {
                if let Some(key) = &self.filter_key {
                    for (_, b) in &missing {
                        self.kept.insert(kept::Key::new(b, key), Arc::default());
                    }
                }
            }
            Ok(Some(extracted)) => {
                for ((labels, b), entries) in missing.into_iter().zip(extracted) {
                    let run = match &self.filter_key {
                        Some(key) => self.remember(key, b, labels.clone(), entries),
                        None => self.loaded(labels.clone(), Arc::new(entries)),
                    };
                    runs.push(run);
                }
            }
            Err(error) => {
                // Skip what cannot be read; never serve garbage.
                self.corrupt.fetch_add(1, AtomicOrdering::Relaxed);
                tracing::warn!(partition = block.partition, segment = block.segment, offset = block.offset, %error, "Skipping an unreadable block.");
            }
        }
        runs
    }

    /// The run of a stream's part of a block just read, remembering what
    /// the filters keep of the whole part when that is small.
    fn remember(
        &self,
        key: &kept::Filters,
        block: &BlockRef,
        labels: Arc<Labels>,
        entries: Entries,
    ) -> Run {
        let all = kept_lines(&self.query, &entries, |_| true);
        let bytes: usize = all
            .iter()
            .map(|&i| entries.line(i as usize).len() + block::HELD_PER_ENTRY)
            .sum();
        if bytes > kept::MAX_ANSWER_BYTES {
            let (start, end) = (self.query.start, self.query.end);
            let order = all
                .into_iter()
                .filter(|&i| (start..end).contains(&entries.timestamps[i as usize]))
                .collect();
            return self.run(labels, Arc::new(entries), order);
        }
        let kept = if all.len() == entries.len() {
            // Every line passes: the part itself, not a copy.
            Arc::new(entries)
        } else {
            Arc::new(entries.select(all.into_iter().map(|i| i as usize)))
        };
        self.kept.insert(kept::Key::new(block, key), kept.clone());
        self.ranged(labels, kept)
    }
}

/// The indices of the sorted `entries` whose time passes `in_range` and
/// whose line the query's filters keep.
fn kept_lines(q: &Query, entries: &Entries, in_range: impl Fn(i64) -> bool) -> Vec<u32> {
    let in_range = |i: usize| in_range(entries.timestamps[i]);
    match q.filters.first().and_then(LineFilter::required) {
        // Find the needle's occurrences in the block once, rather than
        // searching every line for it.
        Some(finder) => {
            let (data, needle) = (&entries.data, finder.needle().len());
            let mut lines = Vec::new();
            let mut pos = 0;
            while let Some(at) = finder.find(&data[pos..]) {
                let at = pos + at;
                let i = entries.ends.partition_point(|&end| end as usize <= at);
                let end = entries.ends[i] as usize;
                // An occurrence running into the next line is not a match
                // in this one, and neither is any later start in it.
                if at + needle <= end && in_range(i) && q.keeps(entries.line(i)) {
                    lines.push(i as u32);
                }
                pos = end;
            }
            lines
        }
        None => (0..entries.len())
            .filter(|&i| in_range(i) && q.keeps(entries.line(i)))
            .map(|i| i as u32)
            .collect(),
    }
}

impl Iterator for QueryIter {
    type Item = QueryEntry;

    fn next(&mut self) -> Option<QueryEntry> {
        if self.returned >= self.query.limit {
            return None;
        }
        loop {
            let HeapItem { mut source, .. } = self.heap.pop()?;
            match &mut source.run {
                Run::Block(parts) => {
                    let parts = std::mem::take(parts);
                    for run in self.load(&parts) {
                        self.add(run);
                    }
                }
                Run::Loaded {
                    labels,
                    entries,
                    order,
                    next,
                } => {
                    let i = order[*next] as usize;
                    *next += 1;
                    let entry = QueryEntry {
                        labels: labels.clone(),
                        timestamp: entries.timestamps[i],
                        line: entries.line(i).to_vec(),
                        level: entries.level(i),
                    };
                    self.settle(source);
                    self.returned += 1;
                    return Some(entry);
                }
            }
        }
    }
}
