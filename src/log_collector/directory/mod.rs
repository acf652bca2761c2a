//! Tails every regular file under a root directory.
//!
//! The collector keeps three views and reconciles them on every event:
//! - *paths*: root-relative names and the inode each leads to now (through
//!   symlinks: the kubelet layout links `/var/log/containers/*.log` to files
//!   under `/var/log/pods`);
//! - *files*: open descriptors keyed by device and inode, so two links to
//!   one file are read once, and a renamed file keeps being read through its
//!   descriptor until it is drained;
//! - *positions*: checkpoints keyed by inode + head hash, so a restart resumes
//!   exactly, a reused inode is noticed, and a copytruncate copy continues where
//!   its original stopped.
//!
//! Events are hints: on each one the collector looks at the file system again
//! (`lstat`, `readdir`, `fstat`) and acts on what it finds, so coalesced or
//! stale events do no harm and an overflow is answered with a full rescan.
//! Nothing runs on a timer except deadlines the collector set itself (closing
//! a drained rotated file after `rotate_wait`, releasing a held copy).

pub mod batch;
mod discovery;
pub mod fingerprint;
mod placement;
mod tailed;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use self::batch::{Batch, FileId, LineKind};
use self::fingerprint::{Fingerprint, MARKER_BYTES, fingerprint, marker};
use self::tailed::{Phase, TailedFile};
use super::checkpoint::{Checkpoint, CheckpointKey, CheckpointSet};
use crate::watcher::{Event, Wake, WatchId, Watcher, WatcherError};

/// Where to start reading a file found at start-up that has no checkpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ReadFrom {
    /// From its first byte.
    #[default]
    Head,
    /// From its end: only lines written from now on.
    Tail,
}

/// How the directory collector behaves.
#[derive(Clone, Debug)]
pub struct DirectoryConfig {
    /// The directory to tail (may itself be a symlink).
    pub root: PathBuf,
    /// Start position for files present at start-up without a checkpoint.
    pub read_from: ReadFrom,
    /// Longer lines are cut into pieces of this many bytes.
    pub max_line_bytes: usize,
    /// How long a rotated-away or deleted file is kept open after its last
    /// write, so that a writer still holding it loses nothing.
    pub rotate_wait: Duration,
    /// A batch is handed on once it holds about this many bytes.
    pub batch_bytes: usize,
    /// Bytes read from one file before the next file gets its turn.
    pub file_budget: usize,
    /// Once woken by a change, how long to let further writes gather before
    /// reading. Many writers each appending a line at a time would otherwise
    /// cost a wake-up and a read per line; zero reads at once.
    pub batch_wait: Duration,
}

impl DirectoryConfig {
    /// Defaults for `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            read_from: ReadFrom::Head,
            max_line_bytes: 256 * 1024,
            rotate_wait: Duration::from_secs(5),
            batch_bytes: 4 * 1024 * 1024,
            file_budget: 512 * 1024,
            batch_wait: Duration::ZERO,
        }
    }
}

