//! The store's own upkeep on a thread of its own: every write is made
//! durable within the flush interval, heads that grew large are flushed at
//! once (so compression runs beside the writer rather than inside its
//! call), and retention runs at most once a minute after a flush. An idle
//! store does not wake.
//!
//! [`Database::start_maintenance`] returns a [`MaintenanceGuard`]; the
//! thread lives as long as the guard, and stopping it (explicitly, or by
//! dropping the guard) flushes what is left, so a store never stops with
//! written entries only in memory.

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{Database, StoreError};

/// How often retention is checked at most (after a flush).
const RETENTION_EVERY: Duration = Duration::from_secs(60);

#[derive(Default)]
struct State {
    dirty: bool,
    /// Heads are large: flush without waiting for the interval.
    urgent: bool,
    stop: bool,
    /// Maintenance threads running; with none, writers flush themselves.
    threads: usize,
}

/// Wakes the maintenance thread when something was written.
#[derive(Default)]
pub(super) struct Signal {
    state: Mutex<State>,
    ready: Condvar,
}

impl Signal {
    /// Says entries or checkpoints were written.
    pub(super) fn written(&self) {
        // Only the first write since a flush starts the interval; waking
        // the thread for every later one would cost a wake-up per batch
        // for nothing.
        let was_dirty = std::mem::replace(
            &mut self.state.lock().unwrap_or_else(|e| e.into_inner()).dirty,
            true,
        );
        if !was_dirty {
            self.ready.notify_one();
        }
    }

    /// Asks for a flush as soon as possible; false when no maintenance
    /// thread runs, and the caller must flush itself.
    pub(super) fn flush_soon(&self) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.threads == 0 || s.stop {
            return false;
        }
        if !std::mem::replace(&mut s.urgent, true) {
            self.ready.notify_one();
        }
        true
    }

    fn running(&self, delta: isize) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.threads = s.threads.saturating_add_signed(delta);
    }

    fn stop(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).stop = true;
        self.ready.notify_one();
    }
}

/// Keeps the maintenance thread running; stops it, with a final flush,
/// when stopped or dropped.
pub struct MaintenanceGuard {
    db: Arc<Database>,
    thread: Option<JoinHandle<()>>,
}

impl Database {
    /// Starts the flush-and-retention thread: writes become durable within
    /// `interval`. One per store; a second call stops nothing and starts a
    /// second thread that shares the work.
    pub fn start_maintenance(
        self: &Arc<Self>,
        interval: Duration,
    ) -> std::io::Result<MaintenanceGuard> {
        let db = self.clone();
        self.maintenance.running(1);
        let thread = std::thread::Builder::new()
            .name("store-maintenance".into())
            .spawn(move || {
                maintain(&db, interval);
                db.maintenance.running(-1);
            })
            .inspect_err(|_| self.maintenance.running(-1))?;
        Ok(MaintenanceGuard {
            db: self.clone(),
            thread: Some(thread),
        })
    }
}

impl MaintenanceGuard {
    /// Stops the thread and flushes what is left; the error is the final
    /// flush's (entries then stay in the tailed files, re-read next start).
    pub fn stop(mut self) -> Result<(), StoreError> {
        self.halt();
        self.db.flush()
    }

    fn halt(&mut self) {
        self.db.maintenance.stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for MaintenanceGuard {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.halt();
            if let Err(error) = self.db.flush() {
                tracing::warn!(%error, "The final flush of the log store failed; the lines since the last flush are read again on the next start.");
            }
        }
    }
}

