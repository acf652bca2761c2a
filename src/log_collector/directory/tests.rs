//! Behaviour tests of the directory collector against real files, with real
//! inotify, and with the mock watcher where the test must decide which events
//! arrive.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::batch::{Batch, LineKind};
use super::*;
use crate::log_collector::checkpoint::CheckpointSet;
use crate::watcher::EventKind;
use crate::watcher::inotify::InotifyWatcher;
use crate::watcher::mock::{MockHandle, mock_watcher};
use testkit::append;

#[derive(Clone, Debug, PartialEq, Eq)]
struct Got {
    source: String,
    text: String,
    kind: LineKind,
}

/// A collector over a temporary root, keeping checkpoints the way a store
/// would: applied together with the lines of each batch.
struct Tail {
    _dir: tempfile::TempDir,
    base: PathBuf,
    root: PathBuf,
    config: DirectoryConfig,
    collector: Option<DirectoryCollector>,
    checkpoints: CheckpointSet,
    got: Vec<Got>,
    batches: Vec<Vec<Got>>,
}

impl Tail {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().to_owned();
        let root = base.join("root");
        fs::create_dir(&root).unwrap();
        let mut config = DirectoryConfig::new(&root);
        config.rotate_wait = Duration::from_millis(100);
        Self {
            _dir: dir,
            base,
            root,
            config,
            collector: None,
            checkpoints: CheckpointSet::default(),
            got: Vec::new(),
            batches: Vec::new(),
        }
    }

    fn start(&mut self) {
        let watcher = Box::new(InotifyWatcher::new().unwrap());
        self.collector =
            Some(DirectoryCollector::new(self.config.clone(), watcher, &self.checkpoints).unwrap());
    }

    fn start_mock(&mut self) -> MockHandle {
        let (watcher, handle) = mock_watcher();
        self.collector = Some(
            DirectoryCollector::new(self.config.clone(), Box::new(watcher), &self.checkpoints)
                .unwrap(),
        );
        handle
    }

    fn stop(&mut self) {
        self.collector = None;
    }

    fn collector(&mut self) -> &mut DirectoryCollector {
        self.collector.as_mut().expect("collector started")
    }

    /// Collects until a batch comes back idle after `idle`.
    fn pump_for(&mut self, idle: Duration) -> Vec<Got> {
        let mut new = Vec::new();
        let mut batch = Batch::default();
        loop {
            self.collector().next_batch(&mut batch, Some(idle)).unwrap();
            if batch.is_idle() {
                break;
            }
            let lines: Vec<Got> = batch
                .lines()
                .map(|l| Got {
                    source: l.source.to_string(),
                    text: String::from_utf8_lossy(l.bytes).into_owned(),
                    kind: l.kind,
                })
                .collect();
            self.checkpoints.apply(&batch.checkpoints, &batch.forgotten);
            self.batches.push(lines.clone());
            new.extend(lines);
        }
        self.got.extend(new.iter().cloned());
        new
    }

    fn pump(&mut self) -> Vec<String> {
        texts(&self.pump_for(Duration::from_millis(150)))
    }

    /// Pumps until deadlines set by the collector (rotate_wait) have passed.
    fn settle(&mut self) -> Vec<String> {
        let until = Instant::now() + self.config.rotate_wait * 3;
        let mut new = Vec::new();
        while Instant::now() < until {
            new.extend(self.pump_for(Duration::from_millis(50)));
        }
        texts(&new)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    fn label(&self, name: &str) -> String {
        self.path(name).to_string_lossy().into_owned()
    }
}

fn texts(got: &[Got]) -> Vec<String> {
    got.iter().map(|g| g.text.clone()).collect()
}

fn truncate(path: &Path) {
    File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(0)
        .unwrap();
}

fn numbered(prefix: &str, range: std::ops::Range<usize>) -> String {
    range.map(|i| format!("{prefix} line {i:04}\n")).collect()
}

