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

pub mod block;
pub mod labels;
pub mod manifest;
pub mod query;
pub mod read;

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use self::block::{BlockRef, Entries};
use self::labels::{Labels, StreamId};
use self::manifest::{Manifest, ReadReport, Record};
use self::query::{Matcher, Query, QueryError, validate_selector};
use self::read::{BlockParts, QueryIter, Run};

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
    /// Writing failed earlier (e.g. disk full) and memory for unwritten
    /// entries is used up: retry the same batch later.
    #[error(
        "the log store cannot take more entries until it can write to disk again \
         ({head_bytes} bytes waiting; last error: {last_error}); free space in the data directory"
    )]
    Backpressure {
        /// Bytes held in memory.
        head_bytes: usize,
        /// Why flushing failed.
        last_error: String,
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

fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> StoreError {
    let path = path.into();
    move |source| StoreError::Io { path, source }
}

/// One stream's entries in a write: its label set (shared, so a collector
/// hands the same one on batch after batch without copying it) and its
/// entries packed into one buffer.
#[derive(Clone, Debug)]
pub struct StreamEntries {
    labels: Arc<Labels>,
    id: StreamId,
    /// The entries, in the order written.
    pub entries: Entries,
}

impl StreamEntries {
    /// No entries yet, for the stream `labels`.
    pub fn new(labels: impl Into<Arc<Labels>>) -> Self {
        let labels = labels.into();
        Self {
            id: labels.stream_id(),
            labels,
            entries: Entries::default(),
        }
    }

    /// The stream `labels` with `(timestamp ns, line)` entries.
    pub fn with<L: AsRef<[u8]>>(
        labels: impl Into<Arc<Labels>>,
        entries: impl IntoIterator<Item = (i64, L)>,
    ) -> Self {
        let mut stream = Self::new(labels);
        for (ts, line) in entries {
            stream.push(ts, line.as_ref());
        }
        stream
    }

    /// Appends one entry.
    pub fn push(&mut self, timestamp: i64, line: &[u8]) {
        self.entries.push(timestamp, line);
    }

    /// The stream's label set.
    pub fn labels(&self) -> &Arc<Labels> {
        &self.labels
    }

    /// The stream's identity (a hash of its labels, computed once).
    pub fn id(&self) -> StreamId {
        self.id
    }
}

/// A write: entries of many streams plus the checkpoints they advance.
#[derive(Clone, Debug, Default)]
pub struct WriteBatch {
    /// The entries, by stream.
    pub streams: Vec<StreamEntries>,
    /// Checkpoints to set (`Some`) or forget (`None`), opaque to the store.
    pub checkpoints: Vec<(String, Option<Vec<u8>>)>,
}

/// What opening the store found and repaired.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Damage found in the commit log.
    pub manifest: ReadReport,
    /// Bytes cut from segment ends that no commit covered (torn flushes).
    pub segment_bytes_truncated: u64,
    /// Blocks whose bytes are missing (file cut short or deleted).
    pub blocks_missing: u64,
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
}

struct Stream {
    labels: Arc<Labels>,
    blocks: Vec<BlockRef>,
    head: Entries,
    /// Entries being flushed: still queryable until their blocks are.
    flushing: Option<Arc<Entries>>,
    /// Not yet named in the commit log.
    unlogged: bool,
}

#[derive(Default)]
struct Inner {
    streams: HashMap<StreamId, Stream>,
    postings: BTreeMap<String, BTreeMap<String, BTreeSet<StreamId>>>,
    /// Checkpoints written but not yet durable.
    pending: BTreeMap<String, Option<Vec<u8>>>,
    /// Durable checkpoints.
    durable: BTreeMap<String, Vec<u8>>,
    head_bytes: usize,
    last_flush_error: Option<String>,
}

