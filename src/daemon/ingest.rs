//! The collector thread's loop: collected lines into the store.
//!
//! The collector hands over a batch of lines with the checkpoints they
//! advance; both go to the store in one write, so they become durable
//! together (the store's maintenance thread flushes within the interval).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::log_collector::clock::ReaderClock;
use crate::log_collector::directory::batch::Batch;
use crate::log_collector::directory::{CollectorError, DirectoryCollector};
use crate::log_collector::kubernetes::{KubernetesCollector, KubernetesStats};
use crate::log_collector::service_name;
use crate::log_collector::status::CollectorReport;
use crate::log_database::labels::Labels;
use crate::log_database::{Appended, Database, StreamEntries, WriteBatch};
use crate::memory::{MemoryLimit, Pressure};
use crate::shutdown::Shutdown;

/// Keeps a shared [`CollectorReport`] fresh from the collector's thread, at most once
/// a second (the lag costs an `fstat` per file).
pub struct StatusUpdater {
    shared: Arc<std::sync::RwLock<CollectorReport>>,
    last: Option<(Instant, u64, u64)>,
}

impl StatusUpdater {
    /// Updates `shared`.
    pub fn new(shared: Arc<std::sync::RwLock<CollectorReport>>) -> Self {
        Self { shared, last: None }
    }

    /// Records a batch handed to the store; refreshes the figures if a
    /// second has passed.
    pub fn batch_written(&mut self, source: &dyn Collect) {
        let now = Instant::now();
        let collector = source.directory();
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
        status.counters = stats;
        status.kubernetes = source.kubernetes();
    }
}

/// A collector as the ingest loop sees it: store writes, one after another.
pub trait Collect: Send {
    /// Fills `out` with the next entries and checkpoints; blocks until there
    /// is something, or a waker fires (then `out` may be empty).
    fn next(&mut self, out: &mut WriteBatch) -> Result<(), CollectorError>;
    /// The directory collector underneath (for status figures).
    fn directory(&self) -> &DirectoryCollector;
    /// The Kubernetes layer's counters, if this is the Kubernetes collector.
    fn kubernetes(&self) -> Option<KubernetesStats> {
        None
    }
}

/// The directory collector, labelling each file's lines with its `path`.
pub struct DirectorySource {
    collector: DirectoryCollector,
    batch: Batch,
    clock: ReaderClock,
}

impl DirectorySource {
    /// Wraps a directory collector.
    pub fn new(collector: DirectoryCollector) -> Self {
        Self {
            collector,
            batch: Batch::default(),
            clock: ReaderClock::default(),
        }
    }
}

impl Collect for DirectorySource {
    fn next(&mut self, out: &mut WriteBatch) -> Result<(), CollectorError> {
        self.collector.next_batch(&mut self.batch, None)?;
        *out = directory_batch(&self.batch, &mut self.clock, crate::log_database::now_ns());
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

    fn kubernetes(&self) -> Option<KubernetesStats> {
        Some(self.stats())
    }
}

/// How long the collector pauses between batches near the memory limit.
const THROTTLE: Duration = Duration::from_millis(100);

/// Moves batches from `source` into `db` until `shutdown` or the collector
/// fails; keeps `status`.
pub fn run(
    source: &mut dyn Collect,
    db: &Database,
    status: &mut StatusUpdater,
    shutdown: &Shutdown,
    memory: MemoryLimit,
    started: impl FnOnce(),
) -> Result<(), CollectorError> {
    let mut write = WriteBatch::default();
    // The last write's streams while live tails read them: back to the
    // collector for reuse once they are done (usually before the next
    // batch), so tails cost neither a copy nor fresh buffers.
    let mut lent: Option<Arc<Appended>> = None;
    let mut warned = false;
    let mut started = Some(started);
    while !shutdown.is_triggered() {
        // Near the memory ceiling: flush what is in memory and read more
        // slowly; the lines wait in their files.
        if memory.pressure() >= Pressure::High {
            if !warned {
                tracing::warn!(
                    limit = memory.limit,
                    resident = crate::memory::resident_bytes(),
                    "Near the memory limit: collecting more slowly until memory is freed."
                );
                warned = true;
            }
            let _ = db.flush();
            std::thread::sleep(THROTTLE);
        } else {
            warned = false;
        }
        if let Some(appended) = lent.take().and_then(|a| Arc::try_unwrap(a).ok()) {
            write.streams = appended.streams;
        }
        source.next(&mut write)?;
        if !(write.streams.is_empty() && write.checkpoints.is_empty()) {
            match write_patiently(db, &mut write, shutdown) {
                Some(shared) => lent = shared,
                None => break,
            }
            status.batch_written(&*source);
        }
        // The first batch announces the start of every file found; once it
        // is written (durably: a new source's start is flushed at once),
        // whatever happens next, the next start knows those files.
        if let Some(started) = started.take() {
            started();
        }
    }
    Ok(())
}

/// The store write for a directory-collector batch: one stream per file,
/// labelled `path` (and `service_name`, as Loki would add it), timestamped when read (`now`, ns), each line of a file
/// later than the one before.
pub fn directory_batch(batch: &Batch, clock: &mut ReaderClock, now: i64) -> WriteBatch {
    let mut streams: Vec<StreamEntries> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for line in batch.lines() {
        let i = *index.entry(line.source).or_insert_with(|| {
            let mut pairs = vec![("path".to_owned(), line.source.to_string())];
            service_name::discover(&mut pairs);
            streams.push(StreamEntries::new(Labels::new(pairs)));
            streams.len() - 1
        });
        streams[i].push(clock.stamp(line.source, now), line.bytes);
    }
    clock.forget_before(now);
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

/// Writes `batch` ([`Database::write_shared`]: live tails may take its
/// streams, returned here), waiting while the store pushes back (its disk
/// is full and its memory for unwritten entries used up). Returns `None`
/// if shutdown began before the batch could be written; the collector
/// keeps its place, so nothing is lost either way.
pub fn write_patiently(
    db: &Database,
    batch: &mut WriteBatch,
    shutdown: &Shutdown,
) -> Option<Option<Arc<Appended>>> {
    let mut warned = false;
    loop {
        match db.write_shared(batch) {
            Ok(shared) => return Some(shared),
            Err(_) if shutdown.is_triggered() => return None,
            Err(error) => {
                if !warned {
                    tracing::warn!(%error, "Waiting for the log store to accept writes again.");
                    warned = true;
                }
                // Flushing is what frees memory; try it before each retry.
                let _ = db.flush();
                std::thread::sleep(Duration::from_secs(1));
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
            let mut clock = ReaderClock::default();
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
                        &mut directory_batch(&batch, &mut clock, now_ns()),
                        &Shutdown::new()
                    )
                    .is_some()
                );
            }
            db.flush().unwrap();
            let q = Query::new(vec![Matcher::equal("path", &path)]);
            let entries: Vec<(i64, String)> = db
                .query(q)
                .unwrap()
                .map(|e| (e.timestamp, String::from_utf8(e.line).unwrap()))
                .collect();
            // Lines of one read get distinct times, in file order, so a
            // client paging by timestamp can always move on.
            assert!(entries.windows(2).all(|w| w[0].0 < w[1].0), "{entries:?}");
            entries.into_iter().map(|(_, l)| l).collect::<Vec<_>>()
        };
        use std::io::Write;
        assert_eq!(run(""), ["one", "two"]);
        assert_eq!(run("three\n"), ["one", "two", "three"]);
    }
}
