//! The API under load, end to end: the real binary tails files written at
//! 50,000 lines/s while 50 clients query it; a follow request measures how
//! long a line takes from the file to the client.
//!
//! `BENCH_SECONDS` (default 20), `BENCH_RATE` (lines/s, default 50000) and
//! `BENCH_CLIENTS` (default 50) change the run.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use testkit::daemon::{Daemon, DaemonCommand};
use testkit::now_ns;

mod common;

const FILES: usize = 50;

fn start_daemon(root: &Path, data: &Path) -> Daemon {
    DaemonCommand::new(env!("CARGO_BIN_EXE_monitoring-rs"))
        .args(["--log-collector", "directory"])
        .flag("--root-path", root)
        .flag("--data-directory", data)
        .spawn()
}

/// Appends `rate` lines/s across the files, each stamped with its write time.
fn writer(root: &Path, rate: usize, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    let root = root.to_owned();
    std::thread::spawn(move || {
        let mut files: Vec<_> = (0..FILES)
            .map(|f| {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(root.join(format!("app-{f:02}.log")))
                    .unwrap()
            })
            .collect();
        let mut rng = common::Rng(42);
        let tick = Duration::from_millis(10);
        let per_tick = (rate / 100).max(1);
        let mut written = 0u64;
        let mut next = Instant::now();
        let mut line = Vec::with_capacity(512);
        let mut buffers: Vec<Vec<u8>> = vec![Vec::new(); FILES];
        while !stop.load(Ordering::Relaxed) {
            for _ in 0..per_tick {
                let f = rng.below(FILES as u64) as usize;
                line.clear();
                write!(line, "{} ", now_ns()).unwrap();
                common::message(&mut rng, &mut line);
                line.push(b'\n');
                buffers[f].extend_from_slice(&line);
                written += 1;
            }
            for (f, buffer) in buffers.iter_mut().enumerate() {
                if !buffer.is_empty() {
                    files[f].write_all(buffer).unwrap();
                    buffer.clear();
                }
            }
            next += tick;
            if let Some(wait) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        written
    })
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn wait_ready(client: &reqwest::Client, base: &str) {
    for _ in 0..200 {
        if client.get(format!("{base}/ready")).send().await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("monitoring-rs did not become ready");
}

#[tokio::main]
async fn main() {
    let seconds = common::env_usize("BENCH_SECONDS", 20) as u64;
    let rate = common::env_usize("BENCH_RATE", 50_000);
    let clients = common::env_usize("BENCH_CLIENTS", 50);
    let dir = tempfile::tempdir().unwrap();
    let (root, data) = (dir.path().join("logs"), dir.path().join("data"));
    std::fs::create_dir_all(&root).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writing = writer(&root, rate, stop.clone());
    let daemon = start_daemon(&root, &data);
    let base = daemon.base();
    let client = reqwest::Client::new();
    wait_ready(&client, &base).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    // End-to-end latency: file write → follow response.
    let follow_path = root.join("app-00.log");
    let follow = client
        .get(format!("{base}/logs/path/{}", follow_path.display()))
        .query(&[("follow", "true"), ("format", "text"), ("limit", "0")])
        .send()
        .await
        .unwrap();
    let follow_done = Arc::new(AtomicBool::new(false));
    let follower = {
        let done = follow_done.clone();
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut body = follow.bytes_stream();
            let mut pending = Vec::new();
            while !done.load(Ordering::Relaxed) {
                let Ok(Some(Ok(chunk))) =
                    tokio::time::timeout(Duration::from_millis(200), body.next()).await
                else {
                    continue;
                };
                let now = now_ns();
                pending.extend_from_slice(&chunk);
                while let Some(nl) = memchr::memchr(b'\n', &pending) {
                    let line: Vec<u8> = pending.drain(..=nl).collect();
                    if let Some(stamp) = std::str::from_utf8(&line)
                        .ok()
                        .and_then(|l| l.split(' ').next()?.parse::<i64>().ok())
                    {
                        latencies.push((now - stamp) as f64 / 1e6);
                    }
                }
            }
            latencies
        })
    };

    // Query load: newest 100 lines of a file, by /logs and by query_range.
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (client, base, root) = (client.clone(), base.clone(), root.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = c;
            while Instant::now() < deadline {
                let file = root.join(format!("app-{:02}.log", i % FILES));
                let started = Instant::now();
                let response = if i % 2 == 0 {
                    client
                        .get(format!("{base}/logs/path/{}", file.display()))
                        .query(&[("limit", "100")])
                        .send()
                        .await
                } else {
                    client
                        .get(format!("{base}/loki/api/v1/query_range"))
                        .query(&[
                            ("query", format!("{{path=\"{}\"}}", file.display())),
                            ("limit", "100".into()),
                            ("since", "5m".into()),
                        ])
                        .send()
                        .await
                };
                let ok = match response {
                    Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
                    _ => false,
                };
                assert!(ok, "a query failed under load");
                latencies.push(started.elapsed().as_secs_f64() * 1e3);
                i += clients;
            }
            latencies
        }));
    }
    let mut query_ms = Vec::new();
    for task in tasks {
        query_ms.extend(task.await.unwrap());
    }
    follow_done.store(true, Ordering::Relaxed);
    let mut follow_ms = follower.await.unwrap();
    let status: serde_json::Value = client
        .get(format!("{base}/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    let written = writing.join().unwrap();
    daemon.terminate();

    query_ms.sort_by(f64::total_cmp);
    follow_ms.sort_by(f64::total_cmp);
    println!(
        "API under load: {clients} clients for {seconds} s while {written} lines were written ({rate}/s target)"
    );
    println!(
        "queries (newest 100 lines)  {:>8.0} req/s   p50 {:>6.2} ms   p99 {:>6.2} ms   max {:>7.2} ms",
        query_ms.len() as f64 / seconds as f64,
        percentile(&query_ms, 0.5),
        percentile(&query_ms, 0.99),
        query_ms.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "file write → follow client   {:>8} lines   p50 {:>6.2} ms   p99 {:>6.2} ms   max {:>7.2} ms",
        follow_ms.len(),
        percentile(&follow_ms, 0.5),
        percentile(&follow_ms, 0.99),
        follow_ms.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "collector lag at the end     {} bytes",
        status["collector"]["lag_bytes"]
    );
    access_control_cost().await;
}

/// What `--auth kubernetes` adds to a request once its answers are cached:
/// the same query against an open daemon and one checking tokens with the
/// (fake) API server, one request at a time.
async fn access_control_cost() {
    const REQUESTS: usize = 2_000;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("logs");
    std::fs::create_dir_all(&root).unwrap();
    let mut lines = String::new();
    for i in 0..10_000 {
        lines.push_str(&format!("{} level=info request {i} done\n", now_ns()));
    }
    std::fs::write(root.join("app.log"), &lines).unwrap();
    let api = tokio::task::spawn_blocking(testkit::api_server::FakeApiServer::start)
        .await
        .unwrap();
    api.reviews().add_user("bench-token", "bench", &["readers"]);
    api.reviews()
        .grant("group:readers", testkit::reviews::Grant::Cluster);
    let kubeconfig = dir.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig).unwrap();
    let open = DaemonCommand::new(env!("CARGO_BIN_EXE_monitoring-rs"))
        .args(["--log-collector", "directory", "--auth", "none"])
        .flag("--root-path", &root)
        .flag("--data-directory", dir.path().join("open"))
        .spawn();
    let checked = DaemonCommand::new(env!("CARGO_BIN_EXE_monitoring-rs"))
        .args(["--log-collector", "directory", "--auth", "kubernetes"])
        .flag("--kubeconfig", &kubeconfig)
        .flag("--root-path", &root)
        .flag("--data-directory", dir.path().join("checked"))
        .spawn();
    let client = reqwest::Client::new();
    let query = format!("{{path=\"{}\"}}", root.join("app.log").display());
    let mut figures = Vec::new();
    for (name, daemon, token) in [
        ("--auth none", &open, None),
        ("--auth kubernetes", &checked, Some("bench-token")),
    ] {
        wait_ready(&client, &daemon.base()).await;
        let mut times = Vec::with_capacity(REQUESTS);
        // The first requests fill the caches and the store's view.
        for i in 0..REQUESTS + 100 {
            let mut request = client
                .get(format!("{}/loki/api/v1/query_range", daemon.base()))
                .query(&[("query", query.as_str()), ("limit", "100"), ("since", "1h")]);
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let started = Instant::now();
            let response = request.send().await.unwrap();
            assert!(
                response.status().is_success(),
                "{name}: {}",
                response.status()
            );
            response.bytes().await.unwrap();
            if i >= 100 {
                times.push(started.elapsed().as_secs_f64() * 1e3);
            }
        }
        times.sort_by(f64::total_cmp);
        let (p50, p99) = (percentile(&times, 0.5), percentile(&times, 0.99));
        println!(
            "access control {name:<18} p50 {p50:>6.3} ms   p99 {p99:>6.3} ms   ({REQUESTS} requests, one at a time, warm caches)"
        );
        figures.push((p50, p99));
    }
    println!(
        "access control adds          p50 {:>+6.3} ms   p99 {:>+6.3} ms per request",
        figures[1].0 - figures[0].0,
        figures[1].1 - figures[0].1
    );
    open.terminate();
    checked.terminate();
    tokio::task::spawn_blocking(move || drop(api))
        .await
        .unwrap();
}