fn expect_numbered(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix} line {i:04}")).collect()
}

/// Descriptors this process holds open on files under `dir`.
fn open_fds_under(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.starts_with(dir))
        .collect()
}

#[test]
fn files_present_at_start_are_read_from_the_head() {
    let mut t = Tail::new();
    append(&t.path("a.log"), &numbered("a", 0..3));
    append(&t.path("b.log"), &numbered("b", 0..2));
    t.start();
    let mut lines = t.pump();
    lines.sort();
    let mut want = expect_numbered("a", 0..3);
    want.extend(expect_numbered("b", 0..2));
    assert_eq!(lines, want);
    assert!(t.got.iter().all(|g| g.kind == LineKind::Complete));
    assert!(t.got.iter().any(|g| g.source == t.label("b.log")));
}

#[test]
fn read_from_tail_skips_what_was_there() {
    let mut t = Tail::new();
    append(&t.path("a.log"), &numbered("old", 0..5));
    t.config.read_from = ReadFrom::Tail;
    t.start();
    assert!(t.pump().is_empty());
    append(&t.path("a.log"), &numbered("new", 0..2));
    assert_eq!(t.pump(), expect_numbered("new", 0..2));
    // A file created after start is new: read from its head even in tail mode.
    append(&t.path("later.log"), &numbered("later", 0..2));
    assert_eq!(t.pump(), expect_numbered("later", 0..2));
    // The tail position is a checkpoint: a restart does not skip ahead again.
    t.stop();
    append(&t.path("a.log"), &numbered("down", 0..2));
    t.start();
    assert_eq!(t.pump(), expect_numbered("down", 0..2));
}

#[test]
fn restart_resumes_after_the_last_checkpointed_line() {
    let mut t = Tail::new();
    append(&t.path("a.log"), &numbered("a", 0..3));
    t.start();
    assert_eq!(t.pump().len(), 3);
    // A partial line is not checkpointed: it is read again, whole, later.
    append(&t.path("a.log"), "a line 0003 begins");
    assert!(t.pump().is_empty());
    t.stop();
    append(&t.path("a.log"), " and ends\n");
    append(&t.path("a.log"), &numbered("a", 4..6));
    t.start();
    let mut want = vec!["a line 0003 begins and ends".to_string()];
    want.extend(expect_numbered("a", 4..6));
    assert_eq!(t.pump(), want);
}

#[test]
fn files_created_later_and_moved_in_are_read_from_their_start() {
    let mut t = Tail::new();
    t.start();
    append(&t.path("new.log"), &numbered("new", 0..2));
    assert_eq!(t.pump(), expect_numbered("new", 0..2));
    let outside = t.base.join("elsewhere.log");
    append(&outside, &numbered("moved", 0..2));
    fs::rename(&outside, t.path("moved.log")).unwrap();
    assert_eq!(t.pump(), expect_numbered("moved", 0..2));
    fs::create_dir(t.path("sub")).unwrap();
    append(&t.path("sub/deep.log"), &numbered("deep", 0..1));
    assert_eq!(t.pump(), expect_numbered("deep", 0..1));
    assert_eq!(t.got.last().unwrap().source, t.label("sub/deep.log"));
}

