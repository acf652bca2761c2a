//! The real binary, collecting into its store: killed with SIGKILL at random
//! moments and restarted, then stopped with SIGTERM. Every line written to the
//! tailed files must be in the store exactly once, in order.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use monitoring_rs::log_database::query::{MatchOp, Matcher, Query};
use monitoring_rs::log_database::{Config, Database};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use testkit::daemon::{Daemon, DaemonCommand};

const FILES: usize = 3;

/// Starts the daemon without waiting for it: it may be killed mid start-up.
fn start(root: &Path, data: &Path) -> Daemon {
    DaemonCommand::new(env!("CARGO_BIN_EXE_monitoring-rs"))
        .args([
            "--log-collector",
            "directory",
            "--flush-interval",
            "100ms",
            "--rotate-wait",
            "200ms",
        ])
        .flag("--root-path", root)
        .flag("--data-directory", data)
        .spawn()
}

fn terminate(daemon: Daemon) {
    let status = daemon.terminate();
    assert!(status.success(), "graceful shutdown failed: {status}");
}

fn stored(data: &Path) -> Vec<Vec<String>> {
    let (db, _) = Database::open(data, Config::default()).unwrap();
    (0..FILES)
        .map(|f| {
            let q = Query::new(vec![
                Matcher::new("path", MatchOp::Regex, &format!(".*/f{f}\\.log")).unwrap(),
            ]);
            db.query(q)
                .unwrap()
                .map(|e| String::from_utf8(e.line).unwrap())
                .collect()
        })
        .collect()
}

#[test]
fn kill_dash_nine_loses_and_repeats_nothing() {
    let seed: u64 = std::env::var("E2E_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("E2E_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let (root, data) = (dir.path().join("logs"), dir.path().join("data"));
    fs::create_dir_all(&root).unwrap();
    let mut written = vec![0usize; FILES];
    let mut child = start(&root, &data);
    for round in 0..12 {
        for (f, count) in written.iter_mut().enumerate() {
            let mut file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(root.join(format!("f{f}.log")))
                .unwrap();
            let lines: String = (0..rng.random_range(50..400))
                .map(|_| {
                    *count += 1;
                    format!(
                        "f{f} line {:06} {}\n",
                        *count - 1,
                        "z".repeat(rng.random_range(0..200))
                    )
                })
                .collect();
            file.write_all(lines.as_bytes()).unwrap();
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(0..400)));
        if round % 2 == 0 || rng.random_bool(0.5) {
            child.kill();
            child = start(&root, &data);
        }
    }
    // Let it catch up, stop it gracefully, look; restart if it had not read
    // everything yet (reading resumes, so lines can only be late, not lost).
    let mut got = Vec::new();
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(800));
        terminate(child);
        got = stored(&data);
        if got.iter().zip(&written).all(|(g, w)| g.len() >= *w) {
            break;
        }
        child = start(&root, &data);
    }
    for (f, lines) in got.iter().enumerate() {
        let numbers: Vec<usize> = lines
            .iter()
            .map(|l| l.split(' ').nth(2).unwrap().parse().unwrap())
            .collect();
        let expected: Vec<usize> = (0..written[f]).collect();
        assert_eq!(numbers, expected, "file f{f}: every line once, in order");
    }
}
