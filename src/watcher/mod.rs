//! File-system change notification behind one small trait.
//!
//! The collector never polls: it sleeps in [`Watcher::wait_events`] until the
//! kernel says something changed. Events are *hints*: a caller must treat an
//! event as "look at this again" and read the truth from the file system
//! (`stat`, `readdir`, `read`), because events can be coalesced, arrive for a
//! path that has changed again since, or be lost ([`EventKind::Overflow`]).
//!
//! Implementations: [`inotify`] (Linux, tested for real), `kqueue` (macOS and
//! the BSDs, cfg-gated) and [`mock`] (deterministic collector tests).

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[cfg(target_os = "linux")]
pub mod inotify;
#[cfg(any(
    target_os = "macos",
    target_os = "freebsd",
    target_os = "openbsd",
    target_os = "netbsd",
    target_os = "dragonfly"
))]
pub mod kqueue;
pub mod mock;

/// Identifies one watch. Watching the same inode twice (through two paths,
/// a hard link or a symlink) may return the same id: callers keep their own
/// reference counts and call [`Watcher::unwatch`] once per id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WatchId(pub u64);

/// What a watch reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// An entry appeared in a watched directory (created, or moved in).
    /// `name` is the entry's name.
    Created,
    /// An entry left a watched directory (deleted, or moved out).
    /// `name` is the entry's name.
    Removed,
    /// A watched directory changed but the implementation cannot say which
    /// entry (kqueue): the caller rescans the directory.
    DirectoryChanged,
    /// A watched file was written to or truncated.
    Modified,
    /// A watched file's metadata changed; an unlink shows up here as a
    /// lower link count.
    MetadataChanged,
    /// The watched file or directory itself was renamed.
    Moved,
    /// The watched object is gone (its inode was freed, or its file system
    /// unmounted) and the watch has been removed by the kernel.
    Gone,
    /// Events were lost because the kernel queue overflowed. The caller must
    /// re-examine everything it watches.
    Overflow,
}

/// One notification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The watch that fired; `None` only for [`EventKind::Overflow`].
    pub watch: Option<WatchId>,
    /// What happened.
    pub kind: EventKind,
    /// For directory events, the name of the entry concerned.
    pub name: Option<OsString>,
}

/// Errors from a watcher.
#[derive(Debug, thiserror::Error)]
pub enum WatcherError {
    /// The per-user watch limit was reached.
    #[error(
        "cannot watch {path}: the inotify watch limit is exhausted; raise it with \
         `sysctl fs.inotify.max_user_watches=<more>` (each watched file and directory uses one)"
    )]
    WatchLimit {
        /// The path that could not be watched.
        path: PathBuf,
    },
    /// The per-user limit of watcher instances was reached.
    #[error(
        "cannot create a file watcher: the per-user instance limit is exhausted; raise it with \
         `sysctl fs.inotify.max_user_instances=<more>`"
    )]
    InstanceLimit,
    /// Any other error while watching a path.
    #[error("cannot watch {path}: {source}")]
    Watch {
        /// The path that could not be watched.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Reading events or setting up the watcher failed.
    #[error("file watcher failed: {0}")]
    Io(#[from] io::Error),
}

/// Wakes a thread blocked in [`Watcher::wait_events`] from another thread
/// (used for shutdown).
pub trait Wake: Send + Sync {
    /// Makes the current or next `wait_events` call return promptly.
    fn wake(&self);
}

/// A source of file-system events.
///
/// Contract for callers:
/// - Paths are followed if they are symlinks: the watch is placed on the
///   target. Watching through a link whose target is later replaced keeps
///   watching the old target; watch the target's directory to see the new one.
/// - Watching something already watched returns the same [`WatchId`].
/// - A watch on a file stays valid across renames and after the last link is
///   removed, as long as the inode lives (for instance because the caller still
///   holds it open).
pub trait Watcher: Send {
    /// Watches a directory for entries created, moved in, removed or moved out,
    /// and for the directory itself being moved or deleted.
    fn watch_directory(&mut self, path: &Path) -> Result<WatchId, WatcherError>;

    /// Watches a file for writes, truncation, metadata changes (link count),
    /// renames and deletion.
    fn watch_file(&mut self, path: &Path) -> Result<WatchId, WatcherError>;

    /// Removes a watch. Removing a watch the kernel already dropped is not an
    /// error.
    fn unwatch(&mut self, watch: WatchId) -> Result<(), WatcherError>;

    /// Appends the events that are ready now to `events`, without blocking.
    fn read_events(&mut self, events: &mut Vec<Event>) -> Result<(), WatcherError>;

    /// Blocks until at least one event is ready, the timeout passes, or a
    /// [`Wake`] handle is used; then appends what is ready to `events`.
    /// `None` waits without limit.
    fn wait_events(
        &mut self,
        events: &mut Vec<Event>,
        timeout: Option<Duration>,
    ) -> Result<(), WatcherError>;

    /// A handle that interrupts `wait_events` from another thread.
    fn waker(&self) -> std::sync::Arc<dyn Wake>;
}

/// The best watcher for this platform.
#[cfg(target_os = "linux")]
pub fn platform_watcher() -> Result<Box<dyn Watcher>, WatcherError> {
    Ok(Box::new(inotify::InotifyWatcher::new()?))
}

/// The best watcher for this platform.
#[cfg(any(
    target_os = "macos",
    target_os = "freebsd",
    target_os = "openbsd",
    target_os = "netbsd",
    target_os = "dragonfly"
))]
pub fn platform_watcher() -> Result<Box<dyn Watcher>, WatcherError> {
    Ok(Box::new(kqueue::KqueueWatcher::new()?))
}
