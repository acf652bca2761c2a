//! What the log store costs and how fast it answers.
//!
//! Ingests a generated corpus (default 10M entries over 1,000 streams: access
//! logs, JSON logs, plain app logs with levels, stack traces) into a fresh
//! store, durably, on one core; then, in a fresh child process, opens the
//! store and runs the queries users run. Prints ingest rate, stored size next
//! to `zstd -3` of the same lines, open time and RSS, newest-1000 latency and
//! full-scan filter speed next to zstd's own decompression speed.
//!
//! `BENCH_ENTRIES` scales the corpus.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use monitoring_rs::log_database::labels::Labels;
use monitoring_rs::log_database::query::{Direction, LineFilter, MatchOp, Matcher, Query};
use monitoring_rs::log_database::{Config, Database, StreamEntries, WriteBatch};

mod common;

use common::{Rng, median, message_of, status_mib};

const STREAMS: u64 = 1000;
const BATCH: usize = 10_000;
const RARE: &str = "needle-4f1c9a";

fn stream_labels(s: u64) -> Labels {
    Labels::new([
        ("namespace", format!("ns-{}", s % 10)),
        (
            "pod_name",
            format!("app-{}-{:05x}", s / 10, s * 7919 % 65536),
        ),
        (
            "container_name",
            ["app", "sidecar", "proxy"][(s % 3) as usize].to_string(),
        ),
        (
            "stream",
            if s.is_multiple_of(5) {
                "stderr"
            } else {
                "stdout"
            }
            .to_string(),
        ),
    ])
}

/// Each stream logs one kind of message (its app's format).
fn stream_kind(s: u64) -> u64 {
    [0, 4, 7, 9, 0, 4, 7, 0][(s % 8) as usize]
}

fn config() -> Config {
    let mut config = Config::default();
    if let Ok(level) = std::env::var("BENCH_LEVEL") {
        config.compression_level = level.parse().unwrap();
    }
    config
}

/// What finding each entry's detected_level costs at write, over the same
/// mix of lines (JSON, access logs, plain, stack traces), on one core.
fn level_detection() {
    let mut rng = Rng(0x5eed);
    let mut lines: Vec<Vec<u8>> = Vec::with_capacity(200_000);
    for i in 0..200_000u64 {
        let mut line = Vec::new();
        message_of(stream_kind(i % STREAMS), &mut rng, &mut line);
        lines.push(line);
    }
    let mut times = Vec::new();
    let mut seen = [0usize; 8];
    for _ in 0..5 {
        let t = Instant::now();
        for line in &lines {
            seen[monitoring_rs::log_database::level::Level::of_line(line) as usize] += 1;
        }
        times.push(t.elapsed().as_secs_f64() / lines.len() as f64 * 1e9);
    }
    let ns = median(times);
    println!(
        "detected_level at write        {ns:>8.0} ns per line = {:.2} CPU-s per million lines (median of 5)",
        ns / 1e3
    );
    assert!(seen.iter().sum::<usize>() > 0);
    // Patterns (Drain) over the same lines, as /loki/api/v1/patterns reads
    // them: its cost per line, and how many patterns the mix makes.
    let mut times = Vec::new();
    let mut patterns = 0;
    for _ in 0..5 {
        let mut drain = monitoring_rs::drain::Drain::default();
        let t = Instant::now();
        for (i, line) in lines.iter().enumerate() {
            drain.train(line, i as i64 / 1000);
        }
        times.push(t.elapsed().as_secs_f64() / lines.len() as f64 * 1e9);
        patterns = drain.clusters().len();
    }
    let ns = median(times);
    println!(
        "patterns (Drain)               {ns:>8.0} ns per line = {:.2} CPU-s per million lines, {patterns} patterns (median of 5)",
        ns / 1e3
    );
}

