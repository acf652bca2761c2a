//! Moves collected lines into the store and keeps the store flushed.
//!
//! The collector hands over a batch of lines with the checkpoints they
//! advance; both go to the store in one write, so they become durable
//! together. A [`Flusher`] thread makes writes durable within the flush
//! interval, and sleeps while nothing is written.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::log_collector::directory::batch::Batch;
use crate::log_collector::directory::{CollectorError, CollectorStats, DirectoryCollector};
use crate::log_collector::kubernetes::KubernetesCollector;
use crate::log_database::labels::Labels;
use crate::log_database::{Database, StoreError, StreamEntries, WriteBatch};

/// What the collector is doing, refreshed by its thread for `/status` and
/// `/metrics`.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Status {
    /// The collector's counters.
    #[serde(skip)]
    pub collector: CollectorStats,
    /// Files open for reading.
    pub files_watched: u64,
    /// Bytes written to the files but not yet read.
    pub lag_bytes: u64,
    /// Lines per second over the last refresh interval.
    pub lines_per_second: f64,
    /// Bytes per second over the last refresh interval.
    pub bytes_per_second: f64,
    /// When lines and checkpoints were last handed to the store (ns).
    pub last_checkpoint: Option<i64>,
}

/// Keeps a shared [`Status`] fresh from the collector's thread, at most once
/// a second (the lag costs an `fstat` per file).
pub struct StatusUpdater {
    shared: Arc<std::sync::RwLock<Status>>,
    last: Option<(Instant, u64, u64)>,
}

impl StatusUpdater {
    /// Updates `shared`.
    pub fn new(shared: Arc<std::sync::RwLock<Status>>) -> Self {
        Self { shared, last: None }
    }

    /// Records a batch handed to the store; refreshes the figures if a
    /// second has passed.
    pub fn batch_written(&mut self, collector: &DirectoryCollector) {
        let now = Instant::now();
        let stats = collector.stats();
        let mut status = self.shared.write().unwrap_or_else(|e| e.into_inner());
        status.last_checkpoint = Some(crate::log_database::now_ns());
        let due = self
            .last
            .is_none_or(|(t, _, _)| now.duration_since(t) >= Duration::from_secs(1));
        if due {
            if let Some((t, lines, bytes)) = self.last {
                let secs = now.duration_since(t).as_secs_f64();
                status.lines_per_second = (stats.lines - lines) as f64 / secs;
                status.bytes_per_second = (stats.bytes - bytes) as f64 / secs;
            }
            status.lag_bytes = collector.lag_bytes();
            self.last = Some((now, stats.lines, stats.bytes));
        }
        status.files_watched = stats.files_open;
        status.collector = stats;
    }
}

/// A collector as the ingest loop sees it: store writes, one after another.
pub trait Collect: Send {
    /// Fills `out` with the next entries and checkpoints; blocks until there
    /// is something, or a waker fires (then `out` may be empty).
    fn next(&mut self, out: &mut WriteBatch) -> Result<(), CollectorError>;
    /// The directory collector underneath (for status figures).
    fn directory(&self) -> &DirectoryCollector;
}

/// The directory collector, labelling each file's lines with its `path`.
pub struct DirectorySource {
    collector: DirectoryCollector,
    batch: Batch,
}

impl DirectorySource {
    /// Wraps a directory collector.
    pub fn new(collector: DirectoryCollector) -> Self {
        Self {
            collector,
            batch: Batch::default(),
        }
    }
}

impl Collect for DirectorySource {
    fn next(&mut self, out: &mut WriteBatch) -> Result<(), CollectorError> {
        self.collector.next_batch(&mut self.batch, None)?;
        *out = directory_batch(&self.batch, crate::log_database::now_ns());
        Ok(())
    }

    fn directory(&self) -> &DirectoryCollector {
        &self.collector
    }
}

impl Collect for KubernetesCollector {
    fn next(&mut self, out: &mut WriteBatch) -> Result<(), CollectorError> {
        self.next_batch(out, None)
    }

    fn directory(&self) -> &DirectoryCollector {
        KubernetesCollector::directory(self)
    }
}

