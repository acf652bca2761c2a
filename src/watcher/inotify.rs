//! The Linux watcher: one inotify instance plus an eventfd for wake-ups.
//!
//! inotify watches inodes, not names: a watch placed through a symlink lands
//! on the target, and a watched file keeps reporting after a rename or an
//! unlink while the inode lives. When its event queue overflows
//! (`fs.inotify.max_queued_events`) the kernel drops events and says so with
//! `IN_Q_OVERFLOW`, which we pass on as [`EventKind::Overflow`].

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};

use super::{Event, EventKind, Wake, WatchId, Watcher, WatcherError};

/// Size of the buffer events are read into; the kernel never splits an event.
const EVENT_BUFFER_BYTES: usize = 64 * 1024;

/// A [`Watcher`] on Linux inotify.
pub struct InotifyWatcher {
    inotify: Inotify,
    descriptors: HashMap<WatchId, WatchDescriptor>,
    buffer: Vec<u8>,
    wake: Arc<EventFd>,
}

impl InotifyWatcher {
    /// Creates an inotify instance and its wake-up eventfd.
    pub fn new() -> Result<Self, WatcherError> {
        let inotify = Inotify::init().map_err(|error| match error.raw_os_error() {
            Some(libc::EMFILE) => WatcherError::InstanceLimit,
            _ => WatcherError::Io(error),
        })?;
        Ok(Self {
            inotify,
            descriptors: HashMap::new(),
            buffer: vec![0; EVENT_BUFFER_BYTES],
            wake: Arc::new(EventFd::new()?),
        })
    }

    fn add(&mut self, path: &Path, mask: WatchMask) -> Result<WatchId, WatcherError> {
        let descriptor =
            self.inotify
                .watches()
                .add(path, mask)
                .map_err(|error| match error.raw_os_error() {
                    Some(libc::ENOSPC) => WatcherError::WatchLimit {
                        path: path.to_owned(),
                    },
                    _ => WatcherError::Watch {
                        path: path.to_owned(),
                        source: error,
                    },
                })?;
        let id = WatchId(descriptor.get_watch_descriptor_id() as u64);
        self.descriptors.insert(id, descriptor);
        Ok(id)
    }

    fn poll(&self, timeout: Option<Duration>) -> io::Result<()> {
        let mut fds = [
            libc::pollfd {
                fd: self.inotify.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: self.wake.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let timeout_ms = match timeout {
            None => -1,
            // Round up so a short timeout does not turn into a busy loop.
            Some(t) => t.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32,
        };
        // SAFETY: `fds` is a valid array of two pollfd structs for the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        if n < 0 {
            let error = io::Error::last_os_error();
            // A signal interrupted the wait: return so the caller can look at
            // its shutdown flag.
            if error.kind() == io::ErrorKind::Interrupted {
                return Ok(());
            }
            return Err(error);
        }
        if fds[1].revents & libc::POLLIN != 0 {
            self.wake.drain();
        }
        Ok(())
    }
}

fn translate(mask: EventMask) -> Option<EventKind> {
    if mask.contains(EventMask::Q_OVERFLOW) {
        Some(EventKind::Overflow)
    } else if mask.intersects(EventMask::CREATE | EventMask::MOVED_TO) {
        Some(EventKind::Created)
    } else if mask.intersects(EventMask::DELETE | EventMask::MOVED_FROM) {
        Some(EventKind::Removed)
    } else if mask.contains(EventMask::MODIFY) {
        Some(EventKind::Modified)
    } else if mask.contains(EventMask::ATTRIB) {
        Some(EventKind::MetadataChanged)
    } else if mask.contains(EventMask::MOVE_SELF) {
        Some(EventKind::Moved)
    } else if mask.intersects(EventMask::DELETE_SELF | EventMask::IGNORED | EventMask::UNMOUNT) {
        Some(EventKind::Gone)
    } else {
        None
    }
}

impl Watcher for InotifyWatcher {
    fn watch_directory(&mut self, path: &Path) -> Result<WatchId, WatcherError> {
        self.add(
            path,
            WatchMask::CREATE
                | WatchMask::MOVED_TO
                | WatchMask::DELETE
                | WatchMask::MOVED_FROM
                | WatchMask::DELETE_SELF
                | WatchMask::MOVE_SELF
                | WatchMask::ONLYDIR,
        )
    }

    fn watch_file(&mut self, path: &Path) -> Result<WatchId, WatcherError> {
        self.add(
            path,
            WatchMask::MODIFY | WatchMask::ATTRIB | WatchMask::MOVE_SELF | WatchMask::DELETE_SELF,
        )
    }

    fn unwatch(&mut self, watch: WatchId) -> Result<(), WatcherError> {
        if let Some(descriptor) = self.descriptors.remove(&watch) {
            match self.inotify.watches().remove(descriptor) {
                Ok(()) => {}
                // The kernel already removed it (inode freed, IN_IGNORED sent).
                Err(error) if error.raw_os_error() == Some(libc::EINVAL) => {}
                Err(error) => return Err(WatcherError::Io(error)),
            }
        }
        Ok(())
    }