fn ingest(dir: &Path, entries: usize) {
    let (db, _) = Database::open(dir, config()).unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let labels: Vec<Labels> = (0..STREAMS).map(stream_labels).collect();
    let start_ts = monitoring_rs::log_database::now_ns() - 2 * 3_600_000_000_000;
    // What the node holds without us: the kubelet's CRI files, and for a
    // harder comparison the bare messages; each compressed whole by zstd -3.
    let mut cri_zstd = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
    let mut msg_zstd = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
    let (mut in_store, mut raw, mut raw_cri) = (Duration::ZERO, 0u64, 0u64);
    let mut line = Vec::with_capacity(512);
    let mut cri = Vec::with_capacity(600);
    let mut ts = start_ts;
    let mut done = 0;
    while done < entries {
        let mut by_stream: BTreeMap<u64, Vec<(i64, Vec<u8>)>> = BTreeMap::new();
        for i in 0..BATCH.min(entries - done) {
            // Skewed: a few streams log most lines.
            let s = if rng.below(4) == 0 {
                rng.below(STREAMS)
            } else {
                rng.below(20)
            };
            line.clear();
            message_of(stream_kind(s), &mut rng, &mut line);
            if (done + i).is_multiple_of(1_000_003) {
                line.extend_from_slice(RARE.as_bytes());
            }
            ts += 1 + rng.below(1_400_000) as i64;
            raw += line.len() as u64;
            msg_zstd.write_all(&line).unwrap();
            msg_zstd.write_all(b"\n").unwrap();
            cri.clear();
            rfc3339(ts, &mut cri);
            cri.extend_from_slice(if s.is_multiple_of(5) {
                b" stderr F "
            } else {
                b" stdout F "
            });
            cri.extend_from_slice(&line);
            cri.push(b'\n');
            raw_cri += cri.len() as u64;
            cri_zstd.write_all(&cri).unwrap();
            by_stream.entry(s).or_default().push((ts, line.clone()));
        }
        done += BATCH.min(entries - done);
        let batch = WriteBatch {
            streams: by_stream
                .into_iter()
                .map(|(s, entries)| StreamEntries::with(labels[s as usize].clone(), entries))
                .collect(),
            checkpoints: vec![("bench".into(), Some(done.to_le_bytes().to_vec()))],
        };
        let t = Instant::now();
        db.write(&batch).unwrap();
        in_store += t.elapsed();
    }
    let t = Instant::now();
    db.flush().unwrap();
    in_store += t.elapsed();
    level_detection();
    let cri_zstd = cri_zstd.finish().unwrap();
    let msg_zstd = msg_zstd.finish().unwrap();
    let stats = db.stats();
    assert_eq!(stats.entries as usize, entries, "every entry stored");

    // zstd's own decompression speed on this machine, same data, into a
    // sink (like `zstd -d > /dev/null`); best of three.
    let zstd_d = (0..3)
        .map(|_| {
            let t = Instant::now();
            zstd::stream::copy_decode(&msg_zstd[..], std::io::sink()).unwrap();
            raw as f64 / t.elapsed().as_secs_f64() / 1e6
        })
        .fold(0.0, f64::max);

    let stored = stats.stored_bytes as f64;
    println!(
        "ingest (durable, one core)   {:>10.0} entries/s   ({:.0} MB/s of messages)",
        entries as f64 / in_store.as_secs_f64(),
        raw as f64 / in_store.as_secs_f64() / 1e6
    );
    println!(
        "stored                       {:>10.1} MB          ({} chunks, {} streams)",
        stored / 1e6,
        stats.chunks,
        stats.streams
    );
    println!(
        "CRI files as kubelet writes  {:>10.1} MB raw      zstd -3: {:.1} MB ({:.3} of raw); stored = {:.3} of raw = {:.2} × zstd -3",
        raw_cri as f64 / 1e6,
        cri_zstd.len() as f64 / 1e6,
        cri_zstd.len() as f64 / raw_cri as f64,
        stored / raw_cri as f64,
        stored / cri_zstd.len() as f64
    );
    println!(
        "messages alone               {:>10.1} MB raw      zstd -3: {:.1} MB ({:.3} of raw); stored = {:.2} × zstd -3",
        raw as f64 / 1e6,
        msg_zstd.len() as f64 / 1e6,
        msg_zstd.len() as f64 / raw as f64,
        stored / msg_zstd.len() as f64
    );
    println!("zstd -d on this machine      {:>10.0} MB/s", zstd_d);
    std::fs::write(dir.join("bench-zstd-d"), format!("{zstd_d}")).unwrap();
}

/// Writes `ts` (ns since the epoch) as RFC 3339 with nanoseconds, UTC.
fn rfc3339(ts: i64, out: &mut Vec<u8>) {
    let secs = ts.div_euclid(1_000_000_000);
    let nanos = ts.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (year, month, day) = testkit::apps::civil(days);
    write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
    .unwrap();
}

