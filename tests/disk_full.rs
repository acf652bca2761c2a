//! The data directory on a small filesystem that fills up while logs keep
//! arriving, then grows: the daemon stays up and answering, and afterwards
//! every line is stored exactly once. Needs root to mount a tmpfs; without
//! it the test says so and checks nothing.
//!
//! A disk full of the store's own data is not this case: retention
//! (`--retention-size`) keeps the store within its budget.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use monitoring_rs::log_database::query::{Matcher, Query};
use monitoring_rs::log_database::{Config, Database};
use testkit::daemon::DaemonCommand;
use testkit::messages::Rng;

/// A tmpfs of `size` at `path`, unmounted when dropped.
struct Tmpfs<'a>(&'a Path);

impl<'a> Tmpfs<'a> {
    fn mount(path: &'a Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(path).ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Self(path))
    }

    fn resize(&self, size: &str) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(self.0)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "cannot grow the tmpfs");
    }
}

impl Drop for Tmpfs<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0).status();
    }
}

#[test]
fn a_full_disk_loses_nothing_and_the_daemon_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    let (root, data) = (dir.path().join("logs"), dir.path().join("data"));
    std::fs::create_dir_all(&root).unwrap();
    let Some(tmpfs) = Tmpfs::mount(&data, "2m") else {
        eprintln!("SKIPPED: mounting a tmpfs needs root; this test checks nothing here");
        return;
    };
    let daemon = DaemonCommand::new(env!("CARGO_BIN_EXE_monitoring-rs"))
        .args(["--log-collector", "directory", "--flush-interval", "100ms"])
        // Memory for unflushed entries is then 8 MiB: the writes run into
        // back-pressure and the files hold the rest.
        .args(["--memory-limit", "64MiB"])
        .flag("--root-path", &root)
        .flag("--data-directory", &data)
        .start();
    // Random text compresses little: 24 MB of it cannot fit in 2 MB.
    let mut rng = Rng(7);
    let mut written = 0u64;
    let mut files: Vec<_> = (0..3)
        .map(|f| {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(root.join(format!("f{f}.log")))
                .unwrap()
        })
        .collect();
    let mut full_seen = false;
    let started = Instant::now();
    while written < 120_000 {
        let f = (written % 3) as usize;
        let noise: String = (0..12)
            .map(|_| format!("{:016x}", rng.next_u64()))
            .collect();
        writeln!(files[f], "f{f} {written:08} {noise}").unwrap();
        written += 1;
        if written.is_multiple_of(10_000) {
            std::thread::sleep(Duration::from_millis(200));
            // Up and answering all along, full disk or not.
            let (status, _) = daemon.get("/ready").expect("the daemon answers");
            assert_eq!(status, 200);
            let (status, body) = daemon.get("/status").expect("status answers");
            assert_eq!(status, 200);
            full_seen |= !body.contains("\"flush_errors\":0");
        }
    }
    // Give it time to run into the full disk, then make room.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !full_seen && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        let (_, body) = daemon.get("/status").expect("status answers");
        full_seen = !body.contains("\"flush_errors\":0");
    }
    assert!(full_seen, "the disk never filled: the test proves nothing");
    assert!(daemon.get("/ready").is_some_and(|(s, _)| s == 200));
    tmpfs.resize("256m");
    // It catches up by itself.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, body) = daemon.get("/status").expect("status answers");
        if body.contains(&format!("\"lines_total\":{written}"))
            && body.contains("\"bytes_in_memory\":0")
        {
            break;
        }
        assert!(Instant::now() < deadline, "never caught up: {body}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(daemon.terminate().success());
    let (db, _) = Database::open(&data, Config::default()).unwrap();
    for f in 0..3u64 {
        let q = Query::new(vec![Matcher::equal(
            "path",
            root.join(format!("f{f}.log")).to_str().unwrap(),
        )]);
        let mut numbers: Vec<u64> = db
            .query(q)
            .unwrap()
            .map(|e| {
                let line = String::from_utf8(e.line).unwrap();
                line.split(' ').nth(1).unwrap().parse().unwrap()
            })
            .collect();
        // Lines of one read share a timestamp, so the store's order among
        // them is not the file's: compare as sets, each line once.
        numbers.sort_unstable();
        let want: Vec<u64> = (0..written).filter(|n| n % 3 == f).collect();
        assert_eq!(numbers.len(), want.len(), "f{f}: every line once");
        assert!(numbers == want, "f{f}: lines missing or repeated");
    }
    eprintln!(
        "full for a while after {:?}; all {written} lines stored once",
        started.elapsed()
    );
    drop(db);
}
