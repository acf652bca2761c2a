//! The embedded node-local log store.
//!
//! ```text
//! data/
//!   manifest.log                  commit log: snapshot, then one record per flush
//!   partitions/
//!     <hours since epoch>/        one directory per hour of entry time
//!       <segment>.seg             append-only blocks (see block.rs)
//! ```
//!
//! Durability follows the "tailed files are the log" design: written entries
//! sit in per-stream head blocks in memory, queryable at once. A flush (every
//! few seconds, or when heads grow) cuts the heads into compressed blocks,
//! appends them to segment files, fsyncs, and then appends one commit record
//! holding the block references *and the source checkpoints of every batch
//! written so far*. A crash therefore loses only heads whose source bytes are
//! still in the tailed files, and the collector re-reads exactly those: nothing
//! is lost and nothing is stored twice. The store knows no collector: a
//! checkpoint is an opaque key and value.

mod batch;
mod block;
mod catalog;
mod flush;
mod index;
mod kept;
pub mod labels;
pub mod level;
pub mod maintenance;
mod manifest;
pub mod query;
mod range;
mod read;
mod recovery;
mod retention;

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use self::batch::{Appended, StreamEntries, WriteBatch};
pub use self::block::Entries;
pub use self::catalog::{IndexStats, entries_after};
pub use self::manifest::ReadReport;
pub use self::range::TimeRange;
pub use self::read::{QueryEntry, QueryIter};
pub use self::recovery::RecoveryReport;
pub use self::retention::Deleted;

use self::flush::Writer;
use self::index::Index;
use self::query::{Query, QueryError};
use self::read::{BlockParts, Run};

/// How the store behaves.
#[derive(Clone, Debug)]
pub struct Config {
    /// Entries older than this are deleted (whole partitions).
    pub retention_period: Duration,
    /// The oldest partitions are deleted while the store is larger.
    pub retention_size: u64,
    /// A stream's head is cut into a block at this many raw bytes.
    pub block_bytes: usize,
    /// All heads together are flushed at this many bytes.
    pub flush_bytes: usize,
    /// Writes are refused (the caller retries) while heads hold this much,
    /// which only happens when flushing fails (for instance, disk full).
    pub max_head_bytes: usize,
    /// zstd level for blocks.
    pub compression_level: i32,
    /// A segment file is closed at this size.
    pub segment_bytes: u64,
    /// Memory for what queries' line filters kept of blocks, so that a
    /// repeated query does not decompress the same blocks again (0: off).
    pub query_cache_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            retention_period: Duration::from_secs(7 * 24 * 3600),
            retention_size: 10 << 30,
            block_bytes: 1 << 20,
            flush_bytes: 16 << 20,
            max_head_bytes: 64 << 20,
            compression_level: 1,
            segment_bytes: 64 << 20,
            query_cache_bytes: 8 << 20,
        }
    }
}

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing the data directory failed.
    #[error("log store at {path}: {source}")]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The query is malformed.
    #[error(transparent)]
    Query(#[from] QueryError),
    /// Another process has the store open.
    #[error(
        "the log store at {path} is in use by another process; stop it or use another --data-directory"
    )]
    Locked {
        /// The data directory.
        path: PathBuf,
    },
}

/// The one way a write can fail: writing to disk failed earlier (e.g. the
/// disk is full) and the memory for unwritten entries is used up. Nothing of
/// the batch was taken; retry the same batch later.
#[derive(Debug, thiserror::Error)]
#[error(
    "the log store cannot take more entries until it can write to disk again \
     ({head_bytes} bytes waiting; last error: {last_error}); free space in the data directory"
)]
pub struct Backpressure {
    /// Bytes held in memory.
    pub head_bytes: usize,
    /// Why flushing failed.
    pub last_error: String,
}

fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> StoreError {
    let path = path.into();
    move |source| StoreError::Io { path, source }
}

/// Store-wide figures.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// Streams known.
    pub streams: u64,
    /// Blocks on disk.
    pub chunks: u64,
    /// Entries stored (on disk and in heads).
    pub entries: u64,
    /// Line bytes stored, before compression.
    pub raw_bytes: u64,
    /// Bytes on disk in blocks.
    pub stored_bytes: u64,
    /// Bytes in memory heads, not yet on disk.
    pub head_bytes: u64,
    /// Oldest entry (ns), if any.
    pub oldest: Option<i64>,
    /// Newest entry (ns), if any.
    pub newest: Option<i64>,
    /// Successful flushes.
    pub flushes: u64,
    /// Failed flushes (entries stay in memory and are retried).
    pub flush_errors: u64,
    /// Blocks that failed their checksum when read.
    pub corrupt_blocks: u64,
    /// Partitions deleted by retention.
    pub partitions_dropped: u64,
    /// Blocks a query did not read because what its filters keep of them
    /// was remembered.
    pub query_cache_hits: u64,
    /// Blocks a query with line filters had to read.
    pub query_cache_misses: u64,
    /// Memory held by remembered answers.
    pub query_cache_bytes: u64,
}

