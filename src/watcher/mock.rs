//! A watcher that reports only what a test tells it to, so collector tests can
//! decide exactly when (and whether) an event arrives: a lost event, an
//! overflow, or a burst of events in one read.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{Event, EventKind, Wake, WatchId, Watcher, WatcherError};

#[derive(Default)]
struct State {
    next_id: u64,
    /// Watched paths (as the caller gave them) and their ids.
    watches: BTreeMap<PathBuf, WatchId>,
    pending: Vec<Event>,
    woken: bool,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    ready: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock already failed; keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The watcher half, handed to the code under test.
pub struct MockWatcher {
    shared: Arc<Shared>,
}

/// The test's half: inject events and inspect the watches.
#[derive(Clone)]
pub struct MockHandle {
    shared: Arc<Shared>,
}

/// Creates a connected watcher and handle.
pub fn mock_watcher() -> (MockWatcher, MockHandle) {
    let shared = Arc::new(Shared::default());
    (
        MockWatcher {
            shared: shared.clone(),
        },
        MockHandle { shared },
    )
}

impl MockHandle {
    /// Queues an event as the kernel would.
    pub fn push(&self, event: Event) {
        self.shared.lock().pending.push(event);
        self.shared.ready.notify_all();
    }

    /// Queues an event for the watch on `path` (which must be watched).
    pub fn push_for(&self, path: &Path, kind: EventKind, name: Option<&str>) {
        let watch = self.watch_of(path);
        assert!(watch.is_some(), "{} is not watched", path.display());
        self.push(Event {
            watch,
            kind,
            name: name.map(OsString::from),
        });
    }

    /// Queues an overflow: the caller must rescan everything.
    pub fn overflow(&self) {
        self.push(Event {
            watch: None,
            kind: EventKind::Overflow,
            name: None,
        });
    }

    /// The watch id for `path`, if it is watched.
    pub fn watch_of(&self, path: &Path) -> Option<WatchId> {
        self.shared.lock().watches.get(path).copied()
    }

    /// Every path currently watched.
    pub fn watched(&self) -> Vec<PathBuf> {
        self.shared.lock().watches.keys().cloned().collect()
    }
}

impl MockWatcher {
    fn add(&mut self, path: &Path) -> Result<WatchId, WatcherError> {
        if !path.exists() {
            return Err(WatcherError::Watch {
                path: path.to_owned(),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            });
        }
        let mut state = self.shared.lock();
        if let Some(id) = state.watches.get(path) {
            return Ok(*id);
        }
        state.next_id += 1;
        let id = WatchId(state.next_id);
        state.watches.insert(path.to_owned(), id);
        Ok(id)
    }
}

impl Watcher for MockWatcher {
    fn watch_directory(&mut self, path: &Path) -> Result<WatchId, WatcherError> {
        self.add(path)
    }

    fn watch_file(&mut self, path: &Path) -> Result<WatchId, WatcherError> {
        self.add(path)
    }

    fn unwatch(&mut self, watch: WatchId) -> Result<(), WatcherError> {
        self.shared.lock().watches.retain(|_, id| *id != watch);
        Ok(())
    }

    fn read_events(&mut self, events: &mut Vec<Event>) -> Result<(), WatcherError> {
        events.append(&mut self.shared.lock().pending);
        Ok(())
    }

    fn wait_events(
        &mut self,
        events: &mut Vec<Event>,
        timeout: Option<Duration>,
    ) -> Result<(), WatcherError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut state = self.shared.lock();
        while state.pending.is_empty() && !state.woken {
            match deadline {
                None => {
                    state = self
                        .shared
                        .ready
                        .wait(state)
                        .unwrap_or_else(|e| e.into_inner())
                }
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    state = self
                        .shared
                        .ready
                        .wait_timeout(state, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        }
        state.woken = false;
        events.append(&mut state.pending);
        Ok(())
    }

    fn waker(&self) -> Arc<dyn Wake> {
        Arc::new(MockHandle {
            shared: self.shared.clone(),
        })
    }
}

impl Wake for MockHandle {
    fn wake(&self) {
        self.shared.lock().woken = true;
        self.shared.ready.notify_all();
    }
}