#[test]
fn rename_rotation_drains_the_old_file_and_reads_the_new_one() {
    let mut t = Tail::new();
    let live = t.path("app.log");
    append(&live, &numbered("gen0", 0..3));
    t.start();
    assert_eq!(t.pump().len(), 3);
    let mut old = OpenOptions::new().append(true).open(&live).unwrap();
    fs::rename(&live, t.path("app.log.1")).unwrap();
    // The writer still has the old file open and finishes its buffer there.
    old.write_all(numbered("gen0", 3..5).as_bytes()).unwrap();
    append(&live, &numbered("gen1", 0..2));
    let lines = t.pump();
    assert_eq!(lines.len(), 4, "{lines:?}");
    let gen0: Vec<_> = lines
        .iter()
        .filter(|l| l.starts_with("gen0"))
        .cloned()
        .collect();
    assert_eq!(gen0, expect_numbered("gen0", 3..5));
    // Lines of the rotated file keep the label they were first read under.
    assert!(
        t.got
            .iter()
            .filter(|g| g.text.starts_with("gen0"))
            .all(|g| g.source == t.label("app.log"))
    );

    // Rotation out of the root (kubelet keeps rotated files elsewhere): the
    // file is read to its end, then released.
    let mut writer = OpenOptions::new().append(true).open(&live).unwrap();
    fs::rename(&live, t.base.join("app.log.20240101-120000")).unwrap();
    writer.write_all(numbered("gen1", 2..4).as_bytes()).unwrap();
    drop(writer);
    assert_eq!(t.settle(), expect_numbered("gen1", 2..4));
    assert!(
        open_fds_under(&t.base)
            .iter()
            .all(|p| !p.ends_with("app.log.20240101-120000"))
    );
}

#[test]
fn copytruncate_with_the_copy_in_the_root_reads_nothing_twice() {
    let mut t = Tail::new();
    let live = t.path("app.log");
    append(&live, &numbered("a", 0..5));
    t.start();
    assert_eq!(t.pump().len(), 5);
    // Lines written after the last read exist only in the copy once the
    // original is truncated.
    append(&live, &numbered("a", 5..8));
    fs::copy(&live, t.path("app.log.1")).unwrap();
    truncate(&live);
    append(&live, &numbered("b", 0..2));
    let mut lines = t.settle();
    lines.sort();
    let mut want = expect_numbered("a", 5..8);
    want.extend(expect_numbered("b", 0..2));
    assert_eq!(lines, want);
    assert_eq!(t.collector().stats().copies_adopted, 1);
}

#[test]
fn copytruncate_with_the_copy_elsewhere_restarts_from_zero() {
    let mut t = Tail::new();
    let live = t.path("app.log");
    append(&live, &numbered("a", 0..5));
    t.start();
    assert_eq!(t.pump().len(), 5);
    fs::copy(&live, t.base.join("app.log.1")).unwrap();
    truncate(&live);
    append(&live, &numbered("b", 0..2));
    assert_eq!(t.pump(), expect_numbered("b", 0..2));
    assert_eq!(t.collector().stats().truncations, 1);
}

#[test]
fn truncation_is_seen_even_when_the_file_regrew_past_the_offset() {
    let mut t = Tail::new();
    let live = t.path("app.log");
    append(&live, &numbered("short", 0..2));
    t.start();
    assert_eq!(t.pump().len(), 2);
    // Truncate and write more than before, all before the collector looks.
    truncate(&live);
    append(&live, &numbered("longer-content", 0..6));
    assert_eq!(t.pump(), expect_numbered("longer-content", 0..6));
}

#[test]
fn a_deleted_file_is_drained_then_released() {
    let mut t = Tail::new();
    // Long enough that the writer below is still "writing" while we pump.
    t.config.rotate_wait = Duration::from_secs(1);
    let path = t.path("gone.log");
    let mut writer = File::create(&path).unwrap();
    writer.write_all(numbered("g", 0..2).as_bytes()).unwrap();
    t.start();
    assert_eq!(t.pump().len(), 2);
    fs::remove_file(&path).unwrap();
    writer.write_all(numbered("g", 2..4).as_bytes()).unwrap();
    writer.write_all(b"no newline at the end").unwrap();
    assert_eq!(t.pump(), expect_numbered("g", 2..4));
    drop(writer);
    assert_eq!(t.settle(), vec!["no newline at the end".to_string()]);
    assert_eq!(t.got.last().unwrap().kind, LineKind::Unterminated);
    assert!(
        open_fds_under(&t.base).is_empty(),
        "{:?}",
        open_fds_under(&t.base)
    );
    assert_eq!(t.collector().stats().files_open, 0);
    // Its checkpoint is forgotten with it.
    assert!(t.checkpoints.is_empty());
}