/// Moves batches from `source` into `db` until `stop` is set or the
/// collector fails; notifies `flusher` of every write and keeps `status`.
pub fn run(
    source: &mut dyn Collect,
    db: &Database,
    flusher: &Flusher,
    status: &mut StatusUpdater,
    stop: &AtomicBool,
) -> Result<(), CollectorError> {
    let mut write = WriteBatch::default();
    while !stop.load(Ordering::Relaxed) {
        source.next(&mut write)?;
        if write.streams.is_empty() && write.checkpoints.is_empty() {
            continue;
        }
        match write_patiently(db, &write, stop) {
            Ok(true) => {}
            Ok(false) => break,
            Err(error) => {
                // Only backpressure is retried; anything else is a bug in
                // the caller's batch, which the store already rejected whole.
                tracing::error!(%error, "The log store refused a batch.");
                break;
            }
        }
        flusher.notify();
        status.batch_written(source.directory());
    }
    Ok(())
}

/// How often retention is checked at most (after a flush).
const RETENTION_EVERY: Duration = Duration::from_secs(60);

/// The store write for a directory-collector batch: one stream per file,
/// labelled `path`, timestamped `timestamp` (the read time, in ns).
pub fn directory_batch(batch: &Batch, timestamp: i64) -> WriteBatch {
    let mut streams: Vec<StreamEntries> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for line in batch.lines() {
        let i = *index.entry(line.source).or_insert_with(|| {
            streams.push(StreamEntries::new(Labels::new([(
                "path",
                line.source.to_string(),
            )])));
            streams.len() - 1
        });
        streams[i].push(timestamp, line.bytes);
    }
    let checkpoints = batch
        .checkpoints
        .iter()
        .map(|c| (c.key.store_key(), Some(c.to_bytes())))
        .chain(batch.forgotten.iter().map(|k| (k.store_key(), None)))
        .collect();
    WriteBatch {
        streams,
        checkpoints,
    }
}

/// Writes `batch`, waiting while the store pushes back (its disk is full and
/// its memory for unwritten entries used up). Returns `false` if `stop` was
/// set before the batch could be written; the collector keeps its place, so
/// nothing is lost either way.
pub fn write_patiently(
    db: &Database,
    batch: &WriteBatch,
    stop: &AtomicBool,
) -> Result<bool, StoreError> {
    let mut warned = false;
    loop {
        match db.write(batch) {
            Ok(()) => return Ok(true),
            Err(StoreError::Backpressure { .. }) if stop.load(Ordering::Relaxed) => {
                return Ok(false);
            }
            Err(error @ StoreError::Backpressure { .. }) => {
                if !warned {
                    tracing::warn!(%error, "Waiting for the log store to accept writes again.");
                    warned = true;
                }
                // The store retries its flush meanwhile (see Flusher).
                let _ = db.flush();
                std::thread::sleep(Duration::from_secs(1));
            }
            Err(error) => return Err(error),
        }
    }
}

#[derive(Default)]
struct State {
    dirty: bool,
    stop: bool,
}

/// A thread that flushes the store within `interval` of a write.
pub struct Flusher {
    shared: Arc<(Mutex<State>, Condvar)>,
    thread: Option<JoinHandle<()>>,
    db: Arc<Database>,
}

impl Flusher {
    /// Starts the thread.
    pub fn start(db: Arc<Database>, interval: Duration) -> std::io::Result<Self> {
        let shared = Arc::new((Mutex::new(State::default()), Condvar::new()));
        let thread = {
            let (shared, db) = (shared.clone(), db.clone());
            std::thread::Builder::new()
                .name("flusher".into())
                .spawn(move || flush_loop(&shared, &db, interval))?
        };
        Ok(Self {
            shared,
            thread: Some(thread),
            db,
        })
    }

    /// Says something was written.
    pub fn notify(&self) {
        let (state, ready) = &*self.shared;
        state.lock().unwrap_or_else(|e| e.into_inner()).dirty = true;
        ready.notify_one();
    }