/// The in-memory state: the index, and the checkpoints on their way to
/// becoming durable.
#[derive(Default)]
struct Inner {
    index: Index,
    /// Checkpoints written but not yet durable.
    pending: BTreeMap<String, Option<Vec<u8>>>,
    /// Durable checkpoints.
    durable: BTreeMap<String, Vec<u8>>,
    /// Bytes of entries in memory (heads and heads being flushed).
    head_bytes: usize,
    /// The part of `head_bytes` a flush in progress has taken.
    flushing_bytes: usize,
    last_flush_error: Option<String>,
}

/// The store. Cheap to share behind an `Arc`; every method takes `&self`.
pub struct Database {
    dir: PathBuf,
    partitions: PathBuf,
    config: Config,
    inner: RwLock<Inner>,
    writer: Mutex<Writer>,
    flushes: AtomicU64,
    flush_errors: AtomicU64,
    corrupt: Arc<AtomicU64>,
    dropped: AtomicU64,
    /// Held for the life of the store: one process per data directory.
    _lock: File,
    /// Entries as they are written, for live tails.
    appended: tokio::sync::broadcast::Sender<Arc<Appended>>,
    /// Who is told what retention deletes (sinks count what they lose).
    retention_watchers:
        std::sync::Mutex<Vec<std::sync::mpsc::Sender<Arc<Vec<retention::Deleted>>>>>,
    /// Wakes the maintenance thread after a write.
    maintenance: maintenance::Signal,
    /// What queries' line filters kept of blocks read before.
    kept: Arc<kept::KeptCache>,
}

/// When a write makes its entries durable.
enum Flush {
    /// Before it returns.
    Now,
    /// On the maintenance thread, at once (before it returns if there is none).
    Soon,
    /// Once the flush being compressed is done, on the maintenance thread:
    /// the writer waits for compression but goes on reading beside it.
    AfterCurrent,
    /// Within the flush interval.
    Later,
}

/// A batch to write: borrowed (tails get a copy) or lent mutably (tails
/// get its streams).
enum Given<'a> {
    Borrowed(&'a WriteBatch),
    Owned(&'a mut WriteBatch),
}

/// How many writes a live tail may fall behind before it is dropped.
const TAIL_BUFFER: usize = 1024;

/// Takes an exclusive lock on the data directory.
fn lock(dir: &Path) -> Result<File, StoreError> {
    use std::os::fd::AsRawFd;
    let path = dir.join("lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err(&path))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(StoreError::Locked {
            path: dir.to_owned(),
        });
    }
    Ok(file)
}

/// The current time in ns since the Unix epoch (0 if the clock is before it).
pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

impl Database {
    /// Opens (or creates) the store in `dir`, repairing what a crash left.
    pub fn open(dir: &Path, config: Config) -> Result<(Self, RecoveryReport), StoreError> {
        let partitions = dir.join("partitions");
        fs::create_dir_all(&partitions).map_err(io_err(&partitions))?;
        let lock = lock(dir)?;
        let recovered = recovery::recover(dir, &partitions)?;
        let db = Self {
            dir: dir.to_owned(),
            partitions,
            inner: RwLock::new(recovered.inner),
            writer: Mutex::new(Writer::new(recovered.manifest, recovered.next_segment)),
            flushes: AtomicU64::new(0),
            flush_errors: AtomicU64::new(0),
            corrupt: Arc::new(AtomicU64::new(0)),
            dropped: AtomicU64::new(0),
            _lock: lock,
            appended: tokio::sync::broadcast::channel(TAIL_BUFFER).0,
            retention_watchers: std::sync::Mutex::default(),
            maintenance: maintenance::Signal::default(),
            kept: Arc::new(kept::KeptCache::new(config.query_cache_bytes)),
            config,
        };
        // Start from one clean snapshot: replays stay short, damage is gone.
        db.snapshot(&mut db.lock_writer())?;
        Ok((db, recovered.report))
    }