#[test]
fn thousands_of_rotations_leak_no_descriptors_or_watches() {
    let mut t = Tail::new();
    t.config.rotate_wait = Duration::from_millis(10);
    t.start();
    for round in 0..40 {
        // Fifty files appear and are seen...
        for i in 0..50 {
            append(&t.path(&format!("f{i}.log")), &format!("r{round} i{i}\n"));
        }
        t.pump_for(Duration::from_millis(5));
        // ...then each is rotated away and deleted while still open here.
        for i in 0..50 {
            let rotated = t.path(&format!("f{i}.log.1"));
            fs::rename(t.path(&format!("f{i}.log")), &rotated).unwrap();
            fs::remove_file(&rotated).unwrap();
        }
        t.pump_for(Duration::from_millis(5));
    }
    t.settle();
    assert_eq!(t.got.len(), 2000);
    assert_eq!(t.collector().stats().files_open, 0);
    assert_eq!(t.collector().stats().files_rotated, 2000);
    assert!(open_fds_under(&t.base).is_empty());
    // Only the root directory is still watched.
    assert_eq!(t.collector().owners.len(), 1);
    assert_eq!(t.collector().dirs.len(), 1);
    assert!(t.checkpoints.is_empty());
}

#[test]
fn kubelet_symlink_layout_is_followed_through_rotation() {
    let mut t = Tail::new();
    let pod_dir = t.base.join("pods/default_web_1234/nginx");
    fs::create_dir_all(&pod_dir).unwrap();
    let target = pod_dir.join("0.log");
    append(&target, &numbered("c0", 0..2));
    let link = t.path("web_default_nginx-abc.log");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    // A second link to the same file is read once.
    std::os::unix::fs::symlink(&target, t.path("zz-alias.log")).unwrap();
    t.start();
    assert_eq!(t.pump(), expect_numbered("c0", 0..2));
    assert!(
        t.got
            .iter()
            .all(|g| g.source == t.label("web_default_nginx-abc.log"))
    );

    // kubelet: rename 0.log away, the runtime reopens a new 0.log.
    let mut old = OpenOptions::new().append(true).open(&target).unwrap();
    fs::rename(&target, pod_dir.join("0.log.20240101-120000")).unwrap();
    old.write_all(numbered("c0", 2..3).as_bytes()).unwrap();
    drop(old);
    append(&target, &numbered("c1", 0..2));
    let mut lines = t.settle();
    lines.sort();
    let mut want = expect_numbered("c0", 2..3);
    want.extend(expect_numbered("c1", 0..2));
    assert_eq!(lines, want);
    assert!(t.got.iter().all(|g| g.source.ends_with("nginx-abc.log")));

    // The pod goes away: its directory and link are removed.
    fs::remove_file(&link).unwrap();
    fs::remove_file(t.path("zz-alias.log")).unwrap();
    fs::remove_dir_all(t.base.join("pods/default_web_1234")).unwrap();
    t.settle();
    assert_eq!(t.collector().stats().files_open, 0);
    assert_eq!(t.collector().dirs.len(), 1, "only the root stays watched");
}

#[test]
fn a_root_that_is_a_symlink_works_and_labels_use_the_given_path() {
    let mut t = Tail::new();
    append(&t.path("a.log"), &numbered("a", 0..1));
    let alias = t.base.join("alias");
    std::os::unix::fs::symlink(&t.root, &alias).unwrap();
    t.config.root = alias.clone();
    t.start();
    assert_eq!(t.pump(), expect_numbered("a", 0..1));
    assert_eq!(t.got[0].source, alias.join("a.log").to_string_lossy());
    append(&t.path("a.log"), &numbered("a", 1..2));
    assert_eq!(t.pump(), expect_numbered("a", 1..2));
}

