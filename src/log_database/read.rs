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
use super::labels::Labels;
use super::query::{Direction, Query};

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
}

/// A sorted run of one stream.
pub(super) enum Run {
    /// A block not read yet.
    Block(BlockRef),
    /// Entries in memory (a head, or a block once read), filtered to the
    /// range, with a cursor.
    Loaded {
        entries: Arc<Entries>,
        order: Vec<u32>,
        next: usize,
    },
}

struct Source {
    labels: Arc<Labels>,
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
    files: Vec<((u32, u32), Arc<File>)>,
}

impl QueryIter {
    pub(super) fn new(query: Query, partitions: PathBuf, corrupt: Arc<AtomicU64>) -> Self {
        Self {
            query,
            heap: BinaryHeap::new(),
            partitions,
            returned: 0,
            corrupt,
            files: Vec::new(),
        }
    }

    /// Adds a run of `labels`' stream.
    pub(super) fn add(&mut self, labels: &Arc<Labels>, run: Run) {
        let key = match &run {
            Run::Block(b) => match self.query.direction {
                Direction::Forward => b.min_ts,
                Direction::Backward => b.max_ts,
            },
            Run::Loaded { .. } => 0,
        };
        let tie = self.heap.len() as u64;
        let source = Source {
            labels: labels.clone(),
            run,
            key,
            tie,
        };
        match source.run {
            Run::Block(_) => self.push(source),
            Run::Loaded { .. } => self.settle(source),
        }
    }

    /// Builds a loaded run from entries (sorted), filtered to the query.
    pub(super) fn loaded(&self, entries: Arc<Entries>) -> Run {
        let q = &self.query;
        let mut order: Vec<u32> = (0..entries.len() as u32)
            .filter(|&i| {
                let ts = entries.timestamps[i as usize];
                ts >= q.start && ts < q.end && q.keeps(entries.line(i as usize))
            })
            .collect();
        if q.direction == Direction::Backward {
            order.reverse();
        }
        Run::Loaded {
            entries,
            order,
            next: 0,
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
        let path = super::segment_path(&self.partitions, partition, segment);
        let f = Arc::new(File::open(path)?);
        self.files.push(((partition, segment), f.clone()));
        Ok(f)
    }

    fn load(&mut self, block: &BlockRef) -> Option<Arc<Entries>> {
        let result = self.file(block.partition, block.segment).and_then(|f| {
            let mut buf = vec![0u8; block.len as usize];
            f.read_exact_at(&mut buf, block.offset)?;
            block::decode(&buf, block.stream)
        });
        match result {
            Ok(entries) => Some(Arc::new(entries)),
            Err(error) => {
                // Skip what cannot be read; never serve garbage.
                self.corrupt.fetch_add(1, AtomicOrdering::Relaxed);
                tracing::warn!(partition = block.partition, segment = block.segment, offset = block.offset, %error, "Skipping an unreadable block.");
                None
            }
        }
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
                Run::Block(block) => {
                    let block = *block;
                    if let Some(entries) = self.load(&block) {
                        source.run = self.loaded(entries);
                        self.settle(source);
                    }
                }
                Run::Loaded {
                    entries,
                    order,
                    next,
                } => {
                    let i = order[*next] as usize;
                    *next += 1;
                    let entry = QueryEntry {
                        labels: source.labels.clone(),
                        timestamp: entries.timestamps[i],
                        line: entries.line(i).to_vec(),
                    };
                    self.settle(source);
                    self.returned += 1;
                    return Some(entry);
                }
            }
        }
    }
}
