//! How fast the directory collector turns files into lines with checkpoints.
//!
//! Generates (once, reused after) a corpus of CRI-format container logs under
//! `target/tmp/cri-corpus-<MiB>` — 200 files, ~1 GiB by default — then tails it
//! from the head with a fresh collector several times and prints, per run and
//! as the median: lines/s, MiB/s, CPU-seconds per GiB and peak RSS.
//!
//! `BENCH_CORPUS_MB` and `BENCH_RUNS` change the size and the number of runs.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use monitoring_rs::log_collector::checkpoint::CheckpointSet;
use monitoring_rs::log_collector::directory::batch::{Batch, LineKind};
use monitoring_rs::log_collector::directory::{DirectoryCollector, DirectoryConfig};
use monitoring_rs::watcher::platform_watcher;

mod common;

use common::{Rng, median, message, status_mib};

const FILES: usize = 200;

/// Writes the corpus unless a complete one of this size is already there.
fn corpus(total_bytes: u64) -> (PathBuf, u64) {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("cri-corpus-{}", total_bytes >> 20));
    let done = dir.join(".complete");
    if let Ok(size) = fs::read_to_string(&done) {
        return (dir.join("logs"), size.trim().parse().unwrap());
    }
    let _ = fs::remove_dir_all(&dir);
    let logs = dir.join("logs");
    fs::create_dir_all(&logs).unwrap();
    eprintln!(
        "generating a {} MiB CRI corpus in {} ...",
        total_bytes >> 20,
        logs.display()
    );
    let per_file = total_bytes / FILES as u64;
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut written = 0;
    let mut line = Vec::with_capacity(512);
    for f in 0..FILES {
        let name = format!("pod-{f:03}_default_app-{:064x}.log", f);
        let mut out = BufWriter::with_capacity(1 << 20, File::create(logs.join(name)).unwrap());
        let mut size = 0;
        let mut ns = 0u64;
        while size < per_file {
            line.clear();
            ns += rng.below(5_000_000);
            write!(
                line,
                "2026-11-20T10:{:02}:{:02}.{:09}Z {} F ",
                (ns / 60_000_000_000) % 60,
                (ns / 1_000_000_000) % 60,
                ns % 1_000_000_000,
                if rng.below(10) == 0 {
                    "stderr"
                } else {
                    "stdout"
                }
            )
            .unwrap();
            message(&mut rng, &mut line);
            line.push(b'\n');
            out.write_all(&line).unwrap();
            size += line.len() as u64;
        }
        out.flush().unwrap();
        written += size;
    }
    fs::write(&done, written.to_string()).unwrap();
    (logs, written)
}

struct Run {
    wall: Duration,
    cpu: Duration,
    lines: u64,
    bytes: u64,
}

fn cpu_time() -> Duration {
    // SAFETY: getrusage fills the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn tail_once(root: &Path, expected: u64) -> Run {
    let mut checkpoints = CheckpointSet::default();
    let (cpu0, start) = (cpu_time(), Instant::now());
    let mut collector = DirectoryCollector::new(
        DirectoryConfig::new(root),
        platform_watcher().unwrap(),
        &checkpoints,
    )
    .unwrap();
    let mut batch = Batch::default();
    let (mut lines, mut bytes) = (0u64, 0u64);
    while bytes < expected {
        collector
            .next_batch(&mut batch, Some(Duration::from_secs(2)))
            .unwrap();
        if batch.is_idle() {
            panic!("collector went idle after {bytes} of {expected} bytes");
        }
        for line in batch.lines() {
            lines += 1;
            bytes += line.bytes.len() as u64 + u64::from(line.kind == LineKind::Complete);
        }
        checkpoints.apply(&batch.checkpoints, &batch.forgotten);
    }
    let run = Run {
        wall: start.elapsed(),
        cpu: cpu_time() - cpu0,
        lines,
        bytes,
    };
    assert_eq!(checkpoints.len(), FILES, "every file has a checkpoint");
    run
}

fn main() {
    // `cargo bench` passes `--bench`; this harness has no filters to apply.
    let mib = common::env_usize("BENCH_CORPUS_MB", 1024) as u64;
    let runs = common::env_usize("BENCH_RUNS", 5);
    let (root, size) = corpus(mib << 20);
    // Warm the page cache so every run measures the collector, not the disk.
    for entry in fs::read_dir(&root).unwrap() {
        let mut file = File::open(entry.unwrap().path()).unwrap();
        std::io::copy(&mut file, &mut std::io::sink()).unwrap();
    }
    let baseline = status_mib("VmRSS:");
    println!(
        "directory collector, {} files, {:.0} MiB of CRI logs, from the head, one core",
        FILES,
        size as f64 / 1048576.0
    );
    println!(
        "{:>4} {:>12} {:>10} {:>10} {:>14}",
        "run", "lines/s", "MiB/s", "MB/s", "CPU-s per GiB"
    );
    let mut results = Vec::new();
    for i in 0..runs {
        let run = tail_once(&root, size);
        assert_eq!(run.bytes, size, "every byte became a line");
        let secs = run.wall.as_secs_f64();
        let r = (
            run.lines as f64 / secs,
            run.bytes as f64 / secs / 1048576.0,
            run.bytes as f64 / secs / 1e6,
            run.cpu.as_secs_f64() / (run.bytes as f64 / 1073741824.0),
        );
        println!(
            "{:>4} {:>12.0} {:>10.0} {:>10.0} {:>14.2}",
            i + 1,
            r.0,
            r.1,
            r.2,
            r.3
        );
        results.push(r);
    }
    println!(
        "{:>4} {:>12.0} {:>10.0} {:>10.0} {:>14.2}",
        "med",
        median(results.iter().map(|r| r.0).collect()),
        median(results.iter().map(|r| r.1).collect()),
        median(results.iter().map(|r| r.2).collect()),
        median(results.iter().map(|r| r.3).collect()),
    );
    println!(
        "RSS before the first run {baseline:.1} MiB, after the last {:.1} MiB, peak {:.1} MiB",
        status_mib("VmRSS:"),
        status_mib("VmHWM:")
    );
}