#[test]
fn a_partial_line_waits_for_its_newline() {
    let mut t = Tail::new();
    t.start();
    let path = t.path("p.log");
    append(&path, "first half");
    assert!(t.pump().is_empty());
    append(&path, " second half\nnext");
    assert_eq!(t.pump(), vec!["first half second half".to_string()]);
    append(&path, "\n");
    assert_eq!(t.pump(), vec!["next".to_string()]);
}

#[test]
fn overlong_lines_are_split_not_dropped() {
    let mut t = Tail::new();
    t.config.max_line_bytes = 1024;
    t.start();
    let long = "x".repeat(5000);
    append(&t.path("long.log"), &format!("{long}\nshort\n"));
    t.pump();
    let sizes: Vec<(usize, LineKind)> = t.got.iter().map(|g| (g.text.len(), g.kind)).collect();
    assert_eq!(
        sizes,
        vec![
            (1024, LineKind::Split),
            (1024, LineKind::Split),
            (1024, LineKind::Split),
            (1024, LineKind::Split),
            (904, LineKind::Complete),
            (5, LineKind::Complete),
        ]
    );
    assert_eq!(t.collector().stats().lines_split, 4);
}

#[test]
fn invalid_utf8_and_nul_bytes_are_kept() {
    let mut t = Tail::new();
    t.start();
    fs::write(t.path("bin.log"), b"ok\n\xff\xfe bad \x00 nul\n").unwrap();
    let mut batch = Batch::default();
    // The new file's start position comes first, then its lines.
    for _ in 0..5 {
        t.collector()
            .next_batch(&mut batch, Some(Duration::from_millis(200)))
            .unwrap();
        if !batch.is_empty() {
            break;
        }
    }
    let lines: Vec<&[u8]> = batch.lines().map(|l| l.bytes).collect();
    assert_eq!(lines, vec![&b"ok"[..], &b"\xff\xfe bad \x00 nul"[..]]);
}

#[test]
fn a_reused_inode_or_rewritten_file_is_read_from_the_start() {
    let mut t = Tail::new();
    let path = t.path("a.log");
    append(&path, &numbered("a", 0..3));
    t.start();
    t.pump();
    t.stop();
    let saved = t.checkpoints.to_list()[0].clone();

    // Same inode, different head: an inode reused by a new file.
    let mut reused = saved.clone();
    reused.key.fingerprint = Fingerprint(saved.key.fingerprint.0 ^ 1);
    t.checkpoints = CheckpointSet::from_list(vec![reused]);
    t.got.clear();
    t.start();
    assert_eq!(t.pump().len(), 3);
    t.stop();

    // Same inode and head, but the bytes before the offset differ: the file
    // was rewritten behind an identical first line.
    let mut rewritten = saved.clone();
    rewritten.marker ^= 1;
    t.checkpoints = CheckpointSet::from_list(vec![rewritten]);
    t.got.clear();
    t.start();
    assert_eq!(t.pump().len(), 3);
    t.stop();

    // The genuine checkpoint resumes at the end.
    t.checkpoints = CheckpointSet::from_list(vec![saved]);
    t.start();
    assert!(t.pump().is_empty());
}

#[test]
fn one_busy_file_does_not_starve_the_others() {
    let mut t = Tail::new();
    let big: String = (0..200_000)
        .map(|i| format!("busy {i:08} {}\n", "z".repeat(40)))
        .collect();
    fs::write(t.path("busy.log"), big).unwrap();
    fs::write(t.path("quiet.log"), "quiet line\n").unwrap();
    t.config.batch_bytes = 1024 * 1024;
    t.start();
    let mut batch = Batch::default();
    // First the start positions of both new files, then their lines.
    t.collector()
        .next_batch(&mut batch, Some(Duration::from_millis(200)))
        .unwrap();
    assert_eq!((batch.len(), batch.checkpoints.len()), (0, 2));
    t.collector()
        .next_batch(&mut batch, Some(Duration::from_millis(200)))
        .unwrap();
    assert!(batch.line_bytes() < 2 * 1024 * 1024);
    assert!(
        batch.lines().any(|l| l.bytes == b"quiet line"),
        "the quiet file waited behind the busy one"
    );
}

