//! Randomized end-to-end test of the directory collector: writer threads
//! append numbered lines while rotating (rename, copytruncate), deleting and
//! moving files out of the root, and the collector is dropped and re-created
//! from its committed checkpoints again and again. At the end every line
//! written must have been handed on exactly once, in order within its file.
//!
//! The seed is printed; set `E2E_SEED` to replay a run.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread;
use std::time::{Duration, Instant};

use monitoring_rs::log_collector::checkpoint::CheckpointFile;
use monitoring_rs::log_collector::directory::batch::{Batch, LineKind};
use monitoring_rs::log_collector::directory::{DirectoryCollector, DirectoryConfig};
use monitoring_rs::watcher::inotify::InotifyWatcher;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

const WRITERS: usize = 4;
const WRITE_FOR: Duration = Duration::from_secs(4);

#[derive(Default)]
struct Shared {
    /// Highest sequence number per writer that the consumer has committed.
    confirmed: Mutex<HashMap<usize, u64>>,
    /// Held for reading by a writer that removed a file from the root until
    /// the collector drained it; taken for writing to restart the collector.
    restart: RwLock<()>,
    done: AtomicBool,
}

impl Shared {
    fn wait_confirmed(&self, writer: usize, seq: u64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.confirmed.lock().unwrap().get(&writer).copied() < Some(seq) {
            assert!(
                Instant::now() < deadline,
                "writer {writer}: line {seq} never arrived"
            );
            thread::sleep(Duration::from_millis(2));
        }
    }
}

fn open_append(path: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
}

/// Writes numbered lines, rotating and deleting at random; returns how many.
fn writer(id: usize, root: PathBuf, outside: PathBuf, shared: Arc<Shared>, seed: u64) -> u64 {
    let mut rng = StdRng::seed_from_u64(seed ^ (id as u64 * 0x9e37_79b9));
    let live = root.join(format!("w{id}.log"));
    let mut file = open_append(&live);
    let (mut generation, mut seq) = (0u64, 0u64);
    let started = Instant::now();
    let write = |file: &mut File, generation: u64, seq: &mut u64, rng: &mut StdRng| {
        let pad = "p".repeat(rng.random_range(0..120));
        writeln!(file, "w{id} g{generation} s{:08} {pad}", *seq).unwrap();
        *seq += 1;
    };
    while started.elapsed() < WRITE_FOR {
        write(&mut file, generation, &mut seq, &mut rng);
        if seq.is_multiple_of(8) {
            thread::sleep(Duration::from_micros(rng.random_range(100..600)));
        }
        let roll: f64 = rng.random_range(0.0..1.0);
        if roll < 0.004 {
            // Rename rotation inside the root; the writer finishes a few
            // lines in the old file before reopening.
            fs::rename(&live, root.join(format!("w{id}.log.{generation}"))).unwrap();
            for _ in 0..rng.random_range(0..3) {
                write(&mut file, generation, &mut seq, &mut rng);
            }
            generation += 1;
            file = open_append(&live);
        } else if roll < 0.006 {
            // copytruncate: the copy lands in the root.
            fs::copy(&live, root.join(format!("w{id}.log.copy{generation}"))).unwrap();
            file.set_len(0).unwrap();
            generation += 1;
        } else if roll < 0.008 {
            // Delete, or rename out of the root, while still writing. The
            // collector must have opened the file first (a file deleted
            // before anyone looked is gone for every tailer) and must stay up
            // until it drained it.
            let _hold = shared.restart.read().unwrap();
            shared.wait_confirmed(id, seq - 1);
            if rng.random_bool(0.5) {
                fs::remove_file(&live).unwrap();
            } else {
                fs::rename(&live, outside.join(format!("w{id}.{generation}"))).unwrap();
            }
            for _ in 0..rng.random_range(0..3) {
                write(&mut file, generation, &mut seq, &mut rng);
            }
            shared.wait_confirmed(id, seq - 1);
            generation += 1;
            file = open_append(&live);
        }
    }
    seq
}

/// (generation, sequence) of one line.
fn parse(line: &[u8]) -> (usize, u64, u64) {
    let text = std::str::from_utf8(line).unwrap();
    let mut parts = text.split(' ');
    let mut field = |prefix: char| -> u64 {
        let part = parts
            .next()
            .unwrap_or_else(|| panic!("short line {text:?}"));
        part.strip_prefix(prefix)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("bad line {text:?}"))
    };
    (field('w') as usize, field('g'), field('s'))
}