/// Errors that stop the collector; per-file problems are logged and counted.
#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    /// The root cannot be read.
    #[error("cannot read the log directory {path}: {source}; check --root-path and permissions")]
    Root {
        /// The root as configured.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// One log file could not be read (the caller counts it and retries
    /// the file on its next change).
    #[error("cannot read the log file {path}: {source}")]
    File {
        /// The file, as found under the root.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The watcher failed (for example the watch limit is exhausted).
    #[error(transparent)]
    Watcher(#[from] WatcherError),
}

/// Counters describing the collector's work so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CollectorStats {
    /// Files open now.
    pub files_open: u64,
    /// Lines handed on.
    pub lines: u64,
    /// Line bytes handed on.
    pub bytes: u64,
    /// Pieces emitted because a line exceeded `max_line_bytes`.
    pub lines_split: u64,
    /// Files that left the root (renamed away or deleted) and were drained.
    pub files_rotated: u64,
    /// Files whose size dropped below the read offset or whose head changed.
    pub truncations: u64,
    /// Copies that continued from their original's position.
    pub copies_adopted: u64,
    /// Event queue overflows answered with a rescan.
    pub overflows: u64,
    /// Read errors (the file is retried on its next event).
    pub read_errors: u64,
}

#[derive(Debug)]
struct DirWatch {
    watch: WatchId,
    /// Set when this directory is the root or under it: its root-relative path.
    rel: Option<PathBuf>,
    /// Root paths that are symlinks to files in this directory.
    link_rels: BTreeSet<PathBuf>,
}

#[derive(Debug, Clone)]
enum WatchOwner {
    Dir(PathBuf),
    File(FileId),
}

/// A position with no open file behind it: from an earlier run, or left by
/// a truncated file for its copy to take over.
struct Orphan {
    checkpoint: Checkpoint,
    since: Instant,
    unfinished: Option<Unfinished>,
    /// Its file was seen truncated or rewritten: a copy with the same head
    /// may continue from it. Without this evidence a file that merely
    /// begins alike is a new file.
    truncated: bool,
}

/// The bytes after the last newline of a file that was truncated.
struct Unfinished {
    bytes: Vec<u8>,
    /// The bytes before them (for the marker once they are handed on).
    window: Vec<u8>,
    source: Arc<str>,
    file: FileId,
}

/// Tails every regular file under a directory; see the module docs.
pub struct DirectoryCollector {
    config: DirectoryConfig,
    root_canonical: PathBuf,
    watcher: Box<dyn Watcher>,
    files: HashMap<FileId, TailedFile>,
    by_inode: HashMap<(u64, u64), FileId>,
    paths: HashMap<PathBuf, FileId>,
    dirs: HashMap<PathBuf, DirWatch>,
    links: HashMap<PathBuf, PathBuf>,
    owners: HashMap<WatchId, WatchOwner>,
    /// Which reading file owns each head, to spot copies.
    heads: HashMap<Fingerprint, FileId>,
    orphans: HashMap<CheckpointKey, Orphan>,
    ready: VecDeque<FileId>,
    retired: BTreeSet<FileId>,
    held: BTreeSet<FileId>,
    touched: Vec<FileId>,
    /// Positions taken over by a copy or dropped, to forget in the next batch.
    superseded: Vec<CheckpointKey>,
    /// New files whose start position goes out in this batch, before any
    /// of their lines: whoever keeps checkpoints then knows them should
    /// the daemon die before its first flush.
    announce: Vec<FileId>,
    /// Announced files, read from the next batch on.
    announced: Vec<FileId>,
    /// Files their consumer cannot take yet (see [`Gate`]), until when.
    gated: HashMap<FileId, Instant>,
    /// Positions changed outside of reading, to publish in the next batch.
    changed: Vec<Checkpoint>,
    events: Vec<Event>,
    rescan_needed: bool,
    starting: bool,
    next_id: u64,
    stats: CollectorStats,
}

/// Asked before a file is read, with the file's source path and birth time
/// (ns, where the file system keeps one): `None` reads it now, `Some(t)`
/// leaves it unread until `t` (or its next change).
pub type Gate<'g> = &'g mut dyn FnMut(&Arc<str>, Option<i64>) -> Option<Instant>;

/// How long positions without a file are remembered at least.
const ORPHAN_TTL: Duration = Duration::from_secs(60);
/// At most this many such positions are remembered.
const MAX_ORPHANS: usize = 4096;

impl DirectoryCollector {
    /// Starts tailing `config.root`, resuming from `checkpoints`.
    pub fn new(
        config: DirectoryConfig,
        watcher: Box<dyn Watcher>,
        checkpoints: &CheckpointSet,
    ) -> Result<Self, CollectorError> {
        let root_canonical =
            fs::canonicalize(&config.root).map_err(|source| CollectorError::Root {
                path: config.root.clone(),
                source,
            })?;
        let now = Instant::now();
        let orphans = checkpoints
            .to_list()
            .into_iter()
            .map(|checkpoint| {
                (
                    checkpoint.key,
                    Orphan {
                        truncated: checkpoint.truncated,
                        checkpoint,
                        since: now,
                        unfinished: None,
                    },
                )
            })
            .collect();
        let mut collector = Self {
            config,
            root_canonical,
            watcher,
            files: HashMap::new(),
            by_inode: HashMap::new(),
            paths: HashMap::new(),
            dirs: HashMap::new(),
            links: HashMap::new(),
            owners: HashMap::new(),
            heads: HashMap::new(),
            orphans,
            ready: VecDeque::new(),
            retired: BTreeSet::new(),
            held: BTreeSet::new(),
            touched: Vec::new(),
            superseded: Vec::new(),
            announce: Vec::new(),
            announced: Vec::new(),
            gated: HashMap::new(),
            changed: Vec::new(),
            events: Vec::new(),
            rescan_needed: false,
            starting: true,
            next_id: 0,
            stats: CollectorStats::default(),
        };
        collector.scan_dir(Path::new(""))?;
        // Placed once every file is known, so whether a file's original is
        // still under the root does not depend on the order of the scan.
        let mut found: Vec<FileId> = collector.files.keys().copied().collect();
        found.sort();
        for id in found {
            collector.place(id)?;
        }
        collector.starting = false;
        Ok(collector)
    }

    /// Counters so far.
    pub fn stats(&self) -> CollectorStats {
        CollectorStats {
            files_open: self.files.len() as u64,
            ..self.stats.clone()
        }
    }

    /// Bytes written to the files being read that have not been read yet
    /// (one `fstat` per open file: call it now and then, not per batch).
    pub fn lag_bytes(&self) -> u64 {
        self.files
            .values()
            .filter(|f| f.phase == Phase::Reading)
            .filter_map(|f| Some(f.size().ok()?.saturating_sub(f.read_offset)))
            .sum()
    }

    /// A handle that makes a blocked [`next_batch`](Self::next_batch) return.
    pub fn waker(&self) -> Arc<dyn Wake> {
        self.watcher.waker()
    }

    /// Checkpoints from an earlier run whose files have not been found
    /// (rotated away or deleted while the collector was down).
    pub fn unmatched_checkpoints(&self) -> Vec<Checkpoint> {
        self.orphans
            .values()
            .map(|o| o.checkpoint.clone())
            .collect()
    }

    /// Fills `batch` (cleared first) with the next lines and checkpoint
    /// changes. Blocks until there is something to hand on, or `timeout`
    /// passes, or a waker fires; then the batch may be idle.
    pub fn next_batch(
        &mut self,
        batch: &mut Batch,
        timeout: Option<Duration>,
    ) -> Result<(), CollectorError> {
        self.next_batch_gated(batch, timeout, &mut |_, _| None)
    }

    /// [`next_batch`](Self::next_batch), reading only the files `gate`
    /// admits: the file on disk stays the buffer for a source its consumer
    /// cannot take yet, instead of its lines piling up in memory.
    pub fn next_batch_gated(
        &mut self,
        batch: &mut Batch,
        timeout: Option<Duration>,
        gate: Gate<'_>,
    ) -> Result<(), CollectorError> {
        batch.clear();
        // Files announced in the last batch are known now: read them.
        for id in std::mem::take(&mut self.announced) {
            self.enqueue(id);
        }
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut first = true;
        loop {
            let mut events = std::mem::take(&mut self.events);
            self.watcher.read_events(&mut events)?;
            for event in events.drain(..) {
                self.handle_event(event)?;
            }
            self.events = events;
            if std::mem::take(&mut self.rescan_needed) {
                self.rescan_all()?;
            }
            self.service_deadlines(batch, Instant::now())?;
            self.read_ready(batch, gate);
            self.publish(batch);
            if !batch.is_idle() {
                let stats = &mut self.stats;
                stats.lines += batch.len() as u64;
                stats.bytes += batch.line_bytes() as u64;
                return Ok(());
            }
            let now = Instant::now();
            if !first && deadline.is_some_and(|d| now >= d) {
                return Ok(());
            }
            first = false;
            let wake_at = [deadline, self.next_deadline()].into_iter().flatten().min();
            let wait = wake_at.map(|at| at.saturating_duration_since(now));
            let mut events = std::mem::take(&mut self.events);
            self.watcher.wait_events(&mut events, wait)?;
            let woken_empty = events.is_empty();
            for event in events.drain(..) {
                self.handle_event(event)?;
            }
            self.events = events;
            // Woken by a waker with nothing to do: let the caller look at
            // its shutdown flag.
            if woken_empty && wake_at.is_none_or(|at| Instant::now() < at) {
                return Ok(());
            }
            if !woken_empty && !self.config.batch_wait.is_zero() {
                // The events are read (and more gathered) at the top of the
                // loop; a sleep costs one wake-up where waiting on the
                // watcher would cost one per event.
                std::thread::sleep(self.config.batch_wait);
            }
        }
    }

    // ----- reading --------------------------------------------------------

    fn enqueue(&mut self, id: FileId) {
        if let Some(file) = self.files.get_mut(&id)
            && !file.queued
        {
            file.queued = true;
            self.ready.push_back(id);
        }
    }

    /// Gives each ready file a turn of at most `file_budget` bytes, round
    /// robin, until none is ready or the batch is full.
    fn read_ready(&mut self, batch: &mut Batch, gate: Gate<'_>) {
        while batch.buffered() < self.config.batch_bytes {
            let Some(id) = self.ready.pop_front() else {
                break;
            };
            if let Some(file) = self.files.get_mut(&id) {
                // A new file is read from the next batch on, once its start
                // is handed on.
                if file.unannounced {
                    file.queued = false;
                    continue;
                }
                if file.phase == Phase::Reading
                    && file.retired_at.is_none()
                    && let Some(until) = gate(&file.source, file.born)
                {
                    // Left unread (its position unchanged) until `until`.
                    file.queued = false;
                    self.gated.insert(id, until);
                    continue;
                }
            }
            let more = match self.turn(id, batch) {
                Ok(more) => more,
                Err(error) => {
                    self.stats.read_errors += 1;
                    if let Some(file) = self.files.get(&id) {
                        tracing::warn!(path = %file.source, %error, "Reading log file failed; retrying on its next change.");
                    }
                    false
                }
            };
            if let Some(file) = self.files.get_mut(&id) {
                file.queued = false;
            }
            if more {
                self.enqueue(id);
            }
        }
    }

    /// One file's turn; returns whether it has more to read right away.
    fn turn(&mut self, id: FileId, batch: &mut Batch) -> Result<bool, CollectorError> {
        let Some(file) = self.files.get_mut(&id) else {
            return Ok(false);
        };
        if file.phase == Phase::Pending {
            self.place(id)?;
        }
        let Some(file) = self.files.get_mut(&id) else {
            return Ok(false);
        };
        match file.phase {
            Phase::Held { .. } => return Ok(false),
            Phase::Pending => {
                // Too short to have a line yet; only a file that is going
                // away is read as it is.
                if file.retired_at.is_some() {
                    file.read_turn(batch, usize::MAX, self.config.max_line_bytes)
                        .map_err(|e| CollectorError::File {
                            path: PathBuf::from(&*file.source),
                            source: e,
                        })?;
                }
                return Ok(false);
            }
            Phase::Reading => {}
        }
        // A shrink or a rewrite is seen by the read itself (read_turn
        // re-reads the bytes before the offset in the same syscall).
        let start = file.read_offset;
        let turn = file
            .read_turn(batch, self.config.file_budget, self.config.max_line_bytes)
            .map_err(|e| CollectorError::File {
                path: PathBuf::from(&*file.source),
                source: e,
            })?;
        tracing::trace!(path = %file.source, ino = file.ino, start, read = turn.read, eof = turn.eof, replaced = turn.replaced, "Turn.");
        if turn.replaced {
            self.truncated(id)?;
            return Ok(true);
        }
        if turn.read > 0 {
            file.last_data = Instant::now();
        }
        if turn.emitted && !file.dirty {
            file.dirty = true;
        }
        self.stats.lines_split += turn.split;
        if file.dirty {
            self.touched.push(id);
        }
        Ok(!turn.eof)
    }

    /// Whether the file shrank below what was read or got a new head.
    fn changed_under_us(&self, id: FileId) -> bool {
        let Some(file) = self.files.get(&id) else {
            return false;
        };
        match file.size() {
            Ok(size) if size < file.read_offset => true,
            Ok(_) => {
                // Also at offset 0: an emptied file has lost the head we know.
                file.fingerprint.is_some()
                    && fingerprint(&file.file).ok().flatten() != file.fingerprint
            }
            Err(_) => false,
        }
    }

    /// Adds the checkpoints of files that moved to the batch, and the start
    /// positions of new files (which are read from the next batch on).
    fn publish(&mut self, batch: &mut Batch) {
        for id in std::mem::take(&mut self.announce) {
            if let Some(file) = self.files.get_mut(&id) {
                file.unannounced = false;
                if let Some(checkpoint) = file.checkpoint() {
                    batch.checkpoints.push(checkpoint);
                }
                self.announced.push(id);
            }
        }
        batch.checkpoints.append(&mut self.changed);
        batch.forgotten.append(&mut self.superseded);
        for id in self.touched.drain(..) {
            if let Some(file) = self.files.get_mut(&id)
                && std::mem::take(&mut file.dirty)
                && let Some(checkpoint) = file.checkpoint()
            {
                batch.checkpoints.push(checkpoint);
            }
        }
        // Placement can move a file without reading it (tail start, copy).
        for file in self.files.values_mut() {
            if file.dirty
                && file.phase == Phase::Reading
                && let Some(checkpoint) = file.checkpoint()
            {
                file.dirty = false;
                batch.checkpoints.push(checkpoint);
            }
        }
    }

    // ----- deadlines ------------------------------------------------------

    fn next_deadline(&self) -> Option<Instant> {
        let closes = self.retired.iter().filter_map(|id| {
            let file = self.files.get(id)?;
            Some(file.last_data.max(file.retired_at?) + self.config.rotate_wait)
        });
        let holds = self
            .held
            .iter()
            .filter_map(|id| match self.files.get(id)?.phase {
                Phase::Held { until, .. } => until,
                _ => None,
            });
        let orphans = self.orphans.values().map(|o| {
            if o.unfinished.is_some() {
                o.since + self.config.rotate_wait
            } else {
                o.since + ORPHAN_TTL.max(self.config.rotate_wait * 2)
            }
        });
        let gated = self.gated.values().copied();
        closes.chain(holds).chain(orphans).chain(gated).min()
    }

    fn service_deadlines(&mut self, batch: &mut Batch, now: Instant) -> Result<(), CollectorError> {
        let due: Vec<FileId> = self
            .gated
            .iter()
            .filter(|(_, until)| now >= **until)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.gated.remove(&id);
            self.enqueue(id);
        }
        let held: Vec<FileId> = self.held.iter().copied().collect();
        for id in held {
            if let Some(Phase::Held {
                until: Some(until),
                copy_of,
                ..
            }) = self.files.get(&id).map(|f| f.phase)
                && now >= until
            {
                if let Some(original) = copy_of {
                    // The truncation may have happened and not been seen
                    // yet (its event still queued): look before deciding.
                    if self.changed_under_us(original) {
                        self.truncated(original)?;
                        continue;
                    }
                    if let Some(file) = self.files.get_mut(&id) {
                        tracing::debug!(path = %file.source, "Held as a copy, but its original was not truncated: reading it as a file of its own.");
                        file.independent = true;
                    }
                }
                self.place(id)?;
            }
        }
        let retired: Vec<FileId> = self.retired.iter().copied().collect();
        for id in retired {
            let Some(file) = self.files.get(&id) else {
                self.retired.remove(&id);
                continue;
            };
            let quiet_since = file.last_data.max(file.retired_at.unwrap_or(now));
            if now < quiet_since + self.config.rotate_wait {
                continue;
            }
            // One last read: a writer may have added bytes without an event
            // reaching us yet.
            if file.phase == Phase::Reading {
                match self.turn(id, batch) {
                    Ok(true) => continue,
                    Ok(false) => {}
                    Err(error) => {
                        // Gone from the root and unreadable: closing it is
                        // all that is left; the collector itself goes on.
                        self.stats.read_errors += 1;
                        tracing::warn!(%error, "A rotated or deleted log file cannot be read to its end; closing it.");
                    }
                }
            }
            let file = &self.files[&id];
            if file.last_data > quiet_since {
                continue;
            }
            self.close(id, batch);
        }
        for orphan in self.orphans.values_mut() {
            if now >= orphan.since + self.config.rotate_wait
                && let Some(mut unfinished) = orphan.unfinished.take()
            {
                batch.push_owned_line(
                    &unfinished.source,
                    unfinished.file,
                    &unfinished.bytes,
                    orphan.checkpoint.offset + unfinished.bytes.len() as u64,
                    LineKind::Unterminated,
                );
                unfinished.window.extend_from_slice(&unfinished.bytes);
                let excess = unfinished.window.len().saturating_sub(MARKER_BYTES);
                orphan.checkpoint.offset += unfinished.bytes.len() as u64;
                orphan.checkpoint.marker = marker(&unfinished.window[excess..]);
                batch.checkpoints.push(orphan.checkpoint.clone());
            }
        }
        let ttl = ORPHAN_TTL.max(self.config.rotate_wait * 2);
        let expired: Vec<CheckpointKey> = self
            .orphans
            .iter()
            .filter(|(_, o)| now >= o.since + ttl)
            .map(|(k, _)| *k)
            .collect();
        for key in expired {
            self.orphans.remove(&key);
            batch.forgotten.push(key);
        }
        Ok(())
    }

    /// Drops a drained, retired file: its last partial line is handed on and
    /// its checkpoint forgotten.
    fn close(&mut self, id: FileId, batch: &mut Batch) {
        self.retired.remove(&id);
        self.held.remove(&id);
        self.gated.remove(&id);
        let Some(mut file) = self.files.remove(&id) else {
            return;
        };
        if let Some(fp) = file.fingerprint
            && self.heads.get(&fp) == Some(&id)
        {
            self.heads.remove(&fp);
        }
        // Files held as its copies were never shown to be copies (it was
        // not truncated): each is a file of its own, read from its start.
        let copies: Vec<FileId> = self
            .held
            .iter()
            .filter(|other| {
                self.files.get(other).is_some_and(|copy| {
                    matches!(copy.phase, Phase::Held { copy_of: Some(original), .. } if original == id)
                })
            })
            .copied()
            .collect();
        for copy in copies {
            if let Some(copy) = self.files.get_mut(&copy) {
                copy.independent = true;
            }
            if let Err(error) = self.place(copy) {
                tracing::warn!(%error, "Could not place a file held as a copy.");
            }
        }
        file.flush_partial(batch);
        self.by_inode.remove(&(file.dev, file.ino));
        if let Some(watch) = file.watch {
            self.owners.remove(&watch);
            let _ = self.watcher.unwatch(watch);
        }
        if let Some(key) = file.key() {
            batch.checkpoints.retain(|c| c.key != key);
            self.changed.retain(|c| c.key != key);
            batch.forgotten.push(key);
        }
        tracing::debug!(path = %file.source, "Closed drained file.");
    }
}

#[cfg(test)]
mod tests;