#[test]
fn an_overflow_is_answered_with_a_rescan() {
    let mut t = Tail::new();
    let handle = t.start_mock();
    // Nothing tells the collector about this file...
    append(&t.path("silent.log"), &numbered("s", 0..2));
    assert!(t.pump_for(Duration::from_millis(20)).is_empty());
    // ...until the kernel admits it dropped events.
    handle.overflow();
    assert_eq!(
        texts(&t.pump_for(Duration::from_millis(20))),
        expect_numbered("s", 0..2)
    );
    assert_eq!(t.collector().stats().overflows, 1);
    // An unnamed directory change (kqueue) rescans that directory.
    append(&t.path("other.log"), &numbered("o", 0..1));
    handle.push_for(
        &fs::canonicalize(&t.root).unwrap(),
        EventKind::DirectoryChanged,
        None,
    );
    assert_eq!(
        texts(&t.pump_for(Duration::from_millis(20))),
        expect_numbered("o", 0..1)
    );
    // Writes are read when their event comes, not before.
    append(&t.path("other.log"), &numbered("o", 1..2));
    assert!(t.pump_for(Duration::from_millis(20)).is_empty());
    handle.push_for(&t.path("other.log"), EventKind::Modified, None);
    assert_eq!(
        texts(&t.pump_for(Duration::from_millis(20))),
        expect_numbered("o", 1..2)
    );
}

#[test]
fn a_missing_root_is_a_clear_error() {
    let config = DirectoryConfig::new("/nonexistent/monitoring-rs-root");
    let watcher = Box::new(InotifyWatcher::new().unwrap());
    let error = DirectoryCollector::new(config, watcher, &CheckpointSet::default())
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("--root-path"), "{error}");
}

/// The thread's voluntary context switches so far (each is a wake-up).
fn wakeups(tid: i32) -> u64 {
    let status = fs::read_to_string(format!("/proc/self/task/{tid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn an_idle_collector_sleeps() {
    let mut t = Tail::new();
    append(&t.path("a.log"), &numbered("a", 0..3));
    t.start();
    t.pump();
    let mut collector = t.collector.take().unwrap();
    let waker = collector.waker();
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        // SAFETY: gettid has no preconditions.
        tx.send(unsafe { libc::gettid() }).unwrap();
        let mut batch = Batch::default();
        collector.next_batch(&mut batch, None).unwrap();
        batch.is_idle()
    });
    let tid = rx.recv().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let before = wakeups(tid);
    std::thread::sleep(Duration::from_millis(500));
    let after = wakeups(tid);
    waker.wake();
    assert!(
        thread.join().unwrap(),
        "woken without work, it returns an idle batch"
    );
    assert_eq!(before, after, "the collector woke up with nothing to do");
}

/// Lines per source, sorted, from everything collected so far.
fn by_source(got: &[Got]) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut out: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for g in got {
        out.entry(g.source.clone())
            .or_default()
            .push(g.text.clone());
    }
    out
}