    fn read_events(&mut self, events: &mut Vec<Event>) -> Result<(), WatcherError> {
        loop {
            let batch = match self.inotify.read_events(&mut self.buffer) {
                Ok(batch) => batch,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(WatcherError::Io(error)),
            };
            let mut gone = Vec::new();
            for raw in batch {
                let Some(kind) = translate(raw.mask) else {
                    continue;
                };
                let watch = if kind == EventKind::Overflow {
                    None
                } else {
                    Some(WatchId(raw.wd.get_watch_descriptor_id() as u64))
                };
                if raw.mask.contains(EventMask::IGNORED)
                    && let Some(id) = watch
                {
                    gone.push(id);
                }
                events.push(Event {
                    watch,
                    kind,
                    name: raw.name.map(|n| n.to_owned()),
                });
            }
            for id in gone {
                self.descriptors.remove(&id);
            }
        }
    }

    fn wait_events(
        &mut self,
        events: &mut Vec<Event>,
        timeout: Option<Duration>,
    ) -> Result<(), WatcherError> {
        let before = events.len();
        self.read_events(events)?;
        if events.len() == before {
            self.poll(timeout)?;
            self.read_events(events)?;
        }
        Ok(())
    }

    fn waker(&self) -> Arc<dyn Wake> {
        self.wake.clone()
    }
}

/// A non-blocking eventfd used only to interrupt `poll`.
struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    fn new() -> io::Result<Self> {
        // SAFETY: plain syscall; the result is checked before use.
        let fd: RawFd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a freshly created descriptor that nothing else owns.
        Ok(Self {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    fn drain(&self) {
        let mut value = 0u64;
        // SAFETY: reads 8 bytes into a u64 we own; failure (EAGAIN) is harmless.
        unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                (&mut value as *mut u64).cast(),
                std::mem::size_of::<u64>(),
            );
        }
    }
}

impl Wake for EventFd {
    fn wake(&self) {
        let value = 1u64;
        // SAFETY: writes 8 bytes from a u64 we own; a full counter (EAGAIN)
        // still leaves the fd readable, which is all we need.
        unsafe {
            libc::write(
                self.fd.as_raw_fd(),
                (&value as *const u64).cast(),
                std::mem::size_of::<u64>(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::io::Write;

    /// Waits for an event matching `pred`, keeping the others in `seen` for
    /// later calls (one read may return several events).
    fn wait_for(
        watcher: &mut InotifyWatcher,
        seen: &mut Vec<Event>,
        pred: impl Fn(&Event) -> bool,
    ) -> Event {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(i) = seen.iter().position(&pred) {
                return seen.remove(i);
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            assert!(!left.is_zero(), "no matching event; got {seen:?}");
            watcher.wait_events(seen, Some(left)).unwrap();
        }
    }

    #[test]
    fn reports_directory_entries_and_file_writes() {
        let dir = tempfile::tempdir().unwrap();
        let mut watcher = InotifyWatcher::new().unwrap();
        let mut seen = Vec::new();
        let d = watcher.watch_directory(dir.path()).unwrap();

        let path = dir.path().join("a.log");
        let mut file = fs::File::create(&path).unwrap();
        let created = wait_for(&mut watcher, &mut seen, |e| e.kind == EventKind::Created);
        assert_eq!(created.watch, Some(d));
        assert_eq!(created.name.as_deref(), Some("a.log".as_ref()));

        let f = watcher.watch_file(&path).unwrap();
        file.write_all(b"x\n").unwrap();
        let modified = wait_for(&mut watcher, &mut seen, |e| e.kind == EventKind::Modified);
        assert_eq!(modified.watch, Some(f));

        fs::rename(&path, dir.path().join("a.log.1")).unwrap();
        wait_for(&mut watcher, &mut seen, |e| {
            e.kind == EventKind::Moved && e.watch == Some(f)
        });
        wait_for(&mut watcher, &mut seen, |e| {
            e.kind == EventKind::Removed && e.name.as_deref() == Some("a.log".as_ref())
        });

        // Unlinking an open file is a link-count change, not its end.
        fs::remove_file(dir.path().join("a.log.1")).unwrap();
        wait_for(&mut watcher, &mut seen, |e| {
            e.kind == EventKind::MetadataChanged && e.watch == Some(f)
        });
        drop(file);
        wait_for(&mut watcher, &mut seen, |e| {
            e.kind == EventKind::Gone && e.watch == Some(f)
        });
        // The kernel dropped the watch; unwatching it again is fine.
        watcher.unwatch(f).unwrap();
    }

    #[test]
    fn same_inode_gives_same_watch_and_symlinks_are_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target.log");
        fs::write(&target, b"").unwrap();
        let link = dir.path().join("link.log");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let mut watcher = InotifyWatcher::new().unwrap();
        let a = watcher.watch_file(&target).unwrap();
        let b = watcher.watch_file(&link).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn waker_interrupts_a_blocking_wait() {
        let mut watcher = InotifyWatcher::new().unwrap();
        let waker = watcher.waker();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            waker.wake();
        });
        let start = std::time::Instant::now();
        let mut events = Vec::new();
        watcher.wait_events(&mut events, None).unwrap();
        assert!(events.is_empty());
        assert!(start.elapsed() < Duration::from_secs(10));
        t.join().unwrap();
    }

    #[test]
    fn missing_path_is_a_clear_error() {
        let mut watcher = InotifyWatcher::new().unwrap();
        let error = watcher
            .watch_directory(Path::new("/nonexistent/monitoring-rs"))
            .unwrap_err();
        assert!(error.to_string().contains("/nonexistent/monitoring-rs"));
    }
}