impl Inner {
    fn add_stream(&mut self, id: StreamId, labels: &Labels, unlogged: bool) -> &mut Stream {
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

    fn remove_stream(&mut self, id: StreamId) {
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
    fn select(&self, selector: &[Matcher]) -> Vec<StreamId> {
        let mut candidates: Option<BTreeSet<StreamId>> = None;
        for m in selector {
            if m.op == query::MatchOp::Equal && !m.value.is_empty() {
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
    /// Whether the stream has entries in `[start, end)` (by block bounds).
    fn overlaps(&self, start: i64, end: i64) -> bool {
        let in_range = |ts: &i64| *ts >= start && *ts < end;
        self.blocks
            .iter()
            .any(|b| b.max_ts >= start && b.min_ts < end)
            || self.head.timestamps.iter().any(in_range)
            || self
                .flushing
                .as_ref()
                .is_some_and(|f| f.timestamps.iter().any(in_range))
    }
}

struct OpenSegment {
    id: u32,
    file: File,
    len: u64,
}

struct Writer {
    manifest: Manifest,
    segments: HashMap<u32, OpenSegment>,
    next_segment: u32,
    /// Test seam: fail writes with this error kind.
    fault: Option<io::ErrorKind>,
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
}

/// Entries of one write, as live tails receive them.
#[derive(Debug)]
pub struct Appended {
    /// Per stream: its labels and its new entries.
    pub streams: Vec<(Arc<Labels>, Entries)>,
}

/// How many writes a live tail may fall behind before it is dropped.
const TAIL_BUFFER: usize = 1024;

/// What `index/stats` reports for a selector and range.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
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

const NS_PER_HOUR: i64 = 3_600_000_000_000;

fn partition_of(ts: i64) -> u32 {
    (ts.max(0) / NS_PER_HOUR).min(u32::MAX as i64) as u32
}

/// The path of a segment file.
pub(crate) fn segment_path(partitions: &Path, partition: u32, segment: u32) -> PathBuf {
    partitions
        .join(partition.to_string())
        .join(format!("{segment:08}.seg"))
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
        let (mut manifest, records, manifest_report) =
            Manifest::open(dir).map_err(io_err(dir.join("manifest.log")))?;
        let mut report = RecoveryReport {
            manifest: manifest_report,
            ..Default::default()
        };
        let mut inner = Inner::default();
        let mut blocks: Vec<BlockRef> = Vec::new();
        let mut dropped: BTreeSet<u32> = BTreeSet::new();
        let mut next_segment = 1;
        for record in records {
            match record {
                Record::Snapshot {
                    streams,
                    blocks: b,
                    checkpoints,
                    next_segment: n,
                } => {
                    inner = Inner::default();
                    for (id, labels) in &streams {
                        inner.add_stream(*id, labels, false);
                    }
                    blocks = b;
                    inner.durable = checkpoints.into_iter().collect();
                    next_segment = next_segment.max(n);
                }
                Record::Commit {
                    streams,
                    blocks: b,
                    checkpoints,
                } => {
                    for (id, labels) in &streams {
                        inner.add_stream(*id, labels, false);
                    }
                    blocks.extend(b);
                    for (key, value) in checkpoints {
                        match value {
                            Some(v) => inner.durable.insert(key, v),
                            None => inner.durable.remove(&key),
                        };
                    }
                }
                Record::Dropped { partitions: p } => dropped.extend(p),
            }
        }
        blocks.retain(|b| !dropped.contains(&b.partition));
        // Cut what no commit covers; forget blocks whose bytes are gone.
        let mut committed: HashMap<(u32, u32), u64> = HashMap::new();
        for b in &blocks {
            let end = committed.entry((b.partition, b.segment)).or_default();
            *end = (*end).max(b.offset + u64::from(b.len));
            next_segment = next_segment.max(b.segment + 1);
        }
        let mut sizes: HashMap<(u32, u32), u64> = HashMap::new();
        for entry in fs::read_dir(&partitions)
            .map_err(io_err(&partitions))?
            .flatten()
        {
            let Some(partition) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            for seg in fs::read_dir(entry.path())
                .map_err(io_err(entry.path()))?
                .flatten()
            {
                let name = seg.file_name();
                let Some(segment) = name
                    .to_str()
                    .and_then(|s| s.strip_suffix(".seg"))
                    .and_then(|s| s.parse::<u32>().ok())
                else {
                    continue;
                };
                next_segment = next_segment.max(segment + 1);
                let len = seg.metadata().map(|m| m.len()).unwrap_or(0);
                let keep = committed.get(&(partition, segment)).copied().unwrap_or(0);
                if len > keep {
                    let path = seg.path();
                    OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .and_then(|f| f.set_len(keep).and_then(|()| f.sync_all()))
                        .map_err(io_err(&path))?;
                    report.segment_bytes_truncated += len - keep;
                }
                sizes.insert((partition, segment), len.min(keep));
            }
        }
        for b in blocks {
            let size = sizes.get(&(b.partition, b.segment)).copied().unwrap_or(0);
            if b.offset + u64::from(b.len) > size {
                report.blocks_missing += 1;
                continue;
            }
            if let Some(stream) = inner.streams.get_mut(&b.stream) {
                stream.blocks.push(b);
            }
        }
        for stream in inner.streams.values_mut() {
            stream.blocks.sort_by_key(|b| (b.min_ts, b.max_ts));
        }
        let empty: Vec<StreamId> = inner
            .streams
            .iter()
            .filter(|(_, s)| s.blocks.is_empty())
            .map(|(id, _)| *id)
            .collect();
        for id in empty {
            inner.remove_stream(id);
        }
        if report != RecoveryReport::default() {
            tracing::warn!(
                ?report,
                "The log store repaired damage left by a crash or a disk fault."
            );
        }
        let db = Self {
            dir: dir.to_owned(),
            partitions,
            config,
            inner: RwLock::new(inner),
            writer: Mutex::new(Writer {
                manifest: {
                    manifest.since_snapshot = usize::MAX;
                    manifest
                },
                segments: HashMap::new(),
                next_segment,
                fault: None,
            }),
            flushes: AtomicU64::new(0),
            flush_errors: AtomicU64::new(0),
            corrupt: Arc::new(AtomicU64::new(0)),
            dropped: AtomicU64::new(0),
            _lock: lock,
            appended: tokio::sync::broadcast::channel(TAIL_BUFFER).0,
        };
        // Start from one clean snapshot: replays stay short, damage is gone.
        db.snapshot(&mut db.lock_writer())?;
        Ok((db, report))
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
    /// large this flushes before returning. Fails only with
    /// [`StoreError::Backpressure`], and then nothing of the batch was taken.
    pub fn write(&self, batch: &WriteBatch) -> Result<(), StoreError> {
        let flush_now = {
            let mut inner = self.write_inner();
            if inner.head_bytes >= self.config.max_head_bytes {
                return Err(StoreError::Backpressure {
                    head_bytes: inner.head_bytes,
                    last_error: inner.last_flush_error.clone().unwrap_or_default(),
                });
            }
            let mut big_head = false;
            for stream in &batch.streams {
                if stream.entries.is_empty() {
                    continue;
                }
                let s = inner.add_stream(stream.id, &stream.labels, true);
                s.head.extend(&stream.entries);
                big_head |= s.head.data.len() >= self.config.block_bytes;
                inner.head_bytes += stream.entries.data.len() + 12 * stream.entries.len();
            }
            for (key, value) in &batch.checkpoints {
                inner.pending.insert(key.clone(), value.clone());
            }
            if self.appended.receiver_count() > 0 {
                let streams = batch
                    .streams
                    .iter()
                    .filter(|s| !s.entries.is_empty())
                    .map(|s| (s.labels.clone(), s.entries.clone()))
                    .collect();
                // Sent under the lock so tails see writes in order.
                let _ = self.appended.send(Arc::new(Appended { streams }));
            }
            // A forgotten checkpoint means a source is finished (its file
            // rotated away or deleted): its last lines cannot be re-read after
            // a crash, so they are made durable now.
            let source_done = batch.checkpoints.iter().any(|(_, v)| v.is_none());
            big_head || source_done || inner.head_bytes >= self.config.flush_bytes
        };
        if flush_now {
            // A failed flush keeps the entries in memory and is retried; the
            // batch itself was taken.
            let _ = self.flush();
        }
        Ok(())
    }

    /// Makes everything written so far durable: heads become blocks, then
    /// one commit record names them with the pending checkpoints.
    pub fn flush(&self) -> Result<(), StoreError> {
        let mut writer = self.lock_writer();
        // Take the heads; they stay queryable as `flushing`.
        let (taken, checkpoints, new_streams) = {
            let mut inner = self.write_inner();
            let mut taken = Vec::new();
            let mut new_streams = Vec::new();
            for (id, stream) in inner.streams.iter_mut() {
                if stream.head.is_empty() {
                    continue;
                }
                let head = Arc::new(std::mem::take(&mut stream.head));
                stream.flushing = Some(head.clone());
                taken.push((*id, head));
                if stream.unlogged {
                    new_streams.push((*id, (*stream.labels).clone()));
                }
            }
            let checkpoints: Vec<(String, Option<Vec<u8>>)> =
                std::mem::take(&mut inner.pending).into_iter().collect();
            (taken, checkpoints, new_streams)
        };
        if taken.is_empty() && checkpoints.is_empty() {
            return Ok(());
        }
        let result = self.write_blocks(&mut writer, &taken).and_then(|blocks| {
            let record = Record::Commit {
                streams: new_streams.clone(),
                blocks: blocks.clone(),
                checkpoints: checkpoints.clone(),
            };
            if let Some(kind) = writer.fault {
                return Err(io_err(self.dir.join("manifest.log"))(io::Error::from(kind)));
            }
            writer
                .manifest
                .append(&record)
                .map_err(io_err(self.dir.join("manifest.log")))?;
            Ok(blocks)
        });
        let mut inner = self.write_inner();
        match result {
            Ok(blocks) => {
                for block in blocks {
                    if let Some(stream) = inner.streams.get_mut(&block.stream) {
                        let at = stream.blocks.partition_point(|b| {
                            (b.min_ts, b.max_ts) <= (block.min_ts, block.max_ts)
                        });
                        stream.blocks.insert(at, block);
                    }
                }
                for (id, head) in &taken {
                    if let Some(stream) = inner.streams.get_mut(id) {
                        stream.flushing = None;
                        stream.unlogged = false;
                    }
                    inner.head_bytes = inner
                        .head_bytes
                        .saturating_sub(head.data.len() + 12 * head.len());
                }
                for (key, value) in checkpoints {
                    match value {
                        Some(v) => inner.durable.insert(key, v),
                        None => inner.durable.remove(&key),
                    };
                }
                inner.last_flush_error = None;
                drop(inner);
                self.flushes.fetch_add(1, Ordering::Relaxed);
                if writer.manifest.since_snapshot >= 4096 {
                    self.snapshot(&mut writer)?;
                }
                Ok(())
            }
            Err(error) => {
                // Put everything back: the heads (before anything written
                // since) and the checkpoints (unless overwritten since).
                for (id, head) in taken {
                    if let Some(stream) = inner.streams.get_mut(&id) {
                        let mut restored = (*head).clone();
                        let newer = std::mem::take(&mut stream.head);
                        for i in 0..newer.len() {
                            restored.push(newer.timestamps[i], newer.line(i));
                        }
                        stream.head = restored;
                        stream.flushing = None;
                    }
                }
                for (key, value) in checkpoints {
                    inner.pending.entry(key).or_insert(value);
                }
                inner.last_flush_error = Some(error.to_string());
                drop(inner);
                self.rollback_segments(&mut writer);
                self.flush_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, "Flushing the log store failed; entries stay in memory and are retried.");
                Err(error)
            }
        }
    }

    /// Compresses the taken heads and appends them to segments, fsynced.
    /// A head is cut into runs of one partition hour and at most
    /// `block_bytes`; large runs get a block each, small ones (quiet
    /// streams) are packed together.
    fn write_blocks(
        &self,
        writer: &mut Writer,
        taken: &[(StreamId, Arc<Entries>)],
    ) -> Result<Vec<BlockRef>, StoreError> {
        type Run<'e> = (StreamId, Cow<'e, Entries>);
        // Heads already in order (the usual case) are used as they are.
        let sorted: Vec<Run<'_>> = taken
            .iter()
            .map(|(id, head)| {
                let entries = if head.timestamps.is_sorted() {
                    Cow::Borrowed(&**head)
                } else {
                    Cow::Owned(head.sorted())
                };
                (*id, entries)
            })
            .collect();
        let mut groups: Vec<(u32, Vec<Run<'_>>)> = Vec::new();
        let mut small: BTreeMap<u32, Vec<Run<'_>>> = BTreeMap::new();
        for (id, head) in &sorted {
            for (hour, run) in self.runs(head) {
                if run.data.len() >= self.config.block_bytes / 8 {
                    groups.push((hour, vec![(*id, run)]));
                } else {
                    small.entry(hour).or_default().push((*id, run));
                }
            }
        }
        for (hour, runs) in small {
            let mut group: Vec<Run<'_>> = Vec::new();
            let mut bytes = 0;
            for (id, run) in runs {
                if bytes + run.data.len() > self.config.block_bytes && !group.is_empty() {
                    groups.push((hour, std::mem::take(&mut group)));
                    bytes = 0;
                }
                bytes += run.data.len();
                group.push((id, run));
            }
            if !group.is_empty() {
                groups.push((hour, group));
            }
        }
        let mut refs = Vec::new();
        let mut touched: BTreeSet<u32> = BTreeSet::new();
        for (hour, group) in groups {
            let parts: Vec<(StreamId, &Entries)> =
                group.iter().map(|(id, e)| (*id, &**e)).collect();
            let (bytes, block_refs) = block::encode(&parts, self.config.compression_level)
                .map_err(io_err(&self.partitions))?;
            if let Some(kind) = writer.fault {
                return Err(io_err(&self.partitions)(io::Error::from(kind)));
            }
            let segment = self.segment_for(writer, hour)?;
            let path = segment_path(&self.partitions, hour, segment.id);
            segment.file.write_all(&bytes).map_err(io_err(&path))?;
            for mut r in block_refs {
                r.partition = hour;
                r.segment = segment.id;
                r.offset = segment.len;
                refs.push(r);
            }
            segment.len += bytes.len() as u64;
            touched.insert(hour);
        }
        for hour in touched {
            let segment = &writer.segments[&hour];
            segment.file.sync_data().map_err(io_err(segment_path(
                &self.partitions,
                hour,
                segment.id,
            )))?;
        }
        Ok(refs)
    }

    /// Cuts sorted entries into runs of one partition hour and at most
    /// `block_bytes` of lines.
    fn runs<'e>(&self, sorted: &'e Entries) -> Vec<(u32, Cow<'e, Entries>)> {
        // The usual case: one hour, one block's worth: no copy.
        if let (Some(first), Some(last)) = (sorted.timestamps.first(), sorted.timestamps.last())
            && partition_of(*first) == partition_of(*last)
            && sorted.data.len() <= self.config.block_bytes
        {
            return vec![(partition_of(*first), Cow::Borrowed(sorted))];
        }
        let mut out = Vec::new();
        let mut start = 0;
        while start < sorted.len() {
            let hour = partition_of(sorted.timestamps[start]);
            let base = if start == 0 {
                0
            } else {
                sorted.ends[start - 1] as usize
            };
            let mut end = start;
            while end < sorted.len()
                && partition_of(sorted.timestamps[end]) == hour
                && (end == start || sorted.ends[end] as usize - base <= self.config.block_bytes)
            {
                end += 1;
            }
            let mut run = Entries::default();
            for i in start..end {
                run.push(sorted.timestamps[i], sorted.line(i));
            }
            out.push((hour, Cow::Owned(run)));
            start = end;
        }
        out
    }

    /// The open segment of partition `hour`, creating or rolling it over.
    fn segment_for<'w>(
        &self,
        writer: &'w mut Writer,
        hour: u32,
    ) -> Result<&'w mut OpenSegment, StoreError> {
        let full = writer
            .segments
            .get(&hour)
            .is_some_and(|s| s.len >= self.config.segment_bytes);
        if full || !writer.segments.contains_key(&hour) {
            let id = writer.next_segment;
            writer.next_segment += 1;
            let dir = self.partitions.join(hour.to_string());
            fs::create_dir_all(&dir).map_err(io_err(&dir))?;
            let path = segment_path(&self.partitions, hour, id);
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(io_err(&path))?;
            File::open(&dir)
                .and_then(|d| d.sync_all())
                .map_err(io_err(&dir))?;
            writer
                .segments
                .insert(hour, OpenSegment { id, file, len: 0 });
        }
        Ok(writer.segments.get_mut(&hour).expect("just ensured"))
    }

    /// After a failed flush, cuts segments back to what commits cover.
    fn rollback_segments(&self, writer: &mut Writer) {
        let inner = self.read_inner();
        for (hour, segment) in writer.segments.iter_mut() {
            let committed = inner
                .streams
                .values()
                .flat_map(|s| s.blocks.iter())
                .filter(|b| b.partition == *hour && b.segment == segment.id)
                .map(|b| b.offset + u64::from(b.len))
                .max()
                .unwrap_or(0);
            if segment.file.set_len(committed).is_ok() {
                segment.len = committed;
            }
        }
    }

    /// Rewrites the commit log as one snapshot of the durable state.
    fn snapshot(&self, writer: &mut Writer) -> Result<(), StoreError> {
        let record = {
            let inner = self.read_inner();
            Record::Snapshot {
                streams: inner
                    .streams
                    .iter()
                    .filter(|(_, s)| !s.unlogged)
                    .map(|(id, s)| (*id, (*s.labels).clone()))
                    .collect(),
                blocks: inner
                    .streams
                    .values()
                    .flat_map(|s| s.blocks.iter().copied())
                    .collect(),
                checkpoints: inner
                    .durable
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                next_segment: writer.next_segment,
            }
        };
        writer
            .manifest
            .rewrite(&record)
            .map_err(io_err(self.dir.join("manifest.log")))
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
        let mut iter = QueryIter::new(query, self.partitions.clone(), self.corrupt.clone());
        let inner = self.read_inner();
        // Blocks are grouped by where they are: a block shared by several
        // selected streams is read once.
        let mut blocks: HashMap<(u32, u32, u64), BlockParts> = HashMap::new();
        for id in inner.select(&selector) {
            let stream = &inner.streams[&id];
            for block in &stream.blocks {
                if block.max_ts >= start && block.min_ts < end {
                    blocks
                        .entry((block.partition, block.segment, block.offset))
                        .or_default()
                        .push((stream.labels.clone(), *block));
                }
            }
            // In-memory entries: the head, and a head being flushed.
            for entries in [stream.flushing.as_deref(), Some(&stream.head)]
                .into_iter()
                .flatten()
            {
                if !entries.is_empty() {
                    let run = iter.loaded(stream.labels.clone(), Arc::new(entries.sorted()));
                    iter.add(run);
                }
            }
        }
        for (_, parts) in blocks {
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

    /// Streams, blocks, entries and bytes for `selector` in `[start, end)`,
    /// from the index alone (blocks count whole, as in Loki).
    pub fn index_stats(
        &self,
        selector: &[Matcher],
        start: i64,
        end: i64,
    ) -> Result<IndexStats, StoreError> {
        validate_selector(selector)?;
        let inner = self.read_inner();
        let mut stats = IndexStats::default();
        let mut physical = BTreeSet::new();
        for id in inner.select(selector) {
            let stream = &inner.streams[&id];
            if !stream.overlaps(start, end) {
                continue;
            }
            stats.streams += 1;
            for b in stream
                .blocks
                .iter()
                .filter(|b| b.max_ts >= start && b.min_ts < end)
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
                    if e.timestamps[i] >= start && e.timestamps[i] < end {
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
            .postings
            .iter()
            .map(|(name, values)| (name.clone(), values.len()))
            .collect()
    }

    /// Label names of streams with entries in `[start, end)`.
    pub fn label_names(&self, start: i64, end: i64) -> Vec<String> {
        let inner = self.read_inner();
        let mut names = BTreeSet::new();
        for stream in inner.streams.values() {
            if stream.overlaps(start, end) {
                names.extend(stream.labels.iter().map(|(n, _)| n.to_owned()));
            }
        }
        names.into_iter().collect()
    }

    /// Values of label `name`, optionally only of streams matching
    /// `selector`, with entries in `[start, end)`.
    pub fn label_values(
        &self,
        name: &str,
        selector: Option<&[Matcher]>,
        start: i64,
        end: i64,
    ) -> Result<Vec<String>, StoreError> {
        if let Some(selector) = selector {
            validate_selector(selector)?;
        }
        let inner = self.read_inner();
        let mut values = BTreeSet::new();
        let ids = match selector {
            Some(selector) => inner.select(selector),
            None => inner.streams.keys().copied().collect(),
        };
        for id in ids {
            let stream = &inner.streams[&id];
            if let Some(v) = stream.labels.get(name)
                && stream.overlaps(start, end)
            {
                values.insert(v.to_owned());
            }
        }
        Ok(values.into_iter().collect())
    }

    /// Label sets of streams matching `selector` with entries in `[start, end)`.
    pub fn series(
        &self,
        selector: &[Matcher],
        start: i64,
        end: i64,
    ) -> Result<Vec<Arc<Labels>>, StoreError> {
        validate_selector(selector)?;
        let inner = self.read_inner();
        let mut out: Vec<Arc<Labels>> = inner
            .select(selector)
            .into_iter()
            .map(|id| &inner.streams[&id])
            .filter(|s| s.overlaps(start, end))
            .map(|s| s.labels.clone())
            .collect();
        out.sort();
        Ok(out)
    }

    /// Store-wide figures.
    pub fn stats(&self) -> Stats {
        let inner = self.read_inner();
        let mut stats = Stats {
            streams: inner.streams.len() as u64,
            head_bytes: inner.head_bytes as u64,
            flushes: self.flushes.load(Ordering::Relaxed),
            flush_errors: self.flush_errors.load(Ordering::Relaxed),
            corrupt_blocks: self.corrupt.load(Ordering::Relaxed),
            partitions_dropped: self.dropped.load(Ordering::Relaxed),
            ..Default::default()
        };
        let mut bound = |ts: i64| {
            stats.oldest = Some(stats.oldest.map_or(ts, |o: i64| o.min(ts)));
            stats.newest = Some(stats.newest.map_or(ts, |n: i64| n.max(ts)));
        };
        let (mut entries, mut raw) = (0u64, 0u64);
        // Blocks shared by quiet streams are counted once.
        let mut physical: HashMap<(u32, u32, u64), u32> = HashMap::new();
        for stream in inner.streams.values() {
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

    /// Deletes whole partitions older than the retention period, then the
    /// oldest while the store is over its size budget. Returns how many.
    pub fn enforce_retention(&self) -> Result<usize, StoreError> {
        self.enforce_retention_at(now_ns())
    }

    /// [`enforce_retention`](Self::enforce_retention) as if the time were `now` (ns).
    pub fn enforce_retention_at(&self, now: i64) -> Result<usize, StoreError> {
        let mut writer = self.lock_writer();
        let mut partitions: Vec<(u32, u64)> = Vec::new();
        for entry in fs::read_dir(&self.partitions)
            .map_err(io_err(&self.partitions))?
            .flatten()
        {
            if let Some(p) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            {
                let size: u64 = fs::read_dir(entry.path())
                    .map(|d| {
                        d.flatten()
                            .filter_map(|f| f.metadata().ok())
                            .map(|m| m.len())
                            .sum()
                    })
                    .unwrap_or(0);
                partitions.push((p, size));
            }
        }
        partitions.sort();
        let horizon = now.saturating_sub(self.config.retention_period.as_nanos() as i64);
        let mut total: u64 = partitions.iter().map(|(_, s)| s).sum();
        let mut drop = Vec::new();
        for (p, size) in &partitions {
            // A partition holds entries up to the end of its hour.
            let ends = (i64::from(*p) + 1).saturating_mul(NS_PER_HOUR);
            if ends <= horizon || total > self.config.retention_size {
                drop.push(*p);
                total -= size;
            }
        }
        if drop.is_empty() {
            return Ok(0);
        }
        // Commit first: after a crash the partitions are gone from the index
        // even if their files are not yet.
        writer
            .manifest
            .append(&Record::Dropped {
                partitions: drop.clone(),
            })
            .map_err(io_err(self.dir.join("manifest.log")))?;
        for p in &drop {
            writer.segments.remove(p);
            let dir = self.partitions.join(p.to_string());
            fs::remove_dir_all(&dir).map_err(io_err(&dir))?;
        }
        let mut inner = self.write_inner();
        let gone: BTreeSet<u32> = drop.iter().copied().collect();
        let mut empty = Vec::new();
        for (id, stream) in inner.streams.iter_mut() {
            stream.blocks.retain(|b| !gone.contains(&b.partition));
            if stream.blocks.is_empty() && stream.head.is_empty() && stream.flushing.is_none() {
                empty.push(*id);
            }
        }
        for id in empty {
            inner.remove_stream(id);
        }
        self.dropped.fetch_add(drop.len() as u64, Ordering::Relaxed);
        tracing::info!(partitions = ?drop, "Retention deleted old partitions.");
        Ok(drop.len())
    }

    /// Test seam: make every write to disk fail with `kind` (`None` heals).
    #[doc(hidden)]
    pub fn inject_write_fault(&self, kind: Option<io::ErrorKind>) {
        self.lock_writer().fault = kind;
    }
}

#[cfg(test)]
mod tests;