#[test]
fn files_that_begin_alike_are_each_read_whole() {
    let mut t = Tail::new();
    // The report's case: five identical files and one sharing the first line.
    for i in 0..5 {
        append(
            &t.path(&format!("same-{i}.log")),
            "starting app\nline a\nline b\n",
        );
    }
    append(&t.path("other.log"), "starting app\nother 1\n");
    // And identical files in sub-folders, found at start and later.
    fs::create_dir_all(t.path("a/b")).unwrap();
    for i in 0..50 {
        append(
            &t.path(&format!("a/b/replica-{i}.csv")),
            "id,name\n1,x\n2,y\n",
        );
    }
    t.start();
    for i in 0..50 {
        append(&t.path(&format!("a/late-{i}.csv")), "id,name\n1,x\n2,y\n");
    }
    t.settle();
    t.settle();
    let got = by_source(&t.got);
    assert_eq!(got.len(), 5 + 1 + 50 + 50, "every file was read");
    for (source, lines) in &got {
        let want: &[&str] = if source.ends_with("other.log") {
            &["starting app", "other 1"]
        } else if source.ends_with(".csv") {
            &["id,name", "1,x", "2,y"]
        } else {
            &["starting app", "line a", "line b"]
        };
        assert_eq!(lines, want, "{source}: every line once");
    }
    assert_eq!(t.collector().stats().copies_adopted, 0);
}

#[test]
fn an_identical_file_that_grows_on_its_own_is_read_from_its_start() {
    let mut t = Tail::new();
    append(&t.path("one.log"), &numbered("x", 0..3));
    t.start();
    t.pump();
    // Begins as a byte-for-byte prefix of the live file, then diverges.
    append(&t.path("two.log"), &numbered("x", 0..2));
    t.pump();
    append(&t.path("two.log"), "its own line\n");
    t.settle();
    let got = by_source(&t.got);
    let two = &got[t.path("two.log").to_str().unwrap()];
    let mut want = expect_numbered("x", 0..2);
    want.push("its own line".into());
    assert_eq!(two, &want);
}

#[test]
fn a_new_file_like_a_deleted_one_is_not_taken_for_its_copy() {
    let mut t = Tail::new();
    let first = t.path("first.log");
    append(&first, &numbered("same", 0..4));
    t.start();
    assert_eq!(t.pump().len(), 4);
    t.stop();
    // While down: the file is deleted and a new one with the same lines
    // (a replica restarted, say) appears. Its inode is not the old one's.
    fs::remove_file(&first).unwrap();
    append(&t.path("second.log"), &numbered("same", 0..4));
    t.start();
    assert_eq!(t.settle(), expect_numbered("same", 0..4));
}

#[test]
fn copytruncate_while_down_still_continues_in_the_copy() {
    let mut t = Tail::new();
    let live = t.path("app.log");
    append(&live, &numbered("a", 0..5));
    t.start();
    assert_eq!(t.pump().len(), 5);
    t.stop();
    // While down: more lines, then copytruncate with the copy in the root.
    append(&live, &numbered("a", 5..8));
    fs::copy(&live, t.path("app.log.1")).unwrap();
    truncate(&live);
    append(&live, &numbered("b", 0..2));
    t.start();
    let mut lines = t.settle();
    lines.sort();
    let mut want = expect_numbered("a", 5..8);
    want.extend(expect_numbered("b", 0..2));
    assert_eq!(lines, want);
}

#[test]
fn copytruncate_across_a_restart_between_copy_and_truncate() {
    let mut t = Tail::new();
    let live = t.path("app.log");
    append(&live, &numbered("a", 0..5));
    t.start();
    assert_eq!(t.pump().len(), 5);
    t.stop();
    fs::copy(&live, t.path("app.log.1")).unwrap();
    t.start();
    truncate(&live);
    append(&live, &numbered("b", 0..2));
    let mut lines = t.settle();
    lines.sort();
    assert_eq!(lines, expect_numbered("b", 0..2));
}

#[test]
fn rotation_names_a_copy_after_its_original() {
    use super::placement::named_after;
    assert!(named_after("/l/app.log.1", "/l/app.log"));
    assert!(named_after("/l/app.log-20261201", "/l/app.log"));
    assert!(!named_after("/l/app.log", "/l/app.log"));
    assert!(!named_after("/l/other.log", "/l/app.log"));
    assert!(!named_after("/m/app.log.1", "/l/app.log"));
    assert!(!named_after("/l/same-1.log", "/l/same-0.log"));
}