    fn read_inner(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_inner(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_writer(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a batch. Its entries are queryable at once; they and its
    /// checkpoints become durable together at the next flush. When heads are
    /// large this flushes before returning; a failed flush keeps entries in
    /// memory and is retried. Fails only with [`Backpressure`], and then
    /// nothing of the batch was taken.
    pub fn write(&self, batch: &WriteBatch) -> Result<(), Backpressure> {
        self.write_from(Given::Borrowed(batch)).map(drop)
    }

    /// [`write`](Self::write), handing the batch's streams themselves to
    /// live tails instead of a copy: when there are tails, `batch.streams`
    /// is left empty and the returned handle holds them; once the tails
    /// have let go ([`Arc::try_unwrap`]) the caller can reuse the buffers.
    /// On [`Backpressure`] the batch is left as it was.
    pub fn write_shared(
        &self,
        batch: &mut WriteBatch,
    ) -> Result<Option<Arc<Appended>>, Backpressure> {
        self.write_from(Given::Owned(batch))
    }

    fn write_from(&self, given: Given<'_>) -> Result<Option<Arc<Appended>>, Backpressure> {
        let mut shared = None;
        let flush = {
            let batch: &WriteBatch = match &given {
                Given::Borrowed(batch) => batch,
                Given::Owned(batch) => batch,
            };
            let mut inner = self.write_inner();
            if inner.head_bytes >= self.config.max_head_bytes {
                return Err(Backpressure {
                    head_bytes: inner.head_bytes,
                    last_error: inner.last_flush_error.clone().unwrap_or_default(),
                });
            }
            let mut big_head = false;
            for stream in &batch.streams {
                if stream.entries.is_empty() {
                    continue;
                }
                let s = inner.index.add_stream(stream.id(), stream.labels(), true);
                s.head.extend(&stream.entries);
                big_head |= s.head.data.len() >= self.config.block_bytes;
                inner.head_bytes += stream.entries.held_bytes();
            }
            // A checkpoint the store has never held means a source it did
            // not know: its start is made durable now, so that a crash
            // before the next flush still knows the source (and can find it
            // again if it rotates meanwhile).
            let mut new_source = false;
            for (key, value) in &batch.checkpoints {
                new_source |= value.is_some()
                    && !inner.durable.contains_key(key)
                    && !inner.pending.contains_key(key);
                inner.pending.insert(key.clone(), value.clone());
            }
            // A forgotten checkpoint means a source is finished (its file
            // rotated away or deleted): its last lines cannot be re-read after
            // a crash, so they are made durable now.
            let source_done = batch.checkpoints.iter().any(|(_, v)| v.is_none());
            // Large heads are compressed on the maintenance thread while
            // the writer goes on. Once a whole flush waits beside the one
            // being compressed, the writer waits for that one to finish
            // before it goes on: heads then hold about two flushes however
            // far compression falls behind a reader (a catch-up on slow
            // cores held three, a third of the node's memory), and reading
            // still runs beside the next compression.
            let unflushed = inner.head_bytes.saturating_sub(inner.flushing_bytes);
            let flush = if source_done || new_source || unflushed >= 2 * self.config.flush_bytes {
                Flush::Now
            } else if inner.flushing_bytes > 0 && unflushed >= self.config.flush_bytes {
                Flush::AfterCurrent
            } else if big_head || unflushed >= self.config.flush_bytes {
                Flush::Soon
            } else {
                Flush::Later
            };
            // A write of checkpoints alone (a sink's cursor) is no news.
            if self.appended.receiver_count() > 0
                && batch.streams.iter().any(|s| !s.entries.is_empty())
            {
                let streams = match given {
                    Given::Borrowed(batch) => batch
                        .streams
                        .iter()
                        .filter(|s| !s.entries.is_empty())
                        .cloned()
                        .collect(),
                    Given::Owned(batch) => std::mem::take(&mut batch.streams),
                };
                let appended = Arc::new(Appended { streams });
                // Sent under the lock so tails see writes in order.
                let _ = self.appended.send(appended.clone());
                shared = Some(appended);
            }
            flush
        };
        let flush_now = match flush {
            Flush::Now => true,
            Flush::Soon => !self.maintenance.flush_soon(),
            Flush::AfterCurrent => {
                // A flush holds the writer from taking the heads until
                // its commit: this waits for the one being compressed.
                drop(self.lock_writer());
                !self.maintenance.flush_soon()
            }
            Flush::Later => {
                self.maintenance.written();
                false
            }
        };
        if flush_now {
            // A failed flush keeps the entries in memory and is retried; the
            // batch itself was taken.
            let _ = self.flush();
        }
        Ok(shared)
    }

    /// The durable checkpoints: where sources resume after a restart.
    pub fn checkpoints(&self) -> BTreeMap<String, Vec<u8>> {
        self.read_inner().durable.clone()
    }

    /// Runs a log query; entries come lazily in the query's direction.
    pub fn query(&self, query: Query) -> Result<QueryIter, StoreError> {
        query.validate()?;
        let (start, end) = (query.start, query.end);
        let selector = query.selector.clone();
        let mut iter = QueryIter::new(
            query,
            self.partitions.clone(),
            self.corrupt.clone(),
            self.kept.clone(),
        );
        let inner = self.read_inner();
        let selected = inner.index.select(&selector);
        for id in &selected {
            let stream = &inner.index.streams[id];
            // In-memory entries: a head being flushed (it no longer
            // changes: shared when in order), and the head.
            if let Some(flushing) = &stream.flushing {
                let run = if flushing.timestamps.is_sorted() {
                    iter.loaded(stream.labels.clone(), flushing.clone())
                } else {
                    iter.loaded_copy(stream.labels.clone(), flushing)
                };
                iter.add(run);
            }
            if !stream.head.is_empty() {
                let run = iter.loaded_copy(stream.labels.clone(), &stream.head);
                iter.add(run);
            }
        }
        // Blocks are grouped by where they are: a block shared by several
        // selected streams is read once. Those beyond what the heads
        // already answer are left out.
        let reach = iter.reach();
        let mut blocks: BlockParts = Vec::new();
        for id in &selected {
            let stream = &inner.index.streams[id];
            for block in &stream.blocks {
                if block.max_ts >= start && block.min_ts < end && iter.within_reach(block, reach) {
                    blocks.push((stream.labels.clone(), *block));
                }
            }
        }
        drop(inner);
        blocks.sort_unstable_by_key(|(_, b)| (b.partition, b.segment, b.offset));
        let mut blocks = blocks.into_iter().peekable();
        while let Some(first) = blocks.next() {
            let at = |b: &block::BlockRef| (b.partition, b.segment, b.offset);
            let mut parts: BlockParts = vec![first];
            while let Some(next) = blocks.next_if(|(_, b)| at(b) == at(&parts[0].1)) {
                parts.push(next);
            }
            iter.add(Run::Block(parts));
        }
        Ok(iter)
    }

    /// Receives every write from now on (a receiver that falls more than
    /// 1,024 writes behind gets `Lagged` and should give up).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<Appended>> {
        self.appended.subscribe()
    }

    /// How many live tails are subscribed.
    pub fn subscribers(&self) -> usize {
        self.appended.receiver_count()
    }

    /// The oldest entry held (ns), if any: what a query over "everything"
    /// really spans.
    pub fn oldest(&self) -> Option<i64> {
        let inner = self.read_inner();
        let mut oldest: Option<i64> = None;
        let mut bound = |ts: i64| oldest = Some(oldest.map_or(ts, |o| o.min(ts)));
        for stream in inner.index.streams.values() {
            for b in &stream.blocks {
                bound(b.min_ts);
            }
            for e in [Some(&stream.head), stream.flushing.as_deref()]
                .into_iter()
                .flatten()
            {
                if let Some(&ts) = e.timestamps.iter().min() {
                    bound(ts);
                }
            }
        }
        oldest
    }

    /// Store-wide figures.
    pub fn stats(&self) -> Stats {
        let inner = self.read_inner();
        let mut stats = Stats {
            streams: inner.index.streams.len() as u64,
            head_bytes: inner.head_bytes as u64,
            flushes: self.flushes.load(Ordering::Relaxed),
            flush_errors: self.flush_errors.load(Ordering::Relaxed),
            corrupt_blocks: self.corrupt.load(Ordering::Relaxed),
            partitions_dropped: self.dropped.load(Ordering::Relaxed),
            ..Default::default()
        };
        (
            stats.query_cache_hits,
            stats.query_cache_misses,
            stats.query_cache_bytes,
        ) = self.kept.counts();
        let mut bound = |ts: i64| {
            stats.oldest = Some(stats.oldest.map_or(ts, |o: i64| o.min(ts)));
            stats.newest = Some(stats.newest.map_or(ts, |n: i64| n.max(ts)));
        };
        let (mut entries, mut raw) = (0u64, 0u64);
        // Blocks shared by quiet streams are counted once.
        let mut physical: HashMap<(u32, u32, u64), u32> = HashMap::new();
        for stream in inner.index.streams.values() {
            for b in &stream.blocks {
                physical.insert((b.partition, b.segment, b.offset), b.len);
                entries += u64::from(b.count);
                raw += u64::from(b.raw);
                bound(b.min_ts);
                bound(b.max_ts);
            }
            for e in [Some(&stream.head), stream.flushing.as_deref()]
                .into_iter()
                .flatten()
            {
                entries += e.len() as u64;
                raw += e.data.len() as u64;
                for &ts in &e.timestamps {
                    bound(ts);
                }
            }
        }
        stats.chunks = physical.len() as u64;
        stats.entries = entries;
        stats.raw_bytes = raw;
        stats.stored_bytes = physical.values().map(|&len| u64::from(len)).sum();
        stats
    }
}

#[cfg(test)]
mod tests;