#[test]
fn every_line_exactly_once_across_rotations_and_restarts() {
    let seed = std::env::var("E2E_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    eprintln!("E2E_SEED={seed}");
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let (root, outside, data) = (
        dir.path().join("root"),
        dir.path().join("out"),
        dir.path().join("data"),
    );
    for d in [&root, &outside, &data] {
        fs::create_dir_all(d).unwrap();
    }
    let shared = Arc::new(Shared::default());
    let writers: Vec<_> = (0..WRITERS)
        .map(|id| {
            let (root, outside, shared) = (root.clone(), outside.clone(), shared.clone());
            thread::spawn(move || writer(id, root, outside, shared, seed))
        })
        .collect();

    let mut config = DirectoryConfig::new(&root);
    config.rotate_wait = Duration::from_millis(100);
    config.batch_bytes = 256 * 1024;
    let checkpoint_file = CheckpointFile::in_directory(&data).unwrap();
    let start = |checkpoint_file: &CheckpointFile| {
        let checkpoints = checkpoint_file.load().unwrap();
        let watcher = Box::new(InotifyWatcher::new().unwrap());
        DirectoryCollector::new(config.clone(), watcher, &checkpoints).unwrap()
    };
    let mut collector = Some(start(&checkpoint_file));
    let mut checkpoints = checkpoint_file.load().unwrap();
    let mut seen: Vec<Vec<(u64, u64, usize)>> = vec![Vec::new(); WRITERS];
    let mut totals: Option<Vec<u64>> = None;
    let mut writers = Some(writers);
    let mut restarts = 0;
    let mut torn_write_done = false;
    let mut next_restart = Instant::now() + Duration::from_millis(rng.random_range(150..500));
    let mut batch = Batch::default();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if Instant::now() >= deadline {
            let report: Vec<String> = seen
                .iter()
                .enumerate()
                .map(|(w, lines)| {
                    let mut seqs: Vec<u64> = lines.iter().map(|(_, s, _)| *s).collect();
                    seqs.sort_unstable();
                    let total = totals.as_ref().map_or(0, |t| t[w]);
                    let missing: Vec<u64> = (0..total)
                        .filter(|s| seqs.binary_search(s).is_err())
                        .take(5)
                        .collect();
                    format!(
                        "writer {w}: {} of {total}, first missing {missing:?}",
                        seqs.len()
                    )
                })
                .collect();
            panic!("lines still missing after 90 s: {report:?}");
        }
        let c = collector.as_mut().unwrap();
        c.next_batch(&mut batch, Some(Duration::from_millis(20)))
            .unwrap();
        if !batch.is_idle() {
            // Lines and checkpoints become durable together, as in the store.
            let lines: Vec<(usize, u64, u64)> = batch
                .lines()
                .map(|l| {
                    if l.kind != LineKind::Complete {
                        panic!(
                            "{:?} line {:?} from {}",
                            l.kind,
                            String::from_utf8_lossy(l.bytes),
                            l.source
                        );
                    }
                    parse(l.bytes)
                })
                .collect();
            checkpoints.apply(&batch.checkpoints, &batch.forgotten);
            checkpoint_file.commit(&checkpoints).unwrap();
            let mut confirmed = shared.confirmed.lock().unwrap();
            for (w, g, s) in lines {
                seen[w].push((g, s, restarts));
                let max = confirmed.entry(w).or_insert(0);
                *max = (*max).max(s);
            }
        }
        if Instant::now() >= next_restart
            && let Ok(_quiet) = shared.restart.try_write()
        {
            drop(collector.take());
            if !torn_write_done {
                // A crash in the middle of writing the checkpoint file.
                fs::write(
                    data.join("checkpoints.json.tmp"),
                    b"{\"version\":1,\"checkpoints\":[{\"dev\"",
                )
                .unwrap();
                torn_write_done = true;
            }
            collector = Some(start(&checkpoint_file));
            restarts += 1;
            next_restart = Instant::now() + Duration::from_millis(rng.random_range(150..500));
        }
        if writers
            .as_ref()
            .is_some_and(|w| w.iter().all(|h| h.is_finished()))
        {
            totals = Some(
                writers
                    .take()
                    .unwrap()
                    .into_iter()
                    .map(|h| h.join().unwrap())
                    .collect(),
            );
            shared.done.store(true, Ordering::Relaxed);
        }
        if let Some(totals) = &totals
            && seen.iter().zip(totals).all(|(s, t)| s.len() as u64 >= *t)
        {
            break;
        }
    }
    // Give any duplicate a chance to show up.
    let c = collector.as_mut().unwrap();
    c.next_batch(&mut batch, Some(Duration::from_millis(300)))
        .unwrap();
    for line in batch.lines() {
        let (w, g, s) = parse(line.bytes);
        seen[w].push((g, s, restarts));
    }

    let totals = totals.unwrap();
    eprintln!(
        "restarts: {restarts}, lines: {totals:?}, stats: {:?}",
        c.stats()
    );
    assert!(restarts >= 3, "only {restarts} restarts happened");
    for (w, lines) in seen.iter().enumerate() {
        let mut seqs: Vec<u64> = lines.iter().map(|(_, s, _)| *s).collect();
        seqs.sort_unstable();
        let dupes: Vec<u64> = seqs
            .windows(2)
            .filter(|p| p[0] == p[1])
            .map(|p| p[0])
            .collect();
        if !dupes.is_empty() {
            let first = dupes[0];
            let at: Vec<(usize, &(u64, u64, usize))> = lines
                .iter()
                .enumerate()
                .filter(|(_, l)| l.1 == first)
                .collect();
            for (i, _) in &at {
                eprintln!(
                    "around {i}: {:?}",
                    &lines[i.saturating_sub(3)..(*i + 3).min(lines.len())]
                );
            }
            panic!(
                "writer {w}: lines repeated: {:?}",
                &dupes[..dupes.len().min(10)]
            );
        }
        let expected: Vec<u64> = (0..totals[w]).collect();
        if seqs != expected {
            let missing: Vec<u64> = expected
                .iter()
                .filter(|s| seqs.binary_search(s).is_err())
                .copied()
                .collect();
            panic!(
                "writer {w}: {} lines missing, first {:?}",
                missing.len(),
                &missing[..missing.len().min(10)]
            );
        }
        let mut last: HashMap<u64, u64> = HashMap::new();
        for (g, s, _) in lines {
            if let Some(prev) = last.insert(*g, *s) {
                assert!(
                    prev < *s,
                    "writer {w}: generation {g} out of order: {prev} then {s}"
                );
            }
        }
    }
}