fn query_phase(dir: &Path) {
    let t = Instant::now();
    let (db, _) = Database::open(dir, config()).unwrap();
    let open = t.elapsed();
    let rss = status_mib("VmRSS:");
    println!(
        "open / recovery              {:>10.1} ms          RSS after open {rss:.1} MiB",
        open.as_secs_f64() * 1e3
    );

    let hot = stream_labels(3);
    let selector = vec![
        Matcher::equal("namespace", hot.get("namespace").unwrap()),
        Matcher::equal("pod_name", hot.get("pod_name").unwrap()),
    ];
    let mut times = Vec::new();
    for _ in 0..21 {
        let mut q = Query::new(selector.clone());
        q.direction = Direction::Backward;
        q.limit = 1000;
        let t = Instant::now();
        let n = db.query(q).unwrap().count();
        times.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(n, 1000);
    }
    println!(
        "newest 1,000 of one stream   {:>10.2} ms (median of 21)",
        median(times)
    );

    let raw = db.stats().raw_bytes as f64;
    let zstd_d: f64 = std::fs::read_to_string(dir.join("bench-zstd-d"))
        .unwrap()
        .parse()
        .unwrap();
    let all = vec![Matcher::new("namespace", MatchOp::Regex, "ns-.*").unwrap()];
    for (name, needle) in [
        ("common needle \"timeout\"", "timeout"),
        ("rare needle", RARE),
    ] {
        let mut q = Query::new(all.clone());
        q.filters
            .push(LineFilter::contains(needle.as_bytes(), false));
        let t = Instant::now();
        let n = db.query(q).unwrap().count();
        let secs = t.elapsed().as_secs_f64();
        println!(
            "filter {name:<22}{:>10.0} MB/s of lines  ({n} matches, {:.2} s; {:.2} × zstd -d)",
            raw / secs / 1e6,
            secs,
            raw / secs / 1e6 / zstd_d
        );
    }

    // LogQL over everything, the way a dashboard asks: one instant
    // metric query each, so no line is materialised. MB/s per core is raw
    // bytes over the CPU time the query took.
    let at = monitoring_rs::log_database::now_ns() + 3_600_000_000_000;
    let all = r#"{namespace=~"ns-.*"}"#;
    for (name, query) in [
        (
            "|= \"timeout\"",
            format!(r#"sum(count_over_time({all} |= "timeout" [4h]))"#),
        ),
        (
            "| json | level=\"error\"",
            format!(r#"sum(count_over_time({all} | json | level="error" [4h]))"#),
        ),
        (
            "| logfmt, by (level)",
            format!("sum by (level) (count_over_time({all} | logfmt [4h]))"),
        ),
        (
            "| pattern, by (status)",
            format!(
                r#"sum by (status) (count_over_time({all} | pattern "<ip> - - <_> \"<method> <path> <_>\" <status> <_>" [4h]))"#
            ),
        ),
        (
            "| json | unwrap",
            format!(r#"sum(sum_over_time({all} | json | unwrap duration_ms | __error__="" [4h]))"#),
        ),
    ] {
        let monitoring_rs::logql::Expr::Metric(expr) = monitoring_rs::logql::parse(&query).unwrap()
        else {
            unreachable!("a metric query")
        };
        let budget = monitoring_rs::logql::metric::Budget {
            deadline: Instant::now() + std::time::Duration::from_secs(3600),
            cancelled: Default::default(),
            max_series: 100_000,
            memory: monitoring_rs::memory::MemoryLimit::default(),
        };
        let steps = monitoring_rs::logql::metric::Steps {
            start: at,
            step: 1,
            count: 1,
        };
        let (cpu0, t) = (cpu_seconds(), Instant::now());
        let value = monitoring_rs::logql::metric::evaluate(&expr, &db, &steps, &budget).unwrap();
        let (cpu, secs) = (cpu_seconds() - cpu0, t.elapsed().as_secs_f64());
        // The total over the result's series (one per group).
        let (n, groups) = match value {
            monitoring_rs::logql::metric::Value::Matrix(m) => (
                m.iter().filter_map(|s| s.points.get(&0)).sum::<f64>(),
                m.len(),
            ),
            monitoring_rs::logql::metric::Value::Scalar(v) => (v, 1),
        };
        println!(
            "logql {name:<24}{:>8.0} MB/s per core  ({:.2} s wall, {:.2} s CPU; total {n:.0} in {groups} series)",
            raw / cpu.max(1e-9) / 1e6,
            secs,
            cpu
        );
    }
}

/// CPU time of this process so far (user + system), seconds.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(usage.ru_utime) + t(usage.ru_stime)
}

fn main() {
    if let Ok(dir) = std::env::var("BENCH_STORE_QUERY") {
        query_phase(Path::new(&dir));
        return;
    }
    let entries = common::env_usize("BENCH_ENTRIES", 10_000_000);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("store-bench");
    let _ = std::fs::remove_dir_all(&dir);
    println!("log store, {entries} entries over {STREAMS} streams");
    ingest(&dir, entries);
    // Open and query in a fresh process, so its RSS is the store's alone.
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .env("BENCH_STORE_QUERY", &dir)
        .status()
        .unwrap();
    assert!(status.success());
}
