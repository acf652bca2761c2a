//! The macOS/BSD watcher, on kqueue's `EVFILT_VNODE`.
//!
//! It cannot be built or tested on the Linux machines this project is
//! developed on, so it is deliberately small:
//! - kqueue watches open descriptors, so each watch holds one open fd
//!   (`O_EVTONLY` on macOS, so it does not keep a volume busy). Two paths to one
//!   inode share a watch (keyed by device and inode).
//! - kqueue cannot name the entry that changed in a directory, so directory
//!   writes are reported as [`EventKind::DirectoryChanged`] and the caller
//!   rescans that directory.
//! - kqueue has no overflow: events are level state on the descriptor.
//! - A pipe registered with `EVFILT_READ` implements [`Wake`].

use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::{Event, EventKind, Wake, WatchId, Watcher, WatcherError};

#[cfg(target_os = "macos")]
const OPEN_FLAGS: libc::c_int = libc::O_EVTONLY | libc::O_CLOEXEC;
#[cfg(not(target_os = "macos"))]
const OPEN_FLAGS: libc::c_int = libc::O_RDONLY | libc::O_CLOEXEC;

struct Watched {
    fd: OwnedFd,
    directory: bool,
    key: (u64, u64),
}

/// A [`Watcher`] on kqueue.
pub struct KqueueWatcher {
    kq: OwnedFd,
    watches: HashMap<WatchId, Watched>,
    by_inode: HashMap<(u64, u64), WatchId>,
    wake_read: OwnedFd,
    wake: Arc<PipeWake>,
}

struct PipeWake {
    fd: OwnedFd,
}

impl Wake for PipeWake {
    fn wake(&self) {
        let byte = 1u8;
        // SAFETY: writes one byte we own; a full pipe already means "awake".
        unsafe { libc::write(self.fd.as_raw_fd(), (&byte as *const u8).cast(), 1) };
    }
}

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn change(ident: RawFd, filter: i32, flags: u32, fflags: u32) -> libc::kevent {
    // SAFETY: kevent is plain data; zero is a valid value for every field,
    // and field types differ between the BSDs, hence the casts.
    let mut ev: libc::kevent = unsafe { std::mem::zeroed() };
    ev.ident = ident as _;
    ev.filter = filter as _;
    ev.flags = flags as _;
    ev.fflags = fflags as _;
    ev
}

