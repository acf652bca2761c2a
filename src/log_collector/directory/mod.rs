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
pub mod fingerprint;
mod tailed;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fs::{self, File, Metadata};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use self::batch::{Batch, FileId, LineKind};
use self::fingerprint::{Fingerprint, MARKER_BYTES, fingerprint, marker, window_before};
use self::tailed::{Phase, TailedFile};
use super::checkpoint::{Checkpoint, CheckpointKey, CheckpointSet};
use crate::watcher::{Event, EventKind, Wake, WatchId, Watcher, WatcherError};

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
    /// Positions changed outside of reading, to publish in the next batch.
    changed: Vec<Checkpoint>,
    events: Vec<Event>,
    rescan_needed: bool,
    starting: bool,
    next_id: u64,
    stats: CollectorStats,
}

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
            changed: Vec::new(),
            events: Vec::new(),
            rescan_needed: false,
            starting: true,
            next_id: 0,
            stats: CollectorStats::default(),
        };
        collector.scan_dir(Path::new(""))?;
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
        batch.clear();
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
            self.read_ready(batch);
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
        }
    }

    // ----- events and discovery -------------------------------------------

    fn handle_event(&mut self, event: Event) -> Result<(), CollectorError> {
        if event.kind == EventKind::Overflow {
            tracing::warn!("File event queue overflowed; rescanning every file.");
            self.stats.overflows += 1;
            self.rescan_needed = true;
            return Ok(());
        }
        let Some(watch) = event.watch else {
            return Ok(());
        };
        match self.owners.get(&watch).cloned() {
            Some(WatchOwner::Dir(dir)) => match event.kind {
                EventKind::Created | EventKind::Removed => match event.name {
                    Some(name) => self.dir_entry_changed(&dir, Path::new(&name))?,
                    None => self.rescan_dir(&dir)?,
                },
                EventKind::DirectoryChanged => self.rescan_dir(&dir)?,
                EventKind::Moved | EventKind::Gone => self.dir_gone(&dir)?,
                _ => {}
            },
            Some(WatchOwner::File(id)) => {
                if let Some(file) = self.files.get_mut(&id) {
                    file.check_needed = true;
                    if event.kind == EventKind::Gone {
                        file.watch = None;
                        self.owners.remove(&watch);
                    }
                    if matches!(file.phase, Phase::Held { .. } | Phase::Pending) {
                        self.place(id)?;
                    }
                    self.enqueue(id);
                }
            }
            None => {}
        }
        Ok(())
    }

    fn dir_entry_changed(&mut self, dir: &Path, name: &Path) -> Result<(), CollectorError> {
        let Some(watch) = self.dirs.get(dir) else {
            return Ok(());
        };
        let rel = watch.rel.as_ref().map(|r| r.join(name));
        let links: Vec<PathBuf> = watch.link_rels.iter().cloned().collect();
        if let Some(rel) = rel {
            self.examine(&rel)?;
        }
        for link in links {
            self.examine(&link)?;
        }
        Ok(())
    }

    fn rescan_dir(&mut self, dir: &Path) -> Result<(), CollectorError> {
        let Some(watch) = self.dirs.get(dir) else {
            return Ok(());
        };
        let rel = watch.rel.clone();
        let links: Vec<PathBuf> = watch.link_rels.iter().cloned().collect();
        if let Some(rel) = rel {
            self.scan_dir(&rel)?;
        }
        for link in links {
            self.examine(&link)?;
        }
        Ok(())
    }

    fn dir_gone(&mut self, dir: &Path) -> Result<(), CollectorError> {
        let Some(watch) = self.dirs.remove(dir) else {
            return Ok(());
        };
        self.owners.remove(&watch.watch);
        let _ = self.watcher.unwatch(watch.watch);
        if watch.rel.as_deref() == Some(Path::new("")) {
            tracing::error!(root = %self.config.root.display(), "The log directory itself was moved or deleted.");
        }
        if let Some(rel) = &watch.rel {
            self.forget_under(rel)?;
        }
        for link in watch.link_rels {
            self.links.remove(&link);
            self.examine(&link)?;
        }
        Ok(())
    }

    /// Re-examines every known path at or under `rel`.
    fn forget_under(&mut self, rel: &Path) -> Result<(), CollectorError> {
        let known: Vec<PathBuf> = self
            .paths
            .keys()
            .chain(self.links.keys())
            .filter(|p| p.starts_with(rel))
            .cloned()
            .collect();
        for path in known {
            self.examine(&path)?;
        }
        let subdirs: Vec<PathBuf> = self
            .dirs
            .iter()
            .filter(|(_, w)| {
                w.rel
                    .as_ref()
                    .is_some_and(|r| r.starts_with(rel) && r != rel)
            })
            .map(|(dir, _)| dir.clone())
            .collect();
        for dir in subdirs {
            if !dir.is_dir() {
                self.dir_gone(&dir)?;
            }
        }
        Ok(())
    }

    fn rescan_all(&mut self) -> Result<(), CollectorError> {
        self.scan_dir(Path::new(""))?;
        let known: Vec<PathBuf> = self
            .paths
            .keys()
            .chain(self.links.keys())
            .cloned()
            .collect();
        for path in known {
            self.examine(&path)?;
        }
        let ids: Vec<FileId> = self.files.keys().copied().collect();
        for id in ids {
            if let Some(file) = self.files.get_mut(&id) {
                file.check_needed = true;
            }
            self.place_if_waiting(id)?;
            self.enqueue(id);
        }
        Ok(())
    }

    /// Watches a directory under the root and examines its entries.
    fn scan_dir(&mut self, rel: &Path) -> Result<(), CollectorError> {
        let full = self.full_path(rel);
        let canonical = if rel.as_os_str().is_empty() {
            self.root_canonical.clone()
        } else {
            match fs::canonicalize(&full) {
                Ok(c) => c,
                Err(_) => return Ok(()),
            }
        };
        match self.dirs.get_mut(&canonical) {
            Some(watch) => watch.rel = Some(rel.to_owned()),
            None => {
                let watch = match self.watcher.watch_directory(&canonical) {
                    Ok(w) => w,
                    Err(WatcherError::Watch { .. }) if !rel.as_os_str().is_empty() => {
                        return Ok(()); // vanished meanwhile
                    }
                    Err(e) => return Err(e.into()),
                };
                self.owners
                    .insert(watch, WatchOwner::Dir(canonical.clone()));
                self.dirs.insert(
                    canonical,
                    DirWatch {
                        watch,
                        rel: Some(rel.to_owned()),
                        link_rels: BTreeSet::new(),
                    },
                );
            }
        }
        let entries = match fs::read_dir(&full) {
            Ok(entries) => entries,
            Err(source) if rel.as_os_str().is_empty() => {
                return Err(CollectorError::Root {
                    path: self.config.root.clone(),
                    source,
                });
            }
            Err(_) => return Ok(()),
        };
        let mut names: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .map(|e| rel.join(e.file_name()))
            .collect();
        // Oldest names first is not knowable here; sorted is at least stable.
        names.sort();
        let seen: BTreeSet<&PathBuf> = names.iter().collect();
        let vanished: Vec<PathBuf> = self
            .paths
            .keys()
            .chain(self.links.keys())
            .filter(|p| p.parent() == Some(rel) && !seen.contains(p))
            .cloned()
            .collect();
        for path in names.iter().chain(vanished.iter()) {
            self.examine(path)?;
        }
        Ok(())
    }

    fn full_path(&self, rel: &Path) -> PathBuf {
        if rel.as_os_str().is_empty() {
            self.config.root.clone()
        } else {
            self.config.root.join(rel)
        }
    }

    /// Looks at one root-relative path and brings the views in line with it.
    fn examine(&mut self, rel: &Path) -> Result<(), CollectorError> {
        let full = self.full_path(rel);
        let Ok(meta) = fs::symlink_metadata(&full) else {
            self.unlink(rel);
            self.detach(rel);
            return Ok(());
        };
        let kind = meta.file_type();
        if kind.is_dir() {
            self.unlink(rel);
            self.detach(rel);
            return self.scan_dir(rel);
        }
        if kind.is_symlink() {
            self.track_link(rel, &full);
            return match fs::metadata(&full) {
                Ok(target) if target.is_file() => self.attach(rel, &full, &target),
                _ => {
                    // Dangling for now (kubelet between rename and reopen):
                    // the link's directory watch will tell us when it returns.
                    self.detach(rel);
                    Ok(())
                }
            };
        }
        self.unlink(rel);
        if kind.is_file() {
            self.attach(rel, &full, &meta)
        } else {
            self.detach(rel);
            Ok(())
        }
    }

    /// Watches the directory a symlink points into, so a target that is
    /// renamed and re-created there is noticed.
    fn track_link(&mut self, rel: &Path, full: &Path) {
        let Ok(target) = fs::read_link(full) else {
            return;
        };
        let target = full.parent().unwrap_or(Path::new("/")).join(target);
        let Some(dir) = target.parent().and_then(|d| fs::canonicalize(d).ok()) else {
            self.unlink(rel);
            return;
        };
        if self.links.get(rel) == Some(&dir) {
            return;
        }
        self.unlink(rel);
        if !self.dirs.contains_key(&dir) {
            let Ok(watch) = self.watcher.watch_directory(&dir) else {
                return;
            };
            self.owners.insert(watch, WatchOwner::Dir(dir.clone()));
            self.dirs.insert(
                dir.clone(),
                DirWatch {
                    watch,
                    rel: None,
                    link_rels: BTreeSet::new(),
                },
            );
        }
        if let Some(watch) = self.dirs.get_mut(&dir) {
            watch.link_rels.insert(rel.to_owned());
        }
        self.links.insert(rel.to_owned(), dir);
    }

    /// Forgets that `rel` is a symlink, dropping its directory watch if unused.
    fn unlink(&mut self, rel: &Path) {
        let Some(dir) = self.links.remove(rel) else {
            return;
        };
        if let Some(watch) = self.dirs.get_mut(&dir) {
            watch.link_rels.remove(rel);
            if watch.link_rels.is_empty() && watch.rel.is_none() {
                let id = watch.watch;
                self.dirs.remove(&dir);
                self.owners.remove(&id);
                let _ = self.watcher.unwatch(id);
            }
        }
    }

    /// Makes `rel` lead to the file `meta` describes, opening it if new.
    fn attach(&mut self, rel: &Path, full: &Path, meta: &Metadata) -> Result<(), CollectorError> {
        let inode = (meta.dev(), meta.ino());
        if let Some(id) = self.paths.get(rel)
            && self.files.get(id).is_some_and(|f| (f.dev, f.ino) == inode)
        {
            return Ok(());
        }
        self.detach(rel);
        let id = match self.by_inode.get(&inode) {
            Some(id) => *id,
            None => match self.open(rel, full)? {
                Some(id) => id,
                None => return Ok(()),
            },
        };
        let file = self.files.get_mut(&id).expect("indexed file exists");
        file.paths.insert(rel.to_owned());
        if file.retired_at.take().is_some() {
            self.retired.remove(&id);
        }
        self.paths.insert(rel.to_owned(), id);
        Ok(())
    }

    fn open(&mut self, rel: &Path, full: &Path) -> Result<Option<FileId>, CollectorError> {
        let file = match File::open(full) {
            Ok(file) => file,
            Err(error) => {
                tracing::warn!(path = %full.display(), %error, "Cannot open log file; skipping it until it changes.");
                return Ok(None);
            }
        };
        let Ok(meta) = file.metadata() else {
            return Ok(None);
        };
        let inode = (meta.dev(), meta.ino());
        if let Some(id) = self.by_inode.get(&inode) {
            // Replaced between stat and open: the new inode is already known.
            return Ok(Some(*id));
        }
        let watch = match self.watcher.watch_file(full) {
            Ok(watch) => watch,
            Err(WatcherError::Watch { .. }) => return Ok(None), // gone meanwhile
            Err(error) => return Err(error.into()),
        };
        self.next_id += 1;
        let id = FileId(self.next_id);
        let source: Arc<str> = Arc::from(full.to_string_lossy().as_ref());
        let mut tailed = TailedFile::new(id, file, inode, source);
        tailed.watch = Some(watch);
        tailed.paths.insert(rel.to_owned());
        self.files.insert(id, tailed);
        self.by_inode.insert(inode, id);
        self.owners.insert(watch, WatchOwner::File(id));
        tracing::debug!(path = %full.display(), ?inode, "Tailing file.");
        self.place(id)?;
        self.enqueue(id);
        Ok(Some(id))
    }

    /// `rel` no longer leads to the file it did: if no other path does, the
    /// file is retired: drained, then closed after `rotate_wait`.
    fn detach(&mut self, rel: &Path) {
        let Some(id) = self.paths.remove(rel) else {
            return;
        };
        let Some(file) = self.files.get_mut(&id) else {
            return;
        };
        file.paths.remove(rel);
        if file.paths.is_empty() && file.retired_at.is_none() {
            file.retired_at = Some(Instant::now());
            file.check_needed = true;
            self.retired.insert(id);
            self.stats.files_rotated += 1;
            self.enqueue(id);
        }
    }

    // ----- positions ------------------------------------------------------

    fn place_if_waiting(&mut self, id: FileId) -> Result<(), CollectorError> {
        if self
            .files
            .get(&id)
            .is_some_and(|f| f.phase != Phase::Reading)
        {
            self.place(id)?;
        }
        Ok(())
    }

    /// Decides where a file starts: its checkpoint, its original's position
    /// if it is a copy, or per `read_from`.
    fn place(&mut self, id: FileId) -> Result<(), CollectorError> {
        let now = Instant::now();
        let Some(file) = self.files.get_mut(&id) else {
            return Ok(());
        };
        let fp = match fingerprint(&file.file) {
            Ok(Some(fp)) => fp,
            Ok(None) | Err(_) => {
                file.phase = Phase::Pending;
                return Ok(());
            }
        };
        file.fingerprint = Some(fp);
        let key = file.key().expect("fingerprint just set");
        // The same inode and head: a restart, or a rename within the root.
        if let Some(orphan) = self.orphans.remove(&key) {
            let resumed = resume_at(file, &orphan.checkpoint);
            if !resumed {
                tracing::info!(path = %file.source, "File changed behind its checkpoint; reading it from the start.");
                file.seek(0, Vec::new());
            }
            file.dirty = true;
            return self.start_reading(id, fp);
        }
        // Another inode with this head whose reading stopped: a copy made by
        // copytruncate (or while we were down) continues where it stopped.
        let mut copy_in_progress = false;
        let candidates: Vec<CheckpointKey> = self
            .orphans
            .keys()
            .filter(|k| k.fingerprint == fp)
            .copied()
            .collect();
        for candidate in candidates {
            let checkpoint = self.orphans[&candidate].checkpoint.clone();
            if resume_at(file, &checkpoint) {
                self.orphans.remove(&candidate);
                self.superseded.push(candidate);
                self.stats.copies_adopted += 1;
                tracing::info!(path = %file.source, offset = checkpoint.offset, "File is a copy of one already read; continuing where that stopped.");
                file.dirty = true;
                return self.start_reading(id, fp);
            }
            copy_in_progress |= file.size().is_ok_and(|size| size < checkpoint.offset);
        }
        // A live file with this head: this one may be its copy, made just
        // before the original is truncated.
        if let Some(&original) = self.heads.get(&fp)
            && original != id
        {
            let file = &self.files[&id];
            let copied = prefix_copy_len(file, &self.files[&original]);
            // Not a prefix may mean the original was truncated before or
            // during the comparison: handle that first, then decide again.
            if copied.is_none() && self.changed_under_us(original) {
                self.truncated(original)?;
                return self.place(id);
            }
            let file = &self.files[&id];
            match copied {
                Some(verified) => {
                    // Its bytes are the original's, read (or to be read)
                    // there: wait for the original's truncation or end.
                    let file = self.files.get_mut(&id).expect("checked above");
                    tracing::debug!(path = %file.source, verified, "Holding a copy of a live file.");
                    file.phase = Phase::Held {
                        until: None,
                        copy_of: Some(original),
                        verified,
                    };
                    self.held.insert(id);
                    return Ok(());
                }
                None => {
                    if let Phase::Held {
                        copy_of: Some(_),
                        verified,
                        ..
                    } = file.phase
                    {
                        // It was a copy, then grew on its own: its own
                        // bytes start where the copy ended.
                        return self.start_copy_at(id, fp, verified);
                    }
                }
            }
        }
        let file = self.files.get_mut(&id).expect("checked above");
        if copy_in_progress {
            let until = match file.phase {
                Phase::Held {
                    until: Some(until), ..
                } => until,
                _ => now + self.config.rotate_wait,
            };
            if now < until {
                file.phase = Phase::Held {
                    until: Some(until),
                    copy_of: None,
                    verified: 0,
                };
                self.held.insert(id);
                return Ok(());
            }
        }
        // A new file.
        if self.starting && self.config.read_from == ReadFrom::Tail {
            let (offset, window) = tail_position(&file.file)?;
            file.seek(offset, window);
            file.dirty = offset > 0;
        }
        self.start_reading(id, fp)
    }

    /// Starts a copy after its first `offset` bytes, which its original
    /// has handed on.
    fn start_copy_at(
        &mut self,
        id: FileId,
        fp: Fingerprint,
        offset: u64,
    ) -> Result<(), CollectorError> {
        let file = self.files.get_mut(&id).expect("caller checked");
        tracing::debug!(path = %file.source, offset, "Starting a copy after its copied bytes.");
        let window = window_before(&file.file, offset)
            .ok()
            .flatten()
            .unwrap_or_default();
        file.seek(offset, window);
        file.dirty = offset > 0;
        self.start_reading(id, fp)
    }

    fn start_reading(&mut self, id: FileId, fp: Fingerprint) -> Result<(), CollectorError> {
        self.held.remove(&id);
        if let Some(file) = self.files.get_mut(&id) {
            file.phase = Phase::Reading;
        }
        self.heads.entry(fp).or_insert(id);
        self.enqueue(id);
        Ok(())
    }

    /// The file's head or size no longer matches what was read: its old
    /// position is kept for a copy to take over, and it is read anew.
    fn truncated(&mut self, id: FileId) -> Result<(), CollectorError> {
        let Some(file) = self.files.get_mut(&id) else {
            return Ok(());
        };
        tracing::info!(path = %file.source, offset = file.read_offset, "File was truncated; reading it from the start.");
        self.stats.truncations += 1;
        let old_fp = file.fingerprint;
        let checkpoint = file.checkpoint();
        // An unfinished last line stays with the old position: a copy that
        // takes over re-reads it whole; if none does, it is handed on as it
        // is once `rotate_wait` passes.
        let unfinished = Unfinished {
            bytes: std::mem::take(&mut file.partial),
            window: file.window().to_vec(),
            source: file.source.clone(),
            file: id,
        };
        file.fingerprint = None;
        file.seek(0, Vec::new());
        file.phase = Phase::Pending;
        if let Some(checkpoint) = checkpoint {
            self.changed.push(checkpoint.clone());
            self.orphans.insert(
                checkpoint.key,
                Orphan {
                    checkpoint,
                    since: Instant::now(),
                    unfinished: (!unfinished.bytes.is_empty()).then_some(unfinished),
                },
            );
        }
        if let Some(fp) = old_fp
            && self.heads.get(&fp) == Some(&id)
        {
            self.heads.remove(&fp);
        }
        self.place(id)?;
        // Copies waiting for this file's position may take it now.
        let held: Vec<FileId> = self.held.iter().copied().collect();
        for other in held {
            self.place(other)?;
        }
        self.trim_orphans();
        Ok(())
    }

    fn trim_orphans(&mut self) {
        if self.orphans.len() <= MAX_ORPHANS {
            return;
        }
        let mut by_age: Vec<(Instant, CheckpointKey)> =
            self.orphans.iter().map(|(k, o)| (o.since, *k)).collect();
        by_age.sort();
        for (_, key) in by_age.iter().take(self.orphans.len() - MAX_ORPHANS) {
            self.orphans.remove(key);
            self.superseded.push(*key);
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
    fn read_ready(&mut self, batch: &mut Batch) {
        while batch.buffered() < self.config.batch_bytes {
            let Some(id) = self.ready.pop_front() else {
                break;
            };
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
                        .map_err(|e| CollectorError::Root {
                            path: PathBuf::from(&*file.source),
                            source: e,
                        })?;
                }
                return Ok(false);
            }
            Phase::Reading => {}
        }
        if std::mem::take(&mut file.check_needed) && self.changed_under_us(id) {
            self.truncated(id)?;
        }
        let Some(file) = self.files.get_mut(&id) else {
            return Ok(false);
        };
        if file.phase != Phase::Reading {
            return Ok(false);
        }
        let start = file.read_offset;
        let turn = file
            .read_turn(batch, self.config.file_budget, self.config.max_line_bytes)
            .map_err(|e| CollectorError::Root {
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
                file.read_offset > 0 && fingerprint(&file.file).ok().flatten() != file.fingerprint
            }
            Err(_) => false,
        }
    }

    /// Adds the checkpoints of files that moved to the batch.
    fn publish(&mut self, batch: &mut Batch) {
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
        closes.chain(holds).chain(orphans).min()
    }

    fn service_deadlines(&mut self, batch: &mut Batch, now: Instant) -> Result<(), CollectorError> {
        let held: Vec<FileId> = self.held.iter().copied().collect();
        for id in held {
            if let Some(Phase::Held {
                until: Some(until), ..
            }) = self.files.get(&id).map(|f| f.phase)
                && now >= until
            {
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
            if file.phase == Phase::Reading && self.turn(id, batch)? {
                continue;
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
        let Some(mut file) = self.files.remove(&id) else {
            return;
        };
        if let Some(fp) = file.fingerprint
            && self.heads.get(&fp) == Some(&id)
        {
            self.heads.remove(&fp);
        }
        // Copies of this file hold only bytes it handed on: they continue
        // after them.
        let copies: Vec<(FileId, Option<u64>)> = self
            .held
            .iter()
            .filter_map(|other| {
                let copy = self.files.get(other)?;
                match copy.phase {
                    Phase::Held {
                        copy_of: Some(original),
                        ..
                    } if original == id => Some((*other, prefix_copy_len(copy, &file))),
                    _ => None,
                }
            })
            .collect();
        for (copy, verified) in copies {
            let fp = self.files[&copy]
                .fingerprint
                .expect("held files have a head");
            let result = match verified {
                Some(offset) => self.start_copy_at(copy, fp, offset),
                None => self.place(copy),
            };
            if let Err(error) = result {
                tracing::warn!(%error, "Could not place a copied file.");
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

/// Positions `file` at `checkpoint` if its bytes before the offset still
/// match; returns whether it did.
fn resume_at(file: &mut TailedFile, checkpoint: &Checkpoint) -> bool {
    match window_before(&file.file, checkpoint.offset) {
        Ok(Some(window)) if marker(&window) == checkpoint.marker => {
            file.seek(checkpoint.offset, window);
            true
        }
        _ => false,
    }
}

/// If `copy` is byte for byte a prefix of `original` (same head, same bytes
/// before its end), its length.
fn prefix_copy_len(copy: &TailedFile, original: &TailedFile) -> Option<u64> {
    let len = copy.size().ok()?;
    if original.size().ok()? < len {
        return None;
    }
    let a = window_before(&copy.file, len).ok()??;
    let b = window_before(&original.file, len).ok()??;
    (a == b).then_some(len)
}

/// The end of the last complete line, and the bytes before it.
fn tail_position(file: &File) -> Result<(u64, Vec<u8>), CollectorError> {
    use std::os::unix::fs::FileExt;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let look = size.min(64 * 1024);
    let mut buf = vec![0u8; look as usize];
    if file.read_exact_at(&mut buf, size - look).is_err() {
        return Ok((0, Vec::new()));
    }
    let end = match memchr::memrchr(b'\n', &buf) {
        Some(i) => i + 1,
        // No complete line at all: nothing to skip.
        None if look == size => return Ok((0, Vec::new())),
        // One line longer than we look back: start after it.
        None => buf.len(),
    };
    let window = buf[end.saturating_sub(64)..end].to_vec();
    Ok((size - look + end as u64, window))
}

#[cfg(test)]
mod tests;