    /// Stops the thread and flushes what is left.
    pub fn stop(mut self) -> Result<(), StoreError> {
        {
            let (state, ready) = &*self.shared;
            state.lock().unwrap_or_else(|e| e.into_inner()).stop = true;
            ready.notify_one();
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.db.flush()
    }
}

fn flush_loop(shared: &(Mutex<State>, Condvar), db: &Database, interval: Duration) {
    let (state, ready) = shared;
    let mut last_retention: Option<Instant> = None;
    loop {
        {
            let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
            // Sleep until something is written: an idle node does not wake.
            while !s.dirty && !s.stop {
                s = ready.wait(s).unwrap_or_else(|e| e.into_inner());
            }
            if s.stop {
                return;
            }
            // Gather writes for one interval, then flush them together.
            let deadline = Instant::now() + interval;
            while !s.stop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                s = ready
                    .wait_timeout(s, left)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            if s.stop {
                return;
            }
            s.dirty = false;
        }
        if db.flush().is_err() {
            // Entries stay in memory; try again after another interval.
            state.lock().unwrap_or_else(|e| e.into_inner()).dirty = true;
            continue;
        }
        if last_retention.is_none_or(|t| t.elapsed() >= RETENTION_EVERY) {
            last_retention = Some(Instant::now());
            if let Err(error) = db.enforce_retention() {
                tracing::warn!(%error, "Retention failed; it is retried after the next flush.");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log_collector::checkpoint::CheckpointSet;
    use crate::log_collector::directory::{DirectoryCollector, DirectoryConfig};
    use crate::log_database::query::{Matcher, Query};
    use crate::log_database::{Config, now_ns};
    use crate::watcher::inotify::InotifyWatcher;

    /// The binary's loop in miniature: collect, write, flush; restart from
    /// the store's checkpoints and find every line exactly once.
    #[test]
    fn lines_and_checkpoints_reach_the_store_together() {
        let dir = tempfile::tempdir().unwrap();
        let (root, data) = (dir.path().join("logs"), dir.path().join("data"));
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("a.log"), "one\ntwo\n").unwrap();
        let path = root.join("a.log").to_string_lossy().into_owned();
        let run = |extra: &str| {
            let (db, _) = Database::open(&data, Config::default()).unwrap();
            let checkpoints = CheckpointSet::from_store(&db.checkpoints());
            let watcher = Box::new(InotifyWatcher::new().unwrap());
            let mut collector =
                DirectoryCollector::new(DirectoryConfig::new(&root), watcher, &checkpoints)
                    .unwrap();
            if !extra.is_empty() {
                std::fs::OpenOptions::new()
                    .append(true)
                    .open(root.join("a.log"))
                    .unwrap()
                    .write_all(extra.as_bytes())
                    .unwrap();
            }
            let mut batch = Batch::default();
            loop {
                collector
                    .next_batch(&mut batch, Some(Duration::from_millis(200)))
                    .unwrap();
                if batch.is_idle() {
                    break;
                }
                assert!(
                    write_patiently(
                        &db,
                        &directory_batch(&batch, now_ns()),
                        &AtomicBool::new(false)
                    )
                    .unwrap()
                );
            }
            db.flush().unwrap();
            let q = Query::new(vec![Matcher::equal("path", &path)]);
            db.query(q)
                .unwrap()
                .map(|e| String::from_utf8(e.line).unwrap())
                .collect::<Vec<_>>()
        };
        use std::io::Write;
        assert_eq!(run(""), ["one", "two"]);
        assert_eq!(run("three\n"), ["one", "two", "three"]);
    }

    #[test]
    fn the_flusher_makes_writes_durable_and_stops_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Database::open(dir.path(), Config::default()).unwrap().0);
        let flusher = Flusher::start(db.clone(), Duration::from_millis(20)).unwrap();
        let batch = WriteBatch {
            // Now: an old timestamp would fall to retention at once.
            streams: vec![StreamEntries::with(
                Labels::new([("path", "x")]),
                [(now_ns(), b"line")],
            )],
            checkpoints: vec![("k".into(), Some(b"v".to_vec()))],
        };
        db.write(&batch).unwrap();
        flusher.notify();
        let deadline = Instant::now() + Duration::from_secs(5);
        while db.checkpoints().is_empty() {
            assert!(Instant::now() < deadline, "never flushed");
            std::thread::sleep(Duration::from_millis(5));
        }
        flusher.stop().unwrap();
        assert_eq!(db.stats().chunks, 1);
    }
}