impl KqueueWatcher {
    /// Creates the kqueue and its wake-up pipe.
    pub fn new() -> Result<Self, WatcherError> {
        // SAFETY: plain syscalls; results are checked before use.
        unsafe {
            let kq = OwnedFd::from_raw_fd(check(libc::kqueue())?);
            let mut fds = [0; 2];
            check(libc::pipe(fds.as_mut_ptr()))?;
            let (read, write) = (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]));
            for fd in [&read, &write] {
                libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK);
                libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC);
            }
            let reg = change(
                read.as_raw_fd(),
                libc::EVFILT_READ as i32,
                (libc::EV_ADD | libc::EV_CLEAR) as u32,
                0,
            );
            check(libc::kevent(
                kq.as_raw_fd(),
                &reg,
                1,
                std::ptr::null_mut(),
                0,
                std::ptr::null(),
            ))?;
            Ok(Self {
                kq,
                watches: HashMap::new(),
                by_inode: HashMap::new(),
                wake_read: read,
                wake: Arc::new(PipeWake { fd: write }),
            })
        }
    }

    fn add(&mut self, path: &Path, directory: bool) -> Result<WatchId, WatcherError> {
        let error = |source: io::Error| WatcherError::Watch {
            path: path.to_owned(),
            source,
        };
        let c_path = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| error(io::Error::from(io::ErrorKind::InvalidInput)))?;
        // SAFETY: c_path is a valid NUL-terminated string; fd checked below.
        let fd = unsafe { libc::open(c_path.as_ptr(), OPEN_FLAGS) };
        let fd = unsafe { OwnedFd::from_raw_fd(check(fd).map_err(error)?) };
        // SAFETY: stat is plain data written by fstat.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        check(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) }).map_err(error)?;
        let key = (st.st_dev as u64, st.st_ino as u64);
        if let Some(id) = self.by_inode.get(&key) {
            return Ok(*id);
        }
        let fflags = libc::NOTE_WRITE
            | libc::NOTE_EXTEND
            | libc::NOTE_ATTRIB
            | libc::NOTE_LINK
            | libc::NOTE_RENAME
            | libc::NOTE_DELETE
            | libc::NOTE_REVOKE;
        let reg = change(
            fd.as_raw_fd(),
            libc::EVFILT_VNODE as i32,
            (libc::EV_ADD | libc::EV_CLEAR) as u32,
            fflags as u32,
        );
        // SAFETY: one valid change record, no output buffer.
        check(unsafe {
            libc::kevent(
                self.kq.as_raw_fd(),
                &reg,
                1,
                std::ptr::null_mut(),
                0,
                std::ptr::null(),
            )
        })
        .map_err(error)?;
        let id = WatchId(fd.as_raw_fd() as u64);
        self.by_inode.insert(key, id);
        self.watches.insert(id, Watched { fd, directory, key });
        Ok(id)
    }

    fn collect(&mut self, events: &mut Vec<Event>, timeout: Option<Duration>) -> io::Result<()> {
        let ts = timeout.map(|t| libc::timespec {
            tv_sec: t.as_secs() as _,
            tv_nsec: t.subsec_nanos() as _,
        });
        let ts_ptr = ts.as_ref().map_or(std::ptr::null(), |t| t as *const _);
        // SAFETY: kevent is plain data.
        let mut out: [libc::kevent; 64] = unsafe { std::mem::zeroed() };
        // SAFETY: `out` has room for 64 events; ts_ptr is null or valid.
        let n = unsafe {
            libc::kevent(
                self.kq.as_raw_fd(),
                std::ptr::null(),
                0,
                out.as_mut_ptr(),
                64,
                ts_ptr,
            )
        };
        if n < 0 {
            let error = io::Error::last_os_error();
            return if error.kind() == io::ErrorKind::Interrupted {
                Ok(())
            } else {
                Err(error)
            };
        }
        for ev in &out[..n as usize] {
            let ident = ev.ident as RawFd;
            if ident == self.wake_read.as_raw_fd() {
                let mut sink = [0u8; 64];
                // SAFETY: reads into a buffer we own; EAGAIN ends the drain.
                while unsafe { libc::read(ident, sink.as_mut_ptr().cast(), sink.len()) } > 0 {}
                continue;
            }
            let id = WatchId(ident as u64);
            let Some(watched) = self.watches.get(&id) else {
                continue;
            };
            let f = ev.fflags as u32;
            let kind = if f & (libc::NOTE_REVOKE as u32) != 0 {
                EventKind::Gone
            } else if watched.directory
                && f & (libc::NOTE_WRITE as u32 | libc::NOTE_LINK as u32) != 0
            {
                EventKind::DirectoryChanged
            } else if f & (libc::NOTE_WRITE as u32 | libc::NOTE_EXTEND as u32) != 0 {
                EventKind::Modified
            } else if f & (libc::NOTE_RENAME as u32) != 0 {
                EventKind::Moved
            } else {
                // NOTE_DELETE on a descriptor we hold open is an unlink: the
                // inode lives until we close it, like inotify's IN_ATTRIB.
                EventKind::MetadataChanged
            };
            events.push(Event {
                watch: Some(id),
                kind,
                name: None,
            });
        }
        Ok(())
    }
}

impl Watcher for KqueueWatcher {
    fn watch_directory(&mut self, path: &Path) -> Result<WatchId, WatcherError> {
        self.add(path, true)
    }

    fn watch_file(&mut self, path: &Path) -> Result<WatchId, WatcherError> {
        self.add(path, false)
    }

    fn unwatch(&mut self, watch: WatchId) -> Result<(), WatcherError> {
        // Closing the descriptor removes its kevents.
        if let Some(watched) = self.watches.remove(&watch) {
            self.by_inode.remove(&watched.key);
        }
        Ok(())
    }

    fn read_events(&mut self, events: &mut Vec<Event>) -> Result<(), WatcherError> {
        Ok(self.collect(events, Some(Duration::ZERO))?)
    }

    fn wait_events(
        &mut self,
        events: &mut Vec<Event>,
        timeout: Option<Duration>,
    ) -> Result<(), WatcherError> {
        Ok(self.collect(events, timeout)?)
    }

    fn waker(&self) -> Arc<dyn Wake> {
        self.wake.clone()
    }
}