fn maintain(db: &Database, interval: Duration) {
    let Signal { state, ready } = &db.maintenance;
    let mut last_retention: Option<Instant> = None;
    loop {
        {
            let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
            // Sleep until something is written: an idle node does not wake.
            while !s.dirty && !s.urgent && !s.stop {
                s = ready.wait(s).unwrap_or_else(|e| e.into_inner());
            }
            if s.stop {
                return;
            }
            // Gather writes for one interval, then flush them together,
            // unless the heads are already large.
            let deadline = Instant::now() + interval;
            while !s.stop && !s.urgent {
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
            s.urgent = false;
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
    use crate::log_database::labels::Labels;
    use crate::log_database::{Config, StreamEntries, WriteBatch, now_ns};

    /// A write of `lines` to one stream that advances checkpoint `k` to
    /// `at`; stamped now, since an old timestamp would fall to retention.
    fn write_at(lines: &[&[u8]], at: &[u8]) -> WriteBatch {
        WriteBatch {
            streams: vec![StreamEntries::with(
                Labels::new([("path", "x")]),
                lines.iter().map(|line| (now_ns(), *line)),
            )],
            checkpoints: vec![("k".into(), Some(at.to_vec()))],
        }
    }

    /// Waits until checkpoint `k` is durable at `at`; `what` says what
    /// went wrong if it never is.
    fn wait_durable(db: &Database, at: &[u8], what: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while db.checkpoints().get("k").map(Vec::as_slice) != Some(at) {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn maintenance_makes_writes_durable_and_its_guard_stops_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Database::open(dir.path(), Config::default()).unwrap().0);
        let guard = db.start_maintenance(Duration::from_millis(20)).unwrap();
        db.write(&write_at(&[b"line"], b"v")).unwrap();
        wait_durable(&db, b"v", "never flushed");
        guard.stop().unwrap();
        assert_eq!(db.stats().chunks, 1);
    }

    #[test]
    fn large_heads_are_flushed_by_the_thread_without_waiting_for_the_interval() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            block_bytes: 1024,
            ..Config::default()
        };
        let db = Arc::new(Database::open(dir.path(), config).unwrap().0);
        let line = vec![b'x'; 600];
        let batch = |at: &[u8]| write_at(&[&line, &line], at);
        // Without the thread, the writer flushes a large head itself.
        db.write(&batch(b"1")).unwrap();
        db.write(&batch(b"2")).unwrap();
        assert_eq!(db.checkpoints()["k"], b"2", "flushed inside write");
        let guard = db.start_maintenance(Duration::from_secs(3600)).unwrap();
        db.write(&batch(b"3")).unwrap();
        wait_durable(&db, b"3", "an hour's interval was waited for");
        // Two blocks a write: its two lines are more than `block_bytes`.
        assert_eq!(db.stats().chunks, 6);
        // A small write still waits for the interval.
        db.write(&write_at(&[b"small"], b"4")).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(db.checkpoints()["k"], b"3");
        drop(guard);
        assert_eq!(db.checkpoints()["k"], b"4");
        // With the thread gone, writers flush large heads themselves again.
        db.write(&batch(b"5")).unwrap();
        assert_eq!(db.checkpoints()["k"], b"5");
    }

    #[test]
    fn a_writer_a_whole_flush_ahead_of_compression_waits_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            flush_bytes: 4096,
            ..Config::default()
        };
        let db = Arc::new(Database::open(dir.path(), config).unwrap().0);
        let guard = db.start_maintenance(Duration::from_secs(3600)).unwrap();
        let batch = |line: &[u8], at: &[u8]| write_at(&[line], at);
        let large = vec![b'x'; 5000];
        // A new source is durable at once, before any stall.
        db.write(&batch(b"first", b"0")).unwrap();
        let (started_tx, started) = std::sync::mpsc::channel();
        let (go, go_rx) = std::sync::mpsc::channel::<()>();
        db.lock_writer().stall = Some((started_tx, go_rx));
        // A flush's worth: the thread compresses it (and stalls there)
        // while the writer goes on.
        db.write(&batch(&large, b"1")).unwrap();
        started
            .recv_timeout(Duration::from_secs(10))
            .expect("the thread flushes a large head");
        let write_aside = |line: Vec<u8>, at: &'static [u8]| {
            let (db, (done_tx, done)) = (db.clone(), std::sync::mpsc::channel());
            std::thread::spawn(move || {
                db.write(&batch(&line, at)).unwrap();
                let _ = done_tx.send(());
            });
            done
        };
        // Less than a whole flush beside it: the writer does not wait.
        write_aside(b"small".to_vec(), b"2")
            .recv_timeout(Duration::from_secs(10))
            .expect("a small write waited for the flush being compressed");
        // A whole flush beside it: the writer waits for the one being
        // compressed, and the thread takes the next.
        let done = write_aside(large.clone(), b"3");
        assert!(
            done.recv_timeout(Duration::from_millis(200)).is_err(),
            "the writer ran a whole flush ahead of compression"
        );
        assert_eq!(db.checkpoints()["k"], b"0");
        drop(go);
        done.recv_timeout(Duration::from_secs(10))
            .expect("the writer goes on once the flush is done");
        wait_durable(&db, b"3", "the pending flush waited for the interval");
        guard.stop().unwrap();
        // Without the thread, the writer flushes a large head itself.
        db.lock_writer().stall = None;
        db.write(&batch(&large, b"4")).unwrap();
        assert_eq!(db.checkpoints()["k"], b"4");
    }

    #[test]
    fn dropping_the_guard_flushes_what_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Database::open(dir.path(), Config::default()).unwrap().0);
        let guard = db.start_maintenance(Duration::from_secs(3600)).unwrap();
        let batch = |line: &[u8], at: &[u8]| write_at(&[line], at);
        // The first checkpoint of a source is durable at once; the next
        // write waits for the interval.
        db.write(&batch(b"one", b"1")).unwrap();
        db.write(&batch(b"two", b"2")).unwrap();
        assert_eq!(
            db.checkpoints()["k"],
            b"1",
            "an hour's interval has not passed"
        );
        drop(guard);
        assert_eq!(db.checkpoints()["k"], b"2");
    }
}
